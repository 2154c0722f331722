"""Demonstrations: episodes driven by the expert, the policy, or a beta-mixture of both (DAgger), labelled by
the privileged expert, stored one compressed ``.npz`` per episode with their real stamps and dt.

An episode file holds, per update t (one env step = one sensor-triggered policy update):
``image`` uint8 (F, H, W, 3) the distinct camera frames and ``image_index`` int (T,) the frame held at each
update (a frame is stored once, not once per IMU update; files without ``image_index`` hold one frame per
update); ``vec_<key>`` float32 (T, n) per vector sensor and time input (``event``, ``ages``);
``dt`` float32 (T,) measured seconds since the previous update (0 at reset), ``stamp`` float64 (T,) sim time
of the update; ``expert_action`` float32 (T, A) the label; ``action`` float32 (T, A) what was executed;
and scalars ``success``, ``seed``, ``beta``. Files are written atomically, so a killed collection never
leaves a truncated episode that a resumed run would trust.
"""

from __future__ import annotations

import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from liquid_control.atomic_file import atomic_write
from liquid_control.cells.dt import DT_TOLERANCE_S


@dataclass
class Episode:
    """One recorded episode (arrays indexed by update)."""

    observations: dict  # "image" uint8 (F,H,W,3), vector keys float32 (T,n), "event" int (T,), "ages" (T,n)
    dt: np.ndarray  # float32 (T,)
    stamp: np.ndarray  # float64 (T,)
    expert_action: np.ndarray  # float32 (T, A)
    action: np.ndarray  # float32 (T, A)
    success: bool = False
    seed: int = -1
    beta: float = 1.0
    info: dict = field(default_factory=dict)
    label_mask: np.ndarray | None = None  # bool (T,): False where there is no label (bags); None: all labelled
    image_index: np.ndarray | None = None  # int (T,): frame of "image" held at each update (None: one per update)

    def __post_init__(self):
        if "image" in self.observations and self.image_index is None:
            self.image_index = np.arange(len(self.observations["image"]))

    def __len__(self) -> int:
        return int(self.dt.shape[0])


def save_episode(path: str | Path, episode: Episode) -> Path:
    """Write ``episode`` to ``path`` as a compressed .npz, atomically (``load_episode`` reads it); the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {("image" if k == "image" else f"vec_{k}"): v for k, v in episode.observations.items()}
    if episode.image_index is not None:
        arrays["image_index"] = np.asarray(episode.image_index, dtype=np.int32)
    arrays.update(
        dt=episode.dt.astype(np.float32),
        stamp=episode.stamp.astype(np.float64),
        expert_action=episode.expert_action.astype(np.float32),
        action=episode.action.astype(np.float32),
        success=np.array(bool(episode.success)),
        seed=np.array(int(episode.seed), dtype=np.int64),
        beta=np.array(float(episode.beta)),
    )
    with atomic_write(path) as handle:
        np.savez_compressed(handle, **arrays)
    return path


class EpisodeFileError(ValueError):
    """An episode file that cannot be read (truncated, corrupt, empty, inconsistent); the message names it."""


class EpisodeTooLargeError(EpisodeFileError):
    """An episode file whose arrays declare more than this machine's memory (:func:`max_episode_file_bytes`): it may
    be intact (collected on a bigger machine), so it is not set aside as corrupt and collected again."""


_UNKNOWN_MEMORY_BOUND = 2 << 30  # where the memory cannot be read
_CGROUP_MEMORY_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")  # v2, v1


def max_episode_file_bytes() -> int:
    """What an episode file's arrays may unpack to, all together: the memory this process may use (the machine's
    physical memory, or its container's limit where lower; 2 GiB where neither can be read). A larger file could not
    be loaded here, whatever it holds; a smaller one loads, as save_episode (which held it in memory) wrote it: a fixed
    2 GiB cap refused what configs the checks allow write (the rover at training.sensor_rate_range [1, 2] with a
    1024x1024 camera: 750 frames, 2.36 GB). The harm prevented is a decompression bomb's: a deflated .npz can claim
    any size (zeros pack ~1000:1, and a member's npy header declares the array numpy allocates before reading it:
    a 14 MB file of 3 GiB of zeros took 3.3 GB), and one claiming more than the memory got the run OOM-killed."""
    limits = []
    try:
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows) or no such name here
        pass
    for path in _CGROUP_MEMORY_LIMITS:
        try:
            limits.append(int(Path(path).read_text().strip()))
        except (OSError, ValueError):  # no such cgroup file, or "max" (no limit)
            continue
    return min(limits) if limits else _UNKNOWN_MEMORY_BOUND


_READ_NPY_HEADER = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _check_unpacked_sizes(path: Path) -> None:
    """Refuse (EpisodeFileError naming the file and the member) an episode file whose arrays would unpack to more
    than :func:`max_episode_file_bytes`, or whose member's size in the zip's directory disagrees with what its npy
    header declares, before numpy allocates or unpacks anything: only each member's header is read (a few hundred
    bytes)."""
    total, bound = 0, max_episode_file_bytes()
    with zipfile.ZipFile(path) as archive:
        for entry in archive.infolist():
            with archive.open(entry) as member:
                try:
                    version = np.lib.format.read_magic(member)
                    if version not in _READ_NPY_HEADER:
                        raise ValueError(f"npy format version {version}, which numpy's savez does not write here")
                    shape, _, dtype = _READ_NPY_HEADER[version](member)
                except ValueError as exc:
                    raise EpisodeFileError(f"{path}: member {entry.filename}: not a numpy array ({exc})") from None
                header = member.tell()
            declared = math.prod(shape) * dtype.itemsize
            total += declared
            where = f"{path}: member {entry.filename}"
            if total > bound:
                raise EpisodeTooLargeError(
                    f"{where} declares {dtype} {shape} ({declared} bytes), which takes the file past the {bound} "
                    f"bytes of memory this machine gives the process: it cannot be loaded here (collected on a "
                    f"bigger machine, or a decompression bomb); not read"
                )
            if dtype.hasobject:
                raise EpisodeFileError(f"{where}: an array of Python objects, which no episode holds; not read")
            if entry.file_size != header + declared:
                raise EpisodeFileError(
                    f"{where}: its npy header declares {dtype} {shape} ({declared} bytes), the zip's directory "
                    f"{entry.file_size - header} bytes: damaged, or not an episode file; not read"
                )


def load_episode(path: str | Path, config: dict | None = None) -> Episode:
    """Read one episode file; any problem is an :class:`EpisodeFileError` naming the file. Its arrays' sizes are
    checked from their headers before any is read (:func:`_check_unpacked_sizes`), their dtypes and values once read
    (:func:`_array_problem`); with a policy ``config``, their shapes against its inputs and actions
    (:func:`_config_problem`)."""
    path = Path(path)
    try:
        _check_unpacked_sizes(path)
        with np.load(path, allow_pickle=False) as data:
            obs = {}
            for key in data.files:
                if key == "image":
                    obs["image"] = data["image"]
                elif key.startswith("vec_"):
                    obs[key[4:]] = data[key]
            episode = Episode(
                observations=obs,
                dt=data["dt"],
                stamp=data["stamp"],
                expert_action=data["expert_action"],
                action=data["action"],
                success=bool(data["success"]),
                seed=int(data["seed"]),
                beta=float(data["beta"]),
                image_index=data["image_index"] if "image_index" in data.files else None,
            )
    except EpisodeFileError:
        raise
    except Exception as exc:  # truncated (BadZipFile), flipped bytes (CRC, zlib), empty (EOFError), missing keys
        raise EpisodeFileError(f"{path}: not a readable demonstration episode ({type(exc).__name__}: {exc})") from None
    problem = _array_problem(episode)
    if problem:
        raise EpisodeFileError(f"{path}: {problem}")
    episode.image_index = None if episode.image_index is None else episode.image_index.astype(np.int64)
    # per update: every array but the camera frames, which are stored once each and indexed by image_index
    lengths = {k: len(v) for k, v in obs.items() if k != "image"} | {
        "stamp": len(episode.stamp),
        "expert_action": len(episode.expert_action),
        "action": len(episode.action),
    }
    if episode.image_index is not None:
        lengths["image_index"] = len(episode.image_index)
    if any(n != len(episode) for n in lengths.values()):
        raise EpisodeFileError(f"{path}: arrays of different lengths {lengths} (dt: {len(episode)})")
    problem = None if config is None else _config_problem(episode, config)
    if problem:
        raise EpisodeFileError(f"{path}: {problem}")
    if episode.image_index is not None and len(episode.image_index):
        frames, index = len(obs["image"]), episode.image_index
        if index.min() < 0 or index.max() >= frames or np.any(np.diff(index) < 0):
            raise EpisodeFileError(
                f"{path}: image_index must be non-decreasing frame numbers below {frames} (the stored frames), "
                f"got {index.min()}..{index.max()}"
            )
    return episode


def _array_problem(episode: Episode) -> str | None:
    """Why an episode's arrays are not what :func:`rollout` and :func:`save_episode` write, or None: uint8 camera
    frames (F, H, W, 3), integer frame indices and ``event``, finite floating-point vectors, labels and actions, dt
    >= 0. A NaN label trained as an epoch that 'diverged', a NaN dt failed in the cells without the file's name."""
    image = episode.observations.get("image")
    if image is not None and (image.dtype != np.uint8 or image.ndim != 4 or image.shape[-1] != 3):
        return f"image must be uint8 frames (frames, height, width, 3), got {image.dtype} {image.shape}"
    index = episode.image_index
    if index is not None and image is None:
        return "image_index without image (frame numbers of no frames)"
    if index is not None and (index.dtype.kind not in "iu" or index.ndim != 1):
        return f"image_index must be integer frame numbers (updates,), got {index.dtype} {index.shape}"
    arrays = {k: v for k, v in episode.observations.items() if k != "image"}
    arrays.update(dt=episode.dt, expert_action=episode.expert_action, action=episode.action)
    for key, array in arrays.items():
        ndim = 1 if key in ("dt", "event") else 2
        if key == "event" and (array.dtype.kind not in "iu" or array.ndim != 1):
            return f"event must be integer sensor numbers (updates,), got {array.dtype} {array.shape}"
        if key == "event":
            continue
        if array.dtype.kind != "f" or array.ndim != ndim:
            what = "(updates,)" if ndim == 1 else "(updates, values)"
            return f"{key} must be floating-point {what} (the package writes float32), got {array.dtype} {array.shape}"
        bad = ~np.isfinite(array)
        if bad.any():
            first = int(np.argwhere(bad)[0][0])
            return f"{key} holds {int(bad.sum())} non-finite value(s), e.g. {array[bad][0]} at update {first}"
    if (episode.dt < 0).any():
        first = int(np.flatnonzero(episode.dt < 0)[0])
        return f"dt must be >= 0 (seconds since the previous update), got {episode.dt[first]:g} at update {first}"
    if episode.stamp.dtype.kind != "f" or episode.stamp.ndim != 1:  # NaN where a world gives no stamps (rollout)
        return f"stamp must be floating-point seconds (updates,), got {episode.stamp.dtype} {episode.stamp.shape}"
    return None


def _config_problem(episode: Episode, config: dict) -> str | None:
    """Why an episode's inputs and labels do not fit the policy ``config``, or None: a 32x32 camera under a 64x64
    config failed in the first batch as 'could not broadcast input array from shape (16,64,64,3) ...'."""
    obs, steps = config["observation"], len(episode)
    expected = {}
    if obs["image"] is not None:
        expected["image"] = (obs["image"]["height"], obs["image"]["width"], 3)
    expected.update({k: (steps, n) for k, n in obs["vectors"].items()})
    sensors = len(obs["update_on"])
    expected.update({k: (steps,) if k == "event" else (steps, sensors) for k in obs["timing"]})
    for key, shape in expected.items():
        if key not in episode.observations:
            return f"lacks the policy's input {key!r}"
        found = episode.observations[key].shape
        if (found[1:] if key == "image" else found) != shape:
            what = "frames of height, width, channels" if key == "image" else "shape"
            return f"{key} has {what} {found[1:] if key == 'image' else found}, the policy's config {shape}"
    if (
        "event" in expected
        and len(episode)
        and not 0 <= episode.observations["event"].min() <= episode.observations["event"].max() < sensors
    ):
        return f"event must number an update sensor in [0, {sensors}) (observation.update_on)"
    for key in ("expert_action", "action"):
        found = getattr(episode, key).shape
        if found != (steps, config["action"]["size"]):
            return f"{key} has shape {found}, the policy's config ({steps}, {config['action']['size']}) (action.size)"
    return None


class ActionNoise:
    """DART-style perturbation (Laskey et al. 2017): Ornstein-Uhlenbeck noise in action units, ``std`` at
    steady state and correlation time ``tau`` seconds, advanced by each update's dt (so it is the same process
    at any sensor rate)."""

    def __init__(self, std: float, tau: float, size: int, rng: np.random.Generator):
        self.std, self.tau, self.rng = float(std), float(tau), rng
        self.value = rng.normal(0.0, self.std, size=size) if std > 0 else np.zeros(size)

    def __call__(self, dt: float) -> np.ndarray:
        """Advance the noise by ``dt`` seconds and return it (zeros when ``std`` is 0)."""
        if self.std > 0:
            keep = np.exp(-dt / self.tau) if self.tau > 0 else 0.0
            self.value = keep * self.value + np.sqrt(1.0 - keep**2) * self.rng.normal(0.0, self.std, self.value.shape)
        return self.value


def rollout(
    env,
    agent=None,
    *,
    beta: float = 1.0,
    rng: np.random.Generator | None = None,
    seed: int | None = None,
    observation_keys=None,
    max_steps: int | None = None,
    record: bool = True,
    action_noise: tuple[float, float] = (0.0, 0.0),
) -> Episode:
    """Run one episode. At each update the expert's action is the label; the executed action is the expert's
    with probability ``beta`` (per update) and the agent's otherwise (DAgger's mixture policy).

    The agent acts at every update, even when the expert drives, so its recurrent state follows the episode.
    ``agent=None`` requires ``beta == 1`` (pure expert demonstrations). ``action_noise`` (std, tau): the
    expert's executed actions carry :class:`ActionNoise` (the labels stay clean).
    """
    if agent is None and beta < 1.0:
        raise ValueError("rollout: beta < 1 needs an agent to drive")
    rng = rng if rng is not None else np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    if agent is not None:
        agent.reset()
    noise = ActionNoise(*action_noise, size=env.action_space.shape[0], rng=rng)
    low, high = env.action_space.low, env.action_space.high
    keys = (
        list(observation_keys) if observation_keys is not None else [k for k in obs if k not in ("dt", "event", "ages")]
    )
    rec = {k: [] for k in keys}
    frames, image_index = [], []
    dts, stamps, labels, actions = [], [], [], []
    steps = 0
    while True:
        expert = np.asarray(env.unwrapped.expert_action(), dtype=np.float32)
        own = agent.act(obs) if agent is not None else None
        dt = float(np.asarray(obs["dt"]).reshape(-1)[0])
        perturbation = noise(dt)
        if own is None or rng.random() < beta:
            action = np.clip(expert + perturbation, low, high).astype(np.float32) if noise.std > 0 else expert
        else:
            action = own
        if record:
            for k in keys:
                if k == "image":  # a frame is stored once, then referred to while it is held
                    if not frames or not np.array_equal(frames[-1], obs["image"]):
                        frames.append(np.asarray(obs["image"]))
                    image_index.append(len(frames) - 1)
                else:
                    rec[k].append(np.asarray(obs[k]))
            dts.append(dt)
            stamps.append(float(info.get("stamp", np.nan)))
            labels.append(expert)
            actions.append(np.asarray(action, dtype=np.float32))
        obs, _, terminated, truncated, info = env.step(action)
        steps += 1
        if terminated or truncated or (max_steps is not None and steps >= max_steps):
            break
    observations = {}
    if record:
        for k, v in rec.items():
            if k == "image":
                observations[k] = np.stack(frames).astype(np.uint8)
            elif k == "event":
                observations[k] = np.asarray(v, dtype=np.int64)
            else:
                observations[k] = np.stack(v).astype(np.float32)
    empty = np.zeros((0,), np.float32)
    return Episode(
        observations=observations,
        dt=np.asarray(dts, np.float32) if record else empty,
        stamp=np.asarray(stamps, np.float64) if record else empty.astype(np.float64),
        expert_action=np.stack(labels) if record else empty,
        action=np.stack(actions) if record else empty,
        success=bool(info.get("success", False)),
        seed=-1 if seed is None else int(seed),
        beta=beta,
        info={
            "steps": steps,
            "collision": bool(info.get("collision", False)),
            "sim_time": float(info.get("stamp", np.nan)),
        },
        image_index=np.asarray(image_index, dtype=np.int64) if record and frames else None,
    )


def split_at_gaps(episode: Episode, max_gap_s: float) -> list[Episode]:
    """The episode cut before every update whose dt exceeds ``max_gap_s``, each piece starting at dt 0: where
    PolicyAgent, PolicyRunner and policy_node reset the state and integrate nothing, training starts a new
    sequence from a zero state too (it used to integrate the whole gap). Frames are shared, not copied."""
    cuts = [int(i) for i in np.flatnonzero(episode.dt.astype(np.float64) > max_gap_s + DT_TOLERANCE_S) if i > 0]
    if not cuts:
        return [episode]
    pieces = []
    for start, end in zip([0, *cuts], [*cuts, len(episode)]):
        part = slice(start, end)
        dt = episode.dt[part].copy()
        if start > 0:
            dt[0] = 0.0
        pieces.append(_rows(episode, part, dt))
    return pieces


def _rows(episode: Episode, index, dt: np.ndarray) -> Episode:
    """The updates ``index`` (a slice or an index array) of ``episode`` with the given ``dt``; the frames are
    shared (``image_index`` keeps pointing into them)."""
    return Episode(
        observations={k: (v if k == "image" else v[index]) for k, v in episode.observations.items()},
        dt=dt,
        stamp=episode.stamp[index],
        expert_action=episode.expert_action[index],
        action=episode.action[index],
        success=episode.success,
        seed=episode.seed,
        beta=episode.beta,
        info=dict(episode.info),
        label_mask=None if episode.label_mask is None else episode.label_mask[index],
        image_index=None if episode.image_index is None else episode.image_index[index],
    )


def resample_episode(episode: Episode, rate_hz: float) -> Episode:
    """The episode as a fixed-rate loop would have seen it: one step per tick of ``rate_hz`` with the latest
    inputs and the expert's latest label (``liquid_control.policy.resample_ticks``; dt 0 at the first tick)."""
    from liquid_control.policy import resample_ticks

    period = 1.0 / rate_hz
    source = resample_ticks(np.cumsum(episode.dt.astype(np.float64)), period)
    dt = np.full(len(source), period, dtype=np.float32)
    dt[:1] = 0.0
    return _rows(episode, source, dt)
