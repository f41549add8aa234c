#!/usr/bin/env bash
# Runs the CPU benchmarks recorded in docs/benchmarks.md and prints one JSON
# line per measurement. Synthetic models are written to $BENCH_DIR (default
# /tmp/pensieve-bench) on first use (2.2 GB for Phi-3-mini 4-bit).
#
#   bash scripts/bench-cpu.sh [quick]
#
# Run it on an otherwise idle machine: the numbers are wall-clock rates.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/release/bin
dir=${BENCH_DIR:-/tmp/pensieve-bench}
mkdir -p "$dir"
model() {  # model NAME LIKE FORMAT [extra synth-model args]
  local name=$1 like=$2 format=$3
  shift 3
  [ -f "$dir/$name/config.json" ] || "$bin/pensieve" synth-model --like "$like" --format "$format" "$@" "$dir/$name" >&2
  echo "$dir/$name"
}
phi3=$(model phi3-mini-4bit phi-3-mini mlx-4bit)
llama=$(model llama-3.2-1b-4bit llama-3.2-1b mlx-4bit --vocab 32000)

echo "# machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
"$bin/membw" --mib 1024 --passes 5
"$bin/membw" --file "$phi3/model.safetensors" --passes 3
for t in 1 2; do
  "$bin/pensieve" bench --model "$phi3" --threads "$t" --json
done
[ "${1:-}" = quick ] && exit 0
"$bin/pensieve" bench --model "$phi3" --threads 2 --prompt-tokens 4096 --gen-tokens 16 --json
for t in 1 2; do
  "$bin/pensieve" bench --model "$llama" --threads "$t" --json
done
"$bin/pensieve" bench --model models/stories260K --threads 2 --prompt-tokens 16000 --gen-tokens 16 --json
"$bin/pensieve" tokenize --model tests/data/tokenizers/phi3 --file tests/data/claude-code/tool-turn-1.request.json --bench
