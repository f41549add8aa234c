// POST /v1/messages and /v1/messages/count_tokens: parse, render, tokenize,
// submit to the Backend and answer as JSON or as an SSE stream.
#include <arpa/inet.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <functional>

#include "core/log.h"
#include "server/auth.h"
#include "server/ids.h"
#include "server/message_builder.h"
#include "server/openai.h"
#include "server/prompt.h"
#include "server/request.h"
#include "server/server_impl.h"

namespace pensieve::server {
namespace {

using json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

// How often a waiting answer checks that its client is still connected.
constexpr auto kPollInterval = std::chrono::milliseconds(100);

// One generation counted against max_queue and max_per_client while alive.
class InflightSlot {
 public:
  InflightSlot(Server::Impl& server, std::string client, std::shared_ptr<EventChannel> channel)
      : server_(server), client_(std::move(client)), channel_(std::move(channel)) {
    std::lock_guard<std::mutex> lock(server_.slots_mutex);
    if (server_.stopping) throw ApiError(529, "overloaded_error", "server is shutting down");
    auto it = server_.n_inflight_by_client.find(client_);
    int n_client = it == server_.n_inflight_by_client.end() ? 0 : it->second;
    if (server_.options.max_per_client > 0 && n_client >= server_.options.max_per_client)
      throw ApiError(429, "rate_limit_error",
                     fmt::format("rate limit: at most {} concurrent requests per client",
                                 server_.options.max_per_client));
    if (server_.n_inflight >= server_.options.max_queue)
      throw ApiError(529, "overloaded_error",
                     fmt::format("Overloaded: {} generations are already running or queued",
                                 server_.n_inflight));
    ++server_.n_inflight_by_client[client_];
    ++server_.n_inflight;
    server_.channels.insert(channel_);
  }
  ~InflightSlot() {
    std::lock_guard<std::mutex> lock(server_.slots_mutex);
    if (--server_.n_inflight_by_client[client_] <= 0) server_.n_inflight_by_client.erase(client_);
    --server_.n_inflight;
    server_.channels.erase(channel_);
  }
  InflightSlot(const InflightSlot&) = delete;
  InflightSlot& operator=(const InflightSlot&) = delete;

 private:
  Server::Impl& server_;
  std::string client_;
  std::shared_ptr<EventChannel> channel_;
};

// The state of one answer: engine events in, Anthropic events out.
struct Session {
  Session(OutputParserOptions parser_options, std::string model, int64_t n_prompt)
      : parser(std::move(parser_options)), builder(random_id("msg_"), std::move(model)),
        n_prompt(n_prompt) {}
  ~Session() {
    cancel();
    record();  // a generation that never finished (client gone, shutdown)
  }

  // Into GET /metrics once, when the answer is complete and before its end
  // is written (so a client that has it sees it in the next scrape).
  void record() {
    if (recorded || metrics == nullptr || !generation) return;
    recorded = true;
    metrics->record_generation(model ? model->entry.id : std::string(), {.n_prompt = n_prompt, .n_cached = n_cached, .n_output = n_output,
                                .ttft_s = ttft_s, .inter_token_s = std::move(inter_token_s)});
  }

  // The model, held until the session is gone (declared first: released
  // after the generation below, which its engine runs).
  std::shared_ptr<ModelLease> model;
  std::shared_ptr<EventChannel> channel = std::make_shared<EventChannel>();
  std::unique_ptr<InflightSlot> slot;
  std::shared_ptr<Generation> generation;
  OutputParser parser;
  MessageBuilder builder;
  int64_t n_prompt = 0, n_cached = 0, n_breakpoint = 0, n_output = 0;
  // Set once message_start is out: the input side of its usage is what
  // message_delta repeats, whatever the engine reports afterwards.
  bool input_usage_sent = false;
  bool finished = false;
  std::string stop_reason;
  std::optional<ApiError> error;
  Clock::time_point started = Clock::now();
  // For GET /metrics (recorded when the session ends): time to the first
  // token and between tokens, as this thread receives them.
  Metrics* metrics = nullptr;
  bool recorded = false;
  bool server_capped = false;  // the server's cap, not the request's, limits the answer
  double ttft_s = -1;
  Clock::time_point last_token;
  std::vector<double> inter_token_s;

  Usage usage() const { return make_usage(n_prompt, n_cached, n_output, n_breakpoint); }

  void cancel() {
    if (generation && !finished) generation->cancel();
  }

  void add_pieces(const std::vector<OutputPiece>& pieces, std::vector<json>& out) {
    for (const OutputPiece& piece : pieces) builder.add(piece, out);
  }

  void end(const std::string& reason, const std::optional<std::string>& stop_sequence,
           std::vector<json>& out) {
    stop_reason = reason;
    builder.finish(reason, stop_sequence, usage(), out);
    finished = true;
    record();
    spdlog::info("{}: {} prompt tokens ({} cached), {} output tokens, {}, {:.2f} s", builder.id(),
                 n_prompt, n_cached, n_output, reason,
                 std::chrono::duration<double>(Clock::now() - started).count());
  }

  void fail(ApiError e) {
    error = std::move(e);
    finished = true;
    record();
    spdlog::warn("{}: generation failed: {}", builder.id(), error->what());
  }

  void note_cache(const GenerationEvent& e) {
    if (input_usage_sent) return;
    n_cached = std::max(n_cached, e.n_cached);
  }

  void take(const GenerationEvent& e, std::vector<json>& out) {
    if (finished) return;
    note_cache(e);
    std::vector<OutputPiece> pieces;
    switch (e.kind) {
      case GenerationEvent::Kind::progress: break;
      case GenerationEvent::Kind::token: {
        const Clock::time_point now = Clock::now();
        if (n_output == 0) ttft_s = std::chrono::duration<double>(now - started).count();
        else inter_token_s.push_back(std::chrono::duration<double>(now - last_token).count());
        last_token = now;
        ++n_output;
        parser.feed(e.text, pieces);
        add_pieces(pieces, out);
        if (parser.stopped()) {
          generation->cancel();  // the rest would be discarded anyway
          end("stop_sequence", parser.stop_sequence(), out);
        }
        break;
      }
      case GenerationEvent::Kind::done:
        if (e.finish == FinishReason::cancelled) {
          fail(ApiError(529, "overloaded_error", "the generation was cancelled by the engine"));
          break;
        }
        parser.finish(pieces);
        add_pieces(pieces, out);
        end(e.finish == FinishReason::max_tokens && !server_capped ? "max_tokens"
            : builder.has_tool_use() ? "tool_use"
                                     : "end_turn",
            std::nullopt, out);
        break;
      case GenerationEvent::Kind::error:
        fail(ApiError(500, "api_error", e.error.empty() ? "generation failed" : e.error));
        break;
    }
  }
};

// Whether the client hung up: its end of the connection is closed (or
// broken). Unread bytes (a pipelined next request) do not count.
bool peer_closed(int fd) {
  pollfd p{fd, POLLIN | POLLRDHUP, 0};
  if (poll(&p, 1, 0) <= 0) return false;
  if (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) return true;
  char c;
  const ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

json error_event(const ApiError& e) {
  return {{"type", "error"}, {"error", {{"type", e.type()}, {"message", e.what()}}}};
}

// How a stream reaches its client: Anthropic's SSE events as they are, or
// translated (OpenAI's chunks). Each returns false when the client is gone.
struct StreamWriter {
  std::function<bool(httplib::DataSink&, const json&)> event;  // one Messages event
  std::function<bool(httplib::DataSink&)> ping;
  std::function<void(httplib::DataSink&, const ApiError&)> error;
  std::function<void(httplib::DataSink&)> end;  // after the last event
};

StreamWriter anthropic_writer() {
  StreamWriter w;
  w.event = [](httplib::DataSink& sink, const json& event) {
    const std::string text = sse_event(event);
    return sink.write(text.data(), text.size());
  };
  w.ping = [e = w.event](httplib::DataSink& sink) { return e(sink, json{{"type", "ping"}}); };
  w.error = [e = w.event](httplib::DataSink& sink, const ApiError& err) { e(sink, error_event(err)); };
  w.end = [](httplib::DataSink&) {};
  return w;
}

bool write_data(httplib::DataSink& sink, const std::string& payload) {
  const std::string text = "data: " + payload + "\n\n";
  return sink.write(text.data(), text.size());
}

// OpenAI's stream: `data: {chunk}` lines, a comment line as the keep-alive,
// an error as `data: {"error": ...}`, and `data: [DONE]` at the end.
StreamWriter openai_writer(std::shared_ptr<ChatChunker> chunker) {
  StreamWriter w;
  w.event = [chunker](httplib::DataSink& sink, const json& event) {
    std::vector<json> chunks;
    chunker->add(event, chunks);
    for (const json& c : chunks)
      if (!write_data(sink, dump_json(c))) return false;
    return true;
  };
  w.ping = [](httplib::DataSink& sink) {
    static const std::string comment = ": ping\n\n";
    return sink.write(comment.data(), comment.size());
  };
  w.error = [](httplib::DataSink& sink, const ApiError& err) { write_data(sink, dump_json(openai_error(err))); };
  w.end = [](httplib::DataSink& sink) { write_data(sink, "[DONE]"); };
  return w;
}

// Writes the SSE answer; returns false when the client went away.
bool stream_answer(Session& s, httplib::DataSink& sink, int ping_interval_ms, const StreamWriter& w) {
  auto write = [&](const json& event) { return w.event(sink, event); };
  const auto ping_interval = std::chrono::milliseconds(std::max(1, ping_interval_ms));
  // message_start waits briefly for the engine's first event, which tells
  // how much of the prompt came from the cache.
  const auto first_event_wait = std::min<Clock::duration>(std::chrono::seconds(1), ping_interval);
  const auto start = Clock::now();
  auto last_write = start;
  bool started = false;
  bool pending_lookup = false;  // the engine said its prefix lookup reads from disk
  std::deque<GenerationEvent> events;
  std::vector<json> out;
  for (;;) {
    s.channel->wait(events, Clock::now() + std::min<Clock::duration>(kPollInterval, ping_interval));
    if (s.channel->aborted()) {
      s.cancel();
      w.error(sink, ApiError(529, "overloaded_error", "server is shutting down"));
      sink.done();
      return true;
    }
    if (!sink.is_writable()) {
      s.cancel();
      return false;
    }
    auto now = Clock::now();
    if (!started) {
      // A lookup still reading blocks from disk holds message_start until
      // it knows how much of the prompt is cached (a few seconds at most).
      const bool pending = !events.empty() && std::all_of(events.begin(), events.end(),
                                                          [](const GenerationEvent& e) { return e.lookup_pending; });
      if (pending) {
        pending_lookup = true;
        events.clear();
        continue;
      }
      if (events.empty() && (pending_lookup || now - start < first_event_wait)) continue;
      for (const auto& e : events) s.note_cache(e);
      s.input_usage_sent = true;
      if (!write(s.builder.message_start(s.usage())) || !w.ping(sink)) {
        s.cancel();
        return false;
      }
      started = true;
      last_write = now;
    }
    out.clear();
    for (const auto& e : events) s.take(e, out);
    events.clear();
    for (const json& event : out) {
      if (!write(event)) {
        s.cancel();
        return false;
      }
      last_write = now;
    }
    if (s.finished) {
      if (s.error) w.error(sink, *s.error);
      else w.end(sink);
      sink.done();
      return true;
    }
    if (now - last_write >= ping_interval) {
      if (!w.ping(sink)) {
        s.cancel();
        return false;
      }
      last_write = now;
    }
  }
}

}  // namespace

namespace {

// The request parsed for the model it names, and that model held. The body
// is checked before a model that is not loaded yet is loaded for it: as
// though the model took images, and again once it is loaded when it does not.
template <typename Parse>
auto parse_for_model(ModelRegistry& models, const ModelEntry* entry, Parse parse)
    -> std::pair<decltype(parse(false)), std::shared_ptr<ModelLease>> {
  const std::optional<ModelInfo> known = entry ? models.loaded_info(*entry) : std::nullopt;
  auto request = parse(known ? known->vision : entry != nullptr);
  if (entry == nullptr) throw ApiError(500, "api_error", "the request parsed without a model");
  std::shared_ptr<ModelLease> lease;
  try {
    lease = models.acquire(*entry);
  } catch (const ApiError&) {
    throw;
  } catch (const std::exception& e) {
    // The model's fault, not the request's, whatever the loader threw.
    throw ApiError(500, "api_error", fmt::format("model {} could not be loaded: {}", entry->id, e.what()));
  }
  if (!known && !lease->info.vision) request = parse(false);
  return {std::move(request), std::move(lease)};
}

}  // namespace

void Server::Impl::handle_messages(const httplib::Request& req, httplib::Response& res) {
  json body = parse_request_body(req.body);
  auto [request, model] = parse_for_model(models, model_named(body), [&](bool vision) {
    return parse_messages_request(body, {true, vision});
  });
  answer(req, res, request, nullptr, std::move(model));
}

void Server::Impl::handle_chat_completions(const httplib::Request& req, httplib::Response& res) {
  json body = parse_request_body(req.body);
  auto [chat, model] = parse_for_model(models, model_named(body), [&](bool) { return parse_chat_request(body); });
  answer(req, res, chat.messages, &chat, std::move(model));
}

void Server::Impl::answer(const httplib::Request& req, httplib::Response& res, MessagesRequest& request,
                          const ChatRequest* chat, std::shared_ptr<ModelLease> model) {
  Backend& backend = model->backend;
  const ModelInfo& info = model->info;
  if (request.thinking != ThinkingMode::disabled &&
      (request.tool_choice.type == ToolChoice::Type::any ||
       request.tool_choice.type == ToolChoice::Type::tool))
    invalid_request("", "Thinking may not be enabled when tool_choice forces tool use.");
  Prompt prompt = build_prompt(backend, info, request);
  const int64_t n_prompt = static_cast<int64_t>(prompt.tokens.size());
  if (n_prompt >= info.context_size)
    invalid_request("", "prompt is too long: {} tokens > {} maximum", n_prompt,
                    info.context_size - 1);

  GenerationRequest gen;
  gen.prompt = std::move(prompt.tokens);
  // OpenAI's max_tokens is optional: the rest of the context.
  gen.max_tokens = request.max_tokens > 0 ? std::min(request.max_tokens, info.context_size - n_prompt)
                                          : info.context_size - n_prompt;
  // The server's own cap (--max-output-tokens) ends an answer as the model
  // ending it would: end_turn, not max_tokens. A client told max_tokens
  // when it asked for more asks the model to go on (Claude Code does,
  // a few times, then fails with "exceeded the output token maximum").
  int64_t cap = 0;
  for (const int64_t c : {options.max_output_tokens, model->entry.max_output_tokens})
    if (c > 0) cap = cap > 0 ? std::min(cap, c) : c;
  const bool server_capped = cap > 0 && cap < gen.max_tokens;
  if (server_capped) gen.max_tokens = cap;
  gen.temperature = static_cast<float>(request.temperature.value_or(1.0));
  gen.top_p = static_cast<float>(request.top_p.value_or(1.0));
  gen.top_k = static_cast<int>(std::min<int64_t>(request.top_k.value_or(0), INT32_MAX));
  gen.min_p = static_cast<float>(request.min_p.value_or(0.0));
  gen.seed = request.seed;
  // tool_choice any/tool: the answer is one call, enforced while decoding.
  if (prompt.tools_active && (request.tool_choice.type == ToolChoice::Type::any ||
                              request.tool_choice.type == ToolChoice::Type::tool)) {
    for (const Tool& t : request.tools) {
      const bool named = request.tool_choice.type == ToolChoice::Type::tool;
      if (named ? t.name == request.tool_choice.name : !t.deferred)
        gen.forced_tools.push_back({t.name, t.input_schema});
    }
  }

  OutputParserOptions parser_options;
  parser_options.stop_sequences = request.stop_sequences;
  parser_options.tool_calls = prompt.tools_active;
  parser_options.thinking = prompt.thinking;
  parser_options.starts_in_thinking = prompt.starts_in_thinking;
  // Answers carry the model's own id, whichever of its names was asked for
  // (as Anthropic's API answers an alias with the model it stands for).
  auto session = std::make_shared<Session>(std::move(parser_options), model->entry.id, n_prompt);
  session->metrics = &metrics;
  session->model = model;
  session->server_capped = server_capped;
  // Nothing is written where the engine keeps no prompts.
  session->n_breakpoint = info.prefix_cache ? prompt.n_breakpoint_tokens : 0;

  std::string client = presented_key(req.get_header_value("x-api-key"),
                                     req.get_header_value("Authorization"));
  session->slot = std::make_unique<InflightSlot>(*this, client.empty() ? req.remote_addr : client,
                                                 session->channel);
  std::weak_ptr<EventChannel> channel = session->channel;
  session->generation = backend.submit(std::move(gen), [channel](const GenerationEvent& e) {
    if (auto c = channel.lock()) c->push(e);
  });
  if (!session->generation)
    throw ApiError(529, "overloaded_error", "Overloaded: the engine's queue is full");

  const int64_t created = std::chrono::duration_cast<std::chrono::seconds>(
                              std::chrono::system_clock::now().time_since_epoch()).count();
  const std::string chat_id = "chatcmpl-" + session->builder.id().substr(4);
  if (request.stream) {
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    int ping_ms = options.ping_interval_ms;
    StreamWriter writer = chat == nullptr ? anthropic_writer()
                                          : openai_writer(std::make_shared<ChatChunker>(
                                                chat_id, model->entry.id, created, chat->include_usage,
                                                chat->json_response));
    res.set_chunked_content_provider(
        "text/event-stream",
        [session, ping_ms, writer](size_t, httplib::DataSink& sink) {
          return stream_answer(*session, sink, ping_ms, writer);
        },
        [session](bool) { session->cancel(); });
    return;
  }

  // Nothing is written until the answer is complete, so a client that
  // hangs up is noticed by watching its socket, and its generation cancelled.
  const int fd = HttpServer::current_socket();
  if (fd < 0)
    spdlog::debug("{}: connection socket not found: a disconnect goes unnoticed",
                  session->builder.id());
  std::deque<GenerationEvent> events;
  std::vector<json> out;
  while (!session->finished) {
    session->channel->wait(events, Clock::now() + kPollInterval);
    if (session->channel->aborted()) throw ApiError(529, "overloaded_error", "server is shutting down");
    if (fd >= 0 && peer_closed(fd)) {
      session->cancel();
      spdlog::info("{}: client disconnected: generation cancelled", session->builder.id());
      throw ApiError(499, "invalid_request_error", "client closed the connection");
    }
    for (const auto& e : events) session->take(e, out);
    events.clear();
    out.clear();
  }
  if (session->error) throw *session->error;
  if (chat != nullptr) send_json(res, 200, chat_completion(session->builder.message(), chat_id, created, chat->json_response));
  else send_json(res, 200, session->builder.message());
}

void Server::Impl::handle_count_tokens(const httplib::Request& req, httplib::Response& res) {
  json body = parse_request_body(req.body);
  auto [request, model] = parse_for_model(models, model_named(body), [&](bool vision) {
    return parse_messages_request(body, {false, vision});
  });
  Prompt prompt = build_prompt(model->backend, model->info, request);
  send_json(res, 200, {{"input_tokens", prompt.tokens.size()}});
}

}  // namespace pensieve::server
