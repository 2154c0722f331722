#!/usr/bin/env bash
# Create or reuse the project's virtual environment (.venv) and install the pinned dependencies.
# Sourced by run.sh and test.sh; safe to run again (a stamp skips pip when nothing changed).
#   usage: source scripts/bootstrap.sh [runtime|test]
set -euo pipefail
LC_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LC_VENV="${LIQUID_CONTROL_VENV:-$LC_ROOT/.venv}"
LC_PROFILE="${1:-runtime}"
case "$LC_PROFILE" in  # before anything is installed: any other word was taken as a profile and pip ran
  runtime | test) ;;
  -h | --help) sed -n '2,4p' "${BASH_SOURCE[0]}" | cut -c3-; return 0 2>/dev/null || exit 0 ;;
  *) echo "liquid_control: scripts/bootstrap.sh: unknown profile '$LC_PROFILE'; usage: source scripts/bootstrap.sh [runtime|test]" >&2
     return 2 2>/dev/null || exit 2 ;;
esac
REQ="$LC_ROOT/requirements.txt"; [ "$LC_PROFILE" = test ] && REQ="$LC_ROOT/requirements-test.txt"

# The ROS 2 wheels are built for CPython 3.11.
PY="${LIQUID_CONTROL_PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then PY="$cand"; break; fi
  done
fi
[ -n "$PY" ] || { echo "liquid_control: Python 3.11 is required (the ROS 2 wheels are cp311); set LIQUID_CONTROL_PYTHON." >&2; exit 1; }

# System packages: installed with apt when running as root (a container, CI), otherwise named for the user.
lc_apt_install() {  # <why> <package>...
  local why="$1"; shift
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "liquid_control: installing $* ($why)" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@") >/dev/null ||
      echo "liquid_control: apt-get install $* failed" >&2
  else
    echo "liquid_control: $why needs: sudo apt install $*" >&2
  fi
}
# Headless MuJoCo rendering needs EGL (Mesa on a CPU machine).
if ! ldconfig -p 2>/dev/null | grep -q 'libEGL.so.1'; then
  lc_apt_install "libEGL.so.1 not found; headless rendering" libegl1 libgl1 libgles2 libegl-mesa0 libgl1-mesa-dri
fi

# The test suite also checks the compiled kernels on aarch64: cross-compiled, run under user-mode emulation.
if [ "$LC_PROFILE" = test ] && ! { command -v aarch64-linux-gnu-gcc && command -v qemu-aarch64; } >/dev/null 2>&1; then
  lc_apt_install "the aarch64 kernel tests (cross compiler, user-mode emulation)" gcc-aarch64-linux-gnu qemu-user
fi

# LIQUID_CONTROL_NO_INSTALL=1 uses the venv as it is (no venv creation, no pip, no build): how
# test/test_readme_commands.py runs a fresh clone's run.sh/test.sh against the test suite's own environment.
if [ ! -x "$LC_VENV/bin/python" ]; then
  if [ -n "${LIQUID_CONTROL_NO_INSTALL:-}" ]; then
    echo "liquid_control: LIQUID_CONTROL_NO_INSTALL is set but $LC_VENV is not a virtual environment (no bin/python);" \
         "set LIQUID_CONTROL_VENV to an existing one, or unset LIQUID_CONTROL_NO_INSTALL to create it" >&2
    exit 1
  fi
  "$PY" -m venv "$LC_VENV"
fi
STAMP="$LC_VENV/.liquid_control-$LC_PROFILE.sha"
WANT="$(cat "$REQ" "$LC_ROOT/requirements.txt" "$LC_ROOT/setup.py" | sha256sum | cut -d' ' -f1)"
if [ -z "${LIQUID_CONTROL_NO_INSTALL:-}" ] && [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "liquid_control: installing pinned dependencies into $LC_VENV ($LC_PROFILE)" >&2
  "$LC_VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  "$LC_VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e "$LC_ROOT" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  echo "$WANT" > "$STAMP"
fi
# tf2_msgs (the /tf message) is not among the ROS 2 wheels: built once from interfaces/ (stamped; ~30 s) with
# cmake and a C++ compiler; a failed build stops the test profile and CI (see build_interfaces.sh).
if [ -z "${LIQUID_CONTROL_NO_INSTALL:-}" ]; then
  if [ ! -f "$LC_VENV/.liquid_control-interfaces.sha" ] && ! { command -v cmake && command -v c++; } >/dev/null &&
    ! "$LC_VENV/bin/python" -c 'import tf2_msgs.msg' 2>/dev/null; then
    lc_apt_install "building tf2_msgs" cmake g++
  fi
  "$LC_ROOT/scripts/build_interfaces.sh" "$LC_VENV" "$LC_PROFILE"
fi

# The ROS 2 wheels load their shared libraries from <venv>/lib; MuJoCo renders through EGL.
export LD_LIBRARY_PATH="$LC_VENV/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export MUJOCO_GL="${MUJOCO_GL:-egl}"
export PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-egl}"
export PATH="$LC_VENV/bin:$PATH"
LC_PYTHON="$LC_VENV/bin/python"
