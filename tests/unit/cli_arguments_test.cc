// Values a user can mistype on the command line or in the environment: each
// is refused before anything runs, with one line that names the value and
// what is allowed, instead of being truncated, ignored or taken as "off".
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <optional>

#include "support/test_support.h"

namespace pensieve {
namespace {

using test::run_pensieve;

// Sets an environment variable for the child processes; restores it after.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (old_) setenv(name_, old_->c_str(), 1);
    else unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// Exit code 1, nothing on stdout, and exactly one line on stderr that
// contains every one of `parts`.
void expect_refused(const test::RunResult& r, std::initializer_list<std::string> parts,
                    const std::string& what) {
  EXPECT_EQ(r.exit_code, 1) << what << "\n" << r.err;
  EXPECT_EQ(r.out, "") << what;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << what << "\n" << r.err;
  EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << what << "\n" << r.err;
  for (const auto& p : parts) EXPECT_NE(r.err.find(p), std::string::npos) << what << ": " << p << "\n" << r.err;
}

TEST(CliArguments, PortOutsideTheTcpRangeIsRefused) {
  // It used to bind 83837 mod 65536 = 18301 while the banner said 83837.
  expect_refused(run_pensieve("serve --port 83837"), {"--port", "83837", "0 to 65535"}, "--port");
  expect_refused(run_pensieve("serve --port -1"), {"--port", "-1", "0 to 65535"}, "--port -1");
  ScopedEnv env("PENSIEVE_PORT", "70000");
  expect_refused(run_pensieve("serve"), {"70000", "0 to 65535"}, "PENSIEVE_PORT");
}

TEST(CliArguments, NegativeThreadCountsAreRefused) {
  for (const char* cmd : {"serve", "bench --model x", "generate --model x --tokens 1",
                          "logits --model x --tokens 1", "bench-serve --model x"}) {
    expect_refused(run_pensieve(std::string(cmd) + " --threads -3"),
                   {"--threads", "'-3'", "0 (one per core) or a positive number"}, cmd);
  }
}

TEST(CliArguments, LogLevelsAreCheckedAndTakenInAnyCase) {
  expect_refused(run_pensieve("--log-level verbose list"),
                 {"--log-level", "'verbose'", "trace, debug, info, warn, error, off"}, "verbose");
  {
    ScopedEnv env("PENSIEVE_LOG_LEVEL", "loud");
    expect_refused(run_pensieve("list"), {"'loud'", "trace, debug, info, warn, error, off"},
                   "PENSIEVE_LOG_LEVEL");
  }
  // A serve that loads the bundled model, logs at info, and then fails on a
  // KV budget too small for its context: what it logged shows the level.
  const std::string failing_serve = "serve --port 0 --ctx-size 4096 --kv-memory 1M";
  const std::string info_line = "serving the bundled stories260K model";
  auto r = run_pensieve("--log-level INFO " + failing_serve);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find(info_line), std::string::npos) << "INFO is info, not off:\n" << r.err;
  r = run_pensieve("--log-level Warn " + failing_serve);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err.find(info_line), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("error: KV memory of 1.0 MiB"), std::string::npos) << r.err;
}

TEST(CliArguments, TuningVariablesAreChecked) {
  const std::string tokenize = "tokenize --model " + test::data_path("tokenizers/qwen3") + " --text hi";
  ASSERT_EQ(run_pensieve(tokenize).exit_code, 0);
  {
    ScopedEnv env("PENSIEVE_ISA", "foo");
    expect_refused(run_pensieve(tokenize), {"PENSIEVE_ISA='foo'", "scalar, avx2, avx512"}, "ISA");
  }
  {
    ScopedEnv env("PENSIEVE_ISA", "scalar");
    EXPECT_EQ(run_pensieve(tokenize).exit_code, 0);
  }
  for (const char* flag : {"PENSIEVE_PRECISE", "PENSIEVE_AMX", "PENSIEVE_MMAP", "PENSIEVE_PIN"}) {
    ScopedEnv env(flag, "yes");
    expect_refused(run_pensieve(tokenize), {std::string(flag) + "='yes'", "use 0 or 1"}, flag);
  }
  for (const char* levels : {"0", "3", "two"}) {
    ScopedEnv env("PENSIEVE_INT8_LEVELS", levels);
    expect_refused(run_pensieve(tokenize),
                   {std::string("PENSIEVE_INT8_LEVELS='") + levels + "'", "use 1 (default) or 2"}, levels);
  }
  for (const char* levels : {"1", "2"}) {
    ScopedEnv env("PENSIEVE_INT8_LEVELS", levels);
    EXPECT_EQ(run_pensieve(tokenize).exit_code, 0) << levels;
  }
}

TEST(CliArguments, PullRefusesTwoDifferentRevisions) {
  test::TempDir cache;
  ScopedEnv hub_cache("HF_HUB_CACHE", cache.path().c_str());
  ScopedEnv endpoint("HF_ENDPOINT", "http://127.0.0.1:9");  // nothing is fetched
  expect_refused(run_pensieve("pull org/name@x --revision y"),
                 {"--revision y", "org/name@x", "give the revision once"}, "pull");
}

TEST(CliArguments, UnknownCommandsAreNamedWithTheList) {
  auto r = run_pensieve("lst");
  expect_refused(r, {"unknown command 'lst'", "did you mean 'list'?", "serve", "pull", "render"},
                 "lst");
  r = run_pensieve("--log-level debug frobnicate --model x");
  expect_refused(r, {"unknown command 'frobnicate'", "serve"}, "frobnicate");
  EXPECT_EQ(r.err.find("did you mean"), std::string::npos);
}

TEST(CliArguments, HelpCommandPrintsTheHelp) {
  auto r = run_pensieve("help");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, run_pensieve("--help").out);
  EXPECT_NE(r.out.find("Commands:"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("serve"), std::string::npos) << r.out;
  r = run_pensieve("help serve");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("--kv-memory"), std::string::npos) << r.out;
  expect_refused(run_pensieve("help srve"), {"unknown command 'srve'"}, "help srve");
}

// --help gives each option's default where there is one.
TEST(CliArguments, HelpShowsTheDefaults) {
  const auto help = [](const std::string& cmd) {
    const auto r = run_pensieve(cmd + " --help");
    EXPECT_EQ(r.exit_code, 0) << cmd << "\n" << r.err;
    return r.out;
  };
  const std::string serve = help("serve");
  for (const char* d : {"--host TEXT=127.0.0.1", "--parallel INT:INT in [1 - 256]=4",
                        "default: 512 on the CPU, 2048 on a GPU", "--threads INT:NONNEGATIVE=0",
                        "--http-threads INT:INT in [1 - 4096]=64",
                        "--max-body-mb UINT:INT in [1 - 65536]=32"})
    EXPECT_NE(serve.find(d), std::string::npos) << d << "\n" << serve;
  EXPECT_NE(serve.find("--port INT:INT in [0 - 65535]=8080"), std::string::npos) << serve;
  EXPECT_NE(serve.find("--max-queue INT:INT in [1 - 1048576]=16"), std::string::npos) << serve;
  EXPECT_NE(help("generate").find("--max-tokens INT:NONNEGATIVE=128"), std::string::npos);
  EXPECT_NE(help("logits").find("--positions TEXT=last"), std::string::npos);
  EXPECT_NE(help("bench").find("--prompt-tokens INT:POSITIVE=512"), std::string::npos);
  EXPECT_NE(help("").find("--log-level TEXT:LEVEL=info"), std::string::npos);
}

// CLI11's own errors (a missing or unknown option) are one line too.
TEST(CliArguments, ParseErrorsAreOneLine) {
  expect_refused(run_pensieve("serve --no-such-option"), {"--no-such-option", "pensieve serve --help"},
                 "unknown option");
  expect_refused(run_pensieve("logits --tokens 1"), {"--model is required", "pensieve logits --help"},
                 "missing option");
}

}  // namespace
}  // namespace pensieve
