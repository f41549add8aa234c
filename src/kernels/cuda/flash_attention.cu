// Prompt attention on the tensor cores (flash-attention style) over the
// paged half-float KV cache.
//
// A block takes one tile of up to 64 query rows of one sequence and one
// head; each of its 4 warps owns 16 rows. The block walks the tile's keys 64
// at a time (4 KV blocks of 16): K and V of the next 64 keys are copied into
// shared memory (cp.async, 16 bytes a thread, two stages) while the current
// ones are used. A warp computes its 16 x 64 scores with mma.sync
// (m16n8k16, f16 operands, f32 accumulators), masks them where the tile
// straddles the causal diagonal or the sliding window, takes the softmax
// online per row, and multiplies the probabilities, rounded to f16 straight
// from the score registers, by V into its 16 x head_dim output registers.
//
// Fragment layouts (PTX ISA, mma.m16n8k16 .row.col): with g = lane / 4 and
// c = 2 * (lane % 4), A holds rows g and g + 8 at columns c, c + 1 and
// c + 8, c + 9; B holds k = c, c + 1 and c + 8, c + 9 at column g; C holds
// rows g and g + 8 at columns c, c + 1. K is stored [dim][16 keys] and V
// [key][dim], so both B operands load with ldmatrix .trans; Q with plain
// ldmatrix. The C layout of two adjacent 8-key score tiles is the A layout
// of a 16-key probability chunk, so P never leaves registers.
#include <cfloat>

#include "kernels/cuda/kernels.h"

namespace pensieve::cuda {
namespace {

constexpr int kFaRows = 64;   // query rows per block
constexpr int kFaKeys = 64;   // keys per step
constexpr int kFaWarps = 4;
constexpr int kFaThreads = kFaWarps * 32;

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  // With a source size of 0 the 16 bytes are zero-filled.
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

// d += a · b (16x16 by 16x8, f16 in, f32 accumulate).
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}

// Shared memory, in halves: Q [64][HD + 8], then two stages of K [HD][64 + 8]
// and V [64][HD + 8]. The padding puts the 8 rows an ldmatrix reads in 8
// different 16-byte bank groups.
//
// q8 (Q8): the two stages hold the raw int8 heads and scales of the 4 KV
// blocks (K then V, cp.async as for f16), and one f16 stage after Q is
// what the warps read: once a raw stage has landed, every thread converts
// its share into it.
template <int HD, bool Q8>
struct FaLayout {
  static constexpr int kQStride = HD + 8;
  static constexpr int kKStride = kFaKeys + 8;
  static constexpr int kVStride = HD + 8;
  static constexpr int kQ = kFaRows * kQStride;
  static constexpr int kK = HD * kKStride;
  static constexpr int kV = kFaKeys * kVStride;
  static constexpr int kStage = kK + kV;
  static constexpr int kHeadBytes = HD * 16 + HD / 32 * 16 * 4;  // a q8 head (groups of 32)
  static constexpr int kRawStage = 8 * kHeadBytes;                 // bytes: 4 blocks' K, then V
  static constexpr size_t kBytes = static_cast<size_t>(kQ + (Q8 ? 1 : 2) * kStage) * sizeof(__half) +
                                   (Q8 ? 2 * static_cast<size_t>(kRawStage) : 0);
};

template <int HD, bool Q8>
__global__ void __launch_bounds__(kFaThreads) flash_attention_kernel(AttentionArgs a) {
  using L = FaLayout<HD, Q8>;
  constexpr int kChunks = HD / 16;  // 16-wide slices of the head
  extern __shared__ __align__(16) __half fa_smem[];
  __half* qs = fa_smem;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, c = 2 * (lane % 4);

  // The heaviest tiles (last in their sequence) first.
  const int64_t tile = a.n_tiles - 1 - blockIdx.x;
  const int head = blockIdx.y;
  const int64_t row0 = a.tiles[2 * tile];
  const int count = a.tiles[2 * tile + 1];
  const int nkv = a.kv.n_kv_heads;
  const int kvh = head / (a.n_heads / nkv);
  const GpuSeq seq = a.seqs[a.row_seq[row0]];
  const int pos0 = seq.n_ctx - seq.n_q + static_cast<int>(row0 - seq.q_row);
  const int32_t* table = a.tables + seq.table_offset;
  const int n_table = (seq.n_ctx + 15) / 16;
  const int W = a.window;

  // The block's keys: from the first row's window start (block-aligned) to
  // the last row's position.
  const int key_end = pos0 + count;
  const int key_first = W > 0 && pos0 - W + 1 > 0 ? pos0 - W + 1 : 0;
  const int key_begin = key_first / 16 * 16;
  const int n_steps = (key_end - key_begin + kFaKeys - 1) / kFaKeys;

  // Q rows as f16 (rows past the tile are zeros).
  const int64_t qld = static_cast<int64_t>(a.n_heads) * HD;
  for (int e = tid; e < kFaRows * (HD / 4); e += kFaThreads) {
    const int r = e / (HD / 4), d = (e % (HD / 4)) * 4;
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    if (r < count) v = *reinterpret_cast<const float4*>(a.q + (row0 + r) * qld + head * HD + d);
    __half2* dst = reinterpret_cast<__half2*>(qs + r * L::kQStride + d);
    dst[0] = __floats2half2_rn(v.x, v.y);
    dst[1] = __floats2half2_rn(v.z, v.w);
  }

  uint8_t* raw = reinterpret_cast<uint8_t*>(fa_smem + L::kQ + L::kStage);  // Q8: two raw stages
  auto load_raw = [&](int step, int stage) {
    uint8_t* dst = raw + stage * L::kRawStage;
    const int kb = key_begin / 16 + step * (kFaKeys / 16);
    constexpr int kUnits = L::kHeadBytes / 16;
    for (int e = tid; e < 8 * kUnits; e += kFaThreads) {
      const int which = e / kUnits, u = e % kUnits;  // which: K of blocks 0-3, then V
      const int b = kb + which % 4;
      const bool ok = b < n_table;
      const uint8_t* src = which < 4 ? a.kv.k : a.kv.v;
      if (ok) src += a.kv.head_offset(table[b], kvh) + 16 * u;
      cp_async16(dst + which * L::kHeadBytes + 16 * u, src, ok);
    }
  };
  // A landed raw stage as halves into the f16 stage (q8 heads: int8 values
  // times their group's scale; blocks past the table are zeros).
  auto convert_raw = [&](int stage) {
    const uint8_t* src = raw + stage * L::kRawStage;
    __half* ks = fa_smem + L::kQ;
    __half* vs = ks + L::kK;
    for (int e = tid; e < 4 * HD * 2; e += kFaThreads) {  // K: (block, dim, 8 keys)
      const int blk = e / (HD * 2), d = (e % (HD * 2)) / 2, piece = e % 2;
      const uint8_t* head = src + blk * L::kHeadBytes;
      const uint2 q = *reinterpret_cast<const uint2*>(head + d * 16 + piece * 8);
      const float* sc = reinterpret_cast<const float*>(head + HD * 16) + (d / 32) * 16 + piece * 8;
      uint32_t h[4];
      __half2 v[4];
      i8x4_to_half2(q.x, v[0], v[1]);
      i8x4_to_half2(q.y, v[2], v[3]);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float2 f = __half22float2(v[i]);
        h[i] = pack_half2(f.x * sc[2 * i], f.y * sc[2 * i + 1]);
      }
      *reinterpret_cast<uint4*>(ks + d * L::kKStride + blk * 16 + piece * 8) = make_uint4(h[0], h[1], h[2], h[3]);
    }
    for (int e = tid; e < 4 * 16 * (HD / 8); e += kFaThreads) {  // V: (block, key, 8 dims)
      const int blk = e / (16 * (HD / 8)), rest = e % (16 * (HD / 8));
      const int key = rest / (HD / 8), piece = rest % (HD / 8);
      const uint8_t* head = src + (4 + blk) * L::kHeadBytes;
      const uint2 q = *reinterpret_cast<const uint2*>(head + key * HD + piece * 8);
      const float sc = reinterpret_cast<const float*>(head + HD * 16)[key * (HD / 32) + piece / 4];
      uint32_t h[4];
      __half2 v[4];
      i8x4_to_half2(q.x, v[0], v[1]);
      i8x4_to_half2(q.y, v[2], v[3]);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float2 f = __half22float2(v[i]);
        h[i] = pack_half2(f.x * sc, f.y * sc);
      }
      *reinterpret_cast<uint4*>(vs + (blk * 16 + key) * L::kVStride + piece * 8) = make_uint4(h[0], h[1], h[2], h[3]);
    }
  };
  const int64_t head_stride = static_cast<int64_t>(HD) * 16;
  auto load_stage = [&](int step, int stage) {
    if constexpr (Q8) return load_raw(step, stage);
    __half* ks = fa_smem + L::kQ + stage * L::kStage;
    __half* vs = ks + L::kK;
    const int kb = key_begin / 16 + step * (kFaKeys / 16);  // first KV block of the step
    // K: per block, HD rows of 16 keys (32 bytes: two 16-byte pieces).
    for (int e = tid; e < 4 * HD * 2; e += kFaThreads) {
      const int blk = e / (HD * 2), rest = e % (HD * 2);
      const int d = rest / 2, piece = rest % 2;
      const int b = kb + blk;
      const bool ok = b < n_table;
      const __half* src = reinterpret_cast<const __half*>(a.kv.k);
      if (ok) src += (static_cast<int64_t>(table[b]) * nkv + kvh) * head_stride + d * 16 + piece * 8;
      cp_async16(ks + d * L::kKStride + blk * 16 + piece * 8, src, ok);
    }
    // V: per block, 16 rows of HD (HD / 8 pieces each).
    for (int e = tid; e < 4 * 16 * (HD / 8); e += kFaThreads) {
      const int blk = e / (16 * (HD / 8)), rest = e % (16 * (HD / 8));
      const int key = rest / (HD / 8), piece = rest % (HD / 8);
      const int b = kb + blk;
      const bool ok = b < n_table;
      const __half* src = reinterpret_cast<const __half*>(a.kv.v);
      if (ok) src += (static_cast<int64_t>(table[b]) * nkv + kvh) * head_stride + key * HD + piece * 8;
      cp_async16(vs + (blk * 16 + key) * L::kVStride + piece * 8, src, ok);
    }
  };

  // This warp's rows: positions p_lo = pos0 + 16·warp + g and p_lo + 8.
  const int wrow = warp * 16;
  const bool warp_active = wrow < count;
  const int p_lo = pos0 + wrow + g, p_hi = p_lo + 8;
  const bool lo_ok = wrow + g < count, hi_ok = wrow + g + 8 < count;
  const int warp_last = pos0 + min(wrow + 15, count - 1);  // the warp's last position
  const int warp_first_key = W > 0 && pos0 + wrow - W + 1 > 0 ? pos0 + wrow - W + 1 : 0;

  if (n_steps > 0) load_stage(0, 0);
  cp_async_commit();
  __syncthreads();  // Q is in shared memory

  uint32_t qa[kChunks][4];
  if (warp_active) {
#pragma unroll
    for (int kc = 0; kc < kChunks; ++kc) {
      const int i = lane / 8, r = lane % 8;
      ldmatrix_x4(qa[kc], qs + (wrow + (i % 2) * 8 + r) * L::kQStride + kc * 16 + (i / 2) * 8);
    }
  }

  constexpr int kOTiles = HD / 8;
  float o[kOTiles][4];
#pragma unroll
  for (int t = 0; t < kOTiles; ++t) o[t][0] = o[t][1] = o[t][2] = o[t][3] = 0.f;
  float m_lo = -INFINITY, m_hi = -INFINITY, l_lo = 0.f, l_hi = 0.f;
  const float scale2 = a.scale * 1.4426950408889634f;  // exp(x) = exp2(x · log2 e)

  for (int step = 0; step < n_steps; ++step) {
    const int stage = step & 1;
    if (step + 1 < n_steps) load_stage(step + 1, stage ^ 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    if constexpr (Q8) {
      convert_raw(stage);
      __syncthreads();
    }
    const int k0 = key_begin + step * kFaKeys;
    // Skip steps wholly outside this warp's rows (past its last position,
    // or before its first row's window).
    if (warp_active && k0 <= warp_last && k0 + kFaKeys > warp_first_key) {
      const __half* ks = fa_smem + L::kQ + (Q8 ? 0 : stage) * L::kStage;
      const __half* vs = ks + L::kK;
      float s[8][4];
#pragma unroll
      for (int t = 0; t < 8; ++t) s[t][0] = s[t][1] = s[t][2] = s[t][3] = 0.f;
#pragma unroll
      for (int kc = 0; kc < kChunks; ++kc) {
#pragma unroll
        for (int kp = 0; kp < 4; ++kp) {  // 16 keys: two 8-key tiles
          uint32_t b[4];
          const int i = lane / 8, r = lane % 8;
          ldmatrix_x4_trans(b, ks + (kc * 16 + (i % 2) * 8 + r) * L::kKStride + kp * 16 + (i / 2) * 8);
          mma16816(s[2 * kp], qa[kc], b[0], b[1]);
          mma16816(s[2 * kp + 1], qa[kc], b[2], b[3]);
        }
      }
      // Mask where some key of the step is outside some row's range.
      const bool full = k0 + kFaKeys - 1 <= pos0 + wrow && (W == 0 || k0 >= warp_last - W + 1) &&
                        wrow + 16 <= count;
      if (!full) {
#pragma unroll
        for (int t = 0; t < 8; ++t) {
#pragma unroll
          for (int j = 0; j < 2; ++j) {
            const int key = k0 + t * 8 + c + j;
            const bool v_lo = lo_ok && key <= p_lo && (W == 0 || key > p_lo - W);
            const bool v_hi = hi_ok && key <= p_hi && (W == 0 || key > p_hi - W);
            if (!v_lo) s[t][j] = -INFINITY;
            if (!v_hi) s[t][2 + j] = -INFINITY;
          }
        }
      }
      // Online softmax: the row maxima over the quad that shares a row.
      float mx_lo = m_lo, mx_hi = m_hi;
#pragma unroll
      for (int t = 0; t < 8; ++t) {
        mx_lo = fmaxf(mx_lo, fmaxf(s[t][0], s[t][1]));
        mx_hi = fmaxf(mx_hi, fmaxf(s[t][2], s[t][3]));
      }
#pragma unroll
      for (int off = 1; off < 4; off <<= 1) {
        mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, off));
        mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, off));
      }
      // A row with no key yet keeps -inf; subtract 0 there (all its p are 0).
      const float base_lo = mx_lo == -INFINITY ? 0.f : mx_lo * scale2;
      const float base_hi = mx_hi == -INFINITY ? 0.f : mx_hi * scale2;
      const float corr_lo = exp2f(m_lo * scale2 - base_lo);
      const float corr_hi = exp2f(m_hi * scale2 - base_hi);
      m_lo = mx_lo;
      m_hi = mx_hi;
      float sum_lo = 0.f, sum_hi = 0.f;
#pragma unroll
      for (int t = 0; t < 8; ++t) {
        s[t][0] = exp2f(s[t][0] * scale2 - base_lo);
        s[t][1] = exp2f(s[t][1] * scale2 - base_lo);
        s[t][2] = exp2f(s[t][2] * scale2 - base_hi);
        s[t][3] = exp2f(s[t][3] * scale2 - base_hi);
        sum_lo += s[t][0] + s[t][1];
        sum_hi += s[t][2] + s[t][3];
      }
      l_lo = l_lo * corr_lo + sum_lo;
      l_hi = l_hi * corr_hi + sum_hi;
#pragma unroll
      for (int t = 0; t < kOTiles; ++t) {
        o[t][0] *= corr_lo;
        o[t][1] *= corr_lo;
        o[t][2] *= corr_hi;
        o[t][3] *= corr_hi;
      }
      // O += P · V, 16 keys at a time.
#pragma unroll
      for (int kp = 0; kp < 4; ++kp) {
        const uint32_t pa[4] = {pack_half2(s[2 * kp][0], s[2 * kp][1]),
                                pack_half2(s[2 * kp][2], s[2 * kp][3]),
                                pack_half2(s[2 * kp + 1][0], s[2 * kp + 1][1]),
                                pack_half2(s[2 * kp + 1][2], s[2 * kp + 1][3])};
#pragma unroll
        for (int dp = 0; dp < kChunks; ++dp) {  // 16 dims: two 8-dim tiles
          uint32_t b[4];
          const int i = lane / 8, r = lane % 8;
          ldmatrix_x4_trans(b, vs + (kp * 16 + (i % 2) * 8 + r) * L::kVStride + dp * 16 + (i / 2) * 8);
          mma16816(o[2 * dp], pa, b[0], b[1]);
          mma16816(o[2 * dp + 1], pa, b[2], b[3]);
        }
      }
    }
    __syncthreads();  // this stage is refilled two steps on
  }
  cp_async_wait<0>();

  if (!warp_active) return;
#pragma unroll
  for (int off = 1; off < 4; off <<= 1) {
    l_lo += __shfl_xor_sync(0xffffffffu, l_lo, off);
    l_hi += __shfl_xor_sync(0xffffffffu, l_hi, off);
  }
  const float inv_lo = l_lo > 0.f ? 1.f / l_lo : 0.f;
  const float inv_hi = l_hi > 0.f ? 1.f / l_hi : 0.f;
  float* out_lo = a.out + (row0 + wrow + g) * qld + head * HD;
  float* out_hi = out_lo + 8 * qld;
#pragma unroll
  for (int t = 0; t < kOTiles; ++t) {
    if (lo_ok) *reinterpret_cast<float2*>(out_lo + t * 8 + c) = make_float2(o[t][0] * inv_lo, o[t][1] * inv_lo);
    if (hi_ok) *reinterpret_cast<float2*>(out_hi + t * 8 + c) = make_float2(o[t][2] * inv_hi, o[t][3] * inv_hi);
  }
}

template <int HD, bool Q8>
void launch_q(const AttentionArgs& a, cudaStream_t stream) {
  constexpr size_t bytes = FaLayout<HD, Q8>::kBytes;
  static bool configured = false;  // once per process (the attribute is per function)
  if (!configured) {
    PENSIEVE_CUDA_CHECK(cudaFuncSetAttribute(flash_attention_kernel<HD, Q8>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             static_cast<int>(bytes)));
    configured = true;
  }
  const dim3 grid(static_cast<unsigned>(a.n_tiles), static_cast<unsigned>(a.n_heads));
  flash_attention_kernel<HD, Q8><<<grid, kFaThreads, bytes, stream>>>(a);
  PENSIEVE_CUDA_LAUNCHED("flash attention");
}

template <int HD>
void launch(const AttentionArgs& a, cudaStream_t stream) {
  if (a.kv.q8) launch_q<HD, true>(a, stream);
  else launch_q<HD, false>(a, stream);
}

}  // namespace

bool flash_attention_supported(int head_dim) {
  return head_dim == 32 || head_dim == 64 || head_dim == 96 || head_dim == 128;
}

void flash_attention(const AttentionArgs& a, cudaStream_t stream) {
  if (a.n_tiles == 0) return;
  switch (a.kv.head_dim) {
    case 32: launch<32>(a, stream); break;
    case 64: launch<64>(a, stream); break;
    case 96: launch<96>(a, stream); break;
    case 128: launch<128>(a, stream); break;
    default:
      throw Error(ErrorKind::internal,
                  "flash attention: head dim " + std::to_string(a.kv.head_dim));
  }
}

}  // namespace pensieve::cuda
