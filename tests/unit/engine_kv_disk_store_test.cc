// The prefix cache's disk tier (engine/kv_disk_store.h): blocks come back
// byte for byte, only for the same fingerprint, hash, parent and tokens;
// damaged files (flipped bytes, truncated, garbage) are removed and never
// returned; a full disk fails a write without leaving anything; the least
// recently used files go past the size limit; two stores share a folder.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include <fmt/format.h>

#include "engine/kv_disk_store.h"
#include "support/test_support.h"

namespace pensieve {
namespace {

namespace fs = std::filesystem;

std::vector<std::byte> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::byte> out(n);
  for (auto& b : out) b = static_cast<std::byte>(rng() & 0xff);
  return out;
}

std::vector<int32_t> tokens_of(int32_t first) {
  std::vector<int32_t> t(16);
  for (int i = 0; i < 16; ++i) t[i] = first + i;
  return t;
}

// 1000 bytes: not a multiple of anything the store could rely on.
constexpr size_t kPayload = 1000;

std::string file_of(const KvDiskStore& s, uint64_t hash) {
  return s.folder() + "/" + fmt::format("{:016x}.kvb", hash);
}

TEST(KvDiskStore, BlocksComeBackOnlyForTheirFingerprintHashParentAndTokens) {
  test::TempDir dir;
  const auto payload = random_bytes(kPayload, 1);
  const auto tokens = tokens_of(7);
  {
    KvDiskStore s(dir.path(), "model A; kv f16 v1; window 0", 1 << 20);
    EXPECT_TRUE(s.put(0xabc, 0x123, tokens, payload));
    EXPECT_TRUE(s.put(0xabc, 0x123, tokens, payload));  // there already: nothing to do
  }
  KvDiskStore again(dir.path(), "model A; kv f16 v1; window 0", 1 << 20);  // a restart
  std::vector<std::byte> out(kPayload);
  ASSERT_TRUE(again.get(0xabc, 0x123, tokens, out));
  EXPECT_EQ(out, payload);
  EXPECT_FALSE(again.get(0xabd, 0x123, tokens, out)) << "another hash";
  EXPECT_FALSE(again.get(0xabc, 0x124, tokens, out)) << "another parent: a hash collision";
  EXPECT_FALSE(again.get(0xabc, 0x123, tokens_of(8), out)) << "other tokens";
  std::vector<std::byte> other_size(kPayload + 4);
  EXPECT_FALSE(again.get(0xabc, 0x123, tokens, other_size)) << "another payload size";
  EXPECT_TRUE(again.get(0xabc, 0x123, tokens, out)) << "a collision miss leaves the block alone";
  KvDiskStore other(dir.path(), "model B; kv f16 v1; window 0", 1 << 20);
  EXPECT_NE(other.folder(), again.folder());
  EXPECT_FALSE(other.get(0xabc, 0x123, tokens, out)) << "another model never sees it";
  EXPECT_EQ(again.n_damaged(), 0);
}

TEST(KvDiskStore, DamagedFilesAreRemovedAndNeverReturned) {
  test::TempDir dir;
  KvDiskStore s(dir.path(), "fp", 1 << 20);
  const auto payload = random_bytes(kPayload, 2);
  const auto tokens = tokens_of(1);
  std::vector<std::byte> out(kPayload);
  // Each damage is found by get() and by read_file(), buffered or not.
  const size_t file_bytes = KvDiskStore::file_buffer_bytes(tokens.size(), kPayload);
  std::unique_ptr<std::byte, void (*)(void*)> file{static_cast<std::byte*>(std::aligned_alloc(4096, file_bytes)),
                                                   std::free};
  int64_t n_damaged = 0;
  const auto damage = [&](const std::function<void(const std::string&)>& how) {
    for (int way = 0; way < 3; ++way) {
      ASSERT_TRUE(s.put(0x42, 0, tokens, payload));
      how(file_of(s, 0x42));
      bool direct = way == 2;
      if (way == 0) EXPECT_FALSE(s.get(0x42, 0, tokens, out));
      else EXPECT_EQ(s.read_file(0x42, 0, tokens, kPayload, {file.get(), file_bytes}, &direct), nullptr) << way;
      EXPECT_FALSE(fs::exists(file_of(s, 0x42))) << way;
      EXPECT_EQ(s.n_damaged(), ++n_damaged) << way;
    }
  };
  const auto flip = [](size_t at) {
    return [at](const std::string& path) {
      std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
      f.seekg(static_cast<std::streamoff>(at));
      char c = 0;
      f.read(&c, 1);
      f.seekp(static_cast<std::streamoff>(at));
      c = static_cast<char>(c ^ 0x10);
      f.write(&c, 1);
    };
  };
  damage(flip(64 + 64 + 500));  // a payload byte
  damage(flip(70));             // a token
  damage(flip(28));             // the header's hash
  damage([](const std::string& path) { fs::resize_file(path, fs::file_size(path) - 1); });  // truncated
  damage([](const std::string& path) { fs::resize_file(path, 30); });                       // torn header
  damage([](const std::string& path) { fs::resize_file(path, fs::file_size(path) + 8); });  // too long
  damage([](const std::string& path) { std::ofstream(path, std::ios::trunc) << "not a block at all, just text"; });
  EXPECT_EQ(s.n_damaged(), 21);
  // And it is written again and read again afterwards.
  ASSERT_TRUE(s.put(0x42, 0, tokens, payload));
  ASSERT_TRUE(s.get(0x42, 0, tokens, out));
  EXPECT_EQ(out, payload);
}

TEST(KvDiskStore, AWriteThatCannotFinishLeavesNothingAndThrowsNothing) {
  test::TempDir dir;
  KvDiskStore s(dir.path(), "fp", 1 << 20);
  const auto payload = random_bytes(kPayload, 3);
  // A file-size limit below one block: writes fail with EFBIG as on a full disk.
  struct sigaction old_action {};
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigaction(SIGXFSZ, &ignore, &old_action);
  rlimit old_limit{};
  getrlimit(RLIMIT_FSIZE, &old_limit);
  rlimit small = old_limit;
  small.rlim_cur = 512;
  setrlimit(RLIMIT_FSIZE, &small);
  const bool written = s.put(0x7, 0, tokens_of(0), payload);
  setrlimit(RLIMIT_FSIZE, &old_limit);
  sigaction(SIGXFSZ, &old_action, nullptr);
  EXPECT_FALSE(written);
  std::vector<std::string> names;
  for (const auto& f : fs::directory_iterator(s.folder())) names.push_back(f.path().filename().string());
  EXPECT_EQ(names, std::vector<std::string>{"fingerprint.txt"}) << "no block, no temporary file";
  std::vector<std::byte> out(kPayload);
  EXPECT_FALSE(s.get(0x7, 0, tokens_of(0), out));
  // A folder that cannot be made is an error when the store is opened.
  test::write_file(dir.file("a-file"), "x");
  EXPECT_NE(test::error_of([&] { KvDiskStore bad(dir.file("a-file"), "fp", 1 << 20); }).find("prefix cache folder"),
            std::string::npos);
}

TEST(KvDiskStore, TheLeastRecentlyUsedFilesGoPastTheLimit) {
  test::TempDir dir;
  const int64_t file_bytes = 64 + 64 + kPayload;
  KvDiskStore s(dir.path(), "fp", 3 * file_bytes);
  const auto payload = random_bytes(kPayload, 4);
  const auto now = fs::file_time_type::clock::now();
  for (uint64_t h = 1; h <= 3; ++h) {
    ASSERT_TRUE(s.put(h, 0, tokens_of(static_cast<int32_t>(h)), payload));
    // Explicit ages (file times are coarse): 1 oldest, 3 newest.
    fs::last_write_time(file_of(s, h), now - std::chrono::seconds(40 - 10 * h));
  }
  std::vector<std::byte> out(kPayload);
  ASSERT_TRUE(s.get(1, 0, tokens_of(1), out));  // 1 is now the most recently used
  ASSERT_TRUE(s.put(4, 0, tokens_of(4), payload));
  EXPECT_TRUE(fs::exists(file_of(s, 1)));
  EXPECT_FALSE(fs::exists(file_of(s, 2))) << "the least recently used goes";
  EXPECT_TRUE(fs::exists(file_of(s, 3)));
  EXPECT_TRUE(fs::exists(file_of(s, 4)));
  EXPECT_EQ(s.bytes_on_disk(), 3 * file_bytes);
}

TEST(KvDiskStore, StaleTemporaryFilesAreClearedAndAnotherFingerprintIsRefused) {
  test::TempDir dir;
  std::string folder;
  {
    KvDiskStore s(dir.path(), "fp", 1 << 20);
    folder = s.folder();
  }
  // A writer killed mid-write leaves its temporary file; a live writer's is recent.
  test::write_file(folder + "/.tmp-999-1-00000000000000aa", "half a bl");
  test::write_file(folder + "/.tmp-999-2-00000000000000bb", "being written");
  fs::last_write_time(folder + "/.tmp-999-1-00000000000000aa",
                      fs::file_time_type::clock::now() - std::chrono::hours(1));
  KvDiskStore s(dir.path(), "fp", 1 << 20);
  EXPECT_FALSE(fs::exists(folder + "/.tmp-999-1-00000000000000aa"));
  EXPECT_TRUE(fs::exists(folder + "/.tmp-999-2-00000000000000bb"));
  std::vector<std::byte> out(4);
  EXPECT_FALSE(s.get(0xaa, 0, tokens_of(0), out));
  // The folder of "fp" claimed by another fingerprint (an id collision) is refused.
  test::write_file(folder + "/fingerprint.txt", "something else");
  EXPECT_NE(test::error_of([&] { KvDiskStore x(dir.path(), "fp", 1 << 20); }).find("holds another fingerprint"),
            std::string::npos);
}

TEST(KvDiskStore, TwoStoresShareAFolder) {
  test::TempDir dir;
  KvDiskStore a(dir.path(), "fp", 64 << 20), b(dir.path(), "fp", 64 << 20);
  constexpr int kBlocks = 64;
  const auto writer = [&](KvDiskStore& s, uint32_t seed) {
    for (int i = 0; i < kBlocks; ++i)  // both write every block, in opposite orders
      EXPECT_TRUE(s.put(seed == 1 ? i : kBlocks - 1 - i, 0, tokens_of(seed == 1 ? i : kBlocks - 1 - i),
                        random_bytes(kPayload, seed == 1 ? i : kBlocks - 1 - i)));
  };
  std::thread t1(writer, std::ref(a), 1), t2(writer, std::ref(b), 2);
  t1.join();
  t2.join();
  std::vector<std::byte> out(kPayload);
  for (int i = 0; i < kBlocks; ++i) {
    ASSERT_TRUE(b.get(i, 0, tokens_of(i), out)) << i;
    EXPECT_EQ(out, random_bytes(kPayload, i)) << i;
  }
  EXPECT_EQ(a.n_damaged() + b.n_damaged(), 0);
  int n_tmp = 0;
  for (const auto& f : fs::directory_iterator(a.folder())) n_tmp += f.path().filename().string().rfind(".tmp", 0) == 0;
  EXPECT_EQ(n_tmp, 0);
}

}  // namespace
}  // namespace pensieve

namespace pensieve {
namespace {

TEST(KvDiskWriter, WritesBehindDropsPastItsQueueAndDrainsWhenDestroyed) {
  test::TempDir dir;
  KvDiskStore store(dir.path(), "fp", 64 << 20);
  {
    KvDiskWriter w(store, 3 * kPayload);  // three blocks may wait
    for (int i = 0; i < 3; ++i) EXPECT_TRUE(w.enqueue(i, 0, tokens_of(i), random_bytes(kPayload, i)));
    w.flush();
    EXPECT_EQ(w.n_written(), 3);
    // With the queue full, a fourth waits for nothing: dropped.
    int64_t accepted = 0;
    for (int i = 3; i < 40; ++i) accepted += w.enqueue(i, 0, tokens_of(i), random_bytes(kPayload, i));
    EXPECT_EQ(accepted + w.n_dropped(), 37);
    // A block the queue cannot take is turned away by admits() and counted.
    const int64_t dropped = w.n_dropped();
    EXPECT_FALSE(w.admits(100 * kPayload)) << "more than the whole queue never fits";
    EXPECT_EQ(w.n_dropped(), dropped + 1);
    EXPECT_TRUE(w.admits(0));
  }  // the destructor writes what is queued
  std::vector<std::byte> out(kPayload);
  int found = 0;
  for (int i = 0; i < 40; ++i) {
    if (!store.get(i, 0, tokens_of(i), out)) continue;
    EXPECT_EQ(out, random_bytes(kPayload, i));
    ++found;
  }
  EXPECT_GE(found, 6);  // the first three, and at least the three the queue held
}

// The reader hands out a chain's blocks in order, byte for byte, with
// fewer buffers than blocks (it reads ahead only as the engine releases);
// it stops at a missing or a damaged block (the damaged file removed); a
// key out of order ends the list; start() replaces a list half read, and
// cancel() leaves nothing to hand out.
TEST(KvDiskReader, HandsOutAChainInOrderAndStopsWhereItBreaks) {
  test::TempDir dir;
  KvDiskStore s(dir.path(), "fp", 1 << 24);
  constexpr int kBlocks = 11;
  std::vector<KvDiskReader::Key> keys;
  std::vector<std::vector<std::byte>> payloads;
  uint64_t parent = 0x99;
  for (int i = 0; i < kBlocks; ++i) {
    const uint64_t hash = 0x1000 + static_cast<uint64_t>(i) * 7;
    keys.push_back({hash, parent, tokens_of(i * 16)});
    payloads.push_back(random_bytes(kPayload, 100 + i));
    ASSERT_TRUE(s.put(hash, parent, keys.back().tokens, payloads.back()));
    parent = hash;
  }
  KvDiskReader reader(s, kPayload, 16, /*n_threads=*/3, /*n_buffers=*/4);
  // All of them, in order.
  reader.start(keys);
  for (int i = 0; i < kBlocks; ++i) {
    const std::byte* got = reader.next(keys[i].hash);
    ASSERT_NE(got, nullptr) << "block " << i;
    EXPECT_EQ(0, std::memcmp(got, payloads[i].data(), kPayload)) << "block " << i;
    reader.release();
  }
  EXPECT_EQ(reader.next(0x5555), nullptr) << "past the end";
  // A damaged block in the middle: the ones before it, then nothing.
  {
    std::fstream f(file_of(s, keys[6].hash), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-3, std::ios::end);
    f.put('!');
  }
  reader.start(keys);
  for (int i = 0; i < 6; ++i) {
    ASSERT_NE(reader.next(keys[i].hash), nullptr) << "block " << i;
    reader.release();
  }
  EXPECT_EQ(reader.next(keys[6].hash), nullptr);
  EXPECT_FALSE(fs::exists(file_of(s, keys[6].hash))) << "the damaged file is removed";
  EXPECT_EQ(s.n_damaged(), 1);
  // Now missing: the same.
  reader.start(keys);
  for (int i = 0; i < 6; ++i) {
    ASSERT_NE(reader.next(keys[i].hash), nullptr);
    reader.release();
  }
  EXPECT_EQ(reader.next(keys[6].hash), nullptr);
  // Asked out of order: nothing, said to be off the list, and the list is
  // over. (A missing block is not "off the list": the chain breaks there.)
  reader.start(keys);
  bool off_list = true;
  ASSERT_NE(reader.next(keys[0].hash, &off_list), nullptr);
  EXPECT_FALSE(off_list);
  reader.release();
  EXPECT_EQ(reader.next(keys[2].hash, &off_list), nullptr);
  EXPECT_TRUE(off_list);
  EXPECT_EQ(reader.next(keys[1].hash, &off_list), nullptr);
  EXPECT_TRUE(off_list);
  reader.start(keys);
  for (int i = 0; i < 6; ++i) {
    ASSERT_NE(reader.next(keys[i].hash), nullptr);
    reader.release();
  }
  EXPECT_EQ(reader.next(keys[6].hash, &off_list), nullptr);
  EXPECT_FALSE(off_list) << "the missing block";
  // A block handed out and never released (its caller threw): start() goes on.
  reader.start(keys);
  ASSERT_NE(reader.next(keys[0].hash), nullptr);
  reader.start(keys);
  const std::byte* again = reader.next(keys[0].hash);
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(0, std::memcmp(again, payloads[0].data(), kPayload));
  reader.release();
  // A list replaced half way, and one cancelled.
  reader.start(keys);
  ASSERT_NE(reader.next(keys[0].hash), nullptr);
  reader.release();
  const std::vector<KvDiskReader::Key> tail(keys.begin() + 3, keys.begin() + 6);
  reader.start(tail);
  for (int i = 3; i < 6; ++i) {
    const std::byte* got = reader.next(keys[i].hash);
    ASSERT_NE(got, nullptr) << "block " << i;
    EXPECT_EQ(0, std::memcmp(got, payloads[i].data(), kPayload));
    reader.release();
  }
  reader.start(keys);
  reader.cancel();
  EXPECT_EQ(reader.next(keys[0].hash), nullptr) << "cancelled before anything was taken";
}

// Reads bypass the page cache where the file system allows it (O_DIRECT)
// and fall back to ordinary reads where it does not: the blocks come back
// the same either way, on the disk the tests run on and on tmpfs. (The
// buffered path itself is read_file with direct off, in the damage test.)
TEST(KvDiskReader, ReadsWithAndWithoutThePageCache) {
  std::vector<std::string> roots = {fs::temp_directory_path().string()};
  if (fs::is_directory("/dev/shm") && ::access("/dev/shm", W_OK) == 0) roots.push_back("/dev/shm");
  for (const std::string& root : roots) {
    std::string tmpl = root + "/pensieve-reader-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr) << root;
    struct Remove {
      std::string path;
      ~Remove() {
        std::error_code ec;
        fs::remove_all(path, ec);
      }
    } remove{tmpl};
    KvDiskStore s(tmpl, "fp", 1 << 24);
    // A payload of several pages plus an odd tail, so unbuffered reads end short at the file's end.
    constexpr size_t kBig = 3 * 4096 + 123;
    std::vector<KvDiskReader::Key> keys;
    std::vector<std::vector<std::byte>> payloads;
    for (int i = 0; i < 5; ++i) {
      keys.push_back({0x500u + static_cast<uint64_t>(i), i == 0 ? 0u : 0x500u + static_cast<uint64_t>(i) - 1,
                      tokens_of(i * 16)});
      payloads.push_back(random_bytes(kBig, 300 + i));
      ASSERT_TRUE(s.put(keys.back().hash, keys.back().parent, keys.back().tokens, payloads.back()));
    }
    KvDiskReader reader(s, kBig, 16, /*n_threads=*/2, /*n_buffers=*/3);
    reader.start(keys);
    for (int i = 0; i < 5; ++i) {
      const std::byte* got = reader.next(keys[i].hash);
      ASSERT_NE(got, nullptr) << root << " block " << i;
      EXPECT_EQ(0, std::memcmp(got, payloads[i].data(), kBig)) << root << " block " << i;
      reader.release();
    }
    std::printf("[ reader ] %s: %s reads\n", root.c_str(), reader.direct() ? "unbuffered (O_DIRECT)" : "buffered");
    EXPECT_EQ(s.n_damaged(), 0);
  }
}

// Blocks of another KV type, device or window are another cache: each of
// them changes the fingerprint; the same model and settings give the same
// one every time.
TEST(KvDiskStore, FingerprintCoversKvTypeDeviceAndWindow) {
  const std::string dir = test::data_path("models/llama3-tiny");
  const std::string base = kv_fingerprint(dir, "LlamaForCausalLM", 0, "cpu", KvType::f16);
  EXPECT_EQ(base, kv_fingerprint(dir, "LlamaForCausalLM", 0, "cpu", KvType::f16));
  EXPECT_NE(base, kv_fingerprint(dir, "LlamaForCausalLM", 0, "cpu", KvType::q8));
  EXPECT_NE(base, kv_fingerprint(dir, "LlamaForCausalLM", 0, "cuda", KvType::f16));
  EXPECT_NE(base, kv_fingerprint(dir, "LlamaForCausalLM", 512, "cpu", KvType::f16));
  EXPECT_NE(base, kv_fingerprint(test::data_path("models/qwen2-tiny"), "LlamaForCausalLM", 0, "cpu", KvType::f16));
}

}  // namespace
}  // namespace pensieve
