"""Test helpers: build an ncps model and the same model in liquid_control with identical weights.

ncps is a test-only dependency (the numerical oracle); this module is imported only by tests.
"""
from __future__ import annotations

import ncps.torch as nt
import ncps.wirings as nw
import torch

from liquid_control.cells import CfCCell, LTCCell, Wiring


def wiring_from_ncps(wiring: nw.Wiring) -> Wiring:
    """Our Wiring with exactly ncps's synapses (and ncps's layer structure)."""
    layers = [list(map(int, wiring.get_neurons_of_layer(l))) for l in range(wiring.num_layers)]
    return Wiring.from_dict(
        {
            "units": wiring.units,
            "output_size": wiring.output_dim,
            "input_size": wiring.input_dim,
            "layers": layers,
            "adjacency": wiring.adjacency_matrix.tolist(),
            "sensory_adjacency": wiring.sensory_adjacency_matrix.tolist(),
        }
    )


def _copy_cfc_block(block, theirs) -> None:
    with torch.no_grad():
        if theirs.backbone is not None:
            linears = [m for m in theirs.backbone if isinstance(m, torch.nn.Linear)]
            for ours_l, their_l in zip(block.backbone, linears, strict=True):
                ours_l.weight.copy_(their_l.weight)
                ours_l.bias.copy_(their_l.bias)
        heads = [theirs.ff1] if block.mode == "pure" else [theirs.ff1, theirs.ff2, theirs.time_a, theirs.time_b]
        block.head_weight.copy_(torch.cat([h.weight for h in heads]))
        block.head_bias.copy_(torch.cat([h.bias for h in heads]))
        if block.mode == "pure":
            block.w_tau.copy_(theirs.w_tau[0])
            block.A.copy_(theirs.A[0])


def cfc_pair(input_size: int, units, mode: str, **backbone):
    """(ncps CfC cell, our CfCCell) with the same weights; ``units`` int or an ncps wiring."""
    torch.manual_seed(0)
    theirs = nt.CfC(input_size, units, mode=mode, **backbone).rnn_cell
    if isinstance(units, nw.Wiring):
        ours = CfCCell(input_size, wiring_from_ncps(units), mode=mode)
        for block, layer in zip(ours.blocks, theirs._layers, strict=True):
            _copy_cfc_block(block, layer)
    else:
        ours = CfCCell(input_size, units, mode=mode, **backbone)
        _copy_cfc_block(ours.blocks[0], theirs)
    return theirs, ours


def ltc_pair(input_size: int, units, unfolds: int = 6):
    """(ncps LTC cell, our LTCCell with semi_implicit at the same unfolds) with the same weights."""
    torch.manual_seed(0)
    theirs = nt.LTC(input_size, units, ode_unfolds=unfolds).rnn_cell  # implicit_param_constraints=True
    ours = LTCCell(input_size, wiring_from_ncps(theirs._wiring), solver="semi_implicit", substeps=unfolds)
    with torch.no_grad():
        for name, param in ours.named_parameters():
            param.copy_(theirs._params[name])
    return theirs, ours


def run_ncps_cell(cell, x: torch.Tensor, elapsed, h0: torch.Tensor | None = None):
    """Drive an ncps cell step by step; ``elapsed`` is whatever ncps accepts (float, or a tensor per step)."""
    batch, steps = x.shape[:2]
    size = getattr(cell, "state_size", None) or cell.hidden_size  # ncps's plain CfCCell has hidden_size
    state = torch.zeros(batch, size) if h0 is None else h0
    outs = []
    for t in range(steps):
        ts = elapsed if not torch.is_tensor(elapsed) else elapsed[:, t]
        out, state = cell(x[:, t], state, ts)
        outs.append(out)
    return torch.stack(outs, 1), state
