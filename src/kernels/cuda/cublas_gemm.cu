// Prompt matmuls on cuBLAS: the weight is dequantized into an f16 scratch
// copy (one weight at a time, so at most the largest weight's f16 size is
// ever held), the activations rounded to f16, and cublasGemmEx multiplies
// them on the tensor cores with f32 accumulation. Dequantizing costs a pass
// over the weight; with a few hundred tokens the product costs far more, and
// cuBLAS runs it several times faster than the built-in WMMA gemm.
//
// libcublas is loaded at run time (dlopen), not linked: a binary built with
// CUDA starts, and serves prompts on its own gemm, where the toolkit's
// libraries are not installed. PENSIEVE_CUBLAS=0 turns it off;
// PENSIEVE_CUBLAS=/path/libcublas.so.13 names the library. (Read when a
// backend is made, so a test can make one of each.)
#include <cublas_v2.h>
#include <dlfcn.h>

#include <cstdlib>
#include <mutex>

#include "kernels/cuda/kernels.h"

namespace pensieve::cuda {
namespace {

struct CublasApi {
  void* lib = nullptr;
  std::string why;  // empty when loaded
  cublasStatus_t (*create)(cublasHandle_t*) = nullptr;
  cublasStatus_t (*destroy)(cublasHandle_t) = nullptr;
  cublasStatus_t (*set_stream)(cublasHandle_t, cudaStream_t) = nullptr;
  cublasStatus_t (*get_version)(cublasHandle_t, int*) = nullptr;
  cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                            const void*, const void*, cudaDataType, int, const void*, cudaDataType,
                            int, const void*, void*, cudaDataType, int, cublasComputeType_t,
                            cublasGemmAlgo_t) = nullptr;
  const char* (*status_string)(cublasStatus_t) = nullptr;
};

const CublasApi& api() {
  static CublasApi a;
  static std::once_flag once;
  std::call_once(once, [] {
    const char* env = std::getenv("PENSIEVE_CUBLAS");
    const bool path = env != nullptr && *env != '\0' && std::string(env) != "0";
    const char* names[] = {path ? env : "libcublas.so.13", "libcublas.so"};
    for (const char* n : names) {
      a.lib = dlopen(n, RTLD_NOW | RTLD_LOCAL);
      if (a.lib != nullptr) break;
    }
    if (a.lib == nullptr) {
      a.why = std::string("libcublas.so.13 not found (") + dlerror() + ")";
      return;
    }
    auto sym = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(a.lib, name));
      if (fn == nullptr && a.why.empty()) a.why = std::string("libcublas lacks ") + name;
    };
    sym(a.create, "cublasCreate_v2");
    sym(a.destroy, "cublasDestroy_v2");
    sym(a.set_stream, "cublasSetStream_v2");
    sym(a.get_version, "cublasGetVersion_v2");
    sym(a.gemm_ex, "cublasGemmEx");
    sym(a.status_string, "cublasGetStatusString");
  });
  return a;
}

void check(cublasStatus_t st, const char* what) {
  if (st == CUBLAS_STATUS_SUCCESS) return;
  const char* s = api().status_string != nullptr ? api().status_string(st) : "error";
  throw Error(ErrorKind::internal, std::string("cuBLAS: ") + what + " failed: " + s);
}

// 8 consecutive values of a row as f16, from 8-aligned column c.
template <int FMT>
__global__ void dequantize8_kernel(GpuWeight w, __half* out) {
  const int64_t per_row = w.cols / 8;
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= w.rows * per_row) return;
  const int64_t r = i / per_row, c = (i % per_row) * 8;
  const uint8_t* row = w.data + r * w.row_bytes();
  float v[8];
  if constexpr (FMT == kAffine4 || FMT == kAffine8) {
    const int64_t g = r * (w.cols / w.group_size) + c / w.group_size;
    const float s = load_scale(w.scales, w.scale_type, g);
    const float b = load_scale(w.biases, w.scale_type, g);
    if constexpr (FMT == kAffine4) {
      const uint32_t word = *reinterpret_cast<const uint32_t*>(row + c / 2);
#pragma unroll
      for (int k = 0; k < 8; ++k) v[k] = fmaf(s, static_cast<float>((word >> (4 * k)) & 0xFu), b);
    } else {
      const uint2 words = *reinterpret_cast<const uint2*>(row + c);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        v[k] = fmaf(s, static_cast<float>((words.x >> (8 * k)) & 0xFFu), b);
        v[4 + k] = fmaf(s, static_cast<float>((words.y >> (8 * k)) & 0xFFu), b);
      }
    }
  } else {
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] = weight_at(w, r, c + k);
  }
  uint4 packed;
  uint32_t* p = reinterpret_cast<uint32_t*>(&packed);
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const __half2 h = __floats2half2_rn(v[2 * k], v[2 * k + 1]);
    p[k] = *reinterpret_cast<const uint32_t*>(&h);
  }
  *reinterpret_cast<uint4*>(out + r * w.cols + c) = packed;
}

// Any width: one value a thread.
__global__ void dequantize1_kernel(GpuWeight w, __half* out) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= w.rows * w.cols) return;
  out[i] = __float2half_rn(weight_at(w, i / w.cols, i % w.cols));
}

__global__ void to_half_kernel(const float* x, int64_t ldx, int64_t n_rows, int64_t cols, __half* out) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n_rows * cols) return;
  out[i] = __float2half_rn(x[(i / cols) * ldx + i % cols]);
}

}  // namespace

struct CublasContext {
  cublasHandle_t handle = nullptr;
  int version = 0;
};

static bool turned_off() {
  const char* env = std::getenv("PENSIEVE_CUBLAS");
  return env != nullptr && std::string(env) == "0";
}

std::string cublas_unavailable_reason() {
  return turned_off() ? "turned off by PENSIEVE_CUBLAS=0" : api().why;
}

CublasContext* cublas_open(cudaStream_t stream) {
  if (turned_off()) return nullptr;
  const CublasApi& a = api();
  if (!a.why.empty()) return nullptr;
  auto* ctx = new CublasContext;
  try {
    check(a.create(&ctx->handle), "cublasCreate");
    check(a.set_stream(ctx->handle, stream), "cublasSetStream");
    check(a.get_version(ctx->handle, &ctx->version), "cublasGetVersion");
  } catch (...) {
    if (ctx->handle != nullptr) a.destroy(ctx->handle);
    delete ctx;
    throw;
  }
  return ctx;
}

void cublas_close(CublasContext* ctx) {
  if (ctx == nullptr) return;
  api().destroy(ctx->handle);
  delete ctx;
}

int cublas_version(const CublasContext* ctx) { return ctx->version; }

void matmul_cublas(CublasContext* ctx, const GpuWeight& w, const float* x, int64_t ldx,
                   int64_t n_tokens, float* y, int64_t ldy, __half* w16, __half* x16,
                   cudaStream_t stream) {
  if (n_tokens == 0 || w.rows == 0) return;
  constexpr int kThreads = 256;
  if (w.cols % 8 == 0) {
    const unsigned grid = blocks_for(w.rows * (w.cols / 8), kThreads);
    switch (w.format) {
      case kAffine4: dequantize8_kernel<kAffine4><<<grid, kThreads, 0, stream>>>(w, w16); break;
      case kAffine8: dequantize8_kernel<kAffine8><<<grid, kThreads, 0, stream>>>(w, w16); break;
      default: dequantize8_kernel<kF32><<<grid, kThreads, 0, stream>>>(w, w16); break;
    }
  } else {
    dequantize1_kernel<<<blocks_for(w.rows * w.cols, kThreads), kThreads, 0, stream>>>(w, w16);
  }
  PENSIEVE_CUDA_LAUNCHED("dequantize");
  to_half_kernel<<<blocks_for(n_tokens * w.cols, kThreads), kThreads, 0, stream>>>(x, ldx, n_tokens,
                                                                                   w.cols, x16);
  PENSIEVE_CUDA_LAUNCHED("to_half");
  // Column-major view: y (rows x tokens, ld ldy) = w16ᵀ (rows x cols) · x16 (cols x tokens).
  const float one = 1.f, zero = 0.f;
  check(api().gemm_ex(ctx->handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(w.rows),
                      static_cast<int>(n_tokens), static_cast<int>(w.cols), &one, w16, CUDA_R_16F,
                      static_cast<int>(w.cols), x16, CUDA_R_16F, static_cast<int>(w.cols), &zero, y,
                      CUDA_R_32F, static_cast<int>(ldy), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
        "cublasGemmEx");
}

}  // namespace pensieve::cuda
