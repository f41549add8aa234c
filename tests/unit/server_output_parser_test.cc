// OutputParser: text, <think> and <tool_call> recognition and stop sequences,
// whichever way the text is split into tokens.
#include "server/output_parser.h"

#include <gtest/gtest.h>

namespace pensieve::server {
namespace {

using json = nlohmann::ordered_json;

// A readable summary of the pieces: "T:text" "R:thinking" "C:name{args}".
std::vector<std::string> summarize(const std::vector<OutputPiece>& pieces) {
  std::vector<std::string> out;
  for (const auto& p : pieces) {
    std::string s = p.kind == OutputPiece::Kind::text       ? "T:" + p.text
                    : p.kind == OutputPiece::Kind::thinking ? "R:" + p.text
                                                            : "C:" + p.name + p.input.dump();
    // Adjacent pieces of one kind from different feeds are one block.
    if (!out.empty() && p.kind != OutputPiece::Kind::tool_call && out.back()[0] == s[0])
      out.back() += s.substr(2);
    else
      out.push_back(s);
  }
  return out;
}

std::vector<std::string> parse_chunks(const OutputParserOptions& options,
                                      const std::vector<std::string>& chunks,
                                      std::string* stop = nullptr) {
  OutputParser parser(options);
  std::vector<OutputPiece> pieces;
  for (const auto& c : chunks) parser.feed(c, pieces);
  if (!parser.stopped()) parser.finish(pieces);
  if (stop) *stop = parser.stop_sequence();
  return summarize(pieces);
}

// Every way of cutting the text in two, and one byte at a time, must give
// the same result as one piece.
void expect_split_invariant(const OutputParserOptions& options, const std::string& text,
                            const std::vector<std::string>& expected) {
  EXPECT_EQ(parse_chunks(options, {text}), expected) << "whole";
  for (size_t cut = 1; cut < text.size(); ++cut)
    EXPECT_EQ(parse_chunks(options, {text.substr(0, cut), text.substr(cut)}), expected)
        << "cut at " << cut;
  std::vector<std::string> bytes;
  for (char c : text) bytes.emplace_back(1, c);
  EXPECT_EQ(parse_chunks(options, bytes), expected) << "byte by byte";
}

OutputParserOptions tools_on() {
  OutputParserOptions o;
  o.tool_calls = true;
  return o;
}

TEST(OutputParser, PlainTextPassesThroughUnchanged) {
  OutputParserOptions plain;
  expect_split_invariant(plain, "  Once upon a <time>, \n<tool_call>{}", {"T:  Once upon a <time>, \n<tool_call>{}"});
  // Without tools or stop sequences nothing is held back.
  OutputParser parser(plain);
  std::vector<OutputPiece> pieces;
  parser.feed("Hello <tool", pieces);
  ASSERT_EQ(pieces.size(), 1u);
  EXPECT_EQ(pieces[0].text, "Hello <tool");
}

TEST(OutputParser, ToolCallsAnyWaySplit) {
  expect_split_invariant(
      tools_on(),
      "I'll list it.\n<tool_call>\n{\"name\": \"Bash\", \"arguments\": {\"command\": \"ls -l\"}}\n</tool_call>\n"
      "<tool_call>\n{\"name\": \"Read\", \"arguments\": {\"path\": \"a\"}}\n</tool_call>",
      {"T:I'll list it.", "C:Bash{\"command\":\"ls -l\"}", "C:Read{\"path\":\"a\"}"});
}

TEST(OutputParser, MalformedToolCallIsText) {
  expect_split_invariant(tools_on(), "<tool_call>{\"name\": 3}</tool_call> ok",
                         {"T:<tool_call>{\"name\": 3}</tool_call> ok"});
  expect_split_invariant(tools_on(), "<tool_call>not json</tool_call>",
                         {"T:<tool_call>not json</tool_call>"});
  // Cut off inside a call: what was written stays visible.
  expect_split_invariant(tools_on(), "a <tool_call>{\"name\": \"Bash\"",
                         {"T:a<tool_call>{\"name\": \"Bash\""});
}

TEST(OutputParser, ToolCallJsonVariants) {
  std::string name;
  json input;
  ASSERT_TRUE(parse_tool_call_json(R"({"name":"f","arguments":"{\"x\":1}"})", name, input));
  EXPECT_EQ(input, json::parse(R"({"x":1})"));
  ASSERT_TRUE(parse_tool_call_json(R"( {"name":"f"} )", name, input));
  EXPECT_EQ(input, json::object());
  ASSERT_TRUE(parse_tool_call_json(R"({"name":"g","parameters":{"y":[1]}})", name, input));
  EXPECT_EQ(name, "g");
  EXPECT_EQ(input, json::parse(R"({"y":[1]})"));
  EXPECT_FALSE(parse_tool_call_json(R"({"name":"f","arguments":[1]})", name, input));
  EXPECT_FALSE(parse_tool_call_json(R"({"name":""})", name, input));
  EXPECT_FALSE(parse_tool_call_json(R"([1,2])", name, input));
  EXPECT_FALSE(parse_tool_call_json("", name, input));
}

TEST(OutputParser, StopSequencesAnyWaySplit) {
  OutputParserOptions o;
  o.stop_sequences = {"\nHuman:", "STOP"};
  expect_split_invariant(o, "Sure.\nHum! STO\nHuman: more", {"T:Sure.\nHum! STO"});
  std::string stop;
  EXPECT_EQ(parse_chunks(o, {"a ST", "OP b"}, &stop), (std::vector<std::string>{"T:a "}));
  EXPECT_EQ(stop, "STOP");
  // The earliest match wins, whichever sequence it is.
  EXPECT_EQ(parse_chunks(o, {"xSTOP\nHuman:"}, &stop), (std::vector<std::string>{"T:x"}));
  EXPECT_EQ(stop, "STOP");
  // Held-back text is released at the end when no sequence completes.
  expect_split_invariant(o, "ends with ST", {"T:ends with ST"});
}

TEST(OutputParser, StopSequenceBeforeToolCall) {
  OutputParserOptions o = tools_on();
  o.stop_sequences = {"###"};
  std::string stop;
  EXPECT_EQ(parse_chunks(o, {"a ##", "# <tool_call>{\"name\":\"f\"}</tool_call>"}, &stop),
            (std::vector<std::string>{"T:a "}));
  EXPECT_EQ(stop, "###");
}

TEST(OutputParser, ThinkingAnyWaySplit) {
  OutputParserOptions o;
  o.thinking = true;
  expect_split_invariant(o, "<think>\nStep 1.\nStep 2.\n</think>\n\nThe answer.",
                         {"R:Step 1.\nStep 2.", "T:The answer."});
  expect_split_invariant(o, "No thinking here.", {"T:No thinking here."});
  expect_split_invariant(o, "<think>\n\n</think>\n\nHi", {"T:Hi"});
  // Cut off while thinking.
  expect_split_invariant(o, "<think>hmm\n", {"R:hmm"});
  // <think> later in the text is text.
  expect_split_invariant(o, "a<think>b</think>", {"T:a<think>b</think>"});
}

TEST(OutputParser, ThinkingOpenedByPrompt) {
  OutputParserOptions o = tools_on();
  o.thinking = true;
  o.starts_in_thinking = true;
  expect_split_invariant(o, "plan</think>\n<tool_call>{\"name\":\"f\",\"arguments\":{}}</tool_call>",
                         {"R:plan", "C:f{}"});
}

}  // namespace
}  // namespace pensieve::server
