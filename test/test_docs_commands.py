"""The commands the other pages quote parse with today's command lines: every ``liquid-control ...``, ``python
scripts/...``, ``python benchmarks/...``, ``python -m ...``, ``ros2 launch liquid_control ...`` and
``ros2 run liquid_control NODE``, ``ros2 param set`` and ``scripts/*.sh`` of docs/ (every page), README.md,
benchmarks/README.md and the model cards, in their bash blocks and in their prose. README.md's bash blocks also run
in test_readme_commands.py; the other pages quote commands of long jobs and of committed measurements, so they are
parsed, not run: every option is one the command has, spelled out (argparse would take an abbreviation such as
``--seed`` for ``--seeds``), with a value of its type and among its choices; shifts parse; ``--set`` keys and values
are valid for the config; the files, launch arguments, node executables and ROS parameters named exist. An option
the prose names alone (``--resume``, ``record --compress``) is one of the command it goes with, or of a command
or script the page names.

The pages' notation: ``[...]`` around options marks them optional (checked as given), ``a|b`` alternatives (the
first is checked), ``<...>``, ``$K``, ``...`` and capitals (``N``, ``RUN``) placeholders (any value of the
option's type). A bash block holds whole commands (parsed as a user runs them); a command in the prose may name
an option alone or leave out required ones (``liquid-control eval --bag``): its options and values are checked.
"""

import argparse
import os
import re
import runpy
import shlex
import sys
import warnings
from pathlib import Path

import pytest
import yaml
from test_readme_commands import _policy_node_check, _ros2_launch_check, command_lines, fenced_blocks

from liquid_control import cli

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(
    {
        ROOT / "README.md",
        *(ROOT / "docs").rglob("*.md"),
        ROOT / "benchmarks" / "README.md",
        *(ROOT / "policies").glob("*.md"),
    }
)
COMMAND = re.compile(
    r"(liquid-control|(\.venv/bin/)?python3? (-m (liquid_control|sim_envs)\.[\w.]+|(scripts|benchmarks)/\w+\.py)"
    r"|ros2 launch liquid_control|policy_node --ros-args|ros2 run liquid_control \w+|ros2 param set /\w+"
    r"|(\./)?scripts/\w+\.sh)( |$)"
)
SHARE = "$(ros2 pkg prefix --share liquid_control)/"  # the installed share folder: the checkout's files here
SCRIPT = re.compile(r"(\./)?scripts/\w+\.sh( |$)")
ASSIGNMENT = r"""\w+=(?:"[^"]*"|'[^']*'|\S*)"""  # VAR=value before a command
PLACEHOLDER = re.compile(r"<[^>]*>|\$\{?\w+\}?|\.\.\.|[A-Z][A-Z0-9_]*")


def page_commands(path: Path) -> list[tuple[str, str]]:
    """("fenced" | "prose", command) of a page: its bash blocks' commands (a line's ``&&``, ``;`` and ``|``
    parts; environment assignments and a trailing ``&`` dropped), a model card's training command and the page's
    backticked spans that are commands."""
    text = path.read_text()
    found = []
    for lang, code in fenced_blocks(text):
        if lang != "bash":
            continue
        for line in command_lines(code):
            for part in re.split(r" && | \| |; ", line):
                part = part.strip().removeprefix("/usr/bin/time -v ").removesuffix("&").strip()
                command = re.sub(rf"^({ASSIGNMENT} )+", "", part)
                if COMMAND.match(command):  # a script's settings (environment variables) stay, for check_command
                    found.append(("fenced", part if SCRIPT.match(command) else command))
    if text.startswith("---\n"):  # a model card's front matter: the command that trained the policy
        command = (yaml.safe_load(text.split("---\n")[1]).get("training") or {}).get("command")
        found += [("fenced", command)] if command else []
    prose = re.sub(r"^ *```.*?^ *```", "", text, flags=re.S | re.M)
    for span in re.findall(r"`([^`]+)`", prose):
        span = " ".join(span.split())
        command = re.sub(rf"^({ASSIGNMENT} )+", "", span)
        if COMMAND.match(command):
            found.append(("prose", span if SCRIPT.match(command) else command))
    return found


def unnotated(command: str) -> list[str]:
    """The command's arguments with the pages' notation taken off: optional brackets, alternatives (the first),
    an elision on its own dropped (placeholders stay, for :func:`fill_placeholders`)."""
    command = re.sub(r"(^| )\[(-[^\]]*)\]", r"\1\2", command)  # [--flag V] -> --flag V (not --set k=[1,2])
    command = re.sub(r"(^| )\[(-[^\]]*)\]", r"\1\2", command)  # nested once: [--a [--b]]
    argv = shlex.split(command.replace(SHARE, ""))
    argv = [re.sub(r"^([\w.]+)(\|[\w.]+)+$", r"\1", a) for a in argv]  # onnx|torch, 3|4
    return [a for a in argv if a != "..." and not re.fullmatch(r"\.\.\.[\w -]*\.\.\.", a)]


def is_placeholder(value: str) -> bool:
    return bool(PLACEHOLDER.fullmatch(value)) or "<" in value or "..." in value


def option_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {option: action for action in parser._actions for option in action.option_strings}


def fill_placeholders(parser: argparse.ArgumentParser, args: list[str]) -> list[str]:
    """A placeholder value of a typed option becomes a value of that type (``--seed S`` -> ``--seed 1``)."""
    actions, filled = option_actions(parser), []
    for i, arg in enumerate(args):
        before = actions.get(args[i - 1]) if i else None
        typed = before is not None and before.type in (int, float) and before.nargs is None
        filled.append("1" if typed and is_placeholder(arg) else arg)
    return filled


def check_options(parser: argparse.ArgumentParser, args: list[str], where: str) -> argparse.Namespace:
    """Every option of ``args`` is one of ``parser``'s, written out, and its value (when given) converts to the
    option's type and is one of its choices: a prose command's check, which may leave out required ones. Returns
    the values given, each option's as a list."""
    actions, given = option_actions(parser), argparse.Namespace()
    for i, arg in enumerate(args):
        if not arg.startswith("--"):
            continue
        name, eq, inline_value = arg.partition("=")
        assert name in actions, f"{where}: {parser.prog} has no option {name}"
        action = actions[name]
        value = inline_value if eq else (args[i + 1] if i + 1 < len(args) else None)
        if action.nargs == 0 or value is None or (not eq and value.startswith("--")):
            continue
        converted = action.type(value) if action.type else value
        assert action.choices is None or converted in action.choices, f"{where}: {name} {value}"
        getattr(given, action.dest, None) or setattr(given, action.dest, [])
        getattr(given, action.dest).append(converted)
    return given


class Parsed(Exception):
    """What a script's parser made of its arguments (raised in place of running the script)."""


def script_parse(target: str, args: list[str], module: bool, monkeypatch) -> argparse.Namespace:
    """Parse ``args`` with the parser a script (or ``python -m`` module) builds in its main, without running it:
    run up to its ``parse_args``, which ends it (a script that has none would run: refused first)."""
    return _run_to_parse_args(target, args, module, monkeypatch)[0]


SCRIPT_OPTIONS: dict[str, set[str]] = {}  # target -> its options (sub-commands' too), built once


def script_options(target: str, module: bool, monkeypatch) -> set[str]:
    """The options a script (or ``python -m`` module) takes, its sub-commands' too, read off its parser without
    parsing anything."""
    if target not in SCRIPT_OPTIONS:
        SCRIPT_OPTIONS[target] = parser_options(_run_to_parse_args(target, None, module, monkeypatch)[1])
    return SCRIPT_OPTIONS[target]


def parser_options(parser: argparse.ArgumentParser) -> set[str]:
    options = set(option_actions(parser))
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            options |= {option for sub in action.choices.values() for option in parser_options(sub)}
    return options


def _run_to_parse_args(target: str, args: list[str] | None, module: bool, monkeypatch):
    """(namespace, parser) of a script's ``parse_args``: ``args`` parsed, or (None: nothing parsed) the parser only."""
    import importlib.util

    source = Path(importlib.util.find_spec(target).origin if module else ROOT / target).read_text()
    assert ".parse_args(" in source, f"{target}: no argparse parse_args to stop at"
    parse = argparse.ArgumentParser.parse_args

    def parsed_only(self, args=None, namespace=None):
        commands = [a.choices.values() for a in self._actions if isinstance(a, argparse._SubParsersAction)]
        for parser in [self, *(p for c in commands for p in c)]:  # a sub-command's parser too
            parser.allow_abbrev = False  # an option written out, as check_options asks of liquid-control's
        raise Parsed(None if only_parser else parse(self, args, namespace), self)

    only_parser = args is None
    with monkeypatch.context() as patch, warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # runpy: a module of an imported package runs as __main__
        patch.setattr(argparse.ArgumentParser, "parse_args", parsed_only)
        patch.setattr(sys, "argv", [target, *(args or [])])
        patch.setattr(os, "environ", os.environ.copy())  # the scripts' setdefault("MUJOCO_GL", ...) stays theirs
        with pytest.raises(Parsed) as parsed:
            if module:
                runpy.run_module(target, run_name="__main__")
            else:
                runpy.run_path(str(ROOT / target), run_name="__main__")
    return parsed.value.args


def check_values(parsed: argparse.Namespace, where: str) -> None:
    """Shifts parse, shipped files named exist, ``--set``/``--train-set`` items are valid for the config."""
    import sim_envs

    for name, value in vars(parsed).items():
        for item in value if isinstance(value, list) else [value]:
            if not isinstance(item, str) or is_placeholder(item):
                continue
            if name == "shift" and item:
                sim_envs.parse_shift(item)
            if re.match(r"(policies|config|docs|scripts)/", item) and "*" not in item:
                assert (ROOT / item).exists(), f"{where}: {item} does not exist"
    overrides = getattr(parsed, "overrides", None) or getattr(parsed, "train_set", None)
    if overrides:
        from liquid_control.policy.config import apply_overrides, load_config
        from liquid_control.training.cli import parse_overrides

        config = getattr(parsed, "config", None) or "policies/configs/cfc_ncp_rover.yaml"
        config = config[0] if isinstance(config, list) else config
        if not is_placeholder(config):
            values = {k: v for k, v in parse_overrides(overrides).items() if not is_placeholder(str(v))}
            apply_overrides(load_config(ROOT / config), values)


def check_command(kind: str, command: str, where: str, monkeypatch) -> None:
    argv = unnotated(command)
    if argv[0] == "liquid-control":
        if len(argv) == 1 or argv[1].startswith("-"):
            assert argv[1:] in ([], ["--help"], ["--version"]), where
            return
        assert argv[1] in cli.COMMANDS, f"{where}: no command {argv[1]!r}"
        _, parser = cli.command_parser(argv[1])
        args = fill_placeholders(parser, argv[2:])
        given = check_options(parser, args, where)
        check_values(parser.parse_args(args) if kind == "fenced" else given, where)
    elif argv[0].endswith(("python", "python3")):
        module = argv[1] == "-m"
        target, args = (argv[2], argv[3:]) if module else (argv[1], argv[2:])
        if kind == "prose" and not args:  # the script named
            assert module or (ROOT / target).is_file(), f"{where}: no {target}"
        else:
            check_values(script_parse(target, args, module, monkeypatch), where)
    elif argv[:2] == ["ros2", "launch"]:
        _ros2_launch_check([a for a in argv if not is_placeholder(a.partition(":=")[2]) or ":=" not in a], ROOT)
    elif argv[0] == "policy_node":
        _policy_node_check(argv)
    elif argv[:2] == ["ros2", "run"]:
        check_node_command(argv[3], argv[4:], where)
    elif argv[:3] == ["ros2", "param", "set"]:
        node, name = argv[3].lstrip("/"), argv[4] if len(argv) > 4 else "..."
        assert is_placeholder(name) or name in node_parameters(node), f"{where}: {node} has no parameter {name!r}"
    else:  # scripts/*.sh: its settings are environment variables, each one it reads
        settings = [a.partition("=")[0] for a in argv[: next(i for i, a in enumerate(argv) if "=" not in a)]]
        script = ROOT / argv[len(settings)].removeprefix("./")
        assert script.is_file(), f"{where}: no {script.relative_to(ROOT)}"
        unread = [name for name in settings if not re.search(rf"\$\{{{name}\b", script.read_text())]
        assert not unread, f"{where}: {script.name} reads no {', '.join(unread)}"


def node_parameter_tables() -> dict[str, dict]:
    """Each node executable setup.py installs -> the table of the parameters it declares."""
    from liquid_control.conventions.params import POLICY_NODE_PARAMETERS
    from liquid_control.ros.recorder_node import RECORDER_PARAMETERS
    from liquid_control.ros.sim_node import SIM_NODE_PARAMETERS
    from liquid_control.ros.takeover_mux import MUX_PARAMETERS

    tables = {
        "policy_node": POLICY_NODE_PARAMETERS,
        "sim_node": SIM_NODE_PARAMETERS,
        "bag_recorder": RECORDER_PARAMETERS,
        "takeover_mux": MUX_PARAMETERS,
    }
    installed = set(re.findall(r'"(\w+) = liquid_control\.ros\.', (ROOT / "setup.py").read_text()))
    assert installed == set(tables), installed  # a node executable added: add its parameter table here
    return tables


def node_parameters(executable: str) -> set[str]:
    """The ROS parameters a node executable of setup.py declares (``use_sim_time``: every node's)."""
    tables = node_parameter_tables()
    assert executable in tables, f"setup.py installs no node executable {executable!r}"
    return {"use_sim_time", *tables[executable]}


def check_node_command(executable: str, args: list[str], where: str) -> None:
    """``ros2 run liquid_control NODE [--ros-args --params-file F -p name:=value -r from:=to ...]``: NODE an
    executable setup.py installs, F a file of the checkout (the installed share folder's), each name its parameter."""
    parameters = node_parameters(executable)
    if not args:
        return
    assert args[0] == "--ros-args" and len(args) % 2 == 1, f"{where}: --ros-args then flag-value pairs"
    for flag, value in zip(args[1::2], args[2::2]):
        assert flag in ("--params-file", "-p", "-r"), f"{where}: {flag}"
        if flag == "--params-file" and not (is_placeholder(value) or value.startswith("/path/")):
            assert (ROOT / value).is_file(), f"{where}: no {value}"
        if flag == "-p":
            name = value.partition(":=")[0]
            assert name in parameters, f"{where}: {executable} has no parameter {name!r}"


FOREIGN_OPTIONS = {  # other tools' options the pages name alone: pip's, ros2 bag record's, ROS's, SLURM's
    "--user",
    "--prefix",
    "--storage-preset-profile",
    "--compression-mode",
    "--ros-args",
    "--signal",
}
NAMED_SCRIPT = re.compile(r"\b((?:scripts|benchmarks)/\w+\.py)\b|python3? -m ((?:liquid_control|sim_envs)\.[\w.]+)")


def options_alone(path: Path) -> list[tuple[str | None, str]]:
    """(command or None, option) of a page's prose spans that name options without a whole command: ``--resume``,
    ``--workers 2 --threads 2`` (None: of any command the page names) and ``record --compress`` (of that command)."""
    prose = re.sub(r"^ *```.*?^ *```", "", path.read_text(), flags=re.S | re.M)
    found = []
    for span in re.findall(r"`([^`]+)`", prose):
        command = re.match(rf"({'|'.join(cli.COMMANDS)}) --", span)
        if span.startswith("--") or command:
            found += [(command and command.group(1), o) for o in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", span)]
    return found


def test_the_pages_name_options_alone():
    """The pages hold what the next test checks."""
    assert sum(len(options_alone(page)) for page in PAGES) >= 150


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_option_the_prose_names_alone_exists(page, monkeypatch):
    """An option named without its command line (`--resume`, `record --compress`) is one the command it goes with
    takes, or one of a liquid-control command, or of a script or module the page names; the commands' own lines are
    checked in the test above."""
    own = {name: set(option_actions(cli.command_parser(name)[1])) for name in cli.COMMANDS}
    known = {*FOREIGN_OPTIONS, *option_actions(cli.build_parser()), *(o for options in own.values() for o in options)}
    for script, module in set(NAMED_SCRIPT.findall(page.read_text())):
        known |= script_options(script or module, not script, monkeypatch)
    problems = [
        f"{command}: no option {option}" if command else f"{option}: an option of no command or script the page names"
        for command, option in options_alone(page)
        if option not in (own[command] if command else known)
    ]
    assert not problems, problems


def test_the_pages_quote_commands():
    """The pages hold what this test checks (a changed notation that hid them all would pass the next test)."""
    counts = {kind: 0 for kind in ("fenced", "prose")}
    for page in PAGES:
        for kind, _ in page_commands(page):
            counts[kind] += 1
    assert counts["fenced"] >= 60 and counts["prose"] >= 150, counts


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_command_of_the_docs_parses(page, monkeypatch, capsys):
    problems = []
    for kind, command in page_commands(page):
        where = f"{page.relative_to(ROOT)}: {command}"
        try:
            check_command(kind, command, where, monkeypatch)
        except (AssertionError, Exception, SystemExit) as exc:  # SystemExit: argparse's usage error
            said = capsys.readouterr().err.strip().splitlines()[-1:] if isinstance(exc, SystemExit) else [str(exc)]
            problems.append(f"{where}\n    {' '.join(said)}")
    assert not problems, "\n".join(problems)
