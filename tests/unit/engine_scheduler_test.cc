// The engine's scheduler and prefix cache with a fake model (fake_model.h):
// sharing, reuse after finish, cancellation and preemption, LRU eviction,
// budget accounting, per-request sampling, fairness (decoders keep their
// token per step, first come first served, no starvation under memory
// pressure) and the pool back to full.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <numeric>
#include <thread>

#include "core/error.h"
#include "engine/engine.h"
#include "support/wait_until.h"
#include "unit/fake_model.h"

namespace pensieve {
namespace {

constexpr int64_t B = kKvBlockTokens;

struct Collected {
  std::vector<int32_t> tokens;
  std::atomic<int64_t> n_tokens{0};  // readable while the engine runs
  std::vector<EngineEvent> events;
  std::string finish, error;
  std::promise<void> done;
  std::shared_future<void> done_future = done.get_future().share();
  void wait() {
    ASSERT_EQ(done_future.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  }
  int64_t n_cached() const { return events.empty() ? -1 : events.back().n_cached; }
};

EngineRequest request_for(std::vector<int32_t> prompt, int64_t max_tokens, Collected* c,
                          SamplingParams sampling = {}) {
  EngineRequest r;
  r.prompt = std::move(prompt);
  r.max_tokens = max_tokens;
  r.sampling = sampling;
  if (sampling.seed == 0 && sampling.temperature == 1.0f) r.sampling.temperature = 0;
  r.on_event = [c](const EngineEvent& e) {
    c->events.push_back(e);
    switch (e.kind) {
      case EngineEvent::Kind::token: c->tokens.push_back(e.token); ++c->n_tokens; break;
      case EngineEvent::Kind::progress: break;
      case EngineEvent::Kind::done: c->finish = finish_reason_name(e.finish); c->done.set_value(); break;
      case EngineEvent::Kind::error: c->error = e.error; c->done.set_value(); break;
    }
  };
  return r;
}

std::vector<int32_t> prompt_of(int seed, int64_t n, int64_t vocab = 97) {
  std::vector<int32_t> p(n);
  for (int64_t i = 0; i < n; ++i) p[i] = static_cast<int32_t>((seed * 131 + i * 17 + 3) % vocab);
  return p;
}

std::vector<int32_t> concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

void wait_idle(Engine& engine) {
  const bool idle = test::wait_until([&] {
    const auto s = engine.stats();
    return s.n_running == 0 && s.n_waiting == 0 && s.n_blocks_used == 0;
  });
  const auto s = engine.stats();
  EXPECT_TRUE(idle) << "engine not idle: " << s.n_running << " running, " << s.n_waiting
                    << " waiting, " << s.n_blocks_used << " blocks in use";
}

// Runs one request alone on a fresh engine with the cache off: the reference.
std::vector<int32_t> run_alone(const std::vector<int32_t>& prompt, int64_t n,
                               SamplingParams sampling = {}) {
  test::FakeModel model;
  EngineOptions o;
  o.kv_blocks = 64;
  o.ctx_size = 512;
  o.prefix_cache = false;
  Engine engine(model, o);
  Collected c;
  engine.submit(request_for(prompt, n, &c, sampling));
  c.wait();
  return c.tokens;
}

// Keeps the engine inside the forward of a one-token warm-up request until
// release(), so that everything a test submits meanwhile is waiting, in
// order, when scheduling resumes: the steps that follow are the same on
// every run. Call in_forward() first thing in FakeModel::on_forward.
class HoldFirstForward {
 public:
  void start(Engine& engine) {
    engine.submit(request_for({1}, 1, &warmup_));
    ASSERT_EQ(entered_.get_future().wait_for(test::kWaitDeadline), std::future_status::ready)
        << "the engine never ran the warm-up request";
  }
  // True in the warm-up's forward (after the hold), false in every other.
  // The hold ends after a while even without release(), so that a test
  // that fails before it can still shut its engine down.
  bool in_forward() {
    if (held_) return false;
    held_ = true;
    entered_.set_value();
    (void)released_future_.wait_for(2 * test::kWaitDeadline);
    return true;
  }
  void release() {
    released_.set_value();
    warmup_.wait();
  }

 private:
  bool held_ = false;  // engine thread only
  std::promise<void> entered_, released_;
  std::shared_future<void> released_future_ = released_.get_future().share();
  Collected warmup_;
};

EngineOptions small_options(int64_t blocks) {
  EngineOptions o;
  o.kv_blocks = blocks;
  o.ctx_size = 512;
  o.max_batch_tokens = 64;
  o.max_running = 8;
  return o;
}

TEST(EngineScheduler, SecondRequestReusesTheFirstsFullBlocks) {
  test::FakeModel model;
  Engine engine(model, small_options(64));
  const auto shared = prompt_of(1, 3 * B + 5);  // 53 tokens: 3 full blocks
  const auto second_prompt = concat(shared, prompt_of(2, 10));
  Collected a;
  engine.submit(request_for(shared, 8, &a));
  a.wait();
  EXPECT_EQ(a.n_cached(), 0);
  // The first event is the lookup's progress event.
  ASSERT_FALSE(a.events.empty());
  EXPECT_EQ(a.events.front().kind, EngineEvent::Kind::progress);
  EXPECT_EQ(a.events.front().n_prompt_done, 0);
  // The prompt's 3 full blocks were written into the cache, and the first
  // event already said so (a client's usage is fixed when its answer starts).
  EXPECT_EQ(a.events.back().n_cache_created, 3 * B);
  EXPECT_EQ(a.events.front().n_cache_created, 3 * B);
  for (const auto& e : a.events) EXPECT_EQ(e.n_cache_created, 3 * B);
  wait_idle(engine);
  const int64_t computed_before = model.n_tokens_computed;

  Collected b;
  engine.submit(request_for(second_prompt, 6, &b));
  b.wait();
  ASSERT_FALSE(b.events.empty());
  EXPECT_EQ(b.events.front().kind, EngineEvent::Kind::progress);
  // The first computed 53 + 7 tokens (3 full blocks); the second prompt
  // leaves the first's tokens after 53, so those 3 blocks are shared.
  EXPECT_EQ(b.events.front().n_cached, 3 * B);
  EXPECT_EQ(b.events.front().n_prompt_done, 3 * B);
  EXPECT_EQ(b.n_cached(), 3 * B);
  // Only the uncached tail was computed (+ the 5 decode steps).
  EXPECT_EQ(model.n_tokens_computed - computed_before,
            static_cast<int64_t>(second_prompt.size()) - 3 * B + 5);
  EXPECT_EQ(b.tokens, run_alone(second_prompt, 6));
  EXPECT_EQ(a.tokens, run_alone(shared, 8));
  wait_idle(engine);
  const auto s = engine.stats();
  EXPECT_EQ(s.n_blocks_used, 0);
  EXPECT_EQ(s.n_blocks_free + s.n_blocks_cached, s.n_blocks_total);
  EXPECT_GT(s.n_blocks_cached, 0);
  EXPECT_EQ(s.n_cached_tokens, 3 * B);
}

TEST(EngineScheduler, GeneratedTokensAreCachedForTheNextTurn) {
  test::FakeModel model;
  Engine engine(model, small_options(64));
  const auto turn1 = prompt_of(3, 20);
  Collected a;
  engine.submit(request_for(turn1, 30, &a));
  a.wait();
  ASSERT_EQ(a.tokens.size(), 30u);
  // Turn 2 = turn 1 + its answer + a new question: 20 + 30 = 50 tokens known,
  // 49 computed (the last sampled token never was) -> 3 full blocks.
  auto turn2 = concat(concat(turn1, a.tokens), prompt_of(4, 9));
  Collected b;
  engine.submit(request_for(turn2, 4, &b));
  b.wait();
  EXPECT_EQ(b.n_cached(), 3 * B);
  EXPECT_EQ(b.tokens, run_alone(turn2, 4));
}

TEST(EngineScheduler, ConcurrentRequestsShareBlocks) {
  test::FakeModel model;
  std::mutex m;
  std::vector<std::vector<std::vector<int32_t>>> tables;  // per forward, per seq
  model.on_forward = [&](std::span<const ForwardSeq> seqs) {
    std::lock_guard<std::mutex> lock(m);
    tables.emplace_back();
    for (const auto& s : seqs) {
      const int64_t n = (s.n_past + static_cast<int64_t>(s.tokens.size()) + B - 1) / B;
      tables.back().emplace_back(s.block_table, s.block_table + n);
    }
  };
  Engine engine(model, small_options(64));
  const auto prefix = prompt_of(5, 4 * B);
  // The first request reads its prompt; its second token's event (on the
  // engine thread) holds the engine, and the next three arrive while it
  // has 38 more tokens to decode.
  Collected first;
  std::promise<void> decoding;
  auto request = request_for(concat(prefix, {1}), 40, &first);
  request.on_event = [&, record = request.on_event](const EngineEvent& e) {
    record(e);
    if (e.kind == EngineEvent::Kind::token && first.n_tokens == 2) {
      engine.hold();
      decoding.set_value();
    }
  };
  engine.submit(std::move(request));
  ASSERT_EQ(decoding.get_future().wait_for(test::kWaitDeadline), std::future_status::ready);
  std::vector<std::unique_ptr<Collected>> others;
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 3; ++i) {
    others.push_back(std::make_unique<Collected>());
    prompts.push_back(concat(prefix, prompt_of(10 + i, 7)));
    engine.submit(request_for(prompts.back(), 5, others.back().get()));
  }
  engine.release();
  first.wait();
  for (int i = 0; i < 3; ++i) {
    others[i]->wait();
    EXPECT_EQ(others[i]->n_cached(), 4 * B) << i;
    EXPECT_EQ(others[i]->tokens, run_alone(prompts[i], 5)) << i;
  }
  EXPECT_EQ(first.tokens, run_alone(concat(prefix, {1}), 40));
  // Some forward ran several sequences whose first four blocks were the same ids.
  bool shared = false;
  for (const auto& step : tables) {
    for (size_t i = 0; i + 1 < step.size(); ++i) {
      if (step[i].size() >= 4 && step[i + 1].size() >= 4 &&
          std::equal(step[i].begin(), step[i].begin() + 4, step[i + 1].begin())) {
        shared = true;
      }
    }
  }
  EXPECT_TRUE(shared);
  wait_idle(engine);
}

TEST(EngineScheduler, PromptOfExactBlocksComputesItsLastToken) {
  test::FakeModel model;
  Engine engine(model, small_options(64));
  const auto p = prompt_of(6, 2 * B);
  Collected a, b;
  engine.submit(request_for(p, 3, &a));
  a.wait();
  const int64_t before = model.n_tokens_computed;
  engine.submit(request_for(p, 3, &b));
  b.wait();
  EXPECT_EQ(b.n_cached(), B);  // the second block holds the last token: recomputed
  EXPECT_EQ(model.n_tokens_computed - before, B + 2);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(b.tokens, run_alone(p, 3));
}

TEST(EngineScheduler, CacheOffReportsNothingCached) {
  test::FakeModel model;
  EngineOptions o = small_options(64);
  o.prefix_cache = false;
  Engine engine(model, o);
  const auto p = prompt_of(7, 3 * B + 2);
  Collected a, b;
  engine.submit(request_for(p, 3, &a));
  a.wait();
  engine.submit(request_for(p, 3, &b));
  b.wait();
  EXPECT_EQ(b.n_cached(), 0);
  EXPECT_EQ(b.events.back().n_cache_created, 0);
  EXPECT_EQ(model.n_tokens_computed, 2 * (3 * B + 2 + 2));
  EXPECT_EQ(a.tokens, b.tokens);
  wait_idle(engine);
  EXPECT_EQ(engine.stats().n_blocks_cached, 0);
  EXPECT_EQ(engine.stats().n_blocks_free, 64);
}

TEST(EngineScheduler, LeastRecentlyUsedPrefixIsEvictedFirst) {
  test::FakeModel model;
  // 7 blocks: each prompt below needs 3 (2 full + the block of its last tokens).
  Engine engine(model, small_options(7));
  const auto pa = prompt_of(20, 2 * B + 4), pb = prompt_of(21, 2 * B + 4),
             pc = prompt_of(22, 2 * B + 4), pd = prompt_of(23, 2 * B + 4);
  auto run = [&](const std::vector<int32_t>& p) {
    Collected c;
    engine.submit(request_for(p, 1, &c));
    c.wait();
    wait_idle(engine);
    return c.n_cached();
  };
  EXPECT_EQ(run(pa), 0);
  EXPECT_EQ(run(pb), 0);
  EXPECT_EQ(run(pa), 2 * B);  // a touched again: b is now the least recent
  EXPECT_EQ(run(pc), 0);
  EXPECT_EQ(engine.stats().n_evictions, 0);
  // Now 1 block is free and 6 cached (LRU first: b's two, a's, c's). d needs
  // 3: the free one, then b's.
  EXPECT_EQ(run(pd), 0);
  EXPECT_EQ(engine.stats().n_evictions, 2);
  EXPECT_EQ(run(pa), 2 * B);  // survived
  EXPECT_EQ(run(pc), 2 * B);  // survived
  EXPECT_EQ(run(pb), 0);      // evicted
  const auto s = engine.stats();
  EXPECT_EQ(s.n_blocks_used, 0);
  EXPECT_EQ(s.n_blocks_free + s.n_blocks_cached, 7);
}

TEST(EngineScheduler, InUseBlocksAreNeverEvicted) {
  test::FakeModel model;
  std::mutex m;
  std::condition_variable cv;
  bool hold = true;
  int64_t n_forwards_seen = 0;
  model.on_forward = [&](std::span<const ForwardSeq>) {
    std::unique_lock<std::mutex> lock(m);
    ++n_forwards_seen;
    cv.notify_all();
    cv.wait(lock, [&] { return !hold; });
  };
  Engine engine(model, small_options(10));
  const auto pa = prompt_of(30, 3 * B + 1);
  Collected a;
  engine.submit(request_for(pa, 20, &a));
  {
    std::unique_lock<std::mutex> lock(m);
    cv.wait(lock, [&] { return n_forwards_seen >= 1; });
  }
  // a holds 4 blocks; b wants 6 + room to decode. It must wait or preempt,
  // never take a's blocks while a reads them.
  Collected b;
  const auto pb = prompt_of(31, 5 * B + 3);
  engine.submit(request_for(pb, 3, &b));
  {
    std::lock_guard<std::mutex> lock(m);
    hold = false;
  }
  cv.notify_all();
  a.wait();
  b.wait();
  EXPECT_EQ(a.tokens, run_alone(pa, 20));
  EXPECT_EQ(b.tokens, run_alone(pb, 3));
  wait_idle(engine);
}

TEST(EngineScheduler, PreemptedRequestResumesFromItsCachedBlocks) {
  const auto pa = prompt_of(40, 3 * B + 2), pb = prompt_of(41, 2 * B + 3);
  auto run_pair = [&](bool cache, int64_t* computed, int64_t* preemptions,
                      std::vector<int32_t>* ta, std::vector<int32_t>* tb) {
    test::FakeModel model;
    // The engine's first step waits until b is queued, so that both run
    // together however the threads are scheduled (b arriving after a has
    // grown would just wait for a, with nothing to preempt).
    std::mutex m;
    std::condition_variable cv;
    bool b_submitted = false;
    model.on_forward = [&](std::span<const ForwardSeq>) {
      std::unique_lock<std::mutex> lock(m);
      cv.wait(lock, [&] { return b_submitted; });
    };
    EngineOptions o = small_options(9);  // too few for both to finish together
    o.prefix_cache = cache;
    Engine engine(model, o);
    Collected a, b;
    engine.submit(request_for(pa, 60, &a));
    engine.submit(request_for(pb, 60, &b));
    {
      std::lock_guard<std::mutex> lock(m);
      b_submitted = true;
    }
    cv.notify_all();
    a.wait();
    b.wait();
    EXPECT_EQ(a.finish, "max_tokens");
    EXPECT_EQ(b.finish, "max_tokens");
    wait_idle(engine);
    *computed = model.n_tokens_computed;
    *preemptions = engine.stats().n_preemptions;
    *ta = a.tokens;
    *tb = b.tokens;
    const auto s = engine.stats();
    EXPECT_EQ(s.n_blocks_free + s.n_blocks_cached, s.n_blocks_total);
  };
  int64_t computed_on = 0, computed_off = 0, pre_on = 0, pre_off = 0;
  std::vector<int32_t> a_on, b_on, a_off, b_off;
  run_pair(true, &computed_on, &pre_on, &a_on, &b_on);
  run_pair(false, &computed_off, &pre_off, &a_off, &b_off);
  EXPECT_GT(pre_on, 0);
  EXPECT_GT(pre_off, 0);
  EXPECT_EQ(a_on, run_alone(pa, 60));
  EXPECT_EQ(b_on, run_alone(pb, 60));
  EXPECT_EQ(a_on, a_off);
  EXPECT_EQ(b_on, b_off);
  // Resuming from cached blocks recomputes less than recomputing everything.
  EXPECT_LT(computed_on, computed_off);
}

TEST(EngineScheduler, CancelledRequestLeavesItsBlocksCached) {
  test::FakeModel model;
  std::atomic<int> n_forwards{0};
  model.on_forward = [&](std::span<const ForwardSeq>) { ++n_forwards; };
  Engine engine(model, small_options(32));
  const auto p = prompt_of(50, 4 * B + 3);
  // Cancelled from its third token's event (on the engine thread): its
  // prompt is all computed by then, however fast the engine runs. It is
  // submitted while the engine is held, so the event finds the handle.
  Collected a;
  std::shared_ptr<EngineHandle> handle;
  auto request = request_for(p, 400, &a);
  request.on_event = [&, record = request.on_event](const EngineEvent& e) {
    record(e);
    if (e.kind == EngineEvent::Kind::token && a.n_tokens == 3) handle->cancel();
  };
  engine.hold();
  handle = engine.submit(std::move(request));
  engine.release();
  a.wait();
  EXPECT_EQ(a.finish, "cancelled");
  EXPECT_EQ(a.tokens.size(), 3u);
  wait_idle(engine);
  auto s = engine.stats();
  EXPECT_EQ(s.n_blocks_used, 0);
  EXPECT_GE(s.n_blocks_cached, 4);
  Collected b;
  engine.submit(request_for(p, 2, &b));
  b.wait();
  EXPECT_EQ(b.n_cached(), 4 * B);
  // Cancelled while still waiting in the queue (the engine is held): it
  // ends without running.
  wait_idle(engine);
  const int n_forwards_before = n_forwards;
  Collected c;
  engine.hold();
  auto h2 = engine.submit(request_for(prompt_of(51, 10), 5, &c));
  h2->cancel();
  engine.release();
  c.wait();
  EXPECT_EQ(c.finish, "cancelled");
  EXPECT_TRUE(c.tokens.empty());
  wait_idle(engine);
  EXPECT_EQ(n_forwards, n_forwards_before);
}

TEST(EngineScheduler, BudgetCountsOnlyComputedTokens) {
  test::FakeModel model;
  std::vector<int64_t> step_tokens;
  model.on_forward = [&](std::span<const ForwardSeq> seqs) {
    int64_t n = 0;
    for (const auto& s : seqs) n += static_cast<int64_t>(s.tokens.size());
    step_tokens.push_back(n);
  };
  EngineOptions o = small_options(64);
  o.max_batch_tokens = 16;
  Engine engine(model, o);
  const auto p = prompt_of(60, 5 * B + 3);
  Collected a;
  engine.submit(request_for(p, 2, &a));
  a.wait();
  wait_idle(engine);
  for (int64_t n : step_tokens) EXPECT_LE(n, 16);
  // 83 prompt tokens in chunks of 16: 6 forwards, then 1 decode step.
  EXPECT_EQ(step_tokens.size(), 7u);
  step_tokens.clear();
  // The same prompt again: 5 cached blocks, so one forward for the last 3
  // tokens, one decode step.
  Collected b;
  engine.submit(request_for(p, 2, &b));
  b.wait();
  EXPECT_EQ(step_tokens, (std::vector<int64_t>{3, 1}));
  // Progress events count the cached tokens as done.
  std::vector<int64_t> done;
  for (const auto& e : b.events)
    if (e.kind == EngineEvent::Kind::progress) done.push_back(e.n_prompt_done);
  EXPECT_EQ(done, (std::vector<int64_t>{5 * B, 5 * B + 3}));
}

TEST(EngineScheduler, SeededSamplingIsTheSameBatchedOrAlone) {
  SamplingParams x;
  x.temperature = 0.8f;
  x.top_k = 7;
  x.seed = 11;
  SamplingParams y;
  y.temperature = 1.3f;
  y.top_p = 0.9f;
  y.min_p = 0.05f;
  y.seed = 12;
  SamplingParams z;
  z.temperature = 0;
  const auto px = prompt_of(70, 30), py = prompt_of(71, 45), pz = prompt_of(72, 17);
  const auto ax = run_alone(px, 25, x), ay = run_alone(py, 25, y), az = run_alone(pz, 25, z);
  EXPECT_NE(run_alone(px, 25, y), ax);  // the parameters matter
  test::FakeModel model;
  Engine engine(model, small_options(64));
  Collected cx, cy, cz;
  engine.submit(request_for(px, 25, &cx, x));
  engine.submit(request_for(py, 25, &cy, y));
  engine.submit(request_for(pz, 25, &cz, z));
  cx.wait();
  cy.wait();
  cz.wait();
  EXPECT_EQ(cx.tokens, ax);
  EXPECT_EQ(cy.tokens, ay);
  EXPECT_EQ(cz.tokens, az);
  EXPECT_GT(model.n_forwards, 0);
}

TEST(EngineScheduler, ManyRandomRequestsLeaveThePoolFull) {
  test::FakeModel model;
  Engine engine(model, small_options(24));
  std::vector<std::unique_ptr<Collected>> cs;
  std::vector<std::shared_ptr<EngineHandle>> handles;
  std::vector<std::vector<int32_t>> prompts;
  const auto common = prompt_of(80, 2 * B);
  for (int i = 0; i < 24; ++i) {
    cs.push_back(std::make_unique<Collected>());
    prompts.push_back(concat(common, prompt_of(81 + i % 5, 3 + (i * 7) % 40)));
    handles.push_back(engine.submit(request_for(prompts.back(), 4 + i % 9, cs.back().get())));
    ASSERT_NE(handles.back(), nullptr);
    if (i % 4 == 3) handles[i - 1]->cancel();
  }
  for (int i = 0; i < 24; ++i) {
    cs[i]->wait();
    if (cs[i]->finish != "cancelled") {
      EXPECT_EQ(cs[i]->tokens, run_alone(prompts[i], 4 + i % 9)) << i;
    }
  }
  wait_idle(engine);
  const auto s = engine.stats();
  EXPECT_EQ(s.n_blocks_used, 0);
  EXPECT_EQ(s.n_blocks_free + s.n_blocks_cached, 24);
  EXPECT_GT(s.n_cached_tokens, 0);
}

// A long prompt read in chunks never costs a decoding request its token:
// every step gives each decoder one token and the prompt what is left of
// the budget.
TEST(EngineScheduler, DecodersGetATokenEveryStepWhileALongPromptIsChunked) {
  test::FakeModel model;
  HoldFirstForward hold;
  // What each step did, in order (engine thread only until the end): the
  // tokens each decoder got, and how far the long prompt was read.
  struct Step {
    int64_t n_tokens = 0;
    std::map<int, int> tokens_of;
    int64_t long_prompt_done = -1;
  };
  std::vector<Step> steps;
  model.on_forward = [&](std::span<const ForwardSeq> seqs) {
    if (hold.in_forward()) return;
    steps.emplace_back();
    for (const auto& s : seqs) steps.back().n_tokens += static_cast<int64_t>(s.tokens.size());
  };
  EngineOptions o = small_options(64);
  o.max_batch_tokens = 8;
  Engine engine(model, o);
  ASSERT_NO_FATAL_FAILURE(hold.start(engine));
  constexpr int kDecoders = 4;
  std::vector<std::unique_ptr<Collected>> decoders;
  for (int i = 0; i < kDecoders; ++i) {
    decoders.push_back(std::make_unique<Collected>());
    auto r = request_for(prompt_of(90 + i, 5), 80, decoders.back().get());
    r.on_event = [i, &steps, inner = r.on_event](const EngineEvent& e) {
      if (e.kind == EngineEvent::Kind::token && !steps.empty()) ++steps.back().tokens_of[i];
      inner(e);
    };
    engine.submit(std::move(r));
  }
  const auto long_prompt = prompt_of(95, 150);
  Collected long_request;
  auto r = request_for(long_prompt, 2, &long_request);
  r.on_event = [&steps, inner = r.on_event](const EngineEvent& e) {
    if (e.kind == EngineEvent::Kind::progress && !steps.empty())
      steps.back().long_prompt_done = e.n_prompt_done;
    inner(e);
  };
  engine.submit(std::move(r));
  hold.release();
  long_request.wait();
  for (auto& d : decoders) d->wait();
  EXPECT_EQ(long_request.tokens, run_alone(long_prompt, 2));

  // The steps in which the long prompt was read while all four decoded.
  int64_t n_chunked_steps = 0, done_before = 0;
  std::map<int, int> n_tokens_so_far;
  for (const Step& step : steps) {
    EXPECT_LE(step.n_tokens, 8);
    // Every decoder had its first token before this step and none is done.
    const bool all_decoding =
        static_cast<int>(n_tokens_so_far.size()) == kDecoders &&
        std::all_of(n_tokens_so_far.begin(), n_tokens_so_far.end(),
                    [](const auto& kv) { return kv.second < 80; });
    if (all_decoding && step.long_prompt_done > done_before &&
        step.long_prompt_done < static_cast<int64_t>(long_prompt.size())) {
      ++n_chunked_steps;
      for (int i = 0; i < kDecoders; ++i) {
        EXPECT_EQ(step.tokens_of.count(i) ? step.tokens_of.at(i) : 0, 1)
            << "decoder " << i << " in step " << (&step - steps.data());
      }
      // The prompt took what the decoders left of the budget.
      EXPECT_EQ(step.long_prompt_done - done_before, 8 - kDecoders);
    }
    if (step.long_prompt_done >= 0) done_before = step.long_prompt_done;
    for (const auto& [i, n] : step.tokens_of) n_tokens_so_far[i] += n;
  }
  // 150 tokens at 4 a step: the prompt was read over more than 30 steps.
  EXPECT_GT(n_chunked_steps, 30);
}

// One request at a time: they finish in the order they arrived, whatever
// their lengths.
TEST(EngineScheduler, OneAtATimeFinishInArrivalOrder) {
  test::FakeModel model;
  HoldFirstForward hold;
  model.on_forward = [&](std::span<const ForwardSeq>) { hold.in_forward(); };
  EngineOptions o = small_options(64);
  o.max_running = 1;
  Engine engine(model, o);
  ASSERT_NO_FATAL_FAILURE(hold.start(engine));
  std::vector<int> finished;  // engine thread only until all are done
  std::vector<std::unique_ptr<Collected>> cs;
  for (int i = 0; i < 6; ++i) {
    cs.push_back(std::make_unique<Collected>());
    // The first ones are the longest: shortest-first would reverse the order.
    auto r = request_for(prompt_of(110 + i, 60 - 9 * i), 12 - 2 * i, cs.back().get());
    r.on_event = [i, &finished, inner = r.on_event](const EngineEvent& e) {
      if (e.kind == EngineEvent::Kind::done) finished.push_back(i);
      inner(e);
    };
    engine.submit(std::move(r));
  }
  hold.release();
  for (auto& c : cs) c->wait();
  EXPECT_EQ(finished, (std::vector<int>{0, 1, 2, 3, 4, 5}));
  for (auto& c : cs) EXPECT_EQ(c->finish, "max_tokens");
}

// A long prompt that arrived early is not starved by short requests that
// keep arriving after it while the pool is tight: they take freed blocks
// only after it, and it finishes within a bounded number of steps.
TEST(EngineScheduler, OldLongPromptFinishesDespiteAStreamOfShortRequests) {
  test::FakeModel model;
  HoldFirstForward hold;
  model.on_forward = [&](std::span<const ForwardSeq>) { hold.in_forward(); };
  EngineOptions o = small_options(17);  // the long prompt needs all of them
  o.max_batch_tokens = 512;   // it asks for its whole prompt at once
  o.max_running = 6;
  Engine engine(model, o);
  ASSERT_NO_FATAL_FAILURE(hold.start(engine));

  constexpr int kMaxShorts = 150;  // the stream ends here in any case
  std::mutex m;
  std::deque<std::unique_ptr<Collected>> shorts;  // guarded by m
  std::atomic<bool> long_done{false};
  std::atomic<int64_t> long_done_at_forward{-1};
  // Each short request that ends is replaced by a new one (submitted from
  // its done event, on the engine thread), until the long one is done.
  std::function<void()> submit_short = [&] {
    std::lock_guard<std::mutex> lock(m);
    const int i = static_cast<int>(shorts.size());
    if (i >= kMaxShorts) return;
    shorts.push_back(std::make_unique<Collected>());
    auto r = request_for(prompt_of(200 + i, 40), 4 + (i * 5) % 9, shorts.back().get());
    r.on_event = [&, inner = r.on_event](const EngineEvent& e) {
      inner(e);
      if (e.kind == EngineEvent::Kind::done && e.finish != FinishReason::cancelled && !long_done) submit_short();
    };
    ASSERT_NE(engine.submit(std::move(r)), nullptr);
  };
  for (int i = 0; i < 4; ++i) submit_short();
  const auto long_prompt = prompt_of(199, 16 * B);
  Collected long_request;
  auto r = request_for(long_prompt, 4, &long_request);
  r.on_event = [&, inner = r.on_event](const EngineEvent& e) {
    if (e.kind == EngineEvent::Kind::done) {
      long_done = true;
      long_done_at_forward = model.n_forwards;
    }
    inner(e);
  };
  engine.submit(std::move(r));
  for (int i = 0; i < 8; ++i) submit_short();  // arrived after it
  hold.release();
  long_request.wait();
  EXPECT_EQ(long_request.finish, "max_tokens");
  EXPECT_EQ(long_request.tokens, run_alone(long_prompt, 4));
  // Alone it takes 2 prompt chunks and 3 decode steps; the 4 shorts ahead
  // of it take a few more. Starved, it would wait for the whole stream.
  EXPECT_LE(long_done_at_forward, 40);
  {
    std::lock_guard<std::mutex> lock(m);
    EXPECT_LT(shorts.size(), static_cast<size_t>(kMaxShorts));
  }
  // The stream stops with it: every short one ends normally.
  for (size_t i = 0;; ++i) {
    Collected* c;
    {
      std::lock_guard<std::mutex> lock(m);
      if (i >= shorts.size()) break;
      c = shorts[i].get();
    }
    c->wait();
    EXPECT_EQ(c->finish, "max_tokens") << i;
  }
  wait_idle(engine);
  EXPECT_EQ(engine.stats().n_blocks_used, 0);
}

// cancel() takes effect at the next step: at most the forward already
// under way runs after it, and none when it comes between steps. Each
// cancel is placed by construction: inside a forward the test holds still,
// or from the engine thread between two steps; and the engine is held
// between rounds, so `other` (and everything else) only advances by the
// few steps each round takes.
TEST(EngineScheduler, CancelledRequestLeavesWithinOneStep) {
  test::FakeModel model;
  std::atomic<int64_t> forwards{0};
  // The forward under way: once armed, the first forward that runs after
  // `watched` has `at_tokens` tokens waits in on_forward until `go_on`.
  std::mutex m;
  std::condition_variable cv;
  Collected* watched = nullptr;  // guarded by m, like the three below
  int64_t at_tokens = 0;
  bool in_forward = false, go_on = false;
  model.on_forward = [&](std::span<const ForwardSeq>) {
    ++forwards;
    std::unique_lock<std::mutex> lock(m);
    if (watched == nullptr || watched->n_tokens != at_tokens) return;
    watched = nullptr;
    in_forward = true;
    cv.notify_all();
    cv.wait_for(lock, 2 * test::kWaitDeadline, [&] { return go_on; });
    go_on = false;
  };
  Engine engine(model, small_options(64));
  engine.hold();
  Collected other;
  auto other_handle = engine.submit(request_for(prompt_of(120, 9), 100000, &other));
  for (int round = 0; round < 5; ++round) {
    SCOPED_TRACE(round);
    Collected c;
    std::atomic<int64_t> at_done{-1};
    auto r = request_for(prompt_of(121 + round, 20), 100000, &c);
    r.on_event = [&, record = r.on_event](const EngineEvent& e) {
      if (e.kind == EngineEvent::Kind::done) {
        at_done = forwards.load();
        engine.hold();  // until the next round is set up
      }
      record(e);
    };
    auto handle = engine.submit(std::move(r));
    {
      std::lock_guard<std::mutex> lock(m);
      watched = &c;
      at_tokens = 3 + round;
    }
    engine.release();
    {
      std::unique_lock<std::mutex> lock(m);
      ASSERT_TRUE(cv.wait_for(lock, test::kWaitDeadline, [&] { return in_forward; }));
      in_forward = false;
    }
    const int64_t at_cancel = forwards.load();  // counts the forward under way
    handle->cancel();
    {
      std::lock_guard<std::mutex> lock(m);
      go_on = true;
    }
    cv.notify_all();
    c.wait();
    EXPECT_EQ(c.finish, "cancelled");
    // The forward under way completed (its token still came out); no other ran.
    EXPECT_EQ(at_done.load(), at_cancel);
    EXPECT_EQ(c.tokens.size(), static_cast<size_t>(at_tokens + 1));
  }
  // Cancelled on the engine thread between two steps (from its own token
  // event): no further forward at all. Submitted while the engine is held,
  // so the event finds the handle.
  Collected c;
  std::shared_ptr<EngineHandle> handle;
  int64_t at_cancel = -1, at_done = -1;  // engine thread until c is done
  auto r = request_for(prompt_of(130, 20), 100000, &c);
  r.on_event = [&, record = r.on_event](const EngineEvent& e) {
    if (e.kind == EngineEvent::Kind::token && c.n_tokens == 4) {
      handle->cancel();
      at_cancel = forwards.load();
    }
    if (e.kind == EngineEvent::Kind::done) {
      at_done = forwards.load();
      engine.hold();
    }
    record(e);
  };
  handle = engine.submit(std::move(r));
  engine.release();
  c.wait();
  EXPECT_EQ(c.finish, "cancelled");
  EXPECT_EQ(c.tokens.size(), 5u);
  EXPECT_GE(at_cancel, 0);
  EXPECT_EQ(at_done, at_cancel);
  // Still running all along: it has had a few dozen steps of its 100000.
  EXPECT_EQ(other.finish, "");
  other_handle->cancel();
  engine.release();
  other.wait();
  EXPECT_EQ(other.finish, "cancelled");
  wait_idle(engine);
}

// A request still waiting for a place (max_running is taken) ends at the
// next step when cancelled, not when a place frees up. The running one's
// second token event (on the engine thread) holds the engine, so the other
// is queued and cancelled between two steps.
TEST(EngineScheduler, CancelledWaitingRequestLeavesWithinOneStep) {
  test::FakeModel model;
  std::atomic<int64_t> forwards{0};
  model.on_forward = [&](std::span<const ForwardSeq>) { ++forwards; };
  EngineOptions o = small_options(64);
  o.max_running = 1;
  Engine engine(model, o);
  Collected running;
  std::promise<void> decoding;
  auto running_request = request_for(prompt_of(140, 9), 100000, &running);
  running_request.on_event = [&, record = running_request.on_event](const EngineEvent& e) {
    record(e);
    if (e.kind == EngineEvent::Kind::token && running.n_tokens == 2) {
      engine.hold();
      decoding.set_value();
    }
  };
  auto running_handle = engine.submit(std::move(running_request));
  ASSERT_EQ(decoding.get_future().wait_for(test::kWaitDeadline), std::future_status::ready);
  Collected waiting;
  std::atomic<int64_t> at_done{-1};
  auto r = request_for(prompt_of(141, 9), 5, &waiting);
  r.on_event = [&, record = r.on_event](const EngineEvent& e) {
    if (e.kind == EngineEvent::Kind::done) {
      at_done = forwards.load();
      engine.hold();  // the running one stops after this step, still running
    }
    record(e);
  };
  auto handle = engine.submit(std::move(r));
  EXPECT_EQ(engine.stats().n_waiting, 1);
  const int64_t at_cancel = forwards.load();
  handle->cancel();
  engine.release();
  waiting.wait();
  EXPECT_EQ(waiting.finish, "cancelled");
  EXPECT_TRUE(waiting.tokens.empty());
  EXPECT_EQ(at_done.load(), at_cancel);  // it left before the next forward
  EXPECT_EQ(running.finish, "");
  running_handle->cancel();
  engine.release();
  running.wait();
  wait_idle(engine);
}

// The pool, not ctx_size, limits the prompt: it and its first generated
// token must fit, or submit() refuses it; one that fits ends with
// max_tokens when the pool cannot hold what it generates.
TEST(EngineScheduler, PromptLongerThanThePoolIsRefused) {
  test::FakeModel model;
  EngineOptions o = small_options(4);  // 64 positions; ctx_size is 512
  Engine engine(model, o);
  Collected unused;
  try {
    engine.submit(request_for(prompt_of(150, 4 * B), 1, &unused));
    FAIL() << "a prompt that fills the whole pool was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "prompt is too long: 64 tokens > 63 maximum");
  }
  Collected c;
  const auto p = prompt_of(151, 4 * B - 1);
  engine.submit(request_for(p, 10, &c));
  c.wait();
  EXPECT_EQ(c.error, "");
  EXPECT_EQ(c.finish, "max_tokens");
  // Positions 0..63 fit: the prompt's 63 and the first token's; the second
  // token would need position 64.
  EXPECT_EQ(c.tokens, run_alone(p, 2));
  wait_idle(engine);
}

// hold() stops the engine between steps: submitted requests stay in flight
// (waiting, no forward, no event) until release(), which runs them as usual.
TEST(EngineScheduler, HeldEngineRunsNothingUntilReleased) {
  test::FakeModel model;
  std::atomic<int> forwards{0};
  model.on_forward = [&](std::span<const ForwardSeq>) { ++forwards; };
  Engine engine(model, small_options(16));
  engine.hold();
  Collected a, b;
  engine.submit(request_for(prompt_of(160, 20), 3, &a));
  engine.submit(request_for(prompt_of(161, 5), 3, &b));
  // Nothing can happen while held, however long we look.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(forwards.load(), 0);
  EXPECT_EQ(engine.stats().n_waiting, 2);
  EXPECT_EQ(engine.stats().n_steps, 0);
  EXPECT_EQ(a.done_future.wait_for(std::chrono::seconds(0)), std::future_status::timeout);
  engine.release();
  a.wait();
  b.wait();
  EXPECT_EQ(a.finish, "max_tokens");
  EXPECT_EQ(b.finish, "max_tokens");
  EXPECT_EQ(a.tokens, run_alone(prompt_of(160, 20), 3));
  EXPECT_GT(forwards.load(), 0);
  wait_idle(engine);
}

}  // namespace
}  // namespace pensieve
