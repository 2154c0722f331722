"""matplotlib for the report's figures, without a display (the evaluation runs headless)."""

from __future__ import annotations


def pyplot():
    """matplotlib.pyplot on the Agg backend (imported on first use: the evaluation itself needs no matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
