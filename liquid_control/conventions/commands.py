"""Velocity and command messages -> vectors, as the nodes and the bag readers all take them.

A ``geometry_msgs/Twist`` is read as ``[linear.x, angular.z]``, the two velocities a wheeled base follows (the other
four fields are not read): the balancer's velocity target (an input of its policy) and the commands policy_node
publishes in robot units, which sim_node executes and training from a bag takes as labels. A ``TwistStamped`` is read
as its twist, a ``std_msgs/Float64MultiArray`` (wheel torques) as its ``data``. Works on rclpy's and rosbags'
messages alike.
"""

from __future__ import annotations

import numpy as np

TWIST = "geometry_msgs/msg/Twist"
TWIST_STAMPED = "geometry_msgs/msg/TwistStamped"
FLOAT64_ARRAY = "std_msgs/msg/Float64MultiArray"

# what each element of a policy's action commands, and its unit on the robot, by the config's action.kind (the worlds'
# action_kind; docs/worlds.md)
COMMAND_ELEMENTS = {
    "twist": (("linear", "m/s"), ("angular", "rad/s")),
    "wheel_torques": (("left wheel", "N m"), ("right wheel", "N m")),
}


def twist_vector(twist) -> np.ndarray:
    """``[linear.x, angular.z]`` of a ``Twist``."""
    return np.array([twist.linear.x, twist.angular.z], dtype=np.float64)


def command_vector(msg, msgtype: str) -> np.ndarray:
    """The robot-unit command of a message of type ``msgtype`` (``pkg/msg/Type``): ``[linear.x, angular.z]`` of a
    Twist or TwistStamped, the ``data`` of a Float64MultiArray."""
    if msgtype == FLOAT64_ARRAY:
        return np.asarray(msg.data, dtype=np.float64)
    return twist_vector(msg.twist if msgtype == TWIST_STAMPED else msg)
