#include "chat/chat_config.h"

#include "format/gguf.h"
#include "tokenizer/gguf_tokenizer.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace pensieve::chat {
namespace fs = std::filesystem;
using nlohmann::ordered_json;

const char* const kFallbackTemplate =
    "{%- for message in messages -%}\n"
    "{%- if message.content is string -%}\n"
    "{%- set text = message.content -%}\n"
    "{%- else -%}\n"
    "{%- set text = message.content | selectattr('type', 'equalto', 'text')"
    " | map(attribute='text') | join('\\n') -%}\n"
    "{%- endif -%}\n"
    "{%- if message.role == 'system' -%}\n"
    "{{- text ~ '\\n\\n' -}}\n"
    "{%- else -%}\n"
    "{{- message.role | capitalize ~ ': ' ~ text ~ '\\n\\n' -}}\n"
    "{%- endif -%}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}Assistant:{%- endif -%}";

namespace {

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(ErrorKind::not_found, "{}: cannot open", path.string());
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

ordered_json read_json_file(const fs::path& path) {
  try {
    return ordered_json::parse(read_text(path));
  } catch (const ordered_json::exception& e) {  // parse_error, or out_of_range for 1e400
    fail("{}: invalid JSON: {}", path.string(), e.what());
  }
}

std::optional<std::string> token_text(const ordered_json& config, const char* key,
                                      const fs::path& file) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) {
    auto content = it->find("content");
    if (content != it->end() && content->is_string()) return content->get<std::string>();
  }
  fail("{}: '{}' must be a string or an object with a string 'content'", file.string(), key);
}

void read_template_field(const ordered_json& value, const fs::path& file, ChatConfig& out) {
  if (value.is_null()) return;
  if (value.is_string()) {
    out.template_source = value.get<std::string>();
    out.source_file = file.string();
    return;
  }
  if (!value.is_array()) fail("{}: 'chat_template' must be a string or a list", file.string());
  for (const auto& entry : value) {
    if (!entry.is_object() || !entry.contains("name") || !entry.contains("template") ||
        !entry["name"].is_string() || !entry["template"].is_string()) {
      fail("{}: each 'chat_template' entry needs string 'name' and 'template'", file.string());
    }
    out.named_templates[entry["name"].get<std::string>()] = entry["template"].get<std::string>();
  }
  if (auto it = out.named_templates.find("default"); it != out.named_templates.end()) {
    out.template_source = it->second;
    out.source_file = file.string() + " (default)";
  }
}

}  // namespace

void ChatConfig::prepare() {
  auto parse_one = [](const std::string& source, const std::string& where) {
    try {
      return std::make_shared<const ChatTemplate>(ChatTemplate::parse(source));
    } catch (const Error& e) {
      throw Error(e.kind(), where + ": " + e.what());
    }
  };
  parsed = parse_one(has_template() ? template_source : std::string(kFallbackTemplate),
                     has_template() ? source_file : "fallback chat template");
  parsed_named.clear();
  for (const auto& [name, source] : named_templates)
    parsed_named[name] = parse_one(source, source_file + " template '" + name + "'");
}

ChatConfig load_chat_config(const std::string& model_dir) {
  if (const std::string gguf = find_gguf(model_dir); !gguf.empty()) {
    // A GGUF file: tokenizer.chat_template and the special tokens' texts.
    const GgufFile file(gguf);
    const nlohmann::json c = gguf_tokenizer_config(file);
    ChatConfig config;
    if (c.contains("chat_template")) config.template_source = c["chat_template"].get<std::string>();
    config.source_file = gguf + " (tokenizer.chat_template)";
    for (auto [key, slot] : {std::pair{"bos_token", &config.bos_token}, {"eos_token", &config.eos_token},
                             {"pad_token", &config.pad_token}, {"unk_token", &config.unk_token}})
      if (c.contains(key)) *slot = c[key].get<std::string>();
    config.prepare();
    return config;
  }
  const fs::path dir(model_dir);
  if (!fs::is_directory(dir)) fail(ErrorKind::not_found, "{}: not a directory", model_dir);
  ChatConfig config;
  const fs::path tokenizer_config = dir / "tokenizer_config.json";
  if (fs::exists(tokenizer_config)) {
    const ordered_json j = read_json_file(tokenizer_config);
    if (!j.is_object()) fail("{}: expected a JSON object", tokenizer_config.string());
    if (auto it = j.find("chat_template"); it != j.end())
      read_template_field(*it, tokenizer_config, config);
    config.bos_token = token_text(j, "bos_token", tokenizer_config);
    config.eos_token = token_text(j, "eos_token", tokenizer_config);
    config.pad_token = token_text(j, "pad_token", tokenizer_config);
    config.unk_token = token_text(j, "unk_token", tokenizer_config);
  }
  // Processors of multimodal models keep it in chat_template.json.
  const fs::path processor_template = dir / "chat_template.json";
  if (!config.has_template() && fs::exists(processor_template)) {
    const ordered_json j = read_json_file(processor_template);
    if (j.is_object() && j.contains("chat_template"))
      read_template_field(j["chat_template"], processor_template, config);
  }
  const fs::path jinja_file = dir / "chat_template.jinja";
  if (fs::exists(jinja_file)) {
    config.template_source = read_text(jinja_file);
    config.source_file = jinja_file.string();
  }
  const fs::path extra_dir = dir / "additional_chat_templates";
  if (fs::is_directory(extra_dir)) {
    for (const auto& entry : fs::directory_iterator(extra_dir)) {
      if (entry.path().extension() == ".jinja")
        config.named_templates[entry.path().stem().string()] = read_text(entry.path());
    }
  }
  if (config.source_file.empty()) config.source_file = tokenizer_config.string();
  config.prepare();
  return config;
}

std::string render_chat(const ChatConfig& config, const ordered_json& messages,
                        const ordered_json* tools, bool add_generation_prompt,
                        const ordered_json& extra_vars, const TemplateLimits& limits) {
  if (!messages.is_array()) fail("chat: 'messages' must be a list");
  if (!extra_vars.is_object() && !extra_vars.is_null())
    fail("chat: extra template variables must be an object");
  std::shared_ptr<const ChatTemplate> tmpl = config.parsed;
  const bool has_tools = tools && !tools->is_null();
  if (has_tools) {
    if (auto it = config.parsed_named.find("tool_use"); it != config.parsed_named.end())
      tmpl = it->second;
  }
  if (!tmpl) tmpl = std::make_shared<const ChatTemplate>(ChatTemplate::parse(kFallbackTemplate));
  ordered_json context = ordered_json::object();
  context["messages"] = messages;
  if (has_tools) context["tools"] = *tools;
  context["add_generation_prompt"] = add_generation_prompt;
  if (config.bos_token) context["bos_token"] = *config.bos_token;
  if (config.eos_token) context["eos_token"] = *config.eos_token;
  if (config.pad_token) context["pad_token"] = *config.pad_token;
  if (config.unk_token) context["unk_token"] = *config.unk_token;
  if (extra_vars.is_object())
    for (const auto& [k, v] : extra_vars.items()) context[k] = v;
  return tmpl->render(context, limits);
}

}  // namespace pensieve::chat
