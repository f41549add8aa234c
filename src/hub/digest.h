// Checks a downloaded blob against its etag. The Hub names LFS files by the
// SHA-256 of their content and regular git files by their git blob id
// (SHA-1 of "blob <size>\0" + content); the digest is computed while bytes
// arrive (and over the kept prefix when a download resumes), so verifying
// costs no second pass over a multi-gigabyte file.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace pensieve::hub {

enum class DigestKind { none, sha256, git_sha1 };

// sha256 for 64 hex digits, git_sha1 for 40, none otherwise.
DigestKind digest_kind_for_etag(const std::string& etag);

class BlobDigest {
 public:
  // `n_bytes_total` is needed up front for the git blob header.
  BlobDigest(DigestKind kind, uint64_t n_bytes_total);
  ~BlobDigest();
  BlobDigest(const BlobDigest&) = delete;
  BlobDigest& operator=(const BlobDigest&) = delete;

  void reset();
  void update(const void* data, size_t n_bytes);
  // Hashes the first n_bytes of an open file (the part kept from an earlier try).
  void update_from_file(int fd, uint64_t n_bytes, const std::string& path);
  std::string hex();  // finishes; call reset() before reusing
  DigestKind kind() const { return kind_; }

 private:
  DigestKind kind_;
  uint64_t n_bytes_total_;
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
};

// SHA-256 of a whole file, lowercase hex.
std::string sha256_file(const std::string& path);

}  // namespace pensieve::hub
