"""The simulated worlds as ROS robots: for each world ``sim_node`` runs, the sensors it publishes (by its topic
parameter), the command message it executes and the robot units per action unit, its IMU's nominal noise (the
covariances of its Imu messages) and whether it publishes a velocity target. Shared by ``sim_node`` and
``liquid-control record --expert``, which writes the messages sim_node publishes without DDS."""

from __future__ import annotations

import numpy as np


def _rover_command_scale():
    from sim_envs import rover

    return np.array([rover.MAX_LINEAR, rover.MAX_ANGULAR])


def _balancer_command_scale():
    from sim_envs import balancer

    return np.array([balancer.MAX_TORQUE, balancer.MAX_TORQUE])


def _rover_imu_noise():
    from sim_envs import rover

    return rover.GYRO_NOISE, rover.ACCEL_NOISE


def _balancer_imu_noise():
    from sim_envs import balancer

    return balancer.GYRO_NOISE, balancer.ACCEL_NOISE


# world id -> how it maps to ROS: sensor -> topic parameter, command message kind, robot units per action unit
WORLDS = {
    "LiquidRover-v0": dict(
        sensors={"camera": "camera_topic", "imu": "imu_topic"},
        command="twist",
        command_scale=_rover_command_scale,
        imu_noise=_rover_imu_noise,  # nominal white-noise std (gyro rad/s, accel m/s^2): the IMU's datasheet
        target=False,
    ),
    "LiquidBalance-v0": dict(
        sensors={"imu": "imu_topic", "encoders": "wheels_topic"},
        command="float64_multi_array",
        command_scale=_balancer_command_scale,
        imu_noise=_balancer_imu_noise,
        target=True,
    ),  # world.command: velocity target
    "LiquidBalanceNav-v0": dict(
        sensors={"camera": "camera_topic", "imu": "imu_topic", "encoders": "wheels_topic"},
        command="float64_multi_array",
        command_scale=_balancer_command_scale,
        imu_noise=_balancer_imu_noise,  # the balancer's IMU (sim_envs.balance_nav imports its noise)
        target=False,
    ),
}
