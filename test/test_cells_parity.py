"""Parity with ncps (PyTorch): same weights in, same outputs out, to 1e-5, where ncps works (scalar dt)."""
import ncps.wirings as nw
import numpy as np
import pytest
import torch

from cells_oracle import cfc_pair, ltc_pair, run_ncps_cell
from liquid_control.cells import AutoNCP, FullyConnected, LiquidRNN

torch.set_num_threads(1)


def _inputs(batch=3, steps=12, features=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, steps, features, generator=g)


@pytest.mark.parametrize("mode", ["default", "no_gate", "pure"])
@pytest.mark.parametrize("backbone", [{}, {"backbone_layers": 2, "backbone_units": 24}, {"backbone_layers": 0}])
def test_cfc_fully_connected_matches_ncps(mode, backbone):
    theirs, ours = cfc_pair(5, 16, mode, **backbone)
    x, dt = _inputs(), 0.37
    expected, expected_h = run_ncps_cell(theirs, x, dt)
    out, h = LiquidRNN(ours)(x, dt)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(h, expected_h, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["default", "no_gate", "pure"])
def test_cfc_wired_ncp_matches_ncps(mode):
    theirs, ours = cfc_pair(5, nw.AutoNCP(20, 4, seed=7), mode)
    x, dt = _inputs(), 0.8
    expected, expected_h = run_ncps_cell(theirs, x, dt)
    out, h = LiquidRNN(ours)(x, dt)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(h, expected_h, atol=1e-5, rtol=0)


@pytest.mark.parametrize("units", [12, "ncp"])
@pytest.mark.parametrize("unfolds", [1, 6])
def test_ltc_semi_implicit_matches_ncps(units, unfolds):
    wiring = nw.AutoNCP(16, 3, seed=5) if units == "ncp" else units
    theirs, ours = ltc_pair(5, wiring, unfolds)
    x, dt = _inputs(), 0.6
    expected, expected_h = run_ncps_cell(theirs, x, dt)
    out, h = LiquidRNN(ours)(x, dt)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(h, expected_h, atol=1e-5, rtol=0)


def test_streaming_step_matches_ncps_for_cfc_and_ltc():
    """The no-grad streaming path (numpy kernel) gives the same numbers as ncps too."""
    x = _inputs(batch=1, steps=6)
    for theirs, ours in (cfc_pair(5, 16, "default"), ltc_pair(5, 12)):
        expected, _ = run_ncps_cell(theirs, x, 0.5)
        ours.eval()
        state, outs = None, []
        with torch.no_grad():
            for t in range(x.shape[1]):
                state = ours.step(x[:, t], state, torch.tensor([0.5]))
                outs.append(ours.output(state))
        torch.testing.assert_close(torch.stack(outs, 1), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (lambda: AutoNCP(24, 5, sparsity_level=0.6, seed=3), lambda: nw.AutoNCP(24, 5, sparsity_level=0.6, seed=3)),
        (lambda: FullyConnected(7, 2, seed=9), lambda: nw.FullyConnected(7, 2, erev_init_seed=9)),
    ],
)
def test_wiring_construction_matches_ncps_for_the_same_seed(ours, theirs):
    a, b = ours().build(6), theirs()
    b.build(6)
    assert np.array_equal(a.adjacency, b.adjacency_matrix)
    assert np.array_equal(a.sensory_adjacency, b.sensory_adjacency_matrix)
