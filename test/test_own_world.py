"""A researcher's world, shift preset and expert from outside the package (docs/worlds.md, "A world of your own"):
the page's example module, named ``module:Id`` in a config, trains with ``liquid-control train`` and is evaluated,
expert and preset included, by ``liquid-control eval``; an unknown world says how to register one."""

import re
import sys
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import yaml

from liquid_control.cli import main
from liquid_control.evaluation.plan import EvaluationSetupError, build_plan
from liquid_control.policy.config import PolicyConfigError
from liquid_control.training.episodes import world_class

ROOT = Path(__file__).resolve().parents[1]


def _example_blocks():
    text = (ROOT / "docs" / "worlds.md").read_text()
    start = text.index("## A world of your own")
    part = text[start : text.index("\n## ", start + 1)]
    (code,) = re.findall(r"^```python\n(.*?)^```", part, flags=re.S | re.M)
    (config,) = re.findall(r"^```yaml\n(.*?)^```", part, flags=re.S | re.M)
    return code, yaml.safe_load(config)


@pytest.fixture
def puck_world(tmp_path, monkeypatch):
    """The documented module on the path, not yet imported; afterwards its id, preset and module are gone."""
    import sim_envs.shifts

    code, config = _example_blocks()
    (tmp_path / "puck_world.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield config
    gymnasium.registry.pop("PuckWorld-v0", None)
    sim_envs.shifts.SHIFT_PRESETS.pop("rain", None)
    sys.modules.pop("puck_world", None)


def test_the_documented_world_of_ones_own_trains_and_evaluates_with_its_preset_and_expert(puck_world, tmp_path):
    assert puck_world["world"] == "puck_world:PuckWorld-v0" and "PuckWorld-v0" not in gymnasium.registry
    puck_world["training"] = {
        "demonstrations": 3,
        "dagger_rounds": 1,
        "dagger_episodes": 2,
        "beta": [0.5],
        "epochs_first": 1,
        "epochs_per_round": 1,
        "batch_size": 4,
        "sequence_length": 8,
        "eval_episodes": 1,
    }
    config = tmp_path / "puck.yaml"
    config.write_text(yaml.safe_dump(puck_world))
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(run), "--no-progress"]) == 0
    demonstrations = sorted((run / "data").rglob("*.npz"))
    assert demonstrations  # the world's expert drove round 0

    out = tmp_path / "report"
    argv = ["eval", "--policy", "expert", "--policy", f"puck={run / 'policy.pt'}", "--episodes", "1"]
    argv += ["--shift", "in_distribution", "--shift", "rain", "--out", str(out), "--backend", "serial"]
    assert main(argv + ["--no-progress", "--no-example", "--no-saliency"]) == 0
    report = (out / "report.md").read_text()
    assert re.search(r"^\| rain \| 100% .*\|", report, flags=re.M), report  # the expert's row under the preset


def test_eval_with_world_module_id_reads_the_modules_shift_presets(puck_world):
    plan = build_plan(["expert"], ["rain"], 1, world="puck_world:PuckWorld-v0")
    assert plan.shifts == ["rain"] and plan.policies[0].world == "puck_world:PuckWorld-v0"
    from liquid_control.evaluation.report import action_names

    # the plots call the puck's actions by its own names (before: the twist kind's "linear", "angular")
    assert action_names("puck_world:PuckWorld-v0") == ("force x", "force y")
    assert action_names("LiquidRover-v0") == ("linear", "angular")


def test_an_unknown_world_names_the_known_ones_and_how_to_register_one(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "empty_world_module.py").write_text("")
    base = {"observation": {"vectors": {"pos": 2}}}
    with pytest.raises(PolicyConfigError) as caught:
        world_class({**base, "world": "PuckWorld-v0"})
    message = str(caught.value)
    assert message.startswith("world: unknown world 'PuckWorld-v0'; known: LiquidRover-v0, LiquidBalance-v0")
    assert "gymnasium.register(id='MyWorld-v0', ...), named as 'module:MyWorld-v0'" in message
    with pytest.raises(PolicyConfigError, match="module 'empty_world_module' registers no 'PuckWorld-v0'"):
        world_class({**base, "world": "empty_world_module:PuckWorld-v0"})
    with pytest.raises(EvaluationSetupError, match="cannot import module 'no_such_module_here'"):
        build_plan(["expert"], ["in_distribution"], 1, world="no_such_module_here:PuckWorld-v0")
    with pytest.raises(PolicyConfigError) as caught:  # before: "world: world 'no_such...': cannot import module"
        world_class({**base, "world": "no_such_module_here:PuckWorld-v0"})
    assert str(caught.value).startswith("world: cannot import module 'no_such_module_here' of 'no_such_module_here:")


def test_eval_refuses_a_shift_on_a_sensor_the_world_of_ones_own_lacks_before_any_episode(puck_world):
    with pytest.raises(
        EvaluationSetupError, match="fog changes nothing in puck_world:PuckWorld-v0, which has no camera"
    ):
        build_plan(["expert"], ["in_distribution", "fog"], 1, world="puck_world:PuckWorld-v0")


def test_the_documented_world_of_ones_own_renders_the_scene_in_rgb_array_mode(puck_world):
    """A probe extending the package: PuckWorld (no camera) took render_mode="rgb_array" and its render() raised
    gymnasium's NotImplementedError with no message. It renders the whole scene from MuJoCo's free camera; a copy
    (pickle) renders the same frame, and close() twice is harmless."""
    import pickle

    import sim_envs

    env = gymnasium.make("puck_world:PuckWorld-v0", render_mode="rgb_array")
    try:
        env.reset(seed=1)
        env.step(env.action_space.sample())
        frame = env.render()
        assert frame.shape == (240, 320, 3) and frame.dtype == np.uint8 and frame.std() > 0  # the puck on a floor
        copy = pickle.loads(pickle.dumps(env.unwrapped))
        np.testing.assert_array_equal(copy.render(), frame)
        copy.close()
    finally:
        env.close()
        env.close()
    world = sim_envs.world_class("puck_world:PuckWorld-v0")()
    with pytest.warns(UserWarning, match="render\\(\\) returns None without a render mode"):
        assert world.render() is None


def test_sim_envs_world_class_takes_a_world_of_ones_own(puck_world):
    """sim_envs.world_class (docs/ARCHITECTURE.md, 'Worlds': the class without building a world) knew the package's
    three ids only: 'unknown world' for the module:Id that train and eval take, beside which training and eval's
    shift check each looked the class up on their own."""
    import sim_envs

    world = sim_envs.world_class("puck_world:PuckWorld-v0")
    assert world.__name__ == "PuckWorld" and world.sensor_names == ("pos",)
    assert sim_envs.world_class("LiquidRover-v0").__name__ == "LiquidRoverEnv"
    with pytest.raises(KeyError, match="unknown world 'NoSuchWorld-v0'; known: LiquidRover-v0"):
        sim_envs.world_class("NoSuchWorld-v0")


CAMERA_WORLD = '''
import gymnasium
import numpy as np

from sim_envs.shifts import parse_shift
from sim_envs.timing import SensorTiming
from sim_envs.world import FrontCamera, TimedMujocoWorld, camera_image_shape

CAMERA_FOVY_DEG = 60
XML = """<mujoco><visual><rgba fog="0.8 0.8 0.8 1"/></visual><worldbody><light pos="0 0 3" dir="0 0 -1"/>
<geom type="plane" size="20 20 0.1" rgba="0.3 0.6 0.3 1" contype="0" conaffinity="0"/>
<geom type="box" pos="6 0 0.5" size="0.3 3 0.5" rgba="1 0 0 1" contype="0" conaffinity="0"/>
<body name="puck" pos="0 0 0.05"><joint name="x" type="slide" axis="1 0 0"/><joint name="y" type="slide" axis="0 1 0"/>
<geom type="sphere" size="0.08" mass="1"/><camera name="front" pos="0 0 0.3" xyaxes="0 -1 0 0 0 1" fovy="60"/>
</body></worldbody><actuator><motor joint="x"/><motor joint="y"/></actuator></mujoco>"""


class PuckCam(FrontCamera, TimedMujocoWorld):
    sensor_names = ("camera",)
    observation_keys = ("image",)
    default_update_on = ("camera",)
    input_sensors = {"camera": "camera"}
    action_kind = "twist"
    default_time_limit = 2.0
    chase_view = ("puck", 2.0, -30.0)

    def __init__(self, shift=None, time_limit=None, render_mode=None, update_on=None, reorder_lag_s=0.0,
                 policy_inputs=None, render_size=16):
        self.image_shape = camera_image_shape(render_size)
        timing = {"camera": SensorTiming(rate_hz=10.0, jitter=0.2)}
        super().__init__(XML, timing, parse_shift(shift), time_limit, render_mode, update_on, reorder_lag_s,
                         policy_inputs)
        self.observation_space = gymnasium.spaces.Dict(
            {"image": gymnasium.spaces.Box(0, 255, self.image_shape, np.uint8), **self._time_spaces()})
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.frames_rendered = 0
        self._init_camera()

    def _reset_world(self, rng):
        self.frames_rendered = 0

    def _apply_action(self, action):
        self.data.ctrl[:] = action

    def _measure(self, sensor):
        return self._camera_measurement(self._noise_rng)

    def _outcome(self):
        return 0.0, False, {"success": False, "collision": False}

    def _observation(self):
        return {"image": self._reading("camera", self.image_shape).astype(np.uint8, copy=False),
                **self._time_observation()}


gymnasium.register(id="PuckCam-v0", entry_point="puck_cam_world:PuckCam")
'''


def test_a_camera_world_of_ones_own_gets_the_fog_shift_and_records_its_field_of_view(tmp_path, monkeypatch):
    """docs/worlds.md, 'A camera'. Before: fog=0.05, 0.5 and 1 rendered the same frame in such a world (the fog's
    distance came from the package worlds' own MJCF, and worlds of one MJCF shared one GL context whatever their
    fog), and its camera's field of view was not known to training (None in the policy's record)."""
    import numpy as np

    from liquid_control.conventions.camera_info import world_camera_fovy_deg

    (tmp_path / "puck_cam_world.py").write_text(CAMERA_WORLD)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        from sim_envs.shifts import fog_end_m

        frames = {}
        for fog in (0.0, 0.3, 0.9):  # one process: the worlds of one MJCF share GL contexts only at one fog
            env = gymnasium.make("puck_cam_world:PuckCam-v0", shift=f"fog={fog}" if fog else None)
            frames[fog] = env.reset(seed=0)[0]["image"].astype(float)
            if fog:  # in metres, whatever the model's extent (MuJoCo scales vis.map's fog by it: 11 m here)
                assert env.unwrapped._renderer._mjr_context.fogEnd == pytest.approx(fog_end_m(fog), rel=1e-6)
            env.close()
        red = {fog: frame[..., 0].mean() - frame[..., 1].mean() for fog, frame in frames.items()}
        assert red[0.0] > red[0.3] > red[0.9] + 1.0, red  # the red wall 6 m ahead fades into grey fog
        assert world_camera_fovy_deg("puck_cam_world:PuckCam-v0") == 60.0
        assert np.isfinite(list(red.values())).all()
    finally:
        gymnasium.registry.pop("PuckCam-v0", None)
        sys.modules.pop("puck_cam_world", None)
