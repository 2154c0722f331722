"""Recording what a node publishes and receives, one bag per episode (``sim_node``'s ``record_bag``).

:class:`EpisodeRecorder` wraps a node's publishers: ``publish(msg)`` publishes as before and also writes the
message into the current episode's bag, with the log time given by the node (``sim_node``: the simulated
time now, in its stamp clock). Received messages (the commands) are written with :meth:`record`. Nothing is
written between episodes. Works with rclpy messages (serialized with rclpy: the bytes DDS carries).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from liquid_control.conventions import stamps
from liquid_control.conventions.message_types import message_type_name

from .io import BagWriter


def episode_bag_name(seed: int) -> str:
    """The bag of the episode with ``seed`` in a recording folder (sim_node's ``record_bag``, ``record --expert``)."""
    return f"episode_{int(seed)}"


def cut_short_message(path, episode: int, seed: int) -> str:
    """What to say of the bag ``path`` of an episode that a stop cut short (sim_node closes it complete, but
    without the episode_status message that ends the bags of finished episodes)."""
    return (
        f"{path} holds episode {episode} (seed {seed}) only up to where the run stopped: it has no episode_status "
        "message, unlike the bags of episodes that ended"
    )


def existing_episode_seeds(folder) -> set[int]:
    """The seeds whose episode bags already exist in ``folder`` (one listing; an absent folder holds none)."""
    try:
        names = set(os.listdir(folder))
    except OSError:
        return set()
    numbers = {n.removeprefix("episode_") for n in names}
    return {int(n) for n in numbers if n.isascii() and n.isdecimal() and episode_bag_name(int(n)) in names}


def unfinished_bag(path) -> bool:
    """Whether the bag folder ``path`` was left unfinished: no metadata.yaml, which is written last as a bag is
    finished (its recorder was killed: SIGKILL, a crash, the machine going down), and no recorder writing it now.
    Such a bag is taken all the same (never overwritten): the refusal names it as the one to delete."""
    from .io import recording_elsewhere

    path = Path(path)
    return path.is_dir() and not (path / "metadata.yaml").is_file() and not recording_elsewhere(path)


class _RecordedPublisher:
    """A publisher whose messages are also written to the recorder's current bag."""

    def __init__(self, publisher, recorder: "EpisodeRecorder"):
        self._publisher = publisher
        self._recorder = recorder
        self._topic = publisher.topic_name

    def publish(self, msg):
        # written before it goes out: a reply (a command received on another thread, logged at the same sim
        # time) must come after it in the bag, or a lockstep loop's command would precede its own frame
        self._recorder.record(self._topic, msg)
        self._publisher.publish(msg)

    def __getattr__(self, name):  # get_subscription_count, topic_name, destroy...
        return getattr(self._publisher, name)


class EpisodeRecorder:
    """One bag per episode under ``folder``; ``clock()`` gives the log time (builtin Time or ns) of a message."""

    def __init__(self, folder: str | Path, clock, custom_data: dict | None = None):
        self.folder = Path(folder)
        self.clock = clock
        self.custom_data = dict(custom_data or {})
        self.topics: dict[str, tuple[str, list]] = {}
        self.latched: dict[str, object] = {}  # topic -> the message a latched publisher holds (robot model, TF)
        self.writer: BagWriter | None = None
        self.paths: list[Path] = []
        self._lock = threading.Lock()

    def add_topic(self, topic: str, msg_type, qos=None) -> None:
        """Record ``topic`` (its message class or ``pkg/msg/Type``, and the QoS its publisher offers: one profile,
        or a list, one per publisher, as ``ros2 bag record`` stores them). Bags opened from then on carry it."""
        name = msg_type if isinstance(msg_type, str) else message_type_name(msg_type)
        profiles = list(qos) if isinstance(qos, (list, tuple)) else [qos] if qos is not None else []
        self.topics[topic] = (name, profiles)

    def wrap(self, publisher):
        """``publisher`` recording what it publishes (its topic, type and QoS are taken from it)."""
        self.add_topic(publisher.topic_name, publisher.msg_type, publisher.qos_profile)
        return _RecordedPublisher(publisher, self)

    def add_latched(self, publisher, msg) -> None:
        """``msg``, published once by ``publisher`` (transient local: ``robot_description``, ``/tf_static``), goes
        into every episode's bag at its start, as a subscriber joining then would receive it: each bag opens in
        Foxglove with the robot model and its sensor frames."""
        self.add_topic(publisher.topic_name, publisher.msg_type, publisher.qos_profile)
        self.latched[publisher.topic_name] = msg

    def start(self, seed: int, **custom) -> Path:
        """Open the bag of the episode with ``seed`` (``folder/episode_<seed>``) for the next episode (closing a
        previous one); ``seed`` and ``custom`` go into its metadata."""
        self.stop()
        path = self.folder / episode_bag_name(seed)
        self.folder.mkdir(parents=True, exist_ok=True)
        custom = {"seed": seed, **custom}
        writer = BagWriter(path, custom_data={**self.custom_data, **{k: str(v) for k, v in custom.items()}})
        for topic, (msgtype, qos) in self.topics.items():
            writer.add_topic(topic, msgtype, qos)
        for topic, msg in self.latched.items():
            writer.write(topic, stamps.nanoseconds(self.clock()), msg)
        with self._lock:
            self.writer = writer
        return path

    def record(self, topic: str, msg, at=None) -> None:
        """Write ``msg`` (published or received on ``topic``) into the current bag, if one is open, logged at ``at``
        (a stamp; None: the recorder's clock now)."""
        with self._lock:
            if self.writer is not None:
                self.writer.write(topic, stamps.nanoseconds(self.clock() if at is None else at), msg)

    def stop(self) -> Path | None:
        """Finish the current bag; returns its path."""
        with self._lock:
            writer, self.writer = self.writer, None
        if writer is None:
            return None
        path = writer.close()
        self.paths.append(path)
        return path
