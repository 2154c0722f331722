"""The policy's cheaper inference step against the code it replaced, bit for bit (issue 11).

Closed-loop outcomes are chaotic (a last-bit difference flips episodes) and the shipped policies' cards quote
results, so the faster ``Policy.step`` / ``forward_sequence`` and ``CameraEncoder`` must give exactly the old
numbers: actions, states, features and gradients ``torch.equal`` to the reference below, a copy of the replaced
code paths (as they were before issue 11's changes), for every shipped policy, every camera normalisation, one
and several lanes. Layout matters too: the convolutions' and reductions' float32 sums depend on the memory
layout of their inputs, so the normalised frames must keep theirs.
"""

import math

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from liquid_control.cells.dt import sequence_dt, step_dt, substep_counts
from liquid_control.evaluation.batched import BatchedPolicy
from liquid_control.paths import policies_dir
from liquid_control.policy import Policy, load_config, load_policy
from liquid_control.policy.config import CAMERA_NORMALIZATIONS
from liquid_control.policy.encoders import _LOG_EPS, _NORMALIZE_EPS, CameraEncoder, _mean_over

SHIPPED = sorted(policies_dir().glob("*.pt"))


# ------------------------------------------------------------------------------------------------ reference
def reference_scale(encoder: CameraEncoder, image: torch.Tensor) -> torch.Tensor:
    """``CameraEncoder.scale`` as it was, but for one deliberate change (2026-12-07): a uint8 frame's log (the
    chromaticity and retinex modes) is that of the exact pixel value rounded once to the weights' dtype, no longer
    float32 ``log`` of float32 ``pixel / 255 + eps``, whose rounding the ONNX export did not share."""
    x = image.permute(0, 3, 1, 2).to(encoder.project.weight.dtype) / 255.0
    if encoder.normalize == "none":
        return x - 0.5
    if encoder.normalize in ("chromaticity", "chromaticity_brightness", "retinex"):
        if image.dtype == torch.uint8:
            exact = torch.log(image.permute(0, 3, 1, 2).to(torch.float64) / 255.0 + _LOG_EPS)
            log = torch.empty_like(x).copy_(exact)  # in the frame's layout, as x is
        else:
            log = torch.log(x + _LOG_EPS)
    if encoder.normalize in ("chromaticity", "chromaticity_brightness"):
        brightness = log.mean(dim=1, keepdim=True)
        x = log - brightness
        if encoder.normalize == "chromaticity_brightness":
            x = torch.cat((x[:, :2], brightness), dim=1)
    elif encoder.normalize == "retinex":
        log = log - log[:, :, :1, :1]
        x = log - encoder._blur(log)
    dims = (3, 2, 1) if encoder.normalize == "frame" else (3, 2)
    x = x - (x[:, :1, :1, :1] if encoder.normalize == "frame" else x[:, :, :1, :1])
    centred = x - _mean_over(x, dims)
    std = _mean_over(centred * centred, dims).add(_NORMALIZE_EPS**2).sqrt()
    return centred / std


def reference_camera(encoder: CameraEncoder, image: torch.Tensor) -> torch.Tensor:
    """``CameraEncoder.forward`` as it was (module calls)."""
    return torch.tanh(encoder.norm(encoder.project(encoder.conv(reference_scale(encoder, image)).flatten(1))))


def reference_encode_with(policy: Policy, name: str, obs: dict, lead: tuple) -> torch.Tensor:
    """``Policy.encode_with`` as it was (its input checks left out: they did not change)."""
    if name == "vectors":
        parts = [torch.as_tensor(obs[key]).to(torch.float32) for key in policy.vector_keys]
        return policy.vectors(torch.cat(parts, dim=-1).reshape(-1, sum(policy.vector_sizes))).reshape(lead + (-1,))
    if "image_index" in obs:
        index = torch.as_tensor(obs["image_index"]).long()
        frames = torch.as_tensor(obs["image"])
        batch, count = frames.shape[:2]
        features = reference_camera(policy.camera, frames.reshape((batch * count,) + tuple(frames.shape[2:])))
        flat = index + torch.arange(batch).reshape((batch,) + (1,) * (index.dim() - 1)) * count
        return features[flat.reshape(-1)].reshape(lead + (-1,))
    image = torch.as_tensor(obs["image"])
    return reference_camera(policy.camera, image.reshape((-1,) + tuple(image.shape[len(lead) :]))).reshape(lead + (-1,))


def reference_act(policy: Policy, y: torch.Tensor) -> torch.Tensor:
    """``Policy.act_from_output`` as it was."""
    t = torch.tanh(policy.head(y))
    return policy.action_low + (t + 1.0) * 0.5 * (policy.action_high - policy.action_low)


def reference_advance(policy: Policy, features, time, core_state, dt):
    """``Policy.advance`` as it was."""
    x = torch.cat([features, time.to(features.dtype)], dim=-1)
    if dt.dtype != x.dtype:
        dt = dt.to(x.dtype)
    core_state = core_state.contiguous()
    counts = None if policy.max_step is None else substep_counts(dt, policy.max_step)
    n = 1 if counts is None else int(counts.max())
    if n == 1:
        core_state = policy.core_step(x, core_state, dt)
    else:
        h = dt / counts
        for i in range(n):
            stepped = policy.core_step(x, core_state, h)
            core_state = stepped if i == 0 else torch.where((counts > i)[:, None], stepped, core_state)
    return reference_act(policy, policy.core.output(core_state)), core_state


def reference_step(policy: Policy, obs: dict, state, dt, encode=None):
    """``Policy.step`` as it was (valid inputs)."""
    dt = step_dt(dt, None, torch.float32)
    lead = (dt.shape[0],)
    if state is None:
        state = policy.initial_state(dt.shape[0], dtype=policy.action_low.dtype)
    encode = (encode,) if isinstance(encode, str) else encode
    core_state, cached = policy.split_state(state)
    parts, offset = [], 0
    for name, size in zip(policy.encoder_names, policy.encoder_sizes):
        if encode is None or name in encode:
            parts.append(reference_encode_with(policy, name, obs, lead).to(cached.dtype))
            assert bool(torch.isfinite(parts[-1]).all())
        else:
            parts.append(cached[:, offset : offset + size])
        offset += size
    features = torch.cat(parts, dim=-1)
    times = policy.time_inputs(obs, lead)
    action, core_state = reference_advance(policy, features, times, core_state, dt)
    return action, torch.cat([core_state, features], dim=-1)


def reference_forward_sequence(policy: Policy, obs: dict, dt, h0=None, mask=None):
    """``Policy.forward_sequence`` as it was (no sub-steps: the sequences below stay under max_step)."""
    dt = torch.as_tensor(dt)
    batch, steps = dt.shape
    dt = sequence_dt(dt, batch, steps, torch.float32)
    lead = (batch, steps)
    features = torch.cat([reference_encode_with(policy, name, obs, lead) for name in policy.encoder_names], dim=-1)
    if dt.dtype != features.dtype:
        dt = dt.to(features.dtype)
    x = torch.cat([features, policy.time_inputs(obs, lead).to(features.dtype)], dim=-1)
    core_h0 = None if h0 is None else policy.split_state(h0)[0].contiguous()
    if policy.max_step is not None:
        assert not bool((substep_counts(dt, policy.max_step) > 1).any())
    outputs, core_hn = policy.core.advance_sequence(
        x, policy._core_dt(dt), core_h0, mask, fused=policy.fused_sequence, readout=True
    )
    return reference_act(policy, outputs), torch.cat([core_hn, policy._last_features(features, h0, mask)], dim=-1)


# ------------------------------------------------------------------------------------------------ inputs
def frames(rng, shape, kind="random"):
    """uint8 frames: random, flat (one colour per frame), low contrast (4 grey levels) or saturated (0 / 255)."""
    if kind == "flat":
        return np.broadcast_to(rng.integers(0, 256, shape[:-3] + (1, 1, 3)), shape).astype(np.uint8)
    if kind == "low_contrast":
        return rng.integers(100, 104, shape).astype(np.uint8)
    if kind == "saturated":
        return rng.choice(np.array([0, 255], np.uint8), shape)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def observation(policy: Policy, rng, lead: tuple, kind="random") -> dict:
    """Random inputs of every key the policy reads, with leading dims ``lead``."""
    obs = {}
    image = policy.config["observation"]["image"]
    if image is not None:
        obs["image"] = torch.from_numpy(frames(rng, lead + (image["height"], image["width"], 3), kind))
    for key, size in zip(policy.vector_keys, policy.vector_sizes):
        obs[key] = torch.from_numpy(rng.normal(0.0, 2.0, lead + (size,)).astype(np.float32))
    if "event" in policy.timing:
        obs["event"] = torch.from_numpy(rng.integers(0, len(policy.update_on), lead))
    if "ages" in policy.timing:
        obs["ages"] = torch.from_numpy(rng.exponential(0.05, lead + (len(policy.update_on),)).astype(np.float32))
    return obs


def assert_equal(got, want, what):
    assert got.dtype == want.dtype and got.shape == want.shape, what
    assert torch.equal(got, want), f"{what}: max difference {(got - want).abs().max().item():.3g}"


def policy_with_normalization(mode: str, seed: int = 0) -> Policy:
    """The robust rover's architecture with camera normalisation ``mode``, fresh weights."""
    config = load_config(policies_dir() / "configs" / "cfc_ncp_rover_robust.yaml")
    config["encoder"]["camera"]["normalize"] = mode
    torch.manual_seed(seed)
    return Policy.from_config(config).eval()


# ------------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("mode", CAMERA_NORMALIZATIONS)
def test_scale_and_camera_features_are_the_reference_bit_for_bit(mode):
    torch.manual_seed(1)
    encoder = CameraEncoder(64, 64, [8, 16, 16], [5, 3, 3], [2, 2, 2], 32, mode).eval()
    rng = np.random.default_rng(2)
    for batch in (1, 2, 5):
        for kind in ("random", "flat", "low_contrast", "saturated"):
            image = torch.from_numpy(frames(rng, (batch, 64, 64, 3), kind))
            with torch.no_grad():
                got, want = encoder.scale(image), reference_scale(encoder, image)
                assert_equal(got, want, f"{mode} scale, {batch} x {kind}")
                # the layout too: the convolutions' and the reductions' sums depend on it
                assert got.stride() == want.stride(), f"{mode}, {batch} x {kind}: strides"
                assert_equal(encoder(image), reference_camera(encoder, image), f"{mode} features, {batch} x {kind}")


def test_camera_gradients_are_the_reference_bit_for_bit():
    """Training's backward through the encoder: the same gradients (the functional layer calls)."""
    torch.manual_seed(3)
    encoder = CameraEncoder(64, 64, [8, 16, 16], [5, 3, 3], [2, 2, 2], 32, "instance")
    image = torch.from_numpy(frames(np.random.default_rng(4), (6, 64, 64, 3)))
    grads = []
    for forward in (encoder, lambda x: reference_camera(encoder, x)):
        encoder.zero_grad()
        (forward(image) * torch.linspace(-1, 1, 32)).sum().backward()
        grads.append([p.grad.clone() for p in encoder.parameters()])
    for name, got, want in zip([n for n, _ in encoder.named_parameters()], *grads):
        assert_equal(got, want, f"gradient of {name}")


def stream(policy: Policy, step, lanes: int, seed: int, encodes, dtype=torch.float32):
    """(actions, states) of consecutive steps of ``step`` from the initial state, dts over and under max_step."""
    rng = np.random.default_rng(seed)
    state = None if dtype == torch.float32 else policy.initial_state(lanes, dtype=dtype)
    out = []
    with torch.no_grad():
        for i, encode in enumerate(encodes):
            dt = torch.from_numpy(rng.uniform(0.0, 0.35 if i % 3 == 2 else 0.09, lanes).astype(np.float32))
            if i == 1:
                dt[0] = 0.1  # exactly max_step: one step
            action, state = step(policy, observation(policy, rng, (lanes,)), state, dt, encode)
            out.append((action, state))
    return out


def check_stream(policy: Policy, lanes: int, encodes, dtype=torch.float32):
    got = stream(policy, Policy.step, lanes, 5, encodes, dtype)
    want = stream(policy, reference_step, lanes, 5, encodes, dtype)
    for i, ((action, state), (ref_action, ref_state)) in enumerate(zip(got, want)):
        assert_equal(action, ref_action, f"{policy.config['name']}, {lanes} lanes, step {i}: action")
        assert_equal(state, ref_state, f"{policy.config['name']}, {lanes} lanes, step {i}: state")


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
@pytest.mark.parametrize("lanes", [1, 4])
def test_shipped_policies_step_as_the_reference(path, lanes):
    policy = load_policy(path)
    names = policy.encoder_names
    # all encoders, then each one alone and none (the others' features from the state)
    encodes = [None, None, None] + [(name,) for name in names] + [(), None, None]
    check_stream(policy, lanes, encodes)


@pytest.mark.parametrize("mode", CAMERA_NORMALIZATIONS)
def test_each_normalisation_steps_as_the_reference(mode):
    policy = policy_with_normalization(mode)
    for lanes in (1, 3):
        check_stream(policy, lanes, [None] * 4 + [()])


def test_a_float64_policy_steps_as_the_reference():
    policy = load_policy(policies_dir() / "cfc_ncp_rover_robust.pt").double()
    check_stream(policy, 2, [None] * 4, dtype=torch.float64)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_policies_forward_sequence_as_the_reference(path):
    policy = load_policy(path)
    rng = np.random.default_rng(6)
    batch, steps = 3, 5
    obs = observation(policy, rng, (batch, steps))
    dt = torch.from_numpy(rng.uniform(0.0, 0.09, (batch, steps)).astype(np.float32))
    mask = torch.tensor([[True] * 5, [True, True, True, False, False], [False] * 5])
    h0 = stream(policy, Policy.step, batch, 7, [None])[0][1]
    with torch.no_grad():
        for kwargs in ({}, {"h0": h0, "mask": mask}):
            got = policy.forward_sequence(obs, dt, **kwargs)
            want = reference_forward_sequence(policy, obs, dt, **kwargs)
            for g, w, what in zip(got, want, ("actions", "h_n")):
                assert_equal(g, w, f"{path.stem} sequence {sorted(kwargs)}: {what}")


@pytest.mark.parametrize("mode", ["none", "instance", "chromaticity_brightness"])
def test_training_forward_and_backward_as_the_reference(mode):
    """A BC-like loss through forward_sequence (frames indexed per step, as training batches them): the same
    loss and gradients, so training reaches the same weights."""
    policy = policy_with_normalization(mode, seed=8).train()
    rng = np.random.default_rng(9)
    batch, steps, count = 2, 6, 3
    obs = {
        "image": torch.from_numpy(frames(rng, (batch, count, 64, 64, 3))),
        "image_index": torch.from_numpy(rng.integers(0, count, (batch, steps))),
    }
    dt = torch.from_numpy(rng.uniform(0.03, 0.09, (batch, steps)).astype(np.float32))
    target = torch.from_numpy(rng.uniform(-1, 1, (batch, steps, 2)).astype(np.float32))
    results = []
    for forward in (policy.forward_sequence, lambda o, d: reference_forward_sequence(policy, o, d)):
        policy.zero_grad()
        actions, _ = forward(obs, dt)
        loss = ((actions - target) ** 2).mean()
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in policy.parameters()]))
    (loss, grads), (ref_loss, ref_grads) = results
    assert_equal(loss, ref_loss, f"{mode}: loss")
    for name, got, want in zip([n for n, _ in policy.named_parameters()], grads, ref_grads):
        assert_equal(got, want, f"{mode}: gradient of {name}")


def test_bad_inputs_are_still_rejected():
    """The cheaper step keeps its guards: a non-finite input, a wrong state shape, a substep past max_step."""
    policy = load_policy(policies_dir() / "cfc_balance_nav.pt")
    rng = np.random.default_rng(10)
    obs = observation(policy, rng, (2,))
    dt = torch.tensor([0.02, 0.03])
    with torch.no_grad():
        bad = dict(obs, imu=obs["imu"].clone())
        bad["imu"][1, 2] = math.nan
        with pytest.raises(ValueError, match="'vectors' input is not finite"):
            policy.step(bad, None, dt)
        bad = dict(obs, ages=obs["ages"].clone())
        bad["ages"][0, 0] = math.inf
        with pytest.raises(ValueError, match="time inputs"):
            policy.step(bad, None, dt)
        with pytest.raises(ValueError, match="state must have shape"):
            policy.step(obs, torch.zeros(2, policy.state_size + 1), dt)
        image = dict(obs, image=obs["image"].to(torch.float32))
        image["image"][0, 3, 3, 1] = math.nan
        with pytest.raises(ValueError, match="observation 'image' must be uint8"):  # a float frame: no NaN to reach
            policy.step(image, None, dt)


class _Ops(TorchDispatchMode):
    """Records the aten ops a block runs, with their tensor arguments' shapes and whether they are channels-last."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        self.calls.append(
            (func.overloadpacket.__name__, [(tuple(t.shape), t.dim() == 4 and t.stride(1) == 1) for t in tensors])
        )
        return func(*args, **(kwargs or {}))


def test_a_rover_update_takes_the_cheap_path():
    """What makes the batched evaluation's update cheaper, held so that it stays (the numbers are held above):
    no per-channel statistic broadcast over channels-last frames (an inner loop of 3 elements), no sub-step counts
    when no dt exceeds max_step, no copies of the features or of empty time inputs (one cat: the new state)."""
    policy = load_policy(policies_dir() / "cfc_ncp_rover_robust.pt")
    rng = np.random.default_rng(11)
    obs = observation(policy, rng, (4,))
    state, dt = policy.initial_state(4), torch.full((4,), 0.066)
    with torch.no_grad():
        policy.step(obs, state, dt)  # the core's step kernel is prepared on the first step
    with torch.no_grad(), _Ops() as ops:
        policy.step(obs, state, dt)
    with torch.no_grad(), _Ops() as core_ops:  # the core's own step (its kernel's ops: LIQUID_CONTROL_NATIVE=0)
        policy.core_step(torch.zeros(4, policy.feature_size), state[:, : policy.core.state_size].contiguous(), dt)
    names = [name for name, _ in ops.calls]
    assert "ceil" not in names, "sub-step counts computed for dts under max_step"
    assert names.count("cat") == 1 + [name for name, _ in core_ops.calls].count("cat"), names
    broadcasts = [
        (name, shapes)
        for name, shapes in ops.calls
        if name in ("sub", "div") and len(shapes) == 2 and shapes[0][1] and shapes[1][0] == (4, 3, 1, 1)
    ]
    assert not broadcasts, broadcasts


def test_batched_evaluation_steps_all_lanes_without_gathering_them():
    """BatchedPolicy with every lane active (run_batch's usual update) steps its state as it is: the same actions
    and states as the policy stepped directly, and no index / index_put of the state per update."""
    policy = load_policy(policies_dir() / "cfc_ncp_rover_robust.pt")
    batched = BatchedPolicy(policy, 3)
    rng = np.random.default_rng(12)
    state = policy.initial_state(3)
    with torch.no_grad():
        for i in range(4):
            images = frames(rng, (3, 64, 64, 3))
            dt = rng.uniform(0.03, 0.09, 3).astype(np.float32)
            observations = [{"image": images[lane], "dt": dt[lane : lane + 1]} for lane in range(3)]
            with _Ops() as ops:
                actions = batched.act([0, 1, 2], observations)
            assert not {"index", "index_put", "index_put_"} & {name for name, _ in ops.calls}
            action, state = policy.step({"image": torch.from_numpy(images)}, state, torch.from_numpy(dt))
            assert np.array_equal(actions, action.numpy()) and torch.equal(batched.state, state), i
        # a lane reset and a subset of lanes still take their own rows
        batched.reset_lane(1)
        observations = [{"image": frames(rng, (64, 64, 3)), "dt": np.float32([0.05])} for _ in range(2)]
        before = batched.state.clone()
        actions = batched.act([0, 2], observations)
        state = before[[0, 2]]
        action, state = policy.step(
            {"image": torch.from_numpy(np.stack([o["image"] for o in observations]))}, state, torch.full((2,), 0.05)
        )
        assert np.array_equal(actions, action.numpy())
        assert torch.equal(batched.state[[0, 2]], state) and torch.equal(batched.state[1], policy.initial_state(1)[0])


# ------------------------------------------------------------------------------------------------ review findings
@pytest.mark.parametrize("mode", CAMERA_NORMALIZATIONS)
def test_gradients_to_the_image_are_the_reference_bit_for_bit(mode):
    """A gradient to the image itself (attribution, e.g. integrated gradients) runs the plain ops: the same
    gradient bit for bit, and chromaticity_brightness differentiable (``out=`` ops have no backward)."""
    torch.manual_seed(13)
    encoder = CameraEncoder(64, 64, [8, 16, 16], [5, 3, 3], [2, 2, 2], 32, mode)
    pixels = torch.from_numpy(frames(np.random.default_rng(14), (4, 64, 64, 3))).to(torch.float32)
    grads = []
    for forward in (encoder, lambda x: reference_camera(encoder, x)):
        image = pixels.clone().requires_grad_()
        (forward(image) * torch.linspace(-1, 1, 32)).sum().backward()
        grads.append(image.grad)
    assert_equal(grads[0], grads[1], f"{mode}: gradient to the image")


def test_forward_hooks_on_the_encoders_layers_fire():
    """The layers run as modules: a user's forward hooks (feature maps, attribution) see every call."""
    policy = load_policy(policies_dir() / "cfc_ncp_rover_robust.pt")
    seen = []
    handles = [
        module.register_forward_hook(lambda m, i, o, name=name: seen.append(name))
        for name, module in (
            ("conv0", policy.camera.conv[0]),
            ("project", policy.camera.project),
            ("head", policy.head),
        )
    ]
    try:
        with torch.no_grad():
            policy.step(observation(policy, np.random.default_rng(15), (2,)), None, torch.full((2,), 0.066))
    finally:
        for handle in handles:
            handle.remove()
    assert seen == ["conv0", "project", "head"]


def test_half_precision_features_near_one_pass_the_finite_check():
    """The non-finite guard sums half-precision features in float32: many features near +-1 are finite, not an
    overflow of the float16 sum (65504), while a NaN is still caught."""
    policy = load_policy(policies_dir() / "cfc_balance_nav.pt").half()
    last = policy.vectors.mlp[-2]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(3.0)  # tanh(3) = 0.995 for every feature
        lanes = 70000 // last.bias.numel() + 1  # a float16 sum of them would pass 65504
        obs = observation(policy, np.random.default_rng(16), (lanes,))
        obs = {k: (v.half() if v.is_floating_point() else v) for k, v in obs.items()}
        policy.step(obs, None, torch.full((lanes,), 0.02, dtype=torch.float16))
        obs["imu"][0, 0] = math.nan
        with pytest.raises(ValueError, match="'vectors' input is not finite"):
            policy.step(obs, None, torch.full((lanes,), 0.02, dtype=torch.float16))


def test_batched_policy_takes_numpy_lanes_and_updates_its_state_in_place():
    """Lanes as a numpy array (not only a list), and the state tensor updated in place as the scatter did."""
    policy = load_policy(policies_dir() / "cfc_ncp_rover_robust.pt")
    batched = BatchedPolicy(policy, 3)
    held = batched.state
    rng = np.random.default_rng(17)
    observations = [{"image": frames(rng, (64, 64, 3)), "dt": np.float32([0.05])} for _ in range(3)]
    with torch.no_grad():
        batched.act(np.arange(3), observations)
    assert held is batched.state and not torch.equal(held, policy.initial_state(3))
