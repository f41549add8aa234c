// Launchers of the CUDA kernels (kernels/cuda/*.cu). Every pointer is device
// memory; every launch goes to `stream` and is checked.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/cuda_common.cuh"

namespace pensieve::cuda {

// --- ops.cu
// x[r] = row tokens[r] of the table, as f32.
void embed(const GpuWeight& table, const int32_t* tokens, int64_t n_rows, float* x,
           cudaStream_t stream);
// out[r] = x[rows ? rows[r] : r] / rms * w (rows of dim).
void rms_norm(const float* x, const int32_t* rows, const float* w, int64_t n_rows, int64_t dim,
              float eps, float* out, cudaStream_t stream);
// x += delta (+ bias); then, with w, h = rms_norm(x) * w.
void add_rms_norm(float* x, const float* delta, const float* bias, const float* w, int64_t n_rows,
                  int64_t dim, float eps, float* h, cudaStream_t stream);
// out[r] = silu(gu[r][0..n)) * gu[r][n..2n).
void silu_mul(const float* gu, int64_t n_rows, int64_t n, float* out, cudaStream_t stream);

// The paged KV pool of one layer (backend/backend.h's layout; core/
// kv_geometry.h's f16 or q8 head).
struct GpuKvLayer {
  uint8_t* k = nullptr;  // [n_blocks][n_kv_heads] heads: [head_dim][16] (+ q8 scales [groups][16])
  uint8_t* v = nullptr;  // [n_blocks][n_kv_heads] heads: [16][head_dim] (+ q8 scales [16][groups])
  int n_kv_heads = 0, head_dim = 0;
  bool q8 = false;
  int group = 0;       // q8: dimensions per scale
  int head_bytes = 0;  // one head of one block
  __host__ __device__ int64_t head_offset(int64_t block, int h) const {
    return (block * n_kv_heads + h) * static_cast<int64_t>(head_bytes);
  }
};

struct QkvPostArgs {
  int n_heads = 0, n_kv_heads = 0, head_dim = 0, rot_dim = 0;
  const float* bias = nullptr;
  const float* q_norm = nullptr;
  const float* k_norm = nullptr;
  float eps = 0;
};
// Bias, q/k norm, rope (cos/sin [T][rot_dim/2]), q out, k/v into KV slots.
void qkv_post(const QkvPostArgs& a, float* qkv, const float* cos, const float* sin,
              const int32_t* slots, int64_t n_rows, float* q, const GpuKvLayer& kv,
              cudaStream_t stream);

// --- attention.cu
struct GpuSeq {
  int32_t table_offset;  // into the step's concatenated block tables
  int32_t n_ctx, q_row, n_q;
};
struct AttentionArgs {
  const float* q = nullptr;  // [T][n_heads * head_dim]
  float* out = nullptr;
  GpuKvLayer kv;
  const GpuSeq* seqs = nullptr;
  const int32_t* row_seq = nullptr;  // [T]
  const int32_t* tables = nullptr;
  int64_t n_rows = 0;
  // Groups of up to group_rows consecutive rows of one sequence, each
  // (first_row << 4) | count; the staged kernel takes a group per warp.
  const int32_t* groups = nullptr;
  int64_t n_groups = 0;
  int group_rows = 1;
  // Prompt steps: tiles of up to 64 consecutive rows of one sequence, each
  // (first_row, count), for the tensor-core kernel (flash_attention.cu).
  const int32_t* tiles = nullptr;
  int64_t n_tiles = 0;
  int n_heads = 0;
  float scale = 1;
  int window = 0;
  int max_ctx = 0;   // the longest n_ctx of the step
  float* partial = nullptr;  // split-K scratch (attention_scratch_floats)
};
// Floats of split scratch attention() needs for this many rows and heads.
int64_t attention_scratch_floats(int64_t n_rows, int64_t n_groups, int n_heads, int head_dim,
                                 int max_ctx);
void attention(const AttentionArgs& a, cudaStream_t stream);

// --- flash_attention.cu
// The tensor-core prompt kernel over a.tiles (head dims 32, 64, 96, 128).
bool flash_attention_supported(int head_dim);
void flash_attention(const AttentionArgs& a, cudaStream_t stream);
constexpr int kFlashTileRows = 64;

// --- matmul.cu
// y[t*ldy + r] = x[t] · w[r] for t < n_tokens, r < w.rows. The decode path
// (n_tokens <= 8) streams w once; more tokens take the tensor-core gemm.
void matmul(const GpuWeight& w, const float* x, int64_t ldx, int64_t n_tokens, float* y,
            int64_t ldy, cudaStream_t stream);
constexpr int64_t kGemvMaxTokens = 8;
// MLX weights with up to this many rows (many streams decoding) take the
// gemv in groups of kGemvMaxTokens.
constexpr int64_t kGemvBatchTokens = 32;
// Decode's MLP down projection: y = (silu(gate) · up) · wᵀ from the gate|up
// rows gu (width 2·w.cols), without the activation in memory. False (and
// nothing launched) where the fused gemv does not apply.
bool matmul_silu(const GpuWeight& w, const float* gu, int64_t n_tokens, float* y, int64_t ldy,
                 cudaStream_t stream);

// The current device's multiprocessors (asked once).
int multiprocessor_count();
// --- gemv_q4.cu
// Decode rows (1 to kGemvMaxTokens) of a 4-bit weight on int8 dot products,
// x staged as two int8 levels per 32 columns. False (nothing launched) where
// it does not apply: another format, groups not a multiple of 32, unaligned
// pointers, x too wide for shared memory, norm with acc, or
// PENSIEVE_CUDA_GEMV_Q4=0.
// Input modes: x as it is, silu(gate)·up of gate|up rows (width 2·cols),
// or rms_norm(x)·norm_w (eps). acc: y += x·wᵀ (+ bias) instead of y =.
enum : int { kGemvPlain = 0, kGemvSilu = 1, kGemvNorm = 2 };
struct GemvIo {
  const float* x = nullptr;
  int64_t ldx = 0;
  float* y = nullptr;
  int64_t ldy = 0;
  const float* norm_w = nullptr;
  float eps = 0;
  const float* bias = nullptr;  // acc only
};
bool gemv_q4(const GpuWeight& w, const GemvIo& io, int64_t n_tokens, int in, bool acc, cudaStream_t stream);
bool gemv_q4_enabled();
// --- gemm_q4_mma.cu
// Many streams decoding: kMmaMinTokens to kMmaMaxTokens rows of x times a
// 4-bit weight on tensor cores (f16 operands, f32 sums), the weight read
// once. gemm_q4_mma_plan says whether it applies (ok: 4-bit, columns a
// multiple of 128, power-of-two groups of at least 32, aligned x and
// weight, PENSIEVE_CUDA_MMA not 0) and the scratch it needs: x16 (x as
// halves), and where the columns are split over blocks, partial sums and
// per-tile counters (zero before the first launch; each launch leaves them
// zero). silu: x is gate|up rows of width 2·w.cols, as matmul_silu.
constexpr int64_t kMmaMinTokens = kGemvMaxTokens + 1;
constexpr int64_t kMmaMaxTokens = 64;
struct MmaPlan {
  bool ok = false;
  int n_split = 1;
  size_t x16_halves = 0, partial_floats = 0, counters = 0;
};
MmaPlan gemm_q4_mma_plan(const GpuWeight& w, int64_t n_tokens, const float* x, int64_t ldx);
// acc: y += x·wᵀ (+ bias) instead of y = x·wᵀ.
void gemm_q4_mma(const GpuWeight& w, const float* x, int64_t ldx, int64_t n_tokens, float* y, int64_t ldy,
                 bool silu, bool acc, const float* bias, const MmaPlan& plan, __half* x16, float* partial,
                 int* counters, cudaStream_t stream);
// --- cublas_gemm.cu
// cuBLAS, loaded at run time: "" when usable, else why not.
std::string cublas_unavailable_reason();
struct CublasContext;
CublasContext* cublas_open(cudaStream_t stream);  // nullptr where unavailable
void cublas_close(CublasContext* ctx);
int cublas_version(const CublasContext* ctx);
// matmul() through cuBLAS: w dequantized into w16 (rows·cols halves), x
// rounded into x16 (n_tokens·cols halves), f32 accumulation.
void matmul_cublas(CublasContext* ctx, const GpuWeight& w, const float* x, int64_t ldx,
                   int64_t n_tokens, float* y, int64_t ldy, __half* w16, __half* x16,
                   cudaStream_t stream);
// Prompts of at least this many rows take cuBLAS (fewer: dequantizing the
// weight costs more than the built-in gemm saves).
constexpr int64_t kCublasMinTokens = 64;

}  // namespace pensieve::cuda
