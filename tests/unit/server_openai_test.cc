// The OpenAI face's translation (server/openai.h): Chat Completions requests
// into Messages requests, Messages answers and events back into OpenAI's
// objects, and the 400s naming the field for what it cannot take.
#include <gtest/gtest.h>

#include "server/openai.h"

namespace pensieve::server {
namespace {

using json = nlohmann::ordered_json;

std::string error_of(const json& body) {
  try {
    parse_chat_request(body);
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 400);
    return e.what();
  }
  return "(no error)";
}

TEST(OpenAiRequest, MessagesToolsAndToolResultsBecomeOneConversation) {
  const json body = json::parse(R"({
    "model": "m", "max_completion_tokens": 50, "max_tokens": 7, "temperature": 0.5, "seed": 3,
    "stop": "END", "stream": true, "stream_options": {"include_usage": true},
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}},
              {"type": "function", "function": {"name": "g"}}],
    "tool_choice": "required",
    "messages": [
      {"role": "developer", "content": "Be brief."},
      {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
      {"role": "assistant", "content": null, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"x\": 1}"}},
        {"id": "c2", "type": "function", "function": {"name": "g", "arguments": ""}}]},
      {"role": "tool", "tool_call_id": "c1", "content": "one"},
      {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "two"}]},
      {"role": "user", "content": "thanks"}
    ]})");
  const ChatRequest c = parse_chat_request(body);
  const MessagesRequest& r = c.messages;
  EXPECT_EQ(r.system, std::vector<std::string>{"Be brief."});
  ASSERT_EQ(r.messages.size(), 3u);
  EXPECT_EQ(r.messages[0].content[0].text, "ab");
  ASSERT_EQ(r.messages[1].content.size(), 2u);
  EXPECT_EQ(r.messages[1].content[0].type, ContentBlock::Type::tool_use);
  EXPECT_EQ(r.messages[1].content[0].input, json({{"x", 1}}));
  EXPECT_EQ(r.messages[1].content[1].input, json::object());
  // Both results and the next user text: one user turn.
  ASSERT_EQ(r.messages[2].content.size(), 3u);
  EXPECT_EQ(r.messages[2].content[0].tool_use_id, "c1");
  EXPECT_EQ(r.messages[2].content[1].text, "two");
  EXPECT_EQ(r.messages[2].content[2].text, "thanks");
  EXPECT_EQ(r.max_tokens, 50);  // max_completion_tokens wins over max_tokens
  EXPECT_EQ(r.stop_sequences, std::vector<std::string>{"END"});
  EXPECT_EQ(r.tool_choice.type, ToolChoice::Type::any);
  EXPECT_EQ(r.tools[1].input_schema["type"], "object");
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(c.include_usage);
  EXPECT_FALSE(c.json_response);
}

TEST(OpenAiRequest, ResponseFormatIsAForcedCallOfTheSchema) {
  const ChatRequest c = parse_chat_request(json::parse(
      R"({"model": "m", "messages": [{"role": "user", "content": "x"}],
          "response_format": {"type": "json_schema", "json_schema": {"name": "dog",
            "schema": {"type": "object", "properties": {"name": {"type": "string"}}}}}})"));
  EXPECT_TRUE(c.json_response);
  ASSERT_EQ(c.messages.tools.size(), 1u);
  EXPECT_EQ(c.messages.tools[0].name, "dog");
  EXPECT_EQ(c.messages.tool_choice.type, ToolChoice::Type::tool);
  EXPECT_EQ(c.messages.tool_choice.name, "dog");
  EXPECT_EQ(c.messages.max_tokens, 0);  // not given: the rest of the context
}

TEST(OpenAiRequest, WhatItCannotTakeIsA400NamingTheField) {
  const auto with = [](const std::string& extra) {
    return json::parse(R"({"model": "m", "messages": [{"role": "user", "content": "x"}])" + extra + "}");
  };
  EXPECT_EQ(error_of(with(R"(, "n": 3)")), "n: only 1 is supported (one choice per request)");
  EXPECT_EQ(error_of(with(R"(, "temperature": 3)")), "temperature: must be between 0 and 2");
  EXPECT_EQ(error_of(with(R"(, "max_tokens": 0)")), "max_tokens: must be a positive integer");
  EXPECT_EQ(error_of(with(R"(, "tool_choice": "required")")), "tool_choice: needs tools");
  EXPECT_EQ(error_of(with(R"(, "logprobs": true)")), "logprobs: is not supported");
  EXPECT_EQ(error_of(with(R"(, "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "array"}}})")),
            "response_format.json_schema.schema: must describe a JSON object (\"type\": \"object\") on this server");
  EXPECT_EQ(error_of(json::parse(R"({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]})")),
            "messages.0.content.0.type: 'image_url' is not supported: this server takes text parts only");
  EXPECT_EQ(error_of(json::parse(
                R"({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "[1]"}}]}]})")),
            "messages.0.tool_calls.0.function.arguments: must be a JSON object");
  EXPECT_EQ(error_of(json::parse(R"({"model": "m", "messages": [{"role": "system", "content": "s"}]})")),
            "messages: must hold a user message, not only system messages");
  EXPECT_EQ(error_of(json::parse(R"({"messages": []})")), "model: is required");
}

TEST(OpenAiAnswer, AMessageBecomesAChatCompletion) {
  const json message = json::parse(R"({"id": "msg_1", "model": "m", "stop_reason": "tool_use",
    "content": [{"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "t1", "name": "f", "input": {"x": 1}}],
    "usage": {"input_tokens": 3, "cache_read_input_tokens": 10, "cache_creation_input_tokens": 2, "output_tokens": 5}})");
  const json c = chat_completion(message, "chatcmpl-1", 7, false);
  EXPECT_EQ(c["object"], "chat.completion");
  const json& choice = c["choices"][0];
  EXPECT_EQ(choice["finish_reason"], "tool_calls");
  EXPECT_EQ(choice["message"]["content"], "Let me look.");
  EXPECT_EQ(choice["message"]["tool_calls"][0]["function"]["arguments"], "{\"x\":1}");
  EXPECT_EQ(c["usage"]["prompt_tokens"], 15);
  EXPECT_EQ(c["usage"]["prompt_tokens_details"]["cached_tokens"], 10);
  EXPECT_EQ(c["usage"]["total_tokens"], 20);
  // As a json response the call's input is the content.
  const json j = chat_completion(message, "chatcmpl-1", 7, true);
  EXPECT_EQ(j["choices"][0]["message"]["content"], "Let me look.{\"x\":1}");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_FALSE(j["choices"][0]["message"].contains("tool_calls"));
}

TEST(OpenAiAnswer, StreamEventsBecomeChunks) {
  ChatChunker chunker("chatcmpl-1", "m", 7, /*include_usage=*/true, /*json_response=*/false);
  std::vector<json> out;
  for (const char* e : {
           R"({"type": "message_start", "message": {"usage": {"input_tokens": 4, "cache_read_input_tokens": 6}}})",
           R"({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})",
           R"({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}})",
           R"({"type": "content_block_stop", "index": 0})",
           R"({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "t1", "name": "f", "input": {}}})",
           R"({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"x\""}})",
           R"({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ": 1}"}})",
           R"({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}})",
           R"({"type": "message_stop"})"})
    chunker.add(json::parse(e), out);
  ASSERT_EQ(out.size(), 7u);
  EXPECT_EQ(out[0]["choices"][0]["delta"], json({{"role", "assistant"}, {"content", ""}}));
  EXPECT_EQ(out[1]["choices"][0]["delta"]["content"], "Hi");
  EXPECT_EQ(out[2]["choices"][0]["delta"]["tool_calls"][0]["id"], "t1");
  EXPECT_EQ(out[2]["choices"][0]["delta"]["tool_calls"][0]["index"], 0);
  EXPECT_EQ(out[3]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"], "{\"x\"");
  EXPECT_EQ(out[5]["choices"][0]["finish_reason"], "tool_calls");
  EXPECT_TRUE(out[6]["choices"].empty());
  EXPECT_EQ(out[6]["usage"]["prompt_tokens"], 10);
  EXPECT_EQ(out[6]["usage"]["completion_tokens"], 9);
}

}  // namespace
}  // namespace pensieve::server
