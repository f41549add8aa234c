#include "format/safetensors_writer.h"

#include <cerrno>
#include <cstring>
#include <memory>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace pensieve {

void SafetensorsWriter::add(std::string name, DType dtype, std::vector<int64_t> shape, Fill fill) {
  size_t n = dtype_size(dtype);
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  entries_.push_back({std::move(name), dtype, std::move(shape), std::move(fill), n});
}

size_t SafetensorsWriter::write(const std::string& path) const {
  nlohmann::ordered_json header;
  header["__metadata__"] = {{"format", "pt"}};
  size_t offset = 0;
  for (const auto& e : entries_) {
    header[e.name] = {{"dtype", dtype_name(e.dtype)}, {"shape", e.shape},
                      {"data_offsets", {offset, offset + e.n_bytes}}};
    offset += e.n_bytes;
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');  // keep tensor data 8-byte aligned
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "wb"), &std::fclose);
  if (!f) fail(ErrorKind::resource, "{}: cannot create: {}", path, std::strerror(errno));
  const uint64_t n = h.size();
  bool ok = std::fwrite(&n, 8, 1, f.get()) == 1 && std::fwrite(h.data(), 1, h.size(), f.get()) == h.size();
  std::vector<uint8_t> buf(1 << 22);
  for (const auto& e : entries_) {
    for (size_t done = 0; ok && done < e.n_bytes; done += buf.size()) {
      const size_t m = std::min(buf.size(), e.n_bytes - done);
      e.fill(buf.data(), m, done);
      ok = std::fwrite(buf.data(), 1, m, f.get()) == m;
    }
  }
  if (!ok || std::fflush(f.get()) != 0) {
    fail(ErrorKind::resource, "{}: write failed: {}", path, std::strerror(errno));
  }
  return 8 + h.size() + offset;
}

}  // namespace pensieve
