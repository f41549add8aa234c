// pensieve logits: full-vocabulary logits at chosen positions of one forward pass.
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
  std::string model, tokens, positions = "last";
  int threads = 0;
  std::string device = "auto";
  std::string kv_type = "f16";
};

std::vector<int64_t> parse_positions(const std::string& spec, int64_t n) {
  std::vector<int64_t> out;
  if (spec == "all") {
    for (int64_t i = 0; i < n; ++i) out.push_back(i);
  } else if (spec == "last") {
    out.push_back(n - 1);
  } else {
    for (int p : parse_int_list(spec, "--positions")) {
      if (p >= n) fail("--positions: {} is past the last token (index {})", p, n - 1);
      out.push_back(p);
    }
  }
  return out;
}

RegisterCommand reg("logits", [](CLI::App& app) {
  app.description("Print logits at token positions as JSON");
  auto o = std::make_shared<Opts>();
  app.add_option("--model", o->model, "model directory")->required();
  app.add_option("--tokens", o->tokens, "comma-separated token ids")->required();
  app.add_option("--positions", o->positions, "comma-separated indices, 'all' or 'last'")
      ->capture_default_str();
  add_threads_option(app, o->threads);
  add_device_option(app, o->device);
  add_kv_type_option(app, o->kv_type);
  return std::function<int()>([o] {
    const std::vector<int> ids = parse_int_list(o->tokens, "--tokens");
    if (ids.empty()) fail("--tokens: at least one token id is needed");
    auto model = load_model(o->model, {.n_threads = o->threads, .device = o->device, .kv_type = *parse_kv_type(o->kv_type)});
    const auto positions = parse_positions(o->positions, static_cast<int64_t>(ids.size()));
    Session session(*model, static_cast<int64_t>(ids.size()));
    const std::vector<int32_t> toks(ids.begin(), ids.end());
    const std::vector<float> logits = session.append(toks, true);
    const int64_t vocab = model->config().vocab_size;
    std::string out = "{\"positions\": [";
    for (size_t i = 0; i < positions.size(); ++i) out += fmt::format("{}{}", i ? ", " : "", positions[i]);
    out += "], \"logits\": [";
    for (size_t i = 0; i < positions.size(); ++i) {
      out += i ? ", [" : "[";
      const float* row = logits.data() + positions[i] * vocab;
      for (int64_t v = 0; v < vocab; ++v) out += fmt::format("{}{}", v ? ", " : "", row[v]);
      out += "]";
    }
    out += "]}\n";
    std::fwrite(out.data(), 1, out.size(), stdout);
    return 0;
  });
});

}  // namespace
}  // namespace pensieve::cli
