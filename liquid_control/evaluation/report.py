"""From episode records to the report: summary per policy x shift with 95% CIs, report.md and PNG plots."""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from liquid_control.evaluation.plan import EvaluationPlan
from liquid_control.evaluation.stats import bootstrap_mean_interval, mcnemar_exact_p, wilson_interval

SWEEP_KEYS = ("sensor_rate", "jitter", "camera_rate", "imu_rate")  # shifts plotted against their factor


@dataclass
class CellSummary:
    """All episodes of one policy under one shift (all training seeds pooled)."""

    policy: str
    shift: str
    n: int
    successes: int
    success_ci: tuple[float, float]
    return_mean: float
    return_ci: tuple[float, float] | None
    smoothness_mean: float
    smoothness_ci: tuple[float, float] | None
    collision_rate: float
    mean_steps: float
    mean_sim_time_s: float
    per_seed_success: dict[int, float]

    @property
    def success_rate(self) -> float:
        return self.successes / self.n


def summarize(records: list[dict], policies: list[str], shifts: list[str]) -> list[CellSummary]:
    groups: dict[tuple[str, str], list[dict]] = OrderedDict(((p, s), []) for p in policies for s in shifts)
    for record in records:
        key = (record["policy"], record["shift"])
        if key in groups:
            groups[key].append(record)
    cells = []
    for (policy, shift), rows in groups.items():
        if not rows:
            continue
        success = np.array([bool(r["success"]) for r in rows])
        returns = np.array([float(r["return"]) for r in rows])
        smooth = np.array([float(r["smoothness"]) for r in rows])
        per_seed: dict[int, list[bool]] = {}
        for r in rows:
            per_seed.setdefault(int(r["training_seed"]), []).append(bool(r["success"]))
        cells.append(
            CellSummary(
                policy=policy,
                shift=shift,
                n=len(rows),
                successes=int(success.sum()),
                success_ci=wilson_interval(int(success.sum()), len(rows)),
                return_mean=float(returns.mean()),
                return_ci=bootstrap_mean_interval(returns),
                smoothness_mean=float(smooth.mean()),
                smoothness_ci=bootstrap_mean_interval(smooth),
                collision_rate=float(np.mean([bool(r["collision"]) for r in rows])),
                mean_steps=float(np.mean([r["steps"] for r in rows])),
                mean_sim_time_s=float(np.mean([r["sim_time_s"] for r in rows])),
                per_seed_success={s: float(np.mean(v)) for s, v in sorted(per_seed.items())},
            )
        )
    return cells


@dataclass
class PairedRow:
    """Policy A against policy B under one shift, on the same (training seed, episode seed) pairs."""

    shift: str
    pairs: int
    success_a: float
    success_b: float
    only_a: int  # pairs where only A succeeded
    only_b: int
    p_value: float  # exact McNemar


def paired_comparison(records: list[dict], a: str, b: str, shifts: list[str]) -> list[PairedRow]:
    """Pairs episodes of `a` and `b` by (shift, training seed, episode seed); unpaired episodes are left out."""
    outcome = {
        (r["policy"], r["shift"], int(r["training_seed"]), int(r["episode_seed"])): bool(r["success"]) for r in records
    }
    rows = []
    for shift in shifts:
        pairs = [
            (outcome[(a, *k[1:])], outcome[(b, *k[1:])])
            for k in outcome
            if k[0] == a and k[1] == shift and (b, *k[1:]) in outcome
        ]
        if not pairs:
            continue
        only_a = sum(1 for x, y in pairs if x and not y)
        only_b = sum(1 for x, y in pairs if y and not x)
        rows.append(
            PairedRow(
                shift,
                len(pairs),
                float(np.mean([x for x, _ in pairs])),
                float(np.mean([y for _, y in pairs])),
                only_a,
                only_b,
                mcnemar_exact_p(only_a, only_b),
            )
        )
    return rows


def shift_group(shift: str) -> str:
    """Report group of a shift: in-distribution, visual, sensor, dynamics (or a mix)."""
    from liquid_control.evaluation.agents import shift_kinds

    kinds = shift_kinds(shift)
    return "in-distribution" if not kinds else "+".join(sorted(kinds))


def sweep_factor(shift: str, key: str) -> float | None:
    """The factor of a shift that changes only `key` (e.g. sensor_rate); 1.0 for the training distribution."""
    from liquid_control.evaluation.agents import shift_changes

    changes = shift_changes(shift)
    if not changes:
        return 1.0
    if set(changes) == {key}:
        return float(changes[key])
    return None


# ----------------------------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_success_by_shift(
    cells: list[CellSummary], policies: list[str], shifts: list[str], path: str, shifts_per_row: int = 6
) -> str:
    """Grouped bars (one per policy) with Wilson error bars, a row of panels per `shifts_per_row` shifts."""
    plt = _pyplot()
    by_key = {(c.policy, c.shift): c for c in cells}
    rows = [shifts[i : i + shifts_per_row] for i in range(0, len(shifts), shifts_per_row)]
    width = 0.8 / max(1, len(policies))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(
        len(rows), 1, figsize=(min(13.0, 3.0 + 1.6 * len(rows[0])), 2.9 * len(rows)), squeeze=False
    )
    for ax, row in zip(axes[:, 0], rows):
        x = np.arange(len(row))
        for i, policy in enumerate(policies):
            rates, lo, hi = [], [], []
            for shift in row:
                c = by_key.get((policy, shift))
                if c is None:
                    rates.append(np.nan), lo.append(0), hi.append(0)
                    continue
                rates.append(c.success_rate)
                lo.append(c.success_rate - c.success_ci[0])
                hi.append(c.success_ci[1] - c.success_rate)
            ax.bar(
                x + (i - (len(policies) - 1) / 2) * width,
                rates,
                width,
                yerr=[lo, hi],
                capsize=1.5,
                label=policy,
                color=colors[i % len(colors)],
                error_kw={"elinewidth": 0.7},
            )
        ax.set_xticks(x)
        ax.set_xticklabels(row, fontsize=8)
        ax.set_xlim(-0.5, len(rows[0]) - 0.5)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("success (95% CI)", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].set_title("Success per shift")
    axes[0, 0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_sweeps(cells: list[CellSummary], policies: list[str], shifts: list[str], path: str) -> str | None:
    """Success against the sensor-rate and jitter factors (trained at factor 1): the continuous-time claim."""
    sweeps = {}
    for key in SWEEP_KEYS:
        points = sorted((sweep_factor(s, key), s) for s in shifts if sweep_factor(s, key) is not None)
        if len({f for f, _ in points}) >= 2 and any(f != 1.0 for f, _ in points):
            sweeps[key] = points
    if not sweeps:
        return None
    plt = _pyplot()
    by_key = {(c.policy, c.shift): c for c in cells}
    fig, axes = plt.subplots(1, len(sweeps), figsize=(5.2 * len(sweeps), 3.8), squeeze=False)
    for ax, (key, points) in zip(axes[0], sweeps.items()):
        for policy in policies:
            xs, ys, lo, hi = [], [], [], []
            for factor, shift in points:
                c = by_key.get((policy, shift))
                if c is None:
                    continue
                xs.append(factor), ys.append(c.success_rate)
                lo.append(c.success_ci[0]), hi.append(c.success_ci[1])
            if not xs:
                continue
            # small horizontal offsets per policy so overlapping error bars stay readable
            offset = 2 ** (0.06 * (policies.index(policy) - (len(policies) - 1) / 2))
            xs_shown = [x * offset for x in xs]
            ax.errorbar(
                xs_shown,
                ys,
                yerr=[np.subtract(ys, lo), np.subtract(hi, ys)],
                marker="o",
                ms=4,
                capsize=2,
                elinewidth=0.7,
                lw=1.2,
                label=policy,
            )
        ax.set_xscale("log", base=2)
        factors = sorted({f for f, _ in points})
        ax.set_xticks(factors)
        ax.set_xticklabels([f"{f:g}x" for f in factors])
        ax.axvline(1.0, color="grey", lw=0.8, ls=":")
        ax.set_ylim(0, 1.05)
        ax.set_xlabel(f"{key} factor (trained at 1x)")
        ax.set_ylabel("success rate (95% Wilson CI)")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.suptitle("Success versus sensor timing")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pick_example(plan: EvaluationPlan):
    """The example episode: the first trained policy (else the expert) under the first visual shift."""
    jobs = plan.jobs
    from liquid_control.evaluation.agents import shift_kinds

    shifted = [s for s in plan.shifts if shift_kinds(s)]
    visual = [s for s in shifted if "visual" in shift_kinds(s)]
    shift = (visual or shifted or plan.shifts)[0]
    trained = [j for j in jobs if j.checkpoint is not None and j.shift == shift]
    candidates = trained or [j for j in jobs if j.shift == shift]
    return candidates[0]


def plot_example_episode(job, path: str, frames: int = 8) -> tuple[str, dict]:
    """Re-run one episode (deterministic: the same one as in the table) recording camera and actions."""
    from liquid_control.evaluation.episode import run_episode

    images, image_times, actions, action_times, positions, targets = [], [], [], [], [], []
    clock = [0.0, False]  # sim time since reset, whether the first update was seen

    def recorder(obs, action, info):
        if clock[1]:
            clock[0] += float(np.asarray(obs["dt"]).reshape(-1)[0])
        clock[1] = True
        if "image" in obs:
            images.append(np.asarray(obs["image"]))
            image_times.append(clock[0])
        if action is not None:
            actions.append(np.asarray(action, dtype=np.float64))
            action_times.append(clock[0])
        pos = _position(info)
        if pos is not None:
            positions.append(pos)
        if "target" in info:
            targets.append(np.asarray(info["target"], dtype=np.float64).reshape(-1)[:2])

    record = run_episode(job, recorder=recorder)
    plt = _pyplot()
    has_images = bool(images)
    rows = 2 if has_images else 1
    fig = plt.figure(figsize=(12, 4.6 if has_images else 3.0))
    grid = fig.add_gridspec(rows, frames, height_ratios=[1.0, 1.25] if has_images else None)
    if has_images:
        idx = np.linspace(0, len(images) - 1, num=min(frames, len(images))).round().astype(int)
        for k, i in enumerate(idx):
            ax = fig.add_subplot(grid[0, k])
            ax.imshow(images[i])
            ax.set_title(f"t={image_times[i]:.1f}s", fontsize=7)
            ax.axis("off")
    has_xy = len(positions) > 1
    ax = fig.add_subplot(grid[rows - 1, : (frames * 2) // 3 if has_xy else frames])
    if actions:
        a = np.stack(actions)
        for d in range(a.shape[1]):
            ax.plot(action_times, a[:, d], lw=1, label=f"action[{d}]")
        ax.legend(fontsize=7)
    ax.set_xlabel("sim time (s)")
    ax.set_ylabel("action")
    ax.grid(alpha=0.3)
    if has_xy:
        ax2 = fig.add_subplot(grid[rows - 1, (frames * 2) // 3 :])
        xy = np.array(positions)
        ax2.plot(xy[:, 0], xy[:, 1], lw=1.2)
        ax2.plot(xy[0, 0], xy[0, 1], "go", ms=4, label="start")
        ax2.plot(xy[-1, 0], xy[-1, 1], "rx", ms=5, label="end")
        if targets:
            ax2.plot(targets[-1][0], targets[-1][1], "*", color="orange", ms=9, label="target")
        ax2.set_aspect("equal", adjustable="datalim")
        ax2.set_title("trajectory (x, y)", fontsize=8)
        ax2.legend(fontsize=6)
    fig.suptitle(
        f"{job.policy} (training seed {job.training_seed}) under '{job.shift}', episode seed "
        f"{job.episode_seed}: {record['outcome']}, return {record['return']:.2f}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path, record


def _position(info: dict):
    for key in ("position", "robot_position", "xy", "pos"):
        if key in info:
            p = np.asarray(info[key], dtype=np.float64).reshape(-1)
            if p.size >= 2:
                return p[:2]
    state = info.get("state") or info.get("privileged")
    if isinstance(state, dict):
        return _position(state)
    return None


# ------------------------------------------------------------------------------------------- report.md


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _ci(ci, fmt="{:.2f}") -> str:
    return "n/a" if ci is None else f"[{fmt.format(ci[0])}, {fmt.format(ci[1])}]"


def _pivot(cells, policies, shifts, cell_text) -> list[str]:
    by_key = {(c.policy, c.shift): c for c in cells}
    lines = ["| shift | " + " | ".join(policies) + " |", "| --- |" + " --- |" * len(policies)]
    for shift in shifts:
        row = [cell_text(by_key[(p, shift)]) if (p, shift) in by_key else "—" for p in policies]
        lines.append(f"| {shift} | " + " | ".join(row) + " |")
    return lines


def _group_summary(records, policies, shifts) -> list[str]:
    """Success pooled over the shifts of each group (visual, sensor, ...), Wilson CI on the pooled episodes."""
    found: dict[str, list[str]] = {}
    for shift in shifts:
        found.setdefault(shift_group(shift), []).append(shift)
    order = ["in-distribution", "visual", "sensor", "dynamics"]
    groups = OrderedDict(sorted(found.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else 9, kv[0])))
    lines = [
        "| policy | "
        + " | ".join(f"{g} ({len(s)} shift{'s' if len(s) > 1 else ''})" for g, s in groups.items())
        + " |",
        "| --- |" + " --- |" * len(groups),
    ]
    for policy in policies:
        row = []
        for members in groups.values():
            wins = [bool(r["success"]) for r in records if r["policy"] == policy and r["shift"] in members]
            if not wins:
                row.append("—")
                continue
            lo, hi = wilson_interval(sum(wins), len(wins))
            row.append(f"{_pct(np.mean(wins))} [{_pct(lo)}, {_pct(hi)}]")
        lines.append(f"| {policy} | " + " | ".join(row) + " |")
    return lines


def write_report(
    plan: EvaluationPlan,
    records: list[dict],
    out_dir: str,
    command: str,
    title: str = "Out-of-distribution evaluation",
    notes: list[str] | None = None,
    example: bool = True,
    paired: list[tuple[str, str]] | None = None,
    sections: list[str] | None = None,
) -> str:
    """report.md and its figures. `notes`: lines under the title; `sections`: markdown after the policy table."""
    policies = [p.name for p in plan.policies]
    cells = summarize(records, policies, plan.shifts)
    figures = {}
    figures["success"] = plot_success_by_shift(
        cells, policies, plan.shifts, os.path.join(out_dir, "success_by_shift.png")
    )
    sweep = plot_sweeps(cells, policies, plan.shifts, os.path.join(out_dir, "success_vs_sensor_timing.png"))
    if sweep:
        figures["sweep"] = sweep
    example_record = None
    if example:
        job = pick_example(plan)
        figures["example"], example_record = plot_example_episode(job, os.path.join(out_dir, "example_episode.png"))

    world = plan.policies[0].world
    n_seeds = sorted({len(p.training_seeds) for p in plan.policies})
    lines = [f"# {title}", ""]
    lines += [f"Command: `{command}`", ""] if command else []
    lines += notes or []
    if notes:
        lines.append("")
    lines += [
        f"- World: `{world}`; {len(plan.episode_seeds)} episodes per policy, shift and training seed; "
        f"training seeds per policy: {', '.join(map(str, n_seeds))}.",
        f"- Episode seeds {plan.episode_seeds[0]}..{plan.episode_seeds[-1]}, the same for every policy and shift "
        "(paired comparison).",
        f"- {len(records)} episodes in this report (`results.csv`, `results.json`).",
        "- Success: 95% Wilson score interval over all episodes of all training seeds of a policy (episodes "
        "treated as independent; the per-seed rates are in the last table). Return and smoothness: mean with "
        "a 95% percentile bootstrap interval. Smoothness = mean |Δaction| per second of measured time "
        "(lower is smoother).",
        "",
        "## Policies",
        "",
        "| policy | training seeds | parameters (policy) | parameters (recurrent core) |",
        "| --- | --- | --- | --- |",
    ]
    for p in plan.policies:
        if p.is_expert:
            lines.append(f"| {p.name} | — | privileged (true state) | — |")
        else:
            lines.append(
                f"| {p.name} | {', '.join(map(str, p.training_seeds))} | {p.parameter_count:,} | "
                f"{p.core_parameter_count:,} |"
                if p.core_parameter_count is not None
                else f"| {p.name} | {', '.join(map(str, p.training_seeds))} | {p.parameter_count:,} | n/a |"
            )
    lines += [""] + (sections or [])
    lines += ["## Success rate (95% Wilson CI)", ""]
    lines += _pivot(
        cells,
        policies,
        plan.shifts,
        lambda c: f"{_pct(c.success_rate)} [{_pct(c.success_ci[0])}, {_pct(c.success_ci[1])}]",
    )
    lines += [
        "",
        "![success per shift](success_by_shift.png)",
        "",
        "### Pooled by kind of shift",
        "",
        "Success over all episodes of the shifts of each kind (unweighted pooling, 95% Wilson CI).",
        "",
    ]
    lines += _group_summary(records, policies, plan.shifts)
    lines.append("")
    for a, b in paired or []:
        rows = paired_comparison(records, a, b, plan.shifts)
        if not rows:
            continue
        lines += [
            f"### Paired: `{a}` versus `{b}`",
            "",
            f"Same training seed and episode seed in each pair. `only {a}`/`only {b}`: pairs where only that "
            "policy succeeded; p: exact two-sided McNemar test on those discordant pairs (no correction "
            "for the number of shifts).",
            "",
            f"| shift | pairs | success {a} | success {b} | only {a} | only {b} | p |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in rows:
            lines.append(
                f"| {r.shift} | {r.pairs} | {_pct(r.success_a)} | {_pct(r.success_b)} | {r.only_a} | "
                f"{r.only_b} | {r.p_value:.3g} |"
            )
        lines.append("")
    if "sweep" in figures:
        lines += [
            "## Success versus sensor rate / jitter",
            "",
            "Policies were trained at the default sensor timing (factor 1x).",
            "",
            f"![success versus sensor timing]({os.path.basename(figures['sweep'])})",
            "",
        ]
    lines += ["## Return (mean, 95% bootstrap CI)", ""]
    lines += _pivot(cells, policies, plan.shifts, lambda c: f"{c.return_mean:.2f} {_ci(c.return_ci)}")
    lines += ["", "## Action smoothness (mean |Δaction| per second, lower is smoother)", ""]
    lines += _pivot(cells, policies, plan.shifts, lambda c: f"{c.smoothness_mean:.3f} {_ci(c.smoothness_ci, '{:.3f}')}")
    lines += [
        "",
        "## Every cell",
        "",
        "| policy | shift | n | success | collision | mean steps | mean sim time (s) | success per training seed |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in cells:
        seeds = ", ".join(f"{s}: {_pct(v)}" for s, v in c.per_seed_success.items())
        lines.append(
            f"| {c.policy} | {c.shift} | {c.n} | {c.successes}/{c.n} | {_pct(c.collision_rate)} | "
            f"{c.mean_steps:.0f} | {c.mean_sim_time_s:.1f} | {seeds} |"
        )
    if example_record is not None:
        lines += [
            "",
            "## Example shifted episode",
            "",
            f"`{example_record['policy']}` (training seed {example_record['training_seed']}) under "
            f"`{example_record['shift']}`, episode seed {example_record['episode_seed']}: "
            f"{example_record['outcome']}.",
            "",
            "![example episode](example_episode.png)",
        ]
    path = os.path.join(out_dir, "report.md")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return path
