// The decoder-only transformer that Llama, Mistral, Phi-3, Qwen2 and Qwen3
// share: RMSNorm -> attention (GQA, RoPE) -> RMSNorm -> SwiGLU MLP. An
// architecture file only says how its checkpoint names and shapes things.
#pragma once

#include <memory>

#include "format/safetensors.h"
#include "models/model.h"

namespace pensieve {

struct DecoderLayout {
  bool fused_qkv = false;       // self_attn.qkv_proj (Phi-3)
  bool fused_gate_up = false;   // mlp.gate_up_proj (Phi-3), gate rows first
  bool qk_norm = false;         // self_attn.q_norm / k_norm over head_dim (Qwen3)
  bool require_qkv_bias = false;  // q/k/v biases must be present (Qwen2)
};

std::unique_ptr<Model> build_decoder(ModelConfig config, const DecoderLayout& layout,
                                     std::shared_ptr<TensorStore> store,
                                     const LoadOptions& options);

}  // namespace pensieve
