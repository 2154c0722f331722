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


def run(executable: str) -> int:
    """Import the node ``executable`` names and run its ``main`` (which replaces the early signal handlers)."""
    honour_no_color()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop_before_start)
    return importlib.import_module(NODE_MODULES[executable]).main()


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
