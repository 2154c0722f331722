"""Throughput of bags for training: a recorded camera+IMU bag read, decoded and turned into training data, in
multiples of its recorded duration (target: >= 10x on this machine).

    .venv/bin/python benchmarks/bench_bags.py [--episodes 6] [--out /tmp/bench_bags]

Records expert episodes of the rover (64x64 camera + IMU, one bag each) at the world's rates (camera 15 Hz,
IMU 100 Hz) and at twice them (30 Hz + 200 Hz, a typical robot), then times, over all bags:

- read: the MCAP messages of the camera, IMU and command topics (bytes, no decoding);
- decode: read + CDR deserialization + the readings the node takes (image_to_numpy, IMU vector);
- training data: what ``liquid-control train --bag`` does per bag (PolicyRunner over every message with a
  camera+IMU policy's spec, labels, segments written to the cache): the path training actually takes.

Each figure is recorded seconds per wall second; the last lines are `name: value`.
"""

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from liquid_control.bags import BagReader, data_spec
from liquid_control.bags.expert import record_expert_episodes
from liquid_control.bags.messages import sensor_reading
from liquid_control.policy import apply_overrides, load_config
from liquid_control.training.bag_data import convert_bag

TOPICS = {"/camera/image_raw": "camera", "/imu/data": "imu"}


def recorded_seconds(bags) -> float:
    total = 0.0
    for bag in bags:
        with BagReader(bag) as reader:
            total += reader.duration_s
    return total


def time_read(bags, decode: bool) -> tuple[float, int]:
    start, n = time.perf_counter(), 0
    for bag in bags:
        with BagReader(bag) as reader:
            for msg in reader.messages([*TOPICS, "/cmd_vel"]):
                n += 1
                if decode:
                    decoded = msg.decode()
                    if msg.topic in TOPICS:
                        sensor_reading(TOPICS[msg.topic], decoded)
    return time.perf_counter() - start, n


def time_training_data(bags, config, cache: Path) -> tuple[float, int]:
    spec = data_spec(config)
    start, updates = time.perf_counter(), 0
    for i, bag in enumerate(bags):
        index = convert_bag(str(bag), config, spec, cache / f"{i:04d}", 512, False, lambda m: None)
        updates += index["stats"]["updates"]
    return time.perf_counter() - start, updates


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=6, help="expert episodes (bags) per rate")
    parser.add_argument("--out", default="", help="folder for the bags (default: a temporary one, removed)")
    args = parser.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="bench_bags_"))
    config = apply_overrides(
        load_config(Path(__file__).resolve().parent.parent / "policies/configs/cfc_ncp_rover.yaml"),
        {"observation.vectors": {"imu": 6}},
    )  # a camera+IMU policy: both topics go through the runner
    results = {}
    try:
        for label, shift in (("15hz_camera_100hz_imu", ""), ("30hz_camera_200hz_imu", "sensor_rate=2")):
            t0 = time.perf_counter()
            outcomes = record_expert_episodes(root / label, range(100, 100 + args.episodes), shift=shift)
            record_wall = time.perf_counter() - t0
            bags = [o["bag"] for o in outcomes]
            seconds = recorded_seconds(bags)
            time_read(bags[:1], decode=True)  # warm up: rosbags builds its deserializers on first use
            size = sum(f.stat().st_size for b in bags for f in Path(b).iterdir()) / 1e6
            read_wall, n = time_read(bags, decode=False)
            decode_wall, _ = time_read(bags, decode=True)
            data_wall, updates = time_training_data(bags, config, root / f"{label}_cache")
            print(
                f"{label}: {len(bags)} bags, {seconds:.1f} s recorded, {n} messages, {size:.1f} MB "
                f"(recorded in {record_wall:.1f} s); read {read_wall:.2f} s, read+decode {decode_wall:.2f} s, "
                f"training data {data_wall:.2f} s ({updates} updates)"
            )
            results[f"{label}_read_x_realtime"] = seconds / read_wall
            results[f"{label}_decode_x_realtime"] = seconds / decode_wall
            results[f"{label}_training_data_x_realtime"] = seconds / data_wall
            results[f"{label}_messages_per_second"] = n / decode_wall
    finally:
        if not args.out:
            shutil.rmtree(root, ignore_errors=True)
    for key, value in results.items():
        print(f"{key}: {value:.1f}")


if __name__ == "__main__":
    main()
