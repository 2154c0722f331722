"""`liquid-control export`: a policy checkpoint -> a single-step ONNX model for deployment without torch.

The model computes one ``Policy.step`` for a batch. Inputs (``backends.onnx_input_names``): ``image`` (uint8
B,H,W,3, when the policy has a camera), one float32 (B, n) input per vector key (config order), the time
inputs the policy uses (``event`` int64 (B,), ``ages`` float32 (B, len(update_on))), ``state`` (B, S) and
``dt`` (B,) seconds, and one bool scalar ``encode_<encoder>`` per encoder (``camera``, ``vectors``): an
encoder whose flag is false does not run, its features come from the state (an ONNX ``If``, so the camera CNN
costs nothing on an IMU update). Outputs ``action`` (B, A) and ``state_out`` (B, S). The policy config is
stored in the model's metadata (``liquid_control.policy_config``) so the runtime knows the inputs, the update
sensors and the action bounds; so is, as JSON, what the checkpoint records of the sensors it was trained on
(``liquid_control.training_camera``, ``liquid_control.training_sensor_rates``, where it has them:
``backends.TRAINING_RECORD_KEYS``), which the ONNX backend gives as ``training_record`` as the torch backend does.

The graph is assembled from traced pieces (each encoder, and the core's update with the action head), so that
the encoders can sit inside ``If`` branches; with ``core.max_step`` the core's update is an ONNX ``Loop`` over one
core step (the same sub-steps as ``Policy.advance``), then the action head. The model also records the SHA-256 of
the checkpoint it was exported from (``backend: auto`` runs only a matching export), and the format of this layout
(``liquid_control.export_format``, ``backends.ONNX_FORMAT``: raise it with any change of the inputs, outputs or
metadata entries, so that an older liquid_control refuses the new exports naming them), and the revision of what
the graph computes (``liquid_control.graph_revision``, ``backends.ONNX_GRAPH_REVISION``: raise it, with an entry in
``backends.GRAPH_CHANGES``, with any change of the arithmetic, so that ``auto`` no longer takes an older export).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from liquid_control.paths import (
    first_missing_folder,
    name_length_problem,
    output_file_problem,
    policies_dir,
    remove_made_folder,
    shipped_name_hint,
    shipped_policy_for,
    user_path,
)

from .backends import (
    CAMERA,
    ONNX_CONFIG_KEY,
    ONNX_FORMAT,
    ONNX_FORMAT_KEY,
    ONNX_GRAPH_KEY,
    ONNX_GRAPH_REVISION,
    ONNX_SOURCE_KEY,
    ONNX_TRAINING_PREFIX,
    VECTORS,
    CheckpointReplacedError,
    ObservationSpec,
    checkpoint_sha256,
    encode_input,
    load_hashed_policy,
    model_bytes,
    onnx_input_names,
    onnxruntime_module,
    training_record_of,
)

OPSET = 17
MIN_OPSET = 13  # Unsqueeze with an axes input (the sub-step loop), Clip with min/max inputs, Slice with inputs


def max_opset() -> int:
    """The newest ONNX opset torch's exporter writes."""
    try:
        from torch.onnx._constants import ONNX_MAX_OPSET

        return int(ONNX_MAX_OPSET)
    except (ImportError, AttributeError):  # a torch that moved it: the opset this module is tested with
        return OPSET


def example_inputs(
    policy, batch: int = 1, seed: int = 0, encode: bool = True, low_contrast: bool = False
) -> dict[str, np.ndarray]:
    """Random inputs of the right shapes and dtypes (used to trace the model and to check parity); ``encode``
    sets every encoder's flag; ``low_contrast``: each image one grey level (dark to bright) +-1, as fog, dusk or a
    wall give, where a normalising encoder divides by a small standard deviation and magnifies rounding."""
    rng = np.random.default_rng(seed)
    spec = ObservationSpec.from_config(policy.config)
    out = {}
    for sensor, shape in spec.sensors.items():
        if sensor == CAMERA and low_contrast:
            level = rng.integers(2, 254, size=(batch,) + (1,) * len(shape))
            out["image"] = (level + rng.integers(-1, 2, size=(batch,) + shape)).astype(np.uint8)
        elif sensor == CAMERA:
            out["image"] = rng.integers(0, 256, size=(batch,) + shape, dtype=np.uint8)
        else:
            out[sensor] = rng.normal(size=(batch,) + shape).astype(np.float32)
    if "event" in spec.timing:
        out["event"] = rng.integers(0, len(spec.update_on), size=batch).astype(np.int64)
    if "ages" in spec.timing:
        out["ages"] = rng.uniform(0.0, 0.2, size=(batch, len(spec.update_on))).astype(np.float32)
    out["state"] = (0.5 * rng.normal(size=(batch, policy.state_size))).astype(np.float32)
    out["dt"] = rng.uniform(0.01, 0.2, size=(batch,)).astype(np.float32)
    for encoder in spec.encoders:
        out[encode_input(encoder)] = np.array(encode)
    return out


def _expm1_symbolic(g, x):
    """ONNX has no expm1 (the GRU-ODE core, the LTC ``exponential`` solver): ``Exp(x) - 1``. Its error is absolute,
    ~1e-7 around x = 0 (relative precision is lost for tiny x): the cores scale it by a state difference and add
    it to the state, so the step stays within the parity tolerance; x = 0 (dt = 0) still gives exactly 0."""
    import torch

    return g.op("Sub", g.op("Exp", x), g.op("Constant", value_t=torch.tensor(1.0, dtype=torch.float32)))


def _drop_empty_symbolic_group(name: str) -> None:
    """Remove the empty entry for ``name`` that torch's ``unregister_custom_op_symbolic`` leaves behind: with it, a
    later export of that operator in the process (a user's own ``torch.onnx.export``) failed with 'ValueError: min()
    arg is an empty sequence' instead of torch's UnsupportedOperatorError (torch's private registry; a torch that
    moved it keeps the entry)."""
    try:
        from torch.onnx._internal.torchscript_exporter.registration import registry

        group = registry._registry.get(name)
        if group is not None and not group._functions:
            del registry._registry[name]
    except (ImportError, AttributeError):
        pass


@contextlib.contextmanager
def _traceable(opset: int):
    """Patch two eager idioms that the tracer turns into wrong graphs, for the duration of an export.

    - ``torch.as_tensor(tensor, ...)`` is recorded as a constant (freezing e.g. ``dt`` into the graph):
      it becomes ``tensor.to(...)``, recorded as an operation on the input.
    - ``tensor.split(n)`` with ``n`` >= the dimension (cache-sized chunking, one chunk at deployment batch
      sizes) is recorded as an ONNX Split of size ``n`` that fails at run time: it returns ``(tensor,)``.

    It also silences the exporter's log (its ``verbose`` switch turns it on for good): an operator it cannot
    export dumped the whole traced graph to stderr before the error that ``export_checked`` reports in a line,
    and gives ``aten::expm1``, which the exporter lacks, an ONNX form at ``opset`` (``_expm1_symbolic``).
    """
    import torch

    as_tensor, split = torch.as_tensor, torch.Tensor.split
    log = getattr(torch._C, "_jit_onnx_log", None)

    def traceable_as_tensor(data, dtype=None, device=None):
        if isinstance(data, torch.Tensor):
            return data.to(dtype=dtype or data.dtype, device=device or data.device)
        return as_tensor(data, dtype=dtype, device=device)

    def traceable_split(self, split_size, dim=0):
        if isinstance(split_size, int) and split_size >= self.shape[dim]:
            return (self,)
        return split(self, split_size, dim)

    torch.as_tensor, torch.Tensor.split = traceable_as_tensor, traceable_split
    if log is not None:
        torch._C._jit_onnx_log = lambda *args: None
    torch.onnx.register_custom_op_symbolic("aten::expm1", _expm1_symbolic, opset)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::expm1", opset)
        _drop_empty_symbolic_group("aten::expm1")
        torch.as_tensor, torch.Tensor.split = as_tensor, split
        if log is not None:
            torch._C._jit_onnx_log = log


def _pieces(policy):
    """The traced pieces: {name: (module, input names, output names)}; the core piece ends in the action head."""
    import torch

    spec = ObservationSpec.from_config(policy.config)

    class CameraPiece(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.policy = policy

        def forward(self, image):
            return self.policy.camera(image)

    class VectorPiece(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.policy = policy

        def forward(self, *vectors):
            return self.policy.vectors(torch.cat([v.to(torch.float32) for v in vectors], dim=-1))

    class CorePiece(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.policy = policy

        def forward(self, features, core_state, dt, *time):
            obs = dict(zip(spec.timing, time))
            return self.policy.advance(features, self.policy.time_inputs(obs, (dt.shape[0],)), core_state, dt)

    class CoreStepPiece(torch.nn.Module):
        """One core step without sub-steps (the body of the sub-step loop): -> core state."""

        def __init__(self):
            super().__init__()
            self.policy = policy

        def forward(self, features, core_state, dt, *time):
            obs = dict(zip(spec.timing, time))
            x = self.policy.core_input(features, self.policy.time_inputs(obs, (dt.shape[0],)))
            return self.policy.core_step(x, core_state, dt)

    class HeadPiece(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.policy = policy

        def forward(self, core_state):
            return self.policy.act_from_output(self.policy.core.output(core_state))

    pieces = {}
    if CAMERA in spec.encoders:
        pieces[CAMERA] = (CameraPiece(), ["image"], ["features"])
    if VECTORS in spec.encoders:
        pieces[VECTORS] = (VectorPiece(), list(spec.encoders[VECTORS]), ["features"])
    pieces["core"] = (CorePiece(), ["features", "core_state", "dt"] + list(spec.timing), ["action", "state_out"])
    pieces["core_step"] = (CoreStepPiece(), ["features", "core_state", "dt"] + list(spec.timing), ["state_out"])
    pieces["head"] = (HeadPiece(), ["core_state"], ["action"])
    return pieces


def _substep_loop(policy, pieces, inputs: dict, opset: int):
    """Nodes and initializers of the core update with ``core.max_step``: the counts of ``cells.dt.substep_counts``
    (the same float32 ops), an ONNX ``Loop`` over the most sub-steps of the batch in which sample b steps while
    the iteration is below its count and then holds its state, then the action head."""
    from onnx import TensorProto, helper

    from liquid_control.cells.dt import DT_TOLERANCE_S, MAX_SUBSTEPS

    nodes = [
        helper.make_node(
            "Constant", [], ["max_step"], value=helper.make_tensor("v", TensorProto.FLOAT, [], [policy.max_step])
        ),
        helper.make_node(
            "Constant", [], ["tolerance"], value=helper.make_tensor("v", TensorProto.FLOAT, [], [DT_TOLERANCE_S])
        ),
        helper.make_node("Sub", ["dt", "tolerance"], ["dt_less_tolerance"]),
        helper.make_node("Div", ["dt_less_tolerance", "max_step"], ["steps_needed"]),
        helper.make_node("Ceil", ["steps_needed"], ["steps_ceil"]),
        helper.make_node("Constant", [], ["one"], value=helper.make_tensor("v", TensorProto.FLOAT, [], [1.0])),
        helper.make_node(
            "Constant", [], ["most"], value=helper.make_tensor("v", TensorProto.FLOAT, [], [float(MAX_SUBSTEPS)])
        ),
        helper.make_node("Clip", ["steps_ceil", "one", "most"], ["counts"]),
        helper.make_node("Div", ["dt", "counts"], ["sub_dt"]),
        helper.make_node("ReduceMax", ["counts"], ["counts_max"], keepdims=0),
        helper.make_node("Cast", ["counts_max"], ["trip_count"], to=TensorProto.INT64),
        helper.make_node("Constant", [], ["loop_cond"], value=helper.make_tensor("v", TensorProto.BOOL, [], [True])),
    ]
    module, names, outputs = pieces["core_step"]
    graph = _trace(module, names, outputs, inputs, opset)
    rename = {n: n for n in names} | {"dt": "sub_dt", "core_state": "state_in", "state_out": "stepped"}
    body_nodes, initializers = _inline(graph, "core_step", rename)
    size = policy.core.state_size
    body_nodes += [
        helper.make_node("Cast", ["iteration"], ["iteration_f"], to=TensorProto.FLOAT),
        helper.make_node("Less", ["iteration_f", "counts"], ["active"]),
        helper.make_node("Constant", [], ["axis_1"], value=helper.make_tensor("v", TensorProto.INT64, [1], [1])),
        helper.make_node("Unsqueeze", ["active", "axis_1"], ["active_2d"]),
        helper.make_node("Where", ["active_2d", "stepped", "state_in"], ["state_next"]),
        helper.make_node("Identity", ["cond_in"], ["cond_out"]),
    ]
    body = helper.make_graph(
        body_nodes,
        "substep",
        [
            helper.make_tensor_value_info("iteration", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state_in", TensorProto.FLOAT, ["batch", size]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state_next", TensorProto.FLOAT, ["batch", size]),
        ],
    )
    nodes.append(helper.make_node("Loop", ["trip_count", "loop_cond", "core_state"], ["core_state_out"], body=body))
    module, names, outputs = pieces["head"]
    graph = _trace(module, names, outputs, inputs, opset)
    head_nodes, head_inits = _inline(graph, "head", {"core_state": "core_state_out", "action": "action"})
    return nodes + head_nodes, initializers + head_inits


def _trace(module, names: list[str], outputs: list[str], inputs: dict, opset: int):
    """One piece as an ONNX graph (batch dimension dynamic)."""
    import onnx
    import torch

    args = tuple(torch.from_numpy(inputs[n]) for n in names)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), _traceable(opset):
        # The TorchScript exporter (onnxscript, needed by the dynamo one, is not a dependency); tracing warns
        # about the shape and dt validity checks, which are constant for valid inputs. (Not under no_grad:
        # the exporter then drops the graph inputs.)
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            args,
            buffer,
            dynamo=False,
            input_names=names,
            output_names=outputs,
            dynamic_axes={n: {0: "batch"} for n in names + outputs},
            opset_version=opset,
        )
    return onnx.load_from_string(buffer.getvalue()).graph


def _inline(graph, prefix: str, rename: dict):
    """Nodes and initializers of ``graph`` with every internal name prefixed (``rename`` maps its inputs and
    outputs to names of the enclosing graph)."""
    import onnx

    names = {i.name for i in graph.initializer}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
    mapping = {n: rename.get(n, f"{prefix}/{n}") for n in names if n}
    nodes = []
    for node in graph.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = f"{prefix}/{node.name}"
        copy.input[:] = [mapping.get(n, n) for n in node.input]
        copy.output[:] = [mapping.get(n, n) for n in node.output]
        nodes.append(copy)
    initializers = []
    for init in graph.initializer:
        copy = onnx.TensorProto()
        copy.CopyFrom(init)
        copy.name = mapping[init.name]
        initializers.append(copy)
    return nodes, initializers


def build_onnx(policy, opset: int = OPSET, source: str | Path | None = None, source_sha256: str | None = None):
    """The single-step ONNX model of ``policy`` (an ``onnx.ModelProto``, checked), its metadata holding the config
    and the training record of ``policy.metadata`` (``load_policy``'s; none for a policy without); ``source``: the
    checkpoint file it was loaded from, whose SHA-256 the metadata records (``backend: auto`` runs only a matching
    export); ``source_sha256``: that SHA-256 taken when the file was read (``load_hashed_policy``), recorded instead of
    hashing ``source`` now, when it may hold another checkpoint (a training run still writing it)."""
    import onnx
    import torch
    from onnx import TensorProto, helper

    from liquid_control.policy.config import recorded_config  # an exported policy's side (torch), not the runtime's

    dtype = next(policy.parameters()).dtype
    if dtype != torch.float32:  # traced with float32 inputs: a float64 policy failed on a state dtype of its core
        raise ExportError(
            f"the ONNX model computes in float32, the policy's weights are {dtype}: export policy.float()"
        )
    spec = ObservationSpec.from_config(policy.config)
    inputs = example_inputs(policy)
    core_size = policy.core.state_size
    inputs["core_state"] = inputs["state"][:, :core_size]
    with torch.no_grad():
        features = policy.encode({k: torch.from_numpy(v) for k, v in inputs.items()}, (1,))
    inputs["features"] = features.numpy()
    nodes, initializers, feature_names = [], [], []

    def const(name, values):
        initializers.append(helper.make_tensor(name, TensorProto.INT64, [len(values)], values))
        return name

    # state = [core state | features of each encoder]
    bounds = [0, core_size]
    for size in policy.encoder_sizes:
        bounds.append(bounds[-1] + size)
    const("axes_1", [1])
    for i, name in enumerate(["core"] + policy.encoder_names):
        nodes.append(
            helper.make_node(
                "Slice",
                ["state", const(f"{name}_start", [bounds[i]]), const(f"{name}_end", [bounds[i + 1]]), "axes_1"],
                [f"{name}_cached" if name != "core" else "core_state"],
            )
        )
    pieces = _pieces(policy)
    for name in policy.encoder_names:
        module, names, outputs = pieces[name]
        graph = _trace(module, names, outputs, inputs, opset)
        branch_nodes, branch_inits = _inline(graph, name, {n: n for n in names} | {"features": f"{name}_new"})
        size = policy.encoder_sizes[policy.encoder_names.index(name)]
        out = [helper.make_tensor_value_info(f"{name}_new", TensorProto.FLOAT, ["batch", size])]
        then_branch = helper.make_graph(branch_nodes, f"encode_{name}", [], out, branch_inits)
        keep = [helper.make_tensor_value_info(f"{name}_kept", TensorProto.FLOAT, ["batch", size])]
        else_branch = helper.make_graph(
            [helper.make_node("Identity", [f"{name}_cached"], [f"{name}_kept"])], f"keep_{name}", [], keep
        )
        nodes.append(
            helper.make_node(
                "If", [encode_input(name)], [f"{name}_features"], then_branch=then_branch, else_branch=else_branch
            )
        )
        feature_names.append(f"{name}_features")
    nodes.append(helper.make_node("Concat", feature_names, ["features"], axis=1))
    if policy.max_step is None:
        module, names, outputs = pieces["core"]
        graph = _trace(module, names, outputs, inputs, opset)
        core_nodes, core_inits = _inline(
            graph, "core", {n: n for n in names} | {"action": "action", "state_out": "core_state_out"}
        )
    else:
        core_nodes, core_inits = _substep_loop(policy, pieces, inputs, opset)
    nodes += core_nodes
    initializers += core_inits
    nodes.append(helper.make_node("Concat", ["core_state_out", "features"], ["state_out"], axis=1))

    def value_info(name):
        array = inputs[name]
        if array.ndim == 0:
            return helper.make_tensor_value_info(name, TensorProto.BOOL, [])
        kind = {np.uint8: TensorProto.UINT8, np.int64: TensorProto.INT64}.get(array.dtype.type, TensorProto.FLOAT)
        return helper.make_tensor_value_info(name, kind, ["batch", *array.shape[1:]])

    outputs = [
        helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", policy.action_size]),
        helper.make_tensor_value_info("state_out", TensorProto.FLOAT, ["batch", policy.state_size]),
    ]
    graph = helper.make_graph(
        nodes, policy.config["name"], [value_info(n) for n in onnx_input_names(spec)], outputs, initializers
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="liquid_control")
    # the config as the policy file records it (one trained from bags: without the settings of simulated episodes)
    recorded = recorded_config(policy.config, getattr(policy, "metadata", None))
    entry = model.metadata_props.add()
    entry.key, entry.value = ONNX_FORMAT_KEY, str(ONNX_FORMAT)
    entry = model.metadata_props.add()
    entry.key, entry.value = ONNX_GRAPH_KEY, str(ONNX_GRAPH_REVISION)
    entry = model.metadata_props.add()
    entry.key, entry.value = ONNX_CONFIG_KEY, json.dumps(recorded)
    if source_sha256 is None and source is not None:
        source_sha256 = checkpoint_sha256(source)
    if source_sha256 is not None:
        entry = model.metadata_props.add()
        entry.key, entry.value = ONNX_SOURCE_KEY, source_sha256
    for key, value in training_record_of(getattr(policy, "metadata", None) or {}).items():
        try:
            text = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ExportError(f"the policy file's metadata {key!r} cannot be written as JSON ({exc})") from None
        entry = model.metadata_props.add()
        entry.key, entry.value = ONNX_TRAINING_PREFIX + key, text
    onnx.checker.check_model(model, full_check=True)
    return model


def export_onnx(
    policy, path: str | Path, opset: int = OPSET, source: str | Path | None = None, source_sha256: str | None = None
) -> Path:
    """Write the single-step ONNX model of ``policy`` to ``path`` (batch dimension dynamic); ``source``,
    ``source_sha256``: the checkpoint file of ``policy`` (recorded, see ``build_onnx``)."""
    from liquid_control.atomic_file import atomic_write

    model = build_onnx(policy, opset, source, source_sha256)
    path = Path(path)
    with atomic_write(path) as handle:  # a killed or failed export leaves no truncated model beside the checkpoint
        handle.write(model.SerializeToString())
    return path


def parity(policy, onnx_path: str | Path, batch: int = 4, seed: int = 1) -> float:
    """Max abs difference between torch and onnxruntime (action and state) on random inputs, with every
    encoder running (on random and on low-contrast images) and with every encoder's features taken from the
    state; with ``core.max_step`` also at dts within a few us of its multiples, where the sub-step counts turn
    (``cells.dt.substep_counts``: a graph counting them otherwise passed the random dts and was 0.32 off there)."""
    import torch

    ort = onnxruntime_module()  # an ImportError as it was: the command says which package to install
    session = ort.InferenceSession(model_bytes(onnx_path), providers=["CPUExecutionProvider"])
    spec = ObservationSpec.from_config(policy.config)
    worst = 0.0
    cases = [(True, False, None), (True, True, None), (False, False, None)]
    if policy.max_step:
        near = [k * policy.max_step + e for k in (1, 2) for e in (-2e-7, 0.0, 2e-7, 5e-7, 9e-7, 1.2e-6, 3e-6)]
        cases.append((True, False, np.array(near, dtype=np.float32)))
    for encode, low_contrast, dts in cases:
        size = batch if dts is None else len(dts)
        inputs = example_inputs(policy, batch=size, seed=seed, encode=encode, low_contrast=low_contrast)
        if dts is not None:
            inputs["dt"] = dts
        obs = {k: torch.from_numpy(v) for k, v in inputs.items() if k not in ("state", "dt")}
        with torch.no_grad():
            ref = policy.step(
                obs,
                torch.from_numpy(inputs["state"]),
                torch.from_numpy(inputs["dt"]),
                encode=None if encode else (),
            )
        got = session.run(["action", "state_out"], {n: inputs[n] for n in onnx_input_names(spec)})
        for r, g in zip(ref, got):
            diff = float(np.max(np.abs(r.numpy() - g)))
            worst = max(worst, diff if np.isfinite(diff) else float("inf"))  # NaN on either side is no match
    return worst


PARITY_TOLERANCE = 1e-5  # max abs difference between torch and onnxruntime an export may have


class ExportError(ValueError):
    """The policy cannot be exported faithfully: the exporter lacks an operator it uses, the runtime cannot run
    its config, or the model it writes differs from torch (``parity`` is then the difference, else None)."""

    def __init__(self, message: str, parity: float | None = None):
        super().__init__(message)
        self.parity = parity


def unchecked_path(path: str | Path) -> Path:
    """The temporary name beside ``path`` under which ``export_checked`` writes and checks a model."""
    path = Path(path)
    return path.with_name(f".{path.name}.unchecked")


def export_checked(
    policy,
    path: str | Path,
    opset: int = OPSET,
    source: str | Path | None = None,
    tolerance: float = PARITY_TOLERANCE,
    source_sha256: str | None = None,
) -> float:
    """Export ``policy`` to ``path`` only if onnxruntime's model matches torch (``parity`` <= ``tolerance``):
    written and checked under a temporary name beside it, then renamed, so a model that cannot be exported or fails
    the check never lands where ``backend: auto`` would run it, nor replaces an earlier export. Returns the
    parity; raises ``ExportError`` (nothing written) or ``OSError`` (the file or its folder cannot be written)."""
    import onnx

    path = Path(path)
    check = unchecked_path(path)
    try:
        try:
            export_onnx(policy, check, opset=opset, source=source, source_sha256=source_sha256)
        except ExportError:
            raise
        except (RuntimeError, ValueError, onnx.checker.ValidationError) as exc:  # BackendError, OnnxExporterError
            reason = (str(exc).strip().splitlines() or [""])[0]  # the exporter adds a line on where to ask for it
            raise ExportError(f"cannot be exported to ONNX: {type(exc).__name__}: {reason}") from exc
        err = parity(policy, check)
        if not err <= tolerance:
            core = policy.config["core"]
            why = (
                ": dopri5 chooses its steps by the values it meets, and the traced graph keeps those of one example"
                if core.get("type") == "ltc" and core.get("solver") == "dopri5"
                else ""
            )
            raise ExportError(
                f"the ONNX model differs from torch by {err:.3g} (more than {tolerance:.0e})".replace("e-0", "e-")
                + why,
                parity=err,
            )
        check.replace(path)
    finally:
        with contextlib.suppress(OSError):  # e.g. its folder could not be made
            check.unlink(missing_ok=True)
    return err


def add_arguments(parser):
    """The options of ``liquid-control export``."""
    parser.epilog = (
        "examples:\n"
        "  liquid-control export runs/cfc_ncp_rover/policy.pt            # writes runs/cfc_ncp_rover/policy.onnx\n"
        "  liquid-control export policies/cfc_ncp_rover.pt -o deploy/rover.onnx\n\n"
        "It checks the ONNX model against the torch policy and prints the largest difference (max_abs_diff_vs_torch).\n"
        "See docs/ARCHITECTURE.md (Runtime)."
    )
    parser.add_argument("policy", type=user_path, help="policy checkpoint (.pt) to export")
    parser.add_argument(
        "-o",
        "--output",
        type=user_path,
        help="ONNX file to write, ending in .onnx (default: the checkpoint's name as given with .onnx; a shipped "
        "policy's, policies/NAME.pt, in the working directory)",
    )
    parser.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset, {MIN_OPSET} or newer (default {OPSET})")


def run(args) -> int:
    """Export the checkpoint to ONNX and check parity with torch (``export_checked``): exit code 1 (and nothing
    written) when they differ by more than 1e-5, 2 for a policy that cannot be exported or an unwritable output."""
    from liquid_control.policy.checkpoint import PolicyLoadError

    if not MIN_OPSET <= args.opset <= max_opset():
        print(
            f"liquid-control export: error: --opset {args.opset}: the export needs an opset from {MIN_OPSET} to "
            f"{max_opset()} (torch's newest)",
            file=sys.stderr,
        )
        return 2
    out = Path(args.output) if args.output else Path(args.policy).with_suffix(".onnx")  # a shipped one's: here
    example = Path(args.policy).with_suffix(".onnx").name  # -o FOLDER, or a name too long: refused before the work
    problem = name_length_problem(out) or (output_file_problem(out, example) if os.path.isdir(out) else None)
    if problem:
        named = f"--output {out}" if args.output else str(out)
        print(f"liquid-control export: error: {named}: {problem}", file=sys.stderr)
        return 2
    source = shipped_policy_for(args.policy) or Path(args.policy)
    if source != Path(args.policy):
        print(f"liquid-control export: {args.policy} is not in {os.getcwd()}: the shipped {source}", file=sys.stderr)
    try:
        policy, source_sha256 = load_hashed_policy(source)
    except PolicyLoadError as exc:
        print(
            f"liquid-control export: error: {exc}{shipped_name_hint(args.policy, policies_dir(), '.pt')}",
            file=sys.stderr,
        )
        return 2
    except CheckpointReplacedError as exc:
        print(
            f"liquid-control export: error: {args.policy}: {exc}; export it again; {out} not written", file=sys.stderr
        )
        return 2
    except (ExportError, OSError) as exc:
        print(f"liquid-control export: error: {args.policy}: {exc}; {out} not written", file=sys.stderr)
        return 2
    if out.resolve() == source.resolve():
        print(
            f"liquid-control export: error: {out} is the checkpoint itself: give another output file (-o)",
            file=sys.stderr,
        )
        return 2
    if out.suffix != ".onnx":  # e.g. -o the model card or another run's policy.pt: replaced by an ONNX model
        print(
            f"liquid-control export: error: --output {out}: give a .onnx file (load_backend and policy_node tell "
            f"an export from a checkpoint by that suffix; {out.name} would not run"
            f"{', and the file there would be replaced' if out.exists() else ''})",
            file=sys.stderr,
        )
        return 2
    from liquid_control.processes import Terminated, sigterm_as_interrupt

    made = first_missing_folder(out.parent)  # the folders of -o the export makes: removed again when it fails
    try:
        # a kill (SIGTERM) stops as Ctrl-C does: the file under check removed, a line said (before: the process
        # died by the signal without a word, its .NAME.onnx.unchecked left beside the checkpoint)
        with sigterm_as_interrupt("liquid-control export"):
            err = export_checked(policy, out, opset=args.opset, source_sha256=source_sha256)
    except KeyboardInterrupt as exc:
        stopped = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(f"liquid-control export: {stopped}; {out} not written{_unmade(out, made)}", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except ExportError as exc:
        said = f"liquid-control export: error: {args.policy}: {exc}; {out} not written{_unmade(out, made)}"
        if exc.parity is not None:
            print(f"max_abs_diff_vs_torch: {exc.parity:.3g}")
        print(said, file=sys.stderr)
        return 2 if exc.parity is None else 1
    except OSError as exc:  # an output folder that cannot be made or written, -o under a file, a full disk
        check = unchecked_path(out)
        where = f" ({exc.filename})" if exc.filename and Path(exc.filename) not in (check, out) else ""
        print(
            f"liquid-control export: error: cannot write {out}: {exc.strerror or exc}{where}{_unmade(out, made)}",
            file=sys.stderr,
        )
        return 2
    except BaseException:
        _unmade(out, made)
        raise
    print(
        f"wrote {out} ({policy.config['name']}: inputs {', '.join(ObservationSpec.from_config(policy.config).sensors)}"
        f", state {policy.state_size})"
    )
    print(f"max_abs_diff_vs_torch: {err:.3g}")
    return 0


def _unmade(out: Path, made: Path | None) -> str:
    """Remove the folders of ``out`` that a failed export made (``made``: ``first_missing_folder`` taken before it)
    while empty, so a rerun or an ``ls`` meets no empty folder of an export that never was; the words that say
    so for its error line ("" when it made none, or one cannot be removed: something was written there meanwhile)."""
    if made is None:
        return ""
    remove_made_folder(out.parent, made)
    if os.path.lexists(made):
        return ""
    given = next((p for p in (out.parent, *out.parent.parents) if p.absolute() == made), made)  # as the user wrote it
    return f"; removed the folder {given} it had made"
