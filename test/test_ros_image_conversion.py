"""Image conversion without cv_bridge, on hand-built messages (padding, byte order, encodings)."""

import numpy as np
import pytest
from sensor_msgs.msg import Image

from liquid_control.conventions.image_conversion import ImageConversionError, image_to_numpy, numpy_to_image


def message(encoding, pixels: np.ndarray, pad: int = 0, bigendian: bool = False) -> Image:
    """Build a message by hand: rows of raw bytes followed by ``pad`` junk bytes each."""
    h, w = pixels.shape[:2]
    order = ">" if bigendian else "<"
    raw = pixels.astype(pixels.dtype.newbyteorder(order)).tobytes()
    row = len(raw) // h
    data = b"".join(raw[i * row : (i + 1) * row] + bytes([0xAB] * pad) for i in range(h))
    return Image(height=h, width=w, encoding=encoding, is_bigendian=int(bigendian), step=row + pad, data=data)


RGB = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 7  # (H=2, W=3) distinct values


@pytest.mark.parametrize("pad", [0, 5])
def test_colour_encodings_decode_to_rgb(pad):
    bgr = RGB[..., ::-1]
    alpha = np.full((2, 3, 1), 99, np.uint8)
    cases = {
        "rgb8": RGB,
        "bgr8": bgr,
        "rgba8": np.concatenate([RGB, alpha], -1),
        "bgra8": np.concatenate([bgr, alpha], -1),
    }
    for encoding, pixels in cases.items():
        msg = message(encoding, pixels, pad=pad)
        np.testing.assert_array_equal(image_to_numpy(msg), pixels)  # passthrough keeps the layout
        np.testing.assert_array_equal(image_to_numpy(msg, "rgb8"), RGB)
    rgba = image_to_numpy(message("bgr8", bgr, pad=pad), "rgba8")
    np.testing.assert_array_equal(rgba[..., 3], 255)  # alpha added at its maximum, like cvtColor


def test_mono_conversions_match_opencv():
    import cv2

    gray = image_to_numpy(message("rgb8", RGB), "mono8")
    np.testing.assert_array_equal(gray, cv2.cvtColor(RGB, cv2.COLOR_RGB2GRAY))
    # hand oracle for one pixel: 0.299 R + 0.587 G + 0.114 B
    r, g, b = RGB[1, 2].astype(float)
    assert abs(int(gray[1, 2]) - (0.299 * r + 0.587 * g + 0.114 * b)) <= 0.5
    mono = np.array([[0, 128, 255], [1, 2, 3]], np.uint8)
    msg = message("mono8", mono[..., None], pad=3)
    assert image_to_numpy(msg).shape == (2, 3)
    np.testing.assert_array_equal(image_to_numpy(msg, "rgb8"), np.repeat(mono[..., None], 3, axis=-1))


def test_big_endian_16_bit_and_depth_scaling():
    values = np.array([[0, 256, 65535], [1, 4660, 32768]], np.uint16)
    for bigendian in (False, True):
        msg = message("mono16", values[..., None], pad=2, bigendian=bigendian)
        out = image_to_numpy(msg)
        assert out.dtype == np.uint16 and out.dtype.isnative
        np.testing.assert_array_equal(out, values)
    as8 = image_to_numpy(message("mono16", values[..., None], bigendian=True), "mono8")
    np.testing.assert_array_equal(as8, np.rint(values * (255 / 65535)).astype(np.uint8))


def test_round_trip_through_numpy_to_image():
    msg = numpy_to_image(RGB, "rgb8")
    assert (msg.step, msg.is_bigendian, msg.height, msg.width) == (9, 0, 2, 3)
    np.testing.assert_array_equal(image_to_numpy(msg), RGB)
    mono = numpy_to_image(np.zeros((4, 6), np.uint8), "mono8")
    assert mono.step == 6 and image_to_numpy(mono).shape == (4, 6)


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda m: setattr(m, "encoding", "yuv422"), "unsupported image encoding 'yuv422'"),
        (lambda m: setattr(m, "encoding", "32FC1"), "unsupported"),
        (lambda m: setattr(m, "step", 8), "step 8 is smaller"),
        (lambda m: setattr(m, "height", 3), "expected step\\*height"),
        (lambda m: setattr(m, "data", bytes(m.data)[:-1]), "expected step\\*height"),
        (lambda m: setattr(m, "width", 0), "empty size"),
    ],
)
def test_inconsistent_messages_raise_clear_errors(mutate, match):
    msg = message("rgb8", RGB)
    mutate(msg)
    with pytest.raises(ImageConversionError, match=match):
        image_to_numpy(msg)


def test_numpy_to_image_checks_dtype_and_shape():
    with pytest.raises(ImageConversionError, match="needs dtype uint8"):
        numpy_to_image(np.zeros((2, 2, 3), np.float32), "rgb8")
    with pytest.raises(ImageConversionError, match="needs shape"):
        numpy_to_image(np.zeros((2, 2, 4), np.uint8), "rgb8")
    with pytest.raises(ImageConversionError, match="unsupported"):
        numpy_to_image(np.zeros((2, 2, 3), np.uint8), "hsv8")


def test_an_unsupported_encoding_is_named_in_a_short_message():
    """A message whose encoding string is a megabyte long: the error (policy_node's warning) quoted it whole."""
    msg = numpy_to_image(np.zeros((2, 2, 3), np.uint8), "rgb8")
    msg.encoding = "y" * 1_000_000
    with pytest.raises(ImageConversionError) as error:
        image_to_numpy(msg, "rgb8")
    assert len(str(error.value)) < 200, str(error.value)[:300]
    assert str(error.value).startswith(f"unsupported image encoding '{'y' * 39}... (1000000 characters); supported:")
