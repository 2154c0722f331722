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


def fit_suptitle(fig, text: str, fontsize: float, **kwargs):
    """``fig.suptitle(text, **kwargs)`` broken at spaces into as many lines as it takes to fit the figure's width: a
    title wider than its figure is cut off at both sides in the PNG (a report with one shift draws a narrow figure)."""
    import textwrap

    title = fig.suptitle(text, fontsize=fontsize, **kwargs)
    renderer = fig.canvas.get_renderer()
    width = len(text)
    while title.get_window_extent(renderer).width > 0.98 * fig.bbox.width and width > 12:
        width = int(width * 0.85)
        title.set_text(textwrap.fill(text, width, break_long_words=False))
    return title


def save_figure(fig, path: str | Path, dpi: int, replace: bool = True) -> Path:
    """Write ``fig`` as a PNG at exactly ``path`` and close it, also when the writing fails: never a truncated
    picture where a good one was (a full disk's error names ``path``), never a figure left open in a long run.
    PNG whatever the suffix: matplotlib would choose the format by a suffix and add ".png" to a name without one.
    ``replace=False``: FileExistsError where a file has the name by then (``atomic_write``)."""
    try:
        with atomic_write(path, replace=replace) as handle:
            fig.savefig(handle, dpi=dpi, format="png")
    finally:
        pyplot().close(fig)
    return Path(path)
