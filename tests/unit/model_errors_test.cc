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
  // Runs `pensieve logits` on the broken copy; expects exit 1, nothing on
  // stdout and one line "error: ..." containing every needle.
  void expect_error(std::initializer_list<std::string> needles) {
    expect_error_from("logits --model " + dir_.path() + " --tokens 1,2,3", needles);
  }
  void expect_error(const std::string& needle) { expect_error({needle}); }
  void expect_error_from(const std::string& args, std::initializer_list<std::string> needles) {
    const auto r = test::run_pensieve(args);
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_EQ(r.out, "");
    for (const auto& needle : needles) EXPECT_NE(r.err.find(needle), std::string::npos) << needle << " in " << r.err;
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
  expect_error_from("logits --model /nonexistent/model --tokens 1", {"/nonexistent/model/config.json"});
  fs::remove(dir_.file("model.safetensors"));
  expect_error({dir_.path(), "no model.safetensors or model.safetensors.index.json"});
}

TEST_F(ModelErrors, MissingConfig) {
  fs::remove(dir_.file("config.json"));
  expect_error(dir_.file("config.json") + ": no such file");
}

// The tensor whose bytes end last in the data area: the one a truncation cuts.
std::string last_tensor_in(const std::string& safetensors) {
  uint64_t header_len = 0;
  std::memcpy(&header_len, safetensors.data(), 8);
  const auto header = nlohmann::json::parse(safetensors.substr(8, header_len));
  std::string last;
  uint64_t last_end = 0;
  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") continue;
    const uint64_t end = info["data_offsets"][1].get<uint64_t>();
    if (end > last_end) last = name, last_end = end;
  }
  return last;
}

TEST_F(ModelErrors, TruncatedSafetensors) {
  const std::string w = weights();
  const std::string last = last_tensor_in(w);
  ASSERT_FALSE(last.empty());
  write_weights(w.substr(0, w.size() - 100));
  expect_error({dir_.file("model.safetensors"), "tensor '" + last + "'", "past the end of the data"});
  write_weights(w.substr(0, 5));
  expect_error({dir_.file("model.safetensors"), "truncated safetensors file (5 bytes"});
}

TEST_F(ModelErrors, BadHeaderLength) {
  std::string w = weights();
  const uint64_t bogus = 1ull << 50;
  std::memcpy(w.data(), &bogus, 8);
  write_weights(w);
  expect_error(dir_.file("model.safetensors") + ": bad safetensors header length 1125899906842624");
}

TEST_F(ModelErrors, CorruptHeaderJson) {
  std::string w = weights();
  w[9] = '#';
  write_weights(w);
  expect_error(dir_.file("model.safetensors") + ": safetensors header is not valid JSON");
}

TEST_F(ModelErrors, WrongDtype) {
  std::string w = weights();
  const std::string from = "\"dtype\":\"U32\"";
  const size_t at = w.find(from);
  ASSERT_NE(at, std::string::npos);
  w.replace(at, from.size(), "\"dtype\":\"I32\"");
  write_weights(w);
  // The first U32 tensor in the header is the quantized embedding.
  expect_error(dir_.file("model.safetensors") +
               ": tensor 'model.embed_tokens.weight' has dtype I32, expected U32 (packed 4-bit)");
}

TEST_F(ModelErrors, WrongShape) {
  auto c = config();
  c["intermediate_size"] = 384;  // tensors say 320
  write_config(c);
  expect_error({dir_.file("model.safetensors"),
                "tensor 'model.layers.0.mlp.gate_proj.weight' has shape [320, 16], but " +
                    dir_.path() + "/config.json makes it [384, 16]"});
}

TEST_F(ModelErrors, MissingTensor) {
  std::string w = weights();
  const std::string from = "model.norm.weight";
  const size_t at = w.find(from);
  ASSERT_NE(at, std::string::npos);
  w.replace(at, from.size(), "model.xxxx.weight");
  write_weights(w);
  expect_error(dir_.path() + ": missing tensor 'model.norm.weight'");
}

TEST_F(ModelErrors, UnknownArchitecture) {
  auto c = config();
  c["architectures"] = {"GPTBigCodeForCausalLM"};
  write_config(c);
  expect_error(dir_.file("config.json") + ": architecture 'GPTBigCodeForCausalLM' is not supported");
}

TEST_F(ModelErrors, UnsupportedQuantization) {
  auto c = config();
  c["quantization"] = {{"group_size", 64}, {"bits", 3}};
  write_config(c);
  expect_error(dir_.file("config.json") + ": quantization.bits = 3 is not supported");
  c["quantization"] = {{"group_size", 48}, {"bits", 4}};
  write_config(c);
  expect_error(dir_.file("config.json") + ": quantization.group_size = 48 is not supported");
}

TEST_F(ModelErrors, ConfigMissingRequiredKey) {
  auto c = config();
  c.erase("hidden_size");
  write_config(c);
  expect_error(dir_.file("config.json") + ": missing required key 'hidden_size'");
}

TEST_F(ModelErrors, ConfigNotJson) {
  test::write_file(dir_.file("config.json"), "{\"architectures\": [");
  expect_error(dir_.file("config.json") + ": not valid JSON");
}

TEST_F(ModelErrors, BadTokenIds) {
  expect_error_from("logits --model " + dir_.path() + " --tokens 1,99999",
                    {"token id 99999 is out of range (vocabulary size 3072)"});
  expect_error_from("logits --model " + dir_.path() + " --tokens 1,x", {"--tokens: 'x'"});
  expect_error_from("generate --model " + dir_.path() + " --tokens 3072 --max-tokens 2",
                    {"token id 3072 is out of range"});
}

}  // namespace
}  // namespace pensieve
