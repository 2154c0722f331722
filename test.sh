#!/usr/bin/env bash
# Set everything up and run the whole test suite. Extra arguments go to pytest (e.g. ./test.sh -k cells).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/bootstrap.sh test
exec "$LC_PYTHON" -m pytest -q test "$@"
