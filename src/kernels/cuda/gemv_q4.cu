// Decode's gemv for 4-bit MLX weights on integer dot products.
//
// Each block first stages x (up to 8 tokens) in shared memory as two int8
// levels per 32 columns, as the CPU's integer kernels do
// (kernels/cpu/matmul_impl.h):
//   x ≈ d·(254·q1 + q2),  d = max|x| / (127·254),  q1, q2 in [-127, 127],
// with Σx kept exactly. A row's 16-byte load is 32 nibbles of one weight
// group, so for each load and token
//   Σ (s·n + b)·x = s·d·(254·Σ n·q1 + Σ n·q2) + b·Σx,
// where the two sums are 8 dp4a each on the nibbles masked in place (the
// even ones with 0x0F0F0F0F, the odd ones after a 4-bit shift; x's bytes are
// staged in that order). Per weight this is about one instruction, against
// the five or more of dequantizing to f32 (whose int-to-float conversions
// run at an eighth of the FMA rate): the f32 gemv was bound by its
// instructions at a quarter of the memory bandwidth.
//
// Each warp walks (row, chunk of up to 4096 columns) units with the next
// unit's loads (and scales) in flight while it computes the current one;
// the grid is sized so every warp has the same number of rows and the card
// holds every block at once. The kernel is launched as a programmatic
// dependent: its first weights are loaded (and the rest asked into L2)
// while the kernel before it, which writes x, still runs.
#include <algorithm>
#include <cstdlib>

#include "kernels/cuda/kernels.h"

namespace pensieve::cuda {
namespace {

constexpr int kQ4Warps = 8;
constexpr int kQ4Loads = 4;  // 16-byte loads per lane and row per chunk
constexpr size_t kQ4MaxSmem = 200 * 1024;

// Round to nearest even for |v| < 2^22 without the conversion unit.
__device__ __forceinline__ int rint_small(float v) {
  return __float_as_int(v + 12582912.f) - 0x4B400000;
}

__device__ __forceinline__ uint32_t pack4(int a, int b, int c, int d) {
  return (static_cast<uint32_t>(a) & 0xFFu) | ((static_cast<uint32_t>(b) & 0xFFu) << 8) |
         ((static_cast<uint32_t>(c) & 0xFFu) << 16) | (static_cast<uint32_t>(d) << 24);
}

// One token's x (cols values; SILU: silu of the first cols times the next
// cols) into q[4][nblk] (pieces: q1 of words 0-1, q1 of words 2-3, q2 of
// words 0-1, q2 of words 2-3; each word's bytes even values first) and
// ds[nblk] = (d, Σx). Four threads per 32-column block, 8 values each; the
// whole block's threads take part.
template <bool SILU>
__device__ void stage_x(const float* __restrict__ x, int cols, uint4* q, float2* ds, int nblk) {
  const int n8 = cols / 8;
  for (int e0 = 0; e0 < n8; e0 += blockDim.x) {
    const int e = e0 + static_cast<int>(threadIdx.x);
    const bool ok = e < n8;
    float v[8];
    float4 a = make_float4(0.f, 0.f, 0.f, 0.f), b = a;
    if (ok) {
      a = __ldg(reinterpret_cast<const float4*>(x) + 2 * e);
      b = __ldg(reinterpret_cast<const float4*>(x) + 2 * e + 1);
      if constexpr (SILU) {
        a = silu_mul4(a, __ldg(reinterpret_cast<const float4*>(x + cols) + 2 * e));
        b = silu_mul4(b, __ldg(reinterpret_cast<const float4*>(x + cols) + 2 * e + 1));
      }
    }
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
    float m = 0.f, s = 0.f;
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      m = fmaxf(m, fabsf(v[k]));
      s += v[k];
    }
    // The four threads of a block are consecutive lanes (e % 4 is the word).
    m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
    m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
    s += __shfl_xor_sync(0xffffffffu, s, 1);
    s += __shfl_xor_sync(0xffffffffu, s, 2);
    if (!ok) continue;
    const float inv1 = m > 0.f ? 127.f / m : 0.f;  // x to q1 steps
    const float inv2 = inv1 * 254.f;               // x to q2 steps (d)
    int q1[8], q2[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      q1[k] = rint_small(v[k] * inv1);
      q2[k] = rint_small(fmaf(v[k], inv2, -254.f * static_cast<float>(q1[k])));
    }
    const int blk = e / 4, word = e % 4;
    uint2* p1 = reinterpret_cast<uint2*>(&q[(word / 2) * nblk + blk]) + (word % 2);
    uint2* p2 = reinterpret_cast<uint2*>(&q[(2 + word / 2) * nblk + blk]) + (word % 2);
    *p1 = make_uint2(pack4(q1[0], q1[2], q1[4], q1[6]), pack4(q1[1], q1[3], q1[5], q1[7]));
    *p2 = make_uint2(pack4(q2[0], q2[2], q2[4], q2[6]), pack4(q2[1], q2[3], q2[5], q2[7]));
    if (word == 0) ds[blk] = make_float2(m / (127.f * 254.f), s);
  }
}

template <int T, bool SILU>
__global__ void __launch_bounds__(kQ4Warps * 32)
    gemv_q4_kernel(GpuWeight w, const float* __restrict__ x, int64_t ldx, float* __restrict__ y,
                   int64_t ldy, int rows_per_warp) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int cols = static_cast<int>(w.cols);
  const int nblk = cols / 32;
  uint4* xq = reinterpret_cast<uint4*>(smem);                // [T][4][nblk]
  float2* xds = reinterpret_cast<float2*>(xq + T * 4 * nblk);  // [T][nblk]
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kQ4Warps;
  const int blocks_per_group = w.group_size / 32;
  const int64_t n_groups = w.cols / w.group_size;
  const int nchunk = (nblk + 32 * kQ4Loads - 1) / (32 * kQ4Loads);

  uint4 cur[kQ4Loads], nxt[kQ4Loads];
  float cur_s[kQ4Loads], cur_b[kQ4Loads], nxt_s[kQ4Loads], nxt_b[kQ4Loads];
  auto fetch = [&](int64_t r, int chunk, uint4 (&raw)[kQ4Loads], float (&sc)[kQ4Loads],
                   float (&bi)[kQ4Loads]) {
    const uint4* rowp = reinterpret_cast<const uint4*>(w.data + r * (w.cols / 2));
#pragma unroll
    for (int p = 0; p < kQ4Loads; ++p) {
      const int b = (chunk * kQ4Loads + p) * 32 + lane;
      raw[p] = make_uint4(0, 0, 0, 0);
      sc[p] = bi[p] = 0.f;
      if (b < nblk) {
        raw[p] = __ldg(rowp + b);
        const int64_t g = r * n_groups + b / blocks_per_group;
        sc[p] = load_scale(w.scales, w.scale_type, g);
        bi[p] = load_scale(w.biases, w.scale_type, g);
      }
    }
  };

  int64_t row = blockIdx.x * static_cast<int64_t>(kQ4Warps) + warp;
  int64_t last_row = row + static_cast<int64_t>(rows_per_warp - 1) * stride;
  if (last_row >= w.rows) last_row = w.rows - 1;
  int chunk = 0;
  // Only weights are read before pdl_wait(): launched as a dependent, this
  // runs while the kernel that writes x finishes. The first unit goes to
  // registers, the rest of the warp's rows are asked into L2.
  if (row < w.rows) fetch(row, 0, cur, cur_s, cur_b);
  for (int64_t r = row; r <= last_row; r += stride) {
    const char* rowp = reinterpret_cast<const char*>(w.data + r * (w.cols / 2));
    for (int64_t off = (r == row ? 32 * kQ4Loads * 16 : 0) + lane * 128; off < w.cols / 2; off += 32 * 128)
      asm volatile("prefetch.global.L2 [%0];" ::"l"(rowp + off));
  }
  pdl_wait();
#pragma unroll
  for (int t = 0; t < T; ++t) stage_x<SILU>(x + t * ldx, cols, xq + t * 4 * nblk, xds + t * nblk, nblk);
  __syncthreads();

  float acc[T];
#pragma unroll
  for (int t = 0; t < T; ++t) acc[t] = 0.f;
  while (row <= last_row) {
    // The next unit's loads go out before this one is used.
    const bool row_done = chunk + 1 == nchunk;
    const int64_t next_row = row_done ? row + stride : row;
    const int next_chunk = row_done ? 0 : chunk + 1;
    if (next_row <= last_row) fetch(next_row, next_chunk, nxt, nxt_s, nxt_b);
#pragma unroll
    for (int p = 0; p < kQ4Loads; ++p) {
      const int b = (chunk * kQ4Loads + p) * 32 + lane;
      if (b >= nblk) continue;
      const uint32_t words[4] = {cur[p].x, cur[p].y, cur[p].z, cur[p].w};
      int lo[4], hi[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        lo[i] = static_cast<int>(words[i] & 0x0F0F0F0Fu);
        hi[i] = static_cast<int>((words[i] >> 4) & 0x0F0F0F0Fu);
      }
#pragma unroll
      for (int t = 0; t < T; ++t) {
        const uint4* xt = xq + t * 4 * nblk + b;
        const uint4 a0 = xt[0], a1 = xt[nblk], c0 = xt[2 * nblk], c1 = xt[3 * nblk];
        int s1 = __dp4a(lo[0], static_cast<int>(a0.x), 0);
        s1 = __dp4a(hi[0], static_cast<int>(a0.y), s1);
        s1 = __dp4a(lo[1], static_cast<int>(a0.z), s1);
        s1 = __dp4a(hi[1], static_cast<int>(a0.w), s1);
        s1 = __dp4a(lo[2], static_cast<int>(a1.x), s1);
        s1 = __dp4a(hi[2], static_cast<int>(a1.y), s1);
        s1 = __dp4a(lo[3], static_cast<int>(a1.z), s1);
        s1 = __dp4a(hi[3], static_cast<int>(a1.w), s1);
        int s2 = __dp4a(lo[0], static_cast<int>(c0.x), 0);
        s2 = __dp4a(hi[0], static_cast<int>(c0.y), s2);
        s2 = __dp4a(lo[1], static_cast<int>(c0.z), s2);
        s2 = __dp4a(hi[1], static_cast<int>(c0.w), s2);
        s2 = __dp4a(lo[2], static_cast<int>(c1.x), s2);
        s2 = __dp4a(hi[2], static_cast<int>(c1.y), s2);
        s2 = __dp4a(lo[3], static_cast<int>(c1.z), s2);
        s2 = __dp4a(hi[3], static_cast<int>(c1.w), s2);
        const float2 ds = xds[t * nblk + b];
        // |254·s1 + s2| < 2^24: exact in f32.
        acc[t] = fmaf(cur_s[p] * ds.x, static_cast<float>(254 * s1 + s2), fmaf(cur_b[p], ds.y, acc[t]));
      }
    }
    if (row_done) {
#pragma unroll
      for (int t = 0; t < T; ++t) {
        const float s = warp_sum(acc[t]);
        if (lane == 0) y[t * ldy + row] = s;
        acc[t] = 0.f;
      }
    }
    row = next_row;
    chunk = next_chunk;
#pragma unroll
    for (int p = 0; p < kQ4Loads; ++p) {
      cur[p] = nxt[p];
      cur_s[p] = nxt_s[p];
      cur_b[p] = nxt_b[p];
    }
  }
}

// Launched as a programmatic dependent of the kernel before (sm_90) unless
// PENSIEVE_CUDA_PDL=0 (read at every launch outside a graph replay).
bool pdl_enabled() {
  const char* e = std::getenv("PENSIEVE_CUDA_PDL");
  return e == nullptr || e[0] != '0';
}

// Blocks of one kernel the card holds at once with this much shared memory
// (the attribute set and the occupancy asked once per kernel and size).
template <int T, bool SILU>
void launch(const GpuWeight& w, const float* x, int64_t ldx, float* y, int64_t ldy, size_t smem,
            cudaStream_t stream) {
  auto kernel = gemv_q4_kernel<T, SILU>;
  static bool configured = false;
  static int per_sm = 0;
  static size_t per_sm_smem = 0;
  if (!configured) {
    PENSIEVE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             static_cast<int>(kQ4MaxSmem)));
    configured = true;
  }
  if (per_sm_smem != smem) {
    PENSIEVE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kQ4Warps * 32, smem));
    per_sm_smem = smem;
  }
  // Every warp gets the same number of rows, as few as lets the whole grid
  // be resident (each block stages x once, so fewer blocks stage less).
  const int64_t resident_warps = static_cast<int64_t>(multiprocessor_count()) * std::max(per_sm, 1) * kQ4Warps;
  const int64_t rows_per_warp = (w.rows + resident_warps - 1) / resident_warps;
  const auto grid = blocks_for(w.rows, kQ4Warps * rows_per_warp);
  const int rpw = static_cast<int>(rows_per_warp);
  if (!pdl_enabled()) {
    kernel<<<grid, kQ4Warps * 32, smem, stream>>>(w, x, ldx, y, ldy, rpw);
    return;
  }
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(grid);
  cfg.blockDim = dim3(kQ4Warps * 32);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  PENSIEVE_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, w, x, ldx, y, ldy, rpw));
}

template <bool SILU>
void launch_t(const GpuWeight& w, const float* x, int64_t ldx, int64_t n_tokens, float* y, int64_t ldy,
              size_t smem, cudaStream_t stream) {
  switch (n_tokens) {
#define PENSIEVE_Q4_CASE(T) \
  case T: launch<T, SILU>(w, x, ldx, y, ldy, smem, stream); break;
    PENSIEVE_Q4_CASE(1)
    PENSIEVE_Q4_CASE(2)
    PENSIEVE_Q4_CASE(3)
    PENSIEVE_Q4_CASE(4)
    PENSIEVE_Q4_CASE(5)
    PENSIEVE_Q4_CASE(6)
    PENSIEVE_Q4_CASE(7)
    PENSIEVE_Q4_CASE(8)
#undef PENSIEVE_Q4_CASE
    default: throw Error(ErrorKind::internal, "gemv_q4: " + std::to_string(n_tokens) + " tokens");
  }
}

}  // namespace

bool gemv_q4_enabled() {
  const char* e = std::getenv("PENSIEVE_CUDA_GEMV_Q4");
  return e == nullptr || e[0] != '0';
}

bool gemv_q4(const GpuWeight& w, const float* x, int64_t ldx, int64_t n_tokens, float* y, int64_t ldy,
             bool silu, cudaStream_t stream) {
  const auto aligned16 = [](const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; };
  if (w.format != kAffine4 || n_tokens < 1 || n_tokens > kGemvMaxTokens || w.group_size % 32 != 0 ||
      w.cols % w.group_size != 0 || w.cols > (1 << 24) || !aligned16(w.data) || !aligned16(x) ||
      ldx % 4 != 0 || !gemv_q4_enabled())
    return false;
  const size_t smem = static_cast<size_t>(n_tokens) * static_cast<size_t>(w.cols / 32) * (64 + 8);
  if (smem > kQ4MaxSmem) return false;
  if (silu) launch_t<true>(w, x, ldx, n_tokens, y, ldy, smem, stream);
  else launch_t<false>(w, x, ldx, n_tokens, y, ldy, smem, stream);
  PENSIEVE_CUDA_LAUNCHED("gemv_q4");
  return true;
}

}  // namespace pensieve::cuda
