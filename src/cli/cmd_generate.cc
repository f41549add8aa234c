// pensieve generate: token ids (or text, through the model's tokenizer) in,
// generated token ids (and text) out, as JSON.
#include <fmt/format.h>

#include <cstdio>
#include <filesystem>
#include <memory>

#include <nlohmann/json.hpp>

#include "chat/chat_config.h"
#include "chat/stop_ids.h"
#include "cli/command.h"
#include "core/error.h"
#include "engine/session.h"
#include "models/model.h"
#include "tokenizer/tokenizer.h"

namespace pensieve::cli {
namespace {

bool has_tokenizer(const std::string& dir) {
  return std::filesystem::exists(std::filesystem::path(dir) / "tokenizer.json") ||
         std::filesystem::exists(std::filesystem::path(dir) / "tokenizer.json.gz");
}

struct Opts {
  std::string model, tokens, prompt;
  int64_t max_tokens = 128;
  float temperature = 0.0f, top_p = 1.0f, min_p = 0.0f;
  int top_k = 0;
  uint64_t seed = 0;
  int threads = 0;
  std::string device = "auto";
  std::string kv_type = "f16";
  int64_t ctx_size = 0, sliding_window = -1;
};

RegisterCommand reg("generate", [](CLI::App& app) {
  app.description(
      "Generate tokens after a prompt (token ids, or text with --prompt); prints JSON "
      "{\"tokens\": [...], \"stop_reason\": ...} (plus \"text\" with --prompt). Stops after "
      "the model's end-of-generation ids, chosen as `pensieve serve` chooses them");
  auto o = std::make_shared<Opts>();
  app.add_option("--model", o->model, "model directory")->required();
  auto* tokens = app.add_option("--tokens", o->tokens, "comma-separated prompt token ids");
  auto* prompt = app.add_option("--prompt", o->prompt,
                                "prompt text, tokenized with the model's tokenizer.json (special "
                                "tokens such as BOS added as the tokenizer says)");
  tokens->excludes(prompt);
  prompt->excludes(tokens);
  app.add_option("--max-tokens", o->max_tokens, "most tokens to generate")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--temperature", o->temperature, "0 = greedy")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--top-p", o->top_p, "nucleus sampling mass")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--top-k", o->top_k, "keep the k most likely tokens (0 = off)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--min-p", o->min_p, "drop tokens below min_p x p(best)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--seed", o->seed, "random seed for sampling")->capture_default_str();
  add_threads_option(app, o->threads);
  add_device_option(app, o->device);
  add_kv_type_option(app, o->kv_type);
  app.add_option("--ctx-size", o->ctx_size, "context length (default: prompt + max tokens)");
  app.add_option("--sliding-window", o->sliding_window,
                 "attend to the last N positions only (0: all; default: config.json's sliding_window)")
      ->check(CLI::NonNegativeNumber);
  return std::function<int()>([o] {
    std::vector<int> ids;
    std::unique_ptr<Tokenizer> tokenizer;
    if (!o->prompt.empty()) {
      tokenizer = Tokenizer::load(o->model);
      for (int32_t id : tokenizer->encode(o->prompt, true)) ids.push_back(id);
      if (ids.empty()) fail("--prompt: the text encodes to no tokens");
    } else {
      if (o->tokens.empty()) fail("give the prompt as --tokens IDS or --prompt TEXT");
      ids = parse_int_list(o->tokens, "--tokens");
      if (ids.empty()) fail("--tokens: at least one token id is needed");
    }
    auto model = load_model(o->model, {.n_threads = o->threads, .sliding_window = o->sliding_window, .device = o->device, .kv_type = *parse_kv_type(o->kv_type)});
    // The same stop ids as `pensieve serve` wherever the directory has a
    // tokenizer (so Phi-3 stops at <|end|>, Qwen at <|im_end|>); config.json's
    // eos ids alone where it has only weights.
    const std::vector<int64_t>& eos = model->config().eos_token_ids;
    std::vector<int32_t> stop_ids(eos.begin(), eos.end());
    if (!tokenizer && has_tokenizer(o->model)) tokenizer = Tokenizer::load(o->model);
    if (tokenizer) {
      const chat::ChatConfig chat = chat::load_chat_config(o->model);
      stop_ids = chat::collect_stop_ids(eos, *tokenizer, chat);
    }
    const int64_t ctx = o->ctx_size > 0 ? o->ctx_size : static_cast<int64_t>(ids.size()) + o->max_tokens;
    Session session(*model, ctx);
    const std::vector<int32_t> prompt(ids.begin(), ids.end());
    SamplingParams sp{o->temperature, o->top_p, o->top_k, o->min_p, o->seed};
    const GenerateResult r = generate(session, prompt, o->max_tokens, stop_ids, sp);
    std::string out = "{\"tokens\": [";
    for (size_t i = 0; i < r.tokens.size(); ++i) out += fmt::format("{}{}", i ? ", " : "", r.tokens[i]);
    out += fmt::format("], \"stop_reason\": \"{}\"", finish_reason_name(r.finish));
    if (!o->prompt.empty()) {
      const nlohmann::json text = tokenizer->decode(r.tokens, true);
      out += ", \"text\": " + text.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    }
    out += "}\n";
    std::fwrite(out.data(), 1, out.size(), stdout);
    return 0;
  });
});

}  // namespace
}  // namespace pensieve::cli
