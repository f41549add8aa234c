// The body of POST /v1/messages (and /v1/messages/count_tokens) parsed into
// C++ structs. Validation errors are ApiError 400 naming the JSON path
// ("messages.1.content.0.type: ..."), as Anthropic's are. Unknown fields
// and null optional fields are ignored; unknown content block types in the
// history are skipped (Claude Code may send newer ones). cache_control marks
// are kept only as positions, for usage (the prefix cache needs none).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace pensieve::server {

struct ContentBlock {
  enum class Type { text, tool_use, tool_result, thinking, redacted_thinking };
  Type type = Type::text;
  std::string text;                       // text; thinking; tool_result content as text
  std::string id;                         // tool_use
  std::string name;                       // tool_use
  nlohmann::ordered_json input;           // tool_use: always an object
  std::string tool_use_id;                // tool_result
  bool is_error = false;                  // tool_result
  std::string signature;                  // thinking
  bool cache_breakpoint = false;          // has cache_control
};

struct Message {
  std::string role;  // "user" | "assistant" | "system"
  std::vector<ContentBlock> content;
};

struct Tool {
  std::string name;
  std::string description;
  nlohmann::ordered_json input_schema;  // JSON Schema object
  bool deferred = false;                // defer_loading: not shown to the model
  bool cache_breakpoint = false;        // has cache_control
};

struct ToolChoice {
  enum class Type { automatic, any, tool, none };
  Type type = Type::automatic;
  std::string name;  // Type::tool
  bool disable_parallel_tool_use = false;
};

enum class ThinkingMode { disabled, enabled, adaptive };

struct MessagesRequest {
  std::string model;
  std::vector<std::string> system;  // the text of each system block, in order
  std::vector<bool> system_cache_breakpoints;  // per system block: has cache_control
  bool cache_at_end = false;        // top-level cache_control: a breakpoint after the last block
  std::vector<Message> messages;
  int64_t max_tokens = 0;           // 0 for count_tokens
  std::vector<std::string> stop_sequences;
  std::optional<double> temperature;
  std::optional<double> top_p;
  std::optional<int64_t> top_k;
  std::optional<double> min_p;      // extension: top-level "min_p" in [0, 1]
  std::optional<uint64_t> seed;     // extension: top-level "seed" integer
  bool stream = false;
  std::vector<Tool> tools;
  ToolChoice tool_choice;
  ThinkingMode thinking = ThinkingMode::disabled;
};

struct ParseOptions {
  bool require_max_tokens = true;  // false for count_tokens
  bool vision = false;             // the model accepts images
};

// The body as JSON; anything that is not (bad syntax, NaN, a number too
// large for a double like 1e999) is a 400 naming the field where it can.
nlohmann::ordered_json parse_request_body(const std::string& body);

MessagesRequest parse_messages_request(const nlohmann::ordered_json& body,
                                       const ParseOptions& options);

}  // namespace pensieve::server
