#include "hub/cache.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/log.h"
#include "hub/repo_id.h"

namespace pensieve::hub {
namespace fs = std::filesystem;

namespace {

std::string env(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? "" : value;
}

std::string expand_home(const std::string& path) {
  if (path == "~" || path.rfind("~/", 0) == 0) return env("HOME") + path.substr(1);
  return path;
}

std::string random_suffix() {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  return std::to_string(rng());
}

void create_dirs(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail(ErrorKind::resource, "cannot create {}: {}", dir.string(), ec.message());
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

std::string default_cache_dir() {
  for (const char* name : {"HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"}) {
    if (!env(name).empty()) return expand_home(env(name));
  }
  if (!env("HF_HOME").empty()) return expand_home(env("HF_HOME")) + "/hub";
  if (!env("XDG_CACHE_HOME").empty()) return expand_home(env("XDG_CACHE_HOME")) + "/huggingface/hub";
  if (env("HOME").empty()) fail("cannot find the Hugging Face cache: set HF_HUB_CACHE or HOME");
  return env("HOME") + "/.cache/huggingface/hub";
}

HubCache::HubCache(std::string root) : root_(std::move(root)) {
  while (root_.size() > 1 && root_.back() == '/') root_.pop_back();
}

std::string HubCache::repo_dir(const std::string& repo) const {
  return root_ + "/" + repo_folder_name(repo);
}
std::string HubCache::blobs_dir(const std::string& repo) const { return repo_dir(repo) + "/blobs"; }
std::string HubCache::blob_path(const std::string& repo, const std::string& etag) const {
  return blobs_dir(repo) + "/" + etag;
}
std::string HubCache::incomplete_path(const std::string& repo, const std::string& etag) const {
  return blob_path(repo, etag) + ".incomplete";
}
std::string HubCache::lock_path(const std::string& repo, const std::string& etag) const {
  return root_ + "/.locks/" + repo_folder_name(repo) + "/" + etag + ".lock";
}
std::string HubCache::snapshot_dir(const std::string& repo, const std::string& commit) const {
  return repo_dir(repo) + "/snapshots/" + commit;
}
std::string HubCache::snapshot_file(const std::string& repo, const std::string& commit,
                                    const std::string& file) const {
  return snapshot_dir(repo, commit) + "/" + file;
}
std::string HubCache::ref_path(const std::string& repo, const std::string& revision) const {
  return repo_dir(repo) + "/refs/" + revision;
}

std::optional<std::string> HubCache::read_ref(const std::string& repo,
                                              const std::string& revision) const {
  std::ifstream in(ref_path(repo, revision));
  if (!in) return std::nullopt;
  std::string commit;
  in >> commit;
  if (!is_commit_hash(commit)) return std::nullopt;
  return commit;
}

void HubCache::write_ref(const std::string& repo, const std::string& revision,
                         const std::string& commit) const {
  const fs::path path = ref_path(repo, revision);
  create_dirs(path.parent_path());
  const std::string tmp = path.string() + ".tmp-" + random_suffix();
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << commit;
    if (!out) fail(ErrorKind::resource, "cannot write {}", tmp);
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    fail(ErrorKind::resource, "cannot write {}: {}", path.string(), ec.message());
  }
}

void HubCache::link_snapshot_file(const std::string& repo, const std::string& commit,
                                  const std::string& file, const std::string& etag) const {
  const fs::path link = snapshot_file(repo, commit, file);
  create_dirs(link.parent_path());
  // snapshots/<commit>/<a/b/file> -> ../../../blobs/<etag>: one ".." per level.
  std::string target;
  for (size_t i = 0, depth = std::count(file.begin(), file.end(), '/') + 2; i < depth; ++i) {
    target += "../";
  }
  target += "blobs/" + etag;
  std::error_code ec;
  if (fs::is_symlink(link, ec) && fs::read_symlink(link, ec).string() == target) return;
  const std::string tmp = link.string() + ".tmp-" + random_suffix();
  fs::create_symlink(target, tmp, ec);
  if (!ec) fs::rename(tmp, link, ec);
  if (ec) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    fail(ErrorKind::resource, "cannot link {} to {}: {}", link.string(), target, ec.message());
  }
}

std::optional<std::string> HubCache::find_snapshot(const std::string& repo,
                                                   const std::string& revision) const {
  std::error_code ec;
  if (is_commit_hash(revision) && fs::is_directory(snapshot_dir(repo, revision), ec)) {
    return snapshot_dir(repo, revision);
  }
  const auto commit = read_ref(repo, revision);
  if (commit && fs::is_directory(snapshot_dir(repo, *commit), ec)) {
    return snapshot_dir(repo, *commit);
  }
  return std::nullopt;
}

BlobLock::BlobLock(const std::string& path, const std::atomic<bool>* cancel) {
  create_dirs(fs::path(path).parent_path());
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) fail(ErrorKind::resource, "cannot open lock {}: {}", path, std::strerror(errno));
  bool told = false;
  while (flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK && errno != EINTR) {
      const int err = errno;
      ::close(fd_);
      fail(ErrorKind::resource, "cannot lock {}: {}", path, std::strerror(err));
    }
    if (!told) {
      spdlog::info("waiting for another download of the same file (lock {})", path);
      told = true;
    }
    if (cancel != nullptr && cancel->load()) {
      ::close(fd_);
      fail(ErrorKind::resource, "interrupted while waiting for lock {}", path);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

BlobLock::~BlobLock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the flock
}

bool BlobLock::is_free(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return true;
  const bool free = flock(fd, LOCK_EX | LOCK_NB) == 0;
  ::close(fd);
  return free;
}

std::vector<CachedModel> list_cached_models(const HubCache& cache) {
  std::vector<CachedModel> models;
  std::error_code ec;
  if (!fs::is_directory(cache.root(), ec)) return models;
  for (const auto& entry : fs::directory_iterator(cache.root(), ec)) {
    const std::string repo = repo_from_folder_name(entry.path().filename().string());
    if (repo.empty() || !entry.is_directory(ec)) continue;
    CachedModel model;
    model.repo = repo;
    model.path = entry.path().string();
    for (const auto& blob : fs::directory_iterator(entry.path() / "blobs", ec)) {
      if (!blob.is_regular_file(ec)) continue;
      const uint64_t size = blob.file_size(ec);
      if (ends_with(blob.path().filename().string(), ".incomplete")) {
        model.n_partial_bytes += size;
      } else {
        model.n_bytes += size;
      }
    }
    for (const auto& snap : fs::directory_iterator(entry.path() / "snapshots", ec)) {
      if (!snap.is_directory(ec)) continue;
      model.snapshots.push_back(snap.path().filename().string());
      // Tools that copy instead of linking leave plain files here.
      for (const auto& file : fs::recursive_directory_iterator(snap.path(), ec)) {
        if (!file.is_symlink(ec) && file.is_regular_file(ec)) model.n_bytes += file.file_size(ec);
      }
    }
    std::sort(model.snapshots.begin(), model.snapshots.end());
    const fs::path refs = entry.path() / "refs";
    for (const auto& ref : fs::recursive_directory_iterator(refs, ec)) {
      if (!ref.is_regular_file(ec)) continue;
      const std::string name = fs::relative(ref.path(), refs, ec).string();
      if (auto commit = cache.read_ref(repo, name)) model.refs[name] = *commit;
    }
    models.push_back(std::move(model));
  }
  std::sort(models.begin(), models.end(),
            [](const CachedModel& a, const CachedModel& b) { return a.repo < b.repo; });
  return models;
}

uint64_t remove_cached_model(const HubCache& cache, const std::string& repo) {
  validate_repo_id(repo);
  std::error_code ec;
  const std::string dir = cache.repo_dir(repo);
  if (!fs::is_directory(dir, ec)) {
    fail(ErrorKind::not_found, "{} is not in the cache ({})", repo, cache.root());
  }
  const fs::path locks = cache.root() + "/.locks/" + repo_folder_name(repo);
  for (const auto& lock : fs::directory_iterator(locks, ec)) {
    if (!BlobLock::is_free(lock.path().string())) {
      fail(ErrorKind::resource, "{} is being downloaded by another process (lock {} is held)",
           repo, lock.path().string());
    }
  }
  uint64_t n_bytes = 0;
  for (const auto& model : list_cached_models(cache)) {
    if (model.repo == repo) n_bytes = model.n_bytes + model.n_partial_bytes;
  }
  fs::remove_all(dir, ec);
  if (ec) fail(ErrorKind::resource, "cannot remove {}: {}", dir, ec.message());
  fs::remove_all(locks, ec);
  return n_bytes;
}

std::string snapshot_problem(const std::string& snapshot_dir) {
  std::error_code ec;
  const fs::path dir = snapshot_dir;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.is_symlink(ec) && !fs::exists(entry.path(), ec)) {
      return "'" + entry.path().filename().string() + "' points to a missing blob";
    }
  }
  if (!fs::exists(dir / "config.json", ec)) return "config.json is missing";
  const fs::path index = dir / "model.safetensors.index.json";
  if (fs::exists(index, ec)) {
    nlohmann::json json;
    try {
      std::ifstream in(index);
      json = nlohmann::json::parse(in);
    } catch (const std::exception& e) {
      return "model.safetensors.index.json is not valid JSON";
    }
    if (!json.contains("weight_map") || !json["weight_map"].is_object()) {
      return "model.safetensors.index.json has no weight_map";
    }
    for (const auto& [tensor, file] : json["weight_map"].items()) {
      if (!file.is_string()) return "model.safetensors.index.json: bad entry for " + tensor;
      if (!fs::exists(dir / file.get<std::string>(), ec)) {
        return "shard " + file.get<std::string>() + " is missing";
      }
    }
    return "";
  }
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (ends_with(entry.path().filename().string(), ".safetensors")) return "";
  }
  return "no .safetensors weights";
}

uint64_t free_disk_bytes(const std::string& path) {
  fs::path probe = path;
  std::error_code ec;
  while (!probe.empty() && !fs::exists(probe, ec)) probe = probe.parent_path();
  if (probe.empty()) probe = ".";
  struct statvfs info {};
  if (statvfs(probe.c_str(), &info) != 0) {
    fail(ErrorKind::resource, "cannot check free space at {}: {}", probe.string(),
         std::strerror(errno));
  }
  return static_cast<uint64_t>(info.f_bavail) * static_cast<uint64_t>(info.f_frsize);
}

}  // namespace pensieve::hub
