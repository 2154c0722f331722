"""The node executables: ``policy_node``, ``sim_node``, ``bag_recorder`` and ``takeover_mux`` (setup.py's console
scripts, and ``python -m liquid_control.ros.entry NAME --ros-args ...`` as ``liquid-control sim`` starts them).

A node's imports (rclpy, MuJoCo, torch) take a second or more. A SIGINT/SIGTERM in that time, before the node's
``main`` has installed its own handlers, would print a KeyboardInterrupt traceback from deep inside an import.
Nothing exists yet that needs cleaning up, so the process ends there quietly, with status 0 as after any
requested stop.
"""

import importlib
import os
import signal
import sys

NODE_MODULES = {
    "policy_node": "liquid_control.ros.policy_node",
    "sim_node": "liquid_control.ros.sim_node",
    "bag_recorder": "liquid_control.ros.recorder_node",
    "takeover_mux": "liquid_control.ros.takeover_mux",
}


def _stop_before_start(_signum, _frame) -> None:
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:  # e.g. the signal interrupted a write to the same stream: exit anyway
        pass
    os._exit(0)


def honour_no_color(environ=os.environ) -> None:
    """``NO_COLOR`` (no-color.org) set and not empty: ROS log lines without colour codes, also in the processes
    started from here. rcutils colours them on a terminal unless ``RCUTILS_COLORIZED_OUTPUT`` says otherwise (one
    set explicitly wins); it reads that when rclpy loads, so this runs first."""
    if environ.get("NO_COLOR") and "RCUTILS_COLORIZED_OUTPUT" not in environ:
        environ["RCUTILS_COLORIZED_OUTPUT"] = "0"


# import name -> the distribution requirements.txt pins it as, where they differ
_DISTRIBUTIONS = {"cv2": "opencv-python-headless", "yaml": "PyYAML"}


def install_hint(module: str) -> str:
    """Where a missing module comes from: its pip name in requirements.txt (ROS 2 packages from PyPI are named
    ros-<package>; tf2_msgs is built by the scripts, not a wheel)."""
    if module == "tf2_msgs":
        return "built into the environment by scripts/build_interfaces.sh, which ./run.sh and ./test.sh run"
    if module == "rclpy" or module.endswith(("_msgs", "_srvs")) or module.startswith(("rmw", "ament", "rosidl")):
        return f"pip: ros-{module.replace('_', '-')}, pinned in requirements.txt"
    return f"pip: {_DISTRIBUTIONS.get(module, module)}, pinned in requirements.txt"


def missing_package(exc: ModuleNotFoundError) -> str | None:
    """The installable package whose absence ``exc`` reports (``torch`` for ``torch.nn``); None for a module of
    this package (a bug to show, not a package to install)."""
    top = (exc.name or "").split(".")[0]
    return None if not top or top in ("liquid_control", "sim_envs") else top


def needs_package(command: str, module: str) -> str:
    """The one line saying that ``command`` needs the Python package ``module`` and where it comes from."""
    return (
        f"{command}: error: needs the Python package {module!r}, which is not installed here ({install_hint(module)})"
    )


def run(executable: str) -> int:
    """Import the node ``executable`` names and run its ``main`` (which replaces the early signal handlers).

    A node whose imports need a package not installed here (sim_node on a robot installed without the simulator:
    gymnasium, MuJoCo) says which, in one line, and ends with status 1, as ``liquid-control`` does."""
    honour_no_color()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop_before_start)
    try:
        module = importlib.import_module(NODE_MODULES[executable])
    except ModuleNotFoundError as exc:
        missing = missing_package(exc)
        if missing is None:
            raise
        print(needs_package(executable, missing), file=sys.stderr)
        return 1
    return module.main()


def policy_node() -> int:
    """Console script: the policy node (``ros2 run liquid_control policy_node``)."""
    return run("policy_node")


def sim_node() -> int:
    """Console script: the simulated robot (``ros2 run liquid_control sim_node``)."""
    return run("sim_node")


def bag_recorder() -> int:
    """Console script: the rosbag2 recorder (``ros2 run liquid_control bag_recorder``)."""
    return run("bag_recorder")


def takeover_mux() -> int:
    """Console script: policy or operator to the base (``ros2 run liquid_control takeover_mux``)."""
    return run("takeover_mux")


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in NODE_MODULES:
        sys.exit(f"usage: python -m liquid_control.ros.entry {{{','.join(NODE_MODULES)}}} [--ros-args ...]")
    sys.exit(run(sys.argv.pop(1)))  # the node's main reads the rest of sys.argv (its ROS arguments)
