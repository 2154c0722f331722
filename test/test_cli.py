"""The `liquid-control` front end itself: what every command shares."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from liquid_control import cli
from liquid_control.ros import entry

REPO = Path(__file__).resolve().parents[1]

PRINTS_A_LOT = """
import argparse, sys, types
from liquid_control import cli
command = types.SimpleNamespace(run=lambda args: [print("x" * 1000) for _ in range(100_000)])
cli.command_parser = lambda name: (command, argparse.ArgumentParser())
sys.exit(cli.main(["eval"]))
"""


def test_a_reader_that_stops_early_ends_the_command_quietly():
    """Before: `liquid-control record --info BAG | head -3` ended in a BrokenPipeError traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-c", PRINTS_A_LOT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout.read(10) == "x" * 10
    proc.stdout.close()  # as `head` does after its lines
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 141, err  # 128 + SIGPIPE, what a shell reports for `... | head`
    assert "Traceback" not in err and "BrokenPipeError" not in err


OTHER_PIPE_BREAKS = """
import argparse, sys, types
from liquid_control import cli
def run(args):
    raise BrokenPipeError(32, "Broken pipe (a child process's)")
cli.command_parser = lambda name: (types.SimpleNamespace(run=run), argparse.ArgumentParser())
sys.exit(cli.main(["eval"]))
"""


def test_another_broken_pipe_is_not_taken_for_a_reader_leaving():
    """A review: every BrokenPipeError became a silent exit 141, whichever pipe or socket broke."""
    proc = subprocess.run([sys.executable, "-c", OTHER_PIPE_BREAKS], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "a child process's" in proc.stderr


def test_a_tool_the_docs_pipe_ends_quietly_when_its_reader_went_away():
    """Before: `python -m liquid_control.ros.robot_description | head -1` (docs/viewing.md: it prints the URDFs)
    ended in a BrokenPipeError traceback; it ends as liquid-control does (processes.exit_status_of, which the
    scripts and benchmarks use too)."""
    read, write = os.pipe()
    os.close(read)  # a reader gone before the first line: every write fails
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "liquid_control.ros.robot_description"],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            cwd=REPO,
        )
    finally:
        os.close(write)
    assert proc.returncode == 141, proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr


def test_demo_refuses_iterations_and_seeds_it_cannot_run(capsys):
    """Before: `liquid-control demo --iterations -5` printed "after -5 iterations" with exit 0, and
    `--seed 99999999999999999999` ended in torch's "Overflow when unpacking long long" traceback."""
    from liquid_control import cli

    for argv, problem in (
        (["--iterations", "-5"], "--iterations must be >= 1, got -5"),
        (["--iterations", "0"], "--iterations must be >= 1, got 0"),
        (["--seed", str(10**20)], "--seed must be between 0 and 2**63 - 2"),
        (["--seed", "-1"], "--seed must be between 0 and 2**63 - 2"),
    ):
        assert cli.main(["demo", *argv]) == 2, argv
        out, err = capsys.readouterr()
        assert not out and err.startswith(f"liquid-control demo: error: {problem}"), (argv, err)


def test_a_command_whose_package_is_missing_says_which(tmp_path):
    """On a robot without torch (it runs the exported .onnx), `liquid-control export` and `demo` once ended in a
    ModuleNotFoundError traceback; now one line naming the missing package, exit 1."""
    for command in (["export", str(tmp_path / "policy.pt")], ["demo"]):
        code = (
            f"import sys; sys.modules['torch'] = None\nfrom liquid_control import cli\nsys.exit(cli.main({command!r}))"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1, proc.stderr
        expected = f"liquid-control {command[0]}: error: needs the Python package 'torch', which is not installed"
        assert proc.stderr.startswith(expected) and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    "module",
    [
        "torch",
        "numpy",
        "mujoco",
        "gymnasium",
        "cv2",
        "yaml",
        "tqdm",
        "matplotlib",
        "onnx",
        "onnxruntime",
        "rosbags",
        "mcap",
        "rclpy",
        "std_msgs",
        "sensor_msgs",
        "geometry_msgs",
        "nav_msgs",
        "std_srvs",
        "lifecycle_msgs",
        "ament_index_python",
    ],
)
def test_a_missing_package_is_named_as_requirements_txt_pins_it(module):
    """The hint named the import ('cv2', 'yaml', 'rclpy'), which is not what requirements.txt pins."""
    hint = entry.install_hint(module)
    pip_name = hint.removeprefix("pip: ").split(",")[0]
    pinned = {
        line.split("==")[0].lower() for line in (REPO / "requirements.txt").read_text().splitlines() if "==" in line
    }
    assert pip_name.lower() in pinned, hint


def test_a_log_gets_no_progress_bar_and_a_path_with_spaces_works(tmp_path):
    """Before: `liquid-control record --expert ... 2> log` (a CI job, a Makefile) filled the log with the bar's
    every state, carriage-return separated; without a terminal on stderr there is no bar, without --no-progress."""
    out = tmp_path / "bags with spaces é"
    argv = ["record", "--expert", "--episodes", "2", "--time-limit", "0.3", "--render-size", "32", "-o", str(out)]
    code = f"import sys\nfrom liquid_control import cli\nsys.exit(cli.main({argv!r}))"
    proc = subprocess.run(
        [sys.executable, "-c", code], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and "expert episodes" not in proc.stderr, proc.stderr
    assert f"into {out} in " in proc.stdout
    assert len(list(out.glob("episode_*"))) == 2


def test_record_expert_in_a_log_says_each_episode(tmp_path, capsys):
    """Before: `record --expert` with stderr no terminal (no bar) said nothing until its last episode was recorded:
    a CI or cluster log of a long recording held no line of how far it was."""
    argv = ["record", "--expert", "--episodes", "2", "--seed", "5", "--time-limit", "0.3", "--render-size", "32"]
    assert cli.main([*argv, "-o", str(tmp_path / "bags")]) == 0
    err = capsys.readouterr().err.splitlines()
    line = r"episode (\d)/2: (episode_\d+), (?:success|collision|timeout) after \d+\.\d s of driving, \d+\.\d s"
    said = [re.fullmatch(line, text) for text in err]
    assert [m.groups() for m in said if m] == [("1", "episode_5"), ("2", "episode_6")], err


def test_no_progress_help_says_when_bars_are_shown():
    for name in ("train", "eval", "record"):
        help_text = " ".join(cli.command_parser(name)[1].format_help().split())
        assert "without it, bars only when stderr is a terminal" in help_text, name


def test_record_says_only_its_result_on_stdout(tmp_path):
    """Before: `liquid-control record` also printed 'recording ... (Ctrl-C to stop)' on stdout, so a script's
    `bag=$(liquid-control record --duration 5 ...)` got that line too."""
    from liquid_control.ros.testing import isolated_ros_env

    out = tmp_path / "a bag é"
    proc = subprocess.run(
        [sys.executable, "-m", "liquid_control.cli", "record", "--duration", "0.5", "-o", str(out), "/nothing"],
        env=isolated_ros_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"wrote {out}: /nothing 0"], proc.stdout
    assert "Ctrl-C to stop" in proc.stderr
    assert "liquid-control record: warning: nothing received on /nothing" in proc.stderr  # named, as every command's


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_option_of_every_command_says_what_it_does(name):
    """Before: `liquid-control sim --help` (and `main --help`) showed `--world` with only its default."""
    import argparse

    _, parser = cli.command_parser(name)
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        text = (action.help or "").replace("(default: %(default)s)", "").strip()
        assert text, f"liquid-control {name} {'/'.join(action.option_strings) or action.dest}: no help text"


def _read_all(leader: int, chunks: list) -> None:
    """Read a pseudo-terminal's leader until the process on it closes its side; then close it."""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the process closed its side
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)


def _on_a_terminal(argv, env):
    """What ``argv`` writes when its stdout and stderr are a terminal (a pseudo-terminal)."""
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    _read_all(leader, chunks)
    assert proc.wait(timeout=120) == 0, b"".join(chunks)
    return b"".join(chunks).decode(errors="replace")


def test_no_color_leaves_the_ros_log_lines_without_colour_codes(tmp_path):
    """Before: on a terminal, rcutils coloured the ROS log lines of `liquid-control record` (and of the nodes)
    with escape codes whatever NO_COLOR said."""
    from liquid_control.ros.testing import isolated_ros_env

    env = isolated_ros_env()
    env.pop("RCUTILS_COLORIZED_OUTPUT", None)
    argv = [sys.executable, "-m", "liquid_control.cli", "record", "--duration", "0.3", "/nothing", "-o"]
    coloured = _on_a_terminal([*argv, str(tmp_path / "coloured")], {k: v for k, v in env.items() if k != "NO_COLOR"})
    assert "[bag_recorder]" in coloured and "\x1b[" in coloured  # rcutils colours a terminal's lines by default
    plain = _on_a_terminal([*argv, str(tmp_path / "plain")], {**env, "NO_COLOR": "1"})
    assert "[bag_recorder]" in plain and "\x1b[" not in plain, plain


def test_the_exit_statuses_are_listed_in_one_place_as_the_code_has_them():
    """Before: each command's statuses were told (if at all) in its own doc page; README.md now lists them all,
    and `liquid-control --help` points there."""
    from liquid_control.ros import graph

    text = (REPO / "README.md").read_text()
    section = text[text.index("## In scripts: exit status and output") :]
    section = section[: section.index("\n## ", 1)]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        if line.startswith("| ") and len(cells) == 2 and cells[0][0].isdigit():
            rows[cells[0]] = cells[1]
    assert set(rows) == {"0", "1", "2", "3", "4", "130 / 143", str(cli.EXIT_BROKEN_PIPE)}, rows
    assert (graph.EXIT_OK, graph.EXIT_NODE_FAILED, graph.EXIT_USAGE) == (0, 1, 2)
    assert "--timeout" in rows[str(graph.EXIT_TIMEOUT)] and "another graph" in rows[str(graph.EXIT_DOMAIN_SHARED)]
    assert "SIGPIPE" in rows[str(cli.EXIT_BROKEN_PIPE)]
    top_help = " ".join(cli.build_parser().format_help().split())
    assert "README.md, 'In scripts: exit status and output'" in top_help


def test_eval_on_a_terminal_keeps_its_progress_off_stdout(tmp_path):
    """Before: with stderr on a terminal, `report=$(liquid-control eval ...)` also captured eval's 'N episodes
    planned, ... running' line, which it printed on stdout beside the progress bar on stderr."""
    import pty

    argv = ["eval", "--policy", "expert", "--shift", "in_distribution", "--episodes", "1", "--out"]
    argv += [str(tmp_path / "r é"), "--no-example", "--no-saliency", "--workers", "1", "--backend", "serial"]
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "liquid_control.cli", *argv],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=follower, text=True,
    )  # fmt: skip
    os.close(follower)
    chunks = []
    reader = threading.Thread(target=_read_all, args=(leader, chunks))  # a full terminal would block the command
    reader.start()
    out = proc.stdout.read()
    assert proc.wait(timeout=300) == 0
    reader.join(timeout=60)
    err = b"".join(chunks)
    assert b"1 episode planned" in err  # the status line, on stderr; 1 episode, not 1 episodes
    assert out.splitlines() == [f"liquid-control eval: 1 episode -> {tmp_path / 'r é' / 'report.md'}"], out


def help_examples(name: str) -> list[list[str]]:
    """The example command lines in `liquid-control NAME --help` (continued lines joined, comments dropped)."""
    import shlex

    _, parser = cli.command_parser(name)
    text = (parser.epilog or "").replace("\\\n", " ")
    lines = [line.split("  #")[0].strip() for line in text.splitlines()]
    return [shlex.split(line)[2:] for line in lines if line.startswith(f"liquid-control {name} ")]


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_command_help_shows_examples_that_parse(name):
    """Before: `eval`, `sim`, `main`, `export`, `view` and `demo` --help showed no example command line."""
    examples = help_examples(name)
    assert examples, f"liquid-control {name} --help: no example"
    _, parser = cli.command_parser(name)
    for argv in examples:
        parser.parse_args(argv)  # an example that no longer parses exits here


def test_eval_in_a_log_says_what_it_runs_and_how_far_it_is(tmp_path, capsys):
    """Before: with stderr no terminal (a CI log, `2> file`) the bar was off and so was eval's 'N episodes
    planned, ... running' line: a run of hours wrote nothing to its log until it ended."""
    argv = ["eval", "--policy", "expert", "--shift", "in_distribution", "--shift", "winter", "--episodes", "1"]
    # two batches (a shift each: a batch's episodes are logged together, at its end)
    assert cli.main([*argv, "--out", str(tmp_path), "--no-example", "--no-saliency", "--backend", "serial"]) == 0
    err = capsys.readouterr().err
    assert "2 episodes planned, 0 already in" in err and "running 2 on the serial backend" in err, err
    assert "liquid-control eval: 1/2 episodes done" in err and "liquid-control eval: 2/2 episodes done" in err, err
    assert "\r" not in err, err


CTRL_C_AFTER_THE_COMMAND = """
import os, signal, sys
sys.argv = ["liquid-control", "export", sys.argv[1], "-o", sys.argv[2]]
from liquid_control import cli
status = cli.main()  # the console script's call: the process's own command
print("returned", status, flush=True)
os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C as the interpreter ends the finished command
print("after the signal", flush=True)
sys.exit(status)
"""


def test_ctrl_c_once_a_command_has_returned_leaves_its_exit_status(tmp_path):
    """Before: a Ctrl-C in the second or so the interpreter takes to end after a command's last line (collecting
    torch's and MuJoCo's objects; measured 0.9 s after `eval --bag`'s report line, 1.1 s after `export`'s) ended the
    finished command by the signal (status -2, 130 in a shell, every file written) or, where Python code still ran,
    in a KeyboardInterrupt traceback: the second here."""
    argv = [str(REPO / "policies" / "cfc_rover.pt"), str(tmp_path / "p.onnx")]
    proc = subprocess.run(
        [sys.executable, "-c", CTRL_C_AFTER_THE_COMMAND, *argv], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "returned 0" in proc.stdout and "Traceback" not in proc.stderr
    assert (tmp_path / "p.onnx").is_file()


EXIT_HELD_BY_A_THREAD = """
import sys, threading
sys.argv = ["liquid-control", "--version"]
from liquid_control import cli
status = cli.main()  # the console script's call: the process's own command
threading.Thread(target=threading.Event().wait).start()  # a thread that never ends: the exit waits for it
print("returned", status, flush=True)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_ends_a_finished_command_whose_exit_hangs_with_its_status(signum):
    """Before (422e0a4d): once a command had returned, SIGINT and SIGTERM were ignored, so an interpreter exit that
    hangs (here a thread that never ends; a worker not joined) could be ended by SIGKILL alone. Now either ends the
    process at once with the command's status."""
    proc = subprocess.Popen(
        [sys.executable, "-c", EXIT_HELD_BY_A_THREAD], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()  # after the version's line
        while line and not line.startswith("returned"):
            line = proc.stdout.readline()
        assert line == "returned 0\n", proc.stderr.read()
        proc.send_signal(signum)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        proc.kill()
        proc.communicate()


def test_help_and_argument_mistakes_are_answered_without_loading_torch():
    """Before: `liquid-control train --help` and `eval --help`, or a mistyped option of either, took 3 s here: the
    parsers' modules imported the trainer and the batched evaluator, so torch and the worlds loaded before argparse
    said a word. Every command but `demo` (the cells' torch demo) now answers both without torch or MuJoCo."""
    code = """
import contextlib, io, json, sys
from liquid_control import cli
said = {}
for name in sorted(cli.COMMANDS):
    if name == "demo":
        continue
    codes = []
    for argv in ([name, "--help"], [name, "--no-such-option"]):
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            try:
                codes.append(cli.main(argv))
            except SystemExit as exc:
                codes.append(exc.code)
    said[name] = [codes, "torch" in sys.modules, "mujoco" in sys.modules]
print(json.dumps(said))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    said = json.loads(out.stdout)
    assert {"train", "eval", "sim", "export"} <= set(said), said
    for name, (codes, torch_loaded, mujoco_loaded) in said.items():
        assert codes == [0, 2], (name, codes)
        assert not torch_loaded and not mujoco_loaded, (name, "loaded torch or mujoco to parse its arguments")


CONFIG_REFUSALS = """
import contextlib, io, json, runpy, sys
from liquid_control import cli
cases = json.loads(sys.argv[1])
bench = runpy.run_path(sys.argv[2], run_name="bench_training")
said = []
for argv in cases:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = bench["main"](argv[1:]) if argv[0] == "bench" else cli.main(argv)
        except SystemExit as exc:
            code = exc.code
    said.append([code, err.getvalue().splitlines()[-1:], "torch" in sys.modules, "mujoco" in sys.modules])
print(json.dumps(said))
"""


def test_a_config_refusal_of_train_and_its_benchmark_is_answered_without_loading_torch(tmp_path):
    """Before: `liquid-control train --config nope.yaml` (or `--set training.nope=1`) and `bench_training.py --config
    nope.yaml` took 3 s to print their one-line refusal: `liquid_control.policy` imported its model (torch) with
    the package, and train imported its trainer (torch and the worlds) before it read the config. They now refuse a
    missing or unreadable config, an unknown key and a bad --set value without torch or MuJoCo."""
    rover = str(REPO / "policies" / "configs" / "cfc_ncp_rover.yaml")
    binary = tmp_path / "policy.yaml"
    binary.write_bytes(b"\x80\x02\xff not a config")
    wrong_key = tmp_path / "wrong_key.yaml"
    wrong_key.write_text((REPO / "policies" / "configs" / "cfc_ncp_rover.yaml").read_text() + "\nnope: 1\n")
    out = str(tmp_path / "run")
    refusals = {  # argv -> what the refusal says
        ("train", "--config", "nope.yaml"): "--config: policy config 'nope.yaml': no such file",
        ("train", "--config", str(binary)): f"{binary}: not a YAML text file",
        ("train", "--config", str(wrong_key)): f"{wrong_key}: config: unknown key(s) 'nope'",
        ("train", "--config", rover, "--set", "training.nope=1"): "training: unknown key(s) 'nope'",
        ("train", "--config", rover, "--set", "training.epochs_first=abc"): "training.epochs_first: expected an int",
        ("train", "--config", rover, "--set", "training.epochs_first=[1"): "the value is not valid YAML",
        ("bench", "--config", "nope.yaml"): "error: nope.yaml: policy config not found",
    }
    cases = [[*argv, "--out", out] if argv[0] == "train" else list(argv) for argv in refusals]
    bench = str(REPO / "benchmarks" / "bench_training.py")
    result = subprocess.run(
        [sys.executable, "-c", CONFIG_REFUSALS, json.dumps(cases), bench], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    for (argv, expected), (code, said, torch_loaded, mujoco_loaded) in zip(refusals.items(), json.loads(result.stdout)):
        assert code == 2 and len(said) == 1 and expected in said[0], (argv, code, said)
        assert not torch_loaded and not mujoco_loaded, (argv, "loaded torch or mujoco to refuse its config")
    assert not Path(out).exists()


def test_a_config_refusal_into_a_folder_in_use_still_names_the_lock_first(tmp_path, capsys):
    """train checks the folder's lock before the config; the config check made before the trainer's import (see
    the test above) leaves a folder another process holds to it, so the refusal still names that process."""
    import fcntl

    out = tmp_path / "run"
    out.mkdir()
    holder = os.open(out, os.O_RDONLY | os.O_DIRECTORY)  # what a running `liquid-control train` holds
    try:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        argv = ["train", "--config", "policies/configs/cfc_ncp_rover.yaml", "--out", str(out), "--set", "nope=1"]
        assert cli.main(argv) == 2
        assert capsys.readouterr().err == (
            f"liquid-control train: error: {out}: another process is writing in this folder and holds its lock; wait "
            "for it to end, or train into another --out\n"
        )
    finally:
        os.close(holder)
