"""A bag whose inputs the node would mostly drop is refused by `train --bag` (and `--val-bag`) and `eval --bag`
with one error naming the bag, the topic, the rejections by reason and their cause, instead of training on a
reading held for the whole bag (a driver that does not stamp: every message after the first a duplicate) or
ending with "no state update" that names no cause. A few rejections (out of order, a duplicate) still pass."""

from pathlib import Path

import numpy as np
import pytest
import yaml
from test_bags import CAMERA_IMU, CAMERA_ONLY, _synthetic_bag

from liquid_control import cli
from liquid_control.bags import BagError, BagWriter, data_spec
from liquid_control.bags import messages as M
from liquid_control.bags.stream import CaptureBackend
from liquid_control.conventions.image_conversion import ENCODINGS
from liquid_control.evaluation.offline import evaluate_bag
from liquid_control.training import trainer
from liquid_control.training.bag_data import convert_bag

N = 20  # frames per bag (30 Hz), each with an IMU reading just before it and a command just after it
NOT_STAMPED = "header.stamp does not advance (e.g. all 0): the driver does not stamp its messages"
SUPPORTED = f"supported: {', '.join(ENCODINGS)}"


def _bag(path, frame_stamp=None, imu_stamp=None, imu_value=None, bad_frames=()):
    """A bag of N frames, N IMU readings and N commands; ``frame_stamp(i, t)``/``imu_stamp(i, t)`` replace the
    stamps (default: the log time less 20 ms / 5 ms), ``imu_value(i)`` the IMU readings."""
    times = [1.0 + i / 30 for i in range(N)]
    frames = [(frame_stamp(i, t) if frame_stamp else t - 0.02, t) for i, t in enumerate(times)]
    imus = [
        (imu_stamp(i, t) if imu_stamp else t - 0.005, t - 0.004, imu_value(i) if imu_value else np.full(6, 0.1 * i))
        for i, t in enumerate(times)
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


def test_an_imu_driver_that_does_not_stamp_is_refused_naming_the_topic_and_the_cause(tmp_path):
    """Before: trained and exited 0 with the IMU input held at its first reading for the whole bag (every later
    message a duplicate stamp 0), the only sign a counter in a log line."""
    bag = _bag(tmp_path / "imu_zero", imu_stamp=lambda i, t: 0.0)
    for message in _refusal(bag, CAMERA_IMU, tmp_path):
        assert message.startswith(f"{bag}: refused, more than half of the messages on an input topic rejected")
        assert f"/imu/data (imu): {N - 1} of {N} messages rejected, duplicate_stamp {N - 1}: {NOT_STAMPED}" in message
        assert "/camera/image_raw" not in message  # the camera is fine


def test_a_camera_driver_that_does_not_stamp_is_refused_for_training_validation_and_eval(tmp_path, capsys):
    """Before: trained on 1 update of 20 and exited 0; as --val-bag it selected the model on 1 update; eval --bag
    reported an offline error on 1 update."""
    good = _bag(tmp_path / "good")
    bag = _bag(tmp_path / "cam_zero", frame_stamp=lambda i, t: 0.0)
    train_error, eval_error = _refusal(bag, CAMERA_ONLY, tmp_path)
    for message in (train_error, eval_error):
        assert f"/camera/image_raw (camera): {N - 1} of {N} messages rejected, duplicate_stamp {N - 1}" in message
        assert NOT_STAMPED in message
    one = {"training.epochs_first": 1}
    with pytest.raises(trainer.TrainingError, match=r"validation bag 1/1: .*cam_zero: refused.*duplicate_stamp"):
        data = {"bags": [good], "validation": [bag]}
        trainer.train(CAMERA_ONLY, tmp_path / "run", data=data, overrides=one, progress=False)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()  # refused before the first epoch
    # the command line: one line naming the bag and the cause, exit status 2, no traceback
    config = tmp_path / "camera_only.yaml"
    config.write_text(yaml.safe_dump(CAMERA_ONLY))
    argv = ["train", "--config", str(config), "--bag", bag, "--out", str(tmp_path / "cli"), "--no-progress"]
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
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


def test_an_empty_bag_says_it_holds_no_messages(tmp_path):
    """Before: "no command on /cmd_vel (set --command-topic)" though /cmd_vel is in the bag (without a message)."""
    bag = tmp_path / "empty"
    with BagWriter(bag) as writer:
        writer.add_topic("/camera/image_raw", M.IMAGE)
        writer.add_topic("/cmd_vel", M.TWIST)
    for message in _refusal(str(bag), CAMERA_ONLY, tmp_path):
        assert "the bag holds no messages" in message and "set --command-topic" not in message


def test_a_few_rejections_pass_and_more_than_half_of_a_topic_refuses(tmp_path):
    """Out-of-order and duplicate messages the node drops now and then train and evaluate as before; the rule
    is more than half of one input topic's messages rejected: exactly half passes, one more is refused."""
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

    def stuck_after(k):  # IMU stamps stop advancing after reading k: N - 1 - k duplicates
        return lambda i, t: (t if i <= k else 1.0 + k / 30) - 0.005

    half = _bag(tmp_path / "half", imu_stamp=stuck_after(N // 2 - 1))
    assert _convert(half, CAMERA_IMU, tmp_path)["stats"]["rejected.duplicate_stamp"] == N // 2
    evaluate_bag(CaptureBackend(CAMERA_IMU), half, data_spec(CAMERA_IMU))
    more = _bag(tmp_path / "more", imu_stamp=stuck_after(N // 2 - 2))
    for message in _refusal(more, CAMERA_IMU, tmp_path):
        assert f"/imu/data (imu): {N // 2 + 1} of {N} messages rejected, duplicate_stamp {N // 2 + 1}" in message
