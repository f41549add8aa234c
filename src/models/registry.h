// Architectures by their config.json "architectures" name.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "format/safetensors.h"
#include "models/model.h"

namespace pensieve {

using ArchitectureLoader = std::unique_ptr<Model> (*)(ModelConfig config,
                                                      std::shared_ptr<TensorStore> store,
                                                      const LoadOptions& options);

// nullptr when unknown.
ArchitectureLoader find_architecture(const std::string& name);
std::vector<std::string> architecture_names();

// One per architecture file.
std::unique_ptr<Model> load_llama(ModelConfig, std::shared_ptr<TensorStore>, const LoadOptions&);
std::unique_ptr<Model> load_mistral(ModelConfig, std::shared_ptr<TensorStore>, const LoadOptions&);
std::unique_ptr<Model> load_phi3(ModelConfig, std::shared_ptr<TensorStore>, const LoadOptions&);
std::unique_ptr<Model> load_qwen2(ModelConfig, std::shared_ptr<TensorStore>, const LoadOptions&);
std::unique_ptr<Model> load_qwen3(ModelConfig, std::shared_ptr<TensorStore>, const LoadOptions&);

}  // namespace pensieve
