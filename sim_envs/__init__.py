"""MuJoCo + gymnasium worlds for training liquid policies and measuring them under distribution shift.

Importing registers ``LiquidRover-v0`` and ``LiquidBalance-v0``; each env ends its episodes itself
(``truncated`` at its own time limit), so no TimeLimit wrapper is added.
"""

import os

# Headless CPU rendering unless the user chose otherwise (MuJoCo reads this when it first creates a context).
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

import gymnasium

from .shifts import SHIFT_PRESETS, Shift, parse_shift
from .timing import SensorStream, SensorTiming

for _id, _entry in (
    ("LiquidRover-v0", "sim_envs.rover:LiquidRoverEnv"),
    ("LiquidBalance-v0", "sim_envs.balancer:LiquidBalanceEnv"),
):
    if _id not in gymnasium.registry:
        gymnasium.register(id=_id, entry_point=_entry, max_episode_steps=None, disable_env_checker=False)

__all__ = ["SHIFT_PRESETS", "Shift", "parse_shift", "SensorStream", "SensorTiming"]
