// Measures the machine's read bandwidth the way a decode step reads weights:
// each thread streams its own contiguous slice of a large buffer once per
// pass with 64-byte vector loads. Prints one JSON object per thread count.
//
//   membw [--mib N] [--passes P] [--threads 1,2] [--file PATH]
//
// With --file the buffer is the file, memory-mapped (page cache), as the
// engine maps model weights; otherwise anonymous memory, touched first.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace {

#if defined(__x86_64__)
__attribute__((target("avx2"))) uint64_t read_slice(const uint8_t* p, size_t n) {
  __m256i acc0 = _mm256_setzero_si256(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
  size_t i = 0;
  for (; i + 128 <= n; i += 128) {
    acc0 = _mm256_xor_si256(acc0, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i)));
    acc1 = _mm256_xor_si256(acc1, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 32)));
    acc2 = _mm256_xor_si256(acc2, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 64)));
    acc3 = _mm256_xor_si256(acc3, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 96)));
  }
  acc0 = _mm256_xor_si256(_mm256_xor_si256(acc0, acc1), _mm256_xor_si256(acc2, acc3));
  alignas(32) uint64_t out[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(out), acc0);
  return out[0] ^ out[1] ^ out[2] ^ out[3];
}
#else
uint64_t read_slice(const uint8_t* p, size_t n) {
  uint64_t acc = 0;
  for (size_t i = 0; i + 8 <= n; i += 8) {
    uint64_t v;
    std::memcpy(&v, p + i, 8);
    acc ^= v;
  }
  return acc;
}
#endif

std::vector<int> parse_list(const char* s) {
  std::vector<int> out;
  for (const char* p = s; *p;) {
    out.push_back(std::atoi(p));
    while (*p && *p != ',') ++p;
    if (*p == ',') ++p;
  }
  return out;
}

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr, "membw: %s\nusage: membw [--mib N] [--passes P] [--threads 1,2] [--file PATH]\n", why);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  size_t mib = 1024;
  int passes = 5;
  std::vector<int> threads = {1, 2};
  std::string file;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) usage(("missing value for " + a).c_str());
    if (a == "--mib") mib = std::strtoull(argv[++i], nullptr, 10);
    else if (a == "--passes") passes = std::atoi(argv[++i]);
    else if (a == "--threads") threads = parse_list(argv[++i]);
    else if (a == "--file") file = argv[++i];
    else usage(("unknown option " + a).c_str());
  }
  if (mib == 0 || passes <= 0 || threads.empty()) usage("sizes must be positive");

  const uint8_t* base = nullptr;
  size_t bytes = 0;
  if (!file.empty()) {
    const int fd = open(file.c_str(), O_RDONLY);
    if (fd < 0) usage(("cannot open " + file).c_str());
    struct stat st {};
    fstat(fd, &st);
    bytes = static_cast<size_t>(st.st_size) & ~size_t{4095};
    void* m = mmap(nullptr, bytes, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) usage("mmap failed");
    base = static_cast<const uint8_t*>(m);
  } else {
    bytes = mib << 20;
    void* m = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) usage("mmap failed");
    std::memset(m, 1, bytes);
    base = static_cast<const uint8_t*>(m);
  }

  std::atomic<uint64_t> sink{0};
  for (const int nt : threads) {
    if (nt <= 0) usage("thread counts must be positive");
    double best = 0;
    for (int pass = 0; pass < passes; ++pass) {
      const size_t slice = (bytes / nt) & ~size_t{127};
      const auto t0 = std::chrono::steady_clock::now();
      std::vector<std::thread> ts;
      for (int t = 0; t < nt; ++t) {
        ts.emplace_back([&, t] { sink ^= read_slice(base + t * slice, slice); });
      }
      for (auto& th : ts) th.join();
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      best = std::max(best, static_cast<double>(slice) * nt / s / 1e9);
    }
    std::printf("{\"threads\": %d, \"bytes\": %zu, \"source\": \"%s\", \"best_read_gb_s\": %.2f}\n", nt,
                bytes, file.empty() ? "anonymous" : "file", best);
  }
  return sink.load() == 42 ? 1 : 0;  // keeps the reads observable
}
