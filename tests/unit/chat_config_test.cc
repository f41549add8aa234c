// Loading a model's chat setup and rendering conversations: the phi3 and qwen3
// fixtures must match transformers' apply_chat_template byte for byte.
#include "chat/chat_config.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "core/error.h"
#include "tokenizer/tokenizer.h"
#include "support/test_support.h"

namespace pensieve::chat {
namespace {

using nlohmann::ordered_json;
using test::TempDir;

ordered_json read_ordered(const std::string& path) {
  return ordered_json::parse(test::read_file(path));
}

// tests/data/chat-expected/NAME.json: cases of messages, tools, kwargs and the
// rendered text and its token ids.
void expect_matches_fixture(const ChatConfig& config, const std::string& name,
                            size_t expected_cases) {
  const ordered_json cases = read_ordered(test::data_path("chat-expected/" + name + ".json"));
  ASSERT_EQ(cases.size(), expected_cases);
  for (const auto& c : cases) {
    const ordered_json* tools = c["tools"].is_null() ? nullptr : &c["tools"];
    const std::string out = render_chat(config, c["messages"], tools,
                                        c["add_generation_prompt"].get<bool>(), c["kwargs"]);
    EXPECT_EQ(out, c["rendered"].get<std::string>())
        << name << " case " << c["name"] << " kwargs " << c["kwargs"].dump();
  }
}

// The rendered prompts tokenize to transformers' ids (special-token strings
// such as <|user|> and <|im_start|> become their ids, no BOS added again).
void expect_ids_match_fixture(const std::string& name) {
  const ordered_json cases = read_ordered(test::data_path("chat-expected/" + name + ".json"));
  auto tok = Tokenizer::load(test::data_path("tokenizers/" + name));
  for (const auto& c : cases) {
    const auto ids = tok->encode(c["rendered"].get<std::string>(), false);
    EXPECT_EQ(ids, c["ids"].get<std::vector<int32_t>>()) << name << " case " << c["name"];
  }
}

TEST(ChatConfig, RenderedPromptsTokenizeToTransformersIds) {
  expect_ids_match_fixture("phi3");
  expect_ids_match_fixture("qwen3");
}

TEST(ChatConfig, Phi3MatchesTransformers) {
  const ChatConfig config = load_chat_config(test::data_path("tokenizers/phi3"));
  EXPECT_TRUE(config.has_template());
  EXPECT_EQ(config.bos_token.value_or("?"), "<s>");
  EXPECT_EQ(config.eos_token.value_or("?"), "<|endoftext|>");
  EXPECT_EQ(config.unk_token.value_or("?"), "<unk>");
  expect_matches_fixture(config, "phi3", 2);
}

TEST(ChatConfig, Qwen3MatchesTransformersWithToolsAndThinking) {
  const ChatConfig config = load_chat_config(test::data_path("tokenizers/qwen3"));
  EXPECT_FALSE(config.bos_token.has_value());  // null in its tokenizer_config.json
  EXPECT_EQ(config.eos_token.value_or("?"), "<|im_end|>");
  expect_matches_fixture(config, "qwen3", 6);
}

TEST(ChatConfig, Qwen3HandlesThinkingHistoryAndParallelToolResults) {
  const ChatConfig config = load_chat_config(test::data_path("tokenizers/qwen3"));
  const ordered_json messages = ordered_json::parse(R"([
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "<think>\nadd them\n</think>\n\n4"},
    {"role": "user", "content": "Now list files"},
    {"role": "assistant", "content": "", "reasoning_content": "need ls",
     "tool_calls": [{"type": "function", "function": {"name": "Bash", "arguments": "{\"command\": \"ls\"}"}},
                    {"type": "function", "function": {"name": "Bash", "arguments": {"command": "pwd"}}}]},
    {"role": "tool", "content": "a.txt"},
    {"role": "tool", "content": "/home"}])");
  EXPECT_EQ(
      render_chat(config, messages, nullptr, true),
      "<|im_start|>user\n2+2?<|im_end|>\n"
      "<|im_start|>assistant\n4<|im_end|>\n"
      "<|im_start|>user\nNow list files<|im_end|>\n"
      "<|im_start|>assistant\n<think>\nneed ls\n</think>\n\n"
      "<tool_call>\n{\"name\": \"Bash\", \"arguments\": {\"command\": \"ls\"}}\n</tool_call>\n"
      "<tool_call>\n{\"name\": \"Bash\", \"arguments\": {\"command\": \"pwd\"}}\n</tool_call>"
      "<|im_end|>\n"
      "<|im_start|>user\n<tool_response>\na.txt\n</tool_response>\n"
      "<tool_response>\n/home\n</tool_response><|im_end|>\n"
      "<|im_start|>assistant\n");
}

TEST(ChatConfig, OlderPhi3TemplateWithBosToken) {
  const ordered_json older = read_ordered(test::data_path("tokenizers/phi3/older_template.json"));
  ChatConfig config;
  config.template_source = older["gguf_chat_template_of_phi3_mini_4k"].get<std::string>();
  config.bos_token = "<s>";
  config.prepare();
  const ordered_json messages = ordered_json::parse(
      R"([{"role": "system", "content": "ignored"}, {"role": "user", "content": "Hi"},
          {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"}])");
  EXPECT_EQ(render_chat(config, messages, nullptr, true),
            "<s><|user|>\nHi<|end|>\n<|assistant|>\nHello<|end|>\n<|user|>\nBye<|end|>\n"
            "<|assistant|>\n");
}

TEST(ChatConfig, NamedTemplatesAndTokenObjects) {
  TempDir dir;
  test::write_file(dir.file("tokenizer_config.json"), R"({
    "bos_token": {"__type": "AddedToken", "content": "<|begin|>", "lstrip": false},
    "eos_token": "<|end|>",
    "chat_template": [
      {"name": "default", "template": "{{ bos_token }}D{{ messages|length }}{{ eos_token }}"},
      {"name": "tool_use", "template": "T{{ tools|length }}:{{ tools[0].name }}"}]})");
  const ChatConfig config = load_chat_config(dir.path());
  EXPECT_EQ(config.bos_token.value_or("?"), "<|begin|>");
  EXPECT_EQ(config.named_templates.size(), 2u);
  const ordered_json messages = ordered_json::parse(R"([{"role": "user", "content": "x"}])");
  EXPECT_EQ(render_chat(config, messages, nullptr, true), "<|begin|>D1<|end|>");
  const ordered_json tools = ordered_json::parse(R"([{"name": "Bash"}])");
  EXPECT_EQ(render_chat(config, messages, &tools, true), "T1:Bash");
}

TEST(ChatConfig, ChatTemplateJinjaFileWins) {
  TempDir dir;
  test::write_file(dir.file("tokenizer_config.json"),
                   R"({"chat_template": "from config", "eos_token": "E"})");
  // A trailing newline in the file is dropped, as jinja2 does.
  test::write_file(dir.file("chat_template.jinja"),
                   "{% for m in messages %}[{{ m.role }}]{% endfor %}{{ eos_token }}\n");
  const ChatConfig config = load_chat_config(dir.path());
  const ordered_json messages = ordered_json::parse(R"([{"role": "user", "content": "x"}])");
  EXPECT_EQ(render_chat(config, messages, nullptr, true), "[user]E");
}

TEST(ChatConfig, ExtraVariablesOverrideAndToolsStayUndefinedWhenNull) {
  TempDir dir;
  test::write_file(dir.file("chat_template.jinja"),
                   "{{ tools is defined }}|{{ enable_thinking }}|{{ add_generation_prompt }}");
  const ChatConfig config = load_chat_config(dir.path());
  const ordered_json null_tools;
  EXPECT_EQ(render_chat(config, ordered_json::array(), &null_tools, false,
                        ordered_json{{"enable_thinking", false}}),
            "False|False|False");
}

TEST(ChatConfig, BaseModelGetsThePlainTextFallback) {
  const ChatConfig config = load_chat_config(PENSIEVE_TEST_DATA "/../../models/stories260K");
  EXPECT_FALSE(config.has_template());
  const ordered_json messages = ordered_json::parse(R"([
    {"role": "system", "content": "Tell stories."},
    {"role": "user", "content": "Once upon a time"},
    {"role": "assistant", "content": [{"type": "text", "text": "there was"}, {"type": "image"},
                                      {"type": "text", "text": "a cat."}]},
    {"role": "user", "content": "More"}])");
  EXPECT_EQ(render_chat(config, messages, nullptr, true),
            "Tell stories.\n\nUser: Once upon a time\n\nAssistant: there was\na cat.\n\n"
            "User: More\n\nAssistant:");
  EXPECT_EQ(render_chat(config, messages, nullptr, false),
            "Tell stories.\n\nUser: Once upon a time\n\nAssistant: there was\na cat.\n\n"
            "User: More\n\n");
}

TEST(ChatConfig, BadFilesGiveClearErrors) {
  EXPECT_THROW(load_chat_config("/nonexistent/model/dir"), Error);
  TempDir dir;
  test::write_file(dir.file("tokenizer_config.json"), "{not json");
  try {
    load_chat_config(dir.path());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer_config.json: invalid JSON"), std::string::npos);
  }
  test::write_file(dir.file("tokenizer_config.json"), R"({"chat_template": "{% if x %}"})");
  try {
    load_chat_config(dir.path());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer_config.json: chat template: line 1"),
              std::string::npos)
        << e.what();
  }
  test::write_file(dir.file("tokenizer_config.json"), R"({"chat_template": 5})");
  EXPECT_THROW(load_chat_config(dir.path()), Error);
  test::write_file(dir.file("tokenizer_config.json"), R"({"eos_token": 5})");
  EXPECT_THROW(load_chat_config(dir.path()), Error);
}

// --raw: the template's own rendering of Hugging Face style messages
// (tests/server/render_cli_test.cc has render as serve renders requests).
TEST(RenderCommand, PrintsTheQwen3PromptExactly) {
  const ordered_json cases = read_ordered(test::data_path("chat-expected/qwen3.json"));
  TempDir dir;
  for (const auto& c : cases) {
    test::write_file(dir.file("messages.json"), c["messages"].dump());
    std::string args = "render --raw --model " + test::data_path("tokenizers/qwen3") +
                       " --messages " + dir.file("messages.json");
    if (!c["tools"].is_null()) {
      test::write_file(dir.file("tools.json"), c["tools"].dump());
      args += " --tools " + dir.file("tools.json");
    }
    for (const auto& [k, v] : c["kwargs"].items()) args += " --var " + k + "=" + v.dump();
    const test::RunResult r = test::run_pensieve(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, c["rendered"].get<std::string>()) << c["name"];
  }
}

TEST(RenderCommand, NoGenerationPromptAndErrors) {
  TempDir dir;
  test::write_file(dir.file("messages.json"),
                   R"({"messages": [{"role": "user", "content": "Hi"}]})");
  test::RunResult r =
      test::run_pensieve("render --raw --model " + test::data_path("tokenizers/qwen3") +
                         " --messages " + dir.file("messages.json") + " --no-generation-prompt");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "<|im_start|>user\nHi<|im_end|>\n");

  test::write_file(dir.file("bad.json"), "[{");
  r = test::run_pensieve("render --model " + test::data_path("tokenizers/qwen3") + " --messages " +
                         dir.file("bad.json"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("error: --messages"), std::string::npos) << r.err;

  // The template's own raise_exception message reaches the user.
  test::write_file(dir.file("chat_template.jinja"), "{{ raise_exception('no tools here') }}");
  test::write_file(dir.file("m.json"), "[]");
  r = test::run_pensieve("render --raw --model " + dir.path() + " --messages " + dir.file("m.json"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "error: chat template: no tools here\n");
}

}  // namespace
}  // namespace pensieve::chat
