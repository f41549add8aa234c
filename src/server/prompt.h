// Turns a parsed Anthropic request into the chat template's input (Hugging
// Face style messages + tools) and renders/tokenizes it through the Backend.
//
// - System prompt first: the top-level `system` blocks joined with "\n",
//   minus Claude Code's per-request `x-anthropic-billing-header:` line (it
//   changes every request and would defeat prefix caching).
// - tool_use -> assistant "tool_calls"; tool_result -> {"role": "tool"}.
// - Templates without tool support (ModelInfo::native_tools false) get the
//   generic instruction block documented in docs/api-compatibility.md and see
//   earlier calls/results as <tool_call>/<tool_response> text.
// - A final assistant message is a prefill: the prompt is rendered without it
//   and its text is appended after the generation prompt.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "server/backend.h"
#include "server/request.h"

namespace pensieve::server {

inline constexpr const char* kBillingHeaderPrefix = "x-anthropic-billing-header:";

struct TemplateInput {
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  nlohmann::ordered_json tools;        // null when the template gets no tools
  nlohmann::ordered_json extra_vars = nlohmann::ordered_json::object();
  std::string prefill;                 // appended after the rendered prompt
  bool tools_active = false;           // the model was told about tools: parse <tool_call>
  bool thinking = false;               // enable_thinking was passed: parse <think>
};

TemplateInput build_template_input(const MessagesRequest& request, const ModelInfo& info);

// The generic tool instructions for templates without tool support.
std::string generic_tool_instructions(const std::vector<Tool>& tools, const ToolChoice& choice);

// <tool_call>{"name": ..., "arguments": {...}}</tool_call>, as models are told to write it.
std::string format_tool_call(const std::string& name, const nlohmann::ordered_json& arguments);

struct Prompt {
  std::string text;
  std::vector<int32_t> tokens;
  bool tools_active = false;
  bool thinking = false;
  bool starts_in_thinking = false;  // the template already opened <think> in the prompt
  // Where the request's last cache_control breakpoint falls: the characters
  // of `text` before it (0: no breakpoint), and (build_prompt) the tokens.
  size_t breakpoint_chars = 0;
  int64_t n_breakpoint_tokens = 0;
};

// Renders messages, tools and template variables (Backend::render's contract).
using RenderFn = std::function<std::string(const nlohmann::ordered_json& messages,
                                           const nlohmann::ordered_json* tools,
                                           const nlohmann::ordered_json& extra_vars)>;

// The prompt's text (the template's rendering plus any prefill) and what the
// answer is parsed for; `tokens` is left empty. `pensieve render` prints it.
Prompt render_prompt(const RenderFn& render, const ModelInfo& info, const MessagesRequest& request);

// render_prompt through the backend's template, then tokenized.
Prompt build_prompt(const Backend& backend, const ModelInfo& info, const MessagesRequest& request);

}  // namespace pensieve::server
