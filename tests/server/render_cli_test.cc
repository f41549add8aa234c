// `pensieve render` shows the prompt `serve` builds for a Messages API
// request: system prompt, content blocks, tools in Anthropic's shape and a
// tool round trip go through the server's own conversion, so Phi-3 gets the
// generic tool block serve writes and Qwen3 its template's <tools>; and the
// printed prompt has exactly as many tokens as serve's count_tokens says.
#include <gtest/gtest.h>
#include <httplib.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "support/test_support.h"
#include "tokenizer/tokenizer.h"

namespace pensieve {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

json tool_round_trip() {
  return json::parse(R"({
    "model": "claude-test", "max_tokens": 100,
    "system": [{"type": "text", "text": "You are a careful assistant."}],
    "tools": [{"name": "Bash", "description": "Runs a command",
               "input_schema": {"type": "object", "properties": {"command": {"type": "string"}},
                                "required": ["command"]}}],
    "messages": [
      {"role": "user", "content": [{"type": "text", "text": "List the files."}]},
      {"role": "assistant", "content": [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}}]},
      {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a.txt\nb.txt"},
        {"type": "text", "text": "Which is newer?"}]}
    ]})");
}

test::RunResult render(const std::string& model_dir, const json& request, const std::string& extra = "") {
  test::TempDir dir;
  test::write_file(dir.file("request.json"), request.dump());
  return test::run_pensieve("render --model " + model_dir + " --messages " + dir.file("request.json") +
                            extra);
}

void expect_contains(const std::string& text, const std::string& part) {
  EXPECT_NE(text.find(part), std::string::npos) << "no " << part << " in:\n" << text;
}

TEST(RenderCommand, Phi3GetsTheServersToolBlockAndContentBlocks) {
  const auto r = render(test::data_path("tokenizers/phi3"), tool_round_trip());
  ASSERT_EQ(r.exit_code, 0) << r.err;  // content blocks once raised a template error
  const std::string& p = r.out;
  expect_contains(p, "You are a careful assistant.");
  expect_contains(p, "# Tools");  // Phi-3's template knows no tools: serve writes them
  expect_contains(p, R"({"name":"Bash","description":"Runs a command","parameters":)");
  expect_contains(p, "Let me look.\n<tool_call>\n{\"name\":\"Bash\",\"arguments\":{\"command\":\"ls\"}}\n</tool_call>");
  expect_contains(p, "<tool_response name=\"Bash\">\na.txt\nb.txt\n</tool_response>\nWhich is newer?");
  EXPECT_EQ(p.substr(p.size() - 14), "<|assistant|>\n") << p;
  EXPECT_LT(p.find("You are a careful assistant."), p.find("List the files.")) << p;
}

TEST(RenderCommand, Qwen3GetsTheToolsInItsTemplate) {
  const auto r = render(test::data_path("tokenizers/qwen3"), tool_round_trip());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string& p = r.out;
  expect_contains(p, "<|im_start|>system\nYou are a careful assistant.");
  expect_contains(p, "<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"Bash\"");
  expect_contains(p, "<tool_response>\na.txt\nb.txt\n</tool_response>");
  EXPECT_EQ(p.find("each with a JSON Schema for its arguments"), std::string::npos)
      << "not serve's generic block:\n" << p;
  // No `thinking` in the request: enable_thinking false, so the template
  // closes an empty think block itself.
  const std::string end = "<|im_start|>assistant\n<think>\n\n</think>\n\n";
  EXPECT_EQ(p.substr(p.size() - end.size()), end) << p;
}

TEST(RenderCommand, TakesAListOfMessagesAndSeparateTools) {
  test::TempDir dir;
  const json request = tool_round_trip();
  test::write_file(dir.file("tools.json"), request["tools"].dump());
  const auto whole = render(test::data_path("tokenizers/phi3"), request);
  const auto parts = render(test::data_path("tokenizers/phi3"), request["messages"],
                            " --tools " + dir.file("tools.json"));
  ASSERT_EQ(parts.exit_code, 0) << parts.err;
  // The same, but for the system prompt the list cannot carry.
  EXPECT_EQ(parts.out.find("careful"), std::string::npos);
  expect_contains(parts.out, "# Tools");
  json bad = request;
  bad["messages"][0]["content"][0]["type"] = "texts";
  bad["messages"][0]["content"][0].erase("text");
  bad["tools"][0].erase("name");
  const auto refused = render(test::data_path("tokenizers/phi3"), bad);
  EXPECT_EQ(refused.exit_code, 1);
  expect_contains(refused.err, "error: --messages: ");
  expect_contains(refused.err, "tools.0.name");
  const auto mixed = render(test::data_path("tokenizers/phi3"), request, " --var x=1");
  EXPECT_EQ(mixed.exit_code, 1);
  expect_contains(mixed.err, "go with --raw");
}

// The real server, with the same tokenizer and template: count_tokens of the
// request equals the tokens of what render printed.
TEST(RenderCommand, PrintsThePromptServeCountsTokensOf) {
  test::TempDir model;
  const std::string weights = test::data_path("models/phi3-fullvocab-mlx-4bit");
  const std::string tokenizer = test::data_path("tokenizers/phi3");
  for (const char* f : {"config.json", "generation_config.json", "model.safetensors"})
    fs::create_symlink(fs::path(weights) / f, model.file(f));
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    fs::create_symlink(fs::path(tokenizer) / f, model.file(f));
  const json request = tool_round_trip();
  const auto r = render(model.path(), request);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const size_t n_rendered = Tokenizer::load(model.path())->encode(r.out, false).size();

  test::ServeProcess serve({"--model", model.path(), "--port", "0", "--ctx-size", "2048"});
  ASSERT_TRUE(serve.wait_ready()) << serve.err();
  httplib::Client client("127.0.0.1", serve.port());
  auto counted = client.Post("/v1/messages/count_tokens", request.dump(), "application/json");
  ASSERT_TRUE(counted);
  ASSERT_EQ(counted->status, 200) << counted->body;
  EXPECT_EQ(json::parse(counted->body)["input_tokens"].get<size_t>(), n_rendered);
  EXPECT_GT(n_rendered, 100u);
  EXPECT_EQ(serve.stop(), 0) << serve.err();
}

}  // namespace
}  // namespace pensieve
