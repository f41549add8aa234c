// One HTTP exchange over libcurl, with the knobs the Hub client needs:
// redirects on or off, a Range start, a bearer token (curl keeps it from
// other hosts on redirects), a stall timeout (no bytes for N seconds aborts)
// and a cancel flag. Retrying is the caller's job; this reports what happened.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>

namespace pensieve::hub {

struct HttpSettings {
  std::chrono::milliseconds connect_timeout{10000};
  std::chrono::seconds stall_timeout{30};  // below 1 byte/s for this long: give up
  std::string user_agent = "pensieve/0.1.0";
  const std::atomic<bool>* cancel = nullptr;
};

struct HttpResponse {
  long status = 0;  // of the last response (after redirects)
  std::map<std::string, std::string> headers;  // of the last response, lowercase names
  std::string body;          // when no body sink was given, or an error body (capped)
  std::string effective_url;
  int curl_code = 0;         // CURLcode; 0 = the exchange completed
  std::string curl_error;
  bool cancelled = false;    // the cancel flag stopped it
  bool sink_refused = false; // the body sink returned false

  std::string header(const std::string& lowercase_name) const;
  bool transport_failed() const { return curl_code != 0; }
  // Connection problems worth another try (reset, timeout, short body...).
  bool transient_transport_error() const;
};

// Called with each chunk of a 2xx body; `response` has status and headers.
// Return false to stop the transfer (e.g. a write failed).
using BodySink = std::function<bool(const char* data, size_t n, const HttpResponse& response)>;

struct HttpRequest {
  std::string url;
  bool head = false;              // HEAD instead of GET
  bool follow_redirects = true;
  std::string bearer_token;       // "" = none
  uint64_t range_start = 0;       // > 0: "Range: bytes=N-"
  BodySink sink;                  // empty: collect the body into HttpResponse::body
  size_t max_body_bytes = 64 << 20;
  std::function<void(uint64_t n_bytes_received)> on_progress;
};

class HttpClient {
 public:
  explicit HttpClient(HttpSettings settings);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  HttpResponse perform(const HttpRequest& request);
  const HttpSettings& settings() const { return settings_; }

 private:
  HttpSettings settings_;
  void* curl_ = nullptr;  // CURL*, reused so connections are kept alive
};

// "scheme://host:port" of a URL ("" when it has none).
std::string url_origin(const std::string& url);

}  // namespace pensieve::hub
