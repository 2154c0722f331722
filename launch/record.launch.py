"""Record a robot's sensor and command topics into a rosbag2 (MCAP) bag: the data of `liquid-control train --bag`.

    ros2 launch liquid_control record.launch.py output:=bags/day1_001 [params_file:=/path/to/robot_policy.yaml]
        [topics:="/camera/image_raw /imu/data /cmd_vel"] [use_sim_time:=false] [duration_s:=0]

By default the camera, IMU and command topics of the policy node's parameter file are recorded, with the QoS
their publishers offer. Stop with Ctrl-C (the bag is finished cleanly). See docs/real_robot.md.
"""

import math

from launch.substitutions import LaunchConfiguration

from liquid_control.ros.graph import launch_actions, launch_description
from liquid_control.ros.recorder_node import record_graph

ARGUMENTS = {
    "output": ("", "bag folder to create; empty: rosbag2_<date>_<time> in the working directory"),
    "params_file": ("", "policy_node parameter file naming the topics; empty: config/rover_policy.yaml"),
    "topics": ("", "space-separated topics overriding the parameter file's"),
    "use_sim_time": ("false", "log times from /clock"),
    "duration_s": ("0", "stop after this many seconds (0: until Ctrl-C)"),
}


def _value(arg: dict, name: str, kind):
    """Launch argument ``name`` as an int, a finite float or a bool (true/false in any case, or 1/0), or a
    ValueError naming it (the same lines are in each launch file)."""
    text = arg[name]
    if kind is bool:
        if text.lower() in ("true", "1", "false", "0"):
            return text.lower() in ("true", "1")
        raise ValueError(f"{name}: must be true or false, got {text!r}")
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"{name}: must be {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name}: must be a finite number, got {text!r}")
    return value


def _nodes(context):
    arg = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    graph = record_graph(
        output=arg["output"],
        params_file=arg["params_file"],
        topics=arg["topics"].split(),
        use_sim_time=_value(arg, "use_sim_time", bool),
        duration_s=_value(arg, "duration_s", float),
    )
    return launch_actions(graph)


def generate_launch_description():
    return launch_description(ARGUMENTS, _nodes)
