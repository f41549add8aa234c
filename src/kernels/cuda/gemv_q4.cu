// Decode's gemv for 4-bit MLX weights on integer dot products.
//
// x (up to 8 tokens) is staged in shared memory as two int8 levels per 32
// columns, as the CPU's integer kernels can (kernels/cpu/matmul_impl.h):
//   x ≈ d·(254·q1 + q2),  d = max|x| / (127·254),  q1, q2 in [-127, 127],
// with Σx kept exactly. Each block quantizes all of x itself (run 8's ncu:
// about as many instructions as the dot products; run 9 measured x
// quantized once per gemv by a small kernel no faster, since with
// dependent launches the blocks' quantization overlaps the kernel before). A row's 16-byte load is 32 nibbles of one weight
// group, so for each load and token
//   Σ (s·n + b)·x = s·d·(254·Σ n·q1 + Σ n·q2) + b·Σx,
// where the two sums are 8 dp4a each on the nibbles masked in place (the
// even ones with 0x0F0F0F0F, the odd ones after a 4-bit shift; x's bytes are
// staged in that order). Per weight this is about one instruction, against
// the five or more of dequantizing to f32 (whose int-to-float conversions
// run at an eighth of the FMA rate).
//
// Each warp owns a run of consecutive rows and takes them two at a time,
// both rows' loads in flight together and each staged x vector serving
// both; the group index is a shift and the scale type a template parameter
// (a run-time division and a switch per load were most of the instructions
// before). The grid is sized so that every block is resident at once. The
// gemv is launched as a programmatic dependent: its first weights are
// loaded (and the rest of its rows asked into L2) while the kernel before
// it, which writes x, still runs.
#include <algorithm>
#include <cstdlib>

#include "kernels/cuda/kernels.h"

namespace pensieve::cuda {
namespace {

constexpr int kQ4Warps = 8;
constexpr int kPairLoads = 2;  // 16-byte loads per lane and row per chunk (both rows' in flight at once)
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
template <int IN>
__device__ void stage_x(const float* __restrict__ x, int cols, uint4* q, float2* ds, int nblk,
                        const float* __restrict__ norm_w, float inv_rms) {
  const int n8 = cols / 8;
  for (int e0 = 0; e0 < n8; e0 += blockDim.x) {
    const int e = e0 + static_cast<int>(threadIdx.x);
    const bool ok = e < n8;
    float v[8];
    float4 a = make_float4(0.f, 0.f, 0.f, 0.f), b = a;
    if (ok) {
      a = __ldg(reinterpret_cast<const float4*>(x) + 2 * e);
      b = __ldg(reinterpret_cast<const float4*>(x) + 2 * e + 1);
      if constexpr (IN == kGemvSilu) {
        a = silu_mul4(a, __ldg(reinterpret_cast<const float4*>(x + cols) + 2 * e));
        b = silu_mul4(b, __ldg(reinterpret_cast<const float4*>(x + cols) + 2 * e + 1));
      } else if constexpr (IN == kGemvNorm) {
        // As rms_norm computes it: w · (x · inv).
        const float4 wa = __ldg(reinterpret_cast<const float4*>(norm_w) + 2 * e);
        const float4 wb = __ldg(reinterpret_cast<const float4*>(norm_w) + 2 * e + 1);
        a = make_float4(wa.x * (a.x * inv_rms), wa.y * (a.y * inv_rms), wa.z * (a.z * inv_rms), wa.w * (a.w * inv_rms));
        b = make_float4(wb.x * (b.x * inv_rms), wb.y * (b.y * inv_rms), wb.z * (b.z * inv_rms), wb.w * (b.w * inv_rms));
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

// Two rows at a time: each warp owns a run of consecutive rows and takes
// them in pairs, both rows' loads in flight together, and every staged x
// vector read from shared memory serves both rows. The group of a 32-column
// block is its index shifted (group sizes are powers of two), in 32-bit
// arithmetic from the row's first group.
template <int T, int IN, bool ACC, int ST>
__global__ void __launch_bounds__(kQ4Warps * 32, T == 1 ? 4 : T == 2 ? 3 : 2)
    gemv_q4_pair_kernel(GpuWeight w, GemvIo io, int rows_per_warp, int group_shift) {
  const float* __restrict__ x = io.x;
  const int64_t ldx = io.ldx;
  float* __restrict__ y = io.y;
  const int64_t ldy = io.ldy;
  extern __shared__ __align__(16) unsigned char smem[];
  const int cols = static_cast<int>(w.cols);
  const int nblk = cols / 32;
  uint4* xq = reinterpret_cast<uint4*>(smem);                  // [T][4][nblk]
  float2* xds = reinterpret_cast<float2*>(xq + T * 4 * nblk);  // [T][nblk]
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t r_begin = (static_cast<int64_t>(blockIdx.x) * kQ4Warps + warp) * rows_per_warp;
  const int64_t r_end = min(r_begin + rows_per_warp, w.rows);
  const int n_groups = nblk >> group_shift;
  const int nchunk = (nblk + 32 * kPairLoads - 1) / (32 * kPairLoads);
  const int64_t row_bytes = cols / 2;

  // A warp with one row left computes its second slot on zeros.
  uint4 raw0[kPairLoads] = {}, raw1[kPairLoads] = {};
  float s0[kPairLoads] = {}, b0[kPairLoads] = {}, s1[kPairLoads] = {}, b1[kPairLoads] = {};
  auto fetch = [&](int64_t r, int chunk, uint4 (&raw)[kPairLoads], float (&sc)[kPairLoads], float (&bi)[kPairLoads]) {
    const uint4* rowp = reinterpret_cast<const uint4*>(w.data + r * row_bytes);
    const int64_t g0 = r * n_groups;
#pragma unroll
    for (int p = 0; p < kPairLoads; ++p) {
      const int b = (chunk * kPairLoads + p) * 32 + lane;
      raw[p] = make_uint4(0, 0, 0, 0);
      sc[p] = bi[p] = 0.f;
      if (b < nblk) {
        raw[p] = __ldg(rowp + b);
        sc[p] = scale_at<ST>(w.scales, g0 + (b >> group_shift));
        bi[p] = scale_at<ST>(w.biases, g0 + (b >> group_shift));
      }
    }
  };

  // Weights only before pdl_wait(): the first pair to registers, the rest of
  // the warp's rows (contiguous bytes) asked into L2.
  if (r_begin < r_end) {
    fetch(r_begin, 0, raw0, s0, b0);
    if (r_begin + 1 < r_end) fetch(r_begin + 1, 0, raw1, s1, b1);
    const char* first = reinterpret_cast<const char*>(w.data) + r_begin * row_bytes;
    const int64_t skip = nchunk == 1 ? 2 * row_bytes : 32 * kPairLoads * 16;
    for (int64_t off = skip + lane * 128; off < (r_end - r_begin) * row_bytes; off += 32 * 128)
      asm volatile("prefetch.global.L2 [%0];" ::"l"(first + off));
  }
  pdl_wait();
  pdl_trigger();
  // Norm: each token's 1/rms over its whole row first (every block alike).
  float inv_rms[T];
#pragma unroll
  for (int t = 0; t < T; ++t) inv_rms[t] = 1.f;
  if constexpr (IN == kGemvNorm) {
    __shared__ float partial[kQ4Warps][T];
    float ss[T];
#pragma unroll
    for (int t = 0; t < T; ++t) {
      ss[t] = 0.f;
      for (int c = threadIdx.x * 4; c < cols; c += blockDim.x * 4) {
        const float4 v = __ldg(reinterpret_cast<const float4*>(x + t * ldx + c));
        ss[t] += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
      }
      ss[t] = warp_sum(ss[t]);
      if (lane == 0) partial[warp][t] = ss[t];
    }
    __syncthreads();
#pragma unroll
    for (int t = 0; t < T; ++t) {
      float total = 0.f;
#pragma unroll
      for (int k = 0; k < kQ4Warps; ++k) total += partial[k][t];
      inv_rms[t] = rsqrtf(total / static_cast<float>(cols) + io.eps);
    }
  }
#pragma unroll
  for (int t = 0; t < T; ++t)
    stage_x<IN>(x + t * ldx, cols, xq + t * 4 * nblk, xds + t * nblk, nblk, io.norm_w, inv_rms[t]);
  __syncthreads();

  for (int64_t r = r_begin; r < r_end; r += 2) {
    const bool two = r + 1 < r_end;
    float acc0[T], acc1[T];
#pragma unroll
    for (int t = 0; t < T; ++t) acc0[t] = acc1[t] = 0.f;
    for (int chunk = 0; chunk < nchunk; ++chunk) {
      if (r != r_begin || chunk != 0) {
        fetch(r, chunk, raw0, s0, b0);
        if (two) fetch(r + 1, chunk, raw1, s1, b1);
      }
#pragma unroll
      for (int p = 0; p < kPairLoads; ++p) {
        const int b = (chunk * kPairLoads + p) * 32 + lane;
        if (b >= nblk) continue;
        int lo0[4], hi0[4], lo1[4], hi1[4];
        {
          const uint32_t w0[4] = {raw0[p].x, raw0[p].y, raw0[p].z, raw0[p].w};
          const uint32_t w1[4] = {raw1[p].x, raw1[p].y, raw1[p].z, raw1[p].w};
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            lo0[i] = static_cast<int>(w0[i] & 0x0F0F0F0Fu);
            hi0[i] = static_cast<int>((w0[i] >> 4) & 0x0F0F0F0Fu);
            lo1[i] = static_cast<int>(w1[i] & 0x0F0F0F0Fu);
            hi1[i] = static_cast<int>((w1[i] >> 4) & 0x0F0F0F0Fu);
          }
        }
#pragma unroll
        for (int t = 0; t < T; ++t) {
          const uint4* xt = xq + t * 4 * nblk + b;
          const uint4 a0 = xt[0], a1 = xt[nblk], c0 = xt[2 * nblk], c1 = xt[3 * nblk];
          const int xa[8] = {static_cast<int>(a0.x), static_cast<int>(a0.y), static_cast<int>(a0.z),
                             static_cast<int>(a0.w), static_cast<int>(a1.x), static_cast<int>(a1.y),
                             static_cast<int>(a1.z), static_cast<int>(a1.w)};
          const int xc[8] = {static_cast<int>(c0.x), static_cast<int>(c0.y), static_cast<int>(c0.z),
                             static_cast<int>(c0.w), static_cast<int>(c1.x), static_cast<int>(c1.y),
                             static_cast<int>(c1.z), static_cast<int>(c1.w)};
          const float2 ds = xds[t * nblk + b];
          int p1 = 0, p2 = 0, q1 = 0, q2 = 0;
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            p1 = __dp4a(hi0[i], xa[2 * i + 1], __dp4a(lo0[i], xa[2 * i], p1));
            p2 = __dp4a(hi0[i], xc[2 * i + 1], __dp4a(lo0[i], xc[2 * i], p2));
            q1 = __dp4a(hi1[i], xa[2 * i + 1], __dp4a(lo1[i], xa[2 * i], q1));
            q2 = __dp4a(hi1[i], xc[2 * i + 1], __dp4a(lo1[i], xc[2 * i], q2));
          }
          // |254·p1 + p2| < 2^24: exact in f32.
          acc0[t] = fmaf(s0[p] * ds.x, static_cast<float>(254 * p1 + p2), fmaf(b0[p], ds.y, acc0[t]));
          acc1[t] = fmaf(s1[p] * ds.x, static_cast<float>(254 * q1 + q2), fmaf(b1[p], ds.y, acc1[t]));
        }
      }
    }
#pragma unroll
    for (int t = 0; t < T; ++t) {
      const float v0 = warp_sum(acc0[t]);
      const float v1 = warp_sum(acc1[t]);
      if (lane == 0) {
        if constexpr (ACC) {  // the residual: y += (v + bias), as add_rms_norm adds
          y[t * ldy + r] += io.bias ? v0 + io.bias[r] : v0;
          if (two) y[t * ldy + r + 1] += io.bias ? v1 + io.bias[r + 1] : v1;
        } else {
          y[t * ldy + r] = v0;
          if (two) y[t * ldy + r + 1] = v1;
        }
      }
    }
  }
}

// --- The streamed gemv (1 to kStreamMaxTokens tokens).
//
// The pair kernel keeps a warp's next loads in registers, so the bytes in
// flight are bounded by registers and occupancy (run 17's ncu: 0.6-1.4
// TB/s, warps waiting on global loads). Here the weight streams through
// shared memory instead: each block owns a contiguous run of 8-row tiles
// (8 rows of packed nibbles, then their scales and biases, each contiguous
// in memory) and one thread keeps a ring of S tiles in flight with bulk
// asynchronous copies (cp.async.bulk, completion counted in bytes on an
// mbarrier per slot), so tens of kilobytes per multiprocessor are always on
// their way whatever the warps do. Each warp takes one row of a tile; x is
// staged once per block as in the pair kernel. The first S tiles are asked
// for before pdl_wait(): the weights do not depend on the kernel before.
constexpr int kStreamRows = 8;  // rows per tile: one per warp
constexpr int kStreamMaxTokens = 4;
constexpr size_t kStreamSmemBudget = 110 * 1024;  // two blocks per multiprocessor

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}"
        : "=r"(done)
        : "r"(smem_addr(bar)), "r"(parity)
        : "memory");
  } while (!done);
}
// bytes (a multiple of 16, both addresses 16-byte aligned) from global to
// shared memory, counted on bar.
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
          smem_addr(dst)),
      "l"(src), "r"(bytes), "r"(smem_addr(bar))
      : "memory");
}

struct StreamLayout {
  int stages = 0;
  uint32_t w_bytes = 0, s_bytes = 0;  // one tile's packed rows; its scales (the biases as many)
  size_t x_bytes = 0, slot_bytes = 0, total = 0;
};

__host__ __device__ inline StreamLayout stream_layout(int64_t rows, int64_t cols, int group_size, int scale_bytes,
                                                      int64_t n_tokens) {
  StreamLayout l;
  l.w_bytes = static_cast<uint32_t>(kStreamRows * (cols / 2));
  l.s_bytes = static_cast<uint32_t>(kStreamRows * (cols / group_size) * scale_bytes);
  l.x_bytes = (static_cast<size_t>(n_tokens) * static_cast<size_t>(cols / 32) * (64 + 8) + 127) / 128 * 128;
  l.slot_bytes = (l.w_bytes + 2 * static_cast<size_t>(l.s_bytes) + 127) / 128 * 128;
  const int64_t n_tiles = rows / kStreamRows;
  const size_t room = kStreamSmemBudget > l.x_bytes + 64 ? kStreamSmemBudget - l.x_bytes - 64 : 0;
  int s = static_cast<int>(room / l.slot_bytes);
  if (s > 8) s = 8;
  if (s > n_tiles) s = static_cast<int>(n_tiles);
  l.stages = s;
  l.total = l.x_bytes + static_cast<size_t>(s) * l.slot_bytes + 8 * 8;
  return l;
}

template <int T, int IN, bool ACC, int ST>
__global__ void __launch_bounds__(kStreamRows * 32, 2)
    gemv_q4_stream_kernel(GpuWeight w, GemvIo io, StreamLayout lay, int group_shift) {
  const float* __restrict__ x = io.x;
  const int64_t ldx = io.ldx;
  float* __restrict__ y = io.y;
  const int64_t ldy = io.ldy;
  extern __shared__ __align__(128) unsigned char smem[];
  const int cols = static_cast<int>(w.cols);
  const int nblk = cols / 32;
  uint4* xq = reinterpret_cast<uint4*>(smem);                  // [T][4][nblk]
  float2* xds = reinterpret_cast<float2*>(xq + T * 4 * nblk);  // [T][nblk]
  unsigned char* slots = smem + lay.x_bytes;
  uint64_t* bars = reinterpret_cast<uint64_t*>(slots + static_cast<size_t>(lay.stages) * lay.slot_bytes);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  constexpr int kScaleSize = ST == kScaleF32 ? 4 : 2;

  // This block's tiles: a contiguous, balanced share.
  const int64_t n_tiles = w.rows / kStreamRows;
  const int64_t t_begin = n_tiles * blockIdx.x / gridDim.x, t_end = n_tiles * (blockIdx.x + 1) / gridDim.x;
  const int64_t my_tiles = t_end - t_begin;
  const int64_t row_bytes = cols / 2;
  const int n_groups = nblk >> group_shift;
  auto issue = [&](int64_t i) {  // tile t_begin + i into slot i % stages (one thread)
    unsigned char* slot = slots + static_cast<size_t>(i % lay.stages) * lay.slot_bytes;
    uint64_t* bar = bars + i % lay.stages;
    const int64_t r0 = (t_begin + i) * kStreamRows;
    mbar_expect_tx(bar, lay.w_bytes + 2 * lay.s_bytes);
    bulk_copy(slot, w.data + r0 * row_bytes, lay.w_bytes, bar);
    bulk_copy(slot + lay.w_bytes, static_cast<const unsigned char*>(w.scales) + r0 * n_groups * kScaleSize,
              lay.s_bytes, bar);
    bulk_copy(slot + lay.w_bytes + lay.s_bytes,
              static_cast<const unsigned char*>(w.biases) + r0 * n_groups * kScaleSize, lay.s_bytes, bar);
  };
  if (threadIdx.x == 0) {
    for (int s = 0; s < lay.stages; ++s) mbar_init(bars + s, 1);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    for (int64_t i = 0; i < lay.stages && i < my_tiles; ++i) issue(i);
  }
  pdl_wait();
  pdl_trigger();
  float inv_rms[T];
#pragma unroll
  for (int t = 0; t < T; ++t) inv_rms[t] = 1.f;
  if constexpr (IN == kGemvNorm) {
    __shared__ float partial[kStreamRows][T];
    float ss[T];
#pragma unroll
    for (int t = 0; t < T; ++t) {
      ss[t] = 0.f;
      for (int c = threadIdx.x * 4; c < cols; c += blockDim.x * 4) {
        const float4 v = __ldg(reinterpret_cast<const float4*>(x + t * ldx + c));
        ss[t] += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
      }
      ss[t] = warp_sum(ss[t]);
      if (lane == 0) partial[warp][t] = ss[t];
    }
    __syncthreads();
#pragma unroll
    for (int t = 0; t < T; ++t) {
      float total = 0.f;
#pragma unroll
      for (int k = 0; k < kStreamRows; ++k) total += partial[k][t];
      inv_rms[t] = rsqrtf(total / static_cast<float>(cols) + io.eps);
    }
  }
#pragma unroll
  for (int t = 0; t < T; ++t)
    stage_x<IN>(x + t * ldx, cols, xq + t * 4 * nblk, xds + t * nblk, nblk, io.norm_w, inv_rms[t]);
  __syncthreads();  // (the barriers' initialization is seen too)

  for (int64_t i = 0; i < my_tiles; ++i) {
    const int slot_i = static_cast<int>(i % lay.stages);
    mbar_wait(bars + slot_i, static_cast<uint32_t>((i / lay.stages) & 1));
    const unsigned char* slot = slots + static_cast<size_t>(slot_i) * lay.slot_bytes;
    const uint4* wrow = reinterpret_cast<const uint4*>(slot) + warp * nblk;
    const auto* sc = reinterpret_cast<const unsigned char*>(slot + lay.w_bytes) + warp * n_groups * kScaleSize;
    const auto* bi = sc + lay.s_bytes;
    auto scale_of = [&](const unsigned char* p, int g) {
      if constexpr (ST == kScaleF32) return reinterpret_cast<const float*>(p)[g];
      else if constexpr (ST == kScaleF16) return __half2float(reinterpret_cast<const __half*>(p)[g]);
      else return __uint_as_float(static_cast<uint32_t>(reinterpret_cast<const unsigned short*>(p)[g]) << 16);
    };
    float acc[T];
#pragma unroll
    for (int t = 0; t < T; ++t) acc[t] = 0.f;
    for (int b = lane; b < nblk; b += 32) {
      const uint4 raw = wrow[b];
      const float s = scale_of(sc, b >> group_shift), bias = scale_of(bi, b >> group_shift);
      const uint32_t wv[4] = {raw.x, raw.y, raw.z, raw.w};
      int lo[4], hi[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        lo[k] = static_cast<int>(wv[k] & 0x0F0F0F0Fu);
        hi[k] = static_cast<int>((wv[k] >> 4) & 0x0F0F0F0Fu);
      }
#pragma unroll
      for (int t = 0; t < T; ++t) {
        const uint4* xt = xq + t * 4 * nblk + b;
        const uint4 a0 = xt[0], a1 = xt[nblk], c0 = xt[2 * nblk], c1 = xt[3 * nblk];
        const int xa[8] = {static_cast<int>(a0.x), static_cast<int>(a0.y), static_cast<int>(a0.z),
                           static_cast<int>(a0.w), static_cast<int>(a1.x), static_cast<int>(a1.y),
                           static_cast<int>(a1.z), static_cast<int>(a1.w)};
        const int xc[8] = {static_cast<int>(c0.x), static_cast<int>(c0.y), static_cast<int>(c0.z),
                           static_cast<int>(c0.w), static_cast<int>(c1.x), static_cast<int>(c1.y),
                           static_cast<int>(c1.z), static_cast<int>(c1.w)};
        const float2 ds = xds[t * nblk + b];
        int p1 = 0, p2 = 0;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          p1 = __dp4a(hi[k], xa[2 * k + 1], __dp4a(lo[k], xa[2 * k], p1));
          p2 = __dp4a(hi[k], xc[2 * k + 1], __dp4a(lo[k], xc[2 * k], p2));
        }
        acc[t] = fmaf(s * ds.x, static_cast<float>(254 * p1 + p2), fmaf(bias, ds.y, acc[t]));
      }
    }
    const int64_t r = (t_begin + i) * kStreamRows + warp;
#pragma unroll
    for (int t = 0; t < T; ++t) {
      const float v = warp_sum(acc[t]);
      if (lane == 0) {
        if constexpr (ACC) y[t * ldy + r] += io.bias ? v + io.bias[r] : v;
        else y[t * ldy + r] = v;
      }
    }
    __syncthreads();  // every warp is done with the slot
    if (threadIdx.x == 0 && i + lay.stages < my_tiles) {
      asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
      issue(i + lay.stages);
    }
  }
}

// PENSIEVE_CUDA_GEMV_STREAM=0: the pair kernel for every token count;
// PENSIEVE_CUDA_GEMV_BPS=N: N blocks of the streamed gemv per multiprocessor (default 2).
bool gemv_stream_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("PENSIEVE_CUDA_GEMV_STREAM");
    return e == nullptr || e[0] != '0';
  }();
  return on;
}
int gemv_stream_blocks_per_sm() {
  static const int n = [] {
    const char* e = std::getenv("PENSIEVE_CUDA_GEMV_BPS");
    const int v = e != nullptr ? std::atoi(e) : 2;
    return v >= 1 && v <= 2 ? v : 2;
  }();
  return n;
}

template <int T, int IN, bool ACC, int ST>
void launch_stream(const GpuWeight& w, const GemvIo& io, const StreamLayout& lay, int group_shift,
                   cudaStream_t stream) {
  constexpr auto kernel = gemv_q4_stream_kernel<T, IN, ACC, ST>;
  static bool configured = false;
  if (!configured) {
    PENSIEVE_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kStreamSmemBudget + 1024)));
    configured = true;
  }
  const int64_t n_tiles = w.rows / kStreamRows;
  const int64_t blocks = std::min<int64_t>(n_tiles, static_cast<int64_t>(multiprocessor_count()) * gemv_stream_blocks_per_sm());
  launch_dependent(kernel, static_cast<unsigned>(blocks), kStreamRows * 32, lay.total, stream, w, io, lay,
                   group_shift);
}

template <int T, int IN, bool ACC>
void launch_stream_st(const GpuWeight& w, const GemvIo& io, const StreamLayout& lay, int group_shift,
                      cudaStream_t stream) {
  switch (w.scale_type) {
    case kScaleF32: return launch_stream<T, IN, ACC, kScaleF32>(w, io, lay, group_shift, stream);
    case kScaleF16: return launch_stream<T, IN, ACC, kScaleF16>(w, io, lay, group_shift, stream);
    default: return launch_stream<T, IN, ACC, kScaleBF16>(w, io, lay, group_shift, stream);
  }
}

template <int T>
void launch_stream_mode(const GpuWeight& w, const GemvIo& io, int in, bool acc, const StreamLayout& lay,
                        int group_shift, cudaStream_t stream) {
  if (in == kGemvPlain && !acc) launch_stream_st<T, kGemvPlain, false>(w, io, lay, group_shift, stream);
  else if (in == kGemvPlain) launch_stream_st<T, kGemvPlain, true>(w, io, lay, group_shift, stream);
  else if (in == kGemvSilu && !acc) launch_stream_st<T, kGemvSilu, false>(w, io, lay, group_shift, stream);
  else if (in == kGemvSilu) launch_stream_st<T, kGemvSilu, true>(w, io, lay, group_shift, stream);
  else launch_stream_st<T, kGemvNorm, false>(w, io, lay, group_shift, stream);
}

// The streamed gemv where it applies: 1 to kStreamMaxTokens tokens, rows
// in whole tiles, every tile's bytes 16-byte aligned (the bulk copies'),
// at least two slots in the shared-memory budget.
bool gemv_stream(const GpuWeight& w, const GemvIo& io, int64_t n_tokens, int in, bool acc, int group_shift,
                 cudaStream_t stream) {
  if (!gemv_stream_enabled() || n_tokens > kStreamMaxTokens || w.rows % kStreamRows != 0) return false;
  const int scale_bytes = w.scale_type == kScaleF32 ? 4 : 2;
  const StreamLayout lay = stream_layout(w.rows, w.cols, w.group_size, scale_bytes, n_tokens);
  const auto aligned16 = [](const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; };
  if (lay.stages < 2 || lay.w_bytes % 16 != 0 || lay.s_bytes % 16 != 0 || !aligned16(w.scales) ||
      !aligned16(w.biases))
    return false;
  switch (n_tokens) {
    case 1: launch_stream_mode<1>(w, io, in, acc, lay, group_shift, stream); break;
    case 2: launch_stream_mode<2>(w, io, in, acc, lay, group_shift, stream); break;
    case 3: launch_stream_mode<3>(w, io, in, acc, lay, group_shift, stream); break;
    default: launch_stream_mode<4>(w, io, in, acc, lay, group_shift, stream); break;
  }
  return true;
}

// Blocks of Kernel the card holds at once per multiprocessor with this much
// shared memory (the attribute set once, the occupancy asked once per size).
template <auto Kernel>
int blocks_per_sm(size_t smem) {
  static bool configured = false;
  static int per_sm = 0;
  static size_t per_sm_smem = 0;
  if (!configured) {
    PENSIEVE_CUDA_CHECK(cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             static_cast<int>(kQ4MaxSmem)));
    configured = true;
  }
  if (per_sm_smem != smem) {
    PENSIEVE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, Kernel, kQ4Warps * 32, smem));
    per_sm_smem = smem;
  }
  return std::max(per_sm, 1);
}

// Every warp gets the same number of rows, as few as lets the whole grid be
// resident (each block stages x once, so fewer blocks stage less).
int rows_per_warp(int64_t rows, int per_sm) {
  const int64_t resident_warps = static_cast<int64_t>(multiprocessor_count()) * per_sm * kQ4Warps;
  return static_cast<int>((rows + resident_warps - 1) / resident_warps);
}

template <int T, int IN, bool ACC, int ST>
void launch_pairs(const GpuWeight& w, const GemvIo& io, size_t smem, int group_shift, cudaStream_t stream) {
  constexpr auto kernel = gemv_q4_pair_kernel<T, IN, ACC, ST>;
  const int rpw = rows_per_warp(w.rows, blocks_per_sm<kernel>(smem));
  launch_dependent(kernel, blocks_for(w.rows, static_cast<int64_t>(kQ4Warps) * rpw), kQ4Warps * 32, smem, stream, w,
                   io, rpw, group_shift);
}

template <int T, int IN, bool ACC>
void launch(const GpuWeight& w, const GemvIo& io, size_t smem, int group_shift, cudaStream_t stream) {
  switch (w.scale_type) {
    case kScaleF32: return launch_pairs<T, IN, ACC, kScaleF32>(w, io, smem, group_shift, stream);
    case kScaleF16: return launch_pairs<T, IN, ACC, kScaleF16>(w, io, smem, group_shift, stream);
    default: return launch_pairs<T, IN, ACC, kScaleBF16>(w, io, smem, group_shift, stream);
  }
}

// The input modes and epilogues the decoder uses: plain x (any output), silu
// (the MLP's down: plain or into the residual), norm (q/k/v, gate/up).
template <int T>
void launch_mode(const GpuWeight& w, const GemvIo& io, int in, bool acc, size_t smem, int group_shift,
                 cudaStream_t stream) {
  if (in == kGemvPlain && !acc) launch<T, kGemvPlain, false>(w, io, smem, group_shift, stream);
  else if (in == kGemvPlain) launch<T, kGemvPlain, true>(w, io, smem, group_shift, stream);
  else if (in == kGemvSilu && !acc) launch<T, kGemvSilu, false>(w, io, smem, group_shift, stream);
  else if (in == kGemvSilu) launch<T, kGemvSilu, true>(w, io, smem, group_shift, stream);
  else launch<T, kGemvNorm, false>(w, io, smem, group_shift, stream);
}

void launch_t(const GpuWeight& w, const GemvIo& io, int64_t n_tokens, int in, bool acc, size_t smem,
              int group_shift, cudaStream_t stream) {
  switch (n_tokens) {
#define PENSIEVE_Q4_CASE(T) \
  case T: launch_mode<T>(w, io, in, acc, smem, group_shift, stream); break;
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

// PENSIEVE_CUDA_GEMV_Q4=0 turns the int8 gemv off (the f32 gemv runs).
bool gemv_q4_enabled() {
  const char* e = std::getenv("PENSIEVE_CUDA_GEMV_Q4");
  return e == nullptr || e[0] != '0';
}

bool gemv_q4(const GpuWeight& w, const GemvIo& io, int64_t n_tokens, int in, bool acc, cudaStream_t stream) {
  const auto aligned16 = [](const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; };
  if (w.format != kAffine4 || n_tokens < 1 || n_tokens > kGemvMaxTokens || w.group_size % 32 != 0 ||
      w.cols % w.group_size != 0 || w.cols > (1 << 24) || !aligned16(w.data) || !aligned16(io.x) ||
      io.ldx % 4 != 0 || (in == kGemvNorm && (acc || !aligned16(io.norm_w))) || !gemv_q4_enabled())
    return false;
  const size_t smem = static_cast<size_t>(n_tokens) * static_cast<size_t>(w.cols / 32) * (64 + 8);
  if (smem > kQ4MaxSmem) return false;
  // The group index is a shift: group sizes of 32 · 2^k.
  int group_shift = -1;
  for (int k = 0; k < 8; ++k)
    if (w.group_size == (32 << k)) group_shift = k;
  if (group_shift < 0) return false;
  if (!gemv_stream(w, io, n_tokens, in, acc, group_shift, stream)) launch_t(w, io, n_tokens, in, acc, smem, group_shift, stream);
  PENSIEVE_CUDA_LAUNCHED("gemv_q4");
  return true;
}

}  // namespace pensieve::cuda
