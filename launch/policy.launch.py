"""The liquid policy node alone, for a real robot: a managed node configured from a parameter file.

    ros2 launch liquid_control policy.launch.py [params_file:=/path/to/robot_policy.yaml]
        [policy:=/path/to/policy.pt|.onnx] [use_sim_time:=true|false] [autostart:=true|false]

use_sim_time and autostart, where given, override the parameter file's; else the file's hold (false where it sets
none). Without autostart the node waits for a lifecycle manager (configure, activate); remap its topics in the
parameter file (camera_topic, imu_topic, command_topic). The node list comes from
liquid_control.ros.graph.policy_graph.
"""

from launch.substitutions import LaunchConfiguration

from liquid_control.ros.graph import launch_actions, launch_argument, launch_description, policy_graph

ARGUMENTS = {
    "params_file": ("", "policy_node parameter file; empty: share/liquid_control/config/rover_policy.yaml"),
    "policy": ("", "policy file overriding the parameter file's"),
    "use_sim_time": ("", "use /clock (empty: the parameter file's, else false)"),
    "autostart": ("", "configure and activate without a lifecycle manager (empty: the parameter file's, else false)"),
}


def _nodes(context):
    arg = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    graph = policy_graph(
        params_file=arg["params_file"],
        policy=arg["policy"],
        use_sim_time=launch_argument(arg, "use_sim_time", bool, optional=True),
        autostart=launch_argument(arg, "autostart", bool, optional=True),
    )
    return launch_actions(graph)


def generate_launch_description():
    return launch_description(ARGUMENTS, _nodes)
