// `pensieve render`: the exact prompt `serve` builds for a Messages API
// request (system, content blocks, tools in Anthropic's shape), through the
// same code as the server (server/prompt.h, server/template_renderer.h),
// with no model weights needed. --raw hands Hugging Face style messages to
// the chat template as they are, for debugging a template.
#include <cstdio>
#include <fstream>
#include <sstream>

#include "chat/chat_config.h"
#include "cli/command.h"
#include "core/error.h"
#include "server/api_error.h"
#include "server/prompt.h"
#include "server/request.h"
#include "server/template_renderer.h"

namespace pensieve::cli {
namespace {

using nlohmann::ordered_json;

struct RenderOpts {
  std::string model;
  std::string messages_file;
  std::string tools_file;
  bool raw = false;
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
  } catch (const ordered_json::exception& e) {  // parse_error, or out_of_range for 1e400
    fail("{}: {}: invalid JSON: {}", option, path, e.what());
  }
}

// The prompt serve builds for `body` (a request, or just its messages).
std::string render_request(const chat::ChatConfig& config, ordered_json body,
                           const ordered_json& tools, const std::string& file) {
  if (body.is_array()) body = ordered_json{{"messages", std::move(body)}};
  if (!body.is_object()) fail("--messages: {}: expected a Messages API request or a list of messages", file);
  if (!tools.is_null()) body["tools"] = tools;
  // What the prompt does not depend on may be left out.
  if (!body.contains("model")) body["model"] = "render";
  server::MessagesRequest request;
  try {
    request = server::parse_messages_request(body, {.require_max_tokens = false, .vision = false});
  } catch (const server::ApiError& e) {
    fail("--messages: {}: {}", file, e.what());
  }
  const server::TemplateRenderer renderer(config);
  server::ModelInfo info;
  info.native_tools = renderer.native_tools();
  info.thinking = renderer.thinking();
  const server::Prompt prompt = server::render_prompt(
      [&renderer](const ordered_json& messages, const ordered_json* tools, const ordered_json& vars) {
        return renderer.render(messages, tools, vars);
      },
      info, request);
  return prompt.text;
}

RegisterCommand reg("render", [](CLI::App& app) {
  auto opts = std::make_shared<RenderOpts>();
  app.description(
      "Print the prompt `serve` builds for a Messages API request (system, content blocks, "
      "tools), exactly, through the server's own code; or with --raw, what the chat template "
      "makes of Hugging Face style messages");
  app.add_option("--model", opts->model, "model or tokenizer directory")->required();
  app.add_option("--messages,--request", opts->messages_file,
                 "JSON file: a Messages API request body (model and max_tokens may be left out), "
                 "or a list of its messages; with --raw, Hugging Face style messages")
      ->required();
  app.add_option("--tools", opts->tools_file,
                 "JSON file: tools in Anthropic's shape (name, description, input_schema), used "
                 "instead of the request's; with --raw, in the template's shape");
  app.add_flag("--raw", opts->raw,
               "pass the messages and tools to the chat template as they are, without the "
               "server's conversion");
  app.add_flag("--no-generation-prompt", opts->no_generation_prompt,
               "with --raw: do not open an assistant turn at the end");
  app.add_option("--var", opts->vars,
                 "with --raw: extra template variable, key=JSON value (repeatable)");
  return std::function<int()>([opts] {
    const chat::ChatConfig config = chat::load_chat_config(opts->model);
    ordered_json messages = read_json_arg(opts->messages_file, "--messages");
    ordered_json tools;
    if (!opts->tools_file.empty()) tools = read_json_arg(opts->tools_file, "--tools");
    std::string prompt;
    if (!opts->raw) {
      // The server decides these from the request itself.
      if (opts->no_generation_prompt || !opts->vars.empty())
        fail("--no-generation-prompt and --var go with --raw; a request sets the prompt's "
             "variables itself (thinking, a final assistant message as prefill)");
      prompt = render_request(config, std::move(messages), tools, opts->messages_file);
    } else {
      if (messages.is_object() && messages.contains("messages")) messages = messages["messages"];
      ordered_json vars = ordered_json::object();
      for (const std::string& kv : opts->vars) {
        const size_t eq = kv.find('=');
        if (eq == std::string::npos || eq == 0) fail("--var: '{}' is not key=value", kv);
        const std::string value = kv.substr(eq + 1);
        try {
          vars[kv.substr(0, eq)] = ordered_json::parse(value);
        } catch (const ordered_json::exception&) {
          vars[kv.substr(0, eq)] = value;  // a bare word is taken as a string
        }
      }
      prompt = chat::render_chat(config, messages, tools.is_null() ? nullptr : &tools,
                                 !opts->no_generation_prompt, vars);
    }
    std::fwrite(prompt.data(), 1, prompt.size(), stdout);
    std::fflush(stdout);
    return 0;
  });
});

}  // namespace
}  // namespace pensieve::cli
