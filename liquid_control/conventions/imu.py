"""``sensor_msgs/Imu`` -> the reading a policy takes, as the node and the bag readers both take it.

The reading is ``[gyro xyz, accel xyz]``. A driver marks a field it does not provide with -1 in element 0 of that
field's covariance (sensor_msgs/Imu, REP 145) and leaves the field's values at zero: an IMU without a gyroscope,
or with its accelerometer switched off. Those zeros are no measurement (a policy would take them for a robot at
rest), so such a message is rejected (``NOT_PROVIDED``). The orientation is not read: its -1 (sim_node's, most
IMUs without a fusion filter) is no problem.
"""

from __future__ import annotations

import numpy as np

NOT_PROVIDED = "not_provided"  # the rejection of an Imu whose driver marks a read field as not provided
READ_FIELDS = ("angular_velocity", "linear_acceleration")


class ImuFieldNotProvided(ValueError):
    """An Imu message whose driver marks a field the reading needs as not provided (covariance[0] == -1)."""


def imu_reading(msg) -> np.ndarray:
    """``[gyro xyz, accel xyz]`` of ``msg`` (an rclpy or rosbags sensor_msgs/Imu), or :class:`ImuFieldNotProvided`
    naming the fields whose covariance element 0 is -1."""
    missing = [field for field in READ_FIELDS if getattr(msg, f"{field}_covariance")[0] == -1]
    if missing:
        raise ImuFieldNotProvided(
            f"{' and '.join(missing)} not provided ({', '.join(f + '_covariance[0]' for f in missing)} is -1, "
            "sensor_msgs/Imu's mark of a field the driver does not measure): the policy reads gyro and accelerometer"
        )
    w, a = msg.angular_velocity, msg.linear_acceleration
    return np.array([w.x, w.y, w.z, a.x, a.y, a.z], dtype=np.float64)


STANDARD_GRAVITY = 9.80665
# the worlds' IMUs (and REP 145's) read gravity as +9.81 m/s^2 on z when level: a mean over GRAVITY_WINDOW readings
# pointing more than 60 degrees away from +z, or of a magnitude outside these bounds, is another convention
GRAVITY_WINDOW = 100
GRAVITY_MIN_COS_FROM_UP = 0.5
GRAVITY_MAGNITUDE_BOUNDS = (3.0, 30.0)  # m/s^2: 1.0 is a driver publishing in g


class GravityCheck:
    """Whether the accelerometer of a stream of readings shows gravity as the worlds' IMUs do (+z, ~9.81 m/s^2).

    ``add`` takes each reading (``[gyro xyz, accel xyz]``) and, every :data:`GRAVITY_WINDOW` finite ones, returns
    a sentence when their mean acceleration points more than 60 degrees from +z (an IMU mounted rotated, upside
    down, or publishing north-east-down axes: gravity on -z) or has a magnitude outside 3-30 m/s^2 (units of g),
    else None. Averaging over the window lets the robot's own accelerations pass; a robot lying on its side is
    reported too (the message says so)."""

    def __init__(self, window: int = GRAVITY_WINDOW):
        self.window = window
        self._sum = np.zeros(3)
        self._count = 0

    def add(self, reading) -> str | None:
        """Take one reading; at the end of a window, the sentence naming a problem (None when there is none)."""
        accel = np.asarray(reading, dtype=np.float64)[3:6]
        if not np.all(np.isfinite(accel)):
            return None
        self._sum += accel
        self._count += 1
        if self._count < self.window:
            return None
        mean = self._sum / self._count
        self._sum[:] = 0.0
        self._count = 0
        magnitude = float(np.linalg.norm(mean))
        low, high = GRAVITY_MAGNITUDE_BOUNDS
        shown = f"({mean[0]:.2f}, {mean[1]:.2f}, {mean[2]:.2f}) m/s^2"
        if not low <= magnitude <= high:
            return (
                f"linear_acceleration averages {shown} over {self.window} messages, {magnitude:.2f} m/s^2 in all: "
                f"gravity is {STANDARD_GRAVITY:.2f} m/s^2 (sensor_msgs/Imu is in m/s^2; a driver publishing in g "
                "reads about 1.0)"
            )
        if mean[2] < GRAVITY_MIN_COS_FROM_UP * magnitude:
            return (
                f"linear_acceleration averages {shown} over {self.window} messages: gravity does not point along +z "
                "as in the policy's training IMU (REP 103/145: x forward, y left, z up, +9.81 on z at rest); the IMU "
                "is mounted rotated or publishes other axes (north-east-down: -9.81 on z): publish it in the "
                "robot's axes (the driver's mounting setting, or imu_transformer to base_link), unless the robot "
                "lies tilted"
            )
        return None
