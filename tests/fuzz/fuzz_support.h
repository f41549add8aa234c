// Shared by the libFuzzer targets (tests/fuzz/fuzz_*.cc) and their corpus
// replay driver (replay_main.cc).
//
// Several targets take more than one input (a schema and a byte stream; a
// template and its conversation; two config files): their input is the
// parts joined by kSeparator, a line "####" of its own. Seeds in
// tests/fuzz/corpus/<target>/ are written that way, so they stay readable.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

namespace pensieve::fuzz {

inline constexpr std::string_view kSeparator = "\n####\n";

// The parts of `data` split at kSeparator; always at least `n` (missing ones empty).
inline std::vector<std::string> split_parts(const uint8_t* data, size_t size, size_t n) {
  std::string_view all(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> parts;
  while (parts.size() + 1 < n) {
    size_t at = all.find(kSeparator);
    if (at == std::string_view::npos) break;
    parts.emplace_back(all.substr(0, at));
    all.remove_prefix(at + kSeparator.size());
  }
  parts.emplace_back(all);
  while (parts.size() < n) parts.emplace_back();
  return parts;
}

inline std::string base_dir() {
  std::string base = std::filesystem::exists("/dev/shm") ? "/dev/shm" : "/tmp";
  return base + "/pensieve-fuzz-" + std::to_string(getpid());
}

// A fresh, empty directory of this process (in /dev/shm when it exists, so
// writing files costs no disk); the same path on every call, emptied.
inline const std::string& scratch_dir() {
  static const std::string dir = [] {
    std::string d = base_dir();
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(base_dir(), ec);
    });
    return d;
  }();
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  std::filesystem::create_directories(dir);
  return dir;
}

inline void write_file(const std::string& path, std::string_view bytes) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A finding that is not a crash: the code under test broke its contract.
[[noreturn]] inline void contract_broken(const char* what, const std::string& detail) {
  std::fprintf(stderr, "FUZZ CONTRACT BROKEN: %s: %s\n", what, detail.c_str());
  std::abort();
}

// The fixtures folder (tests/data), for targets that need a real model's files.
inline std::string test_data_dir() {
  if (const char* env = std::getenv("PENSIEVE_TEST_DATA")) return env;
  return PENSIEVE_TEST_DATA;
}

}  // namespace pensieve::fuzz
