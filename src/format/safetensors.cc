#include "format/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace pensieve {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

bool parse_dtype(const std::string& s, DType* out) {
  static const std::map<std::string, DType> names = {
      {"F32", DType::F32}, {"F16", DType::F16},   {"BF16", DType::BF16}, {"U32", DType::U32},
      {"I32", DType::I32}, {"U8", DType::U8},     {"I8", DType::I8},     {"F64", DType::F64},
      {"I64", DType::I64}, {"U16", DType::U16},   {"I16", DType::I16},   {"BOOL", DType::BOOL},
      {"U64", DType::U64}};
  auto it = names.find(s);
  if (it == names.end()) return false;
  *out = it->second;
  return true;
}

constexpr uint64_t kMaxHeader = 100u << 20;  // the format's own limit is 100 MB

}  // namespace

const char* dtype_name(DType d) {
  switch (d) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::U32: return "U32";
    case DType::I32: return "I32";
    case DType::U8: return "U8";
    case DType::I8: return "I8";
    case DType::F64: return "F64";
    case DType::I64: return "I64";
    case DType::U16: return "U16";
    case DType::I16: return "I16";
    case DType::BOOL: return "BOOL";
    case DType::U64: return "U64";
  }
  return "?";
}

size_t dtype_size(DType d) {
  switch (d) {
    case DType::F64: case DType::I64: case DType::U64: return 8;
    case DType::F32: case DType::I32: case DType::U32: return 4;
    case DType::F16: case DType::BF16: case DType::U16: case DType::I16: return 2;
    case DType::U8: case DType::I8: case DType::BOOL: return 1;
  }
  return 1;
}

int64_t TensorView::n_elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

void SafetensorsFile::prefault() const {
  map_->advise_willneed(0, map_->size());
  volatile uint8_t sink = 0;
  for (size_t off = 0; off < map_->size(); off += 4096) sink = sink + map_->data()[off];
  (void)sink;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : map_(std::make_unique<MmapFile>(path)) {
  const size_t size = map_->size();
  if (size < 8) fail("{}: truncated safetensors file ({} bytes, no header length)", path, size);
  uint64_t header_len = 0;
  std::memcpy(&header_len, map_->data(), 8);
  if (header_len > kMaxHeader || header_len > size - 8) {
    fail("{}: bad safetensors header length {} (file is {} bytes)", path, header_len, size);
  }
  const char* hp = reinterpret_cast<const char*>(map_->data() + 8);
  json header;
  try {
    header = json::parse(hp, hp + header_len);
  } catch (const json::exception& e) {
    fail("{}: safetensors header is not valid JSON: {}", path, e.what());
  }
  if (!header.is_object()) fail("{}: safetensors header is not a JSON object", path);

  const uint8_t* data_start = map_->data() + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (auto& [name, info] : header.items()) {
    if (name == "__metadata__") continue;
    if (!info.is_object() || !info.contains("dtype") || !info.contains("shape") ||
        !info.contains("data_offsets")) {
      fail("{}: tensor '{}': header entry needs dtype, shape and data_offsets", path, name);
    }
    TensorView t;
    t.name = name;
    t.file = &map_->path();
    if (!info["dtype"].is_string() || !parse_dtype(info["dtype"].get<std::string>(), &t.dtype)) {
      fail("{}: tensor '{}': unknown dtype {}", path, name, info["dtype"].dump());
    }
    const json& shape = info["shape"];
    if (!shape.is_array()) fail("{}: tensor '{}': shape is not an array", path, name);
    uint64_t n = 1;
    for (const auto& d : shape) {
      if (!d.is_number_unsigned()) fail("{}: tensor '{}': bad shape {}", path, name, shape.dump());
      const uint64_t v = d.get<uint64_t>();
      if (v > (1ull << 40) || (v != 0 && n > (1ull << 48) / v)) {
        fail("{}: tensor '{}': absurd shape {}", path, name, shape.dump());
      }
      n *= v;
      t.shape.push_back(static_cast<int64_t>(v));
    }
    const json& off = info["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
        !off[1].is_number_unsigned()) {
      fail("{}: tensor '{}': data_offsets must be two non-negative integers", path, name);
    }
    const uint64_t b = off[0].get<uint64_t>(), e = off[1].get<uint64_t>();
    if (b > e || e > data_size) {
      fail("{}: tensor '{}': data_offsets [{}, {}] past the end of the data ({} bytes)", path, name,
           b, e, data_size);
    }
    if (e - b != n * dtype_size(t.dtype)) {
      fail("{}: tensor '{}': {} bytes for shape {} of {} (expected {})", path, name, e - b,
           shape.dump(), dtype_name(t.dtype), n * dtype_size(t.dtype));
    }
    t.data = data_start + b;
    t.n_bytes = e - b;
    ranges.emplace_back(b, e);
    tensors_.emplace(name, std::move(t));
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second) fail("{}: tensors overlap in the data area", path);
  }
}

TensorStore TensorStore::open_dir(const std::string& dir) {
  TensorStore store;
  store.dir_ = dir;
  const fs::path index_path = fs::path(dir) / "model.safetensors.index.json";
  const fs::path single = fs::path(dir) / "model.safetensors";
  std::vector<std::string> shard_names;
  if (fs::exists(index_path)) {
    std::ifstream in(index_path);
    json index;
    try {
      index = json::parse(in);
    } catch (const json::exception& e) {
      fail("{}: not valid JSON: {}", index_path.string(), e.what());
    }
    if (!index.contains("weight_map") || !index["weight_map"].is_object()) {
      fail("{}: missing key 'weight_map'", index_path.string());
    }
    std::set<std::string> seen;
    for (auto& [tensor, file] : index["weight_map"].items()) {
      if (!file.is_string()) fail("{}: weight_map.{} is not a string", index_path.string(), tensor);
      const std::string f = file.get<std::string>();
      if (f.find('/') != std::string::npos || f == ".." || f.empty()) {
        fail("{}: weight_map.{}: bad shard name '{}'", index_path.string(), tensor, f);
      }
      if (seen.insert(f).second) shard_names.push_back(f);
    }
    for (const auto& f : shard_names) {
      if (!fs::exists(fs::path(dir) / f)) {
        fail(ErrorKind::not_found, "{}: shard '{}' named in weight_map does not exist",
             index_path.string(), f);
      }
    }
  } else if (fs::exists(single)) {
    shard_names.push_back("model.safetensors");
  } else {
    // Some checkpoints use other single-file names (e.g. weights.safetensors).
    for (const auto& entry : fs::directory_iterator(dir)) {
      if (entry.path().extension() == ".safetensors") shard_names.push_back(entry.path().filename());
    }
    std::sort(shard_names.begin(), shard_names.end());
    if (shard_names.empty()) {
      fail(ErrorKind::not_found, "{}: no model.safetensors or model.safetensors.index.json", dir);
    }
  }
  for (const auto& name : shard_names) {
    store.files_.push_back(std::make_unique<SafetensorsFile>((fs::path(dir) / name).string()));
  }
  for (const auto& f : store.files_) {
    for (const auto& [name, view] : f->tensors()) {
      if (!store.index_.emplace(name, &view).second) {
        fail("{}: tensor '{}' appears in more than one shard", dir, name);
      }
    }
  }
  return store;
}

TensorStore TensorStore::in_memory(std::string source) {
  TensorStore store;
  store.dir_ = source;
  store.source_ = std::make_shared<const std::string>(std::move(source));
  return store;
}

void TensorStore::add(TensorView view, std::shared_ptr<const void> owner) {
  if (source_ == nullptr) fail(ErrorKind::internal, "TensorStore::add on a store of files");
  owned_.push_back(std::make_unique<TensorView>(std::move(view)));
  TensorView* v = owned_.back().get();
  v->file = source_.get();
  owned_bytes_ += v->n_bytes;
  if (owner) owners_.push_back(std::move(owner));
  if (!index_.emplace(v->name, v).second) fail(ErrorKind::internal, "{}: tensor '{}' added twice", *source_, v->name);
}

const TensorView& TensorStore::get(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end() && source_ != nullptr)
    fail(ErrorKind::not_found, "{}: missing tensor '{}'", *source_, name);
  if (it == index_.end())
    fail(ErrorKind::not_found,
         "{}: missing tensor '{}' (the weights lack a tensor that config.json's model has)", dir_,
         name);
  return *it->second;
}

const TensorView* TensorStore::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

std::vector<std::string> TensorStore::names() const {
  std::vector<std::string> out;
  for (const auto& [n, v] : index_) out.push_back(n);
  return out;
}

void TensorStore::prefault() const {
  for (const auto& f : files_) f->prefault();
}

size_t TensorStore::total_file_bytes() const {
  size_t n = owned_bytes_;
  for (const auto& f : files_) n += f->file_size();
  return n;
}

}  // namespace pensieve
