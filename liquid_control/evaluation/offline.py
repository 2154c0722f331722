"""Offline evaluation on recorded bags (``liquid-control eval --bag``): how far a policy's commands are from the
recorded ones, update by update, when it lives through the recording exactly as ``policy_node`` would.

Each bag is played through a fresh :class:`~liquid_control.runtime.runner.PolicyRunner` around the policy's
own backend (torch, or the exported ONNX model): the same messages, held inputs, dt, rejections and resets
as the node, and the same labels as training from bags (:mod:`liquid_control.bags.stream`). The policy's
action times the node's ``action_scale`` (the command before the node's limiter) is compared with the
recorded command on every labelled update: mean absolute error and RMSE per command element in robot
units, and the training loss (mean squared error with each element scaled to [-1, 1] by the action bounds,
the offline metric of the NCP lane-keeping work). Per bag, a plot of predicted versus recorded commands.

Output folder: ``offline.json`` (every figure), ``report.md``, ``plots/<policy>__<bag>.png`` (``<bag>``: the bag's
folder name, with its parent folders where two bags share a name: ``day1__run_001``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import sys
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import numpy as np

from liquid_control import folder_lock
from liquid_control.atomic_file import atomic_write
from liquid_control.bags import BagError, BagReader, data_spec, stream_updates
from liquid_control.bags.io import expand_bags
from liquid_control.bags.stream import (
    RECORD_INFO,
    StreamStats,
    check_inputs,
    data_overrides,
    default_node_parameters_file,
    input_hints,
    label_hints,
    policy_runner,
    rejection_lines,
    stale_wait_hint,
    unreleased_hint,
)
from liquid_control.conventions import training_record
from liquid_control.conventions.commands import COMMAND_ELEMENTS
from liquid_control.conventions.training_record import DATA_SPEC_KEY
from liquid_control.evaluation.plan import (
    EXPERT,
    EvaluationSetupError,
    checkpoint_file,
    parse_policy_argument,
    validate_output_folder,
)
from liquid_control.evaluation.results import LOG_NAME, OFFLINE_NAME, naming
from liquid_control.figures import pyplot, save_figure
from liquid_control.runtime.backends import BackendError, load_backend


def policy_name_problem(name: str) -> str | None:
    """What keeps ``name`` from naming a policy of the offline report, or None. The name is a piece of its plots'
    file names (plots/NAME__BAG.png, linked percent-encoded from report.md) and a cell of report.md's tables (a |
    in it escaped): a '/' would put the plots elsewhere (``../../x`` outside --out) and a line break end a table row.
    A name with spaces, as a robotics user's run folders have, names one (unlike a simulated evaluation's policy
    names, ``plan.check_policy_name``: items of --paired A,B, which --bag has not)."""
    if not name.strip():
        return "is empty"
    if "/" in name:
        return "holds a '/' (it names the plot files, plots/NAME__BAG.png)"
    if not name.isprintable():
        return "holds a control character (a line break would end report.md's table row)"
    return None


def _policies(specs: list[str]) -> dict[str, str]:
    """``--policy [NAME=]PATH`` values -> {name: policy file}: PATH as the simulated evaluation takes it (a glob, ``~``,
    a shipped policy by name: ``plan.parse_policy_argument``, ``plan.checkpoint_file``), one file per policy; the
    name, when not given, the file's (or for a policy.pt its folder's, also for ``policy.pt`` in the working
    directory)."""
    out = {}
    for item in specs:
        given, paths = parse_policy_argument(item)
        if given == EXPERT and not paths:
            raise ValueError("--policy expert: the privileged expert drives simulated episodes only; give policy files")
        if len(paths) != 1:
            raise ValueError(
                f"--policy {item}: {len(paths)} files ({', '.join(paths)}); --bag evaluates one file per policy: give "
                "each as NAME=PATH"
            )
        path = checkpoint_file(paths[0], given)
        named_by = "file" if Path(path).stem != "policy" else "folder"
        name = given or (Path(path).stem if named_by == "file" else Path(os.path.abspath(path)).parent.name)
        problem = policy_name_problem(name)
        if problem and given:
            raise ValueError(f"--policy {item}: the policy name {name!r} {problem}; give another with NAME=PATH")
        if problem:
            raise ValueError(
                f"--policy {item}: the policy's name, taken from its {named_by}'s name, {name!r} {problem}; "
                f"give one with NAME=PATH (--policy {shlex.quote(f'robot={path}')})"
            )
        if name in out:
            raise ValueError(f"--policy: two policies named {name!r}; name them NAME=PATH")
        out[name] = path
    if not out:
        raise ValueError("--policy: give the policy file(s) to evaluate on the bags (NAME=PATH or PATH)")
    return out


def evaluate_bag(backend, bag: str, spec, allow_truncated: bool = False) -> dict:
    """Play one bag through ``backend``; returns per-update arrays and the runner's counters. A BagError names
    the causes when the policy made no update, or when an input topic kept publishing for longer than max_gap_s
    without a message accepted (as training refuses such a bag: :func:`liquid_control.bags.stream.check_inputs`)."""
    stats = StreamStats()
    rows = []
    runner = policy_runner(backend, spec)
    with BagReader(bag, allow_truncated=allow_truncated) as reader:
        for update in stream_updates(reader, runner, spec, stats):
            label = np.full(len(spec.action_scale), np.nan) if update.label is None else update.label
            reset = update.reset is not None
            rows.append((update.time, update.stamp, update.message_stamp, update.dt, reset, update.action, label))
    if not rows:
        hints = input_hints(stats, spec, runner.spec.sensors) or [f"no state update from {spec.topics}"]
        raise BagError(
            f"{bag}: the policy made no update on this bag ({stats.summary()}): {'; '.join(hints)} {RECORD_INFO}"
        )
    check_inputs(bag, stats, spec, runner.spec.sensors)
    unlabelled = label_hints(stats, spec, len(spec.action_scale))
    if unlabelled:  # not a report of "0 labelled updates, loss nan": nothing to compare the policy with
        raise BagError(
            f"{bag}: no labelled update to compare the policy's commands with ({stats.summary()}): "
            f"{'; '.join(unlabelled)} {RECORD_INFO}"
        )
    time, stamp, message_stamp, dt, reset, action, label = (np.asarray(x) for x in zip(*rows))
    return {
        "time": time,
        "stamp": stamp,
        "message_stamp": message_stamp,
        "dt": dt,
        "reset": reset,
        "action": np.stack(action),
        "label": np.stack(label),
        "stats": stats.summary(),
        # readings rejected as the node rejects them (by topic, with their causes), said as training logs them
        "rejected": rejection_lines(stats, spec, runner.spec.sensors),
    }


def command_errors(action: np.ndarray, label: np.ndarray, scale, low, high) -> dict:
    """Errors on the labelled updates: per element MAE/RMSE in robot units and the normalized training loss."""
    scale, low, high = (np.asarray(v, dtype=np.float64) for v in (scale, low, high))
    ok = np.all(np.isfinite(label), axis=1)
    if not ok.any():
        return {"labelled": 0}
    a, y = action[ok], label[ok]
    diff = (a - y) * scale
    target = np.clip(y, low, high)  # as the training loss: labels beyond the action bounds count at the bound
    loss = float(np.mean(np.mean(((a - target) / (0.5 * (high - low))) ** 2, axis=1)))
    return {
        "labelled": int(ok.sum()),
        "mae": [float(v) for v in np.mean(np.abs(diff), axis=0)],
        "rmse": [float(v) for v in np.sqrt(np.mean(diff**2, axis=0))],
        "loss": loss,
    }


def _plot(path: Path, result: dict, scale, title: str, names) -> None:
    plt = pyplot()
    t = result["time"] - result["time"][0]
    n = result["action"].shape[1]
    fig, axes = plt.subplots(n, 1, figsize=(9, 2.2 * n), sharex=True, squeeze=False)
    for i, ax in enumerate(axes[:, 0]):
        ax.plot(t, result["label"][:, i] * scale[i], color="0.3", lw=1.2, label="recorded")
        ax.plot(t, result["action"][:, i] * scale[i], color="tab:orange", lw=1.2, label="policy")
        for x in t[result["reset"]]:
            ax.axvline(x, color="tab:red", lw=0.8, ls=":")
        ax.set_ylabel(names[i] if i < len(names) else f"command[{i}]")
        ax.grid(alpha=0.3)
    # above the axes, not in them: in the upper right corner it hid the recorded command's end (docs/bag_loop)
    axes[0, 0].legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, fontsize=8, frameon=False)
    # parse_math off: a $ in a bag's name ('Fahrt $\x$') is a character, not a formula matplotlib cannot parse
    axes[0, 0].set_title(title, fontsize=9, loc="left", parse_math=False)
    axes[-1, 0].set_xlabel("time in the bag (s); dotted: liquid state reset")
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def evaluate_offline(
    policies: dict[str, str],
    bags: list[str],
    out_dir: str | Path,
    data: dict | None = None,
    backend: str = "auto",
    plots: bool = True,
    progress: bool = True,
    command: str = "",
) -> dict:
    """Every policy on every bag (``bags``: paths and globs, as ``eval --bag`` takes them); writes offline.json,
    report.md and plots under ``out_dir``; returns the results."""
    data = data or {}
    out = Path(out_dir)
    existed = [folder for folder in (out / "plots", out) if folder.exists()]
    loaded, specs = [], {}  # every policy and its data spec (topics, --node-params) checked before the folder
    plots_to_draw, written = [], []  # drawn once every bag is evaluated: a refused bag leaves no plot of the others
    lock = contextlib.ExitStack()
    try:
        for name, path in policies.items():
            policy_backend = load_backend(path, backend)
            loaded.append((name, path, policy_backend))
            specs[name] = _data_spec(policy_backend, data)
            _say_other_action_scale(name, policy_backend, specs[name], data)
        validate_output_folder(str(out))
        # one evaluation at a time in a folder: two `eval --bag --out` at once each found no report, and each wrote
        # its plots, offline.json and report.md over the other's (a report of one beside the results of the other)
        lock.enter_context(folder_lock.hold(out, "evaluate into another --out", EvaluationSetupError))
        held = [name for name in (LOG_NAME, OFFLINE_NAME, "report.md") if (out / name).exists()]
        if held:  # results are never overwritten silently (a simulated evaluation's least of all)
            raise EvaluationSetupError(
                f"--out {out}: already holds a report ({', '.join(held)}); choose another --out or move it away"
            )
        bags = expand_bags(bags, "--bag")  # before any bag is played: a typo in the last one cost every bag before it
        # the working directory: what the command's relative paths (its bags, --policy, --out) are relative to
        results = {"command": command, "working_directory": os.getcwd(), "bags": list(bags), "policies": {}}
        for name, path, policy_backend in loaded:
            results["policies"][name] = _evaluate_policy(
                name, path, policy_backend, specs[name], bags, out, data, plots_to_draw if plots else None, progress
            )
        for plot_path, *plot in plots_to_draw:
            if not plot_path.exists():
                written.append(plot_path)
            _plot(plot_path, *plot)
        with naming(str(out / OFFLINE_NAME)), atomic_write(out / OFFLINE_NAME, "w") as handle:
            json.dump(results, handle, indent=1)
        written.append(out / OFFLINE_NAME)  # not there before (held): without report.md it would block a rerun
        with naming(str(out / "report.md")), atomic_write(out / "report.md", "w") as handle:
            handle.write(report_markdown(results))
    except BaseException:
        for path in written:  # a failed evaluation (a full disk) leaves no plot nor offline.json without its report
            path.unlink(missing_ok=True)
        lock.close()
        for folder in (out / "plots", out):
            if folder not in existed and folder.is_dir() and not any(folder.iterdir()):
                if not folder_lock.in_use_elsewhere(out):  # refused: the other evaluation's folder, not ours
                    folder.rmdir()  # a refused or failed evaluation (a bad bag) leaves no empty report folder
        raise
    finally:
        lock.close()
        for entry in loaded:
            entry[2].close()
    return results


def bag_names(bags: list[str]) -> dict[str, str]:
    """Each bag's name in the report and in its plot's file name: its folder's name, with as many parent folders
    as tell it from the other bags (day1/run_001 and day2/run_001 shared one row name and one plot, the second
    overwriting the first)."""
    parts = {bag: Path(bag).resolve().parts for bag in bags}
    names = {}
    for bag, own in parts.items():
        n = 1
        while n < len(own) and any(other[-n:] == own[-n:] for b, other in parts.items() if b != bag):
            n += 1
        names[bag] = "/".join(own[-n:])
    return names


def _data_spec(policy_backend, data: dict):
    """Where the policy's inputs and labels are in the bags: ``data``'s ``--node-params``, else the spec a policy
    trained from bags recorded (its training run's parameter file: topics, labels, action_scale, limits; also in its
    ONNX export), else the world's shipped file; ``--topic``, ``--command-topic`` and the label options override."""
    settings = [data.get(k) for k in ("node_params", "topics", "command_topic", "label")]
    return data_spec(policy_backend.config, *settings, trained=policy_backend.training_record.get(DATA_SPEC_KEY))


def _say_other_action_scale(name: str, policy_backend, spec, data: dict) -> None:
    """A warning where ``--node-params`` gives another ``action_scale`` than a policy trained from bags divided its
    labels by, as policy_node says it at configure: the errors are then of commands scaled by the other robot's file
    (e.g. a balancer's file given for a rover policy), which eval --bag reported without a word."""
    if not data.get("node_params"):  # the policy's own recorded spec, or the world's file: nothing to compare
        return
    record = policy_backend.training_record
    problem = training_record.action_scale_problem(record, spec.action_scale)
    if problem:
        source = training_record.describe_source(record, policy_backend.config.get("world"))
        print(
            f"liquid-control eval: warning: policy {name!r}: --node-params {data['node_params']}: {problem} ({source})",
            file=sys.stderr,
        )


def _data_spec_source(policy_backend, data: dict) -> str:
    """Where :func:`_data_spec` took the node's parameters from, in words (the report says it), with the options
    that overrode them (before, a report said 'the ones it was trained with' of topics given by --topic)."""
    if data.get("node_params"):
        source = f"--node-params {data['node_params']}"
    elif policy_backend.training_record.get(DATA_SPEC_KEY) is not None:
        source = "the ones it was trained with (recorded in the policy file)"
    else:
        world = policy_backend.config.get("world")
        shipped = default_node_parameters_file(world)
        source = f"{shipped}, the file shipped for world {world}" if shipped else "the node's defaults"
    given = [f"--topic {sensor}={topic}" for sensor, topic in (data.get("topics") or {}).items()]
    if data.get("command_topic"):
        given.append(f"--command-topic {data['command_topic']}")
    options = {"mode": "--label", "offset_s": "--label-offset-s", "max_wait_s": "--label-max-wait-s"}
    given += [f"{options[key]} {value}" for key, value in (data.get("label") or {}).items() if key in options]
    return f"{source}, with {' '.join(given)}" if given else source


def _trained_on(policy_backend, path: str | Path) -> dict[str, str]:
    """``{bag path: "training" | "validation"}``: the bags a policy trained from bags learned from or selected its
    epoch on, as its file records them (``training.bag_data``: resolved paths); empty for a simulated run, an older
    file or an ONNX export given as such (which carries no bags). A ``.pt`` run by backend auto through its export
    (the ONNX beside it, exported from this very file) is read for them."""
    meta = getattr(getattr(policy_backend, "policy", None), "metadata", None) or {}
    if not meta and Path(path).suffix == ".pt" and Path(path).is_file():
        from liquid_control.cells.checkpoint import read_plain_torch_file

        try:
            meta = read_plain_torch_file(path).get("metadata") or {}
        except Exception:  # the backend ran its export; a file torch cannot read here marks nothing
            meta = {}
    if meta.get("training_data") != "bags":
        return {}
    found = {str(bag): "validation" for bag in meta.get("validation_bags") or []}
    return found | {str(bag): "training" for bag in meta.get("training_bags") or []}


def _evaluate_policy(name, path, policy_backend, spec, bags, out: Path, data: dict, plots: list | None, progress: bool):
    """One policy on every bag: per-bag and pooled command errors; ``plots`` (unless None) gets the arguments of
    :func:`_plot` of each bag's plot under ``out/plots``."""
    from tqdm import tqdm

    config = policy_backend.config
    low, high = config["action"]["low"], config["action"]["high"]
    names = [f"{name} ({unit})" for name, unit in COMMAND_ELEMENTS.get(config["action"].get("kind"), ())]
    per_bag, actions, labels = {}, [], []
    shown = bag_names(bags)
    trained_on = _trained_on(policy_backend, path)
    for bag in tqdm(bags, desc=f"{name} on bags", disable=not progress, leave=False):
        result = evaluate_bag(policy_backend, bag, spec, data.get("allow_truncated", False))
        errors = command_errors(result["action"], result["label"], spec.action_scale, low, high)
        per_bag[bag] = {
            "name": shown[bag],
            "updates": int(len(result["time"])),
            "duration_s": result["stats"]["duration_s"],
            **errors,
            "counters": result["stats"],
        }
        waited = stale_wait_hint(result["stats"], spec)  # a stretch with no update, as the node says it
        if waited:
            per_bag[bag]["waited"] = waited
        unreleased = unreleased_hint(result["stats"])  # the bag's last reorder_lag_s: said in the report only
        if unreleased:
            per_bag[bag]["unreleased"] = unreleased
        if result.get("rejected"):
            per_bag[bag]["rejected"] = "; ".join(result["rejected"])
        if str(Path(bag).resolve()) in trained_on:  # its error is not a held-out one
            per_bag[bag]["trained_on"] = trained_on[str(Path(bag).resolve())]
        actions.append(result["action"])
        labels.append(result["label"])
        if plots is not None:
            plot = out / "plots" / f"{name}__{shown[bag].replace('/', '__')}.png"
            loss = errors.get("loss", float("nan"))
            plots.append((plot, result, spec.action_scale, f"{name} on {shown[bag]}: loss {loss:.4f}", names))
            per_bag[bag]["plot"] = str(plot.relative_to(out))
    pooled = command_errors(np.concatenate(actions), np.concatenate(labels), spec.action_scale, low, high)
    elements = names or [f"command[{i}]" for i in range(len(low))]
    return {
        "path": str(path),
        "spec": spec.describe(),
        "spec_source": _data_spec_source(policy_backend, data),
        "elements": elements,
        "overall": pooled,
        "bags": per_bag,
    }


def replay_comparison_problem(backend, policy) -> str | None:
    """Why :func:`match_replayed` cannot check the policy of ``backend`` (its file ``policy``), else None. The
    replayed commands are matched to their updates by stamp, which of the messages policy_node publishes only a
    TwistStamped (``command_type: twist_stamped``) carries, and the node publishes one only for a twist policy; a
    policy of other commands (the balancers' wheel torques) goes out as a Float64MultiArray, which has no stamp."""
    from liquid_control.conventions.params import command_type_problem

    spec = backend.spec
    if command_type_problem("twist_stamped", spec.action_size, spec.action_kind) is None:
        return None
    return (
        f"{policy}: the replay comparison matches each command policy_node published to the update it answers by "
        f"the stamp of a TwistStamped (command_type twist_stamped), which the node publishes for a twist policy of 2 "
        f"actions [linear, angular] only; this policy's {spec.action_size} {spec.action_kind!r} actions go out as "
        "std_msgs/Float64MultiArray (command_type float64_multi_array), which carries no stamp, so a replay of it "
        "cannot be checked; `liquid-control eval --bag` computes its commands on the bag offline"
    )


def _in_order(stamps, commands) -> dict:
    """``commands`` by (stamp in ns, how many commands of that stamp came before it)."""
    keyed, seen = {}, Counter()
    for stamp, command in zip(stamps, commands, strict=True):
        ns = int(round(float(stamp) * 1e9))
        keyed[(ns, seen[ns])] = np.asarray(command)
        seen[ns] += 1
    return keyed


def match_replayed(policy: str, bag: str, replayed: str, data: dict | None = None, topic: str = "/cmd_vel") -> dict:
    """Compare the commands a policy_node published while ``bag`` was replayed into it (recorded in the bag
    ``replayed``, TwistStamped: each stamped with the message it answers) with the same policy's commands
    computed offline on ``bag``: how many updates found their command (commands of one stamp in order), and the
    largest difference. A policy whose commands the node cannot publish stamped (:func:`replay_comparison_problem`),
    or commands recorded in another type, are a ValueError saying so, before the offline run."""
    from liquid_control.bags.messages import TWIST_STAMPED, command_vector, stamp_seconds

    data = data or {}
    backend = load_backend(policy)
    problem = replay_comparison_problem(backend, policy)
    if problem:
        backend.close()
        raise ValueError(problem)
    with BagReader(replayed) as reader:
        info = reader.require(topic)
        if TWIST_STAMPED not in info.msgtypes:
            backend.close()
            raise ValueError(
                f"{replayed}: the commands on {topic} are {' and '.join(info.msgtypes)}, which carry no stamp to match "
                f"them to the updates of {bag} by; run policy_node with command_type twist_stamped for the replay"
            )
    spec = _data_spec(backend, data)
    offline = evaluate_bag(backend, bag, spec)
    backend.close()
    # keyed as the node stamps its commands, by the stamp of the message each update answers, and the k-th of
    # that stamp in order: a frame and an IMU reading may share a stamp, and keyed by the update's stamp a late
    # frame's update (dt 0, the IMU update's stamp before it) overwrote that update's command and failed the check
    expected = _in_order(offline["message_stamp"], offline["action"] * np.asarray(spec.action_scale))
    stamps, commands = [], []
    with BagReader(replayed) as reader:
        for msg in reader.messages([topic]):
            decoded = msg.decode()
            stamps.append(stamp_seconds(decoded))
            commands.append(command_vector(decoded, TWIST_STAMPED))
    got = _in_order(stamps, commands)
    matched = sorted(set(expected) & set(got))
    diffs = [float(np.max(np.abs(got[k] - expected[k]))) for k in matched]
    return {
        "bag": str(bag),
        "offline_updates": len(expected),
        "recorded_commands": len(got),
        "matched": len(matched),
        "max_abs_diff": max(diffs) if diffs else float("nan"),
    }


def _fmt(values, elements=None) -> str:
    """Per-element figures, each named by its command element (with units) where ``elements`` are known."""
    if not values:
        return "n/a"
    if not elements:
        return ", ".join(f"{v:.4f}" for v in values)
    return ", ".join(f"{e} {v:.4f}" for e, v in zip(elements, values))


TRAINED_ON = {"training": " (trained on)", "validation": " (validation)"}  # a bag's mark in the report's table


def _waited(results: dict) -> list[str]:
    """``POLICY on BAG: ...`` for each bag on which update messages made no update, waiting for inputs stamped too
    far apart (:func:`stale_wait_hint`): the report and the console say it, not only the counters."""
    return [
        f"{name} on {row.get('name', Path(bag).name)}: {row['waited']}"
        for name, res in results["policies"].items()
        for bag, row in res["bags"].items()
        if row.get("waited")
    ]


def _rejected(results: dict) -> list[str]:
    """``POLICY on BAG: TOPIC (SENSOR): R of N messages rejected, ...`` for each bag with readings rejected as
    policy_node rejects them: eval said nothing of them where train's log names them (``rejected.<reason>``)."""
    return [
        f"{name} on {row.get('name', Path(bag).name)}: {row['rejected']}"
        for name, res in results["policies"].items()
        for bag, row in res["bags"].items()
        if row.get("rejected")
    ]


def report_markdown(results: dict) -> str:
    """The report: one row per policy and bag, then the pooled figures."""
    lines = ["# Offline evaluation on recorded bags", ""]
    if results.get("command"):
        folder = results.get("working_directory")
        lines += [f"`{results['command']}`" + (f" in `{folder}`" if folder else ""), ""]
    lines += [
        "Each bag played through the policy's PolicyRunner with the node's limits; errors on the labelled updates",
        "(command before the node's limiter vs recorded command, robot units; loss: normalized MSE as in training).",
        "MAE and RMSE list the command's elements in order: "
        + "; ".join(f"{name}: {', '.join(res.get('elements') or ['?'])}" for name, res in results["policies"].items())
        + ".",
        "Topics, labels, action_scale and dt limits: "
        + "; ".join(f"{name}: {res.get('spec_source', '?')}" for name, res in results["policies"].items())
        + ".",
        "",
        "| policy | bag | updates | labelled | MAE | RMSE | loss | plot |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    cell = {name: name.replace("|", "\\|") for name in results["policies"]}  # a | would end the cell
    for name, res in results["policies"].items():
        for bag, row in res["bags"].items():
            # percent-encoded: a link target ends at a space (a bag named 'Fahrt 1'), and a | ends the cell
            plot = f"![]({quote(row['plot'])})" if row.get("plot") else ""
            shown = row.get("name", Path(bag).name).replace("|", "\\|") + TRAINED_ON.get(row.get("trained_on"), "")
            lines.append(
                f"| {cell[name]} | {shown} | {row['updates']} | {row.get('labelled', 0)} | "
                f"{_fmt(row.get('mae'))} | {_fmt(row.get('rmse'))} | {row.get('loss', math.nan):.5f} | {plot} |"
            )
    waited = _waited(results) + [
        f"{name} on {row.get('name', Path(bag).name)}: {row['unreleased']}"
        for name, res in results["policies"].items()
        for bag, row in res["bags"].items()
        if row.get("unreleased")
    ]
    if waited:
        lines += ["", "Where updates did not happen:", ""] + [f"- {line}" for line in waited]
    rejected = _rejected(results)
    if rejected:
        lines += ["", "Messages rejected (as policy_node rejects them):", ""] + [f"- {line}" for line in rejected]
    if any(row.get("trained_on") for res in results["policies"].values() for row in res["bags"].values()):
        lines += [
            "",
            "(trained on): a bag the policy was trained on; (validation): one whose loss selected its epoch; their "
            "errors are not held-out errors.",
        ]
    lines += ["", "| policy | labelled updates | MAE | RMSE | loss |", "| --- | --- | --- | --- | --- |"]
    for name, res in results["policies"].items():
        o = res["overall"]
        lines.append(
            f"| {cell[name]} | {o.get('labelled', 0)} | {_fmt(o.get('mae'))} | {_fmt(o.get('rmse'))} | "
            f"{o.get('loss', math.nan):.5f} |"
        )
    return "\n".join(lines) + "\n"


def run_offline(args, command: str = "") -> int:
    """``liquid-control eval --bag ...``; a refused request raises EvaluationSetupError (the CLI prints it)."""
    try:
        policies = _policies(args.policy)
        results = evaluate_offline(
            policies,
            args.bag,
            args.out,
            data=data_overrides(args),
            progress=not args.no_progress,
            plots=not args.no_example,
            command=command,
        )
    except (BagError, BackendError, ValueError) as exc:  # the caller (evaluation.cli) prints it, exit status 2
        raise EvaluationSetupError(str(exc)) from None
    for name, res in results["policies"].items():
        o, elements = res["overall"], res.get("elements")
        seen = [row["name"] for row in res["bags"].values() if row.get("trained_on")]
        print(
            f"{name}: {o.get('labelled', 0)} labelled updates on {len(results['bags'])} bag(s): MAE "
            f"{_fmt(o.get('mae'), elements)}; RMSE {_fmt(o.get('rmse'), elements)}; loss {o.get('loss', math.nan):.5f}"
            + (f" ({len(seen)} of the bags it trained or selected its epoch on: {', '.join(seen)})" if seen else "")
        )
    for line in _waited(results):
        print(f"liquid-control eval: warning: {line}", file=sys.stderr)
    for line in _rejected(results):
        print(f"liquid-control eval: {line}")
    print(f"liquid-control eval: offline report -> {Path(args.out) / 'report.md'}")
    return 0
