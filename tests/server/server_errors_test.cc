// What an error answer tells the client and the log: `x-should-retry: false`
// on the errors retrying cannot fix (Anthropic's SDKs, and so Claude Code,
// obey it: without it a wrong key is retried for minutes), one info line
// per error with its request id and the reason, and status lines with
// their proper reason phrase (529 Overloaded).
#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mutex>

#include <spdlog/sinks/base_sink.h>

#include "core/log.h"
#include "server/api_error.h"
#include "server_fixture.h"

namespace pensieve::server::test {
namespace {

// Collects what the default logger writes while alive.
class LogCapture {
 public:
  LogCapture() : previous_(spdlog::default_logger()) {
    sink_ = std::make_shared<Sink>();
    auto logger = std::make_shared<spdlog::logger>("capture", sink_);
    logger->set_level(spdlog::level::info);
    spdlog::set_default_logger(logger);
  }
  ~LogCapture() { spdlog::set_default_logger(previous_); }
  // Lines at info or above that contain `text`, as "LEVEL message".
  std::vector<std::string> lines_with(const std::string& text) const {
    std::lock_guard<std::mutex> lock(sink_->lines_mutex);
    std::vector<std::string> out;
    for (const auto& l : sink_->lines)
      if (l.find(text) != std::string::npos) out.push_back(l);
    return out;
  }

 private:
  struct Sink : spdlog::sinks::base_sink<std::mutex> {
    std::mutex lines_mutex;
    std::vector<std::string> lines;
    void sink_it_(const spdlog::details::log_msg& msg) override {
      std::lock_guard<std::mutex> lock(lines_mutex);
      lines.push_back(std::string(spdlog::level::to_string_view(msg.level).data()) + " " +
                      std::string(msg.payload.data(), msg.payload.size()));
    }
    void flush_() override {}
  };
  std::shared_ptr<spdlog::logger> previous_;
  std::shared_ptr<Sink> sink_;
};

// The status line and headers of one raw exchange.
std::string raw_exchange(int port, const std::string& request) {
  const int fd = connect_raw(port);
  send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string out;
  char buf[4096];
  for (ssize_t n; out.find("\r\n\r\n") == std::string::npos && (n = recv(fd, buf, sizeof buf, 0)) > 0;)
    out.append(buf, n);
  close(fd);
  return out.substr(0, out.find("\r\n\r\n"));
}

TEST_F(ServerTest, ErrorsRetryingCannotFixSayShouldRetryFalse) {
  ServerOptions options;
  options.api_keys = {"right-key"};
  options.max_body_bytes = 4096;
  start(options);
  const httplib::Headers key = {{"x-api-key", "right-key"}};
  json big = hello();
  big["messages"][0]["content"] = std::string(10000, 'x');
  json bad = hello();
  bad.erase("max_tokens");
  auto expect_no_retry = [](const httplib::Result& res, int status) {
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, status) << res->body;
    EXPECT_EQ(res->get_header_value("x-should-retry"), "false") << status << " " << res->body;
  };
  expect_no_retry(post("/v1/messages", hello(), {{"x-api-key", "wrong-key"}}), 401);
  expect_no_retry(post("/v1/messages", hello()), 401);
  expect_no_retry(post("/v1/messages", bad, key), 400);
  expect_no_retry(post_raw("/v1/messages", "{not json", key), 400);
  expect_no_retry(client()->Get("/v2/nothing", key), 404);
  expect_no_retry(post("/v1/messages", big, key), 413);
  // A success says nothing.
  auto ok = post("/v1/messages", hello(), key);
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
  EXPECT_FALSE(ok->has_header("x-should-retry"));
}

TEST_F(ServerTest, OverloadAndRateLimitsMayBeRetried) {
  EXPECT_FALSE(should_retry(400));
  EXPECT_FALSE(should_retry(401));
  EXPECT_FALSE(should_retry(403));
  EXPECT_FALSE(should_retry(404));
  EXPECT_FALSE(should_retry(413));
  EXPECT_FALSE(should_retry(431));
  for (int status : {408, 409, 429, 500, 503, 529}) EXPECT_TRUE(should_retry(status)) << status;
  backend.queue_full = true;
  start();
  auto res = post("/v1/messages", hello());
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 529);
  EXPECT_FALSE(res->has_header("x-should-retry")) << "the client's own rule (retry 529) applies";
}

TEST_F(ServerTest, EveryErrorIsLoggedWithItsRequestIdAndWhy) {
  LogCapture log;
  ServerOptions options;
  options.api_keys = {"right-key"};
  start(options);
  auto expect_logged = [&](const httplib::Result& res) {
    ASSERT_TRUE(res);
    const std::string id = res->get_header_value("request-id");
    ASSERT_FALSE(id.empty());
    const auto lines = log.lines_with(id);
    ASSERT_EQ(lines.size(), 1u) << res->body;
    const std::string message = json::parse(res->body)["error"]["message"];
    EXPECT_EQ(lines[0].rfind("info ", 0), 0u) << lines[0];
    EXPECT_NE(lines[0].find(std::to_string(res->status)), std::string::npos) << lines[0];
    EXPECT_NE(lines[0].find(message), std::string::npos) << lines[0];
  };
  expect_logged(post("/v1/messages", hello(), {{"x-api-key", "wrong-key"}}));
  json bad = hello();
  bad["max_tokens"] = "many";
  expect_logged(post("/v1/messages", bad, {{"x-api-key", "right-key"}}));
  expect_logged(client()->Get("/v2/nothing"));
  EXPECT_NE(log.lines_with("invalid x-api-key")[0].find("POST /v1/messages -> 401"), std::string::npos);
  EXPECT_NE(log.lines_with("max_tokens")[0].find("-> 400 invalid_request_error"), std::string::npos);
  // The server's threads log into the capture: stop them before it goes
  // (ThreadSanitizer saw a worker reading the capture logger as it was freed).
  server->stop();
}

TEST_F(ServerTest, StatusLinesCarryTheirReasonPhrase) {
  EXPECT_STREQ(status_reason(529), "Overloaded");
  backend.queue_full = true;
  start();
  const std::string body = hello().dump();
  const std::string post_request = "POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: "
                                   "application/json\r\nContent-Length: " +
                                   std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
  auto status_line = [&](const std::string& request) {
    const std::string head = raw_exchange(server->port(), request);
    return head.substr(0, head.find("\r\n"));
  };
  EXPECT_EQ(status_line(post_request), "HTTP/1.1 529 Overloaded");
  EXPECT_EQ(status_line("GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
            "HTTP/1.1 404 Not Found");
}

}  // namespace
}  // namespace pensieve::server::test
