"""Demonstrations: episodes driven by the expert, the policy, or a beta-mixture of both (DAgger), labelled by
the privileged expert, stored one compressed ``.npz`` per episode with their real stamps and dt.

An episode file holds, per update t (one env step = one sensor-triggered policy update):
``image`` uint8 (T, H, W, 3) if the world has a camera; ``vec_<key>`` float32 (T, n) per vector sensor;
``dt`` float32 (T,) measured seconds since the previous update (0 at reset), ``stamp`` float64 (T,) sim time
of the update; ``expert_action`` float32 (T, A) the label; ``action`` float32 (T, A) what was executed;
and scalars ``success``, ``seed``, ``beta``. Files are written atomically, so a killed collection never
leaves a truncated episode that a resumed run would trust.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from liquid_control.atomic_file import atomic_write


@dataclass
class Episode:
    """One recorded episode (arrays indexed by update)."""

    observations: dict  # "image" uint8 (T,H,W,3) and vector keys float32 (T,n)
    dt: np.ndarray  # float32 (T,)
    stamp: np.ndarray  # float64 (T,)
    expert_action: np.ndarray  # float32 (T, A)
    action: np.ndarray  # float32 (T, A)
    success: bool = False
    seed: int = -1
    beta: float = 1.0
    info: dict = field(default_factory=dict)
    label_mask: np.ndarray | None = None  # bool (T,): False where there is no label (bags); None: all labelled

    def __len__(self) -> int:
        return int(self.dt.shape[0])


def save_episode(path: str | Path, episode: Episode) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {("image" if k == "image" else f"vec_{k}"): v for k, v in episode.observations.items()}
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


def load_episode(path: str | Path) -> Episode:
    """Read one episode file; any problem is an :class:`EpisodeFileError` naming the file."""
    path = Path(path)
    try:
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
            )
    except Exception as exc:  # truncated (BadZipFile), flipped bytes (CRC, zlib), empty (EOFError), missing keys
        raise EpisodeFileError(f"{path}: not a readable demonstration episode ({type(exc).__name__}: {exc})") from None
    lengths = {k: len(v) for k, v in obs.items()} | {
        "stamp": len(episode.stamp),
        "expert_action": len(episode.expert_action),
        "action": len(episode.action),
    }
    if any(n != len(episode) for n in lengths.values()):
        raise EpisodeFileError(f"{path}: arrays of different lengths {lengths} (dt: {len(episode)})")
    return episode


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
) -> Episode:
    """Run one episode. At each update the expert's action is the label; the executed action is the expert's
    with probability ``beta`` (per update) and the agent's otherwise (DAgger's mixture policy).

    The agent acts at every update, even when the expert drives, so its recurrent state follows the episode.
    ``agent=None`` requires ``beta == 1`` (pure expert demonstrations).
    """
    if agent is None and beta < 1.0:
        raise ValueError("rollout: beta < 1 needs an agent to drive")
    rng = rng if rng is not None else np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    if agent is not None:
        agent.reset()
    keys = list(observation_keys) if observation_keys is not None else [k for k in obs if k not in ("dt", "ages")]
    rec = {k: [] for k in keys}
    dts, stamps, labels, actions = [], [], [], []
    steps = 0
    while True:
        expert = np.asarray(env.unwrapped.expert_action(), dtype=np.float32)
        own = agent.act(obs) if agent is not None else None
        action = expert if (own is None or rng.random() < beta) else own
        if record:
            for k in keys:
                rec[k].append(np.asarray(obs[k]))
            dts.append(float(np.asarray(obs["dt"]).reshape(-1)[0]))
            stamps.append(float(info.get("stamp", np.nan)))
            labels.append(expert)
            actions.append(np.asarray(action, dtype=np.float32))
        obs, _, terminated, truncated, info = env.step(action)
        steps += 1
        if terminated or truncated or (max_steps is not None and steps >= max_steps):
            break
    observations = (
        {k: (np.stack(v).astype(np.uint8) if k == "image" else np.stack(v).astype(np.float32)) for k, v in rec.items()}
        if record
        else {}
    )
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
    )
