// The Anthropic Messages API over HTTP: POST /v1/messages (JSON or SSE),
// POST /v1/messages/count_tokens, GET /v1/models[/{id}], HEAD / and
// GET /health, in front of the models of a ModelRegistry (each a Backend,
// src/server/backend.h), or of one Backend.
//
//   pensieve::server::Server server(registry, options);  // or (backend, options)
//   server.start();   // binds; throws pensieve::Error when it cannot or must not
//   server.wait();    // until stop() (e.g. from a signal handler thread)
//
// start() ignores SIGPIPE for the process: a client closing its socket must
// not kill the server.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "server/backend.h"
#include "server/model_registry.h"

namespace httplib {
class Stream;
}

namespace pensieve::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                        // 0 picks a free port (see Server::port())
  int listen_fd = -1;                     // a listening socket made elsewhere (systemd): served
                                          // instead of binding host:port, and left open
  std::vector<std::string> api_keys;      // accepted x-api-key / Bearer values
  // Without a key the server only listens on loopback and only answers
  // loopback peers; true serves any address without a key (--allow-no-key).
  bool allow_no_key = false;
  bool api_keys_from_env = true;          // also accept $PENSIEVE_API_KEY (comma-separated)
  size_t max_body_bytes = 32u << 20;      // larger bodies get 413
  size_t max_header_bytes = 64u << 10;    // all request headers together; more gets 431
  int n_http_threads = 64;                // requests read or answered at once
  size_t max_connections = 0;             // open connections (0: from the file limit); the
                                          // longest-waiting idle one makes room for a new one
  int header_timeout_s = 10;              // request line + headers must arrive within this
  int max_queue = 16;                     // generations running or waiting; more get 529
  int max_per_client = 0;                 // generations per API key/address; more get 429 (0: off)
  int read_timeout_s = 30;                // a client stalled this long while sending is dropped
  int request_timeout_s = 120;            // ... or still sending its body after this long
  int write_timeout_s = 30;               // ... or while not reading
  int keep_alive_timeout_s = 5;
  int ping_interval_ms = 5000;            // SSE ping when nothing else was sent for this long
  int64_t max_output_tokens = 0;          // server-wide cap on a response's tokens (0: context only)
  // Tests only: POST /test/hold and /test/release hold the loaded models'
  // generations where they are and let them go (Backend::set_held), so a
  // test can keep a request in flight by construction.
  bool test_hooks = false;
};

class Server {
 public:
  // Serves the registry's models by name (it must outlive the server).
  Server(ModelRegistry& models, ServerOptions options);
  // Serves one backend: its id and claude-* names reach it, others get 404.
  Server(Backend& backend, ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and starts serving on background threads. Throws pensieve::Error if
  // the address cannot be bound, or if it is not a loopback address and no
  // API key is configured.
  void start();
  // Blocks until stop() is called.
  void wait();
  // Cancels running generations (streams end with an error event), stops
  // listening and joins the server threads. Idempotent.
  void stop();

  int port() const;  // the bound port (after start())

  // Serves the requests read from `strm` (one connection, until it closes or
  // asks to) through the routes a socket gets, without listening: the HTTP
  // fuzz target (tests/fuzz/fuzz_http.cc) feeds bytes through it.
  void serve_stream(httplib::Stream& strm);
  const ServerOptions& options() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace pensieve::server
