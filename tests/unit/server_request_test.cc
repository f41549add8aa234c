// Request parsing, conversion to template messages, the message builder's
// events and the auth helpers, without HTTP.
#include <gtest/gtest.h>

#include "server/api_error.h"
#include "server/auth.h"
#include "server/message_builder.h"
#include "server/prompt.h"
#include "server/request.h"
#include "support/test_support.h"

namespace pensieve::server {
namespace {

using json = nlohmann::ordered_json;

json fixture_body(const std::string& name) {
  return json::parse(test::read_file(test::data_path("claude-code/" + name + ".request.json")))["body"];
}

std::string parse_error(const json& body, ParseOptions options = {}) {
  try {
    parse_messages_request(body, options);
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 400);
    EXPECT_EQ(e.type(), "invalid_request_error");
    return e.what();
  }
  return "(accepted)";
}

json minimal() {
  return json::parse(R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]})");
}

TEST(ServerRequest, ParsesClaudeCodeRequests) {
  MessagesRequest r = parse_messages_request(fixture_body("tool-turn-2-with-result"), {});
  EXPECT_EQ(r.model, "claude-opus-5-5");
  EXPECT_EQ(r.max_tokens, 128000);
  EXPECT_TRUE(r.stream);
  EXPECT_EQ(r.thinking, ThinkingMode::adaptive);
  ASSERT_EQ(r.tools.size(), 12u);
  EXPECT_TRUE(r.tools[10].deferred);
  EXPECT_FALSE(r.tools[1].deferred);
  ASSERT_EQ(r.system.size(), 3u);
  EXPECT_EQ(r.system[0].rfind(kBillingHeaderPrefix, 0), 0u);
  ASSERT_EQ(r.messages.size(), 4u);
  EXPECT_EQ(r.messages[1].role, "system");
  EXPECT_EQ(r.messages[2].content[0].type, ContentBlock::Type::tool_use);
  EXPECT_EQ(r.messages[2].content[0].input["command"], "echo pensieve-ok");
  EXPECT_EQ(r.messages[3].content[0].type, ContentBlock::Type::tool_result);
  EXPECT_EQ(r.messages[3].content[0].text, "pensieve-ok");
  for (const char* name : {"print-mode-hello", "tool-turn-1"})
    EXPECT_NO_THROW(parse_messages_request(fixture_body(name), {})) << name;
}

// A body that is not JSON, or holds a number no double can (1e999), is a
// 400 naming the field where the bad value sits, never a 500.
TEST(ServerRequest, BodyThatIsNotJsonNamesTheFieldWhereItCan) {
  auto refused = [](const std::string& body) -> std::string {
    try {
      parse_request_body(body);
    } catch (const ApiError& e) {
      EXPECT_EQ(e.status(), 400);
      EXPECT_EQ(e.type(), "invalid_request_error");
      return e.what();
    }
    return "(accepted)";
  };
  EXPECT_EQ(refused(R"({"model": "m", "max_tokens": 1e999})"),
            "max_tokens: number out of range (number overflow parsing '1e999')");
  EXPECT_EQ(refused(R"({"messages": [{"role": "user"}, {"content": [1, -1e999]}]})")
                .rfind("messages.1.content.1: number out of range", 0),
            0u);
  EXPECT_EQ(refused(R"({"top_p": NaN})").rfind("top_p: request body is not valid JSON: ", 0), 0u);
  EXPECT_EQ(refused(R"({"seed": -Infinity})").rfind("seed: request body is not valid JSON: ", 0),
            0u);
  EXPECT_EQ(refused("1e999"), "number out of range (number overflow parsing '1e999')");
  // Errors of structure, not of a value, name no field.
  EXPECT_EQ(refused(R"({"a": 1 "b": 2})").rfind("request body is not valid JSON: ", 0), 0u);
  EXPECT_EQ(refused(R"({"a": 1, b: 2})").rfind("request body is not valid JSON: ", 0), 0u);
  // A hostile body nested 100000 deep is refused at 64 levels, naming the
  // start of its path only.
  const std::string deep = refused(R"({"a": )" + std::string(100000, '[') + "NaN");
  EXPECT_EQ(deep.rfind("a.0.0.0.0", 0), 0u) << deep.substr(0, 200);
  EXPECT_NE(deep.find(": nested deeper than 64 levels"), std::string::npos) << deep.substr(0, 200);
  EXPECT_LT(deep.size(), 500u);  // not the 100000 brackets nlohmann quotes
  // A key twice in one object is refused, naming it (parsers disagree on
  // which one wins).
  EXPECT_EQ(refused(R"({"model": "m", "x": {"a": 1, "a": 2}})"), "x.a: duplicate key in a JSON object");
  EXPECT_EQ(refused(R"({"a": [{"b": 1}, {"b": 1, "c": 2, "b": 3}]})"),
            "a.1.b: duplicate key in a JSON object");
  // A string that is not UTF-8, or a lone surrogate, is named by its field.
  EXPECT_EQ(refused("{\"system\": \"a\xff\"}").rfind("system: request body is not valid JSON: ", 0), 0u);
  EXPECT_EQ(refused(R"({"stop_sequences": ["x", "\ud800"]})")
                .rfind("stop_sequences.1: request body is not valid JSON: ", 0),
            0u);
  EXPECT_EQ(parse_request_body(R"({"x": [1, 2.5]})")["x"][1], 2.5);
}

TEST(ServerRequest, ValidationNamesThePath) {
  json b = minimal();
  b["messages"][0]["content"] = json::parse(R"([{"type":"text","text":"a"},{"type":"tool_use","id":"x","name":"f","input":{}}])");
  EXPECT_EQ(parse_error(b), "messages.0.content.1.type: tool_use blocks are only allowed in assistant messages");
  b = minimal();
  b["system"] = json::parse(R"([{"type":"text","text":1}])");
  EXPECT_EQ(parse_error(b), "system.0.text: expected a string, got an integer");
  b = minimal();
  b["tools"] = json::parse(R"([{"name":"f"}])");
  EXPECT_EQ(parse_error(b), "tools.0.input_schema: Field required");
  b = minimal();
  b["tool_choice"] = json::parse(R"({"type":"tool","name":"nope"})");
  EXPECT_EQ(parse_error(b), "tool_choice.name: tool 'nope' is not in tools");
  b = minimal();
  b["thinking"] = json::parse(R"({"type":"enabled"})");
  EXPECT_EQ(parse_error(b), "thinking.budget_tokens: Field required");
  b = minimal();
  b["stop_sequences"] = "STOP";
  EXPECT_EQ(parse_error(b), "stop_sequences: expected an array, got a string");
  b = minimal();
  b["max_tokens"] = 0;
  EXPECT_EQ(parse_error(b), "max_tokens: must be at least 1, got 0");
  b = minimal();
  b["messages"][0]["content"] = json::parse(
      R"([{"type":"tool_result","tool_use_id":"t1","content":[{"type":"image","source":{}}]}])");
  b["messages"].insert(b["messages"].begin(),
                       json::parse(R"({"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"f","input":{}}]})"));
  EXPECT_EQ(parse_error(b), "messages.1.content.0.content.0: image content is not supported: the loaded model is text-only");
  EXPECT_EQ(parse_error(json::array()), "request body must be a JSON object, got an array");
}

TEST(ServerRequest, LenientWhereClientsDiffer) {
  json b = minimal();
  b["temperature"] = nullptr;              // null means unset
  b["max_tokens"] = 5.0;                   // whole float from a JS client
  b["brand_new_field"] = {{"x", 1}};       // unknown fields are ignored
  b["messages"][0]["content"] = json::parse(
      R"([{"type":"text","text":"a","cache_control":{"type":"ephemeral"}},{"type":"mystery_block"},
          {"type":"document","source":{"type":"text","media_type":"text/plain","data":"doc body"}}])");
  MessagesRequest r = parse_messages_request(b, {});
  EXPECT_EQ(r.max_tokens, 5);
  EXPECT_FALSE(r.temperature);
  ASSERT_EQ(r.messages[0].content.size(), 2u);
  EXPECT_EQ(r.messages[0].content[1].text, "doc body");
  // count_tokens has no max_tokens.
  b.erase("max_tokens");
  EXPECT_NO_THROW(parse_messages_request(b, {.require_max_tokens = false}));
}

ModelInfo model(bool native_tools, bool thinking = false) {
  ModelInfo info;
  info.id = "m";
  info.context_size = 1000;
  info.native_tools = native_tools;
  info.thinking = thinking;
  return info;
}

MessagesRequest conversation() {
  return parse_messages_request(json::parse(R"({
    "model": "m", "max_tokens": 10,
    "system": [{"type":"text","text":"x-anthropic-billing-header: cc_version=1;"},
               {"type":"text","text":"Be brief."}],
    "tools": [{"name":"Bash","description":"run","input_schema":{"type":"object"}}],
    "messages": [
      {"role":"user","content":"list files"},
      {"role":"assistant","content":[{"type":"thinking","thinking":"use ls","signature":"s"},
        {"type":"text","text":"Listing."},
        {"type":"tool_use","id":"toolu_1","name":"Bash","input":{"command":"ls"}}]},
      {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":[{"type":"text","text":"a.txt"}]},
        {"type":"text","text":"thanks"}]}]})"), {});
}

TEST(ServerPrompt, NativeToolMessages) {
  TemplateInput in = build_template_input(conversation(), model(true, true));
  EXPECT_EQ(in.messages, json::parse(R"([
    {"role":"system","content":"Be brief."},
    {"role":"user","content":"list files"},
    {"role":"assistant","content":"Listing.","tool_calls":[{"type":"function","id":"toolu_1",
      "function":{"name":"Bash","arguments":{"command":"ls"}}}],"reasoning_content":"use ls"},
    {"role":"tool","tool_call_id":"toolu_1","name":"Bash","content":"a.txt"},
    {"role":"user","content":"thanks"}])"));
  EXPECT_EQ(in.tools, json::parse(R"([{"type":"function","function":{"name":"Bash",
    "description":"run","parameters":{"type":"object"}}}])"));
  EXPECT_TRUE(in.tools_active);
  EXPECT_FALSE(in.thinking);  // not requested
  EXPECT_EQ(in.extra_vars, json::parse(R"({"add_generation_prompt":true,"enable_thinking":false})"));
}

TEST(ServerPrompt, GenericToolText) {
  TemplateInput in = build_template_input(conversation(), model(false));
  EXPECT_TRUE(in.tools.is_null());
  ASSERT_EQ(in.messages.size(), 4u);
  std::string system = in.messages[0]["content"];
  EXPECT_EQ(system.rfind("Be brief.\n\n# Tools", 0), 0u) << system;
  EXPECT_NE(system.find(R"({"name":"Bash","description":"run","parameters":{"type":"object"}})"),
            std::string::npos);
  EXPECT_EQ(in.messages[2]["content"],
            "Listing.\n<tool_call>\n{\"name\":\"Bash\",\"arguments\":{\"command\":\"ls\"}}\n</tool_call>");
  EXPECT_FALSE(in.messages[2].contains("tool_calls"));
  EXPECT_EQ(in.messages[3], json::parse(R"({"role":"user",
    "content":"<tool_response name=\"Bash\">\na.txt\n</tool_response>\nthanks"})"));
}

TEST(ServerPrompt, ToolChoiceAndPrefill) {
  MessagesRequest r = conversation();
  r.tool_choice.type = ToolChoice::Type::none;
  TemplateInput in = build_template_input(r, model(true));
  EXPECT_TRUE(in.tools.is_null());
  EXPECT_FALSE(in.tools_active);

  r.tool_choice.type = ToolChoice::Type::any;
  in = build_template_input(r, model(true));
  EXPECT_NE(in.messages[0]["content"].get<std::string>().find("You must call at least one"),
            std::string::npos);

  r = parse_messages_request(json::parse(R"({"model":"m","max_tokens":3,"messages":[
      {"role":"user","content":"Count"},{"role":"assistant","content":"1, 2,"}]})"), {});
  in = build_template_input(r, model(false));
  EXPECT_EQ(in.prefill, "1, 2,");
  EXPECT_EQ(in.messages.size(), 1u);
  r.messages.back().content[0].text = "1, 2, ";
  EXPECT_THROW(build_template_input(r, model(false)), ApiError);
}

TEST(ServerPrompt, BillingLineRemovedOnly) {
  MessagesRequest a = conversation();
  MessagesRequest b = conversation();
  b.system[0] = "x-anthropic-billing-header: cc_version=2.0.0.zzz; cc_entrypoint=cli;";
  EXPECT_EQ(build_template_input(a, model(true)).messages, build_template_input(b, model(true)).messages);
  b.system[1] = "Be briefer.";
  EXPECT_NE(build_template_input(a, model(true)).messages, build_template_input(b, model(true)).messages);
}

TEST(ServerMessageBuilder, EventsAndFinalMessageAgree) {
  MessageBuilder builder("msg_1", "m");
  std::vector<json> events;
  OutputPiece thinking{OutputPiece::Kind::thinking, "hmm"};
  OutputPiece text{OutputPiece::Kind::text, "Hi"};
  OutputPiece call{OutputPiece::Kind::tool_call, "", "f", json{{"a", 1}}};
  builder.add(thinking, events);
  builder.add(text, events);
  builder.add(text, events);
  builder.add(call, events);
  builder.finish("tool_use", std::nullopt, make_usage(10, 4, 3), events);
  std::vector<std::string> shapes;
  for (const json& e : events)
    shapes.push_back(e["type"].get<std::string>() +
                     (e.contains("index") ? std::to_string(e["index"].get<int>()) : "") +
                     (e.contains("delta") && e["delta"].contains("type") ? ":" + e["delta"]["type"].get<std::string>() : ""));
  EXPECT_EQ(shapes, (std::vector<std::string>{
                        "content_block_start0", "content_block_delta0:thinking_delta",
                        "content_block_delta0:signature_delta", "content_block_stop0",
                        "content_block_start1", "content_block_delta1:text_delta",
                        "content_block_delta1:text_delta", "content_block_stop1",
                        "content_block_start2", "content_block_delta2:input_json_delta",
                        "content_block_stop2", "message_delta", "message_stop"}));
  json m = builder.message();
  EXPECT_EQ(m["content"][0]["signature"], thinking_signature("hmm"));
  EXPECT_EQ(m["content"][1]["text"], "HiHi");
  EXPECT_EQ(m["content"][2]["input"], json({{"a", 1}}));
  EXPECT_EQ(m["usage"], json::parse(R"({"input_tokens":6,"cache_creation_input_tokens":0,
    "cache_read_input_tokens":4,"output_tokens":3})"));
  EXPECT_EQ(events[11]["usage"], m["usage"]);
  EXPECT_EQ(sse_event(events.back()), "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
}

TEST(ServerMessageBuilder, UsageSplitsThePromptIntoReadCreatedAndUncached) {
  // 100 prompt tokens: 48 read from the prefix cache, the last breakpoint
  // after token 80: 32 written, 20 after the breakpoint.
  Usage u = make_usage(100, 48, 7, 80);
  EXPECT_EQ(u.cache_read_input_tokens, 48);
  EXPECT_EQ(u.cache_creation_input_tokens, 32);
  EXPECT_EQ(u.input_tokens, 20);
  EXPECT_EQ(u.output_tokens, 7);
  // No breakpoint: nothing written, the cache still read.
  u = make_usage(100, 48, 7, 0);
  EXPECT_EQ(u.cache_creation_input_tokens, 0);
  EXPECT_EQ(u.input_tokens, 52);
  // A breakpoint inside the cached part writes nothing.
  u = make_usage(100, 48, 7, 32);
  EXPECT_EQ(u.cache_creation_input_tokens, 0);
  EXPECT_EQ(u.input_tokens, 52);
  // Never more than the prompt, never negative.
  u = make_usage(10, 16, 1, 16);
  EXPECT_EQ(u.cache_read_input_tokens, 10);
  EXPECT_EQ(u.cache_creation_input_tokens, 0);
  EXPECT_EQ(u.input_tokens, 0);
}

// Where the last cache_control breakpoint falls in the rendered prompt, in
// Anthropic's order (tools, system, messages), with a renderer that keeps
// content as it is and one that rewrites it.
TEST(ServerPrompt, CacheBreakpointPositions) {
  const auto parse = [](const char* body) {
    return parse_messages_request(json::parse(body), {});
  };
  const RenderFn plain = [](const json& messages, const json* tools, const json&) {
    std::string out = tools ? tools->dump() + "|" : "";
    for (const auto& m : messages) out += "<" + m["role"].get<std::string>() + ">" + m["content"].get<std::string>();
    return out + "<assistant>";
  };
  const ModelInfo info = model(true);
  // On the last user block: just before the generation prompt.
  Prompt p = render_prompt(plain, info, parse(R"({"model":"m","max_tokens":5,"system":"S",
    "messages":[{"role":"user","content":[{"type":"text","text":"hello","cache_control":{"type":"ephemeral"}}]}]})"));
  EXPECT_EQ(p.text, "<system>S<user>hello<assistant>");
  EXPECT_EQ(p.text.substr(0, p.breakpoint_chars), "<system>S<user>hello");
  // On the system prompt only (the later block carries none).
  p = render_prompt(plain, info, parse(R"({"model":"m","max_tokens":5,
    "system":[{"type":"text","text":"S1"},{"type":"text","text":"S2","cache_control":{"type":"ephemeral"}}],
    "messages":[{"role":"user","content":"hello"}]})"));
  EXPECT_EQ(p.text.substr(0, p.breakpoint_chars), "<system>S1\nS2");
  // The last of several: the message's, not the system's.
  p = render_prompt(plain, info, parse(R"({"model":"m","max_tokens":5,
    "system":[{"type":"text","text":"S","cache_control":{"type":"ephemeral"}}],
    "messages":[{"role":"user","content":[{"type":"text","text":"a","cache_control":{"type":"ephemeral"}},
      {"type":"text","text":"b"}]}]})"));
  EXPECT_EQ(p.text.substr(0, p.breakpoint_chars), "<system>S<user>a");
  // A tool's: inside the tools' rendering.
  p = render_prompt(plain, info, parse(R"({"model":"m","max_tokens":5,
    "tools":[{"name":"T","description":"d","input_schema":{"type":"object"},"cache_control":{"type":"ephemeral"}}],
    "messages":[{"role":"user","content":"hello"}]})"));
  EXPECT_LT(p.breakpoint_chars, p.text.find('|'));
  EXPECT_EQ(p.text.substr(p.breakpoint_chars - 1, 1), "d");
  // Top-level cache_control: after the last block.
  p = render_prompt(plain, info, parse(R"({"model":"m","max_tokens":5,"cache_control":{"type":"ephemeral"},
    "messages":[{"role":"user","content":"hello"}]})"));
  EXPECT_EQ(p.text.substr(0, p.breakpoint_chars), "<user>hello");
  // On a tool_use block (no text to follow): the whole prompt.
  p = render_prompt(plain, model(false), parse(R"({"model":"m","max_tokens":5,
    "tools":[{"name":"T","input_schema":{"type":"object"}}],
    "messages":[{"role":"user","content":"hello"},
      {"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"T","input":{},"cache_control":{"type":"ephemeral"}}]},
      {"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"ok"}]}]})"));
  EXPECT_EQ(p.breakpoint_chars, p.text.size());
  // None: 0.
  p = render_prompt(plain, info, parse(R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hello"}]})"));
  EXPECT_EQ(p.breakpoint_chars, 0u);
  // A template that rewrites content (here: upper case) loses the sentinel:
  // the breakpoint falls back to the prompt's end.
  const RenderFn shouting = [&](const json& messages, const json* tools, const json& vars) {
    std::string s = plain(messages, tools, vars);
    for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return s;
  };
  p = render_prompt(shouting, info, parse(R"({"model":"m","max_tokens":5,
    "messages":[{"role":"user","content":[{"type":"text","text":"hello","cache_control":{"type":"ephemeral"}}]}]})"));
  EXPECT_EQ(p.breakpoint_chars, p.text.size());
  // cache_control must be an object.
  EXPECT_THROW(parse(R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":[
    {"type":"text","text":"x","cache_control":"yes"}]}]})"), ApiError);
}

TEST(ServerRequest, MinPExtension) {
  json b = json::parse(R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]})");
  b["min_p"] = 0.1;
  EXPECT_DOUBLE_EQ(*parse_messages_request(b, {}).min_p, 0.1);
  b["min_p"] = 1.5;
  EXPECT_THROW(parse_messages_request(b, {}), ApiError);
}

TEST(ServerAuth, Helpers) {
  EXPECT_TRUE(constant_time_equal("secret", "secret"));
  EXPECT_FALSE(constant_time_equal("secret", "secreT"));
  EXPECT_FALSE(constant_time_equal("secret", "secret2"));
  EXPECT_EQ(presented_key("", "Bearer abc"), "abc");
  EXPECT_EQ(presented_key("k", "Bearer abc"), "k");
  EXPECT_EQ(presented_key("", "Basic abc"), "");
  EXPECT_TRUE(key_accepted("b", {"a", "b"}));
  EXPECT_FALSE(key_accepted("", {"a", ""}));
  for (const char* a : {"127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1", "localhost"})
    EXPECT_TRUE(is_loopback_address(a)) << a;
  for (const char* a : {"0.0.0.0", "10.0.0.1", "::", "example.com", "128.0.0.1"})
    EXPECT_FALSE(is_loopback_address(a)) << a;
}

}  // namespace
}  // namespace pensieve::server
