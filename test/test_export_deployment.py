"""Deploying a policy as a robotics user would: the shipped exports give the commands of torch on one stream of
readings (irregular dts, sub-steps, dt 0, a reset, a gap); an export is never taken for a checkpoint it does not
hold; an onnxruntime that cannot be imported leaves torch running, not a crash; the fusion policy's simulated
episode and PolicyRunner on the episode's deliveries give the same commands."""

import builtins
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from liquid_control import cli
from liquid_control.policy import load_policy, save_policy
from liquid_control.runtime import export
from liquid_control.runtime.backends import BackendError, TorchBackend, load_backend, read_onnx_metadata
from liquid_control.runtime.runner import PolicyRunner

POLICIES = Path(__file__).resolve().parents[1] / "policies"
TOLERANCE = 1e-5  # docs/ros.md: export parity with torch


def stream(spec, seconds=3.0, seed=0):
    """(sensor, stamp, reading) in stamp order: the camera at ~15-30 Hz and vectors at ~200 Hz, periods jittered
    0.3-2.5x; every sensor silent for 0.37 s (sub-steps of a core.max_step policy) and for 1.3 s (a gap that
    resets the state); every sensor once at the same stamp (a second update sensor's dt 0)."""
    rng = np.random.default_rng(seed)
    periods = {
        s: (1 / 15 if spec.update_on == ("camera",) else 1 / 30) if s == "camera" else 1 / 200 for s in spec.sensors
    }
    events = {(round(1.0, 9), s) for s in spec.sensors}
    for sensor, period in periods.items():
        t = 0.0
        while t < seconds:
            if not (0.5 <= t < 0.87 or 1.5 <= t < 2.8):
                events.add((round(t, 9), sensor))
            t += period * rng.uniform(0.3, 2.5)
    out = []
    for t, sensor in sorted(events):
        shape = spec.sensors[sensor]
        if sensor == "camera":
            value = np.clip(rng.integers(30, 220) + rng.integers(-40, 40, size=shape), 0, 255).astype(np.uint8)
        else:
            value = rng.normal(size=shape).astype(np.float32)
        out.append((sensor, t, value))
    return out


def commands(backend, readings):
    """The commands of a PolicyRunner fed ``readings``, with a reset request half way."""
    runner = PolicyRunner(backend)
    actions, dts = [], []
    for i, (sensor, stamp, value) in enumerate(readings):
        if i == len(readings) // 2:
            runner.reset("request")
        result = runner.submit(sensor, stamp, value)
        assert result.accepted, (sensor, stamp, result.reason, result.detail)
        if result.updates:
            actions.append(result.action)
            dts.append(result.dt)
    assert runner.counters["resets.gap"] == 1 and runner.counters["resets.request"] == 1
    return np.array(actions), np.array(dts)


@pytest.mark.parametrize("name", ["cfc_balance_nav", "cfc_balancer", "ltc_ncp_rover"])
def test_shipped_export_gives_torchs_commands_on_a_stream_with_irregular_dts(name):
    """cfc_balance_nav: camera + IMU updates; cfc_balancer: IMU updates with a setpoint; ltc_ncp_rover: sub-steps
    (core.max_step 0.1 s, a 0.37 s silence is 4 of them). Measured: at most 2.5e-6 apart over every shipped
    policy, torch with or without the compiled kernels."""
    torch_backend = TorchBackend(load_policy(POLICIES / f"{name}.pt"))
    onnx_backend = load_backend(POLICIES / f"{name}.onnx")
    readings = stream(torch_backend.spec)
    (torch_actions, dts), (onnx_actions, onnx_dts) = commands(torch_backend, readings), commands(onnx_backend, readings)
    assert dts.max() > 0.35 and (dts == 0).sum() >= 3 and len(dts) > 10
    np.testing.assert_array_equal(dts, onnx_dts)
    assert np.isfinite(onnx_actions).all() and np.abs(torch_actions - onnx_actions).max() <= TOLERANCE


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "policy.pt"
    path.write_bytes((POLICIES / "cfc_balancer.pt").read_bytes())
    return path


def retrained(path):
    policy = load_policy(path)
    with torch.no_grad():
        for parameter in policy.parameters():
            parameter.add_(0.05)
    return policy


BALANCER_OBS = {"imu": np.ones(6, np.float32), "wheels": np.ones(2, np.float32), "command": np.ones(2, np.float32)}


def test_an_export_during_which_training_replaces_the_checkpoint_is_not_run_for_the_new_one(checkpoint, monkeypatch):
    """Before: the export hashed the checkpoint after tracing, so a training run saving its next selection
    meanwhile gave an export of the old weights recording the new file's SHA-256, and backend auto ran it in place
    of the new policy without a word (commands 0.39 apart). Now it records the bytes it loaded: stale, not run."""
    newer = retrained(checkpoint)
    trace = export._trace

    def trace_while_training_saves(*args, **kwargs):
        save_policy(checkpoint, newer)
        return trace(*args, **kwargs)

    monkeypatch.setattr(export, "_trace", trace_while_training_saves)
    assert cli.main(["export", str(checkpoint)]) == 0
    monkeypatch.setattr(export, "_trace", trace)
    chosen = load_backend(checkpoint, warn=False)
    assert isinstance(chosen, TorchBackend), "the export of the old weights ran for the new checkpoint"
    assert "was exported from another version of it or from another policy" in chosen.note
    with pytest.raises(BackendError, match="policy.onnx: exported from another version of policy.pt"):
        load_backend(checkpoint, "onnx")
    expected = TorchBackend(newer).step(BALANCER_OBS, chosen.initial_state(), 0.01)[0]
    np.testing.assert_array_equal(chosen.step(BALANCER_OBS, chosen.initial_state(), 0.01)[0], expected)


def test_a_checkpoint_replaced_while_it_is_loaded_is_not_exported(checkpoint, monkeypatch, capsys):
    import liquid_control.policy as policy_package

    load = policy_package.load_policy

    def load_while_training_saves(path):
        policy = load(path)
        save_policy(checkpoint, retrained(checkpoint))
        return policy

    monkeypatch.setattr(policy_package, "load_policy", load_while_training_saves)
    assert cli.main(["export", str(checkpoint)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"liquid-control export: error: {checkpoint}: the checkpoint changed while it was read (is a training run "
        f"still writing it?); export it again; {checkpoint.with_suffix('.onnx')} not written\n"
    )
    assert not checkpoint.with_suffix(".onnx").exists()


def test_an_onnxruntime_that_fails_to_import_leaves_torch_running_and_is_named(checkpoint, monkeypatch):
    """Before: only ImportError was caught, so an install whose import raised anything else (OSError of a missing
    shared library) escaped load_backend: backend auto failed instead of running the checkpoint with torch."""
    assert cli.main(["export", str(checkpoint)]) == 0
    import onnxruntime  # noqa: F401 - in sys.modules, so that the patched import below is the one that fails

    real_import = builtins.__import__

    def broken_import(name, *args, **kwargs):
        if name == "onnxruntime":
            raise OSError("libonnxruntime.so.1: cannot open shared object file")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "onnxruntime")
    monkeypatch.setattr(builtins, "__import__", broken_import)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        chosen = load_backend(checkpoint)
    assert isinstance(chosen, TorchBackend)
    assert "onnxruntime fails to import (OSError: libonnxruntime.so.1" in chosen.note
    onnx_file = checkpoint.with_suffix(".onnx")
    with pytest.raises(BackendError, match=f"^{onnx_file}: onnxruntime fails to import \\(OSError: "):
        load_backend(checkpoint, "onnx")
    with pytest.raises(ValueError, match=f"^{onnx_file}: onnxruntime fails to import"):
        read_onnx_metadata(onnx_file)  # what the launch files read a policy's inputs with


def test_an_export_of_another_policy_beside_a_checkpoint_names_the_policy_it_holds(tmp_path):
    pt = tmp_path / "cfc_ncp_rover.pt"
    pt.write_bytes((POLICIES / "cfc_ncp_rover.pt").read_bytes())
    pt.with_suffix(".onnx").write_bytes((POLICIES / "cfc_rover.onnx").read_bytes())
    assert "(it holds policy 'cfc_rover'; re-export it" in load_backend(pt, warn=False).note
    with pytest.raises(BackendError, match="or from another policy \\(it holds policy 'cfc_rover'; checkpoint SHA"):
        load_backend(pt, "onnx")


def test_the_fusion_policys_episode_and_the_runner_on_its_deliveries_give_the_same_commands():
    """The shipped camera + IMU policy drives LiquidBalanceNav-v0 (PolicyAgent, as the evaluation does); its
    sensor deliveries, fed to PolicyRunner in arrival order, give the episode's commands: bit for bit with torch,
    within the export tolerance with ONNX (measured 2.4e-7 over 600 updates, 77 camera frames late with dt 0)."""
    from liquid_control.policy.agent import PolicyAgent
    from sim_envs.balance_nav import LiquidBalanceNavEnv

    class Recording(LiquidBalanceNavEnv):
        def next_delivery(self, until=None):
            delivery = super().next_delivery(until)
            if delivery is not None:
                self.deliveries.append(delivery)
            return delivery

    policy = load_policy(POLICIES / "cfc_balance_nav.pt")
    env = Recording(render_size=policy.config["observation"]["image"]["height"])
    env.deliveries = []
    agent = PolicyAgent(policy)
    obs, _ = env.reset(seed=7)
    episode = []
    for _ in range(250):
        episode.append(agent.act(obs))
        obs, _, terminated, truncated, _ = env.step(episode[-1])
        assert not (terminated or truncated)
    env.close()
    for backend, tolerance in (
        (TorchBackend(policy), 0.0),
        (load_backend(POLICIES / "cfc_balance_nav.onnx"), TOLERANCE),
    ):
        runner = PolicyRunner(backend)
        actions = []
        for sensor, stamp, reading in env.deliveries:
            result = runner.submit({"encoders": "wheels"}.get(sensor, sensor), stamp, reading)
            assert result.accepted and result.updates <= 1
            if result.updates:
                actions.append(result.action)
        assert len(actions) >= len(episode) and runner.counters["late.camera"] > 10
        assert np.abs(np.array(actions[: len(episode)]) - np.array(episode)).max() <= tolerance


def test_an_export_run_directly_beside_a_retrained_checkpoint_says_so(checkpoint):
    """Before: a node pointed at policy.onnx ran it without a word after policy.pt beside it was retrained."""
    assert cli.main(["export", str(checkpoint)]) == 0
    onnx_file = checkpoint.with_suffix(".onnx")
    assert load_backend(onnx_file).note is None  # the export of the checkpoint beside it
    save_policy(checkpoint, retrained(checkpoint))
    with pytest.warns(UserWarning, match=f"{onnx_file}: runs as asked, but policy.pt beside it is not the checkpoint"):
        chosen = load_backend(onnx_file)
    assert chosen.name == "onnx" and "re-export it" in chosen.note
    checkpoint.unlink()  # a robot with the export alone: nothing to compare with
    assert load_backend(onnx_file).note is None


def test_an_export_run_directly_beside_an_unreadable_checkpoint_runs_and_says_so(checkpoint, monkeypatch):
    """Before: an OSError reading the .pt beside an .onnx named directly (the check of a retrained checkpoint)
    failed a load that had worked, and left the ONNX session it had opened behind."""
    from liquid_control.runtime import backends

    assert cli.main(["export", str(checkpoint)]) == 0
    onnx_file = checkpoint.with_suffix(".onnx")

    def unreadable(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(backends, "checkpoint_sha256", unreadable)
    with pytest.warns(UserWarning, match=f"{onnx_file}: runs as asked; policy.pt beside it could not be read"):
        chosen = load_backend(onnx_file)
    assert chosen.name == "onnx" and "Permission denied" in chosen.note and "unchecked" in chosen.note
    action, _ = chosen.step(BALANCER_OBS, chosen.initial_state(), 0.01)
    assert np.isfinite(action).all()


def test_export_to_a_folder_is_refused_before_the_export_naming_a_file_in_it(tmp_path, capsys):
    """Before: `export P.pt -o deploy` (an existing folder) said 'give a .onnx file (... deploy would not run, and the
    file there would be replaced)', as if deploy were a file, and `-o deploy.onnx` (a folder) exported and checked the
    model, then 'cannot write deploy.onnx: Is a directory'. Now both say it is a folder and name a file in it, as
    view --snapshot does, before any work, and leave the folders empty; a new name without .onnx is not called a
    file that would be replaced."""
    pt = tmp_path / "rover.pt"
    pt.write_bytes((POLICIES / "cfc_balancer.pt").read_bytes())
    for name in ("deploy", "deploy.onnx"):
        folder = tmp_path / name
        folder.mkdir()
        for given in (str(folder), str(folder) + "/"):
            assert cli.main(["export", str(pt), "-o", given]) == 2
            out, err = capsys.readouterr()
            said = f"liquid-control export: error: --output {folder}: is a folder; give a file name such as "
            assert err == f"{said}{folder / 'rover.onnx'}\n" and out == "", err
        assert list(folder.iterdir()) == []
    assert cli.main(["export", str(pt), "-o", str(tmp_path / "new")]) == 2
    err = capsys.readouterr().err
    assert "--output" in err and "give a .onnx file" in err and "would be replaced" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deploy", "deploy.onnx", "rover.pt"]
