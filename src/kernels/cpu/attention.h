// Causal attention over a paged KV cache.
//
// The cache is a pool of blocks of kKvBlockTokens positions. Per layer, a
// block stores K transposed ([kv_head][head_dim][16]) so 16 scores come from
// head_dim broadcast-FMAs, and V as rows ([kv_head][16][head_dim]). K and V
// are IEEE half floats: half the memory of f32 (Phi-3-mini, with 32 KV heads,
// needs 384 KiB per position instead of 768) and half the bytes a decode step
// reads at long context; kernels widen them to f32 as they load, and all
// arithmetic stays f32. With --kv-type q8 they are int8 with a scale per
// small group (core/kv_geometry.h), widened the same way. A sequence reads its blocks through a block table. Softmax is computed online
// block by block (flash style): no score matrix is ever materialised, so long
// prompts cost O(n) memory.
#pragma once

#include <cstdint>
#include <span>

#include "core/kv_geometry.h"
#include "core/thread_pool.h"

namespace pensieve::kernels {

// The engine's block geometry (core/kv_geometry.h); the layouts below are
// written for it.
using pensieve::kKvBlockTokens;
static_assert(kKvBlockTokens == 16, "the CPU kernels' K tiles are 16 positions wide");

using KvElem = uint16_t;  // IEEE binary16 bits (see core/half.h)

// One layer of the pool (core/kv_geometry.h has the layouts): every
// block's K, [n_blocks][n_kv_heads] heads of head_bytes() each, and every
// block's V likewise.
struct KvLayerView {
  uint8_t* k = nullptr;
  uint8_t* v = nullptr;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  KvType type = KvType::f16;
  int64_t head_bytes() const { return kv_head_bytes(type, head_dim); }
  int64_t block_bytes() const { return n_kv_heads * head_bytes(); }
  uint8_t* k_head(int64_t block, int64_t h) const { return k + (block * n_kv_heads + h) * head_bytes(); }
  uint8_t* v_head(int64_t block, int64_t h) const { return v + (block * n_kv_heads + h) * head_bytes(); }
  // f16 only: a head's K ([head_dim][16]) and V ([16][head_dim]) as halves.
  KvElem* k16(int64_t block, int64_t h) const { return reinterpret_cast<KvElem*>(k_head(block, h)); }
  KvElem* v16(int64_t block, int64_t h) const { return reinterpret_cast<KvElem*>(v_head(block, h)); }
};

// One KV head of one block widened to f32, whatever the type: K as
// [head_dim][16], V as [16][head_dim].
void widen_k(const KvLayerView& kv, int64_t block, int64_t h, float* out);
void widen_v(const KvLayerView& kv, int64_t block, int64_t h, float* out);

// Symmetric int8 of n values in groups of g (n % g == 0): q[i] in
// [-127, 127], scales[i / g] = max|x| / 127 of the group (0 for an all-zero
// group), x ≈ q · scale. The q8 KV cache's rule.
void quantize_q8(const float* x, int64_t n, int64_t g, int8_t* q, float* scales);

struct AttentionSeq {
  const int32_t* block_table = nullptr;
  int64_t n_ctx = 0;    // positions 0..n_ctx-1 are in the cache (this step's included)
  int64_t q_row = 0;    // first row of this sequence's queries in q/out
  int64_t n_q = 0;      // its queries sit at positions n_ctx-n_q .. n_ctx-1
};

// Stores k/v ([n_kv_heads*head_dim] each) for `pos` of a sequence.
void kv_write(const KvLayerView& kv, const int32_t* block_table, int64_t pos, const float* k,
              const float* v);

// q, out: [rows][n_heads*head_dim]. sliding_window 0 = unlimited.
void attention(const float* q, const KvLayerView& kv, std::span<const AttentionSeq> seqs,
               int64_t n_heads, float scale, int64_t sliding_window, float* out, ThreadPool& pool);

// Scalar reference with the same contract (single-threaded, two-pass softmax in double).
void attention_ref(const float* q, const KvLayerView& kv, std::span<const AttentionSeq> seqs,
                   int64_t n_heads, float scale, int64_t sliding_window, float* out);

namespace avx512 {
// Queries at positions [pos0, pos0 + n_queries) (rows of q/out, strides ldq/ldo)
// x heads [head0, head0 + n_heads), all of which read KV head kv_head; each
// KV block is loaded once for the whole tile.
void attention_tile(const float* q, int64_t ldq, float* out, int64_t ldo, const KvLayerView& kv,
                    const int32_t* block_table, int64_t kv_head, int64_t head0, int64_t n_heads,
                    int64_t pos0, int64_t n_queries, int64_t window, float scale);
}
namespace avx2 {
void attention_one(const float* q, const KvLayerView& kv, const int32_t* block_table,
                   int64_t kv_head, int64_t pos, int64_t first_pos, float scale, float* out);
// n floats to half floats (round to nearest even, as f32_to_f16), with F16C.
void to_half(const float* x, int64_t n, KvElem* out);
// widen_k / widen_v with AVX2 (q8 and f16).
void widen_head(const KvLayerView& kv, int64_t block, int64_t h, bool is_v, float* out);
}

}  // namespace pensieve::kernels
