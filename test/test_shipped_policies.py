"""Every shipped policy loads, matches its model card, and still succeeds at the rate its card promises.

Closed-loop episodes are chaotic: the compiled kernels of another CPU (with or without AVX-512) or the torch
loops (``LIQUID_CONTROL_NATIVE=0``) round differently in the last bit, and that flips some episodes (each card
says how many of its 100 flip between the two kernel paths on the machine that measured it). So the check is a
rate, not a count: the policy drives the card's check episodes (in lockstep lanes, as `liquid-control eval`
steps them: batching, like another CPU, changes only last bits), and the test fails only when its successes are
implausibly few for a policy as good as the card's figure, taken conservatively as the lower 95% bound of the
worse kernel path: fewer than a correct build reaches with probability 1 - ``check.false_alarm`` (1e-3, from the
binomial). A build that broke the policy (near 0 % success) fails it; a one-episode flip cannot.
"""

from pathlib import Path

import pytest
import torch

from liquid_control.evaluation.agents import default_env_kwargs
from liquid_control.evaluation.batched import WorldPool, run_batch
from liquid_control.evaluation.plan import EpisodeJob
from liquid_control.paths import policies_dir
from liquid_control.policy import load_policy
from liquid_control.runtime.backends import checkpoint_sha256
from liquid_control.training.model_card import binomial_cdf, min_check_successes, read_card

EXPECTED = ["cfc_ncp_rover", "cfc_ncp_rover_robust", "ltc_ncp_rover", "lstm_rover", "cfc_balancer", "cfc_balance_nav"]
SHIPPED = sorted(p.stem for p in policies_dir().glob("*.pt"))


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Single-sample policy steps: extra intra-op threads only spin on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_the_promised_policies_are_shipped_with_cards():
    for name in EXPECTED:
        assert name in SHIPPED, f"policies/{name}.pt is missing"
        assert (policies_dir() / f"{name}.md").is_file(), f"policies/{name}.md (model card) is missing"


def test_the_check_threshold_is_the_binomial_quantile():
    from scipy.stats import binom

    for n, p in ((12, 0.636), (12, 0.838), (16, 0.745), (6, 0.826), (8, 0.0), (8, 1.0)):
        assert binomial_cdf(5, n, p) == pytest.approx(binom.cdf(5, n, p), abs=1e-12)
        k = min_check_successes(n, p, 1e-3)
        assert k == 0 or binom.cdf(k - 1, n, p) < 1e-3  # fewer than k: implausible for a correct build
        assert binom.cdf(k, n, p) >= 1e-3 or k == n  # k itself is not


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_policy_matches_its_card_and_reaches_its_success(name):
    path = policies_dir() / f"{name}.pt"
    assert path.stat().st_size < 2 * 1024 * 1024, f"{path} is larger than 2 MB"
    card = read_card(policies_dir() / f"{name}.md")
    policy = load_policy(path)
    assert card["name"] == name and card["file"] == f"{name}.pt"
    assert card["world"] == policy.config["world"]
    assert card["architecture"]["parameters"] == policy.num_parameters()
    ind, check = card["in_distribution"], card["check"]
    assert ind["kernel_path"] and ind["other_kernel_path"]["kernel_path"]  # which path produced the figures
    reference = min(ind["ci95"][0], ind["other_kernel_path"]["ci95"][0])
    assert check["reference_success"] == pytest.approx(reference)
    seeds = check["seeds"]
    needed = min_check_successes(len(seeds), reference, check["false_alarm"])
    assert check["min_successes"] == needed and check["false_alarm"] <= 1e-3
    assert needed >= 1  # the check can fail: a policy that never succeeds does

    assert policy.config["training"]["shift"] in (None, "")  # the card's episodes are in distribution
    # the check episodes in lockstep lanes, one batched policy call per update: the evaluation's own path
    sha = checkpoint_sha256(str(path))
    kwargs = default_env_kwargs(policy.config)
    jobs = [EpisodeJob(name, 0, "", int(s), policy.config["world"], str(path), sha, kwargs) for s in seeds]
    pool = WorldPool()
    try:
        outcomes = [record["success"] for record in run_batch(jobs, pool=pool)]
    finally:
        pool.close()
    assert sum(outcomes) >= needed, (
        f"{name}: {sum(outcomes)}/{len(seeds)} check episodes succeeded (seeds {seeds}); a policy as good as its "
        f"card ({reference:.0%}, lower 95% bound) gets at least {needed} with probability {1 - check['false_alarm']}"
    )


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_policy_has_its_onnx_export_which_the_node_runs_by_default(name):
    """``backend: auto`` (the nodes' default) runs the export next to a checkpoint only when it was exported from
    that very file: a policy file replaced without `liquid-control export` would silently fall back to torch."""
    from liquid_control.runtime.backends import OnnxBackend, checkpoint_sha256, load_backend
    from liquid_control.runtime.export import parity

    path = policies_dir() / f"{name}.pt"
    onnx = read_card(path.with_suffix(".md")).get("onnx") or {"file": f"{name}.onnx"}
    if onnx["file"] is None:  # the model card shipped it without an export, saying why: torch runs it
        assert not path.with_suffix(".onnx").exists() and onnx["not_exported"]
        assert load_backend(path).name == "torch"
        return
    export = OnnxBackend(path.with_suffix(".onnx"))
    assert export.source_sha256 == checkpoint_sha256(path), f"re-export: liquid-control export {path}"
    assert isinstance(load_backend(path), OnnxBackend)
    assert parity(load_policy(path), path.with_suffix(".onnx")) < 1e-5


@pytest.mark.parametrize("name", SHIPPED)
def test_card_ood_figures_are_those_of_the_evaluation_it_cites(name):
    """The card's OOD figures are the cited evaluation's, and its command runs the shifts it quotes. Before: four
    rover cards gave `--shift-set headline` for their 16 shifts, the name the `full` set had when they were
    measured; `headline` now runs 8 of them."""
    import argparse
    import csv
    import shlex

    from liquid_control.evaluation.cli import add_arguments
    from liquid_control.evaluation.shifts import SHIFT_SETS
    from liquid_control.paths import checkout_dir
    from liquid_control.training.model_card import ood_section

    ood = read_card(policies_dir() / f"{name}.md")["ood"]
    if not isinstance(ood, dict):  # the card says it is not measured
        return
    root = checkout_dir()
    if root is None:
        pytest.skip("the cited reports are in the source checkout")
    if "source" in ood:  # filled by --ood-results: exactly what ood_section reads from that file
        # and of this very file (the check a card's --ood-results makes)
        carded = policies_dir() / f"{name}.pt"
        assert ood == ood_section(root / ood["source"], ood["policy"], carded=carded) | {"source": ood["source"]}
        return
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(shlex.split(ood["command"])[2:])  # after 'liquid-control eval'
    shifts = set(args.shift) | {s for named in args.shift_set for s in SHIFT_SETS[named]}
    assert shifts == set(ood["success"]), f"{name}: {ood['command']} runs {sorted(shifts)}"
    policy = next(spec.split("=")[0] for spec in args.policy if spec.endswith(f"policies/{name}.pt"))
    with open(root / Path(ood["report"]).parent / "results.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["policy"] == policy]
    assert args.episodes == ood["episodes_per_shift"]
    for shift, rate in ood["success"].items():
        outcomes = [row["success"] == "True" for row in rows if row["shift"] == shift]
        assert len(outcomes) == args.episodes and sum(outcomes) / len(outcomes) == pytest.approx(rate), shift


@pytest.mark.parametrize("name", SHIPPED)
def test_card_training_command_trains_the_config_inside_the_checkpoint(name):
    """The card's training command, with the options `liquid-control train` has today, applied to the shipped
    config it names, gives the config the checkpoint holds (a key that differs is one the command sets)."""
    import argparse
    import shlex

    from liquid_control.policy.config import apply_overrides, load_config
    from liquid_control.training.cli import add_arguments, parse_overrides

    command = read_card(policies_dir() / f"{name}.md")["training"]["command"]
    assert command.startswith("liquid-control train "), command
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(shlex.split(command)[2:])
    assert args.config == f"policies/configs/{name}.yaml" and args.seed in (None, 0)
    config = apply_overrides(load_config(policies_dir() / "configs" / f"{name}.yaml"), parse_overrides(args.overrides))
    assert config == load_policy(policies_dir() / f"{name}.pt").config


def _training_table() -> dict[str, list[str]]:
    """docs/training.md's table of the shipped policies: {policy: its cells}."""
    from liquid_control.paths import checkout_dir

    text = (checkout_dir() / "docs" / "training.md").read_text()
    section = text.split("## Measured (shipped policies, `policies/*.md`)", 1)[1].split("\n#", 1)[0]
    rows = [line.split("|")[1:-1] for line in section.splitlines() if line.startswith("| `")]
    return {cells[0].strip().strip("`"): [c.strip() for c in cells] for cells in rows}


@pytest.mark.parametrize("name", SHIPPED)
def test_training_doc_table_gives_each_shipped_policy_its_card_figures(name):
    """Before: docs/training.md's table of the shipped policies had no row for cfc_ncp_rover_robust."""
    from liquid_control.paths import checkout_dir

    if checkout_dir() is None:
        pytest.skip("docs/ is in the source checkout")
    table = _training_table()
    assert name in table, f"docs/training.md's table of the shipped policies has no row for {name}"
    _, _, parameters, wall, compiled, torch_loops, differ = table[name]
    card = read_card(policies_dir() / f"{name}.md")
    ind, other = card["in_distribution"], card["in_distribution"]["other_kernel_path"]
    n = ind["episodes"]
    low, high = (round(100 * x) for x in ind["ci95"])
    assert compiled.replace("*", "") == f"{round(ind['success'] * n)}/{n} ({low}-{high}%)"
    assert torch_loops == f"{round(other['success'] * n)}/{n}" and int(differ) == other["episodes_that_differ"]
    assert int(parameters.replace(",", "")) == card["architecture"]["parameters"]
    assert wall.split()[0] == f"{round(card['training']['wall_clock_s'])}"


@pytest.mark.parametrize("name", SHIPPED)
def test_card_is_laid_out_as_the_card_writers_write_it(name):
    """`model_card --refresh` rewrites the in-distribution and check sections only: on a card laid out otherwise
    (before: the robust card, filled by add_ood at 80 characters a line) it also re-wrapped every long entry."""
    from liquid_control.training.model_card import card_text, split_card

    path = policies_dir() / f"{name}.md"
    assert card_text(*split_card(path)) == path.read_text()
