"""The drone paper's other baselines: CT-RNN and GRU-ODE against scipy's ODE solver, the temporal convolution
against a direct evaluation, and all three through the core contract (sequence = steps, checkpoints, policy)."""

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from liquid_control.cells import CTRNNCore, GRUODECore, TemporalConvCore, build_core


def ctrnn_rhs(core, x):
    w_x, b = core.input_map.weight.detach().numpy(), core.input_map.bias.detach().numpy()
    w_h, tau = core.recurrent.weight.detach().numpy(), core.tau().detach().numpy()
    return lambda t, h: -h / tau + np.tanh(w_x @ x + b + w_h @ h)


def gru_ode_rhs(core, x):
    n = core.hidden_size
    w, b = core.input_map.weight.detach().numpy(), core.input_map.bias.detach().numpy()
    u_zr, u_g = core.recurrent_zr.weight.detach().numpy(), core.recurrent_g.weight.detach().numpy()
    rate = core.rate().detach().numpy()
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731

    def rhs(t, h):
        p = w @ x + b
        zr = u_zr @ h
        z, r = sig(p[:n] + zr[:n]), sig(p[n : 2 * n] + zr[n:])
        g = np.tanh(p[2 * n :] + u_g @ (r * h))
        return rate * (1 - z) * (g - h)

    return rhs


@pytest.mark.parametrize(
    "make,rhs",
    [
        (lambda: CTRNNCore(3, 5, unfolds=400, tau_init=0.2).double(), ctrnn_rhs),
        (lambda: GRUODECore(3, 5, unfolds=400, rate_init=4.0).double(), gru_ode_rhs),
    ],
)
def test_continuous_time_baselines_converge_to_the_ode_solution(make, rhs):
    torch.manual_seed(0)
    core = make()
    with torch.no_grad():
        for p in core.parameters():
            p.add_(0.3 * torch.randn_like(p))
    rng = np.random.default_rng(1)
    x, h0 = rng.normal(size=3), rng.normal(size=5) * 0.5
    for dt in (0.05, 0.3):
        want = solve_ivp(rhs(core, x), (0, dt), h0, rtol=1e-10, atol=1e-12).y[:, -1]
        got = core.step(torch.tensor(x)[None], torch.tensor(h0)[None], torch.tensor([dt]))[0].detach().numpy()
        np.testing.assert_allclose(got, want, atol=2e-4)
    same = core.step(torch.tensor(x)[None], torch.tensor(h0)[None], torch.tensor([0.0]))[0]
    assert torch.equal(same, torch.tensor(h0))  # dt = 0: no time passed, no change


@pytest.mark.parametrize("core", [CTRNNCore(2, 4, unfolds=2).double(), GRUODECore(2, 4, unfolds=2).double()])
def test_exponential_steps_stay_bounded_for_long_dt(core):
    h = torch.zeros(1, 4, dtype=torch.float64)
    for _ in range(50):
        h = core.step(
            torch.full((1, 2), 5.0, dtype=torch.float64), h, torch.tensor([10.0], dtype=torch.float64)
        )  # 10 s steps, 100x the time constants
    assert torch.isfinite(h).all() and h.abs().max() <= 1.0 + 1e-9  # tanh-bounded drive, exact leak


def test_temporal_convolution_matches_a_direct_dilated_convolution():
    torch.manual_seed(2)
    core = TemporalConvCore(3, 6, frames=8).double()
    rng = np.random.default_rng(3)
    xs, dts = rng.normal(size=(11, 3)), rng.uniform(0.01, 0.1, size=11)
    state = core.initial_state(1)
    for x, dt in zip(xs, dts):
        state = core.step(torch.tensor(x)[None], state, torch.tensor([dt]))
    window = np.concatenate([xs[-8:], dts[-8:, None]], axis=1)  # the last 8 frames [x, dt], oldest first
    z = window.T  # (channels, time)
    for i, conv in enumerate(core.convs):
        d, w, b = 2**i, conv.weight.detach().numpy(), conv.bias.detach().numpy()
        z = np.tanh(
            np.einsum("oc,ct->ot", w[:, :, 0], z[:, :-d]) + np.einsum("oc,ct->ot", w[:, :, 1], z[:, d:]) + b[:, None]
        )
    assert z.shape[1] == 1  # receptive field = the window
    np.testing.assert_allclose(core.output(state)[0].detach().numpy(), z[:, 0], atol=1e-12)
    with pytest.raises(ValueError, match="power of two"):
        TemporalConvCore(3, 6, frames=6)


@pytest.mark.parametrize(
    "core",
    [
        CTRNNCore(4, 6, unfolds=3).double(),
        GRUODECore(4, 6, unfolds=2).double(),
        TemporalConvCore(4, 6, frames=4).double(),
    ],
    ids=["ctrnn", "gru_ode", "tcn"],
)
def test_core_contract_sequence_checkpoint_and_gradients(core):
    torch.manual_seed(4)
    x, dt = torch.randn(3, 7, 4, dtype=torch.float64), torch.rand(3, 7, dtype=torch.float64) * 0.1
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 4:] = False
    states, h_n = core.forward_sequence(x, dt, mask=mask)
    state = core.initial_state(3)
    for t in range(7):
        new = core.step(x[:, t], state, dt[:, t])
        state = torch.where(mask[:, t, None], new, state)
        torch.testing.assert_close(states[:, t], state)
    assert torch.equal(h_n, states[:, -1])
    core.output(states).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in core.parameters())
    twin = build_core(core.config()).double()
    twin.load_state_dict(core.state_dict())
    torch.testing.assert_close(twin.forward_sequence(x, dt)[0], core.forward_sequence(x, dt)[0])
    with pytest.raises(ValueError, match="dt must be finite"):
        core.step(x[:, 0], state, torch.tensor([0.1, -1.0, 0.1], dtype=torch.float64))


@pytest.mark.parametrize("kind", ["ctrnn", "gru_ode", "tcn", "ltc"])
def test_policies_build_with_every_baseline_core(tmp_path, kind):
    from liquid_control.paths import policies_dir
    from liquid_control.policy import load_config, load_policy, save_policy
    from liquid_control.policy.model import Policy

    cfg = load_config(policies_dir() / "configs" / f"{kind}_rover.yaml")
    policy = Policy.from_config(cfg)
    obs = {"image": torch.randint(0, 256, (2, 3, 64, 64, 3), dtype=torch.uint8)}
    actions, _ = policy.forward_sequence(obs, torch.full((2, 3), 1 / 15))
    assert actions.shape == (2, 3, 2) and actions.abs().max() <= 1
    path = save_policy(tmp_path / "p.pt", policy)
    again = load_policy(path)
    torch.testing.assert_close(again.forward_sequence(obs, torch.full((2, 3), 1 / 15))[0], actions)
