// The requests Claude Code really sent (tests/data/claude-code), replayed
// as-is with their headers and ?beta=true path.
#include "support/test_support.h"
#include "server_fixture.h"

namespace pensieve::server::test {
namespace {

json load(const std::string& name) {
  return json::parse(pensieve::test::read_file(
      pensieve::test::data_path("claude-code/" + name + ".request.json")));
}

httplib::Result replay(ServerTest& t, const json& recorded, httplib::Client& c) {
  httplib::Headers headers;
  for (auto& [k, v] : recorded["headers"].items()) {
    // Let the client compute framing and encoding headers for this body.
    if (k == "Content-Length" || k == "Host" || k == "Connection") continue;
    headers.emplace(k, v.get<std::string>());
  }
  return c.Post(recorded["path"].get<std::string>().c_str(), headers,
                recorded["body"].dump(), "application/json");
}

class ClaudeCodeTest : public ServerTest {
 protected:
  json replay_stream_of(const std::string& name) {
    json recorded = load(name);
    EXPECT_EQ(recorded["path"], "/v1/messages?beta=true");
    auto c = client();
    auto res = replay(*this, recorded, *c);
    EXPECT_TRUE(res);
    if (!res) return {};
    EXPECT_EQ(res->status, 200) << res->body.substr(0, 500);
    EXPECT_EQ(res->get_header_value("Content-Type"), "text/event-stream");
    // Claude Code accepts gzip/br, but an event stream must never be compressed.
    EXPECT_EQ(res->get_header_value("Content-Encoding"), "");
    json message = replay_stream(parse_sse(res->body));
    EXPECT_EQ(message["model"], "scripted-1");  // claude-opus-5-5 reaches the default model
    return message;
  }
};

TEST_F(ClaudeCodeTest, PrintModeHello) {
  backend.set_script({.pieces = {"Hello", "! How can I help?"}});
  start();
  json message = replay_stream_of("print-mode-hello");
  EXPECT_EQ(message["content"], json::parse(R"([{"type":"text","text":"Hello! How can I help?"}])"));
  EXPECT_EQ(message["stop_reason"], "end_turn");
  // max_tokens 128000 is clamped, not refused.
  GenerationRequest gen = backend.last_request();
  EXPECT_EQ(gen.max_tokens, backend.model.context_size - static_cast<int64_t>(gen.prompt.size()));

  // What reached the template: system prompt without the billing line,
  // Claude Code's tools (the deferred placeholder left out), the system
  // entry from the messages, thinking on (adaptive).
  std::string render = backend.last_render();
  json rendered = json::parse(render.substr(0, render.find('\n')));
  EXPECT_EQ(render.find("x-anthropic-billing-header"), std::string::npos);
  EXPECT_EQ(rendered["messages"][0]["role"], "system");
  EXPECT_EQ(rendered["messages"][0]["content"].get<std::string>().rfind("You are a Claude agent", 0), 0u);
  EXPECT_EQ(rendered["messages"][1]["role"], "user");
  EXPECT_EQ(rendered["messages"][2]["role"], "system");
  EXPECT_EQ(rendered["tools"].size(), 11u);
  EXPECT_EQ(rendered["tools"][1]["function"]["name"], "Bash");
  EXPECT_TRUE(rendered["tools"][1]["function"]["parameters"].is_object());
  EXPECT_EQ(rendered["vars"]["enable_thinking"], true);
}

TEST_F(ClaudeCodeTest, ToolTurnOneAnswersWithToolUse) {
  backend.set_script({.pieces = {"<think>\nThe user wants echo.\n</think>\n\n", "<tool_call>\n",
                                 "{\"name\": \"Bash\", \"arguments\": {\"command\": \"echo pensieve-ok\"}}",
                                 "\n</tool_call>"}});
  start();
  json message = replay_stream_of("tool-turn-1");
  ASSERT_EQ(message["content"].size(), 2u) << message.dump();
  EXPECT_EQ(message["content"][0]["type"], "thinking");
  EXPECT_EQ(message["content"][1]["type"], "tool_use");
  EXPECT_EQ(message["content"][1]["name"], "Bash");
  EXPECT_EQ(message["content"][1]["input"], json::parse(R"({"command":"echo pensieve-ok"})"));
  EXPECT_EQ(message["stop_reason"], "tool_use");
}

TEST_F(ClaudeCodeTest, ToolTurnTwoCarriesTheResult) {
  backend.set_script({.pieces = {"pensieve-ok"}});
  start();
  json message = replay_stream_of("tool-turn-2-with-result");
  EXPECT_EQ(message["content"][0]["text"], "pensieve-ok");
  std::string render = backend.last_render();
  json rendered = json::parse(render.substr(0, render.find('\n')));
  const json& messages = rendered["messages"];
  ASSERT_GE(messages.size(), 2u);
  const json& call = messages[messages.size() - 2];
  EXPECT_EQ(call["role"], "assistant");
  EXPECT_EQ(call["tool_calls"][0]["function"]["name"], "Bash");
  EXPECT_EQ(call["tool_calls"][0]["function"]["arguments"]["command"], "echo pensieve-ok");
  EXPECT_EQ(messages.back(),
            json::parse(R"({"role":"tool","tool_call_id":"toolu_01","name":"Bash","content":"pensieve-ok"})"));
}

TEST_F(ClaudeCodeTest, GenericToolFormatForTemplatesWithoutTools) {
  backend.model.native_tools = false;
  backend.set_script({.pieces = {"<tool_call>{\"name\": \"Bash\", \"arguments\": {\"command\": \"ls\"}}</tool_call>"}});
  start();
  json message = replay_stream_of("tool-turn-2-with-result");
  EXPECT_EQ(message["content"][0]["type"], "tool_use");
  std::string render = backend.last_render();
  json rendered = json::parse(render.substr(0, render.find('\n')));
  EXPECT_TRUE(rendered["tools"].is_null());
  std::string system = rendered["messages"][0]["content"];
  EXPECT_NE(system.find("# Tools"), std::string::npos);
  EXPECT_NE(system.find("{\"name\":\"Bash\""), std::string::npos);
  EXPECT_EQ(system.find("DeferredToolPlaceholder"), std::string::npos);
  const json& messages = rendered["messages"];
  EXPECT_NE(messages[messages.size() - 2]["content"].get<std::string>().find(
                "<tool_call>\n{\"name\":\"Bash\",\"arguments\":{\"command\":\"echo pensieve-ok\""),
            std::string::npos);
  EXPECT_EQ(messages.back()["role"], "user");
  EXPECT_EQ(messages.back()["content"], "<tool_response name=\"Bash\">\npensieve-ok\n</tool_response>");
}

TEST_F(ClaudeCodeTest, BillingLineDoesNotChangeThePrompt) {
  start();
  json a = load("print-mode-hello")["body"];
  json b = a;
  b["system"][0]["text"] = "x-anthropic-billing-header: cc_version=9.9.9.abc; cc_entrypoint=cli;";
  a.erase("max_tokens");
  b.erase("max_tokens");
  auto ra = post("/v1/messages/count_tokens", a);
  std::string render_a = backend.last_render();
  auto rb = post("/v1/messages/count_tokens", b);
  std::string render_b = backend.last_render();
  ASSERT_EQ(ra->status, 200) << ra->body;
  EXPECT_EQ(render_a, render_b);
  EXPECT_EQ(ra->body, rb->body);
  EXPECT_EQ(render_a.find("cc_version"), std::string::npos);
}

}  // namespace
}  // namespace pensieve::server::test
