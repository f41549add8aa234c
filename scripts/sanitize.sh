#!/usr/bin/env bash
# Builds and runs a sanitizer suite (docs/reliability.md, "Sanitizers"):
#
#   bash scripts/sanitize.sh asan   # AddressSanitizer + UBSan: the unit, server and
#                                   # fuzz-replay tests (ctest --preset asan)
#   bash scripts/sanitize.sh tsan   # ThreadSanitizer: engine, thread pool, server
#                                   # concurrency and soak_short (ctest --preset tsan)
#
# Extra arguments go to ctest (e.g. -R ServerTest). Every sanitizer report is
# fatal (-fno-sanitize-recover=all, halt_on_error), so a report fails its test.
# Builds only what the suite runs; CMAKE_BUILD_PARALLEL_LEVEL caps the jobs.
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${1:-asan}"
shift || true
case "$preset" in
  asan)
    targets="pensieve unit_tests server_tests"
    for f in tests/fuzz/fuzz_*.cc; do targets+=" $(basename "$f" .cc)_replay"; done
    ;;
  tsan) targets="pensieve unit_tests server_tests models_tests" ;;
  *) echo "sanitize: unknown suite '$preset' (asan or tsan)" >&2; exit 2 ;;
esac
cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset" --target $targets
ctest --preset "$preset" "$@"
