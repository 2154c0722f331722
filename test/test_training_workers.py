"""Episode workers (`liquid-control train --workers N`): the same episodes and the same policy as one process,
and a failing episode named, with the finished ones kept."""

import copy
import os
import threading
import time

import numpy as np
import pytest
import torch
from test_training_fusion import fusion_config

import sim_envs  # noqa: F401
from liquid_control.policy import Policy, observation_keys, validate_config
from liquid_control.training import run as training_run
from liquid_control.training import trainer
from liquid_control.training.bc import DataParallel, bc_epoch
from liquid_control.training.data import load_episode, rollout
from liquid_control.training.episodes import (
    EpisodeWorkerError,
    EpisodeWorkers,
    collect_episode,
    episode_outcome,
    make_env,
)


def camera_imu_config(**training):
    """The tiny camera + IMU policy of test_training_fusion with every random part of collection switched on
    (DAgger's coin flips, DART noise on the expert, a sensor rate and jitter drawn per episode)."""
    config = fusion_config()
    config["training"].update(
        demonstrations=3,
        dagger_episodes=3,
        eval_episodes=3,
        action_noise=0.2,
        sensor_rate_range=[0.5, 2.0],
        **training,
    )
    return config


@pytest.fixture(scope="module")
def workers():
    """Two episode workers for the tests of this module (spawning them costs seconds). A failed episode ends them
    and the next use spawns new ones: the test that fails one and then uses them again comes before the one that
    fails one last, so the two spawn once between them, not twice."""
    pool = EpisodeWorkers(validate_config(camera_imu_config()), 2)
    yield pool
    pool.close()


def _same_episode(a, b):
    assert a.seed == b.seed and a.success == b.success
    assert sorted(a.observations) == sorted(b.observations)
    for key in a.observations:
        np.testing.assert_array_equal(a.observations[key], b.observations[key])
    for field in ("dt", "stamp", "expert_action", "action", "image_index"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_workers_collect_and_select_exactly_what_one_process_does(workers):
    config = workers.config
    torch.manual_seed(3)
    policy = Policy(config)
    env = make_env(config)
    try:
        for round_index in (0, 1):  # the expert alone, then DAgger's mixture with the policy driving
            here = [collect_episode(env, policy, config, 5, round_index, i) for i in range(3)]
            there = dict(workers.collect(policy, 5, round_index, range(3)))
            assert sorted(there) == [0, 1, 2]
            for i in range(3):
                _same_episode(here[i], there[i])
        assert not np.array_equal(there[0].action, there[0].expert_action)  # the policy drove part of it there
        seeds = [11, 12, 13, 14]
        alone = [episode_outcome(env, policy, s, 400) for s in seeds]
        assert len({steps for _, steps in alone}) > 1  # the untrained policy falls, each episode at its own time
        assert workers.outcomes(policy, seeds, 400) == alone
    finally:
        env.close()


def test_a_run_with_workers_is_the_run_without_them_bit_for_bit(tmp_path):
    config = camera_imu_config()
    quiet = dict(progress=False, log=lambda m: None)
    one = trainer.train(config, tmp_path / "one", **quiet)
    two = trainer.train(config, tmp_path / "two", workers=2, **quiet)
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one" / "data").rglob("ep_*.npz"))
    assert len(files) == 6  # round 0 (the expert) and round 1 (DAgger: the trained policy drives in the workers)
    for name in files:
        _same_episode(load_episode(tmp_path / "one" / name), load_episode(tmp_path / "two" / name))
    assert (one.success, one.selected_round) == (two.success, two.selected_round)
    a = torch.load(one.policy_path, weights_only=False)["state_dict"]
    b = torch.load(two.policy_path, weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    for bad in ({"workers": 0}, {"threads": 0}):
        with pytest.raises(ValueError, match="must be an integer >= 1"):
            trainer.train(config, tmp_path / "bad", **bad)


def test_threads_train_on_data_parallel_copies(tmp_path, monkeypatch):
    made = []

    class Spy(DataParallel):
        def __init__(self, policy, count):
            super().__init__(policy, count)
            made.append(self)

    monkeypatch.setattr(training_run, "DataParallel", Spy)
    one = trainer.train(camera_imu_config(dagger_rounds=0), tmp_path / "one", progress=False, log=lambda m: None)
    assert not made
    config = camera_imu_config(dagger_rounds=0)
    result = trainer.train(config, tmp_path / "two", threads=2, progress=False, log=lambda m: None)
    assert [p.count for p in made] == [2] and made[0].policy is not None
    assert result.epochs == one.epochs == 1 and result.policy_path.is_file()
    a = torch.load(one.policy_path, weights_only=False)["state_dict"]
    b = torch.load(result.policy_path, weights_only=False)["state_dict"]
    assert all(torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-5) for k in a)  # one epoch: the same up to rounding


@pytest.mark.parametrize(
    "batch_size, copies",
    [(3, 2), (1, 2), (3, 4)],  # (1, 2): the policy's own share is empty; (3, 4): a copy's share is
)
def test_data_parallel_bc_step_is_the_whole_batch_gradient(batch_size, copies):
    config = validate_config(camera_imu_config())
    env = make_env(config)
    keys = observation_keys(config)
    episodes = [rollout(env, seed=s, max_steps=n, observation_keys=keys) for s, n in ((1, 50), (2, 37), (3, 20))]
    env.close()
    torch.manual_seed(0)
    policy = Policy(config)
    twin = copy.deepcopy(policy)
    parallel = DataParallel(twin, copies)
    try:
        for model, par in ((policy, None), (twin, parallel)):
            optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # zero steps: the gradients stay to compare
            stats = bc_epoch(
                model,
                optimizer,
                episodes,
                batch_size=batch_size,
                sequence_length=16,
                grad_clip=0.0,
                rng=np.random.default_rng(0),
                parallel=par,
            )
            model.stats = stats
    finally:
        parallel.close()
    assert policy.stats["updates"] == twin.stats["updates"] == 107 and policy.stats["chunks"] == twin.stats["chunks"]
    assert twin.stats["loss"] == pytest.approx(policy.stats["loss"], rel=1e-5)
    for (name, a), b in zip(policy.named_parameters(), twin.parameters()):  # the last chunk's gradients
        if a.grad is None:
            assert b.grad is None, name
            continue
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-7, msg=name)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in twin.camera.parameters())
    with pytest.raises(ValueError, match="count >= 2"):
        DataParallel(policy, 1)


def _waits_for(path, index):
    deadline = time.monotonic() + 60
    while index == 0 and not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)
    return index


def test_each_episode_comes_back_as_soon_as_it_is_done(tmp_path, workers):
    """Episode 0 cannot finish before the test has received episode 1: a runner that returned the batch at its
    end would deliver 0 first (after its 60 s), and the test would see it."""
    gate = tmp_path / "gate"
    results = workers._run(_waits_for, {i: (str(gate), i) for i in range(2)}, str, "the batch")
    assert next(results) == (1, 1)
    gate.touch()
    assert next(results) == (0, 0)


def _fails_on_two(index):
    if index == 2:
        raise RuntimeError("the world exploded")
    return index * 10


def test_a_failing_episode_is_named_and_the_finished_ones_come_back_first(workers):
    finished = []
    with pytest.raises(EpisodeWorkerError, match="episode 2 of round 1 failed in a worker: RuntimeError: the world"):
        for key, value in workers._run(
            _fails_on_two, {i: (i,) for i in range(3)}, lambda i: f"episode {i} of round 1", "round 1"
        ):
            finished.append((key, value))
    assert set(finished) <= {(0, 0), (1, 10)} and finished  # what finished came back before the error
    assert dict(workers._run(_fails_on_two, {0: (0,), 1: (1,)}, str, "again")) == {0: 0, 1: 10}  # still serving
    with pytest.raises(ValueError, match="count must be >= 1"):
        EpisodeWorkers(camera_imu_config(), 0)


def _waits_or_fails(path, index):
    if index == 1:
        raise RuntimeError("the world exploded")
    return _waits_for(path, index)


def test_after_a_failure_the_episodes_already_running_still_come_back(tmp_path, workers):
    # both workers serve before the clock below starts: a worker still starting (the pool may be new, spawned after
    # a failure) would take episode 1 after the gate opened, and episode 0 would not be running while it failed
    ready = tmp_path / "ready"
    serving = workers._run(_waits_for, {i: (str(ready), i) for i in range(2)}, str, "both workers")
    assert next(serving) == (1, 1)
    ready.touch()
    assert next(serving) == (0, 0)
    gate = tmp_path / "gate"
    opener = threading.Timer(0.5, gate.touch)  # episode 0 finishes only after episode 1 has failed
    opener.start()
    finished = []
    try:
        with pytest.raises(EpisodeWorkerError, match="episode 1 failed in a worker: RuntimeError: the world"):
            for key, value in workers._run(
                _waits_or_fails, {i: (str(gate), i) for i in range(2)}, lambda i: f"episode {i}", "batch"
            ):
                finished.append((key, value))
    finally:
        opener.cancel()
    assert finished == [(0, 0)]


def test_ctrl_c_stops_a_worker_at_once_and_quietly(capfd):
    """Before: Ctrl-C (sent to the whole process group) killed each idle worker with a KeyboardInterrupt
    traceback of its own, printed before the training process's one-line "interrupted" message. (Ignoring it
    instead made Ctrl-C wait for every episode running or queued.)"""
    import signal
    from concurrent.futures.process import BrokenProcessPool

    own = EpisodeWorkers(validate_config(camera_imu_config()), 2)
    try:
        pool = own._executor()
        pids = {pool.submit(os.getpid).result() for _ in range(4)}
        for pid in pids:
            os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the pool breaks when its workers are gone
            try:
                pool.submit(os.getpid).result(timeout=5)
            except BrokenProcessPool:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the workers outlived Ctrl-C")
    finally:
        own.close()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err


def _gone(pid: int) -> bool:
    """Ended (reaped, or a zombie where PID 1 reaps nothing)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return any(line.startswith("State:") and "Z" in line for line in status)
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_workers_end_when_the_training_process_is_killed(tmp_path):
    """Before: `kill -9` (or a SIGTERM, before the training process handled it) of `liquid-control train
    --workers 2` left both workers idle for good, holding its stdout open (a `| tee log` never ended)."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import os, time\n"
        "from test_training_workers import camera_imu_config\n"
        "from liquid_control.policy import validate_config\n"
        "from liquid_control.training.episodes import EpisodeWorkers\n"
        "pool = EpisodeWorkers(validate_config(camera_imu_config()), 2)._executor()\n"
        "print(' '.join(str(p) for p in {pool.submit(os.getpid).result() for _ in range(6)}), flush=True)\n"
        "time.sleep(600)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        workers = [int(p) for p in proc.stdout.readline().split()]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert workers, "no worker answered"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(_gone(pid) for pid in workers):
        time.sleep(0.2)
    alive = [pid for pid in workers if not _gone(pid)]
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    assert not alive, f"workers {alive} outlived the killed training process"


def test_an_aborted_close_does_not_wait_for_the_running_episodes():
    """A review: SIGTERM to the training process alone (a batch system's stop) raised its interrupt, and closing
    the workers then waited for every running episode, past the grace period. An interrupted run terminates them
    (its finished episodes are saved)."""
    own = EpisodeWorkers(validate_config(camera_imu_config()), 2)
    pool = own._executor()
    pids = {pool.submit(os.getpid).result() for _ in range(4)}
    running = [pool.submit(time.sleep, 60) for _ in range(2)]
    time.sleep(0.5)
    start = time.monotonic()
    own.close(abort=True)
    assert time.monotonic() - start < 20, "close waited for the running episodes"
    del running
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not all(_gone(pid) for pid in pids):
        time.sleep(0.2)
    assert all(_gone(pid) for pid in pids)


@pytest.mark.parametrize("finished", [0, 1])
def test_a_worker_dying_in_the_first_round_says_whether_the_run_is_kept(tmp_path, monkeypatch, finished):
    """Before: a worker killed (the kernel's OOM killer, a stray kill) before the run's first episode was saved
    said 'finished episodes are saved; --resume continues', but the run folder was removed as a start that
    collected nothing, and the --resume it advised said 'no config given and no .../config.yaml to resume from'."""
    from test_training import tiny_config

    class DyingWorkers:  # the pool as seen by the run: `finished` episodes come back, then a worker dies
        def __init__(self, config, count):
            self.config = config

        def collect(self, policy, seed, round_index, missing):
            env = make_env(self.config)
            for i in missing[:finished]:
                yield i, collect_episode(env, policy, self.config, seed, round_index, i)
            raise EpisodeWorkerError(f"round {round_index}'s episodes: a worker process died or could not start")

        def close(self, abort=False):
            pass

    monkeypatch.setattr(training_run, "EpisodeWorkers", DyingWorkers)
    out = tmp_path / "run"
    with pytest.raises(trainer.TrainingError) as raised:
        trainer.train(tiny_config(), out, workers=2, progress=False, log=lambda m: None)
    if finished:
        assert str(raised.value).endswith("(finished episodes are saved; --resume continues)")
        assert (out / "data" / "round_00" / "ep_0000.npz").is_file()
    else:
        assert str(raised.value).endswith("(no episode had finished: nothing is kept, run the command again)")
        assert not out.exists()


def _returns_or_dies(seconds):
    if seconds:
        time.sleep(seconds)
        os._exit(1)
    return 0


def test_an_interrupt_while_episodes_are_queued_prints_no_thread_traceback(monkeypatch):
    """Before: SIGTERM or Ctrl-C landing while a round waited for its episodes cancelled the queued ones from the
    training process; when the workers ended after that (terminated by the interrupted run, or dying), the pool's
    thread marked those cancelled futures failed, and Python 3.11 printed 'Exception in thread ...
    InvalidStateError: CANCELLED' under 'liquid-control train: terminated: ...' (`kill <pid>` of `train --workers
    2`). Here the worker's death is certain: it ends itself a second after the interrupt, with episodes queued."""
    from liquid_control.processes import Terminated

    raised = []  # what an exception in a thread prints ('Exception in thread ...'), where pytest does not look
    monkeypatch.setattr(threading, "excepthook", lambda args: raised.append(repr(args.exc_value)))
    own = EpisodeWorkers(validate_config(camera_imu_config()), 1)
    try:
        results = own._run(_returns_or_dies, {0: (0,), 1: (1.0,), **{i: (0,) for i in range(2, 8)}}, str, "batch")
        assert next(results) == (0, 0)
        with pytest.raises(Terminated):
            results.throw(Terminated)  # where the signal's handler raises: in the round's wait for its episodes
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not own._pool._broken:  # the worker ends itself
            time.sleep(0.1)
        assert own._pool._broken, "the worker did not end: nothing was checked"
        manager = own._pool._executor_manager_thread  # it marks the futures it holds failed, then ends
        if manager is not None:
            manager.join(timeout=30)
            assert not manager.is_alive()
    finally:
        own.close(abort=True)
    assert raised == []


def test_a_workers_warning_reaches_the_user_once_whatever_the_workers(monkeypatch, capfd):
    """Before: a warning given in the episode workers (here the compiled kernels' about LIQUID_CONTROL_NATIVE=maybe,
    which each worker gives when it first runs the policy) was printed by every worker process (the same lines N
    times for --workers N), as evaluation's were before 1b78d8b5. It comes back with the episode and the training
    process shows it once."""
    import warnings

    monkeypatch.setenv("LIQUID_CONTROL_NATIVE", "maybe")  # the workers' environment (spawned)
    config = validate_config(camera_imu_config())
    policy = Policy(config)
    pool = EpisodeWorkers(config, 2)
    try:
        with warnings.catch_warnings(record=True) as shown:
            warnings.simplefilter("always")  # this process's filter: every warning it is given is shown
            outcomes = pool.outcomes(policy, [11, 12, 13, 14], max_steps=3)
            episodes = list(pool.collect(policy, 0, 1, range(2)))  # round 1: the policy drives with the expert
    finally:
        pool.close()
    assert len(outcomes) == 4 and len(episodes) == 2
    said = [str(w.message) for w in shown if "LIQUID_CONTROL_NATIVE='maybe'" in str(w.message)]
    assert len(said) == 1, [str(w.message) for w in shown]
    assert "LIQUID_CONTROL_NATIVE" not in capfd.readouterr().err  # no worker printed it itself


def test_the_compiled_kernels_warning_of_the_training_process_and_its_workers_is_shown_once(tmp_path):
    """Before: with no C compiler, `liquid-control train --workers 2` said "compiled kernels unavailable" twice: the
    training process's own warning (attributed to whichever caller loaded the kernels first) and its workers' copy
    (attributed elsewhere), which WarningsOnce could not tell apart. Both now come from one place, shown once."""
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "two_workers.py"
    script.write_text(
        "from test_training_workers import camera_imu_config\n"
        "from liquid_control.cells import native\n"
        "from liquid_control.policy import Policy, validate_config\n"
        "from liquid_control.training.episodes import EpisodeWorkers\n\n"
        "def main():\n"
        "    native.load()  # the training process's own warning, as train's policy gives it\n"
        "    config = validate_config(camera_imu_config())\n"
        "    pool = EpisodeWorkers(config, 2)\n"
        "    try:\n"
        "        print(len(pool.outcomes(Policy(config), [11, 12, 13, 14], max_steps=3)))\n"
        "    finally:\n"
        "        pool.close()\n\n"
        "if __name__ == '__main__':\n"
        "    main()\n"
    )
    here = Path(__file__).resolve().parent
    env = dict(os.environ, CC="/nonexistent/cc", LIQUID_CONTROL_CACHE=str(tmp_path / "cache"))
    env["PYTHONPATH"] = os.pathsep.join([str(here.parent), str(here), env.get("PYTHONPATH", "")])
    env.pop("LIQUID_CONTROL_NATIVE", None)
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "4", proc.stderr[-3000:]
    assert proc.stderr.count("UserWarning: liquid_control: compiled kernels unavailable") == 1, proc.stderr
