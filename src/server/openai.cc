#include "server/openai.h"

#include <limits>

namespace pensieve::server {
namespace {

using json = nlohmann::ordered_json;

const json* field(const json& obj, const char* name) {
  auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

std::string need_string(const json& v, const std::string& path) {
  if (!v.is_string()) invalid_request(path, "must be a string");
  return v.get<std::string>();
}

double need_number(const json& v, const std::string& path, double lo, double hi) {
  if (!v.is_number()) invalid_request(path, "must be a number");
  const double d = v.get<double>();
  if (d < lo || d > hi) invalid_request(path, "must be between {} and {}", lo, hi);
  return d;
}

int64_t need_positive(const json& v, const std::string& path) {
  if (!v.is_number_integer() || v.get<int64_t>() < 1) invalid_request(path, "must be a positive integer");
  return v.get<int64_t>();
}

// A message's content: a string, or text parts (the only parts a text
// model takes).
std::string content_text(const json& content, const std::string& path) {
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) invalid_request(path, "must be a string or an array of content parts");
  std::string text;
  for (size_t i = 0; i < content.size(); ++i) {
    const json& part = content[i];
    const std::string p = path + "." + std::to_string(i);
    if (!part.is_object()) invalid_request(p, "must be an object");
    const json* type = field(part, "type");
    const std::string t = type ? need_string(*type, p + ".type") : "";
    if (t != "text")
      invalid_request(p + ".type", "'{}' is not supported: this server takes text parts only", t);
    const json* tx = field(part, "text");
    if (tx == nullptr) invalid_request(p + ".text", "is required");
    text += need_string(*tx, p + ".text");
  }
  return text;
}

ContentBlock text_block(std::string text) {
  ContentBlock b;
  b.type = ContentBlock::Type::text;
  b.text = std::move(text);
  return b;
}

json usage_from(int64_t n_prompt, int64_t n_cached, int64_t n_output) {
  return {{"prompt_tokens", n_prompt},
          {"completion_tokens", n_output},
          {"total_tokens", n_prompt + n_output},
          {"prompt_tokens_details", {{"cached_tokens", n_cached}}}};
}

}  // namespace

ChatRequest parse_chat_request(const json& body) {
  if (!body.is_object()) invalid_request("", "the body must be a JSON object");
  ChatRequest out;
  MessagesRequest& r = out.messages;
  const json* model = field(body, "model");
  if (model == nullptr) invalid_request("model", "is required");
  r.model = need_string(*model, "model");

  if (const json* n = field(body, "n")) {
    if (!n->is_number_integer() || n->get<int64_t>() != 1)
      invalid_request("n", "only 1 is supported (one choice per request)");
  }
  if (const json* lp = field(body, "logprobs"); lp != nullptr && lp->is_boolean() && lp->get<bool>())
    invalid_request("logprobs", "is not supported");

  const json* messages = field(body, "messages");
  if (messages == nullptr) invalid_request("messages", "is required");
  if (!messages->is_array() || messages->empty()) invalid_request("messages", "must be a non-empty array");
  bool last_is_tool_results = false;  // the last user turn was made from `tool` messages
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& m = (*messages)[i];
    const std::string path = "messages." + std::to_string(i);
    if (!m.is_object()) invalid_request(path, "must be an object");
    const json* role_v = field(m, "role");
    if (role_v == nullptr) invalid_request(path + ".role", "is required");
    const std::string role = need_string(*role_v, path + ".role");
    const json* content = field(m, "content");
    if (role == "system" || role == "developer") {
      if (content == nullptr) invalid_request(path + ".content", "is required");
      r.system.push_back(content_text(*content, path + ".content"));
      r.system_cache_breakpoints.push_back(false);
      continue;
    }
    if (role == "user") {
      if (content == nullptr) invalid_request(path + ".content", "is required");
      ContentBlock b = text_block(content_text(*content, path + ".content"));
      if (last_is_tool_results) r.messages.back().content.push_back(std::move(b));
      else r.messages.push_back({"user", {std::move(b)}});
      last_is_tool_results = false;
      continue;
    }
    if (role == "tool") {
      const json* id = field(m, "tool_call_id");
      if (id == nullptr) invalid_request(path + ".tool_call_id", "is required");
      ContentBlock b;
      b.type = ContentBlock::Type::tool_result;
      b.tool_use_id = need_string(*id, path + ".tool_call_id");
      b.text = content == nullptr ? "" : content_text(*content, path + ".content");
      if (last_is_tool_results) r.messages.back().content.push_back(std::move(b));
      else r.messages.push_back({"user", {std::move(b)}});
      last_is_tool_results = true;
      continue;
    }
    if (role != "assistant")
      invalid_request(path + ".role", "'{}' is not a role: use system, developer, user, assistant or tool", role);
    last_is_tool_results = false;
    Message a{"assistant", {}};
    if (content != nullptr) {
      std::string text = content_text(*content, path + ".content");
      if (!text.empty()) a.content.push_back(text_block(std::move(text)));
    }
    if (const json* calls = field(m, "tool_calls")) {
      if (!calls->is_array()) invalid_request(path + ".tool_calls", "must be an array");
      for (size_t k = 0; k < calls->size(); ++k) {
        const json& c = (*calls)[k];
        const std::string cp = path + ".tool_calls." + std::to_string(k);
        if (!c.is_object()) invalid_request(cp, "must be an object");
        const json* fn = field(c, "function");
        if (fn == nullptr || !fn->is_object()) invalid_request(cp + ".function", "is required");
        const json* id = field(c, "id");
        if (id == nullptr) invalid_request(cp + ".id", "is required");
        const json* name = field(*fn, "name");
        if (name == nullptr) invalid_request(cp + ".function.name", "is required");
        ContentBlock b;
        b.type = ContentBlock::Type::tool_use;
        b.id = need_string(*id, cp + ".id");
        b.name = need_string(*name, cp + ".function.name");
        const json* args = field(*fn, "arguments");
        const std::string text = args == nullptr ? "{}" : need_string(*args, cp + ".function.arguments");
        try {
          b.input = json::parse(text.empty() ? "{}" : text);
        } catch (const json::exception&) {
          invalid_request(cp + ".function.arguments", "is not JSON");
        }
        if (!b.input.is_object()) invalid_request(cp + ".function.arguments", "must be a JSON object");
        a.content.push_back(std::move(b));
      }
    }
    if (a.content.empty()) a.content.push_back(text_block(""));
    r.messages.push_back(std::move(a));
  }
  if (r.messages.empty()) invalid_request("messages", "must hold a user message, not only system messages");

  if (const json* tools = field(body, "tools")) {
    if (!tools->is_array()) invalid_request("tools", "must be an array");
    for (size_t i = 0; i < tools->size(); ++i) {
      const json& t = (*tools)[i];
      const std::string tp = "tools." + std::to_string(i);
      if (!t.is_object()) invalid_request(tp, "must be an object");
      const json* type = field(t, "type");
      if (type == nullptr || need_string(*type, tp + ".type") != "function")
        invalid_request(tp + ".type", "must be \"function\"");
      const json* fn = field(t, "function");
      if (fn == nullptr || !fn->is_object()) invalid_request(tp + ".function", "is required");
      const json* name = field(*fn, "name");
      if (name == nullptr) invalid_request(tp + ".function.name", "is required");
      Tool tool;
      tool.name = need_string(*name, tp + ".function.name");
      if (const json* d = field(*fn, "description")) tool.description = need_string(*d, tp + ".function.description");
      tool.input_schema = json{{"type", "object"}, {"properties", json::object()}};
      if (const json* p = field(*fn, "parameters")) {
        if (!p->is_object()) invalid_request(tp + ".function.parameters", "must be a JSON Schema object");
        tool.input_schema = *p;
      }
      r.tools.push_back(std::move(tool));
    }
  }
  if (const json* tc = field(body, "tool_choice")) {
    if (tc->is_string()) {
      const std::string c = tc->get<std::string>();
      if (c == "none") r.tool_choice.type = ToolChoice::Type::none;
      else if (c == "auto") r.tool_choice.type = ToolChoice::Type::automatic;
      else if (c == "required") r.tool_choice.type = ToolChoice::Type::any;
      else invalid_request("tool_choice", "'{}' is not none, auto, required or a function", c);
    } else if (tc->is_object()) {
      const json* fn = field(*tc, "function");
      const json* name = fn != nullptr && fn->is_object() ? field(*fn, "name") : nullptr;
      if (name == nullptr) invalid_request("tool_choice.function.name", "is required");
      r.tool_choice.type = ToolChoice::Type::tool;
      r.tool_choice.name = need_string(*name, "tool_choice.function.name");
      bool known = false;
      for (const Tool& t : r.tools) known |= t.name == r.tool_choice.name;
      if (!known) invalid_request("tool_choice.function.name", "'{}' is not one of the tools", r.tool_choice.name);
    } else {
      invalid_request("tool_choice", "must be a string or an object");
    }
    if (r.tool_choice.type != ToolChoice::Type::none && r.tool_choice.type != ToolChoice::Type::automatic &&
        r.tools.empty())
      invalid_request("tool_choice", "needs tools");
  }
  if (const json* ptc = field(body, "parallel_tool_calls"); ptc != nullptr && ptc->is_boolean())
    r.tool_choice.disable_parallel_tool_use = !ptc->get<bool>();

  if (const json* rf = field(body, "response_format")) {
    if (!rf->is_object()) invalid_request("response_format", "must be an object");
    const json* type = field(*rf, "type");
    const std::string t = type ? need_string(*type, "response_format.type") : "";
    if (t == "json_schema" || t == "json_object") {
      if (!r.tools.empty()) invalid_request("response_format", "cannot be combined with tools on this server");
      Tool answer;
      answer.name = "json_answer";
      answer.description = "Give the answer as a JSON object of this shape.";
      answer.input_schema = json{{"type", "object"}};
      if (t == "json_schema") {
        const json* js = field(*rf, "json_schema");
        if (js == nullptr || !js->is_object()) invalid_request("response_format.json_schema", "is required");
        if (const json* name = field(*js, "name")) answer.name = need_string(*name, "response_format.json_schema.name");
        if (const json* d = field(*js, "description"))
          answer.description = need_string(*d, "response_format.json_schema.description");
        const json* schema = field(*js, "schema");
        if (schema != nullptr) {
          if (!schema->is_object() || schema->value("type", json("object")) != json("object"))
            invalid_request("response_format.json_schema.schema",
                            "must describe a JSON object (\"type\": \"object\") on this server");
          answer.input_schema = *schema;
        }
      }
      r.tool_choice = {ToolChoice::Type::tool, answer.name, true};
      r.tools.push_back(std::move(answer));
      out.json_response = true;
    } else if (t != "text") {
      invalid_request("response_format.type", "'{}' is not text, json_object or json_schema", t);
    }
  }

  if (const json* stop = field(body, "stop")) {
    if (stop->is_string()) {
      r.stop_sequences.push_back(stop->get<std::string>());
    } else if (stop->is_array()) {
      for (size_t i = 0; i < stop->size(); ++i) r.stop_sequences.push_back(need_string((*stop)[i], "stop." + std::to_string(i)));
    } else {
      invalid_request("stop", "must be a string or an array of strings");
    }
  }
  if (const json* t = field(body, "temperature")) r.temperature = need_number(*t, "temperature", 0, 2);
  if (const json* p = field(body, "top_p")) r.top_p = need_number(*p, "top_p", 0, 1);
  if (const json* s = field(body, "seed")) {
    if (!s->is_number_integer()) invalid_request("seed", "must be an integer");
    r.seed = static_cast<uint64_t>(s->get<int64_t>());
  }
  if (const json* mt = field(body, "max_completion_tokens")) r.max_tokens = need_positive(*mt, "max_completion_tokens");
  else if (const json* m = field(body, "max_tokens")) r.max_tokens = need_positive(*m, "max_tokens");
  if (const json* s = field(body, "stream")) {
    if (!s->is_boolean()) invalid_request("stream", "must be true or false");
    r.stream = s->get<bool>();
  }
  if (const json* so = field(body, "stream_options")) {
    if (!so->is_object()) invalid_request("stream_options", "must be an object");
    if (const json* iu = field(*so, "include_usage")) {
      if (!iu->is_boolean()) invalid_request("stream_options.include_usage", "must be true or false");
      out.include_usage = iu->get<bool>();
    }
  }
  return out;
}

std::string finish_reason(const std::string& stop_reason) {
  if (stop_reason == "max_tokens") return "length";
  if (stop_reason == "tool_use") return "tool_calls";
  return "stop";  // end_turn, stop_sequence
}

json openai_usage(const json& usage) {
  const int64_t cached = usage.value("cache_read_input_tokens", int64_t{0});
  const int64_t prompt = usage.value("input_tokens", int64_t{0}) + cached +
                         usage.value("cache_creation_input_tokens", int64_t{0});
  return usage_from(prompt, cached, usage.value("output_tokens", int64_t{0}));
}

json chat_completion(const json& message, const std::string& id, int64_t created, bool json_response) {
  std::string text;
  bool has_text = false;
  json calls = json::array();
  for (const json& block : message.value("content", json::array())) {
    const std::string type = block.value("type", "");
    if (type == "text") {
      text += block.value("text", "");
      has_text = true;
    } else if (type == "tool_use") {
      if (json_response) {
        text += block.value("input", json::object()).dump();
        has_text = true;
      } else {
        calls.push_back({{"id", block.value("id", "")},
                         {"type", "function"},
                         {"function", {{"name", block.value("name", "")}, {"arguments", block.value("input", json::object()).dump()}}}});
      }
    }
  }
  std::string reason = finish_reason(message.value("stop_reason", "end_turn"));
  if (json_response && reason == "tool_calls") reason = "stop";
  json msg = {{"role", "assistant"}, {"content", has_text ? json(text) : json(nullptr)}, {"refusal", nullptr}};
  if (!calls.empty()) msg["tool_calls"] = std::move(calls);
  return {{"id", id},
          {"object", "chat.completion"},
          {"created", created},
          {"model", message.value("model", "")},
          {"choices", json::array({{{"index", 0}, {"message", std::move(msg)}, {"logprobs", nullptr}, {"finish_reason", reason}}})},
          {"usage", openai_usage(message.value("usage", json::object()))}};
}

ChatChunker::ChatChunker(std::string id, std::string model, int64_t created, bool include_usage, bool json_response)
    : id_(std::move(id)), model_(std::move(model)), created_(created), include_usage_(include_usage),
      json_response_(json_response) {}

json ChatChunker::chunk(json delta, const nlohmann::json& finish) const {
  json c = {{"id", id_},
            {"object", "chat.completion.chunk"},
            {"created", created_},
            {"model", model_},
            {"choices", json::array({{{"index", 0}, {"delta", std::move(delta)}, {"logprobs", nullptr}, {"finish_reason", finish}}})}};
  if (include_usage_) c["usage"] = nullptr;
  return c;
}

void ChatChunker::add(const json& event, std::vector<json>& chunks) {
  const std::string type = event.value("type", "");
  if (type == "message_start") {
    const json& usage = event["message"]["usage"];
    n_cached_ = usage.value("cache_read_input_tokens", int64_t{0});
    n_prompt_ = usage.value("input_tokens", int64_t{0}) + n_cached_ + usage.value("cache_creation_input_tokens", int64_t{0});
    chunks.push_back(chunk({{"role", "assistant"}, {"content", ""}}, nullptr));
  } else if (type == "content_block_start") {
    const json& block = event["content_block"];
    block_type_ = block.value("type", "");
    if (block_type_ == "tool_use" && !json_response_) {
      ++tool_index_;
      chunks.push_back(chunk({{"tool_calls", json::array({{{"index", tool_index_},
                                                            {"id", block.value("id", "")},
                                                            {"type", "function"},
                                                            {"function", {{"name", block.value("name", "")}, {"arguments", ""}}}}})}},
                             nullptr));
    }
  } else if (type == "content_block_delta") {
    const json& d = event["delta"];
    const std::string dt = d.value("type", "");
    if (dt == "text_delta") {
      chunks.push_back(chunk({{"content", d.value("text", "")}}, nullptr));
    } else if (dt == "input_json_delta") {
      const std::string part = d.value("partial_json", "");
      if (part.empty()) return;
      if (json_response_) chunks.push_back(chunk({{"content", part}}, nullptr));
      else chunks.push_back(chunk({{"tool_calls", json::array({{{"index", tool_index_}, {"function", {{"arguments", part}}}}})}}, nullptr));
    }
  } else if (type == "message_delta") {
    std::string reason = finish_reason(event["delta"].value("stop_reason", "end_turn"));
    if (json_response_ && reason == "tool_calls") reason = "stop";
    chunks.push_back(chunk(json::object(), reason));
    if (include_usage_) {
      const int64_t n_output = event.value("usage", json::object()).value("output_tokens", int64_t{0});
      json u = {{"id", id_}, {"object", "chat.completion.chunk"}, {"created", created_}, {"model", model_},
                {"choices", json::array()}, {"usage", usage_from(n_prompt_, n_cached_, n_output)}};
      chunks.push_back(std::move(u));
    }
  }
}

json openai_error(const ApiError& e) {
  json code = nullptr;
  std::string type = e.type();
  switch (e.status()) {
    case 401: code = "invalid_api_key"; break;
    case 404: code = std::string_view(e.what()).rfind("model: ", 0) == 0 ? "model_not_found" : "not_found"; break;
    case 429: code = "rate_limit_exceeded"; break;
    default: break;
  }
  return {{"error", {{"message", e.what()}, {"type", type}, {"param", nullptr}, {"code", code}}}};
}

}  // namespace pensieve::server
