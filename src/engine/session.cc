#include "engine/session.h"

#include <algorithm>

#include "core/error.h"
#include "core/kv_geometry.h"

namespace pensieve {

Session::Session(Model& model, int64_t max_positions, int64_t chunk_tokens)
    : model_(model),
      max_positions_(max_positions),
      chunk_tokens_(chunk_tokens > 0 ? chunk_tokens : model.backend().step_tokens()),
      pool_((max_positions + kKvBlockTokens - 1) / kKvBlockTokens) {
  model_.allocate_kv(pool_.n_total());
}

Session::~Session() = default;

std::vector<float> Session::append(std::span<const int32_t> tokens, bool all_logits) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (seq_.n_tokens + n > max_positions_) {
    fail(ErrorKind::resource, "prompt is too long: {} tokens > {} maximum", seq_.n_tokens + n,
         max_positions_);
  }
  if (!reserve_blocks(pool_, seq_, seq_.n_tokens + n)) {
    fail(ErrorKind::resource, "out of KV cache blocks");
  }
  std::vector<float> logits;
  for (int64_t b = 0; b < n; b += chunk_tokens_) {
    const int64_t e = std::min(n, b + chunk_tokens_);
    ForwardSeq fs;
    fs.tokens = tokens.subspan(b, e - b);
    fs.block_table = seq_.blocks.data();
    fs.n_past = seq_.n_tokens;
    fs.all_logits = all_logits;
    fs.n_planned = seq_.n_tokens - b + n;
    const bool want = all_logits || e == n;
    if (want) {
      model_.forward(std::span<const ForwardSeq>(&fs, 1), &logits);
    } else {
      std::vector<float> discard;
      model_.forward(std::span<const ForwardSeq>(&fs, 1), &discard);
    }
    seq_.n_tokens += e - b;
  }
  return logits;
}

GenerateResult generate(Session& session, std::span<const int32_t> prompt, int64_t max_new,
                        const std::vector<int32_t>& stop_ids, const SamplingParams& sampling) {
  GenerateResult result;
  if (prompt.empty()) fail("generate needs at least one prompt token");
  if (max_new <= 0) return result;
  const StopRule rule{stop_ids, max_new, session.max_positions()};
  Sampler sampler(sampling);
  std::vector<float> logits = session.append(prompt, false);
  const int64_t n_vocab = static_cast<int64_t>(logits.size());
  for (;;) {
    const int32_t tok = sampler.sample(logits.data(), n_vocab);
    result.tokens.push_back(tok);
    if (rule.is_stop(tok)) {
      result.finish = FinishReason::eos;
      break;
    }
    // The sequence holds the token once appended; the limit counts it.
    const auto n_generated = static_cast<int64_t>(result.tokens.size());
    if (auto end = rule.after_token(n_generated, session.n_tokens() + 1)) {
      result.finish = *end;
      break;
    }
    const int32_t one[1] = {tok};
    logits = session.append(one, false);
  }
  return result;
}

}  // namespace pensieve
