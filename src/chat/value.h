// The values a chat template computes with, modelled on the Python objects
// jinja2 hands around: None, bool, int, float, str, list/tuple, dict (insertion
// ordered), jinja2's Namespace, callables (macros, builtins, bound methods) and
// jinja2's default Undefined. Strings, lists and dicts are shared like Python
// references, so a namespace attribute set in a loop is seen after it.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace pensieve::chat {

class Value;
class Interpreter;

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};

// A macro, a global function (range, namespace, ...) or a bound method.
class Callable {
 public:
  virtual ~Callable() = default;
  virtual Value call(Interpreter& interp, CallArgs& args) = 0;
  virtual std::string repr() const = 0;
};

struct List;
struct Dict;

struct UndefinedValue {
  // Why it is undefined, e.g. "'messages' is undefined"; shown when it is used strictly.
  std::shared_ptr<const std::string> hint;
};

class Value {
 public:
  enum class Type : uint8_t { Undefined, None, Bool, Int, Float, String, List, Dict, Callable };

  Value() : v_(UndefinedValue{}) {}
  static Value undefined(std::string hint);
  static Value none() {
    Value v;
    v.v_.emplace<std::monostate>();
    return v;
  }
  Value(bool b) : v_(b) {}
  Value(int v) : v_(int64_t{v}) {}
  Value(int64_t v) : v_(v) {}
  Value(double v) : v_(v) {}
  Value(std::string s) : v_(std::make_shared<const std::string>(std::move(s))) {}
  Value(const char* s) : Value(std::string(s)) {}
  Value(std::shared_ptr<List> l) : v_(std::move(l)) {}
  Value(std::shared_ptr<Dict> d) : v_(std::move(d)) {}
  template <typename T, std::enable_if_t<std::is_base_of_v<Callable, T>, int> = 0>
  Value(std::shared_ptr<T> c) : v_(std::shared_ptr<Callable>(std::move(c))) {}
  static Value list(std::vector<Value> items = {}, bool is_tuple = false);
  static Value dict();
  static Value namespace_();

  Type type() const { return static_cast<Type>(v_.index()); }
  bool is_undefined() const { return type() == Type::Undefined; }
  bool is_none() const { return type() == Type::None; }
  bool is_bool() const { return type() == Type::Bool; }
  bool is_int() const { return type() == Type::Int; }
  bool is_float() const { return type() == Type::Float; }
  bool is_number() const { return is_int() || is_float() || is_bool(); }
  bool is_string() const { return type() == Type::String; }
  bool is_list() const { return type() == Type::List; }
  bool is_dict() const { return type() == Type::Dict; }  // includes namespaces
  bool is_namespace() const;
  bool is_mapping() const { return is_dict() && !is_namespace(); }
  bool is_callable() const { return type() == Type::Callable; }

  bool as_bool() const { return std::get<bool>(v_); }
  int64_t as_int() const { return std::get<int64_t>(v_); }
  double as_float() const { return std::get<double>(v_); }
  // Numeric value of a bool, int or float.
  double to_double() const;
  const std::string& str() const { return *std::get<Str>(v_); }
  List& list_ref() const { return *std::get<std::shared_ptr<List>>(v_); }
  Dict& dict_ref() const { return *std::get<std::shared_ptr<Dict>>(v_); }
  Callable& callable() const { return *std::get<std::shared_ptr<Callable>>(v_); }
  // Whether this Value is the only reference to its dict (safe to update in place).
  bool dict_is_unshared() const {
    return is_dict() && std::get<std::shared_ptr<Dict>>(v_).use_count() == 1;
  }
  const std::string& undefined_hint() const;

  bool truthy() const;
  // Python's type name for error messages: 'str', 'int', 'dict', ...
  std::string type_name() const;

  // Python str(): what {{ value }} prints (Undefined prints nothing).
  std::string to_str() const;
  // Python repr(): strings quoted, as inside a printed list.
  std::string repr() const;

  static Value from_json(const nlohmann::ordered_json& j);

 private:
  using Str = std::shared_ptr<const std::string>;
  using Storage =
      std::variant<UndefinedValue, std::monostate, bool, int64_t, double, Str,
                   std::shared_ptr<List>, std::shared_ptr<Dict>, std::shared_ptr<Callable>>;
  Storage v_;
};

struct List {
  std::vector<Value> items;
  bool is_tuple = false;
};

// Insertion-ordered, like a Python dict; keys are usually strings.
struct Dict {
  std::vector<std::pair<Value, Value>> entries;
  bool is_namespace = false;

  const Value* find(std::string_view key) const;
  const Value* find(const std::string& key) const { return find(std::string_view(key)); }
  const Value* find(const char* key) const { return find(std::string_view(key)); }
  const Value* find(const Value& key) const;
  void set(const Value& key, Value value);
};

// Python ==: 1 == 1.0 == True; lists and dicts compare element-wise; Undefined
// equals only Undefined.
bool values_equal(const Value& a, const Value& b);
// Python <: negative, zero or positive; throws Error for unorderable types.
int compare_values(const Value& a, const Value& b);

// Python's repr of a float: "1.0", "0.1", "1e+16", "nan".
std::string format_python_float(double v);

struct JsonOptions {
  bool ensure_ascii = false;
  bool sort_keys = false;
  bool has_indent = false;
  std::string indent;  // the text of one indentation level when has_indent
  std::string item_separator = ", ";
  std::string key_separator = ": ";
};
// Python json.dumps of a value (what transformers' tojson filter returns).
std::string to_json_text(const Value& v, const JsonOptions& options);

// Python string indexing works on code points; these helpers do the same on UTF-8.
std::vector<std::string_view> utf8_chars(std::string_view s);
// Decodes the code point at s[i] and advances i; a bad byte decodes as itself.
uint32_t decode_utf8(std::string_view s, size_t& i);
void append_utf8(std::string& out, uint32_t cp);
size_t utf8_length(std::string_view s);

}  // namespace pensieve::chat
