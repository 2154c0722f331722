"""runtime layer of liquid_control: streaming inference by measured dt, without ROS and without torch at import
(see docs/ARCHITECTURE.md). The ROS node and deployments use these names; torch loads only for a torch backend
or an export."""

from .backends import CAMERA, BackendError, ObservationSpec, OnnxBackend, TorchBackend, load_backend, torch_available
from .command import CommandLimiter
from .export import export_onnx
from .runner import PolicyRunner, Result, RunnerLimits
from .timeline import ReorderBuffer, Update, UpdateClock

__all__ = [
    "CAMERA",
    "BackendError",
    "CommandLimiter",
    "ObservationSpec",
    "OnnxBackend",
    "PolicyRunner",
    "ReorderBuffer",
    "Result",
    "RunnerLimits",
    "TorchBackend",
    "Update",
    "UpdateClock",
    "export_onnx",
    "load_backend",
    "torch_available",
]
