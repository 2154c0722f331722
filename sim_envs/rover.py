"""LiquidRover-v0: a differential-drive rover drives to a target it sees with a forward camera.

Outdoor arena with trees (trunk cylinders that block, foliage that does not) and bushes, re-laid from the
seed every episode; a tall orange marker is the target, placed 3-8 m ahead within +-35 deg of the start
heading (so it starts in view). The action is a normalized Twist ``[linear, angular]`` in [-1, 1]; a wheel
velocity controller inside turns it into wheel speeds. By default updates are triggered by camera messages
(15 Hz +- 20%) and the IMU (100 Hz +- 10%) is held between them (``update_on`` chooses other triggers).
Success: within ``SUCCESS_RADIUS`` of the target; failure: any contact between the rover and an obstacle,
or the time limit.
"""

from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np

from . import cameras, experts
from .shifts import fog_end_m, parse_shift
from .timing import ROVER_CAMERA, ROVER_IMU
from .world import FrontCamera, TimedMujocoWorld, camera_image_shape, imu_space, saturate_imu

MAX_LINEAR = 1.0  # m/s at action[0] = 1
MAX_ANGULAR = 1.5  # rad/s at action[1] = 1
WHEEL_RADIUS = 0.06
WHEEL_BASE = 0.30  # distance between the wheels
ROVER_RADIUS = 0.24  # circle around the rover used for clearance
SUCCESS_RADIUS = 0.6
# Vertical = horizontal field of view of the square front camera (degrees; why 100: sim_envs/cameras.py)
CAMERA_FOVY_DEG = cameras.CAMERA_FOVY_DEG["LiquidRover-v0"]
TIME_LIMIT = 25.0
N_TREES = 14
N_BUSHES = 8
TREE_RADII = np.linspace(0.12, 0.25, N_TREES)  # trunk radius of each tree of the pool
BUSH_RADII = np.linspace(0.3, 0.45, N_BUSHES)
BUSH_Z = 0.15
ARENA_HALF = 16.0
GYRO_NOISE, ACCEL_NOISE = 0.005, 0.02  # nominal IMU white noise (rad/s, m/s^2)
_IMU_NOISE_STD = np.array([GYRO_NOISE] * 3 + [ACCEL_NOISE] * 3)

# Season palettes: ground colours (base, marks), foliage colours (cycled over trees), trunk, bush.
SEASONS = {
    "summer": dict(
        ground=((0.32, 0.50, 0.20), (0.26, 0.42, 0.16)),
        foliage=((0.16, 0.42, 0.12), (0.20, 0.48, 0.14), (0.12, 0.36, 0.10)),
        trunk=(0.40, 0.27, 0.15),
        bush=(0.22, 0.46, 0.14),
    ),
    "autumn": dict(
        ground=((0.46, 0.40, 0.20), (0.52, 0.34, 0.14)),
        foliage=((0.85, 0.45, 0.08), (0.70, 0.22, 0.08), (0.82, 0.66, 0.12)),
        trunk=(0.36, 0.24, 0.14),
        bush=(0.55, 0.34, 0.12),
    ),
    "winter": dict(
        ground=((0.88, 0.90, 0.94), (0.74, 0.77, 0.82)),
        foliage=((0.86, 0.89, 0.93), (0.78, 0.82, 0.86), (0.30, 0.38, 0.32)),
        trunk=(0.22, 0.17, 0.13),
        bush=(0.84, 0.87, 0.91),
    ),
}
# Lighting: directional light direction, diffuse, ambient; sky (top, horizon); camera headlight diffuse.
LIGHTINGS = {
    "noon": dict(
        dir=(0.3, 0.2, -1.0),
        diffuse=(0.75, 0.75, 0.72),
        ambient=(0.35, 0.35, 0.35),
        sky=((0.35, 0.55, 0.90), (0.80, 0.88, 0.98)),
        headlight=0.0,
    ),
    "overcast": dict(
        dir=(0.0, 0.0, -1.0),
        diffuse=(0.35, 0.35, 0.37),
        ambient=(0.45, 0.45, 0.47),
        sky=((0.58, 0.60, 0.63), (0.75, 0.76, 0.78)),
        headlight=0.0,
    ),
    "dusk": dict(
        dir=(-1.0, 0.4, -0.25),
        diffuse=(0.65, 0.36, 0.20),
        ambient=(0.20, 0.15, 0.17),
        sky=((0.25, 0.20, 0.40), (0.90, 0.50, 0.30)),
        headlight=0.0,
    ),
    "night": dict(
        dir=(0.2, 0.3, -1.0),
        diffuse=(0.04, 0.04, 0.08),
        ambient=(0.03, 0.03, 0.06),
        sky=((0.01, 0.01, 0.04), (0.05, 0.06, 0.12)),
        headlight=0.55,
    ),
}
TARGET_RGB = (1.0, 0.38, 0.0)


def _rgb(c) -> str:
    return " ".join(f"{x:.3f}" for x in c)


def rover_xml(shift, width: int = 64, height: int = 64) -> str:
    """The MJCF of the rover world under a shift (appearance, dynamics factors); positions set at reset."""
    season, light = SEASONS[shift.season], LIGHTINGS[shift.lighting]
    sky_top, sky_low = np.array(light["sky"][0]), np.array(light["sky"][1])
    fog_rgb = 0.5 * (sky_low + np.array(light["ambient"])) + 0.25
    fog_rgb = np.clip(fog_rgb * (0.15 if shift.lighting == "night" else 1.0), 0, 1)
    if shift.fog > 0:  # the sky fades into the fog too
        sky_top = (1 - shift.fog) * sky_top + shift.fog * fog_rgb
        sky_low = (1 - shift.fog) * sky_low + shift.fog * fog_rgb
    fog_end = fog_end_m(shift.fog)
    m = shift.mass
    fr = shift.friction
    foliage_materials = "\n".join(
        f'<material name="foliage{i}" rgba="{_rgb(c)} 1" specular="0" shininess="0"/>'
        for i, c in enumerate(season["foliage"])
    )
    trees = "\n".join(
        f'''<body name="tree{i}" mocap="true" pos="0 0 -20">
          <geom name="trunk{i}" type="cylinder" size="{TREE_RADII[i]:.4f} {1.0 + 4 * TREE_RADII[i]:.3f}"
                pos="0 0 {1.0 + 4 * TREE_RADII[i]:.3f}" material="trunk" group="1"/>
          <geom name="foliage{i}" type="ellipsoid"
                size="{5 * TREE_RADII[i]:.3f} {5 * TREE_RADII[i]:.3f} {6 * TREE_RADII[i]:.3f}"
                pos="0 0 {2.0 + 14 * TREE_RADII[i]:.3f}" material="foliage{i % 3}"
                contype="0" conaffinity="0"/>
        </body>'''
        for i in range(N_TREES)
    )
    bushes = "\n".join(
        f'''<body name="bush{i}" mocap="true" pos="0 0 -20">
          <geom name="bush{i}" type="ellipsoid"
                size="{BUSH_RADII[i]:.3f} {BUSH_RADII[i]:.3f} {0.75 * BUSH_RADII[i]:.3f}"
                material="bush" group="1"/>
        </body>'''
        for i in range(N_BUSHES)
    )
    return f"""
<mujoco model="liquid_rover">
  <compiler angle="radian"/>
  <statistic extent="1" center="0 0 0.5"/>  <!-- so that znear, zfar and fog distances are in metres -->
  <option timestep="0.005" integrator="implicitfast"/>
  <visual>
    <global offwidth="{max(width, 320)}" offheight="{max(height, 240)}"/>
    <quality shadowsize="0" offsamples="0" numslices="12" numstacks="8" numquads="1"/>
    <headlight ambient="0 0 0" diffuse="{light["headlight"]} {light["headlight"]} {light["headlight"]}"
               specular="0 0 0"/>
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
    <material name="trunk" rgba="{_rgb(season["trunk"])} 1" specular="0"/>
    <material name="bush" rgba="{_rgb(season["bush"])} 1" specular="0"/>
    {foliage_materials}
    <material name="target" rgba="{_rgb(TARGET_RGB)} 1" emission="0.35" specular="0.1"/>
    <material name="rover" rgba="0.2 0.25 0.3 1"/>
    <material name="wheel" rgba="0.05 0.05 0.05 1"/>
  </asset>
  <default>
    <geom friction="{1.0 * fr:.3f} 0.005 0.0001"/>
  </default>
  <worldbody>
    <light name="sun" directional="true" pos="0 0 20" dir="{_rgb(light["dir"])}" diffuse="{_rgb(light["diffuse"])}"
           ambient="{_rgb(light["ambient"])}" specular="0 0 0" castshadow="false"/>
    <geom name="ground" type="plane" size="{ARENA_HALF + 14} {ARENA_HALF + 14} 5" material="ground"/>
    <body name="rover" pos="0 0 {WHEEL_RADIUS:.3f}">
      <freejoint name="root"/>
      <geom name="chassis" type="box" size="0.2 0.11 0.05" pos="0 0 0.04" material="rover" mass="{4.0 * m:.3f}"/>
      <geom name="caster_front" type="sphere" size="0.03" pos="0.16 0 -0.03" priority="1" condim="1"
            mass="{0.05 * m:.3f}" material="wheel"/>
      <geom name="caster_back" type="sphere" size="0.03" pos="-0.16 0 -0.03" priority="1" condim="1"
            mass="{0.05 * m:.3f}" material="wheel"/>
      <site name="imu" pos="0 0 0.05"/>
      <camera name="front" pos="0.21 0 0.12" xyaxes="0 -1 0 0.2 0 1" fovy="{CAMERA_FOVY_DEG:g}"/>
      <body name="wheel_left" pos="0 {WHEEL_BASE / 2} 0">
        <joint name="wheel_left" type="hinge" axis="0 1 0" damping="0.01"/>
        <geom name="wheel_left" type="cylinder" size="{WHEEL_RADIUS} 0.02" zaxis="0 1 0" mass="{0.3 * m:.3f}"
              material="wheel"/>
      </body>
      <body name="wheel_right" pos="0 {-WHEEL_BASE / 2} 0">
        <joint name="wheel_right" type="hinge" axis="0 1 0" damping="0.01"/>
        <geom name="wheel_right" type="cylinder" size="{WHEEL_RADIUS} 0.02" zaxis="0 1 0" mass="{0.3 * m:.3f}"
              material="wheel"/>
      </body>
    </body>
    {trees}
    {bushes}
    <body name="target" mocap="true" pos="5 0 0">
      <geom name="target_pole" type="cylinder" size="0.2 0.7" pos="0 0 0.7" material="target"
            contype="0" conaffinity="0"/>
      <geom name="target_top" type="sphere" size="0.3" pos="0 0 1.55" material="target" contype="0" conaffinity="0"/>
    </body>
  </worldbody>
  <actuator>
    <velocity name="wheel_left" joint="wheel_left" kv="1.5" forcerange="-3 3"/>
    <velocity name="wheel_right" joint="wheel_right" kv="1.5" forcerange="-3 3"/>
  </actuator>
  <sensor>
    <gyro name="gyro" site="imu"/>
    <accelerometer name="accel" site="imu"/>
  </sensor>
</mujoco>
"""


class LiquidRoverEnv(FrontCamera, TimedMujocoWorld):
    """Visual navigation to a target through trees and bushes, with irregular camera and IMU streams."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}  # per instance: update_rate_hz
    sensor_names = ("camera", "imu")
    observation_keys = ("image", "imu")
    default_update_on = ("camera",)
    input_sensors = {"camera": "camera", "imu": "imu"}
    action_kind = "twist"
    default_time_limit = TIME_LIMIT
    chase_view = ("rover", 2.2, -18.0)  # render(): from behind the robot (FrontCamera)

    def __init__(
        self,
        shift=None,
        render_size: int | tuple = 64,
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
            rover_xml(shift, width, height),
            {"camera": ROVER_CAMERA, "imu": ROVER_IMU},
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
                **self._time_spaces(),
            }
        )
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self._root_qpos = m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, "root")]
        self._rover_body = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "rover")
        body = lambda name: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, name)  # noqa: E731
        self._tree_mocap = np.array([m.body_mocapid[body(f"tree{i}")] for i in range(N_TREES)])
        self._bush_mocap = np.array([m.body_mocapid[body(f"bush{i}")] for i in range(N_BUSHES)])
        self._target_mocap = m.body_mocapid[body("target")]
        rover_geoms = [
            i for i in range(m.ngeom) if m.geom_bodyid[i] in (self._rover_body, body("wheel_left"), body("wheel_right"))
        ]
        obstacle_geoms = [i for i in range(m.ngeom) if m.geom_group[i] == 1]
        self._is_rover_geom = np.zeros(m.ngeom, bool)
        self._is_rover_geom[rover_geoms] = True
        self._is_obstacle_geom = np.zeros(m.ngeom, bool)
        self._is_obstacle_geom[obstacle_geoms] = True
        # the same test as a set of geom pairs: checked after every physics step, where numpy's per-call
        # overhead cost more than the physics step itself
        self._collision_pairs = frozenset(
            pair for r in rover_geoms for o in obstacle_geoms for pair in ((r, o), (o, r))
        )
        self._obstacle_geom_ids = frozenset(obstacle_geoms)
        gyro = m.sensor_adr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SENSOR, "gyro")]
        accel = m.sensor_adr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SENSOR, "accel")]
        self._imu_index = np.r_[gyro : gyro + 3, accel : accel + 3]  # gyro then accelerometer in sensordata
        self._imu_noise_std = _IMU_NOISE_STD + shift.imu_noise
        self._init_camera()
        self.obstacles = np.zeros((0, 3))

    # ----- layout -----
    def _reset_world(self, rng):
        yaw = rng.uniform(-np.pi, np.pi)
        bearing = yaw + np.deg2rad(rng.uniform(-35.0, 35.0))
        distance = rng.uniform(3.0, 8.0)
        start = np.zeros(2)
        heading = np.array([np.cos(bearing), np.sin(bearing)])
        target = start + distance * heading
        normal = np.array([-heading[1], heading[0]])
        placed = []  # (x, y, radius)

        def free(p, r, keep_path_clear):
            if np.linalg.norm(p - start) < r + 1.0 or np.linalg.norm(p - target) < r + 1.0:
                return False
            if keep_path_clear:
                s = np.dot(p - start, heading)
                if -1.0 < s < distance + 1.0 and abs(np.dot(p - start, normal)) < r + 1.0:
                    return False
            return all(np.hypot(*(p - q[:2])) > r + q[2] + 0.6 for q in placed)

        # Obstacles come from pools with fixed sizes (geom sizes stay compiled); the order is shuffled.
        pools = {"tree": list(rng.permutation(N_TREES)), "bush": list(rng.permutation(N_BUSHES))}
        positions = {"tree": {}, "bush": {}}

        def place(kind, sample, keep_path_clear, attempts):
            index = pools[kind][-1]
            r = TREE_RADII[index] if kind == "tree" else BUSH_RADII[index]
            for _ in range(attempts):
                p = sample()
                if free(p, r, keep_path_clear):
                    positions[kind][pools[kind].pop()] = p
                    placed.append(np.array([*p, r]))
                    return

        # A handful of obstacles near the straight path (the expert must go around them) ...
        if distance > 3.5:
            for _ in range(rng.integers(1, 4)):
                place(
                    "tree" if rng.uniform() < 0.6 else "bush",
                    lambda: start + heading * rng.uniform(0.35, 0.7) * distance + normal * rng.uniform(-0.7, 0.7),
                    keep_path_clear=False,
                    attempts=20,
                )
        # ... and scenery around, keeping a corridor to the target open.
        for kind in ("tree", "bush"):
            while pools[kind]:
                before = len(pools[kind])
                place(
                    kind,
                    lambda: rng.uniform(-ARENA_HALF, ARENA_HALF, size=2) + 0.5 * target,
                    keep_path_clear=True,
                    attempts=50,
                )
                if len(pools[kind]) == before:
                    break
        d = self.data
        for kind, mocap, z in (("tree", self._tree_mocap, 0.0), ("bush", self._bush_mocap, BUSH_Z)):
            for i, mocap_id in enumerate(mocap):
                p = positions[kind].get(i)
                d.mocap_pos[mocap_id] = (0.0, 0.0, -50.0) if p is None else (p[0], p[1], z)
        d.mocap_pos[self._target_mocap] = (*target, 0.0)
        self.target = target
        self.obstacles = np.array(placed).reshape(-1, 3)
        q = self._root_qpos
        d.qpos[q : q + 3] = (0.0, 0.0, WHEEL_RADIUS)
        d.qpos[q + 3 : q + 7] = (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))
        self._collided = False
        self.frames_rendered = 0  # camera renders this episode (only on camera measurements)
        self._imu_bias = self.shift.imu_bias * rng.choice([-1.0, 1.0], size=6)
        self._previous_distance = distance

    # ----- physics and sensors -----
    def _apply_action(self, action):
        linear, angular = action[0] * MAX_LINEAR, action[1] * MAX_ANGULAR
        gain = self.shift.motor_gain / WHEEL_RADIUS
        self.data.ctrl[:] = (gain * (linear - angular * WHEEL_BASE / 2), gain * (linear + angular * WHEEL_BASE / 2))

    def _after_physics_step(self):
        if self.data.ncon and not self._collided:
            geoms = self.data.contact.geom  # (ncon, 2): the geoms of this step's contacts
            if not self._obstacle_geom_ids.isdisjoint(geoms.flat):  # most steps touch the ground alone
                self._collided = any(tuple(g) in self._collision_pairs for g in geoms.tolist())

    def _measure(self, sensor):
        rng = self._noise_rng
        if sensor == "camera":
            return self._camera_measurement(rng)
        reading = self.data.sensordata[self._imu_index]
        return saturate_imu(reading + self._imu_bias + rng.normal(0.0, 1.0, size=6) * self._imu_noise_std)

    # ----- task -----
    def pose(self):
        """True (x, y) position and yaw of the rover."""
        self._require_reset("pose()")
        q = self.data.qpos[self._root_qpos : self._root_qpos + 7]
        w, x, y, z = q[3:7]
        return q[:2].copy(), float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))

    def _outcome(self):
        position, yaw = self.pose()
        distance = float(np.linalg.norm(self.target - position))
        success = distance < SUCCESS_RADIUS and not self._collided
        reward = (self._previous_distance - distance) + 10.0 * success - 10.0 * self._collided
        self._previous_distance = distance
        info = dict(
            success=bool(success),
            collision=bool(self._collided),
            distance=distance,
            position=position,
            yaw=yaw,
            target=self.target.copy(),
        )
        return reward, bool(success or self._collided), info

    def _observation(self):
        return {
            "image": self._reading("camera", self.image_shape).astype(np.uint8, copy=False),
            "imu": self._reading("imu", 6),
            **self._time_observation(),
        }

    def expert_action(self, margin: float | None = None) -> np.ndarray:
        """The privileged expert's action (pure pursuit + obstacle avoidance) for the current true state;
        ``margin``: the clearance (m) it keeps beyond the rover's radius (None: the training expert's)."""
        self._require_reset("expert_action()")
        position, yaw = self.pose()
        margin = experts.checked_margin(margin)
        return experts.rover_expert(position, yaw, self.target, self.obstacles, ROVER_RADIUS, margin)
