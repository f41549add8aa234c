// Parses an SSE body and checks it against Anthropic's stream grammar,
// rebuilding the message the events describe.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace pensieve::server::test {

struct SseEvent {
  std::string name;
  nlohmann::ordered_json data;
};

inline std::vector<SseEvent> parse_sse(const std::string& body) {
  std::vector<SseEvent> events;
  size_t pos = 0;
  while (pos < body.size()) {
    size_t end = body.find("\n\n", pos);
    if (end == std::string::npos) {
      ADD_FAILURE() << "unterminated SSE event: " << body.substr(pos);
      break;
    }
    std::string chunk = body.substr(pos, end - pos);
    pos = end + 2;
    SseEvent e;
    size_t line_start = 0;
    while (line_start <= chunk.size()) {
      size_t line_end = chunk.find('\n', line_start);
      if (line_end == std::string::npos) line_end = chunk.size();
      std::string line = chunk.substr(line_start, line_end - line_start);
      if (line.rfind("event: ", 0) == 0) e.name = line.substr(7);
      else if (line.rfind("data: ", 0) == 0) e.data = nlohmann::ordered_json::parse(line.substr(6));
      else ADD_FAILURE() << "unexpected SSE line: " << line;
      line_start = line_end + 1;
    }
    EXPECT_EQ(e.name, e.data.value("type", "")) << "event name must equal data.type";
    events.push_back(std::move(e));
  }
  return events;
}

inline std::vector<std::string> event_names(const std::vector<SseEvent>& events) {
  std::vector<std::string> names;
  for (const auto& e : events) names.push_back(e.name);
  return names;
}

// Checks order and indices and returns the message the stream builds
// (content from the deltas, stop_reason and usage from message_delta).
inline nlohmann::ordered_json replay_stream(const std::vector<SseEvent>& events) {
  using json = nlohmann::ordered_json;
  json message;
  if (events.empty() || events[0].name != "message_start") {
    ADD_FAILURE() << "stream must start with message_start";
    return message;
  }
  message = events[0].data["message"];
  EXPECT_EQ(message["content"], json::array());
  EXPECT_TRUE(message["stop_reason"].is_null());
  EXPECT_EQ(message["type"], "message");
  EXPECT_EQ(message["role"], "assistant");
  int open = -1;
  std::string partial_json;
  bool delta_seen = false, stop_seen = false;
  for (size_t i = 1; i < events.size(); ++i) {
    const json& d = events[i].data;
    const std::string& name = events[i].name;
    EXPECT_FALSE(stop_seen) << "event after message_stop: " << name;
    if (name == "ping") continue;
    if (name == "content_block_start") {
      EXPECT_EQ(open, -1) << "block started while another is open";
      EXPECT_FALSE(delta_seen);
      EXPECT_EQ(d["index"], message["content"].size());
      open = d["index"];
      message["content"].push_back(d["content_block"]);
      partial_json.clear();
    } else if (name == "content_block_delta") {
      EXPECT_EQ(d["index"], open);
      if (open < 0) continue;
      json& block = message["content"][open];
      const std::string type = d["delta"]["type"];
      if (type == "text_delta") {
        EXPECT_EQ(block["type"], "text");
        block["text"] = block["text"].get<std::string>() + d["delta"]["text"].get<std::string>();
      } else if (type == "thinking_delta") {
        EXPECT_EQ(block["type"], "thinking");
        block["thinking"] = block["thinking"].get<std::string>() + d["delta"]["thinking"].get<std::string>();
      } else if (type == "signature_delta") {
        EXPECT_EQ(block["type"], "thinking");
        block["signature"] = d["delta"]["signature"];
      } else if (type == "input_json_delta") {
        EXPECT_EQ(block["type"], "tool_use");
        partial_json += d["delta"]["partial_json"].get<std::string>();
      } else {
        ADD_FAILURE() << "unknown delta type " << type;
      }
    } else if (name == "content_block_stop") {
      EXPECT_EQ(d["index"], open);
      if (open >= 0 && message["content"][open]["type"] == "tool_use")
        message["content"][open]["input"] = partial_json.empty() ? json::object() : json::parse(partial_json);
      open = -1;
    } else if (name == "message_delta") {
      EXPECT_EQ(open, -1) << "message_delta with an open block";
      EXPECT_FALSE(delta_seen) << "two message_delta events";
      delta_seen = true;
      message["stop_reason"] = d["delta"]["stop_reason"];
      message["stop_sequence"] = d["delta"]["stop_sequence"];
      for (auto& [k, v] : d["usage"].items()) message["usage"][k] = v;
    } else if (name == "message_stop") {
      EXPECT_TRUE(delta_seen) << "message_stop before message_delta";
      stop_seen = true;
    } else if (name == "error") {
      message["error"] = d["error"];
      stop_seen = true;
    } else {
      ADD_FAILURE() << "unknown event " << name;
    }
  }
  EXPECT_TRUE(stop_seen) << "stream did not end with message_stop or error";
  return message;
}

}  // namespace pensieve::server::test
