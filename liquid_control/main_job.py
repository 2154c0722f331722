"""The README's main job (`./run.sh`): the closed-loop rover simulation over ROS 2 with a shipped policy.

Starts the graph of launch/sim.launch.py (sim_node + policy_node as separate processes, real DDS) through
`liquid-control sim`, with the same arguments, and prints each episode's outcome. Without a shipped rover
policy in share/liquid_control/policies it says so and runs the cells demo instead.
"""

from __future__ import annotations

from liquid_control.ros import graph


def add_arguments(parser):
    """The options of ``liquid-control sim``."""
    graph.add_arguments(parser)


def run(args) -> int:
    """Run the closed loop over ROS 2, or the cells demo when no policy is given or shipped; the exit code."""
    from liquid_control.conventions.params import WORLD_POLICIES
    from liquid_control.paths import policies_dir

    _, default_policy = WORLD_POLICIES[args.world]
    if not args.policy and not (policies_dir() / default_policy).is_file():
        print(
            f"no shipped policy {policies_dir() / default_policy} yet (train one with `liquid-control train`); "
            "running the cells demo instead"
        )
        from liquid_control.cells import demo

        parser = __import__("argparse").ArgumentParser()
        demo.add_arguments(parser)
        return demo.run(parser.parse_args([]))

    def announce():  # once the arguments are checked: a usage error is not preceded by this line
        print(
            f"closed loop over ROS 2: {args.world}, policy {args.policy or default_policy}, "
            f"shift {args.shift or 'none'}, seed {args.seed}, "
            f"{f'{args.episodes} episode(s)' if args.episodes else 'episodes until stopped'}",
            flush=True,
        )

    return graph.run(args, prog="liquid-control main", announce=announce)
