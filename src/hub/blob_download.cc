// HubClient::download_blob: one file into blobs/<etag>, through
// blobs/<etag>.incomplete, under the blob's lock. The partial file is what
// makes resume work (Range from its size), and it is only renamed into place
// once its digest matches the etag.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/log.h"
#include "hub/digest.h"
#include "hub/hub_client.h"

namespace pensieve::hub {
namespace fs = std::filesystem;

namespace {

// Owns the .incomplete file's descriptor.
struct PartialFile {
  int fd = -1;
  ~PartialFile() {
    if (fd >= 0) ::close(fd);
  }
};

uint64_t file_size_or_zero(const std::string& path) {
  struct stat info {};
  return ::stat(path.c_str(), &info) == 0 ? static_cast<uint64_t>(info.st_size) : 0;
}

// "bytes 100-199/200" -> 100; -1 when malformed.
int64_t content_range_start(const std::string& value) {
  if (value.rfind("bytes ", 0) != 0) return -1;
  try {
    size_t used = 0;
    const long long start = std::stoll(value.substr(6), &used);
    return value.size() > 6 + used && value[6 + used] == '-' ? start : -1;
  } catch (const std::exception&) {
    return -1;
  }
}

}  // namespace

uint64_t HubClient::download_blob(const HubCache& cache, const std::string& repo,
                                  const RemoteFile& file,
                                  const std::function<void(uint64_t)>& on_bytes) {
  const std::string blob = cache.blob_path(repo, file.etag);
  std::error_code ec;
  if (fs::exists(blob, ec)) return 0;
  // Two processes (or threads) pulling the same model: the second waits here,
  // then finds the blob the first one finished.
  BlobLock lock(cache.lock_path(repo, file.etag), options_.cancel);
  if (fs::exists(blob, ec)) return 0;
  fs::create_directories(cache.blobs_dir(repo), ec);
  if (ec) fail(ErrorKind::resource, "cannot create {}: {}", cache.blobs_dir(repo), ec.message());

  // Every byte received counts, also those of tries that failed later.
  uint64_t n_received = 0;
  with_retries("downloading " + repo + "/" + file.name,
               [&] { download_attempt(cache, repo, file, on_bytes, n_received); });
  return n_received;
}

void HubClient::download_attempt(const HubCache& cache, const std::string& repo,
                                 const RemoteFile& file,
                                 const std::function<void(uint64_t)>& on_bytes,
                                 uint64_t& n_received) {
  const std::string blob = cache.blob_path(repo, file.etag);
  const std::string partial_path = cache.incomplete_path(repo, file.etag);
  PartialFile partial;
  partial.fd = ::open(partial_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (partial.fd < 0) {
    fail(ErrorKind::resource, "cannot open {}: {}", partial_path, std::strerror(errno));
  }
  uint64_t offset = file_size_or_zero(partial_path);
  if (offset > file.size) {  // not ours to resume: start again
    if (::ftruncate(partial.fd, 0) != 0) {
      fail(ErrorKind::resource, "cannot truncate {}: {}", partial_path, std::strerror(errno));
    }
    offset = 0;
  }
  const DigestKind kind = digest_kind_for_etag(file.etag);
  BlobDigest digest(kind, file.size);
  digest.update_from_file(partial.fd, offset, partial_path);
  if (on_bytes) on_bytes(offset);

  int write_errno = 0;
  bool oversize = false, bad_range = false, first_chunk = true;
  const uint64_t n_received_before = n_received;
  HttpResponse response;
  if (offset < file.size) {
    if (offset > 0) spdlog::info("resuming {} at byte {} of {}", file.name, offset, file.size);
    HttpRequest request;
    request.url = resolve_url(repo, file.commit, file.name);
    request.bearer_token = options_.token;
    request.range_start = offset;
    request.sink = [&](const char* data, size_t n, const HttpResponse& head) {
      if (first_chunk) {
        first_chunk = false;
        if (head.status == 206) {
          if (content_range_start(head.header("content-range")) != static_cast<int64_t>(offset)) {
            bad_range = true;
            return false;
          }
        } else if (offset > 0) {  // the server ignored Range: take the whole body
          if (::ftruncate(partial.fd, 0) != 0) {
            write_errno = errno;
            return false;
          }
          offset = 0;
          digest.reset();
        }
      }
      if (offset + n > file.size) {
        oversize = true;
        return false;
      }
      for (size_t done = 0; done < n;) {
        const ssize_t wrote = ::pwrite(partial.fd, data + done, n - done,
                                       static_cast<off_t>(offset + done));
        if (wrote < 0 && errno == EINTR) continue;
        if (wrote <= 0) {
          write_errno = wrote < 0 ? errno : ENOSPC;
          return false;
        }
        done += static_cast<size_t>(wrote);
      }
      digest.update(data, n);
      offset += n;
      n_received += n;
      if (on_bytes) on_bytes(offset);
      return true;
    };
    response = http_.perform(request);
    const bool progress = n_received > n_received_before;
    const std::string where = repo + "/" + file.name;
    if (response.cancelled) {
      fail(ErrorKind::resource,
           "download of {} interrupted: {} of {} bytes are kept in {} and the next pull "
           "resumes from there",
           where, offset, file.size, partial_path);
    }
    if (write_errno != 0) {
      // Not retried: a full disk or a file size limit stays until someone acts.
      // Whatever reached the disk is good data, so the next pull resumes after it.
      const uint64_t kept = file_size_or_zero(partial_path);
      fail(ErrorKind::resource,
           "downloading {}: cannot write {}: {} ({} of {} bytes are kept there; make room and "
           "pull again to resume)",
           where, partial_path, std::strerror(write_errno), kept, file.size);
    }
    if (oversize || bad_range) {
      fs::remove(partial_path);
      throw TransientError(oversize ? fmt::format("the server sent more than the {} bytes of {}",
                                                  file.size, where)
                                    : fmt::format("the server answered with the wrong range "
                                                  "('{}' for bytes {}-)",
                                                  response.header("content-range"), offset),
                           false, false);
    }
    if (response.transient_transport_error()) {
      throw TransientError(fmt::format("{} after {} of {} bytes",
                                       transport_error(response, request.url), offset, file.size),
                           !progress, progress);
    }
    if (response.transport_failed()) {
      fail(ErrorKind::resource, "downloading {}: {}", where,
           transport_error(response, request.url));
    }
    if (response.status == 416) {  // our partial file doesn't fit the remote one
      fs::remove(partial_path);
      throw TransientError("the server refused the resume range (HTTP 416)", false, false);
    }
    if (response.status >= 500 || response.status == 429 || response.status == 408) {
      throw TransientError(fmt::format("HTTP {} while downloading {}", response.status, where),
                           false, progress);
    }
    if ((response.status == 401 || response.status == 403) &&
        url_origin(response.effective_url) != url_origin(options_.endpoint)) {
      // The CDN refused a signed link (it may have expired): ask the Hub for a new one.
      throw TransientError(fmt::format("HTTP {} from {}", response.status,
                                       url_origin(response.effective_url)),
                           false, progress);
    }
    if (response.status != 200 && response.status != 206) {
      fail_http(response, request.url, repo, "downloading " + where);
    }
    if (offset != file.size) {
      throw TransientError(fmt::format("the transfer ended after {} of {} bytes", offset,
                                       file.size),
                           false, progress);
    }
  }

  if (kind == DigestKind::none) {
    spdlog::warn("{}: etag '{}' is not a SHA-256 or git blob id; only the size is checked",
                 file.name, file.etag);
  } else {
    const std::string actual = digest.hex();
    if (actual != file.etag) {
      ::close(partial.fd);
      partial.fd = -1;
      fs::remove(partial_path);
      throw TransientError(fmt::format("{} is corrupt: {} is {}, expected {} (deleted; "
                                       "downloading it again)",
                                       file.name,
                                       kind == DigestKind::sha256 ? "SHA-256" : "git blob id",
                                       actual, file.etag),
                           false, false);
    }
  }
  if (::fdatasync(partial.fd) != 0) {
    fail(ErrorKind::resource, "cannot sync {}: {}", partial_path, std::strerror(errno));
  }
  std::error_code ec;
  fs::rename(partial_path, blob, ec);
  if (ec) fail(ErrorKind::resource, "cannot move {} to {}: {}", partial_path, blob, ec.message());
}

}  // namespace pensieve::hub
