"""The OOD section of a model card is read from an evaluation's results, paired by episode seed."""

import json
import sys
from pathlib import Path

import pytest

from liquid_control.training.model_card import ood_section


def test_ood_section_counts_successes_and_discordant_pairs(tmp_path):
    def rec(shift, seed, success, policy="robust"):
        return {"policy": policy, "shift": shift, "episode_seed": seed, "success": success}

    records = [rec("in_distribution", s, s != 3) for s in range(5)]  # 4/5
    records += [rec("dusk", s, s in (0, 3)) for s in range(5)]  # 2/5: seed 3 only at dusk, 1, 2, 4 only in-dist
    records += [rec("dusk", s, True, policy="other") for s in range(5)]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(records))
    card = ood_section(path, "robust")
    assert card["shifts"]["in_distribution"]["success"] == 0.8
    dusk = card["shifts"]["dusk"]
    assert dusk["success"] == 0.4 and dusk["episodes"] == 5 and dusk["episode_seeds"] == "0..4"
    assert dusk["paired_with_in_distribution"] == {"episodes": 5, "only_here": 1, "only_in_distribution": 3}
    assert dusk["ci95"] == pytest.approx([0.1176, 0.7693], abs=1e-4)  # Wilson 2/5
    with pytest.raises(ValueError, match="no episodes of policy 'missing'"):
        ood_section(path, "missing")


def test_a_card_refuses_the_ood_results_of_another_checkpoint(tmp_path, capsys):
    """Before: ``--ood-results`` took the named policy's episodes whatever checkpoint they ran (each record names its
    file's SHA-256), so a CfC run's card was shipped with an LSTM's OOD figures (83% in-distribution on a card
    whose own measurement was 0/5; found by a probe of the report statistics). Refused before any measurement, the
    error naming both files; the same results for the checkpoint they ran are taken."""
    import shutil

    from liquid_control.paths import policies_dir
    from liquid_control.runtime.backends import checkpoint_sha256
    from liquid_control.training import model_card

    run = tmp_path / "run"
    run.mkdir()
    shutil.copyfile(policies_dir() / "cfc_rover.pt", run / "policy.pt")
    other = policies_dir() / "lstm_rover.pt"
    results = tmp_path / "results.json"

    def write(checkpoint):
        records = [
            {"policy": "p", "shift": "in_distribution", "episode_seed": i, "success": True, "training_seed": 0,
             "checkpoint": str(checkpoint), "checkpoint_sha": checkpoint_sha256(checkpoint)[:12]}
            for i in range(3)
        ]  # fmt: skip
        results.write_text(json.dumps(records))

    write(other)
    argv = ["--run", str(run), "--name", "p", "--episodes", "2", "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as stop:
        model_card.main([*argv, "--ood-results", str(results), "--ood-policy", "p"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in err, err
    assert f"policy 'p' is checkpoint {checkpoint_sha256(other)[:12]} ({other}), not {run / 'policy.pt'}" in err, err
    assert not (tmp_path / "out").exists()  # nothing measured, nothing written
    card = tmp_path / "lstm" / "lstm_rover.md"  # add_ood: the policy beside the card
    card.parent.mkdir()
    shutil.copyfile(other.with_suffix(".md"), card)
    shutil.copyfile(policies_dir() / "cfc_rover.pt", card.with_suffix(".pt"))
    with pytest.raises(ValueError, match="which this card describes"):
        model_card.add_ood(card, results, "p")
    write(run / "policy.pt")  # the run's own episodes: taken
    assert ood_section(results, "p", carded=run / "policy.pt")["shifts"]["in_distribution"]["success"] == 1.0
    # and for the policy shipped from that run (saved again with the card's metadata: another SHA-256), which records
    # the run's file it came from (a review: `--refresh NAME --ood-results` of the run's evaluation was refused)
    from liquid_control.policy import load_policy, save_policy

    loaded = load_policy(run / "policy.pt")
    shipped = save_policy(
        tmp_path / "p.pt",
        loaded,
        dict(loaded.metadata, name="p", **{model_card.SHIPPED_FROM: checkpoint_sha256(run / "policy.pt")}),
    )
    assert checkpoint_sha256(shipped) != checkpoint_sha256(run / "policy.pt")
    assert ood_section(results, "p", carded=shipped)["shifts"]["in_distribution"]["success"] == 1.0
    with pytest.raises(ValueError, match="which this card describes"):  # shipped from another run: refused
        ood_section(results, "p", carded=save_policy(tmp_path / "q.pt", loaded, dict(loaded.metadata, name="q")))


def test_add_ood_fills_the_card_and_keeps_the_rest(tmp_path):
    import yaml

    from liquid_control.training.model_card import OOD_NOT_MEASURED, add_ood, read_card

    results = tmp_path / "results.json"
    records = [
        {"policy": "p", "shift": s, "episode_seed": i, "success": i < k}
        for s, k in (("in_distribution", 9), ("fog", 7))
        for i in range(10)
    ]
    results.write_text(json.dumps(records))
    card = tmp_path / "p.md"
    front = {"name": "p", "check": {"seeds": [0, 1]}, "ood": OOD_NOT_MEASURED}
    card.write_text(
        f"---\n{yaml.safe_dump(front)}---\n\n# p\n\n- **Training**: x.\n- **OOD**: {OOD_NOT_MEASURED}.\n\nEnd.\n"
    )
    add_ood(card, results, "p")
    data = read_card(card)
    assert data["check"] == {"seeds": [0, 1]} and data["ood"]["shifts"]["fog"]["success"] == 0.7
    text = card.read_text()
    assert "| fog | 70% (40%-89%) | 10 (seeds 0..9) | 0 / 2 |" in text
    assert "- **Training**: x." in text and text.rstrip().endswith("End.") and OOD_NOT_MEASURED not in text
    add_ood(card, results, "p")  # refilled (another evaluation): one table, the rest kept
    again = card.read_text()
    assert again == text and again.count("| fog |") == 1


def test_the_card_cites_its_ood_results_absolute_or_from_the_checkout_not_from_the_working_directory(
    tmp_path, monkeypatch
):
    """Before: ood.source and the OOD line held --ood-results as given: 'results.json' from the folder the command ran
    in, which the card does not record (a reader of the card, or of another folder, found no such file)."""
    import yaml

    from liquid_control.training import model_card

    checkout = tmp_path / "checkout"
    results = checkout / "docs" / "robust" / "results.json"
    results.parent.mkdir(parents=True)
    records = [{"policy": "p", "shift": "in_distribution", "episode_seed": i, "success": i < 3} for i in range(4)]
    results.write_text(json.dumps(records))
    monkeypatch.setattr(model_card, "checkout_dir", lambda: checkout)
    front = {"name": "p", "ood": model_card.OOD_NOT_MEASURED}
    text = f"---\n{yaml.safe_dump(front)}---\n\n# p\n\n- **OOD**: {model_card.OOD_NOT_MEASURED}.\n"
    for card, cited in (
        (checkout / "policies" / "p.md", "docs/robust/results.json"),  # as the shipped cards cite their reports
        (tmp_path / "cards" / "p.md", str(results)),  # a card outside the checkout: absolute
    ):
        card.parent.mkdir()
        card.write_text(text)
        monkeypatch.chdir(results.parent)
        model_card.add_ood(card, "results.json", "p")
        assert model_card.read_card(card)["ood"]["source"] == cited
        assert f"- **OOD** (`{cited}`, policy `p`" in card.read_text()
        assert (checkout / cited if card.is_relative_to(checkout) else Path(cited)).is_file()


def test_ood_section_refuses_a_policy_of_several_training_seeds(tmp_path):
    """Before: the episodes of a 3-seed policy were keyed by episode seed alone, so each seed overwrote the one read
    before it and the card showed the last seed's rate over a third of the episodes (12% of 8 where the report
    said 25% of 24), silently."""
    records = [
        {
            "policy": "cfc",
            "training_seed": seed,
            "checkpoint_sha": f"sha{seed}",
            "shift": shift,
            "episode_seed": i,
            "success": seed == 0,
        }
        for seed in (0, 1, 2)
        for shift in ("in_distribution", "dusk")
        for i in range(4)
    ]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(records))
    with pytest.raises(ValueError, match=r"policy 'cfc' has 3 checkpoints \(training seeds 0, 1, 2\).*--ood-policy"):
        ood_section(path, "cfc")
    path.write_text(json.dumps([r for r in records if r["training_seed"] == 0]))  # one checkpoint: its own numbers
    dusk = ood_section(path, "cfc")["shifts"]["dusk"]
    assert dusk["success"] == 1.0 and dusk["episodes"] == 4 and dusk["episode_seeds"] == "0..3"


def test_ctrl_c_while_measuring_is_one_line_and_the_children_exit_quietly(tmp_path, monkeypatch, capsys):
    """Before: Ctrl-C during a card's measurement printed a KeyboardInterrupt traceback from the card's process and
    one from each child measuring a kernel path (`--outcomes`)."""
    import os
    import signal
    import subprocess
    import sys

    from liquid_control.paths import policies_dir
    from liquid_control.training import model_card

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(model_card, "measure_both_paths", interrupted)
    try:
        model_card.main(["--refresh", "cfc_ncp_rover", "--out", str(tmp_path), "--cache", str(tmp_path / "cache")])
    except SystemExit as stop:
        code = stop.code
    except KeyboardInterrupt:  # caught here, or it would end the test session
        code = "KeyboardInterrupt escaped"
    assert code == 130
    err = capsys.readouterr().err
    assert err.strip().endswith(
        f"interrupted: no card written; the kernel paths measured to the end are kept in {tmp_path / 'cache'}"
    )
    assert "Traceback" not in err

    child = subprocess.Popen(  # a measuring child, with Python's SIGINT handler (a background job ignores SIGINT)
        [
            sys.executable,
            "-m",
            "liquid_control.training.model_card",
            "--outcomes",
            str(policies_dir() / "cfc_ncp_rover.pt"),
            "--episodes",
            "1000",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        seen = ""
        while "cfc_ncp_rover, " not in seen or " path:" not in seen:  # its bar ("NAME, compiled path:"): running
            char = child.stderr.read(1)
            assert char, seen
            seen += char
        os.kill(child.pid, signal.SIGINT)
        out, err = child.communicate(timeout=120)
    finally:
        child.kill()
    assert child.returncode == 130, seen + err
    assert "Traceback" not in seen + err and "KeyboardInterrupt" not in seen + err


def test_add_ood_keeps_the_lines_of_the_other_entries(tmp_path):
    """Before: add_ood wrote the front matter wrapped at YAML's default 80 characters while write_card and
    refresh_card wrap at 100, so filling the OOD section re-wrapped every long entry of the card (the shipped
    robust card's architecture, command, data and machine lines), and a later --refresh re-wrapped them back."""
    import yaml

    from liquid_control.training.model_card import OOD_NOT_MEASURED, add_ood

    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"policy": "p", "shift": "in_distribution", "episode_seed": 0, "success": True}]))
    command = "liquid-control train --config policies/configs/cfc_ncp_rover_robust.yaml --out runs/cfc_ncp_rover_robust"
    front = {"name": "p", "training": {"command": command + " --seed 0"}, "ood": OOD_NOT_MEASURED}
    written = yaml.safe_dump(front, sort_keys=False, width=100)  # as write_card lays it out
    card = tmp_path / "p.md"
    card.write_text(f"---\n{written}---\n\n# p\n\n- **OOD**: {OOD_NOT_MEASURED}.\n")
    add_ood(card, results, "p")
    assert card.read_text().startswith("---\n" + written.split("ood:")[0] + "ood:\n")


@pytest.mark.parametrize(
    "terminal, flags, bars", [(False, [], False), (True, [], True), (True, ["--no-progress"], False)]
)
def test_the_card_draws_bars_only_when_stderr_is_a_terminal(tmp_path, monkeypatch, terminal, flags, bars):
    """Before: the card's measuring processes always drew progress bars (`progress=True`), so the log of a
    35-minute card (stderr not a terminal, as in CI) filled with their redraws; `liquid-control eval` draws none
    there. Without a terminal, or with --no-progress, the processes write a line at each tenth instead."""
    import sys

    from liquid_control.training import model_card

    seen = []

    def measure(*args, **kwargs):
        seen.append(kwargs["progress"])
        return {path: {"kernel_path": path, "outcomes": [True] * 4} for path in ("compiled", "torch")}

    monkeypatch.setattr(model_card, "measure_both_paths", measure)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal)
    argv = ["--refresh", "cfc_balancer", "--episodes", "4", "--out", str(tmp_path), *flags]
    assert model_card.main(argv) == 0
    assert seen == [bars]


def test_the_measuring_processes_without_bars_write_a_line_at_each_tenth(capfd):
    """The two kernel paths' processes of a card in a log: no bar (no carriage return), a line per tenth of
    their episodes, each naming its path and ending with the successes the measurement returns. A rover policy (a
    balancer episode runs its whole 10 s: 15 s for 2 of them); whether a line counts successes rather than episodes
    does not rest on these episodes' outcomes: test_a_measuring_line_counts_the_successes_not_the_episodes."""
    from liquid_control.paths import policies_dir
    from liquid_control.training import model_card

    measured = model_card.measure_both_paths(policies_dir() / "cfc_rover.pt", 3, progress=False)
    err = capfd.readouterr().err
    assert "\r" not in err, err
    for path in ("compiled", "torch"):
        lines = [line for line in err.splitlines() if line.startswith(f"model_card: cfc_rover, {path} path: ")]
        successes = sum(measured[path]["outcomes"])
        assert [line.split(": ", 2)[2] for line in lines][-1] == f"3/3 episodes done ({successes} successes)", err
        assert len(lines) == 3, err


def test_the_measuring_processes_of_a_run_are_labelled_by_its_shipped_name(tmp_path, capfd):
    """Before: shipping a run (``--run RUN --name NAME``) measured RUN/policy.pt, and both processes' lines and bars
    were labelled 'policy', the file's name."""
    import shutil

    from liquid_control.paths import policies_dir
    from liquid_control.training import model_card

    (tmp_path / "run").mkdir()
    shutil.copyfile(policies_dir() / "cfc_rover.pt", tmp_path / "run" / "policy.pt")
    model_card.measure_both_paths(tmp_path / "run" / "policy.pt", 1, progress=False, name="my_rover")
    err = capfd.readouterr().err
    for path in ("compiled", "torch"):
        assert f"model_card: my_rover, {path} path: 1/1 episodes done" in err, err
    assert "model_card: policy," not in err, err


def test_a_measuring_line_counts_the_successes_not_the_episodes(monkeypatch):
    """The line of each tenth says the successes so far, whatever the episodes' outcomes (the subprocess test above
    sees a failure only where a closed-loop episode happens to fail on this machine's kernels)."""
    import types

    from liquid_control.paths import policies_dir
    from liquid_control.training import data, model_card

    outcomes = iter([True, False, False, True])
    monkeypatch.setattr(data, "rollout", lambda *args, **kwargs: types.SimpleNamespace(success=next(outcomes)))
    lines = []
    measured = model_card.measure_outcomes(policies_dir() / "cfc_rover.pt", 4, log=lines.append)
    assert measured == [True, False, False, True]
    assert lines == [
        f"{done}/4 episodes done ({successes} successes)" for done, successes in enumerate([1, 1, 1, 2], 1)
    ]


DEEP_JSON = "[" * 100_000 + "]" * 100_000  # nested past Python's recursion limit: json.loads raises RecursionError


def test_ood_section_refuses_results_nested_too_deeply_naming_the_file(tmp_path):
    """A results.json nested past the recursion limit (damaged or hostile) ended `model_card --ood` in a
    RecursionError traceback; it is refused as any other damaged results file, naming it."""
    path = tmp_path / "results.json"
    path.write_text(DEEP_JSON)
    with pytest.raises(ValueError, match=rf"^{path}: not the results.json .*: nested too deeply to read$"):
        ood_section(path, "robust")


def test_a_cached_measurement_nested_too_deeply_is_refused_naming_the_file(tmp_path):
    """A --cache entry nested past the recursion limit was a RecursionError traceback, not the CardError that
    says which file to remove."""
    from liquid_control.training.model_card import CardError, cache_file, read_cached

    stored = cache_file(tmp_path, "cfc_ncp_rover.pt", "torch", 5)
    stored.write_text(DEEP_JSON)
    with pytest.raises(CardError, match=rf"^{stored}: not a cached measurement \(nested too deeply to read\)"):
        read_cached(stored, 5)


def test_a_cached_measurement_is_reused_only_for_the_same_checkpoint_and_code(tmp_path, monkeypatch):
    """Before: ``--cache`` kept outcomes by the checkpoint's SHA-256 alone, so a card refreshed after a change to the
    worlds or the kernels printed the outcomes the old code measured. A measurement is written with its code and
    reused by the same code; another checkpoint, other code or an entry from before the code was kept measure anew."""
    import shutil
    import subprocess

    from liquid_control.paths import policies_dir
    from liquid_control.training import model_card

    policy = tmp_path / "p.pt"
    shutil.copyfile(policies_dir() / "cfc_rover.pt", policy)
    cache, measured, real_popen = tmp_path / "cache", [], subprocess.Popen

    def popen(argv, **kwargs):  # a measuring process that prints its outcomes, as --outcomes does
        measured.append(kwargs["env"][model_card.NATIVE_ENV])
        line = json.dumps({"kernel_path": f"path{len(measured)}", "outcomes": [True, False]})
        return real_popen([sys.executable, "-c", f"print({line!r})"], stdout=subprocess.PIPE, text=True)

    monkeypatch.setattr(model_card.subprocess, "Popen", popen)
    first = model_card.measure_both_paths(policy, 2, cache=cache, progress=False)
    assert measured == ["1", "0"]
    assert model_card.measure_both_paths(policy, 2, cache=cache, progress=False) == first and len(measured) == 2
    monkeypatch.setattr(model_card, "source_digest", lambda: "another code")
    model_card.measure_both_paths(policy, 2, cache=cache, progress=False)
    assert len(measured) == 4
    model_card.measure_both_paths(policy, 2, cache=cache, progress=False)
    assert len(measured) == 4  # kept with the new code
    for path in ("compiled", "torch"):  # an entry from before the code was kept
        stored = model_card.cache_file(cache, policy, path, 2)
        stored.write_text(json.dumps({k: v for k, v in json.loads(stored.read_text()).items() if k != "code"}))
    model_card.measure_both_paths(policy, 2, cache=cache, progress=False)
    assert len(measured) == 6
    with policy.open("ab") as f:  # another checkpoint (a retrained file of the same name)
        f.write(b"\0")
    model_card.measure_both_paths(policy, 2, cache=cache, progress=False)
    assert len(measured) == 8


def test_the_code_digest_follows_the_worlds_and_kernels_sources(tmp_path, monkeypatch):
    """The digest reads every source file of the package and the worlds: one byte more in a world's file changes it."""
    import sim_envs
    from liquid_control.training import model_card

    before = model_card.source_digest()
    assert model_card.source_digest() == before
    fake = tmp_path / "sim_envs"
    import shutil

    shutil.copytree(Path(sim_envs.__file__).parent, fake, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(sim_envs, "__file__", str(fake / "__init__.py"))
    assert model_card.source_digest() == before  # the same files elsewhere: the same code
    world = next(iter(sorted(fake.glob("*.py"))))
    world.write_text(world.read_text() + "\n")
    assert model_card.source_digest() != before
