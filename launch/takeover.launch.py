"""A supervised round on a robot: the policy drives through takeover_mux, the operator follows on the joystick.

    ros2 launch liquid_control takeover.launch.py policy:=runs/round0/policy.pt output:=bags/round1_001
        [params_file:=/path/to/robot_policy.yaml] [base_topic:=base/cmd_vel]
        [operator_command_type:=twist] [operator_share:=0.3] [seed:=0] [use_sim_time:=true|false]

The simulated rounds' layout: the joystick publishes on the parameter file's command_topic (cmd_vel: the labels,
where the demonstrations have them, so every bag trains with the same config), the policy node (configured and
activated) on policy/cmd_vel, and the mux sends one of them to the base on base_topic (remap the base driver's
input there). The recorder writes the sensors, the labels, the base's and the policy's commands. Hold the
joystick's enable button throughout: it is the deadman. See docs/real_robot.md, section 6.
"""

from launch.substitutions import LaunchConfiguration

from liquid_control.ros.graph import launch_actions, launch_argument, launch_description
from liquid_control.ros.takeover_mux import round_graph

ARGUMENTS = {
    "params_file": ("", "policy_node parameter file; empty: share/liquid_control/config/rover_policy.yaml"),
    "policy": ("", "policy file overriding the parameter file's"),
    "base_topic": ("base/cmd_vel", "what the base executes (remap the base driver's input here)"),
    "operator_command_type": ("twist", "twist | twist_stamped: the joystick's message type"),
    "operator_share": ("0.0", "the operator also drives each update with this probability (DAgger's beta)"),
    "seed": ("0", "seed of the operator-share draws"),
    "output": ("", "bag folder to create; empty: rosbag2_<date>_<time> in the working directory"),
    "use_sim_time": ("", "use /clock, every node of the round (empty: the parameter file's, else false)"),
}


def _nodes(context):
    arg = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    graph = round_graph(
        params_file=arg["params_file"],
        policy=arg["policy"],
        base_topic=arg["base_topic"],
        operator_command_type=arg["operator_command_type"],
        operator_share=launch_argument(arg, "operator_share", float),
        seed=launch_argument(arg, "seed", int),
        output=arg["output"],
        use_sim_time=launch_argument(arg, "use_sim_time", bool, optional=True),
    )
    return launch_actions(graph)


def generate_launch_description():
    return launch_description(ARGUMENTS, _nodes)
