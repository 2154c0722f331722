"""Policy training runs the cores' sequence path: ``Policy.forward_sequence`` -> ``RecurrentCore.advance_sequence``.

``training.sequence_kernel: stepwise`` must reproduce, bit for bit, the per-step loop the shipped policies were
trained with (kept below as the oracle); ``fused`` (the default) must give the same numbers to float32
rounding and must actually run the fused path.
"""

import copy

import pytest
import torch

from liquid_control.policy import Policy

torch.set_num_threads(1)

CORES = {
    "cfc_ncp_pure": {"type": "cfc", "units": 8, "wiring": "ncp", "mode": "pure"},
    "cfc_backbone": {"type": "cfc", "units": 6, "backbone_units": 8},
    "ltc_ncp": {"type": "ltc", "units": 8, "wiring": "ncp", "unfolds": 2},
}


def _config(core, kernel):
    return {
        "name": "tiny",
        "world": "LiquidRover-v0",
        "observation": {"image": {"height": 16, "width": 16}, "vectors": {}, "update_on": "camera"},
        "encoder": {"camera": {"channels": [4, 8], "kernel_sizes": [3, 3], "strides": [2, 2], "features": 8}},
        "core": copy.deepcopy(core),
        "action": {"size": 2, "low": [-1, -0.5], "high": [1, 0.5]},
        "training": {"sequence_kernel": kernel},
    }


def _batch(seed=0, batch=3, steps=6):
    g = torch.Generator().manual_seed(seed)
    obs = {"image": torch.randint(0, 256, (batch, steps, 16, 16, 3), dtype=torch.uint8, generator=g)}
    dt = 0.02 + 0.1 * torch.rand(batch, steps, generator=g)
    mask = torch.ones(batch, steps, dtype=torch.bool)
    mask[1, 4:] = False
    return obs, dt, mask


def _old_forward_sequence(policy, obs, dt, h0=None, mask=None):
    """The loop ``Policy.forward_sequence`` ran before it called the core's sequence path (the oracle)."""
    batch, steps = dt.shape
    x = policy.encode(obs, (batch, steps))
    state = policy.initial_state(batch, dtype=x.dtype) if h0 is None else h0
    core = policy.core
    ctx = core.step_context()
    prepared = core.prepare_inputs(x, ctx)
    outputs = []
    for t in range(steps):
        new_state = core.step_prepared(prepared[:, t], state, dt[:, t], ctx)
        if mask is not None:
            new_state = torch.where(mask[:, t, None], new_state, state)
        state = new_state
        outputs.append(core.output(state))
    return policy.act_from_output(torch.stack(outputs, dim=1)), state


def _loss_and_grads(policy, run, obs, dt, h0, mask):
    policy.zero_grad(set_to_none=True)
    actions, h_n = run(policy, obs, dt, h0=h0, mask=mask)
    (actions.pow(2).sum() + h_n.pow(2).sum()).backward()
    return [actions.detach(), h_n.detach()] + [p.grad.clone() for p in policy.parameters()]


def _policies(name):
    torch.manual_seed(0)
    fused = Policy.from_config(_config(CORES[name], "fused"))
    stepwise = Policy.from_config(_config(CORES[name], "stepwise"))
    stepwise.load_state_dict(fused.state_dict())
    return fused, stepwise


@pytest.mark.parametrize("name", CORES)
def test_stepwise_switch_reproduces_the_old_per_step_loop_bit_for_bit(name):
    _, stepwise = _policies(name)
    obs, dt, mask = _batch()
    h0 = 0.1 * torch.randn(3, stepwise.state_size)
    old = _loss_and_grads(stepwise, _old_forward_sequence, obs, dt, h0, mask)
    new = _loss_and_grads(stepwise, Policy.forward_sequence, obs, dt, h0, mask)
    for a, b in zip(old, new, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", CORES)
def test_fused_training_path_runs_the_cores_sequence_kernel_and_matches(name, monkeypatch):
    fused, stepwise = _policies(name)
    obs, dt, mask = _batch(seed=1)
    h0 = 0.1 * torch.randn(3, fused.state_size)
    ran = []
    real = type(fused.core).fused_sequence

    def spy(self, *args):
        states = real(self, *args)
        ran.append(states is not None)
        return states

    monkeypatch.setattr(type(fused.core), "fused_sequence", spy)
    got = _loss_and_grads(fused, Policy.forward_sequence, obs, dt, h0, mask)
    assert ran == [True]  # one fused call for the whole chunk, and it ran
    ran.clear()
    expected = _loss_and_grads(stepwise, Policy.forward_sequence, obs, dt, h0, mask)
    assert ran == []  # the stepwise switch never asks for the fused path
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)
