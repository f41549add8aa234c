// jinja2's filters and tests, the Python str/dict/list methods templates call,
// and the globals transformers provides (range, namespace, dict,
// raise_exception, strftime_now).
#pragma once

#include <string>

#include "chat/interpreter.h"
#include "chat/value.h"

namespace pensieve::chat {

bool is_known_filter(const std::string& name);
bool is_known_test(const std::string& name);

Value apply_filter(Interpreter& interp, const std::string& name, const Value& input,
                   CallArgs& args);
bool apply_test(Interpreter& interp, const std::string& name, const Value& value, CallArgs& args);

// Whether `object.name` is a method (str.strip, dict.items, ...).
bool has_method(const Value& object, const std::string& name);
Value call_method(Interpreter& interp, const Value& object, const std::string& name,
                  CallArgs& args);
// A callable bound to object.name, for `object.name` not called at once.
Value bound_method(const Value& object, const std::string& name);

void install_globals(Scope& scope);

// Binds call arguments to named parameters as Python would, for builtins.
class ArgBinder {
 public:
  ArgBinder(Interpreter& interp, CallArgs& args, const std::string& function,
            std::initializer_list<const char*> params);
  bool has(size_t i) const { return values_[i] != nullptr; }
  const Value& get(size_t i) const;  // error when missing
  Value get_or(size_t i, Value fallback) const { return has(i) ? *values_[i] : fallback; }
  int64_t get_int(size_t i, int64_t fallback) const;
  bool get_bool(size_t i, bool fallback) const;
  std::string get_str(size_t i, const std::string& fallback) const;

 private:
  Interpreter& interp_;
  std::string function_;
  std::vector<const char*> params_;
  std::vector<const Value*> values_;
};

// Python's str.strip(chars) on UTF-8; chars null or None strips whitespace.
std::string py_strip(const std::string& s, const Value* chars, bool left, bool right);
// Python's str.isspace() for the code point at s[i]; *n_bytes gets its length.
bool is_py_space(std::string_view s, size_t i, size_t* n_bytes);
// Python's `format % args` (printf style), as the format filter uses it.
std::string py_percent_format(Interpreter& interp, const std::string& format, const Value& args);
// Python's str.format(*args, **kwargs) without format specs.
std::string py_str_format(Interpreter& interp, const std::string& format, CallArgs& args);
std::string ascii_lower(std::string s);
std::string ascii_upper(std::string s);

}  // namespace pensieve::chat
