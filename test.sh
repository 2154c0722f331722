#!/usr/bin/env bash
# Set everything up and run the whole test suite (test/). Extra arguments go to pytest:
# ./test.sh -k cells, ./test.sh test/test_eval.py
# The tests run in parallel, one pytest-xdist worker per CPU this process may use (its cores, or a container's CPU
# quota where lower; at most 8); LIQUID_CONTROL_TEST_WORKERS=N sets the number, and 0 runs them in this process, in
# file order (./test.sh -n 0 ... as well; --pdb and --trace do).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/bootstrap.sh test
# the CPUs this process may use: its cores, lowered to a container's CPU quota (GNU nproc sees no quota and follows
# OMP_NUM_THREADS, a setting for the tests' threads)
workers="${LIQUID_CONTROL_TEST_WORKERS:-$("$LC_PYTHON" -c 'from liquid_control.processes import available_cpus; print(available_cpus())' 2>/dev/null || nproc 2>/dev/null || echo 1)}"
case "$workers" in
  '' | *[!0-9]*) echo "liquid_control: LIQUID_CONTROL_TEST_WORKERS must be a whole number (0: no workers), got '$workers'" >&2; exit 2 ;;
esac
if [ -z "${LIQUID_CONTROL_TEST_WORKERS:-}" ]; then  # one core: no worker processes; many: at most 8
  if [ "$workers" -le 1 ]; then workers=0; elif [ "$workers" -gt 8 ]; then workers=8; fi
  for arg in "$@"; do  # a debugger needs the test in this process (xdist refuses --pdb; a worker has no terminal)
    case "$arg" in --pdb | --trace) workers=0 ;; esac
  done
fi
exec "$LC_PYTHON" -m pytest -q -n "$workers" "$@"
