"""policy_node latency under load: IMU at 200 Hz + camera at 30 Hz over DDS into the node in another process.

The policy has the rover's architecture (64x64 camera CNN + IMU MLP + CfC/NCP core) but updates on the IMU,
so every IMU message yields one command: message->command latency is measured from the IMU stamp (wall clock
at publish) to the arrival of the TwistStamped that carries that stamp back. Dropped = IMU messages without
a command. CPU = the node process's CPU time over the measurement window (100% = one core).

    .venv/bin/python benchmarks/bench_node.py [--seconds 10] [--backend torch|onnx] [--policy P.pt]

Targets: p99 <= 5 ms on the IMU path, no IMU message dropped at 200 Hz. Last lines are `name: value`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def make_policy(path: Path, source: str | None) -> Path:
    import torch

    from liquid_control.policy import Policy, load_config, load_policy, save_policy

    if source:
        policy = load_policy(source)
        if "imu" not in policy.config["observation"]["vectors"]:
            raise SystemExit(f"{source}: the policy has no IMU input to update on")
        config = dict(policy.config)
        config["observation"] = dict(config["observation"], update_on="imu")
        policy2 = Policy.from_config(config)
        policy2.load_state_dict(policy.state_dict())
        policy = policy2
    else:
        torch.manual_seed(0)
        config = load_config(Path(__file__).resolve().parent.parent / "policies/configs/cfc_ncp_rover.yaml")
        config["observation"]["vectors"] = {"imu": 6}  # the rover's camera + an IMU, updating on the IMU
        config["observation"]["update_on"] = "imu"
        policy = Policy.from_config(config)
    return save_policy(path, policy)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--imu-hz", type=float, default=200.0)
    parser.add_argument("--camera-hz", type=float, default=30.0)
    parser.add_argument("--backend", default="torch", choices=["torch", "onnx"])
    parser.add_argument("--policy", default="", help="a rover policy (.pt) to use instead of random weights")
    parser.add_argument(
        "--realtime-priority",
        type=int,
        default=0,
        help="run the node (chrt -f N) and this process with SCHED_FIFO priority N, as on a robot",
    )
    parser.add_argument("--nice", type=int, default=0, help="run the node and this process at this nice level")
    args = parser.parse_args()

    from builtin_interfaces.msg import Time
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import TwistStamped
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, Imu

    from liquid_control.ros.image_conversion import numpy_to_image
    from liquid_control.ros.testing import Probe, isolated_ros_env, start_node_process, stop_process

    tmp = Path(tempfile.mkdtemp(prefix="bench_node_"))
    policy_path = make_policy(tmp / "bench_policy.pt", args.policy)
    if args.backend == "onnx":
        from liquid_control.policy import load_policy
        from liquid_control.runtime.export import export_onnx

        policy_path = export_onnx(load_policy(policy_path), tmp / "bench_policy.onnx")
    env = isolated_ros_env()
    params = dict(
        policy=str(policy_path),
        backend=args.backend,
        autostart=True,
        command_type="twist_stamped",
        publish_mode="per_update",
        action_scale=[1.0, 1.5],
        max_command=[1.0, 1.5],
        watchdog_timeout_s=1.0,
        diagnostics_period_s=1.0,
    )
    prefix = ("chrt", "-f", str(args.realtime_priority)) if args.realtime_priority else ()
    if args.nice:
        prefix = ("nice", "-n", str(args.nice), *prefix)
        os.nice(args.nice)
    if args.realtime_priority:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(args.realtime_priority))
    node = start_node_process(
        "liquid_control.ros.policy_node", "policy_node", params, env, tmp / "node.log", prefix=prefix
    )
    probe = Probe(env, "bench")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    imu_pub, cam_pub = probe.publisher(Imu, "imu/data", qos), probe.publisher(Image, "camera/image_raw", qos)
    probe.record("cmd_vel", TwistStamped, QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE))
    probe.record("/diagnostics", DiagnosticArray)
    ok = probe.wait_for(
        lambda: (
            imu_pub.get_subscription_count()
            and cam_pub.get_subscription_count()
            and probe.node.count_publishers("cmd_vel")
        ),
        60.0,
    )
    if not ok:
        probe.close()
        stop_process(node)
        print((tmp / "node.log").read_text(), file=sys.stderr)
        return 1
    rng = np.random.default_rng(0)
    frames = [numpy_to_image(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "rgb8") for _ in range(8)]

    def stamp_of(t: float) -> Time:
        sec = int(t)
        return Time(sec=sec, nanosec=int((t - sec) * 1e9))

    def stream(seconds: float, record: bool):
        sent = []
        imu_period, cam_period = 1.0 / args.imu_hz, 1.0 / args.camera_hz
        start = time.monotonic()
        next_imu, next_cam, k = start, start, 0
        while True:
            now = time.monotonic()
            if now - start >= seconds:
                return sent
            if now >= next_cam:
                frame = frames[k % len(frames)]
                frame.header.stamp = stamp_of(time.time())
                cam_pub.publish(frame)
                next_cam += cam_period
                k += 1
            if now >= next_imu:
                msg = Imu()
                t = time.time()
                msg.header.stamp = stamp_of(t)
                msg.angular_velocity.z = float(np.sin(t))
                msg.linear_acceleration.z = 9.81
                imu_pub.publish(msg)
                if record:
                    sent.append((msg.header.stamp.sec, msg.header.stamp.nanosec))
                next_imu += imu_period
            time.sleep(max(0.0, min(next_imu, next_cam) - time.monotonic()))

    stream(2.0, record=False)  # warm-up: first inferences, discovery of every path
    time.sleep(0.2)
    n_warm = len(probe.messages("cmd_vel"))
    cpu0, wall0 = cpu_seconds(node.pid), time.monotonic()
    sent = stream(args.seconds, record=True)
    cpu1, wall1 = cpu_seconds(node.pid), time.monotonic()
    time.sleep(0.5)
    commands = probe.messages("cmd_vel")[n_warm:]
    sent_at = {key: key[0] + key[1] * 1e-9 for key in sent}
    # receive wall time: the probe's monotonic receive time plus the wall-monotonic offset
    offset = time.time() - time.monotonic()
    lat_ms = np.array(
        [
            (recv + offset - sent_at[(m.header.stamp.sec, m.header.stamp.nanosec)]) * 1e3
            for recv, m in commands
            if (m.header.stamp.sec, m.header.stamp.nanosec) in sent_at
        ]
    )
    answered = {(m.header.stamp.sec, m.header.stamp.nanosec) for _, m in commands} & set(sent_at)
    dropped = len(sent_at) - len(answered)
    diag = probe.messages("/diagnostics")
    values = {kv.key: kv.value for kv in diag[-1][1].status[0].values} if diag else {}
    probe.close()
    stop_process(node)

    import platform

    print(
        f"policy: {'random weights, ' if not args.policy else args.policy + ', '}rover architecture "
        f"(64x64 CNN + IMU MLP + CfC/NCP) with an IMU input, updates on IMU; backend {args.backend}"
    )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores; {args.seconds:.0f} s at IMU "
        f"{args.imu_hz:.0f} Hz + camera {args.camera_hz:.0f} Hz; "
        f"{'SCHED_FIFO %d' % args.realtime_priority if args.realtime_priority else 'normal scheduling'}"
        f"{', nice %d' % args.nice if args.nice else ''}"
    )
    print(
        f"node inference p50/p99 (ms): {values.get('inference_ms.p50', '?')} / {values.get('inference_ms.p99', '?')}"
        f"; stamp->publish inside the node p50/p99 (ms): {values.get('command_age_ms.p50', '?')} / "
        f"{values.get('command_age_ms.p99', '?')} (last 500 updates)"
    )
    print(f"load average during the run: {os.getloadavg()[0]:.1f}")
    print(f"imu_messages_sent: {len(sent_at)}")
    print(f"imu_messages_dropped: {dropped}")
    print(f"imu_to_command_latency_p50_ms: {np.percentile(lat_ms, 50):.3f}")
    print(f"imu_to_command_latency_p99_ms: {np.percentile(lat_ms, 99):.3f}")
    print(f"imu_to_command_latency_max_ms: {lat_ms.max():.3f}")
    print(f"node_cpu_percent_of_one_core: {100.0 * (cpu1 - cpu0) / (wall1 - wall0):.1f}")
    print(f"rejected_total: {values.get('rejected_total', '?')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
