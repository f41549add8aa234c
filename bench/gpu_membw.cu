// The GPU's read bandwidth, the floor decode is measured against: kernels
// that only read (float4 loads, several in flight per thread, a sum kept so
// the loads stay), over a buffer much larger than L2, in chunks of a decode
// step's matrix sizes read one after another, as a decode step reads them.
//
//   gpu_membw [--mib TOTAL] [--chunk-mib C ...]
//
// Prints one JSON line per chunk size: the best of five passes.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

#define CHECK(x)                                                                             \
  do {                                                                                       \
    cudaError_t e = (x);                                                                     \
    if (e != cudaSuccess) {                                                                  \
      std::fprintf(stderr, "gpu_membw: %s: %s\n", #x, cudaGetErrorString(e));               \
      std::exit(1);                                                                          \
    }                                                                                        \
  } while (0)

constexpr int kUnroll = 4;

// Each block reads a contiguous share of the chunk (as the decode gemvs'
// warps read runs of rows), kUnroll 16-byte loads in flight per thread.
__global__ void read_kernel(const float4* __restrict__ p, size_t n, float* sink) {
  const size_t per_block = (n + gridDim.x - 1) / gridDim.x;
  const size_t begin = per_block * blockIdx.x, end = begin + per_block < n ? begin + per_block : n;
  float acc = 0.f;
  for (size_t i = begin + threadIdx.x; i < end; i += blockDim.x * kUnroll) {
    float4 v[kUnroll];
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      const size_t j = i + static_cast<size_t>(k) * blockDim.x;
      v[k] = j < end ? __ldg(p + j) : make_float4(0.f, 0.f, 0.f, 0.f);
    }
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) acc += v[k].x + v[k].y + v[k].z + v[k].w;
  }
  if (acc == 12345.678f) *sink = acc;  // never true: keeps the loads
}

}  // namespace

int main(int argc, char** argv) {
  size_t total_mib = 2048;
  std::vector<size_t> chunks;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--mib" && i + 1 < argc) total_mib = std::strtoull(argv[++i], nullptr, 10);
    else if (a == "--chunk-mib" && i + 1 < argc) chunks.push_back(std::strtoull(argv[++i], nullptr, 10));
    else {
      std::fprintf(stderr, "gpu_membw: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  if (chunks.empty()) chunks = {5, 13, 16, 26, 64};
  cudaDeviceProp prop{};
  CHECK(cudaGetDeviceProperties(&prop, 0));
  const size_t total = total_mib << 20;
  float4* buf = nullptr;
  float* sink = nullptr;
  CHECK(cudaMalloc(&buf, total));
  CHECK(cudaMalloc(&sink, sizeof(float)));
  CHECK(cudaMemset(buf, 0, total));
  cudaEvent_t t0, t1;
  CHECK(cudaEventCreate(&t0));
  CHECK(cudaEventCreate(&t1));
  for (const size_t chunk_mib : chunks) {
    const size_t chunk = chunk_mib << 20, n_chunks = total / chunk;
    if (n_chunks == 0) continue;
    for (const int blocks_per_sm : {2, 4, 8}) {
      const int grid = prop.multiProcessorCount * blocks_per_sm;
      float best = 1e30f;
      for (int pass = 0; pass < 5; ++pass) {
        CHECK(cudaEventRecord(t0));
        for (size_t c = 0; c < n_chunks; ++c)
          read_kernel<<<grid, 256>>>(buf + c * (chunk / 16), chunk / 16, sink);
        CHECK(cudaEventRecord(t1));
        CHECK(cudaEventSynchronize(t1));
        CHECK(cudaGetLastError());
        float ms = 0.f;
        CHECK(cudaEventElapsedTime(&ms, t0, t1));
        if (ms < best) best = ms;
      }
      std::printf("{\"device\": \"%s\", \"chunk_mib\": %zu, \"blocks_per_sm\": %d, \"bytes\": %zu, \"read_gb_s\": %.1f, "
                  "\"us_per_chunk\": %.2f}\n",
                  prop.name, chunk_mib, blocks_per_sm, n_chunks * chunk, n_chunks * chunk / (best * 1e6),
                  best * 1e3 / n_chunks);
    }
  }
  return 0;
}
