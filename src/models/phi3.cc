// Phi3ForCausalLM: fused qkv_proj ([q | k | v] rows) and gate_up_proj
// ([gate | up] rows), longrope ("longrope"/"su") with short/long factors and
// its cos/sin scaling (models/rope.cc).
#include "core/error.h"
#include "models/decoder.h"
#include "models/registry.h"

namespace pensieve {

std::unique_ptr<Model> load_phi3(ModelConfig config, std::shared_ptr<TensorStore> store,
                                 const LoadOptions& options) {
  DecoderLayout layout;
  layout.fused_qkv = true;
  layout.fused_gate_up = true;
  return build_decoder(std::move(config), layout, std::move(store), options);
}

}  // namespace pensieve
