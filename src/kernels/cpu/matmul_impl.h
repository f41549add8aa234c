// Per-ISA entry points behind matmul(). Internal to kernels/cpu.
#pragma once

#include <cstdint>
#include <vector>

#include "core/aligned.h"
#include "core/thread_pool.h"
#include "quant/weight_matrix.h"

namespace pensieve::kernels {

// x order: 4-bit weights are unpacked as [even | odd] halves of each
// 32-value chunk, so x is permuted the same way once per call instead of
// interleaving nibbles for every weight.
bool uses_permuted_x(const WeightMatrix& w);
void permute_x_for_q4(const float* x, int64_t cols, float* out);

// xt[tile][c][i] = x[16*tile + i][c], zero for tokens past n_tokens.
// Tiles [tile0, tile1) only, so threads can share the work.
void transpose_tokens(const float* x, int64_t ldx, int64_t n_tokens, int64_t cols, float* xt,
                      int64_t tile0, int64_t tile1);

// Activations for the integer kernels, per (token, weight group of `group`
// columns), in int8 for the u8 x s8 instruction (vpdpbusd, twice the rate
// of the 16-bit one), one or two levels deep:
//   1 level (the default):  x ≈ d·q1,             d = max|x| / 127
//   2 levels:               x ≈ d·(254·q1 + q2),  d = max|x| / (127·254)
// with q1, q2 in [-127, 127] (the remainder after q1 is at most half a q1
// step = 127·d, so q2 never saturates). `scale` is d in both cases: the
// unit of the integer q1 or 254·q1 + q2.
//
// `sum` is what the weights' bias term b multiplies (w = s·q + b, q >= 0).
// With two levels it is Σx exactly. With one level it is Σ d·q1, the sum of
// the rounded activations: then each activation's rounding error meets its
// whole weight s·q + b, which is centred on zero, rather than s·q alone,
// which spans [0, 2·max|w|] for a centred group. That halves what one level
// moves the logits by (at most 1.3-2.4 % -> 0.6-0.9 % of their range on the
// fixture models; llama.cpp's Q8 activations, whose weights are symmetric,
// land at 0.5-0.9 % on the same models) for no work in the kernels.
// Two levels keep 16-bit accuracy (~1e-5 of the f32 path; the transformers
// comparison at 1e-3, PENSIEVE_INT8_LEVELS=2) at twice the integer work.
struct QuantizedActivations {
  int64_t n_tokens = 0, cols = 0, group = 0;
  int levels = 1;
  AlignedVector<int8_t> q1, q2;  // [token][cols]; per 64 columns [even | odd] in nibble order; q2 only with 2 levels
  std::vector<float> scale;    // d, [token][cols/group]
  std::vector<float> sum;      // [token][cols/group]
};
void quantize_activations(const float* x, int64_t ldx, int64_t n_tokens, int64_t cols,
                          int64_t group, int levels, QuantizedActivations* out,
                          bool nibble_order = false);

// The same transposed into 16-token tiles for the gemm kernel (natural order).
struct QuantizedActivationTiles {
  int64_t n_tokens = 0, cols = 0, group = 0;
  int levels = 1;
  AlignedVector<int32_t> q1, q2;  // [tile][cols/4][16]: 4 consecutive int8 per token; q2 only with 2 levels
  std::vector<float> scale;     // [tile][cols/group][16]
  std::vector<float> sum;       // [tile][cols/group][16]
};
// Serial reference: quantize_activations' output rearranged into tiles.
void tile_activations(const QuantizedActivations& a, QuantizedActivationTiles* out);
// What prefill uses: both steps at once, 16-token tiles spread over the
// pool's threads (the same numbers as the serial reference, tested; one
// thread would otherwise do this while the others wait).
void quantize_activation_tiles(const float* x, int64_t ldx, int64_t n_tokens, int64_t cols,
                               int64_t group, int levels, QuantizedActivationTiles* out,
                               ThreadPool& pool);

// Scalar reference for the integer kernels' arithmetic (same quantized
// activations in natural order, either level count, exact integer dots):
// y for rows [r0, r1).
void vnni_reference_rows(const WeightMatrix& w, int64_t r0, int64_t r1,
                         const QuantizedActivations& natural, float* y, int64_t ldy);

namespace avx512 {
// One activation group (n % 16 == 0) to one or two int8 levels (above).
void quantize_group_i8(const float* x, int64_t n, int8_t* q1, float* scale, float* sum);
void quantize_group_i8x2(const float* x, int64_t n, int8_t* q1, int8_t* q2, float* scale,
                         float* sum);
// Rows [r0, r1) x tokens [t0, t0 + n_tokens) (n_tokens <= 4), activations in
// gemv order (nibble order for 4-bit weights); needs cols % 64 == 0.
void vnni_gemv(const WeightMatrix& w, int64_t r0, int64_t r1, const QuantizedActivations& a,
               int64_t t0, int64_t n_tokens, float* y, int64_t ldy);
// Rows [r0, r1) x all tokens of a, written transposed: yt[r - r0][t], rows
// ldt >= 16·tiles apart (padding tokens included). Each store fills a whole
// vector of one row; the token-major y that callers want would take 4-byte
// stores 16 tokens apart, which miss the cache once y outgrows it (a fifth
// of prefill's time before).
void vnni_gemm(const WeightMatrix& w, int64_t r0, int64_t r1, const QuantizedActivationTiles& a,
               float* yt, int64_t ldt);
// Rows [r0, r0 + n_rows) as one u8 per weight (natural order, row-major,
// cols apart) and their group scales and biases as f32 ([row][group]).
void unpack_panel(const WeightMatrix& w, int64_t r0, int64_t n_rows, uint8_t* wq, float* sc,
                  float* bi);
// y[t][r] = yt[r][t] for r < n_rows, t in [t0, t1).
void transpose_rows_to_tokens(const float* yt, int64_t ldt, int64_t n_rows, int64_t t0, int64_t t1,
                              float* y, int64_t ldy);

// Rows [r0, r1) for n_tokens <= 4 tokens.
void gemv_rows(const WeightMatrix& w, int64_t r0, int64_t r1, const float* x, int64_t ldx,
               int64_t n_tokens, float* y, int64_t ldy);
// Dequantizes rows [r0, r0+n) into out[n][cols] (permuted order for 4-bit).
void dequant_rows(const WeightMatrix& w, int64_t r0, int64_t n, float* out);
// decode_k_scales (quant/weight_matrix.h) in vectors: the same floats.
void decode_k_scales(const WeightMatrix& w, int64_t r, float* sc, float* bi);
// y[t][r] = Σ_c wbuf[r][c] x[t][c] for r < n_rows, t < n_tokens, with x
// given transposed in tiles of 16 tokens: xt[t/16][c][t%16] (see transpose_tokens).
void gemm_f32(const float* wbuf, int64_t n_rows, int64_t cols, const float* xt,
              int64_t n_tokens, float* y, int64_t ldy);
}  // namespace avx512

namespace amx {
// Asks Linux for the tile state (once per process); false where it refuses.
bool request_permission();
// Whether gemm_i8 takes w: group sizes 32, 64 and 128 (others use VNNI).
inline bool handles(const WeightMatrix& w) {
  return w.group_size == 32 || w.group_size == 64 || w.group_size == 128;
}
// vnni_gemm's contract and arithmetic (the same floats) on the tile unit.
void gemm_i8(const WeightMatrix& w, int64_t r0, int64_t r1, const QuantizedActivationTiles& a,
             float* yt, int64_t ldt);
}  // namespace amx

namespace avx2 {
// The AVX2 fallbacks, all f32, natural column order (see matmul_avx2.cc).
void gemv_rows(const WeightMatrix& w, int64_t r0, int64_t r1, const float* x, int64_t ldx,
               int64_t n_tokens, float* y, int64_t ldy);
void dequant_rows(const WeightMatrix& w, int64_t r0, int64_t n, float* out);
void gemm_f32(const float* wbuf, int64_t n_rows, int64_t cols, const float* xt,
              int64_t n_tokens, float* y, int64_t ldy);
}  // namespace avx2

}  // namespace pensieve::kernels
