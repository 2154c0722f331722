"""Recordings: rosbag2 bags (MCAP) written and read through ``rosbags``, played through the runtime.

- :mod:`.io`: :class:`BagWriter`, :class:`BagReader` (streaming, clear errors, truncated recordings),
  :func:`recover`.
- :mod:`.messages`: message <-> numpy reading conversions, the same readings ``policy_node`` takes.
- :mod:`.stream`: a bag fed through :class:`~liquid_control.runtime.runner.PolicyRunner` (the node's event
  semantics) with each update labelled by a recorded command; :class:`BagDataSpec` (topics, scale, limits).
- :mod:`.expert`: expert episodes of the rover world written straight to bags (no DDS).
- :mod:`.recording`: a publisher wrapper that copies what a node publishes into a bag (``sim_node``).

Training from bags: :mod:`liquid_control.training.bag_data`; offline evaluation:
:mod:`liquid_control.evaluation.offline`; the recorder and replay nodes: :mod:`liquid_control.ros.recorder_node`,
:mod:`liquid_control.ros.replay`. How to use them on a robot: docs/real_robot.md.
"""

from .io import BagError, BagMessage, BagReader, BagWriter, TopicInfo, recover
from .stream import BagDataSpec, LabelRule, data_spec, stream_updates

__all__ = [
    "BagDataSpec",
    "BagError",
    "BagMessage",
    "BagReader",
    "BagWriter",
    "LabelRule",
    "TopicInfo",
    "data_spec",
    "recover",
    "stream_updates",
]
