// The real engine behind the server (bundled stories260K): the prefix cache
// shows in usage, GET /health reports the KV blocks back when idle, and a
// forced tool_choice makes even this story model write a valid call.
#include <gtest/gtest.h>
#include <httplib.h>

#include <chrono>
#include <thread>

#include <nlohmann/json.hpp>

#include "chat/chat_config.h"
#include "chat/stop_ids.h"
#include "engine/engine.h"
#include "models/model.h"
#include "server/engine_backend.h"
#include "server/server.h"
#include "tokenizer/tokenizer.h"
#include "sse_check.h"
#include "support/wait_until.h"

namespace pensieve::server {
namespace {

using json = nlohmann::ordered_json;

const std::string kModel = std::string(PENSIEVE_TEST_DATA) + "/../../models/stories260K";

struct Served {
  explicit Served(bool prefix_cache) {
    model = load_model(kModel, {1});
    tokenizer = Tokenizer::load(kModel);
    EngineOptions eo;
    eo.ctx_size = 1024;
    eo.kv_blocks = 200;
    eo.prefix_cache = prefix_cache;
    engine = std::make_unique<Engine>(*model, eo);
    chat::ChatConfig chat = chat::load_chat_config(kModel);
    std::vector<int32_t> stop_ids =
        chat::collect_stop_ids(model->config().eos_token_ids, *tokenizer, chat);
    backend = std::make_unique<EngineBackend>("stories260K", *engine, *tokenizer, std::move(chat),
                                              std::move(stop_ids));
    ServerOptions so;
    so.port = 0;
    so.api_keys_from_env = false;
    server = std::make_unique<Server>(*backend, so);
    server->start();
  }
  json post(const json& body) {
    httplib::Client c("127.0.0.1", server->port());
    c.set_read_timeout(60, 0);
    auto res = c.Post("/v1/messages", body.dump(), "application/json");
    EXPECT_TRUE(res);
    if (!res) return json();
    EXPECT_EQ(res->status, 200) << res->body;
    return json::parse(res->body);
  }
  json health() {
    httplib::Client c("127.0.0.1", server->port());
    auto res = c.Get("/health");
    EXPECT_TRUE(res);
    return res ? json::parse(res->body) : json();
  }
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<EngineBackend> backend;
  std::unique_ptr<Server> server;
};

// Cache breakpoints where Claude Code puts them: on the system prompt and
// on the last user block.
json story_request(const std::string& question, bool breakpoints = true) {
  std::string system;
  for (int i = 0; i < 20; ++i) system += "Once upon a time there was a little dog. ";
  json body = {{"model", "stories260K"},
               {"max_tokens", 12},
               {"temperature", 0},
               {"system", system},
               {"messages", {{{"role", "user"}, {"content", question}}}}};
  if (breakpoints) {
    const json mark = {{"type", "ephemeral"}};
    body["system"] = json::array({{{"type", "text"}, {"text", system}, {"cache_control", mark}}});
    body["messages"][0]["content"] = json::array({{{"type", "text"}, {"text", question}, {"cache_control", mark}}});
  }
  return body;
}

int64_t prompt_total(const json& usage) {
  return usage["input_tokens"].get<int64_t>() + usage["cache_read_input_tokens"].get<int64_t>() +
         usage["cache_creation_input_tokens"].get<int64_t>();
}

TEST(ServerEngineCache, SecondRequestReadsTheSharedPrefix) {
  Served s(true);
  const json first = s.post(story_request("Tell me about the dog."));
  const json second = s.post(story_request("Tell me about the cat."));
  const json& u1 = first["usage"];
  const json& u2 = second["usage"];
  EXPECT_EQ(u1["cache_read_input_tokens"], 0);
  EXPECT_GT(u1["cache_creation_input_tokens"].get<int64_t>(), 100);
  // Every full prompt block was written; at most the last 15 prompt tokens
  // (a block that generated tokens may complete later) are not.
  EXPECT_LE(prompt_total(u1) - u1["cache_creation_input_tokens"].get<int64_t>(), 15);
  // The shared system prompt comes from the cache, in whole 16-token blocks.
  EXPECT_GT(u2["cache_read_input_tokens"].get<int64_t>(), 100);
  EXPECT_EQ(u2["cache_read_input_tokens"].get<int64_t>() % 16, 0);
  EXPECT_LE(u2["cache_read_input_tokens"], u1["cache_creation_input_tokens"]);
  // The same request again reads all of its full blocks but the last token's.
  const json again = s.post(story_request("Tell me about the dog."));
  const int64_t n = prompt_total(again["usage"]);
  EXPECT_EQ(again["usage"]["cache_read_input_tokens"], (n - 1) / 16 * 16);
  EXPECT_EQ(again["content"], first["content"]);  // greedy: same answer from cached K/V
  json h;
  EXPECT_TRUE(pensieve::test::wait_until([&] {
    h = s.health();
    return h["engine"]["kv_blocks_used"] == 0 && h["engine"]["n_running"] == 0;
  })) << h.dump();
  EXPECT_EQ(h["engine"]["kv_blocks_used"], 0);
  EXPECT_EQ(h["engine"]["kv_blocks_total"], 200);
  EXPECT_EQ(h["engine"]["kv_blocks_free"].get<int64_t>() + h["engine"]["kv_blocks_cached"].get<int64_t>(), 200);
  EXPECT_GT(h["engine"]["kv_blocks_cached"].get<int64_t>(), 0);
  EXPECT_EQ(h["engine"]["prefix_cache"], true);

  // GET /metrics tells the same story: three generations, two of them
  // reading from the cache, their prompt and output tokens, the idle
  // engine's KV blocks by state.
  httplib::Client c("127.0.0.1", s.server->port());
  auto res = c.Get("/metrics");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200);
  const std::string& text = res->body;
  auto sample = [&](const std::string& name) -> double {
    const std::string key = name + " ";
    const size_t at = text.find("\n" + key);
    EXPECT_NE(at, std::string::npos) << name << " not in\n" << text;
    return at == std::string::npos ? -1 : std::stod(text.substr(at + 1 + key.size()));
  };
  const std::string m = "{model=\"stories260K\"";
  EXPECT_EQ(sample("pensieve_generations_total" + m + "}"), 3);
  EXPECT_EQ(sample("pensieve_prefix_cache_hits_total" + m + "}"), 2);
  EXPECT_EQ(sample("pensieve_prompt_tokens_total" + m + "}"),
            prompt_total(u1) + prompt_total(u2) + prompt_total(again["usage"]));
  EXPECT_EQ(sample("pensieve_prompt_cached_tokens_total" + m + "}"),
            u2["cache_read_input_tokens"].get<int64_t>() + again["usage"]["cache_read_input_tokens"].get<int64_t>());
  EXPECT_EQ(sample("pensieve_generated_tokens_total" + m + "}"),
            u1["output_tokens"].get<int64_t>() + u2["output_tokens"].get<int64_t>() +
                again["usage"]["output_tokens"].get<int64_t>());
  EXPECT_EQ(sample("pensieve_kv_blocks" + m + ",state=\"used\"}"), 0);
  EXPECT_EQ(sample("pensieve_kv_blocks" + m + ",state=\"cached\"}"), h["engine"]["kv_blocks_cached"].get<double>());
  EXPECT_EQ(sample("pensieve_kv_blocks" + m + ",state=\"free\"}"), h["engine"]["kv_blocks_free"].get<double>());
  EXPECT_EQ(sample("pensieve_running_sequences" + m + "}"), 0);
  EXPECT_EQ(sample("pensieve_queue_depth" + m + "}"), 0);
  EXPECT_GT(sample("pensieve_engine_steps_total" + m + "}"), 0);
  EXPECT_EQ(sample("pensieve_preemptions_total" + m + "}"), 0);
  EXPECT_EQ(sample("pensieve_requests_total" + m + ",route=\"/v1/messages\",status=\"200\"}"), 3);
}

// Without a cache_control breakpoint nothing counts as a cache write (as
// Anthropic counts it), though the prefix cache still reads what it has;
// with one only on the system prompt, the write ends there.
TEST(ServerEngineCache, CacheWritesEndAtTheLastBreakpoint) {
  Served s(true);
  const json plain = s.post(story_request("Tell me about the dog.", false));
  EXPECT_EQ(plain["usage"]["cache_creation_input_tokens"], 0);
  EXPECT_EQ(plain["usage"]["cache_read_input_tokens"], 0);
  EXPECT_EQ(plain["usage"]["input_tokens"], prompt_total(plain["usage"]));
  const json again = s.post(story_request("Tell me about the dog.", false));
  EXPECT_GT(again["usage"]["cache_read_input_tokens"].get<int64_t>(), 100);
  EXPECT_EQ(again["usage"]["cache_creation_input_tokens"], 0);

  json system_only = story_request("Tell me about the cat.");
  system_only["messages"][0]["content"][0].erase("cache_control");
  const json u = s.post(system_only)["usage"];
  const json full = s.post(story_request("Tell me about the cat."))["usage"];
  // The question and the template's turn markers come after the system
  // breakpoint: more input_tokens than with the breakpoint on the question.
  EXPECT_GT(u["input_tokens"].get<int64_t>(), full["input_tokens"].get<int64_t>());
  EXPECT_GT(u["input_tokens"].get<int64_t>(), 3);
  EXPECT_EQ(prompt_total(u), prompt_total(full));
}

// A stream's message_start already has the split of the prompt that its
// message_delta ends with.
TEST(ServerEngineCache, StreamUsageIsTheSameAtStartAndEnd) {
  Served s(true);
  for (const char* question : {"Tell me about the dog.", "Tell me about the cat."}) {
    json body = story_request(question);
    body["stream"] = true;
    httplib::Client c("127.0.0.1", s.server->port());
    c.set_read_timeout(60, 0);
    auto res = c.Post("/v1/messages", body.dump(), "application/json");
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 200) << res->body;
    const auto events = test::parse_sse(res->body);
    ASSERT_FALSE(events.empty());
    const json start = events.front().data["message"]["usage"];
    json end;
    for (const auto& e : events)
      if (e.name == "message_delta") end = e.data["usage"];
    ASSERT_TRUE(end.is_object()) << res->body;
    for (const char* k : {"input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"})
      EXPECT_EQ(start[k], end[k]) << question << " " << k << ": " << start << " vs " << end;
    EXPECT_GT(start["cache_creation_input_tokens"].get<int64_t>() +
                  start["cache_read_input_tokens"].get<int64_t>(),
              100)
        << start;
    EXPECT_LT(start["input_tokens"].get<int64_t>(), 32) << start;
  }
}

TEST(ServerEngineCache, OffReportsNoCacheUse) {
  Served s(false);
  const json first = s.post(story_request("Tell me about the dog."));
  const json again = s.post(story_request("Tell me about the dog."));
  for (const json* m : {&first, &again}) {
    EXPECT_EQ((*m)["usage"]["cache_read_input_tokens"], 0);
    EXPECT_EQ((*m)["usage"]["cache_creation_input_tokens"], 0);
  }
  EXPECT_EQ(again["content"], first["content"]);
  EXPECT_EQ(s.health()["engine"]["prefix_cache"], false);
}

json weather_tools() {
  return json::array(
      {{{"name", "get_weather"},
        {"description", "Weather for a city"},
        {"input_schema",
         {{"type", "object"},
          {"properties",
           {{"city", {{"type", "string"}}},
            {"unit", {{"type", "string"}, {"enum", {"celsius", "fahrenheit"}}}},
            {"days", {{"type", "integer"}}}}},
          {"required", {"city", "unit", "days"}}}}},
       {{"name", "get_time"},
        {"description", "The time in a zone"},
        {"input_schema",
         {{"type", "object"}, {"properties", {{"zone", {{"type", "string"}}}}}, {"required", {"zone"}}}}}});
}

json tool_request(const std::string& question) {
  return {{"model", "stories260K"},
          {"max_tokens", 600},
          {"temperature", 0},
          {"messages", {{{"role", "user"}, {"content", question}}}},
          {"tools", weather_tools()}};
}

// A story model never writes <tool_call> on its own; with tool_choice any or
// tool the output is constrained to one call whose input follows the schema.
TEST(ServerForcedTool, ToolChoiceMakesTheModelCallWithSchemaValidInput) {
  Served s(true);
  for (const json& choice : {json{{"type", "tool"}, {"name", "get_weather"}}, json{{"type", "any"}}}) {
    for (int seed = 0; seed < 3; ++seed) {
      json body = tool_request("What is the weather in Paris?");
      body["temperature"] = seed == 0 ? 0.0 : 1.0;
      body["seed"] = seed;
      body["tool_choice"] = choice;
      const json m = s.post(body);
      ASSERT_EQ(m["stop_reason"], "tool_use") << m.dump();
      ASSERT_EQ(m["content"].size(), 1u) << m.dump();
      const json& call = m["content"][0];
      EXPECT_EQ(call["type"], "tool_use");
      const json& in = call["input"];
      if (choice["type"] == "tool" || call["name"] == "get_weather") {
        EXPECT_EQ(call["name"], "get_weather");
        EXPECT_TRUE(in["city"].is_string()) << in.dump();
        EXPECT_TRUE(in["unit"] == "celsius" || in["unit"] == "fahrenheit") << in.dump();
        EXPECT_TRUE(in["days"].is_number_integer()) << in.dump();
        EXPECT_EQ(in.size(), 3u);
      } else {
        EXPECT_EQ(call["name"], "get_time");
        EXPECT_TRUE(in["zone"].is_string()) << in.dump();
      }
    }
  }
  // Streaming: the same call arrives as input_json_delta events.
  json body = tool_request("What is the time?");
  body["tool_choice"] = {{"type", "tool"}, {"name", "get_time"}};
  const json plain = s.post(body);
  body["stream"] = true;
  httplib::Client c("127.0.0.1", s.server->port());
  c.set_read_timeout(60, 0);
  auto res = c.Post("/v1/messages", body.dump(), "application/json");
  ASSERT_TRUE(res);
  const json streamed = test::replay_stream(test::parse_sse(res->body));
  EXPECT_EQ(streamed["stop_reason"], "tool_use");
  ASSERT_EQ(streamed["content"].size(), 1u);
  EXPECT_EQ(streamed["content"][0]["name"], "get_time");
  EXPECT_EQ(streamed["content"][0]["input"], plain["content"][0]["input"]);  // greedy: the same call
  bool saw_json_delta = false;
  for (const auto& e : test::parse_sse(res->body))
    if (e.name == "content_block_delta" && e.data["delta"]["type"] == "input_json_delta") saw_json_delta = true;
  EXPECT_TRUE(saw_json_delta);
}

}  // namespace
}  // namespace pensieve::server
