// Global functions of transformers' chat template environment, and Python's
// two string formatting mini-languages (`%` and str.format).
#include <cmath>
#include <cstring>
#include <ctime>
#include <functional>

#include "chat/builtins.h"
#include "core/error.h"

namespace pensieve::chat {
namespace {

// jinja2's sandbox refuses ranges longer than this.
constexpr int64_t kMaxRange = 100000;

class Builtin : public Callable {
 public:
  using Fn = std::function<Value(Interpreter&, CallArgs&)>;
  Builtin(std::string name, Fn fn) : name_(std::move(name)), fn_(std::move(fn)) {}
  Value call(Interpreter& interp, CallArgs& args) override { return fn_(interp, args); }
  std::string repr() const override { return "<function " + name_ + ">"; }

 private:
  std::string name_;
  Fn fn_;
};

// joiner(sep): returns "" the first time it is called and sep afterwards.
class Joiner : public Callable {
 public:
  explicit Joiner(std::string sep) : sep_(std::move(sep)) {}
  Value call(Interpreter&, CallArgs&) override {
    if (!used_) {
      used_ = true;
      return Value("");
    }
    return Value(sep_);
  }
  std::string repr() const override { return "<Joiner>"; }

 private:
  std::string sep_;
  bool used_ = false;
};

Value range_fn(Interpreter& interp, CallArgs& args) {
  if (!args.keyword.empty()) interp.error("range() takes no keyword arguments");
  std::vector<int64_t> n;
  for (const auto& v : args.positional) {
    if (!v.is_int() && !v.is_bool()) {
      interp.error(
          fmt::format("range(): '{}' object cannot be interpreted as an integer", v.type_name()));
    }
    n.push_back(v.is_bool() ? v.as_bool() : v.as_int());
  }
  if (n.empty() || n.size() > 3) interp.error("range() takes 1 to 3 arguments");
  const int64_t start = n.size() == 1 ? 0 : n[0];
  const int64_t stop = n.size() == 1 ? n[0] : n[1];
  const int64_t step = n.size() == 3 ? n[2] : 1;
  if (step == 0) interp.error("range() arg 3 must not be zero");
  const double count = std::max(0.0, std::ceil((static_cast<double>(stop) - start) / step));
  if (count > kMaxRange) {
    interp.error(fmt::format("range too big: the sandbox allows at most {} items", kMaxRange));
  }
  interp.charge(static_cast<int64_t>(count));
  std::vector<Value> items;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) items.emplace_back(i);
  return Value::list(std::move(items));
}

// namespace(...) and dict(...): an optional mapping, then keyword arguments.
Value mapping_fn(Interpreter& interp, CallArgs& args, bool is_namespace) {
  Value out = is_namespace ? Value::namespace_() : Value::dict();
  if (args.positional.size() > 1) interp.error("expected at most 1 positional argument");
  if (!args.positional.empty()) {
    const Value& init = args.positional[0];
    if (init.is_dict()) {
      for (const auto& [k, v] : init.dict_ref().entries) out.dict_ref().set(k, v);
    } else if (init.is_list()) {
      for (const auto& pair : init.list_ref().items) {
        if (!pair.is_list() || pair.list_ref().items.size() != 2)
          interp.error("dictionary update sequence element must be a pair");
        out.dict_ref().set(pair.list_ref().items[0], pair.list_ref().items[1]);
      }
    } else if (!init.is_undefined()) {
      interp.error(fmt::format("'{}' object is not a mapping", init.type_name()));
    }
  }
  for (auto& [k, v] : args.keyword) out.dict_ref().set(Value(k), v);
  return out;
}

Value strftime_now(Interpreter& interp, CallArgs& args) {
  ArgBinder a(interp, args, "strftime_now", {"format"});
  const std::string format = a.get(0).to_str();
  if (format.size() > 256) interp.error("strftime_now(): format too long");
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  if (format.empty()) return Value("");
  char buf[1024];
  const size_t n = std::strftime(buf, sizeof(buf), format.c_str(), &local);
  return Value(std::string(buf, n));
}

}  // namespace

void install_globals(Scope& scope) {
  auto add = [&](const std::string& name, Builtin::Fn fn) {
    scope.set(name, Value(std::make_shared<Builtin>(name, std::move(fn))));
  };
  add("range", range_fn);
  add("namespace", [](Interpreter& i, CallArgs& a) { return mapping_fn(i, a, true); });
  add("dict", [](Interpreter& i, CallArgs& a) { return mapping_fn(i, a, false); });
  add("raise_exception", [](Interpreter& i, CallArgs& a) -> Value {
    ArgBinder b(i, a, "raise_exception", {"message"});
    i.raise(b.get(0).to_str());
  });
  add("strftime_now", strftime_now);
  add("joiner", [](Interpreter& i, CallArgs& a) -> Value {
    ArgBinder b(i, a, "joiner", {"sep"});
    return Value(std::make_shared<Joiner>(b.get_str(0, ", ")));
  });
}

std::string py_percent_format(Interpreter& interp, const std::string& format, const Value& args) {
  std::vector<Value> positional;
  if (args.is_list() && args.list_ref().is_tuple)
    positional = args.list_ref().items;
  else
    positional.push_back(args);
  size_t next = 0;
  std::string out;
  for (size_t i = 0; i < format.size(); ++i) {
    if (format[i] != '%') {
      out += format[i];
      continue;
    }
    if (++i >= format.size()) interp.error("incomplete format");
    const Value* arg = nullptr;
    if (format[i] == '(') {
      const size_t close = format.find(')', i);
      if (close == std::string::npos || !args.is_mapping())
        interp.error("format requires a mapping");
      arg = args.dict_ref().find(std::string_view(format).substr(i + 1, close - i - 1));
      if (!arg) interp.error("format: missing key");
      i = close + 1;
    }
    std::string flags;
    while (i < format.size() && std::strchr("-+ 0#", format[i])) flags += format[i++];
    int width = 0, precision = -1;
    while (i < format.size() && std::isdigit(static_cast<unsigned char>(format[i])))
      width = std::min(width * 10 + (format[i++] - '0'), 100000);
    if (i < format.size() && format[i] == '.') {
      precision = 0;
      while (++i < format.size() && std::isdigit(static_cast<unsigned char>(format[i])))
        precision = std::min(precision * 10 + (format[i] - '0'), 1000);
    }
    if (i >= format.size()) interp.error("incomplete format");
    const char conv = format[i];
    if (conv == '%') {
      out += '%';
      continue;
    }
    if (!arg) {
      if (next >= positional.size()) interp.error("not enough arguments for format string");
      arg = &positional[next++];
    }
    std::string text;
    switch (conv) {
      case 's':
        text = arg->to_str();
        break;
      case 'r':
        text = arg->repr();
        break;
      case 'd':
      case 'i':
        if (!arg->is_number()) interp.error("%d format: a number is required");
        text = std::to_string(arg->is_float() ? static_cast<int64_t>(arg->as_float())
                                              : static_cast<int64_t>(arg->to_double()));
        break;
      case 'f':
      case 'F':
      case 'e':
      case 'g': {
        if (!arg->is_number()) interp.error("%f format: a number is required");
        const std::string spec =
            std::string("{:.") + std::to_string(precision < 0 ? 6 : precision) + conv + "}";
        text = fmt::format(fmt::runtime(spec), arg->to_double());
        break;
      }
      case 'x':
      case 'X':
        if (!arg->is_int()) interp.error("%x format: an integer is required");
        text =
            conv == 'x' ? fmt::format("{:x}", arg->as_int()) : fmt::format("{:X}", arg->as_int());
        break;
      default:
        interp.error(fmt::format("unsupported format character '{}'", conv));
    }
    if (precision >= 0 && conv == 's' && text.size() > static_cast<size_t>(precision))
      text.resize(precision);
    const int n = static_cast<int>(utf8_length(text));
    if (width > n) {
      const bool left = flags.find('-') != std::string::npos;
      const char fill = flags.find('0') != std::string::npos && !left && conv != 's' ? '0' : ' ';
      text = left ? text + std::string(width - n, ' ') : std::string(width - n, fill) + text;
    }
    out += text;
  }
  if (next < positional.size() && !args.is_mapping())
    interp.error("not all arguments converted during string formatting");
  interp.charge_bytes(out.size());
  return out;
}

std::string py_str_format(Interpreter& interp, const std::string& format, CallArgs& args) {
  std::string out;
  size_t auto_index = 0;
  bool used_auto = false, used_manual = false;
  for (size_t i = 0; i < format.size(); ++i) {
    const char c = format[i];
    if (c == '}') {
      if (i + 1 < format.size() && format[i + 1] == '}') {
        out += '}';
        ++i;
        continue;
      }
      interp.error("str.format(): single '}' encountered in format string");
    }
    if (c != '{') {
      out += c;
      continue;
    }
    if (i + 1 < format.size() && format[i + 1] == '{') {
      out += '{';
      ++i;
      continue;
    }
    const size_t close = format.find('}', i);
    if (close == std::string::npos) interp.error("str.format(): single '{' encountered");
    std::string field = format.substr(i + 1, close - i - 1);
    i = close;
    char conversion = 's';
    if (const size_t bang = field.find('!'); bang != std::string::npos) {
      if (bang + 1 < field.size()) conversion = field[bang + 1];
      field.resize(bang);
    }
    if (field.find(':') != std::string::npos) {
      interp.error("str.format(): format specs are not supported");
    }
    const Value* arg = nullptr;
    if (field.empty()) {
      if (used_manual) interp.error("cannot switch from manual field numbering to automatic");
      used_auto = true;
      if (auto_index >= args.positional.size()) interp.error("str.format(): index out of range");
      arg = &args.positional[auto_index++];
    } else if (std::isdigit(static_cast<unsigned char>(field[0]))) {
      if (used_auto) interp.error("cannot switch from automatic field numbering to manual");
      used_manual = true;
      const size_t index = std::stoul(field);
      if (index >= args.positional.size()) interp.error("str.format(): index out of range");
      arg = &args.positional[index];
    } else {
      for (const auto& [k, v] : args.keyword)
        if (k == field) arg = &v;
      if (!arg) interp.error(fmt::format("str.format(): missing key '{}'", field));
    }
    out += conversion == 'r' ? arg->repr() : arg->to_str();
  }
  interp.charge_bytes(out.size());
  return out;
}

}  // namespace pensieve::chat
