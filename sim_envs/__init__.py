"""MuJoCo + gymnasium worlds for training liquid policies and measuring them under distribution shift.

Importing registers ``LiquidRover-v0``, ``LiquidBalance-v0`` and ``LiquidBalanceNav-v0``; each env ends its
episodes itself (``truncated`` at its own time limit), so no TimeLimit wrapper is added. Without gymnasium (a robot
that only runs the nodes) the package still imports, for its plain numbers (``cameras``, ``experts``' margins, shift
presets, sensor timing); ``world_spec``/``world_class`` then raise ModuleNotFoundError naming gymnasium.
"""

import importlib
import os

# Headless CPU rendering unless the user chose otherwise (MuJoCo reads this when it first creates a context).
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

from .shifts import SHIFT_PRESETS, Shift, parse_shift
from .timing import SensorStream, SensorTiming

try:
    import gymnasium
except ModuleNotFoundError as _missing:
    if _missing.name != "gymnasium":
        raise
    # A robot that only runs the nodes: no world to build, but the worlds' plain numbers (cameras, the experts'
    # margins, shift presets, sensor timing) are read without the simulator; world_spec says what is missing.
    gymnasium = None

WORLDS = {
    "LiquidRover-v0": "sim_envs.rover:LiquidRoverEnv",
    "LiquidBalance-v0": "sim_envs.balancer:LiquidBalanceEnv",
    "LiquidBalanceNav-v0": "sim_envs.balance_nav:LiquidBalanceNavEnv",
}
if gymnasium is not None:
    for _id, _entry in WORLDS.items():
        if _id not in gymnasium.registry:
            gymnasium.register(id=_id, entry_point=_entry, max_episode_steps=None, disable_env_checker=False)


def world_spec(world: str):
    """The gymnasium spec of ``world``: one of ours, an id registered by code already imported, or a world of your
    own named ``module:Id`` (gymnasium's form: ``module`` is imported first and registers ``Id``; so does every
    process that builds it). ValueError naming the known worlds and how to register one otherwise."""
    if gymnasium is None:
        raise ModuleNotFoundError("No module named 'gymnasium': the worlds need it (and mujoco)", name="gymnasium")
    if not isinstance(world, str) or not world:
        raise ValueError(f"a world is a gymnasium id, got {world!r}")
    module, _, world_id = world.rpartition(":")
    if module:
        try:
            importlib.import_module(module)
        except ImportError as exc:  # the module, or something it imports, is not on the path
            raise ValueError(  # its callers put the setting's name first ("world: ", "--world: ")
                f"cannot import module {module!r} of {world!r} ({exc}): is its folder on PYTHONPATH?"
            ) from None
    if world_id not in gymnasium.registry:
        where = f"module {module!r} registers no {world_id!r}" if module else f"unknown world {world_id!r}"
        raise ValueError(
            f"{where}; known: {', '.join(WORLDS)}; a world of your own: a module on the path that calls "
            "gymnasium.register(id='MyWorld-v0', ...), named as 'module:MyWorld-v0' (docs/worlds.md, "
            "'A world of your own')"
        )
    return gymnasium.spec(world_id)


def world_class(world: str):
    """The env class of ``world`` without building a world: one of ours, or any world ``world_spec`` takes (a world
    of your own, ``module:Id``); KeyError naming the known worlds and how to register one otherwise."""
    from gymnasium.envs.registration import load_env_creator

    try:
        entry = world_spec(world).entry_point
    except ValueError as exc:
        raise KeyError(str(exc)) from None
    return load_env_creator(entry) if isinstance(entry, str) else entry


__all__ = [
    "SHIFT_PRESETS",
    "WORLDS",
    "Shift",
    "parse_shift",
    "SensorStream",
    "SensorTiming",
    "world_class",
    "world_spec",
]
