"""PolicyAgent: drives a gymnasium world with a policy, one env step = one policy update.

Used by DAgger (training) and by the OOD evaluation; the ROS node uses the runtime's PolicyRunner instead.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from liquid_control.cells.dt import DT_TOLERANCE_S

from .model import Policy

# The update gap beyond which the state is reset: the node's default (policy_node's max_gap_s, RunnerLimits), kept
# equal by test/test_policy.py (the ROS conventions sit above this layer, so it is not imported from there).
DEFAULT_MAX_GAP_S = 1.0
# Two event stamps closer than this are the same instant (resampling ticks on an event).
_SAME_INSTANT_S = 1e-9


def observation_keys(config: dict) -> list[str]:
    """The observation keys a policy reads: its inputs, then its time inputs (``event``, ``ages``)."""
    obs = config["observation"]
    return (["image"] if obs["image"] is not None else []) + list(obs["vectors"]) + list(obs["timing"])


def resample_ticks(stamps: np.ndarray, period: float) -> np.ndarray:
    """For fixed-rate ticks ``j * period`` (j = 0, 1, ...; stamps measured from the first event) up to the last
    event: the index of the latest event at or before each tick (the input a fixed-rate loop would hold).

    The one definition of resampling: :class:`PolicyAgent` steps a ``resample_hz`` policy on these ticks and
    training builds its sequences with them.
    """
    stamps = np.asarray(stamps, dtype=np.float64)
    if stamps.size == 0:
        return np.zeros(0, dtype=np.int64)
    ticks = np.arange(int(np.floor((stamps[-1] - stamps[0]) / period + _SAME_INSTANT_S)) + 1) * period + stamps[0]
    return np.searchsorted(stamps, ticks + _SAME_INSTANT_S, side="right") - 1


class PolicyAgent:
    """Holds the recurrent state of one episode; ``act`` advances it by the observation's measured dt.

    Each encoder runs only when one of its inputs changed since it last ran (the camera CNN once per frame);
    a policy with ``observation.resample_hz`` instead steps on a fixed-rate clock with the latest inputs (the
    resampling baseline; see :func:`resample_ticks`).

    Large gaps: a dt over ``max_gap_s`` (default: the node's, 1 s) resets the state and restarts the clock on
    that event, like the first update of an episode (dt 0, PolicyRunner's rule: the old memory describes a world
    that has moved on), so simulated evaluation, training from bags and the node treat a gap alike. For a
    resampled policy ticking through it instead would run dt * resample_hz steps with held inputs: a clock jump
    of 1e6 s was 1e8 steps, a hang. ``gap_resets`` counts them.
    """

    def __init__(self, policy: Policy, max_gap_s: float = DEFAULT_MAX_GAP_S):
        if isinstance(max_gap_s, bool) or not isinstance(max_gap_s, (int, float)) or not 0 < max_gap_s < math.inf:
            raise ValueError(f"PolicyAgent: max_gap_s must be seconds > 0 (finite), got {max_gap_s!r}")
        self.max_gap_s = float(max_gap_s)
        self.gap_resets = 0  # gaps over max_gap_s that reset the state
        self.policy = policy.eval()
        self.keys = observation_keys(policy.config)
        self.inputs = {
            "camera": ["image"] if policy.camera is not None else [],
            "vectors": list(policy.vector_keys),
        }
        hz = policy.config["observation"]["resample_hz"]
        self.period = None if hz is None else 1.0 / hz
        self.reset()

    def reset(self) -> None:
        """Start a new episode (zero / initial state)."""
        self.state = None
        self._encoded = {}  # encoder -> the raw inputs it last ran on
        self._stamp = 0.0  # seconds since the first update (sum of dt)
        self._tick = 0  # resampling: index of the next tick
        self._previous = None  # the previous event's observation (None: no update since the reset)
        self._action = None

    def _step(self, batch: dict, dt: float) -> np.ndarray:
        encode = []
        for name, keys in self.inputs.items():
            if keys and not all(np.array_equal(batch[k], self._encoded.get(name, {}).get(k)) for k in keys):
                encode.append(name)
                self._encoded[name] = {k: batch[k] for k in keys}
        tensors = {k: torch.as_tensor(v)[None] for k, v in batch.items()}
        action, self.state = self.policy.step(tensors, self.state, torch.tensor([dt], dtype=torch.float32), encode)
        return action[0].numpy().astype(np.float32)

    @torch.no_grad()
    def act(self, obs: dict) -> np.ndarray:
        """Env observation dict (numpy, no batch dim, ``dt`` (1,)) -> action float32 (A,) within bounds."""
        batch = {}
        for key in self.keys:
            if key not in obs:
                raise ValueError(f"PolicyAgent: observation lacks {key!r} (has {', '.join(sorted(obs))})")
            batch[key] = np.asarray(obs[key])
        if "dt" not in obs:
            raise ValueError("PolicyAgent: observation lacks 'dt' (seconds since the previous update)")
        dt = float(np.asarray(obs["dt"], dtype=np.float32).reshape(-1)[0])
        if not 0.0 <= dt < math.inf:  # a resampled policy's clock would be NaN forever (frozen) or tick forever (inf)
            raise ValueError(f"PolicyAgent: dt must be finite and >= 0 (seconds since the previous update), got {dt}")
        first = self._previous is None
        if not first and dt > self.max_gap_s + DT_TOLERANCE_S:  # reset: a new episode's first update (class doc)
            self.reset()
            self.gap_resets += 1
            first, dt = True, 0.0
        if self.period is None:
            self._previous = batch
            return self._step(batch, dt)
        self._stamp = 0.0 if first else self._stamp + dt
        # ticks before this event hold the previous event's inputs; one on this event takes its inputs
        while not first and self._tick * self.period < self._stamp - _SAME_INSTANT_S:
            self._action = self._step(self._previous, 0.0 if self._tick == 0 else self.period)
            self._tick += 1
        if self._tick * self.period <= self._stamp + _SAME_INSTANT_S:
            self._action = self._step(batch, 0.0 if self._tick == 0 else self.period)
            self._tick += 1
        self._previous = batch
        return self._action
