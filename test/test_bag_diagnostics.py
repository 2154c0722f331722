"""A bag on one of whose inputs the node would hold one reading for longer than max_gap_s while the sensor kept
publishing (every message meanwhile rejected) is refused by `train --bag` (and `--val-bag`) and `eval --bag` with
one error naming the bag, the topic, that stretch (length, log time it starts), the rejections by reason and their
cause, and the limit, instead of training on a reading held for the whole bag (a driver that does not stamp: every
message after the first a duplicate); a bag with no update says why instead of "no state update" naming no cause.
Rejections that hold nothing for long pass however many they are: out of order, a duplicate, a driver republishing
each sample under its stamp, another publisher's JointStates on a shared /joint_states, and a duplicate or stale
message from a sensor back after a silence longer than max_gap_s (a silence is not publishing: it ends a stretch)."""

from pathlib import Path

import numpy as np
import pytest
import yaml
from test_bags import BALANCE, CAMERA_IMU, CAMERA_ONLY, H, W, _synthetic_bag

from liquid_control import cli
from liquid_control.bags import BagError, BagWriter, data_spec
from liquid_control.bags import messages as M
from liquid_control.bags.stream import CaptureBackend
from liquid_control.conventions.image_conversion import ENCODINGS
from liquid_control.evaluation.offline import evaluate_bag
from liquid_control.policy import validate_config
from liquid_control.training import trainer
from liquid_control.training.bag_data import convert_bag

N = 40  # frames per bag (30 Hz: 1.3 s, more than config/rover_policy.yaml's max_gap_s of 1 s), each with an IMU
# reading just before it and a command just after it
NOT_STAMPED = "header.stamp 0 (not set: the driver does not stamp its messages)"
STAMPED_ALIKE = "header.stamp does not advance: the driver stamps its readings alike"
SUPPORTED = f"supported: {', '.join(ENCODINGS)}"
REFUSED = "refused, an input held at one reading for longer than max_gap_s while its sensor kept publishing"


def _bag(path, frame_stamp=None, imu_stamp=None, imu_value=None, bad_frames=(), n=N, imu_copies=1):
    """A bag of n frames, n IMU readings and n commands; ``frame_stamp(i, t)``/``imu_stamp(i, t)`` replace the
    stamps (default: the log time less 20 ms / 5 ms), ``imu_value(i)`` the IMU readings; ``imu_copies``: each IMU
    reading published that many times under its stamp (2 ms apart)."""
    times = [1.0 + i / 30 for i in range(n)]
    frames = [(frame_stamp(i, t) if frame_stamp else t - 0.02, t) for i, t in enumerate(times)]
    imus = [
        (
            imu_stamp(i, t) if imu_stamp else t - 0.005,
            t - 0.009 + 0.002 * copy,
            imu_value(i) if imu_value else np.full(6, 0.1 * i),
        )
        for i, t in enumerate(times)
        for copy in range(imu_copies)
    ]
    commands = [(t + 0.003, (0.3, 0.1 * i)) for i, t in enumerate(times)]
    return str(_synthetic_bag(path, frames, imus, commands, bad_frames=bad_frames))


def _convert(bag, config, tmp_path):
    return convert_bag(bag, config, data_spec(config), tmp_path / "cache" / Path(bag).name, 64, False, print)


def _refusal(bag, config, tmp_path) -> tuple[str, str]:
    """The error of training on ``bag`` and of evaluating on it (a capture backend: no network needed); the
    conversion leaves nothing behind."""
    with pytest.raises(BagError) as trained:
        _convert(bag, config, tmp_path)
    assert not [p for p in (tmp_path / "cache").glob("*") if Path(bag).name in p.name]  # nothing left behind
    with pytest.raises(BagError) as evaluated:
        evaluate_bag(CaptureBackend(config), bag, data_spec(config))
    return str(trained.value), str(evaluated.value)


def test_an_imu_driver_that_stamps_every_reading_alike_is_refused_naming_the_topic_and_the_cause(tmp_path):
    """Before: trained and exited 0 with the IMU input held at its first reading for the whole bag (every later
    message a duplicate stamp), the only sign a counter in a log line."""
    bag = _bag(tmp_path / "imu_alike", imu_stamp=lambda i, t: 0.5)
    for message in _refusal(bag, CAMERA_IMU, tmp_path):
        assert message.startswith(f"{bag}: {REFUSED}")
        held = f"kept publishing for {(N - 1) / 30:.3f} s from log time 0.991 s, none accepted (max_gap_s 1 s)"
        rejected = f"{N - 1} of {N} messages rejected, duplicate_stamp {N - 1}: {STAMPED_ALIKE}"
        assert f"/imu/data (imu): {held}; {rejected}" in message
        assert "/camera/image_raw" not in message  # the camera is fine


def test_an_imu_driver_that_does_not_stamp_is_refused_naming_the_topic_and_the_cause(tmp_path):
    """Stamps 0 (unset) are bad_stamp since the runner tells them from a clock jump back: no update at all."""
    bag = _bag(tmp_path / "imu_zero", imu_stamp=lambda i, t: 0.0)
    for message in _refusal(bag, CAMERA_IMU, tmp_path):
        assert f"/imu/data (imu): {N} of {N} messages rejected, bad_stamp {N}: {NOT_STAMPED}" in message
        assert "/camera/image_raw" not in message  # the camera is fine


def test_an_imu_stamp_whose_nanosec_is_a_second_or_more_is_rejected_as_the_node_rejects_it(tmp_path, monkeypatch):
    """policy_node rejects a stamp whose nanosec is 10^9 or more (no builtin_interfaces/Time) as bad_stamp; before,
    the bag path read it as seconds (up to 4.3 s later) and trained on it: the node and training disagreed."""
    real = M.imu_message

    def not_a_time(*args, **kwargs):  # the same instant written with a nanosec past a second: sec - 1, + 10^9 ns
        msg = real(*args, **kwargs)
        stamp = msg.header.stamp
        msg.header.stamp = type(stamp)(sec=stamp.sec - 1, nanosec=stamp.nanosec + 1_000_000_000)
        return msg

    monkeypatch.setattr(M, "imu_message", not_a_time)
    bag = _bag(tmp_path / "imu_nanosec")
    monkeypatch.undo()
    for message in _refusal(bag, CAMERA_IMU, tmp_path):
        assert f"/imu/data (imu): {N} of {N} messages rejected, bad_stamp {N}: " in message
        assert "nanosec 10^9 or more" in message and "/camera/image_raw" not in message  # the camera is fine


def test_a_camera_driver_that_does_not_stamp_is_refused_for_training_validation_and_eval(tmp_path, capsys):
    """Before: trained on 1 update of 20 and exited 0; as --val-bag it selected the model on 1 update; eval --bag
    reported an offline error on 1 update."""
    good = _bag(tmp_path / "good")
    bag = _bag(tmp_path / "cam_zero", frame_stamp=lambda i, t: 0.0)
    train_error, eval_error = _refusal(bag, CAMERA_ONLY, tmp_path)
    for message in (train_error, eval_error):
        assert f"/camera/image_raw (camera): {N} of {N} messages rejected, bad_stamp {N}: {NOT_STAMPED}" in message
    one = {"training.epochs_first": 1}
    with pytest.raises(trainer.TrainingError, match=r"validation bag 1/1: .*cam_zero: no labelled update.*bad_stamp"):
        data = {"bags": [good], "validation": [bag]}
        trainer.train(CAMERA_ONLY, tmp_path / "run", data=data, overrides=one, progress=False)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()  # refused before the first epoch
    # the command line: one line naming the bag and the cause, exit status 2, no traceback
    config = tmp_path / "camera_only.yaml"
    config.write_text(yaml.safe_dump(CAMERA_ONLY))
    argv = ["train", "--config", str(config), "--bag", bag, "--out", str(tmp_path / "cli"), "--no-progress"]
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "warning: encoder.camera:" not in line]
    assert len(err) == 1 and "train bag 1/1" in err[0] and NOT_STAMPED in err[0] and "Traceback" not in err[0]


def test_an_unsupported_image_encoding_is_named_with_the_supported_ones(tmp_path):
    """Before: "no state update from {'camera': '/camera/image_raw'}", naming neither the encoding nor the
    encodings the node converts."""
    bag = _bag(tmp_path / "yuv", bad_frames=range(N))
    for message in _refusal(bag, CAMERA_ONLY, tmp_path):
        assert f"/camera/image_raw (camera): {N} of {N} messages rejected, bad_encoding {N}" in message
        assert "image encoding 'yuv422'" in message and SUPPORTED in message


def test_nan_imu_readings_are_named_as_not_finite(tmp_path):
    bag = _bag(tmp_path / "nan", imu_value=lambda i: np.array([0, 0, np.nan, 0, 0, 9.8]))
    for message in _refusal(bag, CAMERA_IMU, tmp_path):
        assert f"/imu/data (imu): {N} of {N} messages rejected, non_finite {N}: NaN/inf in the message" in message
        assert "no state update" not in message


def test_an_imu_without_a_gyro_is_named_as_not_provided(tmp_path, monkeypatch):
    """An IMU driver without a gyroscope publishes zeros with angular_velocity_covariance[0] = -1 (sensor_msgs/Imu:
    not provided): those zeros trained the policy as a robot that never turns, as the node commanded from them."""
    imu_message = M.imu_message

    def without_gyro(reading, stamp, **kwargs):
        msg = imu_message(np.r_[0, 0, 0, reading[3:]], stamp, **kwargs)
        msg.angular_velocity_covariance[0] = -1.0
        return msg

    monkeypatch.setattr(M, "imu_message", without_gyro)
    bag = _bag(tmp_path / "no_gyro")
    for message in _refusal(bag, CAMERA_IMU, tmp_path):
        assert f"/imu/data (imu): {N} of {N} messages rejected, not_provided {N}: the driver marks" in message


@pytest.mark.parametrize("claimed", [100_000, 2**32 - 1, 24])
def test_an_image_of_another_size_is_rejected_unread_as_bad_shape_in_train_and_eval_as_the_node_does(
    tmp_path, monkeypatch, claimed
):
    """policy_node checks an Image's (height, width) before converting it: bad_shape, the sizes said. Before: the
    bag path converted it first: a header claiming 100000x100000 (or 2**32-1) over the policy's pixels was
    bad_encoding in train and eval, eval saying nothing of it, and a valid frame of another size (24x24 here, a
    100-megapixel one on a robot) was converted in full."""
    from liquid_control.bags import stream

    bag = tmp_path / f"claims_{claimed}"
    with BagWriter(bag) as writer:
        for i in range(N):
            t = 1.0 + i / 30
            size = 24 if i == 5 and claimed == 24 else H
            frame = M.image_message(np.full((size, size, 3), i, np.uint8), t - 0.02)
            if i == 5:
                frame.height = frame.width = claimed
            writer.write("/camera/image_raw", int(t * 1e9), frame)
            writer.write("/cmd_vel", int((t + 0.003) * 1e9), M.twist_message(0.3, 0.1))
    converted, reading = [], stream.sensor_reading
    monkeypatch.setattr(stream, "sensor_reading", lambda s, m: converted.append((m.height, m.width)) or reading(s, m))
    stats = _convert(str(bag), CAMERA_ONLY, tmp_path)["stats"]
    assert stats["rejected.bad_shape"] == 1 and "rejected.bad_encoding" not in stats
    assert stats["labelled"] == N - 1 and set(converted) == {(H, W)}  # the wrong size never converted
    result = evaluate_bag(CaptureBackend(CAMERA_ONLY), str(bag), data_spec(CAMERA_ONLY))
    assert len(result["time"]) == N - 1 and result["stats"]["rejected.bad_shape"] == 1
    assert result["rejected"] == [
        f"/camera/image_raw (camera): 1 of {N} messages rejected, bad_shape 1: /camera/image_raw (camera: the rgb8 "
        f"image of sensor_msgs/msg/Image) has {claimed}x{claimed} images (width x height), the policy reads {W}x{H} "
        "images (observation.image): record the topic policy_node will subscribe to, resized"
    ]


def test_a_bag_logged_at_0_throughout_names_sim_time_without_a_clock_not_stamps_without_sim_time(tmp_path):
    """`ros2 bag record --use-sim-time` with nothing publishing /clock logs every message at 0 while the sensors
    stamp wall time. Before: refused as future_stamp '(unsynchronised clocks, or sim-time stamps recorded without
    --use-sim-time)', the opposite of what happened; a bag whose clock did run still gets that hint."""
    bag = tmp_path / "no_clock"
    with BagWriter(bag) as writer:
        for i in range(N):
            writer.write("/camera/image_raw", 0, M.image_message(np.full((H, W, 3), i, np.uint8), 1.75e9 + i / 30))
            writer.write("/cmd_vel", 0, M.twist_message(0.3, 0.1))
    for message in _refusal(str(bag), CAMERA_ONLY, tmp_path):
        assert f"/camera/image_raw (camera): {N} of {N} messages rejected, future_stamp {N}: " in message
        assert (
            "stamps ahead of the recorder's clock, whose log times are all 0: recorded with --use-sim-time (ros2 bag "
            "record --use-sim-time) while nothing published /clock; record without it, or with the simulator "
            "publishing /clock"
        ) in message
        assert "recorded without --use-sim-time" not in message
    ahead = _bag(tmp_path / "ahead", frame_stamp=lambda i, t: t + 5.0)  # a camera's clock 5 s ahead
    for message in _refusal(ahead, CAMERA_ONLY, tmp_path):
        assert "(unsynchronised clocks, or sim-time stamps recorded without --use-sim-time)" in message


def test_an_empty_bag_says_it_holds_no_messages(tmp_path):
    """Before: "no command on /cmd_vel (set --command-topic)" though /cmd_vel is in the bag (without a message)."""
    bag = tmp_path / "empty"
    with BagWriter(bag) as writer:
        writer.add_topic("/camera/image_raw", M.IMAGE)
        writer.add_topic("/cmd_vel", M.TWIST)
    for message in _refusal(str(bag), CAMERA_ONLY, tmp_path):
        assert "the bag holds no messages" in message and "set --command-topic" not in message


def test_a_few_rejections_pass(tmp_path):
    """Out-of-order and duplicate messages the node drops now and then train and evaluate as before."""
    stamps = [1.0 + i / 30 - 0.02 for i in range(N)]
    stamps[3] = stamps[2] - 0.01  # out of order (by less than max_backward_jump_s), as is frame 9
    stamps[9] = stamps[8] - 0.01
    stamps[14] = stamps[13]  # a duplicate
    bag = _bag(tmp_path / "few", frame_stamp=lambda i, t: stamps[i])
    index = _convert(bag, CAMERA_ONLY, tmp_path)
    stats = index["stats"]
    assert stats["rejected.out_of_order"] == 2 and stats["rejected.duplicate_stamp"] == 1
    assert stats["labelled"] == N - 3
    result = evaluate_bag(CaptureBackend(CAMERA_ONLY), bag, data_spec(CAMERA_ONLY))
    assert len(result["time"]) == N - 3
    run = trainer.train(
        CAMERA_ONLY, tmp_path / "run", data={"bags": [bag]}, overrides={"training.epochs_first": 1}, progress=False
    )
    assert run.epochs == 1


def test_a_driver_republishing_each_sample_under_its_stamp_passes(tmp_path):
    """Each IMU sample published 3 times under its stamp: 2 of 3 messages rejected as duplicates, yet the node
    gets every sample. Before (the rule: more than half of a topic's messages rejected): refused."""
    bag = _bag(tmp_path / "imu_x3", imu_copies=3)
    stats = _convert(bag, CAMERA_IMU, tmp_path)["stats"]
    assert stats["rejected.duplicate_stamp"] == 2 * N and stats["received.imu"] == 3 * N
    assert stats["labelled"] == N
    assert len(evaluate_bag(CaptureBackend(CAMERA_IMU), bag, data_spec(CAMERA_IMU))["time"]) == N


def _shared_joint_states_bag(path, spec, steps, wheels_silent=range(0)):
    """A balance bag of ``steps`` IMU messages at 200 Hz, each followed by the wheel base's JointState (its
    joint_state_broadcaster, 200 Hz) and a command, with a pan-tilt head's JointStates (400 Hz) on the same
    /joint_states. The wheel base publishes nothing at the steps in ``wheels_silent`` (a reconnect) and, back,
    republishes its last state before the silence once, under its stamp (a duplicate), then its states again."""
    from liquid_control.bags.io import typestore

    types = typestore().types
    layout = types["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)

    def joints(stamp, names, velocity):
        zeros, velocity = np.zeros(2), np.asarray(velocity, np.float64)
        return types[M.JOINT_STATE](header=M.header(stamp), name=names, position=zeros, velocity=velocity, effort=zeros)

    last = None  # (stamp, velocity) of the wheel base's last state
    with BagWriter(path) as writer:
        for i in range(steps):
            t = 1 + i * 0.005
            writer.write("/imu/data", int(t * 1e9), M.imu_message(np.full(6, 0.01 * i), t))
            if i not in wheels_silent:
                state = (t, [0.1 * i, 0.2]) if last is None or i - 1 not in wheels_silent else last
                writer.write(
                    "/joint_states", int(t * 1e9) + 100, joints(state[0], ["wheel_left", "wheel_right"], state[1])
                )
                last = state
            for k in (1, 2):  # the head, twice as fast
                head = t + k * 0.0017
                writer.write("/joint_states", int(head * 1e9), joints(head, ["pan", "tilt"], [0.0, 0.0]))
            writer.write(spec.command_topic, int(t * 1e9) + 200, types[M.FLOAT64_ARRAY](layout=layout, data=np.ones(2)))
    return str(path)


def test_a_joint_states_topic_shared_with_another_joint_set_passes(tmp_path):
    """A pan-tilt head's joint_state_broadcaster (400 Hz) beside the wheel base's (200 Hz) on /joint_states: the
    head's messages name no wheel joint and are rejected as missing_joint (2 of 3), yet every update has the
    wheel speeds. Before: refused, telling to set joint_names."""
    cfg = validate_config(BALANCE)
    spec = data_spec(cfg)
    bag = _shared_joint_states_bag(tmp_path / "two_joint_publishers", spec, 300)  # 1.5 s, more than max_gap_s
    stats = _convert(bag, cfg, tmp_path)["stats"]
    assert stats["rejected.missing_joint"] == 600 and stats["received.wheels"] == 900  # counted as the node does
    assert stats["labelled"] == 299  # every IMU message but the first, before any wheel speed
    updates = evaluate_bag(CaptureBackend(cfg), bag, spec)
    assert len(updates["time"]) == 299


def test_the_wheel_base_silent_while_the_head_publishes_on_joint_states_passes(tmp_path):
    """The wheel base's publisher silent for 1.2 s (max_gap_s 1 s) while the head's keeps publishing on the shared
    /joint_states, then back with its last state republished once (a duplicate): the head's messages are another
    publisher's, not the wheels publishing, so they do not bridge the silence, and the duplicate after it holds
    nothing for long. Before: refused ("kept publishing for 1.205 s ... none accepted", from the last wheel state
    before the silence to the duplicate); counting the head's messages as the wheels' (`if True:` for the check
    that a JointState names one of joint_names) refuses it too."""
    cfg = validate_config(BALANCE)
    spec = data_spec(cfg)
    bag = _shared_joint_states_bag(tmp_path / "wheels_reconnect", spec, 500, wheels_silent=range(200, 440))
    stats = _convert(bag, cfg, tmp_path)["stats"]
    assert stats["rejected.missing_joint"] == 1000 and stats["rejected.duplicate_stamp"] == 1
    assert stats["received.wheels"] == 1000 + 260 and stats["labelled"] > 0
    evaluate_bag(CaptureBackend(cfg), bag, spec)


def _stalled_imu(path, n, after, for_readings):
    """A bag of n frames whose IMU stamps stop advancing after reading ``after`` for ``for_readings`` readings
    (duplicates of its stamp), then advance again."""

    def stamp(i, t):
        return (1.0 + after / 30 if after < i <= after + for_readings else t) - 0.005

    return _bag(path, imu_stamp=stamp, n=n)


def test_an_imu_whose_stamps_stop_advancing_for_longer_than_max_gap_s_is_refused_naming_the_stretch(tmp_path):
    """The IMU's stamps stand still for 37 readings (1.23 s, max_gap_s 1 s) in a 3 s bag: the policy would hold
    one reading for 1.23 s while the IMU kept publishing. Before: trained on it (37 of 90 messages rejected, less
    than half), and before the check existed too."""
    bag = _stalled_imu(tmp_path / "stall", 90, 30, 37)
    start = 1.0 + 30 / 30 - 0.009  # the log time of the last reading accepted before the stall
    for message in _refusal(bag, CAMERA_IMU, tmp_path):
        assert message.startswith(f"{bag}: {REFUSED}")
        held = f"kept publishing for {37 / 30:.3f} s from log time {start:.3f} s, none accepted (max_gap_s 1 s)"
        rejected = f"37 of 90 messages rejected, duplicate_stamp 37: {STAMPED_ALIKE}"
        assert f"/imu/data (imu): {held}; {rejected}" in message
        assert "/camera/image_raw" not in message


def test_an_imu_whose_stamps_stop_advancing_for_less_than_max_gap_s_passes(tmp_path):
    """The same stall for 27 readings (0.9 s, max_gap_s 1 s) in a 1.5 s bag passes. Before: refused (27 of 45
    messages rejected, more than half)."""
    bag = _stalled_imu(tmp_path / "short_stall", 45, 5, 27)
    stats = _convert(bag, CAMERA_IMU, tmp_path)["stats"]
    assert stats["rejected.duplicate_stamp"] == 27 and stats["labelled"] == 45
    evaluate_bag(CaptureBackend(CAMERA_IMU), bag, data_spec(CAMERA_IMU))


def _reconnecting_bag(path, sensor, silent, republished=1, n=120):
    """A bag of n frames (30 Hz), each with an IMU reading just before it and a command just after it, whose
    ``sensor`` publishes nothing at the frames ``silent`` (a USB reconnect), then, back: the IMU its last sample
    before the silence under its stamp in place of its next ``republished`` readings (duplicates); the camera one
    stale frame from its driver's buffer, stamped a frame before its last one (out of order), then its frames."""
    times = [1.0 + i / 30 for i in range(n)]
    back = silent[-1] + 1
    frames = [(t - 0.02, t) for i, t in enumerate(times) if sensor != "camera" or i not in silent]
    imus = [(t - 0.005, t - 0.009, np.full(6, 0.1 * i)) for i, t in enumerate(times)]
    if sensor == "imu":
        last = imus[silent[0] - 1]
        stuck = [(last[0], log_time, last[2]) for _, log_time, _ in imus[back : back + republished]]
        imus = imus[: silent[0]] + stuck + imus[back + republished :]
    else:
        frames.append((times[silent[0] - 1] - 0.02 - 1 / 30, times[back] - 0.002))
    commands = [(t + 0.003, (0.3, 0.1 * i)) for i, t in enumerate(times)]
    return str(_synthetic_bag(path, frames, imus, commands))


def test_an_imu_silent_for_longer_than_max_gap_s_then_republishing_its_last_sample_once_passes(tmp_path):
    """The IMU silent for 1.5 s (max_gap_s 1 s), then its last sample republished once (a duplicate): the IMU did
    not keep publishing (a silence is not what the check refuses). Before: refused, "kept publishing for 1.533 s
    ... none accepted", measured from the last reading before the silence to the duplicate."""
    bag = _reconnecting_bag(tmp_path / "imu_reconnect", "imu", range(30, 75))
    stats = _convert(bag, CAMERA_IMU, tmp_path)["stats"]
    assert stats["rejected.duplicate_stamp"] == 1 and stats["received.imu"] == 120 - 45 and stats["labelled"] > 0
    evaluate_bag(CaptureBackend(CAMERA_IMU), bag, data_spec(CAMERA_IMU))


def test_a_camera_silent_for_longer_than_max_gap_s_then_sending_one_stale_frame_passes(tmp_path):
    """The camera silent for 1.2 s, then one stale frame from its driver's buffer (out of order). Before: refused,
    "kept publishing for 1.231 s ... none accepted"."""
    bag = _reconnecting_bag(tmp_path / "camera_reconnect", "camera", range(30, 66))
    stats = _convert(bag, CAMERA_IMU, tmp_path)["stats"]
    assert stats["rejected.out_of_order"] == 1 and stats["received.camera"] == 120 - 36 + 1 and stats["labelled"] > 0
    evaluate_bag(CaptureBackend(CAMERA_IMU), bag, data_spec(CAMERA_IMU))


def test_stamps_standing_still_for_longer_than_max_gap_s_after_a_silence_are_refused_from_the_silence_end(tmp_path):
    """The IMU silent for 1 s, then its last sample republished for 37 readings (1.2 s): refused, the stretch
    measured from the first message after the silence (a silence ends a stretch, it does not excuse the next)."""
    bag = _reconnecting_bag(tmp_path / "imu_reconnect_stuck", "imu", range(30, 60), republished=37)
    start = 1.0 + 60 / 30 - 0.009  # the log time of the first message after the silence
    for message in _refusal(bag, CAMERA_IMU, tmp_path):
        assert message.startswith(f"{bag}: {REFUSED}")
        held = f"kept publishing for {36 / 30:.3f} s from log time {start:.3f} s, none accepted (max_gap_s 1 s)"
        assert f"/imu/data (imu): {held}; 37 of 90 messages rejected, duplicate_stamp 37: {STAMPED_ALIKE}" in message
        assert "/camera/image_raw" not in message


def _two_clocks_bag(path, imu_stamp):
    """40 frames (30 Hz, stamped 20 ms before their log time, 1000 s on) each with an IMU reading just before (stamped
    ``imu_stamp(i, log time)``) and a command just after."""
    times = [1000.0 + i / 30 for i in range(N)]
    imus = [(imu_stamp(i, t), t - 0.009, np.full(6, 0.1 * i)) for i, t in enumerate(times)]
    commands = [(t + 0.003, (0.3, 0.1 * i)) for i, t in enumerate(times)]
    return str(_synthetic_bag(path, [(t - 0.02, t) for t in times], imus, commands))


def test_updates_waiting_for_inputs_stamped_by_two_clocks_are_said_by_training_and_eval(tmp_path, capsys):
    """Before: with the IMU stamps 2 s back from halfway on (its clock stepped), training's line for the bag said
    only 'rejected..., resets.clock_backwards 1' and eval --bag's report nothing, although no update came from there
    on (the counters waiting_for_stale.* in offline.json alone); with the IMU on a clock since boot for the whole bag,
    both refused with 'no state update from {...}'. Now they say it in policy_node's words (one wording:
    runner.stale_inputs_text), with how many update messages waited for each input."""
    from liquid_control.policy import Policy, save_policy
    from liquid_control.runtime.runner import stale_inputs_text

    waiting = (
        "update messages that made no update, waiting for inputs stamped more than max_gap_s (1 s) apart "
        "(a sensor that went silent, or sensors stamping by different clocks): "
    )
    assert waiting.endswith(f"waiting for {stale_inputs_text(1.0)}: ")  # the node's words
    boot = _two_clocks_bag(tmp_path / "imu_boot_clock", lambda i, t: t - 995.0)
    for message in _refusal(boot, CAMERA_IMU, tmp_path):
        assert f"{waiting}{N} for /imu/data (imu) (see" in message, message
        assert "no state update from" not in message

    stepped = _two_clocks_bag(tmp_path / "imu_stepped", lambda i, t: t - 0.005 - 2.0 * (i >= N // 2))
    logged, one = [], {"training.epochs_first": 1}
    trainer.train(
        CAMERA_IMU, tmp_path / "run", data={"bags": [stepped]}, overrides=one, progress=False, log=logged.append
    )
    line = next(x for x in logged if x.startswith("train bag imu_stepped:"))
    # every frame after the step waits for the IMU (the frames update the policy: 20 updates, of the first half)
    assert line.endswith(f"resets.clock_backwards 1; {waiting}{N // 2} for /imu/data (imu)"), line

    policy = save_policy(tmp_path / "policy.pt", Policy.from_config(CAMERA_IMU))
    out = tmp_path / "eval"
    argv = ["eval", "--bag", stepped, "--policy", f"fused={policy}", "--out", str(out), "--no-progress", "--no-example"]
    capsys.readouterr()
    assert cli.main(argv) == 0
    said = f"fused on imu_stepped: {waiting}{N // 2} for /imu/data (imu)"
    assert f"liquid-control eval: warning: {said}" in capsys.readouterr().err
    assert f"\n- {said}\n" in (out / "report.md").read_text()
