#!/usr/bin/env bash
# Compares two builds of pensieve on the same model: runs `pensieve bench
# --json` of A and B alternately (A B A B ...), so that a machine whose speed
# drifts over the hour drifts for both, then prints each figure's median for
# A and B with its spread, and flags a figure of B that is worse than A's by
# more than the noise measured in this run (the larger of the two builds'
# spreads, max - min of their runs).
#
#   bash scripts/bench-compare.sh A_BIN B_BIN [ROUNDS] [-- bench args]
#   # e.g. a regression check of the working tree against main:
#   bash scripts/bench-compare.sh /tmp/main/build/release/bin/pensieve \
#       build/release/bin/pensieve 5 -- --model /tmp/phi3-mini-4bit --threads 2
#
# Exit status 1 when some figure got worse beyond the noise, else 0.
# Default bench args: the synthetic Phi-3-mini 4-bit of scripts/bench-cpu.sh
# (written on first use), 512 prompt tokens, 64 generated, 2 threads.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n '2,16p' "$0"; exit 2; }
a=$1 b=$2
shift 2
rounds=5
if [ $# -gt 0 ] && [ "$1" != "--" ]; then rounds=$1; shift; fi
[ $# -gt 0 ] && [ "$1" = "--" ] && shift
args=("$@")
if [ ${#args[@]} -eq 0 ]; then
  dir=${BENCH_DIR:-/tmp/pensieve-bench}
  model=$dir/phi3-mini-4bit
  [ -f "$model/config.json" ] || "$a" synth-model --like phi-3-mini --format mlx-4bit "$model" >&2
  args=(--model "$model" --threads 2 --prompt-tokens 512 --gen-tokens 64)
fi
for bin in "$a" "$b"; do
  [ -x "$bin" ] || { echo "bench-compare: $bin is not an executable" >&2; exit 2; }
done
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for ((i = 1; i <= rounds; i++)); do
  for side in A B; do
    bin=$a
    [ $side = B ] && bin=$b
    "$bin" bench "${args[@]}" --json >>"$out/$side.jsonl"
    echo "round $i/$rounds $side: $(tail -1 "$out/$side.jsonl" | jq -c '{prefill_tok_s, decode_tok_s}')" >&2
  done
done
# Per figure: median, min, max of each side; worse = B's median below A's
# by more than the larger spread (higher is better for both figures).
status=0
printf '%-14s %12s %12s %12s %12s %8s  %s\n' figure "A median" "A spread" "B median" "B spread" "B/A" verdict
for f in prefill_tok_s decode_tok_s; do
  stats() { jq -s "[.[].$f] | sort | {med: .[length/2|floor], min: .[0], max: .[-1]}" "$out/$1.jsonl"; }
  sa=$(stats A) sb=$(stats B)
  read -r am amin amax < <(jq -r '"\(.med) \(.min) \(.max)"' <<<"$sa")
  read -r bm bmin bmax < <(jq -r '"\(.med) \(.min) \(.max)"' <<<"$sb")
  verdict=$(awk -v am="$am" -v bm="$bm" -v sa="$(awk -v x="$amax" -v y="$amin" 'BEGIN{print x-y}')" \
                -v sb="$(awk -v x="$bmax" -v y="$bmin" 'BEGIN{print x-y}')" \
    'BEGIN { noise = sa > sb ? sa : sb; d = am - bm;
             if (d > noise) print "WORSE"; else if (-d > noise) print "better"; else print "same (within noise)" }')
  printf '%-14s %12.2f %12.2f %12.2f %12.2f %8.3f  %s\n' "$f" "$am" "$(awk -v x="$amax" -v y="$amin" 'BEGIN{print x-y}')" \
    "$bm" "$(awk -v x="$bmax" -v y="$bmin" 'BEGIN{print x-y}')" "$(awk -v a="$am" -v b="$bm" 'BEGIN{print b/a}')" "$verdict"
  [ "$verdict" = WORSE ] && status=1
done
exit $status
