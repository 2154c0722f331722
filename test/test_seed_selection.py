"""scripts/seed_selection.py: keeping the best seed on validation episodes, scored on the test episodes."""

import csv
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def selection():
    spec = importlib.util.spec_from_file_location("seed_selection", ROOT / "scripts" / "seed_selection.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(path: Path, rows: list[tuple]) -> None:
    """rows: (policy, training seed, shift, episode seed, success)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["policy", "training_seed", "shift", "episode_seed", "success"])
        for row in rows:
            writer.writerow([*row[:4], str(bool(row[4]))])


def test_the_seed_best_on_validation_is_scored_on_the_test_episodes(selection):
    validation = {("a", 0): 0.2, ("a", 1): 0.8, ("a", 2): 0.8, ("b", 0): 0.9, ("b", 1): 0.1}
    test = {
        ("a", 0, "visual"): 0.0,
        ("a", 1, "visual"): 0.6,
        ("a", 2, "visual"): 0.3,
        ("b", 0, "visual"): 0.3,
        ("b", 1, "visual"): 0.5,
    }
    rows = selection._choose(validation, test, ["a", "b"], ["visual"])
    assert rows["a"]["kept"] == [1, 2]  # a tie: both kept, sharing the choice
    assert rows["a"]["visual"]["kept"] == pytest.approx(0.45)
    assert rows["a"]["visual"]["mean_of_seeds"] == pytest.approx(0.3)
    assert rows["a"]["visual"]["best_seed_on_test"] == pytest.approx(0.6)
    assert rows["b"]["kept"] == [0] and rows["b"]["visual"]["kept"] == pytest.approx(0.3)
    summary = selection._summary(rows, ["visual"])["visual"]
    assert summary["mean_gain_points"] == pytest.approx(100 * ((0.45 - 0.3) + (0.3 - 0.4)) / 2)  # +2.5
    assert (summary["policies_gaining"], summary["policies_losing"], summary["kept_is_best_on_test"]) == (1, 1, 0)
    without = selection._choose(validation, test, ["a", "b"], ["visual"], without=1)
    assert without["a"]["kept"] == [2] and without["b"]["kept"] == [0]


def test_a_run_on_recorded_episodes_writes_the_tables(selection, tmp_path):
    """The whole script on a validation folder and report written here (no episode runs)."""
    report, out = tmp_path / "results.csv", tmp_path / "out"
    test_rows, val_rows = [], []
    for seed, (val_wins, test_wins) in enumerate([(1, 0), (3, 2)]):  # seed 1: better on both
        for i in range(4):
            val_rows.append(("p", seed, "in_distribution", 30_000_000 + i, i < val_wins))
            for shift in ("in_distribution", "dusk", "sensor_rate=4"):
                test_rows.append(("p", seed, shift, 20_000_000 + i, i < test_wins))
    _write(report, test_rows)
    _write(out / "validation" / "results.csv", val_rows)
    (out / "validation" / "provenance.json").write_text("{}")
    args = ["--report", str(report), "--episodes", "4", "--out", str(out), "--check-without-seed", "1"]
    assert selection.main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["policies"]["p"]["kept"] == [1]
    assert results["summary"]["visual"]["mean_gain_points"] == pytest.approx(25.0)  # 50% kept against 25% mean
    assert results["summary"]["all"]["kept_is_best_on_test"] == 1
    assert results["summary_without_seed_1"]["all"]["mean_gain_points"] == 0.0  # one seed left: no choice
    assert "| p | 0: 25, 1: 75 | 1 |" in (out / "results.md").read_text()


def test_one_seed_per_policy_has_no_choice_without_it(selection, tmp_path):
    report, out = tmp_path / "results.csv", tmp_path / "out"
    _write(report, [("p", 0, "dusk", 20_000_000 + i, i < 2) for i in range(4)])
    _write(out / "validation" / "results.csv", [("p", 0, "in_distribution", 30_000_000 + i, True) for i in range(4)])
    (out / "validation" / "provenance.json").write_text("{}")
    assert selection.main(["--report", str(report), "--episodes", "4", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["summary_without_seed_0"] == {} and results["policies"]["p"]["kept"] == [0]


@pytest.mark.parametrize(
    "validation_rows, message",
    [
        ([("p", 0, "dusk", 30_000_000 + i, True) for i in range(4)], "holds other episodes"),  # not in-distribution
        ([("q", 0, "in_distribution", 30_000_000 + i, True) for i in range(4)], "has no test episodes of q seed 0"),
    ],
)
def test_validation_of_another_shift_or_policy_is_refused(selection, tmp_path, validation_rows, message):
    report, out = tmp_path / "results.csv", tmp_path / "out"
    _write(report, [("p", 0, "dusk", 20_000_000 + i, True) for i in range(4)])
    _write(out / "validation" / "results.csv", validation_rows)
    (out / "validation" / "provenance.json").write_text("{}")
    with pytest.raises(SystemExit, match=message):
        selection.main(["--report", str(report), "--episodes", "4", "--out", str(out)])


@pytest.mark.parametrize(
    "args, message, status",
    [
        (["--episode-seed-base", "20000000"], "must avoid the report's episode seeds", 2),
        (["--episode-seed-base", "1000000"], "training episodes lie below", 2),
        (["--episodes", "9"], "holds other episodes", 1),
    ],
)
def test_validation_episodes_that_could_be_test_or_training_episodes_are_refused(
    selection, tmp_path, args, message, status, capsys
):
    report, out = tmp_path / "results.csv", tmp_path / "out"
    _write(report, [("p", 0, "dusk", 20_000_000 + i, True) for i in range(4)])
    _write(out / "validation" / "results.csv", [("p", 0, "in_distribution", 30_000_000 + i, True) for i in range(4)])
    with pytest.raises(SystemExit) as stop:
        selection.main(["--report", str(report), "--episodes", "4", "--out", str(out), *args])
    said = capsys.readouterr().err if status == 2 else str(stop.value.code)
    assert (stop.value.code if status == 2 else 1) == status and message in said, said


@pytest.mark.parametrize(
    "args, message",
    [
        (["--workers", "0"], "--workers must be >= 1, got 0"),
        (["--check-without-seed", "9"], "--check-without-seed 9: no policy of {report} has that training seed "),
        (["--report", "{tmp}/none.csv"], "{tmp}/none.csv: not a liquid-control eval results.csv"),
        (["--train", "{tmp}"], "--train {tmp}: no trained policies there (<policy>/seed_<k>/policy.pt)"),
    ],
)
def test_bad_options_are_usage_errors_before_the_episodes(selection, tmp_path, args, message, capsys):
    """Before: --workers 0 failed in the evaluation ('the validation episodes did not finish (rerun to continue
    ...)'), a --check-without-seed no policy has printed the full table again as the check, and a bad --report or
    --train ended in exit 1; now each is one usage line, exit 2, and nothing runs."""
    report = tmp_path / "results.csv"
    _write(report, [("p", s, "dusk", 20_000_000 + i, True) for s in (0, 1) for i in range(4)])
    args = [a.format(tmp=tmp_path) for a in args]
    with pytest.raises(SystemExit) as stop:
        selection.main(["--report", str(report), "--episodes", "4", "--out", str(tmp_path / "out"), *args])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert message.format(tmp=tmp_path, report=report) in err, err
    if "check-without-seed" in message:
        assert "(its seeds: 0, 1)" in err
    assert not (tmp_path / "out").exists()


def test_validation_kept_in_out_is_continued_by_eval_resume_for_the_policies_under_train(
    selection, tmp_path, monkeypatch
):
    """A probe of the caches: with a validation/results.csv in --out the script took it whatever checkpoints had made
    it, so a --train of other policies under the same names chose and scored seeds on the old ones' validation.
    Now ``eval --resume`` runs where a row's checkpoint_sha is not the policy's under --train."""
    from liquid_control import cli
    from liquid_control.runtime.backends import checkpoint_sha256

    report, out = tmp_path / "results.csv", tmp_path / "out"
    _write(report, [("p", s, "dusk", 20_000_000 + i, i < 2) for s in (0, 1) for i in range(4)])
    train = tmp_path / "train"
    for seed in (0, 1):
        (train / "p" / f"seed_{seed}").mkdir(parents=True)
        (train / "p" / f"seed_{seed}" / "policy.pt").write_bytes(b"policy %d" % seed)
    shas = {s: checkpoint_sha256(train / "p" / f"seed_{s}" / "policy.pt")[:12] for s in (0, 1)}
    rows = [("p", s, "in_distribution", 30_000_000 + i, s) for s in (0, 1) for i in range(4)]
    (out / "validation").mkdir(parents=True)
    with open(out / "validation" / "results.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["policy", "training_seed", "shift", "episode_seed", "success", "checkpoint_sha"])
        writer.writerows([(*row[:4], str(bool(row[4])), shas[row[1]]) for row in rows])
    (out / "validation" / "provenance.json").write_text("{}")
    commands = []
    monkeypatch.setattr(cli, "main", lambda command: commands.append(command) or 0)
    args = ["--report", str(report), "--train", str(train), "--episodes", "4", "--out", str(out)]
    assert selection.main(args) == 0 and commands == []  # the same checkpoints: reused
    (train / "p" / "seed_1" / "policy.pt").write_bytes(b"another policy now")
    assert selection.main(args) == 0
    assert len(commands) == 1 and "--resume" in commands[0] and f"p={train / 'p'}/seed_*/policy.pt" in commands[0]


def _recorded(tmp_path: Path) -> tuple[Path, Path]:
    """A report and a complete validation folder (no episode runs): (report, out)."""
    report, out = tmp_path / "results.csv", tmp_path / "out"
    _write(report, [("p", s, "dusk", 20_000_000 + i, i < 2) for s in (0, 1) for i in range(4)])
    _write(
        out / "validation" / "results.csv",
        [("p", s, "in_distribution", 30_000_000 + i, s) for s in (0, 1) for i in range(4)],
    )
    (out / "validation" / "provenance.json").write_text("{}")
    return report, out


def test_a_failed_write_leaves_the_last_results_whole(tmp_path):
    """Before: results.json was written in place (Path.write_text), so a write that failed half-way (here the
    process's file size limit: a full disk or a kill mid-write leave the same) left half a JSON file in place of the
    last run's, and a traceback. Now it is written whole or not at all, and the failure is one line naming it."""
    import resource
    import signal
    import subprocess
    import sys

    report, out = _recorded(tmp_path)
    previous = json.dumps({"an earlier run": "x" * 4000})  # larger than the limit: a file that could be written before
    (out / "results.json").write_text(previous)

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))

    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "seed_selection.py"), "--report", str(report), "--episodes", "4"]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit_file_size,
    )
    assert run.returncode == 1, run.stderr[-2000:]
    assert f"seed_selection.py: cannot write {out / 'results.json'}: File too large" in run.stderr
    assert "Traceback" not in run.stderr
    assert (out / "results.json").read_text() == previous
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "validation"]  # no temporary file left


@pytest.mark.parametrize("status, word", [(130, "interrupted"), (143, "terminated")])
def test_a_stopped_validation_says_what_is_kept_and_how_to_go_on(
    selection, tmp_path, monkeypatch, capsys, status, word
):
    """Before: a Ctrl-C (or SIGTERM) of the validation episodes ended in a KeyboardInterrupt traceback after the
    evaluation's own line (its child process killed 0.25 s after the Ctrl-C). The evaluation stops as it does in
    `liquid-control eval` (130 / 143) and the script ends with one line of its own and the same status."""
    from liquid_control import cli

    report, out = tmp_path / "results.csv", tmp_path / "out"
    _write(report, [("p", 0, "dusk", 20_000_000 + i, True) for i in range(4)])
    (tmp_path / "train" / "p" / "seed_0").mkdir(parents=True)
    asked = []

    def evaluation_stopped(argv):
        asked.append(argv)
        return status

    monkeypatch.setattr(cli, "main", evaluation_stopped)
    args = ["--report", str(report), "--episodes", "4", "--out", str(out), "--train", str(tmp_path / "train")]
    assert selection.main(args) == status
    assert asked and asked[0][0] == "eval" and "--resume" in asked[0]
    assert capsys.readouterr().err == (
        f"seed_selection.py: {word}: the finished validation episodes are kept in {out / 'validation'}; "
        "the same command again continues them\n"
    )
    assert not (out / "results.json").exists()


def test_ctrl_c_after_the_validation_says_the_tables_are_still_to_write(selection, tmp_path, monkeypatch, capsys):
    """Before: a KeyboardInterrupt traceback, and no word that the finished validation is reused."""
    report, out = _recorded(tmp_path)

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(selection, "_rates_by_group", interrupted)
    assert selection.main(["--report", str(report), "--episodes", "4", "--out", str(out)]) == 130
    assert capsys.readouterr().err == (
        f"seed_selection.py: interrupted: the validation episodes are complete in {out / 'validation'}; "
        "the same command again writes the tables\n"
    )
