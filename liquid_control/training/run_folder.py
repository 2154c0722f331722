"""What marks a folder as a training run's (``train --out``), read without torch: training decides from it whether
a folder holds a run to keep or resume, and other commands (``eval --out``) refuse to write among a run's files
before they load anything heavy."""

from __future__ import annotations

import os
from pathlib import Path

COMMAND_FILE = "command.txt"  # the run's first command, for a resume before its first checkpoint holds it
START_FILE = "started_from.json"  # a warm start's record until the run's first checkpoint holds it


def holds_run(out: Path) -> bool:
    """Whether ``out`` holds something of a training run that a fresh start would lose: a checkpoint, or a
    collected episode or converted bag under ``data/`` (a ``.*.tmp`` folder is a conversion that never finished)."""
    if os.path.exists(out / "checkpoint.pt"):  # (pathlib's exists() raises for a name too long)
        return True
    data = out / "data"
    return os.path.isdir(data) and any(
        f.is_file() and not any(part.startswith(".") and part.endswith(".tmp") for part in f.relative_to(data).parts)
        for f in data.rglob("*")
    )


def training_run_entries(out: Path) -> list[str]:
    """What in ``out`` makes it a training run's folder: its policy or checkpoint, its config.yaml with what ``train``
    writes beside it at its start (command.txt; started_from.json of a warm start), else collected data
    (:func:`holds_run`); empty for any other folder (a project folder holding a config.yaml of its own is none, with a
    data.yaml, a common name of other tools' files, too; nor a run from Python without a command, killed before it
    wrote more). Other commands refuse to write their outputs there (an evaluation's report would mix with the run's
    files)."""
    found = [name for name in ("policy.pt", "checkpoint.pt") if (out / name).is_file()]
    if (out / "config.yaml").is_file():
        beside = [name for name in (COMMAND_FILE, START_FILE) if (out / name).is_file()]
        found += ["config.yaml", *beside] if beside else []
    return found or (["data/"] if holds_run(out) else [])
