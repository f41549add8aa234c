// check_environment(): the PENSIEVE_* tuning variables are read where they
// act (kernels, thread pool, file loading), each with its own shortcut
// parse; a typo there would silently mean "default". They are checked here,
// once, before any command runs.
#include <cstdlib>
#include <string>

#include "cli/command.h"
#include "core/error.h"
#include "kernels/cpu/cpu_features.h"

namespace pensieve::cli {

void check_environment() {
  auto value = [](const char* name) -> std::string {
    const char* v = std::getenv(name);
    return v == nullptr ? "" : v;  // set but empty counts as unset
  };
  if (const std::string isa = value("PENSIEVE_ISA"); !isa.empty()) {
    bool known = false;
    std::string names;
    for (auto k : {kernels::Isa::scalar, kernels::Isa::avx2, kernels::Isa::avx512}) {
      known = known || isa == kernels::isa_name(k);
      names += std::string(names.empty() ? "" : ", ") + kernels::isa_name(k);
    }
    if (!known) fail("PENSIEVE_ISA='{}' is not a kernel family: use one of {} (lower case)", isa, names);
  }
  for (const char* flag : {"PENSIEVE_PRECISE", "PENSIEVE_AMX", "PENSIEVE_MMAP", "PENSIEVE_PIN"}) {
    const std::string v = value(flag);
    if (!v.empty() && v != "0" && v != "1") fail("{}='{}': use 0 or 1", flag, v);
  }
  if (const std::string v = value("PENSIEVE_INT8_LEVELS"); !v.empty() && v != "1" && v != "2") {
    fail("PENSIEVE_INT8_LEVELS='{}': use 1 (default) or 2", v);
  }
}

CLI::Option* add_threads_option(CLI::App& app, int& threads) {
  return app.add_option("--threads", threads, "compute threads (0: one per core)")
      ->capture_default_str()
      ->check(CLI::Validator(
          [](std::string& v) -> std::string {
            if (v.find_first_not_of("0123456789") == std::string::npos && !v.empty()) return "";
            return "'" + v + "' is not a thread count: give 0 (one per core) or a positive number";
          },
          "NONNEGATIVE"));
}

}  // namespace pensieve::cli
