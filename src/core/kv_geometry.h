// The KV cache's block geometry, shared by the engine (which hands blocks
// out), the models (which size the pool) and every backend's kernels (which
// lay K and V out inside a block).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace pensieve {

// Positions per KV block: the unit of paging, prefix caching and preemption.
inline constexpr int64_t kKvBlockTokens = 16;

// The smallest context served: plan_kv_pool shrinks a context to fit no
// further, and a GPU must hold the KV cache of at least this one.
inline constexpr int64_t kMinFittedContext = 256;

// How K and V are stored (`--kv-type`).
//   f16: IEEE half floats. Within a block, per KV head, K is transposed
//        ([head_dim][16]) and V is rows ([16][head_dim]).
//   q8:  the same two layouts in int8, each followed by the f32 scales of
//        its groups: a token's head is cut into groups of kv_q8_group()
//        dimensions, each quantized symmetrically (scale = max|x| / 127,
//        values rounded to nearest, in [-127, 127]). K's scales are
//        [groups][16] (16 tokens side by side, as K's values), V's are
//        [16][groups]. About 53-56 % of f16's bytes (head_dim 96: 1,728
//        bytes per head and block against 3,072).
enum class KvType : uint8_t { f16, q8 };

inline constexpr std::string_view kv_type_name(KvType t) { return t == KvType::q8 ? "q8" : "f16"; }
inline std::optional<KvType> parse_kv_type(std::string_view s) {
  if (s == "f16") return KvType::f16;
  if (s == "q8") return KvType::q8;
  return std::nullopt;
}

// Dimensions per q8 scale: 32, else 16, else 8 (the largest that divides
// head_dim); 0 when none does (q8 is refused for such a head).
inline constexpr int64_t kv_q8_group(int64_t head_dim) {
  for (int64_t g : {32, 16, 8})
    if (head_dim % g == 0) return g;
  return 0;
}

// Bytes of one KV head's K (or V) in one block; a multiple of 16.
inline constexpr int64_t kv_head_bytes(KvType t, int64_t head_dim) {
  if (t == KvType::f16) return head_dim * kKvBlockTokens * 2;
  const int64_t g = kv_q8_group(head_dim);
  return head_dim * kKvBlockTokens + (g > 0 ? head_dim / g : 0) * kKvBlockTokens * 4;
}

// Blocks that hold `positions` positions.
inline constexpr int64_t kv_blocks_for(int64_t positions) {
  return (positions + kKvBlockTokens - 1) / kKvBlockTokens;
}

}  // namespace pensieve
