"""One timing semantics, three implementations: the same irregular message sequence (jitter, drops, late camera
frames, a duplicate, an out-of-order stamp, a silence of every sensor, an IMU silent alone, a clock step back) gives
the same updates through PolicyRunner fed as policy_node feeds it, through a bag streamed by the training/offline
evaluation path, and (what a world can produce of it) through a world's own event loop with PolicyAgent's gap rule.
Where the world differs from the runner, it is by the rule docs/worlds.md states: the worlds do not hold updates
for a stale input."""

import numpy as np
import pytest
from test_ros_fusion import CONFIG as FUSION_CONFIG
from test_ros_fusion import H, W
from test_sim_balance_nav import RecordingNav

import sim_envs.world as world_module
from liquid_control.bags import BagReader, BagWriter, data_spec, stream_updates
from liquid_control.bags import messages as M
from liquid_control.bags.io import typestore
from liquid_control.bags.stream import CaptureBackend, StreamStats, capture_runner
from liquid_control.conventions.stamps import seconds as header_seconds
from liquid_control.policy import validate_config
from liquid_control.policy.agent import DEFAULT_MAX_GAP_S
from liquid_control.runtime import runner as R


def nav_config(lag):
    """test_ros_fusion's camera+IMU balance-nav policy, with the reordering lag under test."""
    return validate_config({**FUSION_CONFIG, "observation": {**FUSION_CONFIG["observation"], "reorder_lag_s": lag}})


def irregular_stamps(seed, spans):
    """Per sensor, the stamps of a jittered stream with drops over its (start, end) spans (balance-nav rates)."""
    rng = np.random.default_rng(seed)
    rates = {"camera": (30, 0.2, 0.2), "imu": (200, 0.05, 0.1), "wheels": (200, 0.05, 0.1)}
    out = {}
    for sensor, (rate, jitter, drop) in rates.items():
        stamps = []
        for t0, t1 in spans[sensor]:
            t = t0 + rng.uniform() / rate
            while t < t1:
                if rng.uniform() >= drop:
                    stamps.append(t)
                t += (1 + jitter * rng.uniform(-1, 1)) / rate
        out[sensor] = stamps
    return out


def reading(sensor, k):
    if sensor == "camera":
        return np.full((H, W, 3), k % 256, np.uint8)
    return np.full(6 if sensor == "imu" else 2, float(k), np.float32)


def node_sequence():
    """(arrival, sensor, stamp, k) as a node receives them: camera frames 25 ms after exposure, a few ms of
    transport jitter (an IMU message now and then overtaken by the next), every sensor silent 2.0-3.4 s, the IMU
    alone 3.6-4.9 s, a camera frame sent twice, an IMU message stamped before the one before it, then the clock
    steps back (a simulation reset: stamps and the receiver's clock restart at 0.3 s)."""
    rng = np.random.default_rng(1)
    spans = {"camera": [(0.5, 2.0), (3.4, 5.5)], "imu": [(0.5, 2.0), (3.4, 3.6), (4.9, 5.5)]}
    spans["wheels"] = spans["camera"]
    events = []
    for sensor, stamps in irregular_stamps(0, spans).items():
        latency = 0.025 if sensor == "camera" else 0.0
        events += [(s + latency + abs(rng.normal(0, 0.002)), sensor, s, k) for k, s in enumerate(stamps)]
    frame = sorted(e for e in events if e[1] == "camera")[5]
    events.append((frame[0] + 0.004, "camera", frame[2], 200))  # the same frame again
    imu = sorted(e for e in events if e[1] == "imu")[50]
    events.append((imu[0] + 0.02, "imu", imu[2] - 0.003, 201))  # stamped before the one before it
    events.sort()
    after = irregular_stamps(2, {s: [(0.3, 1.0)] for s in ("camera", "imu", "wheels")})
    restart = [
        (s + (0.025 if n == "camera" else 0) + 1e-4, n, s, 300 + k) for n, v in after.items() for k, s in enumerate(v)
    ]
    # stamps as a node reads them from header.stamp (whole nanoseconds)
    return [(t, n, header_seconds(M.header(s).stamp), k) for t, n, s, k in events + sorted(restart)]


def updates_of(runner, results):
    """(stamp, dt, reset, event, ages, imu, wheels, frame) of every update of the (runner, submit result)s."""
    out = []
    pending = None
    for steps, result in results:
        if result.status != R.UPDATED:
            pending = result.reset or pending
            continue
        for (obs, dt, _), stamp, reset in zip(steps, result.update_stamps, result.update_resets, strict=True):
            out.append(_update(stamp, dt, reset or pending, obs))
            pending = None
    return out


def _update(stamp, dt, reset, obs):
    return (
        round(stamp, 9),
        round(dt, 9),
        reset,
        int(obs["event"]),
        tuple(np.round(obs["ages"], 6)),
        float(obs["imu"][0]),
        float(obs["wheels"][0]),
        int(obs["image"][0, 0, 0]),
    )


@pytest.mark.parametrize("lag", [0.0, 0.03])
def test_the_node_and_the_bag_path_make_the_same_updates_of_an_irregular_stream(tmp_path, lag):
    config = nav_config(lag)
    spec = data_spec(config)
    sequence = node_sequence()

    runner = R.PolicyRunner(CaptureBackend(config), spec.limits)  # as policy_node: now = its clock at arrival
    results = []
    for arrival, sensor, stamp, k in sequence:
        runner.backend.steps.clear()
        result = runner.submit(sensor, stamp, reading(sensor, k), now=arrival)
        results.append((list(runner.backend.steps), result))
    node = updates_of(runner, results)

    types = typestore().types
    layout = types["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
    with BagWriter(tmp_path / "bag") as bag:  # logged on arrival: the recorder's clock steps back with the node's
        for arrival, sensor, stamp, k in sequence:
            if sensor == "camera":
                msg = M.image_message(reading(sensor, k), stamp)
            elif sensor == "imu":
                msg = M.imu_message(reading(sensor, k), stamp)
            else:
                msg = types[M.JOINT_STATE](
                    header=M.header(stamp), name=list(spec.joint_names), position=np.zeros(2),
                    velocity=reading(sensor, k).astype(float), effort=np.zeros(2),
                )  # fmt: skip
            ns = int(round(arrival * 1e9))
            bag.write(spec.topics[sensor], ns, msg)
            bag.write(spec.command_topic, ns + 1000, types[M.FLOAT64_ARRAY](layout=layout, data=np.ones(2)))
    stats = StreamStats()
    with BagReader(tmp_path / "bag") as reader:
        bag_updates = [
            _update(u.stamp, u.dt, u.reset, u.obs)
            for u in stream_updates(reader, capture_runner(config, spec), spec, stats)
        ]

    assert bag_updates == node
    assert {k: v for k, v in stats.counters.items() if k in runner.counters} == {
        k: v for k, v in runner.counters.items() if not k.startswith("accepted.")
    }
    # the sequence exercised what it was built for
    counters = runner.counters
    assert counters["rejected.duplicate_stamp"] == 1 and counters["rejected.out_of_order"] >= 1
    assert counters["resets.gap"] == counters["resets.stale_input"] == counters["resets.clock_backwards"] == 1
    assert counters["waiting_for_stale.imu"] > 0 and (counters["late.camera"] > 0) == (lag == 0)
    assert [u[2] for u in node if u[2]] == ["gap", "stale_input", "clock_backwards"]


class ScriptedStream:
    """A world sensor's messages at given stamps (in place of SensorStream's draws)."""

    scripts: list = []  # per stream the world makes, in its sensor order

    def __init__(self, timing, rng, t0=0.0):
        self.timing, self.dropped = timing, 0
        self._stamps = list(ScriptedStream.scripts.pop(0)) + [np.inf]

    @property
    def next_stamp(self):
        return self._stamps[0]

    @property
    def next_arrival(self):
        return self._stamps[0] + self.timing.latency

    def pop(self):
        return self._stamps.pop(0)


@pytest.mark.parametrize("lag", [0.0, 0.03])
def test_a_worlds_loop_makes_the_nodes_updates_but_for_stale_inputs(monkeypatch, lag):
    """The world's own loop (with PolicyAgent's gap rule) and PolicyRunner on the world's deliveries: the same
    updates (stamps, dt, event, ages, held readings, gap resets) over a scripted timing with drops, late frames,
    a silence of every sensor and a silence of the IMU alone; but the runner holds the updates while an input is
    stale (its latest stamp over max_gap_s plus its interval from the update's) and resets on its return, where the
    world updates on with the old reading (docs/worlds.md, "Time interface")."""
    spans = {"camera": [(0.05, 1.5), (2.9, 5.0)], "imu": [(0.1, 1.5), (2.9, 3.1), (4.4, 5.0)]}
    spans["wheels"] = [(0.1, 1.5), (2.9, 5.0)]
    script = irregular_stamps(3, spans)
    script["encoders"] = script.pop("wheels")
    monkeypatch.setattr(world_module, "SensorStream", ScriptedStream)
    config = nav_config(lag)
    env = RecordingNav(render_size=H, reorder_lag_s=lag, policy_inputs=("camera", "imu", "wheels"), time_limit=4.9)
    ScriptedStream.scripts = [script[name] for name in env.sensor_names]
    env.deliveries = []
    obs, info = env.reset(seed=0)
    world, frames = [], {}
    while info["stamp"] < 4.8:
        # PolicyAgent's (and BatchedPolicy's) gap rule: a dt over max_gap_s resets the state and integrates 0
        reset = "gap" if world and float(obs["dt"][0]) > DEFAULT_MAX_GAP_S else None
        world.append((info["stamp"], reset, obs, info["stamps"]))
        obs, _, _, _, info = env.step(env.expert_action())  # (a fall does not stop the script)
    env.close()

    runner = R.PolicyRunner(CaptureBackend(config))
    results, cause = [], {}  # cause: the stamp of each update message, by what the update holds of it
    for sensor, stamp, value in env.deliveries:
        if sensor == "camera":  # a frame is told by its index (its pixels are compared below)
            assert len(frames) < 256
            frames[len(frames)] = value
            value = np.full((H, W, 3), len(frames) - 1, np.uint8)
            cause[(0, len(frames) - 1)] = stamp
        elif sensor == "imu":
            cause[(1, float(np.float32(value[0])))] = stamp
        runner.backend.steps.clear()
        result = runner.submit({"encoders": "wheels"}.get(sensor, sensor), stamp, value)
        results.append((list(runner.backend.steps), result))
    node_updates = updates_of(runner, results)
    node = {cause[(u[3], u[7] if u[3] == 0 else u[5])]: u for u in node_updates}  # by the message that caused it
    assert len(node) == len(node_updates)

    world_only, compared, diverged, fresh = [], 0, False, False
    for stamp, reset, o, held in world:
        mine = node.pop(held[env.update_on[int(o["event"])]], None)
        if mine is None:
            world_only.append((stamp, held))
            diverged = fresh = True
            continue
        node_stamp, node_dt, node_reset, event, ages, imu, wheels, frame = mine
        assert imu == o["imu"][0] and wheels == o["wheels"][0]  # the same held readings
        np.testing.assert_array_equal(frames[frame], o["image"])
        if not diverged:  # the same update: its stamp, dt (and the world's gap rule), event, ages
            assert (node_stamp, node_reset, event) == (pytest.approx(stamp, abs=1e-9), reset, o["event"])
            assert ages == pytest.approx(tuple(o["ages"]), abs=1e-5)
            assert node_dt == pytest.approx(0.0 if reset else float(o["dt"][0]), abs=1e-6)
        else:  # after updates only the world made, the runner's dt runs from its own previous update
            if fresh:  # the first: a reset
                assert node_reset in ("gap", "stale_input") and node_dt == 0.0
            diverged = abs(node_stamp - stamp) > 1e-9  # (a late frame: the world's update stamp was a later one's)
        fresh = False
        compared += 1
    assert all(cause_stamp > world[-1][0] for cause_stamp in node)  # every update of the runner is the world's
    assert compared > 400
    # the world updated where an input was over max_gap_s old: after the silence of every sensor, the IMU came back
    # before the camera (the runner waited for a frame), and while the IMU was silent alone
    assert world_only and all(max(s - t for t in held.values()) > DEFAULT_MAX_GAP_S for s, held in world_only)
    assert {round(s) for s, _ in world_only} == {3, 4}
    # the world's gap reset is at its first update after the silence, the runner's at its own first one; the runner
    # also reset when the IMU came back, which the world (and PolicyAgent) do not
    world_resets = [s for s, r, _, _ in world if r]
    node_resets = [(u[0], u[2]) for u in node_updates if u[2]]
    assert len(world_resets) == 1 and 2.9 < world_resets[0] < 3.0
    assert [r for _, r in node_resets] == ["gap", "stale_input"]
    assert world_resets[0] < node_resets[0][0] < 3.0 and 4.4 < node_resets[1][0] < 4.5
