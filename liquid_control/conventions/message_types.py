"""ROS message type names (``pkg/msg/Type``), as bags record them and the ROS graph reports them."""

from __future__ import annotations


def message_type_name(message) -> str:
    """``pkg/msg/Type`` of an rclpy or rosbags message or message class, as bags and the ROS graph name types (the
    one implementation: the bags' types and the nodes' checks of the graph's types must agree)."""
    name = getattr(message, "__msgtype__", None)
    if name:
        return str(name)
    cls = message if isinstance(message, type) else type(message)
    package = cls.__module__.split(".")[0]
    return f"{package}/msg/{cls.__name__}"
