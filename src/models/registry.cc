#include "models/registry.h"

#include <map>

#include "core/error.h"
#include "core/log.h"
#include "models/gguf_model.h"

namespace pensieve {
namespace {

const std::map<std::string, ArchitectureLoader>& table() {
  static const std::map<std::string, ArchitectureLoader> t = {
      {"LlamaForCausalLM", &load_llama},   {"MistralForCausalLM", &load_mistral},
      {"Phi3ForCausalLM", &load_phi3},     {"Qwen2ForCausalLM", &load_qwen2},
      {"Qwen3ForCausalLM", &load_qwen3},
  };
  return t;
}

}  // namespace

ArchitectureLoader find_architecture(const std::string& name) {
  auto it = table().find(name);
  return it == table().end() ? nullptr : it->second;
}

std::vector<std::string> architecture_names() {
  std::vector<std::string> out;
  for (const auto& [name, loader] : table()) out.push_back(name);
  return out;
}

std::unique_ptr<Model> load_model(const std::string& dir, const LoadOptions& options) {
  if (const std::string gguf = find_gguf(dir); !gguf.empty()) {
    // GGUF's block forms (f32 scales, groups of 16, implied biases) have not
    // run on the GPU yet: the CPU serves them until they have.
    LoadOptions o = options;
    if (o.device == "cuda")
      fail(ErrorKind::unsupported, "{}: GGUF models do not run on the GPU yet; use --device cpu", gguf);
    GgufCheckpoint ck = load_gguf_checkpoint(gguf);
    if (o.device == "auto") {
      o.device = "cpu";
      spdlog::info("{}: a GGUF model: on the CPU (GGUF on the GPU is not validated yet)", gguf);
    }
    if (o.sliding_window >= 0) ck.config.sliding_window = o.sliding_window;
    ArchitectureLoader loader = find_architecture(ck.config.architecture);
    if (loader == nullptr) fail(ErrorKind::internal, "{}: no loader for {}", gguf, ck.config.architecture);
    return loader(std::move(ck.config), std::move(ck.store), o);
  }
  ModelConfig config = load_model_config(dir);
  if (options.sliding_window >= 0) config.sliding_window = options.sliding_window;
  ArchitectureLoader loader = find_architecture(config.architecture);
  if (loader == nullptr) {
    std::string known;
    for (const auto& n : architecture_names()) known += (known.empty() ? "" : ", ") + n;
    fail(ErrorKind::unsupported, "{}/config.json: architecture '{}' is not supported (known: {})",
         dir, config.architecture, known);
  }
  auto store = std::make_shared<TensorStore>(TensorStore::open_dir(dir));
  if (options.prefault) store->prefault();
  return loader(std::move(config), std::move(store), options);
}

}  // namespace pensieve
