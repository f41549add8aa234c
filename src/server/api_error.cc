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
