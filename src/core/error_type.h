// pensieve::Error without the fmt helpers, for code that cannot include fmt
// (nvcc's front end rejects its C++20 compile-time format checks).
#pragma once

#include <stdexcept>
#include <string>

namespace pensieve {

enum class ErrorKind {
  invalid_input,   // bad request / bad file contents
  not_found,       // missing file, tensor, model
  unsupported,     // valid but not something we implement
  resource,        // out of memory / KV blocks / disk
  internal,
};

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, std::string message)
      : std::runtime_error(std::move(message)), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

}  // namespace pensieve
