#include <algorithm>
#include <cstdio>
#include <iostream>
#include <map>

#include "cli/command.h"
#include "core/error.h"
#include "core/log.h"

namespace pensieve::cli {

std::vector<Command>& commands() {
  static std::vector<Command> list;
  return list;
}

void add_device_option(CLI::App& app, std::string& device) {
  app.add_option("--device", device,
                 "where the model runs: cuda (an NVIDIA GPU), cpu, or auto (the GPU when one is "
                 "usable, else the CPU)")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}))
      ->envname("PENSIEVE_DEVICE")
      ->capture_default_str();
}

std::vector<int> parse_int_list(const std::string& text, const std::string& option) {
  std::vector<int> out;
  size_t i = 0;
  while (i < text.size()) {
    size_t j = text.find(',', i);
    if (j == std::string::npos) j = text.size();
    const std::string item = text.substr(i, j - i);
    try {
      size_t used = 0;
      const long v = std::stol(item, &used);
      if (used != item.size() || v < 0 || v > INT32_MAX) throw std::invalid_argument(item);
      out.push_back(static_cast<int>(v));
    } catch (const std::exception&) {
      fail("{}: '{}' is not a non-negative integer", option, item);
    }
    i = j + 1;
  }
  return out;
}

}  // namespace pensieve::cli

int main(int argc, char** argv) {
  using namespace pensieve;
  CLI::App app{"Pensieve: a local LLM server that speaks the Anthropic Messages API"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "pensieve 0.1.0");
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, off")
      ->envname("PENSIEVE_LOG_LEVEL");
  std::map<CLI::App*, std::function<int()>> actions;
  for (auto& cmd : cli::commands()) {
    CLI::App* sub = app.add_subcommand(cmd.name);
    actions[sub] = cmd.setup(*sub);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    init_logging(log_level);
    for (auto& [sub, action] : actions) {
      if (sub->parsed()) return action();
    }
  } catch (const std::exception& e) {
    // One line, always: scripts read the first line of stderr.
    std::string msg = e.what();
    std::replace(msg.begin(), msg.end(), '\n', ' ');
    std::fprintf(stderr, "error: %s\n", msg.c_str());
    return 1;
  }
  return 1;
}
