"""Where the package's shared files (launch/, config/, policies/) are, however it was installed, and which code this
is (:func:`code_commit`: what evaluation reports and trained policies record), and whether a file, or a folder of
outputs, can be written where a command line was told to write it (:func:`output_file_problem`,
:func:`output_folder_problem`), and which paths a value that may be a glob or start with ``~`` names
(:func:`expand_pattern`, :func:`user_path`)."""

from __future__ import annotations

import functools
import glob
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from liquid_control import folder_lock

PACKAGE = "liquid_control"
_SOURCE_ROOT = Path(__file__).resolve().parent.parent


@functools.cache
def _recorded_share_dir() -> Path | None:
    """share/liquid_control as the pip install that put this module here recorded it: with ``--user``,
    ``--prefix`` or ``--target`` it is not under sys.prefix, and no ament index points at it."""
    from importlib import metadata

    here = Path(__file__).resolve()
    for dist in metadata.distributions(name=PACKAGE):
        files = dist.files or []
        if not any(Path(dist.locate_file(f)).resolve() == here for f in files):
            continue  # another installation of the package (e.g. an editable one further down sys.path)
        for f in files:
            if f.parts[-3:] == ("share", PACKAGE, "package.xml"):
                return Path(dist.locate_file(f)).resolve().parent
    return None


def checkout_dir() -> Path | None:
    """The source checkout this code runs from (editable install, tests), None when installed: what its git commit
    describes. Folders above an installed package (a user's project holding the venv) are not this code's."""
    return _SOURCE_ROOT if (_SOURCE_ROOT / "package.xml").is_file() else None


def share_dir() -> Path:
    """share/liquid_control of a colcon or pip install, else the source tree (editable install, tests)."""
    checkout = checkout_dir()
    if checkout is not None:
        return checkout
    recorded = _recorded_share_dir()
    if recorded is not None and (recorded / "package.xml").is_file():
        return recorded
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE))
    except Exception as exc:  # ament index not set up, or without this package: try the prefix pip installed into
        ament = f"the ament index ({type(exc).__name__}: {exc})"
    candidate = Path(sys.prefix) / "share" / PACKAGE
    if candidate.is_dir():
        return candidate
    raise FileNotFoundError(
        f"cannot find the share directory of {PACKAGE} (launch/, config/, policies/): no package.xml beside the "
        f"source ({_SOURCE_ROOT}), none recorded by a pip install of {Path(__file__).parent}, not in {ament}, "
        f"not {candidate}; reinstall the package (pip install / colcon build) or source the workspace's setup.bash"
    )


def policies_dir() -> Path:
    """The shipped policies (share/liquid_control/policies)."""
    return share_dir() / "policies"


def config_dir() -> Path:
    """The shipped node parameter files (share/liquid_control/config)."""
    return share_dir() / "config"


def _shipped_candidates(path: Path, folder: Path) -> list[Path]:
    """Where a relative name that is not in the working directory may be shipped: in ``folder`` by name, or, named
    as the docs name it (``policies/...``), at that path under share/liquid_control, whose layout is the
    checkout's. Other relative paths (``runs/...``) stay the working directory's, and so does a name that leaves
    ``folder`` (``../policies/x.pt`` is not a shipped file)."""
    if ".." in path.parts:
        return []
    in_share = Path(os.path.normpath(share_dir() / path))
    return [folder / path] + ([in_share] if in_share.is_relative_to(folder) else [])


def shipped_name_hint(value: str, folder: Path, suffix: str) -> str:
    """``; did you mean NAME.pt?`` where ``value``, a name without a suffix that names no file, is a shipped file's
    name without its ``suffix`` (``cfc_ncp_rover`` for policies/cfc_ncp_rover.pt): the names the docs list are the
    files'. Empty otherwise."""
    path = Path(value).expanduser()
    if path.suffix or path.is_absolute() or not path.name or os.path.exists(path):
        return ""
    named = path.with_name(path.name + suffix)
    return f"; did you mean {named}?" if any(map(os.path.isfile, _shipped_candidates(named, folder))) else ""


def shipped_policy_for(value: str) -> Path | None:
    """The shipped policy file that ``value``, a relative name with no such file in the working directory, names as
    the docs do (``policies/cfc_ncp_rover.pt``, or ``cfc_ncp_rover.pt``); None otherwise. The commands that read a
    checkpoint take the docs' names from any folder, as a user of the installed package runs them."""
    path = Path(value).expanduser()
    if path.is_absolute() or os.path.exists(path):
        return None
    return next((p for p in _shipped_candidates(path, policies_dir()) if os.path.isfile(p)), None)


def resolve_policy_file(value: str) -> Path:
    """A policy file named as a user would: an absolute path or one relative to the working directory, else
    a shipped policy (share/liquid_control/policies, by name or as the docs' ``policies/cfc_ncp_rover.pt``). A
    ``.pt`` with only its ``.onnx`` export beside it counts (the backends run the export then, e.g. on a robot
    without torch). FileNotFoundError naming where it looked when there is none, IsADirectoryError (with the
    run's policy.pt as a hint) for a folder."""

    def present(path: Path) -> bool:
        return os.path.exists(path) or (path.suffix == ".pt" and os.path.isfile(path.with_suffix(".onnx")))

    path = Path(value).expanduser()
    if not path.is_absolute() and not present(path):
        shipped = _shipped_candidates(path, policies_dir())
        path = next((p for p in shipped if present(p)), None)
        if path is None:
            raise FileNotFoundError(
                f"policy {value!r}: no such policy file ({Path(value).expanduser().resolve()}, nor a shipped policy "
                f"{' or '.join(map(str, shipped))}){shipped_name_hint(value, policies_dir(), '.pt')}"
            )
    if not present(path):
        raise FileNotFoundError(f"policy {value!r}: no such policy file ({path})")
    if path.is_dir():
        hint = f"; did you mean {path / 'policy.pt'}?" if (path / "policy.pt").is_file() else ""
        raise IsADirectoryError(f"policy {value!r}: {path} is a folder, not a policy file{hint}")
    return path


def resolve_config_file(value: str) -> Path:
    """A policy config named as the docs name it: a path that exists as given (absolute, or relative to the working
    directory), else a shipped config (share/liquid_control/policies/configs, by name or as the docs'
    ``policies/configs/cfc_ncp_rover.yaml``, which is how the installed package finds it outside the checkout).
    FileNotFoundError naming where it looked."""
    path = Path(value).expanduser()
    if os.path.exists(path):
        return path
    if path.is_absolute():
        raise FileNotFoundError(f"policy config {value!r}: no such file")
    shipped = _shipped_candidates(path, policies_dir() / "configs")
    found = next((p for p in shipped if os.path.isfile(p)), None)
    if found is None:
        raise FileNotFoundError(
            f"policy config {value!r}: no such file ({path.resolve()}, nor a shipped config "
            f"{' or '.join(map(str, shipped))}){shipped_name_hint(value, policies_dir() / 'configs', '.yaml')}"
        )
    return found


def _git(*args: str) -> str | None:
    """Git in this code's own checkout; None when installed (a git repository holding the venv is the user's)."""
    root = checkout_dir()
    if root is None:
        return None
    try:
        out = subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def code_commit() -> str:
    """The checkout's commit, marked when its tracked files differ from it."""
    commit = _git("rev-parse", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    if commit is None and checkout_dir() is None:
        from importlib import metadata

        try:
            return f"installed liquid_control {metadata.version('liquid_control')}"
        except metadata.PackageNotFoundError:
            return "unknown"
    return (commit or "unknown") + (" (with uncommitted changes)" if dirty else "")


def _writable_folder_problem(candidates: list[Path]) -> str | None:
    """Why nothing can be written under the first of ``candidates`` (a path, then its parents) that exists: it
    is a file or a dangling link, or this process may not write in it. The write is tried (a temporary file, removed
    at once): a folder the permission bits allow can still refuse (root in /sys, a read-only mount)."""
    folder = next((p for p in candidates if os.path.lexists(p)), None)  # a dangling link too: mkdir would fail on it
    if folder is None:
        return None
    if folder.is_symlink() and not folder.exists():  # a link to an unmounted drive or a moved folder
        return f"{folder} is a link to {os.readlink(folder)}, which does not exist"
    if not folder.is_dir():
        return f"{folder} exists and is not a folder"
    try:
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write_test_"):
            pass
    except OSError:
        return f"cannot write in {folder}"
    return None


def name_length_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot name a file on this system for its length (None: it can): a name between two slashes
    longer than its file system takes (255 bytes on ext4: 86 CJK characters), or the whole path longer than the
    system's limit. pathlib's exists() and is_dir() raise for such a path (Python 3.11), which ended commands in a
    traceback, or in 'cannot write' for a file to be read."""
    absolute = Path(path).absolute()
    known = next((p for p in absolute.parents if os.path.isdir(p)), Path("/"))
    try:
        name_max, path_max = os.pathconf(known, "PC_NAME_MAX"), os.pathconf(known, "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = 255, 4096
    for part in absolute.parts:
        size = len(os.fsencode(part))
        if size > name_max:
            return f"the name {part[:24]!r}... is {size} bytes, longer than the {name_max} a file name may have here"
    size = len(os.fsencode(str(absolute)))
    return f"is {size} bytes long, longer than the {path_max} a path may have here" if size >= path_max else None


def output_file_problem(path: str | Path, example_name: str) -> str | None:
    """Why a file cannot be written to ``path`` (None: it can, as far as can be told before writing): a folder, a
    parent that is a file, or a folder this process may not write in. Checked before the work whose result it is
    (rendering, a run), so a typo in an option costs nothing."""
    path = Path(path)
    problem = name_length_problem(path)
    if problem:
        return problem
    if os.path.isdir(path):
        return f"is a folder; give a file name such as {path / example_name}"
    return _writable_folder_problem(list(path.absolute().parents))


def output_folder_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be the folder a command writes its outputs in (None: it can, as far as can be told
    before writing; it may not exist yet): a file, under a file, or in a folder this process may not write in.
    Nothing is created. Callers name the option or path (``--out runs/x: exists and is not a folder``) and add
    their own rules (what the folder may already hold); checked before the work, so a typo costs nothing."""
    path = Path(path)
    problem = name_length_problem(path)
    if problem:
        return problem
    if os.path.exists(path) and not os.path.isdir(path):
        return "exists and is not a folder"
    return _writable_folder_problem([path.absolute(), *path.absolute().parents])


def user_path(value: str) -> str:
    """A path as a user wrote it, with a leading ``~`` (or ``~user``) expanded as a shell expands it on a word of its
    own: also where no shell did (a quoted ``"~/runs/Fahrt 1"``, ``--out=~/runs``, a YAML file, a ROS parameter),
    so that no folder named ``~`` is made in the working directory. The type of the path options."""
    return os.path.expanduser(value)


def expand_pattern(pattern: str) -> list[str]:
    """The paths a command-line value names (``~`` expanded, :func:`user_path`): a path that exists as it is, also
    where its name holds a glob character (`run [1]`, `take*2`); else a glob's matches, sorted (``[]`` when none),
    in which a folder that exists is itself (`Fahrt [1]/*`: the bags in 'Fahrt [1]', as a shell globs
    "Fahrt [1]"/*, not those of 'Fahrt 1'); else the value itself (a path that may not exist: the caller says so)."""
    pattern = user_path(pattern)
    if not glob.has_magic(pattern) or os.path.lexists(pattern):
        return [pattern]
    path = Path(pattern)
    folder = next((p for p in path.parents if glob.has_magic(str(p)) and p.is_dir()), None)
    if folder is not None:
        matches = glob.glob(os.path.join(glob.escape(str(folder)), str(path.relative_to(folder))))
        if matches:
            return sorted(matches)
    return sorted(glob.glob(pattern))


def first_missing_folder(path: str | Path) -> Path | None:
    """The outermost of ``path`` and its parents that does not exist yet: the first folder that making ``path``
    (``mkdir(parents=True)``) creates, or None when ``path`` exists. Taken before the command makes it, for
    ``remove_made_folder``."""
    path = Path(path).absolute()
    return next((p for p in reversed([path, *path.parents]) if not os.path.lexists(p)), None)


def remove_made_folder(path: str | Path, made: Path | None) -> None:
    """After a command failed: remove ``path`` and its parents up to ``made`` (``first_missing_folder``, taken
    before the command made them) while they are empty. rmdir only, so nothing written there is lost (nor a
    sibling's folder made meanwhile, nor a folder another process holds the lock of: the same command started
    beside it, which made the folder and is about to write there); nothing when ``made`` is None (the folder was
    there before)."""
    if made is None:
        return
    path, made = Path(path).absolute(), Path(made).absolute()
    for folder in (path, *path.parents):
        if not folder.is_relative_to(made) or folder_lock.in_use_elsewhere(folder):
            break
        try:
            folder.rmdir()
        except OSError:  # not empty (what failed kept something), or gone already
            if os.path.exists(folder):
                break
