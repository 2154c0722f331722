"""Speed of our CfC/LTC cells beside ncps (the reference library) on the same shapes, on this machine.

Training throughput: forward + backward of a 64-unit model on a batch of 32 sequences x 64 steps
(16 input features, scalar dt for ncps, per-sample (B, T) dt for ours): CfC, LTC, and the NCP-wired CfC
(AutoNCP(64, 8)). Single-step latency: one streaming
step, batch 1, no grad (ncps: ``cell(x, h, dt)``; ours: ``cell.step(x, state, dt)`` with a (1,) dt tensor).

All timings use ONE torch thread (``torch.set_num_threads(1)``) and measure the CPU time of this process
(``time.process_time``), not wall time: other engineers share this 2-core machine, and CPU time does not
count the time we wait for them. ncps and ours are timed in alternating blocks (each block after one untimed
warm-up call) and each figure is the median of the repeats. The last lines are ``name: value`` figures.

ncps (the reference, 1.0.1) is a test-only dependency: ``./test.sh`` installs it (requirements-test.txt), or
``.venv/bin/python -m pip install ncps==1.0.1``.

    .venv/bin/python benchmarks/bench_cells.py [--repeats 11] [--quick]   # ~15 s idle, ~90 s loaded; --quick: ~7 s
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BATCH, STEPS, FEATURES, UNITS = 32, 64, 16, 64


def path_of(fn) -> str:
    """Which kernel backends one call of ``fn`` ran (the dispatcher's record), e.g. "compiled"."""
    from liquid_control.cells import kernels

    with kernels.recording() as ran:
        fn()
    return "+".join(sorted({backend for _, _, backend in ran})) or "?"


def paired_times(fn_a, fn_b, repeats: int, inner: int) -> tuple[float, float]:
    """Median CPU seconds per call of two functions, timed in alternating blocks of `inner` calls.

    Alternating keeps both under the same background load (other engineers share this CPU); each block
    starts with one untimed call so neither side pays for the other's memory churn (page faults when the
    allocator hands back memory the other model freed).
    """
    samples_a, samples_b = [], []
    for _ in range(repeats):
        for fn, samples in ((fn_a, samples_a), (fn_b, samples_b)):
            fn()
            start = time.process_time()
            for _ in range(inner):
                fn()
            samples.append((time.process_time() - start) / inner)
    return statistics.median(samples_a), statistics.median(samples_b)


def train_step(model, x, dt, ours: bool):
    def run():
        model.zero_grad(set_to_none=True)
        out = model(x, dt)[0] if ours else model(x, timespans=dt)[0]
        out.pow(2).mean().backward()

    return run


def bench_training(kind: str, repeats: int):
    import ncps.torch as nt
    import torch

    from liquid_control.cells import LTC, AutoNCP, CfC

    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, STEPS, FEATURES, generator=g)
    if kind == "cfc":
        theirs, ours = nt.CfC(FEATURES, UNITS), CfC(FEATURES, UNITS)
    elif kind == "cfc_ncp":  # the wired CfC of the NCP papers: AutoNCP(64 units, 8 motor neurons)
        from ncps.wirings import AutoNCP as TheirAutoNCP

        theirs, ours = nt.CfC(FEATURES, TheirAutoNCP(UNITS, 8)), CfC(FEATURES, AutoNCP(UNITS, 8))
    else:
        theirs, ours = nt.LTC(FEATURES, UNITS), LTC(FEATURES, UNITS)
    # ncps only handles a scalar-like dt per step (see test_cells_parity.py); ours gets per-sample dts
    ts_theirs = None
    dt_ours = 0.05 + torch.rand(BATCH, STEPS, generator=g)
    ours_fn = train_step(ours, x, dt_ours, True)
    return (*paired_times(train_step(theirs, x, ts_theirs, False), ours_fn, repeats, 1), path_of(ours_fn))


def bench_step(kind: str, repeats: int):
    import ncps.torch as nt
    import torch

    from liquid_control.cells import LTC, CfC

    torch.manual_seed(0)
    if kind == "cfc":
        theirs, ours = nt.CfC(FEATURES, UNITS).rnn_cell, CfC(FEATURES, UNITS).cell
    else:
        theirs, ours = nt.LTC(FEATURES, UNITS).rnn_cell, LTC(FEATURES, UNITS).cell
    ours.eval()
    x = torch.randn(1, FEATURES)
    h_theirs, h_ours = torch.zeros(1, UNITS), torch.zeros(1, UNITS)
    dt = torch.tensor([0.05])
    with torch.no_grad():
        times = paired_times(lambda: theirs(x, h_theirs, 0.05), lambda: ours.step(x, h_ours, dt), repeats, 500)
        return (*times, path_of(lambda: ours.step(x, h_ours, dt)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, help="timing repeats per figure (median taken; default 11)")
    parser.add_argument("--quick", action="store_true", help="3 repeats (a rough look)")
    args = parser.parse_args(argv)
    if args.quick and args.repeats is not None:  # before: --quick silently replaced --repeats
        parser.error("--quick is --repeats 3: give one of them")
    if args.repeats is not None and args.repeats < 1:  # each figure is a median over the repeats
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    repeats = 3 if args.quick else args.repeats or 11
    try:
        import ncps  # noqa: F401
    except ModuleNotFoundError:
        parser.exit(
            2,
            f"{parser.prog}: error: needs ncps, the reference library (a test-only dependency): ./test.sh installs "
            "it, or .venv/bin/python -m pip install ncps==1.0.1\n",
        )
    import torch  # after the options are checked: a wrong one is refused at once, not after torch's import

    from liquid_control.cells import native

    torch.set_num_threads(1)
    lib = native.load()
    compiled = (
        f"yes ({lib.isa} vector code)"
        if lib is not None
        else f"no ({native.load_error() or 'LIQUID_CONTROL_NATIVE=0'})"  # a failed build: its reason
    )
    print(f"torch {torch.__version__}, 1 thread; medians of {repeats} repeats; compiled kernels: {compiled}\n")
    print(f"{'benchmark':48s} {'ncps':>12s} {'ours':>12s} {'speedup':>8s}  kernel path (ours)")
    figures = {}
    for kind in ("cfc", "ltc", "cfc_ncp"):
        t_theirs, t_ours, path = bench_training(kind, repeats)
        label = f"{kind.upper().replace('_', '-')} train fwd+bwd {BATCH}x{STEPS} steps, {UNITS} units"
        print(f"{label:48s} {t_theirs * 1e3:10.1f}ms {t_ours * 1e3:10.1f}ms {t_theirs / t_ours:7.2f}x  {path}")
        figures[f"{kind}_train_ms"] = t_ours * 1e3
        figures[f"{kind}_train_ms_ncps"] = t_theirs * 1e3
        figures[f"{kind}_train_speedup_vs_ncps"] = t_theirs / t_ours
    for kind in ("cfc", "ltc"):
        t_theirs, t_ours, path = bench_step(kind, repeats)
        label = f"{kind.upper()}-{UNITS} single step, batch 1, no grad" + (" (6 unfolds)" if kind == "ltc" else "")
        print(f"{label:48s} {t_theirs * 1e6:10.1f}us {t_ours * 1e6:10.1f}us {t_theirs / t_ours:7.2f}x  {path}")
        figures[f"{kind}64_step_speedup_vs_ncps"] = t_theirs / t_ours
        figures[f"{kind}64_step_us"] = t_ours * 1e6
        figures[f"{kind}64_step_us_ncps"] = t_theirs * 1e6
    print()
    for name in (
        "cfc_train_ms_ncps",
        "cfc_train_ms",
        "ltc_train_ms_ncps",
        "ltc_train_ms",
        "cfc_ncp_train_ms_ncps",
        "cfc_ncp_train_ms",
        "cfc_ncp_train_speedup_vs_ncps",
        "cfc64_step_us_ncps",
        "ltc64_step_us_ncps",
        "cfc_train_speedup_vs_ncps",
        "ltc_train_speedup_vs_ncps",
        "cfc64_step_us",
        "ltc64_step_us",
        "cfc64_step_speedup_vs_ncps",
        "ltc64_step_speedup_vs_ncps",
    ):
        print(f"{name}: {figures[name]:.2f}")
    return 0


if __name__ == "__main__":
    from liquid_control.processes import exit_status_of

    sys.exit(exit_status_of("bench_cells.py", main))
