"""One check of "may this command write its outputs into this folder" (paths.output_folder_problem): eval, train
(command line and train()) and model-card refuse the same mistakes before any work, in the same words."""

import pytest

from liquid_control.cli import main
from liquid_control.paths import output_file_problem, output_folder_problem, policies_dir
from liquid_control.training import model_card
from liquid_control.training.run import TrainingError
from liquid_control.training.trainer import train

UNWRITABLE = "/sys/liquid_control_out"  # refused even to root (sysfs); os.access alone lets root through


def _mistakes(tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    return [
        (a_file, "exists and is not a folder"),
        (a_file / "run", f"{a_file} exists and is not a folder"),
        (UNWRITABLE, "cannot write in /sys"),
    ]


def test_output_folder_problem_names_the_mistake_and_creates_nothing(tmp_path):
    for out, problem in _mistakes(tmp_path):
        assert output_folder_problem(out) == problem
    assert output_folder_problem(tmp_path / "new" / "run") is None
    assert output_folder_problem(tmp_path) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # the write probe left nothing


def test_output_file_problem_tries_the_write_too():
    """Before: os.access alone, which lets root through, so a picture for /sys was rendered, then not saved."""
    assert output_file_problem(f"{UNWRITABLE}/sheet.png", "sheet.png") == "cannot write in /sys"


def test_every_command_refuses_the_same_output_folder_mistake_in_the_same_words(tmp_path, capsys, monkeypatch):
    """Before: eval said 'cannot write there (Not a directory)' for an --out under a file, train 'cannot create the
    output folder', model-card '<file> is a file, not a folder'; model-card and train took a folder they cannot
    write in, model-card measuring the policy first (minutes) and then failing with a traceback."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "policy.pt").write_bytes((policies_dir() / "cfc_balancer.pt").read_bytes())
    monkeypatch.setattr(model_card, "measure_both_paths", lambda *a, **k: pytest.fail("measured"))
    evaluate = ["eval", "--policy", "expert", "--episodes", "1", "--backend", "serial", "--no-progress"]
    training = ["train", "--config", "policies/configs/cfc_rover.yaml", "--no-progress"]
    card = ["--run", str(tmp_path / "run"), "--name", "x"]
    for out, problem in _mistakes(tmp_path):
        for command, argv in ((main, evaluate), (main, training), (model_card.main, card)):
            try:
                code = command([*argv, "--out", str(out)])
            except SystemExit as stop:  # model-card's parser
                code = stop.code
            err = capsys.readouterr().err
            assert code == 2 and f"--out {out}: {problem}" in err and "Traceback" not in err, (argv, err)
        with pytest.raises(SystemExit):
            model_card.main([*card, "--cache", str(out), "--out", str(tmp_path / "cards")])
        assert f"--cache {out}: {problem}" in capsys.readouterr().err
        with pytest.raises(TrainingError, match=f"^{out}: {problem}$"):  # train() from Python: the path named
            train("policies/configs/cfc_rover.yaml", out)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "run"]
