"""ROS message type names (``pkg/msg/Type``), as bags record them and the ROS graph reports them."""

from __future__ import annotations

# rmw's name of the node behind an endpoint that DDS matched before the graph learnt its node (a loaded machine)
UNKNOWN_NODE = "_NODE_NAME_UNKNOWN_"


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
    """``namespace/name`` of the node behind an rclpy endpoint info, None while the graph does not know it."""
    if info.node_name == UNKNOWN_NODE:
        return None
    return f"{info.node_namespace.rstrip('/')}/{info.node_name}"


def other_publishers(infos, node: tuple[str, str], own_type: str | None) -> tuple[str, ...]:
    """The publishers of a topic (``infos``: rclpy's endpoint infos) other than the node ``(namespace, name)``'s own
    of type ``own_type`` (the first of that name and type: a second is another process's), as sorted
    ``namespace/name (type)`` for a warning that names them (a node not yet known to the graph as such, not by
    rmw's placeholder name)."""
    others = []
    for info in infos:
        if own_type and (info.node_namespace, info.node_name) == node and info.topic_type == own_type:
            own_type = None
            continue
        name = node_path(info) or "a node not yet discovered"
        others.append(f"{name} ({info.topic_type})")
    return tuple(sorted(others))
