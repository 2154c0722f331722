"""Bad input to `train --bag` / `eval --bag`: a parameter file that is not one, a parameter of the wrong type,
a folder that is not a bag. One line naming the file (and the parameter), exit 2, nothing left in --out."""

import pytest

from liquid_control import cli
from liquid_control.bags.stream import load_node_parameters
from liquid_control.paths import policies_dir

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
