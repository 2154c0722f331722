"""Reading rosbag2 bags as other tools and real recorders leave them (audit findings on bags/io.py): a step back
of the recording machine's clock, a truncated MCAP file without chunks, split bags (with or without
metadata.yaml, cut in their last file), a sqlite3 folder without metadata.yaml, and a metadata.yaml whose QoS or
type hash disagrees with the MCAP channels. Every bag here is a few kB."""

import re

import numpy as np
import pytest
import yaml

from liquid_control.bags import BagError, BagReader, BagWriter, data_spec, recover, stream_updates
from liquid_control.bags import io as bag_io
from liquid_control.bags import messages as M
from liquid_control.bags.stream import StreamStats, capture_runner

H = W = 8
CAMERA_ONLY = {
    "name": "tiny_bag_rover",
    "world": "LiquidRover-v0",
    "observation": {"image": {"height": H, "width": W}, "vectors": {}, "update_on": "camera"},
    "encoder": {"camera": {"channels": [4], "kernel_sizes": [3], "strides": [2], "features": 8}},
    "core": {"type": "cfc", "units": 12, "wiring": "ncp", "mode": "pure"},
    "action": {"size": 2, "low": [-1, -1], "high": [1, 1], "kind": "twist"},
    "training": {"epochs_first": 1, "batch_size": 2, "sequence_length": 8, "lr": 0.003},
}
T0 = 1_750_000_000.0  # a wall clock, as a robot's recorder logs


def _frame(i, stamp):
    return M.image_message(np.full((H, W, 3), i, np.uint8), stamp)


def _drive(n=60, step_at=None, step_s=0.0):
    """(topic, msgtype, log time ns, message) in the order a recorder receives them: frame i at 15 Hz (pixels =
    i, stamped 20 ms before it is received) and the operator's command answering it 5 ms later (linear.x = i/100).
    From ``step_at`` s of real time on, the machine's clock (log times and stamps) reads ``step_s`` s less."""
    out = []
    for i in range(n):
        for real, topic in ((i / 15.0, "/camera/image_raw"), (i / 15.0 + 0.005, "/cmd_vel")):
            clock = T0 + real - (step_s if step_at is not None and real >= step_at else 0.0)
            if topic == "/cmd_vel":
                out.append((topic, M.TWIST, int(round(clock * 1e9)), M.twist_message(i / 100.0, 0.0)))
            else:
                out.append((topic, M.IMAGE, int(round(clock * 1e9)), _frame(i, clock - 0.02)))
    return out


def _write(path, events):
    """A bag written by BagWriter with the events in the order given (as a recorder appends them)."""
    with BagWriter(path) as bag:
        for topic, msgtype, ns, message in events:
            if not bag.has_topic(topic):
                bag.add_topic(topic, msgtype, [{"reliability": "best_effort"}] if msgtype == M.IMAGE else [])
            bag.write(topic, ns, message)
    return path


def _raw_mcap(path, events, chunk_size=0):
    """An MCAP file written by the ``mcap`` library (ros2 profile, ros2msg schemas, CDR), chunks of ``chunk_size``
    bytes (zstd, CRCs), or ``0``: the messages at top level, as ``ros2 bag record --storage-preset-profile
    fastwrite`` writes them."""
    from mcap.writer import CompressionType, Writer

    store = bag_io.typestore()
    with open(path, "wb") as handle:
        options = {"chunk_size": chunk_size, "compression": CompressionType.ZSTD} if chunk_size else {}
        writer = Writer(
            handle,
            use_chunking=bool(chunk_size),
            enable_crcs=bool(chunk_size),
            **(options or {"compression": CompressionType.NONE}),
        )
        writer.start(profile="ros2", library="test")
        schemas, channels = {}, {}
        for topic, msgtype, ns, message in events:
            if msgtype not in schemas:
                text, _ = store.generate_msgdef(msgtype, ros_version=2)
                schemas[msgtype] = writer.register_schema(name=msgtype, encoding="ros2msg", data=text.encode())
            if topic not in channels:
                channels[topic] = writer.register_channel(topic, "cdr", schemas[msgtype], {})
            data = bytes(bag_io._serialize(message, msgtype))
            writer.add_message(channels[topic], log_time=ns, data=data, publish_time=ns)
        writer.finish()
    return path


def _read(bag, **kwargs):
    with BagReader(bag, **kwargs) as reader:
        return [(m.topic, m.log_time_ns, m.data) for m in reader.messages()]


def _reads_as_rosbags_sorts(bag):
    """Assert that ``bag`` (one MCAP file of several chunks) reads exactly as rosbags' reader sorts it; return
    that order."""
    from mcap.reader import make_reader
    from rosbags.rosbag2 import Reader

    with open(bag / f"{bag.name}.mcap", "rb") as handle:
        assert len(make_reader(handle).get_summary().chunk_indexes) > 1
    with Reader(bag) as reader:
        expected = [(c.topic, t, bytes(d)) for c, t, d in reader.messages()]
    assert _read(bag) == expected
    return expected


def _cut(path, fraction):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


# ------------------------------------------------------------------------------------------------ finding 2
def test_a_backward_step_of_the_recorders_clock_keeps_the_written_order_and_resets_as_the_node(tmp_path):
    """NTP/chrony steps the recording machine's clock back 1.7 s between frame 29 and its command: the messages
    reach the stream in the order they were written (what the node received), so the runner resets
    (clock_backwards) as policy_node did, every update keeps its own frame's command as label (the one whose
    command came after the step is unlabelled), and the duration is the 4 s driven, not the 2.2 s the log times
    span."""
    events = _drive(step_at=1.936, step_s=1.7)
    bag = _write(tmp_path / "ntp", events)
    with BagReader(bag) as reader:
        frames = [int(M.sensor_reading("camera", m.decode())[0, 0, 0]) for m in reader.messages(["/camera/image_raw"])]
        assert frames == list(range(60))
        ((file, index, before, after),) = reader.clock_steps
        assert file.parent == bag and before - after == pytest.approx(1.7 - 1 / 15, abs=0.001)  # frame 29 -> 30
        assert index == 30  # of the messages read from the file: frame 30, the first after the step
        spec = data_spec(CAMERA_ONLY)
        stats = StreamStats()
        updates = list(stream_updates(reader, capture_runner(CAMERA_ONLY, spec), spec, stats))
    assert [int(u.obs["image"][0, 0, 0]) for u in updates] == list(range(60))
    assert [u.reset for u in updates if u.reset] == ["clock_backwards"] and updates[30].reset == "clock_backwards"
    scale = np.asarray(spec.action_scale)
    labels = {int(u.obs["image"][0, 0, 0]): round(u.label[0] * scale[0] * 100) for u in updates if u.label is not None}
    assert all(frame == command for frame, command in labels.items()), labels
    assert sorted(set(range(60)) - set(labels)) == [29]  # its command was received after the step
    assert stats.counters["log_time_steps_back"] == 1
    assert stats.duration_s == pytest.approx(59 / 15 + 0.005, abs=0.01)


def test_log_times_slightly_out_of_order_across_topics_read_as_sorted_by_log_time(tmp_path):
    """Several publishers: a recorder's log times run up to 0.2 s out of order across topics, over several
    chunks. Such a bag reads exactly as rosbags' reader sorts it (log time, then written order); in an MCAP file
    without chunks too, which rosbags refuses ("not in timestamp order")."""
    from rosbags.rosbag2 import Reader

    rng = np.random.default_rng(3)
    events = []
    for i in range(3000):  # IMU at 200 Hz, ~1.2 MB: several ~1 MB chunks
        events.append(("/imu/data", M.IMU, int((T0 + i / 200) * 1e9), M.imu_message(np.arange(6) * i, T0 + i / 200)))
        if i % 10 == 0:  # a command logged up to 0.2 s late or early against the IMU it is written beside
            late = T0 + i / 200 + rng.uniform(-0.2, 0.2)
            events.append(("/cmd_vel", M.TWIST, int(late * 1e9), M.twist_message(i, 0.0)))
    bag = _write(tmp_path / "jitter", events)
    expected = _reads_as_rosbags_sorts(bag)
    written = sorted(range(len(events)), key=lambda k: events[k][2])  # stable: log time, then written order
    assert [(events[k][0], events[k][2]) for k in written] == [(t, ns) for t, ns, _ in expected]
    flat = _raw_mcap(tmp_path / "fastwrite.mcap", events[:400])
    with pytest.raises(Exception, match="not in timestamp order"):
        with Reader(flat) as reader:
            list(reader.messages())
    got = [(t, ns) for t, ns, _ in _read(flat)]
    assert got == sorted(got, key=lambda x: x[1]) and len(got) == 400


def test_a_bag_written_topic_by_topic_reads_sorted_by_log_time_without_a_clock_step(tmp_path):
    """A valid bag need not be written in log-time order: a conversion script writes one topic after another
    (here 40 s of IMU at 100 Hz over several chunks, then 10 s of frames, then their commands). No topic's own log
    times step back, so it is no clock step: it reads exactly as rosbags sorts it (log time, then written order:
    the IMU sample logged at a frame's very time comes first, as it was written first), in MCAP and sqlite3
    alike, and a camera + IMU policy holds the IMU sample of each frame's time (read in the written order, the
    last IMU sample was held for every frame)."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    imu = [
        ("/imu/data", M.IMU, int((T0 + j / 100) * 1e9), M.imu_message(np.full(6, j), T0 + j / 100)) for j in range(4000)
    ]
    drive = _drive(150)
    events = imu + [e for e in drive if e[0] == "/camera/image_raw"] + [e for e in drive if e[0] == "/cmd_vel"]
    bag = _write(tmp_path / "by_topic", events)
    expected = _reads_as_rosbags_sorts(bag)
    with BagReader(bag) as reader:
        list(reader.messages())
        assert reader.clock_steps == []
    db = tmp_path / "by_topic_db3"  # the same messages in sqlite3, written in the same order
    store = bag_io.typestore()
    with Writer(db, version=9, storage_plugin=StoragePlugin.SQLITE3) as writer:
        conns = {}
        for topic, msgtype, ns, message in events:
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(conns[topic], ns, store.serialize_cdr(message, msgtype))
    assert [(topic, ns) for topic, ns, _ in _read(db)] == [(topic, ns) for topic, ns, _ in expected]
    config = {**CAMERA_ONLY, "observation": {**CAMERA_ONLY["observation"], "vectors": {"imu": 6}}}
    spec = data_spec(config)
    with BagReader(bag) as reader:
        updates = list(stream_updates(reader, capture_runner(config, spec), spec, StreamStats()))
    held = [int(u.obs["imu"][0]) for u in updates]
    assert held == [int(np.floor(i / 15.0 * 100 + 1e-6)) for i in range(150)], held[:10]


# ------------------------------------------------------------------------------------------------ finding 3
def test_a_truncated_mcap_without_chunks_is_salvaged_in_bounded_batches(tmp_path, monkeypatch):
    """A recorder with the fastwrite preset (no chunks) killed: the salvage hands its messages over in batches of
    at most SALVAGE_BATCH_MESSAGES (and about SALVAGE_BATCH_BYTES), not all in one, and salvages the same
    messages, in the same order."""
    events = [("/cmd_vel", M.TWIST, int((T0 + i / 100) * 1e9), M.twist_message(i, 0.0)) for i in range(2600)]
    folder = tmp_path / "fastwrite"
    folder.mkdir()
    mcap = _raw_mcap(folder / "fastwrite_0.mcap", events)
    _cut(mcap, 0.9)
    batches = [len(b) for b in bag_io._iter_truncated_batches(mcap)]
    assert max(batches) <= bag_io.SALVAGE_BATCH_MESSAGES and 2000 < sum(batches) < 2600
    kept = _read(folder, allow_truncated=True)
    assert len(kept) == sum(batches)
    assert [ns for _, ns, _ in kept] == [ns for _, _, ns, _ in events[: len(kept)]]
    monkeypatch.setattr(bag_io, "SALVAGE_BATCH_BYTES", 1000)
    sizes = [sum(len(m[3]) for m in b) for b in bag_io._iter_truncated_batches(mcap)]
    assert max(sizes) < 1000 + 100 and sum(sizes) == sum(len(d) for _, _, d in kept)
    assert _read(folder, allow_truncated=True) == kept


@pytest.mark.parametrize("kept_bytes", [0, 5, 8])
def test_an_mcap_cut_within_its_opening_magic_is_a_truncated_bag_with_nothing_to_recover(tmp_path, kept_bytes):
    """A recorder killed as it started (SIGKILL, a full disk) leaves an empty .mcap or its magic only. Before: not
    called truncated, rosbags' reader said 'seems to be empty', 'magic is invalid' or raised a TypeError ('ord()
    expected a character'), also for --allow-truncated and record --recover."""
    whole = _write(tmp_path / "whole", _drive(n=10))
    folder = tmp_path / "killed"
    folder.mkdir()
    mcap = folder / "killed_0.mcap"
    mcap.write_bytes(next(whole.glob("*.mcap")).read_bytes()[:kept_bytes])
    with pytest.raises(BagError, match="truncated MCAP file") as err:
        BagReader(folder)
    assert str(mcap) in str(err.value) and "--allow-truncated" in str(err.value)
    with BagReader(folder, allow_truncated=True) as reader:
        assert reader.salvaged and reader.message_count == 0 and reader.topics == {}
        assert reader.salvage_note.startswith(f"{mcap}: truncated; 0 messages read up to the break")
    with pytest.raises(BagError, match="no complete message to recover"):
        recover(folder, tmp_path / "fixed")
    assert not (tmp_path / "fixed").exists()


def test_a_full_disk_as_a_chunk_is_written_is_a_bag_error_naming_the_bag_and_the_rest_stays_readable(tmp_path):
    """Before: record --expert on a disk that filled up as an episode's bag passed its first 1 MiB chunk ended
    in two OSError tracebacks ('No space left on device' from rosbags' chunk write, then again from its abort
    in BagWriter.__exit__), naming no bag. The full disk here: `ulimit -f` (EFBIG), the file cut at 1.5 MiB."""
    import resource

    bag = tmp_path / "full"
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (3 << 19, hard))
    try:
        with pytest.raises(BagError) as err, BagWriter(bag) as writer:
            writer.add_topic("/camera/image_raw", M.IMAGE)
            for i in range(400):  # 400 frames of 12 KiB: past the limit in the second chunk
                frame = M.image_message(np.full((64, 64, 3), i % 256, np.uint8), T0 + i / 30)
                writer.write("/camera/image_raw", int((T0 + i / 30) * 1e9), frame)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert str(err.value) == f"{bag}: cannot write to the bag: File too large"
    with BagReader(bag, allow_truncated=True) as reader:  # the first chunk, whole
        assert reader.salvaged and 0 < reader.message_count < 400


# ------------------------------------------------------------------------------------------------ finding 4
def _split(tmp_path, name, parts, metadata):
    """A split bag ``name`` (``name_0.mcap`` ...) of the drive, ``parts`` files, with or without metadata.yaml
    (as rosbag2 writes it: every file, the topics with their counts)."""
    events = _drive(n=12 * parts)
    folder = tmp_path / name
    folder.mkdir()
    per = len(events) // parts
    for k in range(parts):  # chunks of ~4 frames, as a long recording's ~1 MB ones
        _raw_mcap(folder / f"{name}_{k}.mcap", events[k * per : (k + 1) * per], chunk_size=1000)
    meta = yaml.safe_load((_write(tmp_path / "whole", events) / "metadata.yaml").read_text())
    if metadata:
        info = meta["rosbag2_bagfile_information"]
        info["relative_file_paths"] = [f"{name}_{k}.mcap" for k in range(parts)]
        info["files"] = [{"path": f"{name}_{k}.mcap", "message_count": per} for k in range(parts)]
        info["message_count"] = len(events)
        info["duration"]["nanoseconds"] = events[-1][2] - events[0][2]
        for topic in info["topics_with_message_count"]:
            topic["message_count"] = len(events) // 2
        (folder / "metadata.yaml").write_text(yaml.safe_dump(meta))
    return folder, events


def test_a_split_bag_without_metadata_reads_its_files_in_split_order(tmp_path):
    """A recorder killed after its split files were complete, before metadata.yaml: the files are read as
    rosbag2 numbers them (_0, _1, ... _10, _11: not by name), every message once, in the recorded order."""
    folder, events = _split(tmp_path, "killed", 12, metadata=False)
    with BagReader(folder) as reader:
        assert not reader.salvaged and reader.message_count == len(events)
        assert reader.topics["/cmd_vel"].count == len(events) // 2
        assert reader.start_ns == events[0][2] and reader.end_ns >= events[-1][2]
    assert [(t, ns) for t, ns, _ in _read(folder)] == [(t, ns) for t, _, ns, _ in events]


def test_a_split_bag_without_metadata_copied_by_a_mac_reads_without_the_files_the_copy_added(tmp_path):
    """A Mac copying a bag onto a FAT or exFAT stick writes ``._<file>`` beside each file (and .DS_Store). Before:
    the folder without metadata.yaml was refused as 'not one split recording' for ``._killed_0.mcap``."""
    folder, events = _split(tmp_path, "killed", 2, metadata=False)
    for name in ("._killed_0.mcap", "._killed_1.mcap", ".DS_Store"):
        (folder / name).write_bytes(b"\x00\x05\x16\x07 Mac OS X resource fork")
    assert [(t, ns) for t, ns, _ in _read(folder)] == [(t, ns) for t, _, ns, _ in events]


def test_a_folder_without_metadata_holding_more_than_one_recording_is_refused_naming_its_files(tmp_path):
    """Without metadata.yaml a folder is read as one split recording only when its files are one: the files of
    two recordings (a_0, a_1 beside b_0), a split file missing (_0, _2) or file-compressed split files (which
    only metadata.yaml describes) are refused naming the files, never joined into one drive."""
    (tmp_path / "1").mkdir(), (tmp_path / "2").mkdir(), (tmp_path / "3").mkdir()
    folder, _ = _split(tmp_path / "1", "a", 2, metadata=False)
    _raw_mcap(folder / "b_0.mcap", _drive(n=4), chunk_size=1000)
    with pytest.raises(BagError, match=r"a_0.mcap, b_0.mcap, a_1.mcap are not one split recording"):
        BagReader(folder)
    gap, _ = _split(tmp_path / "2", "g", 3, metadata=False)
    (gap / "g_1.mcap").unlink()
    with pytest.raises(BagError, match=r"g_0.mcap, g_2.mcap are not one split recording .*none missing"):
        BagReader(gap)
    packed, _ = _split(tmp_path / "3", "z", 2, metadata=False)
    (packed / "z_0.mcap").rename(packed / "z_0.mcap.zstd")  # the name is what is refused, not the bytes
    with pytest.raises(BagError, match=r"file-compressed storage files z_0.mcap.zstd"):
        BagReader(packed)


@pytest.mark.parametrize("metadata", [False, True])
def test_a_split_bag_cut_in_its_last_file_is_refused_naming_it_and_salvaged_on_request(tmp_path, metadata):
    """Its last file cut short (no footer): refused naming that file and saying what to do; --allow-truncated
    reads the complete files and the last one up to the break; recover rewrites them into one complete bag."""
    folder, events = _split(tmp_path, "cut", 2, metadata=metadata)
    last = folder / "cut_1.mcap"
    _cut(last, 0.4)  # inside its data: the summary at its end is ~half of a file this small
    with pytest.raises(BagError) as err:
        BagReader(folder)
    assert str(last) in str(err.value) and "--allow-truncated" in str(err.value) and "--recover" in str(err.value)
    kept = _read(folder, allow_truncated=True)
    with BagReader(folder, allow_truncated=True) as reader:
        assert reader.salvaged and str(last) in reader.salvage_note and reader.message_count == len(kept)
    assert len(events) // 2 < len(kept) < len(events)
    assert [(t, ns) for t, ns, _ in kept] == [(t, ns) for t, _, ns, _ in events[: len(kept)]]
    fixed, n, note = recover(folder, tmp_path / "fixed")
    assert n == len(kept) and str(last) in note and _read(fixed) == kept


def test_a_split_bag_damaged_before_its_last_file_names_that_file(tmp_path):
    folder, _ = _split(tmp_path, "bad", 3, metadata=True)
    middle = folder / "bad_1.mcap"
    _cut(middle, 0.7)
    for allow in (False, True):
        with pytest.raises(BagError, match="separate bags") as err:
            BagReader(folder, allow_truncated=allow)
        assert str(middle) in str(err.value)


def test_a_sqlite3_folder_without_metadata_reads_like_its_db3_file(tmp_path):
    from rosbags.rosbag2 import StoragePlugin, Writer

    store = bag_io.typestore()
    events = _drive(n=10)
    folder = tmp_path / "sqlite"
    writer = Writer(folder, version=9, storage_plugin=StoragePlugin.SQLITE3)
    writer.open()
    conns = {}
    for topic, msgtype, ns, message in events:
        if topic not in conns:
            conns[topic] = writer.add_connection(topic, msgtype, typestore=store)
        writer.write(conns[topic], ns, bag_io._serialize(message, msgtype))
    writer.close()
    with_metadata = _read(folder)
    (folder / "metadata.yaml").unlink()
    assert _read(folder) == with_metadata == _read(next(folder.glob("*.db3")))
    assert [(t, ns) for t, ns, _ in with_metadata] == [(t, ns) for t, _, ns, _ in events]


# ------------------------------------------------------------------------------------------------ finding 7
HUMBLE_QOS = (
    "- history: 3\n  depth: 0\n  reliability: 1\n  durability: 2\n  deadline:\n    sec: 9223372036\n"
    "    nsec: 854775807\n  lifespan:\n    sec: 9223372036\n    nsec: 854775807\n  liveliness: 1\n"
    "  liveliness_lease_duration:\n    sec: 9223372036\n    nsec: 854775807\n  avoid_ros_namespace_conventions: false"
)


@pytest.mark.parametrize("edit", ["humble_qos", "other_type_hash"])
def test_metadata_that_disagrees_with_the_mcap_channels_still_reads_every_message(tmp_path, edit):
    """metadata.yaml from another tool or edited (Humble's QoS string, another type hash) no longer matches the
    channels in the MCAP file: every message is still read, from the file's own channels."""
    bag = _write(tmp_path / "meta", _drive(n=10))
    expected = _read(bag)
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())
    info = meta["rosbag2_bagfile_information"]
    for topic in info["topics_with_message_count"]:
        if edit == "humble_qos":
            info["version"], info["ros_distro"] = 8, "humble"
            topic["topic_metadata"]["offered_qos_profiles"] = HUMBLE_QOS
            topic["topic_metadata"].pop("type_description_hash", None)
        else:
            topic["topic_metadata"]["type_description_hash"] = "RIHS01_" + "0" * 64
    (bag / "metadata.yaml").write_text(yaml.safe_dump(meta))
    with BagReader(bag) as reader:
        assert reader.topics["/cmd_vel"].count == 10
    assert len(expected) == 20 and _read(bag) == expected


def test_a_rosbags_whose_storage_readers_changed_is_named_not_called_a_corrupt_bag(tmp_path, monkeypatch):
    """Messages are read from rosbags' storage readers directly (requirements.txt pins the version): another
    rosbags version warns once at the first bag, and a reader without what is read ends in an error naming the
    bag, the version installed and the one to install, not in 'corrupt bag'."""
    bag = _write(tmp_path / "drive", _drive(n=4))

    def changed(storage, wanted, digest=None, payloads=True):
        raise AttributeError("'McapReader' object has no attribute 'chunks'")
        yield

    monkeypatch.setattr(bag_io, "_storage_messages", changed)
    monkeypatch.setattr(bag_io, "_rosbags_version", lambda: "0.99.0")
    bag_io._check_rosbags_version.cache_clear()
    try:
        with pytest.warns(UserWarning, match=r"rosbags 0.99.0 is installed.*rosbags==0.11.9"):
            reader = BagReader(bag)
        with reader, pytest.raises(BagError) as refused:
            list(reader.messages())
    finally:
        bag_io._check_rosbags_version.cache_clear()
    assert "corrupt" not in str(refused.value)
    assert (
        str(bag) in str(refused.value) and "rosbags 0.99.0" in str(refused.value) and "==0.11.9" in str(refused.value)
    )


@pytest.mark.parametrize("mode", ["MESSAGE", "FILE"])
def test_a_compressed_bag_reads_every_message_as_rosbags_does(tmp_path, mode):
    """rosbag2's own compression (``--compression-mode message`` / ``file``, zstd), written by rosbags: every
    message reads back as rosbags' reader gives it (bytes decompressed, in log-time order)."""
    from rosbags.rosbag2 import CompressionFormat, CompressionMode, Reader, StoragePlugin, Writer

    bag, store = tmp_path / f"compressed_{mode.lower()}", bag_io.typestore()
    writer = Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.set_compression(getattr(CompressionMode, mode), CompressionFormat.ZSTD)
    with writer:
        conns = {}
        for topic, msgtype, ns, message in _drive(n=30):
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(conns[topic], ns, store.serialize_cdr(message, msgtype))
    with Reader(bag) as reader:
        expected = [(c.topic, t, bytes(d)) for c, t, d in reader.messages()]
    assert len(expected) == 60 and _read(bag) == expected


def test_out_of_order_bags_without_a_clock_step_read_as_rosbags_sorts_them_chunked_or_not(tmp_path):
    """Written topic by topic in an MCAP file without chunks (each topic's scan through a handle of its own: on
    one shared handle the merge lost 265 of 330 messages), and one topic logged 0.6 s behind the others (its
    stamps as log times: sorted in one pass) — both read exactly as log time, then the order written, sorts them."""
    imu = [
        ("/imu/data", M.IMU, int((T0 + j / 100) * 1e9), M.imu_message(np.full(6, j), T0 + j / 100)) for j in range(300)
    ]
    frames = [e for e in _drive(30) if e[0] == "/camera/image_raw"]
    by_topic = imu + frames
    flat = _raw_mcap(tmp_path / "flat.mcap", by_topic)
    expected = [(e[0], e[2]) for e in sorted(by_topic, key=lambda e: e[2])]
    with BagReader(flat) as reader:
        assert [(m.topic, m.log_time_ns) for m in reader.messages()] == expected
        assert reader.clock_steps == []
    behind = sorted(
        imu + [(t, k, ns, m) for t, k, ns, m in frames], key=lambda e: e[2] + 600_000_000 * (e[0] != "/imu/data")
    )
    lagged = _write(tmp_path / "lagged", behind)  # frames written 0.6 s after their log time (received late)
    with BagReader(lagged) as reader:
        got = [(m.topic, m.log_time_ns) for m in reader.messages()]
        assert reader.clock_steps == [] and reader._order[frozenset(reader.topics)] == (600_000_000, False)
    assert got == [(e[0], e[2]) for e in sorted(behind, key=lambda e: e[2])]


def test_a_clock_step_just_over_the_window_between_two_slow_topics_is_kept(tmp_path):
    """Two topics at 5 Hz, 0.1 s apart, the clock stepping back 0.65 s: no topic's own log time goes back by more
    than 0.5 s at the first message after the step (0.55 s), yet it lies 0.65 s behind the newest and behind its own
    topic's last: a clock step, kept where it happened (it was merged away)."""
    events = []
    for i in range(20):
        for offset, topic in ((0.0, "/camera/image_raw"), (0.1, "/cmd_vel")):
            real = i / 5 + offset
            clock = T0 + real - (0.65 if real >= 2.0 else 0.0)
            message = _frame(i, clock) if topic == "/camera/image_raw" else M.twist_message(i / 100, 0.0)
            events.append(
                (topic, M.IMAGE if topic == "/camera/image_raw" else M.TWIST, int(round(clock * 1e9)), message)
            )
    bag = _write(tmp_path / "slow", events)
    with BagReader(bag) as reader:
        got = [(m.topic, m.log_time_ns) for m in reader.messages()]
        assert len(reader.clock_steps) == 1
    assert got == [(e[0], e[2]) for e in events]  # the order written


def test_an_attribute_error_with_the_tested_rosbags_is_not_blamed_on_the_version(tmp_path, monkeypatch):
    """With the rosbags version the reading was tested with, an AttributeError is a bug here: raised as it is,
    not reported as a rosbags version to install."""
    bag = _write(tmp_path / "drive", _drive(n=4))

    def broken(storage, wanted, digest=None, payloads=True):
        raise AttributeError("a bug")
        yield

    monkeypatch.setattr(bag_io, "_storage_messages", broken)
    with BagReader(bag) as reader, pytest.raises(AttributeError, match="a bug"):
        list(reader.messages())


def test_a_lagged_topic_whose_own_log_time_jitters_back_is_no_clock_step(tmp_path):
    """A camera logged at its stamps 0.6 s behind the IMU, one frame stamped 1 ms before the one before it (two
    publishers, jittery hardware stamps): the IMU stays in order, so it is no step of the recorder's clock, and the
    bag reads as log time, then the order written, sorts it (it was read as 73 clock steps, and training found no
    labelled update)."""
    imu = [
        ("/imu/data", M.IMU, int((T0 + j / 200) * 1e9), M.imu_message(np.full(6, j), T0 + j / 200)) for j in range(600)
    ]
    frames = [(t, k, ns, m) for t, k, ns, m in _drive(45) if t == "/camera/image_raw"]
    received = [e[2] for e in imu] + [e[2] + 600_000_000 for e in frames]  # when each was written
    frames[20] = (frames[20][0], frames[20][1], frames[19][2] - 1_000_000, frames[20][3])  # 1 ms before frame 19
    written = [e for _, e in sorted(zip(received, imu + frames, strict=True), key=lambda pair: pair[0])]
    bag = _write(tmp_path / "lagged_jitter", written)
    with BagReader(bag) as reader:
        got = [(m.topic, m.log_time_ns) for m in reader.messages()]
        assert reader.clock_steps == [] and not reader._order[frozenset(reader.topics)][1]
    assert got == [(e[0], e[2]) for e in sorted(written, key=lambda e: e[2])]


def test_messages_after_close_are_refused_not_read_from_a_closed_file(tmp_path):
    """A generator of ``messages()`` used after ``close()``: a BagError 'bag is closed', chunked or not (an
    unchunked file's scan, through a handle of its own, went on reading; a chunked one raised AttributeError)."""
    for bag in (_write(tmp_path / "chunked", _drive(n=20)), _raw_mcap(tmp_path / "flat.mcap", _drive(n=20))):
        reader = BagReader(bag)
        messages = reader.messages()
        next(messages)
        reader.close()
        with pytest.raises(BagError, match="bag is closed"):
            list(messages)


# ------------------------------------------------------------------------------------------------ clock steps, lags
LIVE_IMU = ("/imu/data", 200, 0.0)  # (topic, Hz, how long after it is taken a message is written)
LATE_CAMERA = ("/camera/image_raw", 15, 1.0)  # logged at its stamps, received a second later
COMMAND = ("/cmd_vel", 15, 0.005)


def _recording(topics, steps=(), seconds=8.0, by_topic=False, jitter_s=0.0, starts=None, stops=None):
    """Events in the order written and each one's side of the clock's steps (how many steps it was taken after).
    A message taken at real time r is logged at the recording machine's clock then (its stamp: a recorder logging
    at stamps) and written ``lag`` s later; from each ``(at, s)`` of ``steps`` on, the clock reads ``s`` s less.
    ``by_topic``: written one topic after the other; ``jitter_s``: each log time off by up to that (uniform);
    ``starts``/``stops``: topic -> when (real time, s) its first message is taken / it stops."""
    rng = np.random.default_rng(5)
    rows = []
    for rank, (topic, hz, lag) in enumerate(topics):
        start = (starts or {}).get(topic, 0.0)
        for i in range(int(((stops or {}).get(topic, seconds) - start) * hz)):
            real = start + i / hz
            clock = T0 + real - sum(s for at, s in steps if real >= at) + rng.uniform(-jitter_s, jitter_s)
            ns = int(round(clock * 1e9))
            if topic == "/imu/data":
                event = (topic, M.IMU, ns, M.imu_message(np.full(6, i), clock))
            elif topic == "/cmd_vel":
                event = (topic, M.TWIST, ns, M.twist_message(i / 100, 0.0))
            else:
                event = (topic, M.IMAGE, ns, _frame(i, clock))
            rows.append(((rank if by_topic else 0, real + lag), sum(real >= at for at, _ in steps), event))
    rows.sort(key=lambda row: row[0])
    return [event for _, _, event in rows], [side for _, side, _ in rows]


def _read_steps(bag, topics=None):
    """(topic, log time) of the messages read and the reader's clock_steps."""
    with BagReader(bag) as reader:
        got = [(m.topic, m.log_time_ns) for m in reader.messages(topics)]
        return got, reader.clock_steps


def _assert_each_side_sorted(bag, events, sides, got, found):
    """The messages read side after side of the clock's steps, each sorted as rosbags sorts it (log time, then the
    order written), and one clock_steps entry per step: the first message logged after it once sorted (every
    message is read: its index is its written index) and the newest log time before it."""
    order = sorted(range(len(events)), key=lambda k: (sides[k], events[k][2], k))
    assert got == [(events[k][0], events[k][2]) for k in order]
    assert len(found) == max(sides)
    for side, (file, index, before, after) in enumerate(found, start=1):
        first = next(k for k in order if sides[k] == side)
        assert (file.parent, index) == (bag, first) and after == pytest.approx(events[first][2] * 1e-9)
        assert before == pytest.approx(max(events[k][2] for k in order if sides[k] == side - 1) * 1e-9)


@pytest.mark.parametrize(
    "steps, by_topic",
    [
        ([(3.0, 1.7)], False),
        ([(3.0, 0.7)], False),  # the camera's lag larger than the step
        ([(3.0, 1.7), (6.0, 0.9)], False),
        ([(3.0, 1.7), (3.6, 0.8)], False),  # the second before the camera crossed the first
        ([(3.0, 1.7), (6.0, 0.9)], True),  # written one topic after the other
    ],
)
def test_clock_steps_in_a_bag_with_a_topic_logged_behind_the_others_are_each_kept_once(tmp_path, steps, by_topic):
    """The recording machine's clock steps back in a bag whose camera is logged at its stamps 1 s behind the IMU and
    the commands: each step is one entry of clock_steps, and each side of a step reads as rosbags sorts it, the
    camera's frames taken before a step before it, though written after the IMU's first samples after it (one step
    was read as 107: every lagged frame a step back)."""
    events, sides = _recording([LIVE_IMU, LATE_CAMERA, COMMAND], steps, by_topic=by_topic)
    bag = _write(tmp_path / "lagged_steps", events)
    got, found = _read_steps(bag)
    _assert_each_side_sorted(bag, events, sides, got, found)


def test_training_on_a_bag_with_a_clock_step_and_a_lagged_camera_counts_one_step_and_keeps_its_labels(tmp_path):
    """Training (stream_updates) on that bag: one step back of the log time (it counted 107), the runner reset once
    (clock_backwards), every frame once, and the updates labelled (none was: each step back flushed the labels), the
    duration the 8 s driven (it read 109 s)."""
    events, _ = _recording([LIVE_IMU, LATE_CAMERA, COMMAND], [(3.0, 1.7)])
    bag = _write(tmp_path / "lagged_step", events)
    config = {**CAMERA_ONLY, "observation": {**CAMERA_ONLY["observation"], "vectors": {"imu": 6}}}
    spec = data_spec(config)
    stats = StreamStats()
    with BagReader(bag) as reader:
        updates = list(stream_updates(reader, capture_runner(config, spec), spec, stats))
    assert [int(u.obs["image"][0, 0, 0]) for u in updates] == list(range(120))
    assert [u.reset for u in updates if u.reset] == ["clock_backwards"] and updates[45].reset == "clock_backwards"
    assert stats.counters["log_time_steps_back"] == 1
    assert stats.counters["labelled"] == 118 and stats.counters["unlabelled"] == 2
    assert stats.duration_s == pytest.approx(8.0 - 0.005, abs=0.01)


@pytest.mark.parametrize(
    "camera_start, step",
    [
        (2.5, (3.0, 1.7)),  # the first frame taken before the step, written after it
        (2.5, (3.0, 0.9)),  # the same with a step smaller than the camera's lag
        (4.0, (3.0, 1.7)),  # the first frame taken after the step
    ],
)
def test_a_lagged_topic_that_starts_around_a_clock_step_is_placed_on_its_side(tmp_path, camera_start, step):
    """A camera logged 1 s behind whose first frame is written after the IMU crossed the step: its frames taken
    before the step are read before it, those taken after it after it, one clock step (the frames' first log times
    fit either side)."""
    events, sides = _recording([LIVE_IMU, LATE_CAMERA, COMMAND], [step], starts={"/camera/image_raw": camera_start})
    bag = _write(tmp_path / "late_camera", events)
    got, found = _read_steps(bag)
    _assert_each_side_sorted(bag, events, sides, got, found)


def test_a_live_topic_that_starts_after_a_clock_step_is_read_after_it(tmp_path):
    """The commands start 1 s after the step, when only the IMU had crossed it (the camera is 1 s behind): they are
    logged on the clock after the step, so read after it, one clock step."""
    events, sides = _recording([LIVE_IMU, LATE_CAMERA, COMMAND], [(3.0, 1.7)], starts={"/cmd_vel": 3.5})
    bag = _write(tmp_path / "late_commands", events)
    got, found = _read_steps(bag)
    _assert_each_side_sorted(bag, events, sides, got, found)


@pytest.mark.parametrize("lag", [0.6, 1.0, 1.9])
def test_a_lagged_camera_and_a_live_topic_starting_later_without_a_clock_step_read_as_rosbags_sorts(tmp_path, lag):
    """No clock step: a camera logged at its stamps ``lag`` s behind from the start, the commands (logged when
    received) from 2.7 s on, every log time jittering by up to 1 ms: no clock step, and exactly rosbags' order (a
    first fix read the later topic's start as a step: every lagged frame looked behind the newest)."""
    from rosbags.rosbag2 import Reader

    events, _ = _recording(
        [("/camera/image_raw", 30, lag), COMMAND], seconds=7.7, jitter_s=0.001, starts={"/cmd_vel": 2.69}
    )
    bag = _write(tmp_path / "late_live", events)
    got, found = _read_steps(bag)
    with Reader(bag) as reader:
        assert got == [(c.topic, t) for c, t, _ in reader.messages()]
    assert found == []


def test_two_lagged_cameras_crossing_a_small_step_back_together_is_no_clock_step(tmp_path):
    """Two cameras logged 1 s behind, written 1 ms apart, cross a 0.3 s step back of the clock (sorted in: less
    than the window) one after the other, each more than the window behind the IMU's newest: no step there (the
    second going back against its own newest confirmed the first as one), only the real 1.7 s step later."""
    topics = [LIVE_IMU, ("/camera/image_raw", 15, 1.0), ("/camera2/image_raw", 15, 1.001)]
    events, sides = _recording(topics, [(2.0, 0.3), (5.0, 1.7)])
    sides = [max(0, side - 1) for side in sides]  # the small step is sorted in
    bag = _write(tmp_path / "two_cameras", events)
    got, found = _read_steps(bag)
    _assert_each_side_sorted(bag, events, sides, got, found)


def test_topics_starting_after_a_gap_across_two_clock_steps_are_read_after_both(tmp_path):
    """A camera logged 0.3 s behind, alone, crosses two steps back of the clock (1.2 s each) and stops; the IMU and
    the commands start 0.6 s and 1.4 s later: their log times fit the segment between the steps too (the camera's
    last after the second one lies more than the window behind them), yet they were logged after both (they were
    read between the two steps)."""
    camera = ("/camera/image_raw", 60, 0.3)
    events, sides = _recording(
        [camera, LIVE_IMU, COMMAND],
        [(2.7, 1.2), (3.8, 1.2)],
        starts={"/imu/data": 4.6, "/cmd_vel": 5.4},
        stops={"/camera/image_raw": 4.0},
    )
    bag = _write(tmp_path / "gap", events)
    got, found = _read_steps(bag)
    _assert_each_side_sorted(bag, events, sides, got, found)


def test_a_clock_step_that_only_a_topic_starting_after_it_shows_is_kept(tmp_path):
    """The IMU crosses a step back of the clock and stops; the clock steps back 4 s more while nothing is logged;
    the commands start after it, logged more than the window behind the IMU's last and below every log time after
    the first step: a second step (they were read in the first step's segment)."""
    events, sides = _recording(
        [LIVE_IMU, COMMAND], [(1.0, 1.7), (2.5, 4.0)], starts={"/cmd_vel": 3.0}, stops={"/imu/data": 2.0}
    )
    bag = _write(tmp_path / "unseen_step", events)
    got, found = _read_steps(bag)
    _assert_each_side_sorted(bag, events, sides, got, found)


def test_a_joint_state_without_efforts_serialized_by_rclpy_reads_with_rosbags_and_ours(tmp_path):
    """rclpy serializes a JointState with an empty `effort` with 4 bytes of padding past the message (92 bytes for
    the 88 the DDS wire carries; the 4 not even zeroed), and rosbags refuses that ("CDR message size mismatch"):
    every balancing bag sim_node recorded (`--record-bag`) failed `eval --bag` and `train --bag` at its first
    /joint_states. Written now without the padding (rosbags' own deserializer reads it), and bags written before
    still read here."""
    from rclpy.serialization import serialize_message
    from rosbags.typesys import Stores, get_typestore
    from sensor_msgs.msg import JointState

    msg = JointState(name=["wheel_left", "wheel_right"], position=[0.1, 0.2], velocity=[1.5, -0.5])
    msg.header.stamp.sec = 7
    padded = serialize_message(msg)
    assert len(padded) == 108  # what rclpy makes of it: 4 bytes past the message, not even zeroed
    with BagWriter(tmp_path / "new") as bag:  # an rclpy message, as sim_node's recorder writes it
        bag.write("/joint_states", 7_000_000_000, msg)
    with BagWriter(tmp_path / "old") as bag:  # the bytes such recorders wrote before
        bag.add_topic("/joint_states", M.JOINT_STATE)
        bag.write("/joint_states", 7_000_000_000, padded)
    store = get_typestore(Stores.ROS2_KILTED)
    with BagReader(tmp_path / "new") as reader:
        (written,) = list(reader.messages(["/joint_states"]))
    assert len(written.data) == 104
    independent = store.deserialize_cdr(written.data, "sensor_msgs/msg/JointState")  # rosbags alone
    assert list(independent.velocity) == [1.5, -0.5] and independent.header.stamp.sec == 7
    with BagReader(tmp_path / "old") as reader:
        (old,) = list(reader.messages(["/joint_states"]))
    assert len(old.data) == 108 and list(old.decode().velocity) == [1.5, -0.5]
    # positions only: rclpy overshoots by 8
    positions = JointState(name=["wheel_left"], position=[0.3])
    with BagWriter(tmp_path / "positions") as bag:
        bag.write("/joint_states", 1, positions)
        bag.add_topic("/raw", M.JOINT_STATE)
        bag.write("/raw", 2, serialize_message(positions))
    with BagReader(tmp_path / "positions") as reader:
        written, raw = list(reader.messages(["/joint_states", "/raw"]))
    assert len(raw.data) - len(written.data) == 8 and list(raw.decode().position) == [0.3]
    assert list(store.deserialize_cdr(written.data, "sensor_msgs/msg/JointState").position) == [0.3]


def test_a_message_of_per_message_compression_past_its_bound_is_refused_without_decompressing_it(tmp_path, monkeypatch):
    """Before: a bag compressed message by message (rosbag2's --compression-mode message) had each message
    decompressed whole, with no bound: a few kB of zstd holding 128 MB of zeros took 128 MB (a 4 GB one, 4 GB).
    Such a message records no size, so decompression stops at MAX_MESSAGE_BYTES and the bag is refused."""
    import tracemalloc

    import rosbags.rosbag2.writer as rosbags_writer
    from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

    extra = 128 << 20
    compress = rosbags_writer.zstd.compress

    def bomb(data, *args, **kwargs):  # the frame of a message that decompresses to 128 MB more than it holds
        return compress(bytes(data) + bytes(extra))

    bag, store = tmp_path / "bomb", bag_io.typestore()
    writer = Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.set_compression(CompressionMode.MESSAGE, CompressionFormat.ZSTD)
    monkeypatch.setattr(rosbags_writer.zstd, "compress", bomb)
    with writer:
        topic, msgtype, ns, message = next(iter(_drive(n=1)))
        writer.write(writer.add_connection(topic, msgtype, typestore=store), ns, store.serialize_cdr(message, msgtype))
    monkeypatch.undo()
    assert sum(f.stat().st_size for f in bag.iterdir()) < (1 << 20)
    monkeypatch.setattr(bag_io, "MAX_MESSAGE_BYTES", 1 << 20)  # the bound (1 GiB) lowered: a bomb past it
    tracemalloc.start()
    try:
        with pytest.raises(BagError, match=rf"corrupt bag.*a message on {topic} decompresses to more than 1048576"):
            _read(bag)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < extra // 4


def _edit_metadata(bag, edit):
    """metadata.yaml of ``bag`` rewritten by ``edit`` (its text -> the new text)."""
    meta = bag / "metadata.yaml"
    text = meta.read_text()
    assert edit(text) != text
    meta.write_text(edit(text))


def test_a_metadata_yaml_of_aliases_of_aliases_is_refused_naming_it(tmp_path, capsys):
    """A downloaded bag's metadata.yaml whose file list holds aliases of aliases (a "billion laughs"). Before: read
    with yaml.safe_load, each entry was expanded into a file name (str() of a million names here; with two more
    levels of the same few lines `record --info`, eval and training never ended)."""
    from liquid_control import cli

    bag = _write(tmp_path / "bag", _drive(n=2))
    levels = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 6)]
    _edit_metadata(bag, lambda text: "\n".join(levels) + "\n" + text.replace("- bag.mcap", "- *l5"))
    refusal = f"{bag / 'metadata.yaml'}: not readable: aliases expand"
    with pytest.raises(BagError, match=re.escape(refusal)):
        BagReader(bag)
    assert cli.main(["record", "--info", str(bag)]) == 2
    assert refusal in capsys.readouterr().err


TOPIC_1 = "topics_with_message_count[1].topic_metadata"  # /cmd_vel's entry in the metadata.yaml of _write


@pytest.mark.parametrize(
    "old, new, key, got",
    [
        ("name: /cmd_vel", "name: [a]", f"{TOPIC_1}.name", "['a']"),
        ("name: /cmd_vel", "name: 5", f"{TOPIC_1}.name", "5"),
        ("name: /cmd_vel", "name: null", f"{TOPIC_1}.name", "None"),
        ("type: geometry_msgs/msg/Twist", "type: {a: 1}", f"{TOPIC_1}.type", "{'a': 1}"),
        ("- message_count: 2", "- message_count: two", "topics_with_message_count[0].message_count", "'two'"),
        ("\n  message_count: 4", "\n  message_count: abc", "message_count", "'abc'"),
        ("\n  message_count: 4", "\n  message_count: -4", "message_count", "-4"),
    ],
)
def test_a_metadata_yaml_value_of_another_type_is_refused_naming_the_file_and_key(tmp_path, old, new, key, got):
    """A hand-edited or hostile metadata.yaml: rosbags takes its topic names, types and counts as they are. Before:
    TypeError / ValueError tracebacks ('unhashable type: list', "'<' not supported between ... 'str' and 'int'",
    'invalid literal for int()') naming neither the file nor the key."""
    bag = _write(tmp_path / "bag", _drive(n=2))
    _edit_metadata(bag, lambda text: text.replace(old, new, 1))
    with pytest.raises(BagError) as refused:
        BagReader(bag)
    assert str(refused.value).startswith(f"{bag / 'metadata.yaml'}: {key} must be ")
    assert str(refused.value).endswith(f", got {got}")


def test_a_file_compressed_bag_unpacking_to_more_than_the_temp_folder_holds_is_refused_before_unpacking(
    tmp_path, monkeypatch
):
    """rosbags reads a file-compressed bag (``--compression-mode file``) by unpacking each file whole into the temp
    folder. Before: a 64 kB download of zstd zeros wrote 2 GB there before it was refused ('Unexpected record'),
    and a larger one filled the disk (or, with /tmp in memory, the memory). Now a bag whose files unpack to more
    than the temp folder has free is refused before anything is written there, naming the file and the folder."""
    import tempfile

    import zstandard
    from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

    bag, store = tmp_path / "packed", bag_io.typestore()
    writer = Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.set_compression(CompressionMode.FILE, CompressionFormat.ZSTD)
    with writer:
        topic, msgtype, ns, message = next(iter(_drive(n=1)))
        writer.write(writer.add_connection(topic, msgtype, typestore=store), ns, store.serialize_cdr(message, msgtype))
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    assert len(_read(bag)) == 1  # a bag that fits reads as before
    packed = next(bag.glob("*.mcap.zstd"))
    compressor = zstandard.ZstdCompressor(level=19).compressobj()
    bomb = compressor.compress(b"\x89MCAP0\r\n") + compressor.compress(bytes(64 << 20)) + compressor.flush()
    packed.write_bytes(bomb)
    assert len(bomb) < (64 << 20) // 100
    monkeypatch.setattr(bag_io, "_free_temp_bytes", lambda: 16 << 20, raising=False)
    unpacking, open_reader = [], bag_io.Reader.open

    def opens(reader):  # rosbags' reader: where it unpacks the files
        unpacking.append(reader)
        return open_reader(reader)

    monkeypatch.setattr(bag_io.Reader, "open", opens)
    with pytest.raises(BagError) as refused:
        BagReader(bag)
    assert str(refused.value).startswith(f"{packed}: a file-compressed bag is unpacked whole into {temp} to be read")
    assert "16777216 bytes free" in str(refused.value)
    assert not unpacking and not list(temp.iterdir())


def _file_compressed_bag(path, storage="mcap"):
    """A bag of one /cmd_vel written by rosbags with ``--compression-mode file`` (zstd); its one ``.zstd`` file."""
    from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

    store = bag_io.typestore()
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    writer = Writer(path, version=9, storage_plugin=plugin)
    writer.set_compression(CompressionMode.FILE, CompressionFormat.ZSTD)
    with writer:
        topic, msgtype, ns, message = next(iter(_drive(n=1)))
        writer.write(writer.add_connection(topic, msgtype, typestore=store), ns, store.serialize_cdr(message, msgtype))
    return next(path.glob("*.zstd"))


@pytest.mark.parametrize("storage, kind", [("mcap", "an MCAP"), ("sqlite3", "an SQLite")])
def test_a_file_compressed_bag_not_unpacking_to_its_storages_magic_is_refused_before_unpacking(
    tmp_path, monkeypatch, storage, kind
):
    """Before: a 109 kB `head -c 3G /dev/zero | zstd` as a bag's .mcap.zstd unpacked to 3 GB in the temp folder
    (room enough there) before rosbags refused it ('File magic is invalid'). Now the first bytes are unpacked as a
    stream and the file refused, naming it, where they are not the magic of its storage."""
    import tempfile

    import zstandard

    packed = _file_compressed_bag(tmp_path / "packed", storage)
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    assert len(_read(tmp_path / "packed")) == 1  # the bag as written reads
    compressor = zstandard.ZstdCompressor(level=19).compressobj()
    packed.write_bytes(compressor.compress(bytes(32 << 20)) + compressor.flush())
    monkeypatch.setattr(bag_io, "_free_temp_bytes", lambda: 1 << 40)  # all the room it could take
    unpacking, open_reader = [], bag_io.Reader.open
    monkeypatch.setattr(bag_io.Reader, "open", lambda reader: unpacking.append(reader) or open_reader(reader))
    with pytest.raises(BagError) as refused:
        BagReader(tmp_path / "packed")
    assert str(refused.value) == (
        f"{packed}: does not unpack to {kind} file (its first bytes are not the magic of the storage_identifier "
        f"{storage} of metadata.yaml): a damaged or foreign file, or a decompression bomb; refused before unpacking "
        f"it into {temp}"
    )
    assert not unpacking and not list(temp.iterdir())


def test_a_file_compressed_bag_is_unpacked_only_leaving_a_tenth_of_the_temp_folder_spare(tmp_path, monkeypatch):
    """Before: only files unpacking to more than all the free space were refused: a 1.4 MB bomb unpacking to 40 GB
    was unpacked where 41 GB were free (or, with /tmp a tmpfs larger than the memory left, into the memory). Now
    the unpacked files must leave a tenth of the free space spare, and a temp folder in memory counts no more than
    the memory available. (A floor of 256 MiB spare, tried first, refused every such bag on a robot with a small
    /tmp in memory.)"""
    import tempfile

    packed = _file_compressed_bag(tmp_path / "packed")
    unpacked = len(bag_io._zstd().decompress(packed.read_bytes()))
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.setattr(bag_io, "_free_temp_bytes", lambda: unpacked * 10 // 9 + 10)
    assert len(_read(tmp_path / "packed")) == 1  # fits, a tenth spare
    monkeypatch.setattr(bag_io, "_free_temp_bytes", lambda: 200 << 20)  # a robot's small /tmp: a few kB still read
    assert len(_read(tmp_path / "packed")) == 1
    free = unpacked + unpacked // 20  # room for it, but not with a tenth spare
    monkeypatch.setattr(bag_io, "_free_temp_bytes", lambda: free)
    with pytest.raises(BagError) as refused:
        BagReader(tmp_path / "packed")
    assert str(refused.value) == (
        f"{packed}: a file-compressed bag is unpacked whole into {temp} to be read, and its files unpack to at "
        f"least {unpacked} bytes, more than the {free} bytes free there can take with a tenth kept spare: set "
        "TMPDIR to a folder with room"
    )
    assert not list(temp.iterdir())
    import zstandard  # a bomb that starts with the storage's magic: refused by the room it takes, and said to be one

    packed.write_bytes(zstandard.ZstdCompressor(level=19).compress(bag_io.MCAP_MAGIC + bytes(8 << 20)))
    with pytest.raises(BagError, match=r"set TMPDIR to a folder with room \(or a decompression bomb: \d+ times its"):
        BagReader(tmp_path / "packed")
    monkeypatch.undo()
    monkeypatch.setattr(bag_io, "_in_memory", lambda folder: True)
    monkeypatch.setattr(bag_io, "_memory_available_bytes", lambda: 12345)
    assert bag_io._free_temp_bytes() == 12345  # a tmpfs's size counts no more than the memory left


def _footerless_mcap_of_one_chunk(path, records: bytes, claimed: int | None = None):
    """An MCAP file cut before its footer (a recorder killed) holding one zstd chunk of ``records``, claiming
    ``claimed`` bytes uncompressed (None: their size)."""
    import struct

    import zstandard

    def record(opcode, body):
        return bytes([opcode]) + struct.pack("<Q", len(body)) + body

    def string(text):
        return struct.pack("<I", len(text)) + text.encode()

    packed = zstandard.ZstdCompressor(level=19).compress(records)
    size = len(records) if claimed is None else claimed
    chunk = struct.pack("<QQQI", 0, 1, size, 0) + string("zstd") + struct.pack("<Q", len(packed)) + packed
    path.write_bytes(b"\x89MCAP0\r\n" + record(0x01, string("ros2") + string("test")) + record(0x06, chunk))
    return path


@pytest.mark.parametrize("claimed, why", [(None, "a record of opcode 0x00"), (2 << 20, "gives 2097152 bytes")])
def test_a_truncated_bag_whose_chunk_is_a_decompression_bomb_is_salvaged_up_to_it_at_once(
    tmp_path, monkeypatch, claimed, why
):
    """The salvage of a truncated MCAP (record --info, --allow-truncated, record --recover) unpacked each chunk as
    the mcap library does: to whatever size the chunk claims, then record by record. Before: a 2 kB chunk of zstd
    zeros claiming 64 MiB took 37 s and 142 MB (2 GiB: over 5 minutes, 2 GB), a claim past MAX_CHUNK_BYTES was
    unpacked too. Now the salvage stops at such a chunk, as at any damage, naming why, before reading its
    records."""
    zeros = 1 << 20
    monkeypatch.setattr(bag_io, "MAX_CHUNK_BYTES", 1 << 20)  # the bound (1 GiB) lowered: a claim past it
    mcap = _footerless_mcap_of_one_chunk(tmp_path / "cut.mcap", bytes(zeros), claimed)
    with BagReader(mcap, allow_truncated=True) as reader:
        assert reader.salvaged and reader.message_count == 0
        assert "at byte 33 of" in reader.salvage_note and why in reader.salvage_note, reader.salvage_note
        assert list(reader.messages()) == []


def test_a_chunk_whose_records_are_zeros_is_refused_as_damage_not_read_as_no_messages(tmp_path):
    """A complete MCAP whose chunk holds zeros (a power cut's unwritten tail, a decompression bomb) and no CRC (other
    writers leave it 0). Before: the zeros were read as 9-byte records of opcode 0 (2 GiB of them for minutes), and
    the bag as one without those messages, without a word."""
    import struct

    mcap = tmp_path / "zeroed.mcap"
    from mcap.writer import CompressionType, Writer

    store = bag_io.typestore()
    with open(mcap, "wb") as handle:
        writer = Writer(handle, use_chunking=True, enable_crcs=False, compression=CompressionType.NONE)
        writer.start(profile="ros2", library="test")
        text, _ = store.generate_msgdef(M.TWIST, ros_version=2)
        schema = writer.register_schema(name=M.TWIST, encoding="ros2msg", data=text.encode())
        channel = writer.register_channel("/cmd_vel", "cdr", schema, {})
        for i in range(5):
            data = bytes(bag_io._serialize(M.twist_message(i / 10, 0.0), M.TWIST))
            writer.add_message(channel, log_time=int(T0 * 1e9) + i, data=data, publish_time=0)
        writer.finish()
    assert len(_read(mcap)) == 5
    data = bytearray(mcap.read_bytes())
    pos = 8
    while data[pos] != 0x06:  # the first chunk: its records (uncompressed) follow its 49-byte head
        pos += 9 + struct.unpack_from("<Q", data, pos + 1)[0]
    (size,) = struct.unpack_from("<Q", data, pos + 41)
    data[pos + 49 : pos + 49 + size] = bytes(size)
    mcap.write_bytes(data)
    refusal = rf"zeroed.mcap: corrupt bag: ValueError: the chunk at byte {pos} holds a record of opcode 0x00 at byte 0"
    with pytest.raises(BagError, match=refusal):
        _read(mcap)


def _count_decompressions(monkeypatch) -> list:
    calls = []
    decompressed = bag_io._decompressed

    def counted(data, compression, size, where):
        calls.append(where)
        return decompressed(data, compression, size, where)

    monkeypatch.setattr(bag_io, "_decompressed", counted)
    return calls


def test_the_order_scan_of_an_indexed_mcap_decompresses_no_chunk_and_reading_each_chunk_once(tmp_path, monkeypatch):
    """The order scans (log times only) take an indexed chunk's log times from its message indexes: a
    chunk-compressed bag is read with each chunk decompressed once (twice before: the scan decompressed every chunk
    too, ~45% of reading a 320x240 camera bag), and one with a clock step back has its step found without
    decompressing anything, and reads in the same order as when the scan decompressed every chunk."""
    every_chunk = bag_io._storage_messages

    def scan_decompressing(storage, wanted, digest=None, payloads=True):  # the reference: log times from the chunks
        return every_chunk(storage, wanted, digest, True)

    for name, events in (("steady", _drive(n=60)), ("stepped", _drive(n=60, step_at=2.0, step_s=30.0))):
        bag = _raw_mcap(tmp_path / f"{name}.mcap", events, chunk_size=2000)
        with monkeypatch.context() as before:
            before.setattr(bag_io, "_storage_messages", scan_decompressing)
            expected = _read(bag)
        calls = _count_decompressions(monkeypatch)
        with BagReader(bag) as reader:
            chunks = len(reader._parts[0].storage.chunks)
            assert reader._scan_order(set(reader.topics))[1] == (name == "stepped") and calls == []
            got = [(m.topic, m.log_time_ns, m.data) for m in reader.messages()]
            assert len(reader.clock_steps) == (name == "stepped")
        assert got == expected and len(got) == len(events) and chunks > 5
        if name == "steady":
            assert len(calls) == chunks and sorted(calls) == sorted(set(calls))
        monkeypatch.undo()


def test_a_message_index_that_disagrees_with_its_chunk_is_a_corrupt_bag_naming_the_file(tmp_path):
    """The order comes from the message indexes, the messages from the chunk: an index whose log time was changed
    (bytes damaged outside the chunk, which its CRC does not cover) is refused naming the file, not read in an
    order its messages do not have."""
    bag = _raw_mcap(tmp_path / "indexed.mcap", _drive(n=30), chunk_size=2000)
    with BagReader(bag) as reader:
        offset = next(iter(reader._parts[0].storage.chunks[1].message_index_offsets.values()))
    data = bytearray(bag.read_bytes())
    assert data[offset] == 0x07  # a message index record
    log_time = int.from_bytes(data[offset + 15 : offset + 23], "little")
    data[offset + 15 : offset + 23] = (log_time + 1).to_bytes(8, "little")
    bag.write_bytes(bytes(data))
    with BagReader(bag) as reader, pytest.raises(BagError) as refused:
        list(reader.messages())
    assert str(bag) in str(refused.value) and "message indexes do not list its message" in str(refused.value)
