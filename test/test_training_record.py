"""A policy file records the camera and sensor rates it was trained with, and policy_node checks a robot's against
them: before, the node compared a camera's field of view with the world's constant of today (a rover policy trained
at 75 degrees was compared with 100) and could not tell a 400 Hz IMU from the 100 Hz one a policy trained at."""

import math

import numpy as np
import pytest
import torch
from test_policy_node_input_mistakes import CAMERA_IMU  # the tiny camera + IMU policy
from test_training import tiny_config

from liquid_control import cli
from liquid_control.conventions import training_record
from liquid_control.policy import load_policy
from liquid_control.training import sensor_record, trainer
from liquid_control.training.data import Episode, load_episode


def _episode(stamps, event=None, imu=None, image_index=None):
    n = len(stamps)
    obs = {"imu": np.zeros((n, 6), np.float32) if imu is None else imu}
    if event is not None:
        obs["event"] = np.asarray(event)
    if image_index is not None:
        obs["image"] = np.zeros((int(max(image_index)) + 1, 2, 2, 3), np.uint8)
    return Episode(
        observations=obs,
        dt=np.zeros(n, np.float32),
        stamp=np.asarray(stamps, np.float64),
        expert_action=np.zeros((n, 2), np.float32),
        action=np.zeros((n, 2), np.float32),
        image_index=None if image_index is None else np.asarray(image_index),
    )


def test_each_update_sensors_intervals_come_from_its_own_updates():
    """Camera (10 Hz) and IMU (100 Hz) updates interleaved: by ``event`` where recorded, else by a new reading."""
    imu_t = np.arange(0, 1.0, 0.01)
    cam_t = np.arange(0.005, 1.0, 0.1)
    stamps = np.concatenate([imu_t, cam_t])
    order = np.argsort(stamps, kind="stable")
    is_cam = np.concatenate([np.zeros(len(imu_t), bool), np.ones(len(cam_t), bool)])[order]
    stamps = stamps[order]
    update_on = ["camera", "imu"]
    with_event = sensor_record.sensor_intervals(_episode(stamps, event=np.where(is_cam, 0, 1)), update_on)
    assert with_event["camera"] == pytest.approx(np.full(len(cam_t) - 1, 0.1))
    assert with_event["imu"] == pytest.approx(np.full(len(imu_t) - 1, 0.01))
    # without event: the IMU's reading changes at its own messages only, the frame index at the camera's
    imu = np.cumsum(~is_cam)[:, None].repeat(6, axis=1).astype(np.float32)
    frames = np.cumsum(is_cam)
    without = sensor_record.sensor_intervals(_episode(stamps, imu=imu, image_index=frames), update_on)
    assert without["camera"] == pytest.approx(np.full(len(cam_t) - 1, 0.1))
    assert without["imu"] == pytest.approx(np.full(len(imu_t) - 2, 0.01))  # from its first new reading on


def test_rate_summary_is_the_median_and_middle_90_percent_of_the_intervals():
    dts = np.random.default_rng(0).uniform(0.008, 0.012, size=20_000)
    summary = training_record.rate_summary(training_record.dt_histogram(dts))
    assert summary["median_hz"] == pytest.approx(100.0, rel=0.012)
    assert summary["dt_p05_s"] == pytest.approx(np.percentile(dts, 5), rel=0.012)
    assert summary["dt_p95_s"] == pytest.approx(np.percentile(dts, 95), rel=0.012)
    assert training_record.rate_summary(training_record.dt_histogram([])) is None


def test_a_run_records_its_sensor_rates_and_a_resumed_run_the_same(tmp_path):
    out = tmp_path / "run"
    result = trainer.train(tiny_config(dagger_rounds=1, beta=[0.5]), out, progress=False, log=lambda m: None)
    metadata = load_policy(result.policy_path).metadata
    rates = metadata[training_record.RATES_KEY]
    dts = np.concatenate([np.diff(load_episode(p).stamp) for p in sorted((out / "data").glob("round_*/ep_*.npz"))])
    assert rates["pos"]["median_hz"] == pytest.approx(1.0 / np.median(dts), rel=0.015)
    assert rates["pos"]["dt_p05_s"] == pytest.approx(np.percentile(dts, 5), rel=0.015)
    assert rates["pos"]["dt_p95_s"] == pytest.approx(np.percentile(dts, 95), rel=0.015)
    assert rates[training_record.TIMING_AUGMENTATION] is None
    assert training_record.CAMERA_KEY not in metadata  # no camera
    # killed after its last epoch: the resumed run loads no episode of its last round, the checkpoint keeps them
    (out / "policy.pt").unlink()
    again = trainer.train(None, out, resume=True, progress=False, log=lambda m: None)
    assert load_policy(again.policy_path).metadata[training_record.RATES_KEY] == rates


def test_the_training_camera_is_the_worlds_field_of_view_in_the_simulator_and_unknown_on_bags():
    config = {"world": "LiquidRover-v0", "observation": {"image": {"height": 64, "width": 48}}}
    import sim_envs.rover

    world = sensor_record.camera_entry(config, from_bags=False)
    assert (world["width"], world["height"], world["fovy_deg"]) == (48, 64, sim_envs.rover.CAMERA_FOVY_DEG)
    assert sensor_record.camera_entry(config, from_bags=True)["fovy_deg"] is None
    assert training_record.trained_fovy_deg({training_record.CAMERA_KEY: world}) == (True, world["fovy_deg"])
    assert training_record.trained_fovy_deg({}) == (False, None)  # an older file


def test_rates_outside_a_quarter_to_four_times_the_trained_ones_are_named():
    metadata = {training_record.RATES_KEY: {"imu": {"median_hz": 100.0, "dt_p05_s": 0.009, "dt_p95_s": 0.011}}}
    trained = training_record.trained_rates(metadata)["imu"]
    assert trained == pytest.approx((100.0, 1 / 0.011, 1 / 0.009))
    assert training_record.rate_problem(150.0, trained, 5.0) is None
    assert training_record.rate_problem(30.0, trained, 5.0) is None  # above 0.25 x 90.9
    assert "faster" in training_record.rate_problem(450.0, trained, 5.0)
    assert "slower" in training_record.rate_problem(20.0, trained, 5.0)
    assert training_record.trained_rates({}) == {}  # an older file: nothing is checked
    assert training_record.trained_rates({training_record.RATES_KEY: {"imu": {"median_hz": "x"}}}) == {}


RECORD = {
    training_record.CAMERA_KEY: {"width": 8, "height": 8, "fovy_deg": 120.0, "source": "test"},
    training_record.RATES_KEY: {
        "imu": {"median_hz": 100.0, "dt_p05_s": 0.009, "dt_p95_s": 0.011, "intervals": 1000},
        training_record.TIMING_AUGMENTATION: None,
    },
}


@pytest.fixture
def node_of(tmp_path):
    """make(metadata, backend): a configured policy_node of the tiny camera + IMU policy saved with ``metadata``, and
    the warnings it logs after its configure; ``backend`` 'onnx': the file is exported and the node runs the export
    (backend auto); ``policy``: a policy file of another config to save with ``metadata`` instead; ``configuring``: a
    list that gets the warnings of its configure."""
    import rclpy
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from liquid_control.policy import Policy, save_policy
    from liquid_control.ros.policy_node import PolicyNode
    from liquid_control.ros.testing import isolated_ros_env

    made = []

    def make(metadata, backend="torch", policy=None, configuring=None):
        torch.manual_seed(0)
        model = Policy.from_config(CAMERA_IMU) if policy is None else load_policy(policy)
        policy_file = save_policy(tmp_path / "tiny.pt", model, metadata)
        if backend == "onnx":
            assert cli.main(["export", str(policy_file)]) == 0
        env = isolated_ros_env()
        context = rclpy.Context()
        rclpy.init(context=context, domain_id=int(env["ROS_DOMAIN_ID"]))
        values = dict(
            policy=str(policy_file),
            backend="auto" if backend == "onnx" else backend,
            command_type="float64_multi_array",
            log_throttle_s=0.0,
        )
        node = PolicyNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
        made.append((node, context))
        if configuring is not None:
            node.get_logger().warning = lambda msg, **kw: configuring.append(msg)
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.runner.backend.name == backend
        warnings = []
        node.get_logger().warning = lambda msg, **kw: warnings.append(msg)
        return node, warnings

    yield make
    for node, context in made:
        node.trigger_shutdown()
        node.destroy_node()
        context.try_shutdown()


def _camera_info(fov_deg):
    from sensor_msgs.msg import CameraInfo

    f = 4.0 / math.tan(math.radians(fov_deg) / 2)
    msg = CameraInfo(width=8, height=8)
    msg.k = [f, 0.0, 3.5, 0.0, f, 3.5, 0.0, 0.0, 1.0]
    return msg


BACKENDS = pytest.mark.parametrize("backend", ["torch", "onnx"])  # the export carries the record (it did not)


@BACKENDS
def test_the_node_compares_the_field_of_view_with_the_one_the_file_records(node_of, backend):
    """The file says 120 degrees (its world renders 90 today): a 120 degree camera is right, a 90 degree one not;
    the same where the node runs the file's ONNX export (it compared with the world's 90 degrees)."""
    node, warnings = node_of(RECORD, backend)
    on_info = node._subscriptions_by_sensor["camera_info"].callback
    on_info(_camera_info(120.0))
    assert node.runner.counters["camera_info.fov_mismatch"] == 0, warnings
    on_info(_camera_info(90.0))
    assert node.runner.counters["camera_info.fov_mismatch"] == 1
    assert any("trained (its file records) on a camera of 120x120" in w for w in warnings), warnings


@BACKENDS
def test_an_older_file_is_compared_with_its_worlds_field_of_view_and_no_rate(node_of, backend):
    node, warnings = node_of({}, backend)
    node._subscriptions_by_sensor["camera_info"].callback(_camera_info(120.0))
    assert node.runner.counters["camera_info.fov_mismatch"] == 1
    assert any("LiquidBalanceNav-v0 renders 90x90" in w for w in warnings), warnings
    assert node._trained_rates == {}


class _Imu:
    """Feeds a configured node IMU messages on a clock of its own (the node's ``_now``), as its subscription does."""

    def __init__(self, node, start=1000.0):
        from builtin_interfaces.msg import Time

        self.node, self.clock, self._time = node, [start], Time
        node._now = lambda: self.clock[0]

    def run(self, hz: float, seconds: float):
        """Messages at ``hz`` for ``seconds`` (the clock moves with them)."""
        start, count = self.clock[0], int(round(hz * seconds))
        for k in range(1, count + 1):
            self.clock[0] = start + seconds if k == count else start + k / hz
            ns = round(self.clock[0] * 1e9)
            stamp = self._time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)
            self.node._on_reading("imu", stamp, np.zeros(6, np.float32))

    def wait_until(self, t: float):
        """No message until node time ``t``, then the trained-rate check (the diagnostics timer's)."""
        self.clock[0] = max(self.clock[0], t)
        self.node._check_trained_rates()

    def deliver(self, hz: float, seconds: float, taken: int = 1):
        """The sensor publishes at ``hz`` for ``seconds``; the IMU subscription's callback gets one of every ``taken``
        messages (the others dropped before the node took them) with its MessageInfo, as rclpy passes it: the
        publisher's sequence numbers count on over the dropped ones."""
        from sensor_msgs.msg import Imu

        start, count = self.clock[0], int(round(hz * seconds))
        for k in range(1, count + 1):
            self.published = getattr(self, "published", 0) + 1
            if k % taken:
                continue
            self.clock[0] = start + seconds if k == count else start + k / hz
            msg, ns = Imu(), round(self.clock[0] * 1e9)
            msg.header.stamp = self._time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)
            msg.linear_acceleration.z = 9.81
            info = {"publication_sequence_number": self.published, "publisher_gid": {"data": b"the imu driver"}}
            self.node._subscriptions_by_sensor["imu"].callback(msg, info)


@BACKENDS
def test_a_sensor_far_faster_than_trained_is_named_with_its_topic_and_both_rates(node_of, backend):
    from rclpy.lifecycle import TransitionCallbackReturn

    node, warnings = node_of(RECORD, backend)
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    imu, counters = _Imu(node), node.runner.counters
    imu.run(100.0, 1.0)
    imu.wait_until(1001.0)  # starts the window
    for hz in (100.0, 450.0):  # 5 s of messages at each rate, then the check
        imu.run(hz, training_record.RATE_WINDOW_S)
        imu.wait_until(imu.clock[0])
        if hz == 100.0:
            assert counters["rate_mismatch.imu"] == 0 and not warnings
    assert counters["rate_mismatch.imu"] == 1
    assert any(w.startswith("imu on /imu/data: 450.0 Hz over the last 5.0 s, faster") for w in warnings), warnings
    assert any("median 100.0 Hz" in w for w in warnings)


def test_a_sensor_that_starts_or_stops_within_a_window_is_not_taken_for_a_slow_one(node_of):
    """The rate is measured between the sensor's messages: an IMU driver that started 4.5 s into the node's first
    window (activated before the robot's drivers were up), and one that stopped 1 s into a window (the watchdog's
    to say), ran at the trained 100 Hz; counted over the whole 5 s they read 10 and 20 Hz, 'slower than the policy
    was trained at'. One that runs at 10 Hz throughout is still named."""
    from rclpy.lifecycle import TransitionCallbackReturn

    node, warnings = node_of(RECORD)
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    imu, counters = _Imu(node), node.runner.counters
    imu.wait_until(1000.0)  # the first window starts before the driver does
    imu.clock[0] = 1004.5
    imu.run(100.0, 0.5)
    imu.wait_until(1005.0)
    imu.run(100.0, 5.0)
    imu.wait_until(1010.0)
    imu.run(100.0, 1.0)  # the driver stops at 1011
    imu.wait_until(1015.0)
    assert counters["rate_mismatch.imu"] == 0, warnings
    imu.run(100.0, training_record.RATE_WINDOW_S)  # it starts again (measured from 1011: 55 Hz), then runs at 10 Hz
    imu.wait_until(imu.clock[0])
    assert counters["rate_mismatch.imu"] == 0, warnings
    imu.run(10.0, training_record.RATE_WINDOW_S)
    imu.wait_until(imu.clock[0])
    assert counters["rate_mismatch.imu"] == 1
    assert any(w.startswith("imu on /imu/data: 10.0 Hz over the last 5.0 s, slower") for w in warnings), warnings


def test_a_node_that_misses_messages_is_not_taken_for_a_slow_sensor(node_of):
    """Before: the rate was counted from the messages the node received, so a node falling behind (DDS dropping for
    it on a loaded machine, its QoS queue full) read as a slow sensor, 'set the sensor's rate near the trained one'.
    The publisher's sequence numbers (rclpy's MessageInfo) count the messages that never reached the node
    (missed.<sensor>), and the warning says which of the two it is."""
    from rclpy.lifecycle import TransitionCallbackReturn

    node, warnings = node_of(RECORD)
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    imu, counters = _Imu(node), node.runner.counters
    imu.deliver(100.0, 1.0)
    imu.wait_until(1001.0)  # starts the window
    assert counters["missed.imu"] == 0 and not warnings
    imu.deliver(100.0, training_record.RATE_WINDOW_S, taken=10)  # the sensor at its trained 100 Hz, 1 in 10 taken
    imu.wait_until(imu.clock[0])
    assert counters["missed.imu"] == 450 and counters["rate_mismatch.imu"] == 1
    assert warnings[-1].startswith(
        "imu on /imu/data: 10.0 Hz received over the last 5.0 s, slower than the policy was trained at (median 100.0 Hz"
    ), warnings
    assert "but the sensor sent 100.0 Hz, within it: the messages between never reached the node" in warnings[-1]
    assert "imu_qos_depth 200" in warnings[-1] and "set the sensor's rate" not in warnings[-1]
    imu.deliver(10.0, training_record.RATE_WINDOW_S)  # a slow sensor: every message it sends arrives
    imu.wait_until(imu.clock[0])
    assert counters["missed.imu"] == 450 and counters["rate_mismatch.imu"] == 2
    assert warnings[-1].startswith("imu on /imu/data: 10.0 Hz over the last 5.0 s, slower"), warnings
    assert "set the sensor's rate near the trained one" in warnings[-1]


def test_messages_sent_while_the_node_had_no_subscription_are_not_counted_as_missed_after_a_reconfigure(node_of):
    """Before: the last sequence number of each sensor's publisher outlived cleanup, so after cleanup and configure
    (a new policy loaded, the driver publishing on meanwhile) the new subscription's first message counted every
    message sent while the node had none as missed.<sensor>, though the counters count since configure."""
    from rclpy.lifecycle import TransitionCallbackReturn

    node, _ = node_of(RECORD)
    imu = _Imu(node)
    imu.deliver(100.0, 0.5, taken=5)  # configured, inactive: the gaps between the 10 taken count
    assert node.runner.counters["missed.imu"] == 36
    assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    imu.published += 300  # the driver publishes on while the node has no subscription
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    imu.deliver(100.0, 0.5)
    assert node.runner.counters["missed.imu"] == 0 and node._publications["imu"][1] == imu.published
    imu.deliver(100.0, 0.5, taken=5)  # and the new subscription counts its own gaps
    assert node.runner.counters["missed.imu"] == 40


@pytest.mark.parametrize("executor_kind", ["events", "single_threaded"])
def test_the_node_counts_the_messages_dds_dropped_before_it_took_them(node_of, executor_kind):
    """Over DDS (a private domain): 40 camera frames published while the node does not spin, its camera queue one
    deep (camera_qos_depth 1: the latest frame wins), reach it as the last one or few; the frames it never took are
    counted from the publisher's sequence numbers (rclpy's MessageInfo on the subscription callback). Under the
    EventsExecutor the node runs on (policy_node.make_executor) and under rclpy's own: the EventsExecutor hands a
    callback taking the MessageInfo the (message, info) pair as one argument."""
    import time

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.experimental import EventsExecutor
    from rclpy.lifecycle import TransitionCallbackReturn
    from sensor_msgs.msg import Image

    node, _ = node_of(RECORD)
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    driver = rclpy.create_node("camera_driver", context=node.context)
    kinds = {"events": EventsExecutor, "single_threaded": SingleThreadedExecutor}
    executor = kinds[executor_kind](context=node.context)
    executor.add_node(node)
    try:
        publisher = driver.create_publisher(Image, "/camera/image_raw", 10)
        counters, frame = node.runner.counters, Image(height=2, width=2, encoding="rgb8", step=6, data=bytes(12))
        sent = [0]

        def publish(count):
            for _ in range(count):
                publisher.publish(frame)
                sent[0] += 1

        def take_the_latest():  # spin until the node took the latest frame sent (best effort: a lost one, another)
            deadline = time.monotonic() + 30.0
            while time.monotonic() < deadline:
                for _ in range(20):
                    executor.spin_once(timeout_sec=0.05)
                    if node._publications.get("camera", (None, 0))[1] == sent[0]:
                        return
                publish(1)
            raise AssertionError(f"the node never took frame {sent[0]}: {dict(counters)}")

        publish(1)
        take_the_latest()  # discovery done, counting from the frame taken
        before = (sent[0], counters["received.camera"], counters["missed.camera"])
        publish(40)  # the node does not spin meanwhile
        take_the_latest()
        taken, missed = counters["received.camera"] - before[1], counters["missed.camera"] - before[2]
        assert missed == sent[0] - before[0] - taken and missed > 0, (taken, missed, dict(counters))
    finally:
        executor.remove_node(node)
        executor.shutdown()
        driver.destroy_node()


def _camera_bag(path, fovy_deg=None, frames=200, pixel_aspect=1.0, uncalibrated=False):
    """A camera-only bag (16x16 noise frames at ~15 Hz, a Twist after each) with, when ``fovy_deg``, a CameraInfo
    of that vertical field of view beside the image topic, its pixels ``pixel_aspect`` times as wide as tall; with
    ``uncalibrated``, one whose K and P are all zero (usb_cam without a calibration file)."""
    from liquid_control.bags import BagWriter
    from liquid_control.bags import messages as M
    from liquid_control.bags.io import typestore

    rng = np.random.default_rng(1)
    stamps = 1.0 + np.cumsum(rng.uniform(0.06, 0.074, size=frames))
    with BagWriter(path) as bag:
        bag.add_topic("/camera/image_raw", M.IMAGE)
        bag.add_topic("/cmd_vel", M.TWIST)
        if fovy_deg is not None or uncalibrated:
            types = typestore().types
            f = 0.0 if uncalibrated else 8.0 / math.tan(math.radians(fovy_deg) / 2)
            info = types["sensor_msgs/msg/CameraInfo"](
                header=M.header(1.0, "camera_optical"),
                height=16,
                width=16,
                distortion_model="plumb_bob",
                d=np.zeros(5),
                k=np.array([f * pixel_aspect, 0, 7.5, 0, f, 7.5, 0, 0, 1.0]) * (not uncalibrated),
                r=np.eye(3).reshape(-1),
                p=np.array([f * pixel_aspect, 0, 7.5, 0, 0, f, 7.5, 0, 0, 0, 1.0, 0]) * (not uncalibrated),
                binning_x=0,
                binning_y=0,
                roi=types["sensor_msgs/msg/RegionOfInterest"](
                    x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
                ),
            )
            bag.add_topic("/camera/camera_info", "sensor_msgs/msg/CameraInfo")
            bag.write("/camera/camera_info", int(1.0e9), info)
        for i, s in enumerate(stamps):
            ns = int(round((s + 0.01) * 1e9))
            bag.write("/camera/image_raw", ns, M.image_message(rng.integers(0, 256, (16, 16, 3), np.uint8), s))
            bag.write("/cmd_vel", ns + 2_000_000, M.twist_message(0.5, 0.3 * math.sin(i / 10)))
    return path, np.diff(stamps)


BAG_CONFIG = {
    "name": "tiny_bag_rover",
    "world": "LiquidRover-v0",
    "observation": {"image": {"height": 16, "width": 16}, "vectors": {}, "update_on": "camera"},
    "encoder": {"camera": {"channels": [4], "kernel_sizes": [3], "strides": [2], "features": 8}},
    "core": {"type": "cfc", "units": 8},
    "action": {"size": 2, "low": [-1, -1], "high": [1, 1], "kind": "twist"},
    "training": {"epochs_first": 1, "batch_size": 2, "sequence_length": 8},
}


def test_a_run_on_bags_records_their_rates_and_their_camera_infos_field_of_view(tmp_path):
    """Rates from the bags' stamps; the field of view from a CameraInfo beside the image topic, else unknown (the
    node then checks no field of view: the world's is not the recording camera's)."""
    with_info, dts = _camera_bag(tmp_path / "with_info", fovy_deg=70.0)
    without, _ = _camera_bag(tmp_path / "without")
    log = lambda m: None  # noqa: E731
    run = trainer.train(BAG_CONFIG, tmp_path / "a", data={"bags": [str(with_info)]}, progress=False, log=log)
    metadata = load_policy(run.policy_path).metadata
    rates = metadata[training_record.RATES_KEY]["camera"]
    assert rates["median_hz"] == pytest.approx(1.0 / np.median(dts), rel=0.015)
    assert rates["dt_p05_s"] == pytest.approx(np.percentile(dts, 5), rel=0.015)
    assert rates["dt_p95_s"] == pytest.approx(np.percentile(dts, 95), rel=0.015)
    camera = metadata[training_record.CAMERA_KEY]
    assert (camera["width"], camera["height"]) == (16, 16) and camera["fovy_deg"] == pytest.approx(70.0, abs=0.01)
    run = trainer.train(BAG_CONFIG, tmp_path / "b", data={"bags": [str(without)]}, progress=False, log=log)
    camera = load_policy(run.policy_path).metadata[training_record.CAMERA_KEY]
    assert camera["fovy_deg"] is None and "not known" in camera["source"]
    assert training_record.trained_fovy_deg({training_record.CAMERA_KEY: camera}) == (True, None)


def test_a_run_on_an_uncalibrated_cameras_bag_records_it_as_uncalibrated_not_as_without_a_camera_info(tmp_path):
    """Before: a bag whose CameraInfo has K and P all zero (usb_cam without a calibration file) was recorded in
    policy.pt as 'bags without a CameraInfo (not known)', the bag holding one. Now it says the camera is
    uncalibrated; beside a calibrated bag, that one's field of view is taken and named alone."""
    uncalibrated, _ = _camera_bag(tmp_path / "usb_cam", frames=40, uncalibrated=True)
    log = lambda m: None  # noqa: E731
    run = trainer.train(BAG_CONFIG, tmp_path / "run", data={"bags": [str(uncalibrated)]}, progress=False, log=log)
    camera = load_policy(run.policy_path).metadata[training_record.CAMERA_KEY]
    assert (
        camera["fovy_deg"] is None
        and camera["source"] == "bags whose CameraInfo is uncalibrated, K all zero (not known)"
    )
    config = {"observation": {"image": {"height": 16, "width": 16}}}
    recorded = {"a": sensor_record.UNCALIBRATED, "b": (70.0, 70.0)}
    both = sensor_record.camera_entry(config, from_bags=True, recorded=recorded)
    assert both["fovy_deg"] == 70.0 and both["source"] == "the CameraInfo of bags b"


def test_a_policy_trained_on_a_squeezed_camera_is_not_told_its_own_camera_is_squeezed_or_of_another_view(tmp_path):
    """Before: bags of a 640x480 camera resized to the policy's square size (pixels 0.75 times as wide as tall, as
    image_proc's resize makes them) recorded only the vertical field of view, and the node, comparing its camera with
    square training pixels, warned on the very camera the policy learnt from: 'non_square_pixels ... the policy's
    training frames have square pixels' and 'fov_mismatch' (90x74 against 74x74). The record keeps the horizontal field
    of view too; the node compares with the training camera's pixels and view, and still names another camera."""
    from sensor_msgs.msg import CameraInfo

    from liquid_control.conventions.camera_info import camera_info_problems

    bag, _ = _camera_bag(tmp_path / "squeezed", fovy_deg=73.74, pixel_aspect=0.75)
    log = lambda m: None  # noqa: E731
    run = trainer.train(BAG_CONFIG, tmp_path / "run", data={"bags": [str(bag)]}, progress=False, log=log)
    metadata = load_policy(run.policy_path).metadata
    camera = metadata[training_record.CAMERA_KEY]
    assert camera["fovy_deg"] == pytest.approx(73.74, abs=0.01) and camera["fovx_deg"] == pytest.approx(90.0, abs=0.05)
    recorded, fovy = training_record.trained_fovy_deg(metadata)
    fovx = training_record.trained_fovx_deg(metadata)

    def info(fx, fy):
        msg = CameraInfo(width=16, height=16)
        msg.k = [fx, 0.0, 7.5, 0.0, fy, 7.5, 0.0, 0.0, 1.0]
        return msg

    f = 8.0 / math.tan(math.radians(73.74) / 2)
    assert camera_info_problems(info(0.75 * f, f), (16, 16, 3), "LiquidRover-v0", fovy, recorded, fovx) == {}
    square = camera_info_problems(info(f, f), (16, 16, 3), "LiquidRover-v0", fovy, recorded, fovx)
    assert sorted(square) == ["fov_mismatch", "non_square_pixels"]
    assert "the training camera's (its file records) 0.75" in square["non_square_pixels"]
    assert camera_info_problems(info(f, f), (16, 16, 3), "LiquidRover-v0", 73.74, True) == {}  # a file without it


def test_two_robots_bags_of_one_folder_name_are_told_apart_by_their_recorded_bytes(tmp_path):
    """Before: the record named a bag by its folder's name alone: two robots' `run1` (one camera 70 degrees up and
    down, the other 90) were one key of the fields of view, so one of them was lost and the policy recorded the other's
    as the agreed training camera. Now each bag is its name and the SHA-256 of its recorded files (no path), in the
    camera's source and in the record of what the policy trained on."""
    import hashlib

    bags = [_camera_bag(tmp_path / robot / "run1", fovy_deg=fov)[0] for robot, fov in (("a", 70.0), ("b", 90.0))]
    log = lambda m: None  # noqa: E731
    run = trainer.train(BAG_CONFIG, tmp_path / "run", data={"bags": [str(b) for b in bags]}, progress=False, log=log)
    metadata = load_policy(run.policy_path).metadata
    hashes = [hashlib.sha256(b"".join(f.read_bytes() for f in sorted(b.glob("*.mcap")))).hexdigest() for b in bags]
    assert metadata[training_record.SOURCE_KEY] == {"bags": [{"name": "run1", "sha256": h} for h in hashes]}
    camera = metadata[training_record.CAMERA_KEY]
    assert camera["fovy_deg"] is None, camera  # they disagree: unknown, not one of them
    a, b = (f"run1 (SHA-256 {h[:12]})" for h in hashes)
    each = ", ".join(f"{label} {fov}" for label, fov in sorted([(a, 70.0), (b, 90.0)]))
    assert camera["source"] == f"bags whose CameraInfo disagree ({each})"
    assert str(tmp_path) not in str(metadata[training_record.SOURCE_KEY]) + camera["source"]
    said = training_record.describe_source(metadata, "LiquidRover-v0")
    assert said == f"trained on the recorded bags {a}, {b}, not in a simulated world"


def test_a_bags_hash_and_copy_check_read_its_storage_files_alone_not_what_a_copy_adds_beside_them(tmp_path):
    """Before: a bag's SHA-256 (the training record's name of it) and the check for a validation bag that is a copy
    of a training bag read every file of the folder but metadata.yaml, so a copy made through a Mac on a FAT stick
    (``._run1.mcap`` beside the file, a ``.DS_Store``) or given a note beside it was another recording: another hash
    in the record, and a copy among the validation bags not refused. Only its .mcap/.db3 files are read."""
    import hashlib
    import shutil

    from liquid_control.training.bag_data import _recording_copies, bag_sha256

    bag, _ = _camera_bag(tmp_path / "a" / "run1", frames=20)
    copy = shutil.copytree(bag, tmp_path / "b" / "run1")
    (copy / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (copy / "._run1.mcap").write_bytes(b"\0\5\x16\7 AppleDouble")
    (copy / "notes.txt").write_text("robot b, first drive\n")
    recorded = hashlib.sha256((bag / "run1.mcap").read_bytes()).hexdigest()
    assert bag_sha256(str(bag)) == bag_sha256(str(copy)) == recorded
    assert _recording_copies([str(bag)], [str(copy)]) == [(str(copy), str(bag))]
    (copy / "run1.mcap").write_bytes((bag / "run1.mcap").read_bytes()[:-1] + b"!")  # another recording's bytes
    assert bag_sha256(str(copy)) != recorded and _recording_copies([str(bag)], [str(copy)]) == []


def test_converting_a_bag_reads_it_twice_and_its_hash_is_of_its_file(tmp_path, monkeypatch):
    """Before: converting a bag for training read its file three times: the reader's order scan and its messages read
    every chunk, then the SHA-256 the cache keeps (the training record's name of the bag) read all of it again. The
    hash is now taken from the chunks the reader reads (what lies between them read for it alone): at most the
    bytes that opening the bag reads and two passes over the file, and the hash of the file all the same."""
    import builtins
    import hashlib
    import io
    import os

    from liquid_control.bags import BagReader
    from liquid_control.bags.stream import data_spec
    from liquid_control.policy import validate_config
    from liquid_control.training.bag_data import convert_bag

    bag, _ = _camera_bag(tmp_path / "run1", frames=300)
    mcap = bag / "run1.mcap"
    read = []

    class Counted(io.BufferedReader):
        def read(self, size=-1):
            data = super().read(size)
            read.append(len(data))
            return data

        def readinto(self, buffer):
            n = super().readinto(buffer)
            read.append(n or 0)
            return n

    real_open = io.open

    def counting_open(file, mode="r", *args, **kwargs):
        if mode == "rb" and isinstance(file, (str, os.PathLike)) and os.path.realpath(file) == str(mcap.resolve()):
            return Counted(io.FileIO(file, "rb"))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(io, "open", counting_open)
    monkeypatch.setattr(builtins, "open", counting_open)
    BagReader(bag).close()
    opening = sum(read)
    assert 0 < opening < mcap.stat().st_size / 4  # the summary, not the chunks
    read.clear()
    cfg = validate_config(BAG_CONFIG)
    index = convert_bag(str(bag), cfg, data_spec(cfg), tmp_path / "cache", 64, False, lambda m: None)
    monkeypatch.undo()
    assert index["sha256"] == hashlib.sha256(mcap.read_bytes()).hexdigest()
    assert index["stats"]["labelled"] > 0
    assert opening + mcap.stat().st_size < sum(read) <= opening + 2 * mcap.stat().st_size  # before: 3 times


def test_a_bag_cache_converted_before_it_kept_the_hash_reads_the_bag_for_it_once(tmp_path, monkeypatch):
    """Before: a bag's cache converted before its index kept the SHA-256 (988faa0f) made every later start of the run
    (each --resume) read all of the bag again for it, gigabytes each time, and keep it nowhere. It is read once and
    kept in the cache's index.json; the record names the bag by it as a fresh conversion does."""
    import hashlib
    import json

    from liquid_control.training import bag_data

    bag, _ = _camera_bag(tmp_path / "run1", frames=40)
    out, log = tmp_path / "run", lambda m: None
    trainer.train(BAG_CONFIG, out, data={"bags": [str(bag)]}, progress=False, log=log)
    index_path = out / "data" / "bags" / "train" / "0000_run1" / "index.json"
    older = json.loads(index_path.read_text())
    recorded = older.pop("sha256")
    assert recorded == hashlib.sha256((bag / "run1.mcap").read_bytes()).hexdigest()
    index_path.write_text(json.dumps(older))  # as converted before the hash was kept
    reads = []
    monkeypatch.setattr(bag_data, "bag_sha256", lambda b: reads.append(b) or recorded)
    for _ in range(2):  # killed before its policy was written, resumed twice
        (out / "policy.pt").unlink()
        run = trainer.train(None, out, resume=True, progress=False, log=log)
        assert load_policy(run.policy_path).metadata[training_record.SOURCE_KEY] == {
            "bags": [{"name": "run1", "sha256": recorded}]
        }
    assert reads == [str(bag)]
    assert json.loads(index_path.read_text()) == {**older, "sha256": recorded}


@BACKENDS
def test_a_bag_trained_twist_policy_sent_as_a_plain_array_is_said_to_come_from_its_bags_not_a_world(
    node_of, backend, tmp_path
):
    """Before: the node's warning said '(trained in LiquidRover-v0)' for a policy trained with `train --bag`, which
    never saw that world (the config's world is only what its in-distribution card episodes run in). It names the
    bags the policy file records (the export carries them); a simulated run's file its world; an older file, which
    does not say, its config's world as such."""
    from liquid_control.policy import Policy, save_policy

    rover = save_policy(tmp_path / "rover.pt", Policy.from_config(BAG_CONFIG))  # twist actions, world LiquidRover-v0
    bags = {"bags": [{"name": f"run{i}", "sha256": f"{i}" * 64} for i in range(1, 6)]}
    for source, expected in (
        (bags, "(trained on the recorded bags run1 (SHA-256 111111111111), run2 (SHA-256 222222222222), run3 (SHA-256 "
         "333333333333) and 2 more, not in a simulated world) as a plain array"),
        ({"world": "LiquidRover-v0"}, "(trained in LiquidRover-v0) as a plain array"),
        (None, "(its config's world LiquidRover-v0; the file does not record whether it was trained there or on "
         "recorded bags) as a plain array"),
    ):  # fmt: skip
        configuring = []
        metadata = {} if source is None else {training_record.SOURCE_KEY: source}
        node_of(metadata, backend, policy=rover, configuring=configuring)
        plain = [w for w in configuring if w.startswith("command_type: float64_multi_array publishes this policy's")]
        assert len(plain) == 1 and expected in plain[0], configuring


def test_the_cards_camera_of_another_aspect_is_width_x_height_and_says_so():
    """The card's sensor line said 'camera 32x24' (width x height) beside the encoder's 'features on 24x32 RGB'
    (height x width), neither labelled; both are width x height now, said so (the sensor line checked here)."""
    record = {"width": 32, "height": 24, "fovy_deg": 100.0, "source": "LiquidRover-v0"}
    assert sensor_record.describe({training_record.CAMERA_KEY: record}) == (
        "camera 32x24 (width x height), vertical field of view 100 degrees (LiquidRover-v0)"
    )


def test_a_model_card_says_the_sensors_its_policy_trained_at(tmp_path, monkeypatch):
    """The card named no rate nor camera: a user could not tell what the robot's sensors should run at."""
    from liquid_control.policy import Policy, save_policy
    from liquid_control.training import model_card

    (tmp_path / "run").mkdir()
    policy = Policy.from_config(CAMERA_IMU)
    save_policy(tmp_path / "run" / "policy.pt", policy, {"seed": 0, **RECORD})
    measured = {path: {"kernel_path": path, "outcomes": [True] * 8 + [False] * 2} for path in ("compiled", "torch")}
    monkeypatch.setattr(model_card, "measure_both_paths", lambda *a, **k: measured)
    card = model_card.write_card("shipped", tmp_path / "run", 10, 4, tmp_path / "out", "a test machine").read_text()
    assert (
        "Sensors it trained at: imu 100.0 Hz (middle 90% 90.9-111.1 Hz); camera 8x8 (width x height), vertical "
        "field of view 120 degrees (test)." in card
    ), card
    assert (
        load_policy(tmp_path / "out" / "shipped.pt").metadata[training_record.RATES_KEY]
        == RECORD[training_record.RATES_KEY]
    )  # carried into the shipped file
    assert sensor_record.describe({}).startswith("not recorded")
    # a record that holds no sensor's rate: the card read 'Sensors it trained at: .'
    empty = {training_record.RATES_KEY: {training_record.TIMING_AUGMENTATION: None}}
    assert sensor_record.describe(empty) == "no sensor rate recorded (policy_node checks no rate)"
