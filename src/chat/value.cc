#include "chat/value.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "core/error.h"

namespace pensieve::chat {

Value Value::undefined(std::string hint) {
  Value v;
  std::get<UndefinedValue>(v.v_).hint = std::make_shared<const std::string>(std::move(hint));
  return v;
}

Value Value::list(std::vector<Value> items, bool is_tuple) {
  auto l = std::make_shared<List>();
  l->items = std::move(items);
  l->is_tuple = is_tuple;
  return Value(std::move(l));
}

Value Value::dict() { return Value(std::make_shared<Dict>()); }

Value Value::namespace_() {
  auto d = std::make_shared<Dict>();
  d->is_namespace = true;
  return Value(std::move(d));
}

bool Value::is_namespace() const { return is_dict() && dict_ref().is_namespace; }

double Value::to_double() const {
  switch (type()) {
    case Type::Bool:
      return as_bool() ? 1.0 : 0.0;
    case Type::Int:
      return static_cast<double>(as_int());
    case Type::Float:
      return as_float();
    default:
      fail("chat template: {} is not a number", type_name());
  }
}

const std::string& Value::undefined_hint() const {
  static const std::string kEmpty = "value is undefined";
  const auto& u = std::get<UndefinedValue>(v_);
  return u.hint ? *u.hint : kEmpty;
}

bool Value::truthy() const {
  switch (type()) {
    case Type::Undefined:
    case Type::None:
      return false;
    case Type::Bool:
      return as_bool();
    case Type::Int:
      return as_int() != 0;
    case Type::Float:
      return as_float() != 0.0;
    case Type::String:
      return !str().empty();
    case Type::List:
      return !list_ref().items.empty();
    case Type::Dict:
      return is_namespace() || !dict_ref().entries.empty();
    case Type::Callable:
      return true;
  }
  return false;
}

std::string Value::type_name() const {
  switch (type()) {
    case Type::Undefined:
      return "Undefined";
    case Type::None:
      return "NoneType";
    case Type::Bool:
      return "bool";
    case Type::Int:
      return "int";
    case Type::Float:
      return "float";
    case Type::String:
      return "str";
    case Type::List:
      return list_ref().is_tuple ? "tuple" : "list";
    case Type::Dict:
      return is_namespace() ? "Namespace" : "dict";
    case Type::Callable:
      return "function";
  }
  return "object";
}

std::string format_python_float(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v < 0 ? "-inf" : "inf";
  if (v == 0) return std::signbit(v) ? "-0.0" : "0.0";
  // Shortest round-trip digits, then Python's layout rule: exponent form when
  // the decimal exponent is below -4 or at least 16.
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  std::string sign;
  if (sci[0] == '-') {
    sign = "-";
    sci.erase(0, 1);
  }
  const size_t e_pos = sci.find('e');
  const int exp10 = std::stoi(sci.substr(e_pos + 1));
  std::string digits;
  for (size_t i = 0; i < e_pos; ++i)
    if (sci[i] != '.') digits += sci[i];
  if (exp10 < -4 || exp10 >= 16) {
    std::string out = sign + digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    const int a = std::abs(exp10);
    out += exp10 < 0 ? "e-" : "e+";
    if (a < 10) out += "0";
    return out + std::to_string(a);
  }
  const int n_int = exp10 + 1;  // digits before the decimal point
  std::string out;
  if (n_int <= 0) {
    out = "0." + std::string(-n_int, '0') + digits;
  } else if (static_cast<size_t>(n_int) >= digits.size()) {
    out = digits + std::string(n_int - digits.size(), '0') + ".0";
  } else {
    out = digits.substr(0, n_int) + "." + digits.substr(n_int);
  }
  return sign + out;
}

namespace {

std::string repr_string(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos;
  const bool has_double = s.find('"') != std::string::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (unsigned char c : s) {
    if (c == quote || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + quote;
}

}  // namespace

std::string Value::to_str() const {
  switch (type()) {
    case Type::Undefined:
      return "";
    case Type::String:
      return str();
    default:
      return repr();
  }
}

std::string Value::repr() const {
  switch (type()) {
    case Type::Undefined:
      return "Undefined";
    case Type::None:
      return "None";
    case Type::Bool:
      return as_bool() ? "True" : "False";
    case Type::Int:
      return std::to_string(as_int());
    case Type::Float:
      return format_python_float(as_float());
    case Type::String:
      return repr_string(str());
    case Type::List: {
      const List& l = list_ref();
      std::string out = l.is_tuple ? "(" : "[";
      for (size_t i = 0; i < l.items.size(); ++i) {
        if (i) out += ", ";
        out += l.items[i].repr();
      }
      if (l.is_tuple && l.items.size() == 1) out += ",";
      return out + (l.is_tuple ? ")" : "]");
    }
    case Type::Dict: {
      std::string out = "{";
      bool first = true;
      for (const auto& [k, v] : dict_ref().entries) {
        if (!first) out += ", ";
        first = false;
        out += k.repr() + ": " + v.repr();
      }
      out += "}";
      return is_namespace() ? "<Namespace " + out + ">" : out;
    }
    case Type::Callable:
      return callable().repr();
  }
  return "";
}

Value Value::from_json(const nlohmann::ordered_json& j) {
  using nlohmann::ordered_json;
  switch (j.type()) {
    case ordered_json::value_t::null:
      return Value::none();
    case ordered_json::value_t::boolean:
      return Value(j.get<bool>());
    case ordered_json::value_t::number_integer:
      return Value(j.get<int64_t>());
    case ordered_json::value_t::number_unsigned: {
      const uint64_t u = j.get<uint64_t>();
      if (u <= static_cast<uint64_t>(INT64_MAX)) return Value(static_cast<int64_t>(u));
      return Value(static_cast<double>(u));
    }
    case ordered_json::value_t::number_float:
      return Value(j.get<double>());
    case ordered_json::value_t::string:
      return Value(j.get<std::string>());
    case ordered_json::value_t::array: {
      std::vector<Value> items;
      items.reserve(j.size());
      for (const auto& e : j) items.push_back(from_json(e));
      return Value::list(std::move(items));
    }
    case ordered_json::value_t::object: {
      Value d = Value::dict();
      auto& entries = d.dict_ref().entries;
      entries.reserve(j.size());
      for (const auto& [k, v] : j.items()) entries.emplace_back(Value(k), from_json(v));
      return d;
    }
    default:
      return Value::none();
  }
}

const Value* Dict::find(std::string_view key) const {
  for (const auto& [k, v] : entries)
    if (k.is_string() && k.str() == key) return &v;
  return nullptr;
}

const Value* Dict::find(const Value& key) const {
  if (key.is_string()) return find(std::string_view(key.str()));
  for (const auto& [k, v] : entries)
    if (values_equal(k, key)) return &v;
  return nullptr;
}

void Dict::set(const Value& key, Value value) {
  for (auto& [k, v] : entries) {
    if (values_equal(k, key)) {
      v = std::move(value);
      return;
    }
  }
  entries.emplace_back(key, std::move(value));
}

bool values_equal(const Value& a, const Value& b) {
  using T = Value::Type;
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.to_double() == b.to_double();
    const int64_t x = a.is_bool() ? a.as_bool() : a.as_int();
    const int64_t y = b.is_bool() ? b.as_bool() : b.as_int();
    return x == y;
  }
  if (a.type() != b.type()) return false;
  switch (a.type()) {
    case T::Undefined:
    case T::None:
      return true;
    case T::String:
      return a.str() == b.str();
    case T::List: {
      const auto& x = a.list_ref().items;
      const auto& y = b.list_ref().items;
      if (a.list_ref().is_tuple != b.list_ref().is_tuple || x.size() != y.size()) return false;
      for (size_t i = 0; i < x.size(); ++i)
        if (!values_equal(x[i], y[i])) return false;
      return true;
    }
    case T::Dict: {
      if (a.is_namespace() || b.is_namespace()) return &a.dict_ref() == &b.dict_ref();
      const auto& x = a.dict_ref().entries;
      if (x.size() != b.dict_ref().entries.size()) return false;
      for (const auto& [k, v] : x) {
        const Value* other = b.dict_ref().find(k);
        if (!other || !values_equal(v, *other)) return false;
      }
      return true;
    }
    case T::Callable:
      return &a.callable() == &b.callable();
    default:
      return false;
  }
}

int compare_values(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    const double x = a.to_double(), y = b.to_double();
    if (!a.is_float() && !b.is_float()) {
      const int64_t xi = a.is_bool() ? a.as_bool() : a.as_int();
      const int64_t yi = b.is_bool() ? b.as_bool() : b.as_int();
      return xi < yi ? -1 : xi > yi ? 1 : 0;
    }
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.is_string() && b.is_string()) {
    // Byte order of UTF-8 is code point order, which is what Python compares.
    const int c = a.str().compare(b.str());
    return c < 0 ? -1 : c > 0 ? 1 : 0;
  }
  if (a.is_list() && b.is_list()) {
    const auto& x = a.list_ref().items;
    const auto& y = b.list_ref().items;
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (values_equal(x[i], y[i])) continue;
      return compare_values(x[i], y[i]);
    }
    return x.size() < y.size() ? -1 : x.size() > y.size() ? 1 : 0;
  }
  if (a.is_undefined() || b.is_undefined())
    fail("chat template: {}", a.is_undefined() ? a.undefined_hint() : b.undefined_hint());
  fail("chat template: '<' not supported between instances of '{}' and '{}'", a.type_name(),
       b.type_name());
}

uint32_t decode_utf8(std::string_view s, size_t& i) {
  const unsigned char c = s[i];
  const int n = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
  if (n <= 0 || i + n >= s.size()) {  // ASCII, a stray byte, or a truncated sequence
    ++i;
    return c;
  }
  uint32_t cp = c & (0x3f >> n);
  for (int k = 1; k <= n; ++k) {
    const unsigned char cc = s[i + k];
    if ((cc & 0xc0) != 0x80) {
      ++i;
      return c;
    }
    cp = (cp << 6) | (cc & 0x3f);
  }
  i += n + 1;
  return cp;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

namespace {

void json_string(std::string& out, const std::string& s, bool ensure_ascii) {
  out += '"';
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = s[i];
    switch (c) {
      case '"':
        out += "\\\"";
        ++i;
        continue;
      case '\\':
        out += "\\\\";
        ++i;
        continue;
      case '\n':
        out += "\\n";
        ++i;
        continue;
      case '\r':
        out += "\\r";
        ++i;
        continue;
      case '\t':
        out += "\\t";
        ++i;
        continue;
      case '\b':
        out += "\\b";
        ++i;
        continue;
      case '\f':
        out += "\\f";
        ++i;
        continue;
      default:
        break;
    }
    if (c < 0x20) {
      out += fmt::format("\\u{:04x}", c);
      ++i;
    } else if (c < 0x80 || !ensure_ascii) {
      out += static_cast<char>(c);
      ++i;
    } else {
      uint32_t cp = decode_utf8(s, i);
      if (cp >= 0x10000) {
        cp -= 0x10000;
        out += fmt::format("\\u{:04x}\\u{:04x}", 0xd800 + (cp >> 10), 0xdc00 + (cp & 0x3ff));
      } else {
        out += fmt::format("\\u{:04x}", cp);
      }
    }
  }
  out += '"';
}

void json_value(std::string& out, const Value& v, const JsonOptions& o, int depth) {
  if (depth > 512) fail("chat template: tojson: value nested too deeply");
  using T = Value::Type;
  auto newline = [&](int level) {
    out += '\n';
    for (int i = 0; i < level; ++i) out += o.indent;
  };
  switch (v.type()) {
    case T::None:
      out += "null";
      return;
    case T::Bool:
      out += v.as_bool() ? "true" : "false";
      return;
    case T::Int:
      out += std::to_string(v.as_int());
      return;
    case T::Float: {
      const double f = v.as_float();
      if (std::isnan(f))
        out += "NaN";
      else if (std::isinf(f))
        out += f < 0 ? "-Infinity" : "Infinity";
      else
        out += format_python_float(f);
      return;
    }
    case T::String:
      json_string(out, v.str(), o.ensure_ascii);
      return;
    case T::List: {
      const auto& items = v.list_ref().items;
      if (items.empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (size_t i = 0; i < items.size(); ++i) {
        if (i) out += o.item_separator;
        if (o.has_indent) newline(depth + 1);
        json_value(out, items[i], o, depth + 1);
      }
      if (o.has_indent) newline(depth);
      out += ']';
      return;
    }
    case T::Dict: {
      if (v.is_namespace()) break;
      std::vector<const std::pair<Value, Value>*> entries;
      for (const auto& e : v.dict_ref().entries) entries.push_back(&e);
      if (entries.empty()) {
        out += "{}";
        return;
      }
      auto key_text = [](const Value& k) {
        if (k.is_string()) return k.str();
        if (k.is_none()) return std::string("null");
        if (k.is_bool()) return std::string(k.as_bool() ? "true" : "false");
        if (k.is_int() || k.is_float()) return k.repr();
        fail("chat template: tojson: keys must be str, int, float, bool or None, not {}",
             k.type_name());
      };
      if (o.sort_keys) {
        std::stable_sort(entries.begin(), entries.end(),
                         [&](auto* a, auto* b) { return key_text(a->first) < key_text(b->first); });
      }
      out += '{';
      for (size_t i = 0; i < entries.size(); ++i) {
        if (i) out += o.item_separator;
        if (o.has_indent) newline(depth + 1);
        json_string(out, key_text(entries[i]->first), o.ensure_ascii);
        out += o.key_separator;
        json_value(out, entries[i]->second, o, depth + 1);
      }
      if (o.has_indent) newline(depth);
      out += '}';
      return;
    }
    default:
      break;
  }
  fail("chat template: tojson: Object of type {} is not JSON serializable", v.type_name());
}

}  // namespace

std::string to_json_text(const Value& v, const JsonOptions& options) {
  std::string out;
  json_value(out, v, options, 0);
  return out;
}

std::vector<std::string_view> utf8_chars(std::string_view s) {
  std::vector<std::string_view> out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const size_t start = i;
    decode_utf8(s, i);
    out.push_back(s.substr(start, i - start));
  }
  return out;
}

size_t utf8_length(std::string_view s) {
  size_t n = 0;
  for (size_t i = 0; i < s.size();) {
    decode_utf8(s, i);
    ++n;
  }
  return n;
}

}  // namespace pensieve::chat
