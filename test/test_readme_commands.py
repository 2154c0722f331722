"""Every command of README.md works as written, in a fresh clone of the committed tree.

Each command line of a fenced block runs (shrunk where a flag allows: one episode, a tiny training) in a
`git clone` of this repository, placed as a colcon workspace's `src/liquid_control`; the long ones no other
command needs (`./run.sh`, mostly waiting in real time, the headline experiment, the parallel training) run
beside the rest, and the real-robot commands (record, train from bags, check offline) as a second sequence.
`./run.sh` and `./test.sh` run against this suite's environment (LIQUID_CONTROL_VENV + LIQUID_CONTROL_NO_INSTALL:
the install itself is what CI's `./test.sh` on a fresh clone does). `ros2 launch` needs a ROS installation: its
launch file must be installed by the colcon build and declare the arguments the README passes. Commands quoted
in the prose are parsed by the CLI (arguments, shift strings, files). A README command this test does not know
fails it, so the README cannot drift from the code unnoticed.
"""

import ast
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from liquid_control import cli
from liquid_control.ros.testing import isolated_ros_env

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()

# The shrunk training of every `liquid-control train --config` and of the headline experiment: two expert
# episodes, one epoch, no DAgger round, one selection episode, every episode cut at 30 updates (2 s): each
# stage (collect, fit, select, write) runs, on little data.
TINY_TRAINING = [
    "training.demonstrations=2",
    "training.dagger_rounds=0",
    "training.epochs_first=1",
    "training.eval_episodes=1",
    "training.max_episode_steps=30",
]


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)


def command_lines(code: str) -> list[str]:
    """Shell commands of a bash block: comments dropped, continuation lines joined."""
    lines, current = [], ""
    for raw in code.splitlines():
        line = raw.split("  #")[0].rstrip() if not raw.lstrip().startswith("#") else ""
        current += line.rstrip("\\").strip() + " " if line else ""
        if line and not line.endswith("\\"):
            lines.append(current.strip())
            current = ""
    return lines


def inline_commands(text: str) -> list[str]:
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    spans = (" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose))
    return [s for s in spans if re.match(r"(\./run\.sh|liquid-control)( |$)|policy_node --ros-args ", s)]


def plan(command: str) -> tuple[str, list[str] | str]:
    """How a README command runs here: ("run", argv), ("background", argv): beside the next commands, as it
    shares nothing with them, ("side", argv): in order in a second sequence beside the main one (the real-robot
    commands, which read only each other's bags and runs), ("shell", text) or ("launch", argv)."""
    argv = shlex.split(command)
    if command == "./run.sh":  # real time, mostly waiting
        return "background", argv
    if command == "./test.sh":  # the whole suite is this run: one test of it, through the script
        return "run", argv + ["-q", "test/test_package.py", "-k", "cli_help_lists_every_command"]
    if argv[:3] == ["liquid-control", "record", "--expert"]:  # two short episodes per bag folder
        return "side", argv + ["--episodes", "2", "--time-limit", "3", "--no-progress"]
    if argv[:3] == ["liquid-control", "eval", "--bag"]:
        return "side", argv + ["--no-progress"]
    if argv[:3] == ["liquid-control", "train", "--config"]:
        tiny = argv + [arg for s in TINY_TRAINING for arg in ("--set", s)] + ["--no-progress"]
        if "--bag" in argv:  # the robot's chain: from its bags only (the simulated episodes' settings are refused)
            return "side", argv + ["--set", "training.epochs_first=1", "--no-progress"]
        return ("background" if "--workers" in argv else "run"), tiny  # nothing reads the parallel run's output
    if argv[:2] == ["liquid-control", "train"] and "--resume" in argv:
        return "run", argv + ["--no-progress"]
    if argv[:4] == ["liquid-control", "eval", "--experiment", "headline"]:
        shrink = ["--archs", "cfc_ncp", "--seeds", "1", "--episodes", "1", "--shift", "in_distribution"]
        # training runs in its process pool; the one episode in this process (the pool: the next command)
        shrink += ["--train-minutes", "0.1", "--no-expert", "--no-example", "--no-saliency", "--no-progress"]
        shrink += ["--backend", "serial"]
        return "background", argv + shrink + [arg for s in TINY_TRAINING for arg in ("--train-set", s)]
    if argv[:3] == ["liquid-control", "eval", "--policy"]:  # the 16 headline shifts -> one, one episode each
        i = argv.index("--shift-set")
        argv = argv[:i] + ["--shift", "in_distribution"] + argv[i + 2 :]
        return "run", argv + ["--episodes", "1", "--no-example", "--no-progress", "--workers", "1"]
    if command == "colcon build --packages-select liquid_control && source install/setup.bash":
        return "shell", command
    if argv[:2] == ["ros2", "launch"]:
        return "launch", argv
    raise AssertionError(f"README command not covered by test/test_readme_commands.py: {command!r}")


def test_every_readme_command_is_covered():
    """Cheap and first: every fenced command has a rule, every prose command parses."""
    blocks = fenced_blocks(README)
    assert {lang for lang, _ in blocks} <= {"bash", "python"}
    for lang, code in blocks:
        if lang == "bash":
            for command in command_lines(code):
                plan(command)
    inline = inline_commands(README)
    assert "./run.sh --help" in inline and any(c.startswith("liquid-control export") for c in inline)
    assert any(c.startswith("policy_node --ros-args") for c in inline)  # the deployment, checked below
    import sim_envs

    for command in inline:
        argv = shlex.split(command)
        if argv[0] == "policy_node":  # the deployment: its parameter file exists, every -p is a parameter
            _policy_node_check(argv)
            continue
        name, args = ("main", argv[1:]) if argv[0] == "./run.sh" else (argv[1], argv[2:])
        if name.startswith("-"):
            assert cli.main([name]) == 0  # liquid-control --help / --version
            continue
        if "--help" in args or not args:  # `liquid-control train` named in the prose: the command exists
            assert name in cli.COMMANDS, command
            continue
        _, parser = cli.command_parser(name)
        parsed = parser.parse_args(args)  # exits (a failure here) on a bad argument
        if getattr(parsed, "shift", ""):
            sim_envs.parse_shift(parsed.shift)
        for value in vars(parsed).values():
            if isinstance(value, str) and value.startswith("policies/"):
                assert (ROOT / value).is_file(), command


def _policy_node_check(argv: list[str]):
    """`policy_node --ros-args --params-file F -p k:=v ...`: F is a shipped file, every k a policy_node parameter."""
    from liquid_control.conventions.params import POLICY_NODE_PARAMETERS

    assert argv[1] == "--ros-args", argv
    options = argv[2:]
    assert len(options) % 2 == 0, argv
    for flag, value in zip(options[::2], options[1::2]):
        if flag == "--params-file":
            assert (ROOT / value).is_file(), value
        else:
            assert flag == "-p" and value.partition(":=")[0] in POLICY_NODE_PARAMETERS, (flag, value)


def _ros2_launch_check(argv: list[str], share: Path):
    """`ros2 launch liquid_control FILE k:=v`: FILE installed by colcon, every k declared by it."""
    package, launch_file, *assignments = argv[2:]
    assert package == "liquid_control"
    path = share / "launch" / launch_file
    assert path.is_file(), f"{launch_file} not installed to {share / 'launch'}"
    tree = ast.parse(path.read_text())
    (declared,) = [
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "ARGUMENTS"
    ]
    for assignment in assignments:
        key, _, value = assignment.partition(":=")
        assert key in declared, f"{launch_file} declares no argument {key!r}"
        if key == "shift":
            import sim_envs

            sim_envs.parse_shift(value)


def _end_group(proc: subprocess.Popen, grace: float = 15.0):
    """End a step still running, started in its own session, with everything it started: SIGTERM to its process
    group (the CLI then ends its ROS graph), SIGKILL to the group if it is still there after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass


def _run_step(argv, cwd, env, timeout: float, running: list | None = None) -> subprocess.CompletedProcess:
    """One README command in its own process group, ended with everything it started if it overruns;
    ``running`` holds the process while it runs (so that another thread can end it)."""
    proc = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    if running is not None:
        running.append(proc)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        _end_group(proc)
        if running is not None:
            running.remove(proc)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def test_readme_commands_run_in_a_fresh_clone(tmp_path):
    assert sys.prefix != sys.base_prefix, (
        f"test_readme_commands.py runs the clone's ./run.sh and ./test.sh against this suite's virtual environment "
        f"(LIQUID_CONTROL_VENV=sys.prefix, LIQUID_CONTROL_NO_INSTALL=1), but this Python ({sys.executable}) is not "
        f"in one: run the suite from a venv (./test.sh creates .venv)"
    )
    workspace = tmp_path / "ws"
    clone = workspace / "src" / "liquid_control"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, capture_output=True, timeout=120)
    env = isolated_ros_env()
    env.update(
        PYTHONPATH=str(clone),
        LIQUID_CONTROL_VENV=sys.prefix,
        LIQUID_CONTROL_NO_INSTALL="1",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
    )
    steps = []
    for lang, code in fenced_blocks((clone / "README.md").read_text()):
        if lang == "python":
            script = tmp_path / f"readme_{len(steps)}.py"
            script.write_text(code)
            steps.append(("run", [sys.executable, str(script)]))
        else:
            steps += [plan(command) for command in command_lines(code)]
    ran, background, timings, side_results = [], [], [], []
    side_stop, side_running, side_errors = threading.Event(), [], []

    def run_side_chain():
        """The "side" steps in order (each needs the one before); stops at the first failure or when told."""
        try:
            for _, argv in (step for step in steps if step[0] == "side"):
                if side_stop.is_set():
                    return
                started = time.monotonic()
                proc = _run_step(argv, clone, env, timeout=600, running=side_running)
                side_results.append((" ".join(argv), time.monotonic() - started, proc))
                if proc.returncode != 0:
                    return
        except BaseException as exc:  # re-raised by the test after the join
            side_errors.append(exc)

    side_chain = threading.Thread(target=run_side_chain, name="readme-side-chain", daemon=True)
    side_chain.start()
    try:
        for kind, what in steps:
            if kind == "side":
                continue
            if kind == "launch":
                _ros2_launch_check(what, workspace / "install" / "liquid_control" / "share" / "liquid_control")
                ran.append(" ".join(what))
                continue
            cwd = workspace if kind == "shell" else clone
            argv = (
                ["bash", "-c", f"set -e; {what}; echo AMENT_PREFIX_PATH=$AMENT_PREFIX_PATH"]
                if kind == "shell"
                else what
            )
            shown = what if isinstance(what, str) else " ".join(what)
            if kind == "background":
                output = tmp_path / f"background_{len(background)}"
                with open(f"{output}.out", "w") as out, open(f"{output}.err", "w") as err:
                    proc = subprocess.Popen(
                        argv, cwd=cwd, env=env, stdout=out, stderr=err, text=True, start_new_session=True
                    )
                background.append((shown, proc, output, time.monotonic()))
                continue
            started = time.monotonic()
            proc = _run_step(argv, cwd, env, timeout=600)
            timings.append((shown, time.monotonic() - started))
            assert proc.returncode == 0, f"{shown}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            ran.append(shown)
            if kind == "shell":  # the workspace's setup.bash puts the package on the ament index
                assert f"AMENT_PREFIX_PATH={workspace / 'install' / 'liquid_control'}" in proc.stdout
        for shown, proc, output, started in background:
            proc.wait(timeout=600)
            timings.append((f"{shown} (in the background, ended by now)", time.monotonic() - started))
            out, err = (Path(f"{output}.{name}").read_text() for name in ("out", "err"))
            assert proc.returncode == 0, f"{shown}\n{out[-3000:]}\n{err[-3000:]}"
            assert shown != "./run.sh" or "success_rate: " in out, out
            ran.append(shown)
        side_chain.join(timeout=1200)
        assert not side_chain.is_alive(), "the real-robot commands did not end"
        if side_errors:
            raise side_errors[0]
        for shown, _, proc in side_results:
            assert proc.returncode == 0, f"{shown}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            ran.append(shown)
    finally:
        side_stop.set()  # a failed step leaves nothing behind: no further side step, no process group
        for proc in list(side_running) + [proc for _, proc, _, _ in background]:
            _end_group(proc)
        side_chain.join(timeout=60)
        timings += [(f"{shown} (beside the others)", wall) for shown, wall, _ in side_results]
        print("README commands, wall seconds:")
        print("\n".join(f"{wall:6.1f}  {command}" for command, wall in timings))
    assert (clone / "runs" / "cfc_ncp_rover" / "policy.pt").is_file()
    assert (clone / "reports" / "headline" / "report.md").is_file()
    assert (clone / "reports" / "mine" / "report.md").is_file()
    assert (clone / "runs" / "robot" / "policy.pt").is_file() and (clone / "reports" / "offline").is_dir()
    blocks = fenced_blocks(README)
    expected = sum(len(command_lines(code)) if lang == "bash" else 1 for lang, code in blocks)
    assert len(ran) == expected >= 10, ran  # every command ran (./run.sh ... ros2 launch)
