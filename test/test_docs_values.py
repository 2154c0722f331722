"""What the docs state as values of the code, read from the code: the worlds' ``info`` keys (docs/worlds.md).
Commands quoted in the docs are checked in test_docs_commands.py."""

import re
from pathlib import Path

import gymnasium as gym
import pytest

import sim_envs  # noqa: F401  (registers the worlds)

ROOT = Path(__file__).resolve().parents[1]
WORLDS = {"rover": "LiquidRover-v0", "balancer": "LiquidBalance-v0", "balance-nav": "LiquidBalanceNav-v0"}


def documented_info_keys() -> dict[str, set[str]]:
    """worlds.md's `info` item: the keys of every world, then each world's privileged state."""
    text = " ".join((ROOT / "docs" / "worlds.md").read_text().split())
    item = re.search(r"- `info`: (.*?) and the privileged state \((.*?)\)\.( |$)", text)
    assert item, "docs/worlds.md has no `info` item listing the privileged state"
    common = set(re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", item.group(1))))
    keys = {}
    for part in re.split(r"; (?=[\w-]+: )", item.group(2)):
        world, _, names = part.partition(": ")
        keys[world] = common | set(re.findall(r"`(\w+)`", names))
    assert set(keys) == set(WORLDS), keys
    return keys


@pytest.mark.parametrize("world", WORLDS)
def test_worlds_md_names_every_info_key_of_each_world(world):
    """The balancer's info held `position_error` (its expert's integrated velocity error), which the page left
    out."""
    env = gym.make(WORLDS[world])
    try:
        _, info = env.reset(seed=0)
        _, _, _, _, info = env.step(env.unwrapped.expert_action())
    finally:
        env.close()
    assert set(info) == documented_info_keys()[world]
