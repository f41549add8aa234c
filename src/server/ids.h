// Random identifiers in Anthropic's shapes: msg_..., toolu_..., req_....
#pragma once

#include <string>

namespace pensieve::server {

// prefix + n random characters from [0-9A-Za-z].
std::string random_id(const std::string& prefix, int n = 24);

}  // namespace pensieve::server
