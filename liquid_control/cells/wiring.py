"""Wirings: which neuron talks to which, with what polarity, organised in layers.

A wiring is plain data: ``adjacency`` (units x units, entries -1/0/+1, ``[src, dest]``),
``sensory_adjacency`` (input_size x units), the neuron ids of each layer, and ``output_size`` motor neurons
(ids ``0 .. output_size-1``, as in ncps). ``to_dict()``/``Wiring.from_dict()`` round-trip it exactly
(matrices included), so a saved model reloads with the same synapses -- ncps's NCP cannot reload its own
``get_config()``.

Construction follows ncps (same random streams for the same seed, so ``AutoNCP(64, 8, seed=s)`` gives
ncps's synapses): ``FullyConnected`` draws polarities from ``default_rng(seed)``, ``NCP`` wires
sensory -> inter -> command (+ recurrent command synapses) -> motor from ``RandomState(seed)``.
The sensory synapses need the input size, so they are drawn in ``build(input_size)`` (the cells call it).
"""

from __future__ import annotations

import numbers

import numpy as np

MAX_SEED = 2**32 - 1  # numpy's legacy RandomState (NCP) takes seeds 0..2**32-1


def int_arg(name: str, value, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an int argument of a wiring: TypeError unless an integer (not a bool), ValueError out of
    [minimum, maximum] (numpy's own errors name neither the argument nor the wiring)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be {bounds}, got {value}")
    return int(value)


class Wiring:
    """A built or to-be-built wiring. Subclasses draw the synapses; this class only holds them."""

    kind = "custom"

    def __init__(self, units: int, output_size: int, layers: list[list[int]] | None = None):
        units, output_size = int_arg("units", units, 1), int_arg("output_size", output_size, 1)
        if not 1 <= output_size <= units:
            raise ValueError(f"output_size must be in [1, {units}], got {output_size}")
        self.units = int(units)
        self.output_size = int(output_size)
        self.layers = [list(range(units))] if layers is None else [list(map(int, l)) for l in layers]
        self.adjacency = np.zeros((units, units), dtype=np.int8)
        self.sensory_adjacency: np.ndarray | None = None
        self.input_size: int | None = None
        self.params: dict = {}

    # ---- building -----------------------------------------------------------------------------------
    @property
    def is_built(self) -> bool:
        """Whether ``build`` has fixed the sensory inputs."""
        return self.sensory_adjacency is not None

    def build(self, input_size: int) -> "Wiring":
        """Fix the number of sensory inputs and draw the sensory synapses (once)."""
        if self.is_built:
            if input_size != self.input_size:
                raise ValueError(f"wiring was built for {self.input_size} inputs, cannot use it with {input_size}")
            return self
        self.input_size = input_size = int_arg("input_size", input_size, 1)
        self.sensory_adjacency = np.zeros((input_size, self.units), dtype=np.int8)
        self._draw_sensory_synapses()
        return self

    def _draw_sensory_synapses(self) -> None:
        raise ValueError(f"{type(self).__name__} has no rule for sensory synapses; load it with from_dict")

    def _synapse(self, src: int, dest: int, polarity: int) -> None:
        self.adjacency[src, dest] = polarity

    def _sensory_synapse(self, src: int, dest: int, polarity: int) -> None:
        self.sensory_adjacency[src, dest] = polarity

    # ---- views used by the cells --------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        """Number of neuron layers (1 for an unlayered wiring)."""
        return len(self.layers)

    def layer_input_mask(self, layer: int) -> np.ndarray:
        """(inputs of the layer, neurons of the layer) |polarity| mask: sensory for layer 0, else previous layer."""
        self._require_built()
        dest = self.layers[layer]
        if layer == 0:
            return np.abs(self.sensory_adjacency[:, dest]).astype(np.float32)
        src = self.layers[layer - 1]
        return np.abs(self.adjacency[np.ix_(src, dest)]).astype(np.float32)

    @property
    def synapse_count(self) -> int:
        """Number of synapses between neurons."""
        return int(np.abs(self.adjacency).sum())

    @property
    def sensory_synapse_count(self) -> int:
        """Number of synapses from the sensory inputs (the wiring must be built)."""
        self._require_built()
        return int(np.abs(self.sensory_adjacency).sum())

    def _require_built(self) -> None:
        if not self.is_built:
            raise ValueError(f"{type(self).__name__} is not built yet: call build(input_size) first")

    # ---- serialisation ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Everything needed to rebuild this exact wiring, as JSON/``weights_only``-safe builtins."""
        self._require_built()
        return {
            "kind": self.kind,
            "params": dict(self.params),
            "units": self.units,
            "output_size": self.output_size,
            "input_size": self.input_size,
            "layers": [list(l) for l in self.layers],
            "adjacency": self.adjacency.astype(int).tolist(),
            "sensory_adjacency": self.sensory_adjacency.astype(int).tolist(),
        }

    @staticmethod
    def from_dict(data: dict) -> "Wiring":
        """The exact wiring ``to_dict`` described (its ``kind``/``params`` kept for reference)."""
        try:
            wiring = Wiring(int(data["units"]), int(data["output_size"]), data["layers"])
            adjacency = np.asarray(data["adjacency"], dtype=np.int8)
            sensory = np.asarray(data["sensory_adjacency"], dtype=np.int8)
            input_size = int(data["input_size"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"invalid wiring dict: {exc}") from exc
        if adjacency.shape != (wiring.units, wiring.units) or sensory.shape != (input_size, wiring.units):
            raise ValueError(
                f"invalid wiring dict: adjacency {adjacency.shape} / sensory_adjacency {sensory.shape} do not match "
                f"{wiring.units} units and {input_size} inputs"
            )
        if sorted(n for l in wiring.layers for n in l) != list(range(wiring.units)):
            raise ValueError("invalid wiring dict: layers must partition the neuron ids 0..units-1")
        wiring.adjacency, wiring.sensory_adjacency, wiring.input_size = adjacency, sensory, input_size
        wiring.kind = str(data.get("kind", "custom"))
        wiring.params = dict(data.get("params", {}))
        return wiring

    def __eq__(self, other) -> bool:
        if not isinstance(other, Wiring) or not (self.is_built and other.is_built):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        sizes = "/".join(str(len(l)) for l in self.layers)
        return (
            f"{type(self).__name__}(kind={self.kind}, units={self.units}, layers={sizes}, "
            f"outputs={self.output_size}, inputs={self.input_size})"
        )


class FullyConnected(Wiring):
    """Every neuron to every neuron (and every input to every neuron); polarity +1 with probability 2/3."""

    kind = "fully_connected"

    def __init__(self, units: int, output_size: int | None = None, seed: int = 1111, self_connections: bool = True):
        super().__init__(units, units if output_size is None else output_size)
        units, seed = self.units, int_arg("seed", seed, 0)  # default_rng takes any seed >= 0 (NCP: RandomState)
        self.params = {
            "units": units,
            "output_size": self.output_size,
            "seed": seed,
            "self_connections": self_connections,
        }
        self._rng = np.random.default_rng(seed)
        for src in range(units):
            for dest in range(units):
                if src != dest or self_connections:
                    self._synapse(src, dest, self._rng.choice([-1, 1, 1]))

    def _draw_sensory_synapses(self) -> None:
        for src in range(self.input_size):
            for dest in range(self.units):
                self._sensory_synapse(src, dest, self._rng.choice([-1, 1, 1]))


class NCP(Wiring):
    """Neural circuit policy: sensory -> inter -> command (recurrent) -> motor, sparse and seeded.

    Neuron ids are ``[motor | command | inter]``; the layers (processing order) are inter, command, motor.
    """

    kind = "ncp"

    def __init__(
        self,
        inter_neurons: int,
        command_neurons: int,
        motor_neurons: int,
        sensory_fanout: int,
        inter_fanout: int,
        recurrent_command_synapses: int,
        motor_fanin: int,
        seed: int = 22222,
    ):
        for name, value in (
            ("inter_neurons", inter_neurons),
            ("command_neurons", command_neurons),
            ("motor_neurons", motor_neurons),
        ):
            if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value < 1:
                raise ValueError(f"NCP needs {name} >= 1, got {value}")
            int_arg(name, value, 1)
        for name, value in (
            ("sensory_fanout", sensory_fanout),
            ("inter_fanout", inter_fanout),
            ("recurrent_command_synapses", recurrent_command_synapses),
            ("motor_fanin", motor_fanin),
        ):
            int_arg(name, value, 0)
        seed = int_arg("seed", seed, 0, MAX_SEED)
        if motor_fanin > command_neurons:
            raise ValueError(f"motor_fanin {motor_fanin} exceeds the {command_neurons} command neurons")
        if sensory_fanout > inter_neurons:
            raise ValueError(f"sensory_fanout {sensory_fanout} exceeds the {inter_neurons} inter neurons")
        if inter_fanout > command_neurons:
            raise ValueError(f"inter_fanout {inter_fanout} exceeds the {command_neurons} command neurons")
        motor = list(range(motor_neurons))
        command = list(range(motor_neurons, motor_neurons + command_neurons))
        inter = list(range(motor_neurons + command_neurons, motor_neurons + command_neurons + inter_neurons))
        super().__init__(len(motor) + len(command) + len(inter), motor_neurons, [inter, command, motor])
        self.params = {
            "inter_neurons": inter_neurons,
            "command_neurons": command_neurons,
            "motor_neurons": motor_neurons,
            "sensory_fanout": sensory_fanout,
            "inter_fanout": inter_fanout,
            "recurrent_command_synapses": recurrent_command_synapses,
            "motor_fanin": motor_fanin,
            "seed": seed,
        }
        self._layout = dict(self.params)  # AutoNCP replaces `params` with its own arguments
        self._rng = np.random.RandomState(seed)

    def _draw_sensory_synapses(self) -> None:
        # All NCP synapses are drawn here, in ncps's order, so one seed gives ncps's wiring.
        rng = self._rng
        inter, command, motor = self.layers
        sensory = list(range(self.input_size))
        p = self._layout

        def fan_out(sources, targets, fanout, add):
            """Each source reaches `fanout` random targets; returns the targets nobody reached."""
            missed = list(targets)
            for src in sources:
                for dest in rng.choice(targets, size=fanout, replace=False):
                    if dest in missed:
                        missed.remove(dest)
                    add(src, dest, rng.choice([-1, 1]))
            return missed

        def fan_in(missed, sources, fanin, add):
            for dest in missed:
                for src in rng.choice(sources, size=fanin, replace=False):
                    add(src, dest, rng.choice([-1, 1]))

        missed = fan_out(sensory, inter, p["sensory_fanout"], self._sensory_synapse)
        fanin = int(np.clip(int(len(sensory) * p["sensory_fanout"] / len(inter)), 1, len(sensory)))
        fan_in(missed, sensory, fanin, self._sensory_synapse)

        missed = fan_out(inter, command, p["inter_fanout"], self._synapse)
        fanin = int(np.clip(int(len(inter) * p["inter_fanout"] / len(command)), 1, len(command)))
        fan_in(missed, inter, fanin, self._synapse)

        for _ in range(p["recurrent_command_synapses"]):
            src, dest = rng.choice(command), rng.choice(command)
            self._synapse(src, dest, rng.choice([-1, 1]))

        # command -> motor: every motor neuron hears `motor_fanin` command neurons; unheard ones get a motor
        unused = list(command)
        for dest in motor:
            for src in rng.choice(command, size=p["motor_fanin"], replace=False):
                if src in unused:
                    unused.remove(src)
                self._synapse(src, dest, rng.choice([-1, 1]))
        fanout = int(np.clip(int(len(motor) * p["motor_fanin"] / len(command)), 1, len(motor)))
        for src in unused:
            for dest in rng.choice(motor, size=fanout, replace=False):
                self._synapse(src, dest, rng.choice([-1, 1]))


class AutoNCP(NCP):
    """An NCP sized from a unit count: 40% of the non-motor neurons are command neurons, fan-outs from sparsity."""

    kind = "auto_ncp"

    def __init__(self, units: int, output_size: int, sparsity_level: float = 0.5, seed: int = 22222):
        units, output_size = int_arg("units", units, 1), int_arg("output_size", output_size, 1)
        if output_size >= units - 2:
            raise ValueError(f"output_size must be < units - 2 (got {output_size} outputs for {units} units)")
        if isinstance(sparsity_level, bool) or not isinstance(sparsity_level, numbers.Real):
            raise TypeError(f"sparsity_level must be a number, got {type(sparsity_level).__name__} {sparsity_level!r}")
        if not 0.1 <= sparsity_level <= 1.0:
            raise ValueError(f"sparsity_level must be in [0.1, 1.0], got {sparsity_level}")
        density = 1.0 - sparsity_level
        hidden = units - output_size
        command = max(int(0.4 * hidden), 1)
        inter = hidden - command
        super().__init__(
            inter,
            command,
            output_size,
            sensory_fanout=max(int(inter * density), 1),
            inter_fanout=max(int(command * density), 1),
            recurrent_command_synapses=max(int(command * density * 2), 1),
            motor_fanin=max(int(command * density), 1),
            seed=seed,
        )
        self.params = {"units": units, "output_size": output_size, "sparsity_level": sparsity_level, "seed": seed}


def as_wiring(units_or_wiring, input_size: int) -> Wiring | None:
    """A built wiring from a Wiring or a wiring dict; None for a plain unit count (a number: ``int_arg`` checks it).

    TypeError for anything else, naming this package's wiring for one of ncps's (an ncps user's first line,
    ``CfC(5, ncps.wirings.AutoNCP(12, 3))``, was told that units must be an integer)."""
    if isinstance(units_or_wiring, dict):
        units_or_wiring = Wiring.from_dict(units_or_wiring)
    if isinstance(units_or_wiring, Wiring):
        return units_or_wiring.build(input_size)
    if isinstance(units_or_wiring, numbers.Number):
        return None
    kind = type(units_or_wiring)
    hint = ""
    if kind.__module__.split(".")[0] == "ncps":
        ours = kind.__name__ if kind.__name__ in ("AutoNCP", "NCP", "FullyConnected") else None
        hint = (
            f"; for ncps's {kind.__name__}: give liquid_control.cells.{ours}(...) (the same synapses for the same seed)"
            if ours
            else f"; for ncps's {kind.__name__}: Wiring.from_dict with its adjacency matrices"
        )
    raise TypeError(
        "units must be an integer, a Wiring (AutoNCP, NCP, FullyConnected) or a wiring's dict, got "
        f"{kind.__name__} {units_or_wiring!r}{hint}"
    )
