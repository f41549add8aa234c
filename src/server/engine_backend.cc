#include "server/engine_backend.h"

#include <algorithm>
#include <mutex>

#include "core/error.h"

namespace pensieve::server {
namespace {

class EngineGeneration : public Generation {
 public:
  explicit EngineGeneration(std::shared_ptr<EngineHandle> h) : handle_(std::move(h)) {}
  void cancel() override { handle_->cancel(); }

 private:
  std::shared_ptr<EngineHandle> handle_;
};

}  // namespace

EngineBackend::EngineBackend(std::string model_id, Engine& engine, const Tokenizer& tokenizer,
                             chat::ChatConfig chat_config, std::vector<int32_t> stop_ids)
    : engine_(engine),
      tokenizer_(tokenizer),
      renderer_(std::move(chat_config)),
      stop_ids_(std::move(stop_ids)) {
  info_.id = model_id;
  info_.display_name = model_id;
  info_.context_size = engine_.ctx_size();
  info_.context_note = engine_.context_note();
  info_.prefix_cache = engine_.options().prefix_cache;
  info_.vision = false;
  info_.native_tools = renderer_.native_tools();
  info_.thinking = renderer_.thinking();
}

std::vector<int32_t> EngineBackend::tokenize(const std::string& text) const {
  return tokenizer_.encode(text, false);
}

std::string EngineBackend::render(const nlohmann::ordered_json& messages,
                                  const nlohmann::ordered_json* tools,
                                  const nlohmann::ordered_json& extra_vars) const {
  return renderer_.render(messages, tools, extra_vars);
}

std::shared_ptr<Generation> EngineBackend::submit(GenerationRequest request,
                                                  EventCallback on_event) {
  EngineRequest r;
  r.prompt = std::move(request.prompt);
  r.max_tokens = request.max_tokens;
  r.sampling.temperature = request.temperature;
  r.sampling.top_p = request.top_p;
  r.sampling.top_k = request.top_k;
  r.sampling.min_p = request.min_p;
  r.sampling.seed = request.seed ? *request.seed : std::random_device{}();
  r.stop_ids = stop_ids_;
  if (!request.forced_tools.empty()) {
    std::call_once(token_texts_once_,
                   [this] { token_texts_ = std::make_shared<const TokenTexts>(tokenizer_); });
    r.constraint = std::make_shared<GrammarConstraint>(token_texts_,
                                                       tool_call_grammar(request.forced_tools));
  }
  // The decoder lives with the request; events for one request never overlap.
  auto decoder = std::make_shared<StreamDecoder>(tokenizer_, true);
  r.on_event = [decoder, on_event](const EngineEvent& e) {
    GenerationEvent g;
    g.n_prompt_done = e.n_prompt_done;
    g.n_cached = e.n_cached;
    g.n_cache_created = e.n_cache_created;
    g.lookup_pending = e.lookup_pending;
    switch (e.kind) {
      case EngineEvent::Kind::progress:
        g.kind = GenerationEvent::Kind::progress;
        break;
      case EngineEvent::Kind::token:
        g.kind = GenerationEvent::Kind::token;
        g.token = e.token;
        g.text = decoder->step(e.token);
        break;
      case EngineEvent::Kind::done: {
        // Text held back mid-character comes out before the end.
        std::string rest = decoder->finish();
        if (!rest.empty()) {
          GenerationEvent t;
          t.kind = GenerationEvent::Kind::token;
          t.n_cached = e.n_cached;
          t.n_cache_created = e.n_cache_created;
          t.text = std::move(rest);
          on_event(t);
        }
        g.kind = GenerationEvent::Kind::done;
        g.finish = e.finish;
        break;
      }
      case EngineEvent::Kind::error:
        g.kind = GenerationEvent::Kind::error;
        g.error = e.error;
        break;
    }
    on_event(g);
  };
  auto handle = engine_.submit(std::move(r));
  if (handle == nullptr) return nullptr;
  return std::make_shared<EngineGeneration>(std::move(handle));
}

bool EngineBackend::set_held(bool held) {
  if (held) engine_.hold();
  else engine_.release();
  return true;
}

nlohmann::ordered_json EngineBackend::stats() const {
  const EngineStats s = engine_.stats();
  return {{"kv_blocks_total", s.n_blocks_total},
          {"kv_blocks_free", s.n_blocks_free},
          {"kv_blocks_cached", s.n_blocks_cached},
          {"kv_blocks_used", s.n_blocks_used},
          {"n_running", s.n_running},
          {"n_waiting", s.n_waiting},
          {"n_steps", s.n_steps},
          {"n_preemptions", s.n_preemptions},
          {"n_evictions", s.n_evictions},
          {"prefix_cache", engine_.options().prefix_cache},
          {"n_prompt_tokens", s.n_prompt_tokens},
          {"n_cached_tokens", s.n_cached_tokens},
          {"prefix_cache_disk", engine_.options().disk ? engine_.options().disk->folder() : std::string()},
          {"n_disk_blocks_read", s.n_disk_reads},
          {"n_disk_blocks_written", s.n_disk_writes},
          {"n_disk_blocks_dropped", s.n_disk_dropped},
          {"device", engine_.model().backend().device()},
          {"backend", engine_.model().backend().description()}};
}

}  // namespace pensieve::server
