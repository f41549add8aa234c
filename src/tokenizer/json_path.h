// A location inside tokenizer.json ("file: pre_tokenizer.pretokenizers[1]")
// plus typed accessors whose errors name that location.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace pensieve::tok {

using nlohmann::json;

struct JsonPath {
  std::string file;
  std::string path;

  JsonPath key(std::string_view k) const {
    return {file, path.empty() ? std::string(k) : path + "." + std::string(k)};
  }
  JsonPath index(size_t i) const { return {file, path + "[" + std::to_string(i) + "]"}; }
  std::string str() const { return path.empty() ? file : file + ": " + path; }

  [[noreturn]] void unsupported_type(const std::string& type) const {
    fail(ErrorKind::unsupported, "{}: {}.type '{}' is not supported", file, path, type);
  }
  [[noreturn]] void invalid(std::string_view what) const {
    fail("{}: {} {}", file, path, what);
  }
};

// The object's "type" field (required).
inline std::string type_of(const json& obj, const JsonPath& at) {
  if (!obj.is_object()) at.invalid("must be an object");
  auto it = obj.find("type");
  if (it == obj.end() || !it->is_string()) at.key("type").invalid("is missing or not a string");
  return it->get<std::string>();
}

inline const json& required(const json& obj, const char* key, const JsonPath& at) {
  auto it = obj.find(key);
  if (it == obj.end()) at.key(key).invalid("is missing");
  return *it;
}

inline std::string get_string(const json& obj, const char* key, const JsonPath& at) {
  const json& v = required(obj, key, at);
  if (!v.is_string()) at.key(key).invalid("must be a string");
  return v.get<std::string>();
}

inline std::string get_string_or(const json& obj, const char* key, const std::string& fallback,
                                 const JsonPath& at) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  if (!it->is_string()) at.key(key).invalid("must be a string");
  return it->get<std::string>();
}

inline bool get_bool_or(const json& obj, const char* key, bool fallback, const JsonPath& at) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) at.key(key).invalid("must be true or false");
  return it->get<bool>();
}

inline int64_t get_int_or(const json& obj, const char* key, int64_t fallback, const JsonPath& at) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  if (!it->is_number_integer()) at.key(key).invalid("must be an integer");
  return it->get<int64_t>();
}

inline const json& get_array(const json& obj, const char* key, const JsonPath& at) {
  const json& v = required(obj, key, at);
  if (!v.is_array()) at.key(key).invalid("must be an array");
  return v;
}

}  // namespace pensieve::tok
