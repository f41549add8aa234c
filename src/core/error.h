// pensieve::Error: what failed and where (file, tensor, JSON path). Every
// layer throws it; the CLI prints what() on one line and the HTTP layer maps
// it to Anthropic's error envelope.
#pragma once

#include <string>

#include <fmt/format.h>

#include "core/error_type.h"

namespace pensieve {

template <typename... Args>
[[noreturn]] void fail(ErrorKind kind, fmt::format_string<Args...> f, Args&&... args) {
  throw Error(kind, fmt::format(f, std::forward<Args>(args)...));
}

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(ErrorKind::invalid_input, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace pensieve
