"""The results log: one JSON line per finished episode, a batch's lines appended as one write as the batch ends.

An evaluation killed at any moment keeps every episode of the batches that finished (a half-written last line
from the kill is dropped on reading); `--resume` reads the log and runs only the episodes it lacks. Each record
names its batch (``batch``: the episode seeds run in lockstep with it), because a trained policy's episode depends
on the batch it ran in: a batch only partly in the log (a kill -9 or a full disk cut its write) counts as not run,
and the resume runs it whole again, so that it runs the batches one uninterrupted run would. The log is append-only:
the latest record of an episode is the one that counts.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import sys
from contextlib import contextmanager

from liquid_control import atomic_file
from liquid_control.atomic_file import atomic_write
from liquid_control.evaluation.episode import RECORD_FIELDS
from liquid_control.evaluation.plan import EpisodeJob, EvaluationSetupError, episode_key
from liquid_control.json_text import load_json
from liquid_control.processes import stop_signals_held
from liquid_control.shown import counted

LOG_NAME = "episodes.jsonl"
OFFLINE_NAME = "offline.json"  # what an offline evaluation (--bag) writes beside its report.md instead


def record_key(record: dict) -> tuple:
    """``episode_key`` of a logged record."""
    return episode_key(record["policy"], record["training_seed"], record["shift"], record["episode_seed"])


class ResultLog:
    """Append-only episode log inside an output folder."""

    def __init__(self, out_dir: str, resume: bool):
        self.out_dir = out_dir
        self.path = os.path.join(out_dir, LOG_NAME)
        os.makedirs(out_dir, exist_ok=True)
        if os.path.exists(self.path) and not resume:
            raise EvaluationSetupError(
                f"{self.path} already holds episodes of an earlier evaluation: pass --resume to continue it, "
                "or choose another --out"
            )
        self.records = []
        if os.path.exists(self.path):
            self.records, tail = _scan_log(self.path)
            _repair_tail(self.path, tail)  # so the next append starts on a line of its own
        self._done = {record_key(r): r for r in self.records}
        cut = _of_cut_batches(self._done)
        if cut:
            print(
                f"liquid-control eval: {counted(len(cut), 'episode')} in {self.path} of a batch only partly there (its "
                "write was cut short) run again, with the whole batch",
                file=sys.stderr,
            )
            for key in cut:
                del self._done[key]

    def pending(self, jobs: list[EpisodeJob]) -> list[EpisodeJob]:
        """Jobs with no finished record for the same episode, world and checkpoint file contents."""
        return [job for job in jobs if not _same_episode(self._done.get(job.key), job)]

    def append(self, *records: dict) -> None:
        """Write the records of one batch as one unit, a line each in one write, fsynced before counting them as
        done, Ctrl-C and SIGTERM held off until then: one stopped between them left part of a batch."""
        data = "".join(json.dumps(record, sort_keys=True) + "\n" for record in records).encode("utf-8")
        with stop_signals_held():
            with naming(self.path):  # a full disk names the log
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
                try:
                    rest = memoryview(data)
                    while rest:  # a write cut short (disk full) returns less; the next one raises
                        rest = rest[os.write(fd, rest) :]
                    os.fsync(fd)
                finally:
                    os.close(fd)
            for record in records:
                self.records.append(record)
                self._done[record_key(record)] = record

    def records_for(self, jobs: list[EpisodeJob]) -> list[dict]:
        """The latest record of each planned episode, in plan order (stale or foreign records left out)."""
        return [self._done[job.key] for job in jobs if _same_episode(self._done.get(job.key), job)]

    def count_outside(self, jobs: list[EpisodeJob]) -> int:
        """Logged episodes (latest record of each) that are none of ``jobs``' episodes: another request's."""
        return len(self._done) - len(self.records_for(jobs))


def _of_cut_batches(done: dict) -> list[tuple]:
    """The keys of ``done`` (latest record of each episode) whose record's batch is not wholly there: some episode of
    its ``batch`` lacks a latest record of the same batch, world and checkpoint. A record without ``batch``
    (liquid_control before 2026-12-06) counts as whole."""

    def batch_of(record: dict | None) -> tuple | None:
        if record is None:
            return None
        return (record.get("batch"), record.get("world"), record.get("checkpoint_sha"), record.get("world_settings"))

    return [
        key
        for key, record in done.items()
        if record.get("batch") is not None
        and any(batch_of(done.get((*key[:3], seed))) != batch_of(record) for seed in record["batch"])
    ]


def _same_episode(record: dict | None, job: EpisodeJob) -> bool:
    """Whether a logged record is ``job``'s episode: the same key, checkpoint contents, world and world settings (the
    expert has no checkpoint: an expert episode of another world, from a resume with another --world, is not this
    one, nor one run under another policy's update sensors and inputs, which the plan gives the expert). A record
    without settings (liquid_control before 2026-12-07) is matched by its checkpoint; an expert's is run again."""
    if record is None or record.get("world") != job.world:
        return False
    if record.get("checkpoint_sha") != _short_sha(job.checkpoint_sha):
        return False
    settings = record.get("world_settings")
    return settings == world_settings_stamp(job) if settings is not None else bool(job.checkpoint_sha)


def world_settings_stamp(job: EpisodeJob) -> str:
    """A short hash of the world's settings an episode ran under (``env_kwargs``: update sensors, inputs, reordering
    lag, render size), which change the episode as much as the checkpoint does."""
    text = json.dumps(job.env_kwargs, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _short_sha(sha: str | None) -> str:
    return (sha or "")[:12]


def finish_record(record: dict, job: EpisodeJob, batch: list[EpisodeJob] | None = None) -> dict:
    """Stamp a worker's record with the checkpoint and world settings the log matches on when resuming, and the
    episode seeds of the ``batch`` it ran in (what makes a batch whole in the log)."""
    record = dict(record)
    record["checkpoint_sha"] = _short_sha(job.checkpoint_sha)
    record["world_settings"] = world_settings_stamp(job)
    if batch is not None:
        record["batch"] = [j.episode_seed for j in batch]
    return record


# A finished record's fields (``EpisodeTally.record`` then ``finish_record``) and their JSON types.
_FIELD_TYPES = {
    **dict.fromkeys(("policy", "shift", "world", "checkpoint", "outcome", "checkpoint_sha"), str),
    **dict.fromkeys(("training_seed", "episode_seed", "steps", "clipped_actions"), int),
    **dict.fromkeys(("success", "collision"), bool),
    **dict.fromkeys(("return", "sim_time_s", "mean_dt_s", "smoothness", "wall_time_s"), float),
}
_RECORD_TYPES = {name: _FIELD_TYPES[name] for name in (*RECORD_FIELDS, "checkpoint_sha")}
_OUTCOMES = ("success", "collision", "timeout")
_JSON_TYPE = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number",
              bool: "true/false", type(None): "null"}  # fmt: skip


def _json_type(value) -> str:
    return _JSON_TYPE.get(type(value), type(value).__name__)


def record_problem(record) -> str | None:
    """Why ``record`` is not a finished episode's record (a missing field, a value of the wrong type), or None."""
    if not isinstance(record, dict):
        return f"{_json_type(record)}, not an episode record (a JSON object)"
    missing = [name for name in _RECORD_TYPES if name not in record]
    if missing:
        more = f" and {len(missing) - 4} more" if len(missing) > 4 else ""
        return f"not an episode record: no {', '.join(repr(m) for m in missing[:4])}{more}"
    for name, kind in _RECORD_TYPES.items():
        value = record[name]
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            wanted = "a finite number"
        elif kind is int:
            ok, wanted = isinstance(value, int) and not isinstance(value, bool), "an integer"
        else:
            ok, wanted = isinstance(value, kind), _JSON_TYPE[kind]
        if not ok:
            return f"{name!r} is {json.dumps(value)} ({_json_type(value)}), not {wanted}"
    if record["outcome"] not in _OUTCOMES:
        return f"'outcome' is {json.dumps(record['outcome'])}, not one of {', '.join(_OUTCOMES)}"
    batch = record.get("batch", [record["episode_seed"]])  # none in a log of liquid_control before 2026-12-06
    if not (isinstance(batch, list) and record["episode_seed"] in batch and all(type(s) is int for s in batch)):
        return f"'batch' is {json.dumps(batch)}, not a list of episode seeds with the record's own"
    return None


def read_log(path: str) -> list[dict]:
    """Every record of a results log; a half-written last line is dropped, any other bad line is an error."""
    return _scan_log(path)[0]


def _scan_log(path: str) -> tuple[list[dict], tuple[str, int] | None]:
    """The records of a results log, and what its end needs before the next append: ("cut", offset) for a
    half-written last line (a kill mid-write) to drop from ``offset``, ("newline", size) for a complete last record
    missing only its newline, None for a log that ends with one.

    Any other line that is not a finished episode's record (corrupt bytes, another file's JSON, a field missing or
    of the wrong type) is an EvaluationSetupError naming the file and the line: it would stop the resume with a
    traceback or the report with no report.md, after the episodes ran."""
    with open(path, "rb") as fh:
        data = fh.read()
    lines = data.split(b"\n")  # the last item: b"" when the log ends with a newline, else an unterminated line
    records: list[dict] = []
    offset = 0
    for number, raw in enumerate(lines, start=1):
        start, offset = offset, offset + len(raw) + 1
        unterminated = number == len(lines)
        if not raw.strip():
            if unterminated and raw:
                return records, ("cut", start)
            continue
        try:
            record = load_json(raw.decode("utf-8"))
        except ValueError as exc:  # UnicodeDecodeError, JSONDecodeError and JsonTooDeepError are ValueErrors
            if unterminated:  # the last line, cut by a kill mid-write: that episode reruns
                print(f"liquid-control eval: dropping a half-written last line of {path}", file=sys.stderr)
                return records, ("cut", start)
            reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else "not a JSON record"
            raise EvaluationSetupError(
                f"{path}: line {number}: {reason} (a corrupt results log); move the file away or fix the line"
            ) from None
        problem = record_problem(record)
        if problem:
            raise EvaluationSetupError(
                f"{path}: line {number}: {problem} (not a line of a results log); move the file away or fix the line"
            )
        records.append(record)
        if unterminated:  # complete: only the newline is missing
            return records, ("newline", len(data))
    return records, None


def _repair_tail(path: str, tail: tuple[str, int] | None) -> None:
    """Drop a half-written last line, or end a complete last record with its newline (``_scan_log``'s ``tail``)."""
    if tail is None:
        return
    what, offset = tail
    with open(path, "rb+") as fh:
        if what == "cut":
            fh.truncate(offset)
        else:
            fh.seek(offset)
            fh.write(b"\n")
        fh.flush()
        os.fsync(fh.fileno())


@contextmanager
def naming(path: str):
    """Let an OSError that names no file (a write into an open file: disk full, file too large) or only the
    temporary file beside ``path`` name ``path``: the error says which file of the report could not be written."""
    try:
        yield
    except OSError as exc:
        folder, name = os.path.split(os.path.abspath(path))
        found = exc.filename
        stem = os.path.splitext(name)[0]
        ours = found is None or (  # the temporary file of atomic_write or atomic_path beside it
            os.path.dirname(os.path.abspath(str(found))) == folder
            and os.path.basename(str(found)).startswith((f".{name}.", f".{stem}."))
        )
        if not ours or found == path:
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), path) from exc


@contextmanager
def atomic_path(path: str):
    """``atomic_file.atomic_path`` (a figure replaced whole or not at all) whose errors name ``path``."""
    with naming(path), atomic_file.atomic_path(path) as tmp:
        yield tmp


def write_tables(records: list[dict], out_dir: str) -> tuple[str, str]:
    """results.csv and results.json: every planned episode, one row each."""
    csv_path = os.path.join(out_dir, "results.csv")
    json_path = os.path.join(out_dir, "results.json")
    fields = list(RECORD_FIELDS) + ["checkpoint_sha"]
    with naming(csv_path), atomic_write(csv_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for record in records:
            writer.writerow(record)
    with naming(json_path), atomic_write(json_path, "w", encoding="utf-8") as fh:
        # without each record's batch (its seeds, for the log's resume): it would double a headline run's file
        json.dump([{k: v for k, v in r.items() if k != "batch"} for r in records], fh, indent=1, sort_keys=True)
    return csv_path, json_path
