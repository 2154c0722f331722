"""`liquid-control train` input handling: --set values, the output folder (new, empty, a run, or refused) and
what a refused or failed start leaves behind (nothing)."""

import time

import pytest
import torch
import yaml
from test_training import tiny_config

from liquid_control import cli
from liquid_control.policy import validate_config
from liquid_control.training import run as training_run
from liquid_control.training import trainer

ROVER = "policies/configs/cfc_rover.yaml"


def _train(argv, capsys):
    code = cli.main(["train", "--config", ROVER, "--no-progress", *argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def test_a_set_value_that_is_not_yaml_names_the_argument(tmp_path, capsys):
    """Before: a yaml.parser.ParserError traceback."""
    code, err = _train(["--out", str(tmp_path / "r"), "--set", "training.lr=[1,2"], capsys)
    assert code == 2 and "--set 'training.lr=[1,2': the value is not valid YAML: expected ',' or ']'" in err
    assert len(err.strip().splitlines()) == 1
    code, err = _train(["--out", str(tmp_path / "r"), "--set", "training={lr: 1, lr: 2}"], capsys)
    assert code == 2 and "--set 'training={lr: 1, lr: 2}': lr: key given twice" in err
    assert not (tmp_path / "r").exists()


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    """Before: a FileExistsError traceback."""
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    code, err = _train(["--out", str(a_file)], capsys)
    assert code == 2 and f"--out {a_file}: exists and is not a folder" in err
    code, err = _train(["--out", str(a_file / "run")], capsys)
    assert code == 2 and f"--out {a_file / 'run'}: {a_file} exists and is not a folder" in err
    assert a_file.read_text() == "mine"


def test_a_folder_of_other_files_is_neither_overwritten_nor_resumed(tmp_path, capsys):
    """Before: a folder holding an unrelated metrics.csv (or another config's config.yaml) was trained into,
    its files overwritten; --resume on it silently started a fresh run."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "metrics.csv").write_text("a,b\n1,2\n")
    code, err = _train(["--out", str(other), "--set", "training.epochs_first=1"], capsys)
    assert code == 2 and f"{other}: not empty and not a training run (it holds metrics.csv)" in err
    code, err = _train(["--out", str(other), "--resume"], capsys)
    assert code == 2 and f"{other}: holds no training run to resume" in err and "metrics.csv" in err
    assert sorted(p.name for p in other.iterdir()) == ["metrics.csv"]
    assert (other / "metrics.csv").read_text() == "a,b\n1,2\n"
    another = tmp_path / "another"
    another.mkdir()
    (another / "config.yaml").write_text(open("policies/configs/lstm_rover.yaml").read())
    code, err = _train(["--out", str(another)], capsys)
    assert code == 2 and "(it holds config.yaml; its config.yaml is not this config)" in err


def test_a_resume_with_another_seed_before_any_episode_is_refused(tmp_path, monkeypatch):
    """Before: a run killed (SIGKILL, a reboot) before its first episode was saved resumed with another --seed, and
    its policy.pt named the first command, whose --seed trains another run (the episodes on disk record their
    seeds, but there were none)."""
    from liquid_control.policy import load_policy

    out = tmp_path / "run"
    first = f"liquid-control train --config tiny.yaml --out {out} --seed 0"

    def killed(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(training_run, "collect_episode", killed)
    monkeypatch.setattr(trainer, "_undo_start", lambda *args: None)  # a SIGKILL undoes nothing
    with pytest.raises(RuntimeError, match="killed"):
        trainer.train(tiny_config(dagger_rounds=0), out, seed=0, progress=False, command=first, log=lambda m: None)
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir()) == ["command.txt", "config.yaml"]
    with pytest.raises(trainer.TrainingError, match=r"command.txt: the run in .* was started with seed \(--seed\) 0, "):
        trainer.train(None, out, seed=3, resume=True, progress=False, log=lambda m: None)
    assert sorted(p.name for p in out.iterdir()) == ["command.txt", "config.yaml"]
    result = trainer.train(None, out, seed=0, resume=True, progress=False, command="--resume", log=lambda m: None)
    metadata = load_policy(result.policy_path).metadata
    assert (metadata["seed"], metadata["command"]) == (0, first)


def test_a_start_that_trained_nothing_leaves_nothing_and_blocks_nothing(tmp_path, monkeypatch):
    """Before: a start that failed before its first episode left config.yaml and data/, and the corrected
    command was refused ("already holds a training run")."""
    out = tmp_path / "new" / "run"

    def dying(*args, **kwargs):
        raise RuntimeError("the world failed to start")

    monkeypatch.setattr(training_run, "collect_episode", dying)
    with pytest.raises(RuntimeError, match="failed to start"):
        trainer.train(tiny_config(dagger_rounds=0), out, progress=False, log=lambda m: None)
    assert not (tmp_path / "new").exists()
    # A sibling run started in the same new parent meanwhile (the headline's seeds run side by side): undoing
    # this start removes its own folder and the parents it made only while they are empty (once an rmtree of
    # the parent took the sibling's episodes and checkpoint with it).
    sibling = tmp_path / "new" / "other_seed"
    sibling.mkdir(parents=True)
    (sibling / "checkpoint.pt").write_bytes(b"its progress")
    (out / "data").mkdir(parents=True)
    (out / "config.yaml").write_text("x")
    trainer._undo_start(out, tmp_path / "new", set())
    assert not out.exists() and (sibling / "checkpoint.pt").read_bytes() == b"its progress"
    sibling.joinpath("checkpoint.pt").unlink()
    sibling.rmdir()
    monkeypatch.undo()
    # what such a start left before (config.yaml of this config, data.yaml, an empty data tree): not a run
    out.mkdir(parents=True)
    (out / "config.yaml").write_text(yaml.safe_dump(validate_config(tiny_config(dagger_rounds=0))))
    (out / "data.yaml").write_text("data: {bags: [x]}\n")
    (out / "data" / "bags" / "train").mkdir(parents=True)
    result = trainer.train(tiny_config(dagger_rounds=0), out, progress=False, log=lambda m: None)
    assert result.policy_path.is_file() and not (out / "data.yaml").exists()
    with pytest.raises(trainer.TrainingError, match="already holds a training run: pass --resume to continue it"):
        trainer.train(tiny_config(dagger_rounds=0), out, progress=False, log=lambda m: None)
    empty = tmp_path / "empty"
    empty.mkdir()  # resume on a new or empty folder starts the run (documented in --help)
    assert trainer.train(tiny_config(dagger_rounds=0), empty, resume=True, progress=False, log=lambda m: None).epochs


@pytest.mark.parametrize(
    "section,setting,message",
    [
        ("core", {"solver": "rk4"}, "core.solver: 'rk4' would be ignored, it applies to core.type ltc only"),
        ("training", {"lr_final": 0.01}, "training.lr_final: 0.01 is above training.lr 0.002"),
    ],
)
def test_resume_into_a_new_folder_starts_a_run_with_the_checks_of_a_new_one(
    tmp_path, capsys, section, setting, message
):
    """Before: --resume into a new or empty folder (which starts the run) skipped the checks a resumed run of an
    older version may not meet: a setting without effect was trained past and a learning rate rising from
    training.lr to lr_final was used, where the same command without --resume refused them."""
    config = yaml.safe_load(open(ROVER))
    config[section].update(setting)
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(config))
    tiny = ["training.demonstrations=1", "training.dagger_rounds=0", "training.epochs_first=1"]
    tiny += ["training.eval_episodes=0", "training.max_episode_steps=5"]  # a short run, were one accepted
    sets = [a for item in tiny for a in ("--set", item)]
    for resume in ([], ["--resume"]):
        out = tmp_path / f"r{len(resume)}"
        code = cli.main(["train", "--config", str(path), "--out", str(out), "--no-progress", *sets, *resume])
        err = capsys.readouterr().err
        assert code == 2 and f"error: {path}: {message}" in err, err
        assert not out.exists()


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--seed", "-1"], "seed (--seed) must be an integer >= 0, got -1"),
        # seed 80 collected the selection episodes (9,000,000 up), seed 190 the evaluation's (20,000,000 up)
        (["--seed", "80"], "seed (--seed) must be 0..79, got 80: the episode seeds of seed 80 (9,000,000 up)"),
        (["--seed", "190"], "seed (--seed) must be 0..79, got 190"),
        (["--seed", "99999999999999999999"], "seed (--seed) must be 0..79"),
        (["--set", "training.demonstrations=1001"], "training.demonstrations: must be <= 1000, got 1001"),
        (["--set", "training.dagger_rounds=100"], "training.dagger_rounds: must be <= 99, got 100"),
        (["--set", "training.shift=fog=2"], "training.shift: unknown or invalid shift 'fog=2'"),
        (["--set", "training.shift=bogus"], "training.shift: unknown or invalid shift 'bogus'"),
    ],
)
def test_a_seed_or_schedule_whose_episode_seeds_overlap_is_refused_by_name(tmp_path, capsys, flags, message):
    """Before: --seed -1 and a huge seed failed in numpy/torch without naming --seed ("expected non-negative
    integer", "Overflow when unpacking long"); seeds 80-89 and 190-199 trained on the selection and the
    evaluation episodes (and 1000+ episodes a round on the next round's), silently; a bad training.shift was an
    error from the world that did not name the key."""
    out = tmp_path / "r"
    tiny = ["training.demonstrations=1", "training.dagger_rounds=0", "training.epochs_first=1"]
    tiny += ["training.eval_episodes=0", "training.max_episode_steps=5"]  # a short run, were one accepted
    code, err = _train(["--out", str(out), *[a for item in tiny for a in ("--set", item)], *flags], capsys)
    assert code == 2 and message in err, err
    assert not out.exists()


def test_a_run_on_bags_names_a_seed_torch_cannot_take():
    """A review: on bags (no episodes) any seed >= 0 passed, and 10**20 failed in torch: "Overflow when unpacking
    long long", naming neither --seed nor the bound."""
    config = {"training": {"demonstrations": 1, "dagger_episodes": 1, "dagger_rounds": 0}}
    trainer.check_episode_seeds(config, 10**6, simulated=False)  # any seed of torch's range: no episodes collide
    with pytest.raises(trainer.TrainingError, match=r"seed \(--seed\) must be below 2\*\*64 for a run on bags"):
        trainer.check_episode_seeds(config, 10**20, simulated=False)
    largest = 2**64 - 1
    trainer.check_episode_seeds(config, largest, simulated=False)
    torch.manual_seed(training_run.epoch_torch_seed(largest, 99))  # what every epoch of such a run calls
    assert training_run.epoch_torch_seed(3, 7) == 3 * 100_003 + 7  # the seeds every earlier run used


def test_augment_and_an_augmentation_list_in_set_are_refused_together(tmp_path, capsys):
    """Before: --augment silently replaced `--set training.augmentation=[mirror]` (the run trained without mirror)."""
    for given in ("training.augmentation=[mirror]", "training={augmentation: [mirror]}"):
        code, err = _train(["--out", str(tmp_path / "r"), "--set", given, "--augment"], capsys)
        assert code == 2 and "--augment and --set training.augmentation=...: give one" in err, err
        assert not (tmp_path / "r").exists()


def test_ctrl_c_is_a_message_that_says_how_to_continue(tmp_path, capsys, monkeypatch):
    """Before: Ctrl-C printed a KeyboardInterrupt traceback."""

    def interrupted(config, out, **kwargs):
        episodes = trainer.Path(out) / "data" / "round_00"
        episodes.mkdir(parents=True)
        (episodes / "ep_0000.npz").write_bytes(b"an episode")
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "train", interrupted)
    code, err = _train(["--out", str(tmp_path / "r")], capsys)
    assert code == 130
    # no checkpoint yet: no finished epoch to keep (an audit: it said 'the finished epochs' then too)
    assert err.strip() == f"liquid-control train: interrupted: {tmp_path / 'r'} keeps the episodes; add --resume " + (
        "to continue"
    )


@pytest.mark.parametrize("stop", ["ctrl-c", "full disk"])
def test_a_stopped_run_on_bags_says_it_keeps_its_converted_bags_not_episodes(tmp_path, capsys, monkeypatch, stop):
    """Before: a run on bags stopped (Ctrl-C, SIGTERM) or failed (a full disk) after converting its bags said it
    'keeps the finished epochs and episodes', though it has no episodes."""
    import errno

    out = tmp_path / "r"

    def stopped(config, out, **kwargs):
        converted = trainer.Path(out) / "data" / "bags" / "train" / "0000_bag"
        converted.mkdir(parents=True)
        (converted / "index.json").write_text("{}")
        (trainer.Path(out) / "data.yaml").write_text("data: {}")
        if stop == "ctrl-c":
            raise KeyboardInterrupt
        raise OSError(errno.ENOSPC, "No space left on device", str(trainer.Path(out) / "checkpoint.pt"))

    monkeypatch.setattr(trainer, "train", stopped)
    code, err = _train(["--out", str(out)], capsys)
    if stop == "ctrl-c":
        assert (code, err.strip()) == (
            130,
            f"liquid-control train: interrupted: {out} keeps the converted bags; add --resume to continue",
        )
    else:
        assert (code, err.strip()) == (
            1,
            f"liquid-control train: error: cannot write {out / 'checkpoint.pt'}: No space left on device; {out} "
            "keeps the converted bags; make room and add --resume to continue",
        )


def test_sigterm_is_a_message_that_says_how_to_continue_and_exit_143(tmp_path, capsys, monkeypatch):
    """Before: `kill <pid>` ended a training run with nothing logged (and left its workers running)."""
    import os
    import signal

    def terminated(config, out, **kwargs):
        episodes = trainer.Path(out) / "data" / "round_00"
        episodes.mkdir(parents=True)
        (episodes / "ep_0000.npz").write_bytes(b"an episode")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises in this frame
        raise AssertionError("SIGTERM did not stop the run")

    monkeypatch.setattr(trainer, "train", terminated)
    before = signal.getsignal(signal.SIGTERM)
    try:
        code, err = _train(["--out", str(tmp_path / "r")], capsys)
    finally:
        after = signal.signal(signal.SIGTERM, before)
    assert code == 143
    assert err.strip() == f"liquid-control train: terminated: {tmp_path / 'r'} keeps the episodes; add --resume " + (
        "to continue"
    )
    # put back after the run; the default, which would end the stopping process at a second SIGTERM, stays ignored
    assert after == (signal.SIG_IGN if before == signal.SIG_DFL else before)


def _tiny_train_in_own_session(tmp_path, script_template: str):
    """``train --workers 2`` of the tiny config run by ``script_template`` (which signals its own process group) in a
    session of its own, so the signals to its process group reach none of pytest's; (the finished process, --out)."""
    import subprocess
    import sys
    from pathlib import Path

    script, config, out = tmp_path / "signalled_run.py", tmp_path / "tiny.yaml", tmp_path / "run"
    script.write_text(script_template.format(tests=str(Path(__file__).parent)))
    config.write_text(yaml.safe_dump(tiny_config()))
    argv = ["train", "--config", str(config), "--out", str(out), "--no-progress", "--workers", "2"]
    done = subprocess.run(
        [sys.executable, str(script), *argv], capture_output=True, text=True, start_new_session=True, timeout=600
    )
    return done, out


WARNED_RUN = """\
import os, signal, sys
sys.path.insert(0, {tests!r})
import test_training  # its TinyReach world, also in the episode workers (spawned: they import this file)
from liquid_control import cli
from liquid_control.training import run

real_epoch = run.TrainingRun.train_epoch


def warned_epoch(self, episodes, epoch, round_index):
    if epoch == 1:  # round 0's episodes came from the workers, which wait for round 1's
        os.killpg(0, signal.SIGUSR1)  # as SLURM's --signal=USR1@N: every process of the job
    return real_epoch(self, episodes, epoch, round_index)


run.TrainingRun.train_epoch = warned_epoch
if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGUSR1"), reason="POSIX signals")
def test_a_batch_systems_early_warning_signal_is_said_and_ignored_by_the_run_and_its_workers(tmp_path):
    """Before: SIGUSR1, which a batch system sends ahead of its time limit (SLURM's --signal=USR1@SECONDS, to every
    process of the job), ended `liquid-control train` at once without a word (exit status 138), the running epoch
    lost and the rest of the allocation unused. It is said in one line and ignored, by the episode workers too (one
    of them ended by it failed the next round with 'a worker process died'; multiprocessing's resource tracker ended
    by it printed a warning and tracebacks): the run trains the policy it would have."""
    done, out = _tiny_train_in_own_session(tmp_path, WARNED_RUN)
    assert done.returncode == 0, done.stderr
    # multiprocessing's resource tracker (a process of the job too) ended by it: a warning and a traceback per semaphore
    assert "resource_tracker" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    said = [line for line in done.stderr.splitlines() if "SIGUSR1" in line]
    assert said == [
        "liquid-control train: SIGUSR1 ignored (a batch system's warning before its time limit?): it goes on; "
        "SIGTERM stops it, keeping what finished"
    ]
    reference = trainer.train(tiny_config(), tmp_path / "reference", progress=False, log=lambda m: None)
    warned, uninterrupted = (torch.load(p, weights_only=False) for p in (out / "policy.pt", reference.policy_path))
    for key, value in uninterrupted["state_dict"].items():
        assert torch.equal(warned["state_dict"][key], value), key


TERMINATED_RUN = """\
import os, signal, sys, threading, time
sys.path.insert(0, {tests!r})
import test_training  # its TinyReach world, also in the episode workers (spawned: they import this file)
from liquid_control import cli
from liquid_control.training import run

real_epoch = run.TrainingRun.train_epoch


def sigterms():  # scancel's SIGTERM, then srun's forwarded one, ...: to every process of the job, until it ends
    while True:
        os.killpg(0, signal.SIGTERM)
        time.sleep(0.001)


def terminated_epoch(self, episodes, epoch, round_index):
    if epoch == 1:  # round 0's episodes came from the workers, which wait for round 1's
        threading.Thread(target=sigterms, daemon=True).start()
        time.sleep(60)  # the handler raises in this frame
    return real_epoch(self, episodes, epoch, round_index)


run.TrainingRun.train_epoch = terminated_epoch
if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:]))
"""


def test_sigterms_after_the_first_leave_the_run_ending_as_a_sigterm_does(tmp_path):
    """Before: a second SIGTERM close behind the first (scancel's, then srun's forwarded one) ended `liquid-control
    train` by the default handler (exit -15), before or after its message, once the first had restored it; one that
    landed during the cleanup broke it off (a 'leaked semaphore' warning). Further SIGTERMs are ignored: the run
    ends with its message and 143."""
    done, out = _tiny_train_in_own_session(tmp_path, TERMINATED_RUN)
    assert (done.returncode, done.stderr.strip().splitlines()[-1]) == (
        143,
        f"liquid-control train: terminated: {out} keeps the finished epochs and episodes; add --resume to continue",
    )
    assert "Traceback" not in done.stderr and "leaked" not in done.stderr, done.stderr


@pytest.mark.parametrize("signame, code, stopped", [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")])
def test_a_signal_inside_a_ctypes_call_of_an_episode_is_the_interrupt(
    tmp_path, capsys, monkeypatch, signame, code, stopped
):
    """Before: Ctrl-C or SIGTERM arriving while ctypes converted the arguments of a call in Python code (PyOpenGL's
    converters in MuJoCo's EGL render, every camera frame; seen once in 50 Ctrl-Cs of a rover run) ended the run
    with a traceback of ``ctypes.ArgumentError: argument 1: KeyboardInterrupt:`` and exit status 1."""
    import ctypes
    import os
    import signal

    class Signalled:  # an argument converter in Python, as PyOpenGL's: the signal's handler raises inside it
        @classmethod
        def from_param(cls, value):
            os.kill(os.getpid(), getattr(signal, signame))
            time.sleep(5)  # the handler raises in this frame
            raise AssertionError(f"{signame} did not stop the run")

    render = ctypes.CDLL(None).labs
    render.argtypes = [Signalled]
    real = training_run.collect_episode

    def rendering(env, policy, config, seed, round_index, index):
        if round_index == 1:  # the demonstrations are on disk and trained on
            render(1)
        return real(env, policy, config, seed, round_index, index)

    monkeypatch.setattr(training_run, "collect_episode", rendering)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config()))
    out = tmp_path / "r"
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # a background job's SIGINT is ignored
    try:
        code_got = cli.main(["train", "--config", str(config), "--out", str(out), "--no-progress"])
    finally:
        signal.signal(signal.SIGINT, before)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "ArgumentError" not in err, err
    assert code_got == code
    assert err.strip().splitlines()[-1] == (
        f"liquid-control train: {stopped}: {out} keeps the finished epochs and episodes; add --resume to continue"
    )


def test_an_interrupt_in_ctypes_is_recognised_in_the_message_of_each_python():
    """Before: only Python 3.11's ``argument 1: KeyboardInterrupt: `` was recognised; Python 3.10 (which the package
    supports: ROS 2 Humble's) prints the class, ``argument 1: <class 'KeyboardInterrupt'>: ``, and Ctrl-C inside
    MuJoCo's render was a ctypes.ArgumentError traceback there still."""
    import ctypes

    from liquid_control.processes import Terminated, interrupt_in_ctypes

    for message, expected in (
        ("argument 1: KeyboardInterrupt: ", KeyboardInterrupt),
        ("argument 2: Terminated: ", Terminated),
        ("argument 1: <class 'KeyboardInterrupt'>: ", KeyboardInterrupt),
        ("argument 3: <class 'liquid_control.processes.Terminated'>: ", Terminated),
    ):
        assert type(interrupt_in_ctypes(ctypes.ArgumentError(message))) is expected, message
    for message in ("argument 1: <class 'TypeError'>: wrong type", "argument 1: TypeError: KeyboardInterrupt: "):
        assert interrupt_in_ctypes(ctypes.ArgumentError(message)) is None, message
    assert interrupt_in_ctypes(ValueError("argument 1: KeyboardInterrupt: ")) is None


def _file_size_limit(limit: int):
    """A child process's preexec_fn: writes past ``limit`` bytes fail with EFBIG, as a full disk's with ENOSPC."""
    import resource
    import signal

    def limit_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the signal kills the writer
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limit_files


def test_a_checkpoint_that_cannot_be_written_is_an_oserror_naming_it(tmp_path):
    """Before: torch's writer turned a full disk into "RuntimeError: [enforce fail at inline_container.cc:672] .
    unexpected pos 704 vs 598", naming no file."""
    import subprocess
    import sys

    script = (
        "import errno, sys, torch\n"
        "from liquid_control.policy.checkpoint import atomic_torch_save\n"
        "try:\n"
        "    atomic_torch_save({'weights': torch.zeros(100_000)}, sys.argv[1])\n"
        "except OSError as exc:\n"
        "    print(errno.errorcode[exc.errno], exc.filename)\n"
    )
    target = tmp_path / "checkpoint.pt"
    done = subprocess.run(
        [sys.executable, "-c", script, str(target)],
        capture_output=True, text=True, preexec_fn=_file_size_limit(100_000), timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"EFBIG {target}"
    assert list(tmp_path.iterdir()) == []  # no temporary file left


def test_a_full_disk_is_a_message_naming_the_file_and_resume_continues(tmp_path):
    """Before: a disk that filled up at the first checkpoint (or a read-only --out) ended `liquid-control train`
    with a traceback (exit 1) of torch's "unexpected pos" or "[Errno 30] Read-only file system:
    '.../.config.yaml.55jtnxcj.tmp'"."""
    import subprocess
    import sys

    out = tmp_path / "run"
    argv = [sys.executable, "-m", "liquid_control.cli", "train", "--config", ROVER, "--out", str(out), "--no-progress"]
    argv += [f"--set=training.{key}" for key in ("demonstrations=2", "dagger_rounds=0", "epochs_first=1")]
    argv += ["--set=training.eval_episodes=0"]
    full = subprocess.run(argv, capture_output=True, text=True, preexec_fn=_file_size_limit(300_000), timeout=300)
    assert "Traceback" not in full.stderr, full.stderr
    assert full.returncode == 1
    assert full.stderr.strip().splitlines()[-1] == (
        f"liquid-control train: error: cannot write {out / 'checkpoint.pt'}: File too large; {out} keeps the "
        "episodes; make room and add --resume to continue"  # its first checkpoint failed: no epoch kept
    )
    assert sorted(p.name for p in out.rglob("*")) == [
        "command.txt", "config.yaml", "data", "ep_0000.npz", "ep_0001.npz", "metrics.csv", "round_00"
    ]  # fmt: skip
    resumed = subprocess.run([*argv, "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "2 episodes (beta=1, 0 collected now)" in resumed.stderr
    assert (out / "policy.pt").is_file()


def test_a_policy_records_the_code_and_kernels_that_trained_it_also_across_a_resume(tmp_path, monkeypatch):
    """Before: a run folder recorded the torch version but not the code's commit (or installed version), so a
    policy in a paper could not be traced to the code that trained it; and a run resumed on the other kernel path
    (``LIQUID_CONTROL_NATIVE=0``, another CPU) recorded the last part's path alone, though the first part's weights
    came from the other's last bits."""
    from liquid_control import paths
    from liquid_control.policy import load_policy

    config = tiny_config(dagger_rounds=1)
    whole = trainer.train(config, tmp_path / "whole", progress=False, log=lambda message: None)
    assert load_policy(whole.policy_path).metadata["code"] == paths.code_commit() != "unknown"

    real_evaluate = training_run.TrainingRun.evaluate

    def killed_after_round_0(self, env, round_index):
        real_evaluate(self, env, round_index)
        raise KeyboardInterrupt

    monkeypatch.setattr(training_run, "code_commit", lambda: "aaaa")
    monkeypatch.setattr(training_run.TrainingRun, "kernel_path", lambda self: "compiled kernels (here)")
    monkeypatch.setattr(training_run.TrainingRun, "evaluate", killed_after_round_0)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(config, tmp_path / "r", progress=False, log=lambda message: None)
    monkeypatch.setattr(training_run.TrainingRun, "evaluate", real_evaluate)
    monkeypatch.setattr(training_run, "code_commit", lambda: "bbbb")  # the checkout moved on before the resume
    monkeypatch.setattr(training_run.TrainingRun, "kernel_path", lambda self: "torch (LIQUID_CONTROL_NATIVE=0)")
    resumed = trainer.train(config, tmp_path / "r", resume=True, progress=False, log=lambda message: None)
    assert load_policy(resumed.policy_path).metadata["code"] == ["aaaa", "bbbb"]
    assert load_policy(resumed.policy_path).metadata["kernels"] == [
        "compiled kernels (here)", "torch (LIQUID_CONTROL_NATIVE=0)"
    ]  # fmt: skip


def test_more_workers_or_threads_than_cpus_are_said(tmp_path, monkeypatch):
    """Before: `--workers 64 --threads 64` on a 2-CPU machine started without a word: up to 64 episode processes of
    ~300 MB each (one per episode of a round) and 64 copies of the policy, all waiting for the same 2 CPUs."""
    logged = []
    monkeypatch.setattr(trainer, "available_cpus", lambda: 2)
    monkeypatch.setattr(training_run.TrainingRun, "run", lambda self: None)  # only the start matters here
    for count, out in ((2, "fits"), (3, "over")):
        trainer.train(tiny_config(), tmp_path / out, workers=count, threads=count, progress=False, log=logged.append)
    assert logged == [
        "workers (--workers) 3: more than the 2 CPUs this process may use: the same episodes, no sooner than with "
        "--workers 2, and each worker process holds its own world and torch (~300 MB)",
        "threads (--threads) 3: more than the 2 CPUs this process may use: the copies of the policy wait for each "
        "other (--threads 2 is faster)",
    ]


def test_train_in_a_log_says_each_epoch_and_the_headline_experiments_runs_only_their_rounds(
    tmp_path, capsys, monkeypatch
):
    """Before: with stderr no terminal (a CI log, a cluster job's file: the bars off) train said a line per DAgger
    round and none per epoch, so a long run's log held nothing for many minutes. The headline experiment trains
    ~100 runs into one log: they say their rounds and their end, not their every epoch."""
    import re

    from liquid_control.evaluation import experiment

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(dagger_max_steps=5)))
    assert cli.main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err.splitlines()
    epochs = [re.fullmatch(r"epoch (\d)/7 \(round (\d)\): loss \d+\.\d{5}, \d+\.\d s", line) for line in err]
    assert [m.groups() for m in epochs if m] == [
        ("1", "0"),
        ("2", "0"),
        ("3", "0"),
        ("4", "1"),
        ("5", "1"),
        ("6", "2"),
        ("7", "2"),
    ], err
    logged = []
    monkeypatch.setattr(experiment, "config_path", lambda arch: str(config))
    experiment._run_training("tiny", "cfc", 0, str(tmp_path / "headline"), {}, False, logged.append, "")
    assert [line for line in logged if line.startswith("round ")] and not [
        line for line in logged if line.startswith("epoch")
    ], logged


def test_a_run_folder_holds_its_training_curves(tmp_path):
    """Before: a run's curves were only in TensorBoard's files, and TensorBoard is optional (not installed here):
    a reader had metrics.csv and had to draw it."""
    from PIL import Image

    result = trainer.train(tiny_config(), tmp_path / "r", progress=False, log=lambda message: None)
    with Image.open(result.out_dir / "curves.png") as image:
        assert image.format == "PNG" and image.size == (1000, 380)
    assert sorted(p.name for p in result.out_dir.iterdir() if p.name.startswith(".")) == []  # nothing half-written


def test_a_finished_run_folder_holds_what_the_training_docs_list(tmp_path, monkeypatch):
    """docs/training.md's "Output folder" table is what `liquid-control train` writes: it left out command.txt (the
    first command and its seed, which --resume checks), written first by every run of the command line, and the
    data.yaml of a run from bags and started_from.json of one with --init-from, which the prose mentions."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    table = doc[doc.index("## Output folder") :].split("\n\n")[1]
    listed = {name.rstrip("/") for name in re.findall(r"^\| `([^`]+)` \|", table, flags=re.M)}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny_config()))
    argv = ["train", "--config", str(tmp_path / "tiny.yaml"), "--out", str(tmp_path / "r"), "--no-progress"]
    monkeypatch.setattr("sys.argv", ["liquid-control", *argv])  # the command line records itself from sys.argv
    assert cli.main(argv) == 0
    written = {p.name for p in (tmp_path / "r").iterdir()}
    optional = {"tensorboard", "data.yaml", "started_from.json"}  # TensorBoard installed; from bags; --init-from
    assert written - optional <= listed and listed - optional <= written, (sorted(written), sorted(listed))


def test_the_training_curves_draw_the_loss_on_a_log_axis(tmp_path, monkeypatch):
    """Before: the loss axis was logarithmic only if the validation loss (a bag run's) was positive: the check
    looked at the validation series, which a simulated run has none of, so its loss was always drawn linear."""
    from matplotlib.figure import Figure

    from liquid_control.training.curves import plot_curves

    scales = []
    savefig = Figure.savefig

    def saving(self, *args, **kwargs):
        scales.append(self.axes[0].get_yscale())
        return savefig(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", saving)
    collect = {"kind": "collect", "round": 0, "epoch": 0, "loss": "", "success": 1.0}
    epochs = [{"kind": "train", "round": 0, "epoch": e, "loss": 0.5 / e, "success": ""} for e in (1, 2, 3)]
    validation = [{"kind": "validate", "round": 0, "epoch": 3, "loss": 0.2, "success": ""}]
    zero = [{"kind": "train", "round": 0, "epoch": 4, "loss": 0.0, "success": ""}]
    for name, rows in (("sim", [collect, *epochs]), ("bags", [*epochs, *validation]), ("zero", [*epochs, *zero])):
        plot_curves(rows, tmp_path / f"{name}.png", name)
    assert scales == ["log", "log", "linear"]


def _train_until_interrupted(monkeypatch, config, out, after_round, **kwargs):
    """Train ``config`` into ``out`` with a Ctrl-C right after round ``after_round`` is evaluated (checkpointed)."""
    real_evaluate = training_run.TrainingRun.evaluate

    def evaluate(self, env, round_index):
        real_evaluate(self, env, round_index)
        if round_index == after_round:
            raise KeyboardInterrupt

    monkeypatch.setattr(training_run.TrainingRun, "evaluate", evaluate)
    try:
        with pytest.raises(KeyboardInterrupt):
            trainer.train(config, out, **kwargs)
    finally:
        monkeypatch.setattr(training_run.TrainingRun, "evaluate", real_evaluate)


def _forget_threads(path) -> dict:
    """Rewrite the checkpoint ``path`` as one written before bca28a7f (no thread count); returns it."""
    old = torch.load(path, weights_only=False)
    assert old.pop("threads") == 2
    torch.save(old, path)
    return old


def test_a_resume_keeps_the_runs_threads(tmp_path, monkeypatch):
    """Before: `--resume` without `--threads` (README's resume line) continued a `--threads 2` run on one thread:
    another policy than the uninterrupted run's (data-parallel copies round differently), while policy.pt's
    command still said --threads 2. Now the checkpoint records the count: kept without --threads, another refused."""
    from liquid_control.policy import load_policy

    config = tiny_config(dagger_rounds=1)
    quiet = {"progress": False, "log": lambda message: None}
    whole = load_policy(trainer.train(config, tmp_path / "whole", threads=2, **quiet).policy_path)
    _train_until_interrupted(monkeypatch, config, tmp_path / "r", 0, threads=2, **quiet)
    checkpoint = (tmp_path / "r" / "checkpoint.pt").read_bytes()
    with pytest.raises(
        trainer.TrainingError, match=r"trained with threads \(--threads\) 2; resume it with --threads 2"
    ):
        trainer.train(config, tmp_path / "r", resume=True, threads=1, **quiet)
    assert (tmp_path / "r" / "checkpoint.pt").read_bytes() == checkpoint  # refused before anything was written
    resumed = load_policy(trainer.train(config, tmp_path / "r", resume=True, **quiet).policy_path)
    assert all(torch.equal(resumed.state_dict()[k], v) for k, v in whole.state_dict().items())


def test_a_resume_of_a_checkpoint_without_its_threads_says_it_continues_on_one(tmp_path, monkeypatch):
    """A run checkpointed before the thread count was recorded continued on one thread without a word, whatever
    --threads it was started with."""
    config = tiny_config(dagger_rounds=1)
    _train_until_interrupted(monkeypatch, config, tmp_path / "r", 0, threads=2, progress=False, log=lambda m: None)
    _forget_threads(tmp_path / "r" / "checkpoint.pt")
    said = []
    trainer.train(config, tmp_path / "r", resume=True, progress=False, log=said.append)
    assert any("does not say how many threads" in m and "resume with --threads N" in m for m in said), said


def test_the_advised_resume_with_threads_n_stays_possible_after_a_part_on_one(tmp_path, monkeypatch):
    """The log above advises: stop and resume with --threads N. Once the part on one thread had written a
    checkpoint, that checkpoint said 1 and the advised resume was refused ("resume it with --threads 1")."""
    config = tiny_config(dagger_rounds=2)
    quiet = {"progress": False, "log": lambda message: None}
    path = tmp_path / "r" / "checkpoint.pt"
    _train_until_interrupted(monkeypatch, config, tmp_path / "r", 0, threads=2, **quiet)
    old = _forget_threads(path)
    # resumed without --threads: round 1 on one thread, checkpointed
    _train_until_interrupted(monkeypatch, config, tmp_path / "r", 1, resume=True, **quiet)
    resumed = torch.load(path, weights_only=False)
    assert resumed["rounds_evaluated"] > old["rounds_evaluated"]  # a checkpoint of the part on one thread
    said = []
    result = trainer.train(config, tmp_path / "r", resume=True, threads=2, progress=False, log=said.append)
    assert result.policy_path.is_file() and not any("does not say" in m for m in said), said
    assert torch.load(path, weights_only=False)["threads"] == 2  # the count given from then on


def test_atomic_writes_take_the_umask_without_changing_it(tmp_path):
    """Checkpoints, reports and provenance get the mode a plain open() gives. Before, the umask was read by
    setting it to 0 and back: a file another thread created in between (provenance's heartbeat runs beside
    the main thread) got no umask at all, and a race could leave the process at 0 for good."""
    import os
    import stat

    from liquid_control import atomic_file

    old = os.umask(0o027)
    try:
        assert atomic_file._umask() == 0o027 and os.umask(0o027) == 0o027  # read, not changed
        with atomic_file.atomic_write(tmp_path / "report.md", "w") as fh:
            fh.write("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "report.md").stat().st_mode) == 0o640


def test_a_new_file_only_write_never_replaces_one_made_meanwhile_with_or_without_hard_links(tmp_path, monkeypatch):
    """atomic_write(replace=False) (view --snapshot's picture): a file that took the name while the content was being
    written stays, FileExistsError naming it, no temporary file left; also where the file system has no hard links
    (FAT, some network ones), which the exclusive publish uses."""
    import os

    from liquid_control import atomic_file

    for links in (True, False):
        folder = tmp_path / f"links_{links}"
        if not links:
            monkeypatch.setattr(os, "link", lambda *a: (_ for _ in ()).throw(PermissionError(1, "not permitted")))
        with atomic_file.atomic_write(folder / "p.png", replace=False) as fh:
            fh.write(b"first")
        with pytest.raises(FileExistsError, match=str(folder / "p.png")):
            with atomic_file.atomic_write(folder / "p.png", replace=False) as fh:
                fh.write(b"second")
        assert (folder / "p.png").read_bytes() == b"first" and [p.name for p in folder.iterdir()] == ["p.png"]


def test_a_diverged_epoch_is_refused_before_it_is_saved(tmp_path, monkeypatch):
    """Before: a learning rate far too high (training.lr 1e30: the schema asks only > 0) trained to NaN weights,
    wrote them as policy.pt and reported success; the policy loader refused the file only later."""
    from liquid_control.policy import PolicyConfigError

    with pytest.raises(PolicyConfigError, match=r"training.lr: must be <= 1.0, got 1e\+30"):  # Adam overflowed at 1e38
        trainer.train(tiny_config(lr=1e30), tmp_path / "lr", progress=False, log=lambda m: None)
    real, calls = training_run.bc_epoch, []

    def diverging_later(policy, *args, **kwargs):  # epoch 1 trains; epoch 2 ends with an inf weight, a NaN loss
        calls.append(1)
        stats = real(policy, *args, **kwargs)
        if len(calls) == 2:
            with torch.no_grad():
                next(policy.parameters()).view(-1)[0] = float("inf")
            stats["loss"] = float("nan")
        return stats

    monkeypatch.setattr(training_run, "bc_epoch", diverging_later)
    out = tmp_path / "later"
    kept_epoch_1 = rf"{out / 'checkpoint.pt'} keeps epoch 1\. Train into a new folder with a lower training.lr"
    with pytest.raises(
        trainer.TrainingError, match=rf"epoch 2: training diverged \(loss nan; non-finite .*{kept_epoch_1}"
    ):
        trainer.train(tiny_config(dagger_rounds=0), out, progress=False, log=lambda m: None)
    kept = trainer.read_training_checkpoint(out / "checkpoint.pt")
    assert kept["epoch_done"] == 1 and not (out / "policy.pt").exists()
    assert all(torch.isfinite(v).all() for v in kept["policy"].values() if v.is_floating_point())


@pytest.mark.parametrize("reading, refused", [(1e20, False), (3e38, True)])
def test_vector_statistics_of_huge_readings_are_float64_or_refused_naming_the_input(tmp_path, capsys, reading, refused):
    """Before: one IMU message of 1e20 in a bag overflowed float32's variance and training stopped with
    "vector encoder: normalisation statistics must be finite", naming no input."""
    import numpy as np
    from test_bags import CAMERA_IMU, _synthetic_bag

    cfg = {**CAMERA_IMU, "training": {**CAMERA_IMU["training"], "epochs_first": 1}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    frames = [(s, s + 0.02) for s in 1.0 + np.arange(40) * 0.066]
    imus = [
        (s - 0.005, t - 0.015, np.full(6, reading) if i == 20 else np.arange(6) * 0.1)
        for i, (s, t) in enumerate(frames)
    ]
    bag = _synthetic_bag(tmp_path / "bag", frames, imus, [(t + 0.003, (0.5, 0.1)) for _, t in frames])
    argv = ["train", "--config", str(tmp_path / "cfg.yaml"), "--bag", str(bag), "--out", str(tmp_path / "run")]
    code = cli.main([*argv, "--no-progress"])
    err = capsys.readouterr().err
    if refused:
        assert code == 2 and "vector input statistics unusable for imu[0] (largest |value| 3e+38), imu[1]" in err
        assert not (tmp_path / "run" / "policy.pt").exists()
    else:
        assert code == 0 and (tmp_path / "run" / "policy.pt").is_file()


def test_a_vector_input_constant_over_the_training_data_is_warned_of_by_name(tmp_path, capsys):
    """Before: an IMU axis that never changed in the recordings (a gyroscope left unplugged) got its spread floored
    at 1e-3 without a word, so at run time any change of it reached the network a thousand times amplified."""
    import numpy as np
    from test_bags import CAMERA_IMU, _synthetic_bag

    cfg = {**CAMERA_IMU, "training": {**CAMERA_IMU["training"], "epochs_first": 1}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    frames = [(s, s + 0.02) for s in 1.0 + np.arange(40) * 0.066]
    imus = [(s - 0.005, t - 0.015, np.r_[0.25, np.sin(np.arange(5) + i)]) for i, (s, t) in enumerate(frames)]
    bag = _synthetic_bag(tmp_path / "bag", frames, imus, [(t + 0.003, (0.5, 0.1)) for _, t in frames])
    argv = ["train", "--config", str(tmp_path / "cfg.yaml"), "--bag", str(bag), "--out", str(tmp_path / "run")]
    assert cli.main([*argv, "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "warning: vector input imu[0] barely varies over the training data (spread 0" in err
    assert "imu[1]" not in err and "leave it out of observation.vectors" in err


def test_an_empty_training_checkpoint_says_why_it_cannot_be_read(tmp_path):
    """Before: "...checkpoint.pt: cannot read the training checkpoint: " with nothing after the colon, then
    torch's bare "EOFError"."""
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(
        trainer.TrainingError, match=r"cannot read the training checkpoint: the file is empty \(0 bytes"
    ):
        trainer.read_training_checkpoint(tmp_path / "checkpoint.pt")


def test_a_second_training_into_a_folder_in_use_is_refused_and_touches_nothing(tmp_path):
    """helper-80: `train --out RUN --resume` while another process trained RUN trained it again beside the first
    (both wrote checkpoint.pt, metrics.csv and policy.pt). The folder is locked while a run trains in it."""
    import fcntl
    import os

    out = tmp_path / "run"
    out.mkdir()
    holder = os.open(out, os.O_RDONLY | os.O_DIRECTORY)  # what a running `liquid-control train` holds
    try:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(trainer.TrainingError, match="another process is writing in this folder and holds its lock"):
            trainer.train(tiny_config(), out, progress=False, log=lambda m: None)
        assert list(out.iterdir()) == []
    finally:
        os.close(holder)
    result = trainer.train(tiny_config(), out, progress=False, log=lambda m: None)  # free again: trains
    assert result.policy_path.is_file()


@pytest.mark.parametrize(
    "written",
    [{"config.yaml": "name: [unclosed"}, {"data.yaml": "data: [unclosed"}, {"checkpoint.pt": "half a checkpoint"}],
    ids=["config.yaml", "data.yaml", "checkpoint.pt"],
)
def test_a_resume_into_a_folder_in_use_is_refused_by_its_lock_before_its_files_are_read(tmp_path, capsys, written):
    """Before: `train --out RUN --resume` read RUN's config.yaml, data.yaml and checkpoint.pt before it checked the
    folder's lock, so while another train was writing them it failed on what it found there half written ('not
    valid YAML', a yaml ParserError traceback for data.yaml, 'cannot read the training checkpoint') instead of naming
    the process at work. The lock is checked first."""
    import fcntl
    import os

    out = tmp_path / "run"
    out.mkdir()
    for name, text in written.items():
        (out / name).write_text(text)
    holder = os.open(out, os.O_RDONLY | os.O_DIRECTORY)  # what a running `liquid-control train` holds
    try:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert cli.main(["train", "--out", str(out), "--resume", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err == (
            f"liquid-control train: error: {out}: another process is writing in this folder and holds its lock; wait "
            "for it to end, or train into another --out\n"
        )
        assert sorted(p.name for p in out.iterdir()) == sorted(written)
    finally:
        os.close(holder)


def test_an_unreadable_data_yaml_of_a_bag_run_is_named_not_a_traceback(tmp_path, capsys):
    """Before: `train --out RUN --resume` of a bag run whose data.yaml was cut short or edited into something else
    ended in a yaml ParserError (or KeyError 'data') traceback."""
    out = tmp_path / "run"
    out.mkdir()
    for text, said in (("data: [unclosed", "not a readable data.yaml (ParserError: "), ("- a list", "not a run's")):
        (out / "data.yaml").write_text(text)
        assert cli.main(["train", "--out", str(out), "--resume", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"liquid-control train: error: {out / 'data.yaml'}: {said}") and "Traceback" not in err
        assert err.rstrip().endswith("restore it, or train into a new folder")
        assert sorted(p.name for p in out.iterdir()) == ["data.yaml"]


def test_the_training_curves_legends_cover_no_point_and_the_rates_say_their_episode_count(tmp_path, monkeypatch):
    """Before: the loss legend sat in the upper right corner and the success legend wherever matplotlib found
    'best': a run whose collection drivers succeeded in every round-0 episode had its 100% point under the legend
    (a tiny run's curves.png), and a loss rising again in the last epochs went under the other one. Nor did the
    success rates say of how many episodes they were. The title said only 'tiny_reach, seed 0'."""
    import numpy as np

    from liquid_control.figures import pyplot
    from liquid_control.training.curves import plot_curves

    plt = pyplot()
    kept = []
    monkeypatch.setattr(plt, "close", kept.append)
    rows = [{"kind": "collect", "round": 0, "epoch": 0, "loss": "", "success": 1.0, "episodes": 6}]
    losses = [0.41, 0.33, 0.31, 0.36, 0.29, 0.40, 0.38]
    rows += [{"kind": "train", "round": 0, "epoch": e, "loss": v, "success": ""} for e, v in enumerate(losses, 1)]
    rows += [
        {"kind": "eval", "round": r, "epoch": 3 + 2 * r, "loss": "", "success": 0.0, "episodes": 2} for r in (0, 1, 2)
    ]
    rows += [
        {"kind": "collect", "round": r, "epoch": 1 + 2 * r, "loss": "", "success": s, "episodes": 3}
        for r, s in ((1, 0.67), (2, 0.0))
    ]
    plot_curves(rows, tmp_path / "curves.png", "tiny_reach, seed 0")
    monkeypatch.undo()
    (fig,) = kept
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        assert fig._suptitle.get_text() == "training curves: tiny_reach, seed 0"
        for ax in fig.axes:
            legend = ax.get_legend().get_window_extent(renderer)
            for line in ax.get_lines():
                if line.get_label().startswith("_"):  # a round's dotted mark, from bottom to top
                    continue
                points = ax.transData.transform(np.column_stack(line.get_data()).astype(float))
                inside = [p for p in points if legend.x0 <= p[0] <= legend.x1 and legend.y0 <= p[1] <= legend.y1]
                assert not inside, (line.get_label(), inside)
        labels = [text.get_text() for text in fig.axes[1].get_legend().get_texts()]
        assert labels == [
            "collection drivers (expert, then DAgger's mix), 3/6 episodes",
            "policy alone (selection episodes), 2 episodes",
        ], labels
    finally:
        plt.close(fig)
