"""A robot round's bag (the joystick's /cmd_vel, the base's /base/cmd_vel, the policy's
/policy/cmd_vel) replayed to record the policy: the recorded velocity commands are not republished unless asked."""

import argparse

import numpy as np
from geometry_msgs.msg import Twist
from sensor_msgs.msg import Image

from liquid_control import cli
from liquid_control.bags import BagWriter
from liquid_control.bags.messages import float64_array_message, image_message, imu_message, twist_message
from liquid_control.ros.replay import add_arguments, replay
from liquid_control.ros.testing import Probe, free_domain_id, isolated_ros_env

FRAMES = 8
COMMANDS = ("/cmd_vel", "/base/cmd_vel", "/policy/cmd_vel")


def _round_bag(path, camera=True):
    """What launch/takeover.launch.py records: camera frames (8x8, 20 Hz) and the three velocity commands."""
    with BagWriter(path) as bag:
        for k in range(FRAMES):
            ns = int((100.0 + 0.05 * k) * 1e9)
            if camera:
                bag.write("/camera/image_raw", ns, image_message(np.full((8, 8, 3), k, np.uint8), ns * 1e-9))
            for i, topic in enumerate(COMMANDS):
                bag.write(topic, ns + (i + 1) * 1_000_000, twist_message(0.5, 0.1))
    return path


def test_recorded_velocity_commands_are_not_replayed_unless_named(tmp_path, capsys):
    """Before: `replay BAG --record /policy/cmd_vel` republished the bag's /cmd_vel and /base/cmd_vel (8 each):
    on a robot the base drove the recorded commands (and a takeover_mux took /cmd_vel for a present operator)."""
    bag = _round_bag(tmp_path / "round")
    env = isolated_ros_env()
    probe = Probe(env)  # the policy node (camera in, /policy/cmd_vel out) and the base driver (/base/cmd_vel in)
    try:
        probe.record("/camera/image_raw", Image, 100)
        for topic in ("/cmd_vel", "/base/cmd_vel"):
            probe.record(topic, Twist, 100)
        probe.publisher(Twist, "/policy/cmd_vel")
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        argv = [str(bag), "-o", str(tmp_path / "replayed"), "--record", "/policy/cmd_vel", "--rate", "4"]
        args = parser.parse_args([*argv, "--wait", "10", "--linger", "0.3", "--domain-id", env["ROS_DOMAIN_ID"]])
        result = replay(args)
        assert probe.wait_for(lambda: len(probe.messages("/camera/image_raw")) == FRAMES, 10.0)
        assert probe.messages("/cmd_vel") == [] and probe.messages("/base/cmd_vel") == []
    finally:
        probe.close()
    assert result["published"] == {"/camera/image_raw": FRAMES}
    err = capsys.readouterr().err
    assert "replay: not replaying /base/cmd_vel, /cmd_vel: recorded commands" in err, err
    assert "name them in --topics to replay them" in err

    # named in --topics: replayed (the user asked, as `ros2 bag play --topics`), with a warning
    domain = ["--domain-id", str(free_domain_id())]
    out = tmp_path / "asked"
    argv = ["replay", str(bag), "-o", str(out), "--wait", "0", "--linger", "0.1", "--rate", "10", *domain]
    assert cli.main([*argv, "--topics", "/camera/image_raw", "/base/cmd_vel"]) == 1  # no node: nothing recorded
    captured = capsys.readouterr()
    assert "recorded /cmd_vel 0; published /camera/image_raw 8, /base/cmd_vel 8" in captured.out, captured.out
    assert "warning: replaying the recorded commands /base/cmd_vel (--topics)" in captured.err

    # a bag of commands only: nothing to replay, and the refusal says why and how
    commands_only = _round_bag(tmp_path / "commands_only", camera=False)
    assert cli.main(["replay", str(commands_only), "-o", str(tmp_path / "none"), *domain]) == 2
    err = capsys.readouterr().err
    assert "nothing to replay" in err and "/base/cmd_vel, /policy/cmd_vel (commands: name them in" in err
    assert not (tmp_path / "none").exists()


def test_nothing_recorded_while_velocity_commands_were_held_back_says_a_policy_may_take_one(tmp_path, capsys):
    """A balancer whose target velocity comes from /cmd_vel (target_topic:=cmd_vel) got no input from the replay
    (the bag's /cmd_vel held back) and the user saw only 'nothing was recorded'."""
    bag = _round_bag(tmp_path / "round")
    out = tmp_path / "replayed"
    argv = ["replay", str(bag), "-o", str(out), "--record", "/policy/cmd_vel", "--wait", "0", "--linger", "0.1"]
    assert cli.main([*argv, "--rate", "10", "--domain-id", str(free_domain_id())]) == 1  # no node here
    err = capsys.readouterr().err
    hint = "if the policy takes one of them as an input, e.g. a target velocity, name it in --topics"
    assert "replay: not replaying /base/cmd_vel, /cmd_vel: recorded commands" in err and hint in err, err
    nothing = "warning: nothing was recorded (is the policy node running and active?)"
    assert f"{nothing}; not replayed: /base/cmd_vel, /cmd_vel ({hint})" in err


def test_every_replay_line_names_the_command_and_a_missed_reset_says_the_state_was_not_reset(tmp_path, capsys):
    """Before: replay's lines began 'replay: warning:', 'replay:', 'liquid-control replay: error:' or a bare
    'warning:', and '<service> did not answer' did not say that the policy's liquid state was therefore not reset
    before that bag; the result line was 'wrote <bag>: recorded {...}, published {...}' (Python dicts). Each bag's
    'replayed <bag>: N messages in T s', progress, was on stdout (beside the result) without the command's name."""
    bag = _round_bag(tmp_path / "round")
    out = tmp_path / "replayed"
    argv = ["replay", str(bag), "-o", str(out), "--wait", "0", "--linger", "0.1", "--rate", "10"]
    argv += ["--reset-service", "/nobody/reset", "--domain-id", str(free_domain_id())]
    assert cli.main(argv) == 1  # no node here: no reset service, nothing recorded
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert lines and all(line.startswith("liquid-control replay: ") for line in lines), captured.err
    said = (
        "liquid-control replay: warning: --reset-service /nobody/reset did not answer: no such service after 5 s: "
        f"the policy's liquid state was not reset before {bag}"
    )
    assert any(line.startswith(said) for line in lines), captured.err
    assert "liquid-control replay: warning: nothing was recorded" in captured.err
    assert captured.out == f"wrote {out}: recorded /cmd_vel 0; published /camera/image_raw 8\n", captured.out
    assert any(line.startswith(f"liquid-control replay: replayed {bag}: 8 messages in ") for line in lines), lines


def test_a_balancer_bags_recorded_torques_are_held_back_and_the_nodes_are_recorded(tmp_path, capsys):
    """Before: `replay` of a balancer's bag (IMU, /wheel_torques) republished the recorded torques on the node's own
    command topic (on a robot: the motors) and recorded /cmd_vel, which a balancer's node never publishes
    ('nothing was recorded'). The bag's /wheel_torques is recorded by default, not replayed; a namespaced copy
    (/base/wheel_torques) is held back as /base/cmd_vel is."""
    path = tmp_path / "balancer"
    with BagWriter(path) as bag:
        for k in range(FRAMES):
            ns = int((100.0 + 0.005 * k) * 1e9)
            bag.write("/imu/data", ns, imu_message(np.zeros(6), ns * 1e-9))
            bag.write("/wheel_torques", ns + 1_000_000, float64_array_message([0.1, -0.1]))
            bag.write("/base/wheel_torques", ns + 2_000_000, float64_array_message([0.1, -0.1]))
    out = tmp_path / "replayed"
    argv = ["replay", str(path), "-o", str(out), "--wait", "0", "--linger", "0.1", "--rate", "10"]
    assert cli.main([*argv, "--domain-id", str(free_domain_id())]) == 1  # no node here: nothing recorded
    captured = capsys.readouterr()
    assert f"recorded /wheel_torques 0; published /imu/data {FRAMES}" in captured.out, captured.out
    assert "not replaying /base/wheel_torques: recorded commands" in captured.err, captured.err


def test_a_bag_recorded_in_a_namespace_records_that_namespaces_command_topic_by_default(tmp_path, capsys):
    """A probe of a fleet: robot1's recorder (under /robot1) wrote /robot1/camera/image_raw and /robot1/cmd_vel;
    its replay held /robot1/cmd_vel back but recorded /cmd_vel, where robot1's node does not publish, and ended in
    'nothing was recorded (is the policy node running and active?)' with the node running."""
    path = tmp_path / "robot1"
    with BagWriter(path) as bag:
        for k in range(FRAMES):
            ns = int((100.0 + 0.05 * k) * 1e9)
            bag.write("/robot1/camera/image_raw", ns, image_message(np.full((8, 8, 3), k, np.uint8), ns * 1e-9))
            bag.write("/robot1/cmd_vel", ns + 1_000_000, twist_message(0.5, 0.1))
    out = tmp_path / "replayed"
    argv = ["replay", str(path), "-o", str(out), "--wait", "0", "--linger", "0.1", "--rate", "10"]
    assert cli.main([*argv, "--domain-id", str(free_domain_id())]) == 1  # no node here: nothing recorded
    captured = capsys.readouterr()
    assert f"recorded /robot1/cmd_vel 0; published /robot1/camera/image_raw {FRAMES}" in captured.out, captured.out


def test_commands_on_other_names_are_held_back_by_their_type(tmp_path, capsys):
    """A robot's own bag: twist_mux's joystick input /joy_vel, ros2_control's /diff_drive_controller/cmd_vel_unstamped,
    a forward controller's Float64MultiArray and the joystick's /joy. Before, only topics named cmd_vel or
    wheel_torques were held back: all four were replayed, and on the robot the base drove the recorded commands. A
    Twist on /target_velocity (the balancers' input, by the node's default name) is still replayed."""
    from liquid_control.bags.messages import header, typestore

    types = typestore().types
    bag_path = tmp_path / "robot"
    with BagWriter(bag_path) as bag:
        for k in range(FRAMES):
            ns = int((100.0 + 0.05 * k) * 1e9)
            bag.write("/camera/image_raw", ns, image_message(np.full((8, 8, 3), k, np.uint8), ns * 1e-9))
            for topic in ("/joy_vel", "/diff_drive_controller/cmd_vel_unstamped", "/target_velocity"):
                bag.write(topic, ns + 1_000_000, twist_message(0.5, 0.1))
            bag.write("/forward_controller/commands", ns + 2_000_000, float64_array_message([0.1, 0.2]))
            joy = types["sensor_msgs/msg/Joy"](
                header=header(ns * 1e-9), axes=np.array([0.5, 0.1], np.float32), buttons=np.array([1], np.int32)
            )
            bag.write("/joy", ns + 3_000_000, joy)
    out = tmp_path / "replayed"
    argv = ["replay", str(bag_path), "-o", str(out), "--wait", "0", "--linger", "0.1", "--rate", "10"]
    assert cli.main([*argv, "--domain-id", str(free_domain_id())]) == 1  # no node here: nothing recorded
    captured = capsys.readouterr()
    assert "published /camera/image_raw 8, /target_velocity 8\n" in captured.out, captured.out
    held = "/diff_drive_controller/cmd_vel_unstamped, /forward_controller/commands, /joy, /joy_vel"
    assert f"replay: not replaying {held}: recorded commands" in captured.err, captured.err
