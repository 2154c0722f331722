"""LiquidRover-v0: gymnasium API, the time interface, seeding, bad actions and the privileged expert."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import sim_envs  # noqa: F401  (registers the worlds)


@pytest.fixture(scope="module")
def rover():
    env = gym.make("LiquidRover-v0")
    yield env
    env.close()


def rollout(env, seed, steps, policy=None):
    obs, info = env.reset(seed=seed)
    observations, infos = [obs], [info]
    for _ in range(steps):
        action = env.unwrapped.expert_action() if policy is None else policy(obs)
        obs, _, terminated, truncated, info = env.step(action)
        observations.append(obs)
        infos.append(info)
        if terminated or truncated:
            break
    return observations, infos


def test_check_env():
    env = gym.make("LiquidRover-v0", render_mode="rgb_array", render_size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # gymnasium's checker only warns about most problems
        check_env(env.unwrapped, skip_render_check=False)
    env.reset(seed=0)
    assert env.render().shape == (240, 320, 3)
    env.close()


def test_make_by_id_spaces(rover):
    obs, info = rover.reset(seed=0)
    assert obs["image"].shape == (64, 64, 3) and obs["image"].dtype == np.uint8
    assert obs["imu"].shape == (6,) and obs["ages"].shape == (1,) and obs["event"] == 0
    assert info["event"] == "camera" and rover.unwrapped.update_on == ("camera",)
    assert rover.observation_space.contains(obs)
    for _ in range(5):
        obs, *_ = rover.step(np.zeros(2))
    assert obs["imu"][5] == pytest.approx(9.81, abs=0.1)  # the accelerometer feels gravity at rest
    np.testing.assert_allclose(obs["imu"][:3], 0.0, atol=0.03)


def test_dt_is_difference_of_stamps_and_camera_rate(rover):
    observations, infos = rollout(rover, seed=1, steps=60)
    stamps = np.array([i["stamp"] for i in infos])
    dts = np.array([o["dt"][0] for o in observations])
    assert dts[0] == 0.0
    np.testing.assert_allclose(dts[1:], np.diff(stamps), atol=1e-6)
    assert 1 / 15 * 0.8 - 1e-6 <= dts[1:].min() and dts[1:].max() <= 1 / 15 * 1.2 + 1e-6
    ages = np.array([o["ages"] for o in observations])
    np.testing.assert_allclose(ages[:, 0], 0.0, atol=1e-9)  # the camera triggered the update
    imu_ages = np.array([i["stamp"] - i["stamps"]["imu"] for i in infos[1:]])
    assert imu_ages.min() >= 0 and imu_ages.max() <= 0.011 + 1e-6  # the held IMU is at most one interval old


def test_same_seed_same_episode_different_seeds_differ(rover):
    a, _ = rollout(rover, seed=5, steps=15)
    b, _ = rollout(rover, seed=5, steps=15)
    c, _ = rollout(rover, seed=6, steps=15)
    for oa, ob in zip(a, b):
        for key in oa:
            np.testing.assert_array_equal(oa[key], ob[key])
    assert not np.array_equal(a[0]["image"], c[0]["image"])
    assert not np.array_equal(a[3]["dt"], c[3]["dt"])


def test_out_of_bounds_action_clipped_and_counted(rover):
    rover.reset(seed=2)
    _, _, _, _, info = rover.step(np.array([0.5, 0.0]))
    assert info["clipped_actions"] == 0
    _, _, _, _, info = rover.step(np.array([3.0, -0.2]))
    _, _, _, _, info = rover.step(np.array([0.2, -1.5]))
    assert info["clipped_actions"] == 2


@pytest.mark.parametrize("bad", [[np.nan, 0.0], [0.0, np.inf]])
def test_nan_action_raises_without_stepping(rover, bad):
    rover.reset(seed=2)
    before = rover.unwrapped.data.time
    with pytest.raises(ValueError, match="finite"):
        rover.step(np.array(bad))
    assert rover.unwrapped.data.time == before


def test_driving_into_a_tree_is_a_collision(rover):
    """Aim straight at the nearest obstacle: the episode ends with collision, not success."""
    rover.reset(seed=4)
    env = rover.unwrapped
    position, yaw = env.pose()
    obstacle = env.obstacles[np.argmin(np.linalg.norm(env.obstacles[:, :2] - position, axis=1))]

    def aim(_obs):
        p, y = env.pose()
        bearing = np.arctan2(*(obstacle[1::-1] - p[::-1]))
        error = (bearing - y + np.pi) % (2 * np.pi) - np.pi
        return np.array([0.8 if abs(error) < 0.3 else 0.0, np.clip(2 * error, -1, 1)])

    _, infos = rollout(rover, seed=4, steps=400, policy=aim)
    assert infos[-1]["collision"] and not infos[-1]["success"]


@pytest.mark.parametrize("seed", [10, 11, 12])
def test_expert_reaches_target(rover, seed):
    _, infos = rollout(rover, seed=seed, steps=1000)
    assert infos[-1]["success"] and not infos[-1]["collision"]
    assert infos[-1]["distance"] < 0.6


def closest_gap(env, seed, margin):
    """Smallest distance between the rover's circle and an obstacle's over an expert episode; its outcome."""
    from sim_envs.rover import ROVER_RADIUS

    env.reset(seed=seed)
    world, gap = env.unwrapped, np.inf
    while True:
        _, _, terminated, truncated, info = env.step(world.expert_action(margin))
        position, _ = world.pose()
        obstacles = np.asarray(world.obstacles)
        distances = np.hypot(*(obstacles[:, :2] - position).T) - obstacles[:, 2] - ROVER_RADIUS
        gap = min(gap, float(distances.min()))
        if terminated or truncated:
            return gap, info


def test_a_wider_expert_margin_keeps_a_wider_berth_and_still_reaches_the_target():
    env = gym.make("LiquidRover-v0", render_size=16)
    default = [closest_gap(env, seed, 0.22) for seed in (100, 101, 102, 103)]
    wide = [closest_gap(env, seed, 0.6) for seed in (100, 101, 102, 103)]
    with pytest.raises(ValueError, match="margin must be a finite number >= 0"):
        env.unwrapped.expert_action(-0.1)
    env.close()
    assert all(info["success"] for _, info in default + wide)
    assert min(gap for gap, _ in default) < 0.3  # the default expert passes obstacles closely on these seeds
    assert min(gap for gap, _ in wide) > 0.55  # the wide one keeps ~0.6 m on the same seeds


def test_latency_shift_delays_delivery_not_stamps():
    env = gym.make("LiquidRover-v0", shift="latency=0.05", render_size=16)
    observations, infos = rollout(env, seed=1, steps=20)
    env.close()
    for obs, info in zip(observations, infos):
        assert info["sim_time"] - info["stamp"] == pytest.approx(0.05, abs=1e-6)
        assert obs["ages"][0] == 0.0  # ages are stamp differences: the triggering frame's is 0
    stamps = np.array([i["stamp"] for i in infos])
    np.testing.assert_allclose([o["dt"][0] for o in observations[1:]], np.diff(stamps), atol=1e-6)


def test_expert_eval_worker_counts_outcomes():
    from sim_envs.expert_eval import run_episodes

    world, preset, results = run_episodes(("rover", "winter", [10, 11]))
    assert (world, preset) == ("rover", "winter") and len(results) == 2
    assert all(success and not collision for success, collision, _, _ in results)


def test_next_delivery_gives_every_message_in_order():
    """The ROS sim node publishes each message: between two camera updates come ~6-7 IMU messages."""
    env = gym.make("LiquidRover-v0", render_size=16)
    _, info = env.reset(seed=0)
    world = env.unwrapped
    world.apply_action(np.zeros(2))
    messages = []
    while not messages or messages[-1][0] != "camera":
        messages.append(world.next_delivery())
    imu_stamps = [m[1] for m in messages if m[0] == "imu"]
    assert 4 <= len(imu_stamps) <= 9 and np.all(np.diff(imu_stamps) > 0.009 - 1e-9)
    assert info["sim_time"] <= imu_stamps[0] and messages[-1][1] - info["stamp"] >= 0.8 / 15 - 1e-9
    assert messages[0][2].shape == (6,) and messages[-1][2].shape == (16, 16, 3)
    # With `until` before the next message: physics stops there and nothing is delivered.
    now = world.data.time
    assert world.next_delivery(until=now + 1e-4) is None and world.data.time == pytest.approx(now + 1e-4)
    env.close()


@pytest.mark.parametrize("size", [4, 5000, (64, 2)])
def test_bad_render_size_rejected(size):
    with pytest.raises(ValueError, match="render_size"):
        gym.make("LiquidRover-v0", render_size=size)


def test_render_size_is_an_int_or_a_pair_of_ints_else_refused_naming_it():
    """(64,) and (16, 16, 3) failed to unpack, "64" in a comparison, without naming render_size; 64.7 became 64."""
    for world in ("LiquidRover-v0", "LiquidBalanceNav-v0"):
        for size in [(64,), (16, 16, 3), "64", 64.7, 64.0, True, (16.0, 16), (16, True), None]:
            with pytest.raises(ValueError, match="render_size must be an int .* or a .height, width. pair of ints"):
                gym.make(world, render_size=size)
    for size, shape in [
        (16, (16, 16, 3)),
        (np.int64(16), (16, 16, 3)),
        ([16, 24], (16, 24, 3)),
        ((24, 16), (24, 16, 3)),
    ]:
        assert gym.make("LiquidRover-v0", render_size=size).observation_space["image"].shape == shape


RARE_CAMERA = "sensor_rate=0.1,camera_rate=0.1,dropout=0.9"  # a surviving camera frame every ~67 s


def test_an_update_far_past_the_limit_ends_the_episode_at_the_limit_within_the_space():
    """With rare camera frames the step after reset(seed=0) (first update at 15.3 s) ran to the next frame at
    79.4 s: dt 64.1 against the space's 60, a 25 s episode ending at 79 s. It now ends at 25 s, truncated."""
    env = gym.make("LiquidRover-v0", shift=RARE_CAMERA, render_size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # gymnasium's passive checker warns when an observation is outside the space
        obs, info = env.reset(seed=0)
        start = info["stamp"]
        obs, _, terminated, truncated, info = env.step(np.zeros(2, np.float32))
    assert env.observation_space.contains(obs)
    assert truncated and not terminated and info["stamp"] == 25.0 and info["sim_time"] == pytest.approx(25.0)
    assert obs["dt"][0] == pytest.approx(25.0 - start) and obs["ages"][0] == pytest.approx(25.0 - start)
    assert start < info["stamps"]["imu"] <= 25.0  # the IMU (a message every ~1 s here) read on the way to the limit
    env.close()


def test_only_updates_stamped_past_the_horizon_are_replaced():
    """Every step equals the one without the cut, except where that one's update lies past ``horizon``
    (2 time_limit + 10 s): there the episode ends at the time limit (or at the previous update, when the
    reset's was already past it), truncated, every observation inside the space."""
    kwargs = dict(shift=RARE_CAMERA, render_size=8, time_limit=20.0)
    cut, uncut = gym.make("LiquidRover-v0", **kwargs).unwrapped, gym.make("LiquidRover-v0", **kwargs).unwrapped
    uncut.horizon = float("inf")  # the old behaviour: always the next update
    replaced = 0
    for seed in (0, 3, 5, 7):  # next update at 79, 51 s; reset's at 74 s; 43 s (in the horizon)
        a, b = cut.reset(seed=seed), uncut.reset(seed=seed)
        assert cut.observation_space.contains(a[0])
        while True:
            previous = a[1]["stamp"]
            a = cut.step(np.zeros(2, np.float32))
            b = uncut.step(np.zeros(2, np.float32))
            assert cut.observation_space.contains(a[0])
            if b[4]["stamp"] > cut.horizon:
                replaced += 1
                assert a[3] and a[4]["stamp"] == max(20.0, previous) and a[0]["dt"][0] <= b[0]["dt"][0]
                break
            for x, y in zip(a[0].values(), b[0].values()):
                np.testing.assert_array_equal(x, y)
            assert a[1:4] == b[1:4] and a[4]["stamp"] == b[4]["stamp"]
            if a[2] or a[3]:
                break
    assert replaced == 3
    cut.close()
    uncut.close()


@pytest.mark.parametrize(
    "world, update_on, seed, ages",
    [
        ("LiquidRover-v0", ("camera", "imu"), 8, [14.07 - 2.23, 0.0]),  # camera at 2.23 s, then the IMU at 14.07 s
        ("LiquidBalanceNav-v0", None, 27, [21.71 - 0.06, 0.0]),  # its default update sensors: camera and IMU
    ],
)
def test_reset_ages_past_the_horizon_lie_in_the_space(world, update_on, seed, ages):
    """With several update sensors reset's first update waits for each one's first message, however late, and
    is not cut at the horizon: the one that came first has aged past it (11.8 s, 21.7 s against 11 s), outside
    the former space Box(0, horizon). The ages' space is now every finite float32, the observation unchanged
    (check_env on worlds with several update sensors: test_worlds_gym_usage.py)."""
    shift = RARE_CAMERA + ",imu_rate=0.1"  # and an IMU message every ~10 s (rover) or ~5 s (balance-nav)
    env = gym.make(world, shift=shift, render_size=8, time_limit=0.5, update_on=update_on)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # gymnasium's passive checker warns when an observation is outside the space
        obs, info = env.reset(seed=seed)
        assert env.observation_space.contains(obs) and obs["dt"][0] == 0.0
        np.testing.assert_allclose(obs["ages"], ages, atol=0.01)
        assert obs["ages"].max() > env.unwrapped.horizon == 11.0
        obs, _, terminated, truncated, info = env.step(np.zeros(env.action_space.shape, np.float32))
        assert env.observation_space.contains(obs) and (truncated or terminated)  # the first update was past the limit
    env.close()


@pytest.mark.parametrize(
    "world, shift, size",
    [
        ("LiquidRover-v0", "", 64),
        ("LiquidRover-v0", "fog", (24, 40)),
        ("LiquidRover-v0", "dusk", (40, 24)),
        ("LiquidBalanceNav-v0", "", 32),
    ],
)
def test_geoms_left_out_of_the_camera_view_change_no_pixel(world, shift, size):
    """The camera's scene leaves out the geoms wholly outside its view (a cheaper render): every frame along
    expert-driven episodes, turning past trees at the image's edges, is bit for bit the frame of the full scene
    (oracle: MuJoCo's renderer given every geom), and geoms were in fact left out of the scene drawn, also for
    the second world sharing the first one's renderer (as the lanes of a batched evaluation do)."""
    import mujoco

    from sim_envs.world import make_renderer

    envs = [gym.make(world, shift=shift or None, render_size=size).unwrapped for _ in range(2)]
    height, width, _ = envs[0].image_shape
    full = make_renderer(envs[0].model, height, width, fog=envs[0].shift.fog > 0)
    frames, drawn, in_full = [0, 0], [0, 0], [0, 0]
    try:
        for seed in (0, 1, 2):
            for k, env in enumerate(envs):
                env.reset(seed=seed + 10 * k)
                for _ in range(40):
                    _, _, terminated, truncated, _ = env.step(env.expert_action())
                    frame = env._render_camera()
                    drawn[k] += env._renderer.scene.ngeom
                    full.update_scene(env.data, camera="front", scene_option=mujoco.MjvOption())
                    np.testing.assert_array_equal(frame, full.render())
                    in_full[k] += full.scene.ngeom
                    frames[k] += 1
                    if terminated or truncated:
                        break
        assert envs[0]._renderer is envs[1]._renderer  # shared
    finally:
        full.close()
        for env in envs:
            env.close()
    assert min(frames) >= 40 and all(d < 0.8 * f for d, f in zip(drawn, in_full)), (frames, drawn, in_full)


@pytest.mark.parametrize(
    "action, forward, yaw_rate", [([1.0, 0.0], 0.99, 0.0), ([0.0, 1.0], 0.0, 1.32), ([0.0, -0.5], 0.0, -0.70)]
)
def test_the_base_tracks_a_command_as_docs_worlds_says(rover, action, forward, yaw_rate):
    """docs/worlds.md gives the steady-state speeds a command reaches (the servo and casters under-track 1.5 rad/s):
    a policy trained here learned those, so a change of the base's dynamics must show up in the docs."""
    world = rover.unwrapped
    world.reset(seed=3)

    def drive(seconds):
        start = world.data.time
        while world.data.time - start < seconds:
            world.step(np.array(action, np.float32))

    drive(1.0)  # past the wheels' spin-up
    (p0, yaw0), t0 = world.pose(), world.data.time
    drive(1.0)
    (p1, yaw1), t1 = world.pose(), world.data.time
    seconds = t1 - t0
    measured_forward = float(np.dot(p1 - p0, [np.cos(yaw0), np.sin(yaw0)])) / seconds
    measured_yaw_rate = float(np.angle(np.exp(1j * (yaw1 - yaw0)))) / seconds
    assert measured_forward == pytest.approx(forward, abs=0.01)
    assert measured_yaw_rate == pytest.approx(yaw_rate, abs=0.01)
