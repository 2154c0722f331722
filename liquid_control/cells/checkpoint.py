"""One-file checkpoints of a core: weights plus the ``config()`` that rebuilds it.

The file is a ``torch.save`` dict of plain data and tensors, read back with ``torch.load(weights_only=True)``
(no pickled code runs). Writes go to a temporary file in the same directory and are renamed into place, so
a crash never leaves a half-written checkpoint under the real name.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import zipfile
from pathlib import Path

import torch
from torch import nn

from liquid_control.atomic_file import atomic_write
from liquid_control.shown import shown

from .core import build_core

FORMAT = "liquid_control.core"
VERSION = 1
POLICY_FORMAT = FORMAT.rpartition(".")[0] + ".policy"  # save_policy's files (policy.checkpoint.FORMAT)


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, of another format, or does not match its config."""


def read_plain_torch_file(path: str | os.PathLike, map_location="cpu"):
    """``torch.load(path, weights_only=True)``: tensors and plain values only, no pickled code ever runs.

    A file that needs more (a pickled class or function: a foreign or tampered file) raises
    ``pickle.UnpicklingError`` with our own message naming the file and the object, instead of torch's advice
    to re-run with ``weights_only=False`` (which would run that code); the caller prefixes the file name.
    An empty, truncated or non-torch file raises ``pickle.UnpicklingError`` saying which (torch's own error for
    these is e.g. ``OSError: [Errno 22] Invalid argument`` or ``KeyError: 101``); other errors propagate. A zip
    archive with compressed entries, which torch.save never writes, is refused before torch unpacks them."""
    packed = _compressed_entries(path)
    if packed:
        raise pickle.UnpicklingError(packed)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if not found and "Unsupported operand" in str(exc):  # its first bytes are no pickle opcode at all
            raise pickle.UnpicklingError(NOT_A_TORCH_FILE) from None
        what = f" ({found.group(1)})" if found else ""
        raise pickle.UnpicklingError(
            f"it holds a pickled Python object{what} where liquid_control files hold only tensors and plain "
            f"values; it was not loaded, and is never loaded in a way that could run code. Use a file written "
            f"by liquid_control (save_model, save_policy, `liquid-control train`)"
        ) from None
    except Exception:
        reason = _damage(path)
        if reason is None:
            raise
        raise pickle.UnpicklingError(reason) from None


NOT_A_TORCH_FILE = (
    "it is not a torch file (a text, YAML, Markdown or ONNX file?): give the .pt file liquid_control wrote "
    "(save_model, save_policy, `liquid-control train`)"
)


def _compressed_entries(path) -> str | None:
    """Why a zip archive (torch.save's format) is refused before torch reads it: entries stored compressed. torch.save
    writes every entry uncompressed, and torch.load unpacks a deflated one whole into memory: a downloaded file of
    1 MB of deflated zeros took 1 GiB before it was refused. None for any other file (torch reads it)."""
    if not isinstance(path, (str, os.PathLike)):  # a buffer: its position is torch's
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            packed = [entry for entry in archive.infolist() if entry.compress_type != zipfile.ZIP_STORED]
    except (OSError, zipfile.BadZipFile, ValueError):  # not a zip (the legacy format, a text): torch's error says
        return None
    if not packed:
        return None
    return (
        f"its zip archive holds {len(packed)} compressed entries ({packed[0].filename}"
        f"{', ...' if len(packed) > 1 else ''}) unpacking to {sum(e.file_size for e in packed)} bytes, which "
        "torch.save never writes (torch would unpack them whole into memory: a decompression bomb?); it was not "
        "loaded. Save it again with torch.save, or use a file written by liquid_control"
    )


def _damage(path) -> str | None:
    """Why a file torch could not load is no torch file at all: empty, a cut-off zip archive (torch.save's
    format), or other content; None where it looks like a whole torch file (then torch's error stands)."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            head = handle.read(4)
    except (OSError, TypeError):  # not a path (a buffer) or unreadable: torch's error says more
        return None
    if size == 0:
        return "the file is empty (0 bytes): a copy or a write that never finished"
    if head == b"PK\x03\x04":
        if zipfile.is_zipfile(path):
            return None
        return (
            f"the file is truncated or damaged: its zip archive (torch.save's format) is incomplete at {size} "
            f"bytes; copy or download it again"
        )
    if head[:1] != b"\x80":  # neither torch.save's zip nor its legacy format (a pickle, protocol 2+)
        return NOT_A_TORCH_FILE
    return None


_PLAIN = (str, int, float, bool, type(None))


def unreadable_entry(value, where: str) -> str | None:
    """Where in ``value`` (a checkpoint's config or metadata) lies something ``torch.load(weights_only=True)``
    refuses to read back (a pickled object: a numpy scalar such as ``np.mean(...)``, a Path, a class instance),
    as ``where[key][index] is <type> <value>``; None if all of it reads back. Saved, such a file was written and
    then refused at load as one holding pickled objects."""
    if type(value) in _PLAIN or torch.is_tensor(value):  # exact types: np.float64 is a float subclass
        return None
    if type(value) in (dict, list, tuple):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            found = unreadable_entry(key, f"{where} key") if isinstance(value, dict) else None
            found = found or unreadable_entry(item, f"{where}[{key!r}]")
            if found:
                return found
        return None
    buffer = io.BytesIO()
    try:  # a lambda, a lock, an open file: torch.save's pickling error named nothing of the config or metadata
        torch.save(value, buffer)
        buffer.seek(0)
        torch.load(buffer, weights_only=True)  # what else torch's reader allows (torch.Size, a dtype...)
    except Exception:  # pickle.UnpicklingError at load; PicklingError, TypeError, AttributeError at save
        return f"{where} is {type(value).__name__} {shown(value, 40)}"
    return None


def refuse_unreadable(what: str, value, where: str) -> None:
    """TypeError naming the first entry of ``value`` that a checkpoint could not read back (``unreadable_entry``),
    before anything is written."""
    found = unreadable_entry(value, where)
    if found:
        raise TypeError(
            f"{what}: {found}: a checkpoint holds plain values only (str, int, float, bool, None, lists, dicts, "
            "tensors), so that loading it runs no code; convert it (float(x), x.tolist(), str(path))"
        )


def save_model(path: str | os.PathLike, module: nn.Module) -> Path:
    """Write ``module``'s config and weights to ``path`` atomically; returns the path."""
    if not hasattr(module, "config"):
        raise TypeError(f"save_model needs a core with config(), got {type(module).__name__}")
    config = module.config()
    refuse_unreadable("save_model", config, "config")  # e.g. AutoNCP(..., sparsity_level=np.float64(0.5))
    path = Path(path)
    try:  # a core load_model could not build again (a solver instance of a class not in SOLVERS)
        with torch.random.fork_rng(devices=[]):  # its fresh weights draw from torch's generator: not the caller's
            build_core(config)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"save_model: {path}: its config would not load back ({exc}); nothing written") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": config,
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
    }
    with atomic_write(path) as f:
        torch.save(payload, f)
    return path


def load_model(path: str | os.PathLike, map_location="cpu") -> nn.Module:
    """Rebuild the saved core and load its weights; any problem is a ``CheckpointError`` naming the file."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = read_plain_torch_file(path, map_location)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint: {exc}") from None
    except Exception as exc:  # corrupt, truncated, not a torch file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        other = payload.get("format") if isinstance(payload, dict) else None
        if other == POLICY_FORMAT:  # save_policy's: a whole policy, whose core is policy.core
            raise CheckpointError(f"{path}: a policy file, not a {FORMAT} checkpoint: load it with load_policy")
        what = f"a {other!r} file" if isinstance(other, str) else "no format marker"
        raise CheckpointError(f"{path}: not a {FORMAT} checkpoint ({what})")
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
    saved = {v.dtype for k, v in state.items() if k in expected and expected[k].is_floating_point()}
    if len(saved) == 1:  # a float64 (or float16) model comes back as it was saved, not cast to the default
        module = module.to(saved.pop())
    try:
        module.load_state_dict(state, strict=True)
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: weights do not match the config ({exc})") from exc
    return module
