// The tokenizer against reference outputs: Hugging Face `tokenizers` on a
// corpus of hard strings, llama.cpp's tokenizer test vectors, and streaming
// detokenization of every corpus string.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <thread>

#include "support/test_support.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace pensieve {
namespace {

using nlohmann::json;
using namespace std::string_literals;
using test::data_path;

// Loading Qwen3's vocabulary takes a few hundred ms: load each tokenizer once.
const Tokenizer& tokenizer_for(const std::string& dir) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
  auto& slot = cache[dir];
  if (!slot) slot = Tokenizer::load(dir);
  return *slot;
}

const Tokenizer& fixture_tokenizer(const std::string& name) {
  return tokenizer_for(data_path("tokenizers/" + name));
}

std::vector<int32_t> ids_of(const json& j) { return j.get<std::vector<int32_t>>(); }

class ExpectedCorpus : public ::testing::TestWithParam<std::string> {};

TEST_P(ExpectedCorpus, MatchesHuggingFace) {
  const Tokenizer& tok = fixture_tokenizer(GetParam());
  const json cases = test::read_json(data_path("tokenizer-expected/" + GetParam() + ".json"));
  ASSERT_GE(cases.size(), 20u);
  for (const json& c : cases) {
    const std::string text = c["text"];
    SCOPED_TRACE(text.substr(0, 80));
    EXPECT_EQ(tok.encode(text, false), ids_of(c["ids"]));
    EXPECT_EQ(tok.encode(text, true), ids_of(c["ids_with_special"]));
    EXPECT_EQ(tok.decode(ids_of(c["ids"])), c["decoded"].get<std::string>());
  }
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, ExpectedCorpus, ::testing::Values("phi3", "qwen3", "tok512"));

struct VectorCase {
  std::string vocab_file;  // llama.cpp's name
  std::string tokenizer;   // fixture directory
};

class LlamaCppVectors : public ::testing::TestWithParam<VectorCase> {};

// llama.cpp's .out files hold what Hugging Face's encode(text,
// add_special_tokens=False) gives, one line per input, each id preceded by a
// space; the last input (after the final separator) is the empty string.
TEST_P(LlamaCppVectors, AllMatch) {
  const Tokenizer& tok = fixture_tokenizer(GetParam().tokenizer);
  const std::string base = data_path("tokenizers/llama-cpp-vectors/" + GetParam().vocab_file);
  const auto inputs = test::split_on(test::read_file(base + ".inp"), "\n__ggml_vocab_test__\n");
  const auto outputs = test::split_on(test::read_file(base + ".out"), "\n");
  ASSERT_EQ(inputs.size(), 47u);
  ASSERT_EQ(outputs.size(), inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    SCOPED_TRACE(testing::Message() << "vector " << i << ": " << inputs[i].substr(0, 60));
    std::vector<int32_t> expected;
    std::istringstream line(outputs[i]);
    for (int32_t id; line >> id;) expected.push_back(id);
    EXPECT_EQ(tok.encode(inputs[i], false), expected);
  }
}

INSTANTIATE_TEST_SUITE_P(Vocabs, LlamaCppVectors,
                         ::testing::Values(VectorCase{"ggml-vocab-phi-3.gguf", "phi3"},
                                           VectorCase{"ggml-vocab-llama-spm.gguf", "phi3"},
                                           VectorCase{"ggml-vocab-qwen2.gguf", "qwen3"}),
                         [](const auto& info) {
                           std::string name = info.param.vocab_file.substr(11);
                           for (char& c : name) {
                             if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return name;
                         });

// Streams `ids` one at a time and checks the pieces against decode(ids).
void check_stream(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip_special) {
  StreamDecoder stream(tok, skip_special);
  const std::string full = tok.decode(ids, skip_special);
  const bool full_has_replacement = full.find("\xEF\xBF\xBD") != std::string::npos;
  std::string joined;
  for (int32_t id : ids) {
    const std::string piece = stream.step(id);
    EXPECT_FALSE(tok::find_invalid_utf8(piece).has_value());
    if (!full_has_replacement) {
      EXPECT_EQ(piece.find("\xEF\xBF\xBD"), std::string::npos) << piece;
    }
    joined += piece;
    // Everything emitted so far is a prefix of the full text.
    ASSERT_EQ(full.compare(0, joined.size(), joined), 0) << joined;
  }
  joined += stream.finish();
  EXPECT_EQ(joined, full);
}

class Streaming : public ::testing::TestWithParam<std::string> {};

TEST_P(Streaming, ConcatenationEqualsDecode) {
  const Tokenizer& tok = fixture_tokenizer(GetParam());
  const json cases = test::read_json(data_path("tokenizer-expected/" + GetParam() + ".json"));
  for (const json& c : cases) {
    SCOPED_TRACE(c["text"].get<std::string>().substr(0, 80));
    for (bool skip : {false, true}) {
      check_stream(tok, ids_of(c["ids"]), skip);
      check_stream(tok, ids_of(c["ids_with_special"]), skip);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, Streaming, ::testing::Values("phi3", "qwen3", "tok512"));

// Random strings over an alphabet of hard characters (spaces, newlines, digits,
// accents, CJK, emoji with ZWJ, byte-fallback-only characters).
std::string random_text(std::mt19937& rng, bool with_special) {
  static const std::vector<std::string> alphabet = {
      " ", "  ", "\n", "\t", "a", "Hello", "world", "3", "42", ".", "'s", "é", "ñ", "日本",
      "语", "🦙", "👩\u200d💻", "\u00a0", "\r\n", "{", "\"", "ق", "—", "<", "|", ">", "_"};
  static const std::vector<std::string> specials = {"<|im_start|>", "<|im_end|>", "<|end|>",
                                                    "<s>"};
  std::uniform_int_distribution<size_t> n_parts(0, 12), pick(0, alphabet.size() - 1),
      pick_special(0, specials.size() - 1), coin(0, 9);
  std::string out;
  for (size_t i = n_parts(rng); i > 0; --i) {
    out += with_special && coin(rng) == 0 ? specials[pick_special(rng)] : alphabet[pick(rng)];
  }
  return out;
}

TEST(Streaming, RandomTexts) {
  std::mt19937 rng(1234);
  for (const char* name : {"phi3", "qwen3", "tok512"}) {
    const Tokenizer& tok = fixture_tokenizer(name);
    for (int i = 0; i < 300; ++i) {
      const std::string text = random_text(rng, true);
      SCOPED_TRACE(testing::Message() << name << ": '" << text << "'");
      check_stream(tok, tok.encode(text, true), false);
      check_stream(tok, tok.encode(text, true), true);
    }
  }
}

TEST(RoundTrip, ByteLevelAndSentencePieceDecodeWhatTheyEncode) {
  std::mt19937 rng(99);
  const Tokenizer& qwen = fixture_tokenizer("qwen3");
  const Tokenizer& phi3 = fixture_tokenizer("phi3");
  for (int i = 0; i < 500; ++i) {
    const std::string with_special = random_text(rng, true);
    EXPECT_EQ(qwen.decode(qwen.encode(with_special)), with_special);
    // Phi-3 puts a "▁" after each special token, so keep those out here.
    const std::string plain = random_text(rng, false);
    EXPECT_EQ(phi3.decode(phi3.encode(plain)), plain);
  }
}

TEST(Concurrency, EncodeFromManyThreads) {
  const Tokenizer& tok = fixture_tokenizer("qwen3");
  const json cases = test::read_json(data_path("tokenizer-expected/qwen3.json"));
  std::vector<std::thread> threads;
  std::atomic<int> n_mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int round = 0; round < 5; ++round) {
        for (const json& c : cases) {
          if (tok.encode(c["text"].get<std::string>()) != ids_of(c["ids"])) ++n_mismatches;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(n_mismatches.load(), 0);
}

TEST(Streaming, HoldsByteFallbackPiecesUntilTheCharacterIsComplete) {
  const Tokenizer& tok = fixture_tokenizer("phi3");
  // "▁" then the four <0xNN> pieces of U+1F999 (llama), then "▁and".
  const std::vector<int32_t> ids = tok.encode("x 🦙 and");
  ASSERT_GE(ids.size(), 6u);
  StreamDecoder stream(tok);
  std::vector<std::string> pieces;
  for (int32_t id : ids) pieces.push_back(stream.step(id));
  size_t n_empty = 0;
  for (const auto& p : pieces) n_empty += p.empty();
  EXPECT_EQ(n_empty, 3u);  // the first three bytes of the emoji
  std::string joined;
  for (const auto& p : pieces) joined += p;
  EXPECT_EQ(joined, "x 🦙 and");
}

TEST(Streaming, KeepsSpacesThatSentencePieceStripsOnlyAtTheStart) {
  const Tokenizer& tok = fixture_tokenizer("phi3");
  const std::vector<int32_t> ids = tok.encode("Hello world");
  StreamDecoder stream(tok);
  EXPECT_EQ(stream.step(ids[0]), "Hello");
  EXPECT_EQ(stream.step(ids[1]), " world");
}

TEST(Streaming, ByteLevelMultiTokenCharacters) {
  const Tokenizer& tok = fixture_tokenizer("qwen3");
  const std::vector<int32_t> ids = {11162, 99, 247};  // " 🦙" split over three tokens
  StreamDecoder stream(tok);
  EXPECT_EQ(stream.step(ids[0]), "");
  EXPECT_EQ(stream.step(ids[1]), "");
  EXPECT_EQ(stream.step(ids[2]), " 🦙");
  EXPECT_EQ(stream.finish(), "");
}

TEST(Streaming, FinishFlushesAnIncompleteCharacter) {
  const Tokenizer& tok = fixture_tokenizer("qwen3");
  StreamDecoder stream(tok);
  EXPECT_EQ(stream.step(11162), "");
  EXPECT_EQ(stream.finish(), tok.decode(std::vector<int32_t>{11162}));
}

// The id standing for one raw byte: "<0xNN>" in a byte-fallback vocabulary,
// GPT-2's stand-in character in a byte-level one.
int32_t byte_token(const Tokenizer& tok, uint8_t byte) {
  static const char* hex = "0123456789ABCDEF";
  const std::string fallback = std::string("<0x") + hex[byte >> 4] + hex[byte & 15] + ">";
  if (auto id = tok.token_to_id(fallback)) return *id;
  auto id = tok.token_to_id(tok::byte_level_table().byte_to_utf8[byte]);
  EXPECT_TRUE(id.has_value()) << "no token for byte " << int(byte);
  return id.value_or(0);
}

// A model that emits a long run of invalid bytes gets them streamed as
// U+FFFDs as they come (one per byte, as decode() renders them), not held to
// the end while an ever longer window is decoded again at every step.
TEST(Streaming, LongRunsOfInvalidBytesStreamAsTheyCome) {
  for (const char* name : {"phi3", "qwen3"}) {
    SCOPED_TRACE(name);
    const Tokenizer& tok = fixture_tokenizer(name);
    const std::vector<int32_t> before = tok.encode("The end"), after = tok.encode(" again");
    std::vector<int32_t> ids = before;
    ids.insert(ids.end(), 10000, byte_token(tok, 0xFF));
    ids.insert(ids.end(), after.begin(), after.end());
    const std::string full = tok.decode(ids);
    std::string replacements;
    for (int i = 0; i < 10000; ++i) replacements += "\xEF\xBF\xBD";
    ASSERT_TRUE(full.starts_with("The end" + replacements + " ")) << full.size();
    ASSERT_TRUE(full.ends_with(" again")) << full.size();
    ASSERT_EQ(full.find("\xEF\xBF\xBD", "The end"s.size() + replacements.size()), std::string::npos);

    StreamDecoder stream(tok);
    std::string joined;
    size_t n_silent_steps = 0, longest_silence = 0;
    for (size_t i = 0; i < ids.size(); ++i) {
      const std::string piece = stream.step(ids[i]);
      n_silent_steps = piece.empty() ? n_silent_steps + 1 : 0;
      longest_silence = std::max(longest_silence, n_silent_steps);
      joined += piece;
      if (i == before.size() + 100) {
        // Output keeps coming while the run goes on.
        EXPECT_GE(joined.size(), std::string("The end").size() + 90 * 3) << i;
      }
    }
    joined += stream.finish();
    EXPECT_LE(longest_silence, 4u);
    EXPECT_TRUE(joined == full) << joined.size() << " bytes streamed, " << full.size() << " decoded";
  }
}

// The one place the stream and decode() differ: Hugging Face's ByteFallback
// renders a whole run of <0xNN> pieces as U+FFFDs when any byte of it is
// invalid, but a character the run completed has already been sent. The
// stream keeps it and sends one U+FFFD per later byte, still as they come.
TEST(Streaming, AnInvalidByteAfterAValidByteFallbackRunKeepsWhatWasSent) {
  const Tokenizer& tok = fixture_tokenizer("phi3");
  std::vector<int32_t> ids;
  for (uint8_t b : std::string("\xE4\xB8\xAD")) ids.push_back(byte_token(tok, b));  // 中
  ids.insert(ids.end(), 1000, byte_token(tok, 0xFF));
  std::string replacements;
  for (int i = 0; i < 1000; ++i) replacements += "\xEF\xBF\xBD";
  EXPECT_TRUE(tok.decode(ids) == "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD" + replacements);
  StreamDecoder stream(tok);
  std::string joined;
  size_t n_silent_steps = 0, longest_silence = 0;
  for (int32_t id : ids) {
    const std::string piece = stream.step(id);
    n_silent_steps = piece.empty() ? n_silent_steps + 1 : 0;
    longest_silence = std::max(longest_silence, n_silent_steps);
    joined += piece;
  }
  joined += stream.finish();
  EXPECT_LE(longest_silence, 4u);
  EXPECT_TRUE(joined == "中" + replacements) << joined.size();
}

// Random sequences of raw-byte tokens between ordinary and special tokens:
// whole characters, characters cut short, runs that start with an invalid
// byte, stray continuation bytes. The stream equals decode() at every step.
// (Byte-fallback runs are kept from starting valid and turning invalid,
// where the stream has already sent the valid start; see docs/tokenizer.md.)
TEST(Streaming, RandomRunsOfRawBytes) {
  std::mt19937 rng(77);
  const std::vector<std::string> chars = {"a", "é", "语", "🦙", "\n", "ق", "—"};
  for (const char* name : {"phi3", "qwen3"}) {
    SCOPED_TRACE(name);
    const Tokenizer& tok = fixture_tokenizer(name);
    const std::vector<int32_t> words = tok.encode(" the cat"), specials = {
        *tok.token_to_id(name == std::string("phi3") ? "<|end|>" : "<|im_end|>")};
    const bool byte_fallback = tok.token_to_id("<0x41>").has_value();
    std::uniform_int_distribution<int> kind(0, 4), count(1, 12), any_byte(0, 255), coin(0, 1);
    for (int round = 0; round < 300; ++round) {
      std::vector<int32_t> ids;
      for (int part = count(rng) / 2; part >= 0; --part) {
        // A run of raw bytes, then an ordinary token (maybe after a special one).
        const int k = kind(rng);
        const int n = count(rng);
        if (k <= 1) {  // whole characters, the last one maybe cut short
          // A cut character makes a whole byte-fallback run invalid: start it invalid.
          if (k == 1 && byte_fallback) ids.push_back(byte_token(tok, 0xC0));
          for (int c = 0; c < n; ++c) {
            const std::string& ch = chars[rng() % chars.size()];
            const size_t keep = k == 1 && c == n - 1 ? rng() % ch.size() : ch.size();
            for (size_t b = 0; b < keep; ++b) ids.push_back(byte_token(tok, uint8_t(ch[b])));
          }
        } else if (k == 2) {  // starts invalid, then anything
          ids.push_back(byte_token(tok, coin(rng) ? 0xFF : 0x80));
          for (int b = 1; b < n; ++b) ids.push_back(byte_token(tok, uint8_t(any_byte(rng))));
        } else if (k == 3) {  // stray continuation bytes
          for (int b = 0; b < n; ++b) ids.push_back(byte_token(tok, uint8_t(0x80 + rng() % 64)));
        }
        if (coin(rng)) ids.push_back(specials[0]);
        ids.push_back(words[rng() % words.size()]);
      }
      for (bool skip : {false, true}) check_stream(tok, ids, skip);
    }
  }
}

TEST(Stories260K, SameVocabularyAsTok512) {
  const Tokenizer& stories = tokenizer_for(data_path("../../models/stories260K"));
  const Tokenizer& tok512 = fixture_tokenizer("tok512");
  ASSERT_EQ(stories.vocab_size(), 512);
  ASSERT_EQ(tok512.vocab_size(), 512);
  for (int32_t id = 0; id < 512; ++id) EXPECT_EQ(stories.id_to_token(id), tok512.id_to_token(id));
  EXPECT_EQ(stories.bos_id(), 1);
  EXPECT_EQ(stories.eos_id(), 2);
}

TEST(Stories260K, EncodesLikeTok512WhereTheirNormalizersAgree) {
  // tok512's normalizer also trims spaces at line ends and squeezes space
  // runs; the stories260K file (like llama2.c's tokenizer) does not. Elsewhere
  // the two must agree exactly.
  const Tokenizer& stories = tokenizer_for(data_path("../../models/stories260K"));
  const json cases = test::read_json(data_path("tokenizer-expected/tok512.json"));
  size_t n_compared = 0;
  for (const json& c : cases) {
    const std::string text = c["text"];
    if (text.find("  ") != std::string::npos || text.find(" \n") != std::string::npos ||
        text.find("\n ") != std::string::npos || text.front() == ' ' || text.back() == ' ') {
      continue;
    }
    SCOPED_TRACE(text.substr(0, 80));
    EXPECT_EQ(stories.encode(text, false), ids_of(c["ids"]));
    EXPECT_EQ(stories.encode(text, true), ids_of(c["ids_with_special"]));
    ++n_compared;
  }
  EXPECT_GE(n_compared, 12u);
  EXPECT_EQ(stories.encode(" Hello", false), (std::vector<int32_t>{410, 346, 306, 414}));
}

TEST(Queries, SpecialTokensAndConfig) {
  const Tokenizer& qwen = fixture_tokenizer("qwen3");
  EXPECT_EQ(qwen.vocab_size(), 151669);
  EXPECT_EQ(qwen.token_to_id("<|im_start|>"), 151644);
  EXPECT_EQ(qwen.token_to_id("Hello"), 9707);
  EXPECT_EQ(qwen.id_to_token(151645), "<|im_end|>");
  EXPECT_EQ(qwen.id_to_token(9707), "Hello");
  EXPECT_EQ(qwen.id_to_token(999999), std::nullopt);
  EXPECT_TRUE(qwen.is_special(151645));
  EXPECT_FALSE(qwen.is_special(151667));  // <think> is added but not special
  EXPECT_FALSE(qwen.is_special(9707));
  EXPECT_EQ(qwen.eos_id(), 151645);
  EXPECT_EQ(qwen.bos_id(), std::nullopt);  // Qwen has bos_token null

  const std::vector<int32_t> chat = qwen.encode("<|im_start|>user\nhi<|im_end|>");
  EXPECT_EQ(qwen.decode(chat, true), "user\nhi");
  EXPECT_EQ(qwen.decode(chat, false), "<|im_start|>user\nhi<|im_end|>");

  const Tokenizer& phi3 = fixture_tokenizer("phi3");
  EXPECT_EQ(phi3.vocab_size(), 32064);
  EXPECT_EQ(phi3.bos_id(), 1);
  EXPECT_EQ(phi3.eos_id(), 32000);
  EXPECT_EQ(phi3.token_to_id("<|end|>"), 32007);
  EXPECT_TRUE(phi3.is_special(32007));
  EXPECT_EQ(phi3.decode(std::vector<int32_t>{1, 15043, 32007}, true), "Hello");
  // Ids past the vocabulary are skipped, as Hugging Face does.
  EXPECT_EQ(phi3.decode(std::vector<int32_t>{15043, 40000}), "Hello");
}

}  // namespace
}  // namespace pensieve
