// One rule for a list of API keys, wherever it comes from: `serve --api-key
// a,b` and `PENSIEVE_API_KEY=a,b` both accept a and b, and not "a,b".
// (--api-key a,b used to be the one key "a,b"; the variable was a, b and
// also "a,b", read once by the option and once by the server.)
#include <gtest/gtest.h>
#include <httplib.h>

#include <cstdlib>

#include "server/auth.h"
#include "support/test_support.h"

namespace pensieve {
namespace {

TEST(ApiKeyList, IsSplitOnCommas) {
  using V = std::vector<std::string>;
  EXPECT_EQ(server::split_api_keys("a,b"), (V{"a", "b"}));
  EXPECT_EQ(server::split_api_keys("one"), (V{"one"}));
  EXPECT_EQ(server::split_api_keys(",a,,b,"), (V{"a", "b"}));
  EXPECT_EQ(server::split_api_keys(""), V{});
  EXPECT_EQ(server::split_api_keys(" a , b c,\t, "), (V{"a", "b c"}));  // spaces around entries go
}

// The status of POST /v1/messages with `key` as x-api-key.
int status_with_key(int port, const std::string& key) {
  httplib::Client client("127.0.0.1", port);
  auto res = client.Post("/v1/messages", {{"x-api-key", key}},
                         R"({"model":"claude-m","max_tokens":1,"messages":[{"role":"user","content":"hi"}]})",
                         "application/json");
  return res ? res->status : -1;
}

void expect_keys_a_and_b(test::ServeProcess& serve, const std::string& what) {
  ASSERT_TRUE(serve.wait_ready()) << what << "\n" << serve.err();
  EXPECT_EQ(status_with_key(serve.port(), "key-a"), 200) << what;
  EXPECT_EQ(status_with_key(serve.port(), "key-b"), 200) << what;
  EXPECT_EQ(status_with_key(serve.port(), "key-a,key-b"), 401) << what;
  // The Claude Code line carries the first key.
  EXPECT_NE(serve.out().find("ANTHROPIC_AUTH_TOKEN=key-a "), std::string::npos) << serve.out();
  EXPECT_EQ(serve.stop(), 0) << serve.err();
}

TEST(ServeApiKeys, OptionAndVariableTakeTheSameCommaSeparatedList) {
  const char* old = std::getenv("PENSIEVE_API_KEY");
  const std::string saved = old ? old : "";
  unsetenv("PENSIEVE_API_KEY");
  {
    test::ServeProcess serve({"--port", "0", "--api-key", "key-a,key-b"});
    expect_keys_a_and_b(serve, "--api-key");
  }
  setenv("PENSIEVE_API_KEY", "key-a,key-b", 1);
  {
    test::ServeProcess serve({"--port", "0"});
    expect_keys_a_and_b(serve, "PENSIEVE_API_KEY");
  }
  // The option wins over the variable, as for every option with a variable.
  {
    test::ServeProcess serve({"--port", "0", "--api-key", "key-c"});
    ASSERT_TRUE(serve.wait_ready()) << serve.err();
    EXPECT_EQ(status_with_key(serve.port(), "key-c"), 200);
    EXPECT_EQ(status_with_key(serve.port(), "key-a"), 401);
    EXPECT_EQ(serve.stop(), 0) << serve.err();
  }
  if (old) setenv("PENSIEVE_API_KEY", saved.c_str(), 1);
  else unsetenv("PENSIEVE_API_KEY");
}

}  // namespace
}  // namespace pensieve
