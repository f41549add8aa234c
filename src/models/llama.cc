// LlamaForCausalLM: GQA, optional attention biases, llama3 rope scaling,
// explicit head_dim (Llama 3.2). Also stories260K (llama2.c converted).
#include "models/decoder.h"
#include "models/registry.h"

namespace pensieve {

std::unique_ptr<Model> load_llama(ModelConfig config, std::shared_ptr<TensorStore> store,
                                  const LoadOptions& options) {
  return build_decoder(std::move(config), DecoderLayout{}, std::move(store), options);
}

}  // namespace pensieve
