// The one rule that ends a generation, shared by the engine (serve) and
// generate(): after each sampled token, a stop id ends it (the stop token
// is not output: the engine reports no token for it, generate() returns it
// last so the caller sees which one), else max_tokens generated or a full
// sequence do.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <vector>

#include "core/finish_reason.h"

namespace pensieve {

struct StopRule {
  std::vector<int32_t> stop_ids;  // token ids, the same width as the tokens themselves
  int64_t max_tokens = 0;         // generated tokens, the stop token not counted
  int64_t max_positions = 0;      // prompt + generated; 0 = no limit

  bool is_stop(int32_t token) const {
    return std::find(stop_ids.begin(), stop_ids.end(), token) != stop_ids.end();
  }
  // After a generated token (not a stop) was appended.
  std::optional<FinishReason> after_token(int64_t n_generated, int64_t n_positions) const {
    if (n_generated >= max_tokens || (max_positions > 0 && n_positions >= max_positions))
      return FinishReason::max_tokens;
    return std::nullopt;
  }
};

}  // namespace pensieve
