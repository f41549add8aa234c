#include "server/json_grammar.h"

#include <algorithm>
#include <numeric>

namespace pensieve::server {
namespace {

using Kind = GrammarNode::Kind;
using json = nlohmann::ordered_json;

constexpr int kMaxDigits = 16;
// Exponents stay within two digits, so that every number is a finite double
// (the tool_grammar fuzz target found 1e9999999999999999, which no JSON
// parser takes).
constexpr int kMaxExponentDigits = 2;
constexpr int kMaxDepth = 8;

GrammarNode make(Kind kind, std::string text = {}) {
  GrammarNode n;
  n.kind = kind;
  n.text = std::move(text);
  return n;
}

// The nodes free-form values are made of, shared by every grammar.
struct SharedNodes {
  GrammarNode string = make(Kind::string), number = make(Kind::number), any = make(Kind::any),
              object = make(Kind::any_object), array = make(Kind::any_array),
              lit_true = make(Kind::literal, "true"), lit_false = make(Kind::literal, "false"),
              lit_null = make(Kind::literal, "null");
};
const SharedNodes& shared() {
  static const SharedNodes nodes;
  return nodes;
}

// The node a free-form value starting with `c` is; nullptr when none starts so.
const GrammarNode* value_starting_with(unsigned char c) {
  const SharedNodes& n = shared();
  switch (c) {
    case '{': return &n.object;
    case '[': return &n.array;
    case '"': return &n.string;
    case 't': return &n.lit_true;
    case 'f': return &n.lit_false;
    case 'n': return &n.lit_null;
    default: return c == '-' || (c >= '0' && c <= '9') ? &n.number : nullptr;
  }
}

// Sorts options (and the children that go with them) so that the options
// sharing a prefix form one contiguous range.
GrammarNode make_choice(std::vector<std::string> options, std::vector<GrammarNode> children = {}) {
  std::vector<size_t> order(options.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return options[a] < options[b]; });
  GrammarNode n = make(Kind::choice);
  for (size_t i : order) {
    if (!n.options.empty() && n.options.back() == options[i]) continue;  // duplicates
    n.options.push_back(options[i]);
    if (!children.empty()) n.children.push_back(std::move(children[i]));
  }
  return n;
}

GrammarNode schema_node(const json& schema, int depth) {
  if (!schema.is_object() || depth > kMaxDepth) return make(Kind::any);
  if (auto it = schema.find("const"); it != schema.end()) return make(Kind::literal, it->dump());
  if (auto it = schema.find("enum"); it != schema.end() && it->is_array() && !it->empty()) {
    std::vector<std::string> options;
    for (const auto& v : *it) options.push_back(v.dump());
    return make_choice(std::move(options));
  }
  for (const char* key : {"anyOf", "oneOf"}) {
    if (auto it = schema.find(key); it != schema.end() && it->is_array() && !it->empty())
      return schema_node((*it)[0], depth + 1);
  }
  std::string type;
  if (auto it = schema.find("type"); it != schema.end()) {
    if (it->is_string()) {
      type = it->get<std::string>();
    } else if (it->is_array()) {
      for (const auto& t : *it) {
        if (!t.is_string()) continue;
        if (type.empty() || type == "null") type = t.get<std::string>();
      }
    }
  }
  const auto props = schema.find("properties");
  const bool has_props = props != schema.end() && props->is_object();
  if (type.empty() && has_props) type = "object";
  if (type == "string") return make(Kind::string);
  if (type == "integer") return make(Kind::integer);
  if (type == "number") return make(Kind::number);
  if (type == "boolean") return make_choice({"true", "false"});
  if (type == "null") return make(Kind::literal, "null");
  if (type == "array") {
    GrammarNode n = make(Kind::array);
    auto items = schema.find("items");
    n.children.push_back(items != schema.end() ? schema_node(*items, depth + 1) : make(Kind::any));
    return n;
  }
  if (type == "object") {
    if (!has_props) return make(Kind::any_object);
    std::vector<std::string> required;
    if (auto r = schema.find("required"); r != schema.end() && r->is_array()) {
      for (const auto& k : *r) {
        if (k.is_string() && std::find(required.begin(), required.end(), k.get<std::string>()) == required.end())
          required.push_back(k.get<std::string>());
      }
    }
    GrammarNode seq = make(Kind::sequence);
    std::string lit = "{";
    for (size_t i = 0; i < required.size(); ++i) {
      lit += (i ? "," : "") + json(required[i]).dump() + ":";
      seq.children.push_back(make(Kind::literal, lit));
      lit.clear();
      auto p = props->find(required[i]);
      seq.children.push_back(p != props->end() ? schema_node(*p, depth + 1) : make(Kind::any));
    }
    seq.children.push_back(make(Kind::literal, lit + "}"));
    return seq;
  }
  return make(Kind::any);
}

bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
bool is_hex(unsigned char c) {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

}  // namespace

GrammarNode schema_grammar(const nlohmann::ordered_json& schema) { return schema_node(schema, 0); }

namespace {

// A call's arguments are a JSON object whatever input_schema says (the output
// parser takes nothing else as a call): a schema that does not describe an
// object (an enum, a string, ...) gets a free-form object instead.
// (Found by the tool_grammar fuzz target: {"enum": ["a"]} made the grammar
// force `"arguments": "a"`, which no tool call parses.)
GrammarNode arguments_node(const json& schema) {
  GrammarNode n = schema_node(schema, 0);
  const bool object =
      n.kind == Kind::any_object ||
      (n.kind == Kind::sequence && !n.children.empty() && n.children[0].kind == Kind::literal &&
       n.children[0].text.rfind('{', 0) == 0) ||
      (n.kind == Kind::literal && n.text.rfind('{', 0) == 0);
  return object ? n : make(Kind::any_object);
}

}  // namespace

namespace {
GrammarNode arguments_node(const json& schema);
}  // namespace

std::shared_ptr<const GrammarNode> tool_call_grammar(const std::vector<ForcedTool>& tools) {
  auto root = std::make_shared<GrammarNode>(make(Kind::sequence));
  root->children.push_back(make(Kind::literal, "<tool_call>\n{\"name\": \""));
  std::vector<std::string> options;
  std::vector<GrammarNode> branches;
  for (const auto& t : tools) {
    std::string name = json(t.name).dump();  // quoted and escaped
    options.push_back(name.substr(1) + ", \"arguments\": ");
    GrammarNode branch = make(Kind::sequence);
    branch.children.push_back(make(Kind::literal, options.back()));
    branch.children.push_back(arguments_node(t.input_schema));
    branches.push_back(std::move(branch));
  }
  root->children.push_back(make_choice(std::move(options), std::move(branches)));
  root->children.push_back(make(Kind::literal, "}\n</tool_call>"));
  return root;
}

GrammarMatcher::GrammarMatcher(std::shared_ptr<const GrammarNode> root) : root_(std::move(root)) {
  push(root_.get());
  settle();
}

void GrammarMatcher::push(const GrammarNode* node) {
  Frame f{node};
  if (node->kind == Kind::choice) f.hi = static_cast<int32_t>(node->options.size());
  stack_.push_back(f);
}

// Pops sequences whose every child has been matched: their end does not
// depend on the next byte.
void GrammarMatcher::settle() {
  while (!stack_.empty()) {
    const Frame& f = stack_.back();
    if (f.node->kind == Kind::sequence && f.a == static_cast<int32_t>(f.node->children.size())) {
      stack_.pop_back();
      continue;
    }
    if (f.node->kind == Kind::literal && f.node->text.empty()) {
      stack_.pop_back();
      continue;
    }
    break;
  }
}

bool GrammarMatcher::feed(std::string_view text) {
  for (char c : text) {
    if (!feed(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

bool GrammarMatcher::feed(unsigned char c) {
  for (;;) {
    if (stack_.empty()) return false;
    switch (step(stack_.back(), c)) {
      case Step::taken:
        settle();
        return true;
      case Step::done:
        stack_.pop_back();
        settle();
        return true;
      case Step::refused:
        return false;
      case Step::pass:
        stack_.pop_back();
        settle();
        break;
    }
  }
}

// Takes exactly `want`, moving the frame to state `next`.
GrammarMatcher::Step GrammarMatcher::expect(Frame& f, unsigned char c, char want, int32_t next) {
  if (c != static_cast<unsigned char>(want)) return Step::refused;
  f.b = next;
  return Step::taken;
}

// One byte for the frame on top. A container that starts a child pushes it
// and hands the byte to it (the result is then the child's).
GrammarMatcher::Step GrammarMatcher::step(Frame& f, unsigned char c) {
  const GrammarNode& n = *f.node;
  switch (n.kind) {
    case Kind::literal:
      if (static_cast<size_t>(f.a) < n.text.size() && static_cast<unsigned char>(n.text[f.a]) == c) {
        ++f.a;
        return static_cast<size_t>(f.a) == n.text.size() ? Step::done : Step::taken;
      }
      return Step::refused;

    case Kind::choice: {
      int32_t lo = f.lo, hi = f.hi;
      while (lo < hi && (n.options[lo].size() <= static_cast<size_t>(f.a) ||
                         static_cast<unsigned char>(n.options[lo][f.a]) != c))
        ++lo;
      hi = lo;
      while (hi < f.hi && n.options[hi].size() > static_cast<size_t>(f.a) &&
             static_cast<unsigned char>(n.options[hi][f.a]) == c)
        ++hi;
      if (lo == hi) {
        // An option that ended here (e.g. enum 1 next to 10) lets the byte pass on.
        for (int32_t i = f.lo; i < f.hi; ++i)
          if (n.options[i].size() == static_cast<size_t>(f.a)) return Step::pass;
        return Step::refused;
      }
      f.lo = lo;
      f.hi = hi;
      ++f.a;
      if (hi - lo == 1 && n.options[lo].size() == static_cast<size_t>(f.a)) {
        if (n.children.empty()) return Step::done;
        // A branch: continue with the rest of the chosen option's sequence.
        f.node = &n.children[lo];
        f.a = 1;
        f.b = 0;
        return Step::taken;
      }
      return Step::taken;
    }

    case Kind::string:
      // Only strings a JSON parser takes: valid UTF-8 (no overlong forms,
      // no UTF-8 surrogates, nothing past U+10FFFF) and \u escapes whose
      // surrogates come in pairs. Refused early, never at a dead end.
      // (The tool_grammar fuzz target found 0xFF bytes and lone surrogates
      // taken here, so that a complete call did not parse.)
      // b: 0 before '"', 1 inside, 2 after '\', 3 \u digits (a: how many,
      // lo: the value so far), 4 '\' of the low surrogate due, 5 its 'u',
      // 6 its digits, 7 UTF-8 continuation bytes (a: how many left, lo..hi:
      // the next one's range).
      switch (f.b) {
        case 0:
          return expect(f, c, '"', 1);
        case 1:
          if (c == '"') return Step::done;
          if (c == '\\') {
            f.b = 2;
            return Step::taken;
          }
          if (c < 0x20) return Step::refused;
          if (c < 0x80) return Step::taken;
          f.lo = 0x80;
          f.hi = 0xBF;
          if (c >= 0xC2 && c <= 0xDF) f.a = 1;
          else if (c >= 0xE0 && c <= 0xEF) f.a = 2;
          else if (c >= 0xF0 && c <= 0xF4) f.a = 3;
          else return Step::refused;
          if (c == 0xE0) f.lo = 0xA0;
          if (c == 0xED) f.hi = 0x9F;
          if (c == 0xF0) f.lo = 0x90;
          if (c == 0xF4) f.hi = 0x8F;
          f.b = 7;
          return Step::taken;
        case 2:
          if (c == 'u') {
            f.b = 3;
            f.a = 0;
            f.lo = 0;
            return Step::taken;
          }
          if (std::string_view("\"\\/bfnrt").find(static_cast<char>(c)) == std::string_view::npos)
            return Step::refused;
          f.b = 1;
          return Step::taken;
        case 3:
        case 6: {
          if (!is_hex(c)) return Step::refused;
          const int v = is_digit(c) ? c - '0' : (c | 0x20) - 'a' + 10;
          f.lo = f.lo * 16 + v;
          ++f.a;
          if (f.b == 6) {  // DC00-DFFF only
            if ((f.a == 1 && v != 0xD) || (f.a == 2 && v < 0xC)) return Step::refused;
          } else if (f.a == 2 && f.lo >= 0xDC) {
            return Step::refused;  // a low surrogate with no high one before it
          }
          if (f.a == 4) f.b = f.b == 3 && f.lo >= 0xD800 && f.lo <= 0xDBFF ? 4 : 1;
          return Step::taken;
        }
        case 4:
          return expect(f, c, '\\', 5);
        case 5:
          if (c != 'u') return Step::refused;
          f.b = 6;
          f.a = 0;
          f.lo = 0;
          return Step::taken;
        default:  // 7
          if (c < f.lo || c > f.hi) return Step::refused;
          f.lo = 0x80;
          f.hi = 0xBF;
          if (--f.a == 0) f.b = 1;
          return Step::taken;
      }

    case Kind::integer:
    case Kind::number: {
      // b: 0 start, 1 after '-', 2 integer digits, 3 a leading 0, 4 after '.',
      // 5 fraction digits, 6 after 'e', 7 after the exponent sign, 8 exponent digits.
      const bool real = n.kind == Kind::number;
      const bool can_end = f.b == 2 || f.b == 3 || f.b == 5 || f.b == 8;
      auto digit_in = [&](int state) {
        if (f.b != state) f.a = 0;
        if (++f.a > (state == 8 ? kMaxExponentDigits : kMaxDigits)) return false;
        f.b = state;
        return true;
      };
      switch (f.b) {
        case 0:
        case 1:
          if (f.b == 0 && c == '-') {
            f.b = 1;
            return Step::taken;
          }
          if (c == '0') {
            f.b = 3;
            return Step::taken;
          }
          if (is_digit(c) && digit_in(2)) return Step::taken;
          return Step::refused;
        case 2:
        case 3:
          if (f.b == 2 && is_digit(c)) return digit_in(2) ? Step::taken : Step::pass;
          if (real && c == '.') {
            f.b = 4;
            return Step::taken;
          }
          if (real && (c == 'e' || c == 'E')) {
            f.b = 6;
            return Step::taken;
          }
          return can_end ? Step::pass : Step::refused;
        case 4:
        case 5:
          if (is_digit(c)) return digit_in(5) ? Step::taken : Step::pass;
          if (f.b == 5 && (c == 'e' || c == 'E')) {
            f.b = 6;
            return Step::taken;
          }
          return can_end ? Step::pass : Step::refused;
        case 6:
          if (c == '+' || c == '-') {
            f.b = 7;
            return Step::taken;
          }
          [[fallthrough]];
        default:
          if (is_digit(c)) return digit_in(8) ? Step::taken : Step::pass;
          return can_end ? Step::pass : Step::refused;
      }
    }

    case Kind::sequence: {
      if (f.a == static_cast<int32_t>(n.children.size())) return Step::pass;
      const GrammarNode* child = &n.children[f.a++];
      push(child);  // f is invalid from here
      return step_again(c);
    }

    case Kind::array:
    case Kind::any_array: {
      const GrammarNode* item = n.kind == Kind::array ? &n.children[0] : &shared().any;
      switch (f.b) {
        case 0:
          return expect(f, c, '[', 1);
        case 1:
          if (c == ']') return Step::done;
          f.b = 2;
          push(item);
          return step_again(c);
        case 2:
          return c == ']' ? Step::done : expect(f, c, ',', 3);
        default:
          f.b = 2;
          push(item);
          return step_again(c);
      }
    }

    case Kind::any_object:
      switch (f.b) {
        case 0:
          return expect(f, c, '{', 1);
        case 1:
        case 5:
          if (f.b == 1 && c == '}') return Step::done;
          if (c != '"') return Step::refused;
          f.b = 2;
          push(&shared().string);
          return step_again(c);
        case 2:
          return expect(f, c, ':', 3);
        case 3:
          f.b = 4;
          push(&shared().any);
          return step_again(c);
        default:
          return c == '}' ? Step::done : expect(f, c, ',', 5);
      }

    case Kind::any: {
      const GrammarNode* to = value_starting_with(c);
      if (to == nullptr) return Step::refused;
      f = Frame{to};
      return step_again(c);
    }
  }
  return Step::refused;
}

}  // namespace pensieve::server
