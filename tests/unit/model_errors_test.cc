// Bad model directories: every failure is one line naming the file, tensor
// or JSON key, exit status 1, no crash.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "support/test_support.h"

namespace pensieve {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

class ModelErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::copy(test::data_path("models/qwen2-tiny-mlx-4bit"), dir_.path(),
             fs::copy_options::recursive | fs::copy_options::overwrite_existing);
    for (auto& e : fs::directory_iterator(dir_.path())) {
      fs::permissions(e.path(), fs::perms::owner_read | fs::perms::owner_write);
    }
  }
  // Runs `pensieve logits` on the broken copy; expects exit 1 and one line containing `needle`.
  void expect_error(const std::string& needle) {
    const auto r = test::run_pensieve("logits --model " + dir_.path() + " --tokens 1,2,3");
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_EQ(r.out, "");
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r.err;
  }
  nlohmann::json config() { return test::read_json(dir_.file("config.json")); }
  void write_config(const nlohmann::json& j) { test::write_file(dir_.file("config.json"), j.dump()); }
  std::string weights() { return test::read_file(dir_.file("model.safetensors")); }
  void write_weights(const std::string& s) { test::write_file(dir_.file("model.safetensors"), s); }

  TempDir dir_;
};

TEST_F(ModelErrors, WorkingCopyRuns) {
  const auto r = test::run_pensieve("generate --model " + dir_.path() + " --tokens 1,2,3 --max-tokens 2");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("\"tokens\""), std::string::npos);
}

TEST_F(ModelErrors, MissingDirectoryAndFiles) {
  const auto r = test::run_pensieve("logits --model /nonexistent/model --tokens 1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("/nonexistent/model/config.json"), std::string::npos) << r.err;
  fs::remove(dir_.file("model.safetensors"));
  expect_error("no model.safetensors");
}

TEST_F(ModelErrors, MissingConfig) {
  fs::remove(dir_.file("config.json"));
  expect_error("config.json");
}

TEST_F(ModelErrors, TruncatedSafetensors) {
  const std::string w = weights();
  write_weights(w.substr(0, w.size() - 100));
  expect_error("past the end of the data");
  write_weights(w.substr(0, 5));
  expect_error("truncated");
}

TEST_F(ModelErrors, BadHeaderLength) {
  std::string w = weights();
  const uint64_t bogus = 1ull << 50;
  std::memcpy(w.data(), &bogus, 8);
  write_weights(w);
  expect_error("bad safetensors header length");
}

TEST_F(ModelErrors, CorruptHeaderJson) {
  std::string w = weights();
  w[9] = '#';
  write_weights(w);
  expect_error("not valid JSON");
}

TEST_F(ModelErrors, WrongDtype) {
  std::string w = weights();
  const std::string from = "\"dtype\":\"U32\"";
  const size_t at = w.find(from);
  ASSERT_NE(at, std::string::npos);
  w.replace(at, from.size(), "\"dtype\":\"I32\"");
  write_weights(w);
  expect_error("expected U32");
}

TEST_F(ModelErrors, WrongShape) {
  auto c = config();
  c["intermediate_size"] = 384;  // tensors say 320
  write_config(c);
  expect_error("mlp.gate_proj.weight' has shape");
}

TEST_F(ModelErrors, MissingTensor) {
  std::string w = weights();
  const std::string from = "model.norm.weight";
  const size_t at = w.find(from);
  ASSERT_NE(at, std::string::npos);
  w.replace(at, from.size(), "model.xxxx.weight");
  write_weights(w);
  expect_error("missing tensor 'model.norm.weight'");
}

TEST_F(ModelErrors, UnknownArchitecture) {
  auto c = config();
  c["architectures"] = {"GPTBigCodeForCausalLM"};
  write_config(c);
  expect_error("architecture 'GPTBigCodeForCausalLM' is not supported");
}

TEST_F(ModelErrors, UnsupportedQuantization) {
  auto c = config();
  c["quantization"] = {{"group_size", 64}, {"bits", 3}};
  write_config(c);
  expect_error("quantization.bits = 3 is not supported");
  c["quantization"] = {{"group_size", 48}, {"bits", 4}};
  write_config(c);
  expect_error("group_size = 48 is not supported");
}

TEST_F(ModelErrors, ConfigMissingRequiredKey) {
  auto c = config();
  c.erase("hidden_size");
  write_config(c);
  expect_error("missing required key 'hidden_size'");
  c = config();
  write_config(c);
}

TEST_F(ModelErrors, ConfigNotJson) {
  test::write_file(dir_.file("config.json"), "{\"architectures\": [");
  expect_error("config.json: not valid JSON");
}

TEST_F(ModelErrors, BadTokenIds) {
  const auto r = test::run_pensieve("logits --model " + dir_.path() + " --tokens 1,99999");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("token id 99999 is out of range"), std::string::npos) << r.err;
  const auto r2 = test::run_pensieve("logits --model " + dir_.path() + " --tokens 1,x");
  EXPECT_EQ(r2.exit_code, 1);
  EXPECT_NE(r2.err.find("--tokens: 'x'"), std::string::npos) << r2.err;
}

}  // namespace
}  // namespace pensieve
