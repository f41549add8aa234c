// Subcommands register themselves here; main() builds the CLI11 app from the
// list. Each command lives in its own cmd_*.cc file.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace pensieve::cli {

struct Command {
  std::string name;
  // Adds the subcommand and its options to `app`; returns the action to run.
  std::function<std::function<int()>(CLI::App& app)> setup;
};

std::vector<Command>& commands();

struct RegisterCommand {
  RegisterCommand(std::string name, std::function<std::function<int()>(CLI::App&)> setup) {
    commands().push_back({std::move(name), std::move(setup)});
  }
};

// --device auto|cpu|cuda, for every command that runs a model.
void add_device_option(CLI::App& app, std::string& device);

// --kv-type f16|q8 (LoadOptions::kv_type), for every command that runs a model.
void add_kv_type_option(CLI::App& app, std::string& kv_type);

// Parses "5,17,42" into ids; throws Error naming the option on bad input.
std::vector<int> parse_int_list(const std::string& text, const std::string& option);

// --threads as every command that runs a model takes it: 0 (the default)
// is one per core; a negative count is refused.
CLI::Option* add_threads_option(CLI::App& app, int& threads);

// The PENSIEVE_* variables that tune the kernels and threads (PENSIEVE_ISA,
// PENSIEVE_PRECISE, ...) are read deep inside the libraries, where a value
// they do not know is silently ignored; main() checks them first and throws
// an Error naming the variable, its value and what is allowed.
void check_environment();

}  // namespace pensieve::cli
