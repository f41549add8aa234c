// AVX-512 matmul kernels. Compiled with -mavx512f -mavx512bw -mavx512vl
// -mavx512dq -mfma -mf16c; called only when cpu_features() says so.
#include <immintrin.h>

#include <cstring>

#include "kernels/cpu/matmul.h"
#include "kernels/cpu/matmul_impl.h"

namespace pensieve::kernels::avx512 {
namespace {

inline __m512 load_scale16(const WeightMatrix& w, int64_t r, int64_t g, const void* base) {
  const int64_t i = r * w.n_groups() + g;
  float s;
  switch (w.scale_type) {
    case ScaleType::f32: std::memcpy(&s, static_cast<const uint8_t*>(base) + 4 * i, 4); break;
    case ScaleType::bf16: {
      uint16_t h;
      std::memcpy(&h, static_cast<const uint8_t*>(base) + 2 * i, 2);
      const uint32_t bits = static_cast<uint32_t>(h) << 16;
      std::memcpy(&s, &bits, 4);
      break;
    }
    case ScaleType::f16: {
      uint16_t h;
      std::memcpy(&h, static_cast<const uint8_t*>(base) + 2 * i, 2);
      s = _cvtsh_ss(h);
      break;
    }
  }
  return _mm512_set1_ps(s);
}

inline __m512 iota16() {
  return _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
}

// Loads up to 16 stored values starting at column c of `row` as f32.
template <WeightFormat F>
inline __m512 load_plain(const uint8_t* row, int64_t c, __mmask16 m) {
  if constexpr (F == WeightFormat::f32) {
    return _mm512_maskz_loadu_ps(m, reinterpret_cast<const float*>(row) + c);
  } else if constexpr (F == WeightFormat::bf16) {
    const __m256i h = _mm256_maskz_loadu_epi16(m, reinterpret_cast<const uint16_t*>(row) + c);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  } else {
    const __m256i h = _mm256_maskz_loadu_epi16(m, reinterpret_cast<const uint16_t*>(row) + c);
    return _mm512_cvtph_ps(h);
  }
}

inline __mmask16 tail_mask(int64_t remaining) {
  return remaining >= 16 ? static_cast<__mmask16>(0xffff)
                         : static_cast<__mmask16>((1u << remaining) - 1);
}

template <WeightFormat F, int T>
void gemv_plain(const WeightMatrix& w, int64_t r0, int64_t r1, const float* x, int64_t ldx,
                float* y, int64_t ldy) {
  const int64_t cols = w.cols;
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = w.data + r * w.row_bytes();
    __m512 acc[T][2];
    for (int t = 0; t < T; ++t) acc[t][0] = acc[t][1] = _mm512_setzero_ps();
    int64_t c = 0;
    for (; c + 32 <= cols; c += 32) {
      const __m512 w0 = load_plain<F>(row, c, 0xffff);
      const __m512 w1 = load_plain<F>(row, c + 16, 0xffff);
      for (int t = 0; t < T; ++t) {
        acc[t][0] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + t * ldx + c), acc[t][0]);
        acc[t][1] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + t * ldx + c + 16), acc[t][1]);
      }
    }
    for (; c < cols; c += 16) {
      const __mmask16 m = tail_mask(cols - c);
      const __m512 w0 = load_plain<F>(row, c, m);
      for (int t = 0; t < T; ++t) {
        acc[t][0] = _mm512_fmadd_ps(w0, _mm512_maskz_loadu_ps(m, x + t * ldx + c), acc[t][0]);
      }
    }
    for (int t = 0; t < T; ++t) {
      y[t * ldy + r] = _mm512_reduce_add_ps(_mm512_add_ps(acc[t][0], acc[t][1]));
    }
  }
}

// 4-bit: 16 packed bytes hold 32 values; byte i has value 2i (low nibble) and
// 2i+1 (high nibble). vpermps picks table[index & 15], so the table of the 16
// dequantized values (scale*q + bias) turns nibbles into weights in one step.
template <int T>
void gemv_q4(const WeightMatrix& w, int64_t r0, int64_t r1, const float* x, int64_t ldx,
             float* y, int64_t ldy) {
  const int64_t cols = w.cols, group = w.group_size, n_groups = w.n_groups();
  const __m512 iota = iota16();
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = w.data + r * w.row_bytes();
    __m512 acc[T][4];
    for (int t = 0; t < T; ++t) acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = _mm512_setzero_ps();
    int64_t c = 0;
    for (int64_t g = 0; g < n_groups; ++g) {
      const __m512 table =
          _mm512_fmadd_ps(iota, load_scale16(w, r, g, w.scales), load_scale16(w, r, g, w.biases));
      for (int64_t end = c + group; c < end; c += 64) {
        // Two 32-value chunks per step (group sizes are multiples of 32; a
        // 32-group takes the second chunk from the next group's table).
        const __m512i d0 = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + c / 2)));
        const __m512 lo0 = _mm512_permutexvar_ps(d0, table);
        const __m512 hi0 = _mm512_permutexvar_ps(_mm512_srli_epi32(d0, 4), table);
        for (int t = 0; t < T; ++t) {
          acc[t][0] = _mm512_fmadd_ps(lo0, _mm512_loadu_ps(x + t * ldx + c), acc[t][0]);
          acc[t][1] = _mm512_fmadd_ps(hi0, _mm512_loadu_ps(x + t * ldx + c + 16), acc[t][1]);
        }
        if (group == 32) break;  // the next chunk belongs to the next group
        const __m512i d1 = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + c / 2 + 16)));
        const __m512 lo1 = _mm512_permutexvar_ps(d1, table);
        const __m512 hi1 = _mm512_permutexvar_ps(_mm512_srli_epi32(d1, 4), table);
        for (int t = 0; t < T; ++t) {
          acc[t][2] = _mm512_fmadd_ps(lo1, _mm512_loadu_ps(x + t * ldx + c + 32), acc[t][2]);
          acc[t][3] = _mm512_fmadd_ps(hi1, _mm512_loadu_ps(x + t * ldx + c + 48), acc[t][3]);
        }
      }
      if (group == 32) c += 32;
    }
    (void)cols;
    for (int t = 0; t < T; ++t) {
      const __m512 s = _mm512_add_ps(_mm512_add_ps(acc[t][0], acc[t][1]),
                                     _mm512_add_ps(acc[t][2], acc[t][3]));
      y[t * ldy + r] = _mm512_reduce_add_ps(s);
    }
  }
}

template <int T>
void gemv_q8(const WeightMatrix& w, int64_t r0, int64_t r1, const float* x, int64_t ldx,
             float* y, int64_t ldy) {
  const int64_t group = w.group_size, n_groups = w.n_groups();
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = w.data + r * w.row_bytes();
    __m512 acc[T][2];
    for (int t = 0; t < T; ++t) acc[t][0] = acc[t][1] = _mm512_setzero_ps();
    int64_t c = 0;
    for (int64_t g = 0; g < n_groups; ++g) {
      const __m512 s = load_scale16(w, r, g, w.scales);
      const __m512 b = load_scale16(w, r, g, w.biases);
      for (int64_t end = c + group; c < end; c += 32) {
        const __m512 q0 = _mm512_cvtepi32_ps(
            _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + c))));
        const __m512 q1 = _mm512_cvtepi32_ps(
            _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + c + 16))));
        const __m512 w0 = _mm512_fmadd_ps(q0, s, b);
        const __m512 w1 = _mm512_fmadd_ps(q1, s, b);
        for (int t = 0; t < T; ++t) {
          acc[t][0] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + t * ldx + c), acc[t][0]);
          acc[t][1] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + t * ldx + c + 16), acc[t][1]);
        }
      }
    }
    for (int t = 0; t < T; ++t) {
      y[t * ldy + r] = _mm512_reduce_add_ps(_mm512_add_ps(acc[t][0], acc[t][1]));
    }
  }
}

template <int T>
void gemv_dispatch(const WeightMatrix& w, int64_t r0, int64_t r1, const float* x, int64_t ldx,
                   float* y, int64_t ldy) {
  switch (w.format) {
    case WeightFormat::f32: return gemv_plain<WeightFormat::f32, T>(w, r0, r1, x, ldx, y, ldy);
    case WeightFormat::bf16: return gemv_plain<WeightFormat::bf16, T>(w, r0, r1, x, ldx, y, ldy);
    case WeightFormat::f16: return gemv_plain<WeightFormat::f16, T>(w, r0, r1, x, ldx, y, ldy);
    case WeightFormat::affine4: return gemv_q4<T>(w, r0, r1, x, ldx, y, ldy);
    case WeightFormat::affine8: return gemv_q8<T>(w, r0, r1, x, ldx, y, ldy);
  }
}

// Register tile: MR tokens x NR rows of 16-wide partial sums, reduced once at the end.
template <int MR, int NR>
void gemm_tile(const float* wbuf, int64_t cols, const float* x, int64_t ldx, float* y,
               int64_t ldy) {
  __m512 acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_ps();
  int64_t c = 0;
  for (; c + 16 <= cols; c += 16) {
    __m512 wv[NR];
    for (int j = 0; j < NR; ++j) wv[j] = _mm512_loadu_ps(wbuf + j * cols + c);
    for (int i = 0; i < MR; ++i) {
      const __m512 xv = _mm512_loadu_ps(x + i * ldx + c);
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
  if (c < cols) {
    const __mmask16 m = tail_mask(cols - c);
    __m512 wv[NR];
    for (int j = 0; j < NR; ++j) wv[j] = _mm512_maskz_loadu_ps(m, wbuf + j * cols + c);
    for (int i = 0; i < MR; ++i) {
      const __m512 xv = _mm512_maskz_loadu_ps(m, x + i * ldx + c);
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) y[i * ldy + j] = _mm512_reduce_add_ps(acc[i][j]);
}

template <int MR>
void gemm_rows(const float* wbuf, int64_t n_rows, int64_t cols, const float* x, int64_t ldx,
               float* y, int64_t ldy) {
  int64_t r = 0;
  for (; r + 4 <= n_rows; r += 4) gemm_tile<MR, 4>(wbuf + r * cols, cols, x, ldx, y + r, ldy);
  switch (n_rows - r) {
    case 3: gemm_tile<MR, 3>(wbuf + r * cols, cols, x, ldx, y + r, ldy); break;
    case 2: gemm_tile<MR, 2>(wbuf + r * cols, cols, x, ldx, y + r, ldy); break;
    case 1: gemm_tile<MR, 1>(wbuf + r * cols, cols, x, ldx, y + r, ldy); break;
    default: break;
  }
}

}  // namespace

void gemv_rows(const WeightMatrix& w, int64_t r0, int64_t r1, const float* x, int64_t ldx,
               int64_t n_tokens, float* y, int64_t ldy) {
  switch (n_tokens) {
    case 1: return gemv_dispatch<1>(w, r0, r1, x, ldx, y, ldy);
    case 2: return gemv_dispatch<2>(w, r0, r1, x, ldx, y, ldy);
    case 3: return gemv_dispatch<3>(w, r0, r1, x, ldx, y, ldy);
    default: return gemv_dispatch<4>(w, r0, r1, x, ldx, y, ldy);
  }
}

void dequant_rows(const WeightMatrix& w, int64_t r0, int64_t n, float* out) {
  const int64_t cols = w.cols;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = r0 + i;
    const uint8_t* row = w.data + r * w.row_bytes();
    float* o = out + i * cols;
    switch (w.format) {
      case WeightFormat::f32:
        std::memcpy(o, row, cols * 4);
        break;
      case WeightFormat::bf16:
        for (int64_t c = 0; c < cols; c += 16) {
          const __mmask16 m = tail_mask(cols - c);
          _mm512_mask_storeu_ps(o + c, m, load_plain<WeightFormat::bf16>(row, c, m));
        }
        break;
      case WeightFormat::f16:
        for (int64_t c = 0; c < cols; c += 16) {
          const __mmask16 m = tail_mask(cols - c);
          _mm512_mask_storeu_ps(o + c, m, load_plain<WeightFormat::f16>(row, c, m));
        }
        break;
      case WeightFormat::affine4: {
        const __m512 iota = iota16();
        for (int64_t c = 0; c < cols; c += 32) {
          const int64_t g = c / w.group_size;
          const __m512 table = _mm512_fmadd_ps(iota, load_scale16(w, r, g, w.scales),
                                               load_scale16(w, r, g, w.biases));
          const __m512i d = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + c / 2)));
          _mm512_storeu_ps(o + c, _mm512_permutexvar_ps(d, table));
          _mm512_storeu_ps(o + c + 16, _mm512_permutexvar_ps(_mm512_srli_epi32(d, 4), table));
        }
        break;
      }
      case WeightFormat::affine8:
        for (int64_t c = 0; c < cols; c += 16) {
          const int64_t g = c / w.group_size;
          const __m512 q = _mm512_cvtepi32_ps(
              _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + c))));
          _mm512_storeu_ps(o + c, _mm512_fmadd_ps(q, load_scale16(w, r, g, w.scales),
                                                  load_scale16(w, r, g, w.biases)));
        }
        break;
    }
  }
}

void gemm_f32(const float* wbuf, int64_t n_rows, int64_t cols, const float* x, int64_t ldx,
              int64_t n_tokens, float* y, int64_t ldy) {
  constexpr int MR = 6;
  int64_t t = 0;
  for (; t + MR <= n_tokens; t += MR) {
    gemm_rows<MR>(wbuf, n_rows, cols, x + t * ldx, ldx, y + t * ldy, ldy);
  }
  switch (n_tokens - t) {
    case 5: gemm_rows<5>(wbuf, n_rows, cols, x + t * ldx, ldx, y + t * ldy, ldy); break;
    case 4: gemm_rows<4>(wbuf, n_rows, cols, x + t * ldx, ldx, y + t * ldy, ldy); break;
    case 3: gemm_rows<3>(wbuf, n_rows, cols, x + t * ldx, ldx, y + t * ldy, ldy); break;
    case 2: gemm_rows<2>(wbuf, n_rows, cols, x + t * ldx, ldx, y + t * ldy, ldy); break;
    case 1: gemm_rows<1>(wbuf, n_rows, cols, x + t * ldx, ldx, y + t * ldy, ldy); break;
    default: break;
  }
}

}  // namespace pensieve::kernels::avx512
