"""EpisodeAugmentation.apply against a copy of its first implementation: the same frames, pixel for pixel.

`apply` was rewritten for speed (issue 11: the colour map as one matrix product per frame on colour planes, the
blur reading those planes without a copy); the headline's recipe arm must learn from exactly the frames it learnt
from before. The reference below is the implementation as it was (commit 96c57f4), reading the same draws. The
output's memory layout is compared too: the camera encoder's sums (input normalisation, convolutions) round
differently in another layout, so a different layout would train on slightly different numbers.
"""

import numpy as np
import pytest
import torch

from liquid_control.training.augment import AUGMENTATION_RANGES, PHOTOMETRIC, EpisodeAugmentation, turn_view

YAW = {"gain": 1.5, "hfov_deg": 100.0, "max_deg": 15.0, "rate_hz": 1.0, "decay_s": 0.4}
_BLUR_RADIUS = 3


def reference_apply(aug: EpisodeAugmentation, images: torch.Tensor, frame_yaw=None) -> torch.Tensor:
    """The first implementation of ``EpisodeAugmentation.apply`` (``self`` is ``aug``), unchanged."""
    if not aug.kinds:
        return images
    b = images.shape[0]
    per_episode = lambda v: torch.as_tensor(v, dtype=torch.float32).view(-1, 1, 1, 1, 1)  # noqa: E731
    x = images.to(torch.float32)
    if aug.gain is not None or aug.brightness is not None or aug.contrast is not None:
        matrix = torch.eye(3).repeat(b, 1, 1) / 255.0
        if aug.gain is not None:
            s = torch.as_tensor(aug.saturation, dtype=torch.float32).view(-1, 1, 1)
            mix = s * torch.eye(3) + (1.0 - s) / 3.0
            matrix = mix @ (torch.diag_embed(torch.as_tensor(aug.gain, dtype=torch.float32)) @ matrix)
        if aug.brightness is not None:
            matrix = matrix * torch.as_tensor(aug.brightness, dtype=torch.float32).view(-1, 1, 1)
        offset = None
        if aug.contrast is not None:
            c = torch.as_tensor(aug.contrast, dtype=torch.float32).view(-1, 1, 1)
            frame_mean = torch.einsum("btc,bdc->btd", x.mean(dim=(2, 3)), matrix).mean(dim=2)
            offset = ((1.0 - c[:, :, 0]) * frame_mean)[:, :, None, None, None]
            matrix = matrix * c
        x = torch.einsum("bthwc,bdc->bthwd", x, matrix)
        if offset is not None:
            x += offset
    else:
        x /= 255.0
    if aug.gradient is not None:
        h = x.shape[2]
        top, bottom = (torch.as_tensor(aug.gradient[:, i], dtype=torch.float32).view(-1, 1) for i in (0, 1))
        rows = top + (bottom - top) * torch.linspace(0.0, 1.0, h).view(1, -1)
        x = x * rows.view(b, 1, h, 1, 1)
    if aug.gamma is not None:
        x = x.clamp_(0.0, 1.0).pow_(per_episode(aug.gamma))
    if aug.blur is not None:
        x = reference_blur(x, aug.blur)
    if aug.noise is not None:
        x += torch.randn(x.shape, generator=aug.generator).mul_(per_episode(aug.noise))
    if aug._mirrored is not None:
        x[aug._mirrored] = x[aug._mirrored].flip(3)
    if aug.shift is not None:
        x = torch.stack(
            [torch.roll(x[i], shifts=(int(dy), int(dx)), dims=(1, 2)) for i, (dy, dx) in enumerate(aug.shift)]
        )
    if aug.yaw is not None:
        x = turn_view(x, frame_yaw, aug.yaw.hfov, aug.yaw.pitch)
    return x.clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8)


def reference_blur(x: torch.Tensor, sigmas: np.ndarray) -> torch.Tensor:
    """The first implementation of ``_gaussian_blur``, unchanged."""
    b, t, h, w, c = x.shape
    offsets = torch.arange(-_BLUR_RADIUS, _BLUR_RADIUS + 1, dtype=x.dtype)
    sig = torch.as_tensor(sigmas, dtype=x.dtype).clamp_min(1e-3).view(-1, 1)
    kernel = torch.exp(-0.5 * (offsets / sig) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    planes = x.permute(0, 1, 4, 2, 3).reshape(1, b * t * c, h, w)
    weights = kernel.repeat_interleave(t * c, dim=0)
    pad = _BLUR_RADIUS
    planes = torch.nn.functional.pad(planes, (pad, pad, pad, pad), mode="replicate")
    planes = torch.nn.functional.conv2d(planes, weights.view(-1, 1, 1, 2 * pad + 1), groups=b * t * c)
    planes = torch.nn.functional.conv2d(planes, weights.view(-1, 1, 2 * pad + 1, 1), groups=b * t * c)
    return planes.reshape(b, t, c, h, w).permute(0, 1, 3, 4, 2)


ALL = list(AUGMENTATION_RANGES)
KIND_SETS = [
    ALL,
    list(PHOTOMETRIC),  # the headline's recipe arm (evaluation.experiment.RECIPES)
    *([kind] for kind in ALL),
    ["contrast", "blur"],
    ["gamma", "blur"],
    ["brightness", "gradient", "blur", "mirror"],
    ["colour", "blur", "shift"],
]
# (batch, frames, height, width): the cameras' 64 x 64, batch 1, one frame, non-square both ways
SHAPES = [(4, 6, 64, 64), (1, 1, 64, 64), (3, 5, 48, 64), (2, 4, 64, 40), (1, 3, 32, 24)]


def frames(shape, seed):
    """uint8 frames with the full range, a dark corner and a saturated one (clamping, gamma at 0 and 1)."""
    images = np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)
    images[:, :, :4, :4] = 0
    images[:, :, -4:, -4:] = 255
    return torch.from_numpy(images)


def both(kinds, images, seed):
    """(new, reference) frames of one batch: two augmentations from the same draws, through chunk()."""
    b, t = images.shape[:2]
    index = torch.arange(t).repeat(b, 1)
    dt = torch.full(index.shape, 0.5)  # 'yaw': a kick within the chunk is likely
    labels = torch.zeros(b, t, 2)
    new = EpisodeAugmentation(kinds, b, np.random.default_rng(seed), YAW).chunk(images, index, labels, dt)[0]
    ref = EpisodeAugmentation(kinds, b, np.random.default_rng(seed), YAW)
    frame_yaw = None
    if ref.yaw is not None:
        frame_yaw = ref.yaw.per_frame(ref.yaw.advance(dt.numpy()), index.numpy(), t)
    return new, reference_apply(ref, images, frame_yaw)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_apply_gives_the_first_implementations_frames_and_layout(shape):
    images = frames(shape, seed=sum(shape))
    for kinds in KIND_SETS:
        for seed in (0, 1):
            new, ref = both(kinds, images, seed)
            diff = int((new.int() - ref.int()).abs().max())
            assert new.dtype == torch.uint8 and new.shape == images.shape, kinds
            assert torch.equal(new, ref), f"{kinds}, seed {seed}: up to {diff} levels apart"
            assert new.stride() == ref.stride(), f"{kinds}, seed {seed}: layout {new.stride()} != {ref.stride()}"


def test_apply_on_odd_frame_sizes_is_the_first_implementation_to_float_rounding():
    """7 x 9 frames: gamma's pow rounds one last bit differently in a few values (its vectorised and scalar
    paths split the frames elsewhere once they are colour planes): at most one level apart, rarely."""
    images = frames((4, 2, 7, 9), seed=3)
    for kinds in (ALL, list(PHOTOMETRIC), ["gamma", "blur"], ["blur"]):
        for seed in range(3):
            new, ref = both(kinds, images, seed)
            apart = (new.int() - ref.int()).abs()
            assert int(apart.max()) <= 1 and float((apart > 0).float().mean()) <= 1e-2, kinds
            assert new.stride() == ref.stride(), kinds


def test_the_reference_is_not_trivially_equal():
    """The comparison has teeth: the augmentation changes the frames, and another draw gives other frames."""
    images = frames((2, 3, 64, 64), seed=0)
    new, ref = both(list(PHOTOMETRIC), images, seed=0)
    assert (new.float() - images.float()).abs().mean() > 2.0
    other, _ = both(list(PHOTOMETRIC), images, seed=1)
    assert not torch.equal(new, other) and torch.equal(new, ref)
