// `pensieve render`: shows the exact prompt text a model's chat template makes
// of a conversation, with no model weights needed.
#include <cstdio>
#include <fstream>
#include <sstream>

#include "chat/chat_config.h"
#include "cli/command.h"
#include "core/error.h"

namespace pensieve::cli {
namespace {

using nlohmann::ordered_json;

struct RenderOpts {
  std::string model;
  std::string messages_file;
  std::string tools_file;
  bool no_generation_prompt = false;
  std::vector<std::string> vars;
};

ordered_json read_json_arg(const std::string& path, const std::string& option) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(ErrorKind::not_found, "{}: cannot open {}", option, path);
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return ordered_json::parse(ss.str());
  } catch (const ordered_json::parse_error& e) {
    fail("{}: {}: invalid JSON: {}", option, path, e.what());
  }
}

RegisterCommand reg("render", [](CLI::App& app) {
  auto opts = std::make_shared<RenderOpts>();
  app.description("Render a conversation with the model's chat template (prints the prompt)");
  app.add_option("--model", opts->model, "model or tokenizer directory")->required();
  app.add_option("--messages", opts->messages_file,
                 "JSON file: a list of messages, or an object with \"messages\"")
      ->required();
  app.add_option("--tools", opts->tools_file, "JSON file: a list of tool definitions");
  app.add_flag("--no-generation-prompt", opts->no_generation_prompt,
               "do not open an assistant turn at the end");
  app.add_option("--var", opts->vars, "extra template variable, key=JSON value (repeatable)");
  return std::function<int()>([opts] {
    const chat::ChatConfig config = chat::load_chat_config(opts->model);
    ordered_json messages = read_json_arg(opts->messages_file, "--messages");
    if (messages.is_object() && messages.contains("messages")) messages = messages["messages"];
    ordered_json tools;
    if (!opts->tools_file.empty()) tools = read_json_arg(opts->tools_file, "--tools");
    ordered_json vars = ordered_json::object();
    for (const std::string& kv : opts->vars) {
      const size_t eq = kv.find('=');
      if (eq == std::string::npos || eq == 0) fail("--var: '{}' is not key=value", kv);
      const std::string value = kv.substr(eq + 1);
      try {
        vars[kv.substr(0, eq)] = ordered_json::parse(value);
      } catch (const ordered_json::parse_error&) {
        vars[kv.substr(0, eq)] = value;  // a bare word is taken as a string
      }
    }
    const std::string prompt = chat::render_chat(
        config, messages, tools.is_null() ? nullptr : &tools, !opts->no_generation_prompt, vars);
    std::fwrite(prompt.data(), 1, prompt.size(), stdout);
    std::fflush(stdout);
    return 0;
  });
});

}  // namespace
}  // namespace pensieve::cli
