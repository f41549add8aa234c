#include <algorithm>
#include <cstdio>
#include <iostream>
#include <map>

#include "cli/command.h"
#include "cli/config_file.h"
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

void add_kv_type_option(CLI::App& app, std::string& kv_type) {
  app.add_option("--kv-type", kv_type,
                 "how the KV cache stores keys and values: f16, or q8 (int8 with a scale per 32 "
                 "dimensions: about half the memory, and long contexts decode faster, at a small "
                 "cost in fidelity)")
      ->check(CLI::IsMember({"f16", "q8"}))
      ->envname("PENSIEVE_KV_TYPE")
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

namespace {

constexpr const char* kLogLevels[] = {"trace", "debug", "info", "warn", "error", "off"};

// Levenshtein distance, for "did you mean" on a mistyped command.
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// The first word that is not an option (or the value of --log-level): the
// command, or "" when there is none.
std::string command_word(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--log-level") {
      ++i;
      continue;
    }
    if (!arg.empty() && arg[0] == '-') continue;
    return arg;
  }
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  using namespace pensieve;
  cli::set_command_line(argc, argv);
  CLI::App app{"Pensieve: a local LLM server that speaks the Anthropic Messages API", "pensieve"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "pensieve 0.1.0");
  // Errors are one line, as for every other failure (scripts read the first
  // line of stderr); --help is named in it.
  app.failure_message([](const CLI::App* failed, const CLI::Error& e) {
    std::string msg = e.what();
    std::replace(msg.begin(), msg.end(), '\n', ' ');
    std::string help = "pensieve";
    for (const CLI::App* sub : failed->get_subcommands()) help += " " + sub->get_name();
    return "error: " + msg + " (see " + help + " --help)\n";
  });
  std::string log_level = "info";
  std::string levels;
  for (const char* l : kLogLevels) levels += std::string(levels.empty() ? "" : ", ") + l;
  app.add_option("--log-level", log_level, levels + " (any case)")
      ->envname("PENSIEVE_LOG_LEVEL")
      ->capture_default_str()
      ->transform(CLI::Validator(
          [levels](std::string& v) -> std::string {
            std::string lower = v;
            for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            for (const char* l : kLogLevels) {
              if (lower == l) {
                v = lower;
                return "";
              }
            }
            return "'" + v + "' is not a log level: use one of " + levels;
          },
          "LEVEL"));
  std::map<CLI::App*, std::function<int()>> actions;
  std::vector<std::string> names;
  for (auto& cmd : cli::commands()) {
    CLI::App* sub = app.add_subcommand(cmd.name);
    actions[sub] = cmd.setup(*sub);
    names.push_back(cmd.name);
  }
  std::sort(names.begin(), names.end());
  std::string list;
  for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
  app.footer("Commands: " + list + ". `pensieve help COMMAND` or `pensieve COMMAND --help` shows one.");

  // `pensieve help [COMMAND]` is --help; an unknown command is named with
  // the list (CLI11 alone says only that an argument was not expected).
  const std::string word = command_word(argc, argv);
  if (word == "help") {
    int i = 1;
    while (i < argc && std::string(argv[i]) != "help") ++i;
    if (i + 1 < argc) {
      for (auto& [sub, action] : actions) {
        if (sub->get_name() == argv[i + 1]) {
          std::cout << sub->help();
          return 0;
        }
      }
      std::fprintf(stderr, "error: unknown command '%s': the commands are %s\n", argv[i + 1],
                   list.c_str());
      return 1;
    }
    std::cout << app.help();
    return 0;
  }
  if (!word.empty() && std::find(names.begin(), names.end(), word) == names.end()) {
    std::string hint;
    for (const auto& n : names)
      if (edit_distance(word, n) <= 2 && hint.empty()) hint = " (did you mean '" + n + "'?)";
    std::fprintf(stderr, "error: unknown command '%s'%s: the commands are %s (pensieve --help)\n",
                 word.c_str(), hint.c_str(), list.c_str());
    return 1;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; a bad command line 1, like every other failure.
    return app.exit(e) == 0 ? 0 : 1;
  }
  try {
    cli::check_environment();
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
