"""policy layer of liquid_control (see docs/ARCHITECTURE.md): encoders + recurrent core + action head.

One YAML config describes a policy (``load_config``); ``Policy.from_config`` builds it; ``save_policy`` /
``load_policy`` keep config and weights in one file; ``PolicyAgent`` drives a gymnasium world with it.

The names below are imported when first used (PEP 562), not with the package: ``from liquid_control.policy import
load_config`` reads and checks a config without loading torch (3 s), so a command refuses a mistyped config at once.
"""

from liquid_control.lazy_exports import lazy_exports

_EXPORTS = {
    "Policy": ".model",
    "PolicyAgent": ".agent",
    "PolicyConfigError": ".config",
    "PolicyLoadError": ".checkpoint",
    "apply_overrides": ".config",
    "check_world": ".config",
    "env_kwargs": ".config",
    "observation_keys": ".agent",
    "resample_ticks": ".agent",
    "load_config": ".config",
    "load_policy": ".checkpoint",
    "read_metadata": ".checkpoint",
    "save_policy": ".checkpoint",
    "validate_config": ".config",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
