"""The evaluation's one error type, at the bottom of the evaluation's import graph (everything may raise it)."""

from __future__ import annotations


class EvaluationSetupError(ValueError):
    """The evaluation request is invalid (names the shift, checkpoint or policy and the problem)."""
