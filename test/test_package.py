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
