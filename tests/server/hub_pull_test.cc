// pull() against the fake Hub: the happy path, every failure the Hub or the
// network can throw at it, and the cache it shares with other tools.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <filesystem>
#include <thread>

#include "core/error.h"
#include "hub/cache.h"
#include "hub/hub.h"
#include "server/hub_fake_hub.h"
#include "support/test_support.h"

namespace pensieve {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using test::FakeFaults;
using test::FakeHub;
using test::TempDir;

constexpr const char* kRepo = "pensieve-test/qwen2-tiny";
constexpr const char* kWeights = "model.safetensors";

using test::error_of;

class HubPull : public ::testing::Test {
 protected:
  HubPull() { hub.add_repo(kRepo, test::qwen2_tiny_repo()); }

  hub::HubOptions options() const {
    hub::HubOptions o;
    o.endpoint = hub.endpoint();
    o.cache_dir = cache.path();
    o.first_backoff = 5ms;
    o.max_backoff = 20ms;
    o.max_attempts = 4;
    // Far above anything the fake Hub takes on a busy machine, so no test
    // sees a retry it did not ask for; the stall tests set 1 s themselves.
    o.stall_timeout = 20s;
    return o;
  }
  // A pull that gives up on a server sending nothing for a second: far
  // shorter than the stalls the tests make the fake Hub hold (kStall).
  hub::HubOptions stall_options() const {
    hub::HubOptions o = options();
    o.stall_timeout = 1s;
    return o;
  }
  // How long the fake Hub stalls: long enough that only the client's 1 s
  // stall timeout can end a try within kStalledPullBound (curl measures the
  // speed over a few seconds, so a timeout takes 2-4 s).
  static constexpr auto kStall = 60s;
  static constexpr auto kStalledPullBound = 30s;
  const test::FakeRepo& repo() const { return hub.repo(kRepo); }
  uint64_t weights_size() const { return repo().files.at(kWeights).content.size(); }
  std::string repo_dir() const { return cache.file("models--pensieve-test--qwen2-tiny"); }
  std::string blob(const std::string& file) const {
    return repo_dir() + "/blobs/" + repo().files.at(file).etag;
  }
  std::string partial(const std::string& file) const { return blob(file) + ".incomplete"; }
  // The four files a pull of the repo fetches.
  uint64_t model_files_size() const {
    uint64_t n = 0;
    for (const char* name : {"config.json", "generation_config.json", "tokenizer_config.json",
                             kWeights}) {
      n += repo().files.at(name).content.size();
    }
    return n;
  }
  // Records the retries of a pull: what failed, why, and the wait before the next try.
  struct Retry {
    std::string what, error;
    std::chrono::milliseconds delay;
  };
  static void record_retries(hub::HubOptions& o, std::vector<Retry>& retries) {
    o.on_retry = [&retries](const std::string& what, const std::string& error,
                            std::chrono::milliseconds delay) {
      retries.push_back({what, error, delay});
    };
  }

  void expect_complete_snapshot(const std::string& dir) const {
    EXPECT_EQ(dir, repo_dir() + "/snapshots/" + repo().commit);
    for (const char* name : {"config.json", "generation_config.json", "tokenizer_config.json",
                             kWeights}) {
      SCOPED_TRACE(name);
      const std::string path = dir + "/" + name;
      ASSERT_TRUE(fs::is_symlink(path));
      EXPECT_EQ(fs::read_symlink(path).string(), "../../blobs/" + repo().files.at(name).etag);
      EXPECT_EQ(test::read_file(path), repo().files.at(name).content);
    }
  }

  FakeHub hub;
  TempDir cache;
};

TEST_F(HubPull, FullPullLaysOutTheHuggingFaceCache) {
  std::vector<hub::PullProgress> seen;
  auto opts = options();
  opts.token = "some-token";  // not gated, but sent: it must not reach the CDN
  const auto result = hub::pull(kRepo, "main", opts, [&](const hub::PullProgress& p) {
    seen.push_back(p);
  });
  expect_complete_snapshot(result.snapshot_dir);
  EXPECT_EQ(result.commit, repo().commit);
  EXPECT_EQ(result.n_files, 4u);
  EXPECT_EQ(result.n_files_downloaded, 4u);
  EXPECT_EQ(test::read_file(repo_dir() + "/refs/main"), repo().commit);
  // LFS blob named by its SHA-256, git files by their blob id.
  EXPECT_EQ(repo().files.at(kWeights).etag, test::sha256_hex(repo().files.at(kWeights).content));
  EXPECT_TRUE(fs::is_regular_file(blob(kWeights)));
  EXPECT_TRUE(fs::is_regular_file(blob("config.json")));
  EXPECT_FALSE(fs::exists(partial(kWeights)));
  EXPECT_TRUE(fs::exists(cache.path() + "/.locks/models--pensieve-test--qwen2-tiny/" +
                         repo().files.at(kWeights).etag + ".lock"));
  // Exactly the model's files, each once.
  EXPECT_EQ(hub.bytes_served(kWeights), weights_size());
  EXPECT_EQ(hub.n_gets(kWeights), 1);
  for (const char* junk : {"README.md", "pytorch_model.bin", "onnx/model.onnx",
                           "original/consolidated.safetensors", "images/logo.png"}) {
    EXPECT_EQ(hub.n_gets(junk), 0) << junk;
  }
  EXPECT_EQ(std::distance(fs::directory_iterator(result.snapshot_dir), fs::directory_iterator()),
            4);
  EXPECT_GT(hub.n_cdn_requests(), 0);
  EXPECT_EQ(hub.n_cdn_requests_with_auth(), 0);
  // Progress ends at the total.
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back().stage, hub::PullProgress::Stage::done);
  EXPECT_EQ(seen.back().bytes_done, seen.back().bytes_total);
  EXPECT_GE(seen.back().bytes_total, weights_size());

  // A second pull asks the API and downloads nothing.
  const auto again = hub::pull(kRepo, "main", options());
  EXPECT_EQ(again.snapshot_dir, result.snapshot_dir);
  EXPECT_EQ(again.n_bytes_downloaded, 0u);
  EXPECT_EQ(hub.n_gets(kWeights), 1);
}

TEST_F(HubPull, TagAndCommitRevisions) {
  const auto by_tag = hub::pull(kRepo, "v1.0", options());
  EXPECT_EQ(test::read_file(repo_dir() + "/refs/v1.0"), repo().commit);
  EXPECT_FALSE(fs::exists(repo_dir() + "/refs/main"));
  const auto by_commit = hub::pull(kRepo, repo().commit, options());
  EXPECT_EQ(by_commit.snapshot_dir, by_tag.snapshot_dir);
  EXPECT_FALSE(fs::exists(repo_dir() + "/refs/" + repo().commit));
  EXPECT_EQ(hub.n_gets(kWeights), 1);
}

TEST_F(HubPull, DroppedConnectionResumesWithoutRedownloading) {
  FakeFaults faults;
  faults.n_drops = 2;
  faults.drop_after = 400000;  // each try gets 400 KB further
  hub.set_faults(faults);
  const auto result = hub::pull(kRepo, "main", options());
  expect_complete_snapshot(result.snapshot_dir);
  EXPECT_EQ(hub.n_gets(kWeights), 3);
  EXPECT_EQ(hub.bytes_served(kWeights), weights_size());  // no byte sent twice
  const auto transfers = hub.transfers(kWeights);
  ASSERT_EQ(transfers.size(), 3u);
  EXPECT_EQ(transfers[1].range_start, 400000u);
  EXPECT_EQ(transfers[2].range_start, 800000u);
  // The bytes of the tries that broke off count as downloaded too.
  EXPECT_EQ(result.n_bytes_downloaded, model_files_size());
}

TEST_F(HubPull, InterruptedPullLeavesAPartialFileTheNextPullResumes) {
  std::atomic<bool> cancel{false};
  auto opts = options();
  opts.cancel = &cancel;
  FakeFaults slow;
  slow.chunk_delay = 20ms;
  hub.set_faults(slow);
  const std::string message = error_of([&] {
    hub::pull(kRepo, "main", opts, [&](const hub::PullProgress& p) {
      if (p.file == kWeights && p.file_bytes_done >= 300000) cancel = true;
    });
  });
  EXPECT_NE(message.find("interrupted"), std::string::npos) << message;
  ASSERT_TRUE(fs::exists(partial(kWeights)));
  const uint64_t kept = fs::file_size(partial(kWeights));
  EXPECT_GE(kept, 300000u);
  EXPECT_LT(kept, weights_size());
  EXPECT_FALSE(fs::exists(blob(kWeights)));
  EXPECT_FALSE(fs::exists(repo_dir() + "/refs/main"));  // not a usable snapshot yet

  hub.set_faults({});
  uint64_t resumed = 0;
  const auto result = hub::pull(kRepo, "main", options(), [&](const hub::PullProgress& p) {
    resumed = p.bytes_resumed;
  });
  expect_complete_snapshot(result.snapshot_dir);
  EXPECT_EQ(resumed, kept);
  EXPECT_EQ(result.n_bytes_downloaded + kept,
            weights_size() + 0 /* small files came in the first pull */);
  // The second pull asked for the rest only and got exactly that. (The
  // total the Hub sent is more than the file: chunks in flight when the
  // first pull stopped were sent but never kept.)
  const auto transfers = hub.transfers(kWeights);
  ASSERT_EQ(transfers.size(), 2u);
  EXPECT_EQ(transfers[0].range_start, 0u);
  EXPECT_EQ(transfers[1].range_start, kept);
  EXPECT_EQ(transfers[1].status, 206);
  EXPECT_EQ(transfers[1].bytes, weights_size() - kept);
}

TEST_F(HubPull, CorruptTransferIsDetectedAndRepaired) {
  FakeFaults faults;
  faults.n_corruptions = 1;
  hub.set_faults(faults);
  const auto result = hub::pull(kRepo, "main", options());
  expect_complete_snapshot(result.snapshot_dir);
  EXPECT_EQ(hub.n_gets(kWeights), 2);
  EXPECT_EQ(test::sha256_hex(test::read_file(blob(kWeights))), repo().files.at(kWeights).etag);
}

TEST_F(HubPull, CorruptGitFileIsDetectedToo) {
  FakeFaults faults;
  faults.file = "config.json";
  faults.n_corruptions = 1;
  hub.set_faults(faults);
  auto opts = options();
  std::vector<Retry> retries;
  record_retries(opts, retries);
  const auto result = hub::pull(kRepo, "main", opts);
  expect_complete_snapshot(result.snapshot_dir);
  // The metadata HEAD took no fault: the first GET was corrupt, the second clean.
  EXPECT_EQ(hub.n_heads("config.json"), 1);
  EXPECT_EQ(hub.n_gets("config.json"), 2);
  ASSERT_EQ(retries.size(), 1u);
  EXPECT_EQ(retries[0].what, std::string("downloading ") + kRepo + "/config.json");
  EXPECT_NE(retries[0].error.find("git blob id"), std::string::npos) << retries[0].error;
  EXPECT_EQ(test::git_blob_sha1(test::read_file(blob("config.json"))),
            repo().files.at("config.json").etag);
}

TEST_F(HubPull, PersistentCorruptionFailsAndKeepsNothing) {
  FakeFaults faults;
  faults.n_corruptions = 100;
  hub.set_faults(faults);
  const std::string message = error_of([&] { hub::pull(kRepo, "main", options()); });
  EXPECT_NE(message.find("corrupt"), std::string::npos) << message;
  EXPECT_NE(message.find("SHA-256"), std::string::npos) << message;
  EXPECT_NE(message.find("after 4 attempts"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(blob(kWeights)));
  EXPECT_FALSE(fs::exists(partial(kWeights)));
  EXPECT_FALSE(fs::exists(repo_dir() + "/snapshots/" + repo().commit + "/" + kWeights));
}

TEST_F(HubPull, ConnectionResetsAndServerErrorsAreRetried) {
  FakeFaults faults;
  faults.n_drops = 2;
  faults.drop_after = 0;  // headers, then the connection closes
  faults.n_api_errors = 2;
  hub.set_faults(faults);
  const auto result = hub::pull(kRepo, "main", options());
  expect_complete_snapshot(result.snapshot_dir);
  EXPECT_EQ(hub.n_api_requests(), 3);
  EXPECT_EQ(hub.n_gets(kWeights), 3);
}

// A real TCP reset (SO_LINGER 0, then close) in the middle of the body, not a
// clean close: curl sees ECONNRESET, and the retry resumes after the bytes kept.
TEST_F(HubPull, ConnectionResetMidBodyResumes) {
  FakeFaults faults;
  faults.n_resets = 1;
  faults.reset_after = 300000;
  hub.set_faults(faults);
  auto opts = options();
  std::vector<Retry> retries;
  record_retries(opts, retries);
  const auto result = hub::pull(kRepo, "main", opts);
  expect_complete_snapshot(result.snapshot_dir);
  ASSERT_EQ(retries.size(), 1u);
  EXPECT_NE(retries[0].error.find("reset by peer"), std::string::npos) << retries[0].error;
  const auto transfers = hub.transfers(kWeights);
  ASSERT_EQ(transfers.size(), 2u);
  EXPECT_EQ(transfers[0].bytes, 300000u);
  // Resumed, not restarted: the second GET asked for the rest and got only that.
  EXPECT_GT(transfers[1].range_start, 0u);
  EXPECT_LE(transfers[1].range_start, 300000u);
  EXPECT_EQ(transfers[1].status, 206);
  EXPECT_EQ(transfers[1].bytes, weights_size() - transfers[1].range_start);
}

// A server (or proxy) that ignores Range and sends the whole file with 200:
// the partial file is started over, not appended to.
TEST_F(HubPull, ServerIgnoringRangeRestartsTheFileCleanly) {
  FakeFaults faults;
  faults.n_drops = 1;
  faults.drop_after = 400000;
  faults.n_ignore_ranges = 1;
  hub.set_faults(faults);
  const auto result = hub::pull(kRepo, "main", options());
  expect_complete_snapshot(result.snapshot_dir);
  const auto transfers = hub.transfers(kWeights);
  ASSERT_EQ(transfers.size(), 2u);  // no third try after a digest mismatch
  EXPECT_EQ(transfers[1].range_start, 400000u);
  EXPECT_EQ(transfers[1].status, 200);
  EXPECT_EQ(transfers[1].bytes, weights_size());
  EXPECT_EQ(fs::file_size(blob(kWeights)), weights_size());
}

// A 206 whose Content-Range is not the range asked for is refused at its
// first byte; the file is fetched again from the start.
TEST_F(HubPull, WrongContentRangeIsRejected) {
  FakeFaults faults;
  faults.n_drops = 1;
  faults.drop_after = 400000;
  faults.n_wrong_ranges = 1;
  hub.set_faults(faults);
  auto opts = options();
  std::vector<Retry> retries;
  record_retries(opts, retries);
  const auto result = hub::pull(kRepo, "main", opts);
  expect_complete_snapshot(result.snapshot_dir);
  const auto transfers = hub.transfers(kWeights);
  ASSERT_EQ(transfers.size(), 3u);
  EXPECT_EQ(transfers[1].range_start, 400000u);
  EXPECT_EQ(transfers[2].range_start, 0u);
  EXPECT_EQ(transfers[2].bytes, weights_size());
  ASSERT_EQ(retries.size(), 2u);
  EXPECT_NE(retries[1].error.find("wrong range ('bytes 404096-"), std::string::npos)
      << retries[1].error;
}

TEST_F(HubPull, MissingFileIsANotFoundError) {
  auto fake = test::qwen2_tiny_repo();
  fake.extra_siblings = {"tokenizer.json"};  // listed by the API, but resolve says 404
  hub.add_repo(kRepo, fake);
  try {
    hub::pull(kRepo, "main", options());
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_EQ(e.kind(), ErrorKind::not_found);
    EXPECT_NE(message.find("checking pensieve-test/qwen2-tiny/tokenizer.json: file not found in "
                           "pensieve-test/qwen2-tiny (HTTP 404)"),
              std::string::npos)
        << message;
  }
  EXPECT_EQ(hub.n_gets(kWeights), 0);  // found before anything big moved
  EXPECT_FALSE(fs::exists(repo_dir() + "/refs/main"));
}

TEST_F(HubPull, StalledRevisionApiTimesOutWithAClearError) {
  FakeFaults faults;
  faults.n_api_stalls = 1;  // once: the retry gets an answer
  faults.stall_for = kStall;
  hub.set_faults(faults);
  auto opts = stall_options();
  std::vector<Retry> retries;
  record_retries(opts, retries);
  expect_complete_snapshot(hub::pull(kRepo, "main", opts).snapshot_dir);
  EXPECT_EQ(hub.n_api_requests(), 2);
  ASSERT_EQ(retries.size(), 1u);
  EXPECT_NE(retries[0].what.find("resolving"), std::string::npos);

  faults.n_api_stalls = 100;
  hub.set_faults(faults);
  opts.max_attempts = 2;
  const auto start = std::chrono::steady_clock::now();
  const std::string message = error_of([&] { hub::pull(kRepo, "v1.0", opts); });
  // Two tries that each waited out the 1 s stall timeout, not the Hub's minute.
  EXPECT_LT(std::chrono::steady_clock::now() - start, kStalledPullBound);
  EXPECT_NE(message.find("resolving pensieve-test/qwen2-tiny@v1.0 failed after 2 attempts: "
                         "timed out waiting for " + hub.endpoint() + "/api/models/"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("sends nothing for 1 s"), std::string::npos) << message;
  EXPECT_NE(message.find("HF_HUB_DOWNLOAD_TIMEOUT"), std::string::npos) << message;
}

// The waits between tries double from first_backoff up to max_backoff, and a
// try that got further starts the doubling over.
TEST_F(HubPull, BackoffDoublesUpToItsCapAndRestartsAfterProgress) {
  using ms = std::chrono::milliseconds;
  FakeFaults outage;
  outage.n_api_errors = 100;
  hub.set_faults(outage);
  auto opts = options();
  opts.first_backoff = 10ms;
  opts.max_backoff = 40ms;
  opts.max_attempts = 6;
  std::vector<Retry> retries;
  record_retries(opts, retries);
  const auto start = std::chrono::steady_clock::now();
  const std::string message = error_of([&] { hub::pull(kRepo, "main", opts); });
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_NE(message.find("failed after 6 attempts"), std::string::npos) << message;
  std::vector<ms> delays;
  for (const auto& r : retries) delays.push_back(r.delay);
  EXPECT_EQ(delays, (std::vector<ms>{10ms, 20ms, 40ms, 40ms, 40ms}));
  EXPECT_GE(elapsed, 150ms);  // and it really waited that long
  EXPECT_EQ(hub.n_api_requests(), 6);

  FakeFaults drops;  // every try gets further: the wait stays at the first one
  drops.n_drops = 3;
  drops.drop_after = 300000;
  hub.set_faults(drops);
  retries.clear();
  expect_complete_snapshot(hub::pull(kRepo, "main", opts).snapshot_dir);
  delays.clear();
  for (const auto& r : retries) delays.push_back(r.delay);
  EXPECT_EQ(delays, (std::vector<ms>{10ms, 10ms, 10ms}));
}

TEST_F(HubPull, StalledServerTimesOutAndResumes) {
  FakeFaults faults;
  faults.n_stalls = 1;
  faults.stall_after = 200000;
  faults.stall_for = kStall;
  hub.set_faults(faults);
  const auto start = std::chrono::steady_clock::now();
  const auto result = hub::pull(kRepo, "main", stall_options());
  const auto elapsed = std::chrono::steady_clock::now() - start;
  expect_complete_snapshot(result.snapshot_dir);
  EXPECT_LT(elapsed, kStalledPullBound);  // the 1 s stall timeout fired, not the server's minute
  EXPECT_EQ(hub.n_gets(kWeights), 2);
  EXPECT_EQ(hub.bytes_served(kWeights), weights_size());
}

TEST_F(HubPull, StallForeverGivesUpWithAClearError) {
  FakeFaults faults;
  faults.n_stalls = 100;
  faults.stall_after = 0;
  faults.stall_for = kStall;
  hub.set_faults(faults);
  auto opts = stall_options();
  opts.max_attempts = 2;
  const std::string message = error_of([&] { hub::pull(kRepo, "main", opts); });
  EXPECT_NE(message.find("failed after 2 attempts"), std::string::npos) << message;
  EXPECT_NE(message.find(kWeights), std::string::npos) << message;
}

TEST_F(HubPull, DiskSpaceIsCheckedBeforeDownloading) {
  auto opts = options();
  std::string asked;
  opts.free_space = [&](const std::string& path) -> uint64_t {
    asked = path;
    return 100000;
  };
  const std::string message = error_of([&] { hub::pull(kRepo, "main", opts); });
  EXPECT_NE(message.find("not enough disk space"), std::string::npos) << message;
  EXPECT_NE(message.find("100000 bytes"), std::string::npos) << message;
  uint64_t n_needed = 0;
  for (const char* name : {"config.json", "generation_config.json", "tokenizer_config.json",
                           kWeights}) {
    n_needed += repo().files.at(name).content.size();
  }
  EXPECT_NE(message.find(std::to_string(n_needed) + " bytes"), std::string::npos) << message;
  EXPECT_EQ(asked, repo_dir() + "/blobs");
  EXPECT_EQ(hub.n_gets(kWeights), 0);
  EXPECT_FALSE(fs::exists(partial(kWeights)));
}

TEST_F(HubPull, DiskCheckCountsTheBytesAlreadyOnDisk) {
  // A partial file from an earlier pull: only the rest must fit.
  const std::string& content = repo().files.at(kWeights).content;
  fs::create_directories(repo_dir() + "/blobs");
  test::write_file(partial(kWeights), content.substr(0, content.size() - 1000));
  auto opts = options();
  opts.free_space = [](const std::string&) -> uint64_t { return 5000; };
  const auto result = hub::pull(kRepo, "main", opts);
  expect_complete_snapshot(result.snapshot_dir);
  EXPECT_EQ(hub.bytes_served(kWeights), 1000u);
}

TEST_F(HubPull, ConcurrentPullsWriteEachBlobOnce) {
  FakeFaults slow;
  slow.chunk_delay = 10ms;  // long enough for the two pulls to overlap
  hub.set_faults(slow);
  std::string dirs[2], errors[2];
  std::thread threads[2];
  for (int i = 0; i < 2; ++i) {
    threads[i] = std::thread([&, i] {
      try {
        dirs[i] = hub::pull(kRepo, "main", options()).snapshot_dir;
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors[0], "");
  EXPECT_EQ(errors[1], "");
  expect_complete_snapshot(dirs[0]);
  EXPECT_EQ(dirs[0], dirs[1]);
  EXPECT_EQ(hub.n_gets(kWeights), 1);
  EXPECT_EQ(hub.bytes_served(kWeights), weights_size());
}

TEST_F(HubPull, OfflineModeUsesOnlyTheCache) {
  auto opts = options();
  opts.offline = true;
  const std::string missing = error_of([&] { hub::pull(kRepo, "main", opts); });
  EXPECT_NE(missing.find("not in the cache"), std::string::npos) << missing;
  EXPECT_NE(missing.find("HF_HUB_OFFLINE"), std::string::npos) << missing;
  EXPECT_EQ(hub.n_api_requests(), 0);

  const auto online = hub::pull(kRepo, "main", options());
  const int n_api = hub.n_api_requests();
  const auto offline = hub::pull(kRepo, "main", opts);
  EXPECT_EQ(offline.snapshot_dir, online.snapshot_dir);
  EXPECT_TRUE(offline.used_cache_only);
  EXPECT_EQ(hub::pull(kRepo, repo().commit, opts).snapshot_dir, online.snapshot_dir);
  EXPECT_EQ(hub.n_api_requests(), n_api);
  EXPECT_NE(error_of([&] { hub::pull(kRepo, "v2.0", opts); }).find("not in the cache"),
            std::string::npos);

  fs::remove(blob(kWeights));  // a damaged cache is reported, not loaded
  const std::string broken = error_of([&] { hub::pull(kRepo, "main", opts); });
  EXPECT_NE(broken.find("incomplete"), std::string::npos) << broken;
  EXPECT_NE(broken.find(kWeights), std::string::npos) << broken;
}

TEST_F(HubPull, UnreachableHubFallsBackToACompleteCache) {
  const auto online = hub::pull(kRepo, "main", options());
  auto opts = options();
  opts.endpoint = "http://127.0.0.1:1";  // nothing listens there
  opts.max_attempts = 2;
  const auto result = hub::pull(kRepo, "main", opts);
  EXPECT_EQ(result.snapshot_dir, online.snapshot_dir);
  EXPECT_TRUE(result.used_cache_only);
  const std::string message = error_of([&] { hub::pull("other/model", "main", opts); });
  EXPECT_NE(message.find("failed after 2 attempts"), std::string::npos) << message;

  FakeFaults outage;  // a Hub answering 500 to everything counts as unreachable too
  outage.n_api_errors = 100;
  hub.set_faults(outage);
  opts.endpoint = hub.endpoint();
  EXPECT_EQ(hub::pull(kRepo, "main", opts).snapshot_dir, online.snapshot_dir);
  EXPECT_NE(error_of([&] { hub::pull(kRepo, "v2.0", opts); }).find("HTTP 500"),
            std::string::npos);
}

// The layout huggingface_hub writes, built by hand: pensieve must use it as is.
TEST_F(HubPull, UsesACacheWrittenByHuggingfaceHub) {
  const auto& fake = repo();
  const std::string snapshot = repo_dir() + "/snapshots/" + fake.commit;
  fs::create_directories(repo_dir() + "/blobs");
  fs::create_directories(repo_dir() + "/refs");
  fs::create_directories(snapshot);
  for (const auto& [name, file] : fake.files) {
    test::write_file(repo_dir() + "/blobs/" + file.etag, file.content);
    if (name.find('/') == std::string::npos) {  // Python tools fetch more; that's fine
      fs::create_symlink("../../blobs/" + file.etag, snapshot + "/" + name);
    }
  }
  test::write_file(repo_dir() + "/refs/main", fake.commit);

  auto offline = options();
  offline.offline = true;
  EXPECT_EQ(hub::pull(kRepo, "main", offline).snapshot_dir, snapshot);
  const auto online = hub::pull(kRepo, "main", options());
  EXPECT_EQ(online.snapshot_dir, snapshot);
  EXPECT_EQ(online.n_bytes_downloaded, 0u);
  EXPECT_EQ(hub.n_gets(kWeights), 0);
  EXPECT_EQ(hub.n_gets("config.json"), 0);
  EXPECT_EQ(hub::ensure_model(std::string(kRepo) + "@main", options()), snapshot);
}

TEST_F(HubPull, UsesBlobsAlreadyInTheCacheForANewCommit) {
  hub::pull(kRepo, "main", options());
  auto next = test::qwen2_tiny_repo();
  next.commit = "5555555555666666666677777777778888888888";
  next.files["config.json"].content += " ";
  hub.add_repo(kRepo, next);
  const auto result = hub::pull(kRepo, "main", options());
  EXPECT_EQ(result.commit, next.commit);
  EXPECT_EQ(result.n_files_downloaded, 1u);  // only config.json changed
  EXPECT_EQ(hub.n_gets(kWeights), 1);
  EXPECT_EQ(test::read_file(repo_dir() + "/refs/main"), next.commit);
}

TEST_F(HubPull, OnlyTheShardsTheIndexNamesAreFetched) {
  test::FakeRepo sharded;
  sharded.commit = "abcdefabcdefabcdefabcdefabcdefabcdefabcd";
  sharded.files["config.json"] = {"{}", false, ""};
  sharded.files["model-00001-of-00002.safetensors"] = {std::string(3000, '1'), true, ""};
  sharded.files["model-00002-of-00002.safetensors"] = {std::string(2000, '2'), true, ""};
  sharded.files["consolidated.safetensors"] = {std::string(5000, 'c'), true, ""};
  sharded.files["model.safetensors.index.json"] = {
      R"({"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors",
          "b": "model-00002-of-00002.safetensors"}})", false, ""};
  hub.add_repo("org/sharded", sharded);
  const auto result = hub::pull("org/sharded", "main", options());
  EXPECT_EQ(result.n_files, 4u);
  EXPECT_EQ(hub.n_gets("consolidated.safetensors"), 0);
  EXPECT_EQ(hub.n_gets("model-00002-of-00002.safetensors"), 1);
  EXPECT_TRUE(fs::exists(result.snapshot_dir + "/model-00001-of-00002.safetensors"));
}

TEST_F(HubPull, GatedRepoNeedsTheToken) {
  auto gated = test::qwen2_tiny_repo();
  gated.gated = true;
  hub.add_repo("org/gated", gated);
  const std::string message = error_of([&] { hub::pull("org/gated", "main", options()); });
  EXPECT_NE(message.find("HTTP 401"), std::string::npos) << message;
  EXPECT_NE(message.find("gated"), std::string::npos) << message;
  EXPECT_NE(message.find("HF_TOKEN"), std::string::npos) << message;
  EXPECT_EQ(hub.n_api_requests(), 1);  // a 401 is not retried

  auto opts = options();
  opts.token = hub.token;
  const auto result = hub::pull("org/gated", "main", opts);
  EXPECT_TRUE(fs::exists(result.snapshot_dir + "/" + kWeights));
  EXPECT_EQ(hub.n_cdn_requests_with_auth(), 0);  // the token stays with the Hub

  opts.token = "wrong";
  const std::string refused = error_of([&] { hub::pull("org/gated", "main", opts); });
  EXPECT_NE(refused.find("HF_TOKEN that was sent has no access"), std::string::npos) << refused;
}

TEST_F(HubPull, NotFoundErrorsSayWhat) {
  try {
    hub::pull("org/missing", "main", options());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::not_found);
    EXPECT_NE(std::string(e.what()).find("repository org/missing not found"), std::string::npos)
        << e.what();
  }
  const std::string revision = error_of([&] { hub::pull(kRepo, "no-such-branch", options()); });
  EXPECT_NE(revision.find("revision not found"), std::string::npos) << revision;
  EXPECT_EQ(hub.n_api_requests(), 2);
}

TEST_F(HubPull, NonJsonAnswersAreClearErrors) {
  FakeFaults faults;
  faults.api_body = "<html><body>Welcome to the hotel wifi</body></html>";
  hub.set_faults(faults);
  const std::string message = error_of([&] { hub::pull(kRepo, "main", options()); });
  EXPECT_NE(message.find("not JSON"), std::string::npos) << message;
  EXPECT_NE(message.find("hotel wifi"), std::string::npos) << message;

  faults.api_body = R"({"sha": 42})";
  hub.set_faults(faults);
  EXPECT_NE(error_of([&] { hub::pull(kRepo, "main", options()); }).find("'sha'"),
            std::string::npos);
  faults.api_body = R"({"sha": "../../../../etc", "siblings": []})";
  hub.set_faults(faults);
  EXPECT_NE(error_of([&] { hub::pull(kRepo, "main", options()); }).find("not a commit id"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(repo_dir()));
}

TEST_F(HubPull, TraversalNamesFromTheServerAreRejected) {
  TempDir outside;
  const std::string evil_cache = outside.file("cache");
  auto opts = options();
  opts.cache_dir = evil_cache;
  for (const std::string name : {"../escape.json", "/etc/passwd", "a/../../b.safetensors",
                                 "..", "a\\..\\b.safetensors"}) {
    auto fake = test::qwen2_tiny_repo();
    fake.extra_siblings = {name};
    hub.add_repo("org/evil", fake);
    const std::string message = error_of([&] { hub::pull("org/evil", "main", opts); });
    EXPECT_NE(message.find("unsafe file name"), std::string::npos) << name << ": " << message;
  }
  // An index pointing outside the snapshot.
  auto fake = test::qwen2_tiny_repo();
  fake.files["model.safetensors.index.json"] = {
      R"({"weight_map": {"a": "../../../escape.safetensors"}})", false, ""};
  hub.add_repo("org/evil", fake);
  EXPECT_NE(error_of([&] { hub::pull("org/evil", "main", opts); }).find("unsafe file name"),
            std::string::npos);
  // An etag that would name a path.
  FakeFaults faults;
  faults.etag_override = "../../../escape";
  hub.set_faults(faults);
  hub.add_repo("org/evil", test::qwen2_tiny_repo());
  EXPECT_NE(error_of([&] { hub::pull("org/evil", "main", opts); }).find("unusable etag"),
            std::string::npos);
  // Nothing outside the cache folder.
  for (const auto& entry : fs::directory_iterator(outside.path())) {
    EXPECT_EQ(entry.path().filename(), "cache");
  }
  for (const auto& entry : fs::recursive_directory_iterator(evil_cache)) {
    EXPECT_EQ(entry.path().filename().string().find("escape"), std::string::npos)
        << entry.path();
  }
}

TEST_F(HubPull, AbsurdSizesAreRejected) {
  FakeFaults faults;
  for (const std::string size : {"-5", "12abc", "", "99999999999999999999999"}) {
    faults.linked_size = size.empty() ? " " : size;
    hub.set_faults(faults);
    const std::string message = error_of([&] { hub::pull(kRepo, "main", options()); });
    EXPECT_NE(message.find("absurd size"), std::string::npos) << size << ": " << message;
  }
  faults.linked_size = "10000000000000";  // 10 TB: plausible syntax, but no disk has room
  hub.set_faults(faults);
  auto opts = options();
  opts.free_space = [](const std::string&) -> uint64_t { return 1ull << 40; };
  const std::string message = error_of([&] { hub::pull(kRepo, "main", opts); });
  EXPECT_NE(message.find("not enough disk space"), std::string::npos) << message;
  EXPECT_EQ(hub.n_gets(kWeights), 0);
}

TEST_F(HubPull, WrongSizeFromTheServerIsNotAccepted) {
  FakeFaults faults;
  faults.linked_size = std::to_string(weights_size() - 10);  // body is longer than announced
  hub.set_faults(faults);
  auto opts = options();
  opts.max_attempts = 2;
  const std::string message = error_of([&] { hub::pull(kRepo, "main", opts); });
  EXPECT_NE(message.find("more than"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(blob(kWeights)));
}

TEST_F(HubPull, EnsureModelTakesFoldersAndRepoIds) {
  const std::string local = test::data_path("models/qwen2-tiny");
  EXPECT_EQ(hub::ensure_model(local, options()), local);
  EXPECT_EQ(hub.n_api_requests(), 0);
  EXPECT_NE(error_of([&] { hub::ensure_model("./no/such/dir", options()); }).find("does not exist"),
            std::string::npos);
  EXPECT_NE(error_of([&] { hub::ensure_model("not a repo", options()); }).find("repo id"),
            std::string::npos);
  const std::string dir = hub::ensure_model(kRepo, options());
  expect_complete_snapshot(dir);
}

}  // namespace
}  // namespace pensieve
