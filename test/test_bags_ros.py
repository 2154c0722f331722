"""Bags over real DDS: sim_node records a closed-loop episode with policy_node, ``liquid-control record`` records
the same graph, and ``liquid-control replay`` feeds the recording back into the running policy_node."""

import argparse
import contextlib
import json
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from sensor_msgs.msg import Imu
from std_srvs.srv import Trigger
from test_ros_launch import launch_stubs  # noqa: F401  (fixture)

from liquid_control.bags import BagReader
from liquid_control.bags.io import qos_dict, typestore
from liquid_control.evaluation.offline import evaluate_offline, match_replayed
from liquid_control.paths import config_dir
from liquid_control.policy import Policy, save_policy
from liquid_control.ros.testing import Probe, isolated_ros_env, start_node_process, stop_process

H = W = 16
CONFIG = {
    "name": "tiny_bag_rover",
    "world": "LiquidRover-v0",
    "observation": {"image": {"height": H, "width": W}, "vectors": {}, "update_on": "camera"},
    "encoder": {"camera": {"channels": [4, 4], "kernel_sizes": [3, 3], "strides": [2, 2], "features": 8}},
    "core": {"type": "cfc", "units": 12, "wiring": "ncp", "mode": "pure"},
    "action": {"size": 2, "low": [-1, -1], "high": [1, 1], "kind": "twist"},
}


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory):
    torch.manual_seed(4)
    policy = Policy.from_config(CONFIG)
    with torch.no_grad():  # larger weights: commands that visibly change from frame to frame
        for p in policy.parameters():
            p.mul_(2.0)
    return save_policy(tmp_path_factory.mktemp("policy") / "tiny.pt", policy)


def test_closed_loop_recorded_by_sim_node_and_the_recorder_replays_exactly(policy_file, tmp_path, monkeypatch):
    env = isolated_ros_env()
    rover_params = str(config_dir() / "rover_policy.yaml")
    recorder = subprocess.Popen(
        [sys.executable, "-m", "liquid_control.cli", "record", "-o", str(tmp_path / "graph"), "/camera/image_raw",
         "/cmd_vel"],
        env=env, stdout=open(tmp_path / "record.log", "w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    probe = Probe(env)
    probe.record("/imu/data", Imu, 10)  # sim_node waits for a subscriber on every sensor; the policy reads the camera

    def recorder_on(topic):
        return any(i.node_name == "bag_recorder" for i in probe.node.get_subscriptions_info_by_topic(topic))

    # sim_node starts the episode as soon as it sees the policy node, which brings /cmd_vel's publisher; the recorder
    # finds that publisher on its own (its next discovery poll, its own DDS discovery of the policy's participant),
    # and a recorder that lagged more than the episode (~0.4 s of wall time, lockstep) recorded no /cmd_vel at all
    # (1 in 5 fresh-clone runs, LIQUID_CONTROL_NATIVE=0). The episode waits for it: sim_node calls its
    # policy_reset_service before each episode's first message, and waits up to 5 s for the reply.
    gate = []

    def hold_the_episode(request, response):
        gate.append(probe.wait_for(lambda: recorder_on("/cmd_vel"), 4.5))
        response.success = gate[-1]
        return response

    probe.node.create_service(Trigger, "/hold_the_episode", hold_the_episode)
    sim = start_node_process(
        "liquid_control.ros.sim_node",
        "sim_node",
        dict(
            world="LiquidRover-v0",
            seed=3,
            episodes=1,
            time_limit=2.0,
            render_size=W,
            use_sim_time=True,
            lockstep=True,
            command_type="twist_stamped",
            policy_reset_service="/hold_the_episode",
            wait_for_subscribers_s=60.0,
            record_bag=str(tmp_path / "sim"),
        ),
        env,
        tmp_path / "sim.log",
    )
    # The graph recorder subscribes once it sees a publisher; sim_node starts publishing as soon as the policy node
    # subscribes. Start the policy node only after the recorder holds the camera topic, or it misses frames.
    if not probe.wait_for(lambda: probe.node.count_subscribers("/camera/image_raw") >= 1, 60.0):
        probe.close()
        for proc in (sim, recorder):
            stop_process(proc)
        pytest.fail("the recorder never subscribed to the camera:\n" + (tmp_path / "record.log").read_text())
    node = start_node_process(
        "liquid_control.ros.policy_node",
        "policy_node",
        dict(
            policy=str(policy_file),
            autostart=True,
            command_type="twist_stamped",  # each command carries the stamp of the frame it answers
            sensor_qos_reliability="reliable",
            camera_qos_depth=100,
            max_command=[100.0, 100.0],  # no limiter: the commands are action * action_scale
            max_command_rate=[1e9, 1e9],
            watchdog_timeout_s=1000.0,
        ),
        env,
        tmp_path / "policy_node.log",
        params_files=(rover_params,),
    )
    hashes = {}
    try:
        while sim.poll() is None:
            for topic in ("/camera/image_raw", "/cmd_vel"):
                infos = probe.node.get_publishers_info_by_topic(topic)
                if infos:
                    hashes[topic] = str(infos[0].topic_type_hash)
            time.sleep(0.1)
        assert sim.wait(timeout=120) == 0, (tmp_path / "sim.log").read_text()
        time.sleep(0.5)
        assert stop_process(recorder, grace=30.0) == 0, (tmp_path / "record.log").read_text()  # a loaded machine
        assert gate == [True], (  # [False]: it had not within 4.5 s of sim_node seeing the policy node
            f"the recorder's subscription to /cmd_vel before the episode: {gate}\n"
            + (tmp_path / "record.log").read_text()
        )

        # 1. sim_node's bag: every topic it publishes and the commands it received, complete and readable
        sim_bag = tmp_path / "sim" / "episode_3"
        with BagReader(sim_bag) as reader:
            assert {"/camera/image_raw", "/imu/data", "/odom", "/cmd_vel", "/episode_status"} <= set(reader.topics)
            assert reader.topics["/cmd_vel"].msgtype == "geometry_msgs/msg/TwistStamped"
            assert qos_dict(reader.topics["/camera/image_raw"].qos[0])["reliability"] == "reliable"
            (status,) = [json.loads(m.decode().data) for m in reader.messages(["/episode_status"])]
            frames = reader.topics["/camera/image_raw"].count
            # each message logged when the world delivered it (the rover's sensors: no latency, so at its stamp);
            # before, in lockstep every IMU message between two frames was logged at the next frame's time
            late = [
                m.log_time_ns - (stamp.sec * 10**9 + stamp.nanosec)
                for m in reader.messages(["/imu/data", "/camera/image_raw"])
                for stamp in [m.decode().header.stamp]
            ]
        assert len(late) > 100 and max(abs(ns) for ns in late) < 1000, sorted(late)[-5:]
        assert status["seed"] == 3 and status["messages"]["camera"] == frames > 20

        # 2. the recorded commands are the policy's: offline, the same policy on the bag gives them back (labels:
        # the command after each frame; lockstep: one per frame)
        offline = evaluate_offline({"tiny": str(policy_file)}, [str(sim_bag)], tmp_path / "offline", progress=False)
        overall = offline["policies"]["tiny"]["overall"]
        assert (tmp_path / "offline" / offline["policies"]["tiny"]["bags"][str(sim_bag)]["plot"]).stat().st_size > 0
        assert overall["labelled"] >= frames - 1 and max(overall["mae"]) < 1e-6, overall

        # 3. the graph recorder: the same frames, the publishers' QoS and the graph's type hashes
        with BagReader(tmp_path / "graph") as reader:
            assert reader.topics["/camera/image_raw"].count == frames
            offered = qos_dict(reader.topics["/camera/image_raw"].qos[0])
            assert offered["reliability"] == "reliable" and offered["durability"] == "volatile"
        meta = (tmp_path / "graph" / "metadata.yaml").read_text()
        for topic, type_hash in hashes.items():
            assert type_hash in meta and type_hash == typestore().hash_rihs01(
                "sensor_msgs/msg/Image" if topic == "/camera/image_raw" else "geometry_msgs/msg/TwistStamped"
            )

        # 4. replay the bag into the running policy_node (4x faster): its commands match the offline ones by stamp
        from liquid_control.ros.replay import add_arguments, replay

        parser = argparse.ArgumentParser()
        add_arguments(parser)
        args = parser.parse_args(
            [
                str(sim_bag),
                "-o",
                str(tmp_path / "replayed"),
                "--rate",
                "4",
                "--linger",
                "3",  # the last frame's command must be back before the recording closes, on a loaded machine too
                "--domain-id",
                env["ROS_DOMAIN_ID"],
            ]
        )
        # undone after the test: set for good, it leaked into the next tests of the same xdist worker
        monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", env["ROS_AUTOMATIC_DISCOVERY_RANGE"])
        result = replay(args)
        assert result["published"]["/camera/image_raw"] == frames and "/cmd_vel" not in result["published"]
        check = match_replayed(str(policy_file), str(sim_bag), result["output"])
        assert check["matched"] == check["offline_updates"] == frames and check["max_abs_diff"] == 0.0, check
        with BagReader(result["output"]) as reader:
            assert qos_dict(reader.topics["/cmd_vel"].qos[0])["reliability"] == "reliable"
    finally:
        probe.close()
        for proc in (sim, recorder, node):
            stop_process(proc)
    np.testing.assert_array_equal(check["offline_updates"], frames)


def test_record_launch_runs_the_recorder_on_the_policy_topics(launch_stubs, tmp_path):  # noqa: F811
    from test_ros_launch import ROOT, console_scripts

    from liquid_control.ros.recorder_node import RECORDER_PARAMETERS

    declared, nodes = launch_stubs(ROOT / "launch" / "record.launch.py", output="bags/day1")
    assert {"output", "params_file", "topics", "use_sim_time", "duration_s"} <= set(declared)
    (node,) = nodes
    assert node.kwargs["executable"] == "bag_recorder" and "bag_recorder" in console_scripts()
    params = node.kwargs["parameters"][-1]
    assert set(params) <= set(RECORDER_PARAMETERS) | {"use_sim_time"}
    # the inputs of the shipped rover policy (the camera alone) and its command
    assert params["topics"] == ["camera/image_raw", "camera/camera_info", "cmd_vel"] and params["output"] == "bags/day1"
    robot = tmp_path / "robot.yaml"
    robot.write_text("policy_node:\n  ros__parameters:\n    camera_topic: front/image\n    command_topic: /base/cmd\n")
    (node,) = launch_stubs(
        ROOT / "launch" / "record.launch.py",
        params_file=str(robot),
        use_sim_time="true",
        max_bag_size="4000000000",
        max_bag_duration="600",
    )[1]
    params = node.kwargs["parameters"][-1]
    assert params["max_bag_size"] == 4_000_000_000 and params["max_bag_duration"] == 600.0
    # no policy named: every input topic parameter
    inputs = ["front/image", "front/camera_info", "imu/data", "joint_states", "target_velocity"]
    assert params["topics"] == [*inputs, "/base/cmd"] and params["use_sim_time"] is True


def test_a_namespaced_recorder_records_the_topics_its_namespaced_policy_reads(tmp_path):
    """Before: the recorder's default topics (record.launch.py, takeover.launch.py, `liquid-control record`) were
    made absolute from the parameter file's relative names, so a recorder launched beside a policy under /robot1
    recorded /camera/image_raw and /cmd_vel, not the /robot1/... topics that robot's nodes use."""
    import rclpy

    from liquid_control.paths import config_dir
    from liquid_control.ros.recorder_node import BagRecorderNode, default_topics

    env = isolated_ros_env()
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(env["ROS_DOMAIN_ID"]))
    try:
        topics = default_topics(str(config_dir() / "rover_policy.yaml")) + ["/clock"]  # an absolute name stays
        recorder = BagRecorderNode(
            context=context,
            namespace="/robot1",
            parameter_overrides={"output": str(tmp_path / "bag"), "topics": topics},
        )
        namespaced = ["/robot1/camera/image_raw", "/robot1/camera/camera_info", "/robot1/cmd_vel"]
        assert list(recorder.counts) == [*namespaced, "/clock"]
        recorder.close()
        recorder.destroy_node()
    finally:
        context.try_shutdown()


def test_bag_loop_script_runs_the_whole_loop_shrunk(tmp_path):
    """scripts/bag_loop.sh, shrunk (a camera 16 high and 24 wide, recorded at the config's size without RENDER_SIZE,
    2 s recordings, one epoch, 2 simulated episodes): records
    noisy expert bags, trains from them, evaluates offline and in simulation, replays a test bag over DDS, then
    runs one DAgger round (scripts/takeover_rounds.sh: the policy drives 3 episodes of at most 3 s, the expert
    labels every update and drives half of them at random, the policy is fine-tuned on every bag so far for 2
    epochs and evaluated again); settings the round does not share with the loop must not leak into it."""
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parent.parent
    config = tmp_path / "tiny.yaml"
    wide = dict(CONFIG, observation=dict(CONFIG["observation"], image={"height": H, "width": 24}))
    config.write_text(yaml.safe_dump({**wide, "training": {"epochs_first": 1, "batch_size": 2, "sequence_length": 8}}))
    out = tmp_path / "loop"
    settings = dict(
        OUT=str(out), CONFIG=str(config), EPISODES="2", VAL_EPISODES="1", TEST_EPISODES="1", EVAL_EPISODES="2",
        EPOCHS="1", TIME_LIMIT="2", NOISE_STD="0.3", NOISE_CORR="0.9", BURST_RATE="1",
        EVAL_ARGS="--backend serial --no-saliency", DAGGER_ROUNDS="1", ROUND_EPISODES="3", ROUND_EPOCHS="2",
        ROUND_TIME_LIMIT="3",
    )  # fmt: skip
    env = {
        **isolated_ros_env(),
        **settings,
        "LC": f"{sys.executable} -m liquid_control.cli",
        "PYTHON": sys.executable,
    }
    proc = subprocess.run(
        ["bash", str(root / "scripts" / "bag_loop.sh")], cwd=root, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = json.loads((out / "summary.json").read_text())
    bags = figures["bags"]
    assert (bags["train"]["bags"], bags["validation"]["bags"], bags["test"]["bags"]) == (2, 1, 1)
    assert bags["train"]["noise"]["std"] == 0.3 and bags["validation"]["noise"]["std"] == 0.0
    with BagReader(out / "bags" / "train" / "episode_100") as reader:  # DART: the base's command is recorded too
        assert reader.topics["/base/cmd_vel"].count == reader.topics["/cmd_vel"].count > 10
        first = next(reader.messages(["/camera/image_raw"])).decode()
        assert (first.height, first.width) == (H, 24)  # the config's camera (before: RENDER_SIZE's square, 64)
    assert figures["training"]["training_updates"] > 20
    offline = figures["offline_test_bags"]
    assert offline["labelled"] > 20 and all(np.isfinite(offline["mae"])) and all(np.isfinite(offline["rmse"]))
    assert {name: s["episodes"] for name, s in figures["simulated_episodes"].items()} == {"bags": 2, "expert": 2}
    replay = figures["replay"]
    assert replay["matched"] == replay["offline_updates"] > 20 and replay["max_abs_diff"] == 0.0
    assert figures["command"].startswith(f"OUT={out} ") and "NOISE_STD=0.3" in figures["command"]
    assert "reach the target" in (out / "summary.md").read_text()
    # the DAgger round: supervised bags with every update labelled and the operator's random share, a policy
    # fine-tuned from the round's driver, its evaluation on the same episodes, the rounds' table and figure
    supervised = sorted((out / "round_1" / "takeover").glob("episode_*"))
    assert [b.name for b in supervised] == ["episode_200", "episode_201", "episode_202"]
    custom = yaml.safe_load((supervised[0] / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    rule = json.loads(custom["custom_data"]["liquid_control.takeover"])
    assert rule["operator_share"] == 0.5 and rule["shadow"] is True and rule["threshold"] == 10
    with BagReader(supervised[0]) as reader:
        assert reader.topics["/cmd_vel"].count == reader.topics["/base/cmd_vel"].count > 10
        first = next(reader.messages(["/camera/image_raw"])).decode()
        assert (first.height, first.width) == (H, 24)  # the driving policy's camera
    for bag in supervised:  # ROUND_TIME_LIMIT (3 s) ends them
        with BagReader(bag) as reader:
            (status,) = [json.loads(m.decode().data) for m in reader.messages(["/episode_status"])]
        assert status["sim_time"] < 3.2
    meta = torch.load(out / "round_1" / "run" / "policy.pt", weights_only=False)["metadata"]
    assert meta["started_from"]["path"] == str(out / "run" / "policy.pt")
    bags = ["bags/train/episode_100", "bags/train/episode_101"] + [
        f"round_1/takeover/episode_{i}" for i in (200, 201, 202)
    ]
    assert meta["training_bags"] == [str(out / bag) for bag in bags]  # the paths data.yaml names (d54238c0)
    assert meta["selected_epoch"] == 2  # ROUND_EPOCHS (the last epoch), not the loop's EPOCHS
    table = (out / "rounds.md").read_text()
    assert "\n| 0 | " in table and re.search(r"\n\| 1 \| \d/2 \| \d+% \(", table)
    assert (out / "rounds.png").stat().st_size > 0
    for bad, message in (
        ({"SHARES": "0.5,0.3"}, "SHARES must be numbers in [0, 1]"),
        ({"CONTINUE": "yes"}, "CONTINUE must"),
    ):
        proc = subprocess.run(
            ["bash", str(root / "scripts" / "takeover_rounds.sh")], cwd=root, env={**env, **bad}, capture_output=True,
            text=True,
        )  # fmt: skip
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert not (out / "round_2").exists()  # refused before any round

    import importlib.util  # the script's helpers: publish (the files a repository keeps), compare (runs)

    spec = importlib.util.spec_from_file_location("bag_loop", root / "scripts" / "bag_loop.py")
    bag_loop = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bag_loop)
    published = {p.name for p in bag_loop.publish(str(out), str(tmp_path / "docs"))}
    assert {"summary.md", "summary.json", "sim_success_by_shift.png", "replay_replay.json"} <= published
    assert not any(name.endswith((".pt", ".mcap")) for name in published)
    table = bag_loop.compare([str(out)], str(tmp_path / "runs.png"))
    assert "| loop | std 0.3 (action units), correlation 0.9, 1.0 swerves/s of 0.6 s | epochs_first=1 |" in table
    assert (tmp_path / "runs.png").stat().st_size > 0


def test_record_finishes_the_bag_on_sigterm_and_on_sigint_when_started_with_sigint_ignored(tmp_path):
    """`liquid-control record ... &` in a script starts with SIGINT ignored; `kill` sends SIGTERM: both finish
    the bag (a complete, readable bag; not a truncated one)."""
    import signal

    env = isolated_ros_env()
    for sig in (signal.SIGTERM, signal.SIGINT):
        out = tmp_path / f"bag_{sig.name}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "liquid_control.cli", "record", "-o", str(out), "/nothing"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )  # fmt: skip
        try:
            for line in proc.stdout:  # the recorder runs once it says so
                if "Ctrl-C to stop" in line:
                    break
            proc.send_signal(sig)
            assert proc.wait(timeout=60) == 0, proc.stdout.read()
        finally:
            stop_process(proc)
        with BagReader(out) as reader:
            assert not reader.salvaged and set(reader.topics) == set()


def test_a_failed_write_stops_the_recorder_naming_it_and_the_bag_keeps_what_came_before(tmp_path, capsys):
    """Before: a full disk (ENOSPC from a write) escaped the subscription callback, the bag's finishing failed
    too and its `raise ... from None` hid the write that failed; nothing said how many messages were kept."""
    import errno

    import rclpy
    import rclpy.executors
    from std_msgs.msg import String

    from liquid_control.ros.executable import run_until_signal
    from liquid_control.ros.recorder_node import BagRecorderNode

    env = isolated_ros_env()
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(env["ROS_DOMAIN_ID"]))
    try:
        out = tmp_path / "bag"
        recorder = BagRecorderNode(context=context, parameter_overrides={"output": str(out), "topics": ["/chatter"]})
        talker = rclpy.create_node("talker", context=context)
        publisher = talker.create_publisher(String, "/chatter", 10)
        real_write, calls = recorder.writer.write, []

        def disk_full_after_three(*args, **kwargs):
            calls.append(1)
            if len(calls) > 3:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(*args, **kwargs)

        recorder.writer.write = disk_full_after_three
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(recorder)
        executor.add_node(talker)
        deadline = time.monotonic() + 30.0
        while not recorder.done.is_set() and time.monotonic() < deadline:
            recorder._discover()  # subscribe as soon as the talker is seen
            publisher.publish(String(data="hello"))
            executor.spin_once(timeout_sec=0.05)
        assert recorder.done.is_set(), "the recorder kept running after its write failed"
        assert re.search(
            r"bag: recording stopped, writing a /chatter message failed after 3 \(.*No space", recorder.failed
        )
        executor.remove_node(recorder)
        path = recorder.close()
        with BagReader(path) as reader:
            assert reader.topics["/chatter"].count == 3 and not reader.salvaged
    finally:
        context.try_shutdown()

    status = run_until_signal(  # a node that stopped on an error it logged: exit status 1, the reason printed
        "bag_recorder",
        lambda: rclpy.create_node("stopped"),
        done=lambda node: True,
        failed=lambda node: "recording stopped, writing failed",
        args=["--ros-args", "-r", "__ns:=/t"],
    )
    assert status == 1 and "bag_recorder: recording stopped, writing failed" in capsys.readouterr().err


def test_a_bag_a_full_disk_left_without_a_message_is_removed_so_the_rerun_can_write_it(tmp_path):
    """A probe of a hostile environment: a replay on a full disk ended 'cannot finish the bag: No space left on
    device; the bag holds no message: nothing to recover' and left the bag's folder (a 0-byte .mcap), which the
    same command, rerun once there was room, refused: 'already exists; a bag is never overwritten'."""
    import errno
    import os

    import rclpy

    from liquid_control.bags.io import BagError
    from liquid_control.ros.recorder_node import BagRecorderNode

    env = isolated_ros_env()
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(env["ROS_DOMAIN_ID"]))
    try:
        out = tmp_path / "bag"
        recorder = BagRecorderNode(context=context, parameter_overrides={"output": str(out), "topics": ["/chatter"]})
        assert out.is_dir()  # made at the start, with the writer's file in it

        def full(*args, **kwargs):
            raise BagError(f"{out}: cannot finish the bag: {os.strerror(errno.ENOSPC)}")

        recorder.writer.close = full
        with pytest.raises(
            BagError, match=rf"the bag holds no message: nothing to recover; {re.escape(str(out))} removed"
        ):
            recorder.close()
        assert not out.exists()
    finally:
        context.try_shutdown()


def test_messages_received_before_the_stop_signal_are_recorded_and_none_after(tmp_path):
    """A recorder behind its topics (a loaded machine) when Ctrl-C or SIGTERM came closed the bag at once: the
    messages DDS had already received for it, sent before the signal, were left out of the bag (the end of the run
    it was asked to record). At the signal it takes them first (take_delivered), and leaves out those received
    after it (a recorder behind and still receiving took up to 2 s of them)."""
    import rclpy
    import rclpy.executors
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    from liquid_control.ros.recorder_node import BagRecorderNode, take_delivered

    env = isolated_ros_env()
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(env["ROS_DOMAIN_ID"]))
    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    try:
        recorder = BagRecorderNode(
            context=context, parameter_overrides={"output": str(tmp_path / "bag"), "topics": ["/chatter"]}
        )
        talker = rclpy.create_node("talker", context=context)
        publisher = talker.create_publisher(String, "/chatter", reliable)
        # the recorder's participant (its context), spun apart: what it heard, the recorder's reader received
        witness, heard = rclpy.create_node("witness", context=context), []
        witness.create_subscription(String, "/chatter", heard.append, reliable)
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(recorder)
        witness_executor = rclpy.executors.SingleThreadedExecutor(context=context)
        witness_executor.add_node(witness)
        deadline = time.monotonic() + 30.0
        while (recorder.pending or publisher.get_subscription_count() < 2) and time.monotonic() < deadline:
            recorder._discover()
            executor.spin_once(timeout_sec=0.05)
        assert not recorder.pending and publisher.get_subscription_count() == 2

        def publish(first, until_heard):
            for k in range(first, first + 40):
                publisher.publish(String(data=f"{k:02d}"))
            while len(heard) < until_heard and time.monotonic() < deadline:
                witness_executor.spin_once(timeout_sec=0.05)
            assert len(heard) == until_heard

        publish(0, 40)
        signalled = time.time_ns()
        publish(40, 80)  # sent after the signal
        assert recorder.counts["/chatter"] == 0  # received, not taken: what a stop at once left out
        take_delivered(recorder, executor, signalled_ns=signalled)
        assert recorder.counts["/chatter"] == 40, dict(recorder.counts)
        executor.remove_node(recorder)
        with BagReader(recorder.close()) as reader:
            assert [m.decode().data for m in reader.messages(["/chatter"])] == [f"{k:02d}" for k in range(40)]
    finally:
        context.try_shutdown()


def test_the_recorder_takes_what_was_received_at_a_signal_not_at_the_end_of_its_duration(tmp_path, monkeypatch):
    """``liquid-control record`` and the bag_recorder executable of launch files call take_delivered at SIGINT (the
    wiring the test above does not see), not when ``duration_s`` ended the recording."""
    import os
    import signal
    import threading

    from liquid_control.cli import main as cli_main
    from liquid_control.ros import recorder_node

    env = isolated_ros_env()
    for key in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE"):
        monkeypatch.setenv(key, env[key])
    calls = []
    monkeypatch.setattr(recorder_node, "take_delivered", lambda node, executor: calls.append(type(node).__name__))

    def interrupted(run):
        timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        try:
            return run()
        finally:
            timer.cancel()

    ros_args = ["--ros-args", "-p", "topics:=['/chatter']"]
    assert interrupted(lambda: recorder_node.main([*ros_args, "-p", f"output:={tmp_path / 'launch'}"])) == 0
    assert interrupted(lambda: cli_main(["record", "-o", str(tmp_path / "cli"), "/chatter"])) == 0
    assert recorder_node.main([*ros_args, "-p", f"output:={tmp_path / 'timed'}", "-p", "duration_s:=0.5"]) == 0
    assert calls == ["BagRecorderNode", "BagRecorderNode"]
    assert all((tmp_path / name / "metadata.yaml").exists() for name in ("launch", "cli", "timed"))


def _record_chatter(context, recorder, talker, chatter, ready=lambda: True):
    """Spin ``recorder`` and ``talker``, publishing ~100-byte /chatter messages on ``chatter`` once the recorder holds
    every topic and ``ready()``, until it has recorded 60 (30 s at most); the bag, closed."""
    import rclpy.executors
    from std_msgs.msg import String

    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(recorder)
    executor.add_node(talker)
    sent, deadline = 0, time.monotonic() + 30.0
    while recorder.counts["/chatter"] < 60 and time.monotonic() < deadline:
        recorder._discover()
        if recorder.pending == [] and ready():
            chatter.publish(String(data=f"{sent:04d}" + "x" * 100))
            sent += 1
        executor.spin_once(timeout_sec=0.01)
    executor.remove_node(recorder)
    return recorder.close()


def test_the_recorder_splits_its_bag_at_max_bag_size_as_ros2_bag_record(tmp_path, monkeypatch):
    """Before: a recording of hours was one .mcap file however large (a FAT32 stick refuses it past 4 GB, a hard
    kill left all of it to recover); `-p max_bag_size:=` splits it into <bag>_0.mcap, <bag>_1.mcap ..."""
    import rclpy
    import rclpy.executors
    import yaml
    from std_msgs.msg import String

    from liquid_control.bags import io
    from liquid_control.ros.recorder_node import BagRecorderNode

    monkeypatch.setattr(io, "MIN_BAG_SIZE", 1000)  # files of 2 kB (refused a recording: a file a message or two)

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(isolated_ros_env()["ROS_DOMAIN_ID"]))
    try:
        out = tmp_path / "bag"
        recorder = BagRecorderNode(
            context=context, parameter_overrides={"output": str(out), "topics": ["/chatter"], "max_bag_size": 2000}
        )
        talker = rclpy.create_node("talker", context=context)
        path = _record_chatter(context, recorder, talker, talker.create_publisher(String, "/chatter", 100))
    finally:
        context.try_shutdown()
    info = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    files = info["relative_file_paths"]
    assert len(files) >= 3 and files == [f"bag_{i}.mcap" for i in range(len(files))]
    assert sorted(p.name for p in path.iterdir()) == sorted([*files, "metadata.yaml"])
    with BagReader(path) as reader:
        received = [m.decode().data for m in reader.messages()]
    assert len(received) == info["message_count"] >= 60 and received == sorted(received)


@contextlib.contextmanager
def recorder_beside_a_talker(tmp_path, topics=("/chatter",), also=(), cli_args=None, command=False, **parameters):
    """A bag_recorder node of ``topics`` and ``also`` (its log lines gathered; its other ``parameters``; rclpy's
    ``cli_args``; ``command``: made as `liquid-control record` makes it) in a context where a talker node already
    publishes std_msgs/String on each of ``topics``: (recorder, lines, talker, context); the context is shut down
    after."""
    from types import SimpleNamespace

    import rclpy
    from std_msgs.msg import String

    from liquid_control.ros.recorder_node import BagRecorderNode

    lines = []

    class Logged(BagRecorderNode):
        def get_logger(self):
            return SimpleNamespace(info=lines.append, warning=lines.append, error=lines.append)

    env = isolated_ros_env()
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(env["ROS_DOMAIN_ID"]))
    try:
        talker = rclpy.create_node("talker", context=context)
        for topic in topics:
            talker.create_publisher(String, topic, 10)
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and not all(talker.get_publishers_info_by_topic(t) for t in topics):
            time.sleep(0.05)
        overrides = {"output": str(tmp_path / "bag"), "topics": [*topics, *also], **parameters}
        if command:
            from liquid_control.ros.recorder_node import command_recorder_node

            recorder = command_recorder_node(context, overrides, cli_args, cls=Logged)
        else:
            recorder = Logged(context=context, parameter_overrides=overrides, cli_args=cli_args)
        yield recorder, lines, talker, context
    finally:
        context.try_shutdown()


def test_the_recorder_says_which_topics_it_records_also_those_subscribed_at_once(tmp_path):
    """Before: a topic whose publisher was already up was subscribed while the node started and left out of
    its start message: `recording  into bags/x` (no topics) when all of them were."""
    with recorder_beside_a_talker(tmp_path, also=("/x",)) as (recorder, lines, _talker, _context):
        assert recorder.pending == ["/x"]  # /chatter subscribed while starting
        assert f"recording /chatter, /x into {tmp_path / 'bag'}" in lines, lines
        recorder.close()


def test_a_parameter_file_rcl_cannot_read_is_one_line_not_a_traceback(tmp_path):
    """Before: `bag_recorder --ros-args --params-file nope.yaml` (and the other node executables) printed a
    15-line RCLError traceback ending in "Couldn't parse params file"."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [\n")
    cases = [("recorder_node", "bag_recorder", tmp_path / "nope.yaml", "Error opening YAML file")]
    cases += [("recorder_node", "bag_recorder", bad, "Error at line 1"), ("sim_node", "sim_node", bad, "line 1")]
    cases += [("policy_node", "policy_node", tmp_path / "nope.yaml", "Error opening YAML file")]
    for module, name, params, reason in cases:
        proc = subprocess.run(
            [sys.executable, "-m", f"liquid_control.ros.{module}", "--ros-args", "--params-file", str(params)],
            env=isolated_ros_env(), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert f"{name}: cannot start: Couldn't parse params file: '--params-file {params}'" in proc.stderr
        assert reason in proc.stderr


def test_messages_dds_reports_lost_are_counted_and_said_naming_the_topic(tmp_path):
    """Before: a 640x480 rgb8 camera at 30 Hz, best effort, beside a 200 Hz IMU (this 2-core machine, 30 s):
    DDS lost 685 of 900 frames and 379 of 6000 IMU messages before they reached the recorder, and it said
    nothing (`wrote bag: {'/camera/image_raw': 214, ...}`); it did not subscribe to rmw's message-lost event.
    The event's count is what DDS hands to the subscription's message_lost handler."""
    from types import SimpleNamespace

    from rclpy.event_handler import QoSSubscriptionEventType

    with recorder_beside_a_talker(tmp_path) as (recorder, lines, _talker, _context):
        subscription = recorder._recorded_subscriptions["/chatter"]
        lost = [
            h
            for h in subscription.event_handlers
            if h.event_type == QoSSubscriptionEventType.RCL_SUBSCRIPTION_MESSAGE_LOST
        ]
        assert lost, "the recorder does not listen for messages DDS lost"
        lost[0].callback(SimpleNamespace(total_count=7, total_count_change=7))
        lost[0].callback(SimpleNamespace(total_count=9, total_count_change=2))  # within 5 s: no second warning
        warnings = [line for line in lines if "lost in transport" in line]
        assert len(warnings) == 1 and warnings[0].startswith("/chatter: 7 messages lost in transport, 0 received")
        assert recorder.lost == {"/chatter": 9}
        recorder.close()
        assert "/chatter: 9 messages lost in transport, 0 received" in lines[-1], lines


def test_messages_the_recorder_drops_behind_a_slow_disk_are_counted_and_said_naming_the_topic(
    tmp_path, monkeypatch, first_fsync_held
):
    """Before: with split files on a disk slower than the recording, the subscription callback waited at a split
    for the file before to be finished (its fsync), and DDS dropped what came meanwhile past qos_depth without a
    word (fsyncs of 0.5 s, 200 kB files, 1 kB messages at 500 Hz: 1,555 of 3,000 lost; the end said only what was
    recorded). The writer holds back what comes meanwhile (BEHIND_CACHE_BYTES) and drops past that; the recorder
    counts those and warns, at most every LOST_WARNING_PERIOD_S per topic, and again when it finishes. The disk
    is made slow by an fsync that waits for the test."""

    from rclpy.serialization import serialize_message
    from std_msgs.msg import String

    from liquid_control.bags import io
    from liquid_control.ros import recorder_node

    monkeypatch.setattr(io, "MIN_BAG_SIZE", 1000)  # files of 2 kB
    monkeypatch.setattr(io, "BEHIND_CACHE_BYTES", 2000, raising=False)
    monkeypatch.setattr(recorder_node, "LOST_WARNING_PERIOD_S", 3600.0)  # one warning while recording, at any pace
    blocked, release = first_fsync_held  # a disk slower than the recording
    with recorder_beside_a_talker(tmp_path, max_bag_size=2000) as (recorder, lines, _talker, _context):
        data = serialize_message(String(data="x" * 100))
        for _ in range(200):  # as the subscription hands each message to the recorder
            recorder._on_message("/chatter", data)
        assert blocked.wait(timeout=60)
        dropped = recorder.writer.dropped.get("/chatter", 0)
        assert 0 < dropped < 200 and recorder.counts["/chatter"] == 200 - dropped
        warnings = [line for line in lines if "dropped by the recorder" in line]
        assert len(warnings) == 1, lines
        assert warnings[0].startswith("/chatter: 1 message dropped by the recorder, ")
        assert "the disk is slower than the recording" in warnings[0] and warnings[0].endswith("the bag misses them")
        release.set()
        path = recorder.close()
        said = [line for line in lines if "dropped by the recorder" in line][1:]
        assert len(said) == 1 and said[0].startswith(
            f"/chatter: {dropped} messages dropped by the recorder, {200 - dropped} recorded: the disk is slower"
        ), lines
    with BagReader(path) as reader:
        assert reader.topics["/chatter"].count == 200 - dropped


def test_the_recorders_last_summary_does_not_count_held_back_messages_its_close_could_not_write(
    tmp_path, monkeypatch, first_fsync_held
):
    """Before: messages held back behind a slow disk (write() took them) that close() could not write (the next
    file not opened: no file descriptor left) stayed in the summary logged before close(), 'recorded', while only
    the BagError said how many were not. The summary is logged after close() tried, with them taken off the count
    and said dropped; the count is what the bag holds."""
    import errno

    from rclpy.serialization import serialize_message
    from std_msgs.msg import String

    from liquid_control.bags import BagError, io

    monkeypatch.setattr(io, "MIN_BAG_SIZE", 1000)
    blocked, release = first_fsync_held  # a disk slower than the recording
    with recorder_beside_a_talker(tmp_path, max_bag_size=2000) as (recorder, lines, _talker, _context):
        data = serialize_message(String(data="x" * 100))
        for _ in range(60):
            recorder._on_message("/chatter", data)
        assert blocked.wait(timeout=60) and recorder.counts["/chatter"] == 60
        held = len(recorder.writer._waiting)
        assert held > 0

        def no_descriptor(self, file):
            raise OSError(errno.EMFILE, "Too many open files")

        monkeypatch.setattr(io._McapFile, "next_file", no_descriptor)
        release.set()
        with pytest.raises(BagError, match=f"{held} messages held back for the next file not written"):
            recorder.close()
        assert f"recorded into {tmp_path / 'bag'}: /chatter {60 - held}" in lines, lines
        assert [line for line in lines if line.startswith(f"/chatter: {held} messages dropped by the recorder, ")]
    with BagReader(tmp_path / "bag") as reader:
        assert reader.topics["/chatter"].count == 60 - held


@pytest.mark.parametrize("file_limit, in_bag", [(3 << 19, {"/chatter": 11, "/other": 10}), (100, {})])
def test_a_full_disk_cutting_the_chunk_being_written_counts_only_what_the_bag_holds(
    tmp_path, capsys, monkeypatch, file_limit, in_bag
):
    """Before: `record` onto a disk that filled up said 'recorded into ...: /camera/image_raw 71, /cmd_vel 71,
    /imu/data 464' of a bag holding none (the chunk being written, kept in memory until it is 1 MiB, was lost with
    the write that failed, yet counted), and `--recover` of it said 'the recording stopped before its first'. Now the
    summary counts what the bag holds (what --recover gets back), says the rest lost with the write and why, and
    --recover names a failed write as a cause. The full disk here: `ulimit -f` (EFBIG), the file cut at
    ``file_limit`` bytes: in the second chunk (the first whole), or in the first."""
    import os
    import resource

    from rclpy.serialization import serialize_message
    from std_msgs.msg import String

    from liquid_control import cli
    from liquid_control.bags import BagError, io

    big, small = (serialize_message(String(data=text)) for text in ("x" * 100_000, "y"))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    with recorder_beside_a_talker(tmp_path, ("/chatter", "/other")) as (recorder, lines, _talker, _context):
        assert not recorder.pending, lines
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, hard))
        try:
            for _ in range(100):  # as the subscriptions hand them over: 100 kB, then a few bytes
                recorder._on_message("/chatter", big)
                recorder._on_message("/other", small)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        received = dict(recorder.counts)
        assert received == {"/chatter": 21, "/other": 21} if in_bag else {"/chatter": 10, "/other": 10}, received
        held, taken = sum(in_bag.values()), sum(received.values())
        assert f"failed after {taken}, {taken - held} of them lost with it (the bag holds {held}) (" in recorder.failed
        with pytest.raises(BagError) as failed:
            recorder.close()
    expected = {topic: in_bag.get(topic, 0) for topic in received}
    assert recorder.counts == expected
    assert f"recorded into {tmp_path / 'bag'}: /chatter {expected['/chatter']}, /other {expected['/other']}" in lines
    for topic, n in received.items():
        said = [line for line in lines if line.startswith(f"{topic}: {n - expected[topic]} messages received not in")]
        assert len(said) == 1 and "lost with the write that failed (File too large)" in said[0], lines
    hint = f"--recover {tmp_path / 'bag'} -o <new bag> keeps the {held} messages written" if held else "nothing to"
    assert hint in str(failed.value), failed.value
    if not held:  # a bag of nothing is removed, so the same command can write it once there is room (it blocked it)
        assert (
            f"nothing to recover; {tmp_path / 'bag'} removed" in str(failed.value) and not (tmp_path / "bag").exists()
        )
        return
    with BagReader(tmp_path / "bag", allow_truncated=True) as reader:  # the bag holds what the summary says
        assert {t: i.count for t, i in reader.topics.items()} == in_bag

    fixed = tmp_path / "fixed"
    full = os.statvfs_result((4096, 4096, 1000, 0, 0, 1000, 0, 0, 0, 255))  # a disk with no room left
    monkeypatch.setattr(io.os, "statvfs", lambda path: full)
    code = cli.main(["record", "--recover", str(tmp_path / "bag"), "-o", str(fixed)])
    out, err = capsys.readouterr()
    assert code == 0 and f"recovered {held} messages of {tmp_path / 'bag'}" in out, (out, err)


def test_a_middleware_without_the_message_lost_event_still_records(tmp_path, monkeypatch):
    """Where the rmw does not report lost messages, rclpy raises UnsupportedEventTypeError for a subscription
    asking for them (rclpy does not pass over this event as it does others): the recorder then records without the
    count and says so once, instead of failing to subscribe at all."""
    from rclpy.event_handler import SubscriptionEventCallbacks, UnsupportedEventTypeError

    real = SubscriptionEventCallbacks.create_event_handlers

    def unsupported(self, *args, **kwargs):
        if self.message_lost is not None:
            raise UnsupportedEventTypeError("message lost event is not supported by this middleware")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SubscriptionEventCallbacks, "create_event_handlers", unsupported)
    with recorder_beside_a_talker(tmp_path, ("/chatter", "/other")) as (recorder, lines, _talker, _context):
        assert set(recorder._recorded_subscriptions) == {"/chatter", "/other"}, lines
        assert sum("does not report messages lost" in line for line in lines) == 1, lines
        recorder.close()


def test_a_publisher_of_another_type_on_a_recorded_topic_is_named(tmp_path):
    """Before: a second node publishing another message type on a recorded topic (a driver's Image beside a
    String, or a Twist beside a TwistStamped cmd_vel) had its messages left out of the bag without a word."""
    import rclpy
    from std_msgs.msg import Int32

    with recorder_beside_a_talker(tmp_path) as (recorder, lines, talker, context):
        assert recorder._recorded_types == {"/chatter": "std_msgs/msg/String"}
        assert not [line for line in lines if "is not recorded" in line]
        other_process = rclpy.Context()  # another participant: one refuses a second type on a topic it has
        rclpy.init(context=other_process, domain_id=context.get_domain_id())
        try:
            other = rclpy.create_node("other_driver", context=other_process)
            other.create_publisher(Int32, "/chatter", 10)
            deadline = time.monotonic() + 30.0
            while len(talker.get_publishers_info_by_topic("/chatter")) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            recorder._say_other_types()
            recorder._say_other_types()  # once per type
        finally:
            other_process.try_shutdown()
        named = [line for line in lines if "is not recorded" in line]
        assert named == [
            "/chatter: a publisher of std_msgs/msg/Int32 is not recorded: the bag records std_msgs/msg/String on "
            "this topic, and messages of another type never reach that subscription; give one of them another topic "
            "name"
        ], lines
        recorder.close()


def test_with_sim_time_the_recorder_subscribes_before_any_clock_arrives(tmp_path):
    """Before: `liquid-control record --use-sim-time` looked for publishers on a timer of the node clock, which
    does not run until /clock arrives: a topic whose publisher came after the start was never subscribed (a
    64x64 camera and an IMU for 6 s: an empty bag, no `subscribed` line, no warning)."""
    import rclpy
    import rclpy.executors
    from std_msgs.msg import String

    from liquid_control.ros.recorder_node import BagRecorderNode

    env = isolated_ros_env()
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(env["ROS_DOMAIN_ID"]))
    try:
        recorder = BagRecorderNode(
            context=context,
            parameter_overrides={"output": str(tmp_path / "bag"), "topics": ["/chatter"]},
            cli_args=["--ros-args", "-p", "use_sim_time:=true"],
        )
        assert recorder.pending == ["/chatter"]
        talker = rclpy.create_node("talker", context=context)
        talker.create_publisher(String, "/chatter", 10)
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(recorder)
        deadline = time.monotonic() + 30.0
        while recorder.pending and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        assert recorder.pending == [], "the recorder never looked for the publisher that came after it"
        executor.remove_node(recorder)
        recorder.close()
    finally:
        context.try_shutdown()


def test_with_sim_time_and_no_clock_the_recorder_says_what_it_waits_for(tmp_path, monkeypatch):
    """Before: `liquid-control record --use-sim-time --duration 10` where nothing published /clock ran on without
    a word, never ending (its duration counts node-clock time, 0 until /clock comes). It says so, once; with the
    wall clock (no use_sim_time) it says nothing."""
    from liquid_control.ros import recorder_node

    monkeypatch.setattr(recorder_node, "CLOCK_WAIT_WARNING_S", 0.2)
    # the node names its parameter; `liquid-control record` its option (before: duration_s there too)
    for sim_time, named in ((True, "duration_s"), (True, "--duration"), (False, "duration_s")):
        folder = tmp_path / f"{sim_time}{named}"
        cli_args = ["--ros-args", "-p", f"use_sim_time:={str(sim_time).lower()}"]
        command = named == "--duration"
        with recorder_beside_a_talker(folder, cli_args=cli_args, command=command, duration_s=1.0) as (
            recorder,
            lines,
            _,
            _,
        ):
            time.sleep(0.3)
            recorder._discover()
            recorder._discover()
            said = [line for line in lines if "no /clock" in line]
            assert len(said) == (1 if sim_time else 0), lines
            assert all(f"and {named} does not start counting until it moves" in line for line in said)
            assert not recorder.done.is_set()
            recorder.close()


def test_the_recorder_repeats_each_latched_publishers_last_message_in_every_file_with_repeat_latched(
    tmp_path, monkeypatch
):
    """Before: /tf_static, /robot_description (latched) were in a split bag's first file only: a later file opened
    alone had no TF tree. `-p repeat_latched:=true` starts every file with each latched publisher's last message (told
    apart by their DDS ids: two static broadcasters), and the bag read whole holds each message once."""
    import rclpy
    import rclpy.executors
    from rclpy.qos import DurabilityPolicy, QoSProfile
    from std_msgs.msg import String

    from liquid_control.bags import io
    from liquid_control.ros.recorder_node import BagRecorderNode

    monkeypatch.setattr(io, "MIN_BAG_SIZE", 1000)  # files of 2 kB (refused a recording: a file a message or two)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(isolated_ros_env()["ROS_DOMAIN_ID"]))
    try:
        talker = rclpy.create_node("talker", context=context)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        static = [talker.create_publisher(String, "/static", latched) for _ in range(2)]
        static[0].publish(String(data="base_link->camera"))
        static[1].publish(String(data="base_link->imu"))
        chatter = talker.create_publisher(String, "/chatter", 100)
        out = tmp_path / "bag"
        overrides = {"output": str(out), "topics": ["/static", "/chatter"], "max_bag_size": 2000}
        recorder = BagRecorderNode(context=context, parameter_overrides={**overrides, "repeat_latched": True})
        # DDS may match the two latched publishers a split apart: the chatter once both are in
        path = _record_chatter(context, recorder, talker, chatter, ready=lambda: recorder.counts["/static"] == 2)
    finally:
        context.try_shutdown()
    files = sorted(path.glob("*.mcap"), key=lambda f: int(f.stem.rpartition("_")[2]))
    assert len(files) >= 3
    for file in files[1:]:  # each later file alone: both broadcasters' transforms, at its first log time
        with BagReader(file) as alone:
            latched_here = [(m.log_time_ns, m.decode().data) for m in alone.messages(["/static"])]
            assert sorted(data for _, data in latched_here) == ["base_link->camera", "base_link->imu"]
            assert {t for t, _ in latched_here} == {alone.start_ns}
    with BagReader(path) as reader:
        assert reader.topics["/static"].count == 2 and reader.message_count == sum(recorder.counts.values())
        assert sorted(m.decode().data for m in reader.messages(["/static"])) == ["base_link->camera", "base_link->imu"]


@pytest.mark.parametrize(
    "argument, named",
    [
        ("qos_depth:=abc", "qos_depth: must be an integer in [1, 100000], got 'abc'"),
        ("qos_depth:=0", "qos_depth: must be an integer in [1, 100000], got 0"),
        ("topics:=[]", "topics: nothing to record"),
        ("discovery_period_s:=0.0", "discovery_period_s: must be a number of seconds in [0.001, 86400], got 0.0"),
        ("discovery_period_s:=-1.0", "discovery_period_s: must be a number of seconds in [0.001, 86400], got -1.0"),
        ("discovery_period_s:=.nan", "discovery_period_s: must be a number of seconds in [0.001, 86400], got nan"),
        ("duration_s:=-2.0", "duration_s: must be a finite number of seconds in [0, 86400]"),
        ("compression:=1", "compression: must be true or false (a boolean), got 1"),
        ("max_bag_size:=-1", "max_bag_size: must be a whole number of bytes, 0 or more (0: no split), got -1"),
        ("max_bag_size:=4G", "max_bag_size: must be a whole number of bytes, 0 or more (0: no split), got '4G'"),
        ("max_bag_duration:=-1.0", "max_bag_duration: must be a number of seconds in [0, 86400] (0: no split)"),
        ("max_bag_size:=4", "max_bag_size: 4 bytes is below the smallest split size, 1048576 (1MiB)"),
        ("max_bag_duration:=0.001", "max_bag_duration: 0.001 s is below the shortest split duration, 1 s"),
        ("repeat_latched:=true", "repeat_latched: only for a split bag (max_bag_size or max_bag_duration)"),
        ("repeat_latched:=1", "repeat_latched: must be true or false (a boolean), got 1"),
    ],
)
def test_bad_recorder_parameters_are_refused_naming_them_before_the_bag_is_made(tmp_path, argument, named):
    """Before: `-p qos_depth:=abc` or `-p topics:=[]` ended in an rclpy traceback, `discovery_period_s:=0.0` spun a
    core looking for publishers, a negative one dumped rcl's traceback after creating the bag folder (a rerun into it
    was refused), NaN said `cannot convert float NaN to integer`, `qos_depth:=0` was accepted."""
    import rclpy

    from liquid_control.ros.recorder_node import BagRecorderNode

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(isolated_ros_env()["ROS_DOMAIN_ID"]))
    try:
        with pytest.raises(ValueError) as refused:
            BagRecorderNode(
                context=context, cli_args=["--ros-args", "-p", f"output:={tmp_path / 'bag'}", "-p", argument]
            )
        assert named in str(refused.value)
        assert not (tmp_path / "bag").exists()
    finally:
        context.try_shutdown()


def test_recorder_parameters_take_whole_seconds_and_a_change_at_run_time_is_refused(tmp_path):
    """Before: `-p duration_s:=5` (an integer) ended in an rclpy traceback, and `ros2 param set /bag_recorder ...` of
    any parameter (topics, duration_s, qos_depth -3, use_sim_time) was accepted and ignored."""
    import rclpy
    from rclpy.parameter import Parameter

    from liquid_control.ros.recorder_node import BagRecorderNode

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(isolated_ros_env()["ROS_DOMAIN_ID"]))
    try:
        recorder = BagRecorderNode(
            context=context,
            cli_args=[
                "--ros-args",
                *("-p", f"output:={tmp_path / 'bag'}", "-p", "duration_s:=5", "-p", "topics:=[/x]"),
                *("-p", "max_bag_size:=4000000000", "-p", "max_bag_duration:=600"),
            ],
        )
        assert recorder.p["duration_s"] == 5 and recorder.pending == ["/x"]
        assert recorder.writer.max_bag_size == 4_000_000_000 and recorder.writer.max_bag_duration == 600
        changes = [
            ("topics", ["/y"]),
            ("duration_s", 1.0),
            ("qos_depth", -3),
            ("use_sim_time", True),
            ("max_bag_size", 9),
        ]
        for name, value in changes:
            (result,) = recorder.set_parameters([Parameter(name, value=value)])
            assert not result.successful, name
            assert result.reason.startswith(f"{name}={value!r}: read at startup; restart the recorder"), result.reason
        assert recorder.get_parameter("topics").value == ["/x"] and not recorder.get_clock().ros_time_is_active
        (result,) = recorder.set_parameters([Parameter("duration_s", value=5.0)])  # the value in use: no change
        assert result.successful
        recorder.close()
    finally:
        context.try_shutdown()
