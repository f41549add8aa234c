// One sequence run straight through a model: what the inspection commands,
// the benchmark and the golden tests use. Prompts are processed in chunks
// of at most `chunk_tokens`, so activation memory stays bounded.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "engine/kv_block_pool.h"
#include "engine/sampler.h"
#include "engine/stop_rule.h"
#include "models/model.h"

namespace pensieve {

class Session {
 public:
  // Allocates the model's KV storage for max_positions. chunk_tokens 0: the
  // backend's step size.
  Session(Model& model, int64_t max_positions, int64_t chunk_tokens = 0);
  ~Session();

  // Runs tokens after those already in the cache. Returns vocab-sized rows:
  // one per token if all_logits, else one for the last token.
  std::vector<float> append(std::span<const int32_t> tokens, bool all_logits);
  int64_t n_tokens() const { return seq_.n_tokens; }
  int64_t max_positions() const { return max_positions_; }

 private:
  Model& model_;
  int64_t max_positions_;
  int64_t chunk_tokens_;
  KvBlockPool pool_;
  KvSequence seq_;
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated; a stop token, if one ended it, comes last
  FinishReason finish = FinishReason::max_tokens;
};

// Generates up to max_new tokens after prompt under the engine's StopRule
// (engine/stop_rule.h): a token in stop_ids ends it (eos).
GenerateResult generate(Session& session, std::span<const int32_t> prompt, int64_t max_new,
                        const std::vector<int32_t>& stop_ids, const SamplingParams& sampling);

}  // namespace pensieve
