// y = x · Wᵀ for every weight format: y[t][r] = Σ_c W[r][c] · x[t][c].
//
// Two strategies, both accumulating in f32:
//  - few tokens (decode): stream the stored weight bytes once per call and
//    dot them with every token ("gemv"), memory-bound by design;
//  - many tokens (prefill): dequantize a panel of rows to f32 once, then run
//    a register-tiled kernel over all tokens ("gemm"), compute-bound.
// Several weights that read the same input (q/k/v, gate/up) can run as one
// call with their outputs side by side, so one parallel region covers them.
#pragma once

#include <cstdint>
#include <span>

#include "core/thread_pool.h"
#include "quant/weight_matrix.h"

namespace pensieve::kernels {

// Writes y[t*ldy + offset_p + r] where offset_p is the sum of rows of parts before p.
// Every part must have the same cols (the width of x).
void matmul(std::span<const WeightMatrix* const> parts, const float* x, int64_t ldx,
            int64_t n_tokens, float* y, int64_t ldy, ThreadPool& pool);

void matmul(const WeightMatrix& w, const float* x, int64_t ldx, int64_t n_tokens, float* y,
            int64_t ldy, ThreadPool& pool);

// Scalar reference (single-threaded): dequantize_row_ref and a plain f32 dot.
void matmul_ref(const WeightMatrix& w, const float* x, int64_t ldx, int64_t n_tokens, float* y,
                int64_t ldy);

// The strategy switch point, exposed for tests: calls with at most this many
// tokens take the gemv path (8 concurrent decode streams still stream each
// weight byte from memory once per step).
constexpr int64_t kGemvMaxTokens = 8;

// Integer (VNNI) kernels for MLX affine weights: activations quantized to
// int8 per group. On by default where the CPU has AVX-512 VNNI;
// PENSIEVE_PRECISE=1 (or set_integer_kernels(false)) keeps everything in f32.
bool integer_kernels_enabled();
void set_integer_kernels(bool enabled);

// How many int8 levels those activations take (matmul_impl.h): 1 by
// default (x ≈ d·q, one vpdpbusd per 4 products); 2 with
// PENSIEVE_INT8_LEVELS=2 (or set_int8_activation_levels(2)), twice the
// integer work for 16-bit accuracy.
int int8_activation_levels();
void set_int8_activation_levels(int levels);

// AMX (int8 tiles) for the integer prefill kernel: on where the CPU has
// AMX-INT8 and Linux grants the tile state, unless PENSIEVE_AMX=0 (or
// set_amx_kernels(false)). Same results as the AVX-512 VNNI kernel.
bool amx_kernels_enabled();
void set_amx_kernels(bool enabled);
// Which kernel a prefill matmul of MLX affine weights uses now:
// "amx-int8", "avx512-vnni", "avx512-f32", "avx2-f32" or "scalar"; the
// integer ones with "-2level" appended under two int8 levels.
const char* prefill_kernel_name();

// Forces one path regardless of n_tokens (tests compare both to the reference).
enum class MatmulPath { automatic, gemv, gemm };
void set_matmul_path_for_tests(MatmulPath path);

}  // namespace pensieve::kernels
