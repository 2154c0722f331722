"""``core.max_step``: a dt longer than the steps a cell was trained on is integrated in equal sub-steps with
the input held, the same way in streaming steps, sequences (training) and the ONNX export."""

import pytest
import torch
from test_policy import random_obs, small_config

from liquid_control.cells.dt import MAX_SUBSTEPS, substep_counts
from liquid_control.policy import Policy, PolicyConfigError, validate_config

MAX_STEP = 0.05


def _pair(core=None, seed=0):
    """The same weights with and without ``max_step``."""
    torch.manual_seed(seed)
    cfg = small_config(core or {"type": "cfc", "units": 8, "wiring": "ncp", "mode": "pure"})
    plain = Policy.from_config(cfg)
    cfg["core"]["max_step"] = MAX_STEP
    split = Policy.from_config(cfg)
    split.load_state_dict(plain.state_dict())
    return plain.eval(), split.eval()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c["core"].update(max_step=0.0), "core.max_step: must be >= 0.0001"),
        (lambda c: c["core"].update(max_step="fast"), "core.max_step: expected a number"),
        (
            lambda c: c["core"].update(type="lstm", wiring="none", max_step=0.1),
            "core.type 'lstm' does not integrate dt",
        ),
        (lambda c: c["core"].update(ignore_dt=True, max_step=0.1), "core.ignore_dt is true"),
    ],
)
def test_bad_max_step_is_rejected_with_the_key_path(mutate, message):
    cfg = small_config()
    mutate(cfg)
    with pytest.raises(PolicyConfigError, match="core.max_step") as err:
        validate_config(cfg)
    assert message in str(err.value)


def test_counts_cover_the_gap_and_are_bounded():
    dt = torch.tensor([0.0, 0.01, MAX_STEP, 0.051, 0.2, 0.21, 100.0])
    counts = substep_counts(dt, MAX_STEP)
    assert counts.tolist() == [1, 1, 1, 2, 4, 5, MAX_SUBSTEPS]
    assert bool(((dt / counts <= MAX_STEP) | (counts == MAX_SUBSTEPS)).all())


@pytest.mark.parametrize(
    "core",
    [
        {"type": "cfc", "units": 8, "wiring": "ncp", "mode": "pure"},
        {"type": "ltc", "units": 8, "wiring": "ncp", "unfolds": 2},
        {"type": "ctrnn", "units": 6},
    ],
)
def test_a_long_dt_is_integrated_as_sub_steps_on_the_held_input(core):
    plain, split = _pair(core)
    obs = random_obs(1, None)
    with torch.no_grad():
        state = plain.step(obs, None, torch.tensor([0.03]))[1]  # some state to start from
        long_dt = torch.tensor([3.5 * MAX_STEP])  # 4 sub-steps of 0.04375 s
        expected_state = state
        for _ in range(4):
            _, expected_state = plain.step(obs, expected_state, long_dt / 4)
        action, got_state = split.step(obs, state, long_dt)
        one_step, one_state = plain.step(obs, state, long_dt)
        torch.testing.assert_close(got_state, expected_state, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(action, split.act_from_output(split.core.output(split.split_state(got_state)[0])))
        assert (got_state - one_state).abs().max() > 1e-5  # the sub-steps change the result (CT-RNN: a little)
        # a dt within max_step is one step, bit for bit what the policy without max_step computes
        short = torch.tensor([0.9 * MAX_STEP])
        assert torch.equal(split.step(obs, state, short)[1], plain.step(obs, state, short)[1])


def test_each_sample_takes_its_own_sub_steps_whatever_its_batchmates_need():
    plain, split = _pair()
    obs = random_obs(3, None, seed=3)
    dt = torch.tensor([0.02, 0.12, 0.31])  # 1, 3 and 7 sub-steps
    with torch.no_grad():
        _, together = split.step(obs, None, dt)
        for b in range(3):
            _, alone = split.step({k: v[b : b + 1] for k, v in obs.items()}, None, dt[b : b + 1])
            torch.testing.assert_close(together[b : b + 1], alone, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kernel", ["fused", "stepwise"])
def test_sequences_take_the_same_sub_steps_as_streaming_steps(kernel):
    torch.manual_seed(4)
    cfg = small_config({"type": "cfc", "units": 8, "wiring": "ncp", "mode": "pure", "max_step": MAX_STEP})
    cfg["training"] = {"sequence_kernel": kernel}
    policy = Policy.from_config(cfg)
    obs = random_obs(3, 6, seed=5)
    dt = torch.rand(3, 6) * 0.2  # 0-0.2 s: 1 to 4 sub-steps, different per sample and step
    dt[1, 2] = 0.0
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[2, 4:] = False  # padding holds the state, sub-steps or not
    actions, h_n = policy.forward_sequence(obs, dt, mask=mask)
    assert int(substep_counts(dt, MAX_STEP).max()) > 1  # the expansion ran
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            state, stepped = None, []
            for t in range(6):
                a, new = policy.step({k: v[:, t] for k, v in obs.items()}, state, dt[:, t])
                if state is not None:
                    keep = mask[:, t, None]
                    new = torch.where(keep, new, state)
                    a = torch.where(keep, a, stepped[-1])
                state = new
                stepped.append(a)
        torch.testing.assert_close(torch.stack(stepped, 1)[mask], actions[mask], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(state[:, : policy.core.state_size], h_n[:, : policy.core.state_size])
    # gradients flow through every sub-step
    loss = actions.square().sum()
    loss.backward()
    assert all(p.grad is not None for p in policy.core.parameters() if p.requires_grad)


def test_the_onnx_export_takes_the_same_sub_steps(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from liquid_control.runtime.backends import onnx_input_names
    from liquid_control.runtime.export import ObservationSpec, example_inputs, export_onnx

    plain, split = _pair()
    path = export_onnx(split, tmp_path / "split.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = onnx_input_names(ObservationSpec.from_config(split.config))
    inputs = example_inputs(split, batch=4, seed=6)
    inputs["dt"] = torch.tensor([0.0, 0.04, 0.26, 2.0]).numpy()  # 1, 1, 6 and MAX_SUBSTEPS sub-steps
    obs = {k: torch.from_numpy(v) for k, v in inputs.items() if k not in ("state", "dt")}
    state, dt = torch.from_numpy(inputs["state"]), torch.from_numpy(inputs["dt"])
    with torch.no_grad():
        want = split.step(obs, state, dt)
        without = plain.step(obs, state, dt)
    got = session.run(["action", "state_out"], {n: inputs[n] for n in names})
    for w, g in zip(want, got):
        torch.testing.assert_close(torch.from_numpy(g), w, atol=2e-5, rtol=1e-4)
    assert (without[1] - want[1]).abs().max() > 1e-3  # the exported graph did sub-step


def test_the_shipped_cfc_ncp_rover_still_drives_at_a_quarter_of_its_camera_rate():
    """Closed loop, the evaluation's own path: at 0.25x the camera rate (dt ~0.27 s, training steps <= 0.08 s)
    the shipped pure-mode CfC-NCP reached the target in 89 of 100 evaluation episodes with its ``max_step`` and
    in 0 of 100 without (it stalls: docs/training.md, "Longer gaps than in training"). A rate, not a count: at
    least as many successes as a policy at the lower 95% bound of 89/100 (81%) reaches with probability
    1 - 1e-3."""
    from liquid_control.evaluation.agents import default_env_kwargs
    from liquid_control.evaluation.batched import WorldPool, run_batch
    from liquid_control.evaluation.plan import EpisodeJob
    from liquid_control.paths import policies_dir
    from liquid_control.policy import load_policy
    from liquid_control.runtime.backends import checkpoint_sha256
    from liquid_control.training.model_card import min_check_successes

    path = policies_dir() / "cfc_ncp_rover.pt"
    policy = load_policy(path)
    assert policy.max_step == pytest.approx(0.1)
    seeds, sha, kwargs = range(16), checkpoint_sha256(str(path)), default_env_kwargs(policy.config)
    jobs = [EpisodeJob("p", 0, "sensor_rate=0.25", s, policy.config["world"], str(path), sha, kwargs) for s in seeds]
    pool = WorldPool()
    try:
        records = run_batch(jobs, pool=pool)
    finally:
        pool.close()
    assert {r["mean_dt_s"] > 0.2 for r in records} == {True}  # the camera did run at a quarter of its rate
    wins, needed = sum(r["success"] for r in records), min_check_successes(len(seeds), 0.81, 1e-3)
    assert wins >= needed, f"{wins}/{len(seeds)} at 0.25x the camera rate (at least {needed})"


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_a_sensor_stamped_exactly_max_step_apart_drives_the_same_at_system_time_stamps(backend):
    """A soak of the node: stamps of system time (~1.7e9 s) read as float seconds are 238 ns apart, so a camera
    stamped exactly 100 ms apart measured dts of 0.1 +- 1.4e-7 s, and ``ceil(dt / max_step)`` took two sub-steps
    for those just past 0.1: the shipped rover's commands differed by up to 0.57 from those of the same stamps near
    0 (sim time, where it trained). Counts now allow ``DT_TOLERANCE_S`` past a multiple, ONNX graph included."""
    if backend == "onnx":
        pytest.importorskip("onnxruntime")
    from types import SimpleNamespace

    import numpy as np

    from liquid_control.conventions import stamps
    from liquid_control.paths import policies_dir
    from liquid_control.runtime.backends import load_backend
    from liquid_control.runtime.runner import PolicyRunner, RunnerLimits

    path = policies_dir() / "cfc_ncp_rover.pt"
    frames = np.random.default_rng(0).integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)

    def commands(base_ns):
        runner = PolicyRunner(load_backend(path, backend, warn=False), RunnerLimits(max_gap_s=1.0))
        actions, dts = [], []
        for k in range(40):
            ns = base_ns + k * 100_000_000
            result = runner.submit(
                "camera", stamps.seconds(SimpleNamespace(sec=ns // 10**9, nanosec=ns % 10**9)), frames[k % 8]
            )
            actions.append(result.action)
            dts.append(result.dt)
        return np.array(actions), np.array(dts)

    near_zero, near_zero_dts = commands(5 * 10**9)
    system_time, system_time_dts = commands(1_700_000_000 * 10**9)
    assert np.abs(system_time_dts - near_zero_dts).max() > 1e-8  # the stamps' float rounding is there
    np.testing.assert_allclose(system_time, near_zero, atol=1e-4)


def test_the_simulated_gap_rules_count_a_gap_as_the_runner_does():
    """The review: the runner counted a dt past ``max_gap_s`` only 1 us beyond it, while PolicyAgent (evaluation),
    the batched lanes and training's split_at_gaps, which the docs say follow it, reset at any dt past it. One value
    for both layers (the runtime's timeline is torch-free, so it keeps its own constant)."""
    import numpy as np

    from liquid_control.cells.dt import DT_TOLERANCE_S
    from liquid_control.policy import PolicyAgent
    from liquid_control.runtime.timeline import STAMP_TOLERANCE_S

    assert DT_TOLERANCE_S == STAMP_TOLERANCE_S
    torch.manual_seed(0)
    agent = PolicyAgent(Policy.from_config(small_config()).eval(), max_gap_s=1.0)
    obs = {k: v[0].numpy() for k, v in random_obs(1, None).items()}
    for dt, resets in ((0.1, 0), (1.0 + 0.5e-6, 0), (1.0 + 3e-6, 1)):
        agent.act({**obs, "dt": np.float32(dt)})
        assert agent.gap_resets == resets, dt
