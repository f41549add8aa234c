// Random-weight models with the exact shapes and on-disk layout of real
// checkpoints, so speed and memory can be measured without downloading them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace pensieve {

struct SynthOptions {
  std::string like = "phi-3-mini";  // see synthetic_shapes()
  std::string format = "mlx-4bit";  // bf16, f16, f32, mlx-4bit, mlx-8bit
  int group_size = 64;
  uint64_t seed = 1;
  int64_t n_layers = 0;    // 0 = the real model's
  int64_t vocab_size = 0;  // 0 = the real model's
};

std::vector<std::string> synthetic_shapes();

// Writes config.json, generation_config.json and model.safetensors into dir
// (created if missing). Returns the bytes of model.safetensors.
size_t write_synthetic_model(const std::string& dir, const SynthOptions& options);

}  // namespace pensieve
