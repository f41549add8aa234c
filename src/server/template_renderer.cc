#include "server/template_renderer.h"

namespace pensieve::server {
namespace {

bool mentions(const std::string& source, const char* word) {
  return source.find(word) != std::string::npos;
}

}  // namespace

TemplateRenderer::TemplateRenderer(chat::ChatConfig config) : chat_(std::move(config)) {
  if (chat_.parsed == nullptr && chat_.has_template()) chat_.prepare();
  std::string all = chat_.template_source;
  for (const auto& [name, src] : chat_.named_templates) all += src;
  native_tools_ = mentions(all, "tools");
  thinking_ = mentions(all, "enable_thinking");
}

std::string TemplateRenderer::render(const nlohmann::ordered_json& messages,
                                     const nlohmann::ordered_json* tools,
                                     const nlohmann::ordered_json& extra_vars) const {
  bool add_generation_prompt = true;
  nlohmann::ordered_json vars = nlohmann::ordered_json::object();
  for (auto& [k, v] : extra_vars.items()) {
    if (k == "add_generation_prompt") add_generation_prompt = v.is_boolean() ? v.get<bool>() : true;
    else vars[k] = v;
  }
  return chat::render_chat(chat_, messages, tools, add_generation_prompt, vars);
}

}  // namespace pensieve::server
