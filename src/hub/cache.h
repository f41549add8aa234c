// The huggingface_hub cache layout, shared with transformers, mlx-lm and
// huggingface-cli:
//   <root>/models--ORG--NAME/blobs/<etag>              file contents
//   <root>/models--ORG--NAME/blobs/<etag>.incomplete   a download in progress
//   <root>/models--ORG--NAME/snapshots/<commit>/<file> -> ../../blobs/<etag>
//   <root>/models--ORG--NAME/refs/<revision>           holds the commit id
//   <root>/.locks/models--ORG--NAME/<etag>.lock        flock'ed while writing a blob
// <root> is $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace pensieve::hub {

// The cache root from the environment, as huggingface_hub computes it.
std::string default_cache_dir();

class HubCache {
 public:
  explicit HubCache(std::string root);
  const std::string& root() const { return root_; }

  std::string repo_dir(const std::string& repo) const;
  std::string blobs_dir(const std::string& repo) const;
  std::string blob_path(const std::string& repo, const std::string& etag) const;
  std::string incomplete_path(const std::string& repo, const std::string& etag) const;
  std::string lock_path(const std::string& repo, const std::string& etag) const;
  std::string snapshot_dir(const std::string& repo, const std::string& commit) const;
  std::string snapshot_file(const std::string& repo, const std::string& commit,
                            const std::string& file) const;
  std::string ref_path(const std::string& repo, const std::string& revision) const;

  // The commit refs/<revision> holds, if any.
  std::optional<std::string> read_ref(const std::string& repo, const std::string& revision) const;
  // Atomically (write + rename) points refs/<revision> at `commit`.
  void write_ref(const std::string& repo, const std::string& revision,
                 const std::string& commit) const;

  // Makes snapshots/<commit>/<file> a relative symlink to blobs/<etag>
  // (replacing whatever was there, atomically).
  void link_snapshot_file(const std::string& repo, const std::string& commit,
                          const std::string& file, const std::string& etag) const;

  // The snapshot directory for (repo, revision) when the cache has it: a
  // commit-named snapshot, or refs/<revision> naming one. No network.
  std::optional<std::string> find_snapshot(const std::string& repo,
                                           const std::string& revision) const;

 private:
  std::string root_;
};

// Holds an exclusive flock on a lock file (created with its folders) until
// destroyed. Waits for another holder, checking `cancel` while it does.
class BlobLock {
 public:
  BlobLock(const std::string& path, const std::atomic<bool>* cancel);
  ~BlobLock();
  BlobLock(const BlobLock&) = delete;
  BlobLock& operator=(const BlobLock&) = delete;
  // Non-blocking: true when nobody holds `path`'s lock right now.
  static bool is_free(const std::string& path);

 private:
  int fd_ = -1;
};

struct CachedModel {
  std::string repo;
  std::string path;                          // the models--ORG--NAME folder
  uint64_t n_bytes = 0;                      // blobs (+ plain files in snapshots)
  uint64_t n_partial_bytes = 0;              // *.incomplete
  std::map<std::string, std::string> refs;   // revision -> commit
  std::vector<std::string> snapshots;        // commits
};

// Every model folder of the cache, sorted by repo id.
std::vector<CachedModel> list_cached_models(const HubCache& cache);

// Deletes a model's folder and its lock folder; returns the bytes freed.
// Throws when it is not cached or a download of it holds a lock.
uint64_t remove_cached_model(const HubCache& cache, const std::string& repo);

// Why a snapshot can't be loaded ("" when complete enough): config.json must
// be there, every shard an index names must be there, and no entry dangles.
std::string snapshot_problem(const std::string& snapshot_dir);

// Bytes free for an unprivileged user at `path` (or its nearest existing parent).
uint64_t free_disk_bytes(const std::string& path);

}  // namespace pensieve::hub
