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
  // Shape overrides, for small models of a real family (tests); 0 = the real model's.
  int64_t n_layers = 0;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  // 1 = model.safetensors; N > 1 = N shard files + model.safetensors.index.json,
  // as Hugging Face writes large checkpoints.
  int shards = 1;
};

std::vector<std::string> synthetic_shapes();

// Writes config.json, generation_config.json and model.safetensors (or its
// shards and index) into dir (created if missing). Returns the bytes of the
// safetensors files.
size_t write_synthetic_model(const std::string& dir, const SynthOptions& options);

}  // namespace pensieve
