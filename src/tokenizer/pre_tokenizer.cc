#include "tokenizer/pre_tokenizer.h"

#include <algorithm>
#include <functional>

#include "tokenizer/normalizer.h"
#include "tokenizer/unicode.h"

namespace pensieve::tok {
namespace {

// A stretch of a piece and whether the pattern matched it.
struct Segment {
  size_t start, end;
  bool is_match;
};

// Covers [0, len) with the matches and the gaps between them.
std::vector<Segment> segments_from_matches(size_t len, const std::vector<Span>& matches,
                                           bool invert) {
  std::vector<Segment> out;
  out.reserve(matches.size() * 2 + 1);
  size_t prev = 0;
  for (const Span& m : matches) {
    if (prev != m.start) out.push_back({prev, m.start, invert});
    out.push_back({m.start, m.end, !invert});
    prev = m.end;
  }
  if (prev != len) out.push_back({prev, len, invert});
  return out;
}

// Each character for which `pred` holds is its own match.
std::vector<Span> char_matches(std::string_view text, const std::function<bool(char32_t)>& pred) {
  std::vector<Span> out;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t start = pos;
    if (pred(next_code_point(text, pos))) out.push_back({start, pos});
  }
  return out;
}

// Applies `behavior` to the segments of one piece and appends the kept parts.
void split_piece(const Piece& piece, const std::vector<Segment>& segs, SplitBehavior behavior,
                 std::vector<Piece>& out) {
  struct Part {
    size_t start, end;
    bool remove;
  };
  std::vector<Part> parts;
  parts.reserve(segs.size());
  switch (behavior) {
    case SplitBehavior::isolated:
      for (const Segment& s : segs) parts.push_back({s.start, s.end, false});
      break;
    case SplitBehavior::removed:
      for (const Segment& s : segs) parts.push_back({s.start, s.end, s.is_match});
      break;
    case SplitBehavior::contiguous: {
      bool previous_match = false;
      for (const Segment& s : segs) {
        if (s.is_match == previous_match && !parts.empty()) {
          parts.back().end = s.end;
        } else {
          parts.push_back({s.start, s.end, false});
        }
        previous_match = s.is_match;
      }
      break;
    }
    case SplitBehavior::merged_with_previous: {
      bool previous_match = false;
      for (const Segment& s : segs) {
        if (s.is_match && !previous_match && !parts.empty()) {
          parts.back().end = s.end;
        } else {
          parts.push_back({s.start, s.end, false});
        }
        previous_match = s.is_match;
      }
      break;
    }
    case SplitBehavior::merged_with_next: {
      bool previous_match = false;
      for (auto it = segs.rbegin(); it != segs.rend(); ++it) {
        if (it->is_match && !previous_match && !parts.empty()) {
          parts.back().start = it->start;
        } else {
          parts.push_back({it->start, it->end, false});
        }
        previous_match = it->is_match;
      }
      std::reverse(parts.begin(), parts.end());
      break;
    }
  }
  for (const Part& p : parts) {
    if (p.remove || p.end == p.start) continue;
    out.push_back({piece.text.substr(p.start, p.end - p.start), piece.at_origin && p.start == 0});
  }
}

// Splits every piece at the segments `segment_fn` finds in it.
template <typename SegmentFn>
void split_all(std::vector<Piece>& pieces, SplitBehavior behavior, SegmentFn segment_fn) {
  std::vector<Piece> out;
  out.reserve(pieces.size() * 2);
  for (const Piece& p : pieces) split_piece(p, segment_fn(p.text), behavior, out);
  pieces = std::move(out);
}

SplitBehavior parse_behavior(const std::string& name, const JsonPath& at) {
  if (name == "Removed") return SplitBehavior::removed;
  if (name == "Isolated") return SplitBehavior::isolated;
  if (name == "MergedWithPrevious") return SplitBehavior::merged_with_previous;
  if (name == "MergedWithNext") return SplitBehavior::merged_with_next;
  if (name == "Contiguous") return SplitBehavior::contiguous;
  at.invalid("'" + name + "' is not a split behavior");
}

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps)
      : steps_(std::move(steps)) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    for (const auto& step : steps_) step->pre_tokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(std::unique_ptr<Pattern> pattern, SplitBehavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_all(pieces, behavior_, [&](const std::string& text) {
      return segments_from_matches(text.size(), pattern_->find_all(text), invert_);
    });
  }

 private:
  std::unique_ptr<Pattern> pattern_;
  SplitBehavior behavior_;
  bool invert_;
};

// GPT-2's word pattern, used by ByteLevel when use_regex is on.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex)
      : add_prefix_space_(add_prefix_space) {
    if (use_regex) regex_ = std::make_unique<Regex>(kGpt2Pattern, "ByteLevel pre-tokenizer");
  }
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    if (add_prefix_space_) {
      for (Piece& p : pieces) {
        if (p.text.front() != ' ') p.text.insert(0, 1, ' ');
      }
    }
    if (regex_) {
      split_all(pieces, SplitBehavior::isolated, [&](const std::string& text) {
        return segments_from_matches(text.size(), regex_->find_all(text), false);
      });
    }
    const ByteLevelTable& table = byte_level_table();
    for (Piece& p : pieces) {
      std::string mapped;
      mapped.reserve(p.text.size() + p.text.size() / 2);
      for (char c : p.text) mapped.append(table.byte_to_utf8[static_cast<uint8_t>(c)]);
      p.text = std::move(mapped);
    }
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> regex_;
};

enum class PrependScheme { always, first, never };

class MetaspacePreTokenizer : public PreTokenizer {
 public:
  MetaspacePreTokenizer(char32_t replacement, PrependScheme scheme, bool split)
      : replacement_cp_(replacement), scheme_(scheme), split_(split) {
    append_utf8(replacement_, replacement);
  }
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    const Pattern& space = *space_;
    for (Piece& p : pieces) {
      p.text = replace_all(space, p.text, replacement_);
      const bool starts_with_marker = p.text.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts_with_marker &&
          (scheme_ == PrependScheme::always || (scheme_ == PrependScheme::first && p.at_origin))) {
        p.text.insert(0, replacement_);
      }
    }
    if (split_) {
      split_all(pieces, SplitBehavior::merged_with_next, [&](const std::string& text) {
        return segments_from_matches(
            text.size(), char_matches(text, [&](char32_t c) { return c == replacement_cp_; }),
            false);
      });
    }
  }

 private:
  char32_t replacement_cp_;
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
  std::unique_ptr<Pattern> space_ = Pattern::literal(" ");
};

// Splits where a character predicate holds (Digits, WhitespaceSplit, Punctuation).
class CharSplitPreTokenizer : public PreTokenizer {
 public:
  CharSplitPreTokenizer(std::function<bool(char32_t)> pred, SplitBehavior behavior)
      : pred_(std::move(pred)), behavior_(behavior) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_all(pieces, behavior_, [&](const std::string& text) {
      return segments_from_matches(text.size(), char_matches(text, pred_), false);
    });
  }

 private:
  std::function<bool(char32_t)> pred_;
  SplitBehavior behavior_;
};

char32_t single_char(const std::string& s, const JsonPath& at) {
  size_t pos = 0;
  if (s.empty()) at.invalid("must be one character");
  const char32_t cp = next_code_point(s, pos);
  if (pos != s.size()) at.invalid("must be one character");
  return cp;
}

std::unique_ptr<PreTokenizer> make_metaspace(const json& spec, const JsonPath& at) {
  const char32_t replacement =
      single_char(get_string_or(spec, "replacement", "\u2581", at), at.key("replacement"));
  PrependScheme scheme = PrependScheme::always;
  if (auto it = spec.find("prepend_scheme"); it != spec.end() && !it->is_null()) {
    const std::string s = it->is_string() ? it->get<std::string>() : "";
    if (s == "always") scheme = PrependScheme::always;
    else if (s == "first") scheme = PrependScheme::first;
    else if (s == "never") scheme = PrependScheme::never;
    else at.key("prepend_scheme").invalid("must be \"always\", \"first\" or \"never\"");
  } else {
    // Files written before prepend_scheme existed carry add_prefix_space.
    scheme = get_bool_or(spec, "add_prefix_space", true, at) ? PrependScheme::always
                                                             : PrependScheme::never;
  }
  return std::make_unique<MetaspacePreTokenizer>(replacement, scheme,
                                                 get_bool_or(spec, "split", true, at));
}

}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& spec, const JsonPath& at) {
  if (spec.is_null()) return nullptr;
  const std::string type = type_of(spec, at);
  if (type == "Sequence") {
    const json& list = get_array(spec, "pretokenizers", at);
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (size_t i = 0; i < list.size(); ++i) {
      if (auto p = make_pre_tokenizer(list[i], at.key("pretokenizers").index(i))) {
        steps.push_back(std::move(p));
      }
    }
    return std::make_unique<SequencePreTokenizer>(std::move(steps));
  }
  if (type == "ByteLevel") {
    return std::make_unique<ByteLevelPreTokenizer>(get_bool_or(spec, "add_prefix_space", true, at),
                                                   get_bool_or(spec, "use_regex", true, at));
  }
  if (type == "Split") {
    return std::make_unique<SplitPreTokenizer>(
        make_pattern(required(spec, "pattern", at), at.key("pattern")),
        parse_behavior(get_string(spec, "behavior", at), at.key("behavior")),
        get_bool_or(spec, "invert", false, at));
  }
  if (type == "Metaspace") return make_metaspace(spec, at);
  if (type == "Digits") {
    const bool individual = get_bool_or(spec, "individual_digits", false, at);
    return std::make_unique<CharSplitPreTokenizer>(
        [](char32_t c) { return c >= '0' && c <= '9'; },
        individual ? SplitBehavior::isolated : SplitBehavior::contiguous);
  }
  if (type == "Whitespace") {
    // Keeps runs of word characters and runs of other non-space characters.
    return std::make_unique<SplitPreTokenizer>(
        Pattern::regex(R"(\w+|[^\w\s]+)", at.str()), SplitBehavior::removed, true);
  }
  if (type == "WhitespaceSplit") {
    return std::make_unique<CharSplitPreTokenizer>(is_whitespace, SplitBehavior::removed);
  }
  if (type == "Punctuation") {
    return std::make_unique<CharSplitPreTokenizer>(
        is_punctuation, parse_behavior(get_string_or(spec, "behavior", "Isolated", at),
                                       at.key("behavior")));
  }
  if (type == "BertPreTokenizer") {
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    steps.push_back(std::make_unique<CharSplitPreTokenizer>(is_whitespace, SplitBehavior::removed));
    steps.push_back(std::make_unique<CharSplitPreTokenizer>(is_punctuation,
                                                            SplitBehavior::isolated));
    return std::make_unique<SequencePreTokenizer>(std::move(steps));
  }
  at.unsupported_type(type);
}

}  // namespace pensieve::tok
