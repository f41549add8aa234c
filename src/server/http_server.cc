#include "server/http_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <set>

#include "core/log.h"
#include "server/task_queue.h"

namespace pensieve::server {

using Clock = std::chrono::steady_clock;

size_t default_max_connections() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return 16384;
  const rlim_t reserve = 128;  // model files, logs, the engine's own descriptors
  return static_cast<size_t>(std::max<rlim_t>(64, rl.rlim_cur > reserve ? rl.rlim_cur - reserve : 0));
}

namespace {

thread_local int t_current_socket = -1;

bool iequals_prefix(std::string_view text, std::string_view prefix) {
  if (text.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(text[i])) != prefix[i]) return false;
  return true;
}

// Runs each task on the calling thread: httplib's accept loop hands a new
// socket to process_and_close_socket, which only passes it to the gate.
class InlineTaskQueue : public httplib::TaskQueue {
 public:
  void enqueue(std::function<void()> fn) override { fn(); }
  void shutdown() override {}
};

// A socket read and written with timeouts; reads also stop at a deadline.
// Unbuffered, so a request is read to its last byte and no further: the
// next one on the connection stays in the socket for the gate.
class DeadlineStream : public httplib::Stream {
 public:
  DeadlineStream(int fd, const ConnectionLimits& limits)
      : fd_(fd), limits_(limits),
        read_deadline_(Clock::now() + std::chrono::seconds(limits.request_timeout_s)) {}

  bool is_readable() const override { return wait(POLLIN, limits_.read_timeout_s * 1000); }
  bool is_writable() const override {
    if (!wait(POLLOUT, limits_.write_timeout_s * 1000)) return false;
    // Writable but hung up? (What httplib's is_socket_alive checks: an SSE
    // stream polls this to notice a client that went away.)
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 0) > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR))) {
      char c;
      ssize_t n = ::recv(fd_, &c, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) return false;
    }
    return true;
  }
  ssize_t read(char* ptr, size_t size) override {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(read_deadline_ - Clock::now());
    if (left.count() <= 0) return -1;
    const int timeout = static_cast<int>(std::min<int64_t>(left.count(), limits_.read_timeout_s * 1000LL));
    if (!wait(POLLIN, timeout)) return -1;
    ssize_t n;
    do n = ::recv(fd_, ptr, size, 0);
    while (n < 0 && errno == EINTR);
    return n;
  }
  ssize_t write(const char* ptr, size_t size) override {
    if (!wait(POLLOUT, limits_.write_timeout_s * 1000)) return -1;
    ssize_t n;
    do n = ::send(fd_, ptr, size, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    return n;
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    if (::getpeername(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0) address(addr, ip, port);
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    if (::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0) address(addr, ip, port);
  }
  socket_t socket() const override { return fd_; }

 private:
  bool wait(short events, int timeout_ms) const {
    pollfd p{fd_, events, 0};
    int r;
    do r = ::poll(&p, 1, std::max(0, timeout_ms));
    while (r < 0 && errno == EINTR);
    return r > 0 && (p.revents & (events | POLLHUP | POLLERR));
  }
  static void address(const sockaddr_storage& addr, std::string& ip, int& port) {
    char buf[INET6_ADDRSTRLEN] = {};
    if (addr.ss_family == AF_INET) {
      auto* a = reinterpret_cast<const sockaddr_in*>(&addr);
      inet_ntop(AF_INET, &a->sin_addr, buf, sizeof buf);
      port = ntohs(a->sin_port);
    } else if (addr.ss_family == AF_INET6) {
      auto* a = reinterpret_cast<const sockaddr_in6*>(&addr);
      inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof buf);
      port = ntohs(a->sin6_port);
    }
    ip = buf;
  }

  int fd_;
  const ConnectionLimits& limits_;
  Clock::time_point read_deadline_;
};

}  // namespace

PeekedRequest peek_request(std::string_view bytes) {
  PeekedRequest out;
  const size_t end = bytes.find("\r\n\r\n");
  if (end == std::string_view::npos) return out;
  out.headers_end = end + 4;
  std::string_view head = bytes.substr(0, end + 2);
  bool bad_length = false;
  // Each header line after the request line.
  size_t pos = head.find("\r\n");
  while (pos != std::string_view::npos && pos + 2 < head.size()) {
    const size_t start = pos + 2;
    const size_t eol = head.find("\r\n", start);
    std::string_view line = head.substr(start, eol - start);
    pos = eol;
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view name = line.substr(0, colon + 1);
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
    if (name.size() == 15 && iequals_prefix(name, "content-length:")) {
      if (value.empty()) {
        bad_length = true;  // httplib will judge it
        continue;
      }
      unsigned long long n = 0;
      for (char c : value) {
        if (c < '0' || c > '9') {
          bad_length = true;
          break;
        }
        // Past 19 digits it only matters that it is too large.
        n = n > 99'999'999'999'999'999ull ? ~0ull : n * 10 + static_cast<unsigned>(c - '0');
      }
      if (!bad_length) {
        out.has_content_length = true;
        out.content_length = n;
      }
    } else if (name.size() == 18 && iequals_prefix(name, "transfer-encoding:")) {
      out.chunked = true;
    } else if (name.size() == 7 && iequals_prefix(name, "expect:")) {
      out.expect_continue = true;
    }
  }
  const std::string_view body = bytes.substr(out.headers_end);
  if (bad_length || out.expect_continue) {
    out.body_complete = true;  // nothing to wait for: httplib answers it
  } else if (out.chunked) {
    // The last chunk, "0\r\n" and the empty trailer line (a chunk's data
    // may hold the same bytes: then the worker simply waits for the rest).
    out.body_complete = body.rfind("0\r\n\r\n", 0) == 0 || body.find("\r\n0\r\n\r\n") != std::string_view::npos;
  } else {
    out.body_complete = !out.has_content_length || body.size() >= out.content_length;
  }
  return out;
}

// The epoll thread where connections wait for their headers.
struct HttpServer::Gate {
  struct Conn {
    Clock::time_point since;     // entered the gate
    Clock::time_point deadline;  // closed when it passes
    size_t n_served = 0;         // requests answered on this connection
    bool keep_alive_idle = false;  // back after a response, nothing sent yet
    bool head_complete = false;  // headers in, waiting for the body
    size_t n_peeked = 0;         // bytes waiting in the socket at the last look
    bool draining = false;       // answered 408/413: discarding what the client still sends
  };

  HttpServer& server;
  int epoll_fd = -1;
  int wake_fd = -1;
  std::thread thread;
  std::mutex mutex;
  std::map<int, Conn> conns;                      // fd -> state
  std::set<std::pair<Clock::time_point, int>> by_age;  // (since, fd) of conns
  bool stopped = false;
  std::vector<char> peek_buf;

  explicit Gate(HttpServer& s) : server(s) {
    epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (epoll_fd < 0 || wake_fd < 0)
      throw std::runtime_error(std::string("cannot create the connection gate: ") + std::strerror(errno));
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = wake_fd;
    epoll_ctl(epoll_fd, EPOLL_CTL_ADD, wake_fd, &ev);
    peek_buf.resize(server.limits_.max_header_bytes + 8192);
  }
  ~Gate() {
    if (epoll_fd >= 0) ::close(epoll_fd);
    if (wake_fd >= 0) ::close(wake_fd);
  }

  void wake() {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fd, &one, sizeof one);
  }

  // Caller holds mutex.
  void forget(int fd) {
    auto it = conns.find(fd);
    if (it == conns.end()) return;
    by_age.erase({it->second.since, fd});
    conns.erase(it);
    epoll_ctl(epoll_fd, EPOLL_CTL_DEL, fd, nullptr);
  }

  // A new connection (n_served 0) or one back from a worker.
  void add(int fd, size_t n_served) {
    std::unique_lock<std::mutex> lock(mutex);
    if (stopped) {
      lock.unlock();
      server.close_connection(fd);
      return;
    }
    if (n_served == 0 && server.n_open_.load() > server.limits_.max_connections) {
      // Over the cap: the connection that has waited longest without
      // sending a request makes room, else this one goes.
      int victim = fd;
      if (!by_age.empty()) {
        victim = by_age.begin()->second;
        forget(victim);
      }
      lock.unlock();
      server.close_connection(victim);
      if (victim == fd) return;
      lock.lock();
      if (stopped) {
        lock.unlock();
        server.close_connection(fd);
        return;
      }
    }
    const auto now = Clock::now();
    Conn c;
    c.since = now;
    c.n_served = n_served;
    c.keep_alive_idle = n_served > 0;
    c.deadline = now + std::chrono::seconds(n_served > 0 ? server.limits_.keep_alive_timeout_s
                                                         : server.limits_.header_timeout_s);
    conns[fd] = c;
    by_age.insert({now, fd});
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
    ev.data.fd = fd;
    if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) {
      forget(fd);
      lock.unlock();
      server.close_connection(fd);
    }
  }

  void run() {
    std::vector<epoll_event> events(256);
    auto next_sweep = Clock::now();
    for (;;) {
      const int n = epoll_wait(epoll_fd, events.data(), static_cast<int>(events.size()), 250);
      if (n < 0 && errno != EINTR) {
        spdlog::error("connection gate: epoll_wait: {}", std::strerror(errno));
        break;
      }
      std::vector<std::pair<int, size_t>> ready;  // handed to workers
      std::vector<int> to_close;
      {
        std::lock_guard<std::mutex> lock(mutex);
        if (stopped) break;
        for (int i = 0; i < n; ++i) {
          const int fd = events[i].data.fd;
          if (fd == wake_fd) {
            uint64_t v;
            while (::read(wake_fd, &v, sizeof v) > 0) {}
            continue;
          }
          examine(fd, ready, to_close);
        }
        const auto now = Clock::now();
        if (now >= next_sweep) {
          next_sweep = now + std::chrono::milliseconds(250);
          std::vector<int> expired;
          for (auto& [fd, c] : conns)
            if (c.deadline <= now) expired.push_back(fd);
          for (int fd : expired) {
            Conn& c = conns[fd];
            if (c.draining || c.keep_alive_idle || c.n_peeked == 0) {
              forget(fd);  // nothing asked: nothing to answer
              to_close.push_back(fd);
            } else {
              answer(fd, c, 408,
                     c.head_complete
                         ? fmt::format("the request body stalled for {} s", server.limits_.read_timeout_s)
                         : fmt::format("the request headers did not arrive within {} s",
                                       server.limits_.header_timeout_s));
              if (!c.draining) {
                forget(fd);
                to_close.push_back(fd);
              }
            }
          }
        }
      }
      for (int fd : to_close) server.close_connection(fd);
      for (const auto& r : ready) {
        const int fd = r.first;
        const size_t n_served = r.second;
        server.workers_->enqueue([this, fd, n_served] { server.serve_connection(fd, n_served); });
      }
    }
  }

  // Caller holds mutex. Decides what a readable connection needs.
  void examine(int fd, std::vector<std::pair<int, size_t>>& ready, std::vector<int>& to_close) {
    auto it = conns.find(fd);
    if (it == conns.end()) return;
    Conn& c = it->second;
    if (c.draining) {
      char buf[16384];
      for (;;) {
        ssize_t r = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (r > 0) continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        forget(fd);
        to_close.push_back(fd);
        return;
      }
    }
    const ssize_t n = ::recv(fd, peek_buf.data(), peek_buf.size(), MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n <= 0) {  // closed by the client, or an error
      forget(fd);
      to_close.push_back(fd);
      return;
    }
    const auto now = Clock::now();
    if (c.keep_alive_idle) {  // the next request has begun: it gets the header timeout
      c.keep_alive_idle = false;
      c.deadline = now + std::chrono::seconds(server.limits_.header_timeout_s);
    }
    const bool progressed = static_cast<size_t>(n) > c.n_peeked;
    c.n_peeked = static_cast<size_t>(n);
    const std::string_view bytes(peek_buf.data(), static_cast<size_t>(n));
    const PeekedRequest peeked = peek_request(bytes);
    const bool full = static_cast<size_t>(n) >= peek_buf.size();
    if (peeked.headers_end == 0 && !full) return;  // wait for the rest of the headers
    if (peeked.headers_end != 0 && peeked.has_content_length &&
        peeked.content_length > server.limits_.max_body_bytes) {
      answer(fd, c, 413, fmt::format("request body exceeds the limit of {} bytes (Content-Length: {})",
                                     server.limits_.max_body_bytes, peeked.content_length));
      if (!c.draining) {
        forget(fd);
        to_close.push_back(fd);
      }
      return;
    }
    const size_t body_bytes = peeked.headers_end == 0 ? 0 : static_cast<size_t>(n) - peeked.headers_end;
    if (peeked.headers_end != 0 && !peeked.body_complete && !full && body_bytes < kGateBodyBytes) {
      // A small body still on its way: it may stall read_timeout_s at a time,
      // and all of the request must be in within request_timeout_s.
      if (!c.head_complete || progressed) {
        c.head_complete = true;
        c.deadline = std::min(now + std::chrono::seconds(server.limits_.read_timeout_s),
                              c.since + std::chrono::seconds(server.limits_.request_timeout_s));
      }
      return;
    }
    const size_t n_served = c.n_served;
    forget(fd);
    ready.emplace_back(fd, n_served);
  }

  // Answers an error from the gate (408, 413): takes what the client has
  // sent so far, answers, stops sending, and discards what the client still
  // sends for a moment so that the close does not reset the connection
  // before it reads the answer. Without a response maker it leaves `c` as it
  // is (the caller closes).
  void answer(int fd, Conn& c, int status, const std::string& message) {
    if (!server.error_response_) return;
    char buf[16384];
    for (size_t taken = 0; taken < (1u << 20);) {
      ssize_t r = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
      if (r <= 0) break;
      taken += static_cast<size_t>(r);
    }
    const std::string response = server.error_response_(status, message);
    if (::send(fd, response.data(), response.size(), MSG_DONTWAIT | MSG_NOSIGNAL) < 0) return;
    ::shutdown(fd, SHUT_WR);
    c.draining = true;
    c.deadline = Clock::now() + std::chrono::seconds(2);
  }

  void stop() {
    std::vector<int> fds;
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (stopped) return;
      stopped = true;
      for (auto& [fd, c] : conns) fds.push_back(fd);
      for (int fd : fds) forget(fd);
    }
    wake();
    if (thread.joinable()) thread.join();
    for (int fd : fds) server.close_connection(fd);
  }
};

HttpServer::HttpServer() {
  new_task_queue = [] { return new InlineTaskQueue; };
}

HttpServer::~HttpServer() { stop_connections(); }

void HttpServer::set_limits(const ConnectionLimits& limits, ErrorResponse error_response) {
  limits_ = limits;
  if (limits_.max_connections == 0) limits_.max_connections = default_max_connections();
  error_response_ = std::move(error_response);
  set_payload_max_length(limits_.max_body_bytes);
  set_read_timeout(limits_.read_timeout_s, 0);
  set_write_timeout(limits_.write_timeout_s, 0);
  set_keep_alive_timeout(limits_.keep_alive_timeout_s);
  set_keep_alive_max_count(limits_.keep_alive_max_count);
}

void HttpServer::start_connections() {
  stopping_ = false;
  workers_ = std::make_unique<ElasticTaskQueue>(limits_.n_threads);
  gate_ = std::make_unique<Gate>(*this);
  gate_->thread = std::thread([g = gate_.get()] { g->run(); });
}

void HttpServer::stop_connections() {
  stopping_ = true;
  if (gate_) gate_->stop();
  if (workers_) workers_->shutdown();
  workers_.reset();
  gate_.reset();
}

bool HttpServer::process_and_close_socket(socket_t sock) {
  // On httplib's accept thread (InlineTaskQueue): only hand the socket over.
  ++n_open_;
  if (!gate_ || stopping_) {
    close_connection(sock);
    return false;
  }
  gate_->add(sock, 0);
  return true;
}

void HttpServer::close_connection(int fd) {
  ::shutdown(fd, SHUT_RDWR);
  ::close(fd);
  --n_open_;
}

bool HttpServer::serve_one(httplib::Stream& strm, bool close_connection) {
  bool connection_closed = false;
  const bool ok = process_request(strm, close_connection, connection_closed, nullptr);
  return ok && !connection_closed && !close_connection;
}

int HttpServer::current_socket() { return t_current_socket; }

void HttpServer::serve_connection(int fd, size_t n_served) {
  DeadlineStream strm(fd, limits_);
  const bool last = n_served + 1 >= limits_.keep_alive_max_count || stopping_;
  t_current_socket = fd;
  const bool keep = serve_one(strm, last);
  t_current_socket = -1;
  if (keep && !stopping_ && gate_) {
    gate_->add(fd, n_served + 1);
  } else {
    close_connection(fd);
  }
}

}  // namespace pensieve::server
