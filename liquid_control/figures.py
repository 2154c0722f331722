"""matplotlib without a display (evaluation, training and the viewer run headless), and figures written whole."""

from __future__ import annotations

from pathlib import Path

from liquid_control.atomic_file import atomic_write


def pyplot():
    """matplotlib.pyplot on the Agg backend (imported on first use: nothing but the figures needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int) -> Path:
    """Write ``fig`` as a PNG at exactly ``path`` and close it, also when the writing fails: never a truncated
    picture where a good one was (a full disk's error names ``path``), never a figure left open in a long run.
    PNG whatever the suffix: matplotlib would choose the format by a suffix and add ".png" to a name without one."""
    try:
        with atomic_write(path) as handle:
            fig.savefig(handle, dpi=dpi, format="png")
    finally:
        pyplot().close(fig)
    return Path(path)
