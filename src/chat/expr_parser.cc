#include "chat/expr_parser.h"

#include <algorithm>

#include "chat/builtins.h"
#include "core/error.h"

namespace pensieve::chat {

bool ExprParser::is_tuple_end(const std::vector<std::string>& extra_end) const {
  const TokenKind k = cur().kind;
  if (k == TokenKind::VarEnd || k == TokenKind::BlockEnd || k == TokenKind::Eof) return true;
  if (is_op(")")) return true;
  return k == TokenKind::Name &&
         std::find(extra_end.begin(), extra_end.end(), cur().text) != extra_end.end();
}

ExprPtr ExprParser::parse_tuple(bool with_condexpr, const std::vector<std::string>& extra_end,
                                bool explicit_parens) {
  const size_t offset = cur().offset;
  std::vector<ExprPtr> items;
  bool is_tuple = false;
  while (true) {
    if (!items.empty()) expect_op(",");
    if (is_tuple_end(extra_end)) break;
    items.push_back(parse_expression(with_condexpr));
    if (is_op(","))
      is_tuple = true;
    else
      break;
  }
  if (!is_tuple) {
    if (!items.empty()) return std::move(items[0]);
    if (!explicit_parens) unexpected("an expression");
  }
  auto e = make(K::Tuple, offset);
  e->children = std::move(items);
  return seal(std::move(e));
}

ExprPtr ExprParser::parse_expression(bool with_condexpr) {
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

ExprPtr ExprParser::binary(K kind, ExprPtr left, ExprPtr right, size_t offset, std::string op) {
  auto e = make(kind, offset);
  e->name = std::move(op);
  e->children.push_back(std::move(left));
  e->children.push_back(std::move(right));
  return seal(std::move(e));
}

ExprPtr ExprParser::parse_or() {
  ExprPtr left = parse_and();
  while (is_name("or")) {
    const size_t offset = cur().offset;
    advance();
    left = binary(K::Or, std::move(left), parse_and(), offset);
  }
  return left;
}

ExprPtr ExprParser::parse_and() {
  ExprPtr left = parse_not();
  while (is_name("and")) {
    const size_t offset = cur().offset;
    advance();
    left = binary(K::And, std::move(left), parse_not(), offset);
  }
  return left;
}

ExprPtr ExprParser::parse_not() {
  if (is_name("not")) {
    DepthGuard guard(*this);
    auto e = make(K::Not, cur().offset);
    advance();
    e->children.push_back(parse_not());
    return seal(std::move(e));
  }
  return parse_compare();
}

ExprPtr ExprParser::parse_compare() {
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
ExprPtr ExprParser::parse_binary_level(std::initializer_list<const char*> ops, Next next) {
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

ExprPtr ExprParser::parse_math1() {
  return parse_binary_level({"+", "-"}, &ExprParser::parse_concat);
}
ExprPtr ExprParser::parse_concat() { return parse_binary_level({"~"}, &ExprParser::parse_math2); }
ExprPtr ExprParser::parse_math2() {
  return parse_binary_level({"*", "/", "//", "%"}, &ExprParser::parse_pow);
}
ExprPtr ExprParser::parse_pow() {
  return parse_binary_level({"**"}, &ExprParser::parse_unary_filtered);
}
ExprPtr ExprParser::parse_unary_filtered() { return parse_unary(true); }

ExprPtr ExprParser::parse_unary(bool with_filter) {
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

ExprPtr ExprParser::parse_primary() {
  const Token& t = cur();
  const size_t offset = t.offset;
  if (t.kind == TokenKind::Name) {
    auto e = make(K::Literal, offset);
    if (t.text == "true" || t.text == "True")
      e->value = Value(true);
    else if (t.text == "false" || t.text == "False")
      e->value = Value(false);
    else if (t.text == "none" || t.text == "None")
      e->value = Value::none();
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

ExprPtr ExprParser::parse_postfix(ExprPtr node) {
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

ExprPtr ExprParser::parse_filter_expr(ExprPtr node) {
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

ExprPtr ExprParser::parse_subscript(ExprPtr node) {
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
  if (skip_op(":"))
    slice->children.push_back(is_op("]") ? nullptr : parse_expression(true));
  else
    slice->children.push_back(nullptr);
  expect_op("]");
  return seal(std::move(slice));
}

void ExprParser::parse_call_args(Expr& e) {
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

ExprPtr ExprParser::parse_call(ExprPtr node) {
  auto e = make(K::Call, cur().offset);
  e->children.push_back(std::move(node));
  parse_call_args(*e);
  return seal(std::move(e));
}

ExprPtr ExprParser::parse_filter(ExprPtr node) {
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

ExprPtr ExprParser::parse_test(ExprPtr node) {
  auto e = make(K::Test, cur().offset);
  advance();  // 'is'
  e->negated = skip_name("not");
  if (cur().kind == TokenKind::Op &&
      (cur().text == "==" || cur().text == "!=" || cur().text == "<" || cur().text == ">" ||
       cur().text == "<=" || cur().text == ">=")) {
    error("a test name must be a name");
  }
  const size_t name_offset = cur().offset;
  e->name = expect_identifier();
  if (!is_known_test(e->name)) syntax_error(map_, name_offset, "unknown test '" + e->name + "'");
  e->children.push_back(std::move(node));
  const Token& t = cur();
  const bool arg_start = t.kind == TokenKind::Name || t.kind == TokenKind::String ||
                         t.kind == TokenKind::Int || t.kind == TokenKind::Float || is_op("[") ||
                         is_op("{");
  if (is_op("(")) {
    parse_call_args(*e);
  } else if (arg_start && !is_name("else") && !is_name("or") && !is_name("and") && !is_name("if") &&
             !is_name("in") && !is_name("not")) {
    if (is_name("is")) error("you cannot chain multiple tests with 'is'");
    e->children.push_back(parse_postfix(parse_primary()));
  }
  return seal(std::move(e));
}

}  // namespace pensieve::chat
