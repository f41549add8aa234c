// Qwen3ForCausalLM: RMSNorm over head_dim on every query and key head
// (q_norm / k_norm) before RoPE; head_dim is explicit and may differ from
// hidden_size / num_attention_heads.
#include "models/decoder.h"
#include "models/registry.h"

namespace pensieve {

std::unique_ptr<Model> load_qwen3(ModelConfig config, std::shared_ptr<TensorStore> store,
                                  const LoadOptions& options) {
  DecoderLayout layout;
  layout.qk_norm = true;
  return build_decoder(std::move(config), layout, std::move(store), options);
}

}  // namespace pensieve
