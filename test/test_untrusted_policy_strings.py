"""A policy file from someone else: the strings it carries (config name and description, the recorded training
command) reach terminals, the node's log and model cards, so they must not carry control characters there."""

import copy
import re

import pytest
import torch
import yaml

from liquid_control import cli
from liquid_control.paths import policies_dir
from liquid_control.policy import PolicyConfigError, validate_config
from liquid_control.runtime.backends import BackendError, check_policy_config
from liquid_control.training.model_card import code_span

ROVER = yaml.safe_load((policies_dir() / "configs" / "cfc_rover.yaml").read_text())
ESCAPE = "evil\x1b[2J\x1b[31mRED"


@pytest.mark.parametrize(
    "key, text, character",
    [
        ("name", ESCAPE, r"'\x1b' at position 4"),
        ("name", "two\nlines", r"'\n' at position 3"),
        ("description", "clears\x1b[2J", r"'\x1b' at position 6"),
        ("description", "reversed \u202eexe.txt", r"'\u202e' at position 9"),
        ("name", "c1\x9bcontrol", r"'\x9b' at position 2"),
        ("description", "line\u2028separator", r"'\u2028' at position 4"),
    ],
)
def test_control_characters_in_a_config_string_are_refused_naming_the_key(key, text, character):
    """Before: accepted; a downloaded checkpoint named 'evil<ESC>[2J...' cleared the terminal of whoever ran
    `liquid-control export` on it and forged a line of the policy node's log."""
    cfg = copy.deepcopy(ROVER)
    cfg[key] = text
    said = re.escape(f"{key}: control character {character} of ")
    with pytest.raises(PolicyConfigError, match=f"^{said}"):
        validate_config(cfg)
    with pytest.raises(BackendError, match=f"policy config {said}"):
        check_policy_config(cfg, "x.onnx: metadata")  # an ONNX export's config, which the node reads


def test_a_description_may_have_lines_and_tabs():
    cfg = copy.deepcopy(ROVER)
    cfg["description"] = "first line\n\tsecond line"
    assert validate_config(cfg)["description"] == "first line\n\tsecond line"
    check_policy_config(cfg, "x.onnx")


def test_a_checkpoint_with_an_escape_in_its_name_is_refused_by_export_in_one_line(tmp_path, capsys):
    payload = torch.load(policies_dir() / "cfc_ncp_rover.pt", weights_only=True)
    payload["config"]["name"] = ESCAPE
    torch.save(payload, tmp_path / "escape.pt")
    assert cli.main(["export", str(tmp_path / "escape.pt"), "-o", str(tmp_path / "e.onnx")]) == 2
    err = capsys.readouterr().err
    assert "escape.pt: the embedded config is not valid: name: control character '\\x1b'" in err, err
    assert "\x1b" not in err and not (tmp_path / "e.onnx").exists()


@pytest.mark.parametrize(
    "text, span",
    [
        ("liquid-control train --out runs/a", "`liquid-control train --out runs/a`"),
        ("cmd `x` done", "``cmd `x` done``"),
        ("`starts", "`` `starts ``"),
        ("cmd\x1b]0;TITLE\x07\n```\n# INJECTED", "````cmd\\x1b]0;TITLE\\x07\\n```\\n# INJECTED````"),
    ],
)
def test_a_recorded_command_is_one_code_span_in_a_model_card(text, span):
    """Before: the card wrote `{command}`; a command holding a backtick and newlines (a policy file's metadata, from
    whoever made it) closed the span, and what followed rendered as the card's own headings and HTML."""
    assert code_span(text) == span
