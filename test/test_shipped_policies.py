"""Every shipped policy loads, matches its model card, and still reaches the card's success on its check episodes."""

import pytest
import torch

from liquid_control.paths import policies_dir
from liquid_control.policy import PolicyAgent, load_policy
from liquid_control.training.data import rollout
from liquid_control.training.model_card import read_card
from liquid_control.training.trainer import make_env

EXPECTED = ["cfc_ncp_rover", "ltc_ncp_rover", "lstm_rover", "cfc_balancer"]
SHIPPED = sorted(p.stem for p in policies_dir().glob("*.pt"))


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Single-sample policy steps: extra intra-op threads only spin on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_the_promised_policies_are_shipped_with_cards():
    for name in EXPECTED:
        assert name in SHIPPED, f"policies/{name}.pt is missing"
        assert (policies_dir() / f"{name}.md").is_file(), f"policies/{name}.md (model card) is missing"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_policy_matches_its_card_and_reaches_its_success(name):
    path = policies_dir() / f"{name}.pt"
    assert path.stat().st_size < 2 * 1024 * 1024, f"{path} is larger than 2 MB"
    card = read_card(policies_dir() / f"{name}.md")
    policy = load_policy(path)
    assert card["name"] == name and card["file"] == f"{name}.pt"
    assert card["world"] == policy.config["world"]
    assert card["architecture"]["parameters"] == policy.num_parameters()
    assert card["in_distribution"]["success"] >= card["check"]["min_success"] - 0.5  # check is a sample of it

    env = make_env(policy.config)
    agent = PolicyAgent(policy)
    try:
        outcomes = [rollout(env, agent, beta=0.0, seed=s, record=False).success for s in card["check"]["seeds"]]
    finally:
        env.close()
    success = sum(outcomes) / len(outcomes)
    assert success >= card["check"]["min_success"], (
        f"{name}: {sum(outcomes)}/{len(outcomes)} check episodes succeeded, the card promises "
        f"{card['check']['min_success']:.0%} on seeds {card['check']['seeds']}"
    )
