#!/usr/bin/env bash
# Run the test suite in a virtual environment of its own (.venv), created on first use.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh test
exec .venv/bin/python -m pytest "$@"
