"""Policy configuration: one YAML file describes a policy (and, optionally, how to train it).

The file is validated here, once, against an explicit schema: unknown keys, wrong types and values out of
range raise :class:`PolicyConfigError` naming the key path and the valid choices, so a typo in a config
never silently trains the wrong model. Validation returns a *complete* plain dict (defaults filled in) that
is embedded in every checkpoint, so a checkpoint rebuilds exactly the model it was trained as.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

import yaml

from liquid_control.shown import control_character_at, did_you_mean, shown
from liquid_control.yaml_numbers import TooDeepError, load_yaml

CORE_TYPES = ("cfc", "ltc", "ctrnn", "gru_ode", "lstm", "gru", "tcn", "mlp")
CONTINUOUS_CORES = ("cfc", "ltc", "ctrnn", "gru_ode")  # the cores that integrate dt (the others ignore it)
WIRINGS = ("none", "ncp")
ACTION_KINDS = ("twist", "wheel_torques")
# photometric and geometric image augmentations (liquid_control.training.augment; ranges documented there)
AUGMENTATIONS = ("brightness", "contrast", "gamma", "colour", "noise", "blur", "shift", "gradient", "mirror", "yaw")
# liquid_control.policy.encoders.CameraEncoder
CAMERA_NORMALIZATIONS = ("none", "frame", "instance", "chromaticity", "chromaticity_brightness", "retinex")
LOG_NORMALIZATIONS = ("chromaticity", "chromaticity_brightness", "retinex")  # those that take each pixel's log
TIMING_INPUTS = ("event", "ages")  # time inputs of the core besides dt (see Policy)
CAMERA = "camera"  # the sensor name of the image input
SEQUENCE_KERNELS = ("fused", "stepwise")
BATCHINGS = ("random", "length")  # training.batching: which episodes share a batch (training.bc.epoch_batches)
# names of the observation dict that are not vector inputs: the camera (sensor and reading), dt and time inputs
RESERVED_INPUT_NAMES = (CAMERA, "image", "image_index", "dt") + TIMING_INPUTS


class PolicyConfigError(ValueError):
    """A policy config that is not valid; the message names the key path and the problem."""


# Size bounds. Configs arrive from files we did not write (a downloaded checkpoint embeds its config), and a
# few bytes of config can ask for minutes of CPU and gigabytes of memory (core.units: 20000 builds an NCP of
# 400 million synapses). Every size is bounded far above what these robots need (the shipped policies: 19-64
# units, ~35k-240k parameters); a legitimately larger policy sets LIQUID_CONTROL_ALLOW_LARGE_POLICIES=1.
ALLOW_LARGE_ENV = "LIQUID_CONTROL_ALLOW_LARGE_POLICIES"
SIZE_BOUNDS = {
    "observation.image.height": 1024,
    "observation.image.width": 1024,
    "observation.vectors": 4096,  # each vector input's size
    "encoder.camera.channels": 512,  # each layer; also the number of layers below
    "encoder.camera.kernel_sizes": 31,
    "encoder.camera.strides": 31,
    "encoder.camera.features": 4096,
    "encoder.vectors.hidden": 4096,
    "encoder.vectors.features": 4096,
    "encoder.layers": 16,  # layers of each encoder
    "core.units": 1024,  # an NCP of 1024 units takes ~3 s to draw and build
    "core.backbone_units": 4096,
    "core.unfolds": 64,
    "core.frames": 64,
    "action.size": 64,
    "parameters": 50_000_000,  # estimated trainable parameters of the whole policy (200 MB of float32)
}


def large_policies_allowed() -> bool:
    """Whether ``LIQUID_CONTROL_ALLOW_LARGE_POLICIES`` is set true, lifting the size bounds on configs."""
    return os.environ.get(ALLOW_LARGE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _size_error(key: str, value, bound) -> PolicyConfigError:
    return PolicyConfigError(
        f"{key}: {shown(value)} is above the size bound {bound} for policy configs (a config can come from an "
        f"untrusted file, and one this large takes minutes and gigabytes to build); if this size is intended, set "
        f"{ALLOW_LARGE_ENV}=1"
    )


def estimated_parameters(cfg: dict) -> int:
    """Trainable parameters a validated config asks for (an upper-range estimate, computed without building it)."""
    features, total = 0, 0
    image = cfg["observation"]["image"]
    if image is not None:
        cam = cfg["encoder"]["camera"]
        h, w, c_in = image["height"], image["width"], 3
        for c_out, k, stride in zip(cam["channels"], cam["kernel_sizes"], cam["strides"]):
            total += c_in * c_out * k * k + c_out
            h, w, c_in = max(1, (h - k) // stride + 1), max(1, (w - k) // stride + 1), c_out
        total += (c_in * h * w + 3) * cam["features"]
        features += cam["features"]
    if cfg["observation"]["vectors"]:
        vec = cfg["encoder"]["vectors"]
        n = sum(cfg["observation"]["vectors"].values())
        for width in vec["hidden"] + [vec["features"]]:
            total += (n + 1) * width
            n = width
        features += vec["features"]
    core = cfg["core"]
    backbone = core["type"] == "cfc" and core["wiring"] == "none"
    width = core["units"] + ((core["backbone_units"] or 128) if backbone else 0)
    inputs = features * (core["frames"] if core["type"] == "mlp" else 1)
    per_synapse = 8 if core["type"] == "ltc" else 4  # LTC synapses: weight, sigma, mu, erev (sensory + recurrent)
    total += per_synapse * (inputs + width + 1) * width + (width + 1) * cfg["action"]["size"]
    return int(total)


def _check_sizes(cfg: dict) -> None:
    """Raise a PolicyConfigError for the first size above :data:`SIZE_BOUNDS` (unless large ones are allowed)."""
    if large_policies_allowed():
        return
    obs, enc, core = cfg["observation"], cfg["encoder"], cfg["core"]
    values = [("action.size", cfg["action"]["size"])]
    if obs["image"] is not None:
        values += [(f"observation.image.{k}", obs["image"][k]) for k in ("height", "width")]
        cam = enc["camera"]
        values += [("encoder.layers", len(cam["channels"])), ("encoder.camera.features", cam["features"])]
        for key in ("channels", "kernel_sizes", "strides"):
            values += [(f"encoder.camera.{key}", max(cam[key], default=0))]
    if obs["vectors"]:
        values += [("observation.vectors", max(obs["vectors"].values()))]
        vec = enc["vectors"]
        values += [("encoder.layers", len(vec["hidden"])), ("encoder.vectors.features", vec["features"])]
        values += [("encoder.vectors.hidden", max(vec["hidden"], default=0))]
    values += [(f"core.{k}", core[k] or 0) for k in ("units", "backbone_units", "unfolds", "frames")]
    for key, value in values:
        if value > SIZE_BOUNDS[key]:
            raise _size_error(key, value, SIZE_BOUNDS[key])
    parameters = estimated_parameters(cfg)
    if parameters > SIZE_BOUNDS["parameters"]:
        raise _size_error("parameters (estimated from the sizes)", f"{parameters:,}", f"{SIZE_BOUNDS['parameters']:,}")


class _Required:
    def __repr__(self):
        return "<required>"


REQUIRED = _Required()


def _field(kind, default=REQUIRED, *, choices=None, min_value=None, max_value=None, nullable=False, above=None):
    return {
        "kind": kind,
        "default": default,
        "choices": choices,
        "min": min_value,
        "max": max_value,
        "nullable": nullable,
        "above": above,  # exclusive lower bound (a learning rate of 0 trains nothing)
    }


# Schema: section -> key -> field.  ``kind`` is one of int, float, bool, str, int_list, float_list, dict.
_CAMERA_ENCODER = {
    "channels": _field("int_list", [8, 16, 16], min_value=1),
    "kernel_sizes": _field("int_list", [5, 3, 3], min_value=1),
    "strides": _field("int_list", [2, 2, 2], min_value=1),
    "features": _field("int", 32, min_value=1),
    "normalize": _field("str", "none", choices=CAMERA_NORMALIZATIONS),  # input standardisation (a recipe)
    "instance_norm_layers": _field("int", 0, min_value=0),  # the first N convolutions' maps normalised (a recipe)
}
_VECTOR_ENCODER = {
    "hidden": _field("int_list", [32], min_value=1),
    "features": _field("int", 16, min_value=1),
}
_CORE = {
    "type": _field("str", REQUIRED, choices=CORE_TYPES),
    "units": _field("int", 32, min_value=1),
    "outputs": _field("int", None, min_value=1, nullable=True),  # motor neurons of a wiring; default: action size
    "wiring": _field("str", "none", choices=WIRINGS),
    "mode": _field("str", "default", choices=("default", "no_gate", "pure")),  # CfC only
    "solver": _field(
        "str", "semi_implicit", choices=("semi_implicit", "euler", "midpoint", "rk4", "dopri5", "exponential")
    ),  # LTC only
    "unfolds": _field("int", 6, min_value=1),  # LTC, CT-RNN, GRU-ODE sub-steps per dt
    "frames": _field("int", 4, min_value=1),  # MLP frame stack length; TCN window (a power of two)
    "ignore_dt": _field("bool", False),  # ablation: the core integrates a constant dt = 1
    # longest single step (s) the core integrates: a longer dt is split into equal sub-steps with the input held
    # (cells.dt.substep_counts); null: every dt in one step
    "max_step": _field("float", None, min_value=1e-4, max_value=10.0, nullable=True),
    "seed": _field("int", 22222),  # seed of the random NCP wiring (0..2**32-1, numpy's range; checked with one)
    "backbone_units": _field("int", None, min_value=1, nullable=True),  # fully connected CfC; null: cells' default
}
_ACTION = {
    "size": _field("int", REQUIRED, min_value=1),
    "low": _field("float_list", REQUIRED),
    "high": _field("float_list", REQUIRED),
    "kind": _field("str", "twist", choices=ACTION_KINDS),
}
_TRAINING = {
    "demonstrations": _field("int", 60, min_value=1),  # expert-driven episodes before DAgger
    "dagger_rounds": _field("int", 4, min_value=0),
    "dagger_episodes": _field("int", 20, min_value=1),  # per round
    "beta": _field("float_list", [0.5, 0.25, 0.0], min_value=0.0, max_value=1.0),  # expert share per round
    "epochs_first": _field("int", 10, min_value=1),  # epochs on the demonstrations
    "epochs_per_round": _field("int", 4, min_value=1),  # epochs after each DAgger round
    "batch_size": _field("int", 16, min_value=1),
    "sequence_length": _field("int", 32, min_value=2),  # truncated BPTT chunk length
    # Adam moves each weight by about lr per step: above 1 a run only diverges (1e38 overflowed inside Adam)
    "lr": _field("float", 3e-3, above=0.0, max_value=1.0),
    "lr_final": _field("float", 3e-4, min_value=0.0, max_value=1.0),  # cosine-decayed over all epochs
    "weight_decay": _field("float", 0.0, min_value=0.0),
    "grad_clip": _field("float", 1.0, min_value=0.0),
    # an exponential moving average of the weights, updated after every optimizer step with this decay, drives the
    # DAgger rounds, is selected and is written to policy.pt (training.weight_average); 0: off, the weights as trained
    "ema_decay": _field("float", 0.0, min_value=0.0, max_value=0.9999),
    "eval_episodes": _field("int", 10, min_value=0),  # policy-only episodes after each round (model selection)
    "max_episode_steps": _field("int", None, min_value=1, nullable=True),  # cap on every episode (null: the world's)
    # cap on DAgger episodes only: a policy that lost the target would otherwise fill the data with minutes of
    # hopeless search whose labels (turn towards a target the camera cannot see) are unlearnable
    "dagger_max_steps": _field("int", None, min_value=1, nullable=True),
    "shift": _field("str", None, nullable=True),  # training distribution (default: the world's default)
    "augmentation": _field("str_list", [], choices=AUGMENTATIONS),  # off by default (headline comparison)
    # the `yaw` augmentation's camera and steering (synthetic recovery demonstrations; training/augment.py)
    "yaw_recovery": _field("dict", None, nullable=True),
    # timing augmentation: each training episode draws a sensor-rate factor log-uniformly from this range and a
    # jitter factor uniformly from `jitter_range` (null: the world's nominal timing); selection episodes stay nominal
    "sensor_rate_range": _field("float_list", None, nullable=True, min_value=0.1, max_value=10.0),
    "jitter_range": _field("float_list", None, nullable=True, min_value=0.0, max_value=4.0),
    # lighting randomisation: each training episode's sun comes from a direction drawn with its elevation (degrees
    # above the horizon) uniform in this range and any azimuth; its colour, strength, the ambient light and the sky
    # stay the training world's (null: the world's own sun); selection episodes keep the world's own sun
    "sun_elevation_range": _field("float_list", None, nullable=True, min_value=0.0, max_value=90.0),
    # DART (Laskey et al. 2017) against the copycat shortcut: expert-driven updates execute the expert's action
    # plus temporally correlated noise (std in action units, correlation time in seconds); labels stay clean
    "action_noise": _field("float", 0.0, min_value=0.0, max_value=1.0),
    "action_noise_tau": _field("float", 0.2, min_value=0.0, max_value=10.0),
    # how BC runs the core over a chunk: "fused" (the core's sequence kernels, compiled where available) or
    # "stepwise" (autograd on the per-step graph: how the shipped policies were trained, docs/training.md)
    "sequence_kernel": _field("str", "fused", choices=SEQUENCE_KERNELS),
    # which episodes share a batch: "random" (consecutive in a shuffle) or "length" (of similar length, so a batch's
    # last steps are not the tails of its longest episodes alone, and less is padded; training.bc.epoch_batches)
    "batching": _field("str", "random", choices=BATCHINGS),
}
# The training settings of simulated episodes: collecting them (demonstrations, the DAgger schedule, caps), the
# selection episodes, and what is varied in them (world shift, sensor timing, sun, DART noise). A run from recorded
# bags (training.bag_data) uses none of them: its files (config.yaml, checkpoint.pt, policy.pt, the ONNX export)
# leave them out, and validate_config, reading such a file, fills them in with their defaults.
SIMULATED_TRAINING_KEYS = (
    "demonstrations",
    "dagger_rounds",
    "dagger_episodes",
    "beta",
    "epochs_per_round",
    "eval_episodes",
    "max_episode_steps",
    "dagger_max_steps",
    "shift",
    "sensor_rate_range",
    "jitter_range",
    "sun_elevation_range",
    "action_noise",
    "action_noise_tau",
)
BAG_RUN_METADATA = ("training_data", "bags")  # the metadata entry of a policy file trained from recorded bags
BAG_RUN_CONFIG_NOTE = (  # the first lines of a bag run's config.yaml (since 2026-12-05)
    "# a run from recorded bags: the training settings of simulated episodes (demonstrations, the DAgger schedule,\n"
    "# the selection episodes, what the episodes vary) did not apply and are left out (docs/training.md)\n"
)
_YAW_RECOVERY = {
    "gain": _field("float", REQUIRED, above=0.0),  # turn command (action units) per radian of heading error
    "hfov_deg": _field("float", REQUIRED, above=0.0, max_value=170.0),  # the camera's horizontal field of view
    "pitch_deg": _field("float", 0.0, min_value=-60.0, max_value=60.0),  # the camera's tilt below the horizon
    "max_deg": _field("float", 15.0, above=0.0, max_value=45.0),  # heading errors drawn within +-max_deg
    "rate_hz": _field("float", 1.0, above=0.0, max_value=10.0),  # kicks per second of recording (Poisson)
    "decay_s": _field("float", 0.4, above=0.0, max_value=10.0),  # how fast the corrected command removes an error
}
_IMAGE = {"height": _field("int", 64, min_value=8), "width": _field("int", 64, min_value=8)}
_OBSERVATION = {
    "image": _field("dict", None, nullable=True),
    "vectors": _field("dict", {}),
    # sensors whose every message advances the state (camera, or a vector key); one name or a list
    "update_on": _field("str_list", REQUIRED),
    "timing": _field("str_list", [], choices=TIMING_INPUTS),  # time inputs of the core besides dt
    "reorder_lag_s": _field("float", 0.0, min_value=0.0, max_value=1.0),  # lag of the reordering buffer
    # baseline only: the core steps at this fixed rate on the latest inputs instead of on sensor messages
    "resample_hz": _field("float", None, min_value=1.0, max_value=10000.0, nullable=True),
}
_TOP = {
    "name": _field("str", REQUIRED),
    "world": _field("str", REQUIRED, nullable=True),  # null: a robot without a simulator, trained from bags alone
    "observation": _field("dict", REQUIRED),
    "encoder": _field("dict", {}),
    "core": _field("dict", REQUIRED),
    "action": _field("dict", REQUIRED),
    "training": _field("dict", {}),
    "description": _field("str", "", nullable=True),
}


def _check_value(path: str, value: Any, spec: dict) -> Any:
    kind = spec["kind"]
    if value is None:
        if spec["nullable"]:
            return None
        raise PolicyConfigError(f"{path}: must not be empty (null)")
    if kind == "str_list" and isinstance(value, str):
        value = [value]  # one name stands for a list of one
    if kind in ("int_list", "float_list", "str_list"):
        if not isinstance(value, (list, tuple)):
            raise PolicyConfigError(f"{path}: expected a list, got {type(value).__name__} {shown(value)}")
        item = {"int_list": "int", "float_list": "float", "str_list": "str"}[kind]
        return [_check_value(f"{path}[{i}]", v, dict(spec, kind=item, nullable=False)) for i, v in enumerate(value)]
    if kind == "bool":
        if not isinstance(value, bool):
            raise PolicyConfigError(f"{path}: expected true or false, got {shown(value)}")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise PolicyConfigError(f"{path}: expected an integer, got {shown(value)}")
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PolicyConfigError(f"{path}: expected a number, got {shown(value)}")
        try:
            value = float(value)
        except OverflowError:  # before: a traceback
            raise PolicyConfigError(
                f"{path}: expected a number, got {shown(value)} (an integer past a float's range)"
            ) from None
        if value != value or value in (float("inf"), float("-inf")):
            raise PolicyConfigError(f"{path}: must be finite, got {shown(value)}")
    elif kind == "str":
        if not isinstance(value, str):
            raise PolicyConfigError(f"{path}: expected a string, got {shown(value)}")
        if (at := control_character_at(value, allowed="\n\t" if path == "description" else "")) is not None:
            raise PolicyConfigError(
                f"{path}: control character {value[at]!r} at position {at} of {shown(value)}: the config's strings "
                "are printed in logs, terminals and model cards (an escape sequence there rewrites the screen)"
            )
    elif kind == "dict":
        if not isinstance(value, dict):
            raise PolicyConfigError(f"{path}: expected a mapping, got {type(value).__name__} {shown(value)}")
        return value
    if spec["choices"] is not None and value not in spec["choices"]:
        own = ""
        if path == "core.type" and value in registered_core_types():  # register_core's: not a policy's core
            own = "; a core of your own (register_core) runs in your own training loop, not in a policy config"
        raise PolicyConfigError(
            f"{path}: unknown value {shown(value)}; choose from {', '.join(map(str, spec['choices']))}{own}"
        )
    if spec["above"] is not None and not value > spec["above"]:
        raise PolicyConfigError(f"{path}: must be > {spec['above']}, got {shown(value)}")
    if spec["min"] is not None and value < spec["min"]:
        raise PolicyConfigError(f"{path}: must be >= {spec['min']}, got {shown(value)}")
    if spec["max"] is not None and value > spec["max"]:
        raise PolicyConfigError(f"{path}: must be <= {spec['max']}, got {shown(value)}")
    return value


def _check_section(path: str, section: Any, schema: dict) -> dict:
    if not isinstance(section, dict):
        raise PolicyConfigError(f"{path or 'config'}: expected a mapping, got {type(section).__name__}")
    unknown = sorted(set(section) - set(schema))
    if unknown:
        where = path or "config"
        raise PolicyConfigError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}{did_you_mean(unknown, schema)}; valid keys: "
            f"{', '.join(schema)}"
        )
    out = {}
    for key, spec in schema.items():
        sub = f"{path}.{key}" if path else key
        if key in section:
            out[key] = _check_value(sub, section[key], spec)
        elif spec["default"] is REQUIRED:
            raise PolicyConfigError(f"{sub}: missing (required)")
        else:
            out[key] = copy.deepcopy(spec["default"])
    return out


def conv_sizes(height: int, width: int, kernel_sizes, strides) -> list[tuple[int, int]]:
    """(height, width) after each unpadded convolution of the camera encoder (< 1: the image is too small)."""
    sizes = []
    for k, s in zip(kernel_sizes, strides):
        height, width = (height - k) // s + 1, (width - k) // s + 1
        sizes.append((height, width))
    return sizes


def unseen_margins(height: int, width: int, kernel_sizes, strides) -> tuple[int, int]:
    """(rows, columns) at the bottom and right of a frame that no output of the unpadded convolutions depends on:
    each layer's windows stop where a whole stride no longer fits, so e.g. kernels 5/3/3 at stride 2 see rows 0-56 of
    a 64-pixel frame, never 57-63 (0: every pixel reaches the features)."""

    def reached(outputs: int) -> int:  # the input pixels the last layer's outputs (all: the projection) depend on
        for k, s in zip(reversed(list(kernel_sizes)), reversed(list(strides))):
            outputs = (outputs - 1) * s + k
        return outputs

    last_height, last_width = conv_sizes(height, width, kernel_sizes, strides)[-1]
    return height - reached(last_height), width - reached(last_width)


_PACKAGE_WORLD = re.compile(r"sim_envs(?:\.\w+)*:(?P<id>[^:]+)")


def package_world_id(world: str) -> str:
    """``sim_envs:LiquidRover-v0`` (gymnasium's ``module:Id`` form of a package world) as ``LiquidRover-v0``: one
    spelling of each package world, which sim, ``record --expert`` and the node parameter files know by id."""
    match = _PACKAGE_WORLD.fullmatch(world)  # the module named as data: the policy layer imports no world
    return match["id"] if match else world


def validate_config(raw: dict, strict: bool = True) -> dict:
    """Check a config dict and return a complete copy with every default filled in.

    ``strict=False`` (a policy file being loaded) skips the checks for settings that would have no effect (a key
    of another core type, camera recipes without a camera): a policy trained before they existed still loads."""
    cfg = _check_section("", raw, _TOP)
    if cfg["world"] is not None:
        cfg["world"] = package_world_id(cfg["world"])
    obs = _check_section("observation", cfg["observation"], _OBSERVATION)
    if obs["image"] is not None:
        obs["image"] = _check_section("observation.image", obs["image"], _IMAGE)
    vectors = {}
    for key, size in obs["vectors"].items():
        if str(key) in RESERVED_INPUT_NAMES or not str(key):
            # the runtime names the camera sensor 'camera' and its reading 'image', and the time inputs ride in the
            # same observation dict: a vector of one of these names would replace them there
            raise PolicyConfigError(
                f"observation.vectors.{key}: {str(key)!r} cannot name a vector input (reserved: "
                f"{', '.join(RESERVED_INPUT_NAMES)}; the image is observation.image)"
            )
        vectors[str(key)] = _check_value(f"observation.vectors.{key}", size, _field("int", min_value=1))
    obs["vectors"] = vectors
    if obs["image"] is None and not vectors:
        raise PolicyConfigError("observation: needs an image or at least one vector input")
    inputs = ([CAMERA] if obs["image"] is not None else []) + list(vectors)
    if not obs["update_on"]:
        raise PolicyConfigError("observation.update_on: needs at least one sensor")
    for i, sensor in enumerate(obs["update_on"]):
        if sensor not in inputs:
            raise PolicyConfigError(
                f"observation.update_on[{i}]: {sensor!r} is not an input of this policy, so no encoder reads it "
                f"(inputs: {', '.join(inputs)}; the image is 'camera')"
            )
        if sensor in obs["update_on"][:i]:
            raise PolicyConfigError(f"observation.update_on[{i}]: {sensor!r} is named twice")
    if len(set(obs["timing"])) != len(obs["timing"]):
        raise PolicyConfigError(f"observation.timing: names an input twice: {obs['timing']}")
    if obs["resample_hz"] is not None and obs["timing"]:
        raise PolicyConfigError("observation.timing: a resampled policy (resample_hz) has no events; leave it []")
    cfg["observation"] = obs

    enc = cfg["encoder"]
    unknown = sorted(set(enc) - {"camera", "vectors"})
    if unknown:
        raise PolicyConfigError(
            f"encoder: unknown key(s) {', '.join(map(repr, unknown))}{did_you_mean(unknown, ('camera', 'vectors'))}; "
            "valid keys: camera, vectors"
        )

    def subsection(key):  # absent or empty (``camera:``) means the defaults; anything but a mapping is refused
        value = enc.get(key)
        return {} if value is None else value

    camera = _check_section("encoder.camera", subsection("camera"), _CAMERA_ENCODER)
    n = len(camera["channels"])
    if n == 0 and cfg["observation"]["image"] is not None:
        raise PolicyConfigError("encoder.camera.channels: the camera encoder needs at least one convolution, got []")
    if not (len(camera["kernel_sizes"]) == len(camera["strides"]) == n):
        raise PolicyConfigError(
            f"encoder.camera: channels, kernel_sizes and strides need the same length, got "
            f"{n}, {len(camera['kernel_sizes'])}, {len(camera['strides'])}"
        )
    if camera["instance_norm_layers"] > n:
        raise PolicyConfigError(
            f"encoder.camera.instance_norm_layers: {camera['instance_norm_layers']} is more than the encoder's "
            f"{n} convolutions"
        )
    if camera["instance_norm_layers"] and camera["normalize"] == "none" and cfg["observation"]["image"] is not None:
        # measured on random small rovers: the ONNX export's actions 5e-5 off torch's on 'none' (a faint frame's
        # maps stretched to full scale with their rounding; the export's check allows 1e-5); within 1.5e-6 after
        # every other mode (after the log modes 1.3-2.3e-5 until their logs came from a table, 2026-12-07)
        raise PolicyConfigError(
            "encoder.camera.instance_norm_layers: needs an encoder.camera.normalize other than 'none' (frame, "
            "instance, chromaticity, chromaticity_brightness or retinex): a faint frame's maps are stretched to full "
            "scale with their rounding, and the policy's ONNX export could not match torch"
        )
    image = cfg["observation"]["image"]
    if image is not None:
        size = (image["height"], image["width"])
        for layer, (h, w) in enumerate(conv_sizes(*size, camera["kernel_sizes"], camera["strides"])):
            if h < 1 or w < 1:
                raise PolicyConfigError(
                    f"observation.image: a {size[1]}x{size[0]} (width x height) image is too small for "
                    f"encoder.camera's convolutions (layer {layer}: kernel {camera['kernel_sizes'][layer]}, stride "
                    f"{camera['strides'][layer]} leaves {w}x{h})"
                )
            if layer < camera["instance_norm_layers"] and h * w < 2:
                raise PolicyConfigError(
                    f"encoder.camera.instance_norm_layers: {camera['instance_norm_layers']} normalises the maps of "
                    f"convolution {layer}, which are 1x1 on a {size[1]}x{size[0]} image: a single value has no "
                    "spread to standardise"
                )
    cfg["encoder"] = {
        "camera": camera,
        "vectors": _check_section("encoder.vectors", subsection("vectors"), _VECTOR_ENCODER),
    }

    core = _check_section("core", cfg["core"], _CORE)
    if core["wiring"] == "ncp" and core["type"] not in ("cfc", "ltc"):
        raise PolicyConfigError(f"core.wiring: 'ncp' needs core.type cfc or ltc, got {core['type']!r}")
    if core["type"] == "tcn" and (core["frames"] < 2 or core["frames"] & (core["frames"] - 1)):
        raise PolicyConfigError(f"core.frames: a tcn window must be a power of two >= 2, got {core['frames']}")
    ncp = core["wiring"] == "ncp"
    applies = {  # key -> (does it apply to this core, to which cores it does): another value would go unread
        "outputs": (ncp, "wiring ncp"),
        "seed": (ncp, "wiring ncp"),
        "mode": (core["type"] == "cfc", "core.type cfc"),
        "backbone_units": (core["type"] == "cfc" and not ncp, "core.type cfc without a wiring"),
        "solver": (core["type"] == "ltc", "core.type ltc"),
        "unfolds": (core["type"] in ("ltc", "ctrnn", "gru_ode"), "core.type ltc, ctrnn or gru_ode"),
        "frames": (core["type"] in ("mlp", "tcn"), "core.type mlp or tcn"),
    }
    if ncp and not 0 <= core["seed"] <= 2**32 - 1:
        raise PolicyConfigError(f"core.seed: the NCP wiring's seed must be in [0, {2**32 - 1}], got {core['seed']}")
    for key, (used, where) in applies.items():
        if strict and not used and core[key] != _CORE[key]["default"]:
            raise PolicyConfigError(
                f"core.{key}: {core[key]!r} would be ignored, it applies to {where} only (this is core.type "
                f"{core['type']!r}, wiring {core['wiring']!r}); remove it or leave it at {_CORE[key]['default']!r}"
            )
    if core["max_step"] is not None and (core["type"] not in CONTINUOUS_CORES or core["ignore_dt"]):
        why = "core.ignore_dt is true" if core["ignore_dt"] else f"core.type {core['type']!r} does not integrate dt"
        raise PolicyConfigError(f"core.max_step: sub-steps of dt need a core that integrates it, but {why}")
    cfg["core"] = core

    act = _check_section("action", cfg["action"], _ACTION)
    for key in ("low", "high"):
        if len(act[key]) != act["size"]:
            raise PolicyConfigError(f"action.{key}: needs {act['size']} values (action.size), got {len(act[key])}")
    if any(lo >= hi for lo, hi in zip(act["low"], act["high"])):
        raise PolicyConfigError(f"action: every low must be < high, got low={act['low']} high={act['high']}")
    motor = core["outputs"] or act["size"]  # an NCP's motor neurons: core.outputs, else one per action
    if core["wiring"] == "ncp" and motor >= core["units"] - 2:
        key = "core.outputs" if core["outputs"] is not None else "core.units"
        raise PolicyConfigError(
            f"{key}: {motor} motor neurons ({'core.outputs' if core['outputs'] is not None else 'action.size'}) "
            f"leave too few of {core['units']} units for an NCP wiring (needs core.units > motor neurons + 2)"
        )
    cfg["action"] = act

    cfg["training"] = _check_section("training", cfg["training"], _TRAINING)
    training = cfg["training"]
    if strict and training["lr_final"] > training["lr"]:
        raise PolicyConfigError(
            f"training.lr_final: {training['lr_final']:g} is above training.lr {training['lr']:g}; the learning rate "
            f"is cosine-decayed from lr to lr_final, and would rise: set training.lr_final <= lr too (its default is "
            f"{_TRAINING['lr_final']['default']:g})"
        )
    if strict and not training["beta"] and training["dagger_rounds"]:  # was read as [0.0]: the policy alone
        raise PolicyConfigError(
            f"training.beta: [] gives the {training['dagger_rounds']} DAgger round(s) (training.dagger_rounds) no "
            f"expert share; give one per round, the last one holding for the rounds past its end (e.g. "
            f"{_TRAINING['beta']['default']}; [0.0]: the policy drives alone)"
        )
    twice = sorted({kind for i, kind in enumerate(training["augmentation"]) if kind in training["augmentation"][:i]})
    if strict and twice:  # each kind is applied once, with its own range: a second mention changed nothing
        raise PolicyConfigError(
            f"training.augmentation: {', '.join(map(repr, twice))} named twice; each kind is applied once (its range: "
            f"docs/training.md), name it once"
        )
    for key in ("sensor_rate_range", "jitter_range", "sun_elevation_range"):
        span = cfg["training"][key]
        if span is not None and (len(span) != 2 or span[0] > span[1]):
            raise PolicyConfigError(f"training.{key}: expected [low, high] with low <= high, got {span}")
    if strict and cfg["observation"]["image"] is None:  # camera recipes without a camera would do nothing
        if cfg["training"]["augmentation"]:
            raise PolicyConfigError(
                f"training.augmentation: {cfg['training']['augmentation']} perturbs camera frames, and this policy "
                f"has no observation.image; leave it []"
            )
        if cfg["encoder"]["camera"]["normalize"] != "none":
            raise PolicyConfigError(
                f"encoder.camera.normalize: {cfg['encoder']['camera']['normalize']!r} standardises camera frames, "
                f"and this policy has no observation.image; leave it 'none'"
            )
        if cfg["encoder"]["camera"]["instance_norm_layers"]:
            raise PolicyConfigError(
                f"encoder.camera.instance_norm_layers: {cfg['encoder']['camera']['instance_norm_layers']} normalises "
                "the camera CNN's maps, and this policy has no observation.image; leave it 0"
            )
        if cfg["training"]["sun_elevation_range"] is not None:
            raise PolicyConfigError(
                f"training.sun_elevation_range: {cfg['training']['sun_elevation_range']} moves the sun the camera "
                f"frames are lit by, and this policy has no observation.image; leave it null"
            )
    if "mirror" in cfg["training"]["augmentation"] and (
        act["kind"] != "twist" or act["size"] != 2 or cfg["observation"]["vectors"] or act["low"][1] != -act["high"][1]
    ):
        raise PolicyConfigError(
            "training.augmentation: 'mirror' flips the camera left-right and negates the turn command, so it needs a "
            "camera-only policy with twist actions whose turn bounds are symmetric (action.low[1] = -action.high[1]); "
            f"this one has action.kind {act['kind']!r}, bounds {act['low']}..{act['high']} and vector "
            f"inputs {sorted(cfg['observation']['vectors']) or 'none'}"
        )
    _check_yaw_recovery(cfg)
    if not cfg["training"]["beta"]:
        cfg["training"]["beta"] = [0.0]
    _check_sizes(cfg)
    return cfg


def without_simulated_settings(config: dict) -> dict:
    """A copy of ``config`` whose training section leaves out ``SIMULATED_TRAINING_KEYS``: what a run from recorded
    bags records, the settings that applied to it."""
    config = copy.deepcopy(config)
    config["training"] = {k: v for k, v in config["training"].items() if k not in SIMULATED_TRAINING_KEYS}
    return config


def recorded_config(config: dict, metadata: dict | None) -> dict:
    """``config`` as a policy file with ``metadata`` records it (``save_policy``, the ONNX export): without the
    settings of simulated episodes where the metadata say it was trained from recorded bags (``BAG_RUN_METADATA``)."""
    key, value = BAG_RUN_METADATA
    return without_simulated_settings(config) if (metadata or {}).get(key) == value else config


def yaw_recovery_params(section: dict) -> dict:
    """``training.yaw_recovery`` checked, with the schema's defaults filled in (the one place they live)."""
    return _check_section("training.yaw_recovery", section, _YAW_RECOVERY)


def _check_yaw_recovery(cfg: dict) -> None:
    """`yaw` turns the view and corrects the turn command: it needs its parameters, a twist action and no vector
    input that would contradict a turned view (a gyro); parameters without the augmentation would do nothing."""
    t, act = cfg["training"], cfg["action"]
    used = "yaw" in t["augmentation"]
    if t["yaw_recovery"] is not None:
        t["yaw_recovery"] = yaw_recovery_params(t["yaw_recovery"])
        if not used:
            raise PolicyConfigError(
                "training.yaw_recovery: set, but 'yaw' is not in training.augmentation, so nothing would use it; add "
                "'yaw' to training.augmentation or leave training.yaw_recovery null"
            )
    if not used:
        return
    if t["yaw_recovery"] is None:
        raise PolicyConfigError(
            "training.augmentation: 'yaw' turns the camera's view and corrects the turn command by the steering "
            "gain, so it needs training.yaw_recovery: {gain: <turn command per radian of heading error>, hfov_deg: "
            "<the camera's horizontal field of view>}"
        )
    if act["kind"] != "twist" or act["size"] != 2 or cfg["observation"]["vectors"]:
        raise PolicyConfigError(
            "training.augmentation: 'yaw' turns the camera's view and corrects the turn command (twist angular z), "
            f"so it needs a camera-only policy with twist actions; this one has action.kind {act['kind']!r}, "
            f"action.size {act['size']} and vector inputs {sorted(cfg['observation']['vectors']) or 'none'}"
        )


def check_world(cfg: dict, sensors, observations) -> None:
    """Check a validated config against its world's ``sensors`` and observation keys: every input must be an
    observation of the world and every update sensor one of its sensors. Raises PolicyConfigError naming the
    key path (training and evaluation call this before they build the world)."""
    world, obs = cfg["world"], cfg["observation"]
    if obs["image"] is not None and "image" not in observations:
        raise PolicyConfigError(
            f"observation.image: world {world} has no camera (observations: {', '.join(observations)})"
        )
    for key in obs["vectors"]:
        if key not in observations:
            raise PolicyConfigError(
                f"observation.vectors.{key}: world {world} has no observation {key!r} "
                f"(observations: {', '.join(observations)})"
            )
    inputs = ([CAMERA] if obs["image"] is not None else []) + list(obs["vectors"])
    for i, sensor in enumerate(obs["update_on"]):
        if sensor not in sensors:
            # an input the world delivers through a sensor of another name (LiquidBalanceNav-v0's 'wheels' come
            # from its 'encoders') can only be held: say which inputs can update, or the two checks send the
            # author back and forth ('encoders' is not an input of the policy)
            usable = [s for s in sensors if s in inputs]
            raise PolicyConfigError(
                f"observation.update_on[{i}]: world {world} has no sensor {sensor!r} whose messages could trigger "
                f"updates (sensors: {', '.join(sensors)}); of this policy's inputs, "
                + (f"these can: {', '.join(usable)}" if usable else "none is one of them")
                + (
                    f" ({sensor!r} is an observation of the world, held between updates)"
                    if sensor in observations
                    else ""
                )
            )


def env_kwargs(cfg: dict, timed: bool = True) -> dict:
    """Keyword arguments of the policy's world (``gymnasium.make``): the camera at the policy's image size,
    updates on the policy's update sensors, the policy's reordering lag, and the policy's inputs
    (``policy_inputs``: ``camera`` for the image, then the vector keys, as the policy node subscribes to them),
    so that the world's first update waits for a message of each, as the node's ``PolicyRunner`` does.
    ``timed`` False: a gymnasium world that is no ``TimedMujocoWorld`` (no ``sensor_names``), which takes none of
    those but the camera size: pixels where square (an int, as such worlds take it), else (height, width)."""
    obs = cfg["observation"]
    image = obs["image"]
    if not timed:
        if image is None:
            return {}
        height, width = image["height"], image["width"]
        return {"render_size": height if height == width else (height, width)}
    inputs = ([CAMERA] if image is not None else []) + list(obs["vectors"])
    kwargs = {
        "update_on": tuple(obs["update_on"]),
        "reorder_lag_s": obs["reorder_lag_s"],
        "policy_inputs": tuple(inputs),
    }
    if image is not None:
        kwargs["render_size"] = (image["height"], image["width"])
    return kwargs


def registered_core_types() -> frozenset:
    """The core type names ``cells.register_core`` holds (the package's and a user's own)."""
    from liquid_control.cells.core import CORE_TYPES as REGISTERED

    return frozenset(REGISTERED)


def repeated_key(text: str) -> str | None:
    """The first key given twice in one mapping of a YAML text, as "key.path (lines A and B)", or None.

    PyYAML keeps the last of repeated keys silently, so ``lr: 0.002`` followed further down by ``lr: 5``
    would train with 5 whatever the author meant; the text must be valid YAML. Each node is looked at once: an
    alias is the node it names, so a few hundred bytes of aliases of aliases (a "billion laughs") stay cheap."""
    checked = set()

    def walk(node, path):
        if id(node) in checked:
            return None
        checked.add(id(node))
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else None
                sub = f"{path}.{name}" if path else str(name)
                if name is not None and name != "<<":
                    if name in seen:
                        return f"{sub} (lines {seen[name] + 1} and {key.start_mark.line + 1})"
                    seen[name] = key.start_mark.line
                found = walk(value, sub)
                if found:
                    return found
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                found = walk(item, f"{path}[{i}]")
                if found:
                    return found
        return None

    try:
        return walk(yaml.compose(text, Loader=yaml.SafeLoader), "")
    except RecursionError:
        raise TooDeepError() from None


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error on one line: what is wrong and where (PyYAML's own message spans several lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}" + (f" ({context})" if context else "")


def read_config_yaml(path: str | Path):
    """The YAML content of a policy config file, unvalidated; PolicyConfigError naming the file when it is
    missing, not YAML, or gives a key twice."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise PolicyConfigError(f"{path}: policy config not found") from None
    except UnicodeDecodeError:  # e.g. a policy .pt given where its YAML config belongs
        raise PolicyConfigError(
            f"{path}: not a YAML text file (binary content; a policy .pt?): a policy config is the YAML file, "
            f"e.g. policies/configs/cfc_ncp_rover.yaml"
        ) from None
    except OSError as exc:
        raise PolicyConfigError(f"{path}: cannot read the policy config: {exc}") from None
    try:
        raw = load_yaml(text)
        repeated = repeated_key(text)
    except yaml.YAMLError as exc:
        raise PolicyConfigError(f"{path}: not valid YAML: {yaml_problem(exc)}") from None
    if repeated:
        raise PolicyConfigError(f"{path}: {repeated}: key given twice (which one is meant?); keep one")
    return raw


# Keys added since runs began whose default is not what the code did before them. A run's config.yaml and
# checkpoint.pt written before such a key lack it, and that run trained the older way: read back (a resume), the key
# takes that way's value, so the run goes on as it began instead of switching to the default unsaid.
# training.sequence_kernel (c84ed220, 2026-11-30): training ran the per-step graph before; the default is fused.
KEYS_ADDED_WITH_ANOTHER_DEFAULT = {("training", "sequence_kernel"): "stepwise"}


def validate_recorded_config(raw, strict: bool = False) -> dict:
    """``validate_config`` of a config a training run recorded (its config.yaml, checkpoint.pt): a key of
    :data:`KEYS_ADDED_WITH_ANOTHER_DEFAULT` it lacks (written before the key existed) takes the value that does what
    the code did then, not the default; a key it lacks otherwise takes its default, which does what the code did."""
    if isinstance(raw, dict):
        raw = dict(raw)
        for (section, key), value in KEYS_ADDED_WITH_ANOTHER_DEFAULT.items():
            inner = raw.get(section, {})
            if isinstance(inner, dict) and key not in inner:
                raw[section] = {**inner, key: value}
    return validate_config(raw, strict=strict)


def load_config(path: str | Path, strict: bool = True, recorded: bool = False) -> dict:
    """Read and validate a policy YAML file; errors name the file (``strict``: see ``validate_config``;
    ``recorded``: a run's own config.yaml, read as :func:`validate_recorded_config` reads it)."""
    path = Path(path)
    raw = read_config_yaml(path)
    if raw is None:
        raise PolicyConfigError(f"{path}: empty policy config")
    try:
        return (validate_recorded_config if recorded else validate_config)(raw, strict=strict)
    except PolicyConfigError as exc:
        raise PolicyConfigError(f"{path}: {exc}") from None


# mappings whose keys are data, not settings (a policy's vector inputs, a bag run's topics): a --set replaces them
DATA_MAPPINGS = ("observation.vectors", "data.topics")


def _merge_section(node: dict, value: dict, path: str) -> None:
    """``value``'s keys set in section ``node`` (at dotted ``path``), a section in it merged the same way, key by key
    (a data mapping replaced)."""
    for key, item in value.items():
        where = f"{path}.{key}"
        if isinstance(item, dict) and isinstance(node.get(key), dict) and where not in DATA_MAPPINGS:
            _merge_section(node[key], item, where)
        else:
            node[key] = copy.deepcopy(item)


def set_dotted(raw: dict, dotted: str, value) -> None:
    """Set one ``--set`` override in ``raw`` in place: ``a.b.c`` names key ``c`` of section ``a.b``; a section given
    as a mapping (``--set "training={demonstrations: 2}"``, ``--set "encoder.camera={normalize: instance}"``) sets
    the keys it names, the others kept; a data mapping (``DATA_MAPPINGS``) is replaced whole."""
    node = raw
    parts = dotted.split(".")
    for depth, part in enumerate(parts[:-1]):
        if part in node and node[part] is None:  # a section left null (training.yaw_recovery): set, it has this key
            node[part] = {}
        if part in node and not isinstance(node[part], dict):
            raise PolicyConfigError(f"override {dotted!r}: {part!r} is a value, not a section")
        if part not in node:
            where = ".".join(parts[:depth]) or "the config"
            sections = ", ".join(key for key, value in node.items() if isinstance(value, dict))
            have = f"its sections: {sections}" if sections else "it holds values only"
            raise PolicyConfigError(f"override {dotted!r}: {where} has no section {part!r} ({have})")
        node = node[part]
    if isinstance(node.get(parts[-1]), dict) and isinstance(value, dict) and dotted not in DATA_MAPPINGS:
        # the section given whole replaced the file's values and every earlier --set with the defaults (at the top;
        # below it, encoder.camera={normalize: instance} reset the camera's channels and sizes to the schema's)
        _merge_section(node[parts[-1]], value, dotted)
    else:
        node[parts[-1]] = value


def refusal_source(message: str, path, overrides) -> str:
    """``message``, a refusal that starts with the dotted key it refuses (``training.shift: ...``), prefixed with the
    config file ``path`` it came from, unless one of ``overrides`` (dotted keys: ``--set``) set that key, a section
    holding it (``training={...}``) or a key in it that the message names (``data.label.mod`` of ``data.label:
    unknown key(s) 'mod'``; another key in it, ``--label-offset-s``, leaves the file's typo the file's): the file may
    not say it, so the message stands alone, as ``apply_overrides``'s refusals do. ``path`` None: no file."""
    key = message.split(":", 1)[0]

    def set_by(k: str) -> bool:
        inner = k.removeprefix(key + ".").split(".")[0]
        return key == k or key.startswith(k + ".") or (k.startswith(key + ".") and repr(inner) in message)

    if path is None or any(set_by(k) for k in overrides or ()):
        return message
    return f"{path}: {message}"


def apply_overrides(cfg: dict, overrides: dict[str, Any], strict: bool = True) -> dict:
    """Return a validated copy of ``cfg`` with dotted-key overrides, e.g. {"training.epochs_first": 2}."""
    raw = copy.deepcopy(cfg)
    for dotted, value in overrides.items():
        set_dotted(raw, dotted, value)
    return validate_config(raw, strict=strict)
