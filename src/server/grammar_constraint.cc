#include "server/grammar_constraint.h"

#include "core/error.h"

namespace pensieve::server {

TokenTexts::TokenTexts(const Tokenizer& tokenizer) {
  std::vector<int32_t> ids = tokenizer.encode("a", false);
  if (ids.empty()) fail(ErrorKind::internal, "the tokenizer encodes \"a\" to no tokens");
  const std::string base = tokenizer.decode(ids, false);
  const size_t n_anchor = ids.size();
  ids.push_back(0);
  texts_.resize(static_cast<size_t>(tokenizer.vocab_size()));
  for (int32_t id = 0; id < tokenizer.vocab_size(); ++id) {
    if (tokenizer.is_special(id)) continue;
    ids[n_anchor] = id;
    std::string text = tokenizer.decode(ids, false);
    if (text.size() > base.size() && text.compare(0, base.size(), base) == 0)
      texts_[static_cast<size_t>(id)] = text.substr(base.size());
  }
}

GrammarConstraint::GrammarConstraint(std::shared_ptr<const TokenTexts> texts,
                                     std::shared_ptr<const GrammarNode> grammar)
    : texts_(std::move(texts)), matcher_(std::move(grammar)) {
  refresh_first_bytes();
}

void GrammarConstraint::refresh_first_bytes() {
  for (int b = 0; b < 256; ++b) {
    GrammarMatcher m = matcher_;
    first_byte_ok_[static_cast<size_t>(b)] = m.feed(static_cast<unsigned char>(b)) ? 1 : 0;
  }
}

bool GrammarConstraint::allows(int32_t token) const {
  if (token < 0 || token >= texts_->size()) return false;
  const std::string& t = texts_->text(token);
  if (t.empty() || !first_byte_ok_[static_cast<unsigned char>(t[0])]) return false;
  GrammarMatcher m = matcher_;
  return m.feed(t);
}

void GrammarConstraint::accept(int32_t token) {
  const std::string* t = token >= 0 && token < texts_->size() ? &texts_->text(token) : nullptr;
  GrammarMatcher next = matcher_;
  if (t == nullptr || t->empty() || !next.feed(*t))
    fail(ErrorKind::internal, "token {} does not follow the output grammar", token);
  matcher_ = std::move(next);
  text_ += *t;
  refresh_first_bytes();
}

}  // namespace pensieve::server
