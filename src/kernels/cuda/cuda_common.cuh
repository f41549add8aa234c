// Shared pieces of the CUDA kernels: error checks, the weight view kernels
// take, and loads of every stored weight format as f32.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "core/error_type.h"

namespace pensieve::cuda {

#define PENSIEVE_CUDA_CHECK(expr)                                                         \
  do {                                                                                    \
    const cudaError_t pensieve_err_ = (expr);                                             \
    if (pensieve_err_ != cudaSuccess)                                                     \
      throw ::pensieve::Error(::pensieve::ErrorKind::internal,                            \
                              std::string("CUDA: " #expr " failed: ") +                   \
                                  cudaGetErrorString(pensieve_err_) + " (" __FILE__ ":" + \
                                  std::to_string(__LINE__) + ")");                        \
  } while (0)

// After every launch: a bad configuration shows here, a fault at the next sync.
#define PENSIEVE_CUDA_LAUNCHED(name) PENSIEVE_CUDA_CHECK(cudaGetLastError())

// Weight formats and scale types, numbered as quant/weight_matrix.h's enums.
enum : int { kF32 = 0, kF16 = 1, kBF16 = 2, kAffine4 = 3, kAffine8 = 4 };
enum : int { kScaleF32 = 0, kScaleF16 = 1, kScaleBF16 = 2 };

// A weight in device memory, by value into kernels.
struct GpuWeight {
  int format = kF32;
  int scale_type = kScaleBF16;
  int group_size = 0;
  int64_t rows = 0, cols = 0;
  const uint8_t* data = nullptr;
  const void* scales = nullptr;
  const void* biases = nullptr;

  __host__ __device__ int64_t row_bytes() const {
    switch (format) {
      case kF32: return cols * 4;
      case kF16:
      case kBF16: return cols * 2;
      case kAffine4: return cols / 2;
      default: return cols;
    }
  }
};

__device__ __forceinline__ float load_scale(const void* p, int type, int64_t i) {
  switch (type) {
    case kScaleF32: return static_cast<const float*>(p)[i];
    case kScaleF16: return __half2float(static_cast<const __half*>(p)[i]);
    default: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
  }
}

// w[r][c] as f32 (the scalar path every fast path is checked against).
__device__ __forceinline__ float weight_at(const GpuWeight& w, int64_t r, int64_t c) {
  const uint8_t* row = w.data + r * w.row_bytes();
  switch (w.format) {
    case kF32: return reinterpret_cast<const float*>(row)[c];
    case kF16: return __half2float(reinterpret_cast<const __half*>(row)[c]);
    case kBF16: return __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(row)[c]);
    default: break;
  }
  const int64_t g = r * (w.cols / w.group_size) + c / w.group_size;
  const float s = load_scale(w.scales, w.scale_type, g);
  const float b = load_scale(w.biases, w.scale_type, g);
  uint32_t q;
  if (w.format == kAffine4) {
    const uint32_t word = reinterpret_cast<const uint32_t*>(row)[c / 8];
    q = (word >> (4 * (c % 8))) & 0xFu;
  } else {
    const uint32_t word = reinterpret_cast<const uint32_t*>(row)[c / 4];
    q = (word >> (8 * (c % 4))) & 0xFFu;
  }
  return s * static_cast<float>(q) + b;
}

// A group's scale or bias, its type fixed at compile time (bf16 is its top
// 16 bits of an f32).
template <int ST>
__device__ __forceinline__ float scale_at(const void* p, int64_t i) {
  if constexpr (ST == kScaleF32) {
    return __ldg(static_cast<const float*>(p) + i);
  } else if constexpr (ST == kScaleF16) {
    return __half2float(__ldg(static_cast<const __half*>(p) + i));
  } else {
    return __uint_as_float(static_cast<uint32_t>(__ldg(static_cast<const unsigned short*>(p) + i)) << 16);
  }
}

// Four int8 values as two pairs of halves, exactly and without the
// conversion unit: each byte plus 128 under 0x64 is the half 1024 + that,
// and 1152 less is the value.
__device__ __forceinline__ void i8x4_to_half2(uint32_t w, __half2& lo, __half2& hi) {
  const uint32_t u = w ^ 0x80808080u;
  const uint32_t a = __byte_perm(u, 0x64646464u, 0x5140), b = __byte_perm(u, 0x64646464u, 0x5342);
  const __half2 bias = __half2half2(__ushort_as_half(0x6480));
  lo = __hsub2(*reinterpret_cast<const __half2*>(&a), bias);
  hi = __hsub2(*reinterpret_cast<const __half2*>(&b), bias);
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// silu(g) · u per lane, as silu_mul computes it.
__device__ __forceinline__ float4 silu_mul4(float4 g, float4 u) {
  return make_float4(g.x / (1.0f + expf(-g.x)) * u.x, g.y / (1.0f + expf(-g.y)) * u.y,
                     g.z / (1.0f + expf(-g.z)) * u.z, g.w / (1.0f + expf(-g.w)) * u.w);
}

// Programmatic dependent launch (sm_90). A kernel launched as a dependent
// (launch_dependent below) may start while the kernel before it still runs,
// and must call pdl_wait() before it touches anything that kernel, or any
// before it, reads or writes (every dependent waits, so waiting covers the
// whole chain); pdl_trigger() lets the next dependent start once every
// block of the calling kernel has called it (without it: once they have
// exited). Both are no-ops where no dependent launch is involved. The small
// kernels wait first and then trigger, so at most the next kernel is
// launched ahead; the 4-bit gemv loads its first weights before it waits.
__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ void pdl_trigger() { asm volatile("griddepcontrol.launch_dependents;"); }

// PENSIEVE_CUDA_PDL=0 launches every kernel after the one before it ends
// (read at every launch outside a graph replay).
inline bool pdl_enabled() {
  const char* e = std::getenv("PENSIEVE_CUDA_PDL");
  return e == nullptr || e[0] != '0';
}

// kernel<<<grid, block, smem, stream>>>(args...) as a programmatic dependent
// of the kernel before it on the stream. Only for kernels that follow a
// kernel (not a copy) and call pdl_wait() first.
template <typename... KArgs, typename... Args>
void launch_dependent(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                      Args... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl_enabled() ? 1 : 0;
  PENSIEVE_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, static_cast<KArgs>(args)...));
}

inline unsigned blocks_for(int64_t n, int64_t per_block) {
  return static_cast<unsigned>((n + per_block - 1) / per_block);
}

}  // namespace pensieve::cuda
