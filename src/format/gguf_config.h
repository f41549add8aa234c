// A GGUF file's metadata as the ModelConfig a Hugging Face config.json
// would give (architecture, shapes, rope, special token ids); the rope
// factor tensors (Phi-3's, Llama 3's) are added by the loader
// (models/gguf_model.h).
#pragma once

#include <string>

#include "format/gguf.h"
#include "format/hf_config.h"

namespace pensieve {

struct GgufArchInfo {
  const char* hf_architecture;
  bool permuted_qk;  // the converter interleaved q/k rows for ggml's NORM rope
};
// llama, phi3, qwen2, qwen3; nullptr for any other.
const GgufArchInfo* gguf_arch_info(const std::string& arch);

// "ARCH.KEY"
std::string gguf_meta_key(const std::string& arch, const char* key);

// Errors name the file and the problem (unknown architecture, impossible shapes).
ModelConfig gguf_model_config(const GgufFile& file);

}  // namespace pensieve
