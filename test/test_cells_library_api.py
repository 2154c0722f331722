"""The cells used as a PyTorch library, the way torch.nn.RNN and ncps users use them: autocast, torch.func,
the meta device and TorchScript, on the compiled kernels and without them."""

import kernel_variants
import pytest
import torch

from liquid_control.cells import LTC, AutoNCP, CfC, GRUCore, LiquidRNN, kernels

torch.set_num_threads(1)

MODELS = {
    "cfc": lambda: CfC(3, 5, backbone_units=8),
    "cfc_ncp": lambda: CfC(3, AutoNCP(8, 2, seed=1)),
    "ltc": lambda: LTC(3, AutoNCP(8, 2, seed=1)),
    "gru": lambda: LiquidRNN(GRUCore(3, 5)),
}


def _model(name):
    torch.manual_seed(0)
    return MODELS[name]()


def _data(batch=2, steps=6):
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, steps, 3, generator=g), 0.05 + 0.3 * torch.rand(batch, steps, generator=g)


@pytest.fixture(params=["native", "without"])
def backend(request, monkeypatch):
    """The compiled kernels built for this CPU, or none (torch sequences, numpy steps)."""
    return "compiled" if kernel_variants.use(request.param, monkeypatch) is not None else "torch"


def test_a_compiled_streaming_step_leaves_the_eager_steps_their_kernel():
    """A review found: the kernel chosen while dynamo traced core.step (none: the stepwise graph) was cached, so
    every eager step after one compiled step ran the stepwise graph instead of the compiled or numpy kernel."""
    x, dt = _data()

    def eager_paths(model):
        with torch.no_grad(), kernels.recording() as ran:
            state = model.cell.step(x[:, 0], None, dt[:, 0])
        return {path for _, _, path in ran}, state

    expected_paths, expected = eager_paths(_model("cfc"))  # a fresh model's first eager step
    model = _model("cfc")
    torch._dynamo.reset()
    with torch.no_grad():  # compiled first, before any eager step filled the kernel cache
        compiled = torch.compile(model.cell.step, backend="eager")(x[:, 0], None, dt[:, 0])
    torch.testing.assert_close(compiled, expected)
    paths, state = eager_paths(model)
    assert paths == expected_paths != {"stepwise"}, paths
    torch.testing.assert_close(state, expected)


@pytest.mark.parametrize("core", ["lstm", "gru"])
def test_the_discrete_baselines_vmap_and_take_gradients_per_sample(core):
    """Before: vmap over an LSTM core failed ("Batching rule not implemented for aten::lstm_cell. We could not
    generate a fallback"), and over a GRU core it looped over the batch with torch's performance warning. Under
    torch.func transforms their cells run in plain ops, the numbers of the batched call."""
    import warnings

    from liquid_control.cells import build_core

    torch.manual_seed(0)
    model = LiquidRNN(build_core({"type": core, "input_size": 3, "hidden_size": 5}))
    x, dt = _data()
    expected = model(x, dt)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        per_sample = torch.func.vmap(lambda xi, di: model(xi, di)[0])(x, dt)
        grad = torch.func.grad(lambda xs: model(xs, dt)[0].sin().sum())(x)
    torch.testing.assert_close(per_sample, expected)
    x.requires_grad_()
    (expected_grad,) = torch.autograd.grad(model(x, dt)[0].sin().sum(), x)
    torch.testing.assert_close(grad, expected_grad)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_under_autocast_a_model_runs_in_its_weights_dtype_and_gives_its_own_numbers(name, backend):
    """Before: under torch.autocast("cpu", bfloat16) the stepwise graph failed inside torch ("expected dtype
    c10::BFloat16 for `weight` but got dtype float"), the fused torch kernel too ("self and mat2 must have the
    same dtype"), and the compiled kernel ran float32: one model, three behaviours. Now every path runs with
    autocast off in the weights' dtype, and a bfloat16 x from an autocast layer before it is taken."""
    model = _model(name)
    x, dt = _data()
    h0 = 0.1 * torch.randn(2, model.state_size)
    expected, expected_h = model(x, dt, h0)
    with torch.no_grad():
        expected_step = model.cell.step(x[:, 0], h0, dt[:, 0])
    expected_stepwise = model.cell.forward_sequence(x, dt, h0, fused=False)[0]
    encoder = torch.nn.Linear(3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, h_n = model(x, dt, h0)
        stepwise = model.cell.forward_sequence(x, dt, h0, fused=False)[0]
        with torch.no_grad():
            step = model.cell.step(x[:, 0], h0, dt[:, 0])
        encoded = encoder(x)
        assert encoded.dtype == torch.bfloat16
        from_encoder, _ = model(encoded, dt, h0)
        from_encoder.sum().backward()  # the gradient reaches the autocast layer through the cast
    assert out.dtype == h_n.dtype == from_encoder.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    torch.testing.assert_close(h_n, expected_h, rtol=0, atol=0)
    torch.testing.assert_close(stepwise, expected_stepwise, rtol=0, atol=0)
    torch.testing.assert_close(step, expected_step, rtol=0, atol=0)
    assert encoder.weight.grad is not None and torch.isfinite(encoder.weight.grad).all()


@pytest.mark.parametrize("name", ["cfc", "cfc_ncp", "ltc"])
def test_torch_func_transforms_run_the_stepwise_graph_and_give_the_batched_numbers(name, backend):
    """Before: vmap, grad and jacrev over a CfC/LTC failed inside torch ("an autograd.Function ... must override
    the setup_context staticmethod": the fused sequence node), a vmapped no-grad step in the compiled or numpy
    step kernel ("Cannot access data pointer of Tensor that doesn't have storage"), and a vmapped dt in its own
    check. Now a transform runs the stepwise graph, and dt's values are still checked."""
    model = _model(name)
    x, dt = _data()
    expected = model(x, dt)[0]
    with kernels.recording() as ran:
        per_sample = torch.func.vmap(lambda xi, di: model(xi, di)[0])(x, dt)
        grad = torch.func.grad(lambda xs: model(xs, dt)[0].sin().sum())(x)
        with torch.no_grad():
            model.cell.step(x[:, 0], None, dt[:, 0])  # a step kernel cached before the transform is not used in it
            steps = torch.func.vmap(lambda xi, di: model.cell.step(xi[None], None, di[None])[0])(x[:, 0], dt[:, 0])
    ran_in_transforms = {(purpose, path) for _, purpose, path in ran}
    assert ran_in_transforms == {
        ("sequence", "stepwise"),
        ("step", backend.replace("torch", "numpy")),
        ("step", "stepwise"),
    }
    torch.testing.assert_close(per_sample, expected)
    x.requires_grad_()
    (expected_grad,) = torch.autograd.grad(model(x, dt)[0].sin().sum(), x)
    torch.testing.assert_close(grad, expected_grad)
    with torch.no_grad():
        torch.testing.assert_close(steps, model.cell.step(x[:, 0], None, dt[:, 0]))
    bad = dt.clone()
    bad[1, 2] = -0.1
    with pytest.raises(ValueError, match="dt must be finite and >= 0"):
        torch.func.vmap(lambda xi, di: model(xi, di)[0])(x.detach(), bad)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_model_on_the_meta_device_gives_the_shapes_of_its_outputs(name, backend):
    """Before: a model moved to the meta device (shape inference, deferred initialisation) failed in dt's check
    ("Tensor.item() cannot be called on meta tensors"), where torch's own modules give meta outputs."""
    model = _model(name)
    x, dt = _data()
    expected, expected_h = model(x, dt)
    meta = model.to("meta")
    out, h_n = meta(x.to("meta"), dt.to("meta"))
    single, single_h = meta(x[0].to("meta"), 0.1)
    with torch.no_grad():
        step = meta.cell.step(x[:, 0].to("meta"), None, 0.1)
    assert out.is_meta and h_n.is_meta and step.is_meta
    assert (out.shape, h_n.shape) == (expected.shape, expected_h.shape)
    assert (single.shape, single_h.shape) == (expected.shape[1:], expected_h.shape[1:])
    assert step.shape == expected_h.shape


WIRED = {
    "ltc_fully_connected": lambda seed=1: LTC(3, 5),
    "ltc_ncp": lambda seed=1: LTC(3, AutoNCP(8, 2, seed=seed)),
    "cfc_ncp": lambda seed=1: CfC(3, AutoNCP(8, 2, seed=seed)),
}


@pytest.mark.parametrize("name", sorted(WIRED))
def test_a_model_built_on_the_meta_device_loads_its_weights_and_still_refuses_another_wiring(name, backend):
    """Before: the synapse masks in a state dict were compared with the core's mask buffers, so torch's deferred
    initialisation failed for every LTC and wired CfC: on the meta device load_state_dict(assign=True) raised
    "aten::equal ... Meta tensors", and after to_empty() load_state_dict refused the file as "synapse masks of
    another wiring" (compared with uninitialised memory). Now they are compared with the masks the wiring defines."""
    torch.manual_seed(0)
    trained = WIRED[name]()
    x, dt = _data()
    expected, expected_h = trained(x, dt)
    for assign in (True, False):
        with torch.device("meta"):
            model = WIRED[name]()
        if not assign:
            model.to_empty(device="cpu")
        model.load_state_dict(trained.state_dict(), assign=assign)
        out, h_n = model(x, dt)
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
        torch.testing.assert_close(h_n, expected_h, rtol=0, atol=0)
    if name.endswith("_ncp"):
        with torch.device("meta"):
            other = WIRED[name](seed=2)
        with pytest.raises(RuntimeError, match="synapse masks of another wiring .*auto_ncp seed 2"):
            other.load_state_dict(trained.state_dict(), assign=True)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_torch_jit_script_is_refused_naming_what_works_and_a_trace_runs(name):
    """Before: torch.jit.script failed on the first Python construct it met ("Unknown type annotation: 'int'")."""
    model = _model(name)
    for scripted in (model, model.cell, torch.nn.Sequential(model.cell)):
        with pytest.raises(TypeError, match=r"cannot compile .*torch\.jit\.trace"):
            torch.jit.script(scripted)
    x, dt = _data()
    traced = torch.jit.trace(model, (x, dt), check_trace=False)
    other_x, other_dt = _data(batch=3)
    torch.testing.assert_close(traced(other_x, other_dt)[0], model(other_x, other_dt)[0])


@pytest.mark.parametrize("name", ["cfc", "ltc"])
def test_torch_compile_traces_a_model_whole_warning_nothing_and_still_refuses_a_bad_dt(name):
    """docs/ARCHITECTURE.md names torch.compile as what works. Before: it ran with graph breaks and a UserWarning per
    process ('Dynamo does not know how to trace the builtin ... is_functorch_wrapped_tensor', and for the LTC
    'Tensor.new_empty', its compiled kernel), and fullgraph=True failed ('Attempted to call function marked as
    skipped'). Under dynamo the cells run their torch graph (dynamo sees through it) and check dt inside it."""
    import warnings

    model = _model(name)
    x, dt = _data()
    mask = torch.ones(dt.shape, dtype=torch.bool)
    mask[0, 2] = False
    expected, state = model(x, dt, mask=mask)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="eager", fullgraph=True)  # dynamo's capture without a C++ build
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        outputs, compiled_state = compiled(x, dt, mask=mask)
    torch.testing.assert_close(outputs, expected)
    torch.testing.assert_close(compiled_state, state)
    outputs.pow(2).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    bad = dt.clone()
    bad[1, 3] = float("nan")
    with pytest.raises(RuntimeError, match=r"dt must be finite and >= 0"):
        compiled(x, bad, mask=mask)


@pytest.mark.parametrize("optimizer", [torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD])
@pytest.mark.parametrize("name", ["cfc", "cfc_ncp", "ltc"])
def test_step_kernels_see_the_weights_a_fused_optimizer_wrote(name, optimizer, backend):
    """Before: torch's fused optimizers (fused=True) update the weights without bumping their version counters,
    so the step kernel prepared before an optimizer step kept stepping with the old weights (0.17-0.97 off)."""
    model = _model(name)
    x, dt = _data()

    def steps(m):
        with torch.no_grad(), kernels.recording() as ran:
            state = None
            for t in range(x.shape[1]):
                state = m.cell.step(x[:, t], state, dt[:, t])
        assert {path for _, _, path in ran} == {backend.replace("torch", "numpy")}
        return state

    steps(model)  # the step kernel is prepared
    opt = optimizer(model.parameters(), lr=0.1, fused=True)
    model(x, dt)[0].pow(2).sum().backward()
    opt.step()
    fresh = MODELS[name]()
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(steps(model), steps(fresh), rtol=0, atol=0)


def test_a_packed_sequence_is_refused_naming_the_padded_input_and_mask_that_do_its_work():
    """Before: torch.as_tensor's "Could not infer dtype of NoneType". The refusal's recipe gives h_n after each
    sample's last step, as torch.nn.RNN's does for a PackedSequence."""
    model = _model("cfc")
    samples = [torch.randn(5, 3), torch.randn(3, 3)]
    packed = torch.nn.utils.rnn.pack_sequence(samples)
    with pytest.raises(TypeError, match="not a PackedSequence: .*pad_packed_sequence"):
        model(packed)
    x, lengths = torch.nn.utils.rnn.pad_packed_sequence(packed, batch_first=True)
    _, h_n = model(x, mask=torch.arange(x.shape[1]) < lengths[:, None])
    for sample, state in zip(samples, h_n, strict=True):
        torch.testing.assert_close(state, model(sample)[1])
