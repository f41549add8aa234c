#include "tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "core/error.h"
#include "tokenizer/unicode.h"

namespace pensieve::tok {
namespace {

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  pcre2_get_error_message(code, buf, sizeof(buf));
  return reinterpret_cast<const char*>(buf);
}

// Per-thread match state: the JIT stack and match data are reused across
// calls so that pre-tokenizing thousands of words does not allocate each time.
struct ThreadMatchState {
  pcre2_match_data* data = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;
  ThreadMatchState() {
    data = pcre2_match_data_create(1, nullptr);
    context = pcre2_match_context_create(nullptr);
    // Long whitespace runs under `\s+(?!\S)` need more than the default 32 KiB.
    jit_stack = pcre2_jit_stack_create(64 * 1024, 4 * 1024 * 1024, nullptr);
    pcre2_jit_stack_assign(context, nullptr, jit_stack);
  }
  ~ThreadMatchState() {
    pcre2_jit_stack_free(jit_stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
};

ThreadMatchState& thread_match_state() {
  thread_local ThreadMatchState state;
  return state;
}

}  // namespace

struct Regex::Impl {
  pcre2_code* code = nullptr;
  std::string pattern;
  std::string where;
};

Regex::Regex(const std::string& pattern, const std::string& where) : impl_(new Impl) {
  impl_->pattern = pattern;
  impl_->where = where;
  int error = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_compile_context* cc = pcre2_compile_context_create(nullptr);
  pcre2_set_newline(cc, PCRE2_NEWLINE_LF);
  impl_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                              PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE, &error, &error_offset, cc);
  pcre2_compile_context_free(cc);
  if (impl_->code == nullptr) {
    fail("{}: regex '{}' does not compile at offset {}: {}", where, pattern, error_offset,
         pcre2_message(error));
  }
  // JIT is an optimisation: the interpreter still works where JIT is unavailable.
  pcre2_jit_compile(impl_->code, PCRE2_JIT_COMPLETE);
}

Regex::~Regex() {
  if (impl_ && impl_->code) pcre2_code_free(impl_->code);
}

std::vector<Span> Regex::find_all(std::string_view text) const {
  std::vector<Span> out;
  ThreadMatchState& st = thread_match_state();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  while (pos <= text.size()) {
    const int rc = pcre2_match(impl_->code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, st.data,
                               st.context);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      fail("{}: regex '{}' failed while matching: {}", impl_->where, impl_->pattern,
           pcre2_message(rc));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(st.data);
    const size_t start = ov[0], end = ov[1];
    out.push_back({start, end});
    if (end > start) {
      pos = end;
    } else {
      // Empty match: step over one character, as Oniguruma's iterator does.
      if (end >= text.size()) break;
      pos = end + utf8_seq_len(static_cast<uint8_t>(text[end]));
    }
  }
  return out;
}

namespace {

class LiteralPattern : public Pattern {
 public:
  explicit LiteralPattern(std::string text) : text_(std::move(text)) {}
  std::vector<Span> find_all(std::string_view text) const override {
    std::vector<Span> out;
    if (text_.empty()) return out;
    size_t pos = 0;
    while ((pos = text.find(text_, pos)) != std::string_view::npos) {
      out.push_back({pos, pos + text_.size()});
      pos += text_.size();
    }
    return out;
  }

 private:
  std::string text_;
};

class RegexPattern : public Pattern {
 public:
  RegexPattern(const std::string& pattern, const std::string& where) : regex_(pattern, where) {}
  std::vector<Span> find_all(std::string_view text) const override {
    return regex_.find_all(text);
  }

 private:
  Regex regex_;
};

}  // namespace

std::unique_ptr<Pattern> Pattern::literal(std::string text) {
  return std::make_unique<LiteralPattern>(std::move(text));
}

std::unique_ptr<Pattern> Pattern::regex(const std::string& pattern, const std::string& where) {
  return std::make_unique<RegexPattern>(pattern, where);
}

std::string replace_all(const Pattern& pattern, std::string_view text, std::string_view content) {
  const std::vector<Span> matches = pattern.find_all(text);
  if (matches.empty()) return std::string(text);
  std::string out;
  out.reserve(text.size() + matches.size() * content.size());
  size_t prev = 0;
  for (const Span& m : matches) {
    out.append(text.substr(prev, m.start - prev));
    out.append(content);
    prev = m.end;
  }
  out.append(text.substr(prev));
  return out;
}

}  // namespace pensieve::tok
