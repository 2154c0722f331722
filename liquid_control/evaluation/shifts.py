"""Shifts as the evaluation names them: the default, the named shift sets, and what a shift changes.

A thin layer over `sim_envs.shifts` (the worlds own the definitions); it sits below plan, agents and
report so that none of them needs another to read a shift.
"""

from __future__ import annotations

from liquid_control.evaluation.errors import EvaluationSetupError

DEFAULT_SHIFT = "in_distribution"  # the training distribution (sim_envs preset: summer, noon, nominal sensors)

VISUAL_SHIFTS = [
    "in_distribution",
    "autumn",
    "winter",
    "dusk",
    "night",
    "fog",
    "camera_noise_0.1",
    "camera_noise_0.2",
    "camera_noise_0.3",
]
RATE_SHIFTS = ["sensor_rate=0.25", "sensor_rate=0.5", "sensor_rate=2", "sensor_rate=4"]
JITTER_SHIFTS = ["jitter=0.25", "jitter=2", "jitter=4"]
SHIFT_SETS = {
    # the headline experiment's default: the seasons/lighting/fog the robust policy is held to, and the
    # sensor-rate curve; sized so that 100 policies x 5 seeds x 30 episodes stay within hours on 2 cores
    "headline": ["in_distribution", "winter", "dusk", "fog"] + RATE_SHIFTS,
    "full": VISUAL_SHIFTS + RATE_SHIFTS + JITTER_SHIFTS,
    "visual": VISUAL_SHIFTS,
    "sensor_timing": ["in_distribution"] + RATE_SHIFTS + JITTER_SHIFTS,
}
SWEEP_KEYS = ("sensor_rate", "jitter", "camera_rate", "imu_rate")  # shifts plotted against their factor


def shift_for_env(shift: str) -> str:
    """The shift string handed to the world (sim_envs presets and settings, see sim_envs.shifts)."""
    return shift.strip() or DEFAULT_SHIFT


def shift_changes(shift: str) -> dict:
    """What `shift` changes from the training distribution, e.g. {'sensor_rate': 0.25} ({} for none)."""
    from sim_envs.shifts import shift_for_world

    try:
        return shift_for_world(shift_for_env(shift), "").changed()
    except ValueError as exc:  # it lists the valid names and names the spec
        raise EvaluationSetupError(str(exc)) from exc


def check_shift(shift: str) -> None:
    """Raise EvaluationSetupError naming `shift` when sim_envs cannot parse it."""
    shift_changes(shift)


def check_shift_applies(shift: str, world: str) -> None:
    """Raise EvaluationSetupError naming `shift` and `world` when the shift acts on a sensor the world lacks
    (e.g. camera_noise for a world without a camera): its row would be the in-distribution one, mislabelled."""
    import sim_envs
    from sim_envs.shifts import shift_for_world

    sensors = getattr(sim_envs.world_class(world), "sensor_names", ())  # a world of one's own too ('module:Id')
    if not sensors:  # another gymnasium world: its sensors are not declared
        return
    try:
        shift_for_world(shift_for_env(shift), world, sensors)
    except ValueError as exc:
        raise EvaluationSetupError(str(exc)) from None


def shift_kinds(shift: str) -> set:
    """Which parts of the world `shift` touches: a subset of {'visual', 'sensor', 'dynamics'}."""
    from sim_envs.shifts import parse_shift

    return parse_shift(shift_for_env(shift)).kinds()


def shift_group(shift: str) -> str:
    """Report group of a shift: in-distribution, visual, sensor, dynamics (or a mix)."""
    kinds = shift_kinds(shift)
    return "in-distribution" if not kinds else "+".join(sorted(kinds))


def sweep_factor(shift: str, key: str) -> float | None:
    """The factor of a shift that changes only `key` (e.g. sensor_rate); 1.0 for the training distribution."""
    changes = shift_changes(shift)
    if not changes:
        return 1.0
    if set(changes) == {key}:
        return float(changes[key])
    return None
