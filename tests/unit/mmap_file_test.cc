#include "core/mmap_file.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <sched.h>

#include <atomic>
#include <cstdlib>
#include <set>
#include <cstring>
#include <random>
#include <string>

#include "core/error.h"
#include "core/thread_pool.h"
#include "support/test_support.h"

namespace pensieve {
namespace {

using test::TempDir;

std::string random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

// Sizes around the copy's 32 MiB read chunks and the 8 MiB huge-page threshold.
TEST(MmapFile, CopiedAndMappedHoldTheSameBytes) {
  TempDir dir;
  for (const size_t size : {size_t{1}, size_t{4095}, size_t{8} << 20, (size_t{32} << 20) + 12345,
                            (size_t{70} << 20) + 1}) {
    const std::string bytes = random_bytes(size, static_cast<uint32_t>(size));
    const std::string path = dir.file("f" + std::to_string(size));
    test::write_file(path, bytes);
    MmapFile copied(path, FileResidency::copied), mapped(path, FileResidency::mapped);
    EXPECT_EQ(copied.residency(), FileResidency::copied);
    EXPECT_EQ(mapped.residency(), FileResidency::mapped);
    ASSERT_EQ(copied.size(), size);
    ASSERT_EQ(mapped.size(), size);
    EXPECT_EQ(std::memcmp(copied.data(), bytes.data(), size), 0) << size;
    EXPECT_EQ(std::memcmp(mapped.data(), bytes.data(), size), 0) << size;
  }
}

TEST(MmapFile, EmptyFileHasNoData) {
  TempDir dir;
  test::write_file(dir.file("empty"), "");
  MmapFile f(dir.file("empty"), FileResidency::copied);
  EXPECT_EQ(f.size(), 0u);
}

TEST(MmapFile, MissingAndUnreadableFilesNameThePath) {
  TempDir dir;
  for (const auto residency : {FileResidency::copied, FileResidency::mapped}) {
    try {
      MmapFile f(dir.file("nope"), residency);
      FAIL();
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::not_found);
      EXPECT_NE(std::string(e.what()).find(dir.file("nope")), std::string::npos) << e.what();
    }
    try {
      MmapFile f(dir.path(), residency);  // a directory
      FAIL();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("not a regular file"), std::string::npos) << e.what();
    }
  }
}

TEST(MmapFile, DefaultResidencyCanBeChanged) {
  const FileResidency before = default_file_residency();
  TempDir dir;
  test::write_file(dir.file("x"), "abc");
  set_default_file_residency(FileResidency::mapped);
  EXPECT_EQ(MmapFile(dir.file("x")).residency(), FileResidency::mapped);
  set_default_file_residency(FileResidency::copied);
  EXPECT_EQ(MmapFile(dir.file("x")).residency(), FileResidency::copied);
  set_default_file_residency(before);
}

TEST(ThreadPool, ContiguousSharesVisitEveryItemOnce) {
  for (const int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    for (const int64_t n : {1, 2, 5, 97}) {
      std::vector<std::atomic<int>> seen(static_cast<size_t>(n));
      pool.parallel_for_contiguous(n, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) seen[i]++;
      });
      for (int64_t i = 0; i < n; ++i) EXPECT_EQ(seen[i].load(), 1) << "item " << i << " of " << n;
    }
  }
}

// A pool of one thread per allowed CPU pins its workers to distinct CPUs of
// the affinity set (the first is left to the caller, which floats) and they
// run there; a smaller pool and PENSIEVE_PIN=0 leave every thread free.
TEST(ThreadPool, FullSizePoolPinsItsWorkersToDistinctCpus) {
  cpu_set_t set;
  CPU_ZERO(&set);
  ASSERT_EQ(sched_getaffinity(0, sizeof(set), &set), 0);
  const int n = CPU_COUNT(&set);
  if (n < 2) GTEST_SKIP() << "one CPU: nothing to pin";
  const char* env = std::getenv("PENSIEVE_PIN");
  const std::string saved = env != nullptr ? env : "";
  ::unsetenv("PENSIEVE_PIN");
  {
    ThreadPool pool(n);
    const std::vector<int>& cpus = pool.pinned_cpus();
    ASSERT_EQ(static_cast<int>(cpus.size()), n);
    EXPECT_EQ(cpus[0], -1) << "the caller is not pinned";
    std::set<int> distinct(cpus.begin() + 1, cpus.end());
    EXPECT_EQ(static_cast<int>(distinct.size()), n - 1);
    for (int i = 1; i < n; ++i) EXPECT_TRUE(CPU_ISSET(cpus[i], &set)) << cpus[i];
    std::vector<int> ran_on(static_cast<size_t>(n), -2), allowed(static_cast<size_t>(n), 0);
    pool.run([&](int index, int) {
      cpu_set_t own;
      CPU_ZERO(&own);
      sched_getaffinity(0, sizeof(own), &own);  // 0: the calling thread
      allowed[index] = CPU_COUNT(&own);
      ran_on[index] = sched_getcpu();
    });
    for (int i = 1; i < n; ++i) {
      EXPECT_EQ(allowed[i], 1) << "worker " << i << " may run on one CPU only";
      EXPECT_EQ(ran_on[i], cpus[i]) << "worker " << i;
    }
    EXPECT_EQ(allowed[0], n) << "the caller floats";
    cpu_set_t mine;
    ASSERT_EQ(sched_getaffinity(0, sizeof(mine), &mine), 0);
    EXPECT_EQ(CPU_COUNT(&mine), n) << "the calling thread keeps every CPU";
  }
  EXPECT_TRUE(ThreadPool(n - 1).pinned_cpus().empty());
  ::setenv("PENSIEVE_PIN", "0", 1);
  EXPECT_TRUE(ThreadPool(n).pinned_cpus().empty());
  if (env != nullptr) {
    ::setenv("PENSIEVE_PIN", saved.c_str(), 1);
  } else {
    ::unsetenv("PENSIEVE_PIN");
  }
}

}  // namespace
}  // namespace pensieve
