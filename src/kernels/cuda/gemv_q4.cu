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
  launch_t(w, io, n_tokens, in, acc, smem, group_shift, stream);
  PENSIEVE_CUDA_LAUNCHED("gemv_q4");
  return true;
}

}  // namespace pensieve::cuda
