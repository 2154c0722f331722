"""Robot descriptions (URDF) and TF frames of the worlds' robots, generated from their MuJoCo models.

One source: the MJCF of each world (``sim_envs``); the worlds are sim_envs's registrations and each world's robot is
read off its model (``robot_spec``), so a new world needs no table here. ``describe(model, spec)`` walks the
robot's body tree:
the body with the free joint is ``base_link``; each child body is a link, attached by a ``continuous`` joint
named after its MuJoCo hinge (the wheels); the sensors are fixed frames at their MuJoCo mounts: ``imu`` at the
IMU site (REP 145: the frame the gyro and accelerometer measure in), ``camera`` at the MuJoCo camera in body
convention (x forward, y left, z up) and ``camera_optical`` below it in the optical convention (z forward,
x right, y down; REP 103), the frame of the image and its camera_info. Masses and inertias are the model's.

``sim_node`` publishes ``to_urdf(...)`` of its (possibly shifted) world as ``robot_description``, the fixed
joints on ``/tf_static`` and ``odom -> base_link`` plus the wheel joints on ``/tf``. The files under
``urdf/`` are the nominal robots, written by ``python -m liquid_control.ros.robot_description --write urdf``
and checked against this generator by the tests.

MuJoCo is imported only by what reads a model (``robot_spec``, ``describe``, ``nominal_model``, ...): the
rotations, the URDF text and the shipped files need numpy alone, so ``liquid-control view`` and
``python -m liquid_control.ros.robot_description`` (which prints the shipped URDF where the simulator is not
installed) run on a robot installed without it.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from xml.sax.saxutils import quoteattr

import numpy as np

if TYPE_CHECKING:
    import mujoco

# body convention (x forward, y left, z up) of a camera link, in MuJoCo camera axes (x right, y up, z backward)
_CAMERA_LINK_IN_MUJOCO_CAMERA = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, 1.0], [-1.0, 0.0, 0.0]])
# optical convention (x right, y down, z forward) in body-convention camera axes: rpy (-pi/2, 0, -pi/2)
_OPTICAL_IN_CAMERA_LINK = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


@dataclass(frozen=True)
class RobotSpec:
    """Which parts of a world's MJCF are the robot and its sensors."""

    name: str  # URDF robot name
    root_body: str  # the MuJoCo body with the free joint -> base_link
    imu_site: str | None = None  # MuJoCo site of the gyro/accelerometer -> imu
    camera: str | None = None  # MuJoCo camera -> camera (+ camera_optical)


@dataclass
class Visual:
    """A primitive shape of a link: type box/sphere/cylinder, URDF size, pose in the link, colour."""

    shape: str
    size: tuple[float, ...]
    xyz: np.ndarray
    rotation: np.ndarray  # 3x3
    rgba: tuple[float, ...]
    collides: bool


@dataclass
class Link:
    """A URDF link: mass, centre of mass and principal inertia of its MuJoCo body (zero for sensor frames)."""

    name: str
    mass: float = 0.0
    com: np.ndarray = field(default_factory=lambda: np.zeros(3))
    inertia_rotation: np.ndarray = field(default_factory=lambda: np.eye(3))  # principal axes in the link
    principal_inertia: np.ndarray = field(default_factory=lambda: np.zeros(3))
    visuals: list[Visual] = field(default_factory=list)


@dataclass
class Joint:
    """A URDF joint: child pose in the parent link at zero position; ``qpos_adr`` for continuous joints."""

    name: str
    kind: str  # "fixed" or "continuous"
    parent: str
    child: str
    xyz: np.ndarray
    rotation: np.ndarray  # 3x3
    axis: np.ndarray | None = None
    qpos_adr: int | None = None


@dataclass
class Robot:
    """A world's robot as URDF sees it: ``base_link`` first, then its child links and the sensor frames."""

    name: str
    links: list[Link]
    joints: list[Joint]

    def fixed_joints(self) -> list[Joint]:
        """The joints that never move (the sensor mounts): published once on /tf_static."""
        return [j for j in self.joints if j.kind == "fixed"]

    def moving_joints(self) -> list[Joint]:
        """The joints with a position (the wheels): published on /tf with each odometry message."""
        return [j for j in self.joints if j.kind != "fixed"]


def robot_spec(world: str, model: mujoco.MjModel) -> RobotSpec:
    """The robot of a world, read off its model: the body with the free joint, its ``imu`` site and the first
    camera mounted on the robot; named after the world (``robot_name``)."""
    import mujoco

    free = [model.jnt_bodyid[j] for j in range(model.njnt) if model.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE]
    if len(free) != 1:
        raise ValueError(f"world {world}: no single free-joint body to describe as the robot (found {len(free)})")
    root = int(free[0])
    on_robot = {root}
    for b in range(model.nbody):
        if model.body_parentid[b] in on_robot:
            on_robot.add(b)
    site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "imu")
    cameras = [c for c in range(model.ncam) if model.cam_bodyid[c] in on_robot]
    return RobotSpec(
        name=robot_name(world),
        root_body=_name(model, mujoco.mjtObj.mjOBJ_BODY, root),
        imu_site="imu" if site >= 0 and model.site_bodyid[site] in on_robot else None,
        camera=_name(model, mujoco.mjtObj.mjOBJ_CAMERA, cameras[0]) if cameras else None,
    )


def robot_name(world: str) -> str:
    """The URDF robot name of a world's robot: the world's name in snake case (``LiquidRover-v0`` ->
    ``liquid_rover``)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", world.split("-")[0]).lower()


def quat_to_matrix(quat_wxyz) -> np.ndarray:
    """3x3 rotation matrix of a unit quaternion (w, x, y, z), MuJoCo's order; numpy only (a robot without MuJoCo
    turns TF's quaternions into matrices with it: ``liquid-control view``)."""
    w, x, y, z = (float(v) for v in np.asarray(quat_wxyz, dtype=np.float64).reshape(4))
    return np.array(
        [
            [w * w + x * x - y * y - z * z, 2.0 * (x * y - w * z), 2.0 * (x * z + w * y)],
            [2.0 * (x * y + w * z), w * w - x * x + y * y - z * z, 2.0 * (y * z - w * x)],
            [2.0 * (x * z - w * y), 2.0 * (y * z + w * x), w * w - x * x - y * y + z * z],
        ]
    )


def matrix_to_quat(rotation: np.ndarray) -> np.ndarray:
    """(w, x, y, z) of a rotation matrix."""
    import mujoco

    out = np.empty(4)
    mujoco.mju_mat2Quat(out, np.ascontiguousarray(rotation, dtype=np.float64).reshape(9))
    return out


def matrix_to_rpy(rotation: np.ndarray) -> tuple[float, float, float]:
    """URDF roll, pitch, yaw (fixed axes X, Y, Z: R = Rz(yaw) Ry(pitch) Rx(roll))."""
    r = rotation
    pitch = math.atan2(-r[2, 0], math.hypot(r[2, 1], r[2, 2]))
    if math.cos(pitch) < 1e-9:  # gimbal lock: put everything in yaw
        return 0.0, pitch, math.atan2(-r[0, 1], r[1, 1])
    return math.atan2(r[2, 1], r[2, 2]), pitch, math.atan2(r[1, 0], r[0, 0])


def rpy_to_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """URDF roll, pitch, yaw -> rotation matrix Rz(yaw) Ry(pitch) Rx(roll)."""
    cr, sr, cp, sp, cy, sy = (
        math.cos(roll),
        math.sin(roll),
        math.cos(pitch),
        math.sin(pitch),
        math.cos(yaw),
        math.sin(yaw),
    )
    rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cr, -sr], [0.0, sr, cr]])
    return rz @ ry @ rx


def _geom_visual(model, g: int) -> Visual | None:
    import mujoco

    kind, size = model.geom_type[g], model.geom_size[g]
    if kind == mujoco.mjtGeom.mjGEOM_BOX:
        shape, dims = "box", tuple(2.0 * size)
    elif kind == mujoco.mjtGeom.mjGEOM_SPHERE:
        shape, dims = "sphere", (size[0],)
    elif kind == mujoco.mjtGeom.mjGEOM_CYLINDER:
        shape, dims = "cylinder", (size[0], 2.0 * size[1])
    else:
        return None  # no URDF primitive (ellipsoid, capsule, mesh): not used by the robots
    mat = model.geom_matid[g]
    rgba = tuple(float(c) for c in (model.mat_rgba[mat] if mat >= 0 else model.geom_rgba[g]))
    collides = bool(model.geom_contype[g] or model.geom_conaffinity[g])
    return Visual(
        shape,
        tuple(float(d) for d in dims),
        model.geom_pos[g].copy(),
        quat_to_matrix(model.geom_quat[g]),
        rgba,
        collides,
    )


def _name(model, kind, index: int) -> str:
    import mujoco

    return mujoco.mj_id2name(model, kind, index) or ""


def describe(model: mujoco.MjModel, spec: RobotSpec) -> Robot:
    """The robot of ``model`` (links, joints) as ``spec`` names it; raises ValueError if the model has no such robot."""
    import mujoco

    root = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, spec.root_body)
    if root < 0:
        raise ValueError(f"robot {spec.name}: the model has no body {spec.root_body!r}")
    if model.body_jntnum[root] != 1 or model.jnt_type[model.body_jntadr[root]] != mujoco.mjtJoint.mjJNT_FREE:
        raise ValueError(f"robot {spec.name}: body {spec.root_body!r} must have exactly one free joint")
    link_names = {root: "base_link"}
    links, joints = [], []
    for b in range(model.nbody):  # bodies are stored parents first
        if b != root and model.body_parentid[b] in link_names:
            link_names[b] = _name(model, mujoco.mjtObj.mjOBJ_BODY, b)
        if b not in link_names:
            continue
        link = Link(
            link_names[b],
            mass=float(model.body_mass[b]),
            com=model.body_ipos[b].copy(),
            inertia_rotation=quat_to_matrix(model.body_iquat[b]),
            principal_inertia=model.body_inertia[b].copy(),
        )
        for g in range(model.body_geomadr[b], model.body_geomadr[b] + model.body_geomnum[b]):
            visual = _geom_visual(model, g)
            if visual is not None:
                link.visuals.append(visual)
        links.append(link)
        if b == root:
            continue
        parent = link_names[model.body_parentid[b]]
        xyz, rotation = model.body_pos[b].copy(), quat_to_matrix(model.body_quat[b])
        if model.body_jntnum[b] == 0:
            joints.append(Joint(f"{parent}_to_{link.name}", "fixed", parent, link.name, xyz, rotation))
            continue
        j = model.body_jntadr[b]
        if model.body_jntnum[b] != 1 or model.jnt_type[j] != mujoco.mjtJoint.mjJNT_HINGE:
            raise ValueError(f"robot {spec.name}: body {link.name!r} needs one hinge joint (or none) for URDF")
        if np.linalg.norm(model.jnt_pos[j]) > 1e-9:
            raise ValueError(f"robot {spec.name}: hinge of {link.name!r} must sit at the body origin")
        name = _name(model, mujoco.mjtObj.mjOBJ_JOINT, j)
        joints.append(
            Joint(
                name,
                "continuous",
                parent,
                link.name,
                xyz,
                rotation,
                model.jnt_axis[j].copy(),
                int(model.jnt_qposadr[j]),
            )
        )
    if spec.imu_site is not None:
        s = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, spec.imu_site)
        if s < 0 or model.site_bodyid[s] not in link_names:
            raise ValueError(f"robot {spec.name}: no site {spec.imu_site!r} on the robot")
        links.append(Link("imu"))
        joints.append(
            Joint(
                "imu_joint",
                "fixed",
                link_names[model.site_bodyid[s]],
                "imu",
                model.site_pos[s].copy(),
                quat_to_matrix(model.site_quat[s]),
            )
        )
    if spec.camera is not None:
        c = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, spec.camera)
        if c < 0 or model.cam_bodyid[c] not in link_names:
            raise ValueError(f"robot {spec.name}: no camera {spec.camera!r} on the robot")
        camera_rotation = quat_to_matrix(model.cam_quat[c]) @ _CAMERA_LINK_IN_MUJOCO_CAMERA
        links += [Link("camera"), Link("camera_optical")]
        joints += [
            Joint(
                "camera_joint",
                "fixed",
                link_names[model.cam_bodyid[c]],
                "camera",
                model.cam_pos[c].copy(),
                camera_rotation,
            ),
            Joint("camera_optical_joint", "fixed", "camera", "camera_optical", np.zeros(3), _OPTICAL_IN_CAMERA_LINK),
        ]
    return Robot(spec.name, links, joints)


def camera_fovy_deg(model: mujoco.MjModel, spec: RobotSpec) -> float:
    """Vertical field of view of the robot's camera in the model."""
    import mujoco

    return float(model.cam_fovy[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, spec.camera)])


def joint_transform(joint: Joint, qpos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(xyz, quaternion wxyz) of the child in the parent at the joint position read from ``qpos``."""
    import mujoco

    rotation = joint.rotation
    if joint.kind == "continuous":
        angle = float(qpos[joint.qpos_adr])
        turn = np.empty(4)
        mujoco.mju_axisAngle2Quat(turn, joint.axis, angle)
        rotation = rotation @ quat_to_matrix(turn)
    return joint.xyz, matrix_to_quat(rotation)


# ------------------------------------------------------------------------------------------------ URDF text
def _f(x: float) -> str:
    x = float(x)
    return "0" if abs(x) < 1e-12 else f"{x:.9g}"


def _origin(xyz, rotation) -> str:
    rpy = matrix_to_rpy(rotation)
    return f'<origin xyz="{" ".join(_f(v) for v in xyz)}" rpy="{" ".join(_f(v) for v in rpy)}"/>'


def _geometry(v: Visual) -> str:
    if v.shape == "box":
        return f'<box size="{" ".join(_f(s) for s in v.size)}"/>'
    if v.shape == "sphere":
        return f'<sphere radius="{_f(v.size[0])}"/>'
    return f'<cylinder radius="{_f(v.size[0])}" length="{_f(v.size[1])}"/>'


def to_urdf(robot: Robot, frame_prefix: str = "", source: str = "") -> str:
    """URDF text of ``robot``; link names get ``frame_prefix`` (as the TF frames sim_node publishes)."""
    p = frame_prefix
    out = ['<?xml version="1.0"?>']
    if source:
        out.append(f"<!-- generated by liquid_control.ros.robot_description from {source}; do not edit -->")
    out.append(f"<robot name={quoteattr(robot.name)}>")
    for link in robot.links:
        if link.mass <= 0 and not link.visuals:
            out.append(f"  <link name={quoteattr(p + link.name)}/>")
            continue
        out.append(f"  <link name={quoteattr(p + link.name)}>")
        if link.mass > 0:
            i = link.principal_inertia
            out += [
                "    <inertial>",
                f"      {_origin(link.com, link.inertia_rotation)}",
                f'      <mass value="{_f(link.mass)}"/>',
                f'      <inertia ixx="{_f(i[0])}" ixy="0" ixz="0" iyy="{_f(i[1])}" iyz="0" izz="{_f(i[2])}"/>',
                "    </inertial>",
            ]
        for index, v in enumerate(link.visuals):
            colour = " ".join(_f(c) for c in v.rgba)
            out += [
                "    <visual>",
                f"      {_origin(v.xyz, v.rotation)}",
                f"      <geometry>{_geometry(v)}</geometry>",
                f'      <material name="{link.name}_{index}"><color rgba="{colour}"/></material>',
                "    </visual>",
            ]
            if v.collides:
                out += [
                    "    <collision>",
                    f"      {_origin(v.xyz, v.rotation)}",
                    f"      <geometry>{_geometry(v)}</geometry>",
                    "    </collision>",
                ]
        out.append("  </link>")
    for joint in robot.joints:
        out += [
            f"  <joint name={quoteattr(joint.name)} type={quoteattr(joint.kind)}>",
            f"    <parent link={quoteattr(p + joint.parent)}/>",
            f"    <child link={quoteattr(p + joint.child)}/>",
            f"    {_origin(joint.xyz, joint.rotation)}",
        ]
        if joint.axis is not None:
            out.append(f'    <axis xyz="{" ".join(_f(a) for a in joint.axis)}"/>')
        out.append("  </joint>")
    out.append("</robot>")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------------ nominal files
def world_ids() -> list[str]:
    """The worlds of sim_envs (the ones it registers with gymnasium), each with a robot; known without gymnasium."""
    from sim_envs import WORLDS

    return sorted(WORLDS)


def nominal_model(world: str) -> mujoco.MjModel:
    """The compiled MJCF of ``world`` without a shift (the robot as built): the model of the world made with its
    defaults, as sim_node makes it."""
    import gymnasium

    if world not in world_ids():
        raise ValueError(f"no robot description for world {world!r}; choose from {', '.join(world_ids())}")
    env = gymnasium.make(world).unwrapped
    try:
        return env.model
    finally:
        env.close()


def nominal_urdf(world: str) -> str:
    """The URDF of ``world``'s nominal robot, as shipped under urdf/."""
    model = nominal_model(world)
    return to_urdf(describe(model, robot_spec(world, model)), source=f"the MJCF of {world} (sim_envs)")


def urdf_file_name(world: str) -> str:
    """The file under urdf/ of ``world``'s robot: ``<robot name>.urdf``."""
    return f"{robot_name(world)}.urdf"


def shipped_urdf(world: str) -> str:
    """The URDF of ``world``'s nominal robot as shipped (share/liquid_control/urdf, written by ``--write urdf``
    and kept equal to ``nominal_urdf`` by the tests): the robot description without the simulator."""
    from liquid_control.paths import share_dir

    return (share_dir() / "urdf" / urdf_file_name(world)).read_text(encoding="utf-8")


def simulator_missing() -> str | None:
    """The package of the simulator (gymnasium, MuJoCo) that is not installed here, or None: the generator needs
    both, the shipped URDFs neither."""
    import importlib

    for package in ("mujoco", "gymnasium"):
        try:
            importlib.import_module(package)
        except ModuleNotFoundError as exc:
            if exc.name != package:
                raise
            return package
    return None


def main(argv: list[str] | None = None) -> int:
    """Print the nominal URDFs, or write them (``--write urdf`` refreshes the shipped files). Without the
    simulator (a robot's install) it prints the shipped files, the same text; ``--write`` says what it needs."""
    parser = argparse.ArgumentParser(
        prog="python -m liquid_control.ros.robot_description",
        description="Print or write the URDF of each world's robot, generated from its MuJoCo model "
        "(without MuJoCo installed: printed from the shipped share/liquid_control/urdf files, the same text).",
    )
    parser.add_argument("--world", choices=world_ids(), default=None, help="one world (default: all)")
    parser.add_argument(
        "--write", metavar="DIR", default="", help="write <robot>.urdf files into DIR instead of printing"
    )
    args = parser.parse_args(argv)
    if args.write:  # checked before any file is written: one line, not a FileExistsError/NotADirectoryError
        folder = Path(args.write)
        existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            where = "is a file" if existing == folder else f"is under {existing}, a file"
            parser.exit(2, f"{parser.prog}: error: --write {args.write}: {where}; give a folder\n")
    missing = simulator_missing()
    if missing and args.write:
        from liquid_control.ros.entry import needs_package

        parser.exit(
            1,
            f"{needs_package(f'{parser.prog} --write', missing)}: it generates the URDFs from the "
            "worlds' MuJoCo models; without it, print the shipped ones (leave out --write)\n",
        )
    for world in [args.world] if args.world else world_ids():
        text = nominal_urdf(world) if missing is None else shipped_urdf(world)
        if args.write:
            from liquid_control.atomic_file import atomic_write

            path = Path(args.write) / urdf_file_name(world)
            try:
                with atomic_write(path, "w", encoding="utf-8") as handle:  # never a half-written shipped URDF
                    handle.write(text)
            except OSError as exc:
                parser.exit(2, f"{parser.prog}: error: --write {args.write}: cannot write {path}: {exc.strerror}\n")
            print(f"wrote {path}")
        else:
            sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    from liquid_control.processes import exit_status_of

    sys.exit(exit_status_of("robot_description", main))  # `... | head`: 141, as liquid-control, not a traceback
