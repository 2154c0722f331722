"""keep_freed_memory (liquid_control/processes.py): freed MiB-sized temporaries stay in the heap instead of being
returned to the kernel and faulted in again (issue 11: ~17,000 page faults a recipe BC chunk)."""

import os
import subprocess
import sys

import pytest


def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (AttributeError, OSError, ValueError):
        return False


pytestmark = pytest.mark.skipif(not _glibc(), reason="mallopt thresholds are glibc's; elsewhere a no-op")

# Four 16 MiB arrays allocated, written and freed, six times. glibc's default: the first free raises its mmap
# threshold above 16 MiB, so later arrays come from the heap, but 64 MiB free at its top is more than its trim
# threshold (twice the mmap threshold): given back to the kernel and faulted in again every round.
_ROUNDS = """
import ctypes, json, resource, sys
if sys.platform.startswith("linux"):
    ctypes.CDLL(None).prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE: 4 KiB pages, whatever the machine's THP mode
import numpy as np
from liquid_control.processes import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "on" else None
faults = []
for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    arrays = [np.ones(16 << 20, dtype=np.uint8) for _ in range(4)]
    del arrays
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults": faults}))
"""


def _rounds(mode: str, **env) -> dict:
    import json

    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    # numpy asks for huge pages for large arrays (and THP "always" gives them anyway): a freed round would then
    # fault in ~32 of them, too few to tell the two settings apart; with 4 KiB pages it is ~16,000 (the subprocess
    # also turns THP off for itself)
    clean["NUMPY_MADVISE_HUGEPAGE"] = "0"
    done = subprocess.run(
        [sys.executable, "-c", _ROUNDS, mode], env={**clean, **env}, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_freed_arrays_are_reused_without_page_faults():
    on, off = _rounds("on"), _rounds("off")
    assert on["applied"] is True
    later_on, later_off = sum(on["faults"][2:]), sum(off["faults"][2:])  # rounds 0-1: the heap grows
    assert later_on < 50, on["faults"]  # 0 measured
    # ~16,000 a round measured (4 KiB pages: huge pages off in the subprocess)
    assert later_off > 100 and later_off > 20 * (later_on + 1), off["faults"]


@pytest.mark.parametrize(
    "env",
    [
        {"MALLOC_MMAP_THRESHOLD_": "131072"},
        {"MALLOC_TRIM_THRESHOLD_": "131072"},
        {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"},
    ],
)
def test_a_users_own_setting_stands(env):
    result = _rounds("on", **env)
    assert result["applied"] is False
    assert sum(result["faults"][2:]) > 100, result["faults"]  # theirs: freed memory given back, faulted in again


class _Calls:
    def __init__(self):
        self.count = 0

    def __call__(self):
        self.count += 1
        return True


def test_the_training_command_applies_it(monkeypatch, tmp_path):
    from liquid_control.cli import command_parser
    from liquid_control.training import cli

    calls = _Calls()
    monkeypatch.setattr(cli, "keep_freed_memory", calls)
    _, parser = command_parser("train")
    assert cli.run(parser.parse_args(["--out", str(tmp_path / "run")])) == 2  # refused: no --config
    assert calls.count == 1


def test_the_experiments_training_process_applies_it(monkeypatch, tmp_path):
    from liquid_control import processes
    from liquid_control.evaluation import experiment

    class Trained(Exception):
        pass

    def training(*args):
        raise Trained

    calls = _Calls()
    monkeypatch.setattr(processes, "keep_freed_memory", calls)
    monkeypatch.setattr(experiment, "_run_training", training)
    with pytest.raises(Trained):
        experiment._train_one("cfc_ncp", "cfc_ncp", 0, str(tmp_path / "seed_0"), {}, False)
    assert calls.count == 1


def test_the_workers_apply_it(monkeypatch):
    import signal

    import torch

    from liquid_control.evaluation import backends
    from liquid_control.policy import load_config
    from liquid_control.training import episodes

    threads, sigint = torch.get_num_threads(), signal.getsignal(signal.SIGINT)
    deterministic = torch.are_deterministic_algorithms_enabled()
    for module in (backends, episodes):
        monkeypatch.setattr(module, "die_with_parent", lambda: None)  # not this test process
    monkeypatch.setenv("MUJOCO_GL", os.environ.get("MUJOCO_GL", "egl"))  # set by the worker: restored after
    monkeypatch.setenv("PYOPENGL_PLATFORM", os.environ.get("PYOPENGL_PLATFORM", "egl"))
    calls = _Calls()
    monkeypatch.setattr(backends, "keep_freed_memory", calls)
    monkeypatch.setattr(episodes, "keep_freed_memory", calls)
    try:
        backends._init_worker()
        episodes._init_worker(load_config("policies/configs/cfc_ncp_rover_robust.yaml"))
    finally:  # what a worker sets for itself, put back for this test process
        signal.signal(signal.SIGINT, sigint)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        episodes._WORKER.clear()
    assert calls.count == 2
