#!/usr/bin/env bash
# Set everything up (first run: a few minutes) and run the project's main job:
# the closed-loop rover simulation driven by a shipped liquid policy. Extra arguments go to `liquid-control sim`.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/bootstrap.sh runtime
exec "$LC_PYTHON" -m liquid_control.cli main "$@"
