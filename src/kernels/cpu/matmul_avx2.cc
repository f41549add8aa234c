// AVX2 + FMA + F16C matmul kernels: the fallback for x86-64 CPUs without
// AVX-512 (most AMD desktops before Zen 4, many laptops). Everything in f32:
// gemv dequantizes one row into an L1-resident buffer and dots it with up to
// 4 tokens; gemm dequantizes a panel of rows and runs a 6-row x 16-token
// register tile over the transposed activations (the same 16-token tiles the
// AVX-512 kernel reads, as two 8-lane halves). Compiled with AVX2 flags and
// called only when cpu_features() says so.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/matmul_impl.h"

namespace pensieve::kernels::avx2 {
namespace {

inline float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 h = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
}

inline float to_f32(ScaleType type, const void* base, int64_t i) {
  if (type == ScaleType::f32) return static_cast<const float*>(base)[i];
  const uint16_t h = static_cast<const uint16_t*>(base)[i];
  if (type == ScaleType::bf16) {
    const uint32_t bits = static_cast<uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  return _cvtsh_ss(h);
}

// 8 stored values from column c as f32 (c + 8 <= cols).
inline __m256 load8(WeightFormat f, const uint8_t* row, int64_t c) {
  switch (f) {
    case WeightFormat::f32: return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + c);
    case WeightFormat::bf16: {
      const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * c));
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    default:
      return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * c)));
  }
}

}  // namespace

void dequant_rows(const WeightMatrix& w, int64_t r0, int64_t n, float* out) {
  const int64_t cols = w.cols, row_bytes = w.row_bytes();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = r0 + i;
    const uint8_t* row = w.data + r * row_bytes;
    float* o = out + i * cols;
    if (!w.quantized()) {
      int64_t c = 0;
      for (; c + 8 <= cols; c += 8) _mm256_storeu_ps(o + c, load8(w.format, row, c));
      for (; c < cols; ++c) {
        switch (w.format) {
          case WeightFormat::f32: std::memcpy(o + c, row + 4 * c, 4); break;
          case WeightFormat::bf16: o[c] = to_f32(ScaleType::bf16, row, c); break;
          default: o[c] = to_f32(ScaleType::f16, row, c); break;
        }
      }
      continue;
    }
    const int64_t n_groups = w.n_groups(), group = w.group_size;
    for (int64_t g = 0; g < n_groups; ++g) {
      const bool k = is_k_record(w.scale_type);
      const float sf = k ? w.scale(r, g) : to_f32(w.scale_type, w.scales, r * n_groups + g);
      const __m256 s = _mm256_set1_ps(sf);
      const __m256 b = _mm256_set1_ps(k ? w.bias(r, g)
                                        : w.biases != nullptr ? to_f32(w.scale_type, w.biases, r * n_groups + g)
                                                              : w.bias_factor * sf);
      for (int64_t c = g * group; c < (g + 1) * group; c += 16) {
        __m256i q0, q1;
        if (w.format == WeightFormat::affine4) {
          // 8 bytes = 16 values; byte j holds column 2j (low nibble) and 2j+1 (high).
          const __m256i d = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + c / 2)));
          const __m256i lo = _mm256_and_si256(d, _mm256_set1_epi32(15));
          const __m256i hi = _mm256_srli_epi32(d, 4);
          const __m256i a = _mm256_unpacklo_epi32(lo, hi), bb = _mm256_unpackhi_epi32(lo, hi);
          q0 = _mm256_permute2x128_si256(a, bb, 0x20);
          q1 = _mm256_permute2x128_si256(a, bb, 0x31);
        } else {
          q0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + c)));
          q1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + c + 8)));
        }
        _mm256_storeu_ps(o + c, _mm256_fmadd_ps(_mm256_cvtepi32_ps(q0), s, b));
        _mm256_storeu_ps(o + c + 8, _mm256_fmadd_ps(_mm256_cvtepi32_ps(q1), s, b));
      }
    }
  }
}

void gemv_rows(const WeightMatrix& w, int64_t r0, int64_t r1, const float* x, int64_t ldx,
               int64_t n_tokens, float* y, int64_t ldy) {
  const int64_t cols = w.cols;
  thread_local std::vector<float> buf;
  buf.resize(static_cast<size_t>(cols));
  for (int64_t r = r0; r < r1; ++r) {
    dequant_rows(w, r, 1, buf.data());
    const float* row = buf.data();
    for (int64_t t = 0; t < n_tokens; ++t) {
      const float* xt = x + t * ldx;
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      int64_t c = 0;
      for (; c + 32 <= cols; c += 32) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(row + c), _mm256_loadu_ps(xt + c), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(row + c + 8), _mm256_loadu_ps(xt + c + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(row + c + 16), _mm256_loadu_ps(xt + c + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(row + c + 24), _mm256_loadu_ps(xt + c + 24), a3);
      }
      for (; c + 8 <= cols; c += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(row + c), _mm256_loadu_ps(xt + c), a0);
      float acc = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
      for (; c < cols; ++c) acc += row[c] * xt[c];
      y[t * ldy + r] = acc;
    }
  }
}

namespace {

// NR rows x 16 tokens (two 8-lane halves of one transposed tile).
template <int NR>
void gemm_tile(const float* w, int64_t cols, const float* xt, int64_t n_valid, float* y,
               int64_t ldy) {
  __m256 acc[NR][2];
  for (int r = 0; r < NR; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (int64_t k = 0; k < cols; ++k) {
    const __m256 x0 = _mm256_loadu_ps(xt + k * 16), x1 = _mm256_loadu_ps(xt + k * 16 + 8);
    for (int r = 0; r < NR; ++r) {
      const __m256 wb = _mm256_broadcast_ss(w + r * cols + k);
      acc[r][0] = _mm256_fmadd_ps(wb, x0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(wb, x1, acc[r][1]);
    }
  }
  alignas(32) float tmp[16];
  for (int r = 0; r < NR; ++r) {
    _mm256_store_ps(tmp, acc[r][0]);
    _mm256_store_ps(tmp + 8, acc[r][1]);
    for (int64_t t = 0; t < n_valid; ++t) y[t * ldy + r] = tmp[t];
  }
}

}  // namespace

void gemm_f32(const float* wbuf, int64_t n_rows, int64_t cols, const float* xt, int64_t n_tokens,
              float* y, int64_t ldy) {
  constexpr int NR = 6;
  for (int64_t t = 0; t < n_tokens; t += 16) {
    const float* tile = xt + t * cols;  // tile t/16 starts at (t/16)*cols*16 floats
    const int64_t n_valid = std::min<int64_t>(16, n_tokens - t);
    float* yt = y + t * ldy;
    int64_t r = 0;
    for (; r + NR <= n_rows; r += NR) gemm_tile<NR>(wbuf + r * cols, cols, tile, n_valid, yt + r, ldy);
    const float* w = wbuf + r * cols;
    switch (n_rows - r) {
      case 5: gemm_tile<5>(w, cols, tile, n_valid, yt + r, ldy); break;
      case 4: gemm_tile<4>(w, cols, tile, n_valid, yt + r, ldy); break;
      case 3: gemm_tile<3>(w, cols, tile, n_valid, yt + r, ldy); break;
      case 2: gemm_tile<2>(w, cols, tile, n_valid, yt + r, ldy); break;
      case 1: gemm_tile<1>(w, cols, tile, n_valid, yt + r, ldy); break;
      default: break;
    }
  }
}

}  // namespace pensieve::kernels::avx2
