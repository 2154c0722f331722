"""The ROS settings a user's shell already carries (a sourced ROS installation, discovery settings from .bashrc):
each command either runs or stops at once with one line naming the setting and what to do."""

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from liquid_control.ros.testing import isolated_ros_env

REPO = Path(__file__).resolve().parents[1]


def sourced_foreign_ros(tmp_path: Path, extension: str) -> dict:
    """The environment of a shell that sourced /opt/ros/jazzy/setup.bash: its site-packages first on PYTHONPATH,
    with an rclpy that loads its C extension as rclpy's rpyutils does; ``extension``: the file name of that
    extension there (built for Python 3.12, so none for this one; or one for this Python that fails to load)."""
    site = tmp_path / "opt" / "ros" / "jazzy" / "lib" / "python3.12" / "site-packages"
    (site / "rclpy").mkdir(parents=True)
    (site / "rclpy" / "__init__.py").write_text(
        "import importlib\nimportlib.import_module('._rclpy_pybind11', 'rclpy')\n"
    )
    (site / "rclpy" / extension).write_bytes(b"not a shared object")
    env = isolated_ros_env()
    env.update(PYTHONPATH=str(site), ROS_DISTRO="jazzy", AMENT_PREFIX_PATH=str(tmp_path / "opt" / "ros" / "jazzy"))
    return env


@pytest.mark.parametrize(
    "extension",
    ["_rclpy_pybind11.cpython-312-x86_64-linux-gnu.so", "_rclpy_pybind11" + sysconfig.get_config_var("EXT_SUFFIX")],
)
def test_a_sourced_ros_installation_for_another_python_is_named_not_called_missing(tmp_path, extension):
    """Before: with /opt/ros/jazzy/setup.bash sourced (its rclpy for Python 3.12 first on PYTHONPATH), every ROS
    command said "needs the Python package 'rclpy', which is not installed here (pip: ros-rclpy ...)": rclpy is
    installed, and installing it again changes nothing. Now the line names the copy found, PYTHONPATH and what to
    do. One whose C extension is there but fails to load ended in an ImportError traceback."""
    env = sourced_foreign_ros(tmp_path, extension)
    found = tmp_path / "opt" / "ros" / "jazzy" / "lib" / "python3.12" / "site-packages" / "rclpy"
    for argv, prog in (
        ([sys.executable, "-m", "liquid_control.cli", "record", "-o", str(tmp_path / "bag")], "liquid-control record"),
        ([sys.executable, "-m", "liquid_control.ros.entry", "policy_node"], "policy_node"),
    ):
        proc = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1, proc.stderr
        line = proc.stderr.strip()
        assert "\n" not in line and "Traceback" not in line, line
        assert line.startswith(f"{prog}: error: needs the Python package 'rclpy': the one found first, {found},"), line
        assert "PYTHONPATH (ROS_DISTRO=jazzy)" in line and "not installed" not in line, line


def test_a_node_module_run_with_python_m_says_a_foreign_rclpy_in_one_line(tmp_path):
    """Before: `python -m liquid_control.ros.policy_node` (any node module) with a sourced ROS installation's rclpy
    first on PYTHONPATH ended in an ImportError traceback from the module's own imports; the console scripts and
    `python -m liquid_control.ros.entry` said it in one line (entry.run). The modules now go through entry.run."""
    from liquid_control.ros.entry import NODE_MODULES

    env = sourced_foreign_ros(tmp_path, "_rclpy_pybind11.cpython-312-x86_64-linux-gnu.so")
    for executable, module in NODE_MODULES.items():
        proc = subprocess.run(
            [sys.executable, "-m", module], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        line = proc.stderr.strip()
        assert proc.returncode == 1 and "\n" not in line, (module, proc.stderr)
        assert line.startswith(f"{executable}: error: needs the Python package 'rclpy': the one found first,"), line


def test_replay_run_with_python_m_is_refused_in_one_line_naming_the_command_that_checks(tmp_path):
    """Before: `python -m liquid_control.ros.replay` ran replay through a __main__ of its own, past the checks
    `liquid-control replay` runs first: with a sourced ROS installation's rclpy first on PYTHONPATH it ended in an
    ImportError traceback from the module's imports. The checks live in liquid_control.cli, above the ros layer, so
    the module refuses a -m run before its imports, naming the command, which says what is wrong."""
    env = sourced_foreign_ros(tmp_path, "_rclpy_pybind11.cpython-312-x86_64-linux-gnu.so")
    replay = ["replay", str(tmp_path / "played"), "-o", str(tmp_path / "replayed")]
    proc = subprocess.run(
        [sys.executable, "-m", "liquid_control.ros.replay", *replay[1:]],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = proc.stderr.strip()
    assert proc.returncode == 2 and "\n" not in line and not (tmp_path / "replayed").exists(), proc.stderr
    assert line == (
        "python -m liquid_control.ros.replay: error: run it as liquid-control replay (or python -m liquid_control.cli "
        "replay), which checks the shell's ROS settings first"
    ), line
    proc = subprocess.run(  # the command it names says what is wrong, in one line
        [sys.executable, "-m", "liquid_control.cli", *replay], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    line = proc.stderr.strip()
    assert proc.returncode == 1 and "\n" not in line, proc.stderr
    assert line.startswith("liquid-control replay: error: needs the Python package 'rclpy': the one found first,"), line


def test_discovery_turned_off_in_the_environment_stops_sim_at_once_naming_it(tmp_path):
    """Before: with ROS_AUTOMATIC_DISCOVERY_RANGE=OFF in the shell, `liquid-control sim` started its nodes, which
    never found each other: the sim waited its 30 s for a policy node, then the run's timeout (exit 3: "--timeout:
    ... passed before every episode ended"), with nothing naming the setting. Now a usage error before any node
    starts."""
    env = isolated_ros_env()
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "OFF"
    argv = [sys.executable, "-m", "liquid_control.cli", "sim", "--episodes", "1", "--timeout", "5"]
    proc = subprocess.run(
        [*argv, "--log-dir", str(tmp_path / "logs")], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("liquid-control sim: error: ROS_AUTOMATIC_DISCOVERY_RANGE=OFF"), proc.stderr
    assert "set it to LOCALHOST" in proc.stderr and not (tmp_path / "logs").exists(), proc.stderr


def test_discovery_turned_off_stops_record_view_and_replay_at_once_naming_it(tmp_path):
    """Before: with ROS_AUTOMATIC_DISCOVERY_RANGE=OFF, `record` of topics ran its --duration and wrote an empty bag
    (exit 0, "nothing received"), `view` watched nothing and `replay` played to no node (exit 1, "nothing was
    recorded"), none naming the setting (sim refused it, cb6b5e7a). Now each refuses at once as sim does, leaving
    no bag or picture; `record --expert`, which needs no DDS, still runs."""
    from sensor_msgs.msg import Imu

    from liquid_control.bags import BagWriter

    bag = tmp_path / "bag"
    with BagWriter(bag) as writer:
        writer.write("/imu/data", 10**12, Imu())
    env = isolated_ros_env()
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "OFF"
    cli = [sys.executable, "-m", "liquid_control.cli"]
    for command, out, options in (
        ("record", tmp_path / "recorded", ["--duration", "2", "-o"]),
        ("view", tmp_path / "topics.png", ["--duration", "2", "--snapshot"]),
        ("replay", tmp_path / "replayed", [str(bag), "--wait", "2", "--linger", "0", "-o"]),
    ):
        proc = subprocess.run([*cli, command, *options, str(out)], env=env, capture_output=True, text=True, timeout=120)
        line = proc.stderr.strip()
        assert proc.returncode == 2 and "\n" not in line and not out.exists(), (command, proc.stderr)
        assert line.startswith(f"liquid-control {command}: error: ROS_AUTOMATIC_DISCOVERY_RANGE=OFF"), line
        assert line.endswith("unset it or set it to LOCALHOST for this command"), line
    expert = [*cli, "record", "--expert", "--episodes", "1", "--time-limit", "0.3", "--render-size", "32"]
    proc = subprocess.run(
        [*expert, "-o", str(tmp_path / "expert")], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and (tmp_path / "expert").is_dir(), proc.stderr


def test_another_ros_installations_libraries_on_ld_library_path_are_named(tmp_path):
    """Before: with a ROS installation's lib on LD_LIBRARY_PATH (a sourced /opt/ros/jazzy/setup.bash), the ROS 2
    wheels' bootstrapper put it before or after the venv's lib at random (it rebuilds the path from a set), and
    in the processes where it came first rclpy failed to import (or ran on that distribution's librcl). Now every
    ROS command and node executable says so at once, whatever the order."""
    lib = tmp_path / "opt" / "ros" / "jazzy" / "lib"
    lib.mkdir(parents=True)
    (lib / "librcl.so").write_bytes(b"")  # another installation's librcl
    env = isolated_ros_env()
    env.update(ROS_DISTRO="jazzy", LD_LIBRARY_PATH=os.pathsep.join([str(lib), env.get("LD_LIBRARY_PATH", "")]))
    for argv, prog in (
        ([sys.executable, "-m", "liquid_control.cli", "replay"], "liquid-control replay"),
        ([sys.executable, "-m", "liquid_control.ros.entry", "takeover_mux"], "takeover_mux"),
    ):
        proc = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1, proc.stderr
        line = proc.stderr.strip()
        assert "\n" not in line, line
        expected = (
            f"{prog}: error: LD_LIBRARY_PATH holds another ROS installation's libraries, {lib} (ROS_DISTRO=jazzy)"
        )
        assert line.startswith(expected) and "has not sourced that installation's setup.bash" in line, line


def test_an_rmw_implementation_not_installed_here_is_named():
    """Before: RMW_IMPLEMENTATION=rmw_cyclonedds_cpp (a .bashrc's) ended every ROS command at `import rclpy` with
    rcl's "Expected RMW implementation identifier of 'rmw_cyclonedds_cpp' but instead found 'rmw_fastrtps_cpp',
    exiting with 102", exit 102, nothing naming the variable. Now one line naming it and what to do, exit 1; the
    wheels' own RMW named is fine."""
    env = isolated_ros_env()
    env["RMW_IMPLEMENTATION"] = "rmw_cyclonedds_cpp"
    for argv, prog in (
        ([sys.executable, "-m", "liquid_control.cli", "replay"], "liquid-control replay"),
        ([sys.executable, "-m", "liquid_control.ros.entry", "takeover_mux"], "takeover_mux"),
    ):
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1, proc.stderr
        line = proc.stderr.strip()
        assert line.startswith(f"{prog}: error: RMW_IMPLEMENTATION=rmw_cyclonedds_cpp (from the environment)"), line
        assert line.endswith("(they have rmw_fastrtps_cpp): unset RMW_IMPLEMENTATION for this command"), line
    env["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"
    proc = subprocess.run(
        [sys.executable, "-m", "liquid_control.cli", "replay"], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and "required: BAG" in proc.stderr, proc.stderr  # on to replay's own usage error


def test_a_ros_log_folder_that_cannot_be_made_is_named(tmp_path):
    """Before: ROS_LOG_DIR (or HOME, for ~/.ros/log) where rcl cannot make its log folder ended `liquid-control
    sim` in an RCLError traceback from its status listener after the nodes had started, and `liquid-control
    record` in one too. Now sim and record refuse before anything starts, in one line, exit 2 (record said it with
    exit 1 after starting rcl, where sim, view and replay refuse with 2); `record --expert`, which needs no rcl, still
    runs."""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    env = isolated_ros_env()
    env["ROS_LOG_DIR"] = str(blocker / "log")
    sim = [sys.executable, "-m", "liquid_control.cli", "sim", "--episodes", "1", "--timeout", "5"]
    proc = subprocess.run(
        [*sim, "--log-dir", str(tmp_path / "logs")], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2 and not (tmp_path / "logs").exists(), proc.stderr
    assert proc.stderr.strip() == (
        f"liquid-control sim: error: the ROS log folder {blocker / 'log'} (from ROS_LOG_DIR) cannot be created: "
        f"{blocker} is not a folder; set ROS_LOG_DIR to a writable folder"
    ), proc.stderr
    record = [sys.executable, "-m", "liquid_control.cli", "record", "--duration", "1", "-o", str(tmp_path / "bag")]
    proc = subprocess.run(record, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and not (tmp_path / "bag").exists(), proc.stderr  # refused as sim: before, exit 1
    assert proc.stderr.strip() == (
        f"liquid-control record: error: the ROS log folder {blocker / 'log'} (from ROS_LOG_DIR) cannot be created: "
        f"{blocker} is not a folder; set ROS_LOG_DIR to a writable folder"
    ), proc.stderr
    expert = [*record[:4], "--expert", "--episodes", "1", "--time-limit", "0.3", "--render-size", "32"]
    proc = subprocess.run(
        [*expert, "-o", str(tmp_path / "expert")], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and (tmp_path / "expert").is_dir(), proc.stderr


def test_an_import_error_inside_a_package_found_here_keeps_pythons_own_words(monkeypatch, capsys):
    """Before: since the command's run was wrapped for ImportError (70dd0355), an ImportError raised inside a
    package installed here (a torch of another version: "cannot import name ... from 'torch'") was said as "needs
    the Python package 'torch': the one found ... is not importable", Python's own words lost. They are kept."""
    import argparse
    import types

    import torch

    from liquid_control import cli

    def run(args):
        raise ImportError("cannot import name 'frobnicate' from 'torch'", name="torch", path=torch.__file__)

    monkeypatch.setattr(cli, "command_parser", lambda name: (types.SimpleNamespace(run=run), argparse.ArgumentParser()))
    assert cli._main(["export"]) == 1
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and line.startswith("liquid-control export: error: needs the Python package 'torch'"), line
    assert line.endswith("(Python: cannot import name 'frobnicate' from 'torch')"), line


@pytest.mark.skipif(not os.path.ismount("/sys"), reason="needs sysfs at /sys, where no folder or file can be made")
def test_a_ros_log_folder_refused_also_to_root_is_named(tmp_path):
    """Before: the log-folder check asked os.access, which says writable to root also where the folder refuses (a
    read-only mount, /sys): as root `liquid-control sim` passed the check and failed later. And a log folder that
    exists but takes no log file ended `liquid-control record` (rclpy's RuntimeError from spdlog, not the RCLError
    init_ros caught) in a traceback, as root or not, and view and replay (rclpy.init itself) too. Each now names
    the folder and says to set ROS_LOG_DIR; record, view and replay before they start, as sim, with exit 2 (record's
    line was 'cannot start: ...' with exit 1)."""
    from sensor_msgs.msg import Imu

    from liquid_control.bags import BagWriter
    from liquid_control.ros.entry import unwritable_log_dir

    problem = unwritable_log_dir({"ROS_LOG_DIR": "/sys/liquid_control_test/log"})
    assert problem is not None and problem.startswith(
        "the ROS log folder /sys/liquid_control_test/log (from ROS_LOG_DIR) cannot be created: /sys is not writable ("
    ), problem
    assert problem.endswith("); set ROS_LOG_DIR to a writable folder"), problem
    assert unwritable_log_dir({"ROS_LOG_DIR": str(tmp_path / "logs" / "ros")}) is None
    assert list(tmp_path.iterdir()) == []  # the check left nothing behind
    env = isolated_ros_env()
    env["ROS_LOG_DIR"] = "/sys"  # a folder that exists: rcl makes nothing, its log file cannot be opened there
    with BagWriter(tmp_path / "played") as writer:
        writer.write("/imu/data", 10**12, Imu())
    cli = [sys.executable, "-m", "liquid_control.cli"]
    for command, out, options in (  # before: a traceback from rclpy.init, once the bags were open or the view set up
        ("record", tmp_path / "bag", ["--duration", "1", "-o"]),  # before: exit 1, 'record: cannot start: ...'
        ("view", tmp_path / "topics.png", ["--duration", "2", "--snapshot"]),
        ("replay", tmp_path / "replayed", [str(tmp_path / "played"), "--wait", "2", "--linger", "0", "-o"]),
    ):
        proc = subprocess.run([*cli, command, *options, str(out)], env=env, capture_output=True, text=True, timeout=120)
        line = proc.stderr.strip()
        assert proc.returncode == 2 and "\n" not in line and not out.exists(), (command, proc.stderr)
        said = f"liquid-control {command}: error: the ROS log folder /sys (from ROS_LOG_DIR) is not writable ("
        assert line.startswith(said), line


@pytest.mark.skipif(not os.path.ismount("/sys"), reason="needs sysfs at /sys, where no folder or file can be made")
def test_a_node_executable_names_a_ros_log_folder_it_cannot_use(tmp_path):
    """The node executables (a launch file's policy_node, takeover_mux) run no command's check before rclpy.init:
    init_ros says why rcl could not start in one line, exit 2. A log folder rcl cannot make is an RCLError ('Failed
    to create log directory'), one that exists but takes no log file (/sys) spdlog's RuntimeError, a traceback before
    init_ros named it (9fa2437). `liquid-control record` covered both until it refused them before rclpy.init
    (844b072): nothing else ran them since."""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    unmade = f"cannot start: failed to initialize logging: Failed to create log directory '{blocker / 'log'}'"
    for executable in ("takeover_mux", "policy_node"):
        for log_dir, said in (
            ("/sys", "cannot start: the ROS log folder /sys (from ROS_LOG_DIR) is not writable ("),
            (str(blocker / "log"), unmade),
        ):
            env = isolated_ros_env()
            env["ROS_LOG_DIR"] = log_dir
            proc = subprocess.run(
                [sys.executable, "-m", "liquid_control.ros.entry", executable],
                env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            line = proc.stderr.strip()
            assert proc.returncode == 2 and "\n" not in line, (executable, log_dir, proc.stderr)
            assert line.startswith(f"{executable}: {said}"), line
            assert line.endswith("; set ROS_LOG_DIR to a writable folder"), line
