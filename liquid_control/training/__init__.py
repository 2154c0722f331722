"""training layer of liquid_control (see docs/ARCHITECTURE.md and docs/training.md).

``train(config, out_dir, seed=...)`` runs expert demonstrations, DAgger rounds and truncated-BPTT behaviour
cloning into a resumable output folder; ``liquid-control train`` is its command line.
"""

from .episodes import measure_success
from .run import TrainingError, TrainResult
from .trainer import train

__all__ = ["TrainResult", "TrainingError", "measure_success", "train"]
