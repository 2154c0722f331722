"""Bags written by other tools than ours (the ``mcap`` library, rosbag2 storage options, hand-made folders):
read as their files hold them."""

import numpy as np
import pytest
from mcap.writer import CompressionType, IndexType, Writer

from liquid_control.bags import BagReader
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
    """One MCAP file written by the ``mcap`` library (ros2 profile, ros2msg schemas, CDR), chunks of ~1.5 kB."""
    store = bag_io.typestore()
    with open(path, "wb") as handle:
        writer = Writer(handle, chunk_size=1500, **options)
        writer.start(profile="ros2", library="test")
        schemas, channels = {}, {}
        for topic, msgtype, ns, data in events:
            if msgtype not in schemas:
                text = store.generate_msgdef(msgtype, ros_version=2)[0].encode()
                schemas[msgtype] = writer.register_schema(name=msgtype, encoding="ros2msg", data=text)
            if topic not in channels:
                channels[topic] = writer.register_channel(topic, "cdr", schemas[msgtype], {})
            writer.add_message(channels[topic], log_time=ns, data=data, publish_time=ns)
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
