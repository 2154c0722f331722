"""Sensor encoders: a small CNN for the camera and a small MLP for vector sensors (IMU, encoders, commands).

Both are deliberately tiny: the policy runs on a CPU at camera rate, and training must fit in minutes on two
cores. Their outputs are tanh-bounded so every recurrent core sees inputs of the same scale.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import CAMERA_NORMALIZATIONS, LOG_NORMALIZATIONS, conv_sizes

_FEATURE_NORM_EPS = 1e-3  # on He-initialised feature maps of spread ~1
_NORMALIZE_EPS = 1e-2  # on [0, 1] pixel values: a flat frame (all one colour) maps to zeros, not to noise
_LOG_EPS = 2e-2  # chromaticity, retinex: log(x + eps) on [0, 1] pixels: a black pixel is finite, dark noise small
_RETINEX_SIGMA = 4.0  # retinex: the surround's Gaussian width in pixels (a 64x64 frame's trunks are 3-10 pixels wide)


def _log_table() -> torch.Tensor:
    """log(v / 255 + ``_LOG_EPS``) of every uint8 value v, computed in float64 and rounded once to the default dtype
    (a module's later ``.double()`` widens those values): a frame's logs are looked up, so torch and an exported
    graph read the same numbers (with float32 ``log`` on each pixel torch and onnxruntime rounded differently, which
    the per-channel standardisation of a faint frame stretched to 1.1-1.9e-5 in the action, past the export's 1e-5
    parity check; ``backends.GRAPH_CHANGES`` revision 3)."""
    return torch.log(torch.arange(256, dtype=torch.float64) / 255.0 + _LOG_EPS).to(torch.get_default_dtype())


def _mean_over(x: torch.Tensor, dims) -> torch.Tensor:
    """Mean of ``x`` over ``dims``, one dimension at a time (kept, size 1): equal counts, so the same mean."""
    for dim in dims:
        x = x.mean(dim=dim, keepdim=True)
    return x


def _channels_last(x: torch.Tensor) -> bool:
    """Whether images ``x`` (N, C, H, W) lie in memory as (N, H, W, C), as the camera's frames come, in eager mode
    (a traced graph has no memory layout: it records the plain broadcasting ops)."""
    return x.is_contiguous(memory_format=torch.channels_last) and not torch.jit.is_tracing()


def _needs_grad(*tensors: torch.Tensor) -> bool:
    """Whether autograd records an op on ``tensors`` (a gradient to the image itself, e.g. for attribution): then
    the plain ops, whose backward is the one it always had; training's images need none."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _per_channel(op, x: torch.Tensor, stat: torch.Tensor) -> torch.Tensor:
    """``op(x, stat)`` (sub or div) of images ``x`` (N, C, H, W) and a statistic ``stat`` per image, (N, C, 1, 1)
    or (N, 1, 1, 1): the same values in the same memory layout, computed faster.

    On channels-last images torch broadcasts a per-channel ``stat`` in an inner loop of C = 3 elements; the same
    op on rows of W * C values against ``stat`` repeated along a row is cheaper from two frames on (64x64, 4 frames:
    42 -> 17 us; one frame: 11.6 vs 12.0 us), and every element is the same IEEE operation on the same two numbers,
    so the result is bit for bit the same."""
    n, c, h, w = x.shape
    if n == 1 or c == 1 or stat.shape != (n, c, 1, 1) or not _channels_last(x) or _needs_grad(x, stat):
        return op(x, stat)  # one frame: no faster; a gradient to the image: the broadcast's own backward
    rows = x.permute(0, 2, 3, 1).view(n, h, w * c)
    repeated = stat.reshape(n, 1, 1, c).expand(n, 1, w, c).reshape(n, 1, w * c)  # the channels' values, pixel by pixel
    return op(rows, repeated).view(n, h, w, c).permute(0, 3, 1, 2)


def _blur_matrix(size: int, sigma: float) -> torch.Tensor:
    """(size, size) matrix of a 1-D Gaussian blur over +-3 sigma with the edge pixels repeated beyond the border:
    ``M @ column`` blurs a column; the 2-D blur of an image is ``M_rows @ image @ M_cols.T`` (two small matmuls,
    ~30x cheaper on a CPU than the 25-tap depthwise convolutions it equals)."""
    radius = int(round(3 * sigma))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float64) / sigma) ** 2)
    taps /= taps.sum()
    matrix = torch.zeros(size, size, dtype=torch.float64)
    for i in range(size):
        for offset, weight in zip(range(-radius, radius + 1), taps):
            matrix[i, min(max(i + offset, 0), size - 1)] += weight
    return matrix


class CameraEncoder(nn.Module):
    """uint8 images (N, H, W, 3) -> features (N, F): strided ReLU convolutions, flatten, linear, LayerNorm, tanh.

    Flattening (instead of global pooling) keeps *where* things are in the image, which a visual
    navigation policy needs (target left or right of the heading); the unpadded convolutions leave the last rows
    and columns unseen where a stride does not fit (``config.unseen_margins``: 7 of 64 with kernels 5/3/3 at stride
    2; training warns of it). The convolutions get He initialisation
    and the projection a LayerNorm: with PyTorch's default initialisation three layers shrink the image
    signal so much that the recurrent core sees near-constant features and behaviour cloning stalls at the
    mean action (measured: loss stuck at the constant predictor's for 30 epochs).

    ``normalize`` (a robustness recipe, docs/training.md) standardises each input image before the
    convolutions: ``none`` only scales to [0, 1] and centres; ``frame`` subtracts the frame's mean and divides
    by its standard deviation (all pixels and channels: removes global brightness and contrast); ``instance``
    does so per colour channel (instance norm: also removes a global colour cast, e.g. an orange sky);
    ``chromaticity`` keeps each pixel's log-chromaticity (its log RGB minus their mean: the colour without the
    brightness, so shading and the light's strength fall out pixel by pixel, not only over the frame), then
    standardises it per channel as ``instance`` does (the light's colour falls out too); it also loses what only
    brightness shows (dark tree trunks against dark ground). ``chromaticity_brightness`` keeps that: two
    log-chromaticity channels and the log brightness, each channel standardised over the frame as ``instance``.
    ``retinex`` (single-scale retinex, Jobson et al. 1997) keeps each pixel's log colour relative to its surround
    (log RGB minus its Gaussian blur, sigma 4 pixels, edges replicated), then per channel as ``instance``: light
    that varies slowly over the frame (a dark ground, a bright sky) falls out, edges between things stay.

    ``instance_norm_layers`` (a recipe) puts instance normalisation with a learnt scale and shift between the
    first N convolutions and their ReLUs, as IBN-Net (Pan et al. 2018) does in a CNN's shallow layers: each
    feature map is standardised over the frame, so how strongly the light brings out edges and textures falls
    out there, while the deeper layers keep what the maps show.
    """

    def __init__(
        self,
        height: int,
        width: int,
        channels,
        kernel_sizes,
        strides,
        features: int,
        normalize="none",
        instance_norm_layers: int = 0,
    ):
        super().__init__()
        if normalize not in CAMERA_NORMALIZATIONS:
            raise ValueError(f"camera encoder: normalize must be one of {CAMERA_NORMALIZATIONS}, got {normalize!r}")
        self.normalize = normalize
        h, w = conv_sizes(height, width, kernel_sizes, strides)[-1]
        if min(h, w) < 1:  # configs are checked at load (validate_config); this is for direct use
            raise ValueError(
                f"camera encoder: a {width}x{height} image (width x height) is too small for these convolutions"
            )
        if not 0 <= instance_norm_layers <= len(channels):
            raise ValueError(
                f"camera encoder: instance_norm_layers must be 0..{len(channels)} (the convolutions), "
                f"got {instance_norm_layers}"
            )
        layers, c_in = [], 3
        for layer, (c_out, k, s) in enumerate(zip(channels, kernel_sizes, strides)):
            layers.append(nn.Conv2d(c_in, c_out, k, stride=s))
            if layer < instance_norm_layers:  # eps: a near-flat map (a wall, fog) is not blown up to unit spread
                layers.append(nn.InstanceNorm2d(c_out, eps=_FEATURE_NORM_EPS, affine=True))
            layers.append(nn.ReLU())
            c_in = c_out
        self.height, self.width = height, width
        self.conv = nn.Sequential(*layers)
        for layer in layers:
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                nn.init.zeros_(layer.bias)
        self.project = nn.Linear(c_in * h * w, features)
        self.norm = nn.LayerNorm(features)
        self.output_size = features
        if normalize in LOG_NORMALIZATIONS:  # buffers, so they follow .double()/.to() and are constants of the graph
            self.register_buffer("log_table", _log_table(), persistent=False)
        if normalize == "retinex":
            dtype = torch.get_default_dtype()  # the weights': built under float64 they met float32 matrices
            self.register_buffer("surround_rows", _blur_matrix(height, _RETINEX_SIGMA).to(dtype), persistent=False)
            self.register_buffer("surround_cols", _blur_matrix(width, _RETINEX_SIGMA).T.to(dtype), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Features (N, F) of uint8 images (N, H, W, 3); ValueError for any other shape."""
        if image.dim() != 4 or tuple(image.shape[1:]) != (self.height, self.width, 3):
            raise ValueError(
                f"camera encoder: expected images (N, {self.height}, {self.width}, 3) (batch, height, width, "
                f"channels), got {tuple(image.shape)}"
            )
        return torch.tanh(self.norm(self.project(self.conv(self.scale(image)).flatten(1))))

    def scale(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> float (N, 3, H, W) as the convolutions see it (after ``normalize``), channels-last
        in memory as the frames come (``_per_channel``: the convolutions' arithmetic depends on the layout)."""
        if self.normalize in ("chromaticity", "chromaticity_brightness"):
            log = self.pixel_log(image)
            brightness = log.mean(dim=1, keepdim=True)
            x = log - brightness
            if self.normalize == "chromaticity_brightness":  # the three sum to 0: two carry the colour
                x = torch.cat((x[:, :2], brightness), dim=1)
        elif self.normalize == "retinex":
            log = self.pixel_log(image)
            # blur(log - c) = blur(log) - c: small terms, small rounding (as below)
            log = _per_channel(torch.sub, log, log[:, :, :1, :1])
            x = log - self._blur(log)
        else:
            x = self._unit(image)
            if self.normalize == "none":
                return x - 0.5  # [0, 1], centred
        dims = (3, 2, 1) if self.normalize == "frame" else (3, 2)
        # The same normalisation as (x - mean) / std over dims, computed so that float32 rounding stays small on a
        # low-contrast frame (fog, dusk, a wall), where the small std magnifies it: the statistics of the image
        # less one of its own pixels, and means taken one dimension at a time (64 terms, not 4,096, per sum).
        # onnxruntime's ReduceMean sums naively: with one mean over the whole frame the exported model's action
        # was 1.6e-3 off torch on a flat frame (the export's parity tolerance is 1e-5).
        x = _per_channel(torch.sub, x, x[:, :1, :1, :1] if self.normalize == "frame" else x[:, :, :1, :1])
        centred = _per_channel(torch.sub, x, _mean_over(x, dims))
        std = _mean_over(centred * centred, dims).add(_NORMALIZE_EPS**2).sqrt()
        return _per_channel(torch.div, centred, std)

    def pixel_log(self, image: torch.Tensor) -> torch.Tensor:
        """Each pixel's log(value / 255 + ``_LOG_EPS``), images (N, H, W, 3) -> (N, 3, H, W) channels-last: uint8
        frames (the camera's, training's) from the table (``_log_table``: a broadcast frame gives what its
        contiguous copy gives); float pixel values (0-255, e.g. an attribution's interpolated frames, which can
        carry a gradient) computed, up to 1e-6 from the table's."""
        if image.dtype == torch.uint8:
            return self.log_table[image.long()].permute(0, 3, 1, 2)
        return torch.log(self._unit(image) + _LOG_EPS)

    def _unit(self, image: torch.Tensor) -> torch.Tensor:
        """Images (N, H, W, 3) as (N, 3, H, W) values in [0, 1] in the weights' dtype, in the frames' memory layout."""
        return image.permute(0, 3, 1, 2).to(self.project.weight.dtype) / 255.0

    def _blur(self, x: torch.Tensor) -> torch.Tensor:
        """Gaussian blur of (N, C, H, W) per channel, edges repeated (same size out)."""
        return self.surround_rows @ x @ self.surround_cols


MIN_INPUT_STD = 1e-3
"""The floor of a vector input's stored spread: a constant input must not divide by zero."""


class VectorEncoder(nn.Module):
    """Concatenated vector sensors (N, D) -> features (N, F), normalised by stored input statistics.

    The statistics (``mean``, ``std``) are buffers set from the training data, so a checkpoint carries them
    and the IMU's gravity offset never reaches the core unscaled.
    """

    def __init__(self, input_size: int, hidden, features: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(input_size))
        self.register_buffer("std", torch.ones(input_size))
        layers, n = [], input_size
        for width in hidden:
            layers += [nn.Linear(n, width), nn.Tanh()]
            n = width
        layers += [nn.Linear(n, features), nn.Tanh()]
        self.mlp = nn.Sequential(*layers)
        self.input_size, self.output_size = input_size, features

    def set_normalization(self, mean, std, min_std: float = MIN_INPUT_STD) -> None:
        """Store the input statistics (``std`` floored at ``min_std``); ValueError unless they are finite."""
        mean = torch.as_tensor(mean, dtype=self.mean.dtype).reshape(self.input_size)
        std = torch.as_tensor(std, dtype=self.std.dtype).reshape(self.input_size)
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
            raise ValueError("vector encoder: normalisation statistics must be finite")
        self.mean.copy_(mean)
        self.std.copy_(std.clamp_min(min_std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features (N, F) of the normalised inputs."""
        return self.mlp((x.to(self.mean.dtype) - self.mean) / self.std)
