// Where a model keeps its chat template and special tokens, and how a
// conversation becomes prompt text: what transformers' apply_chat_template
// does with tokenizer_config.json, chat_template.jinja and friends.
#pragma once

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "chat/chat_template.h"

namespace pensieve::chat {

struct ChatConfig {
  // The template used by default; empty when the model ships none (then the
  // plain-text fallback of docs/chat-templates.md applies).
  std::string template_source;
  // Named templates: from a [{name, template}] list ("tool_use", ...) or
  // additional_chat_templates/NAME.jinja.
  std::map<std::string, std::string> named_templates;
  // Special tokens as the template sees them; unset when the model has none.
  std::optional<std::string> bos_token, eos_token, pad_token, unk_token;
  std::string source_file;  // where the default template came from, for errors

  // Parsed templates, filled by load_chat_config (or prepare()).
  std::shared_ptr<const ChatTemplate> parsed;
  std::map<std::string, std::shared_ptr<const ChatTemplate>> parsed_named;

  bool has_template() const { return !template_source.empty(); }
  // Parses template_source and named_templates; throws Error naming source_file.
  void prepare();
};

// Reads DIR/tokenizer_config.json (chat_template as a string or a named list,
// special tokens as strings or {"content": ...}), DIR/chat_template.jinja
// (which wins over the config's template, as in transformers),
// DIR/chat_template.json and DIR/additional_chat_templates/*.jinja.
// A directory without any of these gets an empty config (fallback template).
ChatConfig load_chat_config(const std::string& model_dir);

// The template a model without one gets: "System text\n\nUser: ...\n\nAssistant: ...".
extern const char* const kFallbackTemplate;

// Renders `messages` with the model's template: sets messages, tools (left
// undefined when null), add_generation_prompt, the special tokens, then
// `extra_vars` (an object, e.g. {"enable_thinking": false}) on top. Uses the
// "tool_use" template when tools are given and the model names one.
std::string render_chat(const ChatConfig& config, const nlohmann::ordered_json& messages,
                        const nlohmann::ordered_json* tools, bool add_generation_prompt,
                        const nlohmann::ordered_json& extra_vars = nlohmann::ordered_json::object(),
                        const TemplateLimits& limits = {});

}  // namespace pensieve::chat
