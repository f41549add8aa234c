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
__global__ void qkv_post_kernel(QkvPostArgs a, float* qkv, const float* cos, const float* sin,
                                const int32_t* slots, int64_t n_rows, float* q, GpuKvLayer kv) {
  pdl_wait();  // launched as a dependent
  pdl_trigger();
  const int n_slots = a.n_heads + 2 * a.n_kv_heads;
  const int64_t item = blockIdx.x * static_cast<int64_t>(blockDim.x / 32) + threadIdx.x / 32;
  if (item >= n_rows * n_slots) return;
  const int lane = threadIdx.x % 32;
  const int64_t r = item / n_slots;
  const int slot = static_cast<int>(item % n_slots);
  const int hd = a.head_dim, half = a.rot_dim / 2;
  const int64_t ld = static_cast<int64_t>(n_slots) * hd;
  float* head = qkv + r * ld + static_cast<int64_t>(slot) * hd;
  if (a.bias) {
    for (int d = lane; d < hd; d += 32) head[d] += a.bias[static_cast<int64_t>(slot) * hd + d];
    __syncwarp();
  }
  const bool is_q = slot < a.n_heads, is_k = !is_q && slot < a.n_heads + a.n_kv_heads;
  const float* norm = is_q ? a.q_norm : (is_k ? a.k_norm : nullptr);
  if (norm) {
    float ss = 0.f;
    for (int d = lane; d < hd; d += 32) ss += head[d] * head[d];
    const float inv = rsqrtf(warp_sum(ss) / static_cast<float>(hd) + a.eps);
    __syncwarp();
    for (int d = lane; d < hd; d += 32) head[d] = norm[d] * (head[d] * inv);
    __syncwarp();
  }
  if (is_q || is_k) {
    const float* cr = cos + r * half;
    const float* sr = sin + r * half;
    for (int i = lane; i < half; i += 32) {
      const float x1 = head[i], x2 = head[i + half];
      head[i] = x1 * cr[i] - x2 * sr[i];
      head[i + half] = x2 * cr[i] + x1 * sr[i];
    }
    __syncwarp();
  }
  if (is_q) {
    float* qr = q + r * static_cast<int64_t>(a.n_heads) * hd + static_cast<int64_t>(slot) * hd;
    for (int d = lane; d < hd; d += 32) qr[d] = head[d];
    return;
  }
  const int64_t s = slots[r];
  const int64_t block = s / 16, off = s % 16;
  const int kvh = is_k ? slot - a.n_heads : slot - a.n_heads - a.n_kv_heads;
  uint8_t* hp = (is_k ? kv.k : kv.v) + kv.head_offset(block, kvh);
  if (!kv.q8) {
    __half* h = reinterpret_cast<__half*>(hp);
    if (is_k) {
      for (int d = lane; d < hd; d += 32) h[d * 16 + off] = __float2half_rn(head[d]);
    } else {
      for (int d = lane; d < hd; d += 32) h[off * hd + d] = __float2half_rn(head[d]);
    }
    return;
  }
  // q8 (core/kv_geometry.h): per group of kv.group dimensions (8, 16 or 32:
  // a run of lanes) scale = max|x| / 127 and q = round(x / scale), as the
  // CPU's quantize_q8 computes it.
  const int G = kv.group, ng = hd / G;
  float* scales = reinterpret_cast<float*>(hp + hd * 16);
  for (int d0 = 0; d0 < hd; d0 += 32) {
    const int d = d0 + lane;
    const float x = d < hd ? head[d] : 0.f;
    float amax = fabsf(x);
    for (int o = G / 2; o >= 1; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    if (d >= hd) continue;
    const float inv = amax > 0.f ? 127.f / amax : 0.f;
    const int q = max(-127, min(127, __float2int_rn(x * inv)));
    const uint8_t byte = static_cast<uint8_t>(static_cast<int8_t>(q));
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
  constexpr int kWarps = 4;
  launch_dependent(qkv_post_kernel, blocks_for(items, kWarps), kWarps * 32, 0, stream, a, qkv, cos, sin, slots,
                   n_rows, q, kv);
  PENSIEVE_CUDA_LAUNCHED("qkv_post");
}

}  // namespace pensieve::cuda
