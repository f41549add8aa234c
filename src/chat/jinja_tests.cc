// jinja2's builtin tests (`x is defined`, `x is divisibleby 3`, ...).
#include <cmath>
#include <functional>
#include <unordered_map>

#include "chat/builtins.h"
#include "core/error.h"

namespace pensieve::chat {
namespace {

using TestFn = std::function<bool(Interpreter&, const Value&, CallArgs&)>;

bool is_lower_or_upper(const Value& v, bool lower) {
  if (!v.is_string()) return false;
  bool cased = false;
  for (char c : v.str()) {
    if (!std::isalpha(static_cast<unsigned char>(c))) continue;
    cased = true;
    if ((c >= 'a' && c <= 'z') != lower) return false;
  }
  return cased;
}

const std::unordered_map<std::string, TestFn>& tests() {
  static const std::unordered_map<std::string, TestFn> table = [] {
    std::unordered_map<std::string, TestFn> t;
    auto unary = [&t](const char* name, std::function<bool(const Value&)> f) {
      t[name] = [name, f](Interpreter& i, const Value& v, CallArgs& a) {
        ArgBinder b(i, a, name, {});
        return f(v);
      };
    };
    auto binary = [&t](const char* name,
                       std::function<bool(Interpreter&, const Value&, const Value&)> f) {
      t[name] = [name, f](Interpreter& i, const Value& v, CallArgs& a) {
        ArgBinder b(i, a, name, {"other"});
        return f(i, v, b.get(0));
      };
    };
    unary("defined", [](const Value& v) { return !v.is_undefined(); });
    unary("undefined", [](const Value& v) { return v.is_undefined(); });
    unary("none", [](const Value& v) { return v.is_none(); });
    unary("string", [](const Value& v) { return v.is_string(); });
    unary("number", [](const Value& v) { return v.is_number(); });
    unary("integer", [](const Value& v) { return v.is_int(); });
    unary("float", [](const Value& v) { return v.is_float(); });
    unary("boolean", [](const Value& v) { return v.is_bool(); });
    unary("true", [](const Value& v) { return v.is_bool() && v.as_bool(); });
    unary("false", [](const Value& v) { return v.is_bool() && !v.as_bool(); });
    unary("mapping", [](const Value& v) { return v.is_mapping(); });
    unary("iterable", [](const Value& v) {
      return v.is_string() || v.is_list() || v.is_mapping() || v.is_undefined();
    });
    unary("sequence", [](const Value& v) {
      return v.is_string() || v.is_list() || v.is_mapping() || v.is_undefined();
    });
    unary("callable", [](const Value& v) { return v.is_callable(); });
    unary("escaped", [](const Value&) { return false; });
    unary("lower", [](const Value& v) { return is_lower_or_upper(v, true); });
    unary("upper", [](const Value& v) { return is_lower_or_upper(v, false); });
    auto parity = [](Interpreter& i, const Value& v, int64_t want) {
      if (!v.is_int() && !v.is_bool()) i.error("even/odd need an integer");
      const int64_t x = v.is_bool() ? v.as_bool() : v.as_int();
      return ((x % 2) + 2) % 2 == want;
    };
    t["even"] = [parity](Interpreter& i, const Value& v, CallArgs&) { return parity(i, v, 0); };
    t["odd"] = [parity](Interpreter& i, const Value& v, CallArgs&) { return parity(i, v, 1); };
    binary("divisibleby", [](Interpreter& i, const Value& v, const Value& n) {
      if (!v.is_number() || !n.is_number()) i.error("divisibleby needs numbers");
      if (n.to_double() == 0) i.error("integer division or modulo by zero");
      return std::fmod(v.to_double(), n.to_double()) == 0;
    });
    auto eq = [](Interpreter&, const Value& a, const Value& b) { return values_equal(a, b); };
    auto ne = [](Interpreter&, const Value& a, const Value& b) { return !values_equal(a, b); };
    auto lt = [](Interpreter&, const Value& a, const Value& b) { return compare_values(a, b) < 0; };
    auto le = [](Interpreter&, const Value& a, const Value& b) {
      return compare_values(a, b) <= 0;
    };
    auto gt = [](Interpreter&, const Value& a, const Value& b) { return compare_values(a, b) > 0; };
    auto ge = [](Interpreter&, const Value& a, const Value& b) {
      return compare_values(a, b) >= 0;
    };
    for (const char* n : {"equalto", "eq", "=="}) binary(n, eq);
    for (const char* n : {"ne", "!="}) binary(n, ne);
    for (const char* n : {"lt", "lessthan", "<"}) binary(n, lt);
    for (const char* n : {"le", "<="}) binary(n, le);
    for (const char* n : {"gt", "greaterthan", ">"}) binary(n, gt);
    for (const char* n : {"ge", ">="}) binary(n, ge);
    binary("sameas", [](Interpreter&, const Value& a, const Value& b) {
      if (a.type() != b.type()) return false;
      if (a.is_none() || a.is_bool() || a.is_undefined()) return values_equal(a, b);
      if (a.is_list()) return &a.list_ref() == &b.list_ref();
      if (a.is_dict()) return &a.dict_ref() == &b.dict_ref();
      return values_equal(a, b);
    });
    binary("in", [](Interpreter& i, const Value& v, const Value& seq) {
      if (seq.is_string()) return v.is_string() && seq.str().find(v.str()) != std::string::npos;
      for (const Value& item : i.iterate(seq))
        if (values_equal(item, v)) return true;
      return false;
    });
    t["filter"] = [](Interpreter&, const Value& v, CallArgs&) {
      return v.is_string() && is_known_filter(v.str());
    };
    t["test"] = [](Interpreter&, const Value& v, CallArgs&) {
      return v.is_string() && is_known_test(v.str());
    };
    return t;
  }();
  return table;
}

}  // namespace

bool is_known_test(const std::string& name) { return tests().count(name) > 0; }

bool apply_test(Interpreter& interp, const std::string& name, const Value& value, CallArgs& args) {
  auto it = tests().find(name);
  if (it == tests().end()) interp.error(fmt::format("no test named '{}'", name));
  return it->second(interp, value, args);
}

}  // namespace pensieve::chat
