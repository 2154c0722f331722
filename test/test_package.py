"""The package skeleton: CLI, share-dir lookup, package manifest."""

import subprocess
import sys
import xml.etree.ElementTree as ET

from liquid_control import cli, paths


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
    import re

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
            assert re.search(r"--seed SEED \(default: 0\)", text) and "(default: LiquidRover-v0)" in text
        if command == "eval":
            assert "(default: 20)" in text  # --episodes
        if command == "train":
            assert "examples:\n  liquid-control train" in proc.stdout  # epilog line breaks kept
