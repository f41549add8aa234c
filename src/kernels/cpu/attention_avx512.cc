// AVX-512 attention over a paged KV cache (see attention.h).
//
// Online softmax, one 16-token KV block at a time: scores for the block with
// 16 lanes (K is stored transposed per block), one max/exp per block, then
// P·V into accumulators held in registers (the head dimension is a template
// parameter, so the accumulator array is fully unrolled; small heads use two
// interleaved sets to hide the FMA latency). Blocks strictly inside the
// window skip all masking.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/vec_math_avx512.h"

namespace pensieve::kernels::avx512 {
namespace {

// A tile of query heads against each KV block in turn: every query of
// [pos0, pos0 + n_queries) times every head of one KV head's group. K and V
// of a block are read once for the whole tile (flash-style tiling), instead
// of once per query head; the per-query-head state (max, sum, accumulators)
// lives in a small buffer that stays in L1.
// The last 16-float chunk of a row: a plain 8-float load when exactly half
// is used (head_dim 8, 40, 72, ...; masked loads are slow in the hot loop).
inline __m512 load_tail(const float* p, __mmask16 mask, bool half) {
  if (half) return _mm512_zextps256_ps512(_mm256_loadu_ps(p));
  return _mm512_maskz_loadu_ps(mask, p);
}

template <int NC>
void attention_tile_impl(const float* q, int64_t ldq, float* out, int64_t ldo,
                         const KvLayerView& kv, const int32_t* block_table, int64_t kv_head,
                         int64_t head0, int64_t n_heads, int64_t pos0, int64_t n_queries,
                         int64_t window, float scale) {
  const int64_t hd = kv.head_dim;
  const int64_t nq = n_queries * n_heads;
  const __mmask16 last_mask =
      hd % 16 == 0 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (hd % 16)) - 1);
  const bool half_tail = hd % 16 == 8;
  thread_local std::vector<__m512> state;  // per query head: NC accumulators + the sum
  thread_local std::vector<float> maxes;
  state.assign(static_cast<size_t>(nq * (NC + 1)), _mm512_setzero_ps());
  maxes.assign(static_cast<size_t>(nq), -std::numeric_limits<float>::infinity());
  const __m512 lane = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512 vscale = _mm512_set1_ps(scale);
  const int64_t block_floats = kv.block_floats();
  const int64_t pos_last = pos0 + n_queries - 1;
  const int64_t first0 = window > 0 ? std::max<int64_t>(0, pos0 - window + 1) : 0;
  alignas(64) float p[16];
  for (int64_t b = first0 / kKvBlockTokens; b <= pos_last / kKvBlockTokens; ++b) {
    const int64_t block = block_table[b];
    const float* kb = kv.k + block * block_floats + kv_head * hd * kKvBlockTokens;
    const float* vb = kv.v + block * block_floats + kv_head * kKvBlockTokens * hd;
    const int64_t base = b * kKvBlockTokens;
    for (int64_t i = 0; i < n_queries; ++i) {
      const int64_t pos = pos0 + i;
      const int64_t first = window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0;
      if (base > pos || base + kKvBlockTokens <= first) continue;
      __mmask16 valid = 0xffff;
      if (base < first || base + kKvBlockTokens - 1 > pos) {
        const __m512 posv = _mm512_add_ps(lane, _mm512_set1_ps(static_cast<float>(base)));
        valid = _mm512_cmp_ps_mask(posv, _mm512_set1_ps(static_cast<float>(first)), _CMP_GE_OQ) &
                _mm512_cmp_ps_mask(posv, _mm512_set1_ps(static_cast<float>(pos)), _CMP_LE_OQ);
      }
      for (int64_t h = 0; h < n_heads; ++h) {
        const float* qh = q + i * ldq + (head0 + h) * hd;
        const int64_t x = i * n_heads + h;
        __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
        int64_t d = 0;
        for (; d + 2 <= hd; d += 2) {
          s0 = _mm512_fmadd_ps(_mm512_set1_ps(qh[d]), _mm512_loadu_ps(kb + d * kKvBlockTokens), s0);
          s1 = _mm512_fmadd_ps(_mm512_set1_ps(qh[d + 1]), _mm512_loadu_ps(kb + (d + 1) * kKvBlockTokens), s1);
        }
        if (d < hd) s0 = _mm512_fmadd_ps(_mm512_set1_ps(qh[d]), _mm512_loadu_ps(kb + d * kKvBlockTokens), s0);
        const __m512 sc = _mm512_mul_ps(_mm512_add_ps(s0, s1), vscale);
        const float m = maxes[x];
        const float m_new = std::max(m, _mm512_mask_reduce_max_ps(valid, sc));
        const __m512 e = _mm512_maskz_mov_ps(valid, exp_ps(_mm512_sub_ps(sc, _mm512_set1_ps(m_new))));
        maxes[x] = m_new;
        __m512* st = &state[static_cast<size_t>(x * (NC + 1))];
        __m512 acc[NC];
        for (int c = 0; c < NC; ++c) acc[c] = st[c];
        __m512 lsum = st[NC];
        if (m != m_new) {
          const __m512 vcorr = _mm512_set1_ps(std::exp(m - m_new));
          for (int c = 0; c < NC; ++c) acc[c] = _mm512_mul_ps(acc[c], vcorr);
          lsum = _mm512_mul_ps(lsum, vcorr);
        }
        st[NC] = _mm512_add_ps(lsum, e);
        if (valid == 0xffff) {
          // A full block: every key, its weight taken from e's lane j by a
          // permute (no store and reload), two accumulator sets for short heads.
          __m512 acc2[NC];
          for (int c = 0; c < NC; ++c) acc2[c] = _mm512_setzero_ps();
          if (NC == 1 && hd == 8) {
            // Head dim 8: two V rows per register, lanes 0-7 key j and 8-15
            // key j+1; the halves are added when the tile is written out.
#pragma GCC unroll 8
            for (int j = 0; j < kKvBlockTokens; j += 2) {
              const __m512i idx = _mm512_mask_blend_epi32(0xff00, _mm512_set1_epi32(j), _mm512_set1_epi32(j + 1));
              const __m512 pj = _mm512_permutexvar_ps(idx, e);
              __m512* a = ((j >> 1) & 1) ? acc2 : acc;
              a[0] = _mm512_fmadd_ps(pj, _mm512_loadu_ps(vb + j * 8), a[0]);
            }
          } else {
#pragma GCC unroll 16
          for (int j = 0; j < kKvBlockTokens; ++j) {
            const __m512 pj = _mm512_permutexvar_ps(_mm512_set1_epi32(j), e);
            const float* vrow = vb + j * hd;
            __m512* a = (NC <= 2 && (j & 1)) ? acc2 : acc;
            for (int c = 0; c + 1 < NC; ++c) a[c] = _mm512_fmadd_ps(pj, _mm512_loadu_ps(vrow + c * 16), a[c]);
            a[NC - 1] = _mm512_fmadd_ps(pj, load_tail(vrow + (NC - 1) * 16, last_mask, half_tail), a[NC - 1]);
          }
          }
          if (NC <= 2)
            for (int c = 0; c < NC; ++c) acc[c] = _mm512_add_ps(acc[c], acc2[c]);
        } else {
          // A partial block (the diagonal or the window's edge): only the
          // keys in range; slots outside it may hold stale values.
          _mm512_store_ps(p, e);
          for (int j = 0; j < kKvBlockTokens; ++j) {
            if (!((valid >> j) & 1)) continue;
            const __m512 pj = _mm512_set1_ps(p[j]);
            const float* vrow = vb + j * hd;
            for (int c = 0; c + 1 < NC; ++c) acc[c] = _mm512_fmadd_ps(pj, _mm512_loadu_ps(vrow + c * 16), acc[c]);
            acc[NC - 1] = _mm512_fmadd_ps(pj, load_tail(vrow + (NC - 1) * 16, last_mask, half_tail), acc[NC - 1]);
          }
        }
        for (int c = 0; c < NC; ++c) st[c] = acc[c];
      }
    }
  }
  for (int64_t i = 0; i < n_queries; ++i) {
    for (int64_t h = 0; h < n_heads; ++h) {
      const int64_t x = i * n_heads + h;
      const __m512* st = &state[static_cast<size_t>(x * (NC + 1))];
      const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(st[NC]));
      float* o = out + i * ldo + (head0 + h) * hd;
      if (NC == 1 && hd == 8) {  // fold the two key halves (see the full-block loop)
        const __m512 v = st[0];
        const __m256 sum = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
        _mm256_storeu_ps(o, _mm256_mul_ps(sum, _mm512_castps512_ps256(inv)));
        continue;
      }
      for (int c = 0; c + 1 < NC; ++c) _mm512_storeu_ps(o + c * 16, _mm512_mul_ps(st[c], inv));
      _mm512_mask_storeu_ps(o + (NC - 1) * 16, last_mask, _mm512_mul_ps(st[NC - 1], inv));
    }
  }
}

}  // namespace

void attention_tile(const float* q, int64_t ldq, float* out, int64_t ldo, const KvLayerView& kv,
                    const int32_t* block_table, int64_t kv_head, int64_t head0, int64_t n_heads,
                    int64_t pos0, int64_t n_queries, int64_t window, float scale) {
  switch ((kv.head_dim + 15) / 16) {
#define PENSIEVE_CASE(N)                                                                        \
  case N:                                                                                       \
    return attention_tile_impl<N>(q, ldq, out, ldo, kv, block_table, kv_head, head0, n_heads, \
                                  pos0, n_queries, window, scale);
    PENSIEVE_CASE(1) PENSIEVE_CASE(2) PENSIEVE_CASE(3) PENSIEVE_CASE(4)
    PENSIEVE_CASE(5) PENSIEVE_CASE(6) PENSIEVE_CASE(7) PENSIEVE_CASE(8)
    PENSIEVE_CASE(9) PENSIEVE_CASE(10) PENSIEVE_CASE(11) PENSIEVE_CASE(12)
    PENSIEVE_CASE(13) PENSIEVE_CASE(14) PENSIEVE_CASE(15) PENSIEVE_CASE(16)
#undef PENSIEVE_CASE
    default: return;
  }
}

}  // namespace pensieve::kernels::avx512
