"""ncps (PyTorch) as the numerical oracle: same weights in, same outputs out, to 1e-5, where ncps works
(scalar dt) -- and documented cases where ncps does not work (per-sample dt, dt = 0).

ncps is a test-only dependency; the helpers below copy its weights into our cells.
"""

import kernel_variants
import ncps.torch as nt
import ncps.wirings as nw
import numpy as np
import pytest
import torch

from liquid_control.cells import LTC, AutoNCP, CfC, CfCCell, FullyConnected, LiquidRNN, LTCCell, Wiring, kernels

torch.set_num_threads(1)


@pytest.fixture(autouse=True, params=["native", "portable", "without"])
def kernel_variant(request, monkeypatch):
    """Every parity test on the compiled kernels (this CPU's build and the portable one) and without them; the
    sequences must have run on that variant's kernel (the dispatcher's record)."""
    compiled = kernel_variants.use(request.param, monkeypatch) is not None
    with kernels.recording() as ran:
        yield request.param
    sequence = "compiled" if compiled else "torch"
    assert {b for _, p, b in ran if p == "sequence"} <= {sequence}
    assert {b for _, p, b in ran if p == "step"} <= {"compiled" if compiled else "numpy", "stepwise"}


def wiring_from_ncps(wiring: nw.Wiring) -> Wiring:
    """Our Wiring with exactly ncps's synapses (and ncps's layer structure)."""
    layers = [list(map(int, wiring.get_neurons_of_layer(l))) for l in range(wiring.num_layers)]
    return Wiring.from_dict(
        {
            "units": wiring.units,
            "output_size": wiring.output_dim,
            "input_size": wiring.input_dim,
            "layers": layers,
            "adjacency": wiring.adjacency_matrix.tolist(),
            "sensory_adjacency": wiring.sensory_adjacency_matrix.tolist(),
        }
    )


def _copy_cfc_block(block, theirs) -> None:
    with torch.no_grad():
        if theirs.backbone is not None:
            linears = [m for m in theirs.backbone if isinstance(m, torch.nn.Linear)]
            for ours_l, their_l in zip(block.backbone, linears, strict=True):
                ours_l.weight.copy_(their_l.weight)
                ours_l.bias.copy_(their_l.bias)
        heads = [theirs.ff1] if block.mode == "pure" else [theirs.ff1, theirs.ff2, theirs.time_a, theirs.time_b]
        block.head_weight.copy_(torch.cat([h.weight for h in heads]))
        block.head_bias.copy_(torch.cat([h.bias for h in heads]))
        if block.mode == "pure":
            block.w_tau.copy_(theirs.w_tau[0])
            block.A.copy_(theirs.A[0])


def cfc_pair(input_size: int, units, mode: str, **backbone):
    """(ncps CfC model, our CfCCell) with the same weights; ``units`` int or an ncps wiring."""
    torch.manual_seed(0)
    model = nt.CfC(input_size, units, mode=mode, **backbone)
    theirs = model.rnn_cell
    if isinstance(units, nw.Wiring):
        ours = CfCCell(input_size, wiring_from_ncps(units), mode=mode)
        for block, layer in zip(ours.blocks, theirs._layers, strict=True):
            _copy_cfc_block(block, layer)
    else:
        ours = CfCCell(input_size, units, mode=mode, **backbone)
        _copy_cfc_block(ours.blocks[0], theirs)
    return model, ours


def ltc_pair(input_size: int, units, unfolds: int = 6):
    """(ncps LTC model, our LTCCell with semi_implicit at the same unfolds) with the same weights."""
    torch.manual_seed(0)
    model = nt.LTC(input_size, units, ode_unfolds=unfolds)  # implicit_param_constraints=True
    theirs = model.rnn_cell
    ours = LTCCell(input_size, wiring_from_ncps(theirs._wiring), solver="semi_implicit", substeps=unfolds)
    with torch.no_grad():
        for name, param in ours.named_parameters():
            param.copy_(theirs._params[name])
    return model, ours


def run_ncps(model, x: torch.Tensor, elapsed, h0: torch.Tensor | None = None):
    """Drive an ncps model's cell step by step with a scalar ``elapsed`` (what ncps handles correctly)."""
    cell = model.rnn_cell
    batch, steps = x.shape[:2]
    size = getattr(cell, "state_size", None) or cell.hidden_size  # ncps's plain CfCCell has hidden_size
    state = torch.zeros(batch, size) if h0 is None else h0
    outs = []
    for t in range(steps):
        out, state = cell(x[:, t], state, elapsed)
        outs.append(out)
    return torch.stack(outs, 1), state


def _inputs(batch=3, steps=12, features=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, steps, features, generator=g)


@pytest.mark.parametrize("mode", ["default", "no_gate", "pure"])
@pytest.mark.parametrize("backbone", [{}, {"backbone_layers": 2, "backbone_units": 24}, {"backbone_layers": 0}])
def test_cfc_fully_connected_matches_ncps(mode, backbone):
    theirs, ours = cfc_pair(5, 16, mode, **backbone)
    x, dt = _inputs(), 0.37
    expected, expected_h = run_ncps(theirs, x, dt)
    out, h = LiquidRNN(ours)(x, dt)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(h, expected_h, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["default", "no_gate", "pure"])
def test_cfc_wired_ncp_matches_ncps(mode):
    theirs, ours = cfc_pair(5, nw.AutoNCP(20, 4, seed=7), mode)
    x, dt = _inputs(), 0.8
    expected, expected_h = run_ncps(theirs, x, dt)
    out, h = LiquidRNN(ours)(x, dt)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(h, expected_h, atol=1e-5, rtol=0)


@pytest.mark.parametrize("units", [12, "ncp"])
@pytest.mark.parametrize("unfolds", [1, 6])
def test_ltc_semi_implicit_matches_ncps(units, unfolds):
    wiring = nw.AutoNCP(16, 3, seed=5) if units == "ncp" else units
    theirs, ours = ltc_pair(5, wiring, unfolds)
    x, dt = _inputs(), 0.6
    expected, expected_h = run_ncps(theirs, x, dt)
    out, h = LiquidRNN(ours)(x, dt)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(h, expected_h, atol=1e-5, rtol=0)


@pytest.mark.parametrize("units", [12, "ncp"])
def test_an_ltc_loads_ncps_weights_unchanged_a_cfc_takes_them_copied_into_its_fused_heads(units):
    """What cfc.py and benchmarks/README.md say: an LTC of the same wiring loads ncps's ``rnn_cell.state_dict()`` as
    it is (same names; model-level keys are ``rnn_cell.`` there, ``cell.`` here) and gives ncps's outputs; a CfC's
    four heads are one fused matrix, so ncps's ``ff1``/``ff2``/``time_a``/``time_b`` are copied
    (``_copy_cfc_block``)."""
    torch.manual_seed(0)
    theirs = nt.LTC(5, nw.AutoNCP(16, 3, seed=5) if units == "ncp" else units)
    ours = LTC(5, AutoNCP(16, 3, seed=5) if units == "ncp" else units)
    ours.cell.load_state_dict(theirs.rnn_cell.state_dict())
    x = _inputs()
    expected, expected_h = run_ncps(theirs, x, 0.6)
    out, h = ours(x, 0.6)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(h, expected_h, atol=1e-5, rtol=0)
    with pytest.raises(RuntimeError, match="Missing key.*head_weight"):
        CfC(5, 16).cell.load_state_dict(nt.CfC(5, 16).rnn_cell.state_dict())


def test_streaming_step_matches_ncps_for_cfc_and_ltc():
    """The no-grad streaming path (the step kernels) gives the same numbers as ncps too."""
    x = _inputs(batch=1, steps=6)
    for theirs, ours in (cfc_pair(5, 16, "default"), ltc_pair(5, 12)):
        expected, _ = run_ncps(theirs, x, 0.5)
        ours.eval()
        state, outs = None, []
        with torch.no_grad():
            for t in range(x.shape[1]):
                state = ours.step(x[:, t], state, torch.tensor([0.5]))
                outs.append(ours.output(state))
        torch.testing.assert_close(torch.stack(outs, 1), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["cfc", "ltc"])
@pytest.mark.parametrize("batch_first", [True, False])
def test_unbatched_input_matches_ncps(kind, batch_first):
    """x (T, I) without a batch dimension, in either layout, with hx (H,) and timespans (T,), as ncps takes it
    (and torch.nn.RNN): LiquidRNN refused it ("expects x of shape (B, T, 5)")."""
    theirs, ours = cfc_pair(5, 16, "default") if kind == "cfc" else ltc_pair(5, 12)
    theirs.batch_first = batch_first
    x, dt = _inputs(batch=1, steps=6)[0], _irregular_dt(1, 6)[0]
    h0 = 0.1 * torch.randn(ours.state_size, generator=torch.Generator().manual_seed(3))
    ours_rnn = LiquidRNN(ours, batch_first=batch_first)
    for kwargs in ({}, {"timespans": dt}, {"hx": h0, "timespans": dt}):
        expected, expected_h = theirs(x, **kwargs)
        out, h = ours_rnn(x, **kwargs)
        assert out.shape == expected.shape == (6, ours.output_size) and h.shape == expected_h.shape == h0.shape
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(h, expected_h, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (lambda: AutoNCP(24, 5, sparsity_level=0.6, seed=3), lambda: nw.AutoNCP(24, 5, sparsity_level=0.6, seed=3)),
        (lambda: FullyConnected(7, 2, seed=9), lambda: nw.FullyConnected(7, 2, erev_init_seed=9)),
    ],
)
def test_wiring_construction_matches_ncps_for_the_same_seed(ours, theirs):
    a, b = ours().build(6), theirs()
    b.build(6)
    assert np.array_equal(a.adjacency, b.adjacency_matrix)
    assert np.array_equal(a.sensory_adjacency, b.sensory_adjacency_matrix)


@pytest.mark.parametrize("model", ["CfC", "LTC"])
def test_an_ncps_wiring_is_refused_naming_the_wiring_of_the_same_synapses(model):
    """CfC(5, ncps.wirings.AutoNCP(12, 3)), the line an ncps user brings, said "units must be an integer, got
    AutoNCP <ncps.wirings...>", where a wiring is taken: ours, which draws ncps's synapses for the same seed."""
    build = {"CfC": CfC, "LTC": LTC}[model]
    with pytest.raises(TypeError, match=r"for ncps's AutoNCP: give liquid_control.cells.AutoNCP\(\.\.\.\)"):
        build(5, nw.AutoNCP(12, 3))
    with pytest.raises(TypeError, match="units must be an integer, a Wiring"):
        build(5, nw.FullyConnected(8))
    with pytest.raises(TypeError, match="units must be an integer, got float 8.0"):
        build(5, 8.0)


# ---- where ncps breaks: per-sample time steps and dt = 0 -----------------------------------------------


def _irregular_dt(batch, steps, seed=2):
    g = torch.Generator().manual_seed(seed)
    return 0.05 + torch.rand(batch, steps, generator=g)


@pytest.mark.parametrize("kind", ["cfc", "ltc"])
def test_per_sample_dt_batch_equals_single_runs_where_ncps_is_silently_wrong(kind):
    """Batch size == units: ncps broadcasts the (B,) time vector along the *unit* axis without complaint."""
    units = 8
    theirs_rnn, ours = cfc_pair(3, units, "default") if kind == "cfc" else ltc_pair(3, units)
    x, dt = _inputs(batch=units, steps=6, features=3), _irregular_dt(units, 6)

    alone = torch.cat([theirs_rnn(x[i : i + 1], timespans=dt[i : i + 1])[0] for i in range(units)])
    ours_batched, _ = LiquidRNN(ours)(x, dt)
    torch.testing.assert_close(ours_batched, alone, atol=1e-5, rtol=0)

    ncps_batched, _ = theirs_rnn(x, timespans=dt)  # runs, no error ...
    assert ncps_batched.shape == alone.shape
    assert (ncps_batched - alone).abs().max() > 1e-2  # ... but mixes up the samples' time steps


def test_ncps_cfc_rejects_per_sample_dt_that_we_accept():
    theirs_rnn, ours = cfc_pair(3, 8, "default")
    x, dt = _inputs(batch=3, steps=4, features=3), _irregular_dt(3, 4)
    with pytest.raises(RuntimeError):
        theirs_rnn(x, timespans=dt)
    out, _ = LiquidRNN(ours)(x, dt)
    assert torch.isfinite(out).all()


def test_ltc_zero_dt_keeps_state_where_ncps_gives_nan():
    theirs, ours = ltc_pair(4, 10)
    x = _inputs(batch=2, steps=1, features=4)[:, 0]
    state = torch.rand(2, 10)
    their_out, _ = theirs.rnn_cell(x, state, 0.0)
    assert torch.isnan(their_out).all()
    for grad in (True, False):  # torch path and numpy streaming kernel
        with torch.set_grad_enabled(grad):
            new = ours.step(x, state, torch.zeros(2))
        assert torch.equal(new, state)
