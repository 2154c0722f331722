"""Cell contract: streaming vs sequence, per-sample dt, dt validation, masks, gradients, wirings, checkpoints."""

import json
import warnings

import kernel_variants
import numpy as np
import pytest
import torch

from liquid_control.cells import (
    LTC,
    NCP,
    AutoNCP,
    CfC,
    CfCCell,
    CheckpointError,
    CTRNNCore,
    FrameStackMLP,
    FullyConnected,
    GRUCore,
    GRUODECore,
    LiquidRNN,
    LSTMCore,
    LTCCell,
    TemporalConvCore,
    Wiring,
    build_core,
    kernels,
    load_model,
    native,
    save_model,
)
from liquid_control.cells.solvers import make_solver

torch.set_num_threads(1)

CORES = {
    "cfc": lambda: CfCCell(3, 6, backbone_units=8),
    "cfc_no_gate_2layers": lambda: CfCCell(
        3, 6, mode="no_gate", backbone_units=8, backbone_layers=2, activation="silu"
    ),
    "cfc_pure": lambda: CfCCell(3, 6, mode="pure", backbone_layers=0),
    "cfc_ncp": lambda: CfCCell(3, AutoNCP(10, 2, seed=1)),
    "ltc": lambda: LTCCell(3, 5),
    "ltc_ncp_rk4": lambda: LTCCell(3, AutoNCP(8, 2, seed=1), solver="rk4", substeps=2),
    "ltc_exponential": lambda: LTCCell(3, 5, solver="exponential", substeps=2),
    "ltc_dopri5": lambda: LTCCell(3, 4, solver="dopri5", rtol=1e-4, atol=1e-6),
    "lstm": lambda: LSTMCore(3, 5),
    "gru": lambda: GRUCore(3, 5),
    "mlp": lambda: FrameStackMLP(3, hidden_size=5, frames=3),
}


def _core(name, dtype=torch.float32):
    torch.manual_seed(0)
    return CORES[name]().to(dtype)


def _data(batch=4, steps=7, features=3, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, steps, features, generator=g, dtype=dtype)
    dt = 0.05 + 0.5 * torch.rand(batch, steps, generator=g, dtype=dtype)
    return x, dt


@pytest.mark.parametrize("name", CORES)
def test_contract_sizes_and_sequence_equals_streaming_steps(name):
    cell = _core(name)
    x, dt = _data()
    out, h_n = LiquidRNN(cell)(x, dt)
    assert out.shape == (4, 7, cell.output_size) and h_n.shape == (4, cell.state_size)
    assert cell.initial_state(4).shape == (4, cell.state_size)
    state = None
    for t in range(7):
        state = cell.step(x[:, t], state, dt[:, t])
        torch.testing.assert_close(cell.output(state), out[:, t], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(state, h_n, atol=1e-6, rtol=1e-6)
    states, h_last = cell.forward_sequence(x, dt)  # the core-level API LiquidRNN wraps
    torch.testing.assert_close(cell.output(states), out)
    torch.testing.assert_close(h_last, h_n)


@pytest.mark.parametrize("name", CORES)
def test_per_sample_dt_batch_equals_each_sample_alone(name):
    """Every sample has its own irregular dt sequence; batching must not mix them (batch == units too)."""
    cell = _core(name, torch.float64)
    batch = cell.state_size  # the case where ncps silently broadcasts dt along the units
    x, dt = _data(batch=batch, dtype=torch.float64, seed=1)
    rnn = LiquidRNN(cell)
    batched, h_n = rnn(x, dt)
    for i in range(batch):
        alone, h_alone = rnn(x[i : i + 1], dt[i : i + 1])
        torch.testing.assert_close(batched[i : i + 1], alone, atol=1e-9, rtol=1e-9)
        torch.testing.assert_close(h_n[i : i + 1], h_alone, atol=1e-9, rtol=1e-9)


def test_dt_forms_broadcast_like_documented():
    cell = _core("ltc")
    rnn = LiquidRNN(cell)
    x, _ = _data(batch=3, steps=5)
    full, _ = rnn(x, torch.full((3, 5), 0.2))
    torch.testing.assert_close(rnn(x, 0.2)[0], full)
    torch.testing.assert_close(rnn(x, torch.full((3,), 0.2))[0], full)  # (B,): per-sample constant
    torch.testing.assert_close(rnn(x, torch.full((3, 5, 1), 0.2))[0], full)
    state = cell.step(x[:, 0], None, 0.2)
    torch.testing.assert_close(state, cell.step(x[:, 0], None, torch.full((3, 1), 0.2)))
    rnn_tf = LiquidRNN(cell, batch_first=False)
    out_tf, _ = rnn_tf(x.transpose(0, 1), torch.full((5, 3), 0.2))
    torch.testing.assert_close(out_tf.transpose(0, 1), full)


def test_ncps_keywords_and_a_state_passed_as_dt():
    """Code ported from ncps (forward(x, hx, timespans)): the keywords hx= and timespans= work, and a state given
    positionally where dt goes is named as such (before: "dt must be a float, (2,) or (2, 5) ... got (2, 19)")."""
    rnn = LiquidRNN(_core("cfc"))
    x, _ = _data(batch=2, steps=5)
    h0, dt = torch.randn(2, rnn.state_size), torch.full((2, 5), 0.1)
    out, h_n = rnn(x, dt, h0)
    out_kw, h_n_kw = rnn(x, hx=h0, timespans=dt)
    assert torch.equal(out, out_kw) and torch.equal(h_n, h_n_kw)
    with pytest.raises(ValueError, match="the shape of a state .* pass the state by keyword"):
        rnn(x, h0)
    with pytest.raises(TypeError, match="h0 or hx"):
        rnn(x, dt, h0, hx=h0)
    with pytest.raises(TypeError, match="dt or timespans"):
        rnn(x, 1.0, timespans=dt)
    time_major = LiquidRNN(rnn.cell, batch_first=False)  # a valid (T, B) dt whose B equals the state size
    batch = rnn.state_size
    xt = torch.randn(5, batch, x.shape[2])
    out_t, _ = time_major(xt, torch.full((5, batch), 0.1))
    assert out_t.shape == (5, batch, rnn.output_size)
    with pytest.raises(ValueError, match="the shape of a state"):
        time_major(torch.randn(5, 2, x.shape[2]), h0)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
@pytest.mark.parametrize("grad", [True, False])
def test_negative_or_non_finite_dt_is_a_value_error(bad, grad):
    cell = _core("cfc")
    cell.eval()
    x, dt = _data(batch=2, steps=3)
    dt[1, 2] = bad
    with torch.set_grad_enabled(grad):
        with pytest.raises(ValueError, match="dt must be finite and >= 0"):
            cell.step(x[:, 0], None, dt[:, 2])
        with pytest.raises(ValueError, match="dt must be finite and >= 0"):
            LiquidRNN(cell)(x, dt)


@pytest.mark.parametrize(
    "bad", [True, 1 + 0j, [True, False], torch.ones(2, dtype=torch.bool), torch.ones(2, dtype=torch.complex64)]
)
def test_a_bool_or_complex_dt_is_a_type_error(bad):
    """Before: True was read as 1 s, a complex dt lost its imaginary part with only torch's warning."""
    cell = _core("cfc")
    x, _ = _data(batch=2, steps=3)
    with pytest.raises(TypeError, match="dt must be real seconds"):
        cell.step(x[:, 0], None, bad)
    with pytest.raises(TypeError, match="dt must be real seconds"):
        LiquidRNN(cell)(x, bad)


@pytest.mark.parametrize("bad", ["0.1", b"0.1", ["0.1", "0.2"], np.array(["0.1", "0.2"]), {"dt": 0.1}])
def test_a_dt_given_as_text_or_another_object_is_a_type_error_naming_dt(bad):
    """Before: '0.1' failed in torch as "new(): invalid data type 'str'", ['0.1', '0.2'] as "too many dimensions
    'str'", a dict as "must be real number, not dict": none said it was dt."""
    cell = _core("cfc")
    x, _ = _data(batch=2, steps=3)
    says = rf"dt must be real seconds \(a float or a float tensor\), got {type(bad).__name__} "
    with pytest.raises(TypeError, match=says):
        cell.step(x[:, 0], None, bad)
    with pytest.raises(TypeError, match=says):
        LiquidRNN(cell)(x, bad)


@pytest.mark.parametrize("name", ["cfc", "cfc_ncp", "ltc", "lstm", "mlp"])
@pytest.mark.parametrize("batch_first", [True, False])
def test_unbatched_input_is_a_batch_of_one_with_its_shapes_named(name, batch_first):
    """x (T, I) without a batch dimension, as torch.nn.RNN and ncps take it in either layout, was refused
    ("expects x of shape (B, T, 3)"); now dt is a float, (T,) or (T, 1), h0 (S,), mask (T,)."""
    cell = _core(name)
    rnn = LiquidRNN(cell, batch_first=batch_first)
    batched = LiquidRNN(cell)
    x, dt = _data(batch=1, steps=5)
    h0 = 0.1 * torch.randn(1, cell.state_size, generator=torch.Generator().manual_seed(1))
    mask = torch.tensor([True, False, True, True, False])
    expected, expected_h = batched(x, dt, h0=h0, mask=mask[None])
    for dt_form in (dt[0], dt[0, :, None], dt[0].numpy(), dt[0].tolist()):
        out, h = rnn(x[0], dt_form, h0=h0[0], mask=mask)
        torch.testing.assert_close(out, expected[0], atol=0, rtol=0)
        torch.testing.assert_close(h, expected_h[0], atol=0, rtol=0)
    out, h = rnn(x[0], timespans=0.1, hx=h0[0])
    torch.testing.assert_close(out, batched(x, 0.1, h0=h0)[0][0])
    out, h = rnn(x[0, :0], 0.1)
    assert out.shape == (0, cell.output_size) and h.shape == (cell.state_size,)
    with pytest.raises(ValueError, match=rf"h0 must have shape \({cell.state_size},\) for unbatched x, got \(1, "):
        rnn(x[0], dt[0], h0=h0)
    with pytest.raises(
        ValueError, match=r"dt must be a float, \(5,\) or \(5, 1\) for unbatched x of 5 steps; got \(1, 5\)"
    ):
        rnn(x[0], dt)
    with pytest.raises(ValueError, match=r"mask must have shape \(5,\) like unbatched x, got \(1, 5\)"):
        rnn(x[0], dt[0], mask=mask[None])
    with pytest.raises(ValueError, match=r"dt must be finite and >= 0"):
        rnn(x[0], -dt[0])
    with pytest.raises(ValueError, match=r"or unbatched \(T, 3\), got \(3,\)"):
        rnn(x[0, 0], 0.1)
    if cell.state_size != 5:  # the state passed where dt goes (ncps's positional order)
        with pytest.raises(ValueError, match="the shape of an unbatched state"):
            rnn(x[0], h0[0])


def test_wrong_shapes_are_value_errors():
    cell = _core("ltc")
    x, dt = _data(batch=2, steps=3)
    with pytest.raises(ValueError, match="dt must be"):
        cell.step(x[:, 0], None, torch.ones(3))
    with pytest.raises(ValueError, match="expects 3 input features"):
        cell.step(torch.ones(2, 4), None, 0.1)
    with pytest.raises(ValueError, match="state must have shape"):
        cell.step(x[:, 0], torch.zeros(2, 9), 0.1)
    with pytest.raises(ValueError, match="mask must have shape"):
        LiquidRNN(cell)(x, dt, mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must be bool .* or 0/1, got torch.float32 values"):
        LiquidRNN(cell)(x, dt, mask=torch.full((2, 3), 0.3))  # read as all True before
    ones = LiquidRNN(cell)(x, dt, mask=torch.tensor([[1, 1, 0], [1, 0, 1]]))[0]
    torch.testing.assert_close(ones, LiquidRNN(cell)(x, dt, mask=torch.tensor([[1, 1, 0], [1, 0, 1]]).bool())[0])


@pytest.mark.parametrize("name", ["cfc", "cfc_ncp", "ltc", "ltc_exponential"])
def test_the_validated_entry_points_refuse_a_dt_or_state_that_does_not_fit(name, fused_backend):
    """``advance``/``advance_sequence`` (what policies call, dt already validated) handed a short dt to the
    compiled kernels, which read past its end (finite garbage, an LTC sequence of shape (1, 1, H)), and took a
    float64 state for float32 inputs (a kernel's internal TypeError, or the output silently float64)."""
    cell = _core(name).eval()
    x, dt = _data(batch=4, steps=6)
    with torch.no_grad():
        with pytest.raises(ValueError, match=r"dt must have shape \(4,\) here"):
            cell.advance(x[:, 0], None, torch.tensor([0.1]))
        with pytest.raises(ValueError, match=r"dt must have shape \(4, 6\) here"):
            cell.advance_sequence(x, torch.full((1, 1), 0.1))
        double = torch.zeros(4, cell.state_size, dtype=torch.float64)
        with pytest.raises(ValueError, match="state must have x's dtype torch.float32, got torch.float64"):
            cell.step(x[:, 0], double, 0.1)
        with pytest.raises(ValueError, match="h0 must have x's dtype and device"):
            cell.advance_sequence(x, dt, h0=double)
        with pytest.raises(ValueError, match="h0 must have x's dtype and device"):
            LiquidRNN(cell)(x, dt, double)


@pytest.mark.parametrize("name", CORES)
@pytest.mark.parametrize("grad", [True, False])
def test_inputs_of_another_dtype_than_the_weights_are_refused_naming_both(name, grad):
    """float64 inputs to a float32 model: torch's "mat1 and mat2 must have the same dtype" from most cores,
    while an LTC computed silently in the inputs' dtype (float16 in, float32 out)."""
    cell = _core(name).eval()
    for dtype in (torch.float64, torch.float16):
        x, dt = _data(dtype=dtype)
        with torch.set_grad_enabled(grad):
            with pytest.raises(ValueError, match=f"weights are torch.float32, x is {dtype}"):
                LiquidRNN(cell)(x, dt)
            with pytest.raises(ValueError, match=f"weights are torch.float32, x is {dtype}"):
                cell.step(x[:, 0], None, dt[:, 0])


@pytest.mark.parametrize("name", ["cfc", "ltc", "gru"])
def test_x_that_is_not_floating_point_is_refused_as_such_complex_too(name):
    """An int or bool x was refused as "x must be floating point", a complex x with "'<=' not supported between
    instances of 'float' and 'complex'": dt, converted to x's dtype, failed its check before x's was looked at."""
    cell = _core(name)
    x, dt = _data(batch=2, steps=3)
    for dtype in (torch.complex64, torch.int64, torch.bool):
        bad = x.to(dtype)
        for run, args in (
            (cell.step, (bad[:, 0], None, 0.1)),
            (cell.forward_sequence, (bad, dt)),
            (LiquidRNN(cell), (bad, dt)),
            (LiquidRNN(cell), (bad[0], 0.1)),
            (LiquidRNN(cell, batch_first=False), (bad, 0.1)),
            (LiquidRNN(cell), (bad[:, :0], 0.1)),
        ):
            with pytest.raises(ValueError, match=f"x is {dtype}: x must be floating point"):
                run(*args)


@pytest.mark.parametrize("name", ["cfc", "ltc"])
def test_an_empty_sequence_is_checked_as_a_longer_one(name):
    """With T = 0, LiquidRNN returned any h0 as h_n (shape (9, 1), int64) and accepted dt -1 or nan."""
    rnn = LiquidRNN(_core(name))
    x = torch.randn(2, 0, rnn.input_size)
    outputs, h_n = rnn(x, torch.ones(2, 0))
    assert outputs.shape == (2, 0, rnn.output_size) and torch.equal(h_n, torch.zeros(2, rnn.state_size))
    h0 = torch.randn(2, rnn.state_size)
    kept = h0.clone()
    time_major = LiquidRNN(rnn.cell, batch_first=False)
    for model, sequence, given in ((rnn, x, h0), (time_major, x.transpose(0, 1), h0), (rnn, x[0], h0[0])):
        h_n = model(sequence, 0.1, given)[1]
        assert torch.equal(h_n, given)
        h_n.add_(1.0)  # h0 itself was returned: this changed the caller's h0 (torch.nn.RNN's h_n is a new tensor)
        assert torch.equal(h0, kept)
    for kwargs, says in (
        (dict(h0=torch.zeros(9, 1)), "h0 must have shape"),
        (dict(h0=torch.zeros(2, rnn.state_size, dtype=torch.int64)), "h0 must have x's dtype"),
        (dict(dt=-1.0), "dt must be finite and >= 0"),
        (dict(dt=float("nan")), "dt must be finite and >= 0"),
        (dict(dt=torch.ones(3)), "dt must be a float, \\(2,\\)"),
    ):
        with pytest.raises(ValueError, match=says):
            rnn(x, **kwargs)


@pytest.mark.parametrize("name", CORES)
def test_h_n_is_a_tensor_of_its_own_not_a_view_of_the_outputs(name):
    """The sequence kernels (CfC, LTC semi_implicit) returned h_n as states[:, -1], a view of the states: the RL reset
    ``y, h = rnn(obs, dt, h); h[done] = 0`` changed y[:, -1] (a CfC's outputs are the states' storage) and
    ``h.detach_()`` (truncated BPTT) raised "Can't detach views in-place", where torch.nn.GRU's h_n is its own."""
    rnn = LiquidRNN(_core(name))
    x, dt = _data()
    with torch.no_grad():
        y, h_n = rnn(x, dt)
        states, h_seq = rnn.cell.forward_sequence(x, dt)
    kept, kept_states = y.clone(), states.clone()
    h_n[1] = 0.0
    h_seq[1] = 0.0
    assert torch.equal(y, kept) and torch.equal(states, kept_states)
    x.requires_grad_()
    y, h_n = rnn(x, dt)
    h_n.detach_()  # a view raised here
    assert not h_n.requires_grad and y.requires_grad
    (grad,) = torch.autograd.grad(rnn.cell.forward_sequence(x, dt)[1].sum(), x)  # h_n's gradient still flows
    (expected,) = torch.autograd.grad(rnn.cell.forward_sequence(x, dt, fused=False)[1].sum(), x)
    torch.testing.assert_close(grad, expected)


def test_a_batch_first_dt_of_another_shape_is_refused_naming_every_accepted_form():
    """The message named a float, (B,) and (B, T) but not (B, T, 1), which is accepted."""
    rnn, x = CfC(3, 4), torch.randn(2, 5, 3)
    assert torch.equal(rnn(x, torch.full((2, 5, 1), 0.1))[0], rnn(x, 0.1)[0])
    for dt in (torch.ones(2, 3), torch.ones(2, 5, 2), torch.ones(3)):
        with pytest.raises(ValueError, match=r"dt must be a float, \(2,\), \(2, 5\) or \(2, 5, 1\) for input of"):
            rnn(x, dt)


def test_a_refused_dt_is_named_in_the_shape_it_was_given():
    """A time-major (T, B, 1) dt given to a batch-first model was named "got (5, 2)", and a step's (3, 1) dt for a
    batch of 2 "got (3,)": shapes the caller never passed, the trailing 1 dropped before the message."""
    rnn, x = CfC(3, 4), torch.randn(2, 5, 3)
    with pytest.raises(ValueError, match=r"for input of batch 2 and 5 steps; got \(5, 2, 1\)$"):
        rnn(x, torch.ones(5, 2, 1))
    with pytest.raises(ValueError, match=r"for a batch of 2; got \(3, 1\)$"):
        rnn.cell.step(x[:, 0], None, torch.ones(3, 1))


@pytest.mark.parametrize(
    "units, options",
    [(AutoNCP(8, 2, seed=1), {}), (8, {"backbone_layers": 0}), (8, {"backbone_layers": 0, "mode": "pure"})],
    ids=["wired", "no_backbone", "pure_no_backbone"],
)
def test_an_activation_on_a_cfc_without_a_backbone_is_warned_about_naming_it(units, options):
    """Only the backbone's layers have the activation: a wired CfC or one of backbone_layers=0 ignored it silently
    (activation="relu" gave the default's outputs; "gelu" ran the slower stepwise path for the same numbers). A
    warning, not a refusal: a checkpoint saved with it still loads and acts as it did."""
    for name in ("relu", "gelu", "tanh"):
        with pytest.warns(UserWarning, match=f"activation='{name}' has no effect on a CfC without a backbone"):
            model = CfC(3, units, activation=name, **options)
        with pytest.warns(UserWarning, match="has no effect"):
            assert build_core(model.config()).cell.config() == model.cell.config()
    with pytest.raises(ValueError, match="unknown activation 'nope'"):
        CfC(3, units, activation="nope", **options)
    model = CfC(3, units, activation="lecun_tanh", **options)  # the default, as every saved config() names it
    assert build_core(model.config()).cell.config() == model.cell.config()
    assert CfC(3, 8, activation="relu", backbone_units=4).cell.activation == "relu"  # with a backbone it acts


@pytest.mark.parametrize("name", ["ltc", "ltc_ncp_rk4", "ltc_exponential", "ltc_dopri5"])
def test_ltc_zero_dt_leaves_the_state_unchanged(name):
    cell = _core(name)
    x, _ = _data(batch=3, steps=1)
    state = torch.rand(3, cell.state_size)
    assert torch.equal(cell.step(x[:, 0], state, torch.zeros(3)), state)
    mixed = cell.step(x[:, 0], state, torch.tensor([0.0, 0.3, 0.0]))
    assert torch.equal(mixed[[0, 2]], state[[0, 2]]) and not torch.equal(mixed[1], state[1])


def test_padding_mask_holds_the_state_and_repeats_its_output():
    cell = _core("cfc_ncp")
    rnn = LiquidRNN(cell)
    x, dt = _data(batch=2, steps=6)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    out, h_n = rnn(x, dt, mask=mask)
    short_out, short_h = rnn(x[1:, :4], dt[1:, :4])
    torch.testing.assert_close(out[1, :4], short_out[0])
    torch.testing.assert_close(h_n[1], short_h[0])
    torch.testing.assert_close(out[1, 4], out[1, 3])
    torch.testing.assert_close(out[1, 5], out[1, 3])
    torch.testing.assert_close(out[0], rnn(x[:1], dt[:1])[0][0])
    h0 = torch.randn(2, cell.state_size)  # a masked first step keeps h0
    _, h_first = rnn(x[:, :1], dt[:, :1], h0=h0, mask=torch.tensor([[False], [True]]))
    torch.testing.assert_close(h_first[0], h0[0])


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("name", CORES)
def test_what_a_padded_step_holds_changes_no_output_and_no_gradient(name, fused):
    """A training audit: a masked step's state is held, but its update was still formed from its inputs, and backward
    multiplied a zero gradient by their local derivative: NaN padding (0 x NaN) made every weight's gradient NaN with
    a finite loss, on every path (the compiled CfC's forward too, before 5f1104f). Padding holds anything now."""
    cell = _core(name)
    x, dt = _data(batch=2, steps=6)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    results = []
    for fill_x, fill_dt in ((0.0, 0.0), (float("nan"), 0.0), (1e30, 1e3)):
        padded_x, padded_dt = x.clone(), dt.clone()
        padded_x[1, 4:], padded_dt[1, 4:] = fill_x, fill_dt
        padded_x.requires_grad_()
        cell.zero_grad()
        out, h_n = cell.advance_sequence(padded_x, padded_dt, None, mask, fused=fused)
        loss = out[0].pow(2).sum() + out[1, :4].pow(2).sum() + h_n.pow(2).sum()
        loss.backward()
        grads = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in cell.parameters()]
        grads.append(padded_x.grad[:, :4].clone())
        assert all(torch.isfinite(g).all() for g in grads) and torch.isfinite(loss)
        results.append((out.detach(), h_n.detach(), grads))
    for out, h_n, grads in results[1:]:
        torch.testing.assert_close(out, results[0][0])
        torch.testing.assert_close(h_n, results[0][1])
        for got, want in zip(grads, results[0][2], strict=True):
            torch.testing.assert_close(got, want)


@pytest.mark.parametrize("name", CORES)
def test_gradcheck_float64_through_inputs_dt_state_and_parameters(name):
    cell = _core(name, torch.float64)
    x, dt = _data(batch=2, steps=3, dtype=torch.float64, seed=4)
    h0 = 0.1 * torch.randn(2, cell.state_size, dtype=torch.float64)
    names = [n for n, p in cell.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in cell.parameters())
    rnn = LiquidRNN(cell)

    def run(x, dt, h0, *params):
        out, h_n = torch.func.functional_call(rnn, {f"cell.{n}": p for n, p in zip(names, params)}, (x, dt, h0))
        return out, h_n

    inputs = (x.requires_grad_(), dt.requires_grad_(), h0.requires_grad_()) + params
    fast = name == "ltc_dopri5"  # full Jacobians through adaptive stepping take ~10 s; a random projection ~0.5 s
    assert torch.autograd.gradcheck(run, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=fast)


@pytest.fixture(params=kernel_variants.VARIANTS)
def fused_backend(request, monkeypatch):
    """Run a test on every kernel variant (``kernel_variants.py``): the compiled kernels built for this CPU,
    without AVX-512, portable, and without them (torch sequences, numpy steps). Returns the backend name the
    dispatcher must report for a fused sequence / a no-grad step."""
    compiled = kernel_variants.use(request.param, monkeypatch) is not None
    return {"sequence": "compiled" if compiled else "torch", "step": "compiled" if compiled else "numpy"}


def _backends(ran, purpose):
    return {backend for _, p, backend in ran if p == purpose}


def _outputs_and_gradients(cell, x, dt, h0, mask):
    """A sequence's outputs, final state and the gradients of a loss w.r.t. inputs, dt, h0 and every weight."""
    tensors = [x, dt, h0] + list(cell.parameters())
    for tensor in tensors:
        tensor.grad = None
        tensor.requires_grad_()
    out, h_n = LiquidRNN(cell)(x, dt, h0=h0, mask=mask)
    (out.sin().sum() + h_n.pow(2).sum()).backward()
    return [out.detach(), h_n.detach()] + [t.grad.clone() for t in tensors]


def _assert_fused_equals_generic(cell, x, dt, h0, mask, monkeypatch, backend):
    """Outputs and every gradient of the fused sequence path equal autograd's graph of the per-step path, and
    each ran: the dispatcher reports ``backend`` (every block), then ``stepwise``."""
    with kernels.recording() as ran:
        fused = _outputs_and_gradients(cell, x, dt, h0, mask)
    assert _backends(ran, "sequence") == {backend}
    monkeypatch.setattr(kernels, "select", lambda *args: None)
    with kernels.recording() as ran:
        generic = _outputs_and_gradients(cell, x, dt, h0, mask)
    assert _backends(ran, "sequence") == {"stepwise"}
    for a, b in zip(fused, generic, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize(
    "options",
    [
        {"mode": "default", "backbone_units": 8},
        {"mode": "default", "backbone_layers": 0},
        {"mode": "no_gate", "backbone_layers": 3, "backbone_units": 8, "activation": "tanh"},
        {"mode": "pure", "backbone_units": 8, "activation": "relu"},
        {"mode": "no_gate", "backbone_layers": 0},
        {"units": "ncp"},
        {"units": "ncp", "mode": "pure"},
    ],
)
def test_fused_cfc_sequence_equals_the_step_by_step_graph(options, monkeypatch, fused_backend):
    """The hand-written backwards (CompiledCfC, TorchCfC) give autograd's gradients, with padding masks too; NCP-wired
    cells run one fused node per layer of the wiring."""
    torch.manual_seed(0)
    options = dict(options)
    units = AutoNCP(5, 2, seed=2) if options.pop("units", None) == "ncp" else 5
    cell = CfCCell(3, units, **options).double()
    x, dt = _data(batch=3, steps=6, dtype=torch.float64, seed=5)
    h0 = torch.randn(3, cell.state_size, dtype=torch.float64)
    mask = torch.tensor([[True] * 6, [True] * 3 + [False] * 3, [False, True] * 3])

    _assert_fused_equals_generic(cell, x, dt, h0, mask, monkeypatch, fused_backend["sequence"])


@pytest.mark.parametrize("name", ["cfc", "cfc_no_gate_2layers", "cfc_pure", "cfc_ncp", "ltc", "ltc_ncp_rk4"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_streaming_step_with_saturated_sigmoids_is_silent_on_every_kernel(name, dtype, fused_backend):
    """Without the compiled kernels, an LTC's step with an input of -20 (a sensor's raw reading) or a CfC's with a
    gap of 1000 s warned "RuntimeWarning: overflow encountered in exp" from numpy (an error under -W error or
    np.seterr(over="raise")), where the compiled kernels and torch return the same saturated states silently."""
    cell = _core(name, dtype).eval()
    x = torch.tensor([[-20.0, 0.5, 3.0], [-1e3, 1e3, -1e3], [1e3, -1e3, 1e3]], dtype=dtype)
    gap = 0.05 if name == "ltc_ncp_rk4" else 1e3  # past rk4's stability limit, SolverDivergedError
    state, dt = torch.zeros(3, cell.state_size, dtype=dtype), torch.tensor([0.05, gap, 0.05], dtype=dtype)
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        with torch.no_grad(), kernels.recording() as ran:
            fast = cell.step(x, state, dt)
        # the compiled LTC step is the semi-implicit solver's: rk4 steps in numpy
        assert _backends(ran, "step") == {"numpy" if name == "ltc_ncp_rk4" else fused_backend["step"]}
        with kernels.recording() as ran:
            reference = cell.step(x, state, dt)
        assert _backends(ran, "step") == {"stepwise"}
    torch.testing.assert_close(fast, reference.detach(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", ["native", "no_avx512", "portable"])
@pytest.mark.parametrize("kind", ["cfc_default", "cfc_no_gate_relu_2layers", "cfc_pure_no_backbone", "ltc"])
def test_compiled_float32_sequences_match_the_torch_path(kind, variant, monkeypatch):
    """float32 (the matrix kernels' precision) at sizes with tails: batch 11, 5 units, 37 backbone."""
    torch.manual_seed(1)
    cell = {
        "cfc_default": lambda: CfCCell(6, 5, backbone_units=37),
        "cfc_no_gate_relu_2layers": lambda: CfCCell(
            6, 5, mode="no_gate", backbone_units=37, backbone_layers=2, activation="relu"
        ),
        "cfc_pure_no_backbone": lambda: CfCCell(6, 5, mode="pure", backbone_layers=0),
        "ltc": lambda: LTCCell(6, 5),
    }[kind]()
    x, dt = _data(batch=11, steps=9, features=6, seed=3)
    h0 = torch.randn(11, 5)
    mask = torch.ones(11, 9, dtype=torch.bool)
    mask[3, 4:] = False
    kernel_variants.use(variant, monkeypatch)
    with kernels.recording() as ran:
        compiled = _outputs_and_gradients(cell, x, dt, h0, mask)
    assert _backends(ran, "sequence") == {"compiled"}
    kernel_variants.use("without", monkeypatch)
    with kernels.recording() as ran:
        reference = _outputs_and_gradients(cell, x, dt, h0, mask)
    assert _backends(ran, "sequence") == {"torch"}
    for a, b in zip(compiled, reference, strict=True):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("variant", ["native", "no_avx512", "portable"])
@pytest.mark.parametrize("activation", ["lecun_tanh", "relu", "silu"])
def test_a_nan_in_a_cfc_backbone_stays_nan_on_the_compiled_kernels_as_on_torch(activation, variant, monkeypatch):
    """A probe of the kernels on ARM and x86: the compiled relu (`u > 0 ? u : 0`) made a NaN 0, so a NaN input (or a
    diverged weight) gave finite outputs and states on the compiled path only, and the runner's finite-output check
    never fired; the torch and numpy paths, and the compiled tanh and silu, keep it NaN."""
    torch.manual_seed(0)
    cell = CfCCell(3, 4, backbone_units=8, activation=activation).eval()
    x, dt = torch.randn(1, 5, 3), torch.full((1, 5), 0.1)
    x[0, 2, 1] = float("nan")
    finite = {}
    for path in (variant, "without"):
        kernel_variants.use(path, monkeypatch)
        with torch.no_grad(), kernels.recording() as ran:
            out, _ = LiquidRNN(cell)(x, dt)
            state, steps = None, []
            for t in range(5):
                state = cell.step(x[:, t], state, dt[:, t])
                steps.append(bool(torch.isfinite(state).all()))
        assert _backends(ran, "sequence") == {"compiled" if path == variant else "torch"}
        finite[path] = (torch.isfinite(out).all(-1)[0].tolist(), steps)
    assert finite[variant] == finite["without"] == ([True, True, False, False, False],) * 2


@pytest.mark.filterwarnings("ignore:invalid value encountered in matmul")  # numpy, the inf state
@pytest.mark.parametrize("mode", ["default", "no_gate", "pure"])
def test_a_held_cfc_step_keeps_the_state_whatever_its_padding_or_state_holds(mode, fused_backend):
    """A kernel audit: the compiled CfC held a masked step as ``keep * new + (1 - keep) * h``, so NaN padding under
    ``mask=False`` (0 * NaN) made the held sample's state NaN, and an inf in the state ((1 - 1) * inf) a NaN on an
    ordinary step, on the compiled path only; torch and numpy select, as ``ltc.inc`` skips held steps."""
    torch.manual_seed(0)
    cell = CfCCell(3, 4, backbone_units=8, mode=mode).eval()
    x, dt = torch.randn(2, 5, 3), torch.full((2, 5), 0.1)
    mask = torch.ones(2, 5, dtype=torch.bool)
    x[1, :2], mask[1, :2] = float("nan"), False  # sample 1 left-padded with NaN
    with torch.no_grad(), kernels.recording() as ran:
        out, h_n = LiquidRNN(cell)(x, dt, mask=mask)
        state = torch.tensor([[float("inf"), 0.1, 0.2, 0.3]])
        stepped = cell.step(x[:1, 0], state, dt[:1, 0])
    assert _backends(ran, "sequence") == {fused_backend["sequence"]}
    assert _backends(ran, "step") == {fused_backend["step"]}
    with torch.no_grad():
        _, unpadded = LiquidRNN(cell)(x[1:, 2:], dt[1:, 2:])
    torch.testing.assert_close(h_n[1], unpadded[0])
    with kernels.recording() as ran:
        reference = cell.step(x[:1, 0], state, dt[:1, 0]).detach()
    assert _backends(ran, "step") == {"stepwise"} and torch.isfinite(reference).all()
    torch.testing.assert_close(stepped, reference)


@pytest.mark.parametrize(
    "change",
    [
        lambda core: setattr(core.solver, "substeps", 1),
        lambda core: setattr(core, "solver", make_solver("euler", substeps=2)),
        lambda core: setattr(core, "epsilon", 0.5),
    ],
    ids=["substeps", "solver", "epsilon"],
)
def test_a_streaming_ltc_step_follows_a_solver_or_epsilon_changed_after_it_was_prepared(change, fused_backend):
    """A kernel audit: the prepared step kernel fixed the solver's sub-steps and epsilon when it was built and was
    kept while only the weights were compared, so no-grad steps (the node's) went on with the old solver after
    ``core.solver = ...`` (ncps's ``ode_unfolds`` changed), where sequences and grad steps took the new one."""
    torch.manual_seed(0)
    core = LTCCell(3, 6)
    x, h, dt = torch.randn(2, 3), torch.rand(2, 6), torch.tensor([0.5, 0.2])
    with torch.no_grad():
        core.step(x, h, dt)  # prepares the step kernel
    change(core)
    with torch.no_grad(), kernels.recording() as ran:
        fast = core.step(x, h, dt)
    assert _backends(ran, "step") <= {fused_backend["step"], "numpy"}  # euler: the numpy step
    torch.testing.assert_close(fast, core.step(x, h, dt).detach(), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("units", [5, "ncp"])
def test_fused_ltc_sequence_equals_the_step_by_step_graph(units, monkeypatch, fused_backend):
    """The hand-written backwards (CompiledLTC, TorchLTC: semi_implicit) give autograd's gradients, masks and dt = 0
    too."""
    torch.manual_seed(0)
    cell = LTCCell(3, AutoNCP(8, 2, seed=3) if units == "ncp" else units, substeps=3).double()
    x, dt = _data(batch=3, steps=5, dtype=torch.float64, seed=6)
    dt[2, 1] = 0.0
    h0 = torch.randn(3, cell.state_size, dtype=torch.float64)
    mask = torch.tensor([[True] * 5, [True] * 2 + [False] * 3, [False, True] * 2 + [True]])

    _assert_fused_equals_generic(cell, x, dt, h0, mask, monkeypatch, fused_backend["sequence"])


# ---- the no-grad streaming kernel ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["cfc", "cfc_no_gate_2layers", "cfc_pure", "cfc_ncp", "ltc", "ltc_ncp_rk4", "ltc_exponential"]
)
@pytest.mark.parametrize("batch", [1, 3])
def test_streaming_step_kernels_equal_the_torch_path(name, batch, fused_backend):
    cell = _core(name).eval()
    x, dt = _data(batch=batch, steps=5)
    state_np = state_torch = None
    for t in range(5):
        with torch.no_grad(), kernels.recording() as ran:
            state_np = cell.step(x[:, t], state_np, dt[:, t])
        # the step kernel ran: compiled (semi-implicit LTC, every CfC) or numpy (the other LTC solvers)
        expected = "numpy" if name in ("ltc_ncp_rk4", "ltc_exponential") else fused_backend["step"]
        assert _backends(ran, "step") == {expected}
        with kernels.recording() as ran:
            state_torch = cell.step(x[:, t], state_torch, dt[:, t])  # grad enabled: the stepwise graph
        assert _backends(ran, "step") == {"stepwise"}
        torch.testing.assert_close(state_np, state_torch.detach(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["cfc", "cfc_ncp", "ltc"])
def test_a_gradient_of_a_gradient_through_a_fused_sequence_is_refused_not_zero(name, fused_backend):
    """The fused kernels have first derivatives only. create_graph=True through them raised only where autograd
    saw a path back to the inputs: a CfC's Hessian and gradient penalty came out zero, an LTC's Hessian wrong."""
    cell = _core(name)
    x, dt = _data(batch=2, steps=3)

    def loss(x, fused=True):
        return cell.output(cell.forward_sequence(x, dt, fused=fused)[0]).sin().sum()

    with kernels.recording() as ran, pytest.raises(RuntimeError, match=r"fused=False"):
        torch.autograd.functional.hessian(loss, x)
    assert _backends(ran, "sequence") == {fused_backend["sequence"]}
    with pytest.raises(RuntimeError, match=r"first derivatives only.*create_graph=True"):
        torch.autograd.grad(loss(x.clone().requires_grad_()), cell.parameters(), create_graph=True)
    assert torch.autograd.functional.hessian(lambda x: loss(x, fused=False), x).abs().sum() > 0  # the way out
    x.requires_grad_()  # first derivatives are unchanged
    torch.testing.assert_close(torch.autograd.grad(loss(x), x)[0], torch.autograd.grad(loss(x, False), x)[0])


@pytest.mark.parametrize("name", ["cfc", "cfc_ncp", "cfc_pure", "ltc", "ltc_exponential"])
def test_step_kernels_never_write_to_the_weights(name, fused_backend):
    cell = _core(name).eval()
    before = {k: v.clone() for k, v in cell.state_dict().items()}
    x, dt = _data(batch=2, steps=4)
    with torch.no_grad():
        state = None
        for t in range(4):
            state = cell.step(x[:, t], state, dt[:, t])
    for key, value in cell.state_dict().items():
        assert torch.equal(value, before[key]), key


def _scale_in_place(cell):
    with torch.no_grad():
        for p in cell.parameters():
            p.mul_(1.2)


def _assign_data(cell):
    for p in cell.parameters():
        p.data = p.data * 1.2


def _vector_to_parameters(cell):  # how evolution strategies load a candidate's weights
    vector = torch.nn.utils.parameters_to_vector(cell.parameters())
    torch.nn.utils.vector_to_parameters(vector * 1.2, cell.parameters())


def _zero_a_buffer(cell):  # LTC's sparsity mask
    with torch.no_grad():
        cell.sparsity_mask[0].zero_()


@pytest.mark.parametrize(
    "name, change",
    [
        ("cfc", _scale_in_place),
        ("cfc", _assign_data),
        ("cfc_ncp", _vector_to_parameters),
        ("ltc", _assign_data),
        ("ltc_exponential", _vector_to_parameters),
        ("ltc", _zero_a_buffer),
    ],
)
def test_step_kernels_follow_parameter_updates(name, change, fused_backend):
    """A no-grad step (the node's path) prepares the weights once and keeps them: ``p.data = ...``,
    ``vector_to_parameters`` and an in-place change of a buffer left it stepping with the old weights (0.05-0.37
    off the torch path), as only the parameters' in-place counters were compared."""
    cell = _core(name).eval()
    x, h = torch.randn(2, cell.input_size), 0.3 * torch.randn(2, cell.state_size)
    with torch.no_grad():
        before = cell.step(x, h, 0.1)
        change(cell)
        after = cell.step(x, h, 0.1)
    torch.testing.assert_close(after, cell.step(x, h, 0.1).detach())  # torch path (grad on)
    assert not torch.allclose(before, after)


def test_step_kernels_see_new_weights_even_at_a_reused_address(fused_backend):
    """A review: weights A prepared, then B and C loaded by vector_to_parameters: C was often allocated where A
    had been (A freed with B's load), and the kernel kept stepping with A (12 of 20 trials, ~2 off)."""
    cell = _core("cfc").eval()
    x, h = torch.randn(1, cell.input_size), 0.3 * torch.randn(1, cell.state_size)
    size = torch.nn.utils.parameters_to_vector(cell.parameters()).numel()
    for _ in range(20):
        for _load in range(3):  # A (stepped with), B, C
            with torch.no_grad():
                torch.nn.utils.vector_to_parameters(torch.randn(size), cell.parameters())
                stepped = cell.step(x, h, 0.1) if _load == 0 else None
        del stepped
        with torch.no_grad():
            fast = cell.step(x, h, 0.1)
        torch.testing.assert_close(fast, cell.step(x, h, 0.1).detach())


class _Stepper(torch.nn.Module):
    """``step`` as ``forward``, for ``torch.func.functional_call``."""

    def __init__(self, cell):
        super().__init__()
        self.cell = cell

    def forward(self, x, h, dt):
        return self.cell.step(x, h, dt)


def test_step_kernels_step_with_the_weights_functional_call_passes(fused_backend):
    """``torch.func.functional_call`` swaps other weights in by name: the no-grad step returned the module's own
    weights' result."""
    stepper = _Stepper(_core("cfc_ncp").eval())
    x, h = torch.randn(2, stepper.cell.input_size), 0.3 * torch.randn(2, stepper.cell.state_size)
    weights = {k: 1.2 * v.detach() for k, v in stepper.named_parameters()}
    with torch.no_grad():
        own = stepper(x, h, 0.1)
        with kernels.recording() as ran:
            swapped = torch.func.functional_call(stepper, weights, (x, h, 0.1))
        assert _backends(ran, "step") == {fused_backend["step"]}
        torch.testing.assert_close(stepper(x, h, 0.1), own)  # its own weights again afterwards
    torch.testing.assert_close(swapped, torch.func.functional_call(stepper, weights, (x, h, 0.1)).detach())
    assert not torch.allclose(own, swapped)


# ---- wirings --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: AutoNCP(19, 3, sparsity_level=0.7, seed=11),
        lambda: NCP(6, 5, 2, 3, 3, 4, 2, seed=4),
        lambda: FullyConnected(5, 2),
    ],
)
def test_wiring_dict_roundtrip_is_identical_through_json(make):
    wiring = make().build(4)
    again = Wiring.from_dict(json.loads(json.dumps(wiring.to_dict())))
    assert again == wiring
    assert (again.adjacency == wiring.adjacency).all() and again.layers == wiring.layers
    assert again.to_dict() == wiring.to_dict()


def test_ncp_structure_is_sensory_inter_command_motor():
    w = NCP(
        inter_neurons=6,
        command_neurons=5,
        motor_neurons=2,
        sensory_fanout=3,
        inter_fanout=3,
        recurrent_command_synapses=4,
        motor_fanin=2,
        seed=4,
    ).build(4)
    inter, command, motor = w.layers
    assert motor == [0, 1] and w.output_size == 2
    assert w.sensory_adjacency[:, command + motor].sum() == 0  # inputs reach only inter neurons
    assert (abs(w.sensory_adjacency[:, inter]).sum(0) > 0).all()  # ... all of them
    assert abs(w.adjacency[inter][:, inter + motor]).sum() == 0  # inter -> command only
    assert (abs(w.adjacency[command][:, motor]).sum(0) >= 2).all()  # every motor hears motor_fanin commands
    assert abs(w.adjacency[motor]).sum() == 0  # motor neurons project nowhere


def test_bad_wiring_arguments_are_value_errors():
    with pytest.raises(ValueError, match="output_size must be < units - 2"):
        AutoNCP(5, 3)
    with pytest.raises(ValueError, match="motor_fanin"):
        NCP(4, 2, 2, 2, 2, 1, motor_fanin=3)
    with pytest.raises(ValueError, match="built for 4 inputs"):
        AutoNCP(10, 2).build(4).build(5)
    with pytest.raises(ValueError, match="invalid wiring dict"):
        Wiring.from_dict({"units": 3})


# ---- config + checkpoints -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CORES)
def test_checkpoint_roundtrip_rebuilds_the_same_model(name, tmp_path):
    cell = _core(name)
    path = save_model(tmp_path / "sub" / f"{name}.pt", cell)
    loaded = load_model(path)
    assert type(loaded) is type(cell) and loaded.config() == cell.config()
    x, dt = _data()
    torch.testing.assert_close(LiquidRNN(loaded)(x, dt)[0], LiquidRNN(cell)(x, dt)[0], atol=0, rtol=0)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    json.dumps(cell.config())  # configs are plain data


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_a_model_comes_back_in_the_dtype_it_was_saved_in(dtype, tmp_path):
    """load_model rebuilt a float64 model in float32 and cast its weights down (its float64 inputs then failed
    with "mat1 and mat2 must have the same dtype")."""
    rnn = CfC(3, AutoNCP(10, 2, seed=1)).to(dtype)
    loaded = load_model(save_model(tmp_path / "m.pt", rnn))
    assert {p.dtype for p in loaded.parameters()} == {dtype}
    for name, value in rnn.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    if dtype == torch.float64:
        x, dt = _data(dtype=dtype)
        torch.testing.assert_close(loaded(x, dt)[0], rnn(x, dt)[0], atol=0, rtol=0)


@pytest.mark.parametrize("name", [*CORES, "ctrnn", "gru_ode", "tcn"])
def test_a_core_built_under_a_float64_default_dtype_is_float64_throughout(name):
    """Under torch.set_default_dtype(torch.float64) an LTC held its reversal potentials (erev, sensory_erev) and
    synapse masks in float32 beside float64 weights, as no torch module does: the learned potentials were stored
    rounded to float32, and with weights of two dtypes no kernel took the LTC (its training ran the stepwise graph,
    several times slower)."""
    extra = {"ctrnn": lambda: CTRNNCore(3, 5), "gru_ode": lambda: GRUODECore(3, 5), "tcn": lambda: TemporalConvCore(3)}
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        cell = extra[name]() if name in extra else CORES[name]()
    finally:
        torch.set_default_dtype(previous)
    assert {t.dtype for t in [*cell.parameters(), *cell.buffers()]} == {torch.float64}
    if isinstance(cell, LTCCell) and cell.solver.name == "semi_implicit":  # its kernels run it, as .double()'s
        x, dt = _data(dtype=torch.float64)
        with kernels.recording() as ran:
            LiquidRNN(cell)(x, dt)
        assert {b for _, p, b in ran if p == "sequence"} == {"compiled" if native.load() else "torch"}


def test_wired_model_reloads_with_identical_wiring(tmp_path):
    rnn = LTC(4, AutoNCP(12, 3, seed=5), solver="rk4", substeps=3)
    loaded = load_model(save_model(tmp_path / "m.pt", rnn))
    assert isinstance(loaded, LiquidRNN) and loaded.cell.wiring == rnn.cell.wiring
    assert loaded.cell.solver.config() == {"name": "rk4", "substeps": 3}
    x, dt = _data(features=4)
    torch.testing.assert_close(loaded(x, dt)[0], rnn(x, dt)[0], atol=0, rtol=0)
    assert build_core(rnn.config()).cell.wiring == rnn.cell.wiring


def test_corrupt_wrong_and_mismatched_files_raise_checkpoint_error(tmp_path):
    good = save_model(tmp_path / "good.pt", _core("cfc"))
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="corrupt.pt: not a readable checkpoint"):
        load_model(corrupt)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.ones(2)}, other)
    with pytest.raises(CheckpointError, match="other.pt: not a liquid_control.core checkpoint"):
        load_model(other)
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": "liquid_control.core", "obj": CfCCell(3, 4)}, pickled)  # would need pickled code
    with pytest.raises(CheckpointError, match="pickled.pt: not a readable checkpoint"):
        load_model(pickled)
    payload = torch.load(good, weights_only=True)
    payload["config"]["units"] = 7
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="mismatch.pt: weights do not match the config"):
        load_model(tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="missing.pt: no such checkpoint file"):
        load_model(tmp_path / "missing.pt")
    (tmp_path / "run").mkdir()  # was 'no such checkpoint file'
    with pytest.raises(CheckpointError, match="run: is a folder, not a checkpoint file"):
        load_model(tmp_path / "run")
    payload["format"] = "liquid_control.policy"  # was 'no format marker'
    torch.save(payload, tmp_path / "policy.pt")
    with pytest.raises(CheckpointError, match="policy.pt: a policy file, not a liquid_control.core .*load_policy"):
        load_model(tmp_path / "policy.pt")


@pytest.mark.parametrize("cls", [CfC, LTC])
def test_load_state_dict_refuses_the_synapse_masks_of_another_ncp_seed(cls, tmp_path):
    """Weights of AutoNCP seed 1 loaded into a core built with seed 2 (same sizes) replaced its masks: it ran seed
    1's synapses while its ``wiring`` and ``config()`` said seed 2's, and the checkpoint save_model wrote of it said
    so too."""
    trained, other = cls(5, AutoNCP(16, 2, seed=1)), cls(5, AutoNCP(16, 2, seed=2))
    with pytest.raises(RuntimeError, match=r"cell\..*mask.*: synapse masks of another wiring .*auto_ncp seed 2"):
        other.load_state_dict(trained.state_dict())
    same = cls(5, AutoNCP(16, 2, seed=1)).double()  # the same wiring loads, in any dtype
    same.load_state_dict(trained.state_dict())
    path, _ = _mutated_checkpoint(
        tmp_path, "seed.pt", lambda p: p.__setitem__("config", other.config()), model=trained
    )  # a checkpoint whose config was swapped for another seed's
    with pytest.raises(CheckpointError, match=r"(?s)seed.pt: weights do not match the config .*synapse masks"):
        load_model(path)


def test_save_model_refuses_a_config_value_load_model_could_not_read_back(tmp_path):
    """AutoNCP(..., sparsity_level=np.float64(0.5)) kept the numpy scalar in its config: save_model wrote a file
    that load_model refused as one holding pickled objects."""
    model = CfC(5, AutoNCP(16, 2, sparsity_level=np.float64(0.5), seed=3))
    with pytest.raises(
        TypeError, match=r"save_model: config\['cell'\]\['units'\]\['params'\]\['sparsity_level'\] is float64"
    ):
        save_model(tmp_path / "m.pt", model)
    assert list(tmp_path.iterdir()) == []
    plain = CfC(5, AutoNCP(16, 2, sparsity_level=0.5, seed=3))
    assert load_model(save_model(tmp_path / "m.pt", plain)).cell.wiring == plain.cell.wiring


def _mutated_checkpoint(tmp_path, name, mutate, model=None):
    good = save_model(tmp_path / "good.pt", model if model is not None else CfC(3, 4, backbone_units=8))
    payload = torch.load(good, weights_only=True)
    mutate(payload)
    torch.save(payload, tmp_path / name)
    return tmp_path / name, good


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_refused_naming_file_and_tensor(tmp_path, value):
    def poison(payload):
        payload["state_dict"]["cell.blocks.0.head_bias"][1] = value

    path, good = _mutated_checkpoint(tmp_path, "poisoned.pt", poison)
    with pytest.raises(CheckpointError, match=r"poisoned.pt: non-finite weights .* in cell.blocks.0.head_bias"):
        load_model(path)
    assert torch.isfinite(load_model(good).cell.blocks[0].head_bias).all()


@pytest.mark.parametrize("state", [[1, 2], None, "weights"])
def test_a_state_dict_that_is_not_a_dict_is_a_checkpoint_error(tmp_path, state):
    path, _ = _mutated_checkpoint(tmp_path, "state.pt", lambda p: p.__setitem__("state_dict", state))
    with pytest.raises(CheckpointError, match=rf"state.pt: its 'state_dict' is {type(state).__name__}, not a dict"):
        load_model(path)
    path, _ = _mutated_checkpoint(tmp_path, "nostate.pt", lambda p: p.pop("state_dict"))
    with pytest.raises(CheckpointError, match="nostate.pt: the checkpoint has no 'state_dict'"):
        load_model(path)
    path, _ = _mutated_checkpoint(
        tmp_path,
        "ints.pt",
        lambda p: p["state_dict"].__setitem__(
            "cell.blocks.0.head_bias", p["state_dict"]["cell.blocks.0.head_bias"].to(torch.int64)
        ),
    )
    with pytest.raises(CheckpointError, match="ints.pt: weights that are not floating-point tensors: cell.blocks.0"):
        load_model(path)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("batch_first", None, r"batch_first must be True or False, got NoneType None"),
        ("batch_first", 1, r"batch_first must be True or False, got int 1"),
        ("batch_first", float("nan"), r"batch_first must be True or False, got float nan"),
        ("units", 4, r"unexpected keyword argument 'units'"),
    ],
)
def test_config_values_of_the_wrong_type_are_refused_naming_the_key(tmp_path, key, value, message):
    path, good = _mutated_checkpoint(tmp_path, "config.pt", lambda p: p["config"].__setitem__(key, value))
    with pytest.raises(CheckpointError, match=r"config.pt: invalid model config \(.*" + message):
        load_model(path)
    assert load_model(good).batch_first is True


@pytest.mark.parametrize("wrapped", [False, True])
@pytest.mark.parametrize("key, value", [("tau_init", True), ("tau_init", float("inf")), ("units", 6.0)])
def test_a_continuous_time_core_config_is_type_checked_too(tmp_path, key, value, wrapped):
    from liquid_control.cells import build_core

    core = build_core({"type": "ctrnn", "input_size": 3, "units": 6})
    model = LiquidRNN(core) if wrapped else core

    def corrupt(payload):
        (payload["config"]["cell"] if wrapped else payload["config"])[key] = value

    path, good = _mutated_checkpoint(tmp_path, "ct.pt", corrupt, model)
    with pytest.raises(CheckpointError, match=rf"ct.pt: invalid model config.*{key} must be"):
        load_model(path)
    assert load_model(good).config() == model.config()
    with pytest.raises((TypeError, ValueError), match=rf"{key} must be"):  # refused where it is made, too
        build_core({"type": "ctrnn", "input_size": 3, "units": 6, key: value})
    with pytest.raises(TypeError, match="batch_first must be True or False"):
        LiquidRNN(core, batch_first=0)  # before: saved, then refused by load_model


def test_convenience_constructors_mirror_ncps():
    rnn = CfC(4, 8, mode="no_gate", backbone_units=16)
    assert isinstance(rnn.cell, CfCCell) and rnn.cell.mode == "no_gate" and rnn.output_size == 8
    ltc = LTC(4, AutoNCP(10, 2))
    assert (
        ltc.output_size == 2
        and ltc.state_size == 10
        and ltc.cell.solver.config() == {"name": "semi_implicit", "substeps": 6}
    )
    with pytest.raises(ValueError, match="unknown CfC mode"):
        CfC(4, 8, mode="fast")
    with pytest.raises(ValueError, match="wired CfC has no backbone"):
        CfC(4, AutoNCP(10, 2), backbone_units=16)
    with pytest.raises(ValueError, match="bad config for core type 'gru'"):
        build_core({"type": "gru", "input_size": 3, "units": 4})
    with pytest.raises(ValueError, match="unknown core type 'transformer'"):
        build_core({"type": "transformer"})


@pytest.mark.parametrize("name", sorted(CORES))
def test_an_empty_batch_is_an_empty_result_not_an_error(name):
    cell = _core(name).eval()
    x, dt = torch.randn(0, 4, 3), torch.rand(0, 4)
    with torch.no_grad():
        assert cell.step(x[:, 0], cell.initial_state(0), dt[:, 0]).shape == (0, cell.state_size)
    out, h_n = LiquidRNN(cell)(x.requires_grad_(), dt)
    assert out.shape == (0, 4, cell.output_size) and h_n.shape == (0, cell.state_size)


def test_tracing_records_the_stepwise_graph_and_later_steps_still_use_the_kernels():
    """ONNX export traces ``step``: it must see torch ops, and must not leave the core without its step kernel."""
    cell = _core("cfc").eval()

    class Step(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = cell

        def forward(self, x, h, dt):
            return self.cell.step(x, h, dt)

    x, h, dt = torch.randn(1, 3), torch.zeros(1, cell.state_size), torch.tensor([0.1])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracing (how the TorchScript ONNX exporter records) warns; not under test
        with kernels.recording() as ran:
            torch.jit.trace(Step(), (x, h, dt), check_trace=False)
        assert {b for _, p, b in ran if p == "step"} == {"stepwise"}
        with kernels.recording() as ran:
            cell.step(x, h, dt)
    assert ran == [("cfc", "step", "compiled" if native.load() is not None else "numpy")]


@pytest.mark.parametrize(
    "make, error, match",
    [
        # before: CfC(-4, 8) built a backbone of -4 + 8 = 4 inputs and failed only at forward ("expects -4 input
        # features"); CfC(4, 3.5) and CfC(4, True) built 3 and 1 units; LTC(4.0, 8) was taken as 4
        (lambda: CfC(-4, 8), ValueError, "input_size must be >= 1, got -4"),
        (lambda: CfC(0, 8), ValueError, "input_size must be >= 1, got 0"),
        (lambda: CfC(4, 3.5), TypeError, "units must be an integer, got float 3.5"),
        (lambda: CfC(4, True), TypeError, "units must be an integer, got bool True"),
        (lambda: CfC(4, float("nan")), TypeError, "units must be an integer"),
        (lambda: LTC(4.5, 8), TypeError, "input_size must be an integer, got float 4.5"),
        (lambda: LTC(4, 8.0), TypeError, "units must be an integer"),
        (lambda: LSTMCore(-2, 8), ValueError, "input_size must be >= 1"),
        (lambda: GRUCore(3, 2.5), TypeError, "hidden_size must be an integer"),
    ],
)
def test_sizes_that_are_not_positive_integers_are_refused_naming_the_argument(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_integer_sizes_of_any_integer_type_still_build():
    import numpy as np

    rnn = CfC(np.int64(4), np.int32(8))
    assert (rnn.input_size, rnn.output_size) == (4, 8) and type(rnn.cell.config()["input_size"]) is int


def test_ltc_takes_ncps_ode_unfolds():
    """Before: LTC(4, 8, ode_unfolds=3) raised "bad options for solver 'semi_implicit': ... unexpected keyword
    argument 'ode_unfolds'" although the docs call substeps ncps's ode_unfolds."""
    assert LTC(4, 8, ode_unfolds=3).cell.solver.config() == {"name": "semi_implicit", "substeps": 3}
    assert LTC(4, 8, solver="rk4", ode_unfolds=2).cell.solver.config() == {"name": "rk4", "substeps": 2}
    with pytest.raises(TypeError, match="substeps or ode_unfolds"):
        LTC(4, 8, substeps=2, ode_unfolds=3)


@pytest.mark.parametrize(
    "make, error, match",
    [
        # before: numpy's "Seed must be between 0 and 2**32 - 1" / "expected non-negative integer" / "Cannot cast
        # scalar from dtype('<U1')", and Python's "'float' object cannot be interpreted as an integer"
        (lambda: AutoNCP(16, 2, seed=-1), ValueError, r"seed must be in \[0, 4294967295\], got -1"),
        (lambda: AutoNCP(16, 2, seed=2**32), ValueError, r"seed must be in \[0, 4294967295\]"),
        (lambda: AutoNCP(16, 2, seed="a"), TypeError, "seed must be an integer, got str 'a'"),
        (lambda: FullyConnected(8, 2, seed=-1), ValueError, "seed must be >= 0, got -1"),
        (lambda: AutoNCP(16.5, 2), TypeError, "units must be an integer, got float 16.5"),
        (lambda: AutoNCP(16, 2.5), TypeError, "output_size must be an integer, got float 2.5"),
        (lambda: FullyConnected(8.5, 2), TypeError, "units must be an integer, got float 8.5"),
        (lambda: NCP(4.5, 4, 2, 2, 2, 2, 2), TypeError, "inter_neurons must be an integer, got float 4.5"),
        (lambda: NCP(4, 4, 2, -1, 2, 2, 2), ValueError, "sensory_fanout must be >= 0, got -1"),
        (lambda: AutoNCP(16, 2).build(3.5), TypeError, "input_size must be an integer, got float 3.5"),
    ],
)
def test_wiring_arguments_of_the_wrong_type_or_range_name_the_argument(make, error, match):
    with pytest.raises(error, match=match):
        make()
    w = AutoNCP(16, 2, seed=2**32 - 1).build(3)  # the seed range's end still draws
    assert w.is_built and w.units == 16
    # a review: FullyConnected draws from default_rng, which takes any seed >= 0 (only NCP's RandomState stops at
    # 2**32 - 1): a larger seed was refused, and a wiring saved with one could not be rebuilt
    assert FullyConnected(8, 2, seed=2**40).build(3).is_built


@pytest.mark.parametrize(
    "make, error, match",
    [
        # before: "math domain error", "math range error", "cannot convert float NaN to integer", OverflowError,
        # "'<' not supported between str and int", or silently truncated (3.7 -> 3, True -> 1, 2.7 -> 2)
        (lambda: CTRNNCore(3, 4, tau_init=1e-3), ValueError, r"tau_init must be finite and in \(0.001, 700.001\)"),
        (lambda: CTRNNCore(3, 4, tau_init=800.0), ValueError, "tau_init must be finite and in"),
        (lambda: GRUODECore(3, 4, rate_init=710.0), ValueError, r"rate_init must be finite and in \(0, 700\)"),
        (lambda: LTC(3, 4, substeps=True), ValueError, "semi_implicit: substeps must be an integer, got bool"),
        (lambda: LTC(3, 4, substeps=float("nan")), ValueError, "substeps must be an integer, got float nan"),
        (lambda: LTC(3, 4, solver="dopri5", max_steps=2.7), ValueError, "dopri5: max_steps must be an integer"),
        (lambda: TemporalConvCore(3, 3.7), TypeError, "hidden_size must be an integer, got float 3.7"),
        (lambda: TemporalConvCore(3, "32"), TypeError, "hidden_size must be an integer, got str '32'"),
        (lambda: TemporalConvCore(3, 8, frames=6.0), TypeError, "frames must be an integer"),
        (lambda: FrameStackMLP(3, 8, 2.5), TypeError, "frames must be an integer, got float 2.5"),
        (lambda: FrameStackMLP(3, 8, 2, layers=1.9), TypeError, "layers must be an integer, got float 1.9"),
        (lambda: CfC(4, 8, backbone_dropout="0.1"), TypeError, "backbone_dropout must be a number, got str"),
        (lambda: AutoNCP(10, 2, sparsity_level="0.5"), TypeError, "sparsity_level must be a number, got str"),
    ],
)
def test_core_arguments_of_the_wrong_type_or_range_name_the_argument(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize("make", [CfC, LTC])
@pytest.mark.parametrize("option", ["return_sequences", "mixed_memory", "proj_size"])
def test_ncps_options_this_package_lacks_are_named_with_what_to_do(make, option):
    """LTC(4, 8, mixed_memory=True) said "bad options for solver 'semi_implicit'", CfC a TypeError of CfCCell."""
    with pytest.raises(TypeError, match=f"ncps's option '{option}' is not supported: "):
        make(4, 8, **{option: 1})


def test_a_time_major_mask_is_checked_in_the_callers_layout():
    """Before: a time-major LiquidRNN given the documented (B, T) mask said "mask must have shape (2, 5), got (5, 2)"
    after transposing it, the opposite of what the caller passed and of what it needed ((T, B), like x and dt)."""
    rnn = CfC(4, 8, batch_first=False)
    x = torch.randn(5, 2, 4)
    with pytest.raises(
        ValueError, match=r"mask must have shape \(5, 2\), \(T, B\) \(batch_first=False\) like x; got \(2, 5\)"
    ):
        rnn(x, 0.1, mask=torch.ones(2, 5, dtype=torch.bool))
    out, _ = rnn(x, 0.1, mask=torch.ones(5, 2, dtype=torch.bool))
    assert out.shape == (5, 2, 8)
    with pytest.raises(ValueError, match=r"mask must have shape \(2, 5\), \(B, T\) like x; got \(2, 4\)"):
        CfC(4, 8)(torch.randn(2, 5, 4), 0.1, mask=torch.ones(2, 4, dtype=torch.bool))


def test_a_time_major_dt_from_numpy_or_a_list_is_laid_out_like_a_tensor():
    """Before: a time-major LiquidRNN transposed a (T, B) dt only when it was a torch tensor: the same numbers as a
    numpy array or a list were read as (B, T), silently wrong when T == B and refused with "(2, 5) ... got (5, 2)"
    otherwise; a (B, T) tensor was refused naming the transposed shape."""
    import numpy as np

    torch.manual_seed(0)
    rnn = CfC(4, 8, batch_first=False)
    x, dt = torch.randn(3, 3, 4), torch.rand(3, 3)  # T == B
    want, _ = rnn(x, dt)
    for same in (dt.numpy(), dt.tolist()):
        torch.testing.assert_close(rnn(x, same)[0], want, rtol=0, atol=0)
    for bad in (torch.rand(2, 5), np.random.rand(2, 5)):
        with pytest.raises(ValueError, match=r"\(T, B\) = \(5, 2\) like x \(batch_first=False\); got \(2, 5\)"):
            rnn(torch.randn(5, 2, 4), bad)


def test_a_numpy_or_list_mask_works_like_a_tensor_one():
    """Before: AttributeError 'numpy.ndarray' object has no attribute 'to' (a list: no attribute 'shape')."""
    torch.manual_seed(0)
    rnn, x = CfC(4, 8), torch.randn(2, 5, 4)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3:] = False
    want, _ = rnn(x, 0.1, mask=mask)
    for same in (mask.numpy(), mask.tolist()):
        torch.testing.assert_close(rnn(x, 0.1, mask=same)[0], want, rtol=0, atol=0)


@pytest.mark.parametrize("epsilon", [float("nan"), float("inf"), -1.0, "1e-8"])
def test_an_ltc_epsilon_that_is_not_a_small_non_negative_number_is_refused(epsilon):
    """Before: LTC(4, 8, epsilon=nan) built and every output was NaN; a negative epsilon can cancel the leak."""
    with pytest.raises(ValueError, match=r"epsilon must be a finite number >= 0"):
        LTC(4, 8, epsilon=epsilon)
    assert LTC(4, 8, epsilon=0).cell.epsilon == 0.0


def test_an_ltc_epsilon_of_a_numpy_scalar_is_taken():
    """A review: np.float32(1e-8) (a value read from an array or an ncps config) was refused as "epsilon must be a
    finite number >= 0", which it is; any real number type is taken, as RunnerLimits takes them."""
    import numpy as np

    assert LTC(4, 8, epsilon=np.float32(1e-8)).cell.epsilon == pytest.approx(1e-8)
    assert LTC(4, 8, epsilon=np.int64(0)).cell.epsilon == 0.0


def test_cfc_backbone_sizes_that_are_not_integers_are_refused():
    """Before: CfC(4, 8, backbone_units=2.5, backbone_layers=1.5) built a backbone of 1 layer of 2 units silently."""
    with pytest.raises(TypeError, match="backbone_units must be an integer, got float 2.5"):
        CfC(4, 8, backbone_units=2.5)
    with pytest.raises(TypeError, match="backbone_layers must be an integer, got float 1.5"):
        CfC(4, 8, backbone_layers=1.5)
    assert CfC(4, 8, backbone_units=0, backbone_layers=0).cell.backbone_layers == 0  # ncps's no-backbone form


def test_a_numpy_or_list_state_works_like_a_tensor_one():
    """Before: an h0 given as a numpy array was refused with "h0 must have x's dtype and device (torch.float32, cpu),
    got float32, cpu" (the same dtype), as a list with AttributeError 'list' object has no attribute 'shape', and
    ``step`` failed alike on an array state or x, where x, dt and mask may be arrays or lists."""
    torch.manual_seed(0)
    rnn, x = CfC(4, 8), torch.randn(2, 5, 4)
    h0 = torch.randn(2, 8)
    want, want_h = rnn(x, 0.1, h0=h0)
    for same in (h0.numpy(), h0.tolist()):
        out, h_n = rnn(x, 0.1, h0=same)
        torch.testing.assert_close(out, want, rtol=0, atol=0)
        torch.testing.assert_close(h_n, want_h, rtol=0, atol=0)
        torch.testing.assert_close(rnn(x[0], 0.1, hx=same[0])[0], rnn(x[0], 0.1, h0=h0[0])[0], rtol=0, atol=0)
        states, _ = rnn.cell.forward_sequence(x.numpy(), 0.1, same)
        torch.testing.assert_close(rnn.cell.output(states), want, rtol=0, atol=0)
    for grad in (True, False):  # the torch graph and the step kernels
        with torch.set_grad_enabled(grad):
            step = rnn.cell.step(x[:, 0], h0, 0.1)
            for same in (h0.numpy(), h0.tolist()):
                torch.testing.assert_close(rnn.cell.step(x[:, 0].numpy(), same, 0.1), step, rtol=0, atol=0)
    with pytest.raises(
        ValueError, match=r"h0 must have x's dtype and device \(torch.float32, cpu\), got torch.float64"
    ):
        rnn(x, 0.1, h0=h0.double().numpy())


def test_a_time_major_dt_is_checked_in_the_callers_layout_in_every_form():
    """Before: a time-major (T,) dt (one step length per time step, T != B) was refused as "(2,) or (2, 5) ... got
    (5,)", naming the batch-first (B, T) the caller must not pass; a (T, B, 2) dt was named after its transpose."""
    torch.manual_seed(0)
    rnn, x, dt = CfC(4, 8, batch_first=False), torch.randn(5, 2, 4), torch.rand(5, 2)
    for bad in (torch.rand(5), torch.rand(5, 2, 2)):
        with pytest.raises(ValueError, match=r"\(T, B\) = \(5, 2\) like x \(batch_first=False\); got \(5"):
            rnn(x, bad)
    torch.testing.assert_close(rnn(x, dt[..., None])[0], rnn(x, dt)[0], rtol=0, atol=0)
    torch.testing.assert_close(rnn(x, dt[0])[0], rnn(x, dt[:1].expand(5, 2))[0], rtol=0, atol=0)  # (B,)
