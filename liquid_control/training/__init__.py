"""training layer of liquid_control (see docs/ARCHITECTURE.md and docs/training.md).

``train(config, out_dir, seed=...)`` runs expert demonstrations, DAgger rounds and truncated-BPTT behaviour
cloning into a resumable output folder; ``liquid-control train`` is its command line.

The names below are imported when first used (PEP 562), not with the package: ``liquid-control train --help``
and an argument mistake are answered without loading torch and the worlds (3 s).
"""

import importlib

_EXPORTS = {
    "measure_success": ".episodes",
    "TrainingError": ".run",
    "TrainResult": ".run",
    "train": ".trainer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)


def __dir__():
    return sorted(list(globals()) + __all__)
