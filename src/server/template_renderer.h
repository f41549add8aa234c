// The model's chat template as the server uses it: what it supports (tools
// rendered by the template itself, thinking) and the rendering of the
// Hugging Face style messages that build_template_input makes. The engine
// backend renders through it, and so does `pensieve render`, which is how
// that command shows exactly the prompt `serve` builds.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "chat/chat_config.h"

namespace pensieve::server {

class TemplateRenderer {
 public:
  explicit TemplateRenderer(chat::ChatConfig config);

  // The template renders `tools` and tool calls itself (Qwen); without it
  // the server writes its generic tool instructions into the system prompt.
  bool native_tools() const { return native_tools_; }
  // The template knows enable_thinking.
  bool thinking() const { return thinking_; }

  // Backend::render's contract (server/backend.h). Thread-safe.
  std::string render(const nlohmann::ordered_json& messages, const nlohmann::ordered_json* tools,
                     const nlohmann::ordered_json& extra_vars) const;

 private:
  chat::ChatConfig chat_;
  bool native_tools_ = false;
  bool thinking_ = false;
};

}  // namespace pensieve::server
