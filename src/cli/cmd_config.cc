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
    // The model tables, as the file gives them (keys left out take the
    // model's own values at load).
    for (const ModelTable& t : config.models()) {
      std::printf("\n[models.%s]  # %s\n", t.name.c_str(), t.where.c_str());
      std::printf("model = %s\n", toml_string(t.model).c_str());
      if (!t.aliases.empty()) {
        std::string list;
        for (const auto& a : t.aliases) list += (list.empty() ? "" : ", ") + toml_string(a);
        std::printf("aliases = [%s]\n", list.c_str());
      }
      if (!t.display_name.empty()) std::printf("display-name = %s\n", toml_string(t.display_name).c_str());
      if (t.ctx_size > 0) std::printf("ctx-size = %lld\n", static_cast<long long>(t.ctx_size));
      if (t.sliding_window >= 0) std::printf("sliding-window = %lld\n", static_cast<long long>(t.sliding_window));
      if (t.max_output_tokens > 0) std::printf("max-output-tokens = %lld\n", static_cast<long long>(t.max_output_tokens));
      if (!t.kv_memory.empty()) std::printf("kv-memory = %s\n", toml_string(t.kv_memory).c_str());
      if (!t.kv_type.empty()) std::printf("kv-type = %s\n", toml_string(t.kv_type).c_str());
      std::printf("load-at-start = %s\n", t.load_at_start ? "true" : "false");
    }
    return 0;
  });
});

}  // namespace
}  // namespace pensieve::cli
