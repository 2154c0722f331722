"""Ship a trained policy: copy it to ``policies/<name>.pt`` (with its ONNX export ``<name>.onnx``) and write its
model card ``policies/<name>.md``.

The card is Markdown with a YAML front matter that tests and tools read: architecture and parameter counts,
the training command and data, the measured in-distribution success (episodes with env seeds 0..N-1, which
training never uses: its seeds start at 1,000,000), and the ``check`` episodes that
``test/test_shipped_policies.py`` replays. The OOD figures come from the evaluation report and are left
marked as not yet measured until someone fills them in.

Closed-loop episodes are chaotic: the compiled kernels and the torch loops (``LIQUID_CONTROL_NATIVE=0``) round
differently in the last bit, and that flips some episodes. The in-distribution episodes therefore run on both
kernel paths (two processes); the card states which path produced its headline figure, the other path's figure
and how many episodes differ. The check is a rate, not a count: it fails only when the observed successes are
implausible (probability below ``check.false_alarm``) for a policy as good as the lower 95% bound of the card.

    python -m liquid_control.training.model_card --run runs/cfc_ncp_rover --name cfc_ncp_rover --episodes 100
    python -m liquid_control.training.model_card --refresh cfc_ncp_rover --out /tmp/cards   # re-measure a shipped one
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from liquid_control.paths import policies_dir
from liquid_control.policy import load_policy, save_policy
from liquid_control.policy.config import CONTINUOUS_CORES
from liquid_control.runtime.backends import checkpoint_sha256
from liquid_control.runtime.export import export_onnx

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


CHECK_FALSE_ALARM = 1e-3  # probability that a correct build fails the shipped-policy check
NATIVE_ENV = "LIQUID_CONTROL_NATIVE"


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p)."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(0, k + 1))


def min_check_successes(n: int, reference: float, false_alarm: float = CHECK_FALSE_ALARM) -> int:
    """The fewest successes out of ``n`` that a policy succeeding at rate ``reference`` reaches with probability
    at least ``1 - false_alarm``: fewer is implausible for a correct build, so the check fails only then."""
    k = 0
    while k < n and binomial_cdf(k, n, reference) < false_alarm:
        k += 1
    return k


def kernel_path(ran: list | None = None) -> str:
    """The kernel path of this process, as the card names it; ``ran``: the ``(core, purpose, backend)`` that
    ``cells.kernels.recording()`` saw while the policy drove (a core without compiled kernels runs torch)."""
    from liquid_control.cells import native

    if native.load() is None:
        return f"torch ({NATIVE_ENV}=0)"
    if ran is not None and not any(backend == "compiled" for _, _, backend in ran):
        return f"torch (this core has no compiled kernel; {NATIVE_ENV} changes nothing)"
    flags = ""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        pass
    simd = "AVX-512" if " avx512f" in flags else ("AVX2/FMA, no AVX-512" if " avx2" in flags else "no AVX2")
    return f"compiled kernels ({platform.machine()}, {simd})"


def measure_outcomes(policy_path: str | Path, episodes: int, progress: bool = False) -> list[bool]:
    """Success of each in-distribution episode (env seeds 0..episodes-1) of the policy alone, in this process."""
    from tqdm import tqdm

    from liquid_control.policy import PolicyAgent

    from .data import rollout

    policy = load_policy(policy_path)
    env = make_env(policy.config)
    agent = PolicyAgent(policy)
    try:
        seeds = tqdm(range(episodes), desc=Path(policy_path).stem, disable=not progress, file=sys.stderr)
        return [bool(rollout(env, agent, beta=0.0, seed=s, record=False).success) for s in seeds]
    finally:
        env.close()


def measure_both_paths(
    policy_path: str | Path, episodes: int, threads: int = 1, cache: Path | None = None
) -> dict[str, dict]:
    """Outcomes on the compiled and on the torch kernel path, two processes side by side:
    ``{"compiled"|"torch": {"kernel_path": str, "outcomes": [bool]}}``. With ``cache`` (a folder) each
    path's outcomes are kept in ``<policy>.<path>.<episodes>.json`` and reused (the same file, bit for bit)."""
    digest = checkpoint_sha256(policy_path)

    def one(native: str) -> dict:
        stored = None
        if cache is not None:
            stored = (
                Path(cache) / f"{Path(policy_path).stem}.{'compiled' if native == '1' else 'torch'}.{episodes}.json"
            )
            if stored.is_file():
                data = json.loads(stored.read_text())
                if data.get("sha256") == digest:
                    return data
        env = dict(os.environ, **{NATIVE_ENV: native})
        argv = [
            sys.executable,
            "-m",
            "liquid_control.training.model_card",
            "--outcomes",
            str(policy_path),
            "--episodes",
            str(episodes),
        ]
        argv += ["--threads", str(threads)]
        done = subprocess.run(argv, env=env, stdout=subprocess.PIPE, text=True, check=True)
        data = dict(json.loads(done.stdout.strip().splitlines()[-1]), sha256=digest)
        if stored is not None:
            stored.parent.mkdir(parents=True, exist_ok=True)
            stored.write_text(json.dumps(data))
        return data

    with ThreadPoolExecutor(2) as pool:
        compiled, torch_path = pool.map(one, ["1", "0"])
    return {"compiled": compiled, "torch": torch_path}


def in_distribution_section(measured: dict[str, dict], primary: str, episodes: int) -> dict:
    """The card's ``in_distribution`` entry: the ``primary`` path's figure, the other path's, what differs."""
    other = "torch" if primary == "compiled" else "compiled"
    first, second = measured[primary]["outcomes"], measured[other]["outcomes"]
    wins, other_wins = sum(first), sum(second)
    low, high = wilson_interval(wins, episodes)
    other_low, other_high = wilson_interval(other_wins, episodes)
    differ = [seed for seed, (a, b) in enumerate(zip(first, second)) if a != b]
    return {
        "success": round(wins / episodes, 4),
        "episodes": episodes,
        "ci95": [round(low, 4), round(high, 4)],
        "episode_seeds": f"0..{episodes - 1}",
        "kernel_path": measured[primary]["kernel_path"],
        "other_kernel_path": {
            "kernel_path": measured[other]["kernel_path"],
            "success": round(other_wins / episodes, 4),
            "ci95": [round(other_low, 4), round(other_high, 4)],
            "episodes_that_differ": len(differ),
            "seeds_that_differ": differ,
        },
    }


def check_section(measured: dict[str, dict], check_episodes: int, in_distribution: dict) -> dict:
    """The ``check`` entry: seeds, the reference rate (lower 95% bound of the worse path) and the threshold."""
    worse = min(in_distribution["ci95"][0], in_distribution["other_kernel_path"]["ci95"][0])
    return {
        "seeds": list(range(check_episodes)),
        "reference_success": worse,
        "false_alarm": CHECK_FALSE_ALARM,
        "min_successes": min_check_successes(check_episodes, worse),
        "successes": {path: int(sum(m["outcomes"][:check_episodes])) for path, m in measured.items()},
    }


def in_distribution_text(card: dict) -> str:
    """The card body's in-distribution bullet (what the front matter says, for a human)."""
    ind, check = card["in_distribution"], card["check"]
    other = ind["other_kernel_path"]
    n, wins = ind["episodes"], round(ind["success"] * ind["episodes"])
    other_wins = round(other["success"] * n)
    return (
        f"- **In-distribution success**: {wins}/{n} = {ind['success']:.0%} (95% CI {ind['ci95'][0]:.0%}-"
        f"{ind['ci95'][1]:.0%}) with {ind['kernel_path']}; {other_wins}/{n} = {other['success']:.0%} with "
        f"{other['kernel_path']}: {other['episodes_that_differ']} of {n} episodes change outcome between the two "
        f"kernel paths (last-bit rounding in a chaotic closed loop; other CPUs flip others). Env seeds 0..{n - 1}, "
        f"one training seed, measured by `python -m liquid_control.training.model_card`.\n"
        f"- **Check** (`test/test_shipped_policies.py`): seeds 0..{len(check['seeds']) - 1} must give at least "
        f"{check['min_successes']}/{len(check['seeds'])} successes, the fewest a policy as good as "
        f"{check['reference_success']:.0%} (the lower 95% bound of the worse path) reaches with probability "
        f"{1 - check['false_alarm']:.1%}; here {check['successes']['compiled']} (compiled) and "
        f"{check['successes']['torch']} (torch)."
    )


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
    use = "integrates" if core["type"] in CONTINUOUS_CORES else "takes as an input feature"
    if core.get("max_step") is not None:
        dt += f" (a longer one than {core['max_step']:g} s in sub-steps of at most that, the input held)"
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
    cache: Path | None = None,
) -> Path:
    """Measure a run's policy on both kernel paths, save it as ``<name>.pt`` and write its card ``<name>.md``."""
    run_dir = Path(run_dir)
    policy = load_policy(run_dir / "policy.pt")
    meta = dict(policy.metadata)
    cfg = policy.config
    measured = measure_both_paths(run_dir / "policy.pt", episodes, cache=cache)
    in_distribution = in_distribution_section(measured, "compiled", episodes)
    wins = round(in_distribution["success"] * episodes)
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
        "in_distribution": in_distribution,
        "check": check_section(measured, check_episodes, in_distribution),
        "ood": OOD_NOT_MEASURED,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    shipped = save_policy(
        out_dir / f"{name}.pt", policy, {**meta, "name": name, "in_distribution_success": wins / episodes}
    )
    export_onnx(policy, shipped.with_suffix(".onnx"), source=shipped)  # what the ROS node runs (backend: auto)
    body = f"""# {name}

{cfg.get("description") or ""}

- **Architecture**: {card["architecture"]["core"]}; {card["architecture"]["parameters"]} parameters
  ({card["architecture"]["core_parameters"]} in the recurrent core).
- **Training**: `{card["training"]["command"]}` — {card["training"]["data"]}.
  Wall clock {card["training"]["wall_clock_s"]} s on {machine_note}.
{in_distribution_text(card)}
- **OOD**: {OOD_NOT_MEASURED}.

The front matter above is read by `test/test_shipped_policies.py`, which replays the `check` episodes.
"""
    if append:
        body += "\n" + append.strip() + "\n"
    path = out_dir / f"{name}.md"
    path.write_text("---\n" + yaml.safe_dump(card, sort_keys=False, width=100) + "---\n\n" + body)
    return path


def refresh_card(
    name: str,
    episodes: int,
    check_episodes: int,
    out_dir: Path,
    source_dir: Path | None = None,
    cache: Path | None = None,
) -> Path:
    """Re-measure a shipped policy on both kernel paths and rewrite its card's in-distribution and check
    sections (training, OOD, description and the rest of the text kept; the policy file is not touched)."""
    source_dir = Path(source_dir or policies_dir())
    card_path = source_dir / f"{name}.md"
    card = read_card(card_path)
    text = card_path.read_text()
    body = text[text.index("\n---\n", 4) + 5 :]
    measured = measure_both_paths(source_dir / f"{name}.pt", episodes, cache=cache)
    card["in_distribution"] = in_distribution_section(measured, "compiled", episodes)
    card["check"] = check_section(measured, check_episodes, card["in_distribution"])
    lines, kept, skipping = body.splitlines(), [], False
    for line in lines:  # replace the in-distribution and check bullets (each may wrap onto indented lines)
        if line.startswith("- **In-distribution success**") or line.startswith("- **Check**"):
            if not skipping:
                kept.append(in_distribution_text(card))
            skipping = True
            continue
        if skipping and line.startswith("  "):
            continue
        skipping = False
        kept.append(line)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.md"
    path.write_text("---\n" + yaml.safe_dump(card, sort_keys=False, width=100) + "---\n" + "\n".join(kept) + "\n")
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
        table = end + 1 if end < len(lines) and not lines[end].strip() else end
        if table < len(lines) and lines[table].startswith("|"):  # the old entry's table (refilled cards)
            end = table
            while end < len(lines) and lines[end].startswith("|"):
                end += 1
        body = "\n".join(lines[:start] + ood_text.rstrip("\n").split("\n") + lines[end:])
    card_path.write_text("---\n" + yaml.safe_dump(card, sort_keys=False) + "---\n" + body)
    return card_path


def _check_arguments(parser: argparse.ArgumentParser, args) -> None:
    """``parser.error`` (exit status 2, one line) for a request that would fail after the measurement, or would
    measure nothing: episode counts, a name that is not a file name, a missing run, card or input file."""
    for flag, value in (("--episodes", args.episodes), ("--threads", args.threads)):
        if value < 1:
            parser.error(f"{flag} must be >= 1, got {value}")
    if args.outcomes:  # one kernel path's measurement (a child process of the card's)
        return
    if not 1 <= args.check_episodes <= args.episodes:
        parser.error(f"--check-episodes must be 1..--episodes ({args.episodes}), got {args.check_episodes}")
    for flag, name in (("--name", args.name), ("--refresh", args.refresh)):
        if name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            parser.error(f"{flag} {name!r}: a file name (letters, digits, _ . -): it names <out>/{name}.pt and .md")
    if args.run is not None and not (Path(args.run) / "policy.pt").is_file():
        parser.error(f"--run {args.run}: holds no policy.pt (the folder of a finished `liquid-control train` run)")
    if args.refresh is not None:
        missing = [p for p in (policies_dir() / f"{args.refresh}{ext}" for ext in (".pt", ".md")) if not p.is_file()]
        if missing:
            parser.error(f"--refresh {args.refresh}: no shipped {missing[0]}")
    for flag, path in (("--append", args.append), ("--ood-results", args.ood_results)):
        if path is not None and not Path(path).is_file():
            parser.error(f"{flag} {path}: no such file")


def main(argv=None) -> int:
    """Command line: ship a run (``--run``, ``--name``) or re-measure a shipped card (``--refresh``)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--run", help="training output folder (holds policy.pt): ship it as --name")
    what.add_argument("--refresh", metavar="NAME", help="re-measure the shipped policies/NAME.pt and rewrite its card")
    what.add_argument("--outcomes", metavar="POLICY", help=argparse.SUPPRESS)  # one path's outcomes as JSON
    parser.add_argument("--name", help="shipped name: policies/<name>.pt and policies/<name>.md (with --run)")
    parser.add_argument("--episodes", type=int, default=100, help="in-distribution episodes to measure")
    parser.add_argument(
        "--check-episodes", type=int, default=12, help="first episodes the shipped-policies test replays"
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
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--cache", default=None, help="folder keeping each kernel path's outcomes (reused if present)")
    parser.add_argument(
        "--ood-results",
        default=None,
        help="results.json of a `liquid-control eval` of this policy: fills the card's OOD section",
    )
    parser.add_argument("--ood-policy", default=None, help="the policy's name in --ood-results (default: --name)")
    parser.add_argument("--append", default=None, help="a Markdown file appended to the card (e.g. baselines)")
    args = parser.parse_args(argv)
    _check_arguments(parser, args)  # before minutes of episodes: a bad request ends in a line, not a traceback
    import torch

    torch.set_num_threads(args.threads)  # several intra-op threads on a busy 2-core machine spin instead of working
    if args.outcomes:
        from liquid_control.cells import kernels

        with kernels.recording() as ran:
            outcomes = measure_outcomes(args.outcomes, args.episodes, progress=True)
        print(json.dumps({"kernel_path": kernel_path(ran), "outcomes": outcomes}))
        return 0
    out = Path(args.out) if args.out else policies_dir()
    if args.refresh:
        cache = Path(args.cache) if args.cache else None
        path = refresh_card(args.refresh, args.episodes, args.check_episodes, out, cache=cache)
    else:
        if not args.name:
            parser.error("--run needs --name")
        appendix = Path(args.append).read_text() if args.append else ""
        cache = Path(args.cache) if args.cache else None
        path = write_card(
            args.name,
            Path(args.run),
            args.episodes,
            args.check_episodes,
            out,
            args.machine,
            args.command,
            appendix,
            cache=cache,
        )
    if args.ood_results:
        add_ood(path, args.ood_results, args.ood_policy or args.name or args.refresh)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
