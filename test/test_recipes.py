"""Robustness recipes: photometric augmentation, camera input normalisation, timing augmentation."""

import numpy as np
import pytest
import torch

from liquid_control.policy import PolicyConfigError, apply_overrides, load_config
from liquid_control.policy.config import CAMERA_NORMALIZATIONS
from liquid_control.policy.encoders import CameraEncoder
from liquid_control.training.augment import (
    AUGMENTATION_RANGES,
    PHOTOMETRIC,
    EpisodeAugmentation,
    EpisodeSun,
    EpisodeTiming,
    YawRecovery,
    describe_recipes,
    turn_view,
)


def frames(batch=2, steps=3, seed=0):
    """A smooth test pattern with detail (so blur, contrast and gamma all have something to change)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:32, 0:32] / 31.0
    base = np.stack([x, y, 0.5 + 0.4 * np.sin(6 * x) * np.cos(5 * y)], axis=-1)
    out = base[None, None] * rng.uniform(0.5, 1.0, size=(batch, steps, 1, 1, 3))
    out[..., ::4, :, :] *= 0.6  # stripes: high-frequency content
    return torch.from_numpy((out * 255).round().astype(np.uint8))


YAW = {"gain": 1.5, "hfov_deg": 100.0, "max_deg": 15.0, "rate_hz": 1.0, "decay_s": 0.4}


def augment(kinds, images, seed=1):
    return EpisodeAugmentation(kinds, images.shape[0], np.random.default_rng(seed)).apply(images)


def test_each_augmentation_changes_frames_and_keeps_uint8():
    images = frames(batch=8)  # enough episodes that 'mirror' (p = 0.5 per episode) flips some
    assert torch.equal(augment([], images), images)
    index = torch.arange(images.shape[1]).repeat(images.shape[0], 1)
    dt = torch.full(index.shape, 0.5)  # 'yaw': a kick within the chunk is likely (1 - exp(-1.5) per episode)
    for kind in AUGMENTATION_RANGES:
        aug = EpisodeAugmentation([kind], images.shape[0], np.random.default_rng(1), YAW)
        out, _ = aug.chunk(images, index, torch.zeros(*index.shape, 2), dt)
        assert out.dtype == torch.uint8 and out.shape == images.shape
        assert (out.float() - images.float()).abs().mean() > 0.5, kind


def test_augmentation_draws_do_not_depend_on_which_kinds_are_on():
    images = frames()
    one = EpisodeAugmentation(["brightness"], 2, np.random.default_rng(3))
    many = EpisodeAugmentation(list(PHOTOMETRIC), 2, np.random.default_rng(3))
    assert np.array_equal(one.brightness, many.brightness)
    assert torch.equal(augment(["brightness"], images, 3), augment(["brightness"], images, 3))  # deterministic
    with pytest.raises(ValueError, match="unknown augmentation"):
        EpisodeAugmentation(["dusk"], 2, np.random.default_rng(0))


def test_photometric_kinds_follow_their_formulas():
    images = frames(batch=3)
    x = images.double() / 255
    aug = EpisodeAugmentation(["brightness"], 3, np.random.default_rng(5))
    want = (x * torch.tensor(aug.brightness).view(-1, 1, 1, 1, 1)).clamp(0, 1)
    assert (aug.apply(images).double() / 255 - want).abs().max() <= 0.5 / 255 + 1e-9
    assert np.all((aug.brightness >= 0.6) & (aug.brightness <= 1.4))
    aug = EpisodeAugmentation(["gamma"], 3, np.random.default_rng(6))
    want = x ** torch.tensor(aug.gamma).view(-1, 1, 1, 1, 1)
    assert (aug.apply(images).double() / 255 - want).abs().max() <= 0.5 / 255 + 1e-6
    aug = EpisodeAugmentation(["contrast"], 3, np.random.default_rng(7))
    mean = x.mean(dim=(2, 3, 4), keepdim=True)
    want = ((x - mean) * torch.tensor(aug.contrast).view(-1, 1, 1, 1, 1) + mean).clamp(0, 1)
    assert (aug.apply(images).double() / 255 - want).abs().max() <= 0.5 / 255 + 1e-6


def test_gradient_is_a_ramp_of_light_from_the_top_row_to_the_bottom_row():
    images = frames(batch=3)
    x = images.double() / 255
    aug = EpisodeAugmentation(["gradient"], 3, np.random.default_rng(8))
    top, bottom = (torch.tensor(aug.gradient[:, i]).view(-1, 1, 1, 1, 1) for i in (0, 1))
    rows = torch.linspace(0, 1, x.shape[2], dtype=torch.float64).view(1, 1, -1, 1, 1)
    want = (x * (top + (bottom - top) * rows)).clamp(0, 1)
    assert (aug.apply(images).double() / 255 - want).abs().max() <= 0.5 / 255 + 1e-6
    assert np.all((aug.gradient >= 0.3) & (aug.gradient <= 1.3))
    # drawn after every older kind: a config that adds it sees the same brightness, noise, ... as before
    older = EpisodeAugmentation(["brightness", "noise"], 3, np.random.default_rng(8))
    both = EpisodeAugmentation(["brightness", "noise", "gradient"], 3, np.random.default_rng(8))
    assert np.array_equal(older.brightness, both.brightness) and np.array_equal(older.noise, both.noise)
    assert older.generator.initial_seed() == both.generator.initial_seed()


def test_mirror_flips_the_chosen_episodes_and_negates_only_their_turn_labels():
    images = frames(batch=8, steps=2)
    labels = torch.randn(8, 5, 2)
    aug = EpisodeAugmentation(["mirror"], 8, np.random.default_rng(3))
    assert 0 < aug.mirror.sum() < 8  # this seed mirrors some episodes and keeps others
    before = labels.clone()
    got, got_labels = aug.apply(images), aug.labels(labels)
    for b, flipped in enumerate(aug.mirror):
        assert torch.equal(got[b], images[b].flip(2) if flipped else images[b])  # (T, H, W, 3): W is dim 2
        assert torch.equal(got_labels[b, :, 0], labels[b, :, 0])  # forward speed never changes
        assert torch.equal(got_labels[b, :, 1], -labels[b, :, 1] if flipped else labels[b, :, 1])
    assert not torch.equal(got_labels, labels) and torch.equal(labels, before)  # a copy, the input kept
    # drawn last and only when used: adding it leaves every other draw of this batch as it was
    older = EpisodeAugmentation(["brightness", "gradient"], 8, np.random.default_rng(3))
    both = EpisodeAugmentation(["brightness", "gradient", "mirror"], 8, np.random.default_rng(3))
    assert np.array_equal(older.brightness, both.brightness) and np.array_equal(older.gradient, both.gradient)
    plain = EpisodeAugmentation(["brightness"], 8, np.random.default_rng(3))
    assert plain.mirror is None and torch.equal(plain.labels(labels), labels)


def test_mirror_is_refused_where_a_mirrored_world_is_not_the_negated_command():
    from liquid_control.paths import policies_dir

    rover = load_config(policies_dir() / "configs" / "cfc_ncp_rover.yaml")
    assert "mirror" in apply_overrides(rover, {"training.augmentation": ["mirror"]})["training"]["augmentation"]
    fusion = load_config(policies_dir() / "configs" / "cfc_balance_nav.yaml")  # IMU + wheels inputs
    with pytest.raises(PolicyConfigError, match=r"training.augmentation: 'mirror'.*vector inputs \['imu', 'wheels'\]"):
        apply_overrides(fusion, {"training.augmentation": ["mirror"]})
    with pytest.raises(PolicyConfigError, match="training.augmentation: 'mirror'.*bounds"):
        apply_overrides(rover, {"training.augmentation": ["mirror"], "action.low": [-1.0, -0.5]})


def test_yaw_turns_the_view_as_the_renderer_does_with_the_camera_turned():
    """The oracle is MuJoCo: the rover's camera turned by +-deg and rendered again, about its own vertical axis
    (turn_view without pitch) and about the world's vertical axis, as the rover turns (turn_view with the
    camera's pitch, 11.3 deg down: closer to that render than the camera-axis turn, which tilts the horizon)."""
    import math

    import gymnasium as gym
    import mujoco

    import sim_envs  # noqa: F401  (registers the worlds)

    env = gym.make("LiquidRover-v0", render_size=64)
    world = env.unwrapped
    world.reset(seed=3)
    cam = mujoco.mj_name2id(world.model, mujoco.mjtObj.mjOBJ_CAMERA, "front")
    original = world.model.cam_quat[cam].copy()
    recorded = torch.from_numpy(world._render_camera().copy()).float()[None, None]
    hfov, pitch = math.radians(100.0), math.atan(0.2)  # sim_envs/rover.py: fovy 100, xyaxes "0 -1 0 0.2 0 1"
    try:
        for deg, about_world in [(8.0, False), (-15.0, False), (8.0, True), (-15.0, True)]:
            turn = math.radians(deg)
            half = np.array([math.cos(turn / 2), 0.0, 0.0, 0.0])
            half[3 if about_world else 2] = math.sin(turn / 2)  # the body's z (world up) or the camera's own y
            quat = np.zeros(4)
            mujoco.mju_mulQuat(quat, *((half, original) if about_world else (original, half)))
            world.model.cam_quat[cam] = quat
            mujoco.mj_forward(world.model, world.data)  # the camera's pose follows its quaternion
            rendered = world._render_camera().astype(float)
            world.model.cam_quat[cam] = original
            mujoco.mj_forward(world.model, world.data)
            edge = int(abs(deg) / 100 * 64) + 3  # the revealed edge repeats border pixels: left out

            def error(frame, rendered=rendered, inner=slice(edge, 64 - edge)):
                return np.abs(frame[:, inner] - rendered[:, inner]).mean()

            tilt = pitch if about_world else 0.0
            warped = error(turn_view(recorded, [[turn]], hfov, tilt).numpy()[0, 0])
            assert warped < 0.3 * error(recorded.numpy()[0, 0]), deg  # not merely the recorded frame
            assert warped < 0.3 * error(turn_view(recorded, [[-turn]], hfov, tilt).numpy()[0, 0]), deg
            assert warped < 3.5, deg  # bilinear resampling of a textured 64x64 frame: 2.0-2.7 of 255 measured
            if about_world:
                assert warped < 0.8 * error(turn_view(recorded, [[turn]], hfov).numpy()[0, 0]), deg
    finally:
        env.close()
    assert torch.equal(turn_view(recorded, [[0.0]], 1.0), recorded)  # no turn: the frame as it was


def test_yaw_past_the_edge_of_the_view_repeats_the_border_on_its_own_side():
    """Before: with |yaw| + hfov / 2 over 90 deg (hfov_deg 100 and max_deg 45 are accepted), the outermost output
    rays point behind the recorded camera's image plane, and the homography mapped them to the other side of the
    frame: turned left, the left edge showed the right border. They now take the border on their own side."""
    import math

    w = 32
    x = torch.zeros(1, 2, w, w, 3)
    x[..., : w // 2, :] = 0.1  # left half dark, right half bright
    x[..., w // 2 :, :] = 0.9
    out = turn_view(x, [[math.radians(45.0), math.radians(-45.0)]], math.radians(100.0))
    assert torch.all(out[0, 0, :, :4] == 0.1)  # turned left: the revealed left edge is the left border
    assert torch.all(out[0, 1, :, -4:] == 0.9)  # turned right: the right border
    assert torch.isfinite(out).all()


def test_yaw_heading_errors_kick_decay_and_correct_the_turn_labels():
    yaw = YawRecovery(YAW, 64, np.random.default_rng(0), turn_limits=(-1.0, 1.0))
    dt = np.full((64, 40), 0.05)
    dt[:8, 20:] = 0.0  # padding: episodes that ended keep their error
    errors = yaw.advance(dt)
    limit = np.radians(15.0)
    assert np.all(np.abs(errors) <= limit + 1e-12) and np.any(errors > 0.5 * limit) and np.any(errors < -0.5 * limit)
    assert np.array_equal(errors[:8, 20:], np.repeat(errors[:8, 19:20], 20, axis=1))
    steps = errors[8:, 1:], errors[8:, :-1]
    decayed = np.isclose(steps[0], steps[1] * np.exp(-0.05 / 0.4))
    kicks = (~decayed).mean()  # a kick where the error did not just decay: 1 - exp(-rate dt) per update
    assert 0.02 < kicks < 0.1 and decayed.mean() > 0.9
    turn = torch.linspace(-1, 1, 40).repeat(64, 1)
    corrected = yaw.corrected(turn, errors)
    assert torch.allclose(corrected, (turn - 1.5 * torch.as_tensor(errors, dtype=turn.dtype)).clamp(-1, 1))
    assert float(corrected.min()) >= -1 and float(corrected.max()) <= 1
    # each frame takes the error of its first update in the chunk (held frames: several updates use one frame)
    index = np.array([[0, 0, 1, 1, 2], [0, 1, 2, 3, 4]])
    update = np.array([[0.1, 0.2, 0.3, 0.4, 0.5], [1.0, 2.0, 3.0, 4.0, 5.0]])
    assert np.array_equal(YawRecovery.per_frame(update, index, 5), [[0.1, 0.3, 0.5, 0, 0], [1, 2, 3, 4, 5]])


def test_yaw_recovery_takes_its_defaults_and_checks_from_the_config_schema():
    yaw = YawRecovery({"gain": 1.5, "hfov_deg": 100.0}, 2, np.random.default_rng(0))
    schema = apply_overrides(
        load_config("policies/configs/cfc_ncp_rover.yaml"),
        {"training.augmentation": ["yaw"], "training.yaw_recovery": {"gain": 1.5, "hfov_deg": 100.0}},
    )["training"]["yaw_recovery"]
    assert (yaw.max, yaw.rate, yaw.decay_s, yaw.pitch) == (
        pytest.approx(np.radians(schema["max_deg"])),
        schema["rate_hz"],
        schema["decay_s"],
        pytest.approx(np.radians(schema["pitch_deg"])),
    )
    with pytest.raises(PolicyConfigError, match=r"training\.yaw_recovery\.decay_s"):
        YawRecovery({**YAW, "decay_s": 0.0}, 2, np.random.default_rng(0))  # a zero decay divided by zero


def test_yaw_chunks_carry_the_error_and_leave_older_draws_alone():
    images = frames(batch=4, steps=6)
    labels = torch.zeros(4, 6, 2)
    index = torch.arange(6).repeat(4, 1)
    dt = torch.full((4, 6), 0.3)
    aug = EpisodeAugmentation(["brightness", "yaw"], 4, np.random.default_rng(2), YAW)
    older = EpisodeAugmentation(["brightness"], 4, np.random.default_rng(2))
    assert np.array_equal(aug.brightness, older.brightness)
    out, got = aug.chunk(images, index, labels, dt)
    errors = aug.yaw.error.copy()
    assert torch.equal(got[:, :, 0], labels[:, :, 0]) and not torch.equal(got[:, :, 1], labels[:, :, 1])
    assert torch.allclose(got[:, -1, 1], torch.as_tensor(-1.5 * errors, dtype=torch.float32).clamp(-1, 1))
    aug.chunk(images, index, labels, torch.zeros(4, 6))  # a chunk of padding only: the errors stay
    assert np.array_equal(aug.yaw.error, errors)
    with pytest.raises(ValueError, match="use chunk"):
        aug.apply(images)
    with pytest.raises(ValueError, match="yaw_recovery"):
        EpisodeAugmentation(["yaw"], 4, np.random.default_rng(2))


def test_yaw_config_needs_its_parameters_a_twist_action_and_no_vectors():
    from liquid_control.paths import policies_dir

    rover = load_config(policies_dir() / "configs" / "cfc_ncp_rover.yaml")
    assert rover["training"]["yaw_recovery"] is None
    ok = apply_overrides(
        rover, {"training.augmentation": ["yaw"], "training.yaw_recovery": {"gain": 1.6, "hfov_deg": 100}}
    )
    assert ok["training"]["yaw_recovery"] == {
        "gain": 1.6,
        "hfov_deg": 100.0,
        "pitch_deg": 0.0,
        "max_deg": 15.0,
        "rate_hz": 1.0,
        "decay_s": 0.4,
    }
    assert any("gain 1.6 per rad, camera 100 deg wide" in line for line in describe_recipes(ok["training"]))
    for overrides, match in [
        ({"training.augmentation": ["yaw"]}, "'yaw'.*needs training.yaw_recovery"),
        (
            {"training.augmentation": ["yaw"], "training.yaw_recovery": {"gain": 1, "hfov_deg": 90, "pitch_deg": 90}},
            r"yaw_recovery.pitch_deg: must be <= 60",
        ),
        ({"training.yaw_recovery": {"gain": 1.6, "hfov_deg": 100}}, "training.yaw_recovery: set, but 'yaw' is not"),
        ({"training.augmentation": ["yaw"], "training.yaw_recovery": {"gain": 1.6}}, r"yaw_recovery.hfov_deg: missing"),
        (
            {"training.augmentation": ["yaw"], "training.yaw_recovery": {"gain": 0, "hfov_deg": 100}},
            "gain: must be > 0",
        ),
        (
            {"training.augmentation": ["yaw"], "training.yaw_recovery": {"gain": 1, "hfov_deg": 90, "fov": 1}},
            "unknown key",
        ),
    ]:
        with pytest.raises(PolicyConfigError, match=match):
            apply_overrides(rover, overrides)
    fusion = load_config(policies_dir() / "configs" / "cfc_balance_nav.yaml")
    with pytest.raises(PolicyConfigError, match=r"'yaw'.*vector inputs \['imu', 'wheels'\]"):
        apply_overrides(
            fusion, {"training.augmentation": ["yaw"], "training.yaw_recovery": {"gain": 1, "hfov_deg": 90}}
        )


def test_blur_matches_scipy_gaussian_filter():
    from scipy import ndimage

    images = frames(batch=2, steps=2)
    aug = EpisodeAugmentation(["blur"], 2, np.random.default_rng(11))
    got = aug.apply(images).double().numpy() / 255
    x = images.double().numpy() / 255
    for b, sigma in enumerate(aug.blur):
        want = ndimage.gaussian_filter(x[b], sigma=(0, sigma, sigma, 0), mode="nearest", truncate=3.0 / sigma)
        assert np.abs(got[b] - want).max() <= 0.6 / 255 + 1e-3 * (sigma < 0.05), sigma


def test_noise_is_per_frame_and_within_its_range():
    images = torch.full((2, 2, 32, 32, 3), 128, dtype=torch.uint8)
    aug = EpisodeAugmentation(["noise"], 2, np.random.default_rng(2))
    out = aug.apply(images).double() / 255
    for b in range(2):
        assert out[b].std().item() == pytest.approx(aug.noise[b], rel=0.1, abs=2e-3)
    assert not torch.equal(out[:, 0], out[:, 1])


@pytest.mark.parametrize("normalize", ["frame", "instance"])
def test_camera_normalisation_removes_global_brightness_and_contrast(normalize):
    torch.manual_seed(0)
    encoder = CameraEncoder(32, 32, [4, 8], [5, 3], [2, 2], 8, normalize=normalize)
    image = frames(batch=1, steps=1)[0]  # (1, 32, 32, 3)
    darker = (image.double() * 0.5 + 10).round().to(torch.uint8)  # dimmer, lower contrast, offset
    a, b = encoder.scale(image), encoder.scale(darker)
    assert (a - b).abs().max() < 0.1  # the same standardised input (up to uint8 rounding)
    assert encoder(image).shape == (1, 8)
    tinted = image.double()
    tinted[..., 2] *= 0.5  # a colour cast: only per-channel (instance) normalisation removes it
    c = encoder.scale(tinted.round().to(torch.uint8))
    assert ((a - c).abs().max() < 0.1) == (normalize == "instance")
    flat = torch.full((1, 32, 32, 3), 77, dtype=torch.uint8)
    assert torch.all(torch.isfinite(encoder.scale(flat))) and encoder.scale(flat).abs().max() == 0


def test_chromaticity_removes_shading_pixel_by_pixel():
    """Uneven light (a brightness that varies over the frame) and a colour cast fall out of ``chromaticity``;
    per-channel standardisation (``instance``) removes only what is uniform over the frame."""
    torch.manual_seed(0)
    image = (frames(batch=1, steps=1)[0].double() * 0.6 + 60).round().to(torch.uint8)  # no black pixels
    rows, cols = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    shading = (0.35 + 0.65 * (0.5 + 0.5 * torch.sin(3 * rows + 2 * cols))).double()[None, :, :, None]
    cast = torch.tensor([1.0, 0.8, 0.55], dtype=torch.float64)  # a reddish light
    lit = (image.double() * shading * cast).round().to(torch.uint8)
    brighter = (image.double() * 1.4).clamp(max=255).round().to(torch.uint8)
    modes = (("chromaticity", True), ("instance", False), ("chromaticity_brightness", False))
    for normalize, removes_shading in modes:
        encoder = CameraEncoder(32, 32, [4, 8], [5, 3], [2, 2], 8, normalize=normalize)
        a, b = encoder.scale(image), encoder.scale(lit)
        assert ((a - b).abs().mean() < 0.1) == removes_shading, (normalize, (a - b).abs().mean())
        assert (a - encoder.scale(brighter)).abs().mean() < 0.1  # a global change: both remove it
    encoder = CameraEncoder(32, 32, [4, 8], [5, 3], [2, 2], 8, normalize="chromaticity")
    grey = torch.full((1, 32, 32, 3), 120, dtype=torch.uint8)
    grey[:, :16] = 30  # a grey frame, dark above: no colour anywhere, so nothing to see
    assert encoder.scale(grey).abs().max() < 1e-4
    keeps = CameraEncoder(32, 32, [4, 8], [5, 3], [2, 2], 8, normalize="chromaticity_brightness").scale(grey)
    assert keeps[:, :2].abs().max() < 1e-4 and keeps[:, 2].std() > 0.5  # no colour, but the dark half is there
    black = torch.zeros((1, 32, 32, 3), dtype=torch.uint8)
    assert torch.all(torch.isfinite(encoder.scale(black))) and torch.all(torch.isfinite(encoder(black)))
    (encoder(image).sum()).backward()  # trainable through the log
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters() if p.grad is not None)


def test_a_retinex_encoder_built_under_a_float64_default_runs_in_it():
    """A padding audit, in passing: the surround matrices were built float32 whatever the default dtype, so a retinex
    encoder built under ``torch.set_default_dtype(torch.float64)`` (float64 weights) refused its first frame with
    "expected m1 and m2 to have the same dtype"."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        encoder = CameraEncoder(16, 16, [4], [3], [2], 4, normalize="retinex")
        features = encoder(frames(batch=2, steps=1)[:, 0, :16, :16])
    finally:
        torch.set_default_dtype(previous)
    assert encoder.surround_rows.dtype == features.dtype == torch.float64 and torch.isfinite(features).all()


def test_retinex_is_log_colour_minus_its_gaussian_surround():
    """``retinex`` against scipy: log(x + eps) minus its Gaussian blur (sigma 4 px, edges replicated), then per
    channel standardised; slowly varying light mostly falls out, a dark trunk on dark ground stays visible."""
    from scipy import ndimage

    from liquid_control.policy.encoders import _LOG_EPS, _NORMALIZE_EPS

    wide = frames(batch=2, steps=1)[:, 0, :24]  # (2, 24, 32, 3): rows and columns blurred by their own matrices
    for image in (frames(batch=2, steps=1)[:, 0], wide):
        height, width = image.shape[1:3]
        encoder = CameraEncoder(height, width, [4, 8], [5, 3], [2, 2], 8, normalize="retinex").double()
        log = np.log(image.double().numpy() / 255 + _LOG_EPS)
        want = log - ndimage.gaussian_filter(log, sigma=(0, 4.0, 4.0, 0), mode="nearest", truncate=3.0)
        spread = np.sqrt(want.var(axis=(1, 2), keepdims=True) + _NORMALIZE_EPS**2)
        want = (want - want.mean(axis=(1, 2), keepdims=True)) / spread
        got = encoder.scale(image).permute(0, 2, 3, 1).numpy()
        assert np.abs(got - want).max() < 1e-6  # the blur matrices and the log table are held in float32
    encoder = CameraEncoder(32, 32, [4, 8], [5, 3], [2, 2], 8, normalize="retinex").double()

    bright = (frames(batch=1, steps=1)[0].double() * 0.6 + 60).round().to(torch.uint8)
    rows = torch.linspace(0, 1, 32, dtype=torch.float64)[None, :, None, None]
    lit = (bright.double() * (0.4 + 0.6 * rows) * torch.tensor([1.0, 0.8, 0.55])).round().to(torch.uint8)
    change = {}
    for mode in ("instance", "retinex"):
        scale = CameraEncoder(32, 32, [4], [5], [2], 8, normalize=mode).scale
        change[mode] = (scale(bright) - scale(lit)).abs().mean().item()
    assert change["retinex"] < change["instance"] / 3, change  # a ramp of reddish light, dark above
    trunk = torch.full((1, 32, 32, 3), 40, dtype=torch.uint8)
    trunk[:, :, 14:18] = 15  # a dark trunk on dark ground: brightness is all there is to see
    seen = encoder.scale(trunk)
    ground = seen[..., :2]  # beyond the surround's reach (3 sigma) from the trunk: flat
    assert ground.std() < 1e-6 and seen[..., 14:18].mean() < ground.mean() - 1  # the trunk stands out
    black = torch.zeros((1, 32, 32, 3), dtype=torch.uint8)
    assert torch.all(torch.isfinite(encoder.scale(black))) and torch.all(torch.isfinite(encoder(black)))
    encoder.float()(frames(batch=2, steps=1)[:, 0]).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters() if p.grad is not None)


def test_default_normalisation_is_the_shipped_scaling():
    encoder = CameraEncoder(32, 32, [4], [5], [2], 8)
    image = frames(batch=1, steps=1)[0]
    want = image.permute(0, 3, 1, 2).float() / 255 - 0.5
    assert torch.equal(encoder.scale(image), want)
    with pytest.raises(ValueError, match="normalize"):
        CameraEncoder(32, 32, [4], [5], [2], 8, normalize="batch")


def test_recipe_switches_are_validated():
    from liquid_control.paths import policies_dir

    cfg = load_config(policies_dir() / "configs" / "cfc_ncp_rover.yaml")
    assert cfg["encoder"]["camera"]["normalize"] == "none" and cfg["training"]["sensor_rate_range"] is None
    ok = apply_overrides(cfg, {"training.sensor_rate_range": [0.5, 2], "encoder.camera.normalize": "instance"})
    assert ok["training"]["sensor_rate_range"] == [0.5, 2.0]
    for key, value, match in [
        ("training.sensor_rate_range", [2, 0.5], "low <= high"),
        ("training.sensor_rate_range", [0.5], "low <= high"),
        ("training.sensor_rate_range", [0.01, 2], ">= 0.1"),
        ("training.jitter_range", [0, 9], "<= 4"),
        ("training.sun_elevation_range", [60, 30], "low <= high"),
        ("training.sun_elevation_range", [-5, 30], ">= 0"),
        ("training.sun_elevation_range", [30, 95], "<= 90"),
        ("encoder.camera.normalize", "batch", "choose from none, frame, instance"),
        ("training.augmentation", ["dusk"], "choose from"),
    ]:
        with pytest.raises(PolicyConfigError, match=match):
            apply_overrides(cfg, {key: value})


def test_timing_draws_cover_the_range_log_uniformly():
    rates = [EpisodeTiming([0.5, 2.0], None, np.random.default_rng(i)).rate for i in range(400)]
    assert 0.5 <= min(rates) and max(rates) <= 2.0
    assert np.mean(np.log(rates)) == pytest.approx(0.0, abs=0.08)  # log-uniform: centred on 1x
    jitters = [EpisodeTiming(None, [1.0, 3.0], np.random.default_rng(i)).jitter for i in range(200)]
    assert 1.0 <= min(jitters) and max(jitters) <= 3.0 and EpisodeTiming(None, None, None).nominal


def test_timing_recipe_collects_rover_episodes_at_drawn_rates(tmp_path):
    """A tiny rover run with the timing recipe: each episode's measured dt follow its drawn rate."""
    from liquid_control.training import trainer

    cfg = _small_rover(demonstrations=4, max_episode_steps=30, sensor_rate_range=[0.5, 2.0])
    trainer.train(cfg, tmp_path / "run", progress=False, log=lambda m: None)
    from liquid_control.training.data import load_episode

    for i in range(4):
        ep = load_episode(tmp_path / "run" / "data" / "round_00" / f"ep_{i:04d}.npz")
        rate = EpisodeTiming([0.5, 2.0], None, np.random.default_rng([0, 0, i, 1])).rate
        assert np.median(ep.dt[1:]) == pytest.approx(1.0 / (15.0 * rate), rel=0.2)
    lines = describe_recipes(cfg["training"], {"normalize": "instance"})
    assert any("sensor rate x [0.5, 2]" in line for line in lines) and any("instance" in line for line in lines)
    # every normalisation is said in its own words (a model card names what the policy saw)
    said = {
        mode: [
            line for line in describe_recipes({}, {"normalize": mode}) if line.startswith("camera input normalisation")
        ]
        for mode in CAMERA_NORMALIZATIONS
    }
    assert said.pop("none") == []
    assert all(len(lines) == 1 and f"`{mode}`" in lines[0] for mode, lines in said.items())
    assert len({lines[0].split(":", 1)[1] for lines in said.values()}) == len(said)
    assert lines[-1].startswith("rendered worlds: the training distribution")


def test_sun_draws_cover_the_elevation_range_and_every_azimuth():
    suns = [EpisodeSun([30, 60], np.random.default_rng(i)) for i in range(400)]
    directions = np.array([sun.direction for sun in suns])
    assert np.allclose(np.linalg.norm(directions, axis=1), 1.0)
    elevation = np.degrees(np.arcsin(-directions[:, 2]))  # the light travels down from the sun
    assert 30 <= elevation.min() < 32 and 58 < elevation.max() <= 60
    azimuth = np.degrees(np.arctan2(-directions[:, 1], -directions[:, 0])) % 360
    assert np.histogram(azimuth, bins=4, range=(0, 360))[0].min() > 70  # all four quarters, ~100 each


def _small_rover(**training):
    from liquid_control.paths import policies_dir

    cfg = load_config(policies_dir() / "configs" / "cfc_ncp_rover.yaml")
    return apply_overrides(
        cfg,
        {
            "observation.image": {"height": 16, "width": 16},
            "encoder.camera": {"channels": [4], "kernel_sizes": [3], "strides": [2], "features": 8},
            "training.demonstrations": 2,
            "training.dagger_rounds": 0,
            "training.epochs_first": 1,
            "training.eval_episodes": 0,
            "training.max_episode_steps": 12,
            **{f"training.{key}": value for key, value in training.items()},
        },
    )


def test_sun_recipe_lights_each_training_episode_by_its_own_draw_and_puts_the_sun_back():
    """The frames of a recipe episode are those of the world lit from that episode's drawn direction (the expert
    drives the same, it reads the true state), and the world's own sun is back afterwards (selection episodes)."""
    from liquid_control.training.episodes import collect_episode, make_env

    sunny, plain = _small_rover(sun_elevation_range=[30, 60]), _small_rover()
    env = make_env(plain)
    try:
        world = env.unwrapped
        light = EpisodeSun.light_id(world)
        own = world.model.light_dir[light].copy()
        for index in range(2):
            lit = collect_episode(env, None, sunny, 0, 0, index)
            assert np.array_equal(world.model.light_dir[light], own)
            unlit = collect_episode(env, None, plain, 0, 0, index)
            assert np.array_equal(lit.expert_action, unlit.expert_action) and np.array_equal(lit.dt, unlit.dt)
            assert not np.array_equal(lit.observations["image"], unlit.observations["image"])
            draw = EpisodeSun([30, 60], np.random.default_rng([0, 0, index, 2]))
            world.model.light_dir[light] = draw.direction
            try:
                again = collect_episode(env, None, plain, 0, 0, index)
            finally:
                world.model.light_dir[light] = own
            assert np.array_equal(lit.observations["image"], again.observations["image"])
    finally:
        env.close()
    lines = describe_recipes(sunny["training"])
    assert any("sun's elevation U(30, 60) deg" in line for line in lines)


def test_sun_recipe_is_refused_where_it_could_do_nothing(tmp_path):
    from test_bag_diagnostics import _bag
    from test_bags import CAMERA_ONLY

    from liquid_control.training import trainer

    bags = {"bags": [_bag(tmp_path / "bag")]}
    with pytest.raises(trainer.TrainingError, match="sun_elevation_range: a run from bags renders nothing"):
        sun = {"training.sun_elevation_range": [30, 60]}
        trainer.train(CAMERA_ONLY, tmp_path / "bags", data=bags, overrides=sun, progress=False)
    from liquid_control.paths import policies_dir

    balance_nav = policies_dir() / "configs" / "cfc_balance_nav.yaml"  # its world's light has no name
    with pytest.raises(trainer.TrainingError, match="no light named 'sun' to move .world 'LiquidBalanceNav-v0'"):
        trainer.train(balance_nav, tmp_path / "reach", overrides=sun, progress=False)
    assert not (tmp_path / "reach").exists() and not (tmp_path / "bags").exists()


def test_a_policy_without_a_camera_refuses_the_sun_recipe():
    """The sun lights camera frames only: a rover policy on its IMU alone trained with the recipe as without it,
    and its config still named the recipe."""
    from liquid_control.paths import policies_dir

    cfg = load_config(policies_dir() / "configs" / "cfc_ncp_rover.yaml")
    imu_only = {"observation.image": None, "observation.vectors": {"imu": 6}, "observation.update_on": ["imu"]}
    assert apply_overrides(cfg, imu_only)["observation"]["image"] is None
    with pytest.raises(PolicyConfigError, match=r"sun_elevation_range: \[30.0, 60.0\] .* has no observation.image"):
        apply_overrides(cfg, {**imu_only, "training.sun_elevation_range": [30, 60]})


def test_a_sun_that_cannot_be_moved_leaves_no_drawn_timing_behind():
    """The timing draw is undone when the sun's fails to apply (the world has no light named 'sun'): it was
    applied before, outside the undo, and every later episode of the world (selection ones too) kept it."""
    from liquid_control.paths import policies_dir
    from liquid_control.training.episodes import collect_episode, make_env

    cfg = load_config(policies_dir() / "configs" / "cfc_balance_nav.yaml")
    both = apply_overrides(cfg, {"training.sensor_rate_range": [0.5, 0.5], "training.sun_elevation_range": [30, 60]})
    env = make_env(cfg)
    try:
        nominal = dict(env.unwrapped.timings)
        with pytest.raises(ValueError, match="no light named 'sun'"):
            collect_episode(env, None, both, 0, 0, 0)
        assert env.unwrapped.timings == nominal
    finally:
        env.close()


def test_instance_norm_layers_take_how_strongly_edges_show_out_of_the_first_maps():
    """IBN-style instance norm (``encoder.camera.instance_norm_layers``): an input with a quarter of the contrast
    gives the normalised layer the same maps (the convolutions start without bias, so their maps scale with the
    contrast); without it they scale by a quarter. Its scale and shift are learnt, and a checkpoint keeps them."""
    torch.manual_seed(0)
    plain = CameraEncoder(32, 32, [4, 8], [5, 3], [2, 2], 8, normalize="instance")
    normed = CameraEncoder(32, 32, [4, 8], [5, 3], [2, 2], 8, normalize="instance", instance_norm_layers=1)
    assert [type(m).__name__ for m in normed.conv] == ["Conv2d", "InstanceNorm2d", "ReLU", "Conv2d", "ReLU"]
    assert not any(isinstance(m, torch.nn.InstanceNorm2d) for m in plain.conv)  # the default: as shipped
    normed.conv[0].load_state_dict(plain.conv[0].state_dict())
    x = plain.scale(frames(batch=1, steps=1)[0])
    with torch.no_grad():
        a, b = normed.conv[:3](x), normed.conv[:3](0.25 * x)
        assert (a - b).abs().max() < 0.02 * a.abs().max()
        p, q = plain.conv[:2](x), plain.conv[:2](0.25 * x)
        torch.testing.assert_close(q, 0.25 * p)
        faint = normed.conv[:3](0.01 * x)  # maps of spread ~1e-2: eps keeps them faint, not stretched to full scale
        assert faint.abs().max() < 0.5 * a.abs().max()
    learnt = {name for name, parameter in normed.named_parameters() if parameter.requires_grad}
    assert {"conv.1.weight", "conv.1.bias"} <= learnt
    normed(frames(batch=1, steps=1)[0]).sum().backward()
    assert normed.conv[1].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="instance_norm_layers must be 0..2"):
        CameraEncoder(32, 32, [4, 8], [5, 3], [2, 2], 8, instance_norm_layers=3)


def test_instance_norm_layers_are_checked_said_and_kept_by_a_checkpoint(tmp_path):
    from liquid_control.policy import Policy
    from liquid_control.policy.checkpoint import load_policy, save_policy

    cfg = apply_overrides(_small_rover(), {"encoder.camera.normalize": "instance"})
    one_by_one = {
        "encoder.camera": {"channels": [4, 4], "kernel_sizes": [3, 7], "strides": [2, 1], "normalize": "frame"}
    }
    for overrides, match in (
        ({"encoder.camera.instance_norm_layers": 2}, "2 is more than the encoder's 1 convolutions"),
        ({"encoder.camera.instance_norm_layers": -1}, "must be >= 0"),
        ({"encoder.camera.normalize": "none", "encoder.camera.instance_norm_layers": 1}, "needs an encoder.camera.no"),
        (
            {**one_by_one, "encoder.camera.instance_norm_layers": 2},
            "2 normalises the maps of convolution 1, which are 1x1",
        ),
    ):
        with pytest.raises(PolicyConfigError, match=rf"encoder.camera.instance_norm_layers: {match}"):
            apply_overrides(cfg, overrides)
    apply_overrides(cfg, {**one_by_one, "encoder.camera.instance_norm_layers": 1})  # 7x7 maps: fine
    assert cfg["encoder"]["camera"]["instance_norm_layers"] == 0
    assert not [
        line for line in describe_recipes(cfg["training"], cfg["encoder"]["camera"]) if "feature normalisation" in line
    ]
    cfg = apply_overrides(cfg, {"encoder.camera.instance_norm_layers": 1})
    lines = describe_recipes(cfg["training"], cfg["encoder"]["camera"])
    assert "camera feature normalisation: instance norm with a learnt scale and shift on the first convolution's" in (
        " ".join(lines)
    )
    torch.manual_seed(0)
    policy = Policy.from_config(cfg)
    with torch.no_grad():
        policy.camera.conv[1].weight.uniform_(0.5, 2.0)  # as training leaves them: not the initial ones
        policy.camera.conv[1].bias.uniform_(-1.0, 1.0)
    loaded = load_policy(save_policy(tmp_path / "p.pt", policy))
    torch.testing.assert_close(loaded.camera.conv[1].weight, policy.camera.conv[1].weight, rtol=0, atol=0)
    image = frames(batch=1, steps=1)[0][:, :16, :16]
    torch.testing.assert_close(loaded.camera(image), policy.camera(image), rtol=0, atol=0)
