"""Policy config files: a key given twice and a learning rate that trains nothing are refused, naming the key."""

import pytest
import yaml

from liquid_control.paths import policies_dir
from liquid_control.policy import PolicyConfigError, load_config, validate_config
from liquid_control.policy.config import apply_overrides

ROVER = policies_dir() / "configs" / "cfc_rover.yaml"
BALANCE_NAV = policies_dir() / "configs" / "cfc_balance_nav.yaml"


def test_a_key_given_twice_is_refused_naming_the_file_and_the_key_path(tmp_path, capsys):
    """Before: PyYAML kept the last `lr` silently, so the run trained at 5 whatever the author meant."""
    text = ROVER.read_text().replace("training:\n", "training:\n  lr: 0.002\n  lr: 5\n", 1)
    assert "lr: 5" in text
    twice = tmp_path / "twice.yaml"
    twice.write_text(text)
    with pytest.raises(PolicyConfigError, match=r"twice.yaml: training.lr \(lines \d+ and \d+\): key given twice"):
        load_config(twice)
    nested = tmp_path / "nested.yaml"
    nested.write_text(ROVER.read_text() + "data:\n  bags: [a]\n  window: 8\n  window: 16\n")
    from liquid_control import cli

    argv = ["train", "--config", str(nested), "--out", str(tmp_path / "run"), "--no-progress"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "nested.yaml: data.window (lines" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("lr", [0.0, -0.001])
def test_a_learning_rate_that_trains_nothing_is_refused(lr):
    """Before: training.lr 0 (or below) was accepted and the run trained for hours without learning."""
    cfg = yaml.safe_load(ROVER.read_text())
    cfg.setdefault("training", {})["lr"] = lr
    with pytest.raises(PolicyConfigError, match=rf"training.lr: must be > 0.0, got {lr}"):
        validate_config(cfg)
    cfg["training"]["lr"], cfg["training"]["lr_final"] = 1e-3, 0.0  # decaying to 0 is fine
    assert validate_config(cfg)["training"]["lr_final"] == 0.0


def test_invalid_yaml_is_one_line_naming_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(PolicyConfigError) as err:
        load_config(bad)
    assert "bad.yaml: not valid YAML:" in str(err.value) and "\n" not in str(err.value)


def test_aliases_of_aliases_are_checked_once_and_deep_nesting_is_refused_naming_the_file(tmp_path):
    """Before: the repeated-key walk re-entered every alias, so ~500 bytes of aliases of aliases (each ten of the
    last, nine levels) kept `load_config` busy for hours; brackets nested thousands deep raised a bare
    RecursionError naming nothing (in policy configs, `--set` values and node parameter files alike)."""
    import threading

    from liquid_control.bags.stream import load_node_parameters
    from liquid_control.training.cli import parse_overrides

    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\nname: *l8\n")
    done = []

    def load():
        with pytest.raises(PolicyConfigError, match=r"bomb.yaml: not valid YAML: aliases expand"):
            load_config(bomb)
        done.append(True)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(60.0)  # not a timing assertion: the old walk needs ~10^9 steps, this one ~100
    assert done, "load_config still walking the aliases after a minute"
    deep = "[" * 5000 + "]" * 5000
    (tmp_path / "deep.yaml").write_text(f"name: {deep}\n")
    with pytest.raises(PolicyConfigError, match=r"deep.yaml: not valid YAML: nested too deeply"):
        load_config(tmp_path / "deep.yaml")
    (tmp_path / "params.yaml").write_text(f"policy_node:\n  ros__parameters:\n    x: {deep}\n")
    with pytest.raises(ValueError, match=r"params.yaml: cannot read the policy_node parameter file: nested too"):
        load_node_parameters(tmp_path / "params.yaml")
    with pytest.raises(ValueError, match=r"--set 'core.units=\[\[\[.*not valid YAML: nested too deeply"):
        parse_overrides([f"core.units={deep}"])


def test_aliases_expanding_a_value_of_a_known_key_are_refused_naming_the_file(tmp_path):
    """Before: a billion laughs under a key the config has (`name:`, `training:`) loaded as shared objects and the
    refusal of its value (`expected a string, got [[...` with every alias written out) expanded them all:
    MemoryError at nine levels, a message of megabytes at six. Aliases repeating more than 100,000 nodes are now
    refused as the YAML is read, for configs, `--set` values and node parameter files alike."""
    from liquid_control.bags.stream import load_node_parameters
    from liquid_control.training.cli import parse_overrides
    from liquid_control.yaml_numbers import load_yaml

    levels = ["  - &l0 [x, x, x, x, x, x, x, x, x, x]"]  # 10^6 x's: a few seconds and ~100 MB on the old code
    levels += [f"  - &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 6)]
    config = yaml.safe_load(ROVER.read_text())
    del config["name"]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(yaml.safe_dump(config) + "name:\n" + "\n".join(levels) + "\n")
    with pytest.raises(PolicyConfigError) as refused:
        load_config(bomb)
    assert str(refused.value).startswith(f"{bomb}: not valid YAML: aliases expand")
    assert len(str(refused.value)) < 300
    with pytest.raises(ValueError, match=r"the value is not valid YAML: aliases expand") as refused:
        parse_overrides(["core.units=[" + ", ".join(line[4:] for line in levels) + "]"])
    assert len(str(refused.value)) < 1000
    params = tmp_path / "params.yaml"
    params.write_text("policy_node:\n  ros__parameters:\n    joint_names:\n" + "\n".join("  " * 2 + x for x in levels))
    with pytest.raises(ValueError, match=r"params.yaml: cannot read the policy_node parameter file: aliases expand"):
        load_node_parameters(params)
    with pytest.raises(yaml.YAMLError, match=r"an alias inside the node it names \(line 2\)"):
        load_yaml("name: x\ntraining: &t\n  sub: *t\n")
    assert load_yaml("a: &a {lr: 1e-3}\nb: *a\nc: {<<: *a, x: 1}\n") == {  # ordinary anchors still read
        "a": {"lr": 0.001},
        "b": {"lr": 0.001},
        "c": {"lr": 0.001, "x": 1},
    }


@pytest.mark.parametrize("key, value", [("camera", []), ("camera", 0), ("vectors", False), ("vectors", "")])
def test_an_encoder_section_that_is_not_a_mapping_is_refused(key, value):
    """Before: `encoder: {camera: []}` (or 0, false, "") passed as the defaults; only absent or null means that."""
    cfg = yaml.safe_load(BALANCE_NAV.read_text())
    cfg["encoder"][key] = value
    with pytest.raises(PolicyConfigError, match=rf"encoder.{key}: expected a mapping, got {type(value).__name__}"):
        validate_config(cfg)
    cfg["encoder"][key] = None
    assert validate_config(cfg)["encoder"][key] == validate_config({**cfg, "encoder": {}})["encoder"][key]


def test_a_final_learning_rate_above_the_first_is_refused():
    """Before: lr 1e-4 under the shipped lr_final 3e-4 made the "decayed" rate rise 1e-4 -> 3e-4, silently."""
    cfg = yaml.safe_load(ROVER.read_text())
    with pytest.raises(PolicyConfigError, match=r"training.lr_final: 0.0003 is above training.lr 0.0001; .* set"):
        apply_overrides(validate_config(cfg), {"training.lr": 1e-4})
    assert apply_overrides(validate_config(cfg), {"training.lr": 3e-4})["training"]["lr"] == 3e-4  # constant: fine


@pytest.mark.parametrize(
    "dotted, message",
    [
        (
            "trainng.lr",
            "the config has no section 'trainng' (its sections: observation, encoder, core, action, training",
        ),
        ("encoder.cam.features", "encoder has no section 'cam' (its sections: camera, vectors)"),
        ("core.foo.bar", "core has no section 'foo' (it holds values only)"),
        ("training.lr.x", "'lr' is a value, not a section"),
    ],
)
def test_a_set_through_a_missing_section_names_the_sections_there(dotted, message):
    """Before: only "'trainng' is not a section", leaving the user to find the spelling in the file."""
    cfg = validate_config(yaml.safe_load(ROVER.read_text()))
    with pytest.raises(PolicyConfigError) as refused:
        apply_overrides(cfg, {dotted: 1})
    assert str(refused.value).startswith(f"override {dotted!r}: {message}")


def test_a_section_given_whole_in_set_is_merged_key_by_key():
    """Before: `--set "training={demonstrations: 2}"` replaced the section with the defaults, dropping the config
    file's values and every earlier `--set training.*`."""
    cfg = validate_config(yaml.safe_load(ROVER.read_text()))
    merged = apply_overrides(cfg, {"training.epochs_first": 3, "training": {"demonstrations": 2}})
    assert merged["training"]["demonstrations"] == 2 and merged["training"]["epochs_first"] == 3
    assert {k: v for k, v in merged["training"].items() if k not in ("demonstrations", "epochs_first")} == {
        k: v for k, v in cfg["training"].items() if k not in ("demonstrations", "epochs_first")
    }
    nav = validate_config(yaml.safe_load((policies_dir() / "configs" / "cfc_balance_nav.yaml").read_text()))
    assert nav["observation"]["vectors"] == {"imu": 6, "wheels": 2}
    # a review: below the top level a mapping can be data (sensor names), which the value replaces
    assert apply_overrides(nav, {"observation.vectors": {"imu": 6}})["observation"]["vectors"] == {"imu": 6}
    assert apply_overrides(nav, {"observation": {"vectors": {"imu": 6}}})["observation"]["vectors"] == {"imu": 6}
    # a section below the top merged too (a probe of the config surface: encoder.camera={normalize: instance} reset
    # the camera network to the schema's [8, 16, 16] channels and 32 features; observation.image={height: 32} set
    # the width to 64), given dotted or inside its section
    for overrides in (
        {"encoder.camera": {"normalize": "instance"}},
        {"encoder": {"camera": {"normalize": "instance"}}},
    ):
        camera = apply_overrides(nav, overrides)["encoder"]["camera"]
        assert camera == dict(nav["encoder"]["camera"], normalize="instance"), camera
    assert apply_overrides(nav, {"observation.image": {"height": 24}})["observation"]["image"]["width"] == 32


def test_set_applies_its_items_in_the_order_given():
    """Before: a key given again kept the place it was first given, so `--set training.lr=0.001 --set
    "training={lr: 0.003}" --set training.lr=0.0005` trained at 0.003, the section applied last."""
    from liquid_control.training.cli import parse_overrides

    cfg = validate_config(yaml.safe_load(ROVER.read_text()))
    overrides = parse_overrides(["training.lr=0.001", "training={lr: 0.003}", "training.lr=0.0005"])
    assert apply_overrides(cfg, overrides)["training"]["lr"] == 0.0005


@pytest.mark.parametrize(
    "core, match",
    [
        # Before: validation passed and Policy.from_config failed in the cells ("output_size must be < units - 2")
        ({"wiring": "ncp", "units": 4}, r"core.units: 2 motor neurons \(action.size\) leave too few of 4 units"),
        ({"type": "ltc", "wiring": "ncp", "units": 4}, r"core.units: 2 motor neurons"),
        ({"wiring": "ncp", "units": 8, "outputs": 6}, r"core.outputs: 6 motor neurons \(core.outputs\)"),
        # Before: numpy's bare "Seed must be between 0 and 2**32 - 1" when the NCP was drawn
        ({"wiring": "ncp", "units": 16, "seed": -5}, r"core.seed: the NCP wiring's seed must be in \[0, 4294967295\]"),
        (
            {"wiring": "ncp", "units": 16, "seed": 2**40},
            r"core.seed: the NCP wiring's seed must be in \[0, 4294967295\]",
        ),
    ],
)
def test_an_ncp_the_cells_cannot_draw_is_refused_at_validation_naming_the_key(core, match):
    cfg = yaml.safe_load(BALANCE_NAV.read_text())
    cfg["core"].update(backbone_units=None, **core)
    with pytest.raises(PolicyConfigError, match=match):
        validate_config(cfg)


def test_a_smallest_ncp_and_the_seed_range_ends_still_validate_and_build():
    from liquid_control.policy import Policy

    cfg = yaml.safe_load(BALANCE_NAV.read_text())
    for seed in (0, 2**32 - 1):
        cfg["core"].update(backbone_units=None, wiring="ncp", units=5, seed=seed)
        Policy.from_config(validate_config(cfg))


def test_a_camera_encoder_without_convolutions_is_refused_naming_the_key():
    """Before: validation passed and Policy.from_config raised a bare IndexError (list index out of range)."""
    cfg = yaml.safe_load(BALANCE_NAV.read_text())
    cfg["encoder"]["camera"].update(channels=[], kernel_sizes=[], strides=[])
    with pytest.raises(PolicyConfigError, match=r"encoder.camera.channels: .* at least one convolution"):
        validate_config(cfg)
    cfg["observation"] = {"vectors": {"imu": 6}, "update_on": "imu"}  # no camera: its encoder is not built
    validate_config(cfg)


def test_an_update_sensor_the_world_lacks_is_named_with_the_inputs_that_can_update():
    """Before: update_on [camera, wheels] on LiquidBalanceNav-v0 said only "no sensor 'wheels' (sensors: camera, imu,
    encoders)", and update_on [camera, encoders] then "'encoders' is not an input of this policy": each error sent
    the author to the other. Now the first says which of the policy's inputs can trigger updates."""
    from liquid_control.policy import check_world

    cfg = yaml.safe_load(BALANCE_NAV.read_text())
    cfg["observation"]["update_on"] = ["camera", "encoders"]
    with pytest.raises(PolicyConfigError, match=r"update_on\[1\]: 'encoders' is not an input of this policy"):
        validate_config(cfg)
    cfg["observation"]["update_on"] = ["camera", "wheels"]
    cfg = validate_config(cfg)
    with pytest.raises(PolicyConfigError) as err:
        check_world(cfg, ("camera", "imu", "encoders"), ("image", "imu", "wheels"))
    assert str(err.value) == (
        "observation.update_on[1]: world LiquidBalanceNav-v0 has no sensor 'wheels' whose messages could trigger "
        "updates (sensors: camera, imu, encoders); of this policy's inputs, these can: camera, imu ('wheels' is an "
        "observation of the world, held between updates)"
    )


def test_a_number_in_scientific_notation_is_a_number_in_a_config_file_and_in_set(tmp_path):
    """Before: PyYAML (YAML 1.1) read `lr: 3e-4` as the string '3e-4' and validation refused it with
    "training.lr: expected a number, got '3e-4'"; likewise `--set training.lr=1e-3`."""
    from liquid_control.training.cli import parse_overrides

    path = tmp_path / "sci.yaml"
    text = (
        ROVER.read_text()
        .replace("  lr: 0.002\n", "  lr: 3e-4\n")
        .replace("  lr_final: 0.0003\n", "  lr_final: .5E-5\n")
    )
    assert "3e-4" in text and ".5E-5" in text
    path.write_text(text)
    cfg = load_config(path)
    assert cfg["training"]["lr"] == 3e-4 and cfg["training"]["lr_final"] == 0.5e-5
    assert parse_overrides(["training.lr=1e-3", "name=1e3x", "core.units=24"]) == {
        "training.lr": 1e-3,
        "name": "1e3x",
        "core.units": 24,
    }
    with pytest.raises(PolicyConfigError, match=r"core.units: expected an integer, got 100.0"):
        validate_config(dict(yaml.safe_load(ROVER.read_text()), core={"type": "cfc", "units": 1e2}))
    # integers as ROS reads them (a probe of the config surface: YAML 1.1 read 1:30 as 90 and 1_000 as 1000, which
    # a node given the file reads as strings; 010 is octal 8 for both, as C's strtol has it)
    assert parse_overrides(["training.epochs_first=010", "a=0o10", "b=0x1f", "c=1:30", "d=1_000"]) == {
        "training.epochs_first": 8, "a": "0o10", "b": 31, "c": "1:30", "d": "1_000"
    }  # fmt: skip


ROS_NUMBERS = {  # what rclpy's --params-file (rcl's YAML parser) gives for each text, measured 2026-12-07 (Kilted)
    "010": 8, "0o10": "0o10", "0x1f": 31, "0X1F": 31, "1:30": "1:30", "1_000": "1_000", "09": 9.0, "-010": -8,
    "1_000.5": "1_000.5", "1:30.5": "1:30.5", "1e3": 1000.0, "1.": 1.0, ".5": 0.5, "+7": 7, "0": 0, "00": 0,
    "1e-3": 0.001, ".inf": float("inf"),
}  # fmt: skip


def test_numbers_read_as_ros_reads_a_parameter_file(tmp_path):
    """Every config and parameter file is read with load_yaml, whose numbers must be what a node given the same file
    gets (its checks of a robot's parameter file, the bag runs' data settings): the node itself is the oracle here."""
    from liquid_control.yaml_numbers import load_yaml

    assert load_yaml("\n".join(f"k{i}: {text}" for i, text in enumerate(ROS_NUMBERS))) == {
        f"k{i}": value for i, value in enumerate(ROS_NUMBERS.values())
    }
    rclpy = pytest.importorskip("rclpy")
    from rclpy.context import Context

    from liquid_control.ros.testing import free_domain_id

    path = tmp_path / "numbers.yaml"
    path.write_text("/**:\n  ros__parameters:\n" + "".join(f"    k{i}: {t}\n" for i, t in enumerate(ROS_NUMBERS)))
    context = Context()
    rclpy.init(args=["--ros-args", "--params-file", str(path)], context=context, domain_id=free_domain_id())
    try:
        node = rclpy.create_node("numbers", context=context, automatically_declare_parameters_from_overrides=True)
        read = {text: node.get_parameter(f"k{i}").value for i, text in enumerate(ROS_NUMBERS)}
        node.destroy_node()
    finally:
        context.try_shutdown()
    assert read == ROS_NUMBERS


@pytest.mark.parametrize(
    "core, match",
    [
        (
            {"type": "ltc", "units": 8, "backbone_units": 64},
            r"core.backbone_units: 64 would be ignored, it applies to ",
        ),
        ({"type": "cfc", "units": 8, "wiring": "ncp", "backbone_units": 64}, r"core.backbone_units: 64 would be"),
        (
            {"type": "lstm", "units": 8, "mode": "pure"},
            r"core.mode: 'pure' would be ignored, it applies to core.type cfc",
        ),
        ({"type": "cfc", "units": 8, "solver": "rk4"}, r"core.solver: 'rk4' would be ignored"),
        ({"type": "cfc", "units": 8, "unfolds": 2}, r"core.unfolds: 2 would be ignored"),
        ({"type": "gru", "units": 8, "frames": 8}, r"core.frames: 8 would be ignored"),
        ({"type": "cfc", "units": 8, "outputs": 3}, r"core.outputs: 3 would be ignored, it applies to wiring ncp"),
        ({"type": "cfc", "units": 8, "seed": 7}, r"core.seed: 7 would be ignored, it applies to wiring ncp"),
    ],
)
def test_a_core_key_of_another_core_type_is_refused_instead_of_ignored(core, match):
    """Before: each of these validated and built a model that never read the key (an LTC with backbone_units: 64
    trained as the plain LTC), so the author's setting silently had no effect."""
    cfg = yaml.safe_load(ROVER.read_text())
    cfg["core"] = core
    with pytest.raises(PolicyConfigError, match=match):
        validate_config(cfg)


def test_core_keys_left_at_their_defaults_or_applying_still_validate():
    cfg = yaml.safe_load(ROVER.read_text())
    for core in (
        {"type": "lstm", "units": 8, "mode": "default", "solver": "semi_implicit", "unfolds": 6, "seed": 22222},
        {"type": "ltc", "units": 8, "wiring": "ncp", "solver": "rk4", "unfolds": 2, "outputs": 2, "seed": 3},
        {"type": "gru_ode", "units": 8, "unfolds": 4},
        {"type": "tcn", "units": 8, "frames": 8},
    ):
        cfg["core"] = core
        validate_config(cfg)


def test_camera_recipes_on_a_policy_without_a_camera_are_refused():
    """Before: training.augmentation [brightness, noise] or encoder.camera.normalize: frame on the IMU-only balancer
    validated, did nothing, and the model card still listed the recipes."""
    cfg = yaml.safe_load((policies_dir() / "configs" / "cfc_balancer.yaml").read_text())
    validate_config(cfg)
    with pytest.raises(PolicyConfigError, match=r"training.augmentation: \['brightness', 'noise'\] perturbs camera"):
        validate_config(dict(cfg, training=dict(cfg["training"], augmentation=["brightness", "noise"])))
    with pytest.raises(PolicyConfigError, match=r"encoder.camera.normalize: 'frame' standardises camera frames"):
        validate_config(dict(cfg, encoder=dict(cfg["encoder"], camera={"normalize": "frame"})))
    with pytest.raises(PolicyConfigError, match=r"encoder.camera.instance_norm_layers: 1 normalises the camera CNN"):
        validate_config(dict(cfg, encoder=dict(cfg["encoder"], camera={"instance_norm_layers": 1})))


def test_a_policy_file_whose_config_has_settings_without_effect_still_loads(tmp_path):
    """The checks for settings that do nothing (a key of another core type, camera recipes without a camera) are
    for configs being written: a policy trained before them, with such a setting, still loads."""
    import torch

    from liquid_control.policy import Policy, load_policy, save_policy

    cfg = yaml.safe_load((policies_dir() / "configs" / "cfc_balancer.yaml").read_text())
    cfg["core"] = {"type": "ltc", "units": 8}
    path = save_policy(tmp_path / "old.pt", Policy.from_config(cfg))
    payload = torch.load(path, weights_only=False)
    payload["config"]["core"].update(backbone_units=64, seed=-1)
    payload["config"]["training"]["augmentation"] = ["noise"]
    torch.save(payload, path)
    with pytest.raises(PolicyConfigError, match=r"core.seed: -1 would be ignored"):
        validate_config(payload["config"])
    assert load_policy(path).config["core"]["backbone_units"] == 64


@pytest.mark.parametrize("key", ["camera", "image", "image_index", "dt", "event", "ages", ""])
def test_a_vector_input_named_like_the_camera_or_a_time_input_is_refused(key):
    """Before: accepted; the runtime's sensors then had 'camera': (3,) in place of the image (or a vector 'image'
    replaced the frame in the observation dict, 'dt'/'event'/'ages' the time inputs)."""
    cfg = yaml.safe_load(BALANCE_NAV.read_text())
    cfg["observation"]["vectors"][key] = 3
    with pytest.raises(PolicyConfigError, match=rf"observation.vectors.{key}: '{key}' cannot name a vector input"):
        validate_config(cfg)


def test_a_policys_world_waits_for_the_inputs_its_node_waits_for():
    """The policy layer (env_kwargs' policy_inputs, what training's and evaluation's worlds wait for) and the runtime
    (ObservationSpec.sensors, what the node's PolicyRunner and sim_node's policy_inputs wait for) each list a
    policy's inputs; they must agree for every shipped config."""
    from liquid_control.policy.config import env_kwargs
    from liquid_control.runtime.backends import BackendError, ObservationSpec

    compared = 0
    for path in sorted((policies_dir() / "configs").glob("*.yaml")):
        cfg = load_config(path)
        try:
            spec = ObservationSpec.from_config(cfg)
        except BackendError:  # e.g. a resampling baseline: simulated evaluation only, no node runs it
            continue
        assert env_kwargs(cfg)["policy_inputs"] == tuple(spec.sensors), path.name
        compared += 1
    assert compared >= 10


def test_an_empty_beta_for_dagger_rounds_and_an_augmentation_named_twice_are_refused():
    """Before: `beta: []` with DAgger rounds was read as [0.0] (every round driven by the policy alone, nowhere
    documented), and `augmentation: [noise, noise]` validated while the noise was applied once, as with one."""
    cfg = yaml.safe_load(ROVER.read_text())
    with pytest.raises(PolicyConfigError, match=r"^training.beta: \[\] gives the 4 DAgger round\(s\) .* no expert"):
        validate_config(dict(cfg, training=dict(cfg["training"], beta=[])))
    assert validate_config(dict(cfg, training=dict(cfg["training"], beta=[], dagger_rounds=0)))["training"]["beta"]
    twice = dict(cfg["training"], augmentation=["noise", "blur", "noise"])
    with pytest.raises(PolicyConfigError, match=r"^training.augmentation: 'noise' named twice; each kind is applied"):
        validate_config(dict(cfg, training=twice))
    assert validate_config(dict(cfg, training=twice), strict=False)["training"]["augmentation"] == twice["augmentation"]


def test_a_set_into_a_section_left_null_sets_that_key():
    """Before: `--set training.yaw_recovery.gain=1.667` (docs/training.md names the keys so) was refused with
    "'yaw_recovery' is a value, not a section", because the section is null until given."""
    cfg = validate_config(yaml.safe_load(ROVER.read_text()))
    assert cfg["training"]["yaw_recovery"] is None
    sets = {
        "training.augmentation": ["yaw"],
        "training.yaw_recovery.gain": 1.667,
        "training.yaw_recovery.hfov_deg": 100,
    }
    yaw = apply_overrides(cfg, sets)["training"]["yaw_recovery"]
    assert (yaw["gain"], yaw["hfov_deg"], yaw["max_deg"]) == (1.667, 100.0, 15.0)  # the rest: the defaults
    with pytest.raises(PolicyConfigError, match=r"^training.yaw_recovery.hfov_deg: missing \(required\)$"):
        apply_overrides(cfg, {"training.augmentation": ["yaw"], "training.yaw_recovery.gain": 1.667})


def test_an_integer_of_more_digits_than_python_converts_is_refused_naming_the_file_line_and_set_item(tmp_path):
    """Before: a config value of 5000 digits (past sys.get_int_max_str_digits) ended `train` with Python's own
    'Exceeds the limit (4300 digits) for integer string conversion', naming neither the file nor the line; a
    --set item of the same was printed whole in its refusal."""
    from liquid_control.training.cli import parse_overrides

    digits = "9" * 5000
    config = tmp_path / "huge.yaml"
    config.write_text(ROVER.read_text().replace("units: 32", f"units: {digits}", 1))
    assert digits in config.read_text()
    with pytest.raises(PolicyConfigError) as refused:
        load_config(config)
    message = str(refused.value)
    assert message.startswith(f"{config}: not valid YAML: an integer of 5000 digits: more than Python converts")
    assert "at line " in message and len(message) < 300
    with pytest.raises(
        ValueError, match=r"^--set 'core\.units=9{988}\.\.\. \(5011 characters\): the value is not"
    ) as s:
        parse_overrides([f"core.units={digits}"])
    assert len(str(s.value)) < 1500
    with pytest.raises(ValueError, match=r"the value is not valid YAML: not an integer: 'abc' at line 1"):
        parse_overrides(["core.units=!!int abc"])  # not the digit limit, which nothing here reaches
    with pytest.raises(ValueError, match=r"the value is not valid YAML: not an integer: '' at line 1"):
        parse_overrides(["core.units=!!int ''"])  # was an IndexError from PyYAML


@pytest.mark.parametrize(
    "setting, says",
    [
        ("core.units=" + "9" * 4000, "core.units: 999"),  # within Python's digit limit: above the size bound
        ("training.lr=1" + "0" * 400, "training.lr: expected a number, got 1000"),  # was an OverflowError traceback
        ("name=" + "x" * 3000, None),  # a string where a name goes: fine, however long
        ("core.type=" + "x" * 3000, "core.type: unknown value 'xxx"),
    ],
)
def test_a_refused_config_value_is_shown_cut_short(setting, says):
    """Before: the refusal printed the value whole (a 4254-character message for 4000 digits), and a learning
    rate of 400 digits ended in an OverflowError traceback (float() past a float's range)."""
    from liquid_control.training.cli import parse_overrides

    def load():
        return validate_config(apply_overrides(yaml.safe_load(ROVER.read_text()), parse_overrides([setting])))

    if says is None:
        load()
        return
    with pytest.raises(PolicyConfigError) as refused:
        load()
    assert str(refused.value).startswith(says) and "characters)" in str(refused.value)
    assert len(str(refused.value)) < 400


def test_a_value_shown_in_an_error_is_cut_to_a_readable_length():
    from liquid_control.shown import shown

    assert shown("short") == "'short'" and shown([1, 2]) == "[1, 2]"
    assert shown("x" * 100) == "'" + "x" * 59 + "... (100 characters)"  # the string's length
    assert shown(list(range(100))).endswith("... (390 characters)")  # the repr's length
    assert shown([10**5000]) == "a list holding an integer too long to print"
    # a cut never splits an escape: 14 whole \x00 after the quote (57 characters), not a 15th cut to '\x0'
    assert shown("\x00" * 100) == "'" + "\\x00" * 14 + "... (100 characters)"
    assert shown("a\\" * 50) == "'" + "a\\\\" * 19 + "a... (100 characters)"
    assert shown("x" * 100, 200) == repr("x" * 100)
    assert shown(10**5000) == "an integer of about 5001 digits"  # its repr raises past 4300 digits
    assert shown(-(10**4999)) == "an integer of about 5000 digits"


@pytest.mark.parametrize(
    "size, kernels, strides",
    [((64, 64), [5, 3, 3], [2, 2, 2]), ((32, 32), [5, 3], [2, 2]), ((48, 64), [5, 3, 3], [2, 2, 2]),
     ((64, 64), [6, 4, 4], [2, 2, 2]), ((50, 37), [4, 3], [3, 2])],
)  # fmt: skip
def test_the_pixels_the_camera_convolutions_never_see_are_counted_as_autograd_finds_them(size, kernels, strides):
    """A saliency audit: the shipped CNN (kernels 5/3/3, stride 2) never sees the bottom 7 rows and right 7 columns
    of a 64x64 frame (21% of it: painting them white changed no action), which training now warns of. Counted
    against the gradient of the convolutions' output w.r.t. each input pixel."""
    import torch

    from liquid_control.policy.config import unseen_margins
    from liquid_control.policy.encoders import CameraEncoder

    torch.manual_seed(0)
    encoder = CameraEncoder(*size, [4] * len(kernels), kernels, strides, 8)
    x = torch.rand(1, 3, *size, requires_grad=True)
    encoder.conv(x).abs().sum().backward()
    reached = x.grad.abs().sum(dim=(0, 1)) > 0
    rows = int((~reached.any(dim=1)).flip(0).cumprod(0).sum())  # trailing rows no output depends on
    cols = int((~reached.any(dim=0)).flip(0).cumprod(0).sum())
    assert unseen_margins(*size, kernels, strides) == (rows, cols)


def test_training_warns_of_a_camera_encoder_blind_at_the_frames_edges():
    from liquid_control.training.trainer import camera_blind_strip_note

    config = validate_config(load_config(policies_dir() / "configs" / "cfc_ncp_rover.yaml"))
    note = camera_blind_strip_note(config)
    assert note.startswith("warning: encoder.camera: its convolutions (kernel_sizes [5, 3, 3], strides [2, 2, 2])")
    assert "never see the last 7 rows and 7 columns of the 64x64 frame (21% of its pixels" in note
    config["encoder"]["camera"]["normalize"] = "instance"  # the strip then counts in the frame's statistics
    assert "(with encoder.camera.normalize, only through the frame's statistics)" in camera_blind_strip_note(config)
    config["encoder"]["camera"]["kernel_sizes"] = [6, 4, 4]
    assert camera_blind_strip_note(config) is None
    config["encoder"]["camera"].update(channels=[8], kernel_sizes=[2], strides=[3])  # 65 -> 22, every 3rd row unseen
    config["observation"]["image"] = {"height": 65, "width": 65}
    assert "skip pixels between their windows (a kernel below its stride)" in camera_blind_strip_note(config)
