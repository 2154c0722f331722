"""LTC solvers against scipy.integrate.solve_ivp on the LTC ODE: convergence orders, tolerance, stability."""

import pytest
import torch
from scipy.integrate import solve_ivp

from liquid_control.cells import LTCCell, make_solver

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def problem():
    """A small LTC (float64) with a fixed input: the ODE dv/dt = f(v) and its scipy reference solution."""
    torch.manual_seed(3)
    cell = LTCCell(3, 6, solver="euler").double()
    x = torch.randn(2, 3, dtype=torch.float64)
    v0 = torch.rand(2, 6, dtype=torch.float64) - 0.5
    with torch.no_grad():
        ctx = cell.step_context()
        ode = cell.dynamics(cell.prepare_inputs(x, ctx), ctx)

    def reference(t_end):
        @torch.no_grad()
        def rhs(_, y):
            return ode.derivative(torch.from_numpy(y.reshape(2, 6))).numpy().ravel()

        sol = solve_ivp(rhs, (0.0, t_end), v0.numpy().ravel(), method="DOP853", rtol=1e-12, atol=1e-12)
        return torch.from_numpy(sol.y[:, -1].reshape(2, 6))

    return ode, v0, reference


def _error(problem, solver, t_end=1.0):
    ode, v0, reference = problem
    with torch.no_grad():
        v = solver.solve(ode, v0, torch.full((2, 1), t_end, dtype=torch.float64))
    return (v - reference(t_end)).abs().max().item()


@pytest.mark.parametrize("name, order", [("euler", 1), ("semi_implicit", 1), ("midpoint", 2), ("rk4", 4)])
def test_fixed_step_error_shrinks_with_the_order_of_the_method(problem, name, order):
    coarse = _error(problem, make_solver(name, substeps=8))
    fine = _error(problem, make_solver(name, substeps=16))
    ratio = coarse / fine
    assert 0.75 * 2**order < ratio < 1.3 * 2**order, f"{name}: error ratio {ratio:.2f} for halved step"


def test_rk4_is_accurate_and_euler_is_not(problem):
    assert _error(problem, make_solver("rk4", substeps=16)) < 1e-5
    assert _error(problem, make_solver("euler", substeps=16)) > 1e-2


@pytest.mark.parametrize("rtol", [1e-4, 1e-7])
def test_dopri5_meets_its_tolerance_with_few_steps(problem, rtol):
    err = _error(problem, make_solver("dopri5", rtol=rtol, atol=rtol * 1e-2), t_end=2.0)
    assert err < 10 * rtol
    assert _error(problem, make_solver("dopri5", rtol=rtol, atol=rtol * 1e-2, max_steps=400), t_end=2.0) == err


def test_dopri5_raises_when_the_step_cap_is_hit(problem):
    with pytest.raises(RuntimeError, match="max_steps=3"):
        _error(problem, make_solver("dopri5", rtol=1e-10, atol=1e-12, max_steps=3))


def test_dopri5_steps_each_sample_to_its_own_dt(problem):
    ode, v0, reference = problem
    dt = torch.tensor([[0.3], [1.7]], dtype=torch.float64)
    with torch.no_grad():
        v = make_solver("dopri5", rtol=1e-9, atol=1e-11).solve(ode, v0, dt)
    torch.testing.assert_close(v[0], reference(0.3)[0], atol=1e-7, rtol=0)
    torch.testing.assert_close(v[1], reference(1.7)[1], atol=1e-7, rtol=0)


def test_exponential_stays_bounded_at_dt_over_tau_100_where_euler_blows_up(problem):
    ode, v0, _ = problem
    with torch.no_grad():
        a, _ = ode.conductances(v0)
        tau_max = (ode.cm / a).max().item()
        dt = torch.full((2, 1), 100.0 * tau_max, dtype=torch.float64)  # every neuron: dt / tau >= 100
        # v stays in the hull of v_leak and the reversal potentials (b / a is a convex combination of them)
        lo = min(ode.ctx["gleak_vleak"].min().item(), -1.0) - 1e-9
        hi = max(1.0, (ode.ctx["gleak_vleak"] / ode.ctx["gleak"]).max().item()) + 1e-9
        v_exp, v_euler = v0.clone(), v0.clone()
        exponential, euler = make_solver("exponential"), make_solver("euler")
        for _ in range(20):
            v_exp = exponential.solve(ode, v_exp, dt)
            v_euler = euler.solve(ode, v_euler, dt)
    assert torch.isfinite(v_exp).all() and lo <= v_exp.min().item() and v_exp.max().item() <= hi
    assert not (torch.isfinite(v_euler).all() and v_euler.abs().max() < 10.0)


def test_exponential_converges_to_the_reference_at_first_order(problem):
    errors = [_error(problem, make_solver("exponential", substeps=n)) for n in (16, 32)]
    assert errors[1] < 0.05 and 1.5 < errors[0] / errors[1] < 2.6


@pytest.mark.parametrize("name", ["semi_implicit", "euler", "midpoint", "rk4", "exponential", "dopri5"])
def test_zero_dt_returns_the_state_unchanged(problem, name):
    ode, v0, _ = problem
    with torch.no_grad():
        v = make_solver(name).solve(ode, v0, torch.zeros(2, 1, dtype=torch.float64))
    assert torch.equal(v, v0)


def test_unknown_solver_and_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="unknown ODE solver 'heun'"):
        make_solver("heun")
    with pytest.raises(ValueError, match="substeps"):
        make_solver("rk4", substeps=0)
    with pytest.raises(ValueError, match="bad options"):
        make_solver("euler", rtol=1e-3)
    assert make_solver({"name": "dopri5", "substeps": 2, "rtol": 1e-3, "atol": 1e-5, "max_steps": 9}).config() == {
        "name": "dopri5",
        "substeps": 2,
        "rtol": 1e-3,
        "atol": 1e-5,
        "max_steps": 9,
    }


@pytest.mark.parametrize("name", ["euler", "midpoint", "rk4"])
def test_an_explicit_solver_past_its_stability_limit_is_an_error_not_nan_states(name):
    """Before: the README's `LTC(16, 32, solver="rk4")` on a sequence given no dt (1 s steps, far past one rk4
    step's stability limit here) returned NaN outputs without a word; streaming steps too."""
    from liquid_control.cells import LTC, SolverDivergedError

    torch.manual_seed(0)
    rnn = LTC(16, 32, solver=name, batch_first=True)
    x = torch.randn(2, 50, 16)
    with pytest.raises(SolverDivergedError, match=rf"LTC solver '{name}' diverged: .*solver='semi_implicit'"):
        rnn(x)
    with pytest.raises(SolverDivergedError, match=rf"LTC solver '{name}' diverged"), torch.no_grad():
        state = None
        for t in range(50):  # the streaming step (the numpy kernel without grad)
            state = rnn.cell.step(x[:, t], state, 1.0)
    y, _ = rnn(x, torch.full((2, 50), 0.005))  # within the limit the same cell runs
    assert torch.isfinite(y).all() and y.abs().max() < 2.0
    for stable in ("semi_implicit", "exponential", "dopri5"):  # stable for any dt: never checked, never refused
        y, _ = LTC(16, 32, solver=stable, batch_first=True)(x)
        assert torch.isfinite(y).all()


UNSTABLE_RK4_DT = 0.15  # LTC(16, 32), seed 0: rk4 grows ~2-8x a step (stable at 0.1)


def test_a_streaming_explicit_solver_growing_less_than_10x_a_step_is_stopped_before_its_states_are_huge():
    """Before: a streaming step's bound was 10x the previous step's state, so rk4 at a dt where it grows less than
    10x a step ran on for a hundred steps of huge finite states (up to 1e38) before they overflowed."""
    from liquid_control.cells import LTC, SolverDivergedError

    torch.manual_seed(0)
    rnn = LTC(16, 32, solver="rk4", batch_first=True)
    x = torch.randn(2, 300, 16)
    state, peak = None, 0.0
    with pytest.raises(SolverDivergedError, match="LTC solver 'rk4' diverged"), torch.no_grad():
        for t in range(300):
            state = rnn.cell.step(x[:, t], state, UNSTABLE_RK4_DT)
            peak = max(peak, float(state.abs().max()))
    assert peak < 100.0  # the states it returned before the error


@pytest.mark.parametrize("name", ["euler", "midpoint", "rk4"])
def test_an_explicit_solver_from_a_start_far_beyond_the_potentials_is_not_refused(name):
    """The exact solution from any start moves towards the potentials: a start 1000x beyond them is no divergence."""
    from liquid_control.cells import LTC

    torch.manual_seed(0)
    rnn = LTC(16, 32, solver=name, batch_first=True)
    x, h0 = torch.randn(2, 40, 16), torch.full((2, 32), -1e3)
    y, h_n = rnn(x, 0.005, h0)  # the sequence
    assert torch.isfinite(y).all() and h_n.abs().max() < 1e3
    state = h0
    with torch.no_grad():
        for t in range(40):  # the streaming step
            state = rnn.cell.step(x[:, t], state, 0.005)
    torch.testing.assert_close(state, h_n.detach(), rtol=1e-4, atol=1e-4)


def test_non_finite_weights_or_inputs_are_not_called_an_explicit_solver_divergence():
    """Before: a NaN weight (an optimizer's divergence, which training names with its learning rate) or a NaN input
    raised SolverDivergedError asking for a shorter dt; the NaN states go on as with the stable solvers."""
    from liquid_control.cells import LTC

    torch.manual_seed(0)
    rnn = LTC(16, 32, solver="rk4", batch_first=True)
    x = torch.randn(2, 5, 16)
    nan_x = x.clone()
    nan_x[0, 2, 3] = float("nan")
    assert torch.isnan(rnn(nan_x, 0.005)[0]).any()
    with torch.no_grad():
        rnn.cell.vleak[0] = float("nan")
    assert torch.isnan(rnn(x, 0.005)[0]).any()


def test_a_solver_of_ones_own_saves_and_loads_once_registered_and_is_refused_at_save_before(tmp_path, monkeypatch):
    """A probe extending the package: an LTC with a solver instance of one's own class (a Heun step) saved, then
    load_model refused the file ('unknown ODE solver'). save_model refuses it, nothing written, naming the registry;
    registered in SOLVERS (the module's recipe) it saves and loads back, the same outputs."""
    from liquid_control.cells import LTC, load_model, save_model, solvers

    class Heun(solvers.Solver):
        name = "heun"

        def advance(self, ode, v, h):
            k1 = ode.derivative(v)
            return v + 0.5 * h * (k1 + ode.derivative(v + h * k1))

    torch.manual_seed(0)
    model = LTC(3, 6, solver=Heun(substeps=2))
    x, path = torch.randn(2, 5, 3), tmp_path / "heun.pt"
    with pytest.raises(
        ValueError, match=r"heun.pt: its config would not load back .*unknown ODE solver 'heun'.*SOLVERS"
    ):
        save_model(path, model)
    assert not path.exists()
    plain = LTC(3, 6)
    state = torch.random.get_rng_state()  # the check builds a core: not from the caller's generator (a review)
    save_model(tmp_path / "plain.pt", plain)
    assert torch.equal(state, torch.random.get_rng_state())
    monkeypatch.setitem(solvers.SOLVERS, "heun", Heun)
    save_model(path, model)
    with torch.no_grad():
        assert torch.equal(load_model(path)(x, 0.05)[0], model(x, 0.05)[0])
