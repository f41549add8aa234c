// Turning named safetensors tensors into typed weights, with the checks that
// make a bad checkpoint fail at load with the tensor's name.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "format/hf_config.h"
#include "format/safetensors.h"
#include "quant/weight_matrix.h"

namespace pensieve {

// `module` is the name without ".weight" (e.g. "model.layers.0.self_attn.q_proj").
// Quantized when "<module>.scales" exists: bits/group come from config.json
// (with mlx-lm's per-module overrides) and every shape is checked.
WeightMatrix load_linear(const TensorStore& store, const ModelConfig& config,
                         const std::string& module, int64_t rows, int64_t cols);

// A 1-D tensor (norm weight, bias) converted to f32, checked to have n elements.
std::vector<float> load_vector(const TensorStore& store, const std::string& name, int64_t n);

// The optional "<module>.bias" as f32, or empty.
std::vector<float> load_optional_bias(const TensorStore& store, const std::string& module,
                                      int64_t n);

}  // namespace pensieve
