// `pensieve serve`'s options from a TOML file.
//
// The file is --config FILE, else $PENSIEVE_CONFIG, else
// $XDG_CONFIG_HOME/pensieve/config.toml (~/.config when XDG_CONFIG_HOME is
// unset) when it exists. Its top-level keys are the long option names
// (`port = 8080`, `ctx-size = 32768`; `_` may stand for `-`). A value fills
// an option only when neither the command line nor the environment set it:
// flags > environment > file > defaults.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <toml++/toml.h>

namespace pensieve::cli {

// The words main() was given (argv[1..]), to tell an option set on the
// command line from one its environment variable set.
void set_command_line(int argc, char** argv);

// The config file to read: `flag` (--config's value) if not empty, else
// $PENSIEVE_CONFIG, else the XDG file if it exists; "" when none. An
// explicit file that does not exist is an error.
std::string config_file_path(const std::string& flag);

// Where each option's value comes from.
struct OptionSource {
  std::string key;     // long name, e.g. "ctx-size"
  std::string value;   // as TOML writes it; "" when unset with no default
  std::string source;  // "command line", "environment PENSIEVE_PORT", "FILE:LINE", "default"
};

// A [models.NAME] table: one more model the server serves by NAME.
struct ModelTable {
  std::string name;                  // NAME, the model's id
  std::string where;                 // "FILE:LINE" of its [models.NAME]
  int line = 0;
  std::string model;                 // a directory or a Hub repo (ORG/NAME[@REV])
  std::vector<std::string> aliases;  // more names for it
  std::string display_name;          // "" = NAME
  int64_t ctx_size = 0;              // 0: the model's
  int64_t sliding_window = -1;       // -1: config.json's
  int64_t max_output_tokens = 0;     // 0: no cap but the context
  std::string kv_memory;             // "" automatic
  std::string kv_type;               // "" = --kv-type
  bool load_at_start = false;
};

// `s` as a TOML basic string, quoted and escaped.
std::string toml_string(const std::string& s);

// The keys a [models.NAME] table takes.
const std::vector<std::string>& model_table_keys();

class ConfigFile {
 public:
  // Reads `path` ("" reads nothing). Throws Error naming the file, line and
  // column for a file that is not TOML.
  explicit ConfigFile(std::string path);
  const std::string& path() const { return path_; }

  // Fills each option of `app` (already parsed) that the command line and
  // the environment left unset from the file, through the option's own
  // checks. Throws Error naming the file, line and key for a key that is no
  // option of `app`, a value of the wrong type (both before anything is
  // filled), or one the option refuses.
  void apply(CLI::App& app);

  // Every option of `app` (hidden ones and --config aside) with its value
  // and source, after apply().
  std::vector<OptionSource> describe(const CLI::App& app) const;

  // " (from FILE:LINE)" when `key` came from the file, else "".
  std::string origin(const std::string& key) const;

  // The [models.NAME] tables in file order. Throws Error naming the file,
  // line and key for an unknown key, a value of the wrong type or an
  // impossible one (apply() checks them too, before anything is filled).
  std::vector<ModelTable> models() const;

 private:
  struct Entry {
    std::string key;
    int line = 0;
  };
  std::string path_;
  toml::table table_;
  std::vector<Entry> entries_;  // in file order
  std::vector<std::string> applied_;
  // The entry that set option `key`, or null when the file did not.
  const Entry* applied_entry(const std::string& key) const;
};

// serve's options as `pensieve serve WORDS...` would take them (command line,
// environment, config file, defaults), without running serve. The App holds
// pointers into the variables serve's action owns, so both live here.
struct ServeOptions {
  CLI::App app{"", "serve"};
  std::function<int()> action;  // not run: it owns the variables
  std::unique_ptr<ConfigFile> config;
  std::string text(const std::string& name) const;  // the value of --name
};
std::unique_ptr<ServeOptions> parse_serve_options(std::vector<std::string> words);

// The URL a client on this machine reaches a server bound to host:port at
// (0.0.0.0 and :: are reached over loopback).
std::string client_url(const std::string& host, int port);

// The options a config file may set: the long names of `app`'s visible
// options less --config and --help.
bool configurable(const CLI::Option& opt);

}  // namespace pensieve::cli
