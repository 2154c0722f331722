"""Inference backends for the runtime: the torch Policy, or its exported single-step ONNX model.

A backend runs one policy step on one sample with numpy in and out, so :class:`~.runner.PolicyRunner`
and the ROS node never touch torch directly, and a robot without the training stack (no torch) runs the
exported ``.onnx`` file with onnxruntime. Both backends expose the same :class:`ObservationSpec`, read from
the policy config (embedded in the checkpoint, or in the ONNX model's metadata), and the same ``training_record``:
what the policy file records of the sensors it was trained on (``TRAINING_RECORD_KEYS``, from the checkpoint's
metadata, or from the ONNX model's, which its export carries; empty for a file or export from before the record).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shlex
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from liquid_control.json_text import load_json
from liquid_control.shown import control_character_at, shown

CAMERA = "camera"  # sensor name of the image input (observation key "image"), and name of its encoder
VECTORS = "vectors"  # name of the encoder of every vector input
ONNX_CONFIG_KEY = "liquid_control.policy_config"  # metadata_props entry holding the policy config (JSON)
ONNX_SOURCE_KEY = "liquid_control.checkpoint_sha256"  # metadata_props entry: SHA-256 of the exported .pt file
# the entries of a policy file's metadata that record the sensors it was trained on and what it learned from
# (conventions.training_record reads them: the training camera, the sensor rates, the world or bags, and for a run
# from bags its data spec: topics, labels, action_scale, limits); its ONNX export carries each as a metadata_props
# entry (JSON) named ONNX_TRAINING_PREFIX + key, and both backends give them as ``training_record``
TRAINING_RECORD_KEYS = ("training_camera", "training_sensor_rates", "training_source", "data_spec")
ONNX_TRAINING_PREFIX = "liquid_control."
# metadata_props entry: the version of the export's layout (its inputs, outputs and metadata entries), a decimal
# integer; an export without it was written before exports recorded one (format 0, read as then). An export of a
# newer format than ONNX_FORMAT is refused naming it, rather than read by guessing from the keys it lacks or holds.
ONNX_FORMAT_KEY = "liquid_control.export_format"
ONNX_FORMAT = 1  # the format `liquid-control export` writes, and the newest this version reads
# metadata_props entry: the revision of what the graph computes (a decimal integer; an export without it: 1). Raised
# with any change of the arithmetic an export holds, each listed in GRAPH_CHANGES with the configs it touches: an
# export of an older revision next to its unchanged checkpoint would compute the old way, so ``auto`` runs the
# checkpoint with torch instead, and an export run by name (or without torch) runs with a note to re-export it.
ONNX_GRAPH_KEY = "liquid_control.graph_revision"
ONNX_GRAPH_REVISION = 3
# encoder.camera.normalize's modes that take each pixel's log, as liquid_control.policy.config names them (not
# imported: the runtime runs ONNX policies without torch; a test keeps them equal)
LOG_NORMALIZATIONS = ("chromaticity", "chromaticity_brightness", "retinex")
GRAPH_CHANGES = (  # (revision, what changed, whether a policy config's graph holds it)
    (
        2,
        "sub-step counts allow 1 us past a multiple of core.max_step (2026-12-07: a sensor stamped exactly max_step "
        "apart at system-time stamps took one or two sub-steps by rounding)",
        lambda config: bool(_section(config, "core").get("max_step")),
    ),
    (
        3,
        "each pixel's log read from a table of the 256 values (2026-12-07: float32 log in onnxruntime rounded "
        "otherwise than torch's, up to 1.9e-5 in the action)",
        lambda config: _section(config, "encoder", "camera").get("normalize") in LOG_NORMALIZATIONS,
    ),
)


def _section(config: dict, *keys: str) -> dict:
    """The nested section ``config[key0][key1]...`` of an export's config, {} where one is absent or no mapping (a
    hand-edited export's metadata: GRAPH_CHANGES then finds nothing in it rather than raising)."""
    for key in keys:
        config = config.get(key) if isinstance(config, dict) else None
    return config if isinstance(config, dict) else {}


# observation.timing's choices, as liquid_control.policy.config names them (not imported: the runtime runs ONNX
# policies without torch, which that package needs)
TIMING_INPUTS = ("event", "ages")


class BackendError(RuntimeError):
    """A policy file that cannot be run: missing, wrong format, or a backend that is not installed."""


@dataclass(frozen=True)
class ObservationSpec:
    """What a policy eats and emits, from its config (docs/ARCHITECTURE.md, Policy).

    ``sensors`` maps each sensor name (``camera`` for the image, else the vector key such as ``imu``) to the
    observation shape the policy expects. Every message of an ``update_on`` sensor advances the state; the
    others are held. ``encoders`` maps each encoder (``camera``: the CNN, ``vectors``: the MLP over every
    vector input) to the sensors it reads: an encoder runs only when one of them has a new message, its
    latest features are part of the state. ``timing`` names the time inputs of the core (``event``: which
    update sensor arrived, ``ages``: how old each update sensor's latest message is); ``reorder_lag_s`` is the
    lag of the reordering buffer the policy was trained with (:mod:`.timeline`).
    """

    sensors: dict[str, tuple[int, ...]]
    update_on: tuple[str, ...]
    encoders: dict[str, tuple[str, ...]]
    timing: tuple[str, ...]
    reorder_lag_s: float
    action_low: np.ndarray
    action_high: np.ndarray
    action_kind: str

    @classmethod
    def from_config(cls, config: dict) -> "ObservationSpec":
        """The spec of a policy config; BackendError when the config is malformed (:func:`check_policy_config`)
        or an ``update_on`` sensor is not one of its inputs."""
        check_policy_config(config, f"policy {config.get('name', '?')!r}" if isinstance(config, dict) else "policy")
        obs = config["observation"]
        sensors: dict[str, tuple[int, ...]] = {}
        encoders: dict[str, tuple[str, ...]] = {}
        if obs.get("image"):
            sensors[CAMERA] = (int(obs["image"]["height"]), int(obs["image"]["width"]), 3)
            encoders[CAMERA] = (CAMERA,)
        for key, size in obs.get("vectors", {}).items():
            sensors[str(key)] = (int(size),)
        if obs.get("vectors"):
            encoders[VECTORS] = tuple(str(k) for k in obs["vectors"])
        update_on = obs["update_on"]
        update_on = (update_on,) if isinstance(update_on, str) else tuple(update_on)
        for i, sensor in enumerate(update_on):
            if sensor not in sensors:
                raise BackendError(
                    f"policy config: observation.update_on[{i}] {sensor!r} is not one of its inputs {sorted(sensors)}"
                )
        act = config["action"]
        return cls(
            sensors=sensors,
            update_on=update_on,
            encoders=encoders,
            timing=tuple(obs.get("timing", ())),
            reorder_lag_s=float(obs.get("reorder_lag_s", 0.0)),
            action_low=np.asarray(act["low"], dtype=np.float64),
            action_high=np.asarray(act["high"], dtype=np.float64),
            action_kind=str(act.get("kind", "twist")),
        )

    @property
    def action_size(self) -> int:
        """Number of action elements."""
        return int(self.action_low.shape[0])

    @staticmethod
    def obs_key(sensor: str) -> str:
        """Observation-dict key of a sensor (the camera's reading is ``image``)."""
        return "image" if sensor == CAMERA else sensor

    def encoder_of(self, sensor: str) -> str:
        """The encoder that reads ``sensor``."""
        return CAMERA if sensor == CAMERA else VECTORS


class StepInputs:
    """What a backend's ``step`` reads, checked here before either backend runs, so that a wrong input (a frame of
    another size or channel count, an IMU vector of another length, another policy's state) is the same ValueError
    in the same words with torch and with onnxruntime (which said only 'INVALID_ARGUMENT : Got invalid dimensions
    for input: image ... index: 3 Got: 4 Expected: 3'). Only what the step reads is checked: the inputs of the
    encoders that run (``encode``), the time inputs and the state. Arrays of the right shapes pass with a shape
    comparison each (a microsecond or two, no copies: the node's path); anything else is looked at input by input."""

    def __init__(self, spec: ObservationSpec, state_size: int, policy: str):
        self.policy = policy  # e.g. "policy 'cfc_ncp_rover'": how every message starts
        self.state_shape = (int(state_size),)
        self.encoders = tuple(spec.encoders)
        # per observation key: its encoder (None: a time input), its shape and where the policy config sets it
        self.inputs: dict[str, tuple[str | None, tuple[int, ...], str]] = {}
        for sensor, shape in spec.sensors.items():
            where = f"observation.vectors.{sensor}"
            if sensor == CAMERA:
                where = "observation.image: height, width, 3 RGB channels"
            self.inputs[ObservationSpec.obs_key(sensor)] = (spec.encoder_of(sensor), shape, where)
        n = len(spec.update_on)
        times = {"event": ((), "observation.timing: the index of the update sensor")}
        times["ages"] = ((n,), f"observation.timing: one age per update sensor, {', '.join(spec.update_on)}")
        self.inputs.update((name, (None, *times[name])) for name in spec.timing)
        self._reads: dict = {}  # encode -> ((key, shape) of each input the step reads then), its names checked

    def check(self, obs: dict, state, encode=None) -> None:
        """ValueError naming the input, its expected and its given shape, for the first input ``step`` cannot take."""
        try:
            reads = self._reads[encode]
        except (KeyError, TypeError):  # a first encode, or one that cannot be a key (a list)
            reads = self._reads_of(encode)
        try:  # the usual case: arrays of the right shapes, a uint8 frame
            for key, shape in reads:
                if obs[key].shape != shape:
                    break
            else:
                if state.shape == self.state_shape and ("image" not in obs or obs["image"].dtype == np.uint8):
                    return
        except (KeyError, AttributeError):  # an input missing, or given as a list or a number
            pass
        self._check_each(obs, state, [key for key, _ in reads])

    def _reads_of(self, encode) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """The keys ``step`` reads with ``encode`` and their shapes; a ValueError naming an ``encode`` name that is not
        an encoder of the policy (it would leave that encoder's cached features, zeros at first, in place)."""
        names = (encode,) if isinstance(encode, str) else encode
        if names is not None:
            unknown = [name for name in names if name not in self.encoders]
            if unknown:
                raise ValueError(
                    f"{self.policy}: encode names {unknown}, not encoders of this policy ({', '.join(self.encoders)})"
                )
        reads = tuple(
            (key, shape)
            for key, (encoder, shape, _) in self.inputs.items()
            if encoder is None or names is None or encoder in names
        )
        if isinstance(encode, (tuple, str, type(None))):
            self._reads[encode] = reads
        return reads

    def _check_each(self, obs: dict, state, keys: tuple) -> None:
        for key in keys:
            if key not in obs:
                raise ValueError(
                    f"{self.policy}: observation lacks {key!r} (has {', '.join(sorted(obs)) or 'nothing'})"
                )
            _, shape, where = self.inputs[key]
            value = obs[key]
            given = np.shape(value)
            if given != shape:
                raise ValueError(
                    f"{self.policy}: observation {key!r} has shape {tuple(given)}, expected {shape} ({where})"
                )
            if key == "image" and np.asarray(value).dtype != np.uint8:  # a float frame: 0-1 or 0-255? not guessed
                dtype = np.asarray(value).dtype
                raise ValueError(f"{self.policy}: observation 'image' must be uint8 as a camera gives it, got {dtype}")
        given = np.shape(state)
        if given != self.state_shape:
            raise ValueError(
                f"{self.policy}: state has shape {tuple(given)}, expected {self.state_shape} (as initial_state() gives)"
            )


class TorchBackend:
    """Runs a ``liquid_control.policy.Policy`` (or any module with the same ``step`` contract), on the CPU with
    numpy in and out. It switches ``policy`` (the caller's object, not a copy) to eval mode: a policy still being
    trained must be put back with ``policy.train()``.

    ``threads``: the torch intra-op threads each ``step`` runs with, set on the thread that runs it when that
    thread's count differs (None: the caller's). ``torch.set_num_threads`` reaches only the calling thread and those
    that have not run a parallel torch op yet (each takes the count for good at its first), so a count set once at
    load left a step on an executor thread that had run one (another node's work in a composed process) with that
    thread's count."""

    name = "torch"
    note = None  # why ``backend: auto`` did not take the ONNX export next to the checkpoint (for the log)
    threads: int | None = None

    def __init__(self, policy):
        import torch

        from liquid_control.cells import native

        native.load()  # build / load the compiled kernels now (~1 s the first time), not on the first message
        self._torch = torch
        self.policy = policy.eval()
        self.config = policy.config
        self.training_record = training_record_of(getattr(policy, "metadata", None) or {})
        self.spec = ObservationSpec.from_config(self.config)
        initial = self.initial_state()
        self._state_dtype = initial.dtype
        self._inputs = StepInputs(self.spec, initial.shape[0], _policy_name(self.config))

    def initial_state(self) -> np.ndarray:
        """The policy's initial state for one sample, in the policy's precision (float32; float64 for a policy
        moved to float64, whose state ``step`` keeps in float64)."""
        with self._torch.no_grad():
            return self.policy.initial_state(1)[0].detach().cpu().numpy()

    def step(
        self, obs: dict[str, np.ndarray], state: np.ndarray, dt: float, encode=None
    ) -> tuple[np.ndarray, np.ndarray]:
        """One update of one sample; ``encode``: the encoders to run (None: all), the others' features come
        from the state."""
        self._inputs.check(obs, state, encode)
        torch = self._torch
        if self.threads is not None and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        with torch.no_grad():
            batch = {key: torch.from_numpy(np.ascontiguousarray(np.asarray(value)[None])) for key, value in obs.items()}
            state = torch.from_numpy(np.asarray(state, dtype=self._state_dtype)[None])
            action, new_state = self.policy.step(batch, state, torch.tensor([dt], dtype=torch.float32), encode=encode)
        return action[0].numpy().astype(np.float64), new_state[0].numpy()

    def close(self):
        """Drop the policy."""
        self.policy = None


class OnnxBackend:
    """Runs the single-step ONNX model written by ``liquid-control export`` with onnxruntime."""

    name = "onnx"
    note = None  # a caution for the log (an export whose source checkpoint cannot be checked)

    def __init__(self, path: str | Path):
        try:
            ort = import_onnxruntime(path)
        except ValueError as exc:
            raise BackendError(str(exc)) from exc.__cause__
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one sample per step: threads only add latency
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(model_bytes(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise BackendError(f"{path}: not a loadable ONNX model ({_not_onnx(path, exc)})") from exc
        meta = self.session.get_modelmeta().custom_metadata_map
        self.export_format = export_format(path, meta)
        if ONNX_CONFIG_KEY not in meta:
            raise BackendError(
                f"{path}: ONNX model has no {ONNX_CONFIG_KEY!r} metadata; write it with `liquid-control export`"
            )
        config = metadata_json(path, meta, ONNX_CONFIG_KEY)
        check_policy_config(config, f"{path}: metadata {ONNX_CONFIG_KEY!r}")
        self.path = Path(path)
        self.config = config
        self.source_sha256 = meta.get(ONNX_SOURCE_KEY)  # None: exported before exports recorded their source
        self.outdated = outdated_graph(path, meta, config)  # "" unless it computes as an older liquid_control did
        self.training_record = _onnx_training_record(path, meta)
        self.spec = ObservationSpec.from_config(self.config)
        # the float inputs step() checks, per encoder (the camera's uint8 frame cannot be NaN), then the time inputs
        self._finite_inputs = tuple((e, sensors) for e, sensors in self.spec.encoders.items() if e != CAMERA)
        self.state_size = check_onnx_signature(path, self.session, self.spec)
        self._inputs = StepInputs(self.spec, self.state_size, _policy_name(config))
        # the graph's observation inputs: (name, encoder reading it or None for a time input, the zeros fed while
        # that encoder does not run: its If branch does not read them, and the step may lack them, as with torch)
        self._feed_inputs = [
            (
                ObservationSpec.obs_key(s),
                self.spec.encoder_of(s),
                np.zeros((1, *shape), np.uint8 if s == CAMERA else np.float32),
            )
            for s, shape in self.spec.sensors.items()
        ] + [(name, None, None) for name in self.spec.timing]

    def initial_state(self) -> np.ndarray:
        """The policy's initial state: zeros of the graph's state size (as ``Policy.initial_state``)."""
        return np.zeros(self.state_size, dtype=np.float32)

    def step(
        self, obs: dict[str, np.ndarray], state: np.ndarray, dt: float, encode=None
    ) -> tuple[np.ndarray, np.ndarray]:
        """One update of one sample through the ONNX graph; ``encode``: the encoders to run (None: all)."""
        self._inputs.check(obs, state, encode)
        if "event" in self.spec.timing:
            event, n = np.asarray(obs["event"]), len(self.spec.update_on)
            if event.size and not (0 <= event.min() and event.max() < n):
                # the graph's one-hot of an index outside [0, n) is all zeros: the core would see no event, silently
                raise ValueError(
                    f"{self.path}: 'event' must index an update sensor in [0, {n}) ({', '.join(self.spec.update_on)}), "
                    f"got {event.min()}" + ("" if event.size == 1 else f"..{event.max()}")
                )
        for encoder, sensors in self._finite_inputs:  # as Policy.step: the inputs of the encoders that run now
            if encode is None or encoder in encode:
                for sensor in sensors:
                    if not np.isfinite(obs[sensor]).all():
                        raise ValueError(f"{self.path}: {encoder!r} input is not finite (NaN or inf)")
        for name in self.spec.timing:
            if not np.isfinite(obs[name]).all():
                raise ValueError(f"{self.path}: time inputs ({', '.join(self.spec.timing)}) are not finite")
        with np.errstate(over="ignore"):  # checked as the graph takes it: 1e39 is inf in float32
            dt32 = np.float32(dt)
        if not 0.0 <= dt32 < np.inf:  # as the torch policy: the graph's sub-step count would take any dt
            raise ValueError(f"{self.path}: dt must be finite and >= 0, got {dt}")
        feed = {
            key: idle if encoder is not None and encode is not None and encoder not in encode else self._input(key, obs)
            for key, encoder, idle in self._feed_inputs
        }
        feed["state"] = np.asarray(state, dtype=np.float32)[None]
        feed["dt"] = dt32.reshape(1)
        for encoder in self.spec.encoders:
            feed[encode_input(encoder)] = np.array(encode is None or encoder in encode)
        action, new_state = self.session.run(["action", "state_out"], feed)
        return action[0].astype(np.float64), new_state[0].astype(np.float32)

    def _input(self, key: str, obs: dict) -> np.ndarray:
        """``obs[key]`` (checked: ``StepInputs``) as the graph's batch of one in its dtype, as the torch policy takes
        it: vectors and ``ages`` of any real dtype (a list, numpy's float64) as float32, ``event`` as int64;
        onnxruntime refused anything but its exact dtype ("Unexpected input data type"), so code that ran with torch
        failed once an export lay beside the .pt."""
        value = np.asarray(obs[key])
        if key != "image":  # the image is uint8 (checked)
            value = value.astype(np.int64 if key == "event" else np.float32, copy=False)
        return np.ascontiguousarray(value[None])

    def close(self):
        """Drop the onnxruntime session."""
        self.session = None


def export_format(path, meta: dict) -> int:
    """The export format an ONNX model's metadata ``meta`` records (``ONNX_FORMAT_KEY``; 0: an export written before
    exports recorded it, read as then). One newer than ``ONNX_FORMAT`` (an export of a later liquid_control, whose
    metadata or graph this version may misread), or a value that is no format number, is a BackendError naming
    ``path`` and the value."""
    text = meta.get(ONNX_FORMAT_KEY)
    if text is None:
        return 0
    if not (text.isascii() and text.isdigit()):
        raise BackendError(
            f"{path}: metadata {ONNX_FORMAT_KEY!r} is {shown(text, 40)}, not an export format number; re-export it "
            "(`liquid-control export`)"
        )
    version = int(text)
    if version > ONNX_FORMAT:
        raise BackendError(
            f"{path}: an ONNX export of format {version}, written by a newer liquid_control; this version reads export "
            f"formats up to {ONNX_FORMAT}: update liquid_control here, or export the .pt with this version "
            f"(`liquid-control export {shlex.quote(str(Path(path).with_suffix('.pt')))}`)"
        )
    return version


def outdated_graph(path, meta: dict, config: dict) -> str:
    """What an export computes differently from a fresh one of its checkpoint (its ``ONNX_GRAPH_KEY`` revision older
    than a change in ``GRAPH_CHANGES`` that its config's graph holds), "" when nothing. A value that is no revision
    number is a BackendError naming ``path``."""
    text = meta.get(ONNX_GRAPH_KEY, "1")
    if not (text.isascii() and text.isdigit()):
        raise BackendError(
            f"{path}: metadata {ONNX_GRAPH_KEY!r} is {shown(text, 40)}, not a graph revision number; re-export it "
            "(`liquid-control export`)"
        )
    revision = int(text)
    changes = [what for since, what, holds in GRAPH_CHANGES if revision < since and holds(config)]
    return "; ".join(changes)


def training_record_of(metadata: dict) -> dict:
    """The entries of a policy file's ``metadata`` that record the sensors it was trained on (``TRAINING_RECORD_KEYS``;
    a file from before them: empty): what a backend gives as ``training_record`` and an export carries."""
    return {key: metadata[key] for key in TRAINING_RECORD_KEYS if key in metadata}


def _onnx_training_record(path, meta: dict) -> dict:
    """The training record an export carries in its metadata (``TRAINING_RECORD_KEYS``; an export of a file without
    it, or written before exports carried it: empty); an entry that is not JSON is a BackendError naming it."""
    record = {}
    for key in TRAINING_RECORD_KEYS:
        if ONNX_TRAINING_PREFIX + key in meta:
            advice = "; re-export it (`liquid-control export`)"
            record[key] = metadata_json(path, meta, ONNX_TRAINING_PREFIX + key, advice)
    return record


def metadata_json(path, meta: dict, key: str, advice: str = ""):
    """The JSON value of the ``metadata_props`` entry ``key`` of the ONNX file ``path`` (``meta``: its entries); a
    BackendError naming both where it is not JSON, also where it nests too deeply (see json_text)."""
    try:
        return load_json(meta[key])
    except ValueError as exc:
        raise BackendError(f"{path}: metadata {key!r} is not valid JSON ({exc}){advice}") from None


def encode_input(encoder: str) -> str:
    """Name of the ONNX input (bool scalar) that says whether ``encoder`` runs at this step."""
    return f"encode_{encoder}"


def onnx_input_names(spec: ObservationSpec) -> list[str]:
    """Inputs of the single-step ONNX model, in order: the sensors, the time inputs, the state, dt, and one
    encode flag per encoder."""
    names = [ObservationSpec.obs_key(s) for s in spec.sensors] + list(spec.timing) + ["state", "dt"]
    return names + [encode_input(e) for e in spec.encoders]


def check_policy_config(config, source: str) -> None:
    """The parts of a policy config the runtime reads (observation, action), checked before they are used, so
    a malformed one (e.g. ONNX metadata ``{}`` or ``[1, 2]``) is a :class:`BackendError` naming ``source`` and
    the key rather than a KeyError/TypeError at configure."""

    def fail(what: str):
        raise BackendError(f"{source}: policy config {what}")

    def positive_int(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value > 0

    if not isinstance(config, dict):
        fail(f"must be a mapping, got {type(config).__name__} {shown(config)}")
    for key in ("observation", "action"):
        if not isinstance(config.get(key), dict):
            fail(f"lacks its {key!r} section (got {shown(config.get(key))})")
    for key, allowed in (("name", ""), ("description", "\n\t")):  # printed in the node's log (as validate_config)
        text = config.get(key)
        if isinstance(text, str) and (at := control_character_at(text, allowed)) is not None:
            fail(f"{key}: control character {text[at]!r} at position {at} of {shown(text)}")
    obs, act = config["observation"], config["action"]
    image = obs.get("image")
    if image is not None and not (
        isinstance(image, dict) and positive_int(image.get("height")) and positive_int(image.get("width"))
    ):
        fail(f"observation.image must be {{height: int, width: int}}, got {shown(image)}")
    vectors = obs.get("vectors", {})
    if not isinstance(vectors, dict) or not all(positive_int(v) for v in vectors.values()):
        fail(f"observation.vectors must map input names to positive sizes, got {shown(vectors)}")
    if not image and not vectors:
        fail("observation has no inputs (no image, no vectors)")
    update_on = obs.get("update_on")
    if not (
        isinstance(update_on, str)
        or (isinstance(update_on, list) and update_on and all(isinstance(u, str) for u in update_on))
    ):
        fail(f"observation.update_on must name an input or a list of inputs, got {shown(update_on)}")
    timing = obs.get("timing", [])
    if not (isinstance(timing, list) and all(t in TIMING_INPUTS for t in timing) and len(set(timing)) == len(timing)):
        fail(f"observation.timing must list distinct time inputs of {list(TIMING_INPUTS)}, got {shown(timing)}")
    lag = obs.get("reorder_lag_s", 0.0)
    if isinstance(lag, bool) or not isinstance(lag, (int, float)) or not 0.0 <= lag <= 1.0:
        fail(f"observation.reorder_lag_s must be seconds in [0, 1], got {shown(lag)}")
    if obs.get("resample_hz") is not None:
        fail(
            f"observation.resample_hz is {shown(obs['resample_hz'], 20)}: a resampling baseline steps on a fixed-rate "
            "clock, which only the simulated evaluation (PolicyAgent) implements; policy_node, ONNX and training "
            "from bags step on sensor messages"
        )
    bounds = [act.get("low"), act.get("high")]
    if not all(isinstance(b, list) and b and all(isinstance(v, (int, float)) for v in b) for b in bounds):
        fail(f"action.low and action.high must be lists of numbers, got {shown(bounds)}")
    if len(bounds[0]) != len(bounds[1]):
        fail(f"action.low and action.high differ in length ({len(bounds[0])} vs {len(bounds[1])})")
    if not isinstance(act.get("kind", "twist"), str):
        fail(f"action.kind must be a string, got {act.get('kind')!r}")


_ONNX_TYPES = {np.uint8: "tensor(uint8)", np.float32: "tensor(float)", np.int64: "tensor(int64)"}


def _onnx_shape(shape) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, int) else "batch" for d in shape) + "]"


def check_onnx_signature(path, session, spec: ObservationSpec) -> int:
    """Every input and output of the ONNX graph has the name, dtype and shape the policy config implies
    (batch dimension first, any size); returns the state size. A model whose metadata says 32x32 images
    but whose graph takes 64x64 is refused here, at configure, not frame by frame at run time."""
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    expected = onnx_input_names(spec)
    flags = [encode_input(encoder) for encoder in spec.encoders]
    if sorted(inputs) == sorted(set(expected) - set(flags)):  # the graph of an export of before 0a45f134
        raise BackendError(
            f"{path}: an ONNX export written by liquid_control before 2026-11-30 (no {' / '.join(flags)} input; "
            f"its state holds the core alone), which this version does not run; export the .pt again "
            f"(`liquid-control export {shlex.quote(str(Path(path).with_suffix('.pt')))}`, where torch is installed) "
            "and use the new .onnx"
        )
    if sorted(inputs) != sorted(expected):
        raise BackendError(f"{path}: ONNX inputs {sorted(inputs)} do not match the policy config {expected}")
    if sorted(outputs) != ["action", "state_out"]:
        raise BackendError(f"{path}: ONNX outputs {sorted(outputs)}, expected ['action', 'state_out']")
    state_dims = inputs["state"].shape
    if len(state_dims) != 2 or not isinstance(state_dims[1], int) or state_dims[1] < 1:
        raise BackendError(f"{path}: ONNX input 'state' has shape {_onnx_shape(state_dims)}, expected [batch, S]")
    state_size = state_dims[1]
    want = {
        ObservationSpec.obs_key(s): (np.uint8 if s == CAMERA else np.float32, shape)
        for s, shape in spec.sensors.items()
    }
    want.update(state=(np.float32, (state_size,)), dt=(np.float32, ()))
    if "event" in spec.timing:
        want["event"] = (np.int64, ())
    if "ages" in spec.timing:
        want["ages"] = (np.float32, (len(spec.update_on),))
    problems = []
    for encoder in spec.encoders:  # scalar flags, one per call, no batch dimension
        got = inputs[encode_input(encoder)]
        if got.type != "tensor(bool)" or len(got.shape) != 0:
            problems.append(
                f"input {got.name!r} is {got.type} {_onnx_shape(got.shape)}, expected a tensor(bool) scalar"
            )
    for name, (dtype, shape) in want.items():
        got = inputs[name]
        if got.type != _ONNX_TYPES[dtype]:
            problems.append(f"input {name!r} is {got.type}, the policy config needs {_ONNX_TYPES[dtype]}")
        if not _dims_match(got.shape, shape):
            problems.append(
                f"input {name!r} has shape {_onnx_shape(got.shape)}, the policy config needs "
                f"{_onnx_shape(('batch', *shape))}"
            )
    for name, shape in (("action", (spec.action_size,)), ("state_out", (state_size,))):
        got = outputs[name]
        if got.type != "tensor(float)" or not _dims_match(got.shape, shape):
            problems.append(
                f"output {name!r} is {got.type} {_onnx_shape(got.shape)}, expected tensor(float) "
                f"{_onnx_shape(('batch', *shape))}"
            )
    if problems:
        raise BackendError(
            f"{path}: the ONNX graph does not match its policy config (metadata {ONNX_CONFIG_KEY!r}): "
            + "; ".join(problems)
        )
    return state_size


def _dims_match(dims, shape: tuple) -> bool:
    """ONNX dims (first: the batch, named or 1: the runtime feeds one sample) against the per-sample ``shape``;
    named/unknown dims match any size."""
    if len(dims) != 1 + len(shape) or (isinstance(dims[0], int) and dims[0] != 1):
        return False
    return all(not isinstance(d, int) or d == want for d, want in zip(dims[1:], shape))


def torch_available() -> bool:
    """Whether torch can be imported here (else ``auto`` loads the ONNX backend)."""
    return importlib.util.find_spec("torch") is not None


def model_bytes(path) -> bytes:
    """An ONNX file's bytes, for onnxruntime to load from memory: given the path, onnxruntime encodes it as UTF-8
    whatever the locale, so under a Latin-1 locale (or with a name that is not UTF-8) a file at a non-ASCII path
    was "File doesn't exist" (the robot's node then fell back to torch, or failed without it)."""
    return Path(path).read_bytes()


def onnxruntime_module():
    """``import onnxruntime``, the package's one import of it, with its telemetry off unless the environment
    already sets ``ORT_DISABLE_TELEMETRY`` (``0``: on): onnxruntime 1.32 starts telemetry in its import, which
    keeps a device ID under ~/.cache/Microsoft and, where HOME is read-only or not a folder (a robot's service
    user), printed a coloured warning line "Failed to persist telemetry device ID" before any setting could
    silence it. Its own errors and warnings (a model it cannot load) are still printed and raised."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime

    return onnxruntime


def import_onnxruntime(path: str | Path):
    """The onnxruntime module, or a ``ValueError`` naming ``path`` and why it cannot run it: not installed, or an
    install whose import fails (a missing shared library raises OSError, a numpy it was not built for others).
    Only ImportError was caught: any other failure escaped ``load_backend``, so ``backend: auto`` failed instead
    of running the checkpoint with torch."""
    try:
        onnxruntime = onnxruntime_module()
    except ImportError as exc:
        raise ValueError(f"{path}: onnxruntime is not installed, cannot run an ONNX policy") from exc
    except Exception as exc:  # a broken install: not a crash of whoever asked for the model
        raise ValueError(
            f"{path}: onnxruntime fails to import ({type(exc).__name__}: {exc}), cannot run an ONNX policy"
        ) from exc
    return onnxruntime


def _not_onnx(path, exc: Exception) -> str:
    """Why onnxruntime could not load ``path``: a torch checkpoint (torch.save's zip archive) renamed to .onnx is
    said as such, anything else is onnxruntime's own message ("Protobuf parsing failed" told a user nothing)."""
    try:
        with open(path, "rb") as handle:
            torch_zip = handle.read(4) == b"PK\x03\x04"
    except OSError:
        torch_zip = False
    if torch_zip:
        return "it is a torch checkpoint (torch.save's zip archive), not an ONNX model: a renamed .pt?"
    return str(exc)


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX model file (where an export keeps its policy config), read the way
    ``OnnxBackend`` reads them: with onnxruntime, what a robot that runs ONNX policies has (the onnx package
    may be missing there). Raises ``ValueError`` naming the file when onnxruntime cannot load it, or when it is an
    export of a newer format than this version reads (``export_format``)."""
    ort = import_onnxruntime(path)
    try:
        session = ort.InferenceSession(model_bytes(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ValueError(f"{path}: not a loadable ONNX model ({_not_onnx(path, exc)})") from None
    meta = dict(session.get_modelmeta().custom_metadata_map)
    try:
        export_format(path, meta)
    except BackendError as exc:
        raise ValueError(str(exc)) from None
    return meta


def checkpoint_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a policy file's contents, read in 1 MiB chunks (what an export records of its source, and
    what the evaluation and the model cards identify checkpoints by)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class CheckpointReplacedError(RuntimeError):
    """A policy file replaced while it was read (:func:`load_hashed_policy`)."""


def load_hashed_policy(path: str | Path):
    """The policy in ``path`` and the SHA-256 of the bytes it was loaded from (what an export, and a run that
    starts from it with ``--init-from``, record of it): the file is hashed before and after loading, and a checkpoint
    replaced meanwhile (a training run saving its next selection) is a ``CheckpointReplacedError``. Hashing it
    apart from the loading recorded the new file's SHA-256 over the old weights: an export that ``backend: auto``
    then ran in its place, a run whose record of its start names a file it did not start from. Raises
    ``PolicyLoadError`` for a file that cannot be loaded."""
    from liquid_control.policy import load_policy

    try:
        before = checkpoint_sha256(path)
    except OSError:  # missing, a folder, unreadable: load_policy says which
        before = None
    policy = load_policy(path)
    if before is None or checkpoint_sha256(path) != before:
        raise CheckpointReplacedError("the checkpoint changed while it was read (is a training run still writing it?)")
    return policy, before


def _checkpoint_asked_for_sha256(path: Path) -> str:
    """The SHA-256 of the ``.pt`` the user named, or a BackendError naming it when it cannot be read (a
    PermissionError escaped ``load_backend`` raw where an ``.onnx`` lay next to it)."""
    try:
        return checkpoint_sha256(path)
    except OSError as exc:
        raise BackendError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def _export_of(path: Path, onnx_path: Path) -> "OnnxBackend":
    """The ONNX export next to ``path``, refused when it records another checkpoint than the file there now."""
    candidate = OnnxBackend(onnx_path)
    if (
        candidate.source_sha256 is not None
        and path.is_file()
        and candidate.source_sha256 != _checkpoint_asked_for_sha256(path)
    ):
        raise BackendError(
            f"{onnx_path}: exported from another version of {path.name} or from another policy (it holds "
            f"{_policy_name(candidate.config)}; checkpoint SHA-256 differs); re-export it (`liquid-control export "
            f"{path}`, where torch is installed) and copy both files"
        )
    if candidate.outdated:  # runs (no torch here, or onnx asked for), but not silently
        candidate.note = (
            f"{onnx_path}: runs in place of {path.name}, but was exported by an older liquid_control ("
            f"{candidate.outdated}); re-export it (`liquid-control export {shlex.quote(str(path))}`, where torch is "
            "installed)"
        )
    elif candidate.source_sha256 is None and path.is_file():  # an export older than the record: runs, warned
        candidate.note = (
            f"{onnx_path}: runs in place of {path.name} unchecked: the export does not record which checkpoint it "
            "was exported from, so it may be another policy's (re-export it: "
            f"`liquid-control export {shlex.quote(str(path))}`, "
            "where torch is installed)"
        )
    return candidate


def _onnx_by_name_note(path: Path, chosen: "OnnxBackend", checkpoint: Path) -> str | None:
    """The caution for an ``.onnx`` asked for by name, which runs as asked: exported by an older liquid_control (its
    graph computes as then), and/or not exported from the ``.pt`` beside it (retrained since?); None if neither."""
    export = f"`liquid-control export {shlex.quote(str(checkpoint))}`"
    older = f"was exported by an older liquid_control ({chosen.outdated})" if chosen.outdated else ""
    recorded = chosen.source_sha256
    if recorded is None or not checkpoint.is_file():
        return f"{path}: runs as asked, but {older}; re-export it from its checkpoint ({export})" if older else None
    try:
        beside = checkpoint_sha256(checkpoint)
    except OSError as exc:  # the .pt only adds a caution: one that cannot be read does not stop the .onnx asked for
        return (
            f"{path}: runs as asked{', but ' + older if older else ''}; {checkpoint.name} beside it could not be "
            f"read ({exc.strerror or exc}), so whether it is the checkpoint this was exported from is unchecked"
        )
    if recorded != beside:
        # runs as asked, but not silently: the usual slip is a retrained .pt and a node still pointed at the .onnx
        return (
            f"{path}: runs as asked, but {older + ', and ' if older else ''}{checkpoint.name} beside it is not the "
            f"checkpoint it was exported from (retrained since?): re-export it ({export}) to run that one"
        )
    return f"{path}: runs as asked, but {older}; re-export it ({export})" if older else None


def _policy_name(config: dict) -> str:
    """The policy an export holds, for a message about an export that is not of the checkpoint beside it."""
    return f"policy {config.get('name')!r}" if isinstance(config.get("name"), str) else "an unnamed policy"


def load_backend(path: str | Path, backend: str = "auto", warn: bool = True):
    """Open a policy file: ``.pt`` checkpoint with torch, ``.onnx`` with onnxruntime; a caution about the choice
    (the backend's ``note``: a stale export not taken, an export that cannot be checked, an ``.onnx`` asked for by
    name beside a ``.pt`` it was not exported from) is also a warning when
    ``warn`` (the ROS node logs it instead).

    ``backend='auto'`` runs a ``.pt`` with onnxruntime when the ``.onnx`` of the same name next to it (what
    ``liquid-control export`` writes by default) was exported from this very file (its SHA-256 is in the
    model's metadata) and onnxruntime is installed: one policy step costs about half of torch's (the ROS node's
    latency, ``benchmarks/bench_node.py``). Otherwise it runs the ``.pt`` with torch, and without torch the
    ``.onnx`` (refused if it was exported from another version of the ``.pt``). The results agree to ~1e-6
    (``liquid-control export`` checks); chaotic closed loops can still end differently (see the model cards).
    """
    chosen = _choose_backend(Path(path), backend)
    if warn and chosen.note:
        warnings.warn(chosen.note, stacklevel=2)
    return chosen


def backend_modules(path: str | Path, backend: str = "auto") -> list[str]:
    """The installed modules :func:`load_backend` will import for ``path`` with ``backend``: onnxruntime for an
    export (auto's too, where one is next to the checkpoint: torch is then imported only if it is stale), else torch,
    for a caller that must import them first (the ROS node, where a stop signal must not land inside their C++
    import code)."""
    path = Path(path)
    installed = [name for name in ("onnxruntime", "torch") if importlib.util.find_spec(name) is not None]
    export = path.suffix == ".onnx" or backend == "onnx" or (backend == "auto" and path.with_suffix(".onnx").is_file())
    wanted = "onnxruntime" if export and "onnxruntime" in installed else "torch"
    return [wanted] if wanted in installed else []


def missing_export_text(path: Path, why: str) -> str:
    """A .pt that must run as its export (``why``: torch is not installed, or the onnx backend was asked for) and
    has none beside it: what to do."""
    return (
        f"{path}: {why} and there is no exported {path.with_suffix('.onnx').name} next to it "
        f"(write one with `liquid-control export {shlex.quote(str(path))}` where torch is)"
    )


def _choose_backend(path: Path, backend: str):
    if backend not in ("auto", "torch", "onnx"):
        raise BackendError(f"unknown backend {backend!r}; choose from auto, torch, onnx")
    if path.is_dir():  # e.g. a training run's folder (was 'unknown policy file type', or for x.pt 'no such file')
        inside = [path / name for name in ("policy.pt", "policy.onnx") if (path / name).is_file()]
        raise BackendError(
            f"{path}: is a folder, not a policy file" + (f"; did you mean {inside[0]}?" if inside else "")
        )
    if path.suffix == ".onnx":
        if backend == "torch":
            raise BackendError(f"{path}: an ONNX model cannot run with the torch backend")
        if not path.is_file():
            raise BackendError(f"{path}: no such policy file")
        chosen, checkpoint = OnnxBackend(path), path.with_suffix(".pt")
        chosen.note = _onnx_by_name_note(path, chosen, checkpoint)
        return chosen
    if path.suffix != ".pt":
        raise BackendError(f"{path}: unknown policy file type; expected a .pt checkpoint or an .onnx model")
    onnx_path = path.with_suffix(".onnx")
    # auto: the checkpoint with torch; its export without torch, or where only the export is there (the .pt not
    # copied to the robot, or an export of a shipped policy written in the working directory)
    if backend == "onnx" or (
        backend == "auto" and (not torch_available() or (onnx_path.is_file() and not path.exists()))
    ):
        if not onnx_path.is_file():
            why = "torch is not installed" if backend == "auto" else "backend 'onnx' was requested"
            raise BackendError(missing_export_text(path, why))
        return _export_of(path, onnx_path)
    if not path.is_file():
        raise BackendError(f"{path}: no such policy file")
    if backend == "torch" and not torch_available():  # was a ModuleNotFoundError from liquid_control.policy
        instead = (
            f"backend 'auto' or 'onnx' runs its export {onnx_path.name} next to it"
            if onnx_path.is_file()
            else f"export it where torch is (`liquid-control export {shlex.quote(str(path))}`) "
            "and run that with backend 'auto' or 'onnx'"
        )
        raise BackendError(f"{path}: backend 'torch' was requested but torch is not installed here; {instead}")
    skipped = None
    if backend == "auto" and onnx_path.is_file():
        if importlib.util.find_spec("onnxruntime") is None:
            skipped = f"onnxruntime is not installed, so the export {onnx_path.name} next to it does not run"
        else:
            checkpoint_sha = _checkpoint_asked_for_sha256(path)
            try:
                candidate = OnnxBackend(onnx_path)
            except BackendError as exc:  # not a usable export: torch runs the checkpoint
                skipped = f"{onnx_path.name} next to it is not a usable ONNX policy ({exc})"
            else:
                if candidate.source_sha256 == checkpoint_sha and not candidate.outdated:
                    return candidate
                candidate.close()
                skipped = f"{onnx_path.name} next to it " + (
                    "does not record which checkpoint it was exported from (re-export it: liquid-control export)"
                    if candidate.source_sha256 is None
                    else "was exported from another version of it or from another policy (it holds "
                    f"{_policy_name(candidate.config)}; re-export it: liquid-control export)"
                    if candidate.source_sha256 != checkpoint_sha
                    else f"was exported by an older liquid_control ({candidate.outdated}; re-export it: "
                    "liquid-control export)"
                )
    from liquid_control.policy import PolicyLoadError, load_policy

    try:
        torch_backend = TorchBackend(load_policy(path))
    except PolicyLoadError as exc:  # corrupt file, config not matching the weights...
        raise BackendError(str(exc)) from None
    torch_backend.note = skipped and f"{path}: runs with torch: {skipped}"
    return torch_backend
