"""Where a report came from: the command, the code's commit, the machine and the wall time it took."""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import threading
import time

from liquid_control.atomic_file import atomic_write
from liquid_control.evaluation.errors import EvaluationSetupError
from liquid_control.json_text import load_json
from liquid_control.paths import code_commit
from liquid_control.processes import available_cpus, cgroup_cpu_quota
from liquid_control.shown import counted

SITTING_NAME = "provenance.sitting.json"
HEARTBEAT_S = 60.0


def _utc(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its finished child processes (training runs and
    process-pool workers of an evaluation; a Ray cluster's workers are not children and are not counted).

    On a shared machine the wall clock measures the other jobs too; CPU seconds are what a budget scales by.
    """
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def collect(command: str, started: float, wall_s: float, commit_at_start: str | None = None, **extra) -> dict:
    """Provenance of a run that began at ``started`` (time.time()) and took ``wall_s`` seconds.

    ``commit_at_start``: ``code_commit()`` when the run began. A run of hours imports some code late (worker
    processes, lazily imported modules), so a checkout that moved meanwhile is stated, not hidden."""
    import mujoco
    import torch

    commit = code_commit()
    if commit_at_start is not None and commit_at_start != commit:
        commit = f"{commit_at_start} at the start, {commit} at the end (the checkout changed during the run)"
    cpus = f"{available_cpus()} CPU cores available"  # its cores, lowered to a container's CPU quota
    quota = cgroup_cpu_quota()
    if quota is not None:
        cpus += f" (a CPU quota of {quota:g})"
    return {
        "command": command,
        "working_directory": os.getcwd(),  # what the command's relative paths (--policy, --out) are relative to
        "commit": commit,
        "machine": f"{_cpu_model()}, {cpus}, {platform.system()} {platform.release()}",
        "software": f"Python {platform.python_version()}, torch {torch.__version__}, mujoco {mujoco.__version__}",
        "started_utc": _utc(started),
        "wall_time_s": round(float(wall_s), 1),
        "cpu_time_s": round(cpu_seconds(), 1),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        **extra,
    }


class Sitting:
    """This part of a run, on disk (``SITTING_NAME`` in its folder) from when it begins work until its report is
    written.

    A run of hours is often cut short before its report (a killed process, the end of a session); ``--resume``
    then keeps its training runs and episodes, and without this record the report would not count the time they
    took. From ``working()`` on (training or episodes to run, past every check) a thread rewrites the record every
    ``HEARTBEAT_S`` seconds, so a part cut short is counted up to its last heartbeat (at most a minute short). The
    next part (``resume``) takes over the cut-short parts found there; a run that starts afresh and works drops
    them with the results they belonged to. A part that never works (a refused run, or one that only rewrites its
    report) never writes the record, so it leaves it as it found it. Use as a context manager.
    """

    def __init__(self, out_dir: str, command: str, started: float, commit: str, resume: bool):
        self.path = os.path.join(out_dir, SITTING_NAME)
        self.cut_short: list[dict] = []
        # episodes in the log when a part resumed a folder with no provenance.json nor parts recorded here (an older
        # version's, see evaluate): kept in the record, so a part that continues a cut-short one still says so
        self.unrecorded_episodes: int | None = None
        if resume and os.path.isfile(self.path):
            try:
                with open(self.path, encoding="utf-8") as fh:
                    found = load_json(fh.read())
                parts = [dict(part) for part in found.get("cut_short", [])] + [dict(found["current"])]
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise EvaluationSetupError(f"{self.path}: not a sitting record ({exc}); move it away") from None
            # records written before 2026-12-03 were written from a part's start, and marked the parts that worked
            self.cut_short = [part for part in parts if part.pop("worked", True)]
            self.unrecorded_episodes = found.get("unrecorded_episodes")
        self.started = started
        # durations on the monotonic clock, from ``started`` (a wall time, for the record's label): the wall clock
        # stepped during a run of hours (NTP or chrony at a network's return, a clock set by hand) made its wall
        # time negative or an hour too long
        self._began = time.monotonic() - max(0.0, time.time() - started)
        self.current = {
            "command": command,
            "working_directory": os.getcwd(),
            "commit": commit,
            "started_utc": _utc(started),
            "cut_short": "before its report; wall time up to its last heartbeat",
        }
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = None

    def _write(self) -> None:
        with self._lock:
            if self._stop.is_set():
                return
            self.current["wall_time_s"] = round(self.elapsed(), 1)
            with atomic_write(self.path, "w", encoding="utf-8") as fh:
                record = {"cut_short": self.cut_short, "current": self.current}
                if self.unrecorded_episodes is not None:
                    record["unrecorded_episodes"] = self.unrecorded_episodes
                json.dump(record, fh, indent=1)

    def elapsed(self) -> float:
        """Seconds since the run began (``started``), on the monotonic clock: what a wall clock step leaves alone."""
        return time.monotonic() - self._began

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self._write()
            except OSError:  # e.g. a full disk: the run goes on, its record a minute staler
                pass

    def _halt(self) -> None:
        with self._lock:
            self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> Sitting:
        return self

    def working(self) -> None:
        """Every check passed and training or episodes are about to run: from now on this part counts."""
        if self._thread is None and not self._stop.is_set():
            self._write()
            self._thread = threading.Thread(target=self._beat, name="sitting-heartbeat", daemon=True)
            self._thread.start()

    def finished(self) -> None:
        """The report's provenance (with ``cut_short``) is written: the record is no longer needed."""
        self._halt()
        if os.path.exists(self.path):
            os.unlink(self.path)

    def __exit__(self, exc_type, exc, tb) -> None:
        """Unless ``finished()`` removed the record: a part that worked writes a last heartbeat, kept for the
        next part."""
        if self._thread is not None:
            try:
                self._write()
            except OSError:  # a full disk or a read-only folder must not hide the error that ended the run
                pass
        self._halt()


def _part_id(part: dict) -> tuple:
    """Which part: its command and start (not its commit: a finished part's names the end's commit too)."""
    return part.get("command"), part.get("started_utc")


def read_record(path: str) -> dict | None:
    """A folder's provenance.json (the record of the parts before a ``--resume``), None without one; an
    EvaluationSetupError naming the file where it is not such a record (damaged, or another tool's), raised when
    the resume starts: read only once its episodes had run, it ended the evaluation in a traceback, no report."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            record = load_json(fh.read())
    except (OSError, ValueError) as exc:  # UnicodeDecodeError, JSONDecodeError and JsonTooDeepError are ValueErrors
        problem = str(exc)
    else:
        problem = _record_problem(record)
    if problem:
        raise EvaluationSetupError(f"{path}: not a provenance record ({problem}); move it away")
    return record


def _record_problem(record) -> str | None:
    """What keeps ``record`` from being a provenance.json as ``collect`` and ``accumulate`` write it (the entries
    every version wrote, those ``markdown`` reads of the others where they are given), or None."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"

    def number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    if not (record.get("command") is None or isinstance(record["command"], str)):
        return "'command' is not a string"
    for key in ("commit", "machine", "software", "started_utc"):
        if not isinstance(record.get(key), str):
            return f"{key!r} is not a string"
    parts = record.get("earlier_parts", [])
    if not (isinstance(parts, list) and all(isinstance(part, dict) for part in parts)):
        return "'earlier_parts' is not a list of objects"
    for where, entry in [("", record), *((f"earlier_parts[{n}].", part) for n, part in enumerate(parts))]:
        for key in ("wall_time_s", "cpu_time_s", "total_wall_time_s"):
            value = entry.get(key)
            if (value is not None or (key == "wall_time_s" and not where)) and not number(value):
                return f"'{where}{key}' is not a number of seconds"
    return None


# what every part's record says of the run: who ran it, where, when, for how long
_RUN_KEYS = (
    "command",
    "working_directory",
    "commit",
    "machine",
    "software",
    "started_utc",
    "wall_time_s",
    "cpu_time_s",
)
# what an earlier part keeps of its record: who ran its episodes (and training), where, when, for how long; whether it
# only rewrote the report (``ran_no_episodes``; ``report_rewritten``: an older version's note of the rewrites since)
_PART_KEYS = (*_RUN_KEYS, "training_wall_time_s", "ran_no_episodes", "report_rewritten")


NOT_RECORDED = "not recorded"


def episode_kernels(records: list[dict]) -> dict[str, int]:
    """How many episodes of ``records`` ran on each kernel path of the cells (each record's ``kernels``, written where
    it ran: a pool or Ray worker's own CPU and settings; NOT_RECORDED for records from before 2026-12-06); the
    expert's, which run no cell, are left out. Compiled and torch, AVX-512 and AVX2 round differently in the last
    bits, and so end some closed loops otherwise."""
    counts: dict[str, int] = {}
    for record in records:
        if not record.get("checkpoint_sha"):  # the expert's: no cell
            continue
        path = record.get("kernels")
        path = path if isinstance(path, str) else NOT_RECORDED
        counts[path] = counts.get(path, 0) + 1
    return counts


def kernels_text(counts: dict[str, int]) -> str | None:
    """``episode_kernels``' counts as the report says them: the one path alone, or each with its count; None where
    none was recorded."""
    if not [path for path in counts if path != NOT_RECORDED]:
        return None
    if len(counts) == 1:
        return next(iter(counts))
    return " and ".join(f"{path} ({counted(n, 'episode')})" for path, n in counts.items())


def policy_kernels(records: list[dict]) -> dict[str, dict[str, int]]:
    """:func:`episode_kernels` of each policy's records (by name; the expert left out): two policies may run on two
    paths by design (an LSTM has no compiled kernel), which changes no comparison; one policy on two does."""
    by_policy: dict[str, list[dict]] = {}
    for record in records:
        by_policy.setdefault(str(record.get("policy")), []).append(record)
    return {name: counts for name, group in by_policy.items() if (counts := episode_kernels(group))}


def policy_kernels_text(by_policy: dict[str, dict[str, int]]) -> str | None:
    """The report's line: where every policy ran on the same (``kernels_text``), that alone; else each path with the
    policies that ran on it, ``... for cfc, ltc`` joined by '; ' (a headline's ten cores on two paths: two groups).
    None where nothing was recorded."""
    texts = {name: kernels_text(counts) for name, counts in by_policy.items()}
    if not any(texts.values()):
        return None
    groups: dict[str, list[str]] = {}
    for name, text in texts.items():
        groups.setdefault(text or NOT_RECORDED, []).append(name)
    if len(groups) == 1:
        return next(iter(groups))
    return "; ".join(f"{text} for {', '.join(names)}" for text, names in groups.items())


def mixed_paths(by_policy: dict[str, dict[str, int]]) -> dict[str, str]:
    """``{policy: its kernels_text}`` of the policies whose recorded episodes ran on more than one path (a
    ``--resume`` with ``LIQUID_CONTROL_NATIVE`` changed, Ray nodes of two CPUs): their outcomes mix two roundings."""
    return {
        name: kernels_text(counts) or ""
        for name, counts in by_policy.items()
        if len([path for path in counts if path != NOT_RECORDED]) > 1
    }


def accumulate(previous: dict | None, current: dict, cut_short: list[dict] = ()) -> dict:
    """``current`` with the earlier parts of a resumed run (``previous``: its provenance.json, then the parts
    cut short since, see ``Sitting``) listed and their wall times added: a report finished by ``--resume``
    states what every part took."""
    parts = list((previous or {}).get("earlier_parts", []))
    if previous:
        parts.append({k: previous[k] for k in _PART_KEYS if k in previous})
    listed = {_part_id(part) for part in parts}  # a part killed after its report was written is listed once
    parts += [dict(part) for part in cut_short if _part_id(part) not in listed]
    if not parts:
        return current
    total = current["wall_time_s"] + sum(float(p.get("wall_time_s", 0.0)) for p in parts)
    return {**current, "earlier_parts": parts, "total_wall_time_s": round(total, 1)}


_LISTED = (*_RUN_KEYS, "load_average_at_end", "kernels")


def _in_folder(part: dict) -> str:
    """' in `FOLDER`': the working directory a part's command ran in (its relative paths'), where recorded."""
    return f" in `{part['working_directory']}`" if part.get("working_directory") else ""


def _step_note(kernels: str) -> str:
    """Where compiled kernels ran: that their step kernels take a batch of at most so many lanes."""
    if "compiled" not in kernels:
        return ""
    from liquid_control.cells.kernels import STEP_KERNEL_MAX_BATCH

    return (
        f" (the compiled step kernels take up to {STEP_KERNEL_MAX_BATCH} lanes at once: the steps of a larger batch "
        "run the torch graph)"
    )


def markdown(prov: dict) -> list[str]:
    """The provenance as the lines of a report's header."""
    hours = prov["wall_time_s"] / 3600.0
    lines = [
        "## Provenance",
        "",
        f"- Command: `{prov['command'] or '(from Python)'}`{_in_folder(prov)}",
        f"- Commit: `{prov['commit']}`",
        f"- Machine: {prov['machine']}; {prov['software']}",
        *(
            [f"- The cells' kernels in its episodes: {prov['kernels']}{_step_note(prov['kernels'])}"]
            if prov.get("kernels")
            else []
        ),  # fmt: skip
        f"- Started {prov['started_utc']}; wall time **{prov['wall_time_s']:.0f} s ({hours:.2f} h)**"
        + (f"; load average at the end {prov['load_average_at_end']}" if prov.get("load_average_at_end") else ""),
    ]
    earlier = prov.get("earlier_parts", [])
    if prov.get("cpu_time_s") is not None:
        lines.append(
            f"- CPU time{' of this part' if earlier else ''} {prov['cpu_time_s']:.0f} s: this process and its finished "
            "worker processes (training runs, process-pool evaluation, figures; not Ray workers), user + system"
        )
    if prov.get("ran_no_episodes"):
        lines.append(
            "- This part ran no episodes: it wrote the report for its command from the episodes already in the "
            "folder, run by the earlier parts"
        )
    for part in earlier:
        cut = f" (cut short {part['cut_short']})" if part.get("cut_short") else ""
        cut += " (ran no episodes, rewrote the report)" if part.get("ran_no_episodes") is True else ""
        cpu = f", CPU time {float(part['cpu_time_s']):.0f} s" if part.get("cpu_time_s") is not None else ""
        if part.get("training_wall_time_s") is not None:
            cpu += f", training wall time {float(part['training_wall_time_s']):.0f} s"
        where = "; ".join(part[k] for k in ("machine", "software") if part.get(k) and part[k] != prov.get(k))
        rewritten = (
            f"; report rewritten {part['report_rewritten']}" if isinstance(part.get("report_rewritten"), str) else ""
        )
        lines.append(
            f"- Earlier part{cut} (continued by `--resume`): `{part.get('command', '')}`{_in_folder(part)}, "
            f"commit `{part.get('commit', '')}`{f', on {where}' if where else ''}, started "
            f"{part.get('started_utc', '?')}, wall time {float(part.get('wall_time_s', 0)):.0f} s{cpu}{rewritten}"
        )
    if "total_wall_time_s" in prov:
        total = prov["total_wall_time_s"]
        line = f"- Total wall time of all parts: **{total:.0f} s ({total / 3600:.2f} h)**"
        parts = [prov, *earlier]
        cpus = [float(part["cpu_time_s"]) for part in parts if part.get("cpu_time_s") is not None]
        if cpus:  # a part cut short recorded no CPU time (`Sitting`): the sum is then of the others
            line += f"; CPU time {sum(cpus):.0f} s" + (
                f" over the {len(cpus)} of {len(parts)} parts that recorded it" if len(cpus) < len(parts) else ""
            )
        lines.append(line)
    for key, value in prov.items():
        if key in _LISTED + ("earlier_parts", "total_wall_time_s", "ran_no_episodes"):
            continue
        if key.endswith("_s") and isinstance(value, (int, float)) and not isinstance(value, bool):
            # seconds: "Training wall time: 26.3 s", not "Training wall time s: 26.3"
            label = key[: -len("_s")].replace("_", " ").capitalize() + (" of this part" if earlier else "")
            lines.append(f"- {label}: {value} s")
        else:
            lines.append(f"- {key.replace('_', ' ').capitalize()}: {value}")
    return lines
