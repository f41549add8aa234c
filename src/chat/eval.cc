// Expression evaluation for the Interpreter: operators with Python's
// semantics, attribute/item lookup with jinja2's Undefined rules, calls.
#include <cmath>

#include "chat/builtins.h"
#include "chat/interpreter.h"
#include "core/error.h"

namespace pensieve::chat {
namespace {

using K = Expr::Kind;

bool is_ascii(const std::string& s) {
  for (unsigned char c : s)
    if (c >= 0x80) return false;
  return true;
}

int64_t int_of(const Value& v) { return v.is_bool() ? (v.as_bool() ? 1 : 0) : v.as_int(); }
bool is_integral(const Value& v) { return v.is_int() || v.is_bool(); }

// Python's floor division and modulo (the result takes the divisor's sign).
int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}
double float_mod(double a, double b) {
  double m = std::fmod(a, b);
  if (m != 0 && ((m < 0) != (b < 0))) m += b;
  return m;
}

// Python's slice.indices(): clamps start/stop for a sequence of `length`.
std::vector<int64_t> slice_positions(int64_t length, const Value& start_v, const Value& stop_v,
                                     const Value& step_v, Interpreter& interp) {
  auto as_index = [&](const Value& v) {
    if (!is_integral(v)) interp.error("slice indices must be integers or None");
    return int_of(v);
  };
  const int64_t step = step_v.is_none() || step_v.is_undefined() ? 1 : as_index(step_v);
  if (step == 0) interp.error("slice step cannot be zero");
  const int64_t lower = step < 0 ? -1 : 0;
  const int64_t upper = step < 0 ? length - 1 : length;
  auto adjust = [&](const Value& v, int64_t fallback) {
    if (v.is_none() || v.is_undefined()) return fallback;
    int64_t x = as_index(v);
    if (x < 0) {
      x += length;
      if (x < lower) x = lower;
    } else if (x > upper) {
      x = upper;
    }
    return x;
  };
  const int64_t start = adjust(start_v, step < 0 ? upper : lower);
  const int64_t stop = adjust(stop_v, step < 0 ? lower : upper);
  std::vector<int64_t> out;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) out.push_back(i);
  return out;
}

}  // namespace

CallArgs Interpreter::eval_args(const Expr& e, size_t first, const std::shared_ptr<Scope>& scope) {
  CallArgs args;
  for (size_t i = first; i < e.children.size(); ++i)
    args.positional.push_back(eval(*e.children[i], scope));
  for (const auto& [name, expr] : e.keyword) args.keyword.emplace_back(name, eval(*expr, scope));
  return args;
}

Value Interpreter::eval(const Expr& e, const std::shared_ptr<Scope>& scope) {
  charge(1);
  switch (e.kind) {
    case K::Literal:
      return e.value;
    case K::Name: {
      if (const Value* v = scope->find(e.name)) return *v;
      return Value::undefined(fmt::format("'{}' is undefined", e.name));
    }
    case K::List:
    case K::Tuple: {
      std::vector<Value> items;
      items.reserve(e.children.size());
      for (const auto& c : e.children) items.push_back(eval(*c, scope));
      return Value::list(std::move(items), e.kind == K::Tuple);
    }
    case K::Dict: {
      Value d = Value::dict();
      for (size_t i = 0; i + 1 < e.children.size(); i += 2) {
        Value key = eval(*e.children[i], scope);
        d.dict_ref().set(key, eval(*e.children[i + 1], scope));
      }
      return d;
    }
    case K::GetAttr: {
      Value object = eval(*e.children[0], scope);
      offset_ = e.offset;
      return get_attr(object, e.name);
    }
    case K::GetItem: {
      Value object = eval(*e.children[0], scope);
      Value key = eval(*e.children[1], scope);
      offset_ = e.offset;
      return get_item(object, key);
    }
    case K::Slice:
      return eval_slice(e, scope);
    case K::Call:
      return eval_call(e, scope);
    case K::Filter: {
      Value input = eval(*e.children[0], scope);
      CallArgs args = eval_args(e, 1, scope);
      offset_ = e.offset;
      return apply_filter(*this, e.name, input, args);
    }
    case K::Test: {
      Value value = eval(*e.children[0], scope);
      CallArgs args = eval_args(e, 1, scope);
      offset_ = e.offset;
      return Value(apply_test(*this, e.name, value, args) != e.negated);
    }
    case K::Neg:
    case K::Pos: {
      Value v = eval(*e.children[0], scope);
      offset_ = e.offset;
      if (v.is_undefined()) error(v.undefined_hint());
      if (v.is_float()) return Value(e.kind == K::Neg ? -v.as_float() : v.as_float());
      if (!is_integral(v)) {
        error(fmt::format("bad operand type for unary {}: '{}'", e.kind == K::Neg ? '-' : '+',
                          v.type_name()));
      }
      const int64_t x = int_of(v);
      if (e.kind == K::Pos) return Value(x);
      if (x == INT64_MIN) return Value(-static_cast<double>(x));
      return Value(-x);
    }
    case K::Not:
      return Value(!eval(*e.children[0], scope).truthy());
    case K::Binary: {
      Value a = eval(*e.children[0], scope);
      Value b = eval(*e.children[1], scope);
      offset_ = e.offset;
      return eval_binary(e, a, b);
    }
    case K::And: {
      Value a = eval(*e.children[0], scope);
      return a.truthy() ? eval(*e.children[1], scope) : a;
    }
    case K::Or: {
      Value a = eval(*e.children[0], scope);
      return a.truthy() ? a : eval(*e.children[1], scope);
    }
    case K::Compare: {
      Value left = eval(*e.children[0], scope);
      for (size_t i = 0; i < e.ops.size(); ++i) {
        Value right = eval(*e.children[i + 1], scope);
        offset_ = e.offset;
        if (!eval_compare(e.ops[i], left, right)) return Value(false);
        left = std::move(right);
      }
      return Value(true);
    }
    case K::CondExpr: {
      if (eval(*e.children[1], scope).truthy()) return eval(*e.children[0], scope);
      if (e.children[2]) return eval(*e.children[2], scope);
      return Value::undefined(
          "the inline if-expression evaluated to false and no else "
          "section was defined");
    }
  }
  return Value();
}

std::string Interpreter::repeat_checked(const std::string& s, int64_t n) {
  if (n <= 0 || s.empty()) return "";
  if (static_cast<double>(s.size()) * static_cast<double>(n) >
      static_cast<double>(limits_.max_output_bytes)) {
    error(fmt::format("string repetition exceeds {} bytes", limits_.max_output_bytes));
  }
  charge_bytes(s.size() * n);
  std::string out;
  out.reserve(s.size() * n);
  for (int64_t i = 0; i < n; ++i) out += s;
  return out;
}

Value Interpreter::eval_binary(const Expr& e, const Value& a, const Value& b) {
  const std::string& op = e.name;
  if (op == "~") {
    std::string s = a.to_str() + b.to_str();
    charge_bytes(s.size());
    if (s.size() > limits_.max_output_bytes) error("string too large");
    return Value(std::move(s));
  }
  if (a.is_undefined()) error(a.undefined_hint());
  if (b.is_undefined()) error(b.undefined_hint());
  auto type_error = [&]() -> Value {
    error(fmt::format("unsupported operand type(s) for {}: '{}' and '{}'", op, a.type_name(),
                      b.type_name()));
  };
  if (a.is_number() && b.is_number()) {
    const bool ints = is_integral(a) && is_integral(b);
    const double x = a.to_double(), y = b.to_double();
    int64_t r = 0;
    if (op == "+") {
      if (ints && !__builtin_add_overflow(int_of(a), int_of(b), &r)) return Value(r);
      return Value(x + y);
    }
    if (op == "-") {
      if (ints && !__builtin_sub_overflow(int_of(a), int_of(b), &r)) return Value(r);
      return Value(x - y);
    }
    if (op == "*") {
      if (ints && !__builtin_mul_overflow(int_of(a), int_of(b), &r)) return Value(r);
      return Value(x * y);
    }
    if (op == "/" || op == "//" || op == "%") {
      if (y == 0) error(op == "%" ? "integer modulo by zero" : "division by zero");
      if (op == "/") return Value(x / y);
      if (ints) {
        if (int_of(a) == INT64_MIN && int_of(b) == -1) return Value(op == "//" ? -x : 0.0);
        if (op == "//") return Value(floor_div(int_of(a), int_of(b)));
        return Value(int_of(a) - floor_div(int_of(a), int_of(b)) * int_of(b));
      }
      if (op == "//") return Value(std::floor(x / y));
      return Value(float_mod(x, y));
    }
    if (op == "**") {
      if (ints && int_of(b) >= 0) {
        int64_t base = int_of(a), exp = int_of(b), acc = 1;
        bool overflow = false;
        while (exp > 0 && !overflow) {
          if (exp & 1) overflow = __builtin_mul_overflow(acc, base, &acc);
          exp >>= 1;
          if (exp > 0 && !overflow) overflow = __builtin_mul_overflow(base, base, &base);
        }
        if (!overflow) return Value(acc);
      }
      if (x == 0 && y < 0) error("0.0 cannot be raised to a negative power");
      return Value(std::pow(x, y));
    }
    return type_error();
  }
  if (op == "+") {
    if (a.is_string() && b.is_string()) {
      if (a.str().size() + b.str().size() > limits_.max_output_bytes) error("string too large");
      charge_bytes(a.str().size() + b.str().size());
      return Value(a.str() + b.str());
    }
    if (a.is_list() && b.is_list()) {
      std::vector<Value> items = a.list_ref().items;
      items.insert(items.end(), b.list_ref().items.begin(), b.list_ref().items.end());
      charge(static_cast<int64_t>(items.size()));
      return Value::list(std::move(items), a.list_ref().is_tuple);
    }
    return type_error();
  }
  if (op == "*") {
    const Value* seq = a.is_string() || a.is_list() ? &a : &b;
    const Value* count = seq == &a ? &b : &a;
    if (!is_integral(*count) || !(seq->is_string() || seq->is_list())) return type_error();
    if (seq->is_string()) return Value(repeat_checked(seq->str(), int_of(*count)));
    const auto& items = seq->list_ref().items;
    const int64_t n = std::max<int64_t>(0, int_of(*count));
    if (static_cast<double>(items.size()) * n > 1e7) error("list repetition too large");
    charge(static_cast<int64_t>(items.size()) * n);
    std::vector<Value> out;
    for (int64_t i = 0; i < n; ++i) out.insert(out.end(), items.begin(), items.end());
    return Value::list(std::move(out), seq->list_ref().is_tuple);
  }
  if (op == "%" && a.is_string()) return Value(py_percent_format(*this, a.str(), b));
  return type_error();
}

bool Interpreter::eval_compare(const std::string& op, const Value& a, const Value& b) {
  if (op == "==") return values_equal(a, b);
  if (op == "!=") return !values_equal(a, b);
  if (op == "in" || op == "notin") {
    bool found = false;
    if (b.is_string()) {
      if (!a.is_string()) {
        error(fmt::format("'in <string>' requires string as left operand, not {}", a.type_name()));
      }
      found = b.str().find(a.str()) != std::string::npos;
    } else if (b.is_list()) {
      for (const auto& item : b.list_ref().items) {
        if (values_equal(item, a)) {
          found = true;
          break;
        }
      }
    } else if (b.is_dict() && !b.is_namespace()) {
      found = b.dict_ref().find(a) != nullptr;
    } else if (!b.is_undefined()) {
      error(fmt::format("argument of type '{}' is not iterable", b.type_name()));
    }
    return op == "in" ? found : !found;
  }
  const int c = compare_values(a, b);
  if (op == "<") return c < 0;
  if (op == "<=") return c <= 0;
  if (op == ">") return c > 0;
  return c >= 0;
}

Value Interpreter::eval_call(const Expr& e, const std::shared_ptr<Scope>& scope) {
  const Expr& callee_expr = *e.children[0];
  if (callee_expr.kind == K::GetAttr) {
    Value object = eval(*callee_expr.children[0], scope);
    CallArgs args = eval_args(e, 1, scope);
    offset_ = e.offset;
    if (has_method(object, callee_expr.name)) {
      return call_method(*this, object, callee_expr.name, args);
    }
    Value callee = get_attr(object, callee_expr.name);
    return call(callee, args);
  }
  Value callee = eval(callee_expr, scope);
  CallArgs args = eval_args(e, 1, scope);
  offset_ = e.offset;
  return call(callee, args);
}

Value Interpreter::call(const Value& callee, CallArgs& args) {
  if (callee.is_callable()) return callee.callable().call(*this, args);
  if (callee.is_undefined()) error(callee.undefined_hint());
  error(fmt::format("'{}' object is not callable", callee.type_name()));
}

Value Interpreter::get_attr(const Value& object, const std::string& name) {
  if (object.is_undefined()) error(object.undefined_hint());
  if (object.is_dict() && !object.is_namespace() && has_method(object, name)) {
    return bound_method(object, name);
  }
  if (object.is_dict()) {
    if (const Value* v = object.dict_ref().find(name)) return *v;
  } else if (has_method(object, name)) {
    return bound_method(object, name);
  }
  return Value::undefined(
      fmt::format("'{} object' has no attribute '{}'", object.type_name(), name));
}

Value Interpreter::get_item(const Value& object, const Value& key) {
  if (object.is_undefined()) error(object.undefined_hint());
  if (object.is_dict()) {
    if (const Value* v = object.dict_ref().find(key)) return *v;
  } else if (object.is_list() && is_integral(key)) {
    const auto& items = object.list_ref().items;
    int64_t i = int_of(key);
    if (i < 0) i += static_cast<int64_t>(items.size());
    if (i >= 0 && i < static_cast<int64_t>(items.size())) return items[i];
    return Value::undefined(
        fmt::format("'{} object' has no element {}", object.type_name(), int_of(key)));
  } else if (object.is_string() && is_integral(key)) {
    const std::string& s = object.str();
    int64_t i = int_of(key);
    if (is_ascii(s)) {
      if (i < 0) i += static_cast<int64_t>(s.size());
      if (i >= 0 && i < static_cast<int64_t>(s.size())) return Value(std::string(1, s[i]));
    } else {
      charge_bytes(s.size());
      auto chars = utf8_chars(s);
      if (i < 0) i += static_cast<int64_t>(chars.size());
      if (i >= 0 && i < static_cast<int64_t>(chars.size())) return Value(std::string(chars[i]));
    }
    return Value::undefined(fmt::format("'str object' has no element {}", int_of(key)));
  }
  if (key.is_string()) return get_attr(object, key.str());
  return Value::undefined(
      fmt::format("'{} object' has no element {}", object.type_name(), key.repr()));
}

Value Interpreter::eval_slice(const Expr& e, const std::shared_ptr<Scope>& scope) {
  Value object = eval(*e.children[0], scope);
  Value bounds[3];
  for (int i = 0; i < 3; ++i)
    bounds[i] = e.children[i + 1] ? eval(*e.children[i + 1], scope) : Value::none();
  offset_ = e.offset;
  if (object.is_undefined()) error(object.undefined_hint());
  if (object.is_list()) {
    const auto& items = object.list_ref().items;
    std::vector<Value> out;
    for (int64_t i : slice_positions(static_cast<int64_t>(items.size()), bounds[0], bounds[1],
                                     bounds[2], *this)) {
      out.push_back(items[i]);
    }
    charge(static_cast<int64_t>(out.size()));
    return Value::list(std::move(out), object.list_ref().is_tuple);
  }
  if (object.is_string()) {
    const std::string& s = object.str();
    charge_bytes(s.size());
    std::string out;
    if (is_ascii(s)) {
      for (int64_t i : slice_positions(static_cast<int64_t>(s.size()), bounds[0], bounds[1],
                                       bounds[2], *this)) {
        out += s[i];
      }
    } else {
      auto chars = utf8_chars(s);
      for (int64_t i : slice_positions(static_cast<int64_t>(chars.size()), bounds[0], bounds[1],
                                       bounds[2], *this)) {
        out += chars[i];
      }
    }
    return Value(std::move(out));
  }
  error(fmt::format("'{}' object is not subscriptable", object.type_name()));
}

}  // namespace pensieve::chat
