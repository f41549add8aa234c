// `pensieve serve` started the way systemd starts a socket-activated
// service: the listening socket made (and already holding a client's
// connection) before the process exists, passed as fd 3 with LISTEN_FDS=1
// and LISTEN_PID naming the process. The server answers on that socket (the
// early client included), ignores --port, and stops on SIGTERM with exit 0.
// A wrong hand-over (two sockets, a socket that does not listen) is one
// clear line and exit 1.
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <chrono>
#include <future>
#include <fcntl.h>
#include <string>
#include <thread>
#include <vector>

#include "support/test_support.h"

namespace pensieve {
namespace {

// A TCP socket bound to 127.0.0.1:0; listening when `listen_too`.
int loopback_socket(bool listen_too, int* port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  if (listen_too) {
    EXPECT_EQ(listen(fd, 128), 0);
  }
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  *port = ntohs(addr.sin_port);
  return fd;
}

struct Child {
  pid_t pid = -1;
  test::TempDir dir;
  std::string out() const { return test::read_file(dir.file("out")); }
  std::string err() const { return test::read_file(dir.file("err")); }
};

// pensieve serve ARGS with `fds` as fds 3, 4, ... and systemd's variables
// (LISTEN_PID is the child's own pid, set between fork and exec as systemd
// does).
void start(Child& c, const std::vector<int>& fds, const std::vector<std::string>& args) {
  c.pid = fork();
  ASSERT_GE(c.pid, 0);
  if (c.pid == 0) {
    // Out of the way first: the targets 3, 4, ... may hold other sockets.
    std::vector<int> moved;
    for (int fd : fds) moved.push_back(fcntl(fd, F_DUPFD, 100));
    for (size_t i = 0; i < moved.size(); ++i) dup2(moved[i], 3 + static_cast<int>(i));  // dup2 clears CLOEXEC
    const int out = open(c.dir.file("out").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int err = open(c.dir.file("err").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(out, 1);
    dup2(err, 2);
    setenv("LISTEN_FDS", std::to_string(fds.size()).c_str(), 1);
    setenv("LISTEN_PID", std::to_string(getpid()).c_str(), 1);
    unsetenv("PENSIEVE_API_KEY");
    std::vector<char*> argv{const_cast<char*>(PENSIEVE_BINARY), const_cast<char*>("serve")};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(PENSIEVE_BINARY, argv.data());
    _exit(127);
  }
}

int wait_exit(pid_t pid, int timeout_s) {
  for (int i = 0; i < timeout_s * 100; ++i) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  return -1;
}

TEST(ServeSocketActivation, ServesOnTheSocketSystemdPassed) {
  int port = 0;
  const int listener = loopback_socket(true, &port);
  // A client that connects before the server process exists: its
  // connection waits in the socket's backlog, as with systemd.
  httplib::Client early("127.0.0.1", port);
  early.set_read_timeout(60, 0);
  auto early_health = std::async(std::launch::async, [&] { return early.Get("/health"); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));

  Child c;
  // --port names another port: the passed socket replaces it.
  start(c, {listener}, {"--port", "1"});
  close(listener);  // the server holds its own copy now
  const auto first = early_health.get();
  ASSERT_TRUE(first) << c.err();
  EXPECT_TRUE(first->status == 200 || first->status == 503) << first->status << " " << first->body;

  httplib::Client client("127.0.0.1", port);
  int status = 0;
  for (int i = 0; i < 600 && status != 200; ++i) {
    auto h = client.Get("/health");
    status = h ? h->status : -1;
    if (status != 200) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(status, 200) << c.err();
  auto res = client.Post("/v1/messages",
                         R"({"model":"claude-m","max_tokens":4,"messages":[{"role":"user","content":"hi"}]})",
                         "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200) << res->body;
  const std::string err = c.err();
  EXPECT_NE(err.find("listening on the socket systemd passed (127.0.0.1:" + std::to_string(port) + ")"),
            std::string::npos)
      << err;
  EXPECT_NE(c.out().find("on http://127.0.0.1:" + std::to_string(port)), std::string::npos) << c.out();
  kill(c.pid, SIGTERM);
  EXPECT_EQ(wait_exit(c.pid, 30), 0) << c.err();
}

TEST(ServeSocketActivation, AWrongHandOverIsOneLine) {
  int p1 = 0, p2 = 0;
  const int a = loopback_socket(true, &p1), b = loopback_socket(true, &p2);
  {
    Child c;
    start(c, {a, b}, {});
    EXPECT_EQ(wait_exit(c.pid, 30), 1);
    EXPECT_NE(c.err().find("error: systemd passed 2 sockets"), std::string::npos) << c.err();
  }
  close(a);
  close(b);
  const int bound_only = loopback_socket(false, &p1);
  {
    Child c;
    start(c, {bound_only}, {});
    EXPECT_EQ(wait_exit(c.pid, 30), 1);
    EXPECT_NE(c.err().find("is not a listening TCP socket"), std::string::npos) << c.err();
  }
  close(bound_only);
}

}  // namespace
}  // namespace pensieve
