"""Bags written by other tools than ours (the ``mcap`` library, rosbag2 storage options, hand-made folders):
read as their files hold them."""

import numpy as np
import pytest
from mcap.writer import CompressionType, IndexType, Writer

from liquid_control.bags import BagError, BagReader, recover
from liquid_control.bags import io as bag_io
from liquid_control.bags import messages as M

T0 = 1_750_000_000.0


def _events(n=30):
    """(topic, msgtype, log time ns, CDR bytes): a 4x4 camera at 20 Hz and the command answering each frame."""
    store = bag_io.typestore()
    out = []
    for i in range(n):
        t = T0 + i / 20.0
        image = M.image_message(np.full((4, 4, 3), i, np.uint8), t - 0.01)
        out.append(("/camera/image_raw", M.IMAGE, int(t * 1e9), store.serialize_cdr(image, M.IMAGE)))
        command = M.twist_message(i / 100.0, 0.0)
        out.append(("/cmd_vel", M.TWIST, int(t * 1e9) + 5_000_000, store.serialize_cdr(command, M.TWIST)))
    return out


def _mcap(path, events, **options):
    """One MCAP file written by the ``mcap`` library (ros2 profile, ros2msg schemas, CDR), chunks of ~1.5 kB; one
    channel per (topic, type), as rosbag2 records publishers of two types on one topic."""
    store = bag_io.typestore()
    with open(path, "wb") as handle:
        writer = Writer(handle, chunk_size=1500, **options)
        writer.start(profile="ros2", library="test")
        schemas, channels = {}, {}
        for topic, msgtype, ns, data in events:
            if msgtype not in schemas:
                text = store.generate_msgdef(msgtype, ros_version=2)[0].encode()
                schemas[msgtype] = writer.register_schema(name=msgtype, encoding="ros2msg", data=text)
            if (topic, msgtype) not in channels:
                channels[topic, msgtype] = writer.register_channel(topic, "cdr", schemas[msgtype], {})
            writer.add_message(channels[topic, msgtype], log_time=ns, data=data, publish_time=ns)
        writer.finish()
    return path


def _read(bag, topics=None):
    with BagReader(bag) as reader:
        return [(m.topic, m.log_time_ns, bytes(m.data)) for m in reader.messages(topics)]


@pytest.mark.parametrize("compression", [CompressionType.ZSTD, CompressionType.LZ4, CompressionType.NONE])
def test_chunks_without_message_indexes_are_read(tmp_path, compression):
    """MCAP makes a chunk's message indexes optional (rosbag2's storage option noMessageIndex, the mcap library's
    index_types): before, every chunk without them was skipped, so such a bag read as no message at all while its
    statistics counted every one ("the bag holds no messages" for train/eval)."""
    events = _events()
    bag = _mcap(tmp_path / "no_message_index.mcap", events, compression=compression, index_types=IndexType.CHUNK)
    expected = [(topic, ns, data) for topic, _, ns, data in events]
    with BagReader(bag) as reader:
        assert reader.message_count == len(events)
    assert _read(bag) == expected
    assert _read(bag, ["/cmd_vel"]) == [e for e in expected if e[0] == "/cmd_vel"]


def _second_type(events, topic, msgtype, convert):
    """``events`` with a message of ``msgtype`` (``convert(message, log time s)``) 1 us after each on ``topic``."""
    store = bag_io.typestore()
    out = list(events)
    for name, kind, ns, data in events:
        if name == topic:
            other = convert(store.deserialize_cdr(data, kind), ns * 1e-9)
            out.append((topic, msgtype, ns + 1000, store.serialize_cdr(other, msgtype)))
    return sorted(out, key=lambda e: e[2])


def test_a_topic_recorded_with_two_types_reads_each_message_as_its_own(tmp_path):
    """Publishers of two types on one topic (an image_transport republisher on the camera's name; a teleop node
    publishing TwistStamped beside a Twist one): each is its own MCAP channel. Before, the topic took the type of
    the last channel with the count of all: the camera read as 60 CompressedImage and was refused ('topic
    /camera/image_raw is sensor_msgs/msg/CompressedImage'), record --info said so too; training on a command topic
    of Twist and TwistStamped died in an AttributeError traceback ('... Twist' object has no attribute 'twist');
    replay published the second type's bytes on a publisher of the first, recover filed them as the first's."""
    from liquid_control.bags import data_spec, stream_updates
    from liquid_control.bags.stream import StreamStats, capture_runner
    from liquid_control.ros.recorder_node import bag_info

    store = bag_io.typestore()
    events = _events()

    def compressed(image, t):
        return store.types[M.COMPRESSED_IMAGE](header=image.header, format="jpeg", data=np.zeros(3, np.uint8))

    camera = _mcap(tmp_path / "camera.mcap", _second_type(events, "/camera/image_raw", M.COMPRESSED_IMAGE, compressed))
    with BagReader(camera) as reader:
        info = reader.topics["/camera/image_raw"]
        assert info.msgtypes == {M.IMAGE: 30, M.COMPRESSED_IMAGE: 30} and info.count == 60
        assert reader.require("/camera/image_raw", [M.IMAGE]) is info
    assert f"/camera/image_raw: {M.IMAGE} (30 messages) and {M.COMPRESSED_IMAGE} (30 messages)" in bag_info(camera)
    config = {
        "name": "tiny",
        "world": "LiquidRover-v0",
        "observation": {"image": {"height": 4, "width": 4}, "vectors": {}, "update_on": "camera"},
        "encoder": {"camera": {"channels": [4], "kernel_sizes": [3], "strides": [2], "features": 8}},
        "core": {"type": "cfc", "units": 12, "wiring": "ncp", "mode": "pure"},
        "action": {"size": 2, "low": [-1, -1], "high": [1, 1], "kind": "twist"},
    }
    spec = data_spec(config)
    stats = StreamStats()
    with BagReader(camera) as reader:  # the node subscribes to Image: the CompressedImage messages never reach it
        updates = list(stream_updates(reader, capture_runner(config, spec), spec, stats))
    assert [int(u.obs["image"][0, 0, 0]) for u in updates] == list(range(30))
    assert stats.counters["labelled"] == 30 and stats.counters["other_type.camera"] == 30

    def stamped(twist, t):
        return store.types[M.TWIST_STAMPED](header=M.header(t), twist=twist)

    commands = _mcap(tmp_path / "commands.mcap", _second_type(events, "/cmd_vel", M.TWIST_STAMPED, stamped))
    with BagReader(commands) as reader, pytest.raises(BagError) as refused:
        list(stream_updates(reader, capture_runner(config, spec), spec))
    assert f"/cmd_vel was recorded with more than one command type: {M.TWIST} (30), {M.TWIST_STAMPED} (30)" in str(
        refused.value
    )

    said = f"/cmd_vel .{M.TWIST} and {M.TWIST_STAMPED}.; nothing written .train, eval and replay read the bag as"
    with pytest.raises(BagError, match=said):
        recover(commands, tmp_path / "recovered")  # it filed the TwistStamped bytes as Twist messages
    assert not (tmp_path / "recovered").exists()

    from liquid_control.ros.replay import Replay

    class Node:  # what Replay asks of an rclpy node here; the publishers keep what they are given
        def create_publisher(self, cls, topic, qos):
            publisher = type("Publisher", (), {"sent": [], "publish": lambda self, data: self.sent.append(data)})()
            published[topic] = publisher
            return publisher

    published = {}
    with BagReader(commands) as reader:
        replay = Replay(Node(), [reader], ["/cmd_vel"], classes={"/cmd_vel": object})
        import threading

        assert replay.play(reader, rate=1000.0, stop=threading.Event()) == 30
    twists = [data for topic, kind, _, data in events if topic == "/cmd_vel"]
    assert [bytes(d) for d in published["/cmd_vel"].sent] == twists


IDL = "=" * 80 + "\n"


def test_a_custom_type_defined_in_ros2idl_is_decoded_and_recovered(tmp_path):
    """rosbag2 stores the definition of a type from an .idl file as a ros2idl schema (one 'IDL: pkg/msg/Type'
    section per type needed). Before, it was parsed as ros2msg, which failed in silence: the topic's messages
    could not be decoded (KeyError) and `record --recover` refused the bag ('unknown to the rosbags type store')."""
    from liquid_control.bags.io import recover

    schema = (
        f"{IDL}IDL: idl_case/msg/Track\n"
        '#include "idl_case/msg/Spot.idl"\n'
        "module idl_case { module msg { struct Track { idl_case::msg::Spot spot; string label; }; }; };\n"
        f"{IDL}IDL: idl_case/msg/Spot\n"
        "module idl_case { module msg { struct Spot { double x; double y; }; }; };\n"
    )
    # CDR (little endian): its 4-byte header, then x, y and label "ok" (aligned from after the header)
    data = b"\x00\x01\x00\x00" + np.array([1.5, -2.0]).tobytes() + b"\x03\x00\x00\x00ok\x00"
    path = tmp_path / "idl.mcap"
    with open(path, "wb") as handle:
        writer = Writer(handle)
        writer.start(profile="ros2", library="test")
        channel = writer.register_channel(
            "/track", "cdr", writer.register_schema("idl_case/msg/Track", "ros2idl", schema.encode()), {}
        )
        for i in range(3):
            writer.add_message(channel, log_time=int(T0 * 1e9) + i, data=data, publish_time=0)
        writer.finish()
    with BagReader(path) as reader:
        track = next(reader.messages()).decode()
    assert (track.spot.x, track.spot.y, track.label) == (1.5, -2.0, "ok")
    fixed = recover(path, tmp_path / "fixed").path
    with BagReader(fixed) as reader:
        assert [m.decode().spot.x for m in reader.messages()] == [1.5] * 3


def test_replay_plays_the_type_policy_node_subscribes_with_on_a_topic_of_two_types(tmp_path, capsys):
    """A camera topic holding the camera's Image and a republisher's CompressedImage, the compressed ones more
    (the camera dropped frames): before, replay published the most common type, CompressedImage, on the camera
    topic, where policy_node subscribes with Image and so received nothing."""
    from liquid_control.ros.replay import Replay, topic_types

    store = bag_io.typestore()

    def compressed(image, t):
        return store.types[M.COMPRESSED_IMAGE](header=image.header, format="jpeg", data=np.zeros(3, np.uint8))

    events = _second_type(_events(), "/camera/image_raw", M.COMPRESSED_IMAGE, compressed)
    dropped = [e for e in events if e[1] == M.IMAGE][:5]  # frames the camera's Image publisher lost
    bag = _mcap(tmp_path / "camera.mcap", [e for e in events if e not in dropped])
    sent = []

    class Node:  # what Replay asks of an rclpy node here
        def create_publisher(self, cls, topic, qos):
            return type("Publisher", (), {"publish": lambda self, data: sent.append(bytes(data))})()

    with BagReader(bag) as reader:
        assert reader.topics["/camera/image_raw"].msgtype == M.COMPRESSED_IMAGE  # 30 against 25
        assert topic_types([reader], ["/camera/image_raw"]) == {"/camera/image_raw": M.IMAGE}
        replay = Replay(Node(), [reader], ["/camera/image_raw"], classes={"/camera/image_raw": object})
        import threading

        assert replay.play(reader, rate=1000.0, stop=threading.Event()) == 25
    assert sent == [data for _, kind, _, data in events if kind == M.IMAGE][5:]
    # and says so, once (before: the other type's messages were skipped without a word)
    err = capsys.readouterr().err
    said = f"/camera/image_raw also holds {M.COMPRESSED_IMAGE} messages, not replayed (its publisher has one type"
    assert err.count(said) == 1, err


@pytest.mark.parametrize("compression", [CompressionType.ZSTD, CompressionType.LZ4])
def test_a_chunk_decompressing_past_its_size_is_refused_without_decompressing_it(tmp_path, monkeypatch, compression):
    """A bag from elsewhere is input: before, a chunk was decompressed whole and only then compared with the size
    it gives, so a 120 kB file whose zstd chunk holds 4 GB of zeros took 4 GB (MemoryError, or the robot's memory).
    Now decompression stops one byte past the chunk's size, and a size over MAX_CHUNK_BYTES is refused unread."""
    import tracemalloc

    import lz4.frame
    import zstandard

    extra, lz4_compress = 128 << 20, lz4.frame.compress  # zeros after the chunk's records: < 1 MB compressed

    def bomb(data, *args, **kwargs):
        if compression == CompressionType.LZ4:
            return lz4_compress(bytes(data) + bytes(extra))
        packer = zstandard.ZstdCompressor().compressobj()
        return packer.compress(bytes(data)) + packer.compress(bytes(extra)) + packer.flush()

    monkeypatch.setattr(zstandard, "compress", bomb)
    monkeypatch.setattr(lz4.frame, "compress", bomb)
    bag = _mcap(tmp_path / "bomb.mcap", _events(2), compression=compression)
    monkeypatch.undo()
    assert bag.stat().st_size < (1 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(BagError, match=r"bomb.mcap: corrupt bag: .* decompresses to more than the \d+ bytes it"):
            _read(bag)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < extra // 4  # before: the 128 MB of zeros, and a copy
    bag = _mcap(tmp_path / "large.mcap", _events(), compression=compression)  # chunks of ~1.5 kB
    monkeypatch.setattr(bag_io, "MAX_CHUNK_BYTES", 1000)
    with pytest.raises(BagError, match=r"large.mcap: corrupt bag: .* gives \d+ bytes uncompressed, more than the 1000"):
        _read(bag)


def test_record_info_shows_control_characters_of_a_bags_names_escaped(tmp_path):
    """Before: `record --info` printed a bag's topic names as written, so a bag from elsewhere with a topic named
    `/cam<ESC>[2J<ESC>]0;...<BEL>` cleared the reader's terminal and retitled its window, and one with a line
    break forged a line of the summary. ROS names hold no such characters: they are shown escaped."""
    from liquid_control.ros.recorder_node import bag_info

    hostile = "/cam\x1b[2J\x1b]0;pwned\x07\n  /forged: sensor_msgs/msg/Imu, 9 messages\u202e"
    events = [(hostile if topic == "/cmd_vel" else topic, *rest) for topic, *rest in _events(2)]
    info = bag_info(str(_mcap(tmp_path / "hostile.mcap", events)))
    lines = info.split("\n")
    assert len(lines) == 4 and all(line.isprintable() for line in lines), info
    assert "  /cam\\x1b[2J\\x1b]0;pwned\\x07\\n  /forged: sensor_msgs/msg/Imu, 9 messages\\u202e: " in info
