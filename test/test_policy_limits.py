"""Untrusted policy files (issue 9, item 9): sizes are bounded before anything is built, and a file that
would need pickled code is refused with our message, not torch's advice to load it with weights_only=False."""

import fractions
import os
import runpy
from pathlib import Path

import pytest
import torch

from liquid_control.cells import CheckpointError, load_model
from liquid_control.policy import Policy, PolicyConfigError, PolicyLoadError, load_policy, save_policy, validate_config
from liquid_control.policy.config import ALLOW_LARGE_ENV, SIZE_BOUNDS, estimated_parameters

ROOT = Path(__file__).resolve().parents[1]
ROVER = {
    "name": "tiny_rover",
    "world": "LiquidRover-v0",
    "observation": {"image": {"height": 16, "width": 16}, "update_on": "camera"},
    "encoder": {"camera": {"channels": [4], "kernel_sizes": [3], "strides": [2], "features": 8}},
    "core": {"type": "cfc", "units": 12, "wiring": "ncp"},
    "action": {"size": 2, "low": [-1, -1], "high": [1, 1], "kind": "twist"},
}


def test_a_tiny_checkpoint_asking_for_a_huge_core_is_refused_before_it_is_built(tmp_path, monkeypatch):
    monkeypatch.delenv(ALLOW_LARGE_ENV, raising=False)
    payload = torch.load(save_policy(tmp_path / "p.pt", Policy.from_config(ROVER)), weights_only=True)
    payload["config"]["core"]["units"] = 20000  # an NCP this size took minutes to draw before the bound
    payload["state_dict"] = {}
    torch.save(payload, tmp_path / "huge.pt")
    assert (tmp_path / "huge.pt").stat().st_size < 10_000
    with pytest.raises(PolicyLoadError) as err:
        load_policy(tmp_path / "huge.pt")
    text = str(err.value)
    assert "huge.pt" in text and "core.units: 20000 is above the size bound 1024" in text
    assert f"set {ALLOW_LARGE_ENV}=1" in text  # how to lift it when the size is legitimate


def test_the_bounds_can_be_lifted_for_a_legitimately_large_policy(monkeypatch):
    config = dict(ROVER, core={"type": "cfc", "units": SIZE_BOUNDS["core.units"] + 1})
    monkeypatch.delenv(ALLOW_LARGE_ENV, raising=False)
    with pytest.raises(PolicyConfigError, match="core.units"):
        validate_config(config)
    monkeypatch.setenv(ALLOW_LARGE_ENV, "1")
    assert validate_config(config)["core"]["units"] == SIZE_BOUNDS["core.units"] + 1


def test_sizes_within_each_bound_can_still_multiply_into_too_many_parameters(monkeypatch):
    monkeypatch.delenv(ALLOW_LARGE_ENV, raising=False)
    config = dict(
        ROVER,
        observation={"image": {"height": 1024, "width": 1024}, "update_on": "camera"},
        encoder={"camera": {"channels": [8], "kernel_sizes": [1], "strides": [1], "features": 4096}},
    )
    with pytest.raises(PolicyConfigError, match=r"parameters \(estimated from the sizes\)"):
        validate_config(config)


def test_the_parameter_estimate_is_of_the_real_order():
    """A gate against absurd sizes, not an account: within a small factor of the real count either way."""
    for core in (
        {"type": "cfc", "units": 12, "wiring": "ncp"},
        {"type": "ltc", "units": 12, "wiring": "ncp"},
        {"type": "cfc", "units": 32},
        {"type": "lstm", "units": 32},
    ):
        config = validate_config(dict(ROVER, core=core))
        real = Policy.from_config(config).num_parameters()
        assert real / 2 <= estimated_parameters(config) <= 5 * real, core


def test_pickled_code_is_refused_with_our_message(tmp_path):
    torch.save({"format": "liquid_control.policy", "version": 1, "x": fractions.Fraction(1, 3)}, tmp_path / "p.pt")
    for load, error in ((load_policy, PolicyLoadError), (load_model, CheckpointError)):
        with pytest.raises(error) as err:
            load(tmp_path / "p.pt")
        text = str(err.value)
        assert "p.pt: not a readable" in text and "pickled Python object (fractions.Fraction)" in text
        assert "weights_only" not in text and "trust" not in text


@pytest.mark.parametrize(
    "name, content", [("config.yaml", b"name: x\n"), ("card.md", b"# card\n"), ("p.onnx", b"\x08\x07")]
)
def test_a_file_that_is_no_torch_file_is_named_as_such(tmp_path, name, content):
    """Before: a YAML, Markdown or ONNX file given as a policy was said to hold "a pickled Python object"."""
    (tmp_path / name).write_bytes(content)
    for load, error in ((load_policy, PolicyLoadError), (load_model, CheckpointError)):
        with pytest.raises(error) as err:
            load(tmp_path / name)
        text = str(err.value)
        assert name in text and "it is not a torch file" in text and "pickled" not in text


class _MakesAFolder:
    """A pickled object whose unpickling runs os.mkdir (a tampered policy file's payload)."""

    def __init__(self, folder):
        self.folder = str(folder)

    def __reduce__(self):
        return os.mkdir, (self.folder,)


def test_seed_factors_reads_a_tampered_reference_policy_without_running_its_code(tmp_path):
    """Before: _same_weights read --reference's policy.pt files with torch.load(weights_only=False), so a pickled
    payload in one (a downloaded reference run) ran: here it made a folder."""
    from liquid_control.cells.checkpoint import read_plain_torch_file

    shipped = ROOT / "policies" / "cfc_rover.pt"
    payload = read_plain_torch_file(shipped)
    ran = tmp_path / "payload_ran"
    torch.save({**payload, "metadata": {"note": _MakesAFolder(ran)}}, tmp_path / "policy.pt")
    same_weights = runpy.run_path(str(ROOT / "scripts" / "seed_factors.py"))["_same_weights"]
    assert same_weights(shipped, shipped)
    with pytest.raises(PolicyLoadError, match=r"policy.pt: not a readable policy file: it holds a pickled"):
        same_weights(shipped, tmp_path / "policy.pt")
    assert not ran.exists()


def test_a_policy_file_of_compressed_zip_entries_is_refused_before_torch_unpacks_them(tmp_path):
    """torch.save writes its zip archive uncompressed, but torch.load unpacks deflated entries too, each whole into
    memory: a downloaded policy of 1 MB took 1 GiB (1,000 times its size) before it was refused. Before: the weights
    were unpacked and the file refused only for its extra weight ('unexpected weights extra')."""
    import zipfile

    from liquid_control.cells.checkpoint import read_plain_torch_file

    payload = read_plain_torch_file(ROOT / "policies" / "cfc_rover.pt")
    payload["state_dict"]["extra"] = torch.zeros(16 << 20)  # 64 MiB of float32 zeros
    torch.save(payload, tmp_path / "stored.pt")
    with zipfile.ZipFile(tmp_path / "stored.pt") as stored:
        with zipfile.ZipFile(tmp_path / "bomb.pt", "w", zipfile.ZIP_DEFLATED, compresslevel=9) as bomb:
            for entry in stored.infolist():
                bomb.writestr(entry.filename, stored.read(entry.filename))
    assert (tmp_path / "bomb.pt").stat().st_size < (64 << 20) // 100
    for load, error in ((load_policy, PolicyLoadError), (load_model, CheckpointError)):
        with pytest.raises(error) as refused:
            load(tmp_path / "bomb.pt")
        text = str(refused.value)
        assert "bomb.pt: not a readable" in text and "compressed entries" in text and "unpacking to 67" in text, text
