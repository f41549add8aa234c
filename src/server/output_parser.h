// Incremental parser over the text a model generates, turning it into the
// pieces of an Anthropic answer: text, thinking (a leading <think>...</think>
// when thinking was requested) and tool calls (Qwen/Hermes style
// <tool_call>{"name": ..., "arguments": {...}}</tool_call>). It also finds
// stop sequences. Text that may be the start of a marker or of a stop
// sequence is held back until the next feed decides, so both are recognised
// across token boundaries. A tool call whose JSON does not parse is returned
// as text, never an error.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace pensieve::server {

struct OutputPiece {
  enum class Kind { text, thinking, tool_call };
  Kind kind = Kind::text;
  std::string text;               // text / thinking
  std::string name;               // tool_call
  nlohmann::ordered_json input;   // tool_call: an object
};

struct OutputParserOptions {
  std::vector<std::string> stop_sequences;
  bool tool_calls = false;          // recognise <tool_call> blocks
  bool thinking = false;            // recognise a leading <think> block
  bool starts_in_thinking = false;  // the prompt already opened <think>
};

class OutputParser {
 public:
  explicit OutputParser(OutputParserOptions options);

  // Consumes newly generated text and appends the pieces now certain.
  void feed(std::string_view text, std::vector<OutputPiece>& out);
  // End of generation: flushes whatever is held back.
  void finish(std::vector<OutputPiece>& out);

  // A stop sequence matched; later input is ignored.
  bool stopped() const { return state_ == State::stopped; }
  const std::string& stop_sequence() const { return stop_sequence_; }

 private:
  enum class State { start, thinking, text, tool_call, stopped };
  void run(std::vector<OutputPiece>& out);
  bool step_start();
  bool step_thinking(std::vector<OutputPiece>& out);
  bool step_text(std::vector<OutputPiece>& out);
  bool step_tool_call(std::vector<OutputPiece>& out);
  void emit(OutputPiece::Kind kind, std::string text, std::vector<OutputPiece>& out);

  OutputParserOptions options_;
  State state_;
  std::string pending_;          // input not yet turned into pieces
  bool skip_leading_space_ = false;
  size_t tool_scanned_ = 0;      // bytes of a tool call body already searched for its end
  std::string stop_sequence_;
};

// Parses the inside of a <tool_call> block; false when it is not a call.
bool parse_tool_call_json(std::string_view body, std::string& name, nlohmann::ordered_json& input);

}  // namespace pensieve::server
