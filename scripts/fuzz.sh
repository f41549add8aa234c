#!/usr/bin/env bash
# Builds the libFuzzer targets (the `fuzz` preset: clang, ASan + UBSan) and
# runs each for SECONDS (default 60), one after the other, each from its
# committed seeds (tests/fuzz/corpus/<target>) plus what earlier runs found
# (build/fuzz/corpus/<target>). A crash, a hang (an input running > 1 s), a
# leak or a sanitizer report stops that target and leaves the input in
# build/fuzz/findings/<target>/; the script then exits non-zero. Prints a
# table (execs, execs/s, coverage) and writes it to build/fuzz/summary.md.
#
#   bash scripts/fuzz.sh [SECONDS]
#   FUZZ_TARGETS="messages http" bash scripts/fuzz.sh 600
#   FUZZ_TIMEOUT=5 bash scripts/fuzz.sh 20     # what CI runs
#
# Needs clang with libFuzzer (Debian's clang package; installed when missing).
# docs/fuzzing.md describes the targets and records the runs.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
timeout="${FUZZ_TIMEOUT:-1}"  # seconds one input may run before it counts as a hang
if ! command -v clang++ >/dev/null; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "fuzz: installing clang (libFuzzer)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends clang
fi
all_targets=$(ls tests/fuzz/fuzz_*.cc | sed 's|.*/fuzz_||; s|\.cc$||')
targets="${FUZZ_TARGETS:-$all_targets}"
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz --target $(for t in $targets; do echo "fuzz_$t"; done)

summary=build/fuzz/summary.md
{
  echo "| target | seconds | execs | execs/s | cov | ft | corpus | result |"
  echo "|---|---|---|---|---|---|---|---|"
} > "$summary"
failed=0
for t in $targets; do
  corpus=build/fuzz/corpus/$t
  findings=build/fuzz/findings/$t
  mkdir -p "$corpus" "$findings"
  log=build/fuzz/$t.log
  echo "fuzz: $t for ${seconds}s (log $log)"
  set +e
  # allocator_release_to_os_interval_ms=-1: ASan returning freed memory to
  # the OS (madvise) once stalled a starved fuzzer past the 1 s hang limit.
  ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=1:allocator_release_to_os_interval_ms=-1" \
    UBSAN_OPTIONS="print_stacktrace=1" \
    build/fuzz/tests/fuzz/fuzz_$t -max_total_time="$seconds" -timeout="$timeout" -rss_limit_mb=2048 \
    -max_len=65536 -print_final_stats=1 -artifact_prefix="$findings/" \
    "$corpus" "tests/fuzz/corpus/$t" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  secs=$(grep -o 'stat::number_of_executed_units' "$log" >/dev/null && grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | grep -o 'in [0-9]*' | grep -o '[0-9]*' || echo "$seconds")
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  cov=$(echo "$last" | grep -o 'cov: [0-9]*' | grep -o '[0-9]*' || echo '?')
  ft=$(echo "$last" | grep -o 'ft: [0-9]*' | grep -o '[0-9]*' || echo '?')
  n_corpus=$(ls "$corpus" | wc -l)
  if [ "$rc" -eq 0 ]; then
    result=clean
  else
    result="FAILED (exit $rc): $(ls "$findings" | head -3 | tr '\n' ' ')"
    failed=1
  fi
  echo "| $t | ${secs:-$seconds} | ${execs:-0} | ${rate:-0} | $cov | $ft | $n_corpus | $result |" >> "$summary"
done
cat "$summary"
exit $failed
