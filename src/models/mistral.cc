// MistralForCausalLM: the Llama layout plus a sliding attention window
// (config.json "sliding_window", applied by the attention kernel).
#include "models/decoder.h"
#include "models/registry.h"

namespace pensieve {

std::unique_ptr<Model> load_mistral(ModelConfig config, std::shared_ptr<TensorStore> store,
                                    const LoadOptions& options) {
  return build_decoder(std::move(config), DecoderLayout{}, std::move(store), options);
}

}  // namespace pensieve
