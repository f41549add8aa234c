#!/usr/bin/env bash
# Runs the CPU benchmarks recorded in docs/benchmarks.md and prints one JSON
# line per measurement. Synthetic models are written to $BENCH_DIR (default
# /tmp/pensieve-bench) on first use (2.2 GB for Phi-3-mini 4-bit).
#
#   bash scripts/bench-cpu.sh [quick]
#
# Run it on an otherwise idle machine: the numbers are wall-clock rates.
# Each bench line carries the floor it is measured against, from the same
# run: decode_floor_tok_s / decode_of_floor (membw's read rate over the
# bytes a token reads) and prefill_gops / prefill_of_vnni_peak (against
# `matmul_bench --vnni-peak` of as many threads).
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
# The floors each figure is read against, measured in this run: read
# bandwidth (decode reads every weight once a token) and the vpdpbusd rate
# (the integer prefill kernels' ceiling), on 1 and 2 threads.
floors=$(mktemp)
trap 'rm -f "$floors"' EXIT
for t in 1 2; do
  "$bin/membw" --mib 1024 --passes 5 --threads "$t" | tee -a "$floors"
  "$bin/matmul_bench" --vnni-peak --threads "$t" | tee -a "$floors"
done
"$bin/membw" --file "$phi3/model.safetensors" --passes 3
# pensieve bench --json, with the floor of each figure added: decode against
# bandwidth / bytes a token, prefill (2 operations a parameter a token: a
# little high, the embedding table counts too) against the vpdpbusd peak of
# as many threads.
bench() {
  "$bin/pensieve" bench "$@" --json | python3 -c '
import json, sys
floors = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
bw = {f["threads"]: f["best_read_gb_s"] for f in floors if "best_read_gb_s" in f}
peak = {f["threads"]: f["vnni_peak_gops"] for f in floors if f.get("vnni_peak_gops")}
j = json.loads(sys.stdin.read())
t = j.get("threads")
if t in bw and j.get("decode_weight_bytes_per_token"):
    floor = bw[t] * 1e9 / j["decode_weight_bytes_per_token"]
    j["decode_floor_tok_s"] = round(floor, 2)
    j["decode_of_floor"] = round(j["decode_tok_s"] / floor, 3)
if t in peak and j.get("prefill_kernel", "").startswith(("avx512-vnni", "amx")):
    gops = 2.0 * j["n_params"] * j["prefill_tok_s"] / 1e9
    j["prefill_gops"] = round(gops, 1)
    j["prefill_of_vnni_peak"] = round(gops / peak[t], 3)
print(json.dumps(j))' "$floors"
}
for t in 1 2; do
  bench --model "$phi3" --threads "$t"
done
[ "${1:-}" = quick ] && exit 0
bench --model "$phi3" --threads 2 --prompt-tokens 4096 --gen-tokens 16
for t in 1 2; do
  bench --model "$llama" --threads "$t"
done
bench --model models/stories260K --threads 2 --prompt-tokens 16000 --gen-tokens 16
"$bin/pensieve" tokenize --model tests/data/tokenizers/phi3 --file tests/data/claude-code/tool-turn-1.request.json --bench
