// Streams tensors into a .safetensors file: the header is built from the
// declared tensors first, then each tensor's bytes are written in order.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "format/safetensors.h"

namespace pensieve {

class SafetensorsWriter {
 public:
  // fill(buffer, n_bytes, offset_in_tensor) produces the tensor's bytes in pieces.
  using Fill = std::function<void(uint8_t* buf, size_t n, size_t offset)>;

  void add(std::string name, DType dtype, std::vector<int64_t> shape, Fill fill);
  // Writes the file (throws Error on I/O failure). Returns bytes written.
  size_t write(const std::string& path) const;

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    Fill fill;
    size_t n_bytes;
  };
  std::vector<Entry> entries_;
};

}  // namespace pensieve
