// Logging goes through spdlog to stderr; stdout is reserved for command output.
#pragma once

#include <spdlog/spdlog.h>

namespace pensieve {
void init_logging(const std::string& level);  // "trace".."off"
}  // namespace pensieve
