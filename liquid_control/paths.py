"""Where the package's shared files (launch/, config/, policies/) are, however it was installed."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE = "liquid_control"
_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def share_dir() -> Path:
    """share/liquid_control of a colcon or pip install, else the source tree (editable install, tests)."""
    if (_SOURCE_ROOT / "package.xml").is_file():
        return _SOURCE_ROOT
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE))
    except Exception:  # ament index not set up: fall back to the prefix pip installed into
        import sys

        candidate = Path(sys.prefix) / "share" / PACKAGE
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"cannot find the share directory of {PACKAGE}: not in a source tree, not in the ament index, "
        f"not under {os.path.join(__import__('sys').prefix, 'share', PACKAGE)}"
    )


def policies_dir() -> Path:
    """The shipped policies (share/liquid_control/policies)."""
    return share_dir() / "policies"


def config_dir() -> Path:
    """The shipped node parameter files (share/liquid_control/config)."""
    return share_dir() / "config"


def launch_dir() -> Path:
    """The launch files (share/liquid_control/launch)."""
    return share_dir() / "launch"


def resolve_policy_file(value: str) -> Path:
    """A policy file named as a user would: an absolute path or one relative to the working directory, else
    a shipped policy (share/liquid_control/policies). A ``.pt`` with only its ``.onnx`` export beside it counts
    (the backends run the export then, e.g. on a robot without torch). FileNotFoundError naming where it looked
    when there is none, IsADirectoryError (with the run's policy.pt as a hint) for a folder."""

    def present(path: Path) -> bool:
        return path.exists() or (path.suffix == ".pt" and path.with_suffix(".onnx").is_file())

    path = Path(value).expanduser()
    if not path.is_absolute() and not present(path):
        shipped = policies_dir() / path
        if not present(shipped):
            raise FileNotFoundError(
                f"policy {value!r}: no such policy file ({path.resolve()}, nor a shipped policy {shipped})"
            )
        path = shipped
    if not present(path):
        raise FileNotFoundError(f"policy {value!r}: no such policy file ({path})")
    if path.is_dir():
        hint = f"; did you mean {path / 'policy.pt'}?" if (path / "policy.pt").is_file() else ""
        raise IsADirectoryError(f"policy {value!r}: {path} is a folder, not a policy file{hint}")
    return path
