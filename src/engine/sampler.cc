#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace pensieve {

int32_t argmax(const float* logits, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i) {
    if (logits[i] > logits[best]) best = i;
  }
  return static_cast<int32_t>(best);
}

int32_t Sampler::sample(const float* logits, int64_t n) {
  if (params_.temperature <= 0.0f || params_.top_k == 1) return argmax(logits, n);
  std::vector<int32_t> ids(n);
  std::iota(ids.begin(), ids.end(), 0);
  int64_t keep = n;
  if (params_.top_k > 0 && params_.top_k < n) {
    keep = params_.top_k;
    std::partial_sort(ids.begin(), ids.begin() + keep, ids.end(),
                      [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  } else {
    std::sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  }
  const float inv_t = 1.0f / params_.temperature;
  const float max_logit = logits[ids[0]];
  std::vector<double> probs(keep);
  double sum = 0;
  for (int64_t i = 0; i < keep; ++i) {
    probs[i] = std::exp(static_cast<double>((logits[ids[i]] - max_logit) * inv_t));
    sum += probs[i];
  }
  // min-p: drop tokens below min_p * p(best); top-p: smallest prefix with mass >= top_p.
  int64_t cut = keep;
  if (params_.min_p > 0.0f) {
    const double floor = params_.min_p * probs[0];
    cut = 1;
    while (cut < keep && probs[cut] >= floor) ++cut;
  }
  if (params_.top_p < 1.0f) {
    double acc = 0;
    int64_t i = 0;
    for (; i < cut; ++i) {
      acc += probs[i] / sum;
      if (acc >= params_.top_p) {
        ++i;
        break;
      }
    }
    cut = std::max<int64_t>(1, std::min(cut, i));
  }
  std::discrete_distribution<int64_t> dist(probs.begin(), probs.begin() + cut);
  return ids[dist(rng_)];
}

}  // namespace pensieve
