"""Why do the rover policies fail at dusk? A test-time diagnostic: the `dusk` lighting taken apart.

    python scripts/dusk_factors.py [--episodes 100] [--policy cfc_ncp_rover_robust --policy cfc_ncp_rover]
                                   [--out docs/dusk_factors]

The dusk preset differs from noon in four things (sim_envs/rover.py, LIGHTINGS): the sun's direction (low,
grazing: (-1, 0.4, -0.25) against noon's near-vertical (0.3, 0.2, -1)), the sun's colour and strength
(diffuse), the ambient light and the sky (purple above an orange horizon). Each variant below swaps some of
them for noon's, everything else of the world unchanged, and the same episodes (the evaluation seeds
20,000,000 on, as in the model cards' paired checks) are driven by each policy in the batched evaluation.
Nothing is trained here and no variant reaches training: it says which part of dusk a policy trips on, and
so what a robustness recipe would have to cover. Paired McNemar p-values are against `dusk` itself.
Writes results.json (its provenance: command, commit, machine, start, wall and CPU time, all the script's own)
and results.md under --out (by default the repository's docs/dusk_factors, whatever the current folder). Each
variant's outcomes are kept in --out/variants.partial.json as it finishes: after a Ctrl-C the same command
continues from them (the file goes once results.json is written).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MUJOCO_GL", "egl")


def variants(lightings: dict) -> dict[str, dict]:
    """Name -> lighting (the keys of sim_envs.rover.LIGHTINGS entries), dusk taken apart factor by factor."""
    dusk, noon = copy.deepcopy(lightings["dusk"]), copy.deepcopy(lightings["noon"])

    def grey(colour):
        return (sum(colour) / 3.0,) * 3

    return {
        "dusk": dusk,
        "dusk, noon sky": {**dusk, "sky": noon["sky"]},
        "dusk, noon sun direction": {**dusk, "dir": noon["dir"]},
        "dusk, grey sun and ambient (same mean)": {
            **dusk,
            "diffuse": grey(dusk["diffuse"]),
            "ambient": grey(dusk["ambient"]),
        },
        "dusk, noon sun and ambient (colour and strength)": {
            **dusk,
            "diffuse": noon["diffuse"],
            "ambient": noon["ambient"],
        },
        "noon, dusk sky": {**noon, "sky": dusk["sky"]},
        "noon": noon,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=100, help="paired episodes per variant (default 100)")
    parser.add_argument(
        "--policy", action="append", help="shipped rover policy name (default: cfc_ncp_rover_robust, cfc_ncp_rover)"
    )
    parser.add_argument(
        "--out",
        default=str(ROOT / "docs" / "dusk_factors"),  # the repository's, from any folder
        help="folder for results.json and results.md (default: docs/dusk_factors of the repository)",
    )
    args = parser.parse_args(argv)
    import torch

    import sim_envs.rover as rover
    from liquid_control.atomic_file import atomic_write
    from liquid_control.evaluation.batched import WorldPool, make_batches, run_batch
    from liquid_control.evaluation.plan import EvaluationSetupError, build_plan
    from liquid_control.paths import output_file_problem, policies_dir
    from liquid_control.stats import mcnemar_exact_p, wilson_interval

    problem = output_file_problem(Path(args.out) / "results.json", "results.json")  # before the episodes
    if problem:
        parser.error(f"--out {args.out}: {problem}")
    torch.set_num_threads(1)
    names = args.policy or ["cfc_ncp_rover_robust", "cfc_ncp_rover"]
    try:
        plan = build_plan([f"{n}={policies_dir() / (n + '.pt')}" for n in names], ["dusk"], args.episodes)
    except EvaluationSetupError as exc:  # --episodes 0, a policy not shipped
        parser.error(str(exc))
    from liquid_control.evaluation import provenance as provenance_record
    from liquid_control.paths import code_commit

    out = Path(args.out)
    partial = out / "variants.partial.json"  # the finished variants (before: a Ctrl-C after 6 of 7 kept none)
    request = {"episodes": args.episodes, "policies": names, "episode_seed": plan.jobs[0].episode_seed}
    kept = {"request": request, "outcomes": {}, "wall_s": 0.0, "cpu_s": 0.0, "started": time.time()}
    kept["commit"] = code_commit()
    if partial.is_file():
        try:
            kept = json.loads(partial.read_text())
            same = kept["request"] == request
        except (OSError, ValueError, KeyError, TypeError) as exc:
            parser.error(f"--out {args.out}: {partial} is unreadable ({exc}); remove it to start again")
        if not same:
            parser.error(
                f"--out {args.out}: {partial} holds the variants of another request ({kept['request']}); give its "
                "--episodes and --policy to continue it, or remove it to start again"
            )
    outcomes: dict[str, dict[str, list[bool]]] = kept["outcomes"]
    started, cpu_started = time.monotonic(), time.process_time()

    def sitting() -> tuple[float, float]:
        return kept["wall_s"] + time.monotonic() - started, kept["cpu_s"] + time.process_time() - cpu_started

    original = copy.deepcopy(rover.LIGHTINGS["dusk"])
    try:
        for label, lighting in variants(rover.LIGHTINGS).items():
            if label in outcomes:
                print(f"{label}: kept from {partial}", flush=True)
                continue
            rover.LIGHTINGS["dusk"] = lighting  # the worlds of this process build their MJCF from it
            cpu = time.process_time()
            records = [r for b in make_batches(plan.jobs, 50) for r in run_batch(b, pool=WorldPool())]
            outcomes[label] = {
                n: [bool(r["success"]) for r in sorted(records, key=lambda r: r["episode_seed"]) if r["policy"] == n]
                for n in names
            }
            rates = ", ".join(f"{n} {sum(v) / len(v):.0%}" for n, v in outcomes[label].items())
            print(f"{label}: {rates} ({time.process_time() - cpu:.0f} CPU-s)", flush=True)
            wall_s, cpu_s = sitting()
            with atomic_write(partial, "w") as handle:  # whole or not at all, also on Ctrl-C
                handle.write(json.dumps({**kept, "outcomes": outcomes, "wall_s": wall_s, "cpu_s": cpu_s}) + "\n")
    except KeyboardInterrupt:
        total = len(variants(rover.LIGHTINGS))
        kept_text = f"{len(outcomes)} of {total} variants kept in {partial}" if outcomes else "no variant finished"
        print(f"dusk_factors.py: interrupted: {kept_text}; the same command continues", file=sys.stderr)
        return 130
    finally:
        rover.LIGHTINGS["dusk"] = original
    rows = []
    for label, by_policy in outcomes.items():
        row = {"variant": label, "lighting": variants(rover.LIGHTINGS)[label]}
        for n, wins in by_policy.items():
            base = outcomes["dusk"][n]
            only_here = sum(a and not b for a, b in zip(wins, base))
            only_dusk = sum(b and not a for a, b in zip(wins, base))
            low, high = wilson_interval(sum(wins), len(wins))
            row[n] = {
                "success": sum(wins) / len(wins),
                "ci95": [low, high],
                "pairs_only_here_only_dusk": [only_here, only_dusk],
                "mcnemar_p_vs_dusk": mcnemar_exact_p(only_here, only_dusk),
            }
        rows.append(row)
    wall_s, cpu_s = sitting()
    provenance = provenance_record.collect(  # written by the script (before: commit, machine and date by hand)
        "python scripts/dusk_factors.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        kept["started"],
        wall_s,
        kept["commit"],
        cpu_time_s=round(cpu_s, 1),
        episodes=args.episodes,
        episode_seeds=[plan.jobs[0].episode_seed, plan.jobs[0].episode_seed + args.episodes - 1],
    )
    with atomic_write(out / "results.json", "w") as handle:  # whole or not at all, also on Ctrl-C
        handle.write(json.dumps({"provenance": provenance, "rows": rows}, indent=1) + "\n")
    lines = [
        "| variant | " + " | ".join(names) + " |",
        "| --- | " + " | ".join("---" for _ in names) + " |",
    ]
    for row in rows:
        cells = []
        for n in names:
            r = row[n]
            cell = f"{r['success']:.0%} [{r['ci95'][0]:.0%}, {r['ci95'][1]:.0%}]"
            if row["variant"] != "dusk":
                a, b = r["pairs_only_here_only_dusk"]
                cell += f"; {a} / {b}, p = {r['mcnemar_p_vs_dusk']:.2g}"
            cells.append(cell)
        lines.append(f"| {row['variant']} | " + " | ".join(cells) + " |")
    with atomic_write(out / "results.md", "w") as handle:
        handle.write("\n".join(lines) + "\n")
    partial.unlink(missing_ok=True)  # the results hold it all now
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    from liquid_control.processes import exit_status_of

    sys.exit(exit_status_of("dusk_factors.py", main))
