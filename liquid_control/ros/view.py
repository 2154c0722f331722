"""`liquid-control view`: watch a running graph (the simulation or a robot) live in Foxglove, or as a picture.

Subscribes over DDS to the robot's topics (``robot_description``, ``/tf``, ``/tf_static``, camera image and
camera_info, IMU, odometry, commands, episode status) as serialized messages. A robot in a namespace
(``--namespace``: the relative topics below resolve in it) with prefixed frames (sim_node's ``frame_prefix``,
read off the root link of ``robot_description`` unless ``--frame-prefix`` is given) is followed as well.

- ``--foxglove``: relays them unchanged (CDR, with their ros2msg schemas) through a Foxglove WebSocket server
  (``foxglove-sdk``, optional: ``pip install foxglove-sdk==0.30.3``). Open Foxglove and connect to
  ``ws://localhost:8765``: the 3D panel shows the robot from ``robot_description`` placed by TF, the Image panel
  the camera, the Plot panel the commands. With a ROS installation, ``foxglove_bridge`` or RViz do the same.
- ``--snapshot PATH``: renders a picture of the same topics with matplotlib (no viewer needed): the robot's URDF
  shapes placed by TF on its path in ``odom``, the sensor frames, the camera's field of view from camera_info,
  the latest image and the commands over time. An existing file is refused at the start, never overwritten (one
  made under the name during the watch neither: the picture then goes to NAME-2.png, said on stderr).

``cmd_vel`` is subscribed as ``--command-type`` says (Twist by default); one of another type in the graph is said,
naming the option, as no message of it can arrive.

It stops after ``--duration`` seconds, with ``--until-episode-end`` at the first episode that ends after it started
(a latched status of an earlier episode, replayed at connect, does not count), or on Ctrl-C.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import signal
import sys
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from liquid_control.conventions import stamps
from liquid_control.conventions.params import COMMAND_TYPES as NODE_COMMAND_TYPES
from liquid_control.conventions.params import discovery_problem, domain_id_problem, frame_prefix_problem
from liquid_control.json_text import load_json
from liquid_control.paths import output_file_problem, user_path
from liquid_control.ros.entry import unwritable_log_dir
from liquid_control.ros.executable import named_counts
from liquid_control.ros.robot_description import quat_to_matrix, rpy_to_matrix
from liquid_control.shown import shown

# topic -> (ROS type, QoS kind): what sim_node and policy_node publish (both worlds), by their default names;
# relative names resolve in the viewer's namespace (--namespace)
TOPICS = {
    "robot_description": ("std_msgs/msg/String", "latched"),
    "/tf": ("tf2_msgs/msg/TFMessage", "reliable"),
    "/tf_static": ("tf2_msgs/msg/TFMessage", "latched"),
    "camera/image_raw": ("sensor_msgs/msg/Image", "sensor"),
    "camera/camera_info": ("sensor_msgs/msg/CameraInfo", "sensor"),
    "imu/data": ("sensor_msgs/msg/Imu", "sensor"),
    "joint_states": ("sensor_msgs/msg/JointState", "sensor"),
    "odom": ("nav_msgs/msg/Odometry", "reliable"),
    "cmd_vel": ("geometry_msgs/msg/Twist", "reliable"),
    "wheel_torques": ("std_msgs/msg/Float64MultiArray", "reliable"),
    "target_velocity": ("geometry_msgs/msg/Twist", "reliable"),
    "episode_status": ("std_msgs/msg/String", "latched"),
}
COMMAND_TYPES = tuple(t for t in NODE_COMMAND_TYPES if t.startswith("twist"))  # policy_node's types of cmd_vel
TF_TOPICS = ("/tf", "/tf_static")
COMMAND_TYPE_CHECK_S = 1.0  # how often the graph is looked at for cmd_vel of another type, until one is said


def topics_for(command_type: str = "twist", with_tf: bool = True) -> dict:
    """TOPICS with cmd_vel of the type policy_node publishes (its ``command_type``): a subscription of another
    type never connects, and the command panel stays empty. ``with_tf`` False: without TF_TOPICS (no tf2_msgs)."""
    topics = {topic: kind for topic, kind in TOPICS.items() if with_tf or topic not in TF_TOPICS}
    if command_type == "twist_stamped":
        topics["cmd_vel"] = ("geometry_msgs/msg/TwistStamped", "reliable")
    return topics


def command_type_fix(others) -> str:
    """The option that subscribes to one of the ROS types ``others`` of cmd_vel (``--command-type twist_stamped``),
    or "" where none of them is one view draws."""
    options = {topics_for(t, with_tf=False)["cmd_vel"][0]: t for t in COMMAND_TYPES}
    fits = [options[t] for t in others if t in options]
    return f"--command-type {fits[0]}" if fits else ""


def command_type_note(topic: str, others, command_type: str) -> str:
    """What to say where ``topic`` (cmd_vel as resolved) carries the ROS types ``others`` in the graph, none of them
    the one ``--command-type command_type`` subscribes to: DDS never connects the two, so no command arrives."""
    wanted = topics_for(command_type, with_tf=False)["cmd_vel"][0]
    fix = command_type_fix(others)
    return (
        f"{topic} is {', '.join(others)} in the graph, and --command-type {command_type} subscribes to {wanted}: "
        f"no command of it arrives; "
        + (f"give {fix}" if fix else f"view draws cmd_vel as --command-type {' or '.join(COMMAND_TYPES)} only")
    )


def tf_missing() -> str | None:
    """Why /tf and /tf_static cannot be relayed here (tf2_msgs not installed: a robot's pip install has no build of
    it), with how to add them; None when tf2_msgs imports. A copy that is found but fails to import raises, to be
    said as any package the command needs."""
    from liquid_control.ros.entry import install_hint

    try:
        importlib.import_module("tf2_msgs.msg")
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != "tf2_msgs":
            raise
        return (
            "/tf and /tf_static are not relayed (the robot is not placed): the Python package 'tf2_msgs' is not "
            f"installed here; {install_hint('tf2_msgs')}"
        )
    return None


def message_class(type_name: str):
    """``pkg/msg/Type`` -> the rclpy message class."""
    package, _, name = type_name.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


def ros2msg_schema(type_name: str) -> str:
    """The ``ros2msg`` schema text of a type with its dependencies, as rosbag2 writes it into MCAP."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED).generate_msgdef(type_name, ros_version=2)[0]


def _qos(kind: str):
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    if kind == "sensor":
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
    durability = DurabilityPolicy.TRANSIENT_LOCAL if kind == "latched" else DurabilityPolicy.VOLATILE
    return QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=durability)


# ------------------------------------------------------------------------------------------ what the picture needs
def _transform_matrix(t) -> np.ndarray:
    m = np.eye(4)
    r, p = t.rotation, t.translation
    m[:3, :3] = quat_to_matrix([r.w, r.x, r.y, r.z])
    m[:3, 3] = (p.x, p.y, p.z)
    return m


def urdf_root_link(description: str) -> str:
    """The root link of a URDF: the one link that is no joint's child ("" when there is none or it is no XML)."""
    try:
        robot = ET.fromstring(description)
    except ET.ParseError:
        return ""
    children = {child.get("link") for child in robot.iterfind("joint/child")}
    roots = [link.get("name") for link in robot.iter("link") if link.get("name") not in children]
    return roots[0] if len(roots) == 1 else ""


@dataclass
class Recording:
    """The latest state of the topics a picture shows (decoded from the relayed messages).

    Frames are sim_node's names with ``frame_prefix`` in front; None: read off robot_description, whose root link
    is ``<prefix>base_link``."""

    frame_prefix: str | None = None
    description: str = ""
    transforms: dict = field(default_factory=dict)  # child -> (parent, 4x4) from /tf and /tf_static
    paths: dict = field(default_factory=dict)  # (parent, child) -> [(x, y)] of each */odom -> * transform on /tf
    image: object = None  # latest sensor_msgs/Image
    camera_info: object = None
    commands: list = field(default_factory=list)  # (seconds since start, linear, angular)
    torques: list = field(default_factory=list)  # (seconds since start, left, right): the balancers' commands
    counts: dict = field(default_factory=dict)
    non_finite: int = 0  # transforms left out: a nan or inf in their translation or rotation
    first_non_finite: str = ""  # "<topic> <parent> -> <child>" of the first of them (for the one warning)
    command_type_note: str = ""  # cmd_vel of another type than subscribed: "<Type> in the graph: --command-type X"

    def frame(self, name: str) -> str:
        """The frame id of one of sim_node's frames (``odom``, ``base_link``, ``camera_optical``, ...)."""
        prefix = self.frame_prefix
        if prefix is None:
            root = urdf_root_link(self.description) if self.description else ""
            prefix = root.removesuffix("base_link") if root.endswith("base_link") else ""
        return prefix + name

    def path(self) -> list:
        """(x, y) of ``odom -> base_link`` over time."""
        return self.paths.get((self.frame("odom"), self.frame("base_link")), [])

    def add(self, topic: str, msg, t: float):
        """Take in one message of ``topic`` received ``t`` seconds after the viewer started."""
        self.counts[topic] = self.counts.get(topic, 0) + 1
        if topic == "robot_description":
            self.description = msg.data
        elif topic in ("/tf", "/tf_static"):
            for ts in msg.transforms:
                parent, child = ts.header.frame_id, ts.child_frame_id
                matrix = _transform_matrix(ts.transform)
                if not np.all(np.isfinite(matrix)):  # a nan pose would take the picture's axis limits with it
                    self.first_non_finite = self.first_non_finite or f"{topic} {parent} -> {child}"
                    self.non_finite += 1
                    continue
                self.transforms[child] = (parent, matrix)
                if topic == "/tf" and parent.endswith("odom"):
                    xy = (ts.transform.translation.x, ts.transform.translation.y)
                    self.paths.setdefault((parent, child), []).append(xy)
        elif topic == "camera/image_raw":
            self.image = msg
        elif topic == "camera/camera_info":
            self.camera_info = msg
        elif topic == "cmd_vel":
            twist = getattr(msg, "twist", msg)  # a TwistStamped carries its Twist inside
            self.commands.append((t, twist.linear.x, twist.angular.z))
        elif topic == "wheel_torques" and len(msg.data) >= 2:
            self.torques.append((t, msg.data[0], msg.data[1]))

    def pose(self, frame: str, root: str) -> np.ndarray | None:
        """4x4 pose of ``frame`` in ``root`` through the TF tree (None if not connected)."""
        m = np.eye(4)
        for _ in range(32):
            if frame == root:
                return m
            if frame not in self.transforms:
                return None
            parent, t = self.transforms[frame]
            m, frame = t @ m, parent
        return None


_SHAPE_SIZES = {"box": ("size", 3), "cylinder": ("radius", 1, "length", 1), "sphere": ("radius", 1)}


def _shape_size(geometry) -> tuple:
    """The size of a URDF box (3 values), cylinder (radius, length) or sphere (radius); ValueError saying what
    is wrong with it."""
    spec = _SHAPE_SIZES[geometry.tag]
    size = []
    for attribute, count in zip(spec[::2], spec[1::2]):
        text = geometry.get(attribute)
        if text is None:
            raise ValueError(f"{geometry.tag} has no {attribute}")
        try:
            values = [float(v) for v in text.split()]
        except ValueError:
            values = []
        if len(values) != count or not all(math.isfinite(v) and v >= 0 for v in values):
            want = "3 sizes" if count == 3 else "one length"
            raise ValueError(f"{geometry.tag} {attribute}={text!r} is not {want} (finite, >= 0 m)")
        size += values
    return tuple(size)


def _urdf_shapes(description: str, problems: list | None = None) -> list[tuple[str, str, np.ndarray, tuple, tuple]]:
    """(link, shape, 4x4 origin in the link, size, rgba) of each URDF visual drawn as a box, cylinder or sphere
    (a robot's meshes are left out; a primitive that does not parse too, with a sentence naming its link appended
    to ``problems``)."""
    shapes = []
    try:
        robot = ET.fromstring(description)
    except ET.ParseError:
        return shapes
    for link in robot.iter("link"):
        for visual in link.iter("visual"):
            geometry = visual.find("geometry/*")
            if geometry is None or geometry.tag not in ("box", "cylinder", "sphere"):
                continue
            try:
                origin = visual.find("origin")
                m = np.eye(4)
                for name in ("xyz", "rpy"):
                    text = origin.get(name, "0 0 0") if origin is not None else "0 0 0"
                    try:
                        values = [float(v) for v in text.split()]
                    except ValueError:
                        values = []
                    if len(values) != 3 or not all(math.isfinite(v) for v in values):
                        raise ValueError(f"origin {name}={text!r} is not 3 finite numbers")
                    if name == "xyz":
                        m[:3, 3] = values
                    else:
                        m[:3, :3] = rpy_to_matrix(*values)
                size = _shape_size(geometry)
                color = visual.find("material/color")
                rgba = (0.5, 0.5, 0.5, 1.0)
                if color is not None:
                    try:
                        rgba = tuple(float(v) for v in color.get("rgba", "").split())
                    except ValueError:
                        rgba = ()
                    if len(rgba) != 4 or not all(0 <= v <= 1 for v in rgba):
                        raise ValueError(f"material color rgba={color.get('rgba')!r} is not 4 values in [0, 1]")
            except ValueError as exc:  # a missing or malformed attribute: that shape is left out, said once
                if problems is not None:
                    problems.append(
                        f"robot_description link {link.get('name')!r}: {exc}; its {geometry.tag} is not drawn"
                    )
                continue
            shapes.append((link.get("name"), geometry.tag, m, size, rgba))
    return shapes


def _shape_points(shape: str, size: tuple) -> np.ndarray:
    """Surface points of a primitive in its own frame (for its top-down outline)."""
    if shape == "box":
        return np.array(
            [
                [sx * size[0], sy * size[1], sz * size[2]]
                for sx in (-0.5, 0.5)
                for sy in (-0.5, 0.5)
                for sz in (-0.5, 0.5)
            ]
        )
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    if shape == "sphere":
        r = size[0]
        return np.array([[r * math.cos(a), r * math.sin(a), 0.0] for a in angles])
    r, length = size
    return np.array([[r * math.cos(a), r * math.sin(a), z] for a in angles for z in (-length / 2, length / 2)])


def _cross(a, b) -> float:
    """The z component of the cross product of two 2-D vectors."""
    return a[0] * b[1] - a[1] * b[0]


def _hull(points: np.ndarray) -> np.ndarray:
    """Convex hull of 2-D points (monotone chain), counter-clockwise."""
    pts = sorted(map(tuple, np.round(points, 9)))
    if len(pts) < 3:
        return np.array(pts)

    def half(seq):
        out = []
        for p in seq:
            while len(out) >= 2 and _cross(np.subtract(out[-1], out[-2]), np.subtract(p, out[-2])) <= 0:
                out.pop()
            out.append(p)
        return out[:-1]

    return np.array(half(pts) + half(pts[::-1]))


def render_snapshot(rec: Recording, path: str | Path, title: str = "", replace: bool = True) -> Path:
    """A picture of the recorded topics: path + robot in odom, robot close-up with frames, camera, commands;
    ``replace=False``: FileExistsError where a file has the name by then."""
    from matplotlib.patches import Polygon

    from liquid_control.conventions.image_conversion import ImageConversionError, image_to_numpy
    from liquid_control.figures import pyplot, save_figure

    plt = pyplot()

    fig = plt.figure(figsize=(13, 4.6))
    grid = fig.add_gridspec(2, 3, width_ratios=[1.25, 1.0, 1.0], height_ratios=[1.0, 1.0])
    ax_map, ax_robot = fig.add_subplot(grid[:, 0]), fig.add_subplot(grid[:, 1])
    ax_image, ax_cmd = fig.add_subplot(grid[0, 2]), fig.add_subplot(grid[1, 2])
    odom = rec.frame("odom")
    base = rec.pose(rec.frame("base_link"), odom)
    problems = []
    shapes = _urdf_shapes(rec.description, problems) if rec.description else []
    if rec.non_finite:
        problems.append(
            f"{rec.non_finite} transform(s) with a non-finite pose (nan or inf) left out of the picture, "
            f"the first {rec.first_non_finite}"
        )
    half_fov = None  # radians; an uncalibrated camera (K all zero, as ROS leaves it) has none to draw
    camera_frame = rec.frame("camera_optical")  # sim_node's; a robot's camera says its own in camera_info
    if rec.camera_info is not None:
        camera_frame = rec.camera_info.header.frame_id or camera_frame  # the frame K is in (e.g. front_optical)
        fx, width = float(rec.camera_info.k[0]), rec.camera_info.width
        if math.isfinite(fx) and fx > 0 and width > 0:
            half_fov = math.atan(width / 2 / fx)
        else:
            problems.append(
                f"camera/camera_info is not calibrated (K[0] = fx = {fx}, width {width}): "
                "the camera's field of view is left out of the picture"
            )
        if half_fov is not None and base is not None and rec.pose(camera_frame, odom) is None:
            problems.append(
                f"camera/camera_info's frame {camera_frame!r} is not connected to {odom} by /tf or /tf_static: "
                "the camera's field of view is left out of the picture"
            )
    for problem in problems:
        print(f"liquid-control view: warning: {problem}", file=sys.stderr)

    def draw_robot(ax, alpha=1.0):
        for link, shape, origin, size, rgba in shapes:
            pose = rec.pose(link, odom)
            if pose is None:
                continue
            pts = (pose @ origin @ np.c_[_shape_points(shape, size), np.ones(len(_shape_points(shape, size)))].T).T
            ax.add_patch(Polygon(_hull(pts[:, :2]), closed=True, fc=rgba[:3], ec="k", lw=0.5, alpha=alpha, zorder=3))

    def draw_fov(ax, reach):
        optical = rec.pose(camera_frame, odom)
        if optical is None or half_fov is None:
            return
        origin = optical[:3, 3]
        for s in (-1, 1):
            ray = optical[:3, :3] @ np.array([s * math.tan(half_fov), 0.0, 1.0])
            ray = ray[:2] / np.linalg.norm(ray[:2])
            ax.plot(*zip(origin[:2], origin[:2] + reach * ray), color="tab:orange", lw=1, zorder=2)
        ax.plot([], [], color="tab:orange", lw=1, label=f"camera field of view ({math.degrees(2 * half_fov):.0f} deg)")

    # 1. odom frame: path, robot, camera field of view
    if rec.path():
        xy = np.array(rec.path())
        ax_map.plot(xy[:, 0], xy[:, 1], color="tab:blue", lw=1.5, label=f"{odom} -> {rec.frame('base_link')} (/tf)")
        ax_map.plot(*xy[0], "o", color="tab:blue", ms=4)
        span = max(np.ptp(xy[:, 0]), np.ptp(xy[:, 1]), 2.0) + 2.0  # 1 m around the path
        centre = xy.min(0) + np.ptp(xy, 0) / 2
        ax_map.set_xlim(centre[0] - span / 2, centre[0] + span / 2)
        ax_map.set_ylim(centre[1] - span / 2, centre[1] + span / 2)
        draw_fov(ax_map, 0.25 * span)
    draw_robot(ax_map)
    ax_map.set_aspect("equal")
    ax_map.set_title(f"{odom}: path, robot (robot_description + TF)", fontsize=9)
    ax_map.set_xlabel("x (m)")
    ax_map.set_ylabel("y (m)")
    if ax_map.get_legend_handles_labels()[0]:  # nothing labelled before the first /tf message
        ax_map.legend(fontsize=7, loc="best")
    ax_map.grid(alpha=0.3)

    # 2. close-up of the robot at its last pose, with the TF frames (x red, y green)
    draw_robot(ax_robot, alpha=0.85)
    if base is not None:
        labels = {}  # frames at the same place (base_link and imu seen from above) share one label
        for frame in sorted(rec.transforms):
            pose = rec.pose(frame, odom)
            if pose is None or frame == odom:
                continue
            o = pose[:3, 3]
            for axis, color in ((0, "r"), (1, "g")):
                d = pose[:3, axis] * 0.08
                ax_robot.arrow(o[0], o[1], d[0], d[1], color=color, width=0.002, head_width=0.012, zorder=5)
            labels.setdefault(tuple(np.round(o[:2], 2)), []).append(frame)
        placed = []  # a label near an earlier one's line goes a line higher: they were written over each other
        for xy, frames in labels.items():
            line = sum(abs(xy[1] - y) < 0.04 and abs(xy[0] - x) < 0.35 for x, y in placed)
            placed.append(xy)
            ax_robot.annotate(
                ", ".join(frames), xy, fontsize=7, xytext=(3, 3 + 9 * line), textcoords="offset points", zorder=6
            )
        draw_fov(ax_robot, 0.45)
        ax_robot.set_xlim(base[0, 3] - 0.45, base[0, 3] + 0.45)
        ax_robot.set_ylim(base[1, 3] - 0.45, base[1, 3] + 0.45)
    ax_robot.set_aspect("equal")
    ax_robot.set_xlabel("x (m)")
    ax_robot.set_ylabel("y (m)")
    ax_robot.set_title("robot at its last pose: URDF shapes, TF frames (x red, y green)", fontsize=9)
    ax_robot.grid(alpha=0.3)

    # 3. the latest camera image, 4. the commands
    if rec.image is not None:
        stamp = stamps.seconds(rec.image.header.stamp)
        image_title = (
            f"camera/image_raw {rec.image.width}x{rec.image.height} (width x height), "
            f"frame {rec.image.header.frame_id}, t={stamp:.2f} s"
        )
        try:
            ax_image.imshow(image_to_numpy(rec.image, "rgb8"), interpolation="nearest")
        except ImageConversionError as exc:  # a robot's camera in another encoding, a malformed frame: the rest stays
            ax_image.text(0.5, 0.5, f"cannot show the image:\n{exc}", ha="center", va="center", wrap=True, fontsize=7)
        ax_image.set_title(image_title, fontsize=8)
    ax_image.axis("off")
    # the rover's cmd_vel, or the balancers' wheel_torques when only they were commanded
    topic, commands, labels = "cmd_vel", rec.commands, ("linear.x (m/s)", "angular.z (rad/s)")
    if rec.torques and not rec.commands:
        topic, commands, labels = "wheel_torques", rec.torques, ("left wheel (N m)", "right wheel (N m)")
    if commands:
        c = np.array(commands)
        ax_cmd.plot(c[:, 0] - c[0, 0], c[:, 1], label=labels[0], lw=1)
        ax_cmd.plot(c[:, 0] - c[0, 0], c[:, 2], label=labels[1], lw=1)
        # beside the axes: in the lower right corner it hid the commands (docs/viewing.png)
        ax_cmd.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    note = f"\n{rec.command_type_note}" if topic == "cmd_vel" and rec.command_type_note else ""
    ax_cmd.set_title(f"{topic} ({len(commands)} commands){note}", fontsize=8)
    ax_cmd.set_xlabel("wall time since the first command (s)", fontsize=8)
    ax_cmd.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110, replace=replace)


SNAPSHOT_OTHER_NAMES = 100  # NAME-2.png ... NAME-101.png: then the name's folder is not what it was at the start


def _snapshot_as_a_new_file(rec: Recording, path: Path, title: str) -> Path:
    """``render_snapshot`` to ``path`` as a new file, checked when view started: where a file took the name during the
    watch (another view, another program), the picture goes to the first free NAME-2.png, NAME-3.png ..., said on
    stderr, so neither that file nor this watch's picture is lost. Only the name being taken moves it on (a folder
    that became a file, or a dangling link, is its own error)."""
    candidate = path
    for number in range(2, SNAPSHOT_OTHER_NAMES + 3):
        try:
            written = render_snapshot(rec, candidate, title=title, replace=False)
        except FileExistsError as exc:
            if exc.filename != str(candidate) or number == SNAPSHOT_OTHER_NAMES + 2:
                raise
            candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
            continue
        if written != path:
            print(
                f"liquid-control view: {path} appeared while watching (not overwritten): the picture is {written}",
                file=sys.stderr,
            )
        return written


# ------------------------------------------------------------------------------------------ the relay
class Viewer:
    """Raw subscriptions to TOPICS; each message goes to the Foxglove server (if any) and the recording.

    Episode statuses are kept apart (``episode_ends``), recording or not, and only those published after the
    viewer started (by the publisher's clock): the latched status of an earlier episode is replayed at connect."""

    def __init__(
        self,
        node,
        foxglove_server=None,
        record: bool = True,
        frame_prefix: str | None = None,
        command_type: str = "twist",
        with_tf: bool = True,
    ):
        from rclpy.serialization import deserialize_message

        self.topics = topics_for(command_type, with_tf)
        self.command_type = command_type
        self.command_type_said = False
        self._deserialize = deserialize_message
        self.server = foxglove_server
        self.recording = Recording(frame_prefix=frame_prefix) if record else None
        self.episode_ends = []  # statuses of episodes that ended after the start
        self.channels = {}
        self.latched = {}  # Foxglove topic -> last message of a transient-local topic (robot_description, ...)
        self.replay = []  # Foxglove topics a client subscribed to: send their latched message again
        self.started = time.monotonic()
        self.started_ns = time.time_ns()  # wall clock, as the publishers' source timestamps
        self._lock = threading.Lock()
        self._subscriptions = {
            topic: node.create_subscription(
                message_class(type_name),
                topic,
                lambda data, info, topic=topic: self._on_message(topic, data, info),
                _qos(kind),
                raw=True,
            )
            for topic, (type_name, kind) in self.topics.items()
        }
        # the Foxglove channel of each topic: its resolved name (as foxglove_bridge names them)
        self.channel_names = {topic: sub.topic_name for topic, sub in self._subscriptions.items()}

    def _channel(self, topic: str):
        if topic not in self.channels:
            import foxglove

            type_name = self.topics[topic][0]
            schema = foxglove.Schema(name=type_name, encoding="ros2msg", data=ros2msg_schema(type_name).encode())
            self.channels[topic] = foxglove.Channel(self.channel_names[topic], schema=schema, message_encoding="cdr")
        return self.channels[topic]

    def _on_message(self, topic: str, data: bytes, info: dict):
        if self.server is not None:
            channel = self._channel(topic)
            channel.log(data, log_time=time.time_ns())
            if self.topics[topic][1] == "latched":
                self.latched[self.channel_names[topic]] = (channel, data)
        if topic == "episode_status":
            text = self._deserialize(data, message_class(self.topics[topic][0])).data
            try:
                status = load_json(text)
            except ValueError:  # JsonTooDeepError too: any publisher on the domain can send a hostile string
                status = None
            if not (isinstance(status, dict) and "outcome" in status):  # another node's, `ros2 topic pub`'s
                print(
                    "liquid-control view: warning: ignoring a message on episode_status that is not an episode's "
                    f"status: {shown(text, 200)}",
                    file=sys.stderr,
                    flush=True,
                )
            elif info["source_timestamp"] >= self.started_ns or not info["source_timestamp"]:  # 0: not known
                self.episode_ends.append(status)
            else:
                print(
                    f"liquid-control view: ignoring the status of an episode that ended before the viewer started: "
                    f"{json.dumps(status)}",
                    file=sys.stderr,
                    flush=True,
                )
        if self.recording is not None:
            msg = self._deserialize(data, message_class(self.topics[topic][0]))
            with self._lock:
                self.recording.add(topic, msg, time.monotonic() - self.started)

    def check_command_type(self, node) -> str | None:
        """Say once (stderr, and in the picture's command panel) where cmd_vel is in the graph as another type than
        ``--command-type``'s (a publisher, or a base subscribing, of TwistStamped): the panel stayed at "0
        commands" without a word. The warning, or None."""
        if self.command_type_said:
            return None
        topic, wanted = self.channel_names["cmd_vel"], self.topics["cmd_vel"][0]
        others = sorted(
            {t for name, types in node.get_topic_names_and_types() if name == topic for t in types} - {wanted}
        )
        if not others:
            return None
        self.command_type_said = True
        note = command_type_note(topic, others, self.command_type)
        print(f"liquid-control view: warning: {note}", file=sys.stderr, flush=True)
        if self.recording is not None:
            with self._lock:
                types = ", ".join(t.rsplit("/", 1)[-1] for t in others)
                self.recording.command_type_note = f"{types} in the graph: {command_type_fix(others) or 'not drawn'}"
        return note

    def replay_latched(self):
        """A client that subscribes late still gets the latched messages (as a transient-local subscriber would)."""
        while self.replay:
            channel, data = self.latched.get(self.replay.pop(), (None, None))
            if channel is not None:
                channel.log(data, log_time=time.time_ns())


def _replay_listener(viewer_ref: list):
    import foxglove

    class ReplayLatched(foxglove.ServerListener):
        def on_subscribe(self, client, channel):
            if viewer_ref:
                viewer_ref[0].replay.append(channel.topic)

    return ReplayLatched()


def add_arguments(parser):
    """The options of `liquid-control view`."""
    parser.epilog = (
        "examples (a graph running: ./run.sh, liquid-control sim, a robot):\n"
        "  liquid-control view --foxglove                        # open ws://127.0.0.1:8765 in Foxglove; Ctrl-C\n"
        "  liquid-control view --snapshot topics.png --until-episode-end\n"
        "  liquid-control view --snapshot topics.png --duration 10 --domain-id 42\n\n"
        "Stopped by Ctrl-C or SIGTERM it ends with status 0 (the picture written). See docs/viewing.md."
    )
    parser.add_argument("--foxglove", action="store_true", help="serve the topics live to Foxglove (foxglove-sdk)")
    parser.add_argument("--host", default="127.0.0.1", help="Foxglove server address (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8765, help="Foxglove server port (0: any free port)")
    parser.add_argument(
        "--snapshot", default="", type=user_path, help="write a PNG picture of the topics when done (a new file)"
    )
    parser.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: no limit)")
    parser.add_argument(
        "--until-episode-end",
        action="store_true",
        help="stop when an episode ends (the first episode status published after the viewer started)",
    )
    parser.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: inherited)")
    parser.add_argument(
        "--namespace", default="", help="namespace of the robot's topics (relative names resolve in it; /tf stays)"
    )
    parser.add_argument(
        "--frame-prefix",
        default=None,
        help="sim_node's frame_prefix (default: read off robot_description's root link, <prefix>base_link)",
    )
    parser.add_argument(
        "--command-type",
        choices=COMMAND_TYPES,
        default="twist",
        help="the type of cmd_vel, as the policy node's command_type parameter (default: twist)",
    )


def argument_problem(args) -> str | None:
    """What is wrong with ``liquid-control view``'s options (a sentence naming the option), or None."""
    if not args.foxglove and not args.snapshot:
        return "nothing to do; give --foxglove and/or --snapshot PATH"
    if not (math.isfinite(args.duration) and args.duration >= 0):
        return f"--duration must be >= 0 seconds (0: no limit), got {args.duration}"
    problem = domain_id_problem(args.domain_id) or discovery_problem() or unwritable_log_dir()
    if problem:
        return problem
    if args.foxglove and not 0 <= args.port <= 65535:
        return f"--port must be between 0 and 65535 (0: any free port), got {args.port}"
    if args.namespace:
        from rclpy.exceptions import InvalidNamespaceException
        from rclpy.validate_namespace import validate_namespace

        try:
            validate_namespace(args.namespace if args.namespace.startswith("/") else "/" + args.namespace)
        except InvalidNamespaceException:
            return f"--namespace {args.namespace!r} is not a ROS namespace (letters, digits, '_' and '/')"
    problem = args.frame_prefix and frame_prefix_problem(args.frame_prefix)  # sim_node's rule for its parameter
    if problem:
        return f"--frame-prefix {problem}"
    if args.snapshot:
        path = Path(args.snapshot)
        if path.suffix.lower() not in ("", ".png"):
            return f"--snapshot {args.snapshot}: the picture is a PNG; give a file name ending in .png"
        problem = output_file_problem(path, "run.png")
        if problem:
            return f"--snapshot {args.snapshot}: {problem}"
        if os.path.lexists(path):  # as a bag (record -o, replay -o): an earlier run's picture is not lost to this one
            return f"--snapshot {args.snapshot}: already exists; a picture is never overwritten, choose a new name"
    return None


def run(args) -> int:
    """Relay and/or record until the duration, the end of an episode or a signal; then write the picture."""
    import rclpy
    import rclpy.executors

    problem = argument_problem(args)
    if problem:  # before anything starts: not a traceback at the end of a long watch, nor a viewer that never stops
        print(f"liquid-control view: error: {problem}", file=sys.stderr)
        return 2
    if args.snapshot:  # said now, not after the whole watch: a robot installed without the simulator has no matplotlib
        from liquid_control.figures import pyplot
        from liquid_control.ros.entry import missing_package, needs_package

        try:
            pyplot()
        except ModuleNotFoundError as exc:
            missing = missing_package(exc)
            if missing is None:
                raise
            print(
                f"{needs_package('liquid-control view --snapshot', missing)}; --foxglove runs without it",
                file=sys.stderr,
            )
            return 1
    if args.foxglove:
        from liquid_control.ros.entry import missing_package, needs_package

        try:
            import foxglove
        except ImportError as exc:  # not installed: a package the command needs (status 1), as for --snapshot
            if missing_package(exc) not in ("foxglove", None):  # a package foxglove-sdk itself imports
                raise
            print(needs_package("liquid-control view --foxglove", "foxglove", exc), file=sys.stderr)
            return 1
    no_tf = tf_missing()
    for type_name, _ in topics_for(args.command_type, with_tf=not no_tf).values():
        message_class(type_name)  # a message package missing: said (status 1) before the server starts
    if no_tf:
        print(f"liquid-control view: warning: {no_tf}", file=sys.stderr, flush=True)
    server = None
    if args.foxglove:
        viewer_ref = []
        try:
            server = foxglove.start_server(
                name="liquid_control", host=args.host, port=args.port, server_listener=_replay_listener(viewer_ref)
            )
        except RuntimeError as exc:  # FoxgloveError: the port is taken (another viewer, foxglove_bridge), a bad host
            print(
                f"liquid-control view: error: cannot serve on --host {args.host} --port {args.port}: {exc}",
                file=sys.stderr,
            )
            return 1
    domain = args.domain_id if args.domain_id is not None else int(os.environ.get("ROS_DOMAIN_ID") or 0)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    node = rclpy.create_node("liquid_control_view", namespace=args.namespace, context=context)
    viewer = Viewer(
        node,
        server,
        record=bool(args.snapshot),
        frame_prefix=args.frame_prefix,
        command_type=args.command_type,
        with_tf=not no_tf,
    )
    if server is not None:
        viewer_ref.append(viewer)
        print(f"Foxglove: open a connection to ws://{args.host}:{server.port}", flush=True)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    deadline = time.monotonic() + args.duration if args.duration > 0 else math.inf
    type_check = time.monotonic() + COMMAND_TYPE_CHECK_S  # discovery first
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
            viewer.replay_latched()
            if time.monotonic() >= type_check:
                viewer.check_command_type(node)
                type_check = time.monotonic() + COMMAND_TYPE_CHECK_S
            if args.until_episode_end and viewer.episode_ends:
                print(f"episode ended: {json.dumps(viewer.episode_ends[0])}", flush=True)
                break
        viewer.check_command_type(node)  # a watch shorter than the period, or a publisher found late
    finally:
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()
        if server is not None:
            server.stop()
    if args.snapshot:
        rec = viewer.recording
        outcome = f", episode {viewer.episode_ends[0]['outcome']}" if viewer.episode_ends else ""
        try:
            path = _snapshot_as_a_new_file(
                rec, Path(args.snapshot), title=f"liquid-control view (matplotlib rendering of the topics){outcome}"
            )
        except OSError as exc:  # its folder gone or a dangling link by now, a full disk: said, not a traceback
            print(
                f"liquid-control view: error: --snapshot {args.snapshot}: cannot write the picture: {exc}",
                file=sys.stderr,
            )
            return 1
        print(f"wrote {path} from {sum(rec.counts.values())} messages: {named_counts(rec.counts)}")
        if not rec.counts:
            print(
                f"liquid-control view: warning: no message received on ROS_DOMAIN_ID {domain}"
                f"{f' under namespace {args.namespace}' if args.namespace else ''}: is the graph running there?",
                file=sys.stderr,
            )
    return 0
