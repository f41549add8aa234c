// A stand-in HTTP server for the time before the model is ready: while
// `pensieve serve --model ORG/NAME` downloads and loads weights, GET /health
// (and HEAD /) answer 503 with the stage and download progress, and every
// other route answers Anthropic's 529 overloaded_error envelope, so clients
// see a clear "not ready yet" instead of a refused connection. It is stopped,
// freeing the port, just before the real Server binds it.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

namespace pensieve::server {

class LoadingServer {
 public:
  // Binds host:port (port 0 picks a free one) and serves on a thread; with
  // listen_fd >= 0 (a socket systemd passed) accepts from that instead and
  // leaves it open for the real server.
  LoadingServer(const std::string& host, int port, int listen_fd = -1);
  ~LoadingServer();
  LoadingServer(const LoadingServer&) = delete;
  LoadingServer& operator=(const LoadingServer&) = delete;

  int port() const;
  // What /health reports next to {"status": "loading"}: e.g.
  // {"stage": "download", "download": {"bytes_done": .., "bytes_total": .., ...}}.
  void set_state(nlohmann::ordered_json state);
  // Stops serving and releases the port (not an inherited socket); idempotent.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pensieve::server
