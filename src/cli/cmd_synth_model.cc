// pensieve synth-model: a random-weight model with a real model's shapes,
// and with --tokenizer a model folder `serve` can load.
#include <cstdio>
#include <filesystem>
#include <memory>

#include "cli/command.h"
#include "core/error.h"
#include "format/hf_config.h"
#include "models/synthetic.h"
#include "tokenizer/tokenizer.h"

namespace pensieve::cli {
namespace {

namespace fs = std::filesystem;

// The files of a model folder that make up its tokenizer and chat template.
constexpr const char* kTokenizerFiles[] = {"tokenizer.json",          "tokenizer.json.gz",
                                           "tokenizer_config.json",   "special_tokens_map.json",
                                           "chat_template.jinja",     "chat_template.json"};

// Copies the tokenizer of `from` (a model or tokenizer folder) into `to`,
// after checking that every id it makes has a row in the model.
void copy_tokenizer(const std::string& from, const std::string& to, int64_t model_vocab) {
  if (!fs::is_directory(from)) fail(ErrorKind::not_found, "--tokenizer: {} is not a folder", from);
  const auto tokenizer = Tokenizer::load(from);
  if (tokenizer->vocab_size() > model_vocab) {
    fail("--tokenizer: {} has {} tokens, more than the model's vocabulary of {} (--vocab)", from,
         tokenizer->vocab_size(), model_vocab);
  }
  for (const char* name : kTokenizerFiles) {
    const fs::path src = fs::path(from) / name;
    if (!fs::exists(src)) continue;
    std::error_code ec;
    fs::copy_file(src, fs::path(to) / name, fs::copy_options::overwrite_existing, ec);
    if (ec) fail(ErrorKind::resource, "--tokenizer: cannot copy {} into {}: {}", src.string(), to, ec.message());
  }
}

RegisterCommand reg("synth-model", [](CLI::App& app) {
  app.description(
      "Write a random-weight model with the shapes and layout of a real one (for speed and "
      "memory measurements). To serve it, give it a tokenizer: --tokenizer DIR copies DIR's "
      "tokenizer and chat template files (its vocabulary must fit the model's)");
  auto o = std::make_shared<SynthOptions>();
  auto out = std::make_shared<std::string>();
  auto tokenizer = std::make_shared<std::string>();
  std::string known;
  for (const auto& n : synthetic_shapes()) known += (known.empty() ? "" : ", ") + n;
  // No defaults for what the model is: a 2 GB Phi-3 written because both
  // were left out helps nobody.
  app.add_option("--like", o->like, "model to imitate: " + known)->required();
  app.add_option("--format", o->format,
                 "bf16, f16, f32, mlx-4bit or mlx-8bit (safetensors); gguf-q4_0, gguf-q4_k_m, gguf-q8_0 or gguf-f16 "
                 "(OUT/model-TYPE.gguf with a filler vocabulary, for llama.cpp's tools)")
      ->required();
  app.add_option("--group-size", o->group_size, "MLX quantization group size (32, 64, 128)")
      ->capture_default_str();
  app.add_option("--seed", o->seed, "random seed")->capture_default_str();
  app.add_option("--layers", o->n_layers, "override the number of layers");
  app.add_option("--vocab", o->vocab_size, "override the vocabulary size");
  app.add_option("--hidden", o->hidden_size, "override the hidden size");
  app.add_option("--intermediate", o->intermediate_size, "override the MLP width");
  app.add_option("--heads", o->n_heads, "override the number of attention heads");
  app.add_option("--kv-heads", o->n_kv_heads, "override the number of key/value heads");
  app.add_option("--head-dim", o->head_dim, "override the head dimension");
  app.add_option("--shards", o->shards,
                 "write N shard files and model.safetensors.index.json instead of one file")
      ->check(CLI::PositiveNumber);
  app.add_option("--tokenizer", *tokenizer,
                 "copy this folder's tokenizer.json, tokenizer_config.json and chat template "
                 "into OUT, so that `pensieve serve --model OUT` runs");
  app.add_option("out", *out, "output directory")->required();
  return std::function<int()>([o, out, tokenizer] {
    const size_t bytes = write_synthetic_model(*out, *o);
    if (o->format.rfind("gguf-", 0) == 0) {
      if (!tokenizer->empty()) std::fprintf(stderr, "note: --tokenizer is ignored for GGUF: the file has its own vocabulary\n");
    } else if (!tokenizer->empty()) {
      copy_tokenizer(*tokenizer, *out, load_model_config(*out).vocab_size);
    } else {
      std::fprintf(stderr,
                   "note: %s has no tokenizer, so serve, render and generate --prompt cannot use "
                   "it; --tokenizer DIR copies one (e.g. from the model imitated)\n",
                   out->c_str());
    }
    std::printf("{\"dir\": \"%s\", \"model_bytes\": %zu}\n", out->c_str(), bytes);
    return 0;
  });
});

}  // namespace
}  // namespace pensieve::cli
