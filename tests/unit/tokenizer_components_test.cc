// Tokenizer pipeline pieces on small hand-written tokenizer.json files:
// pre-tokenizer split behaviors, Metaspace, added-token rules, unknown and
// byte-fallback handling, normalizers, decoders, and the errors bad files
// and bad input get.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <zlib.h>

#include "core/error.h"
#include "support/test_support.h"
#include "tokenizer/tokenizer.h"

namespace pensieve {
namespace {

using nlohmann::json;
using Ids = std::vector<int32_t>;

// A BPE tokenizer.json over `tokens` (ids in order) with `merges`.
json bpe_json(const std::vector<std::string>& tokens, json merges = json::array()) {
  json vocab = json::object();
  for (size_t i = 0; i < tokens.size(); ++i) vocab[tokens[i]] = i;
  return {{"version", "1.0"},
          {"added_tokens", json::array()},
          {"normalizer", nullptr},
          {"pre_tokenizer", nullptr},
          {"post_processor", nullptr},
          {"decoder", nullptr},
          {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}}};
}

std::unique_ptr<Tokenizer> make(const json& j, const json& config = nullptr) {
  return Tokenizer::from_json(j.dump(), "tokenizer.json", config);
}

// Whole pieces found in the vocabulary come out as one id (ignore_merges), so
// the ids show where the pre-tokenizer cut.
json split_json(const std::string& behavior, bool invert = false) {
  json j = bpe_json({"a", "b", "-", "a-", "-b", "--", "a--", "--b"});
  j["model"]["ignore_merges"] = true;
  j["pre_tokenizer"] = {{"type", "Split"},
                        {"pattern", {{"String", "-"}}},
                        {"behavior", behavior},
                        {"invert", invert}};
  return j;
}

TEST(PreTokenizer, SplitBehaviors) {
  EXPECT_EQ(make(split_json("Isolated"))->encode("a-b"), (Ids{0, 2, 1}));
  EXPECT_EQ(make(split_json("Removed"))->encode("a-b"), (Ids{0, 1}));
  EXPECT_EQ(make(split_json("MergedWithPrevious"))->encode("a-b"), (Ids{3, 1}));
  EXPECT_EQ(make(split_json("MergedWithNext"))->encode("a-b"), (Ids{0, 4}));
  EXPECT_EQ(make(split_json("Contiguous"))->encode("a--b"), (Ids{0, 5, 1}));
  // Each "-" is its own match; only a match after a non-match merges, as in Hugging Face.
  EXPECT_EQ(make(split_json("MergedWithPrevious"))->encode("a--b"), (Ids{3, 2, 1}));
  EXPECT_EQ(make(split_json("MergedWithNext"))->encode("a--b"), (Ids{0, 2, 4}));
  // Inverted: the pattern marks what to keep, so "-" is the delimiter's complement.
  EXPECT_EQ(make(split_json("Removed", true))->encode("a-b"), (Ids{2}));
}

TEST(PreTokenizer, RegexSplitUsesUnicodeClasses) {
  json j = bpe_json({"x", "é", "1", " ", "xé", "11"});
  j["model"]["ignore_merges"] = true;
  j["pre_tokenizer"] = {{"type", "Split"},
                        {"pattern", {{"Regex", "\\p{L}+|\\d+"}}},
                        {"behavior", "Isolated"},
                        {"invert", false}};
  EXPECT_EQ(make(j)->encode("xé 11"), (Ids{4, 3, 5}));
}

TEST(PreTokenizer, Digits) {
  json j = bpe_json({"1", "2", "12", "a"});
  j["model"]["ignore_merges"] = true;
  j["pre_tokenizer"] = {{"type", "Digits"}, {"individual_digits", false}};
  EXPECT_EQ(make(j)->encode("a12"), (Ids{3, 2}));
  j["pre_tokenizer"]["individual_digits"] = true;
  EXPECT_EQ(make(j)->encode("a12"), (Ids{3, 0, 1}));
}

TEST(PreTokenizer, WhitespaceAndSequence) {
  json j = bpe_json({"ab", "!", "a", "b", "cd"});
  j["model"]["ignore_merges"] = true;
  j["pre_tokenizer"] = {{"type", "Whitespace"}};
  EXPECT_EQ(make(j)->encode("ab!  cd"), (Ids{0, 1, 4}));
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers", {{{"type", "WhitespaceSplit"}}, {{"type", "Digits"}}}}};
  EXPECT_EQ(make(j)->encode(" ab!\tcd "), (Ids{2, 3, 1, 4}));  // "ab!" is not in the vocabulary
}

TEST(PreTokenizer, ByteLevelWithGpt2Regex) {
  // All 256 byte symbols, then "Ġw" "Ġwo" ... built by merges.
  std::vector<std::string> tokens;
  const std::string printable = "!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                "[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~";
  for (char c : printable) tokens.emplace_back(1, c);
  tokens.push_back("Ġ");  // the space byte
  tokens.push_back("Ġw");
  tokens.push_back("Ġwo");
  json j = bpe_json(tokens, json::array({"Ġ w", "Ġw o"}));
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  j["decoder"] = {{"type", "ByteLevel"}};
  auto t = make(j);
  const int32_t gwo = static_cast<int32_t>(tokens.size() - 1);
  const Ids ids = t->encode("a wo");
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_EQ(ids[1], gwo);
  EXPECT_EQ(t->decode(ids), "a wo");
  j["pre_tokenizer"]["add_prefix_space"] = true;
  EXPECT_EQ(make(j)->encode("wo"), Ids{gwo});
}

json metaspace_json(const std::string& scheme) {
  json j = bpe_json({"▁", "h", "i", "▁hi", "hi"}, json::array({"h i", "▁ hi"}));
  j["added_tokens"] = {{{"id", 5}, {"content", "<x>"}, {"special", true},
                        {"normalized", false}, {"lstrip", false}, {"rstrip", false},
                        {"single_word", false}}};
  j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "▁"},
                        {"prepend_scheme", scheme}, {"split", true}};
  j["decoder"] = {{"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", scheme},
                  {"split", true}};
  return j;
}

TEST(PreTokenizer, MetaspacePrependSchemes) {
  EXPECT_EQ(make(metaspace_json("always"))->encode("hi<x>hi hi"), (Ids{3, 5, 3, 3}));
  EXPECT_EQ(make(metaspace_json("first"))->encode("hi<x>hi hi"), (Ids{3, 5, 4, 3}));
  EXPECT_EQ(make(metaspace_json("never"))->encode("hi<x>hi hi"), (Ids{4, 5, 4, 3}));
  EXPECT_EQ(make(metaspace_json("first"))->decode(Ids{3, 3}), "hi hi");
  EXPECT_EQ(make(metaspace_json("never"))->decode(Ids{3, 3}), " hi hi");
}

json added_json(const json& token_rules) {
  json j = bpe_json({"a", " ", "b", "c"});
  json token = {{"id", 4}, {"content", "<m>"}, {"special", false}, {"normalized", false},
                {"lstrip", false}, {"rstrip", false}, {"single_word", false}};
  token.update(token_rules);
  j["added_tokens"] = json::array({token});
  return j;
}

TEST(AddedTokens, StripAndSingleWordRules) {
  EXPECT_EQ(make(added_json(json::object()))->encode("a <m> b"), (Ids{0, 1, 4, 1, 2}));
  EXPECT_EQ(make(added_json({{"lstrip", true}}))->encode("a  <m> b"), (Ids{0, 4, 1, 2}));
  EXPECT_EQ(make(added_json({{"rstrip", true}}))->encode("a <m>  b"), (Ids{0, 1, 4, 2}));
  auto single = make(added_json({{"single_word", true}}));
  EXPECT_EQ(single->encode("a <m> b"), (Ids{0, 1, 4, 1, 2}));
  // Inside a word it is plain text: '<', 'm', '>' are not in the vocabulary
  // and there is no unk token, so they drop out.
  EXPECT_EQ(single->encode("a<m>b"), (Ids{0, 2}));
  EXPECT_FALSE(single->is_special(4));
}

TEST(AddedTokens, LongestMatchWins) {
  json j = bpe_json({"a", "b"});
  auto tok = [](int id, const char* s) {
    return json{{"id", id}, {"content", s}, {"special", true}, {"normalized", false}};
  };
  j["added_tokens"] = json::array({tok(2, "<|a|>"), tok(3, "<|a|><|b|>"), tok(4, "<|b|>")});
  auto t = make(j);
  EXPECT_EQ(t->encode("a<|a|><|b|><|b|>b"), (Ids{0, 3, 4, 1}));
  EXPECT_EQ(t->decode(Ids{0, 3, 4, 1}, true), "a b");  // no decoder: tokens joined by spaces
}

TEST(AddedTokens, NormalizedTokensMatchAfterNormalization) {
  json j = bpe_json({"a", "b"});
  j["normalizer"] = {{"type", "Lowercase"}};
  j["added_tokens"] = {{{"id", 2}, {"content", "XY"}, {"special", false}, {"normalized", true}}};
  EXPECT_EQ(make(j)->encode("axyBxY"), (Ids{0, 2, 1, 2}));
}

TEST(Model, ByteFallbackAndUnknownFusing) {
  std::vector<std::string> tokens = {"<unk>", "x", "y"};
  json j = bpe_json(tokens);
  j["model"]["unk_token"] = "<unk>";
  j["model"]["fuse_unk"] = true;
  EXPECT_EQ(make(j)->encode("x??y"), (Ids{1, 0, 2}));
  j["model"]["fuse_unk"] = false;
  EXPECT_EQ(make(j)->encode("x??y"), (Ids{1, 0, 0, 2}));
  for (int b = 0; b < 256; ++b) tokens.push_back(fmt::format("<0x{:02X}>", b));
  j = bpe_json(tokens);
  j["model"]["unk_token"] = "<unk>";
  j["model"]["byte_fallback"] = true;
  j["decoder"] = {{"type", "Sequence"},
                  {"decoders", {{{"type", "ByteFallback"}}, {{"type", "Fuse"}}}}};
  auto t = make(j);
  EXPECT_EQ(t->encode("xé"), (Ids{1, 3 + 0xC3, 3 + 0xA9}));
  EXPECT_EQ(t->decode(Ids{1, 3 + 0xC3, 3 + 0xA9}), "xé");
  // A byte run that is not UTF-8 becomes one U+FFFD per byte.
  EXPECT_EQ(t->decode(Ids{3 + 0xC3, 2}), "\xEF\xBF\xBDy");
}

TEST(Model, MergesAsPairsOrStringsAndIgnoreMerges) {
  const std::vector<std::string> tokens = {"a", "b", "c", "ab", "abc", "bc"};
  auto strings = make(bpe_json(tokens, json::array({"a b", "ab c"})));
  auto pairs = make(bpe_json(tokens, json::array({json::array({"a", "b"}),
                                                  json::array({"ab", "c"})})));
  EXPECT_EQ(strings->encode("abcab"), (Ids{4, 3}));
  EXPECT_EQ(pairs->encode("abcab"), (Ids{4, 3}));
  // Rank decides: "b c" ranked first blocks "a b".
  EXPECT_EQ(make(bpe_json(tokens, json::array({"b c", "a b", "ab c"})))->encode("abc"),
            (Ids{0, 5}));
  json j = bpe_json(tokens, json::array({"b c"}));
  EXPECT_EQ(make(j)->encode("abc"), (Ids{0, 5}));
  j["model"]["ignore_merges"] = true;
  EXPECT_EQ(make(j)->encode("abc"), (Ids{4}));
}

TEST(Normalizer, UnicodeFormsCaseStripReplace) {
  json j = bpe_json({"f", "i", "a", "b", "à", "_", "e", "\u0301", "é"});
  j["normalizer"] = {{"type", "NFKC"}};
  EXPECT_EQ(make(j)->encode("\uFB01"), (Ids{0, 1}));  // the "fi" ligature
  j["normalizer"] = {{"type", "NFC"}};
  EXPECT_EQ(make(j)->encode("e\u0301"), (Ids{8}));
  j["normalizer"] = {{"type", "NFD"}};
  EXPECT_EQ(make(j)->encode("é"), (Ids{6, 7}));
  j["normalizer"] = {{"type", "Sequence"},
                     {"normalizers", {{{"type", "Strip"}, {"strip_left", true},
                                       {"strip_right", true}},
                                      {{"type", "Lowercase"}},
                                      {{"type", "Replace"}, {"pattern", {{"Regex", "\\s+"}}},
                                       {"content", "_"}}}}};
  EXPECT_EQ(make(j)->encode("  \u00C0 \t B \n"), (Ids{4, 5, 3}));
}

TEST(PostProcessor, TemplateOnlyWithSpecialTokens) {
  json j = bpe_json({"<s>", "</s>", "a"});
  j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                  {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                  {{"SpecialToken", {{"id", "</s>"}, {"type_id", 0}}}}}},
      {"pair", json::array()},
      {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {0}}, {"tokens", {"<s>"}}}},
                          {"</s>", {{"id", "</s>"}, {"ids", {1}}, {"tokens", {"</s>"}}}}}}};
  auto t = make(j);
  EXPECT_EQ(t->encode("aa", true), (Ids{0, 2, 2, 1}));
  EXPECT_EQ(t->encode("aa", false), (Ids{2, 2}));
  EXPECT_EQ(t->encode("", true), (Ids{0, 1}));
}

TEST(Config, BosEosAsStringsOrObjects) {
  const json j = bpe_json({"<s>", "</s>", "a"});
  auto t = make(j, {{"bos_token", {{"content", "<s>"}, {"lstrip", false}}}, {"eos_token", "</s>"}});
  EXPECT_EQ(t->bos_token(), "<s>");
  EXPECT_EQ(t->bos_id(), 0);
  EXPECT_EQ(t->eos_id(), 1);
  auto none = make(j);
  EXPECT_EQ(none->bos_id(), std::nullopt);
  EXPECT_THROW(make(j, {{"bos_token", 5}}), Error);
}

TEST(Load, DirectoryFileAndGzip) {
  test::TempDir dir;
  const json j = bpe_json({"a", "b", "ab"}, json::array({"a b"}));
  test::write_file(dir.file("tokenizer.json"), j.dump());
  test::write_file(dir.file("tokenizer_config.json"), R"({"eos_token": "b"})");
  EXPECT_EQ(Tokenizer::load(dir.path())->encode("aab"), (Ids{0, 2}));
  EXPECT_EQ(Tokenizer::load(dir.path())->eos_id(), 1);
  EXPECT_EQ(Tokenizer::load(dir.file("tokenizer.json"))->encode("ab"), (Ids{2}));

  test::TempDir gz_dir;
  const std::string text = j.dump();
  gzFile f = gzopen(gz_dir.file("tokenizer.json.gz").c_str(), "wb");
  ASSERT_NE(f, nullptr);
  gzwrite(f, text.data(), static_cast<unsigned>(text.size()));
  gzclose(f);
  EXPECT_EQ(Tokenizer::load(gz_dir.path())->encode("aab"), (Ids{0, 2}));
}

using test::error_of;

// Ids size the tokenizer's tables: one far past the vocabulary is refused,
// not allocated (fuzz findings: 888888863 in a 500-token vocabulary asked for
// 28 GB; an added token with id INT32_MAX overflowed the vocabulary size).
TEST(Errors, IdsFarPastTheVocabularyAreRefused) {
  using ::testing::HasSubstr;
  json j = bpe_json({"a", "b"});
  j["model"]["vocab"]["c"] = 888888863;
  EXPECT_THAT(error_of([&] { make(j); }), HasSubstr("model.vocab has id 888888863, far past its 3 tokens"));
  j = bpe_json({"a", "b"});
  j["added_tokens"] = json::array({{{"id", 2147483647}, {"content", "<x>"}, {"special", true}}});
  EXPECT_THAT(error_of([&] { make(j); }),
              HasSubstr("added_tokens[0].id 2147483647 is far past the vocabulary"));
  j["added_tokens"][0]["id"] = 2;  // right after the model's ids: fine
  EXPECT_EQ(make(j)->vocab_size(), 3);
}

TEST(Errors, BadFilesNameWhatAndWhere) {
  using ::testing::HasSubstr;
  EXPECT_THAT(error_of([] { Tokenizer::from_json("{\"model\": {", "tokenizer.json"); }),
              HasSubstr("tokenizer.json: malformed JSON at byte"));
  json j = bpe_json({"a"});
  j["pre_tokenizer"] = {{"type", "Foo"}};
  EXPECT_THAT(error_of([&] { make(j); }),
              HasSubstr("tokenizer.json: pre_tokenizer.type 'Foo' is not supported"));
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers", {{{"type", "Digits"}}, {{"type", "Bar"}}}}};
  EXPECT_THAT(error_of([&] { make(j); }),
              HasSubstr("pre_tokenizer.pretokenizers[1].type 'Bar' is not supported"));
  j = bpe_json({"a"});
  j["normalizer"] = {{"type", "Precompiled"}};
  EXPECT_THAT(error_of([&] { make(j); }), HasSubstr("normalizer.type 'Precompiled'"));
  j = bpe_json({"a"});
  j["decoder"] = {{"type", "Sequence"}, {"decoders", {{{"type", "CTC"}}}}};
  EXPECT_THAT(error_of([&] { make(j); }), HasSubstr("decoder.decoders[0].type 'CTC'"));
  j = bpe_json({"a"});
  j["post_processor"] = {{"type", "Sequence"},
                         {"processors", {{{"type", "ByteLevel"}}, {{"type", "Baz"}}}}};
  EXPECT_THAT(error_of([&] { make(j); }),
              HasSubstr("tokenizer.json: post_processor.processors[1].type 'Baz' is not supported"));
  j["post_processor"] = {{"type", "Baz"}};
  EXPECT_THAT(error_of([&] { make(j); }),
              HasSubstr("tokenizer.json: post_processor.type 'Baz' is not supported"));
  j = bpe_json({"a"});
  j["model"]["type"] = "Unigram";
  EXPECT_THAT(error_of([&] { make(j); }), HasSubstr("model.type 'Unigram' is not supported"));
  EXPECT_THAT(error_of([] { make(bpe_json({"a", "b"}, json::array({"a c"}))); }),
              HasSubstr("model.merges[0] uses 'c' which is not in the vocabulary"));
  EXPECT_THAT(error_of([] { make(bpe_json({"a", "b"}, json::array({"a b"}))); }),
              HasSubstr("model.merges[0] makes 'ab' which is not in the vocabulary"));
  EXPECT_THAT(error_of([] { make(bpe_json({"a"}, json::array({"a"}))); }),
              HasSubstr("model.merges[0] 'a' is not two tokens"));
  j = bpe_json({"a"});
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(a"}}},
                        {"behavior", "Isolated"}};
  EXPECT_THAT(error_of([&] { make(j); }), HasSubstr("does not compile"));
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"String", "a"}}},
                        {"behavior", "Sideways"}};
  EXPECT_THAT(error_of([&] { make(j); }), HasSubstr("'Sideways' is not a split behavior"));
  j = bpe_json({"a"});
  j["model"].erase("vocab");
  EXPECT_THAT(error_of([&] { make(j); }), HasSubstr("model.vocab is missing"));
  EXPECT_THAT(error_of([] { Tokenizer::load("/nonexistent/dir"); }), HasSubstr("no such file"));
}

TEST(Errors, InvalidUtf8InputNamesTheOffset) {
  auto t = make(bpe_json({"a"}));
  using ::testing::HasSubstr;
  EXPECT_THAT(error_of([&] { t->encode("aaa\xC3(", false); }),
              HasSubstr("not valid UTF-8: byte 3 (0xC3) at offset 3"));
  EXPECT_THAT(error_of([&] { t->encode("a\xED\xA0\x80", false); }),  // a UTF-16 surrogate
              HasSubstr("offset 1"));
  EXPECT_THAT(error_of([&] { t->encode("\xF8", false); }), HasSubstr("offset 0"));
}

}  // namespace
}  // namespace pensieve
