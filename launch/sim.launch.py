"""Closed-loop simulation: sim_node (a sim_envs world) + policy_node (a liquid policy), over ROS 2.

    ros2 launch liquid_control sim.launch.py [world:=LiquidRover-v0] [policy:=cfc_ncp_rover.pt]
        [shift:=season=winter,lighting=dusk] [use_sim_time:=false] [real_time_factor:=1.0] [lockstep:=false]
        [publish_mode:=per_update|fixed_rate] [control_rate_hz:=0.0 (the parameter file's)] [backend:=auto|torch|onnx]
        [seed:=0] [episodes:=1] [record_bag:=<folder>]

The node list comes from liquid_control.ros.graph.sim_graph, the same description `liquid-control sim`
starts as processes where ros2 launch is not available; it refuses, naming the argument, a policy of another
world, a backend or control rate the policy node could not use, and lockstep with fixed-rate commands.
"""

from launch.substitutions import LaunchConfiguration

from liquid_control.ros.graph import launch_actions, launch_argument, launch_description, sim_graph

ARGUMENTS = {
    "world": ("LiquidRover-v0", "LiquidRover-v0 | LiquidBalance-v0 | LiquidBalanceNav-v0"),
    "policy": ("", "policy file (.pt/.onnx); empty: the world's shipped policy from its parameter file"),
    "shift": ("", "shift preset or spec (sim_envs.parse_shift); empty: the training distribution"),
    "use_sim_time": ("false", "run both nodes on /clock published by sim_node"),
    "real_time_factor": ("1.0", "sim seconds per wall second (!= 1 implies use_sim_time)"),
    "lockstep": ("false", "the sim waits for each update's command (implies use_sim_time)"),
    "publish_mode": ("", "per_update | fixed_rate; empty: the parameter file's"),
    "control_rate_hz": ("0.0", "command rate in fixed_rate mode; 0: the parameter file's"),
    "backend": ("", "auto | torch | onnx: the policy node's backend; empty: the parameter file's"),
    "seed": ("0", "seed of the first episode"),
    "episodes": ("1", "episodes to run (0: forever)"),
    "record_bag": ("", "folder: sim_node records each episode into <folder>/episode_<seed> (MCAP); empty: none"),
}


def _nodes(context):
    arg = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    graph = sim_graph(
        world=arg["world"],
        policy=arg["policy"],
        shift=arg["shift"],
        use_sim_time=launch_argument(arg, "use_sim_time", bool),
        real_time_factor=launch_argument(arg, "real_time_factor", float),
        seed=launch_argument(arg, "seed", int),
        episodes=launch_argument(arg, "episodes", int),
        publish_mode=arg["publish_mode"],
        control_rate_hz=launch_argument(arg, "control_rate_hz", float),
        backend=arg["backend"],
        lockstep=launch_argument(arg, "lockstep", bool),
        record_bag=arg["record_bag"],
    )
    return launch_actions(graph)


def generate_launch_description():
    return launch_description(ARGUMENTS, _nodes)
