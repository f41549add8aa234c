#include "server/http_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
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

constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";

// A socket read and written with timeouts; reads also stop at a deadline.
// Unbuffered, so a request is read to its last byte and no further: the
// next one on the connection stays in the socket for the gate.
//
// skip_continue: the gate has dealt with the request's `Expect:
// 100-continue` (it sent the 100 itself, or the body arrived without one),
// so httplib's own 100, the first thing it writes for such a request, is
// dropped: a client sees one 100 at most.
class DeadlineStream : public httplib::Stream {
 public:
  DeadlineStream(int fd, const ConnectionLimits& limits, bool skip_continue)
      : fd_(fd), limits_(limits),
        read_deadline_(Clock::now() + std::chrono::seconds(limits.request_timeout_s)),
        skip_continue_(skip_continue) {}

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
    if (skip_continue_) {
      skip_continue_ = false;
      if (std::string_view(ptr, size) == kContinue) return static_cast<ssize_t>(size);
    }
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
  bool skip_continue_;
};

// Whether the kernel will take no more of this connection's request until
// someone reads it: its receive buffer is full, or it has dropped segments
// since `drops_before` (it could not keep them: the buffer or TCP's memory
// ran out, so the client is sending and cannot get on). Linux offers no
// more window once the buffer's free space falls below 1/16 of it or below
// one segment (tcp_select_window; free space counted in window units, at
// least half the memory it takes); this says full a little before that
// (1/8, two segments), since a request handed to a worker a little early
// costs little and one left waiting for a window that never opens gets a
// 408. Where the socket cannot say, it counts as full (a worker reads it,
// as before the gate waited for bodies).
bool receive_buffer_full(int fd, uint32_t drops_before) {
  uint32_t mem[SK_MEMINFO_VARS] = {};
  socklen_t len = sizeof mem;
  if (::getsockopt(fd, SOL_SOCKET, SO_MEMINFO, mem, &len) != 0 ||
      len < sizeof(uint32_t) * (SK_MEMINFO_DROPS + 1))
    return true;
  if (mem[SK_MEMINFO_DROPS] != drops_before) return true;
  const uint64_t rcvbuf = mem[SK_MEMINFO_RCVBUF];
  const uint64_t used = uint64_t{mem[SK_MEMINFO_RMEM_ALLOC]} + mem[SK_MEMINFO_BACKLOG];
  constexpr uint64_t kMaxSegment = 65535;
  if (used + rcvbuf / 8 + 2 * kMaxSegment < rcvbuf) return false;  // room whatever the segment size
  tcp_info info{};
  socklen_t info_len = sizeof info;
  const uint64_t mss = ::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &info_len) == 0 && info.tcpi_rcv_mss > 0
                           ? std::min<uint64_t>(info.tcpi_rcv_mss, kMaxSegment)
                           : kMaxSegment;
  return used + rcvbuf / 8 + 2 * mss >= rcvbuf;
}

uint32_t receive_drops(int fd) {
  uint32_t mem[SK_MEMINFO_VARS] = {};
  socklen_t len = sizeof mem;
  if (::getsockopt(fd, SOL_SOCKET, SO_MEMINFO, mem, &len) != 0 ||
      len < sizeof(uint32_t) * (SK_MEMINFO_DROPS + 1))
    return 0;
  return mem[SK_MEMINFO_DROPS];
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && iequals_prefix(a, b);
}

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
      // httplib answers only this one expectation (and only spelt in lower
      // case; the gate answers it in any case).
      if (iequals(value, "100-continue")) out.expect_continue = true;
    }
  }
  if (bad_length) {
    out.body_complete = true;  // nothing to wait for: httplib answers it
  } else if (out.chunked) {
    out.body_complete = scan_chunks(bytes, out.headers_end).state != ChunkScan::incomplete;
  } else {
    const std::string_view body = bytes.substr(out.headers_end);
    out.body_complete = !out.has_content_length || body.size() >= out.content_length;
  }
  return out;
}

ChunkScan scan_chunks(std::string_view bytes, size_t at) {
  constexpr size_t kMaxLine = 4096;  // a chunk-size line with room for extensions
  for (;;) {
    const size_t eol = bytes.find("\r\n", at);
    if (eol == std::string_view::npos)
      return {bytes.size() - std::min(at, bytes.size()) > kMaxLine ? ChunkScan::malformed : ChunkScan::incomplete,
              at, bytes.size() + 1};
    if (eol - at > kMaxLine) return {ChunkScan::malformed, at};
    // chunk-size in hex, then nothing, an extension or white space.
    unsigned long long size = 0;
    size_t i = at;
    for (; i < eol && std::isxdigit(static_cast<unsigned char>(bytes[i])); ++i) {
      if (size >> 56) return {ChunkScan::malformed, at};  // no body is that large
      const char c = static_cast<char>(std::tolower(static_cast<unsigned char>(bytes[i])));
      size = size * 16 + static_cast<unsigned>(c <= '9' ? c - '0' : c - 'a' + 10);
    }
    if (i == at || (i < eol && bytes[i] != ';' && bytes[i] != ' ' && bytes[i] != '\t'))
      return {ChunkScan::malformed, at};
    const size_t data = eol + 2;
    if (size == 0) {
      // The last chunk, then the empty line (httplib takes no trailers).
      if (bytes.size() < data + 2) return {ChunkScan::incomplete, at, data + 2};
      return {bytes.compare(data, 2, "\r\n") == 0 ? ChunkScan::complete : ChunkScan::malformed, at};
    }
    if (size > bytes.size() || bytes.size() - data < size + 2) return {ChunkScan::incomplete, at, data + size + 2};
    if (bytes.compare(data + size, 2, "\r\n") != 0) return {ChunkScan::malformed, at};
    at = data + size + 2;
  }
}

// The epoll thread where connections wait for their requests.
struct HttpServer::Gate {
  struct Conn {
    Clock::time_point since;     // entered the gate
    Clock::time_point deadline;  // closed when it passes
    size_t n_served = 0;         // requests answered on this connection
    bool keep_alive_idle = false;  // back after a response, nothing sent yet
    bool head_complete = false;  // headers in, waiting for the body
    size_t n_queued = 0;         // bytes waiting in the socket at the last look
    bool draining = false;       // answered 408/413: discarding what the client still sends
    // Once the headers are in:
    size_t request_bytes = 0;    // headers and Content-Length body
    bool chunked = false;        // the body's end is its last chunk
    ChunkScan chunks;            // how far the chunked body has been followed
    bool expect_continue = false;
    bool continue_sent = false;  // the gate wrote its 100 Continue
    uint32_t drops = 0;          // the socket's dropped segments when the headers came in
  };
  struct Ready {
    int fd;
    size_t n_served;
    bool skip_continue;
  };

  HttpServer& server;
  int epoll_fd = -1;
  int wake_fd = -1;
  std::thread thread;
  std::mutex mutex;
  std::map<int, Conn> conns;                      // fd -> state
  std::set<std::pair<Clock::time_point, int>> by_age;  // (since, fd) of conns
  bool stopped = false;
  size_t header_peek = 0;  // how much a look at the headers peeks
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
    header_peek = server.limits_.max_header_bytes + 8192;
    peek_buf.resize(std::max(header_peek, kGateChunkedBytes));
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
    auto next_recheck = next_sweep;
    for (;;) {
      const int n = epoll_wait(epoll_fd, events.data(), static_cast<int>(events.size()), 250);
      if (n < 0 && errno != EINTR) {
        spdlog::error("connection gate: epoll_wait: {}", std::strerror(errno));
        break;
      }
      std::vector<Ready> ready;  // handed to workers
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
          examine(fd, events[i].events, ready, to_close);
        }
        const auto now = Clock::now();
        if (now >= next_sweep) {
          next_sweep = now + std::chrono::milliseconds(250);
          const bool recheck = now >= next_recheck;
          if (recheck) next_recheck = now + std::chrono::seconds(1);
          std::vector<int> expired, waiting;
          for (auto& [fd, c] : conns) {
            if (c.deadline <= now) {
              expired.push_back(fd);
            } else if (recheck && c.head_complete && !c.draining) {
              waiting.push_back(fd);
            }
          }
          for (int fd : expired) {
            Conn& c = conns[fd];
            if (c.draining || c.keep_alive_idle || c.n_queued == 0) {
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
          // Segments of a body that the kernel dropped (TCP out of memory)
          // wake no one: look at waiting bodies again now and then.
          for (int fd : waiting) {
            auto it = conns.find(fd);
            if (it != conns.end()) look_at_body(fd, it->second, now, false, ready, to_close);
          }
        }
      }
      for (int fd : to_close) server.close_connection(fd);
      for (const Ready& r : ready) {
        server.workers_->enqueue([this, r] { server.serve_connection(r.fd, r.n_served, r.skip_continue); });
      }
    }
  }

  // Caller holds mutex. Decides what a readable connection needs.
  void examine(int fd, uint32_t events, std::vector<Ready>& ready, std::vector<int>& to_close) {
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
    const bool peer_done = events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR);
    if (c.head_complete) {
      look_at_body(fd, c, Clock::now(), peer_done, ready, to_close);
      return;
    }
    const ssize_t n = ::recv(fd, peek_buf.data(), header_peek, MSG_PEEK | MSG_DONTWAIT);
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
    c.n_queued = static_cast<size_t>(n);
    const PeekedRequest peeked = peek_request(std::string_view(peek_buf.data(), static_cast<size_t>(n)));
    if (peeked.headers_end == 0) {
      // Wait for the rest of the headers, unless they already fill the
      // header limit: then a worker answers them (httplib refuses them).
      if (static_cast<size_t>(n) >= header_peek) hand_over(fd, c, ready);
      return;
    }
    if (peeked.has_content_length && peeked.content_length > server.limits_.max_body_bytes) {
      // Before any 100 Continue: the client need not send the body at all.
      answer(fd, c, 413, fmt::format("request body exceeds the limit of {} bytes (Content-Length: {})",
                                     server.limits_.max_body_bytes, peeked.content_length));
      if (!c.draining) {
        forget(fd);
        to_close.push_back(fd);
      }
      return;
    }
    c.head_complete = true;
    c.expect_continue = peeked.expect_continue;
    if (peeked.body_complete) {
      hand_over(fd, c, ready);
      return;
    }
    // A body on its way: it may stall read_timeout_s at a time, and all of
    // the request must be in within request_timeout_s.
    c.chunked = peeked.chunked;
    c.chunks = {ChunkScan::incomplete, peeked.headers_end, peeked.headers_end + 1};
    c.request_bytes = peeked.headers_end + static_cast<size_t>(peeked.content_length);
    c.drops = receive_drops(fd);
    c.n_queued = 0;  // counts as progress: the deadline starts now
    look_at_body(fd, c, now, peer_done, ready, to_close);
  }

  // Caller holds mutex. A connection whose headers are in and whose body
  // is not: hands it over once the body is in the socket, once the socket
  // can hold no more of it, or once the client has stopped sending (shut
  // down or reset: a worker answers what there is, or finds it gone); else
  // waits (and asks for the body of an Expect: 100-continue request).
  void look_at_body(int fd, Conn& c, Clock::time_point now, bool peer_done, std::vector<Ready>& ready,
                    std::vector<int>& to_close) {
    int queued_int = 0;
    if (::ioctl(fd, FIONREAD, &queued_int) != 0) {
      forget(fd);
      to_close.push_back(fd);
      return;
    }
    const size_t queued = static_cast<size_t>(std::max(0, queued_int));
    if (queued > c.n_queued) {
      c.n_queued = queued;
      c.deadline = std::min(now + std::chrono::seconds(server.limits_.read_timeout_s),
                            c.since + std::chrono::seconds(server.limits_.request_timeout_s));
    }
    bool arrived = false;
    if (!c.chunked) {
      arrived = queued >= c.request_bytes;
    } else if (queued >= c.chunks.need) {
      // Something new past where the scan stopped: follow the chunks
      // further, through what the gate looks through.
      if (c.chunks.need > kGateChunkedBytes) {
        arrived = true;  // its end lies past that: a worker reads it
      } else {
        const ssize_t n = ::recv(fd, peek_buf.data(), std::min(queued, kGateChunkedBytes), MSG_PEEK | MSG_DONTWAIT);
        if (n > 0) {
          c.chunks = scan_chunks(std::string_view(peek_buf.data(), static_cast<size_t>(n)), c.chunks.at);
          arrived = c.chunks.state != ChunkScan::incomplete || c.chunks.need > kGateChunkedBytes;
        }
      }
    }
    if (arrived || peer_done || receive_buffer_full(fd, c.drops)) {
      hand_over(fd, c, ready);
      return;
    }
    if (c.expect_continue && !c.continue_sent) {
      c.continue_sent = true;
      const ssize_t n = ::send(fd, kContinue.data(), kContinue.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n != static_cast<ssize_t>(kContinue.size())) {  // an empty send buffer takes it whole
        forget(fd);
        to_close.push_back(fd);
      }
    }
  }

  // Caller holds mutex.
  void hand_over(int fd, Conn& c, std::vector<Ready>& ready) {
    // Headers in with Expect: 100-continue: the 100 was sent here, or the
    // body came (or fills the socket) without one.
    const Ready r{fd, c.n_served, c.head_complete && c.expect_continue};
    forget(fd);
    ready.push_back(r);
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

int HttpServer::receive_buffer_bytes() const {
  const size_t request = limits_.max_header_bytes + limits_.max_body_bytes + (64u << 10);
  return static_cast<int>(std::min<size_t>(request, INT_MAX / 2));
}

bool HttpServer::process_and_close_socket(socket_t sock) {
  // On httplib's accept thread (InlineTaskQueue): only hand the socket over.
  ++n_open_;
  if (!gate_ || stopping_) {
    close_connection(sock);
    return false;
  }
  // Room for a whole request in the socket, so that it can wait in the gate
  // (usually inherited from the listening socket already, ListenSocket).
  const int rcvbuf = receive_buffer_bytes();
  ::setsockopt(sock, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  gate_->add(sock, 0);
  return true;
}

void HttpServer::accept_on(int fd) {
  stop_accepting_ = false;
  accepting_ = true;
  while (!stop_accepting_) {
    // Woken at least every 100 ms to see stop_accepting().
    pollfd p{fd, POLLIN, 0};
    const int n = ::poll(&p, 1, 100);
    if (n < 0 && errno != EINTR) {
      spdlog::error("the inherited listening socket failed: {}", std::strerror(errno));
      break;
    }
    if (n <= 0 || stop_accepting_) continue;
    const int sock = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (sock < 0) {
      // Out of descriptors: the connection waits in the backlog meanwhile.
      if (errno == EMFILE || errno == ENFILE) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      continue;
    }
    int yes = 1;  // as set_tcp_nodelay(true) does for httplib's loop (fails harmlessly off TCP)
    ::setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof yes);
    process_and_close_socket(sock);
  }
  accepting_ = false;
}

void HttpServer::stop_accepting() { stop_accepting_ = true; }

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

void HttpServer::serve_connection(int fd, size_t n_served, bool skip_continue) {
  DeadlineStream strm(fd, limits_, skip_continue);
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
