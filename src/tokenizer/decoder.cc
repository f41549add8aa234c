#include "tokenizer/decoder.h"

#include "tokenizer/normalizer.h"
#include "tokenizer/regex.h"
#include "tokenizer/unicode.h"

namespace pensieve::tok {
namespace {

constexpr const char* kReplacementChar = "\xEF\xBF\xBD";

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> steps)
      : steps_(std::move(steps)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& step : steps_) step->decode_chain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

// Maps GPT-2's printable characters back to bytes; the whole sequence becomes
// one string with ill-formed UTF-8 replaced by U+FFFD.
class ByteLevelDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    const ByteLevelTable& table = byte_level_table();
    std::string bytes;
    for (const std::string& token : tokens) {
      const size_t mark = bytes.size();
      size_t pos = 0;
      bool all_mapped = true;
      while (pos < token.size()) {
        const char32_t cp = next_code_point(token, pos);
        const int b = cp < table.char_to_byte.size() ? table.char_to_byte[cp] : -1;
        if (b < 0) {
          all_mapped = false;
          break;
        }
        bytes.push_back(static_cast<char>(b));
      }
      // A token with characters outside the table (an added token) is kept as is.
      if (!all_mapped) {
        bytes.resize(mark);
        bytes.append(token);
      }
    }
    tokens.assign(1, utf8_lossy(bytes));
  }
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(std::unique_ptr<Pattern> pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::string& t : tokens) t = replace_all(*pattern_, t, content_);
  }

 private:
  std::unique_ptr<Pattern> pattern_;
  std::string content_;
};

// "<0xNN>" pieces become bytes; a run of them that is not valid UTF-8 becomes
// one U+FFFD per byte.
class ByteFallbackDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string pending;
    size_t n_pending = 0;
    auto flush = [&] {
      if (n_pending == 0) return;
      if (!find_invalid_utf8(pending)) {
        out.push_back(pending);
      } else {
        for (size_t i = 0; i < n_pending; ++i) out.emplace_back(kReplacementChar);
      }
      pending.clear();
      n_pending = 0;
    };
    for (std::string& t : tokens) {
      const int byte = parse_byte_token(t);
      if (byte >= 0) {
        pending.push_back(static_cast<char>(byte));
        ++n_pending;
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens = std::move(out);
  }

  static int parse_byte_token(const std::string& t) {
    if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
    auto hex = [](char c) {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      return -1;
    };
    const int hi = hex(t[3]), lo = hex(t[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
  }
};

class FuseDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const std::string& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

// Removes up to `start` leading and `stop` trailing `content` characters per token.
class StripDecoder : public Decoder {
 public:
  StripDecoder(char32_t content, size_t start, size_t stop)
      : content_(content), start_(start), stop_(stop) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::string& t : tokens) {
      size_t begin = 0;
      for (size_t i = 0; i < start_ && begin < t.size(); ++i) {
        size_t next = begin;
        if (next_code_point(t, next) != content_) break;
        begin = next;
      }
      size_t end = t.size();
      for (size_t i = 0; i < stop_ && end > begin; ++i) {
        size_t s = 0;
        if (last_code_point(std::string_view(t).substr(0, end), &s) != content_) break;
        end = s;
      }
      t = t.substr(begin, end - begin);
    }
  }

 private:
  char32_t content_;
  size_t start_, stop_;
};

class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(char32_t replacement, bool drop_first) : drop_first_(drop_first) {
    append_utf8(replacement_, replacement);
  }
  void decode_chain(std::vector<std::string>& tokens) const override {
    const auto pattern = Pattern::literal(replacement_);
    for (size_t i = 0; i < tokens.size(); ++i) {
      // The first token's markers were added by the pre-tokenizer: drop them.
      tokens[i] = replace_all(*pattern, tokens[i], i == 0 && drop_first_ ? "" : " ");
    }
  }

 private:
  std::string replacement_;
  bool drop_first_;
};

// Classic BPE end-of-word suffix ("</w>") becomes a space between words.
class BpeSuffixDecoder : public Decoder {
 public:
  explicit BpeSuffixDecoder(std::string suffix) : suffix_(std::move(suffix)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    const auto pattern = Pattern::literal(suffix_);
    for (size_t i = 0; i < tokens.size(); ++i) {
      tokens[i] = replace_all(*pattern, tokens[i], i + 1 == tokens.size() ? "" : " ");
    }
  }

 private:
  std::string suffix_;
};

char32_t one_char(const std::string& s, const JsonPath& at) {
  size_t pos = 0;
  if (s.empty()) at.invalid("must be one character");
  const char32_t cp = next_code_point(s, pos);
  if (pos != s.size()) at.invalid("must be one character");
  return cp;
}

}  // namespace

std::unique_ptr<Decoder> make_decoder(const json& spec, const JsonPath& at) {
  if (spec.is_null()) return nullptr;
  const std::string type = type_of(spec, at);
  if (type == "Sequence") {
    const json& list = get_array(spec, "decoders", at);
    std::vector<std::unique_ptr<Decoder>> steps;
    for (size_t i = 0; i < list.size(); ++i) {
      if (auto d = make_decoder(list[i], at.key("decoders").index(i))) steps.push_back(std::move(d));
    }
    return std::make_unique<SequenceDecoder>(std::move(steps));
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Replace") {
    return std::make_unique<ReplaceDecoder>(
        make_pattern(required(spec, "pattern", at), at.key("pattern")),
        get_string(spec, "content", at));
  }
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    const int64_t start = get_int_or(spec, "start", 0, at), stop = get_int_or(spec, "stop", 0, at);
    if (start < 0 || stop < 0) at.invalid("start and stop must not be negative");
    return std::make_unique<StripDecoder>(one_char(get_string(spec, "content", at),
                                                   at.key("content")),
                                          static_cast<size_t>(start), static_cast<size_t>(stop));
  }
  if (type == "Metaspace") {
    const char32_t replacement =
        one_char(get_string_or(spec, "replacement", "\u2581", at), at.key("replacement"));
    bool drop_first = true;
    if (auto it = spec.find("prepend_scheme"); it != spec.end() && it->is_string()) {
      drop_first = it->get<std::string>() != "never";
    } else {
      drop_first = get_bool_or(spec, "add_prefix_space", true, at);
    }
    return std::make_unique<MetaspaceDecoder>(replacement, drop_first);
  }
  if (type == "BPEDecoder") {
    return std::make_unique<BpeSuffixDecoder>(get_string_or(spec, "suffix", "</w>", at));
  }
  at.unsupported_type(type);
}

}  // namespace pensieve::tok
