"""A researcher's mistakes with the cells, policy files and `liquid-control train`: each
gives a message naming what is wrong, not a traceback or torch's internals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from liquid_control import cli
from liquid_control.cells import LTC, AutoNCP, CfC, CfCCell, LTCCell
from liquid_control.cells.checkpoint import CheckpointError, load_model, save_model
from liquid_control.policy import PolicyConfigError, PolicyLoadError, load_config, load_policy


def test_ctrl_c_before_a_command_runs_is_a_message_and_status_130(monkeypatch, capsys):
    """Before: Ctrl-C in the first seconds of `liquid-control train` (torch importing) dumped a KeyboardInterrupt
    traceback through importlib and exited by the signal."""

    def interrupted(name):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "command_parser", interrupted)
    assert cli.main(["train", "--out", "x"]) == 130
    assert capsys.readouterr().err.strip() == "liquid-control train: interrupted"


@pytest.mark.parametrize("make", [lambda: CfCCell(3, 5), lambda: LTCCell(3, 5), lambda: CfCCell(3, AutoNCP(6, 2))])
def test_a_cell_called_as_a_module_steps_like_ncps(make):
    """Before: cell(x, hx, dt) raised torch's 'missing the required "forward" function'; ncps's cells are called
    so, and return (output, state)."""
    torch.manual_seed(0)
    cell = make()
    x, dt = torch.randn(4, 3), torch.tensor([0.1, 0.05, 0.2, 0.0])
    h = torch.randn(4, cell.state_size)
    out, state = cell(x, h, dt)
    expected = cell.step(x, h, dt)
    assert torch.equal(state, expected) and torch.equal(out, cell.output(expected))
    assert out.shape == (4, cell.output_size)
    out0, state0 = cell(x, None, 0.1)  # no state: the zero state, as step
    assert torch.equal(state0, cell.step(x, None, 0.1))


def test_integer_input_is_told_to_become_float_not_the_module_integer():
    """Before: "convert one (x.to(torch.float32) or the module's .to(torch.int64))": weights cannot be integers."""
    rnn = CfC(4, 6)
    with pytest.raises(ValueError, match=r"x is torch.int64: x must be floating point \(x.to\(torch.float32\)\)$"):
        rnn(torch.ones(2, 3, 4, dtype=torch.long), 0.1)


def test_numpy_input_runs_like_a_tensor():
    """Before: AttributeError "'numpy.ndarray' object has no attribute 'dim'", while dt and mask took numpy."""
    torch.manual_seed(0)
    rnn = LTC(4, 6)
    x = np.random.default_rng(0).standard_normal((2, 5, 4)).astype(np.float32)
    out, h = rnn(x, np.full((2, 5), 0.1))
    ref_out, ref_h = rnn(torch.from_numpy(x), 0.1)
    assert torch.allclose(out, ref_out) and torch.allclose(h, ref_h)
    with pytest.raises(ValueError, match="x is torch.float64"):  # numpy's default float64: the dtype message
        rnn(x.astype(np.float64), 0.1)


def _saved_policy(tmp_path):
    from liquid_control.policy import Policy, save_policy

    cfg = load_config("policies/configs/cfc_balancer.yaml")
    return save_policy(tmp_path / "policy.pt", Policy(cfg))


def test_truncated_empty_and_text_files_say_which(tmp_path):
    """Before: a truncated policy said "(corrupt or wrong format; OSError: [Errno 22] Invalid argument)", a short
    text file "KeyError: 101", an empty one "EOFError"."""
    whole = _saved_policy(tmp_path).read_bytes()
    files = {
        "cut.pt": (
            whole[: len(whole) // 2],
            f"the file is truncated or damaged: its zip archive .* incomplete at {len(whole) // 2}",
        ),
        "empty.pt": (b"", r"the file is empty \(0 bytes\)"),
        "hello.pt": (b"hello\n", "it is not a torch file"),
    }
    for name, (content, message) in files.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(PolicyLoadError, match=f"{name}: not a readable policy file: {message}"):
            load_policy(tmp_path / name)
    core = tmp_path / "core.pt"
    save_model(core, CfCCell(3, 4))
    (tmp_path / "core_cut.pt").write_bytes(core.read_bytes()[:300])
    with pytest.raises(CheckpointError, match="core_cut.pt: not a readable checkpoint: the file is truncated"):
        load_model(tmp_path / "core_cut.pt")
    assert isinstance(load_model(core), CfCCell)  # a whole file still loads


def test_a_policy_file_given_as_config_is_named_as_binary(tmp_path):
    """Before: "cannot read the policy config: 'utf-8' codec can't decode byte 0x80 in position 64"."""
    path = _saved_policy(tmp_path)
    with pytest.raises(PolicyConfigError, match=r"policy.pt: not a YAML text file \(binary content; a policy .pt\?\)"):
        load_config(path)


@pytest.mark.parametrize("option", ["--threads", "--workers"])
def test_train_names_the_option_of_a_bad_count(option, capsys):
    """Before: "threads must be an integer >= 1 (or None: torch's default)": no option of the command is so named."""
    code = cli.main(["train", "--config", "policies/configs/cfc_balancer.yaml", "--out", "/nonexistent/x", option, "0"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"({option}) must be an integer >= 1" in err and err.endswith("got 0\n")


def test_ctrl_c_ends_an_evaluation_worker_without_a_traceback():
    """Before: Ctrl-C (SIGINT to the process group) printed a KeyboardInterrupt traceback from every idle
    process-pool worker of `liquid-control eval` above the evaluation's own "interrupted: ..." line."""
    import subprocess
    import sys

    # The exit code is read once the executor has reaped the worker: a join of our own raced the executor's
    # manager thread, which reaps a dead worker too (waitpid's loser reads exitcode None; it happened in CI).
    # the evaluation's own pool (spawn_pool: its workers make Ctrl-C a quiet exit as they start, not the initializer)
    script = """
import os, signal
from concurrent.futures.process import BrokenProcessPool
from liquid_control.evaluation.backends import _init_worker
from liquid_control.processes import spawn_pool
with spawn_pool(1, _init_worker) as pool:
    pid = pool.submit(os.getpid).result()  # the worker, idle from here on
    worker = pool._processes[pid]
    os.kill(pid, signal.SIGINT)
    try:
        pool.submit(os.getpid).result(timeout=60)
        print("the worker ran a task after Ctrl-C")
    except BrokenProcessPool:
        pass
print("exitcode", worker.exitcode)  # the pool's shutdown joined its manager thread, which joined the worker
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.stdout.split() == ["exitcode", "130"], done.stdout + done.stderr
    assert "KeyboardInterrupt" not in done.stderr and "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize(
    "base,setting,message",
    [
        ("cfc_rover", {"shift": "wintr"}, "training.shift: unknown or invalid shift 'wintr'"),
        ("cfc_rover", {"demonstrations": 1001}, "training.demonstrations: must be <= 1000, got 1001"),
        ("cfc_balance_nav_camera_only", {"sun_elevation_range": [30, 90]}, "no light named 'sun' to move"),
    ],
)
def test_a_setting_its_world_cannot_give_is_refused_naming_the_file(tmp_path, capsys, base, setting, message):
    """Before: what the config file asked of its world (a shift, a sun to move) or a schedule past the episode seeds'
    bounds was refused naming the key but not the file, while a bad value or an input the world lacks named both."""
    import yaml

    config = yaml.safe_load(open(f"policies/configs/{base}.yaml"))
    config["training"].update(setting)
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    assert cli.main(["train", "--config", str(path), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"liquid-control train: error: {path}: ") and message in err, err
    assert not out.exists()


@pytest.mark.parametrize(
    "section,message",
    [
        ("{bags: recordings/day1}", "data.bags: expected a list of bag folders, got str 'recordings/day1'"),
        ("{bags: [x], window: 1e3}", "data.window: expected an integer, got float 1000.0"),
        ("{bags: [x], windw: 64}", "data: unknown key(s) 'windw' (did you mean 'window'?); valid keys: bags,"),
    ],
)
def test_a_bad_data_section_is_refused_naming_the_file_and_what_the_key_takes(tmp_path, capsys, section, message):
    """Before: a config file's data: section with a mistake was refused without naming the file, a wrong type as
    "data.bags: wrong type str ('recordings/day1')", which did not say what the key takes."""
    path = tmp_path / "mine.yaml"
    path.write_text(open("policies/configs/cfc_ncp_rover.yaml").read() + f"data: {section}\n")
    out = tmp_path / "run"
    assert cli.main(["train", "--config", str(path), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"liquid-control train: error: {path}: {message}"), err
    assert not out.exists()


def test_augment_on_a_policy_without_a_camera_is_refused_naming_the_option(tmp_path, capsys):
    """Before: `train --augment` of a camera-less policy said "training.augmentation: [...] perturbs camera frames,
    and this policy has no observation.image; leave it []", naming a key the user never wrote."""
    out = tmp_path / "run"
    argv = ["train", "--config", "policies/configs/cfc_balancer.yaml", "--augment", "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("liquid-control train: error: --augment (training.augmentation): ['brightness'"), err
    assert "has no observation.image; leave --augment out" in err and not out.exists()


@pytest.mark.parametrize(
    "data,sets,message",
    [
        ("", ["training.shift=wintr"], "training.shift: unknown or invalid shift 'wintr'"),
        ("", ["training={demonstrations: 1001}"], "training.demonstrations: must be <= 1000, got 1001"),
        ("data: {bags: [x]}\n", ["data.window=1e3"], "data.window: expected an integer, got float 1000.0"),
        ("data: {bags: [x]}\n", ["data.topics.camera=[a,b]"], "data.topics.camera: expected a single value, got list"),
        ("data: {bags: [x]}\n", ["data.label.mode=" + "[" * 200 + "]" * 200], "data.label.mode: expected a single"),
        ("data: {bags: [x]}\n", ["data.bags=[[a]]"], "data.bags: expected a list of bag folders, got an entry list"),
    ],
)
def test_a_mistake_made_by_set_is_not_blamed_on_the_config_file(tmp_path, capsys, data, sets, message):
    """Before: a shift, a schedule or a data key given with --set was refused as the config file's own mistake
    ('mine.yaml: training.shift: unknown ... shift 'wintr''), sending the user to a file that does not say it; a bad
    value given with --set names no file (apply_overrides), nor do these now. A list or mapping set as a topic or a
    label value, or a bag entry that is a list, was checked only in a run's data.yaml: --set
    data.topics.camera=[a,b] was refused later as "no topic /['a', 'b'] in the bag", a value nested 200 deep printed
    whole; the data section's one check refuses them, the value cut."""
    path = tmp_path / "mine.yaml"
    path.write_text(open("policies/configs/cfc_ncp_rover.yaml").read() + data)
    out = tmp_path / "run"
    args = ["train", "--config", str(path), "--out", str(out), "--no-progress"]
    assert cli.main([*args, *(a for item in sets for a in ("--set", item))]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"liquid-control train: error: {message}"), err[:2000]
    assert "[" * 61 not in err and not out.exists()  # a value cut, not printed whole


def test_a_number_a_date_or_a_path_given_as_a_bag_names_the_folder_so(tmp_path, monkeypatch, capsys):
    """Before: 9d3dae9 refused every bag entry that was not a str ('data.bags: expected a list of bag folders, got
    [1]'): a recording folder named by a date (YAML reads `bags: [2024-01-05]` as a date) or a number, and a Path
    given to the Python API, as expand_bags had taken them on purpose (str()). They name the folder str() gives; a
    nested entry is still refused naming the key (test_a_mistake_made_by_set_is_not_blamed_on_the_config_file)."""
    from liquid_control.training import bag_data
    from liquid_control.yaml_numbers import load_yaml

    config = open("policies/configs/cfc_ncp_rover.yaml").read()
    monkeypatch.chdir(tmp_path)
    for name in ("1", "2024-01-05"):
        (tmp_path / name).mkdir()
    section = load_yaml("{bags: [1], validation: [2024-01-05]}")
    assert section["bags"] == [1] and not isinstance(section["validation"][0], str)  # what the user's YAML gives
    checked = bag_data.validate_data(section)
    assert checked["bags"] == [str(tmp_path / "1")] and checked["validation"] == [str(tmp_path / "2024-01-05")]
    assert bag_data.validate_data({"bags": [tmp_path / "1"]})["bags"] == [str(tmp_path / "1")]
    path = tmp_path / "mine.yaml"  # --set: the run looks for the folder named so (here none: nothing trains)
    path.write_text(config + "data: {bags: [x]}\n")
    out = tmp_path / "run"
    argv = ["train", "--config", str(path), "--out", str(out), "--no-progress", "--set", "data.bags=[7]"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("liquid-control train: error: data.bags: 7: no such bag"), err
    assert not out.exists()


@pytest.mark.parametrize(
    "section,options,message",
    [
        ("{bags: [x], windw: 64}", ["--bag", "y"], "data: unknown key(s) 'windw' (did you mean 'window'?); valid"),
        ("{bags: [x], label: {mod: 3}}", ["--label-offset-s", "0.1"], "data.label: unknown key(s) 'mod' (did you mean"),
    ],
)
def test_a_typo_of_the_data_section_stays_the_files_beside_a_data_option(tmp_path, capsys, section, options, message):
    """Before: any data option on the command line (--bag, --label-offset-s: a key inside the section the refusal
    names) took the file's name off the refusal of the file's own unknown key, as if the option had set it."""
    path = tmp_path / "mine.yaml"
    path.write_text(open("policies/configs/cfc_ncp_rover.yaml").read() + f"data: {section}\n")
    out = tmp_path / "run"
    assert cli.main(["train", "--config", str(path), *options, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"liquid-control train: error: {path}: {message}"), err
    assert not out.exists()


def test_a_runs_config_yaml_of_aliases_of_aliases_is_refused_naming_it(tmp_path, capsys):
    """A run folder's config.yaml (a downloaded or edited run) of aliases of aliases (a "billion laughs") is refused
    naming it, as a policy config is. Before: train --resume read it with yaml.safe_load and expanded it in the
    comparison with --config (a million names here; one more level of the same few lines never ended)."""
    levels = ["description:", "  l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 6)]
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("\n".join(levels) + "\nname: *l5\n")
    config = "policies/configs/cfc_ncp_rover.yaml"
    assert cli.main(["train", "--config", config, "--out", str(run), "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'config.yaml'}: not a readable config (aliases expand" in err, err[-2000:]
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]


def test_a_bag_runs_data_yaml_of_aliases_of_aliases_is_refused_naming_it(tmp_path):
    """A bag run's data.yaml (a downloaded or edited run) of aliases of aliases, as its config.yaml above. Before:
    read with yaml.safe_load, expanded into a million names (train --resume --set data.window=... printed them; one
    more level never ended)."""
    from liquid_control.training.bag_data import read_data_file
    from liquid_control.training.run import TrainingError

    levels = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 6)]
    path = tmp_path / "data.yaml"
    path.write_text("\n".join(levels) + "\ndata: {bags: [a], validation: *l5}\n")
    with pytest.raises(TrainingError, match=r"data\.yaml: not a readable data\.yaml \(AliasBombError: aliases expand"):
        read_data_file(path)


def test_a_start_record_nested_past_the_recursion_limit_is_refused_naming_it(tmp_path):
    """A run folder's started_from.json of ``[[[[...`` (damaged, or not ours). Before: a RecursionError traceback
    (json's error for it is no ValueError), where a damaged record is refused naming it."""
    from liquid_control.training.run import TrainingError
    from liquid_control.training.trainer import START_FILE, recorded_start

    (tmp_path / START_FILE).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(TrainingError, match=rf"{START_FILE}: not a readable record of the run's start \(nested too"):
        recorded_start(tmp_path, None)


def test_a_yaw_lens_other_than_the_worlds_camera_at_its_aspect_is_told_at_the_start(tmp_path, monkeypatch):
    """docs/training.md gave the rover's 'yaw' field of view as 100 degrees, true of a square image only: a rover
    policy 48 high and 64 wide sees 115.6 degrees wide, and 'yaw' with hfov_deg 100 turned its frames as through
    another lens without a word. Now train says so when it starts, naming the value to set; the matching lens, or a
    square image with 100, gets no such line."""
    from liquid_control.training import trainer

    class Started(Exception):
        pass

    def started(run):
        raise Started

    monkeypatch.setattr(trainer.TrainingRun, "run", started)
    for width, hfov, said in ((64, 100.0, True), (64, 115.6, False), (48, 100.0, False)):
        logged = []
        with pytest.raises(Started):
            trainer.train(
                "policies/configs/cfc_ncp_rover.yaml",
                tmp_path / f"w{width}_{hfov:g}",
                overrides={
                    "observation.image.height": 48,
                    "observation.image.width": width,
                    "training.augmentation": ["yaw"],
                    "training.yaw_recovery": {"gain": 1.667, "hfov_deg": hfov},
                },
                progress=False,
                log=logged.append,
            )
        lines = [line for line in logged if "hfov_deg" in line]
        expected = [
            "warning: training.yaw_recovery.hfov_deg is 100, but LiquidRover-v0's camera at 64x48 (width x height) "
            "sees 115.6 degrees wide (100 vertically): 'yaw' would turn the frames as through another lens; set "
            "hfov_deg: 115.6 (the recorded bags' own camera where they come from a robot)"
        ]
        assert lines == (expected if said else []), logged
