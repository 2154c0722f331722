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
