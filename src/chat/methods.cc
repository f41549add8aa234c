// Python methods of str, dict and list that templates call, the globals
// transformers provides, and argument binding for all builtins.
#include <ctime>

#include "chat/builtins.h"
#include "core/error.h"

namespace pensieve::chat {

ArgBinder::ArgBinder(Interpreter& interp, CallArgs& args, const std::string& function,
                     std::initializer_list<const char*> params)
    : interp_(interp), function_(function), params_(params), values_(params.size(), nullptr) {
  if (args.positional.size() > params_.size()) {
    interp.error(fmt::format("{}() takes at most {} argument(s) ({} given)", function,
                             params_.size(), args.positional.size()));
  }
  for (size_t i = 0; i < args.positional.size(); ++i) values_[i] = &args.positional[i];
  for (const auto& [name, value] : args.keyword) {
    size_t i = 0;
    while (i < params_.size() && name != params_[i]) ++i;
    if (i == params_.size()) {
      interp.error(fmt::format("{}() got an unexpected keyword argument '{}'", function, name));
    }
    values_[i] = &value;
  }
}

const Value& ArgBinder::get(size_t i) const {
  if (!values_[i]) interp_.error(fmt::format("{}() missing argument '{}'", function_, params_[i]));
  return *values_[i];
}

int64_t ArgBinder::get_int(size_t i, int64_t fallback) const {
  if (!has(i) || values_[i]->is_none()) return fallback;
  const Value& v = *values_[i];
  if (v.is_int()) return v.as_int();
  if (v.is_bool()) return v.as_bool();
  if (v.is_float()) return static_cast<int64_t>(v.as_float());
  interp_.error(
      fmt::format("{}(): '{}' must be an integer, not {}", function_, params_[i], v.type_name()));
}

bool ArgBinder::get_bool(size_t i, bool fallback) const {
  return has(i) ? values_[i]->truthy() : fallback;
}

std::string ArgBinder::get_str(size_t i, const std::string& fallback) const {
  return has(i) && !values_[i]->is_none() ? values_[i]->to_str() : fallback;
}

bool is_py_space(std::string_view s, size_t i, size_t* n_bytes) {
  size_t j = i;
  const uint32_t cp = decode_utf8(s, j);
  *n_bytes = j - i;
  return (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x20) || cp == 0x85 || cp == 0xa0 ||
         cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 ||
         cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

std::string py_strip(const std::string& s, const Value* chars, bool left, bool right) {
  std::vector<std::string_view> set;
  const bool whitespace = !chars || chars->is_none() || chars->is_undefined();
  if (!whitespace) set = utf8_chars(chars->str());
  std::vector<std::string_view> cps = utf8_chars(s);
  auto strip_it = [&](std::string_view c) {
    if (whitespace) {
      size_t n = 0;
      return is_py_space(c, 0, &n);
    }
    for (auto x : set)
      if (x == c) return true;
    return false;
  };
  size_t begin = 0, end = cps.size();
  if (left)
    while (begin < end && strip_it(cps[begin])) ++begin;
  if (right)
    while (end > begin && strip_it(cps[end - 1])) --end;
  if (begin == end) return "";
  const char* b = cps[begin].data();
  const char* e = cps[end - 1].data() + cps[end - 1].size();
  return std::string(b, e);
}

std::string ascii_lower(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return s;
}

std::string ascii_upper(std::string s) {
  for (char& c : s)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  return s;
}

namespace {

bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

// Python str.split / rsplit; sep None splits on whitespace runs.
std::vector<Value> py_split(Interpreter& interp, const std::string& s, const Value& sep,
                            int64_t max_split, bool from_right) {
  std::vector<std::string> parts;
  if (sep.is_none() || sep.is_undefined()) {
    std::vector<std::pair<size_t, size_t>> words;  // byte ranges
    size_t i = 0;
    while (i < s.size()) {
      size_t n = 0;
      if (is_py_space(s, i, &n)) {
        i += n;
        continue;
      }
      size_t j = i;
      while (j < s.size() && !is_py_space(s, j, &n)) j += n;
      words.emplace_back(i, j);
      i = j;
    }
    if (max_split < 0 || static_cast<size_t>(max_split) >= words.size()) {
      for (auto [b, e] : words) parts.push_back(s.substr(b, e - b));
    } else if (!from_right) {
      for (int64_t k = 0; k < max_split; ++k)
        parts.push_back(s.substr(words[k].first, words[k].second - words[k].first));
      parts.push_back(s.substr(words[max_split].first));  // keeps trailing whitespace
    } else {
      const size_t first_kept = words.size() - max_split;
      parts.push_back(s.substr(0, words[first_kept - 1].second));
      for (size_t k = first_kept; k < words.size(); ++k)
        parts.push_back(s.substr(words[k].first, words[k].second - words[k].first));
    }
  } else {
    if (!sep.is_string()) interp.error("split(): separator must be a string or None");
    const std::string& d = sep.str();
    if (d.empty()) interp.error("split(): empty separator");
    if (!from_right) {
      size_t start = 0;
      int64_t n_done = 0;
      while (max_split < 0 || n_done < max_split) {
        const size_t p = s.find(d, start);
        if (p == std::string::npos) break;
        parts.push_back(s.substr(start, p - start));
        start = p + d.size();
        ++n_done;
      }
      parts.push_back(s.substr(start));
    } else {
      size_t end = s.size();
      int64_t n_done = 0;
      std::vector<std::string> rev;
      while ((max_split < 0 || n_done < max_split) && end >= d.size()) {
        const size_t p = s.rfind(d, end - d.size());
        if (p == std::string::npos) break;
        rev.push_back(s.substr(p + d.size(), end - p - d.size()));
        end = p;
        ++n_done;
      }
      rev.push_back(s.substr(0, end));
      parts.assign(rev.rbegin(), rev.rend());
    }
  }
  interp.charge_bytes(s.size());
  interp.charge(static_cast<int64_t>(parts.size()));
  std::vector<Value> out;
  out.reserve(parts.size());
  for (auto& p : parts) out.emplace_back(std::move(p));
  return out;
}

std::string py_replace(Interpreter& interp, const std::string& s, const std::string& old,
                       const std::string& replacement, int64_t count) {
  std::string out;
  int64_t n_done = 0;
  if (old.empty()) {
    // Python inserts the replacement between every character and at both ends.
    for (std::string_view c : utf8_chars(s)) {
      if (count < 0 || n_done < count) {
        out += replacement;
        ++n_done;
      }
      out += c;
    }
    if (count < 0 || n_done < count) out += replacement;
  } else {
    size_t start = 0;
    while (count < 0 || n_done < count) {
      const size_t p = s.find(old, start);
      if (p == std::string::npos) break;
      out.append(s, start, p - start);
      out += replacement;
      start = p + old.size();
      ++n_done;
    }
    out.append(s, start, std::string::npos);
  }
  interp.charge_bytes(out.size());
  return out;
}

// Python str.title(): a letter after a non-letter is upper-cased, others lowered.
std::string py_title(std::string s) {
  bool previous_cased = false;
  for (char& c : s) {
    if (is_alpha(c)) {
      c = previous_cased ? ascii_lower(std::string(1, c))[0] : ascii_upper(std::string(1, c))[0];
      previous_cased = true;
    } else {
      previous_cased = false;
    }
  }
  return s;
}

bool match_affix(const Value& affix, const std::string& s, bool prefix, Interpreter& interp) {
  auto one = [&](const Value& a) {
    if (!a.is_string()) interp.error("startswith/endswith take a string or a tuple of strings");
    const std::string& x = a.str();
    if (x.size() > s.size()) return false;
    return prefix ? s.compare(0, x.size(), x) == 0
                  : s.compare(s.size() - x.size(), x.size(), x) == 0;
  };
  if (affix.is_list()) {
    for (const auto& a : affix.list_ref().items)
      if (one(a)) return true;
    return false;
  }
  return one(affix);
}

// Byte offset -> Python (code point) index.
int64_t cp_index(const std::string& s, size_t byte_pos) {
  return static_cast<int64_t>(utf8_length(std::string_view(s).substr(0, byte_pos)));
}

std::string pad(Interpreter& interp, const std::string& s, int64_t width, const std::string& fill,
                int where /* -1 left, 0 center, 1 right */) {
  const int64_t n = static_cast<int64_t>(utf8_length(s));
  if (width <= n) return s;
  if (width > (1 << 24)) interp.error("padding width too large");
  const int64_t total = width - n;
  int64_t left = where < 0 ? total : where > 0 ? 0 : total / 2 + (total & width & 1);
  std::string out = interp.repeat_checked(fill, left) + s;
  return out + interp.repeat_checked(fill, total - left);
}

Value string_method(Interpreter& interp, const std::string& s, const std::string& name,
                    CallArgs& args) {
  const std::string fn = "str." + name;
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    ArgBinder a(interp, args, fn, {"chars"});
    const Value* chars = a.has(0) ? &a.get(0) : nullptr;
    if (chars && !chars->is_none() && !chars->is_string()) interp.error(fn + "(): arg must be str");
    return Value(py_strip(s, chars, name != "rstrip", name != "lstrip"));
  }
  if (name == "split" || name == "rsplit") {
    ArgBinder a(interp, args, fn, {"sep", "maxsplit"});
    return Value::list(
        py_split(interp, s, a.get_or(0, Value::none()), a.get_int(1, -1), name == "rsplit"));
  }
  if (name == "splitlines") {
    ArgBinder a(interp, args, fn, {"keepends"});
    std::vector<Value> lines;
    size_t start = 0;
    for (size_t i = 0; i < s.size();) {
      size_t n = 1;
      const unsigned char c = s[i];
      bool is_break = c == '\n' || c == '\r' || c == '\v' || c == '\f' || (c >= 0x1c && c <= 0x1e);
      if (c == '\r' && i + 1 < s.size() && s[i + 1] == '\n') n = 2;
      if (s.compare(i, 2, "\xc2\x85") == 0) is_break = true, n = 2;
      if (s.compare(i, 3, "\xe2\x80\xa8") == 0 || s.compare(i, 3, "\xe2\x80\xa9") == 0)
        is_break = true, n = 3;
      if (is_break) {
        lines.emplace_back(s.substr(start, (a.get_bool(0, false) ? i + n : i) - start));
        start = i + n;
      }
      i += n;
    }
    if (start < s.size()) lines.emplace_back(s.substr(start));
    return Value::list(std::move(lines));
  }
  if (name == "startswith" || name == "endswith") {
    ArgBinder a(interp, args, fn, {"prefix", "start", "end"});
    std::string sub = s;
    if (a.has(1) || a.has(2)) {
      auto chars = utf8_chars(s);
      int64_t n = static_cast<int64_t>(chars.size());
      auto clamp = [&](int64_t x) { return std::clamp(x < 0 ? x + n : x, int64_t{0}, n); };
      const int64_t b = clamp(a.get_int(1, 0)), e = clamp(a.get_int(2, n));
      sub.clear();
      for (int64_t i = b; i < e; ++i) sub += chars[i];
    }
    return Value(match_affix(a.get(0), sub, name == "startswith", interp));
  }
  if (name == "upper") return Value(ascii_upper(s));
  if (name == "lower") return Value(ascii_lower(s));
  if (name == "title") return Value(py_title(s));
  if (name == "capitalize") {
    std::string out = ascii_lower(s);
    if (!out.empty()) out[0] = ascii_upper(out.substr(0, 1))[0];
    return Value(out);
  }
  if (name == "replace") {
    ArgBinder a(interp, args, fn, {"old", "new", "count"});
    if (!a.get(0).is_string() || !a.get(1).is_string()) interp.error(fn + "(): args must be str");
    return Value(py_replace(interp, s, a.get(0).str(), a.get(1).str(), a.get_int(2, -1)));
  }
  if (name == "find" || name == "rfind" || name == "index" || name == "rindex" || name == "count") {
    ArgBinder a(interp, args, fn, {"sub"});
    if (!a.get(0).is_string()) interp.error(fn + "(): argument must be str");
    const std::string& sub = a.get(0).str();
    if (name == "count") {
      if (sub.empty()) return Value(static_cast<int64_t>(utf8_length(s)) + 1);
      int64_t n = 0;
      for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) ++n;
      return Value(n);
    }
    const size_t p = name[0] == 'r' ? s.rfind(sub) : s.find(sub);
    if (p == std::string::npos) {
      if (name == "index" || name == "rindex") interp.error("substring not found");
      return Value(int64_t{-1});
    }
    return Value(cp_index(s, p));
  }
  if (name == "format") return Value(py_str_format(interp, s, args));
  if (name == "join") {
    ArgBinder a(interp, args, fn, {"iterable"});
    std::string out;
    bool first = true;
    for (const Value& item : interp.iterate(a.get(0))) {
      if (!item.is_string())
        interp.error(fn + "(): sequence item must be str, not " + item.type_name());
      if (!first) out += s;
      first = false;
      out += item.str();
    }
    interp.charge_bytes(out.size());
    return Value(std::move(out));
  }
  if (name == "removeprefix" || name == "removesuffix") {
    ArgBinder a(interp, args, fn, {"affix"});
    if (!a.get(0).is_string()) interp.error(fn + "(): argument must be str");
    const std::string& x = a.get(0).str();
    if (!match_affix(a.get(0), s, name == "removeprefix", interp)) return Value(s);
    return Value(name == "removeprefix" ? s.substr(x.size()) : s.substr(0, s.size() - x.size()));
  }
  if (name == "ljust" || name == "rjust" || name == "center") {
    ArgBinder a(interp, args, fn, {"width", "fillchar"});
    const int where = name == "ljust" ? 1 : name == "rjust" ? -1 : 0;
    return Value(pad(interp, s, a.get_int(0, 0), a.get_str(1, " "), where));
  }
  if (name == "zfill") {
    ArgBinder a(interp, args, fn, {"width"});
    const bool sign = !s.empty() && (s[0] == '-' || s[0] == '+');
    std::string body =
        pad(interp, sign ? s.substr(1) : s, a.get_int(0, 0) - (sign ? 1 : 0), "0", -1);
    return Value(sign ? s.substr(0, 1) + body : body);
  }
  // The is* predicates, on ASCII.
  auto all_of = [&](auto pred) {
    if (s.empty()) return Value(false);
    for (char c : s)
      if (!pred(c)) return Value(false);
    return Value(true);
  };
  if (name == "isdigit" || name == "isnumeric" || name == "isdecimal")
    return all_of([](char c) { return c >= '0' && c <= '9'; });
  if (name == "isalpha") return all_of(is_alpha);
  if (name == "isalnum")
    return all_of([](char c) { return is_alpha(c) || (c >= '0' && c <= '9'); });
  if (name == "isspace") {
    if (s.empty()) return Value(false);
    for (size_t i = 0, n = 0; i < s.size(); i += n)
      if (!is_py_space(s, i, &n)) return Value(false);
    return Value(true);
  }
  if (name == "islower" || name == "isupper") {
    bool cased = false;
    for (char c : s) {
      if (!is_alpha(c)) continue;
      cased = true;
      if ((name == "islower") != (c >= 'a' && c <= 'z')) return Value(false);
    }
    return Value(cased);
  }
  interp.error(fmt::format("'str object' has no attribute '{}'", name));
}

const char* const kStringMethods[] = {
    "strip",        "lstrip",  "rstrip",  "split",   "rsplit",     "splitlines", "startswith",
    "endswith",     "upper",   "lower",   "title",   "capitalize", "replace",    "find",
    "rfind",        "index",   "rindex",  "count",   "format",     "join",       "removeprefix",
    "removesuffix", "ljust",   "rjust",   "center",  "zfill",      "isdigit",    "isnumeric",
    "isdecimal",    "isalpha", "isalnum", "isspace", "islower",    "isupper"};
const char* const kDictMethods[] = {"get", "items",  "keys",       "values", "copy",
                                    "pop", "update", "setdefault", "clear",  "popitem"};
const char* const kListMethods[] = {"index", "count",  "copy",    "append", "extend", "insert",
                                    "pop",   "remove", "reverse", "sort",   "clear"};

template <size_t N>
bool contains_name(const char* const (&names)[N], const std::string& name) {
  for (const char* n : names)
    if (name == n) return true;
  return false;
}

class BoundMethod : public Callable {
 public:
  BoundMethod(Value object, std::string name)
      : object_(std::move(object)), name_(std::move(name)) {}
  Value call(Interpreter& interp, CallArgs& args) override {
    return call_method(interp, object_, name_, args);
  }
  std::string repr() const override {
    return "<built-in method " + name_ + " of " + object_.type_name() + " object>";
  }

 private:
  Value object_;
  std::string name_;
};

}  // namespace

bool has_method(const Value& object, const std::string& name) {
  if (object.is_string()) return contains_name(kStringMethods, name);
  if (object.is_mapping()) return contains_name(kDictMethods, name);
  if (object.is_list()) return contains_name(kListMethods, name);
  return false;
}

Value bound_method(const Value& object, const std::string& name) {
  return Value(std::make_shared<BoundMethod>(object, name));
}

Value call_method(Interpreter& interp, const Value& object, const std::string& name,
                  CallArgs& args) {
  if (object.is_string()) return string_method(interp, object.str(), name, args);
  const std::string fn = object.type_name() + "." + name;
  if (object.is_mapping()) {
    const Dict& d = object.dict_ref();
    if (name == "get") {
      ArgBinder a(interp, args, fn, {"key", "default"});
      const Value* v = d.find(a.get(0));
      return v ? *v : a.get_or(1, Value::none());
    }
    if (name == "items" || name == "keys" || name == "values") {
      ArgBinder a(interp, args, fn, {});
      std::vector<Value> out;
      out.reserve(d.entries.size());
      for (const auto& [k, v] : d.entries) {
        if (name == "items")
          out.push_back(Value::list({k, v}, true));
        else
          out.push_back(name == "keys" ? k : v);
      }
      return Value::list(std::move(out));
    }
    if (name == "copy") {
      Value copy = Value::dict();
      copy.dict_ref().entries = d.entries;
      return copy;
    }
  } else if (object.is_list()) {
    const auto& items = object.list_ref().items;
    if (name == "index" || name == "count") {
      ArgBinder a(interp, args, fn, {"value"});
      int64_t n = 0;
      for (size_t i = 0; i < items.size(); ++i) {
        if (!values_equal(items[i], a.get(0))) continue;
        if (name == "index") return Value(static_cast<int64_t>(i));
        ++n;
      }
      if (name == "index") interp.error(fmt::format("{} is not in list", a.get(0).repr()));
      return Value(n);
    }
    if (name == "copy") return Value::list(items, object.list_ref().is_tuple);
  }
  if (has_method(object, name)) {
    interp.error(
        fmt::format("{}() is not allowed: templates run in an immutable sandbox, as "
                    "in transformers",
                    fn));
  }
  interp.error(fmt::format("'{} object' has no attribute '{}'", object.type_name(), name));
}

}  // namespace pensieve::chat
