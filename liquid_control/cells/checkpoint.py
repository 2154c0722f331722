"""One-file checkpoints of a core: weights plus the ``config()`` that rebuilds it.

The file is a ``torch.save`` dict of plain data and tensors, read back with ``torch.load(weights_only=True)``
(no pickled code runs). Writes go to a temporary file in the same directory and are renamed into place, so
a crash never leaves a half-written checkpoint under the real name.
"""

from __future__ import annotations

import inspect
import math
import os
import pickle
import re
from pathlib import Path

import torch
from torch import nn

from liquid_control.atomic_file import atomic_write

from .core import CORE_TYPES, build_core

FORMAT = "liquid_control.core"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, of another format, or does not match its config."""


def read_plain_torch_file(path: str | os.PathLike, map_location="cpu"):
    """``torch.load(path, weights_only=True)``: tensors and plain values only, no pickled code ever runs.

    A file that needs more (a pickled class or function: a foreign or tampered file) raises
    ``pickle.UnpicklingError`` with our own message naming the file and the object, instead of torch's advice
    to re-run with ``weights_only=False`` (which would run that code); the caller prefixes the file name.
    Other errors (truncated, not a torch file) propagate unchanged."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if not found and "Unsupported operand" in str(exc):  # its first bytes are no pickle opcode at all
            raise pickle.UnpicklingError(
                "it is not a torch file (a text, YAML, Markdown or ONNX file?): give the .pt file liquid_control "
                "wrote (save_model, save_policy, `liquid-control train`)"
            ) from None
        what = f" ({found.group(1)})" if found else ""
        raise pickle.UnpicklingError(
            f"it holds a pickled Python object{what} where liquid_control files hold only tensors and plain "
            f"values; it was not loaded, and is never loaded in a way that could run code. Use a file written "
            f"by liquid_control (save_model, save_policy, `liquid-control train`)"
        ) from None


def save_model(path: str | os.PathLike, module: nn.Module) -> Path:
    """Write ``module``'s config and weights to ``path`` atomically; returns the path."""
    if not hasattr(module, "config"):
        raise TypeError(f"save_model needs a core with config(), got {type(module).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": module.config(),
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
    }
    with atomic_write(path) as f:
        torch.save(payload, f)
    return path


def load_model(path: str | os.PathLike, map_location="cpu") -> nn.Module:
    """Rebuild the saved core and load its weights; any problem is a ``CheckpointError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = read_plain_torch_file(path, map_location)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint: {exc}") from None
    except Exception as exc:  # corrupt, truncated, not a torch file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} checkpoint (no format marker)")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {payload.get('version')!r}, this code reads {VERSION}")
    if "state_dict" not in payload:
        raise CheckpointError(f"{path}: the checkpoint has no 'state_dict' (its weights)")
    state = payload["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: its 'state_dict' is {type(state).__name__}, not a dict of tensors")
    not_tensors = [f"{k!r} ({type(v).__name__})" for k, v in state.items() if not torch.is_tensor(v)]
    if not_tensors:
        raise CheckpointError(f"{path}: state_dict entries that are not tensors: {', '.join(not_tensors[:5])}")
    try:
        module = build_core(payload["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid model config ({exc})") from exc
    problem = _config_problem(payload["config"])
    if problem:
        raise CheckpointError(f"{path}: invalid model config: {problem}")
    expected = module.state_dict()
    dtypes = [
        f"{k} ({v.dtype})"
        for k, v in state.items()
        if k in expected and expected[k].is_floating_point() and not v.is_floating_point()
    ]
    if dtypes:
        raise CheckpointError(f"{path}: weights that are not floating-point tensors: {', '.join(dtypes[:5])}")
    bad = [k for k, v in state.items() if (v.is_floating_point() or v.is_complex()) and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}: non-finite weights (NaN or inf) in {', '.join(bad[:5])}")
    try:
        module.load_state_dict(state, strict=True)
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: weights do not match the config ({exc})") from exc
    return module


# A constructor argument annotated with only these types is checked against them (an int is a valid float,
# a bool is neither an int nor a float); any other annotation (a wiring, a solver, a dict) is left to the
# constructor, which validates it.
_PLAIN_TYPES = {"bool", "int", "float", "str", "None", "NoneType"}


def _plain_types(param: inspect.Parameter) -> list[str] | None:
    annotation = param.annotation
    if annotation is inspect.Parameter.empty:
        return None
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", None) or str(annotation)
    names = [part.strip() for part in text.split("|")]
    return names if all(name in _PLAIN_TYPES for name in names) else None


def _has_type(value, names: list[str]) -> bool:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return (
        ("bool" in names and isinstance(value, bool))
        or ("int" in names and number and isinstance(value, int))
        or ("float" in names and number and math.isfinite(value))
        or ("str" in names and isinstance(value, str))
        or (("None" in names or "NoneType" in names) and value is None)
    )


def _config_problem(config: dict, where: str = "") -> str | None:
    """Why a core config (one ``build_core`` accepted) is not what its core's ``config()`` writes, or None.

    Every key must be an argument of the core's constructor (a wrapper such as ``LiquidRNN`` would ignore any
    other), and an argument annotated with plain types only (``bool``, ``int``, ``float``, ``str``, ``None``)
    must hold one of them: ``batch_first: None`` or ``units: 4.0`` would otherwise load silently, as
    ``False`` or a truncated int. Nested core configs (a wrapper's ``cell``) are checked the same way."""
    kind = config["type"]
    params = inspect.signature(CORE_TYPES[kind].__init__).parameters
    takes_more = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for key, value in config.items():
        if key == "type":
            continue
        name = f"{where}{key}"
        param = params.get(key) if key != "self" else None
        if param is None or param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            if takes_more:
                continue  # passed on (an LTC's solver options); the receiver refuses what it does not know
            return f"{name!r} is not a setting of core type {kind!r} (it would be ignored)"
        if isinstance(value, dict) and isinstance(value.get("type"), str) and value["type"] in CORE_TYPES:
            problem = _config_problem(value, f"{name}.")
            if problem:
                return problem
            continue
        names = _plain_types(param)
        if names is not None and not _has_type(value, names):
            wanted = " or ".join("None" if n == "NoneType" else "a finite float" if n == "float" else n for n in names)
            return f"{name!r} is {value!r} ({type(value).__name__}); core type {kind!r} takes {wanted}"
    return None
