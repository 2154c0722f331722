"""PolicyAgent: drives a gymnasium world with a policy, one env step = one policy update.

Used by DAgger (training) and by the OOD evaluation; the ROS node uses the runtime's PolicyRunner instead.
"""

from __future__ import annotations

import numpy as np
import torch

from .model import Policy


class PolicyAgent:
    """Holds the recurrent state of one episode; ``act`` advances it by the observation's measured dt."""

    def __init__(self, policy: Policy):
        self.policy = policy.eval()
        self.keys = (["image"] if policy.camera is not None else []) + list(policy.vector_keys)
        self.state = None

    def reset(self) -> None:
        """Start a new episode (zero / initial state)."""
        self.state = None

    @torch.no_grad()
    def act(self, obs: dict) -> np.ndarray:
        """Env observation dict (numpy, no batch dim, ``dt`` (1,)) -> action float32 (A,) within bounds."""
        batch = {}
        for key in self.keys:
            if key not in obs:
                raise ValueError(f"PolicyAgent: observation lacks {key!r} (has {', '.join(sorted(obs))})")
            batch[key] = torch.as_tensor(np.asarray(obs[key]))[None]
        if "dt" not in obs:
            raise ValueError("PolicyAgent: observation lacks 'dt' (seconds since the previous update)")
        dt = torch.as_tensor(np.asarray(obs["dt"], dtype=np.float32).reshape(1))
        action, self.state = self.policy.step(batch, self.state, dt)
        return action[0].numpy().astype(np.float32)
