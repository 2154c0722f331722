"""`liquid-control record --info` on a truncated bag: metadata.yaml's counts (as docs/real_robot.md promises and
`ros2 bag info` shows) beside what is readable up to the break."""

import os

import numpy as np

from liquid_control import cli
from liquid_control.bags import BagWriter
from liquid_control.bags.messages import image_message, twist_message


def _cut_bag(path, keep_metadata):
    """200 frames (64x64 noise, ~2.5 MB: several chunks) and 200 commands, the MCAP file cut at half its size."""
    rng = np.random.default_rng(3)
    with BagWriter(path) as bag:
        for k in range(200):
            ns = int((100 + k / 15) * 1e9)
            bag.write("/camera/image_raw", ns, image_message(rng.integers(0, 255, (64, 64, 3), np.uint8), ns * 1e-9))
            bag.write("/cmd_vel", ns + 1000, twist_message(0.5, 0.1))
    mcap = next(path.glob("*.mcap"))
    os.truncate(mcap, mcap.stat().st_size // 2)
    if not keep_metadata:
        (path / "metadata.yaml").unlink()
    return path


def test_info_of_a_truncated_bag_gives_metadata_counts_and_the_readable_ones(tmp_path, capsys):
    """Before: 'messages: 169' and '85 messages' per topic, metadata.yaml's 400 and 200 nowhere, although the docs
    say --info counts from metadata.yaml (and a bag cut inside its first chunk read 'messages: 0')."""
    assert cli.main(["record", "--info", str(_cut_bag(tmp_path / "copied", keep_metadata=True))]) == 0
    out = capsys.readouterr().out
    head = next(line for line in out.splitlines() if line.startswith("duration"))
    readable = int(head.split(", ")[-1].split()[0])
    assert 0 < readable < 400 and head.endswith(
        f"messages: 400 messages recorded (metadata.yaml), {readable} readable up to the break"
    ), out
    assert "/camera/image_raw: sensor_msgs/msg/Image, 200 messages recorded (metadata.yaml), " in out
    assert "TRUNCATED: " in out

    # a recorder killed hard writes no metadata.yaml: the readable counts alone, as before
    assert cli.main(["record", "--info", str(_cut_bag(tmp_path / "killed", keep_metadata=False))]) == 0
    out = capsys.readouterr().out
    assert f"messages: {readable}\n" in out and "metadata.yaml" not in out.replace("/killed", ""), out
