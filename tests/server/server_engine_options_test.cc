// `pensieve serve --kv-memory`: sizes it cannot use are refused with a
// clear error (and exit code 1) instead of being ignored or rounded up; a
// default context too long for the budget is shrunk to fit, and said so.
#include <gtest/gtest.h>
#include <httplib.h>

#include <nlohmann/json.hpp>

#include "support/test_support.h"

namespace pensieve {
namespace {

using test::run_pensieve;

// The error line serve printed, or what it printed instead.
std::string error_line(const test::RunResult& r) {
  const size_t at = r.err.find("error: ");
  if (at == std::string::npos) return "(no error line) " + r.err;
  return r.err.substr(at, r.err.find('\n', at) - at);
}

TEST(ServeKvMemory, ValuesThatAreNotSizesAreRefusedBeforeLoading) {
  for (const char* bad : {"abc", "4X", "nan"}) {
    const auto r = run_pensieve(std::string("serve --port 0 --kv-memory ") + bad);
    EXPECT_EQ(r.exit_code, 1) << bad;
    // Checked while the command line is parsed (as a config file's value is).
    EXPECT_EQ(error_line(r), "error: --kv-memory: '" + std::string(bad) +
                                 "' is not a memory size: give a number of GiB (like 4 or 0.5) "
                                 "or a number with M or G (like 512M) (see pensieve serve --help)");
    // Nothing was loaded first.
    EXPECT_EQ(r.err.find("stories260K"), std::string::npos) << r.err;
  }
  for (const char* bad : {"0", "-1"}) {
    const auto r = run_pensieve(std::string("serve --port 0 --kv-memory=") + bad);
    EXPECT_EQ(r.exit_code, 1) << bad;
    EXPECT_EQ(error_line(r), "error: --kv-memory: memory size '" + std::string(bad) +
                                 "' must be more than 0 (see pensieve serve --help)");
  }
}

TEST(ServeKvMemory, ABudgetTooSmallForOneContextOrLargerThanRamIsRefused) {
  // The bundled model keeps 10 KiB of K/V a block (5 layers x 4 KV heads x
  // 8 dims x K and V x 16 tokens, in half floats), so 1 MiB holds 102 blocks
  // and a 4096-token context needs 257.
  auto r = run_pensieve("serve --port 0 --ctx-size 4096 --kv-memory 1M");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(error_line(r),
            "error: KV memory of 1.0 MiB holds 102 blocks of 16 tokens, but one 4096-token context "
            "needs 257 (2.5 MiB): give it more memory (--kv-memory) or a shorter context "
            "(--ctx-size)");
  r = run_pensieve("serve --port 0 --ctx-size 4096 --kv-memory 100000");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(error_line(r).find("error: KV memory of 100000.00 GiB is more than this machine's "),
            std::string::npos)
      << r.err;
}

// The bundled model's default context (65536 positions) needs 41 MiB of
// K/V; in 1 MiB, 102 blocks of 16 tokens fit: it serves 101 x 16 = 1616.
TEST(ServeKvMemory, ADefaultContextTooLongForTheBudgetIsShrunkAndSaidSo) {
  test::ServeProcess serve({"--port", "0", "--kv-memory", "1M"});
  ASSERT_TRUE(serve.wait_ready()) << serve.err();
  const std::string note =
      "context shrunk from 65536 to 1616 tokens to fit the KV cache: a full context needs 40.0 "
      "MiB, and --kv-memory gives 1.0 MiB (--kv-memory or --ctx-size choose otherwise)";
  // One line in the log, and the banner names the context served.
  const std::string err = serve.err();
  EXPECT_NE(err.find("warning " + note + "\n"), std::string::npos) << err;
  EXPECT_NE(serve.out().find("(context 1616 tokens)"), std::string::npos) << serve.out();
  httplib::Client client("127.0.0.1", serve.port());
  auto health = client.Get("/health");
  ASSERT_TRUE(health);
  const auto h = nlohmann::json::parse(health->body);
  EXPECT_EQ(h["context_size"], 1616);
  EXPECT_EQ(h["context_note"], note);
  auto models = client.Get("/v1/models");
  ASSERT_TRUE(models);
  const auto m = nlohmann::json::parse(models->body)["data"][0];
  EXPECT_EQ(m["max_input_tokens"], 1615);
  EXPECT_EQ(m["context_size"], 1616);
  EXPECT_EQ(m["context_note"], note);
  EXPECT_EQ(serve.stop(), 0) << serve.err();
}

}  // namespace
}  // namespace pensieve
