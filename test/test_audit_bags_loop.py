"""The real-robot loop met as a user meets it (docs/real_robot.md sections 2-5): mistakes a robotics user makes
with the bag commands, each answered by a clear message and nothing done lost."""

import math
import os
import signal

import numpy as np
import pytest

from liquid_control import cli
from liquid_control.bags import BagReader, BagWriter
from liquid_control.bags.messages import image_message, twist_message
from liquid_control.ros.testing import free_domain_id

FRAMES = 10


def _small_bag(path, frames: int = FRAMES):
    """``frames`` 8x8 camera frames at 20 Hz on /camera/image_raw, a /cmd_vel after each."""
    with BagWriter(path) as bag:
        for k in range(frames):
            t = 100.0 + 0.05 * k
            bag.write("/camera/image_raw", int(t * 1e9), image_message(np.full((8, 8, 3), k, np.uint8), t))
            bag.write("/cmd_vel", int(t * 1e9) + 1_000_000, twist_message(0.5, 0.1))
    return path


@pytest.mark.parametrize("how", ["sigint", "sigterm"])
def test_ctrl_c_during_replay_finishes_the_output_bag_and_says_so(tmp_path, capsys, monkeypatch, how):
    """Before: Ctrl-C printed a KeyboardInterrupt traceback from threading.wait inside Replay.play; SIGTERM left
    the output bag without its footer (refused by train/eval until `record --recover`)."""
    from liquid_control.ros.replay import Replay

    bag, out = _small_bag(tmp_path / "run_017"), tmp_path / "replayed"
    original = Replay.play

    def play_then_stop(self, reader, rate, stop, max_gap_s=math.inf):
        original(self, reader, rate, stop, max_gap_s)
        if how == "sigint":
            raise KeyboardInterrupt  # what Python's SIGINT handler raises in the main thread
        os.kill(os.getpid(), signal.SIGTERM)
        stop.wait(5.0)  # the handler interrupts this wait
        raise AssertionError("SIGTERM did not stop the playback")

    terminated = []

    def test_handler(*_):  # the test runner survives a SIGTERM that replay does not catch
        terminated.append(True)

    previous = signal.signal(signal.SIGTERM, test_handler)
    monkeypatch.setattr(Replay, "play", play_then_stop)
    argv = ["replay", str(bag), "-o", str(out), "--wait", "0", "--linger", "0", "--rate", "20"]
    try:
        status = cli.main([*argv, "--domain-id", str(free_domain_id())])
    except KeyboardInterrupt:
        status = "KeyboardInterrupt traceback"
    finally:
        handler = signal.signal(signal.SIGTERM, previous)
    assert not terminated, "SIGTERM reached the default handler: replay left its output bag unfinished"
    assert handler is test_handler  # replay restored the handler it found
    assert status == (130 if how == "sigint" else 143)
    err = capsys.readouterr().err
    assert f"liquid-control replay: interrupted while playing {bag} ({FRAMES} message(s) published)" in err, err
    assert f"{out} is a complete bag holding what was recorded until then: {{'/cmd_vel': 0}}" in err
    assert "Traceback" not in err
    with BagReader(out) as reader:  # complete: opens without --allow-truncated
        assert not reader.salvaged  # (no node ran here: nothing to record)
