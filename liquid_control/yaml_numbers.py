"""YAML as ROS 2 and YAML 1.2 read it: ``1e-3`` is a number.

PyYAML follows YAML 1.1, whose floats need a dot (``1.0e-3``), so ``lr: 3e-4`` in a policy config or
``max_gap_s: 2e0`` in a ROS parameter file were strings here while ROS (yaml-cpp / libyaml with strtod) reads
them as numbers. Every file a user writes (policy configs, ``--set`` values, node parameter files) is read with
:func:`load_yaml`. No dependencies beyond PyYAML: the ROS tools import it without torch.
"""

from __future__ import annotations

import re

import yaml


class NumberLoader(yaml.SafeLoader):
    """PyYAML's safe loader, with YAML 1.2's floats without a dot (``1e-3``, ``-2E+5``)."""


NumberLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"),
)


class TooDeepError(yaml.YAMLError):
    """Brackets nested deeper than Python's recursion limit: a YAMLError, so callers name their file as for any
    other malformed YAML (PyYAML itself would raise RecursionError)."""

    def __init__(self):
        super().__init__("nested too deeply for the YAML parser (brackets or indentation)")


def load_yaml(text: str):
    """The YAML content of ``text`` (safe; ``1e-3`` is a number)."""
    try:
        return yaml.load(text, Loader=NumberLoader)
    except RecursionError:
        raise TooDeepError() from None
