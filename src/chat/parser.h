// Builds the statement tree of a chat template from its tokens, following
// jinja2's grammar and operator precedence.
#pragma once

#include <string>

#include "chat/ast.h"
#include "chat/lexer.h"

namespace pensieve::chat {

struct Program {
  std::string source;  // normalised
  SourceMap map;
  Body body;

  explicit Program(std::string src) : source(std::move(src)), map(source) {}
};

// Throws Error "chat template: line L, column C: ..." on a syntax error.
std::unique_ptr<Program> parse_program(std::string source);

}  // namespace pensieve::chat
