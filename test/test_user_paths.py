"""Paths as users have them: folders with spaces and non-ASCII characters (``/home/jörg/runs/Fahrt 1``), ``~`` where
no shell expanded it, names a glob would misread. Each command's outputs link and record them so that they still
lead to the file."""

import re
from urllib.parse import unquote

import numpy as np

from liquid_control import cli
from liquid_control.bags import BagWriter
from liquid_control.bags.messages import image_message, twist_message
from liquid_control.paths import policies_dir

SHIPPED = policies_dir() / "cfc_ncp_rover.pt"
# a Markdown link or image: [text](target), the target as CommonMark reads it (up to a space or the closing parenthesis)
MARKDOWN_LINK = re.compile(r"\]\(([^)\s]*)([^)]*)\)")


def _drive(path, frames: int = 10):
    """``frames`` 64x64 camera frames at 20 Hz on /camera/image_raw (the shipped rover policy's input), a /cmd_vel
    after each."""
    with BagWriter(path) as bag:
        for k in range(frames):
            t = 100.0 + 0.05 * k
            bag.write("/camera/image_raw", int(t * 1e9), image_message(np.full((64, 64, 3), k, np.uint8), t))
            bag.write("/cmd_vel", int(t * 1e9) + 1_000_000, twist_message(0.5, 0.1))
    return path


def test_the_offline_reports_plot_links_lead_to_the_plots_of_bags_named_with_spaces(tmp_path, capsys):
    """Before: a bag named 'Fahrt 1' was linked as ![](plots/robot__Fahrt 1.png): the link ends at the space, so
    the report showed the text and no plot."""
    root = tmp_path / "jörg" / "Fahrt 1"
    bags = [_drive(root / "Fahrt 1"), _drive(root / "Straße (2)")]
    out = root / "Bericht ö"
    argv = ["eval", "--policy", f"robot={SHIPPED}", "--out", str(out), "--no-progress"]
    assert cli.main([*argv, *(a for bag in bags for a in ("--bag", str(bag)))]) == 0
    capsys.readouterr()
    report = (out / "report.md").read_text(encoding="utf-8")
    links = MARKDOWN_LINK.findall(report)
    assert len(links) == 2, report
    for target, after_a_space in links:
        assert not after_a_space, f"link target {target + after_a_space!r} holds a space: {report}"
        assert (out / unquote(target)).is_file(), (target, sorted(p.name for p in (out / "plots").iterdir()))
    assert sorted(unquote(t) for t, _ in links) == ["plots/robot__Fahrt 1.png", "plots/robot__Straße (2).png"]
