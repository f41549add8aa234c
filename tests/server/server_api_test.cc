// Routes, authentication, error statuses and hostile clients.
#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <fmt/format.h>

#include <regex>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "server_fixture.h"
#include "support/wait_until.h"

namespace pensieve::server::test {
namespace {

TEST_F(ServerTest, CountTokensRendersWithoutGenerating) {
  start();
  json body = hello();
  body.erase("max_tokens");
  body["tools"] = {bash_tool()};
  auto res = post("/v1/messages/count_tokens?beta=true", body);
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(json::parse(res->body), (json{{"input_tokens", backend.last_render().size()}}));
  EXPECT_NE(backend.last_render().find("\"Bash\""), std::string::npos);
  EXPECT_EQ(backend.n_submitted, 0);
}

TEST_F(ServerTest, ModelsListAndRetrieve) {
  start();
  auto res = client()->Get("/v1/models?limit=20");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  json list = json::parse(res->body);
  ASSERT_EQ(list["data"].size(), 2u) << list;  // the model and claude-scripted-1
  EXPECT_EQ(list["data"][1]["id"], "claude-scripted-1");
  EXPECT_EQ(list["data"][1]["alias_of"], "scripted-1");
  EXPECT_EQ(list["data"][0]["type"], "model");
  EXPECT_EQ(list["data"][0]["id"], "scripted-1");
  EXPECT_EQ(list["data"][0]["display_name"], "Scripted Model");
  EXPECT_TRUE(std::regex_match(list["data"][0]["created_at"].get<std::string>(),
                               std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")));
  EXPECT_EQ(list["first_id"], "scripted-1");
  EXPECT_EQ(list["last_id"], "claude-scripted-1");
  EXPECT_EQ(list["has_more"], false);

  json after = json::parse(client()->Get("/v1/models?after_id=claude-scripted-1")->body);
  EXPECT_EQ(after["data"], json::array());
  EXPECT_TRUE(after["first_id"].is_null());

  json one = json::parse(client()->Get("/v1/models/scripted-1")->body);
  EXPECT_EQ(one["id"], "scripted-1");
  EXPECT_EQ(one["type"], "model");
  // A claude-* name is served by the default model.
  json other = json::parse(client()->Get("/v1/models/claude-opus-5-5")->body);
  EXPECT_EQ(other["id"], "claude-opus-5-5");
  EXPECT_EQ(other["alias_of"], "scripted-1");
  expect_error(client()->Get("/v1/models/gpt-4o"), 404, "not_found_error");
}

// GET /metrics as Prometheus text: sample name with labels -> value.
std::map<std::string, double> scrape(httplib::Client& c, const httplib::Headers& headers = {}) {
  auto res = c.Get("/metrics", headers);
  EXPECT_TRUE(res);
  std::map<std::string, double> out;
  if (!res) return out;
  EXPECT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(res->get_header_value("Content-Type").rfind("text/plain; version=0.0.4", 0), 0u);
  std::istringstream in(res->body);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t sp = line.rfind(' ');
    EXPECT_NE(sp, std::string::npos) << line;
    if (sp == std::string::npos) continue;
    EXPECT_FALSE(out.count(line.substr(0, sp))) << "a sample twice: " << line;
    out[line.substr(0, sp)] = std::stod(line.substr(sp + 1));
  }
  return out;
}

TEST_F(ServerTest, MetricsCountRequestsTokensAndLatencies) {
  backend.set_script({.pieces = {"Hel", "lo", " there", "!"}, .n_cached = 5});
  start();
  auto c = client();
  const auto before = scrape(*c);
  const std::string m = "{model=\"scripted-1\"}";
  EXPECT_EQ(before.at("pensieve_generations_total" + m), 0);
  EXPECT_EQ(before.at("pensieve_time_to_first_token_seconds_count" + m), 0);

  auto plain = post("/v1/messages", hello());
  ASSERT_TRUE(plain);
  ASSERT_EQ(plain->status, 200) << plain->body;
  const json usage = json::parse(plain->body)["usage"];
  const auto events = stream(hello());
  ASSERT_FALSE(events.empty());
  expect_error(post_raw("/v1/messages", "{not json"), 400, "invalid_request_error");
  EXPECT_EQ(c->Get("/no/such/route")->status, 404);
  EXPECT_EQ(c->Get("/v1/models/claude-anything")->status, 200);

  const auto after = scrape(*c);
  const auto req = [&](const char* route, int status) {
    const std::string key = fmt::format("pensieve_requests_total{{model=\"scripted-1\",route=\"{}\",status=\"{}\"}}",
                                        route, status);
    return after.count(key) ? after.at(key) : 0.0;
  };
  EXPECT_EQ(req("/v1/messages", 200), 2);
  EXPECT_EQ(req("/v1/messages", 400), 1);
  EXPECT_EQ(req("other", 404), 1);
  EXPECT_EQ(req("/v1/models/{id}", 200), 1);
  EXPECT_EQ(req("/metrics", 200), 1);  // the first scrape (each is counted once answered)
  const int64_t n_prompt = usage["input_tokens"].get<int64_t>() + usage["cache_read_input_tokens"].get<int64_t>() +
                           usage["cache_creation_input_tokens"].get<int64_t>();
  EXPECT_EQ(usage["output_tokens"], 4);
  EXPECT_EQ(after.at("pensieve_generations_total" + m), 2);
  EXPECT_EQ(after.at("pensieve_generated_tokens_total" + m), 8);
  EXPECT_EQ(after.at("pensieve_prompt_tokens_total" + m), 2 * n_prompt);  // the same prompt twice
  EXPECT_EQ(after.at("pensieve_prompt_cached_tokens_total" + m), 10);
  EXPECT_EQ(after.at("pensieve_prefix_cache_hits_total" + m), 2);
  // One first token and three gaps per generation; buckets are cumulative.
  EXPECT_EQ(after.at("pensieve_time_to_first_token_seconds_count" + m), 2);
  EXPECT_EQ(after.at("pensieve_inter_token_latency_seconds_count" + m), 6);
  EXPECT_EQ(after.at("pensieve_inter_token_latency_seconds_bucket{model=\"scripted-1\",le=\"+Inf\"}"), 6);
  EXPECT_LE(after.at("pensieve_time_to_first_token_seconds_bucket{model=\"scripted-1\",le=\"0.025\"}"),
            after.at("pensieve_time_to_first_token_seconds_bucket{model=\"scripted-1\",le=\"300\"}"));
  EXPECT_GT(after.at("pensieve_time_to_first_token_seconds_sum" + m), 0);
  EXPECT_EQ(after.at("pensieve_inflight_requests" + m), 0);
  // The scripted backend has no engine counters: no engine samples.
  EXPECT_EQ(after.count("pensieve_queue_depth" + m), 0u);
}

// The server's own output cap ends an answer as end_turn (a client told
// max_tokens asks for more); the request's max_tokens still gives max_tokens.
TEST_F(ServerTest, TheServersOutputCapEndsTheTurn) {
  backend.set_script({.pieces = {"a", "b"}, .finish = FinishReason::max_tokens});
  ServerOptions o;
  o.max_output_tokens = 2;
  start(o);
  json body = hello();
  body["max_tokens"] = 100;  // more than the cap: the cap ends it
  auto res = post("/v1/messages", body);
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(json::parse(res->body)["stop_reason"], "end_turn");
  EXPECT_EQ(backend.last_request().max_tokens, 2);
  body["max_tokens"] = 2;  // the request's own limit
  res = post("/v1/messages", body);
  ASSERT_TRUE(res);
  EXPECT_EQ(json::parse(res->body)["stop_reason"], "max_tokens");
}

TEST_F(ServerTest, MetricsNeedTheKeyWhenOneIsSet) {
  ServerOptions o;
  o.api_keys = {"sk-metrics-key"};
  start(o);
  auto c = client();
  expect_error(c->Get("/metrics"), 401, "authentication_error");
  EXPECT_EQ(c->Get("/metrics", {{"Authorization", "Bearer sk-metrics-key"}})->status, 200);
}

TEST_F(ServerTest, HealthAndHead) {
  start();
  auto head = client()->Head("/");
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 200);
  auto health = client()->Get("/health");
  ASSERT_TRUE(health);
  json h = json::parse(health->body);
  EXPECT_EQ(h["status"], "ok");
  EXPECT_EQ(h["model"], "scripted-1");
}

TEST_F(ServerTest, ApiKeys) {
  ServerOptions options;
  options.api_keys = {"key-one", "key-two"};
  start(options);
  EXPECT_NE(expect_error(post("/v1/messages", hello()), 401, "authentication_error")
                .find("x-api-key"), std::string::npos);
  expect_error(post("/v1/messages", hello(), {{"x-api-key", "key-three"}}), 401,
               "authentication_error");
  expect_error(post("/v1/messages", hello(), {{"Authorization", "Bearer key-on"}}), 401,
               "authentication_error");
  expect_error(client()->Get("/v1/models"), 401, "authentication_error");
  EXPECT_EQ(post("/v1/messages", hello(), {{"x-api-key", "key-two"}})->status, 200);
  EXPECT_EQ(post("/v1/messages", hello(), {{"Authorization", "Bearer key-one"}})->status, 200);
  EXPECT_EQ(client()->Get("/health")->status, 200);  // health needs no key
}

TEST_F(ServerTest, RefusesPublicAddressWithoutKey) {
  ServerOptions options;
  options.host = "0.0.0.0";
  options.port = 0;
  options.api_keys_from_env = false;
  Server open(backend, options);
  EXPECT_THROW(open.start(), Error);
  options.api_keys = {"secret"};
  Server keyed(backend, options);
  EXPECT_NO_THROW(keyed.start());
  keyed.stop();
}

TEST_F(ServerTest, NotFoundEnvelope) {
  start();
  EXPECT_NE(expect_error(client()->Get("/v2/nothing"), 404, "not_found_error").find("/v2/nothing"),
            std::string::npos);
  expect_error(client()->Get("/v1/messages"), 404, "not_found_error");
}

TEST_F(ServerTest, OversizedBodyIs413) {
  ServerOptions options;
  options.max_body_bytes = 1000;
  start(options);
  json body = hello();
  body["messages"][0]["content"] = std::string(5000, 'x');
  expect_error(post("/v1/messages", body), 413, "request_too_large");
  EXPECT_EQ(post("/v1/messages", hello())->status, 200);  // and it keeps serving
  EXPECT_EQ(ServerOptions{}.max_body_bytes, 32u << 20);
}

TEST_F(ServerTest, FormEncodedBodyOverHttplibLimitSaysWhy) {
  start();
  // What `curl -d @request.json` sends: the HTTP library caps form bodies at
  // 8 KiB, far below max_body_bytes, and the message must not blame the latter.
  json body = hello();
  body["messages"][0]["content"] = std::string(20000, 'x');
  std::string message = expect_error(
      client()->Post("/v1/messages", body.dump(), "application/x-www-form-urlencoded"), 413,
      "request_too_large");
  EXPECT_NE(message.find("Content-Type: application/json"), std::string::npos) << message;
  EXPECT_EQ(post("/v1/messages", body)->status, 200);
}

TEST_F(ServerTest, InvalidRequests) {
  start();
  auto message = [&](const json& body) {
    return expect_error(post("/v1/messages", body), 400, "invalid_request_error");
  };
  EXPECT_NE(expect_error(post_raw("/v1/messages", "{\"model\": "), 400, "invalid_request_error")
                .find("not valid JSON"), std::string::npos);
  json body = hello();
  body["max_tokens"] = "ten";
  EXPECT_EQ(message(body), "max_tokens: expected an integer, got a string");
  body = hello();
  body.erase("model");
  EXPECT_EQ(message(body), "model: Field required");
  body = hello();
  body.erase("max_tokens");
  EXPECT_EQ(message(body), "max_tokens: Field required");
  body = hello();
  body["messages"] = json::array();
  EXPECT_EQ(message(body), "messages: at least one message is required");
  body = hello();
  body["messages"][0]["content"] = {{{"type", "text"}}};
  EXPECT_EQ(message(body), "messages.0.content.0.text: Field required");
  body = hello();
  body["messages"][0]["content"] = {{{"type", 7}}};
  EXPECT_EQ(message(body), "messages.0.content.0.type: expected a string, got an integer");
  body = hello();
  body["messages"][0]["role"] = "robot";
  EXPECT_NE(message(body).find("messages.0.role"), std::string::npos);
  body = hello();
  body["temperature"] = 3;
  EXPECT_NE(message(body).find("temperature"), std::string::npos);
  body = hello();
  body["messages"] = json::parse(R"([{"role":"user","content":[
      {"type":"tool_result","tool_use_id":"toolu_missing","content":"x"}]}])");
  EXPECT_NE(message(body).find("toolu_missing"), std::string::npos);
  body = hello();
  body["messages"][0]["content"] = json::parse(
      R"([{"type":"image","source":{"type":"base64","media_type":"image/png","data":"AAAA"}}])");
  EXPECT_NE(message(body).find("messages.0.content.0: image content is not supported"),
            std::string::npos);
  body = hello();
  body["messages"][0]["content"] = "RAISE";  // the template raises
  EXPECT_EQ(message(body), "template error: roles must alternate");
  EXPECT_EQ(backend.n_submitted, 0);
}

// Numbers JSON cannot hold (1e999 overflows a double) or does not have
// (NaN, Infinity) are the client's error, a 400 naming the field, never a
// 500; so are integers past 64 bits.
TEST_F(ServerTest, UnrepresentableNumbersAre400sNamingTheField) {
  start();
  const std::string messages = R"("messages": [{"role": "user", "content": "Hi"}])";
  auto body_with = [&](const std::string& field, const std::string& value) {
    std::string body = R"({"model": "claude-m", )" + messages;
    if (field != "max_tokens") body += R"(, "max_tokens": 10)";
    return body + ", \"" + field + "\": " + value + "}";
  };
  auto refused = [&](const std::string& route, const std::string& body) {
    return expect_error(post_raw(route, body), 400, "invalid_request_error");
  };
  for (const std::string& value :
       std::vector<std::string>{"1e999", "-1e999", "1" + std::string(400, '0')}) {
    SCOPED_TRACE(value);
    const std::string body = body_with("max_tokens", value);
    const std::string message = refused("/v1/messages", body);
    EXPECT_EQ(message.rfind("max_tokens: number out of range", 0), 0u) << message;
    EXPECT_EQ(refused("/v1/messages/count_tokens", body).rfind("max_tokens: ", 0), 0u);
  }
  for (const std::string value : {"NaN", "Infinity", "-Infinity", "nan"}) {
    SCOPED_TRACE(value);
    for (const std::string field : {"max_tokens", "temperature", "top_k"}) {
      const std::string message = refused("/v1/messages", body_with(field, value));
      EXPECT_EQ(message.rfind(field + ": request body is not valid JSON", 0), 0u) << message;
    }
  }
  EXPECT_EQ(refused("/v1/messages", body_with("temperature", "1e999")),
            "temperature: number out of range (number overflow parsing '1e999')");
  EXPECT_EQ(refused("/v1/messages", body_with("thinking",
                                              R"({"type": "enabled", "budget_tokens": 1e999})"))
                .rfind("thinking.budget_tokens: number out of range", 0),
            0u);
  EXPECT_EQ(refused("/v1/messages", body_with("stop_sequences", R"(["a", NaN])"))
                .rfind("stop_sequences.1: request body is not valid JSON", 0),
            0u);
  // Finite, but no 64-bit integer.
  EXPECT_EQ(refused("/v1/messages", body_with("max_tokens", "1e300")),
            "max_tokens: integer out of range");
  EXPECT_EQ(refused("/v1/messages", body_with("top_k", "99999999999999999999999")),
            "top_k: integer out of range");
  EXPECT_EQ(refused("/v1/messages", body_with("max_tokens", "-1e300")),
            "max_tokens: integer out of range");
  EXPECT_EQ(backend.n_submitted, 0);
  EXPECT_EQ(post("/v1/messages", hello())->status, 200);  // and it keeps serving
}

TEST_F(ServerTest, PromptTooLong) {
  backend.model.context_size = 100;
  start();
  json body = hello();
  body.erase("max_tokens");
  int64_t n = json::parse(post("/v1/messages/count_tokens", body)->body)["input_tokens"];
  ASSERT_GT(n, 100);
  EXPECT_EQ(expect_error(post("/v1/messages", hello(true)), 400, "invalid_request_error"),
            "prompt is too long: " + std::to_string(n) + " tokens > 99 maximum");
}

TEST_F(ServerTest, InternalErrorIs500) {
  start();
  json body = hello();
  body["messages"][0]["content"] = "CRASH";
  EXPECT_NE(expect_error(post("/v1/messages", body), 500, "api_error").find("renderer crashed"),
            std::string::npos);
}

TEST_F(ServerTest, FullQueueIs529) {
  backend.queue_full = true;
  start();
  expect_error(post("/v1/messages", hello(true)), 529, "overloaded_error");
}

TEST_F(ServerTest, QueueLimitAndPerClientLimit) {
  backend.set_script({.pieces = {"a"}, .until_cancelled = true});
  ServerOptions options;
  options.max_queue = 2;
  options.max_per_client = 1;
  start(options);
  std::vector<std::thread> readers;
  for (const char* key : {"k1", "k2"})
    readers.emplace_back([&, key] { post("/v1/messages", hello(true), {{"x-api-key", key}}); });
  ASSERT_TRUE(pensieve::test::wait_until([&] { return backend.n_submitted == 2; }))
      << backend.n_submitted << " of 2 streams started";
  expect_error(post("/v1/messages", hello(true), {{"x-api-key", "k1"}}), 429, "rate_limit_error");
  expect_error(post("/v1/messages", hello(true), {{"x-api-key", "k3"}}), 529, "overloaded_error");
  // Other routes are not blocked by the running streams.
  EXPECT_EQ(client()->Get("/v1/models")->status, 200);
  server->stop();
  for (auto& t : readers) t.join();
}

// Forced tool use reaches the backend as the tools the answer must call;
// with thinking on it is refused, as Anthropic refuses it.
TEST_F(ServerTest, ForcedToolChoice) {
  start();
  json body = hello();
  body["tools"] = {bash_tool()};
  body["tool_choice"] = {{"type", "any"}};
  body["thinking"] = {{"type", "enabled"}, {"budget_tokens", 1024}};
  EXPECT_EQ(expect_error(post("/v1/messages", body), 400, "invalid_request_error"),
            "Thinking may not be enabled when tool_choice forces tool use.");
  EXPECT_EQ(backend.n_submitted, 0);
  body.erase("thinking");
  ASSERT_EQ(post("/v1/messages", body)->status, 200);
  ASSERT_EQ(backend.last_request().forced_tools.size(), 1u);
  EXPECT_EQ(backend.last_request().forced_tools[0].name, "Bash");
  EXPECT_EQ(backend.last_request().forced_tools[0].input_schema, bash_tool()["input_schema"]);
  body["tool_choice"] = {{"type", "auto"}};
  ASSERT_EQ(post("/v1/messages", body)->status, 200);
  EXPECT_TRUE(backend.last_request().forced_tools.empty());
}

TEST_F(ServerTest, ManyConcurrentStreamsAllRun) {
  backend.set_script({.pieces = {"a"}, .until_cancelled = true});
  ServerOptions options;
  options.max_queue = 40;
  start(options);
  constexpr int kClients = 24;
  std::vector<std::thread> readers;
  std::atomic<int> n_streaming{0}, n_errors_at_end{0};
  for (int i = 0; i < kClients; ++i)
    readers.emplace_back([&] {
      httplib::Request req;
      req.method = "POST";
      req.path = "/v1/messages";
      req.body = hello(true).dump();
      req.set_header("Content-Type", "application/json");
      std::string body;
      req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
        const bool started = body.find("message_start") != std::string::npos;
        body.append(data, n);
        if (!started && body.find("message_start") != std::string::npos) ++n_streaming;
        return true;
      };
      httplib::Response res;
      httplib::Error err;
      auto c = client();
      c->set_read_timeout(60, 0);
      const bool answered = c->send(req, res, err);
      const auto events = parse_sse(body);
      if (answered && !events.empty() && events.back().name == "error") ++n_errors_at_end;
    });
  // Every client is being served at the same time, not queued behind the
  // others. All 24 connect at once: with httplib's own listen backlog of 5 some
  // SYNs were dropped and retried by TCP only after 1, 3, 7, 15... s; the
  // server raises the backlog, so no connect waits.
  EXPECT_TRUE(pensieve::test::wait_until([&] { return n_streaming == kClients; }))
      << n_streaming << " of " << kClients << " streams started";
  EXPECT_EQ(backend.n_submitted, kClients);
  EXPECT_EQ(json::parse(client()->Get("/health")->body)["n_inflight"], kClients);
  // Stopped once every stream is under way: one whose answer had not begun
  // would end without any event (httplib calls no content provider once
  // it is stopping).
  server->stop();
  for (auto& t : readers) t.join();
  EXPECT_EQ(n_errors_at_end, kClients);  // each stream ended with the shutdown error event
  EXPECT_EQ(backend.n_cancelled, kClients);
}

TEST_F(ServerTest, ASecondServerCannotTakeTheSamePort) {
  start();
  ServerOptions options;
  options.port = server->port();
  Server second(backend, options);
  try {
    second.start();
    FAIL() << "a second server bound a port that is in use";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("in use"), std::string::npos) << e.what();
  }
  EXPECT_EQ(client()->Get("/health")->status, 200);  // the first one is untouched
}

// Reads until the first response has fully arrived (by its Content-Length), or EOF/timeout.
std::string read_response(int fd) {
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = recv(fd, buf, sizeof buf, 0)) > 0;) {
    out.append(buf, n);
    size_t body = out.find("\r\n\r\n");
    size_t length = out.find("Content-Length: ");
    if (body != std::string::npos && length != std::string::npos && length < body &&
        out.size() >= body + 4 + std::stoul(out.substr(length + 16)))
      break;
  }
  return out;
}

TEST_F(ServerTest, StalledClientDoesNotBlockOthers) {
  ServerOptions options;
  options.read_timeout_s = 1;
  start(options);
  int fd = connect_raw(server->port());
  std::string partial = "POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{\"mo";
  ASSERT_EQ(send(fd, partial.data(), partial.size(), 0), static_cast<ssize_t>(partial.size()));
  EXPECT_EQ(post("/v1/messages", hello())->status, 200);
  // After the read timeout the server gives up on the stalled body with a 4xx envelope.
  auto t0 = std::chrono::steady_clock::now();
  std::string response = read_response(fd);
  // Well before the socket's own 10 s receive timeout ends the read: it was
  // the server's 1 s that did, with time to spare on a busy machine.
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(9));
  EXPECT_EQ(response.rfind("HTTP/1.1 4", 0), 0u) << response;
  EXPECT_NE(response.find("\"type\":\"error\""), std::string::npos) << response;
  close(fd);
}

// A client that hangs up while it waits for a non-streaming answer (nothing
// has been written to it yet) has its generation cancelled and its slot freed.
TEST_F(ServerTest, NonStreamingClientDisconnectCancelsTheGeneration) {
  backend.set_script({.pieces = {"a"}, .until_cancelled = true});
  start();
  int fd = connect_raw(server->port());
  const std::string body = hello().dump();
  const std::string request =
      "POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
      "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  ASSERT_EQ(send(fd, request.data(), request.size(), 0), static_cast<ssize_t>(request.size()));
  ASSERT_TRUE(pensieve::test::wait_until([&] { return backend.n_submitted == 1; }));
  // Still connected: it keeps generating (several polls of the socket).
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(backend.n_cancelled, 0);
  EXPECT_EQ(json::parse(client()->Get("/health")->body)["n_inflight"], 1);
  close(fd);
  EXPECT_TRUE(pensieve::test::wait_until([&] { return backend.n_cancelled == 1; }));
  EXPECT_TRUE(pensieve::test::wait_until(
      [&] { return json::parse(client()->Get("/health")->body)["n_inflight"] == 0; }));
}

TEST_F(ServerTest, AbsurdHeadersGetA4xxEnvelope) {
  ServerOptions options;
  options.max_header_bytes = 16 << 10;
  start(options);
  // One enormous header line: httplib refuses to parse it.
  int fd = connect_raw(server->port());
  std::string request = "GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(200000, 'a') +
                        "\r\n\r\n";
  send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string response = read_response(fd);
  close(fd);
  ASSERT_EQ(response.rfind("HTTP/1.1 4", 0), 0u) << response.substr(0, 200);
  EXPECT_NE(response.find("\"type\":\"error\""), std::string::npos) << response;

  // Many ordinary headers adding up past the limit.
  httplib::Headers headers;
  for (int i = 0; i < 40; ++i) headers.emplace("X-Filler-" + std::to_string(i), std::string(1000, 'b'));
  auto res = client()->Get("/v1/models", headers);
  expect_error(res, 431, "invalid_request_error");
  EXPECT_EQ(client()->Get("/v1/models")->status, 200);
}

}  // namespace
}  // namespace pensieve::server::test
