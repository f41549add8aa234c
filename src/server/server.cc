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

Server::Impl::Impl(Backend& backend_, ServerOptions options_)
    : backend(backend_), options(std::move(options_)), info(backend.info()) {}

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

json Server::Impl::model_object(const std::string& id) const {
  // Anthropic's model object; max_input_tokens and max_tokens as its API
  // gives them, from the context actually served (context_note says why
  // that is less than the model's, when it is).
  const int64_t max_tokens = options.max_output_tokens > 0
                                 ? std::min(options.max_output_tokens, info.context_size - 1)
                                 : info.context_size - 1;
  // One object both SDKs read: Anthropic's fields (type, display_name,
  // created_at) and OpenAI's (object, created, owned_by).
  json m = {{"type", "model"}, {"id", id},
            {"display_name", info.display_name.empty() ? info.id : info.display_name},
            {"created_at", created_at}, {"object", "model"}, {"created", created_unix},
            {"owned_by", "pensieve"}, {"max_input_tokens", info.context_size - 1},
            {"max_tokens", max_tokens}, {"context_size", info.context_size}};
  if (!info.context_note.empty()) m["context_note"] = info.context_note;
  return m;
}

void Server::Impl::handle_models(const httplib::Request& req, httplib::Response& res) {
  json data = json::array();
  // One model; paging past it (after_id/before_id naming it) gives an empty page.
  if (req.get_param_value("after_id") != info.id && req.get_param_value("before_id") != info.id)
    data.push_back(model_object(info.id));
  json first = data.empty() ? json(nullptr) : json(info.id);
  send_json(res, 200, {{"object", "list"}, {"data", data}, {"first_id", first}, {"last_id", first}, {"has_more", false}});
}

void Server::Impl::handle_model(const httplib::Request& req, httplib::Response& res) {
  // Any model name is served by the loaded model, so any id resolves to it.
  send_json(res, 200, model_object(req.matches[1]));
}

void Server::Impl::handle_health(const httplib::Request& req, httplib::Response& res) {
  json engine = backend.stats();
  std::lock_guard<std::mutex> lock(slots_mutex);
  json body = {{"status", "ok"}, {"model", info.id}, {"context_size", info.context_size}};
  if (!info.context_note.empty()) body["context_note"] = info.context_note;
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
  const json engine = backend.stats();
  int inflight = 0;
  {
    std::lock_guard<std::mutex> lock(slots_mutex);
    inflight = n_inflight;
  }
  res.status = 200;
  res.set_content(metrics.render(engine, inflight, http.n_connections()), "text/plain; version=0.0.4");
}

void Server::Impl::handle_hold(bool held, httplib::Response& res) {
  if (!backend.set_held(held))
    throw ApiError(404, "not_found_error", "this backend cannot hold its generations");
  send_json(res, 200, {{"held", held}});
}

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
  spdlog::info("serving {} on http://{}:{} ({})", s.info.id, s.options.host, s.bound_port,
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
