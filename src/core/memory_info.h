// The machine's memory as the kernel reports it, for sizing the KV pool.
#pragma once

#include <cstdint>
#include <string_view>

namespace pensieve {

// Memory in bytes, 0 where unknown.
struct MemoryInfo {
  int64_t total = 0;
  int64_t available = 0;  // what can be allocated now without swapping (MemAvailable)
};

// MemTotal and MemAvailable from the text of /proc/meminfo.
MemoryInfo parse_meminfo(std::string_view text);
// This machine's, from /proc/meminfo (sysinfo where that has no MemAvailable).
MemoryInfo read_memory_info();

}  // namespace pensieve
