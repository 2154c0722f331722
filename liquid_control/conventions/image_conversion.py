"""sensor_msgs/Image <-> numpy without cv_bridge (not installable from the ROS wheels), same behaviour.

As cv_bridge: ``image_to_numpy(msg, desired_encoding='passthrough')`` honours the row padding (``step``) and
the ``is_bigendian`` flag, returns (H, W) for one channel and (H, W, C) otherwise, and converts colour
encodings the way cv_bridge's ``cvtColor`` calls do (channel reorder, alpha dropped or set to the maximum,
grey replicated into colour channels, colour to grey with OpenCV's weights, 8 <-> 16 bit scaled by
255/65535). ``numpy_to_image`` writes a tightly packed, host-endian message like ``cv2_to_imgmsg``.
"""

from __future__ import annotations

import sys

import numpy as np

from liquid_control.shown import shown

# encoding -> (channel order, numpy dtype)
ENCODINGS = {
    "rgb8": ("RGB", np.uint8),
    "bgr8": ("BGR", np.uint8),
    "rgba8": ("RGBA", np.uint8),
    "bgra8": ("BGRA", np.uint8),
    "mono8": ("L", np.uint8),
    "mono16": ("L", np.uint16),
}
HOST_BIGENDIAN = sys.byteorder == "big"
# one-channel encodings: converted to colour, their grey goes into all three channels
GREY_ENCODINGS = tuple(encoding for encoding, (channels, _) in ENCODINGS.items() if channels == "L")


class ImageConversionError(ValueError):
    """An Image message that cannot be converted: unsupported encoding or inconsistent sizes."""


def _layout(encoding: str):
    try:
        return ENCODINGS[encoding]
    except KeyError:
        raise ImageConversionError(
            f"unsupported image encoding {shown(encoding, 40)}; supported: {', '.join(ENCODINGS)}"
        ) from None


def image_to_numpy(msg, desired_encoding: str = "passthrough") -> np.ndarray:
    """Decode ``msg`` (sensor_msgs/Image) into a new array, converted to ``desired_encoding`` if given."""
    channels, dtype = _layout(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    itemsize = np.dtype(dtype).itemsize
    row_bytes = width * len(channels) * itemsize
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"image has an empty size {width}x{height} (width x height)")
    if step < row_bytes:
        raise ImageConversionError(
            f"image step {step} is smaller than a {msg.encoding} row of {width} pixels ({row_bytes} bytes)"
        )
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size != step * height:
        raise ImageConversionError(
            f"image data has {data.size} bytes, expected step*height = {step}*{height} = {step * height}"
        )
    rows = data.reshape(height, step)[:, :row_bytes]
    order = ">" if msg.is_bigendian else "<"
    pixels = np.ascontiguousarray(rows).view(np.dtype(dtype).newbyteorder(order))
    pixels = pixels.reshape(height, width, len(channels)).astype(dtype)  # native byte order, own copy
    if desired_encoding in ("passthrough", msg.encoding):
        return pixels[..., 0] if channels == "L" else pixels
    return _convert(pixels, msg.encoding, desired_encoding)


def _convert(pixels: np.ndarray, src: str, dst: str) -> np.ndarray:
    src_channels, src_dtype = _layout(src)
    dst_channels, dst_dtype = _layout(dst)
    if src_dtype != dst_dtype:  # depth first, as cv_bridge: scale between [0, 255] and [0, 65535]
        if dst_dtype == np.uint8:
            pixels = np.clip(np.rint(pixels.astype(np.float64) * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
        else:
            pixels = pixels.astype(np.uint16) * np.uint16(257)
    top = np.iinfo(dst_dtype).max
    if src_channels == "L":
        gray = pixels[..., 0]
        if dst_channels == "L":
            return gray
        planes = {"R": gray, "G": gray, "B": gray, "A": np.full_like(gray, top)}
    else:
        planes = {c: pixels[..., i] for i, c in enumerate(src_channels)}
        if dst_channels == "L":
            import cv2  # OpenCV's fixed-point grey weights, exactly what cv_bridge calls

            rgb = np.ascontiguousarray(np.stack([planes["R"], planes["G"], planes["B"]], axis=-1))
            return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        planes.setdefault("A", np.full_like(planes["R"], top))
    return np.ascontiguousarray(np.stack([planes[c] for c in dst_channels], axis=-1))


def numpy_to_image(array: np.ndarray, encoding: str, header=None):
    """Pack ``array`` ((H, W) or (H, W, C), dtype of ``encoding``) into a new sensor_msgs/Image."""
    from sensor_msgs.msg import Image

    channels, dtype = _layout(encoding)
    array = np.asarray(array)
    if array.dtype != dtype:
        raise ImageConversionError(f"{encoding} needs dtype {np.dtype(dtype).name}, got {array.dtype}")
    if array.ndim == 2 and len(channels) == 1:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] != len(channels):
        raise ImageConversionError(
            f"{encoding} needs shape (H, W{', %d' % len(channels) if len(channels) > 1 else ''}), got {array.shape}"
        )
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = int(HOST_BIGENDIAN)
    msg.step = int(array.shape[1] * array.shape[2] * array.itemsize)
    msg.data = np.ascontiguousarray(array).tobytes()
    return msg
