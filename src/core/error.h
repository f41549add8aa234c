// pensieve::Error: what failed and where (file, tensor, JSON path). Every
// layer throws it; the CLI prints what() on one line and the HTTP layer maps
// it to Anthropic's error envelope.
#pragma once

#include <stdexcept>
#include <string>

#include <fmt/format.h>

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

template <typename... Args>
[[noreturn]] void fail(ErrorKind kind, fmt::format_string<Args...> f, Args&&... args) {
  throw Error(kind, fmt::format(f, std::forward<Args>(args)...));
}

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(ErrorKind::invalid_input, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace pensieve
