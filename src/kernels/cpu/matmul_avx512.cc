// AVX-512 matmul kernels. Compiled with -mavx512f -mavx512bw -mavx512vl
// -mavx512dq -mfma -mf16c; called only when cpu_features() says so.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "core/half.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/matmul_impl.h"

namespace pensieve::kernels::avx512 {
namespace {

// Converts row r's group scales and biases to f32 (one pass per row keeps the
// dtype switch and the index arithmetic out of the inner loops).
inline void row_scales(const WeightMatrix& w, int64_t r, float* scales, float* biases) {
  if (is_k_record(w.scale_type)) return avx512::decode_k_scales(w, r, scales, biases);
  const int64_t n = w.n_groups();
  const int64_t base = r * n;
  for (int which = 0; which < 2; ++which) {
    const uint8_t* src = static_cast<const uint8_t*>(which == 0 ? w.scales : w.biases);
    float* dst = which == 0 ? scales : biases;
    if (src == nullptr) {  // biases implied by the scales
      for (int64_t g = 0; g < n; ++g) dst[g] = w.bias_factor * scales[g];
      continue;
    }
    switch (w.scale_type) {
      case ScaleType::k4:
      case ScaleType::k6: break;  // decoded above
      case ScaleType::f32:
        std::memcpy(dst, src + 4 * base, 4 * n);
        break;
      case ScaleType::bf16:
        for (int64_t g = 0; g < n; g += 16) {
          const __mmask16 m = n - g >= 16 ? 0xffff : static_cast<__mmask16>((1u << (n - g)) - 1);
          const __m256i h = _mm256_maskz_loadu_epi16(m, reinterpret_cast<const uint16_t*>(src) + base + g);
          _mm512_mask_storeu_ps(dst + g, m, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)));
        }
        break;
      case ScaleType::f16:
        for (int64_t g = 0; g < n; g += 16) {
          const __mmask16 m = n - g >= 16 ? 0xffff : static_cast<__mmask16>((1u << (n - g)) - 1);
          const __m256i h = _mm256_maskz_loadu_epi16(m, reinterpret_cast<const uint16_t*>(src) + base + g);
          _mm512_mask_storeu_ps(dst + g, m, _mm512_cvtph_ps(h));
        }
        break;
    }
  }
}

constexpr int64_t kMaxGroups = 8192;  // cols / group_size; 262144 columns at group 32

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
  const int64_t group = w.group_size, n_groups = w.n_groups(), row_bytes = w.row_bytes();
  const __m512 iota = iota16();
  alignas(64) float sc[kMaxGroups], bi[kMaxGroups];
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = w.data + r * row_bytes;
    row_scales(w, r, sc, bi);
    __m512 acc[T][4];
    for (int t = 0; t < T; ++t) acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = _mm512_setzero_ps();
    int64_t c = 0;
    for (int64_t g = 0; g < n_groups; ++g) {
      const __m512 table = _mm512_fmadd_ps(iota, _mm512_set1_ps(sc[g]), _mm512_set1_ps(bi[g]));
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
  const int64_t group = w.group_size, n_groups = w.n_groups(), row_bytes = w.row_bytes();
  alignas(64) float sc[kMaxGroups], bi[kMaxGroups];
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = w.data + r * row_bytes;
    row_scales(w, r, sc, bi);
    __m512 acc[T][2];
    for (int t = 0; t < T; ++t) acc[t][0] = acc[t][1] = _mm512_setzero_ps();
    int64_t c = 0;
    if (group == 16) {  // a GGUF Q6_K's sub-blocks: one vector a group
      for (int64_t g = 0; g < n_groups; ++g, c += 16) {
        const __m512 q = _mm512_cvtepi32_ps(
            _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + c))));
        const __m512 wv = _mm512_fmadd_ps(q, _mm512_set1_ps(sc[g]), _mm512_set1_ps(bi[g]));
        for (int t = 0; t < T; ++t) acc[t][g & 1] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(x + t * ldx + c), acc[t][g & 1]);
      }
    }
    for (int64_t g = 0; group != 16 && g < n_groups; ++g) {
      const __m512 s = _mm512_set1_ps(sc[g]);
      const __m512 b = _mm512_set1_ps(bi[g]);
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

// Register tile: NR weight rows x (16*MT) tokens. Weights come one scalar at
// a time (broadcast) from NR row-major f32 rows; tokens come 16 at a time from
// the transposed activations, so each loaded vector feeds NR FMAs.
template <int NR, int MT>
void gemm_tile(const float* w, int64_t cols, const float* xt, int64_t n_valid, float* y,
               int64_t ldy) {
  __m512 acc[NR][MT];
  for (int r = 0; r < NR; ++r)
    for (int m = 0; m < MT; ++m) acc[r][m] = _mm512_setzero_ps();
  const float* xt1 = xt + cols * 16;
  for (int64_t k = 0; k < cols; ++k) {
    __m512 xv[MT];
    xv[0] = _mm512_loadu_ps(xt + k * 16);
    if constexpr (MT == 2) xv[1] = _mm512_loadu_ps(xt1 + k * 16);
    for (int r = 0; r < NR; ++r) {
      const __m512 wb = _mm512_set1_ps(w[r * cols + k]);
      for (int m = 0; m < MT; ++m) acc[r][m] = _mm512_fmadd_ps(wb, xv[m], acc[r][m]);
    }
  }
  alignas(64) float tmp[16];
  for (int r = 0; r < NR; ++r) {
    for (int m = 0; m < MT; ++m) {
      _mm512_store_ps(tmp, acc[r][m]);
      const int64_t n = std::min<int64_t>(16, n_valid - 16 * m);
      for (int64_t t = 0; t < n; ++t) y[(16 * m + t) * ldy + r] = tmp[t];
    }
  }
}

template <int MT>
void gemm_rows(const float* wbuf, int64_t n_rows, int64_t cols, const float* xt, int64_t n_valid,
               float* y, int64_t ldy) {
  constexpr int NR = 12;
  int64_t r = 0;
  for (; r + NR <= n_rows; r += NR) gemm_tile<NR, MT>(wbuf + r * cols, cols, xt, n_valid, y + r, ldy);
  const float* w = wbuf + r * cols;
  switch (n_rows - r) {
    case 11: return gemm_tile<11, MT>(w, cols, xt, n_valid, y + r, ldy);
    case 10: return gemm_tile<10, MT>(w, cols, xt, n_valid, y + r, ldy);
    case 9: return gemm_tile<9, MT>(w, cols, xt, n_valid, y + r, ldy);
    case 8: return gemm_tile<8, MT>(w, cols, xt, n_valid, y + r, ldy);
    case 7: return gemm_tile<7, MT>(w, cols, xt, n_valid, y + r, ldy);
    case 6: return gemm_tile<6, MT>(w, cols, xt, n_valid, y + r, ldy);
    case 5: return gemm_tile<5, MT>(w, cols, xt, n_valid, y + r, ldy);
    case 4: return gemm_tile<4, MT>(w, cols, xt, n_valid, y + r, ldy);
    case 3: return gemm_tile<3, MT>(w, cols, xt, n_valid, y + r, ldy);
    case 2: return gemm_tile<2, MT>(w, cols, xt, n_valid, y + r, ldy);
    case 1: return gemm_tile<1, MT>(w, cols, xt, n_valid, y + r, ldy);
    default: return;
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

void decode_k_scales(const WeightMatrix& w, int64_t r, float* sc, float* bi) {
  const int64_t n = w.n_groups();
  const uint8_t* rec = static_cast<const uint8_t*>(w.scales) + r * w.scale_row_bytes();
  // The records' f16 factors go through the conversion instruction. (The
  // tenth of a Q4_K_M decode step a profile puts here is the records' first
  // read from memory: replacing the scalar f16_to_f32 measured no faster.)
  if (w.scale_type == ScaleType::k4) {  // per 8 groups: f16 d, f16 dmin, 8 scales, 8 mins
    for (int64_t g = 0; g < n; g += kK4GroupsPerRecord, rec += kK4RecordBytes) {
      int32_t both;
      std::memcpy(&both, rec, 4);
      const __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128(both));  // d, dmin
      const __m256 d = _mm256_broadcastss_ps(dm);
      const __m256 neg_dmin = _mm256_broadcastss_ps(_mm_xor_ps(_mm_movehdup_ps(dm), _mm_set1_ps(-0.f)));
      const __m256 s = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(rec + 4))));
      const __m256 m = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(rec + 12))));
      _mm256_storeu_ps(sc + g, _mm256_mul_ps(d, s));
      _mm256_storeu_ps(bi + g, _mm256_mul_ps(neg_dmin, m));  // -(dmin·m)
    }
  } else {  // per 16 groups: f16 d, 16 int8 scales
    for (int64_t g = 0; g < n; g += kK6GroupsPerRecord, rec += kK6RecordBytes) {
      uint16_t h;
      std::memcpy(&h, rec, 2);
      const __m512 d = _mm512_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
      const __m512 s = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rec + 2)))));
      _mm512_storeu_ps(sc + g, s);
      _mm512_storeu_ps(bi + g, _mm512_mul_ps(s, _mm512_set1_ps(-32.f)));
    }
  }
}

void dequant_rows(const WeightMatrix& w, int64_t r0, int64_t n, float* out) {
  const int64_t cols = w.cols;
  alignas(64) float sc[kMaxGroups], bi[kMaxGroups];
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = r0 + i;
    const uint8_t* row = w.data + r * w.row_bytes();
    float* o = out + i * cols;
    const int group_shift = w.quantized() ? __builtin_ctz(static_cast<unsigned>(w.group_size)) : 0;
    if (w.quantized()) row_scales(w, r, sc, bi);
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
          const int64_t g = c >> group_shift;
          const __m512 table = _mm512_fmadd_ps(iota, _mm512_set1_ps(sc[g]), _mm512_set1_ps(bi[g]));
          const __m512i d = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + c / 2)));
          _mm512_storeu_ps(o + c, _mm512_permutexvar_ps(d, table));
          _mm512_storeu_ps(o + c + 16, _mm512_permutexvar_ps(_mm512_srli_epi32(d, 4), table));
        }
        break;
      }
      case WeightFormat::affine8:
        for (int64_t c = 0; c < cols; c += 16) {
          const int64_t g = c >> group_shift;
          const __m512 q = _mm512_cvtepi32_ps(
              _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + c))));
          _mm512_storeu_ps(o + c, _mm512_fmadd_ps(q, _mm512_set1_ps(sc[g]), _mm512_set1_ps(bi[g])));
        }
        break;
    }
  }
}

void gemm_f32(const float* wbuf, int64_t n_rows, int64_t cols, const float* xt,
              int64_t n_tokens, float* y, int64_t ldy) {
  int64_t t = 0;
  for (; t + 32 <= n_tokens; t += 32) {
    gemm_rows<2>(wbuf, n_rows, cols, xt + t * cols, 32, y + t * ldy, ldy);
  }
  for (; t < n_tokens; t += 16) {
    gemm_rows<1>(wbuf, n_rows, cols, xt + t * cols, std::min<int64_t>(16, n_tokens - t),
                 y + t * ldy, ldy);
  }
}

}  // namespace pensieve::kernels::avx512
