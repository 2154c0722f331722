"""Shift presets: parsing (string == dict, round trip, clear errors) and their real effect on the worlds."""

import gymnasium as gym
import mujoco
import numpy as np
import pytest

import sim_envs
from sim_envs.shifts import SHIFT_PRESETS, Shift, parse_shift


def test_string_and_dict_forms_agree():
    a = parse_shift("season=winter,lighting=dusk")
    assert a == parse_shift({"season": "winter", "lighting": "dusk"})
    assert a == Shift(season="winter", lighting="dusk")
    assert parse_shift(None) == parse_shift("") == parse_shift({}) == Shift()
    assert parse_shift(" fog = 0.5 , camera_noise=0.1 ") == Shift(fog=0.5, camera_noise=0.1)


@pytest.mark.parametrize("name", list(SHIFT_PRESETS))
def test_every_preset_round_trips(name):
    shift = SHIFT_PRESETS[name]
    assert parse_shift(shift.to_string()) == shift
    assert parse_shift(name) == shift


def test_dynamics_names_and_composition():
    assert parse_shift("dynamics=heavy") == Shift(mass=1.5)
    assert parse_shift("dynamics=slippery,motor_gain=0.8") == Shift(friction=0.3, motor_gain=0.8)
    assert parse_shift("winter,fog=0.3") == Shift(season="winter", fog=0.3)
    assert parse_shift("winter,dusk") == SHIFT_PRESETS["winter_dusk"]
    assert SHIFT_PRESETS["winter"] + SHIFT_PRESETS["fog"] == Shift(season="winter", fog=0.5)
    assert Shift(season="winter").kinds() == {"visual"}
    assert Shift(dropout=0.1, mass=2.0).kinds() == {"sensor", "dynamics"}


@pytest.mark.parametrize(
    "spec, mentions",
    [
        ("season=spring", "summer, autumn, winter"),
        ("lighting=sunrise", "noon, overcast, dusk, night"),
        ("fog=1.5", "0.0 <= fog <= 1.0"),
        ("camera_noise=-0.1", "camera_noise"),
        ("dropout=abc", "not a number"),
        ("gravity=2", "valid settings"),
        ("wintr", "presets"),
        ("dynamics=bouncy", "heavy"),
        ({"fog": 2}, "fog"),
    ],
)
def test_bad_shifts_name_the_valid_ones(spec, mentions):
    with pytest.raises(ValueError, match=None) as err:
        parse_shift(spec)
    assert mentions in str(err.value)


@pytest.mark.parametrize(
    "spec, mentions",
    [
        ("dusk,night", "shift 'dusk,night': lighting is set twice, by 'dusk' and 'night'"),
        ("fog=0.5,fog=0.2", "fog is set twice, by 'fog=0.5' and 'fog=0.2'"),
        ("fog=0.5,fog=0.5", "fog is set twice"),
        ("fog,fog=0.2", "fog is set twice, by 'fog' and 'fog=0.2'"),
        ("winter_dusk,night", "lighting is set twice, by 'winter_dusk' and 'night'"),
        ("dynamics=heavy,mass=1.2", "mass is set twice, by 'dynamics=heavy' and 'mass=1.2'"),
        ({"dynamics": "heavy", "mass": 1.2}, "mass is set twice"),
        (",", "shift ',': empty item"),
        ("fog=0.5,", "empty item"),
        ("winter,,dusk", "empty item"),
    ],
)
def test_a_setting_given_twice_or_an_empty_item_is_refused(spec, mentions):
    """Order used to pick one of two settings silently ('dusk,night' ran night; ',' ran in_distribution)."""
    with pytest.raises(ValueError) as err:
        parse_shift(spec)
    assert mentions in str(err.value)


@pytest.mark.parametrize(
    "spec, hint",
    [("dsk", "'dsk' (did you mean 'dusk'?)"), ("in_distrbution", "(did you mean 'in_distribution'?)"),
     ("fgo=0.5", "setting 'fgo' (did you mean 'fog'?)"), ("winter,lightning=dusk", "(did you mean 'lighting'?)"),
     ("xyz", "'xyz'; valid settings"), ("camera_rate", "'camera_rate' (a setting: give camera_rate=<0.1..10.0>)"),
     ("lighting", "(a setting: give lighting=noon|overcast|dusk|night)"),
     ("light", "'light' (a value of dynamics: give dynamics=light)"),
     ("noon", "(a value of lighting: give lighting=noon)")],
)  # fmt: skip
def test_a_mistyped_shift_name_is_refused_with_the_name_it_is_close_to(spec, hint):
    """Before: only the whole list of settings and presets, for a shift mistyped by a letter; and a setting's value
    alone ('light', listed beside heavy and slippery, which are presets) was hinted as 'night'."""
    with pytest.raises(ValueError) as err:
        parse_shift(spec)
    assert hint in str(err.value)


def test_presets_that_agree_still_combine():
    assert parse_shift("winter_dusk,winter") == parse_shift("winter,season=winter,dusk") == SHIFT_PRESETS["winter_dusk"]
    assert parse_shift("in_distribution,fog") == Shift(fog=0.5)
    assert parse_shift("  ") == Shift()


def test_env_rejects_bad_shift():
    with pytest.raises(ValueError, match="season"):
        gym.make("LiquidRover-v0", shift="season=monsoon")


@pytest.mark.parametrize("spec", ["fog=0.5", "season=winter", "camera_rate=2", "slow_camera"])
def test_a_world_refuses_a_shift_on_a_sensor_it_lacks(spec):
    # the balancer has no camera: under a camera shift its episodes would be the in-distribution ones, mislabelled
    with pytest.raises(ValueError, match=r"nothing in LiquidBalance-v0, which has no camera"):
        gym.make("LiquidBalance-v0", shift=spec)
    gym.make("LiquidBalance-v0", shift="imu_noise=2").close()  # a shift on its own sensors is taken


def test_shift_for_world_is_the_one_check_every_command_uses():
    from sim_envs.shifts import shift_for_world

    sensors = sim_envs.world_class("LiquidBalance-v0").sensor_names
    assert shift_for_world("imu_noise=2", "LiquidBalance-v0", sensors).imu_noise == 2
    assert shift_for_world("fog=0.5", "LiquidBalance-v0").fog == 0.5  # sensors not given: parsed only
    with pytest.raises(ValueError, match=r"^shift 'fog=0.5': fog changes nothing in LiquidBalance-v0"):
        shift_for_world("fog=0.5", "LiquidBalance-v0", sensors)
    with pytest.raises(ValueError, match=r"^unknown or invalid shift 'bogus': unknown shift preset"):
        shift_for_world("bogus", "LiquidRover-v0")
    with pytest.raises(ValueError, match=r"^shift 'fog=0.5,fog=0.2': fog is set twice"):
        shift_for_world("fog=0.5,fog=0.2", "LiquidRover-v0")


def test_expert_eval_runs_only_presets_that_act_in_the_world():
    from sim_envs.expert_eval import WORLDS, run_episodes, settings_for

    balancer = settings_for("balancer")
    assert "slow_imu" in balancer and "dusk" not in balancer and "slow_camera" not in balancer
    assert settings_for("rover") == list(SHIFT_PRESETS)
    for preset in balancer:  # every one builds (a refused shift would raise here)
        gym.make(WORLDS["balancer"], shift=SHIFT_PRESETS[preset]).close()
    with pytest.raises(ValueError, match="camera_rate"):
        run_episodes(("balancer", "slow_camera", []))


def first_images(shift, seed=7, steps=3):
    env = gym.make("LiquidRover-v0", shift=shift)
    obs, _ = env.reset(seed=seed)
    images = [obs["image"]]
    for _ in range(steps):
        obs, *_ = env.step(np.zeros(2))
        images.append(obs["image"])
    env.close()
    return np.stack(images).astype(np.float64)


def test_presets_change_image_statistics_and_default_is_stable():
    default = first_images(None)
    np.testing.assert_array_equal(default, first_images(None))
    mean_rgb = default.mean(axis=(0, 1, 2))

    shifted = first_images
    winter, night, dusk = shifted("season=winter"), shifted("lighting=night"), shifted("lighting=dusk")
    assert winter.mean() > mean_rgb.mean() + 20  # snow is bright
    assert night.mean() < 0.4 * default.mean()  # night is dark
    assert dusk.mean(axis=(0, 1, 2))[0] / dusk.mean(axis=(0, 1, 2))[2] > mean_rgb[0] / mean_rgb[2] + 0.2  # warmer
    autumn = shifted("season=autumn")
    assert autumn.mean(axis=(0, 1, 2))[0] > mean_rgb[0] + 10  # red/brown foliage and ground

    def saturation(images):
        return (images.max(axis=-1) - images.min(axis=-1)).mean()

    fog = shifted("fog=0.5")
    assert saturation(fog) < 0.8 * saturation(default)  # fog washes out colour
    assert saturation(shifted("fog=0.9")) < 0.9 * saturation(fog)  # denser fog washes out more
    noisy = shifted("camera_noise=0.1")
    residual = (noisy - default) / 255.0
    assert 0.15 < residual.std() < 0.32  # sqrt(0.1) = 0.32 before clipping to [0, 1]
    # Sensor settings do not touch the first image's content (same arena, same rendering).
    np.testing.assert_array_equal(shifted("imu_noise=0.5")[0], default[0])


def test_sensor_shifts_change_timing_and_imu():
    def run(shift):
        env = gym.make("LiquidRover-v0", shift=shift)
        obs, _ = env.reset(seed=3)
        dts, imu = [], []
        for _ in range(40):
            obs, *_ = env.step(np.zeros(2))
            dts.append(obs["dt"][0])
            imu.append(obs["imu"])
        env.close()
        return np.array(dts), np.array(imu)

    dts, imu = run(None)
    slow_dts, _ = run("sensor_rate=0.5")
    assert np.mean(slow_dts) == pytest.approx(2 * np.mean(dts), rel=0.1)
    drop_dts, _ = run("dropout=0.3")
    assert drop_dts.max() > 1.5 / 15  # a lost camera frame doubles an interval
    _, noisy_imu = run("imu_noise=0.5")
    assert noisy_imu[:, :3].std() > 5 * imu[:, :3].std()
    _, biased_imu = run("imu_bias=0.3")
    assert np.abs(biased_imu[:, :3].mean(axis=0)).min() > 0.25


@pytest.mark.parametrize("world", ["LiquidRover-v0", "LiquidBalance-v0"])
def test_dynamics_factors_reach_the_model(world):
    kwargs = {"render_size": 16} if world == "LiquidRover-v0" else {}
    nominal = gym.make(world, **kwargs).unwrapped
    shifted = gym.make(world, shift="mass=1.5,friction=0.5", **kwargs).unwrapped
    robot = "rover" if world == "LiquidRover-v0" else "base"

    def robot_mass(env):
        return env.model.body_subtreemass[mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_BODY, robot)]

    assert robot_mass(shifted) == pytest.approx(1.5 * robot_mass(nominal), rel=1e-3)
    assert shifted.model.geom_friction[:, 0].max() == pytest.approx(0.5 * nominal.model.geom_friction[:, 0].max())


def test_weak_motors_drive_slower():
    def speed(shift):
        env = gym.make("LiquidRover-v0", shift=shift, render_size=16)
        env.reset(seed=0)
        for _ in range(30):
            _, _, _, _, info = env.step(np.array([1.0, 0.0]))
        env.close()
        return np.linalg.norm(info["position"]) / info["sim_time"]

    assert speed("motor_gain=0.5") == pytest.approx(0.5 * speed(None), rel=0.15)


@pytest.mark.parametrize("value", [0.1234567, 0.30000000000000004, 1 / 3, 0.123456789012345, 2.5e-7 + 1e-20])
def test_to_string_round_trips_every_value(value):
    """`{v:g}` kept 6 digits: fog=0.1234567 printed fog=0.123457, which parsed to another shift."""
    shift = Shift(fog=value)
    assert parse_shift(shift.to_string()) == shift
    assert parse_shift(str(shift)).fog == value


def test_to_string_keeps_the_short_forms():
    """The strings of presets and reports do not change: `{v:g}` wherever that round-trips."""
    assert Shift(latency=0.05, fog=0.5, mass=2.0, imu_noise=1e-5).to_string() == (
        "fog=0.5,imu_noise=1e-05,latency=0.05,mass=2"
    )
    assert SHIFT_PRESETS["latency_50ms"].to_string() == "latency=0.05"
    assert parse_shift("fog=0.1234567").to_string() == "fog=0.1234567"


@pytest.mark.parametrize("value", [True, False, np.True_])
def test_a_bool_in_a_dict_is_refused_naming_the_key(value):
    """`{"fog": True}` was fog=1 (float(True)), though Shift(fog=True) is refused."""
    with pytest.raises(ValueError, match="fog=.*bool"):
        parse_shift({"fog": value})
    with pytest.raises(ValueError, match="mass="):
        parse_shift({"mass": value})


def test_sensor_shifts_deliver_their_documented_numbers():
    """The rover standing still (zero action) for 12 simulated seconds under a composed sensor shift: each
    setting gives the numbers docs/worlds.md states (rates times the factors and 1 - dropout, latency added to
    every message, imu_noise added to the nominal std)."""
    env = gym.make("LiquidRover-v0", shift="camera_rate=0.25,dropout=0.2,latency=0.05,imu_noise=0.2", render_size=16)
    world = env.unwrapped
    world.reset(seed=5)
    stamps, latencies, imu = {"camera": [], "imu": []}, [], []
    while world.data.time < 12.0:
        sensor, stamp, reading = world.next_delivery()
        if stamp < 1.0:  # the rover settles on its wheels first
            continue
        stamps[sensor].append(stamp)
        latencies.append(world.data.time - stamp)
        if sensor == "imu":
            imu.append(reading)
    env.close()
    for sensor, nominal in (("camera", 15.0), ("imu", 100.0)):
        factor = 0.25 if sensor == "camera" else 1.0
        s = np.array(stamps[sensor])
        rate = (len(s) - 1) / (s[-1] - s[0])
        assert rate == pytest.approx(nominal * factor * 0.8, rel=0.25 if sensor == "camera" else 0.08), sensor
    np.testing.assert_allclose(latencies, 0.05, atol=1e-9)
    std = np.std(imu, axis=0)
    assert std[:3] == pytest.approx([0.005 + 0.2] * 3, rel=0.1)
    # the stds add (0.22), not the variances (0.201): what the docs say
    assert std[3:].mean() == pytest.approx(0.02 + 0.2, rel=0.04)


def test_lighting_darkens_from_noon_to_overcast_dusk_night():
    brightness = {name: first_images(f"lighting={name}").mean() for name in ("noon", "overcast", "dusk", "night")}
    assert brightness["noon"] > brightness["overcast"] > brightness["dusk"] > brightness["night"], brightness


def _replay(world, shift, actions=None, steps=30, seed=5, physics_dt=None):
    """The world's positions and update stamps after each step, under ``actions`` (the expert's when None), with
    the episode's actions; ``physics_dt`` overrides the physics step (a converged reference)."""
    kwargs = {"render_size": 16} if world != "LiquidBalance-v0" else {}
    env = gym.make(world, shift=shift, **kwargs)
    world_ = env.unwrapped
    if physics_dt is not None:
        world_.physics_dt = world_.model.opt.timestep = physics_dt
    env.reset(seed=seed)
    taken, qpos, stamps = [], [], []
    for i in range(steps):
        action = world_.expert_action() if actions is None else actions[i]
        *_, info = env.step(action)
        taken.append(action)
        qpos.append(world_.data.qpos.copy())
        stamps.append(info["stamp"])
    env.close()
    return taken, np.array(qpos), stamps


@pytest.mark.parametrize(
    "world,shifts",
    [
        (
            "LiquidRover-v0",
            ["autumn", "winter", "overcast", "night", "winter_dusk", "dense_fog", "camera_noise_0.3", "imu_noise"],
        ),
        ("LiquidBalance-v0", ["imu_noise", "imu_bias"]),
    ],
)
def test_visual_noise_and_bias_shifts_leave_the_physics_bit_for_bit(world, shifts):
    """The same actions give the same trajectory, bit for bit, under every shift that changes only what a sensor
    reports (docs/worlds.md): a visual or noise shift's row differs from in_distribution by the readings alone."""
    actions, qpos, stamps = _replay(world, None)
    for shift in shifts + [parse_shift("winter") + parse_shift("fog")] * (world == "LiquidRover-v0"):
        _, shifted, shifted_stamps = _replay(world, shift, actions)
        assert shifted_stamps == stamps, shift
        np.testing.assert_array_equal(shifted, qpos, err_msg=str(shift))


def test_a_timing_shift_also_moves_the_rover_through_its_integration_grid():
    """What docs/worlds.md says of the timing shifts: physics steps end at every sensor tick, so a shift of the IMU's
    timing alone (the camera's updates at the same stamps, the same actions) changes the rover's trajectory
    (0.79 m apart after 4 s, seed 5), nearly all of it the 5 ms step's integration error (10 mm at 0.5 ms)."""
    actions, qpos, stamps = _replay("LiquidRover-v0", None, steps=60)
    _, fast_imu, fast_stamps = _replay("LiquidRover-v0", "fast_imu", actions, steps=60)
    assert fast_stamps == stamps  # the camera (the update sensor) ticks as before
    assert np.linalg.norm(fast_imu[:, :2] - qpos[:, :2], axis=1).max() > 0.3
    _, fine, _ = _replay("LiquidRover-v0", None, actions, steps=60, physics_dt=0.0005)
    _, fine_fast_imu, _ = _replay("LiquidRover-v0", "fast_imu", actions, steps=60, physics_dt=0.0005)
    assert np.linalg.norm(fine_fast_imu[:, :2] - fine[:, :2], axis=1).max() < 0.05


@pytest.mark.parametrize("world", ["LiquidRover-v0", "LiquidBalance-v0"])
def test_every_preset_is_one_episode_per_seed(world):
    """Two runs of a preset from one seed give the same frames, readings and stamps (every random part of a
    shift is drawn from the episode's seeded generators)."""
    sensors = sim_envs.world_class(world).sensor_names
    # closed at the end, not after each run: the worlds of one MJCF share one renderer (shared_renderer) instead of
    # making a GL context (~0.3 s) per run; each world still draws its own state (test_eval_batched checks that)
    envs = []

    def run(shift):
        env = gym.make(world, shift=shift, **({"render_size": 16} if "camera" in sensors else {}))
        envs.append(env)
        obs, _ = env.reset(seed=11)
        seen = [obs]
        for _ in range(8):
            obs, _, _, _, info = env.step(env.unwrapped.expert_action())
            seen.append({**obs, "stamp": info["stamp"]})
        return seen

    try:
        for name, shift in SHIFT_PRESETS.items():
            if shift.idle_problem(world, sensors):
                continue
            for first, second in zip(run(shift), run(shift)):
                for key in first:
                    np.testing.assert_array_equal(first[key], second[key], err_msg=f"{name} {key}")
    finally:
        for env in envs:
            env.close()


def test_expert_eval_prints_the_finished_settings_when_interrupted(tmp_path):
    """Ctrl-C an hour into ``python -m sim_envs.expert_eval``: before, nothing was printed (the tables came only at
    the end) and the pool's workers printed KeyboardInterrupt tracebacks; now the finished settings' rows, exit 130."""
    import os
    import re
    import signal
    import subprocess
    import sys
    import threading

    from sim_envs.expert_eval import settings_for

    proc = subprocess.Popen(
        [sys.executable, "-m", "sim_envs.expert_eval", "--worlds", "balancer", "--episodes", "2", "--chunk", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, as a terminal's foreground job
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a background job's SIGINT is ignored
    )
    watchdog = threading.Timer(300, os.killpg, (proc.pid, signal.SIGKILL))  # a hang fails instead of waiting
    watchdog.start()
    progress = b""
    try:  # tqdm's "4/28" or later (it skips counts within 0.1 s): the first two settings have finished
        while not any(int(done) >= 4 for done in re.findall(rb"(\d+)/28", progress)):
            chunk = os.read(proc.stderr.fileno(), 256)
            assert chunk, progress.decode(errors="replace")
            progress += chunk
    finally:
        watchdog.cancel()
    os.killpg(proc.pid, signal.SIGINT)
    out, err = (text.decode() for text in proc.communicate(timeout=120))
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted; the tables hold the episodes that finished" in err
    assert "### LiquidBalance-v0 expert, interrupted:" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith(("| setting", "| ---"))]
    assert 2 <= len(rows) < len(settings_for("balancer")), out
    assert rows[0].startswith("| in_distribution | - | 2 | 100% |"), out
