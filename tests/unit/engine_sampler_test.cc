// The sampler on crafted logits: greedy is argmax, top-k / top-p / min-p
// never draw outside their cutoffs, and a seed fixes the draws.
#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>
#include <vector>

namespace pensieve {
namespace {

// Logits whose softmax at temperature 1 is `probs`.
std::vector<float> logits_for(const std::vector<double>& probs) {
  std::vector<float> logits;
  for (double p : probs) logits.push_back(static_cast<float>(std::log(p)));
  return logits;
}

// How often each id came up in n draws.
std::map<int32_t, int> draw(const SamplingParams& params, const std::vector<float>& logits, int n) {
  Sampler sampler(params);
  std::map<int32_t, int> counts;
  for (int i = 0; i < n; ++i)
    ++counts[sampler.sample(logits.data(), static_cast<int64_t>(logits.size()))];
  return counts;
}

std::set<int32_t> ids_of(const std::map<int32_t, int>& counts) {
  std::set<int32_t> ids;
  for (const auto& [id, n] : counts) ids.insert(id);
  return ids;
}

// Sorted by probability: id 1 (0.40), 3 (0.30), 4 (0.15), 2 (0.10), 0 (0.05).
const std::vector<double> kProbs = {0.05, 0.40, 0.10, 0.30, 0.15};

TEST(Sampler, TemperatureZeroIsArgmax) {
  SamplingParams greedy;
  greedy.temperature = 0;
  greedy.seed = 3;
  Sampler sampler(greedy);
  const auto logits = logits_for(kProbs);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(sampler.sample(logits.data(), 5), 1);
  // Equal maxima: the lowest id, as torch.argmax.
  const std::vector<float> tie = {0.5f, 2.0f, -1.0f, 2.0f};
  EXPECT_EQ(sampler.sample(tie.data(), 4), 1);
  // top_k 1 is greedy at any temperature.
  SamplingParams top1;
  top1.temperature = 1.5f;
  top1.top_k = 1;
  EXPECT_EQ(draw(top1, logits, 200), (std::map<int32_t, int>{{1, 200}}));
}

TEST(Sampler, TopKDrawsOnlyFromTheKBest) {
  // Nearly flat logits, so without the cut every id would come up; the
  // three best are ids 7, 2 and 5.
  const std::vector<float> logits = {0.0f, 0.1f, 0.9f, 0.2f, 0.3f, 0.8f, 0.4f, 1.0f, 0.5f, 0.6f};
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 3;
  p.seed = 1;
  const auto counts = draw(p, logits, 3000);
  EXPECT_EQ(ids_of(counts), (std::set<int32_t>{2, 5, 7}));
  for (const auto& [id, n] : counts) EXPECT_GT(n, 700) << id;  // about a third each
  p.top_k = 0;
  EXPECT_EQ(ids_of(draw(p, logits, 3000)).size(), 10u);  // the cut is what excluded the rest
}

TEST(Sampler, TopPKeepsTheSmallestSetReachingP) {
  const auto logits = logits_for(kProbs);
  SamplingParams p;
  p.seed = 2;
  p.top_p = 0.6f;  // 0.40 < 0.6 <= 0.40 + 0.30
  auto counts = draw(p, logits, 4000);
  EXPECT_EQ(ids_of(counts), (std::set<int32_t>{1, 3}));
  // Renormalised inside the nucleus: 0.40 / 0.70 = 0.571.
  EXPECT_NEAR(counts[1] / 4000.0, 0.571, 0.04);
  p.top_p = 0.8f;  // 0.70 < 0.8 <= 0.85
  EXPECT_EQ(ids_of(draw(p, logits, 4000)), (std::set<int32_t>{1, 3, 4}));
  p.top_p = 0.3f;  // the best token alone already reaches it
  EXPECT_EQ(ids_of(draw(p, logits, 500)), (std::set<int32_t>{1}));
  p.top_p = 1.0f;
  EXPECT_EQ(ids_of(draw(p, logits, 4000)).size(), 5u);
}

TEST(Sampler, MinPDropsTokensBelowItsShareOfTheBest) {
  const auto logits = logits_for(kProbs);
  SamplingParams p;
  p.seed = 3;
  p.min_p = 0.3f;  // floor 0.3 * 0.40 = 0.12: keeps 0.40, 0.30, 0.15
  EXPECT_EQ(ids_of(draw(p, logits, 4000)), (std::set<int32_t>{1, 3, 4}));
  p.min_p = 0.5f;  // floor 0.20
  EXPECT_EQ(ids_of(draw(p, logits, 4000)), (std::set<int32_t>{1, 3}));
  // With temperature the cut applies to the tempered distribution:
  // at T = 0.5 the probabilities go as p^2 (0.16, 0.09, 0.0225, ...), so
  // min_p 0.3 (floor 0.048) keeps ids 1 and 3 only.
  p.temperature = 0.5f;
  p.min_p = 0.3f;
  EXPECT_EQ(ids_of(draw(p, logits, 4000)), (std::set<int32_t>{1, 3}));
}

TEST(Sampler, SameSeedSameTokensOtherSeedOthers) {
  std::vector<double> flat(50, 1.0 / 50);
  const auto logits = logits_for(flat);
  auto run = [&](uint64_t seed) {
    SamplingParams p;
    p.temperature = 1.0f;
    p.top_p = 0.95f;
    p.seed = seed;
    Sampler sampler(p);
    std::vector<int32_t> out;
    for (int i = 0; i < 100; ++i) out.push_back(sampler.sample(logits.data(), 50));
    return out;
  };
  const auto first = run(7);
  EXPECT_EQ(run(7), first);
  EXPECT_NE(run(8), first);
  EXPECT_GT(std::set<int32_t>(first.begin(), first.end()).size(), 20u);  // really drawn
}

}  // namespace
}  // namespace pensieve
