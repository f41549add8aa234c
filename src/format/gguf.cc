#include "format/gguf.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <limits>

#include "core/error.h"
#include "format/local_models.h"

namespace pensieve {
namespace {

constexpr uint64_t kMaxDims = 4;          // GGML_MAX_DIMS
constexpr uint64_t kMaxStringBytes = 1ull << 30;

size_t value_size(GgufValueType t) {
  switch (t) {
    case GgufValueType::u8:
    case GgufValueType::i8:
    case GgufValueType::boolean: return 1;
    case GgufValueType::u16:
    case GgufValueType::i16: return 2;
    case GgufValueType::u32:
    case GgufValueType::i32:
    case GgufValueType::f32: return 4;
    case GgufValueType::u64:
    case GgufValueType::i64:
    case GgufValueType::f64: return 8;
    default: return 0;  // string, array: variable
  }
}

bool known_value_type(uint32_t v) { return v <= 12; }

template <typename T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

double number(GgufValueType t, const uint8_t* p) {
  switch (t) {
    case GgufValueType::u8: return load<uint8_t>(p);
    case GgufValueType::i8: return load<int8_t>(p);
    case GgufValueType::u16: return load<uint16_t>(p);
    case GgufValueType::i16: return load<int16_t>(p);
    case GgufValueType::u32: return load<uint32_t>(p);
    case GgufValueType::i32: return load<int32_t>(p);
    case GgufValueType::f32: return load<float>(p);
    case GgufValueType::boolean: return load<uint8_t>(p) != 0 ? 1 : 0;
    case GgufValueType::u64: return static_cast<double>(load<uint64_t>(p));
    case GgufValueType::i64: return static_cast<double>(load<int64_t>(p));
    case GgufValueType::f64: return load<double>(p);
    default: return 0;
  }
}

// A cursor over the file's bytes; every read is bounds-checked.
class Reader {
 public:
  Reader(const uint8_t* data, size_t size, const std::string& name) : p_(data), size_(size), name_(name) {}

  size_t pos() const { return pos_; }
  size_t left() const { return size_ - pos_; }
  const uint8_t* here() const { return p_ + pos_; }

  const uint8_t* take(size_t n, const char* what) {
    if (n > left())
      fail("{}: truncated GGUF file: {} needs {} bytes at offset {}, the file has {} left", name_, what, n,
           pos_, left());
    const uint8_t* at = p_ + pos_;
    pos_ += n;
    return at;
  }
  template <typename T>
  T pod(const char* what) {
    return load<T>(take(sizeof(T), what));
  }
  std::string_view str(const char* what) {
    const uint64_t n = pod<uint64_t>(what);
    if (n > kMaxStringBytes || n > left())
      fail("{}: truncated GGUF file: {} says {} bytes at offset {}, the file has {} left", name_, what, n,
           pos_ - 8, left());
    return {reinterpret_cast<const char*>(take(static_cast<size_t>(n), what)), static_cast<size_t>(n)};
  }

 private:
  const uint8_t* p_;
  size_t size_;
  size_t pos_ = 0;
  const std::string& name_;
};

}  // namespace

const char* gguf_value_type_name(GgufValueType t) {
  static const char* const names[] = {"u8",  "i8",     "u16",   "i16", "u32", "i32", "f32",
                                      "bool", "string", "array", "u64", "i64", "f64"};
  const auto v = static_cast<uint32_t>(t);
  return v < 13 ? names[v] : "unknown";
}

bool GgufValue::is_number() const { return type != GgufValueType::string && type != GgufValueType::array; }
int64_t GgufValue::as_int() const {
  if (type == GgufValueType::u64) return static_cast<int64_t>(std::min<uint64_t>(load<uint64_t>(raw), INT64_MAX));
  if (type == GgufValueType::i64) return load<int64_t>(raw);
  return static_cast<int64_t>(number(type, raw));
}
double GgufValue::as_double() const { return number(type, raw); }
double GgufValue::number_at(uint64_t i) const { return number(elem, raw + i * value_size(elem)); }

int64_t GgufTensor::n_elements() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

GgufFile::GgufFile(const std::string& path)
    : map_(std::make_unique<MmapFile>(path, FileResidency::mapped)), name_(path) {
  data_ = map_->data();
  size_ = map_->size();
  parse();
}

GgufFile::GgufFile(const uint8_t* data, size_t size, std::string name)
    : data_(data), size_(size), name_(std::move(name)) {
  parse();
}

void GgufFile::parse() {
  Reader r(data_, size_, name_);
  if (size_ < 4 || std::memcmp(data_, "GGUF", 4) != 0) {
    if (size_ >= 4 && std::memcmp(data_, "FUGG", 4) == 0)
      fail("{}: a big-endian GGUF file (only little-endian files are read)", name_);
    fail("{}: not a GGUF file (it does not start with the magic 'GGUF')", name_);
  }
  r.take(4, "the magic");
  version_ = r.pod<uint32_t>("the version");
  if (version_ == 1) fail("{}: GGUF version 1 (from 2023) is not read; convert it again with a current llama.cpp", name_);
  if (version_ != 2 && version_ != 3) {
    if ((version_ & 0xFFFF) == 0 && version_ != 0)
      fail("{}: a big-endian GGUF file (only little-endian files are read)", name_);
    fail("{}: GGUF version {} is not supported (2 and 3 are)", name_, version_);
  }
  const uint64_t n_tensors = r.pod<uint64_t>("the tensor count");
  const uint64_t n_kv = r.pod<uint64_t>("the metadata count");
  // Each key/value takes at least 13 bytes, each tensor description 24.
  if (n_kv > r.left() / 13) fail("{}: truncated GGUF file: {} metadata entries cannot fit in {} bytes", name_, n_kv, r.left());
  if (n_tensors > r.left() / 24)
    fail("{}: truncated GGUF file: {} tensor descriptions cannot fit in {} bytes", name_, n_tensors, r.left());

  kv_.reserve(static_cast<size_t>(n_kv));
  for (uint64_t i = 0; i < n_kv; ++i) {
    const std::string key(r.str("a metadata key"));
    const uint32_t type = r.pod<uint32_t>("a metadata type");
    if (!known_value_type(type)) fail("{}: metadata '{}' has unknown value type {}", name_, key, type);
    GgufValue v;
    v.type = static_cast<GgufValueType>(type);
    if (v.type == GgufValueType::string) {
      v.str = r.str("a string value");
    } else if (v.type == GgufValueType::array) {
      const uint32_t et = r.pod<uint32_t>("an array's element type");
      if (!known_value_type(et)) fail("{}: metadata '{}' is an array of unknown type {}", name_, key, et);
      v.elem = static_cast<GgufValueType>(et);
      if (v.elem == GgufValueType::array) fail("{}: metadata '{}' is an array of arrays (not supported)", name_, key);
      v.count = r.pod<uint64_t>("an array's length");
      if (v.elem == GgufValueType::string) {
        if (v.count > r.left() / 8)
          fail("{}: truncated GGUF file: metadata '{}' says {} strings, the file has {} bytes left", name_, key,
               v.count, r.left());
        v.strs.reserve(static_cast<size_t>(v.count));
        for (uint64_t k = 0; k < v.count; ++k) v.strs.push_back(r.str("a string in an array"));
      } else {
        const size_t es = value_size(v.elem);
        if (v.count > r.left() / es)
          fail("{}: truncated GGUF file: metadata '{}' says {} values of {} bytes, the file has {} bytes left",
               name_, key, v.count, es, r.left());
        v.raw = r.take(static_cast<size_t>(v.count) * es, "an array");
      }
    } else {
      v.raw = r.take(value_size(v.type), "a metadata value");
    }
    if (!kv_index_.emplace(key, kv_.size()).second) fail("{}: metadata key '{}' appears twice", name_, key);
    kv_.emplace_back(key, std::move(v));
  }

  if (const GgufValue* a = find("general.alignment")) {
    if (a->type != GgufValueType::u32 && a->type != GgufValueType::u64 && a->type != GgufValueType::i32)
      fail("{}: metadata 'general.alignment' is a {}, expected an integer", name_, gguf_value_type_name(a->type));
    const int64_t al = a->as_int();
    if (al <= 0 || al > (1 << 20) || (al & (al - 1)) != 0)
      fail("{}: metadata 'general.alignment' is {}, expected a power of two up to 1 MiB", name_, al);
    alignment_ = static_cast<uint64_t>(al);
  }

  tensors_.reserve(static_cast<size_t>(n_tensors));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensor t;
    t.name = std::string(r.str("a tensor name"));
    const uint32_t n_dims = r.pod<uint32_t>("a tensor's dimension count");
    if (n_dims == 0 || n_dims > kMaxDims)
      fail("{}: tensor '{}' has {} dimensions (1 to {} are allowed)", name_, t.name, n_dims, kMaxDims);
    uint64_t elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t n = r.pod<uint64_t>("a tensor dimension");
      if (n == 0 || n > (1ull << 40) || elements > (1ull << 50) / n)
        fail("{}: tensor '{}' has an impossible dimension {} (dimension {})", name_, t.name, n, d);
      elements *= n;
      t.ne.push_back(static_cast<int64_t>(n));
    }
    const uint32_t type = r.pod<uint32_t>("a tensor type");
    const auto gt = ggml_type_from(type);
    if (!gt)
      fail(ErrorKind::unsupported, "{}: tensor '{}' has type {} ({}), which Pensieve does not read (it reads F32, F16, "
           "BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K and Q6_K)", name_, t.name, ggml_type_name_of(type), type);
    t.type = *gt;
    if (t.ne[0] % ggml_block_elements(t.type) != 0)
      fail("{}: tensor '{}' ({}) has rows of {} values, not whole blocks of {}", name_, t.name, ggml_type_name(t.type),
           t.ne[0], ggml_block_elements(t.type));
    t.offset = r.pod<uint64_t>("a tensor offset");
    if (t.offset % alignment_ != 0)
      fail("{}: tensor '{}' starts at data offset {}, not a multiple of the alignment {}", name_, t.name, t.offset,
           alignment_);
    t.n_bytes = ggml_row_bytes(t.type, t.ne[0]) * static_cast<size_t>(elements / static_cast<uint64_t>(t.ne[0]));
    if (!tensor_index_.emplace(t.name, tensors_.size()).second) fail("{}: tensor '{}' appears twice", name_, t.name);
    tensors_.push_back(std::move(t));
  }

  const size_t data_start = (r.pos() + alignment_ - 1) / alignment_ * alignment_;
  if (data_start > size_ && !tensors_.empty())
    fail("{}: truncated GGUF file: the tensor data would start at {}, past the end ({} bytes)", name_, data_start, size_);
  const size_t data_size = data_start <= size_ ? size_ - data_start : 0;
  // Sorted by offset: each inside the data area and none overlapping.
  std::vector<const GgufTensor*> by_offset;
  for (const GgufTensor& t : tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  uint64_t end = 0;
  for (const GgufTensor* t : by_offset) {
    if (t->offset > data_size || t->n_bytes > data_size - t->offset)
      fail("{}: tensor '{}' ({} bytes at data offset {}) runs past the end of the file (the data area has {} bytes): "
           "a truncated or damaged file", name_, t->name, t->n_bytes, t->offset, data_size);
    if (t->offset < end) fail("{}: tensor '{}' overlaps the tensor before it", name_, t->name);
    end = t->offset + t->n_bytes;
  }
  for (GgufTensor& t : tensors_) t.data = data_ + data_start + t.offset;
}

const GgufValue* GgufFile::find(std::string_view key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

std::optional<int64_t> GgufFile::get_int(std::string_view key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number() || v->type == GgufValueType::f32 || v->type == GgufValueType::f64)
    fail("{}: metadata '{}' is a {}, expected an integer", name_, key, gguf_value_type_name(v->type));
  return v->as_int();
}

std::optional<double> GgufFile::get_double(std::string_view key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number()) fail("{}: metadata '{}' is a {}, expected a number", name_, key, gguf_value_type_name(v->type));
  return v->as_double();
}

std::optional<bool> GgufFile::get_bool(std::string_view key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number()) fail("{}: metadata '{}' is a {}, expected a bool", name_, key, gguf_value_type_name(v->type));
  return v->as_int() != 0;
}

std::optional<std::string> GgufFile::get_string(std::string_view key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (v->type != GgufValueType::string)
    fail("{}: metadata '{}' is a {}, expected a string", name_, key, gguf_value_type_name(v->type));
  return std::string(v->str);
}

int64_t GgufFile::need_int(std::string_view key) const {
  auto v = get_int(key);
  if (!v) fail("{}: metadata '{}' is missing", name_, key);
  return *v;
}

std::string GgufFile::need_string(std::string_view key) const {
  auto v = get_string(key);
  if (!v) fail("{}: metadata '{}' is missing", name_, key);
  return *v;
}

const GgufValue* GgufFile::get_array(std::string_view key, bool strings) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return nullptr;
  if (v->type != GgufValueType::array)
    fail("{}: metadata '{}' is a {}, expected an array", name_, key, gguf_value_type_name(v->type));
  const bool is_strings = v->elem == GgufValueType::string;
  if (strings != is_strings)
    fail("{}: metadata '{}' is an array of {}, expected {}", name_, key, gguf_value_type_name(v->elem),
         strings ? "strings" : "numbers");
  return v;
}

const GgufTensor* GgufFile::tensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

void GgufFile::release(const uint8_t* p, size_t n) const {
  if (!map_ || !contains(p, n)) return;
  const uintptr_t page = 4096;
  const uintptr_t start = (reinterpret_cast<uintptr_t>(p) + page - 1) & ~(page - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + n) & ~(page - 1);
  if (end > start) ::madvise(reinterpret_cast<void*>(start), end - start, MADV_DONTNEED);
}

void GgufFile::advise_sequential() const {
  if (map_) map_->advise_willneed(0, size_);
}

namespace fs = std::filesystem;

std::vector<std::string> gguf_split_files(const std::string& first) {
  static const std::regex split_re(R"((.*)-(\d{5})-of-(\d{5})\.gguf)");
  std::smatch m;
  const std::string name = fs::path(first).filename().string();
  if (!std::regex_match(name, m, split_re)) return {first};
  const int index = std::stoi(m[2].str()), count = std::stoi(m[3].str());
  if (index != 1) fail("{}: this is part {} of {} of a split GGUF model; give the first part (-00001-of-{})", first,
                       index, count, m[3].str());
  if (count < 1) fail("{}: a split GGUF model of {} parts", first, count);
  std::vector<std::string> out;
  const fs::path dir = fs::path(first).parent_path();
  for (int i = 1; i <= count; ++i) {
    char part[32];
    std::snprintf(part, sizeof part, "-%05d-of-%05d.gguf", i, count);
    const std::string path = (dir / (m[1].str() + part)).string();
    if (!fs::exists(path)) fail(ErrorKind::not_found, "{}: part {} of this split GGUF model, {}, is missing", first, i, path);
    out.push_back(path);
  }
  return out;
}

std::string find_gguf(const std::string& path) {
  std::error_code ec;
  if (path.rfind("ollama:", 0) == 0) return resolve_ollama_ref(path);
  if (fs::is_regular_file(path, ec)) {
    if (fs::path(path).extension() == ".gguf") return path;
    // Named otherwise (an Ollama blob): a GGUF file by its magic.
    char magic[4] = {};
    std::ifstream in(path, std::ios::binary);
    return in.read(magic, 4) && std::memcmp(magic, "GGUF", 4) == 0 ? path : std::string();
  }
  if (!fs::is_directory(path, ec)) return {};
  if (fs::exists(fs::path(path) / "config.json")) return {};  // a Hugging Face directory
  std::set<std::string> models;
  static const std::regex split_re(R"((.*)-(\d{5})-of-(\d{5})\.gguf)");
  for (const auto& e : fs::directory_iterator(path, ec)) {
    if (!e.is_regular_file() || e.path().extension() != ".gguf") continue;
    const std::string name = e.path().filename().string();
    std::smatch m;
    if (std::regex_match(name, m, split_re)) {
      if (m[2].str() == "00001") models.insert(e.path().string());
    } else if (name.find("mmproj") == std::string::npos) {  // vision projectors sit beside some models
      models.insert(e.path().string());
    }
  }
  if (models.empty()) return {};
  if (models.size() > 1) {
    std::string list;
    for (const auto& m : models) list += (list.empty() ? "" : ", ") + fs::path(m).filename().string();
    fail("{}: holds {} GGUF models ({}); give one file as --model", path, models.size(), list);
  }
  return *models.begin();
}

int64_t model_weight_file_bytes(const std::string& path) {
  std::error_code ec;
  int64_t n = 0;
  try {
    if (const std::string gguf = find_gguf(path); !gguf.empty()) {
      for (const std::string& f : gguf_split_files(gguf)) n += static_cast<int64_t>(fs::file_size(f, ec));
      return n;
    }
  } catch (const Error&) {
    return 0;
  }
  for (const auto& e : fs::directory_iterator(path, ec))
    if (e.path().extension() == ".safetensors") n += static_cast<int64_t>(e.file_size(ec));
  return n;
}

}  // namespace pensieve
