// Hostile and broken clients against the real `pensieve serve` (the bundled
// model): slow and stalled senders (small, large and chunked bodies, and
// Expect: 100-continue), absurd lengths, piles of idle connections,
// malformed JSON, wrong keys, broken model folders
// (docs/reliability.md, "Hostile clients").
//
// No test waits for time to pass: the server's timeouts are set far beyond
// the test's own deadlines where a test shows that others are still served
// (so the hostile connections are all still there while it checks), and a
// test that needs a timeout to fire polls for its effect with a deadline.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "support/test_support.h"
#include "support/wait_until.h"

namespace pensieve {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

int connect_to(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  timeval tv{30, 0};  // no read in these tests waits longer
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

bool send_all(int fd, const std::string& bytes) {
  size_t sent = 0;
  while (sent < bytes.size()) {
    ssize_t n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return true;
}

// What the server sends until it closes (or 30 s pass).
std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) out.append(buf, static_cast<size_t>(n));
  return out;
}

// What the server sends up to the end of one response's headers (a 100
// Continue, say), and no further.
std::string read_head(int fd) {
  std::string out;
  char c;
  while (out.size() < 65536 && (out.size() < 4 || out.compare(out.size() - 4, 4, "\r\n\r\n") != 0)) {
    if (::recv(fd, &c, 1, 0) != 1) break;
    out += c;
  }
  return out;
}

const std::string kContinue = "HTTP/1.1 100 Continue\r\n\r\n";

// A POST's request line and headers for a body of `length` bytes.
std::string post_head(const std::string& path, size_t length, const std::string& more = "") {
  return "POST " + path + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
         std::to_string(length) + "\r\n" + more + "\r\n";
}

// A valid count_tokens request, padded with JSON white space to `size`
// bytes (Claude Code's requests are 50-200 KB).
std::string count_tokens_body(size_t size = 0) {
  const std::string rest = R"("model":"claude-m","messages":[{"role":"user","content":"Once upon a time"}]})";
  return "{" + std::string(size > rest.size() + 1 ? size - rest.size() - 1 : 0, ' ') + rest;
}

// `body` as chunks of `chunk` bytes, without the last chunk.
std::string chunks_of(const std::string& body, size_t chunk) {
  std::string out;
  for (size_t at = 0; at < body.size(); at += chunk) {
    const std::string part = body.substr(at, chunk);
    char size[32];
    std::snprintf(size, sizeof size, "%zx\r\n", part.size());
    out += size + part + "\r\n";
  }
  return out;
}

// input_tokens of a whole HTTP/1.1 200 response, or -1.
int64_t input_tokens(const std::string& response) {
  if (response.rfind("HTTP/1.1 200", 0) != 0) return -1;
  const size_t body = response.find("\r\n\r\n");
  json j = json::parse(response.substr(body + 4), nullptr, false);
  return j.is_object() && j.contains("input_tokens") ? j["input_tokens"].get<int64_t>() : -1;
}

int64_t rss_kib(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6));
  return -1;
}

std::unique_ptr<httplib::Client> client(int port) {
  auto c = std::make_unique<httplib::Client>("127.0.0.1", port);
  c->set_connection_timeout(30);
  c->set_read_timeout(30);
  c->set_write_timeout(30);
  return c;
}

const std::string kHello = R"({"model":"claude-m","max_tokens":4,"messages":[{"role":"user","content":"Once"}]})";

// The server answers an ordinary client: /health and a generation, each
// within the client's 30 s (an answer takes well under a second here).
void expect_served(int port, const std::string& what) {
  auto c = client(port);
  auto health = c->Get("/health");
  ASSERT_TRUE(health) << what << ": /health got no answer (" << httplib::to_string(health.error()) << ")";
  EXPECT_EQ(health->status, 200) << what;
  auto res = c->Post("/v1/messages", kHello, "application/json");
  ASSERT_TRUE(res) << what << ": /v1/messages got no answer (" << httplib::to_string(res.error()) << ")";
  EXPECT_EQ(res->status, 200) << what << ": " << res->body;
  EXPECT_EQ(json::parse(res->body)["type"], "message") << what;
}

json health(int port) {
  auto res = client(port)->Get("/health");
  return res && res->status == 200 ? json::parse(res->body) : json::object();  // {} when it got no answer
}

class HostileClients : public ::testing::Test {
 protected:
  void start(std::vector<std::string> args) {
    args.insert(args.begin(), {"--port", "0", "--threads", "1"});
    serve = std::make_unique<test::ServeProcess>(args);
    ASSERT_TRUE(serve->wait_ready()) << serve->err();
  }
  void TearDown() override {
    for (int fd : fds) ::close(fd);
    if (serve) {
      EXPECT_EQ(serve->stop(), 0) << serve->err();
    }
  }
  int open_connection() {
    int fd = connect_to(serve->port());
    if (fd >= 0) fds.push_back(fd);
    return fd;
  }

  std::unique_ptr<test::ServeProcess> serve;
  std::vector<int> fds;
};

// 300 connections each sending its headers a byte at a time, forever: the
// server (8 request threads, a header timeout far past the test) still
// answers others. Before the connection gate, those connections held every
// HTTP thread and a normal request timed out.
TEST_F(HostileClients, SlowlorisDoesNotStarveOtherClients) {
  start({"--http-threads", "8", "--header-timeout", "600"});
  const int64_t rss_before = rss_kib(serve->pid());
  std::vector<int> slow;
  for (int i = 0; i < 300; ++i) {
    int fd = open_connection();
    ASSERT_GE(fd, 0) << "connection " << i;
    ASSERT_TRUE(send_all(fd, "POST /v1/messages HTTP/1.1\r\nHost: x\r\nX-Slow: "));
    slow.push_back(fd);
  }
  std::atomic<bool> done{false};
  std::thread trickle([&] {
    while (!done) {
      for (int fd : slow) ::send(fd, "a", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  ASSERT_TRUE(test::wait_until([&] { return health(serve->port()).value("n_connections", 0) >= 300; }))
      << "the server does not hold the 300 slow connections";
  expect_served(serve->port(), "with 300 slowloris connections");
  done = true;
  trickle.join();
  EXPECT_LT(rss_kib(serve->pid()) - rss_before, 64 * 1024) << "RSS grew";
}

// A client that never finishes its headers gets a 408 after --header-timeout
// and the connection is closed.
TEST_F(HostileClients, HeaderTimeoutAnswers408AndCloses) {
  start({"--header-timeout", "1"});
  int fd = open_connection();
  ASSERT_GE(fd, 0);
  std::string response;
  std::atomic<bool> closed{false};
  std::thread reader([&] {
    response = read_all(fd);
    closed = true;
  });
  ASSERT_TRUE(send_all(fd, "GET /health HTTP/1.1\r\nHost: x\r\n"));
  // Keep trickling: the timeout counts from the start, not from the last byte.
  EXPECT_TRUE(test::wait_until([&] {
    ::send(fd, "X", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    return closed.load();
  }));
  reader.join();
  EXPECT_EQ(response.rfind("HTTP/1.1 408", 0), 0u) << response;
  EXPECT_NE(response.find("did not arrive within 1 s"), std::string::npos) << response;
  expect_served(serve->port(), "after a header timeout");
}

// 100 bodies that stop half way (far more than the 4 request threads), and
// the server's read timeout far past the test: others are still served
// at once, and each stalled body gets its 408 once the read timeout passes
// (shown here with a second server whose timeout is 1 s).
TEST_F(HostileClients, BodiesThatStopHalfWayDoNotStarveOthers) {
  start({"--http-threads", "4", "--read-timeout", "600"});
  for (int i = 0; i < 100; ++i) {
    int fd = open_connection();
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(send_all(fd, "POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             "Content-Length: 1000\r\n\r\n{\"model\": \"m\", "));
  }
  ASSERT_TRUE(test::wait_until([&] { return health(serve->port()).value("n_connections", 0) >= 100; }));
  expect_served(serve->port(), "with 100 half-sent bodies");
}

TEST_F(HostileClients, StalledBodyGets408AfterTheReadTimeout) {
  start({"--read-timeout", "1"});
  int fd = open_connection();
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(send_all(fd, "POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"mo"));
  const std::string response = read_all(fd);  // the server closes it; 30 s is the test's bound
  EXPECT_EQ(response.rfind("HTTP/1.1 408", 0), 0u) << response;
  EXPECT_NE(response.find("\"type\":\"error\""), std::string::npos) << response;
  EXPECT_NE(response.find("stalled"), std::string::npos) << response;
}

// Requests of Claude Code's size (300 KB) that stop after 100 KB, more of
// them than request threads, the read timeout far past the test: their
// bodies wait in the gate (the socket's receive queue), not in a worker, so
// others are served. Before, a body over 16 KiB went to a worker at once,
// and these held both threads until the read timeout.
TEST_F(HostileClients, LargeBodiesThatStallHoldNoWorker) {
  start({"--http-threads", "2", "--read-timeout", "600"});
  const std::string part = count_tokens_body(300'000).substr(0, 100'000);
  for (int i = 0; i < 8; ++i) {
    int fd = open_connection();
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(send_all(fd, post_head("/v1/messages/count_tokens", 300'000) + part));
  }
  ASSERT_TRUE(test::wait_until([&] { return health(serve->port()).value("n_connections", 0) >= 8; }));
  expect_served(serve->port(), "with 8 large bodies stalled after 100 KB");
}

// The same with chunked bodies: 100 KB of chunks and no last chunk.
TEST_F(HostileClients, ChunkedBodiesThatStallHoldNoWorker) {
  start({"--http-threads", "2", "--read-timeout", "600"});
  const std::string part = chunks_of(count_tokens_body(100'000), 10'000);
  for (int i = 0; i < 8; ++i) {
    int fd = open_connection();
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(send_all(fd, "POST /v1/messages/count_tokens HTTP/1.1\r\nHost: x\r\n"
                             "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" +
                                 part));
  }
  ASSERT_TRUE(test::wait_until([&] { return health(serve->port()).value("n_connections", 0) >= 8; }));
  expect_served(serve->port(), "with 8 chunked bodies stalled after 100 KB");
}

// Stalled large bodies, more than request threads, each get their 408 from
// the gate once the read timeout passes.
TEST_F(HostileClients, StalledLargeBodiesGet408AfterTheReadTimeout) {
  start({"--http-threads", "1", "--read-timeout", "1"});
  const std::string part = count_tokens_body(300'000).substr(0, 100'000);
  std::vector<int> stalled;
  for (int i = 0; i < 3; ++i) {
    int fd = open_connection();
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(send_all(fd, post_head("/v1/messages/count_tokens", 300'000) + part));
    stalled.push_back(fd);
  }
  for (int fd : stalled) {
    const std::string response = read_all(fd);  // the server closes it; 30 s is the test's bound
    EXPECT_EQ(response.rfind("HTTP/1.1 408", 0), 0u) << response.substr(0, 300);
    EXPECT_NE(response.find("the request body stalled for 1 s"), std::string::npos) << response.substr(0, 300);
  }
}

// A 300 KB request is answered as a small one is: sent whole, sent in two
// parts, and chunked (100 KB within what the gate follows, 300 KB past it).
TEST_F(HostileClients, LargeBodiesAreAnswered) {
  start({});
  auto small = client(serve->port())->Post("/v1/messages/count_tokens", count_tokens_body(), "application/json");
  ASSERT_TRUE(small);
  ASSERT_EQ(small->status, 200) << small->body;
  const int64_t expected = json::parse(small->body)["input_tokens"];
  const std::string body = count_tokens_body(300'000);
  ASSERT_EQ(body.size(), 300'000u);

  auto res = client(serve->port())->Post("/v1/messages/count_tokens", body, "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(json::parse(res->body)["input_tokens"], expected);

  int fd = open_connection();
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(send_all(fd, post_head("/v1/messages/count_tokens", body.size(), "Connection: close\r\n") +
                               body.substr(0, 100'000)));
  ASSERT_TRUE(send_all(fd, body.substr(100'000)));
  EXPECT_EQ(input_tokens(read_all(fd)), expected) << "sent in two parts";

  for (size_t size : {100'000, 300'000}) {
    fd = open_connection();
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(send_all(fd, "POST /v1/messages/count_tokens HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                             "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" +
                                 chunks_of(count_tokens_body(size), 16'000) + "0\r\n\r\n"));
    EXPECT_EQ(input_tokens(read_all(fd)), expected) << "chunked, " << size << " bytes";
  }
}

// A body larger than the connection's receive buffer can hold (twice
// net.core.rmem_max, the most the kernel grants) cannot wait in the gate
// whole: once the buffer is full the gate hands it to a worker, which reads
// the rest. Had the gate waited for it, the client would stall on a closed
// window and get a 408 after the read timeout.
TEST_F(HostileClients, BodyLargerThanTheReceiveBufferIsAnswered) {
  std::ifstream in("/proc/sys/net/core/rmem_max");
  size_t rmem_max = 0;
  if (!(in >> rmem_max)) GTEST_SKIP() << "no /proc/sys/net/core/rmem_max";
  if (rmem_max > (64u << 20)) GTEST_SKIP() << "net.core.rmem_max is " << rmem_max << ": the body would be too large";
  const size_t size = 2 * rmem_max + (1u << 20);
  start({"--max-body-mb", std::to_string(size / (1u << 20) + 1)});
  auto small = client(serve->port())->Post("/v1/messages/count_tokens", count_tokens_body(), "application/json");
  ASSERT_TRUE(small);
  const int64_t expected = json::parse(small->body)["input_tokens"];
  int fd = open_connection();
  ASSERT_GE(fd, 0);
  const std::string body = count_tokens_body(size);
  std::string response;
  std::thread reader([&] { response = read_all(fd); });
  EXPECT_TRUE(send_all(fd, post_head("/v1/messages/count_tokens", size, "Connection: close\r\n") + body));
  reader.join();
  EXPECT_EQ(input_tokens(response), expected) << size << " bytes: " << response.substr(0, 300);
}

// Expect: 100-continue: one 100 Continue (the gate's; httplib's own is not
// sent again), then the body, then the answer.
TEST_F(HostileClients, ExpectContinueGetsOne100ThenTheAnswer) {
  start({});
  auto small = client(serve->port())->Post("/v1/messages/count_tokens", count_tokens_body(), "application/json");
  ASSERT_TRUE(small);
  const int64_t expected = json::parse(small->body)["input_tokens"];
  for (size_t size : {0, 300'000}) {
    const std::string body = count_tokens_body(size);
    int fd = open_connection();
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(send_all(fd, post_head("/v1/messages/count_tokens", body.size(),
                                       "Expect: 100-continue\r\nConnection: close\r\n")));
    EXPECT_EQ(read_head(fd), kContinue) << size << " bytes";
    ASSERT_TRUE(send_all(fd, body));
    const std::string response = read_all(fd);
    EXPECT_EQ(input_tokens(response), expected) << size << " bytes: " << response.substr(0, 300);
    EXPECT_EQ(response.find("100 Continue"), std::string::npos) << "a second 100: " << response.substr(0, 300);
  }
  // The body sent without waiting for the 100: no 100 at all.
  int fd = open_connection();
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(send_all(fd, post_head("/v1/messages/count_tokens", count_tokens_body().size(),
                                     "Expect: 100-continue\r\nConnection: close\r\n") +
                               count_tokens_body()));
  const std::string response = read_all(fd);
  EXPECT_EQ(input_tokens(response), expected) << response.substr(0, 300);
}

// A Content-Length over the body limit gets its 413 and no 100: the client
// need not send the body at all.
TEST_F(HostileClients, ExpectContinueOverTheBodyLimitIs413Without100) {
  start({"--max-body-mb", "1"});
  int fd = open_connection();
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(send_all(fd, post_head("/v1/messages", 2u << 20, "Expect: 100-continue\r\n")));
  const std::string response = read_all(fd);
  EXPECT_EQ(response.rfind("HTTP/1.1 413", 0), 0u) << response;
  EXPECT_EQ(response.find("100 Continue"), std::string::npos) << response;
  EXPECT_NE(response.find("\"request_too_large\""), std::string::npos) << response;
}

// A client that asks for the 100 and then never sends its body gets its 408
// after the read timeout ...
TEST_F(HostileClients, ExpectContinueWithoutTheBodyGets408) {
  start({"--read-timeout", "1"});
  int fd = open_connection();
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(send_all(fd, post_head("/v1/messages", 1000, "Expect: 100-continue\r\n")));
  const std::string response = read_all(fd);
  ASSERT_EQ(response.rfind(kContinue, 0), 0u) << response;
  EXPECT_EQ(response.compare(kContinue.size(), 12, "HTTP/1.1 408"), 0) << response;
  EXPECT_NE(response.find("the request body stalled for 1 s"), std::string::npos) << response;
}

// ... and, with the read timeout far past the test, holds no worker while
// it waits: more such clients than request threads (each has its 100, so
// each is waiting for its body), and others are still served. Before, such
// a request went to a worker, which sent the 100 and waited for the body.
TEST_F(HostileClients, ExpectContinueClientsThatNeverSendTheirBodyHoldNoWorker) {
  start({"--http-threads", "2", "--read-timeout", "600"});
  for (int i = 0; i < 8; ++i) {
    int fd = open_connection();
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(send_all(fd, post_head("/v1/messages", 300'000, "Expect: 100-continue\r\n")));
    ASSERT_EQ(read_head(fd), kContinue) << "client " << i;
  }
  expect_served(serve->port(), "with 8 clients that never send the body after their 100");
}

// A 2 GB Content-Length is refused from the headers (413, the Anthropic
// envelope), without reading the body, even while the client keeps sending
// it; memory stays flat.
TEST_F(HostileClients, TwoGigabyteContentLengthIs413WithoutReadingTheBody) {
  start({});
  const int64_t rss_before = rss_kib(serve->pid());
  int fd = open_connection();
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(send_all(fd, "POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           "Content-Length: 2147483648\r\n\r\n{\"model\":"));
  std::string response = read_all(fd);
  EXPECT_EQ(response.rfind("HTTP/1.1 413", 0), 0u) << response;
  EXPECT_NE(response.find("\"request_too_large\""), std::string::npos) << response;
  EXPECT_NE(response.find("2147483648"), std::string::npos) << response;

  // Another one that sends 64 MiB of its body as fast as it can: the server
  // answers and drops it; it never holds the body.
  int fd2 = open_connection();
  ASSERT_GE(fd2, 0);
  ASSERT_TRUE(send_all(fd2, "POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 2147483648\r\n\r\n"));
  const std::string chunk(1 << 20, 'x');
  for (int i = 0; i < 64 && send_all(fd2, chunk); ++i) {
  }
  EXPECT_LT(rss_kib(serve->pid()) - rss_before, 32 * 1024) << "RSS grew";
  expect_served(serve->port(), "after 2 GB Content-Lengths");
}

// 10,000 connections that send nothing: the server holds them (a file
// descriptor each, no thread) and answers others; its memory stays bounded.
TEST_F(HostileClients, TenThousandIdleConnections) {
  constexpr int kIdle = 10000;
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < kIdle + 200) {
    rl.rlim_cur = std::min<rlim_t>(rl.rlim_max, kIdle + 200);
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
  }
  if (rl.rlim_cur < kIdle + 200)
    GTEST_SKIP() << "the open-file limit (hard " << rl.rlim_max << ") is below the " << kIdle + 200
                 << " descriptors this test needs; raise it with ulimit -Hn";
  start({"--header-timeout", "600"});
  const int64_t rss_before = rss_kib(serve->pid());
  for (int i = 0; i < kIdle; ++i) ASSERT_GE(open_connection(), 0) << "connection " << i << ": " << std::strerror(errno);
  ASSERT_TRUE(test::wait_until([&] { return health(serve->port()).value("n_connections", 0) >= kIdle; }))
      << health(serve->port()).dump();
  expect_served(serve->port(), "with 10,000 idle connections");
  const int64_t grown = rss_kib(serve->pid()) - rss_before;
  EXPECT_LT(grown, 64 * 1024) << "RSS grew by " << grown << " KiB for " << kIdle << " connections";
}

// Past --max-connections the connection that waited longest without a
// request makes room: a new client is served, the count stays at the cap.
TEST_F(HostileClients, ConnectionCapClosesTheLongestIdle) {
  start({"--max-connections", "50", "--header-timeout", "600"});
  for (int i = 0; i < 200; ++i) ASSERT_GE(open_connection(), 0);
  expect_served(serve->port(), "past the connection cap");
  EXPECT_LE(health(serve->port()).value("n_connections", 1000), 51);
  // The first connections were closed by the server.
  char c;
  EXPECT_EQ(::recv(fds.front(), &c, 1, 0), 0);
}

struct BadBody {
  std::string name, body, field, says;
};

// Malformed JSON: a 400 invalid_request_error naming the field, never a 500
// or a crash; the same on count_tokens.
TEST_F(HostileClients, MalformedJsonIs400NamingTheField) {
  start({});
  std::string deep = "\"x\"";
  for (int i = 0; i < 100; ++i) deep = "[" + deep + "]";
  const std::string head = R"({"model":"claude-m","max_tokens":5,"messages":[{"role":"user","content":)";
  const std::vector<BadBody> cases = {
      {"malformed UTF-8", head + "\"ab\xff\xfe\"}]}", "messages.0.content", "UTF-8"},
      {"overlong UTF-8", head + "\"\xc0\xaf\"}]}", "messages.0.content", "UTF-8"},
      {"lone high surrogate", head + R"("a\ud800b"}]})", "messages.0.content", "surrogate"},
      {"lone low surrogate", head + R"("\udc00"}]})", "messages.0.content", "surrogate"},
      {"100-deep content", head + deep + "}]}", "messages.0.content", "nested deeper than 64"},
      {"1e999 max_tokens", R"({"model":"claude-m","max_tokens":1e999,"messages":[]})", "max_tokens", "out of range"},
      {"huge integer", R"({"model":"claude-m","max_tokens":123456789012345678901234567890,"messages":[{"role":"user","content":"a"}]})",
       "max_tokens", "out of range"},
      {"huge temperature", R"({"model":"claude-m","max_tokens":5,"temperature":1e308,"messages":[{"role":"user","content":"a"}]})",
       "temperature", "between"},
      {"NaN", R"({"model":"claude-m","max_tokens":5,"temperature":NaN,"messages":[]})", "temperature", "not valid JSON"},
      {"Infinity", R"({"model":"claude-m","max_tokens":Infinity,"messages":[]})", "max_tokens", "not valid JSON"},
      {"-Infinity", R"({"model":"claude-m","max_tokens":5,"top_p":-Infinity,"messages":[]})", "top_p", "not valid JSON"},
      {"duplicate key", R"({"model":"claude-m","max_tokens":5,"max_tokens":6,"messages":[{"role":"user","content":"a"}]})",
       "max_tokens", "duplicate key"},
      {"nested duplicate key", head + R"("a","role":"assistant"}]})", "messages.0.role", "duplicate key"},
  };
  auto c = client(serve->port());
  for (const char* path : {"/v1/messages", "/v1/messages/count_tokens"}) {
    for (const BadBody& b : cases) {
      auto res = c->Post(path, b.body, "application/json");
      ASSERT_TRUE(res) << b.name << " on " << path << ": no answer (the server died?)";
      EXPECT_EQ(res->status, 400) << b.name << " on " << path << ": " << res->body;
      json j = json::parse(res->body, nullptr, false);
      ASSERT_FALSE(j.is_discarded()) << b.name << ": " << res->body;
      EXPECT_EQ(j["error"]["type"], "invalid_request_error") << b.name;
      const std::string message = j["error"]["message"];
      // The path of the field, or (too deep) of a value inside it.
      EXPECT_EQ(message.rfind(b.field, 0), 0u) << b.name << " on " << path << ": " << message;
      EXPECT_TRUE(message.size() > b.field.size() &&
                  (message[b.field.size()] == ':' || message[b.field.size()] == '.'))
          << b.name << " on " << path << ": " << message;
      EXPECT_NE(message.find(b.says), std::string::npos) << b.name << " on " << path << ": " << message;
    }
  }
  expect_served(serve->port(), "after the malformed bodies");
}

// With --api-key: a wrong key, no key, a prefix of the key and the key with
// more after it are all 401 authentication_error, on every authenticated
// route; the key itself passes (x-api-key or Bearer).
TEST_F(HostileClients, WrongMissingAndPrefixKeysAre401) {
  const std::string key = "sk-test-0123456789abcdef";
  start({"--api-key", key});
  auto c = client(serve->port());
  struct Try {
    std::string name;
    httplib::Headers headers;
  };
  const std::vector<Try> bad = {
      {"wrong", {{"x-api-key", "sk-test-fedcba9876543210"}}},
      {"missing", {}},
      {"empty", {{"x-api-key", ""}}},
      {"prefix", {{"x-api-key", key.substr(0, key.size() - 1)}}},
      {"one character", {{"x-api-key", key.substr(0, 1)}}},
      {"longer", {{"x-api-key", key + "0"}}},
      {"bearer prefix", {{"Authorization", "Bearer " + key.substr(0, 10)}}},
      {"not bearer", {{"Authorization", "Basic " + key}}},
  };
  for (const Try& t : bad) {
    for (const std::string route : {"/v1/messages", "/v1/messages/count_tokens", "/v1/models"}) {
      auto res = route == "/v1/models" ? c->Get(route, t.headers)
                                       : c->Post(route, t.headers, kHello, "application/json");
      ASSERT_TRUE(res) << t.name;
      EXPECT_EQ(res->status, 401) << t.name << " " << route << ": " << res->body;
      EXPECT_EQ(json::parse(res->body)["error"]["type"], "authentication_error") << t.name;
    }
  }
  EXPECT_EQ(c->Post("/v1/messages", {{"x-api-key", key}}, kHello, "application/json")->status, 200);
  EXPECT_EQ(c->Post("/v1/messages", {{"Authorization", "Bearer " + key}}, kHello, "application/json")->status,
            200);
  EXPECT_EQ(c->Get("/health")->status, 200);  // health needs no key
}

// Without a key the server will not listen beyond loopback unless told so:
// it refuses before loading anything, one line naming the way out.
TEST(ServeWithoutKey, RefusesANonLoopbackAddressUnlessAllowed) {
  const char* old = std::getenv("PENSIEVE_API_KEY");
  ASSERT_EQ(old, nullptr) << "unset PENSIEVE_API_KEY to run this test";
  auto refused = test::run_pensieve("serve --host 0.0.0.0 --port 0");
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("refusing to listen on 0.0.0.0 without an API key"), std::string::npos)
      << refused.err;
  EXPECT_NE(refused.err.find("--allow-no-key"), std::string::npos) << refused.err;

  test::ServeProcess allowed({"--host", "0.0.0.0", "--port", "0", "--allow-no-key", "--threads", "1"});
  ASSERT_TRUE(allowed.wait_ready()) << allowed.err();
  expect_served(allowed.port(), "--allow-no-key");
  EXPECT_EQ(allowed.stop(), 0);
}

// `serve` on a broken model folder: exit code non-zero, one line naming the
// file and what is wrong, no crash (a signal would be exit code >= 128).
class BrokenModel : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = tmp.path() + "/model";
    fs::copy(test::data_path("../../models/stories260K"), dir, fs::copy_options::recursive);
  }
  // Runs serve; it must exit (not serve) with an error line.
  std::string serve_error() {
    test::ServeProcess serve({"--model", dir, "--port", "0", "--threads", "1"});
    const bool served = serve.wait_ready(120);
    const int code = serve.stop();
    EXPECT_FALSE(served) << "served a broken model";
    EXPECT_GT(code, 0);
    EXPECT_LT(code, 128) << "crashed: " << serve.err();
    std::string err = serve.err();
    // The error is one line (the last one), after the log.
    while (!err.empty() && err.back() == '\n') err.pop_back();
    const size_t nl = err.rfind('\n');
    return nl == std::string::npos ? err : err.substr(nl + 1);
  }

  test::TempDir tmp;
  std::string dir;
};

TEST_F(BrokenModel, TruncatedSafetensors) {
  fs::resize_file(dir + "/model.safetensors", fs::file_size(dir + "/model.safetensors") / 2);
  const std::string line = serve_error();
  EXPECT_NE(line.find("model.safetensors"), std::string::npos) << line;
  EXPECT_NE(line.find("error"), std::string::npos) << line;
}

TEST_F(BrokenModel, SafetensorsHeaderTruncated) {
  fs::resize_file(dir + "/model.safetensors", 100);
  const std::string line = serve_error();
  EXPECT_NE(line.find("model.safetensors"), std::string::npos) << line;
}

TEST_F(BrokenModel, ConfigLiesAboutShapes) {
  json config = test::read_json(dir + "/config.json");
  config["hidden_size"] = config["hidden_size"].get<int>() * 2;
  test::write_file(dir + "/config.json", config.dump());
  const std::string line = serve_error();
  EXPECT_NE(line.find("shape"), std::string::npos) << line;
  EXPECT_NE(line.find("config.json"), std::string::npos) << line;
}

TEST_F(BrokenModel, ConfigLiesAboutLayers) {
  json config = test::read_json(dir + "/config.json");
  config["num_hidden_layers"] = config["num_hidden_layers"].get<int>() + 3;
  test::write_file(dir + "/config.json", config.dump());
  const std::string line = serve_error();
  EXPECT_NE(line.find("config.json"), std::string::npos) << line;
}

TEST_F(BrokenModel, ConfigIsNotJson) {
  test::write_file(dir + "/config.json", "{\"hidden_size\": 64,");
  const std::string line = serve_error();
  EXPECT_NE(line.find("config.json"), std::string::npos) << line;
}

TEST_F(BrokenModel, TokenizerOfAnotherModel) {
  fs::remove(dir + "/tokenizer.json");
  fs::copy_file(test::data_path("tokenizers/qwen3/tokenizer.json.gz"), dir + "/tokenizer.json.gz");
  const std::string line = serve_error();
  EXPECT_NE(line.find("tokenizer.json"), std::string::npos) << line;
  EXPECT_NE(line.find("vocab"), std::string::npos) << line;
}

}  // namespace
}  // namespace pensieve
