// Reading GGUF files (llama.cpp's format, versions 2 and 3): the metadata
// key/values and the tensor table are parsed and checked completely at open
// (value types, string and array lengths inside the file, tensor types,
// shapes, offsets and sizes inside the data area), so later code can trust
// every view. Errors name the file and the problem, on one line.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/mmap_file.h"
#include "format/ggml_types.h"

namespace pensieve {

enum class GgufValueType : uint32_t {
  u8 = 0, i8 = 1, u16 = 2, i16 = 3, u32 = 4, i32 = 5, f32 = 6, boolean = 7, string = 8,
  array = 9, u64 = 10, i64 = 11, f64 = 12,
};
const char* gguf_value_type_name(GgufValueType t);

// One metadata value, viewing the file's bytes.
struct GgufValue {
  GgufValueType type = GgufValueType::u8;
  // Scalars: the value's bytes (little-endian, unaligned). Arrays of numbers:
  // the first element's.
  const uint8_t* raw = nullptr;
  std::string_view str;                 // type string
  GgufValueType elem = GgufValueType::u8;  // arrays: the element type
  uint64_t count = 0;                   // arrays: elements
  std::vector<std::string_view> strs;   // arrays of strings

  bool is_number() const;
  // A number (any integer, float or bool type) as int64 / double.
  int64_t as_int() const;
  double as_double() const;
  // Element i of an array of numbers.
  double number_at(uint64_t i) const;
};

struct GgufTensor {
  std::string name;
  GgmlType type = GgmlType::F32;
  std::vector<int64_t> ne;  // ggml's order: ne[0] is the row length
  uint64_t offset = 0;      // from the start of the data area
  const uint8_t* data = nullptr;
  size_t n_bytes = 0;

  int64_t n_elements() const;
  int64_t cols() const { return ne.empty() ? 1 : ne[0]; }
  int64_t rows() const { return n_elements() / cols(); }
};

class GgufFile {
 public:
  // Maps the file (in place: tensors are repacked or copied by the loader).
  explicit GgufFile(const std::string& path);
  // Parses bytes owned by the caller (tests, fuzzing); `name` is for errors.
  GgufFile(const uint8_t* data, size_t size, std::string name);

  const std::string& path() const { return name_; }
  uint32_t version() const { return version_; }
  size_t file_size() const { return size_; }
  uint64_t alignment() const { return alignment_; }

  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return kv_; }
  const GgufValue* find(std::string_view key) const;
  // Typed lookups: nullopt when the key is absent; an Error naming the file
  // and key when it holds the wrong type.
  std::optional<int64_t> get_int(std::string_view key) const;
  std::optional<double> get_double(std::string_view key) const;
  std::optional<bool> get_bool(std::string_view key) const;
  std::optional<std::string> get_string(std::string_view key) const;
  // Required forms: an Error naming the file and key when absent.
  int64_t need_int(std::string_view key) const;
  std::string need_string(std::string_view key) const;
  // An array value of the given element kind (strings, or numbers), or nullptr if absent.
  const GgufValue* get_array(std::string_view key, bool strings) const;

  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const GgufTensor* tensor(std::string_view name) const;

  // Pages of the tensor data are about to be read in order.
  void advise_sequential() const;
  // Whether [p, p + n) lies in this file's bytes.
  bool contains(const uint8_t* p, size_t n) const { return p >= data_ && n <= size_ && p - data_ <= static_cast<ptrdiff_t>(size_ - n); }
  // Drops the whole pages of [p, p + n) from this process's memory (they stay
  // in the page cache): the loader calls it once a tensor is converted, so
  // the file and its converted copy are not resident together.
  void release(const uint8_t* p, size_t n) const;

 private:
  void parse();

  std::unique_ptr<MmapFile> map_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string name_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::map<std::string, size_t, std::less<>> kv_index_;
  std::vector<GgufTensor> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

// The GGUF file `path` names: the file itself (any name, by its magic), an
// Ollama model ("ollama:NAME[:TAG]", format/local_models.h), the one model in a directory
// (or the first of its split files), or "" when `path` holds no GGUF (a
// Hugging Face directory, for one). Throws when a directory holds several different GGUF models.
std::string find_gguf(const std::string& path);

// All files of a model: `first` alone, or NAME-00001-of-0000N.gguf and its
// siblings (each checked to exist and to say the same split count).
std::vector<std::string> gguf_split_files(const std::string& first);

// Bytes of a model's weight files: a GGUF model's file(s), or the
// .safetensors files of a folder (0 for anything else; never throws).
int64_t model_weight_file_bytes(const std::string& path);

}  // namespace pensieve
