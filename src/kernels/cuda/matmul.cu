// y = x · Wᵀ on the GPU for every stored weight format.
//  - Up to kGemvMaxTokens tokens (decode): one warp per weight row streams
//    the row once in 16-byte loads, dequantizes in registers and dots it with
//    every token; memory-bound by design.
//  - More tokens (prefill): a tensor-core gemm (f16 WMMA, f32 accumulate;
//    bf16's 8-bit mantissa moved the fixture models' logits by 2e-3 of
//    their range, f16's 11 bits keep them within the 1e-3 tolerance),
//    the weight tile dequantized into shared memory as it is loaded, so no
//    dequantized copy of a weight ever exists: 64x64 tiles in general, and
//    pipelined 128x128 tiles for long prompts of MLX weights.
#include <mma.h>

#include <algorithm>
#include <cstdlib>

#include "kernels/cuda/kernels.h"

namespace pensieve::cuda {
namespace {

constexpr int kGemvWarps = 8;

// Values one 16-byte load of a row holds.
template <int FMT>
constexpr int values_per_load() {
  return FMT == kAffine4 ? 32 : FMT == kAffine8 ? 16 : (FMT == kF32 ? 4 : 8);
}

template <int FMT>
__device__ __forceinline__ void decode16(const uint4 raw, float* v) {
  const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
  if constexpr (FMT == kAffine4) {
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int k = 0; k < 8; ++k) v[i * 8 + k] = static_cast<float>((words[i] >> (4 * k)) & 0xFu);
  } else if constexpr (FMT == kAffine8) {
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int k = 0; k < 4; ++k) v[i * 4 + k] = static_cast<float>((words[i] >> (8 * k)) & 0xFFu);
  } else if constexpr (FMT == kF32) {
#pragma unroll
    for (int i = 0; i < 4; ++i) v[i] = __uint_as_float(words[i]);
  } else if constexpr (FMT == kF16) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const __half2 h = *reinterpret_cast<const __half2*>(&words[i]);
      const float2 f = __half22float2(h);
      v[2 * i] = f.x;
      v[2 * i + 1] = f.y;
    }
  } else {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      v[2 * i] = __uint_as_float(words[i] << 16);
      v[2 * i + 1] = __uint_as_float(words[i] & 0xFFFF0000u);
    }
  }
}

// x is staged in shared memory a chunk of columns at a time, each run of
// 32 floats padded by 16 bytes: a lane reads the 32 (or fewer) columns its
// 16-byte weight load covers, and with the padding the 8 lanes of each
// quarter-warp phase hit distinct banks. (Read straight from global memory,
// each lane's 128-byte run was its own L1 wavefront: 32 per load, which
// held the kernel to a tenth of the bandwidth.) A warp issues every load of
// its rows in the chunk (up to 4 a row) before it uses any, so enough bytes
// are in flight to cover the memory latency; one or two tokens take chunks
// of up to 4096 columns (Phi-3's 3072-wide rows in one).
constexpr int kGemvRows = 2;  // rows per warp, their loads in flight together
constexpr int kGemvPasses = 4;  // 16-byte loads per lane and row per chunk, at most

template <int T, int FMT>
constexpr int gemv_chunk() {
  constexpr int by_regs = 32 * values_per_load<FMT>() * kGemvPasses;
  constexpr int by_smem = T <= 2 ? 4096 : 1024;
  return by_regs < by_smem ? by_regs : by_smem;
}

__host__ __device__ __forceinline__ int padded(int c) { return c + (c / 32) * 4; }

// Σ v[k]·xs[k] over one 16-byte load's V values, xs in staged (padded)
// shared memory.
template <int V>
__device__ __forceinline__ float dot_staged(const float* v, const float* xs) {
  const float4* xv = reinterpret_cast<const float4*>(xs);
  float sum = 0.f;
#pragma unroll
  for (int k = 0; k < V / 4; ++k) {
    const float4 xx = xv[k];
    sum = fmaf(v[4 * k], xx.x, sum);
    sum = fmaf(v[4 * k + 1], xx.y, sum);
    sum = fmaf(v[4 * k + 2], xx.z, sum);
    sum = fmaf(v[4 * k + 3], xx.w, sum);
  }
  return sum;
}

// SILU: x is a gate|up row pair of width 2·cols and the gemv's input is
// silu(gate) · up, computed as it is staged (as silu_mul computes it), so
// the MLP's activation never goes through memory.
template <int T, int FMT, bool SILU = false>
__global__ void __launch_bounds__(kGemvWarps * 32)
    gemv_kernel(GpuWeight w, const float* __restrict__ x, int64_t ldx, float* y, int64_t ldy) {
  constexpr int V = values_per_load<FMT>();
  constexpr bool kQuant = FMT == kAffine4 || FMT == kAffine8;
  constexpr int kChunk = gemv_chunk<T, FMT>();
  constexpr int kPasses = kChunk / (32 * V);  // warp-wide loads per row per chunk
  __shared__ __align__(16) float xs[T][kChunk + kChunk / 8];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t r0 = (blockIdx.x * static_cast<int64_t>(kGemvWarps) + warp) * kGemvRows;
  const int64_t n_groups = kQuant ? w.cols / w.group_size : 0;
  const int64_t row_bytes = w.row_bytes();
  float acc[kGemvRows][T];
#pragma unroll
  for (int i = 0; i < kGemvRows; ++i)
#pragma unroll
    for (int t = 0; t < T; ++t) acc[i][t] = 0.f;

  for (int64_t k0 = 0; k0 < w.cols; k0 += kChunk) {
    const int width = static_cast<int>(w.cols - k0 < kChunk ? w.cols - k0 : kChunk);
    // This chunk's weights first: their loads fly while x is staged.
    uint4 raw[kPasses][kGemvRows];
#pragma unroll
    for (int pass = 0; pass < kPasses; ++pass) {
      const int c = (pass * 32 + lane) * V;
#pragma unroll
      for (int i = 0; i < kGemvRows; ++i) {
        const int64_t r = r0 + i;
        raw[pass][i] = c < width && r < w.rows
                           ? __ldg(reinterpret_cast<const uint4*>(w.data + r * row_bytes) + (k0 + c) / V)
                           : make_uint4(0, 0, 0, 0);
      }
    }
    __syncthreads();  // the last chunk has been read
    for (int e = threadIdx.x; e < T * (kChunk / 4); e += kGemvWarps * 32) {
      const int t = e / (kChunk / 4), c = (e % (kChunk / 4)) * 4;
      float4 v = c < width ? __ldg(reinterpret_cast<const float4*>(x + t * ldx + k0 + c))
                           : make_float4(0.f, 0.f, 0.f, 0.f);
      if constexpr (SILU) {
        if (c < width) v = silu_mul4(v, __ldg(reinterpret_cast<const float4*>(x + t * ldx + w.cols + k0 + c)));
      }
      *reinterpret_cast<float4*>(&xs[t][padded(c)]) = v;
    }
    __syncthreads();
#pragma unroll
    for (int pass = 0; pass < kPasses; ++pass) {
      const int c = (pass * 32 + lane) * V;  // this lane's first column in the chunk
      if (c >= width) continue;
#pragma unroll
      for (int i = 0; i < kGemvRows; ++i) {
        const int64_t r = r0 + i;
        if (r >= w.rows) continue;
        float v[V];
        decode16<FMT>(raw[pass][i], v);
        if constexpr (kQuant) {
          const int64_t g = r * n_groups + (k0 + c) / w.group_size;
          const float s = load_scale(w.scales, w.scale_type, g);
          const float b = load_scale(w.biases, w.scale_type, g);
#pragma unroll
          for (int k = 0; k < V; ++k) v[k] = fmaf(s, v[k], b);
        }
#pragma unroll
        for (int t = 0; t < T; ++t) acc[i][t] += dot_staged<V>(v, &xs[t][padded(c)]);
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kGemvRows; ++i) {
#pragma unroll
    for (int t = 0; t < T; ++t) {
      const float s = warp_sum(acc[i][t]);
      if (lane == 0 && r0 + i < w.rows) y[t * ldy + r0 + i] = s;
    }
  }
}

// Any shape: one warp per row, one element at a time.
__global__ void gemv_any_kernel(GpuWeight w, const float* x, int64_t ldx, int64_t n_tokens,
                                float* y, int64_t ldy) {
  const int lane = threadIdx.x % 32;
  const int64_t r = blockIdx.x * static_cast<int64_t>(kGemvWarps) + threadIdx.x / 32;
  if (r >= w.rows) return;
  for (int64_t t = 0; t < n_tokens; ++t) {
    float sum = 0.f;
    for (int64_t c = lane; c < w.cols; c += 32) sum += weight_at(w, r, c) * x[t * ldx + c];
    sum = warp_sum(sum);
    if (lane == 0) y[t * ldy + r] = sum;
  }
}

template <int FMT, bool SILU = false>
void launch_gemv(const GpuWeight& w, const float* x, int64_t ldx, int64_t n_tokens, float* y,
                 int64_t ldy, cudaStream_t stream);

template <int FMT, bool SILU = false>
void launch_gemv_chunked(const GpuWeight& w, const float* x, int64_t ldx, int64_t n_tokens, float* y,
                 int64_t ldy, cudaStream_t stream) {
  const unsigned grid = blocks_for(w.rows, kGemvWarps * kGemvRows);
  const unsigned threads = kGemvWarps * 32;
  switch (n_tokens) {
#define PENSIEVE_GEMV_CASE(T) \
  case T: gemv_kernel<T, FMT, SILU><<<grid, threads, 0, stream>>>(w, x, ldx, y, ldy); break;
    PENSIEVE_GEMV_CASE(1)
    PENSIEVE_GEMV_CASE(2)
    PENSIEVE_GEMV_CASE(3)
    PENSIEVE_GEMV_CASE(4)
    PENSIEVE_GEMV_CASE(5)
    PENSIEVE_GEMV_CASE(6)
    PENSIEVE_GEMV_CASE(7)
    PENSIEVE_GEMV_CASE(8)
#undef PENSIEVE_GEMV_CASE
    default: throw Error(ErrorKind::internal, "gemv: " + std::to_string(n_tokens) + " tokens");
  }
}

// The streaming gemv: x (up to T_MAX tokens) staged in shared memory once
// per block, whole rows wide, and each warp walking its rows with the next
// row's weight loads (and scales) in flight while it computes the current
// one. The grid is what the card holds at once, so x is read once per block
// rather than once per 16 rows, and a warp always has a row of loads out.
// Rows of at most 32·MAXL 16-byte loads (MAXL 4: 4-bit rows of 4096
// columns; 8: 8192); wider rows, or x too large for shared memory, take
// gemv_kernel above.
constexpr int kStreamWarps = 8;

// Off unless PENSIEVE_CUDA_STREAM_GEMV=1: on an H100 (run 6 of
// docs/cuda-notes.md, alternated) decode ran at 251 tok/s with it and 295
// with the chunked gemv. Kept, tested, for the work on decode: each warp
// reads all of x from shared memory for every row, which at 1 token is as
// many bytes as the weights and at 8 tokens eight times more.
// (Read at every launch outside a graph replay, so a test can compare.)
bool stream_gemv_enabled() {
  const char* e = std::getenv("PENSIEVE_CUDA_STREAM_GEMV");
  return e != nullptr && e[0] == '1';
}

template <int T_MAX, int FMT, int MAXL, bool SILU>
__global__ void __launch_bounds__(kStreamWarps * 32)
    gemv_stream_kernel(GpuWeight w, const float* __restrict__ x, int64_t ldx, int n_tokens,
                       float* y, int64_t ldy) {
  constexpr int V = values_per_load<FMT>();
  constexpr bool kQuant = FMT == kAffine4 || FMT == kAffine8;
  extern __shared__ __align__(16) float xs_dyn[];
  const int cols = static_cast<int>(w.cols);
  const int pcols = padded(cols);
  for (int e = threadIdx.x; e < n_tokens * (cols / 4); e += kStreamWarps * 32) {
    const int t = e / (cols / 4), c = (e % (cols / 4)) * 4;
    float4 v = __ldg(reinterpret_cast<const float4*>(x + t * ldx + c));
    if constexpr (SILU) v = silu_mul4(v, __ldg(reinterpret_cast<const float4*>(x + t * ldx + cols + c)));
    *reinterpret_cast<float4*>(&xs_dyn[t * pcols + padded(c)]) = v;
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kStreamWarps;
  const int64_t row_bytes = w.row_bytes();
  const int n_loads = static_cast<int>(row_bytes / 16);
  const int64_t n_groups = kQuant ? w.cols / w.group_size : 0;

  uint4 cur[MAXL];
  float cur_s[MAXL], cur_b[MAXL];
  auto fetch = [&](int64_t r, uint4 (&raw)[MAXL], float (&sc)[MAXL], float (&bi)[MAXL]) {
    const uint4* rowp = reinterpret_cast<const uint4*>(w.data + r * row_bytes);
#pragma unroll
    for (int p = 0; p < MAXL; ++p) {
      const int idx = p * 32 + lane;
      raw[p] = make_uint4(0, 0, 0, 0);
      sc[p] = bi[p] = 0.f;
      if (idx < n_loads) {
        raw[p] = __ldg(rowp + idx);
        if constexpr (kQuant) {
          const int64_t g = r * n_groups + (static_cast<int64_t>(idx) * V) / w.group_size;
          sc[p] = load_scale(w.scales, w.scale_type, g);
          bi[p] = load_scale(w.biases, w.scale_type, g);
        }
      }
    }
  };
  int64_t r = blockIdx.x * static_cast<int64_t>(kStreamWarps) + warp;
  if (r < w.rows) fetch(r, cur, cur_s, cur_b);
  __syncthreads();  // x is staged
  for (; r < w.rows; r += stride) {
    uint4 nxt[MAXL];
    float nxt_s[MAXL], nxt_b[MAXL];
    if (r + stride < w.rows) fetch(r + stride, nxt, nxt_s, nxt_b);
    float acc[T_MAX];
#pragma unroll
    for (int t = 0; t < T_MAX; ++t) acc[t] = 0.f;
#pragma unroll
    for (int p = 0; p < MAXL; ++p) {
      const int idx = p * 32 + lane;
      if (idx >= n_loads) continue;
      float v[V];
      decode16<FMT>(cur[p], v);
      if constexpr (kQuant) {
#pragma unroll
        for (int k = 0; k < V; ++k) v[k] = fmaf(cur_s[p], v[k], cur_b[p]);
      }
      const int c = idx * V;
#pragma unroll
      for (int t = 0; t < T_MAX; ++t) {
        if (t >= n_tokens) break;
        acc[t] += dot_staged<V>(v, &xs_dyn[t * pcols + padded(c)]);
      }
    }
#pragma unroll
    for (int t = 0; t < T_MAX; ++t) {
      if (t >= n_tokens) break;
      const float s = warp_sum(acc[t]);
      if (lane == 0) y[t * ldy + r] = s;
    }
#pragma unroll
    for (int p = 0; p < MAXL; ++p) {
      cur[p] = nxt[p];
      cur_s[p] = nxt_s[p];
      cur_b[p] = nxt_b[p];
    }
  }
}

constexpr size_t kStreamMaxSmem = 200 * 1024;

// The grid is the blocks the card runs at once with this much shared memory
// (the attribute and occupancy queries are made once per kernel and size).
template <int T_MAX, int FMT, int MAXL, bool SILU>
void launch_stream(const GpuWeight& w, const float* x, int64_t ldx, int64_t n_tokens, float* y,
                   int64_t ldy, size_t smem, cudaStream_t stream) {
  auto kernel = gemv_stream_kernel<T_MAX, FMT, MAXL, SILU>;
  static bool configured = false;
  static int per_sm = 0;
  static size_t per_sm_smem = 0;
  if (!configured) {
    PENSIEVE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             static_cast<int>(kStreamMaxSmem)));
    configured = true;
  }
  if (per_sm == 0 || per_sm_smem != smem) {
    PENSIEVE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel,
                                                                      kStreamWarps * 32, smem));
    per_sm_smem = smem;
  }
  const int64_t by_rows = (w.rows + kStreamWarps - 1) / kStreamWarps;
  const int64_t resident = static_cast<int64_t>(multiprocessor_count()) * (per_sm > 0 ? per_sm : 1);
  const auto grid = static_cast<unsigned>(by_rows < resident ? by_rows : resident);
  kernel<<<grid, kStreamWarps * 32, smem, stream>>>(w, x, ldx, static_cast<int>(n_tokens), y, ldy);
}

template <int FMT, int MAXL, bool SILU>
void launch_stream_t(const GpuWeight& w, const float* x, int64_t ldx, int64_t n_tokens, float* y,
                     int64_t ldy, size_t smem, cudaStream_t stream) {
  if (n_tokens <= 1) launch_stream<1, FMT, MAXL, SILU>(w, x, ldx, n_tokens, y, ldy, smem, stream);
  else if (n_tokens <= 2) launch_stream<2, FMT, MAXL, SILU>(w, x, ldx, n_tokens, y, ldy, smem, stream);
  else if (n_tokens <= 4) launch_stream<4, FMT, MAXL, SILU>(w, x, ldx, n_tokens, y, ldy, smem, stream);
  else launch_stream<8, FMT, MAXL, SILU>(w, x, ldx, n_tokens, y, ldy, smem, stream);
}

// The streaming gemv where it applies (FMT's rows fit MAXL loads a lane and
// x fits shared memory); false otherwise.
template <int FMT, bool SILU>
bool try_stream(const GpuWeight& w, const float* x, int64_t ldx, int64_t n_tokens, float* y,
                int64_t ldy, cudaStream_t stream) {
  if constexpr (FMT == kF32) {
    return false;
  } else {
    const int64_t loads = w.row_bytes() / 16;
    const size_t smem = static_cast<size_t>(n_tokens * padded(static_cast<int>(w.cols))) * sizeof(float);
    if (w.cols % 4 != 0 || smem > kStreamMaxSmem || w.cols > (1 << 20)) return false;
    if (loads <= 32 * 4) launch_stream_t<FMT, 4, SILU>(w, x, ldx, n_tokens, y, ldy, smem, stream);
    else if (loads <= 32 * 8) launch_stream_t<FMT, 8, SILU>(w, x, ldx, n_tokens, y, ldy, smem, stream);
    else return false;
    return true;
  }
}

template <int FMT, bool SILU>
void launch_gemv(const GpuWeight& w, const float* x, int64_t ldx, int64_t n_tokens, float* y,
                 int64_t ldy, cudaStream_t stream) {
  if (stream_gemv_enabled() && try_stream<FMT, SILU>(w, x, ldx, n_tokens, y, ldy, stream)) return;
  launch_gemv_chunked<FMT, SILU>(w, x, ldx, n_tokens, y, ldy, stream);
}

// --- Tensor-core gemm.
constexpr int kBM = 64, kBN = 64, kBK = 32, kPad = 8, kGemmThreads = 128;

template <int FMT>
__device__ __forceinline__ void load_weight_16(const GpuWeight& w, int64_t r, int64_t k,
                                               __half* dst) {
  // 16 values of row r from column k (k a multiple of 16); zeros past the edges.
  if (r >= w.rows) {
#pragma unroll
    for (int i = 0; i < 16; ++i) dst[i] = __float2half_rn(0.f);
    return;
  }
  if constexpr (FMT == kAffine4 || FMT == kAffine8) {
    // Quantized widths are whole groups (multiples of 32), so k < cols here.
    const uint8_t* row = w.data + r * w.row_bytes();
    const int64_t g = r * (w.cols / w.group_size) + k / w.group_size;
    const float s = load_scale(w.scales, w.scale_type, g);
    const float b = load_scale(w.biases, w.scale_type, g);
    if constexpr (FMT == kAffine4) {
      const uint2 words = *reinterpret_cast<const uint2*>(row + k / 2);
      const uint32_t ws[2] = {words.x, words.y};
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j)
          dst[i * 8 + j] = __float2half_rn(fmaf(s, static_cast<float>((ws[i] >> (4 * j)) & 0xFu), b));
    } else {
      const uint4 words = *reinterpret_cast<const uint4*>(row + k);
      const uint32_t ws[4] = {words.x, words.y, words.z, words.w};
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
          dst[i * 4 + j] = __float2half_rn(fmaf(s, static_cast<float>((ws[i] >> (8 * j)) & 0xFFu), b));
    }
  } else {
#pragma unroll
    for (int i = 0; i < 16; ++i)
      dst[i] = __float2half_rn(k + i < w.cols ? weight_at(w, r, k + i) : 0.f);
  }
}

template <int FMT>
__global__ void __launch_bounds__(kGemmThreads)
    gemm_kernel(GpuWeight w, const float* __restrict__ x, int64_t ldx, int64_t n_tokens, float* y,
                int64_t ldy) {
  using namespace nvcuda;
  __shared__ __align__(32) __half a_tile[kBM][kBK + kPad];
  __shared__ __align__(32) __half b_tile[kBN][kBK + kPad];
  __shared__ __align__(32) float c_tile[kBM][kBN + 4];
  const int tid = threadIdx.x, warp = tid / 32;
  const int wm = warp / 2, wn = warp % 2;
  const int64_t row0 = blockIdx.x * static_cast<int64_t>(kBN);
  const int64_t tok0 = blockIdx.y * static_cast<int64_t>(kBM);
  const int64_t K = w.cols;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> c[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(c[i][j], 0.f);

  const int lr = tid / 2, lk = (tid % 2) * 16;  // this thread's 16 values of each tile
  for (int64_t k0 = 0; k0 < K; k0 += kBK) {
    const int64_t tok = tok0 + lr;
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      const int64_t k = k0 + lk + i;
      a_tile[lr][lk + i] = __float2half_rn(tok < n_tokens && k < K ? x[tok * ldx + k] : 0.f);
    }
    load_weight_16<FMT>(w, row0 + lr, k0 + lk, &b_tile[lr][lk]);
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> b[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(a[i], &a_tile[wm * 32 + i * 16][kk], kBK + kPad);
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(b[j], &b_tile[wn * 32 + j * 16][kk], kBK + kPad);
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::mma_sync(c[i][j], a[i], b[j], c[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(&c_tile[wm * 32 + i * 16][wn * 32 + j * 16], c[i][j], kBN + 4,
                              wmma::mem_row_major);
  __syncthreads();
  for (int e = tid; e < kBM * kBN; e += kGemmThreads) {
    const int m = e / kBN, n = e % kBN;
    const int64_t tok = tok0 + m, r = row0 + n;
    if (tok < n_tokens && r < w.rows) y[tok * ldy + r] = c_tile[m][n];
  }
}

// The large-prompt gemm for MLX weights: 128 tokens x 128 rows per block,
// 8 warps of 64x32, and the next k-tile's global loads (activations as
// float4, packed weights as one 8- or 16-byte load, one scale and bias)
// issued before the current tile's tensor-core work, so memory latency
// hides behind the mma.
constexpr int kBigM = 128, kBigN = 128, kBigK = 32, kBigThreads = 256;

template <int FMT>
__global__ void __launch_bounds__(kBigThreads)
    gemm_big_kernel(GpuWeight w, const float* __restrict__ x, int64_t ldx, int64_t n_tokens,
                    float* y, int64_t ldy) {
  using namespace nvcuda;
  __shared__ __align__(32) __half a_tile[kBigM][kBigK + kPad];
  __shared__ __align__(32) __half b_tile[kBigN][kBigK + kPad];
  __shared__ __align__(32) float staging[8][16][16 + 4];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int wm = warp / 4, wn = warp % 4;  // 2 x 4 warps of 64 tokens x 32 rows
  const int64_t row0 = blockIdx.x * static_cast<int64_t>(kBigN);
  const int64_t tok0 = blockIdx.y * static_cast<int64_t>(kBigM);
  const int64_t K = w.cols;
  const int lr = tid / 2, lk = (tid % 2) * 16;
  const int64_t tok = tok0 + lr, wrow = row0 + lr;
  const bool tok_ok = tok < n_tokens, row_ok = wrow < w.rows;
  const float* xrow = x + (tok_ok ? tok : 0) * ldx;
  const uint8_t* wdata = w.data + (row_ok ? wrow : 0) * w.row_bytes();
  const int64_t n_groups = K / w.group_size;

  float4 a_reg[4];
  uint4 b_reg;
  float s_reg = 0.f, b_bias = 0.f;
  auto load = [&](int64_t k0) {
    const int64_t k = k0 + lk;
#pragma unroll
    for (int i = 0; i < 4; ++i)
      a_reg[i] = tok_ok ? __ldg(reinterpret_cast<const float4*>(xrow + k) + i) : make_float4(0, 0, 0, 0);
    if (row_ok) {
      if constexpr (FMT == kAffine4) {
        const uint2 v = __ldg(reinterpret_cast<const uint2*>(wdata + k / 2));
        b_reg = make_uint4(v.x, v.y, 0, 0);
      } else {
        b_reg = __ldg(reinterpret_cast<const uint4*>(wdata + k));
      }
      const int64_t g = wrow * n_groups + k / w.group_size;
      s_reg = load_scale(w.scales, w.scale_type, g);
      b_bias = load_scale(w.biases, w.scale_type, g);
    } else {
      b_reg = make_uint4(0, 0, 0, 0);
      s_reg = b_bias = 0.f;
    }
  };
  auto store = [&]() {
    __half* a = &a_tile[lr][lk];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      a[4 * i + 0] = __float2half_rn(a_reg[i].x);
      a[4 * i + 1] = __float2half_rn(a_reg[i].y);
      a[4 * i + 2] = __float2half_rn(a_reg[i].z);
      a[4 * i + 3] = __float2half_rn(a_reg[i].w);
    }
    __half* b = &b_tile[lr][lk];
    const uint32_t ws[4] = {b_reg.x, b_reg.y, b_reg.z, b_reg.w};
    if constexpr (FMT == kAffine4) {
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j)
          b[i * 8 + j] = __float2half_rn(fmaf(s_reg, static_cast<float>((ws[i] >> (4 * j)) & 0xFu), b_bias));
    } else {
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
          b[i * 4 + j] = __float2half_rn(fmaf(s_reg, static_cast<float>((ws[i] >> (8 * j)) & 0xFFu), b_bias));
    }
  };

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> c[4][2];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(c[i][j], 0.f);
  load(0);
  for (int64_t k0 = 0; k0 < K; k0 += kBigK) {
    store();
    __syncthreads();
    if (k0 + kBigK < K) load(k0 + kBigK);
#pragma unroll
    for (int kk = 0; kk < kBigK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a[4];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> b[2];
#pragma unroll
      for (int i = 0; i < 4; ++i) wmma::load_matrix_sync(a[i], &a_tile[wm * 64 + i * 16][kk], kBigK + kPad);
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(b[j], &b_tile[wn * 32 + j * 16][kk], kBigK + kPad);
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::mma_sync(c[i][j], a[i], b[j], c[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      wmma::store_matrix_sync(&staging[warp][0][0], c[i][j], 16 + 4, wmma::mem_row_major);
      __syncwarp();
      const int64_t t0 = tok0 + wm * 64 + i * 16, r0 = row0 + wn * 32 + j * 16;
      for (int e = lane; e < 256; e += 32) {
        const int m = e / 16, n = e % 16;
        if (t0 + m < n_tokens && r0 + n < w.rows) y[(t0 + m) * ldy + r0 + n] = staging[warp][m][n];
      }
      __syncwarp();
    }
  }
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace

int multiprocessor_count() {
  static const int n = [] {
    int dev = 0, sms = 0;
    PENSIEVE_CUDA_CHECK(cudaGetDevice(&dev));
    PENSIEVE_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    return sms;
  }();
  return n;
}

bool matmul_silu(const GpuWeight& w, const float* gu, int64_t n_tokens, float* y, int64_t ldy,
                 cudaStream_t stream) {
  const bool quant = w.format == kAffine4 || w.format == kAffine8;
  const int v = w.format == kAffine4 ? values_per_load<kAffine4>() : values_per_load<kAffine8>();
  if (!quant || n_tokens < 1 || n_tokens > kGemvBatchTokens || w.cols % v != 0 || !aligned16(w.data) ||
      w.row_bytes() % 16 != 0 || !aligned16(gu) || w.cols % 4 != 0)
    return false;
  if (n_tokens > kGemvMaxTokens) {
    for (int64_t t0 = 0; t0 < n_tokens; t0 += kGemvMaxTokens)
      matmul_silu(w, gu + t0 * 2 * w.cols, std::min<int64_t>(kGemvMaxTokens, n_tokens - t0),
                  y + t0 * ldy, ldy, stream);
    return true;
  }
  if (gemv_q4(w, GemvIo{.x = gu, .ldx = 2 * w.cols, .y = y, .ldy = ldy}, n_tokens, kGemvSilu, false, stream))
    return true;
  if (w.format == kAffine4) launch_gemv<kAffine4, true>(w, gu, 2 * w.cols, n_tokens, y, ldy, stream);
  else launch_gemv<kAffine8, true>(w, gu, 2 * w.cols, n_tokens, y, ldy, stream);
  PENSIEVE_CUDA_LAUNCHED("gemv silu");
  return true;
}

void matmul(const GpuWeight& w, const float* x, int64_t ldx, int64_t n_tokens, float* y,
            int64_t ldy, cudaStream_t stream) {
  if (n_tokens == 0 || w.rows == 0) return;
  if (n_tokens > kGemvMaxTokens && n_tokens <= kGemvBatchTokens &&
      (w.format == kAffine4 || w.format == kAffine8)) {
    // Many streams decoding (9-32 rows): the gemv over groups of 8 rows
    // reads the weight once a group, where the tile gemm's few blocks of
    // 64 rows (a few hundred for a 3072-wide model) wait on their loads.
    for (int64_t t0 = 0; t0 < n_tokens; t0 += kGemvMaxTokens)
      matmul(w, x + t0 * ldx, ldx, std::min<int64_t>(kGemvMaxTokens, n_tokens - t0), y + t0 * ldy,
             ldy, stream);
    return;
  }
  if (n_tokens <= kGemvMaxTokens) {
    if (gemv_q4(w, GemvIo{.x = x, .ldx = ldx, .y = y, .ldy = ldy}, n_tokens, kGemvPlain, false, stream)) return;
    int v = 0;
    switch (w.format) {
      case kAffine4: v = values_per_load<kAffine4>(); break;
      case kAffine8: v = values_per_load<kAffine8>(); break;
      case kF32: v = values_per_load<kF32>(); break;
      default: v = values_per_load<kF16>(); break;
    }
    // 16-byte loads need whole loads per row, aligned rows and aligned x rows.
    const bool vector = w.cols % v == 0 && aligned16(w.data) && (w.row_bytes() % 16) == 0 &&
                        aligned16(x) && (ldx % 4) == 0;
    if (vector) {
      switch (w.format) {
        case kAffine4: launch_gemv<kAffine4>(w, x, ldx, n_tokens, y, ldy, stream); break;
        case kAffine8: launch_gemv<kAffine8>(w, x, ldx, n_tokens, y, ldy, stream); break;
        case kF32: launch_gemv<kF32>(w, x, ldx, n_tokens, y, ldy, stream); break;
        case kF16: launch_gemv<kF16>(w, x, ldx, n_tokens, y, ldy, stream); break;
        default: launch_gemv<kBF16>(w, x, ldx, n_tokens, y, ldy, stream); break;
      }
    } else {
      gemv_any_kernel<<<blocks_for(w.rows, kGemvWarps), kGemvWarps * 32, 0, stream>>>(
          w, x, ldx, n_tokens, y, ldy);
    }
    PENSIEVE_CUDA_LAUNCHED("gemv");
    return;
  }
  // Many tokens of an MLX weight: the pipelined 128x128 kernel (it needs
  // 16-byte aligned activation rows; quantized widths are whole groups).
  const bool big = n_tokens >= 128 && (w.format == kAffine4 || w.format == kAffine8) &&
                   aligned16(x) && ldx % 4 == 0 && aligned16(w.data) && w.row_bytes() % 16 == 0;
  if (big) {
    const dim3 g(blocks_for(w.rows, kBigN), blocks_for(n_tokens, kBigM));
    if (w.format == kAffine4) gemm_big_kernel<kAffine4><<<g, kBigThreads, 0, stream>>>(w, x, ldx, n_tokens, y, ldy);
    else gemm_big_kernel<kAffine8><<<g, kBigThreads, 0, stream>>>(w, x, ldx, n_tokens, y, ldy);
    PENSIEVE_CUDA_LAUNCHED("gemm_big");
    return;
  }
  const dim3 grid(blocks_for(w.rows, kBN), blocks_for(n_tokens, kBM));
  switch (w.format) {
    case kAffine4: gemm_kernel<kAffine4><<<grid, kGemmThreads, 0, stream>>>(w, x, ldx, n_tokens, y, ldy); break;
    case kAffine8: gemm_kernel<kAffine8><<<grid, kGemmThreads, 0, stream>>>(w, x, ldx, n_tokens, y, ldy); break;
    default: gemm_kernel<kF32><<<grid, kGemmThreads, 0, stream>>>(w, x, ldx, n_tokens, y, ldy); break;
  }
  PENSIEVE_CUDA_LAUNCHED("gemm");
}

}  // namespace pensieve::cuda
