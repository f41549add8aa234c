// A byte-level grammar for forced tool calls: the exact text
//   <tool_call>\n{"name": "NAME", "arguments": ARGS}\n</tool_call>
// where NAME is one of the allowed tools and ARGS is compact JSON that
// follows the tool's input_schema (the subset below), so that the call the
// model is made to write parses and validates.
//
// Schema subset: `enum` and `const`; type string, integer, number, boolean,
// null, array (`items`), object (its `required` properties, in the order
// `required` lists them; optional ones are left out); a list of types or
// anyOf/oneOf take the first alternative; anything else (no type, free-form
// objects, nesting past 8 levels) is any JSON value. No whitespace outside
// strings; numbers have at most 16 digits per part and exponents at most 2
// (always a finite double); strings are valid UTF-8 with paired surrogate
// escapes.
//
// GrammarMatcher is a small copyable pushdown state: feed() one byte at a
// time (a copy, to try bytes that may be refused).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "server/backend.h"

namespace pensieve::server {

struct GrammarNode {
  enum class Kind { literal, choice, string, integer, number, array, sequence, any, any_object, any_array };
  Kind kind = Kind::literal;
  std::string text;                  // literal
  std::vector<std::string> options;  // choice: sorted; no option is a prefix of another
  std::vector<GrammarNode> children;  // sequence: in order; array: the item
};

// The grammar of one forced call among `tools` (at least one).
std::shared_ptr<const GrammarNode> tool_call_grammar(const std::vector<ForcedTool>& tools);
// The grammar of a value that follows `schema` (exposed for tests).
GrammarNode schema_grammar(const nlohmann::ordered_json& schema);

class GrammarMatcher {
 public:
  explicit GrammarMatcher(std::shared_ptr<const GrammarNode> root);
  // Consume one byte / all of `text`; false when the grammar refuses it, and
  // the state is then unspecified: feed a copy to try.
  bool feed(unsigned char c);
  bool feed(std::string_view text);
  // The whole grammar has been matched: no byte may follow.
  bool complete() const { return stack_.empty(); }

 private:
  struct Frame {
    const GrammarNode* node;
    int32_t a = 0;  // literal/choice: bytes matched; sequence: next child; counters
    int32_t b = 0;  // sub-state
    int32_t lo = 0, hi = 0;  // choice: the range of options still possible
  };
  enum class Step { taken, done, refused, pass };
  Step step(Frame& f, unsigned char c);
  Step step_again(unsigned char c) { return step(stack_.back(), c); }  // after a push
  static Step expect(Frame& f, unsigned char c, char want, int32_t next);
  void push(const GrammarNode* node);
  void settle();

  std::shared_ptr<const GrammarNode> root_;
  std::vector<Frame> stack_;
};

}  // namespace pensieve::server
