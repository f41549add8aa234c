// A deterministic Backend for protocol tests: tokenize is one id per byte,
// render is a JSON dump of its inputs (so tests can see exactly what the
// template received) and submit plays a script of text pieces on a thread.
#pragma once

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include "core/error.h"
#include "server/backend.h"

namespace pensieve::server::test {

struct Script {
  std::vector<std::string> pieces;       // one token event each
  FinishReason finish = FinishReason::eos;  // done event's finish
  std::string error;                     // non-empty: an error event instead of done
  int64_t n_cached = 0;                  // reported in the first progress event
  int64_t n_cache_created = 0;           // reported with every token event (as if learnt late)
  int n_progress = 0;                    // progress events before the first token
  std::chrono::milliseconds progress_delay{0};
  std::chrono::milliseconds token_delay{0};
  bool until_cancelled = false;          // after the pieces, keep going until cancel()
};

class ScriptedBackend : public Backend {
 public:
  ModelInfo model{"scripted-1", "Scripted Model", 100000, false, true, true};
  bool think_in_prompt = false;          // render ends with "<think>\n" when thinking
  bool queue_full = false;               // submit returns nullptr
  std::atomic<int> n_submitted{0};
  std::atomic<int> n_cancelled{0};

  ~ScriptedBackend() override {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& t : threads_) t.join();
  }

  void set_script(Script s) {
    std::lock_guard<std::mutex> lock(mutex_);
    script_ = std::move(s);
  }
  std::string last_render() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return last_render_;
  }
  GenerationRequest last_request() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return last_request_;
  }

  ModelInfo info() const override { return model; }

  std::vector<int32_t> tokenize(const std::string& text) const override {
    std::vector<int32_t> ids;
    for (unsigned char c : text) ids.push_back(c);
    return ids;
  }

  std::string render(const nlohmann::ordered_json& messages, const nlohmann::ordered_json* tools,
                     const nlohmann::ordered_json& extra_vars) const override {
    for (const auto& m : messages)
      if (m.contains("content") && m["content"] == "RAISE")
        fail("template error: roles must alternate");
      else if (m.contains("content") && m["content"] == "CRASH")
        throw std::runtime_error("renderer crashed");
    nlohmann::ordered_json all = {{"messages", messages},
                                  {"tools", tools ? *tools : nlohmann::ordered_json()},
                                  {"vars", extra_vars}};
    std::string text = all.dump() + "\n<|assistant|>\n";
    if (think_in_prompt && extra_vars.value("enable_thinking", false)) text += "<think>\n";
    std::lock_guard<std::mutex> lock(mutex_);
    last_render_ = text;
    return text;
  }

  std::shared_ptr<Generation> submit(GenerationRequest request, EventCallback on_event) override {
    if (queue_full) return nullptr;
    ++n_submitted;
    auto gen = std::make_shared<ScriptedGeneration>(this);
    std::lock_guard<std::mutex> lock(mutex_);
    last_request_ = request;
    Script script = script_;
    threads_.emplace_back([gen, script, on_event] { play(*gen, script, on_event); });
    return gen;
  }

 private:
  struct ScriptedGeneration : Generation {
    explicit ScriptedGeneration(ScriptedBackend* b) : backend(b) {}
    void cancel() override {
      if (!cancelled.exchange(true)) ++backend->n_cancelled;
    }
    ScriptedBackend* backend;
    std::atomic<bool> cancelled{false};
  };

  static bool sleep_unless_cancelled(ScriptedGeneration& gen, std::chrono::milliseconds d) {
    auto until = std::chrono::steady_clock::now() + d;
    while (std::chrono::steady_clock::now() < until) {
      if (gen.cancelled) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return !gen.cancelled;
  }

  static void play(ScriptedGeneration& gen, const Script& script, const EventCallback& emit) {
    using Kind = GenerationEvent::Kind;
    auto done = [&](FinishReason finish) {
      GenerationEvent e;
      e.kind = Kind::done;
      e.finish = finish;
      emit(e);
    };
    GenerationEvent first;
    first.kind = Kind::progress;
    first.n_cached = script.n_cached;
    first.n_prompt_done = script.n_cached;
    emit(first);
    for (int i = 0; i < script.n_progress; ++i) {
      if (!sleep_unless_cancelled(gen, script.progress_delay)) return done(FinishReason::cancelled);
      GenerationEvent e;
      e.kind = Kind::progress;
      e.n_prompt_done = i + 1;
      emit(e);
    }
    int32_t id = 0;
    for (const std::string& piece : script.pieces) {
      if (!sleep_unless_cancelled(gen, script.token_delay)) return done(FinishReason::cancelled);
      GenerationEvent e;
      e.kind = Kind::token;
      e.token = id++;
      e.text = piece;
      e.n_cache_created = script.n_cache_created;
      emit(e);
    }
    while (script.until_cancelled && !gen.cancelled) {
      if (!sleep_unless_cancelled(gen, std::chrono::milliseconds(5))) break;
      GenerationEvent e;
      e.kind = Kind::token;
      e.token = id++;
      e.text = "la ";
      emit(e);
    }
    if (gen.cancelled) return done(FinishReason::cancelled);
    if (!script.error.empty()) {
      GenerationEvent e;
      e.kind = Kind::error;
      e.error = script.error;
      return emit(e);
    }
    done(script.finish);
  }

  mutable std::mutex mutex_;
  Script script_;
  mutable std::string last_render_;
  GenerationRequest last_request_;
  std::vector<std::thread> threads_;
};

}  // namespace pensieve::server::test
