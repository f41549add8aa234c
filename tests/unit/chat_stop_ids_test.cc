// Which ids end a reply (chat::collect_stop_ids, shared by `pensieve serve`
// and `pensieve generate`): config.json and generation_config.json, the
// tokenizer's eos token, the token the chat template closes an assistant
// turn with, and the family end tokens the vocabulary has.
#include "chat/stop_ids.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "format/hf_config.h"
#include "support/test_support.h"

namespace pensieve::chat {
namespace {

using nlohmann::json;
using test::TempDir;
using Ids = std::vector<int32_t>;

struct Loaded {
  std::unique_ptr<Tokenizer> tokenizer;
  ChatConfig chat;
};

Loaded load(const std::string& dir) { return {Tokenizer::load(dir), load_chat_config(dir)}; }

int32_t id_of(const Tokenizer& tok, const char* token) {
  auto id = tok.token_to_id(token);
  EXPECT_TRUE(id.has_value()) << token;
  return id.value_or(-1);
}

// tests/data/tokenizers/phi3 (no config.json): tokenizer_config's eos_token
// is <|endoftext|>, the template ends each turn with <|end|>.
TEST(StopIds, Phi3StopsAtEndOfTextAndEnd) {
  const Loaded m = load(test::data_path("tokenizers/phi3"));
  ASSERT_EQ(id_of(*m.tokenizer, "<|endoftext|>"), 32000);
  ASSERT_EQ(id_of(*m.tokenizer, "<|end|>"), 32007);
  EXPECT_EQ(template_turn_end_ids(m.chat, *m.tokenizer), Ids({32007}));
  EXPECT_EQ(collect_stop_ids({}, *m.tokenizer, m.chat), Ids({32000, 32007}));
}

// tests/data/tokenizers/qwen3: eos_token and the template's turn end are
// both <|im_end|>; <|endoftext|> is Qwen's end of text.
TEST(StopIds, Qwen3StopsAtEndOfTextAndImEnd) {
  const Loaded m = load(test::data_path("tokenizers/qwen3"));
  ASSERT_EQ(id_of(*m.tokenizer, "<|endoftext|>"), 151643);
  ASSERT_EQ(id_of(*m.tokenizer, "<|im_end|>"), 151645);
  EXPECT_EQ(template_turn_end_ids(m.chat, *m.tokenizer), Ids({151645}));
  EXPECT_EQ(collect_stop_ids({}, *m.tokenizer, m.chat), Ids({151643, 151645}));
}

// stories260K: config.json says eos_token_id 2, generation_config.json
// [2, 1] (llama2.c stops at BOS, which ends each story). Both count; without
// generation_config.json only 2 does.
TEST(StopIds, ConfigAndGenerationConfigIdsAreMerged) {
  const std::string dir = test::data_path("../../models/stories260K");
  const ModelConfig config = load_model_config(dir);
  const Loaded m = load(dir);
  EXPECT_FALSE(m.chat.has_template());
  EXPECT_EQ(config.eos_token_ids, std::vector<int64_t>({1, 2}));
  EXPECT_EQ(collect_stop_ids(config.eos_token_ids, *m.tokenizer, m.chat), Ids({1, 2}));

  TempDir tmp;
  for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json"}) {
    std::filesystem::copy_file(dir + "/" + f, tmp.file(f));
  }
  const ModelConfig without_generation = load_model_config(tmp.path());
  EXPECT_EQ(without_generation.eos_token_ids, std::vector<int64_t>({2}));
  EXPECT_EQ(collect_stop_ids(without_generation.eos_token_ids, *m.tokenizer, m.chat), Ids({2}));
}

// tok512 plus a special token <|turn_done|> (id 512) that no list knows: it
// is a stop id only because the template closes assistant turns with it.
class TemplateTurnEnd : public ::testing::Test {
 protected:
  // Writes the tokenizer with `chat_template` (none when empty) and loads it.
  Loaded with_template(const std::string& chat_template) {
    json tokenizer = test::read_json(test::data_path("tokenizers/tok512/tokenizer.json"));
    tokenizer["added_tokens"].push_back({{"id", 512},
                                         {"content", "<|turn_done|>"},
                                         {"single_word", false},
                                         {"lstrip", false},
                                         {"rstrip", false},
                                         {"normalized", false},
                                         {"special", true}});
    json config = test::read_json(test::data_path("tokenizers/tok512/tokenizer_config.json"));
    if (!chat_template.empty()) config["chat_template"] = chat_template;
    test::write_file(tmp_.file("tokenizer.json"), tokenizer.dump());
    test::write_file(tmp_.file("tokenizer_config.json"), config.dump());
    return load(tmp_.path());
  }
  TempDir tmp_;
};

TEST_F(TemplateTurnEnd, TheTokenClosingAnAssistantTurnStops) {
  const Loaded m = with_template(
      "{% for m in messages %}{{ m.role }}: {{ m.content }}"
      "{% if m.role == 'assistant' %} <|turn_done|>{% endif %}\n{% endfor %}");
  ASSERT_EQ(id_of(*m.tokenizer, "<|turn_done|>"), 512);
  EXPECT_EQ(template_turn_end_ids(m.chat, *m.tokenizer), Ids({512}));
  EXPECT_EQ(collect_stop_ids({}, *m.tokenizer, m.chat), Ids({2, 512}));  // </s> is eos_token
}

TEST_F(TemplateTurnEnd, NoTemplateOrNoClosingTokenLeavesTheOtherSources) {
  Loaded m = with_template("");
  EXPECT_EQ(collect_stop_ids({}, *m.tokenizer, m.chat), Ids({2}));
  m = with_template("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}");
  EXPECT_EQ(template_turn_end_ids(m.chat, *m.tokenizer), Ids());
  EXPECT_EQ(collect_stop_ids({}, *m.tokenizer, m.chat), Ids({2}));
  // A template that refuses the probe conversation is no error here.
  m = with_template("{{ raise_exception('a system message is required') }}");
  EXPECT_EQ(collect_stop_ids({}, *m.tokenizer, m.chat), Ids({2}));
}

}  // namespace
}  // namespace pensieve::chat
