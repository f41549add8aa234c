// Safetensors: one file or shards listed by model.safetensors.index.json.
// Files are memory-mapped; tensors are views into the maps. The header is
// validated completely at open (dtype, shape, offsets inside the data area,
// no overlaps) so later code can trust every view.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/mmap_file.h"

namespace pensieve {

enum class DType { F32, F16, BF16, U32, I32, U8, I8, F64, I64, U16, I16, BOOL, U64 };

const char* dtype_name(DType d);
size_t dtype_size(DType d);

struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  size_t n_bytes = 0;
  const std::string* file = nullptr;  // for error messages

  int64_t n_elements() const;
  int64_t dim(int i) const { return shape.at(static_cast<size_t>(i)); }
};

class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::string& path() const { return map_->path(); }
  size_t file_size() const { return map_->size(); }
  void prefault() const;

 private:
  std::unique_ptr<MmapFile> map_;
  std::map<std::string, TensorView> tensors_;
};

// All tensors of a model directory (single file or sharded).
class TensorStore {
 public:
  static TensorStore open_dir(const std::string& dir);
  // A store of tensors held in memory (a GGUF file's, converted at load):
  // `source` names them in errors (the file), `owner` keeps their bytes.
  static TensorStore in_memory(std::string source);
  void add(TensorView view, std::shared_ptr<const void> owner);

  bool has(const std::string& name) const { return index_.count(name) != 0; }
  const TensorView& get(const std::string& name) const;  // throws not_found naming the tensor
  const TensorView* find(const std::string& name) const;
  std::vector<std::string> names() const;
  size_t total_file_bytes() const;
  // Pulls every mapped page into memory (sequential read-ahead), so the first
  // forward pass does not stall on page faults.
  void prefault() const;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*> index_;
  std::vector<std::unique_ptr<TensorView>> owned_;
  std::vector<std::shared_ptr<const void>> owners_;
  std::shared_ptr<const std::string> source_;  // in-memory stores: what the tensors came from (stable address)
  size_t owned_bytes_ = 0;
};

}  // namespace pensieve
