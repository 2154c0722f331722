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


def node_path(info) -> str | None:
    """``namespace/name`` of the node behind an rclpy endpoint info; None where the graph does not know it (rmw's
    placeholder namespace, never absolute: matched before its node was discovered, or a DDS program with no node)."""
    if not info.node_namespace.startswith("/"):
        return None
    return f"{info.node_namespace.rstrip('/')}/{info.node_name}"


def gid_text(gid) -> str:
    """An endpoint's gid as ``ros2 topic info -v`` writes it (dotted hex bytes)."""
    return ".".join(f"{b:02x}" for b in bytes(gid))


def endpoint_name(info) -> str:
    """The node behind an endpoint for a warning: its path, or its gid where the graph does not know the node."""
    return node_path(info) or f"a publisher of an unknown node (gid {gid_text(info.endpoint_gid)})"


def other_publishers(infos, node: tuple[str, str], own_type: str | None) -> tuple[str, ...]:
    """The publishers of a topic (``infos``: rclpy's endpoint infos) other than the node ``(namespace, name)``'s own
    of type ``own_type`` (the first of that name and type: a second is another process's), as sorted
    ``namespace/name (type)`` for a warning that names them (:func:`endpoint_name`: by its gid where the graph does
    not know the node)."""
    others = []
    for info in infos:
        if own_type and (info.node_namespace, info.node_name) == node and info.topic_type == own_type:
            own_type = None
            continue
        others.append(f"{endpoint_name(info)} ({info.topic_type})")
    return tuple(sorted(others))
