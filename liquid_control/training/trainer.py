"""The training run: expert demonstrations, DAgger rounds and behaviour cloning, with resumable checkpoints.

Schedule (all numbers from the config's ``training`` section)::

    round 0:   collect `demonstrations` expert episodes      -> `epochs_first` BC epochs  -> evaluate
    round r>0: collect `dagger_episodes` with beta = beta[r-1] -> `epochs_per_round` epochs -> evaluate

BC always trains on everything collected so far (DAgger's aggregation). After each round the policy drives
`eval_episodes` fixed held-out episodes alone; the best round (ties: the later) becomes ``policy.pt``.

Everything random is derived from (seed, round, episode) or (seed, epoch), never from the history of a
process, so a run killed at any point and continued with ``resume=True`` produces the same result as one
that was never interrupted: finished epochs come from ``checkpoint.pt`` (written atomically after every
epoch and every evaluation), finished episodes from their files under ``data/``.

Output folder: ``config.yaml`` (the complete config), ``data/round_XX/ep_XXXX.npz``, ``checkpoint.pt``,
``metrics.csv`` (+ ``tensorboard/`` if TensorBoard is installed), ``curves.png`` (metrics.csv drawn), ``policy.pt`` (the
selected policy).
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from liquid_control.atomic_file import atomic_write
from liquid_control.cells.checkpoint import read_plain_torch_file
from liquid_control.paths import code_commit
from liquid_control.policy import (
    Policy,
    PolicyConfigError,
    apply_overrides,
    load_config,
    save_policy,
    validate_config,
)
from liquid_control.policy.agent import DEFAULT_MAX_GAP_S
from liquid_control.policy.checkpoint import atomic_torch_save
from liquid_control.policy.config import CONTINUOUS_CORES
from liquid_control.processes import available_cpus, interrupt_in_ctypes

from .augment import EpisodeSun
from .bc import DataParallel, bc_epoch, count_chunks, has_dropout
from .curves import plot_curves
from .data import Episode, EpisodeFileError, load_episode, resample_episode, save_episode, split_at_gaps
from .episodes import (  # noqa: F401 - make_env, world_class and the seeds are part of this module's API
    MAX_DAGGER_ROUNDS,
    MAX_ROUND_EPISODES,
    MAX_TRAIN_SEED,
    SELECTION_SEED_BASE,
    TRAIN_SEED_BASE,
    EpisodeWorkerError,
    EpisodeWorkers,
    collect_episode,
    episode_seed,
    make_env,
    measure_success,
    round_beta,
    selection_seeds,
    world_class,
)

CHECKPOINT_FORMAT = "liquid_control.training/1"
METRIC_COLUMNS = ["epoch", "round", "kind", "loss", "success", "episodes", "updates", "lr", "wall_s"]
NETWORK_SECTIONS = ("world", "observation", "encoder", "core", "action")  # what a warm start shares (init_from)
START_FILE = "started_from.json"  # a warm start's record until the run's first checkpoint holds it
COMMAND_FILE = "command.txt"  # the run's first command, for a resume before its first checkpoint holds it


class TrainingError(RuntimeError):
    """A run that cannot start or continue (existing output folder, changed config, lost data)."""


@dataclass
class TrainResult:
    """What ``train`` returns: the run folder, the selected policy and its selection success, epochs, wall time."""

    out_dir: Path
    policy_path: Path
    success: float | None  # success rate of the selected policy on the selection episodes (None: not measured)
    selected_round: int
    epochs: int
    wall_s: float  # training wall-clock seconds, summed over resumed parts


def epoch_torch_seed(seed: int, epoch: int) -> int:
    """The torch seed of an epoch's batches: unchanged for every seed that ever ran, and within torch's
    [0, 2**64) for any seed >= 0 (a bag run's --seed has no other bound)."""
    return (seed * 100_003 + epoch) % 2**64


def _cosine_lr(tcfg: dict, epoch: int, total: int) -> float:
    frac = epoch / max(total - 1, 1)
    return tcfg["lr_final"] + (tcfg["lr"] - tcfg["lr_final"]) * 0.5 * (1.0 + math.cos(math.pi * frac))


class _Run:
    """State of one training run in ``out_dir`` (see the module docstring)."""

    def __init__(
        self,
        config: dict,
        out_dir: Path,
        seed: int,
        progress: bool,
        command: str | None,
        log,
        workers: int = 1,
        bc_copies: int = 1,
    ):
        self.config, self.out, self.seed, self.progress, self.command = config, out_dir, seed, progress, command
        self.log = log
        self.workers = EpisodeWorkers(config, workers) if workers > 1 else None  # else episodes run here
        t = config["training"]
        self.rounds = 1 + t["dagger_rounds"]
        self.round_epochs = [t["epochs_first"]] + [t["epochs_per_round"]] * t["dagger_rounds"]
        self.total_epochs = sum(self.round_epochs)
        torch.manual_seed(seed)
        self.policy = Policy(config)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=t["lr"], weight_decay=t["weight_decay"])
        self.parallel = DataParallel(self.policy, bc_copies) if bc_copies > 1 else None  # else BC on one thread
        self.epoch_done = 0
        self.rounds_evaluated = -1
        self.best = None  # {"success", "round", "epoch", "state_dict"}
        self.rows: list[dict] = []
        self.wall_s = 0.0
        self.longest_dt = 0.0  # of the updates trained on (what core.max_step should not undercut, see finish)
        self.started_from = None  # {"path", "sha256"} of the policy whose weights the run started from (init_from)
        self.resumed_finished = False  # resumed after it wrote policy.pt: nothing to do, the file kept
        self.code = [code_commit()]  # the code of each part of the run that differed from the one before
        self.threads = 1  # --threads of the run (train sets it; None: not known): recorded, so a resume keeps it
        self._t0 = time.monotonic()
        self.writer = _tensorboard(out_dir / "tensorboard")

    # ------------------------------------------------------------------------------------------- persistence
    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"

    def _elapsed(self) -> float:
        now = time.monotonic()
        self.wall_s += now - self._t0
        self._t0 = now
        return self.wall_s

    def save_checkpoint(self) -> None:
        self._elapsed()
        atomic_torch_save(
            {
                "format": CHECKPOINT_FORMAT,
                "config": self.config,
                "seed": self.seed,
                "epoch_done": self.epoch_done,
                "rounds_evaluated": self.rounds_evaluated,
                "policy": self.policy.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "best": self.best,
                "rows": self.rows,
                "wall_s": self.wall_s,
                "longest_dt": self.longest_dt,  # a resumed run may not load every round's episodes again
                "started_from": self.started_from,
                "command": self.command,  # the run's first command: the one that reproduces it
                "code": self.code,
                "threads": self.threads,  # a resume with another count would train another policy: refused
            },
            self.checkpoint_path,
        )
        self._write_metrics()

    def load_checkpoint(self) -> None:
        ck = read_training_checkpoint(self.checkpoint_path, self.config, self.seed)
        self.policy.load_state_dict(ck["policy"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.epoch_done, self.rounds_evaluated = int(ck["epoch_done"]), int(ck["rounds_evaluated"])
        self.best, self.rows, self.wall_s = ck["best"], list(ck["rows"]), float(ck["wall_s"])
        self.longest_dt = max(self.longest_dt, float(ck.get("longest_dt", 0.0)))
        self.started_from = ck.get("started_from")
        self.command = ck.get("command") or self.command  # not `--resume`'s: policy.pt names how the run began
        code = list(ck.get("code") or ["not recorded (checkpoint of an older version)"])
        self.code = code if code[-1] == self.code[0] else code + self.code
        self.resumed_finished = self.finished() and (self.out / "policy.pt").is_file()

    def start_from(self, state_dict: dict, record: dict) -> None:
        """A warm start (fine-tuning, e.g. the deployed policy on the next round's bags): the weights and input
        normalisation of a trained policy of the same network (:func:`warm_start`) instead of a random draw."""
        self.policy.load_state_dict(state_dict)
        self.started_from = dict(record)
        self.log(f"starting from the weights of {record['path']} (--init-from)")

    def _write_metrics(self) -> None:
        with atomic_write(self.out / "metrics.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=METRIC_COLUMNS)
            writer.writeheader()
            writer.writerows(self.rows)

    def _row(self, **values) -> None:
        row = {k: values.get(k, "") for k in METRIC_COLUMNS}
        row["wall_s"] = round(self._elapsed(), 2)
        self.rows.append(row)
        if self.writer is not None:
            for key in ("loss", "success"):
                if values.get(key, "") != "":
                    self.writer.add_scalar(f"{values['kind']}/{key}", float(values[key]), int(values["epoch"]))
            self.writer.flush()

    # ------------------------------------------------------------------------------------------- stages
    def collect(self, env, round_index: int) -> list[Episode]:
        """Episodes of one round: loaded from ``data/`` where finished, collected otherwise (here, or by the
        episode workers: the same episodes); as the policy trains on them (a ``resample_hz`` policy: resampled
        to its fixed rate)."""
        t = self.config["training"]
        count = t["demonstrations"] if round_index == 0 else t["dagger_episodes"]
        beta = round_beta(self.config, round_index)
        folder = self.out / "data" / f"round_{round_index:02d}"
        first_epoch = sum(self.round_epochs[:round_index])
        episodes: list[Episode | None] = [None] * count
        missing = []
        for i in range(count):
            seed = episode_seed(self.seed, round_index, i)
            episodes[i] = self._stored_episode(
                folder / f"ep_{i:04d}.npz", seed, trained_on=self.epoch_done > first_epoch
            )
            if episodes[i] is None:
                if self.epoch_done > first_epoch:
                    raise TrainingError(
                        f"{folder / f'ep_{i:04d}.npz'}: missing, but the run already trained on round {round_index}; "
                        f"the data folder was changed, start a new run"
                    )
                missing.append(i)
        bar = _bar(count, f"round {round_index} collect (beta={beta:g})", self.progress)
        bar.update(count - len(missing))
        policy = self.policy if beta < 1.0 else None
        if self.workers is not None:
            finished = self.workers.collect(policy, self.seed, round_index, missing)
        else:
            finished = ((i, collect_episode(env, policy, self.config, self.seed, round_index, i)) for i in missing)
        try:
            for i, episode in finished:  # each saved as soon as it is done: a failure later loses nothing of it
                save_episode(folder / f"ep_{i:04d}.npz", episode)
                episodes[i] = episode
                bar.update(1)
        except EpisodeWorkerError as exc:
            raise TrainingError(
                f"round {round_index}: {exc} (finished episodes are saved; --resume continues)"
            ) from exc
        bar.close()
        collected = len(missing)
        # One "collect" row per round, also when the run was killed before it was saved (it only reaches
        # checkpoint.pt with the first epoch): a resumed round that found all its episodes on disk still has one.
        if not any(row["kind"] == "collect" and int(row["round"]) == round_index for row in self.rows):
            success = float(np.mean([ep.success for ep in episodes]))
            self._row(
                epoch=first_epoch,
                round=round_index,
                kind="collect",
                success=round(success, 4),
                episodes=count,
                updates=sum(len(ep) for ep in episodes),
            )
            self._write_metrics()
            self.log(
                f"round {round_index}: {count} episodes (beta={beta:g}, {collected} collected now), driver "
                f"success {success:.0%}, {sum(len(ep) for ep in episodes)} updates"
            )
        # a gap over max_gap_s: the agent and the node reset the state there, so training does too
        pieces = [piece for ep in episodes for piece in split_at_gaps(ep, DEFAULT_MAX_GAP_S)]
        if len(pieces) > len(episodes):
            self.log(
                f"round {round_index}: {len(pieces) - len(episodes)} update gap(s) over {DEFAULT_MAX_GAP_S:g} s "
                f"reset the state: trained as {len(pieces)} sequences from {len(episodes)} episodes"
            )
        episodes = pieces
        hz = self.config["observation"]["resample_hz"]
        episodes = episodes if hz is None else [resample_episode(ep, hz) for ep in episodes]
        self.note_dts(episodes)
        return episodes

    def note_dts(self, episodes: list[Episode]) -> None:
        """Keep the longest dt of the training updates (recorded in policy.pt, see ``finish``)."""
        self.longest_dt = max([self.longest_dt] + [float(ep.dt.max()) for ep in episodes if len(ep)])

    def _stored_episode(self, path: Path, seed: int, trained_on: bool) -> Episode | None:
        """The finished episode in ``path`` (None: to collect). A corrupt file is set aside and collected again
        when that gives the same episode (the round was not trained on yet: same seed, same policy); otherwise
        the run cannot continue identically and the error says what to do. An episode of another seed means
        the run was resumed with another ``seed`` before its first checkpoint: refused, nothing is mixed."""
        if not path.is_file():
            return None
        try:
            episode = load_episode(path)
        except EpisodeFileError as exc:
            if trained_on:
                raise TrainingError(
                    f"{exc}; the run already trained on it, so it cannot be collected again identically. Restore "
                    f"the file, or train again into a new folder (same config and seed: the same run, bit for bit)"
                ) from None
            aside = path.with_name(path.name + ".corrupt")
            path.replace(aside)
            self.log(f"{exc}; moved to {aside.name}, collecting the episode again (same seed and policy)")
            return None
        if episode.seed != seed:
            raise TrainingError(
                f"{path}: collected with episode seed {episode.seed}, this run expects {seed}: the run in {self.out} "
                f"was started with another --seed; resume with that seed, or train into a new folder"
            )
        return episode

    def fit_normalization(self, episodes: list[Episode]) -> None:
        """Vector-input statistics from the first demonstrations (fixed afterwards; stored in the policy). A warm
        start keeps its policy's: the weights it starts from were trained on those."""
        if self.policy.vectors is None or self.started_from is not None:
            return
        keys = self.policy.vector_keys
        data = np.concatenate(
            [np.concatenate([ep.observations[k] for k in keys], axis=1) for ep in episodes], dtype=np.float64
        )  # float64: one huge but finite reading (1e20) overflowed float32's variance
        largest = np.abs(data).max(axis=0)
        unusable = ~(largest < 1e30)  # NaN too: no sensor reads that; its statistics would flatten the column
        if unusable.any():
            columns = [f"{k}[{i}]" for k in keys for i in range(self.policy.config["observation"]["vectors"][k])]
            bad = [f"{columns[i]} (largest |value| {largest[i]:.3g})" for i in np.flatnonzero(unusable)]
            raise TrainingError(
                f"vector input statistics unusable for {', '.join(bad)} over {len(episodes)} training episode(s): "
                "a reading of that size is no sensor's; check the recording (or the vector input's units)"
            )
        self.policy.vectors.set_normalization(data.mean(axis=0), data.std(axis=0))

    def train_epoch(self, episodes: list[Episode], epoch: int, round_index: int) -> None:
        t = self.config["training"]
        lr = _cosine_lr(t, epoch, self.total_epochs)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        rng = np.random.default_rng([self.seed, 7, epoch])
        torch.manual_seed(epoch_torch_seed(self.seed, epoch))
        order_preview = count_chunks(episodes, t["batch_size"], t["sequence_length"])
        bar = _bar(order_preview, f"epoch {epoch + 1}/{self.total_epochs}", self.progress)

        def tick(loss):
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

        stats = bc_epoch(
            self.policy,
            self.optimizer,
            episodes,
            batch_size=t["batch_size"],
            sequence_length=t["sequence_length"],
            grad_clip=t["grad_clip"],
            rng=rng,
            augmentation=t["augmentation"],
            yaw_recovery=t["yaw_recovery"],
            turn_limits=(self.config["action"]["low"][-1], self.config["action"]["high"][-1]),
            progress=tick,
            parallel=self.parallel,
        )
        bar.close()
        self._check_finite(epoch, stats["loss"], lr)
        self.epoch_done = epoch + 1
        self._row(
            epoch=self.epoch_done,
            round=round_index,
            kind="train",
            loss=round(stats["loss"], 6),
            episodes=len(episodes),
            updates=stats["updates"],
            lr=f"{lr:.3g}",
        )
        self.save_checkpoint()

    def _check_finite(self, epoch: int, loss: float, lr: float) -> None:
        """A diverged epoch (a learning rate far too high) is refused before it is saved: the checkpoint keeps the
        last finite epoch, and no policy of NaN weights is written as if training had succeeded."""
        broken = [name for name, p in self.policy.named_parameters() if not torch.isfinite(p).all()]
        if np.isfinite(loss) and not broken:
            return
        kept = f"{self.checkpoint_path} keeps epoch {self.epoch_done}" if self.epoch_done else "no epoch was saved"
        raise TrainingError(
            f"epoch {epoch + 1}: training diverged (loss {loss:.3g}"
            + (
                f"; non-finite weights in {', '.join(broken[:3])}" + (", ..." if len(broken) > 3 else "")
                if broken
                else ""
            )
            + f") at learning rate {lr:.3g}; {kept}. Train into a new folder with a lower training.lr "
            + "(and training.lr_final no higher)"
            + (
                " or a tighter training.grad_clip"
                if self.config["training"]["grad_clip"] > 0
                else " or training.grad_clip"
            )
        )

    def evaluate(self, env, round_index: int) -> None:
        n = self.config["training"]["eval_episodes"]
        success = None
        if n > 0:
            cap = self.config["training"]["max_episode_steps"]
            if self.workers is not None:
                try:
                    outcomes = self.workers.outcomes(self.policy, selection_seeds(n), cap)
                except EpisodeWorkerError as exc:
                    raise TrainingError(f"round {round_index}: {exc} (--resume repeats the selection)") from exc
                success = float(np.mean([ok for ok, _ in outcomes]))
            else:
                success = measure_success(self.policy, selection_seeds(n), env=env, max_steps=cap)
            self.log(f"round {round_index}: policy alone succeeds in {success:.0%} of {n} selection episodes")
        self._row(
            epoch=self.epoch_done,
            round=round_index,
            kind="eval",
            success="" if success is None else round(success, 4),
            episodes=n,
        )
        score = -1.0 if success is None else success
        if self.best is None or score >= self.best["success"]:
            self.best = {
                "success": score,
                "round": round_index,
                "epoch": self.epoch_done,
                "state_dict": {k: v.clone() for k, v in self.policy.state_dict().items()},
            }
        self.rounds_evaluated = round_index
        self.save_checkpoint()

    def run(self) -> TrainResult:
        if self.resumed_finished:  # nothing to train: its policy.pt is kept, no episode is loaded or collected
            self.close()
            return self.finish()
        env = make_env(self.config)
        episodes: list[Episode] = []
        stopped = True  # until the rounds finish: an interrupt or a failure, the workers are not waited for
        try:
            for r in range(self.rounds):
                first_epoch = sum(self.round_epochs[:r])
                if self.rounds_evaluated >= r and self.epoch_done >= first_epoch + self.round_epochs[r]:
                    if r + 1 < self.rounds:  # finished round: its data are still needed by later epochs
                        episodes += self.collect(env, r)
                    continue
                episodes += self.collect(env, r)
                if r == 0 and self.epoch_done == 0:
                    self.fit_normalization(episodes)
                for epoch in range(max(first_epoch, self.epoch_done), first_epoch + self.round_epochs[r]):
                    self.train_epoch(episodes, epoch, r)
                if self.rounds_evaluated < r:
                    self.evaluate(env, r)
            stopped = False
        finally:
            env.close()
            self.close(abort=stopped)
        return self.finish()

    def close(self, abort: bool = False) -> None:
        """Stop the episode workers (``abort``: at once) and the data-parallel threads, close TensorBoard."""
        if self.workers is not None:
            self.workers.close(abort)
        if self.parallel is not None:
            self.parallel.close()
        if self.writer is not None:
            self.writer.close()

    def extra_metadata(self) -> dict:
        """Metadata a subclass adds to policy.pt (training.bag_data: the bags it learned from)."""
        return {}

    def finished(self) -> bool:
        """Every epoch trained and every round evaluated."""
        return self.epoch_done >= sum(self.round_epochs) and self.rounds_evaluated >= self.rounds - 1

    def finish(self) -> TrainResult:
        if self.resumed_finished:  # rewriting policy.pt would change its SHA-256, which its exports record
            path = self.out / "policy.pt"
            self.log(f"{self.out}: the run had finished; {path} kept as it was")
            success = None if self.best["success"] < 0 else self.best["success"]
            return TrainResult(self.out, path, success, self.best["round"], self.epoch_done, self.wall_s)
        selected = Policy(self.config)
        selected.load_state_dict(self.best["state_dict"])
        success = None if self.best["success"] < 0 else self.best["success"]
        t = self.config["training"]
        metadata = {
            "seed": self.seed,
            "selected_round": self.best["round"],
            "selected_epoch": self.best["epoch"],
            "selection_success": success,
            "selection_episodes": t["eval_episodes"],
            "parameters": selected.num_parameters(),
            "training_wall_s": round(self.wall_s, 1),
            "training_episodes": t["demonstrations"] + t["dagger_rounds"] * t["dagger_episodes"],
            "command": self.command or "",
            "torch": str(torch.__version__),
            "code": self.code[0] if len(self.code) == 1 else list(self.code),  # commit (or version) that trained it
            "training_dt_max_s": round(self.longest_dt, 6),
        }
        if self.started_from is not None:
            metadata["started_from"] = self.started_from
        metadata.update(self.extra_metadata())
        max_step = self.config["core"]["max_step"]
        if self.config["core"]["type"] in CONTINUOUS_CORES and not self.config["core"]["ignore_dt"]:
            self.log(
                f"longest dt trained on: {self.longest_dt:.4f} s; core.max_step "
                + (
                    f"{max_step:g} s: a longer dt is integrated in sub-steps of at most that"
                    + (" (in training too)" if self.longest_dt > max_step else " at run time")
                    if max_step is not None
                    else "not set: a longer dt at run time is one step, which the cell never saw in training "
                    f"(set core.max_step a little above the longest, e.g. {max(1.25 * self.longest_dt, 1e-4):.2g}, "
                    "to integrate longer gaps in sub-steps of the length it trained on)"
                )
            )
        plot_curves(self.rows, self.out / "curves.png", f"{self.config['name']}, seed {self.seed}")  # before policy.pt
        path = save_policy(self.out / "policy.pt", selected, metadata)
        self.log(
            f"selected round {self.best['round']} (epoch {self.best['epoch']}), selection success "
            f"{'n/a' if success is None else f'{success:.0%}'}; wrote {path} after {self.wall_s:.0f} s"
        )
        return TrainResult(
            out_dir=self.out,
            policy_path=path,
            success=success,
            selected_round=self.best["round"],
            epochs=self.epoch_done,
            wall_s=self.wall_s,
        )


def read_training_checkpoint(path: Path, config: dict | None = None, seed: int | None = None) -> dict:
    """Read ``checkpoint.pt``; with ``config``/``seed``, refuse one written by a run with others."""
    try:
        ck = read_plain_torch_file(path)
    except Exception as exc:
        why = str(exc) or type(exc).__name__  # an empty file: EOFError('')
        raise TrainingError(f"{path}: cannot read the training checkpoint: {why}") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path}: not a liquid_control training checkpoint")
    if (config is not None and ck["config"] != config) or (seed is not None and ck["seed"] != seed):
        changed = _differing_keys(ck["config"], config) if config is not None else []
        raise TrainingError(
            f"{path}: the run was started with another config or seed (seed {ck['seed']}"
            f"{'; config keys that differ: ' + ', '.join(changed) if changed else ''}); resume with the same "
            f"ones, or train into a new folder"
        )
    return ck


def _differing_keys(old, new, most: int = 6) -> list[str]:
    """The dotted keys whose values differ between two configs (at most ``most``, then '...'), for refusals."""

    def walk(a, b, prefix):
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b), key=str):
                yield from walk(a.get(key), b.get(key), f"{prefix}{key}.")
        elif a != b:
            yield prefix.rstrip(".")

    keys = list(walk(old, new, ""))
    return keys if len(keys) <= most else keys[:most] + ["..."]


def warm_start(path: Path, cfg: dict) -> tuple[dict, dict]:
    """The weights a run starts from (``init_from``) and their record {path, sha256}; TrainingError naming the file
    for a file that is no policy, or a policy of another network than ``cfg``'s."""
    from liquid_control.policy.checkpoint import PolicyLoadError, load_policy
    from liquid_control.runtime.backends import checkpoint_sha256

    try:
        source = load_policy(path)
    except PolicyLoadError as exc:
        raise TrainingError(f"--init-from {exc}") from None
    differing = _differing_keys(*({k: c.get(k) for k in NETWORK_SECTIONS} for c in (source.config, cfg)))
    if differing:
        raise TrainingError(
            f"--init-from {path}: a policy of another network (keys that differ from the config: "
            f"{', '.join(differing)}); start from a policy with the same world, observation, encoder, core and action"
        )
    return source.state_dict(), {"path": str(path), "sha256": checkpoint_sha256(path)}


def recorded_start(out: Path, checkpoint: dict | None) -> dict | None:
    """What a run in ``out`` started from ({path, sha256}, None: random weights): its checkpoint's record, or
    before its first checkpoint the one written at its start."""
    if checkpoint is not None:
        return checkpoint.get("started_from")
    path = out / START_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if not (isinstance(record, dict) and isinstance(record.get("path"), str) and "sha256" in record):
            raise ValueError("not a {path, sha256} object")
    except ValueError as exc:
        raise TrainingError(f"{path}: not a readable record of the run's start ({exc}); restore it") from None
    return record


def check_same_start(recorded: dict | None, init_from: Path, out: Path) -> None:
    """A resumed run keeps its start: refused where ``--init-from`` names another than the one it started from."""
    from liquid_control.runtime.backends import checkpoint_sha256

    if recorded is None:
        raise TrainingError(f"--init-from {init_from}: the run in {out} started from random weights; resume it without")
    if not init_from.is_file():
        raise TrainingError(f"--init-from {init_from}: policy file not found")
    if checkpoint_sha256(init_from) != recorded["sha256"]:
        raise TrainingError(
            f"--init-from {init_from}: the run in {out} started from {recorded['path']} (SHA-256 "
            f"{recorded['sha256'][:12]}), not this file; resume it with that one or without --init-from"
        )


def _bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True, file=sys.stderr)


def _tensorboard(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # TensorBoard is optional
        return None
    return SummaryWriter(str(folder))


# What a run writes before it has collected, converted or trained anything: a folder holding only these (and
# no checkpoint.pt, no file under data/) holds no run, so a failed start never blocks the next one.
STARTED_ENTRIES = ("config.yaml", "data.yaml", "data", "tensorboard", START_FILE, COMMAND_FILE)


def holds_run(out: Path) -> bool:
    """Whether ``out`` holds something of a training run that a fresh start would lose: a checkpoint, or a
    collected episode or converted bag under ``data/`` (a ``.*.tmp`` folder is a conversion that never finished)."""
    if (out / "checkpoint.pt").exists():
        return True
    data = out / "data"
    return data.is_dir() and any(
        f.is_file() and not any(part.startswith(".") and part.endswith(".tmp") for part in f.relative_to(data).parts)
        for f in data.rglob("*")
    )


def _listing(out: Path) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir())
    return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")


def check_out_dir(out: Path, resume: bool, cfg: dict) -> bool:
    """Refuse an output folder the run would overwrite or misread; True when it holds a run to continue.

    Without ``resume`` the folder must be new, empty, or what a start that trained nothing left (its config.yaml,
    if any, this config); with ``resume`` a new or empty folder starts the run, and a folder must otherwise hold
    one (checkpoint.pt, data/ or config.yaml): files of something else are never taken for a run."""
    if out.exists() and not out.is_dir():
        raise TrainingError(f"{out}: exists and is not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return False
    run = holds_run(out)
    if not resume and run:
        raise TrainingError(
            f"{out} already holds a training run: pass --resume to continue it (train(resume=True) from Python), "
            f"or choose another output folder"
        )
    if resume and (run or (out / "config.yaml").is_file()):
        return True
    leftovers = all(p.name in STARTED_ENTRIES for p in out.iterdir())
    saved, other = out / "config.yaml", ""
    if leftovers and saved.is_file():  # not resume: a start that trained nothing, of this config or another?
        try:
            leftovers = validate_config(yaml.safe_load(saved.read_text())) == cfg
        except Exception:
            leftovers = False
        other = "" if leftovers else "; its config.yaml is not this config"
    if leftovers:
        return False
    if resume:
        raise TrainingError(
            f"{out}: holds no training run to resume (no checkpoint.pt, config.yaml or data/; it holds "
            f"{_listing(out)}); pass the folder of a run, or a new or empty folder to start one"
        )
    raise TrainingError(
        f"{out}: not empty and not a training run (it holds {_listing(out)}{other}); the output folder must be new "
        f"or empty (or a run, with resume)"
    )


def check_saved_config(saved: Path, cfg: dict) -> None:
    """Refuse to continue a run whose config.yaml (``saved``) is not ``cfg``."""
    try:
        previous = validate_config(yaml.safe_load(saved.read_text()), strict=False)
    except Exception as exc:
        raise TrainingError(f"{saved}: not a readable config ({exc}); restore it or delete it") from None
    if previous != cfg:
        raise TrainingError(
            f"{saved}: the run was started with another config (keys that differ: "
            f"{', '.join(_differing_keys(previous, cfg))}); resume with the same one"
        )


def _undo_start(out: Path, created: Path | None, before: set) -> None:
    """Remove what a start that failed before collecting, converting or training anything wrote into ``out``."""
    import shutil

    if holds_run(out):
        return
    if created is not None:  # this start made ``out`` (and maybe parents): remove it, then those parents while empty
        shutil.rmtree(out, ignore_errors=True)
        for parent in out.parents:  # rmdir only: a sibling run (the headline's seeds, in parallel) may live there
            if not parent.is_relative_to(created):
                break
            try:
                parent.rmdir()
            except OSError:
                break
        return
    for path in list(out.iterdir()) if out.is_dir() else []:
        if path.name not in before:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def check_episode_seeds(cfg: dict, seed, simulated: bool) -> None:
    """Refuse a seed or schedule whose episode seeds (``episodes.episode_seed``) would overlap another round's, another
    run's, the selection episodes' or the evaluation's: the same worlds would be trained on twice, or evaluated on."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise TrainingError(f"seed (--seed) must be an integer >= 0, got {seed!r}")
    if not simulated:  # a bag run's seed draws weights and batches only (torch.manual_seed takes [0, 2**64))
        if seed >= 2**64:
            raise TrainingError(f"seed (--seed) must be below 2**64 for a run on bags, got {seed}")
        return
    if seed > MAX_TRAIN_SEED:
        raise TrainingError(
            f"seed (--seed) must be 0..{MAX_TRAIN_SEED}, got {seed}: the episode seeds of seed {seed} "
            f"({episode_seed(seed, 0, 0):,} up) reach the selection episodes' ({SELECTION_SEED_BASE:,} up) or the "
            "evaluation's (20,000,000 up)"
        )
    t = cfg["training"]
    for key, value, bound in (
        ("demonstrations", t["demonstrations"], MAX_ROUND_EPISODES),
        ("dagger_episodes", t["dagger_episodes"], MAX_ROUND_EPISODES),
        ("dagger_rounds", t["dagger_rounds"], MAX_DAGGER_ROUNDS),
    ):
        if value > bound:
            raise PolicyConfigError(
                f"training.{key}: must be <= {bound}, got {value} (the episode seeds of a run keep "
                f"{MAX_ROUND_EPISODES} per round and {MAX_DAGGER_ROUNDS} DAgger rounds apart)"
            )


def _log(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def train(
    config: str | Path | dict | None,
    out_dir: str | Path,
    *,
    seed: int = 0,
    resume: bool = False,
    overrides: dict | None = None,
    progress: bool = True,
    threads: int | None = None,
    workers: int = 1,
    command: str | None = None,
    log=_log,
    data: dict | None = None,
    init_from: str | Path | None = None,
) -> TrainResult:
    """Train the policy described by ``config`` (YAML path or dict) into ``out_dir``; returns the result.

    ``resume=True`` continues the run in ``out_dir`` (config may then be None: the run's own config.yaml is
    used). ``overrides`` are dotted keys, e.g. ``{"training.dagger_rounds": 2}``; ``data.*`` ones set the bag data
    (``data.window``), validated as the ``data:`` section. ``threads`` sets torch's
    intra-op threads (1: deterministic and polite on a shared CPU; None: 1, or a resumed run's own, which its
    checkpoint records: another count trains another policy, so it is refused); ``threads`` > 1
    instead trains on that many data-parallel copies of the policy, one thread each (:class:`.bc.DataParallel`:
    a little faster than intra-op threads here; the same policy up to float rounding), unless the
    policy has dropout (then intra-op threads). ``workers``
    > 1 runs the episodes (collection and model selection) in that many processes: the same episodes (every
    episode runs on one torch thread, here or there) and the same policy, sooner (:mod:`.episodes`).
    ``data`` (or a ``data:`` section in the config) trains from recorded bags instead (training.bag_data).
    ``init_from``: a trained policy of the same network whose weights the run starts from (a resumed run's
    checkpoint already holds them: it must then be the file the run started from).
    """
    from . import bag_data  # imports this module

    out = Path(out_dir)
    overrides, data_sets = bag_data.split_overrides(overrides)  # --set data.window=...: the data section's
    config, data = bag_data.resolve(config, data, out, data_sets)
    saved = out / "config.yaml"
    checkpoint = out / "checkpoint.pt"
    if config is None:
        if not resume:
            raise TrainingError("no config given (a config is optional only with resume)")
        if saved.is_file():
            config = saved
        elif checkpoint.is_file():  # config.yaml lost: the checkpoint holds the run's config
            config = read_training_checkpoint(checkpoint)["config"]
        else:
            raise TrainingError(f"no config given and no {saved} to resume from")
    # A run being resumed may have started before a check of settings without effect existed (load_policy's
    # reason for strict=False): it continues as it began; the comparison with its config.yaml below still holds.
    strict = not resume
    cfg = load_config(config, strict) if isinstance(config, (str, Path)) else validate_config(config, strict)
    if overrides:
        cfg = apply_overrides(cfg, overrides, strict)
    if data is not None:
        cfg = bag_data.force_bag_schedule(cfg)
    try:  # a config naming inputs its world does not have is refused before anything is written
        world = world_class(cfg)
    except PolicyConfigError as exc:
        raise PolicyConfigError(f"{config}: {exc}" if isinstance(config, (str, Path)) else str(exc)) from None
    check_episode_seeds(cfg, seed, simulated=data is None)
    shift = cfg["training"]["shift"]
    if shift and data is None:  # checked here, named: the world would refuse it unnamed, later
        from sim_envs.shifts import shift_for_world

        try:  # a world that declares no sensors (another gymnasium env) gets the parse check only
            shift_for_world(shift, cfg["world"], getattr(world, "sensor_names", None) or None)
        except ValueError as exc:
            raise PolicyConfigError(f"training.shift: {exc}") from None
    sun = cfg["training"]["sun_elevation_range"] is not None
    if sun and data is not None:
        raise TrainingError(
            "training.sun_elevation_range: a run from bags renders nothing (its frames are recorded); leave it null"
        )
    if data is None:  # input and action sizes the world does not have: refused now, not after the demonstrations
        try:
            env = make_env(cfg)
        except PolicyConfigError as exc:
            raise PolicyConfigError(f"{config}: {exc}" if isinstance(config, (str, Path)) else str(exc)) from None
        try:
            if sun:
                EpisodeSun.light_id(env.unwrapped)
        except ValueError as exc:
            raise TrainingError(f"{exc} (world {cfg['world']!r})") from None
        finally:
            env.close()
    timing = cfg["training"]["sensor_rate_range"] is not None or cfg["training"]["jitter_range"] is not None
    if timing and data is None and not getattr(world, "sensor_names", ()):
        raise TrainingError(
            f"training.sensor_rate_range / jitter_range: world {cfg['world']!r} has no sensor timings to vary"
        )
    resume = check_out_dir(out, resume, cfg)  # False: nothing to continue, the run starts afresh
    # Every check of a resume comes before anything is written, so a refused resume changes nothing.
    if resume and saved.is_file():
        check_saved_config(saved, cfg)
    ck = read_training_checkpoint(checkpoint, cfg, seed) if resume and checkpoint.exists() else None
    start = None  # (weights, record) of a warm start, checked before anything is written
    if resume:
        recorded = recorded_start(out, ck)
        if init_from is not None:
            check_same_start(recorded, Path(init_from), out)
        if ck is None and recorded is not None:  # killed before its first checkpoint: the same start again
            start = warm_start(Path(recorded["path"]), cfg)
            if start[1]["sha256"] != recorded["sha256"]:
                raise TrainingError(
                    f"{out / START_FILE}: the run started from {recorded['path']}, which has changed since (SHA-256 "
                    f"{recorded['sha256'][:12]} then); restore that file or train into a new folder"
                )
    elif init_from is not None:
        start = warm_start(Path(init_from), cfg)
    if not (isinstance(workers, int) and workers >= 1):
        raise ValueError(f"workers (--workers) must be an integer >= 1, got {workers!r}")
    if threads is not None and (isinstance(threads, bool) or not (isinstance(threads, int) and threads >= 1)):
        raise ValueError(f"threads (--threads) must be an integer >= 1, got {threads!r}")
    trained_with = None if ck is None else ck.get("threads")  # None: a checkpoint of before it was recorded
    recorded_threads = threads  # what the run's checkpoints record (None: not known)
    if threads is None:
        threads = recorded_threads = 1 if trained_with is None else int(trained_with)
        if ck is not None and trained_with is None:
            # the count stays unrecorded: a checkpoint saying 1 refused the resume with --threads N advised here
            recorded_threads = None
            log(
                f"{checkpoint} does not say how many threads (--threads) the run trained with (a checkpoint of "
                "before they were recorded): continuing on 1; if the run was started with --threads N, stop and "
                "resume with --threads N (another count trains another policy)"
            )
    elif trained_with is not None and threads != trained_with:
        raise TrainingError(
            f"{checkpoint}: the run trained with threads (--threads) {trained_with}; resume it with --threads "
            f"{trained_with} or without --threads (another count trains another policy, up to float rounding, which "
            "the run's command would not reproduce)"
        )
    cpus = available_cpus()
    if data is None and workers > cpus:  # allowed (the same episodes), but no sooner, and each worker holds ~300 MB
        log(
            f"workers (--workers) {workers}: more than the {cpus} CPUs this process may use: the same episodes, no "
            f"sooner than with --workers {cpus}, and each worker process holds its own world and torch (~300 MB)"
        )
    if threads > cpus:
        log(
            f"threads (--threads) {threads}: more than the {cpus} CPUs this process may use: the copies of the policy "
            f"wait for each other (--threads {cpus} is faster)"
        )
    bc_copies = threads if threads > 1 and not has_dropout(Policy(cfg)) else 1
    torch.set_num_threads(1 if bc_copies > 1 else threads)
    spec = None if data is None else bag_data.bag_data_spec(cfg, data)  # a bad --node-params: before any write
    torch.use_deterministic_algorithms(True)
    created = next((p for p in reversed([out, *out.parents]) if not p.exists()), None)
    before = set(os.listdir(out)) if created is None else set()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrainingError(f"{out}: cannot create the output folder: {exc.strerror or exc}") from None
    lock = _lock_run_folder(out)  # before anything is written (and before the undo below could remove anything)
    try:
        if start is not None and not resume:  # before config.yaml: a run folder never lacks the record of its start
            with atomic_write(out / START_FILE, "w") as handle:
                handle.write(json.dumps(start[1]))
        if not resume or not saved.is_file():
            with atomic_write(saved, "w") as handle:
                handle.write(yaml.safe_dump(cfg, sort_keys=False))
        if not resume and data is None:  # a failed bag start's data.yaml would make a later resume a bag run
            (out / "data.yaml").unlink(missing_ok=True)
        if not resume and start is None:  # a failed warm start's record would make a later resume a warm one
            (out / START_FILE).unlink(missing_ok=True)
        if not resume:  # policy.pt names the first command, also after a kill before the first checkpoint
            (out / COMMAND_FILE).unlink(missing_ok=True)
            if command:
                with atomic_write(out / COMMAND_FILE, "w") as handle:
                    handle.write(command + "\n")
        elif ck is None and (out / COMMAND_FILE).is_file():
            command = (out / COMMAND_FILE).read_text().strip() or command
        if data is not None and workers > 1:
            log(f"workers={workers}: no effect when training from bags (there are no episodes to run)")
        run = (
            _Run(cfg, out, seed, progress, command, log, workers=workers, bc_copies=bc_copies)
            if data is None
            else bag_data.BagRun(cfg, out, seed, progress, command, log, data, bc_copies=bc_copies, spec=spec)
        )
        run.threads = recorded_threads
        if ck is not None:
            run.load_checkpoint()
            log(f"resuming {out}: {run.epoch_done}/{run.total_epochs} epochs finished")
        elif start is not None:
            run.start_from(*start)
        return run.run()
    except BaseException as exc:
        _undo_start(out, created, before)  # nothing collected, converted or trained: leave no half-made run
        interrupt = interrupt_in_ctypes(exc)  # Ctrl-C inside MuJoCo's render: the interrupt, not a ctypes error
        if interrupt is not None:
            raise interrupt from None
        raise
    finally:
        if lock is not None:
            os.close(lock)  # releases the lock


def _lock_run_folder(out: Path) -> int | None:
    """An exclusive lock on the run folder itself (flock on its descriptor: no file in it, released when the
    process ends however it ends), or TrainingError when another process holds it: a second `train --resume`
    into a running run's folder trained it again beside the first, both writing the same files. None where
    there is no flock."""
    try:
        import fcntl
    except ImportError:
        return None
    fd = os.open(out, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise TrainingError(
            f"{out}: another process is training in this folder (liquid-control train holds its lock); wait for it "
            "to end, or train into another --out"
        ) from None
    return fd
