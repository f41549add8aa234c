// GGUF files as the loader meets them (header, metadata, tensor table).
// Input: the file's bytes. Contract: either pensieve::Error, or every
// tensor's bytes lie inside the input and match its type and shape, and
// every metadata string and array lies inside it; the model config built
// from the metadata either throws Error or has positive sizes.
#include "core/error.h"
#include "format/gguf.h"
#include "fuzz_support.h"
#include "format/gguf_config.h"

using namespace pensieve;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // A copy the size of the input: ASan flags any read past it.
  std::vector<uint8_t> bytes(data, data + size);
  try {
    GgufFile f(bytes.data(), bytes.size(), "fuzz.gguf");
    unsigned sum = 0;
    for (const auto& [key, v] : f.metadata()) {
      for (char c : v.str) sum += static_cast<unsigned char>(c);
      for (const auto& s : v.strs)
        for (char c : s) sum += static_cast<unsigned char>(c);
      if (v.type == GgufValueType::array && v.elem != GgufValueType::string)
        for (uint64_t i = 0; i < v.count; ++i) sum += static_cast<unsigned>(v.number_at(i) != 0);
    }
    for (const GgufTensor& t : f.tensors()) {
      if (t.n_bytes != ggml_row_bytes(t.type, t.cols()) * static_cast<size_t>(t.rows()))
        fuzz::contract_broken("tensor size", t.name);
      for (size_t i = 0; i < t.n_bytes; ++i) sum += t.data[i];
    }
    (void)sum;
    const ModelConfig c = gguf_model_config(f);
    if (c.n_layers <= 0 || c.hidden_size <= 0 || c.n_heads <= 0 || c.head_dim <= 0)
      fuzz::contract_broken("model config", "non-positive size accepted");
  } catch (const Error&) {
  }
  return 0;
}
