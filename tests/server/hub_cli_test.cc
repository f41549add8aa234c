// `pensieve pull / list / rm` as separate processes against the fake Hub:
// plain progress output, Ctrl-C leaving a resumable file, a file-size limit
// and a tiny tmpfs standing in for a full disk, two processes at once.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <functional>
#include <filesystem>
#include <optional>
#include <thread>

#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <nlohmann/json.hpp>

#include "server/hub_fake_hub.h"
#include "support/test_support.h"

extern char** environ;

namespace pensieve {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using test::FakeHub;
using test::TempDir;

constexpr const char* kRepo = "pensieve-test/qwen2-tiny";
constexpr const char* kWeights = "model.safetensors";

// Sets environment variables for the child processes; restores them after.
class ScopedEnv {
 public:
  void set(const std::string& name, const char* value) {
    const char* old = std::getenv(name.c_str());
    saved_.emplace_back(name, old ? std::optional<std::string>(old) : std::nullopt);
    if (value) {
      setenv(name.c_str(), value, 1);
    } else {
      unsetenv(name.c_str());
    }
  }
  ~ScopedEnv() {
    for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) {
      if (it->second) {
        setenv(it->first.c_str(), it->second->c_str(), 1);
      } else {
        unsetenv(it->first.c_str());
      }
    }
  }

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

struct Shell {
  int exit_code;
  std::string out, err;
};

// Runs a /bin/sh command line, capturing its output.
Shell shell(const std::string& command) {
  TempDir tmp;
  const std::string line = "(" + command + ") >" + tmp.file("out") + " 2>" + tmp.file("err") +
                           " </dev/null";
  const int status = std::system(line.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status),
          test::read_file(tmp.file("out")), test::read_file(tmp.file("err"))};
}

// Starts the pensieve binary with `args`, stdout to /dev/null and stderr to
// err_path (or /dev/null); returns its pid, or -1.
pid_t spawn_pensieve(std::vector<std::string> args, const std::string& err_path = "/dev/null") {
  args.insert(args.begin(), PENSIEVE_BINARY);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, err_path.c_str(), O_WRONLY | O_CREAT, 0644);
  pid_t pid = -1;
  if (posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ) != 0) pid = -1;
  posix_spawn_file_actions_destroy(&actions);
  return pid;
}

class HubCli : public ::testing::Test {
 protected:
  HubCli() {
    hub.add_repo(kRepo, test::qwen2_tiny_repo());
    env.set("HF_ENDPOINT", hub.endpoint().c_str());
    env.set("HF_HUB_CACHE", cache.path().c_str());
    env.set("HF_HOME", home.path().c_str());  // no token file of the user's
    env.set("HF_TOKEN", nullptr);
    env.set("HF_HUB_OFFLINE", nullptr);
    env.set("HF_HUB_DOWNLOAD_TIMEOUT", nullptr);
  }
  std::string repo_dir() const { return cache.file("models--pensieve-test--qwen2-tiny"); }
  std::string partial() const {
    return repo_dir() + "/blobs/" + hub.repo(kRepo).files.at(kWeights).etag + ".incomplete";
  }
  // Waits (up to 20 s) until the weights' partial file holds `bytes`.
  void wait_for_partial(uint64_t bytes) const {
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    std::error_code ec;
    while (std::chrono::steady_clock::now() < deadline &&
           (!fs::exists(partial(), ec) || fs::file_size(partial(), ec) < bytes)) {
      std::this_thread::sleep_for(20ms);
    }
  }
  std::string blob() const {
    return repo_dir() + "/blobs/" + hub.repo(kRepo).files.at(kWeights).etag;
  }
  // Polls `done` every 20 ms for up to 20 s; false when it never came true.
  static bool wait_until(const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (!done()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(20ms);
    }
    return true;
  }
  uint64_t weights_size() const { return hub.repo(kRepo).files.at(kWeights).content.size(); }
  std::string pull_command() const {
    return std::string(PENSIEVE_BINARY) + " pull " + kRepo;
  }

  FakeHub hub;
  TempDir cache, home;
  ScopedEnv env;
};

TEST_F(HubCli, PullListRm) {
  auto pulled = test::run_pensieve(std::string("pull ") + kRepo);
  ASSERT_EQ(pulled.exit_code, 0) << pulled.err;
  EXPECT_EQ(pulled.out, repo_dir() + "/snapshots/" + hub.repo(kRepo).commit + "\n");
  // Not a terminal: plain lines, no bar redrawing.
  EXPECT_NE(pulled.err.find("downloading model.safetensors (4/4, 1.4 MiB)"), std::string::npos)
      << pulled.err;
  EXPECT_NE(pulled.err.find("verified model.safetensors"), std::string::npos) << pulled.err;
  EXPECT_EQ(pulled.err.find('\r'), std::string::npos);
  EXPECT_TRUE(fs::exists(pulled.out.substr(0, pulled.out.size() - 1) + "/config.json"));

  auto listed = test::run_pensieve("list");
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_NE(listed.out.find(kRepo), std::string::npos) << listed.out;
  EXPECT_NE(listed.out.find("1.4 MiB"), std::string::npos) << listed.out;
  EXPECT_NE(listed.out.find("main (1111111)"), std::string::npos) << listed.out;
  auto json = nlohmann::json::parse(test::run_pensieve("list --json").out);
  ASSERT_EQ(json.size(), 1u);
  EXPECT_EQ(json[0]["repo"], kRepo);
  EXPECT_GE(json[0]["bytes"].get<uint64_t>(), weights_size());
  EXPECT_EQ(json[0]["refs"]["main"], hub.repo(kRepo).commit);

  auto removed = test::run_pensieve(std::string("rm ") + kRepo);
  ASSERT_EQ(removed.exit_code, 0) << removed.err;
  EXPECT_NE(removed.out.find("removed pensieve-test/qwen2-tiny (1.4 MiB)"), std::string::npos)
      << removed.out;
  EXPECT_FALSE(fs::exists(repo_dir()));
  EXPECT_NE(test::run_pensieve("list").out.find("no models"), std::string::npos);
  auto again = test::run_pensieve(std::string("rm ") + kRepo);
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.err.find("not in the cache"), std::string::npos) << again.err;
  // list and rm only read the cache: network settings they don't use can't break them.
  env.set("HF_ENDPOINT", "not-a-url");
  EXPECT_EQ(test::run_pensieve("list").exit_code, 0);
  EXPECT_NE(test::run_pensieve(std::string("rm ") + kRepo).err.find("not in the cache"),
            std::string::npos);
}

TEST_F(HubCli, BadInputAndOffline) {
  auto bad = test::run_pensieve("pull 'org/../etc'");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("error: 'org/../etc' is not a valid Hugging Face repo id"),
            std::string::npos) << bad.err;
  EXPECT_EQ(test::run_pensieve("pull just-a-name").exit_code, 1);
  EXPECT_EQ(test::run_pensieve("pull org/name@../x").exit_code, 1);
  EXPECT_EQ(hub.n_api_requests(), 0);

  env.set("HF_HUB_OFFLINE", "1");
  auto offline = test::run_pensieve(std::string("pull ") + kRepo);
  EXPECT_EQ(offline.exit_code, 1);
  EXPECT_NE(offline.err.find("HF_HUB_OFFLINE"), std::string::npos) << offline.err;
  EXPECT_EQ(hub.n_api_requests(), 0);
}

TEST_F(HubCli, CtrlCKeepsAResumablePartialFile) {
  test::FakeFaults faults;
  faults.n_stalls = 1;
  faults.stall_after = 500000;
  faults.stall_for = 30s;
  hub.set_faults(faults);
  TempDir out;
  const std::string err_path = out.file("err");
  const pid_t pid = spawn_pensieve({"pull", kRepo}, err_path);
  ASSERT_GT(pid, 0);
  wait_for_partial(500000);
  ASSERT_EQ(fs::file_size(partial()), 500000u);
  kill(pid, SIGINT);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 130);
  const std::string err = test::read_file(err_path);
  EXPECT_NE(err.find("interrupted"), std::string::npos) << err;
  EXPECT_NE(err.find("resumes"), std::string::npos) << err;
  EXPECT_EQ(fs::file_size(partial()), 500000u);

  auto resumed = test::run_pensieve(std::string("pull ") + kRepo);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_FALSE(fs::exists(partial()));
  EXPECT_EQ(hub.bytes_served(kWeights), weights_size());
}

TEST_F(HubCli, FileSizeLimitFailsWithAClearError) {
  // RLIMIT_FSIZE (a few hundred KB) stands in for a disk filling up mid-download.
  auto r = shell("ulimit -f 600 && exec " + pull_command());
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("cannot write"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("File too large"), std::string::npos) << r.err;
  ASSERT_TRUE(fs::exists(partial()));
  const uint64_t kept = fs::file_size(partial());
  EXPECT_LT(kept, weights_size());
  const uint64_t served_before = hub.bytes_served(kWeights);  // includes bytes in flight
  // With the limit gone, the pull finishes from where it stopped.
  auto resumed = shell(pull_command());
  EXPECT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_EQ(hub.bytes_served(kWeights) - served_before, weights_size() - kept);
}

TEST_F(HubCli, FullTmpfsIsRefusedBeforeDownloading) {
  // A 1 MiB tmpfs over the cache, in a user + mount namespace; containers often forbid that.
  const std::string command = "unshare -rm sh -c 'mount -t tmpfs -o size=1m tmpfs \"$0\" || "
                              "exit 77; exec \"$1\" pull \"$2\"' " + cache.path() + " " +
                              PENSIEVE_BINARY + " " + kRepo;
  auto r = shell(command);
  if (r.exit_code == 77 || r.err.find("unshare") != std::string::npos || r.exit_code == 127) {
    GTEST_SKIP() << "no user/mount namespaces here: " << r.err;
  }
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("not enough disk space"), std::string::npos) << r.err;
  EXPECT_EQ(hub.n_gets(kWeights), 0);
}

// The first process's download is held mid-file while the second starts: the
// second must wait on the blob's lock (saying so), not fetch it too.
TEST_F(HubCli, TwoProcessesPullTheSameModel) {
  test::FakeFaults faults;
  faults.n_holds = 1;
  faults.hold_after = 500000;
  hub.set_faults(faults);
  TempDir out;
  const pid_t first = spawn_pensieve({"pull", kRepo}, out.file("first"));
  ASSERT_GT(first, 0);
  ASSERT_TRUE(wait_until([&] { return hub.n_held() == 1; })) << test::read_file(out.file("first"));
  const pid_t second = spawn_pensieve({"pull", kRepo}, out.file("second"));
  ASSERT_GT(second, 0);
  const bool waited = wait_until([&] {
    return test::read_file(out.file("second")).find("waiting for another download") !=
           std::string::npos;
  });
  // Both are in flight now; only one GET of the weights, still a partial file.
  EXPECT_TRUE(waited) << test::read_file(out.file("second"));
  EXPECT_EQ(hub.n_gets(kWeights), 1);
  EXPECT_TRUE(fs::exists(partial()));
  EXPECT_FALSE(fs::exists(blob()));
  EXPECT_EQ(waitpid(second, nullptr, WNOHANG), 0);  // still waiting

  hub.release_holds();
  int status[2] = {0, 0};
  ASSERT_EQ(waitpid(first, &status[0], 0), first);
  ASSERT_EQ(waitpid(second, &status[1], 0), second);
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(WIFEXITED(status[i]));
    EXPECT_EQ(WEXITSTATUS(status[i]), 0)
        << test::read_file(out.file(i == 0 ? "first" : "second"));
  }
  EXPECT_EQ(hub.n_gets(kWeights), 1);
  EXPECT_EQ(hub.bytes_served(kWeights), weights_size());
  EXPECT_EQ(test::sha256_hex(test::read_file(blob())), hub.repo(kRepo).files.at(kWeights).etag);
  EXPECT_TRUE(fs::exists(repo_dir() + "/snapshots/" + hub.repo(kRepo).commit + "/" + kWeights));
}

// The disk fills up while the weights are coming in (the space check before the
// download passed): a 2 MiB tmpfs over the cache, in a user + mount namespace,
// is filled up while the fake Hub holds the transfer, then the transfer goes on.
// The write fails with ENOSPC, the partial file stays, and once there is room
// again the next pull asks only for the rest.
TEST_F(HubCli, DiskFillingUpDuringTheDownloadKeepsAResumablePartialFile) {
  constexpr uint64_t kHold = 300000;
  test::FakeFaults faults;
  faults.n_holds = 1;
  faults.hold_after = kHold;
  hub.set_faults(faults);
  TempDir ctl;  // outside the tmpfs, so both sides see it
  const std::string script = R"sh(
    cache=$1 bin=$2 repo=$3 partial=$4 ctl=$5 hold=$6
    mount -t tmpfs -o size=2m tmpfs "$cache" || exit 77
    "$bin" pull "$repo" >/dev/null 2>"$ctl/err1" & pid=$!
    i=0
    while [ "$(stat -c %s "$partial" 2>/dev/null || echo 0)" -lt "$hold" ]; do
      i=$((i + 1)); [ $i -gt 400 ] && { kill $pid; echo "no partial file" >&2; exit 2; }
      sleep 0.05
    done
    cat /dev/zero >"$cache/filler" 2>/dev/null
    touch "$ctl/filled"
    wait $pid; echo $? >"$ctl/rc1"
    stat -c %s "$partial" >"$ctl/kept"
    rm "$cache/filler"
    "$bin" pull "$repo" >/dev/null 2>"$ctl/err2"; echo $? >"$ctl/rc2"
    sha256sum <"${partial%.incomplete}" | cut -d" " -f1 >"$ctl/sha256"
    [ -e "$partial" ] && echo still there >"$ctl/partial_left"
    exit 0)sh";
  const std::string command = "unshare -rm sh -c '" + script + "' sh " + cache.path() + " " +
                              PENSIEVE_BINARY + " " + kRepo + " " + partial() + " " +
                              ctl.path() + " " + std::to_string(kHold);
  std::atomic<bool> finished{false};
  Shell r;
  std::thread runner([&] {
    r = shell(command);
    finished = true;
  });
  wait_until([&] { return finished || fs::exists(ctl.file("filled")); });
  hub.release_holds();
  runner.join();
  if (r.exit_code == 77 || r.err.find("unshare") != std::string::npos || r.exit_code == 127) {
    GTEST_SKIP() << "no user/mount namespaces here: " << r.err;
  }
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string err1 = test::read_file(ctl.file("err1"));
  EXPECT_EQ(test::read_file(ctl.file("rc1")), "1\n") << err1;
  EXPECT_NE(err1.find("error: downloading pensieve-test/qwen2-tiny/model.safetensors: cannot "
                      "write " + partial() + ": No space left on device"),
            std::string::npos)
      << err1;
  EXPECT_NE(err1.find("pull again to resume"), std::string::npos) << err1;
  const uint64_t kept = std::stoull(test::read_file(ctl.file("kept")));
  EXPECT_GE(kept, kHold);
  EXPECT_LT(kept, weights_size());

  EXPECT_EQ(test::read_file(ctl.file("rc2")), "0\n") << test::read_file(ctl.file("err2"));
  EXPECT_EQ(test::read_file(ctl.file("sha256")), hub.repo(kRepo).files.at(kWeights).etag + "\n");
  EXPECT_FALSE(fs::exists(ctl.file("partial_left")));
  const auto transfers = hub.transfers(kWeights);
  ASSERT_EQ(transfers.size(), 2u);  // ENOSPC is not retried
  EXPECT_EQ(transfers[1].range_start, kept);
  EXPECT_EQ(transfers[1].bytes, weights_size() - kept);
}

// HF_TOKEN reaches the Hub through the CLI (and the token file `huggingface-cli
// login` writes does too); without one, a gated repo is a clear error.
TEST_F(HubCli, GatedRepoNeedsHfToken) {
  auto gated = test::qwen2_tiny_repo();
  gated.gated = true;
  hub.add_repo("org/gated", gated);
  auto refused = test::run_pensieve("pull org/gated");
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("org/gated is gated or private"), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("set HF_TOKEN"), std::string::npos) << refused.err;

  env.set("HF_TOKEN", hub.token.c_str());
  auto pulled = test::run_pensieve("pull org/gated");
  ASSERT_EQ(pulled.exit_code, 0) << pulled.err;
  EXPECT_TRUE(fs::exists(pulled.out.substr(0, pulled.out.size() - 1) + "/" + kWeights));
  EXPECT_EQ(hub.n_cdn_requests_with_auth(), 0);

  env.set("HF_TOKEN", nullptr);
  test::write_file(home.file("token"), hub.token + "\n");
  auto from_file = test::run_pensieve("pull org/gated");
  EXPECT_EQ(from_file.exit_code, 0) << from_file.err;
}


// A port nobody listens on right now.
int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

// `serve --model ORG/NAME` pulls on first use; while it downloads, /health
// reports the progress (503, status "loading") and the API answers 529; then
// the same port serves the model.
TEST_F(HubCli, ServePullsOnFirstUseWithProgressOnHealth) {
  // The same tiny model with a tokenizer (vocabulary 512 < the model's 3072), so it can serve.
  constexpr const char* kServable = "pensieve-test/qwen2-tiny-tok512";
  test::FakeRepo servable = test::qwen2_tiny_repo();
  servable.files["tokenizer.json"] = {test::read_file(test::data_path("tokenizers/tok512/tokenizer.json")), false, ""};
  hub.add_repo(kServable, servable);
  // The download is held mid-file until the test has seen the progress and
  // the 529, however long the loading server takes to show them.
  test::FakeFaults faults;
  faults.n_holds = 1;
  faults.hold_after = 500000;
  hub.set_faults(faults);
  TempDir out;
  const std::string err_path = out.file("err");
  const int port = free_port();
  const pid_t pid = spawn_pensieve({"serve", "--model", kServable, "--port", std::to_string(port),
                                    "--ctx-size", "256"},
                                   err_path);
  ASSERT_GT(pid, 0);

  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(5, 0);
  client.set_read_timeout(60, 0);
  bool saw_progress = false, saw_529 = false, released = false, ready = false;
  const auto deadline = std::chrono::steady_clock::now() + 90s;
  int status = 0;
  bool exited = false;
  while (std::chrono::steady_clock::now() < deadline && !ready) {
    if (waitpid(pid, &status, WNOHANG) == pid) {
      exited = true;
      break;
    }
    if (saw_progress && saw_529 && !released) {
      hub.release_holds();
      released = true;  // from now on the download may be complete
    }
    if (auto res = client.Get("/health")) {
      const auto body = nlohmann::json::parse(res->body, nullptr, false);
      if (res->status == 503 && body.value("status", "") == "loading" &&
          body.value("stage", "") == "download") {
        const auto& d = body["download"];
        EXPECT_EQ(d["repo"], kServable);
        if (!released && d["bytes_done"].get<uint64_t>() >= 500000 && d["file"] == kWeights) {
          EXPECT_GT(d["bytes_total"].get<uint64_t>(), d["bytes_done"].get<uint64_t>());
          saw_progress = true;
        }
        if (!saw_529) {
          auto api = client.Post("/v1/messages", R"({"model":"claude-m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]})",
                                 "application/json");
          ASSERT_TRUE(api);
          EXPECT_EQ(api->status, 529);
          const auto err = nlohmann::json::parse(api->body);
          EXPECT_EQ(err["type"], "error");
          EXPECT_EQ(err["error"]["type"], "overloaded_error");
          saw_529 = true;
        }
      } else if (res->status == 200) {
        EXPECT_EQ(body.value("status", ""), "ok") << res->body;
        ready = true;
      }
    }
    std::this_thread::sleep_for(50ms);
  }
  hub.release_holds();  // had the test missed them, the pull still ends
  EXPECT_TRUE(saw_progress);
  EXPECT_TRUE(saw_529);
  if (!exited && !ready) {
    kill(pid, SIGKILL);  // not left running after the test fails
    waitpid(pid, &status, 0);
  }
  ASSERT_FALSE(exited) << test::read_file(err_path);
  ASSERT_TRUE(ready) << test::read_file(err_path);
  auto answer = client.Post("/v1/messages", R"({"model":"claude-m","max_tokens":3,"messages":[{"role":"user","content":"hi"}]})",
                            "application/json");
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->status, 200) << answer->body;
  // The pulled weights really ran: tokens came out and decoded to text.
  const auto message = nlohmann::json::parse(answer->body, nullptr, false);
  ASSERT_TRUE(message.is_object()) << answer->body;
  EXPECT_GT(message["usage"]["output_tokens"].get<int>(), 0) << answer->body;
  ASSERT_TRUE(message["content"].is_array() && !message["content"].empty()) << answer->body;
  EXPECT_EQ(message["content"][0]["type"], "text") << answer->body;
  EXPECT_FALSE(message["content"][0]["text"].get<std::string>().empty()) << answer->body;
  kill(pid, SIGTERM);
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << test::read_file(err_path);
  EXPECT_NE(test::read_file(err_path).find("verified model.safetensors"), std::string::npos);
}

// A model the cache holds needs no network: with the Hub unreachable serve
// starts from the cache within seconds (it used to retry for 15 s first),
// with HF_HUB_OFFLINE=1 without asking the Hub at all. The model is listed
// as ORG/NAME, not by its snapshot's commit, also when the snapshot folder
// is given as the model's path.
TEST_F(HubCli, ServeStartsFromTheCacheAtOnceWhenTheHubIsUnreachable) {
  constexpr const char* kServable = "pensieve-test/qwen2-tiny-tok512";
  test::FakeRepo servable = test::qwen2_tiny_repo();
  servable.files["tokenizer.json"] = {test::read_file(test::data_path("tokenizers/tok512/tokenizer.json")), false, ""};
  hub.add_repo(kServable, servable);
  const auto pulled = test::run_pensieve(std::string("pull ") + kServable);
  ASSERT_EQ(pulled.exit_code, 0) << pulled.err;
  const std::string snapshot = pulled.out.substr(0, pulled.out.size() - 1);
  const int n_api = hub.n_api_requests();

  auto serve_and_check = [&](const std::string& model, const std::string& what) {
    const auto t0 = std::chrono::steady_clock::now();
    test::ServeProcess serve({"--model", model, "--port", "0", "--ctx-size", "256"});
    ASSERT_TRUE(serve.wait_ready()) << what << "\n" << serve.err();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_LT(seconds, 8.0) << what << "\n" << serve.err();
    EXPECT_NE(serve.out().find(std::string("serving ") + kServable + " on "), std::string::npos)
        << what << "\n" << serve.out();
    EXPECT_NE(serve.out().find(std::string("ANTHROPIC_MODEL=") + kServable + " "), std::string::npos)
        << serve.out();
    httplib::Client client("127.0.0.1", serve.port());
    auto models = client.Get("/v1/models");
    ASSERT_TRUE(models);
    EXPECT_EQ(nlohmann::json::parse(models->body)["data"][0]["id"], kServable) << what;
    auto health = client.Get("/health");
    ASSERT_TRUE(health);
    EXPECT_EQ(nlohmann::json::parse(health->body)["model"], kServable) << what;
    EXPECT_EQ(serve.stop(), 0) << what << "\n" << serve.err();
  };

  env.set("HF_ENDPOINT", "http://127.0.0.1:1");  // nothing listens there
  serve_and_check(kServable, "Hub unreachable");
  env.set("HF_HUB_OFFLINE", "1");
  env.set("HF_ENDPOINT", hub.endpoint().c_str());
  serve_and_check(kServable, "HF_HUB_OFFLINE=1");
  serve_and_check(snapshot, "the snapshot folder as a path");
  EXPECT_EQ(hub.n_api_requests(), n_api) << "offline, the Hub is never asked";
  env.set("HF_HUB_OFFLINE", nullptr);
  // Online and up to date: one question to the Hub, nothing downloaded.
  const int n_gets = hub.n_gets(kWeights);
  serve_and_check(kServable, "online");
  EXPECT_EQ(hub.n_api_requests(), n_api + 1);
  EXPECT_EQ(hub.n_gets(kWeights), n_gets);
}

// A --model that looks like a path is a path: a missing one is an error at
// once, not a Hub lookup.
TEST_F(HubCli, ServeTakesAMissingPathAsAPath) {
  for (const char* path : {"/nonexistent", "./missing-model", "~/missing", "models/a/b"}) {
    const auto r = test::run_pensieve(std::string("serve --port 0 --model '") + path + "'");
    EXPECT_EQ(r.exit_code, 1) << path;
    EXPECT_NE(r.err.find(std::string("error: --model ") + path + ": no such folder"), std::string::npos)
        << r.err;
    EXPECT_EQ(r.err.find("Hugging Face"), std::string::npos) << r.err;
  }
  EXPECT_EQ(hub.n_api_requests(), 0);
}

// Ctrl-C while `serve` is still downloading ends it at once with 130, and
// the partial file stays for the next run to resume.
TEST_F(HubCli, ServeInterruptedWhileDownloadingExitsAndKeepsThePartialFile) {
  test::FakeFaults faults;
  faults.n_stalls = 1;
  faults.stall_after = 500000;
  faults.stall_for = 30s;
  hub.set_faults(faults);
  const int port = free_port();
  const pid_t pid = spawn_pensieve({"serve", "--model", kRepo, "--port", std::to_string(port)});
  ASSERT_GT(pid, 0);
  wait_for_partial(500000);
  ASSERT_EQ(fs::file_size(partial()), 500000u);
  const auto t0 = std::chrono::steady_clock::now();
  kill(pid, SIGINT);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  // At once, not after the Hub's 30 s stall (nor pensieve's stall timeout).
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 20s);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 130);
  EXPECT_EQ(fs::file_size(partial()), 500000u);
}

}  // namespace
}  // namespace pensieve
