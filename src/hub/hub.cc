#include "hub/hub.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/log.h"
#include "format/gguf.h"
#include "hub/cache.h"
#include "hub/hub_client.h"
#include "hub/progress_printer.h"
#include "hub/repo_id.h"

namespace pensieve::hub {
namespace fs = std::filesystem;

namespace {

constexpr const char* kIndexFile = "model.safetensors.index.json";

std::string env(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? "" : value;
}

bool env_flag(const char* name) {
  std::string value = env(name);
  std::transform(value.begin(), value.end(), value.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  return value == "1" || value == "ON" || value == "YES" || value == "TRUE";
}

std::string trim(std::string text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  size_t start = 0;
  while (start < text.size() && std::isspace(static_cast<unsigned char>(text[start]))) ++start;
  return text.substr(start);
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The shard names an index's weight_map points at.
std::set<std::string> index_shards(const std::string& path, const std::string& repo) {
  nlohmann::json json;
  try {
    std::ifstream in(path);
    json = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: {} of {} is not valid JSON: {}", path, kIndexFile, repo, e.what());
  }
  if (!json.is_object() || !json.contains("weight_map") || !json["weight_map"].is_object()) {
    fail("{}: missing key 'weight_map'", path);
  }
  std::set<std::string> shards;
  for (const auto& [tensor, file] : json["weight_map"].items()) {
    if (!file.is_string()) fail("{}: weight_map['{}'] is not a file name", path, tensor);
    validate_repo_file_name(repo, file.get<std::string>());
    shards.insert(file.get<std::string>());
  }
  return shards;
}

PullResult cached_result(const std::string& repo, const std::string& snapshot_dir) {
  PullResult result;
  result.repo = repo;
  result.snapshot_dir = snapshot_dir;
  result.commit = fs::path(snapshot_dir).filename().string();
  result.used_cache_only = true;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(snapshot_dir, ec)) {
    if (is_model_file(entry.path().filename().string())) ++result.n_files;
  }
  return result;
}

std::string cache_root(const HubOptions& options) {
  return options.cache_dir.empty() ? default_cache_dir() : options.cache_dir;
}

// One pull: resolves the revision, picks the files, checks space, downloads.
class Puller {
 public:
  Puller(const std::string& repo, const std::string& revision, const HubOptions& options,
         const ProgressCallback& progress)
      : repo_(repo), revision_(revision), options_(options), progress_(progress),
        cache_(cache_root(options)), client_(options) {
    state_.repo = repo;
  }

  PullResult run() {
    report(PullProgress::Stage::resolving);
    RevisionInfo info;
    try {
      info = client_.revision_info(repo_, revision_);
    } catch (const HubUnreachable& e) {
      const auto snapshot = cache_.find_snapshot(repo_, revision_);
      if (!snapshot || !snapshot_problem(*snapshot).empty()) throw;
      spdlog::warn("{}; using the cached snapshot {}", e.what(), *snapshot);
      return cached_result(repo_, *snapshot);
    }
    commit_ = info.commit;
    result_.repo = repo_;
    result_.commit = commit_;
    result_.snapshot_dir = cache_.snapshot_dir(repo_, commit_);

    std::vector<std::string> wanted = pick_files(info.files);
    result_.n_files = wanted.size();

    std::vector<RemoteFile> missing;
    for (const auto& name : wanted) {
      std::error_code ec;
      if (fs::exists(cache_.snapshot_file(repo_, commit_, name), ec)) continue;
      RemoteFile remote = client_.file_metadata(repo_, commit_, name);
      if (fs::exists(cache_.blob_path(repo_, remote.etag), ec)) {
        cache_.link_snapshot_file(repo_, commit_, name, remote.etag);
      } else {
        missing.push_back(std::move(remote));
      }
    }
    // Small files first: a broken repo shows up before gigabytes move.
    std::stable_sort(missing.begin(), missing.end(),
                     [](const RemoteFile& a, const RemoteFile& b) { return a.size < b.size; });
    download(missing);

    if (revision_ != commit_) cache_.write_ref(repo_, revision_, commit_);
    const std::string problem = snapshot_problem(result_.snapshot_dir);
    if (!problem.empty()) {
      fail(ErrorKind::not_found, "{}@{} (commit {}): {}", repo_, revision_, commit_, problem);
    }
    report(PullProgress::Stage::done);
    return result_;
  }

 private:
  // The model's files among the repo's, with only the shards the index names.
  std::vector<std::string> pick_files(const std::vector<std::string>& files) {
    std::vector<std::string> wanted;
    bool has_config = false, has_weights = false, has_index = false;
    for (const auto& name : files) {
      if (!is_model_file(name)) continue;
      wanted.push_back(name);
      has_config = has_config || name == "config.json";
      has_weights = has_weights || ends_with(name, ".safetensors");
      has_index = has_index || name == kIndexFile;
    }
    const std::string where = repo_ + "@" + revision_;
    if (!has_config) fail(ErrorKind::unsupported, "{} has no config.json: not a model repo", where);
    if (!has_weights) {
      fail(ErrorKind::unsupported,
           "{} has no .safetensors weights (pensieve loads only safetensors checkpoints)", where);
    }
    if (!has_index) return wanted;

    // Some repos carry the same weights twice (e.g. consolidated.safetensors
    // next to the sharded files); the index says which ones the model uses.
    fetch_one(kIndexFile);
    const std::set<std::string> shards =
        index_shards(cache_.snapshot_file(repo_, commit_, kIndexFile), repo_);
    const std::set<std::string> present(files.begin(), files.end());
    for (const auto& shard : shards) {
      if (!present.count(shard)) fail("{}: {} names {}, which the repo lacks", where, kIndexFile,
                                      shard);
    }
    std::vector<std::string> kept;
    for (const auto& name : wanted) {
      if (!ends_with(name, ".safetensors") || shards.count(name)) kept.push_back(name);
    }
    return kept;
  }

  void fetch_one(const std::string& name) {
    std::error_code ec;
    if (fs::exists(cache_.snapshot_file(repo_, commit_, name), ec)) return;
    RemoteFile remote = client_.file_metadata(repo_, commit_, name);
    if (!fs::exists(cache_.blob_path(repo_, remote.etag), ec)) download({remote});
    cache_.link_snapshot_file(repo_, commit_, name, remote.etag);
  }

  void download(const std::vector<RemoteFile>& files) {
    if (files.empty()) return;
    uint64_t n_needed = 0, n_total = 0;
    for (const auto& file : files) {
      const std::string partial = cache_.incomplete_path(repo_, file.etag);
      std::error_code ec;
      const uint64_t kept = fs::exists(partial, ec) ? fs::file_size(partial, ec) : 0;
      n_needed += file.size - std::min(kept, file.size);
      n_total += file.size;
    }
    check_disk_space(n_needed);

    state_.n_files = files.size();
    state_.bytes_total = n_total;
    state_.bytes_done = 0;
    uint64_t n_done_before = 0;
    for (size_t i = 0; i < files.size(); ++i) {
      const RemoteFile& file = files[i];
      state_.file = file.name;
      state_.file_index = i + 1;
      state_.file_bytes_total = file.size;
      bool first = true;
      const uint64_t received = client_.download_blob(cache_, repo_, file, [&](uint64_t on_disk) {
        if (first) {  // bytes kept from an earlier, interrupted pull
          state_.bytes_resumed += on_disk;
          first = false;
        }
        state_.file_bytes_done = on_disk;
        state_.bytes_done = n_done_before + on_disk;
        report(PullProgress::Stage::downloading);
      });
      n_done_before += file.size;
      state_.file_bytes_done = file.size;
      state_.bytes_done = n_done_before;
      result_.n_bytes_downloaded += received;
      ++result_.n_files_downloaded;
      cache_.link_snapshot_file(repo_, commit_, file.name, file.etag);
      report(PullProgress::Stage::file_done);
    }
    state_.file.clear();
  }

  void check_disk_space(uint64_t n_needed) {
    const std::string dir = cache_.blobs_dir(repo_);
    const uint64_t n_free = options_.free_space ? options_.free_space(dir) : free_disk_bytes(dir);
    if (n_needed > n_free) {
      fail(ErrorKind::resource,
           "not enough disk space to pull {}: {} bytes ({}) needed, {} bytes ({}) free in {}",
           repo_, n_needed, format_bytes(n_needed), n_free, format_bytes(n_free), dir);
    }
  }

  void report(PullProgress::Stage stage) {
    state_.stage = stage;
    if (progress_) progress_(state_);
  }

  std::string repo_, revision_, commit_;
  const HubOptions& options_;
  const ProgressCallback& progress_;
  HubCache cache_;
  HubClient client_;
  PullProgress state_;
  PullResult result_;
};

}  // namespace

HubOptions HubOptions::from_env() {
  HubOptions options;
  std::string endpoint = env("HF_ENDPOINT");
  if (!endpoint.empty()) {
    while (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
    if (endpoint.rfind("http://", 0) != 0 && endpoint.rfind("https://", 0) != 0) {
      fail("HF_ENDPOINT='{}': expected an http:// or https:// URL", endpoint);
    }
    options.endpoint = endpoint;
  }
  options.token = trim(env("HF_TOKEN"));
  if (options.token.empty()) {
    // Where `huggingface-cli login` keeps the token.
    std::string path = env("HF_TOKEN_PATH");
    if (path.empty() && !env("HF_HOME").empty()) path = env("HF_HOME") + "/token";
    if (path.empty() && !env("HOME").empty()) path = env("HOME") + "/.cache/huggingface/token";
    std::ifstream in(path);
    if (in) std::getline(in, options.token);
    options.token = trim(options.token);
  }
  options.cache_dir = default_cache_dir();
  options.offline = env_flag("HF_HUB_OFFLINE");
  if (const std::string timeout = env("HF_HUB_DOWNLOAD_TIMEOUT"); !timeout.empty()) {
    try {
      options.stall_timeout = std::chrono::seconds(std::max(1L, std::stol(timeout)));
    } catch (const std::exception&) {
      fail("HF_HUB_DOWNLOAD_TIMEOUT='{}': expected a number of seconds", timeout);
    }
  }
  return options;
}

std::string cached_snapshot_dir(const std::string& repo, const std::string& revision,
                                const HubOptions& options) {
  validate_repo_id(repo);
  validate_revision(revision);
  HubCache cache(cache_root(options));
  const auto snapshot = cache.find_snapshot(repo, revision);
  const char* why = options.offline ? " and HF_HUB_OFFLINE is set, so nothing is downloaded" : "";
  if (!snapshot) {
    fail(ErrorKind::not_found, "{}@{} is not in the cache {}{}; run `pensieve pull {}@{}` online",
         repo, revision, cache.root(), why, repo, revision);
  }
  const std::string problem = snapshot_problem(*snapshot);
  if (!problem.empty()) {
    fail(ErrorKind::not_found,
         "the cached snapshot {} of {}@{} is incomplete ({}){}; run `pensieve pull {}@{}` online",
         *snapshot, repo, revision, problem, why, repo, revision);
  }
  return *snapshot;
}

PullResult pull(const std::string& repo, const std::string& revision, const HubOptions& options,
                const ProgressCallback& progress) {
  validate_repo_id(repo);
  validate_revision(revision);
  if (options.offline) {
    return cached_result(repo, cached_snapshot_dir(repo, revision, options));
  }
  return Puller(repo, revision, options, progress).run();
}

bool looks_like_path(const std::string& text) {
  const char first = text.empty() ? '\0' : text.front();
  return first == '/' || first == '.' || first == '~' ||
         std::count(text.begin(), text.end(), '/') > 1;
}

std::string repo_of_snapshot_dir(const std::string& dir) {
  fs::path p = fs::path(dir).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();  // a trailing '/'
  const fs::path snapshots = p.parent_path();
  if (snapshots.filename() != "snapshots" || !is_commit_hash(p.filename().string())) return "";
  return repo_from_folder_name(snapshots.parent_path().filename().string());
}

std::string ensure_model(const std::string& repo_or_dir, const HubOptions& options,
                         const ProgressCallback& progress) {
  std::error_code ec;
  if (fs::is_directory(repo_or_dir, ec)) return repo_or_dir;
  // A GGUF file, or an Ollama model: loaded in place.
  if (repo_or_dir.rfind("ollama:", 0) == 0 || fs::is_regular_file(repo_or_dir, ec)) {
    if (find_gguf(repo_or_dir).empty()) fail("{}: not a model folder or a GGUF file", repo_or_dir);
    return repo_or_dir;
  }
  if (looks_like_path(repo_or_dir)) {
    fail(ErrorKind::not_found, "model folder {} does not exist", repo_or_dir);
  }
  const RepoRef ref = parse_repo_ref(repo_or_dir);
  const HubCache cache(cache_root(options));
  const auto snapshot = cache.find_snapshot(ref.repo, ref.revision);
  if (snapshot && snapshot_problem(*snapshot).empty()) {
    // A commit never changes; offline, the cache is all there is.
    if (options.offline || is_commit_hash(ref.revision)) return *snapshot;
    HubOptions quick = options;
    quick.max_attempts = 1;
    quick.connect_timeout = std::min(options.connect_timeout, std::chrono::milliseconds(2000));
    quick.stall_timeout = std::min(options.stall_timeout, std::chrono::seconds(5));
    try {
      const RevisionInfo info = HubClient(quick).revision_info(ref.repo, ref.revision);
      if (cache.snapshot_dir(ref.repo, info.commit) == *snapshot) return *snapshot;
      spdlog::info("{}@{} is now commit {}: pulling it", ref.repo, ref.revision, info.commit);
    } catch (const Error& e) {
      spdlog::warn("could not check {}@{} on the Hub ({}); using the cached snapshot {}", ref.repo,
                   ref.revision, e.what(), *snapshot);
      return *snapshot;
    }
  }
  return pull(ref.repo, ref.revision, options, progress).snapshot_dir;
}

std::string ensure_model(const std::string& repo_or_dir, const ProgressCallback& progress) {
  std::error_code ec;
  if (fs::is_directory(repo_or_dir, ec) || fs::is_regular_file(repo_or_dir, ec) || repo_or_dir.rfind("ollama:", 0) == 0)
    return ensure_model(repo_or_dir, HubOptions{}, progress);
  return ensure_model(repo_or_dir, HubOptions::from_env(), progress);
}

}  // namespace pensieve::hub
