#!/usr/bin/env bash
# Runs end-to-end test files (tests/e2e/*.test.mjs) with Node's test runner.
# Exits 77, which CTest reports as skipped, when node or the npm packages
# (npm ci in tests/e2e, done by scripts/setup.sh) are missing.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v node >/dev/null; then
  echo "e2e: node is not installed: skipping (scripts/setup.sh installs it)"
  exit 77
fi
if [ ! -d node_modules/@anthropic-ai/sdk ] || [ ! -d node_modules/@anthropic-ai/claude-code ] || [ ! -d node_modules/openai ]; then
  echo "e2e: tests/e2e/node_modules is missing: skipping (run: cd tests/e2e && npm ci --no-audit --no-fund --ignore-scripts)"
  exit 77
fi
# The servers these tests start keep no prefix cache on disk: what another
# test or an earlier run left in ~/.cache would show up as cached tokens.
export PENSIEVE_PREFIX_CACHE_DISK="${PENSIEVE_PREFIX_CACHE_DISK:-0}"
exec node --test "$@"
