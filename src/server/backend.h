// The narrow interface between the HTTP layer and the inference engine. The
// server only renders, tokenizes and submits token sequences through it, so
// the whole Anthropic protocol can be tested with a scripted Backend and the
// engine can change without touching src/server.
//
// Contract (the real engine must honour it; tests/server/scripted_backend.h
// is the reference implementation used by the protocol tests):
// - info() is read once, when the Server is constructed; context_size must be > 0.
// - info(), tokenize() and render() may be called from many HTTP threads at
//   once and must be thread-safe.
// - render() receives Hugging Face style messages:
//     {"role": "system"|"user"|"assistant"|"tool", "content": "...",
//      "tool_calls": [{"type": "function", "id": "toolu_..",
//                      "function": {"name": "...", "arguments": {...}}}],   (assistant only)
//      "reasoning_content": "...",                                         (assistant only)
//      "tool_call_id": "toolu_..", "name": "Bash"}                         (tool only)
//   `tools` is null or [{"type": "function", "function": {"name", "description",
//   "parameters"}}] (only passed when info().native_tools). extra_vars holds
//   template variables: "add_generation_prompt" (always true) and
//   "enable_thinking" (bool); the renderer adds its own (bos_token, ...).
//   It throws pensieve::Error(invalid_input) when the template rejects the
//   conversation (raise_exception) -> HTTP 400.
// - tokenize() turns rendered text into ids without adding BOS/EOS, mapping the
//   template's special-token strings (<|im_start|>, <|user|>, ...) to their ids.
// - submit() queues a generation and returns at once. on_event is then called
//   from an engine thread, never concurrently for one generation, in order:
//   optionally progress events (the first one should come as soon as the
//   prefix-cache lookup is done, carrying n_cached and n_cache_created, which
//   later events repeat: usage is fixed when the answer starts), token events, and exactly
//   one terminal event (done or error); nothing after it. on_event must not
//   block: the server only queues the event. Generated EOS tokens are not
//   reported as token events. Returns nullptr when the queue is full (-> 529).
// - Generation::cancel() is thread-safe, idempotent, may be called after the
//   generation ended, and makes the engine stop as soon as it can (a done
//   event with finish cancelled may or may not follow; the server does not
//   wait for it).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/finish_reason.h"

namespace pensieve::server {

struct ModelInfo {
  std::string id;             // what GET /v1/models lists, e.g. "Qwen3-0.6B"
  std::string display_name;
  int64_t context_size = 0;   // tokens per sequence the engine accepts (prompt + output)
  bool vision = false;        // accepts image input (no engine does yet: images get a 400)
  bool native_tools = false;  // the chat template renders `tools` and tool calls itself (Qwen)
  bool thinking = false;      // the template knows enable_thinking and the model writes <think>
  std::string context_note;   // why context_size is less than the model's ("" when it is not)
  bool prefix_cache = true;   // prompts are kept for reuse (usage reports cache writes)
};

// A tool the answer must call (tool_choice any/tool).
struct ForcedTool {
  std::string name;
  nlohmann::ordered_json input_schema;
};

struct GenerationRequest {
  std::vector<int32_t> prompt;
  int64_t max_tokens = 0;     // already clamped so prompt + max_tokens <= context_size
  float temperature = 1.0f;   // 0 = greedy
  float top_p = 1.0f;         // 1 = off
  int top_k = 0;              // 0 = off
  float min_p = 0.0f;         // 0 = off
  std::optional<uint64_t> seed;
  // Non-empty: the answer is exactly one call of one of these tools, written
  // in the <tool_call> format the output parser reads, its input following
  // the tool's schema (constrained decoding; server/json_grammar.h).
  std::vector<ForcedTool> forced_tools;
};

struct GenerationEvent {
  enum class Kind { progress, token, done, error };
  Kind kind = Kind::progress;
  int64_t n_prompt_done = 0;  // progress: prompt tokens processed so far (cached ones included)
  int64_t n_cached = 0;       // prompt tokens reused from the prefix cache (any event may carry it)
  int64_t n_cache_created = 0;  // prompt tokens this generation writes into the prefix cache
  // progress: the prefix lookup goes on (reading from disk); its n_cached
  // comes with a later event, which the answer's usage waits for.
  bool lookup_pending = false;
  int32_t token = -1;         // token: its id
  std::string text;           // token: newly completed UTF-8 text (may be empty mid-character)
  FinishReason finish = FinishReason::eos;  // done: why
  std::string error;          // error: what failed
};

class Generation {
 public:
  virtual ~Generation() = default;
  virtual void cancel() = 0;
};

using EventCallback = std::function<void(const GenerationEvent&)>;

class Backend {
 public:
  virtual ~Backend() = default;
  virtual ModelInfo info() const = 0;
  virtual std::vector<int32_t> tokenize(const std::string& text) const = 0;
  virtual std::string render(const nlohmann::ordered_json& messages,
                             const nlohmann::ordered_json* tools,
                             const nlohmann::ordered_json& extra_vars) const = 0;
  virtual std::shared_ptr<Generation> submit(GenerationRequest request,
                                             EventCallback on_event) = 0;
  // Engine counters for GET /health (KV blocks, queue); null when there are none.
  virtual nlohmann::ordered_json stats() const { return nullptr; }
  // Test hook (ServerOptions::test_hooks): hold the generations where they
  // are (true) or let them go on (false). False when the backend cannot.
  virtual bool set_held(bool held) {
    (void)held;
    return false;
  }
};

}  // namespace pensieve::server
