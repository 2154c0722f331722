"""Waiting until a reliable publisher's messages have reached every subscriber (DDS acknowledgements).

A node that publishes a stop command and then destroys its publisher at once (process exit, cleanup) can lose the
stop: a subscriber drops what arrives from a writer it has already seen go, however many copies were sent, and a
lost packet is resent only while the writer lives. Waiting for the subscribers' acknowledgement before the writer
goes away delivers it (docs/ros.md, Stopping, has the measured figures). Fast DDS acknowledges at its writer's
heartbeat, every 3 s: the wait lasts up to ~3 s where a subscriber is matched, none where there is none. A
second SIGINT/SIGTERM to a node executable (0.5 s or more after the first: ``executable.REPEATED_SIGNAL_S``) ends
every such wait of its process at once (:func:`stop_waiting`).
"""

from __future__ import annotations

import time

from rclpy.duration import Duration

# Fast DDS (ROS 2's default middleware) acknowledges a reliable message only at its writer's next heartbeat, every
# 3 s: a shorter wait for a stop's acknowledgement gave up (and warned) though the stop had arrived
STOP_ACK_TIMEOUT_S = 4.0
_SLICE = Duration(seconds=0.02)  # one long wait_for_all_acked holds the GIL: other threads and signals wait with it
_waits_ended_by: str | None = None  # why this process no longer waits for acknowledgements (stop_waiting)


def stop_waiting(why: str) -> None:
    """End every wait of this process for an acknowledgement now, and skip those to come; ``why`` is said in the
    warning of a stop left unacknowledged. The node executables call it at a second SIGINT/SIGTERM: whoever presses
    Ctrl-C twice wants the process to end at once, once the stop is published (safe in a signal handler)."""
    global _waits_ended_by
    if _waits_ended_by is None:
        _waits_ended_by = why


def waits_ended() -> bool:
    """Whether :func:`stop_waiting` ended this process's waits (a second SIGINT/SIGTERM: end at once)."""
    return _waits_ended_by is not None


def acknowledged(publisher, limit_s: float, keep_waiting=lambda: True) -> bool:
    """Whether every reliable subscriber matched to ``publisher`` acknowledged all it published, waiting up to
    ``limit_s`` seconds (in short slices) while ``keep_waiting()`` and no :func:`stop_waiting`; True at once where
    none is matched."""
    deadline = time.monotonic() + limit_s
    while not publisher.wait_for_all_acked(_SLICE):
        if time.monotonic() >= deadline or not keep_waiting() or _waits_ended_by is not None:
            return False
    return True


def deliver_stop(publisher, logger, what: str, node=None) -> bool:
    """After publishing a stop command on ``publisher`` and before destroying it: wait up to
    ``STOP_ACK_TIMEOUT_S`` for its acknowledgement where a subscriber is matched (no wait where none is); a
    warning naming ``what`` and the topic when it did not come (the robot may keep its last command), and with
    ``node`` (the publisher's) the subscribing nodes: the base driver is not the only one that can leave it
    unacknowledged (a recorder killed with -9 stays matched until DDS finds it gone)."""
    if publisher.get_subscription_count() == 0:
        return True
    if acknowledged(publisher, STOP_ACK_TIMEOUT_S):
        return True
    if _waits_ended_by is not None:
        logger.warning(
            f"{publisher.topic_name}: {what} was published but not acknowledged by every subscriber: {_waits_ended_by} "
            f"ended the wait (the robot may keep its last command){_subscribers(node, publisher)}"
        )
        return False
    logger.warning(
        f"{publisher.topic_name}: {what} was not acknowledged by every subscriber within {STOP_ACK_TIMEOUT_S:g} s "
        f"(the robot may keep its last command){_subscribers(node, publisher)}"
    )
    return False


def _subscribers(node, publisher) -> str:
    """'; its subscribers: /a, /b (...)': the nodes subscribed to ``publisher``'s topic as the graph shows them."""
    if node is None:
        return ""
    try:
        infos = node.get_subscriptions_info_by_topic(publisher.topic_name)
    except Exception:  # a failing graph query must not hide the warning itself
        return ""
    names = sorted(  # a subscription whose node the graph does not know yet is named so by rmw: left out
        {f"{info.node_namespace.rstrip('/')}/{info.node_name}" for info in infos if "_UNKNOWN_" not in info.node_name}
    )
    if not names:
        return ""
    return (
        f"; its subscribers: {', '.join(names)} (any of them may be the one: a process killed with -9 stays a "
        "subscriber until DDS finds it gone)"
    )
