"""Helpers of scripts/bag_loop.sh: the DDS replay check and the summary of the loop's figures.

python scripts/bag_loop.py missing BAGS --seed S --episodes N   # the episodes a (re)run still records there
python scripts/bag_loop.py replay --policy RUN/policy.pt --bag BAG --out DIR
python scripts/bag_loop.py summary --out OUT [--seconds S] [--settings "KEY=VALUE ..."]
python scripts/bag_loop.py publish --out OUT --to docs/bag_loop
python scripts/bag_loop.py compare OUT1 OUT2 ... [--figure runs.png]
python scripts/bag_loop.py rounds OUT_SEED0 OUT_SEED1 ... [--figure rounds.png]   # after scripts/takeover_rounds.sh
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import yaml


def replay_node_settings(backend, node_params: str | None) -> tuple[tuple[str, ...], dict]:
    """The parameter files and parameters policy_node replays with: those the offline commands are computed with
    (``match_replayed``, as ``eval --bag``): ``node_params`` where given; else the world's shipped file (none for a
    policy this process cannot load: the node says why), over it the data settings a policy trained from bags
    recorded (its robot's topics, action_scale and limits). Before, the rover's file was always given: a policy of
    another robot replayed with the rover's topics and limits."""
    from liquid_control.bags.messages import SENSOR_TYPES
    from liquid_control.bags.stream import default_node_parameters_file, trained_node_parameters
    from liquid_control.conventions.training_record import DATA_LIMITS, DATA_SPEC_KEY

    if node_params:
        return (str(node_params),), {}
    if backend is None:
        return (), {}
    shipped = default_node_parameters_file(backend.config.get("world"))
    files = (str(shipped),) if shipped else ()
    record = backend.training_record.get(DATA_SPEC_KEY)
    if record is None:
        return files, {}
    values = trained_node_parameters(record, backend.spec)
    keys = [SENSOR_TYPES[s][1] for s in backend.spec.sensors if s in SENSOR_TYPES]
    keys += ["action_scale", *DATA_LIMITS] + (["joint_names"] if "wheels" in backend.spec.sensors else [])
    return files, {key: values[key] for key in keys}


def episodes_to_record(folder: str | Path, seed: int, episodes: int) -> list[tuple[int, int]]:
    """The runs (first seed, count) of the episodes ``seed`` .. ``seed + episodes - 1`` that ``folder`` has no bag
    of: what bag_loop.sh records there, so a rerun completes an interrupted recording (before, a folder that
    existed was kept as it was: a loop stopped after 2 of 6 training episodes trained on those 2 without a word).
    A bag a killed recording left unfinished (no metadata.yaml, e.g. a 0-byte episode_103 after SIGKILL) is a
    ValueError naming it as the one to delete: training would refuse it later."""
    from liquid_control.bags.recording import episode_bag_name, existing_episode_seeds, unfinished_bag

    folder = Path(folder)
    existing = existing_episode_seeds(folder)
    cut = [folder / episode_bag_name(s) for s in sorted(existing) if unfinished_bag(folder / episode_bag_name(s))]
    if cut:
        which = ("it", "that episode") if len(cut) == 1 else ("them", "those episodes")
        raise ValueError(
            f"{', '.join(map(str, cut))}: unfinished (no metadata.yaml: the recording was killed); delete "
            f"{which[0]} and rerun to record {which[1]} again"
        )
    runs: list[tuple[int, int]] = []
    for s in range(seed, seed + episodes):
        if s in existing:
            continue
        if runs and runs[-1][0] + runs[-1][1] == s:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((s, 1))
    return runs


class ReplayInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGTERM: ``terminated``) stopped the replay: its commands, cut short, were not compared."""

    def __init__(self, message: str, terminated: bool = False):
        super().__init__(message)
        self.terminated = terminated


def _set_aside(bag: Path, why: str) -> Path:
    """``bag`` renamed to ``<name>.<why>_<n>`` beside it (the first n free): kept, and out of the way of a rerun."""
    n = 1
    while bag.with_name(f"{bag.name}.{why}_{n}").exists():
        n += 1
    return bag.rename(bag.with_name(f"{bag.name}.{why}_{n}"))


def replay_check(policy: str, bag: str, out: str, rate: float = 2.0, node_params: str | None = None) -> dict:
    """policy_node (own process, isolated ROS domain) + ``liquid-control replay`` of ``bag``; the recorded
    commands are matched by stamp to the same policy's commands computed offline on the bag, the node and the offline
    run given the same settings (``replay_node_settings``). A policy whose commands cannot be matched so
    (``replay_comparison_problem``) is a ValueError saying why, before anything runs.

    The commands are recorded into ``out/commands``. A replay that Ctrl-C (SIGTERM) stopped raises ReplayInterrupted,
    its commands moved to ``commands.interrupted_<n>`` (none recorded: removed) and no replay.json written; a
    ``commands`` left without replay.json (a killed or failed replay) is moved to ``commands.unfinished_<n>``. Before,
    the partial replay was compared and written as the result ('50/114 commands matched', exit 0), or its bag made
    every rerun fail ('commands: already exists')."""
    from liquid_control.evaluation.offline import match_replayed, replay_comparison_problem
    from liquid_control.ros.replay import add_arguments, replay
    from liquid_control.ros.testing import isolated_ros_env, start_node_process, stop_process
    from liquid_control.runtime.backends import BackendError, load_backend

    if node_params and not Path(node_params).is_file():  # else the node fails at start-up, after the set-up
        raise ValueError(f"--node-params {node_params}: no such file")
    node_params = str(Path(node_params).resolve()) if node_params else None  # the node runs in another folder
    try:
        backend = load_backend(policy, warn=False)
    except BackendError:  # the node says why, in its log, at start-up
        backend = None
    try:
        if backend is not None:
            problem = replay_comparison_problem(backend, policy)
            if problem:
                raise ValueError(problem)
        params_files, settings = replay_node_settings(backend, node_params)
    finally:
        if backend is not None:
            backend.close()
    out_dir = Path(out)
    commands = out_dir / "commands"
    if commands.exists():
        if (out_dir / "replay.json").is_file():  # a finished replay: its figures are not replaced
            raise ValueError(f"{out_dir} holds a finished replay (replay.json, commands): give another --out")
        earlier = _set_aside(commands, "unfinished")
        print(
            f"bag_loop.py replay: {commands} (no replay.json: that replay did not finish) moved to {earlier}",
            file=sys.stderr,
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    env = isolated_ros_env()
    node = start_node_process(
        "liquid_control.ros.policy_node",
        "policy_node",
        dict(
            policy=str(Path(policy).resolve()),
            autostart=True,
            command_type="twist_stamped",
            sensor_qos_reliability="reliable",
            camera_qos_depth=100,
            imu_qos_depth=1000,
            max_command=[100.0, 100.0],
            max_command_rate=[float("inf")] * 2,  # no rate limit (a finite one holds a command at one clock reading)
            watchdog_timeout_s=1000.0,  # waiting for the replay must not make the node stale
            command_topic="/cmd_vel",  # where the replay records and match_replayed reads, whatever the file says
            **settings,
        ),
        env,
        log_path=out_dir / "policy_node.log",
        params_files=params_files,  # the package's (from any working directory), or --node-params resolved
    )

    def node_gone() -> str | None:
        """Why the policy node will never come (its process ended at start-up: its log's last lines), else None."""
        if node.poll() is None:
            return None
        log = out_dir / "policy_node.log"
        lines = log.read_text(errors="replace").strip().splitlines()[-20:] if log.is_file() else []
        return f"policy_node exited (status {node.returncode}) before the replay began; {log}:\n" + "\n".join(lines)

    import os

    saved = dict(os.environ)
    os.environ.update(env)
    try:
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        args = parser.parse_args([bag, "-o", str(commands), "--rate", str(rate), "--domain-id", env["ROS_DOMAIN_ID"]])
        t0 = time.monotonic()
        result = replay(args, gone=node_gone)
        result["wall_s"] = round(time.monotonic() - t0, 2)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        stop_process(node)
    if result.get("interrupted"):  # replay() caught the Ctrl-C and finished the bag: what it holds is cut short
        recorded, output = sum(result["recorded"].values()), Path(result["output"])
        if recorded:
            kept = f"the {recorded} command(s) recorded until then are in {_set_aside(output, 'interrupted')}"
        else:
            import shutil

            shutil.rmtree(output, ignore_errors=True)
            kept = "no command was recorded"
        raise ReplayInterrupted(
            f"interrupted {result['interrupted']}; {kept}, not compared, no replay.json written: a rerun replays "
            "the bag again",
            terminated=bool(result.get("terminated")),
        )
    result.update(match_replayed(policy, bag, result["output"], {"node_params": node_params}), rate=rate)
    (out_dir / "replay.json").write_text(json.dumps(result, indent=1))
    return result


def _noise_text(noise: dict | None, margin: float | None = None) -> str:
    """The training bags' noise, and the expert's clearance where it was not the training expert's."""
    from sim_envs.experts import SAFETY_MARGIN

    if not noise or not (noise.get("std") or noise.get("burst_rate")):
        text = "none (clean demonstrations)"
    else:
        text = f"std {noise['std']} (action units), correlation {noise['correlation']}"
    if noise and noise.get("burst_rate"):
        text += f", {noise['burst_rate']} swerves/s of {noise['burst_s']} s"
    if margin is not None and margin != SAFETY_MARGIN:
        text += f"; expert margin {margin} m (default {SAFETY_MARGIN})"
    return text


def summary(out: str, seconds: float | None = None, settings: str = "") -> dict:
    """The loop's figures from its output folder -> summary.md / summary.json."""
    root = Path(out)
    figures: dict = {}
    bags = {}
    for kind in ("train", "validation", "test"):
        statuses = []
        for bag in sorted((root / "bags" / kind).glob("episode_*")):
            from liquid_control.bags import BagReader

            with BagReader(bag) as reader:
                for msg in reader.messages(["/episode_status"]):
                    statuses.append(json.loads(msg.decode().data))
        bags[kind] = {
            "bags": len(statuses),
            "expert_success": sum(s["success"] for s in statuses),
            "seconds": round(sum(s["sim_time"] for s in statuses), 1),
            "seeds": [s["seed"] for s in statuses],
            "noise": statuses[0].get("noise") if statuses else None,  # the same for every bag of a kind
            "expert_margin": statuses[0].get("expert_margin") if statuses else None,  # None: before it was recorded
        }
    figures["bags"] = bags
    from liquid_control.policy import load_policy
    from liquid_control.stats import wilson_interval

    meta = load_policy(root / "run" / "policy.pt").metadata
    figures["training"] = {
        k: meta.get(k)
        for k in ("training_wall_s", "selected_epoch", "validation_loss", "training_updates", "recorded_seconds")
    }
    figures["training"]["command"] = meta.get("command")
    offline = json.loads((root / "offline" / "offline.json").read_text())["policies"]["bags"]["overall"]
    figures["offline_test_bags"] = offline
    records = json.loads((root / "sim" / "results.json").read_text())
    sim = {}
    for name in sorted({r["policy"] for r in records}):
        rows = [r for r in records if r["policy"] == name]
        k = sum(bool(r["success"]) for r in rows)
        seeds = sorted(int(r["episode_seed"]) for r in rows)
        sim[name] = {
            "success": k,
            "episodes": len(rows),
            "ci95": wilson_interval(k, len(rows)),
            "seeds": [seeds[0], seeds[-1]],
        }
    figures["simulated_episodes"] = sim
    replay_file = root / "replay" / "replay.json"
    if replay_file.is_file():
        figures["replay"] = json.loads(replay_file.read_text())
    earlier = root / "summary.json"
    if seconds is not None and earlier.is_file():
        # a rerun that found the loop finished (same settings, bag_loop.sh checks) only rebuilds the summary: the
        # wall time stays that of the loop that made the results (before: the rerun's own ~60 s replaced it)
        seconds = json.loads(earlier.read_text()).get("loop_wall_s", seconds)
    if seconds is not None:
        figures["loop_wall_s"] = seconds
    if settings:
        figures["command"] = f"{settings} scripts/bag_loop.sh"
    (root / "summary.json").write_text(json.dumps(figures, indent=1))
    b = bags
    lines = [
        "# Bag loop: record -> train from bags -> offline check -> simulated episodes -> DDS replay",
        "",
        f"- recorded expert bags: train {b['train']['bags']} ({b['train']['seconds']} s, expert success "
        f"{b['train']['expert_success']}/{b['train']['bags']}, seeds {b['train']['seeds'][:1]}..), validation "
        f"{b['validation']['bags']}, test {b['test']['bags']}",
        f"- noise injected into the executed command of the training bags (DART; labels: the expert's clean "
        f"command): {_noise_text(b['train']['noise'], b['train']['expert_margin'])}",
        f"- training: {figures['training']['training_updates']} labelled updates, "
        f"{figures['training']['training_wall_s']} s, selected epoch {figures['training']['selected_epoch']} "
        f"(validation loss {figures['training']['validation_loss']:.5f})",
        f"- offline error on the test bags ({offline['labelled']} updates): MAE linear {offline['mae'][0]:.4f} m/s, "
        f"angular {offline['mae'][1]:.4f} rad/s; RMSE {offline['rmse'][0]:.4f}, {offline['rmse'][1]:.4f}; "
        f"loss {offline['loss']:.5f}",
    ]
    for name, s in sim.items():
        lines.append(
            f"- simulated episodes, {name}: {s['success']}/{s['episodes']} reach the target "
            f"(95% CI {s['ci95'][0]:.2f}-{s['ci95'][1]:.2f}; episode seeds {s['seeds'][0]}..{s['seeds'][1]})"
        )
    if "replay" in figures:
        r = figures["replay"]
        lines.append(
            f"- DDS replay of {Path(r['bag']).name} at {r.get('rate', '?')}x: {r['matched']}/{r['offline_updates']} "
            f"commands matched by stamp, max |difference| {r['max_abs_diff']:.2e} vs offline"
        )
    if seconds is not None:
        lines.append(f"- loop wall time: {seconds:.0f} s")
    if settings:
        lines.append(f"- command: `{figures['command']}`")
    lines += ["", "```", yaml.safe_dump(figures, sort_keys=False, width=110), "```"]
    (root / "summary.md").write_text("\n".join(lines) + "\n")
    return figures


PUBLISHED = (  # the small files of a loop's output worth keeping in the repository (not bags, not checkpoints)
    "summary.md",
    "summary.json",
    "run/metrics.csv",
    "offline/offline.json",
    "offline/plots/bags__episode_600.png",
    "sim/results.csv",
    "sim/success_by_shift.png",
    "replay/replay.json",
    "rounds.md",
    "rounds.png",
)


def publish(out: str, to: str) -> list[Path]:
    """Copy the loop's summary and small figures from ``out`` into ``to`` (e.g. docs/bag_loop)."""
    import shutil

    copied = []
    for name in PUBLISHED:
        source = Path(out) / name
        if not source.is_file():
            continue
        target = Path(to) / name.replace("/", "_")
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.suffix in (".md", ".json", ".csv"):  # paths relative to the repository, not this machine's
            target.write_text(source.read_text().replace(f"{Path.cwd().resolve()}/", ""))
        else:
            shutil.copyfile(source, target)
        copied.append(target)
    return copied


def _training_text(command: str) -> str:
    """The --set overrides of a training command, e.g. ``epochs_first=150, batch_size=4``."""
    return ", ".join(m.removeprefix("training.") for m in re.findall(r"--set (\S+)", command or "")) or "defaults"


def compare(outs: list[str], figure: str | None = None, target: float = 0.8) -> str:
    """A markdown table of several loops (their summary.json) and, with ``figure``, their success rates with
    95% CIs beside the target."""
    rows, table = (
        [],
        [
            "| run | noise in the training bags | training | selected epoch (val loss) | offline MAE lin, ang "
            "| success (95% CI) | wall |",
            "| --- | --- | --- | --- | --- | --- | ---: |",
        ],
    )
    for out in outs:
        f = json.loads((Path(out) / "summary.json").read_text())
        sim, off, tr = f["simulated_episodes"]["bags"], f["offline_test_bags"], f["training"]
        rows.append((Path(out).name, sim))
        wall = f"{f['loop_wall_s']:.0f} s" if f.get("loop_wall_s") else ""
        table.append(
            f"| {Path(out).name} | {_noise_text(f['bags']['train']['noise'], f['bags']['train'].get('expert_margin'))} "
            f"| {_training_text(tr['command'])} "
            f"| {tr['selected_epoch']} "
            f"({tr['validation_loss']:.4f}) | {off['mae'][0]:.3f}, {off['mae'][1]:.3f} | "
            f"{sim['success']}/{sim['episodes']} ({sim['ci95'][0]:.2f}-{sim['ci95'][1]:.2f}) | {wall} |"
        )
    if figure:
        from liquid_control.figures import pyplot, save_figure

        plt = pyplot()
        fig, ax = plt.subplots(figsize=(2.6 + 1.1 * len(rows), 3.2))
        for i, (_name, sim) in enumerate(rows):
            rate = sim["success"] / sim["episodes"]
            low, high = sim["ci95"]
            ax.bar(i, rate, color="tab:blue")
            ax.errorbar(i, rate, yerr=[[rate - low], [high - rate]], color="k", capsize=4)
        ax.axhline(target, color="tab:red", linestyle="--", label=f"target {target:.0%}")
        ax.set_xticks(range(len(rows)), [name for name, _ in rows], rotation=20)
        ax.set_ylim(0, 1.05)  # an interval up to 100% whole, its cap not cut in half by the frame
        ax.set_title("success of the loops' policies in simulation", fontsize=9)
        episodes = sorted({sim["episodes"] for _, sim in rows})  # not "50" whatever the runs' counts
        ax.set_ylabel(f"success, {'/'.join(map(str, episodes))} held-out\nepisodes (error bars: 95% CI)")
        # beside the axes: inside, in the upper right corner, it hid the last run's bar top and interval near 100%
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
        fig.tight_layout()
        save_figure(fig, figure, dpi=100)  # whole or not at all, and closed
    return "\n".join(table)


def _outcomes(results: Path) -> dict[int, int]:
    """{episode seed: 0/1} of the trained policy (not the expert) in an evaluation's results.json, in-distribution."""
    rows = [row for row in json.loads(results.read_text()) if row["policy"] != "expert"]
    if len({row["policy"] for row in rows}) != 1 or {row["shift"] for row in rows} != {"in_distribution"}:
        raise ValueError(f"{results}: expected one trained policy (besides the expert) in-distribution only")
    outcomes = {int(row["episode_seed"]): int(bool(row["success"])) for row in rows}
    if len(outcomes) != len(rows):
        raise ValueError(f"{results}: an episode seed appears twice")
    return outcomes


def _round_record(out: Path, r: int) -> str:
    """What the operator did in round ``r`` of ``out``: its share of the updates (supervised episodes that reached
    the target), from the last line of takeover_rounds.sh's record.txt."""
    record = out / f"round_{r}.record.txt"
    lines = record.read_text().strip().splitlines() if record.is_file() else []
    found = re.search(r"the operator drove (\d+%) of the updates, success (\d+/\d+)\)", lines[-1] if lines else "")
    return f"{found[1]} ({found[2]})" if found else "-"


def rounds(outs: list[str], figure: str | None = None, target: float = 0.8) -> str:
    """Success after each deploy-record-retrain round (round 0: the policy trained on the expert bags alone) of
    one loop per training seed, all on the same evaluation episodes (checked): a markdown table with each seed's
    count, the pooled rate with a 95% interval (over seeds then episodes, with one folder over episodes; at least
    the pooled episodes' Wilson interval, as the evaluation report's), and what the operator did in the round;
    with ``figure``, success against round, one line per seed and the pooled rate.
    A round some folder lacks (unfinished) is shown there as '-' and not pooled."""
    from liquid_control.stats import success_interval

    per_seed = []  # {round: {episode seed: 0/1}}
    for out in outs:
        found = {0: _outcomes(Path(out) / "sim" / "results.json")}
        for path in Path(out).glob("round_*/sim/results.json"):
            number = re.fullmatch(r"round_(\d+)", path.parent.parent.name)
            if number:
                found[int(number[1])] = _outcomes(path)
        per_seed.append(found)
    episodes = sorted(per_seed[0][0])
    for out, found in zip(outs, per_seed):
        for r, outcomes in found.items():
            if sorted(outcomes) != episodes:
                raise ValueError(f"{out}: round {r} was evaluated on other episodes than {outs[0]}'s round 0")
    every = sorted(set().union(*per_seed))
    interval = "over seeds, then episodes" if len(outs) > 1 else "over episodes"
    names = [Path(o).name for o in outs]
    table = [
        f"| round | {' | '.join(names)} | pooled (95% CI {interval}) | operator (supervised successes) |",
        "|" + " --- |" * (len(outs) + 3),
    ]
    pooled, missing = [], []
    for r in every:
        counts = [f"{sum(f[r].values())}/{len(f[r])}" if r in f else "-" for f in per_seed]
        if all(r in f for f in per_seed):
            # the bootstrap alone collapsed to a point at 0% and 100% (before: "100% (100%-100%)" of 3 x 50)
            mean, low, high = success_interval([[list(f[r].values())] for f in per_seed])
            pooled.append((r, mean, low, high))
            rate = f"{mean:.0%} ({low:.0%}-{high:.0%})"
        else:
            missing.append(str(r))
            rate = "- (a seed lacks this round)"
        operator = "expert bags only" if r == 0 else "; ".join(_round_record(Path(o), r) for o in outs)
        table.append(f"| {r} | " + " | ".join(counts) + f" | {rate} | {operator} |")
    table.append("")
    table.append(
        f"{len(episodes)} held-out episodes (seeds {episodes[0]}..) per cell; operator: the share of the round's "
        "supervised updates the operator drove."
        + (" With 2-3 training seeds the seed-level interval is narrower than the truth." if 1 < len(outs) < 4 else "")
        + (f" Not in every folder, so not pooled: round {', '.join(missing)}." if missing else "")
    )
    if figure and pooled:
        from liquid_control.figures import pyplot, save_figure

        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6.8, 3.4))
        from liquid_control.evaluation.report import LINES, policy_style

        for i, (name, found) in enumerate(zip(names, per_seed)):  # colours a red-green colour-blind reader tells apart
            shown = sorted(found)
            rates = [np.mean(list(found[r].values())) for r in shown]
            color, pattern = policy_style(i)
            ax.plot(shown, rates, color=color, marker="o", ls=LINES[pattern][0], alpha=0.6, label=name)
        rs, means, lows, highs = (np.array(v) for v in zip(*pooled))
        ax.errorbar(rs, means, yerr=[means - lows, highs - means], color="k", capsize=4, lw=2, label="pooled, 95% CI")
        ax.axhline(target, color="tab:red", linestyle="--", label=f"target {target:.0%}")
        ax.set_xticks(every)
        ax.set_xlabel("round (0: trained on the expert bags alone)")
        ax.set_ylabel(f"success, {len(episodes)} held-out episodes")
        ax.set_ylim(0, 1.05)  # an interval up to 100% whole
        ax.set_title("success after each deploy-record-retrain round", fontsize=9)
        # beside the axes: inside, in the lower right corner, it hid a seed that fell back in the last rounds
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
        fig.tight_layout()
        save_figure(fig, figure, dpi=100)
    return "\n".join(table)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    r = sub.add_parser("replay")
    r.add_argument("--policy", required=True)
    r.add_argument("--bag", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--rate", type=float, default=2.0)
    r.add_argument(
        "--node-params",
        default=None,
        metavar="YAML",
        help="policy_node parameter file of the robot, for the node and the offline commands alike (default, as "
        "eval --bag: the data settings a policy trained from bags recorded, else the file shipped for its world)",
    )
    b = sub.add_parser("missing", help="the episodes a folder of bags lacks: a line 'SEED COUNT' per run to record")
    b.add_argument("folder")
    b.add_argument("--seed", type=int, required=True)
    b.add_argument("--episodes", type=int, required=True)
    s = sub.add_parser("summary")
    s.add_argument("--out", required=True)
    s.add_argument("--seconds", type=float, default=None)
    s.add_argument("--settings", default="", help="the loop's settings (KEY=VALUE ...), for the summary")
    c = sub.add_parser("publish", help="copy the summary and small figures (no bags, no checkpoints)")
    c.add_argument("--out", required=True)
    c.add_argument("--to", required=True)
    m = sub.add_parser("compare", help="a markdown table (and figure) of several loops' results")
    m.add_argument("outs", nargs="+")
    m.add_argument("--figure", default=None)
    o = sub.add_parser("rounds", help="success after each takeover_rounds.sh round, one loop folder per training seed")
    o.add_argument("outs", nargs="+")
    o.add_argument("--figure", default=None)
    args = parser.parse_args(argv)
    needs = {  # what each step reads of a loop's folder: a wrong folder is said here, not in a traceback
        "summary": "run/policy.pt",
        "publish": "summary.json",
        "compare": "summary.json",
        "rounds": "sim/results.json",
    }
    if args.what in needs:
        for out in args.outs if args.what in ("compare", "rounds") else [args.out]:
            if not (Path(out) / needs[args.what]).is_file():
                what = f"no {needs[args.what]} there" if Path(out).is_dir() else "no such folder"
                parser.error(f"{args.what} {out}: {what}; give the OUT folder of a finished scripts/bag_loop.sh")
    if args.what == "rounds":
        print(rounds(args.outs, args.figure))
        return 0
    if args.what == "compare":
        print(compare(args.outs, args.figure))
        return 0
    if args.what == "publish":
        for path in publish(args.out, args.to):
            print(path)
        return 0
    if args.what == "missing":
        if args.episodes < 1:  # as record --expert refuses it
            parser.error(f"missing: --episodes must be >= 1, got {args.episodes}")
        try:
            runs = episodes_to_record(args.folder, args.seed, args.episodes)
        except ValueError as exc:
            print(f"bag_loop.py missing: error: {exc}", file=sys.stderr)
            return 2
        lacking = sum(count for _, count in runs)
        if 0 < lacking < args.episodes:  # a rerun after an interruption: said, as what it records
            print(
                f"bag_loop.py missing: {args.folder} holds {args.episodes - lacking} of the {args.episodes} episodes "
                f"(seeds {args.seed}..{args.seed + args.episodes - 1}): recording the other {lacking}",
                file=sys.stderr,
            )
        from liquid_control.bags.recording import existing_episode_seeds

        others = sorted(set(existing_episode_seeds(args.folder)) - set(range(args.seed, args.seed + args.episodes)))
        if others:  # used all the same (bag_loop.sh reads every bag of the folder)
            print(
                f"bag_loop.py missing: warning: {args.folder} also holds episode_{others[0]}"
                f"{f' and {len(others) - 1} more' if len(others) > 1 else ''}, outside seeds {args.seed}.."
                f"{args.seed + args.episodes - 1} (recorded with other settings?): used too",
                file=sys.stderr,
            )
        for seed, count in runs:
            print(seed, count)
        return 0
    if args.what == "replay":
        from liquid_control.bags.io import BagError
        from liquid_control.processes import Terminated, sigterm_as_interrupt
        from liquid_control.ros.replay import NodeGone

        try:
            with sigterm_as_interrupt("bag_loop.py replay"):  # a kill stops the replay as Ctrl-C does: the bag finished
                result = replay_check(args.policy, args.bag, args.out, args.rate, args.node_params)
        except KeyboardInterrupt as exc:  # no replay.json: a rerun of bag_loop.sh replays again
            said = (
                str(exc)
                if isinstance(exc, ReplayInterrupted)
                else "interrupted; no replay.json written: a rerun replays the bag again"
            )
            print(f"bag_loop.py replay: {said}", file=sys.stderr)
            return 143 if getattr(exc, "terminated", isinstance(exc, Terminated)) else 130
        except NodeGone as exc:
            print(f"bag_loop.py replay: error: {exc}", file=sys.stderr)
            return 1
        except ValueError as exc:  # a policy whose replayed commands cannot be matched
            print(f"bag_loop.py replay: error: {exc}", file=sys.stderr)
            return 2
        except BagError as exc:  # e.g. no commands recorded: "no topic /cmd_vel in the bag; it has ...", a traceback
            log = Path(args.out) / "policy_node.log"
            print(f"bag_loop.py replay: error: {exc} (policy_node's log: {log})", file=sys.stderr)
            return 2
        print(json.dumps({k: v for k, v in result.items() if k != "published"}))
        return 0 if result["matched"] else 1
    summary(args.out, args.seconds, args.settings)
    return 0


if __name__ == "__main__":
    from liquid_control.processes import exit_status_of

    sys.exit(exit_status_of("bag_loop.py", main))
