"""What a run records of where it ran: a command of relative paths (``--bag bags/day1 --out run``) says nothing
without the working directory it ran in, so the run folder, the policy file, the model card and the reports record
that folder beside the command."""

import json
import sys

import pytest
import yaml
from test_bags import CAMERA_ONLY, _steady_bag

from liquid_control import cli


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A working directory holding a config and two bags, named relative to it as a user names them."""
    work = tmp_path / "work"
    _steady_bag(work / "bags" / "drive", 0.07, 30)
    _steady_bag(work / "bags" / "held", 0.07, 20)
    (work / "tiny.yaml").write_text(yaml.safe_dump({**CAMERA_ONLY, "training": {**CAMERA_ONLY["training"]}}))
    monkeypatch.chdir(work)
    return work


def _run(monkeypatch, argv) -> int:
    """``liquid-control ARGV`` as a shell runs it (the commands record ``sys.argv``)."""
    monkeypatch.setattr(sys, "argv", ["liquid-control", *argv])
    return cli.main(argv)


def test_a_trained_policy_and_its_card_record_the_folder_its_command_ran_in(work, tmp_path, monkeypatch, capsys):
    """Before: command.txt, checkpoint.pt and policy.pt kept 'liquid-control train --config tiny.yaml --out run --bag
    bags/drive ...' and no folder: read elsewhere (the shipped card, a colleague's copy), its paths led nowhere."""
    from liquid_control.policy import load_policy
    from liquid_control.training import model_card, trainer

    argv = ["train", "--config", "tiny.yaml", "--out", "run", "--bag", "bags/drive", "--val-bag", "bags/held"]
    argv += ["--no-progress"]
    assert _run(monkeypatch, argv) == 0
    command = "liquid-control " + " ".join(argv)
    assert (work / "run" / "command.txt").read_text() == f"{command}\n# working directory {work}\n# seed 0\n"
    meta = load_policy(work / "run" / "policy.pt").metadata
    assert meta["command"] == command and meta["working_directory"] == str(work)

    measured = {path: {"kernel_path": path, "outcomes": [True, False]} for path in ("compiled", "torch")}
    monkeypatch.setattr(model_card, "measure_both_paths", lambda *a, **k: measured)
    card = model_card.write_card("robot", work / "run", 2, 2, tmp_path / "cards", "a test machine")
    assert model_card.read_card(card)["training"]["working_directory"] == str(work)
    assert f"- **Training**: `{command}` in `{work}` — " in card.read_text()

    # a run killed before its first checkpoint and resumed from another folder: the first command's folder is kept
    def killed_converting(message):
        if message.startswith("train bag"):
            raise KeyboardInterrupt

    data = {"bags": ["bags/drive"]}
    with pytest.raises(KeyboardInterrupt):
        trainer.train(CAMERA_ONLY, "later", data=data, command="liquid-control train ...", log=killed_converting)
    assert not (work / "later" / "checkpoint.pt").exists()
    monkeypatch.chdir(tmp_path)
    resumed = trainer.train(None, work / "later", resume=True, command="liquid-control train --resume", progress=False)
    meta = load_policy(resumed.policy_path).metadata
    assert meta["command"] == "liquid-control train ..." and meta["working_directory"] == str(work)
    # and one resumed after its first checkpoint (the checkpoint holds the folder)
    (work / "later" / "command.txt").unlink()
    (work / "later" / "policy.pt").unlink()
    again = trainer.train(None, work / "later", resume=True, command="liquid-control train --resume", progress=False)
    assert load_policy(again.policy_path).metadata["working_directory"] == str(work)


def test_an_evaluations_provenance_records_the_folder_its_command_ran_in(work, monkeypatch, capsys):
    """Before: provenance.json and the report's Provenance gave 'liquid-control eval --policy robot=run/policy.pt
    --out report' and no folder its relative paths were relative to."""
    from liquid_control.training import trainer

    trainer.train(CAMERA_ONLY, "run", data={"bags": ["bags/drive"]}, progress=False, log=lambda m: None)
    argv = ["eval", "--policy", "robot=run/policy.pt", "--episodes", "1", "--out", "report", "--workers", "1"]
    assert _run(monkeypatch, [*argv, "--no-progress", "--no-example", "--no-saliency"]) == 0
    provenance = json.loads((work / "report" / "provenance.json").read_text())
    assert provenance["working_directory"] == str(work)
    assert (
        f"{' '.join(argv[-2:])} --no-progress --no-example --no-saliency` in `{work}`\n"
        in (work / "report" / "report.md").read_text()
    )


def test_a_command_a_script_runs_through_cli_main_records_that_command(work, monkeypatch, capsys):
    """Before: scripts/seed_selection.py and seed_factors.py run their evaluation as cli.main([...]) in their own
    process, where sys.argv is the script's: the report said 'Command: `(from Python)`' and the run's command.txt
    and policy held none. The command recorded is the argv cli.main ran, as a shell spells it."""
    from liquid_control.policy import load_policy

    monkeypatch.setattr(sys, "argv", ["scripts/seed_selection.py", "--out", "elsewhere"])
    train = ["train", "--config", "tiny.yaml", "--out", "run", "--bag", "bags/drive", "--no-progress"]
    assert cli.main(train) == 0
    assert (work / "run" / "command.txt").read_text().startswith(f"liquid-control {' '.join(train)}\n")
    assert load_policy(work / "run" / "policy.pt").metadata["command"] == f"liquid-control {' '.join(train)}"
    evaluate = ["eval", "--policy", "robot=run/policy.pt", "--episodes", "1", "--out", "my report", "--workers", "1"]
    assert cli.main([*evaluate, "--no-progress", "--no-example", "--no-saliency"]) == 0
    command = "liquid-control eval --policy robot=run/policy.pt --episodes 1 --out 'my report' --workers 1"
    command += " --no-progress --no-example --no-saliency"
    assert json.loads((work / "my report" / "provenance.json").read_text())["command"] == command
    assert f"- Command: `{command}` in `{work}`\n" in (work / "my report" / "report.md").read_text()


def test_an_offline_evaluation_records_its_folder_and_marks_the_bags_the_policy_learned_from(work, monkeypatch, capsys):
    """Before: eval --bag's offline.json and report gave 'liquid-control eval --bag bags/drive ...' and no folder, and a
    bag the policy had trained on (or whose loss selected its epoch) was reported as any other: its small error read
    as a held-out one."""
    from liquid_control.training import trainer

    data = {"bags": ["bags/drive"], "validation": ["bags/held"]}
    trainer.train(CAMERA_ONLY, "run", data=data, progress=False, log=lambda m: None)
    _steady_bag(work / "bags" / "new", 0.07, 20)
    argv = ["eval", "--policy", "robot=run/policy.pt", "--out", "offline", "--no-progress", "--no-example"]
    argv += ["--bag", "bags/drive", "--bag", "bags/held", "--bag", "bags/new"]
    assert _run(monkeypatch, argv) == 0
    results = json.loads((work / "offline" / "offline.json").read_text())
    assert results["working_directory"] == str(work)
    rows = results["policies"]["robot"]["bags"]
    assert [rows[b].get("trained_on") for b in argv[-5::2]] == ["training", "validation", None]
    report = (work / "offline" / "report.md").read_text()
    assert f"`liquid-control {' '.join(argv)}` in `{work}`\n" in report
    assert "| robot | drive (trained on) |" in report and "| robot | held (validation) |" in report
    assert "| robot | new |" in report and "their errors are not held-out errors" in report
    assert "(2 of the bags it trained or selected its epoch on: drive, held)" in capsys.readouterr().out
