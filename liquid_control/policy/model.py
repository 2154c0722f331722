"""The policy: sensor encoders -> recurrent core (advanced by the measured dt) -> tanh-bounded action head."""

from __future__ import annotations

import copy

import torch
from torch import nn

from liquid_control.cells.dt import sequence_dt, step_dt

from .config import validate_config
from .encoders import CameraEncoder, VectorEncoder


def core_config(core: dict, input_size: int, action_size: int) -> dict:
    """Translate the policy's ``core`` section into the cells' ``build_core`` config.

    An NCP wiring is drawn here (AutoNCP from the unit count, ``outputs`` motor neurons, seeded); the cells
    store the drawn wiring in the core's own config, so a checkpoint reloads the same synapses.
    """
    kind = core["type"]
    cfg = {"type": kind, "input_size": input_size}
    if kind in ("cfc", "ltc"):
        cfg["units"] = core["units"]
        if core["wiring"] == "ncp":
            from liquid_control.cells import AutoNCP

            cfg["units"] = AutoNCP(core["units"], core["outputs"] or action_size, seed=core["seed"])
    else:
        cfg["hidden_size"] = core["units"]
    if kind == "cfc":
        cfg["mode"] = core["mode"]
        if core["wiring"] != "ncp" and core["backbone_units"] is not None:
            cfg["backbone_units"] = core["backbone_units"]
    elif kind == "ltc":
        cfg["solver"] = core["solver"]
        cfg["substeps"] = core["unfolds"]
    elif kind in ("ctrnn", "gru_ode"):
        cfg["unfolds"] = core["unfolds"]
        if kind == "ctrnn":
            cfg["units"] = cfg.pop("hidden_size")
    elif kind == "tcn":
        cfg["frames"] = core["frames"]
    elif kind == "mlp":
        cfg["type"] = "frame_stack_mlp"
        cfg["frames"] = core["frames"]
    return cfg


def _build_core(core: dict, input_size: int, action_size: int) -> nn.Module:
    from liquid_control.cells import build_core

    return build_core(core_config(core, input_size, action_size))


class Policy(nn.Module):
    """Encoders + recurrent core + action head, built from one validated config (see ARCHITECTURE.md).

    Observations are dicts of tensors: ``image`` uint8 (B, H, W, 3) and one float tensor per configured vector
    key. The core integrates the measured ``dt`` of each update, per sample; with ``core.ignore_dt`` it
    integrates a constant dt = 1 instead (the ablation that tests the continuous-time claim).
    """

    def __init__(self, config: dict):
        super().__init__()
        self.config = copy.deepcopy(config)
        obs, enc, act = config["observation"], config["encoder"], config["action"]
        self.vector_keys = list(obs["vectors"])
        self.vector_sizes = [obs["vectors"][k] for k in self.vector_keys]
        features = 0
        self.camera = None
        if obs["image"] is not None:
            cam = enc["camera"]
            self.camera = CameraEncoder(
                obs["image"]["height"],
                obs["image"]["width"],
                cam["channels"],
                cam["kernel_sizes"],
                cam["strides"],
                cam["features"],
                cam["normalize"],
            )
            features += self.camera.output_size
        self.vectors = None
        if self.vector_keys:
            vec = enc["vectors"]
            self.vectors = VectorEncoder(sum(self.vector_sizes), vec["hidden"], vec["features"])
            features += self.vectors.output_size
        self.core = _build_core(config["core"], features, act["size"])
        self.head = nn.Linear(self.core.output_size, act["size"])
        self.register_buffer("action_low", torch.tensor(act["low"], dtype=torch.float32))
        self.register_buffer("action_high", torch.tensor(act["high"], dtype=torch.float32))
        self.ignore_dt = bool(config["core"]["ignore_dt"])
        self.fused_sequence = config["training"]["sequence_kernel"] == "fused"
        self.feature_size = features

    @classmethod
    def from_config(cls, config: dict) -> "Policy":
        """Build from a config dict (validated here, so a hand-written dict gets the same checks as YAML)."""
        return cls(validate_config(config))

    # ----------------------------------------------------------------------------------------- sizes, state
    @property
    def state_size(self) -> int:
        return self.core.state_size

    @property
    def action_size(self) -> int:
        return self.head.out_features

    def num_parameters(self) -> int:
        """Trainable parameters (an NCP wiring's masked-out synapses included: they are stored)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def initial_state(self, batch: int, device=None, dtype=None) -> torch.Tensor:
        return self.core.initial_state(batch, device=device, dtype=dtype)

    # ----------------------------------------------------------------------------------------- encoding
    def _vector_input(self, obs: dict, lead: tuple) -> torch.Tensor:
        parts = []
        for key, size in zip(self.vector_keys, self.vector_sizes):
            if key not in obs:
                raise ValueError(
                    f"policy {self.config['name']!r}: observation lacks {key!r} (has {', '.join(sorted(obs))})"
                )
            value = torch.as_tensor(obs[key])
            if tuple(value.shape) != lead + (size,):
                raise ValueError(
                    f"policy {self.config['name']!r}: observation {key!r} has shape "
                    f"{tuple(value.shape)}, expected {lead + (size,)}"
                )
            parts.append(value.to(torch.float32))
        return torch.cat(parts, dim=-1)

    def encode(self, obs: dict, lead: tuple) -> torch.Tensor:
        """Features (*lead, F) for observations with leading dims ``lead`` ((B,) or (B, T)), in one batch."""
        n = 1
        for d in lead:
            n *= d
        parts = []
        if self.camera is not None:
            if "image" not in obs:
                raise ValueError(f"policy {self.config['name']!r}: observation lacks 'image'")
            image = torch.as_tensor(obs["image"])
            if tuple(image.shape[: len(lead)]) != lead:
                raise ValueError(
                    f"policy {self.config['name']!r}: image has shape {tuple(image.shape)}, "
                    f"expected leading dims {lead}"
                )
            parts.append(self.camera(image.reshape((n,) + tuple(image.shape[len(lead) :]))))
        if self.vectors is not None:
            parts.append(self.vectors(self._vector_input(obs, lead).reshape(n, -1)))
        return torch.cat(parts, dim=-1).reshape(lead + (self.feature_size,))

    def act_from_output(self, y: torch.Tensor) -> torch.Tensor:
        """Core output -> action scaled into [low, high] by a tanh."""
        t = torch.tanh(self.head(y))
        return self.action_low + (t + 1.0) * 0.5 * (self.action_high - self.action_low)

    def _core_dt(self, dt: torch.Tensor) -> torch.Tensor:
        """The dt the core integrates: validated once here (``cells.dt``), then 1 under ``ignore_dt``."""
        return torch.ones_like(dt) if self.ignore_dt else dt

    # ----------------------------------------------------------------------------------------- running
    def step(self, obs: dict, state: torch.Tensor | None, dt) -> tuple[torch.Tensor, torch.Tensor]:
        """One update: obs tensors (B, ...), state (B, S) or None, dt (B,) seconds -> (action (B, A), state)."""
        dt = step_dt(dt, None, torch.float32)
        x = self.encode(obs, (dt.shape[0],))
        if dt.dtype != x.dtype:  # a float64 policy
            dt = dt.to(x.dtype)
        if state is None:
            state = self.initial_state(dt.shape[0], dtype=x.dtype)
        state = self.core.advance(x, state, self._core_dt(dt))
        return self.act_from_output(self.core.output(state)), state

    def forward_sequence(self, obs: dict, dt, h0: torch.Tensor | None = None, mask: torch.Tensor | None = None):
        """Sequences (B, T, ...) -> (actions (B, T, A), h_n (B, S)); encoders see all B*T frames in one call.

        ``mask`` (B, T) bool: False steps (padding) keep the state; their actions are those of the held state.
        The core runs its sequence path (``RecurrentCore.forward_sequence``: the fused, compiled kernels where
        it has them); ``training.sequence_kernel: stepwise`` selects its per-step autograd path instead.
        """
        dt = torch.as_tensor(dt)
        if dt.dim() != 2:
            raise ValueError(f"policy {self.config['name']!r}: sequence dt must be (B, T), got {tuple(dt.shape)}")
        batch, steps = dt.shape
        dt = sequence_dt(dt, batch, steps, torch.float32)
        x = self.encode(obs, (batch, steps))
        if dt.dtype != x.dtype:  # a float64 policy
            dt = dt.to(x.dtype)
        outputs, h_n = self.core.advance_sequence(
            x, self._core_dt(dt), h0, mask, fused=self.fused_sequence, readout=True
        )
        return self.act_from_output(outputs), h_n

    def forward(self, obs: dict, dt, h0=None, mask=None):
        return self.forward_sequence(obs, dt, h0, mask)
