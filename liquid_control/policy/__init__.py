"""policy layer of liquid_control (see docs/ARCHITECTURE.md): encoders + recurrent core + action head.

One YAML config describes a policy (``load_config``); ``Policy.from_config`` builds it; ``save_policy`` /
``load_policy`` keep config and weights in one file; ``PolicyAgent`` drives a gymnasium world with it.
"""

from .agent import PolicyAgent, observation_keys, resample_ticks
from .checkpoint import PolicyLoadError, load_policy, read_metadata, save_policy
from .config import PolicyConfigError, apply_overrides, check_world, env_kwargs, load_config, validate_config
from .model import Policy

__all__ = [
    "Policy",
    "PolicyAgent",
    "PolicyConfigError",
    "PolicyLoadError",
    "apply_overrides",
    "check_world",
    "env_kwargs",
    "observation_keys",
    "resample_ticks",
    "load_config",
    "load_policy",
    "read_metadata",
    "save_policy",
    "validate_config",
]
