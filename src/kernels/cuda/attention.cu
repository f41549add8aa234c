// Causal attention over the paged half-float KV cache, one warp per (query
// row, head, split). A warp walks its share of the sequence two KV blocks
// (32 keys) at a time: each lane scores one key over the whole head (K is
// stored transposed, so the 16 lanes of a block read 32 contiguous bytes per
// dimension), the softmax is taken online (flash style), and each lane
// accumulates P·V for its own dimensions. Short batches over long contexts
// (decode) split the keys over several warps and merge their partial
// results (flash-decoding); prefill has rows enough to fill the card.
#include <algorithm>
#include <cfloat>
#include <cstdlib>

#include "kernels/cuda/kernels.h"

namespace pensieve::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kMaxHeadDim = 256;

// One cached value (key t of the block, dimension d), f16 or q8.
__device__ __forceinline__ float k_value(const GpuKvLayer& kv, int64_t phys, int kvh, int d, int t) {
  const uint8_t* p = kv.k + kv.head_offset(phys, kvh);
  if (!kv.q8) return __half2float(reinterpret_cast<const __half*>(p)[d * 16 + t]);
  const float* sc = reinterpret_cast<const float*>(p + kv.head_dim * 16);
  return static_cast<float>(static_cast<int8_t>(p[d * 16 + t])) * sc[(d / kv.group) * 16 + t];
}
__device__ __forceinline__ float v_value(const GpuKvLayer& kv, int64_t phys, int kvh, int t, int d) {
  const uint8_t* p = kv.v + kv.head_offset(phys, kvh);
  const int hd = kv.head_dim;
  if (!kv.q8) return __half2float(reinterpret_cast<const __half*>(p)[t * hd + d]);
  const float* sc = reinterpret_cast<const float*>(p + hd * 16);
  return static_cast<float>(static_cast<int8_t>(p[t * hd + d])) * sc[t * (hd / kv.group) + d / kv.group];
}

// 16 int8 values times their scales (halves: 16 of them, one per value, or
// one for all), as 16 halves (two 16-byte vectors).
__device__ __forceinline__ void dequant16(uint4 raw, const __half* scales, bool one_scale, uint4* out) {
  const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
  const __half2* s2 = reinterpret_cast<const __half2*>(scales);
  const __half2 one = __half2half2(scales[0]);
  uint32_t h[8];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    __half2 lo, hi;
    i8x4_to_half2(w[i], lo, hi);
    lo = __hmul2(lo, one_scale ? one : s2[2 * i]);
    hi = __hmul2(hi, one_scale ? one : s2[2 * i + 1]);
    h[2 * i] = *reinterpret_cast<const uint32_t*>(&lo);
    h[2 * i + 1] = *reinterpret_cast<const uint32_t*>(&hi);
  }
  out[0] = make_uint4(h[0], h[1], h[2], h[3]);
  out[1] = make_uint4(h[4], h[5], h[6], h[7]);
}

// Splits per (row, head): enough warps to fill the card, each with at
// least 32 keys (a warp's loads are pipelined one block ahead, so a long
// share is a long chain of memory latencies; run 4 measured 20 µs a layer
// at 512 context with 64-key shares).
// PENSIEVE_CUDA_SPLIT_KEYS=N: at least N keys a split (default 32).
int split_min_keys() {
  static const int n = [] {
    const char* e = std::getenv("PENSIEVE_CUDA_SPLIT_KEYS");
    const int v = e != nullptr ? std::atoi(e) : 32;
    return v >= 16 && v <= 4096 ? v : 32;
  }();
  return n;
}

int splits_for(int64_t n_rows, int n_heads, int max_ctx) {
  const int64_t items = n_rows * n_heads;
  if (items >= 4096) return 1;
  const int by_length = (max_ctx + split_min_keys() - 1) / split_min_keys();
  const int64_t by_occupancy = (4096 + items - 1) / items;
  int s = static_cast<int>(by_length < by_occupancy ? by_length : by_occupancy);
  if (s > 64) s = 64;
  return s < 1 ? 1 : s;
}

template <int DPL>  // head dimensions per lane: ceil(head_dim / 32)
__global__ void __launch_bounds__(kWarps * 32) attention_kernel(AttentionArgs a, int n_splits) {
  pdl_wait();  // launched as a dependent
  pdl_trigger();
  __shared__ float q_shared[kWarps][kMaxHeadDim];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t item = blockIdx.x * static_cast<int64_t>(kWarps) + warp;
  if (item >= a.n_rows * a.n_heads * n_splits) return;
  const int split = static_cast<int>(item % n_splits);
  const int head = static_cast<int>((item / n_splits) % a.n_heads);
  const int64_t row = item / n_splits / a.n_heads;
  const int hd = a.kv.head_dim, nkv = a.kv.n_kv_heads;
  const int kvh = head / (a.n_heads / nkv);
  const GpuSeq seq = a.seqs[a.row_seq[row]];
  const int qpos = seq.n_ctx - seq.n_q + static_cast<int>(row - seq.q_row);
  const int n_keys = qpos + 1;
  const int first = a.window > 0 && qpos - a.window + 1 > 0 ? qpos - a.window + 1 : 0;
  const int b_first = first / 16, b_end = (n_keys + 15) / 16;
  const int per_split = (b_end - b_first + n_splits - 1) / n_splits;
  const int b0 = b_first + split * per_split;
  const int b1 = min(b_end, b0 + per_split);

  const float* qr = a.q + (row * a.n_heads + head) * static_cast<int64_t>(hd);
  for (int d = lane; d < hd; d += 32) q_shared[warp][d] = qr[d] * a.scale;
  __syncwarp();

  const int32_t* table = a.tables + seq.table_offset;
  float m = -FLT_MAX, l = 0.f;
  bool any = false;
  float acc[DPL];
#pragma unroll
  for (int i = 0; i < DPL; ++i) acc[i] = 0.f;

  for (int b = b0; b < b1; b += 2) {
    const int my_block = b + lane / 16;
    const int key = my_block * 16 + lane % 16;
    const bool valid = my_block < b1 && key >= first && key < n_keys;
    int64_t phys = 0;
    float s = -FLT_MAX;
    if (my_block < b1) {
      phys = table[my_block];
      if (valid) {
        float dot = 0.f;
        for (int d = 0; d < hd; ++d) dot += q_shared[warp][d] * k_value(a.kv, phys, kvh, d, lane % 16);
        s = dot;
      }
    }
    const bool any_valid = __any_sync(0xffffffffu, valid);
    if (!any_valid) continue;
    const float m_new = fmaxf(m, warp_max(s));
    const float p = valid ? __expf(s - m_new) : 0.f;
    const float corr = any ? __expf(m - m_new) : 0.f;
    l = l * corr + warp_sum(p);
#pragma unroll
    for (int i = 0; i < DPL; ++i) acc[i] *= corr;
    for (int j = 0; j < 32; ++j) {
      const float pj = __shfl_sync(0xffffffffu, p, j);
      const int64_t phys_j = __shfl_sync(0xffffffffu, phys, j);
      if (pj == 0.f) continue;
#pragma unroll
      for (int i = 0; i < DPL; ++i) {
        const int d = lane + 32 * i;
        if (d < hd) acc[i] += pj * v_value(a.kv, phys_j, kvh, j % 16, d);
      }
    }
    m = m_new;
    any = true;
  }

  if (n_splits == 1) {
    float* o = a.out + (row * a.n_heads + head) * static_cast<int64_t>(hd);
    const float inv = l > 0.f ? 1.f / l : 0.f;
#pragma unroll
    for (int i = 0; i < DPL; ++i) {
      const int d = lane + 32 * i;
      if (d < hd) o[d] = acc[i] * inv;
    }
    return;
  }
  float* part = a.partial + item * static_cast<int64_t>(hd + 2);
#pragma unroll
  for (int i = 0; i < DPL; ++i) {
    const int d = lane + 32 * i;
    if (d < hd) part[d] = acc[i];
  }
  if (lane == 0) {
    part[hd] = any ? m : -FLT_MAX;
    part[hd + 1] = l;
  }
}

// The staged kernel (head_dim a multiple of 16, at most 128): one warp per
// (group of up to R query rows of one sequence, head, split). Each KV
// block's K and V for the warp's head (2 · head_dim · 16 half floats,
// contiguous) are copied into shared memory with 16-byte loads, the next
// block's loads in flight while the current one is used; all R rows read
// each staged block (R = 4 for prompts, 1 for decode). Scores: lane l takes
// key l % 16 over half of the dimensions; P·V: each lane owns dimensions.
constexpr int kStageMaxDim = 128;

template <int DPL, int R, bool Q8>
__global__ void __launch_bounds__(kWarps * 32) attention_staged_kernel(AttentionArgs a, int n_splits) {
  pdl_wait();  // launched as a dependent
  pdl_trigger();
  __shared__ uint4 kv_shared[kWarps][2 * kStageMaxDim * 16 * 2 / 16];
  // q8: the block's K and V scales as halves (K's, then V's; at most 2·hd).
  __shared__ __align__(16) __half scale_shared[kWarps][Q8 ? 2 * kStageMaxDim : 1];
  __shared__ float q_shared[kWarps][R][kStageMaxDim];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t item = blockIdx.x * static_cast<int64_t>(kWarps) + warp;
  if (item >= a.n_groups * a.n_heads * n_splits) return;
  const int split = static_cast<int>(item % n_splits);
  const int head = static_cast<int>((item / n_splits) % a.n_heads);
  const int32_t packed = a.groups[item / n_splits / a.n_heads];
  const int64_t row0 = packed >> 4;
  const int count = packed & 15;
  const int hd = a.kv.head_dim, nkv = a.kv.n_kv_heads;
  const int kvh = head / (a.n_heads / nkv);
  const GpuSeq seq = a.seqs[a.row_seq[row0]];
  const int qpos0 = seq.n_ctx - seq.n_q + static_cast<int>(row0 - seq.q_row);
  const int n_keys = qpos0 + count;  // the last row's position + 1
  const int first = a.window > 0 && qpos0 - a.window + 1 > 0 ? qpos0 - a.window + 1 : 0;
  const int b_first = first / 16, b_end = (n_keys + 15) / 16;
  const int per_split = (b_end - b_first + n_splits - 1) / n_splits;
  const int b0 = b_first + split * per_split;
  const int b1 = min(b_end, b0 + per_split);

#pragma unroll
  for (int i = 0; i < R; ++i) {
    const float* qr = a.q + ((row0 + (i < count ? i : 0)) * a.n_heads + head) * static_cast<int64_t>(hd);
    for (int d = lane; d < hd; d += 32) q_shared[warp][i][d] = i < count ? qr[d] * a.scale : 0.f;
  }
  __syncwarp();

  const int32_t* table = a.tables + seq.table_offset;
  // One head of one block: f16, 2·hd 16-byte vectors (hd/16 a lane); q8,
  // hd vectors of int8 and 4·hd/group of scales (at most 5 a lane).
  // A lane's share of one head's K (or V): f16, 2·head_dim 16-byte units
  // over 32 lanes, at most 2·DPL; q8, head_dim units and 4·head_dim/group
  // of scales (groups of at least 4), no more. (Sized by DPL, not by the
  // largest head: run 17's ncu found 168 registers a thread at head dim 96.)
  constexpr int kRegs = 2 * DPL;
  uint4 reg_k[kRegs], reg_v[kRegs];
  const int units = a.kv.head_bytes / 16;
  // The split's block ids, 32 at a time, one per lane: a block's loads then
  // wait for one memory latency, not for the table's and then their own.
  int table_base = -1;
  int32_t lane_phys = 0;
  auto fetch = [&](int b) {
    const int base = b0 + ((b - b0) & ~31);
    if (base != table_base) {
      table_base = base;
      lane_phys = base + lane < b1 ? table[base + lane] : 0;
    }
    const int64_t phys = __shfl_sync(0xffffffffu, lane_phys, (b - b0) & 31);
    const uint4* kp = reinterpret_cast<const uint4*>(a.kv.k + a.kv.head_offset(phys, kvh));
    const uint4* vp = reinterpret_cast<const uint4*>(a.kv.v + a.kv.head_offset(phys, kvh));
#pragma unroll
    for (int i = 0; i < kRegs; ++i) {
      if (lane + 32 * i < units) {
        reg_k[i] = __ldg(kp + lane + 32 * i);
        reg_v[i] = __ldg(vp + lane + 32 * i);
      }
    }
  };
  uint4* ks = kv_shared[warp];
  uint4* vs = kv_shared[warp] + 2 * hd;  // K takes hd·16 halves = 2·hd vectors
  const __half* kh = reinterpret_cast<const __half*>(ks);
  const __half* vh = reinterpret_cast<const __half*>(vs);

  float m[R], l[R], acc[R][DPL];
  bool any[R];
#pragma unroll
  for (int i = 0; i < R; ++i) {
    m[i] = -FLT_MAX;
    l[i] = 0.f;
    any[i] = false;
#pragma unroll
    for (int k = 0; k < DPL; ++k) acc[i][k] = 0.f;
  }
  const int j = lane % 16, half_lane = lane / 16;
  const int d_begin = half_lane * (hd / 2), d_end = d_begin + hd / 2;
  if (b0 < b1) fetch(b0);
  for (int b = b0; b < b1; ++b) {
    if constexpr (!Q8) {
#pragma unroll
      for (int i = 0; i < kRegs; ++i) {
        if (lane + 32 * i < units) {
          ks[lane + 32 * i] = reg_k[i];
          vs[lane + 32 * i] = reg_v[i];
        }
      }
    } else {
      // The scales first (other lanes' rows need them), then each lane's
      // int8 vectors as halves where the f16 kernel has them: K row d is
      // vector d; V vector u is 16 dimensions of key 16u / hd.
      const int G = a.kv.group, scale_units = units - hd;
      __half* kscale = scale_shared[warp];
      __half* vscale = kscale + 4 * scale_units;
      auto to_halves = [](uint4 f, __half* out) {
        const __half2 a2 = __floats2half2_rn(__uint_as_float(f.x), __uint_as_float(f.y));
        const __half2 b2 = __floats2half2_rn(__uint_as_float(f.z), __uint_as_float(f.w));
        reinterpret_cast<__half2*>(out)[0] = a2;
        reinterpret_cast<__half2*>(out)[1] = b2;
      };
#pragma unroll
      for (int i = 0; i < kRegs; ++i) {
        const int u = lane + 32 * i;
        if (u >= hd && u < units) {
          to_halves(reg_k[i], kscale + 4 * (u - hd));
          to_halves(reg_v[i], vscale + 4 * (u - hd));
        }
      }
      __syncwarp();
#pragma unroll
      for (int i = 0; i < kRegs; ++i) {
        const int u = lane + 32 * i;
        if (u < hd) {
          dequant16(reg_k[i], kscale + (u / G) * 16, false, ks + 2 * u);
          const int t = 16 * u / hd, d0 = 16 * u % hd;
          dequant16(reg_v[i], vscale + t * (hd / G) + d0 / G, true, vs + (t * hd + d0) / 8);
        }
      }
    }
    __syncwarp();
    if (b + 1 < b1) fetch(b + 1);
    const int key = b * 16 + j;
    float p[R];
#pragma unroll
    for (int i = 0; i < R; ++i) {
      float part = 0.f;
      for (int d = d_begin; d < d_end; ++d) part += q_shared[warp][i][d] * __half2float(kh[d * 16 + j]);
      const float sc = part + __shfl_xor_sync(0xffffffffu, part, 16);
      const int qpos = qpos0 + i;
      const int first_i = a.window > 0 && qpos - a.window + 1 > 0 ? qpos - a.window + 1 : 0;
      const bool valid = i < count && key <= qpos && key >= first_i;
      p[i] = 0.f;
      if (__any_sync(0xffffffffu, valid)) {
        const float m_new = fmaxf(m[i], warp_max(valid ? sc : -FLT_MAX));
        p[i] = valid ? __expf(sc - m_new) : 0.f;
        const float corr = any[i] ? __expf(m[i] - m_new) : 0.f;
        l[i] = l[i] * corr + warp_sum(lane < 16 ? p[i] : 0.f);
#pragma unroll
        for (int k = 0; k < DPL; ++k) acc[i][k] *= corr;
        m[i] = m_new;
        any[i] = true;
      }
    }
#pragma unroll 4
    for (int jj = 0; jj < 16; ++jj) {
      float pj[R];
      bool nonzero = false;
#pragma unroll
      for (int i = 0; i < R; ++i) {
        pj[i] = __shfl_sync(0xffffffffu, p[i], jj);
        nonzero |= pj[i] != 0.f;
      }
      if (!nonzero) continue;
#pragma unroll
      for (int k = 0; k < DPL; ++k) {
        const int d = lane + 32 * k;
        if (d < hd) {
          const float v = __half2float(vh[jj * hd + d]);
#pragma unroll
          for (int i = 0; i < R; ++i) acc[i][k] += pj[i] * v;
        }
      }
    }
    __syncwarp();
  }

#pragma unroll
  for (int i = 0; i < R; ++i) {
    if (i >= count) break;
    const int64_t rh = (row0 + i) * a.n_heads + head;
    if (n_splits == 1) {
      float* o = a.out + rh * hd;
      const float inv = l[i] > 0.f ? 1.f / l[i] : 0.f;
#pragma unroll
      for (int k = 0; k < DPL; ++k) {
        const int d = lane + 32 * k;
        if (d < hd) o[d] = acc[i][k] * inv;
      }
    } else {
      float* part = a.partial + (rh * n_splits + split) * static_cast<int64_t>(hd + 2);
#pragma unroll
      for (int k = 0; k < DPL; ++k) {
        const int d = lane + 32 * k;
        if (d < hd) part[d] = acc[i][k];
      }
      if (lane == 0) {
        part[hd] = any[i] ? m[i] : -FLT_MAX;
        part[hd + 1] = l[i];
      }
    }
  }
}

// out[row][head] = Σ_s acc_s e^(m_s - M) / Σ_s l_s e^(m_s - M), a block per
// (row, head). Every warp reads all the splits' (m, l), lane s split s's
// (and s + 32's), so each has the weights at once; warp g then sums the
// splits g, g + 8, ... for its lanes' dimensions, all of their loads in
// flight together, and the eight partial sums meet in shared memory.
// (Run 17's ncu: the kernel before, a block per (row, head) walking the
// splits three times in turn, 16.6 µs for 32 heads of 16 splits; run 18's,
// one warp per head, still 13.7 µs, and 29.6 µs for 64 splits at 16k.)
constexpr int kCombineWarps = 8;
template <int DPL>
__global__ void __launch_bounds__(kCombineWarps * 32) combine_kernel(AttentionArgs a, int n_splits) {
  pdl_wait();  // launched as a dependent
  pdl_trigger();
  __shared__ float sums[kCombineWarps][kMaxHeadDim];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t rh = blockIdx.x;  // row * n_heads + head
  const int hd = a.kv.head_dim, stride = hd + 2;
  const float* part = a.partial + rh * n_splits * static_cast<int64_t>(stride);
  float m0 = -FLT_MAX, l0 = 0.f, m1 = -FLT_MAX, l1 = 0.f;
  if (lane < n_splits) {
    m0 = part[lane * stride + hd];
    l0 = part[lane * stride + hd + 1];
  }
  if (lane + 32 < n_splits) {
    m1 = part[(lane + 32) * stride + hd];
    l1 = part[(lane + 32) * stride + hd + 1];
  }
  const float big = warp_max(fmaxf(l0 > 0.f ? m0 : -FLT_MAX, l1 > 0.f ? m1 : -FLT_MAX));
  const float w0 = l0 > 0.f ? __expf(m0 - big) : 0.f, w1 = l1 > 0.f ? __expf(m1 - big) : 0.f;
  const float total = warp_sum(l0 * w0 + l1 * w1);
  float v[DPL];
#pragma unroll
  for (int i = 0; i < DPL; ++i) v[i] = 0.f;
#pragma unroll
  for (int k = 0; k < 64 / kCombineWarps; ++k) {
    const int sp = warp + kCombineWarps * k;  // < 64
    const float ws = __shfl_sync(0xffffffffu, sp < 32 ? w0 : w1, sp & 31);
    if (sp >= n_splits || ws == 0.f) continue;
#pragma unroll
    for (int i = 0; i < DPL; ++i) {
      const int d = lane + 32 * i;
      if (d < hd) v[i] += part[sp * stride + d] * ws;
    }
  }
#pragma unroll
  for (int i = 0; i < DPL; ++i) {
    const int d = lane + 32 * i;
    if (d < hd) sums[warp][d] = v[i];
  }
  __syncthreads();
  const float inv = total > 0.f ? 1.f / total : 0.f;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float v = 0.f;
#pragma unroll
    for (int w = 0; w < kCombineWarps; ++w) v += sums[w][d];
    a.out[rh * hd + d] = v * inv;
  }
}

}  // namespace

int64_t attention_scratch_floats(int64_t n_rows, int64_t n_groups, int n_heads, int head_dim,
                                 int max_ctx) {
  // Partial results are per (row, head, split); the split count comes from
  // the work items (groups, or rows for the plain kernel): the larger bound.
  const int s = std::max(splits_for(n_rows, n_heads, max_ctx), splits_for(n_groups, n_heads, max_ctx));
  return s == 1 ? 0 : n_rows * n_heads * s * static_cast<int64_t>(head_dim + 2);
}

void attention(const AttentionArgs& a, cudaStream_t stream) {
  if (a.n_rows == 0) return;
  const int hd = a.kv.head_dim;
  if (hd > kMaxHeadDim || hd <= 0)
    throw Error(ErrorKind::unsupported, "CUDA attention: head dim " + std::to_string(hd) +
                                            " (at most " + std::to_string(kMaxHeadDim) + ")");
  if (a.n_heads % a.kv.n_kv_heads != 0)
    throw Error(ErrorKind::unsupported, "CUDA attention: " + std::to_string(a.n_heads) +
                                            " heads over " + std::to_string(a.kv.n_kv_heads) +
                                            " KV heads");
  if (a.tiles != nullptr && a.n_tiles > 0 && flash_attention_supported(hd)) {
    flash_attention(a, stream);
    return;
  }
  const bool staged = hd % 16 == 0 && hd <= kStageMaxDim && a.groups != nullptr;
  const int64_t n_items = staged ? a.n_groups : a.n_rows;
  const int n_splits = splits_for(n_items, a.n_heads, a.max_ctx);
  const unsigned grid = blocks_for(n_items * a.n_heads * n_splits, kWarps);
  const int dpl = (hd + 31) / 32;
  if (staged) {
    const int r = a.group_rows;
#define PENSIEVE_STAGED_Q(D, Q)                                                                          \
  if (r == 1) launch_dependent(attention_staged_kernel<D, 1, Q>, grid, kWarps * 32, 0, stream, a, n_splits); \
  else launch_dependent(attention_staged_kernel<D, 4, Q>, grid, kWarps * 32, 0, stream, a, n_splits);
#define PENSIEVE_STAGED(D) \
  if (a.kv.q8) {           \
    PENSIEVE_STAGED_Q(D, true)  \
  } else {                 \
    PENSIEVE_STAGED_Q(D, false) \
  }
    switch (dpl) {
      case 1: PENSIEVE_STAGED(1) break;
      case 2: PENSIEVE_STAGED(2) break;
      case 3: PENSIEVE_STAGED(3) break;
      default: PENSIEVE_STAGED(4) break;
    }
#undef PENSIEVE_STAGED
#undef PENSIEVE_STAGED_Q
  } else {
    switch (dpl) {
      case 1: launch_dependent(attention_kernel<1>, grid, kWarps * 32, 0, stream, a, n_splits); break;
      case 2: launch_dependent(attention_kernel<2>, grid, kWarps * 32, 0, stream, a, n_splits); break;
      case 3: launch_dependent(attention_kernel<3>, grid, kWarps * 32, 0, stream, a, n_splits); break;
      case 4: launch_dependent(attention_kernel<4>, grid, kWarps * 32, 0, stream, a, n_splits); break;
      default: launch_dependent(attention_kernel<8>, grid, kWarps * 32, 0, stream, a, n_splits); break;
    }
  }
  PENSIEVE_CUDA_LAUNCHED("attention");
  if (n_splits > 1) {
    const unsigned cgrid = static_cast<unsigned>(a.n_rows * a.n_heads);
    switch (dpl) {
      case 1: launch_dependent(combine_kernel<1>, cgrid, kCombineWarps * 32, 0, stream, a, n_splits); break;
      case 2: launch_dependent(combine_kernel<2>, cgrid, kCombineWarps * 32, 0, stream, a, n_splits); break;
      case 3: launch_dependent(combine_kernel<3>, cgrid, kCombineWarps * 32, 0, stream, a, n_splits); break;
      case 4: launch_dependent(combine_kernel<4>, cgrid, kCombineWarps * 32, 0, stream, a, n_splits); break;
      default: launch_dependent(combine_kernel<8>, cgrid, kCombineWarps * 32, 0, stream, a, n_splits); break;
    }
    PENSIEVE_CUDA_LAUNCHED("attention combine");
  }
}

}  // namespace pensieve::cuda
