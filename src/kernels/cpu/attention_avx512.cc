// AVX-512 attention over a paged KV cache (see attention.h).
//
// Online softmax, one 16-token KV block at a time: scores for the block with
// 16 lanes (K is stored transposed per block), one max/exp per block, then
// P·V into accumulators held in registers (the head dimension is a template
// parameter, so the accumulator array is fully unrolled). Query heads that
// see a whole block go through it two or four at a time, so the FMA chains
// are independent and each K and V vector is loaded once for all of them.
// Blocks strictly inside the window skip all masking.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/aligned.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/vec_math_avx512.h"

namespace pensieve::kernels::avx512 {
namespace {

// 16 half floats from the cache, widened.
inline __m512 load16(const KvElem* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// The last 16-value chunk of a row: a plain 8-value load when exactly half
// is used (head_dim 8, 40, 72, ...; masked loads are slow in the hot loop).
inline __m512 load_tail(const KvElem* p, __mmask16 mask, bool half) {
  if (half) {
    return _mm512_zextps256_ps512(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, p));
}

// Already-widened values (q8 blocks are widened to f32 first).
inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load_tail(const float* p, __mmask16 mask, bool) { return _mm512_maskz_loadu_ps(mask, p); }

// 16 int8 values widened and scaled.
inline __m512 load16_q8(const uint8_t* p, __m512 scale) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b)), scale);
}

// One KV head of a block (K: [hd][16], V: [16][hd]) widened into f32 scratch.
void widen_head(const KvLayerView& kv, int64_t block, int64_t h, bool is_v, float* dst) {
  const int64_t hd = kv.head_dim, n = hd * kKvBlockTokens;
  const uint8_t* p = is_v ? kv.v_head(block, h) : kv.k_head(block, h);
  if (kv.type == KvType::f16) {
    const KvElem* e = reinterpret_cast<const KvElem*>(p);
    for (int64_t i = 0; i < n; i += 16) _mm512_storeu_ps(dst + i, load16(e + i));
    return;
  }
  const int64_t g = kv_q8_group(hd);
  const float* sc = reinterpret_cast<const float*>(p + n);
  if (!is_v) {  // row d's 16 tokens take the 16 scales of group d / g
    for (int64_t d = 0; d < hd; ++d)
      _mm512_storeu_ps(dst + d * 16, load16_q8(p + d * 16, _mm512_loadu_ps(sc + (d / g) * kKvBlockTokens)));
    return;
  }
  const int64_t ng = hd / g;  // a token's row: g (8, 16 or 32) values per scale
  for (int64_t t = 0; t < kKvBlockTokens; ++t) {
    const float* st = sc + t * ng;
    const uint8_t* row = p + t * hd;
    float* out = dst + t * hd;
    int64_t d = 0;
    for (; d + 16 <= hd; d += 16) {
      const __m512 scale = g >= 16 ? _mm512_set1_ps(st[d / g])
                                   : _mm512_insertf32x8(_mm512_set1_ps(st[d / g]), _mm256_set1_ps(st[d / g + 1]), 1);
      _mm512_storeu_ps(out + d, load16_q8(row + d, scale));
    }
    for (; d < hd; d += 8) {  // hd % 16 == 8
      const __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + d))));
      _mm256_storeu_ps(out + d, _mm256_mul_ps(v, _mm256_set1_ps(st[d / g])));
    }
  }
}

// Per query head (a "row"): NC accumulators of P·V and the running sum of
// the weights (16 lanes each, added up at the end), and the running max.
struct RowState {
  __m512* st;  // NC accumulators, then the sum
  float* max;
};

// Scores of one 16-key block for QB rows: four independent FMA chains per
// row over the head dimension (one chain waits out the FMA latency at every
// step, which held this loop to a fraction of the FMA rate), each K vector
// loaded once for all QB rows.
//
// pf_k / pf_v: a later block's K and V (hd·16 halves each) to prefetch, two
// lines of each per step, spread over the loop (a burst of 96 prefetches at
// once stalls on the line-fill buffers); nullptr for none.
template <int QB, typename E>
inline void block_scores(const float* const* q, const E* kb, int64_t hd, __m512 scale,
                         __m512* out, const char* pf_k = nullptr, const char* pf_v = nullptr) {
  __m512 s[QB][4];
  for (int k = 0; k < QB; ++k)
    for (int u = 0; u < 4; ++u) s[k][u] = _mm512_setzero_ps();
  int64_t d = 0;
  for (; d + 4 <= hd; d += 4) {
    if (pf_k != nullptr) {  // 4 rows of 16 halves = 128 bytes of each
      _mm_prefetch(pf_k + 32 * d, _MM_HINT_T0);
      _mm_prefetch(pf_k + 32 * d + 64, _MM_HINT_T0);
      _mm_prefetch(pf_v + 32 * d, _MM_HINT_T0);
      _mm_prefetch(pf_v + 32 * d + 64, _MM_HINT_T0);
    }
    for (int u = 0; u < 4; ++u) {
      const __m512 kv = load16(kb + (d + u) * kKvBlockTokens);
      for (int k = 0; k < QB; ++k) s[k][u] = _mm512_fmadd_ps(_mm512_set1_ps(q[k][d + u]), kv, s[k][u]);
    }
  }
  for (; d < hd; ++d) {
    const __m512 kv = load16(kb + d * kKvBlockTokens);
    for (int k = 0; k < QB; ++k) s[k][0] = _mm512_fmadd_ps(_mm512_set1_ps(q[k][d]), kv, s[k][0]);
  }
  for (int k = 0; k < QB; ++k) {
    const __m512 sum = _mm512_add_ps(_mm512_add_ps(s[k][0], s[k][1]), _mm512_add_ps(s[k][2], s[k][3]));
    out[k] = _mm512_mul_ps(sum, scale);
  }
}

// Online-softmax step for one row: returns the block's weights (zero outside
// `valid`); the row's sum and accumulators are rescaled in place when its
// max grows.
template <int NC>
inline __m512 softmax_step(__m512 sc, __mmask16 valid, RowState r) {
  const float m = *r.max;
  const float m_new = std::max(m, _mm512_mask_reduce_max_ps(valid, sc));
  const __m512 e = _mm512_maskz_mov_ps(valid, exp_ps(_mm512_sub_ps(sc, _mm512_set1_ps(m_new))));
  if (m != m_new) {
    const __m512 corr = _mm512_set1_ps(std::exp(m - m_new));  // m = -inf on the first block: 0
    for (int c = 0; c <= NC; ++c) r.st[c] = _mm512_mul_ps(r.st[c], corr);
    *r.max = m_new;
  }
  r.st[NC] = _mm512_add_ps(r.st[NC], e);
  return e;
}

// A block's KV head as the row kernels below read it: its 16 scores for QB
// rows, and row j of V as NC 16-value chunks (the last masked to the head).
// PlainHead: f16 in place (E = KvElem) or widened to f32 (E = float).
template <typename E>
struct PlainHead {
  const E* k;
  const E* v;
  __mmask16 last_mask;
  bool half_tail;
  template <int QB>
  void scores(const float* const* q, int64_t hd, __m512 scale, __m512* out, const char* pf_k,
              const char* pf_v) const {
    block_scores<QB>(q, k, hd, scale, out, pf_k, pf_v);
  }
  template <int NC>
  void v_row(int64_t hd, int j, __m512* out) const {
    const E* row = v + j * hd;
    for (int c = 0; c + 1 < NC; ++c) out[c] = load16(row + c * 16);
    out[NC - 1] = load_tail(row + (NC - 1) * 16, last_mask, half_tail);
  }
};

// A q8 block's head read in place (decode: the rows of a tile are few, so
// widening the block first would cost more than the dot products; groups of
// 16 or 32 dimensions, so a 16-dimension chunk of V has one scale).
struct Q8Head {
  const uint8_t* k;   // [hd][16] int8
  const float* ks;    // [hd / g][16]
  const uint8_t* v;   // [16][hd] int8
  const float* vs;    // [16][hd / g]
  int64_t g;
  template <int QB>
  void scores(const float* const* q, int64_t hd, __m512 scale, __m512* out, const char* pf_k,
              const char* pf_v) const;
  template <int NC>
  void v_row(int64_t hd, int j, __m512* out) const;
};

inline __m512 cvt16(const uint8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}

// block_scores on int8 K: each group's dot products in four chains, then
// times the group's 16 scales (one per key).
template <int QB>
inline void block_scores_q8(const float* const* q, const Q8Head& b, int64_t hd, __m512 scale, __m512* out,
                            const char* pf_k = nullptr, const char* pf_v = nullptr) {
  __m512 tot[QB];
  for (int k = 0; k < QB; ++k) tot[k] = _mm512_setzero_ps();
  for (int64_t g0 = 0; g0 < hd; g0 += b.g) {
    __m512 s[QB][4];
    for (int k = 0; k < QB; ++k)
      for (int u = 0; u < 4; ++u) s[k][u] = _mm512_setzero_ps();
    if (pf_k != nullptr) {  // the group's scales
      _mm_prefetch(pf_k + hd * 16 + g0 * 4, _MM_HINT_T0);
      _mm_prefetch(pf_v + hd * 16 + g0 * 4, _MM_HINT_T0);
    }
    for (int64_t d = g0; d < g0 + b.g; d += 4) {  // g is a multiple of 4
      if (pf_k != nullptr) {  // 4 rows of 16 int8 = one line of each
        _mm_prefetch(pf_k + 16 * d, _MM_HINT_T0);
        _mm_prefetch(pf_v + 16 * d, _MM_HINT_T0);
      }
      for (int u = 0; u < 4; ++u) {
        const __m512 kv = cvt16(b.k + (d + u) * kKvBlockTokens);
        for (int k = 0; k < QB; ++k) s[k][u] = _mm512_fmadd_ps(_mm512_set1_ps(q[k][d + u]), kv, s[k][u]);
      }
    }
    const __m512 sc = _mm512_loadu_ps(b.ks + (g0 / b.g) * kKvBlockTokens);
    for (int k = 0; k < QB; ++k) {
      const __m512 sum = _mm512_add_ps(_mm512_add_ps(s[k][0], s[k][1]), _mm512_add_ps(s[k][2], s[k][3]));
      tot[k] = _mm512_fmadd_ps(sum, sc, tot[k]);
    }
  }
  for (int k = 0; k < QB; ++k) out[k] = _mm512_mul_ps(tot[k], scale);
}

// Row j of int8 V as NC chunks of 16, each times its group's scale (a
// tail of 8 when hd % 16 == 8).
template <int NC>
inline void v_row_q8(const Q8Head& b, int64_t hd, int j, __m512* v) {
  const uint8_t* row = b.v + j * hd;
  const float* sc = b.vs + j * (hd / b.g);
  for (int c = 0; c + 1 < NC; ++c) v[c] = _mm512_mul_ps(cvt16(row + c * 16), _mm512_set1_ps(sc[c * 16 / b.g]));
  const int c = NC - 1;
  const __m512 last = hd - c * 16 == 8
                          ? _mm512_zextps256_ps512(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
                                _mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + c * 16)))))
                          : cvt16(row + c * 16);
  v[c] = _mm512_mul_ps(last, _mm512_set1_ps(sc[c * 16 / b.g]));
}

template <int QB>
void Q8Head::scores(const float* const* q, int64_t hd, __m512 scale, __m512* out, const char* pf_k,
                    const char* pf_v) const {
  block_scores_q8<QB>(q, *this, hd, scale, out, pf_k, pf_v);
}
template <int NC>
void Q8Head::v_row(int64_t hd, int j, __m512* out) const {
  v_row_q8<NC>(*this, hd, j, out);
}

// QB rows whose window covers the whole block: scores, softmax and P·V over
// all 16 keys, each V row loaded once for the QB rows (QB·NC independent
// accumulator chains).
template <int NC, int QB, typename H>
inline void rows_full_block(const float* const* q, const RowState* rows, const H& head, int64_t hd,
                            __m512 scale, const char* pf_k, const char* pf_v) {
  __m512 sc[QB], e[QB];
  head.template scores<QB>(q, hd, scale, sc, pf_k, pf_v);
  for (int k = 0; k < QB; ++k) e[k] = softmax_step<NC>(sc[k], 0xffff, rows[k]);
  __m512 acc[QB][NC];
  for (int k = 0; k < QB; ++k)
    for (int c = 0; c < NC; ++c) acc[k][c] = rows[k].st[c];
#pragma GCC unroll 4
  for (int j = 0; j < kKvBlockTokens; ++j) {
    __m512 v[NC];
    head.template v_row<NC>(hd, j, v);
    const __m512i idx = _mm512_set1_epi32(j);
    for (int k = 0; k < QB; ++k) {
      const __m512 pj = _mm512_permutexvar_ps(idx, e[k]);
      for (int c = 0; c < NC; ++c) acc[k][c] = _mm512_fmadd_ps(pj, v[c], acc[k][c]);
    }
  }
  for (int k = 0; k < QB; ++k)
    for (int c = 0; c < NC; ++c) rows[k].st[c] = acc[k][c];
}

// One row against a partial block (the diagonal or the window's edge): only
// the keys in `valid`; slots outside it may hold stale values.
template <int NC, typename H>
inline void row_partial_block(const float* q, RowState row, __mmask16 valid, const H& head, int64_t hd,
                              __m512 scale) {
  __m512 sc;
  head.template scores<1>(&q, hd, scale, &sc, nullptr, nullptr);
  const __m512 e = softmax_step<NC>(sc, valid, row);
  alignas(64) float p[16];
  _mm512_store_ps(p, e);
  __m512 acc[NC];
  for (int c = 0; c < NC; ++c) acc[c] = row.st[c];
  for (int j = 0; j < kKvBlockTokens; ++j) {
    if (!((valid >> j) & 1)) continue;
    __m512 v[NC];
    head.template v_row<NC>(hd, j, v);
    const __m512 pj = _mm512_set1_ps(p[j]);
    for (int c = 0; c < NC; ++c) acc[c] = _mm512_fmadd_ps(pj, v[c], acc[c]);
  }
  for (int c = 0; c < NC; ++c) row.st[c] = acc[c];
}

// Prefill: 32 rows (query heads) in the 16 lanes of two vectors, against each
// KV block in turn; both products are register-tiled like a matmul.
//   scores  S[j][rows] = Σ_d K[j][d] · Qt[d][rows]   (8 keys x 32 rows per pass)
//   P·V     O[d][rows] += Σ_j V[j][d] · P[j][rows]   (8 dims x 32 rows per pass)
// Every FMA takes a broadcast of K or V and a vector of rows, so each loaded
// row vector feeds 8 FMAs and 16 independent chains cover the FMA latency.
// With the rows in lanes the softmax is elementwise across the 16 keys: no
// horizontal max or sum. O stays in an L1 buffer between blocks.
constexpr int kLaneRows = 32;

void attention_lanes(const float* q, int64_t ldq, float* out, int64_t ldo, const KvLayerView& kv,
                     const int32_t* block_table, int64_t kv_head, int64_t head0, int64_t n_heads,
                     int64_t pos0, int64_t x0, int64_t n_rows, int64_t window, float scale) {
  constexpr int MT = kLaneRows / 16;
  const int64_t hd = kv.head_dim;
  thread_local AlignedVector<float> qt_buf, o_buf;
  qt_buf.resize(static_cast<size_t>(hd * kLaneRows));
  o_buf.resize(static_cast<size_t>(hd * kLaneRows));
  float* qt = qt_buf.data();
  float* o = o_buf.data();
  std::fill(o, o + hd * kLaneRows, 0.f);
  alignas(64) int32_t lane_pos[kLaneRows], lane_first[kLaneRows];
  int64_t lo = std::numeric_limits<int64_t>::max(), hi = -1;
  for (int l = 0; l < kLaneRows; ++l) {
    const int64_t x = x0 + l;
    if (l < n_rows) {
      const int64_t pos = pos0 + x / n_heads;
      const int64_t first = window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0;
      lane_pos[l] = static_cast<int32_t>(pos);
      lane_first[l] = static_cast<int32_t>(first);
      lo = std::min(lo, first);
      hi = std::max(hi, pos);
      const float* qr = q + (x / n_heads) * ldq + (head0 + x % n_heads) * hd;
      for (int64_t d = 0; d < hd; ++d) qt[d * kLaneRows + l] = qr[d] * scale;
    } else {  // an unused lane sees no key; its output is never stored
      lane_pos[l] = -1;
      lane_first[l] = 0;
      for (int64_t d = 0; d < hd; ++d) qt[d * kLaneRows + l] = 0.f;
    }
  }
  __m512i posv[MT], firstv[MT];
  __m512 mx[MT], sum[MT];
  for (int m = 0; m < MT; ++m) {
    posv[m] = _mm512_load_si512(lane_pos + 16 * m);
    firstv[m] = _mm512_load_si512(lane_first + 16 * m);
    mx[m] = _mm512_set1_ps(-1e30f);  // finite: a lane with no key yet keeps corr = 1
    sum[m] = _mm512_setzero_ps();
  }
  const __m512 none = _mm512_set1_ps(-1e30f);
  // Each block's K and V are widened to f32 once for the 32 rows (the
  // broadcasts below then read plain floats).
  thread_local AlignedVector<float> kf_buf, vf_buf;
  kf_buf.resize(static_cast<size_t>(hd * kKvBlockTokens));
  vf_buf.resize(static_cast<size_t>(hd * kKvBlockTokens));
  const float* kb = kf_buf.data();
  const float* vb = vf_buf.data();
  for (int64_t b = lo / kKvBlockTokens; b <= hi / kKvBlockTokens; ++b) {
    const int64_t block = block_table[b];
    widen_head(kv, block, kv_head, false, kf_buf.data());
    widen_head(kv, block, kv_head, true, vf_buf.data());
    const int32_t base = static_cast<int32_t>(b * kKvBlockTokens);
    // The next block's K and V (hd/2 lines each) are fetched while this one
    // is computed: blocks are scattered over the pool, out of the prefetcher's sight.
    const int64_t next = b + 1 <= hi / kKvBlockTokens ? block_table[b + 1] : block;
    // (d * 32 bytes for d < hd/2 .. hd covers a head of either type.)
    const uint8_t* kn = kv.k_head(next, kv_head);
    const uint8_t* vn = kv.v_head(next, kv_head);
    __m512 s[kKvBlockTokens][MT];
    for (int half = 0; half < 2; ++half) {
      __m512 acc[8][MT];
      for (int j = 0; j < 8; ++j)
        for (int m = 0; m < MT; ++m) acc[j][m] = _mm512_setzero_ps();
      const float* kh = kb + 8 * half;
      for (int64_t d = 0; d < hd; ++d) {
        if (half == 0 && d % 2 == 0 && d * 32 < kv.head_bytes()) {  // one line of each
          _mm_prefetch(reinterpret_cast<const char*>(kn + d * 32), _MM_HINT_T0);
          _mm_prefetch(reinterpret_cast<const char*>(vn + d * 32), _MM_HINT_T0);
        }
        __m512 qv[MT];
        for (int m = 0; m < MT; ++m) qv[m] = _mm512_load_ps(qt + d * kLaneRows + 16 * m);
        for (int j = 0; j < 8; ++j) {
          const __m512 k = _mm512_set1_ps(kh[d * kKvBlockTokens + j]);
          for (int m = 0; m < MT; ++m) acc[j][m] = _mm512_fmadd_ps(k, qv[m], acc[j][m]);
        }
      }
      for (int j = 0; j < 8; ++j)
        for (int m = 0; m < MT; ++m) s[8 * half + j][m] = acc[j][m];
    }
    // Online softmax per lane; keys outside a lane's range weigh 0.
    bool rescale = false;
    __m512 corr[MT];
    for (int m = 0; m < MT; ++m) {
      __mmask16 valid[kKvBlockTokens];
      __m512 bmax = none;
      for (int j = 0; j < kKvBlockTokens; ++j) {
        const __m512i kp = _mm512_set1_epi32(base + j);
        valid[j] = _mm512_cmple_epi32_mask(kp, posv[m]) & _mm512_cmpge_epi32_mask(kp, firstv[m]);
        bmax = _mm512_mask_max_ps(bmax, valid[j], bmax, s[j][m]);
      }
      const __m512 m_new = _mm512_max_ps(mx[m], bmax);
      rescale |= _mm512_cmp_ps_mask(m_new, mx[m], _CMP_NEQ_OQ) != 0;
      corr[m] = exp_ps(_mm512_sub_ps(mx[m], m_new));
      mx[m] = m_new;
      __m512 e_sum = _mm512_setzero_ps();
      for (int j = 0; j < kKvBlockTokens; ++j) {
        s[j][m] = _mm512_maskz_mov_ps(valid[j], exp_ps(_mm512_sub_ps(s[j][m], m_new)));
        e_sum = _mm512_add_ps(e_sum, s[j][m]);
      }
      sum[m] = _mm512_fmadd_ps(sum[m], corr[m], e_sum);
    }
    // P·V, 8 dimensions at a time (then the odd ones one at a time).
    int64_t d = 0;
    for (; d + 8 <= hd; d += 8) {
      __m512 acc[8][MT];
      for (int dd = 0; dd < 8; ++dd)
        for (int m = 0; m < MT; ++m) {
          acc[dd][m] = _mm512_load_ps(o + (d + dd) * kLaneRows + 16 * m);
          if (rescale) acc[dd][m] = _mm512_mul_ps(acc[dd][m], corr[m]);
        }
      for (int j = 0; j < kKvBlockTokens; ++j) {
        const float* vr = vb + j * hd + d;
        for (int dd = 0; dd < 8; ++dd) {
          const __m512 v = _mm512_set1_ps(vr[dd]);
          for (int m = 0; m < MT; ++m) acc[dd][m] = _mm512_fmadd_ps(v, s[j][m], acc[dd][m]);
        }
      }
      for (int dd = 0; dd < 8; ++dd)
        for (int m = 0; m < MT; ++m) _mm512_store_ps(o + (d + dd) * kLaneRows + 16 * m, acc[dd][m]);
    }
    for (; d < hd; ++d) {
      for (int m = 0; m < MT; ++m) {
        __m512 acc = _mm512_load_ps(o + d * kLaneRows + 16 * m);
        if (rescale) acc = _mm512_mul_ps(acc, corr[m]);
        for (int j = 0; j < kKvBlockTokens; ++j) acc = _mm512_fmadd_ps(_mm512_set1_ps(vb[j * hd + d]), s[j][m], acc);
        _mm512_store_ps(o + d * kLaneRows + 16 * m, acc);
      }
    }
  }
  alignas(64) float inv[kLaneRows];
  for (int m = 0; m < MT; ++m) _mm512_store_ps(inv + 16 * m, _mm512_div_ps(_mm512_set1_ps(1.f), sum[m]));
  for (int l = 0; l < n_rows; ++l) {
    const int64_t x = x0 + l;
    float* orow = out + (x / n_heads) * ldo + (head0 + x % n_heads) * hd;
    for (int64_t dd = 0; dd < hd; ++dd) orow[dd] = o[dd * kLaneRows + l] * inv[l];
  }
}

// A tile of query heads against each KV block in turn: every query of
// [pos0, pos0 + n_queries) times every head of one KV head's group. K and V
// of a block are read once for the whole tile (flash-style tiling), instead
// of once per query head; the per-row state lives in a small buffer that
// stays in L1. Rows that see the whole block go through it QB at a time.
template <int NC, typename E>
void attention_tile_impl(const float* q, int64_t ldq, float* out, int64_t ldo,
                         const KvLayerView& kv, const int32_t* block_table, int64_t kv_head,
                         int64_t head0, int64_t n_heads, int64_t pos0, int64_t n_queries,
                         int64_t window, float scale) {
  // Rows per pass over a block: enough independent chains to cover the FMA
  // latency, few enough that the accumulators stay in registers.
  constexpr int QB = NC <= 3 ? 4 : (NC <= 8 ? 2 : 1);
  const int64_t hd = kv.head_dim;
  const int64_t nq = n_queries * n_heads;
  if (nq >= 16) {  // enough rows to fill the lanes (prefill)
    for (int64_t x0 = 0; x0 < nq; x0 += kLaneRows) {
      attention_lanes(q, ldq, out, ldo, kv, block_table, kv_head, head0, n_heads, pos0, x0,
                      std::min<int64_t>(kLaneRows, nq - x0), window, scale);
    }
    return;
  }
  const __mmask16 last_mask =
      hd % 16 == 0 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (hd % 16)) - 1);
  const bool half_tail = hd % 16 == 8;
  thread_local AlignedVector<float> state;  // __m512 per entry (a vector of __m512 loses its alignment attribute)
  thread_local std::vector<float> maxes;
  state.assign(static_cast<size_t>(nq * (NC + 1) * 16), 0.f);
  maxes.assign(static_cast<size_t>(nq), -std::numeric_limits<float>::infinity());
  auto row_of = [&](int64_t x) {
    return RowState{reinterpret_cast<__m512*>(&state[static_cast<size_t>(x * (NC + 1) * 16)]),
                    &maxes[static_cast<size_t>(x)]};
  };
  auto q_of = [&](int64_t x) { return q + (x / n_heads) * ldq + (head0 + x % n_heads) * hd; };
  const __m512 lane = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512 vscale = _mm512_set1_ps(scale);
  const int64_t pos_last = pos0 + n_queries - 1;
  // q8 blocks are widened to f32 once per block for all the tile's rows.
  thread_local AlignedVector<float> kf_buf, vf_buf;
  if constexpr (std::is_same_v<E, float>) {
    kf_buf.resize(static_cast<size_t>(hd * kKvBlockTokens));
    vf_buf.resize(static_cast<size_t>(hd * kKvBlockTokens));
  }
  const int64_t first0 = window > 0 ? std::max<int64_t>(0, pos0 - window + 1) : 0;
  for (int64_t b = first0 / kKvBlockTokens; b <= pos_last / kKvBlockTokens; ++b) {
    const int64_t block = block_table[b];
    // E: KvElem (f16 in place), float (q8 widened) or Q8Head (q8 in place).
    using Head = std::conditional_t<std::is_same_v<E, Q8Head>, Q8Head, PlainHead<E>>;
    Head head{};
    if constexpr (std::is_same_v<E, Q8Head>) {
      head.k = kv.k_head(block, kv_head);
      head.v = kv.v_head(block, kv_head);
      head.ks = reinterpret_cast<const float*>(head.k + hd * kKvBlockTokens);
      head.vs = reinterpret_cast<const float*>(head.v + hd * kKvBlockTokens);
      head.g = kv_q8_group(hd);
    } else {
      if constexpr (std::is_same_v<E, float>) {
        widen_head(kv, block, kv_head, false, kf_buf.data());
        widen_head(kv, block, kv_head, true, vf_buf.data());
        head.k = kf_buf.data();
        head.v = vf_buf.data();
      } else {
        head.k = kv.k16(block, kv_head);
        head.v = kv.v16(block, kv_head);
      }
      head.last_mask = last_mask;
      head.half_tail = half_tail;
    }
    const int64_t base = b * kKvBlockTokens;
    // Two blocks ahead, prefetched by the first full pass over this block: a
    // decode step streams K and V from memory, and a head's blocks lie a
    // whole block of all heads apart, out of the prefetcher's sight.
    const char* pf_k = nullptr;
    const char* pf_v = nullptr;
    if (b + 2 <= pos_last / kKvBlockTokens) {
      const int64_t ahead = block_table[b + 2];
      pf_k = reinterpret_cast<const char*>(kv.k_head(ahead, kv_head));
      pf_v = reinterpret_cast<const char*>(kv.v_head(ahead, kv_head));
    }
    int64_t pending[QB];  // rows that see the whole block, run QB at a time
    int n_pending = 0;
    auto run_full = [&](auto n_tag, const int64_t* xs) {
      constexpr int N = decltype(n_tag)::value;
      const float* qs[N];
      RowState rs[N];
      for (int k = 0; k < N; ++k) {
        qs[k] = q_of(xs[k]);
        rs[k] = row_of(xs[k]);
      }
      rows_full_block<NC, N>(qs, rs, head, hd, vscale, pf_k, pf_v);
      pf_k = pf_v = nullptr;  // once per block
    };
    for (int64_t i = 0; i < n_queries; ++i) {
      const int64_t pos = pos0 + i;
      const int64_t first = window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0;
      if (base > pos || base + kKvBlockTokens <= first) continue;
      if (base >= first && base + kKvBlockTokens - 1 <= pos) {
        for (int64_t h = 0; h < n_heads; ++h) {
          pending[n_pending++] = i * n_heads + h;
          if (n_pending == QB) {
            run_full(std::integral_constant<int, QB>{}, pending);
            n_pending = 0;
          }
        }
        continue;
      }
      const __m512 posv = _mm512_add_ps(lane, _mm512_set1_ps(static_cast<float>(base)));
      const __mmask16 valid =
          _mm512_cmp_ps_mask(posv, _mm512_set1_ps(static_cast<float>(first)), _CMP_GE_OQ) &
          _mm512_cmp_ps_mask(posv, _mm512_set1_ps(static_cast<float>(pos)), _CMP_LE_OQ);
      for (int64_t h = 0; h < n_heads; ++h) {
        const int64_t x = i * n_heads + h;
        row_partial_block<NC>(q_of(x), row_of(x), valid, head, hd, vscale);
      }
    }
    for (int k = 0; k < n_pending; ++k) run_full(std::integral_constant<int, 1>{}, pending + k);
  }
  for (int64_t x = 0; x < nq; ++x) {
    const __m512* st = reinterpret_cast<const __m512*>(&state[static_cast<size_t>(x * (NC + 1) * 16)]);
    const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(st[NC]));
    float* o = out + (x / n_heads) * ldo + (head0 + x % n_heads) * hd;
    for (int c = 0; c + 1 < NC; ++c) _mm512_storeu_ps(o + c * 16, _mm512_mul_ps(st[c], inv));
    _mm512_mask_storeu_ps(o + (NC - 1) * 16, last_mask, _mm512_mul_ps(st[NC - 1], inv));
  }
}

}  // namespace

void attention_tile(const float* q, int64_t ldq, float* out, int64_t ldo, const KvLayerView& kv,
                    const int32_t* block_table, int64_t kv_head, int64_t head0, int64_t n_heads,
                    int64_t pos0, int64_t n_queries, int64_t window, float scale) {
  switch ((kv.head_dim + 15) / 16) {
#define PENSIEVE_CASE(N)                                                                        \
  case N:                                                                                       \
    if (kv.type == KvType::f16)                                                                      \
      return attention_tile_impl<N, KvElem>(q, ldq, out, ldo, kv, block_table, kv_head, head0, n_heads, \
                                            pos0, n_queries, window, scale);                            \
    if (kv_q8_group(kv.head_dim) >= 16)                                                              \
      return attention_tile_impl<N, Q8Head>(q, ldq, out, ldo, kv, block_table, kv_head, head0, n_heads, \
                                            pos0, n_queries, window, scale);                            \
    return attention_tile_impl<N, float>(q, ldq, out, ldo, kv, block_table, kv_head, head0, n_heads,    \
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
