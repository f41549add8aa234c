// config.json's rope_scaling in every spelling real checkpoints use: `type`
// (older) or `rope_type`, Phi-3's "su" for "longrope", "llama3", explicit
// null, transformers 5's rope_parameters; unknown types and missing keys are
// errors that name the key.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>

#include "core/error.h"
#include "engine/session.h"
#include "format/hf_config.h"
#include "models/model.h"
#include "support/test_support.h"

namespace pensieve {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// A copy of a fixture model whose config.json the test rewrites.
class RopeScalingConfig : public ::testing::Test {
 protected:
  void use(const std::string& fixture) {
    src_ = test::data_path("models/" + fixture);
    fs::copy(src_, dir_.path(), fs::copy_options::recursive | fs::copy_options::overwrite_existing);
    fs::permissions(dir_.file("config.json"), fs::perms::owner_read | fs::perms::owner_write);
    config_ = test::read_json(dir_.file("config.json"));
  }
  ModelConfig load_with_rope_scaling(const json& rope_scaling) {
    json c = config_;
    c["rope_scaling"] = rope_scaling;
    test::write_file(dir_.file("config.json"), c.dump());
    return load_model_config(dir_.path());
  }
  std::string error_with_rope_scaling(const json& rope_scaling) {
    return test::error_of([&] { load_with_rope_scaling(rope_scaling); });
  }
  // Logits at every position of the fixture's reference input.
  std::vector<float> logits() {
    const json ref = test::read_json(test::data_path("reference/" + fs::path(src_).filename().string() + ".json"));
    const auto input = ref["input_ids"].get<std::vector<int32_t>>();
    auto model = load_model(dir_.path(), {2});
    Session s(*model, static_cast<int64_t>(input.size()));
    return s.append(input, true);
  }

  std::string src_;
  test::TempDir dir_;
  json config_;
};

void expect_same_rope(const RopeConfig& a, const RopeConfig& b) {
  EXPECT_EQ(a.type, b.type);
  EXPECT_EQ(a.theta, b.theta);
  EXPECT_EQ(a.factor, b.factor);
  EXPECT_EQ(a.low_freq_factor, b.low_freq_factor);
  EXPECT_EQ(a.high_freq_factor, b.high_freq_factor);
  EXPECT_EQ(a.original_max_position, b.original_max_position);
  EXPECT_EQ(a.short_factor, b.short_factor);
  EXPECT_EQ(a.long_factor, b.long_factor);
}

TEST_F(RopeScalingConfig, Llama3ReadsItsFactors) {
  use("llama3-tiny");
  const ModelConfig c = load_with_rope_scaling({{"rope_type", "llama3"},
                                                {"factor", 8.0},
                                                {"low_freq_factor", 2.0},
                                                {"high_freq_factor", 6.0},
                                                {"original_max_position_embeddings", 1024}});
  EXPECT_EQ(c.rope.type, RopeScaling::llama3);
  EXPECT_EQ(c.rope.factor, 8.0);
  EXPECT_EQ(c.rope.low_freq_factor, 2.0);
  EXPECT_EQ(c.rope.high_freq_factor, 6.0);
  EXPECT_EQ(c.rope.original_max_position, 1024);
  EXPECT_EQ(c.rope.theta, config_.value("rope_theta", 0.0));
}

TEST_F(RopeScalingConfig, TypeAndRopeTypeAreTheSameKey) {
  use("llama3-tiny");
  json scaling = config_["rope_scaling"];
  ASSERT_EQ(scaling["rope_type"], "llama3");
  const RopeConfig with_rope_type = load_with_rope_scaling(scaling).rope;
  scaling.erase("rope_type");
  scaling["type"] = "llama3";
  const RopeConfig with_type = load_with_rope_scaling(scaling).rope;
  EXPECT_EQ(with_type.type, RopeScaling::llama3);
  expect_same_rope(with_type, with_rope_type);
  // When both are present, rope_type wins, as in transformers.
  scaling["type"] = "linear";
  scaling["rope_type"] = "llama3";
  EXPECT_EQ(load_with_rope_scaling(scaling).rope.type, RopeScaling::llama3);
}

TEST_F(RopeScalingConfig, SuIsLongropeWithTheSameLogits) {
  use("phi3-tiny");
  json scaling = config_["rope_scaling"];
  ASSERT_EQ(scaling["type"], "longrope");
  const RopeConfig longrope = load_with_rope_scaling(scaling).rope;
  const auto expected = logits();

  scaling["type"] = "su";
  const RopeConfig su = load_with_rope_scaling(scaling).rope;
  EXPECT_EQ(su.type, RopeScaling::longrope);
  expect_same_rope(su, longrope);
  EXPECT_EQ(su.short_factor.size(), 32u);
  EXPECT_EQ(logits(), expected);

  scaling.erase("type");
  scaling["rope_type"] = "longrope";
  EXPECT_EQ(load_with_rope_scaling(scaling).rope.type, RopeScaling::longrope);
  EXPECT_EQ(logits(), expected);

  // What the comparison can tell apart: without the short factors the numbers change.
  EXPECT_EQ(load_with_rope_scaling(nullptr).rope.type, RopeScaling::none);
  EXPECT_NE(logits(), expected);
}

TEST_F(RopeScalingConfig, ExplicitNullAndAbsentMeanPlainRope) {
  use("qwen3-tiny");
  ASSERT_TRUE(config_.contains("rope_scaling") && config_["rope_scaling"].is_null());
  const ModelConfig with_null = load_with_rope_scaling(nullptr);
  EXPECT_EQ(with_null.rope.type, RopeScaling::none);
  EXPECT_EQ(with_null.rope.factor, 1.0);
  EXPECT_EQ(with_null.rope.theta, config_["rope_theta"].get<double>());
  EXPECT_EQ(with_null.rope.theta, 1e6);
  json c = config_;
  c.erase("rope_scaling");
  test::write_file(dir_.file("config.json"), c.dump());
  const ModelConfig absent = load_model_config(dir_.path());
  expect_same_rope(absent.rope, with_null.rope);
  // "default" is transformers' name for no scaling.
  EXPECT_EQ(load_with_rope_scaling({{"rope_type", "default"}}).rope.type, RopeScaling::none);
}

// transformers 5 writes rope_parameters, with rope_theta inside.
TEST_F(RopeScalingConfig, RopeParametersAreReadWhenRopeScalingIsAbsent) {
  use("llama3-tiny");
  json c = config_;
  json params = c["rope_scaling"];
  params["rope_theta"] = 250000.0;
  c.erase("rope_scaling");
  c.erase("rope_theta");
  c["rope_parameters"] = params;
  test::write_file(dir_.file("config.json"), c.dump());
  const ModelConfig m = load_model_config(dir_.path());
  EXPECT_EQ(m.rope.type, RopeScaling::llama3);
  EXPECT_EQ(m.rope.theta, 250000.0);
  EXPECT_EQ(m.rope.original_max_position, 8192);
}

TEST_F(RopeScalingConfig, UnknownTypeIsAnErrorNamingTheKey) {
  use("llama3-tiny");
  EXPECT_NE(error_with_rope_scaling({{"rope_type", "ntk-by-parts"}, {"factor", 2.0}})
                .find("config.json: rope_scaling.rope_type 'ntk-by-parts' is not supported"),
            std::string::npos)
      << error_with_rope_scaling({{"rope_type", "ntk-by-parts"}});
  EXPECT_NE(error_with_rope_scaling({{"type", "mystery"}}).find("rope_scaling.type 'mystery' is not supported"),
            std::string::npos)
      << error_with_rope_scaling({{"type", "mystery"}});
  EXPECT_NE(error_with_rope_scaling({{"factor", 2.0}}).find("rope_scaling needs 'rope_type' or 'type'"),
            std::string::npos);
  EXPECT_NE(error_with_rope_scaling({{"rope_type", "llama3"}, {"factor", 8.0}})
                .find("missing required key 'rope_scaling.original_max_position_embeddings'"),
            std::string::npos)
      << error_with_rope_scaling({{"rope_type", "llama3"}, {"factor", 8.0}});
  EXPECT_NE(error_with_rope_scaling({{"type", "su"}, {"short_factor", {1.0}}}).find("rope_scaling.long_factor"),
            std::string::npos);
  EXPECT_NE(error_with_rope_scaling("longrope").find("rope_scaling must be an object or null"),
            std::string::npos);

  // Through the CLI: one line, exit 1.
  json c = config_;
  c["rope_scaling"] = {{"rope_type", "ntk-by-parts"}};
  test::write_file(dir_.file("config.json"), c.dump());
  const auto r = test::run_pensieve("logits --model " + dir_.path() + " --tokens 1,2");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find("rope_scaling.rope_type 'ntk-by-parts'"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace pensieve
