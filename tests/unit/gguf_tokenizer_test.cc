// GGUF vocabularies as tokenizers: stories260K's file (made by llama.cpp's
// converter) against llama.cpp's own ids, and the Phi-3 (SentencePiece) and
// Qwen3 (byte-level BPE) vocabularies written into GGUF metadata the way the
// converter writes them, against Hugging Face's ids and llama.cpp's test
// vectors; the chat template and special tokens come from the file.
#include <gtest/gtest.h>

#include <map>
#include <sstream>

#include "chat/chat_config.h"
#include "core/error.h"
#include "format/gguf_writer.h"
#include "support/test_support.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_file.h"

namespace pensieve {
namespace {

using nlohmann::json;
using test::data_path;

TEST(GgufTokenizer, Stories260KMatchesLlamaCpp) {
  const std::string file = data_path("gguf/stories260K-F16.gguf");
  auto tok = Tokenizer::load(file);
  const json ref = test::read_json(data_path("gguf/stories260K-F16.json"));
  ASSERT_EQ(ref["tokenization"].size(), 5u);
  for (const json& c : ref["tokenization"]) {
    const std::string text = c["text"];
    SCOPED_TRACE(text);
    EXPECT_EQ(tok->encode(text, false), c["ids"].get<std::vector<int32_t>>());
    EXPECT_EQ(tok->encode(text, true), c["ids_add_special"].get<std::vector<int32_t>>());
  }
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_EQ(tok->decode(ref["tokenization"][0]["ids"].get<std::vector<int32_t>>()),
            ref["tokenization"][0]["text"].get<std::string>());
}

// A tokenizer.json vocabulary written as llama.cpp's converter writes it.
std::string write_gguf_vocab(const test::TempDir& dir, const std::string& name, const std::string& model,
                             const std::string& pre, bool spm_scores, const std::string& chat_template) {
  const std::string src = data_path("tokenizers/" + name);
  const tok::TokenizerFile tf = tok::parse_tokenizer_json(
      tok::read_file_maybe_gzipped(src + (name == "qwen3" ? "/tokenizer.json.gz" : "/tokenizer.json")), name);
  std::map<int32_t, std::string> by_id;
  for (const auto& [t, id] : tf.vocab) by_id[id] = t;
  std::map<int32_t, bool> added;  // id -> special
  for (const json& a : tf.rest["added_tokens"]) {
    by_id[a["id"].get<int32_t>()] = a["content"].get<std::string>();
    added[a["id"].get<int32_t>()] = a["special"].get<bool>();
  }
  const int32_t n = by_id.rbegin()->first + 1;
  std::vector<std::string> tokens(static_cast<size_t>(n));
  std::vector<int32_t> types(static_cast<size_t>(n), 1);
  for (int32_t i = 0; i < n; ++i) {
    auto it = by_id.find(i);
    tokens[static_cast<size_t>(i)] = it != by_id.end() ? it->second : "[PAD" + std::to_string(i) + "]";
    if (it == by_id.end()) types[static_cast<size_t>(i)] = 5;
  }
  for (const auto& [id, special] : added) types[static_cast<size_t>(id)] = special ? 3 : 4;
  GgufWriter w;
  w.set("general.architecture", std::string("llama"));
  w.set("tokenizer.ggml.model", model);
  w.set("tokenizer.ggml.pre", pre);
  if (spm_scores) {
    // SentencePiece scores: a piece ranks where its first merge does;
    // <0xXX> pieces are byte tokens.
    std::map<std::string, size_t> rank;
    for (size_t i = 0; i < tf.merges.size(); ++i) rank.emplace(tf.merges[i].first + tf.merges[i].second, i);
    std::vector<float> scores(static_cast<size_t>(n), 0.f);
    for (int32_t i = 0; i < n; ++i) {
      const std::string& t = tokens[static_cast<size_t>(i)];
      if (t.size() == 6 && t.rfind("<0x", 0) == 0 && t.back() == '>') types[static_cast<size_t>(i)] = 6;
      auto r = rank.find(t);
      scores[static_cast<size_t>(i)] = r != rank.end() ? -static_cast<float>(r->second) : -1e9f;
    }
    w.set("tokenizer.ggml.scores", scores);
    w.set("tokenizer.ggml.unknown_token_id", uint32_t{0});
  } else {
    std::vector<std::string> merges;
    for (const auto& [a, b] : tf.merges) merges.push_back(a + " " + b);
    w.set("tokenizer.ggml.merges", merges);
  }
  w.set("tokenizer.ggml.tokens", tokens);
  w.set("tokenizer.ggml.token_type", types);
  const json config = test::read_json(src + "/tokenizer_config.json");
  auto id_of = [&](const std::string& t) {
    return static_cast<uint32_t>(std::find(tokens.begin(), tokens.end(), t) - tokens.begin());
  };
  if (config.contains("bos_token") && config["bos_token"].is_string())
    w.set("tokenizer.ggml.bos_token_id", id_of(config["bos_token"]));
  w.set("tokenizer.ggml.eos_token_id", id_of(config["eos_token"]));
  if (config.contains("add_bos_token")) w.set("tokenizer.ggml.add_bos_token", config["add_bos_token"].get<bool>());
  if (!chat_template.empty()) w.set("tokenizer.chat_template", chat_template);
  const std::string path = dir.file(name + ".gguf");
  w.write(path);
  return path;
}

struct VocabCase {
  std::string name, model, pre;
  bool spm;
  std::vector<std::string> vectors;  // llama.cpp's test vectors of this vocabulary
};

class GgufVocab : public ::testing::TestWithParam<VocabCase> {};

TEST_P(GgufVocab, MatchesHuggingFaceAndLlamaCppVectors) {
  const VocabCase& c = GetParam();
  test::TempDir dir;
  const std::string file = write_gguf_vocab(dir, c.name, c.model, c.pre, c.spm, "");
  auto tok = Tokenizer::load(file);
  const json cases = test::read_json(data_path("tokenizer-expected/" + c.name + ".json"));
  ASSERT_GE(cases.size(), 20u);
  for (const json& e : cases) {
    const std::string text = e["text"];
    SCOPED_TRACE(text.substr(0, 80));
    EXPECT_EQ(tok->encode(text, false), e["ids"].get<std::vector<int32_t>>());
    // With special tokens: BOS as the file's add_bos_token says (Phi-3's
    // tokenizer_config.json says false, which the converter copies).
    const bool adds_bos = tok->config().value("add_bos_token", false);
    EXPECT_EQ(tok->encode(text, true), e[adds_bos ? "ids_with_special" : "ids"].get<std::vector<int32_t>>());
    EXPECT_EQ(tok->decode(e["ids"].get<std::vector<int32_t>>()), e["decoded"].get<std::string>());
  }
  for (const std::string& v : c.vectors) {
    const std::string base = data_path("tokenizers/llama-cpp-vectors/" + v);
    const auto inputs = test::split_on(test::read_file(base + ".inp"), "\n__ggml_vocab_test__\n");
    const auto outputs = test::split_on(test::read_file(base + ".out"), "\n");
    ASSERT_EQ(outputs.size(), inputs.size());
    for (size_t i = 0; i < inputs.size(); ++i) {
      SCOPED_TRACE(testing::Message() << v << " vector " << i << ": " << inputs[i].substr(0, 60));
      std::vector<int32_t> expected;
      std::istringstream line(outputs[i]);
      for (int32_t id; line >> id;) expected.push_back(id);
      EXPECT_EQ(tok->encode(inputs[i], false), expected);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Vocabs, GgufVocab,
    ::testing::Values(VocabCase{"phi3", "llama", "default", true, {"ggml-vocab-phi-3.gguf", "ggml-vocab-llama-spm.gguf"}},
                      VocabCase{"qwen3", "gpt2", "qwen2", false, {"ggml-vocab-qwen2.gguf"}}),
    [](const auto& info) { return info.param.name; });

TEST(GgufTokenizer, ChatTemplateAndSpecialTokensComeFromTheFile) {
  test::TempDir dir;
  const std::string tmpl =
      "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}<|end|>\n{% endfor %}"
      "{% if add_generation_prompt %}<|assistant|>\n{% endif %}{{ eos_token }}";
  const std::string file = write_gguf_vocab(dir, "phi3", "llama", "default", true, tmpl);
  const chat::ChatConfig config = chat::load_chat_config(file);
  EXPECT_EQ(config.template_source, tmpl);
  EXPECT_EQ(config.eos_token, "<|endoftext|>");
  const nlohmann::ordered_json messages = nlohmann::ordered_json::parse(R"([{"role": "user", "content": "Hi"}])");
  EXPECT_EQ(chat::render_chat(config, messages, nullptr, true), "<|user|>\nHi<|end|>\n<|assistant|>\n<|endoftext|>");
}

TEST(GgufTokenizer, UnsupportedOrBrokenVocabulariesAreNamed) {
  test::TempDir dir;
  auto message = [&](GgufWriter& w) {
    const std::string path = dir.file("v.gguf");
    w.write(path);
    try {
      Tokenizer::load(path);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  GgufWriter a;
  a.set("tokenizer.ggml.model", std::string("bert"));
  EXPECT_NE(message(a).find("tokenizer type 'bert' is not supported"), std::string::npos) << message(a);
  GgufWriter b;
  b.set("tokenizer.ggml.model", std::string("gpt2"));
  b.set("tokenizer.ggml.pre", std::string("deepseek-llm"));
  b.set("tokenizer.ggml.tokens", std::vector<std::string>{"a", "b"});
  b.set("tokenizer.ggml.merges", std::vector<std::string>{"a b"});
  EXPECT_NE(message(b).find("pre-tokenizer 'deepseek-llm'"), std::string::npos) << message(b);
  GgufWriter c;
  c.set("tokenizer.ggml.model", std::string("llama"));
  c.set("tokenizer.ggml.tokens", std::vector<std::string>{"a", "b", "c"});
  c.set("tokenizer.ggml.scores", std::vector<float>{0.f, 0.f});
  EXPECT_NE(message(c).find("tokenizer.ggml.scores has 2 entries, tokenizer.ggml.tokens 3"), std::string::npos)
      << message(c);
  GgufWriter d;
  d.set("general.architecture", std::string("llama"));
  EXPECT_NE(message(d).find("no tokenizer in the file"), std::string::npos) << message(d);
}

}  // namespace
}  // namespace pensieve
