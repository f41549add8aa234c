// pensieve bench-serve: the engine under load (no HTTP): aggregate decode
// speed with N concurrent streams, and time to first token of a request
// whose long prefix an earlier request left in the prefix cache.
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>

#include "cli/command.h"
#include "core/error.h"
#include "engine/engine.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/cpu_features.h"
#include "models/model.h"

namespace pensieve::cli {
namespace {

using Clock = std::chrono::steady_clock;

struct Opts {
  std::string model;
  int threads = 0;
  std::string device = "auto";
  std::string kv_type = "f16";
  std::string streams = "1,4,8";
  int64_t prompt_tokens = 64, gen_tokens = 64;
  int64_t prefix_tokens = 16384, tail_tokens = 32;
  int64_t batch_tokens = 0;  // 0: the backend's step size
  bool skip_decode = false, skip_prefix = false, json = false;
};

double seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// One request's timeline, filled in on the engine thread.
struct Stream {
  Clock::time_point submitted, first_token, done_at;
  int64_t n_tokens = 0, n_cached = 0;
  std::string finish, error;
  bool done = false;
};

class Waiter {
 public:
  void notify_locked() { cv_.notify_all(); }  // caller holds mutex()
  template <class Pred>
  void wait(Pred pred) {
    std::unique_lock<std::mutex> lock(m_);
    cv_.wait(lock, pred);
  }
  std::mutex& mutex() { return m_; }

 private:
  std::mutex m_;
  std::condition_variable cv_;
};

void submit(Engine& engine, Waiter& waiter, Stream& s, std::vector<int32_t> prompt,
            int64_t max_tokens) {
  EngineRequest r;
  r.prompt = std::move(prompt);
  r.max_tokens = max_tokens;
  r.sampling.temperature = 0;
  r.on_event = [&waiter, &s](const EngineEvent& e) {
    std::lock_guard<std::mutex> lock(waiter.mutex());
    s.n_cached = std::max(s.n_cached, e.n_cached);
    if (e.kind == EngineEvent::Kind::token) {
      if (s.n_tokens++ == 0) s.first_token = Clock::now();
    } else if (e.kind == EngineEvent::Kind::done || e.kind == EngineEvent::Kind::error) {
      s.finish = std::string(finish_reason_name(e.finish));
      s.error = e.error;
      s.done_at = Clock::now();
      s.done = true;
      waiter.notify_locked();
    }
  };
  s.submitted = Clock::now();
  if (engine.submit(std::move(r)) == nullptr) fail("the engine queue is full");
}

std::vector<int32_t> synthetic_tokens(int64_t n, int64_t vocab, uint64_t salt) {
  std::vector<int32_t> t(n);
  uint64_t x = 0x9e3779b97f4a7c15ULL * (salt + 1);
  for (int64_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    t[i] = static_cast<int32_t>(x % static_cast<uint64_t>(vocab));
  }
  return t;
}

RegisterCommand reg("bench-serve", [](CLI::App& app) {
  app.description(
      "Engine under load: aggregate decode tokens/s for N concurrent streams, and time to first "
      "token with and without a cached shared prefix");
  auto o = std::make_shared<Opts>();
  app.add_option("--model", o->model, "model directory")->required();
  add_threads_option(app, o->threads);
  app.add_option("--streams", o->streams, "concurrent stream counts to measure, e.g. 1,4,8")
      ->capture_default_str();
  add_device_option(app, o->device);
  add_kv_type_option(app, o->kv_type);
  app.add_option("--prompt-tokens", o->prompt_tokens, "prompt length of each decode stream")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--gen-tokens", o->gen_tokens, "tokens each decode stream generates")
      ->capture_default_str()
      ->check(CLI::Range(2, 1 << 20));
  app.add_option("--prefix-tokens", o->prefix_tokens, "shared prefix of the TTFT test")
      ->capture_default_str()
      ->check(CLI::Range(16, 1 << 22));
  app.add_option("--tail-tokens", o->tail_tokens, "distinct tokens after the shared prefix")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--batch-tokens", o->batch_tokens,
                 "tokens per forward step (default: 512 on the CPU, 2048 on a GPU)")
      ->check(CLI::Range(16, 65536));
  app.add_flag("--no-decode", o->skip_decode, "skip the concurrent decode measurement");
  app.add_flag("--no-prefix", o->skip_prefix, "skip the shared-prefix TTFT measurement");
  app.add_flag("--json", o->json, "print one JSON object");
  return std::function<int()>([o] {
    const std::vector<int> streams = parse_int_list(o->streams, "--streams");
    for (int n : streams) {
      if (n < 1 || n > 256) fail("--streams: {} is not between 1 and 256", n);
    }
    LoadOptions lo;
    lo.n_threads = o->threads;
    lo.device = o->device;
    lo.kv_type = *parse_kv_type(o->kv_type);
    lo.prefault = true;
    auto model = load_model(o->model, lo);
    const ModelConfig& c = model->config();
    if (o->batch_tokens == 0) o->batch_tokens = model->backend().step_tokens();
    std::string decode_json, prefix_json;
    const char* sep = "";

    if (!o->skip_decode) {
      for (int n : streams) {
        EngineOptions eo;
        eo.ctx_size = o->prompt_tokens + o->gen_tokens + 1;
        eo.max_running = n;
        eo.max_queue = n;
        eo.max_batch_tokens = o->batch_tokens;
        eo.kv_blocks = n * ((eo.ctx_size + kKvBlockTokens) / kKvBlockTokens + 1);
        Engine engine(*model, eo);
        Waiter waiter;
        std::vector<Stream> ss(n);
        for (int i = 0; i < n; ++i) {
          submit(engine, waiter, ss[i], synthetic_tokens(o->prompt_tokens, c.vocab_size, 100 + i),
                 o->gen_tokens);
        }
        waiter.wait([&] { return std::all_of(ss.begin(), ss.end(), [](const Stream& s) { return s.done; }); });
        // Decode: from the moment every stream has its first token (all
        // prompts read) until the last one ends.
        Clock::time_point start = ss[0].first_token, end = ss[0].done_at;
        int64_t tokens = 0;
        for (const Stream& s : ss) {
          if (!s.error.empty()) fail("stream failed: {}", s.error);
          start = std::max(start, s.first_token);
          end = std::max(end, s.done_at);
        }
        // Tokens produced after `start`: approximate each stream's by its rate.
        for (const Stream& s : ss) {
          const double span = seconds(s.first_token, s.done_at);
          const double after = span > 0 ? seconds(start, s.done_at) / span : 0;
          tokens += static_cast<int64_t>((s.n_tokens - 1) * std::clamp(after, 0.0, 1.0) + 0.5);
        }
        const double decode_s = seconds(start, end);
        const double tok_s = decode_s > 0 ? tokens / decode_s : 0;
        const double per_stream = tok_s / n;
        if (!o->json) {
          std::printf("decode  %3d streams: %6lld tokens in %7.2f s = %8.2f tok/s aggregate, %7.2f per stream\n",
                      n, static_cast<long long>(tokens), decode_s, tok_s, per_stream);
          std::fflush(stdout);
        }
        decode_json += fmt::format("{}{{\"streams\": {}, \"tokens\": {}, \"seconds\": {:.3f}, "
                                   "\"tok_s\": {:.2f}, \"tok_s_per_stream\": {:.2f}}}",
                                   sep, n, tokens, decode_s, tok_s, per_stream);
        sep = ", ";
      }
    }

    if (!o->skip_prefix) {
      EngineOptions eo;
      eo.ctx_size = o->prefix_tokens + o->tail_tokens + 8;
      eo.max_running = 2;
      eo.max_batch_tokens = o->batch_tokens;
      // Room for both requests, so the first's blocks stay cached.
      eo.kv_blocks = 2 * ((eo.ctx_size + kKvBlockTokens) / kKvBlockTokens + 1);
      Engine engine(*model, eo);
      const auto prefix = synthetic_tokens(o->prefix_tokens, c.vocab_size, 7);
      auto with_tail = [&](uint64_t salt) {
        auto p = prefix;
        const auto tail = synthetic_tokens(o->tail_tokens, c.vocab_size, salt);
        p.insert(p.end(), tail.begin(), tail.end());
        return p;
      };
      Waiter waiter;
      Stream first, second;
      submit(engine, waiter, first, with_tail(1), 2);
      waiter.wait([&] { return first.done; });
      submit(engine, waiter, second, with_tail(2), 2);
      waiter.wait([&] { return second.done; });
      if (!first.error.empty() || !second.error.empty())
        fail("prefix test failed: {}{}", first.error, second.error);
      const double t1 = seconds(first.submitted, first.first_token);
      const double t2 = seconds(second.submitted, second.first_token);
      const int64_t n_prompt = o->prefix_tokens + o->tail_tokens;
      if (!o->json) {
        std::printf("ttft    first  request: %6lld prompt tokens, %6lld cached: %9.3f s\n",
                    static_cast<long long>(n_prompt), static_cast<long long>(first.n_cached), t1);
        std::printf("ttft    second request: %6lld prompt tokens, %6lld cached: %9.3f s (%.1fx faster)\n",
                    static_cast<long long>(n_prompt), static_cast<long long>(second.n_cached), t2,
                    t1 / t2);
      }
      prefix_json = fmt::format(
          "{{\"prefix_tokens\": {}, \"prompt_tokens\": {}, \"first_ttft_s\": {:.4f}, "
          "\"first_cached\": {}, \"second_ttft_s\": {:.4f}, \"second_cached\": {}, "
          "\"speedup\": {:.1f}}}",
          o->prefix_tokens, n_prompt, t1, first.n_cached, t2, second.n_cached, t1 / t2);
    }
    const ModelInfo info = model->info();
    if (o->json) {
      std::printf("{\"model\": \"%s\", \"architecture\": \"%s\", \"weight_format\": \"%s\", "
                  "\"n_params\": %lld, \"device\": \"%s\", \"isa\": \"%s\", \"threads\": %d, \"decode\": [%s], "
                  "\"prefix\": %s}\n",
                  o->model.c_str(), c.architecture.c_str(), info.weight_format.c_str(),
                  static_cast<long long>(info.n_params), model->backend().device(), kernels::isa_name(kernels::active_isa()),
                  model->backend().n_threads(), decode_json.c_str(),
                  prefix_json.empty() ? "null" : prefix_json.c_str());
    } else {
      std::printf("model   %s (%s, %s, %.2fB params), %d threads (%s)\n", o->model.c_str(),
                  c.architecture.c_str(), info.weight_format.c_str(), info.n_params / 1e9,
                  model->backend().n_threads(), kernels::isa_name(kernels::active_isa()));
    }
    return 0;
  });
});

}  // namespace
}  // namespace pensieve::cli
