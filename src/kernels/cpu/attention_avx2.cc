// AVX2 attention for one query head over a paged KV cache (see attention.h):
// the AVX-512 kernel's online softmax with each 16-token block as two
// 8-lane halves.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/half.h"
#include "kernels/cpu/attention.h"

namespace pensieve::kernels::avx2 {
namespace {

inline __m256 exp_ps(__m256 x) {
  const __m256 log2e = _mm256_set1_ps(1.44269504088896341f);
  const __m256 ln2_hi = _mm256_set1_ps(0.693359375f);
  const __m256 ln2_lo = _mm256_set1_ps(-2.12194440e-4f);
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));  // 2^n below stays a normal float
  x = _mm256_min_ps(x, _mm256_set1_ps(88.3f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, ln2_hi, x);
  r = _mm256_fnmadd_ps(n, ln2_lo, r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  // Multiply by 2^n through the exponent bits.
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

inline float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
}

// 8 half floats from the cache, widened.
inline __m256 load8(const KvElem* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline float to_f32(KvElem h) { return f16_to_f32(h); }
inline float to_f32(float f) { return f; }

// 8 int8 values widened and scaled.
inline __m256 load8_q8(const uint8_t* p, __m256 scale) {
  const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)), scale);
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

}  // namespace

namespace {

template <typename E>
void attention_one_impl(const float* q, const KvLayerView& kv, const int32_t* block_table,
                        int64_t kv_head, int64_t pos, int64_t first_pos, float scale, float* out) {
  const int64_t hd = kv.head_dim;
  float acc[256] = {};  // head_dim <= 256
  float m = -std::numeric_limits<float>::infinity();
  float l = 0.f;
  alignas(32) float p[16];
  const __m256 lane = _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256 vscale = _mm256_set1_ps(scale);
  const __m256 neg_inf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  // q8 blocks are widened to f32 first (E = float); f16 ones are read in place.
  thread_local std::vector<float> kf, vf;
  if constexpr (std::is_same_v<E, float>) {
    kf.resize(static_cast<size_t>(hd * kKvBlockTokens));
    vf.resize(static_cast<size_t>(hd * kKvBlockTokens));
  }
  for (int64_t b = first_pos / kKvBlockTokens; b <= pos / kKvBlockTokens; ++b) {
    const int64_t block = block_table[b];
    const E* kb;
    const E* vb;
    if constexpr (std::is_same_v<E, float>) {
      widen_head(kv, block, kv_head, false, kf.data());
      widen_head(kv, block, kv_head, true, vf.data());
      kb = kf.data();
      vb = vf.data();
    } else {
      kb = kv.k16(block, kv_head);
      vb = kv.v16(block, kv_head);
    }
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    for (int64_t d = 0; d < hd; ++d) {
      const __m256 qd = _mm256_set1_ps(q[d]);
      s0 = _mm256_fmadd_ps(qd, load8(kb + d * kKvBlockTokens), s0);
      s1 = _mm256_fmadd_ps(qd, load8(kb + d * kKvBlockTokens + 8), s1);
    }
    const float base = static_cast<float>(b * kKvBlockTokens);
    const __m256 lo = _mm256_set1_ps(static_cast<float>(first_pos));
    const __m256 hi = _mm256_set1_ps(static_cast<float>(pos));
    const __m256 p0 = _mm256_add_ps(lane, _mm256_set1_ps(base));
    const __m256 p1 = _mm256_add_ps(lane, _mm256_set1_ps(base + 8));
    const __m256 v0 = _mm256_and_ps(_mm256_cmp_ps(p0, lo, _CMP_GE_OQ), _mm256_cmp_ps(p0, hi, _CMP_LE_OQ));
    const __m256 v1 = _mm256_and_ps(_mm256_cmp_ps(p1, lo, _CMP_GE_OQ), _mm256_cmp_ps(p1, hi, _CMP_LE_OQ));
    s0 = _mm256_blendv_ps(neg_inf, _mm256_mul_ps(s0, vscale), v0);
    s1 = _mm256_blendv_ps(neg_inf, _mm256_mul_ps(s1, vscale), v1);
    const float m_new = std::max(m, hmax(_mm256_max_ps(s0, s1)));
    const __m256 mv = _mm256_set1_ps(m_new);
    const __m256 e0 = _mm256_and_ps(exp_ps(_mm256_sub_ps(s0, mv)), v0);
    const __m256 e1 = _mm256_and_ps(exp_ps(_mm256_sub_ps(s1, mv)), v1);
    const float corr = std::exp(m - m_new);
    l = l * corr + hsum(_mm256_add_ps(e0, e1));
    m = m_new;
    _mm256_store_ps(p, e0);
    _mm256_store_ps(p + 8, e1);
    const int mask = _mm256_movemask_ps(v0) | (_mm256_movemask_ps(v1) << 8);
    const __m256 vcorr = _mm256_set1_ps(corr);
    int64_t d = 0;
    for (; d + 8 <= hd; d += 8) {
      __m256 a = _mm256_mul_ps(_mm256_loadu_ps(acc + d), vcorr);
      for (int j = 0; j < kKvBlockTokens; ++j) {
        if ((mask >> j) & 1) a = _mm256_fmadd_ps(_mm256_set1_ps(p[j]), load8(vb + j * hd + d), a);
      }
      _mm256_storeu_ps(acc + d, a);
    }
    for (; d < hd; ++d) {
      float a = acc[d] * corr;
      for (int j = 0; j < kKvBlockTokens; ++j) {
        if ((mask >> j) & 1) a += p[j] * to_f32(vb[j * hd + d]);
      }
      acc[d] = a;
    }
  }
  const float inv = 1.0f / l;
  for (int64_t d = 0; d < hd; ++d) out[d] = acc[d] * inv;
}

}  // namespace

void attention_one(const float* q, const KvLayerView& kv, const int32_t* block_table,
                   int64_t kv_head, int64_t pos, int64_t first_pos, float scale, float* out) {
  if (kv.type == KvType::q8) return attention_one_impl<float>(q, kv, block_table, kv_head, pos, first_pos, scale, out);
  attention_one_impl<KvElem>(q, kv, block_table, kv_head, pos, first_pos, scale, out);
}

void widen_head(const KvLayerView& kv, int64_t block, int64_t h, bool is_v, float* out) {
  const int64_t hd = kv.head_dim, n = hd * kKvBlockTokens;
  const uint8_t* p = is_v ? kv.v_head(block, h) : kv.k_head(block, h);
  if (kv.type == KvType::f16) {
    const KvElem* e = reinterpret_cast<const KvElem*>(p);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, load8(e + i));
    for (; i < n; ++i) out[i] = f16_to_f32(e[i]);
    return;
  }
  const int64_t g = kv_q8_group(hd);
  const float* sc = reinterpret_cast<const float*>(p + n);
  if (!is_v) {  // [hd][16]: row d's 16 tokens take the scales of group d / g
    for (int64_t d = 0; d < hd; ++d) {
      const float* s = sc + (d / g) * kKvBlockTokens;
      _mm256_storeu_ps(out + d * 16, load8_q8(p + d * 16, _mm256_loadu_ps(s)));
      _mm256_storeu_ps(out + d * 16 + 8, load8_q8(p + d * 16 + 8, _mm256_loadu_ps(s + 8)));
    }
    return;
  }
  const int64_t ng = hd / g;  // [16][hd]: g (a multiple of 8) values per scale
  for (int64_t t = 0; t < kKvBlockTokens; ++t)
    for (int64_t d = 0; d < hd; d += 8)
      _mm256_storeu_ps(out + t * hd + d, load8_q8(p + t * hd + d, _mm256_set1_ps(sc[t * ng + d / g])));
}

void to_half(const float* x, int64_t n, KvElem* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  for (; i < n; ++i) out[i] = f32_to_f16(x[i]);
}

}  // namespace pensieve::kernels::avx2
