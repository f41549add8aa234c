#include "format/gguf_writer.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "core/error.h"

namespace pensieve {
namespace {

constexpr uint64_t kAlignment = 32;  // general.alignment's default

// GGUF value types.
enum : uint32_t { kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7, kString = 8, kArray = 9 };

class Out {
 public:
  explicit Out(FILE* f) : f_(f) {}
  void bytes(const void* p, size_t n) {
    if (ok_ && n > 0) ok_ = std::fwrite(p, 1, n, f_) == n;
    written_ += n;
  }
  template <typename T>
  void pod(T v) {
    bytes(&v, sizeof v);
  }
  void str(const std::string& s) {
    pod<uint64_t>(s.size());
    bytes(s.data(), s.size());
  }
  void pad_to(uint64_t alignment) {
    static const char zeros[64] = {};
    const size_t pad = (alignment - written_ % alignment) % alignment;
    bytes(zeros, pad);
  }
  bool ok() const { return ok_; }
  size_t written() const { return written_; }

 private:
  FILE* f_;
  bool ok_ = true;
  size_t written_ = 0;
};

void put_value(Out& out, const GgufWriter::Value& v) {
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, uint32_t>) out.pod(kU32), out.pod(x);
        else if constexpr (std::is_same_v<T, int32_t>) out.pod(kI32), out.pod(x);
        else if constexpr (std::is_same_v<T, float>) out.pod(kF32), out.pod(x);
        else if constexpr (std::is_same_v<T, bool>) out.pod(kBool), out.pod<uint8_t>(x ? 1 : 0);
        else if constexpr (std::is_same_v<T, std::string>) out.pod(kString), out.str(x);
        else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
          out.pod(kArray), out.pod(kString), out.pod<uint64_t>(x.size());
          for (const auto& s : x) out.str(s);
        } else if constexpr (std::is_same_v<T, std::vector<float>>) {
          out.pod(kArray), out.pod(kF32), out.pod<uint64_t>(x.size());
          out.bytes(x.data(), x.size() * sizeof(float));
        } else {
          out.pod(kArray), out.pod(kI32), out.pod<uint64_t>(x.size());
          out.bytes(x.data(), x.size() * sizeof(int32_t));
        }
      },
      v);
}

}  // namespace

void GgufWriter::set(std::string key, Value value) { kv_.emplace_back(std::move(key), std::move(value)); }

void GgufWriter::add(std::string name, GgmlType type, std::vector<int64_t> ne, Fill fill) {
  size_t n = ggml_row_bytes(type, ne.at(0));
  for (size_t i = 1; i < ne.size(); ++i) n *= static_cast<size_t>(ne[i]);
  tensors_.push_back({std::move(name), type, std::move(ne), std::move(fill), n});
}

size_t GgufWriter::write(const std::string& path) const {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "wb"), &std::fclose);
  if (!f) fail(ErrorKind::resource, "{}: cannot create: {}", path, std::strerror(errno));
  Out out(f.get());
  out.bytes("GGUF", 4);
  out.pod<uint32_t>(3);
  out.pod<uint64_t>(tensors_.size());
  out.pod<uint64_t>(kv_.size());
  for (const auto& [key, value] : kv_) {
    out.str(key);
    put_value(out, value);
  }
  uint64_t offset = 0;
  for (const Tensor& t : tensors_) {
    out.str(t.name);
    out.pod<uint32_t>(static_cast<uint32_t>(t.ne.size()));
    for (int64_t d : t.ne) out.pod<uint64_t>(static_cast<uint64_t>(d));
    out.pod<uint32_t>(static_cast<uint32_t>(t.type));
    out.pod<uint64_t>(offset);
    offset += (t.n_bytes + kAlignment - 1) / kAlignment * kAlignment;
  }
  out.pad_to(kAlignment);
  std::vector<uint8_t> buf(1 << 22);
  for (const Tensor& t : tensors_) {
    for (size_t done = 0; out.ok() && done < t.n_bytes; done += buf.size()) {
      const size_t m = std::min(buf.size(), t.n_bytes - done);
      t.fill(buf.data(), m, done);
      out.bytes(buf.data(), m);
    }
    out.pad_to(kAlignment);
  }
  if (!out.ok() || std::fflush(f.get()) != 0) {
    fail(ErrorKind::resource, "{}: write failed: {}", path, std::strerror(errno));
  }
  return out.written();
}

}  // namespace pensieve
