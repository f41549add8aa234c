#include "hub/hub_client.h"

#include <algorithm>
#include <cctype>
#include <thread>

#include <curl/curl.h>
#include <nlohmann/json.hpp>

#include "core/log.h"
#include "hub/repo_id.h"

namespace pensieve::hub {
namespace {

constexpr uint64_t kMaxFileBytes = 1ull << 50;  // 1 PiB: anything above is nonsense
constexpr int kMaxRelativeRedirects = 5;

HttpSettings http_settings(const HubOptions& options) {
  HttpSettings settings;
  settings.connect_timeout = options.connect_timeout;
  settings.stall_timeout = std::max(options.stall_timeout, std::chrono::seconds(1));
  settings.cancel = options.cancel;
  return settings;
}

std::string snippet(const std::string& body) {
  std::string out;
  for (char c : body.substr(0, 120)) out += std::isprint(static_cast<unsigned char>(c)) ? c : ' ';
  return out;
}

bool is_transient_status(long status) {
  return status >= 500 || status == 429 || status == 408;
}

}  // namespace

uint64_t parse_size_header(const std::string& value, const std::string& file) {
  bool digits = !value.empty() && value.size() <= 16;  // 1 PiB has 16 digits
  for (char c : value) digits = digits && std::isdigit(static_cast<unsigned char>(c));
  if (!digits) fail("the Hub sent an absurd size '{}' for {}", value, file);
  const uint64_t size = std::stoull(value);
  if (size > kMaxFileBytes) fail("the Hub sent an absurd size {} bytes for {}", size, file);
  return size;
}

std::string normalize_etag(const std::string& value) {
  std::string etag = value;
  if (etag.rfind("W/", 0) == 0) etag = etag.substr(2);
  if (etag.size() >= 2 && etag.front() == '"' && etag.back() == '"') {
    etag = etag.substr(1, etag.size() - 2);
  }
  return etag;
}

HubClient::HubClient(const HubOptions& options)
    : options_(options), http_(http_settings(options)) {}

std::string HubClient::resolve_url(const std::string& repo, const std::string& commit,
                                   const std::string& file) const {
  return options_.endpoint + "/" + repo + "/resolve/" + url_escape(commit, false) + "/" +
         url_escape(file, true);
}

void HubClient::with_retries(const std::string& what, const std::function<void()>& attempt) {
  auto delay = options_.first_backoff;
  for (int n_failed = 0;;) {
    try {
      attempt();
      return;
    } catch (const TransientError& e) {
      if (e.made_progress()) {
        // A resumed download got further: this is a flaky line, not a dead one.
        n_failed = 0;
        delay = options_.first_backoff;
      }
      ++n_failed;
      if (n_failed >= options_.max_attempts) {
        const std::string message =
            fmt::format("{} failed after {} attempts: {}", what, n_failed, e.what());
        if (e.transport()) throw HubUnreachable(message);
        throw Error(ErrorKind::resource, message);
      }
      spdlog::warn("{}: {} (attempt {}/{}); retrying in {} ms", what, e.what(), n_failed,
                   options_.max_attempts, delay.count());
      if (options_.on_retry) options_.on_retry(what, e.what(), delay);
      const auto until = std::chrono::steady_clock::now() + delay;
      while (std::chrono::steady_clock::now() < until) {
        if (options_.cancel != nullptr && options_.cancel->load()) {
          fail(ErrorKind::resource, "{}: interrupted", what);
        }
        std::this_thread::sleep_for(std::min(delay, std::chrono::milliseconds(50)));
      }
      delay = std::min(delay * 2, options_.max_backoff);
    }
  }
}

std::string HubClient::transport_error(const HttpResponse& response,
                                       const std::string& url) const {
  if (response.curl_code == CURLE_OPERATION_TIMEDOUT) {
    return fmt::format("timed out waiting for {} ({}; a transfer that sends nothing for {} s "
                       "is given up, HF_HUB_DOWNLOAD_TIMEOUT sets that)",
                       url, response.curl_error, http_.settings().stall_timeout.count());
  }
  return fmt::format("{} ({})", response.curl_error, url);
}

void HubClient::fail_http(const HttpResponse& response, const std::string& url,
                          const std::string& repo, const std::string& what) {
  const std::string code = response.header("x-error-code");
  std::string detail = response.header("x-error-message");
  if (!detail.empty()) detail = " (" + detail + ")";
  const long status = response.status;
  const std::string token_hint =
      options_.token.empty() ? "set HF_TOKEN to a token of an account that has access"
                             : "the HF_TOKEN that was sent has no access to it";
  if (code == "GatedRepo" || ((status == 401 || status == 403) && code != "RepoNotFound")) {
    fail(ErrorKind::invalid_input,
         "{}: access denied (HTTP {}{}): {} is gated or private; request access at {}/{} "
         "and {}{}",
         what, status, code.empty() ? "" : ", " + code, repo, options_.endpoint, repo,
         token_hint, detail);
  }
  if (code == "RevisionNotFound") {
    fail(ErrorKind::not_found, "{}: revision not found in {} (HTTP {}){}", what, repo, status,
         detail);
  }
  if (code == "EntryNotFound") {
    fail(ErrorKind::not_found, "{}: file not found in {} (HTTP {}){}", what, repo, status, detail);
  }
  if (status == 404 || code == "RepoNotFound") {
    fail(ErrorKind::not_found,
         "{}: repository {} not found on {} (HTTP {}); check the name, or {} if it is private{}",
         what, repo, options_.endpoint, status, options_.token.empty() ? "set HF_TOKEN" :
         "check HF_TOKEN", detail);
  }
  fail(ErrorKind::resource, "{}: HTTP {} from {}{}: {}", what, status, url, detail,
       snippet(response.body));
}

RevisionInfo HubClient::revision_info(const std::string& repo, const std::string& revision) {
  const std::string url = options_.endpoint + "/api/models/" + repo + "/revision/" +
                          url_escape(revision, false);
  const std::string what = "resolving " + repo + "@" + revision;
  HttpResponse response;
  with_retries(what, [&] {
    HttpRequest request;
    request.url = url;
    request.bearer_token = options_.token;
    request.max_body_bytes = 32 << 20;
    response = http_.perform(request);
    if (response.cancelled) fail(ErrorKind::resource, "{}: interrupted", what);
    if (response.transient_transport_error()) {
      throw TransientError(transport_error(response, url), true, false);
    }
    if (response.transport_failed()) {
      fail(ErrorKind::resource, "{}: {}", what, transport_error(response, url));
    }
    if (is_transient_status(response.status)) {
      // A Hub answering 5xx for every try is as good as unreachable: the cache may serve.
      throw TransientError(fmt::format("HTTP {} from {}", response.status, url), true, false);
    }
  });
  if (response.status != 200) fail_http(response, url, repo, what);

  nlohmann::json json;
  try {
    json = nlohmann::json::parse(response.body);
  } catch (const nlohmann::json::exception&) {
    fail("{}: the Hub answered {} with something that is not JSON (Content-Type '{}'): '{}'",
         what, url, response.header("content-type"), snippet(response.body));
  }
  if (!json.is_object() || !json.contains("sha") || !json["sha"].is_string()) {
    fail("{}: the answer of {} has no string 'sha'", what, url);
  }
  RevisionInfo info;
  info.commit = json["sha"].get<std::string>();
  if (!is_commit_hash(info.commit)) {
    fail("{}: 'sha' in the answer of {} is not a commit id: '{}'", what, url,
         snippet(info.commit));
  }
  if (!json.contains("siblings") || !json["siblings"].is_array()) {
    fail("{}: the answer of {} has no 'siblings' list", what, url);
  }
  for (const auto& sibling : json["siblings"]) {
    if (!sibling.is_object() || !sibling.contains("rfilename") ||
        !sibling["rfilename"].is_string()) {
      fail("{}: an entry of 'siblings' in the answer of {} has no string 'rfilename'", what, url);
    }
    info.files.push_back(sibling["rfilename"].get<std::string>());
    validate_repo_file_name(repo, info.files.back());
  }
  return info;
}

RemoteFile HubClient::file_metadata(const std::string& repo, const std::string& commit,
                                    const std::string& file) {
  validate_repo_file_name(repo, file);
  std::string url = resolve_url(repo, commit, file);
  const std::string what = "checking " + repo + "/" + file;
  HttpResponse response;
  with_retries(what, [&] {
    // Like huggingface_hub: HEAD without following redirects, because the metadata
    // is on the Hub's own answer (a 302 to the CDN for LFS files). Relative
    // redirects (a renamed repo) stay on the Hub and are followed.
    std::string target = url;
    for (int n_redirects = 0;; ++n_redirects) {
      HttpRequest request;
      request.url = target;
      request.head = true;
      request.follow_redirects = false;
      request.bearer_token = options_.token;
      response = http_.perform(request);
      if (response.cancelled) fail(ErrorKind::resource, "{}: interrupted", what);
      if (response.transient_transport_error()) {
        throw TransientError(transport_error(response, target), true, false);
      }
      if (response.transport_failed()) {
        fail(ErrorKind::resource, "{}: {}", what, transport_error(response, target));
      }
      if (is_transient_status(response.status)) {
        throw TransientError(fmt::format("HTTP {} from {}", response.status, target), false,
                             false);
      }
      const std::string location = response.header("location");
      const bool relative = !location.empty() && location.front() == '/';
      if (response.status >= 300 && response.status < 400 && relative &&
          n_redirects < kMaxRelativeRedirects && response.header("x-linked-etag").empty()) {
        target = url_origin(options_.endpoint) + location;
        continue;
      }
      url = target;
      return;
    }
  });
  if (response.status < 200 || response.status >= 400) fail_http(response, url, repo, what);

  RemoteFile remote;
  remote.name = file;
  remote.commit = commit;
  const std::string served_commit = response.header("x-repo-commit");
  if (!served_commit.empty() && served_commit != commit) {
    fail("{}: the Hub answered for commit {} instead of {}", what, served_commit, commit);
  }
  const std::string linked_etag = response.header("x-linked-etag");
  remote.lfs = !linked_etag.empty();
  if (response.status >= 300 && !remote.lfs) {
    fail("{}: the Hub redirected {} to '{}' without X-Linked-Etag/X-Linked-Size, so the "
         "file's size and digest are unknown", what, url, response.header("location"));
  }
  remote.etag = normalize_etag(remote.lfs ? linked_etag : response.header("etag"));
  if (remote.etag.empty()) {
    fail("{}: the Hub sent no ETag for {} (HTTP {}), so the file cannot be cached or verified",
         what, url, response.status);
  }
  validate_etag(remote.etag, file);
  // An LFS answer is a redirect whose Content-Length is its own; the file's is X-Linked-Size.
  const char* size_header = remote.lfs ? "x-linked-size" : "content-length";
  if (!response.headers.count(size_header)) {
    fail("{}: the Hub sent no {} for {}", what, size_header, url);
  }
  remote.size = parse_size_header(response.header(size_header), file);
  return remote;
}

}  // namespace pensieve::hub
