// Streams a GGUF file (version 3, llama.cpp's format): metadata key/values,
// tensor descriptions, then each tensor's bytes at 32-byte aligned offsets.
// Used by `synth-model --format gguf-*` to write random models of real
// shapes in the block types llama.cpp reads, for side-by-side runs.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <variant>
#include <vector>

#include "format/ggml_types.h"

namespace pensieve {

class GgufWriter {
 public:
  // fill(buffer, n_bytes, offset_in_tensor) produces the tensor's bytes in pieces.
  using Fill = std::function<void(uint8_t* buf, size_t n, size_t offset)>;
  using Value = std::variant<uint32_t, int32_t, float, bool, std::string, std::vector<std::string>,
                             std::vector<float>, std::vector<int32_t>>;

  void set(std::string key, Value value);
  // ne: ggml's order, the row length first (a [rows][cols] matrix is {cols, rows}).
  void add(std::string name, GgmlType type, std::vector<int64_t> ne, Fill fill);
  // Writes the file (throws Error on I/O failure). Returns bytes written.
  size_t write(const std::string& path) const;

 private:
  struct Tensor {
    std::string name;
    GgmlType type;
    std::vector<int64_t> ne;
    Fill fill;
    size_t n_bytes;
  };
  std::vector<std::pair<std::string, Value>> kv_;
  std::vector<Tensor> tensors_;
};

}  // namespace pensieve
