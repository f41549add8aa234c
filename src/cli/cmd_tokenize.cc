// `pensieve tokenize`: encode text (or decode ids) with a model directory's
// tokenizer and print JSON; `--bench` times loading and encoding instead.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "core/error.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_file.h"

namespace pensieve::cli {
namespace {

struct Opts {
  std::string model;
  std::string text;
  std::string file;
  std::string decode_ids;
  bool special = false;
  bool skip_special = false;
  bool bench = false;
  int runs = 20;
  // Which of --text / --file / --decode were given (an empty --text is valid).
  bool has_text = false, has_file = false, has_decode = false;
};

double ms_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

int run_bench(const Opts& o, const std::string& text) {
  const auto t0 = std::chrono::steady_clock::now();
  auto tokenizer = Tokenizer::load(o.model);
  const double load_ms = ms_since(t0);
  // The first encode sees an empty word cache: the cost of a never-seen prompt.
  auto t1 = std::chrono::steady_clock::now();
  size_t n_tokens = tokenizer->encode(text, o.special).size();
  const double first_ms = ms_since(t1);
  std::vector<double> times;
  for (int i = 0; i < std::max(1, o.runs); ++i) {
    t1 = std::chrono::steady_clock::now();
    n_tokens = tokenizer->encode(text, o.special).size();
    times.push_back(ms_since(t1));
  }
  std::sort(times.begin(), times.end());
  nlohmann::json out = {{"load_ms", load_ms},
                        {"first_encode_ms", first_ms},
                        {"encode_ms_median", times[times.size() / 2]},
                        {"encode_ms_min", times.front()},
                        {"runs", times.size()},
                        {"bytes", text.size()},
                        {"tokens", n_tokens}};
  std::printf("%s\n", out.dump().c_str());
  return 0;
}

int run(const Opts& o) {
  if (o.has_text + o.has_file + o.has_decode != 1) {
    fail("tokenize: give exactly one of --text, --file or --decode");
  }
  if (o.has_decode) {
    if (o.bench) fail("tokenize: --bench needs --text or --file");
    auto tokenizer = Tokenizer::load(o.model);
    const std::vector<int> ids =
        o.decode_ids.empty() ? std::vector<int>{} : parse_int_list(o.decode_ids, "--decode");
    const std::vector<int32_t> ids32(ids.begin(), ids.end());
    const nlohmann::json out = {{"text", tokenizer->decode(ids32, o.skip_special)}};
    std::printf("%s\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return 0;
  }
  const std::string text = o.has_file ? tok::read_file_maybe_gzipped(o.file) : o.text;
  if (o.bench) return run_bench(o, text);
  auto tokenizer = Tokenizer::load(o.model);
  const nlohmann::json out = {{"ids", tokenizer->encode(text, o.special)}};
  std::printf("%s\n", out.dump().c_str());
  return 0;
}

RegisterCommand reg("tokenize", [](CLI::App& app) {
  auto opts = std::make_shared<Opts>();
  app.description("Encode text to token ids (or decode ids) with a model's tokenizer");
  app.add_option("--model", opts->model, "model directory or tokenizer.json file")->required();
  CLI::Option* text = app.add_option("--text", opts->text, "text to encode");
  CLI::Option* file = app.add_option("--file", opts->file, "encode the contents of this file");
  CLI::Option* decode =
      app.add_option("--decode", opts->decode_ids, "decode these comma-separated ids instead");
  app.add_flag("--special", opts->special, "add the post-processor's special tokens (BOS, ...)");
  app.add_flag("--skip-special", opts->skip_special, "with --decode: leave out special tokens");
  app.add_flag("--bench", opts->bench, "time loading and encoding; print JSON with milliseconds");
  app.add_option("--runs", opts->runs, "with --bench: number of timed encodes")
      ->capture_default_str()
      ->check(
      CLI::PositiveNumber);
  return std::function<int()>([opts, text, file, decode] {
    opts->has_text = text->count() > 0;
    opts->has_file = file->count() > 0;
    opts->has_decode = decode->count() > 0;
    return run(*opts);
  });
});

}  // namespace
}  // namespace pensieve::cli
