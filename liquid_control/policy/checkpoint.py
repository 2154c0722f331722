"""Policy files: one file holding the validated config, the weights and free-form metadata.

Written atomically (temporary file in the same folder, then ``os.replace``), so a killed process never leaves
a half-written policy behind; read with ``torch.load(weights_only=True)``, so loading never runs pickled code.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import torch

from liquid_control.atomic_file import atomic_write
from liquid_control.cells.checkpoint import POLICY_FORMAT, read_plain_torch_file, refuse_unreadable
from liquid_control.shown import shown

from .config import PolicyConfigError, recorded_config, validate_config
from .encoders import VectorEncoder
from .model import Policy

FORMAT = POLICY_FORMAT  # "liquid_control.policy", named where load_model can tell such a file too
VERSION = 1


class PolicyLoadError(RuntimeError):
    """A policy file that cannot be used; the message names the file and the problem."""


def atomic_torch_save(obj, path: str | Path) -> None:
    """torch.save to ``path`` through a temporary file and an atomic rename. Serialised in memory first: torch's
    writer turned a full disk into "RuntimeError: [enforce fail at inline_container.cc:672] . unexpected pos";
    written at once, it is an OSError naming ``path`` (``atomic_write``)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_write(path) as handle:
        handle.write(buffer.getbuffer())


def save_policy(path: str | Path, policy: Policy, metadata: dict | None = None) -> Path:
    """Write ``policy`` (config + weights) and ``metadata`` (plain values: str, numbers, lists, dicts, tensors);
    a config or metadata value ``load_policy`` could not read back (a numpy scalar...) is a TypeError naming it,
    and nothing is written. A policy trained from recorded bags (the metadata say so) is written without the
    training settings of simulated episodes, which did not apply to it (``config.recorded_config``)."""
    config = recorded_config(policy.config, metadata)
    refuse_unreadable("save_policy", config, "config")
    refuse_unreadable("save_policy", dict(metadata or {}), "metadata")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": config,
        "state_dict": {k: v.detach().cpu().clone() for k, v in policy.state_dict().items()},
        "metadata": dict(metadata or {}),
    }
    atomic_torch_save(payload, path)
    return Path(path)


def _read_payload(path: Path) -> dict:
    if path.is_dir():  # e.g. a training run's folder: its policy is the policy.pt inside
        inside = path / "policy.pt"
        hint = f"; did you mean {inside}?" if inside.is_file() else ""
        raise PolicyLoadError(f"{path}: is a folder, not a policy file{hint}")
    if not path.is_file():
        raise PolicyLoadError(f"{path}: policy file not found")
    try:
        payload = read_plain_torch_file(path)
    except pickle.UnpicklingError as exc:  # pickled code: our message, not torch's "weights_only=False" advice
        raise PolicyLoadError(f"{path}: not a readable policy file: {exc}") from None
    except Exception as exc:  # truncated, not a torch file...
        raise PolicyLoadError(
            f"{path}: not a readable policy file (corrupt or wrong format; {type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        other = payload.get("format") if isinstance(payload, dict) else None
        what = f"a {other!r} file, no '{FORMAT}' header" if isinstance(other, str) else f"no '{FORMAT}' header"
        beside = path.parent / "policy.pt"  # e.g. a training run's checkpoint.pt: its policy is written beside it
        hint = f"; did you mean {beside}?" if beside.is_file() and beside.resolve() != path.resolve() else ""
        raise PolicyLoadError(f"{path}: not a liquid_control policy file ({what}){hint}")
    if payload.get("version") != VERSION:
        raise PolicyLoadError(f"{path}: policy file version {payload.get('version')!r}, this code reads {VERSION}")
    for key in ("config", "state_dict"):
        if not isinstance(payload.get(key), dict):
            raise PolicyLoadError(f"{path}: policy file lacks its {key!r}")
    not_tensors = [f"{k!r} ({type(v).__name__})" for k, v in payload["state_dict"].items() if not torch.is_tensor(v)]
    if not_tensors:
        raise PolicyLoadError(f"{path}: state_dict entries that are not tensors: {', '.join(not_tensors[:5])}")
    metadata = payload.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise PolicyLoadError(
            f"{path}: the policy file's metadata must be a dict, not {type(metadata).__name__} {shown(metadata)}"
        )
    return payload


def _values(tensor: torch.Tensor) -> str:
    return "[" + ", ".join(f"{v:.9g}" for v in tensor.reshape(-1).tolist()) + "]"


def _buffer_problem(policy: Policy, config: dict, state: dict) -> str | None:
    """Why the weights' buffers cannot be used with ``config``, or None.

    The action bounds are buffers only so that they travel with the module: they must be the config's
    ``action.low`` / ``action.high`` (the bounds the runner, the node and the ONNX export report), not other
    values that would clamp every action silently. The vector encoder divides by its input ``std``: a zero,
    negative or non-finite one would make every later update fail as a bad sensor reading."""
    expected = policy.state_dict()
    for key, side in (("action_low", "low"), ("action_high", "high")):
        # the config's bounds in the file's own precision (a policy saved under either default dtype loads under
        # the other, where 0.6 rounds differently); then loaded as the config's, in the policy's precision
        saved = torch.tensor(config["action"][side], dtype=state[key].dtype) if state[key].is_floating_point() else None
        if saved is None or saved.shape != state[key].shape or not torch.equal(state[key], saved):
            return (
                f"the weights' {key} {_values(state[key])} disagree with the config's action.{side} "
                f"{list(config['action'][side])}"
            )
        state[key] = expected[key]
    for name, module in policy.named_modules():
        if isinstance(module, VectorEncoder):
            key = f"{name}.std"
            std = state[key]
            unusable = ~(torch.isfinite(std) & (std > 0))
            if unusable.any():
                where = unusable.nonzero().reshape(-1).tolist()
                return (
                    f"the input normalisation buffer {key!r} must be finite and > 0 (the encoder divides by it); "
                    f"entries {where[:5]} are {_values(std[unusable][:5])}"
                )
    return None


def weights_problem(policy: Policy, config: dict, state: dict) -> str | None:
    """Why the weights ``state`` cannot be loaded into ``policy`` (built from ``config``), or None; the action bounds
    in ``state`` become the policy's own (``_buffer_problem``). One check for policy files and a training run's
    checkpoint.pt: a damaged one is named, not a torch traceback or an epoch that 'diverged' on its NaN weights."""
    not_tensors = [f"{k!r} ({type(v).__name__})" for k, v in state.items() if not torch.is_tensor(v)]
    if not_tensors:
        return f"state_dict entries that are not tensors: {', '.join(not_tensors[:5])}"
    expected = policy.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        problems = []
        if missing:
            problems.append(f"missing weights {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            problems.append(f"unexpected weights {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}")
        if shapes:
            problems.append(f"shape mismatch (file vs config) {'; '.join(shapes[:5])}")
        return f"config does not match the weights: {'; '.join(problems)}"
    dtypes = [
        f"{k} ({v.dtype})" for k, v in state.items() if expected[k].is_floating_point() and not v.is_floating_point()
    ]
    if dtypes:
        return f"weights that are not floating-point tensors: {', '.join(dtypes[:5])}"
    problem = _buffer_problem(policy, config, state)
    if problem:
        return problem
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        return f"non-finite weights in {', '.join(bad[:5])}"
    return None


def load_policy(path: str | Path) -> Policy:
    """Rebuild the policy stored in ``path`` (in eval mode); its metadata is ``policy.metadata``."""
    path = Path(path)
    payload = _read_payload(path)
    try:
        config = validate_config(payload["config"], strict=False)  # settings that had no effect still load
    except PolicyConfigError as exc:
        raise PolicyLoadError(f"{path}: the embedded config is not valid: {exc}") from None
    try:
        policy = Policy(config)
    except Exception as exc:
        raise PolicyLoadError(f"{path}: cannot build the policy of its config: {exc}") from None
    state = payload["state_dict"]
    problem = weights_problem(policy, config, state)
    if problem:
        raise PolicyLoadError(f"{path}: {problem}")
    try:
        policy.load_state_dict(state)
    except RuntimeError as exc:  # e.g. the synapse masks of another NCP wiring than the config's (core.seed edited)
        problems = str(exc).split(":", 1)[-1].strip().replace("\n\t", " ")
        raise PolicyLoadError(f"{path}: config does not match the weights: {problems}") from None
    policy.metadata = dict(payload.get("metadata") or {})
    return policy.eval()


def read_metadata(path: str | Path) -> dict:
    """The metadata of a policy file without building the model."""
    return dict(_read_payload(Path(path)).get("metadata") or {})


def read_config(path: str | Path) -> dict:
    """The policy config of a policy file without building the model."""
    return dict(_read_payload(Path(path))["config"])
