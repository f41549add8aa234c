#include "server/loading_server.h"

#include <chrono>
#include <mutex>
#include <thread>

#include <httplib.h>

#include "core/error.h"
#include "core/log.h"
#include "server/api_error.h"
#include "server/http_server.h"
#include "server/ids.h"
#include "server/listen_socket.h"
#include "server/systemd.h"

namespace pensieve::server {

struct LoadingServer::Impl {
  HttpServer http;  // the same connection gate as the real server (http_server.h)
  std::thread thread;
  std::mutex mutex;
  nlohmann::ordered_json state = nlohmann::ordered_json::object();
  int port = 0;
  bool stopped = false;
  int listen_fd = -1;
  ListenSocket listen_socket;
};

LoadingServer::LoadingServer(const std::string& host, int port, int listen_fd) : impl_(std::make_unique<Impl>()) {
  Impl& s = *impl_;
  s.listen_fd = listen_fd;
  auto health = [&s](const httplib::Request&, httplib::Response& res) {
    nlohmann::ordered_json body = {{"status", "loading"}};
    {
      std::lock_guard<std::mutex> lock(s.mutex);
      for (auto it = s.state.begin(); it != s.state.end(); ++it) body[it.key()] = it.value();
    }
    res.status = 503;
    res.set_header("retry-after", "1");
    res.set_content(dump_json(body), "application/json");
  };
  s.http.Get("/health", health);
  s.http.Get("/", health);
  auto not_ready = [&s](const httplib::Request& req, httplib::Response& res) {
    std::string stage;
    {
      std::lock_guard<std::mutex> lock(s.mutex);
      stage = s.state.value("stage", "loading");
    }
    const std::string id = random_id("req_");
    const std::string message =
        "the model is not ready yet (" + stage + "); GET /health shows the progress";
    spdlog::info("{}: {} {} -> 529 overloaded_error: {}", id, req.method, req.path, message);
    res.status = 529;
    res.set_header("request-id", id);
    res.set_header("retry-after", "1");
    res.set_content(dump_json(error_envelope("overloaded_error", message, id)), "application/json");
  };
  s.http.Get(".*", not_ready);
  s.http.Post(".*", not_ready);
  if (listen_fd >= 0) {
    s.port = local_address(listen_fd).port;
  } else {
    s.listen_socket.install(s.http, s.http.receive_buffer_bytes());
    if (port == 0) {
      s.port = s.http.bind_to_any_port(host);
    } else if (s.http.bind_to_port(host, port)) {
      s.port = port;
    } else {
      s.port = -1;
    }
    if (s.port <= 0) fail(ErrorKind::resource, "cannot listen on {}:{}: address in use or not available", host, port);
    s.listen_socket.raise_backlog();
  }
  s.http.set_limits({.n_threads = 8}, [](int status, const std::string& message) {
    const std::string id = random_id("req_");
    const std::string body = dump_json(error_envelope(error_type_for_status(status), message, id));
    return fmt::format("HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n"
                       "request-id: {}\r\nConnection: close\r\n\r\n{}",
                       status, status_reason(status), body.size(), id, body);
  });
  s.http.start_connections();
  // Bound already: connections queue in the backlog until the loop accepts them.
  if (listen_fd >= 0) {
    s.thread = std::thread([&s] { s.http.accept_on(s.listen_fd); });
    while (!s.http.accepting()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return;
  }
  s.thread = std::thread([&s] { s.http.listen_after_bind(); });
  // stop() only interrupts a running loop: wait until it runs.
  while (!s.http.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

LoadingServer::~LoadingServer() { stop(); }

int LoadingServer::port() const { return impl_->port; }

void LoadingServer::set_state(nlohmann::ordered_json state) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->state = std::move(state);
}

void LoadingServer::stop() {
  Impl& s = *impl_;
  if (s.stopped) return;
  s.stopped = true;
  if (s.listen_fd >= 0) s.http.stop_accepting();
  else s.http.stop();
  if (s.thread.joinable()) s.thread.join();
  s.http.stop_connections();
}

}  // namespace pensieve::server
