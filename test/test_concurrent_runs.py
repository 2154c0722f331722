"""Two commands at once on the same files (two terminals, a script run twice, a job array): the second is refused at
once, naming the folder and the process that writes there, and changes nothing; or both succeed with whole files.
The other process is a small script holding the folder's lock (what a running train, eval or record --expert
holds), so no test depends on how two real runs interleave."""

import contextlib
import errno
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_bags import CAMERA_ONLY
from test_training import tiny_config

from liquid_control import cli, folder_lock, paths
from liquid_control.bags import BagError
from liquid_control.bags.expert import record_expert_episodes
from liquid_control.evaluation import experiment
from liquid_control.evaluation.evaluate import evaluate
from liquid_control.evaluation.offline import evaluate_offline
from liquid_control.evaluation.plan import EvaluationSetupError, build_plan
from liquid_control.evaluation.results import LOG_NAME
from liquid_control.policy import Policy, save_policy
from liquid_control.training import trainer

HOLDER = """import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def another_process_holds(folder: Path):
    """A process holding ``folder``'s lock (made if missing) until the block ends; yields what a refusal names."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder.parent / "holder.py"
    script.write_text(HOLDER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline() == "held\n"
        yield f"another process (pid {proc.pid}: holder.py {folder}) is writing in this folder and holds its lock"
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def test_a_training_refused_beside_another_names_that_process_before_reading_its_files(tmp_path):
    """Before: 'another process is training in this folder' (which process: the user had to find it), and a
    second `train` without --resume into a run being trained was refused by what the first had written so far
    ('not empty and not a training run' / 'holds a run'), as if no process were at work there."""
    out = tmp_path / "run"
    with another_process_holds(out) as holder:
        (out / "config.yaml").write_text("half of a run's files")  # what the other has written so far
        with pytest.raises(trainer.TrainingError) as refused:
            trainer.train(tiny_config(), out, progress=False, log=lambda m: None)
        assert str(refused.value) == f"{out}: {holder}; wait for it to end, or train into another --out"
        assert sorted(p.name for p in out.iterdir()) == ["config.yaml"]


def test_a_folder_that_cannot_be_locked_trains_unguarded_instead_of_being_refused(tmp_path, monkeypatch, capfd):
    """Some network file systems refuse flock on a folder (ENOLCK, EBADF): every `train` there was refused as
    'another process is training in this folder', with no other process anywhere."""
    import fcntl

    def refuse(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", refuse)
    monkeypatch.setattr(folder_lock, "_UNLOCKABLE", set())  # said once per process: not for the tests after this one
    result = trainer.train(tiny_config(epochs_first=1, dagger_rounds=0), tmp_path / "run", progress=False, log=print)
    assert result.policy_path.is_file()
    assert f"cannot lock {tmp_path / 'run'} (No locks available)" in capfd.readouterr().err
    with folder_lock.hold(tmp_path, "x"):  # said once per file system (record --expert locks a bag an episode)
        assert capfd.readouterr().err == ""


def expert_plan(episodes=1):
    return build_plan(["expert"], ["in_distribution"], episodes)


def quiet(**kwargs):
    return {"backend": "serial", "progress": False, "example": False, "saliency": False, **kwargs}


def test_an_evaluation_into_a_folder_another_evaluates_in_is_refused_and_writes_nothing(tmp_path):
    """Before: two `eval --out SAME` at once each found no results log, ran every episode into the same
    episodes.jsonl (each episode twice) and wrote report.md, results.csv and plan.json over each other."""
    out = tmp_path / "ood"
    with another_process_holds(out) as holder:
        with pytest.raises(EvaluationSetupError) as refused:
            evaluate(expert_plan(), str(out), **quiet())
        assert str(refused.value) == f"{out}: {holder}; wait for it to end, or evaluate into another --out"
        assert list(out.iterdir()) == []


def test_a_resume_of_an_evaluation_still_running_is_refused_and_leaves_its_log(tmp_path):
    """Before: `eval --resume` beside the running evaluation ran the episodes the log lacked so far (those the
    first was running too) into the same log, and both wrote the report."""
    out = tmp_path / "ood"
    evaluate(expert_plan(1), str(out), **quiet())
    log = (out / LOG_NAME).read_bytes()
    with another_process_holds(out) as holder:
        with pytest.raises(EvaluationSetupError, match="evaluate into another --out") as refused:
            evaluate(expert_plan(2), str(out), **quiet(resume=True))
        assert holder in str(refused.value)
    assert (out / LOG_NAME).read_bytes() == log


def test_the_eval_command_refused_beside_another_keeps_the_folder_that_process_made(tmp_path, capsys):
    """A refused or failed command removes the --out folder it made while empty: started together, both saw no
    folder, and the refused one removed the folder the other had just made (and locked) to write in."""
    out = tmp_path / "new" / "ood"
    with another_process_holds(out) as holder:
        paths.remove_made_folder(out, tmp_path / "new")  # what the refused one does, having seen no folder
        assert out.is_dir()
        assert cli.main(["eval", "--policy", "expert", "--episodes", "1", "--out", str(out), "--no-progress"]) == 2
        assert holder in capsys.readouterr().err
        assert out.is_dir() and list(out.iterdir()) == []


def test_an_experiment_into_a_folder_in_use_is_refused_before_it_trains(tmp_path, monkeypatch, capsys):
    """Before: a second `eval --experiment --out SAME --resume` trained beside the first (each run refused where
    the other trained it: the experiment failed) and evaluated into the same log."""

    def train_all(*args, **kwargs):
        raise AssertionError("trained beside the running experiment")

    monkeypatch.setattr(experiment, "train_all", train_all)
    out = tmp_path / "headline"
    argv = ["eval", "--experiment", "headline", "--archs", "cfc", "--seeds", "1", "--episodes", "1", "--resume"]
    with another_process_holds(out) as holder:
        assert cli.main(argv + ["--out", str(out), "--no-progress"]) == 2
        assert f"{out}: {holder}; wait for it to end, or evaluate into another --out" in capsys.readouterr().err
        assert list(out.iterdir()) == []


@pytest.fixture(scope="module")
def bag_and_policy(tmp_path_factory):
    root = tmp_path_factory.mktemp("bag")
    (outcome,) = record_expert_episodes(root / "bags", [100], render_size=16, time_limit=1.0)
    torch.manual_seed(0)
    policy = save_policy(root / "tiny.pt", Policy.from_config(CAMERA_ONLY), {})
    return outcome["bag"], str(policy)


def test_an_offline_evaluation_into_a_folder_in_use_is_refused(tmp_path, bag_and_policy):
    """Before: two `eval --bag --out SAME` at once each found no report there and each wrote its plots,
    offline.json and report.md over the other's: the report of one beside the results of the other."""
    bag, policy = bag_and_policy
    out = tmp_path / "offline"
    with another_process_holds(out) as holder:
        with pytest.raises(EvaluationSetupError) as refused:
            evaluate_offline({"tiny": policy}, [bag], out, progress=False)
        assert str(refused.value) == f"{out}: {holder}; wait for it to end, or evaluate into another --out"
        assert out.is_dir() and list(out.iterdir()) == []


def test_expert_episodes_recorded_into_a_folder_in_use_are_refused_and_its_bags_stay(tmp_path):
    """Before: two `record --expert -o SAME` at once recorded the same episodes; the second, finding the first's
    episode_100 when it created its own, removed it while the first wrote it: both failed and no bag was left."""
    out = tmp_path / "bags"
    with another_process_holds(out) as holder:
        (out / "episode_100").mkdir()  # the bag the other is recording
        with pytest.raises(BagError) as refused:
            record_expert_episodes(out, [100, 101], render_size=16, time_limit=1.0)
        assert str(refused.value) == f"{out}: {holder}; wait for it to end, or record into another -o"
        assert sorted(p.name for p in out.iterdir()) == ["episode_100"]


def test_a_policy_replaced_while_a_run_starts_from_it_is_refused_not_misrecorded(tmp_path, monkeypatch):
    """`train --init-from X` while another run rewrites X: the weights were loaded from one file and the SHA-256
    in started_from.json and policy.pt's record taken from the next, so the record named a policy the run did not
    start from (and a resume checked against it)."""
    import liquid_control.policy as policy_package

    cfg = tiny_config(epochs_first=1, dagger_rounds=0)
    source = save_policy(tmp_path / "first.pt", Policy.from_config(cfg), {})
    load = policy_package.load_policy

    def load_while_another_run_saves(path):
        loaded = load(path)
        torch.manual_seed(1)
        save_policy(source, Policy.from_config(cfg), {})  # the other run's next selection, atomically
        return loaded

    monkeypatch.setattr(policy_package, "load_policy", load_while_another_run_saves)
    out = tmp_path / "run"
    with pytest.raises(trainer.TrainingError) as refused:
        trainer.train(cfg, out, progress=False, log=lambda m: None, init_from=source)
    assert str(refused.value) == (
        f"--init-from {source}: the checkpoint changed while it was read (is a training run still writing it?); "
        "start again once it is written"
    )
    assert not out.exists()


def test_the_lock_is_the_processs_own_to_take_again_and_free_once_released(tmp_path):
    """An experiment's evaluation holds the folder the experiment holds (one process: no refusal); released,
    another may take it."""
    folder = tmp_path / "run"
    folder.mkdir()
    with folder_lock.hold(folder, "x"), folder_lock.hold(folder, "x"):
        assert not folder_lock.in_use_elsewhere(folder)
        probe = subprocess.run(
            [
                sys.executable,
                "-c",
                f"from liquid_control import folder_lock; print(folder_lock.in_use_elsewhere({str(folder)!r}))",
            ],
            capture_output=True,
            text=True,
        )
        assert probe.stdout == "True\n", probe.stderr
    with another_process_holds(folder):
        assert folder_lock.in_use_elsewhere(folder)
    assert not folder_lock.in_use_elsewhere(folder)


def test_a_bag_still_being_recorded_is_named_as_such_to_its_readers_not_called_truncated(tmp_path):
    """`record --info`, `record --recover`, `train --bag` and `eval --bag` on a bag whose recorder still runs (a
    recording of the day beside the others in bags/day1/*) called it truncated ('the recorder was killed or the
    disk filled up', --info: TRUNCATED) and --recover copied the part written so far into a 'recovered' bag; a
    second recorder on its folder was refused without a word of the first."""
    import os

    from liquid_control.bags import BagReader, BagWriter, recover
    from liquid_control.bags import messages as M

    bag = tmp_path / "run_005"
    writer = BagWriter(bag)  # this process records it
    try:
        writer.write("/imu/data", 1_000_000_000, M.imu_message([0.0] * 6, 1.0))
        info = subprocess.run(
            [sys.executable, "-m", "liquid_control.cli", "record", "--info", str(bag)], capture_output=True, text=True
        )
        assert info.returncode == 2, info.stdout
        assert f"{bag}: another process (pid {os.getpid()}: " in info.stderr
        assert "is still recording this bag; wait for it to end" in info.stderr
        second = subprocess.run(  # a second recorder into it
            [sys.executable, "-c", f"from liquid_control.bags import BagWriter; BagWriter({str(bag)!r})"],
            capture_output=True,
            text=True,
        )
        assert f"{bag}: already exists, another process (pid {os.getpid()}: " in second.stderr
        assert "is recording it; a bag is never overwritten" in second.stderr
    finally:
        writer.close()
    with another_process_holds(bag) as holder:  # held again, and the bag as a killed recorder leaves it
        os.unlink(bag / "metadata.yaml")
        for read in (lambda: BagReader(bag, allow_truncated=True), lambda: recover(bag, tmp_path / "copy")):
            with pytest.raises(BagError) as refused:
                read()
            assert str(refused.value).startswith(f"{bag}: {holder.split(' is writing')[0]} is still recording")
        assert not (tmp_path / "copy").exists()
    with BagReader(bag, allow_truncated=True) as reader:  # released: a bag a killed recorder left, read as before
        assert reader.message_count == 1


def test_one_file_of_a_bag_still_being_recorded_given_alone_is_named_as_such_not_called_truncated(
    tmp_path, monkeypatch
):
    """`eval --bag DIR/DIR_1.mcap`, `train --bag` with a file, `record --info`/`--recover` of one .mcap file of a bag
    whose recorder still runs called the file truncated (its footer not yet written) and --allow-truncated read its
    messages so far as a finished recording: the file's folder is the recording's, and its lock is checked as the
    folder's is. A finished file of that recording (split) reads as it is; a killed recorder's file once the lock is
    gone is the truncated file it was."""
    import os

    from liquid_control.bags import BagReader, BagWriter, io, recover
    from liquid_control.bags import messages as M

    monkeypatch.setattr(io, "MIN_BAG_SIZE", 1000)  # files of a few kB
    bag = tmp_path / "run_005"
    writer = BagWriter(bag, max_bag_size=2000)  # this process records it
    try:
        t = 1_000_000_000
        while len(writer.files) < 2:
            writer.write("/imu/data", t, M.imu_message([0.0] * 6, t * 1e-9))
            t += 10_000_000
        finished, open_file = writer.files
        info = subprocess.run(
            [sys.executable, "-m", "liquid_control.cli", "record", "--info", str(open_file)],
            capture_output=True,
            text=True,
        )
        assert info.returncode == 2, info.stdout
        assert f"{open_file}: another process (pid {os.getpid()}: " in info.stderr
        assert f"is still recording this file (its bag {bag}); wait for it to end" in info.stderr
        assert "truncated" not in info.stderr.lower()
    finally:
        writer.abort()  # what a killed recorder leaves: the open file without footer
    with another_process_holds(bag) as holder:
        for read in (
            lambda: BagReader(open_file),
            lambda: BagReader(open_file, allow_truncated=True),
            lambda: recover(open_file, tmp_path / "copy"),
        ):
            with pytest.raises(BagError) as refused:
                read()
            who = holder.split(" is writing")[0]
            assert str(refused.value).startswith(f"{open_file}: {who} is still recording this file (its bag {bag})")
        assert not (tmp_path / "copy").exists()
        with BagReader(finished) as reader:  # a finished file of the recording: whole, read alone
            assert reader.message_count > 0 and not reader.salvaged
    with BagReader(open_file, allow_truncated=True) as reader:  # released: a killed recorder's file, salvaged
        assert reader.salvaged


PROBE = """import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
fcntl.flock(fd, fcntl.LOCK_SH)
print("probing", flush=True)
sys.stdin.readline()
os.close(fd)
print("done", flush=True)
sys.stdin.read()
"""


def test_a_readers_probe_paused_on_a_busy_machine_does_not_refuse_the_writer_its_folder(tmp_path, monkeypatch):
    """A reader's probe (in_use_elsewhere: a shared lock, held for an instant) taken as a recorder locks its new
    bag: before, hold asked three times in 40 ms, so a probing process the scheduler paused between its lock and
    its close (a loaded machine) refused the recorder its own new bag ('another process is writing in this
    folder', no process named: none held it to write). The probe here lets go only after the writer's third try."""
    import fcntl

    folder = tmp_path / "run_005"
    folder.mkdir()
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    probe = subprocess.Popen(
        [sys.executable, str(script), str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    real, tries = fcntl.flock, []

    def flock(fd, operation):
        if operation & fcntl.LOCK_EX:
            tries.append(operation)
            if len(tries) == 4:  # the probe ends now, before the writer's fourth try
                probe.stdin.write("\n")
                probe.stdin.flush()
                assert probe.stdout.readline() == "done\n"
        return real(fd, operation)

    try:
        assert probe.stdout.readline() == "probing\n"
        monkeypatch.setattr(fcntl, "flock", flock)
        with folder_lock.hold(folder, "choose a new name", BagError):
            monkeypatch.setattr(fcntl, "flock", real)
            assert (
                subprocess.run(  # held to write: another process's probe now sees it in use
                    [
                        sys.executable,
                        "-c",
                        f"from liquid_control import folder_lock as f; print(f.in_use_elsewhere({str(folder)!r}))",
                    ],
                    capture_output=True,
                    text=True,
                ).stdout
                == "True\n"
            )
    finally:
        probe.stdin.close()
        probe.wait(timeout=30)
    assert len(tries) == 4


def test_the_card_of_a_run_still_training_is_refused_naming_the_process(tmp_path):
    """Before: write_card loaded policy.pt, then its measuring processes read the path again: a run still training
    (it rewrites policy.pt after each selection) got a card measuring another policy than the one it shipped."""
    from liquid_control.training import model_card

    run = tmp_path / "run"
    with another_process_holds(run) as holder:
        with pytest.raises(model_card.CardError) as refused:
            model_card.write_card("robot", run, 1, 1, tmp_path / "cards", "test machine")
        assert str(refused.value) == f"{run}: {holder}; wait for it to end, or make the card once it has ended"
    assert not (tmp_path / "cards").exists()
