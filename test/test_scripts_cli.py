"""The figure scripts (scripts/augmentation_sheet.py, scripts/sun_sheet.py) as a user runs them: a bad --out or
--seed is refused in one usage line before any world is built, and Ctrl-C ends in one line."""

import argparse
import importlib
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHEETS = ["augmentation_sheet.py", "sun_sheet.py"]


def run_script(script, args, cwd):
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")},
    )


@pytest.mark.parametrize("script", SHEETS)
@pytest.mark.parametrize(
    "args, message",
    [
        (["--out", "notes/sheet.png"], "--out notes/sheet.png: {tmp}/notes exists and is not a folder"),
        (["--out", "pictures"], "--out pictures: is a folder; give a file name such as pictures/"),
        (["--seed", "-1", "--out", "sheet.png"], "--seed must be >= 0, got -1"),
    ],
)
def test_sheet_refuses_bad_options_up_front(script, args, message, tmp_path):
    """Before: a NotADirectoryError / IsADirectoryError traceback from savefig after the worlds were rendered, and
    a gymnasium 'Seed must be greater or equal to zero' traceback."""
    (tmp_path / "notes").write_text("a file\n")
    (tmp_path / "pictures").mkdir()
    before = sorted(tmp_path.rglob("*"))
    run = run_script(script, args, tmp_path)
    assert run.returncode == 2, run.stderr[-2000:]
    assert message.format(tmp=tmp_path) in run.stderr and "Traceback" not in run.stderr
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("script", SHEETS)
def test_ctrl_c_ends_a_sheet_in_one_line(script, monkeypatch, capsys):
    """Before: a KeyboardInterrupt traceback."""

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", interrupted)
    monkeypatch.setattr(sys, "argv", [script])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(ROOT / "scripts" / script), run_name="__main__")
    assert stop.value.code == 130
    assert capsys.readouterr().err == f"{script}: interrupted\n"


def never_reached(*args, **kwargs):
    raise AssertionError("the episodes ran: the bad option was not refused up front")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--out", "notes/dusk"], "--out notes/dusk: {tmp}/notes exists and is not a folder"),
        (["--out", "notes"], "--out notes: {tmp}/notes exists and is not a folder"),
        (["--episodes", "0", "--out", "dusk"], "--episodes must be >= 1, got 0"),
    ],
)
def test_dusk_factors_refuses_bad_options_before_the_episodes(args, message, tmp_path, monkeypatch, capsys):
    """Before: a NotADirectoryError / FileExistsError traceback after every variant's episodes had run (hours at
    the default 100 episodes), and an EvaluationSetupError traceback for --episodes 0."""
    import liquid_control.evaluation.batched as batched

    monkeypatch.setattr(batched, "run_batch", never_reached)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes").write_text("a file\n")
    module = runpy.run_path(str(ROOT / "scripts" / "dusk_factors.py"))
    with pytest.raises(SystemExit) as stop:
        module["main"](args)
    assert stop.value.code == 2
    assert message.format(tmp=tmp_path) in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"]


def test_dusk_factors_keeps_finished_variants_at_ctrl_c_and_writes_its_own_provenance(tmp_path, monkeypatch, capsys):
    """Before: a Ctrl-C after 6 of 7 variants wrote nothing (the outcomes only in memory), and results.json's
    commit, machine and date were added by hand. Now each variant is kept as it finishes, the same command
    continues from them, and the provenance is the script's. The episodes are a stub here (success: even seeds)."""
    import liquid_control.evaluation.batched as batched
    import sim_envs.rover as rover

    ran = []  # the variants driven, in order

    def episodes(batch, pool=None):
        if not ran or ran[-1] is not rover.LIGHTINGS["dusk"]:
            ran.append(rover.LIGHTINGS["dusk"])
        if len(ran) == 3:
            raise KeyboardInterrupt
        return [{"policy": j.policy, "episode_seed": j.episode_seed, "success": j.episode_seed % 2 == 0} for j in batch]

    monkeypatch.setattr(batched, "run_batch", episodes)
    monkeypatch.chdir(tmp_path)
    main = runpy.run_path(str(ROOT / "scripts" / "dusk_factors.py"))["main"]
    assert main(["--episodes", "2", "--out", "dusk"]) == 130
    assert capsys.readouterr().err == (
        "dusk_factors.py: interrupted: 2 of 7 variants kept in dusk/variants.partial.json; the same command continues\n"
    )
    assert main(["--episodes", "2", "--out", "dusk"]) == 0
    assert len(ran) == 3 + 5  # the two finished variants not driven again
    assert "dusk, noon sky: kept from dusk/variants.partial.json" in capsys.readouterr().out
    results = json.loads((tmp_path / "dusk" / "results.json").read_text())
    assert [row["variant"] for row in results["rows"]][:3] == ["dusk", "dusk, noon sky", "dusk, noon sun direction"]
    assert {"commit", "machine", "started_utc", "wall_time_s", "cpu_time_s"} <= set(results["provenance"])
    assert sorted(p.name for p in (tmp_path / "dusk").iterdir()) == ["results.json", "results.md"]


def test_normalisation_invariance_refuses_an_unusable_out_before_the_episodes(tmp_path, monkeypatch, capsys):
    """Before: a NotADirectoryError traceback after every shift's expert episodes had been rendered."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes").write_text("a file\n")
    module = runpy.run_path(str(ROOT / "scripts" / "normalisation_invariance.py"))
    module["main"].__globals__["expert_frames"] = never_reached
    with pytest.raises(SystemExit) as stop:
        module["main"](["--out", "notes/invariance"])
    assert stop.value.code == 2
    assert f"--out notes/invariance: {tmp_path}/notes exists and is not a folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"]


@pytest.mark.parametrize(
    "word, status, out, err",
    [("--help", 0, "usage: source scripts/bootstrap.sh", ""), ("bogus", 2, "", "unknown profile 'bogus'")],
)
def test_bootstrap_refuses_a_word_that_is_not_a_profile(word, status, out, err):
    """Before: `scripts/bootstrap.sh --help` (or any word) was taken as a profile: pip installed the runtime
    requirements and the package into the venv, and wrote a stamp '.liquid_control---help.sha' there. Run here
    with LIQUID_CONTROL_NO_INSTALL (nothing installed whatever the code), where the old code went on silently."""
    run = subprocess.run(
        ["bash", str(ROOT / "scripts" / "bootstrap.sh"), word],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "LIQUID_CONTROL_NO_INSTALL": "1", "LIQUID_CONTROL_VENV": sys.prefix},
    )
    assert run.returncode == status, run.stderr
    assert out in run.stdout and err in run.stderr
    assert not list(Path(sys.prefix).glob(f".liquid_control-{word}.sha"))


@pytest.mark.parametrize("script", ["bag_loop.sh", "takeover_rounds.sh"])
@pytest.mark.parametrize("word, status", [("--help", 0), ("train", 2)])
def test_loop_scripts_take_no_arguments(script, word, status, tmp_path):
    """Before: bag_loop.sh ignored its arguments and `scripts/bag_loop.sh --help` started the 10-25 minute loop
    (recording bags under reports/bag_loop in the current folder); takeover_rounds.sh started its rounds once OUT
    was set. Run here with the stages' commands replaced by `false`, so the old code ends at once."""
    run = subprocess.run(
        ["bash", str(ROOT / "scripts" / script), word],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "LC": "false", "PYTHON": "false", "OUT": str(tmp_path / "loop")},
    )
    assert run.returncode == status, run.stderr[-2000:]
    if status == 0:
        assert "Settings (environment variables) and their defaults:" in run.stdout and "EVAL_EPISODES=" in run.stdout
    else:
        assert "takes no arguments, got 'train'; its settings are environment variables" in run.stderr
    assert not list(tmp_path.iterdir())


STUB_LC = """#!/usr/bin/env bash
echo "$*" >> "$STUB_LOG"
[ "$1" = record ] || exit 7  # training: the loop ends there
while [ $# -gt 0 ]; do case $1 in -o) out=$2 ;; --seed) seed=$2 ;; --episodes) n=$2 ;; esac; shift; done
for ((s = seed; s < seed + n; s++)); do mkdir -p "$out/episode_$s" && touch "$out/episode_$s/metadata.yaml"; done
"""


def _episode_bags(folder: Path, seeds, finished: bool = True) -> None:
    for seed in seeds:
        (folder / f"episode_{seed}").mkdir(parents=True)
        (folder / f"episode_{seed}" / f"episode_{seed}.mcap").write_bytes(b"")
        if finished:  # written last as a bag is finished
            (folder / f"episode_{seed}" / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")


@pytest.mark.parametrize("unfinished", [False, True])
def test_bag_loop_completes_an_interrupted_recording_and_names_an_unfinished_bag(unfinished, tmp_path):
    """Before: stage 1 of bag_loop.sh recorded a bag folder only where none existed, so a rerun after an interruption
    trained on the bags recorded so far without a word (EPISODES=6: 'train 2'), and a bag a SIGKILL left unfinished
    was found only by training. Now the rerun records the missing episodes (their seeds) and stops at an
    unfinished bag, naming it as the one to delete. The stages' commands are a stub (LC) here; training ends it."""
    out = tmp_path / "loop"
    _episode_bags(out / "bags" / "train", [100, 101])
    _episode_bags(out / "bags" / "validation", [500])
    if unfinished:
        _episode_bags(out / "bags" / "train", [102], finished=False)  # a 0-byte episode_102, no metadata.yaml
    (tmp_path / "lc").write_text(STUB_LC)
    (tmp_path / "lc").chmod(0o755)
    settings = dict(OUT=str(out), EPISODES="5", VAL_EPISODES="1", TEST_EPISODES="2", RENDER_SIZE="16")
    run = subprocess.run(
        ["bash", str(ROOT / "scripts" / "bag_loop.sh")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            **settings,
            "LC": str(tmp_path / "lc"),
            "PYTHON": sys.executable,
            "STUB_LOG": str(tmp_path / "calls"),
        },
    )
    calls = (tmp_path / "calls").read_text().splitlines() if (tmp_path / "calls").exists() else []
    record = "record --expert --render-size 16 --render-width 0 --time-limit 0 --no-progress -o"
    if unfinished:
        assert run.returncode == 2, run.stderr[-2000:]
        assert (
            f"bag_loop.py missing: error: {out / 'bags' / 'train' / 'episode_102'}: unfinished (no metadata.yaml: "
            "the recording was killed); delete it and rerun to record that episode again"
        ) in run.stderr, run.stderr[-2000:]
        assert calls == []  # nothing recorded, nothing trained
        return
    assert run.returncode == 7, run.stderr[-2000:]  # the stub's training
    assert f"{out / 'bags' / 'train'} holds 2 of the 5 episodes (seeds 100..104): recording the other 3" in run.stderr
    assert calls[:2] == [
        f"{record} {out / 'bags' / 'train'} --seed 102 --episodes 3 --noise-std 0.0 --noise-correlation 0.0 "
        "--burst-rate 0.0",
        f"{record} {out / 'bags' / 'test'} --seed 600 --episodes 2",
    ], calls
    assert calls[2].startswith("train ") and len(calls) == 3, calls
    assert sorted(p.name for p in (out / "bags" / "train").iterdir()) == [f"episode_{s}" for s in range(100, 105)]


def test_bag_loop_refuses_an_out_made_with_other_settings(tmp_path):
    """Before: a rerun into an existing OUT with EPOCHS=5 NOISE_STD=0.3 after EPOCHS=1 kept the old bags and run,
    exit 0, and its summary claimed the new settings over a body saying 'noise: none'. The first run records its
    settings in OUT; a rerun with others is refused in one line before any stage (the stages are a stub here)."""
    out = tmp_path / "loop"
    (tmp_path / "lc").write_text(STUB_LC)
    (tmp_path / "lc").chmod(0o755)

    def loop(**settings):
        env = {**os.environ, "OUT": str(out), "EPISODES": "1", "VAL_EPISODES": "1", "TEST_EPISODES": "1"}
        env.update(RENDER_SIZE="16", LC=str(tmp_path / "lc"), PYTHON=sys.executable, STUB_LOG=str(tmp_path / "calls"))
        run = ["bash", str(ROOT / "scripts" / "bag_loop.sh")]
        return subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=120, env={**env, **settings})

    assert loop(EPOCHS="1").returncode == 7  # the stub's training ends the first loop
    calls = (tmp_path / "calls").read_text()
    again = loop(EPOCHS="5", NOISE_STD="0.3")
    assert again.returncode == 2, again.stderr[-2000:]
    assert again.stderr == (
        f"bag_loop: {out} holds a loop made with EPOCHS=1 NOISE_STD=0.0, not EPOCHS=5 NOISE_STD=0.3 "
        f"({out / 'loop_settings.txt'}); give another OUT or remove it first\n"
    )
    assert (tmp_path / "calls").read_text() == calls  # nothing recorded or trained
    assert loop(EPOCHS="1").returncode == 7  # the same settings continue it


def test_bag_loop_summary_of_a_finished_loop_keeps_its_wall_time(tmp_path, monkeypatch):
    """Before: a rerun of a finished loop (every stage kept) wrote the rerun's own seconds as 'loop wall time'."""
    import liquid_control.policy

    out = tmp_path / "loop"
    (out / "offline").mkdir(parents=True)
    (out / "sim").mkdir()
    overall = {"labelled": 1, "mae": [0.1, 0.2], "rmse": [0.1, 0.2], "loss": 0.01}
    (out / "offline" / "offline.json").write_text(json.dumps({"policies": {"bags": {"overall": overall}}}))
    (out / "sim" / "results.json").write_text("[]")
    metadata = {"training_updates": 1, "training_wall_s": 2.0, "selected_epoch": 1, "validation_loss": 0.5}
    monkeypatch.setattr(liquid_control.policy, "load_policy", lambda path: argparse.Namespace(metadata=metadata))
    summary = runpy.run_path(str(ROOT / "scripts" / "bag_loop.py"))["summary"]
    assert summary(str(out), seconds=900.0)["loop_wall_s"] == 900.0
    assert summary(str(out), seconds=62.0)["loop_wall_s"] == 900.0
    assert "- loop wall time: 900 s" in (out / "summary.md").read_text()


def test_bc_ensemble_refuses_an_unusable_out_before_the_episodes(tmp_path, monkeypatch, capsys):
    """Before: a NotADirectoryError traceback from write_text after every member's episodes had run."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes").write_text("a file\n")
    module = runpy.run_path(str(ROOT / "scripts" / "bc_ensemble.py"))
    with pytest.raises(SystemExit) as stop:
        module["main"](["s0/policy.pt", "s1/policy.pt", "--out", "notes/ensemble.json"])
    assert stop.value.code == 2
    assert f"--out notes/ensemble.json: {tmp_path}/notes exists and is not a folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"]


def test_bc_ensemble_says_what_to_do_with_members_of_one_training_seed(tmp_path, capsys):
    """Before: build_plan's advice for `liquid-control eval` ('give runs of the same seed as policies of their own
    (NAME=CHECKPOINT)'), which this script cannot take."""
    main = runpy.run_path(str(ROOT / "scripts" / "bc_ensemble.py"))["main"]
    members = [ROOT / "policies" / "cfc_ncp_rover.pt", ROOT / "policies" / "cfc_ncp_rover_robust.pt"]  # both seed 0
    with pytest.raises(SystemExit) as stop:
        main([*map(str, members), "--episodes", "1"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"{members[0]} and {members[1]} both record training seed 0: the members are one config's runs of " in err
    assert "(liquid-control train --seed K)" in err and "NAME=CHECKPOINT" not in err, err


def test_headline_state_refuses_to_save_a_folder_without_finished_training_runs(tmp_path):
    """Before: an eval report's folder (episodes.jsonl, no train/) saved an empty state, exit 0."""
    report = tmp_path / "report"
    (report / "train" / "cfc" / "seed_0").mkdir(parents=True)  # an unfinished run: no policy.pt
    (report / "episodes.jsonl").write_text("{}\n")
    run = subprocess.run(
        ["bash", str(ROOT / "scripts" / "headline_state.sh"), "save", str(report), str(tmp_path / "state")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, run.stderr
    assert run.stderr == (
        f"headline_state.sh: {report} holds no finished training runs (no train/<arch>/seed_<k>/policy.pt): "
        "nothing to save\n"
    )
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("args, status", [(["--help"], 0), (["-h"], 0), (["save"], 2)])
def test_headline_state_help_is_an_answer_not_a_mistake(args, status):
    """Before: `scripts/headline_state.sh --help` printed its usage on stderr with status 2, as for a mistake, so
    `scripts/headline_state.sh --help | less` showed nothing."""
    run = subprocess.run(
        ["bash", str(ROOT / "scripts" / "headline_state.sh"), *args], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == status, run.stderr
    usage = "scripts/headline_state.sh save RUN_DIR STATE_DIR"
    assert usage in (run.stdout if status == 0 else run.stderr)
    if status == 0:
        assert "Kept: each finished training run's config.yaml" in run.stdout and not run.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["copycat", "--copycat", "bogus"], "--copycat bogus: choose from liquid_bc, liquid_no_dart"),
        (["train", "--seeds", "0"], "--seeds must be >= 1, got 0"),
        (["table", "--episodes", "0"], "--episodes must be >= 1, got 0"),
        (["speed", "--speed-episodes", "0"], "--speed-episodes must be >= 1, got 0"),
    ],
)
def test_fusion_experiment_refuses_bad_options_in_one_line(args, message, tmp_path):
    """Before: --copycat bogus was a KeyError traceback, and --seeds 0 trained nothing and said nothing (exit 0)."""
    run = run_script("fusion_experiment.py", args, tmp_path)
    assert run.returncode == 2, run.stderr[-2000:]
    assert message in run.stderr and "Traceback" not in run.stderr
    assert not list(tmp_path.iterdir())


def test_fusion_experiment_help_says_what_each_stage_does():
    """Before: --help gave the first line of the module doc only: the five stages' names and nothing of what they
    run (train every variant and seed, the table, the rate sweep, the copycat remedy, the speed check)."""
    run = run_script("fusion_experiment.py", ["--help"], ROOT)
    assert run.returncode == 0
    assert (
        "python scripts/fusion_experiment.py sweep              # success vs camera rate and vs IMU rate" in run.stdout
    )


def test_ctrl_c_ends_the_fusion_experiment_in_one_line(monkeypatch, capsys):
    """Before: a KeyboardInterrupt traceback (training runs for hours)."""

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", interrupted)
    monkeypatch.setattr(sys, "argv", ["fusion_experiment.py"])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(ROOT / "scripts" / "fusion_experiment.py"), run_name="__main__")
    assert stop.value.code == 130
    assert capsys.readouterr().err == "fusion_experiment.py: interrupted\n"


@pytest.mark.parametrize(
    "args, message",
    [
        (["summary", "--out", "loop"], "summary loop: no such folder; give the OUT folder of a finished"),
        (["publish", "--out", "empty", "--to", "docs"], "publish empty: no summary.json there"),
        (["compare", "empty"], "compare empty: no summary.json there"),
        (["rounds", "empty"], "rounds empty: no sim/results.json there"),
    ],
)
def test_bag_loop_helpers_refuse_a_folder_that_is_no_loop(args, message, tmp_path):
    """Before: summary, compare and rounds ended in PolicyLoadError / FileNotFoundError tracebacks, and publish of
    a wrong folder copied nothing, said nothing and exited 0."""
    (tmp_path / "empty").mkdir()
    run = run_script("bag_loop.py", args, tmp_path)
    assert run.returncode == 2, run.stderr[-2000:]
    assert message in run.stderr and "Traceback" not in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--workers", "0"], "--workers must be >= 1, got 0"),
        (["--archs", "cfc,bogus"], "--archs cfc,bogus: choose from cfc, cfc_ncp"),
        (["--seeds", "0,x"], "--seeds 0,x / --split-seeds 0,1: comma-separated whole numbers"),
        (["--episodes", "0"], "--episodes must be >= 1, got 0"),
    ],
)
def test_seed_factors_refuses_bad_options_before_training(args, message, tmp_path):
    """Before: ValueError tracebacks (--workers 0, --seeds 0,x) and a KeyError traceback from a training worker
    (--archs bogus); --episodes 0 went on to train every run and failed in the evaluation after them."""
    run = run_script("seed_factors.py", [*args, "--out", "sf"], tmp_path)
    assert run.returncode == 2, run.stderr[-2000:]
    assert message in run.stderr and "Traceback" not in run.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("script", ["dusk_factors.py", "normalisation_invariance.py"])
def test_the_default_out_is_the_repositorys_docs_folder_from_any_folder(script, tmp_path, monkeypatch, capsys):
    """Before: the default --out was docs/<name> of the current folder, so a run from anywhere but the repository's
    root wrote a docs/ folder there, while the docs that cite the command say it writes its results beside them."""
    import liquid_control.paths as paths

    asked = []

    def where(path, example):  # asked before the episodes, with the file the results go to
        asked.append(Path(path))
        return "recorded here"

    monkeypatch.setattr(paths, "output_file_problem", where)
    monkeypatch.chdir(tmp_path)
    module = runpy.run_path(str(ROOT / "scripts" / script))
    with pytest.raises(SystemExit) as stop:
        module["main"]([])
    assert stop.value.code == 2
    assert asked == [ROOT / "docs" / script.removesuffix(".py") / "results.json"]
    assert not list(tmp_path.iterdir())


def test_normalisation_invariance_refuses_too_few_frames_to_measure_against(tmp_path, monkeypatch, capsys):
    """Before: at --episodes 1 --steps 1 (two frames: the random pairing took each frame to itself) every ratio was a
    division by zero, and results.json held Infinity for every shift and mode, exit 0."""
    import numpy as np

    monkeypatch.chdir(tmp_path)
    module = runpy.run_path(str(ROOT / "scripts" / "normalisation_invariance.py"))
    module["main"].__globals__["expert_frames"] = lambda shift, seed, steps: np.full((steps + 1, 8, 8, 3), 9, np.uint8)
    with pytest.raises(SystemExit) as stop:
        module["main"](["--episodes", "1", "--steps", "1", "--out", "invariance"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "--episodes 1 --steps 1: 2 frames of the training world, whose random pairs do not differ" in err, err
    assert not list(tmp_path.iterdir())


def test_seed_factors_says_in_one_line_that_its_evaluation_did_not_finish(tmp_path):
    """Before: the evaluation ran as a child process with check=True, so one that failed (here a run's policy.pt
    that is no policy) ended the script in a CalledProcessError traceback; a Ctrl-C killed that child 0.25 s later.
    It runs in the script's process now, and its failure is one line after the evaluation's own (exit 1)."""
    run_dir = tmp_path / "sf" / "train" / "cfc" / "i0_b0_d0"
    run_dir.mkdir(parents=True)
    (run_dir / "policy.pt").write_text("not a policy\n")  # a finished run: not trained again
    args = ["--archs", "cfc", "--seeds", "0", "--split-seeds", "", "--episodes", "1", "--workers", "1"]
    run = run_script("seed_factors.py", [*args, "--reference", str(tmp_path / "none"), "--out", "sf"], tmp_path)
    assert run.returncode == 1, run.stderr[-2000:]
    assert "Traceback" not in run.stderr, run.stderr[-2000:]
    assert run.stderr.rstrip().endswith(
        "seed_factors.py: the evaluation in sf/eval_grid did not finish (exit 2; its lines above say why)"
    ), run.stderr[-2000:]
    assert not (tmp_path / "sf" / "results.json").exists()


def test_seed_factors_rerun_with_other_episodes_evaluates_what_is_missing(tmp_path, monkeypatch, capsys):
    """Before: a rerun into the same --out kept eval_grid/ whenever its results.csv existed, so --episodes 2 after
    --episodes 1 printed '16 paired episodes' over the old 8 (and a new --archs ended in KeyError 'lstm_i0_b0_d0').
    Now the evaluation adds the episodes its log lacks and the tables count what they hold."""
    import shutil

    run_dir = tmp_path / "sf" / "train" / "cfc" / "i0_b0_d0"
    run_dir.mkdir(parents=True)
    shutil.copy(ROOT / "policies" / "cfc_rover.pt", run_dir / "policy.pt")  # a finished run: not trained again
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))  # imported, so its pool's workers can import _train too
    main = importlib.import_module("seed_factors").main
    args = ["--archs", "cfc", "--seeds", "0", "--split-seeds", "", "--workers", "1", "--out", "sf"]
    args += ["--reference", str(tmp_path / "none")]
    assert main([*args, "--episodes", "1"]) == 0
    capsys.readouterr()
    assert main([*args, "--episodes", "2"]) == 0
    assert "Success over the 8 headline shifts, 16 paired episodes per policy." in capsys.readouterr().out
    assert json.loads((tmp_path / "sf" / "results.json").read_text())["episodes"] == {"cfc_i0_b0_d0": 16}


def test_seed_factors_stopped_by_sigterm_while_training_says_so_and_leaves_no_worker(tmp_path):
    """Before: a SIGTERM to the script (``kill``, a batch system's time limit) while its pool trained ended it by the
    signal (-15) without a word, and the pool's worker went on training alone, holding the run folder. Now it stops
    as Ctrl-C does: the workers end, one line says what is kept, exit 143."""
    import signal
    import time

    args = ["--archs", "cfc", "--seeds", "0", "--split-seeds", "", "--episodes", "1", "--workers", "1"]
    command = [sys.executable, str(ROOT / "scripts" / "seed_factors.py"), *args]
    command += ["--reference", str(tmp_path / "none"), "--out", "sf"]
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    # files, not pipes: a worker left running would hold a pipe open, and reading it would wait for that worker
    with open(tmp_path / "err.txt", "w") as err:
        script = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True
        )
    try:
        run = tmp_path / "sf" / "train" / "cfc" / "i0_b0_d0"
        deadline = time.monotonic() + 120
        while not (run / "config.yaml").is_file() and script.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)  # until the worker has begun the training run
        assert script.poll() is None and (run / "config.yaml").is_file(), (tmp_path / "err.txt").read_text()[-2000:]
        script.send_signal(signal.SIGTERM)  # to the script alone, as `kill PID`
        script.wait(timeout=120)
        said = (tmp_path / "err.txt").read_text()
        assert script.returncode == 143, said[-2000:]
        assert said.rstrip().endswith(
            "seed_factors.py: terminated: the finished training runs and evaluation episodes are kept in sf; the same "
            "command again continues them"
        ), said[-2000:]
        left = ""
        for _ in range(50):  # a worker ends with its parent (at its death at the latest): wait for it to go
            left = subprocess.run(["ps", "-g", str(script.pid), "-o", "pid=,args="], capture_output=True, text=True)
            left = left.stdout.strip()
            if not left:
                break
            time.sleep(0.2)
        assert not left, f"processes of the script left running: {left}"
    finally:
        try:
            os.killpg(script.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_fusion_experiment_refuses_a_finished_run_of_another_config_than_its_variants(tmp_path):
    """A probe of the caches: `train` kept any finished run in --out as its variant ("done"), though trained with
    another config (one edited since), and `table`/`sweep` then reported it; it is checked as `train --resume` checks
    a run (``check_resume``) and refused naming the keys that differ."""
    import shutil

    import yaml

    run = tmp_path / "runs" / "liquid_s0"
    run.mkdir(parents=True)
    shutil.copy(ROOT / "policies" / "cfc_balance_nav.pt", run / "policy.pt")
    config = yaml.safe_load((ROOT / "policies" / "configs" / "cfc_balance_nav.yaml").read_text())
    config["training"]["dagger_rounds"] = 0
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    result = run_script(
        "fusion_experiment.py", ["train", "--variants", "liquid", "--seeds", "1", "--out", "runs"], tmp_path
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{Path('runs') / 'liquid_s0'} is not a run of variant liquid as it is now" in result.stderr
    assert "training.dagger_rounds" in result.stderr and "done" not in result.stdout
