#include "server/ids.h"

#include <random>

namespace pensieve::server {

std::string random_id(const std::string& prefix, int n) {
  static constexpr char kAlphabet[] =
      "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uniform_int_distribution<int> pick(0, 61);
  std::string id = prefix;
  for (int i = 0; i < n; ++i) id += kAlphabet[pick(rng)];
  return id;
}

}  // namespace pensieve::server
