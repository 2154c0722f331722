"""header.stamp <-> seconds: the one conversion the node (live) and the bags (offline) share."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
from builtin_interfaces.msg import Time

from liquid_control.bags import messages as M
from liquid_control.conventions import stamps


@pytest.mark.parametrize("time_s", [0.0, 1.5, 12.3456789, 1_764_000_000.123456789, -0.25])
def test_sec_nanosec_round_trip_to_the_nanosecond(time_s):
    sec, nanosec = stamps.sec_nanosec(time_s)
    assert 0 <= nanosec <= 999_999_999
    Time(sec=sec, nanosec=nanosec)  # rclpy's own checks accept it
    # within half a nanosecond, plus the float's own resolution at that magnitude
    assert abs(stamps.seconds(SimpleNamespace(sec=sec, nanosec=nanosec)) - time_s) <= 0.5e-9 + 2 * np.spacing(time_s)


def test_fraction_rounding_up_to_a_whole_second_stays_in_its_second():
    # 2.9999999999 s: the fraction rounds to 1e9 ns, which is not a valid nanosec; the stamp stays in second 2
    assert stamps.sec_nanosec(2.9999999999) == (2, 999_999_999)
    assert stamps.sec_nanosec(-0.25) == (-1, 750_000_000)


def test_nanoseconds_and_split_are_inverse():
    for ns in (0, 1, 999_999_999, 1_000_000_000, 1_764_000_000_123_456_789):
        sec, nanosec = stamps.split_nanoseconds(ns)
        assert stamps.nanoseconds(SimpleNamespace(sec=sec, nanosec=nanosec)) == ns
        assert stamps.nanoseconds(Time(sec=sec, nanosec=nanosec)) == ns
    assert stamps.nanoseconds(42) == 42  # an int of nanoseconds passes through (a recorder's clock)


def test_bag_stamps_read_back_as_the_node_reads_rclpy_stamps():
    """The bag messages build and read stamps through this module: a message built for a bag (as sim_node's are
    recorded) and the node's rclpy Time of the same instant give the same seconds, bit for bit. A conversion of
    its own in bags.messages (as there was) would part the dt training takes from the dt the node integrates."""
    rng = np.random.default_rng(0)
    for time_s in rng.uniform(0, 2e9, 200):
        bag_msg = M.imu_message(np.zeros(6), float(time_s))
        sec, nanosec = stamps.sec_nanosec(float(time_s))
        live = Time(sec=sec, nanosec=nanosec)
        assert (bag_msg.header.stamp.sec, bag_msg.header.stamp.nanosec) == (live.sec, live.nanosec)
        assert M.stamp_seconds(bag_msg) == stamps.seconds(live)
        assert math.isfinite(M.stamp_seconds(bag_msg))
