"""Bad input to `train --bag` / `eval --bag`: a parameter file that is not one, a parameter of the wrong type,
a folder that is not a bag. One line naming the file (and the parameter), exit 2, nothing left in --out."""

import re
import subprocess
import sys

import pytest

from liquid_control import cli, paths
from liquid_control.bags import BagError, BagReader
from liquid_control.bags.stream import load_node_parameters
from liquid_control.paths import policies_dir
from liquid_control.shown import shown
from liquid_control.yaml_numbers import load_yaml

ROVER = "policies/configs/cfc_rover.yaml"


@pytest.mark.parametrize(
    "text, message",
    [
        ("nope\n", "np.yaml: expected a mapping (policy_node: ros__parameters: ...), got str 'nope'"),
        ("policy_node:\n  ros__parameters: [1]\n", "np.yaml: policy_node.ros__parameters: expected a mapping"),
        (
            "policy_node:\n  ros__parameters:\n    action_scale: abc\n",
            "np.yaml: policy_node.ros__parameters.action_scale: expected a number or a list of numbers, got 'abc'",
        ),
        (
            "/**:\n  ros__parameters:\n    camera_topic: 5\n",
            "np.yaml: /**.ros__parameters.camera_topic: expected a string, got 5",
        ),
        (
            "policy_node:\n  ros__parameters:\n    action_scale: [1.0, 2.0, 3.0]\n",
            "np.yaml: action_scale [1.0, 2.0, 3.0]: needs 1 or 2 finite non-zero values",
        ),
        *[  # before: an OverflowError traceback (float() of an integer past a float's range)
            (
                f"policy_node:\n  ros__parameters:\n    {key}: {value}\n",
                f"np.yaml: policy_node.ros__parameters.{key}: expected {want}, got {shown(load_yaml(value))} (an "
                "integer past a float's range)",
            )
            for key, value, want in [
                ("action_scale", f"[1{'0' * 400}, 1]", "a number or a list of numbers"),
                *[
                    (key, f"-1{'0' * 400}", "a number")
                    for key in ("max_gap_s", "max_backward_jump_s", "max_future_stamp_s", "first_update_dt")
                ],
                ("reorder_lag_s", f"1{'0' * 400}", "a number"),
            ]
        ],
        (  # before: trained on the default max_gap_s without a word (the node warns and runs on the default)
            "policy_node:\n  ros__parameters:\n    use_sim_time: true\n    max_gapp_s: 1.0\n",
            "np.yaml: policy_node.ros__parameters: not a policy_node parameter: max_gapp_s (did you mean max_gap_s?)",
        ),
    ],
)
def test_a_bad_node_parameter_file_is_named_and_nothing_is_written(tmp_path, capsys, text, message):
    """Before: an AttributeError traceback ('str' object has no attribute 'items'), or "could not convert
    string to float: 'abc'" naming neither the file nor the parameter; train left config.yaml in --out."""
    params = tmp_path / "np.yaml"
    params.write_text(text)
    bag = tmp_path / "bag"
    bag.mkdir()
    train = ["train", "--config", ROVER, "--bag", str(bag), "--node-params", str(params), "--no-progress"]
    assert cli.main([*train, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert len(err) < 400 + len(str(params))  # a value of 400 digits cut short, not printed whole
    assert not (tmp_path / "run").exists()
    shipped = str(policies_dir() / "cfc_rover.pt")
    evaluate = ["eval", "--bag", str(bag), "--policy", shipped, "--node-params", str(params), "--no-progress"]
    assert cli.main([*evaluate, "--out", str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "eval").exists()  # the data spec is checked before the report folder is made
    if "needs 1 or 2" not in message:
        with pytest.raises(ValueError) as raised:
            load_node_parameters(params)
        assert message in str(raised.value)


def test_a_refused_bag_leaves_no_run_behind(tmp_path, capsys):
    """Before: a folder that is not a bag was refused, but --out kept config.yaml, data.yaml and an empty
    data/bags/train/, and the corrected command was refused ("already holds a training run")."""
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "run"
    argv = ["train", "--config", ROVER, "--bag", str(empty), "--out", str(out), "--no-progress"]
    for _ in range(2):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert f"train bag 1/1: {empty}: not a rosbag2 bag" in err and "already holds" not in err
        assert not out.exists()
    # eval --bag: the same folder refused, and no empty report folder left behind (it was made before the bag
    # was opened)
    report = tmp_path / "report"
    shipped = str(policies_dir() / "cfc_rover.pt")
    assert cli.main(["eval", "--bag", str(empty), "--policy", shipped, "--out", str(report), "--no-progress"]) == 2
    assert "not a rosbag2 bag" in capsys.readouterr().err and not report.exists()


def _small_bag(path, commands: int = 5, size: int = 8):
    """A bag with a few camera frames (``size`` pixels square) and commands on /cmd_vel, 50 ms apart (what a
    teleoperated run holds)."""
    import numpy as np

    from liquid_control.bags import BagWriter
    from liquid_control.bags.messages import image_message, twist_message

    with BagWriter(path) as bag:
        for k in range(commands):
            t = 1.0 + 0.05 * k
            bag.write("/camera/image_raw", int(t * 1e9), image_message(np.zeros((size, size, 3), np.uint8), t))
            bag.write("/cmd_vel", int(t * 1e9) + 1000, twist_message(0.5, 0.1))
    return path


def test_a_missing_bag_is_refused_before_any_bag_is_converted(tmp_path, capsys, monkeypatch):
    """Before: `train --bag 'bags/*' --bag bags/nothere` converted every bag before failing on the missing one
    ("train bag 3/3: ... no such bag"), and a missing --val-bag only after all the training bags: with hour-long
    bags a typo cost the whole conversion."""
    from liquid_control.training import bag_data

    for name in ("a", "b"):  # bags the rover policy trains on (its 64x64 camera)
        _small_bag(tmp_path / "bags" / name, size=64)
    converted, convert = [], bag_data.convert_bag

    def converting(bag, *args, **kwargs):
        converted.append(bag)
        return convert(bag, *args, **kwargs)

    monkeypatch.setattr(bag_data, "convert_bag", converting)
    out = tmp_path / "run"
    train = ["train", "--config", ROVER, "--bag", str(tmp_path / "bags" / "*"), "--out", str(out), "--no-progress"]
    nothere = tmp_path / "nothere"
    for option in ("--bag", "--val-bag"):  # each message names the option given, as eval --bag's
        assert cli.main([*train, option, str(nothere)]) == 2
        err = capsys.readouterr().err
        assert f"{option} {nothere}: no such bag (a rosbag2 folder with metadata.yaml and a .mcap file)" in err, err
        assert converted == [] and not out.exists()
    # a data: section's bags: its key named
    with pytest.raises(BagError, match=rf"^data\.validation: {re.escape(str(nothere))}: no such bag"):
        bag_data.validate_data({"bags": [str(tmp_path / "bags" / "a")], "validation": [str(nothere)]})
    # eval --bag likewise: refused before any bag is played
    from liquid_control.evaluation import offline

    played = []
    monkeypatch.setattr(offline, "evaluate_bag", lambda *args, **kwargs: played.append(args) or None)
    report = tmp_path / "offline"
    evaluate = ["eval", "--bag", str(tmp_path / "bags" / "a"), "--bag", str(nothere), "--out", str(report)]
    assert cli.main([*evaluate, "--policy", str(policies_dir() / "cfc_rover.pt"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"--bag {nothere}: no such bag (a rosbag2 folder with metadata.yaml and a .mcap file)" in err, err
    assert played == [] and not report.exists()
    evaluate[evaluate.index(str(nothere))] = str(tmp_path / "nothere*")
    assert cli.main([*evaluate, "--policy", str(policies_dir() / "cfc_rover.pt"), "--no-progress"]) == 2
    assert f"--bag '{tmp_path / 'nothere*'}' matches no bag" in capsys.readouterr().err
    assert played == [] and not report.exists()


def test_set_data_overrides_the_data_section_validated_as_the_file(tmp_path, capsys):
    """Before: with a config holding a data: section, `--set data.window=0` failed with "override
    'data.window': 'data' is not a section", and no data setting could be changed by --set. Also: an option
    such as --label-offset-s replaced the file's whole label (its mode went back to the default). A bad label time
    was refused in the rule's words ('data: label offset_s must be ...') whether the file, --set or the option
    --label-offset-s (of train or eval) gave it: each is now named as given."""
    import yaml

    for name in ("a", "b"):
        _small_bag(tmp_path / "bags" / name, size=64)
    config = yaml.safe_load(open(ROVER).read())
    config["data"] = {"bags": [str(tmp_path / "bags" / "a")], "window": 16, "label": {"mode": "held"}}
    config["training"]["epochs_first"] = 1
    path = tmp_path / "with_data.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    train = ["train", "--config", str(path), "--out", str(out), "--no-progress"]
    refused = [
        (["--set", "data.window=0"], "data.window: must be >= 2 updates, got 0"),
        (["--set", "data.windw=3"], "data: unknown key(s) 'windw' (did you mean 'window'?); valid keys: bags,"),
        (["--set", "data.label.mod=next"], "data.label: unknown key(s) 'mod' (did you mean 'mode'?); valid keys: mode"),
        (
            ["--set", "data.label.offset_s=-1"],
            "error: data.label.offset_s: must be a finite number of seconds >= 0, got -1",
        ),
        (["--set", "data.label.mode=next", "--label", "held"], "--set data.label.mode and the option setting"),
        # an integer past a float's range: an OverflowError traceback out of cli.main before; values cut
        (
            ["--set", "data.label.offset_s=1" + "0" * 400],
            "data.label.offset_s: must be a finite number of seconds >= 0, got 1000",
        ),
        (["--set", "data.label.mode=" + "x" * 300], "data.label.mode: must be one of next, held, got 'xxxxxxxx"),
    ]
    for argv, message in refused:
        assert cli.main([*train, *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and "not a section" not in err and "Traceback" not in err, err
        assert "0" * 100 not in err and "x" * 100 not in err, err
        assert not out.exists()
    for option, value in (("--label-offset-s", "-1"), ("--label-max-wait-s", "nan")):  # the options, as given
        with pytest.raises(SystemExit) as refused_by_argparse:
            cli.main([*train, option, value])
        said = f"error: argument {option}: must be a finite number of seconds >= 0, got '{value}'"
        assert refused_by_argparse.value.code == 2 and said in capsys.readouterr().err and not out.exists()
    config["data"]["label"] = {"mode": "held", "offset_s": -1}  # in the file: the file and its key
    path.write_text(yaml.safe_dump(config))
    assert cli.main(train) == 2
    said = f"error: {path}: data.label.offset_s: must be a finite number of seconds >= 0, got -1"
    assert said in capsys.readouterr().err and not out.exists()
    config["data"]["label"] = {"mode": "held"}
    path.write_text(yaml.safe_dump(config))
    report = tmp_path / "report"
    evaluate = ["eval", "--policy", str(policies_dir() / "cfc_ncp_rover.pt"), "--bag", str(tmp_path / "bags" / "a")]
    with pytest.raises(SystemExit) as refused_by_argparse:
        cli.main([*evaluate, "--out", str(report), "--label-max-wait-s", "-2"])
    said = "error: argument --label-max-wait-s: must be a finite number of seconds >= 0, got '-2'"
    assert refused_by_argparse.value.code == 2 and said in capsys.readouterr().err and not report.exists()
    argv = ["--set", "data.window=4", "--set", "data.label.max_wait_s=0.2", "--label-offset-s", "0.1"]
    assert cli.main([*train, *argv, "--set", f"data.validation=[{tmp_path / 'bags' / 'b'}]"]) == 0
    data = yaml.safe_load((out / "data.yaml").read_text())["data"]
    assert data["window"] == 4 and data["validation"] == [str(tmp_path / "bags" / "b")]
    assert data["label"] == {"mode": "held", "offset_s": 0.1, "max_wait_s": 0.2}


def test_resume_without_a_config_changes_a_bag_runs_data_settings_over_its_data_yaml(tmp_path, capsys, monkeypatch):
    """Before: `train --out RUN --resume --set data.window=8` (no --config: the run's own is used) built the data
    section from the --set alone and was refused with "data.bags: no training bags given", though the run's
    data.yaml names them. Now data.yaml is the base: a change is applied before the first epoch and refused,
    naming data.yaml, after it."""
    import yaml

    from liquid_control.training import bag_data

    bag = _small_bag(tmp_path / "bags" / "a", size=64)
    config = yaml.safe_load(open(ROVER).read())
    config["training"]["epochs_first"] = 1
    path = tmp_path / "one_epoch.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"

    def killed(self, *args, **kwargs):  # a kill after the bags were converted, before the first epoch ended
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(bag_data.BagRun, "train_epoch", killed)
        start = ["train", "--config", str(path), "--bag", str(bag), "--out", str(out), "--no-progress"]
        assert cli.main([*start, "--set", "data.window=16"]) == 130
    assert yaml.safe_load((out / "data.yaml").read_text())["data"]["window"] == 16
    capsys.readouterr()
    resume = ["train", "--out", str(out), "--resume", "--no-progress"]
    assert cli.main([*resume, "--set", "data.window=8"]) == 0, capsys.readouterr().err
    data = yaml.safe_load((out / "data.yaml").read_text())["data"]
    assert data["window"] == 8 and data["bags"] == [str(bag)]
    capsys.readouterr()
    assert cli.main([*resume, "--set", "data.window=4"]) == 2  # trained: another window is another run
    err = capsys.readouterr().err
    assert f"{out / 'data.yaml'}: the run was trained on other bags or data settings" in err, err
    assert "no training bags given" not in err
    assert cli.main(resume) == 0  # the run's own settings: nothing to do, policy.pt kept


def _one_epoch_bag_run(tmp_path_factory, name: str):
    """A one-epoch bag run on a small bag, both in a fresh folder ``name``: its command line and its folder."""
    import yaml

    tmp = tmp_path_factory.mktemp(name)
    bag, out = _small_bag(tmp / "bags" / "a", size=64), tmp / "run"
    config = yaml.safe_load(open(ROVER).read())
    config["training"]["epochs_first"] = 1
    (tmp / "one_epoch.yaml").write_text(yaml.safe_dump(config))
    start = ["train", "--config", str(tmp / "one_epoch.yaml"), "--bag", str(bag), "--out", str(out), "--no-progress"]
    return start, out


@pytest.fixture(scope="module")
def killed_bag_run(tmp_path_factory):
    """A bag run stopped after converting its bag, before its first epoch ended: its folder (data.yaml written)."""
    from liquid_control.training import bag_data

    start, out = _one_epoch_bag_run(tmp_path_factory, "killed_bag_run")

    def killed(self, *args, **kwargs):
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bag_data.BagRun, "train_epoch", killed)
        assert cli.main(start) == 130
    return out


@pytest.fixture(scope="module")
def trained_bag_run(tmp_path_factory):
    """A bag run that finished its one epoch: its folder (policy.pt, checkpoint.pt, data.yaml) and its command."""
    start, out = _one_epoch_bag_run(tmp_path_factory, "trained_bag_run")
    assert cli.main(start) == 0
    return out, start


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_bag_run_without_its_data_yaml_is_refused_not_trained_as_a_simulated_run(
    killed_bag_run, trained_bag_run, tmp_path, capsys, monkeypatch
):
    """Before: `rm RUN/data.yaml; train --out RUN --resume` of a bag run found no data section and trained a whole
    simulated DAgger run in the bag run's folder (386 s for the rover), overwriting its policy.pt, exit 0; with
    --config and --bag again, one that had trained an epoch wrote a new data.yaml of whatever bags were given. The
    folder shows a bag run (data/bags/, which every version wrote; config.yaml's first line, since 2026-12-05): the
    resume is refused in one line naming the missing file, before any training starts, the folder unchanged."""
    import shutil

    from liquid_control.policy.config import BAG_RUN_CONFIG_NOTE
    from liquid_control.training import trainer

    def simulated(*args, **kwargs):
        raise AssertionError("a simulated run started in a bag run's folder")

    monkeypatch.setattr(trainer, "TrainingRun", simulated)  # before the fix: fails here, not after 386 s
    trained, start = trained_bag_run
    for name, source, edit in [
        ("killed", killed_bag_run, None),
        ("trained", trained, None),
        ("older", killed_bag_run, "no config note"),  # data/bags/ alone shows it
        ("converted_nothing", killed_bag_run, "no data/bags"),  # config.yaml's first line alone
    ]:
        out = tmp_path / name
        shutil.copytree(source, out)
        (out / "data.yaml").unlink()
        if edit == "no config note":
            text = (out / "config.yaml").read_text()
            assert text.startswith(BAG_RUN_CONFIG_NOTE)
            (out / "config.yaml").write_text(text.removeprefix(BAG_RUN_CONFIG_NOTE))
        elif edit == "no data/bags":
            shutil.rmtree(out / "data" / "bags")
        before = _files(out)
        assert cli.main(["train", "--out", str(out), "--resume", "--no-progress"]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith(
            f"liquid-control train: error: {out / 'data.yaml'}: missing, and {out} is a run from recorded bags ("
        ), err
        assert err.rstrip().endswith("restore it, or train into a new folder") and len(err.splitlines()) == 1, err
        assert _files(out) == before, name
    out = tmp_path / "given_again"  # a run that trained an epoch, resumed with its config and bag: what it trained
    shutil.copytree(trained, out)  # on cannot be compared
    (out / "data.yaml").unlink()
    before = _files(out)
    argv = [*start[:-2], str(out), "--no-progress", "--resume"]  # its --config and --bag, this --out
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"{out / 'data.yaml'}: missing (the run has trained on its bags); restore it" in err, err
    assert _files(out) == before


def test_a_bag_run_resumed_with_a_config_but_no_bag_resumes_from_its_data_yaml(
    killed_bag_run, trained_bag_run, tmp_path, capsys, monkeypatch
):
    """Before: `train --config RUN/config.yaml --out RUN --resume` of a bag run (no --bag: its config.yaml has no
    data section) started a simulated run in its folder, data.yaml there or not (after a trained epoch it failed
    later as 'data/round_00/ep_0000.npz: missing'); only a resume without --config was caught (932786d). It
    resumes the bag run from its data.yaml as a resume without --config does, the config checked against the
    run's; without data.yaml it is refused as that resume is. train(None, RUN) without resume there says a config
    is optional only with resume, as before 932786d (not that data.yaml is missing). Nothing trains here: a
    simulated run raises, a bag run's epoch is interrupted."""
    import shutil

    import yaml

    from liquid_control.training import bag_data, trainer

    def simulated(*args, **kwargs):
        raise AssertionError("a simulated run started in a bag run's folder")

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "TrainingRun", simulated)
    monkeypatch.setattr(bag_data.BagRun, "train_epoch", interrupted)
    trained, start = trained_bag_run
    other = tmp_path / "other.yaml"  # the run's config with another learning rate
    config = yaml.safe_load((trained / "config.yaml").read_text())
    config["training"]["lr"] *= 2
    other.write_text(yaml.safe_dump(config))
    for name, source, given, code in [
        ("killed", killed_bag_run, "own", 130),  # its bag run's epoch started (and was interrupted)
        ("trained", trained, "own", 0),  # nothing left to train
        ("trained_first_config", trained, start[2], 0),  # the config it was started with (one_epoch.yaml)
        ("other_config", trained, str(other), 2),
    ]:
        out = tmp_path / name
        shutil.copytree(source, out)
        policy = (out / "policy.pt").read_bytes() if (out / "policy.pt").is_file() else None
        config_path = str(out / "config.yaml") if given == "own" else given
        argv = ["train", "--config", config_path, "--out", str(out), "--resume", "--no-progress"]
        assert cli.main(argv) == code, name
        err = capsys.readouterr().err
        if code == 130:
            assert "interrupted" in err, err
        if code == 2:
            assert f"{out / 'config.yaml'}: the run was started with another config (keys that differ: " in err, err
            assert "training.lr" in err, err
        assert policy is None or (out / "policy.pt").read_bytes() == policy, name
    for name, source in (("killed_no_data_yaml", killed_bag_run), ("trained_no_data_yaml", trained)):
        out = tmp_path / name
        shutil.copytree(source, out)
        (out / "data.yaml").unlink()
        before = _files(out)
        argv = ["train", "--config", str(out / "config.yaml"), "--out", str(out), "--resume", "--no-progress"]
        assert cli.main(argv) == 2, name
        err = capsys.readouterr().err
        assert err.startswith(
            f"liquid-control train: error: {out / 'data.yaml'}: missing, and {out} is a run from recorded bags ("
        ), err
        assert _files(out) == before, name
    with pytest.raises(trainer.TrainingError, match=r"^no config given \(a config is optional only with resume\)$"):
        trainer.train(None, out, progress=False)  # the Python API (the command line requires --config first)
    assert _files(out) == before


NESTED = "[" * 300 + "]" * 300  # deep, yet read by the YAML reader (which refuses nesting near the recursion limit)


@pytest.mark.parametrize(
    "edit, said",
    [
        *[
            (f"del data['data'][{key!r}]", f"data.{key}: missing")
            for key in ("bags", "validation", "node_params", "topics", "command_topic", "label", "allow_truncated")
        ],
        ("del data['data']['window']", "data.window: missing"),
        ("del data['spec']", "spec: missing"),
        ("data['data']['window'] = 'x'", "data.window: expected an integer, got str 'x'"),
        ("data['data']['label'] = [1]", "data.label: expected a mapping, got list [1]"),
        ("data['data']['bags'] = [5]", "data.bags: expected a list of bag folders, got [5]"),
        ("data['data']['label'] = {'mode': 'x'}", "data.label.mode: must be one of next, held, got 'x'"),
        (
            "data['data']['label'] = {'offset_s': 10**400}",
            "data.label.offset_s: must be a finite number of seconds >= 0",
        ),
        ("data['spec'] = 5", "spec: expected a mapping, got int 5"),
        ("data['data']['topics'] = {'camera': 'NESTED'}", "data.topics.camera: expected a single value, got list [[["),
        ("data['data']['label'] = {'mode': 'NESTED'}", "data.label.mode: expected a single value, got list [[["),
    ],
)
@pytest.mark.parametrize("sets", [[], ["--set", "data.label.max_wait_s=0.4"]], ids=["as_recorded", "with_set"])
def test_a_damaged_data_yaml_is_refused_by_a_resume_naming_the_file_and_key(
    killed_bag_run, tmp_path, capsys, edit, said, sets
):
    """Before: `train --out RUN --resume` of a bag run whose data.yaml lacked a key or held one of another type (a
    hand edit, a damaged or foreign file) took the section unchecked: a KeyError ('node_params', 'window'...) or
    TypeError traceback; with --set the missing keys filled with defaults (exit 0, a window of 512 for the run's);
    a value nested hundreds deep printed whole in a refusal naming no file (a topic '/[[[[...' looked for in the
    bag). Every version of the project wrote all of the data keys and spec, so each is required; the resume is
    refused in one line naming the file and the key, exit 2, the folder unchanged."""
    import shutil

    import yaml

    out = tmp_path / "run"
    shutil.copytree(killed_bag_run, out)
    data = yaml.safe_load((out / "data.yaml").read_text())
    exec(edit, {"data": data})
    (out / "data.yaml").write_text(yaml.safe_dump(data).replace("NESTED", NESTED))
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert cli.main(["train", "--out", str(out), "--resume", "--no-progress", *sets]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"liquid-control train: error: {out / 'data.yaml'}: {said}"), err[:2000]
    assert err.rstrip().endswith("restore it, or train into a new folder") and len(err.splitlines()) == 1
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_a_bag_runs_own_data_yaml_resumes(killed_bag_run, trained_bag_run, tmp_path, capsys):
    """The run's data.yaml as written passes the checks of a damaged one above: the resume trains. One as an older
    version wrote it (no spec.limits.reorder_lag_s, 1b658c52) in a run that finished an epoch, where the data.yaml
    is compared with the run's settings (DATA_KEYS_ADDED: what the older version did), resumes too (nothing left
    to train, policy.pt kept), while another spec there is refused: the comparison ran."""
    import shutil

    import yaml

    out = tmp_path / "as_written"
    shutil.copytree(killed_bag_run, out)
    assert cli.main(["train", "--out", str(out), "--resume", "--no-progress"]) == 0, capsys.readouterr().err
    assert (out / "policy.pt").is_file()
    trained, _ = trained_bag_run
    for name, value in (("older", None), ("other", 0.05)):
        out = tmp_path / name
        shutil.copytree(trained, out)
        data = yaml.safe_load((out / "data.yaml").read_text())
        assert "reorder_lag_s" in data["spec"]["limits"]  # written by today's version
        if value is None:
            del data["spec"]["limits"]["reorder_lag_s"]
        else:
            data["spec"]["limits"]["reorder_lag_s"] = value
        (out / "data.yaml").write_text(yaml.safe_dump(data))
        policy = (out / "policy.pt").read_bytes()
        code = cli.main(["train", "--out", str(out), "--resume", "--no-progress"])
        err = capsys.readouterr().err
        if value is None:
            assert code == 0, err
        else:
            assert code == 2 and "keys that differ: spec.limits.reorder_lag_s" in err, err
        assert (out / "policy.pt").read_bytes() == policy


def test_a_window_changed_before_the_first_epoch_cuts_the_cached_bag_again(tmp_path, monkeypatch):
    """Before: a run stopped after converting its bags (Ctrl-C once the log said "(2 windows of at most 16
    updates)") and resumed with `--set data.window=8` (docs/training.md: raise the window for a fusion policy)
    reused the bag's cache cut at 16: data.yaml said 8 while the run trained on windows of 16. The cache's cut is
    part of what it holds: another window converts the bag again (an unchanged one still reuses it)."""
    import json

    import yaml

    from liquid_control.training import bag_data

    bag = _small_bag(tmp_path / "bags" / "a", commands=20, size=64)
    config = yaml.safe_load(open(ROVER).read())
    config["training"]["epochs_first"] = 1
    path = tmp_path / "one_epoch.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"

    def windows() -> list[int]:
        (found,) = (out / "data" / "bags" / "train").glob("*/index.json")
        return [piece["length"] for piece in json.loads(found.read_text())["segments"]]

    def killed(self, *args, **kwargs):  # a kill after the bags were converted, before the first epoch ended
        raise KeyboardInterrupt

    converted, convert = [], bag_data.convert_bag

    def converting(bag, *args, **kwargs):
        converted.append(bag)
        return convert(bag, *args, **kwargs)

    monkeypatch.setattr(bag_data, "convert_bag", converting)
    with monkeypatch.context() as patch:
        patch.setattr(bag_data.BagRun, "train_epoch", killed)
        start = ["train", "--config", str(path), "--bag", str(bag), "--out", str(out), "--no-progress"]
        assert cli.main([*start, "--set", "data.window=16"]) == 130
        assert windows() == [16, 4] and len(converted) == 1
        resume = ["train", "--out", str(out), "--resume", "--no-progress"]
        assert cli.main([*resume, "--set", "data.window=16"]) == 130
        assert windows() == [16, 4] and len(converted) == 1  # the same cut: the cache is reused
    assert cli.main([*resume, "--set", "data.window=8"]) == 0
    assert windows() == [8, 8, 4] and len(converted) == 2


def test_replay_with_a_relative_record_topic_does_not_record_the_bags_own_commands(tmp_path, capsys):
    """Before: `--record cmd_vel` (as the node's parameter file spells command_topic) left the bag's /cmd_vel
    among the replayed topics; with no policy node running, the recorder recorded those replayed commands and
    replay reported success (exit 0) with the operator's commands as "the node's"."""
    from liquid_control.ros.testing import free_domain_id

    bag = _small_bag(tmp_path / "bag")
    out = tmp_path / "replayed"
    argv = ["replay", str(bag), "-o", str(out), "--record", "cmd_vel", "--wait", "0", "--linger", "0.3"]
    assert cli.main([*argv, "--domain-id", str(free_domain_id())]) == 1  # nothing recorded: no node runs
    captured = capsys.readouterr()
    assert "/cmd_vel" not in captured.out.split("published")[1]  # the bag's commands were not replayed
    with BagReader(out) as reader:
        assert reader.message_count == 0


def test_replay_waits_once_for_a_policy_node_that_never_comes(tmp_path, capsys, monkeypatch):
    """Before: with no policy node, replay waited --wait s for subscribers, said "playing anyway", then waited --wait
    s more for the node's command publisher before playing anything: twice the wait, the second unsaid. On a
    simulated clock (replay's sleeps advance it; no real wait): the bag starts playing --wait s after the start."""
    from types import SimpleNamespace

    from liquid_control.ros import replay
    from liquid_control.ros.testing import free_domain_id

    clock = SimpleNamespace(now=1000.0, played_at=[])
    monkeypatch.setattr(
        replay,
        "time",
        SimpleNamespace(monotonic=lambda: clock.now, sleep=lambda s: setattr(clock, "now", clock.now + s)),
    )
    real_play = replay.Replay.play

    def play(self, *args, **kwargs):
        clock.played_at.append(clock.now - 1000.0)
        return real_play(self, *args, **kwargs)

    monkeypatch.setattr(replay.Replay, "play", play)
    bag = _small_bag(tmp_path / "bag")
    argv = ["replay", str(bag), "-o", str(tmp_path / "replayed"), "--wait", "60", "--linger", "0"]
    assert cli.main([*argv, "--domain-id", str(free_domain_id())]) == 1  # nothing recorded: no node runs
    assert "no subscriber on any of" in capsys.readouterr().err
    assert len(clock.played_at) == 1 and 60 <= clock.played_at[0] < 61, clock.played_at  # 60 s, then 0.5 s of discovery


def test_replay_stops_at_the_first_failed_write_naming_the_bag_topic_and_count(tmp_path, capsys, monkeypatch):
    """Before: a write into the output bag that failed (its disk full: OSError ENOSPC) killed the executor's
    thread ("Exception in thread"), the playback went on to the end of the bag (hours on a long one) and the
    exit code said nothing, or 2 only at the very end."""
    import errno
    import re
    import time

    from sensor_msgs.msg import Imu

    from liquid_control.bags import BagWriter
    from liquid_control.ros.testing import free_domain_id

    bag = tmp_path / "bag"
    with BagWriter(bag) as writer:  # 400 IMU messages, 10 ms apart: 4 s (2 s at --rate 2)
        for i in range(400):
            writer.write("/imu/data", 10**12 + i * 10_000_000, Imu())
    out = tmp_path / "replayed"
    real_write, writes = BagWriter.write, []

    def write(self, topic, log_time_ns, message, msgtype=None, publisher=None):
        if self.path == out:
            if len(writes) == 20:
                raise OSError(errno.ENOSPC, "No space left on device")
            writes.append(topic)
        return real_write(self, topic, log_time_ns, message, msgtype, publisher)

    monkeypatch.setattr(BagWriter, "write", write)
    argv = ["replay", str(bag), "-o", str(out), "--topics", "/imu/data", "--record", "/imu/data", "--rate", "2"]
    t0 = time.monotonic()
    assert cli.main([*argv, "--wait", "10", "--linger", "0.5", "--domain-id", str(free_domain_id())]) == 2
    took = time.monotonic() - t0
    captured = capsys.readouterr()
    assert f"replay: replayed {bag}" not in captured.err and "Traceback" not in captured.err, captured
    err = captured.err
    assert f"{out}: recording stopped, writing a /imu/data message failed after 20 (" in err, err
    assert "No space left on device" in err and f"{out} was finished with the 20 message(s)" in err, err
    played = int(re.search(rf"the playback of {bag} stopped after (\d+) of its messages", err).group(1))
    assert 20 <= played < 100, err  # stopped at once, not after the whole bag
    assert took < 10.0, took
    with BagReader(out) as reader:  # what was recorded before the failure is kept, finished
        assert reader.message_count == 20 and not reader.salvaged


@pytest.mark.parametrize(
    "option, message",
    [
        (["--wait", "nan"], "--wait must be a finite number of seconds >= 0, got nan"),
        (["--linger", "-1"], "--linger must be a finite number of seconds >= 0, got -1.0"),
        (["--max-gap", "0"], "--max-gap must be a number of seconds > 0 (inf: no limit), got 0.0"),
        (["--max-gap", "nan"], "--max-gap must be a number of seconds > 0 (inf: no limit), got nan"),
        (["--topics", "/nope", "camera/image_raw"], "--topics /nope: in none of the bags; they hold /camera/image_raw"),
    ],
)
def test_replay_refuses_bad_options_before_playing(tmp_path, capsys, option, message):
    """Before: --wait nan waited forever (leaving an MCAP file without metadata.yaml), --linger -1 failed only
    after the whole bag had been played, and --topics naming no topic of the bag replayed 0 messages and blamed
    the policy node ("is the policy node running?")."""
    bag = _small_bag(tmp_path / "bag")
    out = tmp_path / "replayed"
    assert cli.main(["replay", str(bag), "-o", str(out), *option]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bad//topic"], "topics: 'bad//topic' is not a valid topic name (topic name must not contain repeated '/')"),
        (
            ["/x", "--duration", "-1"],
            "--duration: must be a finite number of seconds in [0, 86400] (0: until Ctrl-C), got -1.0",
        ),
        (
            ["/x", "--duration", "nan"],
            "--duration: must be a finite number of seconds in [0, 86400] (0: until Ctrl-C), got nan",
        ),
        (["/x", "--repeat-latched"], "--repeat-latched: only for a split bag (--max-bag-size or --max-bag-duration)"),
    ],
)
def test_record_refuses_a_bad_topic_name_or_duration_in_one_line(tmp_path, capsys, monkeypatch, argv, message):
    """Before: an invalid topic name was an RCLError traceback from rclpy's resolve_topic_name; a negative or
    NaN --duration recorded until Ctrl-C without a word. Then the duration and --repeat-latched without a split were
    refused in the node parameters' words (duration_s, repeat_latched, max_bag_size), not the options the user gave."""
    from liquid_control.ros.testing import free_domain_id

    monkeypatch.setenv("ROS_DOMAIN_ID", str(free_domain_id()))
    out = tmp_path / "bag"
    assert cli.main(["record", "-o", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_record_expert_refuses_taken_seeds_before_recording_and_drops_an_interrupted_episode(
    tmp_path, capsys, monkeypatch
):
    """Before: with episode_101 already in -o, `--seed 100 --episodes 2` recorded episode_100 and then failed;
    Ctrl-C printed a KeyboardInterrupt traceback and left the interrupted episode as a truncated bag beside the
    complete ones (and `train --bag 'out/*'` then stopped on it)."""
    from liquid_control.bags import expert

    out = tmp_path / "expert"
    (out / "episode_101").mkdir(parents=True)
    argv = ["record", "--expert", "-o", str(out), "--time-limit", "0.3", "--no-progress"]
    assert cli.main([*argv, "--seed", "100", "--episodes", "2"]) == 2
    assert "already holds episode_101" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["episode_101"]

    real = expert.record_expert_episode

    def interrupted_at_the_second(world, seed, path, *args):
        if seed == 201:
            with expert.BagWriter(path) as bag:  # a bag being written when Ctrl-C comes
                bag.add_topic("/cmd_vel", "geometry_msgs/msg/Twist")
                raise KeyboardInterrupt
        return real(world, seed, path, *args)

    monkeypatch.setattr(expert, "record_expert_episode", interrupted_at_the_second)
    assert cli.main([*argv, "--seed", "200", "--episodes", "3"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["episode_101", "episode_200"]
    with BagReader(out / "episode_200") as reader:
        assert not reader.salvaged and reader.message_count > 0


def test_record_expert_on_a_full_disk_names_the_bag_keeps_the_finished_ones_and_says_how_to_go_on(
    tmp_path, capsys, monkeypatch
):
    """Before: 'error: <bag>: cannot finish the bag: [Errno 27] File too large', not saying what was kept nor
    how to record the rest (the seeds of bags already there are refused). The full disk here: `ulimit -f` (EFBIG)
    during the second episode; a chunk write failing mid-episode: test_bag_io_robustness."""
    import resource

    from liquid_control.bags import expert

    out = tmp_path / "expert"
    real, (soft, hard) = expert.record_expert_episode, resource.getrlimit(resource.RLIMIT_FSIZE)

    def full_at_the_second(world, seed, path, *args):
        if seed == 301:  # its bag cannot grow past 2000 bytes: a chunk write fails as it would on a full disk
            resource.setrlimit(resource.RLIMIT_FSIZE, (2000, hard))
        try:
            return real(world, seed, path, *args)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))

    monkeypatch.setattr(expert, "record_expert_episode", full_at_the_second)
    argv = ["record", "--expert", "-o", str(out), "--time-limit", "1", "--no-progress", "--render-size", "64"]
    assert cli.main([*argv, "--seed", "300", "--episodes", "3"]) == 2
    said = capsys.readouterr().err.splitlines()  # a line per recorded episode (in a log), then the error
    assert said[0].startswith("episode 1/3: episode_300, "), said
    err = "\n".join(said[1:])
    assert err.startswith(f"liquid-control record: error: {out / 'episode_301'}: cannot ") and "File too large" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert (
        f"episode_301 was discarded and {out} keeps the 1 recorded before it; record the rest with --seed 301 "
        f"--episodes 2 -o {out} and the other options as before"  # --shift, --policy, --noise-std, ...: the same
    ) in err
    assert sorted(p.name for p in out.iterdir()) == ["episode_300"]
    with BagReader(out / "episode_300") as reader:
        assert not reader.salvaged and reader.message_count > 0


def test_record_expert_on_a_completely_full_disk_leaves_no_empty_folder_it_made(tmp_path, capsys):
    """Before: the first bag failing (`ulimit -f 0` here: every write fails) left the -o folder record --expert
    had made, and its parents, empty. Now they are removed while empty; a folder that was there stays."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    (tmp_path / "there").mkdir()
    for out in (tmp_path / "new" / "expert", tmp_path / "there"):
        argv = ["record", "--expert", "-o", str(out), "--time-limit", "1", "--no-progress", "--seed", "7"]
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))
        try:
            code = cli.main(argv)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        err = capsys.readouterr().err
        assert code == 2 and f"{out / 'episode_7'}: cannot finish the bag: File too large;" in err, err
        assert [p.name for p in tmp_path.iterdir()] == ["there"]  # new/expert made and left empty: removed
    assert list((tmp_path / "there").iterdir()) == []  # there before: kept


def test_record_expert_names_an_unfinished_bag_among_the_taken_and_says_how_to_record_the_rest(tmp_path, capsys):
    """Before: after a SIGKILL (a 0-byte episode_102, no metadata.yaml) a rerun was refused 'already holds
    episode_100, episode_101, episode_102; a bag is never overwritten', not saying that episode_102 is the
    killed recording's, to delete, nor how to go on."""
    out = tmp_path / "expert"
    for seed in (100, 101, 102):
        (out / f"episode_{seed}").mkdir(parents=True)
        (out / f"episode_{seed}" / f"episode_{seed}.mcap").write_bytes(b"")
        if seed != 102:
            (out / f"episode_{seed}" / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
    argv = ["record", "--expert", "-o", str(out), "--seed", "100", "--episodes", "5", "--no-progress"]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        f"liquid-control record: error: {out}: already holds episode_100, episode_101, episode_102; a bag is never "
        "overwritten, choose other seeds or -o; episode_102 is unfinished (no metadata.yaml: the recording was "
        f"killed): delete it to record it again; record the rest with --seed 102 --episodes 3 -o {out} and the other "
        "options as before"
    )


def test_record_expert_stopped_by_sigterm_leaves_only_complete_bags(tmp_path):
    """Before: SIGTERM killed the process mid-episode (an empty .mcap file left); SIGINT, raised inside MuJoCo's
    ctypes render call, became a ctypes.ArgumentError traceback with a truncated bag left."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "expert"
    proc = subprocess.Popen(
        [sys.executable, "-m", "liquid_control.cli", "record", "--expert", "-o", str(out), "--episodes", "50"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (out / "episode_100" / "metadata.yaml").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # into the next episode
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
        err = proc.stderr.read()
        assert "interrupted" in err and "Traceback" not in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
    bags = sorted(out.iterdir())
    assert bags
    # before: it said what was kept, not which --seed continues (a rerun as it was refuses the recorded seeds)
    following = 100 + len(bags)
    assert [bag.name for bag in bags] == [f"episode_{seed}" for seed in range(100, following)]
    rest = f"record the rest with --seed {following} --episodes {150 - following} -o {out} and the other options"
    assert f"{out} holds {len(bags)} complete bag(s); {rest}" in err, err
    for bag in bags:
        with BagReader(bag) as reader:  # refuses a truncated or empty one
            assert not reader.salvaged and reader.message_count > 0


def test_node_parameter_files_are_read_as_ros_gives_them_to_policy_node(tmp_path):
    """Before: a file without a policy_node or /** section gave its first section's parameters (train --bag
    --node-params config/sim.yaml trained on sim_node's), and /** was ignored beside a policy_node section."""
    params = tmp_path / "params.yaml"
    params.write_text("sim_node:\n  ros__parameters:\n    camera_topic: /sim/camera\n")
    with pytest.raises(ValueError, match=r"no section for /policy_node .* it has sim_node"):
        load_node_parameters(params)
    with pytest.raises(ValueError, match="no section for /policy_node"):
        load_node_parameters(paths.config_dir() / "sim.yaml")
    params.write_text(
        "/**:\n  ros__parameters:\n    camera_topic: /wild/camera\n    imu_topic: /wild/imu\n"
        "policy_node:\n  ros__parameters:\n    camera_topic: /own/camera\n"
    )
    values = load_node_parameters(params)
    assert values["camera_topic"] == "/own/camera" and values["imu_topic"] == "/wild/imu"
    # ROS 2's other spellings: a wildcard namespace, and a robot's namespaced file (a review found both refused)
    for section in ("/**/policy_node", "/*"):
        params.write_text(
            "/**:\n  ros__parameters:\n    imu_topic: /wild/imu\n"
            f"{section}:\n  ros__parameters:\n    camera_topic: /own/camera\n"
        )
        values = load_node_parameters(params)
        assert values["camera_topic"] == "/own/camera" and values["imu_topic"] == "/wild/imu", section


def test_node_parameter_numbers_are_read_as_ros_reads_them(tmp_path):
    """ROS reads `max_gap_s: 2e0` in a parameter file as 2.0 (YAML 1.2); training read the same file with PyYAML's
    YAML 1.1 rules and refused it: "policy_node.ros__parameters.max_gap_s: expected a number, got '2e0'"."""
    params = tmp_path / "params.yaml"
    params.write_text("policy_node:\n  ros__parameters:\n    max_gap_s: 2e0\n    max_future_stamp_s: 5E-1\n")
    values = load_node_parameters(params)
    assert values["max_gap_s"] == 2.0 and values["max_future_stamp_s"] == 0.5


def test_the_ros_tools_read_parameter_files_without_torch():
    """A robot that runs exported policies has no torch: the parameter-file readers must not import it."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import liquid_control.ros.graph, liquid_control.bags.stream, liquid_control.yaml_numbers\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_a_bag_whose_every_command_is_rejected_says_so(tmp_path, capsys):
    """Before: a bag whose /cmd_vel held only NaN commands was refused with "no command on /cmd_vel (set
    --command-topic)", though the topic was right and 5 commands were there, all rejected."""
    import numpy as np

    from liquid_control.bags import BagWriter
    from liquid_control.bags.messages import image_message, twist_message

    bag = tmp_path / "bag"
    with BagWriter(bag) as writer:
        for k in range(5):
            t = 1.0 + 0.07 * k
            writer.write("/camera/image_raw", int(t * 1e9), image_message(np.zeros((64, 64, 3), np.uint8), t))
            writer.write("/cmd_vel", int(t * 1e9) + 1000, twist_message(float("nan"), 0.1))
    argv = ["train", "--config", ROVER, "--bag", str(bag), "--out", str(tmp_path / "run"), "--no-progress"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "all 5 commands on /cmd_vel were rejected" in err and "set --command-topic" not in err


def test_recovering_a_bag_with_no_complete_message_writes_nothing(tmp_path, capsys, monkeypatch):
    """Before: `record --recover` of a recording cut before its first message wrote an empty bag, exit 0."""
    bag = _small_bag(tmp_path / "bag")
    mcap = next(bag.glob("*.mcap"))
    with open(mcap, "r+b") as handle:
        handle.truncate(40)  # the file header and little else: what a recorder killed at once leaves
    out = tmp_path / "recovered"
    assert cli.main(["record", "--recover", str(bag), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no complete message to recover" in err and str(bag) in err and "Traceback" not in err
    assert not out.exists()
    # on a full disk, the cause named (the recorder removes a bag of nothing it cut itself; another's stays)
    from liquid_control.bags import io

    full = io.os.statvfs_result((4096, 4096, 1000, 0, 0, 1000, 0, 0, 0, 255))
    monkeypatch.setattr(io.os, "statvfs", lambda path: full)
    assert cli.main(["record", "--recover", str(bag), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "the recording ended, or a write to it failed" in err and "stopped before its first" not in err, err
    assert "its disk has 0 bytes free now: a write failing there for want of room" in err, err


def test_sections_match_the_policy_node_by_ros_2s_rules(tmp_path):
    """A review: namespaced sections were taken with topics resolved from /, and several namespaces fell back
    silently to the defaults; ROS's /* is exactly one token."""
    from liquid_control.conventions.params import section_applies

    assert section_applies("/**", "/policy_node") and section_applies("policy_node", "/policy_node")
    assert section_applies("/*", "/policy_node") and not section_applies("/*/policy_node", "/policy_node")
    assert section_applies("/*/policy_node", "/robot1/policy_node") and not section_applies("/*", "/r/policy_node")
    assert not section_applies("/policy_*", "/policy_node")  # ROS refuses partial wildcards in node names
    params = tmp_path / "params.yaml"
    params.write_text(
        "/**:\n  ros__parameters:\n    imu_topic: /wild/imu\n"
        "/robot1/policy_node:\n  ros__parameters:\n    action_scale: [0.5, 0.5]\n"
        "/robot2/policy_node:\n  ros__parameters:\n    action_scale: [0.9, 0.9]\n"
    )
    with pytest.raises(ValueError, match=r"/robot1/policy_node, /robot2/policy_node: parameters for a namespaced"):
        load_node_parameters(params)
    params.write_text("robot1:\n  policy_node:\n    ros__parameters:\n      imu_topic: /x\n")  # ROS's nested form
    with pytest.raises(ValueError, match="robot1: a nested namespace; training reads a top-level policy_node"):
        load_node_parameters(params)


def test_a_bag_whose_name_holds_a_glob_character_is_that_bag(tmp_path):
    """Before: `train --bag "bags/day [1]"` and `eval --bag ...` read the name as a glob (`[1]` matching the one
    character '1'), so an existing bag was refused as "matches no bag"."""
    from liquid_control.bags.io import expand_bags

    for name in ("day [1]", "take*2", "what?"):
        bag = tmp_path / name
        bag.mkdir()
        assert expand_bags([str(bag)], "--bag") == [str(bag)]
    assert expand_bags([str(tmp_path / "take*")], "--bag") == [str(tmp_path / "take*2")]  # still a glob


def test_the_commands_suggested_quote_a_path_with_a_space():
    """A probe of a hostile environment: `record the rest with ... -o b x` pasted into a shell names two paths; the
    suggested `liquid-control export` commands alike. Paths are shell-quoted where a command is suggested."""
    from pathlib import Path

    from liquid_control.bags.expert import the_rest

    assert "-o 'b x' and the other options" in the_rest(Path("b x"), 101, 2)
    assert "-o runs/b and the other options" in the_rest(Path("runs/b"), 101, 2)  # nothing to quote: as it was
