// A Server on 127.0.0.1 (random port) in front of a ScriptedBackend, and
// small helpers to talk to it with httplib's client.
#pragma once

#include <gtest/gtest.h>
#include <httplib.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "scripted_backend.h"
#include "server/server.h"
#include "sse_check.h"

namespace pensieve::server::test {

using json = nlohmann::ordered_json;

class ServerTest : public ::testing::Test {
 protected:
  ScriptedBackend backend;
  std::unique_ptr<Server> server;

  void TearDown() override { server.reset(); }

  void start(ServerOptions options = {}) {
    options.port = 0;
    options.api_keys_from_env = false;
    server = std::make_unique<Server>(backend, options);
    server->start();
    // One request from this thread before any test thread exists: cpp-httplib's
    // client sets up function-local static regexes on first use, inside Debian's
    // libcpp-httplib, which ThreadSanitizer does not instrument; two test threads
    // racing to that first use look like a data race to it (ctest --preset
    // tsan). Done here, every later use is ordered after it by thread creation.
    client()->Get("/health");
  }

  std::unique_ptr<httplib::Client> client() {
    auto c = std::make_unique<httplib::Client>("127.0.0.1", server->port());
    c->set_read_timeout(20, 0);
    c->set_connection_timeout(5, 0);
    return c;
  }

  httplib::Result post(const std::string& path, const json& body, httplib::Headers headers = {}) {
    return client()->Post(path.c_str(), headers, body.dump(), "application/json");
  }
  httplib::Result post_raw(const std::string& path, const std::string& body,
                           httplib::Headers headers = {}) {
    return client()->Post(path.c_str(), headers, body, "application/json");
  }

  static json hello(bool stream = false) {
    return {{"model", "claude-test"},
            {"max_tokens", 100},
            {"stream", stream},
            {"messages", {{{"role", "user"}, {"content", "Hi"}}}}};
  }

  static json bash_tool() {
    return {{"name", "Bash"},
            {"description", "Runs a command"},
            {"input_schema",
             {{"type", "object"}, {"properties", {{"command", {{"type", "string"}}}}},
              {"required", {"command"}}}}};
  }

  // Streams a request and returns its events (checked by replay_stream by the caller).
  std::vector<SseEvent> stream(json body, httplib::Headers headers = {}) {
    body["stream"] = true;
    auto res = post("/v1/messages", body, headers);
    EXPECT_TRUE(res) << "no response";
    if (!res) return {};
    EXPECT_EQ(res->status, 200) << res->body;
    EXPECT_EQ(res->get_header_value("Content-Type"), "text/event-stream");
    return parse_sse(res->body);
  }

  // Expects an Anthropic error envelope with this status and type; returns the message.
  static std::string expect_error(const httplib::Result& res, int status, const std::string& type) {
    EXPECT_TRUE(res) << "no response";
    if (!res) return "";
    EXPECT_EQ(res->status, status) << res->body;
    auto body = json::parse(res->body, nullptr, false);
    EXPECT_TRUE(body.is_object()) << res->body;
    if (!body.is_object()) return "";
    EXPECT_EQ(body["type"], "error");
    EXPECT_EQ(body["error"]["type"], type);
    EXPECT_EQ(body["request_id"], res->get_header_value("request-id"));
    EXPECT_EQ(res->get_header_value("request-id").rfind("req_", 0), 0u);
    return body["error"]["message"].get<std::string>();
  }
};

// A loopback connection for clients httplib's client would not be (a 10 s
// receive timeout, so a silent server fails the test instead of hanging it).
inline int connect_raw(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

}  // namespace pensieve::server::test
