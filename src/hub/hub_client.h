// The Hub's HTTP API as the cache needs it: revision info, file metadata
// (HEAD, as huggingface_hub reads it) and blob downloads into the cache with
// resume, verification and retries. hub.cc puts these together into a pull.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/error.h"
#include "hub/cache.h"
#include "hub/http.h"
#include "hub/hub.h"

namespace pensieve::hub {

struct RevisionInfo {
  std::string commit;
  std::vector<std::string> files;  // every rfilename, validated
};

struct RemoteFile {
  std::string name;
  std::string etag;    // SHA-256 for LFS files, git blob id otherwise
  uint64_t size = 0;
  bool lfs = false;
  std::string commit;  // the commit it was resolved at
};

// A failure worth another try: a connection problem, a 5xx, a corrupt or short body.
class TransientError : public Error {
 public:
  TransientError(std::string message, bool transport, bool made_progress)
      : Error(ErrorKind::resource, std::move(message)),
        transport_(transport), made_progress_(made_progress) {}
  bool transport() const { return transport_; }          // never got a usable answer
  bool made_progress() const { return made_progress_; }  // kept new bytes

 private:
  bool transport_, made_progress_;
};

// Thrown when every attempt failed because the Hub could not be reached.
class HubUnreachable : public Error {
 public:
  explicit HubUnreachable(std::string message) : Error(ErrorKind::resource, std::move(message)) {}
};

class HubClient {
 public:
  explicit HubClient(const HubOptions& options);

  RevisionInfo revision_info(const std::string& repo, const std::string& revision);
  RemoteFile file_metadata(const std::string& repo, const std::string& commit,
                           const std::string& file);
  // Puts the file's blob into the cache (nothing to do when it is there),
  // holding its lock. on_bytes gets the bytes of the file on disk so far.
  // Returns the bytes received over the network.
  uint64_t download_blob(const HubCache& cache, const std::string& repo, const RemoteFile& file,
                         const std::function<void(uint64_t)>& on_bytes);

  std::string resolve_url(const std::string& repo, const std::string& commit,
                          const std::string& file) const;

 private:
  // Runs `attempt` until it returns, retrying TransientErrors with backoff.
  void with_retries(const std::string& what, const std::function<void()>& attempt);
  // One GET of the file into its .incomplete file; adds what it receives to
  // n_received even when it throws.
  void download_attempt(const HubCache& cache, const std::string& repo, const RemoteFile& file,
                        const std::function<void(uint64_t)>& on_bytes, uint64_t& n_received);
  // A transport failure in words: curl's message, with the stall timeout named
  // when it fired.
  std::string transport_error(const HttpResponse& response, const std::string& url) const;
  [[noreturn]] void fail_http(const HttpResponse& response, const std::string& url,
                              const std::string& repo, const std::string& what);

  HubOptions options_;
  HttpClient http_;
};

// Parses a size header strictly: decimal digits only, at most 1 PiB.
uint64_t parse_size_header(const std::string& value, const std::string& file);

// `"abc"` / `W/"abc"` -> abc
std::string normalize_etag(const std::string& value);

}  // namespace pensieve::hub
