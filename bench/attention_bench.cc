// Times kernels::attention for one chunk of queries at the end of a long
// context (prefill of a long prompt) and prints JSON with the cost per
// (query head, KV position) pair.
//
//   attention_bench [--ctx N] [--queries Q] [--heads H] [--kv-heads K] [--head-dim D]
//                   [--threads T] [--iters I] [--kv-type f16|q8]
#include <time.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "core/half.h"
#include "core/thread_pool.h"
#include "kernels/cpu/attention.h"

using namespace pensieve;

int main(int argc, char** argv) {
  int64_t ctx = 4096, queries = 512, heads = 8, kv_heads = 4, head_dim = 8, iters = 3;
  int threads = 1;
  KvType type = KvType::f16;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "attention_bench: missing value for %s\n", a.c_str());
      return 2;
    }
    if (a == "--kv-type") {
      const auto t = parse_kv_type(argv[++i]);
      if (!t) {
        std::fprintf(stderr, "attention_bench: --kv-type is f16 or q8, not %s\n", argv[i]);
        return 2;
      }
      type = *t;
      continue;
    }
    const int64_t v = std::strtoll(argv[++i], nullptr, 10);
    if (a == "--ctx") ctx = v;
    else if (a == "--queries") queries = v;
    else if (a == "--heads") heads = v;
    else if (a == "--kv-heads") kv_heads = v;
    else if (a == "--head-dim") head_dim = v;
    else if (a == "--threads") threads = static_cast<int>(v);
    else if (a == "--iters") iters = v;
    else {
      std::fprintf(stderr, "attention_bench: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  if (ctx <= 0 || queries <= 0 || queries > ctx || heads <= 0 || kv_heads <= 0 ||
      heads % kv_heads != 0 || head_dim <= 0 || head_dim > 256 || iters <= 0 ||
      (type == KvType::q8 && kv_q8_group(head_dim) == 0)) {
    std::fprintf(stderr, "attention_bench: bad sizes\n");
    return 2;
  }
  kernels::KvLayerView kv;
  kv.n_kv_heads = kv_heads;
  kv.head_dim = head_dim;
  const int64_t n_blocks = (ctx + kernels::kKvBlockTokens - 1) / kernels::kKvBlockTokens;
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.f, 1.f);
  kv.type = type;
  // Random N(0, 1) keys and values, written through kv_write as a server does.
  std::vector<uint8_t> kbuf(static_cast<size_t>(n_blocks * kv.block_bytes())), vbuf(kbuf.size());
  kv.k = kbuf.data();
  kv.v = vbuf.data();
  {
    std::vector<int32_t> ids(n_blocks);
    std::iota(ids.begin(), ids.end(), 0);
    std::vector<float> k(kv_heads * head_dim), v(k.size());
    for (int64_t pos = 0; pos < n_blocks * kernels::kKvBlockTokens; ++pos) {
      for (auto& x : k) x = nd(rng);
      for (auto& x : v) x = nd(rng);
      kernels::kv_write(kv, ids.data(), pos, k.data(), v.data());
    }
  }
  std::vector<int32_t> table(n_blocks);
  std::iota(table.begin(), table.end(), 0);
  std::vector<float> q(queries * heads * head_dim), out(q.size());
  for (auto& x : q) x = nd(rng);
  const kernels::AttentionSeq seq{table.data(), ctx, 0, queries};
  ThreadPool pool(threads);
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  kernels::attention(q.data(), kv, {&seq, 1}, heads, scale, 0, out.data(), pool);
  timespec c0{}, c1{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t it = 0; it < iters; ++it) {
    kernels::attention(q.data(), kv, {&seq, 1}, heads, scale, 0, out.data(), pool);
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
  const double cpu = ((c1.tv_sec - c0.tv_sec) + (c1.tv_nsec - c0.tv_nsec) * 1e-9) / iters;
  double pairs = 0;
  for (int64_t i = 0; i < queries; ++i) pairs += static_cast<double>(ctx - queries + i + 1);
  pairs *= heads;
  std::printf("{\"kv_type\": \"%s\", \"ctx\": %lld, \"queries\": %lld, \"heads\": %lld, \"kv_heads\": %lld, \"head_dim\": %lld, "
              "\"threads\": %d, \"s_per_call\": %.6f, \"cpu_s_per_call\": %.6f, \"ns_per_pair_cpu\": %.3f, "
              "\"gflops\": %.2f}\n",
              std::string(kv_type_name(type)).c_str(), static_cast<long long>(ctx), static_cast<long long>(queries), static_cast<long long>(heads),
              static_cast<long long>(kv_heads), static_cast<long long>(head_dim), pool.size(), s, cpu,
              cpu * 1e9 / pairs, 4.0 * pairs * head_dim / s / 1e9);
  return 0;
}
