// Builds an Anthropic assistant message from parsed output pieces, producing
// the exact stream events (content_block_start/delta/stop with text_delta,
// thinking_delta + signature_delta, input_json_delta; message_delta;
// message_stop) and keeping the accumulated content for the non-streaming
// response, so both answers always agree.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "server/output_parser.h"

namespace pensieve::server {

struct Usage {
  int64_t input_tokens = 0;                 // prompt tokens not read from the cache
  int64_t cache_creation_input_tokens = 0;
  int64_t cache_read_input_tokens = 0;
  int64_t output_tokens = 0;
  nlohmann::ordered_json to_json() const;
};

// Usage as Anthropic counts it, for a prompt of n_prompt tokens of which
// n_cached were read from the prefix cache and the first n_breakpoint lie
// before the request's last cache_control breakpoint:
// cache_read_input_tokens = the cached ones, cache_creation_input_tokens =
// the rest before the breakpoint (what a cache write would cover), and
// input_tokens = the tokens after it. The three add up to the prompt. (The
// prefix cache reads without breakpoints too, so a request with none can
// still read some.)
Usage make_usage(int64_t n_prompt, int64_t n_cached, int64_t n_output, int64_t n_breakpoint = 0);

class MessageBuilder {
 public:
  MessageBuilder(std::string id, std::string model);

  const std::string& id() const { return id_; }
  nlohmann::ordered_json message_start(const Usage& usage) const;

  // Appends the events for one piece (opening/closing blocks as needed).
  void add(const OutputPiece& piece, std::vector<nlohmann::ordered_json>& events);
  // Closes the open block and appends message_delta + message_stop.
  void finish(const std::string& stop_reason, const std::optional<std::string>& stop_sequence,
              const Usage& usage, std::vector<nlohmann::ordered_json>& events);

  bool has_tool_use() const { return has_tool_use_; }
  // The complete message (valid after finish()).
  nlohmann::ordered_json message() const;

 private:
  void close_block(std::vector<nlohmann::ordered_json>& events);
  nlohmann::ordered_json envelope(const nlohmann::ordered_json& content, const Usage& usage) const;

  std::string id_, model_;
  nlohmann::ordered_json content_ = nlohmann::ordered_json::array();
  bool block_open_ = false;
  bool has_tool_use_ = false;
  std::string stop_reason_;
  std::optional<std::string> stop_sequence_;
  Usage usage_;
};

// An opaque, deterministic signature for a thinking block we produced.
std::string thinking_signature(const std::string& thinking);

// "event: <type>\ndata: <json>\n\n"
std::string sse_event(const nlohmann::ordered_json& event);

}  // namespace pensieve::server
