#include "chat/parser.h"

#include <algorithm>

#include "chat/builtins.h"
#include "core/error.h"

namespace pensieve::chat {
namespace {

// Nesting beyond this (brackets, blocks) is refused rather than risking the stack.
constexpr int kMaxNesting = 128;
constexpr int kMaxExprHeight = 256;
// A template this large is not a chat template.
constexpr size_t kMaxSourceBytes = 4u << 20;

using K = Expr::Kind;

class Parser {
 public:
  Parser(const std::vector<Token>& tokens, const SourceMap& map) : toks_(tokens), map_(map) {}

  Body parse_top() {
    std::string end;
    return parse_body({}, &end);
  }

 private:
  struct DepthGuard {
    Parser& p;
    explicit DepthGuard(Parser& parser) : p(parser) {
      if (++p.depth_ > kMaxNesting) p.error("template nested too deeply");
    }
    ~DepthGuard() { --p.depth_; }
  };

  const Token& cur() const { return toks_[pos_]; }
  const Token& peek(size_t n = 1) const { return toks_[std::min(pos_ + n, toks_.size() - 1)]; }
  void advance() {
    if (pos_ + 1 < toks_.size()) ++pos_;
  }
  bool is_op(const char* op) const { return cur().kind == TokenKind::Op && cur().text == op; }
  bool is_name(const char* name) const {
    return cur().kind == TokenKind::Name && cur().text == name;
  }
  bool skip_op(const char* op) {
    if (!is_op(op)) return false;
    advance();
    return true;
  }
  bool skip_name(const char* name) {
    if (!is_name(name)) return false;
    advance();
    return true;
  }

  static std::string describe(const Token& t) {
    switch (t.kind) {
      case TokenKind::Data: return "text";
      case TokenKind::VarBegin: return "'{{'";
      case TokenKind::VarEnd: return "end of print statement";
      case TokenKind::BlockBegin: return "'{%'";
      case TokenKind::BlockEnd: return "end of statement block";
      case TokenKind::String: return "string";
      case TokenKind::Int:
      case TokenKind::Float: return "number";
      case TokenKind::Eof: return "end of template";
      default: return "'" + t.text + "'";
    }
  }

  [[noreturn]] void error(const std::string& message) const {
    syntax_error(map_, cur().offset, message);
  }
  [[noreturn]] void unexpected(const std::string& expected) const {
    error(fmt::format("expected {}, got {}", expected, describe(cur())));
  }
  void expect_op(const char* op) {
    if (!skip_op(op)) unexpected(fmt::format("'{}'", op));
  }
  void expect_name(const char* name) {
    if (!skip_name(name)) unexpected(fmt::format("'{}'", name));
  }
  void expect_block_end() {
    if (cur().kind != TokenKind::BlockEnd) unexpected("end of statement block");
    advance();
  }
  std::string expect_identifier() {
    if (cur().kind != TokenKind::Name) unexpected("a name");
    std::string name = cur().text;
    advance();
    return name;
  }

  ExprPtr make(K kind, size_t offset) { return std::make_unique<Expr>(kind, offset); }

  // Records the node's height; long operator or filter chains build deep trees
  // without nesting brackets, and evaluation recurses once per level.
  ExprPtr seal(ExprPtr e) {
    int height = 0;
    for (const auto& c : e->children)
      if (c) height = std::max(height, c->height);
    for (const auto& [k, v] : e->keyword) height = std::max(height, v->height);
    e->height = height + 1;
    if (e->height > kMaxExprHeight) syntax_error(map_, e->offset, "expression nested too deeply");
    return e;
  }

  // ---- statements ----

  // Parses until a block tag named in `end_tags`; leaves the position after
  // that tag's name and stores which one it was in *end.
  Body parse_body(const std::vector<std::string>& end_tags, std::string* end) {
    DepthGuard guard(*this);
    Body body;
    while (true) {
      const Token& t = cur();
      if (t.kind == TokenKind::Eof) {
        if (end_tags.empty()) return body;
        std::string wanted;
        for (const auto& e : end_tags) wanted += (wanted.empty() ? "'" : " or '") + e + "'";
        error("unexpected end of template, expected " + wanted);
      }
      if (t.kind == TokenKind::Data) {
        auto s = std::make_unique<Stmt>(Stmt::Kind::Text, t.offset);
        s->text = t.text;
        body.push_back(std::move(s));
        advance();
      } else if (t.kind == TokenKind::VarBegin) {
        auto s = std::make_unique<Stmt>(Stmt::Kind::Output, t.offset);
        advance();
        s->expr = parse_tuple(true, {}, false);
        if (cur().kind != TokenKind::VarEnd) unexpected("end of print statement");
        advance();
        body.push_back(std::move(s));
      } else if (t.kind == TokenKind::BlockBegin) {
        advance();
        if (cur().kind != TokenKind::Name) unexpected("a tag name");
        const std::string tag = cur().text;
        if (std::find(end_tags.begin(), end_tags.end(), tag) != end_tags.end()) {
          *end = tag;
          advance();
          return body;
        }
        body.push_back(parse_statement());
      } else {
        error("unexpected " + describe(t));
      }
    }
  }

  Body parse_block_until(const char* end_tag) {
    std::string end;
    Body body = parse_body({end_tag}, &end);
    expect_block_end();
    return body;
  }

  StmtPtr parse_statement() {
    const size_t offset = cur().offset;
    const std::string tag = cur().text;
    advance();
    if (tag == "if") return parse_if(offset);
    if (tag == "for") return parse_for(offset);
    if (tag == "set") return parse_set(offset);
    if (tag == "macro") return parse_macro(offset);
    if (tag == "call") return parse_call_block(offset);
    if (tag == "filter") return parse_filter_block(offset);
    if (tag == "with") return parse_with(offset);
    if (tag == "generation") {
      auto s = std::make_unique<Stmt>(Stmt::Kind::Scope, offset);
      expect_block_end();
      s->bodies.push_back(parse_block_until("endgeneration"));
      return s;
    }
    if (tag == "break" || tag == "continue") {
      if (loop_depth_ == 0) syntax_error(map_, offset, fmt::format("'{}' outside of a loop", tag));
      auto s = std::make_unique<Stmt>(tag == "break" ? Stmt::Kind::Break : Stmt::Kind::Continue,
                                      offset);
      expect_block_end();
      return s;
    }
    if (tag == "include" || tag == "import" || tag == "from" || tag == "extends" ||
        tag == "block") {
      syntax_error(map_, offset, fmt::format("'{}' is not supported in chat templates", tag));
    }
    syntax_error(map_, offset, fmt::format("unknown tag '{}'", tag));
  }

  StmtPtr parse_if(size_t offset) {
    auto s = std::make_unique<Stmt>(Stmt::Kind::If, offset);
    while (true) {
      s->conditions.push_back(parse_tuple(false, {}, false));
      expect_block_end();
      std::string end;
      s->bodies.push_back(parse_body({"elif", "else", "endif"}, &end));
      if (end == "elif") continue;
      if (end == "else") {
        expect_block_end();
        s->bodies.push_back(parse_block_until("endif"));
      } else {
        expect_block_end();
      }
      return s;
    }
  }

  Target parse_target(bool allow_attribute) {
    Target target;
    const bool parenthesised = skip_op("(");
    target.name = expect_identifier();
    if (allow_attribute && !parenthesised && skip_op(".")) {
      target.attribute = expect_identifier();
      return target;
    }
    if (is_op(",")) {
      target.names.push_back(target.name);
      while (skip_op(",")) {
        if (cur().kind != TokenKind::Name || is_name("in")) break;
        target.names.push_back(expect_identifier());
      }
    }
    if (parenthesised) expect_op(")");
    return target;
  }

  StmtPtr parse_for(size_t offset) {
    auto s = std::make_unique<Stmt>(Stmt::Kind::For, offset);
    s->target = parse_target(false);
    expect_name("in");
    s->expr = parse_tuple(false, {"recursive"}, false);
    if (skip_name("if")) s->condition = parse_expression(true);
    if (is_name("recursive")) error("recursive loops are not supported");
    expect_block_end();
    ++loop_depth_;
    std::string end;
    s->bodies.push_back(parse_body({"endfor", "else"}, &end));
    --loop_depth_;
    expect_block_end();
    if (end == "else") s->bodies.push_back(parse_block_until("endfor"));
    return s;
  }

  std::vector<ExprPtr> parse_filter_chain() {
    std::vector<ExprPtr> filters;
    while (skip_op("|")) filters.push_back(parse_filter(nullptr));
    return filters;
  }

  StmtPtr parse_set(size_t offset) {
    Target target = parse_target(true);
    if (skip_op("=")) {
      auto s = std::make_unique<Stmt>(Stmt::Kind::Set, offset);
      s->target = std::move(target);
      s->expr = parse_tuple(true, {}, false);
      expect_block_end();
      return s;
    }
    if (!target.attribute.empty() || !target.names.empty()) unexpected("'='");
    auto s = std::make_unique<Stmt>(Stmt::Kind::SetBlock, offset);
    s->target = std::move(target);
    s->filters = parse_filter_chain();
    expect_block_end();
    s->bodies.push_back(parse_block_until("endset"));
    return s;
  }

  std::vector<MacroParam> parse_params() {
    std::vector<MacroParam> params;
    expect_op("(");
    while (!is_op(")")) {
      if (!params.empty()) {
        expect_op(",");
        if (is_op(")")) break;
      }
      MacroParam p;
      p.name = expect_identifier();
      if (skip_op("=")) p.default_value = parse_expression(true);
      params.push_back(std::move(p));
    }
    advance();
    return params;
  }

  StmtPtr parse_macro(size_t offset) {
    auto s = std::make_unique<Stmt>(Stmt::Kind::Macro, offset);
    s->name = expect_identifier();
    s->params = parse_params();
    expect_block_end();
    const int saved_loop_depth = loop_depth_;
    loop_depth_ = 0;
    s->bodies.push_back(parse_block_until("endmacro"));
    loop_depth_ = saved_loop_depth;
    return s;
  }

  StmtPtr parse_call_block(size_t offset) {
    auto s = std::make_unique<Stmt>(Stmt::Kind::CallBlock, offset);
    if (is_op("(")) s->params = parse_params();
    s->expr = parse_expression(true);
    if (s->expr->kind != K::Call) syntax_error(map_, s->expr->offset, "expected a call");
    expect_block_end();
    const int saved_loop_depth = loop_depth_;
    loop_depth_ = 0;
    s->bodies.push_back(parse_block_until("endcall"));
    loop_depth_ = saved_loop_depth;
    return s;
  }

  StmtPtr parse_filter_block(size_t offset) {
    auto s = std::make_unique<Stmt>(Stmt::Kind::FilterBlock, offset);
    s->filters.push_back(parse_filter(nullptr));
    for (auto& f : parse_filter_chain()) s->filters.push_back(std::move(f));
    expect_block_end();
    s->bodies.push_back(parse_block_until("endfilter"));
    return s;
  }

  StmtPtr parse_with(size_t offset) {
    auto s = std::make_unique<Stmt>(Stmt::Kind::With, offset);
    while (cur().kind != TokenKind::BlockEnd) {
      if (!s->assignments.empty()) expect_op(",");
      Target target = parse_target(false);
      expect_op("=");
      s->assignments.emplace_back(std::move(target), parse_expression(true));
    }
    expect_block_end();
    s->bodies.push_back(parse_block_until("endwith"));
    return s;
  }

  // ---- expressions ----

  bool is_tuple_end(const std::vector<std::string>& extra_end) const {
    const TokenKind k = cur().kind;
    if (k == TokenKind::VarEnd || k == TokenKind::BlockEnd || k == TokenKind::Eof) return true;
    if (is_op(")")) return true;
    return k == TokenKind::Name &&
           std::find(extra_end.begin(), extra_end.end(), cur().text) != extra_end.end();
  }

  ExprPtr parse_tuple(bool with_condexpr, const std::vector<std::string>& extra_end,
                      bool explicit_parens) {
    const size_t offset = cur().offset;
    std::vector<ExprPtr> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) expect_op(",");
      if (is_tuple_end(extra_end)) break;
      items.push_back(parse_expression(with_condexpr));
      if (is_op(",")) is_tuple = true;
      else break;
    }
    if (!is_tuple) {
      if (!items.empty()) return std::move(items[0]);
      if (!explicit_parens) unexpected("an expression");
    }
    auto e = make(K::Tuple, offset);
    e->children = std::move(items);
    return seal(std::move(e));
  }

  ExprPtr parse_expression(bool with_condexpr) {
    DepthGuard guard(*this);
    if (!with_condexpr) return parse_or();
    ExprPtr expr = parse_or();
    while (is_name("if")) {
      const size_t offset = cur().offset;
      advance();
      auto cond = make(K::CondExpr, offset);
      cond->children.push_back(std::move(expr));
      cond->children.push_back(parse_or());
      cond->children.push_back(skip_name("else") ? parse_expression(true) : nullptr);
      expr = seal(std::move(cond));
    }
    return expr;
  }

  ExprPtr binary(K kind, ExprPtr left, ExprPtr right, size_t offset, std::string op = {}) {
    auto e = make(kind, offset);
    e->name = std::move(op);
    e->children.push_back(std::move(left));
    e->children.push_back(std::move(right));
    return seal(std::move(e));
  }

  ExprPtr parse_or() {
    ExprPtr left = parse_and();
    while (is_name("or")) {
      const size_t offset = cur().offset;
      advance();
      left = binary(K::Or, std::move(left), parse_and(), offset);
    }
    return left;
  }

  ExprPtr parse_and() {
    ExprPtr left = parse_not();
    while (is_name("and")) {
      const size_t offset = cur().offset;
      advance();
      left = binary(K::And, std::move(left), parse_not(), offset);
    }
    return left;
  }

  ExprPtr parse_not() {
    if (is_name("not")) {
      DepthGuard guard(*this);
      auto e = make(K::Not, cur().offset);
      advance();
      e->children.push_back(parse_not());
      return seal(std::move(e));
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    const size_t offset = cur().offset;
    ExprPtr first = parse_math1();
    std::vector<std::string> ops;
    std::vector<ExprPtr> operands;
    while (true) {
      static const char* kOps[] = {"==", "!=", "<", "<=", ">", ">="};
      std::string op;
      for (const char* o : kOps)
        if (is_op(o)) op = o;
      if (!op.empty()) {
        advance();
      } else if (is_name("in")) {
        op = "in";
        advance();
      } else if (is_name("not") && peek().kind == TokenKind::Name && peek().text == "in") {
        op = "notin";
        advance();
        advance();
      } else {
        break;
      }
      ops.push_back(op);
      operands.push_back(parse_math1());
    }
    if (ops.empty()) return first;
    auto e = make(K::Compare, offset);
    e->children.push_back(std::move(first));
    for (auto& o : operands) e->children.push_back(std::move(o));
    e->ops = std::move(ops);
    return seal(std::move(e));
  }

  template <typename Next>
  ExprPtr parse_binary_level(std::initializer_list<const char*> ops, Next next) {
    ExprPtr left = (this->*next)();
    while (true) {
      const char* matched = nullptr;
      for (const char* o : ops)
        if (is_op(o)) matched = o;
      if (!matched) return left;
      const size_t offset = cur().offset;
      advance();
      left = binary(K::Binary, std::move(left), (this->*next)(), offset, matched);
    }
  }

  ExprPtr parse_math1() { return parse_binary_level({"+", "-"}, &Parser::parse_concat); }
  ExprPtr parse_concat() { return parse_binary_level({"~"}, &Parser::parse_math2); }
  ExprPtr parse_math2() {
    return parse_binary_level({"*", "/", "//", "%"}, &Parser::parse_pow);
  }
  ExprPtr parse_pow() { return parse_binary_level({"**"}, &Parser::parse_unary_filtered); }
  ExprPtr parse_unary_filtered() { return parse_unary(true); }

  ExprPtr parse_unary(bool with_filter) {
    DepthGuard guard(*this);
    ExprPtr node;
    if (is_op("-") || is_op("+")) {
      node = make(is_op("-") ? K::Neg : K::Pos, cur().offset);
      advance();
      node->children.push_back(parse_unary(false));
      node = seal(std::move(node));
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    if (with_filter) node = parse_filter_expr(std::move(node));
    return node;
  }

  ExprPtr parse_primary() {
    const Token& t = cur();
    const size_t offset = t.offset;
    if (t.kind == TokenKind::Name) {
      auto e = make(K::Literal, offset);
      if (t.text == "true" || t.text == "True") e->value = Value(true);
      else if (t.text == "false" || t.text == "False") e->value = Value(false);
      else if (t.text == "none" || t.text == "None") e->value = Value::none();
      else {
        e->kind = K::Name;
        e->name = t.text;
      }
      advance();
      return e;
    }
    if (t.kind == TokenKind::String) {
      std::string text;
      while (cur().kind == TokenKind::String) {
        text += cur().text;
        advance();
      }
      auto e = make(K::Literal, offset);
      e->value = Value(std::move(text));
      return e;
    }
    if (t.kind == TokenKind::Int || t.kind == TokenKind::Float) {
      auto e = make(K::Literal, offset);
      e->value = t.kind == TokenKind::Int ? Value(t.int_value) : Value(t.float_value);
      advance();
      return e;
    }
    if (skip_op("(")) {
      ExprPtr e = parse_tuple(true, {}, true);
      expect_op(")");
      return e;
    }
    if (skip_op("[")) {
      auto e = make(K::List, offset);
      while (!is_op("]")) {
        if (!e->children.empty()) {
          expect_op(",");
          if (is_op("]")) break;
        }
        e->children.push_back(parse_expression(true));
      }
      advance();
      return seal(std::move(e));
    }
    if (skip_op("{")) {
      auto e = make(K::Dict, offset);
      while (!is_op("}")) {
        if (!e->children.empty()) {
          expect_op(",");
          if (is_op("}")) break;
        }
        e->children.push_back(parse_expression(true));
        expect_op(":");
        e->children.push_back(parse_expression(true));
      }
      advance();
      return seal(std::move(e));
    }
    error("unexpected " + describe(t));
  }

  ExprPtr parse_postfix(ExprPtr node) {
    while (true) {
      if (is_op(".") || is_op("[")) {
        node = parse_subscript(std::move(node));
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_filter_expr(ExprPtr node) {
    while (true) {
      if (skip_op("|")) {
        node = parse_filter(std::move(node));
      } else if (is_name("is")) {
        node = parse_test(std::move(node));
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr node) {
    DepthGuard guard(*this);
    const size_t offset = cur().offset;
    if (skip_op(".")) {
      if (cur().kind == TokenKind::Name) {
        auto e = make(K::GetAttr, offset);
        e->name = cur().text;
        e->children.push_back(std::move(node));
        advance();
        return seal(std::move(e));
      }
      if (cur().kind != TokenKind::Int) unexpected("a name or number after '.'");
      auto index = make(K::Literal, cur().offset);
      index->value = Value(cur().int_value);
      advance();
      return binary(K::GetItem, std::move(node), std::move(index), offset);
    }
    expect_op("[");
    ExprPtr first;
    if (!is_op(":")) {
      first = parse_expression(true);
      if (skip_op("]")) return binary(K::GetItem, std::move(node), std::move(first), offset);
    }
    expect_op(":");
    auto slice = make(K::Slice, offset);
    slice->children.push_back(std::move(node));
    slice->children.push_back(std::move(first));
    slice->children.push_back(is_op("]") || is_op(":") ? nullptr : parse_expression(true));
    if (skip_op(":")) slice->children.push_back(is_op("]") ? nullptr : parse_expression(true));
    else slice->children.push_back(nullptr);
    expect_op("]");
    return seal(std::move(slice));
  }

  void parse_call_args(Expr& e) {
    DepthGuard guard(*this);
    expect_op("(");
    bool first = true;
    while (!is_op(")")) {
      if (!first) {
        expect_op(",");
        if (is_op(")")) break;
      }
      first = false;
      if (is_op("*") || is_op("**")) error("*args and **kwargs in calls are not supported");
      if (cur().kind == TokenKind::Name && peek().kind == TokenKind::Op && peek().text == "=") {
        std::string key = cur().text;
        advance();
        advance();
        e.keyword.emplace_back(std::move(key), parse_expression(true));
      } else {
        if (!e.keyword.empty()) error("positional argument follows keyword argument");
        e.children.push_back(parse_expression(true));
      }
    }
    advance();
  }

  ExprPtr parse_call(ExprPtr node) {
    auto e = make(K::Call, cur().offset);
    e->children.push_back(std::move(node));
    parse_call_args(*e);
    return seal(std::move(e));
  }

  ExprPtr parse_filter(ExprPtr node) {
    auto e = make(K::Filter, cur().offset);
    e->name = expect_identifier();
    while (is_op(".") && peek().kind == TokenKind::Name) {
      advance();
      e->name += "." + expect_identifier();
    }
    if (!is_known_filter(e->name)) syntax_error(map_, e->offset, "unknown filter '" + e->name + "'");
    e->children.push_back(std::move(node));
    if (is_op("(")) parse_call_args(*e);
    return seal(std::move(e));
  }

  ExprPtr parse_test(ExprPtr node) {
    auto e = make(K::Test, cur().offset);
    advance();  // 'is'
    e->negated = skip_name("not");
    if (cur().kind == TokenKind::Op && (cur().text == "==" || cur().text == "!=" ||
                                        cur().text == "<" || cur().text == ">" ||
                                        cur().text == "<=" || cur().text == ">=")) {
      error("a test name must be a name");
    }
    const size_t name_offset = cur().offset;
    e->name = expect_identifier();
    if (!is_known_test(e->name)) syntax_error(map_, name_offset, "unknown test '" + e->name + "'");
    e->children.push_back(std::move(node));
    const Token& t = cur();
    const bool arg_start =
        t.kind == TokenKind::Name || t.kind == TokenKind::String || t.kind == TokenKind::Int ||
        t.kind == TokenKind::Float || is_op("[") || is_op("{");
    if (is_op("(")) {
      parse_call_args(*e);
    } else if (arg_start && !is_name("else") && !is_name("or") && !is_name("and") &&
               !is_name("if") && !is_name("in") && !is_name("not")) {
      if (is_name("is")) error("you cannot chain multiple tests with 'is'");
      e->children.push_back(parse_postfix(parse_primary()));
    }
    return seal(std::move(e));
  }

  const std::vector<Token>& toks_;
  const SourceMap& map_;
  size_t pos_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
};

}  // namespace

std::unique_ptr<Program> parse_program(std::string source) {
  if (source.size() > kMaxSourceBytes) {
    fail("chat template: {} bytes is larger than the {} bytes allowed", source.size(),
         kMaxSourceBytes);
  }
  auto program = std::make_unique<Program>(normalize_template_source(std::move(source)));
  const std::vector<Token> tokens = lex_template(program->source, program->map);
  program->body = Parser(tokens, program->map).parse_top();
  return program;
}

}  // namespace pensieve::chat
