#!/usr/bin/env bash
# One command for the tests: install with the test extras, fetch the default model and the test
# models (scripts/setup.sh), run ruff and pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -m "not slow").
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh" test,distributed,served,compare
cd "$ROOT"
"$VPY" -m ruff check .
exec "$VPY" -m pytest "$@"
