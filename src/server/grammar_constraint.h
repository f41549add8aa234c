// The engine's TokenConstraint for a grammar (server/json_grammar.h): a token
// is allowed when its text, as it reads in the middle of a sequence, keeps
// the grammar matching.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "engine/constraint.h"
#include "server/json_grammar.h"
#include "tokenizer/tokenizer.h"

namespace pensieve::server {

// Each token's text mid-sequence: decode(anchor + id) minus decode(anchor),
// so SentencePiece's leading space reads as a space. Special tokens and
// tokens with no text are left empty (never allowed by a grammar). A lone
// byte-fallback piece reads as U+FFFD, which a grammar only takes inside a
// JSON string, where any non-ASCII byte is alike.
class TokenTexts {
 public:
  explicit TokenTexts(const Tokenizer& tokenizer);
  int32_t size() const { return static_cast<int32_t>(texts_.size()); }
  const std::string& text(int32_t id) const { return texts_[static_cast<size_t>(id)]; }

 private:
  std::vector<std::string> texts_;
};

class GrammarConstraint : public TokenConstraint {
 public:
  GrammarConstraint(std::shared_ptr<const TokenTexts> texts, std::shared_ptr<const GrammarNode> grammar);
  bool allows(int32_t token) const override;
  void accept(int32_t token) override;
  bool complete() const override { return matcher_.complete(); }
  // The text generated so far.
  const std::string& text() const { return text_; }

 private:
  std::shared_ptr<const TokenTexts> texts_;
  GrammarMatcher matcher_;
  std::string text_;
  // Which first bytes the current state takes: most tokens are ruled out by
  // their first byte without copying the matcher. 0 no, 1 yes.
  std::array<uint8_t, 256> first_byte_ok_{};
  void refresh_first_bytes();
};

}  // namespace pensieve::server
