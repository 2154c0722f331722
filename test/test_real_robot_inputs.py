"""docs/real_robot.md followed with what a real robot records: bags that break the loop in ways the other bag tests
do not cover, each refused with a message naming the bag and topic and nothing half-written left behind."""

import numpy as np

from liquid_control import cli
from liquid_control.bags import BagWriter
from liquid_control.bags.messages import image_message, twist_message
from liquid_control.paths import policies_dir

FRAMES = 10


def _drive(path, encoding: str = "rgb8"):
    """``FRAMES`` 64x64 camera frames at 20 Hz on /camera/image_raw in ``encoding`` (rgb8, or a camera driver's
    yuv422, which policy_node does not convert), a /cmd_vel after each."""
    with BagWriter(path) as bag:
        for k in range(FRAMES):
            t = 100.0 + 0.05 * k
            image = image_message(np.full((64, 64, 3), k, np.uint8), t)
            if encoding == "yuv422":
                image.encoding, image.step, image.data = "yuv422", 128, np.zeros(64 * 128, np.uint8)
            bag.write("/camera/image_raw", int(t * 1e9), image)
            bag.write("/cmd_vel", int(t * 1e9) + 1_000_000, twist_message(0.5, 0.1))
    return path


def test_eval_refusing_a_later_bag_leaves_no_plot_of_the_bags_before_it(tmp_path, capsys):
    """Before: `eval --bag good --bag yuv422_camera` was refused naming the second bag, but --out kept
    plots/robot__good.png (no report.md, no offline.json): half a report, and a folder the user had not asked for."""
    good, bad = _drive(tmp_path / "good"), _drive(tmp_path / "yuv", "yuv422")
    shipped = f"robot={policies_dir() / 'cfc_ncp_rover.pt'}"
    out = tmp_path / "offline"
    argv = ["eval", "--bag", str(good), "--bag", str(bad), "--policy", shipped, "--no-progress"]
    assert cli.main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: the policy made no update on this bag" in err and "image encoding 'yuv422'" in err, err
    assert not out.exists(), sorted(p.relative_to(out) for p in out.rglob("*"))
    made = tmp_path / "made"  # a folder made for the report beforehand stays, empty
    made.mkdir()
    assert cli.main([*argv, "--out", str(made)]) == 2
    assert list(made.iterdir()) == []
    capsys.readouterr()
    assert cli.main(["eval", "--bag", str(good), "--policy", shipped, "--no-progress", "--out", str(out)]) == 0
    assert sorted(p.name for p in (out / "plots").iterdir()) == ["robot__good.png"]
    assert (out / "report.md").is_file() and (out / "offline.json").is_file()


def test_eval_whose_report_write_fails_leaves_nothing_that_blocks_the_rerun(tmp_path, capsys, monkeypatch):
    """Before: a report.md write that failed (a full disk) removed the plots but kept offline.json, which names
    them, and the rerun into the same --out was refused as 'already holds a report (offline.json)'."""
    from liquid_control.evaluation import offline

    good = _drive(tmp_path / "good")
    argv = ["eval", "--bag", str(good), "--policy", f"robot={policies_dir() / 'cfc_ncp_rover.pt'}", "--no-progress"]
    out = tmp_path / "offline"

    def disk_full(results):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(offline, "report_markdown", disk_full)
        assert cli.main([*argv, "--out", str(out)]) != 0
    assert not out.exists(), sorted(p.relative_to(out) for p in out.rglob("*"))
    capsys.readouterr()
    assert cli.main([*argv, "--out", str(out)]) == 0
    assert (out / "report.md").is_file() and (out / "offline.json").is_file()


def test_replay_meeting_a_corrupt_chunk_names_where_it_stopped_and_what_the_output_bag_holds(tmp_path, capsys):
    """Before: a bag whose chunk fails its CRC (a bad copy) was found only while played: `corrupt bag ... Chunk
    checksum mismatch`, exit 2, and nothing said that -o was left behind, finished, holding the commands recorded
    for the bags played before it."""
    from liquid_control.bags import BagReader
    from liquid_control.ros.testing import free_domain_id

    good, bad = _drive(tmp_path / "good"), _drive(tmp_path / "copied")
    (mcap,) = bad.glob("*.mcap")
    data = bytearray(mcap.read_bytes())
    data[len(data) // 2] ^= 0x10  # in the one chunk's image data
    mcap.write_bytes(bytes(data))
    out = tmp_path / "replayed"
    argv = ["replay", str(good), str(bad), "-o", str(out), "--wait", "0", "--linger", "0.2", "--rate", "10"]
    assert cli.main([*argv, "--domain-id", str(free_domain_id())]) == 2
    err = capsys.readouterr().err
    assert f"{mcap}: corrupt bag" in err and "Traceback" not in err, err
    assert f"the playback of {bad} stopped there, after 0 of its messages" in err, err
    assert f"{out} was finished with the 0 message(s) recorded before" in err, err
    with BagReader(out) as reader:  # complete: it opens, nothing recorded as no policy node ran
        assert reader.message_count == 0


def test_a_camera_recorded_only_compressed_is_refused_saying_policy_node_reads_raw_images(tmp_path, capsys):
    """Before: a bag of image_transport's compressed camera (what teams record to save disk) was refused as
    "no topic /camera/image_raw ... it has /camera/image_raw/compressed (sensor_msgs/msg/CompressedImage, 10)", and
    `--topic camera=/camera/image_raw/compressed` as "is sensor_msgs/msg/CompressedImage; expected ...Image",
    neither saying that no option reads it: policy_node subscribes to raw images."""
    from liquid_control.bags.io import typestore
    from liquid_control.bags.messages import COMPRESSED_IMAGE, header

    bag = tmp_path / "compressed"
    with BagWriter(bag) as writer:
        for k in range(FRAMES):
            t = 100.0 + 0.05 * k
            jpeg = np.frombuffer(b"\xff\xd8\xff\xe0" + bytes(60) + b"\xff\xd9", np.uint8)
            frame = typestore().types[COMPRESSED_IMAGE](
                header=header(t), format="rgb8; jpeg compressed bgr8", data=jpeg
            )
            writer.write("/camera/image_raw/compressed", int(t * 1e9), frame)
            writer.write("/cmd_vel", int(t * 1e9) + 1_000_000, twist_message(0.5, 0.1))
    evaluate = ["eval", "--bag", str(bag), "--policy", str(policies_dir() / "cfc_ncp_rover.pt"), "--no-progress"]
    hint = (
        "/camera/image_raw/compressed: compressed images, which policy_node does not subscribe to (it reads raw "
        "sensor_msgs/msg/Image, no image_transport): record the raw image topic"
    )
    for topic in ([], ["--topic", "camera=/camera/image_raw/compressed"]):
        assert cli.main([*evaluate, *topic, "--out", str(tmp_path / "offline")]) == 2
        err = capsys.readouterr().err
        assert f"liquid-control eval: error: {bag}: " in err and hint in err, err
    assert not (tmp_path / "offline").exists()


def _unlabelled(path, commands: bool):
    """``FRAMES`` 64x64 frames at 20 Hz; /cmd_vel recorded but empty (``commands`` False: the operator never
    commanded), or its commands all 2 s after the frames (a teleop machine's clock 2 s ahead of the recorder's)."""
    with BagWriter(path) as bag:
        bag.add_topic("/cmd_vel", "geometry_msgs/msg/Twist")
        for k in range(FRAMES):
            t = 100.0 + 0.05 * k
            bag.write("/camera/image_raw", int(t * 1e9), image_message(np.full((64, 64, 3), k, np.uint8), t))
        for k in range(FRAMES if commands else 0):
            bag.write("/cmd_vel", int((102.5 + 0.05 * k) * 1e9), twist_message(0.5, 0.1))
    return path


def test_eval_refuses_a_bag_with_no_labelled_update_naming_why_instead_of_reporting_nan(tmp_path, capsys):
    """Before: `eval --bag` of a bag whose /cmd_vel holds no command, or no command within max_wait_s of an update,
    wrote a report of "0 labelled updates ... loss nan" and exited 0 (training refuses or skips such a bag); training
    said only "no labelled update ({...})" for the late commands, with no cause."""
    silent, late = _unlabelled(tmp_path / "silent", False), _unlabelled(tmp_path / "late", True)
    evaluate = ["eval", "--policy", str(policies_dir() / "cfc_ncp_rover.pt"), "--no-progress"]
    out = tmp_path / "offline"
    assert cli.main([*evaluate, "--bag", str(silent), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{silent}: no labelled update to compare the policy's commands with" in err, err
    assert "no command on /cmd_vel (set --command-topic)" in err and not out.exists()
    late_hint = (
        f"none of the {FRAMES} commands on /cmd_vel came within max_wait_s (0.5 s) of an update's log time + "
        "offset_s (0 s) by the label rule 'next' (--label, --label-offset-s, --label-max-wait-s)"
    )
    assert cli.main([*evaluate, "--bag", str(late), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{late}: no labelled update to compare" in err and late_hint in err and not out.exists(), err
    train = ["train", "--config", "policies/configs/cfc_ncp_rover.yaml", "--no-progress", "--bag", str(late)]
    assert cli.main([*train, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"train bag 1/1: {late}: no labelled update" in err and late_hint in err, err
    assert cli.main([*evaluate, "--bag", str(late), "--label-max-wait-s", "3", "--out", str(out)]) == 0
    assert "10 labelled updates" in capsys.readouterr().out


def test_the_training_log_counts_segments_between_resets_not_the_windows_cut_from_them(tmp_path, capsys):
    """Before: a gap-free drive cut into windows of `data.window` updates was logged as "in 3 segment(s)", which
    docs/real_robot.md calls the stretches between resets: a user read resets the bag does not have."""
    bag = _drive(tmp_path / "drive")
    argv = ["train", "--config", "policies/configs/cfc_ncp_rover.yaml", "--bag", str(bag), "--no-progress"]
    argv += ["--set", "data.window=4", "--set", "training.epochs_first=1", "--out", str(tmp_path / "run")]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err  # the training log
    assert f"train bag drive: {FRAMES} updates ({FRAMES} labelled) in 1 segment(s) (3 windows of at most 4 " in err
