"""`liquid-control eval --backend ray` on a local Ray instance gives the same episodes as the serial backend."""
import pytest

from liquid_control.evaluation.backends import run_jobs
from liquid_control.evaluation.plan import build_plan

ray = pytest.importorskip("ray", reason="ray is an optional extra (pip install ray==2.60.0)")


def test_ray_backend_matches_serial_on_a_local_instance(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # no token file in the user's home for a throwaway instance
    plan = build_plan(["expert"], ["in_distribution", "lighting=dusk"], 2)
    serial, on_ray = {}, {}
    run_jobs(plan.jobs, lambda job, r: serial.__setitem__(job.key, r), backend="serial", progress=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"MUJOCO_GL": "egl", "PYOPENGL_PLATFORM": "egl"}})
    try:
        run_jobs(plan.jobs, lambda job, r: on_ray.__setitem__(job.key, r), backend="ray", progress=False)
        assert ray.is_initialized()  # the backend leaves an instance it did not start running
    finally:
        ray.shutdown()
    strip = lambda r: {k: v for k, v in r.items() if k != "wall_time_s"}  # noqa: E731
    assert set(on_ray) == set(serial) == {j.key for j in plan.jobs}
    assert all(strip(on_ray[k]) == strip(serial[k]) for k in serial)
    assert all(r["success"] for r in on_ray.values())
