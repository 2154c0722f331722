"""A robot's bag as it comes: ``liquid-control replay`` of a bag that also holds a topic of a vendor message type
(not importable here), and ``benchmarks/bench_bags.py --bag`` on the user's own recording (audit findings 8, 9);
the playback's timing across a step back of the recorder's clock."""

import argparse
import re
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from liquid_control import cli
from liquid_control.bags import BagReader, BagWriter
from liquid_control.bags.messages import header, image_message, imu_message, twist_message
from liquid_control.ros.testing import Probe, free_domain_id, isolated_ros_env

ROOT = Path(__file__).resolve().parent.parent
VENDOR = "acme_msgs/msg/BaseStatus"
FRAMES = 10


def _vendor_bag(path: Path, camera: bool = True) -> Path:
    """A robot bag: camera frames (8x8, 20 Hz) and /cmd_vel, beside /acme/base_status of a vendor type whose
    package this environment lacks (the bag carries its definition; rclpy cannot import it)."""
    store = get_typestore(Stores.ROS2_KILTED)  # a private store: the vendor type is registered in it alone
    store.register(get_types_from_msg("std_msgs/Header header\nfloat64 battery_voltage\nuint8 mode\n", VENDOR))
    zero = QosTime(0, 0)
    qos = Qos(
        QosHistory.KEEP_LAST, 10, QosReliability.RELIABLE, QosDurability.VOLATILE, zero, zero,
        QosLiveliness.AUTOMATIC, zero, False,
    )  # fmt: skip
    writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    connections = {
        topic: writer.add_connection(topic, msgtype, typestore=store, offered_qos_profiles=[qos])
        for topic, msgtype in (
            ("/camera/image_raw", "sensor_msgs/msg/Image"),
            ("/cmd_vel", "geometry_msgs/msg/Twist"),
            ("/acme/base_status", VENDOR),
        )
        if camera or topic != "/camera/image_raw"
    }
    status = store.types[VENDOR]
    for k in range(FRAMES):
        t = 100.0 + 0.05 * k
        ns = int(t * 1e9)
        if camera:
            frame = image_message(np.full((8, 8, 3), k, np.uint8), t)
            writer.write(connections["/camera/image_raw"], ns, store.serialize_cdr(frame, "sensor_msgs/msg/Image"))
        twist = store.serialize_cdr(twist_message(0.5, 0.1), "geometry_msgs/msg/Twist")
        writer.write(connections["/cmd_vel"], ns + 1_000_000, twist)
        if k % 2 == 0:
            message = status(header=header(t), battery_voltage=24.1, mode=2)
            writer.write(connections["/acme/base_status"], ns + 2_000_000, store.serialize_cdr(message, VENDOR))
    writer.close()
    return path


def test_a_topic_of_a_type_not_importable_here_is_skipped_with_one_warning_and_the_rest_replays(tmp_path, capsys):
    """Before: "message type acme_msgs/msg/BaseStatus is not importable here", exit 2, the whole bag refused for
    a topic no policy reads, naming neither the topic nor --topics."""
    from geometry_msgs.msg import Twist
    from sensor_msgs.msg import Image

    from liquid_control.ros.replay import add_arguments, replay

    bag = _vendor_bag(tmp_path / "robot")
    env = isolated_ros_env()
    probe = Probe(env)  # stands in for policy_node: reads the camera, publishes the commands
    try:
        probe.record("/camera/image_raw", Image, 100)
        probe.publisher(Twist, "/cmd_vel")  # the recorder's topic has a publisher: no wait for one
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        argv = [str(bag), "-o", str(tmp_path / "replayed"), "--rate", "4", "--wait", "10", "--linger", "0.3"]
        args = parser.parse_args([*argv, "--domain-id", env["ROS_DOMAIN_ID"]])
        result = replay(args)
        assert probe.wait_for(lambda: len(probe.messages("/camera/image_raw")) == FRAMES, 10.0)
    finally:
        probe.close()
    assert result["published"] == {"/camera/image_raw": FRAMES}  # neither the vendor topic nor the commands
    received = [msg.data[0] for _, msg in probe.messages("/camera/image_raw")]
    assert received == list(range(FRAMES))
    warnings = [line for line in capsys.readouterr().err.splitlines() if "/acme/base_status" in line]
    assert len(warnings) == 1, warnings
    assert VENDOR in warnings[0] and "not importable here" in warnings[0] and "--topics" in warnings[0]
    assert Path(result["output"]).is_dir()


def test_a_node_that_listens_but_commands_on_another_topic_is_named_before_the_playback(tmp_path, capsys):
    """Before: a policy node subscribed to the camera but commanding on another topic than the recorded one (its
    command_topic) got the playback and an empty output bag with nothing said until the end. The wait for its
    publisher ends in a warning naming the topic."""
    from sensor_msgs.msg import Image

    from liquid_control.ros.replay import add_arguments, replay

    bag = _vendor_bag(tmp_path / "robot")
    env = isolated_ros_env()
    probe = Probe(env)  # reads the camera, publishes nothing on /cmd_vel
    try:
        probe.record("/camera/image_raw", Image, 100)
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        argv = [str(bag), "-o", str(tmp_path / "replayed"), "--rate", "10", "--wait", "3", "--linger", "0"]
        replay(parser.parse_args([*argv, "--domain-id", env["ROS_DOMAIN_ID"]]))
    finally:
        probe.close()
    err = capsys.readouterr().err
    assert "warning: nothing publishes /cmd_vel after 3 s (the node's commands on another topic?" in err, err
    assert "no subscriber on any of" not in err, err


def test_a_refused_replay_leaves_no_output_bag_and_the_corrected_command_can_use_the_name(tmp_path, capsys):
    """Before: the output bag was created before the publishers; a refusal left an empty bag at -o, and the
    corrected command was refused ("already exists")."""
    bag = _vendor_bag(tmp_path / "robot")
    out = tmp_path / "replayed"
    domain = ["--domain-id", str(free_domain_id())]
    # a topic of a type not importable here, asked for by name: an error naming the topic and its type
    assert cli.main(["replay", str(bag), "-o", str(out), "--topics", "/acme/base_status", *domain]) == 2
    assert not out.exists()
    err = capsys.readouterr().err
    assert f"--topics /acme/base_status: message type {VENDOR} is not importable here" in err, err
    assert "Traceback" not in err
    # a bag with nothing replayable (its commands are recorded, the vendor topic cannot be published)
    only_vendor = _vendor_bag(tmp_path / "status_only", camera=False)
    assert cli.main(["replay", str(only_vendor), "-o", str(out), *domain]) == 2
    err = capsys.readouterr().err
    assert "nothing to replay" in err and "/acme/base_status (not importable here)" in err, err
    assert not out.exists()
    # the corrected command, same -o: runs (no node runs here, so nothing is recorded: exit 1)
    argv = ["replay", str(bag), "-o", str(out), "--wait", "0", "--linger", "0.2", "--rate", "10", *domain]
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert "already exists" not in captured.err and "published /camera/image_raw 10" in captured.out
    assert out.is_dir()
    assert cli.main(argv) == 2  # an existing bag is still never overwritten
    assert f"{out}: already exists" in capsys.readouterr().err


def test_a_domain_id_outside_what_dds_takes_is_refused_before_anything_starts(tmp_path, capsys):
    """Before: `replay --domain-id -1` ended in rclpy's RuntimeError traceback ("Domain id (-1) should not be lower
    than zero") and `--domain-id 500` in Fast-DDS's "Calculated port number is too high" lines after the bags were
    opened (exit 1); sim and view refused both with one line. Replay now does too (conventions.params'
    domain_id_problem), exit 2, nothing written."""
    bag = _vendor_bag(tmp_path / "robot")
    out = tmp_path / "replayed"
    for domain in ("-1", "500"):
        assert cli.main(["replay", str(bag), "-o", str(out), "--wait", "0", "--domain-id", domain]) == 2
        err = capsys.readouterr().err
        assert err == (
            f"liquid-control replay: error: --domain-id must be between 0 and 232 (0-101 on Linux by default), got "
            f"{domain}\n"
        ), err
        assert not out.exists()


def _robot_bag(path: Path) -> Path:
    """1 s of a robot: 64x64 camera at 15 Hz on /front/image_raw, IMU at 100 Hz, /cmd_vel after each frame."""
    with BagWriter(path) as bag:
        for k in range(101):
            t = 50.0 + 0.01 * k
            bag.write("/imu/data", int(t * 1e9), imu_message([0.0, 0.0, 0.1 * k, 0.0, 0.0, 9.81], t))
        for k in range(16):
            t = 50.0 + k / 15
            bag.write("/front/image_raw", int(t * 1e9), image_message(np.full((64, 64, 3), 4 * k, np.uint8), t))
            bag.write("/cmd_vel", int(t * 1e9) + 5_000_000, twist_message(0.3, 0.05 * k))
    return path


def _bench(monkeypatch, *argv):
    monkeypatch.setattr(sys, "argv", ["bench_bags.py", *argv])
    runpy.run_path(str(ROOT / "benchmarks" / "bench_bags.py"), run_name="__main__")


def test_bench_bags_measures_a_bag_of_your_own_with_the_training_topic_options(tmp_path, capsys, monkeypatch):
    """Before: bench_bags.py measured only the expert bags it recorded itself (--bag: unrecognized argument)."""
    monkeypatch.chdir(ROOT)
    bag = str(_robot_bag(tmp_path / "robot"))
    _bench(monkeypatch, "--bag", bag, "--topic", "camera=/front/image_raw")
    out = capsys.readouterr().out
    line = re.search(r"^bags: 1 bags, (\S+) s recorded, (\d+) messages, .* training data \S+ s \((\d+) updates\)$",
                     out, re.M)  # fmt: skip
    assert line, out
    assert float(line.group(1)) == pytest.approx(1.0, abs=0.05) and int(line.group(2)) == 101 + 16 + 16
    assert int(line.group(3)) > 0, out
    for figure in ("read", "decode", "training_data"):
        assert float(re.search(rf"^bags_{figure}_x_realtime: (\S+)$", out, re.M).group(1)) > 0, out
    target = re.search(
        r"^target >= 10x the recorded duration, .* training data: bags (\S+)x (?:met|NOT met)$", out, re.M
    )
    assert target and f"bags_training_data_x_realtime: {target.group(1)}\n" in out, out  # beside the measured figure
    assert "camera=/front/image_raw" in out
    # the topic not mapped: one line naming the missing input and the option that maps it, exit 2
    with pytest.raises(SystemExit) as exited:
        _bench(monkeypatch, "--bag", bag)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "holds no /camera/image_raw (the policy's camera input)" in err and "--topic camera=TOPIC" in err, err


def test_a_step_back_of_the_recorders_clock_keeps_the_recorded_timing_after_it(tmp_path, monkeypatch):
    """30 frames at 15 Hz; from frame 15 on (1 s) the recording machine's clock reads 1.7 s less (an NTP step:
    log times and stamps). Played at --rate 2, each frame goes out at its real time / 2, the one after the step
    with the frame before it. Before: every frame after the step was overdue (log time - first log time < 0) and
    all 15 went out at once, right after frame 14."""
    path = tmp_path / "ntp_step"
    with BagWriter(path) as bag:
        for i in range(30):
            real = 100.0 + i / 15
            clock = real - (1.7 if i >= 15 else 0.0)
            bag.write(
                "/camera/image_raw", int(round(clock * 1e9)), image_message(np.full((8, 8, 3), i, np.uint8), clock)
            )
    sent = _paced_playback(monkeypatch, path, rate=2.0, max_gap_s=float("inf"))
    expected = [i / 15 / 2 for i in range(15)] + [(i - 1) / 15 / 2 for i in range(15, 30)]
    assert sent == pytest.approx(expected, abs=1e-6)


def _paced_playback(monkeypatch, path: Path, rate: float, max_gap_s: float) -> list[float]:
    """The wall times at which ``Replay.play`` publishes the messages of the bag at ``path`` (a simulated wall
    clock that the playback's waits advance: the timing without sleeping, no DDS)."""
    import threading

    from liquid_control.ros import replay as replay_module
    from liquid_control.ros.replay import Replay

    now = [0.0]

    class Clock:
        @staticmethod
        def monotonic():
            return now[0]

    class Stop(threading.Event):
        def wait(self, timeout=None):
            now[0] += timeout
            return False

    sent = []

    class Publisher:
        def publish(self, data):
            sent.append(now[0])

    monkeypatch.setattr(replay_module, "time", Clock)
    player = Replay.__new__(Replay)
    player.publishers, player.clock_pub = {"/camera/image_raw": Publisher()}, None
    player.published = {"/camera/image_raw": 0}
    player.msgtypes = {"/camera/image_raw": "sensor_msgs/msg/Image"}
    with BagReader(path) as reader:
        assert player.play(reader, rate, Stop(), max_gap_s) == len(sent)
    return sent


def test_a_step_forward_of_the_recorders_clock_is_cut_to_max_gap_with_a_notice(tmp_path, monkeypatch, capsys):
    """30 frames at 15 Hz; from frame 15 on the recording machine's clock reads an hour more (an NTP step
    forward). Before: the playback waited the hour (at --rate 2, 30 minutes of nothing) before frame 15. Now the
    silence is played as --max-gap (5 s of the recording, 2.5 s at --rate 2) and a notice says where and how
    long it was; a gap below --max-gap (a dropped second) is played as recorded; --max-gap inf keeps the hour."""
    path = tmp_path / "ntp_forward"
    with BagWriter(path) as bag:
        for i in range(30):
            clock = 100.0 + i / 15 + (3600.0 if i >= 15 else 0.0) + (1.0 if i >= 25 else 0.0)
            bag.write(
                "/camera/image_raw", int(round(clock * 1e9)), image_message(np.full((8, 8, 3), i, np.uint8), clock)
            )
    sent = _paced_playback(monkeypatch, path, rate=2.0, max_gap_s=5.0)
    before = [i / 15 / 2 for i in range(15)]
    after = [14 / 15 / 2 + 5.0 / 2 + (i - 15) / 15 / 2 + (0.5 if i >= 25 else 0.0) for i in range(15, 30)]
    assert sent == pytest.approx(before + after, abs=1e-6)
    err = capsys.readouterr().err
    assert err.count("replay: ") == 1, err
    assert f"{path}: no message for 3600.1 s of log time after 0.933 s of the bag" in err, err
    assert "clock stepped forward" in err and "after 5 s of it (--max-gap)" in err, err
    assert _paced_playback(monkeypatch, path, rate=2.0, max_gap_s=float("inf"))[15] == pytest.approx(
        14 / 15 / 2 + 3600.0 / 2 + 1 / 15 / 2, abs=1e-6
    )


def test_a_cut_after_a_step_back_of_the_clock_says_where_in_the_playback_it_is():
    """Log times 100, 101, 102, then the clock steps back to 50, 51, and nothing until 70: the cut is 3 s into
    the recording as played (before: -49 s, the log time since the first message)."""
    from liquid_control.ros.replay import Pacing

    pacing = Pacing(1.0, 0.0, max_gap_s=5.0)
    dues = [pacing.due(int(t * 1e9)) for t in (100, 101, 102, 50, 51, 70)]
    assert dues == pytest.approx([0, 1, 2, 2, 3, 8])
    assert pacing.cuts == [pytest.approx((3.0, 19.0))]


def test_an_unexpected_error_finishing_the_output_bag_still_releases_the_context_and_the_bags(tmp_path, monkeypatch):
    """Before: an error of the recorder's close other than a BagError skipped the rest of the cleanup: the rclpy
    context of a replay() called in-process (tests, a notebook) was never shut down, the input bags never closed."""
    import rclpy

    from liquid_control.ros import replay as replay_module

    contexts, closed = [], []

    class Context(rclpy.Context):
        def __init__(self):
            super().__init__()
            contexts.append(self)

    class Reader(BagReader):
        def close(self):
            closed.append(self.path)
            super().close()

    finish = replay_module._PlaybackRecorder.close

    def close(self):
        finish(self)  # the bag is finished, then something unforeseen fails
        raise RuntimeError("unforeseen")

    monkeypatch.setattr(replay_module.rclpy, "Context", Context)
    monkeypatch.setattr(replay_module, "BagReader", Reader)
    monkeypatch.setattr(replay_module._PlaybackRecorder, "close", close)
    bag = _vendor_bag(tmp_path / "robot")
    parser = argparse.ArgumentParser()
    replay_module.add_arguments(parser)
    argv = [str(bag), "-o", str(tmp_path / "replayed"), "--wait", "0", "--linger", "0.1", "--rate", "10"]
    args = parser.parse_args([*argv, "--domain-id", str(free_domain_id())])
    with pytest.raises(RuntimeError, match="unforeseen"):
        replay_module.replay(args)
    assert len(contexts) == 1 and not contexts[0].ok()  # shut down
    assert [Path(p) for p in closed] == [bag]


def test_replay_shows_control_characters_of_a_bags_names_escaped(tmp_path, capsys):
    """Before: replay's notices and errors printed a bag's topic names as written (`record --info` escapes them):
    a bag from elsewhere whose command topic is named `/<ESC>]0;pwned<BEL><ESC>[2J.../cmd_vel` retitled the
    terminal and cleared it, and a line break in a name forged a line of the notice or the error."""
    hostile = "/a\x1b]0;pwned\x07\x1b[2J\n  liquid-control replay: all fine\u202e/cmd_vel"
    bag = tmp_path / "hostile"
    with BagWriter(bag) as writer:
        for k in range(3):
            writer.write(hostile, int((100.0 + 0.05 * k) * 1e9), twist_message(0.5, 0.1))
    out = tmp_path / "replayed"
    domain = ["--domain-id", str(free_domain_id())]
    escaped = "/a\\x1b]0;pwned\\x07\\x1b[2J\\n  liquid-control replay: all fine\\u202e/cmd_vel"
    # held back (a velocity command), then nothing left to replay: a notice and an error, before any DDS
    assert cli.main(["replay", str(bag), "-o", str(out), *domain]) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 2 and all(line.isprintable() for line in lines), err
    assert lines[0].startswith(f"liquid-control replay: not replaying {escaped}: recorded commands"), err
    assert lines[1].startswith(f"liquid-control replay: error: nothing to replay: the bags hold {escaped};"), err
    assert not out.exists()
    # a --topics the bag lacks: the error lists what the bag holds
    assert cli.main(["replay", str(bag), "-o", str(out), "--topics", "/camera/image_raw", *domain]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"liquid-control replay: error: --topics /camera/image_raw: in none of the bags; they hold {escaped}"
    ], err


def test_bag_loop_replay_runs_from_any_folder_and_a_node_failing_at_start_up_ends_it_at_once(
    tmp_path, monkeypatch, capsys
):
    """Before: `scripts/bag_loop.py replay` passed policy_node config/rover_policy.yaml of the working directory: run
    from another folder, the node failed at start-up, the replay waited 30 s for it, played the bag to nobody and
    the script crashed on "no topic /cmd_vel". The parameter file is the package's, and a node that ends while the
    replay waits for it ends the replay at once, with the node's log and no bag left."""
    import importlib.util

    from liquid_control.ros import testing

    spec = importlib.util.spec_from_file_location("bag_loop", ROOT / "scripts" / "bag_loop.py")
    bag_loop = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bag_loop)
    started, start = [], testing.start_node_process

    def start_node_process(*args, **kwargs):
        started.append(kwargs["params_files"])
        return start(*args, **kwargs)

    monkeypatch.setattr(testing, "start_node_process", start_node_process)
    monkeypatch.chdir(tmp_path)  # not the checkout: no config/ here
    with BagWriter(tmp_path / "bag") as writer:
        for k in range(FRAMES):
            writer.write("/camera/image_raw", int((100.0 + 0.05 * k) * 1e9), image_message(np.zeros((8, 8, 3)), 100.0))
    (tmp_path / "broken.pt").write_text("not a checkpoint")  # a policy the node cannot load: it exits at start-up
    argv = ["replay", "--policy", "broken.pt", "--bag", "bag", "--out", "replay"]
    assert bag_loop.main(argv) == 1
    # a policy it cannot load has no world to take a file of (the shipped file from any folder: the test below)
    assert started == [()]
    error = capsys.readouterr().err
    assert "policy_node exited (status 1) before the replay began" in error, error
    assert "broken.pt" in error.split("policy_node.log:", 1)[1], error  # the node's log says why
    assert not (tmp_path / "replay" / "commands").exists()


TINY_BALANCER = {
    "name": "tiny_balancer",
    "world": "LiquidBalance-v0",
    "observation": {"vectors": {"imu": 6, "wheels": 2, "command": 2}, "update_on": "imu"},
    "core": {"type": "cfc", "units": 8},
    "action": {"size": 2, "low": [-1, -1], "high": [1, 1], "kind": "wheel_torques"},
}


def test_the_replay_comparison_refuses_commands_it_cannot_match_by_stamp(tmp_path, monkeypatch, capsys):
    """Before: the replay comparison (match_replayed, `scripts/bag_loop.py replay`) read TwistStamped commands only:
    a balancer's policy (wheel torques, which policy_node publishes as a Float64MultiArray only, no stamp) started
    the node with command_type twist_stamped, which it refuses for such a policy, and match_replayed ran the whole
    offline evaluation before failing on the recorded topic ('no topic /cmd_vel' / 'expected TwistStamped').
    Both refuse such a policy before anything runs, saying why; commands recorded unstamped (Twist) are named too."""
    import importlib.util

    import torch

    from liquid_control.bags.messages import float64_array_message
    from liquid_control.evaluation.offline import match_replayed
    from liquid_control.policy import Policy, save_policy
    from liquid_control.ros import testing

    torch.manual_seed(0)
    balancer = save_policy(tmp_path / "balancer.pt", Policy.from_config(TINY_BALANCER))
    with BagWriter(tmp_path / "replayed") as writer:
        for k in range(FRAMES):
            writer.write("/wheel_torques", int((100.0 + 0.05 * k) * 1e9), float64_array_message([0.1, -0.1]))
            writer.write("/cmd_vel", int((100.0 + 0.05 * k) * 1e9), twist_message(0.2, 0.0))
    not_a_bag = tmp_path / "never_read"  # refused before the offline run reads it
    why = r"balancer\.pt: the replay comparison matches .* 'wheel_torques' actions go out as std_msgs/Float64MultiArray"
    with pytest.raises(ValueError, match=why):
        match_replayed(str(balancer), str(not_a_bag), str(tmp_path / "replayed"), topic="/wheel_torques")

    rover = save_policy(
        tmp_path / "rover.pt",
        Policy.from_config(dict(TINY_BALANCER, action=dict(TINY_BALANCER["action"], kind="twist"))),
    )
    unstamped = r"replayed: the commands on /cmd_vel are geometry_msgs/msg/Twist, which carry no stamp"
    with pytest.raises(ValueError, match=unstamped):
        match_replayed(str(rover), str(not_a_bag), str(tmp_path / "replayed"))

    spec = importlib.util.spec_from_file_location("bag_loop", ROOT / "scripts" / "bag_loop.py")
    bag_loop = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bag_loop)
    started = []
    monkeypatch.setattr(testing, "start_node_process", lambda *args, **kwargs: started.append(args) or 1 / 0)
    argv = ["replay", "--policy", str(balancer), "--bag", str(not_a_bag), "--out", str(tmp_path / "replay")]
    assert bag_loop.main(argv) == 2
    assert not started
    error = capsys.readouterr().err
    assert error.startswith("bag_loop.py replay: error: ") and "carries no stamp" in error, error


def test_bag_loop_replay_gives_the_node_the_settings_of_the_offline_commands_and_names_a_missing_topic(
    tmp_path, monkeypatch, capsys
):
    """Before: `scripts/bag_loop.py replay` always gave policy_node config/rover_policy.yaml, so a twist policy of
    another robot (trained from its bags: its topics, action_scale and limits, recorded in the policy) was replayed
    with the rover's topics and limits, while match_replayed computed the offline commands with its own. The node now
    gets what the offline run uses, as eval --bag: --node-params (new) where given, else the recorded data settings
    over the world's shipped file, else that file. And a replay that recorded no command ended in a BagError
    traceback ('no topic /cmd_vel in the bag'): one line, exit 2."""
    import importlib.util

    import torch
    import yaml

    from liquid_control.bags.stream import data_spec
    from liquid_control.paths import config_dir
    from liquid_control.policy import Policy, save_policy
    from liquid_control.ros import replay as replay_module
    from liquid_control.ros import testing

    spec = importlib.util.spec_from_file_location("bag_loop", ROOT / "scripts" / "bag_loop.py")
    bag_loop = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bag_loop)
    config = dict(TINY_BALANCER, action=dict(TINY_BALANCER["action"], kind="twist"))  # LiquidBalance-v0
    robot2 = tmp_path / "robot2.yaml"
    robot2.write_text(
        yaml.safe_dump(
            {
                "policy_node": {
                    "ros__parameters": {
                        "imu_topic": "/robot2/imu",
                        "wheels_topic": "/robot2/joint_states",
                        "target_topic": "/robot2/target",
                        "action_scale": [1.5, 2.0],
                        "max_gap_s": 0.3,
                        "reorder_lag_s": 0.02,
                    }
                }
            }
        )
    )
    torch.manual_seed(0)
    record = {"data_spec": data_spec(config, robot2).describe()}
    trained = save_policy(tmp_path / "robot2_policy.pt", Policy.from_config(config), record)
    plain = save_policy(tmp_path / "plain.pt", Policy.from_config(config))

    class Started(Exception):
        pass

    started = []

    def start_node_process(module, name, parameters, env, **kwargs):
        started.append((kwargs["params_files"], parameters))
        raise Started

    monkeypatch.setattr(testing, "start_node_process", start_node_process)
    monkeypatch.chdir(tmp_path)  # not the checkout
    shipped = str(config_dir() / "balance_policy.yaml")
    for policy in (trained, plain):
        with pytest.raises(Started):
            bag_loop.replay_check(str(policy), "bag", "replay")
    with pytest.raises(Started):
        bag_loop.main(
            ["replay", "--policy", str(trained), "--bag", "bag", "--out", "replay", "--node-params", "robot2.yaml"]
        )
    (recorded_files, recorded), (plain_files, plain_settings), (given_files, given) = started
    assert recorded_files == (shipped,) and plain_files == (shipped,) and given_files == (str(robot2),)
    assert {k: recorded[k] for k in ("imu_topic", "wheels_topic", "target_topic", "action_scale")} == {
        "imu_topic": "/robot2/imu",
        "wheels_topic": "/robot2/joint_states",
        "target_topic": "/robot2/target",
        "action_scale": [1.5, 2.0],
    }
    assert recorded["max_gap_s"] == 0.3 and recorded["reorder_lag_s"] == 0.02 and recorded["joint_names"]
    for settings in (recorded, plain_settings, given):
        assert settings["command_topic"] == "/cmd_vel"  # where the replay records, whatever a file says
    assert "imu_topic" not in plain_settings and "imu_topic" not in given and "max_gap_s" not in given
    assert (
        bag_loop.main(["replay", "--policy", str(trained), "--bag", "bag", "--out", "r", "--node-params", "no.yaml"])
        == 2
    )
    assert capsys.readouterr().err.strip() == "bag_loop.py replay: error: --node-params no.yaml: no such file"

    # the node published nothing: the recorded bag lacks /cmd_vel
    class Exited:
        returncode = 0

        def poll(self):
            return 0

    with BagWriter(tmp_path / "recorded") as writer:
        writer.write("/other", int(100e9), twist_message(0.0, 0.0))
    monkeypatch.setattr(testing, "start_node_process", lambda *args, **kwargs: Exited())
    monkeypatch.setattr(replay_module, "replay", lambda args, gone=None: {"output": str(tmp_path / "recorded")})
    assert bag_loop.main(["replay", "--policy", str(trained), "--bag", "bag", "--out", "replay"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("bag_loop.py replay: error: ") and "no topic /cmd_vel in the bag" in error, error
    assert error.strip().endswith(f"(policy_node's log: {Path('replay') / 'policy_node.log'})"), error


@pytest.mark.parametrize("terminated, recorded", [(False, 3), (True, 3), (False, 0)])
def test_an_interrupted_bag_loop_replay_is_no_result_and_its_commands_are_never_reused(
    tmp_path, monkeypatch, capsys, terminated, recorded
):
    """Before: Ctrl-C during `scripts/bag_loop.py replay` (liquid-control replay catches it, finishes the bag and
    returns) compared the cut-short commands as the result ('50/114 commands matched', exit 0, replay.json, kept by
    every rerun of bag_loop.sh), or with none recorded failed 'no topic /cmd_vel' and left replay/commands, which
    every rerun refused ('already exists; a bag is never overwritten'). Now: exit 130 (SIGTERM 143) with an
    'interrupted' line, no replay.json, the commands moved aside (none: removed), and a rerun replays again, a
    commands bag left without replay.json (a killed replay) moved aside too."""
    import importlib.util

    from liquid_control.bags import BagError
    from liquid_control.ros import replay as replay_module
    from liquid_control.ros import testing

    spec = importlib.util.spec_from_file_location("bag_loop", ROOT / "scripts" / "bag_loop.py")
    bag_loop = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bag_loop)

    class Exited:
        returncode = 0

        def poll(self):
            return 0

    replayed = []

    def interrupted_replay(args, gone=None):  # as replay() returns after a Ctrl-C: the output bag finished
        if Path(args.output).exists():
            raise BagError(f"{args.output}: already exists; a bag is never overwritten, choose a new name")
        with BagWriter(args.output) as writer:
            for k in range(recorded):
                writer.write("/cmd_vel", int((100.0 + 0.05 * k) * 1e9), twist_message(0.5, 0.1))
        replayed.append(args.output)
        return {
            "output": args.output,
            "published": {"/camera/image_raw": 7},
            "recorded": {"/cmd_vel": recorded},
            "lost": {},
            "interrupted": "while playing bag (7 message(s) published)",
            "terminated": terminated,
        }

    monkeypatch.setattr(testing, "start_node_process", lambda *args, **kwargs: Exited())
    monkeypatch.setattr(replay_module, "replay", interrupted_replay)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.pt").write_text("not a checkpoint")  # no backend: nothing computed offline before
    argv = ["replay", "--policy", "broken.pt", "--bag", "bag", "--out", "replay"]
    status = 143 if terminated else 130
    assert bag_loop.main(argv) == status
    error = capsys.readouterr().err
    kept = (
        f"the {recorded} command(s) recorded until then are in {Path('replay') / 'commands.interrupted_1'}"
        if recorded
        else "no command was recorded"
    )
    assert error == (
        f"bag_loop.py replay: interrupted while playing bag (7 message(s) published); {kept}, not compared, no "
        "replay.json written: a rerun replays the bag again\n"
    ), error
    left = sorted(p.name for p in (tmp_path / "replay").iterdir())
    assert left == (["commands.interrupted_1"] if recorded else []), left  # no replay.json, no commands
    # a rerun replays again; a commands bag a killed replay left (no replay.json) is moved aside, not refused
    with BagWriter(tmp_path / "replay" / "commands") as writer:
        writer.write("/cmd_vel", int(100e9), twist_message(0.5, 0.1))
    assert bag_loop.main(argv) == status
    error = capsys.readouterr().err.splitlines()
    assert error[0] == (
        f"bag_loop.py replay: {Path('replay') / 'commands'} (no replay.json: that replay did not finish) moved to "
        f"{Path('replay') / 'commands.unfinished_1'}"
    ), error
    assert len(replayed) == 2 and not (tmp_path / "replay" / "replay.json").exists()
    expected = ["commands.unfinished_1"] + (["commands.interrupted_1", "commands.interrupted_2"] if recorded else [])
    assert sorted(p.name for p in (tmp_path / "replay").glob("commands*")) == sorted(expected)


def _node_commands(policy: Path, bag: Path, out: Path, change=None) -> int:
    """The commands policy_node publishes (twist_stamped, per update, no limiting) for ``bag``'s readings
    delivered in its order: its PolicyRunner fed each message with its header stamp, the command of each update
    stamped with the stamp of the message that caused it. ``change(k, stamp, command)`` -> command or None (not
    published). Returns how many were written to ``out``."""
    from liquid_control.bags import messages as M
    from liquid_control.bags.stream import data_spec
    from liquid_control.runtime import runner as R
    from liquid_control.runtime.backends import load_backend

    backend = load_backend(str(policy))
    spec = data_spec(backend.config)
    runner = R.PolicyRunner(backend, spec.limits)
    by_topic = {topic: sensor for sensor, topic in spec.topics.items() if sensor in backend.spec.sensors}
    written = 0
    with BagReader(bag) as reader, BagWriter(out) as writer:
        writer.add_topic("/cmd_vel", M.TWIST_STAMPED)
        twist_stamped = M.typestore().types[M.TWIST_STAMPED]
        for msg in reader.messages(list(by_topic)):
            decoded = msg.decode()
            stamp = M.stamp_seconds(decoded)
            value = M.sensor_reading(by_topic[msg.topic], decoded)
            result = runner.submit(by_topic[msg.topic], stamp, value, now=msg.log_time_ns * 1e-9, tag=stamp)
            if result.status != R.UPDATED:
                continue
            command = result.action * np.asarray(spec.action_scale)
            command = change(written, result.tag, command) if change else command
            if command is not None:
                twist = twist_message(*command)
                writer.write(
                    "/cmd_vel", msg.log_time_ns + 1000, twist_stamped(header=M.header(result.tag), twist=twist)
                )
            written += 1
    backend.close()
    return written


def test_the_replay_comparison_matches_commands_of_one_stamp_in_order(tmp_path):
    """Before: match_replayed keyed the offline commands by their update's stamp, and a camera frame delivered after
    IMU readings stamped after it updates at the last IMU update's stamp (dt 0): the two updates' keys collided, one
    command overwrote the other, and a node whose every command equalled the offline run's in order was reported
    as a mismatch (offline_updates 398 of 437 commands, max_abs_diff 0.64 in the probe's camera+IMU replay). Now
    both sides are keyed as the node stamps its commands, by the stamp of the message each update answers, and
    commands of one stamp (a frame stamped as an IMU reading) are matched in order. A changed or a dropped command
    is still found."""
    import torch
    from test_bags import CAMERA_IMU, _synthetic_bag

    from liquid_control.evaluation.offline import match_replayed
    from liquid_control.policy import Policy, save_policy

    torch.manual_seed(0)
    fused = {**CAMERA_IMU, "observation": {**CAMERA_IMU["observation"], "update_on": ["camera", "imu"]}}
    policy = save_policy(tmp_path / "fused.pt", Policy.from_config(fused))
    t0 = 100.0
    # 10 Hz frames delivered 20 ms after exposure, after the 100 Hz IMU readings stamped after them; odd ones
    # stamped as an IMU reading is (the node commands twice at that stamp), even ones 3 ms after one
    frames = [(t0 + k / 10 + (0.0 if k % 2 else 0.003), t0 + k / 10 + 0.023) for k in range(12)]
    imus = [
        (t0 + i / 100, t0 + i / 100 + 2e-4, np.array([0, 0, 0.05 * np.sin(i / 10), 0, 0, 9.81])) for i in range(120)
    ]
    commands = [(t + 0.001, (0.5, 0.1)) for _, t in frames]
    bag = _synthetic_bag(tmp_path / "late_frames", frames, imus, commands, noise=True)

    n = _node_commands(policy, bag, tmp_path / "node")
    assert n == len(frames) + len(imus) - 3  # an update on every message but the 3 IMU readings before a frame
    check = match_replayed(str(policy), str(bag), str(tmp_path / "node"))
    assert (check["offline_updates"], check["recorded_commands"], check["matched"]) == (n, n, n), check
    assert check["max_abs_diff"] == 0.0, check

    _node_commands(policy, bag, tmp_path / "changed", lambda k, stamp, command: command + 0.25 * (k == 40))
    check = match_replayed(str(policy), str(bag), str(tmp_path / "changed"))
    assert check["matched"] == n and check["max_abs_diff"] == pytest.approx(0.25), check
    # the first of two commands of one stamp (frame 1 and the IMU reading at 100.1 s) not published
    shared = round((t0 + 0.1) * 1e9)
    seen = []

    def drop(k, stamp, command):
        seen.append(round(stamp * 1e9) == shared)
        return None if seen.count(True) == 1 and seen[-1] else command

    _node_commands(policy, bag, tmp_path / "dropped", drop)
    assert seen.count(True) == 2
    check = match_replayed(str(policy), str(bag), str(tmp_path / "dropped"))
    assert check["recorded_commands"] == n - 1 and check["matched"] == n - 1 and check["max_abs_diff"] > 0, check


def _replay_to_a_node_the_recorder_falls_behind(tmp_path, monkeypatch, capsys, name: str, *options: str):
    """``liquid-control replay`` of 300 IMU readings (1 kHz) to a stand-in node that commands on every one (reliable,
    depth 10, as policy_node's command_qos_depth), while the recorder's executor sits in its first command's
    callback until the node has published all 300 and DDS acknowledged them (a recorder behind on a loaded
    machine). Returns (exit code, stdout, stderr, the commands published)."""
    import threading

    from rclpy.duration import Duration
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Imu
    from std_msgs.msg import Float64MultiArray

    from liquid_control.ros import replay as replay_module

    path = tmp_path / "imu_1khz"
    if not path.exists():
        with BagWriter(path) as bag:
            for k in range(300):
                t = 100.0 + k / 1000
                bag.write("/imu/data", int(round(t * 1e9)), imu_message(np.array([0, 0, 9.81, 0, 0, 0.0]), t))
    env = isolated_ros_env()
    probe = Probe(env)
    published, all_out = [0], threading.Event()
    commands = probe.publisher(
        Float64MultiArray, "/wheel_torques", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    )

    def command(_imu):  # in the probe's spin thread
        commands.publish(Float64MultiArray(data=[0.1, -0.1]))
        published[0] += 1
        if published[0] == 300:
            all_out.set()

    probe.node.create_subscription(Imu, "/imu/data", command, QoSProfile(depth=1000))
    real, held = replay_module._PlaybackRecorder._on_message, []

    def behind(self, topic, data, info=None):
        if not held:
            held.append(topic)
            caught_up = all_out.wait(20.0) and commands.wait_for_all_acked(Duration(seconds=10))
            assert caught_up, f"the stand-in node published {published[0]} of 300 commands, or DDS took them not"
        real(self, topic, data, info)

    monkeypatch.setattr(replay_module._PlaybackRecorder, "_on_message", behind)
    try:
        argv = ["replay", str(path), "-o", str(tmp_path / name), "--record", "/wheel_torques", "--wait", "10"]
        code = cli.main([*argv, "--linger", "0.5", "--domain-id", env["ROS_DOMAIN_ID"], *options])
    finally:
        probe.close()
    captured = capsys.readouterr()
    return code, captured.out, captured.err, published[0]


def test_a_replay_records_every_command_of_a_1khz_imu_policy_while_behind_and_says_any_it_lost(
    tmp_path, monkeypatch, capsys
):
    """Before: the replay's recorder kept the last 100 commands it had not taken yet (its qos_depth), and a camera+
    IMU policy with a 1 kHz IMU commanded ~800 times a second: behind by more than 0.125 s (0.7 s seen on 2 cores),
    DDS replaced the oldest without a word (Fast DDS reports no keep-last overrun): policy_node published 4021,
    the bag held 3990; in a rerun 3415 and 3017, nothing said. The recorder now keeps --qos-depth (5000), counts
    the gaps in the publisher's sequence numbers as lost, and the end says how many of how many and the option."""
    code, out, err, published = _replay_to_a_node_the_recorder_falls_behind(tmp_path, monkeypatch, capsys, "all")
    assert published == 300 and code == 0, err
    assert "recorded /wheel_torques 300; published /imu/data 300" in out, out + err
    assert "are not in the bag" not in err, err
    with BagReader(tmp_path / "all") as reader:
        assert reader.topics["/wheel_torques"].count == 300

    # a history too short for how far the recorder is behind: the loss is counted and said at the end
    code, out, err, published = _replay_to_a_node_the_recorder_falls_behind(
        tmp_path, monkeypatch, capsys, "short", "--qos-depth", "50"
    )
    assert published == 300 and code == 0, err
    said = re.search(r"warning: /wheel_torques: (\d+) of the 300 messages published on it while recording are not "
                     r"in the bag \(gaps in the publisher's sequence numbers", err)  # fmt: skip
    assert said, err
    lost = int(said.group(1))
    assert lost >= 200 and f"recorded /wheel_torques {300 - lost};" in out, out
    assert "behind by more than 50 messages," in err and "a larger --qos-depth (it was 50)" in err, err
    # a depth past what Fast DDS keeps a reader is said as what it keeps, with no advice to raise it further
    from liquid_control.ros.replay import lost_text

    monkeypatch.delenv("RMW_IMPLEMENTATION", raising=False)
    for depth in (5000, 10000):
        text = lost_text("/wheel_torques", 1000, 5020, depth)
        assert "behind by more than 5000 messages" in text and "--qos-depth" not in text, text
    assert "(Fast DDS keeps no more a reader)" in text
    monkeypatch.setenv("RMW_IMPLEMENTATION", "rmw_cyclonedds_cpp")  # no such cap there
    assert "behind by more than 10000 messages, " in lost_text("/wheel_torques", 1000, 5020, 10000)
    with BagReader(tmp_path / "short") as reader:
        assert reader.topics["/wheel_torques"].count == 300 - lost
