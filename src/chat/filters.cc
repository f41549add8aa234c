// jinja2's builtin filters (with transformers' tojson), as chat templates use them.
#include <algorithm>
#include <cmath>
#include <functional>
#include <unordered_map>

#include "chat/builtins.h"
#include "core/error.h"

namespace pensieve::chat {
namespace {

using FilterFn = std::function<Value(Interpreter&, const Value&, CallArgs&)>;

std::string soft_str(const Value& v) { return v.to_str(); }

int64_t length_of(Interpreter& interp, const Value& v) {
  switch (v.type()) {
    case Value::Type::Undefined:
      return 0;
    case Value::Type::String:
      return static_cast<int64_t>(utf8_length(v.str()));
    case Value::Type::List:
      return static_cast<int64_t>(v.list_ref().items.size());
    case Value::Type::Dict:
      if (!v.is_namespace()) return static_cast<int64_t>(v.dict_ref().entries.size());
      break;
    default:
      break;
  }
  interp.error(fmt::format("object of type '{}' has no len()", v.type_name()));
}

// Attribute paths like "function.name" or "0", as selectattr/map/sort take them.
Value lookup_path(Interpreter& interp, const Value& item, const Value& path) {
  if (!path.is_string()) return interp.get_item(item, path);
  Value v = item;
  const std::string& p = path.str();
  size_t start = 0;
  while (true) {
    const size_t dot = p.find('.', start);
    const std::string part =
        p.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    const bool numeric = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit);
    if (v.is_undefined()) return v;
    v = numeric && part.size() < 18
            ? interp.get_item(v, Value(static_cast<int64_t>(std::stoll(part))))
            : interp.get_item(v, Value(part));
    if (dot == std::string::npos) return v;
    start = dot + 1;
  }
}

Value lower_if_string(const Value& v, bool case_sensitive) {
  return !case_sensitive && v.is_string() ? Value(ascii_lower(v.str())) : v;
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

Value tojson(Interpreter& interp, const Value& v, CallArgs& args) {
  ArgBinder a(interp, args, "tojson", {"ensure_ascii", "indent", "separators", "sort_keys"});
  JsonOptions o;
  o.ensure_ascii = a.get_bool(0, false);
  o.sort_keys = a.get_bool(3, false);
  if (a.has(1) && !a.get(1).is_none()) {
    o.has_indent = true;
    o.item_separator = std::string(1, ',');  // (a literal trips a GCC 12 -Wrestrict false positive)
    const Value& indent = a.get(1);
    if (indent.is_string()) {
      o.indent = indent.str();
    } else {
      const int64_t n = a.get_int(1, 0);
      if (n > 64) interp.error("tojson(): indent too large");
      o.indent = std::string(std::max<int64_t>(0, n), ' ');
    }
  }
  if (a.has(2) && !a.get(2).is_none()) {
    const Value& sep = a.get(2);
    if (!sep.is_list() || sep.list_ref().items.size() != 2 ||
        !sep.list_ref().items[0].is_string() || !sep.list_ref().items[1].is_string()) {
      interp.error("tojson(): separators must be a pair of strings");
    }
    o.item_separator = sep.list_ref().items[0].str();
    o.key_separator = sep.list_ref().items[1].str();
  }
  if (v.is_undefined()) interp.error(v.undefined_hint());
  std::string text = to_json_text(v, o);
  interp.charge_bytes(text.size());
  return Value(std::move(text));
}

// select/reject/selectattr/rejectattr: keep items whose test result == keep.
Value select_items(Interpreter& interp, const Value& seq, CallArgs& args, bool by_attribute,
                   bool keep) {
  std::vector<Value> rest(args.positional.begin(), args.positional.end());
  Value attribute;
  if (by_attribute) {
    if (rest.empty()) interp.error("selectattr/rejectattr need an attribute name");
    attribute = rest.front();
    rest.erase(rest.begin());
  }
  std::string test;
  if (!rest.empty()) {
    test = rest.front().to_str();
    rest.erase(rest.begin());
  }
  std::vector<Value> out;
  for (const Value& item : interp.iterate(seq)) {
    interp.charge(1);
    const Value v = by_attribute ? lookup_path(interp, item, attribute) : item;
    bool ok;
    if (test.empty()) {
      ok = v.truthy();
    } else {
      CallArgs test_args{rest, args.keyword};
      ok = apply_test(interp, test, v, test_args);
    }
    if (ok == keep) out.push_back(item);
  }
  return Value::list(std::move(out));
}

Value map_items(Interpreter& interp, const Value& seq, CallArgs& args) {
  std::vector<Value> out;
  const Value* attribute = nullptr;
  const Value* fallback = nullptr;
  for (const auto& [k, v] : args.keyword) {
    if (k == "attribute")
      attribute = &v;
    else if (k == "default")
      fallback = &v;
  }
  if (attribute) {
    for (const Value& item : interp.iterate(seq)) {
      Value v = lookup_path(interp, item, *attribute);
      out.push_back(v.is_undefined() && fallback ? *fallback : v);
    }
    return Value::list(std::move(out));
  }
  if (args.positional.empty()) interp.error("map() needs a filter name or attribute=");
  const std::string filter = args.positional[0].to_str();
  CallArgs rest{std::vector<Value>(args.positional.begin() + 1, args.positional.end()),
                args.keyword};
  for (const Value& item : interp.iterate(seq)) {
    CallArgs copy = rest;
    out.push_back(apply_filter(interp, filter, item, copy));
  }
  return Value::list(std::move(out));
}

Value sort_items(Interpreter& interp, const Value& seq, CallArgs& args) {
  ArgBinder a(interp, args, "sort", {"reverse", "case_sensitive", "attribute"});
  const bool reverse = a.get_bool(0, false), case_sensitive = a.get_bool(1, false);
  std::vector<Value> items = interp.iterate(seq);
  std::vector<std::pair<Value, size_t>> keyed;
  for (size_t i = 0; i < items.size(); ++i) {
    Value key = a.has(2) ? lookup_path(interp, items[i], a.get(2)) : items[i];
    keyed.emplace_back(lower_if_string(key, case_sensitive), i);
  }
  interp.charge(static_cast<int64_t>(items.size()) * 8);
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& x, const auto& y) {
    return reverse ? compare_values(y.first, x.first) < 0 : compare_values(x.first, y.first) < 0;
  });
  std::vector<Value> out;
  for (const auto& [k, i] : keyed) out.push_back(items[i]);
  return Value::list(std::move(out));
}

Value dictsort(Interpreter& interp, const Value& v, CallArgs& args) {
  ArgBinder a(interp, args, "dictsort", {"case_sensitive", "by", "reverse"});
  if (!v.is_mapping()) interp.error("dictsort(): a dict is required");
  const bool case_sensitive = a.get_bool(0, false), reverse = a.get_bool(2, false);
  const std::string by = a.get_str(1, "key");
  if (by != "key" && by != "value") interp.error("dictsort(): 'by' must be 'key' or 'value'");
  std::vector<Value> pairs;
  for (const auto& [k, val] : v.dict_ref().entries) pairs.push_back(Value::list({k, val}, true));
  const size_t col = by == "key" ? 0 : 1;
  std::stable_sort(pairs.begin(), pairs.end(), [&](const Value& x, const Value& y) {
    const Value kx = lower_if_string(x.list_ref().items[col], case_sensitive);
    const Value ky = lower_if_string(y.list_ref().items[col], case_sensitive);
    return reverse ? compare_values(ky, kx) < 0 : compare_values(kx, ky) < 0;
  });
  return Value::list(std::move(pairs));
}

Value unique_items(Interpreter& interp, const Value& seq, CallArgs& args) {
  ArgBinder a(interp, args, "unique", {"case_sensitive", "attribute"});
  std::vector<Value> out, seen;
  for (const Value& item : interp.iterate(seq)) {
    Value key = a.has(1) ? lookup_path(interp, item, a.get(1)) : item;
    key = lower_if_string(key, a.get_bool(0, false));
    interp.charge(static_cast<int64_t>(seen.size()) / 16 + 1);
    if (std::any_of(seen.begin(), seen.end(), [&](const Value& s) { return values_equal(s, key); }))
      continue;
    seen.push_back(key);
    out.push_back(item);
  }
  return Value::list(std::move(out));
}

Value min_max(Interpreter& interp, const Value& seq, CallArgs& args, bool want_max) {
  ArgBinder a(interp, args, want_max ? "max" : "min", {"case_sensitive", "attribute"});
  const Value* best = nullptr;
  Value best_key;
  std::vector<Value> items = interp.iterate(seq);
  for (const Value& item : items) {
    Value key = a.has(1) ? lookup_path(interp, item, a.get(1)) : item;
    key = lower_if_string(key, a.get_bool(0, false));
    if (!best ||
        (want_max ? compare_values(key, best_key) > 0 : compare_values(key, best_key) < 0)) {
      best = &item;
      best_key = key;
    }
  }
  return best ? *best : Value::undefined("no min/max item: the sequence was empty");
}

Value indent(Interpreter& interp, const Value& v, CallArgs& args) {
  ArgBinder a(interp, args, "indent", {"width", "first", "blank"});
  std::string prefix;
  if (a.has(0) && a.get(0).is_string())
    prefix = a.get(0).str();
  else
    prefix = std::string(std::clamp<int64_t>(a.get_int(0, 4), 0, 256), ' ');
  const bool first = a.get_bool(1, false), blank = a.get_bool(2, false);
  CallArgs no_args;
  // As jinja2: append a newline, split into lines, indent all but the first.
  const Value lines_v = call_method(interp, Value(soft_str(v) + "\n"), "splitlines", no_args);
  const auto& lines = lines_v.list_ref().items;
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (i > 0) out += '\n';
    const std::string& line = lines[i].str();
    if (i > 0 && (blank || !line.empty())) out += prefix;
    out += line;
  }
  if (first) out = prefix + out;
  interp.charge_bytes(out.size());
  return Value(std::move(out));
}

Value to_int(Interpreter& interp, const Value& v, CallArgs& args) {
  ArgBinder a(interp, args, "int", {"default", "base"});
  const Value fallback = a.get_or(0, Value(0));
  if (v.is_int()) return v;
  if (v.is_bool()) return Value(int64_t{v.as_bool()});
  if (v.is_float()) {
    if (!std::isfinite(v.as_float()) || std::fabs(v.as_float()) > 9.2e18) return fallback;
    return Value(static_cast<int64_t>(v.as_float()));
  }
  if (!v.is_string()) return fallback;
  std::string s = py_strip(v.str(), nullptr, true, true);
  s.erase(std::remove(s.begin(), s.end(), '_'), s.end());
  try {
    size_t used = 0;
    const int64_t n = std::stoll(s, &used, static_cast<int>(a.get_int(1, 10)));
    if (used == s.size()) return Value(n);
    const double d = std::stod(s, &used);
    if (used == s.size() && std::isfinite(d) && std::fabs(d) < 9.2e18)
      return Value(static_cast<int64_t>(d));
  } catch (const std::exception&) {
  }
  return fallback;
}

Value to_float(Interpreter& interp, const Value& v, CallArgs& args) {
  ArgBinder a(interp, args, "float", {"default"});
  if (v.is_number()) return Value(v.to_double());
  if (v.is_string()) {
    const std::string s = py_strip(v.str(), nullptr, true, true);
    try {
      size_t used = 0;
      const double d = std::stod(s, &used);
      if (used == s.size()) return Value(d);
    } catch (const std::exception&) {
    }
  }
  return a.get_or(0, Value(0.0));
}

Value round_filter(Interpreter& interp, const Value& v, CallArgs& args) {
  ArgBinder a(interp, args, "round", {"precision", "method"});
  if (!v.is_number()) interp.error("round(): a number is required");
  const int64_t precision = std::clamp<int64_t>(a.get_int(0, 0), -30, 30);
  const std::string method = a.get_str(1, "common");
  if (v.is_int() || v.is_bool()) {
    if (method == "common" && precision >= 0) return Value(int64_t(v.to_double()));
  }
  const double scale = std::pow(10.0, static_cast<double>(precision));
  const double x = v.to_double() * scale;
  double r;
  if (method == "common")
    r = std::nearbyint(x);  // Python's round(): half to even
  else if (method == "ceil")
    r = std::ceil(x);
  else if (method == "floor")
    r = std::floor(x);
  else
    interp.error("round(): method must be common, ceil or floor");
  return Value(r / scale);
}

Value title_filter(const Value& v) {
  // jinja2 capitalises each word after '-', whitespace or an opening bracket.
  std::string s = soft_str(v), out;
  bool word_start = true;
  for (char c : s) {
    const bool sep = c == '-' || c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' ||
                     c == '\v' || c == '(' || c == '{' || c == '[' || c == '<';
    if (sep) {
      out += c;
      word_start = true;
    } else {
      out += word_start ? ascii_upper(std::string(1, c)) : ascii_lower(std::string(1, c));
      word_start = false;
    }
  }
  return Value(out);
}

Value batch(Interpreter& interp, const Value& seq, CallArgs& args) {
  ArgBinder a(interp, args, "batch", {"linecount", "fill_with"});
  const int64_t n = a.get_int(0, 1);
  if (n <= 0) interp.error("batch(): linecount must be positive");
  std::vector<Value> out, current;
  for (const Value& item : interp.iterate(seq)) {
    current.push_back(item);
    if (static_cast<int64_t>(current.size()) == n) {
      out.push_back(Value::list(std::move(current)));
      current.clear();
    }
  }
  if (!current.empty()) {
    if (a.has(1)) {
      while (static_cast<int64_t>(current.size()) < n) current.push_back(a.get(1));
    }
    out.push_back(Value::list(std::move(current)));
  }
  return Value::list(std::move(out));
}

const std::unordered_map<std::string, FilterFn>& filters() {
  static const std::unordered_map<std::string, FilterFn> table = [] {
    std::unordered_map<std::string, FilterFn> t;
    t["abs"] = [](Interpreter& i, const Value& v, CallArgs&) {
      if (v.is_float()) return Value(std::fabs(v.as_float()));
      if (!v.is_number()) i.error("abs(): a number is required");
      const int64_t x = v.is_bool() ? v.as_bool() : v.as_int();
      return x == INT64_MIN ? Value(-static_cast<double>(x)) : Value(x < 0 ? -x : x);
    };
    t["attr"] = [](Interpreter& i, const Value& v, CallArgs& a) {
      ArgBinder b(i, a, "attr", {"name"});
      return i.get_attr(v, b.get(0).to_str());
    };
    t["batch"] = batch;
    t["capitalize"] = [](Interpreter& i, const Value& v, CallArgs& a) {
      return call_method(i, Value(soft_str(v)), "capitalize", a);
    };
    t["center"] = [](Interpreter& i, const Value& v, CallArgs& a) {
      ArgBinder b(i, a, "center", {"width"});
      CallArgs args{{Value(b.get_int(0, 80))}, {}};
      return call_method(i, Value(soft_str(v)), "center", args);
    };
    t["count"] = t["length"] = [](Interpreter& i, const Value& v, CallArgs&) {
      return Value(length_of(i, v));
    };
    t["default"] = t["d"] = [](Interpreter& i, const Value& v, CallArgs& a) {
      ArgBinder b(i, a, "default", {"default_value", "boolean"});
      const bool use_default = v.is_undefined() || (b.get_bool(1, false) && !v.truthy());
      return use_default ? b.get_or(0, Value("")) : v;
    };
    t["dictsort"] = dictsort;
    t["escape"] = t["e"] = t["forceescape"] = [](Interpreter&, const Value& v, CallArgs&) {
      return Value(html_escape(soft_str(v)));
    };
    t["first"] = [](Interpreter& i, const Value& v, CallArgs&) {
      if (v.is_list()) {
        const auto& items = v.list_ref().items;
        return items.empty() ? Value::undefined("no first item, sequence was empty") : items[0];
      }
      std::vector<Value> items = i.iterate(v);
      return items.empty() ? Value::undefined("no first item, sequence was empty") : items[0];
    };
    t["last"] = [](Interpreter& i, const Value& v, CallArgs&) {
      std::vector<Value> items = v.is_list() ? v.list_ref().items : i.iterate(v);
      return items.empty() ? Value::undefined("no last item, sequence was empty") : items.back();
    };
    t["float"] = to_float;
    t["format"] = [](Interpreter& i, const Value& v, CallArgs& a) {
      if (!a.keyword.empty()) {
        Value d = Value::dict();
        for (auto& [k, val] : a.keyword) d.dict_ref().set(Value(k), val);
        return Value(py_percent_format(i, soft_str(v), d));
      }
      return Value(py_percent_format(i, soft_str(v), Value::list(a.positional, true)));
    };
    t["indent"] = indent;
    t["int"] = to_int;
    t["items"] = [](Interpreter& i, const Value& v, CallArgs& a) {
      if (v.is_undefined()) return Value::list();
      if (!v.is_mapping()) i.error("items(): can only get item pairs from a mapping");
      return call_method(i, v, "items", a);
    };
    t["join"] = [](Interpreter& i, const Value& v, CallArgs& a) {
      ArgBinder b(i, a, "join", {"d", "attribute"});
      const std::string sep = b.get_str(0, "");
      std::string out;
      bool first = true;
      for (const Value& item : i.iterate(v)) {
        if (!first) out += sep;
        first = false;
        out += b.has(1) ? lookup_path(i, item, b.get(1)).to_str() : item.to_str();
      }
      i.charge_bytes(out.size());
      return Value(std::move(out));
    };
    t["list"] = [](Interpreter& i, const Value& v, CallArgs&) { return Value::list(i.iterate(v)); };
    t["lower"] = [](Interpreter&, const Value& v, CallArgs&) {
      return Value(ascii_lower(soft_str(v)));
    };
    t["upper"] = [](Interpreter&, const Value& v, CallArgs&) {
      return Value(ascii_upper(soft_str(v)));
    };
    t["map"] = map_items;
    t["max"] = [](Interpreter& i, const Value& v, CallArgs& a) { return min_max(i, v, a, true); };
    t["min"] = [](Interpreter& i, const Value& v, CallArgs& a) { return min_max(i, v, a, false); };
    t["select"] = [](Interpreter& i, const Value& v, CallArgs& a) {
      return select_items(i, v, a, false, true);
    };
    t["reject"] = [](Interpreter& i, const Value& v, CallArgs& a) {
      return select_items(i, v, a, false, false);
    };
    t["selectattr"] = [](Interpreter& i, const Value& v, CallArgs& a) {
      return select_items(i, v, a, true, true);
    };
    t["rejectattr"] = [](Interpreter& i, const Value& v, CallArgs& a) {
      return select_items(i, v, a, true, false);
    };
    t["replace"] = [](Interpreter& i, const Value& v, CallArgs& a) {
      return call_method(i, Value(soft_str(v)), "replace", a);
    };
    t["reverse"] = [](Interpreter& i, const Value& v, CallArgs&) {
      if (v.is_string()) {
        auto chars = utf8_chars(v.str());
        std::string out;
        for (auto it = chars.rbegin(); it != chars.rend(); ++it) out += *it;
        return Value(std::move(out));
      }
      std::vector<Value> items = i.iterate(v);
      std::reverse(items.begin(), items.end());
      return Value::list(std::move(items));
    };
    t["round"] = round_filter;
    t["safe"] = [](Interpreter&, const Value& v, CallArgs&) { return v; };
    t["sort"] = sort_items;
    t["string"] = [](Interpreter&, const Value& v, CallArgs&) {
      return v.is_string() ? v : Value(v.to_str());
    };
    t["sum"] = [](Interpreter& i, const Value& v, CallArgs& a) {
      ArgBinder b(i, a, "sum", {"attribute", "start"});
      Value total = b.get_or(1, Value(0));
      for (const Value& item : i.iterate(v)) {
        const Value x = b.has(0) ? lookup_path(i, item, b.get(0)) : item;
        if (!x.is_number() || !total.is_number()) i.error("sum(): numbers are required");
        total = total.is_float() || x.is_float()
                    ? Value(total.to_double() + x.to_double())
                    : Value(int64_t(total.to_double()) + int64_t(x.to_double()));
      }
      return total;
    };
    t["title"] = [](Interpreter&, const Value& v, CallArgs&) { return title_filter(v); };
    t["tojson"] = tojson;
    t["trim"] = [](Interpreter& i, const Value& v, CallArgs& a) {
      ArgBinder b(i, a, "trim", {"chars"});
      return Value(py_strip(soft_str(v), b.has(0) ? &b.get(0) : nullptr, true, true));
    };
    t["unique"] = unique_items;
    t["wordcount"] = [](Interpreter&, const Value& v, CallArgs&) {
      const std::string s = soft_str(v);
      int64_t n = 0;
      bool in_word = false;
      for (unsigned char c : s) {
        const bool word = std::isalnum(c) || c == '_' || c >= 0x80;
        if (word && !in_word) ++n;
        in_word = word;
      }
      return Value(n);
    };
    return t;
  }();
  return table;
}

}  // namespace

bool is_known_filter(const std::string& name) { return filters().count(name) > 0; }

Value apply_filter(Interpreter& interp, const std::string& name, const Value& input,
                   CallArgs& args) {
  auto it = filters().find(name);
  if (it == filters().end()) interp.error(fmt::format("no filter named '{}'", name));
  return it->second(interp, input, args);
}


}  // namespace pensieve::chat
