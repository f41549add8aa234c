// A Messages API request body as POST /v1/messages and
// /v1/messages/count_tokens take it: JSON -> MessagesRequest -> the prompt
// rendered through a real chat template (Qwen3's: tools, thinking) and also
// through the generic tool instructions (stories260K's plain template) ->
// tokenized. Input: the request body.
// Contract: every failure is a 4xx ApiError (what the client gets), never a
// 5xx, another exception or a crash.
#include <nlohmann/json.hpp>

#include "chat/chat_config.h"
#include "core/error.h"
#include "fuzz_support.h"
#include "server/api_error.h"
#include "server/prompt.h"
#include "server/request.h"
#include "server/template_renderer.h"
#include "tokenizer/tokenizer.h"

using namespace pensieve;
using namespace pensieve::server;

namespace {

struct Model {
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<TemplateRenderer> renderer;
  ModelInfo info;
};

Model load(const std::string& tokenizer_dir, const std::string& config_dir) {
  Model m;
  m.tokenizer = Tokenizer::load(tokenizer_dir);
  m.renderer = std::make_unique<TemplateRenderer>(chat::load_chat_config(config_dir));
  m.info.id = "fuzz";
  m.info.context_size = 4096;
  m.info.native_tools = m.renderer->native_tools();
  m.info.thinking = m.renderer->thinking();
  return m;
}

const std::vector<Model>& models() {
  static const std::vector<Model> all = [] {
    std::vector<Model> v;
    const std::string data = fuzz::test_data_dir();
    v.push_back(load(data + "/tokenizers/qwen3", data + "/tokenizers/qwen3"));
    v.push_back(load(data + "/tokenizers/tok512", data + "/tokenizers/tok512"));
    return v;
  }();
  return all;
}

void check(const std::exception& e, const char* where) {
  ApiError api = to_api_error(e);
  if (api.status() >= 500) fuzz::contract_broken(where, std::to_string(api.status()) + " " + api.what());
}

}  // namespace

// The model files load once, before the first input is timed.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  (void)models();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  nlohmann::ordered_json json;
  try {
    json = parse_request_body(body);
  } catch (const std::exception& e) {
    check(e, "parse_request_body");
    return 0;
  }
  for (bool count_tokens : {false, true}) {
    MessagesRequest request;
    try {
      request = parse_messages_request(json, {!count_tokens, false});
    } catch (const std::exception& e) {
      check(e, "parse_messages_request");
      continue;
    }
    for (const Model& m : models()) {
      try {
        RenderFn render = [&m](const nlohmann::ordered_json& messages,
                               const nlohmann::ordered_json* tools,
                               const nlohmann::ordered_json& extra) {
          return m.renderer->render(messages, tools, extra);
        };
        Prompt prompt = render_prompt(render, m.info, request);
        (void)m.tokenizer->encode(prompt.text, false);
      } catch (const std::exception& e) {
        check(e, "render_prompt");
      }
    }
  }
  return 0;
}
