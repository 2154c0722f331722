"""Bags (rosbag2 MCAP): written and read back with the ``mcap`` library and ``rosbags`` independently, the node's
readings and messages, the PolicyRunner's event semantics over a recording, labels, truncated/corrupt
recordings, and the shrunk loop: record expert bags, train from them (resumable), evaluate offline."""

import copy
import dataclasses
import json
import os
import re
import shutil
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from liquid_control.bags import BagError, BagReader, BagWriter, data_spec, recover, stream_updates
from liquid_control.bags import messages as M
from liquid_control.bags.expert import make_world, record_expert_episodes
from liquid_control.bags.io import qos_dict
from liquid_control.bags.stream import CaptureBackend, StreamStats, capture_runner, with_label
from liquid_control.conventions import stamps
from liquid_control.runtime import runner as R

H = W = 16
CAMERA_IMU = {
    "name": "tiny_bag_rover",
    "world": "LiquidRover-v0",
    "observation": {"image": {"height": H, "width": W}, "vectors": {"imu": 6}, "update_on": "camera"},
    "encoder": {
        "camera": {"channels": [4, 4], "kernel_sizes": [3, 3], "strides": [2, 2], "features": 8},
        "vectors": {"hidden": [8], "features": 8},
    },
    "core": {"type": "cfc", "units": 12, "wiring": "ncp", "mode": "pure"},
    "action": {"size": 2, "low": [-1, -1], "high": [1, 1], "kind": "twist"},
    "training": {"epochs_first": 2, "batch_size": 2, "sequence_length": 8, "lr": 0.003},
}
CAMERA_ONLY = {**CAMERA_IMU, "observation": {**CAMERA_IMU["observation"], "vectors": {}}}
SCALE = np.array([1.0, 1.5])  # config/rover_policy.yaml action_scale (the rover's MAX_LINEAR, MAX_ANGULAR)


@pytest.fixture(scope="module")
def expert_bags(tmp_path_factory):
    """Three short expert episodes at 16x16 pixels (seeds 100-102) and one held-out (seed 500)."""
    root = tmp_path_factory.mktemp("bags")
    outcomes = record_expert_episodes(root / "train", [100, 101, 102, 500], render_size=W, time_limit=2.0)
    held = root / "heldout" / "episode_500"
    held.parent.mkdir()
    os.replace(outcomes[-1]["bag"], held)
    return root, [r["bag"] for r in outcomes[:3]], str(held)


@pytest.fixture(scope="module")
def long_bag(tmp_path_factory):
    """1500 camera frames (15 Hz, 16x16) with a command after each: over 1 MB, so several MCAP chunks."""
    rng = np.random.default_rng(5)
    stamps = np.cumsum(rng.uniform(0.053, 0.08, size=1500))
    frames = [(s, s + 0.02) for s in stamps]
    commands = [(t + 0.003, (0.5, 0.3 * np.sin(i / 20))) for i, (_, t) in enumerate(frames)]
    return _synthetic_bag(tmp_path_factory.mktemp("long") / "long", frames, [], commands, noise=True)


# ------------------------------------------------------------------------------------------------ the files
def test_bag_opens_with_mcap_and_rosbags_with_types_stamps_and_qos(expert_bags):
    from mcap.reader import make_reader
    from rosbags.rosbag2 import Reader

    _, bags, _ = expert_bags
    bag = bags[0]
    meta = yaml.safe_load(open(os.path.join(bag, "metadata.yaml")))["rosbag2_bagfile_information"]
    assert meta["version"] == 9 and meta["storage_identifier"] == "mcap"
    (mcap_file,) = meta["relative_file_paths"]
    topics = {t["topic_metadata"]["name"]: t for t in meta["topics_with_message_count"]}
    assert topics["/camera/image_raw"]["topic_metadata"]["type"] == "sensor_msgs/msg/Image"
    assert topics["/camera/image_raw"]["topic_metadata"]["serialization_format"] == "cdr"
    assert topics["/camera/image_raw"]["topic_metadata"]["type_description_hash"].startswith("RIHS01_")
    assert topics["/episode_status"]["topic_metadata"]["offered_qos_profiles"][0]["durability"] == "transient_local"

    # the mcap library alone: ros2 profile, ros2msg schemas, cdr channels with their offered QoS, log times
    with open(os.path.join(bag, mcap_file), "rb") as handle:
        reader = make_reader(handle)
        assert reader.get_header().profile == "ros2"
        summary = reader.get_summary()
        schemas = {s.name: s for s in summary.schemas.values()}
        assert schemas["sensor_msgs/msg/Imu"].encoding == "ros2msg"
        assert "geometry_msgs/Vector3 angular_velocity" in schemas["sensor_msgs/msg/Imu"].data.decode()
        channels = {c.topic: c for c in summary.channels.values()}
        assert channels["/imu/data"].message_encoding == "cdr"
        assert "reliability: reliable" in channels["/imu/data"].metadata["offered_qos_profiles"]
        raw = [(c.topic, m.log_time, m.data) for _, c, m in reader.iter_messages(topics=["/imu/data"])]
    assert len(raw) == topics["/imu/data"]["message_count"] > 20

    # rosbags alone: the same messages, decoded; stamps (measurement) never after log times (delivery)
    with Reader(bag) as rb:
        conns = [c for c in rb.connections if c.topic == "/imu/data"]
        assert conns[0].ext.offered_qos_profiles[0].depth == 10
        again = [(c.topic, t, bytes(d)) for c, t, d in rb.messages(connections=conns)]
    assert [(t, d) for _, t, d in again] == [(t, bytes(d)) for _, t, d in raw]
    from liquid_control.bags.io import typestore

    for _, log_time, data in raw:
        imu = typestore().deserialize_cdr(data, "sensor_msgs/msg/Imu")
        assert M.stamp_seconds(imu) * 1e9 <= log_time + 1
    assert imu.header.frame_id == "imu" and imu.orientation_covariance[0] == -1.0

    # our reader: topics, QoS and counts as written
    with BagReader(bag) as ours:
        assert set(ours.topics) == {
            "/camera/image_raw",
            "/camera/camera_info",
            "/imu/data",
            "/cmd_vel",
            "/episode_status",
        }
        assert qos_dict(ours.topics["/camera/image_raw"].qos[0])["reliability"] == "reliable"
        assert ours.topics["/camera/image_raw"].count == topics["/camera/image_raw"]["message_count"]
        assert 1.5 < ours.duration_s < 2.5


def test_expert_bag_holds_exactly_what_the_world_delivered(expert_bags):
    """Oracle: the same world and seed, stepped by hand, delivers the readings and stamps the bag holds."""
    _, bags, _ = expert_bags
    world = make_world(render_size=W, time_limit=2.0)
    try:
        world.reset(seed=100)
        # what reset delivered (up to the first frame, logged at delivery: stamp + latency) is in the bag too
        delivered = [(s, st, st + world.timings[s].latency, np.array(r)) for s, st, r in world.reset_deliveries]
        assert delivered[-1][0] == "camera" and all(d[0] == "imu" for d in delivered[:-1])
        action = world.expert_action()  # the operator's command at the first frame (no noise in these bags)
        frames = 1
        while frames < 3:  # up to the third frame, the rover driven as the bag's operator drove it
            world.apply_action(action)
            sensor, stamp, reading = world.next_delivery()
            delivered.append((sensor, stamp, float(world.data.time), np.array(reading)))
            if sensor == "camera":
                frames += 1
                action = world.expert_action()
    finally:
        world.close()
    with BagReader(bags[0]) as reader:
        got = []
        for msg in reader.messages(["/camera/image_raw", "/imu/data"]):
            decoded = msg.decode()
            sensor = "camera" if msg.topic == "/camera/image_raw" else "imu"
            got.append((sensor, M.stamp_seconds(decoded), msg.log_time_ns * 1e-9, M.sensor_reading(sensor, decoded)))
            if len(got) == len(delivered):
                break
    assert len(got) == len(delivered)
    for (s1, st1, t1, r1), (s2, st2, t2, r2) in zip(delivered, got):
        assert s1 == s2 and abs(st1 - st2) < 1e-9 and abs(t1 - t2) < 1e-9
        np.testing.assert_allclose(r2, r1, rtol=0, atol=0 if s1 == "camera" else 1e-6)


def test_expert_bag_has_the_cameras_camera_info_beside_each_image_as_sim_node(expert_bags):
    """Before: `record --expert` wrote the image without the camera_info sim_node publishes beside it, so a policy
    trained from expert bags (the bag loop) recorded its camera's field of view as unknown (`train --bag` reads it
    from camera_info) and policy_node compared no camera with it; Foxglove could not project the image either."""
    from liquid_control.conventions.camera_info import world_camera_fovy_deg
    from liquid_control.training.sensor_record import bag_camera_fovy_deg

    _, bags, _ = expert_bags
    with BagReader(bags[0]) as reader:
        assert reader.topics["/camera/camera_info"].msgtype == "sensor_msgs/msg/CameraInfo"
        assert bag_camera_fovy_deg(reader, "/camera/image_raw") == pytest.approx(
            world_camera_fovy_deg("LiquidRover-v0")
        )
        images = [(m.log_time_ns, m.decode()) for m in reader.messages(["/camera/image_raw"])]
        infos = [(m.log_time_ns, m.decode()) for m in reader.messages(["/camera/camera_info"])]
    assert len(images) == len(infos) > 1
    for (t_image, image), (t_info, info) in zip(images, infos):  # the frame's own: its stamp, frame and size
        assert t_image == t_info and (info.width, info.height) == (image.width, image.height) == (W, H)
        assert info.header.frame_id == image.header.frame_id == "camera_optical"
        assert M.stamp_seconds(info) == M.stamp_seconds(image)


def test_record_cli_expert_renders_a_camera_that_is_not_square(tmp_path):
    """`record --expert --render-size 16 --render-width 24`: frames 16 high and 24 wide with their camera_info (the
    vertical field of view the world's, the horizontal one wider), as sim_node publishes them for such a policy;
    before 2026-12-06 record --expert rendered square frames only."""
    from liquid_control import cli
    from liquid_control.conventions.camera_info import world_camera_fovy_deg
    from liquid_control.training.sensor_record import bag_camera_fovy_deg

    out = tmp_path / "wide"
    argv = ["record", "--expert", "--episodes", "1", "--time-limit", "0.5", "--no-progress", "-o", str(out)]
    assert cli.main([*argv, "--render-size", "16", "--render-width", "24"]) == 0
    with BagReader(out / "episode_100") as reader:
        assert bag_camera_fovy_deg(reader, "/camera/image_raw") == pytest.approx(
            world_camera_fovy_deg("LiquidRover-v0")
        )
        images = [m.decode() for m in reader.messages(["/camera/image_raw"])]
        infos = [m.decode() for m in reader.messages(["/camera/camera_info"])]
    assert len(images) == len(infos) > 1
    assert {(i.height, i.width, i.step, len(i.data)) for i in images} == {(16, 24, 72, 16 * 24 * 3)}
    assert {(i.height, i.width) for i in infos} == {(16, 24)}
    fx, fy = infos[0].k[0], infos[0].k[4]
    assert fx == pytest.approx(fy) and (infos[0].k[2], infos[0].k[5]) == pytest.approx((12.0, 8.0), abs=0.5)
    # a driving policy of that camera, no size given: its own is rendered (a 64x64 render was refused before)
    from liquid_control.policy import Policy, save_policy

    torch.manual_seed(0)
    wide = dict(CAMERA_ONLY, observation=dict(CAMERA_ONLY["observation"], image={"height": 16, "width": 24}))
    driver = save_policy(tmp_path / "wide.pt", Policy.from_config(wide))
    assert cli.main([*argv[:-1], str(tmp_path / "driven"), "--policy", str(driver)]) == 0
    with BagReader(tmp_path / "driven" / "episode_100") as reader:
        assert {(m.decode().height, m.decode().width) for m in reader.messages(["/camera/image_raw"])} == {(16, 24)}


def test_expert_recording_ends_at_the_time_limit_when_no_frame_comes_within_the_horizon(tmp_path):
    """With rare camera frames (a surviving frame every ~67 s) seed 0's episode, 25 s long, has its first frame at
    15.3 s and the next at 79.4 s: the recorder ran and recorded to 79.4 s. It ends at the limit now, as the
    gymnasium env does (its step ends there, truncated), with the IMU messages on the way recorded."""
    status = record_expert_episodes(tmp_path, [0], render_size=8, shift="sensor_rate=0.1,camera_rate=0.1,dropout=0.9")
    assert status[0]["sim_time"] == pytest.approx(25.0), status
    with BagReader(status[0]["bag"]) as reader:
        stamps = {"camera": [], "imu": []}
        for msg in reader.messages(["/camera/image_raw", "/imu/data"]):
            stamps["camera" if msg.topic == "/camera/image_raw" else "imu"].append(M.stamp_seconds(msg.decode()))
    assert stamps["camera"] == [pytest.approx(15.3, abs=0.05)], stamps["camera"]
    assert 15.3 < max(stamps["imu"]) <= 25.0 and len(stamps["imu"]) == status[0]["messages"]["imu"], stamps["imu"]


def test_readings_and_messages_are_the_nodes():
    """Readings equal policy_node's own extractors on the same bytes; built messages are, field by field, the
    messages sim_node's _publish_reading puts on the wire."""
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Imu

    from liquid_control.bags.io import typestore
    from liquid_control.ros import policy_node, sim_node

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    imu = rng.normal(size=6).astype(np.float32)
    published = {}
    stub = SimpleNamespace(
        frame=lambda name: name,
        camera_info_pub=None,
        _imu_noise=(0.01, 0.05),
        _stamp=lambda t: sim_node.SimNode._stamp(SimpleNamespace(use_sim_time=True), t),
        publishers_by_sensor={
            s: SimpleNamespace(publish=lambda msg, s=s: published.__setitem__(s, msg)) for s in ("camera", "imu")
        },
    )
    sim_node.SimNode._publish_reading(stub, "camera", 12.3456789, rgb)
    sim_node.SimNode._publish_reading(stub, "imu", 12.3456789, imu)
    ours = {"camera": M.image_message(rgb, 12.3456789), "imu": M.imu_message(imu, 12.3456789, noise=(0.01, 0.05))}
    for sensor, msgtype in (("camera", M.IMAGE), ("imu", M.IMU)):
        wire = serialize_message(published[sensor])
        ours_on_the_wire = bytes(typestore().serialize_cdr(ours[sensor], msgtype))
        assert len(ours_on_the_wire) == len(wire)  # (rclpy leaves CDR padding bytes uninitialized: compare fields)
        assert deserialize_message(ours_on_the_wire, type(published[sensor])) == published[sensor]
        decoded = typestore().deserialize_cdr(wire, msgtype)
        node_reading = (
            policy_node.image_to_numpy(published[sensor], "rgb8")
            if sensor == "camera"
            else policy_node.SENSORS["imu"][2](deserialize_message(wire, Imu))
        )
        np.testing.assert_array_equal(M.sensor_reading(sensor, decoded), node_reading)
        assert M.stamp_seconds(decoded) == stamps.seconds(published[sensor].header.stamp)
    twist = M.twist_message(0.5, -1.25)
    np.testing.assert_array_equal(M.command_vector(twist, M.TWIST), [0.5, -1.25])


def test_no_wheel_reading_by_position_where_the_node_reads_by_joint_name():
    """sensor_reading promises policy_node's reading; the node takes a JointState's velocities in the order of its
    joint_names, which the message alone does not give: a reading by position (the right wheel's speed as the
    left's, for a driver that lists the joints its own way) is refused, naming the function that reads by name."""
    from liquid_control.conventions.joints import velocities_by_name

    msg = SimpleNamespace(name=["right_wheel", "left_wheel"], velocity=[2.0, -1.0])
    node_reading, _ = velocities_by_name(msg.name, msg.velocity, ["left_wheel", "right_wheel"])
    np.testing.assert_array_equal(node_reading, [-1.0, 2.0])
    with pytest.raises(ValueError, match=r"wheels: .*joint_names.*velocities_by_name"):
        M.sensor_reading("wheels", msg)


def test_every_command_type_the_node_can_publish_is_a_label_a_bag_reader_takes():
    """policy_node's command_type values (the parameter's checked choices) each have the one message the node
    publishes and sim_node subscribes with, and a bag of that message is read as labels."""
    from liquid_control.conventions.message_types import message_type_name
    from liquid_control.conventions.params import COMMAND_TYPES
    from liquid_control.ros import policy_node

    assert tuple(policy_node.COMMAND_MESSAGES) == COMMAND_TYPES
    assert sorted(message_type_name(m) for m in policy_node.COMMAND_MESSAGES.values()) == sorted(M.COMMAND_TYPES)


def test_commands_read_from_a_bag_are_the_commands_sim_node_executes_and_the_target_the_node_reads():
    """A command of each type on the wire: the label a bag reader takes (command_vector of the rosbags message) is
    the command sim_node executes (its _on_command, before the world's scale), and the velocity target a bag reader
    takes is policy_node's reading of the same bytes."""
    import threading

    from geometry_msgs.msg import Twist, TwistStamped
    from rclpy.serialization import deserialize_message, serialize_message
    from std_msgs.msg import Float64MultiArray

    from liquid_control.bags.io import typestore
    from liquid_control.ros import policy_node, sim_node

    stamped = TwistStamped()
    stamped.twist.linear.x, stamped.twist.angular.z, stamped.twist.linear.y = 0.25, -0.75, 9.0
    plain = Twist()
    plain.linear.x, plain.angular.z, plain.angular.x = -0.5, 1.5, 9.0
    for msg, msgtype in (
        (plain, M.TWIST),
        (stamped, M.TWIST_STAMPED),
        (Float64MultiArray(data=[0.1, -0.2]), M.FLOAT64_ARRAY),
    ):
        stub = SimpleNamespace(
            command_scale=np.ones(2), recorder=None, _lock=threading.Lock(), _sim_now=3.0, commands_received=0
        )
        sim_node.SimNode._on_command(stub, msg)
        decoded = typestore().deserialize_cdr(serialize_message(msg), msgtype)
        np.testing.assert_array_equal(M.command_vector(decoded, msgtype), stub._command[0])
        np.testing.assert_array_equal(
            stub._command[0], {M.TWIST: [-0.5, 1.5], M.TWIST_STAMPED: [0.25, -0.75]}.get(msgtype, [0.1, -0.2])
        )
    target = typestore().deserialize_cdr(serialize_message(plain), M.TWIST)
    node_reading = policy_node.SENSORS["command"][2](deserialize_message(serialize_message(plain), Twist))
    np.testing.assert_array_equal(M.sensor_reading("command", target), node_reading)
    np.testing.assert_array_equal(node_reading, [-0.5, 1.5])


# ------------------------------------------------------------------------------------------------ semantics
def _synthetic_bag(path, frames, imus, commands, bad_frames=(), noise=False):
    """A bag with camera frames (stamp, log time), IMU readings (stamp, log time, value) and Twists (log time);
    frame i is filled with i (or random pixels with ``noise``)."""
    rng = np.random.default_rng(0)
    with BagWriter(path) as bag:
        bag.add_topic("/camera/image_raw", M.IMAGE, [{"reliability": "best_effort"}])
        bag.add_topic("/imu/data", M.IMU)
        bag.add_topic("/cmd_vel", M.TWIST)
        events = [(t, 0, "imu", (s, v)) for s, t, v in imus]
        events += [(t, 1, "camera", (s, i)) for i, (s, t) in enumerate(frames)]
        events += [(t, 2, "cmd", c) for t, c in commands]
        for t, _, kind, payload in sorted(events, key=lambda e: (e[0], e[1])):
            ns = int(round(t * 1e9))
            if kind == "imu":
                bag.write("/imu/data", ns, M.imu_message(payload[1], payload[0]))
            elif kind == "camera":
                pixels = (
                    rng.integers(0, 256, (H, W, 3), np.uint8) if noise else np.full((H, W, 3), payload[1], np.uint8)
                )
                msg = M.image_message(pixels, payload[0])
                if payload[1] in bad_frames:
                    msg.encoding = "yuv422"
                bag.write("/camera/image_raw", ns, msg)
            else:
                bag.write("/cmd_vel", ns, M.twist_message(*payload))
    return path


def test_bag_updates_follow_the_policy_runner_exactly(tmp_path):
    """Duplicates, out-of-order stamps, a gap, a clock jump and a bad image: the stream's updates are the ones
    PolicyRunner gives when fed the same readings directly (the node's semantics, not a re-implementation)."""
    frames = [(1.00, 1.02), (1.07, 1.09), (1.07, 1.10), (1.05, 1.11), (1.14, 1.16), (2.50, 2.52), (2.56, 2.58)]
    frames += [(0.10, 2.65), (0.17, 2.70), (0.24, 2.77)]  # clock jump backwards (a simulation reset)
    imus = [(s - 0.005, t - 0.015, np.arange(6) * i) for i, (s, t) in enumerate(frames)]
    commands = [(t + 0.004, (0.1 * i, -0.2 * i)) for i, (_, t) in enumerate(frames)]
    bag = _synthetic_bag(tmp_path / "semantics", frames, imus, commands, bad_frames=(8,))
    spec = data_spec(CAMERA_IMU)
    stats = StreamStats()
    with BagReader(bag) as reader:
        updates = list(stream_updates(reader, capture_runner(CAMERA_IMU, spec), spec, stats))

    oracle = R.PolicyRunner(CaptureBackend(CAMERA_IMU), spec.limits)
    expected = []
    events = [(t, 0, "imu", s, v) for s, t, v in imus]
    events += [(t, 1, "camera", s, np.full((H, W, 3), i, np.uint8)) for i, (s, t) in enumerate(frames) if i != 8]
    for t, _, sensor, stamp, value in sorted(events, key=lambda e: (e[0], e[1])):
        result = oracle.submit(sensor, stamp, value, now=t)
        if result.status == R.UPDATED:
            expected.append((t, stamp, result.dt))
    got = [(u.time, u.stamp, u.dt) for u in updates]
    np.testing.assert_allclose(got, expected, atol=1e-9)
    # by hand: f2 duplicate, f3 out of order, f5 after a 1.36 s gap, f7 after a clock jump (seen first on the IMU
    # message before it: the state resets there, f7 starts a new run with first_update_dt), f8 bad encoding
    np.testing.assert_allclose([u.dt for u in updates], [0.0, 0.07, 0.07, 0.0, 0.06, 0.0, 0.14], atol=1e-9)
    assert [u.reset for u in updates] == [None, None, None, "gap", None, "clock_backwards", None]
    # (the IMU readings of f2 and f3 are a duplicate and out of order as well)
    assert stats.counters["rejected.duplicate_stamp"] == 2 and stats.counters["rejected.out_of_order"] == 2
    assert stats.counters["rejected_by_sensor.camera"] == 3  # the bad encoding too, as the node counts it
    assert stats.counters["rejected.bad_encoding"] == 1 and stats.counters["resets.clock_backwards"] == 1
    # held input: each update sees the IMU reading received before it (the runner's, float32)
    np.testing.assert_array_equal(updates[1].obs["imu"], np.arange(6, dtype=np.float32) * 1)
    assert updates[1].obs["image"][0, 0, 0] == 1
    # label 'next': the command logged 4 ms after each frame, divided by action_scale
    np.testing.assert_allclose(updates[1].label, np.array([0.1, -0.2]) / SCALE)


def test_a_window_that_continues_a_gap_free_segment_starts_as_after_a_reset(tmp_path):
    """Windows of one segment are trained apart, each from the initial state. The node never resets inside a
    gap-free stream, so a continuation window's first update gets the dt the node gives the first update after a
    reset (first_update_dt), not its recorded dt, a pairing (initial state, recorded dt) it never meets at run
    time; every other update keeps the stream's dt, and a window after a real reset is unchanged."""
    import dataclasses

    from liquid_control.training.bag_data import convert_bag, load_segments

    stamps = [1.0 + i / 30 for i in range(20)] + [3.0 + i / 30 for i in range(7)]  # a 1.35 s gap: a reset
    frames = [(s, s + 0.02) for s in stamps]
    imus = [(s - 0.005, t - 0.004, np.full(6, i, float)) for i, (s, t) in enumerate(frames)]
    commands = [(t + 0.003, (0.2, 0.1)) for _, t in frames]
    bag = str(_synthetic_bag(tmp_path / "stream", frames, imus, commands))
    base = data_spec(CAMERA_IMU)
    for first_dt in (0.0, 0.01):
        spec = dataclasses.replace(base, limits=dataclasses.replace(base.limits, first_update_dt=first_dt))
        with BagReader(bag) as reader:
            updates = list(stream_updates(reader, capture_runner(CAMERA_IMU, spec), spec, StreamStats()))
        assert [i for i, u in enumerate(updates) if u.reset] == [20] and len(updates) == 27
        folder = tmp_path / f"cache{first_dt}"
        index = convert_bag(bag, CAMERA_IMU, spec, folder, 8, False, print)
        windows = load_segments(folder, index)
        assert [len(w) for w in windows] == [8, 8, 4, 7]  # 20 updates before the gap, 7 after
        dt = np.concatenate([w.dt for w in windows])
        recorded = np.array([u.dt for u in updates], np.float32)
        assert recorded[8] > 0.03 and recorded[16] > 0.03  # what the old conversion started windows 2 and 3 with
        expected = recorded.copy()
        expected[[8, 16]] = first_dt
        np.testing.assert_array_equal(dt, expected)
        assert dt[0] == dt[20] == np.float32(first_dt)  # the runner's own after the start and the gap
        np.testing.assert_array_equal(np.concatenate([w.stamp for w in windows]), [u.stamp for u in updates])
        assert [w.info["continues"] for w in windows] == [False, True, True, False]


def test_label_rules(tmp_path):
    """next / held / offset / max_wait on one timeline (commands at 5 Hz, frames at 10 Hz)."""
    frames = [(1.0 + 0.1 * i, 1.01 + 0.1 * i) for i in range(8)]
    imus = [(s, t - 0.001, np.zeros(6)) for s, t in frames]
    commands = [(1.05, (0.1, 0.0)), (1.25, (0.2, 0.0)), (1.45, (0.3, 0.0)), (1.65, (0.4, 0.0))]
    bag = _synthetic_bag(tmp_path / "labels", frames, imus, commands)
    base = data_spec(CAMERA_IMU)

    def labels(**rule):
        spec = with_label(base, **rule)
        with BagReader(bag) as reader:
            ups = list(stream_updates(reader, capture_runner(CAMERA_IMU, spec), spec))
        return [None if u.label is None else round(float(u.label[0]), 6) for u in ups]

    # frames arrive at 1.01, 1.11, ..., 1.71
    assert labels(mode="next") == [0.1, 0.2, 0.2, 0.3, 0.3, 0.4, 0.4, None]
    assert labels(mode="held") == [None, 0.1, 0.1, 0.2, 0.2, 0.3, 0.3, 0.4]
    assert labels(mode="next", offset_s=0.1) == [0.2, 0.2, 0.3, 0.3, 0.4, 0.4, None, None]
    assert labels(mode="held", offset_s=0.1) == [0.1, 0.1, 0.2, 0.2, 0.3, 0.3, 0.4, 0.4]
    assert labels(mode="next", max_wait_s=0.1) == [0.1, None, 0.2, None, 0.3, None, 0.4, None]


def test_a_command_exactly_at_an_updates_due_time_labels_it_whatever_the_float_rounding(tmp_path):
    """An audit of the label rules: frames every 50 ms on the nanosecond grid, each answered by a command logged
    exactly 0.1 s later. With offset_s 0.1 the due time was computed in float seconds (2.0 + 0.05 is not
    2050000000 * 1e-9), so 13 of 100 updates (next) and 17 (held) lost their label at max_wait_s 0.02, or took the
    neighbouring command at 0.06. Times are whole nanoseconds now: every update, its own command."""
    frames = [(1.0 + 0.05 * i - 0.01, 1.0 + 0.05 * i) for i in range(100)]
    commands = [(1.1 + 0.05 * i, (0.001 * i, 0.0)) for i in range(100)]
    bag = _synthetic_bag(tmp_path / "grid", frames, [], commands)
    base = data_spec(CAMERA_ONLY)
    for mode in ("next", "held"):
        for wait in (0.02, 0.06):
            spec = with_label(base, mode=mode, offset_s=0.1, max_wait_s=wait)
            with BagReader(bag) as reader:
                ups = list(stream_updates(reader, capture_runner(CAMERA_ONLY, spec), spec))
            got = [None if u.label is None else round(float(u.label[0]), 6) for u in ups]
            assert got == [round(0.001 * i, 6) for i in range(100)], (mode, wait, got)


def test_updates_a_reordering_lag_lets_go_together_are_each_labelled_from_their_own_message(tmp_path):
    """A fused camera + IMU policy with a reordering lag (0.015 s, the node's reorder_lag_s): an IMU message that
    arrives late (stamped 1.06, received after 1.08: rejected out of order, as the node does) leaves the buffer with
    nothing between 1.05 and 1.07, so the message stamped 1.07 lets the updates of 1.04 and 1.05 go at once. Before,
    both took the label of that message's log time (the command answering IMU 1.07: 7, 7), and every lagged update
    the command answering a message two later; each is labelled from the reception of its own message, the labels of
    the same bag without a lag, in training (convert_bag) and in eval --bag (evaluate_bag) alike."""
    from liquid_control.evaluation.offline import evaluate_bag
    from liquid_control.training.bag_data import convert_bag, load_segments

    cfg = copy.deepcopy(CAMERA_IMU)
    cfg["observation"]["update_on"] = ["camera", "imu"]
    imus, commands = [], []
    for i in range(12):  # IMU i received 1 ms after its stamp and answered 2 ms later by the command i / 100
        stamp = 1.0 + 0.01 * i
        received = 1.085 if i == 6 else stamp + 0.001
        imus.append((stamp, received, np.full(6, i, float)))
        commands.append((received + 0.002, (0.01 * i, 0.0)))
    bag = str(_synthetic_bag(tmp_path / "late", [(0.995, 0.9995)], imus, commands))

    def updates(lag, **rule):
        spec = with_label(data_spec(cfg), **rule)
        spec = dataclasses.replace(spec, limits=dataclasses.replace(spec.limits, reorder_lag_s=lag))
        with BagReader(bag) as reader:
            got = list(stream_updates(reader, capture_runner(cfg, spec), spec, StreamStats()))
        return spec, got

    def labels(ups):
        return {round(u.stamp, 3): None if u.label is None else round(float(u.label[0]) * 100, 6) for u in ups}

    spec, lagged = updates(0.015)
    assert [round(u.stamp, 3) for u in lagged] == [1.0, 1.01, 1.02, 1.03, 1.04, 1.05, 1.07, 1.08, 1.09]
    assert lagged[4].time == lagged[5].time == pytest.approx(1.071)  # let go together by IMU 1.07's message
    assert labels(lagged) == {1.0: 0, 1.01: 1, 1.02: 2, 1.03: 3, 1.04: 4, 1.05: 5, 1.07: 7, 1.08: 8, 1.09: 9}
    assert [u.label_time for u in lagged[4:6]] == pytest.approx([1.043, 1.053])
    for rule in ({}, {"mode": "held"}, {"offset_s": 0.005}, {"mode": "held", "offset_s": 0.005}):
        without_lag = labels(updates(0.0, **rule)[1])
        assert labels(updates(0.015, **rule)[1]) == {s: without_lag[s] for s in labels(lagged)}, rule
    assert labels(updates(0.015, mode="held")[1])[1.04] == 3  # in force when IMU 1.04 arrived
    # eval --bag and training read the same labels
    result = evaluate_bag(CaptureBackend(cfg), bag, spec)
    np.testing.assert_array_equal(result["label"], [u.label for u in lagged])
    index = convert_bag(bag, cfg, spec, tmp_path / "cache", 64, False, print)
    trained = np.concatenate([w.expert_action for w in load_segments(tmp_path / "cache", index)])
    np.testing.assert_array_equal(trained, np.float32([u.label for u in lagged]))


def test_the_messages_a_bags_end_leaves_in_the_reordering_buffer_are_counted_and_said(tmp_path):
    """A probe of eval --bag: with a reordering lag, the update messages within the lag of a bag's last message are
    released by no later one; they were neither updates nor waits nor rejections, counted and said nowhere (11 of a
    camera + IMU bag's 691). Now ``unreleased_at_end``, said in eval's report and training's log line."""
    from liquid_control.bags.stream import unreleased_hint

    cfg = copy.deepcopy(CAMERA_IMU)
    cfg["observation"]["update_on"] = ["camera", "imu"]
    imus = [(1.0 + 0.01 * i, 1.001 + 0.01 * i, np.full(6, i, float)) for i in range(12)]
    commands = [(1.003 + 0.01 * i, (0.01 * i, 0.0)) for i in range(12)]
    bag = str(_synthetic_bag(tmp_path / "tail", [(0.995, 0.9995)], imus, commands))
    for lag, unreleased in ((0.015, 2), (0.0, 0)):
        spec = data_spec(cfg)
        spec = dataclasses.replace(spec, limits=dataclasses.replace(spec.limits, reorder_lag_s=lag))
        stats = StreamStats()
        with BagReader(bag) as reader:
            updates = list(stream_updates(reader, capture_runner(cfg, spec), spec, stats))
        counters = stats.counters
        sent = counters["received.camera"] + counters["received.imu"]
        rejected = sum(n for k, n in counters.items() if k.startswith("rejected."))
        assert counters.get("unreleased_at_end", 0) == unreleased
        assert sent == len(updates) + counters.get("waiting_for_inputs", 0) + rejected + unreleased
        assert ("2 messages still held by the reordering lag" in unreleased_hint(counters)) == bool(unreleased)


def test_a_bag_cache_of_a_lagged_policy_is_converted_again_one_without_a_lag_kept(tmp_path):
    """Caches converted before lagged updates were labelled from their own messages hold the old labels: their
    fingerprint changes; a run without a lag labels as before, and its caches stay valid."""
    import hashlib

    from liquid_control.training import bag_data

    bag = tmp_path / "bag.mcap"
    bag.write_bytes(b"x")
    observation = {"reorder_lag_s": 0.0}
    spec = data_spec(CAMERA_IMU)

    def before(description, obs):  # the fingerprint of format 5 caches
        st = bag.stat()
        h = hashlib.sha256(f"{bag.name}:{st.st_size}:{st.st_mtime_ns};".encode())
        h.update(json.dumps([description, obs, bag_data.CACHE_FORMAT], sort_keys=True).encode())
        return h.hexdigest()

    lagged = dataclasses.replace(spec, limits=dataclasses.replace(spec.limits, reorder_lag_s=0.02))
    for kept, description, obs in [
        (True, spec.describe(), observation),  # the node's -1: the policy's lag, 0
        (True, dataclasses.replace(spec, limits=dataclasses.replace(spec.limits, reorder_lag_s=0.0)).describe(), {}),
        (False, lagged.describe(), observation),
        (False, spec.describe(), {"reorder_lag_s": 0.05}),  # the policy's own lag
    ]:
        assert (bag_data._fingerprint(str(bag), description, obs) == before(description, obs)) is kept


# ------------------------------------------------------------------------------------------------ bad bags
def test_truncated_and_corrupt_bags_give_clear_errors(expert_bags, long_bag, tmp_path):
    _, bags, _ = expert_bags
    src = tmp_path / "killed"
    shutil.copytree(long_bag, src)
    mcap = next(src.glob("*.mcap"))
    with BagReader(src) as whole:
        total = whole.message_count
    # a recorder killed mid-recording: no footer, no metadata.yaml
    with open(mcap, "r+b") as handle:
        handle.truncate(int(mcap.stat().st_size * 0.8))
    (src / "metadata.yaml").unlink()
    with pytest.raises(BagError, match="truncated MCAP file") as err:
        BagReader(src)
    assert str(mcap) in str(err.value) and "--allow-truncated" in str(err.value)
    with BagReader(src, allow_truncated=True) as salvaged:
        assert salvaged.salvaged and total // 2 < salvaged.message_count < total
        assert "truncated" in salvaged.salvage_note and str(mcap) in salvaged.salvage_note
        times = [m.log_time_ns for m in salvaged.messages()]
    assert len(times) == salvaged.message_count and times == sorted(times)
    fixed, n, _ = recover(src, tmp_path / "fixed")
    with BagReader(fixed) as reader:  # a complete bag again (footer, metadata.yaml)
        assert reader.message_count == n == len(times) and not reader.salvaged
        assert reader.topics["/camera/image_raw"].qos[0].reliability.name == "BEST_EFFORT"

    # garbage over the summary section: refused at open, naming the bag
    broken = tmp_path / "broken"
    shutil.copytree(bags[1], broken)
    mcap = next(broken.glob("*.mcap"))
    data = bytearray(mcap.read_bytes())
    data[-200:-40] = b"\xff" * 160
    mcap.write_bytes(bytes(data))
    with pytest.raises(BagError, match="broken"):
        with BagReader(broken) as reader:
            list(reader.messages())
    with pytest.raises(BagError, match="no such bag"):
        BagReader(tmp_path / "nothing")


def _with_chunk_crcs(src, dst, chunk_size=200_000):
    """``src`` (a bag folder) rewritten by the ``mcap`` library, as ``ros2 bag record`` writes: every chunk carries
    the CRC of its bytes (rosbags' writer leaves it 0, "not computed"); several chunks, no compression."""
    from mcap.reader import make_reader
    from mcap.writer import CompressionType, Writer

    dst.mkdir()
    with open(next(src.glob("*.mcap")), "rb") as f, open(dst / f"{dst.name}.mcap", "wb") as out:
        reader, writer = make_reader(f), Writer(out, chunk_size=chunk_size, compression=CompressionType.NONE)
        writer.start(profile="ros2", library="test")
        summary = reader.get_summary()
        schemas = {i: writer.register_schema(s.name, s.encoding, s.data) for i, s in summary.schemas.items()}
        channels = {
            i: writer.register_channel(c.topic, c.message_encoding, schemas[c.schema_id], c.metadata)
            for i, c in summary.channels.items()
        }
        for _, channel, msg in reader.iter_messages(log_time_order=False):
            writer.add_message(channels[channel.id], msg.log_time, msg.data, msg.publish_time, msg.sequence)
        writer.finish()
    return dst / f"{dst.name}.mcap"


def test_a_corrupt_chunk_before_the_cut_ends_the_salvage_there(long_bag, tmp_path):
    """A recording cut short with one flipped byte in a chunk before the cut: the salvage (and recover) keep the
    messages of the chunks before it, byte for byte, and stop at the bad chunk, saying where; the corrupt pixels
    never come back (they did: the salvage read chunks without checking their CRC, and recover copied them)."""
    from mcap.reader import make_reader

    src = tmp_path / "flipped"
    mcap = _with_chunk_crcs(long_bag, src)
    with BagReader(src) as whole:
        before = [(m.topic, m.log_time_ns, m.data) for m in whole.messages()]
    with open(mcap, "rb") as handle:
        chunks = sorted(make_reader(handle).get_summary().chunk_indexes, key=lambda c: c.chunk_start_offset)
    assert len(chunks) >= 5
    bad = chunks[2]
    cut = chunks[4].chunk_start_offset + 100  # killed while writing the fifth chunk
    data = bytearray(mcap.read_bytes()[:cut])
    data[bad.chunk_start_offset + bad.chunk_length // 2] ^= 0x40  # one bit of a frame's pixels
    mcap.write_bytes(bytes(data))
    with pytest.raises(BagError, match="truncated MCAP file"):
        BagReader(src)
    kept = [m for m in before if m[1] < bad.message_start_time]  # the first two chunks' messages
    assert 0 < len(kept) < len(before) // 2

    with BagReader(src, allow_truncated=True) as salvaged:
        assert salvaged.message_count == len(kept)
        got = [(m.topic, m.log_time_ns, m.data) for m in salvaged.messages()]
        note = salvaged.salvage_note
    assert got == kept
    assert note.startswith(f"{mcap}: truncated; {len(kept)} messages read up to the break")
    assert f"at byte {bad.chunk_start_offset} of {cut}: the chunk there" in note and "fails its CRC check" in note
    fixed, n, _ = recover(src, tmp_path / "fixed")
    with BagReader(fixed) as reader:
        assert n == len(kept) and [(m.topic, m.log_time_ns, m.data) for m in reader.messages()] == kept
    custom = yaml.safe_load((fixed / "metadata.yaml").read_text())["rosbag2_bagfile_information"]["custom_data"]
    assert custom == {"recovered_from": str(src), "salvage_note": note}

    # without the flipped bit the same cut keeps the four whole chunks: the check refuses only corrupt bytes
    data[bad.chunk_start_offset + bad.chunk_length // 2] ^= 0x40
    mcap.write_bytes(bytes(data))
    with BagReader(src, allow_truncated=True) as salvaged:
        four = [m for m in before if m[1] < chunks[4].message_start_time]
        assert [(m.topic, m.log_time_ns, m.data) for m in salvaged.messages()] == four
        assert f"at byte {chunks[4].chunk_start_offset} of {cut}: EndOfFile" in salvaged.salvage_note


# ------------------------------------------------------------------------------------------------ chunk CRCs
def _noise_frames(path, compression=False, frames=300, close=True):
    """A BagWriter bag of ``frames`` 64x64 random frames (12 KB each), a Twist after each: four 1 MB chunks.
    With ``close=False`` the writer is returned open (a recording still going)."""
    rng = np.random.default_rng(7)
    bag = BagWriter(path, compression=compression)
    bag.add_topic("/camera/image_raw", M.IMAGE)
    bag.add_topic("/cmd_vel", M.TWIST)
    for i in range(frames):
        t = 10**9 + i * 50_000_000
        bag.write("/camera/image_raw", t, M.image_message(rng.integers(0, 256, (64, 64, 3), np.uint8), t * 1e-9))
        bag.write("/cmd_vel", t + 1000, M.twist_message(0.5, 0.01 * i))
    if close:
        bag.close()
    return bag


def _chunks(mcap):
    """(offset, Chunk) of every chunk whole in an MCAP file, front to back (a cut file: up to the cut)."""
    from mcap.records import Chunk
    from mcap.stream_reader import StreamReader

    found = []
    with open(mcap, "rb") as handle:
        records = StreamReader(handle, emit_chunks=True).records
        while True:
            offset = handle.tell()
            try:
                record = next(records)
            except Exception:  # StopIteration at the end, EndOfFile at a cut
                return found
            if isinstance(record, Chunk):
                found.append((offset, record))


def _flip(mcap, offset, chunk):
    """One bit flipped in the middle of the chunk's records (a pixel of a frame when not compressed)."""
    data = bytearray(mcap.read_bytes())
    data[offset + 9 + 40 + len(chunk.compression) + len(chunk.data) // 2] ^= 0x10
    mcap.write_bytes(bytes(data))


@pytest.mark.parametrize("compression", [False, True])
def test_bagwriter_chunks_carry_crcs_that_every_reader_checks(tmp_path, compression):
    """Before: rosbags' writer left every chunk's CRC 0 ("not computed"), so no reader could tell a corrupt
    chunk of our own recordings. Now each chunk, the data section and the summary carry their CRC-32: the mcap
    library validates them, rosbags and BagReader still read every message."""
    import zlib

    from mcap.reader import make_reader
    from mcap.records import DataEnd, Footer
    from mcap.stream_reader import StreamReader, get_chunk_data_stream
    from rosbags.rosbag2 import Reader

    bag = _noise_frames(tmp_path / "bag", compression)
    mcap = bag.mcap_path
    chunks = _chunks(mcap)
    assert len(chunks) >= 3 and all(c.compression == ("zstd" if compression else "") for _, c in chunks)
    for _, chunk in chunks:
        stream, size = get_chunk_data_stream(chunk)
        assert chunk.uncompressed_crc != 0 and chunk.uncompressed_crc == zlib.crc32(stream.read(size))
    data = mcap.read_bytes()
    records = list(StreamReader(str(mcap), validate_crcs=True).records)  # the chunks' and data section's CRCs
    (data_end,) = [r for r in records if isinstance(r, DataEnd)]
    footer = records[-1]
    assert isinstance(footer, Footer) and data_end.data_section_crc != 0
    start = len(data) - 8 - 29  # the footer record; its CRC covers the summary up to summary_offset_start
    assert footer.summary_crc == zlib.crc32(data[footer.summary_start : start + 25]) != 0
    with open(mcap, "rb") as handle:
        by_mcap = [(c.topic, m.log_time, m.data) for _, c, m in make_reader(handle, validate_crcs=True).iter_messages()]
    assert len(by_mcap) == 600
    with Reader(bag.path) as reader:
        by_rosbags = [(c.topic, t, bytes(d)) for c, t, d in reader.messages()]
    with BagReader(bag.path) as reader:
        ours = [(m.topic, m.log_time_ns, m.data) for m in reader.messages()]
    assert by_rosbags == ours == sorted(by_mcap, key=lambda m: m[1])


@pytest.mark.parametrize("compression", [False, True])
def test_a_flipped_bit_in_a_chunk_of_our_bag_is_refused_whole_or_salvaged(tmp_path, compression):
    """Before: a flipped bit in a chunk of a BagWriter bag came back as a message (its CRC was 0, unchecked),
    from the complete bag and from the salvage of a cut one alike. Now BagReader refuses the bag naming it,
    and the salvage keeps exactly the chunks before the bad one and says where it stopped."""
    bag = _noise_frames(tmp_path / "bag", compression)
    with BagReader(bag.path) as reader:
        before = [(m.topic, m.log_time_ns, m.data) for m in reader.messages()]
    chunks = _chunks(bag.mcap_path)
    offset, bad = chunks[1]
    src = tmp_path / "flipped"
    shutil.copytree(bag.path, src)
    mcap = next(src.glob("*.mcap"))
    _flip(mcap, offset, bad)
    with pytest.raises(BagError) as err:
        with BagReader(src) as reader:
            list(reader.messages())
    assert str(src) in str(err.value) and "corrupt bag" in str(err.value)

    # the same recording cut short in its fourth chunk (no footer, no metadata.yaml): the salvage path
    cut = chunks[3][0] + 1000
    with open(mcap, "r+b") as handle:
        handle.truncate(cut)
    (src / "metadata.yaml").unlink()
    kept = [m for m in before if m[1] < bad.message_start_time]
    with BagReader(src, allow_truncated=True) as salvaged:
        assert [(m.topic, m.log_time_ns, m.data) for m in salvaged.messages()] == kept and kept
        note = salvaged.salvage_note
    assert note.startswith(f"{mcap}: truncated; {len(kept)} messages read up to the break (at byte {offset} of {cut}")
    if not compression:  # a zstd frame may already fail to decompress: refused there all the same
        assert "fails its CRC check" in note and "were not read" in note


def test_a_killed_recordings_chunks_carry_their_crcs_and_recover_says_where_it_stopped(tmp_path, capsys):
    """The CRC of each chunk is written while recording, as soon as the chunk is whole in the file, so a
    recorder killed hard leaves chunks a salvage checks (before: 0, the corrupt bit came back, and `record
    --recover` printed only the count, not where the source broke off or what it left out)."""
    from liquid_control import cli

    writer = _noise_frames(tmp_path / "live", close=False)
    src = tmp_path / "killed"
    src.mkdir()
    mcap = src / "killed.mcap"
    shutil.copyfile(writer.mcap_path, mcap)  # what SIGKILL would leave now: no footer, no metadata.yaml
    writer.close()
    chunks = _chunks(mcap)
    assert len(chunks) >= 3 and all(c.uncompressed_crc for _, c in chunks)
    size = mcap.stat().st_size
    with BagReader(src, allow_truncated=True) as salvaged:
        count = salvaged.message_count
    assert cli.main(["record", "--recover", str(src), "-o", str(tmp_path / "fixed")]) == 0
    out = capsys.readouterr().out
    assert f"recovered {count} messages of {src} into {tmp_path / 'fixed'}" in out
    assert f"{mcap}: truncated; {count} messages read up to the break (at byte " in out
    (offset,) = re.findall(rf"\(at byte (\d+) of {size}: EndOfFile", out)  # after the last whole record
    rest = size - int(offset)
    assert (f"EndOfFile; the {rest} bytes from there were not read)" if rest else "EndOfFile)") in out

    offset, bad = chunks[1]
    _flip(mcap, offset, bad)
    assert cli.main(["record", "--recover", str(src), "-o", str(tmp_path / "fixed2")]) == 0
    out = capsys.readouterr().out
    with BagReader(tmp_path / "fixed2") as reader:
        kept = reader.message_count
        assert kept > 0 and reader.end_ns < bad.message_start_time
    assert f"recovered {kept} messages of {src}" in out and f"(at byte {offset} of {size}: the chunk there" in out
    assert "fails its CRC check" in out and "were not read" in out


# ------------------------------------------------------------------------------------------------ the loop
def test_train_from_bags_resumes_exactly_and_offline_eval_agrees(expert_bags, tmp_path, capsys):
    """Record -> train (a killed run resumed gives the uninterrupted weights) -> the validation loss of
    training (fused sequences over the captured updates) equals the offline error the node's runner gives
    step by step on the same held-out bag."""
    from liquid_control.policy import load_policy
    from liquid_control.training import trainer

    root, bags, held = expert_bags
    data = {"bags": [str(root / "train" / "episode_*")], "validation": [held]}
    whole = trainer.train(CAMERA_ONLY, tmp_path / "whole", data=data, progress=False, log=lambda m: None)

    def killed_after_the_first_epoch(message):
        if message.startswith("epoch 1/2: loss"):  # its validation said, not yet saved
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        trainer.train(CAMERA_ONLY, tmp_path / "part", data=data, progress=False, log=killed_after_the_first_epoch)
    ck = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    assert ck["epoch_done"] == 1
    with pytest.raises(trainer.TrainingError, match="another config"):
        trainer.train(CAMERA_ONLY, tmp_path / "part", data=data, resume=True, overrides={"core.units": 13})
    resumed = trainer.train(None, tmp_path / "part", resume=True, progress=False)  # config and bags: the run's
    a, b = load_policy(whole.policy_path), load_policy(resumed.policy_path)
    for (k, v), (_, w) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(v, w), k
    assert whole.epochs == resumed.epochs == 2
    meta = a.metadata
    assert meta["training_data"] == "bags" and meta["training_bags"] == [str(b) for b in bags]
    assert meta["data_spec"]["action_scale"] == [1.0, 1.5] and meta["training_updates"] > 60

    from liquid_control import cli

    argv = ["eval", "--bag", held, "--policy", f"bc={whole.policy_path}", "--out", str(tmp_path / "offline")]
    assert cli.main([*argv, "--no-progress", "--no-example"]) == 0  # (the plots: test_bags_ros)
    results = json.loads((tmp_path / "offline" / "offline.json").read_text())
    overall = results["policies"]["bc"]["overall"]
    assert overall["loss"] == pytest.approx(meta["validation_loss"], rel=1e-4)
    report = (tmp_path / "offline" / "report.md").read_text()
    assert "| bc | episode_500 (validation) |" in report  # its loss selected the epoch: not a held-out error
    # the per-element figures name their element and unit (before: "MAE 0.0412, 0.2311", which is which?)
    assert "bc: linear (m/s), angular (rad/s)" in report
    out = capsys.readouterr().out
    mae = overall["mae"]
    assert f"MAE linear (m/s) {mae[0]:.4f}, angular (rad/s) {mae[1]:.4f}; RMSE linear (m/s)" in out, out
    assert results["policies"]["bc"]["bags"][held]["counters"]["updates"] == overall["labelled"] + 1


def test_offline_eval_without_node_params_uses_the_ones_the_policy_trained_with_also_exported(tmp_path, capsys):
    """Before: `eval --bag` of a policy trained with the robot's --node-params (action_scale 1.5 m/s, 2 rad/s), given
    as docs/real_robot.md section 4 gives it (no --node-params), read the bags with the parameter file shipped for the
    config's world (the rover's 1 m/s, 1.5 rad/s): its labels divided by the rover's scale, its loss not the run's
    validation loss, nothing said. A policy trained from bags records its data spec (the export carries it), which
    eval uses where no --node-params is given, and the report says which it used."""
    from liquid_control import cli
    from liquid_control.paths import config_dir
    from liquid_control.training import trainer

    def command(i):
        return 1.0 + 0.4 * np.sin(i / 4), 1.8 * np.sin(i / 3)

    train, held = (_steady_bag(tmp_path / name, 0.07, 30, command=command) for name in ("train", "held"))
    params = tmp_path / "robot.yaml"
    params.write_text("policy_node:\n  ros__parameters:\n    action_scale: [1.5, 2.0]\n")
    data = {"bags": [train], "validation": [held], "node_params": str(params)}
    run = trainer.train(CAMERA_ONLY, tmp_path / "run", data=data, progress=False, log=lambda m: None)
    validation_loss = torch.load(run.policy_path, weights_only=False)["metadata"]["validation_loss"]
    assert cli.main(["export", str(run.policy_path)]) == 0
    capsys.readouterr()  # what training and export said: the evaluations' words are read below
    for policy in (run.policy_path, run.policy_path.with_suffix(".onnx")):
        out = tmp_path / f"offline_{policy.suffix[1:]}"
        argv = ["eval", "--bag", held, "--policy", f"robot={policy}", "--out", str(out), "--no-progress"]
        assert cli.main([*argv, "--no-example"]) == 0
        results = json.loads((out / "offline.json").read_text())["policies"]["robot"]
        assert results["spec"]["action_scale"] == [1.5, 2.0]
        assert results["overall"]["loss"] == pytest.approx(validation_loss, rel=1e-4)
        report = (out / "report.md").read_text()
        assert "Topics, labels, action_scale and dt limits: robot: the ones it was trained with" in report
        # the .pt, run through its export by backend auto, still marks the bag whose loss selected its epoch (before:
        # the export carries no bags, and the mark was gone once the policy was exported); the .onnx alone cannot
        assert ("| robot | held (validation) |" in report) == (policy.suffix == ".pt"), report
    assert "warning" not in capsys.readouterr().err  # its own scale: nothing to say
    rover = str(config_dir() / "rover_policy.yaml")
    argv = ["eval", "--bag", held, "--policy", f"robot={run.policy_path}", "--out", str(tmp_path / "rover")]
    assert cli.main([*argv, "--node-params", rover, "--no-progress", "--no-example"]) == 0
    results = json.loads((tmp_path / "rover" / "offline.json").read_text())["policies"]["robot"]
    assert results["spec"]["action_scale"] == [1.0, 1.5]  # given: used
    assert results["spec_source"] == f"--node-params {rover}"
    # topics given on the command line are said with the source they override (a probe of a fleet: before, the
    # report said 'the ones it was trained with' of robot2's topics given by --topic)
    argv = ["eval", "--bag", held, "--policy", f"robot={run.policy_path}", "--out", str(tmp_path / "given")]
    given = ["--topic", "camera=/camera/image_raw", "--command-topic", "/cmd_vel", "--label-max-wait-s", "0.2"]
    assert cli.main([*argv, *given, "--no-progress", "--no-example"]) == 0
    assert json.loads((tmp_path / "given" / "offline.json").read_text())["policies"]["robot"]["spec_source"] == (
        "the ones it was trained with (recorded in the policy file), with --topic camera=/camera/image_raw "
        "--command-topic /cmd_vel --label-max-wait-s 0.2"
    )
    # ... and said, as policy_node says it at configure (before: eval --bag said nothing)
    said = f"liquid-control eval: warning: policy 'robot': --node-params {rover}: action_scale [1.0, 1.5] is not the"
    assert said in capsys.readouterr().err


def test_a_robot_without_a_simulator_trains_evaluates_and_exports_with_world_null(tmp_path, capsys):
    """Before: a config had to name one of the simulated worlds (null: 'world: must not be empty'), so a robot's
    config named the rover's, whose shipped parameter file then read the robot's bags wherever --node-params was
    left out (its topics, its action_scale, silently). `world: null` trains from bags alone: the bags' reading needs
    the robot's --node-params (refused without, naming it), and what needs a world (a run in the simulator, `eval
    --policy`, `sim`, a model card) refuses it, naming eval --bag."""
    from liquid_control import cli
    from liquid_control.training import trainer
    from liquid_control.training.model_card import CardError, write_card

    robot = {**CAMERA_ONLY, "world": None}
    train, held = (_steady_bag(tmp_path / name, 0.07, 30) for name in ("train", "held"))
    params = tmp_path / "robot.yaml"
    params.write_text("policy_node:\n  ros__parameters:\n    action_scale: [1.5, 2.0]\n")
    with pytest.raises(trainer.TrainingError, match=r"names no world \(world: null\).*give the robot's, --node-params"):
        trainer.train(robot, tmp_path / "no_params", data={"bags": [train]}, progress=False, log=lambda m: None)
    with pytest.raises(trainer.PolicyConfigError, match="world: null .* trains from recorded bags alone: give --bag"):
        trainer.train(robot, tmp_path / "simulated", progress=False, log=lambda m: None)
    data = {"bags": [train], "validation": [held], "node_params": str(params)}
    run = trainer.train(robot, tmp_path / "run", data=data, progress=False, log=lambda m: None)
    assert cli.main(["export", str(run.policy_path)]) == 0
    argv = ["eval", "--bag", held, "--policy", f"robot={run.policy_path}", "--out", str(tmp_path / "offline")]
    assert cli.main([*argv, "--no-progress", "--no-example"]) == 0
    capsys.readouterr()
    argv = ["eval", "--policy", str(run.policy_path), "--episodes", "1", "--out", str(tmp_path / "sim")]
    assert cli.main([*argv, "--no-progress"]) == 2
    assert "names no world (world: null" in capsys.readouterr().err
    assert cli.main(["sim", "--policy", str(run.policy_path), "--episodes", "1"]) == 2
    assert "no simulated world to run it in" in capsys.readouterr().err
    with pytest.raises(CardError, match="names no world"):
        write_card("robot", tmp_path / "run", 1, 1, tmp_path / "card", "")


def test_train_from_bags_can_start_from_a_trained_policy(expert_bags, tmp_path, capsys):
    """`train --init-from P` (DAgger's rounds continue training): the run starts from P's weights and input
    normalisation, not a random draw, and records where it started, also across a kill before its first
    checkpoint; a policy of another network, a missing file and a resume naming another start are refused."""
    from liquid_control import cli
    from liquid_control.policy import load_policy
    from liquid_control.runtime.backends import checkpoint_sha256
    from liquid_control.training import trainer

    root, bags, held = expert_bags
    data = {"bags": [str(root / "train" / "episode_*")], "validation": [held]}
    one = {"bags": bags[:1], "validation": [held]}  # other data: a normalisation fitted again would differ
    quiet = dict(progress=False, log=lambda m: None)
    first = trainer.train(CAMERA_IMU, tmp_path / "first", data=data, overrides={"training.epochs_first": 1}, **quiet)
    still = {"training.epochs_first": 1, "training.lr": 1e-12, "training.lr_final": 0.0}  # weights barely move
    warm = trainer.train(CAMERA_IMU, tmp_path / "warm", data=one, overrides=still, init_from=first.policy_path, **quiet)
    cold = trainer.train(CAMERA_IMU, tmp_path / "cold", data=one, overrides=still, seed=1, **quiet)
    a, b, c = (load_policy(r.policy_path).state_dict() for r in (first, warm, cold))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-8
    assert max(float((a[k] - c[k]).abs().max()) for k in a) > 1e-2
    normalisation = [k for k in a if "mean" in k or "std" in k]
    assert normalisation and all(torch.equal(a[k], b[k]) for k in normalisation)  # kept, not fitted again
    assert not all(torch.equal(a[k], c[k]) for k in normalisation)  # (fitted on the one bag, they differ)
    record = {"path": str(first.policy_path), "sha256": checkpoint_sha256(first.policy_path)}
    assert load_policy(warm.policy_path).metadata["started_from"] == record
    assert "started_from" not in load_policy(cold.policy_path).metadata

    # the checkpoint of a resumed run holds the weights: --init-from must then name the run's own start
    again = trainer.train(None, tmp_path / "warm", resume=True, init_from=first.policy_path, progress=False)
    assert again.epochs == 1 and load_policy(again.policy_path).metadata["started_from"] == record
    with pytest.raises(trainer.TrainingError, match=r"started from .*first/policy.pt \(SHA-256 [0-9a-f]{12}\), not"):
        trainer.train(None, tmp_path / "warm", resume=True, init_from=cold.policy_path, progress=False)
    with pytest.raises(trainer.TrainingError, match="missing.pt: policy file not found"):
        trainer.train(None, tmp_path / "warm", resume=True, init_from=tmp_path / "missing.pt", progress=False)
    with pytest.raises(trainer.TrainingError, match="started from random weights; resume it without"):
        trainer.train(None, tmp_path / "cold", resume=True, seed=1, init_from=first.policy_path, progress=False)

    # killed after converting its bags, before its first checkpoint: a resume without --init-from starts the same
    def killed_in_preparation(message):
        if message.startswith("train bag"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        trainer.train(
            CAMERA_IMU, tmp_path / "k", data=one, overrides=still, init_from=first.policy_path, progress=False,
            log=killed_in_preparation,
        )  # fmt: skip
    assert (tmp_path / "k" / "data").is_dir() and not (tmp_path / "k" / "checkpoint.pt").exists()
    resumed = trainer.train(None, tmp_path / "k", resume=True, progress=False)
    d = load_policy(resumed.policy_path)
    assert d.metadata["started_from"] == record and all(torch.equal(b[k], d.state_dict()[k]) for k in b)

    with pytest.raises(trainer.TrainingError, match=r"first/policy.pt: a policy of another network \(keys that differ"):
        trainer.train(CAMERA_ONLY, tmp_path / "other", data=data, init_from=first.policy_path, **quiet)
    assert not (tmp_path / "other").exists()
    argv = ["train", "--config", "policies/configs/cfc_ncp_rover.yaml", "--out", str(tmp_path / "o"), "--bag", bags[0]]
    assert cli.main([*argv, "--init-from", str(tmp_path / "missing.pt"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"--init-from {tmp_path / 'missing.pt'}: policy file not found" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_a_fine_tuning_from_a_policy_of_another_action_scale_is_warned_about(tmp_path):
    """Before: `train --bag --init-from P` where P learnt from a faster robot's bags (action_scale [1.5, 2.0]) and this
    run reads its bags with the rover's file ([1.0, 1.5]) said nothing, though P's outputs mean other speeds in this
    run's labels. The run warns naming both scales, the factors and the parameter file; P of the same scale: no word."""
    from liquid_control.bags.stream import default_node_parameters_file
    from liquid_control.policy import Policy, save_policy
    from liquid_control.training import trainer

    torch.manual_seed(0)
    data = {"bags": [_steady_bag(tmp_path / "drive", 0.07, 20)]}
    lines = {}
    for scale in ([1.5, 2.0], [1.0, 1.5]):
        start = save_policy(
            tmp_path / f"p{scale[0]}.pt", Policy.from_config(CAMERA_ONLY), {"data_spec": {"action_scale": scale}}
        )
        lines[scale[0]] = []
        still = {"training.epochs_first": 1}
        trainer.train(
            CAMERA_ONLY, tmp_path / f"run{scale[0]}", data=data, overrides=still, init_from=start, progress=False,
            log=lines[scale[0]].append,
        )  # fmt: skip
    shipped = f"{default_node_parameters_file('LiquidRover-v0')}, the one shipped for world LiquidRover-v0"
    assert [line for line in lines[1.5] if "action_scale" in line] == [
        f"warning: --init-from {tmp_path / 'p1.5.pt'} was trained with action_scale [1.5, 2.0], this run divides its "
        f"labels by [1.0, 1.5] (--node-params: none given: {shipped}): the outputs of the policy it starts from, read "
        "with this run's, command 0.667x, 0.75x what it learnt to command, which fine-tuning must undo; to fine-tune "
        "it for the robot it learnt on, give the --node-params it trained with"
    ], lines[1.5]
    assert not [line for line in lines[1.0] if "action_scale" in line]


def test_a_bag_runs_policy_and_card_say_it_learned_from_bags_and_from_which_policy(expert_bags, tmp_path, monkeypatch):
    """Before: policy.pt of a run on bags recorded the simulated schedule's fields as defaults (selected_round 0,
    selection_success None, selection_episodes 0, training_episodes: the bags counted as episodes) and its bags by
    name only (two days' 'episode_0' alike), and the model card said '60 expert demonstrations + 0 DAgger rounds x 20
    episodes (beta [...]), training distribution 'default'' and 'rendered worlds: the training distribution', with
    no word of the bags, their topics, the validation bags, data.yaml or the policy an --init-from run started from."""
    from liquid_control.policy import load_policy
    from liquid_control.runtime.backends import checkpoint_sha256
    from liquid_control.training import model_card, trainer

    root, bags, held = expert_bags
    quiet = dict(progress=False, log=lambda m: None, overrides={"training.epochs_first": 1})
    first = trainer.train(CAMERA_ONLY, tmp_path / "first", data={"bags": bags[:2], "validation": [held]}, **quiet)
    run = tmp_path / "round1"
    trainer.train(CAMERA_ONLY, run, data={"bags": bags[2:]}, init_from=first.policy_path, **quiet)
    meta = load_policy(run / "policy.pt").metadata
    for simulated in ("selected_round", "selection_success", "selection_episodes", "training_episodes"):
        assert simulated not in meta
    assert meta["training_bags"] == [str(bags[2])] and meta["validation_bags"] == [] and meta["selected_epoch"] == 1

    measured = {path: {"kernel_path": path, "outcomes": [True, False]} for path in ("compiled", "torch")}
    monkeypatch.setattr(model_card, "measure_both_paths", lambda *a, **k: measured)
    for folder, name, validation in ((tmp_path / "first", "first", [held]), (run, "round1", [])):
        card_path = model_card.write_card(name, folder, 2, 2, tmp_path / "cards", "a test machine")
        card, body = model_card.split_card(card_path)
        training = card["training"]
        for simulated in ("expert demonstrations", "DAgger rounds x", "training distribution", "rendered worlds"):
            assert simulated not in card_path.read_text()
        assert "selected_round" not in training and training["selected_epoch"] == 1
        own = load_policy(folder / "policy.pt").metadata
        assert training["bags"] == {
            "training": own["training_bags"],
            "validation": [str(b) for b in validation],
            "settings": str(folder / "data.yaml"),  # outside the checkout: absolute
        }
        seconds, updates = own["recorded_seconds"], own["training_updates"]
        bag_count = len(own["training_bags"])
        assert training["data"].startswith(f"{bag_count} recorded bag(s) (")
        assert f": {seconds} s, {updates} labelled updates; inputs camera /camera/image_raw, labels /cmd_vel" in body
        assert ("selected by the lowest validation loss" in training["data"]) == bool(validation)
        assert "inputs: the recorded bags' (no world simulated or rendered)" in training["recipes"]
    assert "started_from" not in model_card.read_card(tmp_path / "cards" / "first.md")["training"]
    start = {"path": str(first.policy_path), "sha256": checkpoint_sha256(first.policy_path)}
    assert training["started_from"] == start
    assert f"Started from the weights of `{first.policy_path}` (SHA-256 {start['sha256'][:12]}" in body


@pytest.mark.parametrize(
    "key,value",
    [("shift", "winter"), ("sensor_rate_range", [0.5, 2.0]), ("jitter_range", [0.5, 2.0]), ("action_noise", 0.2)],
)
def test_settings_of_simulated_episodes_are_refused_for_a_run_from_bags(expert_bags, tmp_path, key, value):
    """Before: a run from bags took them and simulated nothing; policy.pt recorded the timing draws as its
    timing_augmentation ({'sensor_rate_range': [0.5, 2.0]}) and the card's recipes said 'timing: sensor rate x [0.5,
    2] (log-uniform per training episode)', draws no episode of it had."""
    from liquid_control.training import trainer

    root, bags, held = expert_bags
    with pytest.raises(trainer.TrainingError, match=f"^training.{key}: .*a run from bags simulates no episode"):
        trainer.train(CAMERA_ONLY, tmp_path / "run", data={"bags": bags[:1]}, overrides={f"training.{key}": value})
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("key,value", [("dagger_rounds", 3), ("demonstrations", 20), ("beta", [0.5])])
def test_a_dagger_schedule_asked_for_a_run_from_bags_is_refused_not_dropped(expert_bags, tmp_path, key, value):
    """Before: `train --bag ... --set training.dagger_rounds=3` trained behaviour cloning alone and said nothing (the
    schedule is left out of a bag run's files), so a user asking for DAgger got none unsaid. 0 is what a bag run
    does, so it is taken."""
    from liquid_control.training import trainer

    root, bags, held = expert_bags
    with pytest.raises(trainer.TrainingError, match=f"^training.{key}: a setting of the simulated episodes"):
        trainer.train(CAMERA_ONLY, tmp_path / "run", data={"bags": bags[:1]}, overrides={f"training.{key}": value})
    assert not (tmp_path / "run").exists()
    zero = {"training.epochs_first": 1, "training.dagger_rounds": 0}
    assert trainer.train(CAMERA_ONLY, tmp_path / "ok", data={"bags": bags[:1]}, overrides=zero, progress=False)


@pytest.mark.parametrize(
    "key,value,refusal",
    [("dagger_rounds", 3, "a setting of the simulated episodes"), ("shift", "winter", ".*a run from bags simulates")],
)
def test_simulated_settings_given_as_the_whole_training_section_are_refused_for_a_run_from_bags(
    expert_bags, tmp_path, key, value, refusal
):
    """Before: ``--set "training={dagger_rounds: 3}"`` (a section given whole, which --set takes as the keys it
    names) was dropped unsaid by a run from bags, where ``--set training.dagger_rounds=3`` is refused: the run was
    behaviour cloning alone, its files said nothing of the DAgger rounds asked for."""
    from liquid_control.training import trainer

    root, bags, held = expert_bags
    with pytest.raises(trainer.TrainingError, match=f"^training.{key}: {refusal}"):
        trainer.train(CAMERA_ONLY, tmp_path / "run", data={"bags": bags[:1]}, overrides={"training": {key: value}})
    assert not (tmp_path / "run").exists()


def test_a_config_files_settings_of_simulated_episodes_are_off_for_a_run_from_bags(expert_bags, tmp_path):
    """Before (642ecf71): a config file's DART noise (every shipped balancer config has action_noise: 0.1) refused
    every run from bags with that file. They are off, as the file's DAgger schedule is, and recorded so; set with
    --set they are refused (above)."""
    from liquid_control.policy import load_policy
    from liquid_control.training import trainer

    root, bags, held = expert_bags
    timing = {"sensor_rate_range": [0.5, 2.0], "jitter_range": [0.5, 2.0]}
    config = {**CAMERA_ONLY, "training": {**CAMERA_ONLY.get("training", {}), "action_noise": 0.1, **timing}}
    one = {"training.epochs_first": 1}
    result = trainer.train(config, tmp_path / "run", data={"bags": bags[:1]}, overrides=one, progress=False)
    policy = load_policy(result.policy_path)
    training = policy.config["training"]
    assert (training["action_noise"], training["sensor_rate_range"], training["jitter_range"]) == (0.0, None, None)
    assert policy.metadata["training_sensor_rates"]["timing_augmentation"] is None


def _training_keys(path):
    """The training keys of the config a run's file records: config.yaml, a torch file's 'config' (checkpoint.pt,
    policy.pt), or an ONNX export's metadata."""
    from liquid_control.cells.checkpoint import read_plain_torch_file
    from liquid_control.runtime.backends import ONNX_CONFIG_KEY, read_onnx_metadata

    if path.suffix == ".yaml":
        return set(yaml.safe_load(path.read_text())["training"])
    if path.suffix == ".onnx":
        return set(json.loads(read_onnx_metadata(path)[ONNX_CONFIG_KEY])["training"])
    return set(read_plain_torch_file(path)["config"]["training"])


def test_a_bag_run_records_only_the_settings_that_applied_and_resumes_a_run_of_an_older_version(expert_bags, tmp_path):
    """Before: a bag run's config.yaml, checkpoint.pt, policy.pt and its ONNX export held the simulated schedule's
    settings (demonstrations 100, beta, dagger_episodes, eval_episodes 0, ...), which a run from bags never used: a
    user reading them read settings that did not apply. They are left out (config.yaml says so on its first line);
    a run of this version resumes with or without its config, one of an older version (which recorded them) too,
    and a real change of config is still refused."""
    from liquid_control import cli
    from liquid_control.cells.checkpoint import read_plain_torch_file
    from liquid_control.policy import load_policy, save_policy, validate_config
    from liquid_control.policy.config import SIMULATED_TRAINING_KEYS
    from liquid_control.training import trainer

    root, bags, held = expert_bags
    simulated = {"demonstrations": 100, "dagger_rounds": 3, "beta": [0.3], "eval_episodes": 7, "action_noise": 0.1}
    config = {**CAMERA_ONLY, "training": {**CAMERA_ONLY["training"], **simulated}}
    data = {"bags": bags[:1], "validation": [held]}

    def killed_after_the_first_epoch(message):
        if message.startswith("epoch 1/2: loss"):
            raise KeyboardInterrupt

    runs = {}
    for name in ("current", "older"):
        runs[name] = run = tmp_path / name
        with pytest.raises(KeyboardInterrupt):
            trainer.train(config, run, data=data, progress=False, log=killed_after_the_first_epoch)
    for path in (runs["current"] / "config.yaml", runs["current"] / "checkpoint.pt"):
        kept = _training_keys(path)
        assert not kept & set(SIMULATED_TRAINING_KEYS) and {"epochs_first", "lr", "batch_size"} <= kept, path
    assert (runs["current"] / "config.yaml").read_text().startswith("# a run from recorded bags: the training settings")

    # what the version before wrote: the complete config, DAgger rounds and selection episodes 0, DART noise off
    older = validate_config(config)
    older["training"].update(dagger_rounds=0, eval_episodes=0, action_noise=0.0)
    (runs["older"] / "config.yaml").write_text(yaml.safe_dump(older, sort_keys=False))
    ck = read_plain_torch_file(runs["older"] / "checkpoint.pt")
    torch.save({**ck, "config": older}, runs["older"] / "checkpoint.pt")

    quiet = dict(resume=True, progress=False, log=lambda m: None)
    with pytest.raises(trainer.TrainingError, match="another config .*training.lr"):  # a real change: refused
        trainer.train(config, runs["current"], data=data, overrides={"training.lr": 0.01}, **quiet)
    done = {
        "current": trainer.train(config, runs["current"], data=data, **quiet),  # its config given again
        "older": trainer.train(None, runs["older"], **quiet),  # its config.yaml and data.yaml
    }
    for name, result in done.items():
        assert result.epochs == 2
        policy = result.policy_path
        assert cli.main(["export", str(policy)]) == 0
        for path in (runs[name] / "config.yaml", runs[name] / "checkpoint.pt", policy, policy.with_suffix(".onnx")):
            assert not _training_keys(path) & set(SIMULATED_TRAINING_KEYS), path
        loaded = load_policy(policy)  # read back: the defaults, as for any key a file does not hold
        assert loaded.config["training"]["demonstrations"] == 60
        shipped = save_policy(tmp_path / f"{name}_shipped.pt", loaded, loaded.metadata)  # the model card's copy
        assert not _training_keys(shipped) & set(SIMULATED_TRAINING_KEYS)
    a, b = (load_policy(done[name].policy_path).state_dict() for name in ("current", "older"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the settings left out changed nothing
    assert trainer.train(None, runs["current"], **quiet).epochs == 2  # finished: its policy.pt kept


def test_a_bad_bag_stops_training_before_it_starts_and_names_the_file(expert_bags, long_bag, tmp_path):
    from liquid_control.training import trainer

    root, bags, held = expert_bags
    bad = tmp_path / "cut"
    shutil.copytree(long_bag, bad)
    mcap = next(bad.glob("*.mcap"))
    with open(mcap, "r+b") as handle:
        handle.truncate(int(mcap.stat().st_size * 0.8))
    data = {"bags": [bags[0], str(bad)], "validation": [held]}
    one = {"training.epochs_first": 1}
    with pytest.raises(trainer.TrainingError, match=r"train bag 2/2: .*cut.*truncated"):
        trainer.train(CAMERA_ONLY, tmp_path / "run", data=data, overrides=one, progress=False)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    cached = list((tmp_path / "run" / "data" / "bags" / "train").iterdir())
    assert [p.name for p in cached] == ["0000_" + os.path.basename(bags[0])]  # the good bag stays converted
    run = dict(data={**data, "allow_truncated": True}, overrides=one, resume=True, progress=False)
    assert trainer.train(CAMERA_ONLY, tmp_path / "run", **run).epochs == 1
    with pytest.raises(trainer.TrainingError, match="other bags"):
        trainer.train(CAMERA_ONLY, tmp_path / "run", **{**run, "data": {**data, "bags": [bags[0]]}})
    # salvaged with allow_truncated, stopped before its first epoch, resumed without it: the cache was taken, no
    # word of the truncation (an audit); refused now as a fresh run refuses it

    def stopped(line):
        if line.startswith("no validation bags"):  # converted, not trained yet
            raise KeyboardInterrupt

    salvaged = dict(data={"bags": [str(bad)], "allow_truncated": True}, overrides=one, progress=False)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(CAMERA_ONLY, tmp_path / "salvaged", log=stopped, **salvaged)
    with pytest.raises(trainer.TrainingError, match=r"train bag 1/1: .*cut.*truncated"):
        trainer.train(CAMERA_ONLY, tmp_path / "salvaged", **{**salvaged, "data": {"bags": [str(bad)]}, "resume": True})
    said = []
    trainer.train(CAMERA_ONLY, tmp_path / "salvaged", log=said.append, **{**salvaged, "resume": True})
    assert any(line.startswith("warning: ") and "truncated" in line for line in said), said
    big = {**CAMERA_ONLY, "observation": {**CAMERA_ONLY["observation"], "image": {"height": 32, "width": 32}}}
    camera = (
        r"/camera/image_raw \(camera: the rgb8 image of sensor_msgs/msg/Image\) has 16x16 images \(width x height\), "
        r"the policy"
    )
    with pytest.raises(trainer.TrainingError, match=rf"episode_100: no labelled update .*{camera} reads 32x32 images "):
        trainer.train(big, tmp_path / "big", data={"bags": [bags[0]]}, progress=False)


def test_a_bag_camera_of_another_aspect_is_named_width_x_height_and_labelled():
    """A bag of 24 wide x 32 high frames for a policy 24 high x 32 wide read 'has 24x32 images, the policy reads
    32x24', unlabelled beside messages in height x width; now it says width x height, once."""
    from liquid_control.bags.stream import wrong_size_hint

    spec = SimpleNamespace(topics={"camera": "/camera/image_raw"})
    hint = wrong_size_hint("camera", (32, 24, 3), (24, 32, 3), spec)
    assert "has 24x32 images (width x height), the policy reads 32x24 images (observation.image)" in hint, hint
    unknown = wrong_size_hint("camera", None, (24, 32, 3), spec)
    assert "has of another size, the policy reads 32x24 images (width x height) (observation.image)" in unknown


def _steady_bag(path, period: float, frames: int, command=lambda i: (0.5, 0.3 * np.sin(i / 5))):
    """Camera frames every ``period`` s (random pixels), each followed by a command."""
    stamps = [(1.0 + period * i, 1.02 + period * i) for i in range(frames)]
    commands = [(t + 0.003, command(i)) for i, (_, t) in enumerate(stamps)]
    return str(_synthetic_bag(path, stamps, [], commands, noise=True))


def test_a_validation_loss_that_cannot_be_computed_stops_the_run_naming_the_epoch_and_bags(tmp_path, monkeypatch):
    """Before: an explicit LTC solver stable at the training bag's 0.07 s but not at the validation bag's 0.9 s
    ended the run with the cell's bare SolverDivergedError, naming neither the validation, the epoch nor what the
    checkpoint keeps (--resume met it again); and a NaN validation loss after the first epoch was 'selected' for
    good (NaN <= loss is False: no later epoch could replace it)."""
    from liquid_control.training import bag_data, trainer

    data = {
        "bags": [_steady_bag(tmp_path / "drive", 0.07, 40)],
        "validation": [_steady_bag(tmp_path / "held", 0.9, 20)],
    }
    stiff = {**CAMERA_ONLY, "core": {"type": "ltc", "units": 12, "wiring": "none", "solver": "euler", "unfolds": 1}}
    kept = re.escape(f"{tmp_path / 'run' / 'checkpoint.pt'} keeps epoch 1, not validated")
    for resume in (False, True):
        with pytest.raises(trainer.TrainingError) as info:
            trainer.train(stiff, tmp_path / "run", data=data, resume=resume, progress=False, log=lambda m: None)
        message = str(info.value)
        assert message.startswith("epoch 1: validation on the held-out bags (held): LTC solver 'euler' diverged")
        assert "the validation bags' longest dt is 0.9 s, the training bags' 0.07 s" in message
        assert re.search(kept, message), message
    nan = {"loss": float("nan"), "updates": 20}
    monkeypatch.setattr(bag_data, "bc_loss", lambda *args, **kwargs: nan)
    with pytest.raises(trainer.TrainingError, match=r"^epoch 1: validation loss nan on the held-out bags \(held\)"):
        trainer.train(CAMERA_ONLY, tmp_path / "nan", data=data, progress=False, log=lambda m: None)
    assert not (tmp_path / "nan" / "policy.pt").exists()


def test_a_bag_run_says_which_epoch_it_selected_and_which_had_the_same_validation_loss(tmp_path):
    """Before: the last line said 'selected round 0 (epoch 3), selection success n/a' for a bag run, nothing of
    the validation loss that chose the epoch, nor that it had not changed (a learning rate too small to move it:
    every epoch tied, the later kept)."""
    from liquid_control.policy import read_metadata
    from liquid_control.training import trainer

    data = {
        "bags": [_steady_bag(tmp_path / "drive", 0.07, 30)],
        "validation": [_steady_bag(tmp_path / "held", 0.07, 20)],
    }
    lines = []
    still = {"training.epochs_first": 3, "training.lr": 1e-30, "training.lr_final": 0.0}
    result = trainer.train(
        CAMERA_ONLY, tmp_path / "still", data=data, overrides=still, progress=False, log=lines.append
    )
    loss = read_metadata(result.policy_path)["validation_loss"]
    assert (
        f"selected epoch 3: validation loss {loss:.5f}, the lowest of 3 epoch(s) (epoch(s) 1, 2: the same to 6 "
        "digits; of equal losses the later is kept)" in lines[-1]
    ), lines[-1]
    lines.clear()
    trainer.train(CAMERA_ONLY, tmp_path / "none", data={"bags": data["bags"]}, progress=False, log=lines.append)
    assert lines[-1].startswith("selected the last epoch (2): no validation bags; wrote "), lines[-1]


def test_a_bag_run_in_a_log_says_each_epoch_in_one_line_with_its_losses_and_seconds(tmp_path):
    """Before: with the bars off (a CI or cluster log) a bag run said only 'epoch N: validation loss ...' per epoch,
    without its training loss or time, and nothing at all per epoch without validation bags (metrics.csv had them)."""
    from liquid_control.training import trainer

    data = {
        "bags": [_steady_bag(tmp_path / "drive", 0.07, 30)],
        "validation": [_steady_bag(tmp_path / "held", 0.07, 20)],
    }
    two = {"training.epochs_first": 2}
    for name, given in (("validated", data), ("alone", {"bags": data["bags"]})):
        lines = []
        trainer.train(CAMERA_ONLY, tmp_path / name, data=given, overrides=two, progress=False, log=lines.append)
        validation = r", validation loss \d+\.\d{5} \(\d+ updates\)" if name == "validated" else ""
        said = [line for line in lines if line.startswith("epoch ")]
        epochs = [re.fullmatch(rf"epoch (\d)/2: loss \d+\.\d{{5}}{validation}, \d+\.\d s", line) for line in said]
        assert [m and m[1] for m in epochs] == ["1", "2"], lines


def test_a_later_epoch_the_same_to_6_digits_is_not_called_an_equal_loss_the_later_of_which_is_kept():
    """Before: every epoch whose logged (6-digit) validation loss matched the selected one's was listed with 'of
    equal losses the later is kept', a later one too, which had not been kept: its loss was higher beyond the 6
    digits (else the later would have been selected)."""
    from types import SimpleNamespace

    from liquid_control.training.bag_data import BagRun

    exact = {1: 0.1234561, 2: 0.1234559, 3: 0.1234563, 4: 0.2}
    rows = [{"kind": "validate", "epoch": str(e), "loss": str(round(v, 6))} for e, v in exact.items()]
    run = SimpleNamespace(best={"epoch": 2, "validation_loss": exact[2]}, rows=rows)
    assert BagRun.selection_note(run) == (
        "selected epoch 2: validation loss 0.12346, the lowest of 4 epoch(s) (epoch(s) 1: the same to 6 digits; of "
        "equal losses the later is kept) (epoch(s) 3: the same to 6 digits, higher beyond them)"
    )


def test_training_labels_that_never_change_are_named(tmp_path):
    """Before: bags of a robot that only drove straight (angular command always 0) trained a policy that cannot
    steer without a word. Labels clipped to the action bounds, as the loss clips them: 2.0 above high 1 is 1."""
    from liquid_control.training import trainer

    lines = []
    straight = _steady_bag(tmp_path / "straight", 0.07, 30, command=lambda i: (2.0 + 0.1 * (i % 2), 0.0))
    trainer.train(CAMERA_ONLY, tmp_path / "run", data={"bags": [straight]}, progress=False, log=lines.append)
    warned = [line for line in lines if line.startswith("warning: every training label")]
    assert warned == [
        f"warning: every training label of action[{i}] is {value} (all 30 labelled updates, within action.low..high): "
        "the policy can only learn to output that; record commands that vary it"
        for i, value in ((0, 1), (1, 0))
    ], lines
    lines.clear()
    trainer.train(
        CAMERA_ONLY,
        tmp_path / "varied",
        data={"bags": [_steady_bag(tmp_path / "turns", 0.07, 30, command=lambda i: (0.02 * i, np.sin(i)))]},
        progress=False,
        log=lines.append,
    )
    assert not [line for line in lines if "warning" in line and "encoder.camera:" not in line], lines


def test_training_labels_beyond_the_action_bounds_times_the_nodes_action_scale_are_named(tmp_path):
    """Before: bags of a robot driving up to 1.4 m/s trained with the rover's parameter file (the default: action_scale
    1 m/s) had every label above 1 m/s clipped by the loss without a word; the policy could never drive faster. The
    run names the element, the count, the bounds in robot units, what was recorded and the file the scale came from."""
    from liquid_control.training import trainer

    fast = _steady_bag(tmp_path / "fast", 0.07, 30, command=lambda i: (1.4 if i % 3 else 0.5, 0.3 * np.sin(i / 5)))
    lines = []
    trainer.train(CAMERA_ONLY, tmp_path / "rover", data={"bags": [fast]}, progress=False, log=lines.append)
    warned = [line for line in lines if "beyond action.low..high" in line]
    assert len(warned) == 1 and warned[0].startswith(
        "warning: 20 of 30 labelled updates command linear beyond action.low..high x action_scale 1 = -1..1 m/s "
        "(recorded 0.5..1.4 m/s): the loss clips them"
    ), lines
    assert "config/rover_policy.yaml, the one shipped for world LiquidRover-v0; --node-params)" in warned[0]
    params = tmp_path / "robot.yaml"
    params.write_text("policy_node:\n  ros__parameters:\n    action_scale: [1.5, 2.0]\n")
    lines.clear()
    data = {"bags": [fast], "node_params": str(params)}
    trainer.train(CAMERA_ONLY, tmp_path / "robot", data=data, progress=False, log=lines.append)
    assert not [line for line in lines if "warning" in line and "encoder.camera:" not in line], lines


@pytest.mark.parametrize("gravity_z", [9.81, -9.81])
def test_a_bags_imu_whose_gravity_is_not_on_plus_z_is_named_before_training_on_it(tmp_path, gravity_z):
    """Before: bags of an IMU publishing north-east-down axes (gravity -9.81 on z) trained without a word, and only
    the deployed policy_node said so (imu.gravity_mismatch) at every run, when fixing the axes meant training again.
    The conversion checks the IMU as the node does (conventions.imu.GravityCheck) and names the bag and the topic."""
    from liquid_control.training import trainer

    frames = [(1.0 + 0.066 * i, 1.02 + 0.066 * i) for i in range(120)]
    noise = np.random.default_rng(0).normal(0.0, 0.05, (len(frames), 6))
    imus = [(s - 0.005, t - 0.01, np.array([0, 0, 0.1, 0.2, 0, gravity_z]) + n) for (s, t), n in zip(frames, noise)]
    commands = [(t + 0.003, (0.5, 0.3 * np.sin(i / 5))) for i, (_, t) in enumerate(frames)]
    bag = str(_synthetic_bag(tmp_path / "ned", frames, imus, commands, noise=True))
    lines = []
    trainer.train(CAMERA_IMU, tmp_path / "run", data={"bags": [bag]}, progress=False, log=lines.append)
    warned = [line for line in lines if "imu.gravity_mismatch" in line]
    if gravity_z > 0:
        assert not warned, warned
    else:
        assert len(warned) == 1 and warned[0].startswith(
            "warning: ned: /imu/data (imu, as the policy's updates hold it): linear_acceleration averages ("
        ), lines
        assert "-9.8" in warned[0] and "gravity does not point along +z" in warned[0]
        assert "the policy learns the IMU as recorded" in warned[0]
    # resumed (the converted cache reused, the bag not read again): said again, also for a cache converted before
    # its index kept the finding. Before: the resumed run's log held no word of it
    index_path = tmp_path / "run" / "data" / "bags" / "train" / "0000_ned" / "index.json"
    for older in (False, True):
        if older:
            index = json.loads(index_path.read_text())
            assert index.pop("imu_gravity") == (
                warned[0].split(": ", 3)[3].split("; the policy")[0] if warned else None
            )
            index_path.write_text(json.dumps(index))
        (tmp_path / "run" / "policy.pt").unlink()
        again = []
        trainer.train(None, tmp_path / "run", resume=True, progress=False, log=again.append)
        assert [line for line in again if "imu.gravity_mismatch" in line] == warned, again
        assert not [line for line in again if "converting" in line or " updates (" in line], again


def _bag_with_a_stray_file(path, stray_from):
    """A bag folder holding, beside its recording, the storage file of another one (``stray_from``), renamed
    extra.mcap: metadata.yaml does not list it."""
    from pathlib import Path

    bag = _steady_bag(path, 0.07, 30)
    (stray,) = Path(_steady_bag(stray_from, 0.07, 20)).glob("*.mcap")
    stray.rename(Path(bag) / "extra.mcap")
    return bag


def _unlisted_warnings(run) -> list[str]:
    """The warnings of a storage file metadata.yaml does not list that ``run()`` gives, each one as said."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run()
    return [str(w.message) for w in caught if "not listed in its metadata.yaml" in str(w.message)]


def test_a_storage_file_metadata_yaml_does_not_list_is_named_again_by_a_run_reusing_its_cache(tmp_path):
    """Before: the first run's bag reader warned, as it converted each bag, that extra.mcap is not read; a resumed run
    reuses the converted caches without opening the bags and said nothing of it then (of a training bag only at its
    end, when policy.pt's camera record opens it again; of a validation bag never), though the file was still there.
    The reuse says it again through the same warnings channel: the resumed run says what the first said."""
    from liquid_control.training import trainer

    bag = _bag_with_a_stray_file(tmp_path / "run_001", tmp_path / "run_002")
    held = _bag_with_a_stray_file(tmp_path / "val_001", tmp_path / "val_002")
    out, lines = tmp_path / "run", []
    data = {"bags": [bag], "validation": [held]}
    first = _unlisted_warnings(lambda: trainer.train(CAMERA_ONLY, out, data=data, progress=False, log=lines.append))
    assert {said.split(": extra.mcap not listed in its metadata.yaml, so not read")[0] for said in first} == {
        bag,
        held,
    }, first
    (out / "policy.pt").unlink()  # killed before its policy was written: a resume reads the bags again
    again = []
    resumed = _unlisted_warnings(lambda: trainer.train(None, out, resume=True, progress=False, log=again.append))
    assert not [line for line in again if "converting" in line or " updates (" in line], again  # the caches reused
    assert resumed == first, resumed


def test_the_conversion_bar_moves_through_a_bag_in_bytes_and_a_resume_names_the_bags_it_takes_cached(
    tmp_path, monkeypatch
):
    """Before (the misc probe): the bar counted bags, so a run on one bag of hours showed 0/1 for the minutes its
    conversion took, and a resumed run said nothing of the bags it took from their caches. Now the bar is in bytes of
    the bags' files, advanced as each bag's messages are read (a thousand steps at most), and a resume says one line
    per bag taken from its cache."""
    from pathlib import Path

    from liquid_control.bags.io import recorded_files
    from liquid_control.training import bag_data, trainer

    bars = []

    class Bar:  # what the run's bar was told
        def __init__(self, total, desc, enabled, **options):
            self.total, self.desc, self.options, self.steps = total, desc, options, [0]
            bars.append(self)

        def update(self, n=1):
            self.steps.append(self.steps[-1] + n)

        def close(self):
            pass

    monkeypatch.setattr(bag_data, "progress_bar", Bar)
    data = {
        "bags": [_steady_bag(tmp_path / "drive", 0.07, 40)],
        "validation": [_steady_bag(tmp_path / "held", 0.07, 20)],
    }
    out, lines = tmp_path / "run", []
    trainer.train(CAMERA_ONLY, out, data=data, progress=False, log=lines.append)
    for kind, bar in zip(("train", "validation"), bars):
        (bag,) = data["bags" if kind == "train" else "validation"]
        assert bar.desc == f"{kind} bags" and bar.options["unit"] == "B"
        assert bar.total == sum(f.stat().st_size for f in recorded_files(bag))
        # one step per message of the read topics (a frame and a command each): through the bag, not once at its end
        assert len(bar.steps) - 1 == (80 if kind == "train" else 40), bar.steps
        assert bar.steps == sorted(bar.steps) and bar.steps[-1] == bar.total and bar.steps[-2] < bar.total

    (out / "policy.pt").unlink()  # killed before its policy was written: a resume reads the bags again
    bars.clear()
    again = []
    trainer.train(None, out, resume=True, progress=False, log=again.append)
    cached = [line for line in again if "taken from its cache" in line]
    assert cached == [
        f"train bag drive: taken from its cache, {Path('data/bags/train/0000_drive')} (converted by an earlier "
        "start: 40 updates, 40 labelled)",
        f"validation bag held: taken from its cache, {Path('data/bags/validation/0000_held')} (converted by an "
        "earlier start: 20 updates, 20 labelled)",
    ], again
    assert [bar.steps for bar in bars] == [[0, bar.total] for bar in bars]  # cached: the whole bag at once


def test_a_bag_hash_cached_before_it_left_out_unlisted_files_is_taken_again(tmp_path, monkeypatch):
    """Before: a cache converted when bag_sha256 still counted a storage file metadata.yaml does not list (up to
    961d716) kept that hash in its index.json, so a resumed run recorded another SHA-256 of the bag in policy.pt
    than a fresh conversion's. An index without the hash scheme is hashed again where its folder holds a file the
    older hashes counted; one of a folder without such a file keeps its hash (the same bytes), the bag not read."""
    import hashlib
    from pathlib import Path

    from liquid_control.bags.io import bag_sha256
    from liquid_control.conventions import training_record
    from liquid_control.policy import load_policy
    from liquid_control.training import bag_data, trainer

    stray = _bag_with_a_stray_file(tmp_path / "run_001", tmp_path / "run_002")
    clean = _steady_bag(tmp_path / "run_003", 0.07, 25)
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="extra.mcap not listed"):
        first = trainer.train(CAMERA_ONLY, out, data={"bags": [stray, clean]}, progress=False)
    source = load_policy(first.policy_path).metadata[training_record.SOURCE_KEY]
    hashes = {"run_001": bag_sha256(stray), "run_003": bag_sha256(clean)}
    assert source == {"bags": [{"name": name, "sha256": h} for name, h in hashes.items()]}
    # both indexes as converted before the fix: the stray one's hash counting extra.mcap, as bag_sha256 did then
    files = sorted(Path(stray).glob("*.mcap"), key=lambda f: f.name)
    old = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()
    assert len(files) == 2 and old != hashes["run_001"]
    indexes = sorted((out / "data" / "bags" / "train").glob("*/index.json"))
    for path, sha256 in zip(indexes, (old, hashes["run_003"]), strict=True):
        index = json.loads(path.read_text())
        index.pop("sha256_scheme", None)
        path.write_text(json.dumps({**index, "sha256": sha256}))
    hashed = []
    monkeypatch.setattr(bag_data, "bag_sha256", lambda bag: hashed.append(bag) or bag_sha256(bag))
    (out / "policy.pt").unlink()
    with pytest.warns(UserWarning, match="extra.mcap not listed"):
        again = trainer.train(None, out, resume=True, progress=False)
    assert load_policy(again.policy_path).metadata[training_record.SOURCE_KEY] == source
    assert hashed == [stray]  # the clean bag's old hash is today's: not read again
    for path, sha256 in zip(indexes, hashes.values(), strict=True):
        index = json.loads(path.read_text())
        assert (index["sha256"], index["sha256_scheme"]) == (sha256, 2)  # kept: a later resume reads nothing


def test_a_run_on_single_update_bags_says_the_core_never_integrated_time(tmp_path):
    """Before: bags of one frame each (every update at dt 0) trained with the advice 'set core.max_step a little
    above the longest, e.g. 0.0001': sub-steps of 0.1 ms, a thousand a step at run time."""
    from liquid_control.training import trainer

    lines = []
    data = {"bags": [_steady_bag(tmp_path / "one", 0.07, 1)]}
    trainer.train(CAMERA_ONLY, tmp_path / "run", data=data, progress=False, log=lines.append)
    assert not [line for line in lines if "max_step" in line], lines
    assert "every update trained on had dt 0 (sequences of a single update, given the dt after a reset)" in lines[-2]


def test_a_damaged_bag_cache_is_rebuilt_from_the_bag_and_named(expert_bags, tmp_path):
    """The converted bags under data/bags/ are a cache: a segment file cut short or gone, or an index.json that
    is not one, makes a resume convert the bag again with a warning naming the file (it failed every resume
    with numpy's "mmap length is greater than file size" or a bare JSON error, naming nothing)."""
    from liquid_control.training import trainer

    root, bags, held = expert_bags
    out = tmp_path / "run"
    data = {"bags": bags[:1], "validation": [held]}
    first = trainer.train(CAMERA_IMU, out, data=data, overrides={"training.epochs_first": 1}, progress=False)
    cache = out / "data" / "bags" / "train" / f"0000_{os.path.basename(bags[0])}"
    pristine = {p.name: p.read_bytes() for p in cache.iterdir()}
    imu, index = cache / "seg_00000.obs.imu.bin", cache / "index.json"
    assert imu.name in pristine and index.name in pristine

    damages = [
        (lambda: imu.write_bytes(pristine[imu.name][:100]), f"{imu}: cache segment file of 100 bytes"),
        (lambda: imu.unlink(), f"{imu}: cache segment file missing"),
        (lambda: index.write_text("{"), f"{index}: unreadable cache index (JSONDecodeError"),
        (lambda: index.write_text("[]"), f"{index}: not a cache index"),
    ]
    for damage, named in damages:
        damage()
        (out / "policy.pt").unlink()  # killed before its policy was written: a resume reads the bags again
        logs = []
        again = trainer.train(None, out, resume=True, progress=False, log=logs.append)
        warnings = [m for m in logs if m.startswith("warning:") and not m.startswith("warning: encoder.camera:")]
        assert len(warnings) == 1 and named in warnings[0], (named, warnings)
        assert "damaged cache, converting the bag again" in warnings[0]
        assert {p.name: p.read_bytes() for p in cache.iterdir()} == pristine  # rebuilt as it was
        assert again.epochs == first.epochs == 1
    logs = []
    (out / "policy.pt").unlink()
    trainer.train(None, out, resume=True, progress=False, log=logs.append)
    said = [m for m in logs if m.startswith(("warning:", "train bag")) and "encoder.camera:" not in m]  # said
    counts = json.loads(index.read_text())["stats"]
    assert said == [
        f"train bag {os.path.basename(bags[0])}: taken from its cache, {cache.relative_to(out)} (converted by an "
        f"earlier start: {counts['updates']} updates, {counts['labelled']} labelled)"
    ], said


def test_a_bag_cache_index_nested_too_deeply_is_damage_naming_it(tmp_path):
    """An index.json nested past the recursion limit raised RecursionError out of read_cache: a traceback ended
    the run instead of the CacheError its caller turns into 'damaged cache, converting the bag again'."""
    from liquid_control.training.bag_data import CacheError, read_cache

    index = tmp_path / "index.json"
    index.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CacheError, match=rf"^{index}: unreadable cache index \(.*nested too deeply to read\)$"):
        read_cache(tmp_path, "fingerprint", 10)


BALANCE = {
    "name": "balance",
    "world": "LiquidBalance-v0",
    "observation": {"vectors": {"imu": 6, "wheels": 2}, "update_on": "imu"},
    "core": {"type": "cfc", "units": 8},
    "action": {"size": 2, "low": [-1, -1], "high": [1, 1], "kind": "wheel_torques"},
}


def _balance_bag(path, spec, names, velocity):
    """40 IMU messages at 200 Hz, each followed by a JointState (``names``, ``velocity``) and a command."""
    from liquid_control.bags.io import typestore

    types = typestore().types
    with BagWriter(path) as bag:
        for i in range(40):
            t = 1 + i * 0.005
            n = len(velocity)
            joints = types[M.JOINT_STATE](
                header=M.header(t), name=list(names), position=np.zeros(n), velocity=np.asarray(velocity, float),
                effort=np.zeros(n),
            )  # fmt: skip
            layout = types["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
            bag.write("/imu/data", int(t * 1e9), M.imu_message(np.zeros(6), t))
            bag.write("/joint_states", int(t * 1e9) + 100, joints)
            bag.write(spec.command_topic, int(t * 1e9) + 200, types[M.FLOAT64_ARRAY](layout=layout, data=np.ones(2)))
    return path


def test_vector_readings_of_the_wrong_size_are_named_by_topic_field_and_sizes(tmp_path):
    """A balance bag whose /joint_states carry three wheel velocities for a policy reading two: the error names
    the topic, the field and both sizes (it told of "NonexNone images" for any input of the wrong size)."""
    from liquid_control.policy import validate_config
    from liquid_control.training.bag_data import convert_bag

    cfg = validate_config(BALANCE)
    spec = data_spec(cfg)
    assert spec.topics == {"imu": "/imu/data", "wheels": "/joint_states"}
    _balance_bag(tmp_path / "bag", spec, [], [0.1, 0.2, 0.3])  # no names: read by position
    with pytest.raises(BagError) as err:
        convert_bag(str(tmp_path / "bag"), cfg, spec, tmp_path / "cache" / "bag", 64, False, print)
    message = str(err.value)
    assert "/joint_states (wheels: velocity of sensor_msgs/msg/JointState) has 3 values per reading, the policy " \
        "reads 2 values (observation.vectors.wheels: 2)" in message  # fmt: skip
    assert "images" not in message and "/imu/data" not in message  # (the imu readings are of the right size)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())  # nothing left behind


def test_wheel_velocities_are_read_by_joint_name_as_the_node_reads_them(tmp_path):
    """Before: training read JointState.velocity by position, so a driver listing the wheels right first swapped
    them in the training data (the node takes them by name in joint_names' order since 2026-12-03)."""
    from liquid_control.bags.stream import StreamStats, capture_runner, stream_updates
    from liquid_control.policy import validate_config

    cfg = validate_config(BALANCE)
    spec = data_spec(cfg)
    assert spec.joint_names == ("wheel_left", "wheel_right")

    def wheels(names, velocity):
        stats = StreamStats()
        bag = _balance_bag(tmp_path / f"bag{len(list(tmp_path.iterdir()))}", spec, names, velocity)
        with BagReader(bag) as reader:
            updates = list(stream_updates(reader, capture_runner(cfg, spec), spec, stats))
        return [u.obs["wheels"].tolist() for u in updates], stats.counters

    expected, _ = wheels(["wheel_left", "wheel_right"], [0.1, 0.2])
    assert expected and np.allclose(expected, [0.1, 0.2])
    assert wheels(["wheel_right", "caster", "wheel_left"], [0.2, 9.0, 0.1])[0] == expected
    assert wheels([], [0.1, 0.2])[0] == expected  # no names: by position
    missing, counters = wheels(["wheel_right", "caster"], [0.2, 9.0])
    assert missing == [] and counters["rejected.missing_joint"] == 40
    assert counters["rejected_by_sensor.wheels"] == 40  # as the node counts it
    for names, problem in (  # refused as the node refuses them at configure (left twice: trained on it twice)
        ("[wheel_left, wheel_left]", "must be a list of distinct, non-empty joint names"),
        ("[wheel_left]", "the policy reads 2 wheel velocities, ['wheel_left'] names 1 joints"),
    ):
        params = tmp_path / "np.yaml"
        params.write_text(f"policy_node:\n  ros__parameters:\n    joint_names: {names}\n")
        with pytest.raises(ValueError, match=rf"np.yaml: joint_names: {re.escape(problem)}"):
            data_spec(cfg, str(params))
    custom = tmp_path / "custom.yaml"  # a spec with the default names describes itself as before they existed
    custom.write_text("policy_node:\n  ros__parameters:\n    joint_names: [left_wheel_joint, right_wheel_joint]\n")
    assert "joint_names" not in spec.describe()
    assert data_spec(cfg, str(custom)).describe()["joint_names"] == ["left_wheel_joint", "right_wheel_joint"]
    camera_only = validate_config(CAMERA_ONLY)  # reads no wheels: its spec (and bag fingerprint) ignores them
    assert "joint_names" not in data_spec(camera_only, str(custom)).describe()


def test_a_bag_cache_is_on_disk_before_its_index_names_it(expert_bags, tmp_path, monkeypatch):
    """Every segment file is fsynced before index.json (written atomically) names it, and the folders after."""
    from liquid_control.training.bag_data import convert_bag

    _, bags, _ = expert_bags
    synced = []
    fsync = os.fsync

    def recording_fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    folder = tmp_path / "cache" / "0000_bag"
    index = convert_bag(bags[0], CAMERA_IMU, data_spec(CAMERA_IMU), folder, 8, False, print)
    tmp = str(tmp_path / "cache" / ".0000_bag.tmp")
    files = [f"{tmp}/{seg['name']}.{key}.bin" for seg in index["segments"] for key in seg["layout"]]
    assert len(index["segments"]) > 2 and sorted(synced[: len(files)]) == sorted(files)
    assert os.path.basename(synced[len(files)]).startswith(".index.json.")  # atomic_write's temporary file
    assert synced[len(files) + 1 :] == [tmp, str(tmp_path / "cache")]
    assert sorted(p.name for p in folder.iterdir()) == sorted(["index.json", *(os.path.basename(f) for f in files)])


def test_a_bag_conversion_on_a_full_disk_names_its_cache_and_leaves_no_partial_folder(expert_bags, tmp_path):
    """Before: a disk filling up while a bag was converted (train --bag) left its half-written temporary folder
    (.NNNN_<bag>.tmp, holding the room it had taken) as closing the segment files failed again, and the error
    named no file ('cannot write runs/x: No space left on device'). The full disk here: `ulimit -f` (EFBIG)."""
    import errno
    import resource

    from liquid_control.training.bag_data import convert_bag

    _, bags, _ = expert_bags
    folder = tmp_path / "cache" / "0000_bag"
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2000, hard))  # a segment's camera file cannot grow past 2000 bytes
    try:
        with pytest.raises(OSError) as err:
            convert_bag(bags[0], CAMERA_IMU, data_spec(CAMERA_IMU), folder, 64, False, print)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert err.value.errno == errno.EFBIG and err.value.filename == str(folder)
    assert list((tmp_path / "cache").iterdir()) == []
    index = convert_bag(bags[0], CAMERA_IMU, data_spec(CAMERA_IMU), folder, 64, False, print)  # room made
    assert index["segments"] and sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["0000_bag"]


def test_record_expert_of_a_balancer_writes_what_sim_node_publishes_and_trains_the_balancer(tmp_path, capsys):
    """Before: `record --expert` drove only the rover (make_world refused any other world), so a balancer user had no
    simulated teleoperation for the robot loop. `--world LiquidBalance-v0`: the world's deliveries message by message
    (IMU and wheel encoders, as sim_node builds them: the encoders' with the wheel angles measured with their
    velocities, which the bags lacked after sim_node's had them, 59ba423e), its velocity target before the first
    message, and at each update the expert's wheel torques on the balancer policy's command topic, which sim_node
    executes as the expert's action; the shipped balancer config reads the bag with its own parameter file, every
    update but the last labelled by the expert. Options of the rover's expert are refused for it, and a world
    sim_node does not run is named."""
    import threading

    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    from liquid_control import cli
    from liquid_control.conventions.joints import velocities_by_name
    from liquid_control.conventions.params import WHEEL_JOINT_NAMES
    from liquid_control.conventions.sim_worlds import WORLDS
    from liquid_control.policy import validate_config
    from liquid_control.ros import sim_node

    world_id, seed = "LiquidBalance-v0", 4
    out = tmp_path / "bal"
    argv = ["record", "--expert", "--world", world_id, "--episodes", "1", "--seed", str(seed), "--no-progress"]
    assert cli.main([*argv, "--time-limit", "0.3", "-o", str(out)]) == 0
    assert f"recorded 1 expert episode of {world_id}" in capsys.readouterr().out  # not 1 expert episodes
    bag = out / f"episode_{seed}"
    world = make_world(world_id, time_limit=0.3)  # the oracle: the same world and seed, driven as the bag's operator
    try:
        world.reset(seed=seed)
        target = world.command.copy()
        delivered = [  # (sensor, stamp, log time, reading, the wheel angles measured with it)
            (s, st, st + world.timings[s].latency, np.array(r), q)
            for (s, st, r), q in zip(world.reset_deliveries, world.reset_delivery_positions, strict=True)
        ]
        actions = {delivered[-1][1]: world.expert_action()}  # update stamp -> the operator's command
        while len(delivered) < 40:
            world.apply_action(list(actions.values())[-1])
            sensor, stamp, reading = world.next_delivery()
            delivered.append((sensor, stamp, float(world.data.time), np.array(reading), world.delivered_positions))
            if sensor in world.update_on:
                actions[stamp] = world.expert_action()
    finally:
        world.close()
    scale = WORLDS[world_id]["command_scale"]()
    with BagReader(bag) as reader:
        assert {t: list(i.msgtypes) for t, i in reader.topics.items()} == {
            "/imu/data": [M.IMU],
            "/joint_states": [M.JOINT_STATE],
            "/target_velocity": [M.TWIST],
            "/wheel_torques": [M.FLOAT64_ARRAY],  # config/balance_policy.yaml's command_topic
            "/episode_status": [M.STRING],
        }
        assert "/" + sim_node.SIM_NODE_PARAMETERS["wheels_topic"][0] == "/joint_states"
        messages = list(reader.messages(["/imu/data", "/joint_states", "/target_velocity", "/wheel_torques"]))
    assert messages[0].topic == "/target_velocity"  # the episode's target before its first message
    np.testing.assert_array_equal(M.sensor_reading("command", messages[0].decode()), target)
    sensors = [m for m in messages if m.topic in ("/imu/data", "/joint_states")][: len(delivered)]
    for (name, stamp, log_time, reading, positions), msg in zip(delivered, sensors, strict=True):
        decoded = msg.decode()
        assert msg.topic == {"imu": "/imu/data", "encoders": "/joint_states"}[name]
        assert abs(M.stamp_seconds(decoded) - stamp) < 1e-9 and abs(msg.log_time_ns * 1e-9 - log_time) < 1e-9
        if name == "imu":
            np.testing.assert_allclose(M.sensor_reading("imu", decoded), reading, rtol=0, atol=1e-6)
            continue
        np.testing.assert_array_equal(velocities_by_name(decoded.name, decoded.velocity, WHEEL_JOINT_NAMES)[0], reading)
        published = []  # sim_node's message of the same reading
        stub = SimpleNamespace(
            _stamp=lambda t: sim_node.SimNode._stamp(SimpleNamespace(use_sim_time=True), t),
            publishers_by_sensor={"encoders": SimpleNamespace(publish=published.append)},
        )
        sim_node.SimNode._publish_reading(stub, "encoders", stamp, reading, positions)
        assert len(published[0].position) == 2  # the wheel angles, as sim_node's (the bag's had none)
        assert [deserialize_message(msg.data, JointState)] == published
    torques = [m for m in messages if m.topic == "/wheel_torques"][: len(actions)]
    for action, msg in zip(actions.values(), torques, strict=True):  # what sim_node executes: the expert's action
        stub = SimpleNamespace(command_scale=scale, recorder=None, _lock=threading.Lock(), _sim_now=0.0)
        stub.commands_received = 0
        sim_node.SimNode._on_command(stub, deserialize_message(msg.data, Float64MultiArray))
        np.testing.assert_allclose(stub._command[0], action, rtol=0, atol=1e-12)
    cfg = validate_config(yaml.safe_load(open("policies/configs/cfc_balancer.yaml")))
    spec = data_spec(cfg)
    stats = StreamStats()
    with BagReader(bag) as reader:
        updates = list(stream_updates(reader, capture_runner(cfg, spec), spec, stats))
    assert [u.label is not None for u in updates] == [True] * (len(updates) - 1) + [False]  # the last: none after it
    # the world's first update (its first IMU message) came before any wheel message: the policy's first is the next
    after_first = list(actions.items())[1:]
    assert [u.stamp for u in updates[: len(after_first)]] == pytest.approx([s for s, _ in after_first], abs=1e-9)
    np.testing.assert_allclose([u.label for u in updates[: len(after_first)]], [a for _, a in after_first], atol=1e-12)
    np.testing.assert_array_equal(updates[0].obs["command"], np.float32(target))
    # refused before any folder: the rover's options, a world sim_node does not run, a size for no camera
    for options, message in [
        (["--noise-std", "0.3"], "noise injection (--noise-std, --burst-rate), --expert-margin and a driving policy"),
        (["--expert-margin", "0.5"], f"only for LiquidRover-v0, not {world_id} (--world)"),
        (["--render-size", "32"], f"--render-size: {world_id} has no camera"),
    ]:
        assert cli.main([*argv, "-o", str(tmp_path / "no"), *options]) == 2
        assert message in capsys.readouterr().err and not (tmp_path / "no").exists()
    assert cli.main(["record", "--expert", "--world", "LiquidBalance-v1", "-o", str(tmp_path / "no")]) == 2
    err = capsys.readouterr().err
    assert "--world LiquidBalance-v1: record --expert writes the messages sim_node publishes, which runs " in err
    assert ", ".join(sim_node.WORLDS) in err and not (tmp_path / "no").exists()


def test_record_cli_expert_info_and_recover(tmp_path, capsys):
    from liquid_control import cli

    assert (
        cli.main(
            [
                "record",
                "--expert",
                "-o",
                str(tmp_path / "exp"),
                "--episodes",
                "1",
                "--seed",
                "3",
                "--render-size",
                "16",
                "--time-limit",
                "1.0",
                "--noise-std",
                "0.3",
                "--no-progress",
            ]
        )
        == 0
    )
    assert cli.main(["record", "--info", str(tmp_path / "exp" / "episode_3")]) == 0
    out = capsys.readouterr().out
    assert "/base/cmd_vel: geometry_msgs/msg/Twist" in out and "/camera/image_raw: sensor_msgs/msg/Image" in out
    with BagReader(tmp_path / "exp" / "episode_3") as reader:  # noise: executed != operator's command
        cmd = [M.command_vector(m.decode(), M.TWIST) for m in reader.messages(["/cmd_vel"])]
        executed = [M.command_vector(m.decode(), M.TWIST) for m in reader.messages(["/base/cmd_vel"])]
    assert len(cmd) == len(executed) > 5 and not np.allclose(cmd, executed)
    # train from it on the command line, labels on the operator's topic (the base's is noisy), YAML data section
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**CAMERA_ONLY, "data": {"command_topic": "/cmd_vel", "window": 16}}))
    argv = ["train", "--config", str(config), "--out", str(tmp_path / "run"), "--bag", str(tmp_path / "exp" / "*")]
    assert cli.main([*argv, "--label", "held", "--set", "training.epochs_first=1", "--no-progress"]) == 0
    saved = yaml.safe_load((tmp_path / "run" / "data.yaml").read_text())
    assert saved["spec"]["label"]["mode"] == "held" and saved["data"]["window"] == 16
    assert saved["data"]["bags"] == [str((tmp_path / "exp" / "episode_3").resolve())]
    assert "selection success not measured: trained from bags" in capsys.readouterr().out
    # the bags in the config's data section, none on the command line: said alike (was "not measured")
    bagged = tmp_path / "bagged.yaml"
    bags = {"bags": [str(tmp_path / "exp" / "*")], "command_topic": "/cmd_vel", "window": 16}
    bagged.write_text(yaml.safe_dump({**CAMERA_ONLY, "data": bags}))
    argv3 = ["train", "--config", str(bagged), "--out", str(tmp_path / "run3")]  # no data option given
    assert cli.main([*argv3, "--set", "training.epochs_first=1", "--no-progress"]) == 0
    assert "selection success not measured: trained from bags" in capsys.readouterr().out
    argv[4] = str(tmp_path / "run2")
    assert cli.main([*argv, "--topic", "lidar=/scan"]) == 2
    assert "the policy does not read" in capsys.readouterr().err
    assert cli.main(["record", "--recover", str(tmp_path / "nothing"), "-o", str(tmp_path / "x")]) == 2
    assert "no such bag" in capsys.readouterr().err
    bad_margin = ["record", "--expert", "-o", str(tmp_path / "wide"), "--episodes", "1", "--expert-margin", "-0.1"]
    assert cli.main(bad_margin) == 2 and not (tmp_path / "wide").exists()
    assert "margin must be a finite number >= 0 m, got -0.1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="LiquidRover-v0, LiquidBalance-v0, LiquidBalanceNav-v0"):
        make_world("LiquidBalanceNav-v1")


@pytest.mark.parametrize(
    "options, message",
    [
        (["--shift", "fogg"], "unknown shift preset or setting 'fogg'"),
        (["--render-size", "0"], "render_size must be between 8 and 1024"),
        (["--render-size", "16", "--render-width", "4"], "--render-width must be 0 (square) or between 8 and 1024"),
        (["--render-width", "24"], "--render-width needs --render-size, the camera's height"),
        (["--episodes", "0"], "--episodes must be >= 1"),
        (["--episodes", "-3"], "--episodes must be >= 1"),
        (["--time-limit", "-1"], "--time-limit must be a finite number >= 0"),
        (["--time-limit", "nan"], "--time-limit must be a finite number >= 0"),
    ],
)
def test_record_cli_expert_refuses_bad_options_before_creating_the_folder(tmp_path, capsys, options, message):
    """A refused `record --expert` leaves no empty output folder behind (nor reports 0 episodes recorded)."""
    from liquid_control import cli

    out = tmp_path / "rx"
    assert cli.main(["record", "--expert", "--episodes", "1", "--no-progress", "-o", str(out), *options]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    "mode, options",
    [
        (["--expert", "--episodes", "1"], ["--max-bag-size", "4G"]),
        (["--expert", "--episodes", "1"], ["--compress", "--duration", "5"]),
        (["--expert", "--episodes", "1"], ["/camera/image_raw"]),
        (["--recover", "somebag"], ["--max-bag-duration", "60"]),
        (["--info", "somebag"], ["--compress"]),
    ],
)
def test_record_refuses_options_of_recording_topics_in_a_mode_that_would_ignore_them(tmp_path, capsys, mode, options):
    """`record --expert --max-bag-size 4G` recorded unsplit episode bags without a word (also --compress, --duration,
    topics), as --recover and --info did: each is refused naming it, before anything is written."""
    from liquid_control import cli

    out = tmp_path / "rx"
    assert cli.main(["record", *mode, "--no-progress", "-o", str(out), *options]) == 2
    err = capsys.readouterr().err
    named = options[0] if options[0].startswith("--") else "topics"
    assert f"{named}" in err and "only for recording topics over DDS" in err, err
    assert not out.exists()


def test_record_refuses_named_topics_beside_node_params_naming_its_defaults(tmp_path, capsys):
    """`record --node-params robot.yaml /imu/data` recorded /imu/data alone (the named topics replace the defaults)
    and read --node-params for nothing, without a word: a robot session recorded without its camera and labels
    (found by a probe of a robot install; docs/real_robot.md said to name topics 'to record others too'). Refused
    before anything starts, listing the file's defaults to name."""
    from liquid_control import cli
    from liquid_control.paths import config_dir

    out = tmp_path / "live"
    params = str(config_dir() / "rover_policy.yaml")
    assert cli.main(["record", "-o", str(out), "--node-params", params, "/imu/data"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"liquid-control record: error: --node-params {params} chooses the topics recorded"), err
    assert "(its defaults: camera/image_raw camera/camera_info cmd_vel), or leave the topics out" in err, err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_offline_eval_refuses_a_bad_request_before_writing(tmp_path, capsys):
    """`eval --bag` checks the policy files and the output folder first: a refused request creates nothing and
    prints one line naming what is wrong (no traceback)."""
    from liquid_control.cli import main
    from liquid_control.paths import policies_dir

    a_file = tmp_path / "report.txt"
    a_file.write_text("not a folder")
    shipped = str(policies_dir() / "cfc_ncp_rover.pt")
    argv = ["eval", "--bag", str(a_file), "--no-progress"]
    assert main(argv + ["--policy", str(tmp_path / "no.pt"), "--out", str(tmp_path / "o")]) == 2
    assert main(argv + ["--policy", shipped, "--out", str(a_file)]) == 2
    err = capsys.readouterr().err
    assert f"checkpoint '{tmp_path / 'no.pt'}' does not exist (policy '{tmp_path / 'no.pt'}')" in err
    assert f"--out {a_file}: exists and is not a folder" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists() and a_file.read_text() == "not a folder"


def test_expert_takeover_recording_labels_only_what_the_operator_drove(expert_bags, tmp_path, capsys):
    """`record --expert --policy P`: P drives through the node's runner, the expert takes over where their
    commands part (HG-DAgger) and only its commands become labels; a bag where it never took over teaches
    nothing and training skips it, saying so, but refuses a run where every bag is like that."""
    from liquid_control import cli
    from liquid_control.bags.expert import Takeover
    from liquid_control.bags.stream import data_spec as spec_of
    from liquid_control.evaluation.offline import evaluate_bag
    from liquid_control.policy import Policy, save_policy
    from liquid_control.runtime.backends import load_backend
    from liquid_control.training import trainer

    torch.manual_seed(0)
    path = tmp_path / "driver.pt"
    save_policy(path, Policy.from_config(CAMERA_ONLY))
    expert_bag = expert_bags[1][0]  # the expert's episode_100, recorded as the takeovers' below (W, 2 s)
    common = dict(render_size=W, time_limit=2.0, policy=path)
    lines = []  # where no bar shows progress: a line per episode
    always = record_expert_episodes(
        tmp_path / "always", [100], takeover=Takeover(threshold=1e-6), log=lines.append, **common
    )[0]
    assert (
        re.fullmatch(
            rf"episode 1/1: episode_100, {always['outcome']} after {always['sim_time']:.1f} s of driving, the operator "
            rf"drove {always['updates']} of {always['updates']} updates, \d+\.\d s",
            lines[0],
        )
        and len(lines) == 1
    ), lines
    never = record_expert_episodes(tmp_path / "never", [100], takeover=Takeover(threshold=10.0), **common)[0]

    def topic(bag, name):
        with BagReader(bag) as reader:
            return [(m.log_time_ns, m.decode()) for m in reader.messages([name])]

    # the operator drove every update: the expert's episode again, its commands on /cmd_vel and on the base
    assert always["operator_updates"] == always["updates"] > 10 and always["takeovers"] == 1
    labels, executed = topic(always["bag"], "/cmd_vel"), topic(always["bag"], "/base/cmd_vel")
    expert = topic(expert_bag, "/cmd_vel")
    assert [t for t, _ in labels] == [t for t, _ in executed] == [t for t, _ in expert]
    assert all(m.angular.z == e.angular.z and m.linear.x == e.linear.x for (_, m), (_, e) in zip(labels, expert))
    # it never took over: no label, and the base ran the policy's commands, those the node computes offline
    assert never["operator_updates"] == never["takeovers"] == 0 and topic(never["bag"], "/cmd_vel") == []
    backend = load_backend(path, "torch")
    offline = evaluate_bag(backend, never["bag"], spec_of(backend.config, command_topic="/base/cmd_vel"))
    base = np.array([[m.linear.x, m.angular.z] for _, m in topic(never["bag"], "/base/cmd_vel")])
    actions = np.clip(offline["action"][:-1], -1, 1) * SCALE  # the last update ends the episode: no command
    assert len(base) == never["updates"] == len(actions) and np.allclose(base, actions, atol=1e-6)

    # in between: the updates labelled are those the operator drove, when a label must be a command logged with
    # the frame (--label-max-wait-s 0); the default rule (next command within 0.5 s) also labels the updates the
    # policy drove just before a takeover with the operator's command
    some = record_expert_episodes(tmp_path / "some", [100], takeover=Takeover(0.8, 0.3), **common)[0]
    assert 0 < some["operator_updates"] < some["updates"] and some["takeovers"] >= 1
    for wait, check in ((0.0, lambda n: n == some["operator_updates"]), (0.5, lambda n: n > some["operator_updates"])):
        spec = with_label(spec_of(CAMERA_ONLY), max_wait_s=wait)
        with BagReader(some["bag"]) as reader:
            updates = list(stream_updates(reader, capture_runner(CAMERA_ONLY, spec), spec, StreamStats()))
        assert check(sum(u.label is not None for u in updates)), wait
    # shadow mode: the same drive (who drives is still the rule's), and every update labelled by the operator
    shadow = record_expert_episodes(tmp_path / "shadow", [100], takeover=Takeover(0.8, 0.3, shadow=True), **common)[0]
    assert {k: shadow[k] for k in ("updates", "operator_updates", "takeovers", "outcome")} == {
        k: some[k] for k in ("updates", "operator_updates", "takeovers", "outcome")
    }
    assert topic(shadow["bag"], "/base/cmd_vel") == topic(some["bag"], "/base/cmd_vel")
    shadow_labels = topic(shadow["bag"], "/cmd_vel")
    assert len(shadow_labels) == shadow["updates"] > some["operator_updates"]
    some_labels = topic(some["bag"], "/cmd_vel")
    assert all(label in shadow_labels for label in some_labels)  # where the operator drove: the same labels
    custom = yaml.safe_load(open(os.path.join(shadow["bag"], "metadata.yaml")))["rosbag2_bagfile_information"]
    assert json.loads(custom["custom_data"]["liquid_control.takeover"])["shadow"] is True
    spec = with_label(spec_of(CAMERA_ONLY), max_wait_s=0.0)  # as scripts/takeover_rounds.sh trains
    with BagReader(shadow["bag"]) as reader:
        updates = list(stream_updates(reader, capture_runner(CAMERA_ONLY, spec), spec, StreamStats()))
    assert len(updates) == shadow["updates"] + 1 and all(u.label is not None for u in updates[:-1])
    # a policy that has no command yet at an update (a reordering lag holds its first frame back): the operator
    # drives that update, without a takeover that would hold control for hold_s
    lagged = copy.deepcopy(CAMERA_ONLY)
    lagged["observation"]["reorder_lag_s"] = 0.05
    save_policy(tmp_path / "lagged.pt", Policy.from_config(lagged))
    never_over = Takeover(threshold=10.0, shadow=True)
    late = record_expert_episodes(
        tmp_path / "late", [100], takeover=never_over, **{**common, "policy": tmp_path / "lagged.pt"}
    )[0]
    assert late["takeovers"] == 0 and 1 <= late["operator_updates"] <= 2 < late["updates"]
    # DAgger's mixture: with a rule that never takes over, the operator drives a random half of the updates,
    # the same ones again for the same seed; every update labelled
    mixed = Takeover(threshold=10.0, shadow=True, operator_share=0.5)
    half, again = (record_expert_episodes(tmp_path / k, [100], takeover=mixed, **common)[0] for k in ("m1", "m2"))
    assert half["takeovers"] == 0 and 0.2 * half["updates"] < half["operator_updates"] < 0.8 * half["updates"]
    assert topic(half["bag"], "/base/cmd_vel") == topic(again["bag"], "/base/cmd_vel")
    labels, base = topic(half["bag"], "/cmd_vel"), topic(half["bag"], "/base/cmd_vel")
    assert len(labels) == len(base) == half["updates"]
    driven = [(x.linear.x, x.angular.z) == (y.linear.x, y.angular.z) for (_, x), (_, y) in zip(labels, base)]
    drawn = np.random.default_rng([100, 11]).random(half["updates"]) < 0.5  # the episode seed's own draws
    assert driven == list(drawn) and sum(driven) == half["operator_updates"]
    custom = yaml.safe_load(open(os.path.join(half["bag"], "metadata.yaml")))["rosbag2_bagfile_information"]
    assert json.loads(custom["custom_data"]["liquid_control.takeover"])["operator_share"] == 0.5

    logged = []
    data = {"bags": [always["bag"], never["bag"]]}
    run = trainer.train(
        CAMERA_ONLY,
        tmp_path / "run",
        data=data,
        overrides={"training.epochs_first": 1},
        progress=False,
        log=logged.append,
    )
    assert run.epochs == 1 and any("episode_100: skipped, nothing to learn" in m for m in logged)
    assert any("1 of 2 skipped, no command on /cmd_vel" in m for m in logged)
    meta = torch.load(run.policy_path, weights_only=False)["metadata"]
    assert meta["training_bags"] == [str(always["bag"])] and meta["skipped_bags"] == [str(never["bag"])]
    with pytest.raises(trainer.TrainingError, match="no train bag has a command to learn from on /cmd_vel"):
        trainer.train(CAMERA_ONLY, tmp_path / "none", data={"bags": [never["bag"]]}, progress=False)

    # refused before any folder: a bad threshold, noise with a driving policy, no policy file, no --expert
    out = tmp_path / "refused"
    sim = ["record", "--expert", "--episodes", "1", "--no-progress", "--render-size", str(W), "-o", str(out)]
    for argv, message in [
        ([*sim, "--policy", str(path), "--takeover-threshold", "0"], "takeover threshold (--takeover-threshold) must"),
        ([*sim, "--policy", str(path), "--noise-std", "0.3"], "(--noise-std, --burst-rate) perturbs the operator's"),
        ([*sim, "--takeover-hold-s", "2"], "--shadow and --operator-share supervise a driving policy"),
        ([*sim, "--shadow"], "--shadow and --operator-share supervise a driving policy: they need --policy"),
        ([*sim, "--operator-share", "0.3"], "--operator-share supervise a driving policy: they need --policy"),
        ([*sim, "--policy", str(path), "--operator-share", "1.5"], "operator share (--operator-share) must be a"),
        ([*sim, "--policy", str(path), "--operator-share", "nan"], "in [0, 1], got nan"),
        ([*sim, "--policy", str(tmp_path / "missing.pt")], "missing.pt: no such policy file"),
        (["record", "-o", str(out), "--policy", str(path)], "--policy drives simulated episodes"),
        # before: without --expert these were ignored and the recorder waited for DDS topics until Ctrl-C
        (["record", "-o", str(out), "--episodes", "3", "--noise-std", "0.3"], "--episodes, --noise-std: only for"),
    ]:
        assert cli.main(argv) == 2
        assert message in capsys.readouterr().err and not out.exists()
    balancer = tmp_path / "balancer.pt"
    save_policy(balancer, Policy.from_config(yaml.safe_load(open("policies/configs/cfc_balancer.yaml"))))
    with pytest.raises(ValueError, match=r"balancer.pt: cannot drive the recorded rover .*LiquidBalance"):
        record_expert_episodes(tmp_path / "b", [1], render_size=W, policy=balancer)


def test_a_driving_policy_trained_at_another_action_scale_is_warned_of(tmp_path, capsys):
    """Before: `record --expert --policy` ran a policy trained from a robot's bags at another action_scale (its
    labels divided by [0.5, 1.0]) at the world's [1.0, 1.5] without a word: each command 2x / 1.5x what it learnt,
    where policy_node with the world's parameter file warns of it (found by a probe of the robot's DAgger rounds)."""
    from liquid_control.policy import Policy, save_policy

    torch.manual_seed(0)
    policy = Policy.from_config(copy.deepcopy(CAMERA_ONLY))
    path = save_policy(tmp_path / "robot.pt", policy, {"data_spec": {"action_scale": [0.5, 1.0]}})
    record_expert_episodes(tmp_path / "r", [100], render_size=W, time_limit=0.3, policy=path)
    err = capsys.readouterr().err
    assert (
        f"liquid-control record: warning: {path}: LiquidRover-v0's command scale [1.0, 1.5] is not the [0.5, 1.0] the "
        "policy was trained with (its labels: the recorded commands divided by it), so each command is 2x, 1.5x what "
        "it learnt to command (record --expert runs the world's scale"
    ) in err, err
    plain = save_policy(tmp_path / "world.pt", policy)  # trained in the world (no record): nothing said
    record_expert_episodes(tmp_path / "w", [100], render_size=W, time_limit=0.3, policy=plain)
    assert "warning" not in capsys.readouterr().err


def test_a_camera_and_imu_policy_drives_and_is_labelled_at_every_one_of_its_updates(tmp_path):
    """Before: `record --expert --policy` stepped the world at the camera frames only, so a policy updating on its
    camera and IMU had each IMU update's command overwritten before the base ran it, and the operator labelled and
    was counted at the frames alone (~57 commands for ~445 updates). Now every update of the policy (camera or IMU,
    from its first) runs its command until the next, the operator deciding and labelling at each, as `sim` does."""
    from liquid_control.bags.expert import Takeover
    from liquid_control.evaluation.offline import evaluate_bag
    from liquid_control.policy import Policy, save_policy
    from liquid_control.runtime.backends import load_backend

    fused = copy.deepcopy(CAMERA_IMU)
    fused["observation"]["update_on"] = ["camera", "imu"]
    torch.manual_seed(0)
    path = save_policy(tmp_path / "fused.pt", Policy.from_config(fused))
    lines = []
    status = record_expert_episodes(
        tmp_path / "r", [100], render_size=W, time_limit=1.0, policy=path, log=lines.append,
        takeover=Takeover(threshold=10.0, shadow=True),  # the policy drives every update, every update labelled
    )[0]  # fmt: skip
    spec = with_label(data_spec(fused, command_topic="/base/cmd_vel"), max_wait_s=0.0)
    offline = evaluate_bag(load_backend(path, "torch"), status["bag"], spec)
    with BagReader(status["bag"]) as reader:
        base = np.array([[c.linear.x, c.angular.z] for c in (m.decode() for m in reader.messages(["/base/cmd_vel"]))])
        labels = sum(1 for _ in reader.messages(["/cmd_vel"]))
    # the policy's updates, camera and IMU alike: each one's command is what the base ran (the last update ends
    # the episode: no command), the operator labelled each, and the log counts them
    updates = len(offline["action"]) - 1
    assert updates > 2 * status["messages"]["camera"] and status["operator_updates"] == 0
    assert status["updates"] == len(base) == labels == updates
    assert np.allclose(base, np.clip(offline["action"][:-1], -1, 1) * SCALE, atol=1e-6)
    assert f"the operator drove 0 of {updates} updates" in lines[0]
    spec = with_label(data_spec(fused), max_wait_s=0.0)  # as scripts/takeover_rounds.sh trains: a label per update
    with BagReader(status["bag"]) as reader:
        streamed = list(stream_updates(reader, capture_runner(fused, spec), spec, StreamStats()))
    assert len(streamed) == updates + 1 and all(u.label is not None for u in streamed[:-1])


def test_a_bag_whose_data_cannot_be_synced_is_an_error_naming_it_not_a_warning(tmp_path, monkeypatch):
    """Before: an fsync failing while the CRCs were written at close (EIO, ENOSPC) became a warning that the bag
    "is complete" but unchecked, although it may not be on the disk at all. Then its error held the raw
    '[Errno 5] ...' (a full disk at close: '[Errno 28] ...', test_bags_input); now the reason alone."""
    import errno

    from liquid_control.bags import io

    def failing_fsync(fd):
        raise OSError(errno.EIO, "Input/output error")

    writer = BagWriter(tmp_path / "bag")
    writer.write("/imu/data", 1_000_000_000, M.imu_message(np.zeros(6), 1.0))
    monkeypatch.setattr(io.os, "fsync", failing_fsync)
    with pytest.raises(BagError) as err:
        writer.close()
    assert str(err.value) == f"{tmp_path / 'bag'}: cannot finish the bag: Input/output error"  # no '[Errno 5]'


def test_record_defaults_to_every_input_of_the_node_policy_and_its_command(tmp_path, capsys, monkeypatch):
    """Before: `record --node-params config/balance_nav_policy.yaml` recorded camera, IMU and command only: not
    the wheel encoders (/joint_states) both balancing policies read, nor the balancer's target, so a session
    recorded with the defaults could not train them. Nor the camera's camera_info, from which `train --bag`
    records the field of view policy_node compares the robot's camera with (without it: unknown, not compared)."""
    from liquid_control.paths import config_dir
    from liquid_control.policy import Policy, save_policy
    from liquid_control.ros.recorder_node import default_topics

    info = "camera/camera_info"
    shipped = {
        "balance_nav_policy.yaml": ["camera/image_raw", info, "imu/data", "joint_states", "wheel_torques"],
        "balance_policy.yaml": ["imu/data", "joint_states", "target_velocity", "wheel_torques"],
        "rover_policy.yaml": ["camera/image_raw", info, "cmd_vel"],  # its policy reads the camera alone
    }
    for name, topics in shipped.items():
        assert default_topics(str(config_dir() / name)) == topics, name
    # an own policy reading camera and IMU, at the robot's topic names
    save_policy(tmp_path / "mine.pt", Policy.from_config(CAMERA_IMU))
    params = tmp_path / "robot.yaml"
    node = "policy_node:\n  ros__parameters:\n    policy: {}\n    camera_topic: front/image\n    imu_topic: /b/imu\n"
    params.write_text(node.format(tmp_path / "mine.pt") + "    command_topic: teleop/cmd_vel\n")
    # as the node resolves them, camera_info beside the image as the node subscribes to it
    assert default_topics(str(params)) == ["front/image", "front/camera_info", "/b/imu", "teleop/cmd_vel"]
    assert capsys.readouterr().err == ""
    # a policy not trained yet: every input topic parameter, saying why
    params.write_text(node.format(tmp_path / "later.pt"))
    inputs = ["front/image", "front/camera_info", "/b/imu", "joint_states", "target_velocity"]
    assert default_topics(str(params)) == [*inputs, "cmd_vel"]
    err = capsys.readouterr().err
    assert f"note: {params}: policy '{tmp_path / 'later.pt'}': no such policy file" in err, err
    assert "recording every input topic parameter (camera_topic, imu_topic, wheels_topic, target_topic)" in err
    # why a file cannot be read, as the node would say it (before: only "its policy '...' cannot be read")
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    params.write_text(node.format(tmp_path / "broken.pt"))
    assert default_topics(str(params)) == [*inputs, "cmd_vel"]
    err = capsys.readouterr().err
    assert f"note: {params}: its policy cannot be read: {tmp_path / 'broken.pt'}: " in err and len(err) > 150, err
    params.write_text(node.format(tmp_path / "mine.pt"))  # a robot without torch, no export beside the .pt
    monkeypatch.setitem(sys.modules, "liquid_control.policy.checkpoint", None)  # its import fails: no torch
    assert default_topics(str(params)) == [*inputs, "cmd_vel"]
    err = capsys.readouterr().err
    assert "torch is not installed and there is no exported mine.onnx next to it (write one with" in err, err


def test_record_info_counts_one_message_as_one(tmp_path, capsys):
    """Before: `record --info` printed "1 messages"."""
    from liquid_control.ros.recorder_node import bag_info

    with BagWriter(tmp_path / "bag") as bag:
        bag.add_topic("/imu/data", M.IMU)
        bag.add_topic("/cmd_vel", M.TWIST)
        bag.write("/imu/data", 1_000_000_000, M.imu_message(np.zeros(6), 1.0))
        for i in range(2):
            bag.write("/cmd_vel", 1_000_000_000 + i, M.twist_message(0.5, 0.0))
    info = bag_info(str(tmp_path / "bag"))
    assert "/imu/data: sensor_msgs/msg/Imu, 1 message, offered QoS" in info, info
    assert "/cmd_vel: geometry_msgs/msg/Twist, 2 messages, offered QoS" in info, info


def test_one_message_type_name_for_classes_instances_and_rosbags_types(tmp_path):
    """bags, policy_node and takeover_mux name message types with one function (the nodes compare its names with
    the ROS graph's): a class and an instance of rclpy or rosbags types give the graph's ``pkg/msg/Type``."""
    from geometry_msgs.msg import Twist
    from sensor_msgs.msg import Imu

    from liquid_control.bags.io import typestore
    from liquid_control.conventions.message_types import message_type_name

    rosbags_twist = typestore().types["geometry_msgs/msg/Twist"]
    assert {message_type_name(t) for t in (Twist, Twist(), rosbags_twist)} == {"geometry_msgs/msg/Twist"}
    assert message_type_name(Imu) == message_type_name(Imu()) == "sensor_msgs/msg/Imu"


def test_a_bag_named_twice_is_found_through_globs_relative_paths_and_links(tmp_path, monkeypatch):
    """One check for training's data.bags and eval's --bag: the same bag by two namings, resolved."""
    from liquid_control.bags.io import bag_given_twice

    (tmp_path / "day1" / "run_001").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "day1" / "run_001")
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "day1" / "run_001"
    assert bag_given_twice([("day1/run_001", "day1/*"), ("day1/../link", "day1/../link")]) == (
        run,
        "day1/*",
        "day1/../link",
    )
    assert bag_given_twice([("day1/run_001", "a"), ("day1", "b")]) is None
    assert bag_given_twice([]) is None


def test_a_bag_named_as_its_folder_and_as_one_of_its_files_is_named_twice(tmp_path, monkeypatch):
    """Before: `--bag day1/run_001 --bag day1/run_001/run_001.mcap` trained on that recording twice and eval pooled
    it twice (2 bags in the summary), as the two paths differ; a split file given beside its folder too."""
    from liquid_control.bags.io import bag_given_twice

    one, split = tmp_path / "day1" / "run_001", tmp_path / "day1" / "run_002"
    one.mkdir(parents=True)
    split.mkdir()
    (one / "run_001.mcap").write_bytes(b"")
    for k in range(2):
        (split / f"run_002_{k}.mcap").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert bag_given_twice([("day1/run_001", "day1/*"), ("day1/run_001/run_001.mcap", "x.mcap")]) == (
        one,
        "day1/*",
        "x.mcap",
    )
    assert bag_given_twice([("day1/run_002/run_002_1.mcap", "f"), ("day1/run_002", "d")]) == (
        split / "run_002_1.mcap",
        "f",
        "d",
    )
    # a split recording's files given one by one, each once (around a damaged one), are separate bags
    assert bag_given_twice([("day1/run_002/run_002_0.mcap", "a"), ("day1/run_002/run_002_1.mcap", "b")]) is None
    # a split file held out of its own folder (train --bag day1/run_002 --val-bag day1/run_002/run_002_1.mcap):
    # before, validated on its own training data (the copy check compares whole recordings)
    from liquid_control.training.bag_data import validate_data

    held_out = r"bag\(s\) \['.*run_002 \(as its folder and as one of its files\)'\] are both training and validation"
    with pytest.raises(ValueError, match=held_out):
        validate_data({"bags": ["day1/run_002"], "validation": ["day1/run_002/run_002_1.mcap"]}, ("bags", "validation"))


def test_a_data_spec_recorded_before_the_nodes_reorder_lag_was_read_still_reads_the_bags():
    """A policy trained from bags on 2026-11-30 before 1b658c52 recorded its data spec without limits.reorder_lag_s
    (the runner took the policy's own lag then). Since eval --bag reads that record where no --node-params is given
    (b3d03b18), such a policy was refused ('the data spec the policy recorded ... is malformed (KeyError:
    'reorder_lag_s'); give --node-params') where it had been evaluated before. Read as then: the policy's lag."""
    from liquid_control.policy import validate_config

    cfg = validate_config(CAMERA_ONLY)
    recorded = data_spec(cfg).describe()
    recorded["action_scale"] = [1.5, 2.0]
    del recorded["limits"]["reorder_lag_s"]
    spec = data_spec(cfg, trained=recorded)
    assert spec.limits.reorder_lag_s is None and spec.action_scale == (1.5, 2.0)
    with pytest.raises(ValueError, match=r"data spec the policy recorded .* is malformed .*give --node-params"):
        data_spec(cfg, trained={**recorded, "limits": "?"})
    # an integer no float holds (a tampered policy file): an OverflowError traceback before
    for key, value in [("action_scale", [10**400, 1.0]), ("limits", {**recorded["limits"], "max_gap_s": 10**400})]:
        with pytest.raises(ValueError, match=r"is malformed \(OverflowError: .*give --node-params"):
            data_spec(cfg, trained={**recorded, key: value})


def test_a_node_params_file_given_to_eval_keeps_the_label_rule_the_policy_trained_with():
    """A node's parameter file holds topics, action_scale and limits, no label rule. Before, eval --bag --node-params
    (the robot's file, the one it trained with) of a policy trained with --label held --label-offset-s 0.05 went
    back to the default rule (next, no offset) without a word: other labels than training's, its loss not the run's
    validation loss. The recorded rule stays in force; the label options override it key by key."""
    from liquid_control.bags.stream import LabelRule
    from liquid_control.paths import config_dir
    from liquid_control.policy import validate_config

    cfg = validate_config(CAMERA_ONLY)
    rule = {"mode": "held", "offset_s": 0.05, "max_wait_s": 0.3}
    recorded = data_spec(cfg, label=rule).describe()
    robot = config_dir() / "rover_policy.yaml"
    assert data_spec(cfg, robot, trained=recorded).label == LabelRule(**rule)
    assert data_spec(cfg, trained=recorded).label == LabelRule(**rule)
    assert data_spec(cfg, robot, label={"mode": "next"}, trained=recorded).label == LabelRule("next", 0.05, 0.3)
    assert data_spec(cfg, robot).label == LabelRule()  # a policy without the record (trained in a world)


def test_a_resume_refuses_another_recording_at_a_bag_path_it_trained_on(tmp_path):
    """An audit of bag conversion: a run stopped after its first epoch, another recording put at the bag's path
    (its cache missed), and the resume converted and trained on it, its policy recording only the new one; the
    run trained on two recordings while naming one. It is refused, naming the bag; the same recording again (a
    touched file, converted again) resumes."""
    from liquid_control.training import TrainingError, trainer

    bag = _steady_bag(tmp_path / "drive", 0.07, 20)
    keep = tmp_path / "kept"
    shutil.copytree(bag, keep)

    def killed(line):
        if line.startswith("epoch 1/2: loss"):
            raise KeyboardInterrupt

    run, data = tmp_path / "run", {"bags": [bag]}
    with pytest.raises(KeyboardInterrupt):
        trainer.train(CAMERA_ONLY, run, data=data, progress=False, log=killed, overrides={"training.epochs_first": 2})
    shutil.rmtree(bag)
    shutil.copytree(_steady_bag(tmp_path / "other", 0.05, 30), bag)
    with pytest.raises(TrainingError, match=rf"train bag {re.escape(bag)}: not the recording the run trained on"):
        trainer.train(None, run, resume=True, progress=False, log=lambda m: None)
    shutil.rmtree(bag)
    shutil.copytree(keep, bag)  # the recording it trained on, files of other times: converted again, resumed
    for f in os.listdir(bag):
        os.utime(os.path.join(bag, f), (1e9, 1e9))
    result = trainer.train(None, run, resume=True, progress=False, log=lambda m: None)
    assert result.epochs == 2
