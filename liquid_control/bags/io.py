"""rosbag2 bags in MCAP, read and written through ``rosbags`` (pure Python; ``rosbag2_py`` is not on PyPI).

A bag is the standard rosbag2 layout that ``ros2 bag`` and Foxglove open: a folder with ``metadata.yaml``
(version 9) and one ``<folder>.mcap`` file (split: ``<folder>_0.mcap``, ``<folder>_1.mcap`` ..., see
:class:`BagWriter`) with the ``ros2`` profile, CDR-serialized messages, one ros2msg schema per message type
and the publishers' QoS in each channel's ``offered_qos_profiles``. The MCAP log time of a message is when the
recorder received it (its clock), as with ``ros2 bag record``; the measurement time is the message's own
``header.stamp``.

Reading streams from disk (one MCAP chunk of ~1 MB at a time, beside the last 0.5 s of the messages read),
sorted as rosbags sorts (log time, then the order written), except across a step back of the recording
machine's clock, which is kept where it happened (as policy_node lived it) instead of interleaving the messages
after it with those before (:data:`LOG_TIME_WINDOW_NS`). Channels come from the storage files (by topic), so a
``metadata.yaml`` whose QoS or type hashes disagree with them (another tool's, an edited one) does not hide
their messages. A split bag (``<bag>_0.mcap``, ``<bag>_1.mcap`` ..., or ``.db3``) is read file by
file, with or without ``metadata.yaml``. A bag that cannot be read raises :class:`BagError` naming the file and
the problem. A recording whose recorder was killed has no MCAP footer in its (last) file (and often no
``metadata.yaml``): it is refused with that explanation, and ``allow_truncated=True`` reads the messages before
the break instead (``BagReader.salvaged``). The break is the first record that cannot be read whole or whose
chunk fails its CRC check, so corrupt bytes before the cut end the salvage there instead of coming back as
messages; ``BagReader.salvage_note`` says where (byte offset) and why.

Integrity: rosbags' writer leaves every chunk's CRC 0 ("not computed", which every reader skips), so
``BagWriter`` writes them itself (:class:`_ChunkCrcs`): each chunk's CRC-32 goes into its record as soon as the
chunk is whole in the file, the data-section and summary CRCs when the bag is closed. A flipped byte inside a
chunk of one of our recordings then fails the check: the complete-file reader refuses it naming the file, the
salvage stops before it. Not covered: the chunk a killed recorder was writing (it is cut anyway) and any chunk
whose CRC had not reached the disk when the power went (its CRC stays 0: unchecked, read as before).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import heapq
import importlib
import itertools
import os
import struct
import threading
import warnings
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.rosbag2.errors import WriterError
from rosbags.rosbag2.storage_mcap import McapWriter
from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore

from liquid_control import folder_lock
from liquid_control.conventions import stamps
from liquid_control.conventions.message_types import message_type_name
from liquid_control.paths import expand_pattern, user_path
from liquid_control.shown import shown

BAG_VERSION = 9  # metadata.yaml version written (rosbag2 of Jazzy and later)
MCAP_MAGIC = b"\x89MCAP0\r\n"
TYPESTORE = Stores.ROS2_KILTED  # the distribution of the ROS 2 wheels this package runs on


class BagError(RuntimeError):
    """A bag that cannot be written or read; the message names the file and what is wrong with it."""


NO_SUCH_BAG = "no such bag (a rosbag2 folder with metadata.yaml and a .mcap file)"  # after the path(s)


@lru_cache(maxsize=1)
def typestore():
    """The rosbags type store (message definitions, CDR (de)serializers, RIHS01 hashes)."""
    return get_typestore(TYPESTORE)


# ------------------------------------------------------------------------------------------------ QoS
def _duration(value) -> QosTime:
    """QosTime from an rclpy Duration (or anything with ``nanoseconds``), a dict or a QosTime."""
    if isinstance(value, QosTime):
        return value
    if isinstance(value, dict):
        return QosTime(int(value["sec"]), int(value["nsec"]))
    ns = int(getattr(value, "nanoseconds", value))
    return QosTime(*stamps.split_nanoseconds(ns))


def _enum(enum, value):
    """An enum member from an rclpy enum (by name), a name or an int."""
    if isinstance(value, enum):
        return value
    if isinstance(value, int):
        return enum(int(value))
    name = getattr(value, "name", value)
    return enum.__members__.get(str(name).upper(), enum.UNKNOWN)


def to_qos(profile) -> Qos:
    """A rosbags ``Qos`` from an rclpy ``QoSProfile`` (as in ``get_publishers_info_by_topic``) or a dict."""
    if isinstance(profile, Qos):
        return profile
    get = profile.get if isinstance(profile, dict) else (lambda key, default=None: getattr(profile, key, default))
    return Qos(
        history=_enum(QosHistory, get("history", "keep_last")),
        depth=int(get("depth", 10) or 0),
        reliability=_enum(QosReliability, get("reliability", "reliable")),
        durability=_enum(QosDurability, get("durability", "volatile")),
        deadline=_duration(get("deadline", 0)),
        lifespan=_duration(get("lifespan", 0)),
        liveliness=_enum(QosLiveliness, get("liveliness", "automatic")),
        liveliness_lease_duration=_duration(get("liveliness_lease_duration", 0)),
        avoid_ros_namespace_conventions=bool(get("avoid_ros_namespace_conventions", False)),
    )


def qos_dict(qos: Qos) -> dict:
    """Plain dict of a rosbags ``Qos`` (enum names in lower case, as metadata.yaml version 9 writes them)."""
    return {
        "history": qos.history.name.lower(),
        "depth": qos.depth,
        "reliability": qos.reliability.name.lower(),
        "durability": qos.durability.name.lower(),
        "deadline": {"sec": qos.deadline.sec, "nsec": qos.deadline.nsec},
        "lifespan": {"sec": qos.lifespan.sec, "nsec": qos.lifespan.nsec},
        "liveliness": qos.liveliness.name.lower(),
        "liveliness_lease_duration": {
            "sec": qos.liveliness_lease_duration.sec,
            "nsec": qos.liveliness_lease_duration.nsec,
        },
        "avoid_ros_namespace_conventions": qos.avoid_ros_namespace_conventions,
    }


# ------------------------------------------------------------------------------------------------ writing
def _serialize(message, msgtype: str) -> bytes | memoryview:
    if isinstance(message, (bytes, bytearray, memoryview)):
        return message
    if getattr(message, "__msgtype__", None):  # a rosbags message
        return typestore().serialize_cdr(message, msgtype)
    from rclpy.serialization import serialize_message  # an rclpy message: the bytes DDS would carry

    return _without_padding(serialize_message(message), msgtype)


_PADDING_CHECKED_BELOW = 1 << 16  # bytes: images and other large messages end in byte data, never in padding


def _without_padding(data: bytes, msgtype: str) -> bytes:
    """``data`` cut to the end of its message: rclpy's serializer leaves 4 or 8 bytes past it (its size estimate
    overshoots: a JointState without efforts, 92 bytes for the 88 on the wire; not even zeroed). rosbags, and so
    anyone reading the bag with it, refuses 4 or more bytes past the end of a message ("CDR message size
    mismatch")."""
    if len(data) >= _PADDING_CHECKED_BELOW or len(data) < 8:
        return data
    try:
        typestore().deserialize_cdr(data, msgtype)
        return data
    except Exception as exc:  # rosbags' SerdeError; anything but the size: leave the bytes as they are
        if "size mismatch" not in str(exc):
            return data
    return _cut_overshoot(data, msgtype)[1] or data


def _cut_overshoot(data, msgtype: str):
    """(message, bytes) of ``data`` with 4 or 8 bytes past the message cut off (rosbags allows up to 3 more), or
    (None, None) when neither cut leaves a whole message."""
    for cut in (4, 8):
        if len(data) - cut < 4:
            break
        try:
            return typestore().deserialize_cdr(data[:-cut], msgtype), data[:-cut]
        except Exception:
            continue
    return None, None


class BagWriter:
    """Writes one rosbag2 MCAP bag; topics are added before (or when) their first message is written.

    ``write(topic, log_time_ns, message)`` takes serialized CDR bytes, an rclpy message or a rosbags message.
    Thread-safe (a recorder's callbacks and its main thread may both write). ``close()`` finishes the MCAP
    file (index, footer), writes ``metadata.yaml`` atomically, then the data-section and summary CRCs, and
    fsyncs the file; a bag that was never closed is truncated. Every chunk carries the CRC-32 of its records,
    written while recording as soon as the chunk is whole in the file (see :class:`_ChunkCrcs`).

    Splitting, as ``ros2 bag record --max-bag-size/--max-bag-duration``: with ``max_bag_size`` (bytes) or
    ``max_bag_duration`` (seconds of log time) the bag's files are ``<bag>_0.mcap``, ``<bag>_1.mcap`` ...; a
    message that would be written into a file already that large (its chunk being written counted uncompressed),
    or after that many seconds of the file's log time going forward (a step back of the clock, a simulation reset,
    is not counted back: :meth:`_seconds_with`), first finishes the file (a whole, indexed MCAP file) and
    opens the next; the finished file's CRCs and fsyncs (seconds of a slow disk or USB stick, during which the
    recorder's subscription callback, which calls ``write``, took no message and DDS dropped them past the QoS
    depth) run on a thread of their own, one file at a time, and ``close()`` and ``abort()`` wait for them; their
    failure is raised by the next ``write`` or ``close()``. ``write`` never waits for them: a split due while the
    file before is still being finished (a disk slower than the recording) holds the messages back for the next
    file, up to :data:`BEHIND_CACHE_BYTES` (``ros2 bag record``'s cache), written by the first ``write`` once that
    file is finished (else by ``close()``); past that a message is dropped, ``write`` returns False and ``dropped``
    counts it by topic (before, ``write`` waited, and the recorder's callback with it, while DDS dropped messages
    unsaid). A message of a latched topic (every publisher transient local: robot_description, /tf_static, a
    camera_info published once) is held past that limit too, the last one of each publisher (an earlier one held
    past it is replaced, dropped): published once, it would be missing from the whole bag. ``unwritten`` counts by
    topic the messages ``write`` took (True) that did not reach the bag after all (a latched one replaced, those held
    that ``close()`` or ``abort()`` could not write, those a failed write lost); ``dropped`` counts the first two.
    A write that fails (a full disk: ``write`` or ``close()`` raises BagError) cuts the file being written there,
    as a killed recorder's: what ``write`` had taken that is not in a chunk whole in the file (the chunk being
    written, kept in memory until it is full) is lost with it, counted by topic in ``cut`` (and ``unwritten``), the
    reason in ``write_failure``; later writes are refused and ``close()`` leaves the file as it is for
    ``recover`` (before, the chunk's messages stayed counted as recorded: a recorder said 606 recorded of a bag
    holding none).
    Every file carries every topic's schema and channel (it reads alone), and ``metadata.yaml`` lists them all
    (``relative_file_paths`` and ``files``), as rosbag2 writes it. A recorder killed leaves its finished files
    whole; only the last one is cut. None or 0: one file, ``<bag>.mcap``. With ``repeat_latched`` each file after
    the first starts with the latched topics' last messages (:meth:`_repeat_latched`), so that it opens alone with
    them (in a chunk of their own, whose bytes as written, compressed or not, are not counted against
    ``max_bag_size``: a latched map above it would otherwise make a file of every message); :class:`BagReader`
    reads them once when it reads the files together.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        compression: bool = False,
        custom_data: dict | None = None,
        max_bag_size: int | None = None,
        max_bag_duration: float | None = None,
        repeat_latched: bool = False,
    ):
        self.path = Path(path)
        self.max_bag_size = _split_limit("max_bag_size", max_bag_size, int)
        self.max_bag_duration = _split_limit("max_bag_duration", max_bag_duration, float)
        self._max_duration_ns = round(self.max_bag_duration * 1e9) if self.max_bag_duration else 0
        self._split = bool(self.max_bag_size or self._max_duration_ns)
        if repeat_latched and not self._split:  # one file holds every message: nothing to repeat
            raise BagError("repeat_latched: only for a split bag (max_bag_size or max_bag_duration)")
        self.repeat_latched = bool(repeat_latched)
        # repeat_latched: topic -> (depth, publisher -> its last ``depth`` messages as (order written, bytes))
        self._latched: dict[str, tuple[int, dict]] = {}
        self._latched_order = itertools.count()
        if self._split and _rosbags_version() != ROSBAGS_TESTED:  # refused before a drive, not failing in it
            given = "max_bag_size" if self.max_bag_size else "max_bag_duration"
            raise BagError(
                f"{given}: a split bag is written through rosbags' MCAP storage writer as in rosbags=={ROSBAGS_TESTED} "
                f"(requirements.txt), and rosbags {_rosbags_version()} is installed: install that version, or record "
                "without splitting"
            )
        if self.path.exists():
            recording = f", {folder_lock.holder(self.path)} is recording it" if recording_elsewhere(self.path) else ""
            raise BagError(f"{self.path}: already exists{recording}; a bag is never overwritten, choose a new name")
        self._files: list[dict] = []  # the finished files' entries of metadata.yaml's ``files``
        # split: the open file's message count, first and last log time, and its count without repeated ones
        self._file_stats = [0, 2**63 - 1, 0, 0]
        self._file_seconds = [0, None]  # split: the open file's log time gone forward (ns), and its newest since a step
        self._repeated_bytes = 0  # split: the bytes of the latched messages the open file starts with (not counted)
        try:
            self._writer = Writer(self.path, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP)
            if compression:
                from rosbags.rosbag2 import CompressionFormat, CompressionMode

                self._writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
            for key, value in (custom_data or {}).items():
                self._writer.set_custom_data(str(key), str(value))
            if self._split:  # rosbags writes one file: its MCAP storage writer, driven here (see _McapFile)
                self.path.mkdir(mode=0o755, parents=True)
                self._writer.storage = _McapFile(self._file_path(), self._writer.compression_mode)
            else:  # rosbags' public API alone
                self._writer.open()
        except (WriterError, OSError) as exc:
            raise BagError(f"{self.path}: cannot create the bag: {exc}") from None
        try:
            self._crcs = _ChunkCrcs(self.mcap_path)
        except OSError as exc:
            self._writer.abort()
            raise BagError(f"{self.path}: cannot open {self.mcap_path.name} to write its CRCs: {exc}") from None
        self._connections: dict[str, object] = {}
        self._types: dict[str, str] = {}
        self._lock = threading.Lock()
        self._finishing: threading.Thread | None = None  # split: the finished file's CRCs and fsyncs
        self._waiting: deque = deque()  # split: (topic, log time, bytes, publisher) held while _finishing runs
        self._waiting_bytes = 0
        self._transient_local: set[str] = set()  # latched topics: every publisher transient local
        self._held_over: dict = {}  # (topic, publisher) -> its latched message held past BEHIND_CACHE_BYTES
        self.unwritten: dict[str, int] = {}  # topic -> messages write() took that did not reach the bag after all
        self.dropped: dict[str, int] = {}  # topic -> messages dropped as the writer was behind (BEHIND_CACHE_BYTES)
        self.cut: dict[str, int] = {}  # topic -> messages write() took that a failed write lost (_cut_open_file)
        self.write_failure = ""  # why a write into the open file failed, cutting it (a full disk), else empty
        # the messages of the open file not yet known to be whole in it: those of the chunk being built (in memory),
        # and of chunks handed to the file whose bytes may not all be there yet, as (chunk end offset, counts)
        self._chunk = getattr(self._writer.storage, "chunk", None)
        self._in_chunk: dict[str, int] = {}
        self._unsure: deque = deque()
        self._cut_at: tuple[Path, int] | None = None  # the file a failed write cut, and its bytes then
        self._finish_failed = ""  # why they failed (named by the next write or close), else empty
        self.closed = False
        # the bag's folder held while it is written: a reader of a bag still being recorded (train --bag, eval --bag,
        # record --info/--recover) is told so, naming the recorder, where it called the bag truncated
        self._held = contextlib.ExitStack()
        try:
            self._held.enter_context(folder_lock.hold(self.path, "choose a new name", BagError))
        except BaseException:
            self._writer.abort()
            self._crcs.close()
            raise

    @property
    def split(self) -> bool:
        """Whether the bag is written in several files (``max_bag_size`` or ``max_bag_duration`` given)."""
        return self._split

    def _file_path(self, index: int = 0) -> Path:
        if not self.split:
            return self.path / f"{self.path.name}.mcap"
        return self.path / f"{self.path.name}_{index}.mcap"

    @property
    def mcap_path(self) -> Path:
        """The MCAP file being written (the last one, once the bag is closed)."""
        if not self._split:
            return self._file_path()
        return self._writer.storage.path if self._writer.storage else self._crcs.path

    @property
    def files(self) -> list[Path]:
        """The bag's storage files so far, in order."""
        return [self.path / entry["path"] for entry in self._files] + ([] if self.closed else [self.mcap_path])

    def add_topic(self, topic: str, msgtype: str, qos: Iterable = ()) -> None:
        """Register ``topic`` with its type (``pkg/msg/Type``) and the QoS profiles its publishers offer."""
        with self._lock:
            self._add_topic(topic, msgtype, qos)

    def _add_topic(self, topic, msgtype, qos):
        if topic in self._connections:
            if self._types[topic] != msgtype:
                raise BagError(f"{self.path}: topic {topic} already recorded as {self._types[topic]}, not {msgtype}")
            return
        store = typestore()
        if msgtype not in store.fielddefs:
            raise BagError(f"{self.path}: message type {msgtype} of {topic} is unknown to the rosbags type store")
        profiles = [to_qos(q) for q in qos]
        self._connections[topic] = self._writer.add_connection(
            topic, msgtype, typestore=store, offered_qos_profiles=profiles
        )
        self._types[topic] = msgtype
        if profiles and all(q.durability == QosDurability.TRANSIENT_LOCAL for q in profiles):
            self._transient_local.add(topic)  # latched as the recorder subscribes: never lost behind a slow disk
            if self.repeat_latched:  # a subscriber joining at a split would get each publisher's last ``depth``
                self._latched[topic] = (max(1, *(q.depth for q in profiles)), {})

    def has_topic(self, topic: str) -> bool:
        """Whether ``topic`` has been added."""
        return topic in self._connections

    def write(self, topic: str, log_time_ns: int, message, msgtype: str | None = None, publisher=None) -> bool:
        """Append one message (``log_time_ns``: when it was received/published, on the recorder's clock);
        ``publisher``: who published it (any hashable; the recorder gives the DDS publisher's id), for
        ``repeat_latched``, which repeats each publisher's last messages of a latched topic. True: the message is
        in the bag (or held back for its next file); False: dropped, the writer behind (counted in ``dropped``)."""
        with self._lock:
            if self.closed:
                raise BagError(f"{self.path}: bag already closed")
            if topic not in self._connections:
                if isinstance(message, (bytes, bytearray, memoryview)) and msgtype is None:
                    raise BagError(f"{self.path}: add_topic({topic!r}, ...) before writing raw bytes")
                self._add_topic(topic, msgtype or message_type_name(message), ())
            data = _serialize(message, self._types[topic])
            log_time_ns = int(log_time_ns)
            if self._finish_failed:  # the finished file's fsync failed (a stick pulled): said once, here
                failed, self._finish_failed = self._finish_failed, ""
                raise BagError(f"{self.path}: {failed}")
            if self.write_failure:  # the file is cut where that write failed: nothing after it would be read
                raise BagError(f"{self.path}: cannot write to the bag: a write before failed ({self.write_failure})")
            kept = True
            try:
                if not self._split:  # the recorder's hot path: nothing per message for splitting
                    self._store(topic, log_time_ns, data)
                else:
                    kept = self._write_split(topic, log_time_ns, data, publisher)
                self._crcs.advance()  # a chunk rosbags just finished gets its CRC (one fstat when there is none)
            except OSError as exc:  # a full disk as a chunk is written: the bag, not a bare errno, is named
                raise BagError(f"{self.path}: cannot write to the bag: {exc.strerror or exc}") from None
            return kept

    def _write_split(self, topic: str, log_time_ns: int, data, publisher) -> bool:
        """One message into a split bag: into the open file, or into the next once the open file is full; while the
        file before that is still being finished (:meth:`_finish_in_background`: its fsync on a disk slower than the
        recording), held back for the next file (:meth:`_hold`) rather than waited for."""
        if self._waiting:
            self._write_waiting()
        if self._waiting or (self._file_stats[3] and self._file_full(log_time_ns)):
            if self._waiting or self._behind():
                return self._hold(topic, log_time_ns, data, publisher)
            self._next_file(log_time_ns)
        self._append(topic, log_time_ns, data, publisher)
        return True

    def _store(self, topic: str, log_time_ns: int, data) -> None:
        """Write one message into the open file, counted by topic until the chunk holding it is whole in the file
        (:meth:`_cut_open_file` counts those that are not when a write fails)."""
        try:
            self._writer.write(self._connections[topic], log_time_ns, data)
        except OSError as exc:  # the chunk's write into the file failed: this message, in it, was not taken
            self._cut_open_file(exc)
            raise
        self._in_chunk[topic] = self._in_chunk.get(topic, 0) + 1
        if getattr(self._writer.storage, "chunk", None) is not self._chunk:  # it closed the chunk: into the file
            self._chunk_written()

    def _chunk_written(self) -> None:
        """The chunk being built was written into the file (rosbags started a new one): its counts wait for its
        bytes to be in the file; those of the chunks before that are there are let go."""
        storage = self._writer.storage
        self._chunk = storage.chunk
        if not self._in_chunk:
            return
        try:  # rosbags' ChunkIndex of it: start and end log times, then the chunk's offset and length in the file
            start, length = struct.unpack_from("<QQ", storage.chunks[-1].getvalue(), 16)
            end = start + length
        except (AttributeError, IndexError, struct.error):  # another rosbags: all it wrote so far (its indexes too)
            end = storage.bio.tell()
        self._unsure.append((end, self._in_chunk))
        self._in_chunk = {}
        size = self._file_size()
        while self._unsure and self._unsure[0][0] <= size:
            self._unsure.popleft()

    def _file_size(self) -> int:
        """The bytes of the open file on the disk (0: it is gone, its folder removed)."""
        try:
            return os.stat(self.mcap_path).st_size
        except OSError:
            return 0

    def _cut_open_file(self, exc: OSError) -> None:
        """A write into the open file failed (a full disk, a file size limit): the file is cut there, as a
        killed recorder's. The messages ``write`` took that are not in a chunk whole in it (the chunk being
        written; one written before whose bytes did not all reach it) are lost: counted in ``cut`` and
        ``unwritten``; ``write_failure`` says why, and nothing more is written into the file."""
        storage = self._writer.storage
        if storage is not None and getattr(storage, "chunk", None) is not self._chunk:  # written, the summary not
            self._chunk_written()
        size = self._file_size()
        for counts in [self._in_chunk, *(counts for end, counts in self._unsure if end > size)]:
            for topic, n in counts.items():
                self._count_lost(topic, self.cut, self.unwritten, n=n)
        self._in_chunk, self._unsure = {}, deque()
        self.write_failure = self.write_failure or str(exc.strerror or exc)
        self._cut_at = (self.mcap_path, size)

    def _append(self, topic: str, log_time_ns: int, data, publisher) -> None:
        """Write one message into the open file of a split bag, counted in its statistics."""
        self._store(topic, log_time_ns, data)
        stats = self._file_stats
        stats[0], stats[1], stats[2] = stats[0] + 1, min(stats[1], log_time_ns), max(stats[2], log_time_ns)
        stats[3] += 1
        self._file_seconds = self._seconds_with(log_time_ns)
        latched = self._latched.get(topic)
        if latched is not None:
            kept = latched[1].setdefault(publisher, deque(maxlen=latched[0]))
            kept.append((next(self._latched_order), bytes(data)))

    def _behind(self) -> bool:
        """Whether the file finished last is still being finished (its fsync running)."""
        return self._finishing is not None and self._finishing.is_alive()

    def _hold(self, topic: str, log_time_ns: int, data, publisher) -> bool:
        """Keep a message that comes while the writer is behind for the next file, as long as the messages kept
        stay within BEHIND_CACHE_BYTES; else drop it, counted in ``dropped`` (False). A latched topic's message is
        kept past the limit, replacing the one of its publisher kept past it before (dropped, and ``unwritten``:
        ``write`` took it)."""
        data = bytes(data)
        entry = (topic, log_time_ns, data, publisher)
        if self._waiting_bytes + len(data) > BEHIND_CACHE_BYTES:
            if topic not in self._transient_local:
                self._count_lost(topic, self.dropped)
                return False
            replaced = self._held_over.get((topic, publisher))
            if replaced is not None:
                self._waiting.remove(replaced)
                self._waiting_bytes -= len(replaced[2])
                self._count_lost(topic, self.dropped, self.unwritten)
            self._held_over[(topic, publisher)] = entry
        self._waiting.append(entry)
        self._waiting_bytes += len(data)
        return True

    @staticmethod
    def _count_lost(topic: str, *counters: dict, n: int = 1) -> None:
        for counter in counters:
            counter[topic] = counter.get(topic, 0) + n

    def _write_waiting(self) -> None:
        """Write the messages held back, in order, from the next file on: up to one that needs a split while the
        file before is still being finished (the rest stay held)."""
        while self._waiting:
            topic, log_time_ns, data, publisher = self._waiting[0]
            if self._file_stats[3] and self._file_full(log_time_ns):
                if self._behind():
                    return
                self._next_file(log_time_ns)
            self._append(topic, log_time_ns, data, publisher)  # failing, it stays held: _give_up_waiting counts it
            entry = self._waiting.popleft()
            self._waiting_bytes -= len(data)
            if self._held_over.get((topic, publisher)) is entry:
                del self._held_over[(topic, publisher)]

    def _file_full(self, log_time_ns: int) -> bool:
        """Whether the open file has reached max_bag_size or max_bag_duration (then ``log_time_ns`` opens the next)."""
        if self.max_bag_size:
            storage = self._writer.storage
            if storage.bio.tell() + storage.chunk.bio.tell() - self._repeated_bytes >= self.max_bag_size:
                return True
        return bool(self._max_duration_ns) and self._seconds_with(log_time_ns)[0] >= self._max_duration_ns

    def _seconds_with(self, log_time_ns: int) -> list:
        """The open file's ``_file_seconds`` with a message at ``log_time_ns``: its duration is the log time that went
        forward in it, so that a step back of the recorder's clock (a simulation's /clock reset to 0 with
        use_sim_time; NTP) neither stops the count (measured from the file's earliest log time, a recording whose
        time went back at each episode never split) nor counts backwards: a step back by more than
        LOG_TIME_WINDOW_NS (as BagReader and policy_node take a clock step) restarts the count there, keeping what
        was counted; a message a little behind the newest (topics received out of order) adds nothing."""
        counted, newest = self._file_seconds
        if newest is None or log_time_ns < newest - LOG_TIME_WINDOW_NS:
            return [counted, log_time_ns]
        return [counted + max(0, log_time_ns - newest), max(newest, log_time_ns)]

    def _file_entry(self) -> dict:
        """metadata.yaml's ``files`` entry of the open file."""
        count, first, last, _ = self._file_stats
        first = first if count else 0
        return {
            "path": self.mcap_path.name,
            "starting_time": {"nanoseconds_since_epoch": first},
            "duration": {"nanoseconds": max(0, last - first)},
            "message_count": count,
        }

    def _next_file(self, log_time_ns: int) -> None:
        """Finish the open file of a split bag (its MCAP summary here, its CRCs and fsync on a thread of their own:
        :meth:`_finish_in_background`) and open the next with every channel.

        The next file is opened first: when that fails (the folder removed, no file descriptor left) or finishing
        the open file does, the bag is as before (that file open, none after it), so ``close()`` still finishes it
        or says why not; a failure once it is finished (its fsync: a stick pulled) leaves the next file open.
        With ``repeat_latched`` the next file starts with the latched messages (:meth:`_repeat_latched`), logged at
        ``log_time_ns``, the message that opens it."""
        import yaml

        storage, crcs = self._writer.storage, self._crcs
        new = storage.next_file(self._file_path(len(self._files) + 1))
        try:
            start = new.bio.tell() + new.chunk.bio.tell()
            repeated = self._repeat_latched(new, log_time_ns)
            if repeated and new.chunk.bio.tell():  # their own chunk: counted as they are on the disk (compressed)
                new.close_chunk()
            repeated_bytes = new.bio.tell() + new.chunk.bio.tell() - start
            new_crcs = _ChunkCrcs(new.path)
            try:
                files = [*self._files, self._file_entry()]
                names = [entry["path"] for entry in files]
                about = {"version": BAG_VERSION, "storage_identifier": "mcap", "relative_file_paths": names}
                try:
                    storage.close(BAG_VERSION, yaml.safe_dump({**about, "files": files}, sort_keys=False).strip())
                except OSError as exc:  # its last chunk or summary not written: the file is cut there
                    self._cut_open_file(exc)
                    raise
            except BaseException:
                new_crcs.close()
                raise
        except BaseException:
            new.abort()
            new.path.unlink(missing_ok=True)
            raise
        self._files = files
        self._writer.storage, self._crcs = new, new_crcs
        self._chunk, self._in_chunk, self._unsure = new.chunk, {}, deque()  # the file before is whole
        self._file_stats = [repeated, log_time_ns if repeated else 2**63 - 1, log_time_ns if repeated else 0, 0]
        self._file_seconds = [0, None]
        self._repeated_bytes = repeated_bytes  # a latched state above the limit must not make a file of each message
        self._finish_in_background(crcs)

    def _repeat_latched(self, new: _McapFile, log_time_ns: int) -> int:
        """Write the latched topics' kept messages (each publisher's last, as many as it keeps: what a subscriber
        joining now would get) at the start of the new file ``new``, logged at ``log_time_ns``, after a Metadata
        record (:data:`REPEATED_LATCHED`) saying how many of each topic's first messages in the file they are:
        the file read alone (Foxglove, ``ros2 bag play`` of one file) has its TF tree, robot model and latched
        camera_info; a reader of the whole bag skips them (:class:`BagReader`). Returns how many."""
        kept = sorted(
            (order, topic, data)
            for topic, (_, by_publisher) in self._latched.items()
            for messages in by_publisher.values()
            for order, data in messages
        )
        if not kept:
            return 0
        counts: dict[str, int] = {}
        for _, topic, _ in kept:
            counts[topic] = counts.get(topic, 0) + 1
        new.bio.write(_metadata_record(REPEATED_LATCHED, {topic: str(n) for topic, n in counts.items()}))
        for _, topic, data in kept:
            new.write(self._connections[topic], log_time_ns, data)
        return len(kept)

    def _finish_in_background(self, crcs: _ChunkCrcs) -> None:
        """The finished file's last CRCs and its fsyncs (:meth:`_ChunkCrcs.finish`) on a thread, so that the writes
        go on into the next file meanwhile; the one before is waited for first (one at a time, in order). Not a
        daemon: a recorder exiting without close() still leaves the file whole on the disk."""
        self._wait_finished()

        def finish():
            try:
                crcs.finish()
            except OSError as exc:
                self._finish_failed = f"cannot finish {crcs.path.name}: {exc.strerror or exc}"

        self._finishing = threading.Thread(target=finish, name=f"finish {crcs.path.name}")
        self._finishing.start()

    def _wait_finished(self) -> None:
        """Wait for the finished file's CRCs and fsyncs (:meth:`_finish_in_background`), if any are running."""
        if self._finishing is not None:
            self._finishing.join()
            self._finishing = None

    def _write_all_waiting(self) -> None:
        """Wait for the file being finished, then write the messages held back (:meth:`_hold`) into the files,
        waiting for each file finished meanwhile (close, abort: nothing ``write`` took is left out)."""
        self._wait_finished()
        while self._waiting:
            self._write_waiting()
            self._wait_finished()
        self._crcs.advance()

    def _give_up_waiting(self) -> int:
        """Forget the messages held back that could not be written (close, abort), each counted in ``dropped`` and
        ``unwritten`` (``write`` had taken them); how many."""
        held = len(self._waiting)
        for topic, *_ in self._waiting:
            self._count_lost(topic, self.dropped, self.unwritten)
        self._waiting.clear()
        self._held_over.clear()
        self._waiting_bytes = 0
        return held

    def close(self) -> Path:
        """Finish the bag (MCAP summary and footer, then metadata.yaml); returns its folder."""
        with self._lock, self._held:
            if not self.closed:
                self.closed = True
                unwritten = ""
                try:
                    if not self.write_failure:
                        self._write_all_waiting()
                except OSError as exc:  # the next file not opened (EMFILE, the folder gone): the open one finished
                    self._wait_finished()
                    held = self._give_up_waiting()
                    unwritten = f"{held} message{'s' * (held != 1)} held back for the next file not written there: "
                    unwritten += str(exc.strerror or exc)
                if self.write_failure:  # the open file is cut: finishing it would write past the cut, unread
                    self._leave_cut()
                    before = "; the files before it are finished" if self._files else ""
                    raise BagError(
                        f"{self.path}: cannot finish the bag: a write to it failed ({self.write_failure}), cutting "
                        f"{self.mcap_path.name} there{before}" + (f"; {unwritten}" if unwritten else "")
                    )
                files = [*self._files, self._file_entry()]
                metadata = self._writer.metapath
                if self.split:  # rosbags' metadata.yaml names the last file only: written aside, then listing all
                    self._writer.metapath = self.path / ".metadata.rosbags.yaml"
                try:
                    self._writer.close()
                    if self.split:
                        _list_files(self._writer.metapath, metadata, files)
                except (WriterError, OSError) as exc:  # a full disk: the bag and the reason, not a bare errno
                    if isinstance(exc, OSError) and self._writer.storage is not None:  # the MCAP file not finished
                        self._cut_open_file(exc)
                        self._leave_cut()
                    self._crcs.close()
                    raise BagError(
                        f"{self.path}: cannot finish the bag: {getattr(exc, 'strerror', None) or exc}"
                    ) from None
                try:
                    self._crcs.finish()
                except OSError as exc:
                    raise BagError(f"{self.path}: cannot finish the bag: {exc.strerror or exc}") from exc
                if self._finish_failed:  # an earlier file's fsync, not yet said by a write
                    raise BagError(f"{self.path}: {self._finish_failed}; the other files are finished")
                if unwritten:
                    raise BagError(f"{self.path}: cannot finish the bag: {unwritten}; the files before are finished")
        return self.path

    def abort(self) -> None:
        """Stop writing without finishing (what a killed recorder leaves behind: a truncated MCAP file)."""
        with self._lock, self._held:
            if not self.closed:
                self.closed = True
                try:  # the files finished before stay whole, and what write() held back is written after them
                    if not self.write_failure:  # (not after a cut: nothing past it is read)
                        self._write_all_waiting()
                except OSError:  # the disk failing too: the bag is cut there, as a killed recorder's
                    pass
                self._leave_cut()

    def _leave_cut(self) -> None:
        """Leave the open file as it is (cut, or as a killed recorder's): the messages still held back are given
        up (counted as :meth:`_give_up_waiting` counts them), the chunks already whole keep their CRCs."""
        self._wait_finished()
        self._give_up_waiting()  # counted as close() counts them (before: not counted at all)
        try:  # what failed (a full disk: its buffered bytes) was said already
            self._writer.abort()
        except OSError:
            pass
        if self._cut_at is not None:  # as the failed write left it: bytes still buffered then (written now, had the
            with contextlib.suppress(OSError):  # disk room again) would make a chunk counted lost whole after all
                os.truncate(*self._cut_at)
        self._crcs.advance()  # the chunks already whole keep their CRCs for a salvage
        self._crcs.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


# The smallest split limits taken (0 is no split). Below them a file holds about one message (a camera frame is up
# to a few MB), each file finished and fsynced on its own: `--max-bag-size 4` made an hour of recording into a
# file per message. rosbag2 refuses a size below its storage's minimum (1 KiB for MCAP, 84 KiB for sqlite3) and
# takes the duration in whole seconds; here the size is at least one MCAP chunk of the writer (rosbags closes a
# chunk at 1 MiB: a smaller file never holds a whole one).
MIN_BAG_SIZE = 1 << 20  # bytes
MIN_BAG_DURATION_S = 1.0
# A split bag's messages held back while the file before is still being finished (BagWriter._hold), at most: the
# default of `ros2 bag record --max-cache-size`. Past it the writer drops messages, counted, rather than making its
# caller (the recorder's subscription callback) wait while DDS drops them without a count.
BEHIND_CACHE_BYTES = 100 * 1024 * 1024


def split_limit_refusal(name: str, value) -> str:
    """Why a max_bag_size (``name`` ends in ``size``: bytes) or max_bag_duration (seconds) that is a number, 0 or
    more, is refused: below its minimum; '' for 0 (no split) or one at or above it. Without the name: the one check
    of BagWriter, the recorder's parameters and ``liquid-control record``'s options, each naming its own."""
    if name.endswith("size"):
        if 0 < value < MIN_BAG_SIZE:
            return (
                f"{value} bytes is below the smallest split size, {MIN_BAG_SIZE} (1MiB): the files would hold about "
                "a message each, each finished and fsynced on its own (0: no split)"
            )
    elif 0 < value < MIN_BAG_DURATION_S:
        return (
            f"{value:g} s is below the shortest split duration, {MIN_BAG_DURATION_S:g} s: the files would hold about "
            "a message each, each finished and fsynced on its own (0: no split)"
        )
    return ""


def _split_limit(name: str, value, kind) -> int | float | None:
    """A BagWriter's max_bag_size (bytes, int) or max_bag_duration (seconds): None or 0 for no split."""
    if value is None:
        return None
    try:
        number = kind(value)
    except (TypeError, ValueError):
        number = None
    if number is None or number != value or isinstance(value, bool) or not number >= 0 or number == float("inf"):
        what = "a whole number of bytes" if kind is int else "a number of seconds"
        raise BagError(f"{name}: must be {what}, 0 or more (0: no split), got {value!r}")
    refusal = split_limit_refusal(name, number)
    if refusal:
        raise BagError(f"{name}: {refusal}")
    return number or None


class _FileNamed:
    """What rosbags' McapWriter takes for the bag folder (it writes ``folder/<folder>.mcap``), naming the file."""

    name = ""

    def __init__(self, file: Path):
        self.file = file

    def __truediv__(self, _name: str) -> Path:
        return self.file


class _McapFile(McapWriter):
    """rosbags' MCAP storage writer at a file named here, remembering the channels added to it so that the next
    file of a split bag (:meth:`next_file`) starts with them all."""

    def __init__(self, file: Path, compression):
        super().__init__(_FileNamed(file), compression)
        self.compression_mode = compression
        self.added: list[tuple] = []  # (rosbags Connection, its offered_qos_profiles as rosbags serialized them)

    def add_connection(self, connection, offered_qos_profiles: str) -> None:
        super().add_connection(connection, offered_qos_profiles)
        self.added.append((connection, offered_qos_profiles))

    def next_file(self, file: Path) -> _McapFile:
        """A new file with this one's schemas and channels (same ids)."""
        new = _McapFile(file, self.compression_mode)
        types = set()
        for connection, qos in self.added:
            if connection.msgtype not in types:
                new.add_msgtype(connection)
                types.add(connection.msgtype)
            new.add_connection(connection, qos)
        return new


# The MCAP Metadata record right after the Header of a split bag's file that starts with repeated latched messages
# (BagWriter repeat_latched): topic -> how many of its first messages in the file repeat those of the files before.
REPEATED_LATCHED = "liquid_control.repeated_latched"


def _mcap_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<I", len(raw)) + raw


def _metadata_record(name: str, values: dict[str, str]) -> bytes:
    """An MCAP Metadata record (opcode 0x0C: its name, then a map of strings)."""
    entries = b"".join(_mcap_string(key) + _mcap_string(value) for key, value in values.items())
    body = _mcap_string(name) + struct.pack("<I", len(entries)) + entries
    return b"\x0c" + struct.pack("<Q", len(body)) + body


def _repeated_latched(path: Path) -> dict[str, int]:
    """Topic -> how many of its first messages in the MCAP file ``path`` repeat latched messages of the files before
    it (the :data:`REPEATED_LATCHED` record right after its Header); {} for any other file, or one unreadable there
    (its messages are then all read)."""

    def string(data: bytes, at: int) -> tuple[str, int]:
        (size,) = struct.unpack_from("<I", data, at)
        if at + 4 + size > len(data):
            raise ValueError("a string past the record")
        return data[at + 4 : at + 4 + size].decode(), at + 4 + size

    try:
        with path.open("rb") as handle:
            head = handle.read(len(MCAP_MAGIC) + 9)
            if head[: len(MCAP_MAGIC)] != MCAP_MAGIC or len(head) < len(MCAP_MAGIC) + 9 or head[8] != 0x01:
                return {}
            handle.seek(int.from_bytes(head[9:], "little"), os.SEEK_CUR)  # past the Header
            record = handle.read(9)
            if len(record) < 9 or record[0] != 0x0C or int.from_bytes(record[1:], "little") > 1 << 20:
                return {}
            body = handle.read(int.from_bytes(record[1:], "little"))
        name, at = string(body, 0)
        if name != REPEATED_LATCHED:
            return {}
        (size,) = struct.unpack_from("<I", body, at)
        at, end, counts = at + 4, at + 4 + size, {}
        while at < end:
            topic, at = string(body, at)
            count, at = string(body, at)
            counts[topic] = int(count)
        return counts
    except (OSError, ValueError, struct.error):  # UnicodeDecodeError is a ValueError
        return {}


def _list_files(written: Path, metadata: Path, files: list[dict]) -> None:
    """Rewrite the metadata.yaml rosbags wrote as ``written`` (listing the last file) into ``metadata``, listing
    every file of the split bag, then remove ``written``."""
    import yaml

    from liquid_control.atomic_file import atomic_write

    text = yaml.safe_load(written.read_text(encoding="utf-8"))
    info = text["rosbag2_bagfile_information"]
    info["relative_file_paths"] = [entry["path"] for entry in files]
    info["files"] = files
    with atomic_write(metadata, "w", encoding="utf-8") as handle:  # UTF-8, names as written, as rosbags and rosbag2
        yaml.safe_dump(text, handle, default_flow_style=False, sort_keys=False, allow_unicode=True)
    written.unlink()


class _ChunkCrcs:
    """Writes the CRCs rosbags' MCAP writer leaves 0 into the file it is writing, through a file descriptor of
    its own: each chunk's ``uncompressed_crc`` (CRC-32 of its records, decompressed) as soon as the chunk record
    is whole in the file, and at :meth:`finish` (after rosbags closed the file) the DataEnd record's
    ``data_section_crc`` and the Footer's ``summary_crc``, then fsync.

    Only bytes below the file's current size are read or patched: rosbags only appends, so they are final and
    never rewritten under us. Each patch is one independent 4-byte ``pwrite`` over a field that held 0, and 0
    means "not computed" to every reader: a process killed or a disk failing between two patches leaves a bag
    that reads as before, its unpatched chunks simply unchecked. The chunk data is fsynced before the
    data-section CRC (which covers the chunk CRCs) is written, so a power cut cannot leave that CRC describing
    chunk CRCs that never reached the disk. A CRC field already nonzero (a writer that computes them) is kept.
    Not covered: the chunk a killed recorder was writing (cut short, the salvage ends before it anyway) and a
    chunk whose data reached the disk but whose CRC did not (unchecked). Trouble here never stops a recording:
    the CRCs after it stay 0 and :meth:`finish` warns, naming the file and the byte.
    """

    DATA_RECORDS = frozenset((0x01, 0x03, 0x04, 0x05, 0x06, 0x07, 0x09, 0x0C))  # may precede DataEnd
    CHUNK, DATA_END, FOOTER = 0x06, 0x0F, 0x02

    def __init__(self, path: Path):
        self.path = path
        self._fd = os.open(path, os.O_RDWR)
        self._pos = 0  # the next record to read; 0: the magic
        self._crc = 0  # CRC-32 of the bytes before _pos, as they are after patching (the data-section CRC)
        self._data_end: int | None = None  # offset of the DataEnd record once reached
        self._failed = ""  # why the patching stopped
        self.chunks = 0  # chunk CRCs written

    def _read(self, size: int, offset: int) -> bytes:
        data = os.pread(self._fd, size, offset)
        if len(data) != size:
            raise OSError(f"short read of {size} bytes at byte {offset}")
        return data

    def advance(self) -> None:
        """Patch every chunk that is whole in the file and not yet patched; cheap (one fstat) when none is."""
        if self._fd < 0 or self._failed or self._data_end is not None:
            return
        try:
            size = os.fstat(self._fd).st_size
            if self._pos == 0:
                if size < len(MCAP_MAGIC):
                    return
                magic = self._read(len(MCAP_MAGIC), 0)
                if magic != MCAP_MAGIC:
                    raise ValueError("the file does not start with the MCAP magic")
                self._crc, self._pos = zlib.crc32(magic), len(MCAP_MAGIC)
            while self._pos + 9 <= size:
                head = self._read(9, self._pos)
                opcode, length = head[0], int.from_bytes(head[1:], "little")
                if opcode == self.DATA_END:
                    self._data_end = self._pos
                    return
                if opcode not in self.DATA_RECORDS:
                    raise ValueError(f"unexpected record opcode 0x{opcode:02x}")
                if self._pos + 9 + length > size:
                    return  # not whole yet
                body = bytearray(self._read(length, self._pos + 9))
                if opcode == self.CHUNK:
                    self._patch_chunk(self._pos, body)
                self._crc = zlib.crc32(body, zlib.crc32(head, self._crc))
                self._pos += 9 + length
        except Exception as exc:  # OSError, a record not as expected, a zstd error: never stops the recording
            self._failed = f"at byte {self._pos}: {type(exc).__name__}: {exc}"

    def _patch_chunk(self, offset: int, body: bytearray) -> None:
        # message_start_time, message_end_time, uncompressed_size u64, uncompressed_crc u32, compression
        # (u32 length + string), records (u64 length + bytes)
        _, _, size, crc, name_len = struct.unpack_from("<QQQII", body, 0)
        compression = bytes(body[32 : 32 + name_len]).decode()
        (records_len,) = struct.unpack_from("<Q", body, 32 + name_len)
        start = 40 + name_len
        if crc or start + records_len > len(body):
            return  # computed by its writer already, or not a chunk rosbags wrote: left as it is
        records = memoryview(body)[start : start + records_len]
        if compression == "zstd":
            try:
                from compression import zstd  # Python 3.14; rosbags compresses with it, or with the backport
            except ImportError:
                from backports import zstd
            records = zstd.decompress(records)
        elif compression:
            return  # rosbags writes only zstd or none; anything else is left unchecked
        if len(records) != size:
            raise ValueError(f"the chunk there holds {len(records)} bytes of records, its header says {size}")
        crc = zlib.crc32(records)
        if crc:  # a CRC that is 0 cannot be told from "not computed"
            field = struct.pack("<I", crc)
            if os.pwrite(self._fd, field, offset + 9 + 24) != 4:
                raise OSError(f"short write of the CRC of the chunk at byte {offset}")
            body[24:28] = field
            self.chunks += 1

    def finish(self) -> None:
        """After rosbags closed the file: the last chunks, fsync, the data-section and summary CRCs, fsync."""
        if self._fd < 0:
            return
        try:
            self.advance()
            if not self._failed and self._data_end is None:
                self._failed = f"at byte {self._pos}: no DataEnd record"
            os.fsync(self._fd)  # the chunks and their CRCs before the CRC that covers them
            if not self._failed:
                self._patch_data_end_and_summary()
                os.fsync(self._fd)
        except OSError:
            raise  # the disk failing now (fsync, a read or write): the bag may not be on it, not only unchecked
        except Exception as exc:
            self._failed = self._failed or f"{type(exc).__name__}: {exc}"
        finally:
            self.close()
        if self._failed:
            warnings.warn(
                f"{self.path}: MCAP CRCs not written {self._failed}; the bag is complete, but the chunks from "
                f"there on are not checked when read",
                stacklevel=3,
            )

    def _patch_data_end_and_summary(self) -> None:
        head = self._read(13, self._data_end)
        if int.from_bytes(head[1:9], "little") >= 4 and head[9:13] == bytes(4) and self._crc:
            os.pwrite(self._fd, struct.pack("<I", self._crc), self._data_end + 9)
        # Footer: opcode, length, summary_start u64, summary_offset_start u64, summary_crc u32; then the magic.
        # summary_crc covers the summary section up to and including the footer's summary_offset_start.
        size = os.fstat(self._fd).st_size
        footer = size - len(MCAP_MAGIC) - 29
        tail = self._read(29 + len(MCAP_MAGIC), footer)
        if tail[0] != self.FOOTER or tail[29:] != MCAP_MAGIC:
            raise ValueError(f"no MCAP footer at byte {footer}")
        summary_start, _, crc = struct.unpack_from("<QQI", tail, 9)
        if summary_start and not crc and summary_start < footer:
            crc = zlib.crc32(self._read(footer + 25 - summary_start, summary_start))
            if crc:
                os.pwrite(self._fd, struct.pack("<I", crc), footer + 25)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


# ------------------------------------------------------------------------------------------------ reading
@dataclass(frozen=True)
class TopicInfo:
    """One recorded topic: type, message count and the QoS profiles its publishers offered. A topic recorded with
    more than one type (publishers of two types on one name: each its own MCAP channel) has ``types``, each type
    with its count, most messages first; ``msgtype`` is the first of them and ``count`` counts them all."""

    name: str
    msgtype: str
    count: int
    qos: tuple  # of rosbags Qos
    types: tuple = ()  # ((msgtype, count), ...): every type the topic was recorded with; () read as ((msgtype, count),)

    @property
    def msgtypes(self) -> dict[str, int]:
        """Each type the topic was recorded with -> its message count."""
        return dict(self.types or ((self.msgtype, self.count),))


@dataclass(frozen=True)
class BagMessage:
    """One message: topic, log time (ns, the recorder's clock), type and CDR bytes (``decode()`` parses them)."""

    topic: str
    log_time_ns: int
    msgtype: str
    data: bytes

    def decode(self):
        """The message parsed from its CDR bytes. The 4 or 8 bytes past its end that rclpy's serializer leaves
        (every JointState without efforts that a tool serializing with rclpy recorded) are read past, where rosbags
        refuses them."""
        try:
            return typestore().deserialize_cdr(self.data, self.msgtype)
        except Exception as exc:
            if "size mismatch" not in str(exc):
                raise
            message, _ = _cut_overshoot(self.data, self.msgtype)  # 4 or 8 bytes of rclpy's overshoot
            if message is None:
                raise
            return message


# Messages reach the caller sorted by log time, ties in the order written. A bag in which some topic's own log
# time steps back by more than this window in the order written holds a step back of the recording machine's
# clock (NTP/chrony; a step moves every topic): each stretch between two steps (a segment) is read sorted, one
# after the other, so the messages logged after a step follow those logged before it (received later, seen later
# by policy_node) instead of being sorted in among them. Each topic crosses a step where its own log time goes
# back (_StepPlanner), so a topic logged behind the others (a camera logged at its stamps 1 s late) crosses it one
# lag after them. A bag written out of log-time order without such a step (a conversion that wrote one topic
# after another; log times from another clock than the writing order) is merged topic by topic into log-time
# order, one pass over the file per topic.
LOG_TIME_WINDOW_NS = 500_000_000  # policy_node's default max_backward_jump_s: less is not a clock reset to it either
# A bag out of log-time order without a clock step is sorted in one pass holding its largest lag of messages when
# that is at most this (one topic logged at its stamps, behind the others), else merged topic by topic (one pass
# over the file per topic: a file written one topic after another).
SORT_WINDOW_MAX_NS = 2_000_000_000
# Deciding whether a message less than the window behind its own topic's newest starts a step reads at most this
# many messages ahead for another topic's next message (log times only).
STEP_LOOKAHEAD_MESSAGES = 10_000
STORAGE_SUFFIXES = (".mcap", ".db3")
ROSBAGS_TESTED = "0.11.9"  # messages are read from its storage readers' internals (_storage_messages): pinned


@lru_cache(maxsize=1)
def _check_rosbags_version() -> None:
    """Warn once when rosbags is not the version the reading was tested with (its internals are read)."""
    if _rosbags_version() != ROSBAGS_TESTED:
        warnings.warn(
            f"rosbags {_rosbags_version()} is installed; bags are read through its storage readers as in rosbags=="
            f"{ROSBAGS_TESTED} (requirements.txt): reading may fail with an error naming the bag",
            stacklevel=3,
        )


@lru_cache(maxsize=1)
def _rosbags_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rosbags")
    except PackageNotFoundError:
        return "(version unknown)"


def _split_index(path: Path) -> tuple:
    """Sort key of a storage file in a split bag: rosbag2 names them ``<bag>_0.mcap``, ``<bag>_1.mcap`` ..."""
    stem, _, number = path.name[: -len(path.suffix)].rpartition("_")
    return (0, int(number), stem) if stem and number.isdigit() else (1, 0, path.name)


def folder_storage_files(folder: Path) -> list[Path]:
    """A bag folder's storage files (``.mcap``, ``.db3``, either file-compressed, ``.zstd``), by name. Not what a copy
    adds beside them: hidden files (``.DS_Store``, the ``._run1_0.mcap`` a Mac writes beside each file on a FAT or
    exFAT stick), notes."""
    endings = tuple(suffix + compressed for suffix in STORAGE_SUFFIXES for compressed in ("", ".zstd"))
    stored = (f for f in folder.iterdir() if f.name.endswith(endings) and not f.name.startswith(".") and f.is_file())
    return sorted(stored, key=lambda f: f.name)


def recorded_files(bag: str | Path) -> list[Path]:
    """The files of a bag that hold its messages, by name: a bag given as a file, that file; a folder's storage files
    (``folder_storage_files``), with a metadata.yaml those it lists (the files read: a file copied in beside them
    that it does not list is not the recording, :meth:`BagReader._check_listed_files`). Not metadata.yaml, which
    names the folder, nor what a copy adds or leaves out beside them (which made the same recording two bags to
    ``bag_sha256`` and training's check for copied bags)."""
    path = Path(bag)
    if path.is_file():
        return [path]
    stored = folder_storage_files(path)
    listed = {f.name for f in _metadata_files(path)[0]}  # none without a readable metadata.yaml
    return [f for f in stored if f.name in listed] if listed else stored


def warn_unlisted_files(bag: str | Path, listed: list[Path] | None = None, stacklevel: int = 1) -> None:
    """Warn of the storage files of bag folder ``bag`` that its metadata.yaml does not list (``listed``: those it
    lists, read from it when not given), which are not read nor in ``bag_sha256``. Said where the bag is
    opened (:meth:`BagReader._check_listed_files`) and where training reuses the bag's converted cache without
    opening it (training.bag_data): a user who missed it once hears it again. ``stacklevel``: as the caller's own
    ``warnings.warn`` would take it."""
    path = Path(bag)
    if listed is None:
        listed = _metadata_files(path)[0] if path.is_dir() else []
    names = {f.name for f in listed}
    unlisted = [f.name for f in folder_storage_files(path) if f.name not in names] if names else []
    if unlisted:
        warnings.warn(
            f"{path}: {', '.join(unlisted)} not listed in its metadata.yaml, so not read (the bag is "
            f"{', '.join(f.name for f in listed)}); move it out of the folder (to read it, give it as a bag of its "
            "own), or, if it belongs to this recording, move metadata.yaml out (the folder is then read from its "
            "storage files)",
            stacklevel=stacklevel + 1,
        )


class RecordedDigest:
    """The SHA-256 of the bytes of ``files``, one after another, taken from bytes a reader reads anyway.

    ``feed(path, offset, data)``: ``data`` was read at ``offset`` of ``path`` (a :class:`BagReader` feeds each MCAP
    chunk it reads). What the digest was not fed before it gets there (what lies between the chunks, chunks of
    topics not read, files read through sqlite or salvaged) it reads from the file itself, and bytes behind it are
    passed over, so whatever the reader reads, in whatever order, the digest is that of the files and reads no
    byte the reader fed it."""

    def __init__(self, files: Iterable[str | Path]):
        self._files = [Path(f) for f in files]
        self._numbers = {f.resolve(): n for n, f in enumerate(self._files)}
        self._known: dict = {}  # a path as fed -> its file's number (None: not one of the files)
        self._hash = hashlib.sha256()
        self._file, self._at = 0, 0  # hashed so far: the files before self._file and its bytes before self._at
        self._handle = None  # of self._file, for the bytes not fed

    def feed(self, path: str | Path, offset: int, data) -> None:
        """``data`` read at ``offset`` of ``path``: hashed where it continues what is hashed (after reading the
        bytes before it that were not fed)."""
        n = self._known.get(path, -1)
        if n == -1:
            n = self._known[path] = self._numbers.get(Path(path).resolve())
        if n is None or (n, offset + len(data)) <= (self._file, self._at):
            return
        self._read_up_to(n, offset)
        if n == self._file and offset <= self._at < offset + len(data):
            self._hash.update(memoryview(data)[self._at - offset :])
            self._at = offset + len(data)

    def _read_up_to(self, n: int, offset: int) -> None:
        """Hash the files' bytes from where the digest is up to ``offset`` of file ``n`` (or its end)."""
        while self._file < len(self._files) and (self._file, self._at) < (n, offset):
            if self._handle is None:
                self._handle = open(self._files[self._file], "rb")
            self._handle.seek(self._at)
            left = offset - self._at if self._file == n else None
            while left is None or left > 0:
                chunk = self._handle.read(1 << 20 if left is None else min(left, 1 << 20))
                if not chunk:
                    break
                self._hash.update(chunk)
                self._at += len(chunk)
                left = None if left is None else left - len(chunk)
            else:
                return  # at ``offset``
            self.close()  # at the end of the file: the next one
            self._file, self._at = self._file + 1, 0

    def hexdigest(self) -> str:
        """The SHA-256 (hex) of all of the files: what is left of them is read now."""
        self._read_up_to(len(self._files), 0)
        return self._hash.hexdigest()

    def close(self) -> None:
        """Close the file it reads (read again from where it was if it goes on)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def bag_sha256(bag: str | Path) -> str:
    """The SHA-256 of a bag's recorded bytes: its storage files (``recorded_files``), by name, one after another
    (what ``cat`` of them piped into ``sha256sum`` gives; one file: ``sha256sum`` of it). It names a recording
    wherever it is copied or moved, and two robots' folders of the same name apart (the training record,
    policy_node's words). A bag being read anyway: ``BagReader(bag, sha256=True).recorded_sha256()``."""
    return RecordedDigest(recorded_files(bag)).hexdigest()


def _storage_files(folder: Path) -> list[Path]:
    """The storage files (.mcap, .db3) of a bag folder without metadata.yaml, in split order: one recording's
    ``<bag>_0``, ``<bag>_1`` ... (files of several recordings, or a split file missing, are refused: read as one
    bag they would join unrelated drives; a file-compressed split file cannot be read without the metadata)."""
    stored = folder_storage_files(folder)
    files = sorted((f for f in stored if f.suffix in STORAGE_SUFFIXES), key=_split_index)
    compressed = [f.name for f in stored if f.suffix == ".zstd"]
    if compressed:
        raise BagError(
            f"{folder}: no metadata.yaml, and file-compressed storage files {', '.join(compressed)}: they are read "
            "only with the bag's metadata.yaml (decompress them with `zstd -d` to read the folder without it)"
        )
    if len(files) > 1:
        keys = [_split_index(f) for f in files]
        stems = {(key[2], f.suffix) for key, f in zip(keys, files, strict=True)}
        numbers = [key[1] for key in keys]
        if any(key[0] for key in keys) or len(stems) > 1 or numbers != list(range(len(files))):
            raise BagError(
                f"{folder}: no metadata.yaml, and its storage files {', '.join(f.name for f in files)} are not one "
                "split recording (<bag>_0, <bag>_1, ... with one name, none missing): pass each recording, or each "
                "file, as its own bag"
            )
    return files


def bag_given_twice(named) -> tuple[Path, str, str] | None:
    """The first bag that two of ``named`` ((bag path, how it was given: the path or the glob that matched it)
    pairs) name, resolved (a glob and a path, ./x and x, a link), with both namings; None if each is named once.
    A bag folder and one of its storage files (``run_001`` and ``run_001/run_001.mcap``) name it too, as the first
    of the two paths. Training and evaluation refuse it: its updates would count twice (weighted double, pooled
    twice)."""
    first_named: dict[Path, tuple[Path, str]] = {}  # the path and each storage file -> (the bag's path, given as)
    for bag, given_as in named:
        path = Path(bag).resolve()
        keys = [path]
        if path.is_dir():
            with contextlib.suppress(OSError):  # a folder it cannot list: its reader names that
                keys += [f.resolve() for f in recorded_files(path)]
        for key in keys:
            if key in first_named:
                first_path, first_given = first_named[key]
                return first_path, first_given, given_as
        first_named.update((key, (path, given_as)) for key in keys)
    return None


def expand_bags(patterns, option: str, repeats: bool = False) -> list[str]:
    """The bags that ``patterns`` (paths and globs, a glob's matches sorted) name, as given, each checked before any
    bag is read (a typo in the last one was found only after every bag before it was converted or played): a glob
    that matches nothing, a path that is not there, a bag two of them name (:func:`bag_given_twice`: its updates
    would count twice; unless ``repeats``, a replay's, which plays it again) raise :class:`BagError` naming
    ``option``, where the user gave them (``--bag``, ``--val-bag``, ``data.bags``), and the path. The one check of
    ``train --bag/--val-bag``, ``eval --bag``, ``replay`` and ``record --info``."""
    label = option if option.startswith("-") else f"{option}:"

    def where(pattern: str) -> str:
        """A config's relative path, from a config used in another folder: where it was looked for."""
        if option.startswith("-") or Path(user_path(pattern)).is_absolute():
            return ""
        return f" (a data: path is relative to the working directory, {Path.cwd()})"

    named = []  # (bag, the pattern that gave it)
    for pattern in map(str, patterns):
        # a path that exists is that bag, also where its name holds a glob character (`run [1]`, `take*2`); ~ expanded
        matches = expand_pattern(pattern)
        if not matches:
            raise BagError(f"{label} {pattern!r} matches no bag{where(pattern)}")
        named += [(match, pattern) for match in matches]
    missing = [(bag, pattern) for bag, pattern in named if not os.path.exists(bag)]  # (a name too long: missing)
    if missing:  # BagReader's words
        raise BagError(f"{label} {', '.join(bag for bag, _ in missing)}: {NO_SUCH_BAG}{where(missing[0][1])}")
    twice = None if repeats else bag_given_twice(named)
    if twice:
        path, first, second = twice
        how = f"named {first!r} both times" if first == second else f"by {first!r} and {second!r}"
        raise BagError(f"{label} {path}: one bag given twice ({how}): its updates would count twice; give each once")
    return [bag for bag, _ in named]


def _bags_inside(folder: Path) -> str:
    """A hint when ``folder`` is a folder of bags (``bags/day1`` given for ``bags/day1/*``): which, and the glob."""
    inside = sorted(
        d.name
        for d in folder.iterdir()
        if d.is_dir() and ((d / "metadata.yaml").is_file() or any(f.suffix in STORAGE_SUFFIXES for f in d.iterdir()))
    )
    if not inside:
        return ""
    names = ", ".join(inside[:3]) + (f" and {len(inside) - 3} more" if len(inside) > 3 else "")
    others = len([entry for entry in folder.iterdir() if entry.name not in inside and not entry.name.startswith(".")])
    if not others:  # the glob names the bags and nothing else
        return f"; it is a folder of {len(inside)} bag(s) ({names}): give them as '{folder / '*'}'"
    if len(inside) <= 3:  # a glob would name the other files too, which are no bags
        return f"; it holds {len(inside)} bag(s) beside other files: give {' '.join(str(folder / n) for n in inside)}"
    return (
        f"; it holds {len(inside)} bag(s) ({names}) beside {others} other file(s): move those out, then give "
        f"'{folder / '*'}'"
    )


def recording_elsewhere(path: Path) -> bool:
    """Whether ``path`` is a bag folder another process's :class:`BagWriter` is writing now."""
    return path.is_dir() and folder_lock.in_use_elsewhere(path)


def _looks_truncated(path: Path) -> bool:
    """True for an MCAP file that starts well but has no footer (its writer was killed), also one cut within or
    just after its opening magic (killed as it started: empty, or at most the magic; not an MCAP file to rosbags,
    whose reader called it 'empty', 'magic is invalid' or raised a TypeError)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - 8))
            tail = handle.read(8)
    except OSError:
        return False
    if size <= len(MCAP_MAGIC):
        return MCAP_MAGIC.startswith(head)
    return head == MCAP_MAGIC and tail != MCAP_MAGIC


def _bagfile_information(folder: Path) -> dict | None:
    """metadata.yaml's ``rosbag2_bagfile_information`` of a bag folder; None where it is missing or unreadable
    (rosbags' reader, where it is needed, says what is wrong with it). A BagError naming it for aliases that expand
    it past ``load_yaml``'s bound (a "billion laughs" in a downloaded bag: its file names were expanded, never
    ending) or nesting too deep to read; rosbag2 writes no aliases."""
    from liquid_control.yaml_numbers import AliasBombError, TooDeepError, load_yaml

    path = Path(folder) / "metadata.yaml"
    try:
        info = load_yaml(path.read_text(encoding="utf-8"))["rosbag2_bagfile_information"]
    except (AliasBombError, TooDeepError) as exc:
        raise BagError(f"{path}: not readable: {exc}") from None
    except Exception:
        return None
    return info if isinstance(info, dict) else None


def _free_temp_bytes() -> int:
    """Bytes free in the temp folder (``tempfile.gettempdir()``: ``$TMPDIR``, else /tmp); where it is in memory
    (tmpfs, ramfs), no more than the memory available (a tmpfs's size may be larger)."""
    import shutil
    import tempfile

    folder = tempfile.gettempdir()
    free = shutil.disk_usage(folder).free
    available = _memory_available_bytes() if _in_memory(folder) else None
    return free if available is None else min(free, available)


def _in_memory(folder: str) -> bool:
    """Whether ``folder`` is on a tmpfs or ramfs (the mount holding it, from /proc/self/mountinfo)."""
    import os

    where, fstype, best = os.path.realpath(folder), None, -1
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        mount = fields[4].replace("\\040", " ")
        inside = where == mount or where.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) > best:
            best, fstype = len(mount), line.split(" - ", 1)[1].split()[0]
    return fstype in ("tmpfs", "ramfs")


def _memory_available_bytes() -> int | None:
    """MemAvailable of /proc/meminfo in bytes; None where it is not readable."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


# What a storage file of each storage_identifier is called and starts with, checked in a file-compressed bag before
# unpacking it.
STORAGE_MAGIC = {"mcap": ("an MCAP", MCAP_MAGIC), "sqlite3": ("an SQLite", b"SQLite format 3\x00")}
# A file-compressed bag is unpacked into the temp folder only leaving a tenth of its free space; one refused so is
# said to be maybe a decompression bomb where it unpacks to more than this many times its packed size.
BOMB_RATIO = 100  # ROS bags' image and IMU data pack ~2-10x


def _check_unpacked_size(files: list[Path], storage: str) -> None:
    """A BagError before rosbags' reader unpacks a file-compressed bag whole into the temp folder, where a file does
    not unpack to its storage's magic (``storage``: metadata.yaml's storage_identifier), or its files would take
    more than the free space there less a tenth kept spare: a 109 kB stream of zstd zeros (a decompression bomb)
    unpacked to 3 GB before it was refused, a 1.4 MB one to 40 GB. The first bytes are unpacked as a stream, then
    the files counted as rosbags unpacks them (``zstd.open``), without keeping the bytes; a damaged file is counted
    up to its damage (rosbags names it)."""
    import tempfile

    folder = tempfile.gettempdir()
    kind, magic = STORAGE_MAGIC.get(storage, (None, b""))
    for file in files if magic else ():
        try:
            with _zstd().open(file, "rb") as unpacked:
                head = unpacked.read(len(magic))
        except Exception:  # missing, not zstd: rosbags' reader says what is wrong with it
            continue
        if head != magic:
            raise BagError(
                f"{file}: does not unpack to {kind} file (its first bytes are not the magic of the storage_identifier "
                f"{storage} of metadata.yaml): a damaged or foreign file, or a decompression bomb; refused before "
                f"unpacking it into {folder}"
            )
    free, total = _free_temp_bytes(), 0
    limit = free - free // 10
    for file in files:
        try:
            with _zstd().open(file, "rb") as unpacked:
                while total <= limit:
                    piece = unpacked.read(1 << 20)
                    if not piece:
                        break
                    total += len(piece)
        except Exception:  # missing, not zstd, cut short: rosbags' reader says what is wrong with it
            pass
        if total > limit:
            memory = " (in memory)" if _in_memory(folder) else ""
            packed = sum(f.stat().st_size for f in files if f.is_file())
            bomb = (
                f" (or a decompression bomb: {total // max(packed, 1)} times its packed size)"
                if (total > BOMB_RATIO * packed)
                else ""
            )
            raise BagError(
                f"{file}: a file-compressed bag is unpacked whole into {folder} to be read, and its files unpack "
                f"to at least {total} bytes, more than the {free} bytes free there{memory} can take with a tenth "
                f"kept spare: set TMPDIR to a folder with room{bomb}"
            )


def _as_written(name: str, file: Path) -> str:
    """A storage file's path as metadata.yaml writes it (quoted where unprintable or long), and, where it is not a
    plain name (../outside/ep.mcap, /etc/passwd), the file in the bag's folder it is read as."""
    text = name if name.isprintable() and len(name) <= 200 else shown(name)
    return text if name == file.name else f"{text} (read as {file.name} in the bag's folder)"


def _file_kind(path: Path) -> str:
    """What a path that exists but is no regular file is: a FIFO, a device, a folder, ...; a link's target named."""
    import stat

    mode = path.stat().st_mode
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"))
    kinds += ((stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    kind = next((text for test, text in kinds if test(mode)), "not a regular file")
    return f"a link to {path.resolve()}, {kind}" if path.is_symlink() else kind


def _metadata_files(folder: Path) -> tuple[list[Path], str | None]:
    """The storage files metadata.yaml names (in its order) and its compression mode; ([], None) if unreadable."""
    info = _bagfile_information(folder)
    try:
        files = [folder / Path(str(name)).name for name in info["relative_file_paths"]]
        mode = str(info.get("compression_mode") or "").lower()
    except Exception:  # rosbags' reader says what is wrong with it
        return [], None
    return files, (mode if mode not in ("", "none") else None)


def metadata_counts(folder: Path) -> tuple[int, dict[str, int]] | None:
    """What a bag folder's metadata.yaml says was recorded: the message count and each topic's; None without a
    readable one (a recorder killed before writing it)."""
    info = _bagfile_information(folder)
    try:
        topics = {str(t["topic_metadata"]["name"]): int(t["message_count"]) for t in info["topics_with_message_count"]}
        return int(info["message_count"]), topics
    except Exception:
        return None


class _Part(NamedTuple):
    """One storage file of a bag, in split order: an open rosbags storage, or a truncated MCAP file to salvage;
    ``repeats``: topic -> how many of its first messages there repeat latched ones of the files before (skipped)."""

    path: Path
    storage: object = None  # rosbags McapReader / Sqlite3Reader
    salvage: bool = False
    repeats: dict | None = None


class _Track:
    """One topic as :class:`_StepPlanner` follows it: its segment, its newest log time there, how many of its
    messages were read, ``marks`` (from its n-th message on, segment k), and whether its first segment is still
    a guess (its first message came after a step: :meth:`_StepPlanner._fitting`)."""

    __slots__ = ("seg", "last", "count", "marks", "tentative")

    def __init__(self, seg: int, t: int, tentative: bool):
        self.seg, self.last, self.count, self.marks, self.tentative = seg, t, 0, [(0, seg)], tentative


class _StepPlan(NamedTuple):
    """How :meth:`BagReader.messages` reads a set of topics across the clock's steps: ``marks``, per topic, from
    which of its messages (n-th, in the order written) on it is in which segment; ``steps``, per step the entry
    of ``BagReader.clock_steps``."""

    marks: dict
    steps: tuple


class _StepPlanner:
    """The segments (stretches between two steps back of the recorder's clock) of a bag's messages, decided topic
    by topic from each topic's own log times, in the order written (:meth:`BagReader._plan_steps`).

    A topic crosses a step when its own log time goes back: by more than the window (the first to, with nothing
    to cross, opens a new step: a step moves every topic), or, behind a step already opened, by more than half how
    far that step went back (a slow topic goes back its period less). A topic logged behind the others (a camera
    logged at its stamps 1 s late) thus crosses one lag after them, its messages logged before the step staying
    before it. As ``_scan_order`` decides, a message less than the window behind its own topic's newest but more
    than the window behind its segment's newest opens a step too when the next message of another topic goes back
    as well (two slow topics: each goes back its period less than the clock), here both by more than half the
    window (two lagged topics crossing a smaller step back together are no step).

    A topic's first message after a step (and one logged more than the window past everything in its segment: a
    topic silent across the step) goes to the latest segment whose log times so far reach it, or starts a new step
    when it fits none and lies more than the window behind the newest (:meth:`_fitting`); that guess is corrected
    once the topic shows it: it logs past the topics of that segment placed there by their own log times (it was
    after the step), or it goes back from where the step did (it was before it).

    Limits: a live topic starting after a step that only lagged topics will show (none has crossed it yet) stays
    before it; one topic's log times jumping back alone (a camera stamped by a clock of its own) is a step, as
    ``_scan_order`` decides, that the other topics never cross; a topic whose period is longer than the step back
    never goes back at it: it crosses when it logs past everything before the step by the window."""

    def __init__(self, numbers: dict):
        self.numbers = numbers  # file -> its number in the bag
        self.tracks: dict[str, _Track] = {}
        self.spans: list[dict] = [{}]  # per segment: topic -> [lowest, newest, (first sort key, file, index)]
        self.drops = [0]  # per segment: how far (ns) its step went back
        self.lowest: list = [None]  # per segment: its lowest and newest log time so far
        self.newest: list = [None]

    def add(self, item: tuple, source: Iterator, ahead: deque) -> None:
        """Place the message ``item`` = (file, index, position, topic, log time); ``source`` and ``ahead``: the
        messages after it (read into ``ahead`` when a step must be confirmed)."""
        topic, t = item[3], item[4]
        track = self.tracks.get(topic)
        latest = len(self.drops) - 1
        if track is None:
            seg = self._fitting(t, 0)
            track = self.tracks[topic] = _Track(seg, t, tentative=0 < latest and seg <= latest)  # not if it opened one
        else:
            if track.tentative:
                self._review(topic, track, t)
            seg = track.seg
            if seg < latest and t > self.newest[seg] + LOG_TIME_WINDOW_NS:  # silent across the step
                seg = self._fitting(t, seg)
            elif t < track.last:
                seg = self._behind(topic, track, t, source, ahead)
        if seg != track.seg:
            track.marks.append((track.count, seg))
            track.seg, track.last, track.tentative = seg, t, False
        elif t > track.last:
            track.last = t
        track.count += 1
        self._note(topic, seg, item)

    def _behind(self, topic: str, track: _Track, t: int, source: Iterator, ahead: deque) -> int:
        """The segment of a message of ``topic`` logged before its topic's newest (``track.last``)."""
        back, seg, latest = track.last - t, track.seg, len(self.drops) - 1
        if track.tentative and seg == latest > 0 and back > LOG_TIME_WINDOW_NS and self._crossing_late(track):
            self._relabel(topic, track, seg - 1)  # its first messages were logged before the step: it crosses now
            return seg
        while seg < latest and back > min(LOG_TIME_WINDOW_NS, self.drops[seg + 1] // 2):
            back -= self.drops[seg + 1]
            seg += 1
        if seg == latest and back > LOG_TIME_WINDOW_NS:
            return self._open(back)
        if seg == track.seg == latest and t < self.newest[seg] - LOG_TIME_WINDOW_NS and back > LOG_TIME_WINDOW_NS // 2:
            if self._confirmed(topic, seg, source, ahead):
                return self._open(self.newest[seg] - t)
        return seg

    def _crossing_late(self, track: _Track) -> bool:
        """Whether a topic whose first segment was a guess, the latest, going back now, is crossing that segment's
        step late (a topic logged behind the others): it goes back from where the step did (its newest near the
        newest before the step), while the segment is younger than the largest lag sorted in one pass and the
        window (a lagged topic crosses a step at most that long after the others)."""
        seg = track.seg
        young = self.newest[seg] - self.lowest[seg] <= SORT_WINDOW_MAX_NS + LOG_TIME_WINDOW_NS
        before = self.newest[seg - 1]
        return young and before is not None and abs(track.last - before) <= LOG_TIME_WINDOW_NS

    def _confirmed(self, topic: str, seg: int, source: Iterator, ahead: deque) -> bool:
        """Whether the next message of another topic of segment ``seg`` goes back against its own newest by more than
        half the window too (read into ``ahead``, at most :data:`STEP_LOOKAHEAD_MESSAGES`)."""
        for k in range(STEP_LOOKAHEAD_MESSAGES):
            if k == len(ahead):
                following = next(source, None)
                if following is None:
                    return False
                ahead.append(following)
            other, u = ahead[k][3], ahead[k][4]
            track = self.tracks.get(other)
            if other != topic and track is not None and track.seg == seg:
                return u < track.last - LOG_TIME_WINDOW_NS // 2
        return False

    def _open(self, drop: int) -> int:
        """A new segment after a step back of ``drop`` ns; its number."""
        self.drops.append(drop)
        self.spans.append({})
        self.lowest.append(None)
        self.newest.append(None)
        return len(self.drops) - 1

    def _fitting(self, t: int, floor: int) -> int:
        """The latest segment from ``floor`` on whose log times so far reach ``t`` (from its lowest to the window
        past its newest); else, after a step, a new step when ``t`` lies more than the window behind the latest
        segment's newest (the clock stepped back again while no topic showed it); else the latest.

        Its limit: a topic logged behind the others whose first message, logged before a step, is written after it
        can fit the segment after the step too; a topic logged when received that starts after a step can fit the
        one before it when the segment after holds only lagged topics (both are corrected by :meth:`_review` and
        :meth:`_behind` once the topic's log times show it)."""
        for seg in range(len(self.drops) - 1, floor - 1, -1):
            if self.lowest[seg] is not None and self.lowest[seg] <= t <= self.newest[seg] + LOG_TIME_WINDOW_NS:
                return seg
        latest, newest = len(self.drops) - 1, self.newest[-1]
        if latest > 0 and newest is not None and t < newest - LOG_TIME_WINDOW_NS:
            return self._open(newest - t)
        return latest

    def _review(self, topic: str, track: _Track, t: int) -> None:
        """A topic whose first segment was a guess, placed before a step, that logs more than the window past every
        topic of that segment whose segment is no guess was logged after the step: all its messages move past it."""
        seg = track.seg
        if seg == len(self.drops) - 1:
            return
        others = [span[1] for other, span in self.spans[seg].items() if not self.tracks[other].tentative]
        if others and t > max(others) + LOG_TIME_WINDOW_NS:
            self._relabel(topic, track, seg + 1)

    def _relabel(self, topic: str, track: _Track, seg: int) -> None:
        """Move every message of ``topic`` read so far (all in one segment: its first guess) to ``seg``."""
        old = track.seg
        self.spans[seg][topic] = self.spans[old].pop(topic)
        track.seg, track.marks = seg, [(0, seg)]
        for k in (old, seg):
            self.lowest[k] = min((span[0] for span in self.spans[k].values()), default=None)
            self.newest[k] = max((span[1] for span in self.spans[k].values()), default=None)

    def _note(self, topic: str, seg: int, item: tuple) -> None:
        file, index, position, _, t = item
        key = (t, self.numbers[file], position)
        span = self.spans[seg].get(topic)
        if span is None:
            self.spans[seg][topic] = [t, t, (key, file, index)]
        else:
            span[0], span[1] = min(span[0], t), max(span[1], t)
            if key < span[2][0]:
                span[2] = (key, file, index)
        if self.lowest[seg] is None or t < self.lowest[seg]:
            self.lowest[seg] = t
        if self.newest[seg] is None or t > self.newest[seg]:
            self.newest[seg] = t

    def finish(self) -> _StepPlan:
        """The plan: segments left without a message (every topic of one moved away) are dropped."""
        used = [seg for seg, spans in enumerate(self.spans) if spans]
        number = {seg: n for n, seg in enumerate(used)}
        steps = []
        for n in range(1, len(used)):
            before = max(span[1] for span in self.spans[used[n - 1]].values())
            key, file, index = min(span[2] for span in self.spans[used[n]].values())
            steps.append((file, index, before * 1e-9, key[0] * 1e-9))
        marks = {topic: tuple((n, number[seg]) for n, seg in track.marks) for topic, track in self.tracks.items()}
        return _StepPlan(marks, tuple(steps))


class BagReader:
    """Opens a rosbag2 bag folder (or a bare ``.mcap``/``.db3`` file) for streaming reads in log-time order.

    ``topics``: name -> :class:`TopicInfo`; ``messages(topics)`` yields :class:`BagMessage` one at a time.
    A split bag (``<bag>_0.mcap``, ``<bag>_1.mcap`` ...) is read file after file, with or without metadata.yaml;
    the latched messages a file after the first repeats (:data:`REPEATED_LATCHED`) are neither read nor counted there.
    With ``allow_truncated`` a recording without MCAP footer (a single file, or the last file of a split bag) is
    read up to its break, the first record cut short or unreadable or the first chunk failing its CRC check
    (``salvaged`` is True and ``salvage_note`` names the file, the messages kept and the byte where it stopped and
    why); otherwise it is refused with a :class:`BagError`. ``clock_steps`` lists, once read, where the recorder's
    clock stepped back (:data:`LOG_TIME_WINDOW_NS`), one entry per step: ``(file, index among those read from that
    file of the first message logged after the step once sorted, newest log time before it and its own in s)``.
    With ``sha256``, ``recorded_sha256()`` is the bag's ``bag_sha256`` taken from the chunks the reader reads anyway.
    """

    def __init__(self, path: str | Path, *, allow_truncated: bool = False, sha256: bool = False):
        self.path = Path(path)
        self.salvaged = False
        self.salvage_note = ""
        self.clock_steps: list[tuple[Path, int, float, float]] = []
        self._reader = None  # rosbags Reader of a folder with metadata.yaml / a single file
        self._readers: list = []  # rosbags Readers of the files of a folder read file by file
        self._parts: list[_Part] = []
        self._message_compression = False
        self._closed = False
        self._order: dict = {}  # frozenset of topics -> (largest lag ns, clock step): messages' order scan
        self._step_plans: dict = {}  # frozenset of topics -> _StepPlan, for those with a clock step
        if not self.path.exists():
            raise BagError(f"{self.path}: {NO_SUCH_BAG}")
        self._digest = RecordedDigest(recorded_files(self.path)) if sha256 else None  # fed by _chunk_messages
        try:
            self._open(allow_truncated)
        except BaseException:
            self.close()
            raise

    def _open(self, allow_truncated: bool) -> None:
        _check_rosbags_version()
        if self.path.is_file() and self.path.suffix not in STORAGE_SUFFIXES:  # else rosbags' "Unrecognized storage"
            if self.path.name == "metadata.yaml":  # a shell's completion went one step too far
                raise BagError(f"{self.path}: the bag's metadata, not the bag: give its folder, {self.path.parent}")
            if self.path.suffix == ".zstd" and Path(self.path.stem).suffix in STORAGE_SUFFIXES:
                raise BagError(
                    f"{self.path}: a file-compressed storage file, read only through its bag's folder (its "
                    f"metadata.yaml says how it is compressed): give {self.path.parent}"
                )
            raise BagError(
                f"{self.path}: not a bag's storage file (.mcap, .db3): give the bag's folder, or its .mcap or .db3 file"
            )
        has_metadata = self.path.is_dir() and (self.path / "metadata.yaml").is_file()
        if not has_metadata and recording_elsewhere(self.path):  # not truncated: its recorder has not finished it
            raise BagError(
                f"{self.path}: {folder_lock.holder(self.path)} is still recording this bag; wait for it to end "
                "(the recorder finishes the bag when it stops: Ctrl-C, --duration, the episode's end)"
            )
        if self.path.is_file() and _looks_truncated(self.path) and recording_elsewhere(self.path.parent):
            # one file of a bag being recorded (its footer not yet written), given alone: not truncated either
            raise BagError(
                f"{self.path}: {folder_lock.holder(self.path.parent)} is still recording this file (its bag "
                f"{self.path.parent}); wait for it to end (the recorder finishes the bag when it stops: Ctrl-C, "
                "--duration, the episode's end)"
            )
        mode = None
        if self.path.is_file():
            files = [self.path]
        elif has_metadata:
            files, mode = _metadata_files(self.path)
            self._check_listed_files(files)
        else:
            files = _storage_files(self.path)
            if not files:
                raise BagError(
                    f"{self.path}: not a rosbag2 bag: no metadata.yaml and no .mcap or .db3 file in it"
                    + _bags_inside(self.path)
                )
        if mode == "file":  # rosbags unpacks the files whole into the temp folder to read them
            _check_unpacked_size(files, str((_bagfile_information(self.path) or {}).get("storage_identifier")))
        truncated = [f for f in files if f.suffix == ".mcap" and _looks_truncated(f)]
        if truncated:
            self._open_parts(files, truncated[0], allow_truncated, mode)
        elif self.path.is_file() or has_metadata:
            self._open_whole(files)
        else:  # no metadata.yaml (a recorder killed before writing it): the storage files themselves
            self._open_parts(files, None, False, None)

    def _check_listed_files(self, listed: list[Path]) -> None:
        """The storage files metadata.yaml lists against those in the folder: a BagError naming the folder, the listed
        files missing (as metadata.yaml writes them: a path elsewhere is read by its name in the folder) and the
        storage files there (a file renamed, or not copied: rosbags' words named neither the folder nor what was
        there), or one that is there but no regular file (a FIFO, a link to /dev/zero: not "missing"); a warning
        naming a storage file it does not list, which is not read."""
        if not listed:  # no list to read: rosbags' reader says what is wrong with metadata.yaml
            return
        written = [str(name) for name in _bagfile_information(self.path)["relative_file_paths"]]
        odd = [(name, f) for name, f in zip(written, listed, strict=True) if f.exists() and not f.is_file()]
        if odd:
            name, file = odd[0]
            raise BagError(
                f"{self.path}: its metadata.yaml lists {_as_written(name, file)}, which is not a regular file but "
                f"{_file_kind(file)}: a storage file must be a file (or a link to one)"
            )
        stored = folder_storage_files(self.path)
        missing = [_as_written(name, f) for name, f in zip(written, listed, strict=True) if not f.is_file()]
        if missing:
            there = f"storage files there: {', '.join(f.name for f in stored)}" if stored else "no storage file there"
            raise BagError(
                f"{self.path}: its metadata.yaml lists {', '.join(missing)}, missing from the folder ({there}): "
                "a storage file renamed or not copied; give it back the name metadata.yaml lists, or copy it in"
            )
        warn_unlisted_files(self.path, listed, stacklevel=4)

    def _open_whole(self, files: list[Path]) -> None:
        """A complete bag through rosbags' reader (metadata.yaml: topics, counts, QoS; compression)."""
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except Exception as exc:  # rosbags' parser meets corrupt bytes with many kinds of errors
            self._reader = None
            where = self.path
            for file in [f for f in files if f.suffix in STORAGE_SUFFIXES] if len(files) > 1 else ():  # which one
                try:
                    with Reader(file):
                        pass
                except Exception:
                    where = file
                    break
            raise BagError(f"{where}: cannot open the bag: {type(exc).__name__}: {exc}") from None
        if self.path.is_dir():
            self._check_metadata_values()
        storage = self._reader.storage
        storages = getattr(storage, "storages", [storage])  # a folder: one per file, in metadata's order
        paths = files if len(files) == len(storages) else [Path(s.path) for s in storages]
        # metadata.yaml's counts leave out the repeated latched messages (BagWriter writes them past rosbags' count)
        self._parts = [
            _Part(p, s, repeats=_repeated_latched(p) if n else None)
            for n, (p, s) in enumerate(zip(paths, storages, strict=True))
        ]
        self._message_compression = self._reader.compression_mode == "message"
        self._register_types(self._reader.connections)
        self.topics = {}
        for conn in self._reader.connections:
            self._add_topic(
                conn.topic, conn.msgtype, conn.msgcount, tuple(getattr(conn.ext, "offered_qos_profiles", ()) or ())
            )
        self.start_ns = int(self._reader.start_time) if self._reader.message_count else 0
        self.end_ns = int(self._reader.end_time) if self._reader.message_count else 0
        self.message_count = int(self._reader.message_count)

    def _check_metadata_values(self) -> None:
        """The topic names, types and counts rosbags' reader took from metadata.yaml as they are written: a BagError
        naming the file and the key where one is of another type (a hand edit, a hostile file), which failed later
        as a TypeError or ValueError naming neither."""
        where = self.path / "metadata.yaml"

        def refuse(key: str, what: str, value):
            raise BagError(f"{where}: {key} must be {what}, got {shown(value)}")

        def count(value) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and value >= 0

        for n, conn in enumerate(self._reader.connections):
            entry = f"topics_with_message_count[{n}]"
            for key, value in (("name", conn.topic), ("type", conn.msgtype)):
                if not isinstance(value, str) or not value:
                    refuse(f"{entry}.topic_metadata.{key}", "a string", value)
            if not count(conn.msgcount):
                refuse(f"{entry}.message_count", "a whole number >= 0", conn.msgcount)
        if not count(self._reader.message_count):
            refuse("message_count", "a whole number >= 0", self._reader.message_count)

    def _add_topic(self, topic: str, msgtype: str, count: int, qos: tuple) -> None:
        info = self.topics.get(topic)
        types = info.msgtypes if info else {}
        types[msgtype] = types.get(msgtype, 0) + count
        ranked = tuple(sorted(types.items(), key=lambda item: -item[1]))  # stable: equal counts in order met
        self.topics[topic] = TopicInfo(
            topic,
            ranked[0][0],
            sum(types.values()),
            qos or (info.qos if info else ()),
            ranked if len(ranked) > 1 else (),
        )

    def _open_parts(self, files: list[Path], cut: Path | None, allow_truncated: bool, mode: str | None) -> None:
        """The storage files one by one (no metadata.yaml, or one of them truncated), the truncated one salvaged."""
        if cut is not None:
            split = (
                f" (file {files.index(cut) + 1} of {len(files)} of the split bag {self.path})" if len(files) > 1 else ""
            )
            if cut != files[-1]:
                raise BagError(
                    f"{cut}: truncated MCAP file (no footer){split}, and not the last one: a split bag breaks off "
                    f"only in its last file, so this one was damaged later; pass the complete files before it and "
                    f"the ones after it as separate bags"
                )
            if not allow_truncated:
                raise BagError(
                    f"{cut}: truncated MCAP file (no footer: the recorder was killed or the disk filled up){split}; "
                    f"its messages up to the break can be used with --allow-truncated (allow_truncated=True), "
                    f"or rewrite it with `liquid-control record --recover {self.path} -o NEW_BAG`"
                )
        self._message_compression = mode == "message"
        self.topics = {}
        self.message_count, starts, ends = 0, [], []
        for n, file in enumerate(files):
            # a file after the first may start with latched messages repeated from the files before: not counted
            repeats = _repeated_latched(file) if n else {}
            if file == cut:
                self._open_truncated(file, repeats)
                self._parts.append(_Part(file, salvage=True, repeats=repeats))
                continue
            try:
                reader = Reader(file)
                reader.open()
            except Exception as exc:
                raise BagError(f"{file}: cannot open it: {type(exc).__name__}: {exc}") from None
            self._readers.append(reader)
            self._parts.append(_Part(file, reader.storage, repeats=repeats))
            self._register_types(reader.connections)
            left = dict(repeats)
            for conn in reader.connections:
                repeated = min(conn.msgcount, left.pop(conn.topic, 0))
                self._add_topic(
                    conn.topic,
                    conn.msgtype,
                    conn.msgcount - repeated,
                    tuple(getattr(conn.ext, "offered_qos_profiles", ()) or ()),
                )
                self.message_count -= repeated
            self.message_count += int(reader.message_count)
            if reader.message_count:
                starts.append(int(reader.start_time))
                ends.append(int(reader.end_time))
        if self.salvaged:
            self.message_count += self._salvage_count
            if self._salvage_count:
                starts.append(self._salvage_start)
                ends.append(self._salvage_end)
        self.start_ns, self.end_ns = (min(starts), max(ends)) if starts else (0, 0)

    # -------------------------------------------------------------------------------------------- truncated
    def _open_truncated(self, mcap: Path, repeats: dict) -> None:
        """Index what a footer-less MCAP file holds (schemas, channels, message count) up to its break; ``repeats``:
        the latched messages it starts with, repeated from the files before (not counted)."""
        self.salvaged = True
        self._salvage_file = mcap
        channels, counts, first, last, note = _scan_truncated(mcap)
        repeats = dict(repeats)
        for cid, c in channels.items():
            counts[cid] = counts.get(cid, 0) - min(counts.get(cid, 0), repeats.pop(c["topic"], 0))
            self._add_topic(c["topic"], c["msgtype"], counts[cid], c["qos"])
        self._salvage_count = sum(counts.values())
        self._salvage_start, self._salvage_end = first, last
        self.salvage_note = f"{mcap}: truncated; {self._salvage_count} messages read up to the break ({note})"

    # -------------------------------------------------------------------------------------------- info
    @property
    def duration_s(self) -> float:
        """Seconds from the first to the last message (0 for an empty bag)."""
        return max(0, self.end_ns - self.start_ns) * 1e-9

    def _register_types(self, connections) -> None:
        """Types the store does not know (custom messages) are registered from the definitions in the bag."""
        store = typestore()
        for conn in connections:
            if conn.msgtype not in store.fielddefs and conn.msgdef.data:
                idl = getattr(conn.msgdef.format, "name", "") == "IDL"
                _register_definition(conn.msgdef.data, conn.msgtype, idl)

    def require(self, topic: str, msgtypes: Iterable[str] | None = None) -> TopicInfo:
        """The info of ``topic``, or a BagError naming the bag, the topic and what the bag has; with ``msgtypes``,
        a topic recorded with none of them is refused too (one recorded with several types passes when one is)."""
        info = self.topics.get(topic)
        have = ", ".join(f"{t} ({i.msgtype}, {i.count})" for t, i in sorted(self.topics.items())) or "nothing"
        if info is None:
            raise BagError(f"{self.path}: no topic {topic} in the bag; it has {have}")
        if msgtypes is not None and not set(info.msgtypes).intersection(msgtypes):
            raise BagError(
                f"{self.path}: topic {topic} is {' and '.join(info.msgtypes)}; expected {' or '.join(msgtypes)}"
            )
        return info

    def recorded_sha256(self) -> str:
        """The bag's ``bag_sha256``: with ``sha256=True``, from the chunks read so far and the rest of its files read
        now (a bag converted for training is read once for its messages, and its digest from those bytes where they
        come in file order; read topic by topic, across a clock step, the digest reads earlier bytes again)."""
        if self._digest is None:
            return bag_sha256(self.path)
        return self._digest.hexdigest()

    # -------------------------------------------------------------------------------------------- messages
    def messages(self, topics: Iterable[str] | None = None) -> Iterator[BagMessage]:
        """The messages of ``topics`` (default: all), read from disk as they are needed, sorted by log time, ties
        in the order written; a step back of the recorder's clock is kept where it happened: what was logged before
        it comes first, sorted, then what was logged after it, sorted (module notes at :data:`LOG_TIME_WINDOW_NS`).
        """
        wanted = set(self.topics) if topics is None else set(topics)
        if self._closed:
            raise BagError(f"{self.path}: bag is closed")
        self.clock_steps = []
        key = frozenset(wanted)
        if key not in self._order:
            self._order[key] = self._scan_order(wanted)
        lag, clock_step = self._order[key]
        if clock_step:
            if key not in self._step_plans:
                self._step_plans[key] = self._plan_steps(wanted)
            yield from self._read_across_steps(wanted, self._step_plans[key])
            return
        if lag > LOG_TIME_WINDOW_NS:  # written out of log-time order, no clock step
            if lag <= SORT_WINDOW_MAX_NS:  # e.g. one topic logged at its stamps, behind the others: one pass
                sorted_ = self._window_sorted(self._written(wanted), window=lag)
            else:  # e.g. one topic written after another: each topic in order, merged
                sorted_ = heapq.merge(*(self._sorted_topic(t) for t in sorted(wanted)), key=lambda item: item[0])
            for _key, message in sorted_:
                yield message
            return
        for _key, message in self._window_sorted(self._written(wanted)):
            yield message

    def _scan_order(self, wanted: set) -> tuple[int, bool]:
        """One pass over the log times in the order written (payloads not decompressed): how far (ns) a message
        lies behind the newest before it at most, and whether the recorder's clock stepped back. A step moves every
        topic: a message more than the window behind its own topic's last, or one more than the window behind the
        newest and behind its own topic's last when the next message of another topic is behind that topic's last
        too (a topic logged at its stamps behind the others, whose own stamps jitter back a little, leaves the
        other topics in order: no step; a file written topic by topic keeps every topic in order)."""
        newest, newest_by_topic, lag, candidate = None, {}, 0, None  # candidate: (newest, topic) of a possible step
        for _file, _index, _position, msg in self._written(wanted, payloads=False):
            t = msg.log_time_ns
            last = newest_by_topic.get(msg.topic)
            if candidate is not None and msg.topic != candidate[1] and last is not None:
                if t < last:  # another topic behind its own last too: the clock stepped back
                    return candidate[0] - t, True
                candidate = None
            if newest is not None and t < newest:
                if last is not None and t < last - LOG_TIME_WINDOW_NS:
                    return newest - t, True
                if t < newest - LOG_TIME_WINDOW_NS and last is not None and t < last and candidate is None:
                    candidate = (newest, msg.topic)
                lag = max(lag, newest - t)
            newest = t if newest is None else max(newest, t)
            newest_by_topic[msg.topic] = t if last is None else max(last, t)
        return lag, False

    def _plan_steps(self, wanted: set) -> _StepPlan:
        """One pass over the log times in the order written (payloads not decompressed) deciding the segment of every
        message (:class:`_StepPlanner`); holds per topic and segment a few numbers, and at most
        :data:`STEP_LOOKAHEAD_MESSAGES` log times read ahead."""
        planner = _StepPlanner({part.path: n for n, part in enumerate(self._parts)})
        source = ((f, i, p, m.topic, m.log_time_ns) for f, i, p, m in self._written(wanted, payloads=False))
        ahead: deque = deque()
        while True:
            item = ahead.popleft() if ahead else next(source, None)
            if item is None:
                return planner.finish()
            planner.add(item, source, ahead)

    def _read_across_steps(self, wanted: set, plan: _StepPlan) -> Iterator[BagMessage]:
        """The messages of ``wanted`` segment after segment, each sorted by log time, ties in the order written:
        each topic read on its own (holding its messages of the last window) and merged; ``clock_steps`` gets a
        step's entry as its first message goes out."""
        numbers = {part.path: n for n, part in enumerate(self._parts)}
        topics = [self._topic_by_segment(t, plan.marks.get(t, ((0, 0),)), numbers) for t in sorted(wanted)]
        segment = 0
        for (seg, *_), message in heapq.merge(*topics, key=lambda item: item[0]):
            if seg != segment:
                self.clock_steps.extend(plan.steps[segment:seg])
                segment = seg
            yield message

    def _topic_by_segment(self, topic: str, marks: tuple, numbers: dict) -> Iterator[tuple]:
        """``((segment, log time, file number, position), message)`` of ``topic`` sorted: its segments come in the
        order written (``marks``), and within one its log time goes back at most the window (:class:`_StepPlanner`
        opens a step or crosses one where it goes back further)."""
        heap: list = []
        newest, mark, seg = None, 0, marks[0][1]
        for n, (file, _index, position, msg) in enumerate(self._written({topic})):
            if mark + 1 < len(marks) and marks[mark + 1][0] == n:
                mark += 1
                seg, newest = marks[mark][1], None
            t = msg.log_time_ns
            if newest is None or t > newest:
                newest = t
            heapq.heappush(heap, ((seg, t, numbers[file], position), msg))
            while heap[0][0][0] < seg or heap[0][0][1] <= newest - LOG_TIME_WINDOW_NS:
                yield heapq.heappop(heap)
        while heap:
            yield heapq.heappop(heap)

    def _sorted_topic(self, topic: str) -> Iterator[tuple]:
        """``topic``'s messages sorted by log time (a topic is in order within the window: ``_scan_order``), as
        ``((log time, file number, position in the file), message)``: ties between topics go in the order written."""
        yield from self._window_sorted(self._written({topic}))

    def _window_sorted(self, written: Iterable, window: int = LOG_TIME_WINDOW_NS) -> Iterator[tuple]:
        """``(file, index, position, message)`` in the order written -> ``((log time, file number, position),
        message)`` sorted by log time, no message lying more than ``window`` behind the newest before it
        (``_scan_order``)."""
        numbers = {part.path: n for n, part in enumerate(self._parts)}
        heap: list = []
        newest = None
        for file, _index, position, msg in written:
            t = msg.log_time_ns
            if newest is None or t > newest:
                newest = t
            heapq.heappush(heap, ((t, numbers[file], position), msg))
            while heap[0][0][0] <= newest - window:
                yield heapq.heappop(heap)
        while heap:
            yield heapq.heappop(heap)

    def _written(self, wanted: set, payloads: bool = True) -> Iterator[tuple[Path, int, tuple, BagMessage]]:
        """(file, index among the ``wanted`` messages read from it, position in the file, message) of ``wanted``
        topics, file after file, in the order written; positions order the messages of one file whatever topics
        are read (the ties of :meth:`messages`' merge). ``payloads=False``: message-compressed data is left
        compressed (log times only)."""
        for part in list(self._parts):
            if self._closed:  # a generator of messages() used after close(): its files are closed
                raise BagError(f"{self.path}: bag is closed")
            skip = dict(part.repeats or {})  # latched messages repeated from the files before: read there
            if part.salvage:
                index = 0
                position = -1
                for batch in _iter_truncated_batches(part.path):
                    for topic, log_time, msgtype, data in batch:
                        position += 1
                        if skip.get(topic):
                            skip[topic] -= 1
                        elif topic in wanted:
                            yield part.path, index, (position,), BagMessage(topic, log_time, msgtype, data)
                            index += 1
                continue
            index, last = -1, None
            try:
                for conn, timestamp, data, position in _storage_messages(part.storage, wanted, self._digest, payloads):
                    if self._closed:
                        raise BagError(f"{self.path}: bag is closed")
                    if skip.get(conn.topic):
                        skip[conn.topic] -= 1
                        continue
                    index += 1
                    last = timestamp
                    if self._message_compression and payloads:
                        data = _message_decompressed(data, conn.topic)
                    yield part.path, index, position, BagMessage(conn.topic, int(timestamp), conn.msgtype, data)
            except BagError:
                raise
            except (AttributeError, ImportError) as exc:  # not the bytes: rosbags' storage readers changed
                if _rosbags_version() == ROSBAGS_TESTED:
                    raise  # the tested rosbags: a bug here, not a bag or a version to name
                raise BagError(
                    f"{part.path}: cannot read it with rosbags {_rosbags_version()}: {type(exc).__name__}: {exc} "
                    f"(messages are read from rosbags' storage readers directly, as in rosbags=={ROSBAGS_TESTED}, "
                    "the version requirements.txt pins: install it)"
                ) from None
            except Exception as exc:  # as at open: any parser error on corrupt bytes
                where = f" after log time {last * 1e-9:.3f} s (message {index})" if last is not None else ""
                raise BagError(f"{part.path}: corrupt bag{where}: {type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        """Close the underlying reader; closing twice is harmless."""
        self._closed, self._parts = True, []
        if self._digest is not None:
            self._digest.close()
        for reader in [self._reader, *self._readers]:
            if reader is not None and reader.is_open:
                reader.close()
        self._reader, self._readers = None, []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _zstd():
    try:
        from compression import zstd  # Python 3.14
    except ImportError:
        from backports import zstd
    return zstd


def _storage_messages(
    storage, wanted: set, digest: RecordedDigest | None = None, payloads: bool = True
) -> Iterator[tuple]:
    """(connection, log time, data, position in the file) of one rosbags storage file's messages on ``wanted``
    topics, in the order they were written: an MCAP file chunk after chunk (file order), each chunk's records in
    order; sqlite3 by the messages table's id. Channels are taken from the file by topic name, whatever
    metadata.yaml says of their QoS or type hash (rosbags' own reader matches those, and yields nothing from a bag
    whose metadata.yaml was written by another tool or edited). ``digest`` is fed each MCAP chunk read.
    ``payloads=False`` (log times only, the order scans of :meth:`BagReader.messages`): data is empty, and an MCAP
    chunk with message indexes is not decompressed, its log times read from its indexes (checked against its
    records when they are read)."""
    from rosbags.rosbag2.storage_mcap import McapReader
    from rosbags.rosbag2.storage_sqlite3 import Sqlite3Reader

    conns = {c.id: c for c in storage.connections if c.topic in wanted}
    if not conns:
        return
    if isinstance(storage, Sqlite3Reader):
        marks = ",".join("?" for _ in conns)
        data = "data" if payloads else "x''"
        query = f"SELECT topic_id, timestamp, {data}, id FROM messages WHERE topic_id IN ({marks}) ORDER BY id"
        for cid, timestamp, data, row in storage.dbconn.execute(query, tuple(conns)):
            yield conns[cid], timestamp, data, (row,)
        return
    if not isinstance(storage, McapReader):
        raise BagError(f"{storage.path}: storage {type(storage).__name__} is not readable here")
    if not storage.chunks:  # messages outside chunks (e.g. the fastwrite preset): the file in order
        # through a handle of its own: messages' merge runs several scans of one file interleaved, and rosbags'
        # scan reads its reader's one handle record by record between messages
        scanner = copy.copy(storage)
        with open(storage.path, "rb") as scanner.bio:
            for position, (conn, timestamp, data) in enumerate(scanner.messages_scan(list(storage.connections))):
                if conn.id in conns:
                    yield conns[conn.id], timestamp, data, (position,)
        return
    for chunk in sorted(storage.chunks, key=lambda c: c.chunk_start_offset):
        # which channels a chunk holds is known only from its message indexes, which MCAP makes optional (rosbag2's
        # storage option noMessageIndex, the mcap library's index_types): a chunk without them is read whole
        if not chunk.message_index_offsets:
            yield from _chunk_messages(storage, chunk, conns, digest)
        elif any(chunk.channel_count.get(cid, 0) for cid in conns):
            index = _chunk_index(storage, chunk, conns)
            if payloads:
                yield from _chunk_messages(storage, chunk, conns, digest, index)
            else:
                for at, cid, log_time in index:
                    yield conns[cid], log_time, b"", (chunk.chunk_start_offset, at)


_INDEX_HEAD = struct.Struct("<BQHI")  # opcode, record length, channel id, byte length of its (log time, offset)s


def _chunk_index(storage, chunk, conns: dict) -> list[tuple[int, int, int]]:
    """(offset among the chunk's records, channel id, log time) of one MCAP chunk's messages on the channels
    ``conns``, in record order, from the chunk's message indexes: no byte of the chunk read or decompressed."""
    bio, entries = storage.bio, []
    size = os.fstat(bio.fileno()).st_size
    for cid in conns:
        offset = chunk.message_index_offsets.get(cid)
        if offset is None:  # no message of the channel in the chunk
            continue
        bio.seek(offset)
        head = bio.read(_INDEX_HEAD.size)
        opcode, length, channel, nbytes = _INDEX_HEAD.unpack(head) if len(head) == _INDEX_HEAD.size else (0,) * 4
        if opcode != 0x07 or channel != cid or length < 6 + nbytes or nbytes % 16 or offset + 15 + nbytes > size:
            raise ValueError(
                f"the message index of channel {cid} of the chunk at byte {chunk.chunk_start_offset} (at byte "
                f"{offset}) is not one"
            )
        entries.extend((at, cid, log_time) for log_time, at in _LOG_TIME_OFFSET.iter_unpack(bio.read(nbytes)))
    entries.sort()
    return entries


_LOG_TIME_OFFSET = struct.Struct("<QQ")


def _chunk_messages(
    storage, chunk, conns: dict, digest: RecordedDigest | None = None, index: list | None = None
) -> Iterator[tuple]:
    """The messages of one MCAP chunk on the channels ``conns``, in record order (CRC checked when it is set);
    ``digest`` is fed the chunk's bytes as read. ``index`` (:func:`_chunk_index`): what the order scans took from
    the chunk's message indexes, which must list these very messages (ValueError otherwise)."""
    from rosbags.rosbag2.storage_mcap import decompress

    bio = storage.bio
    bio.seek(chunk.chunk_start_offset + 9 + 24)
    (crc,) = struct.unpack("<I", bio.read(4))
    start = chunk.chunk_start_offset + 9 + 40 + len(chunk.compression)
    if start + chunk.compressed_size > os.fstat(bio.fileno()).st_size:  # read() would allocate what it claims
        raise BagError(f"{storage.path}: the chunk at byte {chunk.chunk_start_offset} is cut short")
    bio.seek(start)
    compressed = bio.read(chunk.compressed_size)
    if digest is not None:
        digest.feed(storage.path, start, compressed)
    where = f"the chunk at byte {chunk.chunk_start_offset}"
    # rosbags' checks of the size and CRC, on bytes decompressed no further than the size the chunk gives
    raw = decompress(
        _decompressed(compressed, chunk.compression, chunk.uncompressed_size, where), "", chunk.uncompressed_size, crc
    )
    pos, end, unpack = 0, len(raw), _MESSAGE_HEAD.unpack_from
    listed = None if index is None else iter(index)
    while pos + 9 <= end:
        opcode = raw[pos]
        (length,) = _U64.unpack_from(raw, pos + 1)
        body = pos + 9
        if opcode == 0x05:
            channel, _, log_time, _ = unpack(raw, body)
            conn = conns.get(channel)
            if conn is not None:
                if listed is not None and next(listed, None) != (pos, channel, log_time):
                    raise ValueError(
                        f"{where}: its message indexes do not list its message at {pos} as it is (an index damaged, "
                        "or missing for a channel: `mcap recover` writes the file again with whole indexes)"
                    )
                yield conn, log_time, raw[body + 22 : body + length], (chunk.chunk_start_offset, pos)
        elif opcode not in _CHUNK_OPCODES:  # zeros (damage, a decompression bomb) were read as empty records
            raise ValueError(f"{where} {_not_chunk_record(opcode, pos)}")
        pos = body + length
    if listed is not None and next(listed, None) is not None:
        raise ValueError(f"{where}: its message indexes list messages it does not hold")


# The most bytes one MCAP chunk may decompress to: a chunk holds whole messages (rosbag2 closes one at ~768 kB, or
# at the one message that is larger: a 4K image is 25 MB). zstd turns 120 kB into 4 GB of zeros: a chunk claiming
# more is refused before it is decompressed, and one holding more than it claims once the claim is passed.
MAX_CHUNK_BYTES = 1 << 30


def _decompressed(data: bytes, compression: str, size: int, where: str) -> bytes:
    """``data`` (one MCAP chunk's records, ``compression`` "", "zstd" or "lz4") decompressed, never more than one
    byte past the ``size`` the chunk gives; ValueError naming ``where`` for a ``size`` over MAX_CHUNK_BYTES, data
    that decompresses to more than ``size``, or an unknown compression (fewer bytes: rosbags' size check)."""
    if size > MAX_CHUNK_BYTES:
        raise ValueError(
            f"{where} gives {size} bytes uncompressed, more than the {MAX_CHUNK_BYTES} a chunk is read with "
            "(a corrupt size, or a decompression bomb)"
        )
    if compression == "":
        return data
    if compression == "lz4":
        from lz4.frame import LZ4FrameDecompressor

        raw = LZ4FrameDecompressor().decompress(data, max_length=size + 1)
    elif compression == "zstd":
        raw, _ = _zstd_bounded(data, size + 1)  # a frame cut short: fewer bytes (rosbags' size check says so)
    else:
        raise ValueError(f"{where}: unsupported chunk compression {compression!r} (zstd, lz4 or none)")
    if len(raw) > size:
        raise ValueError(
            f"{where} decompresses to more than the {size} bytes it gives (a corrupt chunk, or a decompression bomb)"
        )
    return raw


def _zstd_bounded(data: bytes, limit: int) -> tuple[bytes, bool]:
    """Decompress zstd frames one after the other (as zstd.decompress reads them) to at most ``limit`` bytes;
    (bytes, whole): whole False where the limit stopped it or the last frame is cut short."""
    pieces, left, whole = [], limit, True
    while data and left > 0:
        frame = _zstd().ZstdDecompressor()
        pieces.append(frame.decompress(data, max_length=left))
        left -= len(pieces[-1])
        if not frame.eof:  # the limit reached, or the frame cut short
            whole = False
            break
        data = frame.unused_data
    return b"".join(pieces), whole and not data


# The most bytes one message of a bag compressed message by message (rosbag2's --compression-mode message) may
# decompress to: such a message records no size of its own, so a zstd bomb is stopped at this bound.
MAX_MESSAGE_BYTES = MAX_CHUNK_BYTES


def _message_decompressed(data: bytes, topic: str) -> bytes:
    """One message of per-message compression, decompressed to at most MAX_MESSAGE_BYTES (ValueError past it, or
    for zstd data cut short)."""
    raw, whole = _zstd_bounded(data, MAX_MESSAGE_BYTES + 1)
    if len(raw) > MAX_MESSAGE_BYTES:
        raise ValueError(
            f"a message on {topic} decompresses to more than {MAX_MESSAGE_BYTES} bytes (a corrupt message, or a "
            "decompression bomb)"
        )
    if not whole:
        raise ValueError(f"a message on {topic}: its zstd data is cut short")
    return raw


_MESSAGE_HEAD = struct.Struct("<HIQQ")  # channel id, sequence, log time, publish time
_U64 = struct.Struct("<Q")


# ------------------------------------------------------------------------------------------------ salvage
def _chunk_records(chunk, breakup_chunk) -> list:
    """The records of one MCAP chunk of a salvage (``mcap``'s ``breakup_chunk``, its CRC checked), unpacked as a
    complete bag's are (``_decompressed``: no further than MAX_CHUNK_BYTES, nor than the size it gives) and checked to
    hold only what a chunk holds before its records are read: ``breakup_chunk`` alone unpacked any size a chunk
    claims and read 2 GiB of zstd zeros (a 64 kB file) as 9-byte records of opcode 0 for minutes."""
    where = "the chunk there"
    raw = _decompressed(chunk.data, chunk.compression, chunk.uncompressed_size, where)
    problem = _chunk_record_problem(raw)
    if problem:
        raise ValueError(f"{where} {problem}")
    return breakup_chunk(dataclasses.replace(chunk, compression="", data=raw), validate_crc=True)


def _chunk_record_problem(raw) -> str | None:
    """Why the records of a decompressed MCAP chunk are not a chunk's (schemas, channels and messages), or None."""
    pos, end = 0, len(raw)
    while pos + 9 <= end:
        if raw[pos] not in _CHUNK_OPCODES:
            return _not_chunk_record(raw[pos], pos)
        pos += 9 + _U64.unpack_from(raw, pos + 1)[0]
    return None


_CHUNK_OPCODES = (0x03, 0x04, 0x05)  # schema, channel, message: what an MCAP chunk holds


def _not_chunk_record(opcode: int, pos: int) -> str:
    return (
        f"holds a record of opcode 0x{opcode:02x} at byte {pos} of its records, where a chunk holds schemas, channels "
        "and messages only (zeros of a decompression bomb, or damage)"
    )


def _iter_truncated_records(path: Path):
    """(record, None) pairs of an MCAP file read front to back with the ``mcap`` library, then (None, where and
    why it stopped) at the break; stops there.

    Every chunk's CRC is checked before any of its records is handed out: a chunk whose bytes changed after
    it was written (a flipped bit, the unwritten tail a power cut leaves) is where the readable part ends,
    exactly like a record cut short, so corrupt bytes are never returned as messages. The note names the
    byte offset of the bad record, the file's size and, for a chunk, its log times and what was not read.
    """
    from mcap.records import Chunk
    from mcap.stream_reader import CRCValidationError, StreamReader, breakup_chunk

    with path.open("rb") as handle:
        size = path.stat().st_size
        records = StreamReader(handle, skip_magic=False, emit_chunks=True).records
        while True:
            offset = handle.tell()  # where the next top-level record starts
            try:
                record = next(records)
                inner = _chunk_records(record, breakup_chunk) if isinstance(record, Chunk) else None
            except StopIteration:
                return
            except CRCValidationError as exc:
                chunk, end = exc.record, handle.tell()
                note = (
                    f"at byte {offset} of {size}: the chunk there (log time {chunk.message_start_time * 1e-9:.3f}-"
                    f"{chunk.message_end_time * 1e-9:.3f} s) fails its CRC check (expected {exc.expected:08x}, "
                    f"computed {exc.actual:08x}): its bytes are corrupt; it and the {size - end} bytes after it "
                    f"were not read"
                )
                yield None, note
                return
            except Exception as exc:  # the break (EndOfFile, a cut record, garbage)
                what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                rest = f"; the {size - offset} bytes from there were not read" if size > offset else ""
                yield None, f"at byte {offset} of {size}: {what}{rest}"
                return
            for item in [record] if inner is None else inner:  # a chunk: the records it holds
                yield item, None


def _channel_entry(record, schemas) -> dict:
    from rosbags.rosbag2.storage_mcap import get_qos

    metadata = b""
    for key, value in (record.metadata or {}).items():  # re-encode as the MCAP map rosbags parses
        for text in (key, value):
            raw = text.encode()
            metadata += len(raw).to_bytes(4, "little") + raw
    schema = schemas.get(record.schema_id)
    return {"topic": record.topic, "msgtype": schema.name if schema else "", "qos": tuple(get_qos(metadata))}


# A salvage holds at most this many messages (and bytes of them) in memory at once: an MCAP file without chunks
# (`ros2 bag record --storage-preset-profile fastwrite`) has no chunk boundary to hand its messages over at.
SALVAGE_BATCH_MESSAGES = 1000
SALVAGE_BATCH_BYTES = 4 * 1024 * 1024


def _iter_truncated_batches(path: Path):
    """Lists of (topic, log_time_ns, msgtype, data) in file order: one per MCAP chunk (or run of loose messages),
    each at most :data:`SALVAGE_BATCH_MESSAGES` messages and about :data:`SALVAGE_BATCH_BYTES`."""
    from mcap.records import Channel, Message, Schema

    schemas, channels, batch, size = {}, {}, [], 0
    for record, error in _iter_truncated_records(path):
        if error is not None:
            break
        if isinstance(record, Schema):
            schemas[record.id] = record
            _register_schema(record)
        elif isinstance(record, Channel):
            channels[record.id] = _channel_entry(record, schemas)
        elif isinstance(record, Message):
            channel = channels.get(record.channel_id)
            if channel is not None:
                batch.append((channel["topic"], int(record.log_time), channel["msgtype"], bytes(record.data)))
                size += len(record.data)
                if len(batch) >= SALVAGE_BATCH_MESSAGES or size >= SALVAGE_BATCH_BYTES:  # e.g. an unchunked file
                    yield batch
                    batch, size = [], 0
        else:  # a message index / chunk boundary: hand over what the chunk held
            if batch:
                yield batch
                batch, size = [], 0
    if batch:
        yield batch


def _register_schema(record) -> None:
    if record.name not in typestore().fielddefs and record.data:
        _register_definition(record.data.decode(), record.name, record.encoding in ("ros2idl", "omgidl"))


IDL_SEPARATOR = "=" * 80 + "\n"  # rosbag2's ros2idl schema: one "IDL: pkg/msg/Type" section per type it needs


def _register_definition(text: str, msgtype: str, idl: bool) -> None:
    """Register the custom type ``msgtype`` (and the types it uses) from a bag's definition of it: ros2msg text,
    or ros2idl (rosbag2 writes it for types defined in .idl files: sections of IDL, each after the separator and
    an ``IDL: pkg/msg/Type`` line; read as ros2msg, it registered nothing and the topic could not be decoded). The
    ``#include`` lines are left out: the types they name have sections of their own. An unparsable definition
    leaves only that topic unreadable."""
    try:
        if not idl:
            types = get_types_from_msg(text, msgtype)
        else:
            types = {}
            sections = text.split(IDL_SEPARATOR) if text.startswith(IDL_SEPARATOR + "IDL: ") else ["", "\n" + text]
            for section in sections[1:]:
                idl_text = section.partition("\n")[2]  # without its #include lines, which rosbags does not parse
                idl_text = "\n".join(x for x in idl_text.splitlines() if not x.lstrip().startswith("#"))
                types.update(get_types_from_idl(idl_text))
        typestore().register(types)
    except Exception:
        pass


def _scan_truncated(path: Path):
    """Channels, per-channel counts, first/last log time and where the break is, of a footer-less MCAP."""
    from mcap.records import Channel, Message, Schema

    schemas, channels, counts = {}, {}, {}
    first, last, note = None, None, "end of file"
    for record, error in _iter_truncated_records(path):
        if error is not None:
            note = error
            break
        if isinstance(record, Schema):
            schemas[record.id] = record
            _register_schema(record)
        elif isinstance(record, Channel):
            channels[record.id] = _channel_entry(record, schemas)
        elif isinstance(record, Message):
            counts[record.channel_id] = counts.get(record.channel_id, 0) + 1
            t = int(record.log_time)
            first = t if first is None else min(first, t)
            last = t if last is None else max(last, t)
    return channels, counts, first or 0, last or 0, note


class Recovered(NamedTuple):
    """What :func:`recover` wrote: the new bag, the messages kept and the salvage note (where the source
    broke off and why, what was not read; empty for a source that was complete)."""

    path: Path
    kept: int
    note: str


def recover(src: str | Path, dst: str | Path) -> Recovered:
    """Rewrite the readable part of a truncated bag ``src`` into a new, complete bag ``dst``.

    Returns (dst, number of messages kept, the reader's salvage note). Like ``ros2 bag reindex`` for a
    recording whose recorder died. What is kept ends at the break (a chunk failing its CRC check included:
    corrupt bytes are never copied); the new bag's metadata.yaml records the source and that break (custom
    data ``recovered_from`` and ``salvage_note``).
    """
    reader = BagReader(src, allow_truncated=True)
    try:
        messages = reader.messages()
        first = next(messages, None)
        if first is None:  # an empty "recovered" bag would look like a recording of nothing
            # not "the recording stopped before its first": a write failing (a full disk) as the first chunk of
            # messages was written leaves the same file, after hundreds of messages received
            raise BagError(
                f"{src}: no complete message to recover (it breaks off before its first: the recording ended, or a "
                f"write to it failed, before a chunk of messages was whole on the disk{_full_disk_note(src)}); "
                "nothing written"
            )
        mixed = [f"{t} ({' and '.join(i.msgtypes)})" for t, i in sorted(reader.topics.items()) if i.types]
        if mixed:  # a bag we write holds one type per topic; the second type's bytes would be filed as the first's
            raise BagError(
                f"{src}: topics recorded with more than one type: {', '.join(mixed)}; nothing written (train, eval and "
                "replay read the bag as it is with --allow-truncated, each message as its own type)"
            )
        kept = 0
        provenance = {"recovered_from": str(src), "salvage_note": reader.salvage_note}
        with BagWriter(dst, custom_data=provenance) as writer:
            for topic, info in reader.topics.items():
                writer.add_topic(topic, info.msgtype, info.qos)
            for msg in itertools.chain([first], messages):
                writer.write(msg.topic, msg.log_time_ns, msg.data)
                kept += 1
    finally:
        reader.close()
    return Recovered(Path(dst), kept, reader.salvage_note)


def _full_disk_note(path: str | Path) -> str:
    """``'; its disk has 0 bytes free now: ...'`` where the disk holding ``path`` has less room than a chunk of
    messages (1 MiB), the likely cut of a recording that left no whole message; else ''."""
    try:
        stat = os.statvfs(path)
    except (OSError, AttributeError):  # gone meanwhile; no statvfs (Windows)
        return ""
    free = stat.f_bavail * stat.f_frsize
    if free >= MIN_BAG_SIZE:
        return ""
    return f"; its disk has {free} bytes free now: a write failing there for want of room cuts a recording so"


def message_class(msgtype: str):
    """The rclpy message class of ``pkg/msg/Type`` (imported on demand; needs the ROS 2 Python packages)."""
    package, _, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError) as exc:
        raise BagError(f"message type {msgtype} is not importable here: {exc}") from None
