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
    kind = {"cfc": "CfC", "ltc": "LTC", "lstm": "LSTM", "gru": "GRU", "mlp": "frame-stack MLP"}[core["type"]]
    wiring = " with an NCP wiring (AutoNCP)" if core["wiring"] == "ncp" else ""
    extra = ""
    if core["type"] == "ltc":
        extra = f", solver {core['solver']} x{core['unfolds']}"
    elif core["type"] == "cfc":
        extra = f", mode {core['mode']}" + (f", backbone {core['backbone_units']}" if core["backbone_units"] else "")
    elif core["type"] == "mlp":
        extra = f", {core['frames']} frames"
    dt = "constant dt = 1 (dt ignored)" if core["ignore_dt"] else "the measured dt of each update"
    use = "integrates" if core["type"] in ("cfc", "ltc") else "takes as an input feature"
    return f"{kind}{wiring}, {core['units']} units{extra}; {use} {dt}"


def write_card(
    name: str,
    run_dir: Path,
    episodes: int,
    check_episodes: int,
    out_dir: Path,
    machine_note: str,
    command: str | None = None,
    append: str = "",
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
    if append:
        body += "\n" + append.strip() + "\n"
    path = out_dir / f"{name}.md"
    path.write_text("---\n" + yaml.safe_dump(card, sort_keys=False) + "---\n\n" + body)
    return path


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
    parser.add_argument("--append", default=None, help="a Markdown file appended to the card (e.g. baselines)")
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
        Path(args.append).read_text() if args.append else "",
    )
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
