#include "hub/http.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <mutex>

#include "core/error.h"

namespace pensieve::hub {
namespace {

constexpr size_t kMaxErrorBodyBytes = 16 << 10;

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
      fail(ErrorKind::internal, "curl_global_init failed");
    }
  });
}

std::string trim(const std::string& text) {
  size_t start = 0, end = text.size();
  while (start < end && std::isspace(static_cast<unsigned char>(text[start]))) ++start;
  while (end > start && std::isspace(static_cast<unsigned char>(text[end - 1]))) --end;
  return text.substr(start, end - start);
}

struct Exchange {
  const HttpRequest* request;
  const HttpSettings* settings;
  CURL* curl;
  HttpResponse response;
  uint64_t n_body_bytes = 0;
};

size_t on_header(char* data, size_t size, size_t n, void* user) {
  auto* ex = static_cast<Exchange*>(user);
  const std::string line(data, size * n);
  if (line.rfind("HTTP/", 0) == 0) {
    ex->response.headers.clear();  // a new response (after a redirect or 100-continue)
    return size * n;
  }
  const size_t colon = line.find(':');
  if (colon != std::string::npos) {
    std::string name = line.substr(0, colon);
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    ex->response.headers[trim(name)] = trim(line.substr(colon + 1));
  }
  return size * n;
}

size_t on_body(char* data, size_t size, size_t n, void* user) {
  auto* ex = static_cast<Exchange*>(user);
  const size_t n_bytes = size * n;
  curl_easy_getinfo(ex->curl, CURLINFO_RESPONSE_CODE, &ex->response.status);
  const bool success = ex->response.status >= 200 && ex->response.status < 300;
  if (ex->request->sink && success) {
    if (!ex->request->sink(data, n_bytes, ex->response)) {
      ex->response.sink_refused = true;
      return 0;
    }
  } else {
    const size_t cap = success ? ex->request->max_body_bytes : kMaxErrorBodyBytes;
    if (ex->response.body.size() + n_bytes > cap) {
      if (success) {
        ex->response.sink_refused = true;
        return 0;
      }
      ex->response.body.append(data, cap - std::min(cap, ex->response.body.size()));
      return n_bytes;
    }
    ex->response.body.append(data, n_bytes);
  }
  ex->n_body_bytes += n_bytes;
  if (ex->request->on_progress) ex->request->on_progress(ex->n_body_bytes);
  return n_bytes;
}

int on_xferinfo(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* ex = static_cast<Exchange*>(user);
  if (ex->settings->cancel != nullptr && ex->settings->cancel->load()) {
    ex->response.cancelled = true;
    return 1;
  }
  return 0;
}

}  // namespace

std::string HttpResponse::header(const std::string& lowercase_name) const {
  auto it = headers.find(lowercase_name);
  return it == headers.end() ? "" : it->second;
}

bool HttpResponse::transient_transport_error() const {
  if (curl_code == 0 || cancelled || sink_refused) return false;
  switch (static_cast<CURLcode>(curl_code)) {
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_TOO_MANY_REDIRECTS:
    case CURLE_WRITE_ERROR:
    case CURLE_ABORTED_BY_CALLBACK:
    case CURLE_OUT_OF_MEMORY:
    case CURLE_FILESIZE_EXCEEDED:
      return false;
    default:
      return true;
  }
}

HttpClient::HttpClient(HttpSettings settings) : settings_(std::move(settings)) {
  global_init();
  curl_ = curl_easy_init();
  if (curl_ == nullptr) fail(ErrorKind::resource, "curl_easy_init failed");
}

HttpClient::~HttpClient() { curl_easy_cleanup(static_cast<CURL*>(curl_)); }

HttpResponse HttpClient::perform(const HttpRequest& request) {
  CURL* curl = static_cast<CURL*>(curl_);
  curl_easy_reset(curl);
  Exchange ex{&request, &settings_, curl, {}, 0};

  curl_easy_setopt(curl, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_USERAGENT, settings_.user_agent.c_str());
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, request.follow_redirects ? 1L : 0L);
  curl_easy_setopt(curl, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(settings_.connect_timeout.count()));
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, static_cast<long>(settings_.stall_timeout.count()));
  curl_easy_setopt(curl, CURLOPT_NOBODY, request.head ? 1L : 0L);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &ex);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &ex);
  curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_xferinfo);
  curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &ex);
  if (request.range_start > 0) {
    const std::string range = std::to_string(request.range_start) + "-";
    curl_easy_setopt(curl, CURLOPT_RANGE, range.c_str());
  }

  curl_slist* headers = nullptr;
  // Sizes and digests refer to the stored bytes, so ask for no transfer encoding.
  headers = curl_slist_append(headers, "Accept-Encoding: identity");
  if (!request.bearer_token.empty()) {
    // curl (>= 7.58) does not send a custom Authorization header to another host
    // when following a redirect, so the token never reaches the CDN.
    const std::string auth = "Authorization: Bearer " + request.bearer_token;
    headers = curl_slist_append(headers, auth.c_str());
  }
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);

  char error_buffer[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error_buffer);
  const CURLcode code = curl_easy_perform(curl);
  curl_slist_free_all(headers);
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, nullptr);

  ex.response.curl_code = static_cast<int>(code);
  if (code != CURLE_OK) {
    ex.response.curl_error = error_buffer[0] != 0 ? error_buffer : curl_easy_strerror(code);
  }
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &ex.response.status);
  char* effective = nullptr;
  if (curl_easy_getinfo(curl, CURLINFO_EFFECTIVE_URL, &effective) == CURLE_OK && effective) {
    ex.response.effective_url = effective;
  }
  return std::move(ex.response);
}

std::string url_origin(const std::string& url) {
  const size_t scheme_end = url.find("://");
  if (scheme_end == std::string::npos) return "";
  const size_t path_start = url.find('/', scheme_end + 3);
  return url.substr(0, path_start);
}

}  // namespace pensieve::hub
