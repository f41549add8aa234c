// Turning a row of logits into the next token.
#pragma once

#include <cstdint>
#include <random>

namespace pensieve {

struct SamplingParams {
  float temperature = 1.0f;  // 0 = greedy
  float top_p = 1.0f;
  int top_k = 0;  // 0 = off
  float min_p = 0.0f;
  uint64_t seed = 0;
};

// Greedy picks the lowest id among equal maxima (as torch.argmax does).
int32_t argmax(const float* logits, int64_t n);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {}
  int32_t sample(const float* logits, int64_t n);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
};

}  // namespace pensieve
