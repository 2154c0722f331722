#!/usr/bin/env bash
# Set everything up and run the whole test suite (test/). Extra arguments go to pytest:
# ./test.sh -k cells, ./test.sh test/test_eval.py
set -euo pipefail
cd "$(dirname "$0")"
source scripts/bootstrap.sh test
exec "$LC_PYTHON" -m pytest -q "$@"
