// Helpers shared by the test suites: locating test data, running the
// pensieve binary, temporary directories.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace pensieve::test {

// The device the model tests run on: $PENSIEVE_TEST_DEVICE, else "cpu".
// The ctest gpu.models runs them again with it set to "cuda".
std::string device();

// tests/data/<relative>
std::string data_path(const std::string& relative);
nlohmann::json read_json(const std::string& path);

struct RunResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};
// Runs the built `pensieve` binary with the given arguments (shell-quoted here).
RunResult run_pensieve(const std::string& args);

// A fresh directory under $TMPDIR, removed in the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

void write_file(const std::string& path, const std::string& contents);

// `pensieve serve ARGS` as a child process, its stdout and stderr going to
// files; the port comes from the banner serve prints once it listens.
class ServeProcess {
 public:
  explicit ServeProcess(std::vector<std::string> args);
  ~ServeProcess();  // stops it (SIGTERM, then SIGKILL)
  ServeProcess(const ServeProcess&) = delete;
  ServeProcess& operator=(const ServeProcess&) = delete;

  // Waits until the banner is out; false when serve exited or time ran out.
  bool wait_ready(int timeout_s = 60);
  int port() const { return port_; }
  int pid() const { return pid_; }
  std::string out() const;  // stdout so far
  std::string err() const;  // stderr so far
  // SIGTERM and wait: the exit code (128 + signal when killed).
  int stop();

 private:
  TempDir dir_;
  int pid_ = -1;
  int port_ = 0;
  int exit_code_ = -1;
};

// max |ref - got| over the range of ref (its largest minus its smallest
// value): how far a logit row is from its reference.
double relative_max_diff(const std::vector<double>& ref, const float* got);

// text cut at every occurrence of sep (an empty piece where two meet).
std::vector<std::string> split_on(const std::string& text, const std::string& sep);

// The message of the pensieve::Error that fn throws, or "(no error)".
std::string error_of(const std::function<void()>& fn);
std::string read_file(const std::string& path);

}  // namespace pensieve::test
