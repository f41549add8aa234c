// A Hugging Face chat template (Jinja2 text from tokenizer_config.json or
// chat_template.jinja), parsed once and rendered per request exactly as
// transformers' apply_chat_template renders it: jinja2 with trim_blocks,
// lstrip_blocks, loop controls, an immutable sandbox, raise_exception(),
// strftime_now() and a tojson that keeps key order and non-ASCII text.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

namespace pensieve::chat {

struct Program;

struct TemplateLimits {
  // One step per statement, expression node and loop iteration, plus one per
  // 256 bytes of string built; "chat template: exceeded N steps" past it.
  int64_t max_steps = 20'000'000;
  size_t max_output_bytes = 64u << 20;
  int max_call_depth = 100;  // macro recursion
};

class ChatTemplate {
 public:
  // Throws Error "chat template: line L, column C: ..." on a syntax error.
  static ChatTemplate parse(std::string source);

  // `context` must be an object; its keys become template variables (use
  // ordered_json so tool schemas keep their key order in tojson). Throws Error
  // "chat template: ..." when rendering fails, including the template's own
  // raise_exception() message.
  std::string render(const nlohmann::ordered_json& context,
                     const TemplateLimits& limits = {}) const;

  const std::string& source() const;

 private:
  std::shared_ptr<const Program> program_;
};

}  // namespace pensieve::chat
