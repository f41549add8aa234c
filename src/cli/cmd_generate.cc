// pensieve generate: token ids in, generated token ids out (JSON).
#include <fmt/format.h>

#include <cstdio>
#include <memory>

#include "cli/command.h"
#include "core/error.h"
#include "engine/session.h"
#include "models/model.h"

namespace pensieve::cli {
namespace {

struct Opts {
  std::string model, tokens;
  int64_t max_tokens = 128;
  float temperature = 0.0f, top_p = 1.0f, min_p = 0.0f;
  int top_k = 0;
  uint64_t seed = 0;
  int threads = 0;
  int64_t ctx_size = 0;
};

RegisterCommand reg("generate", [](CLI::App& app) {
  app.description("Generate tokens after a prompt of token ids; prints JSON {\"tokens\": [...]}");
  auto o = std::make_shared<Opts>();
  app.add_option("--model", o->model, "model directory")->required();
  app.add_option("--tokens", o->tokens, "comma-separated prompt token ids")->required();
  app.add_option("--max-tokens", o->max_tokens, "most tokens to generate")->check(CLI::NonNegativeNumber);
  app.add_option("--temperature", o->temperature, "0 = greedy")->check(CLI::NonNegativeNumber);
  app.add_option("--top-p", o->top_p, "nucleus sampling mass")->check(CLI::Range(0.0, 1.0));
  app.add_option("--top-k", o->top_k, "keep the k most likely tokens (0 = off)")->check(CLI::NonNegativeNumber);
  app.add_option("--min-p", o->min_p, "drop tokens below min_p x p(best)")->check(CLI::Range(0.0, 1.0));
  app.add_option("--seed", o->seed, "random seed for sampling");
  app.add_option("--threads", o->threads, "worker threads (default: all cores)");
  app.add_option("--ctx-size", o->ctx_size, "context length (default: prompt + max tokens)");
  return std::function<int()>([o] {
    const std::vector<int> ids = parse_int_list(o->tokens, "--tokens");
    if (ids.empty()) fail("--tokens: at least one token id is needed");
    auto model = load_model(o->model, {o->threads});
    const int64_t ctx = o->ctx_size > 0 ? o->ctx_size : static_cast<int64_t>(ids.size()) + o->max_tokens;
    Session session(*model, ctx);
    const std::vector<int32_t> prompt(ids.begin(), ids.end());
    SamplingParams sp{o->temperature, o->top_p, o->top_k, o->min_p, o->seed};
    const GenerateResult r = generate(session, prompt, o->max_tokens, model->config().eos_token_ids, sp);
    std::string out = "{\"tokens\": [";
    for (size_t i = 0; i < r.tokens.size(); ++i) out += fmt::format("{}{}", i ? ", " : "", r.tokens[i]);
    out += fmt::format("], \"stop_reason\": \"{}\"}}\n", r.stopped_on_eos ? "eos" : "max_tokens");
    std::fwrite(out.data(), 1, out.size(), stdout);
    return 0;
  });
});

}  // namespace
}  // namespace pensieve::cli
