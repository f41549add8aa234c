#include "core/memory_info.h"

#include <sys/sysinfo.h>

#include <charconv>
#include <fstream>
#include <sstream>

namespace pensieve {

MemoryInfo parse_meminfo(std::string_view text) {
  MemoryInfo m;
  auto field = [&](std::string_view name) -> int64_t {
    for (size_t at = text.find(name); at != std::string_view::npos; at = text.find(name, at + 1)) {
      if (at != 0 && text[at - 1] != '\n') continue;
      std::string_view rest = text.substr(at + name.size());
      if (rest.empty() || rest[0] != ':') continue;
      rest.remove_prefix(1);
      while (!rest.empty() && rest[0] == ' ') rest.remove_prefix(1);
      int64_t kib = 0;
      const auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), kib);
      if (ec != std::errc() || kib < 0) return 0;
      return kib * 1024;  // the kernel writes "kB" and means KiB
    }
    return 0;
  };
  m.total = field("MemTotal");
  m.available = field("MemAvailable");
  return m;
}

MemoryInfo read_memory_info() {
  std::ifstream in("/proc/meminfo");
  std::stringstream text;
  text << in.rdbuf();
  MemoryInfo m = parse_meminfo(text.str());
  if (m.total == 0 || m.available == 0) {
    // No /proc (or a kernel before MemAvailable): free RAM as sysinfo reports it.
    struct sysinfo si {};
    if (sysinfo(&si) == 0) {
      if (m.total == 0) m.total = static_cast<int64_t>(si.totalram) * si.mem_unit;
      if (m.available == 0)
        m.available = static_cast<int64_t>(si.freeram + si.bufferram) * si.mem_unit;
    }
  }
  return m;
}

}  // namespace pensieve
