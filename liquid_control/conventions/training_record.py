"""What a policy file records of the sensors it was trained on, and the node's checks against it.

Training writes these metadata entries into ``policy.pt`` (``liquid_control.training``):

- ``training_camera``: ``{"width", "height", "fovy_deg", "source"}``: the size of the frames and the vertical field
  of view (degrees) of the camera they came from; ``fovy_deg`` is the world's (``world_camera_fovy_deg``) for a run in
  the simulator; for a run on bags the one the CameraInfo recorded beside their image topic gives, None (unknown,
  nothing is compared) where no bag has one; ``source`` says which, the bags by ``bag_label``. A run on bags whose
  CameraInfo gives it also records ``fovx_deg``, the horizontal one: its pixels need not be square (a 640x480 camera
  resized to 128x128), which the node then compares with; without it, the training camera's pixels were square.
- ``training_sensor_rates``: ``{sensor: {"median_hz", "dt_p05_s", "dt_p95_s", "intervals"}}``: the median message
  rate of each update sensor in the data the run trained on and the middle 90% of its message intervals, measured
  from the recorded stamps (simulator episodes or bags), plus ``timing_augmentation`` (the run's
  ``training.sensor_rate_range`` / ``jitter_range``, null where off). A held sensor (not in ``update_on``) has no
  entry: its messages between updates never reach the data.
- ``training_source``: what the policy learned from: ``{"world": name}`` (episodes in that simulated world) or
  ``{"bags": [{"name", "sha256"}, ...]}`` (the recorded bags it trained on: each folder's name and the SHA-256 of its
  storage files' bytes (.mcap, .db3) in name order, metadata.yaml and hidden files left out; no path, which would say
  where the trainer's home is, while the hash tells two robots' ``run1`` apart wherever the bags are copied). The
  node says it where it names what the policy was trained for.
- ``data_spec`` (a run from bags only): where its inputs and labels were in the bags and the node's settings it
  trained with (``bags.stream.BagDataSpec.describe``: topics, command topic, label rule, ``action_scale``, dt limits;
  no path): ``eval --bag`` and the replay comparison use it where no ``--node-params`` is given; the node warns at
  configure where its ``action_scale`` (``action_scale_problem``) or its limits, joint names and input topics
  (``data_settings_problem``) are not these, and ``train --init-from`` where the run's ``action_scale`` is not its
  start's (``trained_scale_ratios``).

Files written before these entries (the shipped policies among them) have none: the node then compares the
camera's field of view against the world's constant of today, checks no rate and names only the config's world.
``liquid-control export`` carries the entries into the ONNX model (its metadata, JSON), so a node running the export
checks as one running the file does (the backends' ``training_record``); an export written before exports carried
them has none (one written before ``training_source`` existed: the other two; before ``data_spec`` was carried:
the other three).

Intervals are counted in a histogram of log-spaced bins (``DT_BINS``, 1.2% wide), so a run keeps them per round
in its checkpoint at a fixed size whatever the sensor's rate, and a resumed run's record is the uninterrupted one's.
"""

from __future__ import annotations

import math

import numpy as np

from liquid_control.conventions.params import WHEEL_JOINT_NAMES
from liquid_control.runtime.backends import TRAINING_RECORD_KEYS

# the entries' names, defined with the runtime, whose backends give them and whose export carries them
CAMERA_KEY, RATES_KEY, SOURCE_KEY, DATA_SPEC_KEY = TRAINING_RECORD_KEYS
SHORT_HASH = 12  # hex digits of a bag's SHA-256 a message shows
SOURCE_BAGS_SHOWN = 3  # bags a message names before 'and N more'
TIMING_AUGMENTATION = "timing_augmentation"  # an entry of RATES_KEY: the timing recipe's ranges (None: off)
# a sensor's measured rate outside [RATE_FACTOR_LOW x the slowest, RATE_FACTOR_HIGH x the fastest] trained rate
RATE_FACTOR_LOW, RATE_FACTOR_HIGH = 0.25, 4.0
RATE_WINDOW_S = 5.0  # node clock seconds a measured rate is averaged over
# bin edges of the interval histogram: 1e-4 s (10 kHz) .. 100 s, 1200 log-spaced bins (each 1.2% wide)
DT_BINS = np.logspace(-4.0, 2.0, 1201)


def dt_histogram(intervals) -> np.ndarray:
    """Counts (int64, ``len(DT_BINS) - 1``) of the positive finite ``intervals`` (seconds) in ``DT_BINS``; an
    interval outside the bins counts in the first or last bin."""
    dts = np.asarray(intervals, dtype=np.float64).reshape(-1)
    dts = np.clip(dts[np.isfinite(dts) & (dts > 0)], DT_BINS[0], DT_BINS[-1] * (1 - 1e-12))
    counts, _ = np.histogram(dts, bins=DT_BINS)
    return counts.astype(np.int64)


def _quantile(counts: np.ndarray, q: float) -> float:
    """The ``q`` quantile of a histogram of ``DT_BINS``, at the geometric middle of its bin."""
    index = int(np.searchsorted(np.cumsum(counts), q * counts.sum(), side="left"))
    index = min(index, len(counts) - 1)
    return float(math.sqrt(DT_BINS[index] * DT_BINS[index + 1]))


def rate_summary(counts) -> dict | None:
    """``{"median_hz", "dt_p05_s", "dt_p95_s", "intervals"}`` of a ``dt_histogram`` (None: no interval)."""
    counts = np.asarray(counts, dtype=np.int64)
    if counts.sum() == 0:
        return None
    return {
        "median_hz": round(1.0 / _quantile(counts, 0.5), 4),
        "dt_p05_s": round(_quantile(counts, 0.05), 7),
        "dt_p95_s": round(_quantile(counts, 0.95), 7),
        "intervals": int(counts.sum()),
    }


def _positive(value) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    return float(value) if ok else None


def trained_fovy_deg(metadata: dict) -> tuple[bool, float | None]:
    """(recorded, fovy): whether ``metadata`` records the training camera, and its vertical field of view in degrees
    (None: unknown, e.g. trained on bags). A malformed entry counts as not recorded."""
    camera = metadata.get(CAMERA_KEY)
    if not isinstance(camera, dict):
        return False, None
    return True, _positive(camera.get("fovy_deg"))


def trained_fovx_deg(metadata: dict) -> float | None:
    """The horizontal field of view (degrees) of the training camera where ``metadata`` records it (a run on bags whose
    CameraInfo gave it, since 2026-12-05), else None: the training camera's pixels were square."""
    camera = metadata.get(CAMERA_KEY)
    return _positive(camera.get("fovx_deg")) if isinstance(camera, dict) else None


def trained_rates(metadata: dict) -> dict[str, tuple[float, float, float]]:
    """``{sensor: (median Hz, slowest Hz, fastest Hz)}`` of the middle 90% of the intervals ``metadata`` records (an
    older file: empty); malformed entries are left out."""
    rates = metadata.get(RATES_KEY)
    found = {}
    for sensor, entry in rates.items() if isinstance(rates, dict) else ():
        if sensor == TIMING_AUGMENTATION or not isinstance(entry, dict):
            continue
        median, p05, p95 = (_positive(entry.get(k)) for k in ("median_hz", "dt_p05_s", "dt_p95_s"))
        if median and p05 and p95 and p05 <= p95:
            found[sensor] = (median, 1.0 / p95, 1.0 / p05)
    return found


def rate_problem(
    measured_hz: float,
    trained: tuple[float, float, float],
    window_s: float,
    sent_hz: float | None = None,
    queue: str = "",
) -> str | None:
    """Words for a rate measured over ``window_s`` seconds outside ``RATE_FACTOR_LOW`` x the slowest ..
    ``RATE_FACTOR_HIGH`` x the fastest of ``trained`` (``trained_rates``' tuple), or None. ``sent_hz``: the rate the
    sensor's publisher sent at over the same time (its publication sequence numbers; None: not known): a rate too slow
    while the sensor sent within the range is the receiver's, falling behind (``queue``: its queue setting, e.g.
    'imu_qos_depth 5'), said so, not the sensor's."""
    median, slowest, fastest = trained
    low, high = RATE_FACTOR_LOW * slowest, RATE_FACTOR_HIGH * fastest
    if low <= measured_hz <= high:
        return None
    side = "slower" if measured_hz < low else "faster"
    trained_at = (
        f"{side} than the policy was trained at (median {median:.1f} Hz, middle 90% {slowest:.1f}-{fastest:.1f} Hz; "
        f"checked against {low:.1f}-{high:.1f} Hz)"
    )
    if sent_hz is not None and low <= sent_hz <= high:
        return (
            f"{measured_hz:.1f} Hz received over the last {window_s:.1f} s, {trained_at}, but the sensor sent "
            f"{sent_hz:.1f} Hz, within it: the messages between never reached the node, which falls behind (a loaded "
            f"machine, a slow inference{', ' + queue + ' too shallow for its bursts' if queue else ''}) or the network "
            "loses them; its dt are ones the cell never saw in training: give the node the CPU it needs, not the "
            "sensor another rate"
        )
    return (
        f"{measured_hz:.1f} Hz over the last {window_s:.1f} s, {trained_at}: its dt are ones the cell never saw in "
        "training; set the sensor's rate near the trained one (docs/real_robot.md)"
    )


def bag_label(name, sha256) -> str:
    """A bag as the training record names it to a user: its folder's name and the start of the SHA-256 of its
    recorded files (``training_source``)."""
    return f"{name} (SHA-256 {str(sha256)[:SHORT_HASH]})" if sha256 else str(name)


def trained_scale_ratios(metadata: dict, action_scale) -> tuple[list[float], list[float]] | None:
    """(trained, ratios): where ``metadata`` records the ``action_scale`` a run from bags divided its labels by (its
    ``data_spec``) and ``action_scale`` differs from it by more than 1% in an element, the recorded scale and each
    element's ``action_scale / trained``; else None (also for a file without the record: a policy trained in a world
    learnt in action units alone)."""
    spec = metadata.get(DATA_SPEC_KEY)
    trained = spec.get("action_scale") if isinstance(spec, dict) else None
    node = [float(v) for v in action_scale]
    if not isinstance(trained, list) or len(trained) != len(node):
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v for v in trained):
        return None
    ratios = [n / float(t) for n, t in zip(node, trained)]
    if all(abs(r - 1.0) <= 0.01 for r in ratios):
        return None
    return [float(v) for v in trained], ratios


def action_scale_problem(
    metadata: dict,
    action_scale,
    scale_name: str = "action_scale",
    remedy: str = "; give the node the parameter file it trained with (its action_scale, and max_command to match)",
) -> str | None:
    """Where the node's ``action_scale`` (``scale_name``: what the message calls it, a world's command scale for
    ``record --expert``) is not the one ``metadata`` records (``trained_scale_ratios``): what the commands then are,
    in words (e.g. the rover's shipped parameter file for a policy of a faster robot: each command scaled down),
    ``remedy`` after it; else None."""
    found = trained_scale_ratios(metadata, action_scale)
    if found is None:
        return None
    trained, ratios = found
    return (
        f"{scale_name} {[round(float(v), 6) for v in action_scale]} is not the {[round(v, 6) for v in trained]} the "
        f"policy was trained with (its labels: the recorded commands divided by it), so each command is "
        f"{', '.join(f'{r:.3g}x' for r in ratios)} what it learnt to command{remedy}"
    )


# the node's parameters that change what the network is fed (its updates' dt, resets, rejections, reordering): a run
# from bags records the ones it read its bags with (data_spec "limits"), and the topics of its inputs ("topics")
DATA_LIMITS = ("max_gap_s", "max_backward_jump_s", "max_future_stamp_s", "first_update_dt", "reorder_lag_s")
POLICY_LAG = "the policy config's observation.reorder_lag_s"


def _number(value) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
    return float(value) if ok else None


def same_topic_but_namespace(recorded: str, given: str, namespace: str = "/") -> bool:
    """Whether the topic ``recorded`` (in a bag) and the topic ``given`` (a node's in ``namespace``, absolute names)
    are one name but for namespaces: ``given`` without the node's namespace, and ``recorded``, are one name, one of
    them under a namespace the other has not (``/robot1/imu/data`` recorded, ``/robot2/imu/data`` read by the node
    ``/robot2/policy_node``, or ``/robot1/imu/data`` by ``/policy_node``): a robot's node in its namespace reads what
    a recording of another namespace's robot held. ``/imu/data`` and ``/imu/data_raw``, or ``/front/image_raw`` and
    ``/camera/image_raw``, are other topics."""
    recorded, given, namespace = ("/" + name.strip("/") for name in (recorded, given, namespace))
    if namespace != "/" and given.startswith(namespace + "/"):
        given = given[len(namespace) :]
    short, long = sorted((recorded, given), key=len)
    return long.endswith(short)  # short starts with '/': a whole name's end, /imu/data is not /imu/odata's


def data_settings_problem(metadata: dict, node: dict, policy_lag_s: float) -> str | None:
    """Where ``metadata`` records the node settings a run from bags read its bags with (``data_spec``: its
    ``limits``, ``joint_names`` where the policy reads wheels, its inputs' ``topics``) and the node's ``node`` (its
    parameters ``DATA_LIMITS``, ``reorder_lag_s`` negative: the policy's, ``joint_names``, ``topics``: sensor -> the
    topic it subscribes to, its namespace and remappings applied, and its ``namespace``) differ: one text naming
    every difference, both values and where each came from; else None (also for a file without the record, a
    malformed entry left out).
    Topics are compared namespaces aside (``same_topic_but_namespace``: a robot's node in its namespace reads what
    another namespace's recording held). The label rule and the command topic of the labels are not compared: the
    node has no such setting, and it publishes on another topic than the labels' by design beside ``takeover_mux``.
    ``policy_lag_s``: the policy config's ``observation.reorder_lag_s``, what a recorded lag of None (or none: a
    record of before 1b658c52, when the runner took it) and the node's -1 stand for. A record without
    ``joint_names`` read the bags with the default ones (``BagDataSpec.describe`` leaves them out)."""
    spec = metadata.get(DATA_SPEC_KEY)
    if not isinstance(spec, dict):
        return None
    limits = spec.get("limits")
    differences = []
    for key in DATA_LIMITS if isinstance(limits, dict) else ():
        trained, trained_from = _number(limits.get(key)), "the parameter file it trained with"
        mine, mine_from = float(node[key]), "the node's parameter"
        if key == "reorder_lag_s":
            if limits.get(key) is None:
                trained, trained_from = float(policy_lag_s), f"{POLICY_LAG}, which training used"
            if mine < 0:
                mine, mine_from = float(policy_lag_s), f"the node's reorder_lag_s {node[key]:g}: {POLICY_LAG}"
        if trained is None or math.isclose(trained, mine, rel_tol=1e-6, abs_tol=1e-9):
            continue
        differences.append(f"{key} {mine:g} s ({mine_from}), trained with {trained:g} s ({trained_from})")
    topics = spec.get("topics")
    if isinstance(topics, dict) and "wheels" in topics and node.get("joint_names") is not None:
        trained = spec.get("joint_names", WHEEL_JOINT_NAMES)
        if isinstance(trained, list | tuple) and [str(n) for n in trained] != [str(n) for n in node["joint_names"]]:
            differences.append(
                f"joint_names {list(node['joint_names'])} (the node's parameter: the wheel velocities' order), "
                f"trained with {list(trained)} (the parameter file it trained with)"
            )
    moved, namespace = [], node.get("namespace") or "/"
    for sensor, given in (node.get("topics") or {}).items():
        trained = topics.get(sensor) if isinstance(topics, dict) else None
        if isinstance(trained, str) and trained and not same_topic_but_namespace(trained, given, namespace):
            moved.append(
                f"{sensor} from {given} (the node's topic, its namespace and remappings applied), trained on "
                f"{trained} (recorded in its bags)"
            )
    if not differences and not moved:
        return None
    effects = (["its updates' dt, resets and rejections are not the ones it learnt from"] if differences else []) + (
        ["its inputs come from other topics than it learnt from (compared namespaces aside)"] if moved else []
    )
    return (
        f"the node feeds the policy otherwise than it was trained: {'; '.join(differences + moved)}; "
        f"{'; '.join(effects)}: give the node the parameter file it trained with"
    )


def describe_source(metadata: dict, world: str | None) -> str:
    """What ``metadata`` records the policy was trained on, in words ('trained in WORLD', 'trained on the recorded
    bags ...'); ``world``: the policy config's, named for a file without the record (which cannot say whether it was
    trained there or on bags)."""
    source = metadata.get(SOURCE_KEY)
    bags = source.get("bags") if isinstance(source, dict) else None
    if isinstance(bags, list) and bags:
        labels = [bag_label(b.get("name"), b.get("sha256")) if isinstance(b, dict) else str(b) for b in bags]
        more = len(labels) - SOURCE_BAGS_SHOWN
        shown = ", ".join(labels[:SOURCE_BAGS_SHOWN]) + (f" and {more} more" if more > 0 else "")
        return f"trained on the recorded bag{'s' if len(labels) > 1 else ''} {shown}, not in a simulated world"
    if isinstance(source, dict) and isinstance(source.get("world"), str):
        return f"trained in {source['world']}"
    return (
        f"its config's world {world or 'not named'}; the file does not record whether it was trained there or on "
        "recorded bags"
    )
