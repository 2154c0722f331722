"""ctypes bindings read from the C sources: every ``LIQUID_API`` prototype becomes a function called by name.

Why: a hand-kept copy of 20+ positional argument types per kernel drifts from the C code silently (a swapped
pair of pointers still "works"). Here the prototypes are parsed from the sources the library was built from,
so the argument types are the C declarations themselves, and every call names its arguments::

    kernels.function("cfc_step", torch.float32)(B=1, H=64, ..., x=x, state=h, out=out, work=scratch)

Arguments are checked against the prototype: a missing or unknown name is a ``TypeError``, a tensor of the
wrong dtype a ``TypeError``, a non-contiguous one a ``ValueError``. ``bind(**fixed)`` fixes the arguments that
stay the same between calls (weights, sizes) once, for per-step calls where every microsecond counts.

C types understood (``const`` and ``restrict`` ignored): ``int``, ``int64_t``, ``size_t`` (results), ``REAL`` (the
precision of the instantiation: ``float`` for ``_f32``, ``double`` for ``_f64``), ``float``, ``double``,
pointers to them, to ``uint8_t`` and to ``int`` (a tensor of that dtype, int32 for ``int``, or None for
NULL), and pointers to pointers (a list of tensors, or None).
"""

from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass
from pathlib import Path

import torch

PRECISIONS = {"f32": torch.float32, "f64": torch.float64}
SUFFIX = {dtype: suffix for suffix, dtype in PRECISIONS.items()}
_SCALARS = {
    "int": ctypes.c_int,
    "int64_t": ctypes.c_int64,
    "size_t": ctypes.c_size_t,
    "float": ctypes.c_float,
    "double": ctypes.c_double,
}
_ELEMENTS = {"float": torch.float32, "double": torch.float64, "uint8_t": torch.uint8, "int": torch.int32}
# LIQUID_API <result> <name or FN(name)>(<parameters>) {
_PROTOTYPE = re.compile(r"LIQUID_API\s+(\w+)\s+(FN\((\w+)\)|\w+)\s*\(([^)]*)\)\s*\{", re.S)


class BindingError(RuntimeError):
    """The C sources declare something these bindings cannot express, or the library lacks a declared symbol."""


@dataclass(frozen=True)
class Parameter:
    """One C parameter: ``kind`` is ``scalar`` (``ctype``), ``pointer`` or ``pointers`` (to ``element``)."""

    name: str
    kind: str
    ctype: type | None = None
    element: torch.dtype | None = None
    writable: bool = False  # the function may write the pointed-to elements (no const before the first *)


@dataclass(frozen=True)
class Prototype:
    """A declared function: its C symbol, result type and parameters, for one precision where generic."""

    symbol: str
    result: type | None
    parameters: tuple[Parameter, ...]


def _parameter(text: str, real: str | None, where: str) -> Parameter:
    raw = re.findall(r"\w+|\*", text)
    pointee_const = "const" in raw[: raw.index("*")] if "*" in raw else False
    tokens = [t for t in raw if t not in ("const", "restrict")]
    if len(tokens) < 2 or not re.fullmatch(r"[A-Za-z_]\w*", tokens[-1]):
        raise BindingError(f"{where}: cannot read parameter {text.strip()!r}")
    name, base, stars = tokens[-1], tokens[0], tokens.count("*")
    if base == "REAL":
        if real is None:
            raise BindingError(f"{where}: REAL outside a precision-generic (FN) function")
        base = real
    if stars == 0:
        if base not in _SCALARS:
            raise BindingError(f"{where}: unsupported scalar type {base!r} of {name}")
        return Parameter(name, "scalar", ctype=_SCALARS[base])
    if base not in _ELEMENTS or stars > 2:
        raise BindingError(f"{where}: unsupported pointer type {text.strip()!r}")
    kind = "pointer" if stars == 1 else "pointers"
    return Parameter(name, kind, element=_ELEMENTS[base], writable=not pointee_const)


def parse_prototypes(sources: list[Path]) -> dict[tuple[str, str | None], Prototype]:
    """Every ``LIQUID_API`` function in ``sources``: ``(name, "f32" | "f64")`` for precision-generic ones
    (``FN(name)``, instantiated per precision), ``(symbol, None)`` for the others."""
    found: dict[tuple[str, str | None], Prototype] = {}
    for path in sources:
        text = re.sub(r"/\*.*?\*/|//[^\n]*", " ", Path(path).read_text(), flags=re.S)
        for result, declared, generic, params in _PROTOTYPE.findall(text):
            variants = [(generic, suffix) for suffix in PRECISIONS] if generic else [(None, None)]
            for base, suffix in variants:
                real = {"f32": "float", "f64": "double"}.get(suffix)
                symbol = f"{base}_{suffix}" if base else declared
                where = f"{Path(path).name}: {symbol}"
                items = [p for p in params.split(",") if p.strip() and p.strip() != "void"]
                parameters = tuple(_parameter(p, real, where) for p in items)
                if result == "void":
                    ctype = None
                elif result in _SCALARS:
                    ctype = _SCALARS[result]
                else:
                    raise BindingError(f"{where}: unsupported result type {result!r}")
                key = (base, suffix) if base else (symbol, None)
                if key in found:
                    raise BindingError(f"{where}: declared twice")
                found[key] = Prototype(symbol, ctype, parameters)
    return found


def _address(param: Parameter, value, fn: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{fn}: {param.name} must be a tensor (or None), got {type(value).__name__}")
    if value.dtype != param.element:
        raise TypeError(f"{fn}: {param.name} must be {param.element}, got {value.dtype}")
    if value.device.type != "cpu":
        raise ValueError(f"{fn}: {param.name} must be on the CPU, got {value.device}")
    if not value.is_contiguous():
        raise ValueError(f"{fn}: {param.name}: tensor arguments must be contiguous")
    return value.data_ptr()


class _PointerArray:
    """A C array of tensor addresses; holds the tensors so their memory outlives the call."""

    def __init__(self, param: Parameter, tensors, fn: str):
        self.tensors = list(tensors)
        addresses = [_address(param, t, fn) for t in self.tensors]
        self.array = (ctypes.c_void_p * max(1, len(addresses)))(*addresses)
        self.address = ctypes.cast(self.array, ctypes.c_void_p).value


def _convert(param: Parameter, value, fn: str):
    """A Python value as the C argument of ``param``, plus what must stay referenced during the call."""
    if param.kind == "scalar":
        if isinstance(value, torch.Tensor):
            raise TypeError(f"{fn}: {param.name} is a {param.ctype.__name__}, got a tensor")
        return value, None
    if param.kind == "pointer":
        return _address(param, value, fn), value
    if value is None:
        return None, None
    array = _PointerArray(param, value, fn)
    return array.address, array


class CFunction:
    """One C function called with named arguments (see the module docstring)."""

    def __init__(self, prototype: Prototype, library: ctypes.CDLL):
        try:
            self._fn = getattr(library, prototype.symbol)
        except AttributeError:
            raise BindingError(f"the library does not export {prototype.symbol}, which the sources declare") from None
        self.prototype = prototype
        self.names = tuple(p.name for p in prototype.parameters)
        self._fn.argtypes = [p.ctype if p.kind == "scalar" else ctypes.c_void_p for p in prototype.parameters]
        self._fn.restype = prototype.result

    def __repr__(self) -> str:
        return f"CFunction({self.prototype.symbol}({', '.join(self.names)}))"

    def _check_names(self, given, expected) -> None:
        unknown, missing = sorted(set(given) - set(expected)), [n for n in expected if n not in given]
        if unknown or missing:
            raise TypeError(
                f"{self.prototype.symbol}: "
                + "; ".join(
                    part
                    for part in (
                        f"unknown argument(s) {', '.join(unknown)}" if unknown else "",
                        f"missing argument(s) {', '.join(missing)}" if missing else "",
                    )
                    if part
                )
            )

    def __call__(self, **arguments):
        """Call the C function with every argument by name, each checked against the prototype and converted."""
        self._check_names(arguments, self.names)
        symbol = self.prototype.symbol
        converted = [_convert(p, arguments[p.name], symbol) for p in self.prototype.parameters]
        return self._fn(*(value for value, _ in converted))  # `converted` keeps arrays alive; GIL released

    def bind(self, **fixed) -> "BoundCall":
        """The arguments that stay the same between calls, converted once; call the result with the rest."""
        return BoundCall(self, fixed)


class BoundCall:
    """A ``CFunction`` with some arguments fixed (``CFunction.bind``); ``keep`` holds their tensors."""

    def __init__(self, function: CFunction, fixed: dict):
        unknown = sorted(set(fixed) - set(function.names))
        if unknown:
            raise TypeError(f"{function.prototype.symbol}: unknown argument(s) {', '.join(unknown)}")
        self.function = function
        self.free = tuple(n for n in function.names if n not in fixed)
        params = {p.name: p for p in function.prototype.parameters}
        self._params = [params[n] for n in self.free]
        self._slots = [function.names.index(n) for n in self.free]
        self._unchecked = [(slot, p.name, p.kind == "pointer") for slot, p in zip(self._slots, self._params)]
        self._args: list = [None] * len(function.names)
        self.keep = []
        for name, value in fixed.items():
            param = params[name]
            converted, held = _convert(param, value, function.prototype.symbol)
            # as ctypes objects: ctypes passes an instance of the argument's own type without converting it
            if converted is not None:
                converted = param.ctype(converted) if param.kind == "scalar" else ctypes.c_void_p(converted)
            self._args[function.names.index(name)] = converted
            self.keep.append(held)

    def __call__(self, **arguments):
        """Call with the free arguments by name, each checked and converted as ``CFunction`` does."""
        if len(arguments) != len(self.free) or any(n not in arguments for n in self.free):
            self.function._check_names(arguments, self.free)
        args, symbol = list(self._args), self.function.prototype.symbol
        held = []
        for slot, param in zip(self._slots, self._params):
            args[slot], h = _convert(param, arguments[param.name], symbol)
            held.append(h)
        return self.function._fn(*args)

    def unchecked(self, **arguments):
        """The call without the dtype, device and layout checks: for the per-step kernels, where the checks
        cost more than the C code, and only with tensors the caller has just made or checked itself (right
        dtype, contiguous, on the CPU)."""
        args = list(self._args)
        for slot, name, pointer in self._unchecked:
            value = arguments[name]
            args[slot] = value.data_ptr() if pointer and value is not None else value
        return self.function._fn(*args)
