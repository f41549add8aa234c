// API key checks: which key a request presents and whether it is accepted.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace pensieve::server {

// Compares without leaking where the strings differ or how long they are:
// both are hashed (SHA-256) and the digests compared with CRYPTO_memcmp.
bool constant_time_equal(std::string_view a, std::string_view b);

// The key from "x-api-key: K" or "Authorization: Bearer K" (empty if none).
std::string presented_key(const std::string& x_api_key, const std::string& authorization);

// True when key equals one of keys (every key is compared, in constant time).
bool key_accepted(const std::string& key, const std::vector<std::string>& keys);

// 127.0.0.0/8, ::1, ::ffff:127.x.x.x and "localhost".
bool is_loopback_address(const std::string& address);

// The one rule for a list of keys, wherever it comes from (--api-key,
// $PENSIEVE_API_KEY), and of names (--aliases): comma-separated, spaces
// around an entry and empty entries dropped; so a key cannot contain a comma.
std::vector<std::string> split_api_keys(const std::string& text);

// split_api_keys($PENSIEVE_API_KEY).
std::vector<std::string> api_keys_from_env();

}  // namespace pensieve::server
