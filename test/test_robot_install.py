"""A robot that only runs the nodes: policy_node on a shipped policy's export, `liquid-control record`,
takeover_mux, the robot description (the shipped URDFs) and `liquid-control view --foxglove` run with the
simulation and training stack absent (each run in a process where importing any of it fails, as where it is not
installed), what needs the stack says so, and package.xml and docs/real_robot.md let the robot leave it out."""

import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from geometry_msgs.msg import Twist
from sensor_msgs.msg import CameraInfo, Image

from liquid_control.conventions.image_conversion import numpy_to_image
from liquid_control.paths import config_dir
from liquid_control.ros.testing import Probe, isolated_ros_env, start_node_process, stop_process

REPO = Path(__file__).resolve().parents[1]
# import name -> its rosdep key in package.xml (None: none there; pinned in requirements.txt or test-only)
SIMULATION_AND_TRAINING = {
    "torch": "python3-pytorch-pip",
    "mujoco": "python3-mujoco-pip",
    "gymnasium": "python3-gymnasium-pip",
    "matplotlib": "python3-matplotlib",
    "tqdm": "python3-tqdm",
    "PIL": "python3-pil",
    "onnx": None,
    "scipy": None,
    "ncps": None,
}


def without_the_stack(tmp_path: Path, env: dict, also: tuple = ()) -> dict:
    """``env`` for a process in which importing any of SIMULATION_AND_TRAINING (and ``also``) fails
    (ModuleNotFoundError, as for a package not installed): a sitecustomize first on its path."""
    site = tmp_path / "robot_site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        f"import sys\nsys.modules.update(dict.fromkeys({sorted({*SIMULATION_AND_TRAINING, *also})!r}))\n"
    )
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
    return env


def test_policy_node_runs_a_shipped_policy_and_checks_the_cameras_field_of_view_without_the_simulator(tmp_path):
    """Before: on a robot without gymnasium and MuJoCo, policy_node ran the shipped rover policy's export but compared
    camera_info's field of view with nothing: those files do not record their training camera, and the world's was
    read by importing the world, which failed, so a 60-degree lens under a policy trained at 100 went unwarned
    (with the simulator installed, configure imported gymnasium, MuJoCo and PyOpenGL for that one number)."""
    env = without_the_stack(tmp_path, isolated_ros_env())
    log = tmp_path / "policy_node.log"
    node = start_node_process(
        "liquid_control.ros.policy_node",
        "policy_node",
        {"autostart": True},  # the shipped parameter file: cfc_ncp_rover.pt, backend auto (its .onnx without torch)
        env,
        log_path=log,
        params_files=(config_dir() / "rover_policy.yaml",),
    )
    probe = Probe(env)
    try:
        camera = probe.publisher(Image, "/camera/image_raw")
        camera_info = probe.publisher(CameraInfo, "/camera/camera_info")
        probe.record("/cmd_vel", Twist)
        f = 32.0 / math.tan(math.radians(30.0))  # 64x64 pixels across 60 degrees
        info = CameraInfo(width=64, height=64, k=[f, 0.0, 31.5, 0.0, f, 31.5, 0.0, 0.0, 1.0])
        warned = "the policy's world LiquidRover-v0 renders 100x100"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and node.poll() is None:
            stamp = probe.node.get_clock().now().to_msg()
            image = numpy_to_image(np.full((64, 64, 3), 90, np.uint8), "rgb8")
            image.header.stamp = info.header.stamp = stamp
            camera.publish(image)
            camera_info.publish(info)
            if len(probe.messages("/cmd_vel")) > 2 and warned in log.read_text():
                break
            time.sleep(1 / 15)
    finally:
        code = stop_process(node)
        probe.close()
    text = log.read_text()
    assert code == 0 and "Traceback" not in text, text
    assert "(onnx, cfc_ncp_rover)" in text, text  # the export beside the .pt, as a robot without torch runs it
    assert len(probe.messages("/cmd_vel")) > 2, text
    assert "/camera/camera_info: camera_info's K gives a field of view of 60x60 degrees" in text and warned in text


def test_liquid_control_record_records_without_the_simulator(tmp_path):
    """Before: every `liquid-control record` (--help too) on a robot without gymnasium ended in "error: needs the
    Python package 'gymnasium'" (exit 1): its options' help names the expert's safety margin, imported from
    sim_envs, whose import needed gymnasium."""
    env = without_the_stack(tmp_path, isolated_ros_env())
    out = tmp_path / "bag"
    proc = subprocess.run(
        [sys.executable, "-m", "liquid_control.cli", "record", "-o", str(out), "--duration", "1", "/robot/topic"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    assert (out / "metadata.yaml").is_file() and "warning: nothing received on /robot/topic" in proc.stderr
    expert = subprocess.run(  # what needs the simulator says so
        [sys.executable, "-m", "liquid_control.cli", "record", "--expert", "-o", str(tmp_path / "expert")],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert expert.returncode == 1 and "error: needs the Python package" in expert.stderr, expert.stderr


def test_takeover_mux_starts_without_the_simulator(tmp_path):
    """The mux of a takeover round on the robot (it imports the takeover rule from the bags layer) runs without the
    stack: it starts, logs its routing and stops cleanly."""
    env = without_the_stack(tmp_path, isolated_ros_env())
    log = tmp_path / "takeover_mux.log"
    mux = start_node_process("liquid_control.ros.takeover_mux", "takeover_mux", {}, env, log_path=log)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and mux.poll() is None and "-> /base/cmd_vel" not in log.read_text():
            time.sleep(0.1)
    finally:
        code = stop_process(mux)
    assert code == 0 and "-> /base/cmd_vel" in log.read_text(), log.read_text()


def _run(argv: list[str], env: dict, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True, timeout=timeout)


def test_the_robot_description_prints_without_the_simulator_as_the_simulator_generates_it(tmp_path):
    """Before: on a robot without MuJoCo, `python -m liquid_control.ros.robot_description` (the URDF to give
    robot_state_publisher) ended in a ModuleNotFoundError traceback (the module imported MuJoCo and gymnasium to
    list the worlds). It prints the shipped URDFs, the text generated here from the worlds' MuJoCo models; --write,
    which generates them, says what it needs and writes nothing."""
    from liquid_control.ros import robot_description as rd

    env = without_the_stack(tmp_path, isolated_ros_env())
    printed = _run(["-m", "liquid_control.ros.robot_description"], env)
    assert printed.returncode == 0 and "Traceback" not in printed.stderr, printed.stderr
    assert printed.stdout == "".join(rd.nominal_urdf(world) for world in rd.world_ids())  # generated with MuJoCo
    rover = _run(["-m", "liquid_control.ros.robot_description", "--world", "LiquidRover-v0"], env)
    assert rover.returncode == 0 and rover.stdout == rd.nominal_urdf("LiquidRover-v0"), rover.stderr
    write = _run(["-m", "liquid_control.ros.robot_description", "--write", str(tmp_path / "urdf")], env)
    assert write.returncode == 1 and "Traceback" not in write.stderr, write.stderr
    assert "--write: error: needs the Python package 'mujoco'" in write.stderr and not (tmp_path / "urdf").exists()


def test_view_serves_foxglove_without_the_simulator_and_refuses_a_snapshot_before_watching(tmp_path):
    """Before: every `liquid-control view` on a robot without MuJoCo ended in "needs the Python package 'mujoco'"
    (view imported the rotations of robot_description, which imported MuJoCo), though relaying the topics to
    Foxglove needs neither MuJoCo nor matplotlib. A --snapshot, drawn with matplotlib, is refused before the watch
    (--until-episode-end would otherwise watch until an episode ends, then fail)."""
    pytest.importorskip("foxglove")
    env = without_the_stack(tmp_path, isolated_ros_env())
    served = _run(["-m", "liquid_control.cli", "view", "--foxglove", "--port", "0", "--duration", "1"], env)
    assert served.returncode == 0 and "Traceback" not in served.stderr, served.stderr
    assert "Foxglove: open a connection to ws://127.0.0.1:" in served.stdout
    picture = tmp_path / "topics.png"
    snapshot = _run(["-m", "liquid_control.cli", "view", "--snapshot", str(picture), "--until-episode-end"], env)
    assert snapshot.returncode == 1 and not picture.exists(), snapshot.stderr
    assert "liquid-control view --snapshot: error: needs the Python package 'matplotlib'" in snapshot.stderr
    assert "not installed here either" not in snapshot.stderr  # it needs matplotlib alone of the stack


def test_view_on_a_robot_without_tf2_msgs_or_foxglove_says_how_to_add_them_before_it_serves(tmp_path):
    """Before: on a robot installed by docs/real_robot.md's pip recipe (no foxglove-sdk, no tf2_msgs: the recipe
    built no interfaces), `view --foxglove` ended with status 2 (README: a missing package is 1), then, foxglove-sdk
    installed, printed 'Foxglove: open a connection' and ended with status 1 because /tf needs tf2_msgs, whose hint
    sent the robot to ./run.sh (the whole stack, torch included). Now foxglove-sdk missing is status 1 with its pip
    line; without tf2_msgs every other topic is served, with one line naming the build_interfaces.sh command for
    this venv; a message package missing is said before the server starts, and the connection line comes last."""
    argv = ["-m", "liquid_control.cli", "view", "--foxglove", "--port", "0", "--duration", "1"]
    no_fox = _run(argv, without_the_stack(tmp_path, isolated_ros_env(), also=("foxglove",)))
    assert no_fox.returncode == 1 and "Traceback" not in no_fox.stderr and not no_fox.stdout, no_fox.stderr
    assert no_fox.stderr.strip() == (
        "liquid-control view --foxglove: error: needs the Python package 'foxglove', which is not installed here "
        "(pip install foxglove-sdk==0.30.3; optional, for liquid-control view --foxglove)"
    )
    pytest.importorskip("foxglove")
    served = _run(argv, without_the_stack(tmp_path, isolated_ros_env(), also=("tf2_msgs",)))
    assert served.returncode == 0 and "Traceback" not in served.stderr, served.stderr
    assert "Foxglove: open a connection to ws://127.0.0.1:" in served.stdout
    (warning,) = [line for line in served.stderr.splitlines() if "tf2_msgs" in line]
    assert warning.startswith("liquid-control view: warning: /tf and /tf_static are not relayed"), warning
    script = REPO / "scripts" / "build_interfaces.sh"
    assert f"bash {script} {sys.prefix} runtime" in warning and "./run.sh" not in warning, warning
    no_msgs = _run(argv, without_the_stack(tmp_path, isolated_ros_env(), also=("nav_msgs",)))
    assert no_msgs.returncode == 1 and "Traceback" not in no_msgs.stderr, no_msgs.stderr
    assert "liquid-control view: error: needs the Python package 'nav_msgs'" in no_msgs.stderr
    assert "open a connection" not in no_msgs.stdout, no_msgs.stdout  # said only once every check passed


def test_the_robot_recipe_installs_what_view_foxglove_needs():
    """Before: docs/real_robot.md said `liquid-control view --foxglove` runs on a robot installed by its pip recipe,
    which installed neither foxglove-sdk nor tf2_msgs (built by scripts/build_interfaces.sh, which the recipe never
    ran). The recipe installs foxglove-sdk at requirements-test.txt's pin and builds the interfaces into the venv."""
    page = " ".join((REPO / "docs" / "real_robot.md").read_text().split())
    (pin,) = [
        line.split("#")[0].strip()
        for line in (REPO / "requirements-test.txt").read_text().splitlines()
        if line.startswith("foxglove-sdk==")
    ]
    assert f"pip install {pin}" in page
    assert 'bash scripts/build_interfaces.sh "$VIRTUAL_ENV" runtime' in page
    from liquid_control.ros import entry

    assert f"pip install {pin};" in entry.install_hint("foxglove")


def test_sim_node_without_the_simulator_says_what_to_install(tmp_path):
    """Before: the sim_node executable (`ros2 run liquid_control sim_node`) on a robot ended in a
    ModuleNotFoundError traceback from its import of gymnasium; it says what it needs in one line, as
    `liquid-control sim` does."""
    env = without_the_stack(tmp_path, isolated_ros_env())
    proc = _run(["-m", "liquid_control.ros.entry", "sim_node"], env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "sim_node: error: needs the Python package 'gymnasium', which is not installed here (pip: gymnasium" in (
        proc.stderr
    )
    # the rest of the stack missing here is named too (before: one package per try, tqdm, then gymnasium, ...)
    assert "stack it needs, torch, mujoco, matplotlib, tqdm, onnx are not installed here either" in proc.stderr


def test_main_without_the_simulator_names_what_is_missing_and_announces_no_run(tmp_path):
    """Before: `liquid-control main` on a robot install printed "closed loop over ROS 2: ..." as if starting, then
    the missing simulator; the line comes only once everything it needs imports."""
    proc = _run(
        ["-m", "liquid_control.cli", "main", "--episodes", "1"], without_the_stack(tmp_path, isolated_ros_env())
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "closed loop over ROS 2" not in proc.stdout, proc.stdout
    assert "liquid-control main: error: needs the Python package" in proc.stderr, proc.stderr


def _exec_depends(variables: dict) -> set[str]:
    from catkin_pkg.package import parse_package

    package = parse_package(str(REPO / "package.xml"))
    package.evaluate_conditions(variables)  # as rosdep does, with the environment
    return {d.name for d in package.exec_depends if d.evaluated_condition}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # catkin_pkg's use of pyparsing's older names
def test_rosdep_on_the_robot_leaves_out_what_the_nodes_run_without():
    """Before: package.xml made torch, MuJoCo, gymnasium, matplotlib, tqdm and Pillow unconditional exec_depends, so
    `rosdep install` on a robot installed gigabytes the nodes do not use (the tests above run them without); the
    docs told the robot to pip install onnx, which only `liquid-control export` uses. The variable package.xml's
    conditions read is the one docs/real_robot.md sets; its pip line leaves out the same packages."""
    names = set(re.findall(r'condition="\$(\w+) != robot"', (REPO / "package.xml").read_text()))
    assert len(names) == 1, names
    (variable,) = names
    stack = {key for key in SIMULATION_AND_TRAINING.values() if key}
    everything = _exec_depends({})
    assert stack <= everything  # a training machine: all of it, as before
    assert _exec_depends({variable: "robot"}) == everything - stack
    page = " ".join((REPO / "docs" / "real_robot.md").read_text().split())
    assert f"{variable}=robot rosdep install --from-paths src --ignore-src" in page
    (left_out,) = re.findall(r"grep -vE '\^\(([\w|-]+)\)==' requirements\.txt \| pip install -r /dev/stdin", page)
    pinned = {line.split("==")[0] for line in (REPO / "requirements.txt").read_text().splitlines() if "==" in line}
    pip_names = {"PIL": "pillow"}
    assert set(left_out.split("|")) == {pip_names.get(m, m) for m in SIMULATION_AND_TRAINING} & pinned
