// Anthropic-style API errors: the HTTP status, the error type string and a
// message, thrown by the request parser and the handlers and turned into
// {"type":"error","error":{"type","message"},"request_id"} by the server.
#pragma once

#include <stdexcept>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace pensieve::server {

class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string type, std::string message)
      : std::runtime_error(std::move(message)), status_(status), type_(std::move(type)) {}
  int status() const { return status_; }
  const std::string& type() const { return type_; }

 private:
  int status_;
  std::string type_;
};

// 400 invalid_request_error "<path>: <message>" (path may be empty).
template <typename... Args>
[[noreturn]] void invalid_request(const std::string& path, fmt::format_string<Args...> f,
                                  Args&&... args) {
  std::string message = fmt::format(f, std::forward<Args>(args)...);
  throw ApiError(400, "invalid_request_error", path.empty() ? message : path + ": " + message);
}

// The error type Anthropic uses for an HTTP status.
std::string error_type_for_status(int status);

// Whether a client may retry an answer with this status. Anthropic's API
// says so in `x-should-retry`, which its SDKs (and so Claude Code) obey
// before their own rule (retry 408, 409, 429 and 5xx): without it a 401
// for a wrong key is retried with backoff for minutes before the user
// sees it. False for the other 4xx; 408, 409, 429, 5xx and 529 may be
// retried.
bool should_retry(int status);

// The reason phrase of a status line ("Overloaded" for 529).
const char* status_reason(int status);

nlohmann::ordered_json error_envelope(const std::string& type, const std::string& message,
                                      const std::string& request_id);

// Maps any exception (ApiError, pensieve::Error, others) to status/type/message.
ApiError to_api_error(const std::exception& e);

// Dumps JSON for the wire; invalid UTF-8 from a model is replaced, never thrown on.
std::string dump_json(const nlohmann::ordered_json& j);

}  // namespace pensieve::server
