// Integer prefill kernel for MLX affine weights (AVX-512 VNNI).
//
// Activations are quantized per (token, weight group) to int16:
//   x ≈ dx·xq,  Σx kept exactly as xsum.
// With w = s·q + b (q unsigned), one group's contribution is
//   s·dx·Σ q·xq + b·xsum,
// and Σ q·xq is what vpdpwssd (i16 × i16 → i32) computes, 32 products per
// instruction: twice the f32 FMA rate. 16-bit activations keep the result
// within ~1e-5 of f32 (8-bit ones drift by ~1e-2 of the logit range, which
// fails the transformers comparison).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cpu/matmul_impl.h"

namespace pensieve::kernels::avx512 {
namespace {

// acc += Σ pairs of w·x. Inline asm: GCC 12 copies the accumulator around the
// vpdpwssd intrinsic (a register move per instruction), halving throughput.
inline void dpwssd(__m512i& acc, __m512i w, __m512i x) {
  __asm__("vpdpwssd %2, %1, %0" : "+v"(acc) : "v"(w), "v"(x));
}

inline void row_scales_f32(const WeightMatrix& w, int64_t r, float* sc, float* bi) {
  const int64_t n = w.n_groups(), base = r * n;
  for (int which = 0; which < 2; ++which) {
    const uint8_t* src = static_cast<const uint8_t*>(which == 0 ? w.scales : w.biases);
    float* dst = which == 0 ? sc : bi;
    for (int64_t g = 0; g < n; g += 16) {
      const __mmask16 m = n - g >= 16 ? 0xffff : static_cast<__mmask16>((1u << (n - g)) - 1);
      __m512 v;
      if (w.scale_type == ScaleType::f32) {
        v = _mm512_maskz_loadu_ps(m, reinterpret_cast<const float*>(src) + base + g);
      } else {
        const __m256i h = _mm256_maskz_loadu_epi16(m, reinterpret_cast<const uint16_t*>(src) + base + g);
        v = w.scale_type == ScaleType::bf16
                ? _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))
                : _mm512_cvtph_ps(h);
      }
      _mm512_mask_storeu_ps(dst + g, m, v);
    }
  }
}

// A packed row -> one int16 per value, natural order.
void unpack_row_i16(const WeightMatrix& w, const uint8_t* row, int64_t cols, int16_t* out) {
  if (w.format == WeightFormat::affine8) {
    for (int64_t c = 0; c < cols; c += 16) {
      const __m128i p = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + c));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + c), _mm256_cvtepu8_epi16(p));
    }
    return;
  }
  const __m128i low4 = _mm_set1_epi8(0x0f);
  for (int64_t c = 0; c < cols; c += 32) {
    const __m128i p = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + c / 2));
    const __m128i lo = _mm_and_si128(p, low4);
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(p, 4), low4);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + c), _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(lo, hi)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + c + 16), _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(lo, hi)));
  }
}

// NR weight rows x (16*MT) tokens; xq holds pairs of int16 for 16 tokens:
// xq[k/2][token] (an int32 each), dx/xs hold [group][token].
template <int NR, int MT>
void vnni_tile(const int16_t* wq, int64_t cols, const float* sc, const float* bi, int64_t n_groups,
               int64_t group, const int32_t* xq, const float* dx, const float* xs,
               int64_t tile_stride_q, int64_t tile_stride_g, int64_t n_valid, float* y,
               int64_t ldy) {
  __m512 facc[NR][MT];
  for (int r = 0; r < NR; ++r)
    for (int m = 0; m < MT; ++m) facc[r][m] = _mm512_setzero_ps();
  const int64_t pairs = group / 2;
  for (int64_t g = 0; g < n_groups; ++g) {
    __m512i iacc[NR][MT];
    for (int r = 0; r < NR; ++r)
      for (int m = 0; m < MT; ++m) iacc[r][m] = _mm512_setzero_si512();
    for (int64_t k2 = g * pairs; k2 < (g + 1) * pairs; ++k2) {
      __m512i xv[MT];
      for (int m = 0; m < MT; ++m) xv[m] = _mm512_loadu_si512(xq + m * tile_stride_q + k2 * 16);
      for (int r = 0; r < NR; ++r) {
        int32_t pair;
        std::memcpy(&pair, wq + r * cols + k2 * 2, 4);
        const __m512i wb = _mm512_set1_epi32(pair);
        for (int m = 0; m < MT; ++m) dpwssd(iacc[r][m], wb, xv[m]);
      }
    }
    for (int m = 0; m < MT; ++m) {
      const __m512 d = _mm512_loadu_ps(dx + m * tile_stride_g + g * 16);
      const __m512 s = _mm512_loadu_ps(xs + m * tile_stride_g + g * 16);
      for (int r = 0; r < NR; ++r) {
        const __m512 scale = _mm512_mul_ps(_mm512_set1_ps(sc[r * n_groups + g]), d);
        facc[r][m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(iacc[r][m]), scale, facc[r][m]);
        facc[r][m] = _mm512_fmadd_ps(_mm512_set1_ps(bi[r * n_groups + g]), s, facc[r][m]);
      }
    }
  }
  alignas(64) float tmp[16];
  for (int r = 0; r < NR; ++r) {
    for (int m = 0; m < MT; ++m) {
      _mm512_store_ps(tmp, facc[r][m]);
      const int64_t n = std::min<int64_t>(16, n_valid - 16 * m);
      for (int64_t t = 0; t < n; ++t) y[(16 * m + t) * ldy + r] = tmp[t];
    }
  }
}

template <int MT>
void vnni_rows(const int16_t* wq, int64_t n_rows, int64_t cols, const float* sc, const float* bi,
               int64_t n_groups, int64_t group, const int32_t* xq, const float* dx,
               const float* xs, int64_t sq, int64_t sg, int64_t n_valid, float* y, int64_t ldy) {
  constexpr int NR = 6;
  int64_t r = 0;
  auto call = [&](auto nr_tag) {
    constexpr int N = decltype(nr_tag)::value;
    vnni_tile<N, MT>(wq + r * cols, cols, sc + r * n_groups, bi + r * n_groups, n_groups, group,
                     xq, dx, xs, sq, sg, n_valid, y + r, ldy);
  };
  for (; r + NR <= n_rows; r += NR) call(std::integral_constant<int, NR>{});
  switch (n_rows - r) {
    case 5: call(std::integral_constant<int, 5>{}); break;
    case 4: call(std::integral_constant<int, 4>{}); break;
    case 3: call(std::integral_constant<int, 3>{}); break;
    case 2: call(std::integral_constant<int, 2>{}); break;
    case 1: call(std::integral_constant<int, 1>{}); break;
    default: break;
  }
}

// Decode: one row at a time against up to 4 tokens, straight from the packed
// bytes. Activations are int16 in gemv order: per 64 columns, 4-bit weights
// see [even columns | odd columns] (the order nibbles unpack in), 8-bit
// weights natural order.
template <int T, bool Q4>
void gemv_i16_rows(const WeightMatrix& w, int64_t r0, int64_t r1, const int16_t* xq,
                   const float* xscale, const float* xsum, float* y, int64_t ldy) {
  const int64_t cols = w.cols, group = w.group_size, n_groups = w.n_groups();
  const int64_t row_bytes = w.row_bytes();
  alignas(64) float sc[8192], bi[8192];
  const __m256i low4 = _mm256_set1_epi8(0x0f);
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = w.data + r * row_bytes;
    row_scales_f32(w, r, sc, bi);
    __m512 facc[T];
    for (int t = 0; t < T; ++t) facc[t] = _mm512_setzero_ps();
    const int64_t span = std::max<int64_t>(group, 64);
    const int64_t groups_per_span = span / group;
    for (int64_t c0 = 0, g = 0; c0 < cols; c0 += span, g += groups_per_span) {
      // One scale step: a whole group (>= 64 columns) or a 64-column chunk of two 32-groups.
      const int64_t c1 = c0 + span;
      __m512i iacc[T][2];
      for (int t = 0; t < T; ++t) iacc[t][0] = iacc[t][1] = _mm512_setzero_si512();
      for (int64_t c = c0; c < c1; c += 64) {
        __m512i w0, w1;
        if constexpr (Q4) {
          const __m256i p = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + c / 2));
          w0 = _mm512_cvtepu8_epi16(_mm256_and_si256(p, low4));
          w1 = _mm512_cvtepu8_epi16(_mm256_and_si256(_mm256_srli_epi16(p, 4), low4));
        } else {
          w0 = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + c)));
          w1 = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + c + 32)));
        }
        for (int t = 0; t < T; ++t) {
          iacc[t][0] = _mm512_dpwssd_epi32(iacc[t][0], w0, _mm512_loadu_si512(xq + t * cols + c));
          iacc[t][1] = _mm512_dpwssd_epi32(iacc[t][1], w1, _mm512_loadu_si512(xq + t * cols + c + 32));
        }
      }
      for (int t = 0; t < T; ++t) {
        const float* dx = xscale + t * n_groups;
        if (group >= 64) {
          const __m512 v = _mm512_cvtepi32_ps(_mm512_add_epi32(iacc[t][0], iacc[t][1]));
          facc[t] = _mm512_fmadd_ps(v, _mm512_set1_ps(sc[g] * dx[g]), facc[t]);
        } else if constexpr (Q4) {
          // Both halves hold columns of both groups: lanes 0-7 the first, 8-15 the second.
          const __m512 scale = _mm512_mask_blend_ps(0xff00, _mm512_set1_ps(sc[g] * dx[g]),
                                                    _mm512_set1_ps(sc[g + 1] * dx[g + 1]));
          const __m512 v = _mm512_cvtepi32_ps(_mm512_add_epi32(iacc[t][0], iacc[t][1]));
          facc[t] = _mm512_fmadd_ps(v, scale, facc[t]);
        } else {
          facc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(iacc[t][0]), _mm512_set1_ps(sc[g] * dx[g]), facc[t]);
          facc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(iacc[t][1]),
                                    _mm512_set1_ps(sc[g + 1] * dx[g + 1]), facc[t]);
        }
      }
    }
    for (int t = 0; t < T; ++t) {
      const float* xs = xsum + t * n_groups;
      __m512 bacc = _mm512_setzero_ps();
      for (int64_t g = 0; g < n_groups; g += 16) {
        const __mmask16 m = n_groups - g >= 16 ? 0xffff : static_cast<__mmask16>((1u << (n_groups - g)) - 1);
        bacc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, bi + g), _mm512_maskz_loadu_ps(m, xs + g), bacc);
      }
      y[t * ldy + r] = _mm512_reduce_add_ps(_mm512_add_ps(facc[t], bacc));
    }
  }
}

}  // namespace

void vnni_gemv(const WeightMatrix& w, int64_t r0, int64_t r1, const QuantizedActivations& a,
               int64_t t0, int64_t n_tokens, float* y, int64_t ldy) {
  const bool q4 = w.format == WeightFormat::affine4;
  const int64_t ng = a.cols / a.group;
  const int16_t* q = a.q.data() + t0 * a.cols;
  const float* sc = a.scale.data() + t0 * ng;
  const float* sm = a.sum.data() + t0 * ng;
  float* yt = y + t0 * ldy;
  switch (n_tokens) {
    case 1: return q4 ? gemv_i16_rows<1, true>(w, r0, r1, q, sc, sm, yt, ldy) : gemv_i16_rows<1, false>(w, r0, r1, q, sc, sm, yt, ldy);
    case 2: return q4 ? gemv_i16_rows<2, true>(w, r0, r1, q, sc, sm, yt, ldy) : gemv_i16_rows<2, false>(w, r0, r1, q, sc, sm, yt, ldy);
    case 3: return q4 ? gemv_i16_rows<3, true>(w, r0, r1, q, sc, sm, yt, ldy) : gemv_i16_rows<3, false>(w, r0, r1, q, sc, sm, yt, ldy);
    default: return q4 ? gemv_i16_rows<4, true>(w, r0, r1, q, sc, sm, yt, ldy) : gemv_i16_rows<4, false>(w, r0, r1, q, sc, sm, yt, ldy);
  }
}

void vnni_gemm(const WeightMatrix& w, int64_t r0, int64_t r1, const QuantizedActivationTiles& a,
               float* y, int64_t ldy) {
  const int64_t cols = w.cols, group = w.group_size, n_groups = w.n_groups();
  const int64_t n_rows = r1 - r0;
  thread_local std::vector<int16_t> wq;
  thread_local std::vector<float> sc, bi;
  sc.resize(n_rows * n_groups);
  bi.resize(n_rows * n_groups);
  wq.resize(n_rows * cols);
  for (int64_t i = 0; i < n_rows; ++i) {
    unpack_row_i16(w, w.data + (r0 + i) * w.row_bytes(), cols, wq.data() + i * cols);
  }
  const int16_t* wrows = wq.data();
  for (int64_t i = 0; i < n_rows; ++i) row_scales_f32(w, r0 + i, sc.data() + i * n_groups, bi.data() + i * n_groups);
  const int64_t sq = cols / 2 * 16, sg = n_groups * 16;
  int64_t t = 0;
  for (; t + 32 <= a.n_tokens; t += 32) {
    const int64_t tile = t / 16;
    vnni_rows<2>(wrows, n_rows, cols, sc.data(), bi.data(), n_groups, group, a.q.data() + tile * sq,
                 a.scale.data() + tile * sg, a.sum.data() + tile * sg, sq, sg, 32, y + t * ldy, ldy);
  }
  for (; t < a.n_tokens; t += 16) {
    const int64_t tile = t / 16;
    vnni_rows<1>(wrows, n_rows, cols, sc.data(), bi.data(), n_groups, group, a.q.data() + tile * sq,
                 a.scale.data() + tile * sg, a.sum.data() + tile * sg, sq, sg,
                 std::min<int64_t>(16, a.n_tokens - t), y + t * ldy, ldy);
  }
}

}  // namespace pensieve::kernels::avx512
