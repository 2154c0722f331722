"""Which process a node of the ROS graph runs in, read off its endpoints' DDS GUIDs.

`liquid-control sim` stops when another graph of the same nodes shares its domain; "2 nodes named /policy_node"
leaves the user (and a test run) to guess which process the other one is. Fast DDS (rmw_fastrtps, the RMW of the
ROS 2 wheels here) writes into every participant's GUID prefix its vendor id (01 0f), a host id and the low 16 bits
of the process id, so a node's /rosout publisher says where it runs: a process of this machine (named with its
command line), a process no longer running (a participant DDS still lists), or another machine.
"""

from __future__ import annotations

import os

FAST_DDS_VENDOR = b"\x01\x0f"
ROSOUT = "/rosout"  # every node publishes its log here unless made with enable_rosout=False


def guid_origin(gid: bytes) -> tuple[bytes, int] | None:
    """(host id, low 16 bits of the process id) of a Fast DDS endpoint GUID; None for another vendor's."""
    gid = bytes(gid)
    if len(gid) < 6 or gid[:2] != FAST_DDS_VENDOR:
        return None
    return gid[2:4], int.from_bytes(gid[4:6], "little")


def processes_with_low_pid(low: int, proc: str = "/proc") -> list[tuple[int, str]]:
    """The running processes of this machine whose id ends in ``low`` (16 bits), with their command lines; a
    system whose pid_max exceeds 65,536 can have several."""
    found = []
    try:
        pids = [int(entry.name) for entry in os.scandir(proc) if entry.name.isdigit()]
    except OSError:
        return found
    for pid in sorted(pids):
        if pid & 0xFFFF != low:
            continue
        try:
            with open(f"{proc}/{pid}/cmdline", "rb") as handle:
                command = " ".join(handle.read().decode(errors="replace").replace("\0", " ").split())
        except OSError:  # gone meanwhile
            continue
        found.append((pid, command))
    return found


def describe_origin(origin: tuple[bytes, int] | None, own_host: bytes | None, proc: str = "/proc") -> str:
    """Where an endpoint of ``origin`` (:func:`guid_origin`) runs, in words."""
    if origin is None:
        return "a participant of another DDS vendor"
    host, low = origin
    if own_host is not None and host != own_host:
        return f"a process on another machine (DDS host id {host.hex()})"
    running = processes_with_low_pid(low, proc)
    if not running:
        return (
            f"no process here has an id whose low 16 bits are {low} ({low}, {low + 0x10000}, ...): ended, with DDS "
            "still listing its participant, or in another container (PID namespace)"
        )
    return " or ".join(f"process {pid} ({_shortened(command)})" for pid, command in running)


def other_node_processes(node, counts: dict[str, int], own_pids: list[int], proc: str = "/proc") -> str:
    """Where the nodes named /NAME (``counts``: name -> how many the graph lists in the root namespace) that are not
    this graph's run, from the GUIDs of their /rosout publishers, as "the other /policy_node: process 1234 (python3
    -m ...)"; ``own_pids``: this graph's processes (this one's first: its own node ``node`` gives this machine's host
    id). Nodes listed without a /rosout publisher (made without their log topic, or a participant DDS lists without
    its endpoints) are counted as such; empty where the RMW says nothing."""
    own_low = {pid & 0xFFFF for pid in own_pids}
    infos = node.get_publishers_info_by_topic(ROSOUT)
    own_host = None
    me = own_pids[0] & 0xFFFF if own_pids else None
    mine = [guid_origin(info.endpoint_gid) for info in infos if info.node_name == node.get_name()]
    if mine and all(origin is None for origin in mine):
        return ""  # another RMW than Fast DDS: its GUIDs say nothing of the process
    for origin in mine:
        if origin is not None and origin[1] == me:
            own_host = origin[0]
    said = []
    for name, listed in counts.items():
        publishers = [info for info in infos if info.node_name == name and info.node_namespace == "/"]
        for info in publishers:
            origin = guid_origin(info.endpoint_gid)
            if origin is not None and origin[1] in own_low and (own_host is None or origin[0] == own_host):
                continue  # one of this graph's own nodes
            said.append(f"the other /{name}: {describe_origin(origin, own_host, proc)}")
        if len(publishers) < listed:
            said.append(f"{listed - len(publishers)} of the {listed} /{name} without a /rosout publisher DDS knows of")
    return "; ".join(dict.fromkeys(said))


def _shortened(command: str, limit: int = 120) -> str:
    return command if len(command) <= limit else command[: limit - 3] + "..."
