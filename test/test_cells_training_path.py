"""Policy training runs the cores' sequence path: ``Policy.forward_sequence`` -> ``RecurrentCore.advance_sequence``.

``training.sequence_kernel: stepwise`` must reproduce, bit for bit, the per-step loop the shipped policies were
trained with (kept below as the oracle); ``fused`` (the default) must give the same numbers to float32
rounding and must actually run the fused path.
"""

import copy

import kernel_variants
import pytest
import torch

from liquid_control.cells import kernels
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
    """The loop ``Policy.forward_sequence`` ran before it called the core's sequence path (the oracle); its
    state is the core's, to which the policy state appends the last step's encoder features."""
    batch, steps = dt.shape
    x = policy.encode(obs, (batch, steps))
    state = policy.core.initial_state(batch, dtype=x.dtype) if h0 is None else policy.split_state(h0)[0]
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
    last = [max(t for t in range(steps) if mask is None or mask[b, t]) for b in range(batch)]  # a valid step each
    features = torch.stack([x[b, t] for b, t in enumerate(last)])
    return policy.act_from_output(torch.stack(outputs, dim=1)), torch.cat([state, features], dim=-1)


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


@pytest.mark.parametrize("variant", ["native", "without"])
@pytest.mark.parametrize("name", CORES)
def test_fused_training_path_runs_the_cores_sequence_kernel_and_matches(name, variant, monkeypatch):
    compiled = kernel_variants.use(variant, monkeypatch) is not None
    fused, stepwise = _policies(name)
    obs, dt, mask = _batch(seed=1)
    h0 = 0.1 * torch.randn(3, fused.state_size)
    with kernels.recording() as ran:
        got = _loss_and_grads(fused, Policy.forward_sequence, obs, dt, h0, mask)
    backend = "compiled" if compiled else "torch"
    assert ran == [(fused.core.core_type, "sequence", backend)]  # one kernel call per chunk, the fused one
    with kernels.recording() as ran:
        expected = _loss_and_grads(stepwise, Policy.forward_sequence, obs, dt, h0, mask)
    assert ran == [(stepwise.core.core_type, "sequence", "stepwise")]  # the switch never takes a kernel
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


def test_the_switch_is_a_validated_config_key_with_the_fused_default():
    from liquid_control.policy import PolicyConfigError, apply_overrides, validate_config

    cfg = validate_config(_config(CORES["cfc_ncp_pure"], "fused"))
    del cfg["training"]["sequence_kernel"]
    assert validate_config(cfg)["training"]["sequence_kernel"] == "fused"
    stepwise = apply_overrides(cfg, {"training.sequence_kernel": "stepwise"})  # liquid-control train --set ...
    assert not Policy(stepwise).fused_sequence and Policy(validate_config(cfg)).fused_sequence
    with pytest.raises(PolicyConfigError, match="training.sequence_kernel: unknown value 'compiled'"):
        apply_overrides(cfg, {"training.sequence_kernel": "compiled"})
