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
  app.add_option("out", *out, "output directory")->required();
  return std::function<int()>([o, out] {
    const size_t bytes = write_synthetic_model(*out, *o);
    std::printf("{\"dir\": \"%s\", \"model_bytes\": %zu}\n", out->c_str(), bytes);
    return 0;
  });
});

}  // namespace
}  // namespace pensieve::cli
