// The expression half of the chat template parser: jinja2's expression
// grammar and operator precedence over the lexer's tokens. The statement
// parser (parser.cc) builds on it.
#pragma once

#include <fmt/format.h>

#include <string>
#include <vector>

#include "chat/ast.h"
#include "chat/lexer.h"

namespace pensieve::chat {

// Nesting beyond this (brackets, blocks) is refused rather than risking the stack.
constexpr int kMaxNesting = 128;
// Long operator or filter chains build deep trees without brackets.
constexpr int kMaxExprHeight = 256;

class ExprParser {
 public:
  ExprParser(const std::vector<Token>& tokens, const SourceMap& map) : toks_(tokens), map_(map) {}

 protected:
  using K = Expr::Kind;

  struct DepthGuard {
    ExprParser& p;
    explicit DepthGuard(ExprParser& parser) : p(parser) {
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
      case TokenKind::Data:
        return "text";
      case TokenKind::VarBegin:
        return "'{{'";
      case TokenKind::VarEnd:
        return "end of print statement";
      case TokenKind::BlockBegin:
        return "'{%'";
      case TokenKind::BlockEnd:
        return "end of statement block";
      case TokenKind::String:
        return "string";
      case TokenKind::Int:
      case TokenKind::Float:
        return "number";
      case TokenKind::Eof:
        return "end of template";
      default:
        return "'" + t.text + "'";
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

  // ---- expressions (expr_parser.cc) ----
  bool is_tuple_end(const std::vector<std::string>& extra_end) const;
  ExprPtr parse_tuple(bool with_condexpr, const std::vector<std::string>& extra_end,
                      bool explicit_parens);
  ExprPtr parse_expression(bool with_condexpr);
  ExprPtr binary(K kind, ExprPtr left, ExprPtr right, size_t offset, std::string op = {});
  ExprPtr parse_or();
  ExprPtr parse_and();
  ExprPtr parse_not();
  ExprPtr parse_compare();
  template <typename Next>
  ExprPtr parse_binary_level(std::initializer_list<const char*> ops, Next next);
  ExprPtr parse_math1();
  ExprPtr parse_concat();
  ExprPtr parse_math2();
  ExprPtr parse_pow();
  ExprPtr parse_unary_filtered();
  ExprPtr parse_unary(bool with_filter);
  ExprPtr parse_primary();
  ExprPtr parse_postfix(ExprPtr node);
  ExprPtr parse_filter_expr(ExprPtr node);
  ExprPtr parse_subscript(ExprPtr node);
  void parse_call_args(Expr& e);
  ExprPtr parse_call(ExprPtr node);
  ExprPtr parse_filter(ExprPtr node);
  ExprPtr parse_test(ExprPtr node);

  const std::vector<Token>& toks_;
  const SourceMap& map_;
  size_t pos_ = 0;
  int depth_ = 0;
};

}  // namespace pensieve::chat
