"""``sensor_msgs/CameraInfo`` against the picture a policy was trained on: size, pixel shape, field of view.

A policy sees the frames of its training camera. The simulated worlds render square pixels through a pinhole of
vertical field of view ``fovy`` (MuJoCo's convention; the horizontal one follows from the image's aspect). A robot's
camera differs silently where its frames are resized to the policy's size by another aspect ratio (image_proc's
resize of a 640x480 frame to 64x64 squeezes it 4:3 horizontally; camera_info then has ``fx != fy``) or where its
lens sees a wider or narrower angle. The intrinsics are read as image_geometry's PinholeCameraModel reads them:
``K`` is for the calibrated resolution (``width`` x ``height``), the published image is the ``roi`` of it (all of
it when the ROI is zero) divided by ``binning_x``/``binning_y`` (0 or 1: none). An uncalibrated camera (``K`` zero,
as many drivers publish without a calibration file) tells nothing about its field of view: only its size is
checked.
"""

from __future__ import annotations

import math
import sys

# fx/fy beyond 1 +- this: the image was scaled by another factor across than down (calibrations of square-pixel
# sensors give fx and fy within ~1% of each other)
PIXEL_ASPECT_TOLERANCE = 0.05
# tan(half field of view) of the camera against the training camera's beyond 1 +- this: objects appear more than
# 10% larger or smaller than in training (a 90 degree camera beside a 100 degree world: 16%)
FIELD_OF_VIEW_TOLERANCE = 0.10


def _unbinned(binning) -> int:
    return max(int(binning), 1)


def image_geometry(msg) -> tuple[int, int, float, float]:
    """(width, height, fx, fy) of the images ``msg`` describes: ROI and binning applied to the calibrated size
    and focal lengths (``fx``/``fy`` 0 when K is not set)."""
    bx, by = _unbinned(msg.binning_x), _unbinned(msg.binning_y)
    roi = msg.roi
    full_width, full_height = (roi.width, roi.height) if roi.width and roi.height else (msg.width, msg.height)
    k = list(msg.k)
    fx, fy = (float(k[0]), float(k[4])) if len(k) == 9 else (0.0, 0.0)
    return int(full_width) // bx, int(full_height) // by, fx / bx, fy / by


def field_of_view_deg(width: int, height: int, fx: float, fy: float) -> tuple[float, float] | None:
    """(horizontal, vertical) field of view in degrees of a pinhole camera, or None when the focal lengths are
    not positive finite numbers (K not set)."""
    if not all(math.isfinite(f) and f > 0 for f in (fx, fy)):
        return None
    return math.degrees(2 * math.atan(width / (2 * fx))), math.degrees(2 * math.atan(height / (2 * fy)))


def trained_field_of_view_deg(height: int, width: int, fovy_deg: float) -> tuple[float, float]:
    """(horizontal, vertical) field of view of a world's camera of vertical ``fovy_deg`` rendering ``width`` x
    ``height`` square pixels."""
    half = math.tan(math.radians(fovy_deg) / 2)
    return math.degrees(2 * math.atan(half * width / height)), float(fovy_deg)


def pinhole_intrinsics(width: int, height: int, fovy_deg: float) -> tuple[list[float], list[float]]:
    """``(K, P)`` of a CameraInfo for a world's rendered camera of vertical field of view ``fovy_deg`` (MuJoCo's
    fovy is vertical): square pixels, no distortion, pixel centres at integer coordinates (OpenCV, ROS), so the
    principal point is the image's centre. What ``sim_node`` publishes and ``record --expert`` writes."""
    f = 0.5 * height / math.tan(math.radians(fovy_deg) / 2.0)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    return [f, 0.0, cx, 0.0, f, cy, 0.0, 0.0, 1.0], [f, 0.0, cx, 0.0, 0.0, f, cy, 0.0, 0.0, 0.0, 1.0, 0.0]


def world_camera_fovy_deg(world: str | None) -> float | None:
    """The vertical field of view (degrees) of the front camera of the simulated ``world`` today, or None: not one
    of the worlds, or the worlds not installed. Ours from ``sim_envs.cameras``, without importing the world (a robot
    without gymnasium and MuJoCo checks its camera too); a world of your own from its module's CAMERA_FOVY_DEG."""
    try:
        from sim_envs import world_class
        from sim_envs.cameras import CAMERA_FOVY_DEG

        if isinstance(world, str) and world in CAMERA_FOVY_DEG:
            return float(CAMERA_FOVY_DEG[world])
        cls = world_class(world)
    except (ImportError, KeyError):
        return None
    fovy = getattr(sys.modules[cls.__module__], "CAMERA_FOVY_DEG", None)
    return None if fovy is None else float(fovy)


def camera_info_problems(
    msg,
    expected_shape,
    world: str | None = None,
    fovy_deg: float | None = None,
    recorded: bool = False,
    fovx_deg: float | None = None,
) -> dict:
    """What in the camera_info ``msg`` differs from the policy's camera: ``{counter key: sentence}`` for
    ``size_mismatch`` (images of that size are rejected; a 0x0 message claims no size), ``bad_intrinsics`` (a K
    of NaN or negative focal lengths: no field of view to check), ``non_square_pixels`` (the images were stretched
    to another aspect ratio than the training camera's) and ``fov_mismatch`` (against a camera of vertical field of view
    ``fovy_deg``, when given: the one the policy file records it was trained with when ``recorded``, else ``world``'s
    camera of today). ``fovx_deg``: the training camera's horizontal field of view where the file records it (a run
    on bags: the CameraInfo's, whose pixels need not be square, e.g. a 640x480 camera resized to 128x128); else
    square pixels are the training camera's. ``expected_shape`` is the policy's (height, width, ...)."""
    height, width = int(expected_shape[0]), int(expected_shape[1])
    w, h, fx, fy = image_geometry(msg)
    trained_aspect = 1.0  # fx / fy of the training camera: the worlds render square pixels
    if recorded and fovy_deg is not None and fovx_deg is not None:
        trained_aspect = (width / math.tan(math.radians(fovx_deg) / 2)) / (
            height / math.tan(math.radians(fovy_deg) / 2)
        )
        if abs(trained_aspect - 1.0) <= PIXEL_ASPECT_TOLERANCE:  # square, as far as the check tells
            trained_aspect = 1.0
    problems = {}
    if not (w > 0 and h > 0):  # 0x0: camera_info_manager's message before a calibration, no size claimed
        return problems
    if (h, w) != (height, width):  # the images themselves are checked as they come (bad_shape)
        problems["size_mismatch"] = (
            f"camera_info says {w}x{h} images (width x height) but the policy takes {width}x{height}: images of "
            "that size are rejected (bad_shape); set the camera's resolution to the policy's, or, where its images "
            "are resized on the way, resize its camera_info with them (image_proc's resize node does)"
        )
    fov = field_of_view_deg(w, h, fx, fy)
    if fov is None:
        if fx or fy:  # all zeros is an uncalibrated driver's K; NaN or a negative focal length is no pinhole's
            problems["bad_intrinsics"] = (
                f"camera_info's K has focal lengths fx {fx:g}, fy {fy:g}: not a pinhole camera's (positive finite; "
                "all zeros: uncalibrated), so its field of view is not checked; fix the camera's calibration file"
            )
        return problems
    if abs(fx / fy / trained_aspect - 1.0) > PIXEL_ASPECT_TOLERANCE:
        squeezed = (  # the 640x480 example holds for a square policy (resized to a 4:3 one, its pixels stay square)
            f"a 640x480 frame (width x height) resized to {width}x{height} is squeezed 4:3"
            if width == height
            else f"a frame of another aspect ratio resized to {width}x{height} (width x height)"
        )
        problems["non_square_pixels"] = (
            (
                f"camera_info's K has pixels {fx / fy:.2f} times as wide as tall (fx {fx:.1f}, fy {fy:.1f}): the "
                f"images were resized by another factor across than down ({squeezed}), while the policy's training "
                "frames have square pixels; crop the camera's frames to "
                f"the policy's aspect ratio ({width}:{height}) before resizing them (docs/real_robot.md)"
            )
            if trained_aspect == 1.0
            else (
                f"camera_info's K has pixels {fx / fy:.2f} times as wide as tall (fx {fx:.1f}, fy {fy:.1f}), the "
                f"training camera's (its file records) {trained_aspect:.2f}: the images were resized by another "
                "factor across than down than the frames the policy trained on; resize them as the recordings were"
            )
        )
    if fovy_deg is not None:
        trained = (
            (float(fovx_deg), float(fovy_deg))
            if recorded and fovx_deg is not None
            else trained_field_of_view_deg(height, width, fovy_deg)
        )
        ratios = [math.tan(math.radians(a) / 2) / math.tan(math.radians(b) / 2) for a, b in zip(fov, trained)]
        if any(abs(r - 1.0) > FIELD_OF_VIEW_TOLERANCE for r in ratios):
            trainer = (
                f"the policy was trained (its file records) on a camera of {trained[0]:.0f}x{trained[1]:.0f} degrees"
                if recorded
                else f"the policy's world {world} renders {trained[0]:.0f}x{trained[1]:.0f} degrees"
            )
            problems["fov_mismatch"] = (
                f"camera_info's K gives a field of view of {fov[0]:.0f}x{fov[1]:.0f} degrees (across x down), "
                f"{trainer}: the policy sees a different picture (things at another size and place); use a lens, "
                "or a crop of a wider one, of the training camera's field of view"
                + ("" if recorded else " (a policy trained on this camera's own recordings: ignore this)")
            )
    return problems
