#!/usr/bin/env bash
# Builds (via setup.sh) and runs every test suite. Exit status is non-zero if any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
ctest --preset release "$@"
