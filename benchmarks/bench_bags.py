"""Throughput of bags for training: a recorded camera+IMU bag read, decoded and turned into training data, in
multiples of its recorded duration (target: >= 10x on this machine).

    .venv/bin/python benchmarks/bench_bags.py [--episodes 6] [--out /tmp/bench_bags]   # ~1 min; --episodes 1: ~5 s

Records expert episodes of the rover (64x64 camera + IMU, one bag each) at the world's rates (camera 15 Hz,
IMU 100 Hz) and at twice them (30 Hz + 200 Hz, a typical robot), then times, over all bags:

- read: the MCAP messages of the camera, IMU and command topics (bytes, no decoding);
- decode: read + CDR deserialization + the readings the node takes (image_to_numpy, IMU vector);
- training data: what ``liquid-control train --bag`` does per bag (PolicyRunner over every message with a
  camera+IMU policy's spec, labels, segments written to the cache): the path training actually takes.

Each figure is recorded seconds per wall second; a line says whether each recording's training data met the
target, beside its figure; the last lines are `name: value`.

Your own recordings instead (nothing is recorded; the same three figures, against the bags' recorded duration):

    .venv/bin/python benchmarks/bench_bags.py --bag bags/day1/* [--config POLICY.yaml] [--node-params YAML]
        [--topic camera=/front/image_raw] [--command-topic /teleop/cmd_vel] [--set KEY=VALUE]

The policy's input topics and the command topic are found as ``liquid-control train --bag`` finds them (the
config's ``data:`` section, the node's parameter file, ``--topic``, ...); without ``--config`` the camera+IMU
rover policy above. The lines start with ``bags``.
"""

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from liquid_control.bags import BagError, BagReader, data_spec
from liquid_control.bags.expert import record_expert_episodes
from liquid_control.bags.messages import sensor_reading
from liquid_control.bags.stream import add_data_arguments, data_overrides
from liquid_control.paths import output_file_problem

TOPICS = {"/camera/image_raw": "camera", "/imu/data": "imu"}
CONFIG = Path(__file__).resolve().parent.parent / "policies/configs/cfc_ncp_rover.yaml"
CAMERA_IMU = {"observation.vectors": {"imu": 6}}  # a camera+IMU policy: both topics go through the runner
TARGET_X_REALTIME = 10  # issue 14: a recording read, decoded and made training data at >= 10x its duration


def target_line(training_data_x_realtime: dict[str, float]) -> str:
    """The target beside the measured figure of each recording (name -> recorded seconds per wall second of the
    training data), met or not."""
    figures = ", ".join(
        f"{name} {x:.1f}x " + ("met" if x >= TARGET_X_REALTIME else "NOT met")
        for name, x in training_data_x_realtime.items()
    )
    return f"target >= {TARGET_X_REALTIME}x the recorded duration, read + decoded + training data: {figures}"


def recorded_seconds(bags, allow_truncated: bool = False) -> float:
    total = 0.0
    for bag in bags:
        with BagReader(bag, allow_truncated=allow_truncated) as reader:
            total += reader.duration_s
    return total


def time_read(
    bags, decode: bool, topics: dict = TOPICS, command_topic: str = "/cmd_vel", allow_truncated: bool = False
) -> tuple[float, int]:
    """Read (and with ``decode`` deserialize and take the readings of) ``topics`` (topic -> sensor) and
    ``command_topic`` of every bag: (wall seconds, messages)."""
    start, n = time.perf_counter(), 0
    for bag in bags:
        with BagReader(bag, allow_truncated=allow_truncated) as reader:
            for msg in reader.messages([*topics, command_topic]):
                n += 1
                if decode:
                    decoded = msg.decode()
                    if msg.topic in topics:
                        sensor_reading(topics[msg.topic], decoded)
    return time.perf_counter() - start, n


def time_training_data(
    bags, config, cache: Path, spec=None, window: int = 512, allow_truncated: bool = False
) -> tuple[float, int]:
    from liquid_control.training.bag_data import convert_bag

    spec = spec if spec is not None else data_spec(config)
    start, updates = time.perf_counter(), 0
    for i, bag in enumerate(bags):
        index = convert_bag(str(bag), config, spec, cache / f"{i:04d}", window, allow_truncated, lambda m: None)
        updates += index["stats"]["updates"]
    return time.perf_counter() - start, updates


def bag_size_mb(bag) -> float:
    path = Path(bag)
    files = [f for f in path.rglob("*") if f.is_file()] if path.is_dir() else [path]
    return sum(f.stat().st_size for f in files) / 1e6


def own_bags(args):
    """``--bag``: (bags, policy config, data spec, data settings) as ``liquid-control train --bag`` takes them."""
    from liquid_control.policy import apply_overrides, load_config
    from liquid_control.training.bag_data import bag_data_spec, resolve
    from liquid_control.training.cli import parse_overrides

    data = data_overrides(args)
    data["bags"] = list(args.bag)
    config, data = resolve(args.config or CONFIG, data, Path.cwd())  # the config's data: section, globs expanded
    cfg = load_config(config) if isinstance(config, (str, Path)) else config
    overrides = {} if args.config else dict(CAMERA_IMU)
    overrides.update(parse_overrides(args.overrides))
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    spec = bag_data_spec(cfg, data)
    for bag in data["bags"]:
        with BagReader(bag, allow_truncated=data["allow_truncated"]) as reader:
            held = sorted(reader.topics)
        missing = [(sensor, topic) for sensor, topic in spec.topics.items() if topic not in held]
        if missing:
            sensor, topic = missing[0]
            raise ValueError(
                f"{bag}: holds no {topic} (the policy's {sensor} input); it holds {', '.join(held) or 'nothing'}; "
                f"give the topic with --topic {sensor}=TOPIC (or --node-params, or the config's data: section)"
            )
    return data["bags"], cfg, spec, data


def measure_own_bags(args) -> dict:
    """Read, decode and make the training data of the bags of ``--bag``; prints the line, returns the figures."""
    bags, cfg, spec, data = own_bags(args)
    truncated = data["allow_truncated"]
    seconds = recorded_seconds(bags, truncated)
    if not seconds > 0:
        raise ValueError(f"the bags span {seconds:.3f} s of recording: nothing to measure their throughput against")
    topics = {topic: sensor for sensor, topic in spec.topics.items()}
    print(
        f"bags: inputs {', '.join(f'{s}={t}' for s, t in spec.topics.items())}, commands {spec.command_topic}",
        flush=True,
    )
    for bag in bags:  # warm up: rosbags builds its deserializers on first use (one message of each topic)
        with BagReader(bag, allow_truncated=truncated) as reader:
            wanted = [t for t in (*topics, spec.command_topic) if t in reader.topics]
            seen = set()
            for msg in reader.messages(wanted):
                if msg.topic not in seen:
                    seen.add(msg.topic)
                    msg.decode()
                if len(seen) == len(wanted):
                    break
    size = sum(bag_size_mb(b) for b in bags)
    read_wall, n = time_read(bags, False, topics, spec.command_topic, truncated)
    decode_wall, _ = time_read(bags, True, topics, spec.command_topic, truncated)
    cache = Path(tempfile.mkdtemp(prefix="bench_bags_cache_"))
    try:
        data_wall, updates = time_training_data(bags, cfg, cache, spec, data["window"], truncated)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    print(
        f"bags: {len(bags)} bags, {seconds:.1f} s recorded, {n} messages, {size:.1f} MB; read {read_wall:.2f} s, "
        f"read+decode {decode_wall:.2f} s, training data {data_wall:.2f} s ({updates} updates)"
    )
    return {
        "bags_read_x_realtime": seconds / read_wall,
        "bags_decode_x_realtime": seconds / decode_wall,
        "bags_training_data_x_realtime": seconds / data_wall,
        "bags_messages_per_second": n / decode_wall,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=None, help="expert episodes (bags) per rate (default 6)")
    parser.add_argument(
        "--out",
        default="",
        help="folder for the bags and their training data, new or empty (default: a temporary one, removed)",
    )
    own = parser.add_argument_group("your own recordings (instead of recording expert episodes)")
    own.add_argument(
        "--bag", nargs="+", default=[], metavar="PATH", help="rosbag2 recording(s) to measure (folders or globs)"
    )
    own.add_argument(
        "--config",
        default=None,
        metavar="YAML",
        help="policy YAML whose inputs are read, its data: section included (default: the camera+IMU rover policy)",
    )
    own.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config value"
    )
    add_data_arguments(parser)
    args = parser.parse_args()
    if args.bag:
        if args.episodes is not None or args.out:
            parser.error("--episodes and --out are for the recorded expert episodes; --bag records nothing")
        from liquid_control.policy import PolicyConfigError

        try:
            results = measure_own_bags(args)
        except (BagError, ValueError, RuntimeError, PolicyConfigError) as exc:  # RuntimeError: TrainingError
            print(f"bench_bags: error: {exc}", file=sys.stderr)
            sys.exit(2)
        print(target_line({"bags": results["bags_training_data_x_realtime"]}))
        for key, value in results.items():
            print(f"{key}: {value:.1f}")
        return
    data_options = {
        "--config": args.config,
        "--set": args.overrides,
        "--node-params": args.node_params,
        "--topic": args.topics,
        "--command-topic": args.command_topic,
        "--label": args.label,
        "--label-offset-s": args.label_offset_s,
        "--label-max-wait-s": args.label_max_wait_s,
        "--allow-truncated": args.allow_truncated,
    }
    given = [option for option, value in data_options.items() if value not in (None, [], False)]
    if given:
        parser.error(f"{', '.join(given)}: only with --bag (the recorded expert episodes use the rover's topics)")
    args.episodes = 6 if args.episodes is None else args.episodes
    if args.episodes < 1:  # the rates divide by the recorded duration
        parser.error(f"--episodes must be >= 1, got {args.episodes}")
    if args.out:  # before the worlds are built: a file, a folder of an earlier run or one we may not write in
        out = Path(args.out)
        if out.is_dir() and any(out.iterdir()):
            parser.error(f"--out {out}: not empty (an earlier run's bags?); give a new or empty folder")
        problem = output_file_problem(out / "15hz_camera_100hz_imu", "")
        if problem:
            parser.error(f"--out {out}: {problem}")
    from liquid_control.policy import apply_overrides, load_config  # torch: after the options are checked

    root = Path(args.out or tempfile.mkdtemp(prefix="bench_bags_"))
    config = apply_overrides(load_config(CONFIG), CAMERA_IMU)  # a camera+IMU policy: both topics go through the runner
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
    suffix = "_training_data_x_realtime"
    print(target_line({key.removesuffix(suffix): x for key, x in results.items() if key.endswith(suffix)}))
    for key, value in results.items():
        print(f"{key}: {value:.1f}")


if __name__ == "__main__":
    from liquid_control.processes import exit_status_of

    status = exit_status_of("bench_bags.py", main)  # None: done (runpy callers get no SystemExit)
    if status:
        sys.exit(status)
