"""The package skeleton: CLI, share-dir lookup, package manifest."""

import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from liquid_control import cli, paths
from liquid_control.processes import available_cpus


def test_cli_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def test_cli_rejects_unknown_command():
    proc = subprocess.run([sys.executable, "-m", "liquid_control.cli", "fly"], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "unknown command 'fly'" in proc.stderr


def test_package_xml_is_format3_ament_python():
    root = ET.parse(paths.share_dir() / "package.xml").getroot()
    assert root.get("format") == "3"
    assert root.findtext("name") == "liquid_control"
    assert root.find("export/build_type").text == "ament_python"
    deps = {e.text for e in root.findall("exec_depend")}
    assert {"rclpy", "sensor_msgs", "geometry_msgs"} <= deps


def _copy_source_tree(dst):
    """The package as a user would check it out: the source tree without venv, caches or build outputs."""
    import shutil

    src = paths.share_dir()
    ignore = shutil.ignore_patterns(
        ".venv", ".git", "__pycache__", "*.egg-info", "build", "install", "log", "runs", "reports", ".pytest_cache"
    )
    shutil.copytree(src, dst, ignore=ignore, symlinks=True)


def test_colcon_build_installs_where_ros2_looks(tmp_path):
    """`colcon build` puts executables in lib/<pkg> (ros2 run), launch/config/policies under share/<pkg>."""
    import os
    import shutil

    colcon = shutil.which("colcon") or os.path.join(os.path.dirname(sys.executable), "colcon")
    _copy_source_tree(tmp_path / "src" / "liquid_control")
    proc = subprocess.run(
        [colcon, "build", "--base-paths", "src"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    prefix = tmp_path / "install" / "liquid_control"
    for exe in ("policy_node", "sim_node", "liquid-control"):
        assert os.access(prefix / "lib" / "liquid_control" / exe, os.X_OK), exe
    share = prefix / "share" / "liquid_control"
    assert (share / "package.xml").is_file()
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "liquid_control").is_file()
    src = paths.share_dir()
    for folder, pattern in (("launch", "*.launch.py"), ("config", "*.yaml"), ("policies", "*"), ("urdf", "*.urdf")):
        expected = sorted(p.name for p in (src / folder).glob(pattern) if p.is_file())
        installed = sorted(p.name for p in (share / folder).glob(pattern) if p.is_file()) if expected else []
        assert installed == expected, folder


def test_cli_version_and_help_show_defaults_and_choices(capsys):

    from liquid_control import __version__

    proc = subprocess.run([sys.executable, "-m", "liquid_control.cli", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == f"liquid-control {__version__}"
    root = ET.parse(paths.share_dir() / "package.xml").getroot()
    assert root.findtext("version") == __version__  # one version for the ROS package and the CLI
    for command in ("sim", "eval", "train"):
        proc = subprocess.run(
            [sys.executable, "-m", "liquid_control.cli", command, "--help"], capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
        text = " ".join(proc.stdout.split())  # argparse wraps lines
        assert "{," not in text and ",}" not in text  # no empty choice shown
        if command == "sim":
            assert "--publish-mode {per_update,fixed_rate}" in text and "--backend {auto,torch,onnx}" in text
            flat = " ".join(text.split())  # argparse wraps the help at the terminal's width
            assert "--seed SEED episode k runs the world reset with seed + k (default: 0)" in flat
            assert "(default: LiquidRover-v0)" in text
        if command == "eval":
            assert "(default 20; 30 for --experiment)" in text  # --episodes: default depends on --experiment
        if command == "train":
            assert "examples:\n  liquid-control train" in proc.stdout  # epilog line breaks kept


@pytest.mark.parametrize(
    "module, shown",
    [
        ("liquid_control.training.model_card", "(default: 100)"),
        ("liquid_control.ros.robot_description", "one world (default: all)"),
    ],
)
def test_module_command_lines_show_only_defaults_that_say_something(module, shown):
    """Before: the model card's and the URDF writer's --help printed "(default: None)" and "(default: )" after help
    texts that already say what happens without the option (argparse's ArgumentDefaultsHelpFormatter)."""
    proc = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "(default: None)" not in text and "(default: )" not in text, text
    assert shown in text


def _setup_script(argv, tmp_path, tools=(), fake=None, **env_vars):
    """Run a scripts/ file with PATH limited to the coreutils it uses plus ``tools`` (and ``fake`` name -> shell
    script body), so a missing or failing cmake can be staged."""
    import os
    import shutil

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("cat", "grep", "sha256sum", "cut", "mkdir", "tail", "nproc", "id", "dirname", *tools):
        if shutil.which(tool) and not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(shutil.which(tool))
    for name, body in (fake or {}).items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "LIQUID_CONTROL_NO_INSTALL", "LIQUID_CONTROL_VENV")}
    env.update(PATH=str(bin_dir), **env_vars)
    return subprocess.run(
        [shutil.which("bash"), *argv], cwd=paths.share_dir(), env=env, capture_output=True, text=True, timeout=60
    )


def test_interface_build_failure_stops_the_tests_and_ci_but_not_run_sh(tmp_path):
    """scripts/build_interfaces.sh: without cmake, or when the build fails, ./run.sh goes on with a warning (no /tf)
    while the test profile and CI stop with the reason and the end of the build log; nothing is stamped."""
    venv = tmp_path / "venv"  # no tf2_msgs importable: a build is needed
    venv.mkdir()
    script = "scripts/build_interfaces.sh"
    runtime = _setup_script([script, str(venv)], tmp_path)
    assert runtime.returncode == 0 and "cmake and a C++ compiler are needed" in runtime.stderr, runtime.stderr
    for argv, env in (([script, str(venv), "test"], {}), ([script, str(venv)], {"CI": "true"})):
        strict = _setup_script(argv, tmp_path, **env)
        assert strict.returncode == 1, strict.stderr
        assert "cmake and a C++ compiler are needed" in strict.stderr and "required for the tests" in strict.stderr
    failing = {"cmake": "echo 'CMake Error: staged failure'; exit 1", "c++": "exit 1"}
    build = _setup_script([script, str(venv), "test"], tmp_path, fake=failing)
    assert build.returncode == 1, build.stderr
    assert "building tf2_msgs failed" in build.stderr and "CMake Error: staged failure" in build.stderr
    assert _setup_script([script, str(venv)], tmp_path, fake=failing).returncode == 0
    assert not (venv / ".liquid_control-interfaces.sha").exists()


def test_bootstrap_without_install_refuses_to_create_a_venv(tmp_path):
    """LIQUID_CONTROL_NO_INSTALL uses an existing venv as it is: one that does not exist is an error, not created."""
    import os

    venv = tmp_path / "missing-venv"
    proc = subprocess.run(
        ["bash", "-c", "source scripts/bootstrap.sh runtime"],
        cwd=paths.share_dir(),
        env=dict(os.environ, LIQUID_CONTROL_VENV=str(venv), LIQUID_CONTROL_NO_INSTALL="1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    assert f"LIQUID_CONTROL_NO_INSTALL is set but {venv} is not a virtual environment" in proc.stderr
    assert not venv.exists()


def test_test_sh_runs_the_tests_in_parallel_and_its_worker_count_is_checked(tmp_path):
    """./test.sh runs the suite on pytest-xdist workers, one per core (CI's wall time); LIQUID_CONTROL_TEST_WORKERS
    sets their number (0: in one process), and a value that is no whole number is refused before pytest starts."""
    import os
    import sys

    env = dict(os.environ, LIQUID_CONTROL_VENV=sys.prefix, LIQUID_CONTROL_NO_INSTALL="1")
    # -vv over test.sh's -q: pytest-xdist names the workers it started and the one that ran the test
    one_test = ["test/test_stats_oracle.py", "-k", "a_bootstrap_of_no_resamples", "-p", "no:cacheprovider", "-vv"]

    def test_sh(workers: str | None, *more: str, **extra: str) -> subprocess.CompletedProcess:
        run_env = {k: v for k, v in env.items() if k != "LIQUID_CONTROL_TEST_WORKERS"} | extra
        # None: the automatic count, the cores whatever OMP_NUM_THREADS says (GNU nproc follows it)
        run_env |= {"OMP_NUM_THREADS": "1"} if workers is None else {"LIQUID_CONTROL_TEST_WORKERS": workers}
        return subprocess.run(
            ["./test.sh", *one_test, *more],
            cwd=paths.share_dir(),
            env=run_env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    cores = min(available_cpus(), 8)
    automatic = f"created: {cores}/{cores} workers" if cores > 1 else None
    # a container's CPU quota of one CPU (cgroup_cpu_quota made to say so in every Python process test.sh starts):
    # no workers, however many cores the affinity mask shows
    (tmp_path / "sitecustomize.py").write_text(  # the package's folder first: its own code, whatever is installed
        f"import sys\nsys.path.insert(0, {str(paths.share_dir())!r})\nimport liquid_control.processes as p\n"
        "p.cgroup_cpu_quota = lambda *args, **kwargs: 1.0\n"
    )
    one_cpu = {"PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    for workers, started, more, extra in (
        ("2", "created: 2/2 workers", (), {}),
        ("0", None, (), {}),
        (None, automatic, (), {}),
        (None, None, (), one_cpu),
        (None, None, ("--pdb",), {}),  # a debugger runs the tests in test.sh's process (xdist refuses --pdb)
    ):
        proc = test_sh(workers, *more, **extra)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "1 passed" in proc.stdout, proc.stdout
        if started:
            assert started in proc.stdout, proc.stdout
        else:
            assert "workers" not in proc.stdout and "[gw" not in proc.stdout, proc.stdout
    refused = test_sh("two")
    assert refused.returncode == 2 and "passed" not in refused.stdout, refused.stdout + refused.stderr
    assert "LIQUID_CONTROL_TEST_WORKERS must be a whole number (0: no workers), got 'two'" in refused.stderr
