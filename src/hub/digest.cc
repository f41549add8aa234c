#include "hub/digest.h"

#include <fcntl.h>
#include <unistd.h>
#include <openssl/evp.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <vector>

#include "core/error.h"

namespace pensieve::hub {

struct BlobDigest::Ctx {
  EVP_MD_CTX* md = nullptr;
  ~Ctx() { EVP_MD_CTX_free(md); }
};

DigestKind digest_kind_for_etag(const std::string& etag) {
  for (char c : etag) {
    if (!std::isxdigit(static_cast<unsigned char>(c))) return DigestKind::none;
  }
  if (etag.size() == 64) return DigestKind::sha256;
  if (etag.size() == 40) return DigestKind::git_sha1;
  return DigestKind::none;
}

BlobDigest::BlobDigest(DigestKind kind, uint64_t n_bytes_total)
    : kind_(kind), n_bytes_total_(n_bytes_total), ctx_(std::make_unique<Ctx>()) {
  ctx_->md = EVP_MD_CTX_new();
  if (ctx_->md == nullptr) fail(ErrorKind::resource, "EVP_MD_CTX_new failed");
  reset();
}

BlobDigest::~BlobDigest() = default;

void BlobDigest::reset() {
  if (kind_ == DigestKind::none) return;
  const EVP_MD* md = kind_ == DigestKind::sha256 ? EVP_sha256() : EVP_sha1();
  if (EVP_DigestInit_ex(ctx_->md, md, nullptr) != 1) fail(ErrorKind::internal, "digest init failed");
  if (kind_ == DigestKind::git_sha1) {
    const std::string header = "blob " + std::to_string(n_bytes_total_);
    update(header.data(), header.size() + 1);  // git hashes the NUL too
  }
}

void BlobDigest::update(const void* data, size_t n_bytes) {
  if (kind_ == DigestKind::none || n_bytes == 0) return;
  if (EVP_DigestUpdate(ctx_->md, data, n_bytes) != 1) fail(ErrorKind::internal, "digest failed");
}

void BlobDigest::update_from_file(int fd, uint64_t n_bytes, const std::string& path) {
  if (kind_ == DigestKind::none) return;
  std::vector<char> buffer(1 << 20);
  uint64_t offset = 0;
  while (offset < n_bytes) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(buffer.size(), n_bytes - offset));
    const ssize_t got = pread(fd, buffer.data(), want, static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) fail(ErrorKind::resource, "{}: read failed: {}", path, std::strerror(errno));
    update(buffer.data(), static_cast<size_t>(got));
    offset += static_cast<uint64_t>(got);
  }
}

std::string BlobDigest::hex() {
  if (kind_ == DigestKind::none) return "";
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (EVP_DigestFinal_ex(ctx_->md, out, &n) != 1) fail(ErrorKind::internal, "digest failed");
  static const char* const kHex = "0123456789abcdef";
  std::string text;
  for (unsigned int i = 0; i < n; ++i) {
    text += kHex[out[i] >> 4];
    text += kHex[out[i] & 15];
  }
  return text;
}

std::string sha256_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(ErrorKind::not_found, "{}: cannot open: {}", path, std::strerror(errno));
  const off_t size = lseek(fd, 0, SEEK_END);
  BlobDigest digest(DigestKind::sha256, 0);
  try {
    digest.update_from_file(fd, static_cast<uint64_t>(size), path);
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  return digest.hex();
}

}  // namespace pensieve::hub
