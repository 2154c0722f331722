"""Robustness recipes of behaviour cloning that act on the data: photometric augmentation and timing draws.

Both are config switches, off by default so that the headline OOD comparison measures the architectures:

- ``training.augmentation: [brightness, contrast, gamma, colour, noise, blur, shift, gradient, mirror]`` perturbs
  the camera frames of a batch *in image space*, after rendering (``mirror`` also negates the turn labels). The
  worlds only ever render the training distribution (summer, noon, clear air, nominal sensors): no dusk, night,
  autumn, winter or fog frame is rendered for training. Parameters are drawn once per episode of a batch and
  kept for all of its chunks (a consistent "other camera" rather than per-frame flicker); only pixel noise is
  drawn per frame. ``AUGMENTATION_RANGES`` is exactly what a policy trained with a kind saw (the report and the
  model cards print it).
- ``training.sensor_rate_range`` / ``training.jitter_range``: each training episode is collected with the
  sensor rate multiplied by a factor drawn log-uniformly from the range, and the jitter by one drawn uniformly
  (``EpisodeTiming``). The recorded dt are then those of the drawn timing, so the core learns from a spread
  of update intervals; the OOD evaluation tests rates outside the range.

Costs (measured, docs/training.md): augmentation adds elementwise work on each chunk of frames (blur a small
convolution), a few percent of an epoch; timing draws change how many updates an episode has (a 2x rate
doubles its frames and its share of the epoch).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from liquid_control.policy.config import AUGMENTATIONS

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
}
MIRRORED_ACTION = 1  # twist actions are [linear x, angular z]: a mirrored world turns the other way
PHOTOMETRIC = ("brightness", "contrast", "gamma", "colour", "noise", "blur")  # `liquid-control train --augment`
_BLUR_RADIUS = 3  # pixels on each side of the kernel (covers 2.5 sigma of the largest blur)


class EpisodeAugmentation:
    """Per-episode augmentation parameters for a batch; ``apply`` maps uint8 (B, T, H, W, 3) -> uint8."""

    def __init__(self, kinds, batch: int, rng: np.random.Generator):
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

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """Augment uint8 frames (B, T, H, W, 3) of the batch's B episodes; returns uint8 of the same shape."""
        if not self.kinds:
            return images
        if images.dim() != 5 or images.shape[-1] != 3:
            raise ValueError(f"augmentation expects uint8 frames (B, T, H, W, 3), got {tuple(images.shape)}")
        b = images.shape[0]
        per_episode = lambda v: torch.as_tensor(v, dtype=torch.float32).view(-1, 1, 1, 1, 1)  # noqa: E731
        x = images.to(torch.float32)
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
            offset = None
            if self.contrast is not None:
                c = torch.as_tensor(self.contrast, dtype=torch.float32).view(-1, 1, 1)
                frame_mean = torch.einsum("btc,bdc->btd", x.mean(dim=(2, 3)), matrix).mean(dim=2)  # (B, T)
                offset = ((1.0 - c[:, :, 0]) * frame_mean)[:, :, None, None, None]
                matrix = matrix * c
            x = torch.einsum("bthwc,bdc->bthwd", x, matrix)
            if offset is not None:
                x += offset
        else:
            x /= 255.0
        if self.gradient is not None:  # light that falls off (or grows) from the top of the frame to the bottom
            h = x.shape[2]
            top, bottom = (torch.as_tensor(self.gradient[:, i], dtype=torch.float32).view(-1, 1) for i in (0, 1))
            rows = top + (bottom - top) * torch.linspace(0.0, 1.0, h).view(1, -1)  # (B, H)
            x = x * rows.view(b, 1, h, 1, 1)
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
        return x.clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8)

    def labels(self, labels: torch.Tensor) -> torch.Tensor:
        """The action labels (B, T, action size) of the batch's episodes as augmented: a mirrored episode's turn
        command negated (``mirror``); unchanged otherwise."""
        if self._mirrored is None:
            return labels
        labels = labels.clone()
        labels[self._mirrored, :, MIRRORED_ACTION] = -labels[self._mirrored, :, MIRRORED_ACTION]
        return labels


def _gaussian_blur(x: torch.Tensor, sigmas: np.ndarray) -> torch.Tensor:
    """Separable Gaussian blur of (B, T, H, W, C) frames, one sigma per episode (sigma ~0: unchanged)."""
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


def describe_recipes(training: dict, camera_normalize: str = "none") -> list[str]:
    """What a training config's robustness recipes did, one line each (model cards and reports print this)."""
    lines = []
    kinds = list(training.get("augmentation") or [])
    for kind in kinds:
        lines.append(f"augmentation `{kind}`: {AUGMENTATION_RANGES[kind]}")
    if camera_normalize != "none":
        what = "per frame" if camera_normalize == "frame" else "per colour channel of each frame (instance norm)"
        lines.append(f"camera input normalisation `{camera_normalize}`: standardised {what}")
    if training.get("sensor_rate_range") is not None:
        lo, hi = training["sensor_rate_range"]
        lines.append(f"timing: sensor rate x [{lo:g}, {hi:g}] (log-uniform per training episode)")
    if training.get("jitter_range") is not None:
        lo, hi = training["jitter_range"]
        lines.append(f"timing: sensor jitter x [{lo:g}, {hi:g}] (uniform per training episode)")
    world = training.get("shift") or "the training distribution (summer, noon, clear, nominal sensors)"
    lines.append(f"rendered worlds: {world} only")
    return lines
