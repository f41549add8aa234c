#include "server/message_builder.h"

#include <algorithm>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "server/api_error.h"
#include "server/ids.h"

namespace pensieve::server {

using json = nlohmann::ordered_json;

json Usage::to_json() const {
  return {{"input_tokens", input_tokens},
          {"cache_creation_input_tokens", cache_creation_input_tokens},
          {"cache_read_input_tokens", cache_read_input_tokens},
          {"output_tokens", output_tokens}};
}

Usage make_usage(int64_t n_prompt, int64_t n_cached, int64_t n_output, int64_t n_breakpoint) {
  Usage u;
  u.cache_read_input_tokens = std::clamp<int64_t>(n_cached, 0, n_prompt);
  u.cache_creation_input_tokens =
      std::clamp<int64_t>(n_breakpoint - u.cache_read_input_tokens, 0, n_prompt - u.cache_read_input_tokens);
  u.input_tokens = n_prompt - u.cache_read_input_tokens - u.cache_creation_input_tokens;
  u.output_tokens = n_output;
  return u;
}

std::string thinking_signature(const std::string& thinking) {
  std::string salted = "pensieve-thinking-v1:" + thinking;
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(salted.data()), salted.size(), digest);
  unsigned char b64[4 * ((SHA256_DIGEST_LENGTH + 2) / 3) + 1];
  int n = EVP_EncodeBlock(b64, digest, SHA256_DIGEST_LENGTH);
  return std::string(reinterpret_cast<char*>(b64), n);
}

std::string sse_event(const json& event) {
  return "event: " + event["type"].get<std::string>() + "\ndata: " + dump_json(event) + "\n\n";
}

MessageBuilder::MessageBuilder(std::string id, std::string model)
    : id_(std::move(id)), model_(std::move(model)) {}

json MessageBuilder::envelope(const json& content, const Usage& usage) const {
  json m;
  m["id"] = id_;
  m["type"] = "message";
  m["role"] = "assistant";
  m["model"] = model_;
  m["content"] = content;
  m["stop_reason"] = stop_reason_.empty() ? json(nullptr) : json(stop_reason_);
  m["stop_sequence"] = stop_sequence_ ? json(*stop_sequence_) : json(nullptr);
  m["usage"] = usage.to_json();
  return m;
}

json MessageBuilder::message_start(const Usage& usage) const {
  return {{"type", "message_start"}, {"message", envelope(json::array(), usage)}};
}

void MessageBuilder::close_block(std::vector<json>& events) {
  if (!block_open_) return;
  int index = static_cast<int>(content_.size()) - 1;
  json& block = content_.back();
  if (block["type"] == "thinking") {
    std::string signature = thinking_signature(block["thinking"].get<std::string>());
    block["signature"] = signature;
    events.push_back({{"type", "content_block_delta"},
                      {"index", index},
                      {"delta", {{"type", "signature_delta"}, {"signature", signature}}}});
  }
  events.push_back({{"type", "content_block_stop"}, {"index", index}});
  block_open_ = false;
}

void MessageBuilder::add(const OutputPiece& piece, std::vector<json>& events) {
  if (piece.kind == OutputPiece::Kind::tool_call) {
    close_block(events);
    int index = static_cast<int>(content_.size());
    json block = {{"type", "tool_use"}, {"id", random_id("toolu_")}, {"name", piece.name},
                  {"input", json::object()}};
    events.push_back({{"type", "content_block_start"}, {"index", index}, {"content_block", block}});
    events.push_back({{"type", "content_block_delta"},
                      {"index", index},
                      {"delta", {{"type", "input_json_delta"}, {"partial_json", dump_json(piece.input)}}}});
    events.push_back({{"type", "content_block_stop"}, {"index", index}});
    block["input"] = piece.input;
    content_.push_back(std::move(block));
    has_tool_use_ = true;
    return;
  }
  if (piece.text.empty()) return;
  const bool thinking = piece.kind == OutputPiece::Kind::thinking;
  const char* type = thinking ? "thinking" : "text";
  if (block_open_ && content_.back()["type"] != type) close_block(events);
  if (!block_open_) {
    json block = thinking ? json{{"type", "thinking"}, {"thinking", ""}, {"signature", ""}}
                          : json{{"type", "text"}, {"text", ""}};
    events.push_back({{"type", "content_block_start"},
                      {"index", content_.size()},
                      {"content_block", block}});
    content_.push_back(std::move(block));
    block_open_ = true;
  }
  int index = static_cast<int>(content_.size()) - 1;
  content_.back()[type].get_ref<std::string&>() += piece.text;
  events.push_back({{"type", "content_block_delta"},
                    {"index", index},
                    {"delta", thinking ? json{{"type", "thinking_delta"}, {"thinking", piece.text}}
                                       : json{{"type", "text_delta"}, {"text", piece.text}}}});
}

void MessageBuilder::finish(const std::string& stop_reason,
                            const std::optional<std::string>& stop_sequence, const Usage& usage,
                            std::vector<json>& events) {
  close_block(events);
  stop_reason_ = stop_reason;
  stop_sequence_ = stop_sequence;
  usage_ = usage;
  events.push_back({{"type", "message_delta"},
                    {"delta", {{"stop_reason", stop_reason},
                               {"stop_sequence", stop_sequence ? json(*stop_sequence) : json(nullptr)}}},
                    {"usage", usage.to_json()}});
  events.push_back({{"type", "message_stop"}});
}

json MessageBuilder::message() const { return envelope(content_, usage_); }

}  // namespace pensieve::server
