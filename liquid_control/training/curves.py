"""``curves.png`` of a training run: its ``metrics.csv`` rows drawn, for a reader without TensorBoard.

Left: the behaviour-cloning loss of every epoch (and a bag run's validation loss), rounds marked; right: the
success of each round's drivers (collection: the expert, or the expert and the policy under DAgger's beta) and of
the policy alone on the selection episodes.
"""

from __future__ import annotations

from pathlib import Path

from liquid_control.figures import pyplot, save_figure


def _series(rows: list[dict], kind: str, key: str) -> tuple[list[int], list[float]]:
    picked = [row for row in rows if row["kind"] == kind and row.get(key, "") != ""]
    return [int(row["epoch"]) for row in picked], [float(row[key]) for row in picked]


def plot_curves(rows: list[dict], path: str | Path, title: str) -> Path:
    """Draw ``rows`` (metrics.csv's, as dicts) into the PNG ``path`` (written atomically); returns it."""
    plt = pyplot()
    fig, (loss_ax, success_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    try:
        epochs, train_loss = _series(rows, "train", "loss")
        loss_ax.plot(epochs, train_loss, marker=".", label="training (BC loss)")
        epochs, validation_loss = _series(rows, "validate", "loss")
        if epochs:
            loss_ax.plot(epochs, validation_loss, marker="s", linestyle="--", label="validation bags")
        starts = sorted({int(row["epoch"]) for row in rows if row["kind"] == "collect"} - {0})
        for start in starts:
            loss_ax.axvline(start + 0.5, color="grey", linewidth=0.8, linestyle=":")
        losses = train_loss + validation_loss
        if losses and all(value > 0 for value in losses):  # a log axis has no place for a zero
            loss_ax.set_yscale("log")
        loss_ax.set_xlabel("epoch" + (" (dotted: a DAgger round's data added)" if starts else ""))
        loss_ax.set_ylabel("loss (MSE, actions scaled to [-1, 1])")
        # above the axes, not in them: inside, "upper right" hid the last epochs' loss and "best" the first
        # round's 100% success (a curve can pass through every corner)
        loss_ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), fontsize=8, frameon=False)
        for kind, label, marker in (
            ("collect", "collection drivers (expert, then DAgger's mix)", "o"),
            ("eval", "policy alone (selection episodes)", "s"),
        ):
            picked = [row for row in rows if row["kind"] == kind and row.get("success", "") != ""]
            rounds = [int(row["round"]) for row in picked]
            _, success = _series(rows, kind, "success")
            counts = sorted({str(row.get("episodes", "")) for row in picked} - {"", "None"}, key=int)
            if counts:  # a rate of 2 episodes is not one of 50
                label += f", {'/'.join(counts)} episode{'s' if counts != ['1'] else ''}"
            if rounds:
                success_ax.plot(rounds, [100 * value for value in success], marker=marker, label=label)
        success_ax.set_ylim(-5, 105)
        success_ax.set_xlabel("round (0: demonstrations)")
        success_ax.set_ylabel("success (%)")
        success_ax.xaxis.get_major_locator().set_params(integer=True)
        if success_ax.lines:
            success_ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), fontsize=8, frameon=False)
        else:
            success_ax.text(0.5, 0.5, "no success measured", ha="center", va="center", transform=success_ax.transAxes)
        # the config's name as written: a $ in it is no formula
        fig.suptitle(f"training curves: {title}", parse_math=False)
        fig.tight_layout()
    except BaseException:  # a figure that failed to draw is closed too
        plt.close(fig)
        raise
    return save_figure(fig, path, dpi=100)
