"""Policy layer: config validation, sequence/step equivalence, dt handling, policy files, PolicyAgent."""

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from liquid_control.paths import policies_dir
from liquid_control.policy import (
    Policy,
    PolicyAgent,
    PolicyConfigError,
    PolicyLoadError,
    load_config,
    load_policy,
    save_policy,
    validate_config,
)

CONFIGS = sorted((policies_dir() / "configs").glob("*.yaml"))


def small_config(core=None, image=True, vectors=None):
    """A tiny rover-like config (16x16 camera) so tests stay fast."""
    cfg = {
        "name": "tiny",
        "world": "LiquidRover-v0",
        "observation": {"vectors": {"imu": 6} if vectors is None else vectors, "update_on": "camera"},
        "encoder": {
            "camera": {"channels": [4, 8], "kernel_sizes": [3, 3], "strides": [2, 2], "features": 8},
            "vectors": {"hidden": [8], "features": 4},
        },
        "core": core or {"type": "cfc", "units": 8, "wiring": "ncp"},
        "action": {"size": 2, "low": [-1, -0.5], "high": [1, 0.5]},
    }
    if image:
        cfg["observation"]["image"] = {"height": 16, "width": 16}
    return cfg


def random_obs(batch, steps, seed=0, size=16):
    g = torch.Generator().manual_seed(seed)
    lead = (batch,) if steps is None else (batch, steps)
    return {
        "image": torch.randint(0, 256, lead + (size, size, 3), dtype=torch.uint8, generator=g),
        "imu": torch.randn(lead + (6,), generator=g) * 3.0,
    }


# ------------------------------------------------------------------------------------------------ config
def test_example_configs_are_valid_and_cover_every_core():
    names = {p.stem for p in CONFIGS}
    assert {
        "cfc_ncp_rover",
        "ltc_ncp_rover",
        "cfc_rover",
        "lstm_rover",
        "gru_rover",
        "mlp_rover",
        "cfc_rover_no_dt",
        "ltc_rover",
        "ctrnn_rover",
        "gru_ode_rover",
        "tcn_rover",
        "cfc_ncp_rover_robust",
    } <= names
    types = set()
    for path in CONFIGS:
        cfg = load_config(path)
        assert cfg["name"] == path.stem
        types.add(cfg["core"]["type"])
    assert types == {"cfc", "ltc", "ctrnn", "gru_ode", "lstm", "gru", "tcn", "mlp"}
    assert load_config(policies_dir() / "configs" / "cfc_rover_no_dt.yaml")["core"]["ignore_dt"] is True


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c.update(colour="red"), "unknown key(s) 'colour'; valid keys"),  # no 'core' (difflib's 0.6)
        (lambda c: c["core"].update(type="transformer"), "core.type: unknown value 'transformer'; choose from cfc"),
        (lambda c: c["core"].update(unit=8), "core: unknown key(s) 'unit' (did you mean 'units'?); valid keys: type,"),
        (lambda c: c["encoder"].update(camra={}), "encoder: unknown key(s) 'camra' (did you mean 'camera'?)"),
        (lambda c: c["core"].update(unit=8, mod="x"), "'mod', 'unit' (did you mean 'mode' for 'mod', 'units' for"),
        (lambda c: c["core"].update(units=0), "core.units: must be >= 1"),
        (lambda c: c["core"].update(type="lstm", wiring="ncp"), "core.wiring: 'ncp' needs core.type cfc or ltc"),
        (lambda c: c["action"].update(low=[-1]), "action.low: needs 2 values"),
        (lambda c: c["action"].update(low=[1, 1]), "every low must be < high"),
        (lambda c: c.pop("world"), "world: missing (required)"),
        (lambda c: c["encoder"]["camera"].update(strides=[2]), "need the same length"),
        (  # was "camera encoder: ... too small" from deep inside the model, naming no key
            lambda c: c["encoder"]["camera"].update(kernel_sizes=[9, 9]),
            "observation.image: a 16x16 (width x height) image is too small for encoder.camera's convolutions "
            "(layer 1: kernel 9",
        ),
        (lambda c: c["observation"]["vectors"].update(imu="six"), "observation.vectors.imu: expected an integer"),
        (lambda c: c.update(training={"lr": "fast"}), "training.lr: expected a number"),
        (lambda c: c.update(training={"augmentation": ["dusk"]}), "training.augmentation[0]: unknown value 'dusk'"),
        (
            lambda c: c["observation"].update(update_on=["camera", "wheels"]),
            "observation.update_on[1]: 'wheels' is not an input of this policy, so no encoder reads it",
        ),
        (lambda c: c["observation"].update(update_on=["imu", "imu"]), "observation.update_on[1]: 'imu' is named twice"),
        (lambda c: c["observation"].update(update_on=[]), "observation.update_on: needs at least one sensor"),
        (lambda c: c["observation"].update(timing=["clock"]), "observation.timing[0]: unknown value 'clock'"),
        (
            lambda c: c["observation"].update(timing=["event"], resample_hz=100.0),
            "a resampled policy (resample_hz) has no events",
        ),
    ],
)
def test_bad_config_is_rejected_with_the_key_path(mutate, message):
    cfg = small_config()
    mutate(cfg)
    with pytest.raises(PolicyConfigError) as err:
        validate_config(cfg)
    assert message in str(err.value)


def test_config_file_errors_name_the_file(tmp_path):
    with pytest.raises(PolicyConfigError, match="nope.yaml: policy config not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(PolicyConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text(
        "name: x\nworld: LiquidRover-v0\nobservation: {vectors: {imu: 6}, update_on: imu}\n"
        "core: {type: cfc, unitz: 4}\naction: {size: 1, low: [-1], high: [1]}\n"
    )
    with pytest.raises(PolicyConfigError, match=r"typo.yaml: core: unknown key\(s\) 'unitz'"):
        load_config(typo)


def test_defaults_are_filled_in():
    cfg = validate_config(small_config())
    assert cfg["core"]["ignore_dt"] is False
    assert cfg["training"]["augmentation"] == []  # augmentation is off unless asked for
    assert cfg["action"]["kind"] == "twist"


# ------------------------------------------------------------------------------------------------ running
@pytest.mark.parametrize(
    "core",
    [
        {"type": "cfc", "units": 8, "wiring": "ncp"},
        {"type": "cfc", "units": 6, "backbone_units": 8},
        {"type": "ltc", "units": 8, "wiring": "ncp", "unfolds": 2},
        {"type": "lstm", "units": 6},
        {"type": "gru", "units": 6},
        {"type": "mlp", "units": 6, "frames": 3},
    ],
)
def test_forward_sequence_equals_repeated_step(core):
    torch.manual_seed(0)
    policy = Policy.from_config(small_config(core))
    obs = random_obs(3, 6)
    dt = torch.rand(3, 6) * 0.1 + 0.02  # every sample its own irregular steps
    actions, h_n = policy.forward_sequence(obs, dt)
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            state, stepped = None, []
            for t in range(6):
                a, state = policy.step({k: v[:, t] for k, v in obs.items()}, state, dt[:, t])
                stepped.append(a)
        torch.testing.assert_close(torch.stack(stepped, 1), actions, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(state, h_n, atol=1e-5, rtol=1e-4)
    low, high = policy.action_low, policy.action_high
    assert bool(((actions >= low) & (actions <= high)).all())


def test_mask_holds_the_state_on_padding():
    torch.manual_seed(1)
    policy = Policy.from_config(small_config())
    obs = random_obs(2, 5)
    dt = torch.full((2, 5), 0.07)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    _, h_masked = policy.forward_sequence(obs, dt, mask=mask)
    _, h_short = policy.forward_sequence({k: v[1:, :2] for k, v in obs.items()}, dt[1:, :2])
    torch.testing.assert_close(h_masked[1:], h_short)


@pytest.mark.parametrize(
    "core",
    [
        {"type": "cfc", "units": 8, "wiring": "ncp"},
        {"type": "cfc", "units": 8, "wiring": "ncp", "max_step": 0.05},
        {"type": "ltc", "units": 8, "wiring": "ncp", "unfolds": 2},
    ],
)
def test_under_autocast_the_core_runs_in_its_weights_dtype_and_training_gets_gradients(core):
    """Before: ``forward_sequence`` of a policy under torch.autocast("cpu", bfloat16) (a policy trained so) failed
    ("CfCCell's weights are torch.float32, x is torch.bfloat16"): the autocast encoders' bfloat16 features went
    to the core's sequence path as they were. Now the core runs as the cells' entry points run it: autocast off,
    in its weights' dtype, giving the core's own numbers for those features."""
    torch.manual_seed(3)
    policy = Policy.from_config(small_config(core))
    obs = random_obs(2, 5)
    dt = torch.rand(2, 5) * 0.1 + 0.02
    with torch.autocast("cpu", dtype=torch.bfloat16):
        actions, h_n = policy.forward_sequence(obs, dt)
        actions.square().sum().backward()
        features = policy.encode(obs, (2, 5))
    assert features.dtype == torch.bfloat16  # the encoders did run under autocast
    assert actions.dtype == h_n.dtype == torch.float32
    size = policy.core.state_size
    if policy.max_step is None:  # the core's state from those features, computed without autocast: every bit
        _, expected = policy.core.forward_sequence(features.float(), dt)
        torch.testing.assert_close(h_n[:, :size], expected, rtol=0, atol=0)
    plain_actions, plain_h_n = policy.forward_sequence(obs, dt)
    torch.testing.assert_close(actions, plain_actions, atol=0.05, rtol=0)  # bfloat16 encoders: close, not equal
    torch.testing.assert_close(h_n[:, :size], plain_h_n[:, :size], atol=0.05, rtol=0)
    for name, parameter in policy.named_parameters():
        assert parameter.grad is not None and bool(torch.isfinite(parameter.grad).all()), name


def test_core_integrates_measured_dt_unless_ignored():
    torch.manual_seed(2)
    cfg = small_config({"type": "cfc", "units": 8, "wiring": "ncp"})
    policy = Policy.from_config(cfg)
    obs = random_obs(1, 4)
    fast, _ = policy.forward_sequence(obs, torch.full((1, 4), 0.01))
    slow, _ = policy.forward_sequence(obs, torch.full((1, 4), 0.5))
    assert (fast - slow).abs().max() > 1e-3  # the measured dt changes the state

    cfg["core"]["ignore_dt"] = True
    ablated = Policy.from_config(cfg)
    ablated.load_state_dict(policy.state_dict())
    a, _ = ablated.forward_sequence(obs, torch.full((1, 4), 0.01))
    b, _ = ablated.forward_sequence(obs, torch.full((1, 4), 0.5))
    ones, _ = policy.forward_sequence(obs, torch.ones(1, 4))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, ones)  # ignore_dt means dt := 1


def test_bad_inputs_are_clear_errors():
    policy = Policy.from_config(small_config())
    obs = random_obs(1, None)
    with pytest.raises(ValueError, match="dt must be finite and >= 0"):
        policy.step(obs, None, torch.tensor([-0.1]))
    with pytest.raises(ValueError, match="dt must be finite"):
        policy.step(obs, None, torch.tensor([float("nan")]))
    with pytest.raises(ValueError, match=r"expected images \(N, 16, 16, 3\)"):
        policy.step(dict(obs, image=torch.zeros(1, 32, 32, 3, dtype=torch.uint8)), None, torch.tensor([0.1]))
    with pytest.raises(ValueError, match="lacks 'imu'"):
        policy.step({"image": obs["image"]}, None, torch.tensor([0.1]))
    # a float frame (torchvision's 0-1) was scaled by 1/255 again without a word: the network saw a black frame,
    # where the ROS/ONNX backends refuse it; the sequence path alike, and a sequence of no step (torch's reshape error)
    floats = dict(obs, image=obs["image"].float() / 255.0)
    with pytest.raises(ValueError, match=r"policy 'tiny': observation 'image' must be uint8 .*got float32"):
        policy.step(floats, None, torch.tensor([0.1]))
    seq = random_obs(2, 3)
    with pytest.raises(ValueError, match=r"observation 'image' must be uint8 .*got float64"):
        policy.forward_sequence(dict(seq, image=seq["image"].double()), torch.full((2, 3), 0.1))
    empty = {k: v[:, :0] for k, v in seq.items()}
    with pytest.raises(
        ValueError, match=r"policy 'tiny': a sequence needs at least one step, got dt of shape \(2, 0\)"
    ):
        policy.forward_sequence(empty, torch.zeros(2, 0))


def test_parameter_count_matches_the_modules():
    policy = Policy.from_config(small_config())
    parts = [policy.camera, policy.vectors, policy.core, policy.head]
    assert policy.num_parameters() == sum(p.numel() for m in parts for p in m.parameters())
    assert policy.num_parameters() < 10_000


# ------------------------------------------------------------------------------------------------ files
def test_save_load_roundtrip_is_exact(tmp_path):
    torch.manual_seed(3)
    policy = Policy.from_config(small_config())
    policy.vectors.set_normalization(np.arange(6.0), np.full(6, 2.0))
    path = save_policy(tmp_path / "p.pt", policy, {"seed": 7, "note": "x"})
    loaded = load_policy(path)
    assert loaded.config == policy.config and loaded.metadata == {"seed": 7, "note": "x"}
    obs, dt = random_obs(2, 5), torch.rand(2, 5) * 0.1
    torch.testing.assert_close(loaded.forward_sequence(obs, dt)[0], policy.forward_sequence(obs, dt)[0], rtol=0, atol=0)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temporary behind


def test_load_errors_name_the_file_and_the_problem(tmp_path):
    policy = Policy.from_config(small_config())
    good = save_policy(tmp_path / "good.pt", policy)
    with pytest.raises(PolicyLoadError, match="missing.pt: policy file not found"):
        load_policy(tmp_path / "missing.pt")
    (tmp_path / "run").mkdir()  # `liquid-control export runs/x` said "policy file not found"
    with pytest.raises(PolicyLoadError, match=r"run: is a folder, not a policy file$"):
        load_policy(tmp_path / "run")
    save_policy(tmp_path / "run" / "policy.pt", policy)
    with pytest.raises(PolicyLoadError, match=r"run: is a folder, not a policy file; did you mean .*run/policy.pt\?"):
        load_policy(tmp_path / "run")

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(PolicyLoadError, match="truncated.pt: not a readable policy file"):
        load_policy(truncated)

    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(
        PolicyLoadError, match=r"other.pt: not a liquid_control policy file \(no 'liquid_control.policy' header\)$"
    ):
        load_policy(other)
    # a training run's checkpoint.pt, the file a user most likely takes for its policy: said, and policy.pt named
    torch.save({"format": "liquid_control.training/1", "model": {}}, tmp_path / "run" / "checkpoint.pt")
    with pytest.raises(
        PolicyLoadError,
        match=r"checkpoint.pt: not a liquid_control policy file \(a 'liquid_control.training/1' file, no "
        r"'liquid_control.policy' header\); did you mean .*run/policy.pt\?",
    ):
        load_policy(tmp_path / "run" / "checkpoint.pt")

    payload = torch.load(good, weights_only=True)
    mismatched = copy.deepcopy(payload)
    mismatched["config"]["encoder"]["vectors"]["features"] = 5
    torch.save(mismatched, tmp_path / "mismatch.pt")
    with pytest.raises(PolicyLoadError, match="mismatch.pt: config does not match the weights: shape mismatch"):
        load_policy(tmp_path / "mismatch.pt")

    invalid = copy.deepcopy(payload)
    invalid["config"]["core"]["type"] = "rnn"
    torch.save(invalid, tmp_path / "invalid.pt")
    with pytest.raises(PolicyLoadError, match="invalid.pt: the embedded config is not valid: core.type"):
        load_policy(tmp_path / "invalid.pt")

    nan = copy.deepcopy(payload)
    nan["state_dict"]["head.bias"][0] = float("nan")
    torch.save(nan, tmp_path / "nan.pt")
    with pytest.raises(PolicyLoadError, match="nan.pt: non-finite weights in head.bias"):
        load_policy(tmp_path / "nan.pt")


def _save_mutated(tmp_path, name, mutate):
    """A policy file (vector encoder trained statistics, action bounds [-1, 1] x [-0.5, 0.5]) changed by
    ``mutate(payload)``; returns its path and the path of the untouched file."""
    policy = Policy.from_config(small_config())
    policy.vectors.set_normalization(np.zeros(6), np.full(6, 2.0))
    good = save_policy(tmp_path / "good.pt", policy, {"seed": 1})
    payload = torch.load(good, weights_only=True)
    mutate(payload)
    torch.save(payload, tmp_path / name)
    return tmp_path / name, good


@pytest.mark.parametrize("value", [0.0, -2.0, float("nan"), float("inf")])
def test_an_unusable_normalisation_buffer_is_refused_at_load_naming_file_and_buffer(tmp_path, value):
    path, good = _save_mutated(tmp_path, "std.pt", lambda p: p["state_dict"]["vectors.std"].__setitem__(3, value))
    with pytest.raises(PolicyLoadError, match=r"std.pt: the input normalisation buffer 'vectors.std' must be finite"):
        load_policy(path)
    assert load_policy(good).vectors.std.tolist() == [2.0] * 6  # the file as written still loads


def test_action_bounds_in_the_weights_must_match_the_config(tmp_path):
    def clamp(payload):
        payload["state_dict"]["action_low"].fill_(0.5)
        payload["state_dict"]["action_high"].fill_(0.6)

    path, good = _save_mutated(tmp_path, "bounds.pt", clamp)
    with pytest.raises(
        PolicyLoadError, match=r"bounds.pt: the weights' action_low \[0.5, 0.5\] disagree with the config's action.low"
    ) as err:
        load_policy(path)
    assert "[-1.0, -0.5]" in str(err.value)
    path, _ = _save_mutated(tmp_path, "high.pt", lambda p: p["state_dict"]["action_high"].__setitem__(1, 1.0))
    with pytest.raises(PolicyLoadError, match=r"high.pt: the weights' action_high \[1, 1\] disagree .* \[1.0, 0.5\]"):
        load_policy(path)
    loaded = load_policy(good)
    assert loaded.action_low.tolist() == [-1.0, -0.5] and loaded.action_high.tolist() == [1.0, 0.5]


def test_a_policy_under_a_float64_default_dtype_steps_from_its_own_initial_state_and_loads_float32_files(tmp_path):
    """Before: under torch.set_default_dtype(torch.float64) a policy's action bounds stayed float32 beside float64
    weights, and step(obs, None, dt) started from a float32 state: "CfCCell's weights are torch.float64, x is
    torch.float32". A policy saved in float32 with bounds float32 rounds (0.6) also loads there, and back."""
    config = small_config(vectors={"imu": 6})
    config["action"]["low"], config["action"]["high"] = [-0.6, -0.3], [0.6, 0.3]
    torch.manual_seed(0)
    saved32 = save_policy(tmp_path / "f32.pt", Policy.from_config(config))
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        policy = Policy.from_config(config)
        assert {t.dtype for t in [*policy.parameters(), *policy.buffers()]} == {torch.float64}
        action, state = policy.step(random_obs(2, None), None, torch.full((2,), 0.05))
        assert action.dtype == state.dtype == torch.float64
        loaded = load_policy(saved32)
        saved64 = save_policy(tmp_path / "f64.pt", policy)
    finally:
        torch.set_default_dtype(previous)
    assert loaded.action_low.dtype == torch.float64
    assert loaded.action_high.tolist() == [0.6, 0.3]  # the config's, not the float32 file's 0.6000000238
    assert load_policy(saved64).action_high.tolist() == pytest.approx([0.6, 0.3])  # float64 weights, float32 default


@pytest.mark.parametrize("core", ["cfc", "ltc"])
def test_an_ncp_seed_edited_in_the_config_is_refused_at_load_not_run_with_the_files_synapses(tmp_path, core):
    """The weights' synapse masks came from the file while the config (and ``policy.core.wiring``, the export's
    metadata) described the edited seed's synapses: a policy that said one wiring and ran another."""
    policy = Policy.from_config(small_config({"type": core, "units": 8, "wiring": "ncp", "seed": 3}))
    good = save_policy(tmp_path / "good.pt", policy)
    payload = torch.load(good, weights_only=True)
    payload["config"]["core"]["seed"] = 4
    torch.save(payload, tmp_path / "seed.pt")
    assert not np.array_equal(  # seed 4 draws other synapses of the same sizes
        Policy.from_config(payload["config"]).core.wiring.adjacency, policy.core.wiring.adjacency
    )
    with pytest.raises(PolicyLoadError, match=r"seed.pt: config does not match the weights: core\..*mask.* seed 4"):
        load_policy(tmp_path / "seed.pt")
    assert load_policy(good).core.wiring == policy.core.wiring


@pytest.mark.parametrize("value", [np.float64(0.9), np.arange(3), Path("runs/x"), object(), lambda: 0.9])
def test_save_policy_refuses_metadata_that_load_policy_could_not_read_back(tmp_path, value):
    """A numpy scalar (np.mean of the successes) was written, and the file refused at load as one holding pickled
    objects ('use a file written by liquid_control (... save_policy ...)'): found only on the robot. A value that
    cannot be pickled at all (a function) was torch.save's PicklingError, naming no entry."""
    policy = Policy.from_config(small_config())
    with pytest.raises(TypeError, match=rf"save_policy: metadata\['success'\] is {type(value).__name__} .*convert it"):
        save_policy(tmp_path / "p.pt", policy, {"seed": 1, "success": value})
    assert list(tmp_path.iterdir()) == []
    config = validate_config(small_config())
    config["action"]["low"] = list(np.array([-1.0, -0.5]))  # numpy scalars in the config given to Policy
    with pytest.raises(TypeError, match=r"save_policy: config\['action'\]\['low'\]\[0\] is float64"):
        save_policy(tmp_path / "p.pt", Policy(config))
    assert list(tmp_path.iterdir()) == []
    plain = {"seed": 1, "success": 0.9, "episodes": [1, 2], "eval": {"ok": True, "x": None}, "t": torch.ones(2)}
    loaded = load_policy(save_policy(tmp_path / "p.pt", policy, plain)).metadata
    assert loaded["eval"] == plain["eval"] and torch.equal(loaded["t"], plain["t"])


@pytest.mark.parametrize("metadata", ["abc", 5, [1, 2]])
def test_malformed_metadata_is_the_loaders_named_error(tmp_path, metadata):
    from liquid_control.policy import read_metadata

    path, good = _save_mutated(tmp_path, "meta.pt", lambda p: p.__setitem__("metadata", metadata))
    for loader in (load_policy, read_metadata):
        with pytest.raises(PolicyLoadError, match=r"meta.pt: the policy file's metadata must be a dict"):
            loader(path)
    assert read_metadata(good) == {"seed": 1} and load_policy(good).metadata == {"seed": 1}
    path, _ = _save_mutated(tmp_path, "none.pt", lambda p: p.pop("metadata"))
    assert read_metadata(path) == {} and load_policy(path).metadata == {}  # no metadata at all is fine


@pytest.mark.parametrize("dtype", [torch.bool, torch.complex64, torch.int64])
def test_weights_of_a_non_float_dtype_are_refused(tmp_path, dtype):
    path, _ = _save_mutated(
        tmp_path, "dtype.pt", lambda p: p["state_dict"].__setitem__("head.bias", torch.ones(2, dtype=dtype))
    )
    with pytest.raises(PolicyLoadError, match=r"dtype.pt: weights that are not floating-point tensors: head.bias"):
        load_policy(path)


def test_every_shipped_policy_passes_the_load_checks():
    shipped = sorted(policies_dir().glob("*.pt"))
    assert shipped
    for path in shipped:
        policy = load_policy(path)
        action = policy.config["action"]
        assert policy.action_low.tolist() == [float(v) for v in action["low"]]
        assert policy.action_high.tolist() == [float(v) for v in action["high"]]


# ------------------------------------------------------------------------------------------------ agent
def test_agent_drives_the_rover_within_bounds_and_resets():
    import gymnasium

    import sim_envs  # noqa: F401

    cfg = small_config()
    cfg["observation"]["image"] = {"height": 16, "width": 16}
    torch.manual_seed(4)
    agent = PolicyAgent(Policy.from_config(cfg))
    env = gymnasium.make("LiquidRover-v0", render_size=16)
    try:
        runs = []
        for _ in range(2):
            obs, _ = env.reset(seed=5)
            agent.reset()
            actions = []
            for _ in range(8):
                action = agent.act(obs)
                assert action.shape == (2,) and action.dtype == np.float32
                assert np.all(action >= [-1, -0.5]) and np.all(action <= [1, 0.5])
                actions.append(action)
                obs, *_ = env.step(action)
            runs.append(np.stack(actions))
        np.testing.assert_array_equal(runs[0], runs[1])  # reset() really starts a fresh episode
    finally:
        env.close()
    with pytest.raises(ValueError, match="lacks 'dt'"):
        agent.act({"image": obs["image"], "imu": obs["imu"]})


# ------------------------------------------------------------------------------------------------ several sensors
def fusion_config(core=None, timing=("event", "ages")):
    cfg = small_config(core, vectors={"imu": 6, "wheels": 2})
    cfg["world"] = "LiquidBalanceNav-v0"
    cfg["observation"].update(update_on=["camera", "imu"], timing=list(timing))
    return cfg


def event_stream(batch, steps, seed=0, frames=4):
    """Random obs of an event stream: a few distinct frames held over several steps, per-step IMU/wheels."""
    g = torch.Generator().manual_seed(seed)
    index = torch.sort(torch.randint(0, frames, (batch, steps), generator=g), dim=1).values
    event = torch.randint(0, 2, (batch, steps), generator=g)
    return {
        "image": torch.randint(0, 256, (batch, frames, 16, 16, 3), dtype=torch.uint8, generator=g),
        "image_index": index,
        "imu": torch.randn(batch, steps, 6, generator=g),
        "wheels": torch.randn(batch, steps, 2, generator=g),
        "event": event,
        "ages": torch.rand(batch, steps, 2, generator=g) * 0.05,
    }


def test_update_on_one_name_or_a_list():
    cfg = validate_config(small_config())
    assert cfg["observation"]["update_on"] == ["camera"] and cfg["observation"]["timing"] == []
    cfg = validate_config(fusion_config())
    assert cfg["observation"]["update_on"] == ["camera", "imu"] and cfg["observation"]["reorder_lag_s"] == 0.0


@pytest.mark.parametrize("core", [{"type": "cfc", "units": 8, "wiring": "ncp"}, {"type": "ltc", "units": 8}])
def test_event_sequence_with_held_frames_equals_streaming_with_cached_features(core):
    """Training's sequence path (each frame encoded once, gathered per step) gives the streaming updates where
    the camera CNN runs only when the frame changed and its features come from the state otherwise."""
    torch.manual_seed(2)
    policy = Policy.from_config(fusion_config(core))
    obs = event_stream(2, 12)
    dt = torch.rand(2, 12) * 0.02
    actions, h_n = policy.forward_sequence(obs, dt)
    state, stepped = None, []
    index = obs["image_index"]
    for t in range(12):
        step_obs = {k: obs[k][:, t] for k in ("imu", "wheels", "event", "ages")}
        step_obs["image"] = obs["image"][torch.arange(2), index[:, t]]
        fresh = t == 0 or bool((index[:, t] != index[:, t - 1]).any())
        encode = ("camera", "vectors") if fresh else ("vectors",)
        if not fresh:
            step_obs["image"] = torch.zeros_like(step_obs["image"])  # not looked at: the features are cached
        a, state = policy.step(step_obs, state, dt[:, t], encode=encode)
        stepped.append(a)
    torch.testing.assert_close(torch.stack(stepped, 1), actions, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(state, h_n, atol=1e-5, rtol=1e-4)


def test_the_core_sees_which_sensor_arrived_and_how_old_each_is():
    torch.manual_seed(3)
    policy = Policy.from_config(fusion_config()).eval()
    obs = {k: v[:, 0] for k, v in event_stream(1, 1).items() if k != "image_index"}
    obs["image"] = event_stream(1, 1)["image"][:, 0]
    state = policy.initial_state(1)
    dt = torch.tensor([0.005])
    base = policy.step(obs, state, dt)[0]
    other_event = policy.step(dict(obs, event=1 - obs["event"]), state, dt)[0]
    older = policy.step(dict(obs, ages=obs["ages"] + 0.1), state, dt)[0]
    assert (base - other_event).abs().max() > 1e-4 and (base - older).abs().max() > 1e-4
    blind = Policy.from_config(fusion_config(timing=())).eval()
    assert blind.core.input_size == policy.core.input_size - 4
    assert policy.state_size == policy.core.state_size + 8 + 4  # core state + camera and vector features


def test_agent_runs_the_camera_encoder_once_per_frame():
    import gymnasium

    import sim_envs  # noqa: F401
    from liquid_control.policy import env_kwargs

    cfg = validate_config(fusion_config())
    torch.manual_seed(4)
    policy = Policy(cfg)
    env = gymnasium.make(cfg["world"], **env_kwargs(cfg))
    calls = []
    policy.camera.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    agent = PolicyAgent(policy)
    obs, _ = env.reset(seed=0)
    events, frames, previous = [], 0, None
    for _ in range(60):
        action = agent.act(obs)
        events.append(int(obs["event"]))
        frames += previous is None or not np.array_equal(previous, obs["image"])
        previous = obs["image"]
        obs, *_ = env.step(action)
    env.close()
    assert 0 in events and 1 in events and len(calls) == frames < 30


def test_resampled_agent_steps_on_a_fixed_clock():
    from liquid_control.policy import resample_ticks

    stamps = np.array([0.0, 0.004, 0.009, 0.021, 0.0215, 0.0305])
    # ticks 0, .01, .02, .03 hold the latest event at or before them
    np.testing.assert_array_equal(resample_ticks(stamps, 0.01), [0, 2, 2, 4])
    cfg = small_config({"type": "lstm", "units": 6}, image=False)
    cfg["observation"].update(update_on="imu", resample_hz=100.0)
    torch.manual_seed(5)
    policy = Policy.from_config(cfg)
    agent = PolicyAgent(policy)
    rng = np.random.default_rng(0)
    imus = rng.normal(size=(6, 6)).astype(np.float32)
    dts = np.diff(stamps, prepend=0.0).astype(np.float32)
    actions = [agent.act({"imu": imus[k], "dt": dts[k : k + 1]}) for k in range(6)]
    # the same LSTM on the inputs resampled to 100 Hz
    ticks = resample_ticks(np.cumsum(dts.astype(np.float64)), 0.01)
    tick_dt = torch.tensor([[0.0, 0.01, 0.01, 0.01]])
    with torch.no_grad():
        want, _ = policy.forward_sequence({"imu": torch.from_numpy(imus[ticks])[None]}, tick_dt)
    np.testing.assert_allclose(actions[0], want[0, 0], atol=1e-6)  # tick 0 on the first event
    np.testing.assert_allclose(actions[2], want[0, 0], atol=1e-6)  # no tick yet: the action is held
    np.testing.assert_allclose(actions[3], want[0, 2], atol=1e-6)  # ticks .01 and .02 pass by the .021 event
    np.testing.assert_allclose(actions[5], want[0, 3], atol=1e-6)


def test_a_wrong_state_an_unknown_encoder_or_a_frame_index_out_of_range_is_a_clear_error():
    """Before: a state of the wrong size was reported with the core's size ("state must have shape (1, 8)"), a
    core-only state was taken silently, an unknown name in ``encode`` left that encoder's cached (zero) features in
    place silently, and an image_index out of range was torch's bare IndexError (a negative one silently picked
    another sample's frame)."""
    policy = Policy.from_config(small_config())
    obs, dt = random_obs(1, None), torch.tensor([0.1])
    size, core = policy.state_size, policy.core.state_size
    for bad in (torch.zeros(1, 5), torch.zeros(1, core), torch.zeros(size)):
        with pytest.raises(ValueError, match=rf"state must have shape \(1, {size}\) \(the core's {core} and"):
            policy.step(obs, bad, dt)
    with pytest.raises(ValueError, match=r"encode names \['cam'\], not encoders of this policy \(camera, vectors\)"):
        policy.step(obs, None, dt, encode=("cam",))
    a, _ = policy.step(obs, None, dt, encode="camera")  # one name for a tuple of one
    b, _ = policy.step(obs, None, dt, encode=("camera",))
    assert torch.equal(a, b)
    torch.manual_seed(2)
    fusion = Policy.from_config(fusion_config({"type": "cfc", "units": 8}))
    seq = event_stream(2, 6)
    frames = seq["image"].shape[1]
    for index in (frames, -1):
        bad = dict(seq, image_index=torch.full_like(seq["image_index"], index))
        with pytest.raises(ValueError, match=rf"image_index must have shape \(2, 6\) with values in \[0, {frames}\)"):
            fusion.forward_sequence(bad, torch.full((2, 6), 0.01))


def test_an_event_that_names_no_update_sensor_is_a_clear_error():
    """Before: event 5 (or -1) of a policy with two update sensors was one-hot encoded as all zeros, silently:
    the core saw no event at all."""
    torch.manual_seed(2)
    policy = Policy.from_config(fusion_config({"type": "cfc", "units": 8}))
    seq = event_stream(2, 6)
    step = {k: seq[k][:, 0] for k in ("imu", "wheels", "event", "ages")}
    step["image"] = seq["image"][:, 0]
    policy.step(step, None, torch.full((2,), 0.01))
    for bad in (2, 5, -1):
        with pytest.raises(ValueError, match=r"'event' must index an update sensor in \[0, 2\) \(camera, imu\)"):
            policy.step(dict(step, event=torch.full((2,), bad)), None, torch.full((2,), 0.01))
        with pytest.raises(ValueError, match=r"'event' must index an update sensor"):
            policy.forward_sequence(dict(seq, event=torch.full((2, 6), bad)), torch.full((2, 6), 0.01))


@pytest.mark.parametrize("key, value", [("imu", float("nan")), ("ages", float("nan"))])
def test_a_non_finite_input_is_refused_naming_it_not_turned_into_a_nan_action(key, value):
    """Policy.step used directly (not through PolicyRunner, which rejects such readings) turned a NaN IMU reading
    or age into a NaN action, silently."""
    torch.manual_seed(2)
    policy = Policy.from_config(fusion_config({"type": "cfc", "units": 8}))
    seq = event_stream(2, 6)
    step = {k: seq[k][:, 0].clone() for k in ("imu", "wheels", "event", "ages")}
    step["image"] = seq["image"][:, 0]
    action, _ = policy.step(step, None, torch.full((2,), 0.01))
    assert torch.isfinite(action).all()
    step[key][1, 0] = value
    where = r"'vectors' input is not finite" if key == "imu" else r"time inputs \(event, ages\) are not finite"
    with pytest.raises(ValueError, match=where):
        policy.step(step, None, torch.full((2,), 0.01))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.5])
def test_a_resampled_agent_refuses_a_dt_that_is_not_a_time_step(bad):
    """Before: a resample_hz agent took dt = NaN and froze (its clock NaN for the rest of the episode: every later
    act returned the held action), dt = inf ticked forever (a hang), and a negative dt held the action silently."""
    cfg = small_config({"type": "lstm", "units": 6}, image=False)
    cfg["observation"].update(update_on="imu", resample_hz=100.0)
    agent = PolicyAgent(Policy.from_config(cfg))
    reading = np.zeros(6, dtype=np.float32)
    agent.act({"imu": reading, "dt": np.array([0.0], dtype=np.float32)})
    with pytest.raises(ValueError, match="PolicyAgent: dt must be finite and >= 0"):
        agent.act({"imu": reading, "dt": np.array([bad], dtype=np.float32)})
    agent.act({"imu": reading, "dt": np.array([0.01], dtype=np.float32)})
    assert agent._stamp == pytest.approx(0.01) and agent._tick == 2  # the clock went on as if it never came


def test_a_resampled_agent_resets_on_a_gap_over_max_gap_s_instead_of_ticking_through_it():
    """Before: a resample_hz agent given one huge finite dt (a clock jump of 1e6 s) ran dt * rate = 1e8 ticks with
    the held inputs: a hang. Now a gap over max_gap_s (the node's default, 1 s) resets the state and restarts the
    clock on this event, as PolicyRunner does; a shorter gap is still ticked through."""
    cfg = small_config({"type": "lstm", "units": 6}, image=False)
    cfg["observation"].update(update_on="imu", resample_hz=100.0)
    torch.manual_seed(5)
    policy = Policy.from_config(cfg)
    agent = PolicyAgent(policy)
    steps, step = [], agent._step

    def counted(batch, dt):  # fails at once where the agent would tick through the gap (before: 1e8 ticks)
        steps.append(dt)
        if len(steps) > 1000:
            pytest.fail("the agent ticks through the gap")
        return step(batch, dt)

    agent._step = counted
    rng = np.random.default_rng(0)
    a, b, c = rng.normal(size=(3, 6)).astype(np.float32)
    agent.act({"imu": a, "dt": np.array([0.0], dtype=np.float32)})
    agent.act({"imu": a, "dt": np.array([0.5], dtype=np.float32)})  # under max_gap_s: 50 ticks
    assert len(steps) == 51 and agent.gap_resets == 0
    got = agent.act({"imu": b, "dt": np.array([1e6], dtype=np.float32)})
    assert len(steps) == 52 and steps[-1] == 0.0 and agent.gap_resets == 1  # one first step on this event
    fresh = PolicyAgent(policy)
    np.testing.assert_array_equal(got, fresh.act({"imu": b, "dt": np.array([0.0], dtype=np.float32)}))
    later = agent.act({"imu": c, "dt": np.array([0.01], dtype=np.float32)})  # the clock goes on from the reset
    np.testing.assert_array_equal(later, fresh.act({"imu": c, "dt": np.array([0.01], dtype=np.float32)}))
    assert agent.max_gap_s == 1.0  # the node's default
    for bad in (0.0, -1.0, float("nan"), float("inf"), True, "1"):
        with pytest.raises(ValueError, match="PolicyAgent: max_gap_s must be seconds > 0"):
            PolicyAgent(policy, max_gap_s=bad)


def test_the_agents_large_gap_default_is_the_nodes():
    """PolicyAgent (simulated evaluation), PolicyRunner (runtime) and policy_node (its max_gap_s parameter) reset
    the state on the same gap by default; the three layers each hold the number, this keeps them equal."""
    from liquid_control.conventions.params import POLICY_NODE_PARAMETERS
    from liquid_control.policy.agent import DEFAULT_MAX_GAP_S
    from liquid_control.runtime.runner import RunnerLimits

    assert DEFAULT_MAX_GAP_S == RunnerLimits().max_gap_s == POLICY_NODE_PARAMETERS["max_gap_s"][0]


def test_the_shipped_node_parameter_files_reset_on_the_gap_training_and_evaluation_use():
    """The balance worlds' files said 0.2 s: the robot reset its state after gaps (0.2-1 s) that the policies were
    trained and evaluated integrating, and bags recorded with them were cut where simulation's data was not."""
    import yaml

    from liquid_control.paths import config_dir
    from liquid_control.policy.agent import DEFAULT_MAX_GAP_S

    files = sorted(config_dir().glob("*_policy.yaml"))
    assert len(files) >= 3
    for path in files:
        params = yaml.safe_load(path.read_text())["/**/policy_node"]["ros__parameters"]
        assert params.get("max_gap_s", DEFAULT_MAX_GAP_S) == DEFAULT_MAX_GAP_S, path.name


def test_what_a_padded_step_of_a_policy_sequence_holds_reaches_no_gradient():
    """The review of the cells' fix: Policy.forward_sequence (what training calls) ran padded observations through
    the encoders before the core held its state, so NaN padding still made the encoders' gradients NaN behind a
    finite loss. Padded observations are zeros before the encoders now: NaN padding trains as zero padding."""
    torch.manual_seed(0)
    policy = Policy(validate_config(small_config()))
    obs, dt = random_obs(2, 6), torch.full((2, 6), 0.066)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    grads = []
    for fill in (0.0, float("nan")):
        padded = {k: v.clone() for k, v in obs.items()}
        padded["imu"][1, 4:] = fill
        policy.zero_grad()
        actions, _ = policy.forward_sequence(padded, dt, mask=mask)
        (actions[mask] ** 2).sum().backward()
        grads.append([p.grad.clone() for p in policy.parameters() if p.grad is not None])
    assert all(torch.isfinite(g).all() for g in grads[1])
    for nan_padded, zero_padded in zip(*grads, strict=True):
        torch.testing.assert_close(nan_padded, zero_padded)


def test_padding_leaves_frames_shared_by_index_to_the_steps_that_hold_them():
    """The review: zeroing padded observations took the shared frames (B, F, ...) of ``image_index`` for steps where
    F == T, so a valid step holding frame f saw it black where step f was padding. Frames are uint8 (no NaN): only
    float inputs are zeroed. One unused frame more (F != T) gives the same actions."""
    torch.manual_seed(0)
    policy = Policy(validate_config(small_config())).eval()
    obs = random_obs(1, 4)
    frames, index = obs["image"], torch.tensor([[0, 1, 3, 3]])
    mask, dt = torch.tensor([[True, True, True, False]]), torch.full((1, 4), 0.066)
    spare = torch.cat([frames, frames[:, :1]], dim=1)  # F = 5
    with torch.no_grad():
        same = policy.forward_sequence({**obs, "image": frames, "image_index": index}, dt, mask=mask)[0]
        more = policy.forward_sequence({**obs, "image": spare, "image_index": index}, dt, mask=mask)[0]
    torch.testing.assert_close(same[:, :3], more[:, :3])
