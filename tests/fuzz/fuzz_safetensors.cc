// safetensors files as the loader meets them: one file, or a sharded model
// (index + two shards). Input: FILE, or INDEX #### SHARD1 #### SHARD2.
// Contract: either pensieve::Error, or every tensor's bytes lie inside its
// file and match dtype x shape.
#include <filesystem>

#include "core/error.h"
#include "format/safetensors.h"
#include "fuzz_support.h"

using namespace pensieve;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto parts = fuzz::split_parts(data, size, 3);
  const std::string dir = fuzz::scratch_dir();
  if (parts[1].empty() && parts[2].empty()) {
    fuzz::write_file(dir + "/model.safetensors", parts[0]);
  } else {
    fuzz::write_file(dir + "/model.safetensors.index.json", parts[0]);
    fuzz::write_file(dir + "/model-00001-of-00002.safetensors", parts[1]);
    fuzz::write_file(dir + "/model-00002-of-00002.safetensors", parts[2]);
  }
  try {
    TensorStore store = TensorStore::open_dir(dir);
    for (const std::string& name : store.names()) {
      const TensorView& t = store.get(name);
      const int64_t n = t.n_elements();
      if (n < 0 || static_cast<size_t>(n) * dtype_size(t.dtype) != t.n_bytes)
        fuzz::contract_broken("tensor size", name);
      unsigned sum = 0;  // touch every byte: ASan checks they are inside the mapping
      for (size_t i = 0; i < t.n_bytes; ++i) sum += t.data[i];
      (void)sum;
    }
  } catch (const Error&) {
  }
  return 0;
}
