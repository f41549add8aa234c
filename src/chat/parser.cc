#include "chat/parser.h"

#include <algorithm>

#include "chat/expr_parser.h"
#include "core/error.h"

namespace pensieve::chat {
namespace {

// A template this large is not a chat template.
constexpr size_t kMaxSourceBytes = 4u << 20;

class Parser : public ExprParser {
 public:
  Parser(const std::vector<Token>& tokens, const SourceMap& map) : ExprParser(tokens, map) {}

  Body parse_top() {
    std::string end;
    return parse_body({}, &end);
  }

 private:
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
      auto s =
          std::make_unique<Stmt>(tag == "break" ? Stmt::Kind::Break : Stmt::Kind::Continue, offset);
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
