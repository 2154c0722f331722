"""From episode records to the report folder: report.md with intervals over training seeds, and the figures.

The numbers come from `summary` (success over training seeds, comparisons); the attention figures from
`saliency`; where and how the report was made from `provenance`.
"""

from __future__ import annotations

import os
import re

import numpy as np

from liquid_control.atomic_file import atomic_write
from liquid_control.conventions.commands import COMMAND_ELEMENTS
from liquid_control.evaluation.plan import EvaluationPlan, unique_pairs
from liquid_control.evaluation.results import atomic_path, naming, record_key
from liquid_control.evaluation.shifts import SWEEP_KEYS, shift_kinds, sweep_factor
from liquid_control.evaluation.summary import (
    FAMILY_ALPHA,
    CellSummary,
    compare_over_seeds,
    paired_comparison,
    shift_groups,
    summarize,
    summarize_groups,
)
from liquid_control.figures import fit_suptitle, pyplot, save_figure
from liquid_control.shown import counted
from liquid_control.stats import format_p

# ----------------------------------------------------------------------------------------------- plots

# A panel's policies take the palette's colours in turn, then the same colours again with another pattern:
# with the colours alone, the 11th policy of a panel (the headline's cfc_no_dt) was drawn as the 1st (the expert).
# The palette is Okabe and Ito's, told apart also with red-green colour blindness (matplotlib's default cycle drew
# cfc and cfc_ncp, side by side in every group, in an orange and a green that a protanope sees alike), black
# replaced by grey so that a bar's black interval stays visible.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#F0E442", "#BBBBBB")
HATCHES = ("", "////", "....", "xxxx")  # bars
LINES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"))  # lines: style and marker


def policy_style(i: int) -> tuple[str, int]:
    """The colour of a panel's ``i``-th policy and the index of its pattern in ``HATCHES`` / ``LINES``."""
    return PALETTE[i % len(PALETTE)], (i // len(PALETTE)) % len(HATCHES)


def plot_success_by_shift(
    cells: list[CellSummary], panels: dict[str, list[str]], shifts: list[str], path: str, shifts_per_row: int = 6
) -> str:
    """Grouped bars (one per policy) with 95% intervals over training seeds: one row of axes per panel of
    policies (e.g. without / with the robustness recipes) and per `shifts_per_row` shifts."""
    plt = pyplot()
    by_key = {(c.policy, c.shift): c for c in cells}
    chunks = [shifts[i : i + shifts_per_row] for i in range(0, len(shifts), shifts_per_row)]
    rows = [(title, policies, chunk) for title, policies in panels.items() for chunk in chunks]
    widest = max(len(p) for p in panels.values())
    fig, axes = plt.subplots(
        len(rows), 1, figsize=(min(14.0, 3.0 + (0.9 + 0.09 * widest) * len(chunks[0])), 2.6 * len(rows)), squeeze=False
    )
    for ax, (title, policies, row) in zip(axes[:, 0], rows):
        x = np.arange(len(row))
        width = 0.8 / max(1, len(policies))
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
            color, pattern = policy_style(i)
            ax.bar(
                x + (i - (len(policies) - 1) / 2) * width,
                rates,
                width,
                yerr=[lo, hi],
                capsize=1.0,
                label=policy,
                color=color,
                hatch=HATCHES[pattern],
                edgecolor="white",
                linewidth=0,
                error_kw={"elinewidth": 0.6},
            )
        ax.set_xticks(x)
        ax.set_xticklabels(row, fontsize=8)
        ax.set_xlim(-0.5, len(chunks[0]) - 0.5)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("success", fontsize=8)
        ax.set_title(title, fontsize=8, loc="left")
        ax.grid(axis="y", alpha=0.3)
        if row is chunks[0]:
            ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fit_suptitle(
        fig,
        "Success per shift (mean over training seeds, 95% CI: bootstrap over seeds, then episodes, or Wilson "
        "where wider)",
        9,
    )
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return path


def plot_sweeps(cells: list[CellSummary], panels: dict[str, list[str]], shifts: list[str], path: str) -> str | None:
    """Success against the sensor-rate and jitter factors (1: the world's default timing, which policies without
    the timing recipe were trained at): the continuous-time claim.

    One row per swept setting, one column per panel of policies."""
    sweeps = {}
    for key in SWEEP_KEYS:
        points = sorted((sweep_factor(s, key), s) for s in shifts if sweep_factor(s, key) is not None)
        if len({f for f, _ in points}) >= 2 and any(f != 1.0 for f, _ in points):
            sweeps[key] = points
    if not sweeps:
        return None
    plt = pyplot()
    by_key = {(c.policy, c.shift): c for c in cells}
    fig, axes = plt.subplots(
        len(sweeps), len(panels), figsize=(5.4 * len(panels) + 1.2, 3.6 * len(sweeps)), squeeze=False
    )
    for r, (key, points) in enumerate(sweeps.items()):
        for c, (title, policies) in enumerate(panels.items()):
            ax = axes[r, c]
            for i, policy in enumerate(policies):
                xs, ys, lo, hi = [], [], [], []
                for factor, shift in points:
                    cell = by_key.get((policy, shift))
                    if cell is None:
                        continue
                    xs.append(factor), ys.append(cell.success_rate)
                    lo.append(cell.success_ci[0]), hi.append(cell.success_ci[1])
                if not xs:
                    continue
                # small horizontal offsets per policy so overlapping error bars stay readable
                offset = 2 ** (0.04 * (i - (len(policies) - 1) / 2))
                color, pattern = policy_style(i)
                ax.errorbar(
                    [x * offset for x in xs],
                    ys,
                    yerr=[np.subtract(ys, lo), np.subtract(hi, ys)],
                    color=color,
                    ls=LINES[pattern][0],
                    marker=LINES[pattern][1],
                    ms=3,
                    capsize=1.5,
                    elinewidth=0.6,
                    lw=1.0,
                    label=policy,
                )
            ax.set_xscale("log", base=2)
            factors = sorted({f for f, _ in points})
            ax.set_xticks(factors)
            ax.set_xticklabels([f"{f:g}x" for f in factors])
            ax.axvline(1.0, color="grey", lw=0.8, ls=":")
            ax.set_ylim(0, 1.05)
            # not "trained at 1x": a policy with the timing recipe was trained on drawn rates and jitters
            ax.set_xlabel(f"{key} factor (1x: the world's default timing)", fontsize=8)
            ax.set_ylabel("success (95% CI: seeds, episodes; Wilson)", fontsize=8)
            ax.set_title(title, fontsize=8, loc="left")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fit_suptitle(fig, "Success versus sensor timing (mean over training seeds, 95% CI)", 12)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return path


def visual_shifts(shifts: list[str]) -> list[str]:
    """The shifts that change what a camera sees, alone or with others (``lighting=dusk,sensor_rate=0.5``): the
    example episode's and the attention figures' one rule (before, the figures left a mixed shift out)."""
    return [s for s in shifts if "visual" in shift_kinds(s)]


def pick_example(plan: EvaluationPlan):
    """The example episode: the first trained policy (else the expert) under the first visual shift."""
    jobs = plan.jobs
    shifted = [s for s in plan.shifts if shift_kinds(s)]
    shift = (visual_shifts(plan.shifts) or shifted or plan.shifts)[0]
    trained = [j for j in jobs if j.checkpoint is not None and j.shift == shift]
    candidates = trained or [j for j in jobs if j.shift == shift]
    return candidates[0]


def action_names(world: str) -> tuple[str, ...]:
    """What each action element of ``world`` commands: the ``action_names`` its env class declares, else those of
    its ``action_kind`` (() if neither)."""
    import sim_envs

    world_class = sim_envs.world_class(world)
    named = tuple(map(str, getattr(world_class, "action_names", ()) or ()))
    kind = getattr(world_class, "action_kind", "")
    return named or tuple(name for name, _unit in COMMAND_ELEMENTS.get(kind, ()))


def plot_example_episode(job, path: str, frames: int = 8) -> tuple[str, dict]:
    """Re-run one episode alone (the same world and seed as in the table; its return, and even its outcome, can
    differ from the table's record, which ran in a batch: see `backends`) recording camera and actions."""
    from liquid_control.evaluation.episode import run_episode

    images, image_times, actions, action_times, positions, targets = [], [], [], [], [], []
    clock = [0.0, False]  # sim time since reset, whether the first update was seen

    def recorder(obs, action, info, state):
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
    plt = pyplot()
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
        names = action_names(job.world)  # "action[1]" alone left the reader to guess what it commands
        for d in range(a.shape[1]):
            ax.plot(action_times, a[:, d], lw=1, label=f"action[{d}]" + (f": {names[d]}" if d < len(names) else ""))
        ax.legend(fontsize=7)
    ax.set_xlabel("sim time (s)")
    ax.set_ylabel("action (-1 to 1: the world's limits)")
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
        ax2.set_xlabel("x (m)", fontsize=8)
        ax2.set_ylabel("y (m)", fontsize=8)
        ax2.set_title("trajectory (world frame)", fontsize=8)
        ax2.legend(fontsize=6)
    fit_suptitle(
        fig,
        f"{job.policy} (training seed {job.training_seed}) under '{job.shift}', episode seed "
        f"{job.episode_seed}: {record['outcome']}, return {record['return']:.2f}",
        10,
    )
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
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
    """A rate in whole percent, with decimals where rounding would print a rate that is neither 0 nor 1 as 0% or
    100% (149 of 150 printed as 100% beside its own interval [99%, 100%])."""
    for digits in range(4):
        text = f"{100 * x:.{digits}f}"
        if 0 < x < 1 and float(text) in (0.0, 100.0):
            continue
        return f"{text}%"
    return ">99.999%" if x > 0.5 else "<0.001%"


def _ci(ci, fmt="{:.2f}") -> str:
    return "n/a" if ci is None else f"[{fmt.format(ci[0])}, {fmt.format(ci[1])}]"


def _pivot(cells, policies, shifts, cell_text) -> list[str]:
    """A table of ``cell_text(cell)``: a row per shift, or a row per policy when there are more policies."""
    by_key = {(c.policy, c.shift): c for c in cells}
    text = lambda p, s: cell_text(by_key[(p, s)]) if (p, s) in by_key else "—"  # noqa: E731
    if len(policies) > len(shifts):
        lines = ["| policy | " + " | ".join(shifts) + " |", "| --- |" + " --- |" * len(shifts)]
        return lines + [f"| {p} | " + " | ".join(text(p, s) for s in shifts) + " |" for p in policies]
    lines = ["| shift | " + " | ".join(policies) + " |", "| --- |" + " --- |" * len(policies)]
    return lines + [f"| {s} | " + " | ".join(text(p, s) for p in policies) + " |" for s in shifts]


def _group_table(groups, policies, shifts: list[str], gaps: dict | None = None) -> list[str]:
    """The pooled-by-kind table; a cell that leaves out seeds of ``gaps`` (``_pooling_gaps``) says over how many
    of the policy's seeds it is."""
    gaps = gaps or {}
    by_key = {(g.policy, g.group): g for g in groups}
    shown = {g.group for g in groups} | {group for _policy, group in gaps}  # gaps only: no seed ran all of it
    counts = {group: len(members) for group, members in shift_groups(shifts).items() if group in shown}
    lines = [
        "| policy | " + " | ".join(f"{n} ({c} shift{'s' if c > 1 else ''})" for n, c in counts.items()) + " |",
        "| --- |" + " --- |" * len(counts),
    ]
    for policy in policies:
        row = []
        for name in counts:
            g = by_key.get((policy, name))
            cell = "—" if g is None else f"{_pct(g.mean)} [{_pct(g.ci[0])}, {_pct(g.ci[1])}]"
            left_out = len(gaps.get((policy, name), {}))
            if g is not None and left_out:
                cell += f" ({g.seeds} of {g.seeds + left_out} seeds)"
            row.append(cell)
        lines.append(f"| {policy} | " + " | ".join(row) + " |")
    return lines


def _pooling_gaps(records: list[dict], policies: list[str], shifts: list[str]) -> dict:
    """(policy, group) -> {training seed: the shifts of the group it has no episodes of}, for the seeds of the
    policy that have episodes elsewhere in ``records``: the pooled rate of a kind is over the seeds that ran every
    shift of it, so results combined or edited by hand, or an interrupted run reported, would leave a seed out of
    it without a word (``eval`` itself writes complete plans)."""
    ran: dict[str, dict[int, set]] = {}
    for r in records:
        ran.setdefault(r["policy"], {}).setdefault(int(r["training_seed"]), set()).add(r["shift"])
    gaps: dict = {}
    for group, members in shift_groups(shifts).items():
        for policy in policies:
            for seed, done in sorted(ran.get(policy, {}).items()):
                missing = [s for s in members if s not in done]
                if missing:
                    gaps.setdefault((policy, group), {})[seed] = missing
    return gaps


def _pooling_gaps_note(gaps: dict, seedless: set) -> list[str]:
    """The line under the pooled table naming each seed it leaves out and the shifts that seed lacks."""
    if not gaps:
        return []
    said = []
    for (policy, group), seeds in gaps.items():
        lacks = [
            ("" if policy in seedless else f"training seed {seed} ") + f"has no {', '.join(missing)}"
            for seed, missing in seeds.items()
        ]
        said.append(f"`{policy}` in {group}: {'; '.join(lacks)}")
    return [
        "",
        "Left out of the pooled rates, with no episodes of a shift of the kind in these results (an interrupted run, "
        "or results combined or edited): " + "; ".join(said) + ". Each such cell is over the seeds that ran every "
        "shift of the kind.",
    ]


NO_SHARED_SEEDS = "n/a: fewer than 2 shared seeds"
FLOAT_NOISE = 1e-9  # a difference of success rates this close to 0 is 0 (as `stats.paired_seed_test` takes it)


def _points(x: float) -> str:
    """A difference of success rates in signed percentage points; float noise around 0 (a tie's mean difference,
    -1/6 + 4/6 - 3/6 = -1.9e-17) is "+0", not the "-0" that says A below B."""
    return f"{100 * (0.0 if abs(x) <= FLOAT_NOISE else x):+.0f}"


def seed_spread_note(seed_counts: list[int]) -> str:
    """What the success interval includes, for policies of these training seed counts: with one seed there is no
    seed-to-seed spread to resample (before: the report said it included it for one seed as for five)."""
    spread = (
        "It includes the seed-to-seed spread of training, and is still narrower than 95% with few seeds (a "
        "simulation: 88% coverage with 5 seeds, 84% with 3, 78% with 2)."
    )
    one = (
        "over its episodes alone: it does not include the seed-to-seed spread of training (another training run "
        "of the same architecture can land outside it)."
    )
    if max(seed_counts) <= 1:
        return "With one training seed per policy the interval is " + one
    if min(seed_counts) <= 1:
        return spread + " For a policy of one training seed it is " + one
    return spread


def _comparison_table(rows) -> list[str]:
    lines = [
        "| A | B | shifts | seeds paired | success A | success B | A - B [simultaneous 95% CI] | p | p (Bonferroni) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        seeds = str(r.seeds)
        if (r.seeds_a, r.seeds_b) != (r.seeds, r.seeds):  # some seed of A or B has no partner: say so
            seeds += f" (of {r.a}: {r.seeds_a}, {r.b}: {r.seeds_b})"
        pct = lambda x: "—" if x is None else _pct(x)  # noqa: E731
        if not r.tested:
            diff = NO_SHARED_SEEDS if r.difference is None else f"{_points(r.difference)} pts, {NO_SHARED_SEEDS}"
            lines.append(
                f"| {r.a} | {r.b} | {r.group} | {seeds} | {pct(r.mean_a)} | {pct(r.mean_b)} | {diff} | — | — |"
            )
            continue
        ci = "n/a" if r.ci is None else f"{_points(r.ci[0])}, {_points(r.ci[1])}"  # None: a tie
        diff = f"{_points(r.difference)} pts [{ci}]"
        if r.p_bonferroni < FAMILY_ALPHA:  # where the interval excludes 0 (a tie has none)
            diff = f"**{diff}**"
        lines.append(
            f"| {r.a} | {r.b} | {r.group} | {seeds} | {_pct(r.mean_a)} | {_pct(r.mean_b)} | {diff} | "
            f"{format_p(r.p_value)} | {format_p(r.p_bonferroni)} |"
        )
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
    comparisons: list[tuple[str, str]] | None = None,
    panels: dict[str, list[str]] | None = None,
    saliency: bool = True,
    provenance=None,
) -> str:
    """report.md and its figures.

    `notes`: lines under the title; `sections`: markdown after the policy table; `paired`: episode-level
    McNemar tables; `comparisons`: pairs compared over training seeds (default: `paired`), Bonferroni-corrected
    together; `panels`: title -> policies, one panel each in the figures (default: all in one);
    `saliency`: the attention figures; `provenance`: `provenance.collect(...)` (or a callable returning it, called
    after the figures), printed at the top.
    """
    from liquid_control.evaluation import provenance as provenance_module

    policies = [p.name for p in plan.policies]
    panels = panels or {"": policies}
    cells = summarize(records, policies, plan.shifts)
    figures = {}
    figures["success"] = plot_success_by_shift(
        cells, panels, plan.shifts, os.path.join(out_dir, "success_by_shift.png")
    )
    sweep = plot_sweeps(cells, panels, plan.shifts, os.path.join(out_dir, "success_vs_sensor_timing.png"))
    if sweep:
        figures["sweep"] = sweep
    attention = write_saliency(plan, out_dir, records) if saliency else []
    example_record = None
    if example:
        job = pick_example(plan)
        figures["example"], example_record = plot_example_episode(job, os.path.join(out_dir, "example_episode.png"))

    if callable(provenance):  # collected now, so that its wall and CPU time include the figures
        provenance = provenance()
    world = plan.policies[0].world
    n_seeds = sorted({len(p.training_seeds) for p in plan.policies if not p.is_expert} or {1})
    lines = [f"# {title}", ""]
    if provenance is not None:
        lines += provenance_module.markdown(provenance) + [""]
    elif command:
        lines += [f"Command: `{command}`", ""]
    lines += notes or []
    if notes:
        lines.append("")
    lines += [
        f"- World: `{world}`; {counted(len(plan.episode_seeds), 'episode')} per policy, shift and training seed; "
        f"training seeds per policy: {', '.join(map(str, n_seeds))}.",
        f"- Episode seeds {plan.episode_seeds[0]}..{plan.episode_seeds[-1]}, the same for every policy, training "
        "seed and shift (paired comparison).",
        f"- {counted(len(records), 'episode')} in this report (`results.csv`, `results.json`); the checkpoint files "
        "with their SHA-256, the shifts and the episode seeds: `plan.json`.",
        "- **Success** of a policy: the mean over its training seeds of each seed's success rate, with a 95% "
        "interval from a bootstrap over training seeds, then over episodes within each seed (2000 resamples, "
        "fixed seed), widened to the Wilson interval of all episodes pooled where that is wider (the bootstrap "
        "collapses at 0% and 100%). " + seed_spread_note(n_seeds) + " Per-seed rates: last table.",
        "- **Comparisons** over training seeds: the difference of matched seeds' success rates (same training "
        "seed number, same evaluation episodes; only the seeds both policies ran are paired, their number in "
        "the table, and with fewer than 2 there is no test), a paired t-test over seeds and a t interval (where "
        "every seed's difference is the same, the exact sign-flip p-value 2/2^n and no interval: n/a), clipped to "
        "[-100, +100] pts. All comparisons of this report are Bonferroni-corrected together: with m of them, "
        "p (Bonferroni) = min(1, m p) and each interval is at 1 - 0.05/m, so that all m intervals hold together "
        "with 95% confidence and an interval excludes 0 exactly where p (Bonferroni) < 0.05 (bold; a tie, "
        "without an interval, is bold by its p alone, which 6 or more seeds can bring below 0.05).",
        "- Return and smoothness: mean over episodes with a 95% percentile bootstrap interval. Smoothness = mean "
        "|Δaction| per second of measured time (lower is smoother).",
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
            core = "n/a" if p.core_parameter_count is None else f"{p.core_parameter_count:,}"
            seeds = ", ".join(f"{s} (not recorded)" if s in p.unrecorded_seeds else str(s) for s in p.training_seeds)
            lines.append(f"| {p.name} | {seeds} | {p.parameter_count:,} | {core} |")
    lines += [""] + (sections or [])
    lines += ["## Success rate (mean over training seeds, 95% CI over seeds then episodes)", ""]
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
        "Each shift of a kind weighted equally, per training seed; 95% CI over seeds then episodes.",
        "",
    ]
    unrecorded = {p.name: p.unrecorded_seeds for p in plan.policies}
    seedless = {p.name for p in plan.policies if p.is_expert}
    gaps = _pooling_gaps(records, policies, plan.shifts)
    lines += _group_table(summarize_groups(records, policies, plan.shifts), policies, plan.shifts, gaps)
    lines += _pooling_gaps_note(gaps, seedless)
    lines.append("")
    compared = compare_over_seeds(
        records, comparisons if comparisons is not None else list(paired or []), plan.shifts, unrecorded, seedless
    )
    tested = sum(r.tested for r in compared)
    if tested:
        untested = len(compared) - tested
        lines += [
            "## Comparisons over training seeds",
            "",
            f"{tested} comparisons (pairs x kinds of shift), Bonferroni-corrected together: each interval at "
            f"{100 * (1 - FAMILY_ALPHA / tested):.4g}%, all {tested} together at {100 * (1 - FAMILY_ALPHA):.0f}%; "
            f"bold: p (Bonferroni) < {FAMILY_ALPHA:g}, where the interval excludes 0 (a tie has none)."
            + (
                f" {untested} without a test ({NO_SHARED_SEEDS}: the training seed numbers both policies ran "
                "every shift of the kind with; seeds a checkpoint did not record are not paired)."
                if untested
                else ""
            ),
            "",
        ]
        lines += _comparison_table(compared) + [""]
    elif compared:  # e.g. one training seed per policy: a table of n/a rows would say nothing more
        lines += [
            "## Comparisons over training seeds",
            "",
            f"None of the {len(compared)} comparisons (pairs x kinds of shift) has a test: {NO_SHARED_SEEDS} "
            "(the training seed numbers both policies ran every shift of the kind with).",
            "",
        ]
    for a, b in unique_pairs(paired or []):  # --paired a,b --paired a,b: one section
        rows = paired_comparison(records, a, b, plan.shifts, seedless)
        if not rows:
            continue
        single = [n for n in (a, b) if n in seedless]
        if len(single) == 1:  # the expert: each of its episodes against that episode of every seed of the other
            other = b if single[0] == a else a
            how = (
                f"Same episode seed in each pair: `{single[0]}` has no training seeds, so each of its episodes is "
                f"paired with that episode of every training seed of `{other}`."
            )
        else:
            how = "Same training seed and episode seed in each pair."
        lines += [
            f"### Paired episodes: `{a}` versus `{b}`",
            "",
            f"{how} `only {a}`/`only {b}`: episode seeds where that policy's success rate over their pairs is the "
            "higher (one pair each: where only it succeeded); p: exact two-sided conditional test stratified by "
            "episode seed (the pairs of one episode seed share its layout: Mantel-Haenszel's test, exact; McNemar's "
            "with one pair per episode seed; episode seeds treated as independent, no correction for the number of "
            "shifts).",
            "",
            f"| shift | pairs | success {a} | success {b} | only {a} | only {b} | p |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in rows:
            lines.append(
                f"| {r.shift} | {r.pairs} | {_pct(r.success_a)} | {_pct(r.success_b)} | {r.only_a} | "
                f"{r.only_b} | {format_p(r.p_value)} |"
            )
        lines.append("")
    if "sweep" in figures:
        trained_here = "## Training" in (sections or [])  # the experiment's: it trained the policies and says how
        lines += [
            "## Success versus sensor rate / jitter",
            "",
            "Policies were trained at the default sensor timing (factor 1x), those with the timing recipe on rates "
            "and jitters drawn per training episode (see Training)."
            if trained_here
            else "Factor 1x: the world's default sensor timing (`in_distribution`); how each policy was trained "
            "(at that timing or on drawn rates and jitters) is its checkpoint's, not this report's.",
            "",
            f"![success versus sensor timing]({os.path.basename(figures['sweep'])})",
            "",
        ]
    lines += attention
    lines += ["## Return (mean, 95% bootstrap CI)", ""]
    lines += _pivot(cells, policies, plan.shifts, lambda c: f"{c.return_mean:.2f} {_ci(c.return_ci)}")
    lines += ["", "## Action smoothness (mean |Δaction| per second, lower is smoother)", ""]
    lines += _pivot(cells, policies, plan.shifts, lambda c: f"{c.smoothness_mean:.3f} {_ci(c.smoothness_ci, '{:.3f}')}")
    lines += [
        "",
        "## Every cell",
        "",
        "| policy | shift | n | successes | collision | mean steps | mean sim time (s) | success per training seed |",
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
            + example_outcome(example_record, records),
            "",
            "![example episode](example_episode.png)",
        ]
    path = os.path.join(out_dir, "report.md")
    with naming(path), atomic_write(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    remove_stale_figures(out_dir, "\n".join(lines))
    return path


REPLAY_DIFFERS = (
    "the tables' episode ran in a batch of episodes, whose float32 sums differ from a lone episode's in the last "
    "bits, and a closed loop can amplify that into another outcome: the same world and seed"
)


def example_outcome(replayed: dict, records: list[dict], brief: bool = False) -> str:
    """The outcome of an episode replayed for a figure as the report states it: the table's record of that episode,
    and the replay's where it differs (the replay runs the episode alone, the table's record ran in a batch of lanes:
    a trained policy's last bits differ, and a chaotic closed loop can end otherwise; see `plot_example_episode`).
    ``brief``: for a figure's title, without the explanation (`REPLAY_DIFFERS`) and the full stop."""
    logged = next((r for r in records if record_key(r) == record_key(replayed)), None)
    if logged is None or logged["outcome"] == replayed["outcome"]:
        return replayed["outcome"] + ("" if brief else ".")
    if brief:
        return f"{logged['outcome']} in the tables; replayed alone for the figure, {replayed['outcome']}"
    return (
        f"{logged['outcome']} in the tables (`results.csv`); replayed alone for the figure, {replayed['outcome']} "
        f"({REPLAY_DIFFERS})."
    )


# the figures a report draws (write_report, write_saliency): a file of these names that report.md does not show is
# an earlier report's (a --resume with fewer policies or shifts, --no-saliency, --no-example)
REPORT_FIGURES = (
    "success_by_shift.png",
    "success_vs_sensor_timing.png",
    "example_episode.png",
    "saliency_grid.png",
    "saliency_episode.gif",
)


def remove_stale_figures(out_dir: str, report: str) -> None:
    """Remove the figures of an earlier report in ``out_dir`` that ``report`` (report.md's text) does not show."""
    names = list(REPORT_FIGURES) + [n for n in os.listdir(out_dir) if re.fullmatch(r"neuron_traces_.+\.png", n)]
    for name in names:
        if f"]({name})" not in report:
            try:
                os.unlink(os.path.join(out_dir, name))
            except FileNotFoundError:
                pass


def unshifted(shifts: list[str]) -> list[str]:
    """The training distribution's run among ``shifts`` (a list of it, or empty): the figures' first column."""
    return [s for s in shifts if not shift_kinds(s)][:1]


def trace_shifts(shifts: list[str], camera: bool) -> list[str]:
    """The neuron traces' columns: the training distribution where evaluated, then the first shift that changes what
    the policy senses (with a camera the first visual shift first; without one, a visual-only shift changes nothing
    it reads); one column where there is only one of the two, the first shift evaluated where there is neither."""
    home = unshifted(shifts)
    visual = visual_shifts(shifts) if camera else []
    sensed = visual + [s for s in shifts if shift_kinds(s) - {"visual"} and s not in visual]
    return (home + sensed[:1]) or shifts[:1]


def write_saliency(plan: EvaluationPlan, out_dir: str, records: list[dict]) -> list[str]:
    """The attention figures (saliency grid and one animated episode of the policies with a camera, neuron traces of
    every NCP policy) and their section, which names the policies left out of the saliency; ``records``: the tables'
    episodes, whose outcome the replayed episodes' captions and titles state (``example_outcome``)."""
    from liquid_control.evaluation import saliency
    from liquid_control.evaluation.agents import load_cached_policy

    trained = [p for p in plan.policies if not p.is_expert]
    first = [(p, load_cached_policy(p.checkpoints[0], p.checkpoint_sha[0])) for p in trained]
    seeing = [(p, policy) for p, policy in first if policy.camera is not None]
    blind = [p.name for p, policy in first if policy.camera is None]
    ncp = [(p, policy) for p, policy in first if saliency.neuron_groups(policy.core)]
    if not seeing and not ncp:
        return []
    seed = plan.episode_seeds[0]
    lines = ["## What the networks look at", ""]
    if blind:  # before, one policy without a camera removed the whole section, also the others' figures
        lines += [
            f"No saliency for {', '.join(f'`{name}`' for name in blind)}: no camera (VisualBackProp maps what a "
            "camera encoder passes on).",
            "",
        ]
    visual = visual_shifts(plan.shifts)
    # the training distribution first; a report of sensor shifts alone: the camera under the first of them
    columns = (unshifted(plan.shifts) + visual) or plan.shifts[:1]
    if seeing:
        spec = seeing[0][0]
        rendered = {}  # camera size -> the expert's frames: the first policy's world, at each policy's camera size

        def frames_for(p) -> dict:
            size = p.env_kwargs.get("render_size")
            if repr(size) not in rendered:  # the same episode for every row (other settings change its timeline)
                kwargs = dict(spec.env_kwargs, render_size=size) if size is not None else spec.env_kwargs
                picked = {s: saliency.expert_frames(spec.world, s, seed, kwargs, count=1) for s in columns}
                rendered[repr(size)] = {s: frames[0] for s, frames in picked.items() if frames}
            return rendered[repr(size)]

        rows = [(p.name, policy, frames_for(p)) for p, policy in seeing]
        shown = [s for s in rows[0][2] if all(s in own for _, _, own in rows)]
        rows = [(name, policy, {s: own[s] for s in shown}) for name, policy, own in rows]
        saliency.plot_saliency_grid(rows, os.path.join(out_dir, "saliency_grid.png"))  # each figure whole or none
        lines += [
            "VisualBackProp saliency of each policy's camera encoder (first training seed), on the same frames: "
            f"the privileged expert's episode {seed} in each shift shown, at the middle of the episode (rendered at "
            "each policy's own camera size). Bright: the pixels whose activation survives every convolution, i.e. "
            "what reaches the recurrent core; each map is scaled to its own range (the colour bar), so brightness "
            "compares pixels within a map, not maps.",
            "",
            "![saliency grid](saliency_grid.png)",
            "",
        ]
    jobs = plan.jobs
    if seeing and visual:
        spec = seeing[0][0]
        job = next(j for j in jobs if j.policy == spec.name and j.shift == visual[0] and j.episode_seed == seed)
        with atomic_path(os.path.join(out_dir, "saliency_episode.gif")) as tmp:
            _, record = saliency.animate_episode(job, tmp, action_names(job.world))  # not 'lin', 'ang' of torques
        lines += [
            f"`{spec.name}` (training seed {job.training_seed}) driving episode {seed} under `{job.shift}`, camera, "
            f"saliency and actions frame by frame: {example_outcome(record, records)}",
            "",
            "![saliency over an episode](saliency_episode.gif)",
            "",
        ]
    for p, policy in ncp:
        own = [
            j for j in jobs if j.policy == p.name and j.episode_seed == seed and j.training_seed == p.training_seeds[0]
        ]
        shifts = trace_shifts(plan.shifts, policy.camera is not None)
        name = f"neuron_traces_{p.name}.png"
        _, replayed = saliency.plot_neuron_traces(
            [next(j for j in own if j.shift == s) for s in shifts],
            os.path.join(out_dir, name),
            outcome=lambda record: example_outcome(record, records, brief=True),
        )
        outcomes = [f"`{r['shift']}`: {example_outcome(r, records, brief=True)}" for r in replayed]
        differs = any(example_outcome(r, records, brief=True) != r["outcome"] for r in replayed)
        lines += [
            f"Neuron states of `{p.name}` (NCP: inter, command, motor neurons), episode {seed}: "
            + "; ".join(outcomes)
            + (f" ({REPLAY_DIFFERS})." if differs else "."),
            "",
            f"![neurons]({name})",
            "",
        ]
    return lines
