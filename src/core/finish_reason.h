// Why a generation ended, from the engine through the server's Backend to
// the HTTP layer (which names it as Anthropic's stop_reason).
#pragma once

#include <string_view>

namespace pensieve {

enum class FinishReason {
  eos,         // a stop token (EOS, end of turn), or a forced tool call completed
  max_tokens,  // max_tokens generated, or the context (or KV pool) is full
  cancelled,   // the client left, or the server stops
};

constexpr std::string_view finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::eos: return "eos";
    case FinishReason::max_tokens: return "max_tokens";
    case FinishReason::cancelled: return "cancelled";
  }
  return "?";
}

}  // namespace pensieve
