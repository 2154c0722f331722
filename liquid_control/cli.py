"""`liquid-control` command line: one entry point, one sub-command per job.

Each sub-command lives with the code it drives and is imported only when used, so `liquid-control --help`
is fast and a deployment without the training stack still has `sim`/`export`.
A sub-command module provides ``add_arguments(parser)`` and ``run(args) -> int``; ``args.command_line`` is the command
as a shell spells it (``liquid-control eval ...``, also for ``main([...])`` from a script), for a run's provenance.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
import textwrap

from liquid_control import __version__
from liquid_control.processes import (
    EXIT_BROKEN_PIPE,
    Terminated,
    status_of_process_command,
    stderr_is_terminal,
    stdout_reader_gone,
)
from liquid_control.ros.entry import honour_no_color, missing_package, needs_package, ros_environment_problem

# name -> (module, one-line help)
EXIT_STATUS_HELP = textwrap.fill(
    "exit status: 0 done (failed episodes are an outcome, not an error); 1 a failure while running; 2 refused: a "
    "usage mistake or an input it cannot use; 3 / 4 (sim, main) --timeout expired / another graph on the ROS "
    f"domain; 130 / 143 stopped by SIGINT / SIGTERM; {EXIT_BROKEN_PIPE} stdout's reader went away. All of it, and "
    "what goes to stdout and stderr: README.md, 'In scripts: exit status and output'.",
    width=100,
    break_on_hyphens=False,
)
COMMANDS = {
    "main": ("liquid_control.main_job", "the README's main job: closed-loop rover simulation with a shipped policy"),
    "demo": ("liquid_control.cells.demo", "short demo of the liquid cells on irregularly sampled data"),
    "train": ("liquid_control.training.cli", "collect expert demonstrations, run DAgger and behaviour cloning"),
    "eval": ("liquid_control.evaluation.cli", "out-of-distribution evaluation: policies x shifts x seeds -> report"),
    "sim": ("liquid_control.ros.graph", "start sim_node + policy_node (the graph of launch/sim.launch.py)"),
    "export": ("liquid_control.runtime.export", "export a policy as a single-step ONNX model for deployment"),
    "view": ("liquid_control.ros.view", "watch a running graph: live in Foxglove, or as a picture of its topics"),
    "record": ("liquid_control.ros.recorder_node", "record topics into a rosbag2 (MCAP) bag, or expert episodes"),
    "replay": ("liquid_control.ros.replay", "play bags into a running policy_node and record its commands"),
}
# the commands that load rclpy (the ROS 2 wheels' libraries)
ROS_COMMANDS = ("main", "sim", "view", "record", "replay")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help with every default shown and choices without the empty string that means "not set".

    An option whose default is unset (``""``, ``None``, ``False``) or whose help already names its default
    gets no ``(default: ...)``; descriptions and epilogs keep their line breaks (examples)."""

    @staticmethod
    def shows_default(action) -> bool:
        """Whether ``action``'s help gets ``(default: ...)``: an option with a set default its help does not name."""
        default = action.default
        unset = default is None or default is False or default is argparse.SUPPRESS
        unset = unset or (isinstance(default, (str, list, tuple)) and not default)  # 0 and 0.0 are shown
        return bool(action.option_strings) and not unset and "default" not in (action.help or "")

    def _get_help_string(self, action):
        text = action.help or ""
        if not self.shows_default(action):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"

    def _metavar_formatter(self, action, default_metavar):
        if action.metavar is None and action.choices is not None and "" in action.choices:
            shown = "{" + ",".join(str(c) for c in action.choices if c != "") + "}"
            return lambda size: (shown,) * size
        return super()._metavar_formatter(action, default_metavar)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: the sub-command names and their one-line help (their options load on use)."""
    parser = argparse.ArgumentParser(
        prog="liquid-control",
        description="Liquid neural network (LTC/CfC) policies for robots: train, evaluate, simulate, deploy.",
        epilog=EXIT_STATUS_HELP,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"liquid-control {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def command_parser(name: str):
    """(module, argparse parser) of the sub-command ``name`` (imports only that module)."""
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    sub = argparse.ArgumentParser(prog=f"liquid-control {name}", description=help_text)
    module.add_arguments(sub)
    sub.formatter_class = HelpFormatter  # also over a module's RawDescriptionHelpFormatter (HelpFormatter is one)
    for action in sub._actions:  # argparse prints no help line, so no default, for options without help
        if action.help is None and HelpFormatter.shows_default(action):
            action.help = "(default: %(default)s)"
        if action.dest == "no_progress":  # what main() does without it, said alike by every command that has it
            action.help = f"{action.help or 'no progress bar'}; without it, bars only when stderr is a terminal"
    return module, sub


def main(argv: list[str] | None = None) -> int:
    """`liquid-control COMMAND [options]`: parse the command's options and run it; returns the exit status.

    Without ``argv`` (the process's own command: the console script, ``python -m liquid_control.cli``) SIGINT and
    SIGTERM end the process at once with the command's status once it has returned
    (:func:`~liquid_control.processes.status_of_process_command`): a Ctrl-C during the interpreter's exit no
    longer turns a finished command's status into 130, and an exit that hangs still ends on them."""
    if argv is not None:
        return _main(list(argv))
    return status_of_process_command(lambda: _main(sys.argv[1:]))


def _main(argv: list[str]) -> int:
    honour_no_color()  # before any command loads rclpy
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    if argv[0] == "--version":
        print(f"liquid-control {__version__}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        parser.error(f"unknown command {name!r}; choose from {', '.join(COMMANDS)}")
    problem = ros_environment_problem() if name in ROS_COMMANDS else None
    if problem:  # before the command's module loads rclpy
        print(f"liquid-control {name}: error: {problem}", file=sys.stderr)
        return 1
    try:
        module, sub = command_parser(name)
        args = sub.parse_args(argv[1:])
        # what ran, as a shell would spell it, for a run's provenance: the argv given, also from Python (a script's
        # cli.main([...]); sys.argv is then the script's own)
        args.command_line = shlex.join(["liquid-control", *argv])
        if getattr(args, "no_progress", None) is False and not stderr_is_terminal():
            args.no_progress = True  # a bar redrawn with carriage returns fills a log with its every state
        return int(module.run(args) or 0)
    except ImportError as exc:
        stop = exc.__cause__ or exc.__context__
        if isinstance(stop, KeyboardInterrupt):  # Ctrl-C during an extension's import (onnxruntime wraps it)
            print(f"liquid-control {name}: {'terminated' if isinstance(stop, Terminated) else 'interrupted'}",
                  file=sys.stderr)  # fmt: skip
            return 143 if isinstance(stop, Terminated) else 130
        missing = missing_package(exc)
        if missing is None:
            raise
        # e.g. torch on a robot that only runs exported policies: `export` and `demo` need the training stack; or a
        # sourced ROS installation's rclpy for another Python, first on PYTHONPATH
        whole_stack = name in ("main", "sim", "train", "eval")  # the simulator, training, evaluation
        print(needs_package(f"liquid-control {name}", missing, exc, whole_stack), file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before a command's own handler (e.g. while torch imports): no traceback
        print(f"liquid-control {name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of stdout went away (`liquid-control record --info BAG | head`)
        return stdout_reader_gone()


if __name__ == "__main__":
    sys.exit(main())
