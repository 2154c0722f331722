"""Ship a trained policy: copy it to ``policies/<name>.pt`` and write its model card ``policies/<name>.md``.

The card is Markdown with a YAML front matter that tests and tools read: architecture and parameter counts,
the training command and data, the measured in-distribution success (episodes with env seeds 0..N-1, which
training never uses: its seeds start at 1,000,000), and the ``check`` episodes that
``test/test_shipped_policies.py`` replays. The OOD figures come from the evaluation report and are left
marked as not yet measured until someone fills them in.

    python -m liquid_control.training.model_card --run runs/cfc_ncp_rover --name cfc_ncp_rover --episodes 100
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
from pathlib import Path

import yaml

from liquid_control.paths import policies_dir
from liquid_control.policy import load_policy, save_policy

from .trainer import make_env

OOD_NOT_MEASURED = "NOT YET MEASURED - fill in from the evaluation report (liquid-control eval)"


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def read_card(path: str | Path) -> dict:
    """The YAML front matter of a model card."""
    text = Path(path).read_text()
    if not text.startswith("---\n"):
        raise ValueError(f"{path}: a model card starts with a YAML front matter ('---')")
    try:
        front = text[4 : text.index("\n---\n", 4)]
    except ValueError:
        raise ValueError(f"{path}: the YAML front matter is not closed by '---'") from None
    return yaml.safe_load(front)


def _describe_core(core: dict) -> str:
    kind = {
        "cfc": "CfC",
        "ltc": "LTC",
        "ctrnn": "CT-RNN",
        "gru_ode": "GRU-ODE",
        "lstm": "LSTM",
        "gru": "GRU",
        "tcn": "temporal convolution",
        "mlp": "frame-stack MLP",
    }[core["type"]]
    wiring = " with an NCP wiring (AutoNCP)" if core["wiring"] == "ncp" else ""
    extra = ""
    if core["type"] == "ltc":
        extra = f", solver {core['solver']} x{core['unfolds']}"
    elif core["type"] == "cfc":
        extra = f", mode {core['mode']}" + (f", backbone {core['backbone_units']}" if core["backbone_units"] else "")
    elif core["type"] in ("ctrnn", "gru_ode"):
        extra = f", {core['unfolds']} exponential sub-steps"
    elif core["type"] in ("mlp", "tcn"):
        extra = f", {core['frames']} frames"
    dt = "constant dt = 1 (dt ignored)" if core["ignore_dt"] else "the measured dt of each update"
    use = "integrates" if core["type"] in ("cfc", "ltc", "ctrnn", "gru_ode") else "takes as an input feature"
    return f"{kind}{wiring}, {core['units']} units{extra}; {use} {dt}"


def write_card(
    name: str,
    run_dir: Path,
    episodes: int,
    check_episodes: int,
    out_dir: Path,
    machine_note: str,
    command: str | None = None,
) -> Path:
    run_dir = Path(run_dir)
    policy = load_policy(run_dir / "policy.pt")
    meta = dict(policy.metadata)
    cfg = policy.config
    env = make_env(cfg)
    try:
        from liquid_control.policy import PolicyAgent

        from .data import rollout

        agent = PolicyAgent(policy)
        outcomes = [rollout(env, agent, beta=0.0, seed=s, record=False).success for s in range(episodes)]
    finally:
        env.close()
    wins = int(sum(outcomes))
    check_seeds = list(range(check_episodes))
    check_success = float(sum(outcomes[:check_episodes]) / check_episodes)
    low, high = wilson_interval(wins, episodes)
    t = cfg["training"]
    card = {
        "name": name,
        "file": f"{name}.pt",
        "world": cfg["world"],
        "architecture": {
            "core": _describe_core(cfg["core"]),
            "camera_encoder": (
                None
                if cfg["observation"]["image"] is None
                else f"CNN {cfg['encoder']['camera']['channels']} channels, kernels "
                f"{cfg['encoder']['camera']['kernel_sizes']}, strides {cfg['encoder']['camera']['strides']}"
                f" -> {cfg['encoder']['camera']['features']} features on "
                f"{cfg['observation']['image']['height']}x{cfg['observation']['image']['width']} RGB"
            ),
            "vector_inputs": dict(cfg["observation"]["vectors"]),
            "parameters": policy.num_parameters(),
            "core_parameters": sum(p.numel() for p in policy.core.parameters()),
            "action": (
                f"{cfg['action']['kind']} {cfg['action']['size']}-d in "
                f"[{cfg['action']['low']}, {cfg['action']['high']}]"
            ),
        },
        "training": {
            "command": command
            or meta.get("command")
            or f"liquid-control train --config policies/configs/{cfg['name']}.yaml "
            f"--out runs/{name} --seed {meta.get('seed', 0)}",
            "seed": meta.get("seed"),
            "data": (
                f"{t['demonstrations']} expert demonstrations + {t['dagger_rounds']} DAgger rounds x "
                f"{t['dagger_episodes']} episodes (beta {t['beta']}), training distribution "
                f"'{t['shift'] or 'default'}', augmentation {t['augmentation'] or 'off'}"
            ),
            "selected_round": meta.get("selected_round"),
            "wall_clock_s": meta.get("training_wall_s"),
            "machine": machine_note,
        },
        "in_distribution": {
            "success": round(wins / episodes, 4),
            "episodes": episodes,
            "ci95": [round(low, 4), round(high, 4)],
            "episode_seeds": f"0..{episodes - 1}",
        },
        "check": {"seeds": check_seeds, "min_success": check_success},
        "ood": OOD_NOT_MEASURED,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    save_policy(out_dir / f"{name}.pt", policy, {**meta, "name": name, "in_distribution_success": wins / episodes})
    body = f"""# {name}

{cfg.get("description") or ""}

- **Architecture**: {card["architecture"]["core"]}; {card["architecture"]["parameters"]} parameters
  ({card["architecture"]["core_parameters"]} in the recurrent core).
- **Training**: `{card["training"]["command"]}` — {card["training"]["data"]}.
  Wall clock {card["training"]["wall_clock_s"]} s on {machine_note}.
- **In-distribution success**: {wins}/{episodes} = {wins / episodes:.0%} (95% CI {low:.0%}-{high:.0%}),
  env seeds 0..{episodes - 1}, measured by `python -m liquid_control.training.model_card`.
- **OOD**: {OOD_NOT_MEASURED}.

The front matter above is read by `test/test_shipped_policies.py`, which replays the `check` episodes.
"""
    path = out_dir / f"{name}.md"
    path.write_text("---\n" + yaml.safe_dump(card, sort_keys=False) + "---\n\n" + body)
    return path


def ood_section(results_path: str | Path, policy: str, reference: str = "in_distribution") -> dict:
    """The card's ``ood`` entry from an evaluation's ``results.json`` (``liquid-control eval``): success per
    shift with a 95% Wilson interval, and the change from ``reference`` on the same episode seeds (paired)."""
    import json

    records = [r for r in json.loads(Path(results_path).read_text()) if r["policy"] == policy]
    if not records:
        raise ValueError(f"{results_path}: no episodes of policy {policy!r}")
    by_shift: dict[str, dict[int, bool]] = {}
    for r in records:
        by_shift.setdefault(r["shift"], {})[int(r["episode_seed"])] = bool(r["success"])
    base = by_shift.get(reference, {})
    out = {}
    for shift, outcomes in by_shift.items():
        wins, n = sum(outcomes.values()), len(outcomes)
        low, high = wilson_interval(wins, n)
        entry = {"success": round(wins / n, 4), "episodes": n, "ci95": [round(low, 4), round(high, 4)]}
        paired = [s for s in outcomes if s in base]
        if shift != reference and paired:
            entry["paired_with_" + reference] = {
                "episodes": len(paired),
                "only_here": sum(outcomes[s] and not base[s] for s in paired),
                "only_" + reference: sum(base[s] and not outcomes[s] for s in paired),
            }
        seeds = sorted(outcomes)
        entry["episode_seeds"] = f"{seeds[0]}..{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) else seeds
        out[shift] = entry
    return {"source": str(results_path), "policy": policy, "shifts": out}


def add_ood(card_path: str | Path, results_path: str | Path, policy: str) -> Path:
    """Fill a card's ``ood`` entry and its **OOD** line from an evaluation (``ood_section``), keeping the rest."""
    card_path = Path(card_path)
    text = card_path.read_text()
    card = read_card(card_path)
    card["ood"] = ood_section(results_path, policy)
    body = text[text.index("\n---\n", 4) + 5 :]
    rows = ["| shift | success (95% CI) | episodes | paired with in-distribution: only here / only in-distribution |"]
    rows.append("| --- | --- | --- | --- |")
    for shift, entry in card["ood"]["shifts"].items():
        pair = entry.get("paired_with_in_distribution")
        rows.append(
            f"| {shift} | {entry['success']:.0%} ({entry['ci95'][0]:.0%}-{entry['ci95'][1]:.0%}) | "
            f"{entry['episodes']} (seeds {entry['episode_seeds']}) | "
            + (f"{pair['only_here']} / {pair['only_in_distribution']} |" if pair else "— |")
        )
    ood_text = (
        f"- **OOD** (`{results_path}`, policy `{policy}`; the same episode seeds under every shift):\n\n"
        + "\n".join(rows)
        + "\n"
    )
    lines = body.split("\n")
    start = next((i for i, line in enumerate(lines) if line.startswith("- **OOD**")), None)
    if start is None:
        body = body.rstrip("\n") + "\n\n" + ood_text
    else:
        end = start + 1
        while end < len(lines) and lines[end].startswith("  "):  # the old entry's continuation lines
            end += 1
        body = "\n".join(lines[:start] + ood_text.rstrip("\n").split("\n") + lines[end:])
    card_path.write_text("---\n" + yaml.safe_dump(card, sort_keys=False) + "---\n" + body)
    return card_path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="training output folder (holds policy.pt)")
    parser.add_argument("--name", required=True, help="shipped name: policies/<name>.pt and policies/<name>.md")
    parser.add_argument("--episodes", type=int, default=100, help="in-distribution episodes to measure (default 100)")
    parser.add_argument(
        "--check-episodes", type=int, default=8, help="first episodes replayed by the shipped-policies test (default 8)"
    )
    parser.add_argument("--out", default=None, help="destination folder (default: the package's policies/)")
    parser.add_argument(
        "--machine",
        default=f"{platform.machine()} CPU, shared with other jobs",
        help="note on the machine the training ran on",
    )
    parser.add_argument(
        "--command",
        default=None,
        help="training command to print on the card (default: the one recorded in the policy)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument(
        "--ood-results",
        default=None,
        help="results.json of a `liquid-control eval` of this policy: fills the card's OOD section",
    )
    parser.add_argument("--ood-policy", default=None, help="the policy's name in --ood-results (default: --name)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)  # several intra-op threads on a busy 2-core machine spin instead of working
    path = write_card(
        args.name,
        Path(args.run),
        args.episodes,
        args.check_episodes,
        Path(args.out) if args.out else policies_dir(),
        args.machine,
        args.command,
    )
    if args.ood_results:
        add_ood(path, args.ood_results, args.ood_policy or args.name)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
