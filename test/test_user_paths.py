"""Paths as users have them: folders with spaces and non-ASCII characters (``/home/jörg/runs/Fahrt 1``), ``~`` where
no shell expanded it, names a glob would misread. Each command's outputs link and record them so that they still
lead to the file."""

import re
from urllib.parse import unquote

import numpy as np
import pytest

from liquid_control import cli
from liquid_control.bags import BagWriter
from liquid_control.bags.messages import image_message, twist_message
from liquid_control.paths import config_dir, policies_dir

SHIPPED = policies_dir() / "cfc_ncp_rover.pt"
TINY_CONFIG = {  # a policy of _drive's camera frames that trains on them in a second
    "name": "tiny",
    "world": "LiquidRover-v0",
    "observation": {"image": {"height": 64, "width": 64}, "vectors": {}, "update_on": "camera"},
    "encoder": {"camera": {"channels": [2], "kernel_sizes": [5], "strides": [4], "features": 4}},
    "core": {"type": "cfc", "units": 4},
    "action": {"size": 2, "low": [-1, -1], "high": [1, 1], "kind": "twist"},
    "training": {"epochs_first": 1, "batch_size": 1, "sequence_length": 4},
}
# a Markdown link or image: [text](target), the target as CommonMark reads it (up to a space or the closing parenthesis)
MARKDOWN_LINK = re.compile(r"\]\(([^)\s]*)([^)]*)\)")


def _drive(path, frames: int = 10):
    """``frames`` 64x64 camera frames at 20 Hz on /camera/image_raw (the shipped rover policy's input), a /cmd_vel
    after each."""
    with BagWriter(path) as bag:
        for k in range(frames):
            t = 100.0 + 0.05 * k
            bag.write("/camera/image_raw", int(t * 1e9), image_message(np.full((64, 64, 3), k, np.uint8), t))
            bag.write("/cmd_vel", int(t * 1e9) + 1_000_000, twist_message(0.5, 0.1))
    return path


def test_the_offline_reports_plot_links_lead_to_the_plots_of_bags_named_with_spaces(tmp_path, capsys):
    """Before: a bag named 'Fahrt 1' was linked as ![](plots/robot__Fahrt 1.png): the link ends at the space, so
    the report showed the text and no plot."""
    root = tmp_path / "jörg" / "Fahrt 1"
    bags = [_drive(root / "Fahrt 1"), _drive(root / "Straße (2)")]
    out = root / "Bericht ö"
    argv = ["eval", "--policy", f"robot={SHIPPED}", "--out", str(out), "--no-progress"]
    assert cli.main([*argv, *(a for bag in bags for a in ("--bag", str(bag)))]) == 0
    capsys.readouterr()
    report = (out / "report.md").read_text(encoding="utf-8")
    links = MARKDOWN_LINK.findall(report)
    assert len(links) == 2, report
    for target, after_a_space in links:
        assert not after_a_space, f"link target {target + after_a_space!r} holds a space: {report}"
        assert (out / unquote(target)).is_file(), (target, sorted(p.name for p in (out / "plots").iterdir()))
    assert sorted(unquote(t) for t, _ in links) == ["plots/robot__Fahrt 1.png", "plots/robot__Straße (2).png"]


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A home folder (``~``) of its own, and a working directory elsewhere in which no folder named '~' may appear."""
    home = tmp_path / "jörg"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    yield home
    assert not (elsewhere / "~").exists(), "a folder named '~' was made in the working directory"


# every path option of each command, with a ~ no shell expands: after '--opt=', or quoted ("~/runs/Fahrt 1")
PATH_OPTIONS = {
    "train": ["--config=~/c.yaml", "--out=~/run", "--init-from=~/p.pt", "--node-params=~/robot.yaml"],
    "eval": ["--out=~/Bericht", "--node-params=~/robot.yaml"],
    "sim": ["--policy=~/p.pt", "--record-bag=~/bags", "--log-dir=~/logs"],
    "main": ["--policy=~/p.pt", "--record-bag=~/bags", "--log-dir=~/logs"],
    "export": ["~/runs/Fahrt 1/policy.pt", "--output=~/p.onnx"],
    "view": ["--snapshot=~/s.png"],
    "record": ["--output=~/bag", "--node-params=~/robot.yaml", "--info=~/bag", "--recover=~/b", "--policy=~/p.pt"],
    "replay": ["~/bags/Fahrt 1", "--output=~/out"],
}


@pytest.mark.parametrize("command", sorted(PATH_OPTIONS))
def test_a_path_option_expands_a_tilde_that_no_shell_expanded(home, command):
    """Before: `--out=~/runs/x` (and a quoted "~/runs/Fahrt 1") reached the commands as written: train and eval
    made a folder named '~' in the working directory, and every command said of an existing file that it is not
    there."""
    _, parser = cli.command_parser(command)
    values = []
    for value in vars(parser.parse_args(PATH_OPTIONS[command])).values():
        values += [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str)]
    assert [v for v in values if v.startswith("~")] == []
    expanded = [v for v in values if v.startswith(f"{home}/")]
    assert len(expanded) == len(PATH_OPTIONS[command]), values


def test_eval_on_bags_and_its_report_where_a_tilde_names_them(home, capsys):
    """The offline evaluation of a quoted "~/bags/Fahrt 1" into `--out=~/Bericht`: the bag is found and the report
    is written in the home folder (before: 'no such bag', and with an existing bag a '~' folder here)."""
    _drive(home / "bags" / "Fahrt 1")
    argv = ["eval", "--bag", "~/bags/Fahrt*", "--policy", f"robot={SHIPPED}", "--out=~/Bericht", "--no-progress"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert f"offline report -> {home / 'Bericht' / 'report.md'}" in capsys.readouterr().out
    assert (home / "Bericht" / "plots" / "robot__Fahrt 1.png").is_file()


def test_a_data_section_names_its_bags_and_node_parameters_with_a_tilde(home):
    """A YAML file's `data: bags: [~/bags/*]` and `node_params: ~/robot.yaml` (also `--set data.node_params=...`):
    no shell expands them. Before: 'data.bags: '~/bags/*' matches no bag'."""
    from liquid_control.training.bag_data import validate_data

    bag = _drive(home / "bags" / "Fahrt 1")
    data = validate_data({"bags": ["~/bags/*"], "node_params": "~/robot.yaml"})
    assert data["bags"] == [str(bag.resolve())]
    assert data["node_params"] == str((home / "robot.yaml").resolve())


def test_the_model_card_expands_a_tilde_in_its_paths(home, capsys):
    from liquid_control.training import model_card

    (home / "run").mkdir()
    (home / "run" / "policy.pt").write_bytes(b"")
    with pytest.raises(SystemExit) as exited:
        model_card.main(["--run", "~/run", "--name", "x", "--append=~/baselines.md", "--out=~/cards"])
    assert exited.value.code == 2
    assert f"--append {home / 'baselines.md'}: no such file" in capsys.readouterr().err  # (--run found)


def test_the_nodes_folder_parameters_expand_a_tilde_as_no_launch_argument_did(home):
    """`record.launch.py output:=~/bags/day1`, sim_node's `record_bag:=~/bags` and a launch file's
    `params_file:=~/robot.yaml`: no shell expands them. Before: the recorder made ./~/bags/day1, sim_node recorded
    into ./~/bags (and did not see the episodes already there), and the parameter file was 'not found'."""
    import rclpy
    from rclpy.parameter import Parameter

    from liquid_control.ros.graph import policy_graph, sim_graph
    from liquid_control.ros.recorder_node import BagRecorderNode, record_graph
    from liquid_control.ros.sim_node import SimNode
    from liquid_control.ros.testing import free_domain_id

    robot = home / "robot.yaml"
    robot.write_bytes((config_dir() / "rover_policy.yaml").read_bytes())
    (node,) = policy_graph(params_file="~/robot.yaml")
    assert node.parameter_files == (str(robot),)
    assert sim_graph(policy_params_file="~/robot.yaml")[1].parameter_files == (str(robot),)
    (node,) = record_graph(output="~/bags/day1", params_file="~/robot.yaml")
    (home / "bags" / "episode_4").mkdir(parents=True)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=free_domain_id())
    try:
        params = {"world": "LiquidBalance-v0", "wait_for_subscribers_s": 0.0, "seed": 4, "record_bag": "~/bags"}
        with pytest.raises(ValueError, match=f"record_bag: {home / 'bags'} already holds episode_4"):
            SimNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        overrides = {"output": node.parameters["output"], "topics": ["/chatter"]}
        recorder = BagRecorderNode(context=context, parameter_overrides=overrides)
        assert recorder.output == home / "bags" / "day1"
        assert recorder.close() == home / "bags" / "day1" and (home / "bags" / "day1" / "metadata.yaml").is_file()
    finally:
        context.try_shutdown()


def test_eval_on_bags_takes_its_policy_as_the_simulated_evaluation_does(home, capsys):
    """README: `eval --policy` takes globs. Before, with --bag it took a path as written only: a quoted
    "robot=~/runs/Fahrt 1/policy.pt", a glob (`runs/Fahrt*/policy.pt`) and the docs' shipped name
    `policies/cfc_ncp_rover.pt` outside the checkout were each 'not a policy file'."""
    import shutil

    bag = _drive(home / "bags" / "Fahrt 1")
    (home / "runs" / "Fahrt 1").mkdir(parents=True)
    shutil.copy(SHIPPED, home / "runs" / "Fahrt 1" / "policy.pt")
    policies = ["robot=~/runs/Fahrt 1/policy.pt", f"glob={home}/runs/Fahrt*/policy.pt", "policies/cfc_ncp_rover.pt"]
    argv = ["eval", "--bag", str(bag), "--out", str(home / "offline"), "--no-progress"]
    assert cli.main([*argv, *(a for p in policies for a in ("--policy", p))]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    lines = {line.split(":")[0]: line.split(":")[1] for line in out.splitlines() if "labelled updates" in line}
    assert sorted(lines) == ["cfc_ncp_rover", "glob", "robot"], out
    assert len(set(lines.values())) == 1, out  # the same file three ways: the same figures
    assert cli.main([*argv, "--policy", "expert"]) == 2
    assert "--policy expert: the privileged expert drives simulated episodes only" in capsys.readouterr().err
    named_by_folder = ["eval", "--bag", str(bag), "--out", str(home / "offline 2"), "--no-progress"]
    assert cli.main([*named_by_folder, "--policy", f"{home}/runs/Fahrt*/policy.pt"]) == 0, capsys.readouterr().err
    assert "Fahrt 1:" + lines["robot"] in capsys.readouterr().out  # named by its folder, a space and all (5f910b4f)


def test_a_glob_inside_a_folder_whose_name_holds_a_glob_character_finds_its_bags(tmp_path, monkeypatch):
    """`--bag "runs/Fahrt [1]/*"` (data.bags alike): a folder named with [ ] is itself, as a shell globs
    "runs/Fahrt [1]"/*. Before: '[1]' was read as a character class, so the glob matched no bag."""
    from liquid_control.training.bag_data import validate_data

    folder = tmp_path / "Fahrt [1]"
    bags = [_drive(folder / name, frames=2) for name in ("a", "b")]
    _drive(tmp_path / "Fahrt 1" / "c", frames=2)  # what '[1]' as a character class names: not these bags
    assert validate_data({"bags": [str(folder / "*")]})["bags"] == [str(b) for b in bags]
    data = validate_data({"bags": [str(folder / "[a]")], "validation": [str(folder / "b*")]})
    assert data["bags"] == [str(bags[0])] and data["validation"] == [str(bags[1])]
    monkeypatch.chdir(tmp_path)
    assert validate_data({"bags": ["Fahrt [1]/a"]})["bags"] == [str(bags[0])]


def test_the_yaml_files_written_keep_a_non_ascii_path_as_written(tmp_path, capsys):
    """A model card's front matter, a bag run's data.yaml and a split bag's metadata.yaml (rosbags and rosbag2 write
    the unsplit one in UTF-8 as written). Before: '/home/j\\xF6rg/runs/Fahrt 1' in the card, across a line break
    where it was long, and in data.yaml; "Fahrt \\xF6_0.mcap" in metadata.yaml."""
    import yaml

    from liquid_control.bags import BagReader
    from liquid_control.training.model_card import card_text, split_card

    root = tmp_path / "jörg" / "Fahrt 1"
    command = f"liquid-control train --config cfg.yaml --bag '{root}/bags/*' --out '{root}/runs/Straße'"
    card = tmp_path / "card.md"
    card.write_text(card_text({"training": {"command": command}}, "# x\n"), encoding="utf-8")
    front = card.read_text(encoding="utf-8").split("---")[1]  # (long lines wrapped at 100 characters)
    assert "jörg" in front and "Straße" in front and "\\x" not in front, front
    assert split_card(card)[0]["training"]["command"] == command

    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(TINY_CONFIG))
    bag = _drive(root / "bags" / "Fahrt ö")
    run = root / "runs" / "Straße"
    argv = ["train", "--config", str(tmp_path / "cfg.yaml"), "--bag", str(bag), "--out", str(run), "--no-progress"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert f"- {bag}\n" in (run / "data.yaml").read_text(encoding="utf-8")

    split = root / "bags" / "Fahrt ö 2"
    with BagWriter(split, max_bag_duration=1.0) as writer:
        for k in range(30):
            writer.write("/cmd_vel", 100_000_000 * k, twist_message(0.5, 0.1))
    metadata = (split / "metadata.yaml").read_text(encoding="utf-8")
    assert "- Fahrt ö 2_0.mcap\n" in metadata and "path: Fahrt ö 2_2.mcap\n" in metadata, metadata
    with BagReader(split) as reader:
        assert reader.topics["/cmd_vel"].count == 30


def test_a_run_started_from_a_policy_named_relative_to_the_working_directory_records_where_it_is(
    tmp_path, capsys, monkeypatch
):
    """Before: `train --init-from first.pt` recorded started_from {path: 'first.pt'} in policy.pt and
    started_from.json: relative to a working directory the run does not record."""
    import yaml

    from liquid_control.policy import Policy, load_policy, save_policy

    runs = tmp_path / "jörg" / "runs"
    runs.mkdir(parents=True)
    save_policy(runs / "first.pt", Policy.from_config(TINY_CONFIG), {})
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(TINY_CONFIG))
    bag = _drive(tmp_path / "bags" / "Fahrt 1")
    argv = ["train", "--config", str(tmp_path / "cfg.yaml"), "--bag", str(bag), "--out", "Fahrt 2", "--no-progress"]
    monkeypatch.chdir(runs)
    assert cli.main([*argv, "--init-from", "first.pt"]) == 0, capsys.readouterr().err
    assert load_policy(runs / "Fahrt 2" / "policy.pt").metadata["started_from"]["path"] == str(runs / "first.pt")


def test_a_dollar_in_a_bag_or_config_name_is_drawn_as_written(tmp_path, capsys):
    """matplotlib reads $...$ in a text as a formula: before, eval --bag on a bag named 'Fahrt $\\x$' evaluated it,
    then failed drawing its plot ('ParseFatalException: Unknown symbol: \\x', naming no bag; no report), and a
    config named so failed training at its first curves.png."""
    from liquid_control.training.curves import plot_curves

    bag = _drive(tmp_path / "Fahrt $\\x$")
    argv = ["eval", "--bag", str(bag), "--policy", f"r={SHIPPED}", "--out", str(tmp_path / "o"), "--no-progress"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert (tmp_path / "o" / "plots" / "r__Fahrt $\\x$.png").is_file()
    rows = [{"kind": "train", "epoch": "1", "loss": "0.5"}]
    assert plot_curves(rows, tmp_path / "curves.png", "tiny $\\x$, seed 0").is_file()


@pytest.mark.parametrize(
    "command, said",
    [
        (["train", "--config", "policies/configs/cfc_ncp_rover.yaml", "--out", "{long}"], "--out {long}: the name "),
        (["eval", "--policy", str(SHIPPED), "--episodes", "1", "--out", "{long}"], "--out {long}: the name "),
        (["export", str(SHIPPED), "-o", "{long}.onnx"], "--output {long}.onnx: the name "),
        (["record", "--expert", "-o", "{long}", "--episodes", "1"], "-o {long}: "),
        (
            ["train", "--config", "policies/configs/cfc_ncp_rover.yaml", "--bag", "{long}", "--out", "x"],
            ": no such bag",
        ),
        (["eval", "--policy", "x={long}.pt", "--episodes", "1"], "does not exist"),
        (["record", "--info", "{long}"], "--info {long}"),
    ],
)
def test_a_name_longer_than_the_file_system_takes_is_refused_in_one_line(tmp_path, monkeypatch, capsys, command, said):
    """A probe of a hostile environment: 90 CJK characters make a name of 270 bytes, past ext4's 255; pathlib's
    exists() raises for it (Python 3.11), so train, eval, export and record ended in an OSError traceback, or an
    input was refused as 'cannot write'. An output is refused saying why, an input is one that does not exist."""
    monkeypatch.chdir(tmp_path)  # the shipped config by the docs' name, from any folder
    long = str(tmp_path / ("日本語" * 30))
    argv = [part.replace("{long}", long) for part in command]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and said.replace("{long}", long) in err, err
    if "the name " in err:
        assert "is 270 bytes, longer than the 255 a file name may have here" in err or "is 275 bytes" in err, err
