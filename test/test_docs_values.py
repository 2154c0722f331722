"""What the docs state as values of the code, read from the code: the worlds' ``info`` keys (docs/worlds.md), the
nodes' parameters (docs/ros.md, real_robot.md, viewing.md).
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


def test_every_node_parameter_is_named_in_the_ros_docs():
    """A parameter the pages never name is one a user cannot find to set: the takeover mux's three topics, sim_node's
    odom and status topics and reset service, the recorder's compression and the policy node's queue depths and
    command frame were declared and read, and named nowhere in docs/."""
    from test_docs_commands import node_parameter_tables

    text = "".join((ROOT / "docs" / page).read_text() for page in ("ros.md", "real_robot.md", "viewing.md"))
    named = set(re.findall(r"`(\w+)(?::|`)", text)) | set(re.findall(r"\b(\w+):=", text))  # `name`, `name: v`, name:=v
    unnamed = {node: sorted(set(table) - named) for node, table in node_parameter_tables().items()}
    assert not any(unnamed.values()), unnamed


def test_readme_says_what_record_records_by_default():
    """README said `liquid-control record -o bags/run_001` 'records the camera, IMU and command topics', but with
    its defaults (config/rover_policy.yaml: the camera-only rover policy) it records the camera, its camera_info and
    cmd_vel, no IMU: a user who recorded as told had no IMU data for a camera + IMU policy."""
    from liquid_control.ros.recorder_node import default_topics

    kinds = {"camera/image_raw": "camera", "camera/camera_info": "camera_info", "imu/data": "IMU", "cmd_vel": "command"}
    kinds |= {"joint_states": "wheel", "target_velocity": "target"}
    words = {"camera": r"\bcamera\b(?!_info)", "camera_info": r"camera_info", "IMU": r"\bIMU\b", "command": r"command"}
    words |= {"wheel": r"\bwheel", "target": r"\btarget"}
    text = " ".join((ROOT / "README.md").read_text().split())
    claim = re.search(r"`liquid-control record -o bags/run_001` records (.*?) into a rosbag2", text)
    assert claim, "README.md: no sentence saying what `liquid-control record -o bags/run_001` records"
    recorded = default_topics()
    assert set(recorded) <= set(kinds), recorded  # a topic this test cannot name: extend `kinds`
    named = {kind for kind, pattern in words.items() if re.search(pattern, claim.group(1))}
    assert named == {kinds[topic] for topic in recorded}, claim.group(1)
