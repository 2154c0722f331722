"""An evaluation end to end: plan -> episodes (any backend, logged as they finish) -> tables, report, plots."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time

from liquid_control import folder_lock
from liquid_control.atomic_file import atomic_write
from liquid_control.evaluation.backends import run_jobs
from liquid_control.evaluation.plan import DEFAULT_LANES, EvaluationPlan, EvaluationSetupError
from liquid_control.evaluation.report import write_report
from liquid_control.evaluation.results import ResultLog, finish_record, write_tables
from liquid_control.shown import counted


def option_arguments(args, command: str) -> dict:
    """The ``evaluate`` keyword arguments that `liquid-control eval`'s options set (``args``: its parsed options;
    ``command``: the command line, for the report), the same for an evaluation of given policies and for
    ``--experiment``'s of the policies it trained."""
    return {
        "backend": args.backend,
        "workers": args.workers,
        "resume": args.resume,
        "ray_address": args.ray_address,
        "progress": not args.no_progress,
        "command": command,
        "example": not args.no_example,
        "lanes": args.lanes,
        "saliency": not args.no_saliency,
    }


def evaluate(
    plan: EvaluationPlan,
    out_dir: str,
    *,
    backend: str = "process",
    workers: int | None = None,
    resume: bool = False,
    ray_address: str | None = None,
    progress: bool = True,
    command: str = "",
    title: str = "Out-of-distribution evaluation",
    notes: list[str] | None = None,
    example: bool = True,
    paired: list[tuple[str, str]] | None = None,
    sections: list[str] | None = None,
    lanes: int = DEFAULT_LANES,
    comparisons: list[tuple[str, str]] | None = None,
    panels: dict[str, list[str]] | None = None,
    saliency: bool = True,
    started: float | None = None,
    commit: str | None = None,
    provenance_extra: dict | None = None,
    sitting=None,
) -> dict:
    """Run the episodes the results log lacks, then write results.csv/json, report.md and the plots.

    ``started``, ``commit``: when the whole run began (time.time()) and its ``provenance.code_commit()`` then
    (an experiment passes its own, so the report's wall time includes training); ``provenance_extra``: more
    lines for the report's provenance; ``sitting``: the caller's ``provenance.Sitting`` (an experiment's
    begins before its training), else this call keeps its own; the report's wall time is the sitting's
    ``elapsed()`` (the monotonic clock).
    """
    from liquid_control.evaluation import provenance

    started = time.time() if started is None else started
    commit = provenance.code_commit() if commit is None else commit
    os.makedirs(out_dir, exist_ok=True)
    with contextlib.ExitStack() as stack:
        # one evaluation at a time in a folder (a second `eval --out` beside a running one, with or without
        # --resume, ran every episode again into the same log and wrote the report twice): before the log is read
        stack.enter_context(folder_lock.hold(out_dir, "evaluate into another --out", EvaluationSetupError))
        log = ResultLog(out_dir, resume=resume)
        if sitting is None:
            sitting = stack.enter_context(provenance.Sitting(out_dir, command, started, commit, resume))
        jobs = plan.jobs
        todo = log.pending(jobs)
        outside = log.count_outside(jobs)
        if outside:  # a resume with another request: say what the report will not show, the log keeps it
            print(
                f"liquid-control eval: {outside} episode(s) in {log.path} are not part of this request (another "
                "--policy, --shift, --episodes or episode seed, or a changed checkpoint): kept in the log, left out "
                "of the report, and plan.json now describes this request",
                file=sys.stderr,
                flush=True,
            )
        prov_path = os.path.join(out_dir, "provenance.json")
        previous = provenance.read_record(prov_path) if resume else None  # before the episodes: a damaged one named
        if resume and len(jobs) > len(todo) and not os.path.isfile(prov_path) and not sitting.cut_short:
            # episodes in the log, no record of the part that ran them: an older version's (provenance.json since
            # 2026-11-30); the sitting record keeps the count for a part that continues this one if it is cut short
            sitting.unrecorded_episodes = sitting.unrecorded_episodes or len(jobs) - len(todo)
        _write_plan(plan, out_dir, command)
        print(  # also without the bar (a CI log): what this run will do, and on resume what it already has
            f"liquid-control eval: {counted(len(jobs), 'episode')} planned, {len(jobs) - len(todo)} already in "
            f"{log.path}, running {len(todo)} on the {backend} backend",
            file=sys.stderr,  # beside the bar: stdout holds only the result (`report=$(liquid-control eval ...)`)
            flush=True,
        )
        if todo:
            sitting.working()
        done = [0]
        # each policy's kernel paths in the log already: a resume on another path is said at its first batch, not
        # only at the end of a run of hours
        earlier = provenance.policy_kernels(log.records_for(jobs)) if len(jobs) > len(todo) else {}
        warned: set[str] = set()

        def keep(batch, records) -> None:
            finished = [finish_record(record, job, batch) for job, record in zip(batch, records)]
            log.append(*finished)
            for name, counts in provenance.policy_kernels(finished).items():
                before = [path for path in earlier.get(name, {}) if path != provenance.NOT_RECORDED]
                new = [path for path in counts if path not in before and path != provenance.NOT_RECORDED]
                if before and new and name not in warned:
                    warned.add(name)
                    print(
                        f"liquid-control eval: warning: this part runs {name}'s episodes on {new[0]}, the "
                        f"{counted(sum(earlier[name][path] for path in before), 'episode')} of it in the log ran on "
                        f"{' and '.join(before)}: the report will mix both (their last bits differ); stop and "
                        "rerun into a new --out to compare on one path",
                        file=sys.stderr,
                        flush=True,
                    )
            before, done[0] = done[0], done[0] + len(batch)
            if not progress and done[0] * 10 // len(todo) > before * 10 // len(todo):
                # without the bar (stderr no terminal, --no-progress), a line at each tenth: a run of hours
                # in a log is not silent until its end
                print(f"liquid-control eval: {done[0]}/{len(todo)} episodes done", file=sys.stderr, flush=True)

        run_jobs(
            todo,
            keep,
            backend=backend,
            workers=workers,
            ray_address=ray_address,
            progress=progress,
            lanes=lanes,
        )
        records = log.records_for(jobs)
        csv_path, json_path = write_tables(records, out_dir)
        by_policy = provenance.policy_kernels(records)
        kernels = provenance.policy_kernels_text(by_policy)
        for name, text in provenance.mixed_paths(by_policy).items():  # a --resume on the other path, a Ray node of
            # another CPU: the warning, where a report of hours would otherwise just show the numbers
            print(
                f"liquid-control eval: warning: {name}'s episodes in the report ran on {text}: their last bits "
                "differ, so some closed loops may end otherwise than on one path (docs/ood.md); rerun into a new "
                "--out on one path to compare policies on it",
                file=sys.stderr,
                flush=True,
            )

        def finished_provenance() -> dict:
            """Collected once the figures are made (they take minutes): the report's times cover the whole run."""
            prov_now = provenance.collect(command, started, sitting.elapsed(), commit, **(provenance_extra or {}))
            # this part on top (its command made this report), the earlier parts below it: who ran the episodes
            prov = provenance.accumulate(previous, prov_now, sitting.cut_short)
            if kernels:
                prov["kernels"] = kernels
            if previous is None and sitting.unrecorded_episodes:  # this part's commit and times are not theirs
                prov["earlier_part_unrecorded"] = (
                    f"{min(sitting.unrecorded_episodes, len(jobs))} of the {len(jobs)} episodes were run by an "
                    "earlier part that left no provenance.json (liquid_control before 2026-11-30): its code, "
                    "command and times are unknown"
                )
            elif previous and previous.get("earlier_part_unrecorded"):  # still true of the folder's episodes
                prov["earlier_part_unrecorded"] = previous["earlier_part_unrecorded"]
            if not todo and "earlier_parts" in prov:
                # nothing ran: the report is only rewritten, for this command (perhaps another request: fewer
                # policies or pairs). Before, the earlier part's record was kept whole, its command stating another
                # request than the report showed, with only "Report rewritten: by <commit> at <time>" added
                prov["ran_no_episodes"] = True
            with atomic_write(prov_path, "w", encoding="utf-8") as fh:
                json.dump(prov, fh, indent=1)
            sitting.finished()  # counted in provenance.json now
            return prov

        report = write_report(
            plan,
            records,
            out_dir,
            command,
            title=title,
            notes=notes,
            example=example,
            paired=paired,
            sections=sections,
            comparisons=comparisons,
            panels=panels,
            saliency=saliency,
            provenance=finished_provenance,
        )
        return {"records": records, "report": report, "csv": csv_path, "json": json_path, "ran": len(todo)}


def _write_plan(plan: EvaluationPlan, out_dir: str, command: str) -> None:
    """plan.json: what was asked (for a reader of the folder, and to see what `--resume` continues): the shifts,
    the episode seeds, and each policy's checkpoint files with their SHA-256 (results.csv keeps 12 hex digits)."""
    data = {
        "command": command,
        "shifts": plan.shifts,
        "episode_seeds": plan.episode_seeds,
        "policies": [
            {
                "name": p.name,
                "world": p.world,
                "checkpoints": list(p.checkpoints),
                "checkpoint_sha256": list(p.checkpoint_sha),  # what a reader checks the files against
                "training_seeds": list(p.training_seeds),
                "parameter_count": p.parameter_count,
                "core_parameter_count": p.core_parameter_count,
                "env_kwargs": p.env_kwargs,
            }
            for p in plan.policies
        ],
    }
    with atomic_write(os.path.join(out_dir, "plan.json"), "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1)
