// pensieve synth-model: a random-weight model with a real model's shapes.
#include <cstdio>
#include <memory>

#include "cli/command.h"
#include "models/synthetic.h"

namespace pensieve::cli {
namespace {

RegisterCommand reg("synth-model", [](CLI::App& app) {
  app.description("Write a random-weight model with the shapes and layout of a real one");
  auto o = std::make_shared<SynthOptions>();
  auto out = std::make_shared<std::string>();
  std::string known;
  for (const auto& n : synthetic_shapes()) known += (known.empty() ? "" : ", ") + n;
  app.add_option("--like", o->like, "model to imitate: " + known);
  app.add_option("--format", o->format, "bf16, f16, f32, mlx-4bit or mlx-8bit");
  app.add_option("--group-size", o->group_size, "MLX quantization group size (32, 64, 128)");
  app.add_option("--seed", o->seed, "random seed");
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
  app.add_option("out", *out, "output directory")->required();
  return std::function<int()>([o, out] {
    const size_t bytes = write_synthetic_model(*out, *o);
    std::printf("{\"dir\": \"%s\", \"model_bytes\": %zu}\n", out->c_str(), bytes);
    return 0;
  });
});

}  // namespace
}  // namespace pensieve::cli
