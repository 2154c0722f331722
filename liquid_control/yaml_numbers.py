"""YAML as ROS 2 and YAML 1.2 read it: ``1e-3`` is a number.

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
    """PyYAML's safe loader, with YAML 1.2's floats without a dot (``1e-3``, ``-2E+5``) and YAML 1.2's integers:
    ``010`` is ten and ``1:30`` a string (YAML 1.1's octal and base 60 read them as 8 and 90: ``--set
    training.epochs_first=010`` trained 8 epochs), ``0o10`` and ``0x1f`` octal and hexadecimal."""


INT_12 = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")  # YAML 1.2's core schema
# PyYAML's resolvers without YAML 1.1's int (its octal 010, base-60 1:30, 0b and 1_000 forms), then 1.2's
NumberLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:int"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
NumberLoader.add_implicit_resolver("tag:yaml.org,2002:int", INT_12, list("-+0123456789"))
NumberLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"),
)


def _yaml_12_int(text: str) -> int | None:
    """``text`` as YAML 1.2 reads an integer (decimal with any leading zeros, 0o octal, 0x hexadecimal), else None."""
    if INT_12.match(text) is None:
        return None
    if text.startswith(("0o", "0x")):
        return int(text[2:], 8 if text[1] == "o" else 16)
    return int(text, 10)


def _construct_int(loader: NumberLoader, node: yaml.ScalarNode) -> int:
    """YAML 1.2's integers (an explicit ``!!int`` of another form: PyYAML's), and a clear error naming the line where
    one cannot be made: more digits than Python converts (``sys.get_int_max_str_digits()``, 4300 by default: a
    ValueError that named neither file nor key), or a ``!!int`` tag on no integer (``!!int abc``; ``!!int ''`` was an
    IndexError)."""
    try:
        value = _yaml_12_int(str(loader.construct_scalar(node)))
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
