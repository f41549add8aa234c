// cpp-httplib's Server with connection handling that hostile or broken
// clients cannot starve (docs/reliability.md, "Hostile clients").
//
// Plain httplib hands every accepted connection to a worker thread at once,
// and that thread waits while the client sends its headers (read timeout per
// recv, so a client trickling a byte now and then holds it forever) and then
// for the next keep-alive request. A few hundred half-sent requests took every
// thread. Here:
//
// - accepted and idle keep-alive connections wait in one epoll thread (the
//   gate), which costs a file descriptor and a few bytes each; the gate looks
//   at the socket without reading it and hands a connection to a worker only
//   when its whole request has arrived: the request line and headers (peeked)
//   and then the whole Content-Length body (counted in the socket's receive
//   queue, ioctl FIONREAD; each connection's receive buffer is enlarged,
//   SO_RCVBUF, receive_buffer_bytes(), so that a large request fits), or a
//   chunked body up to its last chunk (the first kGateChunkedBytes of the
//   request are looked through). It hands a request over before its body is
//   in only when the body cannot be held there: the receive buffer is full
//   (the kernel takes no more until someone reads: waiting on would only
//   end in a 408), the chunked body runs past kGateChunkedBytes, the client
//   has shut down its side, or the headers fill the header limit;
// - `Expect: 100-continue`: the gate itself answers `100 Continue` once the
//   headers are in (and the Content-Length is within the limit) and then
//   waits for the body like any other; the worker does not send a second 100;
// - the headers must be complete within `header_timeout_s` of the
//   connection opening (or of its first byte after a keep-alive response),
//   and a body waiting in the gate may stall for `read_timeout_s` at most
//   (and take `request_timeout_s` in all); past either the gate answers 408
//   itself and closes. Idle keep-alive connections close after
//   `keep_alive_timeout_s`;
// - a request whose Content-Length exceeds `max_body_bytes` gets its 413
//   from the gate without a worker or reading the body (and without a 100);
// - a worker reads a request under `read_timeout_s` per read and
//   `request_timeout_s` in all, answers, and goes back to the pool; a
//   keep-alive connection returns to the gate;
// - at most `max_connections` connections are open: a new one beyond that
//   closes the connection that has waited longest in the gate (one that sent
//   nothing useful), or is closed itself when every connection is busy.
//
// The routes, parsing and responses are httplib's own (process_request).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <httplib.h>

namespace pensieve::server {

struct ConnectionLimits {
  int n_threads = 64;              // requests being read or answered at once
  size_t max_connections = 0;      // 0: from RLIMIT_NOFILE (see default_max_connections)
  int header_timeout_s = 10;       // request line + headers must arrive within this
  int keep_alive_timeout_s = 5;    // an idle keep-alive connection is closed after this
  int read_timeout_s = 30;         // one read of the body
  int request_timeout_s = 120;     // the whole body
  int write_timeout_s = 30;        // one write of the answer
  size_t max_header_bytes = 64u << 10;
  size_t max_body_bytes = 32u << 20;
  size_t keep_alive_max_count = 1000;
};

// What a connection cap defaults to: the soft file limit less room for the
// process's own files, at least 64.
size_t default_max_connections();

// Looks at the bytes a client has sent so far. headers_end: the offset just
// past "\r\n\r\n" (0 while the headers are incomplete); content_length: its
// value when the headers carry a well-formed one. Exposed for tests and the
// HTTP fuzz target.
struct PeekedRequest {
  size_t headers_end = 0;
  bool has_content_length = false;
  unsigned long long content_length = 0;
  bool chunked = false;          // Transfer-Encoding: chunked
  bool expect_continue = false;  // Expect: 100-continue (the client waits for a 100 before its body)
  bool body_complete = false;    // the whole body is among the bytes (or malformed: httplib judges it)
};

PeekedRequest peek_request(std::string_view bytes);

// Follows a chunked body's framing through `bytes` (the request from its
// first byte) from `at`, the offset of a chunk-size line. Chunk data is
// skipped by its size, so data that looks like a last chunk does not end
// the body. Malformed: httplib will refuse it (or read it differently), so
// there is nothing to wait for.
struct ChunkScan {
  enum State { incomplete, complete, malformed } state = incomplete;
  size_t at = 0;    // the chunk-size line where the scan stopped: go on from here
  size_t need = 0;  // incomplete: the request's length at which the scan can get further
};
ChunkScan scan_chunks(std::string_view bytes, size_t at);

// How much of a chunked request (headers and body) the gate looks through
// for its last chunk: a chunked body's end can only be found by peeking at
// everything before it, again as more arrives, so the gate hands a longer
// one to a worker rather than copy ever more bytes per look.
inline constexpr size_t kGateChunkedBytes = 256u << 10;

class HttpServer : public httplib::Server {
 public:
  // The whole HTTP response (status line to body) for an error the gate
  // answers itself (408, 413); it sends it as it is and closes.
  using ErrorResponse = std::function<std::string(int status, const std::string& message)>;

  HttpServer();
  ~HttpServer() override;

  // Before listen_after_bind(). Also sets httplib's own timeouts and limits.
  void set_limits(const ConnectionLimits& limits, ErrorResponse error_response);
  // Starts the gate and the workers; call before listen_after_bind().
  void start_connections();
  // Closes every connection waiting in the gate and joins the gate and the
  // workers (after they finish what they are answering). Call after stop()
  // has made listen_after_bind() return. Idempotent.
  void stop_connections();

  // A listening socket made elsewhere (systemd's socket activation), used
  // instead of one bound here: accept_on(fd) accepts from it and hands each
  // connection to the gate as httplib's own accept loop does, until
  // stop_accepting(); call start_connections() first. The socket stays
  // open (another accept_on() may take it over, as the real server takes
  // over from the loading stand-in).
  void accept_on(int fd);
  void stop_accepting();
  bool accepting() const { return accepting_.load(); }

  // The socket of the connection the calling thread is answering (a route
  // handler's), or -1 (httplib 0.11 hands a handler no socket). It stays
  // open, and this thread's, until the handler returns.
  static int current_socket();

  // Connections open now (in the gate or with a worker).
  size_t n_connections() const { return n_open_.load(); }

  // The receive buffer (SO_RCVBUF) asked for each connection: a whole
  // request of the largest size allowed, so that it can wait in the gate
  // without being read; the kernel caps it at net.core.rmem_max.
  int receive_buffer_bytes() const;

  // One request read from `strm` and answered into it, as a worker does
  // (the HTTP fuzz target feeds bytes through this). False when the
  // connection should close.
  bool serve_one(httplib::Stream& strm, bool close_connection);

 private:
  struct Gate;
  bool process_and_close_socket(socket_t sock) override;
  void serve_connection(int fd, size_t n_served, bool skip_continue);
  void close_connection(int fd);

  ConnectionLimits limits_;
  ErrorResponse error_response_;
  std::unique_ptr<Gate> gate_;
  std::unique_ptr<httplib::TaskQueue> workers_;
  std::atomic<size_t> n_open_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<bool> accepting_{false}, stop_accepting_{false};
};

}  // namespace pensieve::server
