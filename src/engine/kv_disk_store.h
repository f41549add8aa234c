// The prefix cache's disk tier: full KV blocks kept as files, named by the
// same chained hashes as in memory (prefix_cache.h), so that a prompt
// computed once can be read back after the block left memory, or after a
// restart, instead of computed again.
//
// Layout: DIR/<fingerprint id>/<hash>.kvb, where the fingerprint is what
// makes K/V comparable (the model's weights and config, the KV layout
// version and element type, the attention window): blocks of another model,
// layout or type live in another folder and are never read. Each file has a
// header (magic, version, fingerprint id, the block's hash, parent hash and
// tokens, payload size, checksums) and the payload.
//
// Safety: a file is written under a temporary name and renamed into place,
// so a reader never sees half a file; a file that is torn, truncated or has
// flipped bytes fails its checksum and is removed with a warning, never
// returned. Two servers may share DIR. Disk errors are reported by return
// values and a warning, never thrown: the caller recomputes.
//
// Size: at most max_bytes of block files per store; past it the least
// recently used files (by modification time, which get() refreshes) go.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <span>
#include <string>

namespace pensieve {

class KvDiskStore {
 public:
  // Creates DIR/<id of fingerprint>/ if needed and removes temporary files
  // that writers left more than ten minutes ago. Throws Error when the
  // folder cannot be made or belongs to another fingerprint.
  KvDiskStore(std::string dir, std::string fingerprint, int64_t max_bytes);

  // Stores a block (nothing to do when it is there already). False when it
  // could not be written (full disk, permissions): logged, nothing left behind.
  bool put(uint64_t hash, uint64_t parent, std::span<const int32_t> tokens,
           std::span<const std::byte> payload);
  // Reads the block into `out` (whose size must be the payload's). False
  // when there is none for these hash, parent and tokens, or when its file
  // is damaged (then it is removed).
  bool get(uint64_t hash, uint64_t parent, std::span<const int32_t> tokens, std::span<std::byte> out);

  const std::string& folder() const { return folder_; }
  // Bytes of block files in the folder (all writers'), counted now.
  int64_t bytes_on_disk() const;
  int64_t n_damaged() const;  // damaged files found and removed so far

 private:
  std::string path_of(uint64_t hash) const;
  void trim();  // removes the least recently used files until within max_bytes_

  std::string folder_;
  uint64_t fingerprint_id_ = 0;
  int64_t max_bytes_ = 0;
  mutable std::mutex mutex_;
  int64_t written_since_trim_ = 0;  // bytes put since the folder was last counted
  int64_t counted_ = 0;             // bytes in the folder when last counted
  int64_t n_damaged_ = 0;
  uint64_t n_tmp_ = 0;
};

// FNV-1a 64 of text: the fingerprint's id (stable across runs and machines).
uint64_t fingerprint_id(const std::string& text);

}  // namespace pensieve
