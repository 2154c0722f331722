"""Split bags written as `ros2 bag record --max-bag-size/--max-bag-duration` writes them: <bag>_0.mcap, <bag>_1.mcap
..., each file whole and readable alone, metadata.yaml listing them all (BagWriter, `liquid-control record`, the
bag_recorder node and record.launch.py). Before, a recording of hours was one file however large."""

import argparse
import re
import shutil
import threading

import numpy as np
import pytest
import yaml
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

from liquid_control.bags import BagError, BagReader, BagWriter
from liquid_control.bags.io import qos_dict, typestore

LATCHED = Qos(
    QosHistory.KEEP_LAST,
    1,
    QosReliability.RELIABLE,
    QosDurability.TRANSIENT_LOCAL,
    QosTime(0, 0),
    QosTime(0, 0),
    QosLiveliness.AUTOMATIC,
    QosTime(0, 0),
    False,
)


def _messages(n: int = 120):
    """(topic, log time, message): imu at 10 Hz, commands beside it, a latched status, and a topic that first
    appears half way (so after the first files were finished)."""
    types = typestore().types
    Imu, Twist, String = types["sensor_msgs/msg/Imu"], types["geometry_msgs/msg/Twist"], types["std_msgs/msg/String"]
    Vector3, Header = types["geometry_msgs/msg/Vector3"], types["std_msgs/msg/Header"]
    Time, Quaternion = types["builtin_interfaces/msg/Time"], types["geometry_msgs/msg/Quaternion"]
    Float64 = types["std_msgs/msg/Float64"]
    out = [("/episode_status", 0, String(data="running"))]
    for i in range(n):
        t = 1_700_000_000_000_000_000 + i * 100_000_000
        measured = t - 5_000_000  # the sensor's stamp, 5 ms before the recorder received it
        stamp = Header(stamp=Time(sec=measured // 10**9, nanosec=measured % 10**9), frame_id="imu")
        cov = np.zeros(9)
        imu = Imu(
            stamp, Quaternion(0.0, 0.0, 0.0, 1.0), cov, Vector3(0.0, 0.0, 0.1 * i), cov, Vector3(i, 0.0, 9.8), cov
        )
        out.append(("/imu/data", t, imu))
        out.append(("/cmd_vel", t + 1_000_000, Twist(Vector3(0.01 * i, 0.0, 0.0), Vector3(0.0, 0.0, -0.01 * i))))
        if i >= n // 2:
            out.append(("/late", t + 2_000_000, Float64(data=float(i))))
    return out


@pytest.fixture
def small_files(monkeypatch):
    """Files of a few kB: the splitting is the same at any size, and these tests' recordings are tens of kB (a
    recording is refused a size below io.MIN_BAG_SIZE, test_split_limits_below_the_minimum_are_refused...)."""
    from liquid_control.bags import io

    monkeypatch.setattr(io, "MIN_BAG_SIZE", 1000)


def _write(path, messages, **split) -> BagWriter:
    writer = BagWriter(path, **split)
    writer.add_topic("/episode_status", "std_msgs/msg/String", [LATCHED])
    writer.add_topic("/imu/data", "sensor_msgs/msg/Imu")
    writer.add_topic("/cmd_vel", "geometry_msgs/msg/Twist")
    for topic, t, message in messages:
        writer.write(topic, t if t else messages[1][1] - 1, message)
    return writer


def _read(bag) -> list:
    with BagReader(bag) as reader:
        return [(m.topic, m.log_time_ns, bytes(m.data)) for m in reader.messages()]


def test_a_tiny_max_bag_size_splits_into_files_each_whole_and_read_alone_and_the_bag_reads_as_unsplit(
    tmp_path, small_files
):
    from mcap.reader import make_reader
    from rosbags.rosbag2 import Reader

    messages = _messages()
    whole = _write(tmp_path / "whole", messages).close()
    bag = _write(tmp_path / "split", messages, max_bag_size=4000).close()
    names = sorted(p.name for p in bag.iterdir())
    files = [f"split_{i}.mcap" for i in range(len(names) - 1)]
    assert len(files) >= 4 and names == sorted([*files, "metadata.yaml"])

    info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["version"] == 9 and info["storage_identifier"] == "mcap"
    assert info["relative_file_paths"] == files == [entry["path"] for entry in info["files"]]
    assert info["message_count"] == len(messages) == sum(entry["message_count"] for entry in info["files"])
    topics = {t["topic_metadata"]["name"]: t for t in info["topics_with_message_count"]}
    assert topics["/late"]["message_count"] == 60
    assert topics["/episode_status"]["topic_metadata"]["offered_qos_profiles"][0]["durability"] == "transient_local"

    every = []
    for name, entry in zip(files, info["files"], strict=True):
        # the mcap library alone: a whole, indexed file with every channel added before it was opened
        with open(bag / name, "rb") as handle:
            reader = make_reader(handle)
            summary = reader.get_summary()
            channels = {c.topic: c for c in summary.channels.values()}
            assert {"/episode_status", "/imu/data", "/cmd_vel"} <= set(channels)
            assert "transient_local" in channels["/episode_status"].metadata["offered_qos_profiles"]
            raw = [(c.topic, m.log_time, m.data) for _, c, m in reader.iter_messages(log_time_order=False)]
        assert summary.statistics.message_count == entry["message_count"] == len(raw)
        assert entry["starting_time"]["nanoseconds_since_epoch"] == min(t for _, t, _ in raw)
        every += raw
        # rosbags alone (the file, not the folder), and our reader: the file in a folder of its own
        with Reader(bag / name) as alone:
            assert {c.topic for c in alone.connections} >= {"/episode_status", "/imu/data", "/cmd_vel"}
            assert sorted((c.topic, t, bytes(d)) for c, t, d in alone.messages()) == sorted(raw)
        folder = tmp_path / "alone" / name[: -len(".mcap")]
        folder.mkdir(parents=True)
        shutil.copyfile(bag / name, folder / f"{folder.name}.mcap")
        assert sorted(_read(folder)) == sorted(raw)
    assert sorted(every) == sorted(_read(whole))

    # the whole bag: the same messages in the same order, log times, bytes and QoS as the unsplit one
    assert _read(bag) == _read(whole)
    with Reader(bag) as rosbags_reader, Reader(whole) as unsplit:
        assert [(c.topic, t, bytes(d)) for c, t, d in rosbags_reader.messages()] == [
            (c.topic, t, bytes(d)) for c, t, d in unsplit.messages()
        ]
    with BagReader(bag) as ours:
        assert qos_dict(ours.topics["/episode_status"].qos[0])["durability"] == "transient_local"
        assert {t: i.count for t, i in ours.topics.items()} == {t: i["message_count"] for t, i in topics.items()}
        decoded = [m.decode() for m in ours.messages(["/imu/data"])]
    assert [m.linear_acceleration.x for m in decoded] == list(range(120))
    assert decoded[7].header.stamp.nanosec == 700_000_000 - 5_000_000


def test_max_bag_duration_splits_by_log_time(tmp_path):
    messages = _messages(40)  # 4 s of recording
    bag = _write(tmp_path / "bag", messages, max_bag_duration=1.0).close()
    info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["relative_file_paths"] == [f"bag_{i}.mcap" for i in range(4)]
    assert all(entry["duration"]["nanoseconds"] < 1_000_000_000 for entry in info["files"])
    # a second each: the latched status, 10 IMU readings and 10 commands; then /late joins half way
    assert [entry["message_count"] for entry in info["files"]] == [21, 20, 30, 30]
    assert _read(bag) == _read(_write(tmp_path / "whole", messages).close())


def test_a_recorder_killed_leaves_its_finished_files_whole(tmp_path, small_files):
    from mcap.reader import make_reader

    messages = _messages()
    writer = _write(tmp_path / "bag", messages, max_bag_size=4000)
    writer.abort()  # a SIGKILL: the open file is cut, no metadata.yaml
    finished = writer.files  # (what a split held back while the file before was being finished written first)
    assert len(finished) >= 3 and not (tmp_path / "bag" / "metadata.yaml").exists()
    for path in finished:
        with open(path, "rb") as handle:
            assert make_reader(handle).get_summary().statistics.message_count > 0
    with BagReader(tmp_path / "bag", allow_truncated=True) as salvaged:
        kept = [(m.topic, m.log_time_ns, bytes(m.data)) for m in salvaged.messages()]
    counted = sum(1 for path in finished for _ in make_reader(open(path, "rb")).iter_messages())
    assert len(kept) >= counted and kept == _read(_write(tmp_path / "whole", messages).close())[: len(kept)]


@pytest.mark.parametrize(
    ("split", "named"),
    [
        ({"max_bag_size": -1}, "max_bag_size: must be a whole number of bytes, 0 or more (0: no split), got -1"),
        ({"max_bag_size": 2.5}, "max_bag_size: must be a whole number of bytes"),
        ({"max_bag_size": "4G"}, "max_bag_size: must be a whole number of bytes"),
        ({"max_bag_duration": -1.0}, "max_bag_duration: must be a number of seconds, 0 or more"),
        ({"max_bag_duration": float("nan")}, "max_bag_duration: must be a number of seconds"),
    ],
)
def test_bad_split_limits_are_refused_naming_them_before_the_bag_is_made(tmp_path, split, named):
    with pytest.raises(BagError, match="^" + named.replace("(", r"\(").replace(")", r"\)")):
        BagWriter(tmp_path / "bag", **split)
    assert not (tmp_path / "bag").exists()


def test_zero_is_no_split(tmp_path):
    bag = _write(tmp_path / "bag", _messages(5), max_bag_size=0, max_bag_duration=0).close()
    assert sorted(p.name for p in bag.iterdir()) == ["bag.mcap", "metadata.yaml"]


@pytest.mark.parametrize(
    ("option", "given", "limit", "refused"),
    [
        ("--max-bag-size", "4", {"max_bag_size": 4}, "4 bytes is below the smallest split size, 1048576 (1MiB)"),
        ("--max-bag-size", "1048575", {"max_bag_size": 2**20 - 1}, "1048575 bytes is below the smallest split size"),
        ("--max-bag-size", "1M", {"max_bag_size": 10**6}, "1000000 bytes is below the smallest split size"),
        ("--max-bag-duration", "0.5", {"max_bag_duration": 0.5}, "0.5 s is below the shortest split duration, 1 s"),
    ],
)
def test_split_limits_below_the_minimum_are_refused_naming_the_option_and_the_minimum(
    tmp_path, capsys, option, given, limit, refused
):
    """Before: any limit was taken: `--max-bag-size 4` (or `-p max_bag_size:=4`) wrote a file per message, each
    finished and fsynced on its own (rosbag2 refuses a size below its storage's minimum too). The option, BagWriter
    (and so the recorder node, test_bags_ros) refuse it, naming it and the minimum; the minimum itself is taken."""
    from liquid_control.bags import io
    from liquid_control.ros.recorder_node import add_arguments

    parser = argparse.ArgumentParser(prog="liquid-control record")
    add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args([option, given])
    assert f"argument {option}: '{given}': {refused}" in capsys.readouterr().err
    (name,) = limit
    with pytest.raises(BagError, match="^" + re.escape(f"{name}: {refused}")):
        BagWriter(tmp_path / "bag", **limit)
    assert not (tmp_path / "bag").exists()
    smallest = io.MIN_BAG_SIZE if name == "max_bag_size" else io.MIN_BAG_DURATION_S
    assert BagWriter(tmp_path / "bag", **{name: smallest}).close().is_dir()


def test_record_options_take_sizes_and_seconds_and_refuse_bad_ones_naming_the_option(capsys):
    from liquid_control.ros.recorder_node import add_arguments, record_graph

    parser = argparse.ArgumentParser(prog="liquid-control record")
    add_arguments(parser)
    for given, size in [("4G", 4 * 10**9), ("500M", 500 * 10**6), ("2GiB", 2 * 1024**3), ("1048576", 2**20), ("0", 0)]:
        assert parser.parse_args(["--max-bag-size", given]).max_bag_size == size
    assert parser.parse_args(["--max-bag-duration", "600"]).max_bag_duration == 600.0
    assert parser.parse_args(["--repeat-latched"]).repeat_latched and not parser.parse_args([]).repeat_latched
    for option, bad in [("--max-bag-size", "4KB"), ("--max-bag-size", "-1"), ("--max-bag-duration", "-3")]:
        with pytest.raises(SystemExit):
            parser.parse_args([option, bad])
        assert f"argument {option}: '{bad}' is not a" in capsys.readouterr().err

    (node,) = record_graph(
        output="bags/x", topics=["/imu/data"], max_bag_size=4 * 10**9, max_bag_duration=600, repeat_latched=True
    )
    assert node.parameters["max_bag_size"] == 4 * 10**9 and node.parameters["max_bag_duration"] == 600.0
    assert node.parameters["repeat_latched"] is True


def _timed(messages):
    """The messages with the latched status's log time (0 in _messages) just before the first reading's."""
    return iter([(topic, t if t else messages[1][1] - 1, message) for topic, t, message in messages])


def _write_until_split(writer: BagWriter, stream, files: int):
    """Write from ``stream`` until ``writer`` has ``files`` files; returns the BagError a write raised, if any."""
    for topic, t, message in stream:
        try:
            writer.write(topic, t, message)
        except BagError as exc:
            return exc
        if len(writer.files) == files:
            return None
    raise AssertionError(f"no split into {files} files")


def test_a_full_disk_cutting_a_split_bags_file_counts_what_it_lost_and_writes_nothing_past_the_cut(
    tmp_path, small_files
):
    """A file of a split bag that cannot be finished (its chunk, held in memory until the split, written at a full
    disk: `ulimit -f` here, EFBIG) is cut there: the messages write() took into it are counted lost with the write
    (``cut``, ``unwritten``), and the writer writes nothing more past the cut (before: they were counted nowhere,
    and later writes were taken into the file past the cut, where no reader of it gets)."""
    import resource

    writer, stream = _write(tmp_path / "bag", [], max_bag_size=4000), _timed(_messages())
    taken: dict = {}
    for topic, t, message in stream:  # into the second file, its chunk still in memory
        assert writer.write(topic, t, message)
        taken[topic] = taken.get(topic, 0) + 1
        if len(writer.files) == 2:
            break
    writer._wait_finished()  # the first file's CRCs and fsync done, under no limit
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, hard))
    try:
        for topic, t, message in stream:
            try:
                assert writer.write(topic, t, message)
            except BagError as exc:
                failed = exc
                break
            taken[topic] = taken.get(topic, 0) + 1
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert str(failed) == f"{tmp_path / 'bag'}: cannot write to the bag: File too large"
    with pytest.raises(BagError, match="a write before failed \\(File too large\\)"):
        writer.write(topic, t, message)
    with pytest.raises(BagError) as refused:
        writer.close()
    assert str(refused.value) == (
        f"{tmp_path / 'bag'}: cannot finish the bag: a write to it failed (File too large), cutting bag_1.mcap there; "
        "the files before it are finished"
    )
    with BagReader(tmp_path / "bag", allow_truncated=True) as reader:  # the first file, whole
        kept = {topic: info.count for topic, info in reader.topics.items()}
    assert 0 < sum(kept.values()) < sum(taken.values())
    lost = {topic: n - kept.get(topic, 0) for topic, n in taken.items() if n > kept.get(topic, 0)}
    assert writer.unwritten == writer.cut == lost and not writer.dropped and writer.write_failure == "File too large"


def test_a_split_that_fails_leaves_a_bag_that_close_finishes_or_refuses_naming_it(tmp_path, monkeypatch, small_files):
    """Before: a split whose next file could not be opened (the bag folder removed, as the recorder's write
    failure names) or whose finished file could not be fsynced (a USB stick pulled) left the writer on the closed
    file, so close(), which the recorder calls next, failed with 'ValueError: I/O operation on closed file' (a
    traceback, no metadata.yaml) instead of finishing the bag or saying why not."""
    from mcap.reader import make_reader

    from liquid_control.bags import io

    messages = _messages()
    writer, stream = _write(tmp_path / "gone", [], max_bag_size=4000), _timed(messages)
    assert _write_until_split(writer, stream, 2) is None
    writer._wait_finished()  # the file before on the disk (a fast one): the next split is not held back
    shutil.rmtree(tmp_path / "gone")
    failed = _write_until_split(writer, stream, 3)
    assert failed is not None and "cannot write to the bag" in str(failed)
    with pytest.raises(BagError, match="^" + re.escape(f"{tmp_path / 'gone'}: cannot finish the bag")):
        writer.close()

    fsync, calls = io.os.fsync, []

    def pulled(fd):  # the finished file's fsync fails once, as on a stick pulled out
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(5, "Input/output error")
        return fsync(fd)

    for stick, close_first in [("stick", False), ("stick_closed", True)]:
        writer, stream, calls[:] = _write(tmp_path / stick, [], max_bag_size=4000), _timed(messages), []
        monkeypatch.setattr(io.os, "fsync", pulled)
        assert _write_until_split(writer, stream, 2) is None  # the finished file's fsync runs on a thread of its own
        if not close_first:  # said by a write once that is done (the writer does not wait for it: here it has)
            writer._wait_finished()
            failed = _write_until_split(writer, stream, 99)
            assert failed is not None and f"cannot finish {stick}_0.mcap: Input/output error" in str(failed) and calls
        if close_first:  # said by close(), which waits for it and finishes the bag first
            with pytest.raises(BagError, match=re.escape(f"cannot finish {stick}_0.mcap: Input/output error")):
                writer.close()
            bag = tmp_path / stick
        else:
            bag = writer.close()  # the recorder's close: the files finished, metadata.yaml lists them
        monkeypatch.setattr(io.os, "fsync", fsync)
        info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        assert info["relative_file_paths"][:2] == [f"{stick}_0.mcap", f"{stick}_1.mcap"]
        for entry in info["files"]:
            with open(bag / entry["path"], "rb") as handle:
                assert make_reader(handle).get_summary().statistics.message_count == entry["message_count"]
        assert _read(bag) == _read(_write(tmp_path / f"whole_{stick}", messages[: info["message_count"]]).close())


def test_a_split_fsyncs_the_finished_file_off_the_writing_thread_and_close_waits_for_it(
    tmp_path, monkeypatch, small_files
):
    """Before: a split fsynced the finished file (twice: its chunks, then its CRCs) in write(), which the recorder
    calls from its subscription callback: on a slow disk or USB stick the executor took no message for that long,
    and DDS dropped them past the QoS depth (an fsync slowed by 0.5 s: 2034 of 3000 messages at 500 Hz lost, 9
    without). The fsyncs run on a thread of their own; the writes go on into the next file meanwhile, nothing is
    lost or reordered, and close() waits for them (the finished file complete on shutdown)."""
    from mcap.reader import make_reader
    from mcap.records import Chunk, DataEnd
    from mcap.stream_reader import StreamReader

    from liquid_control.bags import io

    fsync, writing, on_writer = io.os.fsync, threading.get_ident(), []
    blocked, release = threading.Event(), threading.Event()

    def slow(fd):  # a slow stick: the finished file's fsync waits until the test has written on
        if threading.get_ident() == writing:
            on_writer.append(fd)
        else:
            blocked.set()
            release.wait()
        return fsync(fd)

    monkeypatch.setattr(io.os, "fsync", slow)
    messages = _messages()
    writer, stream = _write(tmp_path / "bag", [], max_bag_size=4000), _timed(messages)
    assert _write_until_split(writer, stream, 2) is None
    assert on_writer == [], "the finished file was fsynced in write()"
    assert blocked.wait(timeout=60)
    for _ in range(3):  # while that fsync blocks, messages go on into the next file (fewer than fill it)
        writer.write(*next(stream))
    assert len(writer.files) == 2
    release.set()
    rest = list(stream)
    for item in rest:
        writer.write(*item)
    bag = writer.close()
    for path in sorted(bag.glob("*.mcap")):  # every file whole: indexed, its CRCs written (by the thread too)
        with open(path, "rb") as handle:
            assert make_reader(handle).get_summary().statistics.message_count > 0
        with open(path, "rb") as handle:
            records = list(StreamReader(handle, skip_magic=False, emit_chunks=True).records)
        assert all(r.uncompressed_crc for r in records if isinstance(r, Chunk))
        assert [r.data_section_crc != 0 for r in records if isinstance(r, DataEnd)] == [True]
    assert _read(bag) == _read(_write(tmp_path / "whole", messages).close())


def test_a_writer_behind_a_slow_disk_holds_messages_for_the_next_file_then_drops_them_counted_never_waiting(
    tmp_path, monkeypatch, small_files, first_fsync_held
):
    """Before: a split waited in write() for the file before it to be finished (its fsync, one file at a time), so
    on a disk slower than the recording the recorder's subscription callback was blocked there in the end and DDS
    dropped messages past the QoS depth without a count (fsyncs of 0.5 s, 200 kB files, 1 kB messages at 500 Hz:
    1,555 of 3,000 lost, nothing said). write() never waits for it: what comes while it runs is held back for the
    next file, up to BEHIND_CACHE_BYTES, then dropped, write() returning False and ``dropped`` counting them by
    topic; the held ones reach the bag in order (written once that file is finished, or by close())."""
    from collections import Counter

    from liquid_control.bags import io

    blocked, release = first_fsync_held  # a disk slower than the recording
    monkeypatch.setattr(io, "BEHIND_CACHE_BYTES", 2500, raising=False)
    stream = list(_timed(_messages()))
    writer = _write(tmp_path / "bag", [], max_bag_size=4000)
    kept = [writer.write(*item) for item in stream[:200]]  # the first file being finished all along
    assert blocked.wait(timeout=60)
    assert len(writer.files) == 2, "a file was opened after the one whose file before is still being finished"
    assert kept.count(False) > 0 and kept[-1] is False and set(kept) == {True, False}
    release.set()
    kept += [writer.write(*item) for item in stream[200:]]
    dropped = [topic for (topic, _, _), k in zip(stream, kept, strict=True) if k is False]
    assert writer.dropped == Counter(dropped) and set(dropped) >= {"/imu/data", "/cmd_vel"}
    bag = writer.close()
    info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["message_count"] == len(stream) - len(dropped) and len(info["relative_file_paths"]) > 2
    written = [item for item, k in zip(stream, kept, strict=True) if k]
    assert _read(bag) == _read(_write(tmp_path / "whole", written).close())


def test_a_latched_message_that_comes_while_the_held_back_messages_fill_their_space_still_reaches_the_bag(
    tmp_path, monkeypatch, small_files, first_fsync_held
):
    """Before: behind a slow disk, past BEHIND_CACHE_BYTES held back, a latched (transient local) topic's message was
    dropped like any other: robot_description or a camera_info published once was missing from the whole bag. The
    last one of each publisher is held past the limit (an earlier one held past it replaced, counted in ``dropped``
    and ``unwritten``) and written in its place once the file before is finished."""
    from liquid_control.bags import io

    blocked, release = first_fsync_held  # a disk slower than the recording
    monkeypatch.setattr(io, "BEHIND_CACHE_BYTES", 2500, raising=False)
    String = typestore().types["std_msgs/msg/String"]
    stream = list(_timed(_messages()))
    writer = _write(tmp_path / "bag", [], max_bag_size=4000)
    kept = [writer.write(*item) for item in stream[:200]]  # the first file being finished all along
    assert blocked.wait(timeout=60) and kept[-1] is False  # the space is full: an IMU message is dropped
    t = stream[199][1]
    latched = [("/episode_status", t + n, String(data=f"state {n}"), f"publisher {n % 2}") for n in range(1, 6)]
    assert [writer.write(topic, t, message, publisher=who) for topic, t, message, who in latched] == [True] * 5
    assert writer.write(*stream[200]) is False  # still full for the others
    assert writer.dropped["/episode_status"] == writer.unwritten["/episode_status"] == 3  # each publisher's last kept
    release.set()
    writer.close()
    statuses = [(t, bytes(data)) for topic, t, data in _read(tmp_path / "bag") if topic == "/episode_status"]
    store = typestore()
    assert [(t, store.deserialize_cdr(data, "std_msgs/msg/String").data) for t, data in statuses][-2:] == [
        (t + 4, "state 4"),
        (t + 5, "state 5"),
    ]


def _held_back_with_no_next_file(tmp_path, monkeypatch, first_fsync_held):
    """A split writer that holds messages back (the first file still being finished, a slow disk) and cannot open
    the next file (no file descriptor left), its first file finished: (writer, how many are held back)."""
    import errno

    from liquid_control.bags import io

    blocked, release = first_fsync_held  # a disk slower than the recording
    stream = list(_timed(_messages()))
    writer = _write(tmp_path / "bag", [], max_bag_size=4000)
    kept = [writer.write(*item) for item in stream[:40]]
    assert blocked.wait(timeout=60) and len(writer.files) == 2 and all(kept)
    held = len(writer._waiting)  # held back: the first file is still being finished
    assert held > 0

    def no_descriptor(self, file):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(io._McapFile, "next_file", no_descriptor)
    release.set()
    return writer, held


def test_messages_held_back_that_abort_cannot_write_are_counted(tmp_path, monkeypatch, small_files, first_fsync_held):
    """abort() (a recording ended by an error: the writer's with-block) writes what was held back after the files
    finished before, as close() does; where it could not (the next file not opened), close() counted them in
    ``dropped`` and ``unwritten`` but abort() counted none: a caller's summary said them recorded."""
    writer, held = _held_back_with_no_next_file(tmp_path, monkeypatch, first_fsync_held)
    writer.abort()
    assert sum(writer.dropped.values()) == held and writer.unwritten == writer.dropped  # write() had taken them
    assert not writer._waiting


def test_messages_held_back_that_close_cannot_write_are_counted_and_named_and_the_files_before_finished(
    tmp_path, monkeypatch, small_files, first_fsync_held
):
    """What the writer held back, behind a slow disk, goes into the next file at close(): where that file cannot
    be opened (no file descriptor left), the files before are still finished and listed, and close() names the
    messages not written, counted in ``dropped`` (a recorder's end says them)."""
    from mcap.reader import make_reader

    writer, held = _held_back_with_no_next_file(tmp_path, monkeypatch, first_fsync_held)
    with pytest.raises(BagError) as refused:
        writer.close()
    assert str(refused.value) == (
        f"{tmp_path / 'bag'}: cannot finish the bag: {held} messages held back for the next file not written "
        "there: Too many open files; the files before are finished"
    )
    assert sum(writer.dropped.values()) == held and writer.unwritten == writer.dropped  # write() had taken them
    info = yaml.safe_load((tmp_path / "bag" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["relative_file_paths"] == ["bag_0.mcap", "bag_1.mcap"] and info["message_count"] == 40 - held
    for name in info["relative_file_paths"]:
        with open(tmp_path / "bag" / name, "rb") as handle:
            assert make_reader(handle).get_summary().statistics.message_count > 0


def test_splitting_with_another_rosbags_version_is_refused_before_the_bag_is_made(tmp_path, monkeypatch):
    """Before: a split bag drives rosbags' internal MCAP storage writer (its file, buffers, schemas), so with a
    rosbags other than the pinned one (package.xml's python3-rosbags-pip is not pinned) a recorder started
    without a word and could fail mid-drive with an AttributeError traceback; it is refused at the start,
    naming the option, the version installed and the one to install. An unsplit bag uses rosbags' public API."""
    from liquid_control.bags import io

    monkeypatch.setattr(io, "_rosbags_version", lambda: "0.99.0")
    with pytest.raises(BagError, match=r"^max_bag_duration: .*rosbags==0\.11\.9.*rosbags 0\.99\.0 is installed"):
        BagWriter(tmp_path / "bag", max_bag_duration=600)
    assert not (tmp_path / "bag").exists()
    assert sorted(p.name for p in _write(tmp_path / "bag", _messages(5)).close().iterdir()) == [
        "bag.mcap",
        "metadata.yaml",
    ]


def _latched_state(typestore_types, messages):
    """The messages with a second publisher ("b") of the latched status beside the first ("a"), which publishes it
    again later: (topic, log time, message, publisher)."""
    String = typestore_types["std_msgs/msg/String"]
    start = messages[1][1] - 1
    out = [
        ("/episode_status", start, String(data="running"), "a"),
        ("/episode_status", start, String(data="b: on"), "b"),
    ]
    for i, (topic, t, message) in enumerate(messages[1:]):
        out.append((topic, t, message, None))
        if i == len(messages) // 2:
            out.append(("/episode_status", t, String(data="halfway"), "a"))
    return out


def test_repeat_latched_starts_each_file_with_the_latched_state_and_every_reader_reads_each_message_once(
    tmp_path, small_files
):
    """Before: a latched (transient local) message was in the first file only, so the third file opened alone
    (Foxglove, `ros2 bag play` of one file) had no /tf_static or robot model. With repeat_latched (record
    --repeat-latched, the node's repeat_latched) each later file starts with what a subscriber joining then gets
    (each publisher's last), logged at the file's first message; read together (training, eval --bag, replay,
    --info: BagReader, with or without metadata.yaml, truncated or not) each message is read and counted once."""
    from mcap.reader import make_reader
    from rosbags.rosbag2 import Reader

    from liquid_control.ros.recorder_node import bag_info

    stream = _latched_state(typestore().types, _messages())
    unsplit = BagWriter(tmp_path / "whole")
    split = BagWriter(tmp_path / "split", max_bag_size=4000, repeat_latched=True)
    for writer in (unsplit, split):
        writer.add_topic("/episode_status", "std_msgs/msg/String", [LATCHED, LATCHED])
        writer.add_topic("/imu/data", "sensor_msgs/msg/Imu")
        writer.add_topic("/cmd_vel", "geometry_msgs/msg/Twist")
        for topic, t, message, publisher in stream:
            writer.write(topic, t, message, publisher=publisher)
    whole, bag = unsplit.close(), split.close()
    files = sorted(bag.glob("*.mcap"), key=lambda f: int(f.stem.rpartition("_")[2]))
    assert len(files) >= 4
    halfway = next(t for topic, t, m, _ in stream if topic == "/episode_status" and m.data == "halfway")
    for n, file in enumerate(files):
        with open(file, "rb") as handle:  # the mcap library alone
            raw = [(c.topic, m.log_time, m.data) for _, c, m in make_reader(handle).iter_messages(log_time_order=False)]
        first = raw[0][1] if n == 0 else min(t for topic, t, _ in raw if topic != "/episode_status")
        with Reader(file) as alone:  # rosbags alone, the file itself
            status = [
                (t, _string_data(d))
                for c, t, d in alone.messages()
                if c.topic == "/episode_status" and (n == 0 or t == first)
            ]
        if n == 0:
            assert [s for _, s in status][:2] == ["running", "b: on"]
        else:  # each publisher's last, in the order received, at the file's first log time
            expected = ["running", "b: on"] if first <= halfway else ["b: on", "halfway"]
            assert [s for _, s in status] == expected and {t for t, _ in status} == {first}

    expected = _read(whole)
    assert _read(bag) == expected
    with BagReader(bag) as ours, BagReader(whole) as reference:
        assert ours.message_count == reference.message_count == len(stream)
        assert {t: i.count for t, i in ours.topics.items()} == {t: i.count for t, i in reference.topics.items()}
        assert (ours.start_ns, ours.end_ns) == (reference.start_ns, reference.end_ns)
    assert bag_info(str(bag)).splitlines()[1:] == bag_info(str(whole)).splitlines()[1:]
    info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["message_count"] == len(stream) < sum(entry["message_count"] for entry in info["files"])

    bare = tmp_path / "bare"  # without metadata.yaml: the files' own counts, less the repeated messages
    shutil.copytree(bag, bare / "split")
    (bare / "split" / "metadata.yaml").unlink()
    assert _read(bare / "split") == expected
    with BagReader(bare / "split") as ours:
        assert ours.message_count == len(stream) and ours.topics["/episode_status"].count == 3

    killed = BagWriter(tmp_path / "killed", max_bag_size=4000, repeat_latched=True)  # a truncated last file too
    killed.add_topic("/episode_status", "std_msgs/msg/String", [LATCHED])
    killed.add_topic("/imu/data", "sensor_msgs/msg/Imu")
    killed.add_topic("/cmd_vel", "geometry_msgs/msg/Twist")
    for topic, t, message, publisher in stream:
        killed.write(topic, t, message, publisher=publisher)
    killed.abort()
    with BagReader(tmp_path / "killed", allow_truncated=True) as salvaged:
        kept = [(m.topic, m.log_time_ns, bytes(m.data)) for m in salvaged.messages()]
        assert salvaged.message_count == len(kept) and salvaged.topics["/episode_status"].count == 3
    assert len(kept) > len(stream) // 2 and kept == expected[: len(kept)]


def _string_data(data) -> str:
    return typestore().deserialize_cdr(bytes(data), "std_msgs/msg/String").data


def test_repeat_latched_needs_a_split_bag(tmp_path):
    with pytest.raises(BagError, match=r"^repeat_latched: only for a split bag \(max_bag_size or max_bag_duration\)"):
        BagWriter(tmp_path / "bag", repeat_latched=True)
    assert not (tmp_path / "bag").exists()


def test_a_split_bag_with_latched_topics_repeated_trains_and_evaluates_as_the_unsplit_one(tmp_path, small_files):
    """Training and eval --bag read a bag through stream_updates (its message count too) and the camera's field of
    view from camera_info: a split bag whose later files repeat a latched camera_info and a latched input (the IMU
    here; a balancer's target may be latched) gives the same updates, counters and field of view as the unsplit
    bag, with or without its metadata.yaml (read without it, each file's counts are its own)."""
    from test_bags import CAMERA_IMU, _synthetic_bag

    from liquid_control.bags import data_spec, stream_updates
    from liquid_control.bags import messages as M
    from liquid_control.bags.stream import StreamStats, capture_runner
    from liquid_control.training.sensor_record import bag_camera_fovy_deg

    frames = [(1.0 + 0.05 * i, 1.02 + 0.05 * i) for i in range(120)]
    imus = [(s - 0.005, t - 0.015, np.arange(6) * i) for i, (s, t) in enumerate(frames)]
    source = _synthetic_bag(tmp_path / "source", frames, imus, [(t + 0.004, (0.1, -0.2)) for _, t in frames])

    def copy(dst, **split):
        with BagReader(source) as reader, BagWriter(dst, **split) as writer:
            writer.add_topic("/camera/camera_info", M.CAMERA_INFO, [LATCHED])  # a driver that latches it
            for topic, info in reader.topics.items():
                writer.add_topic(topic, info.msgtype, [LATCHED] if topic == "/imu/data" else info.qos)
            for n, message in enumerate(reader.messages()):
                if n == 0:
                    first_image = next(reader.messages(["/camera/image_raw"])).decode()
                    writer.write("/camera/camera_info", message.log_time_ns, M.camera_info_message(first_image, 60.0))
                writer.write(message.topic, message.log_time_ns, message.data)
        return dst

    bare = tmp_path / "bare" / "split"
    shutil.copytree(copy(tmp_path / "split", max_bag_size=20_000, repeat_latched=True), bare)
    (bare / "metadata.yaml").unlink()
    results = []
    for bag in (copy(tmp_path / "whole"), tmp_path / "split", bare):
        spec, stats = data_spec(CAMERA_IMU), StreamStats()
        with BagReader(bag) as reader:
            updates = [
                (u.time, u.stamp, u.dt, tuple(u.label))
                for u in stream_updates(reader, capture_runner(CAMERA_IMU, spec), spec, stats)
            ]
            fovy = bag_camera_fovy_deg(reader, "/camera/image_raw")
        results.append((updates, stats.summary(), fovy))
    assert len(list(bare.glob("*.mcap"))) >= 4
    with BagReader(bare / "split_2.mcap") as third:  # alone: it has the camera_info and the IMU's last reading
        assert third.topics["/camera/camera_info"].count == 1
        first = min(m.log_time_ns for m in third.messages())
        assert [m.log_time_ns for m in third.messages(["/camera/camera_info"])] == [first]
    assert results[0][2] == 60.0 and len(results[0][0]) == 120
    assert results[1] == results[0] and results[2] == results[0]


def test_max_bag_duration_counts_the_seconds_recorded_across_steps_back_of_the_clock(tmp_path):
    """Before: a duration split compared a message's log time with the file's earliest, so a recorder on a
    simulation's /clock (use_sim_time) whose time went back to 0 at each episode (2 s each, a 5 s split) never split:
    every episode fell inside [0, 5 s). A file's seconds are now those its log time went forward: a step back by more
    than LOG_TIME_WINDOW_NS (as BagReader and policy_node take a clock step) restarts the count there, keeping what
    was counted (the files' seconds add up to the 12 s recorded)."""
    Float64 = typestore().types["std_msgs/msg/Float64"]
    times = [i * 100_000_000 for _ in range(6) for i in range(20)]  # six episodes of 0.0 .. 1.9 s, at 10 Hz
    with BagWriter(tmp_path / "whole") as whole, BagWriter(tmp_path / "bag", max_bag_duration=5.0) as writer:
        for n, t in enumerate(times):
            for bag in (whole, writer):
                bag.write("/x", t, Float64(data=float(n)))
    info = yaml.safe_load((tmp_path / "bag" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    # 5 s each: episodes 1, 2 and 1.2 s of the 3rd (0.0 .. 1.1: 12 readings), 0.7 + 1.9 + 1.9 + 0.5 s, the rest
    assert [entry["message_count"] for entry in info["files"]] == [52, 53, 15]
    assert _read(tmp_path / "bag") == _read(tmp_path / "whole")


def test_repeated_latched_messages_larger_than_the_size_limit_do_not_make_a_file_of_every_message(
    tmp_path, small_files
):
    """Before: the repeated latched state counted against max_bag_size, so a latched message above the limit (a
    multi-MB /map under a small --max-bag-size) filled each new file at once: every later file held the repeat and
    one message (301 files here). The limit counts what was recorded into the file, as with a small latched one."""
    String = typestore().types["std_msgs/msg/String"]
    stream = _messages()

    def files(latched_bytes: int) -> int:
        writer = BagWriter(tmp_path / f"bag{latched_bytes}", max_bag_size=4000, repeat_latched=True)
        writer.add_topic("/episode_status", "std_msgs/msg/String", [LATCHED])
        writer.add_topic("/imu/data", "sensor_msgs/msg/Imu")
        writer.add_topic("/cmd_vel", "geometry_msgs/msg/Twist")
        writer.write("/episode_status", stream[1][1] - 1, String(data="m" * latched_bytes))
        for topic, t, message in stream[1:]:
            writer.write(topic, t, message)
        bag = writer.close()
        with BagReader(bag) as reader:
            assert reader.message_count == len(stream)
        return len(list(bag.glob("*.mcap")))

    small, large = files(10), files(6000)  # the large one's first file is full with the map itself: one more
    assert 3 <= small and large <= small + 1, (large, small)


def test_compressed_repeated_latched_messages_are_left_out_of_the_size_as_they_are_on_the_disk(tmp_path):
    """Before: the repeated latched state was left out of a file's size as written into the open chunk,
    uncompressed, and the chunk was then written compressed: with --compress a 900 kB latched map (a few kB on the
    disk) let each later file grow to ~1.5 MiB of new messages under a 1 MiB --max-bag-size (800 kB with a small
    latched message). The repeats are their own chunk, left out as written."""
    String = typestore().types["std_msgs/msg/String"]
    noise = np.random.default_rng(0)

    def sizes(latched_bytes: int) -> list[int]:
        writer = BagWriter(
            tmp_path / f"bag{latched_bytes}", max_bag_size=1 << 20, repeat_latched=True, compression=True
        )
        writer.add_topic("/map", "std_msgs/msg/String", [LATCHED])
        writer.add_topic("/scan", "std_msgs/msg/String")
        writer.write("/map", 1, String(data="m" * latched_bytes))
        for i in range(450):  # 4.5 MB of random hex (zstd halves it)
            writer.write("/scan", 10 + i * 1000, String(data=noise.bytes(5000).hex()))
        bag = writer.close()
        with BagReader(bag) as reader:
            assert reader.message_count == 451
        return [path.stat().st_size for path in sorted(bag.glob("*.mcap"), key=lambda p: int(p.stem.rsplit("_")[1]))]

    small, large = sizes(10), sizes(900_000)
    assert len(small) >= 3 and len(large) >= 3, (small, large)
    # the files between the first (the map itself) and the last (the rest): as full as those of a small latched one
    assert max(large[1:-1]) <= max(small) + 16_384, (large, small)


def test_a_readers_sha256_is_that_of_the_files_by_name_whatever_it_read(tmp_path, small_files):
    """``BagReader(bag, sha256=True).recorded_sha256()`` (the SHA-256 a bag converted for training keeps, taken from
    the chunks its reader reads) is ``bag_sha256``: hashlib over the storage files by name, one after another. Here a
    split bag of more than ten files, whose names (``_10`` before ``_2``) are not the order it reads them in, after
    reading every message, one topic's (the files that hold none of it read for the hash alone), a few, or nothing."""
    import hashlib

    from liquid_control.bags.io import bag_sha256

    bag = _write(tmp_path / "split", _messages(), max_bag_size=4000).close()
    files = sorted(bag.glob("*.mcap"), key=lambda f: f.name)
    assert len(files) > 10 and files[2].name == "split_10.mcap"
    expected = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()
    assert bag_sha256(bag) == expected
    for reading in ("every message", "one topic", "a few messages", "nothing"):
        with BagReader(bag, sha256=True) as reader:
            if reading == "every message":
                assert len(list(reader.messages())) == 120 * 2 + 60 + 1
            elif reading == "one topic":
                assert len(list(reader.messages(["/late"]))) == 60
            elif reading == "a few messages":
                messages = reader.messages(["/imu/data"])
                assert [next(messages).topic for _ in range(3)] == ["/imu/data"] * 3
            assert reader.recorded_sha256() == expected, reading
