#include "tokenizer/normalizer.h"

#include <vector>

#include <unicode/uchar.h>

#include "tokenizer/regex.h"
#include "tokenizer/unicode.h"

namespace pensieve::tok {
namespace {

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps)
      : steps_(std::move(steps)) {}
  void normalize(std::string& text) const override {
    for (const auto& step : steps_) step->normalize(text);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  void normalize(std::string& text) const override {
    if (!text.empty()) text.insert(0, prefix_);
  }

 private:
  std::string prefix_;
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(std::unique_ptr<Pattern> pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void normalize(std::string& text) const override {
    text = replace_all(*pattern_, text, content_);
  }

 private:
  std::unique_ptr<Pattern> pattern_;
  std::string content_;
};

class UnicodeNormalizer : public Normalizer {
 public:
  explicit UnicodeNormalizer(NormalForm form) : form_(form) {}
  void normalize(std::string& text) const override { normalize_unicode(form_, text); }

 private:
  NormalForm form_;
};

class StripNormalizer : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  void normalize(std::string& text) const override {
    size_t end = text.size();
    if (right_) {
      while (end > 0) {
        size_t start = 0;
        if (!is_whitespace(last_code_point(std::string_view(text).substr(0, end), &start))) break;
        end = start;
      }
    }
    size_t begin = 0;
    if (left_) {
      while (begin < end) {
        size_t next = begin;
        if (!is_whitespace(next_code_point(text, next))) break;
        begin = next;
      }
    }
    text = text.substr(begin, end - begin);
  }

 private:
  bool left_, right_;
};

class LowercaseNormalizer : public Normalizer {
 public:
  void normalize(std::string& text) const override { lowercase_unicode(text); }
};

// StripAccents: drops non-spacing marks (used after NFD/NFKD).
class StripAccentsNormalizer : public Normalizer {
 public:
  void normalize(std::string& text) const override;
};

void StripAccentsNormalizer::normalize(std::string& text) const {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t start = pos;
    const char32_t cp = next_code_point(text, pos);
    if (cp >= 0x80 && u_charType(static_cast<UChar32>(cp)) == U_NON_SPACING_MARK) continue;
    out.append(text, start, pos - start);
  }
  text = std::move(out);
}

}  // namespace

std::unique_ptr<Pattern> make_pattern(const json& spec, const JsonPath& at) {
  if (spec.is_object()) {
    if (auto it = spec.find("String"); it != spec.end() && it->is_string()) {
      return Pattern::literal(it->get<std::string>());
    }
    if (auto it = spec.find("Regex"); it != spec.end() && it->is_string()) {
      return Pattern::regex(it->get<std::string>(), at.str());
    }
  }
  at.invalid("must be {\"String\": ...} or {\"Regex\": ...}");
}

std::unique_ptr<Normalizer> make_normalizer(const json& spec, const JsonPath& at) {
  if (spec.is_null()) return nullptr;
  const std::string type = type_of(spec, at);
  if (type == "Sequence") {
    const json& list = get_array(spec, "normalizers", at);
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (size_t i = 0; i < list.size(); ++i) {
      if (auto n = make_normalizer(list[i], at.key("normalizers").index(i))) {
        steps.push_back(std::move(n));
      }
    }
    return std::make_unique<SequenceNormalizer>(std::move(steps));
  }
  if (type == "Prepend") return std::make_unique<PrependNormalizer>(get_string(spec, "prepend", at));
  if (type == "Replace") {
    return std::make_unique<ReplaceNormalizer>(
        make_pattern(required(spec, "pattern", at), at.key("pattern")),
        get_string(spec, "content", at));
  }
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(NormalForm::nfc);
  if (type == "NFD") return std::make_unique<UnicodeNormalizer>(NormalForm::nfd);
  if (type == "NFKC") return std::make_unique<UnicodeNormalizer>(NormalForm::nfkc);
  if (type == "NFKD") return std::make_unique<UnicodeNormalizer>(NormalForm::nfkd);
  if (type == "Strip") {
    return std::make_unique<StripNormalizer>(get_bool_or(spec, "strip_left", true, at),
                                             get_bool_or(spec, "strip_right", true, at));
  }
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "StripAccents") return std::make_unique<StripAccentsNormalizer>();
  at.unsupported_type(type);
}

}  // namespace pensieve::tok
