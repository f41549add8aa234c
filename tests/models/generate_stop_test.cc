// Generation ends at the model's stop ids: greedy stories260K from BOS writes
// one story and emits BOS (id 1, a stop through generation_config.json) at
// step 346; `pensieve generate` stops there too, and uses the same stop ids
// as `pensieve serve` (the template's turn end included), not config.json's
// eos ids alone.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>

#include "engine/session.h"
#include "models/model.h"
#include "chat/chat_config.h"
#include "chat/stop_ids.h"
#include "format/hf_config.h"
#include "support/test_support.h"

namespace pensieve {
namespace {

using nlohmann::json;

const std::string kStories = std::string(PENSIEVE_TEST_DATA) + "/../../models/stories260K";
constexpr size_t kStoryLength = 346;  // greedy tokens from BOS up to and including the stop


TEST(GenerateStop, GreedyStoriesStopsAtItsEndOfStory) {
  auto model = load_model(kStories, {.n_threads = 2});
  auto tokenizer = Tokenizer::load(kStories);
  const std::vector<int32_t> stop_ids = chat::collect_stop_ids(model->config().eos_token_ids, *tokenizer, chat::load_chat_config(kStories));
  ASSERT_EQ(stop_ids, std::vector<int32_t>({1, 2}));
  SamplingParams greedy;
  greedy.temperature = 0;
  const std::vector<int32_t> bos = {1};

  Session session(*model, 512);
  const GenerateResult r = generate(session, bos, 500, stop_ids, greedy);
  EXPECT_EQ(r.finish, FinishReason::eos);
  ASSERT_EQ(r.tokens.size(), kStoryLength);
  EXPECT_EQ(r.tokens.back(), 1);
  const json ref = test::read_json(kStories + "/greedy-reference.json");
  const auto reference = ref["greedy_ids"].get<std::vector<int32_t>>();
  EXPECT_TRUE(std::equal(reference.begin(), reference.end(), r.tokens.begin()));
  EXPECT_EQ(std::count(r.tokens.begin(), r.tokens.end() - 1, 1), 0);

  // With only config.json's eos id (2) the same greedy run goes on past the story.
  Session again(*model, 512);
  const GenerateResult on = generate(again, bos, 400, {2}, greedy);
  EXPECT_EQ(on.finish, FinishReason::max_tokens);
  ASSERT_EQ(on.tokens.size(), 400u);
  EXPECT_TRUE(std::equal(r.tokens.begin(), r.tokens.end(), on.tokens.begin()));
}

json generate_json(const std::string& dir, const std::string& args) {
  const auto run = test::run_pensieve("generate --threads 2 --model " + dir + " " + args);
  EXPECT_EQ(run.exit_code, 0) << run.err;
  return run.exit_code == 0 ? json::parse(run.out) : json::object();
}

TEST(GenerateStop, CliStopsStoriesAtItsEndOfStory) {
  const json r = generate_json(kStories, "--tokens 1 --max-tokens 500");
  EXPECT_EQ(r["stop_reason"], "eos");
  ASSERT_EQ(r["tokens"].size(), kStoryLength);
  EXPECT_EQ(r["tokens"].back(), 1);
  const json capped = generate_json(kStories, "--tokens 1 --max-tokens 100");
  EXPECT_EQ(capped["stop_reason"], "max_tokens");
  EXPECT_EQ(capped["tokens"].size(), 100u);
}

// stories260K without generation_config.json (so config.json's eos is just
// 2) but with a chat template that closes assistant turns with <s>: the
// template's turn end is a stop for `generate` as it is for `serve`, so the
// run ends at the same place; without the template it runs to --max-tokens.
TEST(GenerateStop, CliStopsAtTheTemplatesTurnEndLikeServe) {
  test::TempDir dir;
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json"}) {
    std::filesystem::copy_file(kStories + "/" + f, dir.file(f));
  }
  json config = test::read_json(kStories + "/tokenizer_config.json");
  test::write_file(dir.file("tokenizer_config.json"), config.dump());
  const json plain = generate_json(dir.path(), "--tokens 1 --max-tokens 400");
  EXPECT_EQ(plain["stop_reason"], "max_tokens");
  EXPECT_EQ(plain["tokens"].size(), 400u);

  config["chat_template"] =
      "{% for m in messages %}{{ m.role }}: {{ m.content }}"
      "{% if m.role == 'assistant' %}<s>{% endif %}\n{% endfor %}";
  test::write_file(dir.file("tokenizer_config.json"), config.dump());
  auto tokenizer = Tokenizer::load(dir.path());
  EXPECT_EQ(chat::collect_stop_ids(load_model_config(dir.path()).eos_token_ids, *tokenizer,
                                   chat::load_chat_config(dir.path())),
            std::vector<int32_t>({1, 2}));
  const json stopped = generate_json(dir.path(), "--tokens 1 --max-tokens 400");
  EXPECT_EQ(stopped["stop_reason"], "eos");
  ASSERT_EQ(stopped["tokens"].size(), kStoryLength);
  EXPECT_EQ(stopped["tokens"].back(), 1);
}

}  // namespace
}  // namespace pensieve
