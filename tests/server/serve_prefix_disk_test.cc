// The prefix cache's disk tier through the real server: a prompt computed by
// one server is read back by the next one started on the same folder
// (cache_read_input_tokens says so, and the greedy answer is the same as
// computing it); another model (here: another attention window) never reads
// those blocks; damaged files are skipped and removed; size 0 keeps nothing.
#include <gtest/gtest.h>
#include <httplib.h>

#include <signal.h>

#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "support/test_support.h"
#include "support/wait_until.h"

namespace pensieve {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// About 180 tokens of the bundled model's vocabulary: many full blocks.
json story_request() {
  std::string text;
  for (int i = 0; i < 12; ++i) text += "Once upon a time there was a little girl named Lily. ";
  return {{"model", "claude-test"},
          {"max_tokens", 12},
          {"temperature", 0},
          {"messages", {{{"role", "user"}, {"content", text}}}}};
}

struct Answer {
  int status = -1;
  json body;
};

Answer ask(int port) {
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(60, 0);
  auto res = c.Post("/v1/messages", story_request().dump(), "application/json");
  if (!res) return {};
  return {res->status, json::parse(res->body, nullptr, false)};
}

json engine_stats(int port) {
  httplib::Client c("127.0.0.1", port);
  auto res = c.Get("/health");
  return res ? json::parse(res->body)["engine"] : json();
}

std::vector<std::string> block_files(const std::string& dir) {
  std::vector<std::string> out;
  if (!fs::exists(dir)) return out;
  for (const auto& f : fs::recursive_directory_iterator(dir))
    if (f.path().extension() == ".kvb") out.push_back(f.path().string());
  return out;
}

class PrefixDisk : public ::testing::Test {
 protected:
  test::TempDir dir;
  std::vector<std::string> args(std::vector<std::string> extra = {}) {
    std::vector<std::string> a = {"--port", "0", "--prefix-cache-dir", dir.path(), "--prefix-cache-disk", "64M"};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }
  // Serves one request and returns its answer once every block it computed is on disk.
  Answer serve_once(const std::vector<std::string>& a) {
    test::ServeProcess serve(a);
    EXPECT_TRUE(serve.wait_ready()) << serve.err();
    Answer r = ask(serve.port());
    EXPECT_EQ(r.status, 200) << r.body.dump() << serve.err();
    const int64_t blocks = r.body["usage"]["input_tokens"].get<int64_t>() / 16;  // nothing read, nothing marked
    EXPECT_TRUE(test::wait_until([&] {
      const json e = engine_stats(serve.port());
      return e.is_object() && e["n_disk_blocks_written"].get<int64_t>() + e["n_disk_blocks_read"].get<int64_t>() >= blocks;
    })) << engine_stats(serve.port()).dump();
    EXPECT_EQ(serve.stop(), 0);
    return r;
  }
};

TEST_F(PrefixDisk, ARestartedServerReadsThePromptFromDisk) {
  const Answer cold = serve_once(args());
  ASSERT_EQ(cold.status, 200);
  const int64_t n_prompt = cold.body["usage"]["input_tokens"].get<int64_t>();
  ASSERT_GT(n_prompt, 150);
  EXPECT_EQ(cold.body["usage"]["cache_read_input_tokens"], 0);
  EXPECT_GE(block_files(dir.path()).size(), static_cast<size_t>(n_prompt / 16 - 1));

  test::ServeProcess again(args());
  ASSERT_TRUE(again.wait_ready()) << again.err();
  const Answer warm = ask(again.port());
  ASSERT_EQ(warm.status, 200) << warm.body.dump();
  // Every full block but the one holding the last prompt token (computed for its logits).
  EXPECT_EQ(warm.body["usage"]["cache_read_input_tokens"], (n_prompt - 1) / 16 * 16) << warm.body.dump();
  EXPECT_EQ(warm.body["content"], cold.body["content"]) << "read back, the same greedy answer";
  EXPECT_EQ(engine_stats(again.port())["n_disk_blocks_read"], (n_prompt - 1) / 16);
  EXPECT_EQ(again.stop(), 0);
}

TEST_F(PrefixDisk, AnotherWindowNeverReadsThoseBlocks) {
  serve_once(args());
  test::ServeProcess other(args({"--sliding-window", "256"}));  // other K/V for the same tokens
  ASSERT_TRUE(other.wait_ready()) << other.err();
  const Answer r = ask(other.port());
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.body["usage"]["cache_read_input_tokens"], 0);
  EXPECT_EQ(engine_stats(other.port())["n_disk_blocks_read"], 0);
  EXPECT_EQ(other.stop(), 0);
  std::set<std::string> folders;
  for (const auto& f : block_files(dir.path())) folders.insert(fs::path(f).parent_path().string());
  EXPECT_EQ(folders.size(), 2u) << "one folder per fingerprint";
}

// --kv-type q8: its blocks (56 % of f16's size: int8 and scales) come back
// after a restart for the same greedy answer; an f16 server beside them
// never reads them.
TEST_F(PrefixDisk, Q8BlocksComeBackAndAreNeverReadAsF16) {
  const Answer cold = serve_once(args({"--kv-type", "q8"}));
  ASSERT_EQ(cold.status, 200);
  const int64_t n_prompt = cold.body["usage"]["input_tokens"].get<int64_t>();
  const auto q8_files = block_files(dir.path());
  ASSERT_GE(q8_files.size(), static_cast<size_t>(n_prompt / 16 - 1));
  test::ServeProcess again(args({"--kv-type", "q8"}));
  ASSERT_TRUE(again.wait_ready()) << again.err();
  const Answer warm = ask(again.port());
  ASSERT_EQ(warm.status, 200) << warm.body.dump();
  EXPECT_EQ(warm.body["usage"]["cache_read_input_tokens"], (n_prompt - 1) / 16 * 16) << warm.body.dump();
  EXPECT_EQ(warm.body["content"], cold.body["content"]);
  EXPECT_EQ(again.stop(), 0);

  const Answer f16 = serve_once(args());
  EXPECT_EQ(f16.body["usage"]["cache_read_input_tokens"], 0);
  const auto all = block_files(dir.path());
  ASSERT_GT(all.size(), q8_files.size());
  std::set<std::string> folders;
  for (const auto& f : all) folders.insert(fs::path(f).parent_path().string());
  EXPECT_EQ(folders.size(), 2u) << "one folder per KV type";
  // The q8 files are the smaller ones (header and checksum aside).
  const std::string q8_folder = fs::path(q8_files[0]).parent_path().string();
  uintmax_t q8_size = 0, f16_size = 0;
  for (const auto& f : all) (fs::path(f).parent_path().string() == q8_folder ? q8_size : f16_size) = fs::file_size(f);
  EXPECT_LT(q8_size * 10, f16_size * 8) << q8_size << " vs " << f16_size;
}

TEST_F(PrefixDisk, DamagedFilesAreSkippedRemovedAndRecomputed) {
  const Answer cold = serve_once(args());
  const auto files = block_files(dir.path());
  ASSERT_FALSE(files.empty());
  for (const auto& f : files) {  // a byte flipped in the middle of each
    std::fstream io(f, std::ios::in | std::ios::out | std::ios::binary);
    const auto mid = static_cast<std::streamoff>(fs::file_size(f) / 2);
    io.seekg(mid);
    char c = 0;
    io.read(&c, 1);
    io.seekp(mid);
    c = static_cast<char>(c ^ 0x40);
    io.write(&c, 1);
  }
  test::ServeProcess again(args());
  ASSERT_TRUE(again.wait_ready()) << again.err();
  const Answer r = ask(again.port());
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.body["usage"]["cache_read_input_tokens"], 0);
  EXPECT_EQ(r.body["content"], cold.body["content"]);
  EXPECT_NE(again.err().find("is damaged (a payload checksum mismatch): removed"), std::string::npos) << again.err();
  EXPECT_EQ(again.stop(), 0);
  // That server's readers found the first block damaged, and the next few
  // they had begun at the same time (up to eight): removed, and written
  // anew once computed. The next server reads those and stops at the first
  // block still damaged: never a damaged block is read.
  test::ServeProcess third(args());
  ASSERT_TRUE(third.wait_ready()) << third.err();
  const Answer t = ask(third.port());
  const int64_t read = t.body["usage"]["cache_read_input_tokens"].get<int64_t>();
  EXPECT_GE(read, 16) << t.body.dump();
  EXPECT_LE(read, 8 * 16) << t.body.dump();
  EXPECT_LT(read, static_cast<int64_t>(files.size()) * 16) << "the blocks past the eighth are still damaged";
  EXPECT_EQ(read % 16, 0);
  EXPECT_EQ(t.body["content"], cold.body["content"]);
  EXPECT_EQ(third.stop(), 0);
}

TEST_F(PrefixDisk, AServerKilledWhileWritingLeavesNothingThatIsRead) {
  Answer cold;
  {
    test::ServeProcess serve(args());
    ASSERT_TRUE(serve.wait_ready()) << serve.err();
    cold = ask(serve.port());
    ASSERT_EQ(cold.status, 200);
    ::kill(serve.pid(), SIGKILL);  // with its writer, most likely, still writing
  }
  // Whatever was on disk when it died: whole files read back, temporary
  // ones never read; the answer is the one computing it gives.
  test::ServeProcess again(args());
  ASSERT_TRUE(again.wait_ready()) << again.err();
  const Answer r = ask(again.port());
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.body["content"], cold.body["content"]);
  EXPECT_EQ(r.body["usage"]["cache_read_input_tokens"].get<int64_t>() % 16, 0);
  EXPECT_EQ(again.err().find("is damaged"), std::string::npos) << again.err();
  EXPECT_EQ(again.stop(), 0);
}

TEST_F(PrefixDisk, SizeZeroKeepsNothing) {
  test::ServeProcess serve({"--port", "0", "--prefix-cache-dir", dir.path(), "--prefix-cache-disk", "0"});
  ASSERT_TRUE(serve.wait_ready()) << serve.err();
  EXPECT_EQ(ask(serve.port()).status, 200);
  EXPECT_EQ(engine_stats(serve.port())["prefix_cache_disk"], "");
  EXPECT_EQ(serve.stop(), 0);
  EXPECT_TRUE(block_files(dir.path()).empty());
  const auto r = test::run_pensieve("serve --prefix-cache-disk lots");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("'lots' is not a memory size"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace pensieve
