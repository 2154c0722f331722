"""Sensor timing model: seeded, with the nominal rate, bounded jitter, dropout fraction and latency."""

import numpy as np
import pytest

from sim_envs.timing import SensorStream, SensorTiming


def test_nominal_rate_jitter_bounds_and_seed():
    timing = SensorTiming(rate_hz=100.0, jitter=0.1)
    stamps, arrivals = timing.message_stamps(np.random.default_rng(0), duration=50.0)
    intervals = np.diff(stamps)
    assert len(stamps) == pytest.approx(5000, rel=0.01)
    assert intervals.mean() == pytest.approx(0.01, rel=0.005)
    assert intervals.min() >= 0.009 - 1e-12 and intervals.max() <= 0.011 + 1e-12
    assert intervals.min() < 0.0092 and intervals.max() > 0.0108  # the whole +-10% band is used
    np.testing.assert_array_equal(arrivals, stamps)  # no latency
    again, _ = timing.message_stamps(np.random.default_rng(0), duration=50.0)
    np.testing.assert_array_equal(stamps, again)
    other, _ = timing.message_stamps(np.random.default_rng(1), duration=50.0)
    assert not np.array_equal(stamps[:100], other[:100])


def test_dropout_fraction_and_latency():
    timing = SensorTiming(rate_hz=200.0, jitter=0.0, dropout=0.3, latency=0.04)
    stream = SensorStream(timing, np.random.default_rng(3))
    stamps = [stream.pop() for _ in range(7000)]
    delivered = len(stamps)
    fraction_lost = stream.dropped / (stream.dropped + delivered)
    assert fraction_lost == pytest.approx(0.3, abs=0.015)
    # Without jitter every gap is a whole number of periods.
    gaps = np.diff(stamps) / timing.period
    np.testing.assert_allclose(gaps, np.round(gaps), atol=1e-6)
    assert stream.next_arrival - stream.next_stamp == pytest.approx(0.04)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(rate_hz=0.0),
        dict(rate_hz=10, jitter=1.0),
        dict(rate_hz=10, dropout=-0.1),
        dict(rate_hz=10, latency=float("nan")),
        dict(rate_hz=float("inf")),
        dict(rate_hz=True),  # was a 1 Hz sensor
        dict(rate_hz="10"),  # was numpy's TypeError naming no field
        dict(rate_hz=10, latency=None),
    ],
)
def test_invalid_timing_rejected(kwargs):
    with pytest.raises(ValueError, match="rate_hz|jitter|dropout|latency"):
        SensorTiming(**kwargs)
