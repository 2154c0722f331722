"""`liquid-control` command line: one entry point, one sub-command per job.

Each sub-command lives with the code it drives and is imported only when used, so `liquid-control --help`
is fast and a deployment without the training stack still has `sim`/`export`.
A sub-command module provides ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS = {
    "main": ("liquid_control.main_job", "the README's main job: closed-loop rover simulation with a shipped policy"),
    "demo": ("liquid_control.cells.demo", "short demo of the liquid cells on irregularly sampled data"),
    "train": ("liquid_control.training.cli", "collect expert demonstrations, run DAgger and behaviour cloning"),
    "eval": ("liquid_control.evaluation.cli", "out-of-distribution evaluation: policies x shifts x seeds -> report"),
    "sim": ("liquid_control.ros.graph", "start sim_node + policy_node (the graph of launch/sim.launch.py)"),
    "export": ("liquid_control.runtime.export", "export a policy as a single-step ONNX model for deployment"),
    "record": ("liquid_control.ros.recorder_node", "record topics into a rosbag2 (MCAP) bag, or expert episodes"),
    "replay": ("liquid_control.ros.replay", "play bags into a running policy_node and record its commands"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="liquid-control",
        description="Liquid neural network (LTC/CfC) policies for robots: train, evaluate, simulate, deploy.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    name = argv[0]
    if name not in COMMANDS:
        parser.error(f"unknown command {name!r}; choose from {', '.join(COMMANDS)}")
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    sub = argparse.ArgumentParser(prog=f"liquid-control {name}", description=help_text)
    module.add_arguments(sub)
    args = sub.parse_args(argv[1:])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
