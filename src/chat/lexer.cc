#include "chat/lexer.h"

#include <algorithm>
#include <cstring>

#include "chat/value.h"
#include "core/error.h"

namespace pensieve::chat {

SourceMap::SourceMap(const std::string& source) {
  line_starts_.push_back(0);
  for (size_t i = 0; i < source.size(); ++i)
    if (source[i] == '\n') line_starts_.push_back(i + 1);
}

int SourceMap::line(size_t offset) const {
  auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), offset);
  return static_cast<int>(it - line_starts_.begin());
}

int SourceMap::column(size_t offset) const {
  return static_cast<int>(offset - line_starts_[line(offset) - 1]) + 1;
}

void syntax_error(const SourceMap& map, size_t offset, const std::string& message) {
  fail("chat template: line {}, column {}: {}", map.line(offset), map.column(offset), message);
}

std::string normalize_template_source(std::string source) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out += source[i];
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

namespace {

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_name_start(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
         static_cast<unsigned char>(c) >= 0x80;
}
bool is_name_char(char c) { return is_name_start(c) || is_digit(c); }

class Lexer {
 public:
  Lexer(const std::string& src, const SourceMap& map) : src_(src), map_(map) {}

  std::vector<Token> run() {
    while (pos_ < src_.size()) {
      const size_t tag = find_tag(pos_);
      if (tag == std::string::npos) {
        emit_data(pos_, src_.substr(pos_));
        break;
      }
      const char kind = src_[tag + 1];
      const char sign = tag + 2 < src_.size() && (src_[tag + 2] == '-' || src_[tag + 2] == '+')
                            ? src_[tag + 2]
                            : '\0';
      std::string text = src_.substr(pos_, tag - pos_);
      apply_left_strip(text, sign, kind != '{');
      emit_data(pos_, std::move(text));
      size_t after = tag + 2 + (sign ? 1 : 0);
      if (kind == '#') {
        lex_comment(tag, after);
      } else if (size_t raw_end = match_raw_begin(after); kind == '%' && raw_end) {
        lex_raw(tag, raw_end);
      } else {
        lex_tag(tag, after, kind == '%');
      }
    }
    Token eof;
    eof.kind = TokenKind::Eof;
    eof.offset = src_.size();
    tokens_.push_back(eof);
    return std::move(tokens_);
  }

 private:
  size_t find_tag(size_t from) const {
    for (size_t i = src_.find('{', from); i != std::string::npos; i = src_.find('{', i + 1)) {
      if (i + 1 < src_.size() && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#'))
        return i;
    }
    return std::string::npos;
  }

  // '-' strips all whitespace before a tag; lstrip_blocks strips spaces and tabs
  // between a line start and a block or comment tag unless the tag says '+'.
  void apply_left_strip(std::string& text, char sign, bool lstrip_applies) const {
    if (sign == '-') {
      size_t end = text.size();
      while (end > 0 && is_space(text[end - 1])) --end;
      text.resize(end);
    } else if (sign != '+' && lstrip_applies) {
      const size_t line_pos = text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
      const bool line_starting = pos_ == 0 || src_[pos_ - 1] == '\n';
      if (line_pos > 0 || line_starting) {
        if (text.find_first_not_of(" \t", line_pos) == std::string::npos) text.resize(line_pos);
      }
    }
  }

  void emit_data(size_t offset, std::string text) {
    if (text.empty()) return;
    Token t;
    t.kind = TokenKind::Data;
    t.offset = offset;
    t.text = std::move(text);
    tokens_.push_back(std::move(t));
  }

  // After a block or comment end: '-' eats all whitespace, '+' nothing, and
  // otherwise trim_blocks eats one newline.
  size_t skip_after_end(size_t pos, char sign) const {
    if (sign == '-') {
      while (pos < src_.size() && is_space(src_[pos])) ++pos;
    } else if (sign != '+' && pos < src_.size() && src_[pos] == '\n') {
      ++pos;
    }
    return pos;
  }

  void lex_comment(size_t tag, size_t after) {
    const size_t end = src_.find("#}", after);
    if (end == std::string::npos) syntax_error(map_, tag, "missing end of comment tag");
    const char sign =
        end > after && (src_[end - 1] == '-' || src_[end - 1] == '+') ? src_[end - 1] : '\0';
    pos_ = skip_after_end(end + 2, sign);
  }

  size_t skip_spaces(size_t p) const {
    while (p < src_.size() && is_space(src_[p])) ++p;
    return p;
  }

  // Matches `\s*raw\s*(-%}\s*|%})` at p; returns the position after it or 0.
  size_t match_raw_begin(size_t p) const {
    p = skip_spaces(p);
    if (src_.compare(p, 3, "raw") != 0 || (p + 3 < src_.size() && is_name_char(src_[p + 3])))
      return 0;
    p = skip_spaces(p + 3);
    if (src_.compare(p, 3, "-%}") == 0) return skip_spaces(p + 3);
    if (src_.compare(p, 2, "%}") == 0) return p + 2;
    return 0;
  }

  void lex_raw(size_t tag, size_t body) {
    for (size_t p = src_.find("{%", body); p != std::string::npos; p = src_.find("{%", p + 2)) {
      size_t q = p + 2;
      const char sign = q < src_.size() && (src_[q] == '-' || src_[q] == '+') ? src_[q] : '\0';
      if (sign) ++q;
      q = skip_spaces(q);
      if (src_.compare(q, 6, "endraw") != 0) continue;
      q = skip_spaces(q + 6);
      char end_sign = '\0';
      if (q < src_.size() && (src_[q] == '-' || src_[q] == '+')) end_sign = src_[q++];
      if (src_.compare(q, 2, "%}") != 0) continue;
      std::string text = src_.substr(body, p - body);
      pos_ = body;
      apply_left_strip(text, sign, true);
      emit_data(body, std::move(text));
      pos_ = skip_after_end(q + 2, end_sign);
      return;
    }
    syntax_error(map_, tag, "missing end of raw directive");
  }

  void lex_tag(size_t tag, size_t p, bool is_block) {
    Token begin;
    begin.kind = is_block ? TokenKind::BlockBegin : TokenKind::VarBegin;
    begin.offset = tag;
    tokens_.push_back(begin);
    std::vector<char> open;  // brackets that must close before the tag can end
    while (true) {
      p = skip_spaces(p);
      if (p >= src_.size()) {
        syntax_error(map_, tag,
                     is_block ? "unexpected end of template, expected '%}'"
                              : "unexpected end of template, expected '}}'");
      }
      if (open.empty()) {
        const char* close = is_block ? "%}" : "}}";
        char sign = '\0';
        size_t q = p;
        if (src_[q] == '-' || (is_block && src_[q] == '+')) sign = src_[q++];
        if (src_.compare(q, 2, close) == 0) {
          Token end;
          end.kind = is_block ? TokenKind::BlockEnd : TokenKind::VarEnd;
          end.offset = p;
          tokens_.push_back(end);
          pos_ =
              is_block ? skip_after_end(q + 2, sign) : (sign == '-' ? skip_spaces(q + 2) : q + 2);
          return;
        }
      }
      p = lex_expression_token(p, open);
    }
  }

  size_t lex_expression_token(size_t p, std::vector<char>& open) {
    Token t;
    t.offset = p;
    const char c = src_[p];
    if (is_digit(c)) return lex_number(p);
    if (is_name_start(c)) {
      size_t q = p;
      while (q < src_.size() && is_name_char(src_[q])) ++q;
      t.kind = TokenKind::Name;
      t.text = src_.substr(p, q - p);
      tokens_.push_back(std::move(t));
      return q;
    }
    if (c == '\'' || c == '"') return lex_string(p);
    static const char* kTwoChar[] = {"//", "**", "==", "!=", ">=", "<="};
    for (const char* op : kTwoChar) {
      if (src_.compare(p, 2, op) == 0) {
        t.kind = TokenKind::Op;
        t.text = op;
        tokens_.push_back(std::move(t));
        return p + 2;
      }
    }
    if (!std::strchr("+-/*%~[](){}><=.:|,;", c)) {
      syntax_error(map_, p, fmt::format("unexpected char '{}'", c));
    }
    if (c == '(' || c == '[' || c == '{') {
      open.push_back(c == '(' ? ')' : c == '[' ? ']' : '}');
    } else if (c == ')' || c == ']' || c == '}') {
      if (open.empty()) syntax_error(map_, p, fmt::format("unexpected '{}'", c));
      if (open.back() != c) {
        syntax_error(map_, p, fmt::format("unexpected '{}', expected '{}'", c, open.back()));
      }
      open.pop_back();
    }
    t.kind = TokenKind::Op;
    t.text = std::string(1, c);
    tokens_.push_back(std::move(t));
    return p + 1;
  }

  // Digits with optional '_' separators, as jinja2 allows.
  size_t scan_digits(size_t p, std::string& digits) const {
    while (p < src_.size() && (is_digit(src_[p]) ||
                               (src_[p] == '_' && p + 1 < src_.size() && is_digit(src_[p + 1])))) {
      if (src_[p] != '_') digits += src_[p];
      ++p;
    }
    return p;
  }

  size_t lex_number(size_t start) {
    Token t;
    t.offset = start;
    std::string text;
    size_t p = start;
    if (src_[p] == '0' && p + 1 < src_.size() && std::strchr("xXoObB", src_[p + 1])) {
      const char base_char = static_cast<char>(std::tolower(src_[p + 1]));
      const int base = base_char == 'x' ? 16 : base_char == 'o' ? 8 : 2;
      p += 2;
      while (p < src_.size() &&
             (std::isxdigit(static_cast<unsigned char>(src_[p])) || src_[p] == '_')) {
        if (src_[p] != '_') text += src_[p];
        ++p;
      }
      t.kind = TokenKind::Int;
      try {
        size_t used = 0;
        t.int_value = std::stoll(text, &used, base);
        if (used != text.size()) throw std::invalid_argument(text);
      } catch (const std::exception&) {
        syntax_error(map_, start, "bad integer literal");
      }
      tokens_.push_back(std::move(t));
      return p;
    }
    p = scan_digits(p, text);
    // jinja2 reads "x.1.2" as attribute lookups, never a float after a dot.
    const bool after_dot = start > 0 && src_[start - 1] == '.';
    bool is_float = false;
    if (!after_dot && p + 1 < src_.size() && src_[p] == '.' && is_digit(src_[p + 1])) {
      text += '.';
      p = scan_digits(p + 1, text);
      is_float = true;
    }
    if (!after_dot && p < src_.size() && (src_[p] == 'e' || src_[p] == 'E')) {
      size_t q = p + 1;
      std::string exp = "e";
      if (q < src_.size() && (src_[q] == '+' || src_[q] == '-')) exp += src_[q++];
      if (q < src_.size() && is_digit(src_[q])) {
        p = scan_digits(q, exp);
        text += exp;
        is_float = true;
      }
    }
    if (is_float) {
      t.kind = TokenKind::Float;
      t.float_value = std::strtod(text.c_str(), nullptr);
    } else {
      t.kind = TokenKind::Int;
      try {
        t.int_value = std::stoll(text);
      } catch (const std::exception&) {
        syntax_error(map_, start, "integer literal too large");
      }
    }
    tokens_.push_back(std::move(t));
    return p;
  }

  // Python's unicode-escape decoding of the literal's body; unknown escapes stay.
  size_t lex_string(size_t start) {
    const char quote = src_[start];
    std::string out;
    size_t p = start + 1;
    while (true) {
      if (p >= src_.size()) syntax_error(map_, start, "unterminated string literal");
      const char c = src_[p];
      if (c == quote) break;
      if (c != '\\') {
        out += c;
        ++p;
        continue;
      }
      if (p + 1 >= src_.size()) syntax_error(map_, start, "unterminated string literal");
      const char e = src_[p + 1];
      p += 2;
      auto hex = [&](int n_digits) {
        if (p + n_digits > src_.size()) syntax_error(map_, p, "truncated \\x/\\u escape");
        uint32_t cp = 0;
        for (int k = 0; k < n_digits; ++k) {
          const char h = src_[p + k];
          if (!std::isxdigit(static_cast<unsigned char>(h)))
            syntax_error(map_, p, "truncated \\x/\\u escape");
          cp = cp * 16 + (is_digit(h) ? h - '0' : std::tolower(h) - 'a' + 10);
        }
        p += n_digits;
        if (cp > 0x10ffff) syntax_error(map_, p, "illegal Unicode character");
        append_utf8(out, cp);
      };
      switch (e) {
        case '\n':
          break;
        case '\\':
          out += '\\';
          break;
        case '\'':
          out += '\'';
          break;
        case '"':
          out += '"';
          break;
        case 'a':
          out += '\a';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'v':
          out += '\v';
          break;
        case 'x':
          hex(2);
          break;
        case 'u':
          hex(4);
          break;
        case 'U':
          hex(8);
          break;
        default:
          if (e >= '0' && e <= '7') {
            uint32_t cp = e - '0';
            for (int k = 0; k < 2 && p < src_.size() && src_[p] >= '0' && src_[p] <= '7'; ++k)
              cp = cp * 8 + (src_[p++] - '0');
            append_utf8(out, cp);
          } else {
            out += '\\';
            out += e;
          }
      }
    }
    Token t;
    t.kind = TokenKind::String;
    t.offset = start;
    t.text = std::move(out);
    tokens_.push_back(std::move(t));
    return p + 1;
  }

  const std::string& src_;
  const SourceMap& map_;
  size_t pos_ = 0;
  std::vector<Token> tokens_;
};

}  // namespace

std::vector<Token> lex_template(const std::string& source, const SourceMap& map) {
  return Lexer(source, map).run();
}

}  // namespace pensieve::chat
