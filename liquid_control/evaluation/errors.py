"""The evaluation's error types, at the bottom of the evaluation's import graph (everything may raise them)."""

from __future__ import annotations


class EvaluationSetupError(ValueError):
    """The evaluation request is invalid (names the shift, checkpoint or policy and the problem)."""


class EpisodeFailedError(RuntimeError):
    """Episodes failed while running (an exception in a world or policy, or a worker process died); names them."""
