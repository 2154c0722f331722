"""camera_info against the policy's training camera (conventions.camera_info): the simulated camera's own
camera_info passes, a stretched or narrower camera is named, ROI and binning are read as image_geometry reads them."""

import math
from types import SimpleNamespace

import pytest
from sensor_msgs.msg import CameraInfo

from liquid_control.conventions.camera_info import (
    camera_info_problems,
    field_of_view_deg,
    image_geometry,
    world_camera_fovy_deg,
)


def info(width, height, fx, fy=None, binning=0, roi=None):
    msg = CameraInfo(width=width, height=height, binning_x=binning, binning_y=binning)
    fy = fx if fy is None else fy
    msg.k = [fx, 0.0, (width - 1) / 2, 0.0, fy, (height - 1) / 2, 0.0, 0.0, 1.0]
    if roi:
        msg.roi.x_offset, msg.roi.y_offset, msg.roi.width, msg.roi.height = roi
    return msg


def focal(pixels, fov_deg):
    return 0.5 * pixels / math.tan(math.radians(fov_deg) / 2)


@pytest.mark.parametrize("world", ["LiquidRover-v0", "LiquidBalanceNav-v0"])
def test_the_simulated_cameras_own_camera_info_has_no_problem_and_its_field_of_view_is_the_models(world):
    """sim_node's camera_info of each camera world passes the policy node's check, and the field of view the node
    takes for a policy of that world is the one its MuJoCo model renders."""
    import gymnasium as gym

    from liquid_control.ros.robot_description import camera_fovy_deg, robot_spec
    from liquid_control.ros.sim_node import SimNode

    env = gym.make(world).unwrapped
    try:
        model_fovy = camera_fovy_deg(env.model, robot_spec(world, env.model))
    finally:
        env.close()
    assert world_camera_fovy_deg(world) == pytest.approx(model_fovy)
    fake = SimpleNamespace(world=SimpleNamespace(image_shape=(64, 64, 3)))
    msg = SimNode._camera_info_template(fake, model_fovy)
    assert camera_info_problems(msg, (64, 64, 3), world, model_fovy) == {}
    assert field_of_view_deg(*image_geometry(msg)) == pytest.approx((model_fovy, model_fovy))


def test_a_4_to_3_frame_resized_to_the_policys_square_is_named_as_stretched():
    """image_proc's resize of a 640x480 camera (fx = fy = 500) to 64x64 scales K by 0.1 across and 0.133 down: a
    picture squeezed 4:3, which no training frame looked like; before, only the size was compared (equal)."""
    msg = info(64, 64, 500 * 64 / 640, 500 * 64 / 480)
    problems = camera_info_problems(msg, (64, 64, 3))
    assert list(problems) == ["non_square_pixels"]
    assert "0.75 times as wide as tall" in problems["non_square_pixels"]
    assert (
        "crop the camera's frames to the policy's aspect ratio (64:64) before resizing" in problems["non_square_pixels"]
    )
    # the same camera cropped to 480x480 first, then resized: square pixels, nothing to say without a world
    assert camera_info_problems(info(64, 64, 500 * 64 / 480), (64, 64, 3)) == {}


def test_a_camera_of_another_field_of_view_than_the_world_is_named_with_both():
    """A 90 degree camera against the rover world's 100 degrees (things 1.19 times as large) is named; one of
    100 degrees, and one within the tolerance (97), are not."""
    problems = camera_info_problems(info(64, 64, focal(64, 90)), (64, 64, 3), "LiquidRover-v0", 100.0)
    assert list(problems) == ["fov_mismatch"]
    assert (
        "field of view of 90x90 degrees (across x down), the policy's world LiquidRover-v0 renders 100x100"
        in (problems["fov_mismatch"])
    )
    assert camera_info_problems(info(64, 64, focal(64, 100)), (64, 64, 3), "LiquidRover-v0", 100.0) == {}
    assert camera_info_problems(info(64, 64, focal(64, 97)), (64, 64, 3), "LiquidRover-v0", 100.0) == {}


def test_an_uncalibrated_camera_is_checked_for_its_size_only():
    """K all zeros (a driver without a calibration file): no field of view to compare, no division by zero."""
    msg = info(64, 64, 0.0)
    assert camera_info_problems(msg, (64, 64, 3), "LiquidRover-v0", 100.0) == {}
    problems = camera_info_problems(info(640, 480, 0.0), (64, 64, 3), "LiquidRover-v0", 100.0)
    assert list(problems) == ["size_mismatch"]
    assert problems["size_mismatch"].startswith(
        "camera_info says 640x480 images (width x height) but the policy takes 64x64"
    )


def test_a_camera_info_before_calibration_claims_no_size_and_a_k_of_no_pinhole_is_said():
    """camera_info_manager's message without a calibration is 0x0 with K all zeros: it was 'camera_info says 0x0
    images ... its images will be rejected', an error every period while every image was taken (found by a probe
    of a robot's bring-up). A K of NaN or a negative focal length was taken silently as uncalibrated."""
    assert camera_info_problems(info(0, 0, 0.0), (64, 64, 3), "LiquidRover-v0", 100.0) == {}
    for fx, fy in ((float("nan"), float("nan")), (-40.0, -40.0), (40.0, float("inf"))):
        problems = camera_info_problems(info(64, 64, fx, fy), (64, 64, 3), "LiquidRover-v0", 100.0)
        assert list(problems) == ["bad_intrinsics"], (fx, fy)
        assert (
            f"camera_info's K has focal lengths fx {fx:g}, fy {fy:g}: not a pinhole camera's"
            in (problems["bad_intrinsics"])
        )


def test_a_camera_that_is_not_square_is_named_width_x_height_and_labelled():
    """A policy 24 high x 32 wide against a camera_info of 24 wide x 32 high: the message read 'says 24x32 images
    but the policy takes 32x24' unlabelled, beside a bad_shape line of numpy shapes, (32, 24, 3) against (24, 32, 3),
    so either could be read either way. Both are now width x height, said so; and a 4:3 policy is not told a 640x480
    frame resized to its size is squeezed (its pixels stay square)."""
    problems = camera_info_problems(info(24, 32, 0.0), (24, 32, 3))
    assert problems == {
        "size_mismatch": "camera_info says 24x32 images (width x height) but the policy takes 32x24: images of that "
        "size are rejected (bad_shape); set the camera's resolution to the policy's, or, where its images are "
        "resized on the way, resize its camera_info with them (image_proc's resize node does)"
    }
    squeezed = camera_info_problems(info(32, 24, 20.0, 20.0 / 0.75), (24, 32, 3))["non_square_pixels"]
    assert "(a frame of another aspect ratio resized to 32x24 (width x height))" in squeezed, squeezed
    assert "aspect ratio (32:24)" in squeezed and "640x480" not in squeezed, squeezed


def test_binning_and_roi_give_the_published_images_size_and_focal_lengths():
    """K is for the calibrated resolution: a 256x256 calibration binned by 4 publishes 64x64 images whose focal
    length is a quarter; a 128x128 ROI of a 640x480 calibration publishes 128x128 images with K's focal lengths."""
    binned = info(256, 256, focal(256, 100), binning=4)
    assert image_geometry(binned) == pytest.approx((64, 64, focal(64, 100), focal(64, 100)))
    assert camera_info_problems(binned, (64, 64, 3), "LiquidRover-v0", 100.0) == {}
    cropped = info(640, 480, 300.0, roi=(256, 176, 128, 128))
    assert image_geometry(cropped)[:2] == (128, 128)
    assert list(camera_info_problems(cropped, (64, 64, 3))) == ["size_mismatch"]
