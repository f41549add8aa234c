// AVX-512 attention for one query head over a paged KV cache (see attention.h).
#include <immintrin.h>

#include <cmath>
#include <limits>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/vec_math_avx512.h"

namespace pensieve::kernels::avx512 {

void attention_one(const float* q, const KvLayerView& kv, const int32_t* block_table,
                   int64_t kv_head, int64_t pos, int64_t first_pos, float scale, float* out) {
  const int64_t hd = kv.head_dim;
  const int64_t n_chunks = (hd + 15) / 16;
  const __mmask16 last_mask =
      hd % 16 == 0 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (hd % 16)) - 1);
  __m512 acc[16];  // head_dim <= 256
  for (int64_t c = 0; c < n_chunks; ++c) acc[c] = _mm512_setzero_ps();
  float m = -std::numeric_limits<float>::infinity();
  float l = 0.f;
  alignas(64) float p[16];
  const __m512 lane = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512 vscale = _mm512_set1_ps(scale);
  const int64_t block_floats = kv.block_floats();
  for (int64_t b = first_pos / kKvBlockTokens; b <= pos / kKvBlockTokens; ++b) {
    const int64_t block = block_table[b];
    const float* kb = kv.k + block * block_floats + kv_head * hd * kKvBlockTokens;
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int64_t d = 0;
    for (; d + 2 <= hd; d += 2) {
      s0 = _mm512_fmadd_ps(_mm512_set1_ps(q[d]), _mm512_loadu_ps(kb + d * kKvBlockTokens), s0);
      s1 = _mm512_fmadd_ps(_mm512_set1_ps(q[d + 1]), _mm512_loadu_ps(kb + (d + 1) * kKvBlockTokens), s1);
    }
    if (d < hd) s0 = _mm512_fmadd_ps(_mm512_set1_ps(q[d]), _mm512_loadu_ps(kb + d * kKvBlockTokens), s0);
    __m512 s = _mm512_mul_ps(_mm512_add_ps(s0, s1), vscale);
    const int64_t base = b * kKvBlockTokens;
    const __m512 posv = _mm512_add_ps(lane, _mm512_set1_ps(static_cast<float>(base)));
    const __mmask16 valid =
        _mm512_cmp_ps_mask(posv, _mm512_set1_ps(static_cast<float>(first_pos)), _CMP_GE_OQ) &
        _mm512_cmp_ps_mask(posv, _mm512_set1_ps(static_cast<float>(pos)), _CMP_LE_OQ);
    const float m_blk = _mm512_mask_reduce_max_ps(valid, s);
    const float m_new = std::max(m, m_blk);
    const __m512 e = _mm512_maskz_mov_ps(valid, exp_ps(_mm512_sub_ps(s, _mm512_set1_ps(m_new))));
    const float corr = std::exp(m - m_new);
    l = l * corr + _mm512_reduce_add_ps(e);
    m = m_new;
    _mm512_store_ps(p, e);
    const __m512 vcorr = _mm512_set1_ps(corr);
    for (int64_t c = 0; c < n_chunks; ++c) acc[c] = _mm512_mul_ps(acc[c], vcorr);
    const float* vb = kv.v + block * block_floats + kv_head * kKvBlockTokens * hd;
    for (int j = 0; j < kKvBlockTokens; ++j) {
      if (!((valid >> j) & 1)) continue;
      const __m512 pj = _mm512_set1_ps(p[j]);
      const float* vrow = vb + j * hd;
      for (int64_t c = 0; c + 1 < n_chunks; ++c) {
        acc[c] = _mm512_fmadd_ps(pj, _mm512_loadu_ps(vrow + c * 16), acc[c]);
      }
      const int64_t c = n_chunks - 1;
      acc[c] = _mm512_fmadd_ps(pj, _mm512_maskz_loadu_ps(last_mask, vrow + c * 16), acc[c]);
    }
  }
  const __m512 inv = _mm512_set1_ps(1.0f / l);
  for (int64_t c = 0; c + 1 < n_chunks; ++c) _mm512_storeu_ps(out + c * 16, _mm512_mul_ps(acc[c], inv));
  _mm512_mask_storeu_ps(out + (n_chunks - 1) * 16, last_mask,
                        _mm512_mul_ps(acc[n_chunks - 1], inv));
}

}  // namespace pensieve::kernels::avx512
