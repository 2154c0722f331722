"""Launch files: standard launch_ros form built from liquid_control.ros.graph, referencing real executables,
modules, parameter files and declared parameters (launch/launch_ros are not installable here: stubbed)."""

import argparse
import ast
import importlib.util
import re
import runpy
import sys
import types
from pathlib import Path

import pytest

from liquid_control import paths
from liquid_control.conventions.params import POLICY_NODE_PARAMETERS
from liquid_control.ros import entry, graph
from liquid_control.ros.sim_node import SIM_NODE_PARAMETERS

ROOT = paths.share_dir()
DECLARED = {
    "policy_node": set(POLICY_NODE_PARAMETERS) | {"use_sim_time"},
    "sim_node": set(SIM_NODE_PARAMETERS) | {"use_sim_time"},
}


class Recorder:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


@pytest.fixture
def launch_stubs(monkeypatch):
    """Minimal launch / launch_ros modules: actions record their arguments; LaunchConfiguration.perform reads
    the values given to ``evaluate``."""

    class LaunchConfiguration:
        def __init__(self, name):
            self.name = name

        def perform(self, context):
            return context[self.name]

    mods = {
        "launch": types.ModuleType("launch"),
        "launch.actions": types.ModuleType("launch.actions"),
        "launch.substitutions": types.ModuleType("launch.substitutions"),
        "launch_ros": types.ModuleType("launch_ros"),
        "launch_ros.actions": types.ModuleType("launch_ros.actions"),
    }
    mods["launch"].LaunchDescription = lambda entities: list(entities)
    mods["launch.actions"].DeclareLaunchArgument = type("DeclareLaunchArgument", (Recorder,), {})
    mods["launch.actions"].OpaqueFunction = type("OpaqueFunction", (Recorder,), {})
    mods["launch.substitutions"].LaunchConfiguration = LaunchConfiguration
    mods["launch_ros.actions"].Node = type("Node", (Recorder,), {})
    mods["launch_ros.actions"].LifecycleNode = type("LifecycleNode", (Recorder,), {})
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)

    def evaluate(path, **overrides):
        description = runpy.run_path(str(path))["generate_launch_description"]()
        declared = {
            a.kwargs["name"] if "name" in a.kwargs else a.args[0]: a.kwargs["default_value"]
            for a in description
            if type(a).__name__ == "DeclareLaunchArgument"
        }
        context = dict(declared, **overrides)
        opaque = [a for a in description if type(a).__name__ == "OpaqueFunction"]
        nodes = [n for op in opaque for n in op.kwargs["function"](context)]
        return declared, nodes

    return evaluate


def console_scripts():
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == "console_scripts":
                    return {s.split("=")[0].strip(): s.split("=")[1].strip() for s in ast.literal_eval(value)}
    raise AssertionError("no console_scripts in setup.py")


def check_node(node):
    scripts = console_scripts()
    kw = node.kwargs
    assert kw["package"] == "liquid_control"
    assert kw["executable"] in scripts, f"{kw['executable']} is not an installed executable"
    module, function = scripts[kw["executable"]].split(":")
    assert callable(getattr(importlib.import_module(module), function))  # the console script resolves
    files, overrides = kw["parameters"][:-1], kw["parameters"][-1]
    for f in files:
        assert Path(f).is_file() and Path(f).parent.name == "config"
        assert Path(f).name in [p.name for p in (ROOT / "config").glob("*.yaml")]  # installed by setup.py
        params = graph._file_parameters(Path(f), kw["name"])  # the sections ROS gives that node
        assert set(params) <= DECLARED[kw["name"]], set(params) - DECLARED[kw["name"]]
    assert set(overrides) <= DECLARED[kw["name"]]
    return overrides


def test_sim_launch_builds_the_graph_of_liquid_control_sim(launch_stubs):
    declared, nodes = launch_stubs(ROOT / "launch" / "sim.launch.py")
    assert {"policy", "world", "shift", "use_sim_time", "real_time_factor", "control_rate_hz"} <= set(declared)
    assert [n.kwargs["name"] for n in nodes] == ["sim_node", "policy_node"]
    assert type(nodes[1]).__name__ == "LifecycleNode"
    sim, policy = (check_node(n) for n in nodes)
    assert policy["policy"] == "cfc_ncp_rover.pt" and policy["autostart"] is True and "record_bag" not in sim
    assert sim["world"] == "LiquidRover-v0" and sim["command_topic"] == "cmd_vel"
    # the same description as the processes `liquid-control sim` starts
    described = graph.sim_graph()
    for launched, desc in zip(nodes, described):
        argv = desc.command()
        assert argv[2:4] == ["liquid_control.ros.entry", launched.kwargs["executable"]]
        assert entry.NODE_MODULES[desc.executable] == desc.module and f"__node:={launched.kwargs['name']}" in argv
        for f in launched.kwargs["parameters"][:-1]:
            assert argv[argv.index(f) - 1] == "--params-file"
        for key, value in launched.kwargs["parameters"][-1].items():
            assert graph.parameter_argument(key, value) in argv

    _, nodes = launch_stubs(
        ROOT / "launch" / "sim.launch.py",
        world="LiquidBalance-v0",
        shift="imu_noise=0.5",
        use_sim_time="true",
        real_time_factor="2.0",
        publish_mode="fixed_rate",
        control_rate_hz="50",
        record_bag="bags/sim",
    )
    sim, policy = (check_node(n) for n in nodes)
    assert sim["record_bag"] == "bags/sim"  # documented as record_bag:=<folder> (docs/ros.md)
    assert sim["use_sim_time"] is policy["use_sim_time"] is True and sim["real_time_factor"] == 2.0
    assert sim["shift"] == "imu_noise=0.5" and sim["command_type"] == "float64_multi_array"
    assert sim["command_topic"] == "wheel_torques" and policy["policy"] == "cfc_balancer.pt"
    assert policy["publish_mode"] == "fixed_rate" and policy["control_rate_hz"] == 50.0


def test_policy_launch_runs_the_node_alone_from_a_parameter_file(launch_stubs, tmp_path):
    declared, nodes = launch_stubs(ROOT / "launch" / "policy.launch.py")
    assert {"params_file", "policy", "use_sim_time", "autostart"} <= set(declared)
    (node,) = nodes
    assert type(node).__name__ == "LifecycleNode"
    overrides = check_node(node)
    assert overrides == {}  # the file's use_sim_time and autostart hold (the node's default where it sets none)
    robot = tmp_path / "config" / "robot.yaml"
    robot.parent.mkdir()
    robot.write_text((ROOT / "config" / "balance_policy.yaml").read_text() + "    autostart: true\n")
    assert graph._file_parameters(robot, "policy_node")["autostart"] is True
    (node,) = launch_stubs(ROOT / "launch" / "policy.launch.py", params_file=str(robot), policy="/opt/p.onnx")[1]
    # a robot file's autostart: true starts the node (before: autostart:=false came after the file and won)
    assert node.kwargs["parameters"] == [str(robot), {"policy": "/opt/p.onnx"}]
    assert "autostart:=false" not in " ".join(graph.policy_graph(params_file=str(robot))[0].command())
    (node,) = launch_stubs(ROOT / "launch" / "policy.launch.py", params_file=str(robot), autostart="false")[1]
    assert node.kwargs["parameters"] == [str(robot), {"autostart": False}]  # given: it overrides the file
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        launch_stubs(ROOT / "launch" / "policy.launch.py", params_file=str(tmp_path / "missing.yaml"))


@pytest.mark.parametrize(
    "launch_file, name, value, says",
    [
        ("sim", "seed", "abc", "must be an integer"),
        ("sim", "episodes", "1.5", "must be an integer"),
        ("sim", "seed", "9" * 400, "must be an integer in a ROS parameter's 64-bit range"),  # was an OverflowError
        ("sim", "seed", str(2**63), "must be an integer in a ROS parameter's 64-bit range"),
        ("sim", "real_time_factor", "1" * 400, "must be a finite number"),
        ("sim", "real_time_factor", "fast", "must be a number"),
        ("sim", "control_rate_hz", "nan", "must be a finite number"),
        ("sim", "use_sim_time", "yes", "must be true or false"),
        ("sim", "lockstep", "ture", "must be true or false"),
        ("policy", "use_sim_time", "on", "must be true or false"),
        ("policy", "autostart", "yes", "must be true or false"),
        ("record", "duration_s", "ten", "must be a number"),
        ("record", "use_sim_time", "", "must be true or false"),
        ("takeover", "use_sim_time", "yes", "must be true or false"),
    ],
)
def test_a_launch_argument_that_is_not_its_type_is_refused_naming_it(launch_stubs, launch_file, name, value, says):
    """seed:=abc, episodes:=1.5, real_time_factor:=fast, duration_s:=ten were "invalid literal for int()" or
    "could not convert string to float" naming no argument, and use_sim_time:=yes, lockstep:=ture, autostart:=yes
    silently false; now each launch file refuses them naming the argument (a value of 400 digits cut short, not
    printed whole)."""
    from liquid_control.shown import shown

    with pytest.raises(ValueError, match=f"^{re.escape(f'{name}: {says}, got {shown(value)}')}$") as refused:
        launch_stubs(ROOT / "launch" / f"{launch_file}.launch.py", **{name: value})
    assert len(str(refused.value)) < 160


def test_launch_booleans_are_true_or_false_in_any_case_and_nothing_else(launch_stubs):
    for text, value in (("TRUE", True), ("True", True), ("1", True), ("False", False), ("0", False)):
        (node,) = launch_stubs(ROOT / "launch" / "policy.launch.py", use_sim_time=text, autostart=text)[1]
        assert node.kwargs["parameters"][-1] == {"use_sim_time": value, "autostart": value}, text
    for text in ("yes", "no", "off", "t", "2"):  # were all false
        with pytest.raises(ValueError, match="autostart: must be true or false"):
            launch_stubs(ROOT / "launch" / "policy.launch.py", autostart=text)


def test_unknown_world_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown world 'Mars-v0'"):
        graph.sim_graph(world="Mars-v0")


def test_a_missing_policy_or_a_bad_shift_is_refused_before_any_node_starts(tmp_path, monkeypatch, capsys):
    """`liquid-control sim` once started both nodes, then failed with exit 1 and named only the shipped-policy
    fallback of a mistyped path; now it is a usage error (exit 2) naming the path as given."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"policy .runs/nope.pt.: no such policy file .*runs/nope.pt, nor a"):
        graph.sim_graph(policy="runs/nope.pt")
    with pytest.raises(ValueError, match="wintr"):
        graph.sim_graph(shift="wintr")
    with pytest.raises(ValueError, match="fog"):
        graph.sim_graph(shift="fog=2")
    with pytest.raises(ValueError, match="fog changes nothing in LiquidBalance-v0, which has no camera"):
        graph.sim_graph(world="LiquidBalance-v0", shift="fog=0.5")
    graph.sim_graph(world="LiquidBalance-v0", shift="imu_noise=0.5")
    # an IMU shift for the camera-only rover policy: before, a run in distribution under the shift's name
    with pytest.raises(ValueError, match="imu_noise changes nothing policy 'cfc_ncp_rover.pt' reads, which has no imu"):
        graph.sim_graph(shift="imu_noise=0.5")
    graph.sim_graph(shift="imu_noise=0.5", record_bag=str(tmp_path / "bags"))  # recorded: the bags hold the IMU
    assert "imu_noise changes nothing policy 'cfc_ncp_rover.pt' reads" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match=r"policy '/nonexistent/run/policy.pt': no such policy file"):
        graph.sim_graph(policy="/nonexistent/run/policy.pt")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "policy.pt").write_bytes(b"")
    with pytest.raises(IsADirectoryError, match=r"is a folder, not a policy file; did you mean .*run/policy.pt\?"):
        graph.sim_graph(policy="run")
    (tmp_path / "robot").mkdir()
    shipped = paths.policies_dir() / "cfc_ncp_rover.pt"
    (tmp_path / "robot" / "policy.onnx").write_bytes(shipped.with_suffix(".onnx").read_bytes())  # only the export
    assert graph.sim_graph(policy=str(tmp_path / "robot" / "policy.pt"), backend="onnx")  # copied: the node runs it
    (tmp_path / "mine.pt").write_bytes(shipped.read_bytes())  # relative to the working directory, as the node has it
    assert graph.sim_graph(policy="mine.pt")[1].parameters["policy"] == "mine.pt"
    parser = argparse.ArgumentParser()
    graph.add_arguments(parser)
    assert graph.run(parser.parse_args(["--policy", "runs/nope.pt"])) == graph.EXIT_USAGE == 2


@pytest.mark.parametrize(
    "argv, option",
    [
        (["--real-time-factor", "0"], "--real-time-factor"),
        (["--episodes", "-1"], "--episodes"),
        (["--seed", "-1"], "--seed"),
        (["--seed", str(2**32 - 2), "--episodes", "3"], "--seed"),  # episode seeds seed + k must stay below 2**32
        (["--timeout", "-5"], "--timeout"),
        (["--control-rate", "-3"], "--control-rate"),
        (["--domain-id", "999"], "--domain-id"),
        (["--log-dir", "FILE"], "--log-dir"),
        (["--record-bag", "FILE"], "--record-bag"),
        (["--log-dir", "FILE/logs"], "--log-dir"),  # once a NotADirectoryError traceback after the nodes started
        (["--record-bag", "FILE/bags"], "--record-bag"),  # once a failed episode (sim_node's NotADirectoryError)
    ],
)
def test_sim_arguments_are_checked_before_any_node_starts(argv, option, tmp_path, capsys):
    """Once a ZeroDivisionError (--real-time-factor 0), a FileExistsError (--log-dir a file), a DDS port error
    (--domain-id 999) or a failed episode with exit 1: now a usage error naming the option, exit 2."""
    afile = tmp_path / "afile"
    afile.write_text("")
    parser = argparse.ArgumentParser()
    graph.add_arguments(parser)
    args = parser.parse_args([a.replace("FILE", str(afile)) for a in argv])
    assert graph.run(args) == graph.EXIT_USAGE
    assert capsys.readouterr().err.startswith(f"liquid-control sim: error: {option}")


def _policy_of_world(tmp_path, world):
    """A random balancer policy whose config names ``world`` (a world of one's own: module:Id)."""
    import torch

    from liquid_control.policy import Policy, load_config, save_policy

    config = load_config(paths.policies_dir() / "configs" / "cfc_balancer.yaml")
    config["world"] = world
    torch.manual_seed(0)
    return save_policy(tmp_path / "own.pt", Policy.from_config(config))


def test_main_refuses_a_policy_of_another_world_and_a_bad_inherited_domain_as_main(tmp_path, monkeypatch, capsys):
    """`liquid-control main --policy policies/cfc_balancer.pt` (the rover world) once started both nodes and failed
    the episode with policy_node's "command_type: 'twist' ... use float64_multi_array" (exit 1), ROS_DOMAIN_ID=abc
    was "invalid literal for int()", and main's usage errors came after its "closed loop over ROS 2" line under
    the name "liquid-control sim"; now one line from "liquid-control main" naming the world or the variable,
    exit 2, before anything starts."""
    from liquid_control import cli

    monkeypatch.setattr(graph, "start_graph", lambda *a, **k: pytest.fail("a node was started"))
    assert cli.main(["main", "--policy", str(paths.policies_dir() / "cfc_balancer.pt")]) == graph.EXIT_USAGE
    out, err = capsys.readouterr()
    assert not out and err.startswith("liquid-control main: error: --policy "), (out, err)
    assert "trained for LiquidBalance-v0, but --world is LiquidRover-v0 (add --world LiquidBalance-v0" in err
    assert cli.main(["sim", "--world", "LiquidBalance-v0", "--policy", "cfc_ncp_rover.pt"]) == graph.EXIT_USAGE
    assert "trained for LiquidRover-v0, but --world is LiquidBalance-v0" in capsys.readouterr().err
    assert cli.main(["sim", "--policy", str(_policy_of_world(tmp_path, "puck_world:PuckWorld-v0"))]) == 2
    err = capsys.readouterr().err  # before: "add --world puck_world:PuckWorld-v0", which --world then refused
    assert "trained for puck_world:PuckWorld-v0, and sim_node runs the package's worlds only" in err, err

    class Started(Exception):
        pass

    def started(*args, **kwargs):
        raise Started

    monkeypatch.setattr(graph, "start_graph", started)
    # the package's world in gymnasium's module:Id form is that world (before: refused as a world of one's own)
    with pytest.raises(Started):
        cli.main(
            [
                "sim",
                "--world",
                "LiquidBalance-v0",
                "--policy",
                str(_policy_of_world(tmp_path, "sim_envs:LiquidBalance-v0")),
            ]
        )
    monkeypatch.setenv("ROS_DOMAIN_ID", "abc")
    assert cli.main(["main"]) == graph.EXIT_USAGE
    out, err = capsys.readouterr()
    assert not out and err.startswith("liquid-control main: error: ROS_DOMAIN_ID must be a number"), (out, err)


def test_a_nodes_failure_cause_keeps_the_lines_of_a_multi_line_message():
    """policy_node reports every invalid parameter on its own line under one FATAL record; the launcher once
    showed only "configure failed: invalid parameters:" and dropped the parameter's name."""
    output = "\n".join(
        [
            "[INFO] [1.0] [policy_node]: loading",
            "[FATAL] [1.1] [policy_node]: autostart: configure failed: invalid parameters:",
            "  - control_rate_hz: must be a positive finite number, got -3.0",
            "  - max_command: must have 2 elements",
            "[INFO] [1.2] [policy_node]: shutting down",
            "[ERROR] [1.3] [policy_node]: stop failed: boom",
            "Traceback (most recent call last):",
            '  File "x.py", line 1, in <module>',
            "RuntimeError: boom",
        ]
    )
    proc = graph.subprocess.Popen(["cat"], stdin=graph.subprocess.PIPE, stdout=graph.subprocess.PIPE, text=True)
    reader = graph.NodeOutput(proc, None, quiet=True)
    proc.stdin.write(output + "\n")
    proc.stdin.close()  # the reader thread alone reads stdout
    proc.wait(timeout=10)
    reader.join(5.0)
    assert reader.cause() == (
        "autostart: configure failed: invalid parameters; - control_rate_hz: must be a positive finite number, "
        "got -3.0; - max_command: must have 2 elements"
    )  # the FATAL record first; a traceback's lines are not the message
    del reader.lines[1]  # without the FATAL record: the last ERROR, without the traceback after it
    assert reader.cause() == "stop failed: boom"


def test_episodes_zero_runs_until_stopped_without_a_default_timeout():
    """`liquid-control sim --episodes 0` (documented: until stopped) once stopped on its own after the default
    --timeout of one episode (the balancer: 70 s, exit 0, "(1 requested)"); now no limit unless --timeout."""
    assert graph.default_timeout(0, 10.0, 1.0, 30.0) == float("inf")
    assert graph.default_timeout(1, 10.0, 1.0, 30.0) == 70.0
    assert graph.default_timeout(3, 25.0, 0.5, 30.0) == 30.0 + 3 * 80.0


def test_a_control_rate_without_fixed_rate_publishing_is_refused(monkeypatch, capsys):
    """`liquid-control sim --control-rate 5` once ran with the policy node publishing per update, the rate never
    read; now a usage error saying to add --publish-mode fixed_rate (with it, the graph starts)."""
    from liquid_control import cli

    class Started(Exception):
        pass

    def start_graph(nodes, *rest):
        assert nodes[1].parameters["control_rate_hz"] == 5.0 and nodes[1].parameters["publish_mode"] == "fixed_rate"
        raise Started

    monkeypatch.setattr(graph, "start_graph", start_graph)
    for argv in (["--control-rate", "5"], ["--control-rate", "5", "--publish-mode", "per_update"]):
        assert cli.main(["sim", *argv]) == graph.EXIT_USAGE
        assert "--control-rate 5 is the command rate of --publish-mode fixed_rate" in capsys.readouterr().err
    with pytest.raises(Started):
        cli.main(["sim", "--control-rate", "5", "--publish-mode", "fixed_rate"])


def test_a_log_or_bag_folder_the_sim_cannot_write_in_is_refused_before_any_node_starts(monkeypatch, capsys, tmp_path):
    """Before: --log-dir and --record-bag were checked for a file in the way only, so a folder the run cannot write
    in (a read-only mount; /sys even for root) failed once the nodes were running; now the one output-folder check
    of eval, train and model-card (paths.output_folder_problem), worded as theirs."""
    from liquid_control import cli

    def start_graph(*args):
        raise AssertionError("a node started")

    monkeypatch.setattr(graph, "start_graph", start_graph)
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    for option, folder, said in (
        ("--log-dir", "/sys/liquid_control_logs", "cannot write in /sys"),
        ("--record-bag", "/sys/liquid_control_bags", "cannot write in /sys"),
        ("--log-dir", str(a_file), "exists and is not a folder"),
        ("--record-bag", str(a_file / "bags"), f"{a_file} exists and is not a folder"),
    ):
        assert cli.main(["sim", "--world", "LiquidBalance-v0", option, folder]) == graph.EXIT_USAGE
        assert f"{option} {folder}: {said}" in capsys.readouterr().err


def test_main_announces_episodes_until_stopped(monkeypatch, capsys):
    """`liquid-control main --episodes 0` runs until stopped; its first line once said "0 episode(s)"."""
    from liquid_control import cli

    monkeypatch.setattr(graph, "start_graph", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    for episodes, said in (("0", "seed 0, episodes until stopped"), ("3", "seed 0, 3 episode(s)")):
        assert cli.main(["main", "--episodes", episodes]) == 130  # Ctrl-C: a message and 130, no traceback
        captured = capsys.readouterr()
        assert said in captured.out and "liquid-control main: interrupted" in captured.err


def test_the_world_of_a_policy_is_read_from_its_own_export_only(tmp_path):
    """A checkpoint beside a stale export of another checkpoint (retrained, not yet exported again) is judged by
    the checkpoint, which policy_node's backend auto runs, not by the stale export's world."""
    import shutil

    shutil.copy(paths.policies_dir() / "cfc_balancer.pt", tmp_path / "policy.pt")
    shutil.copy(paths.policies_dir() / "cfc_rover.onnx", tmp_path / "policy.onnx")  # stale: another checkpoint's
    assert graph.policy_world(tmp_path / "policy.pt") == "LiquidBalance-v0"
    assert graph.policy_world(tmp_path / "policy.onnx") == "LiquidRover-v0"
    assert graph.policy_world(paths.policies_dir() / "cfc_ncp_rover.pt") == "LiquidRover-v0"  # its own export
    (tmp_path / "policy.pt").unlink()  # only the export on the robot
    assert graph.policy_world(tmp_path / "policy.pt") == "LiquidRover-v0"
    (tmp_path / "junk.pt").write_text("junk")
    assert graph.policy_world(tmp_path / "junk.pt") is None


def test_the_world_of_a_checkpoint_beside_an_unreadable_export_is_read_from_the_checkpoint(tmp_path, monkeypatch):
    """Before: a .pt beside an export that cannot be read here (corrupt, or no onnxruntime installed) gave None, so
    `liquid-control main`/`sim` skipped the world check, though policy_node's backend auto then runs the .pt with
    torch; the world is now the checkpoint's own. An unreadable .onnx given itself still gives None."""
    import shutil
    import sys

    shutil.copy(paths.policies_dir() / "cfc_balancer.pt", tmp_path / "policy.pt")
    (tmp_path / "policy.onnx").write_text("junk")
    assert graph.policy_world(tmp_path / "policy.pt") == "LiquidBalance-v0"
    assert graph.policy_world(tmp_path / "policy.onnx") is None
    shutil.copy(paths.policies_dir() / "cfc_balancer.onnx", tmp_path / "policy.onnx")  # another .pt's export
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime raises ImportError
    assert graph.policy_world(tmp_path / "policy.pt") == "LiquidBalance-v0"


def test_the_world_of_an_onnx_policy_is_read_without_the_onnx_package(tmp_path, monkeypatch, capsys):
    """Before: without the onnx package (a robot with only onnxruntime) policy_world returned None for an .onnx
    policy, and for a .pt with its export beside it, so `liquid-control main`/`sim` skipped the world check
    silently and started a policy of another world; the ONNX metadata is now read with onnxruntime, as
    policy_node reads it."""
    import importlib.util
    import shutil
    import sys

    from liquid_control import cli
    from liquid_control.runtime.backends import read_onnx_metadata

    shutil.copy(paths.policies_dir() / "cfc_balancer.onnx", tmp_path / "balancer.onnx")
    if importlib.util.find_spec("onnx") is not None:  # the same entries as the onnx package reads
        import onnx

        props = onnx.load(str(tmp_path / "balancer.onnx"), load_external_data=False).metadata_props
        assert read_onnx_metadata(tmp_path / "balancer.onnx") == {p.key: p.value for p in props}
    (tmp_path / "junk.onnx").write_text("junk")
    with pytest.raises(ValueError, match=r"junk\.onnx: not a loadable ONNX model"):
        read_onnx_metadata(tmp_path / "junk.onnx")
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
    assert graph.policy_world(tmp_path / "balancer.onnx") == "LiquidBalance-v0"
    assert graph.policy_world(paths.policies_dir() / "cfc_ncp_rover.pt") == "LiquidRover-v0"  # its own export
    monkeypatch.setattr(graph, "start_graph", lambda *a, **k: pytest.fail("a node was started"))
    assert cli.main(["sim", "--policy", str(tmp_path / "balancer.onnx")]) == graph.EXIT_USAGE
    assert "trained for LiquidBalance-v0, but --world is LiquidRover-v0" in capsys.readouterr().err


def test_a_backend_the_policy_file_cannot_run_on_is_a_usage_error(tmp_path, monkeypatch, capsys):
    """--backend torch with an .onnx policy, or --backend onnx with a .pt that has no export beside it, once
    started both nodes and failed the episode when policy_node refused the pair (exit 1); now exit 2 at once."""
    import shutil

    from liquid_control import cli

    monkeypatch.setattr(graph, "start_graph", lambda *a, **k: pytest.fail("a node was started"))
    shutil.copy(paths.policies_dir() / "cfc_rover.pt", tmp_path / "mine.pt")
    for argv, said in (
        (["--policy", str(paths.policies_dir() / "cfc_rover.onnx"), "--backend", "torch"], "is an ONNX model"),
        (["--policy", str(tmp_path / "mine.pt"), "--backend", "onnx"], "there is no exported mine.onnx next to"),
    ):
        assert cli.main(["sim", *argv]) == graph.EXIT_USAGE
        err = capsys.readouterr().err
        assert err.startswith("liquid-control sim: error: --backend ") and said in err, err
