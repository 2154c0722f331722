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
Writes results.json and results.md under --out (by default the repository's docs/dusk_factors, whatever the
current folder).
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
    original = copy.deepcopy(rover.LIGHTINGS["dusk"])
    outcomes: dict[str, dict[str, list[bool]]] = {}
    started = time.monotonic()
    try:
        for label, lighting in variants(rover.LIGHTINGS).items():
            rover.LIGHTINGS["dusk"] = lighting  # the worlds of this process build their MJCF from it
            cpu = time.process_time()
            records = [r for b in make_batches(plan.jobs, 50) for r in run_batch(b, pool=WorldPool())]
            outcomes[label] = {
                n: [bool(r["success"]) for r in sorted(records, key=lambda r: r["episode_seed"]) if r["policy"] == n]
                for n in names
            }
            rates = ", ".join(f"{n} {sum(v) / len(v):.0%}" for n, v in outcomes[label].items())
            print(f"{label}: {rates} ({time.process_time() - cpu:.0f} CPU-s)", flush=True)
    finally:
        rover.LIGHTINGS["dusk"] = original
    out = Path(args.out)
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
    provenance = {
        "command": "python scripts/dusk_factors.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "episodes": args.episodes,
        "episode_seeds": [plan.jobs[0].episode_seed, plan.jobs[0].episode_seed + args.episodes - 1],
        "wall_s": round(time.monotonic() - started, 1),
    }
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
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    from liquid_control.processes import exit_status_of

    sys.exit(exit_status_of("dusk_factors.py", main))
