// Internal to src/server: the state shared by the route handlers.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <httplib.h>

#include "server/api_error.h"
#include "server/http_server.h"
#include "server/listen_socket.h"
#include "server/metrics.h"
#include "server/openai.h"
#include "server/request.h"
#include "server/server.h"

namespace pensieve::server {

// Engine events for one generation, handed from the engine thread to the
// HTTP thread that writes the answer.
class EventChannel {
 public:
  void push(const GenerationEvent& event);
  // Waits until events arrive, abort() is called or the deadline passes;
  // moves the queued events into out.
  void wait(std::deque<GenerationEvent>& out, std::chrono::steady_clock::time_point deadline);
  void abort();
  bool aborted() const;

 private:
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<GenerationEvent> events_;
  bool aborted_ = false;
};

struct Server::Impl {
  Impl(ModelRegistry& models, ServerOptions options);
  Impl(Backend& backend, ServerOptions options);  // a registry of this one backend

  std::unique_ptr<ModelLoader> own_loader;      // Impl(Backend&): lends the backend
  std::unique_ptr<ModelRegistry> own_registry;
  ModelRegistry& models;
  ServerOptions options;
  std::vector<std::string> keys;
  std::string created_at;  // RFC 3339, for the models list
  int64_t created_unix = 0;  // the same, in seconds (OpenAI's "created")
  Metrics metrics{models.default_model().id};  // GET /metrics

  HttpServer http;  // httplib with the connection gate (server/http_server.h)
  std::thread listen_thread;
  int bound_port = -1;
  ListenSocket listen_socket;
  std::mutex state_mutex;
  std::mutex stop_mutex;
  std::condition_variable stopped_cv;
  bool running = false;
  std::atomic<bool> stopping{false};

  // Generations in flight, per client and in total (limits -> 429 / 529).
  std::mutex slots_mutex;
  int n_inflight = 0;
  std::map<std::string, int> n_inflight_by_client;
  std::set<std::shared_ptr<EventChannel>> channels;  // to abort on stop()

  bool routes_ready = false;
  void prepare_routes();  // setup_routes() once
  void setup_routes();
  std::string gate_error_response(int status, const std::string& message);
  void check_auth(const httplib::Request& req) const;
  void send_json(httplib::Response& res, int status, const nlohmann::ordered_json& body);
  // The error envelope, x-should-retry, and a log line with the request id.
  void send_error(const httplib::Request& req, httplib::Response& res, const ApiError& error);

  // Route bodies; they throw ApiError (or anything) and the wrapper answers.
  void handle_messages(const httplib::Request& req, httplib::Response& res);
  // POST /v1/chat/completions: OpenAI's face on the same generation (openai.h).
  void handle_chat_completions(const httplib::Request& req, httplib::Response& res);
  // The model a request body's "model" names: 404 not_found_error when it
  // names none (null when the field is missing or not a string: the
  // request parser says so).
  const ModelEntry* model_named(const nlohmann::ordered_json& body) const;
  // 404 not_found_error "model: NAME", with the names that are served.
  ApiError unknown_model(const std::string& name) const;
  // A parsed request answered as Messages (chat null) or as Chat Completions.
  void answer(const httplib::Request& req, httplib::Response& res, MessagesRequest& request,
              const ChatRequest* chat, std::shared_ptr<ModelLease> model);
  void handle_count_tokens(const httplib::Request& req, httplib::Response& res);
  nlohmann::ordered_json model_object(const ModelListing& listed) const;
  void handle_models(const httplib::Request& req, httplib::Response& res);
  void handle_model(const httplib::Request& req, httplib::Response& res);
  void handle_health(const httplib::Request& req, httplib::Response& res);
  void handle_metrics(const httplib::Request& req, httplib::Response& res);
  void count(const httplib::Request& req, const httplib::Response& res);  // for GET /metrics
  void handle_hold(bool held, httplib::Response& res);
};

}  // namespace pensieve::server
