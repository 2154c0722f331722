"""``sensor_msgs/JointState`` -> the wheel velocities a policy reads, as the node and the bag readers both take them.

A driver may list its joints in any order (``joint_state_broadcaster`` sorts them its own way), so velocities are
taken by name in the order of the node's ``joint_names`` (the order the policy was trained on); a message without
names is read by position.
"""

from __future__ import annotations

import numpy as np

MISSING_JOINT = (
    "missing_joint"  # the rejection of a JointState naming joints but not (with a velocity) every needed one
)


def velocities_by_name(names, velocities, joint_names) -> tuple[np.ndarray | None, list[str]]:
    """(the velocities of ``joint_names`` in that order, []) or (None, the joints lacking a velocity)."""
    if not len(names):
        return np.asarray(velocities, dtype=np.float64), []
    # each needed name's last position, found by list.index from the end (a dict of every name took 0.4 s for a
    # JointState of 10^6 names, at each such message)
    backwards = list(names)[::-1]
    indices = [len(backwards) - 1 - backwards.index(name) if name in backwards else None for name in joint_names]
    lacking = [n for n, i in zip(joint_names, indices) if i is None or i >= len(velocities)]
    if lacking:
        return None, lacking
    return np.array([velocities[i] for i in indices], dtype=np.float64), []
