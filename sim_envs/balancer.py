"""LiquidBalance-v0: a two-wheeled self-balancing robot that must stay up and track a commanded velocity.

Fast dynamics (the body falls in a fraction of a second), 2 ms physics. Updates are triggered by IMU
messages (200 Hz); wheel encoders (200 Hz) are held between them. The command ``[forward m/s, yaw rad/s]``
is part of the observation and changes every 2-4 s. Action: normalized wheel torques ``[left, right]``.
Success: still up at the time limit with a mean forward-velocity error below ``SUCCESS_TRACKING_ERROR``;
failure: the body tilts past ``FALL_PITCH``.
"""

from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np

from . import experts
from .shifts import parse_shift
from .timing import BALANCER_ENCODERS, BALANCER_IMU
from .world import TimedMujocoWorld, imu_space, jointvel_qpos, make_renderer, saturate_imu

WHEEL_RADIUS = 0.05
WHEEL_TRACK = 0.24  # distance between the wheels
MAX_TORQUE = 0.6  # N m per wheel at action = 1
TIME_LIMIT = 10.0
FALL_PITCH = 0.6  # rad
MAX_SPEED_COMMAND = 0.5  # m/s
MAX_YAW_COMMAND = 1.0  # rad/s
SUCCESS_TRACKING_ERROR = 0.2  # m/s, mean |forward velocity - command| over the episode
GYRO_NOISE, ACCEL_NOISE, ENCODER_NOISE = 0.005, 0.05, 0.05  # nominal white noise (rad/s, m/s^2, rad/s)


def balancer_xml(shift) -> str:
    """The MJCF of the balancer under a shift's dynamics factors (mass, friction, motor gain)."""
    m, fr = shift.mass, shift.friction
    return f"""
<mujoco model="liquid_balance">
  <compiler angle="radian"/>
  <option timestep="0.002" integrator="implicitfast"/>
  <visual><quality shadowsize="0" offsamples="0"/><global offwidth="320" offheight="240"/></visual>
  <default><geom friction="{1.0 * fr:.3f} 0.005 0.0001"/></default>
  <worldbody>
    <light directional="true" dir="0.3 0.2 -1" castshadow="false"/>
    <geom name="ground" type="plane" size="50 50 5" rgba="0.5 0.55 0.5 1"/>
    <body name="base" pos="0 0 {WHEEL_RADIUS}">
      <freejoint name="root"/>
      <geom name="body" type="box" size="0.04 0.08 0.15" pos="0 0 0.17" mass="{2.0 * m:.4f}" rgba="0.2 0.3 0.6 1"/>
      <site name="imu" pos="0 0 0.12"/>
      <body name="wheel_left" pos="0 {WHEEL_TRACK / 2} 0">
        <joint name="wheel_left" type="hinge" axis="0 1 0" damping="0.002"/>
        <geom type="cylinder" size="{WHEEL_RADIUS} 0.012" zaxis="0 1 0" mass="{0.15 * m:.4f}" rgba="0.1 0.1 0.1 1"/>
      </body>
      <body name="wheel_right" pos="0 {-WHEEL_TRACK / 2} 0">
        <joint name="wheel_right" type="hinge" axis="0 1 0" damping="0.002"/>
        <geom type="cylinder" size="{WHEEL_RADIUS} 0.012" zaxis="0 1 0" mass="{0.15 * m:.4f}" rgba="0.1 0.1 0.1 1"/>
      </body>
    </body>
    <camera name="side" mode="trackcom" pos="0 -1.5 0.4" xyaxes="1 0 0 0 0.2 1"/>
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


def nominal_plant() -> dict:
    """Masses and inertias of the nominal balancer (the expert is designed on these, not on a shifted robot)."""
    model = mujoco.MjModel.from_xml_string(balancer_xml(parse_shift(None)))
    base = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "base")
    wheel = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "wheel_left")
    return dict(
        body_mass=float(model.body_mass[base]),
        com_height=float(model.body_ipos[base][2]),
        body_pitch_inertia=float(model.body_inertia[base][1]),
        wheel_mass=float(model.body_mass[wheel]),
        wheel_inertia=float(model.body_inertia[wheel].max()),
        wheel_radius=WHEEL_RADIUS,
        wheel_track=WHEEL_TRACK,
        max_torque=MAX_TORQUE,
        gravity=float(-model.opt.gravity[2]),
    )


def body_frame(data, root_qpos: int):
    """Rotation matrix of a free-floating body, its yaw and its horizontal heading unit vector, from qpos."""
    R = np.empty(9)
    mujoco.mju_quat2Mat(R, data.qpos[root_qpos + 3 : root_qpos + 7])
    R = R.reshape(3, 3)
    yaw = float(np.arctan2(R[1, 0], R[0, 0]))
    return R, yaw, np.array([np.cos(yaw), np.sin(yaw), 0.0])


def body_state(data, root_qpos: int) -> dict:
    """True pitch, pitch rate, forward velocity, yaw and yaw rate of a two-wheeled robot's body."""
    R, yaw, heading = body_frame(data, root_qpos)
    lateral = np.array([-heading[1], heading[0], 0.0])
    angular_velocity = R @ data.qvel[3:6]  # free joint angular velocity is in the body frame
    return dict(
        pitch=float(np.arctan2(R[:, 2] @ heading, R[2, 2])),
        pitch_rate=float(angular_velocity @ lateral),
        velocity=float(data.qvel[0:3] @ heading),  # free joint linear velocity is in the world frame
        yaw=yaw,
        yaw_rate=float(angular_velocity[2]),
    )


class LiquidBalanceEnv(TimedMujocoWorld):
    """Balance on two wheels and follow a changing velocity command, from IMU and encoder streams."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 200}  # per instance: update_rate_hz
    sensor_names = ("imu", "encoders")
    observation_keys = ("imu", "wheels", "command")
    default_update_on = ("imu",)
    input_sensors = {"imu": "imu", "wheels": "encoders", "command": None}  # the command is the world's own
    action_kind = "wheel_torques"
    default_time_limit = TIME_LIMIT
    _process_local = TimedMujocoWorld._process_local + ("_renderer",)  # the side view's GL context

    def __init__(
        self,
        shift=None,
        time_limit: float | None = TIME_LIMIT,
        render_mode=None,
        update_on=None,
        reorder_lag_s=0.0,
        policy_inputs=None,
    ):
        shift = parse_shift(shift)
        super().__init__(
            balancer_xml(shift),
            {"imu": BALANCER_IMU, "encoders": BALANCER_ENCODERS},
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
                "imu": imu_space(),
                "wheels": gym.spaces.Box(-500.0, 500.0, shape=(2,), dtype=np.float32),
                "command": gym.spaces.Box(
                    np.array([-MAX_SPEED_COMMAND, -MAX_YAW_COMMAND], dtype=np.float32),
                    np.array([MAX_SPEED_COMMAND, MAX_YAW_COMMAND], dtype=np.float32),
                ),
                **self._time_spaces(),
            }
        )
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self._base = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "base")
        self._root_qpos = m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, "root")]
        adr = lambda name: m.sensor_adr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SENSOR, name)]  # noqa: E731
        self._imu_slices = (slice(adr("gyro"), adr("gyro") + 3), slice(adr("accel"), adr("accel") + 3))
        self._encoder_adr = (adr("encoder_left"), adr("encoder_right"))
        self._joint_qpos = {"encoders": jointvel_qpos(m, ("encoder_left", "encoder_right"))}  # the wheels' angles
        self._expert = experts.BalancerExpert(nominal_plant(), control_period=1.0 / BALANCER_IMU.rate_hz)
        self._renderer = None

    def _reset_world(self, rng):
        pitch = rng.uniform(-0.1, 0.1)
        q = self._root_qpos
        self.data.qpos[q : q + 3] = (0.0, 0.0, WHEEL_RADIUS)
        self.data.qpos[q + 3 : q + 7] = (np.cos(pitch / 2), 0.0, np.sin(pitch / 2), 0.0)
        # Piecewise constant commands; the first one starts at rest for a second.
        changes, commands, t = [0.0], [np.zeros(2)], 1.0
        while t < self.time_limit + 5.0:
            changes.append(t)
            commands.append(
                np.array(
                    [rng.uniform(-MAX_SPEED_COMMAND, MAX_SPEED_COMMAND), rng.uniform(-MAX_YAW_COMMAND, MAX_YAW_COMMAND)]
                )
            )
            t += rng.uniform(2.0, 4.0)
        self._command_changes, self._commands = np.array(changes), np.array(commands)
        self._command_index = 0
        self._position_error = 0.0  # integral of (forward velocity - command) since the last command change
        self._abs_error_integral = 0.0
        self._fallen = False
        self._imu_bias = self.shift.imu_bias * rng.choice([-1.0, 1.0], size=6)

    @property
    def command(self) -> np.ndarray:
        """The velocity command in force now: (forward speed m/s, yaw rate rad/s)."""
        self._require_reset("command")
        return self._commands[self._command_index]

    def _body_frame(self):
        return body_frame(self.data, self._root_qpos)

    def _forward_velocity(self, heading) -> float:
        return float(self.data.qvel[0:3] @ heading)  # free joint linear velocity is in the world frame

    def state(self) -> dict:
        """True pitch, pitch rate, forward velocity, yaw and yaw rate of the body, and the position error."""
        self._require_reset("state()")
        return dict(body_state(self.data, self._root_qpos), position_error=self._position_error)

    def _apply_action(self, action):
        self.data.ctrl[:] = action

    def _after_physics_step(self):
        h = self.model.opt.timestep
        if (
            self._command_index + 1 < len(self._command_changes)
            and self.data.time >= self._command_changes[self._command_index + 1]
        ):
            self._command_index += 1
            self._position_error = 0.0
        # the command's array, not the property: this runs every physics step
        error = self._forward_velocity(self._body_frame()[2]) - self._commands[self._command_index][0]
        self._position_error += error * h
        self._abs_error_integral += abs(error) * h

    def _measure(self, sensor):
        s, rng, shift = self.data.sensordata, self._noise_rng, self.shift
        if sensor == "imu":
            reading = np.concatenate([s[self._imu_slices[0]], s[self._imu_slices[1]]])
            std = np.array([GYRO_NOISE] * 3 + [ACCEL_NOISE] * 3) + shift.imu_noise
            return saturate_imu(reading + self._imu_bias + rng.normal(0.0, 1.0, size=6) * std)
        reading = s[list(self._encoder_adr)] + rng.normal(0.0, ENCODER_NOISE, size=2)
        return np.clip(reading, -500.0, 500.0).astype(np.float32)

    def _outcome(self):
        st = self.state()
        fallen = abs(st["pitch"]) > FALL_PITCH
        t = max(self.data.time, 1e-9)
        tracking_error = self._abs_error_integral / t
        at_end = self._update_stamp is not None and self._update_stamp >= self.time_limit
        success = at_end and not fallen and tracking_error < SUCCESS_TRACKING_ERROR
        error = st["velocity"] - self.command[0]
        reward = self._dt * (1.0 - error**2 - 0.25 * (st["yaw_rate"] - self.command[1]) ** 2) - 10.0 * fallen
        info = dict(
            success=bool(success),
            collision=bool(fallen),
            fallen=bool(fallen),
            tracking_error=float(tracking_error),
            command=self.command.copy(),
            **st,
        )
        return float(reward), bool(fallen), info

    def _observation(self):
        return {
            "imu": self._reading("imu", 6),
            "wheels": self._reading("encoders", 2),
            "command": self.command.astype(np.float32),
            **self._time_observation(),
        }

    def expert_action(self) -> np.ndarray:
        """The privileged LQR expert's wheel torques for the current true state and command."""
        self._require_reset("expert_action()")
        return self._expert(self.state(), self.command)

    def render(self):
        """A 320x240 RGB frame from the side camera in ``rgb_array`` mode, else None."""
        if self._without_render_mode():
            return None
        self._require_reset("render()")  # before it, no episode: a frame of the never-computed state (all black)
        if self._renderer is None:
            self._renderer = make_renderer(self.model, 240, 320)
        self._forward_now()
        self._renderer.update_scene(self.data, camera="side")
        return self._renderer.render()

    def close(self):
        """Close the renderer, if one was made."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
