"""The worlds used directly through gymnasium, as a researcher would: reset options, the order of calls, shifts
built from numpy numbers, and the command lines of the benchmarks and the contact sheet."""

import argparse
import importlib.util
import os
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import sim_envs
from sim_envs import contact_sheet
from sim_envs.shifts import Shift, parse_shift

ROOT = Path(__file__).resolve().parents[1]
# one setting of every kind that acts in the world (visual, sensor timing and noise, dynamics)
COMPOSITE_SHIFTS = {
    "LiquidRover-v0": "winter,dusk,fog=0.3,camera_noise=0.1,imu_noise=0.2,jitter=2,dropout=0.2,latency=0.05,heavy",
    "LiquidBalance-v0": "imu_noise=0.2,imu_bias=0.1,imu_rate=0.5,jitter=2,dropout=0.2,latency=0.01,slippery",
    "LiquidBalanceNav-v0": "autumn,night,camera_noise=0.1,camera_rate=0.5,imu_jitter=2,dropout=0.1,weak_motors",
}


@pytest.mark.parametrize("world", sorted(sim_envs.WORLDS))
def test_check_env_passes_under_a_shift_of_every_kind(world):
    env = gym.make(world, shift=COMPOSITE_SHIFTS[world], render_mode="rgb_array")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the checker's warnings too
        check_env(env.unwrapped, skip_render_check=False)
    env.close()
    env.close()


@pytest.mark.parametrize("world", sorted(sim_envs.WORLDS))
def test_reset_refuses_options_it_would_ignore(world):
    """Before: any options were ignored, so options={"shift": "winter"} ran the in-distribution episode."""
    env = gym.make(world)
    with pytest.raises(ValueError, match=rf"{world}\.reset takes no options, got \{{'shift': 'winter'\}}.*make"):
        env.reset(seed=0, options={"shift": "winter"})
    first, _ = env.reset(seed=0, options=None)
    again, _ = env.reset(seed=0, options={})  # what a vector env passes on
    assert all(np.array_equal(first[key], again[key]) for key in first)


@pytest.mark.parametrize("world", sorted(sim_envs.WORLDS))
def test_step_before_reset_says_to_reset(world):
    """Before: the bare env (gymnasium.make's OrderEnforcing is not there) raised AttributeError: '_updates'."""
    env = gym.make(world).unwrapped
    with pytest.raises(RuntimeError, match=rf"{world}: call reset\(\) before step\(\)"):
        env.step(np.zeros(2))
    with pytest.raises(RuntimeError, match=rf"{world}: call reset\(\) before next_delivery\(\)"):
        env.next_delivery()
    env.reset(seed=0)
    assert env.step(np.zeros(2))[4]["stamp"] > 0


def test_a_shift_takes_numpy_numbers_and_names_what_is_no_number():
    """Before: Shift(fog=np.float32(0.5)) was refused as 'out of range' (parse_shift's dict took it), a string too."""
    assert Shift(fog=np.float32(0.5), mass=np.int64(2)) == parse_shift({"fog": 0.5, "mass": 2})
    assert Shift(mass=np.int64(2)).to_string() == "mass=2"
    with pytest.raises(ValueError, match=r"fog='0.5' is not a number; valid: 0.0 <= fog <= 1.0"):
        Shift(fog="0.5")
    with pytest.raises(ValueError, match=r"fog=np.True_ is not a number"):
        Shift(fog=np.bool_(True))
    with pytest.raises(ValueError, match=r"fog=np.float32\(1.5\) is out of range; valid: 0.0 <= fog <= 1.0"):
        Shift(fog=np.float32(1.5))
    with pytest.raises(ValueError, match=r"fog=nan is out of range"):
        Shift(fog=float("nan"))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"reorder_lag_s": "0.1"}, "reorder_lag_s must be a finite number of seconds >= 0, got '0.1'"),
        ({"reorder_lag_s": True}, "reorder_lag_s must be a finite number of seconds >= 0, got True"),
        ({"reorder_lag_s": -0.01}, "reorder_lag_s must be a finite number of seconds >= 0, got -0.01"),
        ({"update_on": 5}, "update_on must be a name or a list of names, got 5"),
        ({"update_on": ["imu", 5]}, r"update_on must be a name or a list of names, got \['imu', 5\]"),
        ({"policy_inputs": 5}, "policy_inputs must be a name or a list of names, got 5"),
    ],
)
def test_a_keyword_of_the_wrong_type_is_named(kwargs, message):
    """Before: TypeErrors that named no keyword ("'>=' not supported between instances of 'str' and 'float'",
    "'int' object is not iterable"); a negative lag was refused as a 'reorder lag'."""
    with pytest.raises(ValueError, match=message):
        gym.make("LiquidBalance-v0", **kwargs)
    assert gym.make("LiquidBalance-v0", update_on=("imu",), policy_inputs=["imu"]).unwrapped.update_on == ("imu",)


@pytest.mark.parametrize("action", [["a", "b"], [{}, 0.0], [[0.0], [0.0, 1.0]]])
def test_an_action_that_is_no_numbers_is_named(action):
    """Before: numpy's message alone ("could not convert string to float: 'a'"), naming no action."""
    env = gym.make("LiquidBalance-v0").unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action must be \(2,\) numbers, got "):
        env.step(action)


FORK_AFTER_A_FRAME = """
import gymnasium, sim_envs
world = gymnasium.make("LiquidRover-v0")
world.reset(seed=0)  # the parent's first GL context and frame
world.close()
vector = gymnasium.make_vec("LiquidRover-v0", num_envs=2, vectorization_mode="async")  # forks on Linux
vector.reset_async(seed=[1, 2])
try:
    observations, _ = vector.reset_wait(timeout=120)
except Exception as exc:
    vector.close(terminate=True)
    raise SystemExit(f"no first frame in the forked workers: {type(exc).__name__}")
print("images", observations["image"].shape, int(observations["image"].max() > 0))
vector.close()
"""


def test_worlds_forked_after_a_frame_render():
    """Before: llvmpipe's render thread (LP_NUM_THREADS=1) is not copied by fork, so an AsyncVectorEnv made after
    the process had rendered once (check_env, a look at the world) waited forever for its workers' first frame."""
    env = {k: v for k, v in os.environ.items() if k != "LP_NUM_THREADS"}
    done = subprocess.run(
        [sys.executable, "-c", FORK_AFTER_A_FRAME], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "images (2, 64, 64, 3) 1" in done.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--size", "0"], "--size must be between 8 and 1024 pixels, got 0"),
        (["--steps", "-1"], "--steps must be >= 0, got -1"),
        (["--width", "4"], "--width must be 0 (square) or between 8 and 1024 pixels, got 4"),
    ],
)
def test_contact_sheet_refuses_bad_sizes_before_rendering(args, message, tmp_path, capsys):
    """Before: --size 0 ended in the world's ValueError traceback, --steps -1 drew the reset frame silently."""
    with pytest.raises(SystemExit) as stop:
        contact_sheet.main(["--out", str(tmp_path / "sheet.png"), *args])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "sheet.png").exists()


@pytest.mark.parametrize(
    "out, message",
    [
        ("a_file/sheet.png", "a_file exists and is not a folder"),
        (".", "is a folder; give a file name such as"),
        ("sheet.txt", "matplotlib writes no '.txt' pictures; end the name in one of"),
    ],
)
def test_contact_sheet_refuses_an_unwritable_out_before_rendering(out, message, tmp_path, monkeypatch, capsys):
    """Before: the 20 views were rendered, then os.makedirs or savefig ended in a FileExistsError or
    IsADirectoryError traceback, or matplotlib's ValueError for a suffix it cannot write."""
    (tmp_path / "a_file").write_text("")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(contact_sheet, "rover_view", lambda *a: pytest.fail("rendered before checking --out"))
    with pytest.raises(SystemExit) as stop:
        contact_sheet.main(["--out", out])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"--out {out}: " in err and message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def _defaults(script: str, monkeypatch) -> argparse.Namespace:
    """The options ``script``'s main parses from no arguments (it stops right there)."""
    spec = importlib.util.spec_from_file_location(Path(script).stem, ROOT / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    parsed = []

    def parse_and_stop(parser, args=None, namespace=None):
        parsed.append(argparse.ArgumentParser.parse_known_args(parser, args, namespace)[0])
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_and_stop)
    with pytest.raises(SystemExit):
        module.main([])
    return parsed[0]


@pytest.mark.parametrize(
    "script, option",
    [("benchmarks/bench_training.py", "config"), ("scripts/seed_factors.py", "reference")],
)
def test_repository_inputs_are_found_from_any_folder(script, option, monkeypatch, tmp_path):
    """Before: cwd-relative defaults; from another folder bench_training's recipe was 'not found' and
    seed_factors skipped its check against the headline run's policies without a word ('skipped if absent')."""
    monkeypatch.chdir(tmp_path)
    assert Path(getattr(_defaults(script, monkeypatch), option)).exists()


def test_contact_sheet_renders_a_camera_that_is_not_square(tmp_path, monkeypatch):
    """--size H --width W shows the shifts at a robot camera's aspect (before: --size only, square)."""
    seen = []

    def view(shift, seed, steps, size):
        seen.append(size)
        return np.zeros((8, 12, 3), np.uint8)

    monkeypatch.setattr(contact_sheet, "rover_view", view)
    contact_sheet.main(["--out", str(tmp_path / "sheet.png"), "--size", "8", "--width", "12", "--steps", "0"])
    assert set(seen) == {(8, 12)} and (tmp_path / "sheet.png").stat().st_size > 0
    seen.clear()
    contact_sheet.main(["--out", str(tmp_path / "square.png"), "--size", "8", "--steps", "0"])
    assert set(seen) == {8}
