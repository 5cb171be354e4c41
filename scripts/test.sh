#!/usr/bin/env bash
# The whole test suite: lint, types, tests (the simulator and the real Portkey gateway are
# started by the tests on loopback). Extra arguments go to pytest.
source "$(dirname "${BASH_SOURCE[0]}")/_setup.sh"
.venv/bin/ruff check src tests examples benchmarks
.venv/bin/mypy --strict src
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here, not a pass" >&2
  exit 1
fi
exit "$status"
