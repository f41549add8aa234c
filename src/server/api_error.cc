#include "server/api_error.h"

#include "core/error.h"

namespace pensieve::server {

std::string error_type_for_status(int status) {
  switch (status) {
    case 400: return "invalid_request_error";
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 529: return "overloaded_error";
    default: return status >= 500 ? "api_error" : "invalid_request_error";
  }
}

bool should_retry(int status) {
  if (status >= 400 && status < 500) return status == 408 || status == 409 || status == 429;
  return true;
}

const char* status_reason(int status) {
  switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 499: return "Client Closed Request";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 529: return "Overloaded";
    default: return status < 400 ? "OK" : status < 500 ? "Bad Request" : "Internal Server Error";
  }
}

nlohmann::ordered_json error_envelope(const std::string& type, const std::string& message,
                                      const std::string& request_id) {
  nlohmann::ordered_json j;
  j["type"] = "error";
  j["error"] = {{"type", type}, {"message", message}};
  j["request_id"] = request_id;
  return j;
}

ApiError to_api_error(const std::exception& e) {
  if (auto* api = dynamic_cast<const ApiError*>(&e)) return *api;
  if (auto* err = dynamic_cast<const Error*>(&e)) {
    switch (err->kind()) {
      case ErrorKind::invalid_input:
      case ErrorKind::unsupported:
        return ApiError(400, "invalid_request_error", err->what());
      case ErrorKind::not_found: return ApiError(404, "not_found_error", err->what());
      case ErrorKind::resource: return ApiError(529, "overloaded_error", err->what());
      case ErrorKind::internal: break;
    }
    return ApiError(500, "api_error", err->what());
  }
  return ApiError(500, "api_error", std::string("internal error: ") + e.what());
}

std::string dump_json(const nlohmann::ordered_json& j) {
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

}  // namespace pensieve::server

// cpp-httplib 0.11 (Debian's libcpp-httplib) takes a status line's reason
// phrase from httplib::detail::status_message(), which knows no 529 and
// writes "529 Internal Server Error". The library calls it through its PLT,
// so this definition, exported by the executable that links this file,
// takes its place in every status line the servers write. It lives here,
// in a file every server links anyway: alone in an archive member, nothing
// would pull it in. (tests/server/server_api_test.cc reads the raw lines.)
namespace httplib::detail {
const char* status_message(int status) { return pensieve::server::status_reason(status); }
}  // namespace httplib::detail
