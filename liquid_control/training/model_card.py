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
import os
import platform
import re
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import yaml

from liquid_control import folder_lock
from liquid_control.atomic_file import atomic_write
from liquid_control.cells.dt import MAX_SUBSTEPS
from liquid_control.json_text import load_json
from liquid_control.paths import checkout_dir, output_folder_problem, policies_dir, user_path
from liquid_control.policy import PolicyLoadError, load_policy, save_policy
from liquid_control.policy.config import CONTINUOUS_CORES
from liquid_control.processes import (
    Terminated,
    die_with_parent,
    quiet_ctrl_c_in_worker,
    sigterm_as_interrupt,
    stderr_is_terminal,
)
from liquid_control.runtime.backends import checkpoint_sha256
from liquid_control.runtime.export import ExportError, export_checked
from liquid_control.shown import control_character_at
from liquid_control.stats import binomial_cdf, wilson_interval

from .augment import describe_recipes
from .episodes import make_env
from .sensor_record import describe as describe_sensors

OOD_NOT_MEASURED = "NOT YET MEASURED - fill in from the evaluation report (liquid-control eval)"


class CardError(ValueError):
    """A request the card cannot be made from (a corrupt input file, a card it cannot rewrite): one line naming
    the file, found before the measurement where it can be."""


def _write_text(path: Path, text: str) -> None:
    """``path`` replaced whole or not at all (a killed run leaves no half-written card or cache entry)."""
    with atomic_write(path, "w", encoding="utf-8") as handle:
        handle.write(text)


CHECK_FALSE_ALARM = 1e-3  # probability that a correct build fails the shipped-policy check
CHECK_EPISODES = 12  # the first in-distribution episodes the shipped-policies test replays (--check-episodes)
NATIVE_ENV = "LIQUID_CONTROL_NATIVE"


def min_check_successes(n: int, reference: float, false_alarm: float = CHECK_FALSE_ALARM) -> int:
    """The fewest successes out of ``n`` that a policy succeeding at rate ``reference`` reaches with probability
    at least ``1 - false_alarm``: fewer is implausible for a correct build, so the check fails only then."""
    k = 0
    while k < n and binomial_cdf(k, n, reference) < false_alarm:
        k += 1
    return k


def measure_outcomes(
    policy_path: str | Path, episodes: int, progress: bool = False, log=None, label: str | None = None
) -> list[bool]:
    """Success of each in-distribution episode (env seeds 0..episodes-1) of the policy alone, in this process.
    ``log``: called with a line at each tenth of the episodes (where no bar shows progress: a CI log). ``label``:
    the bar's (the policy file's name by default)."""
    from tqdm import tqdm

    from liquid_control.policy import PolicyAgent

    from .data import rollout

    policy = load_policy(policy_path)
    env = make_env(policy.config)
    agent = PolicyAgent(policy)
    try:
        outcomes = []
        for seed in tqdm(range(episodes), desc=label or Path(policy_path).stem, disable=not progress, file=sys.stderr):
            outcomes.append(bool(rollout(env, agent, beta=0.0, seed=seed, record=False).success))
            done = len(outcomes)
            if log is not None and done * 10 // episodes > (done - 1) * 10 // episodes:
                log(f"{done}/{episodes} episodes done ({sum(outcomes)} successes)")
        return outcomes
    finally:
        env.close()


def cache_file(cache: Path, policy_path: str | Path, path: str, episodes: int) -> Path:
    """Where ``--cache`` keeps one kernel path's (``compiled`` or ``torch``) outcomes of a policy."""
    return Path(cache) / f"{Path(policy_path).stem}.{path}.{episodes}.json"


def read_cached(stored: Path, episodes: int) -> dict | None:
    """A cached measurement, None when there is none; ``CardError`` naming the file when it is not one."""
    if not stored.is_file():
        return None
    try:
        data = load_json(stored.read_text())
    except (OSError, ValueError) as exc:  # JSONDecodeError, UnicodeDecodeError, JsonTooDeepError
        raise CardError(f"{stored}: not a cached measurement ({exc}); remove it to measure again") from None
    outcomes = data.get("outcomes") if isinstance(data, dict) else None
    if not (isinstance(outcomes, list) and len(outcomes) == episodes and isinstance(data.get("kernel_path"), str)):
        raise CardError(
            f"{stored}: not a cached measurement of {episodes} episodes (kernel_path, outcomes); remove it to measure "
            "again"
        )
    return data


def check_cache(cache: Path | None, policy_path: str | Path, episodes: int) -> None:
    """``CardError`` (before measuring) for a ``--cache`` that cannot be a folder to write in or holds a corrupt entry
    of this policy."""
    if cache is None:
        return
    _check_out(Path(cache), "--cache")
    for path in ("compiled", "torch"):
        read_cached(cache_file(cache, policy_path, path, episodes), episodes)


def source_digest() -> str:
    """SHA-256 of the code a measurement ran: every source file of ``liquid_control`` and ``sim_envs`` (the worlds),
    by path and content. A commit would not do: an installed package's version stays 0.1.0 from commit to commit,
    and a checkout is dirty as soon as a card is written into it."""
    import hashlib

    import liquid_control
    import sim_envs

    sha = hashlib.sha256()
    for package in (liquid_control, sim_envs):
        root = Path(package.__file__).resolve().parent
        for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            if path.suffix in (".pyc", ".so"):
                continue
            relative = f"{package.__name__}/{path.relative_to(root).as_posix()}".encode()
            sha.update(len(relative).to_bytes(8, "little") + relative)
            content = path.read_bytes()
            sha.update(len(content).to_bytes(8, "little") + content)
    return sha.hexdigest()


PARENT_ENV = "LIQUID_CONTROL_CARD_PARENT"  # the card's process, for its measuring processes to check it is alive


def measure_both_paths(
    policy_path: str | Path,
    episodes: int,
    threads: int = 1,
    cache: Path | None = None,
    progress: bool = True,
    name: str | None = None,
) -> dict[str, dict]:
    """Outcomes on the compiled and on the torch kernel path, two processes side by side:
    ``{"compiled"|"torch": {"kernel_path": str, "outcomes": [bool]}}``. With ``cache`` (a folder) each
    path's outcomes are kept in ``<policy>.<path>.<episodes>.json`` and reused for the same checkpoint (bit for bit)
    measured by the same code (``source_digest``): a change to the worlds or the kernels changes outcomes as much as
    one to the weights.
    ``progress``: each process draws a bar on stderr; else it writes a line there at each tenth of its episodes.
    ``name`` labels both (the shipped name; by default the file's, ``policy`` for a run's ``policy.pt``).

    The two processes end with this one, however it ends (before, they measured on for up to hours): an
    interrupt (Ctrl-C, SIGTERM) or a failure here terminates them, and they get SIGTERM when it is killed
    (``--outcomes`` arms the parent-death signal first thing)."""
    digest, code = checkpoint_sha256(policy_path), source_digest()
    results, procs, stored = {}, {}, {}
    try:
        for path, native in (("compiled", "1"), ("torch", "0")):
            if cache is not None:
                stored[path] = cache_file(cache, policy_path, path, episodes)
                data = read_cached(stored[path], episodes)
                if data is not None and (data.get("sha256"), data.get("code")) == (digest, code):
                    results[path] = data
                    continue
            env = dict(os.environ, **{NATIVE_ENV: native, PARENT_ENV: str(os.getpid())})
            argv = [
                sys.executable,
                "-m",
                "liquid_control.training.model_card",
                "--outcomes",
                str(policy_path),
                "--episodes",
                str(episodes),
            ]
            argv += ["--threads", str(threads)] + ([] if progress else ["--no-progress"])
            argv += ["--name", name] if name else []
            procs[path] = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
        for path, proc in procs.items():  # stdout is one line of JSON at the end: read one after the other
            out, _ = proc.communicate()
            if proc.returncode:
                raise subprocess.CalledProcessError(proc.returncode, proc.args, out)
            results[path] = dict(json.loads(out.strip().splitlines()[-1]), sha256=digest, code=code)
            if path in stored:
                stored[path].parent.mkdir(parents=True, exist_ok=True)
                _write_text(stored[path], json.dumps(results[path]))
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
    return {"compiled": results["compiled"], "torch": results["torch"]}


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


def split_card(path: str | Path) -> tuple[dict, str]:
    """A model card's YAML front matter (a mapping) and its body (the text after the closing ``---``);
    ``CardError`` (a ``ValueError``) naming the file when it is not a card."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CardError(f"{path}: cannot read the model card ({exc})") from None
    if not text.startswith("---\n"):
        raise CardError(f"{path}: a model card starts with a YAML front matter ('---')")
    end = text.find("\n---\n", 3)  # from the first line's newline: an empty front matter is '---\n---\n'
    if end < 0:
        raise CardError(f"{path}: the YAML front matter is not closed by '---'")
    try:
        card = yaml.safe_load(text[4:end]) if end > 3 else None
    except yaml.YAMLError as exc:
        raise CardError(f"{path}: the front matter is not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(card, dict):
        what = "empty" if card is None else f"a {type(card).__name__}, not a mapping of the card's entries"
        raise CardError(f"{path}: the YAML front matter is {what}")
    return card, text[end + 5 :]


def card_text(card: dict, body: str) -> str:
    """A model card's text: its front matter as YAML (the entries in order, lines wrapped at 100 characters) and
    its body; the one way every writer here (``write_card``, ``refresh_card``, ``add_ood``) lays a card out, so
    that rewriting one section leaves the lines of the others as they were."""
    # allow_unicode: a path is shown as written ('/home/jörg/...'), not escaped ("/home/j\xF6rg/...")
    return "---\n" + yaml.safe_dump(card, sort_keys=False, width=100, allow_unicode=True) + "---\n" + body


def read_card(path: str | Path) -> dict:
    """The YAML front matter of a model card."""
    return split_card(path)[0]


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
        dt += (
            f" (a longer one than {core['max_step']:g} s in sub-steps of at most that, up to {MAX_SUBSTEPS} of them, "
            "the input held)"
        )
    return f"{kind}{wiring}, {core['units']} units{extra}; {use} {dt}"


def _check_out(out_dir: Path, flag: str = "--out") -> None:
    """``CardError`` naming ``flag`` when ``out_dir`` cannot be a folder to write in (``paths.output_folder_problem``:
    a file, under a file, not writable), before the measurement whose results go there."""
    problem = output_folder_problem(out_dir)
    if problem:
        raise CardError(f"{flag} {out_dir}: {problem}")


def _load(path: Path):
    try:
        policy = load_policy(path)
    except PolicyLoadError as exc:
        raise CardError(str(exc)) from None
    if policy.config["world"] is None:  # measured in its world: a robot's policy trained from bags alone has none
        raise CardError(
            f"{path}: its config names no world (world: null: trained from recorded bags alone), and a card measures "
            "the policy driving in its world; check it offline on held-out bags: liquid-control eval --bag"
        )
    return policy


def onnx_text(card: dict) -> str:
    """The card body's ONNX bullet: the export shipped beside the policy, or why there is none."""
    entry = card["onnx"]
    if entry.get("file"):
        return (
            f"- **ONNX export**: `{entry['file']}` (what the ROS nodes run by default, `backend: auto`); max abs "
            f"difference from torch {entry['max_abs_diff_vs_torch']:.2g} (`liquid-control export`'s check)."
        )
    return f"- **ONNX export**: none: {entry['not_exported']}; `backend: auto` runs `{card['file']}` with torch."


def cited_path(path: str | Path, card_dir: Path) -> str:
    """How a card names a file it cites (an OOD evaluation's results, a run's data.yaml): relative to the source
    checkout's root where both the file and the card are in it (as the shipped cards cite ``docs/...``), else its
    absolute path; never relative to the working directory of the command that wrote the card, which it does not
    record."""
    path = Path(os.path.abspath(path))
    root = checkout_dir()
    if root is not None:
        root = Path(os.path.abspath(root))
        try:
            Path(os.path.abspath(card_dir)).relative_to(root)
            return path.relative_to(root).as_posix()
        except ValueError:
            pass
    return str(path)


def _names(paths) -> str:
    return ", ".join(Path(p).name for p in paths)


def bag_data_text(meta: dict, training: dict) -> str:
    """The card's ``training.data`` of a run on recorded bags (``training.bag_data``'s metadata): the bags, their
    recorded seconds and labelled updates, the topics, the epochs and how one was selected."""
    bags, validation = list(meta.get("training_bags") or []), list(meta.get("validation_bags") or [])
    spec = meta.get("data_spec") or {}
    topics = ", ".join(f"{sensor} {topic}" for sensor, topic in (spec.get("topics") or {}).items())
    text = (
        f"{len(bags)} recorded bag(s) ({_names(bags)}): {meta.get('recorded_seconds')} s, "
        f"{meta.get('training_updates')} labelled updates; inputs {topics or 'none'}, labels "
        f"{spec.get('command_topic')}; behaviour cloning for {training['epochs_first']} epochs, no DAgger rounds"
    )
    loss = meta.get("validation_loss")
    if validation and loss is not None:
        text += (
            f"; epoch {meta.get('selected_epoch')} selected by the lowest validation loss ({loss:.5g}) on "
            f"{len(validation)} held-out bag(s) ({_names(validation)})"
        )
    else:
        text += f"; no validation bags: the last epoch ({meta.get('selected_epoch')}) kept"
    skipped = list(meta.get("skipped_bags") or [])
    if skipped:
        text += f"; {len(skipped)} bag(s) skipped, no command to learn from ({_names(skipped)})"
    return text + f"; augmentation {training['augmentation'] or 'off'}"


def bags_entry(meta: dict, run_dir: Path, card_dir: Path) -> dict:
    """The card's ``training.bags`` of a run on recorded bags: the bags' paths as the run recorded them, and the
    run's ``data.yaml`` (the data settings: topics, labels, limits, window) where the run folder holds it."""
    entry = {"training": list(meta.get("training_bags") or []), "validation": list(meta.get("validation_bags") or [])}
    if meta.get("skipped_bags"):
        entry["skipped"] = list(meta["skipped_bags"])
    if (Path(run_dir) / "data.yaml").is_file():
        entry["settings"] = cited_path(Path(run_dir) / "data.yaml", card_dir)
    return entry


def code_span(text: object) -> str:
    """``text`` as one Markdown code span, whatever it holds: fenced by one backtick more than its longest run of
    them, control characters (a newline too) written as escapes. A training command or folder recorded in a policy
    file comes from whoever made the file: one holding a backtick and newlines closed the span and went on as the
    card's own headings and HTML."""
    text = "".join(repr(ch)[1:-1] if control_character_at(ch) is not None else ch for ch in str(text))
    fence = "`" * (max(map(len, re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def ran_in(card: dict) -> str:
    """' in `FOLDER`': the working directory of the card's training command, where the run recorded it."""
    folder = card["training"].get("working_directory")
    return f" in {code_span(folder)}" if folder else ""


def training_notes(card: dict) -> str:
    """The card body's sentences after the training data: the policy the run started from (``--init-from``), and
    for a run on bags where its in-distribution episodes come from; nothing for a simulated run from scratch."""
    notes = ""
    start = card["training"].get("started_from")
    if start:
        notes += (
            f"\n  Started from the weights of {code_span(start.get('path'))} (SHA-256 {str(start.get('sha256'))[:12]}, "
            "`--init-from`): the data above are this run's, not that policy's."
        )
    if "bags" in card["training"]:
        settings = card["training"]["bags"].get("settings")
        notes += (
            (f"\n  Data settings: `{settings}`." if settings else "")
            + f"\n  Trained on bags alone: the in-distribution episodes below are world {card['world']}'s, "
            "which the bags may or may not show."
        )
    return notes


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
    ood: tuple[str | Path, str] | None = None,
    progress: bool = True,
) -> Path:
    """Measure a run's policy on both kernel paths, save it as ``<name>.pt`` with its ONNX export ``<name>.onnx``
    and write its card ``<name>.md`` (with ``ood``, ``(results.json, policy name)``: its OOD section).

    Everything that can fail is checked before the measurement: the run's policy, the cache, the OOD results, the
    destination, and the export (``export_checked``: the ONNX model must match torch, or the policy ships without
    one, the card saying why, and an older ``<name>.onnx`` is removed). The three files are written to a temporary
    folder beside them and moved in only when all are: never a new checkpoint beside an old export or card.

    A run still training is refused (its folder's lock, naming the process): it rewrites policy.pt between the
    load here and the measuring processes' reads, which would measure another policy than the one shipped."""
    run_dir = Path(run_dir)
    with folder_lock.hold(run_dir, "make the card once it has ended", CardError):
        return _write_card(
            name, run_dir, episodes, check_episodes, out_dir, machine_note, command, append, cache, ood, progress
        )


def _write_card(
    name, run_dir, episodes, check_episodes, out_dir, machine_note, command, append, cache, ood, progress
) -> Path:
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    source = run_dir / "policy.pt"
    policy = _load(source)
    meta = dict(policy.metadata)
    cfg = policy.config
    check_cache(cache, source, episodes)
    ood_entry = ood_section(*ood, carded=source) if ood is not None else None
    _check_out(out_dir)
    with tempfile.TemporaryDirectory(prefix="model_card.") as probe:  # can it ship an export? (seconds, not minutes)
        try:
            export_checked(policy, Path(probe) / f"{name}.onnx")
            not_exported = None
        except ExportError as exc:
            not_exported = str(exc)
            print(f"{source}: {not_exported}: {name}.pt ships without an ONNX export", file=sys.stderr)
    measured = measure_both_paths(source, episodes, cache=cache, progress=progress, name=name)
    in_distribution = in_distribution_section(measured, "compiled", episodes)
    wins = round(in_distribution["success"] * episodes)
    t = cfg["training"]
    from_bags = meta.get("training_data") == "bags"
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
                f"{cfg['observation']['image']['width']}x{cfg['observation']['image']['height']} RGB (width x height)"
                + (
                    f", instance norm after the first {cfg['encoder']['camera']['instance_norm_layers']} convolutions"
                    if cfg["encoder"]["camera"].get("instance_norm_layers")
                    else ""
                )
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
            or (
                "not recorded (trained from Python; its bags: training.bags)"
                if from_bags
                else f"liquid-control train --config policies/configs/{cfg['name']}.yaml "
                f"--out runs/{name} --seed {meta.get('seed', 0)}"
            ),
            # where the command ran (what its relative paths are relative to), where the run recorded it
            **({"working_directory": meta["working_directory"]} if meta.get("working_directory") else {}),
            "seed": meta.get("seed"),
            # the commit (or version) of the code that trained it, as the run recorded it (a list: a resumed run's
            # parts ran different code)
            "code": meta.get("code") or "not recorded (a checkpoint of a version that did not record it)",
            "data": (
                bag_data_text(meta, t)
                if from_bags
                else f"{t['demonstrations']} expert demonstrations + {t['dagger_rounds']} DAgger rounds x "
                f"{t['dagger_episodes']} episodes (beta {t['beta']}), training distribution "
                f"'{t['shift'] or 'default'}', augmentation {t['augmentation'] or 'off'}"
            ),
            **({"bags": bags_entry(meta, run_dir, out_dir)} if from_bags else {}),
            # the policy whose weights it started from (train --init-from: a fine-tuning, e.g. a DAgger round)
            **({"started_from": dict(meta["started_from"])} if meta.get("started_from") else {}),
            # what the robustness recipes showed it (augmentation, normalisation, timing and sun draws, worlds)
            "recipes": describe_recipes(t, cfg["encoder"].get("camera"), from_bags=from_bags),
            # the sensors' rates and camera it trained with, which policy_node checks a robot's against
            "sensors": describe_sensors(meta),
            # a bag run selects an epoch by its validation loss; a simulated one a DAgger round by its success
            **(
                {"selected_epoch": meta.get("selected_epoch"), "validation_loss": meta.get("validation_loss")}
                if from_bags
                else {"selected_round": meta.get("selected_round")}
            ),
            "wall_clock_s": meta.get("training_wall_s"),
            "machine": machine_note,
            # the cells' path in training (policy files since 2026-12-06): its last bits, so its weights, follow it
            # (a list: a resumed run's parts ran on different paths)
            **({"kernels": meta["kernels"]} if isinstance(meta.get("kernels"), (str, list)) else {}),
        },
        "in_distribution": in_distribution,
        "check": check_section(measured, check_episodes, in_distribution),
        "onnx": {"file": None, "not_exported": not_exported},
        "ood": OOD_NOT_MEASURED,
    }
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CardError(f"--out {out_dir}: cannot make the folder ({exc.strerror or exc})") from None
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=f".{name}.") as staging, _naming_shipped(out_dir, name):
        staging = Path(staging)
        shipped = save_policy(
            staging / f"{name}.pt",
            policy,
            # the run's file it was saved from: an evaluation of that file is this policy's too (ood_section)
            {**meta, "name": name, "in_distribution_success": wins / episodes, SHIPPED_FROM: checkpoint_sha256(source)},
        )
        if not_exported is None:  # what the ROS node runs (backend: auto): the export of this very file
            try:
                diff = export_checked(policy, staging / f"{name}.onnx", source=shipped)
            except ExportError as exc:  # passed the same check before the measurement
                raise CardError(f"{source}: {exc}; nothing shipped") from None
            card["onnx"] = {"file": f"{name}.onnx", "max_abs_diff_vs_torch": float(f"{diff:.3g}")}
        code = card["training"]["code"]
        code = code if isinstance(code, str) else ", then ".join(map(str, code))  # a resumed run's parts
        trained_on = card["training"].get("kernels") or ""
        trained_on = trained_on if isinstance(trained_on, str) else ", then ".join(map(str, trained_on))
        trained_on = f", cells on {trained_on}" if trained_on else ""
        command = code_span(card["training"]["command"])
        body = f"""
# {name}

{cfg.get("description") or ""}

- **Architecture**: {card["architecture"]["core"]}; {card["architecture"]["parameters"]} parameters
  ({card["architecture"]["core_parameters"]} in the recurrent core).
- **Training**: {command}{ran_in(card)} — {card["training"]["data"]}.{training_notes(card)}
  Wall clock {card["training"]["wall_clock_s"]} s on {machine_note}{trained_on}; code: {code}.
  What it saw: {"; ".join(card["training"]["recipes"])}.
  Sensors it trained at: {card["training"]["sensors"]}.
{in_distribution_text(card)}
{onnx_text(card)}
- **OOD**: {OOD_NOT_MEASURED}.

The front matter above is read by `test/test_shipped_policies.py`, which replays the `check` episodes.
"""
        if append:
            body += "\n" + append.strip() + "\n"
        if ood is not None:
            card, body = card_with_ood(card, body, *ood, out_dir, entry=ood_entry)
        (staging / f"{name}.md").write_text(card_text(card, body), encoding="utf-8")
        # moved in (renames on one file system), in the order that leaves a consistent set at every step: an
        # export names its checkpoint's SHA-256, so a new export beside the old .pt (or the old one beside the
        # new .pt) is not run (backend auto falls back to torch); the old export is removed only once the new .pt
        # is in place, so a failed rename never leaves the old .pt without it
        if not_exported is None:
            os.replace(staging / f"{name}.onnx", out_dir / f"{name}.onnx")
        os.replace(shipped, out_dir / f"{name}.pt")
        if not_exported is not None:
            (out_dir / f"{name}.onnx").unlink(missing_ok=True)
        os.replace(staging / f"{name}.md", out_dir / f"{name}.md")
    return out_dir / f"{name}.md"


@contextmanager
def _naming_shipped(out_dir: Path, name: str):
    """An OSError of staging ``name``'s files (a full disk) names the file it would have replaced in ``out_dir``,
    not its temporary copy in the staging folder (which is removed)."""
    try:
        yield
    except OSError as exc:
        found = os.path.basename(str(exc.filename or ""))
        shipped = [f"{name}{ext}" for ext in (".onnx", ".pt", ".md") if f"{name}{ext}" in found]
        raise OSError(exc.errno, exc.strerror, str(out_dir / (shipped[0] if shipped else name))) from None


BULLETS = ("- **In-distribution success**", "- **Check**")


def refresh_card(
    name: str,
    episodes: int,
    check_episodes: int,
    out_dir: Path,
    source_dir: Path | None = None,
    cache: Path | None = None,
    ood: tuple[str | Path, str] | None = None,
    progress: bool = True,
) -> Path:
    """Re-measure a shipped policy on both kernel paths and rewrite its card's in-distribution and check
    sections (training, OOD, description and the rest of the text kept; the policy file is not touched); with
    ``ood`` (``(results.json, policy name)``) its OOD section too. The card, the policy, the cache and the OOD
    results are checked before the measurement (``CardError`` naming the file)."""
    source_dir, out_dir = Path(source_dir or policies_dir()), Path(out_dir)
    card_path = source_dir / f"{name}.md"
    card, body = split_card(card_path)
    missing = [bullet for bullet in BULLETS if not any(line.startswith(bullet) for line in body.splitlines())]
    if missing:
        raise CardError(f"{card_path}: no '{missing[0]}' bullet to rewrite (a card written by this module has one)")
    _load(source_dir / f"{name}.pt")
    check_cache(cache, source_dir / f"{name}.pt", episodes)
    ood_entry = ood_section(*ood, carded=source_dir / f"{name}.pt") if ood is not None else None
    _check_out(out_dir)
    measured = measure_both_paths(source_dir / f"{name}.pt", episodes, cache=cache, progress=progress, name=name)
    card["in_distribution"] = in_distribution_section(measured, "compiled", episodes)
    card["check"] = check_section(measured, check_episodes, card["in_distribution"])
    lines, kept, skipping = body.splitlines(), [], False
    for line in lines:  # replace the in-distribution and check bullets (each may wrap onto indented lines)
        if line.startswith(BULLETS):
            if not skipping:
                kept.append(in_distribution_text(card))
            skipping = True
            continue
        if skipping and line.startswith("  "):
            continue
        skipping = False
        kept.append(line)
    body = "\n".join(kept) + "\n"
    if ood is not None:
        card, body = card_with_ood(card, body, *ood, out_dir, entry=ood_entry)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CardError(f"--out {out_dir}: cannot make the folder ({exc.strerror or exc})") from None
    path = out_dir / f"{name}.md"
    _write_text(path, card_text(card, body))
    return path


RESULT_KEYS = ("policy", "shift", "episode_seed", "success")


SHIPPED_FROM = "shipped_from_sha256"  # a shipped policy's metadata: the SHA-256 of the run's file it was saved from


def _shipped_from(path: Path) -> str:
    """The SHA-256 of the run's policy.pt that ``path`` was shipped from (metadata ``SHIPPED_FROM``); '' where it
    records none (shipped before 2026-12-07, or not shipped) or cannot be read."""
    try:
        value = load_policy(path).metadata.get(SHIPPED_FROM)
    except (PolicyLoadError, OSError):
        return ""
    return value if isinstance(value, str) and value else ""


def ood_section(
    results_path: str | Path, policy: str, reference: str = "in_distribution", carded: Path | None = None
) -> dict:
    """The card's ``ood`` entry from an evaluation's ``results.json`` (``liquid-control eval``): success per
    shift with a 95% Wilson interval, and the change from ``reference`` on the same episode seeds (paired).
    ``CardError`` (a ``ValueError``) naming the file when it is not such results, has none of ``policy``, or (with
    ``carded``, the checkpoint the card describes) ran another checkpoint: each record names its file's SHA-256."""
    what = "not the results.json of `liquid-control eval` (a list of episodes with " + ", ".join(RESULT_KEYS) + ")"
    try:
        data = load_json(Path(results_path).read_text())
    except (OSError, ValueError) as exc:  # JSONDecodeError, UnicodeDecodeError, JsonTooDeepError
        raise CardError(f"{results_path}: {what}: {exc}") from None
    if not isinstance(data, list) or not all(isinstance(r, dict) and set(RESULT_KEYS) <= r.keys() for r in data):
        raise CardError(f"{results_path}: {what}")
    records = [r for r in data if r["policy"] == policy]
    if not records:
        raise CardError(f"{results_path}: no episodes of policy {policy!r}")
    # a card describes one checkpoint: a policy of several training seeds (or checkpoints) has several episodes of
    # each seed, of which only the last read was kept (a 3-seed policy's card: one seed's rate, a third of the n)
    checkpoints = sorted({(str(r.get("training_seed")), str(r.get("checkpoint_sha"))) for r in records})
    if len(checkpoints) > 1:
        seeds = ", ".join(seed for seed, _ in checkpoints)
        raise CardError(
            f"{results_path}: policy {policy!r} has {len(checkpoints)} checkpoints (training seeds {seeds}); a model "
            "card describes one: evaluate this checkpoint as a policy of its own (NAME=CHECKPOINT) and pass that "
            "name as --ood-policy"
        )
    recorded = records[0].get("checkpoint_sha")
    if carded is not None and isinstance(recorded, str) and recorded:
        own = checkpoint_sha256(carded)
        source = _shipped_from(carded)  # shipping saves the run's policy again, with the card's metadata added
        if not (own.startswith(recorded) or source.startswith(recorded)):  # before: any policy's figures went on
            raise CardError(
                f"{results_path}: policy {policy!r} is checkpoint {recorded} ({records[0].get('checkpoint')}), not "
                f"{carded} (SHA-256 {own[:12]}) which this card describes: evaluate that file (liquid-control eval "
                f"--policy {policy}={carded} ...) and pass its results"
            )
    by_shift: dict[str, dict[int, bool]] = {}
    try:
        for r in records:
            by_shift.setdefault(str(r["shift"]), {})[int(r["episode_seed"])] = bool(r["success"])
    except (TypeError, ValueError):
        raise CardError(f"{results_path}: {what}: episode_seed {r['episode_seed']!r}") from None
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
    section = {"source": str(results_path), "policy": policy, "shifts": out}
    # the cells' kernel path each episode ran on (evaluations since 2026-12-06 record it per episode)
    paths = list(dict.fromkeys(r["kernels"] for r in records if isinstance(r.get("kernels"), str)))
    if paths and any(not isinstance(r.get("kernels"), str) for r in records):
        paths.append("not recorded for some episodes")
    return {**section, "kernel_path": " and ".join(paths)} if paths else section


def card_with_ood(
    card: dict, body: str, results_path: str | Path, policy: str, card_dir: Path, entry: dict | None = None
) -> tuple[dict, str]:
    """A card's front matter and body with its ``ood`` entry and **OOD** line filled from an evaluation
    (``entry``: its ``ood_section``, read when not given), the rest kept. The entry's ``source`` and the line cite
    the results file as ``cited_path`` does for a card in ``card_dir``: not as given, relative to a working directory
    the card does not record."""
    entry = dict(entry or ood_section(results_path, policy))
    entry["source"] = results_path = cited_path(results_path, card_dir)
    card = dict(card, ood=entry)
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
    return card, body


def add_ood(card_path: str | Path, results_path: str | Path, policy: str) -> Path:
    """Fill a card's ``ood`` entry and its **OOD** line from an evaluation (``card_with_ood``), keeping the rest."""
    card_path = Path(card_path)
    carded = card_path.with_suffix(".pt")  # the policy beside its card, where there is one
    entry = ood_section(results_path, policy, carded=carded if carded.is_file() else None)
    card, body = card_with_ood(*split_card(card_path), results_path, policy, card_path.parent, entry)
    _write_text(card_path, card_text(card, body))
    return card_path


def _check_arguments(parser: argparse.ArgumentParser, args) -> None:
    """``parser.error`` (exit status 2, one line) for a request that would fail after the measurement, or would
    measure nothing: episode counts, a name that is not a file name, a missing run, card or input file."""
    for flag, value in (("--episodes", args.episodes), ("--threads", args.threads)):
        if value < 1:
            parser.error(f"{flag} must be >= 1, got {value}")
    if args.outcomes:  # one kernel path's measurement (a child process of the card's)
        return
    if args.check_episodes is None:  # a shrunk --episodes alone was refused for a --check-episodes never given
        args.check_episodes = min(CHECK_EPISODES, args.episodes)
    if not 1 <= args.check_episodes <= args.episodes:
        parser.error(f"--check-episodes must be 1..--episodes ({args.episodes}), got {args.check_episodes}")
    for flag, name in (("--name", args.name), ("--refresh", args.refresh)):
        if name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            parser.error(f"{flag} {name!r}: a file name (letters, digits, _ . -): it names <out>/{name}.pt and .md")
    if args.run is not None and not args.name:
        parser.error("--run needs --name")
    if args.run is not None and not (Path(args.run) / "policy.pt").is_file():
        parser.error(f"--run {args.run}: holds no policy.pt (the folder of a finished `liquid-control train` run)")
    if args.refresh is not None:
        missing = [p for p in (policies_dir() / f"{args.refresh}{ext}" for ext in (".pt", ".md")) if not p.is_file()]
        if missing:
            parser.error(f"--refresh {args.refresh}: no shipped {missing[0]}")
    for flag, path in (("--append", args.append), ("--ood-results", args.ood_results)):
        if path is not None and not Path(path).is_file():
            parser.error(f"{flag} {path}: no such file")
    if args.out is None and checkout_dir() is None:  # the installed share is the package's, not a place to write
        parser.error(
            f"--out is required outside a source checkout (the default, {policies_dir()}, is the installed package's)"
        )
    for flag, folder in (("--out", args.out), ("--cache", args.cache)):
        if folder is not None:
            try:
                _check_out(Path(folder), flag)
            except CardError as exc:
                parser.error(str(exc))
    if args.ood_results is not None:
        try:
            carded = Path(args.run) / "policy.pt" if args.run else policies_dir() / f"{args.refresh}.pt"
            ood_section(args.ood_results, args.ood_policy or args.name or args.refresh, carded=carded)
        except CardError as exc:
            parser.error(f"--ood-results {exc}")


def main(argv=None) -> int:
    """Command line: ship a run (``--run``, ``--name``) or re-measure a shipped card (``--refresh``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--run", type=user_path, help="training output folder (holds policy.pt): ship it as --name")
    what.add_argument("--refresh", metavar="NAME", help="re-measure the shipped policies/NAME.pt and rewrite its card")
    what.add_argument("--outcomes", metavar="POLICY", help=argparse.SUPPRESS)  # one path's outcomes as JSON
    parser.add_argument("--name", help="shipped name: policies/<name>.pt and policies/<name>.md (with --run)")
    parser.add_argument(
        "--episodes", type=int, default=100, help="in-distribution episodes to measure (default: %(default)s)"
    )
    parser.add_argument(
        "--check-episodes",
        type=int,
        default=None,
        help=f"first episodes the shipped-policies test replays (default: {CHECK_EPISODES}, or --episodes if fewer)",
    )
    parser.add_argument(
        "--out",
        default=None,
        type=user_path,
        help="destination folder (default: the checkout's policies/; required when installed)",
    )
    parser.add_argument(
        "--machine",
        default=f"{platform.machine()} CPU, shared with other jobs",
        help="note on the machine the training ran on (default: %(default)r)",
    )
    parser.add_argument(
        "--command",
        default=None,
        help="training command to print on the card (default: the one recorded in the policy)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s)")
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars (a line at each tenth of each kernel path's episodes instead); without it, bars "
        "only when stderr is a terminal",
    )
    parser.add_argument(
        "--cache",
        default=None,
        type=user_path,
        help="folder keeping each kernel path's outcomes (reused for the same checkpoint and code)",
    )
    parser.add_argument(
        "--ood-results",
        default=None,
        type=user_path,
        help="results.json of a `liquid-control eval` of this policy: fills the card's OOD section",
    )
    parser.add_argument("--ood-policy", default=None, help="the policy's name in --ood-results (default: --name)")
    parser.add_argument(
        "--append", default=None, type=user_path, help="a Markdown file appended to the card (e.g. baselines)"
    )
    args = parser.parse_args(argv)
    _check_arguments(parser, args)  # before minutes of episodes: a bad request ends in a line, not a traceback
    import torch

    torch.set_num_threads(args.threads)  # several intra-op threads on a busy 2-core machine spin instead of working
    if args.outcomes:  # a child of the card's process, which says what Ctrl-C keeps
        die_with_parent()  # a killed card process leaves no measurement running
        if os.environ.get(PARENT_ENV, str(os.getppid())) != str(os.getppid()):
            return 1  # it was killed before that took effect (while this process imported torch)
        quiet_ctrl_c_in_worker()
        from liquid_control.cells import kernels

        path = "torch" if os.environ.get(NATIVE_ENV) == "0" else "compiled"
        label = f"{args.name or Path(args.outcomes).stem}, {path} path"  # --run's file is policy.pt: --name
        with kernels.recording() as ran:
            outcomes = measure_outcomes(
                args.outcomes,
                args.episodes,
                progress=not args.no_progress,
                label=label,
                log=(lambda line: print(f"model_card: {label}: {line}", file=sys.stderr, flush=True))
                if args.no_progress
                else None,
            )
        print(json.dumps({"kernel_path": kernels.path_of(ran) or kernels.native.describe(), "outcomes": outcomes}))
        return 0
    out = Path(args.out) if args.out else policies_dir()
    cache = Path(args.cache) if args.cache else None
    ood = (args.ood_results, args.ood_policy or args.name or args.refresh) if args.ood_results else None
    progress = not args.no_progress and stderr_is_terminal()  # bars redrawn in a log (CI: 35 minutes) fill it
    try:
        # `kill` stops it as Ctrl-C does: the measuring processes end, one line
        with sigterm_as_interrupt("model_card"):
            if args.refresh:
                path = refresh_card(
                    args.refresh, args.episodes, args.check_episodes, out, cache=cache, ood=ood, progress=progress
                )
            else:
                appendix = Path(args.append).read_text() if args.append else ""
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
                    ood=ood,
                    progress=progress,
                )
    except CardError as exc:  # a corrupt input file: one line naming it, nothing written
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    except OSError as exc:  # a full disk, a read-only folder: every file is written whole or not at all
        where = exc.filename or out
        parser.exit(
            1, f"{parser.prog}: error: cannot write {where}: {exc.strerror or exc}; the files there are as they were\n"
        )
    except KeyboardInterrupt as exc:  # before: a traceback from this process and one from each measuring child
        kept = f"; the kernel paths measured to the end are kept in {cache}" if cache else ""
        stopped, status = ("terminated", 143) if isinstance(exc, Terminated) else ("interrupted", 130)
        parser.exit(status, f"{parser.prog}: {stopped}: no card written{kept}\n")
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
