"""Optional image augmentation for behaviour cloning (off by default: the headline OOD comparison must
measure the architectures, not the augmentation).

Parameters are drawn once per episode of a batch and kept for all of its chunks, so an augmented episode is
a consistent "other world" rather than per-frame flicker.
"""

from __future__ import annotations

import numpy as np
import torch

from liquid_control.policy.config import AUGMENTATIONS


class EpisodeAugmentation:
    """Per-episode augmentation parameters for a batch; ``apply`` maps uint8 (B, T, H, W, 3) -> uint8."""

    def __init__(self, kinds, batch: int, rng: np.random.Generator):
        unknown = sorted(set(kinds) - set(AUGMENTATIONS))
        if unknown:
            raise ValueError(f"unknown augmentation(s) {unknown}; choose from {', '.join(AUGMENTATIONS)}")
        self.kinds = set(kinds)
        self.brightness = rng.uniform(0.7, 1.3, size=batch) if "brightness" in self.kinds else None
        self.contrast = rng.uniform(0.7, 1.3, size=batch) if "contrast" in self.kinds else None
        self.noise = rng.uniform(0.0, 0.05, size=batch) if "noise" in self.kinds else None
        self.shift = rng.integers(-3, 4, size=(batch, 2)) if "shift" in self.kinds else None
        self.generator = torch.Generator().manual_seed(int(rng.integers(2**31)))

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        if not self.kinds:
            return images
        x = images.to(torch.float32) / 255.0
        view = (-1, 1, 1, 1, 1)
        if self.contrast is not None:
            mean = x.mean(dim=(1, 2, 3, 4), keepdim=True)
            x = (x - mean) * torch.as_tensor(self.contrast, dtype=x.dtype).view(view) + mean
        if self.brightness is not None:
            x = x * torch.as_tensor(self.brightness, dtype=x.dtype).view(view)
        if self.noise is not None:
            x = x + torch.randn(x.shape, generator=self.generator) * torch.as_tensor(self.noise, dtype=x.dtype).view(
                view
            )
        if self.shift is not None:
            x = torch.stack(
                [torch.roll(x[b], shifts=(int(dy), int(dx)), dims=(1, 2)) for b, (dy, dx) in enumerate(self.shift)]
            )
        return (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
