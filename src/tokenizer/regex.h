// PCRE2 regular expressions as tokenizer.json uses them (Oniguruma semantics in
// Hugging Face tokenizers): UTF-8, Unicode classes (\s, \w, \d, \p{..}), and
// `^`/`$` matching at line boundaries as Ruby syntax does. JIT compiled.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace pensieve::tok {

struct Span {
  size_t start = 0;
  size_t end = 0;
};

class Regex {
 public:
  // `where` names the pattern's origin (e.g. "tokenizer.json: normalizer.pattern")
  // for the error thrown when the pattern does not compile.
  Regex(const std::string& pattern, const std::string& where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // All non-overlapping matches, left to right. `text` must be valid UTF-8.
  std::vector<Span> find_all(std::string_view text) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Where a pattern (regex or literal string) matches, as used by Split,
// Replace and the like: non-overlapping, left to right.
class Pattern {
 public:
  static std::unique_ptr<Pattern> literal(std::string text);
  static std::unique_ptr<Pattern> regex(const std::string& pattern, const std::string& where);
  virtual ~Pattern() = default;
  virtual std::vector<Span> find_all(std::string_view text) const = 0;
};

// Replaces every match of `pattern` in `text` with `content`.
std::string replace_all(const Pattern& pattern, std::string_view text, std::string_view content);

}  // namespace pensieve::tok
