#include "server/request.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "server/api_error.h"

namespace pensieve::server {
namespace {

using json = nlohmann::ordered_json;

std::string join_path(const std::string& path, const std::string& key) {
  return path.empty() ? key : path + "." + key;
}
std::string join_path(const std::string& path, size_t index) {
  return path + "." + std::to_string(index);
}

const char* kind_name(const json& j) {
  switch (j.type()) {
    case json::value_t::null: return "null";
    case json::value_t::object: return "an object";
    case json::value_t::array: return "an array";
    case json::value_t::string: return "a string";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::number_float: return "a number";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return "an integer";
    default: return "an unsupported value";
  }
}

// The member, or nullptr when absent or null (clients send null for "unset").
const json* optional_field(const json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

const json& required_field(const json& obj, const std::string& path, const char* key) {
  const json* j = optional_field(obj, key);
  if (!j) invalid_request(join_path(path, key), "Field required");
  return *j;
}

void expect(bool ok, const json& j, const std::string& path, const char* what) {
  if (!ok) invalid_request(path, "expected {}, got {}", what, kind_name(j));
}

const std::string& get_string(const json& j, const std::string& path) {
  expect(j.is_string(), j, path, "a string");
  return j.get_ref<const std::string&>();
}

int64_t get_integer(const json& j, const std::string& path) {
  if (j.is_number_float()) {
    const double v = j.get<double>();
    // JavaScript clients may send 1024.0; accept whole numbers in range.
    // (Integers past 64 bits, like 1e300, parse as floats too.)
    if (v == std::trunc(v)) {
      if (!(v >= -0x1p63 && v < 0x1p63)) invalid_request(path, "integer out of range");
      return static_cast<int64_t>(v);
    }
  }
  expect(j.is_number_integer(), j, path, "an integer");
  if (j.is_number_unsigned() && j.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
    invalid_request(path, "integer out of range");
  return j.get<int64_t>();
}

double get_number(const json& j, const std::string& path, double lo, double hi) {
  expect(j.is_number(), j, path, "a number");
  double v = j.get<double>();
  if (!(v >= lo && v <= hi)) invalid_request(path, "must be between {} and {}, got {}", lo, hi, v);
  return v;
}

bool get_bool(const json& j, const std::string& path) {
  expect(j.is_boolean(), j, path, "a boolean");
  return j.get<bool>();
}

const json& get_object(const json& j, const std::string& path) {
  expect(j.is_object(), j, path, "an object");
  return j;
}

const json& get_array(const json& j, const std::string& path) {
  expect(j.is_array(), j, path, "an array");
  return j;
}

[[noreturn]] void reject_media(const std::string& path, const std::string& type) {
  invalid_request(path, "{} content is not supported: the loaded model is text-only", type);
}

// A document with a plain-text source is just text; anything else (PDF,
// base64, URL) needs a vision model.
std::string document_text(const json& block, const std::string& path) {
  const json& source = get_object(required_field(block, path, "source"), join_path(path, "source"));
  const json* type = optional_field(source, "type");
  if (type && type->is_string() && *type == "text") {
    std::string text;
    if (const json* title = optional_field(block, "title"))
      text = get_string(*title, join_path(path, "title")) + "\n\n";
    return text + get_string(required_field(source, join_path(path, "source"), "data"),
                             join_path(path, "source.data"));
  }
  reject_media(path, "document");
}

// tool_result "content": a string or text/image blocks; returns the text.
std::string tool_result_text(const json& content, const std::string& path,
                             const ParseOptions& options) {
  if (content.is_string()) return content.get<std::string>();
  get_array(content, path);
  std::string text;
  for (size_t i = 0; i < content.size(); ++i) {
    std::string block_path = join_path(path, i);
    const json& block = get_object(content[i], block_path);
    const std::string& type = get_string(required_field(block, block_path, "type"),
                                         join_path(block_path, "type"));
    std::string piece;
    if (type == "text") {
      piece = get_string(required_field(block, block_path, "text"), join_path(block_path, "text"));
    } else if (type == "document") {
      piece = document_text(block, block_path);
    } else if (type == "image") {
      reject_media(block_path, "image");
    } else {
      continue;  // search_result and newer types: nothing a text model can use
    }
    if (!text.empty()) text += "\n";
    text += piece;
  }
  return text;
}

// A cache_control object (any type: only its position matters here).
bool cache_control(const json& object, const std::string& path) {
  const json* c = optional_field(object, "cache_control");
  if (c == nullptr) return false;
  get_object(*c, join_path(path, "cache_control"));
  return true;
}

std::optional<ContentBlock> parse_block(const json& j, const std::string& path,
                                        const std::string& role, const ParseOptions& options) {
  const json& block = get_object(j, path);
  const std::string& type =
      get_string(required_field(block, path, "type"), join_path(path, "type"));
  ContentBlock out;
  out.cache_breakpoint = cache_control(block, path);
  if (type == "text") {
    out.type = ContentBlock::Type::text;
    out.text = get_string(required_field(block, path, "text"), join_path(path, "text"));
  } else if (type == "image") {
    if (!options.vision) reject_media(path, "image");
    invalid_request(path, "image input is not implemented by this server");
  } else if (type == "document") {
    out.type = ContentBlock::Type::text;
    out.text = document_text(block, path);
  } else if (type == "tool_use") {
    if (role != "assistant")
      invalid_request(join_path(path, "type"), "tool_use blocks are only allowed in assistant messages");
    out.type = ContentBlock::Type::tool_use;
    out.id = get_string(required_field(block, path, "id"), join_path(path, "id"));
    out.name = get_string(required_field(block, path, "name"), join_path(path, "name"));
    out.input = get_object(required_field(block, path, "input"), join_path(path, "input"));
  } else if (type == "tool_result") {
    if (role != "user")
      invalid_request(join_path(path, "type"), "tool_result blocks are only allowed in user messages");
    out.type = ContentBlock::Type::tool_result;
    out.tool_use_id =
        get_string(required_field(block, path, "tool_use_id"), join_path(path, "tool_use_id"));
    if (const json* content = optional_field(block, "content"))
      out.text = tool_result_text(*content, join_path(path, "content"), options);
    if (const json* is_error = optional_field(block, "is_error"))
      out.is_error = get_bool(*is_error, join_path(path, "is_error"));
  } else if (type == "thinking") {
    out.type = ContentBlock::Type::thinking;
    out.text = get_string(required_field(block, path, "thinking"), join_path(path, "thinking"));
    if (const json* sig = optional_field(block, "signature"))
      out.signature = get_string(*sig, join_path(path, "signature"));
  } else if (type == "redacted_thinking") {
    out.type = ContentBlock::Type::redacted_thinking;
  } else {
    return std::nullopt;  // server tool blocks, containers...: not for a local model
  }
  return out;
}

Message parse_message(const json& j, const std::string& path, const ParseOptions& options) {
  const json& message = get_object(j, path);
  Message out;
  out.role = get_string(required_field(message, path, "role"), join_path(path, "role"));
  if (out.role != "user" && out.role != "assistant" && out.role != "system")
    invalid_request(join_path(path, "role"),
                    "Input should be 'user', 'assistant' or 'system', got '{}'", out.role);
  const json& content = required_field(message, path, "content");
  std::string content_path = join_path(path, "content");
  if (content.is_string()) {
    out.content.push_back({ContentBlock::Type::text, content.get<std::string>()});
    return out;
  }
  expect(content.is_array(), content, content_path, "a string or an array of content blocks");
  for (size_t i = 0; i < content.size(); ++i) {
    if (auto block = parse_block(content[i], join_path(content_path, i), out.role, options))
      out.content.push_back(std::move(*block));
  }
  if (out.role == "system") {
    for (size_t i = 0; i < out.content.size(); ++i)
      if (out.content[i].type != ContentBlock::Type::text)
        invalid_request(content_path, "system messages may only contain text blocks");
  }
  return out;
}

void parse_system(const json& j, MessagesRequest& req) {
  if (j.is_string()) {
    req.system = {j.get<std::string>()};
    req.system_cache_breakpoints = {false};
    return;
  }
  expect(j.is_array(), j, "system", "a string or an array of text blocks");
  for (size_t i = 0; i < j.size(); ++i) {
    std::string path = join_path("system", i);
    const json& block = get_object(j[i], path);
    const std::string& type =
        get_string(required_field(block, path, "type"), join_path(path, "type"));
    if (type != "text") invalid_request(join_path(path, "type"), "Input should be 'text'");
    req.system.push_back(get_string(required_field(block, path, "text"), join_path(path, "text")));
    req.system_cache_breakpoints.push_back(cache_control(block, path));
  }
}

std::vector<Tool> parse_tools(const json& j) {
  get_array(j, "tools");
  std::vector<Tool> out;
  std::set<std::string> names;
  for (size_t i = 0; i < j.size(); ++i) {
    std::string path = join_path("tools", i);
    const json& tool = get_object(j[i], path);
    Tool t;
    t.name = get_string(required_field(tool, path, "name"), join_path(path, "name"));
    if (t.name.empty()) invalid_request(join_path(path, "name"), "must not be empty");
    if (!names.insert(t.name).second)
      invalid_request(join_path(path, "name"), "tool names must be unique ('{}')", t.name);
    if (const json* d = optional_field(tool, "description"))
      t.description = get_string(*d, join_path(path, "description"));
    if (const json* schema = optional_field(tool, "input_schema")) {
      t.input_schema = get_object(*schema, join_path(path, "input_schema"));
    } else if (optional_field(tool, "type")) {
      // Anthropic-defined client tools (bash_2025..., text_editor_...) carry no schema.
      t.input_schema = {{"type", "object"}, {"properties", json::object()}};
    } else {
      invalid_request(join_path(path, "input_schema"), "Field required");
    }
    if (const json* d = optional_field(tool, "defer_loading"))
      t.deferred = get_bool(*d, join_path(path, "defer_loading"));
    t.cache_breakpoint = cache_control(tool, path);
    out.push_back(std::move(t));
  }
  return out;
}

ToolChoice parse_tool_choice(const json& j, const std::vector<Tool>& tools) {
  get_object(j, "tool_choice");
  ToolChoice out;
  const std::string& type = get_string(required_field(j, "tool_choice", "type"), "tool_choice.type");
  if (type == "auto") out.type = ToolChoice::Type::automatic;
  else if (type == "any") out.type = ToolChoice::Type::any;
  else if (type == "none") out.type = ToolChoice::Type::none;
  else if (type == "tool") out.type = ToolChoice::Type::tool;
  else invalid_request("tool_choice.type", "Input should be 'auto', 'any', 'tool' or 'none', got '{}'", type);
  if (out.type == ToolChoice::Type::tool) {
    out.name = get_string(required_field(j, "tool_choice", "name"), "tool_choice.name");
    bool known = false;
    for (const Tool& t : tools) known = known || t.name == out.name;
    if (!known) invalid_request("tool_choice.name", "tool '{}' is not in tools", out.name);
  }
  if (const json* d = optional_field(j, "disable_parallel_tool_use"))
    out.disable_parallel_tool_use = get_bool(*d, "tool_choice.disable_parallel_tool_use");
  return out;
}

ThinkingMode parse_thinking(const json& j) {
  get_object(j, "thinking");
  const std::string& type = get_string(required_field(j, "thinking", "type"), "thinking.type");
  if (type == "disabled") return ThinkingMode::disabled;
  if (type == "adaptive") return ThinkingMode::adaptive;
  if (type == "enabled") {
    int64_t budget = get_integer(required_field(j, "thinking", "budget_tokens"), "thinking.budget_tokens");
    if (budget < 1) invalid_request("thinking.budget_tokens", "must be at least 1");
    return ThinkingMode::enabled;
  }
  invalid_request("thinking.type", "Input should be 'enabled', 'disabled' or 'adaptive', got '{}'", type);
}

// Every tool_result must answer a tool_use that came earlier in the conversation.
void check_tool_results(const std::vector<Message>& messages) {
  std::set<std::string> seen;
  for (size_t m = 0; m < messages.size(); ++m) {
    for (size_t b = 0; b < messages[m].content.size(); ++b) {
      const ContentBlock& block = messages[m].content[b];
      if (block.type == ContentBlock::Type::tool_use) seen.insert(block.id);
      if (block.type == ContentBlock::Type::tool_result && !seen.count(block.tool_use_id))
        invalid_request(fmt::format("messages.{}.content", m),
                        "unexpected `tool_use_id` found in `tool_result` blocks: {}. Each "
                        "`tool_result` block must have a corresponding `tool_use` block in an "
                        "earlier message.",
                        block.tool_use_id);
    }
  }
}

// Paths deeper than this are not worth naming (and a hostile body nests
// thousands deep).
constexpr size_t kMaxNamedDepth = 32;

}  // namespace

// Nesting past this is refused: no request needs it (tool schemas nest a
// few levels), and every level costs the template and the grammar a frame.
constexpr size_t kMaxDepth = 64;

// What parse_request_body's callback refuses, with the path where.
struct BodyRefused {
  std::string path;
  std::string message;
};

json parse_request_body(const std::string& body) {
  // One pass that also refuses what JSON parsers disagree on or what costs
  // without bound: a key twice in one object (nlohmann keeps the last, other
  // parsers the first: the client and we would read different requests) and
  // nesting deeper than kMaxDepth. Frames follow the path for the message.
  struct Frame {
    bool array = false;
    size_t n_items = 0;
    std::string key;
    std::vector<std::string> keys;  // object: the keys so far
  };
  std::vector<Frame> frames;
  auto path_here = [&frames](bool with_key) {
    std::string path;
    const size_t n = std::min(frames.size(), kMaxNamedDepth);
    for (size_t i = 0; i < n; ++i) {
      const Frame& f = frames[i];
      if (i + 1 == frames.size() && !with_key) break;
      path = f.array ? join_path(path, f.n_items) : join_path(path, f.key);
    }
    return path;
  };
  const json::parser_callback_t check = [&](int depth, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (static_cast<size_t>(depth) >= kMaxDepth)
          throw BodyRefused{path_here(true), fmt::format("nested deeper than {} levels", kMaxDepth)};
        frames.push_back({event == json::parse_event_t::array_start, 0, "", {}});
        break;
      case json::parse_event_t::key: {
        Frame& f = frames.back();
        f.key = parsed.get<std::string>();
        if (std::find(f.keys.begin(), f.keys.end(), f.key) != f.keys.end())
          throw BodyRefused{path_here(true), "duplicate key in a JSON object"};
        f.keys.push_back(f.key);
        break;
      }
      case json::parse_event_t::value:
        if (!frames.empty() && frames.back().array) ++frames.back().n_items;
        break;
      case json::parse_event_t::object_end:
      case json::parse_event_t::array_end:
        frames.pop_back();
        if (!frames.empty() && frames.back().array) ++frames.back().n_items;
        break;
    }
    return true;
  };
  try {
    return json::parse(body, check);
  } catch (const BodyRefused& refused) {
    invalid_request(refused.path, "{}", refused.message);
  } catch (const json::exception& e) {
    // A parse_error for bad syntax, or out_of_range 406 for a number no
    // double holds (1e999): both are the client's, never a 500.
    std::string what = e.what();
    const size_t pos = what.find("] ");  // drop nlohmann's "[json.exception.parse_error.101] "
    if (pos != std::string::npos) what = what.substr(pos + 2);
    // nlohmann quotes what it read ("last read: '...'"), which after a run of
    // brackets is most of the body: keep its start and the failing end.
    constexpr size_t kMaxShown = 400;
    if (what.size() > kMaxShown) what = what.substr(0, 200) + " ... " + what.substr(what.size() - 150);
    constexpr int kNumberOverflow = 406;
    const bool overflow = e.id == kNumberOverflow;
    // A value that is not JSON (NaN, Infinity, 1e, a bare word, a string
    // with bad UTF-8 or a lone surrogate) is named by its field, as a wrong
    // value is; other syntax errors have no field.
    const bool bad_value =
        overflow || (what.find("while parsing value") != std::string::npos &&
                     (what.find("invalid literal") != std::string::npos ||
                      what.find("invalid number") != std::string::npos ||
                      what.find("invalid string") != std::string::npos));
    // The frames stand where parsing stopped: the failing value's path
    // (none when nested too deep to name).
    const std::string path = bad_value && frames.size() <= kMaxNamedDepth ? path_here(true) : "";
    if (overflow) invalid_request(path, "number out of range ({})", what);
    invalid_request(path, "request body is not valid JSON: {}", what);
  }
}

MessagesRequest parse_messages_request(const json& body, const ParseOptions& options) {
  if (!body.is_object()) invalid_request("", "request body must be a JSON object, got {}", kind_name(body));
  MessagesRequest req;
  req.model = get_string(required_field(body, "", "model"), "model");

  if (options.require_max_tokens) {
    req.max_tokens = get_integer(required_field(body, "", "max_tokens"), "max_tokens");
    if (req.max_tokens < 1) invalid_request("max_tokens", "must be at least 1, got {}", req.max_tokens);
  } else if (const json* m = optional_field(body, "max_tokens")) {
    req.max_tokens = get_integer(*m, "max_tokens");
  }

  const json& messages = get_array(required_field(body, "", "messages"), "messages");
  if (messages.empty()) invalid_request("messages", "at least one message is required");
  for (size_t i = 0; i < messages.size(); ++i)
    req.messages.push_back(parse_message(messages[i], join_path("messages", i), options));
  check_tool_results(req.messages);

  if (const json* s = optional_field(body, "system")) parse_system(*s, req);
  req.cache_at_end = cache_control(body, "");
  if (const json* s = optional_field(body, "stop_sequences")) {
    get_array(*s, "stop_sequences");
    for (size_t i = 0; i < s->size(); ++i) {
      const std::string& stop = get_string((*s)[i], join_path("stop_sequences", i));
      if (!stop.empty()) req.stop_sequences.push_back(stop);
    }
  }
  if (const json* t = optional_field(body, "temperature")) req.temperature = get_number(*t, "temperature", 0, 1);
  if (const json* t = optional_field(body, "top_p")) req.top_p = get_number(*t, "top_p", 0, 1);
  if (const json* t = optional_field(body, "top_k")) {
    req.top_k = get_integer(*t, "top_k");
    if (*req.top_k < 0) invalid_request("top_k", "must be at least 0");
  }
  if (const json* t = optional_field(body, "min_p")) req.min_p = get_number(*t, "min_p", 0, 1);
  if (const json* s = optional_field(body, "seed")) {
    int64_t seed = get_integer(*s, "seed");
    req.seed = static_cast<uint64_t>(seed);
  }
  if (const json* s = optional_field(body, "stream")) req.stream = get_bool(*s, "stream");
  if (const json* m = optional_field(body, "metadata")) get_object(*m, "metadata");
  if (const json* t = optional_field(body, "tools")) req.tools = parse_tools(*t);
  if (const json* t = optional_field(body, "tool_choice")) req.tool_choice = parse_tool_choice(*t, req.tools);
  if (const json* t = optional_field(body, "thinking")) req.thinking = parse_thinking(*t);
  return req;
}

}  // namespace pensieve::server
