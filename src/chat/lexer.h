// Splits a chat template into tokens the way jinja2's lexer does with the
// settings transformers uses (trim_blocks, lstrip_blocks, no trailing newline
// kept): text between tags becomes Data tokens with whitespace control already
// applied, comments vanish, {% raw %} bodies become Data, and the inside of
// {{ }} / {% %} becomes expression tokens.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace pensieve::chat {

enum class TokenKind {
  Data,
  VarBegin,
  VarEnd,
  BlockBegin,
  BlockEnd,
  Name,
  String,
  Int,
  Float,
  Op,
  Eof
};

struct Token {
  TokenKind kind = TokenKind::Eof;
  std::string text;   // data text, name, decoded string literal or operator
  size_t offset = 0;  // byte offset in the normalised source
  int64_t int_value = 0;
  double float_value = 0;
};

// Maps byte offsets of the normalised source to 1-based line and column.
class SourceMap {
 public:
  explicit SourceMap(const std::string& source);
  int line(size_t offset) const;
  int column(size_t offset) const;

 private:
  std::vector<size_t> line_starts_;
};

// Throws Error "chat template: line L, column C: <message>".
[[noreturn]] void syntax_error(const SourceMap& map, size_t offset, const std::string& message);

// jinja2 reads "\r\n" and "\r" as "\n" and drops one trailing newline.
std::string normalize_template_source(std::string source);

std::vector<Token> lex_template(const std::string& source, const SourceMap& map);

}  // namespace pensieve::chat
