#include "server/prompt.h"

#include <algorithm>
#include <cctype>
#include <map>

#include "server/api_error.h"

namespace pensieve::server {
namespace {

using json = nlohmann::ordered_json;

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

// Removes Claude Code's billing line(s) from a system text; the rest stays
// byte-identical so that the prompt prefix is stable across requests.
std::string strip_billing_lines(const std::string& text) {
  if (text.find(kBillingHeaderPrefix) == std::string::npos) return text;
  std::string out;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find('\n', pos);
    bool last = end == std::string::npos;
    std::string_view line(text.data() + pos, (last ? text.size() : end) - pos);
    if (!starts_with(line, kBillingHeaderPrefix)) {
      out.append(line);
      if (!last) out += '\n';
    }
    if (last) break;
    pos = end + 1;
  }
  return out;
}

std::string join_system(const std::vector<std::string>& blocks) {
  std::string out;
  for (const std::string& block : blocks) {
    std::string text = strip_billing_lines(block);
    if (text.empty()) continue;
    if (!out.empty()) out += "\n";
    out += text;
  }
  return out;
}

std::string tool_choice_instruction(const ToolChoice& choice) {
  std::string out;
  if (choice.type == ToolChoice::Type::any) out = "You must call at least one of the tools in this answer.";
  if (choice.type == ToolChoice::Type::tool)
    out = "You must call the tool \"" + choice.name + "\" in this answer.";
  if (choice.disable_parallel_tool_use) out += (out.empty() ? "" : " ") + std::string("Call at most one tool.");
  return out;
}

void append_paragraph(std::string& text, const std::string& paragraph) {
  if (paragraph.empty()) return;
  if (!text.empty()) text += "\n\n";
  text += paragraph;
}

struct Converter {
  const MessagesRequest& request;
  bool native;  // tools go through the template
  bool keep_reasoning;
  json out = json::array();
  std::map<std::string, std::string> tool_names;  // tool_use id -> name

  void push(json message) {
    // Merge consecutive plain user turns (text after tool results, split
    // user messages): Anthropic merges them too, and strict templates
    // reject two user turns in a row.
    if (!out.empty() && message["role"] == "user" && out.back()["role"] == "user") {
      std::string merged = out.back()["content"].get<std::string>();
      append_paragraph(merged, message["content"].get<std::string>());
      out.back()["content"] = merged;
      return;
    }
    out.push_back(std::move(message));
  }

  void add_user(const Message& m) {
    std::string text;
    auto flush = [&] {
      if (!text.empty()) push({{"role", "user"}, {"content", text}});
      text.clear();
    };
    for (const ContentBlock& block : m.content) {
      if (block.type == ContentBlock::Type::text) {
        if (!text.empty()) text += "\n";
        text += block.text;
      } else if (block.type == ContentBlock::Type::tool_result) {
        std::string name = tool_names[block.tool_use_id];
        if (native) {
          flush();
          json tool = {{"role", "tool"}, {"tool_call_id", block.tool_use_id}, {"name", name},
                       {"content", (block.is_error ? "Error: " : "") + block.text}};
          out.push_back(std::move(tool));
        } else {
          if (!text.empty()) text += "\n";
          text += "<tool_response name=\"" + name + "\"" + (block.is_error ? " is_error=\"true\"" : "") +
                  ">\n" + block.text + "\n</tool_response>";
        }
      }
    }
    flush();
  }

  void add_assistant(const Message& m) {
    std::string text, reasoning;
    json calls = json::array();
    for (const ContentBlock& block : m.content) {
      switch (block.type) {
        case ContentBlock::Type::text: text += block.text; break;
        case ContentBlock::Type::thinking: reasoning += block.text; break;
        case ContentBlock::Type::tool_use:
          tool_names[block.id] = block.name;
          if (native) {
            calls.push_back({{"type", "function"}, {"id", block.id},
                             {"function", {{"name", block.name}, {"arguments", block.input}}}});
          } else {
            if (!text.empty() && text.back() != '\n') text += "\n";
            text += format_tool_call(block.name, block.input);
          }
          break;
        default: break;
      }
    }
    json message = {{"role", "assistant"}, {"content", text}};
    if (!calls.empty()) message["tool_calls"] = std::move(calls);
    if (keep_reasoning && !reasoning.empty()) message["reasoning_content"] = reasoning;
    out.push_back(std::move(message));
  }

  void add_system(const Message& m) {
    std::vector<std::string> texts;
    for (const ContentBlock& block : m.content) texts.push_back(block.text);
    std::string text = join_system(texts);
    if (!text.empty()) out.push_back({{"role", "system"}, {"content", text}});
  }
};

// A final assistant message made only of text continues the answer.
bool is_prefill(const Message& m) {
  if (m.role != "assistant") return false;
  for (const ContentBlock& block : m.content)
    if (block.type != ContentBlock::Type::text) return false;
  return true;
}

}  // namespace

std::string format_tool_call(const std::string& name, const json& arguments) {
  json call = {{"name", name}, {"arguments", arguments}};
  return "<tool_call>\n" + dump_json(call) + "\n</tool_call>";
}

std::string generic_tool_instructions(const std::vector<Tool>& tools, const ToolChoice& choice) {
  std::string out =
      "# Tools\n\n"
      "You may call one or more tools to help with the user's request. The available tools, "
      "each with a JSON Schema for its arguments:\n<tools>\n";
  for (const Tool& tool : tools) {
    if (tool.deferred) continue;
    json t = {{"name", tool.name}, {"description", tool.description}, {"parameters", tool.input_schema}};
    out += dump_json(t) + "\n";
  }
  out +=
      "</tools>\n\n"
      "To call a tool, write a JSON object with its name and arguments inside "
      "<tool_call></tool_call> tags, one call per tag, and stop after the last call:\n"
      "<tool_call>\n{\"name\": \"<tool name>\", \"arguments\": {<arguments as a JSON object>}}\n"
      "</tool_call>\n"
      "The results come back in the next user message inside "
      "<tool_response name=\"<tool name>\"></tool_response> tags.";
  append_paragraph(out, tool_choice_instruction(choice));
  return out;
}

TemplateInput build_template_input(const MessagesRequest& request, const ModelInfo& info) {
  TemplateInput in;
  std::vector<const Tool*> visible;
  if (request.tool_choice.type != ToolChoice::Type::none)
    for (const Tool& tool : request.tools)
      if (!tool.deferred) visible.push_back(&tool);
  in.tools_active = !visible.empty();
  in.thinking = request.thinking != ThinkingMode::disabled && info.thinking;

  std::string system = join_system(request.system);
  if (in.tools_active && !info.native_tools)
    append_paragraph(system, generic_tool_instructions(request.tools, request.tool_choice));
  else if (in.tools_active)
    append_paragraph(system, tool_choice_instruction(request.tool_choice));
  if (!system.empty()) in.messages.push_back({{"role", "system"}, {"content", system}});

  if (in.tools_active && info.native_tools) {
    in.tools = json::array();
    for (const Tool* tool : visible)
      in.tools.push_back({{"type", "function"},
                          {"function", {{"name", tool->name}, {"description", tool->description},
                                        {"parameters", tool->input_schema}}}});
  }

  size_t n_messages = request.messages.size();
  if (is_prefill(request.messages.back())) {
    for (const ContentBlock& block : request.messages.back().content) in.prefill += block.text;
    if (!in.prefill.empty() && std::isspace(static_cast<unsigned char>(in.prefill.back())))
      invalid_request("", "final assistant content cannot end with trailing whitespace");
    --n_messages;
  }

  Converter converter{request, info.native_tools, info.thinking};
  converter.out = std::move(in.messages);
  for (size_t i = 0; i < n_messages; ++i) {
    const Message& m = request.messages[i];
    if (m.role == "user") converter.add_user(m);
    else if (m.role == "assistant") converter.add_assistant(m);
    else converter.add_system(m);
  }
  in.messages = std::move(converter.out);
  in.extra_vars = {{"add_generation_prompt", true}, {"enable_thinking", in.thinking}};
  return in;
}

namespace {

Prompt render_text(const RenderFn& render, const ModelInfo& info, const MessagesRequest& request) {
  TemplateInput in = build_template_input(request, info);
  Prompt prompt;
  prompt.text = render(in.messages, in.tools.is_null() ? nullptr : &in.tools, in.extra_vars);
  if (in.thinking && in.prefill.empty()) {
    size_t end = prompt.text.find_last_not_of(" \n");
    std::string_view head(prompt.text.data(), end == std::string::npos ? 0 : end + 1);
    prompt.starts_in_thinking = head.size() >= 7 && head.substr(head.size() - 7) == "<think>";
  }
  prompt.text += in.prefill;
  prompt.tools_active = in.tools_active;
  prompt.thinking = in.thinking;
  return prompt;
}

// Marks the last cache_control breakpoint (Anthropic's order: tools, system,
// messages; a top-level cache_control means the last block) with a sentinel
// in a copy of the request; false when there is none. A breakpoint on a
// block whose text the sentinel cannot follow (a tool_use) moves to the
// prompt's end.
constexpr std::string_view kBreakpointSentinel = "<<pensieve:cache-breakpoint>>";

enum class Mark { none, placed, at_end };

Mark mark_last_breakpoint(MessagesRequest& r) {
  const std::string s(kBreakpointSentinel);
  for (size_t m = r.messages.size(); m-- > 0;) {
    auto& content = r.messages[m].content;
    for (size_t b = content.size(); b-- > 0;) {
      const bool last = m + 1 == r.messages.size() && b + 1 == content.size();
      if (!content[b].cache_breakpoint && !(last && r.cache_at_end)) continue;
      switch (content[b].type) {
        case ContentBlock::Type::text:
        case ContentBlock::Type::tool_result:
        case ContentBlock::Type::thinking: content[b].text += s; return Mark::placed;
        default: return Mark::at_end;
      }
    }
  }
  if (r.cache_at_end) return Mark::at_end;
  for (size_t i = r.system.size(); i-- > 0;) {
    if (i < r.system_cache_breakpoints.size() && r.system_cache_breakpoints[i]) {
      r.system[i] += s;
      return Mark::placed;
    }
  }
  for (size_t i = r.tools.size(); i-- > 0;) {
    if (r.tools[i].cache_breakpoint) {
      r.tools[i].description += s;
      return Mark::placed;
    }
  }
  return Mark::none;
}

}  // namespace

Prompt render_prompt(const RenderFn& render, const ModelInfo& info, const MessagesRequest& request) {
  MessagesRequest marked = request;
  const Mark mark = mark_last_breakpoint(marked);
  // The marked rendering first, so the real one is the renderer's last.
  std::string text = mark == Mark::placed ? render_text(render, info, marked).text : std::string();
  Prompt prompt = render_text(render, info, request);
  if (mark == Mark::none) return prompt;
  prompt.breakpoint_chars = prompt.text.size();
  if (mark == Mark::at_end) return prompt;
  // The sentinel's place in the same rendering; where the template moved,
  // dropped, escaped or repeated it (or the rest differs), the prompt's end.
  const size_t at = text.find(kBreakpointSentinel);
  if (at == std::string::npos || text.find(kBreakpointSentinel, at + 1) != std::string::npos) return prompt;
  text.erase(at, kBreakpointSentinel.size());
  if (text == prompt.text) prompt.breakpoint_chars = at;
  return prompt;
}

Prompt build_prompt(const Backend& backend, const ModelInfo& info, const MessagesRequest& request) {
  Prompt prompt = render_prompt(
      [&backend](const json& messages, const json* tools, const json& vars) {
        return backend.render(messages, tools, vars);
      },
      info, request);
  prompt.tokens = backend.tokenize(prompt.text);
  // The tokens before the breakpoint: all but those of the text after it
  // (tokenized alone, so to within a token where one spans the boundary;
  // that text is the short end of a prompt, as clients place breakpoints).
  const auto n = static_cast<int64_t>(prompt.tokens.size());
  if (prompt.breakpoint_chars >= prompt.text.size()) {
    prompt.n_breakpoint_tokens = prompt.breakpoint_chars > 0 ? n : 0;
  } else if (prompt.breakpoint_chars > 0) {
    const auto after = static_cast<int64_t>(backend.tokenize(prompt.text.substr(prompt.breakpoint_chars)).size());
    prompt.n_breakpoint_tokens = std::clamp<int64_t>(n - after, 0, n);
  }
  return prompt;
}

}  // namespace pensieve::server
