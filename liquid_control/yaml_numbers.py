"""YAML numbers as ROS 2 reads them: ``1e-3`` is a number, ``1:30`` a string.

PyYAML follows YAML 1.1, whose floats need a dot (``1.0e-3``), so ``lr: 3e-4`` in a policy config or
``max_gap_s: 2e0`` in a ROS parameter file were strings here while ROS (yaml-cpp / libyaml with strtod) reads
them as numbers. Every file a user writes (policy configs, ``--set`` values, node parameter files) is read with
:func:`load_yaml`. No dependencies beyond PyYAML: the ROS tools import it without torch.
"""

from __future__ import annotations

import re
import sys

import yaml

from liquid_control.shown import shown


class NumberLoader(yaml.SafeLoader):
    """PyYAML's safe loader reading numbers as ROS 2 reads a parameter file (rcl: C's ``strtol`` with base 0, then
    ``strtod``, each taking the whole text): ``1e-3`` is a float (YAML 1.1 needs a dot), ``010`` octal 8, ``0x1f``
    31, ``09`` the float 9.0, and ``0o10``, ``1:30`` and ``1_000`` strings (YAML 1.1 read the last two as 90 and 1000,
    which a node given the file would not)."""


INT_ROS = re.compile(r"^[-+]?(?:0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$")  # strtol, base 0
FLOAT_ROS = re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$")  # strtod's decimal forms
FLOAT_SPECIAL = re.compile(r"^(?:[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")  # YAML's, as rcl reads them
# PyYAML's resolvers without YAML 1.1's int and float (octal 0o, base 60, underscores), then the ones above
NumberLoader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp) for tag, regexp in resolvers if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
NumberLoader.add_implicit_resolver("tag:yaml.org,2002:int", INT_ROS, list("-+0123456789"))
NumberLoader.add_implicit_resolver("tag:yaml.org,2002:float", FLOAT_ROS, list("-+.0123456789"))
NumberLoader.add_implicit_resolver("tag:yaml.org,2002:float", FLOAT_SPECIAL, list("-+."))


def _ros_int(text: str) -> int | None:
    """``text`` as ``strtol`` with base 0 reads a whole integer (0x hexadecimal, a leading 0 octal), else None."""
    if INT_ROS.match(text) is None:
        return None
    sign, body = (-1 if text[0] == "-" else 1), text.lstrip("+-")
    if body[:2].lower() == "0x":
        return sign * int(body[2:], 16)
    return sign * int(body, 8 if len(body) > 1 and body[0] == "0" else 10)


def _construct_int(loader: NumberLoader, node: yaml.ScalarNode) -> int:
    """Integers as ROS reads them (an explicit ``!!int`` of another form: PyYAML's), and a clear error naming the line
    where one cannot be made: more digits than Python converts (``sys.get_int_max_str_digits()``, 4300 by default: a
    ValueError that named neither file nor key), or a ``!!int`` tag on no integer (``!!int abc``; ``!!int ''`` was an
    IndexError)."""
    try:
        value = _ros_int(str(loader.construct_scalar(node)))
        if value is not None:
            return value
        return yaml.SafeLoader.construct_yaml_int(loader, node)
    except (ValueError, IndexError):
        digits = sum(c.isdigit() for c in str(node.value))
        limit = sys.get_int_max_str_digits()
        if limit and digits > limit:
            problem = f"an integer of {digits} digits: more than Python converts ({limit})"
        else:
            problem = f"not an integer: {shown(node.value)}"
        raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark) from None


NumberLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


class TooDeepError(yaml.YAMLError):
    """Brackets nested deeper than Python's recursion limit: a YAMLError, so callers name their file as for any
    other malformed YAML (PyYAML itself would raise RecursionError)."""

    def __init__(self):
        super().__init__("nested too deeply for the YAML parser (brackets or indentation)")


# Aliases may repeat at most this many nodes beyond those the text writes: a few hundred bytes of aliases of
# aliases (a "billion laughs") load as shared objects, but every repr in a refusal, every copy or walk of the
# value expands them (a bomb under a config key was a MemoryError, or all the memory with no limit set).
MAX_ALIASED_NODES = 100_000


class AliasBombError(yaml.YAMLError):
    """Aliases repeating more than MAX_ALIASED_NODES nodes, or an alias inside the node it names (a value that
    contains itself): a YAMLError, so callers name their file as for any other malformed YAML."""


def _check_aliases(root: yaml.Node) -> None:
    """AliasBombError unless the value of ``root`` (composed, aliases as shared nodes) is a tree of at most
    MAX_ALIASED_NODES nodes more than it has distinct ones. Each node is counted once: cheap for any bomb."""
    sizes: dict[int, int] = {}  # id(node) -> nodes in its expanded value; absent: not counted yet
    open_ids: set[int] = set()  # nodes being counted: meeting one again is an alias inside itself

    def size(node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_ids:
            line = node.start_mark.line + 1
            raise AliasBombError(f"an alias inside the node it names (line {line}): a value that contains itself")
        open_ids.add(key)
        children = node.value if isinstance(node, yaml.SequenceNode) else ()
        if isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        sizes[key] = 1 + sum(size(child) for child in children)
        open_ids.discard(key)
        return sizes[key]

    total = size(root)
    if total - len(sizes) > MAX_ALIASED_NODES:
        raise AliasBombError(
            f"aliases expand {len(sizes)} written nodes to {total}: more than {MAX_ALIASED_NODES} repeated nodes "
            f'(a "billion laughs"?); write the values out'
        )


def load_yaml(text: str):
    """The YAML content of ``text`` (safe; ``1e-3`` is a number). AliasBombError for aliases that expand it beyond
    MAX_ALIASED_NODES repeated nodes or into itself, TooDeepError for nesting beyond Python's recursion limit."""
    loader = NumberLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        _check_aliases(root)
        return loader.construct_document(root)
    except RecursionError:
        raise TooDeepError() from None
    finally:
        loader.dispose()
