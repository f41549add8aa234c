// pensieve claude [ARGS...]: Claude Code on the local model in one command.
//
// It uses the server the configuration describes (serve's options from the
// config file and the PENSIEVE_* variables) when one answers there, else
// starts `pensieve serve` in the background on a free loopback port with a
// random key and waits until it is ready (showing download and load
// progress). Then it runs `claude ARGS...` with the variables that point it
// at the server: base URL, key, the served model under every model name
// Claude Code asks for, the context to compact before, and optional traffic
// off. When Claude Code exits, a server it started is stopped; the exit
// code is Claude Code's.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>

#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "cli/config_file.h"
#include "core/error.h"
#include "core/log.h"
#include "hub/http.h"

namespace pensieve::cli {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// What Claude Code is pointed at.
struct Target {
  std::string url, key, model;
  int64_t context = 0;
  // The models the server answers Claude's families with (--haiku-model ...;
  // the served model when it names none).
  std::string haiku, sonnet, opus;
};

// `claude` on PATH, or "".
std::string find_on_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return "";
  const std::string all = path;
  size_t i = 0;
  while (i <= all.size()) {
    size_t j = all.find(':', i);
    if (j == std::string::npos) j = all.size();
    const std::string dir = j > i ? all.substr(i, j - i) : ".";
    const std::string candidate = dir + "/" + name;
    if (access(candidate.c_str(), X_OK) == 0 && fs::is_regular_file(candidate)) return candidate;
    i = j + 1;
  }
  return "";
}

std::string random_key() {
  std::ifstream in("/dev/urandom", std::ios::binary);
  unsigned char bytes[16] = {};
  in.read(reinterpret_cast<char*>(bytes), sizeof(bytes));
  if (!in) fail(ErrorKind::internal, "cannot read /dev/urandom for an API key");
  std::string key = "pensieve-";
  for (unsigned char b : bytes) key += fmt::format("{:02x}", b);
  return key;
}

// A loopback port nothing listens on now.
int free_loopback_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) fail(ErrorKind::resource, "socket: {}", std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    close(fd);
    fail(ErrorKind::resource, "no free loopback port: {}", std::strerror(errno));
  }
  close(fd);
  return ntohs(addr.sin_port);
}

hub::HttpResponse get(hub::HttpClient& http, const std::string& url, const std::string& key) {
  hub::HttpRequest req;
  req.url = url;
  req.follow_redirects = false;
  req.bearer_token = key;
  req.max_body_bytes = 1 << 20;
  return http.perform(req);
}

hub::HttpSettings quick_settings() {
  hub::HttpSettings s;
  s.connect_timeout = std::chrono::milliseconds(1000);
  s.stall_timeout = std::chrono::seconds(5);
  return s;
}

std::optional<json> parse(const std::string& body) {
  try {
    return json::parse(body);
  } catch (const json::exception&) {
    return std::nullopt;
  }
}

// Shows /health's progress while a server loads (one line per change; on a
// terminal, one line rewritten in place).
class Progress {
 public:
  void show(const json& health) {
    std::string line = "pensieve: loading";
    const std::string stage = health.value("stage", "");
    if (stage == "download" && health.contains("download")) {
      const json& d = health["download"];
      line = fmt::format("pensieve: downloading {} ({} of {}): {:.0f}%", d.value("file", std::string()),
                         d.value("file_index", 0) + 1, d.value("n_files", 0), d.value("percent", 0.0));
    } else if (stage == "load") {
      line = "pensieve: loading " + health.value("model", std::string("the model"));
    }
    if (line == last_) return;
    if (tty_) std::fprintf(stderr, "\r\033[K%s", line.c_str());
    else std::fprintf(stderr, "%s\n", line.c_str());
    std::fflush(stderr);
    last_ = line;
  }
  void done() {
    if (tty_ && !last_.empty()) std::fprintf(stderr, "\r\033[K");
    last_.clear();
  }

 private:
  bool tty_ = isatty(STDERR_FILENO) == 1;
  std::string last_;
};

// The server at `url` when it answers and takes `key`: its model and context.
// Waits while it loads. nullopt when nothing (usable) answers.
std::optional<Target> probe(const std::string& url, const std::string& key, Progress& progress) {
  hub::HttpClient http(quick_settings());
  for (;;) {
    const hub::HttpResponse h = get(http, url + "/health", key);
    if (h.transport_failed()) return std::nullopt;
    const auto body = parse(h.body);
    if (!body || !body->is_object()) return std::nullopt;
    if (h.status == 503 && body->value("status", "") == "loading") {
      progress.show(*body);
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
      continue;
    }
    progress.done();
    if (h.status != 200 || body->value("status", "") != "ok") return std::nullopt;
    // The key must be one it takes (a server without keys takes any word).
    const hub::HttpResponse m = get(http, url + "/v1/models", key);
    if (m.status != 200) {
      spdlog::info("the server at {} does not take this configuration's key (HTTP {})", url, m.status);
      return std::nullopt;
    }
    Target t{url, key, body->value("model", std::string()), body->value("context_size", int64_t{0})};
    const auto families = body->find("claude_families");
    const bool known = families != body->end() && families->is_object();
    for (auto [name, out] : {std::pair{"haiku", &t.haiku}, std::pair{"sonnet", &t.sonnet}, std::pair{"opus", &t.opus}})
      *out = known ? families->value(name, t.model) : t.model;
    return t;
  }
}

// The log of a server `pensieve claude` starts: under the cache folder, the
// last run's kept to read when something went wrong.
std::string server_log_path() {
  fs::path dir;
  if (const char* c = std::getenv("XDG_CACHE_HOME"); c != nullptr && c[0] == '/') dir = c;
  else if (const char* home = std::getenv("HOME"); home != nullptr && home[0] != '\0') dir = fs::path(home) / ".cache";
  else dir = fs::temp_directory_path();
  dir /= "pensieve";
  std::error_code ec;
  fs::create_directories(dir, ec);
  return (dir / "claude-serve.log").string();
}

std::string tail_of(const std::string& path, size_t n_lines) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  std::string out;
  for (size_t i = lines.size() > n_lines ? lines.size() - n_lines : 0; i < lines.size(); ++i) out += "  " + lines[i] + "\n";
  return out;
}

// `pensieve serve` in its own session (a Ctrl-C for Claude Code does not
// reach it), killed with this process if this one dies first.
pid_t start_server(const std::vector<std::string>& args, const std::string& log) {
  char exe[PATH_MAX] = {};
  const ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n <= 0) fail(ErrorKind::internal, "cannot find the pensieve binary (/proc/self/exe)");
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) fail(ErrorKind::resource, "fork: {}", std::strerror(errno));
  if (pid == 0) {
    setsid();
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(1);  // the parent died before prctl
    FILE* f = std::fopen(log.c_str(), "w");
    if (f != nullptr) {
      dup2(fileno(f), STDOUT_FILENO);
      dup2(fileno(f), STDERR_FILENO);
    }
    const int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, STDIN_FILENO);
    std::vector<char*> argv{exe};
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(exe, argv.data());
    _exit(127);
  }
  return pid;
}

void stop_server(pid_t pid) {
  kill(pid, SIGTERM);
  for (int i = 0; i < 150; ++i) {  // 15 s to finish its requests and exit
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
}

volatile sig_atomic_t g_claude_pid = 0;

void forward_signal(int sig) {
  if (g_claude_pid > 0) kill(g_claude_pid, sig);
}

// Claude Code's variables for `t`: the model names it asks for are the
// served models (the default one, and the server's choice for each family),
// the context it compacts before is the server's, and its optional traffic
// (telemetry, error reports, updates) is off.
std::vector<std::pair<std::string, std::string>> claude_environment(const Target& t) {
  const std::string ctx = std::to_string(t.context);
  return {
      {"ANTHROPIC_BASE_URL", t.url},
      {"ANTHROPIC_AUTH_TOKEN", t.key},
      {"ANTHROPIC_MODEL", t.model},
      {"ANTHROPIC_DEFAULT_HAIKU_MODEL", t.haiku},
      {"ANTHROPIC_DEFAULT_SONNET_MODEL", t.sonnet},
      {"ANTHROPIC_DEFAULT_OPUS_MODEL", t.opus},
      {"ANTHROPIC_SMALL_FAST_MODEL", t.haiku},
      {"CLAUDE_CODE_SUBAGENT_MODEL", t.model},
      {"CLAUDE_CODE_MAX_CONTEXT_TOKENS", ctx},
      {"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"},
      {"DISABLE_TELEMETRY", "1"},
      {"DISABLE_ERROR_REPORTING", "1"},
      {"DISABLE_AUTOUPDATER", "1"},
      {"DISABLE_BUG_COMMAND", "1"},
      {"CLAUDE_CODE_DISABLE_FEEDBACK_SURVEY", "1"},
  };
}

// Runs claude with `args` in `env`; its exit code (128 + signal if killed).
int run_claude(const std::string& claude, const std::vector<std::string>& args,
               const std::vector<std::pair<std::string, std::string>>& env) {
  const pid_t pid = fork();
  if (pid < 0) fail(ErrorKind::resource, "fork: {}", std::strerror(errno));
  if (pid == 0) {
    // An API key next to the token makes Claude Code ask which to use.
    unsetenv("ANTHROPIC_API_KEY");
    for (const auto& [name, value] : env) setenv(name.c_str(), value.c_str(), 1);
    std::vector<char*> argv{const_cast<char*>(claude.c_str())};
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(claude.c_str(), argv.data());
    std::fprintf(stderr, "error: cannot run %s: %s\n", claude.c_str(), std::strerror(errno));
    _exit(127);
  }
  // The terminal's Ctrl-C and Ctrl-\ are Claude Code's to handle; a
  // SIGTERM or SIGHUP for this process goes on to it.
  g_claude_pid = pid;
  signal(SIGINT, SIG_IGN);
  signal(SIGQUIT, SIG_IGN);
  signal(SIGTERM, forward_signal);
  signal(SIGHUP, forward_signal);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  g_claude_pid = 0;
  signal(SIGINT, SIG_DFL);
  signal(SIGQUIT, SIG_DFL);
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

// Offline, interactive Claude Code stops at its onboarding ("Unable to
// connect to Anthropic services") on a machine where it never ran: mark it
// done when Claude Code has no settings file yet.
void skip_onboarding_if_new() {
  const char* home = std::getenv("HOME");
  if (home == nullptr || home[0] == '\0') return;
  const fs::path file = fs::path(home) / ".claude.json";
  if (fs::exists(file)) return;
  std::ofstream out(file);
  out << "{\"hasCompletedOnboarding\": true}\n";
  if (out) spdlog::info("wrote {} (onboarding done): Claude Code's first run needs no Anthropic account", file.string());
}

RegisterCommand reg("claude", [](CLI::App& app) {
  app.description(
      "Run Claude Code (`claude ARGS...`) on the local model: uses the server the configuration "
      "describes when one answers, else starts one in the background for the session");
  app.prefix_command();  // every word after `claude` is Claude Code's
  return std::function<int()>([self = &app] {
    const std::vector<std::string> claude_args = self->remaining();
    // Before anything starts: without Claude Code there is nothing to do.
    const std::string claude = find_on_path("claude");
    if (claude.empty())
      fail(ErrorKind::not_found,
           "Claude Code (`claude`) is not on PATH: install it with `npm install -g "
           "@anthropic-ai/claude-code` (Node.js 18 or later), then run `pensieve claude` again");
    // serve's options as `pensieve serve` alone would take them: config
    // file, environment, defaults.
    const auto serve = parse_serve_options({});
    const std::string host = serve->text("host");
    const int port = std::stoi(serve->text("port"));
    const std::string keys = serve->text("api-key");
    const std::string configured_key = keys.substr(0, keys.find(','));
    const ConfigFile& config = *serve->config;

    Progress progress;
    std::optional<Target> target;
    if (port > 0) target = probe(client_url(host, port), configured_key.empty() ? "pensieve" : configured_key, progress);
    pid_t server = -1;
    if (target) {
      std::fprintf(stderr, "pensieve: using the server at %s (%s, context %lld tokens)\n", target->url.c_str(),
                   target->model.c_str(), static_cast<long long>(target->context));
    } else {
      const std::string key = random_key();
      const std::string log = server_log_path();
      const int p = free_loopback_port();
      std::vector<std::string> args{"serve", "--host", "127.0.0.1", "--port", std::to_string(p), "--api-key", key};
      if (!config.path().empty()) args.insert(args.end(), {"--config", config.path()});
      // The key is passed as a flag; a key in the environment must not
      // stand in for it.
      unsetenv("PENSIEVE_API_KEY");
      server = start_server(args, log);
      std::fprintf(stderr, "pensieve: starting a server for this session (log: %s)\n", log.c_str());
      const std::string url = client_url("127.0.0.1", p);
      for (;;) {
        int status = 0;
        if (waitpid(server, &status, WNOHANG) == server) {
          progress.done();
          fail("the server did not start (exit {}); the end of {}:\n{}",
               WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), log, tail_of(log, 5));
        }
        target = probe(url, key, progress);
        if (target) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      std::fprintf(stderr, "pensieve: serving %s on %s (context %lld tokens)\n", target->model.c_str(),
                   target->url.c_str(), static_cast<long long>(target->context));
    }
    std::fflush(stderr);
    skip_onboarding_if_new();
    int code = 1;
    try {
      code = run_claude(claude, claude_args, claude_environment(*target));
    } catch (...) {
      if (server > 0) stop_server(server);
      throw;
    }
    if (server > 0) stop_server(server);
    return code;
  });
});

}  // namespace
}  // namespace pensieve::cli
