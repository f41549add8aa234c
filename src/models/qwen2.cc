// Qwen2ForCausalLM (Qwen 2 / 2.5): q/k/v projections carry biases; sliding
// window only when use_sliding_window is true (hf_config handles that).
#include "models/decoder.h"
#include "models/registry.h"

namespace pensieve {

std::unique_ptr<Model> load_qwen2(ModelConfig config, std::shared_ptr<TensorStore> store,
                                  const LoadOptions& options) {
  DecoderLayout layout;
  layout.require_qkv_bias = true;
  return build_decoder(std::move(config), layout, std::move(store), options);
}

}  // namespace pensieve
