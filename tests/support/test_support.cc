#include "support/test_support.h"

#include "backend/backend.h"
#include "core/error.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

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

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace pensieve::test
