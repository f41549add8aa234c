#include "support/test_support.h"

#include "backend/backend.h"
#include "core/error.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <regex>
#include <thread>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

extern char** environ;

namespace pensieve::test {
namespace fs = std::filesystem;

namespace {
// The gpu.models ctest reruns the model tests with PENSIEVE_TEST_DEVICE=cuda;
// where no usable GPU exists it is skipped (exit 77), not failed.
const bool kDeviceChecked = [] {
  const char* d = std::getenv("PENSIEVE_TEST_DEVICE");
  if (d != nullptr && std::string(d) == "cuda") {
    const std::string why = cuda_unavailable_reason();
    if (!why.empty()) {
      std::fprintf(stderr, "skipped: PENSIEVE_TEST_DEVICE=cuda but %s\n", why.c_str());
      std::exit(77);
    }
  }
  return true;
}();
}  // namespace

std::string device() {
  const char* d = std::getenv("PENSIEVE_TEST_DEVICE");
  return d != nullptr && *d != '\0' ? d : "cpu";
}

std::string data_path(const std::string& relative) {
  return std::string(PENSIEVE_TEST_DATA) + "/" + relative;
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  return nlohmann::json::parse(in);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary);
  out << contents;
}

double relative_max_diff(const std::vector<double>& ref, const float* got) {
  const auto [lo, hi] = std::minmax_element(ref.begin(), ref.end());
  double d = 0;
  for (size_t i = 0; i < ref.size(); ++i) d = std::max(d, std::abs(ref[i] - got[i]));
  return d / (*hi - *lo);
}

std::vector<std::string> split_on(const std::string& text, const std::string& sep) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (true) {
    const size_t next = text.find(sep, pos);
    if (next == std::string::npos) {
      out.push_back(text.substr(pos));
      return out;
    }
    out.push_back(text.substr(pos, next - pos));
    pos = next + sep.size();
  }
}

RunResult run_pensieve(const std::string& args) {
  TempDir tmp;
  const std::string out_path = tmp.file("stdout"), err_path = tmp.file("stderr");
  const std::string cmd = std::string(PENSIEVE_BINARY) + " " + args + " >" + out_path + " 2>" +
                          err_path + " </dev/null";
  const int status = std::system(cmd.c_str());
  RunResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = read_file(out_path);
  r.err = read_file(err_path);
  return r;
}

TempDir::TempDir() {
  std::string tmpl = (fs::temp_directory_path() / "pensieve-test-XXXXXX").string();
  if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

ServeProcess::ServeProcess(std::vector<std::string> args) {
  args.insert(args.begin(), {PENSIEVE_BINARY, "serve"});
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, dir_.file("out").c_str(), O_WRONLY | O_CREAT, 0644);
  posix_spawn_file_actions_addopen(&actions, 2, dir_.file("err").c_str(), O_WRONLY | O_CREAT, 0644);
  if (posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ) != 0) pid_ = -1;
  posix_spawn_file_actions_destroy(&actions);
}

ServeProcess::~ServeProcess() {
  if (pid_ <= 0 || exit_code_ >= 0) return;
  kill(pid_, SIGTERM);
  for (int i = 0; i < 200; ++i) {
    if (waitpid(pid_, nullptr, WNOHANG) == pid_) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
}

std::string ServeProcess::out() const { return read_file(dir_.file("out")); }
std::string ServeProcess::err() const { return read_file(dir_.file("err")); }

bool ServeProcess::wait_ready(int timeout_s) {
  if (pid_ <= 0) return false;
  const std::regex banner(R"(serving \S+ on http://[^ ]*:(\d+))");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  while (std::chrono::steady_clock::now() < deadline) {
    std::smatch m;
    const std::string text = out();
    if (std::regex_search(text, m, banner)) {
      port_ = std::stoi(m[1]);
      return true;
    }
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

int ServeProcess::stop() {
  if (pid_ <= 0) return -1;
  if (exit_code_ >= 0) return exit_code_;
  kill(pid_, SIGTERM);
  int status = 0;
  waitpid(pid_, &status, 0);
  exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return exit_code_;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

namespace {
// Servers the tests start keep no prefix cache on disk unless a test asks
// for one (--prefix-cache-disk wins over the variable): blocks another test,
// or an earlier run, left in ~/.cache would change what a test sees cached.
const bool kNoDiskTier = [] { return setenv("PENSIEVE_PREFIX_CACHE_DISK", "0", 0) == 0; }();
}  // namespace

}  // namespace pensieve::test
