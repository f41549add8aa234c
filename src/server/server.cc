#include "server/server.h"

#include <csignal>
#include <cstdlib>
#include <ctime>

#include "core/error.h"
#include "core/log.h"
#include "server/auth.h"
#include "server/ids.h"
#include "server/listen_socket.h"
#include "server/systemd.h"
#include "server/server_impl.h"

namespace pensieve::server {

using json = nlohmann::ordered_json;

void EventChannel::push(const GenerationEvent& event) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    events_.push_back(event);
  }
  cv_.notify_all();
}

void EventChannel::wait(std::deque<GenerationEvent>& out,
                        std::chrono::steady_clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait_until(lock, deadline, [&] { return aborted_ || !events_.empty(); });
  while (!events_.empty()) {
    out.push_back(std::move(events_.front()));
    events_.pop_front();
  }
}

void EventChannel::abort() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    aborted_ = true;
  }
  cv_.notify_all();
}

bool EventChannel::aborted() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return aborted_;
}

namespace {

std::string now_rfc3339() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// cpp-httplib keeps form-encoded bodies to 8 KiB whatever the body limit;
// `curl -d @request.json` sends that content type by default.
constexpr size_t kFormBodyLimit = 8192;

std::string default_error_message(const httplib::Request& req, int status, size_t max_body) {
  switch (status) {
    case 400: return "malformed HTTP request";
    case 404: return "Not found: " + req.method + " " + req.path;
    case 413:
      if (req.get_header_value("Content-Type").rfind("application/x-www-form-urlencoded", 0) == 0 &&
          std::strtoull(req.get_header_value("Content-Length").c_str(), nullptr, 10) <= max_body)
        return fmt::format("a body sent as application/x-www-form-urlencoded is limited to {} "
                           "bytes; send it with Content-Type: application/json",
                           kFormBodyLimit);
      return fmt::format("request body exceeds the limit of {} bytes", max_body);
    case 414: return "request URI is too long";
    default: return fmt::format("HTTP error {}", status);
  }
}

}  // namespace

namespace {

std::unique_ptr<ModelLoader> lend(Backend& backend) {
  auto loader = std::make_unique<LendingLoader>();
  loader->lend(backend.info().id, backend);
  return loader;
}

std::vector<ModelEntry> one_entry(const Backend& backend) {
  const ModelInfo info = backend.info();
  if (info.context_size <= 0) fail(ErrorKind::internal, "model {}: context size {}", info.id, info.context_size);
  return {ModelEntry{.id = info.id, .display_name = info.display_name}};
}

}  // namespace

Server::Impl::Impl(ModelRegistry& models_, ServerOptions options_)
    : models(models_), options(std::move(options_)) {}

Server::Impl::Impl(Backend& backend, ServerOptions options_)
    : own_loader(lend(backend)),
      own_registry(std::make_unique<ModelRegistry>(one_entry(backend), *own_loader)),
      models(*own_registry),
      options(std::move(options_)) {
  models.load_at_start();
}

void Server::Impl::send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump_json(body), "application/json");
}

void Server::Impl::send_error(const httplib::Request& req, httplib::Response& res,
                              const ApiError& error) {
  if (!res.has_header("request-id")) res.set_header("request-id", random_id("req_"));
  const std::string id = res.get_header_value("request-id");
  if (!should_retry(error.status())) res.set_header("x-should-retry", "false");
  // Every error answer is in the log with its request id, which the client
  // shows the user: a 401 from a wrong key or a 400 from a bad request is
  // explained here, not only on the other side.
  const auto level = error.status() >= 500 && error.status() != 529 ? spdlog::level::err
                                                                     : spdlog::level::info;
  spdlog::log(level, "{}: {} {} -> {} {}: {}", id, req.method, req.path, error.status(),
              error.type(), error.what());
  // OpenAI's routes answer in OpenAI's error shape (its SDK reads error.message).
  if (req.path.rfind("/v1/chat/", 0) == 0) send_json(res, error.status(), openai_error(error));
  else send_json(res, error.status(), error_envelope(error.type(), error.what(), id));
}

void Server::Impl::check_auth(const httplib::Request& req) const {
  size_t n_header_bytes = 0;
  for (const auto& [name, value] : req.headers) n_header_bytes += name.size() + value.size() + 4;
  if (n_header_bytes > options.max_header_bytes)
    throw ApiError(431, "invalid_request_error",
                   fmt::format("request headers are too large ({} bytes > {} maximum)",
                               n_header_bytes, options.max_header_bytes));
  if (keys.empty()) {
    // No key configured: start() only allows loopback binding, but the
    // peer address is checked as well in case of proxies or odd routes
    // (unless the operator said --allow-no-key).
    if (options.allow_no_key) return;
    if (!is_loopback_address(req.remote_addr))
      throw ApiError(401, "authentication_error", "this server only accepts local clients");
    return;
  }
  std::string key = presented_key(req.get_header_value("x-api-key"),
                                  req.get_header_value("Authorization"));
  if (key.empty())
    throw ApiError(401, "authentication_error",
                   "x-api-key header or Authorization: Bearer is required");
  if (!key_accepted(key, keys)) throw ApiError(401, "authentication_error", "invalid x-api-key");
}

void Server::Impl::setup_routes() {
  using Method = void (Impl::*)(const httplib::Request&, httplib::Response&);
  auto route = [this](Method method, bool authenticated) {
    return [this, method, authenticated](const httplib::Request& req, httplib::Response& res) {
      try {
        if (authenticated) check_auth(req);
        (this->*method)(req, res);
      } catch (const std::exception& e) {
        send_error(req, res, to_api_error(e));
      }
      count(req, res);
    };
  };
  http.Post("/v1/messages", route(&Impl::handle_messages, true));
  http.Post("/v1/messages/count_tokens", route(&Impl::handle_count_tokens, true));
  http.Post("/v1/chat/completions", route(&Impl::handle_chat_completions, true));
  http.Get("/v1/models", route(&Impl::handle_models, true));
  http.Get(R"(/v1/models/([^/]+))", route(&Impl::handle_model, true));
  http.Get("/health", route(&Impl::handle_health, false));
  http.Get("/metrics", route(&Impl::handle_metrics, true));
  http.Get("/", route(&Impl::handle_health, false));  // HEAD / is served by GET handlers
  if (options.test_hooks) {
    for (const bool held : {true, false}) {
      http.Post(held ? "/test/hold" : "/test/release",
                [this, held](const httplib::Request& req, httplib::Response& res) {
                  try {
                    check_auth(req);
                    handle_hold(held, res);
                  } catch (const std::exception& e) {
                    send_error(req, res, to_api_error(e));
                  }
                });
    }
  }

  http.set_pre_routing_handler([](const httplib::Request&, httplib::Response& res) {
    res.set_header("request-id", random_id("req_"));
    return httplib::Server::HandlerResponse::Unhandled;
  });
  // httplib's own failures (no route, body too large, bad request line)
  // get Anthropic's envelope too.
  http.set_error_handler(httplib::Server::HandlerWithResponse(
      [this](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    int status = res.status;
    send_error(req, res, ApiError(status, error_type_for_status(status),
                                  default_error_message(req, status, options.max_body_bytes)));
    count(req, res);
    return httplib::Server::HandlerResponse::Handled;
  }));
  http.set_exception_handler(
      [this](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          send_error(req, res, to_api_error(e));
        } catch (...) {
          send_error(req, res, ApiError(500, "api_error", "internal error"));
        }
        count(req, res);
      });
}

std::string Server::Impl::gate_error_response(int status, const std::string& message) {
  // The connection gate answers these before a worker reads the request
  // (408: it did not arrive in time, 413: its Content-Length is too large).
  const std::string id = random_id("req_");
  const std::string type = error_type_for_status(status);
  metrics.record_request("gate", status);
  spdlog::info("{}: -> {} {}: {}", id, status, type, message);
  const std::string body = dump_json(error_envelope(type, message, id));
  return fmt::format("HTTP/1.1 {} {}\r\nContent-Type: application/json\r\n"
                     "Content-Length: {}\r\nrequest-id: {}\r\n{}"
                     "Connection: close\r\n\r\n{}",
                     status, status_reason(status), body.size(), id,
                     should_retry(status) ? "" : "x-should-retry: false\r\n", body);
}

json Server::Impl::model_object(const ModelListing& listed) const {
  const ModelEntry& e = *listed.model;
  const std::optional<ModelInfo> info = models.loaded_info(e);
  // One object both SDKs read: Anthropic's fields (type, display_name,
  // created_at) and OpenAI's (object, created, owned_by).
  json m = {{"type", "model"}, {"id", listed.id},
            {"display_name", !e.display_name.empty() ? e.display_name
                             : info && !info->display_name.empty() ? info->display_name
                                                                   : e.id},
            {"created_at", created_at}, {"object", "model"}, {"created", created_unix},
            {"owned_by", "pensieve"}};
  if (listed.kind != ModelListing::Kind::model) m["alias_of"] = e.id;
  m["loaded"] = info.has_value();
  // max_input_tokens and max_tokens as Anthropic's API gives them, from the
  // context actually served (context_note says why that is less than the
  // model's, when it is); before a model is loaded, from its configuration.
  const int64_t context = info ? info->context_size : e.context_size_hint;
  if (context > 0) {
    int64_t max_tokens = context - 1;
    for (const int64_t cap : {options.max_output_tokens, e.max_output_tokens})
      if (cap > 0) max_tokens = std::min(max_tokens, cap);
    m["max_input_tokens"] = context - 1;
    m["max_tokens"] = max_tokens;
    m["context_size"] = context;
  }
  if (info && !info->context_note.empty()) m["context_note"] = info->context_note;
  return m;
}

ApiError Server::Impl::unknown_model(const std::string& name) const {
  std::string served;
  for (const auto& l : models.listing())
    if (l.kind == ModelListing::Kind::model) served += (served.empty() ? "" : ", ") + l.id;
  return ApiError(404, "not_found_error",
                  fmt::format("model: {} (this server serves {}, their aliases (GET /v1/models), "
                              "and claude-* names)",
                              name, served));
}

const ModelEntry* Server::Impl::model_named(const json& body) const {
  if (!body.is_object()) return nullptr;
  auto it = body.find("model");
  if (it == body.end() || !it->is_string()) return nullptr;
  const std::string& name = it->get_ref<const std::string&>();
  if (const ModelEntry* e = models.resolve(name)) return e;
  throw unknown_model(name);
}

void Server::Impl::handle_models(const httplib::Request& req, httplib::Response& res) {
  // Anthropic's pagination: limit (1-1000, default 20), after_id, before_id.
  // A client that sends no anthropic-version (OpenAI's SDK) gets the whole
  // list unless it asks for a limit: OpenAI's list has no pages.
  const auto& all = models.listing();
  size_t limit = req.has_header("anthropic-version") ? 20 : all.size();
  if (req.has_param("limit")) {
    const std::string text = req.get_param_value("limit");
    char* end = nullptr;
    const long v = std::strtol(text.c_str(), &end, 10);
    if (text.empty() || *end != '\0' || v < 1 || v > 1000)
      invalid_request("limit", "must be an integer from 1 to 1000, got '{}'", text);
    limit = static_cast<size_t>(v);
  }
  auto position = [&](const char* param) -> size_t {
    const std::string id = req.get_param_value(param);
    for (size_t i = 0; i < all.size(); ++i)
      if (all[i].id == id) return i;
    invalid_request(param, "no model is listed as '{}'", id);
  };
  if (req.has_param("after_id") && req.has_param("before_id"))
    invalid_request("", "after_id and before_id cannot be given together");
  size_t begin = 0, end = all.size();
  if (req.has_param("after_id")) {
    begin = position("after_id") + 1;
    end = std::min(all.size(), begin + limit);
  } else if (req.has_param("before_id")) {
    end = position("before_id");
    begin = end > limit ? end - limit : 0;
  } else {
    end = std::min(all.size(), limit);
  }
  json data = json::array();
  for (size_t i = begin; i < end; ++i) data.push_back(model_object(all[i]));
  // has_more: more in the direction being paged.
  const bool more = req.has_param("before_id") ? begin > 0 : end < all.size();
  json first = begin < end ? json(all[begin].id) : json(nullptr);
  json last = begin < end ? json(all[end - 1].id) : json(nullptr);
  send_json(res, 200, {{"object", "list"}, {"data", data}, {"first_id", first}, {"last_id", last},
                       {"has_more", more}});
}

void Server::Impl::handle_model(const httplib::Request& req, httplib::Response& res) {
  const std::string name = req.matches[1];
  for (const auto& l : models.listing())
    if (l.id == name) return send_json(res, 200, model_object(l));
  // A name resolve() maps (a claude-* family name, another case) is
  // described as the model it reaches, under the name asked for.
  if (const ModelEntry* e = models.resolve(name))
    return send_json(res, 200, model_object({name, e, ModelListing::Kind::alias}));
  throw unknown_model(name);
}

void Server::Impl::handle_health(const httplib::Request& req, httplib::Response& res) {
  // The default model's figures at the top (what one-model clients read),
  // then every model's state.
  const ModelEntry& main = models.default_model();
  json engine = nullptr;
  models.for_each_loaded([&](const ModelEntry& e, Backend& b) {
    if (&e == &main) engine = b.stats();
  });
  const std::optional<ModelInfo> info = models.loaded_info(main);
  json body = {{"status", "ok"}, {"model", main.id}};
  if (info) {
    body["context_size"] = info->context_size;
    if (!info->context_note.empty()) body["context_note"] = info->context_note;
  }
  json status = models.status();
  body["default_model"] = status["default"];
  body["models"] = std::move(status["models"]);
  body["model_memory"] = std::move(status["memory"]);
  body["claude_families"] = std::move(status["families"]);
  std::lock_guard<std::mutex> lock(slots_mutex);
  body["n_inflight"] = n_inflight;
  body["n_connections"] = http.n_connections();
  body["max_queue"] = options.max_queue;
  if (!engine.is_null()) body["engine"] = std::move(engine);
  send_json(res, 200, body);
}

// Counted once the answer's status is known and before it is written, so a
// client that has its answer sees it in the next scrape.
void Server::Impl::count(const httplib::Request& req, const httplib::Response& res) {
  // A streamed answer's status is left unset (-1) for httplib to make 200.
  metrics.record_request(Metrics::route_label(req.path), res.status == -1 ? 200 : res.status);
}

void Server::Impl::handle_metrics(const httplib::Request& req, httplib::Response& res) {
  (void)req;
  std::vector<std::pair<std::string, json>> engines;
  models.for_each_loaded([&](const ModelEntry& e, Backend& b) { engines.emplace_back(e.id, b.stats()); });
  int inflight = 0;
  {
    std::lock_guard<std::mutex> lock(slots_mutex);
    inflight = n_inflight;
  }
  res.status = 200;
  res.set_content(metrics.render(engines, inflight, http.n_connections()), "text/plain; version=0.0.4");
}

void Server::Impl::handle_hold(bool held, httplib::Response& res) {
  bool any = false;
  models.for_each_loaded([&](const ModelEntry&, Backend& b) { any = b.set_held(held) || any; });
  if (!any) throw ApiError(404, "not_found_error", "no loaded model can hold its generations");
  send_json(res, 200, {{"held", held}});
}

Server::Server(ModelRegistry& models, ServerOptions options)
    : impl_(std::make_unique<Impl>(models, std::move(options))) {}

Server::Server(Backend& backend, ServerOptions options)
    : impl_(std::make_unique<Impl>(backend, std::move(options))) {}

Server::~Server() { stop(); }

void Server::start() {
  Impl& s = *impl_;
  std::unique_lock<std::mutex> lock(s.state_mutex);
  if (s.running) fail(ErrorKind::internal, "server already started");
  s.keys = s.options.api_keys;
  if (s.options.api_keys_from_env)
    for (auto& k : api_keys_from_env()) s.keys.push_back(k);
  if (s.keys.empty() && !is_loopback_address(s.options.host) && !s.options.allow_no_key)
    fail("refusing to listen on {} without an API key: pass --api-key (or set PENSIEVE_API_KEY), "
         "bind to 127.0.0.1, or pass --allow-no-key to serve anyone who can reach it",
         s.options.host);
  std::signal(SIGPIPE, SIG_IGN);
  // spdlog's registry is a function-local static of the (shared) library:
  // made here, before the server's threads exist, every thread that logs is
  // ordered after its construction (which ThreadSanitizer can then see).
  (void)spdlog::default_logger_raw();

  s.created_at = now_rfc3339();
  s.created_unix = std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::system_clock::now().time_since_epoch()).count();
  s.prepare_routes();
  ConnectionLimits limits;
  limits.n_threads = s.options.n_http_threads;
  limits.max_connections = s.options.max_connections;
  limits.header_timeout_s = s.options.header_timeout_s;
  limits.keep_alive_timeout_s = s.options.keep_alive_timeout_s;
  limits.read_timeout_s = s.options.read_timeout_s;
  limits.request_timeout_s = s.options.request_timeout_s;
  limits.write_timeout_s = s.options.write_timeout_s;
  limits.max_header_bytes = s.options.max_header_bytes;
  limits.max_body_bytes = s.options.max_body_bytes;
  s.http.set_limits(limits, [&s](int status, const std::string& message) {
    return s.gate_error_response(status, message);
  });
  s.http.set_tcp_nodelay(true);  // SSE deltas are small and latency matters

  const bool adopted = s.options.listen_fd >= 0;
  if (adopted) {
    const SocketAddress at = local_address(s.options.listen_fd);
    s.options.host = at.host;
    s.bound_port = at.port;
  } else {
    s.listen_socket.install(s.http, s.http.receive_buffer_bytes());
    if (s.options.port == 0) {
      s.bound_port = s.http.bind_to_any_port(s.options.host);
      if (s.bound_port < 0) fail(ErrorKind::resource, "cannot listen on {}", s.options.host);
    } else {
      if (!s.http.bind_to_port(s.options.host, s.options.port))
        fail(ErrorKind::resource, "cannot listen on {}:{} (in use, or not an address of this machine)",
             s.options.host, s.options.port);
      s.bound_port = s.options.port;
    }
    s.listen_socket.raise_backlog();
  }
  s.http.start_connections();
  s.running = true;
  s.stopping = false;
  s.listen_thread = std::thread([&s, adopted] {
    if (adopted) s.http.accept_on(s.options.listen_fd);
    else s.http.listen_after_bind();
    std::lock_guard<std::mutex> lock(s.state_mutex);
    s.running = false;
    s.stopped_cv.notify_all();
  });
  // httplib's stop() does nothing until listening has begun: wait for it so
  // that a stop() right after start() cannot be lost.
  while (!(adopted ? s.http.accepting() : s.http.is_running())) {
    lock.unlock();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    lock.lock();
    if (!s.running) fail(ErrorKind::internal, "the HTTP server stopped while starting");
  }
  spdlog::info("serving {} on http://{}:{} ({})", s.models.default_model().id, s.options.host, s.bound_port,
               s.keys.empty() ? "no API key: local clients only" : "API key required");
}

void Server::wait() {
  Impl& s = *impl_;
  std::unique_lock<std::mutex> lock(s.state_mutex);
  s.stopped_cv.wait(lock, [&] { return !s.running; });
}

void Server::stop() {
  Impl& s = *impl_;
  std::lock_guard<std::mutex> stop_lock(s.stop_mutex);
  if (!s.listen_thread.joinable()) return;
  s.stopping = true;
  {
    std::lock_guard<std::mutex> lock(s.slots_mutex);
    for (auto& channel : s.channels) channel->abort();
  }
  if (s.options.listen_fd >= 0) s.http.stop_accepting();
  else s.http.stop();
  s.listen_thread.join();
  s.http.stop_connections();
}

void Server::Impl::prepare_routes() {
  if (routes_ready) return;
  routes_ready = true;
  setup_routes();
}

void Server::serve_stream(httplib::Stream& strm) {
  Impl& s = *impl_;
  {
    std::lock_guard<std::mutex> lock(s.state_mutex);
    if (!s.routes_ready) {
      s.keys = s.options.api_keys;
      s.created_at = now_rfc3339();
      s.created_unix = std::chrono::duration_cast<std::chrono::seconds>(
                           std::chrono::system_clock::now().time_since_epoch()).count();
      s.http.set_limits({.max_header_bytes = s.options.max_header_bytes,
                         .max_body_bytes = s.options.max_body_bytes},
                        nullptr);
    }
    s.prepare_routes();
  }
  for (int i = 0; i < 100 && s.http.serve_one(strm, false);) ++i;
}

int Server::port() const { return impl_->bound_port; }
const ServerOptions& Server::options() const { return impl_->options; }

}  // namespace pensieve::server
