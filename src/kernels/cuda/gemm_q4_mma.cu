// Many streams decoding: 9 to 64 rows of x times a 4-bit MLX weight, on
// tensor cores (mma.sync m16n8k16, f16 operands, f32 sums).
//
// The gemv reads the weight once per 8 rows; here it is read once for all
// of them. The weight goes into the mma's B operand straight from its
// 16-byte loads: a lane of quad t (lane % 4) loads 32 columns of one weight
// row, and a 32-bit word of 8 nibbles (columns 8i..8i+7, nibble j at bits
// 4j) gives four pairs of halves by mask, (j, j+4) for j = 0..3, as
// (0x6400 | nibble) - 1024 (exact), times the group's scale plus its bias.
// Which column sits at which k of an mma does not matter as long as A and B
// agree, so the k the fragment layout gives a lane (2t, 2t+1, 2t+8, 2t+9)
// are taken to be the columns its pairs hold, and x is staged as halves in
// that order (within every 8 columns: 0 4 1 5 2 6 3 7) by a small kernel
// first. A lane's 16-byte load then serves 8 mma steps, and one 16-byte
// load of x per 16 tokens and word serves two.
//
// A block is 4 warps over the same NT·8 weight rows, each warp a quarter of
// the columns (summed through shared memory); where rows are few (3072 of
// them), the columns are split over several blocks as well, and the last
// block of a row tile to finish adds the others' partial sums, in split
// order (no atomics on the sums: the result does not depend on timing).
#include <algorithm>
#include <cstdlib>

#include "kernels/cuda/kernels.h"

namespace pensieve::cuda {
namespace {

constexpr int kMmaWarps = 4;
constexpr int kSuperCols = 128;  // columns a warp's 16-byte loads cover per step

// x (n_tokens rows of cols, or silu(gate)·up of gate|up rows) as halves in
// the fragment order, m_pad rows (the ones past n_tokens zero).
template <bool SILU>
__global__ void mma_stage_x_kernel(const float* __restrict__ x, int64_t ldx, int n_tokens, int m_pad,
                                   int cols, __half* __restrict__ xp) {
  pdl_wait();  // launched as a dependent
  pdl_trigger();
  const int per_row = cols / 8;
  const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (e >= static_cast<int64_t>(m_pad) * per_row) return;
  const int m = static_cast<int>(e / per_row), c8 = static_cast<int>(e % per_row);
  float4 a = make_float4(0.f, 0.f, 0.f, 0.f), b = a;
  if (m < n_tokens) {
    const float* row = x + m * ldx + c8 * 8;
    a = __ldg(reinterpret_cast<const float4*>(row));
    b = __ldg(reinterpret_cast<const float4*>(row) + 1);
    if constexpr (SILU) {
      a = silu_mul4(a, __ldg(reinterpret_cast<const float4*>(row + cols)));
      b = silu_mul4(b, __ldg(reinterpret_cast<const float4*>(row + cols) + 1));
    }
  }
  const __half2 h0 = __floats2half2_rn(a.x, b.x), h1 = __floats2half2_rn(a.y, b.y);
  const __half2 h2 = __floats2half2_rn(a.z, b.z), h3 = __floats2half2_rn(a.w, b.w);
  uint4 v;
  v.x = *reinterpret_cast<const uint32_t*>(&h0);
  v.y = *reinterpret_cast<const uint32_t*>(&h1);
  v.z = *reinterpret_cast<const uint32_t*>(&h2);
  v.w = *reinterpret_cast<const uint32_t*>(&h3);
  reinterpret_cast<uint4*>(xp + static_cast<int64_t>(m) * cols)[c8] = v;
}

__device__ __forceinline__ void mma_16816(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                          uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Nibbles j and j+4 of a word as halves, times the scale plus the bias.
__device__ __forceinline__ uint32_t dequant_pair(uint32_t word, int j, __half2 s, __half2 b) {
  const uint32_t bits = ((word >> (4 * j)) & 0x000F000Fu) | 0x64006400u;
  const __half2 q = __hsub2(*reinterpret_cast<const __half2*>(&bits), __half2half2(__ushort_as_half(0x6400)));
  const __half2 w = __hfma2(q, s, b);
  return *reinterpret_cast<const uint32_t*>(&w);
}

// MT m-tiles of 16 tokens, NT n-tiles of 8 weight rows a warp.
template <int MT, int NT, int ST, bool ACC>
__global__ void __launch_bounds__(kMmaWarps * 32, 3)
    gemm_q4_mma_kernel(GpuWeight w, const __half* __restrict__ xp, int n_tokens, float* __restrict__ y,
                       int64_t ldy, const float* __restrict__ bias, int n_split, float* __restrict__ partial,
                       int* __restrict__ counters, int group_shift) {
  // y = v, or (acc) the residual y += v + bias as add_rms_norm adds.
  auto put = [&](int m, int64_t r, float v) {
    if constexpr (ACC) y[m * ldy + r] += bias != nullptr ? v + bias[r] : v;
    else y[m * ldy + r] = v;
  };
  constexpr int kRows = NT * 8;
  __shared__ float red[kMmaWarps][MT * NT * 4][32];
  __shared__ bool last_block;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int g = lane / 4, t = lane % 4;
  const int tile = blockIdx.x / n_split, split = blockIdx.x % n_split;
  const int64_t row0 = static_cast<int64_t>(tile) * kRows;
  const int cols = static_cast<int>(w.cols);
  const int n_super = cols / kSuperCols;
  const int slices = n_split * kMmaWarps, slice = split * kMmaWarps + warp;
  const int c_begin = static_cast<int>(static_cast<int64_t>(n_super) * slice / slices);
  const int c_end = static_cast<int>(static_cast<int64_t>(n_super) * (slice + 1) / slices);
  const int64_t row_bytes = cols / 2;
  const int n_groups = cols / w.group_size;

  uint4 wa[NT], wb[NT];
  __half2 sa[NT], ba[NT], sb[NT], bb[NT];
  auto fetch = [&](int c, uint4 (&wq)[NT], __half2 (&s)[NT], __half2 (&b)[NT]) {
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      const int64_t r = row0 + nt * 8 + g;
      wq[nt] = make_uint4(0, 0, 0, 0);
      s[nt] = b[nt] = __float2half2_rn(0.f);
      if (r < w.rows) {
        const int blk = c * 4 + t;  // 32-column block of the row
        wq[nt] = __ldg(reinterpret_cast<const uint4*>(w.data + r * row_bytes) + blk);
        const int64_t gi = r * n_groups + (blk >> group_shift);
        s[nt] = __float2half2_rn(scale_at<ST>(w.scales, gi));
        b[nt] = __float2half2_rn(scale_at<ST>(w.biases, gi));
      }
    }
  };
  float acc[MT][NT][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int q = 0; q < 4; ++q) acc[mt][nt][q] = 0.f;

  auto compute = [&](int c, const uint4 (&wq)[NT], const __half2 (&s)[NT], const __half2 (&b)[NT]) {
    const __half* xc = xp + c * kSuperCols + 32 * t;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      uint4 xa[MT], xb[MT];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        xa[mt] = __ldg(reinterpret_cast<const uint4*>(xc + static_cast<int64_t>(mt * 16 + g) * cols + 8 * i));
        xb[mt] = __ldg(reinterpret_cast<const uint4*>(xc + static_cast<int64_t>(mt * 16 + g + 8) * cols + 8 * i));
      }
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const uint32_t word = i == 0 ? wq[nt].x : i == 1 ? wq[nt].y : i == 2 ? wq[nt].z : wq[nt].w;
        const uint32_t p0 = dequant_pair(word, 0, s[nt], b[nt]), p1 = dequant_pair(word, 1, s[nt], b[nt]);
        const uint32_t p2 = dequant_pair(word, 2, s[nt], b[nt]), p3 = dequant_pair(word, 3, s[nt], b[nt]);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma_16816(acc[mt][nt], xa[mt].x, xb[mt].x, xa[mt].y, xb[mt].y, p0, p1);
          mma_16816(acc[mt][nt], xa[mt].z, xb[mt].z, xa[mt].w, xb[mt].w, p2, p3);
        }
      }
    }
  };

  // The first weights before waiting on the kernel that writes x.
  if (c_begin < c_end) fetch(c_begin, wa, sa, ba);
  pdl_wait();
  pdl_trigger();
  for (int c = c_begin; c < c_end; c += 2) {
    if (c + 1 < c_end) fetch(c + 1, wb, sb, bb);
    compute(c, wa, sa, ba);
    if (c + 1 >= c_end) break;
    if (c + 2 < c_end) fetch(c + 2, wa, sa, ba);
    compute(c + 1, wb, sb, bb);
  }

  // The warps' sums through shared memory; warp w adds up a quarter of them.
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int q = 0; q < 4; ++q) red[warp][(mt * NT + nt) * 4 + q][lane] = acc[mt][nt][q];
  __syncthreads();
  constexpr int kValues = MT * NT * 4;
  const int rows = static_cast<int>(w.rows);
  for (int idx = warp; idx < kValues; idx += kMmaWarps) {
    float v = 0.f;
#pragma unroll
    for (int ww = 0; ww < kMmaWarps; ++ww) v += red[ww][idx][lane];
    const int mt = idx / (NT * 4), nt = (idx / 4) % NT, q = idx % 4;
    const int m = mt * 16 + g + (q >= 2 ? 8 : 0);
    const int64_t r = row0 + nt * 8 + 2 * t + (q & 1);
    if (m >= n_tokens || r >= rows) continue;
    if (n_split == 1) put(m, r, v);
    else partial[(static_cast<int64_t>(split) * n_tokens + m) * rows + r] = v;
  }
  if (n_split == 1) return;
  // The last block of the tile adds the splits' sums in order.
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) last_block = atomicAdd(&counters[tile], 1) == n_split - 1;
  __syncthreads();
  if (!last_block) return;
  __threadfence();
  const int tile_rows = rows - row0 < kRows ? static_cast<int>(rows - row0) : kRows;
  for (int e = threadIdx.x; e < n_tokens * tile_rows; e += blockDim.x) {
    const int m = e / tile_rows;
    const int64_t r = row0 + e % tile_rows;
    float v = 0.f;
    for (int s = 0; s < n_split; ++s) v += __ldcg(partial + (static_cast<int64_t>(s) * n_tokens + m) * rows + r);
    put(m, r, v);
  }
  if (threadIdx.x == 0) counters[tile] = 0;  // ready for the next launch
}

template <int MT, int NT, bool ACC>
void launch_mma(const GpuWeight& w, const __half* xp, int n_tokens, float* y, int64_t ldy, const float* bias,
                int n_split, float* partial, int* counters, int group_shift, cudaStream_t stream) {
  const unsigned grid = static_cast<unsigned>(((w.rows + NT * 8 - 1) / (NT * 8)) * n_split);
  switch (w.scale_type) {
    case kScaleF32:
      launch_dependent(gemm_q4_mma_kernel<MT, NT, kScaleF32, ACC>, grid, kMmaWarps * 32, 0, stream, w, xp, n_tokens,
                       y, ldy, bias, n_split, partial, counters, group_shift);
      break;
    case kScaleF16:
      launch_dependent(gemm_q4_mma_kernel<MT, NT, kScaleF16, ACC>, grid, kMmaWarps * 32, 0, stream, w, xp, n_tokens,
                       y, ldy, bias, n_split, partial, counters, group_shift);
      break;
    default:
      launch_dependent(gemm_q4_mma_kernel<MT, NT, kScaleBF16, ACC>, grid, kMmaWarps * 32, 0, stream, w, xp, n_tokens,
                       y, ldy, bias, n_split, partial, counters, group_shift);
      break;
  }
}

template <int MT, int NT>
void launch_mma_acc(bool acc, const GpuWeight& w, const __half* xp, int n_tokens, float* y, int64_t ldy,
                    const float* bias, int n_split, float* partial, int* counters, int group_shift,
                    cudaStream_t stream) {
  if (acc) launch_mma<MT, NT, true>(w, xp, n_tokens, y, ldy, bias, n_split, partial, counters, group_shift, stream);
  else launch_mma<MT, NT, false>(w, xp, n_tokens, y, ldy, bias, n_split, partial, counters, group_shift, stream);
}

// Rows of weight per warp: 32 (4 n-tiles) up to 32 tokens, 16 above (the
// accumulators grow with the tokens).
int tile_rows(int64_t n_tokens) { return n_tokens <= 32 ? 32 : 16; }

bool gemm_q4_mma_enabled() {
  const char* e = std::getenv("PENSIEVE_CUDA_MMA");
  return e == nullptr || e[0] != '0';
}

}  // namespace

MmaPlan gemm_q4_mma_plan(const GpuWeight& w, int64_t n_tokens, const float* x, int64_t ldx) {
  MmaPlan p;
  const auto aligned16 = [](const void* v) { return (reinterpret_cast<uintptr_t>(v) & 15u) == 0; };
  if (w.format != kAffine4 || !aligned16(x) || ldx % 4 != 0 || n_tokens < kMmaMinTokens || n_tokens > kMmaMaxTokens || w.cols % kSuperCols != 0 ||
      w.group_size < 32 || (w.group_size & (w.group_size - 1)) != 0 || w.cols % w.group_size != 0 ||
      !aligned16(w.data) || w.rows >= (int64_t{1} << 30) || !gemm_q4_mma_enabled())
    return p;
  const int64_t m_pad = (n_tokens + 15) / 16 * 16;
  const int64_t tiles = (w.rows + tile_rows(n_tokens) - 1) / tile_rows(n_tokens);
  const int64_t n_super = w.cols / kSuperCols;
  // Enough blocks for two a multiprocessor, each warp at least two steps.
  const int64_t want = (2 * multiprocessor_count() + tiles - 1) / tiles;
  const int64_t most = std::max<int64_t>(1, n_super / (2 * kMmaWarps));
  p.n_split = static_cast<int>(std::clamp<int64_t>(want, 1, most));
  p.x16_halves = static_cast<size_t>(m_pad * w.cols);
  p.partial_floats = p.n_split > 1 ? static_cast<size_t>(p.n_split * n_tokens * w.rows) : 0;
  p.counters = p.n_split > 1 ? static_cast<size_t>(tiles) : 0;
  p.ok = true;
  return p;
}

void gemm_q4_mma(const GpuWeight& w, const float* x, int64_t ldx, int64_t n_tokens, float* y, int64_t ldy,
                 bool silu, bool acc, const float* bias, const MmaPlan& p, __half* x16, float* partial,
                 int* counters, cudaStream_t stream) {
  const int m_pad = static_cast<int>((n_tokens + 15) / 16 * 16);
  const int cols = static_cast<int>(w.cols);
  const int64_t pieces = static_cast<int64_t>(m_pad) * (cols / 8);
  if (silu) launch_dependent(mma_stage_x_kernel<true>, blocks_for(pieces, 256), 256, 0, stream, x, ldx,
                             static_cast<int>(n_tokens), m_pad, cols, x16);
  else launch_dependent(mma_stage_x_kernel<false>, blocks_for(pieces, 256), 256, 0, stream, x, ldx,
                        static_cast<int>(n_tokens), m_pad, cols, x16);
  PENSIEVE_CUDA_LAUNCHED("mma stage x");
  int group_shift = 0;
  while ((32 << group_shift) < w.group_size) ++group_shift;
  const int nt = static_cast<int>(n_tokens);
  switch ((n_tokens + 15) / 16) {
    case 1: launch_mma_acc<1, 4>(acc, w, x16, nt, y, ldy, bias, p.n_split, partial, counters, group_shift, stream); break;
    case 2: launch_mma_acc<2, 4>(acc, w, x16, nt, y, ldy, bias, p.n_split, partial, counters, group_shift, stream); break;
    case 3: launch_mma_acc<3, 2>(acc, w, x16, nt, y, ldy, bias, p.n_split, partial, counters, group_shift, stream); break;
    default: launch_mma_acc<4, 2>(acc, w, x16, nt, y, ldy, bias, p.n_split, partial, counters, group_shift, stream); break;
  }
  PENSIEVE_CUDA_LAUNCHED("gemm_q4_mma");
}

}  // namespace pensieve::cuda
