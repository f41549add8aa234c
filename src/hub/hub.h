// Getting a model from the Hugging Face Hub into the shared cache:
//   pull("ORG/NAME", "main", options, progress) -> snapshots/<commit> folder
//   ensure_model("ORG/NAME[@rev]" or a local folder, progress) -> a folder to load
// Only the files a model needs are fetched; every blob is verified against its
// etag before it is renamed into place; partial files are resumed.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

namespace pensieve::hub {

struct PullProgress {
  enum class Stage { resolving, downloading, file_done, done };
  Stage stage = Stage::resolving;
  std::string repo;
  std::string file;                 // the file being downloaded ("" outside downloads)
  size_t file_index = 0;            // 1-based among the files to download
  size_t n_files = 0;               // files this pull downloads
  uint64_t file_bytes_done = 0;     // including bytes kept from an earlier try
  uint64_t file_bytes_total = 0;
  uint64_t bytes_done = 0;          // over all the files this pull downloads
  uint64_t bytes_total = 0;
  uint64_t bytes_resumed = 0;       // part of bytes_done that was already on disk
};
using ProgressCallback = std::function<void(const PullProgress&)>;

struct HubOptions {
  std::string endpoint = "https://huggingface.co";
  std::string token;       // sent as "Authorization: Bearer" to the endpoint's host only
  std::string cache_dir;   // the hub cache root (see cache.h)
  bool offline = false;    // HF_HUB_OFFLINE: use only the cache
  int max_attempts = 5;    // per request / file, for transient failures
  std::chrono::milliseconds first_backoff{1000};  // doubles after each failure...
  std::chrono::milliseconds max_backoff{30000};   // ...up to this
  std::chrono::milliseconds connect_timeout{10000};
  std::chrono::seconds stall_timeout{30};         // no bytes for this long: retry
  // Free bytes at a path; empty means statvfs. Tests inject a small disk here.
  std::function<uint64_t(const std::string& path)> free_space;
  // Called before each backoff wait with what failed ("downloading ORG/NAME/FILE"),
  // why, and how long it waits; the log gets the same as a warning.
  std::function<void(const std::string& what, const std::string& error,
                     std::chrono::milliseconds delay)> on_retry;
  const std::atomic<bool>* cancel = nullptr;      // set (e.g. on SIGINT) to stop

  // HF_ENDPOINT, HF_TOKEN (else the token file huggingface-cli login writes),
  // HF_HUB_CACHE / HF_HOME, HF_HUB_OFFLINE, HF_HUB_DOWNLOAD_TIMEOUT.
  static HubOptions from_env();
};

struct PullResult {
  std::string repo;
  std::string commit;
  std::string snapshot_dir;
  size_t n_files = 0;               // files in the snapshot that the model uses
  size_t n_files_downloaded = 0;
  uint64_t n_bytes_downloaded = 0;  // received over the network by this pull
  bool used_cache_only = false;     // offline, or the Hub was unreachable
};

PullResult pull(const std::string& repo, const std::string& revision, const HubOptions& options,
                const ProgressCallback& progress = {});

// The folder to load for `repo_or_dir`: an existing local folder is returned
// as it is, and a path that does not exist (looks_like_path) is an error;
// "ORG/NAME[@REVISION]" is pulled. A complete snapshot already in the cache
// answers at once with HF_HUB_OFFLINE or for a commit id, and otherwise
// after one short look at the Hub (a few seconds at most, no retries): a
// machine without network starts from the cache instead of retrying for
// a quarter of a minute, and an online one still gets a newer commit.
std::string ensure_model(const std::string& repo_or_dir, const HubOptions& options,
                         const ProgressCallback& progress = {});
std::string ensure_model(const std::string& repo_or_dir, const ProgressCallback& progress = {});

// Whether a --model argument names a path rather than a Hub repo: it starts
// with '/', '.' or '~', or has more than one '/' (ORG/NAME has one).
bool looks_like_path(const std::string& text);

// "ORG/NAME" when dir is a snapshot folder of a Hub cache
// (.../models--ORG--NAME/snapshots/COMMIT), else "".
std::string repo_of_snapshot_dir(const std::string& dir);

// The snapshot folder for (repo, revision) in the cache, or throws (not_found)
// saying how to get it. No network.
std::string cached_snapshot_dir(const std::string& repo, const std::string& revision,
                                const HubOptions& options);

}  // namespace pensieve::hub
