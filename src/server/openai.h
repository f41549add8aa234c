// OpenAI's Chat Completions API (POST /v1/chat/completions) on the same
// engine: the request is translated into a Messages request, and the
// Messages answer (a message, or its stream of events) back into OpenAI's
// chat.completion and chat.completion.chunk objects. The engine, prompt
// rendering, tool-call parsing and the grammar are the Messages API's.
//
// - messages: system/developer become system text; user content is a string
//   or text parts; an assistant's tool_calls become tool_use blocks (their
//   arguments must be JSON objects); `tool` messages become tool_result
//   blocks of one user turn.
// - tools (type "function"), tool_choice none/auto/required/{function}.
// - response_format json_schema / json_object: the answer is decoded under
//   the schema's grammar (as a forced call of a tool holding the schema) and
//   returned as the message content.
// - stop, temperature, top_p, seed, max_tokens / max_completion_tokens
//   (default: the rest of the context), n = 1 only, stream with
//   stream_options.include_usage.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "server/api_error.h"
#include "server/request.h"

namespace pensieve::server {

struct ChatRequest {
  MessagesRequest messages;     // max_tokens 0: not given (the rest of the context)
  bool include_usage = false;   // stream_options.include_usage
  bool json_response = false;   // response_format: the forced tool's input is the content
};

// ApiError 400 naming the field for what this server cannot take.
ChatRequest parse_chat_request(const nlohmann::ordered_json& body);

// OpenAI's finish_reason for a Messages stop_reason.
std::string finish_reason(const std::string& stop_reason);

// A finished Messages answer (MessageBuilder::message()) as a chat.completion.
nlohmann::ordered_json chat_completion(const nlohmann::ordered_json& message, const std::string& id,
                                       int64_t created, bool json_response);

// A Messages stream's events as chat.completion.chunk objects.
class ChatChunker {
 public:
  ChatChunker(std::string id, std::string model, int64_t created, bool include_usage, bool json_response);
  // The chunks one Messages event becomes (often none).
  void add(const nlohmann::ordered_json& event, std::vector<nlohmann::ordered_json>& chunks);

 private:
  nlohmann::ordered_json chunk(nlohmann::ordered_json delta, const nlohmann::json& finish) const;
  std::string id_, model_;
  int64_t created_ = 0;
  bool include_usage_ = false, json_response_ = false;
  int64_t n_prompt_ = 0, n_cached_ = 0;
  std::string block_type_;  // of the open content block
  int tool_index_ = -1;     // OpenAI's index of the open tool call
};

// OpenAI's error object for an error this server answers.
nlohmann::ordered_json openai_error(const ApiError& e);

// The OpenAI usage object from a Messages usage object.
nlohmann::ordered_json openai_usage(const nlohmann::ordered_json& usage);

}  // namespace pensieve::server
