// Row-wise CUDA operations: embedding, norms, residual adds, SiLU, and the
// projections' epilogue (bias, q/k norm, rope, KV write). Arithmetic is f32
// in the CPU kernels' order where it matters (norm before rope, bias before
// norm); K and V are rounded to half floats as the CPU rounds them.
#include "kernels/cuda/kernels.h"

namespace pensieve::cuda {
namespace {

constexpr int kThreads = 256;

// A block per row: decode's few rows get wide blocks (each thread's share
// of a row is a chain of dependent loads), prompts' many rows narrow ones.
unsigned threads_for(int64_t n_rows) { return n_rows <= 8 ? 1024 : kThreads; }

// Sum over the block (blockDim.x a multiple of 32, at most 1024).
__device__ float block_sum(float v) {
  __shared__ float partial[32];
  v = warp_sum(v);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  const int n_warps = blockDim.x / 32;
  v = threadIdx.x < n_warps ? partial[threadIdx.x] : 0.f;
  if (warp == 0) v = warp_sum(v);
  if (threadIdx.x == 0) partial[0] = v;
  __syncthreads();
  v = partial[0];
  __syncthreads();  // partial is reused by the next call
  return v;
}

__global__ void embed_kernel(GpuWeight table, const int32_t* tokens, int64_t dim, float* x) {
  pdl_trigger();  // the next kernel may launch (embed follows the step's copies: a plain launch)
  const int64_t r = blockIdx.x;
  const int64_t tok = tokens[r];
  for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) x[r * dim + c] = weight_at(table, tok, c);
}

__global__ void rms_norm_kernel(const float* x, const int32_t* rows, const float* w, int64_t dim,
                                float eps, float* out) {
  pdl_wait();  // launched as a dependent
  pdl_trigger();
  const int64_t r = blockIdx.x;
  const float* xr = x + (rows ? rows[r] : r) * dim;
  float ss = 0.f;
  for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) ss += xr[c] * xr[c];
  const float inv = rsqrtf(block_sum(ss) / static_cast<float>(dim) + eps);
  for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) out[r * dim + c] = w[c] * (xr[c] * inv);
}

__global__ void add_rms_norm_kernel(float* x, const float* delta, const float* bias,
                                    const float* w, int64_t dim, float eps, float* h) {
  pdl_wait();  // launched as a dependent
  pdl_trigger();
  const int64_t r = blockIdx.x;
  float* xr = x + r * dim;
  const float* dr = delta + r * dim;
  float ss = 0.f;
  for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) {
    const float d = bias ? dr[c] + bias[c] : dr[c];
    const float v = xr[c] + d;
    xr[c] = v;
    ss += v * v;
  }
  if (w == nullptr) return;
  const float inv = rsqrtf(block_sum(ss) / static_cast<float>(dim) + eps);
  for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) h[r * dim + c] = w[c] * (xr[c] * inv);
}

__global__ void silu_mul_kernel(const float* gu, int64_t n, float* out) {
  pdl_wait();  // launched as a dependent
  pdl_trigger();
  const int64_t r = blockIdx.y;
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const float g = gu[r * 2 * n + i];
  out[r * n + i] = g / (1.0f + expf(-g)) * gu[r * 2 * n + n + i];
}

// One warp per (row, head slot): slots [0, nh) are q heads, [nh, nh+nkv) k
// heads, the rest v heads.
// One warp per (row, head slot). Everything the warp reads is asked for at
// once (the head's values, its bias, the row's cos and sin, the KV slot),
// the head is kept in registers and, for rope's pairs, in shared memory:
// one round trip to memory instead of one per step (run 17's ncu: 5.3 µs
// for a decode row, nearly all of it waiting on global loads). qkv itself
// is left as it was (scratch).
constexpr int kQkvWarps = 4;
constexpr int kQkvMaxDpl = 8;  // head_dim up to 256

template <int DPL>
__global__ void __launch_bounds__(kQkvWarps * 32)
    qkv_post_kernel(QkvPostArgs a, const float* qkv, const float* cos, const float* sin, const int32_t* slots,
                    int64_t n_rows, float* q, GpuKvLayer kv) {
  pdl_wait();  // launched as a dependent
  pdl_trigger();
  __shared__ float shared_head[kQkvWarps][32 * DPL];
  const int n_slots = a.n_heads + 2 * a.n_kv_heads;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t item = blockIdx.x * static_cast<int64_t>(kQkvWarps) + warp;
  if (item >= n_rows * n_slots) return;
  const int64_t r = item / n_slots;
  const int slot = static_cast<int>(item % n_slots);
  const int hd = a.head_dim, half = a.rot_dim / 2;
  const int64_t ld = static_cast<int64_t>(n_slots) * hd;
  const float* head = qkv + r * ld + static_cast<int64_t>(slot) * hd;
  const bool is_q = slot < a.n_heads, is_k = !is_q && slot < a.n_heads + a.n_kv_heads;
  const bool rotate = is_q || is_k;
  float v[DPL], c[DPL], sn[DPL];
#pragma unroll
  for (int k = 0; k < DPL; ++k) {
    const int d = lane + 32 * k;
    v[k] = d < hd ? head[d] : 0.f;
    if (a.bias && d < hd) v[k] += a.bias[static_cast<int64_t>(slot) * hd + d];
    c[k] = rotate && d < half ? cos[r * half + d] : 0.f;
    sn[k] = rotate && d < half ? sin[r * half + d] : 0.f;
  }
  const int64_t kv_slot = rotate && is_q ? 0 : slots[r];
  const float* norm = is_q ? a.q_norm : (is_k ? a.k_norm : nullptr);
  if (norm) {
    float ss = 0.f;
#pragma unroll
    for (int k = 0; k < DPL; ++k) ss += v[k] * v[k];
    const float inv = rsqrtf(warp_sum(ss) / static_cast<float>(hd) + a.eps);
#pragma unroll
    for (int k = 0; k < DPL; ++k) {
      const int d = lane + 32 * k;
      if (d < hd) v[k] = norm[d] * (v[k] * inv);
    }
  }
  float* sh = shared_head[warp];
  if (rotate) {
#pragma unroll
    for (int k = 0; k < DPL; ++k) sh[lane + 32 * k] = v[k];
    __syncwarp();
#pragma unroll
    for (int k = 0; k < DPL; ++k) {
      const int i = lane + 32 * k;
      if (i < half) {
        const float x1 = sh[i], x2 = sh[i + half];
        v[k] = x1 * c[k] - x2 * sn[k];  // dimension i (this lane's own)
        c[k] = x2 * c[k] + x1 * sn[k];  // dimension i + half, written below
      }
    }
    __syncwarp();
#pragma unroll
    for (int k = 0; k < DPL; ++k) {
      const int i = lane + 32 * k;
      if (i < half) {
        sh[i] = v[k];
        sh[i + half] = c[k];
      }
    }
    __syncwarp();
#pragma unroll
    for (int k = 0; k < DPL; ++k) v[k] = sh[lane + 32 * k];
  }
  if (is_q) {
    float* qr = q + r * static_cast<int64_t>(a.n_heads) * hd + static_cast<int64_t>(slot) * hd;
#pragma unroll
    for (int k = 0; k < DPL; ++k) {
      const int d = lane + 32 * k;
      if (d < hd) qr[d] = v[k];
    }
    return;
  }
  const int64_t block = kv_slot / 16, off = kv_slot % 16;
  const int kvh = is_k ? slot - a.n_heads : slot - a.n_heads - a.n_kv_heads;
  uint8_t* hp = (is_k ? kv.k : kv.v) + kv.head_offset(block, kvh);
  if (!kv.q8) {
    __half* h = reinterpret_cast<__half*>(hp);
#pragma unroll
    for (int k = 0; k < DPL; ++k) {
      const int d = lane + 32 * k;
      if (d >= hd) continue;
      if (is_k) h[d * 16 + off] = __float2half_rn(v[k]);
      else h[off * hd + d] = __float2half_rn(v[k]);
    }
    return;
  }
  // q8 (core/kv_geometry.h): per group of kv.group dimensions (8, 16 or 32:
  // a run of lanes) scale = max|x| / 127 and q = round(x / scale), as the
  // CPU's quantize_q8 computes it.
  const int G = kv.group, ng = hd / G;
  float* scales = reinterpret_cast<float*>(hp + hd * 16);
#pragma unroll
  for (int k = 0; k < DPL; ++k) {
    const int d = lane + 32 * k;
    const float x = d < hd ? v[k] : 0.f;
    float amax = fabsf(x);
    for (int o = G / 2; o >= 1; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    if (d >= hd) continue;
    const float inv = amax > 0.f ? 127.f / amax : 0.f;
    const int qv = max(-127, min(127, __float2int_rn(x * inv)));
    const uint8_t byte = static_cast<uint8_t>(static_cast<int8_t>(qv));
    if (is_k) hp[d * 16 + off] = byte;
    else hp[off * hd + d] = byte;
    if (d % G == 0) {
      const float sc = amax / 127.f;
      if (is_k) scales[(d / G) * 16 + off] = sc;
      else scales[off * ng + d / G] = sc;
    }
  }
}

}  // namespace

void embed(const GpuWeight& table, const int32_t* tokens, int64_t n_rows, float* x,
           cudaStream_t stream) {
  if (n_rows == 0) return;
  embed_kernel<<<static_cast<unsigned>(n_rows), kThreads, 0, stream>>>(table, tokens, table.cols, x);
  PENSIEVE_CUDA_LAUNCHED("embed");
}

void rms_norm(const float* x, const int32_t* rows, const float* w, int64_t n_rows, int64_t dim,
              float eps, float* out, cudaStream_t stream) {
  if (n_rows == 0) return;
  launch_dependent(rms_norm_kernel, static_cast<unsigned>(n_rows), threads_for(n_rows), 0, stream, x, rows, w,
                   dim, eps, out);
  PENSIEVE_CUDA_LAUNCHED("rms_norm");
}

void add_rms_norm(float* x, const float* delta, const float* bias, const float* w, int64_t n_rows,
                  int64_t dim, float eps, float* h, cudaStream_t stream) {
  if (n_rows == 0) return;
  launch_dependent(add_rms_norm_kernel, static_cast<unsigned>(n_rows), threads_for(n_rows), 0, stream, x, delta,
                   bias, w, dim, eps, h);
  PENSIEVE_CUDA_LAUNCHED("add_rms_norm");
}

void silu_mul(const float* gu, int64_t n_rows, int64_t n, float* out, cudaStream_t stream) {
  if (n_rows == 0) return;
  const dim3 grid(blocks_for(n, kThreads), static_cast<unsigned>(n_rows));
  launch_dependent(silu_mul_kernel, grid, kThreads, 0, stream, gu, n, out);
  PENSIEVE_CUDA_LAUNCHED("silu_mul");
}

void qkv_post(const QkvPostArgs& a, float* qkv, const float* cos, const float* sin,
              const int32_t* slots, int64_t n_rows, float* q, const GpuKvLayer& kv,
              cudaStream_t stream) {
  if (n_rows == 0) return;
  const int64_t items = n_rows * (a.n_heads + 2 * a.n_kv_heads);
  const int dpl = (a.head_dim + 31) / 32;
  if (dpl > kQkvMaxDpl || a.rot_dim > a.head_dim)
    throw Error(ErrorKind::unsupported, "CUDA qkv_post: head dim " + std::to_string(a.head_dim) + " (at most " +
                                            std::to_string(32 * kQkvMaxDpl) + ")");
  const unsigned grid = blocks_for(items, kQkvWarps);
#define PENSIEVE_QKV(D)                                                                                         \
  case D:                                                                                                       \
    launch_dependent(qkv_post_kernel<D>, grid, kQkvWarps * 32, 0, stream, a, static_cast<const float*>(qkv), cos, \
                     sin, slots, n_rows, q, kv);                                                                \
    break;
  switch (dpl) {
    PENSIEVE_QKV(1)
    PENSIEVE_QKV(2)
    PENSIEVE_QKV(3)
    PENSIEVE_QKV(4)
    default: launch_dependent(qkv_post_kernel<8>, grid, kQkvWarps * 32, 0, stream, a, static_cast<const float*>(qkv),
                              cos, sin, slots, n_rows, q, kv);
  }
#undef PENSIEVE_QKV
  PENSIEVE_CUDA_LAUNCHED("qkv_post");
}

}  // namespace pensieve::cuda
