"""training layer of liquid_control (see docs/ARCHITECTURE.md and docs/training.md).

``train(config, out_dir, seed=...)`` runs expert demonstrations, DAgger rounds and truncated-BPTT behaviour
cloning into a resumable output folder; ``liquid-control train`` is its command line.

The names below are imported when first used (PEP 562), not with the package: ``liquid-control train --help``
and an argument mistake are answered without loading torch and the worlds (3 s).
"""

from liquid_control.lazy_exports import lazy_exports

_EXPORTS = {
    "measure_success": ".episodes",
    "TrainingError": ".run",
    "TrainResult": ".run",
    "train": ".trainer",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
