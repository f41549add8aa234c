#include "server/auth.h"

#include <arpa/inet.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <cstdlib>
#include <cstring>

namespace pensieve::server {

bool constant_time_equal(std::string_view a, std::string_view b) {
  unsigned char da[SHA256_DIGEST_LENGTH], db[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(a.data()), a.size(), da);
  SHA256(reinterpret_cast<const unsigned char*>(b.data()), b.size(), db);
  return CRYPTO_memcmp(da, db, SHA256_DIGEST_LENGTH) == 0;
}

std::string presented_key(const std::string& x_api_key, const std::string& authorization) {
  if (!x_api_key.empty()) return x_api_key;
  constexpr std::string_view kBearer = "Bearer ";
  if (authorization.size() > kBearer.size() &&
      strncasecmp(authorization.c_str(), kBearer.data(), kBearer.size()) == 0) {
    std::string key = authorization.substr(kBearer.size());
    size_t start = key.find_first_not_of(' ');
    return start == std::string::npos ? "" : key.substr(start);
  }
  return "";
}

bool key_accepted(const std::string& key, const std::vector<std::string>& keys) {
  if (key.empty()) return false;
  bool accepted = false;
  for (const std::string& k : keys) accepted |= constant_time_equal(key, k);
  return accepted;
}

bool is_loopback_address(const std::string& address) {
  if (address == "localhost") return true;
  in_addr v4{};
  if (inet_pton(AF_INET, address.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (inet_pton(AF_INET6, address.c_str(), &v6) == 1) {
    if (IN6_IS_ADDR_LOOPBACK(&v6)) return true;
    if (IN6_IS_ADDR_V4MAPPED(&v6)) return v6.s6_addr[12] == 127;
  }
  return false;
}

std::vector<std::string> split_api_keys(const std::string& all) {
  std::vector<std::string> keys;
  size_t pos = 0;
  while (pos <= all.size()) {
    size_t comma = all.find(',', pos);
    if (comma == std::string::npos) comma = all.size();
    std::string key = all.substr(pos, comma - pos);
    const size_t first = key.find_first_not_of(" \t");
    if (first != std::string::npos) keys.push_back(key.substr(first, key.find_last_not_of(" \t") - first + 1));
    pos = comma + 1;
  }
  return keys;
}

std::vector<std::string> api_keys_from_env() {
  const char* env = std::getenv("PENSIEVE_API_KEY");
  return env == nullptr ? std::vector<std::string>{} : split_api_keys(env);
}

}  // namespace pensieve::server
