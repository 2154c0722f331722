"""policy layer of liquid_control (see docs/ARCHITECTURE.md): encoders + recurrent core + action head.

One YAML config describes a policy (``load_config``); ``Policy.from_config`` builds it; ``save_policy`` /
``load_policy`` keep config and weights in one file; ``PolicyAgent`` drives a gymnasium world with it.

The names below are imported when first used (PEP 562), not with the package: ``from liquid_control.policy import
load_config`` reads and checks a config without loading torch (3 s), so a command refuses a mistyped config at once.
"""

import importlib

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


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)


def __dir__():
    return sorted(list(globals()) + __all__)
