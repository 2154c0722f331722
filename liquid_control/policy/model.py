"""The policy: sensor encoders -> recurrent core (advanced by the measured dt) -> tanh-bounded action head."""

from __future__ import annotations

import contextlib
import copy
import math

import torch
from torch import nn

from liquid_control.cells.core import autocast_on
from liquid_control.cells.dt import sequence_dt, step_dt, substep_counts

from .config import validate_config
from .encoders import CameraEncoder, VectorEncoder

ENCODERS = ("camera", "vectors")  # encoder names, in the order of their features (core input and state)


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


# Ages enter the core on a log scale: 1 ms -> 0.10, 5 ms -> 0.26, 33 ms -> 0.51, 1 s -> 1.0, so the IMU's
# milliseconds and a slow camera's hundreds of milliseconds both stay visible.
AGE_UNIT_S = 1e-3
AGE_FULL_SCALE_S = 1.0


def _padding_zeroed(obs: dict, mask, lead: tuple) -> dict:
    """``obs`` with every (B, T, ...) input zero on the steps ``mask`` marks as padding: the core holds its state
    there, but the encoders still saw those inputs and backward multiplied a zero gradient by their local
    derivative, so NaN padding made the encoders' gradients NaN behind a finite loss (training pads with zeros)."""
    if mask is None:
        return obs
    keep = torch.as_tensor(mask).to(torch.bool)
    if tuple(keep.shape) != lead:
        return obs  # a mask of another shape is refused by the core, with its own message
    zeroed = {}
    for key, value in obs.items():
        # float inputs only: a uint8 frame holds no NaN, and frames shared by ``image_index`` are (B, F, ...), which
        # F == T made look like steps (a valid step's frame zeroed where another step was padding)
        tensor = torch.as_tensor(value) if hasattr(value, "shape") else None  # a tensor or numpy array
        if tensor is not None and tuple(tensor.shape[:2]) == lead and tensor.is_floating_point():
            value = tensor
            where = keep.to(value.device).reshape(lead + (1,) * (value.dim() - 2))
            value = torch.where(where, value, torch.zeros((), dtype=value.dtype, device=value.device))
        zeroed[key] = value
    return zeroed


def _substep_sequence(x: torch.Tensor, dt: torch.Tensor, mask: torch.Tensor | None, counts: torch.Tensor):
    """A sequence (B, T) with step t repeated as often as its most sub-stepped sample needs (K_t): sample b
    advances ``counts[b, t]`` sub-steps of ``dt[b, t] / counts[b, t]`` on the held input and holds its state
    (masked) for the rest, exactly as ``Policy.advance`` does in a streaming step. Returns the core's sequence
    inputs (x, dt, mask) and the index of each step's last sub-step."""
    repeats = counts.max(dim=0).values.long()  # (T,)
    index = torch.repeat_interleave(torch.arange(x.shape[1], device=x.device), repeats)
    ends = torch.cumsum(repeats, 0)
    position = torch.arange(index.shape[0], device=x.device) - (ends - repeats)[index]  # sub-step within its step
    active = position[None, :] < counts[:, index]
    if mask is not None:
        active &= mask.to(torch.bool)[:, index]
    return x[:, index], (dt / counts)[:, index], active, ends - 1


_HALF = (torch.float16, torch.bfloat16)  # summed in float32: a finite batch's sum stays finite


class Policy(nn.Module):
    """Encoders + recurrent core + action head, built from one validated config (see ARCHITECTURE.md).

    Observations are dicts of tensors: ``image`` uint8 (B, H, W, 3) and one float tensor per configured vector
    key; with ``observation.timing``, also ``event`` (B,) int (index into ``update_on`` of the sensor whose
    message caused the update) and ``ages`` (B, len(update_on)) seconds since each update sensor's latest
    message. The core integrates the measured ``dt`` of each update, per sample; with ``core.ignore_dt`` it
    integrates a constant dt = 1 instead (the ablation that tests the continuous-time claim). With
    ``core.max_step``, a dt longer than that is integrated in equal sub-steps with the update's input held
    (``cells.dt.substep_counts``), in streaming steps and in sequences alike.

    The state is the core's state followed by the latest features of each encoder (``camera``: the CNN,
    ``vectors``: the MLP over all vector inputs), so a streaming ``step`` runs an encoder only when one of its
    inputs has a new message (``encode``) and takes the others' features from the state.
    """

    def __init__(self, config: dict):
        super().__init__()
        self.config = copy.deepcopy(config)
        obs, enc, act = config["observation"], config["encoder"], config["action"]
        self.vector_keys = list(obs["vectors"])
        self.vector_sizes = [obs["vectors"][k] for k in self.vector_keys]
        self.update_on = list(obs["update_on"])
        self.timing = list(obs["timing"])
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
                cam["instance_norm_layers"],
            )
        self.vectors = None
        if self.vector_keys:
            vec = enc["vectors"]
            self.vectors = VectorEncoder(sum(self.vector_sizes), vec["hidden"], vec["features"])
        self.encoder_names = [name for name in ENCODERS if getattr(self, name) is not None]
        self.encoder_sizes = [getattr(self, name).output_size for name in self.encoder_names]
        self.feature_size = sum(self.encoder_sizes)
        self.time_size = len(self.timing) * len(self.update_on)
        self.core = _build_core(config["core"], self.feature_size + self.time_size, act["size"])
        self.head = nn.Linear(self.core.output_size, act["size"])
        # in the weights' precision: float32 as a rule, float64 under torch.set_default_dtype(torch.float64)
        self.register_buffer("action_low", torch.tensor(act["low"], dtype=torch.get_default_dtype()))
        self.register_buffer("action_high", torch.tensor(act["high"], dtype=torch.get_default_dtype()))
        self.ignore_dt = bool(config["core"]["ignore_dt"])
        self.max_step = config["core"].get("max_step")
        self.fused_sequence = config["training"]["sequence_kernel"] == "fused"

    @classmethod
    def from_config(cls, config: dict) -> "Policy":
        """Build from a config dict (validated here, so a hand-written dict gets the same checks as YAML)."""
        return cls(validate_config(config))

    # ----------------------------------------------------------------------------------------- sizes, state
    @property
    def state_size(self) -> int:
        """The core's state plus the cached features of every encoder."""
        return self.core.state_size + self.feature_size

    @property
    def action_size(self) -> int:
        """Number of action elements."""
        return self.head.out_features

    def num_parameters(self) -> int:
        """Trainable parameters (an NCP wiring's masked-out synapses included: they are stored)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def initial_state(self, batch: int, device=None, dtype=None) -> torch.Tensor:
        """(B, state_size): the core's initial state, and zero features (every encoder runs at the first step)."""
        core = self.core.initial_state(batch, device=device, dtype=dtype)
        return torch.cat([core, core.new_zeros(batch, self.feature_size)], dim=-1)

    def split_state(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(core state, cached features) of a policy state."""
        return state[..., : self.core.state_size], state[..., self.core.state_size :]

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

    def _image_input(self, obs: dict, lead: tuple) -> torch.Tensor:
        if "image" not in obs:
            raise ValueError(f"policy {self.config['name']!r}: observation lacks 'image'")
        image = torch.as_tensor(obs["image"])
        if image.dtype != torch.uint8:  # a float frame: 0-1 or 0-255? not guessed (0-1 was scaled to a black frame)
            raise ValueError(
                f"policy {self.config['name']!r}: observation 'image' must be uint8 as a camera gives it (0-255; the "
                f"policy scales it), got {str(image.dtype).removeprefix('torch.')}"
            )
        if tuple(image.shape[: len(lead)]) != lead:
            raise ValueError(
                f"policy {self.config['name']!r}: image has shape {tuple(image.shape)}, expected leading dims {lead}"
            )
        return image

    def encode_with(self, name: str, obs: dict, lead: tuple) -> torch.Tensor:
        """Features (*lead, size) of encoder ``name`` (``camera`` or ``vectors``) for observations with leading
        dims ``lead``, in one batch.

        For sequences, ``image`` may hold each episode's distinct frames (B, F, H, W, 3) with
        ``image_index`` (B, T) naming the frame of each step: the CNN then runs once per frame, not per step.
        """
        if name == "vectors":
            return self.vectors(self._vector_input(obs, lead).reshape(-1, sum(self.vector_sizes))).reshape(lead + (-1,))
        if "image_index" in obs:
            index = torch.as_tensor(obs["image_index"]).long()
            frames = self._image_input(obs, lead[:1])
            batch, count = frames.shape[:2]
            if tuple(index.shape) != lead or (
                index.numel() and not (0 <= int(index.min()) <= int(index.max()) < count)
            ):
                # a negative index would pick another sample's frame (the frames are flattened over the batch)
                raise ValueError(
                    f"policy {self.config['name']!r}: image_index must have shape {lead} with values in "
                    f"[0, {count}) (the frames per sequence), got shape {tuple(index.shape)}"
                    + (f", values {int(index.min())}..{int(index.max())}" if index.numel() else "")
                )
            features = self.camera(frames.reshape((batch * count,) + tuple(frames.shape[2:])))
            flat = index + torch.arange(batch, device=index.device).reshape((batch,) + (1,) * (index.dim() - 1)) * count
            return features[flat.reshape(-1)].reshape(lead + (-1,))
        image = self._image_input(obs, lead)
        if len(lead) == 1:  # a batch of frames, as the camera takes them (each reshape costs microseconds)
            return self.camera(image)
        return self.camera(image.reshape((-1,) + tuple(image.shape[len(lead) :]))).reshape(lead + (-1,))

    def encode(self, obs: dict, lead: tuple) -> torch.Tensor:
        """Features (*lead, F) of every encoder, concatenated."""
        return torch.cat([self.encode_with(name, obs, lead) for name in self.encoder_names], dim=-1)

    def time_inputs(self, obs: dict, lead: tuple) -> torch.Tensor:
        """The core's time inputs (*lead, time_size): one-hot ``event`` and log-scaled ``ages`` as configured."""
        parts = []
        n = len(self.update_on)
        for kind in self.timing:
            if kind not in obs:
                raise ValueError(f"policy {self.config['name']!r}: observation lacks {kind!r} (observation.timing)")
            value = torch.as_tensor(obs[kind])
            want = lead if kind == "event" else lead + (n,)
            if tuple(value.shape) != want:
                raise ValueError(
                    f"policy {self.config['name']!r}: {kind!r} has shape {tuple(value.shape)}, expected {want}"
                )
            if kind == "event":
                if value.numel() and not (0 <= float(value.min()) and float(value.max()) < n):
                    # one-hot of an index outside [0, n) is all zeros: the core would see no event, silently
                    raise ValueError(
                        f"policy {self.config['name']!r}: 'event' must index an update sensor in [0, {n}) "
                        f"({', '.join(self.update_on)}), got values {value.min().item()}..{value.max().item()}"
                    )
                parts.append((value[..., None].long() == torch.arange(n, device=value.device)).to(torch.float32))
            else:
                ages = value.to(torch.float32).clamp_min(0.0)
                parts.append(torch.log1p(ages / AGE_UNIT_S) / math.log1p(AGE_FULL_SCALE_S / AGE_UNIT_S))
        if not parts:
            return torch.zeros(lead + (0,))
        return torch.cat(parts, dim=-1)

    def act_from_output(self, y: torch.Tensor) -> torch.Tensor:
        """Core output -> action scaled into [low, high] by a tanh."""
        t = torch.tanh(self.head(y))
        return self.action_low + (t + 1.0) * 0.5 * (self.action_high - self.action_low)

    def _core_dt(self, dt: torch.Tensor) -> torch.Tensor:
        """The dt the core integrates: validated once here (``cells.dt``), then 1 under ``ignore_dt``."""
        return torch.ones_like(dt) if self.ignore_dt else dt

    # ----------------------------------------------------------------------------------------- running
    @staticmethod
    def core_input(features: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        """The core's input: the encoders' features followed by the time inputs (``time_inputs``)."""
        if time.shape[-1] == 0:  # no time inputs (``observation.timing`` empty): the same values, no copy
            return features
        return torch.cat([features, time.to(features.dtype)], dim=-1)

    def advance(self, features: torch.Tensor, time: torch.Tensor, core_state: torch.Tensor, dt: torch.Tensor):
        """The core's update from the encoders' features and the time inputs, with a validated ``dt`` (B,):
        (action (B, A), core state)."""
        return self._advance_core(self.core_input(features, time), core_state, dt)

    def _advance_core(self, x: torch.Tensor, core_state: torch.Tensor, dt: torch.Tensor):
        """``advance`` from the core's input ``x`` (``core_input``)."""
        if dt.dtype != x.dtype:  # a float64 policy
            dt = dt.to(x.dtype)
        if not core_state.is_contiguous():
            core_state = core_state.contiguous()
        counts = None
        # Sub-steps only where some dt exceeds max_step: at or below it every count is 1 (dt / max_step <= 1 in
        # any precision, rounding being monotonic), decided on Python floats (each torch op costs microseconds).
        if self.max_step is not None and max(dt.tolist(), default=0.0) > self.max_step:
            counts = substep_counts(dt, self.max_step)
        n = 1 if counts is None else int(counts.max())
        if n == 1:
            core_state = self.core_step(x, core_state, dt)
        else:  # sample b takes counts[b] sub-steps of dt[b] / counts[b]; then it holds its state
            h = dt / counts
            for i in range(n):
                stepped = self.core_step(x, core_state, h)
                core_state = stepped if i == 0 else torch.where((counts > i)[:, None], stepped, core_state)
        return self.act_from_output(self.core.output(core_state)), core_state

    def core_step(self, x: torch.Tensor, core_state: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        """One step of the core over ``dt`` (B,) without sub-steps (the ONNX export loops over this one)."""
        return self.core.advance(x, core_state, self._core_dt(dt))

    def step(self, obs: dict, state: torch.Tensor | None, dt, encode=None) -> tuple[torch.Tensor, torch.Tensor]:
        """One update: obs tensors (B, ...), state (B, state_size) or None, dt (B,) seconds -> (action, state).

        ``encode``: names of the encoders to run (None: all); the others' features come from ``state``, so
        their inputs may be absent from ``obs``.
        """
        dt = step_dt(dt, None, torch.float32)
        lead = (dt.shape[0],)
        if state is None:  # in the policy's precision (float64 policies exist for the kernels' tests)
            state = self.initial_state(dt.shape[0], dtype=self.head.weight.dtype)
        elif tuple(state.shape) != (lead[0], self.state_size):
            raise ValueError(
                f"policy {self.config['name']!r}: state must have shape ({lead[0]}, {self.state_size}) (the core's "
                f"{self.core.state_size} and the encoders' {self.feature_size} cached features), "
                f"got {tuple(state.shape)}"
            )
        if encode is not None:
            encode = (encode,) if isinstance(encode, str) else encode
            unknown = [name for name in encode if name not in self.encoder_names]
            if unknown:  # an unknown name would leave the encoder's cached (first step: zero) features in place
                raise ValueError(
                    f"policy {self.config['name']!r}: encode names {unknown}, not encoders of this policy "
                    f"({', '.join(self.encoder_names)})"
                )
        core_size = self.core.state_size
        parts, offset = [], core_size
        for name, size in zip(self.encoder_names, self.encoder_sizes):
            if encode is None or name in encode:
                features = self.encode_with(name, obs, lead)
                if features.dtype != state.dtype:
                    features = features.to(state.dtype)
                # A NaN input would become a NaN action, silently. The features are tanh-bounded (NaN is the only
                # value that is not finite), so their sum is finite exactly when they all are: 2 ops, isfinite's 6.
                total = features.sum(dtype=torch.float32) if features.dtype in _HALF else features.sum()
                if not math.isfinite(total.item()):  # (half precision summed in float32: no overflow)
                    raise ValueError(f"policy {self.config['name']!r}: {name!r} input is not finite (NaN or inf)")
                parts.append(features)
            else:  # the features cached in the state
                parts.append(state[:, offset : offset + size])
            offset += size
        # one encoder's fresh features as they are (a cached slice of the state is copied: the core reads rows)
        features = parts[0] if len(parts) == 1 and parts[0].is_contiguous() else torch.cat(parts, dim=-1)
        x = features
        if self.timing:
            times = self.time_inputs(obs, lead)
            if not bool(torch.isfinite(times).all()):
                raise ValueError(
                    f"policy {self.config['name']!r}: time inputs ({', '.join(self.timing)}) are not finite"
                )
            x = self.core_input(features, times)
        action, core_state = self._advance_core(x, state[:, :core_size], dt)
        return action, torch.cat([core_state, features], dim=-1)

    def forward_sequence(self, obs: dict, dt, h0: torch.Tensor | None = None, mask: torch.Tensor | None = None):
        """Sequences (B, T, ...) -> (actions (B, T, A), h_n (B, state_size)); each encoder sees all of its
        inputs in one call (the camera CNN once per distinct frame, see ``encode_with``).

        ``mask`` (B, T) bool: False steps (padding) keep the state; their actions are those of the held state.
        The core runs its sequence path (``RecurrentCore.advance_sequence``: the fused, compiled kernels where
        it has them); ``training.sequence_kernel: stepwise`` selects its per-step autograd path instead. Every
        step carries all of its inputs, so the features cached in ``h0`` are not needed; those in ``h_n`` are
        the last valid step's.
        """
        dt = torch.as_tensor(dt)
        if dt.dim() != 2:
            raise ValueError(f"policy {self.config['name']!r}: sequence dt must be (B, T), got {tuple(dt.shape)}")
        batch, steps = dt.shape
        if steps == 0:  # the encoders' reshapes of nothing ended in torch's own error
            raise ValueError(
                f"policy {self.config['name']!r}: a sequence needs at least one step, got dt of shape {tuple(dt.shape)}"
            )
        dt = sequence_dt(dt, batch, steps, torch.float32)
        obs = _padding_zeroed(obs, mask, (batch, steps))
        features = self.encode(obs, (batch, steps))
        x = self.core_input(features, self.time_inputs(obs, (batch, steps)))
        core_h0 = None if h0 is None else self.split_state(h0)[0].contiguous()
        # Under torch.autocast the core runs as the cells' own entry points run it (``RecurrentCore.step``,
        # ``forward_sequence``): autocast off, x and h0 in its weights' dtype; the encoders and head stay in it.
        autocast = autocast_on(x)
        if autocast:
            x, core_h0 = self.core.cast_for_autocast(x, core_h0)
        if dt.dtype != x.dtype:  # a float64 policy
            dt = dt.to(x.dtype)
        core_x, core_dt, core_mask, last = x, dt, mask, None
        if self.max_step is not None:
            counts = substep_counts(dt, self.max_step)
            if bool((counts > 1).any()):
                core_x, core_dt, core_mask, last = _substep_sequence(x, dt, mask, counts)
        with torch.autocast(x.device.type, enabled=False) if autocast else contextlib.nullcontext():
            outputs, core_hn = self.core.advance_sequence(
                core_x, self._core_dt(core_dt), core_h0, core_mask, fused=self.fused_sequence, readout=True
            )
        if last is not None:  # each step's output is that of its last sub-step
            outputs = outputs[:, last]
        return self.act_from_output(outputs), torch.cat([core_hn, self._last_features(features, h0, mask)], dim=-1)

    def _last_features(self, features: torch.Tensor, h0: torch.Tensor | None, mask: torch.Tensor | None):
        """Features (B, F) of each sample's last valid step (h0's, or zeros, where no step is valid)."""
        if mask is None:
            return features[:, -1]
        steps = torch.arange(1, mask.shape[1] + 1, device=mask.device)
        last = (mask.long() * steps).argmax(dim=1)
        picked = features[torch.arange(features.shape[0]), last]
        held = self.split_state(h0)[1] if h0 is not None else torch.zeros_like(picked)
        return torch.where(mask.any(dim=1, keepdim=True), picked, held.to(picked.dtype))

    def forward(self, obs: dict, dt, h0=None, mask=None):
        """``forward_sequence`` (what calling the module runs)."""
        return self.forward_sequence(obs, dt, h0, mask)
