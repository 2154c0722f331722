"""Robustness recipes of behaviour cloning that act on the data: photometric augmentation, timing and sun draws.

All are config switches, off by default so that the headline OOD comparison measures the architectures:

- ``training.augmentation: [brightness, contrast, gamma, colour, noise, blur, shift, gradient, mirror, yaw]``
  perturbs the camera frames of a batch *in image space*, after rendering (``mirror`` also negates the turn
  labels, ``yaw`` turns the view and corrects them: synthetic recovery demonstrations, see ``YawRecovery``). The
  worlds only ever render the training distribution (summer, noon, clear air, nominal sensors): no dusk, night,
  autumn, winter or fog frame is rendered for training. Parameters are drawn once per episode of a batch and
  kept for all of its chunks (a consistent "other camera" rather than per-frame flicker); only pixel noise is
  drawn per frame. ``AUGMENTATION_RANGES`` is exactly what a policy trained with a kind saw (the report and the
  model cards print it).
- ``training.sensor_rate_range`` / ``training.jitter_range``: each training episode is collected with the
  sensor rate multiplied by a factor drawn log-uniformly from the range, and the jitter by one drawn uniformly
  (``EpisodeTiming``). The recorded dt are then those of the drawn timing, so the core learns from a spread
  of update intervals; the OOD evaluation tests rates outside the range.
- ``training.sun_elevation_range``: each training episode is lit by the world's own sun (colour, strength,
  ambient light and sky unchanged) from a direction drawn per episode (``EpisodeSun``): lighting randomisation
  in the renderer, for the shading a low sun casts, which no image transform produces. It renders no test
  lighting as long as the range stays above the tested elevations (dusk: 13 degrees).

Costs (measured, docs/training.md; one thread, a chunk of 16 x 16 frames of 64 x 64): the headline's photometric
kinds take ~42 CPU-ms (the noise draws ~12, the blur ~11, gamma's pow ~8, the colour map ~6), ~40% of the
recipe arm's chunk; timing draws change how many updates an episode has (a 2x rate doubles its frames and its
share of the epoch).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from liquid_control.policy.config import AUGMENTATIONS, yaw_recovery_params

# kind -> (what it does, its range); the values below are what `EpisodeAugmentation` draws from.
AUGMENTATION_RANGES = {
    "brightness": "pixel values x U(0.6, 1.4)",
    "contrast": "deviation from the frame mean x U(0.6, 1.4)",
    "gamma": "x ** g, log g ~ U(log 0.6, log 1.6)",
    "colour": "per-channel gain U(0.8, 1.2) and saturation x U(0.5, 1.5)",
    "noise": "Gaussian pixel noise, std U(0, 0.06) on [0, 1] per episode, drawn per pixel and frame",
    "blur": "Gaussian blur, sigma U(0, 1.2) pixels",
    "shift": "translation by -3..3 pixels (wrap-around)",
    "gradient": "uneven light: rows x a linear ramp from f_top (top row) to f_bottom (bottom row), "
    "log f ~ U(log 0.3, log 1.3) each",
    "mirror": "half the episodes (p = 0.5) mirrored left-right, their turn commands (twist angular z) negated",
    "yaw": "the view turned about the camera's vertical axis by a heading error that kicks in at random times and "
    "decays as the corrected command removes it; turn commands (twist angular z) minus gain x error "
    "(training.yaw_recovery)",
}
MIRRORED_ACTION = 1  # twist actions are [linear x, angular z]: a mirrored world turns the other way
PHOTOMETRIC = ("brightness", "contrast", "gamma", "colour", "noise", "blur")  # `liquid-control train --augment`
_BLUR_RADIUS = 3  # pixels on each side of the kernel (covers 2.5 sigma of the largest blur)


class EpisodeAugmentation:
    """Per-episode augmentation parameters for a batch; ``apply`` maps uint8 (B, T, H, W, 3) -> uint8."""

    def __init__(
        self, kinds, batch: int, rng: np.random.Generator, yaw_recovery: dict | None = None, turn_limits=(-1.0, 1.0)
    ):
        unknown = sorted(set(kinds) - set(AUGMENTATIONS))
        if unknown:
            raise ValueError(f"unknown augmentation(s) {unknown}; choose from {', '.join(AUGMENTATIONS)}")
        self.kinds = set(kinds)
        # every kind is drawn, used or not, in a fixed order: enabling one kind leaves the others' draws unchanged
        brightness = rng.uniform(0.6, 1.4, size=batch)
        contrast = rng.uniform(0.6, 1.4, size=batch)
        gamma = np.exp(rng.uniform(math.log(0.6), math.log(1.6), size=batch))
        gain = rng.uniform(0.8, 1.2, size=(batch, 3))
        saturation = rng.uniform(0.5, 1.5, size=batch)
        noise = rng.uniform(0.0, 0.06, size=batch)
        blur = rng.uniform(0.0, 1.2, size=batch)
        shift = rng.integers(-3, 4, size=(batch, 2))
        use = self.kinds
        self.brightness = brightness if "brightness" in use else None
        self.contrast = contrast if "contrast" in use else None
        self.gamma = gamma if "gamma" in use else None
        self.gain = gain if "colour" in use else None
        self.saturation = saturation if "colour" in use else None
        self.noise = noise if "noise" in use else None
        self.blur = blur if "blur" in use else None
        self.shift = shift if "shift" in use else None
        self.generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
        ramp = np.exp(rng.uniform(math.log(0.3), math.log(1.3), size=(batch, 2)))  # drawn last: older draws kept
        self.gradient = ramp if "gradient" in use else None
        # drawn last, and only when used: a config without it consumes exactly the draws it did before
        self.mirror = rng.random(size=batch) < 0.5 if "mirror" in use else None
        self._mirrored = torch.as_tensor(self.mirror) if self.mirror is not None and self.mirror.any() else None
        self.yaw = None
        if "yaw" in use:  # drawn after mirror, only when used (older configs keep their draws)
            if yaw_recovery is None:
                raise ValueError("the 'yaw' augmentation needs its yaw_recovery parameters (gain, hfov_deg, ...)")
            self.yaw = YawRecovery(yaw_recovery, batch, np.random.default_rng(int(rng.integers(2**63))), turn_limits)

    def chunk(self, images: torch.Tensor, image_index: torch.Tensor, labels: torch.Tensor, dt: torch.Tensor):
        """Augment one chunk of the batch's episodes, in order: frames (B, F, H, W, 3) uint8 used by the updates
        through ``image_index`` (B, T), labels (B, T, action size), dt (B, T; 0 on padding). Returns (frames,
        labels). ``yaw`` advances its heading errors over the chunk's dt (chunks must come in episode order)."""
        frame_yaw = update_yaw = None
        if self.yaw is not None:
            update_yaw = self.yaw.advance(dt.numpy())
            frame_yaw = self.yaw.per_frame(update_yaw, image_index.numpy(), images.shape[1])
        return self.apply(images, frame_yaw), self.labels(labels, update_yaw)

    def apply(self, images: torch.Tensor, frame_yaw: np.ndarray | None = None) -> torch.Tensor:
        """Augment uint8 frames (B, T, H, W, 3) of the batch's B episodes; returns uint8 of the same shape.
        ``frame_yaw`` (B, T; radians, ``yaw`` only): each frame's heading error (see ``chunk``)."""
        if not self.kinds:
            return images
        if self.yaw is not None and frame_yaw is None:
            raise ValueError("the 'yaw' augmentation turns each frame by its heading error: use chunk(), not apply()")
        if images.dim() != 5 or images.shape[-1] != 3:
            raise ValueError(f"augmentation expects uint8 frames (B, T, H, W, 3), got {tuple(images.shape)}")
        b, t, h, w, _ = images.shape
        per_episode = lambda v: torch.as_tensor(v, dtype=torch.float32).view(-1, 1, 1, 1, 1)  # noqa: E731
        # x is indexed (B, T, H, W, C) throughout. Its memory layout is kept as it always was: the policy's camera
        # encoder reads frames in that layout, and its sums (input normalisation, convolutions) round differently
        # in another one: pixels (B, T, H, W, C) up to the blur, colour planes (B, T, C, H, W) after it.
        if self.gain is not None or self.brightness is not None or self.contrast is not None:
            # colour gain, saturation, brightness and contrast are one affine map per episode and frame:
            # y = M_b x + o_bt, applied in a single pass (and the 1/255 scaling folded in)
            matrix = torch.eye(3).repeat(b, 1, 1) / 255.0
            if self.gain is not None:
                s = torch.as_tensor(self.saturation, dtype=torch.float32).view(-1, 1, 1)
                mix = s * torch.eye(3) + (1.0 - s) / 3.0  # grey + s (y - grey), grey = channel mean
                matrix = mix @ (torch.diag_embed(torch.as_tensor(self.gain, dtype=torch.float32)) @ matrix)
            if self.brightness is not None:
                matrix = matrix * torch.as_tensor(self.brightness, dtype=torch.float32).view(-1, 1, 1)
            # on colour planes the map is one matrix product per frame, ~3x faster than on the pixels' 3-vectors
            # (a product with 3 terms per output; the same sums, in the same order)
            planes = torch.empty((b, t, 3, h, w))
            planes.copy_(images.permute(0, 1, 4, 2, 3))
            offset = None
            if self.contrast is not None:
                c = torch.as_tensor(self.contrast, dtype=torch.float32).view(-1, 1, 1)
                # integer pixel values: their sums are exact in any order (up to 65,793 pixels a frame)
                frame_mean = torch.einsum("btc,bdc->btd", planes.mean(dim=(3, 4)), matrix).mean(dim=2)  # (B, T)
                offset = ((1.0 - c[:, :, 0]) * frame_mean)[:, :, None, None, None]
                matrix = matrix * c
            x = torch.matmul(matrix.view(b, 1, 3, 3), planes.view(b, t, 3, h * w)).view(b, t, 3, h, w)
            x = x.permute(0, 1, 3, 4, 2)
            if offset is not None:
                x += offset
            if self.blur is None:  # back to pixels (the blur reads colour planes)
                x = x.contiguous()
        else:
            x = images.to(torch.float32)
            x /= 255.0
        if self.gradient is not None:  # light that falls off (or grows) from the top of the frame to the bottom
            top, bottom = (torch.as_tensor(self.gradient[:, i], dtype=torch.float32).view(-1, 1) for i in (0, 1))
            rows = top + (bottom - top) * torch.linspace(0.0, 1.0, h).view(1, -1)  # (B, H)
            x *= rows.view(b, 1, h, 1, 1)
        if self.gamma is not None:
            x = x.clamp_(0.0, 1.0).pow_(per_episode(self.gamma))
        if self.blur is not None:
            x = _gaussian_blur(x, self.blur)
        if self.noise is not None:
            x += torch.randn(x.shape, generator=self.generator).mul_(per_episode(self.noise))
        if self._mirrored is not None:
            x[self._mirrored] = x[self._mirrored].flip(3)  # (B, T, H, W, C): W is dim 3
        if self.shift is not None:
            x = torch.stack(
                [torch.roll(x[i], shifts=(int(dy), int(dx)), dims=(1, 2)) for i, (dy, dx) in enumerate(self.shift)]
            )
        if self.yaw is not None:
            x = turn_view(x, frame_yaw, self.yaw.hfov, self.yaw.pitch)
        return x.clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8)

    def labels(self, labels: torch.Tensor, update_yaw: np.ndarray | None = None) -> torch.Tensor:
        """The action labels (B, T, action size) of the batch's episodes as augmented: a mirrored episode's turn
        command negated (``mirror``), then corrected for the heading error ``update_yaw`` (B, T; ``yaw``);
        unchanged otherwise."""
        if self.yaw is not None and update_yaw is None:
            raise ValueError("the 'yaw' augmentation corrects each label by its heading error: use chunk()")
        if self._mirrored is None and self.yaw is None:
            return labels
        labels = labels.clone()
        if self._mirrored is not None:
            labels[self._mirrored, :, MIRRORED_ACTION] = -labels[self._mirrored, :, MIRRORED_ACTION]
        if self.yaw is not None:
            labels[:, :, MIRRORED_ACTION] = self.yaw.corrected(labels[:, :, MIRRORED_ACTION], update_yaw)
        return labels


class YawRecovery:
    """Synthetic recovery demonstrations: the view turned away from the recorded heading, the label turning back.

    Behaviour cloning on clean demonstrations never sees the robot off the expert's course, so its own small
    errors compound (DAgger's argument). PilotNet (Bojarski et al. 2016) taught recovery from one camera by
    turning and shifting the recorded view and correcting the steering label; this is the turn, over time: each
    episode's heading error e(t) gets kicks drawn uniformly in +-max_deg at Poisson times (rate_hz) and decays as
    exp(-t / decay_s), the way a robot that obeys the corrected command turns back (decay_s = 1 / (gain x turn
    rate per action unit); the rover: 1 / (1.667 x 1.5 rad/s) = 0.4 s). A frame is the recorded one seen by a
    camera turned left by e (``turn_view``); its label's turn command is the recorded one minus gain x e
    (clipped to the action bounds), the expert's proportional steering towards the heading it chose.
    The turn is about the world's vertical axis for a camera pitched down by ``pitch_deg`` (the rover's: 11.3
    deg; 0 turns about the camera's own vertical axis, which tilts the horizon of a pitched camera).
    Approximations, stated: the camera turns on the spot (the rover's sits 0.21 m ahead of its turning axis: a
    little parallax is missing), and the revealed edge of the frame repeats its border pixels.
    """

    def __init__(self, params: dict, batch: int, rng: np.random.Generator, turn_limits=(-1.0, 1.0)):
        params = yaw_recovery_params(params)  # checked, defaults from the config schema
        self.gain = float(params["gain"])
        self.hfov = math.radians(params["hfov_deg"])
        self.pitch = math.radians(params["pitch_deg"])
        self.max = math.radians(params["max_deg"])
        self.rate = float(params["rate_hz"])
        self.decay_s = float(params["decay_s"])
        self.turn_limits = (float(turn_limits[0]), float(turn_limits[1]))
        self.rng = rng
        self.error = np.zeros(batch)  # radians; > 0: the camera turned left of the recorded heading

    def advance(self, dt: np.ndarray) -> np.ndarray:
        """The heading error (B, T) after each update of a chunk whose update intervals are ``dt`` (0: padding,
        nothing happens)."""
        dt = np.asarray(dt, np.float64)
        kick = self.rng.random(dt.shape) < -np.expm1(-self.rate * dt)
        size = self.rng.uniform(-self.max, self.max, size=dt.shape)
        decay = np.exp(-dt / self.decay_s)
        out = np.empty(dt.shape)
        for t in range(dt.shape[1]):
            self.error = np.clip(self.error * decay[:, t] + np.where(kick[:, t], size[:, t], 0.0), -self.max, self.max)
            out[:, t] = self.error
        return out

    @staticmethod
    def per_frame(update_yaw: np.ndarray, image_index: np.ndarray, frames: int) -> np.ndarray:
        """Each frame's heading error (B, F): the error at the first update of the chunk that uses it."""
        out = np.zeros((update_yaw.shape[0], frames))
        rows = np.arange(update_yaw.shape[0])
        for t in reversed(range(update_yaw.shape[1])):  # the first update that uses a frame writes last
            out[rows, image_index[:, t]] = update_yaw[:, t]
        return out

    def corrected(self, turn: torch.Tensor, update_yaw: np.ndarray) -> torch.Tensor:
        """Turn commands (B, T) as the expert would give them turned by ``update_yaw``: minus gain x error."""
        error = torch.as_tensor(update_yaw, dtype=turn.dtype)
        return (turn - self.gain * error).clamp(*self.turn_limits)


def turn_view(x: torch.Tensor, yaw, hfov: float, pitch: float = 0.0) -> torch.Tensor:
    """Frames (B, F, H, W, C) float as a pinhole camera of horizontal field of view ``hfov`` (radians), pitched
    down by ``pitch`` (radians), sees them turned left by ``yaw`` (B, F; radians) about the world's vertical
    axis (a robot turning on the spot; with pitch 0 the camera's own vertical axis): the exact homography
    K R K^-1, sampled bilinearly; the revealed edge repeats the border. Frames with no turn are returned as
    they were."""
    yaw = torch.as_tensor(np.asarray(yaw), dtype=torch.float64)
    b, f, h, w, c = x.shape
    turned = yaw.reshape(-1) != 0
    if not bool(turned.any()):
        return x
    focal = (w / 2) / math.tan(hfov / 2)
    u = (torch.arange(w, dtype=torch.float64) + 0.5 - w / 2).view(1, 1, w)  # output pixel centres, from the middle
    v = (torch.arange(h, dtype=torch.float64) + 0.5 - h / 2).view(1, h, 1)
    angle = yaw.reshape(-1)[turned].view(-1, 1, 1)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # the output ray d = (u, v, focal) of the turned camera in the recorded camera's frame (x right, y down, z
    # ahead): rotated by the turn about the world's up axis a, in camera coordinates (0, -cos pitch, -sin pitch)
    # (Rodrigues: d cos + (a x d) sin + a (a . d)(1 - cos))
    ay, az = -math.cos(pitch), -math.sin(pitch)
    a_dot_d = ay * v + az * focal  # (1, H, 1)
    # a x d = (a_y d_z - a_z d_y, a_z d_x, -a_y d_x) with a_x = 0
    right = u * cos + (ay * focal - az * v) * sin
    down = v * cos + az * u * sin + ay * a_dot_d * (1 - cos)
    along = focal * cos - ay * u * sin + az * a_dot_d * (1 - cos)
    # a ray at or behind the recorded image plane (at pitch 0: |yaw| + hfov / 2 >= 90 deg) is outside the recorded
    # view on its own side: a tiny positive depth sends it to that side's border (a negative one mirrored it)
    along = along.clamp_min(1e-6 * focal)
    src_u = focal * right / along  # (N, H, W)
    src_v = focal * down / along
    grid = torch.stack([(src_u / (w / 2)).expand(-1, h, w), (src_v / (h / 2)).expand(-1, h, w)], dim=-1).to(x.dtype)
    frames = x.reshape(b * f, h, w, c)[turned].permute(0, 3, 1, 2)
    sampled = torch.nn.functional.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=False)
    out = x.reshape(b * f, h, w, c).clone()
    out[turned] = sampled.permute(0, 2, 3, 1)
    return out.view(b, f, h, w, c)


def _gaussian_blur(x: torch.Tensor, sigmas: np.ndarray) -> torch.Tensor:
    """Separable Gaussian blur of (B, T, H, W, C) frames, one sigma per episode (sigma ~0: unchanged), edges
    repeated. Reads and returns colour planes (B, T, C, H, W) in memory (read without a copy when x has them)."""
    b, t, h, w, c = x.shape
    offsets = torch.arange(-_BLUR_RADIUS, _BLUR_RADIUS + 1, dtype=x.dtype)
    sig = torch.as_tensor(sigmas, dtype=x.dtype).clamp_min(1e-3).view(-1, 1)
    kernel = torch.exp(-0.5 * (offsets / sig) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # (B, K)
    # one depthwise 1-d convolution per axis; channels = B * T * C (each episode its own kernel)
    planes = x.permute(0, 1, 4, 2, 3).reshape(1, b * t * c, h, w)
    weights = kernel.repeat_interleave(t * c, dim=0)  # (B*T*C, K)
    pad = _BLUR_RADIUS
    planes = torch.nn.functional.pad(planes, (pad, pad, pad, pad), mode="replicate")
    planes = torch.nn.functional.conv2d(planes, weights.view(-1, 1, 1, 2 * pad + 1), groups=b * t * c)
    planes = torch.nn.functional.conv2d(planes, weights.view(-1, 1, 2 * pad + 1, 1), groups=b * t * c)
    return planes.reshape(b, t, c, h, w).permute(0, 1, 3, 4, 2)


class EpisodeTiming:
    """The sensor timing of one training episode: rate and jitter factors drawn from the config's ranges.

    ``apply(world)`` sets the world's sensor timings (read at every reset) to the nominal ones scaled by the
    draw; ``restore(world)`` puts the nominal ones back (selection episodes run at nominal timing).
    """

    def __init__(self, rate_range, jitter_range, rng: np.random.Generator):
        self.rate = 1.0
        self.jitter = 1.0
        if rate_range is not None:
            lo, hi = (math.log(float(v)) for v in rate_range)
            self.rate = float(math.exp(rng.uniform(lo, hi)))
        if jitter_range is not None:
            self.jitter = float(rng.uniform(float(jitter_range[0]), float(jitter_range[1])))

    @property
    def nominal(self) -> bool:
        """Whether the draw leaves the timing nominal (both factors 1)."""
        return self.rate == 1.0 and self.jitter == 1.0

    def apply(self, world, nominal_timings: dict) -> None:
        """Set the world's sensor timings to ``nominal_timings`` scaled by this draw (used from its next reset)."""
        world.timings = {name: t.scaled(rate=self.rate, jitter=self.jitter) for name, t in nominal_timings.items()}

    @staticmethod
    def restore(world, nominal_timings: dict) -> None:
        """Put the nominal timings back on the world."""
        world.timings = dict(nominal_timings)


class EpisodeSun:
    """The sun of one training episode: a direction whose elevation is drawn uniformly from the config's range
    (degrees above the horizon) and whose azimuth is any; the light's colour and strength, the ambient light and
    the sky stay the world's. Lighting domain randomisation in the renderer, not in image space: a sun from the
    side lights the sides of trunks and target that face it, which no image transform produces.

    ``apply(world)`` sets the direction of the world's light named ``sun`` (used from its next reset, which
    recomputes the light's pose); ``restore(world, direction)`` puts the world's own back.
    """

    LIGHT = "sun"

    def __init__(self, elevation_range, rng: np.random.Generator):
        lo, hi = (math.radians(float(v)) for v in elevation_range)
        self.elevation = float(rng.uniform(lo, hi))
        self.azimuth = float(rng.uniform(0.0, 2.0 * math.pi))

    @property
    def direction(self) -> np.ndarray:
        """Where the light travels (MuJoCo's ``light_dir``): from the sun down towards the ground."""
        c = math.cos(self.elevation)
        return -np.array([c * math.cos(self.azimuth), c * math.sin(self.azimuth), math.sin(self.elevation)])

    @classmethod
    def light_id(cls, world) -> int:
        """The index of the world's light named ``sun``; ValueError naming the option where there is none."""
        import mujoco

        index = mujoco.mj_name2id(world.model, mujoco.mjtObj.mjOBJ_LIGHT, cls.LIGHT)
        if index < 0:
            raise ValueError(f"training.sun_elevation_range: the world has no light named {cls.LIGHT!r} to move")
        return index

    def apply(self, world) -> np.ndarray:
        """Point the world's sun this episode's way; returns the world's own direction (for ``restore``)."""
        index = self.light_id(world)
        own = world.model.light_dir[index].copy()
        world.model.light_dir[index] = self.direction
        return own

    @classmethod
    def restore(cls, world, direction: np.ndarray) -> None:
        """Put the world's own sun direction back."""
        world.model.light_dir[cls.light_id(world)] = direction


def describe_recipes(training: dict, camera: dict | None = None, from_bags: bool = False) -> list[str]:
    """What a training config's robustness recipes did, one line each (model cards and reports print this);
    ``camera``: its ``encoder.camera`` (a key left out is its default); ``from_bags``: a run on recorded bags,
    whose frames no world rendered."""
    camera = camera or {}
    camera_normalize = camera.get("normalize", "none")
    lines = []
    kinds = list(training.get("augmentation") or [])
    for kind in kinds:
        lines.append(f"augmentation `{kind}`: {AUGMENTATION_RANGES[kind]}")
        if kind == "yaw" and training.get("yaw_recovery"):
            p = training["yaw_recovery"]
            lines[-1] += (
                f": gain {p['gain']:g} per rad, camera {p['hfov_deg']:g} deg wide, kicks U(-{p['max_deg']:g}, "
                f"{p['max_deg']:g}) deg at {p['rate_hz']:g}/s, decaying in {p['decay_s']:g} s, camera pitched "
                f"{p['pitch_deg']:g} deg"
            )
    if camera_normalize != "none":
        what = {
            "frame": "per frame",
            "instance": "per colour channel of each frame (instance norm)",
            "chromaticity": "each pixel's log-chromaticity (brightness removed), then per colour channel",
            "chromaticity_brightness": "two log-chromaticity channels and the log brightness, each per frame",
            "retinex": "each pixel's log colour minus its surround's (Gaussian, sigma 4 px), then per colour channel",
        }[camera_normalize]
        lines.append(f"camera input normalisation `{camera_normalize}`: standardised {what}")
    layers = camera.get("instance_norm_layers", 0)
    if layers:
        first = "the first convolution's" if layers == 1 else f"the first {layers} convolutions'"
        lines.append(
            f"camera feature normalisation: instance norm with a learnt scale and shift on {first} feature maps"
        )
    if training.get("sensor_rate_range") is not None:
        lo, hi = training["sensor_rate_range"]
        lines.append(f"timing: sensor rate x [{lo:g}, {hi:g}] (log-uniform per training episode)")
    if training.get("jitter_range") is not None:
        lo, hi = training["jitter_range"]
        lines.append(f"timing: sensor jitter x [{lo:g}, {hi:g}] (uniform per training episode)")
    if training.get("sun_elevation_range") is not None:
        lo, hi = training["sun_elevation_range"]
        lines.append(
            f"lighting: the sun's elevation U({lo:g}, {hi:g}) deg, any azimuth, per training episode (its colour, "
            f"strength, the ambient light and the sky the training world's)"
        )
    if from_bags:
        lines.append("inputs: the recorded bags' (no world simulated or rendered)")
        return lines
    world = training.get("shift") or "the training distribution (summer, noon, clear, nominal sensors)"
    lines.append(f"rendered worlds: {world} only")
    return lines
