// Times kernels::matmul on a random MLX-affine weight, the way decode and
// prefill call it, and prints JSON: seconds per call and the weight bytes
// streamed per second. A weight larger than the caches measures the
// memory-bound decode path; a small one (--rows 512) the kernel's compute rate.
//
//   matmul_bench [--rows R] [--cols C] [--bits 4|8] [--group G] [--tokens T]
//                [--threads N] [--iters K] [--precise]
//   matmul_bench --vnni-peak [--threads N]
//
// --vnni-peak: the integer kernels' ceiling instead, a loop of independent
// vpdpbusd (64 u8 x s8 multiply-adds each) on every thread, as int8 GOPS
// (two operations a multiply-add), the prefill figure's peak.
#include <time.h>

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/half.h"
#include "kernels/cpu/cpu_features.h"
#include "core/thread_pool.h"
#include "kernels/cpu/matmul.h"
#include "quant/weight_matrix.h"

using namespace pensieve;

namespace {

// Eight independent vpdpbusd, accumulators %0-%7, operands %8 and %9.
#define EIGHT_VPDPBUSD                                                                         \
  "vpdpbusd %9, %8, %0\n\tvpdpbusd %9, %8, %1\n\tvpdpbusd %9, %8, %2\n\tvpdpbusd %9, %8, %3\n\t" \
  "vpdpbusd %9, %8, %4\n\tvpdpbusd %9, %8, %5\n\tvpdpbusd %9, %8, %6\n\tvpdpbusd %9, %8, %7"

// Sixteen independent accumulators (more than vpdpbusd's latency times its
// throughput), kept in registers by two asm statements a round (named
// variables: an array's elements go through memory around each statement,
// 2.8x slower; one statement takes at most twelve read-write operands).
// Returns the instructions issued.
__attribute__((target("avx512f,avx512vnni"))) int64_t vnni_loop(int64_t n) {
  __m512i a0 = _mm512_set1_epi32(1), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  __m512i b0 = a0, b1 = a0, b2 = a0, b3 = a0, b4 = a0, b5 = a0, b6 = a0, b7 = a0;
  const __m512i w = _mm512_set1_epi8(3), x = _mm512_set1_epi8(-2);
  for (int64_t i = 0; i < n; ++i) {
    __asm__ volatile(EIGHT_VPDPBUSD
        : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5), "+v"(a6), "+v"(a7)
        : "v"(w), "v"(x));
    __asm__ volatile(EIGHT_VPDPBUSD
        : "+v"(b0), "+v"(b1), "+v"(b2), "+v"(b3), "+v"(b4), "+v"(b5), "+v"(b6), "+v"(b7)
        : "v"(w), "v"(x));
  }
  a0 = _mm512_add_epi32(a0, _mm512_add_epi32(_mm512_add_epi32(b0, b1), _mm512_add_epi32(b2, b3)));
  a1 = _mm512_add_epi32(a1, _mm512_add_epi32(_mm512_add_epi32(b4, b5), _mm512_add_epi32(b6, b7)));
  alignas(64) int32_t out[16];
  _mm512_store_si512(out, _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3)),
                                           _mm512_add_epi32(_mm512_add_epi32(a4, a5), _mm512_add_epi32(a6, a7))));
  volatile int32_t sink = out[0];
  (void)sink;
  return n * 16;
}

int vnni_peak(int threads) {
  if (!kernels::cpu_features().avx512vnni) {
    std::printf("{\"vnni_peak_gops\": null, \"why\": \"no AVX-512 VNNI\"}\n");
    return 0;
  }
  ThreadPool pool(threads);
  constexpr int64_t kRounds = 30'000'000;
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    std::atomic<int64_t> instructions{0};
    pool.run([&](int, int) { instructions += vnni_loop(kRounds); });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, static_cast<double>(instructions.load()) / s);
  }
  // 64 multiply-adds an instruction, two operations each.
  std::printf("{\"threads\": %d, \"vpdpbusd_g_per_s\": %.2f, \"vnni_peak_gops\": %.1f}\n", pool.size(), best / 1e9,
              best * 128 / 1e9);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t rows = 262144, cols = 3072, tokens = 1, iters = 10;
  int bits = 4, group = 64, threads = 0;
  bool precise = false, peak = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> int64_t {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "matmul_bench: missing value for %s\n", a.c_str());
        std::exit(2);
      }
      return std::strtoll(argv[++i], nullptr, 10);
    };
    if (a == "--rows") rows = next();
    else if (a == "--cols") cols = next();
    else if (a == "--bits") bits = static_cast<int>(next());
    else if (a == "--group") group = static_cast<int>(next());
    else if (a == "--tokens") tokens = next();
    else if (a == "--threads") threads = static_cast<int>(next());
    else if (a == "--iters") iters = next();
    else if (a == "--precise") precise = true;
    else if (a == "--vnni-peak") peak = true;
    else {
      std::fprintf(stderr, "matmul_bench: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  if (peak) return vnni_peak(threads);
  if (rows <= 0 || cols <= 0 || tokens <= 0 || iters <= 0 || group <= 0 || cols % group != 0 ||
      (bits != 4 && bits != 8)) {
    std::fprintf(stderr, "matmul_bench: bad sizes\n");
    return 2;
  }
  WeightMatrix w;
  w.format = bits == 4 ? WeightFormat::affine4 : WeightFormat::affine8;
  w.rows = rows;
  w.cols = cols;
  w.group_size = group;
  w.scale_type = ScaleType::bf16;
  std::mt19937 rng(1);
  std::vector<uint8_t> data(static_cast<size_t>(w.row_bytes() * rows));
  for (size_t i = 0; i < data.size(); i += 4) {
    const uint32_t v = rng();
    std::memcpy(&data[i], &v, std::min<size_t>(4, data.size() - i));
  }
  std::vector<uint16_t> scales(static_cast<size_t>(rows * w.n_groups())), biases(scales.size());
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (size_t i = 0; i < scales.size(); ++i) {
    scales[i] = f32_to_bf16(0.01f + 0.02f * std::abs(u(rng)));
    biases[i] = f32_to_bf16(0.1f * u(rng));
  }
  w.data = data.data();
  w.scales = scales.data();
  w.biases = biases.data();
  std::vector<float> x(static_cast<size_t>(tokens * cols)), y(static_cast<size_t>(tokens * rows));
  for (auto& v : x) v = u(rng);

  kernels::set_integer_kernels(!precise);
  ThreadPool pool(threads);
  kernels::matmul(w, x.data(), cols, tokens, y.data(), rows, pool);  // warm-up
  auto cpu_now = [] {
    timespec ts{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
  };
  const double c0 = cpu_now();
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t it = 0; it < iters; ++it) kernels::matmul(w, x.data(), cols, tokens, y.data(), rows, pool);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
  const double cpu_s = (cpu_now() - c0) / iters;
  const double bytes = static_cast<double>(w.total_bytes());
  std::printf("{\"rows\": %lld, \"cols\": %lld, \"bits\": %d, \"group\": %d, \"tokens\": %lld, "
              "\"threads\": %d, \"integer\": %s, \"kernel\": \"%s\", \"weight_bytes\": %.0f, \"s_per_call\": %.6f, "
              "\"cpu_s_per_call\": %.6f, \"weight_gb_s\": %.2f, \"gops\": %.1f}\n",
              static_cast<long long>(rows), static_cast<long long>(cols), bits, group,
              static_cast<long long>(tokens), pool.size(), precise ? "false" : "true",
              tokens > kernels::kGemvMaxTokens ? kernels::prefill_kernel_name() : "gemv", bytes, s,
              cpu_s, bytes / s / 1e9, 2.0 * rows * cols * tokens / s / 1e9);
  return 0;
}
