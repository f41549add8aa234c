// The engine with a real (tiny) model: batching, chunked prompts,
// preemption, cancellation and the block pool returning to full.
#include "engine/engine.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <future>
#include <map>
#include <thread>

#include "core/error.h"
#include "engine/session.h"
#include "support/test_support.h"

namespace pensieve {
namespace {

struct Collected {
  std::vector<int32_t> tokens;
  std::string finish, error;
  int64_t progress_events = 0;
  std::promise<void> done;
};

std::vector<int32_t> make_prompt(int i, int64_t vocab) {
  std::vector<int32_t> p;
  for (int k = 0; k < 5 + 13 * i; ++k) p.push_back(static_cast<int32_t>((i * 977 + k * 31 + 7) % vocab));
  return p;
}

std::vector<int32_t> run_alone(Model& model, const std::vector<int32_t>& prompt, int64_t n) {
  Session session(model, static_cast<int64_t>(prompt.size()) + n);
  SamplingParams greedy;
  greedy.temperature = 0;
  return generate(session, prompt, n, {}, greedy).tokens;
}

EngineRequest request_for(const std::vector<int32_t>& prompt, int64_t max_tokens, Collected* c) {
  EngineRequest r;
  r.prompt = prompt;
  r.max_tokens = max_tokens;
  r.sampling.temperature = 0;
  r.on_event = [c](const EngineEvent& e) {
    switch (e.kind) {
      case EngineEvent::Kind::token: c->tokens.push_back(e.token); break;
      case EngineEvent::Kind::progress: ++c->progress_events; break;
      case EngineEvent::Kind::done: c->finish = e.finish; c->done.set_value(); break;
      case EngineEvent::Kind::error: c->error = e.error; c->done.set_value(); break;
    }
  };
  return r;
}

void wait_idle(Engine& engine) {
  for (int i = 0; i < 500; ++i) {
    const auto s = engine.stats();
    if (s.n_running == 0 && s.n_waiting == 0 && s.n_blocks_free == s.n_blocks_total) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

class EngineTest : public ::testing::TestWithParam<int64_t> {};  // param: KV blocks (0 = plenty)

TEST_P(EngineTest, EightPromptsTogetherMatchEachAlone) {
  auto model = load_model(test::data_path("models/qwen2-tiny-mlx-4bit"), {2});
  const int64_t vocab = model->config().vocab_size;
  std::vector<std::vector<int32_t>> expected;
  for (int i = 0; i < 8; ++i) expected.push_back(run_alone(*model, make_prompt(i, vocab), 12));

  EngineOptions o;
  o.ctx_size = 256;
  o.kv_blocks = GetParam() > 0 ? GetParam() : 128;
  o.max_batch_tokens = 40;  // forces the longer prompts into several chunks
  o.max_running = 8;
  Engine engine(*model, o);
  std::vector<std::unique_ptr<Collected>> results;
  for (int i = 0; i < 8; ++i) {
    results.push_back(std::make_unique<Collected>());
    ASSERT_NE(engine.submit(request_for(make_prompt(i, vocab), 12, results.back().get())), nullptr);
  }
  for (int i = 0; i < 8; ++i) {
    ASSERT_EQ(results[i]->done.get_future().wait_for(std::chrono::seconds(60)),
              std::future_status::ready);
    EXPECT_EQ(results[i]->error, "");
    EXPECT_EQ(results[i]->finish, "max_tokens");
    EXPECT_EQ(results[i]->tokens, expected[i]) << "request " << i;
    EXPECT_GE(results[i]->progress_events, 1);
  }
  wait_idle(engine);
  const auto s = engine.stats();
  EXPECT_EQ(s.n_blocks_free, s.n_blocks_total);
  if (GetParam() > 0) EXPECT_GT(s.n_preemptions, 0) << "the small pool should force preemption";
}

// 12 blocks: not enough for all eight at once, so requests are preempted and resumed.
INSTANTIATE_TEST_SUITE_P(Pools, EngineTest, ::testing::Values(0, 12));

TEST(Engine, CancelStopsAndFreesBlocks) {
  auto model = load_model(test::data_path("models/qwen3-tiny-mlx-4bit"), {2});
  EngineOptions o;
  o.ctx_size = 512;
  o.kv_blocks = 64;
  Engine engine(*model, o);
  Collected c;
  auto handle = engine.submit(request_for(make_prompt(3, 3000), 400, &c));
  ASSERT_NE(handle, nullptr);
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  handle->cancel();
  ASSERT_EQ(c.done.get_future().wait_for(std::chrono::seconds(30)), std::future_status::ready);
  EXPECT_EQ(c.finish, "cancelled");
  EXPECT_LT(c.tokens.size(), 400u);
  wait_idle(engine);
  EXPECT_EQ(engine.stats().n_blocks_free, 64);
}

TEST(Engine, StopsOnStopIdAndRejectsBadPrompts) {
  auto model = load_model(test::data_path("models/phi3-tiny-mlx-4bit"), {2});
  EngineOptions o;
  o.ctx_size = 64;
  o.kv_blocks = 16;
  o.max_queue = 2;
  Engine engine(*model, o);
  const auto prompt = make_prompt(1, 3000);
  const auto alone = run_alone(*model, prompt, 6);
  // The first token that did not appear before it becomes the stop id.
  size_t at = 1;
  while (at < alone.size() && std::find(alone.begin(), alone.begin() + at, alone[at]) != alone.begin() + at) ++at;
  ASSERT_LT(at, alone.size());
  Collected c;
  auto r = request_for(prompt, 6, &c);
  r.stop_ids = {alone[at]};
  ASSERT_NE(engine.submit(std::move(r)), nullptr);
  c.done.get_future().wait();
  EXPECT_EQ(c.finish, "eos");
  EXPECT_EQ(c.tokens, std::vector<int32_t>(alone.begin(), alone.begin() + at));

  Collected unused;
  try {
    engine.submit(request_for(std::vector<int32_t>(65, 5), 1, &unused));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "prompt is too long: 65 tokens > 64 maximum");
  }
  EXPECT_THROW(engine.submit(request_for({}, 1, &unused)), Error);
}

}  // namespace
}  // namespace pensieve
