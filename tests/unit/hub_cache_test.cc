// The cache layout, its listing and removal, locks, digests and progress text.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <thread>

#include "core/error.h"
#include "hub/cache.h"
#include "hub/digest.h"
#include "hub/hub.h"
#include "hub/progress_printer.h"
#include "support/test_support.h"

namespace pensieve::hub {
namespace {
namespace fs = std::filesystem;
using test::TempDir;

constexpr const char* kCommit = "0123456789abcdef0123456789abcdef01234567";

std::string digest_of(DigestKind kind, const std::string& data) {
  BlobDigest digest(kind, data.size());
  digest.update(data.data(), data.size());
  return digest.hex();
}

TEST(HubDigest, KnownValues) {
  EXPECT_EQ(digest_of(DigestKind::sha256, "abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  // `git hash-object` of "hello\n"
  EXPECT_EQ(digest_of(DigestKind::git_sha1, "hello\n"), "ce013625030ba8dba906f756967f9e9ca394464a");
  EXPECT_EQ(digest_kind_for_etag(std::string(64, 'f')), DigestKind::sha256);
  EXPECT_EQ(digest_kind_for_etag(std::string(40, '0')), DigestKind::git_sha1);
  EXPECT_EQ(digest_kind_for_etag("pointer-xyz"), DigestKind::none);
}

TEST(HubDigest, ResumedDigestMatchesOnePass) {
  TempDir dir;
  const std::string data(300000, 'x');
  test::write_file(dir.file("part"), data.substr(0, 123457));
  const int fd = ::open(dir.file("part").c_str(), O_RDONLY);
  BlobDigest digest(DigestKind::sha256, data.size());
  digest.update_from_file(fd, 123457, dir.file("part"));
  ::close(fd);
  digest.update(data.data() + 123457, data.size() - 123457);
  EXPECT_EQ(digest.hex(), digest_of(DigestKind::sha256, data));
  test::write_file(dir.file("whole"), data);
  EXPECT_EQ(sha256_file(dir.file("whole")), digest_of(DigestKind::sha256, data));
}

class EnvVar {
 public:
  EnvVar(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    had_ = std::getenv(name) != nullptr;
    if (value) {
      setenv(name, value, 1);
    } else {
      unsetenv(name);
    }
  }
  ~EnvVar() {
    if (had_) {
      setenv(name_.c_str(), old_.c_str(), 1);
    } else {
      unsetenv(name_.c_str());
    }
  }

 private:
  std::string name_, old_;
  bool had_ = false;
};

TEST(HubCache, RootFromTheEnvironment) {
  EnvVar a("HF_HUB_CACHE", nullptr), b("HUGGINGFACE_HUB_CACHE", nullptr), c("HF_HOME", nullptr),
      d("XDG_CACHE_HOME", nullptr), e("HOME", "/home/u");
  EXPECT_EQ(default_cache_dir(), "/home/u/.cache/huggingface/hub");
  {
    EnvVar x("XDG_CACHE_HOME", "/xdg");
    EXPECT_EQ(default_cache_dir(), "/xdg/huggingface/hub");
    EnvVar h("HF_HOME", "~/hf");
    EXPECT_EQ(default_cache_dir(), "/home/u/hf/hub");
    EnvVar hub("HF_HUB_CACHE", "/data/hub");
    EXPECT_EQ(default_cache_dir(), "/data/hub");
  }
  EnvVar endpoint("HF_ENDPOINT", "http://mirror.local:8080/");
  EnvVar token("HF_TOKEN", " hf_abc\n");
  EnvVar offline("HF_HUB_OFFLINE", "true");
  EnvVar timeout("HF_HUB_DOWNLOAD_TIMEOUT", "7");
  const HubOptions options = HubOptions::from_env();
  EXPECT_EQ(options.endpoint, "http://mirror.local:8080");
  EXPECT_EQ(options.token, "hf_abc");
  EXPECT_TRUE(options.offline);
  EXPECT_EQ(options.stall_timeout.count(), 7);
  EnvVar bad("HF_ENDPOINT", "ftp://x");
  EXPECT_THROW(HubOptions::from_env(), Error);
}

TEST(HubCache, TokenFileOfHuggingfaceCliLogin) {
  TempDir home;
  EnvVar token("HF_TOKEN", nullptr), path("HF_TOKEN_PATH", nullptr),
      hf_home("HF_HOME", home.path().c_str());
  test::write_file(home.file("token"), "hf_from_file\n");
  EXPECT_EQ(HubOptions::from_env().token, "hf_from_file");
}

// Lays out a model the way huggingface_hub does.
void make_model(const HubCache& cache, const std::string& repo, const std::string& weights) {
  fs::create_directories(cache.blobs_dir(repo));
  test::write_file(cache.blob_path(repo, "cfg"), "{}");
  test::write_file(cache.blob_path(repo, "weights"), weights);
  cache.link_snapshot_file(repo, kCommit, "config.json", "cfg");
  cache.link_snapshot_file(repo, kCommit, "model.safetensors", "weights");
  cache.write_ref(repo, "main", kCommit);
}

TEST(HubCache, SnapshotsRefsAndLinks) {
  TempDir dir;
  HubCache cache(dir.path() + "/");
  EXPECT_EQ(cache.root(), dir.path());
  const std::string repo = "org/model";
  EXPECT_FALSE(cache.find_snapshot(repo, "main"));
  make_model(cache, repo, "0123456789");
  EXPECT_EQ(fs::read_symlink(cache.snapshot_file(repo, kCommit, "config.json")).string(),
            "../../blobs/cfg");
  EXPECT_EQ(*cache.read_ref(repo, "main"), kCommit);
  EXPECT_EQ(*cache.find_snapshot(repo, "main"), cache.snapshot_dir(repo, kCommit));
  EXPECT_EQ(*cache.find_snapshot(repo, kCommit), cache.snapshot_dir(repo, kCommit));
  EXPECT_EQ(snapshot_problem(cache.snapshot_dir(repo, kCommit)), "");
  // Nested names get one ".." per level; refs with '/' are folders, as in huggingface_hub.
  cache.link_snapshot_file(repo, kCommit, "sub/dir/x.json", "cfg");
  EXPECT_EQ(fs::read_symlink(cache.snapshot_file(repo, kCommit, "sub/dir/x.json")).string(),
            "../../../../blobs/cfg");
  EXPECT_EQ(test::read_file(cache.snapshot_file(repo, kCommit, "sub/dir/x.json")), "{}");
  cache.write_ref(repo, "refs/pr/1", kCommit);
  EXPECT_EQ(test::read_file(cache.repo_dir(repo) + "/refs/refs/pr/1"), kCommit);
  // Relinking replaces.
  cache.link_snapshot_file(repo, kCommit, "config.json", "weights");
  EXPECT_EQ(test::read_file(cache.snapshot_file(repo, kCommit, "config.json")), "0123456789");
  // A ref that isn't a commit is ignored.
  test::write_file(cache.ref_path(repo, "bad"), "../../etc");
  EXPECT_FALSE(cache.read_ref(repo, "bad"));
}

TEST(HubCache, SnapshotProblems) {
  TempDir dir;
  HubCache cache(dir.path());
  make_model(cache, "org/model", "w");
  const std::string snap = cache.snapshot_dir("org/model", kCommit);
  fs::remove(cache.blob_path("org/model", "weights"));
  EXPECT_NE(snapshot_problem(snap).find("missing blob"), std::string::npos);
  fs::remove(snap + "/model.safetensors");
  EXPECT_EQ(snapshot_problem(snap), "no .safetensors weights");
  test::write_file(snap + "/model.safetensors.index.json",
                   R"({"weight_map": {"a": "model-00001-of-00002.safetensors"}})");
  EXPECT_NE(snapshot_problem(snap).find("model-00001-of-00002.safetensors is missing"),
            std::string::npos);
  test::write_file(snap + "/model-00001-of-00002.safetensors", "x");
  EXPECT_EQ(snapshot_problem(snap), "");
  fs::remove(snap + "/config.json");
  EXPECT_EQ(snapshot_problem(snap), "config.json is missing");
}

TEST(HubCache, ListAndRemove) {
  TempDir dir;
  HubCache cache(dir.path());
  EXPECT_TRUE(list_cached_models(cache).empty());
  make_model(cache, "org/b-model", std::string(1000, 'w'));
  make_model(cache, "org/a-model", std::string(10, 'w'));
  test::write_file(cache.incomplete_path("org/a-model", "next"), std::string(50, 'p'));
  fs::create_directories(dir.file("models--not_a_repo"));
  fs::create_directories(dir.file("datasets--org--data"));
  auto models = list_cached_models(cache);
  ASSERT_EQ(models.size(), 2u);
  EXPECT_EQ(models[0].repo, "org/a-model");
  EXPECT_EQ(models[0].n_bytes, 12u);
  EXPECT_EQ(models[0].n_partial_bytes, 50u);
  EXPECT_EQ(models[0].refs.at("main"), kCommit);
  EXPECT_EQ(models[0].snapshots, std::vector<std::string>{kCommit});
  EXPECT_EQ(models[1].n_bytes, 1002u);

  {  // A download in progress keeps it.
    BlobLock lock(cache.lock_path("org/b-model", "weights"), nullptr);
    try {
      remove_cached_model(cache, "org/b-model");
      FAIL();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("being downloaded"), std::string::npos);
    }
  }
  EXPECT_EQ(remove_cached_model(cache, "org/b-model"), 1002u);
  EXPECT_FALSE(fs::exists(cache.repo_dir("org/b-model")));
  EXPECT_EQ(list_cached_models(cache).size(), 1u);
  EXPECT_THROW(remove_cached_model(cache, "org/b-model"), Error);
  EXPECT_THROW(remove_cached_model(cache, "../x"), Error);
}

TEST(HubCache, LockIsExclusiveAndCancellable) {
  TempDir dir;
  const std::string path = dir.file(".locks/x/y.lock");
  auto held = std::make_unique<BlobLock>(path, nullptr);
  EXPECT_FALSE(BlobLock::is_free(path));
  std::atomic<bool> cancel{true};
  EXPECT_THROW(BlobLock(path, &cancel), Error);
  std::atomic<bool> got{false};
  std::thread waiter([&] {
    BlobLock second(path, nullptr);
    got = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  EXPECT_FALSE(got.load());
  held.reset();
  waiter.join();
  EXPECT_TRUE(got.load());
  EXPECT_TRUE(BlobLock::is_free(path));
}

TEST(HubCache, FreeSpaceOfAMissingFolderIsItsParents) {
  TempDir dir;
  EXPECT_GT(free_disk_bytes(dir.file("not/yet/there")), 0u);
}

TEST(HubProgress, Formatting) {
  EXPECT_EQ(format_bytes(512), "512 B");
  EXPECT_EQ(format_bytes(1536), "1.5 KiB");
  EXPECT_EQ(format_bytes(5ull << 30), "5.0 GiB");
  EXPECT_EQ(format_duration(42), "0:42");
  EXPECT_EQ(format_duration(3723), "1:02:03");
  EXPECT_EQ(format_duration(-1), "?");
  PullProgress p;
  p.bytes_done = 1 << 20;
  p.bytes_total = 4 << 20;
  EXPECT_EQ(progress_line(p, 1 << 20, 8), "[##------]  25%  1.0 MiB / 4.0 MiB  1.0 MiB/s  ETA 0:03");
  EXPECT_EQ(progress_line(p, 0, 0), " 25%  1.0 MiB / 4.0 MiB  0 B/s  ETA ?");
}

TEST(HubProgress, TerminalBarAndPlainLines) {
  TempDir dir;
  PullProgress p;
  p.repo = "org/m";
  p.stage = PullProgress::Stage::downloading;
  p.file = "model.safetensors";
  p.file_index = 1;
  p.n_files = 1;
  p.bytes_total = p.file_bytes_total = 1000;
  for (bool terminal : {true, false}) {
    std::FILE* out = std::fopen(dir.file("out").c_str(), "w");
    ProgressPrinter printer(out, terminal);
    p.bytes_done = 500;
    printer.update(p);
    p.stage = PullProgress::Stage::file_done;
    p.bytes_done = 1000;
    printer.update(p);
    p.stage = PullProgress::Stage::downloading;
    printer.finish();
    std::fclose(out);
    const std::string text = test::read_file(dir.file("out"));
    if (terminal) {
      EXPECT_NE(text.find("\r[###############---------------]  50%"), std::string::npos) << text;
      EXPECT_NE(text.find("100%"), std::string::npos) << text;
      EXPECT_EQ(text.back(), '\n');
    } else {
      EXPECT_EQ(text, "downloading model.safetensors (1/1, 1000 B)\nverified model.safetensors\n");
    }
  }
}

}  // namespace
}  // namespace pensieve::hub
