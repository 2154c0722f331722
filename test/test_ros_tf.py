"""sim_node as a ROS robot: TF (REP 105), robot_description, camera_info, IMU conventions (REP 145).

The URDF is generated from the worlds' MuJoCo models; here it is checked against MuJoCo itself (MuJoCo compiles
URDF: the robot it builds from our file must have the masses, joints and sensor poses of the source model) and
parsed with ROS's urdf_parser_py. Over real DDS, during a closed loop with the shipped policy, /tf carries
odom -> base_link with every odometry message, /tf_static the sensor mounts, robot_description the URDF and
camera_info the intrinsics of each image.
"""

import argparse
import json
import math
import queue
import re
import subprocess
import sys
import threading
import time
import warnings

import mujoco
import numpy as np
import pytest
from nav_msgs.msg import Odometry
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, Imu
from std_msgs.msg import String
from tf2_msgs.msg import TFMessage
from urdf_parser_py.urdf import URDF

from liquid_control.paths import policies_dir, share_dir
from liquid_control.ros import robot_description as rd
from liquid_control.ros.testing import Probe, isolated_ros_env

# tf2_msgs/msg/TFMessage's type hash in a ROS 2 installation (`ros2 topic info -v /tf`, Jazzy and later)
ROS_TF_MESSAGE_TYPE_HASH = "RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087"
WORLDS = rd.world_ids()
# what each world's robot is, by hand (the oracle of robot_spec, which reads it off the model)
EXPECTED_ROBOTS = {
    "LiquidRover-v0": rd.RobotSpec("liquid_rover", root_body="rover", imu_site="imu", camera="front"),
    "LiquidBalance-v0": rd.RobotSpec("liquid_balance", root_body="base", imu_site="imu"),
}
FLIP_YZ = np.diag([1.0, -1.0, -1.0])  # MuJoCo camera axes (x right, y up, z back) -> optical (x right, y down, z fwd)


def stamped_transform(parent, child, xyz=(0.0, 0.0, 0.0), quat_wxyz=(1.0, 0.0, 0.0, 0.0)):
    from geometry_msgs.msg import TransformStamped

    t = TransformStamped()
    t.header.frame_id, t.child_frame_id = parent, child
    t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = map(float, xyz)
    r = t.transform.rotation
    r.w, r.x, r.y, r.z = map(float, quat_wxyz)
    return t


def robot_static_transforms(robot, prefix=""):
    return [
        stamped_transform(f"{prefix}{j.parent}", f"{prefix}{j.child}", j.xyz, rd.matrix_to_quat(j.rotation))
        for j in robot.fixed_joints()
    ]


def seconds(stamp):
    return stamp.sec + stamp.nanosec * 1e-9


def quat_xyzw_to_matrix(q):
    return rd.quat_to_matrix([q.w, q.x, q.y, q.z])


def _poses_relative_to(model, data, root: int) -> dict:
    """name -> (position, rotation) of every body, camera and site, in the frame of body ``root``."""
    mujoco.mj_forward(model, data)  # kinematics + camera poses
    r0, p0 = data.xmat[root].reshape(3, 3), data.xpos[root]
    out = {}
    for kind, count, pos, mat in (
        (mujoco.mjtObj.mjOBJ_BODY, model.nbody, data.xpos, data.xmat),
        (mujoco.mjtObj.mjOBJ_CAMERA, model.ncam, data.cam_xpos, data.cam_xmat),
        (mujoco.mjtObj.mjOBJ_SITE, model.nsite, data.site_xpos, data.site_xmat),
    ):
        for i in range(count):
            out[(kind, mujoco.mj_id2name(model, kind, i))] = (r0.T @ (pos[i] - p0), r0.T @ mat[i].reshape(3, 3))
    return out


@pytest.mark.parametrize("world", WORLDS)
def test_shipped_urdf_is_the_mujoco_model(world):
    """urdf/<robot>.urdf is what the generator writes from the MJCF, and MuJoCo compiling it builds the same robot."""
    source = rd.nominal_model(world)
    spec = rd.robot_spec(world, source)
    path = share_dir() / "urdf" / rd.urdf_file_name(world)
    write = "python -m liquid_control.ros.robot_description --write urdf"
    assert path.is_file() and path.read_text() == rd.nominal_urdf(world), f"urdf/ is stale: {write}"
    text = path.read_text()

    # ROS's own parser: links and joints as documented
    robot = URDF.from_xml_string(text)
    assert robot.get_root() == "base_link"
    hinges = {
        mujoco.mj_id2name(source, mujoco.mjtObj.mjOBJ_JOINT, j)
        for j in range(source.njnt)
        if source.jnt_type[j] == mujoco.mjtJoint.mjJNT_HINGE
    }
    assert {j.name for j in robot.joints if j.type == "continuous"} == hinges == {"wheel_left", "wheel_right"}
    sensors = {"imu"} | ({"camera", "camera_optical"} if spec.camera else set())
    assert {link.name for link in robot.links} == {"base_link", *hinges} | sensors

    # MuJoCo as the oracle: compile the URDF (sensor frames kept as bodies) and compare with the source model
    urdf_for_mujoco = text.replace(
        f'<robot name="{spec.name}">',
        f'<robot name="{spec.name}"><mujoco><compiler fusestatic="false" discardvisual="false"/></mujoco>',
    )
    rebuilt = mujoco.MjModel.from_xml_string(urdf_for_mujoco)
    body = lambda m, name: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, name)  # noqa: E731
    root = body(source, spec.root_body)
    src = _poses_relative_to(source, mujoco.MjData(source), root)
    new = _poses_relative_to(rebuilt, mujoco.MjData(rebuilt), body(rebuilt, "base_link"))
    B = mujoco.mjtObj.mjOBJ_BODY
    assert rebuilt.body_mass[body(rebuilt, "base_link")] == pytest.approx(source.body_mass[root])
    for wheel in hinges:
        assert rebuilt.body_mass[body(rebuilt, wheel)] == pytest.approx(source.body_mass[body(source, wheel)])
        np.testing.assert_allclose(
            sorted(rebuilt.body_inertia[body(rebuilt, wheel)]), sorted(source.body_inertia[body(source, wheel)])
        )
        np.testing.assert_allclose(new[(B, wheel)][0], src[(B, wheel)][0], atol=1e-9)
        j_new, j_src = (mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, wheel) for m in (rebuilt, source))
        np.testing.assert_allclose(rebuilt.jnt_axis[j_new], source.jnt_axis[j_src], atol=1e-9)
    np.testing.assert_allclose(
        sorted(rebuilt.body_inertia[body(rebuilt, "base_link")]), sorted(source.body_inertia[root]), rtol=1e-6
    )
    imu = src[(mujoco.mjtObj.mjOBJ_SITE, spec.imu_site)]
    np.testing.assert_allclose(new[(B, "imu")][0], imu[0], atol=1e-9)
    np.testing.assert_allclose(new[(B, "imu")][1], imu[1], atol=1e-7)
    if spec.camera:  # the optical frame is MuJoCo's camera frame with y and z flipped
        cam = src[(mujoco.mjtObj.mjOBJ_CAMERA, spec.camera)]
        np.testing.assert_allclose(new[(B, "camera_optical")][0], cam[0], atol=1e-9)
        np.testing.assert_allclose(new[(B, "camera_optical")][1], cam[1] @ FLIP_YZ, atol=1e-7)
        # and the camera link is in body convention: it looks along its own +x
        forward = new[(B, "camera")][1][:, 0]
        np.testing.assert_allclose(forward, cam[1] @ np.array([0.0, 0.0, -1.0]), atol=1e-7)


def test_robot_description_write_refuses_a_file_in_one_line_and_writes_atomically(tmp_path, capsys, monkeypatch):
    """--write afile was a FileExistsError traceback and --write afile/sub a NotADirectoryError; now one line
    naming --write, exit 2, nothing written; a folder gets its URDF through a temporary file renamed over it."""
    (tmp_path / "afile").write_text("")
    for folder, says in (("afile", "is a file"), ("afile/sub", f"is under {tmp_path / 'afile'}, a file")):
        with pytest.raises(SystemExit) as exit_:
            rd.main(["--world", "LiquidRover-v0", "--write", str(tmp_path / folder)])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and f"error: --write {tmp_path / folder}: {says}; give a folder" in err, err
        assert "Traceback" not in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
    from liquid_control import atomic_file

    written = []
    real = atomic_file.atomic_write
    monkeypatch.setattr(atomic_file, "atomic_write", lambda path, *a, **k: written.append(path) or real(path, *a, **k))
    assert rd.main(["--world", "LiquidRover-v0", "--write", str(tmp_path / "new" / "urdf")]) == 0
    path = tmp_path / "new" / "urdf" / rd.urdf_file_name("LiquidRover-v0")
    assert written == [path] and path.read_text() == rd.nominal_urdf("LiquidRover-v0")
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary file left


def test_robot_description_rejects_a_model_without_the_robot():
    model = mujoco.MjModel.from_xml_string(
        "<mujoco><worldbody><body name='b'><geom size='1'/></body></worldbody></mujoco>"
    )
    with pytest.raises(ValueError, match="no body 'rover'"):
        rd.describe(model, EXPECTED_ROBOTS["LiquidRover-v0"])
    with pytest.raises(ValueError, match="free joint"):
        rd.describe(model, rd.RobotSpec("x", root_body="b"))


class FoxgloveClient(threading.Thread):
    """A Foxglove WebSocket client (as the Foxglove app connects): records the advertised channels and
    subscribes to ``topics``, counting the binary message frames of each."""

    def __init__(self, url: str, topics: tuple):
        super().__init__(daemon=True)
        self.url, self.topics = url, topics
        self.channels, self.frames, self.stop = {}, {}, threading.Event()

    def run(self):
        from websockets.sync.client import connect

        protocols = ["foxglove.sdk.v1", "foxglove.websocket.v1"]  # the SDK's name, the Foxglove app's older one
        with connect(self.url, subprotocols=protocols, open_timeout=20, proxy=None) as ws:
            while not self.stop.is_set():
                try:
                    frame = ws.recv(timeout=0.2)
                except TimeoutError:
                    continue
                except Exception:  # server gone
                    return
                if isinstance(frame, bytes):
                    if frame[0] == 1:  # MessageData: opcode, subscription id, timestamp, payload
                        sub_id = int.from_bytes(frame[1:5], "little")
                        self.frames[sub_id] = self.frames.get(sub_id, 0) + 1
                    continue
                op = json.loads(frame)
                unknown = (
                    re.match(r"Unknown channel ID: (\d+)", op.get("message", "")) if op.get("op") == "status" else None
                )
                if unknown:  # the SDK answers a subscription sent right after the advertisement so: again
                    time.sleep(0.1)
                    channel_id = int(unknown.group(1))
                    ws.send(
                        json.dumps({"op": "subscribe", "subscriptions": [{"id": channel_id, "channelId": channel_id}]})
                    )
                if op.get("op") == "advertise":
                    for channel in op["channels"]:
                        self.channels[channel["topic"]] = channel
                        if channel["topic"] in self.topics:
                            sub = {"id": channel["id"], "channelId": channel["id"]}
                            ws.send(json.dumps({"op": "subscribe", "subscriptions": [sub]}))


def _end(proc: subprocess.Popen, grace: float = 10.0):
    """End a process still running: SIGTERM (`liquid-control sim` then ends its whole graph), SIGKILL if it stays."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class OutputLines(threading.Thread):
    """Reads a process's stdout line by line in the background: ``next_line`` waits a bounded time for one."""

    def __init__(self, proc: subprocess.Popen):
        super().__init__(daemon=True)
        self.proc, self.lines, self._queue = proc, [], queue.Queue()
        self.start()

    def run(self):
        for line in self.proc.stdout:
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)  # end of output

    def next_line(self, timeout: float) -> str:
        try:
            return self._queue.get(timeout=timeout) or ""
        except queue.Empty:
            return ""

    def text(self, timeout: float = 10.0) -> str:
        self.join(timeout)
        return "".join(self.lines)


def test_closed_loop_reaches_the_target_and_sim_node_is_a_ros_robot(tmp_path):
    """The shipped rover policy over DDS reaches its target; meanwhile /tf, /tf_static, robot_description,
    camera_info and the IMU are what a ROS viewer expects, and `liquid-control view` relays them to Foxglove."""
    env = isolated_ros_env()
    # what a person watches: `liquid-control view` relaying to Foxglove and rendering a picture
    viewer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "liquid_control.cli",
            "view",
            "--foxglove",
            "--port",
            "0",
            "--snapshot",
            str(tmp_path / "view.png"),
            "--until-episode-end",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    viewer_output = OutputLines(viewer)
    foxglove = probe = proc = None
    try:
        url = viewer_output.next_line(timeout=60).split("connection to ")[-1].strip()
        assert url.startswith("ws://127.0.0.1:"), url + viewer_output.text(timeout=0)
        foxglove = FoxgloveClient(url, ("/tf", "/robot_description", "/camera/image_raw"))
        foxglove.start()
        probe = Probe(env)
        stream = QoSProfile(depth=2000, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        for topic, msg_type in (
            ("/tf", TFMessage),
            ("odom", Odometry),
            ("camera/image_raw", Image),
            ("camera/camera_info", CameraInfo),
            ("imu/data", Imu),
        ):
            probe.record(topic, msg_type, stream)
        probe.record("/tf_static", TFMessage, latched)
        probe.record("robot_description", String, latched)
        probe.record(
            "episode_status",
            String,
            QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL),
        )
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "liquid_control.cli",
                "sim",
                "--seed",
                "7",
                "--use-sim-time",
                "--real-time-factor",  # a timed loop (not lockstep) with room for a loaded machine's delays (the
                # policy has twice the wall time per sim second, so a slow policy node fails less often)
                "0.5",
                "--log-dir",
                str(tmp_path),
                "--quiet",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert probe.wait_for(lambda: bool(probe.messages("/tf")), 60.0), "no /tf message"
        # the graph names a publisher's node once its discovery info arrived, which can trail its first message
        probe.wait_for(
            lambda: any(i.node_name == "sim_node" for i in probe.node.get_publishers_info_by_topic("/tf")), 10.0
        )
        tf_publishers = probe.node.get_publishers_info_by_topic("/tf")
        out, _ = proc.communicate(timeout=120)
        sim_log = (tmp_path / "sim_node.log").read_text()
        assert proc.returncode == 0, out + sim_log
        # the episode status is sim_node's last message: the probe has everything before it too
        assert probe.wait_for(lambda: bool(probe.messages("episode_status")), 10.0), "no episode_status"
        # the executor takes one message per ready subscription at a time: let a backlog of odometry drain
        end = json.loads(probe.messages("episode_status")[0][1].data)["sim_time"]
        probe.wait_for(
            lambda: max((seconds(m.header.stamp) for _, m in probe.messages("odom")), default=-1.0) >= end - 0.1, 10.0
        )
        viewer.wait(timeout=60)
    finally:
        if probe is not None:
            probe.close()
        if foxglove is not None:
            foxglove.stop.set()
        for process in (proc, viewer):  # a failed step leaves no process behind
            if process is not None:
                _end(process)
    viewer_out = viewer_output.text()
    assert viewer.returncode == 0, viewer_out
    (line,) = [l for l in out.splitlines() if l.startswith("episode: ")]
    status = json.loads(line.removeprefix("episode: "))
    assert status["success"] and status["outcome"] == "success", status
    assert status["distance"] <= 0.6  # SUCCESS_RADIUS (rounded to 4 decimals in the status)
    assert status["commands_received"] > 10 and "success_rate: 1/1" in out
    policy = policies_dir() / "cfc_ncp_rover.pt"
    # backend auto: the shipped export of this checkpoint
    said = f"policy {policy.with_suffix('.onnx')} (the export of {policy.name}) (onnx, cfc_ncp_rover)"
    assert said in (tmp_path / "policy_node.log").read_text()
    assert json.loads(probe.messages("episode_status")[0][1].data) == status

    # the TF message is ROS's type: same name and type hash as in a ROS installation
    (tf_info,) = [i for i in tf_publishers if i.node_name == "sim_node"]
    assert tf_info.topic_type == "tf2_msgs/msg/TFMessage"
    assert str(tf_info.topic_type_hash) == ROS_TF_MESSAGE_TYPE_HASH

    # /tf: odom -> base_link with every odometry message (same stamp, same pose), and the wheel joints
    odom = {seconds(m.header.stamp): m for _, m in probe.messages("odom")}
    assert odom, "no odometry heard"
    base = {}
    for _, msg in probe.messages("/tf"):
        frames = {(t.header.frame_id, t.child_frame_id): t for t in msg.transforms}
        assert {("base_link", "wheel_left"), ("base_link", "wheel_right")} <= set(frames)
        t = frames[("odom", "base_link")]
        base[seconds(t.header.stamp)] = t
    assert base, "no odom -> base_link transform heard"
    # 50 Hz of sim time (odom_rate_hz): the sim loop stops at every odometry tick. Over the span the probe heard:
    # the episode starts as soon as the policy node subscribes, which can be before discovery matched the probe
    # (on a loaded 2-core CI machine the probe once heard only the last 2.3 s of a 5.1 s episode). At least the
    # last second (50 messages) is heard, and within the span no tick is missing.
    span = max(odom) - min(odom)
    assert span >= 1.0 and max(odom) >= status["sim_time"] - 0.1, (min(odom), max(odom), status["sim_time"])
    assert len(odom) >= 0.95 * 50 * span
    heard_both = [stamp for stamp in odom if stamp >= min(base)]  # /tf may have been matched later than odom
    stamps = sorted(set(base) & set(odom))
    assert len(heard_both) >= 50 and len(stamps) >= 0.95 * len(heard_both)
    assert np.median(np.diff(stamps)) == pytest.approx(1 / 50.0, rel=0.1)  # odom_rate_hz (sim time)
    for stamp in stamps[:: max(1, len(stamps) // 20)]:
        pose, tr = odom[stamp].pose.pose, base[stamp].transform
        assert (tr.translation.x, tr.translation.y, tr.translation.z) == (
            pose.position.x,
            pose.position.y,
            pose.position.z,
        )
        assert (tr.rotation.w, tr.rotation.x, tr.rotation.y, tr.rotation.z) == (
            pose.orientation.w,
            pose.orientation.x,
            pose.orientation.y,
            pose.orientation.z,
        )

    # /tf_static: the sensor mounts of the MuJoCo model (base_link -> camera_optical is MuJoCo's camera, flipped)
    (static,) = [m for _, m in probe.messages("/tf_static")]
    mounts = {(t.header.frame_id, t.child_frame_id): t.transform for t in static.transforms}
    assert set(mounts) == {("base_link", "imu"), ("base_link", "camera"), ("camera", "camera_optical")}
    model = rd.nominal_model("LiquidRover-v0")
    cam = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, "front")
    to_xyz = lambda v: np.array([v.x, v.y, v.z])  # noqa: E731
    rotation = quat_xyzw_to_matrix(mounts[("base_link", "camera")].rotation) @ quat_xyzw_to_matrix(
        mounts[("camera", "camera_optical")].rotation
    )
    np.testing.assert_allclose(rotation, rd.quat_to_matrix(model.cam_quat[cam]) @ FLIP_YZ, atol=1e-9)
    np.testing.assert_allclose(to_xyz(mounts[("base_link", "camera")].translation), model.cam_pos[cam])
    site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "imu")
    np.testing.assert_allclose(to_xyz(mounts[("base_link", "imu")].translation), model.site_pos[site])

    # robot_description: URDF whose links are every frame of the TF tree below odom
    (description,) = [m.data for _, m in probe.messages("robot_description")]
    robot = URDF.from_xml_string(description)
    tf_frames = {c for _, c in mounts} | {"base_link", "wheel_left", "wheel_right"}
    assert {link.name for link in robot.links} == tf_frames
    assert {j.name for j in robot.joints if j.type == "continuous"} == {"wheel_left", "wheel_right"}

    # camera_info with each image: same stamp and frame, the image's size and the camera's field of view
    # (each stream from when discovery matched the probe: compared where both were heard)
    infos = {seconds(m.header.stamp): m for _, m in probe.messages("camera/camera_info")}
    assert infos, "no camera_info heard"
    images = [m for _, m in probe.messages("camera/image_raw") if seconds(m.header.stamp) >= min(infos)]
    assert images, "no image heard after the first camera_info"
    image_span = seconds(images[-1].header.stamp) - seconds(images[0].header.stamp)
    assert image_span >= 0.9 and len(images) >= 0.8 * 15 * image_span  # 15 Hz camera (rover, sim time)
    matched = [(image, infos[seconds(image.header.stamp)]) for image in images if seconds(image.header.stamp) in infos]
    assert len(matched) >= len(images) - 1  # best not to depend on the last message of each stream arriving
    for image, info in matched:
        assert info.header.frame_id == image.header.frame_id == "camera_optical"
        assert (info.width, info.height) == (image.width, image.height) == (64, 64)
    info = matched[-1][1]
    fx, cx, fy, cy = info.k[0], info.k[2], info.k[4], info.k[5]
    assert math.degrees(2 * math.atan(info.height / 2 / fy)) == pytest.approx(model.cam_fovy[cam])
    assert fx == fy and (cx, cy) == ((info.width - 1) / 2, (info.height - 1) / 2)
    assert list(info.p[:3]) == [fx, 0.0, cx] and info.distortion_model == "plumb_bob" and not any(info.d)

    # IMU (REP 145): its own frame, orientation unknown, noise covariances on the diagonal
    imu = probe.messages("imu/data")[-1][1]
    assert imu.header.frame_id == "imu" and imu.orientation_covariance[0] == -1.0
    assert imu.angular_velocity_covariance[0] > 0 and imu.linear_acceleration_covariance[8] > 0
    assert imu.angular_velocity_covariance[1] == 0.0

    # Foxglove saw the ROS types with their schemas and received /tf, the URDF and the images as CDR
    tf_channel = foxglove.channels["/tf"]
    assert (tf_channel["schemaName"], tf_channel["encoding"], tf_channel["schemaEncoding"]) == (
        "tf2_msgs/msg/TFMessage",
        "cdr",
        "ros2msg",
    )
    assert "MSG: geometry_msgs/TransformStamped" in tf_channel["schema"]
    for topic in ("/tf", "/robot_description", "/camera/image_raw"):
        assert foxglove.frames.get(foxglove.channels[topic]["id"], 0) >= 1, (topic, foxglove.frames)
    assert {"/tf_static", "/camera/camera_info", "/odom", "/cmd_vel"} <= set(foxglove.channels)
    # and the picture was drawn from the same topics
    assert "wrote " in viewer_out and (tmp_path / "view.png").stat().st_size > 20_000, viewer_out

    # sim_node waited for the camera only: the policy does not subscribe to the IMU
    (started,) = [line for line in sim_log.splitlines() if "the policy node subscribes to" in line]
    assert "/camera/image_raw" in started and "/imu" not in started and "no policy node seen" not in sim_log


def test_policy_node_checks_the_image_size_against_camera_info(tmp_path):
    """A camera whose camera_info announces another resolution than the policy's input is reported (counter +
    error naming both sizes); a matching one is not."""
    from diagnostic_msgs.msg import DiagnosticArray

    from liquid_control.ros.testing import start_node_process, stop_process

    env = isolated_ros_env()
    log = tmp_path / "policy_node.log"
    proc = start_node_process(
        "liquid_control.ros.policy_node",
        "policy_node",
        dict(policy=str(policies_dir() / "cfc_ncp_rover.pt"), autostart=True, diagnostics_period_s=0.2),
        env,
        log_path=log,
    )
    probe = Probe(env)
    try:
        info_pub = probe.publisher(CameraInfo, "camera/camera_info")
        probe.record("/diagnostics", DiagnosticArray)
        assert probe.wait_for(lambda: info_pub.get_subscription_count() > 0, 60.0), log.read_text()

        def mismatches():
            msgs = probe.messages("/diagnostics")
            values = {kv.key: kv.value for kv in msgs[-1][1].status[0].values} if msgs else {}
            return int(values.get("camera_info.size_mismatch", 0))

        for _ in range(5):  # the policy's own size: nothing to report
            info_pub.publish(CameraInfo(width=64, height=64))
            time.sleep(0.05)
        assert probe.wait_for(lambda: len(probe.messages("/diagnostics")) >= 3, 10.0)
        assert mismatches() == 0
        for k in range(1, 4):  # one at a time: the node's camera_info queue holds one message (sensor QoS)
            info_pub.publish(CameraInfo(width=32, height=24))
            assert probe.wait_for(lambda: mismatches() == k, 10.0), (k, log.read_text())  # noqa: B023
    finally:
        probe.close()
        stop_process(proc)
    assert "camera_info says 32x24 images (width x height) but the policy takes 64x64" in log.read_text()


def test_camera_info_follows_a_remapped_image_topic(tmp_path):
    """Remapping a node's image topic (``-r camera/image_raw:=/front/image_raw``) takes its camera_info along, as
    image_transport does: sim_node publishes it on /front/camera_info and policy_node checks the size announced
    there. Before, both stayed on /camera/camera_info, which the robot's camera does not publish: the size check
    listened to nothing (or to another camera)."""
    from diagnostic_msgs.msg import DiagnosticArray

    from liquid_control.ros.testing import start_node_process, stop_process

    env = isolated_ros_env()
    remap = {"camera/image_raw": "/front/image_raw"}
    policy_log, sim_log = tmp_path / "policy_node.log", tmp_path / "sim_node.log"
    policy = start_node_process(
        "liquid_control.ros.policy_node",
        "policy_node",
        dict(policy=str(policies_dir() / "cfc_ncp_rover.pt"), autostart=True, diagnostics_period_s=0.2),
        env,
        log_path=policy_log,
        remappings=remap,
    )
    # no commander on its command topic: sim_node waits before its first episode, publishers made
    sim = start_node_process(
        "liquid_control.ros.sim_node",
        "sim_node",
        dict(command_topic="nobody_commands", wait_for_subscribers_s=120.0),
        env,
        log_path=sim_log,
        remappings=remap,
    )
    probe = Probe(env)
    try:
        publishers = lambda topic: {i.node_name for i in probe.node.get_publishers_info_by_topic(topic)}  # noqa: E731
        assert probe.wait_for(lambda: "sim_node" in publishers("/front/image_raw"), 60.0), sim_log.read_text()
        assert probe.wait_for(lambda: "sim_node" in publishers("/front/camera_info"), 10.0), sim_log.read_text()
        assert "sim_node" not in publishers("/camera/camera_info")

        info_pub = probe.publisher(CameraInfo, "/front/camera_info")
        probe.record("/diagnostics", DiagnosticArray)
        assert probe.wait_for(lambda: info_pub.get_subscription_count() >= 1, 60.0), policy_log.read_text()
        # DDS can announce the subscription before its node's name (it reads _NODE_NAME_UNKNOWN_ until then)
        subscribers = lambda: {i.node_name for i in probe.node.get_subscriptions_info_by_topic("/front/camera_info")}  # noqa: E731
        assert probe.wait_for(lambda: "policy_node" in subscribers(), 10.0), subscribers()

        def mismatches():
            msgs = [m for _, m in probe.messages("/diagnostics") if m.status and m.status[0].hardware_id]
            values = {kv.key: kv.value for kv in msgs[-1].status[0].values} if msgs else {}
            return int(values.get("camera_info.size_mismatch", 0))

        def announced_and_reported():  # published until reported: DDS may drop the first messages of a writer
            info_pub.publish(CameraInfo(width=32, height=24))  # the subscription has not matched yet (seen in CI)
            return mismatches() >= 1

        assert probe.wait_for(announced_and_reported, 10.0, poll=0.2), policy_log.read_text()
    finally:
        probe.close()
        stop_process(policy)
        stop_process(sim)
    assert "camera_info says 32x24 images (width x height) but the policy takes 64x64" in policy_log.read_text()


def test_view_without_an_output_says_what_it_needs():
    proc = subprocess.run(
        [sys.executable, "-m", "liquid_control.cli", "view"], capture_output=True, text=True, timeout=60
    )
    # a usage error, on stderr as every other refused option (it was printed on stdout)
    assert proc.returncode == 2 and "error: nothing to do; give --foxglove and/or --snapshot" in proc.stderr
    assert proc.stdout == ""


def test_view_refuses_bad_options_before_it_starts_and_writes_the_snapshot_where_told(tmp_path, capsys):
    """Once --duration nan or -3 watched forever, --domain-id 500, --port 99999 and a bad --namespace were
    tracebacks, and a --snapshot .txt or under a file a traceback after the whole watch; a --snapshot without
    a suffix (or a folder) was written to <name>.png while 'wrote <name>' was printed. Now: exit 2 naming the
    option at once, and the PNG at exactly the path given."""
    from liquid_control import cli
    from liquid_control.ros.testing import free_domain_id

    (tmp_path / "file").write_text("")
    base = ["view", "--snapshot", str(tmp_path / "run.png")]
    bad = {
        "--snapshot": ["--snapshot", str(tmp_path / "run.txt"), "--duration", "1"],
        "--snapshot ": ["--snapshot", str(tmp_path / "file" / "run.png"), "--duration", "1"],
        "--snapshot  ": ["--snapshot", str(tmp_path), "--duration", "1"],
        "--domain-id": ["--domain-id", "500", "--duration", "1"],
        "--namespace": ["--namespace", "bad ns", "--duration", "1"],
        "--duration": ["--duration", "nan"],
        "--duration ": ["--duration", "-3"],
    }
    for option, extra in bad.items():
        assert cli.main(base + extra) == 2, option
        err = capsys.readouterr().err
        assert err.startswith(f"liquid-control view: error: {option.strip()} ") and "Traceback" not in err, err
    assert cli.main(["view", "--foxglove", "--port", "99999", "--duration", "1"]) == 2
    assert "--port must be between 0 and 65535" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
    picture = tmp_path / "pic"
    assert (
        cli.main(["view", "--snapshot", str(picture), "--duration", "0.3", "--domain-id", str(free_domain_id())]) == 0
    )
    out, err = capsys.readouterr()
    assert f"wrote {picture} from 0 messages" in out and "no message received on ROS_DOMAIN_ID" in err
    assert picture.read_bytes().startswith(b"\x89PNG") and sorted(p.name for p in tmp_path.iterdir()) == ["file", "pic"]


def test_each_world_gets_its_robot_read_off_the_model():
    """No table of robots: the free-joint body, its imu site and its camera are found in each world's model, and
    the robot is named after the world."""
    assert set(EXPECTED_ROBOTS) <= set(WORLDS)
    for world, spec in EXPECTED_ROBOTS.items():
        assert rd.robot_spec(world, rd.nominal_model(world)) == spec
    assert rd.robot_spec("MyNewWorld-v3", rd.nominal_model("LiquidRover-v0")).name == "my_new_world"
    with pytest.raises(ValueError, match="no robot description for world 'Nowhere-v0'"):
        rd.nominal_model("Nowhere-v0")
    with pytest.raises(ValueError, match="free-joint"):
        rd.robot_spec("Empty-v0", mujoco.MjModel.from_xml_string("<mujoco><worldbody/></mujoco>"))


def test_view_refuses_an_existing_snapshot_file_before_it_starts(tmp_path, capsys):
    """Before: `view --snapshot topics.png` replaced an existing topics.png (an earlier run's picture) without a
    word, exit 0. Now refused at once, as record -o and replay -o refuse an existing bag, the file untouched."""
    from liquid_control import cli
    from liquid_control.ros.testing import free_domain_id

    picture = tmp_path / "topics.png"
    picture.write_bytes(b"an earlier run's picture")
    argv = ["view", "--snapshot", str(picture), "--duration", "0.3", "--domain-id", str(free_domain_id())]
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    said = f"liquid-control view: error: --snapshot {picture}: already exists; a picture is never overwritten"
    assert err.startswith(said) and out == "", err
    assert picture.read_bytes() == b"an earlier run's picture"
    (tmp_path / "dangling.png").symlink_to(tmp_path / "nowhere.png")  # a link to nothing is a name taken too
    argv = ["view", "--snapshot", str(tmp_path / "dangling.png"), "--duration", "0.3", "--domain-id", "7"]
    assert cli.main(argv) == 2 and "already exists" in capsys.readouterr().err
    (tmp_path / "pics").symlink_to(tmp_path / "unmounted")  # its folder a dangling link: refused at the start
    argv = ["view", "--snapshot", str(tmp_path / "pics" / "t.png"), "--duration", "0.3", "--domain-id", "7"]
    assert cli.main(argv) == 2
    assert f"{tmp_path / 'pics'} is a link to {tmp_path / 'unmounted'}, which does not exist" in capsys.readouterr().err


def test_a_snapshot_that_cannot_be_written_at_the_end_is_one_line_and_exit_1(tmp_path, capsys, monkeypatch):
    """A picture that cannot be written when the watch ends (a full disk, its folder gone meanwhile) was a
    traceback: one line naming --snapshot, exit 1."""
    from liquid_control import cli
    from liquid_control.ros import view
    from liquid_control.ros.testing import free_domain_id

    def full_disk(rec, path, title="", replace=True):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(view, "render_snapshot", full_disk)
    picture = tmp_path / "t.png"
    argv = ["view", "--snapshot", str(picture), "--duration", "0.3", "--domain-id", str(free_domain_id())]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert f"--snapshot {picture}: cannot write the picture: [Errno 28] No space left on device" in err, err
    assert "Traceback" not in err and not picture.exists()


def test_a_snapshot_name_taken_during_the_watch_is_not_overwritten(tmp_path, capsys):
    """The existing file is refused when view starts; one made under the name during the watch (another view,
    another program) was replaced by the picture (an os.replace): the picture goes to the first free NAME-N.png,
    said on stderr, that file untouched."""
    from liquid_control.ros import view

    rec = view.Recording(frame_prefix=None)
    picture = tmp_path / "topics.png"
    picture.write_bytes(b"made during the watch")
    (tmp_path / "topics-2.png").write_bytes(b"another")
    written = view._snapshot_as_a_new_file(rec, picture, title="t")
    assert written == tmp_path / "topics-3.png" and written.read_bytes().startswith(b"\x89PNG")
    assert picture.read_bytes() == b"made during the watch" and (tmp_path / "topics-2.png").read_bytes() == b"another"
    assert f"{picture} appeared while watching (not overwritten): the picture is {written}" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["topics-2.png", "topics-3.png", "topics.png"]  # no temp
    assert view._snapshot_as_a_new_file(rec, tmp_path / "new.png", title="t") == tmp_path / "new.png"
    assert capsys.readouterr().err == ""
    (tmp_path / "pics").symlink_to(tmp_path / "unmounted")  # not the name taken: no other name tried (it looped)
    with pytest.raises(FileExistsError):
        view._snapshot_as_a_new_file(rec, tmp_path / "pics" / "t.png", title="t")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "new.png",
        "pics",
        "topics-2.png",
        "topics-3.png",
        "topics.png",
    ]


def test_view_until_episode_end_ignores_an_earlier_episode_and_needs_no_snapshot():
    """`view --foxglove --until-episode-end` (no picture) in a namespace: the latched status of an episode that
    ended before it started is replayed at connect and ignored; the next episode's status stops it."""
    env = isolated_ros_env()
    probe = Probe(env)
    latched = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    status = probe.publisher(String, "/robot1/episode_status", latched)
    status.publish(String(data=json.dumps({"episode": 0, "outcome": "timeout"})))
    argv = ["view", "--foxglove", "--port", "0", "--until-episode-end", "--duration", "90", "--namespace", "robot1"]
    viewer = subprocess.Popen(
        [sys.executable, "-m", "liquid_control.cli", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = OutputLines(viewer)
    try:
        lines = [output.next_line(timeout=60) for _ in range(2)]
        assert lines[0].startswith("Foxglove: open a connection"), lines
        ignoring = "liquid-control view: ignoring the status of an episode that ended before the viewer started"
        assert lines[1].startswith(ignoring), lines
        assert '"episode": 0' in lines[1] and viewer.poll() is None  # still watching
        status.publish(String(data=json.dumps({"episode": 1, "outcome": "success"})))
        assert viewer.wait(timeout=30) == 0, output.text()
    finally:
        probe.close()
        _end(viewer)
    assert 'episode ended: {"episode": 1, "outcome": "success"}' in output.text()


def test_view_picture_follows_prefixed_frames(tmp_path):
    """With sim_node's frame_prefix the picture follows <prefix>odom -> <prefix>base_link (the prefix read off
    robot_description's root link), not another robot's odom -> base_link on the same /tf."""
    from liquid_control.ros.view import Recording, render_snapshot

    robot = rd.describe(rd.nominal_model("LiquidRover-v0"), EXPECTED_ROBOTS["LiquidRover-v0"])
    messages = [
        ("robot_description", String(data=rd.to_urdf(robot, "r1/"))),
        ("/tf_static", TFMessage(transforms=robot_static_transforms(robot, "r1/"))),
    ]
    for k in range(5):
        messages.append(
            ("/tf", TFMessage(transforms=[stamped_transform("r1/odom", "r1/base_link", (0.1 * k, 0, 0.05))]))
        )
        messages.append(("/tf", TFMessage(transforms=[stamped_transform("odom", "base_link", (-1.0, 0.2 * k, 0.05))])))
    recordings = {}
    for prefix in (None, ""):
        rec = recordings[prefix] = Recording(frame_prefix=prefix)
        for topic, msg in messages:
            rec.add(topic, msg, 0.0)
    rec = recordings[None]
    assert rec.frame("odom") == "r1/odom"
    assert rec.path() == [(0.1 * k, 0.0) for k in range(5)]
    model = rd.nominal_model("LiquidRover-v0")
    mount = model.cam_pos[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, "front")]
    camera = rec.pose(rec.frame("camera_optical"), rec.frame("odom"))  # through the prefixed static mounts
    np.testing.assert_allclose(camera[:3, 3], np.array([0.4, 0.0, 0.05]) + mount, atol=1e-9)
    assert recordings[""].path() == [(-1.0, 0.2 * k) for k in range(5)]  # --frame-prefix "": the other robot
    assert render_snapshot(rec, tmp_path / "r1.png").stat().st_size > 10_000


def test_imu_covariance_is_the_nominal_noise_and_each_episode_restarts_odom(tmp_path):
    """As docs/ros.md and docs/viewing.md say: under an imu_noise shift the IMU covariance stays the world's
    nominal noise; each episode restarts the robot at the odom origin and, with sim time, the clock (two
    balancer episodes without torques: each falls within a second)."""
    from std_msgs.msg import Float64MultiArray

    from liquid_control.ros.testing import start_node_process, stop_process
    from sim_envs import balancer

    env = isolated_ros_env()
    probe = Probe(env)
    stream = QoSProfile(depth=5000, reliability=ReliabilityPolicy.RELIABLE)
    probe.record("imu/data", Imu, stream)
    probe.record("odom", Odometry, stream)
    latched = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    probe.record("episode_status", String, latched)
    probe.publisher(Float64MultiArray, "wheel_torques")  # silent: the sim starts once it sees a commander
    log = tmp_path / "sim_node.log"
    parameters = dict(world="LiquidBalance-v0", seed=0, episodes=2, shift="imu_noise=0.5", use_sim_time=True)
    parameters.update(real_time_factor=4.0, command_topic="wheel_torques", wait_for_subscribers_s=30.0)
    proc = start_node_process("liquid_control.ros.sim_node", "sim_node", parameters, env, log_path=log)
    try:
        assert probe.wait_for(lambda: len(probe.messages("episode_status")) == 2, 60.0), log.read_text()

        def restarted():  # the second episode's odometry (another topic: it may arrive after the status)
            stamps = [seconds(m.header.stamp) for _, m in probe.messages("odom")]
            return any(b < a for a, b in zip(stamps, stamps[1:])) and len(stamps) > 20

        probe.wait_for(restarted, 10.0)
    finally:
        probe.close()
        stop_process(proc)
    imu = probe.messages("imu/data")[-1][1]
    assert list(imu.angular_velocity_covariance[::4]) == [balancer.GYRO_NOISE**2] * 3  # not (0.005 + 0.5)^2
    assert list(imu.linear_acceleration_covariance[::4]) == [balancer.ACCEL_NOISE**2] * 3

    odom = [m for _, m in probe.messages("odom")]
    stamps = [seconds(m.header.stamp) for m in odom]
    (restart,) = [i for i in range(1, len(stamps)) if stamps[i] < stamps[i - 1]]  # sim time restarts once
    assert stamps[restart] < 0.1

    def tilt(m):
        return 2 * math.acos(min(1.0, abs(m.pose.pose.orientation.w)))

    before, after = odom[restart - 1], odom[restart]
    assert tilt(before) > 0.4 and tilt(after) < 0.15  # fallen, then upright again: the pose jumps
    assert math.hypot(after.pose.pose.position.x, after.pose.pose.position.y) < 0.05  # back at the odom origin


def test_view_says_when_its_foxglove_port_is_taken_or_the_inherited_domain_is_bad(monkeypatch, capsys):
    """Once a FoxgloveError traceback for a port in use (a second viewer, foxglove_bridge on 8765) and a bare
    ValueError or a killed process for ROS_DOMAIN_ID=abc or 500; now one line naming the port or the variable."""
    import socket

    pytest.importorskip("foxglove")
    from liquid_control import cli

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli.main(["view", "--foxglove", "--port", str(port), "--duration", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"liquid-control view: error: cannot serve on --host 127.0.0.1 --port {port}:"), err
    for value in ("abc", "500"):
        monkeypatch.setenv("ROS_DOMAIN_ID", value)
        assert cli.main(["view", "--foxglove", "--port", "0", "--duration", "1"]) == 2
        assert f"ROS_DOMAIN_ID must be a number between 0 and 232, got '{value}'" in capsys.readouterr().err
    monkeypatch.delenv("ROS_DOMAIN_ID")
    monkeypatch.setitem(sys.modules, "foxglove", None)  # not installed: a package it needs, 1 (was 2), on stderr
    assert cli.main(["view", "--foxglove", "--port", "0", "--duration", "1"]) == 1
    out = capsys.readouterr()
    assert "view --foxglove: error: needs the Python package 'foxglove'" in out.err and out.out == ""
    assert "pip install foxglove-sdk==0.30.3" in out.err


def test_view_picture_draws_the_balancers_wheel_torques(tmp_path, monkeypatch):
    """The balancers command wheel_torques: the viewer counted them (1089 in a balance-nav run) but the picture's
    command panel showed "cmd_vel (0 commands)", empty; now it draws the torques under their own topic."""
    from std_msgs.msg import Float64MultiArray

    from liquid_control.ros import view

    rec = view.Recording(frame_prefix="")
    for k in range(20):
        rec.add("wheel_torques", Float64MultiArray(data=[0.01 * k, -0.02 * k]), 0.005 * k)
    assert rec.counts == {"wheel_torques": 20} and rec.torques[-1] == pytest.approx((0.095, 0.19, -0.38))
    titles = []
    import matplotlib.axes

    real_set_title = matplotlib.axes.Axes.set_title
    monkeypatch.setattr(
        matplotlib.axes.Axes,
        "set_title",
        lambda ax, text, *a, **k: titles.append(text) or real_set_title(ax, text, *a, **k),
    )
    view.render_snapshot(rec, tmp_path / "balancer.png")
    assert "wheel_torques (20 commands)" in titles, titles


def test_view_picture_of_an_image_it_cannot_decode_keeps_the_rest(tmp_path, monkeypatch):
    """A robot's camera in an encoding the viewer does not decode (yuv422) once ended the watch in an
    ImageConversionError traceback with no picture; now the picture is written and its image panel says why."""
    from liquid_control.ros import view

    rec = view.Recording(frame_prefix="")
    rec.add("camera/image_raw", Image(height=4, width=4, encoding="yuv422", step=8, data=bytes(32)), 0.0)
    rec.add("camera/image_raw", Image(height=4, width=4, encoding="rgb8", step=12, data=bytes(5)), 0.1)  # truncated
    assert view.render_snapshot(rec, tmp_path / "robot.png").read_bytes().startswith(b"\x89PNG")
    rec.image = Image(height=4, width=4, encoding="rgb8", step=12, data=bytes(48))
    titles = []
    import matplotlib.figure

    real_suptitle = matplotlib.figure.Figure.suptitle
    monkeypatch.setattr(
        matplotlib.figure.Figure,
        "suptitle",
        lambda fig, text, **k: titles.append(text) or real_suptitle(fig, text, **k),
    )
    assert view.render_snapshot(rec, tmp_path / "robot.png", title="the run").stat().st_size > 10_000
    assert titles == ["the run"]  # not the camera panel's title


def test_view_picture_of_a_robot_description_with_meshes_or_no_xml(tmp_path):
    """A robot's URDF with mesh visuals once ended the watch in KeyError: 'mesh' (and a description that is no
    XML in a ParseError) with no picture; now the shapes it can draw are drawn and the rest left out."""
    from liquid_control.ros import view

    robot = rd.describe(rd.nominal_model("LiquidRover-v0"), EXPECTED_ROBOTS["LiquidRover-v0"])
    urdf = rd.to_urdf(robot, "")
    mesh = '<visual><geometry><mesh filename="package://r/base.stl"/></geometry></visual>'
    with_mesh = urdf.replace("</link>", mesh + "</link>", 1)

    def drawn(description):
        return [(link, shape, size) for link, shape, _, size, _ in view._urdf_shapes(description)]

    assert "<mesh" in with_mesh and drawn(with_mesh) == drawn(urdf) != []
    for description in (with_mesh, "not xml", '<robot name="r"><link name="base_link"><visual/></link></robot>'):
        rec = view.Recording()
        rec.add("robot_description", String(data=description), 0.0)
        assert rec.frame("odom") in ("odom",)
        assert view.render_snapshot(rec, tmp_path / "robot.png").read_bytes().startswith(b"\x89PNG")


def test_view_picture_leaves_out_non_finite_poses_and_malformed_shapes_naming_them(tmp_path, capsys):
    """One /tf odom -> base_link with x=nan once ended the watch in "Axis limits cannot be NaN or Inf", and a URDF
    box with two sizes in an IndexError, with no picture; now the pose is left out (counted, one warning) and the
    shape too (a warning naming its link), and the picture is written."""
    from liquid_control.ros import view

    robot = rd.describe(rd.nominal_model("LiquidRover-v0"), EXPECTED_ROBOTS["LiquidRover-v0"])
    urdf = rd.to_urdf(robot, "")
    rec = view.Recording(frame_prefix="")
    rec.add("robot_description", String(data=re.sub(r'<box size="[^"]+"', '<box size="0.1 0.2"', urdf, count=1)), 0)
    for x in (0.0, 0.1, math.nan, math.inf, 0.2):
        rec.add("/tf", TFMessage(transforms=[stamped_transform("odom", "base_link", (x, 0, 0))]), 0.0)
    assert rec.path() == [(0.0, 0.0), (0.1, 0.0), (0.2, 0.0)] and rec.non_finite == 2
    assert view.render_snapshot(rec, tmp_path / "robot.png").read_bytes().startswith(b"\x89PNG")
    err = capsys.readouterr().err
    assert "2 transform(s) with a non-finite pose" in err and "/tf odom -> base_link" in err, err
    assert "link 'base_link': box size='0.1 0.2' is not 3 sizes" in err, err
    for bad, says in (
        ('<cylinder radius="0.03"/>', "cylinder has no length"),
        ('<cylinder radius="nan" length="0.1"/>', "cylinder radius='nan'"),
        ('<sphere radius="0.1 0.2"/>', "sphere radius='0.1 0.2' is not one length"),
        ('<box size="1 1 x"/>', "box size='1 1 x'"),
    ):
        problems = []
        description = f'<robot name="r"><link name="l1"><visual><geometry>{bad}</geometry></visual></link></robot>'
        assert view._urdf_shapes(description, problems) == [] and len(problems) == 1, bad
        assert problems[0].startswith("robot_description link 'l1': " + says), problems


@pytest.mark.parametrize("fx", [0.0, math.nan, -50.0])
def test_view_picture_of_an_uncalibrated_camera_leaves_out_its_field_of_view_saying_so(tmp_path, capsys, fx):
    """A CameraInfo with K all zero is how ROS says "not calibrated"; the field of view divided by K[0] (a
    RuntimeWarning and an inf cone). Now the picture is drawn without it, and one warning says why."""
    from liquid_control.ros import view

    robot = rd.describe(rd.nominal_model("LiquidRover-v0"), EXPECTED_ROBOTS["LiquidRover-v0"])
    rec = view.Recording(frame_prefix="")
    rec.add("robot_description", String(data=rd.to_urdf(robot, "")), 0.0)
    rec.add("/tf_static", TFMessage(transforms=robot_static_transforms(robot)), 0.0)
    rec.add("/tf", TFMessage(transforms=[stamped_transform("odom", "base_link")]), 0.0)
    rec.add("camera/camera_info", CameraInfo(width=64, height=64, k=[fx, 0.0, 32.0, 0.0, fx, 32.0, 0.0, 0.0, 1.0]), 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert view.render_snapshot(rec, tmp_path / "robot.png").read_bytes().startswith(b"\x89PNG")
    err = capsys.readouterr().err
    assert "camera/camera_info is not calibrated" in err and "field of view is left out" in err, err


def test_view_picture_draws_the_field_of_view_in_the_frame_camera_info_names(tmp_path, capsys, monkeypatch):
    """A robot's camera is not sim_node's ``camera_optical``: its camera_info names its optical frame (REP 103,
    e.g. ``front_optical``). The picture draws the field of view there; before, it looked up ``camera_optical``,
    found nothing and left the cone out without a word. A frame the TF tree does not reach is named."""
    from matplotlib.axes import Axes

    from liquid_control.ros import view

    labels = []
    plot = Axes.plot

    def recording_plot(self, *args, **kwargs):
        labels.append(kwargs.get("label", ""))
        return plot(self, *args, **kwargs)

    monkeypatch.setattr(Axes, "plot", recording_plot)
    robot = rd.describe(rd.nominal_model("LiquidRover-v0"), EXPECTED_ROBOTS["LiquidRover-v0"])
    mounts = [t for t in robot_static_transforms(robot) if t.child_frame_id != "camera_optical"]
    optical = next(j for j in robot.fixed_joints() if j.child == "camera_optical")
    mounts.append(stamped_transform("camera", "front_optical", optical.xyz, rd.matrix_to_quat(optical.rotation)))
    fov = []
    for frame in ("front_optical", "nowhere_optical"):
        labels.clear()
        rec = view.Recording(frame_prefix="")
        rec.add("robot_description", String(data=rd.to_urdf(robot, "")), 0.0)
        rec.add("/tf_static", TFMessage(transforms=mounts), 0.0)
        rec.add("/tf", TFMessage(transforms=[stamped_transform("odom", "base_link")]), 0.0)
        info = CameraInfo(width=64, height=64, k=[32.0, 0.0, 31.5, 0.0, 32.0, 31.5, 0.0, 0.0, 1.0])
        info.header.frame_id = frame
        rec.add("camera/camera_info", info, 0.0)
        assert view.render_snapshot(rec, tmp_path / f"{frame}.png").read_bytes().startswith(b"\x89PNG")
        fov.append([label for label in labels if label.startswith("camera field of view")])
    assert fov[0] == ["camera field of view (90 deg)"] * 2  # the map and the close-up
    assert fov[1] == []
    err = capsys.readouterr().err
    assert "frame 'nowhere_optical' is not connected to odom" in err and "front_optical" not in err, err


def test_view_refuses_a_frame_prefix_sim_node_refuses(tmp_path, capsys):
    """--frame-prefix 'bad prefix' or '/r1/' was taken and the picture followed no frame; now refused at once
    with sim_node's rule for its frame_prefix parameter."""
    from liquid_control import cli
    from liquid_control.ros import view

    for prefix in ("bad prefix", "/r1/", "r1//", "r-1/"):
        argv = ["view", "--snapshot", str(tmp_path / "run.png"), "--duration", "1", "--frame-prefix", prefix]
        assert cli.main(argv) == 2, prefix
        err = capsys.readouterr().err
        assert err.startswith(f"liquid-control view: error: --frame-prefix {prefix!r} ") and "Traceback" not in err
    args = argparse.Namespace(
        foxglove=False, snapshot=str(tmp_path / "run.png"), duration=1.0, domain_id=None, port=0, namespace=""
    )
    for args.frame_prefix in (None, "", "r1/", "robot1_", "fleet/r1/"):
        assert view.argument_problem(args) is None, args.frame_prefix
    assert list(tmp_path.iterdir()) == []


def test_view_ignores_an_episode_status_that_is_not_one(capsys):
    """A String on episode_status that is not a JSON status (`ros2 topic pub episode_status std_msgs/String
    "data: done"`, another node's) once raised JSONDecodeError out of the executor and ended the viewer with a
    traceback and no picture; now it is ignored with a line saying so, and a real status still ends the watch."""
    import types

    from rclpy.serialization import serialize_message

    from liquid_control.ros import view

    class Node:
        def create_subscription(self, cls, topic, callback, qos, raw):
            return types.SimpleNamespace(topic_name=topic)

    viewer = view.Viewer(Node(), record=True, frame_prefix="")
    for text in ("done", "[1, 2]", '{"episode": 0}'):
        viewer._on_message("episode_status", serialize_message(String(data=text)), {"source_timestamp": 0})
        err = capsys.readouterr().err
        assert err.startswith("liquid-control view: warning: ignoring a message on episode_status that is not"), err
    status = {"episode": 0, "outcome": "success"}
    viewer._on_message("episode_status", serialize_message(String(data=json.dumps(status))), {"source_timestamp": 0})
    assert viewer.episode_ends == [status] and viewer.recording.counts == {"episode_status": 4}


def test_view_ignores_an_episode_status_nested_too_deeply(capsys):
    """Any publisher on the domain can send a String nested past Python's recursion limit: json.loads raised
    RecursionError (no ValueError) out of the subscription's callback, which ended the viewer in a traceback.
    It is ignored with the line of any other message that is not a status, and the viewer goes on."""
    import types

    from rclpy.serialization import serialize_message

    from liquid_control.ros import view

    class Node:
        def create_subscription(self, cls, topic, callback, qos, raw):
            return types.SimpleNamespace(topic_name=topic)

    viewer = view.Viewer(Node(), record=True, frame_prefix="")
    hostile = "[" * 100_000 + "]" * 100_000
    viewer._on_message("episode_status", serialize_message(String(data=hostile)), {"source_timestamp": 0})
    err = capsys.readouterr().err
    assert err.startswith("liquid-control view: warning: ignoring a message on episode_status that is not"), err
    status = {"episode": 0, "outcome": "success"}
    viewer._on_message("episode_status", serialize_message(String(data=json.dumps(status))), {"source_timestamp": 0})
    assert viewer.episode_ends == [status] and viewer.recording.counts == {"episode_status": 2}


def test_view_names_its_counts_and_says_its_notes_on_stderr(tmp_path, capsys, monkeypatch):
    """Before: `view --snapshot` ended in 'wrote P from 2 messages: {"cmd_vel": 1, "episode_status": 1}' (a JSON
    dict), and its lines on ignored episode statuses went to stdout, where the result goes, without the command's
    name. The counts are named as every such line says them (executable.named_counts), the notes are stderr lines
    that begin 'liquid-control view:'."""
    from geometry_msgs.msg import Twist
    from rclpy.serialization import serialize_message

    from liquid_control import cli
    from liquid_control.ros import view
    from liquid_control.ros.testing import free_domain_id

    class Fed(view.Viewer):  # a viewer that has received a command and a String on episode_status
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._on_message("cmd_vel", serialize_message(Twist()), {"source_timestamp": 0})
            self._on_message("episode_status", serialize_message(String(data="done")), {"source_timestamp": 0})

    monkeypatch.setattr(view, "Viewer", Fed)
    picture = tmp_path / "topics.png"
    argv = ["view", "--snapshot", str(picture), "--duration", "0.3", "--domain-id", str(free_domain_id())]
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    assert out == f"wrote {picture} from 2 messages: cmd_vel 1, episode_status 1\n", out
    assert err == (
        "liquid-control view: warning: ignoring a message on episode_status that is not an episode's status: 'done'\n"
    ), err


@pytest.mark.parametrize("command_type", ["twist", "twist_stamped"])
def test_view_subscribes_to_cmd_vel_as_the_policy_node_publishes_it(command_type):
    """A policy node with command_type twist_stamped (ROS 2's diff-drive controllers take TwistStamped) publishes
    cmd_vel as TwistStamped; the viewer subscribed to a Twist, which never connects, so no command was drawn."""
    import types

    from geometry_msgs.msg import Twist, TwistStamped
    from rclpy.serialization import serialize_message

    from liquid_control.ros import view

    subscribed = {}

    class Node:
        def create_subscription(self, cls, topic, callback, qos, raw):
            subscribed[topic] = cls
            return types.SimpleNamespace(topic_name=topic)

    viewer = view.Viewer(Node(), record=True, frame_prefix="", command_type=command_type)
    message = Twist() if command_type == "twist" else TwistStamped()
    twist = message if command_type == "twist" else message.twist
    twist.linear.x, twist.angular.z = 0.4, -0.7
    assert subscribed["cmd_vel"] is type(message)
    viewer._on_message("cmd_vel", serialize_message(message), {"source_timestamp": 0})
    assert [c[1:] for c in viewer.recording.commands] == [pytest.approx((0.4, -0.7))]
    parser = argparse.ArgumentParser()
    view.add_arguments(parser)
    assert parser.parse_args(["--command-type", command_type]).command_type == command_type


def test_view_names_the_command_type_option_where_cmd_vel_is_of_another_type(tmp_path, capsys, monkeypatch):
    """A robot whose commands are TwistStamped, watched with the default --command-type twist: the subscription
    never connects, and the picture said "cmd_vel (0 commands)" with nothing pointing at --command-type. The
    viewer looks at the graph and says (stderr, and in the picture's command panel) which option reads it."""
    from geometry_msgs.msg import TwistStamped

    from liquid_control import cli
    from liquid_control.ros import view

    viewers = []

    class Kept(view.Viewer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            viewers.append(self)

    monkeypatch.setattr(view, "Viewer", Kept)
    env = isolated_ros_env()
    probe = Probe(env)
    try:
        probe.publisher(TwistStamped, "/robot1/cmd_vel")  # the robot's, in its namespace: no message needed
        picture = tmp_path / "robot1.png"
        argv = ["view", "--snapshot", str(picture), "--duration", "3", "--namespace", "robot1"]
        assert cli.main([*argv, "--domain-id", env["ROS_DOMAIN_ID"]]) == 0
    finally:
        probe.close()
    err = capsys.readouterr().err
    assert (
        "liquid-control view: warning: /robot1/cmd_vel is geometry_msgs/msg/TwistStamped in the graph, and "
        "--command-type twist subscribes to geometry_msgs/msg/Twist: no command of it arrives; give --command-type "
        "twist_stamped\n"
    ) in err, err
    assert err.count("--command-type") == 2  # said once, not every second of the watch
    assert viewers[0].recording.command_type_note == "TwistStamped in the graph: --command-type twist_stamped"
    assert picture.read_bytes().startswith(b"\x89PNG")
    # the other way round, and a type view does not draw
    note = view.command_type_note("/cmd_vel", ["geometry_msgs/msg/Twist"], "twist_stamped")
    assert note.endswith("no command of it arrives; give --command-type twist"), note
    note = view.command_type_note("/cmd_vel", ["std_msgs/msg/Float64MultiArray"], "twist")
    assert note.endswith("view draws cmd_vel as --command-type twist or twist_stamped only"), note
