"""The evaluation's error types, at the bottom of the evaluation's import graph (everything may raise them)."""

from __future__ import annotations


class EvaluationSetupError(ValueError):
    """The evaluation request is invalid (names the shift, checkpoint or policy and the problem)."""


class RunFailedError(RuntimeError):
    """Episodes or an experiment's training runs failed while running (an exception in a world, a policy or the
    code, or a worker process died); names them. What finished is kept."""
