// The real Backend: the model's tokenizer and chat template in front of the
// engine thread. Detokenizes each request's tokens as they stream out.
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "chat/chat_config.h"
#include "engine/engine.h"
#include "server/backend.h"
#include "server/grammar_constraint.h"
#include "server/template_renderer.h"
#include "tokenizer/tokenizer.h"

namespace pensieve::server {

class EngineBackend : public Backend {
 public:
  // model_id: the name GET /v1/models lists (any requested name is served anyway).
  EngineBackend(std::string model_id, Engine& engine, const Tokenizer& tokenizer,
                chat::ChatConfig chat_config, std::vector<int32_t> stop_ids);

  ModelInfo info() const override { return info_; }
  std::vector<int32_t> tokenize(const std::string& text) const override;
  std::string render(const nlohmann::ordered_json& messages, const nlohmann::ordered_json* tools,
                     const nlohmann::ordered_json& extra_vars) const override;
  std::shared_ptr<Generation> submit(GenerationRequest request, EventCallback on_event) override;
  nlohmann::ordered_json stats() const override;
  bool set_held(bool held) override;

  const std::vector<int32_t>& stop_ids() const { return stop_ids_; }

 private:
  Engine& engine_;
  const Tokenizer& tokenizer_;
  TemplateRenderer renderer_;
  std::vector<int32_t> stop_ids_;
  ModelInfo info_;
  // Token texts for constrained decoding, built on the first forced tool call.
  mutable std::once_flag token_texts_once_;
  mutable std::shared_ptr<const TokenTexts> token_texts_;
};

}  // namespace pensieve::server
