#!/usr/bin/env bash
# Runs the whole test suite N times in a row (default 10) and stops at the
# first failing run, to show that no test depends on timing:
#
#   bash scripts/test-repeat.sh [N] [--load]
#
# --load keeps every core busy meanwhile (stress-ng when installed, else one
# shell busy loop per core), so the tests also pass on a starved machine.
# It builds once first (scripts/setup.sh). Exit status: 0 when all N passed.
set -euo pipefail
cd "$(dirname "$0")/.."

n_runs=10
load=none
for arg in "$@"; do
  case "$arg" in
    --load) load=busy ;;
    ''|*[!0-9]*) echo "usage: bash scripts/test-repeat.sh [N] [--load]" >&2; exit 2 ;;
    *) n_runs=$arg ;;
  esac
done
if [ "$n_runs" -lt 1 ]; then
  echo "test-repeat: N must be at least 1" >&2
  exit 2
fi

bash scripts/setup.sh

# The busy loops and the ctest run under way; whatever ends this script
# (the last run, a failure, Ctrl-C, kill) ends them too.
load_pids=()
ctest_pid=
stop_children() {
  # ctest runs in a process group of its own: this ends the tests it started too.
  [ -n "$ctest_pid" ] && kill -- "-$ctest_pid" 2>/dev/null || true
  for pid in "${load_pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
}
trap stop_children EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ "$load" = busy ]; then
  n_cores=$(nproc)
  if command -v stress-ng >/dev/null; then
    stress-ng --cpu "$n_cores" --quiet &
    load_pids+=($!)
    load="stress-ng --cpu $n_cores"
  else
    for _ in $(seq "$n_cores"); do
      bash -c 'while :; do :; done' &
      load_pids+=($!)
    done
    load="$n_cores busy loops"
  fi
  echo "test-repeat: load: $load"
fi

log_dir=$(mktemp -d "${TMPDIR:-/tmp}/test-repeat.XXXXXX")
n_passed=0
for run in $(seq "$n_runs"); do
  log="$log_dir/run-$run.log"
  echo "test-repeat: run $run/$n_runs (log: $log)"
  # In the background, so that a signal is handled at once, not after the run.
  setsid ctest --preset release >"$log" 2>&1 &
  ctest_pid=$!
  status=0
  wait "$ctest_pid" || status=$?
  ctest_pid=
  if [ "$status" -eq 0 ]; then
    n_passed=$((n_passed + 1))
    grep -E "tests passed|Total Test time" "$log" | sed 's/^/  /'
  else
    echo "test-repeat: run $run/$n_runs FAILED; the failed tests:"
    sed -n '/The following tests FAILED/,$p' "$log" | grep -E '^[[:space:]]+[0-9]+ - ' || tail -n 20 "$log"
    echo "test-repeat: $n_passed/$n_runs runs passed, run $run failed (load: $load)"
    exit 1
  fi
done
echo "test-repeat: $n_passed/$n_runs runs passed (load: $load)"
