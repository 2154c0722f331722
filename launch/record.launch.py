"""Record a robot's sensor and command topics into a rosbag2 (MCAP) bag: the data of `liquid-control train --bag`.

    ros2 launch liquid_control record.launch.py output:=bags/day1_001 [params_file:=/path/to/robot_policy.yaml]
        [topics:="/camera/image_raw /imu/data /cmd_vel"] [use_sim_time:=false] [duration_s:=0]
        [max_bag_size:=0] [max_bag_duration:=0] [repeat_latched:=false]

By default every input topic of the parameter file's policy (camera, IMU, wheel encoders, the balancer's target:
whichever it reads) and its command topic are recorded, with the QoS their publishers offer. Stop with Ctrl-C
(the bag is finished cleanly). See docs/real_robot.md.
"""

from launch.substitutions import LaunchConfiguration

from liquid_control.ros.graph import launch_actions, launch_argument, launch_description
from liquid_control.ros.recorder_node import record_graph

ARGUMENTS = {
    "output": ("", "bag folder to create; empty: rosbag2_<date>_<time> in the working directory"),
    "params_file": (
        "",
        "policy_node parameter file: its policy's input topics and command topic; empty: config/rover_policy.yaml",
    ),
    "topics": ("", "space-separated topics overriding the parameter file's"),
    "use_sim_time": ("false", "log times from /clock"),
    "duration_s": ("0", "stop after this many seconds (0: until Ctrl-C)"),
    "max_bag_size": (
        "0",
        "bytes: split the bag into <bag>_0.mcap, <bag>_1.mcap ... of about this size, at least 1048576 (0: no split)",
    ),
    "max_bag_duration": (
        "0",
        "seconds: split the bag into files of this much recording each, at least 1 (0: no split)",
    ),
    "repeat_latched": ("false", "split bag: start each file with the latched topics' last messages (/tf_static ...)"),
}


def _nodes(context):
    arg = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    graph = record_graph(
        output=arg["output"],
        params_file=arg["params_file"],
        topics=arg["topics"].split(),
        use_sim_time=launch_argument(arg, "use_sim_time", bool),
        duration_s=launch_argument(arg, "duration_s", float),
        max_bag_size=launch_argument(arg, "max_bag_size", int),
        max_bag_duration=launch_argument(arg, "max_bag_duration", float),
        repeat_latched=launch_argument(arg, "repeat_latched", bool),
    )
    return launch_actions(graph)


def generate_launch_description():
    return launch_description(ARGUMENTS, _nodes)
