"""A policy's world makes its first updates where the policy node's PolicyRunner makes them from the same messages.

Before: a world decided what its first update waited for from its own sensors (LiquidBalanceNav-v0: all of
them; LiquidBalance-v0 and LiquidRover-v0: none but the update sensor), while the runner waits for exactly the
policy's inputs. The shipped balancer's world updated at the first IMU message with wheels [0, 0] before any
encoder message in about half the episodes (the node waits for the encoders), a rover policy reading the IMU
in about one in ten, and the balance-nav IMU-only ablation's world waited for a camera frame that policy never
reads, skipping the IMU updates the node makes. Now ``env_kwargs`` passes the policy's inputs
(``policy_inputs``) and the world waits for the sensors delivering them.
"""

import gymnasium
import numpy as np
import pytest

import sim_envs  # noqa: F401  (registers the worlds)
from liquid_control.evaluation.plan import _differing_world_setting
from liquid_control.paths import policies_dir
from liquid_control.policy import env_kwargs, load_config, load_policy, validate_config
from liquid_control.policy.config import read_config_yaml
from liquid_control.runtime.backends import ObservationSpec
from liquid_control.runtime.runner import PolicyRunner, RunnerLimits

CONFIGS = policies_dir() / "configs"
# the world's sensor -> the policy's input it delivers
INPUT_OF_SENSOR = {"camera": "camera", "imu": "imu", "encoders": "wheels"}


class Recorder:
    """A backend that records the dt of each update and returns a zero action."""

    def __init__(self, config):
        self.config = config
        self.spec = ObservationSpec.from_config(config)
        self.dts = []

    def initial_state(self):
        return np.zeros(1, np.float32)

    def step(self, obs, state, dt, encode=None):
        self.dts.append(float(dt))
        return np.zeros(self.spec.action_size), state


def first_updates(config, seed, steps=2, **extra):
    """(world's, runner's) first ``1 + steps`` updates as (stamp, dt), the runner fed every message the world
    delivered on the way (those of the policy's inputs, at their delivery times) as policy_node is, and the
    messages (sensor, stamp, reading) the world delivered up to its first update."""
    env = gymnasium.make(config["world"], **env_kwargs(config), **extra).unwrapped
    try:
        obs, info = env.reset(seed=seed)
        world = [(info["stamp"], float(obs["dt"][0]))]
        deliveries = list(env.reset_deliveries)
        delivered_before = env.next_delivery
        for _ in range(steps):

            def logged(until=None):
                d = delivered_before(until=until)
                if d is not None:
                    deliveries.append(d)
                return d

            env.next_delivery = logged
            obs, _, terminated, truncated, info = env.step(np.zeros(env.action_space.shape, np.float32))
            del env.next_delivery
            world.append((info["stamp"], float(obs["dt"][0])))
            assert not (terminated or truncated)
        backend = Recorder(config)
        runner = PolicyRunner(backend, RunnerLimits(max_gap_s=1.0))
        if "command" in backend.spec.sensors:  # the balancer's setpoint: the world's own, there from the start
            runner.submit("command", 0.0, np.zeros(2), now=0.0)
        stamps = []
        for sensor, stamp, reading in deliveries:
            name = INPUT_OF_SENSOR[sensor]
            if name not in backend.spec.sensors:  # the policy does not subscribe to it
                continue
            stamps.extend(runner.submit(name, stamp, reading, now=stamp + env.timings[sensor].latency).update_stamps)
        return world, list(zip(stamps, backend.dts))[: len(world)], list(env.reset_deliveries)
    finally:
        env.close()


def assert_same(world, runner):
    assert len(runner) == len(world)
    for (ws, wdt), (rs, rdt) in zip(world, runner):
        assert ws == pytest.approx(rs, abs=1e-9) and wdt == pytest.approx(rdt, abs=1e-6), (world, runner)


def test_the_shipped_balancers_world_waits_for_the_encoders_as_the_node_does():
    """Before: 98 of 200 episodes updated first at the first IMU message, wheels [0, 0], before any encoder one."""
    config = load_policy(policies_dir() / "cfc_balancer.pt").config
    assert {"imu", "wheels"} <= set(config["observation"]["vectors"])
    for seed in range(40):
        world, runner, delivered = first_updates(config, seed)
        sensors = {sensor for sensor, _, _ in delivered}
        assert {"imu", "encoders"} <= sensors, f"seed {seed}: first update before an encoder message"
        assert_same(world, runner)


def test_the_imu_only_ablations_world_updates_on_the_first_imu_message():
    """Before: the world waited for a camera frame the policy never reads (every episode), skipping IMU updates."""
    config = load_config(CONFIGS / "cfc_balance_nav_imu_only.yaml")
    assert config["observation"]["image"] is None
    for seed in range(8):
        world, runner, delivered = first_updates(config, seed)
        seen, first = set(), None
        for sensor, stamp, _ in delivered:  # the first IMU message once the IMU and the encoders have delivered
            seen.add(sensor)
            if first is None and sensor == "imu" and {"imu", "encoders"} <= seen:
                first = stamp
        assert delivered[-1][0] == "imu" and world[0][0] == first, f"seed {seed}"
        assert_same(world, runner)


def test_a_rover_policy_reading_the_imu_waits_for_it():
    """Before: 7 of 60 episodes updated first at a camera frame before any IMU message."""
    raw = read_config_yaml(CONFIGS / "cfc_rover.yaml")
    raw["observation"]["vectors"] = {"imu": 6}
    config = validate_config(raw)
    for seed in range(60):
        world, runner, delivered = first_updates(config, seed, steps=1)
        assert {"camera", "imu"} <= {sensor for sensor, _, _ in delivered}, f"seed {seed}"
        assert_same(world, runner)


def test_a_world_made_without_a_policy_keeps_its_own_first_update():
    """The expert's worlds: the balancer and the rover start at their first update message, balance-nav waits
    for every sensor; a policy's inputs name the sensors (the balancer's command is none: there from the start)."""
    for world, default, inputs, waits in [
        ("LiquidBalance-v0", (), ("imu", "wheels", "command"), ("imu", "encoders")),
        ("LiquidRover-v0", (), ("camera",), ("camera",)),
        ("LiquidBalanceNav-v0", ("camera", "imu", "encoders"), ("imu", "wheels"), ("imu", "encoders")),
    ]:
        extra = {"render_size": 16} if world != "LiquidBalance-v0" else {}
        env = gymnasium.make(world, **extra).unwrapped
        assert env.first_update_sensors == default
        env.close()
        env = gymnasium.make(world, policy_inputs=list(inputs), **extra).unwrapped
        assert env.first_update_sensors == waits
        env.close()
    with pytest.raises(ValueError, match="'camera' not an input of this world"):
        gymnasium.make("LiquidBalance-v0", policy_inputs=("imu", "camera"))


def test_checkpoints_reading_other_inputs_are_named_by_their_config_setting():
    a = {"update_on": ["imu"], "reorder_lag_s": 0.0, "policy_inputs": ["imu", "wheels"]}
    b = {**a, "policy_inputs": ["imu", "command"]}
    assert _differing_world_setting(a, b) == (
        "the policy's inputs (observation.image and observation.vectors) (['imu', 'wheels'] vs ['imu', 'command'])"
    )
