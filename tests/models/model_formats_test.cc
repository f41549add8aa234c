// The checkpoint forms a model can arrive in, each checked against the same
// weights in another form: F32 and F16 instead of bf16, sharded with
// model.safetensors.index.json, MLX affine 8-bit and 4-bit with groups of 32,
// 64 and 128 (bf16 or f16 scales); and MistralForCausalLM, which is the Llama
// layout plus a sliding window. The variants are written at test time from
// the bf16 fixtures (tests/data/models).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "core/half.h"
#include "engine/session.h"
#include "format/safetensors.h"
#include "format/safetensors_writer.h"
#include "kernels/cpu/matmul.h"
#include "models/model.h"
#include "support/story_score.h"
#include "support/test_support.h"

namespace pensieve {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

double relative_max_diff(const float* ref, const float* got, int64_t n) {
  const auto [lo, hi] = std::minmax_element(ref, ref + n);
  double d = 0;
  for (int64_t i = 0; i < n; ++i) d = std::max(d, std::abs(static_cast<double>(ref[i]) - got[i]));
  return d / (*hi - *lo);
}

// Worst relative difference over all rows of two [rows x vocab] logit blocks.
double worst_row_diff(const std::vector<float>& ref, const std::vector<float>& got, int64_t vocab) {
  EXPECT_EQ(ref.size(), got.size());
  double d = 0;
  for (size_t r = 0; r + vocab <= std::min(ref.size(), got.size()); r += vocab) {
    d = std::max(d, relative_max_diff(ref.data() + r, got.data() + r, vocab));
  }
  return d;
}

std::vector<int32_t> reference_input(const std::string& fixture) {
  const json ref = test::read_json(test::data_path("reference/" + fixture + ".json"));
  return ref["input_ids"].get<std::vector<int32_t>>();
}

std::vector<float> all_logits(const std::string& dir, const std::vector<int32_t>& tokens,
                              const LoadOptions& options = {.n_threads = 2}) {
  auto model = load_model(dir, options);
  Session s(*model, static_cast<int64_t>(tokens.size()));
  return s.append(tokens, true);
}

float element_as_f32(const TensorView& t, int64_t i) {
  uint16_t h;
  switch (t.dtype) {
    case DType::F32: {
      float f;
      std::memcpy(&f, t.data + 4 * i, 4);
      return f;
    }
    case DType::BF16: std::memcpy(&h, t.data + 2 * i, 2); return bf16_to_f32(h);
    case DType::F16: std::memcpy(&h, t.data + 2 * i, 2); return f16_to_f32(h);
    default: throw std::runtime_error("not a float tensor: " + t.name);
  }
}

void store_float(DType dtype, float v, uint8_t* out) {
  if (dtype == DType::F32) {
    std::memcpy(out, &v, 4);
  } else {
    const uint16_t h = dtype == DType::BF16 ? f32_to_bf16(v) : f32_to_f16(v);
    std::memcpy(out, &h, 2);
  }
}

// How to rewrite a float checkpoint.
struct Rewrite {
  DType float_dtype = DType::BF16;  // every float tensor (and F32 for `dequantized`)
  int bits = 0;                     // MLX affine quantization of 2-D weights; 0 = none
  int group = 64;
  DType scale_dtype = DType::BF16;
  // Quantize, then store the dequantized values (scale * q + bias) as plain
  // F32 weights: the same numbers without the quantized kernels.
  bool dequantized = false;
  int shards = 1;
};

// A 2-D weight quantized the way mlx.core.quantize does: per group of `group`
// inputs, scale = (max - min) / (2^bits - 1) and bias = min, both rounded to
// the scale dtype; q = round((w - bias) / scale).
struct Quantized {
  std::vector<uint32_t> packed;
  std::vector<float> scales, biases, dequantized;
};

Quantized quantize(const TensorView& t, int bits, int group, DType scale_dtype) {
  const int64_t rows = t.dim(0), cols = t.dim(1), groups = cols / group;
  const uint32_t levels = (1u << bits) - 1;
  Quantized q;
  q.packed.assign(rows * cols * bits / 32, 0);
  q.dequantized.resize(rows * cols);
  auto round_to_scale_dtype = [&](float v) {
    uint8_t buf[4];
    store_float(scale_dtype, v, buf);
    if (scale_dtype == DType::F32) return v;
    uint16_t h;
    std::memcpy(&h, buf, 2);
    return scale_dtype == DType::BF16 ? bf16_to_f32(h) : f16_to_f32(h);
  };
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      float lo = INFINITY, hi = -INFINITY;
      for (int64_t c = g * group; c < (g + 1) * group; ++c) {
        lo = std::min(lo, element_as_f32(t, r * cols + c));
        hi = std::max(hi, element_as_f32(t, r * cols + c));
      }
      const float scale = round_to_scale_dtype(std::max(hi - lo, 1e-8f) / static_cast<float>(levels));
      const float bias = round_to_scale_dtype(lo);
      q.scales.push_back(scale);
      q.biases.push_back(bias);
      for (int64_t c = g * group; c < (g + 1) * group; ++c) {
        const float x = (element_as_f32(t, r * cols + c) - bias) / scale;
        const uint32_t v = static_cast<uint32_t>(std::clamp(std::nearbyint(x), 0.0f, static_cast<float>(levels)));
        const int64_t i = r * cols + c;
        q.packed[i * bits / 32] |= v << ((i % (32 / bits)) * bits);
        q.dequantized[i] = scale * static_cast<float>(v) + bias;
      }
    }
  }
  return q;
}

// Writes `from` (a float checkpoint) into `to` as `how` says.
void rewrite_model(const std::string& from, const std::string& to, const Rewrite& how) {
  fs::create_directories(to);
  json cfg = test::read_json(from + "/config.json");
  cfg.erase("quantization");
  cfg.erase("quantization_config");
  if (how.bits != 0 && !how.dequantized) cfg["quantization"] = {{"group_size", how.group}, {"bits", how.bits}};
  test::write_file(to + "/config.json", cfg.dump(2));
  fs::copy_file(from + "/generation_config.json", to + "/generation_config.json");

  const TensorStore store = TensorStore::open_dir(from);
  struct Out {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::shared_ptr<std::vector<uint8_t>> bytes;
  };
  std::vector<Out> out;
  auto add_floats = [&](const std::string& name, DType dtype, std::vector<int64_t> shape,
                        const std::vector<float>& values) {
    auto bytes = std::make_shared<std::vector<uint8_t>>(values.size() * dtype_size(dtype));
    for (size_t i = 0; i < values.size(); ++i) store_float(dtype, values[i], bytes->data() + i * dtype_size(dtype));
    out.push_back({name, dtype, std::move(shape), bytes});
  };
  for (const std::string& name : store.names()) {
    const TensorView& t = store.get(name);
    const bool matrix = t.shape.size() == 2 && name.ends_with(".weight");
    if (how.bits != 0 && matrix && t.dim(1) % how.group == 0) {
      const Quantized q = quantize(t, how.bits, how.group, how.scale_dtype);
      if (how.dequantized) {
        add_floats(name, DType::F32, t.shape, q.dequantized);
        continue;
      }
      auto packed = std::make_shared<std::vector<uint8_t>>(q.packed.size() * 4);
      std::memcpy(packed->data(), q.packed.data(), packed->size());
      const std::string module = name.substr(0, name.size() - std::string(".weight").size());
      out.push_back({name, DType::U32, {t.dim(0), t.dim(1) * how.bits / 32}, packed});
      add_floats(module + ".scales", how.scale_dtype, {t.dim(0), t.dim(1) / how.group}, q.scales);
      add_floats(module + ".biases", how.scale_dtype, {t.dim(0), t.dim(1) / how.group}, q.biases);
      continue;
    }
    std::vector<float> values(t.n_elements());
    for (int64_t i = 0; i < t.n_elements(); ++i) values[i] = element_as_f32(t, i);
    add_floats(name, how.dequantized ? DType::F32 : how.float_dtype, t.shape, values);
  }

  json index;
  index["weight_map"] = json::object();
  for (int shard = 0; shard < how.shards; ++shard) {
    const std::string file = how.shards == 1 ? "model.safetensors"
                                             : fmt::format("model-{:05d}-of-{:05d}.safetensors", shard + 1, how.shards);
    SafetensorsWriter w;
    for (size_t i = shard; i < out.size(); i += how.shards) {  // interleaved: shards need not be contiguous
      auto bytes = out[i].bytes;
      w.add(out[i].name, out[i].dtype, out[i].shape,
            [bytes](uint8_t* buf, size_t n, size_t off) { std::memcpy(buf, bytes->data() + off, n); });
      index["weight_map"][out[i].name] = file;
    }
    w.write(to + "/" + file);
  }
  if (how.shards > 1) test::write_file(to + "/model.safetensors.index.json", index.dump(2));
}

// ---------------------------------------------------------------------------
// F32, F16 and sharded checkpoints hold the bf16 fixture's numbers.

TEST(FloatFormats, F32AndF16CheckpointsGiveTheBf16Logits) {
  for (const char* fixture : {"llama3-tiny", "qwen2-tiny"}) {
    const std::string src = test::data_path(std::string("models/") + fixture);
    const auto input = reference_input(fixture);
    const auto expected = all_logits(src, input);
    const int64_t vocab = static_cast<int64_t>(expected.size() / input.size());
    for (DType dtype : {DType::F32, DType::F16}) {
      test::TempDir dir;
      rewrite_model(src, dir.path(), {.float_dtype = dtype});
      auto model = load_model(dir.path(), {2});
      EXPECT_EQ(model->info().weight_format, dtype == DType::F32 ? "f32" : "f16");
      // bf16 values are exact in f32 and (at these magnitudes) in f16; only
      // the kernels' rounding differs.
      EXPECT_LT(worst_row_diff(expected, all_logits(dir.path(), input), vocab), 1e-4)
          << fixture << " as " << dtype_name(dtype);
    }
  }
}

TEST(Sharded, ShardsListedByTheIndexLoadAsOneModel) {
  const std::string src = test::data_path("models/phi3-tiny");
  const auto input = reference_input("phi3-tiny");
  test::TempDir dir;
  rewrite_model(src, dir.path(), {.shards = 3});
  ASSERT_TRUE(fs::exists(dir.file("model-00003-of-00003.safetensors")));
  ASSERT_FALSE(fs::exists(dir.file("model.safetensors")));
  EXPECT_EQ(all_logits(dir.path(), input), all_logits(src, input)) << "same bytes, same numbers";
}

// A shard the index names but the directory lacks: one line naming it, exit 1.
TEST(Sharded, MissingShardIsNamed) {
  test::TempDir dir;
  rewrite_model(test::data_path("models/qwen3-tiny"), dir.path(), {.shards = 3});
  fs::remove(dir.file("model-00002-of-00003.safetensors"));
  const auto r = test::run_pensieve("logits --model " + dir.path() + " --tokens 1,2,3");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find("model-00002-of-00003.safetensors"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("model.safetensors.index.json"), std::string::npos) << r.err;

  // An index whose weight_map is not an object is named too.
  test::write_file(dir.file("model.safetensors.index.json"), R"({"weight_map": []})");
  const auto r2 = test::run_pensieve("logits --model " + dir.path() + " --tokens 1,2,3");
  EXPECT_EQ(r2.exit_code, 1);
  EXPECT_NE(r2.err.find("model.safetensors.index.json: missing key 'weight_map'"), std::string::npos) << r2.err;
}

// ---------------------------------------------------------------------------
// MLX affine quantization end to end: every bits/group combination gives the
// numbers of the same dequantized weights run as F32, and stays close to the
// unquantized model.

struct QuantCase {
  std::string fixture;
  int bits, group;
  DType scale_dtype;
  double max_diff_to_source;  // how far quantization may move the logits
};
void PrintTo(const QuantCase& c, std::ostream* os) {
  *os << c.fixture << " " << c.bits << "-bit group " << c.group << " " << dtype_name(c.scale_dtype) << " scales";
}

class Quantization : public ::testing::TestWithParam<QuantCase> {};

TEST_P(Quantization, QuantizedKernelsComputeTheDequantizedModel) {
  const QuantCase& c = GetParam();
  const std::string src = test::data_path("models/" + c.fixture);
  const auto input = reference_input(c.fixture);
  test::TempDir quant, dequant;
  const Rewrite how{.bits = c.bits, .group = c.group, .scale_dtype = c.scale_dtype};
  rewrite_model(src, quant.path(), how);
  Rewrite as_f32 = how;
  as_f32.dequantized = true;
  rewrite_model(src, dequant.path(), as_f32);

  auto model = load_model(quant.path(), {2});
  EXPECT_EQ(model->info().weight_format,
            fmt::format("mlx-affine-{}bit (group {})", c.bits, c.group));
  EXPECT_TRUE(model->config().quant.quantized());
  const auto dequantized = all_logits(dequant.path(), input);
  const auto source = all_logits(src, input);
  const int64_t vocab = model->config().vocab_size;
  // Two int8 activation levels: 2e-4, the integer kernels' activations carry
  // ~1e-5 relative error, and these random tiny models amplify any change a
  // few hundred times (a 1-ulp change to silu moves qwen3-tiny's logits by
  // 5e-5 of their range).
  kernels::set_int8_activation_levels(2);
  const auto two_levels = all_logits(quant.path(), input);
  EXPECT_LT(worst_row_diff(dequantized, two_levels, vocab), 2e-4);
  // One level (the default): int8 rounding of the activations, amplified
  // alike; 1 % as for the fixtures (golden_test.cc). Without the integer
  // kernels (no VNNI) the same 2e-4.
  kernels::set_int8_activation_levels(1);
  const auto quantized = all_logits(quant.path(), input);
  EXPECT_LT(worst_row_diff(dequantized, quantized, vocab), kernels::integer_kernels_enabled() ? 1e-2 : 2e-4);
  // What quantizing the weights did, apart from the activations' rounding.
  const double to_source = worst_row_diff(source, two_levels, vocab);
  EXPECT_LT(to_source, c.max_diff_to_source);
  EXPECT_GT(to_source, 0.0) << "the weights really were quantized";
}

INSTANTIATE_TEST_SUITE_P(
    BitsAndGroups, Quantization,
    ::testing::Values(QuantCase{"qwen3-tiny", 8, 32, DType::BF16, 0.01},
                      QuantCase{"llama3-tiny", 8, 64, DType::BF16, 0.01},
                      // qwen2-tiny's MLP width 320 is no multiple of 128: down_proj stays bf16.
                      QuantCase{"qwen2-tiny", 8, 128, DType::F16, 0.01},
                      QuantCase{"phi3-tiny", 4, 32, DType::BF16, 0.3},
                      QuantCase{"qwen3-tiny", 4, 128, DType::F16, 0.3}),
    [](const auto& info) {
      return info.param.fixture.substr(0, info.param.fixture.find('-')) + "_" +
             std::to_string(info.param.bits) + "bit_group" + std::to_string(info.param.group) +
             "_" + dtype_name(info.param.scale_dtype) + "_scales";
    });

// ---------------------------------------------------------------------------
// A trained model quantized to MLX 4-bit (stories260K, group 64; its 172-wide
// down_proj stays f32): what one int8 activation level (the default) does to
// it, against the f32 kernels (PENSIEVE_PRECISE=1) on the same weights.
// The random fixtures only bound the logits; this is the drift a user would
// see: the mean log-likelihood of the f32 model's greedy story (llama2.c's,
// 200 tokens from BOS) and the greedy story the 4-bit model writes itself.
// The numbers are in docs/benchmarks.md.

using test::StoryScore;
StoryScore score_story(const std::string& dir, const std::vector<int32_t>& story) {
  return test::score_story(dir, story, {.n_threads = 2});
}

TEST(Stories260KFourBit, OneInt8LevelDriftsLessThanHalfAPercent) {
  const std::string src = test::data_path("../../models/stories260K");
  const json ref = test::read_json(src + "/greedy-reference.json");
  std::vector<int32_t> story = ref["prompt_ids"].get<std::vector<int32_t>>();
  for (int32_t id : ref["greedy_ids"]) story.push_back(id);
  ASSERT_EQ(story.size(), 201u);
  test::TempDir quant;
  rewrite_model(src, quant.path(), {.float_dtype = DType::F32, .bits = 4, .group = 64});

  kernels::set_integer_kernels(false);
  const StoryScore precise = score_story(quant.path(), story);
  kernels::set_integer_kernels(true);
  kernels::set_int8_activation_levels(2);
  const StoryScore two = score_story(quant.path(), story);
  kernels::set_int8_activation_levels(1);
  const StoryScore one = score_story(quant.path(), story);
  const StoryScore original = score_story(src, story);

  auto agreeing = [&](const StoryScore& a) {  // leading greedy tokens equal to the precise path's
    size_t n = 0;
    while (n < a.greedy.size() && n < precise.greedy.size() && a.greedy[n] == precise.greedy[n]) ++n;
    return n;
  };
  auto drift = [&](const StoryScore& a) {
    return std::abs(a.mean_log_likelihood - precise.mean_log_likelihood) / std::abs(precise.mean_log_likelihood);
  };
  std::printf("[ stories260K 4-bit ] mean log-likelihood of the reference story: f32 model %.5f, "
              "4-bit f32 kernels %.5f, one int8 level %.5f (%.3f %% apart), two levels %.5f (%.4f %%)\n",
              original.mean_log_likelihood, precise.mean_log_likelihood, one.mean_log_likelihood,
              100 * drift(one), two.mean_log_likelihood, 100 * drift(two));
  std::printf("[ stories260K 4-bit ] greedy tokens from BOS equal to the f32 kernels' before the first "
              "difference: one level %zu of %zu, two levels %zu\n",
              agreeing(one), precise.greedy.size(), agreeing(two));
  if (!kernels::integer_kernels_enabled()) GTEST_SKIP() << "no integer kernels on this CPU: all paths are f32";
  EXPECT_LT(drift(one), 5e-3);
  EXPECT_LT(drift(two), 1e-3);
  EXPECT_GT(drift(one), 0.0) << "one level really rounds";
}

// ---------------------------------------------------------------------------
// MistralForCausalLM: Llama's layout; sliding_window null means full attention.

class Mistral : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::copy(src_, dir_.path(), fs::copy_options::recursive | fs::copy_options::overwrite_existing);
    fs::permissions(dir_.file("config.json"), fs::perms::owner_read | fs::perms::owner_write);
  }
  void write_mistral_config(const json& sliding_window) {
    json cfg = test::read_json(src_ + "/config.json");
    cfg["architectures"] = {"MistralForCausalLM"};
    cfg["model_type"] = "mistral";
    cfg["sliding_window"] = sliding_window;
    test::write_file(dir_.file("config.json"), cfg.dump(2));
  }

  const std::string src_ = test::data_path("models/llama3-tiny");
  test::TempDir dir_;
};

TEST_F(Mistral, WithoutAWindowItComputesWhatLlamaDoes) {
  write_mistral_config(nullptr);
  const auto input = reference_input("llama3-tiny");
  auto model = load_model(dir_.path(), {2});
  EXPECT_EQ(model->config().architecture, "MistralForCausalLM");
  EXPECT_EQ(model->config().sliding_window, 0);
  EXPECT_EQ(all_logits(dir_.path(), input), all_logits(src_, input));
}

// With sliding_window W each position attends to the W positions ending at
// its own (transformers: q - kv < W): the first W positions see everything
// they would without a window, later ones lose their oldest keys.
TEST_F(Mistral, SlidingWindowHidesKeysOlderThanTheWindow) {
  constexpr int64_t kWindow = 8;
  write_mistral_config(kWindow);
  std::vector<int32_t> input;
  for (int i = 0; i < 60; ++i) input.push_back((i * 977 + 31) % 3072);
  auto model = load_model(dir_.path(), {2});
  EXPECT_EQ(model->config().sliding_window, kWindow);
  const int64_t vocab = model->config().vocab_size;
  const auto windowed = all_logits(dir_.path(), input);
  const auto full = all_logits(src_, input);
  for (int64_t t = 0; t < static_cast<int64_t>(input.size()); ++t) {
    const double d = relative_max_diff(full.data() + t * vocab, windowed.data() + t * vocab, vocab);
    if (t < kWindow) {
      EXPECT_LT(d, 1e-6) << "position " << t << " is inside the window";
    } else {
      EXPECT_GT(d, 1e-3) << "position " << t << " has lost keys";
    }
  }
  // Through L layers the last token depends only on the last L*(W-1)+1
  // inputs; RoPE sees only distances, so those run alone from position 0 give
  // the same last logits.
  const int64_t reach = model->config().n_layers * (kWindow - 1) + 1;
  const std::vector<int32_t> tail(input.end() - reach, input.end());
  auto alone = all_logits(dir_.path(), tail);
  EXPECT_LT(relative_max_diff(alone.data() + (reach - 1) * vocab,
                              windowed.data() + (input.size() - 1) * vocab, vocab),
            1e-4);
  // ...and one input fewer does not.
  const std::vector<int32_t> shorter(input.end() - reach + 1, input.end());
  auto too_short = all_logits(dir_.path(), shorter);
  EXPECT_GT(relative_max_diff(too_short.data() + (reach - 2) * vocab,
                              windowed.data() + (input.size() - 1) * vocab, vocab),
            1e-3);
  // The CLI reads the same config: its last row is the windowed one.
  std::string tokens;
  for (int32_t id : input) tokens += (tokens.empty() ? "" : ",") + std::to_string(id);
  const auto r = test::run_pensieve("logits --threads 2 --model " + dir_.path() + " --tokens " + tokens);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto cli_row = json::parse(r.out)["logits"][0].get<std::vector<float>>();
  EXPECT_TRUE(std::equal(cli_row.begin(), cli_row.end(), windowed.end() - vocab));
}

}  // namespace
}  // namespace pensieve
