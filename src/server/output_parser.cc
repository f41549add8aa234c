#include "server/output_parser.h"

#include <algorithm>

namespace pensieve::server {
namespace {

constexpr std::string_view kThinkOpen = "<think>";
constexpr std::string_view kThinkClose = "</think>";
constexpr std::string_view kToolOpen = "<tool_call>";
constexpr std::string_view kToolClose = "</tool_call>";

bool is_space(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

size_t first_non_space(std::string_view s) {
  size_t i = 0;
  while (i < s.size() && is_space(s[i])) ++i;
  return i;
}

// Start of the trailing whitespace run (s.size() when there is none).
size_t trailing_space_start(std::string_view s) {
  size_t i = s.size();
  while (i > 0 && is_space(s[i - 1])) --i;
  return i;
}

// Moves a cut point back over the whitespace right before it.
size_t before_space(std::string_view s, size_t cut) {
  while (cut > 0 && is_space(s[cut - 1])) --cut;
  return cut;
}

// Smallest p such that s[p:] is a non-empty proper prefix of marker, else s.size().
size_t partial_match_start(std::string_view s, std::string_view marker) {
  size_t from = s.size() >= marker.size() ? s.size() - marker.size() + 1 : 0;
  for (size_t p = from; p < s.size(); ++p)
    if (marker.substr(0, s.size() - p) == s.substr(p)) return p;
  return s.size();
}

}  // namespace

bool parse_tool_call_json(std::string_view body, std::string& name, nlohmann::ordered_json& input) {
  auto call = nlohmann::ordered_json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!call.is_object()) return false;
  auto n = call.find("name");
  if (n == call.end() || !n->is_string() || n->get_ref<const std::string&>().empty()) return false;
  nlohmann::ordered_json args = nlohmann::ordered_json::object();
  for (const char* key : {"arguments", "parameters", "input"}) {
    auto a = call.find(key);
    if (a == call.end() || a->is_null()) continue;
    args = *a;
    break;
  }
  // Some models write the arguments as a JSON string.
  if (args.is_string())
    args = nlohmann::ordered_json::parse(args.get<std::string>(), nullptr, false);
  if (!args.is_object()) return false;
  name = n->get<std::string>();
  input = std::move(args);
  return true;
}

OutputParser::OutputParser(OutputParserOptions options) : options_(std::move(options)) {
  if (options_.thinking && options_.starts_in_thinking) {
    state_ = State::thinking;
    skip_leading_space_ = true;
  } else {
    state_ = options_.thinking ? State::start : State::text;
  }
}

void OutputParser::emit(OutputPiece::Kind kind, std::string text, std::vector<OutputPiece>& out) {
  if (text.empty()) return;
  // Consecutive text reaching the caller in one feed is one piece.
  if (!out.empty() && out.back().kind == kind && kind != OutputPiece::Kind::tool_call) {
    out.back().text += text;
    return;
  }
  OutputPiece piece;
  piece.kind = kind;
  piece.text = std::move(text);
  out.push_back(std::move(piece));
}

void OutputParser::feed(std::string_view text, std::vector<OutputPiece>& out) {
  if (state_ == State::stopped) return;
  pending_.append(text);
  run(out);
}

void OutputParser::run(std::vector<OutputPiece>& out) {
  for (;;) {
    bool progressed = false;
    switch (state_) {
      case State::start: progressed = step_start(); break;
      case State::thinking: progressed = step_thinking(out); break;
      case State::text: progressed = step_text(out); break;
      case State::tool_call: progressed = step_tool_call(out); break;
      case State::stopped: return;
    }
    if (!progressed) return;
  }
}

// Waits until the output is known to open with <think> (after optional
// whitespace) or not.
bool OutputParser::step_start() {
  std::string_view rest = std::string_view(pending_).substr(first_non_space(pending_));
  if (rest.size() < kThinkOpen.size() && kThinkOpen.substr(0, rest.size()) == rest) return false;
  if (rest.substr(0, kThinkOpen.size()) == kThinkOpen) {
    pending_.erase(0, pending_.size() - rest.size() + kThinkOpen.size());
    state_ = State::thinking;
    skip_leading_space_ = true;
  } else {
    state_ = State::text;
  }
  return true;
}

bool OutputParser::step_thinking(std::vector<OutputPiece>& out) {
  if (skip_leading_space_) {
    pending_.erase(0, first_non_space(pending_));
    if (pending_.empty()) return false;
    if (!std::string_view(pending_).starts_with(kThinkClose)) skip_leading_space_ = false;
  }
  size_t close = pending_.find(kThinkClose);
  if (close != std::string::npos) {
    std::string_view thought(pending_.data(), close);
    emit(OutputPiece::Kind::thinking, std::string(thought.substr(0, trailing_space_start(thought))), out);
    pending_.erase(0, close + kThinkClose.size());
    state_ = State::text;
    skip_leading_space_ = true;
    return true;
  }
  // Hold back a possible "</think>" start and trailing whitespace (trimmed at the close).
  size_t keep = before_space(pending_, partial_match_start(pending_, kThinkClose));
  emit(OutputPiece::Kind::thinking, pending_.substr(0, keep), out);
  pending_.erase(0, keep);
  return false;
}

bool OutputParser::step_text(std::vector<OutputPiece>& out) {
  if (skip_leading_space_) {
    pending_.erase(0, first_non_space(pending_));
    if (pending_.empty()) return false;
    skip_leading_space_ = false;
  }
  // The earliest complete marker: a stop sequence or a tool call opening.
  size_t match = std::string::npos, match_len = 0;
  const std::string* stop = nullptr;
  for (const std::string& s : options_.stop_sequences) {
    size_t at = pending_.find(s);
    if (at < match) match = at, match_len = s.size(), stop = &s;
  }
  if (options_.tool_calls) {
    size_t at = pending_.find(kToolOpen);
    if (at < match) match = at, match_len = kToolOpen.size(), stop = nullptr;
  }
  if (match != std::string::npos) {
    std::string_view before(pending_.data(), match);
    if (stop) {
      emit(OutputPiece::Kind::text, std::string(before), out);
      stop_sequence_ = *stop;
      state_ = State::stopped;
      pending_.clear();
      return false;
    }
    emit(OutputPiece::Kind::text, std::string(before.substr(0, trailing_space_start(before))), out);
    pending_.erase(0, match + match_len);
    state_ = State::tool_call;
    tool_scanned_ = 0;
    return true;
  }
  size_t keep = pending_.size();
  for (const std::string& s : options_.stop_sequences) keep = std::min(keep, partial_match_start(pending_, s));
  if (options_.tool_calls) {
    // Whitespace right before a tool call is dropped, so it waits for what follows.
    keep = std::min(keep, before_space(pending_, partial_match_start(pending_, kToolOpen)));
  }
  emit(OutputPiece::Kind::text, pending_.substr(0, keep), out);
  pending_.erase(0, keep);
  return false;
}

bool OutputParser::step_tool_call(std::vector<OutputPiece>& out) {
  // A call can be long (a whole file for a Write tool): search only the new text.
  size_t from = tool_scanned_ >= kToolClose.size() ? tool_scanned_ - kToolClose.size() + 1 : 0;
  size_t close = pending_.find(kToolClose, from);
  if (close == std::string::npos) {
    tool_scanned_ = pending_.size();
    return false;
  }
  tool_scanned_ = 0;
  std::string_view body(pending_.data(), close);
  OutputPiece call;
  call.kind = OutputPiece::Kind::tool_call;
  if (parse_tool_call_json(body, call.name, call.input)) {
    out.push_back(std::move(call));
    skip_leading_space_ = true;
  } else {
    emit(OutputPiece::Kind::text,
         std::string(kToolOpen) + std::string(body) + std::string(kToolClose), out);
  }
  pending_.erase(0, close + kToolClose.size());
  state_ = State::text;
  return true;
}

void OutputParser::finish(std::vector<OutputPiece>& out) {
  switch (state_) {
    case State::start:
    case State::text:
      if (skip_leading_space_) pending_.erase(0, first_non_space(pending_));
      emit(OutputPiece::Kind::text, pending_, out);
      break;
    case State::thinking:
      emit(OutputPiece::Kind::thinking, pending_.substr(0, trailing_space_start(pending_)), out);
      break;
    case State::tool_call:
      // Cut off inside a call (max_tokens): what was written stays visible as text.
      emit(OutputPiece::Kind::text, std::string(kToolOpen) + pending_, out);
      break;
    case State::stopped: break;
  }
  pending_.clear();
  if (state_ != State::stopped) state_ = State::text;
}

}  // namespace pensieve::server
