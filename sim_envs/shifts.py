"""Named, composable distribution shifts of the worlds.

A ``Shift`` says how the world differs from the training distribution (summer, noon, nominal sensors and
dynamics). Users type it as ``"season=winter,lighting=dusk,fog=0.3"``, pass a dict, or name presets from
``SHIFT_PRESETS`` (``"winter,camera_noise=0.1"``: bare words are presets, combined with the settings).
Each setting is given once: two items that set it (``"dusk,night"``, ``"fog=0.5,fog=0.2"``) are refused,
not resolved by order. The random parts (noise samples, bias signs) are drawn from the
environment's seeded generator, so a seed and a shift give one episode.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, fields, replace
from typing import Mapping

import numpy as np

from liquid_control.shown import did_you_mean

SEASONS = ("summer", "autumn", "winter")
LIGHTINGS = ("noon", "overcast", "dusk", "night")

# Named dynamics changes, expanded into the factors mass, friction and motor_gain.
DYNAMICS_PRESETS = {
    "nominal": {"mass": 1.0, "friction": 1.0, "motor_gain": 1.0},
    "heavy": {"mass": 1.5},
    "light": {"mass": 0.6},
    "slippery": {"friction": 0.3},
    "weak_motors": {"motor_gain": 0.7},
}

# Numeric fields: (low, high) inclusive, and what they mean.
NUMERIC_RANGES = {
    "fog": (0.0, 1.0),  # 0 = clear air, 1 = dense fog (visibility ~3 m)
    "camera_noise": (0.0, 1.0),  # variance of Gaussian pixel noise on images scaled to [0, 1]
    "imu_noise": (0.0, 10.0),  # added to the nominal white-noise std: gyro rad/s, accelerometer m/s^2
    "imu_bias": (0.0, 10.0),  # constant per-episode bias magnitude (random sign per axis), same units
    "sensor_rate": (0.1, 10.0),  # factor on every sensor's nominal rate
    "jitter": (0.0, 4.0),  # factor on every sensor's jitter fraction (capped at 0.95)
    "camera_rate": (0.1, 10.0),  # factor on the camera's rate alone (times sensor_rate)
    "imu_rate": (0.1, 10.0),  # factor on the IMU's rate alone (times sensor_rate)
    "camera_jitter": (0.0, 4.0),  # factor on the camera's jitter alone (times jitter)
    "imu_jitter": (0.0, 4.0),  # factor on the IMU's jitter alone (times jitter)
    "dropout": (0.0, 0.9),  # probability that any sensor message is lost (replaces the nominal one)
    "latency": (0.0, 1.0),  # seconds added to every sensor's latency
    "mass": (0.25, 4.0),  # factor on every body mass and inertia of the robot
    "friction": (0.1, 4.0),  # factor on ground/wheel friction
    "motor_gain": (0.1, 2.0),  # factor from commanded to delivered wheel speed/torque
}
CHOICES = {"season": SEASONS, "lighting": LIGHTINGS, "dynamics": tuple(DYNAMICS_PRESETS)}

VISUAL_FIELDS = ("season", "lighting", "fog", "camera_noise")
SENSOR_FIELDS = (
    "imu_noise",
    "imu_bias",
    "sensor_rate",
    "jitter",
    "camera_rate",
    "imu_rate",
    "camera_jitter",
    "imu_jitter",
    "dropout",
    "latency",
)
PER_SENSOR = ("camera", "imu")  # sensors with their own rate and jitter factors
# Settings that act on one sensor alone: in a world without it they change nothing.
SENSOR_SETTINGS = {
    "camera": VISUAL_FIELDS + ("camera_rate", "camera_jitter"),
    "imu": ("imu_noise", "imu_bias", "imu_rate", "imu_jitter"),
}
DYNAMICS_FIELDS = ("mass", "friction", "motor_gain")


def fog_end_m(fog: float) -> float:
    """Where the ``fog`` setting's fog hides everything (MuJoCo's ``fogend``, m; fog starts at the camera): 40 m in
    clear air, 3 m at 1. Rounded to the centimetre, as the worlds' MJCF writes it; one curve for every world."""
    return round(3.0 + 37.0 * (1.0 - fog) ** 1.5, 2)


@dataclass(frozen=True)
class Shift:
    """One setting of the world; the default is the training distribution."""

    season: str = "summer"
    lighting: str = "noon"
    fog: float = 0.0
    camera_noise: float = 0.0
    imu_noise: float = 0.0
    imu_bias: float = 0.0
    sensor_rate: float = 1.0
    jitter: float = 1.0
    camera_rate: float = 1.0
    imu_rate: float = 1.0
    camera_jitter: float = 1.0
    imu_jitter: float = 1.0
    dropout: float = 0.0
    latency: float = 0.0
    mass: float = 1.0
    friction: float = 1.0
    motor_gain: float = 1.0

    def __post_init__(self):
        for name in ("season", "lighting"):
            if getattr(self, name) not in CHOICES[name]:
                raise ValueError(
                    f"{name}={getattr(self, name)!r} is not valid; choose one of {', '.join(CHOICES[name])}"
                )
        for name, (lo, hi) in NUMERIC_RANGES.items():
            value = getattr(self, name)
            # numpy's numbers too (np.float32(0.5), np.int64(2): a value read from an array or a sweep)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
                raise ValueError(f"{name}={value!r} is not a number; valid: {lo} <= {name} <= {hi}")
            if not lo <= value <= hi:  # NaN fails this too
                raise ValueError(f"{name}={value!r} is out of range; valid: {lo} <= {name} <= {hi}")
            object.__setattr__(self, name, float(value))

    def sensor_factors(self, sensor: str) -> tuple[float, float]:
        """(rate, jitter) factors of ``sensor`` alone (camera, imu; 1 for the others), besides the global ones."""
        if sensor not in PER_SENSOR:
            return 1.0, 1.0
        return getattr(self, f"{sensor}_rate"), getattr(self, f"{sensor}_jitter")

    def changed(self) -> dict:
        """The settings that differ from the training distribution, in field order."""
        default = Shift()
        return {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != getattr(default, f.name)
        }

    def __add__(self, other: "Shift") -> "Shift":
        """Compose: ``self`` with every setting that ``other`` changes. Shifts only: ``Shift() + "fog=0.5"`` is
        Python's TypeError naming both types (it was an AttributeError on ``str.changed``); parse a string or a
        dict first (``parse_shift``)."""
        if not isinstance(other, Shift):
            return NotImplemented
        return replace(self, **other.changed())

    def to_string(self) -> str:
        """The typed form; ``parse_shift(s.to_string()) == s``. The default is ``""``."""
        return ",".join(f"{k}={_number(v)}" if isinstance(v, float) else f"{k}={v}" for k, v in self.changed().items())

    def kinds(self) -> set:
        """Which groups of the world this shift touches: subset of {'visual', 'sensor', 'dynamics'}."""
        changed = self.changed()
        groups = {"visual": VISUAL_FIELDS, "sensor": SENSOR_FIELDS, "dynamics": DYNAMICS_FIELDS}
        return {kind for kind, names in groups.items() if any(n in changed for n in names)}

    def idle_settings(self, sensor_names) -> dict:
        """The changed settings that act on a sensor not in ``sensor_names`` (setting -> sensor): in a world
        with those sensors they change nothing, so an evaluation row under them would measure nothing."""
        changed = self.changed()
        return {
            name: sensor
            for sensor, names in SENSOR_SETTINGS.items()
            if sensor not in sensor_names
            for name in names
            if name in changed
        }

    def idle_problem(self, world: str, sensor_names) -> str | None:
        """Why this shift measures nothing in ``world`` with ``sensor_names`` (settings acting on sensors it
        lacks), for a refusal that names them; None when every changed setting acts there."""
        idle = self._idle_words(sensor_names)
        if idle is None:
            return None
        return f"{idle[0]} nothing in {world}, which has no {idle[1]} (its sensors: {', '.join(sensor_names)})"

    def _idle_words(self, sensor_names) -> tuple[str, str] | None:
        """(``'imu_noise changes'``, ``'imu'``): the settings ``idle_settings`` finds with their verb, and the
        sensors they lack; None where there are none."""
        idle = self.idle_settings(sensor_names)
        if not idle:
            return None
        verb = "changes" if len(idle) == 1 else "change"
        return f"{', '.join(idle)} {verb}", " or ".join(dict.fromkeys(idle.values()))

    def unread_problem(self, policy: str, inputs) -> str | None:
        """Why part of this shift reaches nothing ``policy`` reads (``inputs``: its sensors and vectors, as
        ``policy_inputs`` names them): an IMU shift for a camera-only policy runs the in-distribution episodes
        under another name, bit for bit. None when every changed setting acts on one of its inputs (or on all)."""
        idle = self._idle_words(inputs)
        if idle is None:
            return None
        return (
            f"{idle[0]} nothing policy {policy!r} reads, which has no {idle[1]} input (its inputs: "
            f"{', '.join(inputs) or 'none'})"
        )

    def __str__(self) -> str:
        return self.to_string() or "in_distribution"


def _number(value: float) -> str:
    """``value`` as typed in a shift string: ``{:g}`` (``0.5``, ``2``, ``1e-05``: the form of every preset and of the
    shifts in reports) where that parses back to ``value``, else the shortest form that does (``repr``:
    ``0.1234567``, which ``{:g}`` cut to ``0.123457``)."""
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def _valid_keys_message(key: str | None = None) -> str:
    """Every valid setting and preset; with ``key``, that setting's form alone (``camera_rate=<0.1..10.0>``)."""
    parts = {k: f"{k}={'|'.join(v)}" for k, v in CHOICES.items()}
    parts |= {k: f"{k}=<{lo}..{hi}>" for k, (lo, hi) in NUMERIC_RANGES.items()}
    if key is not None:
        return parts[key]
    return "valid settings: " + ", ".join(parts.values()) + "; presets: " + ", ".join(SHIFT_PRESETS)


def _item(key: str, value) -> dict:
    """The settings of one ``key=value`` item (``dynamics`` names several)."""
    key = key.strip()
    if key == "dynamics":
        name = value.strip() if isinstance(value, str) else value
        if name not in DYNAMICS_PRESETS:
            raise ValueError(f"dynamics={name!r} is not valid; choose one of {', '.join(DYNAMICS_PRESETS)}")
        return dict(DYNAMICS_PRESETS[name])
    if key in ("season", "lighting"):
        return {key: value.strip() if isinstance(value, str) else value}
    if key in NUMERIC_RANGES:
        lo, hi = NUMERIC_RANGES[key]
        if isinstance(value, (bool, np.bool_)):  # float(True) is 1.0; Shift(fog=True) is refused too
            raise ValueError(f"{key}={value!r} is a bool, not a number; valid: {lo} <= {key} <= {hi}")
        try:
            return {key: float(value)}
        except (TypeError, ValueError):
            raise ValueError(f"{key}={value!r} is not a number; valid: {lo} <= {key} <= {hi}") from None
    hint = did_you_mean([key], [*CHOICES, *NUMERIC_RANGES])
    raise ValueError(f"unknown shift setting {key!r}{hint}; {_valid_keys_message()}")


def _merge(settings: dict, origins: dict, item: dict, origin: str, typed: bool, spec) -> None:
    """Add one item's settings; a setting given twice is refused (order would otherwise pick one silently)."""
    for key, value in item.items():
        if key in origins and (settings[key] != value or (typed and origins[key][1])):
            raise ValueError(
                f"shift {spec!r}: {key} is set twice, by {origins[key][0]!r} and {origin!r}; give each setting once"
            )
        settings[key] = value
        origins[key] = (origin, typed)


def parse_shift(spec: "str | Mapping | Shift | None") -> Shift:
    """A Shift from a typed string, a dict, an existing Shift or None (the training distribution).

    Raises ValueError naming the valid settings for an unknown name or an out-of-range value, and naming the
    spec for an empty item or a setting given twice (presets may overlap where they agree).
    """
    if spec is None:
        return Shift()
    if isinstance(spec, Shift):
        return spec
    settings: dict = {}
    origins: dict = {}  # setting -> (the item that set it, whether typed as key=value)
    if isinstance(spec, Mapping):
        for key, value in spec.items():
            _merge(settings, origins, _item(str(key), value), f"{key}={value}", True, dict(spec))
        return Shift(**settings)
    if not isinstance(spec, str):
        raise ValueError(f"a shift is a string, a dict or a Shift, got {type(spec).__name__}")
    if not spec.strip():
        return Shift()
    for token in (t.strip() for t in spec.split(",")):
        if not token:
            raise ValueError(f"shift {spec!r}: empty item (two commas, or a comma at an end)")
        if "=" in token:
            key, value = token.split("=", 1)
            _merge(settings, origins, _item(key, value), token, True, spec)
        elif token in SHIFT_PRESETS:
            _merge(settings, origins, SHIFT_PRESETS[token].changed(), token, False, spec)
        else:
            hint = did_you_mean([token], SHIFT_PRESETS)
            if token in CHOICES or token in NUMERIC_RANGES:  # a setting's name alone: it takes a value
                hint = f" (a setting: give {_valid_keys_message(token)})"
            for key, values in CHOICES.items():  # a setting's value alone ('light': dynamics=light, not 'night')
                if token in values:
                    hint = f" (a value of {key}: give {key}={token})"
            raise ValueError(f"unknown shift preset or setting {token!r}{hint}; {_valid_keys_message()}")
    return Shift(**settings)


# The settings of the out-of-distribution evaluation. Names are stable (reports refer to them).
SHIFT_PRESETS: dict = {
    "in_distribution": Shift(),
    "autumn": Shift(season="autumn"),
    "winter": Shift(season="winter"),
    "overcast": Shift(lighting="overcast"),
    "dusk": Shift(lighting="dusk"),
    "night": Shift(lighting="night"),
    "winter_dusk": Shift(season="winter", lighting="dusk"),
    "fog": Shift(fog=0.5),
    "dense_fog": Shift(fog=0.9),
    "camera_noise_0.1": Shift(camera_noise=0.1),
    "camera_noise_0.2": Shift(camera_noise=0.2),
    "camera_noise_0.3": Shift(camera_noise=0.3),
    "imu_noise": Shift(imu_noise=0.2),
    "imu_bias": Shift(imu_bias=0.1),
    "slow_sensors": Shift(sensor_rate=0.5),
    "slow_camera": Shift(camera_rate=0.5),
    "fast_camera": Shift(camera_rate=2.0),
    "slow_imu": Shift(imu_rate=0.5),
    "fast_imu": Shift(imu_rate=2.0),
    "camera_jitter_x2": Shift(camera_jitter=2.0),
    "imu_jitter_x2": Shift(imu_jitter=2.0),
    "fast_sensors": Shift(sensor_rate=2.0),
    "jitter_x2": Shift(jitter=2.0),
    "dropout_0.2": Shift(dropout=0.2),
    "latency_50ms": Shift(latency=0.05),
    "heavy": Shift(mass=1.5),
    "slippery": Shift(friction=0.3),
    "weak_motors": Shift(motor_gain=0.7),
}


def shift_for_world(spec, world: str, sensor_names=None) -> Shift:
    """``spec`` parsed for ``world``; ValueError naming the spec when it is no valid shift or, given the world's
    ``sensor_names``, when it acts on a sensor the world lacks (the world itself refuses that too)."""
    try:
        shift = parse_shift(spec)
    except ValueError as exc:
        if str(exc).startswith(f"shift {spec!r}: "):  # the message names the spec already
            raise
        raise ValueError(f"unknown or invalid shift {spec!r}: {exc}") from None
    problem = None if sensor_names is None else shift.idle_problem(world, sensor_names)
    if problem:
        raise ValueError(f"shift {spec!r}: {problem}")
    return shift
