"""What a run records in policy.pt of the sensors it trained on (``conventions.training_record``: the policy
node checks a robot's camera and sensor rates against it): the camera's size and field of view, and each update
sensor's message intervals in the data the run trained on, measured from the recorded update stamps.

An update sensor's messages are the updates when it is the only one; with several, the updates of its ``event``
where the data have it, else the updates at which its reading changed (a new frame, a new vector): two messages of
exactly the same reading in a row count as one, which a camera or an IMU with noise never sends. The camera's field
of view is the world's in the simulator; on bags, the one the CameraInfo recorded beside the image topic gives.
"""

from __future__ import annotations

import numpy as np

from liquid_control.conventions import training_record
from liquid_control.conventions.camera_info import field_of_view_deg, image_geometry, world_camera_fovy_deg
from liquid_control.conventions.params import camera_info_topic

from .data import Episode

CAMERA = "camera"  # the sensor whose observation is "image" (runtime.backends.CAMERA)
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"


def _changed(rows) -> np.ndarray:
    """Which rows differ from the one before them, bool (T,); the first row: False (when its reading came is not
    known: it may be held from before the first update)."""
    rows = np.asarray(rows)
    if len(rows) == 0:
        return np.zeros(0, dtype=bool)
    flat = rows.reshape(len(rows), -1)
    return np.concatenate([[False], np.any(flat[1:] != flat[:-1], axis=1)])


def _message_rows(episode: Episode, sensor: str, index: int, update_on) -> np.ndarray:
    """The updates of ``episode`` at which a message of ``sensor`` (update sensor ``index``) arrived, bool (T,)."""
    if len(update_on) == 1:
        return np.ones(len(episode), dtype=bool)
    events = episode.observations.get("event")
    if events is not None:
        return np.asarray(events).reshape(-1) == index
    if sensor == CAMERA:
        if episode.image_index is not None and len(episode.image_index) == len(episode):
            return _changed(episode.image_index)
        return _changed(episode.observations["image"])
    return _changed(episode.observations[sensor])


def sensor_intervals(episode: Episode, update_on) -> dict[str, np.ndarray]:
    """The message intervals (seconds) of each update sensor in ``episode``, from its update stamps."""
    stamps = np.asarray(episode.stamp, dtype=np.float64)
    found = {}
    for index, sensor in enumerate(update_on):
        if sensor != CAMERA and sensor not in episode.observations:
            continue
        found[sensor] = np.diff(stamps[_message_rows(episode, sensor, index, update_on)])
    return found


def interval_histograms(episodes: list[Episode], update_on) -> dict[str, list[int]]:
    """``{sensor: dt_histogram counts}`` over ``episodes`` (plain ints: kept in the run's checkpoint)."""
    counts = {}
    for episode in episodes:
        for sensor, dts in sensor_intervals(episode, update_on).items():
            add = training_record.dt_histogram(dts)
            counts[sensor] = add if sensor not in counts else counts[sensor] + add
    return {sensor: [int(n) for n in c] for sensor, c in counts.items()}


def rates_entry(histograms: list[dict[str, list[int]]], training: dict) -> dict:
    """The ``training_sensor_rates`` entry of the summed ``histograms`` (one per round or per data set) and the
    run's timing recipe (``training``: the config's section)."""
    total = {}
    for part in histograms:
        for sensor, counts in part.items():
            c = np.asarray(counts, dtype=np.int64)
            total[sensor] = c if sensor not in total else total[sensor] + c
    entry = {sensor: s for sensor, c in total.items() if (s := training_record.rate_summary(c)) is not None}
    timed = training.get("sensor_rate_range") is not None or training.get("jitter_range") is not None
    entry[training_record.TIMING_AUGMENTATION] = (
        {
            "sensor_rate_range": None
            if training.get("sensor_rate_range") is None
            else list(training["sensor_rate_range"]),
            "jitter_range": None if training.get("jitter_range") is None else list(training["jitter_range"]),
        }
        if timed
        else None
    )
    return entry


def camera_entry(config: dict, from_bags: bool, recorded: dict | None = None) -> dict | None:
    """The ``training_camera`` entry of a run of ``config`` (None: a policy without a camera): the frames' size and
    the vertical field of view of the camera: the world's in the simulator; on bags the one their CameraInfo gives
    (``recorded``: ``{bag label: fovy degrees}`` of the bags that have one, ``training_record.bag_label``; a text
    for a bag whose CameraInfo gives none, :func:`bag_camera_calibration`), unknown (None) where none has or where
    they disagree by more than 1%."""
    image = config["observation"].get("image")
    if image is None:
        return None
    fovx = None
    if not from_bags:
        fovy, source = world_camera_fovy_deg(config.get("world")), f"world {config.get('world')}"
    else:  # (horizontal or None, vertical) by bag; a bare number: the vertical one alone; a text: why none
        unknown = sorted({v for v in (recorded or {}).values() if isinstance(v, str)})
        recorded = {k: v for k, v in (recorded or {}).items() if not isinstance(v, str)}
        fovs = {k: tuple(v) if isinstance(v, (tuple, list)) else (None, v) for k, v in recorded.items()}
        values = sorted(fovs.values(), key=lambda v: v[1])
        across = [v[0] for v in values]
        known_across = bool(values) and None not in across
        agree = bool(values) and values[-1][1] <= values[0][1] * 1.01
        agree_across = not known_across or max(across) <= min(across) * 1.01
        fovy = values[len(values) // 2][1] if agree and agree_across else None
        fovx = values[len(values) // 2][0] if fovy is not None and known_across else None
        axis = 1 if not agree else 0  # the one they disagree on: down (as before), else across

        def each() -> str:
            return ", ".join(f"{k} {v[axis]:.1f}" for k, v in sorted(fovs.items()))

        source = (
            f"the CameraInfo of bags {', '.join(sorted(recorded))}"
            if fovy is not None
            else f"bags whose CameraInfo is {' or '.join(unknown)} (not known)"
            if not values and unknown
            else "bags without a CameraInfo (not known)"
            if not values
            else f"bags whose CameraInfo disagree ({each()})"
            if not agree
            else f"bags whose CameraInfo disagree across ({each()})"
        )
    entry = {"width": int(image["width"]), "height": int(image["height"]), "fovy_deg": fovy, "source": source}
    return entry if fovx is None else {**entry, "fovx_deg": fovx}


def describe(metadata: dict) -> str:
    """What ``metadata`` records of the training sensors, in words (the model card's line)."""
    rates, camera = metadata.get(training_record.RATES_KEY), metadata.get(training_record.CAMERA_KEY)
    if rates is None and camera is None:
        return "not recorded (a file written before 2026-12-05: policy_node checks no rate)"
    parts = [
        f"{sensor} {median:.1f} Hz (middle 90% {slowest:.1f}-{fastest:.1f} Hz)"
        for sensor, (median, slowest, fastest) in training_record.trained_rates(metadata).items()
    ]
    timing = (rates or {}).get(training_record.TIMING_AUGMENTATION)
    if timing:
        parts.append(f"timing draws rate x {timing['sensor_rate_range']}, jitter x {timing['jitter_range']}")
    if isinstance(camera, dict):
        fovy = camera.get("fovy_deg")
        seen = "field of view unknown" if fovy is None else f"vertical field of view {fovy:g} degrees"
        parts.append(
            f"camera {camera.get('width')}x{camera.get('height')} (width x height), {seen} ({camera.get('source')})"
        )
    # a record without a sensor's rate: a run resumed from a checkpoint of before it that read no round's data again
    return "; ".join(parts) or "no sensor rate recorded (policy_node checks no rate)"


# Why a bag's CameraInfo gives no field of view (bag_camera_calibration), as training_camera's source says it.
UNCALIBRATED = "uncalibrated, K all zero"
NOT_A_PINHOLE = "not a pinhole camera's, K's focal lengths not positive"


def bag_camera_calibration(reader, camera_topic: str) -> tuple[float, float] | str | None:
    """The (horizontal, vertical) field of view (degrees) that the first CameraInfo beside ``camera_topic`` in the open
    bag ``reader`` gives (conventions.camera_info reads it as policy_node does); where it gives none, why:
    :data:`UNCALIBRATED` (as usb_cam publishes without a calibration file) or :data:`NOT_A_PINHOLE`; None: no
    CameraInfo recorded (the record said so of an uncalibrated camera's bag)."""
    topic = camera_info_topic(camera_topic)
    if topic not in reader.topics or CAMERA_INFO_TYPE not in reader.topics[topic].msgtypes:
        return None
    for message in reader.messages([topic]):
        if message.msgtype != CAMERA_INFO_TYPE:
            continue
        info = message.decode()
        fov = field_of_view_deg(*image_geometry(info))
        if fov is None:
            return UNCALIBRATED if not np.any(np.asarray(info.k, dtype=np.float64)) else NOT_A_PINHOLE
        return round(fov[0], 3), round(fov[1], 3)
    return None


def bag_camera_fov_deg(reader, camera_topic: str) -> tuple[float, float] | None:
    """The field of view of :func:`bag_camera_calibration`, or None: none recorded, or K unset."""
    fov = bag_camera_calibration(reader, camera_topic)
    return None if isinstance(fov, str) else fov


def bag_camera_fovy_deg(reader, camera_topic: str) -> float | None:
    """The vertical field of view of :func:`bag_camera_fov_deg`, or None."""
    fov = bag_camera_fov_deg(reader, camera_topic)
    return None if fov is None else fov[1]
