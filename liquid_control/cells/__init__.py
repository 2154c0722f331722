"""Continuous-time recurrent cores (CfC, LTC), NCP wirings, LTC ODE solvers, baselines and checkpoints.

Every core follows the contract in docs/ARCHITECTURE.md ("Cells"): ``step(x, state, dt) -> state``,
``output(state)``, ``initial_state(batch)``, ``config()`` / ``build_core(config)``; ``LiquidRNN`` runs a core
over sequences with ``torch.nn.RNN`` conventions; ``save_model`` / ``load_model`` store weights + config.
Time enters through ``dt.py`` (the one validation); ``kernels.py`` chooses the kernel that runs a core.
"""

from .activations import ACTIVATIONS
from .baselines import FrameStackMLP, GRUCore, LSTMCore
from .cfc import CfCCell
from .checkpoint import CheckpointError, load_model, save_model
from .core import RecurrentCore, build_core, register_core
from .ctrnn import CTRNNCore
from .gru_ode import GRUODECore
from .ltc import LTCCell
from .rnn import LTC, CfC, LiquidRNN
from .solvers import SOLVERS, Solver, SolverDivergedError, make_solver
from .tcn import TemporalConvCore
from .wiring import NCP, AutoNCP, FullyConnected, Wiring

__all__ = [
    "ACTIVATIONS",
    "AutoNCP",
    "CTRNNCore",
    "CfC",
    "CfCCell",
    "CheckpointError",
    "FrameStackMLP",
    "FullyConnected",
    "GRUCore",
    "GRUODECore",
    "LSTMCore",
    "LTC",
    "LTCCell",
    "LiquidRNN",
    "NCP",
    "RecurrentCore",
    "SOLVERS",
    "Solver",
    "SolverDivergedError",
    "TemporalConvCore",
    "Wiring",
    "build_core",
    "load_model",
    "make_solver",
    "register_core",
    "save_model",
]
