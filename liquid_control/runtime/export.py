"""`liquid-control export`: a policy checkpoint -> a single-step ONNX model for deployment without torch.

The model computes one ``Policy.step`` for a batch: inputs ``image`` (uint8 B,H,W,3, when the policy has a
camera), one float32 (B, n) input per vector key (config order), ``state`` (B, S) and ``dt`` (B,) seconds;
outputs ``action`` (B, A) and ``state_out`` (B, S). The policy config is stored in the model's metadata
(``liquid_control.policy_config``) so the runtime knows the inputs, the update sensor and the action bounds.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import numpy as np

from .backends import ONNX_CONFIG_KEY, ObservationSpec

OPSET = 17


def _single_step_module(policy):
    import torch

    spec = ObservationSpec.from_config(policy.config)
    keys = [ObservationSpec.obs_key(s) for s in spec.sensors]

    class SingleStep(torch.nn.Module):
        """(obs..., state, dt) -> (action, state_out): ``Policy.step`` with positional inputs."""

        def __init__(self):
            super().__init__()
            self.policy = policy

        def forward(self, obs: tuple, state, dt):
            return self.policy.step(dict(zip(keys, obs)), state, dt)

    return SingleStep().eval(), keys, spec


def example_inputs(policy, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs of the right shapes and dtypes (used to trace the model and to check parity)."""
    rng = np.random.default_rng(seed)
    spec = ObservationSpec.from_config(policy.config)
    out = {}
    for sensor, shape in spec.sensors.items():
        if sensor == "camera":
            out["image"] = rng.integers(0, 256, size=(batch,) + shape, dtype=np.uint8)
        else:
            out[sensor] = rng.normal(size=(batch,) + shape).astype(np.float32)
    out["state"] = (0.5 * rng.normal(size=(batch, policy.state_size))).astype(np.float32)
    out["dt"] = rng.uniform(0.01, 0.2, size=(batch,)).astype(np.float32)
    return out


@contextlib.contextmanager
def _traceable():
    """Patch two eager idioms that the tracer turns into wrong graphs, for the duration of an export.

    - ``torch.as_tensor(tensor, ...)`` is recorded as a constant (freezing e.g. ``dt`` into the graph):
      it becomes ``tensor.to(...)``, recorded as an operation on the input.
    - ``tensor.split(n)`` with ``n`` >= the dimension (cache-sized chunking, one chunk at deployment batch
      sizes) is recorded as an ONNX Split of size ``n`` that fails at run time: it returns ``(tensor,)``.
    """
    import torch

    as_tensor, split = torch.as_tensor, torch.Tensor.split

    def traceable_as_tensor(data, dtype=None, device=None):
        if isinstance(data, torch.Tensor):
            return data.to(dtype=dtype or data.dtype, device=device or data.device)
        return as_tensor(data, dtype=dtype, device=device)

    def traceable_split(self, split_size, dim=0):
        if isinstance(split_size, int) and split_size >= self.shape[dim]:
            return (self,)
        return split(self, split_size, dim)

    torch.as_tensor, torch.Tensor.split = traceable_as_tensor, traceable_split
    try:
        yield
    finally:
        torch.as_tensor, torch.Tensor.split = as_tensor, split


def export_onnx(policy, path: str | Path, opset: int = OPSET) -> Path:
    """Write the single-step ONNX model of ``policy`` to ``path`` (batch dimension dynamic)."""
    import onnx
    import torch

    module, keys, _ = _single_step_module(policy)
    inputs = example_inputs(policy)
    names = keys + ["state", "dt"]
    args = (
        tuple(torch.from_numpy(inputs[k]) for k in keys),
        torch.from_numpy(inputs["state"]),
        torch.from_numpy(inputs["dt"]),
    )  # the exporter flattens the obs tuple: inputs are `names` in order
    dynamic = {n: {0: "batch"} for n in names + ["action", "state_out"]}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), _traceable():
        # The TorchScript exporter (onnxscript, needed by the dynamo one, is not a dependency); tracing warns
        # about the shape and dt validity checks, which are constant for valid inputs. (Not under no_grad:
        # the exporter then drops the graph inputs.)
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            buffer,
            dynamo=False,
            input_names=names,
            output_names=["action", "state_out"],
            dynamic_axes=dynamic,
            opset_version=opset,
        )
    model = onnx.load_from_string(buffer.getvalue())
    entry = model.metadata_props.add()
    entry.key, entry.value = ONNX_CONFIG_KEY, json.dumps(policy.config)
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def parity(policy, onnx_path: str | Path, batch: int = 4, seed: int = 1) -> float:
    """Max abs difference between torch and onnxruntime (action and state) on random inputs."""
    import onnxruntime as ort
    import torch

    module, keys, _ = _single_step_module(policy)
    inputs = example_inputs(policy, batch=batch, seed=seed)
    names = keys + ["state", "dt"]
    with torch.no_grad():
        ref = module(
            tuple(torch.from_numpy(inputs[k]) for k in keys),
            torch.from_numpy(inputs["state"]),
            torch.from_numpy(inputs["dt"]),
        )
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(["action", "state_out"], {n: inputs[n] for n in names})
    return max(float(np.max(np.abs(r.numpy() - g))) for r, g in zip(ref, got))


def add_arguments(parser):
    parser.add_argument("policy", help="policy checkpoint (.pt) to export")
    parser.add_argument("-o", "--output", help="ONNX file to write (default: the checkpoint's name with .onnx)")
    parser.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")


def run(args) -> int:
    from liquid_control.policy import load_policy

    policy = load_policy(args.policy)
    out = Path(args.output) if args.output else Path(args.policy).with_suffix(".onnx")
    export_onnx(policy, out, opset=args.opset)
    err = parity(policy, out)
    print(
        f"wrote {out} ({policy.config['name']}: inputs {', '.join(ObservationSpec.from_config(policy.config).sensors)}"
        f", state {policy.state_size})"
    )
    print(f"max_abs_diff_vs_torch: {err:.3g}")
    if err > 1e-5:
        print("warning: the ONNX model differs from torch by more than 1e-5")
        return 1
    return 0
