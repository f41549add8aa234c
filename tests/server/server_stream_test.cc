// The SSE stream and JSON answers of POST /v1/messages against a scripted
// backend: event order, indices, deltas, usage, tool calls, stop sequences,
// thinking, pings, mid-stream errors and client disconnects.
#include <mutex>
#include <regex>
#include <thread>

#include "server_fixture.h"
#include "support/wait_until.h"

namespace pensieve::server::test {
namespace {

TEST_F(ServerTest, StreamsTextInAnthropicOrder) {
  backend.set_script({.pieces = {"Hel", "lo", " world"}, .n_cached = 5});
  start();
  auto events = stream(hello());
  EXPECT_EQ(event_names(events),
            (std::vector<std::string>{"message_start", "ping", "content_block_start",
                                      "content_block_delta", "content_block_delta",
                                      "content_block_delta", "content_block_stop", "message_delta",
                                      "message_stop"}));
  json message = replay_stream(events);
  EXPECT_EQ(message["model"], "scripted-1");  // a claude-* name reaches the default model
  EXPECT_TRUE(std::regex_match(message["id"].get<std::string>(), std::regex("msg_[0-9A-Za-z]{24}")));
  EXPECT_EQ(message["content"], json::parse(R"([{"type":"text","text":"Hello world"}])"));
  EXPECT_EQ(message["stop_reason"], "end_turn");
  EXPECT_TRUE(message["stop_sequence"].is_null());

  // Usage: input_tokens excludes the cached prefix; output counts token events.
  const int64_t n_prompt = static_cast<int64_t>(backend.last_request().prompt.size());
  EXPECT_EQ(n_prompt, static_cast<int64_t>(backend.last_render().size()));
  json start_usage = events[0].data["message"]["usage"];
  EXPECT_EQ(start_usage["input_tokens"], n_prompt - 5);
  EXPECT_EQ(start_usage["cache_read_input_tokens"], 5);
  EXPECT_EQ(start_usage["cache_creation_input_tokens"], 0);
  EXPECT_EQ(start_usage["output_tokens"], 0);
  EXPECT_EQ(message["usage"]["input_tokens"], n_prompt - 5);
  EXPECT_EQ(message["usage"]["cache_read_input_tokens"], 5);
  EXPECT_EQ(message["usage"]["output_tokens"], 3);
}

// Anthropic's usage splits the prompt into input_tokens (neither read from
// nor written to the cache), cache_read_input_tokens and
// cache_creation_input_tokens, and message_start and message_delta give
// the same split. A backend that learns the cache writes only as tokens
// come must not make them disagree (it once made message_start say 17
// input tokens and message_delta 0 input and 17 created).
TEST_F(ServerTest, MessageStartAndMessageDeltaAgreeOnTheInputUsage) {
  backend.set_script({.pieces = {"a", "b"}, .n_cached = 5, .n_cache_created = 16});
  start();
  auto events = stream(hello());
  ASSERT_GE(events.size(), 3u);
  json start_usage = events.front().data["message"]["usage"];
  json delta_usage;
  for (const auto& e : events)
    if (e.name == "message_delta") delta_usage = e.data["usage"];
  ASSERT_TRUE(delta_usage.is_object());
  for (const char* k : {"input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"})
    EXPECT_EQ(start_usage[k], delta_usage[k]) << k << "\n" << start_usage << "\n" << delta_usage;
  EXPECT_EQ(delta_usage["cache_read_input_tokens"], 5);
  EXPECT_EQ(delta_usage["output_tokens"], 2);
}

TEST_F(ServerTest, NonStreamingAnswerEqualsTheStream) {
  backend.set_script({.pieces = {"One ", "two", " three"}, .finish = FinishReason::max_tokens, .n_cached = 2});
  start();
  auto res = post("/v1/messages", hello());
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(res->get_header_value("Content-Type"), "application/json");
  EXPECT_FALSE(res->get_header_value("request-id").empty());
  json plain = json::parse(res->body);
  json streamed = replay_stream(stream(hello()));
  EXPECT_EQ(plain["content"], streamed["content"]);
  EXPECT_EQ(plain["usage"], streamed["usage"]);
  EXPECT_EQ(plain["stop_reason"], "max_tokens");
  EXPECT_EQ(streamed["stop_reason"], "max_tokens");
  EXPECT_EQ(plain["type"], "message");
  EXPECT_EQ(plain["role"], "assistant");
  EXPECT_EQ(plain["usage"]["output_tokens"], 3);
}

TEST_F(ServerTest, ToolCallSplitAcrossTokensBecomesToolUse) {
  backend.set_script({.pieces = {"Let me check.", "\n<tool", "_call>\n{\"name\": \"Bash\", \"argu",
                                 "ments\": {\"command\": \"echo hi\"}}\n</tool_", "call>", "\n"}});
  start();
  json body = hello();
  body["tools"] = {bash_tool()};
  auto events = stream(body);
  json message = replay_stream(events);
  ASSERT_EQ(message["content"].size(), 2u) << message.dump();
  EXPECT_EQ(message["content"][0], json::parse(R"({"type":"text","text":"Let me check."})"));
  const json& call = message["content"][1];
  EXPECT_EQ(call["type"], "tool_use");
  EXPECT_EQ(call["name"], "Bash");
  EXPECT_EQ(call["input"], json::parse(R"({"command":"echo hi"})"));
  EXPECT_TRUE(std::regex_match(call["id"].get<std::string>(), std::regex("toolu_[0-9A-Za-z]{24}")));
  EXPECT_EQ(message["stop_reason"], "tool_use");
  for (const auto& e : events)
    if (e.name == "content_block_start" && e.data["content_block"]["type"] == "tool_use") {
      EXPECT_EQ(e.data["content_block"]["input"], json::object());
    }

  // The same through the JSON answer.
  auto res = post("/v1/messages", body);
  ASSERT_TRUE(res);
  json plain = json::parse(res->body);
  EXPECT_EQ(plain["stop_reason"], "tool_use");
  EXPECT_EQ(plain["content"][1]["input"], call["input"]);
}

TEST_F(ServerTest, MalformedToolCallStaysText) {
  backend.set_script({.pieces = {"<tool_call>{\"name\": \"Bash\", \"arguments\": {oops}", "</tool_call>"}});
  start();
  json body = hello();
  body["tools"] = {bash_tool()};
  json message = replay_stream(stream(body));
  ASSERT_EQ(message["content"].size(), 1u);
  EXPECT_EQ(message["content"][0]["text"],
            "<tool_call>{\"name\": \"Bash\", \"arguments\": {oops}</tool_call>");
  EXPECT_EQ(message["stop_reason"], "end_turn");
}

TEST_F(ServerTest, ToolCallsAreTextWhenToolChoiceIsNone) {
  backend.set_script({.pieces = {"<tool_call>{\"name\": \"Bash\", \"arguments\": {}}</tool_call>"}});
  start();
  json body = hello();
  body["tools"] = {bash_tool()};
  body["tool_choice"] = {{"type", "none"}};
  json message = replay_stream(stream(body));
  EXPECT_EQ(message["content"][0]["type"], "text");
  EXPECT_EQ(message["stop_reason"], "end_turn");
  EXPECT_EQ(json::parse(backend.last_render().substr(0, backend.last_render().find('\n')))["tools"],
            json());
}

TEST_F(ServerTest, StopSequenceAcrossTokenBoundaries) {
  backend.set_script({.pieces = {"abc E", "N", "D and more", " text"}});
  start();
  json body = hello();
  body["stop_sequences"] = {"END", "NEVER"};
  auto events = stream(body);
  json message = replay_stream(events);
  EXPECT_EQ(message["content"], json::parse(R"([{"type":"text","text":"abc "}])"));
  EXPECT_EQ(message["stop_reason"], "stop_sequence");
  EXPECT_EQ(message["stop_sequence"], "END");
  EXPECT_EQ(message["usage"]["output_tokens"], 3);
  // Nothing after the stop sequence ever reached the client.
  for (const auto& e : events) EXPECT_EQ(e.data.dump().find("more"), std::string::npos);

  // A partial match that does not complete is released as text.
  backend.set_script({.pieces = {"x EN", "Y", "!"}});
  message = replay_stream(stream(body));
  EXPECT_EQ(message["content"][0]["text"], "x ENY!");
  EXPECT_EQ(message["stop_reason"], "end_turn");
}

TEST_F(ServerTest, ThinkingBlockWithSignature) {
  backend.set_script({.pieces = {"<think>\nI pon", "der\n</thi", "nk>\n\nAnswer."}});
  start();
  json body = hello();
  body["thinking"] = {{"type", "enabled"}, {"budget_tokens", 2048}};
  auto events = stream(body);
  json message = replay_stream(events);
  ASSERT_EQ(message["content"].size(), 2u) << message.dump();
  EXPECT_EQ(message["content"][0]["type"], "thinking");
  EXPECT_EQ(message["content"][0]["thinking"], "I ponder");
  EXPECT_FALSE(message["content"][0]["signature"].get<std::string>().empty());
  EXPECT_EQ(message["content"][1], json::parse(R"({"type":"text","text":"Answer."})"));
  EXPECT_NE(backend.last_render().find("\"enable_thinking\":true"), std::string::npos);
  // signature_delta comes right before the thinking block's stop.
  for (size_t i = 0; i + 1 < events.size(); ++i)
    if (events[i].name == "content_block_delta" && events[i].data["delta"]["type"] == "signature_delta") {
      EXPECT_EQ(events[i + 1].name, "content_block_stop");
    }

  // Not requested: the same output is plain text and the template is told so.
  message = replay_stream(stream(hello()));
  ASSERT_EQ(message["content"].size(), 1u);
  EXPECT_EQ(message["content"][0]["text"], "<think>\nI ponder\n</think>\n\nAnswer.");
  EXPECT_NE(backend.last_render().find("\"enable_thinking\":false"), std::string::npos);
}

TEST_F(ServerTest, ThinkingOpenedByTheTemplate) {
  backend.think_in_prompt = true;
  backend.set_script({.pieces = {"hmm", "</think>", "ok"}});
  start();
  json body = hello();
  body["thinking"] = {{"type", "adaptive"}};
  json message = replay_stream(stream(body));
  ASSERT_EQ(message["content"].size(), 2u) << message.dump();
  EXPECT_EQ(message["content"][0]["thinking"], "hmm");
  EXPECT_EQ(message["content"][1]["text"], "ok");
}

TEST_F(ServerTest, PingsWhileThePromptIsProcessed) {
  // 800 ms of prompt: ample time for 3 pings 50 ms apart, even on a busy machine.
  backend.set_script({.pieces = {"done"}, .n_progress = 8,
                      .progress_delay = std::chrono::milliseconds(100)});
  ServerOptions options;
  options.ping_interval_ms = 50;
  start(options);
  auto events = stream(hello());
  replay_stream(events);
  int n_pings_before_content = 0;
  for (const auto& e : events) {
    if (e.name == "content_block_start") break;
    n_pings_before_content += e.name == "ping";
  }
  EXPECT_GE(n_pings_before_content, 3);
}

TEST_F(ServerTest, EngineErrorMidStreamIsAnErrorEvent) {
  backend.set_script({.pieces = {"partial"}, .error = "engine exploded"});
  start();
  auto events = stream(hello());
  json message = replay_stream(events);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().name, "error");
  EXPECT_EQ(events.back().data["error"]["type"], "api_error");
  EXPECT_EQ(events.back().data["error"]["message"], "engine exploded");

  // Without streaming it is a 500 envelope.
  EXPECT_EQ(expect_error(post("/v1/messages", hello()), 500, "api_error"), "engine exploded");
}

TEST_F(ServerTest, ClientDisconnectCancelsTheGeneration) {
  backend.set_script({.pieces = {"a"}, .until_cancelled = true});
  start();
  json body = hello(true);
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/messages";
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  std::string received;
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    received.append(data, n);
    return received.find("content_block_delta") == std::string::npos;  // hang up after the first
  };
  httplib::Response res;
  httplib::Error err;
  auto c = client();
  c->send(req, res, err);
  EXPECT_NE(received.find("content_block_delta"), std::string::npos);
  c.reset();
  EXPECT_TRUE(pensieve::test::wait_until([&] { return backend.n_cancelled == 1; }));
  // The slot is released: the server still answers and counts nothing in flight.
  auto health = client()->Get("/health");
  ASSERT_TRUE(health);
  EXPECT_TRUE(pensieve::test::wait_until(
      [&] { return json::parse(client()->Get("/health")->body)["n_inflight"] == 0; }));
}

TEST_F(ServerTest, MaxTokensIsClampedToTheContext) {
  backend.model.context_size = 5000;
  backend.set_script({.pieces = {"x"}});
  start();
  json body = hello();
  body["max_tokens"] = 128000;
  body["temperature"] = 0.5;
  body["top_k"] = 40;
  auto res = post("/v1/messages", body);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200) << res->body;
  GenerationRequest gen = backend.last_request();
  EXPECT_EQ(gen.max_tokens, 5000 - static_cast<int64_t>(gen.prompt.size()));
  EXPECT_FLOAT_EQ(gen.temperature, 0.5f);
  EXPECT_EQ(gen.top_k, 40);
}

TEST_F(ServerTest, ServerStopEndsOpenStreams) {
  backend.set_script({.pieces = {"a"}, .until_cancelled = true});
  start();
  // Stopped once the stream is under way: its first event has arrived.
  std::mutex m;
  std::string body;  // guarded by m
  std::thread reader([&] {
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/messages";
    req.body = hello(true).dump();
    req.set_header("Content-Type", "application/json");
    req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
      std::lock_guard<std::mutex> lock(m);
      body.append(data, n);
      return true;
    };
    httplib::Response res;
    httplib::Error err;
    client()->send(req, res, err);
  });
  const bool streaming = pensieve::test::wait_until([&] {
    std::lock_guard<std::mutex> lock(m);
    return body.find("message_start") != std::string::npos;
  });
  server->stop();
  reader.join();
  ASSERT_TRUE(streaming) << body;
  auto events = parse_sse(body);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().name, "error");
  EXPECT_EQ(events.back().data["error"]["type"], "overloaded_error");
  EXPECT_EQ(backend.n_cancelled, 1);
}

}  // namespace
}  // namespace pensieve::server::test
