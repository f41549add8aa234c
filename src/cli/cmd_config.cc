// pensieve config [SERVE OPTIONS]: what `pensieve serve` with the same
// options would run with, each value with where it came from (command line,
// environment, config file and line, default). The output is TOML: pasted
// into a config file it sets the same values.
#include <algorithm>
#include <cstdio>

#include "cli/command.h"
#include "cli/config_file.h"
#include "core/error.h"

namespace pensieve::cli {
namespace {

RegisterCommand reg("config", [](CLI::App& app) {
  app.description(
      "Print the configuration `pensieve serve` would run with (given the same options): each "
      "value and where it came from: command line, environment, config file, or default");
  app.prefix_command();  // every word after `config` is serve's
  return std::function<int()>([self = &app] {
    const auto serve = parse_serve_options(self->remaining());
    const ConfigFile& config = *serve->config;
    std::printf("# pensieve serve: the effective configuration\n");
    std::printf("# config file: %s\n", config.path().empty() ? "none" : config.path().c_str());
    const std::vector<OptionSource> sources = config.describe(serve->app);
    size_t width = 0;
    for (const auto& s : sources) width = std::max(width, s.key.size() + 3 + s.value.size());
    for (const auto& s : sources) {
      // An unset option with no default is a comment: the server decides.
      const std::string line = s.value.empty() ? "# " + s.key + " =" : s.key + " = " + s.value;
      std::printf("%-*s  # %s\n", static_cast<int>(width + 2), line.c_str(),
                  s.value.empty() ? "not set (decided at start)" : s.source.c_str());
    }
    return 0;
  });
});

}  // namespace
}  // namespace pensieve::cli
