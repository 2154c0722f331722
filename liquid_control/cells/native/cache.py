"""Building the kernel library into a private cache, and opening only a library we built.

Threats this guards against (issue 9): another local user pre-creating the cache directory (or the
``/tmp`` fallback) to plant a library that then runs inside our process, swapping our library after the build,
and a compiler that never returns.

- **Private directories.** The cache directory is created with mode 0700 and then checked with ``lstat``: a
  real directory (no symlink), owned by us, not writable by group or others; every directory above it is owned
  by us or root and, where others may write to it, sticky (like ``/tmp``), so nobody else can rename it away.
  A directory that fails is refused, never repaired.
- **Only what we built is loaded.** A build records the SHA-256 of the library it produced and the compiler
  that built it (written atomically next to it; the library's file name carries the digest, so concurrent builds
  never pair a record with another build's file). Loading opens the file without following links, checks owner
  and mode on the open descriptor, reads it, compares the digest of the bytes read, and hands exactly those bytes
  to the dynamic loader through an anonymous memory file (``memfd``), so a file swapped after the check is never
  the one loaded. A library whose digest does not match is refused with a message naming it.
- **Bounded builds.** The compiler runs in its own process group with a timeout (``LIQUID_CONTROL_CC_TIMEOUT``
  seconds, default 120; it bounds the questions asked before the cache is looked up too); on timeout or
  interruption (Ctrl-C, a signal turned into an exception) the whole group is killed, its pipes closed, and the
  temporary files (the partial library and the compiler's own temporaries, kept in a private directory) are
  removed.

The library's name (``library_base``) is a digest of what the build depends on except the compiler: sources,
flags, torch, the CPU (its /proc/cpuinfo model and flags; without them, what the compiler makes of
``-march=native``). The loader then checks the CPU itself (``liquid_cpu_missing``, __init__.py). The
compiler's identity (its real path, its arguments and what ``--version`` says, less the name it was invoked by:
``compiler_identity``) is in the record instead: with a compiler present, a library another compiler built is
rebuilt (an upgrade behind the same path included); with none (a runtime image without gcc), or one that does not
answer (``--version`` or, without /proc/cpuinfo, ``-march=native -dM`` times out or cannot run), the verified
library in the cache is used as is, and the compiler's failure is an error only when a compile is needed. Those
questions run on every load, bounded by ``LIQUID_CONTROL_CC_TIMEOUT``; a compiler that times out on them is
remembered in the cache (``cc-unanswered-<digest>.json``, named by the program's real path, size and mtime and the
rest of its command), so a hanging one costs that timeout once, not at every process start (every command, every
worker). It is asked again once it changes (fixed, upgraded: the program named first in ``CC``; behind a wrapper
such as ``ccache gcc``, delete the record), with a longer timeout than the one it failed, or when that file is
deleted; one that fails at once (cannot run) is asked again each time. A bad value of the setting does
not stop a cached library (the default bounds the questions then), it is an error when a compile needs it.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

from liquid_control.json_text import load_json

SOURCE_DIR = Path(__file__).resolve().parent
SOURCES = ("kernels.c", "common.h", "vec.h", "gemm.h", "synapses.h", "ltc.inc", "cfc.inc", "checks.inc")
OPT_FLAGS = [
    "-O3",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-fopenmp-simd",
    "-fPIC",
    "-shared",
    "-std=gnu11",
    "-ffp-contract=fast",
    "-fvisibility=hidden",
]
DEFAULT_TIMEOUT_S = 120.0
TIMEOUT_ENV = "LIQUID_CONTROL_CC_TIMEOUT"


class CompilerTimeout(RuntimeError):
    """The compiler did not finish within ``LIQUID_CONTROL_CC_TIMEOUT`` (killed)."""


class UnsafeCacheError(RuntimeError):
    """A cache directory or library file that someone else could have written: refused, never loaded."""


def cache_dir() -> Path | None:
    """Where the library is built: ``$LIQUID_CONTROL_CACHE/native`` (a relative one: from the working directory),
    else ``$XDG_CACHE_HOME/liquid_control/native`` or ``~/.cache/liquid_control/native``. A relative
    ``XDG_CACHE_HOME`` is ignored (XDG spec); None without a home directory (HOME unset, no passwd entry), never a
    folder named ``~`` in the working directory."""
    if os.environ.get("LIQUID_CONTROL_CACHE"):
        return Path(os.path.abspath(os.environ["LIQUID_CONTROL_CACHE"])) / "native"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    root = xdg if os.path.isabs(xdg) else os.path.expanduser("~/.cache")
    return Path(root) / "liquid_control" / "native" if os.path.isabs(root) else None


def fallback_dir() -> Path:
    """Used when the cache directory cannot be used (e.g. a read-only home on a robot), with a warning."""
    return Path(tempfile.gettempdir()) / f"liquid_control-{os.geteuid()}" / "native"


def compile_timeout() -> float:
    """The compiler's time limit in seconds (``LIQUID_CONTROL_CC_TIMEOUT``; default 120)."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (0 < value < float("inf")):
        raise ValueError(f"{TIMEOUT_ENV} must be a positive number of seconds, got {raw!r}")
    return value


# ---- private directories -------------------------------------------------------------------------------
def _check_owned_private(path: Path, st: os.stat_result, what: str) -> None:
    if st.st_uid != os.geteuid():
        raise UnsafeCacheError(f"{path}: {what} is owned by uid {st.st_uid}, not by us (uid {os.geteuid()})")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeCacheError(
            f"{path}: {what} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o}); "
            f"someone else could have put a library there (`chmod go-w {path}` makes it private)"
        )


def _check_ancestors(path: Path) -> None:
    """Every directory above ``path``: ours or root's, and sticky where others may write (nobody can rename)."""
    for parent in path.resolve().parents:  # the real directories (a symlinked home is checked where it lives)
        st = parent.stat()
        writable_by_others = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if st.st_uid not in (0, os.geteuid()) or (writable_by_others and not st.st_mode & stat.S_ISVTX):
            ours = st.st_uid == os.geteuid()  # group-writable: what a umask of 002 gives ~/.cache
            raise UnsafeCacheError(
                f"{parent}: a directory above the kernel cache that others control "
                f"(owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o})"
                + (f" (`chmod go-w {parent}` makes it private)" if ours else "")
            )


def private_dir(path: Path) -> Path:
    """Create ``path`` (mode 0700 for every directory we create) and verify it (see the module docstring)."""
    missing = []
    probe = path
    while not os.path.lexists(probe):
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            pass  # a concurrent build created it: verified below like any existing directory
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeCacheError(f"{path}: not a directory (a symlink or a file where the kernel cache should be)")
    _check_owned_private(path, st, "the kernel cache directory")
    _check_ancestors(path)
    return path


def _usable_dirs() -> tuple[list[Path], list[str]]:
    """The cache and the fallback directory where they are safe, and what is wrong with the others."""
    dirs, problems = [], []
    if cache_dir() is None:
        problems.append("there is no home directory for the cache (HOME unset, no passwd entry)")
    for candidate in filter(None, (cache_dir(), fallback_dir())):
        try:
            dirs.append(private_dir(candidate))
        except UnsafeCacheError as exc:
            problems.append(f"refused {exc}")
        except OSError as exc:
            problems.append(f"{candidate}: {exc.strerror or exc}")
    return dirs, problems


# ---- what we built, verified ---------------------------------------------------------------------------
def _record_path(directory: Path, base: str) -> Path:
    return directory / f"{base}.json"


def _library_path(directory: Path, base: str, digest: str) -> Path:
    return directory / f"{base}-{digest[:16]}.so"


def _read_private_file(path: Path, what: str) -> bytes:
    """The bytes of a regular file that is ours and writable only by us (checked on the open descriptor)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeCacheError(f"{path}: {what} is not a regular file")
        _check_owned_private(path, st, what)
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def verified_library(directory: Path, base: str) -> tuple[Path, bytes, str] | None:
    """``(path, bytes, compiler identity)`` of the library built for ``base`` in ``directory``, or None if there
    is none yet.

    Raises ``UnsafeCacheError`` when a record or library exists but is not ours or not what we built."""
    record = _record_path(directory, base)
    if not os.path.lexists(record):
        return None
    try:
        entry = load_json(_read_private_file(record, "the kernel library's record"))
        digest, built_by = entry["sha256"], entry["compiler"]
    except (ValueError, KeyError, TypeError):
        digest = built_by = None
    valid = isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)
    if not (valid and isinstance(built_by, str)):
        raise UnsafeCacheError(f"{record}: not a record of a kernel build (SHA-256 and compiler)")
    library = _library_path(directory, base, digest)
    if not os.path.lexists(library):
        return None  # recorded, then removed (cache cleaned): build again
    data = _read_private_file(library, "the kernel library")
    actual = hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise UnsafeCacheError(
            f"{library}: its SHA-256 ({actual[:16]}...) is not the one recorded when we built it "
            f"({digest[:16]}...): it was changed after the build; not loading it (delete it to rebuild)"
        )
    return library, data, built_by


def _write_atomically(directory: Path, target: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with _ignore_missing():
            os.unlink(tmp)
        raise


@contextmanager
def _ignore_missing():
    try:
        yield
    except FileNotFoundError:
        pass


_memfds: list[int] = []  # open for the life of the process (see open_verified)


def open_verified(path: Path, data: bytes) -> ctypes.CDLL:
    """Load exactly ``data`` (the verified bytes of ``path``): through a memfd where the OS has one, so no
    later change of the file can change what is loaded; else the path itself (checked just before).

    The memfd stays open: the loader recognises an already-loaded library by its path, so a later library
    opened under a reused ``/proc/self/fd/N`` would silently be the earlier one.

    Raises RuntimeError naming ``path`` when the memfd cannot take the bytes (``ulimit -f`` limits it too: EFBIG)."""
    if hasattr(os, "memfd_create") and Path("/proc/self/fd").is_dir():
        fd = os.memfd_create(f"liquid_control:{path.name}", getattr(os, "MFD_CLOEXEC", 0))
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError as exc:
            os.close(fd)
            raise RuntimeError(
                f"{path}: cannot load it: copying its verified bytes into memory failed: {exc.strerror or exc}"
            ) from exc
        _memfds.append(fd)
        return ctypes.CDLL(f"/proc/self/fd/{fd}")
    return ctypes.CDLL(str(path))


# ---- compiling -----------------------------------------------------------------------------------------
def _torch_blas() -> Path:
    lib_dir = Path(torch.__file__).resolve().parent / "lib"
    for name in ("libtorch_cpu.so", "libtorch_cpu.dylib"):
        if (lib_dir / name).exists():
            return lib_dir / name
    raise RuntimeError(f"no libtorch_cpu in {lib_dir}")


def _cpu_identity() -> str | None:
    """What -march=native compiles for: the CPU's model and feature flags (a shared home may span machines);
    None where /proc/cpuinfo does not tell (no /proc in a sandbox, another OS)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    seen = {}
    for line in lines:
        key = line.split(":", 1)[0].strip()
        wanted = key in ("vendor_id", "cpu family", "model", "model name", "flags", "Features", "CPU part")
        if wanted and key not in seen:
            seen[key] = line
    return "\n".join(seen.values()) or None


def compiler() -> list[str]:
    """The C compiler's command: ``$CC`` split as a shell would (``ccache gcc``, ``gcc -m64``; empty: unset),
    else ``cc``; its program found on PATH (or a path)."""
    value = os.environ.get("CC", "")
    try:
        argv = shlex.split(value) or ["cc"]
    except ValueError as exc:  # an unbalanced quote
        raise RuntimeError(f"no C compiler found: CC={value!r} is not a command ({exc})") from None
    found = shutil.which(argv[0])
    if found is None:
        named = f"CC={value!r}" if value.strip() else "'cc' (CC is not set)"
        raise RuntimeError(f"no C compiler found: {named} names no program on PATH")
    return [found, *argv[1:]]


def compiler_identity(cc: list[str], timeout: float) -> str:
    """The compiler as a build's record names it: the program's real path, the rest of its command, and what
    ``--version`` says (an upgrade behind the same path is another compiler), without what depends only on the
    name it was reached by: GCC starts its first line with the invoked name (``cc (Debian 12.2.0-14) 12.2.0``
    and ``gcc (Debian ...``), clang adds an ``InstalledDir:`` line (the invoked path's directory). One compiler
    reached as ``cc``, ``gcc`` or through a symlink is one identity, so switching between them does not rebuild."""
    result = run_compiler([*cc, "--version"], timeout)
    lines = [
        line for line in (result.stdout + result.stderr).strip().splitlines() if not line.startswith("InstalledDir:")
    ]
    names = {os.path.basename(arg) for arg in cc if not arg.startswith("-")}  # "ccache gcc": gcc answers
    gcc_form = re.match(r"(\S+) (\(.*)", lines[0]) if lines else None  # "NAME (PKGVERSION) VERSION" only:
    if gcc_form and gcc_form.group(1) in names:  # clang's "clang version 17" names itself however reached
        lines[0] = gcc_form.group(2)
    return f"{shlex.join([os.path.realpath(cc[0]), *cc[1:]])}\n" + "\n".join(lines)


def native_target(cc: list[str], timeout: float) -> str:
    """What the compiler makes of ``-march=native`` (the default target where it refuses the flag): its
    predefined macros, which name every instruction set it enables."""
    for arch in (["-march=native"], []):
        result = run_compiler([*cc, *arch, "-E", "-dM", "-x", "c", os.devnull], timeout)
        if result.returncode == 0:
            break
    return result.stdout


def _unanswered_path(directory: Path, cc: list[str]) -> Path | None:
    """Where a failure of ``cc`` to answer is remembered: named by its program's real path, size and mtime and
    the rest of its command, so a fixed or upgraded compiler has another name and is asked again. None when
    the program cannot be looked at (asking it fails at once then)."""
    program = os.path.realpath(cc[0])
    try:
        st = os.stat(program)
    except OSError:
        return None
    key = json.dumps([program, st.st_size, st.st_mtime_ns, cc[1:]]).encode()
    return directory / f"cc-unanswered-{hashlib.sha256(key).hexdigest()[:16]}.json"


def _earlier_failure(record: Path, timeout: float) -> str | None:
    """What the compiler failed with when asked under a limit of at least ``timeout`` seconds, as ``record``
    remembers it; None if it was not asked yet, or only under a shorter limit."""
    if not os.path.lexists(record):
        return None
    try:
        entry = load_json(_read_private_file(record, "the record of a compiler that did not answer"))
        error, asked_with = entry["error"], float(entry["timeout"])
    except (ValueError, KeyError, TypeError, OverflowError):  # OverflowError: a timeout past a float's range
        return None  # not one of ours in a readable form: ask again (and write it anew)
    return error if isinstance(error, str) and asked_with >= timeout else None


def _ask_compiler(cc: list[str], timeout: float, cpu: str | None, dirs: list[Path]) -> tuple[str, str]:
    """The compiler's identity and the CPU key (``cpu``, else the compiler's ``native_target``).

    A compiler that did not answer within the timeout is remembered in the first of ``dirs`` that takes the
    record, and one remembered is not asked again: a hanging compiler costs the timeout once, not at every
    process start. One that fails at once (cannot run: not executable, a missing library) costs nothing to ask
    and is asked again next time (a ``chmod +x`` changes no mtime). Raises RuntimeError or OSError for a compiler
    that does not answer, now or before."""
    records = [path for path in (_unanswered_path(directory, cc) for directory in dirs) if path is not None]
    for record in records:
        error = _earlier_failure(record, timeout)
        if error is not None:
            raise RuntimeError(
                f"{error} (when asked before: not asked again until it changes, {TIMEOUT_ENV} is longer, or "
                f"{record} is deleted)"
            )
    try:
        answers = compiler_identity(cc, timeout), cpu if cpu is not None else native_target(cc, timeout)
    except CompilerTimeout as exc:
        entry = json.dumps({"compiler": shlex.join(cc), "timeout": timeout, "error": str(exc)}, indent=1)
        for record in records:
            try:
                _write_atomically(record.parent, record, entry.encode())
                break
            except OSError:
                continue  # a read-only cache: the next directory, else asked again next time (as before)
        raise
    for record in records:  # it answers now (a longer limit): a shorter one is no reason to skip it later
        if os.path.lexists(record):
            try:
                os.unlink(record)
            except OSError:  # gone already, or a read-only cache: the compiler answered, that is what counts
                pass
    return answers


def library_base(extra_flags: tuple[str, ...] = (), cc: list[str] | None = None, timeout=DEFAULT_TIMEOUT_S) -> str:
    """The library's name stem: a digest of the sources, torch, CPU and flags (the compiler: see the module
    docstring). The CPU is its /proc/cpuinfo identity, else the compiler's ``native_target`` (then ``cc`` is
    needed)."""
    cpu = _cpu_identity()
    if cpu is None:
        if cc is None:
            raise RuntimeError("no C compiler found, and no /proc/cpuinfo to match a cached library to this CPU")
        cpu = native_target(cc, timeout)
    return _library_base(extra_flags, cpu)


def _library_base(extra_flags: tuple[str, ...], cpu: str) -> str:
    key = hashlib.sha256()
    for name in SOURCES:
        key.update((SOURCE_DIR / name).read_bytes())
    identity = [torch.__version__, str(_torch_blas()), platform.machine(), cpu] + OPT_FLAGS
    key.update(" ".join(identity + list(extra_flags)).encode())
    return f"liquid_kernels-{key.hexdigest()[:16]}"


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for pipe in (proc.stdout, proc.stderr):  # closed, not read: a child that left the group may still hold them
        if pipe is not None:
            pipe.close()
    proc.wait()


def run_compiler(cmd: list[str], timeout: float, scratch: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group with its temporaries in ``scratch`` (a question such as
    ``--version`` writes none); kill the group on timeout or on any interruption (KeyboardInterrupt, SystemExit
    from a signal handler) and re-raise."""
    env = dict(os.environ, LC_ALL="C")  # messages in English: _compile reads them
    if scratch is not None:
        env.update(TMPDIR=str(scratch), TMP=str(scratch), TEMP=str(scratch))
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise CompilerTimeout(
            f"the C compiler did not finish within {timeout:g} s (killed; {TIMEOUT_ENV} sets the limit)"
        ) from None
    except BaseException:
        _kill_group(proc)
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def build(extra_flags: tuple[str, ...] = ()) -> tuple[Path, bytes]:
    """The verified library for these flags, compiled into the cache first if needed: ``(path, bytes)``.

    ``extra_flags`` go after the defaults (the tests build a variant without AVX-512 this way). Raises
    ``UnsafeCacheError`` for a cache we must not use, RuntimeError when the build fails or times out (or there
    is no compiler and no library), ValueError for a bad ``LIQUID_CONTROL_CC_TIMEOUT`` when a compile is needed."""
    try:
        cc, no_compiler = compiler(), None
    except RuntimeError as exc:
        cc, no_compiler = None, exc
    try:
        timeout, bad_timeout = compile_timeout(), None
    except ValueError as exc:
        timeout, bad_timeout = DEFAULT_TIMEOUT_S, exc
    dirs, problems = _usable_dirs()
    built_by, cpu = None, _cpu_identity()
    if cc is not None:
        try:  # the compiler's answers: what it is (the record) and, without /proc/cpuinfo, its target (the key)
            built_by, cpu = _ask_compiler(cc, timeout, cpu, dirs)
        except (RuntimeError, OSError) as exc:
            # it hangs (timeout) or does not run: absent for the lookup (a verified library loads, as with no
            # compiler at all); an error only when a compile is needed
            no_compiler = RuntimeError(f"the C compiler {shlex.join(cc)} could not be asked what it is: {exc}")
            cc, built_by = None, None
    if cpu is None:
        raise RuntimeError(
            f"{no_compiler or 'no C compiler found'}, and no /proc/cpuinfo to match a cached library to this CPU"
        )
    base = _library_base(extra_flags, cpu)
    primary = cache_dir()
    for directory in dirs:
        found = verified_library(directory, base)  # raises for a tampered library: never rebuilt over silently
        if found is not None and built_by in (None, found[2]):
            if directory == primary or problems:
                return _kept_in(directory, problems, found[:2])
            # built in the fallback when the cache could not be used, which it can now: built there (before, the
            # fallback's was loaded from then on, without a word, until the system emptied it)
            writable = os.access(primary, os.W_OK)
            if not writable or no_compiler is not None or bad_timeout is not None:
                why = f"{primary}: not writable" if not writable else f"{no_compiler or bad_timeout}"
                return _kept_in(directory, [f"none is in {primary} ({why})"], found[:2])
            break
    if no_compiler is not None or bad_timeout is not None:
        raise no_compiler or bad_timeout
    for directory in dirs:
        if not os.access(directory, os.W_OK):
            problems.append(f"{directory}: not writable")
            continue
        try:
            return _kept_in(directory, problems, _compile(cc, built_by, timeout, directory, base, extra_flags))
        except OSError as exc:  # the directory's file system (full, read-only): the next directory may do
            problems.append(f"{directory}: {exc.strerror or exc}")
    if any(p.startswith("refused") for p in problems):
        raise UnsafeCacheError("no safe directory for the compiled kernels: " + "; ".join(problems))
    raise RuntimeError("no writable directory for the compiled kernels: " + "; ".join(problems))


_warned: set[str] = set()  # the fallback warnings given: once per process each


def _kept_in(directory: Path, problems: list[str], result):
    """``result``, after a warning (once) when ``directory`` is the fallback because of ``problems``."""
    if problems and directory != cache_dir():
        message = (
            f"liquid_control: the compiled kernels are kept in {directory}, which the system may empty (then they "
            f"are built again), because {'; '.join(problems)}. Fix that, or set LIQUID_CONTROL_CACHE to a private "
            "directory"
        )
        if message not in _warned:
            _warned.add(message)
            warnings.warn(message, stacklevel=3)
    return result


def _compiler_said(stderr: str) -> str:
    """The compiler's first error lines and its last lines, on one line (its last line alone is often only
    'compilation terminated.' or 'collect2: error: ld returned 1 exit status')."""
    source_lines = re.compile(r"\s*\d*\s*\|")  # the quoted source and its caret under a diagnostic
    lines = [line.strip()[:300] for line in stderr.splitlines() if line.strip() and not source_lines.match(line)]
    errors = [i for i, line in enumerate(lines) if "error" in line.lower()]
    shown = sorted(set(errors[:2]) | set(range(len(lines))[-3:]))
    return " | ".join(lines[i] for i in shown) or "(no output)"


def _compile(cc: list[str], built_by: str, timeout: float, directory: Path, base: str, extra_flags):
    """Build with ``-march=native``; only a compiler that refuses the flag itself (its error names ``-march``)
    is asked again without it: any other failure is an error, so a transient one (cc1 killed for memory) is not
    cached as a slower portable library."""
    blas = _torch_blas()
    link = [f"-L{blas.parent}", "-l" + blas.name[3:].split(".")[0], f"-Wl,-rpath,{blas.parent}"]
    scratch = Path(tempfile.mkdtemp(dir=directory, prefix=".build-"))
    try:
        failures = []
        for arch in (["-march=native"], []):
            out = scratch / "kernels.so"
            cmd = [*cc, *OPT_FLAGS, *arch, *extra_flags, "-I", str(SOURCE_DIR), str(SOURCE_DIR / "kernels.c")]
            result = run_compiler(cmd + ["-o", str(out), *link], timeout, scratch)
            if result.returncode == 0:
                data = out.read_bytes()
                digest = hashlib.sha256(data).hexdigest()
                library = _library_path(directory, base, digest)
                _write_atomically(directory, library, data)
                record = json.dumps({"sha256": digest, "compiler": built_by}, indent=1).encode()
                _write_atomically(directory, _record_path(directory, base), record)
                return library, data
            failures.append(f"({' '.join(arch) or 'without -march'}) {_compiler_said(result.stderr)}")
            for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):  # the directory failed, not the compile
                if os.strerror(code) in result.stderr:
                    raise OSError(code, f"{os.strerror(code)} (the compiler said: {failures[-1]})")
            if not re.search(r"-march\b", result.stderr):
                break
        raise RuntimeError(f"compiling {SOURCE_DIR / 'kernels.c'} failed: {'; then '.join(failures)}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
