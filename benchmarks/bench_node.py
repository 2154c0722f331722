"""policy_node latency under load: IMU at 200 Hz + camera at 30 Hz (+ wheel encoders at 200 Hz) over DDS into
the node in another process, running the camera + IMU policy (every IMU message and every camera frame is an
update).

The policy is the shipped ``policies/cfc_balance_nav.pt`` (32x32 camera CNN + IMU/wheel MLP + CfC, updates on
camera and IMU), with its action kind relabelled ``twist`` so that commands are TwistStamped and carry the stamp
of the message that caused them (random weights of the same config if it is not shipped yet, or ``--policy``).
IMU-message->command latency runs from the IMU stamp (wall clock at publish) to the arrival of the command
that carries it back; dropped = IMU messages without a command. Camera frames are stamped at exposure,
``--camera-latency-ms`` before they are published (as the world's camera); a frame's processing time runs from
its publish to the arrival of its command. CPU = the node process's CPU time over the window (100% = one
core); this process's own (publishers and probe, on the same cores) is printed beside it.

    .venv/bin/python benchmarks/bench_node.py [--seconds 10] [--backend torch|onnx] [--reorder-lag-ms 30]

Reference, measured first on the same streams: an echo node (same rclpy executor and QoS, no policy) that sends
each IMU message's and frame's stamp straight back in a TwistStamped: the latency DDS and rclpy alone cost on
this machine, printed beside the node's (``--no-reference`` skips it).

Targets: IMU p99 <= 5 ms, no IMU message dropped at 200 Hz, every camera frame processed within one camera
period. ``--reorder-lag-ms`` measures what a reordering lag costs in command latency. Last lines are
`name: value`.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHIPPED = ROOT / "policies" / "cfc_balance_nav.pt"


def make_policy(path: Path, source: str | None) -> tuple[Path, str]:
    """The benchmark's policy file (action kind twist, so commands carry stamps) and where it came from."""
    import torch

    from liquid_control.policy import Policy, load_config, load_policy, save_policy

    if source or SHIPPED.is_file():
        policy = load_policy(source or SHIPPED)
        origin = str(source or SHIPPED.relative_to(ROOT))
    else:
        torch.manual_seed(0)
        policy = Policy.from_config(load_config(ROOT / "policies/configs/cfc_balance_nav.yaml"))
        origin = "random weights of policies/configs/cfc_balance_nav.yaml"
    config = dict(policy.config, action=dict(policy.config["action"], kind="twist"))
    relabelled = Policy.from_config(config)
    relabelled.load_state_dict(policy.state_dict())
    return save_policy(path, relabelled), origin


def policy_problem(path: str) -> str | None:
    """Why ``path`` cannot drive this bench's streams, or None: a policy that does not subscribe to the IMU and the
    camera and update on both made the bench wait 60 s for its subscriptions and end in exit 1."""
    from liquid_control.policy import PolicyLoadError, load_policy

    try:
        observation = load_policy(path).config["observation"]
    except PolicyLoadError as exc:
        return str(exc).removeprefix(f"{path}: ")
    lacks = [] if observation.get("image") else ["no camera input"]
    lacks += [] if "imu" in (observation.get("vectors") or {}) else ["no IMU input"]
    update_on = observation.get("update_on") or []
    if not {"camera", "imu"} <= set(update_on):
        lacks.append(f"updates on {', '.join(update_on) or 'nothing'}, not on both")
    return f"the bench needs a camera + IMU policy; this one has {' and '.join(lacks)}" if lacks else None


def echo_node() -> int:
    """The reference: subscribes like policy_node, publishes each IMU/camera stamp back at once (no policy)."""
    import signal
    import threading

    import rclpy
    from geometry_msgs.msg import TwistStamped
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import Image, Imu, JointState

    from liquid_control.ros.policy_node import make_executor, spin

    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    node = rclpy.create_node("policy_node")
    sensor_qos = dict(reliability=ReliabilityPolicy.BEST_EFFORT)  # policy_node's defaults, and the bench's depths
    pub = node.create_publisher(TwistStamped, "cmd_vel", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))

    def echo(msg):
        out = TwistStamped()
        out.header.stamp = msg.header.stamp
        pub.publish(out)

    node.create_subscription(Imu, "imu/data", echo, QoSProfile(depth=200, **sensor_qos))
    node.create_subscription(Image, "camera/image_raw", echo, QoSProfile(depth=5, **sensor_qos))
    node.create_subscription(JointState, "joint_states", lambda msg: None, QoSProfile(depth=200, **sensor_qos))
    executor = make_executor()
    executor.add_node(node)
    spin(executor, stop.is_set)
    executor.shutdown()
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module doc as written, and every option's default."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=_HelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the measured run")
    parser.add_argument("--imu-hz", type=float, default=200.0, help="IMU message rate")
    parser.add_argument("--camera-hz", type=float, default=30.0, help="camera frame rate")
    parser.add_argument("--wheels-hz", type=float, default=200.0, help="wheel encoder rate")
    parser.add_argument("--camera-latency-ms", type=float, default=25.0, help="exposure -> publish of a frame")
    parser.add_argument(
        "--reorder-lag-ms", type=float, default=-1.0, help="the node's reorder_lag_s in ms (negative: the policy's)"
    )
    parser.add_argument(
        "--backend", default="onnx", choices=["torch", "onnx"], help="onnx: what the node runs by default"
    )
    parser.add_argument("--policy", default="", help="a camera + IMU policy (.pt) instead of the shipped one")
    parser.add_argument(
        "--realtime-priority",
        type=int,
        default=0,
        help="run the node (chrt -f N) and this process with SCHED_FIFO priority N, as on a robot",
    )
    parser.add_argument("--nice", type=int, default=0, help="run the node and this process at this nice level")
    parser.add_argument("--no-reference", action="store_true", help="skip the echo node's reference run")
    parser.add_argument("--echo-node", action="store_true", help=argparse.SUPPRESS)  # the reference's process
    args = parser.parse_args()
    for option in ("seconds", "imu_hz", "camera_hz", "wheels_hz"):  # a run of no messages has no figures
        value = getattr(args, option)
        if not value > 0:
            parser.error(f"--{option.replace('_', '-')} must be > 0, got {value}")
    if args.camera_latency_ms < 0:
        parser.error(f"--camera-latency-ms must be >= 0, got {args.camera_latency_ms}")
    if args.policy and not Path(args.policy).is_file():
        parser.error(f"--policy {args.policy}: no such policy file (train one first, e.g. docs/fusion.md)")
    problem = policy_problem(args.policy) if args.policy and not args.echo_node else None
    if problem:  # before: a PolicyLoadError traceback, or a 60 s wait for subscriptions a policy never makes
        parser.error(f"--policy {args.policy}: {problem}")
    if args.echo_node:
        return echo_node()

    tmp = Path(tempfile.mkdtemp(prefix="bench_node_"))
    try:
        status = _bench(args, tmp)
    except BaseException:  # Ctrl-C, a failure: the processes are stopped (measure's finally); nothing names it
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if status != KEEP:  # before: a failed run (exit 1) left its folder in /tmp
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if status == KEEP else status


KEEP = -1  # _bench's status where a line it printed names a log in its folder (exit 0, folder kept)


def _bench(args, tmp: Path) -> int:
    """The measurement in ``tmp``: its status, or KEEP."""
    from builtin_interfaces.msg import Time
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import TwistStamped
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, Imu, JointState

    from liquid_control.conventions.image_conversion import numpy_to_image
    from liquid_control.policy import load_policy
    from liquid_control.ros.testing import Probe, isolated_ros_env, start_node_process, stop_process

    policy_path, origin = make_policy(tmp / "bench_policy.pt", args.policy)
    config = load_policy(policy_path).config
    height, width = config["observation"]["image"]["height"], config["observation"]["image"]["width"]
    if args.backend == "onnx":
        from liquid_control.runtime.export import export_onnx

        policy_path = export_onnx(load_policy(policy_path), tmp / "bench_policy.onnx")
    env = isolated_ros_env()
    params = dict(
        policy=str(policy_path),
        backend=args.backend,
        autostart=True,
        command_type="twist_stamped",
        publish_mode="per_update",
        action_scale=[1.0, 1.0],
        max_command=[1.0, 1.0],
        watchdog_timeout_s=1.0,
        diagnostics_period_s=1.0,
        reorder_lag_s=args.reorder_lag_ms / 1e3 if args.reorder_lag_ms >= 0 else -1.0,
        camera_qos_depth=5,
    )
    prefix = ("chrt", "-f", str(args.realtime_priority)) if args.realtime_priority else ()  # node and echo alike
    if args.nice:
        os.nice(args.nice)  # inherited by the node and the echo
    if args.realtime_priority:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(args.realtime_priority))
    probe = Probe(env, "bench", events_executor=True)
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    imu_pub, cam_pub = probe.publisher(Imu, "imu/data", qos), probe.publisher(Image, "camera/image_raw", qos)
    wheels_pub = probe.publisher(JointState, "joint_states", qos)
    probe.record("cmd_vel", TwistStamped, QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE))
    probe.record("/diagnostics", DiagnosticArray)
    rng = np.random.default_rng(0)
    frames = [numpy_to_image(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "rgb8") for _ in range(8)]

    def stamp_of(t: float) -> Time:
        ns = int(t * 1e9)
        return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)

    def key(stamp) -> tuple[int, int]:
        return (stamp.sec, stamp.nanosec)

    # one message per stream, refilled (publish() serialises at once): keeps the publishers' share of the 2 cores small
    wheels_msg = JointState(name=["wheel_left", "wheel_right"], velocity=[1.0, 1.0])
    imu_msg = Imu()
    imu_msg.linear_acceleration.z = 9.81

    def stream(seconds: float, record: bool):
        imu_sent, frames_sent = {}, {}  # stamp -> wall time at publish
        periods = {"imu": 1.0 / args.imu_hz, "camera": 1.0 / args.camera_hz, "wheels": 1.0 / args.wheels_hz}
        start = time.monotonic()
        due = dict.fromkeys(periods, start)
        k = 0
        while time.monotonic() - start < seconds:
            now = time.monotonic()
            if now >= due["camera"]:
                frame = frames[k % len(frames)]
                t = time.time()
                frame.header.stamp = stamp_of(t - args.camera_latency_ms / 1e3)  # stamped at exposure
                cam_pub.publish(frame)
                if record:
                    frames_sent[key(frame.header.stamp)] = t
                due["camera"] += periods["camera"]
                k += 1
            if now >= due["wheels"]:
                wheels_msg.header.stamp = stamp_of(time.time())
                wheels_pub.publish(wheels_msg)
                due["wheels"] += periods["wheels"]
            if now >= due["imu"]:
                t = time.time()
                imu_msg.header.stamp = stamp_of(t)
                imu_msg.angular_velocity.y = 0.1 * math.sin(t)
                imu_pub.publish(imu_msg)
                if record:
                    imu_sent[key(imu_msg.header.stamp)] = t
                due["imu"] += periods["imu"]
            time.sleep(max(0.0, min(due.values()) - time.monotonic()))
        return imu_sent, frames_sent

    def measure(process, log: Path) -> dict | None:
        """Stream into ``process`` (subscribed like policy_node, publishing stamped commands): the latencies.
        Stops the process in every case, and waits until its endpoints have left the graph."""
        try:
            return run_measurement(process, log)
        finally:
            stop_process(process)
            gone = probe.wait_for(
                lambda: not (probe.node.count_publishers("cmd_vel") or imu_pub.get_subscription_count()), 10.0
            )
            if not gone:
                print(f"warning: {log.stem}'s endpoints still in the graph 10 s after it stopped", file=sys.stderr)

    def run_measurement(process, log: Path) -> dict | None:
        ok = probe.wait_for(
            lambda: (
                imu_pub.get_subscription_count()
                and cam_pub.get_subscription_count()
                and (wheels_pub.get_subscription_count() or "wheels" not in config["observation"]["vectors"])
                and probe.node.count_publishers("cmd_vel")
            ),
            60.0,
        )
        if not ok:
            print(log.read_text(), file=sys.stderr)
            return None
        stream(2.0, record=False)  # warm-up: first inferences, discovery of every path
        time.sleep(0.2)
        n_warm, n_diag = len(probe.messages("cmd_vel")), len(probe.messages("/diagnostics"))
        # no garbage collection in this process while it stamps and receives: the recorded messages make its
        # full collections take 100-200 ms on the 2-core VM, which would land in the latencies it records
        gc.collect()
        gc.disable()
        try:
            cpu0, own0, wall0 = cpu_seconds(process.pid), cpu_seconds(os.getpid()), time.monotonic()
            imu_sent, frames_sent = stream(args.seconds, record=True)
            cpu1, own1, wall1 = cpu_seconds(process.pid), cpu_seconds(os.getpid()), time.monotonic()
            time.sleep(0.5)
        finally:
            gc.enable()
        commands = probe.messages("cmd_vel")[n_warm:]
        offset = time.time() - time.monotonic()  # receive wall time = the probe's monotonic time + offset
        received = {}
        for recv, m in commands:
            received.setdefault(key(m.header.stamp), recv + offset)
        diag = probe.messages("/diagnostics")[n_diag:]
        return {
            "imu_sent": len(imu_sent),
            "imu_ms": np.array([(received[k] - t) * 1e3 for k, t in imu_sent.items() if k in received]),
            "frames_sent": len(frames_sent),
            "frame_ms": np.array([(received[k] - t) * 1e3 for k, t in frames_sent.items() if k in received]),
            "cpu_percent": 100.0 * (cpu1 - cpu0) / (wall1 - wall0),
            "bench_cpu_percent": 100.0 * (own1 - own0) / (wall1 - wall0),
            "values": {kv.key: kv.value for kv in diag[-1][1].status[0].values} if diag else {},
        }

    reference = None
    try:
        if not args.no_reference:
            with open(tmp / "echo.log", "w") as echo_log:
                echo = subprocess.Popen(
                    [*prefix, sys.executable, __file__, "--echo-node"],
                    env=env,
                    stdout=echo_log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                reference = measure(echo, tmp / "echo.log")
        node = start_node_process(
            "liquid_control.ros.policy_node", "policy_node", params, env, tmp / "node.log", prefix=prefix
        )
        result = measure(node, tmp / "node.log")
    finally:
        probe.close()
    if result is None:
        print(
            "bench_node.py: the node's subscriptions and command publisher did not appear in 60 s (its log above)",
            file=sys.stderr,
        )
        return 1
    imu_ms, frame_ms, values = result["imu_ms"], result["frame_ms"], result["values"]
    imu_dropped = result["imu_sent"] - len(imu_ms)
    frames_dropped = result["frames_sent"] - len(frame_ms)
    camera_period_ms = 1e3 / args.camera_hz

    import platform

    print(f"policy: {origin}; updates on {', '.join(config['observation']['update_on'])}; backend {args.backend}")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores; {args.seconds:.0f} s at IMU {args.imu_hz:.0f} Hz + "
        f"camera {args.camera_hz:.0f} Hz (stamped {args.camera_latency_ms:g} ms before publish) + wheels "
        f"{args.wheels_hz:.0f} Hz; reordering lag "
        f"{'as trained' if args.reorder_lag_ms < 0 else f'{args.reorder_lag_ms:g} ms'}; "
        f"{'SCHED_FIFO %d' % args.realtime_priority if args.realtime_priority else 'normal scheduling'}"
        f"{', nice %d' % args.nice if args.nice else ''}"
    )
    print(
        f"node inference p50/p99 (ms): {values.get('inference_ms.p50', '?')} / {values.get('inference_ms.p99', '?')}"
        f"; stamp->publish inside the node p50/p99 (ms): {values.get('command_age_ms.p50', '?')} / "
        f"{values.get('command_age_ms.p99', '?')} (last 500 updates); late camera frames "
        f"{values.get('late.camera', '0')} (since the node's configure, the 2 s warm-up included)"
    )
    print(f"load average during the run: {os.getloadavg()[0]:.1f}")
    if reference is not None and not len(reference["imu_ms"]):
        print(f"reference, an echo node: no replies (its log: {tmp / 'echo.log'})")
    elif reference is not None:
        ref = reference["imu_ms"]
        print(
            f"reference, an echo node (DDS + rclpy, same streams and QoS, no policy): IMU->command p50/p99/max (ms) "
            f"{np.percentile(ref, 50):.3f} / {np.percentile(ref, 99):.3f} / {ref.max():.3f}, "
            f"{reference['imu_sent'] - len(ref)} IMU messages without a reply, CPU {reference['cpu_percent']:.1f}%"
        )
    print(f"imu_messages_sent: {result['imu_sent']}")
    print(f"imu_messages_dropped: {imu_dropped}")
    print(f"imu_to_command_latency_p50_ms: {np.percentile(imu_ms, 50):.3f}")
    print(f"imu_to_command_latency_p99_ms: {np.percentile(imu_ms, 99):.3f}")
    print(f"imu_to_command_latency_max_ms: {imu_ms.max():.3f}")
    print(f"camera_frames_sent: {result['frames_sent']}")
    print(f"camera_frames_dropped: {frames_dropped}")
    print(f"camera_frame_to_command_p99_ms: {np.percentile(frame_ms, 99):.3f}")
    print(f"camera_frame_to_command_max_ms: {frame_ms.max():.3f}")
    print(f"camera_frames_within_one_period: {int((frame_ms <= camera_period_ms).sum())}/{result['frames_sent']}")
    print(f"node_cpu_percent_of_one_core: {result['cpu_percent']:.1f}")
    print(f"bench_process_cpu_percent_of_one_core: {result['bench_cpu_percent']:.1f} (its publishers and probe)")
    print(f"rejected_total: {values.get('rejected_total', '?')}")
    return KEEP if reference is not None and not len(reference["imu_ms"]) else 0  # a line above names echo.log


if __name__ == "__main__":
    from liquid_control.processes import exit_status_of

    sys.exit(exit_status_of("bench_node.py", main))
