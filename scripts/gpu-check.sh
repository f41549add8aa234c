#!/usr/bin/env bash
# On a GPU machine, from a tarball of scripts/pack-binaries.sh: the GPU tests
# (kernels against the CPU, every fixture model on the GPU), then the CUDA
# benchmarks on a synthetic Phi-3-mini 4-bit model. Prints a summary last.
#
#   bash scripts/gpu-check.sh PACK.tar.xz [tests|bench|all] [OUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
pack=$(realpath "$1")
what=${2:-all}
out=${3:-/tmp/gpu-check}
mkdir -p "$out"
tmp=$(mktemp -d)
tar -C "$tmp" -xJf "$pack"
export LD_LIBRARY_PATH="$tmp/pack/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# cuBLAS (loaded at run time for prompts) from the machine's CUDA toolkit or
# its Python wheels, where the loader does not find it already.
if ! ldconfig -p | grep -q 'libcublas.so.13'; then
  cublas=$(find /usr/local/cuda*/lib64 /usr/local/lib/python3*/dist-packages/nvidia /usr/lib/python3*/site-packages/nvidia \
             -name 'libcublas.so.13*' 2>/dev/null | head -1)
  [ -n "$cublas" ] && export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$(dirname "$cublas")"
fi
bin="$tmp/pack/bin"
# The test binaries name their data by the path they were built in.
built_in=$(strings "$bin/models_tests" | grep -m1 -o '/[^ ]*/tests/data' | sed 's|/tests/data$||')
if [ -n "$built_in" ] && [ ! -e "$built_in/tests/data" ]; then
  mkdir -p "$(dirname "$built_in")" && ln -sfn "$PWD" "$built_in"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader | tee "$out/gpu.txt"
summary=()
if [ "$what" = tests ] || [ "$what" = all ]; then
  "$bin/gpu_tests" >"$out/gpu_tests.log" 2>&1; rc=$?
  summary+=("gpu_tests rc=$rc: $(grep -E '^\[  (PASSED|FAILED) ' "$out/gpu_tests.log" | tr '\n' ' ')")
  PENSIEVE_TEST_DEVICE=cuda "$bin/models_tests" \
    "--gtest_filter=Fixtures/Golden.*:GoldenLong.*:GoldenStories.GeneratesTheReference200TokensFromBos:GoldenStories.SlidingWindowSeesOnlyTheLastWindowOfTokens:Incremental.*:Batched.*:Models/EngineTest.*:*PrefixCache*:Fixtures/KvQ8.*:KvQ8Stories.*" \
    >"$out/gpu_models.log" 2>&1; rc=$?
  summary+=("gpu.models rc=$rc: $(grep -E '^\[  (PASSED|FAILED) ' "$out/gpu_models.log" | tr '\n' ' ')")
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
  model=/tmp/phi3-mini-4bit
  [ -f $model/config.json ] || "$bin/pensieve" synth-model --like phi-3-mini --format mlx-4bit $model >/dev/null 2>&1
  for args in "--prompt-tokens 512 --gen-tokens 256" "--prompt-tokens 4096 --gen-tokens 64" \
              "--prompt-tokens 16384 --gen-tokens 64" "--prompt-tokens 20000 --gen-tokens 16"; do
    "$bin/pensieve" bench --device cuda --model $model $args --json 2>>"$out/bench.err" | tee -a "$out/bench.jsonl"
  done
  # Per-operation times (graphs off): decode at 512 and prompt + decode at 16k.
  PENSIEVE_CUDA_PROFILE=1 "$bin/pensieve" bench --device cuda --model $model --prompt-tokens 512 --gen-tokens 64 \
    >/dev/null 2>"$out/profile-512.txt"
  PENSIEVE_CUDA_PROFILE=1 "$bin/pensieve" bench --device cuda --model $model --prompt-tokens 16384 --gen-tokens 16 \
    >/dev/null 2>"$out/profile-16k.txt"
  "$bin/pensieve" bench-serve --device cuda --model $model --streams 1,8,32 --prompt-tokens 1024 \
    --gen-tokens 128 --prefix-tokens 20000 >"$out/bench-serve.txt" 2>&1
  # Claude Code's recorded requests through `pensieve serve` on the same
  # shapes, with a real Phi-3 tokenizer: time to first token, cold and warm.
  served=/tmp/phi3-mini-4bit-tok
  [ -f $served/config.json ] || "$bin/pensieve" synth-model --like phi-3-mini --format mlx-4bit \
    --tokenizer tests/data/tokenizers/phi3 $served >/dev/null 2>&1
  "$bin/pensieve" serve --device cuda --model $served --port 18181 >"$out/serve.log" 2>&1 &
  serve_pid=$!
  for _ in $(seq 1 120); do
    curl -s localhost:18181/health 2>/dev/null | grep -q '"status":"ok"' && break
    sleep 0.5
  done
  python3 scripts/replay-claude-code.py --port 18181 >"$out/replay.jsonl" 2>&1
  # The server's memory on the card, as the driver counts it, against the
  # KV budget its log names.
  nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader >"$out/serve-memory.txt" 2>&1
  grep -h "KV cache" "$out/serve.log" >>"$out/serve-memory.txt"
  kill $serve_pid; wait $serve_pid 2>/dev/null
fi
echo "=== summary"
printf '%s\n' "${summary[@]}"
[ -f "$out/bench.jsonl" ] && python3 -c '
import json,sys
for l in open(sys.argv[1]):
    j=json.loads(l); print("bench prompt %5d: prefill %8.0f tok/s (%.3f s)  decode %7.1f tok/s  load %.1f s" % (j["prompt_tokens"], j["prefill_tok_s"], j["prefill_s"], j["decode_tok_s"], j["load_s"]))
    mib=lambda k: j.get(k,0)/2**20
    print("  memory MiB: weights file %.0f, KV %.0f, allocated by the backend %.0f, in use on the card %.0f (over weights + KV: %.0f)" % (
        mib("model_file_bytes"), mib("kv_cache_bytes"), mib("device_memory_bytes"), mib("device_used_bytes"),
        mib("device_used_bytes") - mib("model_file_bytes") - mib("kv_cache_bytes")))
' "$out/bench.jsonl"
grep -h -E "Failure|error|Expected|Which is|relative" "$out"/*.log 2>/dev/null | head -40
for f in "$out"/profile-*.txt "$out"/bench-serve.txt "$out"/replay.jsonl "$out"/serve-memory.txt; do [ -f "$f" ] && { echo "=== $f"; grep -v '^\[' "$f" | head -60; }; done
exit 0
