"""A training run in the simulator: expert demonstrations, DAgger rounds and behaviour cloning, resumable.

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

import contextlib
import csv
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from liquid_control.atomic_file import atomic_write
from liquid_control.cells import SolverDivergedError, kernels
from liquid_control.cells.checkpoint import read_plain_torch_file
from liquid_control.cells.dt import MAX_SUBSTEPS
from liquid_control.conventions import training_record
from liquid_control.paths import code_commit
from liquid_control.policy import Policy, save_policy
from liquid_control.policy.agent import DEFAULT_MAX_GAP_S
from liquid_control.policy.checkpoint import atomic_torch_save, weights_problem
from liquid_control.policy.config import (
    CONTINUOUS_CORES,
    PolicyConfigError,
    validate_recorded_config,
    without_simulated_settings,
)
from liquid_control.policy.encoders import MIN_INPUT_STD
from liquid_control.shown import shown

from .bc import DataParallel, bc_epoch, count_chunks, epoch_batches
from .curves import plot_curves
from .data import (
    Episode,
    EpisodeFileError,
    EpisodeTooLargeError,
    load_episode,
    resample_episode,
    save_episode,
    split_at_gaps,
)
from .episodes import (
    EpisodeWorkerError,
    EpisodeWorkers,
    collect_episode,
    episode_seed,
    make_env,
    measure_success,
    round_beta,
    selection_seeds,
)
from .run_folder import holds_run
from .sensor_record import camera_entry, interval_histograms, rates_entry
from .weight_average import WeightAverage

CHECKPOINT_FORMAT = "liquid_control.training/1"
METRIC_COLUMNS = ["epoch", "round", "kind", "loss", "success", "episodes", "updates", "lr", "wall_s"]


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


class TrainingRun:
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
        # training.ema_decay: the average of the weights is what drives, is selected and is kept (weight_average)
        self.average = WeightAverage(self.policy, t["ema_decay"]) if t["ema_decay"] > 0 else None
        self.epoch_done = 0
        self.rounds_evaluated = -1
        self.best = None  # {"success", "round", "epoch", "state_dict", "average_steps"}
        self.rows: list[dict] = []
        self.wall_s = 0.0
        self.longest_dt = 0.0  # of the updates trained on (what core.max_step should not undercut, see finish)
        # round (a bag run: "bags") -> {update sensor: histogram of its message intervals} (policy.pt records them)
        self.interval_counts: dict = {}
        self.started_from = None  # {"path", "sha256"} of the policy whose weights the run started from (init_from)
        self.resumed_finished = False  # resumed after it wrote policy.pt: nothing to do, the file kept
        self.code = [code_commit()]  # the code of each part of the run that differed from the one before
        self.kernels = [self.kernel_path()]  # the cells' path of each part that differed from the one before
        self.threads = 1  # --threads of the run (train sets it; None: not known): recorded, so a resume keeps it
        self.working_directory = None  # where the run's first command ran (train sets it; None: not recorded)
        self.epoch_lines = not progress  # a line per epoch through log where no bar shows it (train may set it)
        self._trained = None  # (loss, round, monotonic start) of the epoch trained last, until its line is said
        self._t0 = time.monotonic()
        self.writer = _tensorboard(out_dir / "tensorboard")

    # ------------------------------------------------------------------------------------------- persistence
    @property
    def checkpoint_path(self) -> Path:
        """The run's checkpoint.pt."""
        return self.out / "checkpoint.pt"

    def _elapsed(self) -> float:
        now = time.monotonic()
        self.wall_s += now - self._t0
        self._t0 = now
        return self.wall_s

    def save_checkpoint(self) -> None:
        """Write checkpoint.pt atomically (after every epoch and evaluation), and the metrics beside it."""
        self._elapsed()
        atomic_torch_save(
            {
                "format": CHECKPOINT_FORMAT,
                "config": self.recorded_config(),  # a run from bags: what applied (bag_data.bag_run_config)
                "seed": self.seed,
                "epoch_done": self.epoch_done,
                "rounds_evaluated": self.rounds_evaluated,
                "policy": self.policy.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "best": self.best,
                "weight_average": None if self.average is None else self.average.state_dict(),
                "rows": self.rows,
                "wall_s": self.wall_s,
                "longest_dt": self.longest_dt,  # a resumed run may not load every round's episodes again
                "interval_counts": self.interval_counts,  # as longest_dt
                "started_from": self.started_from,
                "command": self.command,  # the run's first command: the one that reproduces it
                "working_directory": self.working_directory,  # and where it ran: its relative paths'
                "code": self.code,
                "kernels": self.kernels,
                "threads": self.threads,  # a resume with another count would train another policy: refused
            },
            self.checkpoint_path,
        )
        self._write_metrics()

    def load_checkpoint(self) -> None:
        """Continue from checkpoint.pt (refused if written by another config or seed)."""
        ck = read_training_checkpoint(self.checkpoint_path, self.config, self.seed, self.as_run)
        best = ck.get("best")
        weights = [("policy", ck.get("policy"))]
        if best is not None:  # first: the policy's own weights are the ones left loaded
            weights.insert(0, ("best round's", best.get("state_dict") if isinstance(best, dict) else best))
        problem = self._progress_problem(ck) or self._optimizer_problem(ck.get("optimizer"))
        if self.average is not None and problem is None:
            problem = self.average.problem(ck.get("weight_average"))
        for what, state in weights:
            problem = problem or self._load_weights(what, state)
        if problem:
            raise TrainingError(
                f"{self.checkpoint_path}: {problem}; the checkpoint was damaged or changed, the run cannot continue "
                f"from it. Restore the file, or train again into a new folder (same config and seed: the same run, bit "
                f"for bit)"
            )
        self.optimizer.load_state_dict(ck["optimizer"])
        if self.average is not None:
            self.average.load_state_dict(ck["weight_average"])
        self.epoch_done, self.rounds_evaluated = ck["epoch_done"], ck["rounds_evaluated"]
        self.best, self.rows, self.wall_s = ck["best"], list(ck["rows"]), float(ck["wall_s"])
        self.longest_dt = max(self.longest_dt, float(ck.get("longest_dt", 0.0)))
        self.interval_counts = {**dict(ck.get("interval_counts") or {}), **self.interval_counts}
        self.started_from = ck.get("started_from")
        if ck.get("command"):  # not `--resume`'s: policy.pt names how the run began, and where
            self.command, self.working_directory = ck["command"], ck.get("working_directory")
        code = list(ck.get("code") or ["not recorded (checkpoint of an older version)"])
        self.code = code if code[-1] == self.code[0] else code + self.code
        paths = list(ck.get("kernels") or ["not recorded (checkpoint of an older version)"])
        self.kernels = paths if paths[-1] == self.kernels[0] else paths + self.kernels
        self.resumed_finished = self.finished() and (self.out / "policy.pt").is_file()

    def _progress_problem(self, ck: dict) -> str | None:
        """Why the checkpoint's ``epoch_done`` / ``rounds_evaluated`` cannot be this run's, or None: numbers within
        the plan, and as many epochs as its own rows record trained (an edited 10**18 wrote policy.pt untrained,
        a -5 trained the whole plan again)."""
        epoch, evaluated, rows = ck.get("epoch_done"), ck.get("rounds_evaluated"), ck.get("rows")
        if type(epoch) is not int or not 0 <= epoch <= self.total_epochs:
            return f"epoch_done {shown(epoch)} is not a number of epochs of the run's plan (0..{self.total_epochs})"
        if type(evaluated) is not int or not -1 <= evaluated < self.rounds:
            return f"rounds_evaluated {shown(evaluated)} is not a round of the run's plan (-1..{self.rounds - 1})"
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            return f"its rows (the metrics) are not a list of records: {shown(rows)}"
        trained = [row.get("epoch") for row in rows if row.get("kind") == "train"]
        if trained != list(range(1, epoch + 1)):
            return (
                f"epoch_done {epoch} disagrees with its rows, which record trained epochs {shown(trained)}"
                f" (expected 1..{epoch})"
            )
        return None

    def _optimizer_problem(self, saved) -> str | None:
        """Why the checkpoint's optimizer state cannot continue this run's Adam, or None: one state per parameter, of
        its shape, finite (a NaN in exp_avg_sq made the next epoch 'diverge', advising a lower learning rate)."""
        current = self.optimizer.state_dict()["param_groups"]
        if (
            not isinstance(saved, dict)
            or not isinstance(saved.get("state"), dict)
            or not isinstance(saved.get("param_groups"), list)
            or len(saved["param_groups"]) != len(current)
            or any(not isinstance(g, dict) or not isinstance(g.get("params"), list) for g in saved["param_groups"])
            or [len(g["params"]) for g in saved["param_groups"]] != [len(g["params"]) for g in current]
        ):
            return "the optimizer state is not one of this policy's parameters (another structure or count)"
        named = list(self.policy.named_parameters())
        ids = {s: c for sg, cg in zip(saved["param_groups"], current) for s, c in zip(sg["params"], cg["params"])}
        for group in saved["param_groups"]:
            for key, value in group.items():
                numbers = value if isinstance(value, (tuple, list)) and key != "params" else [value]
                if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
                    return f"the optimizer setting {key} is {shown(value)}, not finite"
        for key, entry in saved["state"].items():
            if key not in ids or not isinstance(entry, dict):
                return f"the optimizer state holds an entry {shown(key)} of no parameter"
            name, param = named[ids[key]]
            for part, value in entry.items():
                where = f"the optimizer state's {part} of {name}"
                if not torch.is_tensor(value):
                    continue  # a float 'step' of an older torch
                if value.dim() > 0 and value.shape != param.shape:
                    return f"{where} has shape {tuple(value.shape)}, the parameter {tuple(param.shape)}"
                if value.is_floating_point() and not torch.isfinite(value).all():
                    return f"{where} is not finite (NaN or inf)"
                if part == "exp_avg_sq" and (value < 0).any():
                    return f"{where} is negative (a mean of squares)"
        return None

    def _load_weights(self, what: str, state) -> str | None:
        """Load the checkpoint's weights ``state`` (its ``policy``, or its ``best`` round's) into the policy, or why
        not: the checks of load_policy, so a damaged file is named, not a torch traceback."""
        if not isinstance(state, dict):
            return f"its {what} weights are not a state_dict: {shown(state)}"
        state = dict(state)  # weights_problem sets the action bounds in it
        problem = weights_problem(self.policy, self.config, state)
        if problem is None:
            try:
                self.policy.load_state_dict(state)
            except RuntimeError as exc:  # e.g. another NCP wiring's synapse masks
                problem = str(exc).split(":", 1)[-1].strip().replace("\n\t", " ")
        return None if problem is None else f"its {what} weights: {problem}"

    def averaged(self):
        """A context in which the policy holds the weights the run measures and keeps: their average
        (``training.ema_decay``), or the weights as trained where no average is kept."""
        return contextlib.nullcontext() if self.average is None else self.average.swapped_in()

    def kernel_path(self) -> str:
        """The path the cells take in this process's training (torch for a core without compiled kernels)."""
        if self.config["training"].get("sequence_kernel") == "stepwise":
            return "torch (training.sequence_kernel: stepwise)"
        return kernels.path_for(self.policy.core, "sequence")

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
        bar = progress_bar(count, f"round {round_index} collect (beta={beta:g})", self.progress)
        bar.update(count - len(missing))
        policy = self.policy if beta < 1.0 else None
        try:
            with self.averaged():  # the policy that drives is the one kept
                if self.workers is not None:
                    finished = self.workers.collect(policy, self.seed, round_index, missing)
                else:
                    finished = (
                        (i, collect_episode(env, policy, self.config, self.seed, round_index, i)) for i in missing
                    )
                for i, episode in finished:  # each saved as soon as it is done: a failure later loses nothing of it
                    save_episode(folder / f"ep_{i:04d}.npz", episode)
                    episodes[i] = episode
                    bar.update(1)
        except EpisodeWorkerError as exc:
            kept = (
                "finished episodes are saved; --resume continues"
                if holds_run(self.out)
                else "no episode had finished: nothing is kept, run the command again"  # train() undoes the start
            )
            raise TrainingError(f"round {round_index}: {exc} ({kept})") from exc
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
        # the sensors' message intervals as recorded (before a resample_hz policy's resampling)
        self.interval_counts[round_index] = interval_histograms(episodes, self.config["observation"]["update_on"])
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
        the run cannot continue identically and the error says what to do. A file larger than this machine's
        memory (EpisodeTooLargeError) may be intact: refused, kept. An episode of another seed means
        the run was resumed with another ``seed`` before its first checkpoint: refused, nothing is mixed."""
        if not path.is_file():
            return None
        try:
            episode = load_episode(path, self.config)
        except EpisodeTooLargeError as exc:  # maybe intact: collecting it again would make the same file
            raise TrainingError(f"{exc}; resume the run on a machine with more memory") from None
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
        columns = [f"{k}[{i}]" for k in keys for i in range(self.policy.config["observation"]["vectors"][k])]
        largest = np.abs(data).max(axis=0)
        unusable = ~(largest < 1e30)  # NaN too: no sensor reads that; its statistics would flatten the column
        if unusable.any():
            bad = [f"{columns[i]} (largest |value| {largest[i]:.3g})" for i in np.flatnonzero(unusable)]
            raise TrainingError(
                f"vector input statistics unusable for {', '.join(bad)} over {len(episodes)} training episode(s): "
                "a reading of that size is no sensor's; check the recording (or the vector input's units)"
            )
        std = data.std(axis=0)
        for i in np.flatnonzero(std < MIN_INPUT_STD):
            self.log(
                f"warning: vector input {columns[i]} barely varies over the training data (spread {std[i]:.3g}, "
                f"{len(data)} readings): it is scaled by 1/{MIN_INPUT_STD:g}, so a change of 0.01 at run time reaches "
                f"the network as {0.01 / MIN_INPUT_STD:g}; record data in which it varies, or leave it out of "
                "observation.vectors"
            )
        self.policy.vectors.set_normalization(data.mean(axis=0), std)

    def train_epoch(self, episodes: list[Episode], epoch: int, round_index: int) -> None:
        """One behaviour-cloning epoch over every episode so far, at the cosine schedule's learning rate."""
        started = time.monotonic()
        t = self.config["training"]
        lr = _cosine_lr(t, epoch, self.total_epochs)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        rng = np.random.default_rng([self.seed, 7, epoch])
        torch.manual_seed(epoch_torch_seed(self.seed, epoch))
        # the epoch's steps in bc_epoch's batches (its rng's first draws): batches of other episodes than in file order
        batches = epoch_batches(
            [len(ep) for ep in episodes], t["batch_size"], np.random.default_rng([self.seed, 7, epoch]), t["batching"]
        )
        steps = count_chunks(episodes, t["sequence_length"], batches)
        bar = progress_bar(steps, f"epoch {epoch + 1}/{self.total_epochs}", self.progress)

        def tick(loss):
            bar.update(1)
            if loss is not None:  # else no labelled update in the step: the last loss stays shown
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

        try:
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
                batching=t["batching"],
                after_step=None if self.average is None else self.average.update,
            )
        except SolverDivergedError as exc:  # an explicit LTC solver at the data's dt: what is kept, what to change
            raise TrainingError(f"epoch {epoch + 1}: {exc} (core.solver, core.unfolds); {self.kept()}") from None
        finally:
            bar.close()
        self._check_finite(epoch, stats["loss"], lr, stats.get("diverged_at"))
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
        self._trained = (stats["loss"], round_index, started)

    def say_epoch(self, validation: str = "") -> bool:
        """Where no bar shows progress (``epoch_lines``: a CI log, a cluster job's file), one line for the epoch just
        trained: its number, training loss, ``validation`` (a bag run's, e.g. 'validation loss 0.01234') and seconds.
        False where no line was said (bars on, or no epoch trained since the last line)."""
        if not self.epoch_lines or self._trained is None:
            return False
        loss, round_index, started = self._trained
        self._trained = None
        where = f" (round {round_index})" if self.rounds > 1 else ""
        self.log(
            f"epoch {self.epoch_done}/{self.total_epochs}{where}: loss {loss:.5f}"
            + (f", {validation}" if validation else "")
            + f", {time.monotonic() - started:.1f} s"
        )
        return True

    def _check_finite(self, epoch: int, loss: float, lr: float, step: int | None = None) -> None:
        """A diverged epoch (a learning rate far too high) is refused before it is saved: the checkpoint keeps the
        last finite epoch, and no policy of NaN weights is written as if training had succeeded. ``step``: the
        optimizer step whose loss was not finite (bc_epoch stopped there)."""
        broken = [name for name, p in self.policy.named_parameters() if not torch.isfinite(p).all()]
        if np.isfinite(loss) and not broken:
            return
        kept = self.kept()
        raise TrainingError(
            f"epoch {epoch + 1}: training diverged (loss {loss:.3g}"
            + ("" if step is None else f" at step {step} of the epoch, which stopped there")
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

    def kept(self) -> str:
        """What a run stopped now keeps, for its error: the checkpoint's last epoch, or that none was saved."""
        return f"{self.checkpoint_path} keeps epoch {self.epoch_done}" if self.epoch_done else "no epoch was saved"

    def evaluate(self, env, round_index: int) -> None:
        """Success of the policy after a round on the selection episodes (the best round becomes policy.pt)."""
        with self.averaged():  # the weights measured are the ones kept
            self._evaluate(env, round_index)
        self.rounds_evaluated = round_index
        self.save_checkpoint()

    def _evaluate(self, env, round_index: int) -> None:
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
            alone = "policy alone" if self.average is None else "the weights' average alone"
            self.log(f"round {round_index}: {alone} succeeds in {success:.0%} of {n} selection episodes")
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
                "average_steps": None if self.average is None else self.average.steps,
            }

    def run(self) -> TrainResult:
        """Every round not yet done: collect, train, evaluate; then policy.pt."""
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
                    self.say_epoch()
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

    def schedule_metadata(self) -> dict:
        """What policy.pt records of the schedule that trained it and of the selection: here the simulated one (the
        DAgger round selected, its success on the selection episodes, the episodes collected); a run on bags
        (training.bag_data) has none of these: its bags, updates and validation loss instead (``extra_metadata``)."""
        t = self.config["training"]
        return {
            "selected_round": self.best["round"],
            "selection_success": None if self.best["success"] < 0 else self.best["success"],
            "selection_episodes": t["eval_episodes"],
            "training_episodes": t["demonstrations"] + t["dagger_rounds"] * t["dagger_episodes"],
        }

    def extra_metadata(self) -> dict:
        """Metadata a subclass adds to policy.pt (training.bag_data: the bags it learned from)."""
        return {}

    from_bags = False  # the training camera's field of view is known (a world's), see sensor_metadata
    as_run = None  # how a config the run recorded is read to compare it (a run from bags: bag_data.bag_run_config)

    def recorded_config(self) -> dict:
        """The config as the run's files record it (checkpoint.pt; config.yaml and policy.pt alike): a run from bags
        leaves out the settings of simulated episodes, which did not apply to it."""
        return without_simulated_settings(self.config) if self.from_bags else self.config

    def camera_fovs(self) -> dict:
        """A bag run's CameraInfo fields of view by bag (training.bag_data); none here."""
        return {}

    def source_entry(self) -> dict:
        """What the policy learned from (conventions.training_record ``training_source``): here its world's
        episodes; a run on bags names its bags (training.bag_data)."""
        return {"world": self.config["world"]}

    def sensor_metadata(self) -> dict:
        """What policy.pt records of the training sensors and data (conventions.training_record): the camera, the
        update sensors' message rates in the data trained on, and what those data were (a world, or bags)."""
        metadata = {
            training_record.RATES_KEY: rates_entry(list(self.interval_counts.values()), self.config["training"]),
            training_record.SOURCE_KEY: self.source_entry(),
        }
        camera = camera_entry(self.config, self.from_bags, self.camera_fovs() if self.from_bags else None)
        if camera is not None:
            metadata[training_record.CAMERA_KEY] = camera
        return metadata

    def selection_note(self) -> str:
        """Which weights policy.pt holds and why, for the run's last line."""
        success = None if self.best["success"] < 0 else self.best["success"]
        return (
            f"selected round {self.best['round']} (epoch {self.best['epoch']}), selection success "
            f"{'n/a' if success is None else f'{success:.0%}'}"
        )

    def finished(self) -> bool:
        """Every epoch trained and every round evaluated."""
        return self.epoch_done >= sum(self.round_epochs) and self.rounds_evaluated >= self.rounds - 1

    def finish(self) -> TrainResult:
        """Write curves.png and policy.pt (the selected round's weights and the run's metadata); the run's result."""
        if self.resumed_finished:  # rewriting policy.pt would change its SHA-256, which its exports record
            path = self.out / "policy.pt"
            self.log(f"{self.out}: the run had finished; {path} kept as it was")
            success = None if self.best["success"] < 0 else self.best["success"]
            return TrainResult(self.out, path, success, self.best["round"], self.epoch_done, self.wall_s)
        selected = Policy(self.config)
        selected.load_state_dict(self.best["state_dict"])
        success = None if self.best["success"] < 0 else self.best["success"]
        metadata = {
            "seed": self.seed,
            **self.schedule_metadata(),
            "selected_epoch": self.best["epoch"],
            "parameters": selected.num_parameters(),
            "training_wall_s": round(self.wall_s, 1),
            "command": self.command or "",
            **({"working_directory": self.working_directory} if self.working_directory else {}),
            "torch": str(torch.__version__),
            # the cells' path (compiled or torch round otherwise in the last bits; a list: a resumed run's parts)
            "kernels": self.kernels[0] if len(self.kernels) == 1 else list(self.kernels),
            "code": self.code[0] if len(self.code) == 1 else list(self.code),  # commit (or version) that trained it
            "training_dt_max_s": round(self.longest_dt, 6),
        }
        if self.started_from is not None:
            metadata["started_from"] = self.started_from
        metadata.update(self.sensor_metadata())
        metadata.update(self.extra_metadata())
        max_step = self.config["core"]["max_step"]
        continuous = self.config["core"]["type"] in CONTINUOUS_CORES and not self.config["core"]["ignore_dt"]
        if continuous and self.longest_dt <= 0:  # no max_step to advise: 1.25 x 0 is no step length
            self.log(
                "every update trained on had dt 0 (sequences of a single update, given the dt after a reset): the "
                "core never integrated a time step in training, so every dt at run time is one it never saw"
            )
        elif continuous:
            cap = max_step is not None and self.longest_dt > MAX_SUBSTEPS * max_step  # the sub-steps it took are longer
            self.log(
                f"longest dt trained on: {self.longest_dt:.4f} s; core.max_step "
                + (
                    f"{max_step:g} s: below the longest dt / {MAX_SUBSTEPS} (the most sub-steps a dt is split into), "
                    f"so a dt of {self.longest_dt:.4f} s was integrated in {MAX_SUBSTEPS} sub-steps of "
                    f"{self.longest_dt / MAX_SUBSTEPS:.2g} s, longer than it; set it at least "
                    f"{math.ceil(self.longest_dt / MAX_SUBSTEPS * 1e4) / 1e4:g} s for the bound to hold"
                    if cap
                    else f"{max_step:g} s: a longer dt is integrated in sub-steps of at most that"
                    + (" (in training too)" if self.longest_dt > max_step else " at run time")
                    if max_step is not None
                    else "not set: a longer dt at run time is one step, which the cell never saw in training "
                    f"(set core.max_step a little above the longest, e.g. {max(1.25 * self.longest_dt, 1e-4):.2g}, "
                    "to integrate longer gaps in sub-steps of the length it trained on)"
                )
            )
        plot_curves(self.rows, self.out / "curves.png", f"{self.config['name']}, seed {self.seed}")  # before policy.pt
        path = save_policy(self.out / "policy.pt", selected, metadata)
        averaged, warning = "", None
        if self.average is not None:
            averaged, warning = self.average.note(int(self.best.get("average_steps") or 0))
        self.log(f"{self.selection_note()}{averaged}; wrote {path} after {self.wall_s:.0f} s")
        if warning:
            self.log(warning)
        return TrainResult(
            out_dir=self.out,
            policy_path=path,
            success=success,
            selected_round=self.best["round"],
            epochs=self.epoch_done,
            wall_s=self.wall_s,
        )


def read_training_checkpoint(path: Path, config: dict | None = None, seed: int | None = None, as_run=None) -> dict:
    """Read ``checkpoint.pt``; with ``config``/``seed``, refuse one written by a run with others. ``as_run``: how the
    run reads a config it recorded (a run from bags: ``bag_data.bag_run_config``), before it is compared."""
    try:
        ck = read_plain_torch_file(path)
    except Exception as exc:
        why = str(exc) or type(exc).__name__  # an empty file: EOFError('')
        raise TrainingError(f"{path}: cannot read the training checkpoint: {why}") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path}: not a liquid_control training checkpoint")
    if config is not None:  # as this code reads a run's config: a key added since, absent there, does what it did
        try:
            ck["config"] = validate_recorded_config(ck["config"])
            ck["config"] = ck["config"] if as_run is None else as_run(ck["config"])
        except PolicyConfigError as exc:
            raise TrainingError(
                f"{path}: the run's config is not one this version reads ({exc}); train into a new folder"
            ) from None
    if (config is not None and ck["config"] != config) or (seed is not None and ck["seed"] != seed):
        changed = differing_keys(ck["config"], config) if config is not None else []
        raise TrainingError(
            f"{path}: the run was started with another config or seed (seed {ck['seed']}"
            f"{'; config keys that differ: ' + ', '.join(changed) if changed else ''}); resume with the same "
            f"ones, or train into a new folder"
        )
    return ck


_ABSENT = object()  # a key one side of differing_keys lacks: unlike any value, None included


def differing_keys(old, new, most: int = 6) -> list[str]:
    """The dotted keys whose values differ between two configs (at most ``most``, then '...'), for refusals; a key
    one side lacks differs from every value of the other's, null included (read as None, a refusal of two configs
    differing only there named no key)."""

    def walk(a, b, prefix):
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b), key=str):
                yield from walk(a.get(key, _ABSENT), b.get(key, _ABSENT), f"{prefix}{key}.")
        elif a is _ABSENT or b is _ABSENT or a != b:
            yield prefix.rstrip(".")

    keys = list(walk(old, new, ""))
    return keys if len(keys) <= most else keys[:most] + ["..."]


def progress_bar(total: int, desc: str, enabled: bool, **options):
    """A tqdm bar on stderr (off with ``enabled=False``); ``options``: tqdm's (``unit="B"``: a bar in bytes)."""
    from tqdm import tqdm

    return tqdm(
        total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True, file=sys.stderr, **options
    )


def _tensorboard(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # TensorBoard is optional
        return None
    return SummaryWriter(str(folder))
