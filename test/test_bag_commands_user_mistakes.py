"""The real-robot loop met as a user meets it (docs/real_robot.md sections 2-5): mistakes a robotics user makes
with the bag commands, each answered by a clear message and nothing done lost."""

import math
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

from liquid_control import cli
from liquid_control.bags import BagError, BagReader, BagWriter
from liquid_control.bags.messages import image_message, twist_message
from liquid_control.ros.testing import free_domain_id
from liquid_control.training.bag_data import validate_data

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
    assert f"{out} is a complete bag holding what was recorded until then: /cmd_vel 0" in err
    assert "Traceback" not in err
    with BagReader(out) as reader:  # complete: opens without --allow-truncated
        assert not reader.salvaged  # (no node ran here: nothing to record)


def test_a_second_ctrl_c_while_the_output_bag_is_finished_does_not_cut_it_short(tmp_path, capfd, monkeypatch):
    """Before: a second Ctrl-C (or SIGTERM) while the recorder finished the output bag escaped the replay, left
    the bag without footer and metadata.yaml, and the replay said 'interrupted before the playback began; nothing
    recorded'."""
    import time

    from liquid_control.ros.recorder_node import BagRecorderNode
    from liquid_control.ros.replay import Replay

    handler_before = signal.getsignal(signal.SIGINT)  # SIG_IGN in a background job, the default otherwise
    bag, out = _small_bag(tmp_path / "run_018"), tmp_path / "replayed"
    original_play, original_close = Replay.play, BagRecorderNode.close

    def play_then_ctrl_c(self, reader, rate, stop, max_gap_s=math.inf):
        original_play(self, reader, rate, stop, max_gap_s)
        raise KeyboardInterrupt

    def close_after_another_ctrl_c(self):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)  # the handler runs here
        return original_close(self)

    monkeypatch.setattr(Replay, "play", play_then_ctrl_c)
    monkeypatch.setattr(BagRecorderNode, "close", close_after_another_ctrl_c)
    argv = ["replay", str(bag), "-o", str(out), "--wait", "0", "--linger", "0", "--rate", "20"]
    assert cli.main([*argv, "--domain-id", str(free_domain_id())]) == 130
    err = capfd.readouterr().err
    assert f"replay: finishing {out} first" in err, err
    assert f"{out} is a complete bag holding what was recorded until then" in err, err
    assert "nothing recorded" not in err
    assert signal.getsignal(signal.SIGINT) is handler_before  # the handler restored
    with BagReader(out) as reader:
        assert not reader.salvaged


def test_an_interrupt_escaping_while_the_output_bag_is_finished_names_it_and_the_recovery(
    tmp_path, capsys, monkeypatch
):
    """Where an interrupt still escapes the bag's close (before the replay could defer it), the message names the
    unfinished output bag and `record --recover`, not 'nothing recorded'."""
    from liquid_control.ros.recorder_node import BagRecorderNode

    bag, out = _small_bag(tmp_path / "run_019"), tmp_path / "replayed"

    def interrupted_close(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(BagRecorderNode, "close", interrupted_close)
    argv = ["replay", str(bag), "-o", str(out), "--wait", "0", "--linger", "0", "--rate", "20"]
    assert cli.main([*argv, "--domain-id", str(free_domain_id())]) == 130
    err = capsys.readouterr().err
    assert f"interrupted while {out} was being finished: it is left unfinished" in err, err
    assert f"liquid-control record --recover {out} -o <new bag>" in err and "nothing recorded" not in err


@pytest.fixture(scope="module")
def two_days(tmp_path_factory):
    """day1/run_001 and day2/run_001: two different 1 s expert drives at the shipped policy's 64x64 pixels,
    named as a team names its recordings day after day."""
    from liquid_control.bags.expert import record_expert_episodes

    root = tmp_path_factory.mktemp("days")
    for day, seed in (("day1", 100), ("day2", 101)):
        (outcome,) = record_expert_episodes(root / f"{day}_raw", [seed], render_size=64, time_limit=1.0)
        (root / day).mkdir()
        os.replace(outcome["bag"], root / day / "run_001")
    return root


def test_eval_keeps_apart_two_bags_of_the_same_name_and_refuses_one_bag_given_twice(two_days, tmp_path, capsys):
    """Before: day1/run_001 and day2/run_001 were both reported as `run_001` and shared plots/NAME__run_001.png,
    the second overwriting the first; `--bag 'day1/*' --bag day1/run_001` reported the bag's row once but pooled
    its updates twice (120 labelled pooled against 60 in its row)."""
    from liquid_control.paths import policies_dir

    shipped = f"robot={policies_dir() / 'cfc_ncp_rover.pt'}"
    day1, day2 = str(two_days / "day1" / "run_001"), str(two_days / "day2" / "run_001")
    out = tmp_path / "offline"
    assert (
        cli.main(["eval", "--bag", day1, "--bag", day2, "--policy", shipped, "--out", str(out), "--no-progress"]) == 0
    )
    capsys.readouterr()
    assert sorted(p.name for p in (out / "plots").iterdir()) == ["robot__day1__run_001.png", "robot__day2__run_001.png"]
    report = (out / "report.md").read_text()
    assert "| robot | day1/run_001 |" in report and "| robot | day2/run_001 |" in report
    twice = tmp_path / "twice"
    argv = ["eval", "--bag", str(two_days / "day1" / "*"), "--bag", day1, "--policy", shipped, "--no-progress"]
    assert cli.main([*argv, "--out", str(twice)]) == 2
    err = capsys.readouterr().err
    given = f"by '{two_days / 'day1' / '*'}' and '{day1}'"
    assert f"--bag {day1}: one bag given twice ({given}): its updates would count twice" in err, err
    assert "Traceback" not in err and not twice.exists()
    link = tmp_path / "same_as_day2"
    link.symlink_to(day2)  # another path to the same bag
    assert cli.main(["eval", "--bag", day2, "--bag", str(link), "--policy", shipped, "--out", str(twice)]) == 2
    assert f"--bag {os.path.realpath(day2)}: one bag given twice (by '{day2}' and '{link}')" in capsys.readouterr().err


def test_train_refuses_a_validation_bag_that_copies_a_training_bag_and_a_bag_given_twice(two_days, tmp_path, capsys):
    """Before: a held-out bag that is a copy of a training bag (`cp -r day1/run_001 heldout/`) trained and selected
    the policy on its own training data without a word, and `--bag 'day1/*' --bag day1/run_001` trained on that
    bag twice."""
    import shutil

    day1, day2 = two_days / "day1" / "run_001", two_days / "day2" / "run_001"
    heldout = tmp_path / "heldout" / "run_017"
    shutil.copytree(day1, heldout)
    train = ["train", "--config", "policies/configs/cfc_ncp_rover.yaml", "--no-progress"]
    out = tmp_path / "run"
    assert cli.main([*train, "--bag", str(two_days / "day*" / "*"), "--val-bag", str(heldout), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--val-bag: {heldout} holds the same recording as the training bag {day1} (a copy)" in err, err
    assert "Traceback" not in err and not out.exists()
    # the copy among the training bags: trained twice before (an audit of bag conversion)
    assert cli.main([*train, "--bag", str(day1), "--bag", str(heldout), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--bag: {heldout} holds the same recording as {day1} (a copy): its updates would count twice" in err, err
    assert cli.main([*train, "--bag", str(day1), "--val-bag", str(day1), "--out", str(out)]) == 2
    assert f"--bag, --val-bag: bag(s) ['{day1}'] are both training and validation bags" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"^data\.validation: .* holds the same recording"):  # a config's data:
        validate_data({"bags": [str(day1)], "validation": [str(heldout)]})
    from liquid_control.training import TrainingError, bag_data

    with pytest.raises(TrainingError, match=r"^--bag .*nothere: no such bag"):  # train()'s error, as for a wrong key
        bag_data.resolve("policies/configs/cfc_ncp_rover.yaml", {"bags": [str(tmp_path / "nothere")]}, out)
    assert cli.main([*train, "--bag", str(two_days / "day1" / "*"), "--bag", str(day1), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--bag {day1}: one bag given twice (by '{two_days / 'day1' / '*'}' and '{day1}')" in err, err
    assert not out.exists()
    # a different recording of the same size is held out as asked (sizes equal, bytes not)
    other = tmp_path / "other" / "run_018"
    shutil.copytree(day2, other)
    (mcap,) = other.glob("*.mcap")
    data = bytearray(mcap.read_bytes())
    data[-100] ^= 0xFF  # in the summary section: same size, another file
    mcap.write_bytes(bytes(data))
    section = validate_data({"bags": [str(day1), str(day2)], "validation": [str(other)]})
    assert section["validation"] == [str(other)]


def test_a_bag_whose_camera_is_under_another_name_says_which_option_reads_it(tmp_path, capsys):
    """Before: "no topic /camera/image_raw in the bag; it has ... /front/image_raw (sensor_msgs/msg/Image, 10)",
    without the option (--topic camera=...) that reads it from there; a folder of bags given as one bag
    (`--bag bags/day1` for `bags/day1/*`) was "not a rosbag2 bag" without a word of the bags inside it."""
    from liquid_control.paths import policies_dir

    bag = tmp_path / "robot"
    with BagWriter(bag) as writer:
        for k in range(FRAMES):
            t = 100.0 + 0.05 * k
            writer.write("/front/image_raw", int(t * 1e9), image_message(np.zeros((64, 64, 3), np.uint8), t))
            writer.write("/teleop/cmd_vel", int(t * 1e9) + 1_000_000, twist_message(0.5, 0.1))
    shipped = str(policies_dir() / "cfc_ncp_rover.pt")
    evaluate = ["eval", "--policy", shipped, "--no-progress", "--out", str(tmp_path / "offline")]
    assert cli.main([*evaluate, "--bag", str(bag)]) == 2
    err = capsys.readouterr().err
    assert "no topic /camera/image_raw in the bag" in err
    assert "to read the camera from /front/image_raw, give --topic camera=/front/image_raw" in err, err
    # ... and the command topic in the same error (a probe of a fleet: before, one run per missing topic)
    assert "; and " in err and "give --command-topic /teleop/cmd_vel" in err, err
    assert cli.main([*evaluate, "--bag", str(bag), "--topic", "camera=/front/image_raw"]) == 2
    err = capsys.readouterr().err
    assert "no topic /cmd_vel in the bag" in err
    assert (
        "to read the labels (the operator's commands) from /teleop/cmd_vel, give --command-topic /teleop/cmd_vel" in err
    )
    argv = [*evaluate, "--bag", str(bag), "--topic", "camera=/front/image_raw", "--command-topic", "/teleop/cmd_vel"]
    assert cli.main(argv) == 0
    capsys.readouterr()
    assert cli.main(["record", "--info", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path}: not a rosbag2 bag: no metadata.yaml and no .mcap or .db3 file in it; it holds 1 " in err
    # the folder holds eval's report (offline/) beside the bag: a glob would name it too, so the hint names the bag
    assert f"bag(s) beside other files: give {bag}" in err, err
    # as the hint says (before: `record --info 'DIR/*'` and `replay 'DIR/*'` were 'no such bag')
    day = tmp_path / "day"
    shutil.copytree(bag, day / "robot")
    assert cli.main(["record", "--info", str(day)]) == 2  # a folder of bags alone: the glob
    assert f"it is a folder of 1 bag(s) (robot): give them as '{day / '*'}'" in capsys.readouterr().err
    assert cli.main(["record", "--info", str(day / "*")]) == 0
    assert "/front/image_raw" in capsys.readouterr().out
    replay = ["replay", str(day / "*"), "-o", str(tmp_path / "replayed"), "--record", "/policy/cmd_vel"]
    replay += ["--wait", "0", "--linger", "0.1", "--rate", "100", "--domain-id", str(free_domain_id())]
    assert cli.main(replay) == 1  # no node here: nothing recorded, but the bag was played
    out = capsys.readouterr().out
    assert "recorded /policy/cmd_vel 0; published /front/image_raw " in out
    once = int(out.split("published /front/image_raw ")[1].split()[0].strip(",;"))
    # a bag named twice plays twice (before: refused, 'its updates would count twice', training's reason)
    replay[2:4] = [str(day / "robot"), "-o", str(tmp_path / "replayed_twice")]
    assert cli.main(replay) == 1
    assert f"published /front/image_raw {2 * once}" in capsys.readouterr().out


def test_a_bag_given_as_its_metadata_yaml_or_another_file_is_refused_naming_the_folder(tmp_path, capsys):
    """Before: `record --info run_017/metadata.yaml` (a shell's completion) and eval --bag, replay and train of it
    said "cannot open the bag: ReaderError: Unrecognized storage format '.yaml'", rosbags' words, without the
    folder that is the bag."""
    bag = _small_bag(tmp_path / "run_017")
    assert cli.main(["record", "--info", str(bag / "metadata.yaml")]) == 2
    err = capsys.readouterr().err
    assert f"{bag / 'metadata.yaml'}: the bag's metadata, not the bag: give its folder, {bag}" in err, err
    assert "ReaderError" not in err
    notes = tmp_path / "notes.txt"
    notes.write_text("run 17: gravel\n")
    assert cli.main(["record", "--info", str(notes)]) == 2
    err = capsys.readouterr().err
    assert f"{notes}: not a bag's storage file (.mcap, .db3): give the bag's folder, or its .mcap or .db3 file" in err
    compressed = tmp_path / "run_018" / "run_018_0.mcap.zstd"  # ros2 bag record --compression-mode file
    compressed.parent.mkdir()
    compressed.write_bytes(b"(\xb5/\xfd")
    assert cli.main(["record", "--info", str(compressed)]) == 2
    err = capsys.readouterr().err
    assert f"{compressed}: a file-compressed storage file, read only through its bag's folder" in err, err
    assert f"give {compressed.parent}" in err
    assert cli.main(["record", "--info", str(bag)]) == 0  # the folder, as before


def test_a_data_section_run_from_another_folder_says_its_bags_are_relative_to_the_working_directory(
    tmp_path, monkeypatch, capsys
):
    """Before: a project's my_robot.yaml with `data: bags: [bags/run_*]`, trained from its subfolder
    (`train --config ../my_robot.yaml`), said only "data.bags: 'bags/run_*' matches no bag": where it looked was
    left unsaid, and the bags are there, beside the config."""
    from liquid_control.paths import policies_dir

    project = tmp_path / "project"
    _small_bag(project / "bags" / "run_001")
    config = project / "my_robot.yaml"
    config.write_text((policies_dir() / "configs" / "cfc_ncp_rover.yaml").read_text() + "data:\n  bags: [bags/run_*]\n")
    (project / "scripts").mkdir()
    monkeypatch.chdir(project / "scripts")
    assert cli.main(["train", "--config", "../my_robot.yaml", "--out", "run", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "data.bags: 'bags/run_*' matches no bag" in err, err
    assert f"(a data: path is relative to the working directory, {project / 'scripts'})" in err, err
    assert not (project / "scripts" / "run").exists()
    capsys.readouterr()
    assert cli.main(["train", "--config", str(config), "--bag", "bags/nothere", "--out", "run"]) == 2
    assert "working directory" not in capsys.readouterr().err  # typed on the command line, where the user is


def test_a_bag_whose_storage_file_was_renamed_is_refused_naming_the_folder_and_both_files(tmp_path, capsys):
    """Before: run_001/run_001.mcap renamed to run_001/x.mcap (metadata.yaml naming the old file) was refused by
    record --info, eval --bag and train --bag in rosbags' words, "cannot open the bag: ReaderError: Some database
    files are missing", naming neither the file that is there nor what to do."""
    from liquid_control.paths import policies_dir

    bag = _small_bag(tmp_path / "run_001")
    (bag / "run_001.mcap").rename(bag / "x.mcap")
    words = (
        f"{bag}: its metadata.yaml lists run_001.mcap, missing from the folder (storage files there: x.mcap): a "
        "storage file renamed or not copied; give it back the name metadata.yaml lists, or copy it in"
    )
    shipped = str(policies_dir() / "cfc_ncp_rover.pt")
    config = str(policies_dir() / "configs" / "cfc_ncp_rover.yaml")
    for argv in (
        ["record", "--info", str(bag)],
        ["eval", "--policy", shipped, "--no-progress", "--out", str(tmp_path / "offline"), "--bag", str(bag)],
        ["train", "--config", config, "--no-progress", "--out", str(tmp_path / "run"), "--bag", str(bag)],
    ):
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert words in err and "ReaderError" not in err, (argv, err)
    (bag / "x.mcap").unlink()
    with pytest.raises(BagError, match=r"run_001.mcap, missing from the folder \(no storage file there\)"):
        BagReader(bag)


@pytest.mark.parametrize("kind", ["link to /dev/zero", "fifo"])
def test_a_listed_storage_file_that_is_no_regular_file_is_refused_as_such_not_as_missing(tmp_path, capsys, kind):
    """Before: a bag whose .mcap was a link to /dev/zero, or a FIFO, was refused as "missing from the folder", the
    file being there."""
    bag = _small_bag(tmp_path / "run_001")
    (bag / "run_001.mcap").unlink()
    if kind == "fifo":
        os.mkfifo(bag / "run_001.mcap")
        what = "a FIFO"
    else:
        (bag / "run_001.mcap").symlink_to("/dev/zero")
        what = f"a link to {Path('/dev/zero').resolve()}, a character device"
    words = (
        f"{bag}: its metadata.yaml lists run_001.mcap, which is not a regular file but {what}: a storage file must be "
        "a file (or a link to one)"
    )
    with pytest.raises(BagError) as refused:
        BagReader(bag)
    assert str(refused.value) == words
    assert cli.main(["record", "--info", str(bag)]) == 2
    assert words in capsys.readouterr().err


@pytest.mark.parametrize("written", ["../outside/run_001.mcap", "/etc/passwd"])
def test_a_listed_storage_file_elsewhere_is_named_as_metadata_yaml_writes_it(tmp_path, written):
    """A metadata.yaml listing a path out of the folder is read by its name in the folder (rosbags' rule); where
    that is missing, the refusal named the basename alone ('lists passwd'), not what metadata.yaml says."""
    bag = _small_bag(tmp_path / "run_001")
    (bag / "run_001.mcap").rename(bag / "x.mcap")
    metadata = bag / "metadata.yaml"
    metadata.write_text(metadata.read_text().replace("- run_001.mcap", f"- {written}"))
    name = Path(written).name
    with pytest.raises(BagError) as refused:
        BagReader(bag)
    assert str(refused.value).startswith(
        f"{bag}: its metadata.yaml lists {written} (read as {name} in the bag's folder), missing from the folder "
        "(storage files there: x.mcap)"
    )


def test_a_storage_file_metadata_yaml_does_not_list_is_named_and_left_out_of_the_bags_sha256(tmp_path):
    """Before: a second recording's .mcap copied into run_001 (its metadata.yaml listing run_001.mcap alone) was
    not read, without a word, yet counted in the bag's SHA-256 (the training record's name of the recording):
    the same recording was two bags there, and a file the user meant to train on was left out unsaid."""
    import hashlib

    from liquid_control.bags.io import bag_given_twice, bag_sha256

    bag = _small_bag(tmp_path / "run_001")
    recorded = hashlib.sha256((bag / "run_001.mcap").read_bytes()).hexdigest()  # `sha256sum run_001/*.mcap`
    assert bag_sha256(bag) == recorded  # a bag without a stray file: as it always was
    other = _small_bag(tmp_path / "run_002", frames=FRAMES + 3)
    (other / "run_002.mcap").rename(bag / "extra.mcap")
    assert bag_sha256(bag) == recorded
    with pytest.warns(UserWarning) as warned, BagReader(bag, sha256=True) as reader:
        assert reader.message_count == 2 * FRAMES  # what metadata.yaml lists, not the extra file's
        assert sum(1 for _ in reader.messages()) == 2 * FRAMES
        assert reader.recorded_sha256() == recorded
    (said,) = [str(w.message) for w in warned]
    assert said.startswith(f"{bag}: extra.mcap not listed in its metadata.yaml, so not read (the bag is run_001.mcap)")
    assert "give it as a bag of its own" in said and "move metadata.yaml out" in said
    # the folder does not read it: the folder and the file are two bags, not one given twice
    assert bag_given_twice([(bag, str(bag)), (bag / "extra.mcap", str(bag / "extra.mcap"))]) is None
