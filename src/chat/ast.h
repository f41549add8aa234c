// The parsed form of a chat template: expressions and statements, each
// remembering its source offset so runtime errors can name a line.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "chat/value.h"

namespace pensieve::chat {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    Literal,  // value
    Name,     // name
    List,     // children
    Tuple,    // children
    Dict,     // children: key, value, key, value, ...
    GetAttr,  // children[0] . name
    GetItem,  // children[0] [ children[1] ]
    Slice,    // children[0] [ children[1] : children[2] : children[3] ] (null = omitted)
    Call,     // children[0] ( children[1..], keyword )
    Filter,   // name: children[0] | name(children[1..], keyword)
    Test,     // name: children[0] is [not] name(children[1..], keyword); negated
    Neg,      // - children[0]
    Pos,      // + children[0]
    Not,      // not children[0]
    Binary,   // children[0] op children[1]: + - * / // % ** ~
    And,
    Or,
    Compare,   // children[0] ops[0] children[1] ops[1] children[2] ...
    CondExpr,  // children[0] if children[1] else children[2] (may be null)
  };
  Kind kind;
  size_t offset = 0;
  Value value;
  std::string name;  // variable, attribute, filter or test name; operator for Binary
  std::vector<ExprPtr> children;
  std::vector<std::pair<std::string, ExprPtr>> keyword;
  std::vector<std::string> ops;  // Compare: "==", "!=", "<", "<=", ">", ">=", "in", "notin"
  bool negated = false;
  int height = 1;  // longest path to a leaf; the parser bounds it

  Expr(Kind k, size_t off) : kind(k), offset(off) {}
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

// A place `set` and `for` assign to: a name, a namespace attribute, or a tuple.
struct Target {
  std::string name;
  std::string attribute;           // set ns.attribute = ...
  std::vector<std::string> names;  // tuple unpacking when not empty
};

struct MacroParam {
  std::string name;
  ExprPtr default_value;  // may be null
};

struct Stmt {
  enum class Kind {
    Text,         // text
    Output,       // expr
    If,           // conditions[i] -> bodies[i]; a final extra body is the else branch
    For,          // target in expr [if condition]: bodies[0], else bodies[1]
    Set,          // target = expr
    SetBlock,     // target = rendered bodies[0] | filters
    Macro,        // name(params): bodies[0]
    CallBlock,    // {% call(params) expr %}: bodies[0] is caller()
    FilterBlock,  // bodies[0] | filters
    With,         // assignments; bodies[0]
    Scope,        // bodies[0] rendered as is (generation blocks)
    Break,
    Continue,
  };
  Kind kind;
  size_t offset = 0;
  std::string text;
  ExprPtr expr;
  ExprPtr condition;
  std::vector<ExprPtr> conditions;
  std::vector<Body> bodies;
  Target target;
  std::string name;
  std::vector<MacroParam> params;
  std::vector<ExprPtr> filters;  // Filter nodes whose children[0] is null (the block's text)
  std::vector<std::pair<Target, ExprPtr>> assignments;

  Stmt(Kind k, size_t off) : kind(k), offset(off) {}
};

}  // namespace pensieve::chat
