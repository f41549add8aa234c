// Values a user can mistype on the command line or in the environment: each
// is refused before anything runs, with one line that names the value and
// what is allowed, instead of being truncated, ignored or taken as "off".
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <sstream>
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
void expect_refused(const test::RunResult& r, const std::vector<std::string>& parts,
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

// --- The config file (docs/config.example.toml).

// `pensieve config`'s line for `key`: "key = value  # source".
std::string config_line(const std::string& out, const std::string& key) {
  size_t at = 0;
  while ((at = out.find(key + " = ", at)) != std::string::npos) {
    if (at == 0 || out[at - 1] == '\n') return out.substr(at, out.find('\n', at) - at);
    ++at;
  }
  return "";
}

TEST(CliConfig, FlagsWinOverTheEnvironmentWhichWinsOverTheFile) {
  test::TempDir dir;
  test::write_file(dir.file("c.toml"),
                   "# comment\nport = 9090\nctx_size = 4096\nhost = \"127.0.0.2\"\nmmap = true\n"
                   "api-key = [\"k1\", \"k2\"]\nkv-memory = 2\n");
  ScopedEnv env("PENSIEVE_PORT", "7000");
  const auto r = run_pensieve("config --config " + dir.file("c.toml") + " --host 127.0.0.3");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("# config file: " + dir.file("c.toml")), std::string::npos) << r.out;
  const std::string file = dir.file("c.toml");
  EXPECT_NE(config_line(r.out, "host").find("\"127.0.0.3\""), std::string::npos) << r.out;
  EXPECT_NE(config_line(r.out, "host").find("# command line"), std::string::npos) << r.out;
  EXPECT_NE(config_line(r.out, "port").find("7000"), std::string::npos) << r.out;
  EXPECT_NE(config_line(r.out, "port").find("# environment PENSIEVE_PORT"), std::string::npos) << r.out;
  EXPECT_NE(config_line(r.out, "ctx-size").find("4096"), std::string::npos) << r.out;
  EXPECT_NE(config_line(r.out, "ctx-size").find("# " + file + ":3"), std::string::npos) << r.out;
  EXPECT_NE(config_line(r.out, "mmap").find("true"), std::string::npos) << r.out;
  EXPECT_NE(config_line(r.out, "api-key").find("\"k1,k2\""), std::string::npos) << r.out;
  EXPECT_NE(config_line(r.out, "kv-memory").find(file + ":7"), std::string::npos) << r.out;
  EXPECT_NE(config_line(r.out, "parallel").find("4"), std::string::npos) << r.out;
  EXPECT_NE(config_line(r.out, "parallel").find("# default"), std::string::npos) << r.out;
}

TEST(CliConfig, TheFileComesFromTheFlagThenTheVariableThenXdg) {
  test::TempDir dir;
  test::write_file(dir.file("a.toml"), "port = 1111\n");
  test::write_file(dir.file("b.toml"), "port = 2222\n");
  std::filesystem::create_directories(dir.file("xdg/pensieve"));
  test::write_file(dir.file("xdg/pensieve/config.toml"), "port = 3333\n");
  ScopedEnv xdg("XDG_CONFIG_HOME", dir.file("xdg").c_str());
  EXPECT_NE(config_line(run_pensieve("config").out, "port").find("3333"), std::string::npos);
  ScopedEnv var("PENSIEVE_CONFIG", dir.file("b.toml").c_str());
  EXPECT_NE(config_line(run_pensieve("config").out, "port").find("2222"), std::string::npos);
  EXPECT_NE(config_line(run_pensieve("config --config " + dir.file("a.toml")).out, "port").find("1111"),
            std::string::npos);
  // An explicit file that is missing is an error, not silently skipped.
  expect_refused(run_pensieve("config --config " + dir.file("nope.toml")), {"nope.toml", "no such file"},
                 "missing --config");
  ScopedEnv missing("PENSIEVE_CONFIG", dir.file("gone.toml").c_str());
  expect_refused(run_pensieve("serve"), {"PENSIEVE_CONFIG", "gone.toml", "no such file"}, "missing variable");
}

TEST(CliConfig, BadFilesNameTheFileLineAndKeyAndTheServerDoesNotStart) {
  test::TempDir dir;
  const std::string f = dir.file("c.toml");
  const struct {
    std::string text;
    std::vector<std::string> parts;
  } cases[] = {
      {"port = 8081\nportt = 1\n", {f + ":2", "unknown key 'portt'", "ctx-size"}},
      {"\n\nport = \"x\"\n", {f + ":3", "port must be an integer, not a string"}},
      {"mmap = \"yes\"\n", {f + ":1", "mmap must be true or false, not a string"}},
      {"host = 5.5\nhost2 = 1\n", {f + ":2", "unknown key 'host2'"}},
      {"device = true\n", {f + ":1", "device must be a string, not a boolean"}},
      {"port = 99999\n", {f + ":1", "port", "99999", "0 to 65535"}},
      {"device = \"tpu\"\n", {f + ":1", "device", "tpu"}},
      {"kv-memory = \"lots\"\n", {f + ":1", "kv-memory", "'lots' is not a memory size"}},
      {"parallel = 0\n", {f + ":1", "parallel"}},
      {"port = 1\nport = 2\n", {f + ":2", "port"}},  // not TOML: a key twice
      {"port = [\n", {f + ":"}},
      {"[models.x]\npath = \"y\"\n", {f + ":2", "unknown key 'path' in [models.x]", "model, aliases"}},
      {"[models.x]\nctx-size = 64\n", {f + ":1", "[models.x] has no model ="}},
      {"[models.x]\nmodel = \"d\"\nctx-size = \"big\"\n", {f + ":3", "models.x.ctx-size must be an integer, not a string"}},
      {"[models.x]\nmodel = \"d\"\nctx-size = 0\n", {f + ":3", "models.x.ctx-size must be at least 1"}},
      {"[models.x]\nmodel = \"d\"\naliases = \"a\"\n", {f + ":3", "models.x.aliases must be an array"}},
      {"[models.x]\nmodel = \"d\"\naliases = [\"a\", 5]\n", {f + ":3", "models.x.aliases must be an array of names"}},
      {"[models.x]\nmodel = \"d\"\nkv-memory = \"lots\"\n", {f + ":3", "models.x.kv-memory", "'lots' is not a memory size"}},
      {"[models.x]\nmodel = \"d\"\nload-at-start = 1\n", {f + ":3", "models.x.load-at-start must be true or false"}},
      {"models = 5\n", {f + ":1", "models must be tables"}},
      {"[models]\nx = 5\n", {f + ":2", "models.x must be a table"}},
      {"models-memory = \"lots\"\n", {f + ":1", "models-memory", "'lots' is not a memory size"}},
      {"test-hooks = true\n", {f + ":1", "unknown key 'test-hooks'"}},
  };
  for (const auto& c : cases) {
    test::write_file(f, c.text);
    // Refused by serve before it loads anything, and by config alike. (Were
    // the file taken, serve would fail on the missing model, not listen.)
    expect_refused(run_pensieve("serve --model /no/such/guard --config " + f), c.parts, c.text);
    expect_refused(run_pensieve("config --config " + f), c.parts, c.text);
  }
  // A value from the file that fails later names the file too.
  test::write_file(f, "model = \"/no/such/model\"\n");
  expect_refused(run_pensieve("serve --config " + f), {"/no/such/model", "no such folder", f + ":1"}, "model");
}

TEST(CliConfig, ConfigPrintsTheModelTablesWithWhereTheyAre) {
  test::TempDir dir;
  const std::string f = dir.file("c.toml");
  test::write_file(f, "port = 9000\n\n[models.small]\nmodel = \"Qwen/Qwen2.5-0.5B-Instruct\"\n"
                      "aliases = [\"gpt-4o-mini\", \"s\"]\nctx-size = 8192\nload_at_start = true\n");
  const auto r = run_pensieve("config --config " + f);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("[models.small]  # " + f + ":3\nmodel = \"Qwen/Qwen2.5-0.5B-Instruct\"\n"
                       "aliases = [\"gpt-4o-mini\", \"s\"]\nctx-size = 8192\nload-at-start = true\n"),
            std::string::npos)
      << r.out;
}

TEST(CliConfig, ServeRunsWithTheFilesValues) {
  test::TempDir dir;
  test::write_file(dir.file("c.toml"), "model-id = \"from-the-file\"\nctx-size = 2048\nport = 0\n");
  test::ServeProcess serve({"--config", dir.file("c.toml")});
  ASSERT_TRUE(serve.wait_ready()) << serve.err();
  EXPECT_NE(serve.out().find("serving from-the-file on"), std::string::npos) << serve.out();
  EXPECT_NE(serve.out().find("(context 2048 tokens)"), std::string::npos) << serve.out();
  EXPECT_EQ(serve.stop(), 0);
}

// The documented example stays true: with every commented `key = value`
// line turned on, each key is an option and each value one it takes.
TEST(CliConfig, TheExampleFileHasOnlyRealKeysAndValues) {
  const std::string example = test::read_file(test::data_path("../../docs/config.example.toml"));
  std::string on;
  int n_keys = 0;
  std::istringstream in(example);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("# ", 0) == 0 && line.find(" = ") != std::string::npos && line.find(' ', 2) > 2 &&
        line.find(' ', 2) == line.find(" = ")) {
      on += line.substr(2) + "\n";
      ++n_keys;
    }
  }
  EXPECT_GE(n_keys, 30);  // every serve option
  test::TempDir dir;
  test::write_file(dir.file("all.toml"), on);
  const auto r = run_pensieve("config --config " + dir.file("all.toml"));
  ASSERT_EQ(r.exit_code, 0) << r.err << "\n" << on;
  EXPECT_EQ(r.out.find("not set"), std::string::npos) << "an option the example leaves out:\n" << r.out;
}

}  // namespace
}  // namespace pensieve
