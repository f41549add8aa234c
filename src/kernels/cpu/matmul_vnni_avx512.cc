// Integer kernels for MLX affine weights (AVX-512 VNNI), decode and prefill.
//
// Activations are quantized per (token, weight group) in one or two int8
// levels (L, see matmul_impl.h), with the sum xsum that the bias term takes:
//   L = 1: x ≈ d·q1, xsum = d·Σq1;  L = 2: x ≈ d·(254·q1 + q2), xsum = Σx.
// With w = s·q + b (q unsigned, 4 or 8 bits), one group's contribution is
//   s·d·Σ q·q1 + b·xsum,  or  s·d·(254·Σ q·q1 + Σ q·q2) + b·xsum,
// and Σ q·q1, Σ q·q2 are what vpdpbusd (u8 × s8 → i32, 64 products per
// instruction, two per cycle) computes. One level is the default; the
// second doubles the integer work for 16-bit accuracy (~1e-5 of f32).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "kernels/cpu/matmul_impl.h"

namespace pensieve::kernels::avx512 {
namespace {

// acc + Σ of 4 u8·s8 products per lane. Inline asm: GCC 12 treats the
// intrinsic as non-destructive and copies the accumulator around every
// instruction, which costs as much issue bandwidth as the dot products.
inline __m512i dpbusd(__m512i acc, __m512i w_u8, __m512i x_s8) {
  __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(w_u8), "v"(x_s8));
  return acc;
}

// The levels' integer dots as one f32 in units of d: i1, or 254·i1 + i2.
template <int L>
inline __m512 combine(__m512i i1, __m512i i2) {
  if constexpr (L == 1) {
    return _mm512_cvtepi32_ps(i1);
  } else {
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(i1), _mm512_set1_ps(254.f), _mm512_cvtepi32_ps(i2));
  }
}

inline __mmask16 tail_mask(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << n) - 1);
}

// Σ_g b[g]·xs[g]: the bias term of one row and token.
inline float bias_dot(const float* b, const float* xs, int64_t n_groups) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t g = 0; g < n_groups; g += 16) {
    const __mmask16 m = tail_mask(n_groups - g);
    acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, b + g), _mm512_maskz_loadu_ps(m, xs + g), acc);
  }
  return _mm512_reduce_add_ps(acc);
}

inline void row_scales_f32(const WeightMatrix& w, int64_t r, float* sc, float* bi) {
  if (is_k_record(w.scale_type)) return avx512::decode_k_scales(w, r, sc, bi);
  const int64_t n = w.n_groups(), base = r * n;
  for (int which = 0; which < 2; ++which) {
    const uint8_t* src = static_cast<const uint8_t*>(which == 0 ? w.scales : w.biases);
    float* dst = which == 0 ? sc : bi;
    if (src == nullptr) {  // biases implied by the scales
      for (int64_t g = 0; g < n; ++g) dst[g] = w.bias_factor * sc[g];
      continue;
    }
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

// A packed row -> one u8 per value, natural order.
void unpack_row_u8(const WeightMatrix& w, const uint8_t* row, int64_t cols, uint8_t* out) {
  if (w.format == WeightFormat::affine8) {
    std::memcpy(out, row, static_cast<size_t>(cols));
    return;
  }
  const __m256i low4 = _mm256_set1_epi8(0x0f);
  int64_t c = 0;
  for (; c + 64 <= cols; c += 64) {
    const __m256i p = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + c / 2));
    const __m256i lo = _mm256_and_si256(p, low4);
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(p, 4), low4);
    // unpack works per 128-bit lane: a = bytes 0-7 and 16-23 interleaved, b = 8-15 and 24-31.
    const __m256i a = _mm256_unpacklo_epi8(lo, hi), b = _mm256_unpackhi_epi8(lo, hi);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + c), _mm256_permute2x128_si256(a, b, 0x20));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + c + 32), _mm256_permute2x128_si256(a, b, 0x31));
  }
  for (; c < cols; c += 2) {
    out[c] = row[c / 2] & 0x0f;
    out[c + 1] = row[c / 2] >> 4;
  }
}

// Prefill tile: NR weight rows x (16*MT) tokens over groups [g0, g1). wq
// holds u8 rows; the activation tiles hold 4 consecutive int8 of 16 tokens
// per 64-byte vector. Partial sums live in `fbuf` between calls (the caller
// walks K in blocks so that a block of activations stays in L1 while every
// row of the panel passes over it); the last block writes y.
template <int NR, int MT, int L>
void vnni_tile(const uint8_t* wq, int64_t cols, const float* sc, const float* bi, int64_t n_groups,
               int64_t group, int64_t g0, int64_t g1, const int32_t* x1, const int32_t* x2,
               const float* dx, const float* xs, int64_t tile_stride_q, int64_t tile_stride_g,
               float* fbuf, bool first, bool last, float* yt, int64_t ldt) {
  __m512 facc[NR][MT];
  for (int r = 0; r < NR; ++r)
    for (int m = 0; m < MT; ++m)
      facc[r][m] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(fbuf + (r * MT + m) * 16);
  const int64_t quads = group / 4;
  for (int64_t g = g0; g < g1; ++g) {
    __m512i i1[NR][MT], i2[NR][MT];
    for (int r = 0; r < NR; ++r)
      for (int m = 0; m < MT; ++m) i1[r][m] = i2[r][m] = _mm512_setzero_si512();
    for (int64_t k4 = g * quads; k4 < (g + 1) * quads; ++k4) {
      __m512i xv1[MT], xv2[MT];
      for (int m = 0; m < MT; ++m) {
        xv1[m] = _mm512_loadu_si512(x1 + m * tile_stride_q + k4 * 16);
        if constexpr (L == 2) xv2[m] = _mm512_loadu_si512(x2 + m * tile_stride_q + k4 * 16);
      }
      for (int r = 0; r < NR; ++r) {
        int32_t quad;
        std::memcpy(&quad, wq + r * cols + k4 * 4, 4);
        const __m512i wb = _mm512_set1_epi32(quad);
        for (int m = 0; m < MT; ++m) {
          i1[r][m] = dpbusd(i1[r][m], wb, xv1[m]);
          if constexpr (L == 2) i2[r][m] = dpbusd(i2[r][m], wb, xv2[m]);
        }
      }
    }
    for (int m = 0; m < MT; ++m) {
      const __m512 d = _mm512_loadu_ps(dx + m * tile_stride_g + g * 16);
      const __m512 s = _mm512_loadu_ps(xs + m * tile_stride_g + g * 16);
      for (int r = 0; r < NR; ++r) {
        const __m512 v = combine<L>(i1[r][m], i2[r][m]);
        const __m512 scale = _mm512_mul_ps(_mm512_set1_ps(sc[r * n_groups + g]), d);
        facc[r][m] = _mm512_fmadd_ps(v, scale, facc[r][m]);
        facc[r][m] = _mm512_fmadd_ps(_mm512_set1_ps(bi[r * n_groups + g]), s, facc[r][m]);
      }
    }
  }
  if (!last) {
    for (int r = 0; r < NR; ++r)
      for (int m = 0; m < MT; ++m) _mm512_storeu_ps(fbuf + (r * MT + m) * 16, facc[r][m]);
    return;
  }
  for (int r = 0; r < NR; ++r)
    for (int m = 0; m < MT; ++m) _mm512_storeu_ps(yt + r * ldt + 16 * m, facc[r][m]);
}

// All rows of a panel x 16*MT tokens, K in blocks of about kKBlockBytes of
// activations so each block is read from L2 once and then hit in L1.
template <int MT, int L>
void vnni_rows(const uint8_t* wq, int64_t n_rows, int64_t cols, const float* sc, const float* bi,
               int64_t n_groups, int64_t group, const int32_t* x1, const int32_t* x2,
               const float* dx, const float* xs, int64_t sq, int64_t sg, float* yt, int64_t ldt) {
  constexpr int NR = 4;
  // A block's activations: 256 columns x 16*MT tokens x L levels, 4-16 KiB
  // (512 columns for one level measured the same).
  constexpr int64_t kKBlockCols = 256;
  const int64_t groups_per_block = std::max<int64_t>(1, kKBlockCols / group);
  thread_local std::vector<float> fbuf;
  fbuf.resize(static_cast<size_t>((n_rows + NR) * MT * 16));
  for (int64_t g0 = 0; g0 < n_groups; g0 += groups_per_block) {
    const int64_t g1 = std::min(n_groups, g0 + groups_per_block);
    const bool first = g0 == 0, last = g1 == n_groups;
    int64_t r = 0;
    auto call = [&](auto nr_tag) {
      constexpr int N = decltype(nr_tag)::value;
      vnni_tile<N, MT, L>(wq + r * cols, cols, sc + r * n_groups, bi + r * n_groups, n_groups,
                          group, g0, g1, x1, x2, dx, xs, sq, sg, fbuf.data() + r * MT * 16, first,
                          last, yt + r * ldt, ldt);
    };
    for (; r + NR <= n_rows; r += NR) call(std::integral_constant<int, NR>{});
    switch (n_rows - r) {
      case 3: call(std::integral_constant<int, 3>{}); break;
      case 2: call(std::integral_constant<int, 2>{}); break;
      case 1: call(std::integral_constant<int, 1>{}); break;
      default: break;
    }
  }
}

// Decode reads each weight row once, kPrefetchRows rows behind its
// software prefetches (the hardware prefetchers alone gave half the speed).
constexpr int64_t kPrefetchRows = 4;

// Decode: R rows at once against T (<= 4) tokens, straight from the packed
// bytes, so each weight byte is read once and the activations of a 64-column
// chunk are loaded once for all R rows. Activations are in gemv order: per
// 64 columns, 4-bit weights see [even columns | odd columns] (the order
// nibbles unpack in: one 32-byte load broadcast to both halves, the upper
// half shifted by 4), 8-bit weights natural order.
//
// Per group the integer dots become f32 with one multiply-add whose factor
// s[r][g]·d[t][g] is precomputed for the R rows into `comb`.
// Lanes of a 64-column chunk for group 32: 4-bit, lanes 0-3 and 8-11 hold the
// first group (even and odd columns), 4-7 and 12-15 the second; 8-bit, lanes
// 0-7 the first and 8-15 the second.
template <int R, int T, bool Q4, int G, int L>
void gemv_block(const WeightMatrix& w, int64_t r, const QuantizedActivations& a, int64_t t0,
                float* comb, float* bi, float* y, int64_t ldy) {
  const int64_t cols = w.cols, n_groups = w.n_groups();
  const int64_t row_bytes = w.row_bytes();
  // The scales and biases kPrefetchRows rows ahead: they live apart from
  // the packed rows, and waiting for them at the start of every block was a
  // fifth of a decode step. (Past the last row this only names addresses.)
  {
    const int64_t sb = w.scale_row_bytes();  // one row's scales (biases alike)
    const char* s0 = static_cast<const char*>(w.scales) + (r + kPrefetchRows) * sb;
    const char* b0 = w.biases != nullptr ? static_cast<const char*>(w.biases) + (r + kPrefetchRows) * sb : nullptr;
    for (int64_t off = 0; off < R * sb; off += 64) {
      _mm_prefetch(s0 + off, _MM_HINT_T0);
      if (b0 != nullptr) _mm_prefetch(b0 + off, _MM_HINT_T0);
    }
  }
  const float* xscale = a.scale.data() + t0 * n_groups;
  const float* xsum = a.sum.data() + t0 * n_groups;
  const int8_t* q1 = a.q1.data() + t0 * cols;
  const int8_t* q2 = L == 2 ? a.q2.data() + t0 * cols : nullptr;
  for (int i = 0; i < R; ++i) {
    float* sc = comb + i * T * n_groups;  // row i's scales land in its token-0 slot first
    row_scales_f32(w, r + i, sc, bi + i * n_groups);
    for (int t = T - 1; t >= 0; --t) {
      float* dst = comb + (i * T + t) * n_groups;
      const float* dx = xscale + t * n_groups;
      for (int64_t g = 0; g < n_groups; g += 16) {
        const __mmask16 m = tail_mask(n_groups - g);
        _mm512_mask_storeu_ps(dst + g, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, sc + g),
                                                         _mm512_maskz_loadu_ps(m, dx + g)));
      }
    }
  }
  const uint8_t* rows[R];
  for (int i = 0; i < R; ++i) rows[i] = w.data + (r + i) * row_bytes;
  // Independent f32 accumulator sets, taken in turn by consecutive steps:
  // with one row and one token a single set is one chain of dependent
  // multiply-adds, which bound the kernel at half its load rate.
  constexpr int P = R * T >= 4 ? 1 : 4 / (R * T);
  __m512 facc[P][R][T];
  for (int p = 0; p < P; ++p)
    for (int i = 0; i < R; ++i)
      for (int t = 0; t < T; ++t) facc[p][i][t] = _mm512_setzero_ps();
  // 4-bit: the 32 packed bytes go to both halves of a register; the lower
  // half keeps the low nibbles (even columns), the upper half the high
  // nibbles in place, i.e. 16x the value (odd columns). One AND, no shift:
  // the upper lanes' sums come out 16x too large, for every group alike, and
  // are scaled back once per row at the end (exact: a power of two).
  const __m512i nibbles = _mm512_inserti64x4(_mm512_set1_epi8(0x0f), _mm256_set1_epi8(static_cast<char>(0xf0)), 1);
  // The group size is a template parameter so the chunk loop unrolls and the
  // integer accumulators stay in registers across it.
  constexpr bool g32 = G == 32;
  constexpr int chunks = g32 ? 1 : G / 64;
  const __mmask16 second = Q4 ? 0xf0f0 : 0xff00;
  // One step: a group (two for groups of 32) of every row and token.
  auto step = [&](int64_t& c, int64_t& g, __m512 (&acc)[R][T]) __attribute__((always_inline)) {
    __m512i i1[R][T], i2[R][T];
    for (int i = 0; i < R; ++i)
      for (int t = 0; t < T; ++t) i1[i][t] = i2[i][t] = _mm512_setzero_si512();
    for (int k = 0; k < chunks; ++k, c += 64) {
      __m512i xa1[T], xa2[T];
      for (int t = 0; t < T; ++t) {
        xa1[t] = _mm512_loadu_si512(q1 + t * cols + c);
        if constexpr (L == 2) xa2[t] = _mm512_loadu_si512(q2 + t * cols + c);
      }
      for (int i = 0; i < R; ++i) {
        // One line ahead per 2 chunks: the rows kPrefetchRows ahead, into L2 only.
        // (Into L1 as well, _MM_HINT_T0, the lines of R rows a block ahead
        // crowd out the activations and the combine factors: decode on the
        // Zen 5 VM went from 8.3-8.9 to 11.2-14.0 tok/s with T1.)
        if ((c & 127) == 0) {
          _mm_prefetch(reinterpret_cast<const char*>(rows[i] + kPrefetchRows * row_bytes + (Q4 ? c / 2 : c)),
                       _MM_HINT_T1);
        }
        __m512i wv;
        if constexpr (Q4) {
          const __m512i p = _mm512_broadcast_i64x4(
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[i] + c / 2)));
          wv = _mm512_and_si512(p, nibbles);
        } else {
          wv = _mm512_loadu_si512(rows[i] + c);
        }
        for (int t = 0; t < T; ++t) {
          i1[i][t] = dpbusd(i1[i][t], wv, xa1[t]);
          if constexpr (L == 2) i2[i][t] = dpbusd(i2[i][t], wv, xa2[t]);
        }
      }
    }
    for (int i = 0; i < R; ++i) {
      for (int t = 0; t < T; ++t) {
        const float* cb = comb + (i * T + t) * n_groups + g;
        const __m512 v = combine<L>(i1[i][t], i2[i][t]);
        const __m512 scale = g32 ? _mm512_mask_blend_ps(second, _mm512_set1_ps(cb[0]), _mm512_set1_ps(cb[1]))
                                 : _mm512_set1_ps(cb[0]);
        acc[i][t] = _mm512_fmadd_ps(v, scale, acc[i][t]);
      }
    }
    g += g32 ? 2 : 1;
  };
  constexpr int64_t kStepCols = g32 ? 64 : G;
  int64_t c = 0, g = 0;
  for (; c + P * kStepCols <= cols;)
    for (int p = 0; p < P; ++p) step(c, g, facc[p]);
  while (c < cols) step(c, g, facc[0]);
  for (int p = 1; p < P; ++p)
    for (int i = 0; i < R; ++i)
      for (int t = 0; t < T; ++t) facc[0][i][t] = _mm512_add_ps(facc[0][i][t], facc[p][i][t]);
  const __m512 unscale = Q4 ? _mm512_mask_blend_ps(0xff00, _mm512_set1_ps(1.f), _mm512_set1_ps(1.f / 16))
                            : _mm512_set1_ps(1.f);
  for (int i = 0; i < R; ++i) {
    for (int t = 0; t < T; ++t) {
      const float b = bias_dot(bi + i * n_groups, xsum + t * n_groups, n_groups);
      y[t * ldy + r + i] = _mm512_reduce_add_ps(_mm512_mul_ps(facc[0][i][t], unscale)) + b;
    }
  }
}

template <int T, bool Q4, int L>
void gemv_rows_i8(const WeightMatrix& w, int64_t r0, int64_t r1, const QuantizedActivations& a,
                  int64_t t0, float* y, int64_t ldy) {
  // Rows at once: as many as the registers hold (integer and f32
  // accumulators for R·T pairs, T activation vectors per level), except for
  // one token: there a row at a time, one weight stream, was 6 % faster on
  // the Zen 5 VM (paired runs) than four rows' interleaved streams.
  constexpr int R = T == 1 ? 1 : T <= 2 ? 4 : (T == 3 ? 2 : (L == 1 ? 2 : 1));
  const int64_t n_groups = w.n_groups();
  thread_local std::vector<float> scratch;
  scratch.resize(static_cast<size_t>(R * (T + 1) * n_groups));
  float* comb = scratch.data();
  float* bi = comb + R * T * n_groups;
  int64_t r = r0;
  auto run = [&](auto g_tag) {
    constexpr int G = decltype(g_tag)::value;
    for (; r + R <= r1; r += R) gemv_block<R, T, Q4, G, L>(w, r, a, t0, comb, bi, y, ldy);
    for (; r < r1; ++r) gemv_block<1, T, Q4, G, L>(w, r, a, t0, comb, bi, y, ldy);
  };
  switch (w.group_size) {
    case 32: return run(std::integral_constant<int, 32>{});
    case 64: return run(std::integral_constant<int, 64>{});
    case 128: return run(std::integral_constant<int, 128>{});
    default: fail(ErrorKind::internal, "{}: group size {} has no integer kernel", w.name, w.group_size);
  }
}

}  // namespace

void quantize_group_i8(const float* x, int64_t n, int8_t* q1, float* scale, float* sum) {
  __m512 amax = _mm512_setzero_ps();
  for (int64_t c = 0; c < n; c += 16) amax = _mm512_max_ps(amax, _mm512_abs_ps(_mm512_loadu_ps(x + c)));
  const float d = _mm512_reduce_max_ps(amax) / 127.f;
  const __m512 inv = _mm512_set1_ps(d > 0 ? 1.f / d : 0.f);
  const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
  __m512i qsum = _mm512_setzero_si512();
  for (int64_t c = 0; c < n; c += 16) {
    __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + c), inv));
    q = _mm512_min_epi32(_mm512_max_epi32(q, lo), hi);
    qsum = _mm512_add_epi32(qsum, q);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q1 + c), _mm512_cvtepi32_epi8(q));
  }
  *scale = d;
  *sum = d * static_cast<float>(_mm512_reduce_add_epi32(qsum));
}

void quantize_group_i8x2(const float* x, int64_t n, int8_t* q1, int8_t* q2, float* scale,
                         float* sum) {
  __m512 amax = _mm512_setzero_ps(), acc = _mm512_setzero_ps();
  for (int64_t c = 0; c < n; c += 16) {
    const __m512 v = _mm512_loadu_ps(x + c);
    amax = _mm512_max_ps(amax, _mm512_abs_ps(v));
    acc = _mm512_add_ps(acc, v);
  }
  const float d1 = _mm512_reduce_max_ps(amax) / 127.f, d = d1 / 254.f;
  const __m512 inv1 = _mm512_set1_ps(d1 > 0 ? 1.f / d1 : 0.f);
  const __m512 inv = _mm512_set1_ps(d > 0 ? 1.f / d : 0.f);
  const __m512 vd1 = _mm512_set1_ps(d1);
  const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
  *scale = d;
  *sum = _mm512_reduce_add_ps(acc);
  for (int64_t c = 0; c < n; c += 16) {
    const __m512 v = _mm512_loadu_ps(x + c);
    const __m512 a = _mm512_roundscale_ps(_mm512_mul_ps(v, inv1), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 r = _mm512_sub_ps(v, _mm512_mul_ps(a, vd1));
    const __m512i b = _mm512_cvtps_epi32(_mm512_mul_ps(r, inv));
    const __m512i ai = _mm512_min_epi32(_mm512_max_epi32(_mm512_cvtps_epi32(a), lo), hi);
    const __m512i bi = _mm512_min_epi32(_mm512_max_epi32(b, lo), hi);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q1 + c), _mm512_cvtepi32_epi8(ai));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q2 + c), _mm512_cvtepi32_epi8(bi));
  }
}

void vnni_gemv(const WeightMatrix& w, int64_t r0, int64_t r1, const QuantizedActivations& a,
               int64_t t0, int64_t n_tokens, float* y, int64_t ldy) {
  const bool q4 = w.format == WeightFormat::affine4;
  float* yt = y + t0 * ldy;
  auto run = [&](auto t_tag, auto l_tag) {
    constexpr int T = decltype(t_tag)::value, L = decltype(l_tag)::value;
    if (q4) gemv_rows_i8<T, true, L>(w, r0, r1, a, t0, yt, ldy);
    else gemv_rows_i8<T, false, L>(w, r0, r1, a, t0, yt, ldy);
  };
  auto with_levels = [&](auto t_tag) {
    if (a.levels == 2) run(t_tag, std::integral_constant<int, 2>{});
    else run(t_tag, std::integral_constant<int, 1>{});
  };
  switch (n_tokens) {
    case 1: return with_levels(std::integral_constant<int, 1>{});
    case 2: return with_levels(std::integral_constant<int, 2>{});
    case 3: return with_levels(std::integral_constant<int, 3>{});
    default: return with_levels(std::integral_constant<int, 4>{});
  }
}

void unpack_panel(const WeightMatrix& w, int64_t r0, int64_t n_rows, uint8_t* wq, float* sc,
                  float* bi) {
  const int64_t cols = w.cols, n_groups = w.n_groups();
  for (int64_t i = 0; i < n_rows; ++i) {
    unpack_row_u8(w, w.data + (r0 + i) * w.row_bytes(), cols, wq + i * cols);
    row_scales_f32(w, r0 + i, sc + i * n_groups, bi + i * n_groups);
  }
}

void vnni_gemm(const WeightMatrix& w, int64_t r0, int64_t r1, const QuantizedActivationTiles& a,
               float* yt, int64_t ldt) {
  const int64_t cols = w.cols, group = w.group_size, n_groups = w.n_groups();
  const int64_t n_rows = r1 - r0;
  thread_local AlignedVector<uint8_t> wq;
  thread_local std::vector<float> sc, bi;
  sc.resize(n_rows * n_groups);
  bi.resize(n_rows * n_groups);
  wq.resize(n_rows * cols);
  unpack_panel(w, r0, n_rows, wq.data(), sc.data(), bi.data());
  const int64_t sq = cols / 4 * 16, sg = n_groups * 16;
  auto run = [&](auto l_tag) {
    constexpr int L = decltype(l_tag)::value;
    const int32_t* x2 = L == 2 ? a.q2.data() : nullptr;
    int64_t t = 0;
    for (; t + 32 <= a.n_tokens; t += 32) {
      const int64_t tile = t / 16;
      vnni_rows<2, L>(wq.data(), n_rows, cols, sc.data(), bi.data(), n_groups, group,
                      a.q1.data() + tile * sq, L == 2 ? x2 + tile * sq : nullptr,
                      a.scale.data() + tile * sg, a.sum.data() + tile * sg, sq, sg, yt + t, ldt);
    }
    for (; t < a.n_tokens; t += 16) {
      const int64_t tile = t / 16;
      vnni_rows<1, L>(wq.data(), n_rows, cols, sc.data(), bi.data(), n_groups, group,
                      a.q1.data() + tile * sq, L == 2 ? x2 + tile * sq : nullptr,
                      a.scale.data() + tile * sg, a.sum.data() + tile * sg, sq, sg, yt + t, ldt);
    }
  };
  if (a.levels == 2) run(std::integral_constant<int, 2>{});
  else run(std::integral_constant<int, 1>{});
}

void transpose_rows_to_tokens(const float* yt, int64_t ldt, int64_t n_rows, int64_t t0, int64_t t1,
                              float* y, int64_t ldy) {
  // 16 rows x 16 tokens at a time, transposed in registers, so every store
  // fills 16 consecutive floats of one token's row of y.
  for (int64_t r = 0; r < n_rows; r += 16) {
    const int64_t nr = std::min<int64_t>(16, n_rows - r);
    const __mmask16 rmask = tail_mask(nr);
    for (int64_t t = t0; t < t1; t += 16) {  // t0 is a multiple of 16, yt is padded to 16
      __m512 v[16];
      for (int i = 0; i < 16; ++i) {
        v[i] = i < nr ? _mm512_loadu_ps(yt + (r + i) * ldt + t) : _mm512_setzero_ps();
      }
      __m512 a[16], b[16];
      for (int i = 0; i < 8; ++i) {  // 32-bit interleave of row pairs, per 128-bit lane
        a[2 * i] = _mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]);
        a[2 * i + 1] = _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]);
      }
      for (int i = 0; i < 4; ++i) {  // b[4i+e], lane k: rows 4i..4i+3 of token 4k+e
        b[4 * i + 0] = _mm512_shuffle_ps(a[4 * i], a[4 * i + 2], 0x44);
        b[4 * i + 1] = _mm512_shuffle_ps(a[4 * i], a[4 * i + 2], 0xEE);
        b[4 * i + 2] = _mm512_shuffle_ps(a[4 * i + 1], a[4 * i + 3], 0x44);
        b[4 * i + 3] = _mm512_shuffle_ps(a[4 * i + 1], a[4 * i + 3], 0xEE);
      }
      const int64_t nt = std::min<int64_t>(16, t1 - t);
      for (int e = 0; e < 4; ++e) {  // gather the 128-bit lanes of the four row groups
        const __m512 c1 = _mm512_shuffle_f32x4(b[e], b[4 + e], 0x88);
        const __m512 c2 = _mm512_shuffle_f32x4(b[e], b[4 + e], 0xDD);
        const __m512 c3 = _mm512_shuffle_f32x4(b[8 + e], b[12 + e], 0x88);
        const __m512 c4 = _mm512_shuffle_f32x4(b[8 + e], b[12 + e], 0xDD);
        const __m512 col[4] = {_mm512_shuffle_f32x4(c1, c3, 0x88), _mm512_shuffle_f32x4(c2, c4, 0x88),
                               _mm512_shuffle_f32x4(c1, c3, 0xDD), _mm512_shuffle_f32x4(c2, c4, 0xDD)};
        for (int k = 0; k < 4; ++k) {
          const int64_t tok = 4 * k + e;
          if (tok < nt) _mm512_mask_storeu_ps(y + (t + tok) * ldy + r, rmask, col[k]);
        }
      }
    }
  }
}

}  // namespace pensieve::kernels::avx512
