"""CommandLimiter on its own (no ROS): inputs that made a NaN or silently broadcast command are refused."""

import numpy as np
import pytest

from liquid_control.runtime import CommandLimiter


@pytest.mark.parametrize("scale", [[np.nan, 1.0], [np.inf, 1.0]])
def test_a_scale_that_is_not_finite_is_refused(scale):
    """Before: a NaN scale made every command of that element NaN (an inf one NaN for a zero action)."""
    with pytest.raises(ValueError, match="scale must be finite"):
        CommandLimiter(scale, [1.0, 1.0], [1.0, 1.0])


def test_an_action_of_another_size_or_a_time_that_is_not_finite_is_refused():
    """Before: an action (1,) was broadcast over both elements silently, (3,) was numpy's bare broadcast error, and
    a NaN time made the rate limit, so the command, NaN."""
    lim = CommandLimiter([1.0, 1.5], [1.0, 1.5], [2.0, 10.0])
    np.testing.assert_allclose(lim([0.5, 0.5], 0.0), [0.5, 0.75])
    for action in ([0.5], [0.5, 0.5, 0.5]):
        with pytest.raises(ValueError, match=r"action must have shape \(2,\)"):
            lim(action, 0.1)
    for now in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="now must be a finite time"):
            lim([0.9, 0.9], now)
        with pytest.raises(ValueError, match="now must be a finite time"):
            lim.stop(now)
    np.testing.assert_allclose(lim([0.9, 0.9], 0.1), [0.7, 1.35])  # the refused calls changed nothing


def test_an_infinite_rate_limit_disables_it_and_an_action_that_is_not_finite_is_refused():
    """Before: max_rate inf (the limit off) made the command NaN whenever two came at the same time (inf * 0), and
    a NaN action passed every clip and stayed the previous command, so every later command was NaN too."""
    lim = CommandLimiter([1.0, 1.0], [1.0, 1.0], [np.inf, 2.0])
    np.testing.assert_allclose(lim([0.5, 0.5], 1.0), [0.5, 0.5])
    np.testing.assert_allclose(lim([-0.5, -0.5], 1.0), [-0.5, 0.5])  # same time: no change allowed but unlimited
    np.testing.assert_allclose(lim([-0.5, -0.5], 1.1), [-0.5, 0.3])
    for action in ([np.nan, 0.0], [0.0, np.inf]):
        with pytest.raises(ValueError, match="action must be finite"):
            lim(action, 1.2)
    np.testing.assert_allclose(lim([1.0, 1.0], 1.2), [1.0, 0.5])  # the refused calls changed nothing
    with pytest.raises(ValueError, match=r"max_command and max_rate must be > 0 \(inf disables a limit\)"):
        CommandLimiter([1.0], [1.0], [np.nan])


def test_new_limits_go_on_from_the_previous_command_and_a_lowered_maximum_holds_at_once():
    """A lowered max_command set at run time did not hold at once: the new limiter went on from the previous
    command above it, and the rate limit ramped the commands down from there (with a rate of 0.5, 1.8 s for
    1.0 -> 0.1)."""
    lim = CommandLimiter([1.0, 1.0], [1.0, 1.0], [0.5, 0.5])
    lim.stop(0.0)
    for k in range(1, 5):
        lim([1.0, -1.0], float(k))
    np.testing.assert_allclose(lim.previous, [1.0, -1.0])
    lowered = lim.with_limits([0.1, 0.1], [0.5, 0.5])
    np.testing.assert_allclose(lowered([1.0, -1.0], 4.01), [0.1, -0.1])  # was [0.995, -0.995]
    np.testing.assert_allclose(lowered([-1.0, 1.0], 4.21), [0.0, 0.0], atol=1e-12)  # the rate limit goes on
    raised = lowered.with_limits([2.0, 2.0], [0.5, 0.5])  # a raised maximum: ramps up from the last command
    np.testing.assert_allclose(raised([1.0, 1.0], 4.41), [0.1, 0.1], atol=1e-12)
    assert raised.previous_time == 4.41 and lim.max_command.tolist() == [1.0, 1.0]  # the old one unchanged


def test_a_clock_that_steps_forward_does_not_lift_the_rate_limit():
    """The elapsed time since the previous command is credited up to max_elapsed: a clock stepping forward an hour
    (NTP) gave 3600 s of ramp, so the next command jumped from 1.0 to -1.0 in one message under a rate of 0.5/s."""
    lim = CommandLimiter([1.0], [1.0], [0.5], max_elapsed=0.5)
    lim.stop(0.0)
    for k in range(1, 5):
        lim([1.0], float(k))
    np.testing.assert_allclose(lim([-1.0], 4.0 + 3600.0), [0.75])  # was [-1.0]
    np.testing.assert_allclose(lim([-1.0], 4.0 + 3600.1), [0.7])  # the limit goes on as before
    assert lim.with_limits([1.0], [0.5]).max_elapsed == 0.5  # new limits keep the cap
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="max_elapsed must be > 0 seconds"):
            CommandLimiter([1.0], [1.0], [0.5], max_elapsed=bad)
