// Times kernels::matmul on a random MLX-affine weight, the way decode and
// prefill call it, and prints JSON: seconds per call and the weight bytes
// streamed per second. A weight larger than the caches measures the
// memory-bound decode path; a small one (--rows 512) the kernel's compute rate.
//
//   matmul_bench [--rows R] [--cols C] [--bits 4|8] [--group G] [--tokens T]
//                [--threads N] [--iters K] [--precise]
#include <time.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/half.h"
#include "core/thread_pool.h"
#include "kernels/cpu/matmul.h"
#include "quant/weight_matrix.h"

using namespace pensieve;

int main(int argc, char** argv) {
  int64_t rows = 262144, cols = 3072, tokens = 1, iters = 10;
  int bits = 4, group = 64, threads = 0;
  bool precise = false;
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
    else {
      std::fprintf(stderr, "matmul_bench: unknown option %s\n", a.c_str());
      return 2;
    }
  }
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
