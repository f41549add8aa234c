#include "cli/config_file.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>

#include <toml++/toml.h>

#include "cli/command.h"
#include "core/error.h"
#include "engine/engine.h"

namespace pensieve::cli {
namespace {

namespace fs = std::filesystem;

std::vector<std::string>& command_line() {
  static std::vector<std::string> words;
  return words;
}

bool on_command_line(const CLI::Option& opt) {
  for (const std::string& name : opt.get_lnames()) {
    const std::string flag = "--" + name;
    for (const std::string& w : command_line())
      if (w == flag || w.rfind(flag + "=", 0) == 0) return true;
  }
  return false;
}

bool is_flag(const CLI::Option& opt) { return opt.get_expected_max() == 0; }

// The option's value kind from CLI11's type name ("INT", "UINT:..." etc).
enum class Kind { flag, integer, number, text };
Kind kind_of(const CLI::Option& opt) {
  if (is_flag(opt)) return Kind::flag;
  const std::string t = opt.get_type_name();
  if (t.rfind("INT", 0) == 0 || t.rfind("UINT", 0) == 0) return Kind::integer;
  if (t.rfind("FLOAT", 0) == 0) return Kind::number;
  return Kind::text;
}

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::flag: return "true or false";
    case Kind::integer: return "an integer";
    case Kind::number: return "a number";
    default: return "a string";
  }
}

const char* toml_type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a float";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::array: return "an array";
    case toml::node_type::table: return "a table";
    default: return "a date or time";
  }
}

std::string number_text(double v) { return fmt::format("{}", v); }

// The node as the option's command-line text, or nullopt when its type
// does not fit the option.
std::optional<std::string> option_text(const toml::node& n, Kind kind) {
  switch (kind) {
    case Kind::flag:
      if (auto b = n.value_exact<bool>()) return *b ? "true" : "false";
      return std::nullopt;
    case Kind::integer:
      if (auto i = n.value_exact<int64_t>()) return std::to_string(*i);
      return std::nullopt;
    case Kind::number:
      if (auto i = n.value_exact<int64_t>()) return std::to_string(*i);
      if (auto d = n.value_exact<double>()) return number_text(*d);
      return std::nullopt;
    case Kind::text:
      if (auto s = n.value_exact<std::string>()) return *s;
      if (auto i = n.value_exact<int64_t>()) return std::to_string(*i);
      if (auto d = n.value_exact<double>()) return number_text(*d);
      if (const toml::array* a = n.as_array()) {  // a list: the comma-separated form
        std::string joined;
        for (const toml::node& item : *a) {
          auto s = item.value_exact<std::string>();
          if (!s) return std::nullopt;
          joined += (joined.empty() ? "" : ",") + *s;
        }
        return joined;
      }
      return std::nullopt;
  }
  return std::nullopt;
}

// An option's text as a TOML value of its kind.
std::string toml_value(const std::string& text, Kind kind) {
  if (kind == Kind::flag) {
    // A flag's result is "true", a count, or a word CLI11 takes for a boolean.
    const bool on = !(text.empty() || text == "0" || text == "false" || text == "off" || text == "no");
    return on ? "true" : "false";
  }
  if (kind == Kind::integer || kind == Kind::number) return text;
  return toml_string(text);
}

std::string normalized_key(std::string key) {
  std::replace(key.begin(), key.end(), '_', '-');
  return key;
}

}  // namespace

std::string toml_string(const std::string& s) {
  std::string out = "\"";
  for (const char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) out += fmt::format("\\u{:04x}", static_cast<int>(c));
        else out += c;
    }
  }
  return out + "\"";
}

void set_command_line(int argc, char** argv) {
  command_line().assign(argv + (argc > 0 ? 1 : 0), argv + argc);
}

bool configurable(const CLI::Option& opt) {
  if (opt.get_group().empty() || opt.get_lnames().empty()) return false;  // hidden
  const std::string& name = opt.get_lnames().front();
  return name != "config" && name != "help";
}

std::string config_file_path(const std::string& flag) {
  if (!flag.empty()) {
    if (!fs::exists(flag)) fail(ErrorKind::not_found, "--config {}: no such file", flag);
    return flag;
  }
  if (const char* env = std::getenv("PENSIEVE_CONFIG"); env != nullptr && env[0] != '\0') {
    if (!fs::exists(env)) fail(ErrorKind::not_found, "PENSIEVE_CONFIG={}: no such file", env);
    return env;
  }
  fs::path dir;
  if (const char* xdg = std::getenv("XDG_CONFIG_HOME"); xdg != nullptr && xdg[0] == '/') dir = xdg;
  else if (const char* home = std::getenv("HOME"); home != nullptr && home[0] != '\0') dir = fs::path(home) / ".config";
  else return "";
  const fs::path file = dir / "pensieve" / "config.toml";
  return fs::exists(file) ? file.string() : "";
}

ConfigFile::ConfigFile(std::string path) : path_(std::move(path)) {
  if (path_.empty()) return;
  try {
    table_ = toml::parse_file(path_);
  } catch (const toml::parse_error& e) {
    fail("{}:{}:{}: {}", path_, e.source().begin.line, e.source().begin.column, e.description());
  }
  for (const auto& [key, node] : table_) {
    if (key.str() == "models") continue;  // the model tables: models()
    entries_.push_back({std::string(key.str()), static_cast<int>(key.source().begin.line)});
  }
  std::sort(entries_.begin(), entries_.end(), [](const Entry& a, const Entry& b) { return a.line < b.line; });
}

const std::vector<std::string>& model_table_keys() {
  static const std::vector<std::string> keys = {
      "model", "aliases", "display-name", "ctx-size", "sliding-window", "max-output-tokens",
      "kv-memory", "kv-type", "load-at-start"};
  return keys;
}

std::vector<ModelTable> ConfigFile::models() const {
  std::vector<ModelTable> out;
  const toml::node* all = table_.get("models");
  if (all == nullptr) return out;
  const auto line_of = [](const toml::node& n) { return static_cast<int>(n.source().begin.line); };
  const toml::table* tables = all->as_table();
  if (tables == nullptr)
    fail("{}:{}: models must be tables ([models.NAME] with model = \"DIR or ORG/NAME\"), not {}", path_,
         line_of(*all), toml_type_name(*all));
  for (const auto& [name_key, node] : *tables) {
    const std::string name(name_key.str());
    const int line = static_cast<int>(name_key.source().begin.line);
    const toml::table* t = node.as_table();
    if (t == nullptr)
      fail("{}:{}: models.{} must be a table ([models.{}] with model = ...), not {}", path_, line, name, name,
           toml_type_name(node));
    ModelTable m;
    m.name = name;
    m.where = fmt::format("{}:{}", path_, line);
    m.line = line;
    if (name.empty() || name.find_first_of(" \t\r\n/") != std::string::npos)
      fail("{}:{}: models.\"{}\": a model's name must be a word without spaces or slashes", path_, line, name);
    for (const auto& [k, v] : *t) {
      const std::string key = normalized_key(std::string(k.str()));
      const int at = static_cast<int>(k.source().begin.line);
      const auto bad = [&](const char* what) {
        fail("{}:{}: models.{}.{} must be {}, not {}", path_, at, name, k.str(), what, toml_type_name(v));
      };
      const auto integer = [&](int64_t min) {
        auto i = v.value_exact<int64_t>();
        if (!i) bad("an integer");
        if (*i < min) fail("{}:{}: models.{}.{} must be at least {}, not {}", path_, at, name, k.str(), min, *i);
        return *i;
      };
      const auto text = [&] {
        auto x = v.value_exact<std::string>();
        if (!x) bad("a string");
        return *x;
      };
      if (key == "model") {
        m.model = text();
        if (m.model.empty()) fail("{}:{}: models.{}.model is empty", path_, at, name);
      } else if (key == "aliases") {
        const toml::array* a = v.as_array();
        if (a == nullptr) bad("an array of strings");
        for (const toml::node& item : *a) {
          auto x = item.value_exact<std::string>();
          if (!x || x->empty()) bad("an array of names (non-empty strings)");
          m.aliases.push_back(*x);
        }
      } else if (key == "display-name") {
        m.display_name = text();
      } else if (key == "ctx-size") {
        m.ctx_size = integer(1);
      } else if (key == "sliding-window") {
        m.sliding_window = integer(0);
      } else if (key == "max-output-tokens") {
        m.max_output_tokens = integer(0);
      } else if (key == "kv-memory") {
        m.kv_memory = text();
        try {
          parse_memory_size(m.kv_memory);
        } catch (const Error& e) {
          fail("{}:{}: models.{}.kv-memory: {}", path_, at, name, e.what());
        }
      } else if (key == "kv-type") {
        m.kv_type = text();
        if (!parse_kv_type(m.kv_type))
          fail("{}:{}: models.{}.kv-type must be \"f16\" or \"q8\", not \"{}\"", path_, at, name, m.kv_type);
      } else if (key == "load-at-start") {
        auto b = v.value_exact<bool>();
        if (!b) bad("true or false");
        m.load_at_start = *b;
      } else {
        std::string list;
        for (const auto& n : model_table_keys()) list += (list.empty() ? "" : ", ") + n;
        fail("{}:{}: unknown key '{}' in [models.{}] (the keys are: {})", path_, at, k.str(), name, list);
      }
    }
    if (m.model.empty())
      fail("{}:{}: [models.{}] has no model = \"DIR or ORG/NAME\" (the folder or Hugging Face repo to serve)",
           path_, line, name);
    out.push_back(std::move(m));
  }
  std::sort(out.begin(), out.end(), [](const ModelTable& a, const ModelTable& b) { return a.line < b.line; });
  return out;
}

void ConfigFile::apply(CLI::App& app) {
  if (path_.empty()) return;
  (void)models();  // every model table checked before anything is applied
  struct Planned {
    CLI::Option* opt;
    std::string text;
    const Entry* entry;
  };
  std::vector<Planned> plan;
  std::vector<std::string> names;
  for (const CLI::Option* o : app.get_options())
    if (configurable(*o)) names.push_back(o->get_lnames().front());
  std::sort(names.begin(), names.end());
  for (const Entry& e : entries_) {
    const std::string name = normalized_key(e.key);
    CLI::Option* opt = app.get_option_no_throw("--" + name);
    if (opt == nullptr || !configurable(*opt)) {
      std::string list;
      for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
      fail("{}:{}: unknown key '{}' (the keys are the long options of pensieve {}: {})", path_, e.line, e.key,
           app.get_name(), list);
    }
    const toml::node& node = *table_.get(e.key);
    const Kind kind = kind_of(*opt);
    const std::optional<std::string> text = option_text(node, kind);
    if (!text) fail("{}:{}: {} must be {}, not {}", path_, e.line, e.key, kind_name(kind), toml_type_name(node));
    plan.push_back({opt, *text, &e});
  }
  // Every key is known and typed right before any value is applied.
  for (const Planned& p : plan) {
    if (p.opt->count() > 0) continue;  // the command line or the environment set it
    try {
      p.opt->clear();
      p.opt->add_result(p.text);
      p.opt->run_callback();
    } catch (const CLI::Error& err) {
      fail("{}:{}: {}: {}", path_, p.entry->line, p.entry->key, err.what());
    }
    applied_.push_back(p.opt->get_lnames().front());
  }
}

const ConfigFile::Entry* ConfigFile::applied_entry(const std::string& key) const {
  if (std::find(applied_.begin(), applied_.end(), key) == applied_.end()) return nullptr;
  for (const Entry& e : entries_)
    if (normalized_key(e.key) == key) return &e;
  return nullptr;
}

std::string ConfigFile::origin(const std::string& key) const {
  const Entry* e = applied_entry(key);
  return e == nullptr ? "" : fmt::format(" (from {}:{})", path_, e->line);
}

std::vector<OptionSource> ConfigFile::describe(const CLI::App& app) const {
  std::vector<OptionSource> out;
  for (const CLI::Option* o : app.get_options()) {
    if (!configurable(*o)) continue;
    OptionSource s;
    s.key = o->get_lnames().front();
    const Kind kind = kind_of(*o);
    if (o->count() > 0) {
      std::string text;
      for (const std::string& r : o->results()) text += (text.empty() ? "" : ",") + r;
      s.value = toml_value(text, kind);
      if (const Entry* e = applied_entry(s.key)) s.source = fmt::format("{}:{}", path_, e->line);
      else if (on_command_line(*o)) s.source = "command line";
      else if (!o->get_envname().empty()) s.source = "environment " + o->get_envname();
      else s.source = "command line";
    } else {
      s.value = o->get_default_str().empty() ? std::string() : toml_value(o->get_default_str(), kind);
      if (is_flag(*o) && s.value.empty()) s.value = "false";
      s.source = "default";
    }
    out.push_back(std::move(s));
  }
  return out;
}

std::unique_ptr<ServeOptions> parse_serve_options(std::vector<std::string> words) {
  const auto it = std::find_if(commands().begin(), commands().end(),
                               [](const Command& c) { return c.name == "serve"; });
  if (it == commands().end()) fail(ErrorKind::internal, "no serve command");
  auto out = std::make_unique<ServeOptions>();
  out->action = it->setup(out->app);
  std::reverse(words.begin(), words.end());  // CLI11 parses a vector from its back
  try {
    out->app.parse(words);
  } catch (const CLI::ParseError& e) {
    fail("{}", e.what());
  }
  out->config = std::make_unique<ConfigFile>(config_file_path(out->text("config")));
  out->config->apply(out->app);
  return out;
}

std::string ServeOptions::text(const std::string& name) const {
  const CLI::Option* o = app.get_option_no_throw("--" + name);
  if (o == nullptr) return "";
  if (o->count() == 0) return o->get_default_str();
  std::string joined;
  for (const std::string& r : o->results()) joined += (joined.empty() ? "" : ",") + r;
  return joined;
}

std::string client_url(const std::string& host, int port) {
  std::string h = host;
  if (h == "0.0.0.0" || h.empty()) h = "127.0.0.1";
  if (h == "::") h = "::1";
  if (h.find(':') != std::string::npos) h = "[" + h + "]";
  return fmt::format("http://{}:{}", h, port);
}

}  // namespace pensieve::cli
