"""Figures are written whole or not at all, and closed however the writing ends (liquid_control.figures)."""

import errno

import numpy as np
import pytest

from liquid_control.figures import pyplot, save_figure


def _failing_savefig(self, fname, **kwargs):
    """Part of a picture, then the disk is full (into a file handle or a path, as savefig takes either)."""
    if hasattr(fname, "write"):
        fname.write(b"\x89PNG half")
    else:
        with open(fname, "wb") as handle:
            handle.write(b"\x89PNG half")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_write_that_fails_keeps_the_good_picture_names_it_and_closes_the_figure(tmp_path, monkeypatch):
    plt = pyplot()
    path = tmp_path / "success_by_shift.png"
    path.write_bytes(b"the good picture")
    fig = plt.figure()
    monkeypatch.setattr(type(fig), "savefig", _failing_savefig)
    with pytest.raises(OSError) as raised:
        save_figure(fig, path, dpi=50)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(path)
    assert path.read_bytes() == b"the good picture"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["success_by_shift.png"]  # no temporary file left
    assert not plt.fignum_exists(fig.number)


def test_a_path_without_a_suffix_is_a_png_at_exactly_that_path(tmp_path):
    plt = pyplot()
    fig = plt.figure(figsize=(1, 1))
    assert save_figure(fig, tmp_path / "snapshot", dpi=20) == tmp_path / "snapshot"
    assert (tmp_path / "snapshot").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["snapshot"] and not plt.fignum_exists(fig.number)


def test_the_saliency_grid_is_closed_and_the_old_one_kept_when_its_writing_fails(tmp_path, monkeypatch):
    """Before: the grid was saved with savefig straight into the path given (whole only because the report wrapped
    it in a temporary file) and closed only after a successful write: a failed write left the figure open."""
    from liquid_control.evaluation.saliency import plot_saliency_grid
    from liquid_control.policy.encoders import CameraEncoder

    class Policy:
        camera = CameraEncoder(16, 16, [4, 4], [3, 3], [2, 2], 8)

    plt = pyplot()
    before = set(plt.get_fignums())
    path = tmp_path / "saliency_grid.png"
    path.write_bytes(b"the good grid")
    frames = {"in_distribution": np.zeros((16, 16, 3), np.uint8)}
    monkeypatch.setattr(plt.Figure, "savefig", _failing_savefig)
    with pytest.raises(OSError):
        plot_saliency_grid([("p", Policy(), frames)], str(path))
    assert path.read_bytes() == b"the good grid"
    assert set(plt.get_fignums()) == before


@pytest.mark.parametrize("name", ["shifts.png", "shifts.pdf"])
def test_the_contact_sheet_keeps_the_old_picture_when_its_writing_fails(tmp_path, monkeypatch, capsys, name):
    """Before: sim_envs.contact_sheet saved with savefig straight into --out (docs/shifts.png): a full disk or a
    Ctrl-C while it wrote left half a picture where the good one was."""
    from sim_envs import contact_sheet

    plt = pyplot()
    monkeypatch.setattr(contact_sheet, "rover_view", lambda shift, seed, steps, size: np.zeros((size, size, 3)))
    out = tmp_path / name
    out.write_bytes(b"the good sheet")
    real = plt.Figure.savefig
    monkeypatch.setattr(plt.Figure, "savefig", _failing_savefig)
    with pytest.raises(SystemExit) as stop:
        contact_sheet.main(["--out", str(out), "--size", "8", "--steps", "0"])
    assert stop.value.code == 1 and "cannot write the picture" in capsys.readouterr().err
    assert out.read_bytes() == b"the good sheet"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temporary file left
    monkeypatch.setattr(plt.Figure, "savefig", real)
    contact_sheet.main(["--out", str(out), "--size", "8", "--steps", "0"])
    assert out.read_bytes()[:4] == (b"%PDF" if name.endswith(".pdf") else b"\x89PNG")
    plt.close("all")
