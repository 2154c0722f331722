"""MuJoCo + gymnasium worlds for training liquid policies and measuring them under distribution shift.

Importing registers ``LiquidRover-v0``, ``LiquidBalance-v0`` and ``LiquidBalanceNav-v0``; each env ends its
episodes itself (``truncated`` at its own time limit), so no TimeLimit wrapper is added.
"""

import importlib
import os

# Headless CPU rendering unless the user chose otherwise (MuJoCo reads this when it first creates a context).
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

import gymnasium

from .shifts import SHIFT_PRESETS, Shift, parse_shift
from .timing import SensorStream, SensorTiming

WORLDS = {
    "LiquidRover-v0": "sim_envs.rover:LiquidRoverEnv",
    "LiquidBalance-v0": "sim_envs.balancer:LiquidBalanceEnv",
    "LiquidBalanceNav-v0": "sim_envs.balance_nav:LiquidBalanceNavEnv",
}
for _id, _entry in WORLDS.items():
    if _id not in gymnasium.registry:
        gymnasium.register(id=_id, entry_point=_entry, max_episode_steps=None, disable_env_checker=False)


def world_class(world: str):
    """The env class of a world id (without building a world); KeyError names the known worlds."""
    if world not in WORLDS:
        raise KeyError(f"unknown world {world!r}; known: {', '.join(WORLDS)}")
    module, name = WORLDS[world].split(":")
    return getattr(importlib.import_module(module), name)


__all__ = ["SHIFT_PRESETS", "WORLDS", "Shift", "parse_shift", "SensorStream", "SensorTiming", "world_class"]
