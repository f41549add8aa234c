#include "chat/interpreter.h"

#include <cmath>

#include "chat/builtins.h"
#include "core/error.h"

namespace pensieve::chat {

const Value* Scope::find(std::string_view name) const {
  for (const Scope* s = this; s; s = s->parent_.get()) {
    for (auto it = s->vars_.rbegin(); it != s->vars_.rend(); ++it)
      if (it->first == name) return &it->second;
  }
  return nullptr;
}

void Scope::set(const std::string& name, Value value) {
  for (auto& [k, v] : vars_) {
    if (k == name) {
      v = std::move(value);
      return;
    }
  }
  vars_.emplace_back(name, std::move(value));
}

// A {% macro %} (or the body of a {% call %} block, as caller()).
class MacroCallable : public Callable {
 public:
  MacroCallable(const Stmt& stmt, std::weak_ptr<Scope> closure, Value caller)
      : stmt_(stmt), closure_(std::move(closure)), caller_(std::move(caller)) {}
  MacroCallable(const MacroCallable& macro, Value caller)
      : stmt_(macro.stmt_), closure_(macro.closure_), caller_(std::move(caller)) {}

  Value call(Interpreter& interp, CallArgs& args) override {
    if (++interp.call_depth_ > interp.limits_.max_call_depth) {
      interp.error(fmt::format("macro calls nested deeper than {}", interp.limits_.max_call_depth));
    }
    std::shared_ptr<Scope> parent = closure_.lock();
    auto scope = std::make_shared<Scope>(parent ? parent : interp.root_);
    const auto& params = stmt_.params;
    std::vector<Value> varargs;
    for (size_t i = 0; i < args.positional.size(); ++i) {
      if (i < params.size())
        scope->set(params[i].name, args.positional[i]);
      else
        varargs.push_back(args.positional[i]);
    }
    Value kwargs = Value::dict();
    for (auto& [name, value] : args.keyword) {
      bool is_param = false;
      for (size_t i = 0; i < params.size(); ++i) {
        if (params[i].name != name) continue;
        if (i < args.positional.size()) {
          interp.error(
              fmt::format("macro '{}' got multiple values for argument '{}'", stmt_.name, name));
        }
        scope->set(name, value);
        is_param = true;
      }
      if (!is_param) kwargs.dict_ref().set(Value(name), value);
    }
    for (size_t i = args.positional.size(); i < params.size(); ++i) {
      bool given = false;
      for (auto& [name, value] : args.keyword) given = given || name == params[i].name;
      if (given) continue;
      scope->set(params[i].name, params[i].default_value
                                     ? interp.eval(*params[i].default_value, scope)
                                     : Value::undefined(fmt::format(
                                           "parameter '{}' was not provided", params[i].name)));
    }
    scope->set("varargs", Value::list(std::move(varargs), true));
    scope->set("kwargs", std::move(kwargs));
    if (!caller_.is_undefined()) scope->set("caller", caller_);
    const Body& body = stmt_.bodies[0];
    std::string text = interp.capture(body, scope);
    --interp.call_depth_;
    return Value(std::move(text));
  }

  std::string repr() const override { return "<Macro '" + stmt_.name + "'>"; }

 private:
  const Stmt& stmt_;
  std::weak_ptr<Scope> closure_;
  Value caller_;
};

namespace {

class LoopCycle : public Callable {
 public:
  Value call(Interpreter& interp, CallArgs& args) override {
    if (args.positional.empty()) interp.error("no items for cycling given");
    return args.positional[index0 % static_cast<int64_t>(args.positional.size())];
  }
  std::string repr() const override { return "<bound method LoopContext.cycle>"; }

  int64_t index0 = 0;
};

}  // namespace

Interpreter::Interpreter(const Program& program, const RenderLimits& limits)
    : program_(program), limits_(limits) {}

void Interpreter::charge(int64_t steps) {
  steps_ += steps;
  if (steps_ > limits_.max_steps) fail("chat template: exceeded {} steps", limits_.max_steps);
}

void Interpreter::error(const std::string& message) const {
  fail("chat template: line {}: {}", program_.map.line(offset_), message);
}

void Interpreter::raise(const std::string& message) const {
  raised_ = true;
  fail("chat template: {}", message);
}

std::string Interpreter::render(const Value& context) {
  root_ = std::make_shared<Scope>(nullptr);
  install_globals(*root_);
  auto scope = std::make_shared<Scope>(root_);
  if (context.is_dict()) {
    for (const auto& [k, v] : context.dict_ref().entries)
      if (k.is_string()) scope->set(k.str(), v);
  }
  std::string out;
  out_ = &out;
  try {
    exec_body(program_.body, scope);
  } catch (const Error& e) {
    // Errors raised below the interpreter (value comparisons, tojson) learn
    // their line here; raise_exception() messages stay as the template wrote them.
    const std::string prefix = "chat template: ";
    std::string message = e.what();
    if (raised_ || message.rfind(prefix, 0) != 0 || message.rfind(prefix + "line ", 0) == 0 ||
        message.rfind(prefix + "exceeded ", 0) == 0) {
      throw;
    }
    throw Error(e.kind(), fmt::format("{}line {}: {}", prefix, program_.map.line(offset_),
                                      message.substr(prefix.size())));
  }
  return out;
}

void Interpreter::write(std::string_view text) {
  out_->append(text);
  charge_bytes(text.size());
  if (out_->size() > limits_.max_output_bytes) {
    error(fmt::format("output exceeds {} bytes", limits_.max_output_bytes));
  }
}

std::string Interpreter::capture(const Body& body, const std::shared_ptr<Scope>& scope) {
  std::string buffer;
  std::string* saved = out_;
  out_ = &buffer;
  try {
    exec_body(body, scope);
  } catch (...) {
    out_ = saved;
    throw;
  }
  out_ = saved;
  return buffer;
}

Interpreter::Flow Interpreter::exec_body(const Body& body, const std::shared_ptr<Scope>& scope) {
  for (const auto& s : body) {
    const Flow f = exec(*s, scope);
    if (f != Flow::Normal) return f;
  }
  return Flow::Normal;
}

Value Interpreter::apply_filter_chain(const std::vector<ExprPtr>& filters, Value input,
                                      const std::shared_ptr<Scope>& scope) {
  for (const auto& f : filters) {
    CallArgs args = eval_args(*f, 1, scope);
    offset_ = f->offset;
    input = apply_filter(*this, f->name, input, args);
  }
  return input;
}

Interpreter::Flow Interpreter::exec(const Stmt& s, const std::shared_ptr<Scope>& scope) {
  charge(1);
  offset_ = s.offset;
  switch (s.kind) {
    case Stmt::Kind::Text:
      write(s.text);
      break;
    case Stmt::Kind::Output: {
      const Value v = eval(*s.expr, scope);
      if (v.is_string())
        write(v.str());
      else
        write(v.to_str());
      break;
    }
    case Stmt::Kind::If:
      for (size_t i = 0; i < s.conditions.size(); ++i) {
        if (eval(*s.conditions[i], scope).truthy()) return exec_body(s.bodies[i], scope);
      }
      if (s.bodies.size() > s.conditions.size()) return exec_body(s.bodies.back(), scope);
      break;
    case Stmt::Kind::For:
      return exec_for(s, scope);
    case Stmt::Kind::Set:
      assign(s.target, eval(*s.expr, scope), *scope);
      break;
    case Stmt::Kind::SetBlock: {
      Value text(capture(s.bodies[0], scope));
      assign(s.target, apply_filter_chain(s.filters, std::move(text), scope), *scope);
      break;
    }
    case Stmt::Kind::Macro:
      scope->set(s.name, Value(std::make_shared<MacroCallable>(s, scope, Value())));
      break;
    case Stmt::Kind::CallBlock: {
      Value caller(std::make_shared<MacroCallable>(s, scope, Value()));
      const Expr& call = *s.expr;
      Value callee = eval(*call.children[0], scope);
      CallArgs args = eval_args(call, 1, scope);
      offset_ = s.offset;
      if (!callee.is_callable()) error("{% call %} needs a macro");
      auto* macro = dynamic_cast<MacroCallable*>(&callee.callable());
      if (!macro) error("{% call %} needs a macro");
      MacroCallable with_caller(*macro, std::move(caller));
      write(with_caller.call(*this, args).str());
      break;
    }
    case Stmt::Kind::FilterBlock: {
      Value text(capture(s.bodies[0], scope));
      write(apply_filter_chain(s.filters, std::move(text), scope).to_str());
      break;
    }
    case Stmt::Kind::With: {
      auto inner = std::make_shared<Scope>(scope);
      for (const auto& [target, expr] : s.assignments) assign(target, eval(*expr, scope), *inner);
      return exec_body(s.bodies[0], inner);
    }
    case Stmt::Kind::Scope:
      return exec_body(s.bodies[0], scope);
    case Stmt::Kind::Break:
      return Flow::Break;
    case Stmt::Kind::Continue:
      return Flow::Continue;
  }
  return Flow::Normal;
}

void Interpreter::assign(const Target& target, Value value, Scope& scope) {
  if (!target.attribute.empty()) {
    const Value* ns = scope.find(target.name);
    if (!ns || !ns->is_namespace()) error("cannot assign attribute on non-namespace object");
    ns->dict_ref().set(Value(target.attribute), std::move(value));
    return;
  }
  if (target.names.empty()) {
    scope.set(target.name, std::move(value));
    return;
  }
  std::vector<Value> items = iterate(value);
  if (items.size() != target.names.size()) {
    error(fmt::format("cannot unpack {} values into {} names", items.size(), target.names.size()));
  }
  for (size_t i = 0; i < items.size(); ++i) scope.set(target.names[i], std::move(items[i]));
}

std::vector<Value> Interpreter::iterate(const Value& v) {
  switch (v.type()) {
    case Value::Type::Undefined:
      return {};
    case Value::Type::List:
      return v.list_ref().items;
    case Value::Type::Dict: {
      if (v.is_namespace()) break;
      std::vector<Value> keys;
      for (const auto& [k, val] : v.dict_ref().entries) keys.push_back(k);
      return keys;
    }
    case Value::Type::String: {
      std::vector<Value> chars;
      for (std::string_view c : utf8_chars(v.str())) chars.emplace_back(std::string(c));
      charge(static_cast<int64_t>(chars.size()));
      return chars;
    }
    default:
      break;
  }
  error(fmt::format("'{}' object is not iterable", v.type_name()));
}

Interpreter::Flow Interpreter::exec_for(const Stmt& s, const std::shared_ptr<Scope>& scope) {
  std::vector<Value> items = iterate(eval(*s.expr, scope));
  if (s.condition) {
    std::vector<Value> kept;
    for (auto& item : items) {
      charge(1);
      auto filter_scope = std::make_shared<Scope>(scope);
      assign(s.target, item, *filter_scope);
      if (eval(*s.condition, filter_scope).truthy()) kept.push_back(std::move(item));
    }
    items = std::move(kept);
  }
  if (items.empty()) {
    if (s.bodies.size() > 1) return exec_body(s.bodies[1], scope);
    return Flow::Normal;
  }
  static const Value kIndex("index"), kIndex0("index0"), kRevindex("revindex"),
      kRevindex0("revindex0"), kFirst("first"), kLast("last"), kLength("length"),
      kPrevitem("previtem"), kNextitem("nextitem"), kDepth("depth"), kDepth0("depth0"),
      kCycle("cycle");
  const int64_t n = static_cast<int64_t>(items.size());
  // The loop object is rebuilt only when the template kept a reference to the
  // previous one; otherwise it is updated in place.
  Value loop;
  std::shared_ptr<LoopCycle> cycle;
  for (int64_t i = 0; i < n; ++i) {
    charge(1);
    auto iteration = std::make_shared<Scope>(scope);
    if (!loop.dict_is_unshared()) {
      loop = Value::dict();
      cycle = std::make_shared<LoopCycle>();
      auto& e = loop.dict_ref().entries;
      e.reserve(12);
      for (const Value* key : {&kIndex, &kIndex0, &kRevindex, &kRevindex0, &kFirst, &kLast,
                               &kLength, &kPrevitem, &kNextitem, &kDepth, &kDepth0}) {
        e.emplace_back(*key, Value());
      }
      e.emplace_back(kCycle, Value(cycle));
    }
    auto& e = loop.dict_ref().entries;
    e[0].second = Value(i + 1);
    e[1].second = Value(i);
    e[2].second = Value(n - i);
    e[3].second = Value(n - i - 1);
    e[4].second = Value(i == 0);
    e[5].second = Value(i == n - 1);
    e[6].second = Value(n);
    e[7].second = i > 0 ? items[i - 1] : Value::undefined("there is no previous item");
    e[8].second = i + 1 < n ? items[i + 1] : Value::undefined("there is no next item");
    e[9].second = Value(1);
    e[10].second = Value(0);
    cycle->index0 = i;
    iteration->set("loop", loop);
    offset_ = s.offset;
    assign(s.target, items[i], *iteration);
    if (exec_body(s.bodies[0], iteration) == Flow::Break) break;
  }
  return Flow::Normal;
}

}  // namespace pensieve::chat
