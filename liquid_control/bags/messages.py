"""ROS messages <-> numpy readings, for bags: what ``policy_node`` reads out of each message, and the messages
``sim_node`` publishes, built as rosbags message objects (no rclpy needed to write or read a bag).

Readings follow ``policy_node`` exactly (test_bags checks it against the node's own table), through the functions
the node calls (``liquid_control.conventions``): the camera is ``image_to_numpy(msg, 'rgb8')``, the IMU
``[gyro xyz, accel xyz]``, wheel encoders ``JointState.velocity`` by joint name (``joints``, with the node's
``joint_names``), the balancer's target ``[linear.x, angular.z]`` of a Twist. A message with a header is stamped
by ``header.stamp``; one without (Twist) by its arrival, i.e. its log time in the bag. Commands (the labels of
behaviour cloning, ``conventions.commands.command_vector``): ``[linear.x, angular.z]`` of a Twist or
TwistStamped, or the ``data`` of a Float64MultiArray (wheel torques), in robot units.
"""

from __future__ import annotations

import numpy as np

from liquid_control.conventions import stamps
from liquid_control.conventions.camera_info import pinhole_intrinsics
from liquid_control.conventions.commands import FLOAT64_ARRAY, TWIST, TWIST_STAMPED, twist_vector
from liquid_control.conventions.commands import command_vector as command_vector  # the labels' reading, for bags
from liquid_control.conventions.image_conversion import HOST_BIGENDIAN, image_to_numpy
from liquid_control.conventions.imu import imu_reading
from liquid_control.conventions.params import WHEEL_JOINT_NAMES

from .io import typestore

IMAGE = "sensor_msgs/msg/Image"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"  # beside the image (conventions.params.camera_info_topic)
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"  # image_transport's compressed topic: not a policy input
IMU = "sensor_msgs/msg/Imu"
JOINT_STATE = "sensor_msgs/msg/JointState"
STRING = "std_msgs/msg/String"

# sensor name (policy observation) -> message type policy_node subscribes with, and its topic parameter
SENSOR_TYPES = {
    "camera": (IMAGE, "camera_topic"),
    "imu": (IMU, "imu_topic"),
    "wheels": (JOINT_STATE, "wheels_topic"),
    "command": (TWIST, "target_topic"),
}
COMMAND_TYPES = (TWIST, TWIST_STAMPED, FLOAT64_ARRAY)


def stamp_seconds(msg) -> float | None:
    """``header.stamp`` in seconds, or None for a message without header."""
    header = getattr(msg, "header", None)
    if header is None:
        return None
    return stamps.seconds(header.stamp)


def sensor_reading(sensor: str, msg) -> np.ndarray:
    """The reading ``policy_node`` takes from a message of ``sensor`` (raises ImageConversionError for a bad
    image, ImuFieldNotProvided for an Imu marking gyro or accelerometer as not provided, as the node rejects
    them). Not for ``wheels``, read by joint name (``conventions.joints.velocities_by_name``): ValueError."""
    if sensor == "camera":
        return image_to_numpy(msg, "rgb8")
    if sensor == "imu":  # ImuFieldNotProvided for an IMU without a gyro, as the node rejects it
        return imu_reading(msg)
    if sensor == "wheels":  # by name: the message alone does not say which velocity is which wheel
        raise ValueError(
            "wheels: policy_node reads a JointState's velocities by joint name, in the order of its joint_names "
            "parameter: conventions.joints.velocities_by_name(msg.name, msg.velocity, joint_names)"
        )
    if sensor == "command":
        return twist_vector(msg)
    raise KeyError(f"no reading is defined for sensor {sensor!r}; known: {', '.join(SENSOR_TYPES)}")


# ------------------------------------------------------------------------------------------------ building
def _types():
    return typestore().types


def time_msg(seconds: float):
    """builtin_interfaces/Time of ``seconds`` (rounded to the nanosecond, as sim_node stamps)."""
    sec, nanosec = stamps.sec_nanosec(seconds)
    return _types()["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)


def header(stamp: float, frame_id: str = ""):
    """std_msgs/Header with ``stamp`` in seconds."""
    return _types()["std_msgs/msg/Header"](stamp=time_msg(stamp), frame_id=frame_id)


def image_message(rgb: np.ndarray, stamp: float, frame_id: str = "camera_optical"):
    """A tightly packed rgb8 Image, as sim_node publishes the camera (``numpy_to_image(..., 'rgb8')``)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = rgb.shape[:2]
    return _types()[IMAGE](
        header=header(stamp, frame_id),
        height=h,
        width=w,
        encoding="rgb8",
        is_bigendian=int(HOST_BIGENDIAN),
        step=w * 3,
        data=rgb.reshape(-1),
    )


def camera_info_message(image, fovy_deg: float):
    """The CameraInfo of the rendered ``image`` (its size, stamp and frame) for a camera of vertical field of view
    ``fovy_deg``, as sim_node publishes beside each image (``conventions.camera_info.pinhole_intrinsics``)."""
    t = _types()
    k, p = pinhole_intrinsics(image.width, image.height, fovy_deg)
    return t[CAMERA_INFO](
        header=image.header,
        height=image.height,
        width=image.width,
        distortion_model="plumb_bob",
        d=np.zeros(5),
        k=np.array(k),
        r=np.eye(3).reshape(-1),
        p=np.array(p),
        binning_x=0,
        binning_y=0,
        roi=t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
    )


def imu_message(reading, stamp: float, frame_id: str = "imu", noise: tuple[float, float] | None = None):
    """An Imu as sim_node's (REP 145): gyro and accelerometer, no orientation estimate (covariance[0] = -1), and
    ``noise`` = (gyro std, accel std) on the covariance diagonals (None: all zeros, "covariance unknown")."""
    t = _types()
    r = [float(v) for v in reading]
    vec = t["geometry_msgs/msg/Vector3"]
    gyro_cov, accel_cov = np.zeros(9), np.zeros(9)
    if noise is not None:
        gyro_cov[[0, 4, 8]], accel_cov[[0, 4, 8]] = float(noise[0]) ** 2, float(noise[1]) ** 2
    return t[IMU](
        header=header(stamp, frame_id),
        orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0),
        orientation_covariance=np.array([-1.0] + [0.0] * 8),
        angular_velocity=vec(x=r[0], y=r[1], z=r[2]),
        angular_velocity_covariance=gyro_cov,
        linear_acceleration=vec(x=r[3], y=r[4], z=r[5]),
        linear_acceleration_covariance=accel_cov,
    )


def joint_state_message(velocity, stamp: float, position=None, names=WHEEL_JOINT_NAMES):
    """A JointState of the wheels' ``velocity`` (rad/s) by ``names``, as sim_node publishes its encoders: with the
    joints' angles ``position`` (rad; the world's ``delivered_positions``; None: none), no efforts, no frame."""
    return _types()[JOINT_STATE](
        header=header(stamp),
        name=list(names),
        position=np.zeros(0) if position is None else np.asarray(position, dtype=np.float64).reshape(-1),
        velocity=np.asarray(velocity, dtype=np.float64).reshape(-1),
        effort=np.zeros(0),
    )


def float64_array_message(values):
    """std_msgs/Float64MultiArray of ``values`` (the balancers' wheel torques, N m), no layout."""
    t = _types()
    layout = t["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
    return t[FLOAT64_ARRAY](layout=layout, data=np.asarray(values, dtype=np.float64).reshape(-1))


def twist_message(linear: float, angular: float):
    """geometry_msgs/Twist: ``linear`` along x, ``angular`` about z, the rest zero."""
    t = _types()
    vec = t["geometry_msgs/msg/Vector3"]
    return t[TWIST](linear=vec(x=float(linear), y=0.0, z=0.0), angular=vec(x=0.0, y=0.0, z=float(angular)))


def string_message(text: str):
    """std_msgs/String of ``text``."""
    return _types()[STRING](data=text)
