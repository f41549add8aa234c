// Runs a parsed chat template: jinja2's scoping (a for-loop iteration, a macro
// and a with-block each get their own scope), Undefined semantics and output,
// under limits on steps, output size and call depth so that no template can
// hang or exhaust memory.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "chat/chat_template.h"
#include "chat/parser.h"
#include "chat/value.h"

namespace pensieve::chat {

using RenderLimits = TemplateLimits;

class Scope {
 public:
  explicit Scope(std::shared_ptr<Scope> parent) : parent_(std::move(parent)) { vars_.reserve(4); }
  const Value* find(std::string_view name) const;
  void set(const std::string& name, Value value);

 private:
  std::shared_ptr<Scope> parent_;
  std::vector<std::pair<std::string, Value>> vars_;
};

class Interpreter {
 public:
  Interpreter(const Program& program, const RenderLimits& limits);

  // `context` must be a dict; its entries become the template's variables.
  std::string render(const Value& context);

  // For builtins: account for work, raise errors naming the current line.
  void charge(int64_t steps);
  void charge_bytes(size_t n_bytes) { charge(static_cast<int64_t>(n_bytes / 256)); }
  [[noreturn]] void error(const std::string& message) const;
  // raise_exception(): the template's own message, without a line number.
  [[noreturn]] void raise(const std::string& message) const;

  Value call(const Value& callee, CallArgs& args);
  Value get_attr(const Value& object, const std::string& name);
  Value get_item(const Value& object, const Value& key);
  // Python iteration: list items, dict keys, string characters; Undefined is empty.
  std::vector<Value> iterate(const Value& v);
  std::string repeat_checked(const std::string& s, int64_t n);

 private:
  enum class Flow { Normal, Break, Continue };
  friend class MacroCallable;

  Flow exec_body(const Body& body, const std::shared_ptr<Scope>& scope);
  Flow exec(const Stmt& s, const std::shared_ptr<Scope>& scope);
  Flow exec_for(const Stmt& s, const std::shared_ptr<Scope>& scope);
  void assign(const Target& target, Value value, Scope& scope);
  std::string capture(const Body& body, const std::shared_ptr<Scope>& scope);
  Value apply_filter_chain(const std::vector<ExprPtr>& filters, Value input,
                           const std::shared_ptr<Scope>& scope);

  Value eval(const Expr& e, const std::shared_ptr<Scope>& scope);
  Value eval_binary(const Expr& e, const Value& a, const Value& b);
  Value eval_call(const Expr& e, const std::shared_ptr<Scope>& scope);
  Value eval_slice(const Expr& e, const std::shared_ptr<Scope>& scope);
  bool eval_compare(const std::string& op, const Value& a, const Value& b);
  CallArgs eval_args(const Expr& e, size_t first, const std::shared_ptr<Scope>& scope);
  void write(std::string_view text);

  const Program& program_;
  RenderLimits limits_;
  std::shared_ptr<Scope> root_;
  std::string* out_ = nullptr;
  int64_t steps_ = 0;
  int call_depth_ = 0;
  size_t offset_ = 0;            // of the node being evaluated, for error messages
  mutable bool raised_ = false;  // the error came from raise_exception()
};

}  // namespace pensieve::chat
