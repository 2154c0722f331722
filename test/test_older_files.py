"""Files written by an older liquid_control, read by this one: a run folder resumed, an ONNX export run, a policy
fine-tuned (``--init-from``). Each either works as it did or is refused naming the file, its age and the way on.

The old files are made here from today's by taking out what the older code did not write (checked against the real
history: runs made at cdcc23bf, 1a31a611, b498bbc2, e2b81306 and cb2c37ab, exports at cdcc23bf and 69c8ea0d)."""

import pytest
import torch
import yaml
from test_training import die_in_epoch, tiny_config

from liquid_control.policy import load_policy
from liquid_control.training import trainer

QUIET = {"progress": False, "log": lambda message: None}


def _killed_run(out, monkeypatch, config):
    """A tiny run killed in its third epoch: checkpoint.pt holds two."""
    die_in_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(config, out, **QUIET)
    monkeypatch.undo()
    assert (out / "checkpoint.pt").is_file() and not (out / "policy.pt").exists()


def _as_older_code_wrote_it(out, **changed):
    """Rewrite the run's checkpoint.pt and config.yaml as the code of 2026-11-25 wrote them: its config without
    the keys added since and ``update_on`` a plain string; ``changed``: training settings of the checkpoint's config
    alone (a config.yaml edited since). That code trained on the per-step graph, so the run must have too."""
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=False)
    config = checkpoint["config"]
    assert config["training"]["sequence_kernel"] == "stepwise"  # what the code did before the key (c84ed220)
    for section, key in (
        ("training", "sun_elevation_range"),  # 2026-12-04
        ("training", "yaw_recovery"),
        ("core", "max_step"),  # 2026-12-01
        ("observation", "timing"),  # 2026-11-30
        ("observation", "reorder_lag_s"),
        ("observation", "resample_hz"),
        ("training", "action_noise"),
        ("training", "sequence_kernel"),
    ):
        config[section].pop(key)
    config["observation"]["update_on"] = config["observation"]["update_on"][0]
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    config["training"].update(changed)
    torch.save(checkpoint, out / "checkpoint.pt")


def test_a_run_folder_of_older_code_resumes_as_if_never_interrupted(tmp_path, monkeypatch):
    """Before: every run folder written before a config key was added (training.sun_elevation_range on 2026-12-04:
    all of them) was refused by --resume as 'the run was started with another config or seed (seed 0)', naming no
    key (a key absent there read as its default None) though nothing had changed. And such a run trained on the
    per-step graph, before training.sequence_kernel made the fused kernels the default: it goes on so (5b3f33fe read
    the absent key as 'fused' and went on with the other kernels unsaid), and --config of a file without the key, which
    asks for the default, is refused naming it."""
    config = tiny_config(dagger_rounds=1, beta=[0.5], sequence_kernel="stepwise")
    reference = load_policy(trainer.train(config, tmp_path / "reference", **QUIET).policy_path)
    _killed_run(tmp_path / "run", monkeypatch, config)
    _as_older_code_wrote_it(tmp_path / "run")
    asking_fused = tiny_config(dagger_rounds=1, beta=[0.5])
    with pytest.raises(trainer.TrainingError, match=r"keys that differ: training\.sequence_kernel\)"):
        trainer.train(asking_fused, tmp_path / "run", resume=True, **QUIET)
    resumed = load_policy(trainer.train(None, tmp_path / "run", resume=True, **QUIET).policy_path)
    assert resumed.config["training"]["sequence_kernel"] == "stepwise"
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=0, atol=0)


def test_an_older_run_folder_with_another_setting_is_refused_naming_it(tmp_path, monkeypatch):
    config = tiny_config(dagger_rounds=1, beta=[0.5], sequence_kernel="stepwise")
    _killed_run(tmp_path / "run", monkeypatch, config)
    _as_older_code_wrote_it(tmp_path / "run", lr=0.01)
    checkpoint = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    with pytest.raises(
        trainer.TrainingError,
        match=r"checkpoint.pt: the run was started with another config or seed "
        r"\(seed 0; config keys that differ: training\.lr\)",
    ):
        trainer.train(None, tmp_path / "run", resume=True, **QUIET)
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == checkpoint


BALANCER = {
    "name": "tiny_balancer",
    "world": "LiquidBalance-v0",
    "observation": {"vectors": {"imu": 6, "wheels": 2, "command": 2}, "update_on": "imu"},
    "core": {"type": "cfc", "units": 8},
    "action": {"size": 2, "low": [-1, -1], "high": [1, 1], "kind": "wheel_torques"},
}


def _as_exported_before_2026_11_30(path):
    """Rewrite today's export ``path`` with the inputs of an export of before 0a45f134 (the one at cdcc23bf took
    command, dt, imu, state, wheels): no per-encoder ``encode_*`` flag, the encoder always runs."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    for graph_input in list(model.graph.input):
        if graph_input.name.startswith("encode_"):
            model.graph.input.remove(graph_input)
            model.graph.initializer.append(helper.make_tensor(graph_input.name, onnx.TensorProto.BOOL, [], [True]))
    onnx.save(model, str(path))
    assert sorted(i.name for i in model.graph.input) == ["command", "dt", "imu", "state", "wheels"]


def test_an_onnx_export_of_older_code_is_refused_saying_so_and_what_to_do(tmp_path):
    """Before: 'p.onnx: ONNX inputs [...] do not match the policy config [...]', which did not say that the file was
    an export of an older version, nor that exporting the .pt again makes one this version runs (a robot without
    torch runs the .onnx alone)."""
    from liquid_control.policy import Policy, save_policy
    from liquid_control.runtime.backends import BackendError, TorchBackend, load_backend
    from liquid_control.runtime.export import export_onnx

    checkpoint = save_policy(tmp_path / "p.pt", Policy.from_config(BALANCER))
    _as_exported_before_2026_11_30(export_onnx(load_policy(checkpoint), tmp_path / "p.onnx"))
    said = (
        r"p.onnx: an ONNX export written by liquid_control before 2026-11-30 \(no encode_vectors input; its state "
        r"holds the core alone\), which this version does not run; export the .pt again \(`liquid-control export "
        r".*p.pt`, where torch is installed\)"
    )
    for backend in ("auto", "onnx"):
        with pytest.raises(BackendError, match=said):
            load_backend(tmp_path / "p.onnx", backend)
    with pytest.raises(BackendError, match=said):  # the .pt asked to run on onnx
        load_backend(checkpoint, "onnx")
    with pytest.warns(UserWarning, match=r"runs with torch: p.onnx next to it is not a usable ONNX policy .*" + said):
        assert isinstance(load_backend(checkpoint, "auto"), TorchBackend)
    # `liquid-control sim --policy p.onnx` and the recorder's policy inputs: refused before any node starts (before,
    # the graph started and the node's refusal came three times, exit 1)
    from liquid_control.ros.graph import policy_world_parameters

    with pytest.raises(ValueError, match=said):
        policy_world_parameters(tmp_path / "p.onnx", refuse=True)
    from liquid_control.ros.graph import check_policy_options

    with pytest.raises(ValueError, match="--backend onnx: .*" + said):  # `sim --backend onnx --policy p.pt`
        check_policy_options(checkpoint, "LiquidBalance-v0", "onnx", 0.0, "per_update")


def test_a_policy_of_before_a_config_key_is_refused_for_init_from_with_the_values_and_the_way_on(tmp_path):
    """Before: fine-tuning the deployed cfc_ncp_rover.pt of before 2026-12-01 with today's shipped config (which sets
    core.max_step: 0.1) was refused as 'keys that differ from the config: core.max_step; start from a policy with
    the same ... core', without the values (the file holds none: the key did not exist) or the --set that keeps the
    policy's."""
    from liquid_control.policy import Policy, save_policy

    config = tiny_config(dagger_rounds=0, epochs_first=1)
    older = save_policy(tmp_path / "older.pt", Policy.from_config(config))  # core.max_step: null, as then
    today = {**config, "core": {**config["core"], "max_step": 0.2}}
    with pytest.raises(
        trainer.TrainingError,
        match=r"older.pt: a policy of another network \(keys that differ from the config: core.max_step = null in the "
        r"policy, 0.2 in the config\); start from a policy with the same world, observation, encoder, core and "
        r"action, or to fine-tune it as it is: --set core.max_step=null$",
    ):
        trainer.train(today, tmp_path / "refused", init_from=older, **QUIET)
    assert not (tmp_path / "refused").exists()
    result = trainer.train(today, tmp_path / "run", init_from=older, overrides={"core.max_step": None}, **QUIET)
    assert load_policy(result.policy_path).metadata["started_from"]["path"] == str(older.absolute())


def test_the_set_an_init_from_refusal_gives_runs_as_given_in_a_shell(tmp_path):
    """Before: a list value was given unquoted (`--set action.high=[1.0, 1.0]`), which a shell splits at its space
    into two arguments: the command the refusal gave did not run."""
    import shlex

    from liquid_control.policy import Policy, save_policy
    from liquid_control.training.cli import parse_overrides

    config = tiny_config(dagger_rounds=0, epochs_first=1)
    older = save_policy(tmp_path / "older.pt", Policy.from_config(config))
    today = {**config, "action": {**config["action"], "high": [0.5, 0.5]}}
    with pytest.raises(trainer.TrainingError, match=r"or to fine-tune it as it is: (--set .*)$") as refused:
        trainer.train(today, tmp_path / "refused", init_from=older, **QUIET)
    words = shlex.split(str(refused.value).partition("as it is: ")[2])  # as a shell reads the command
    assert words[::2] == ["--set"] * (len(words) // 2) and len(words) % 2 == 0, words
    result = trainer.train(today, tmp_path / "run", init_from=older, overrides=parse_overrides(words[1::2]), **QUIET)
    assert load_policy(result.policy_path).config["action"]["high"] == [1.0, 1.0]


def test_an_evaluation_of_older_code_resumed_does_not_claim_its_episodes_for_this_code(tmp_path):
    """Before: an `eval --out` folder of before 2026-11-30 (episodes.jsonl, no provenance.json) continued with
    --resume got a report whose provenance gave this part's commit and command alone, as if every episode had run on
    this code (checked with folders written at cdcc23bf)."""
    import json

    from liquid_control.evaluation.evaluate import evaluate
    from liquid_control.evaluation.plan import build_plan

    quiet = {"backend": "serial", "progress": False, "example": False, "saliency": False}
    evaluate(build_plan(["expert"], ["in_distribution"], 1), str(tmp_path), **quiet)
    (tmp_path / "provenance.json").unlink()  # as the older version wrote the folder
    evaluate(build_plan(["expert"], ["in_distribution"], 2), str(tmp_path), resume=True, **quiet)
    said = "1 of the 2 episodes were run by an earlier part that left no provenance.json (liquid_control before "
    assert json.loads((tmp_path / "provenance.json").read_text())["earlier_part_unrecorded"].startswith(said)
    assert f"- Earlier part unrecorded: {said}" in (tmp_path / "report.md").read_text()
    evaluate(build_plan(["expert"], ["in_distribution"], 2), str(tmp_path), resume=True, **quiet)  # rewritten only
    assert f"- Earlier part unrecorded: {said}" in (tmp_path / "report.md").read_text()  # still said
    evaluate(build_plan(["expert"], ["in_distribution"], 2), str(tmp_path / "new"), **quiet)  # a run of this code
    evaluate(build_plan(["expert"], ["in_distribution"], 3), str(tmp_path / "new"), resume=True, **quiet)
    assert "earlier_part_unrecorded" not in json.loads((tmp_path / "new" / "provenance.json").read_text())


def test_an_evaluation_of_older_code_resumed_twice_still_does_not_claim_its_episodes(tmp_path, monkeypatch):
    """Before: a first --resume of such a folder cut short (Ctrl-C, a session's end) left a record of its part, and
    the next --resume, finding it, said nothing of the older version's episodes: the report listed this code's two
    parts as if they had run every episode."""
    import json

    from liquid_control.evaluation import evaluate as evaluate_module
    from liquid_control.evaluation.evaluate import evaluate
    from liquid_control.evaluation.plan import build_plan

    quiet = {"backend": "serial", "progress": False, "example": False, "saliency": False}
    evaluate(build_plan(["expert"], ["in_distribution"], 1), str(tmp_path), **quiet)
    (tmp_path / "provenance.json").unlink()  # as the older version wrote the folder
    run_jobs = evaluate_module.run_jobs

    def one_then_killed(todo, keep, **kwargs):
        run_jobs(list(todo)[:1], keep, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate_module, "run_jobs", one_then_killed)
    with pytest.raises(KeyboardInterrupt):
        evaluate(build_plan(["expert"], ["in_distribution"], 3), str(tmp_path), resume=True, **quiet)
    monkeypatch.undo()
    evaluate(build_plan(["expert"], ["in_distribution"], 3), str(tmp_path), resume=True, **quiet)
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert len(prov["earlier_parts"]) == 1  # the part cut short, counted
    said = "1 of the 3 episodes were run by an earlier part that left no provenance.json (liquid_control before "
    assert prov["earlier_part_unrecorded"].startswith(said)
    assert f"- Earlier part unrecorded: {said}" in (tmp_path / "report.md").read_text()


def test_a_bag_run_of_older_code_resumes_and_a_changed_data_setting_is_named(tmp_path):
    """Before: a run from bags of before the node's reorder_lag_s was read (1b658c52: its data.yaml has no
    spec.limits.reorder_lag_s; checked on a run made at 1a31a611) was refused by --resume as 'trained on other bags
    or data settings', naming nothing, though nothing had changed; a real change was not named either."""
    from test_bags import CAMERA_ONLY, _steady_bag

    data = {
        "bags": [_steady_bag(tmp_path / "drive", 0.07, 30)],
        "validation": [_steady_bag(tmp_path / "held", 0.07, 20)],
    }
    whole = load_policy(trainer.train(CAMERA_ONLY, tmp_path / "whole", data=data, **QUIET).policy_path)

    def killed_after_the_first_epoch(message):
        if message.startswith("epoch 1/2: loss"):
            raise KeyboardInterrupt

    for name in ("older", "changed"):
        with pytest.raises(KeyboardInterrupt):
            trainer.train(CAMERA_ONLY, tmp_path / name, data=data, progress=False, log=killed_after_the_first_epoch)
        recorded = yaml.safe_load((tmp_path / name / "data.yaml").read_text())
        assert recorded["spec"]["limits"].pop("reorder_lag_s") is None  # as the older version wrote it
        if name == "changed":
            recorded["spec"]["label"]["max_wait_s"] = 0.7
        (tmp_path / name / "data.yaml").write_text(yaml.safe_dump(recorded, sort_keys=False))
    resumed = load_policy(trainer.train(None, tmp_path / "older", resume=True, **QUIET).policy_path)
    assert all(torch.equal(value, resumed.state_dict()[key]) for key, value in whole.state_dict().items())
    with pytest.raises(
        trainer.TrainingError,
        match=r"trained on other bags or data settings \(keys that differ: "
        r"spec.label.max_wait_s\)",
    ):
        trainer.train(CAMERA_ONLY, tmp_path / "changed", data=data, resume=True, **QUIET)


@pytest.mark.parametrize(
    "command, threads",
    [
        ("liquid-control train --config c.yaml --out run", 1),  # the option's default since training began
        ("liquid-control train --config c.yaml --out run --threads 2", 2),
        ("/venv/bin/liquid-control train --out run --thr=3", 3),  # argparse takes a prefix
        ("liquid-control eval --experiment headline (training cfc, seed 0)", None),
        (None, None),  # a run through the Python API
    ],
)
def test_the_threads_of_a_recorded_train_command(command, threads):
    assert trainer.threads_of_command(command) == threads


def test_a_run_of_before_the_thread_count_was_recorded_resumes_on_its_commands_count(tmp_path, monkeypatch):
    """Before: its checkpoint holds no thread count, so `--resume --threads 2` of a run started on one thread (its
    command had no --threads) went on on two without a word and recorded 2 for the whole run: the resume on its true
    count was then refused. Now the count comes from the run's recorded command line."""
    config = tiny_config()
    _killed_run(tmp_path / "run", monkeypatch, config)
    path = tmp_path / "run" / "checkpoint.pt"
    checkpoint = torch.load(path, weights_only=False)
    assert checkpoint.pop("threads") == 1
    checkpoint["command"] = "liquid-control train --config c.yaml --out run"  # as the CLI recorded it: no --threads
    torch.save(checkpoint, path)
    before = path.read_bytes()
    refusal = r"trained with threads \(--threads\) 1; resume it with --threads 1"
    with pytest.raises(trainer.TrainingError, match=refusal):
        trainer.train(None, tmp_path / "run", resume=True, threads=2, **QUIET)
    assert path.read_bytes() == before  # refused before anything was written
    said = []
    trainer.train(None, tmp_path / "run", resume=True, progress=False, log=said.append)
    assert not any("does not say how many threads" in line for line in said), said
