"""LiquidBalanceNav-v0: a self-balancing robot with a camera drives to a target it can only see.

The two-wheeled robot of ``LiquidBalance-v0`` (same body, wheels, motors, IMU and wheel encoders) carries a
forward camera. An orange marker stands 1.8-3.2 m away within +-35 deg of the start heading; the robot must
reach it (``SUCCESS_RADIUS``) without falling (``FALL_PITCH``) within ``TIME_LIMIT``. Success needs both
sensors: staying up is a fast loop on the IMU (200 Hz; the body falls in a fraction of a second, the camera's
horizon moves by a pixel for 3 degrees of pitch), finding the target a slow loop on the camera (30 Hz, stamped
at exposure and delivered 25 ms later). Nothing but the image says where the target is.

Every message of the camera or the IMU is an update (``update_on``, default both); the wheel encoders
(200 Hz) are held. The first update waits until every sensor has delivered (for a policy's world,
``policy_inputs``: every sensor of its inputs, as the policy node does).
Action: normalized wheel torques ``[left, right]``. Appearance follows the rover's seasons, lighting and fog.
"""

from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np

from . import cameras, experts
from .balancer import (
    ACCEL_NOISE,
    ENCODER_NOISE,
    FALL_PITCH,
    GYRO_NOISE,
    MAX_TORQUE,
    WHEEL_RADIUS,
    WHEEL_TRACK,
    body_state,
    nominal_plant,
)
from .rover import LIGHTINGS, SEASONS, TARGET_RGB, _rgb
from .shifts import fog_end_m, parse_shift
from .timing import NAV_CAMERA, NAV_ENCODERS, NAV_IMU
from .world import FrontCamera, TimedMujocoWorld, camera_image_shape, imu_space, jointvel_qpos, saturate_imu

TIME_LIMIT = 10.0
SUCCESS_RADIUS = 0.4  # m, body centre to the marker's axis
TARGET_DISTANCE = (1.8, 3.2)  # m
TARGET_BEARING_DEG = 35.0  # +- from the start heading
CAMERA_FOVY_DEG = cameras.CAMERA_FOVY_DEG["LiquidBalanceNav-v0"]  # sim_envs/cameras.py
N_TREES = 6  # scenery (not obstacles): trees away from the path, for the seasons to show
MAX_SPEED = 0.6  # m/s the expert drives at
MAX_TURN = 1.5  # rad/s


def balance_nav_xml(shift, width: int, height: int) -> str:
    """The MJCF: the balancer's robot with a forward camera, a marker and scenery, under a shift."""
    season, light = SEASONS[shift.season], LIGHTINGS[shift.lighting]
    sky_top, sky_low = np.array(light["sky"][0]), np.array(light["sky"][1])
    fog_rgb = np.clip(0.5 * (sky_low + np.array(light["ambient"])) + 0.25, 0, 1)
    fog_rgb = fog_rgb * (0.15 if shift.lighting == "night" else 1.0)
    if shift.fog > 0:
        sky_top = (1 - shift.fog) * sky_top + shift.fog * fog_rgb
        sky_low = (1 - shift.fog) * sky_low + shift.fog * fog_rgb
    fog_end = fog_end_m(shift.fog)
    m, fr, head = shift.mass, shift.friction, light["headlight"]
    trees = "\n".join(
        f'''<body name="tree{i}" mocap="true" pos="0 0 -20">
          <geom type="cylinder" size="0.12 1.0" pos="0 0 1.0" rgba="{_rgb(season["trunk"])} 1"
                contype="0" conaffinity="0"/>
          <geom type="ellipsoid" size="0.7 0.7 0.9" pos="0 0 2.3" rgba="{_rgb(season["foliage"][i % 3])} 1"
                contype="0" conaffinity="0"/>
        </body>'''
        for i in range(N_TREES)
    )
    return f"""
<mujoco model="liquid_balance_nav">
  <compiler angle="radian"/>
  <statistic extent="1" center="0 0 0.5"/>
  <option timestep="0.002" integrator="implicitfast"/>
  <visual>
    <global offwidth="{max(width, 320)}" offheight="{max(height, 240)}"/>
    <quality shadowsize="0" offsamples="0" numslices="12" numstacks="8" numquads="1"/>
    <headlight ambient="0 0 0" diffuse="{head} {head} {head}" specular="0 0 0"/>
    <map znear="0.02" zfar="60" fogstart="0" fogend="{fog_end:.2f}" haze="0"/>
    <rgba fog="{_rgb(fog_rgb)} 1" haze="{_rgb(fog_rgb)} 1"/>
  </visual>
  <asset>
    <texture name="sky" type="skybox" builtin="gradient" rgb1="{_rgb(sky_top)}" rgb2="{_rgb(sky_low)}"
             width="32" height="32"/>
    <texture name="ground" type="2d" builtin="flat" rgb1="{_rgb(season["ground"][0])}"
             rgb2="{_rgb(season["ground"][0])}" mark="random" random="0.08" markrgb="{_rgb(season["ground"][1])}"
             width="128" height="128"/>
    <material name="ground" texture="ground" texrepeat="12 12" reflectance="0" specular="0"/>
    <material name="target" rgba="{_rgb(TARGET_RGB)} 1" emission="0.35" specular="0.1"/>
  </asset>
  <default><geom friction="{1.0 * fr:.3f} 0.005 0.0001"/></default>
  <worldbody>
    <light directional="true" pos="0 0 20" dir="{_rgb(light["dir"])}" diffuse="{_rgb(light["diffuse"])}"
           ambient="{_rgb(light["ambient"])}" specular="0 0 0" castshadow="false"/>
    <geom name="ground" type="plane" size="30 30 5" material="ground"/>
    <body name="base" pos="0 0 {WHEEL_RADIUS}">
      <freejoint name="root"/>
      <geom name="body" type="box" size="0.04 0.08 0.15" pos="0 0 0.17" mass="{2.0 * m:.4f}" rgba="0.2 0.3 0.6 1"/>
      <site name="imu" pos="0 0 0.12"/>
      <camera name="front" pos="0.045 0 0.28" xyaxes="0 -1 0 0 0 1" fovy="{CAMERA_FOVY_DEG:g}"/>
      <body name="wheel_left" pos="0 {WHEEL_TRACK / 2} 0">
        <joint name="wheel_left" type="hinge" axis="0 1 0" damping="0.002"/>
        <geom type="cylinder" size="{WHEEL_RADIUS} 0.012" zaxis="0 1 0" mass="{0.15 * m:.4f}" rgba="0.1 0.1 0.1 1"/>
      </body>
      <body name="wheel_right" pos="0 {-WHEEL_TRACK / 2} 0">
        <joint name="wheel_right" type="hinge" axis="0 1 0" damping="0.002"/>
        <geom type="cylinder" size="{WHEEL_RADIUS} 0.012" zaxis="0 1 0" mass="{0.15 * m:.4f}" rgba="0.1 0.1 0.1 1"/>
      </body>
    </body>
    {trees}
    <body name="target" mocap="true" pos="3 0 0">
      <geom type="cylinder" size="0.15 0.6" pos="0 0 0.6" material="target" contype="0" conaffinity="0"/>
      <geom type="sphere" size="0.25" pos="0 0 1.35" material="target" contype="0" conaffinity="0"/>
    </body>
  </worldbody>
  <actuator>
    <motor name="wheel_left" joint="wheel_left" gear="{MAX_TORQUE * shift.motor_gain:.4f}" ctrlrange="-1 1"/>
    <motor name="wheel_right" joint="wheel_right" gear="{MAX_TORQUE * shift.motor_gain:.4f}" ctrlrange="-1 1"/>
  </actuator>
  <sensor>
    <gyro name="gyro" site="imu"/>
    <accelerometer name="accel" site="imu"/>
    <jointvel name="encoder_left" joint="wheel_left"/>
    <jointvel name="encoder_right" joint="wheel_right"/>
  </sensor>
</mujoco>
"""


def navigation_command(position, yaw, target) -> np.ndarray:
    """The expert's [forward m/s, yaw rate rad/s] towards ``target``: turn to it, drive the faster the better
    aligned, slowing down over the last metre."""
    to_target = np.asarray(target, float) - np.asarray(position, float)
    distance = float(np.hypot(*to_target))
    error = float(np.angle(np.exp(1j * (np.arctan2(to_target[1], to_target[0]) - yaw))))
    speed = MAX_SPEED * np.clip(distance, 0.4, 1.0) * max(np.cos(error), 0.0) ** 2
    return np.array([speed, np.clip(2.0 * error, -MAX_TURN, MAX_TURN)])


class LiquidBalanceNavEnv(FrontCamera, TimedMujocoWorld):
    """Balance on two wheels (IMU) and drive to a marker seen by the camera; see the module docstring."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 230}  # per instance: update_rate_hz
    sensor_names = ("camera", "imu", "encoders")
    observation_keys = ("image", "imu", "wheels")
    default_update_on = ("camera", "imu")
    input_sensors = {"camera": "camera", "imu": "imu", "wheels": "encoders"}
    wait_for_all_sensors = True
    action_kind = "wheel_torques"
    default_time_limit = TIME_LIMIT
    chase_view = ("base", 1.6, -15.0)  # render(): from behind the robot (FrontCamera)

    def __init__(
        self,
        shift=None,
        render_size: int | tuple = 32,
        time_limit: float | None = TIME_LIMIT,
        render_mode=None,
        update_on=None,
        reorder_lag_s: float = 0.0,
        policy_inputs=None,
    ):
        shift = parse_shift(shift)
        self.image_shape = camera_image_shape(render_size)
        height, width, _ = self.image_shape
        super().__init__(
            balance_nav_xml(shift, width, height),
            {"camera": NAV_CAMERA, "imu": NAV_IMU, "encoders": NAV_ENCODERS},
            shift,
            time_limit,
            render_mode,
            update_on,
            reorder_lag_s,
            policy_inputs,
        )
        m = self.model
        self.observation_space = gym.spaces.Dict(
            {
                "image": gym.spaces.Box(0, 255, shape=self.image_shape, dtype=np.uint8),
                "imu": imu_space(),
                "wheels": gym.spaces.Box(-500.0, 500.0, shape=(2,), dtype=np.float32),
                **self._time_spaces(),
            }
        )
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        body = lambda name: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, name)  # noqa: E731
        sensor = lambda name: m.sensor_adr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SENSOR, name)]  # noqa: E731
        self._root_qpos = m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, "root")]
        self._target_mocap = m.body_mocapid[body("target")]
        self._tree_mocap = [m.body_mocapid[body(f"tree{i}")] for i in range(N_TREES)]
        self._imu_adr = (sensor("gyro"), sensor("accel"))
        self._encoder_adr = [sensor("encoder_left"), sensor("encoder_right")]
        self._joint_qpos = {"encoders": jointvel_qpos(m, ("encoder_left", "encoder_right"))}  # the wheels' angles
        self._expert = experts.BalancerExpert(nominal_plant(), control_period=1.0 / NAV_IMU.rate_hz)
        self._init_camera()
        self.target = np.zeros(2)

    # ----- layout -----
    def _reset_world(self, rng):
        yaw = rng.uniform(-np.pi, np.pi)
        bearing = yaw + np.deg2rad(rng.uniform(-TARGET_BEARING_DEG, TARGET_BEARING_DEG))
        self.target = rng.uniform(*TARGET_DISTANCE) * np.array([np.cos(bearing), np.sin(bearing)])
        heading = self.target / np.linalg.norm(self.target)
        for mocap in self._tree_mocap:  # beside or behind the path, at least 1.5 m off its line
            along, side = rng.uniform(-3.0, 8.0), rng.choice([-1.0, 1.0]) * rng.uniform(1.5, 6.0)
            p = along * heading + side * np.array([-heading[1], heading[0]])
            self.data.mocap_pos[mocap] = (p[0], p[1], 0.0)
        self.data.mocap_pos[self._target_mocap] = (*self.target, 0.0)
        pitch = rng.uniform(-0.05, 0.05)
        q = self._root_qpos
        self.data.qpos[q : q + 3] = (0.0, 0.0, WHEEL_RADIUS)
        # yaw about z, then pitch about the body's y axis
        self.data.qpos[q + 3 : q + 7] = (
            np.cos(yaw / 2) * np.cos(pitch / 2),
            -np.sin(yaw / 2) * np.sin(pitch / 2),
            np.cos(yaw / 2) * np.sin(pitch / 2),
            np.sin(yaw / 2) * np.cos(pitch / 2),
        )
        self._imu_bias = self.shift.imu_bias * rng.choice([-1.0, 1.0], size=6)
        self._previous_distance = float(np.linalg.norm(self.target))
        self.frames_rendered = 0

    # ----- physics and sensors -----
    def _apply_action(self, action):
        self.data.ctrl[:] = action

    def _measure(self, sensor):
        rng, shift, s = self._noise_rng, self.shift, self.data.sensordata
        if sensor == "camera":
            return self._camera_measurement(rng)
        if sensor == "imu":
            gyro, accel = self._imu_adr
            reading = np.concatenate([s[gyro : gyro + 3], s[accel : accel + 3]])
            std = np.array([GYRO_NOISE] * 3 + [ACCEL_NOISE] * 3) + shift.imu_noise
            return saturate_imu(reading + self._imu_bias + rng.normal(0.0, 1.0, size=6) * std)
        reading = s[self._encoder_adr] + rng.normal(0.0, ENCODER_NOISE, size=2)
        return np.clip(reading, -500.0, 500.0).astype(np.float32)

    # ----- task -----
    def pose(self):
        """True (x, y) position of the body and its yaw."""
        self._require_reset("pose()")
        q = self._root_qpos
        return self.data.qpos[q : q + 2].copy(), body_state(self.data, q)["yaw"]

    def state(self) -> dict:
        """True pitch, pitch rate, forward velocity, yaw, yaw rate and position of the robot."""
        self._require_reset("state()")
        st = body_state(self.data, self._root_qpos)
        st["position"] = self.data.qpos[self._root_qpos : self._root_qpos + 2].copy()
        return st

    def _outcome(self):
        st = self.state()
        distance = float(np.linalg.norm(self.target - st["position"]))
        fallen = abs(st["pitch"]) > FALL_PITCH
        success = distance < SUCCESS_RADIUS and not fallen
        reward = (self._previous_distance - distance) + 10.0 * success - 10.0 * fallen
        self._previous_distance = distance
        info = dict(
            success=bool(success),
            collision=bool(fallen),
            fallen=bool(fallen),
            distance=distance,
            target=self.target.copy(),
            **st,
        )
        return float(reward), bool(success or fallen), info

    def _observation(self):
        return {
            "image": self._reading("camera", self.image_shape).astype(np.uint8, copy=False),
            "imu": self._reading("imu", 6),
            "wheels": self._reading("encoders", 2),
            **self._time_observation(),
        }

    def expert_action(self) -> np.ndarray:
        """The privileged expert: a navigation command towards the true target, tracked by the balancer's LQR."""
        self._require_reset("expert_action()")
        st = self.state()
        command = navigation_command(st["position"], st["yaw"], self.target)
        return self._expert(dict(st, position_error=0.0), command)
