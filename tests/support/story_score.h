// stories260K's reference story scored by a model: the mean log-likelihood
// of its tokens, and the greedy story the model writes itself from BOS
// (the drift measures of tests/models).
#pragma once

#include <algorithm>
#include <cmath>
#include <span>
#include <string>
#include <vector>

#include "engine/session.h"
#include "models/model.h"

namespace pensieve::test {

struct StoryScore {
  double mean_log_likelihood = 0;  // of the story's tokens after the first
  std::vector<int32_t> greedy;     // as many tokens from the story's first
};

inline StoryScore score_story(const std::string& dir, const std::vector<int32_t>& story,
                              const LoadOptions& options) {
  auto model = load_model(dir, options);
  const int64_t vocab = model->config().vocab_size;
  StoryScore out;
  {
    Session s(*model, static_cast<int64_t>(story.size()));
    const auto logits = s.append(story, true);
    for (size_t t = 0; t + 1 < story.size(); ++t) {
      const float* row = logits.data() + t * vocab;
      const double top = *std::max_element(row, row + vocab);
      double z = 0;
      for (int64_t v = 0; v < vocab; ++v) z += std::exp(row[v] - top);
      out.mean_log_likelihood += row[story[t + 1]] - top - std::log(z);
    }
    out.mean_log_likelihood /= static_cast<double>(story.size() - 1);
  }
  Session s(*model, static_cast<int64_t>(story.size()) + 1);
  SamplingParams greedy;
  greedy.temperature = 0;
  out.greedy = generate(s, std::span<const int32_t>(story).first(1), static_cast<int64_t>(story.size()) - 1,
                        {}, greedy).tokens;
  return out;
}

}  // namespace pensieve::test
