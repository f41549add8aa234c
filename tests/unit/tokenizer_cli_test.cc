// `pensieve tokenize` end to end.
#include <gtest/gtest.h>

#include "support/test_support.h"

namespace pensieve {
namespace {

using test::data_path;
using test::run_pensieve;

TEST(TokenizeCli, EncodesTextAndFiles) {
  const std::string model = data_path("tokenizers/phi3");
  auto r = run_pensieve("tokenize --model " + model + " --text 'Hello world'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out), nlohmann::json::parse(R"({"ids":[15043,3186]})"));
  r = run_pensieve("tokenize --model " + model + " --text 'Hello world' --special");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["ids"], nlohmann::json::parse("[1,15043,3186]"));

  test::TempDir dir;
  test::write_file(dir.file("in.txt"), "<|im_start|>user\nhi<|im_end|>\n");
  r = run_pensieve("tokenize --model " + data_path("tokenizers/qwen3") + " --file " +
                   dir.file("in.txt"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["ids"],
            nlohmann::json::parse("[151644, 872, 198, 6023, 151645, 198]"));
}

TEST(TokenizeCli, DecodesAndBenchmarks) {
  const std::string model = data_path("tokenizers/phi3");
  auto r = run_pensieve("tokenize --model " + model + " --decode 1,15043,3186");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["text"], "<s> Hello world");
  r = run_pensieve("tokenize --model " + model + " --text 'Hello world' --bench --runs 2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto bench = nlohmann::json::parse(r.out);
  EXPECT_EQ(bench["tokens"], 2);
  EXPECT_GE(bench["encode_ms_median"].get<double>(), 0.0);
  EXPECT_GT(bench["load_ms"].get<double>(), 0.0);
}

TEST(TokenizeCli, ErrorsExitWithCodeOne) {
  auto r = run_pensieve("tokenize --model /nonexistent --text hi");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("error: /nonexistent"), std::string::npos) << r.err;

  test::TempDir dir;
  test::write_file(dir.file("tokenizer.json"), R"({"model": {"type": "BPE", "vocab": {"a": 0},
    "merges": []}, "pre_tokenizer": {"type": "Foo"}})");
  r = run_pensieve("tokenize --model " + dir.path() + " --text hi");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("pre_tokenizer.type 'Foo' is not supported"), std::string::npos) << r.err;

  test::write_file(dir.file("bad.txt"), "ok \xFF");
  r = run_pensieve("tokenize --model " + data_path("tokenizers/phi3") + " --file " +
                   dir.file("bad.txt"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("not valid UTF-8"), std::string::npos) << r.err;

  r = run_pensieve("tokenize --model " + data_path("tokenizers/phi3"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("exactly one of --text, --file or --decode"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace pensieve
