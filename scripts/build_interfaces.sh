#!/usr/bin/env bash
# Build the ROS interface packages of interfaces/ (tf2_msgs/TFMessage) into a venv whose ROS 2 comes from the
# PyPI wheels, which do not include tf2_msgs. Skipped when the Python of the venv already imports a tf2_msgs
# that this script did not build (a ROS installation's); a stamp skips it when nothing changed.
# A failed build is a warning for `./run.sh` (sim_node then publishes no /tf) but an error (exit 1, with the end
# of the build log) for the `test` profile and wherever CI is set: the tests need /tf.
#   usage: scripts/build_interfaces.sh <venv> [runtime|test]       (called by scripts/bootstrap.sh)
set -euo pipefail
LC_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$(cd "${1:?usage: build_interfaces.sh <venv> [runtime|test]}" && pwd)"
STRICT=""; [ "${2:-runtime}" = test ] && STRICT=1
case "${CI:-}" in "" | 0 | false) ;; *) STRICT=1 ;; esac
STAMP="$VENV/.liquid_control-interfaces.sha"
# the interface sources and the ROS pins (other requirement changes do not rebuild it)
WANT="$(cd "$LC_ROOT" && cat interfaces/tf2_msgs/CMakeLists.txt interfaces/tf2_msgs/package.xml interfaces/tf2_msgs/msg/*.msg \
  <(grep -E '^(ros-|catkin-pkg)' requirements.txt) | sha256sum | cut -d' ' -f1)"
[ "$(cat "$STAMP" 2>/dev/null)" = "$WANT" ] && exit 0
if [ ! -f "$STAMP" ] && "$VENV/bin/python" -c 'import tf2_msgs.msg' 2>/dev/null; then
  exit 0  # a ROS installation's tf2_msgs: use it
fi
BUILD="$VENV/.build/tf2_msgs"
LOG="$VENV/.build/tf2_msgs.log"
mkdir -p "$BUILD"
echo "liquid_control: building tf2_msgs (TF messages) into $VENV (~30 s)" >&2

# cannot build: a warning (./run.sh works without /tf), an error for the tests and CI
give_up() {
  echo "liquid_control: $1; sim_node will publish no /tf" >&2
  [ -n "$STRICT" ] || exit 0
  if [ -s "$LOG" ]; then echo "--- last lines of $LOG:" >&2; tail -n 25 "$LOG" >&2; fi
  echo "liquid_control: tf2_msgs is required for the tests (test profile or CI set)" >&2
  exit 1
}
if ! command -v cmake >/dev/null || ! command -v c++ >/dev/null; then
  : >"$LOG"
  give_up "cmake and a C++ compiler are needed to build tf2_msgs (sudo apt install cmake g++)"
fi
if (
  export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
  export LD_LIBRARY_PATH="$VENV/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export PATH="$VENV/bin:$PATH"
  cmake -S "$LC_ROOT/interfaces/tf2_msgs" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
    -DCMAKE_INSTALL_PREFIX="$VENV" -DCMAKE_PREFIX_PATH="$VENV" -DPython3_EXECUTABLE="$VENV/bin/python" &&
    cmake --build "$BUILD" -j "$(nproc)" && cmake --install "$BUILD"
) >"$LOG" 2>&1 && "$VENV/bin/python" -c 'import tf2_msgs.msg' 2>>"$LOG"; then
  echo "$WANT" >"$STAMP"
else
  give_up "building tf2_msgs failed (see $LOG)"
fi
