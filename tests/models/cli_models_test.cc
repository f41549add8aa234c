// The inspection commands as scripts use them: `pensieve logits` and
// `pensieve generate` run as the built binary on the fixture models (against
// transformers' numbers) and on models no test has seen before (small
// synthetic models of every family, other seeds and sizes, written by
// `pensieve synth-model` at test time) against the library in-process; and
// `pensieve bench --json` on one of those.
#include <gtest/gtest.h>
#include <httplib.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <regex>
#include <set>
#include <sstream>

#include "engine/session.h"
#include "kernels/cpu/matmul.h"
#include "models/model.h"
#include "support/test_support.h"

namespace pensieve {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// max |a - b| relative to the range of the reference row.
double relative_max_diff(const std::vector<double>& ref, const std::vector<double>& got) {
  EXPECT_EQ(ref.size(), got.size());
  const auto [lo, hi] = std::minmax_element(ref.begin(), ref.end());
  double d = 0;
  for (size_t i = 0; i < ref.size() && i < got.size(); ++i) d = std::max(d, std::abs(ref[i] - got[i]));
  return d / (*hi - *lo);
}

std::string id_list(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += (s.empty() ? "" : ",") + std::to_string(id);
  return s;
}

// Runs the binary; on success returns stdout parsed as JSON.
json run_json(const std::string& args) {
  const auto r = test::run_pensieve(args);
  EXPECT_EQ(r.exit_code, 0) << args << "\n" << r.err;
  if (r.exit_code != 0) return json();
  EXPECT_EQ(r.err, "") << args;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << "one JSON line";
  return json::parse(r.out);
}

// ---------------------------------------------------------------------------
// Fixture models against transformers (tests/data/reference).

class CliFixture : public ::testing::TestWithParam<const char*> {
 protected:
  std::string model_dir() const { return test::data_path(std::string("models/") + GetParam()); }
  json reference() const {
    return test::read_json(test::data_path(std::string("reference/") + GetParam() + ".json"));
  }
  // The binary runs with the default settings: MLX weights take one int8
  // activation level where the CPU has AVX-512 VNNI (1 % of the logit
  // range; golden_test.cc says why), everything else 1e-3.
  double tolerance() const {
    const bool quantized = std::string(GetParam()).ends_with("-mlx-4bit");
    return quantized && kernels::integer_kernels_enabled() && kernels::int8_activation_levels() == 1 ? 1e-2 : 1e-3;
  }
};

TEST_P(CliFixture, LogitsAtTheStoredPositionsMatchTransformers) {
  const json ref = reference();
  const auto input = ref["input_ids"].get<std::vector<int32_t>>();
  std::vector<std::string> keys;
  std::string positions;
  for (const auto& [pos, row] : ref["last_logits"].items()) {
    keys.push_back(pos);
    positions += (positions.empty() ? "" : ",") + pos;
  }
  ASSERT_GE(keys.size(), 2u);
  const json out = run_json("logits --threads 2 --model " + model_dir() + " --tokens " +
                            id_list(input) + " --positions " + positions);
  ASSERT_EQ(out["positions"].size(), keys.size());
  ASSERT_EQ(out["logits"].size(), keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    EXPECT_EQ(out["positions"][i].get<int>(), std::stoi(keys[i]));
    const auto expected = ref["last_logits"][keys[i]].get<std::vector<double>>();
    const auto got = out["logits"][i].get<std::vector<double>>();
    ASSERT_EQ(got.size(), expected.size()) << "a full-vocabulary row";
    EXPECT_LT(relative_max_diff(expected, got), tolerance()) << GetParam() << " position " << keys[i];
  }
}

TEST_P(CliFixture, GreedyGenerationPrintsTheReferenceContinuation) {
  const json ref = reference();
  const auto input = ref["input_ids"].get<std::vector<int32_t>>();
  auto expected = ref["greedy_continuation"].get<std::vector<int32_t>>();
  ASSERT_EQ(expected.size(), 24u);
  const json out = run_json("generate --threads 2 --model " + model_dir() + " --tokens " +
                            id_list(input) + " --max-tokens 24 --temperature 0");
  auto got = out["tokens"].get<std::vector<int32_t>>();
  ASSERT_EQ(got.size(), 24u);
  // Up to the first near tie of the reference (golden_test.cc): with one
  // int8 level phi3-tiny-mlx-4bit's step 11 (margin 0.2 % of the range) may
  // go the other way.
  const auto last = ref["last_logits"][std::to_string(input.size() - 1)].get<std::vector<double>>();
  const auto [lo, hi] = std::minmax_element(last.begin(), last.end());
  const auto margins = ref["greedy_margins"].get<std::vector<double>>();
  size_t n = 0;
  const bool one_level = tolerance() > 1e-3;  // the others keep all 24
  while (n < margins.size() && (!one_level || margins[n] >= 2 * tolerance() * (*hi - *lo))) ++n;
  expected.resize(n);
  got.resize(n);
  EXPECT_EQ(got, expected) << GetParam() << " (the first " << n << " tokens)";
  EXPECT_EQ(out["stop_reason"], "max_tokens");
  EXPECT_FALSE(out.contains("text")) << "token ids in, token ids out";
}

// `all` is every position in order and `last` the final one, with the same
// numbers as when the positions are listed.
TEST_P(CliFixture, PositionsAllAndLastAgreeWithListedPositions) {
  const json ref = reference();
  const auto input = ref["input_ids"].get<std::vector<int32_t>>();
  const int n = static_cast<int>(input.size());
  const std::string base = "logits --threads 2 --model " + model_dir() + " --tokens " + id_list(input);
  const json all = run_json(base + " --positions all");
  const json last = run_json(base + " --positions last");
  const json listed = run_json(base + " --positions " + std::to_string(n - 1) + ",0,1");
  const json by_default = run_json(base);
  ASSERT_EQ(all["logits"].size(), static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) EXPECT_EQ(all["positions"][i].get<int>(), i);
  EXPECT_EQ(last["positions"], json::array({n - 1}));
  EXPECT_EQ(by_default, last) << "last is the default";
  EXPECT_EQ(listed["positions"], json::array({n - 1, 0, 1})) << "in the order asked";
  EXPECT_EQ(last["logits"][0], all["logits"][n - 1]);
  EXPECT_EQ(listed["logits"][0], all["logits"][n - 1]);
  EXPECT_EQ(listed["logits"][1], all["logits"][0]);
  EXPECT_EQ(listed["logits"][2], all["logits"][1]);
  // And they are the reference's logits, so the rows are not just consistent but right.
  const auto expected = ref["last_logits"][std::to_string(n - 1)].get<std::vector<double>>();
  EXPECT_LT(relative_max_diff(expected, last["logits"][0].get<std::vector<double>>()), tolerance());
}

TEST_P(CliFixture, PositionPastTheEndIsAnError) {
  const json ref = reference();
  const auto input = ref["input_ids"].get<std::vector<int32_t>>();
  const int n = static_cast<int>(input.size());
  const auto r = test::run_pensieve("logits --model " + model_dir() + " --tokens " + id_list(input) +
                                    " --positions 0," + std::to_string(n));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find("--positions: " + std::to_string(n) + " is past the last token (index " +
                       std::to_string(n - 1) + ")"),
            std::string::npos)
      << r.err;
}

// bf16 and MLX 4-bit of every family; golden_test.cc covers all of them in-process.
INSTANTIATE_TEST_SUITE_P(Fixtures, CliFixture,
                         ::testing::Values("phi3-tiny", "phi3-tiny-mlx-4bit", "llama3-tiny",
                                           "qwen2-tiny-mlx-4bit", "qwen3-tiny-mlx-4bit"),
                         [](const auto& info) {
                           std::string n = info.param;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

// ---------------------------------------------------------------------------
// Models no test has seen: synth-model writes small random models of each
// family; the CLI must compute what the library computes in-process.

struct SynthCase {
  std::string name;        // test name
  std::string synth_args;  // after `synth-model`
};
void PrintTo(const SynthCase& c, std::ostream* os) { *os << c.synth_args; }

// Index of the largest logit in row; ties go to the first, as the sampler does.
int32_t argmax(const float* row, int64_t n) {
  return static_cast<int32_t>(std::max_element(row, row + n) - row);
}

class CliSynthetic : public ::testing::TestWithParam<SynthCase> {
 protected:
  void SetUp() override {
    const auto r = test::run_pensieve("synth-model " + GetParam().synth_args + " " + dir_.path());
    ASSERT_EQ(r.exit_code, 0) << r.err;
    model_ = load_model(dir_.path(), {2});
    vocab_ = model_->config().vocab_size;
    for (int i = 0; i < 19; ++i) prompt_.push_back((i * 131 + 7) % static_cast<int32_t>(vocab_));
  }
  // How far incremental decoding and a full forward may be apart, as a
  // fraction of the logit range (see IncrementalDecodingEqualsTheFullForward).
  double rounding(bool integer) const {
    if (!integer || !model_->config().quant.quantized()) return 1e-4;
    return kernels::int8_activation_levels() == 1 ? 5e-2 : 1e-3;
  }
  // One in-process forward over tokens, logits for every position.
  std::vector<float> full_forward(const std::vector<int32_t>& tokens) {
    Session s(*model_, static_cast<int64_t>(tokens.size()));
    return s.append(tokens, true);
  }

  test::TempDir dir_;
  std::unique_ptr<Model> model_;
  int64_t vocab_ = 0;
  std::vector<int32_t> prompt_;
};

TEST_P(CliSynthetic, LogitsCommandEqualsTheInProcessForward) {
  const json out = run_json("logits --threads 2 --positions all --model " + dir_.path() +
                            " --tokens " + id_list(prompt_));
  const std::vector<float> expected = full_forward(prompt_);
  ASSERT_EQ(out["logits"].size(), prompt_.size());
  for (size_t t = 0; t < prompt_.size(); ++t) {
    const auto got = out["logits"][t].get<std::vector<float>>();
    ASSERT_EQ(static_cast<int64_t>(got.size()), vocab_);
    // The CLI prints each float exactly (shortest round trip), so the same
    // arithmetic gives the same numbers.
    EXPECT_TRUE(std::equal(got.begin(), got.end(), expected.begin() + t * vocab_))
        << GetParam().name << " position " << t;
  }
}

// Greedy generation is the argmax chain: each generated token is the argmax
// of a full forward over the prompt and the tokens generated before it.
TEST_P(CliSynthetic, GreedyTokensAreTheArgmaxChainOfTheLogits) {
  constexpr int kNew = 8;
  const json out = run_json("generate --threads 2 --temperature 0 --max-tokens " +
                            std::to_string(kNew) + " --model " + dir_.path() + " --tokens " +
                            id_list(prompt_));
  const auto generated = out["tokens"].get<std::vector<int32_t>>();
  ASSERT_EQ(generated.size(), static_cast<size_t>(kNew)) << "eos ids are outside the small vocabulary";
  std::vector<int32_t> all = prompt_;
  all.insert(all.end(), generated.begin(), generated.end() - 1);
  const std::vector<float> logits = full_forward(all);
  for (int i = 0; i < kNew; ++i) {
    const float* row = logits.data() + (prompt_.size() - 1 + i) * vocab_;
    const int32_t best = argmax(row, vocab_);
    if (generated[i] == best) continue;
    // Incremental and full forwards may round differently (see below): a
    // different token is only acceptable when it ties the best within that rounding.
    const auto [lo, hi] = std::minmax_element(row, row + vocab_);
    const double r = model_->config().quant.quantized() ? rounding(kernels::integer_kernels_enabled()) : 1e-5;
    EXPECT_LT(row[best] - row[generated[i]], r * (*hi - *lo))
        << GetParam().name << " step " << i << ": generated " << generated[i] << ", argmax " << best;
  }
  // The chain is not trivially constant: random models move between tokens.
  EXPECT_GT(std::set<int32_t>(generated.begin(), generated.end()).size(), 1u) << GetParam().name;
}

// Decoding token by token through the KV cache gives the full forward's
// logits: to the cache's half-float rounding with f32 kernels (a K or V a few
// f32 ulps apart between the two paths can round to neighbouring halves:
// up to 4e-5 of the range measured), and within the int8 activation rounding
// where MLX weights take the integer (VNNI) kernels: 1e-3 with two levels;
// with one, such a difference can move an activation a whole int8 step, so
// the two paths are about as far apart as each is from the f32 kernels,
// which on these random models is up to 2.8e-2 (llama_mlx8; two levels:
// 4e-4; they amplify changes more than the fixtures do).
TEST_P(CliSynthetic, IncrementalDecodingEqualsTheFullForward) {
  const bool saved = kernels::integer_kernels_enabled();
  for (const int mode : {0, 2, 1}) {  // f32 kernels, then int8 activations in 2 levels and in 1
    const bool integer = mode != 0;
    kernels::set_integer_kernels(integer);
    kernels::set_int8_activation_levels(integer ? mode : 1);
    const double tolerance = rounding(integer);
    const std::vector<float> expected = full_forward(prompt_);
    Session inc(*model_, static_cast<int64_t>(prompt_.size()));
    const std::span<const int32_t> tokens(prompt_);
    std::vector<float> got = inc.append(tokens.first(4), true);
    for (size_t i = 4; i < prompt_.size(); ++i) {
      const auto row = inc.append(tokens.subspan(i, 1), false);
      got.insert(got.end(), row.begin(), row.end());
    }
    ASSERT_EQ(got.size(), expected.size());
    for (size_t t = 0; t < prompt_.size(); ++t) {
      const std::vector<double> ref(expected.begin() + t * vocab_, expected.begin() + (t + 1) * vocab_);
      const std::vector<double> row(got.begin() + t * vocab_, got.begin() + (t + 1) * vocab_);
      EXPECT_LT(relative_max_diff(ref, row), tolerance)
          << GetParam().name << " token " << t << (integer ? " (integer kernels, int8 levels " : " (f32 kernels")
          << (integer ? std::to_string(mode) : "") << ")";
    }
  }
  kernels::set_integer_kernels(saved);
  kernels::set_int8_activation_levels(1);
}

const std::string kTiny = " --layers 2 --vocab 384";

INSTANTIATE_TEST_SUITE_P(
    Families, CliSynthetic,
    ::testing::Values(
        SynthCase{"phi3_bf16", "--like phi-3-mini --format bf16 --seed 7" + kTiny +
                                   " --hidden 64 --intermediate 96 --heads 4 --kv-heads 4 --head-dim 16"},
        SynthCase{"phi3_mlx4_group32", "--like phi-3-mini --format mlx-4bit --group-size 32 --seed 8" + kTiny +
                                           " --hidden 64 --intermediate 128 --heads 2 --kv-heads 2 --head-dim 32"},
        SynthCase{"llama_bf16_sharded", "--like llama-3.2-1b --format bf16 --seed 3 --shards 3" + kTiny +
                                            " --hidden 96 --intermediate 160 --heads 6 --kv-heads 2 --head-dim 16"},
        SynthCase{"llama_mlx8", "--like llama-3.2-1b --format mlx-8bit --seed 4" + kTiny +
                                    " --hidden 128 --intermediate 256 --heads 4 --kv-heads 1 --head-dim 32"},
        SynthCase{"qwen2_mlx4", "--like qwen2.5-0.5b --format mlx-4bit --seed 5" + kTiny +
                                    " --hidden 64 --intermediate 192 --heads 4 --kv-heads 2 --head-dim 16"},
        SynthCase{"qwen2_f16", "--like qwen2.5-0.5b --format f16 --seed 6" + kTiny +
                                   " --hidden 80 --intermediate 144 --heads 5 --kv-heads 1 --head-dim 16"},
        SynthCase{"qwen3_bf16", "--like qwen3-0.6b --format bf16 --seed 9" + kTiny +
                                    " --hidden 64 --intermediate 128 --heads 4 --kv-heads 2 --head-dim 32"},
        SynthCase{"qwen3_mlx4_group128", "--like qwen3-0.6b --format mlx-4bit --group-size 128 --seed 10" + kTiny +
                                             " --hidden 128 --intermediate 256 --heads 2 --kv-heads 1 --head-dim 64"}),
    [](const auto& info) { return info.param.name; });

// The overrides really shape the model, and the shards are real shards.
TEST(SynthModel, WritesTheRequestedShapesAndShards) {
  test::TempDir dir;
  const auto r = test::run_pensieve(
      "synth-model --like qwen3-0.6b --format mlx-8bit --group-size 32 --seed 2 --layers 3 --vocab 320 "
      "--hidden 96 --intermediate 160 --heads 3 --kv-heads 1 --head-dim 32 --shards 2 " + dir.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json cfg = test::read_json(dir.file("config.json"));
  EXPECT_EQ(cfg["architectures"][0], "Qwen3ForCausalLM");
  EXPECT_EQ(cfg["num_hidden_layers"], 3);
  EXPECT_EQ(cfg["vocab_size"], 320);
  EXPECT_EQ(cfg["hidden_size"], 96);
  EXPECT_EQ(cfg["intermediate_size"], 160);
  EXPECT_EQ(cfg["num_attention_heads"], 3);
  EXPECT_EQ(cfg["num_key_value_heads"], 1);
  EXPECT_EQ(cfg["head_dim"], 32);
  EXPECT_EQ(cfg["quantization"], json({{"group_size", 32}, {"bits", 8}}));
  EXPECT_FALSE(fs::exists(dir.file("model.safetensors")));
  const json index = test::read_json(dir.file("model.safetensors.index.json"));
  std::set<std::string> shards;
  for (const auto& [tensor, file] : index["weight_map"].items()) shards.insert(file.get<std::string>());
  EXPECT_EQ(shards, (std::set<std::string>{"model-00001-of-00002.safetensors",
                                           "model-00002-of-00002.safetensors"}));
  EXPECT_TRUE(index["weight_map"].contains("model.layers.2.self_attn.k_norm.weight"));
  auto model = load_model(dir.path(), {1});
  EXPECT_EQ(model->info().weight_format, "mlx-affine-8bit (group 32)");

  // Shapes that cannot be quantized or split are refused by option name.
  const auto bad_group = test::run_pensieve("synth-model --like qwen3-0.6b --format mlx-4bit --group-size 128 "
                                            "--hidden 96 --layers 1 --vocab 256 " + dir.file("bad1"));
  EXPECT_EQ(bad_group.exit_code, 1);
  EXPECT_NE(bad_group.err.find("hidden size 96 is not a multiple of --group-size 128"), std::string::npos)
      << bad_group.err;
  const auto bad_heads = test::run_pensieve("synth-model --like llama-3.2-1b --format bf16 --heads 6 --kv-heads 4 " + dir.file("bad2"));
  EXPECT_EQ(bad_heads.exit_code, 1);
  EXPECT_NE(bad_heads.err.find("--heads (6) must be a multiple of --kv-heads (4)"), std::string::npos)
      << bad_heads.err;
}

// synth-model takes no silent defaults for what to imitate, and with
// --tokenizer writes a folder serve can load (without one, it says so).
TEST(SynthModel, NeedsLikeAndFormatAndServesWithATokenizer) {
  test::TempDir dir;
  auto r = test::run_pensieve("synth-model " + dir.file("a"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--like is required"), std::string::npos) << r.err;
  r = test::run_pensieve("synth-model --like llama-3.2-1b " + dir.file("a"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--format is required"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir.file("a")));

  const std::string tiny = "--like llama-3.2-1b --format mlx-4bit --seed 5 --layers 1 --vocab 512 "
                           "--hidden 64 --intermediate 128 --heads 2 --kv-heads 2 --head-dim 32 ";
  const std::string tokenizer = test::data_path("tokenizers/tok512");
  // Without a tokenizer: a note, and serve refuses the folder.
  r = test::run_pensieve("synth-model " + tiny + dir.file("bare"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("has no tokenizer"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--tokenizer DIR"), std::string::npos) << r.err;
  EXPECT_NE(test::run_pensieve("serve --port 0 --model " + dir.file("bare")).err.find("tokenizer"),
            std::string::npos);
  // A tokenizer with more tokens than the model has rows is refused.
  r = test::run_pensieve("synth-model " + std::string(tiny).replace(tiny.find("--vocab 512"), 11, "--vocab 256") +
                         "--tokenizer " + tokenizer + " " + dir.file("small"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("has 512 tokens, more than the model's vocabulary of 256"), std::string::npos)
      << r.err;
  // With one: the tokenizer files are copied and the model serves.
  r = test::run_pensieve("synth-model " + tiny + "--tokenizer " + tokenizer + " " + dir.file("served"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    EXPECT_EQ(test::read_file(dir.file("served/") + f), test::read_file(tokenizer + "/" + f)) << f;
  test::ServeProcess serve({"--model", dir.file("served"), "--port", "0", "--ctx-size", "256"});
  ASSERT_TRUE(serve.wait_ready()) << serve.err();
  httplib::Client client("127.0.0.1", serve.port());
  auto answer = client.Post("/v1/messages",
                            R"({"model":"claude-m","max_tokens":4,"messages":[{"role":"user","content":"hi"}]})",
                            "application/json");
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->status, 200) << answer->body;
  EXPECT_EQ(serve.stop(), 0) << serve.err();
}

// ---------------------------------------------------------------------------
// pensieve bench --json on a tiny synthetic model.

TEST(BenchJson, PrintsEveryFieldWithSaneValues) {
  test::TempDir dir;
  const auto synth = test::run_pensieve("synth-model --like phi-3-mini --format mlx-4bit --seed 11 --layers 2 "
                                        "--vocab 512 --hidden 128 --intermediate 256 --heads 4 --kv-heads 4 "
                                        "--head-dim 32 " + dir.path());
  ASSERT_EQ(synth.exit_code, 0) << synth.err;
  const int64_t file_bytes = static_cast<int64_t>(fs::file_size(dir.file("model.safetensors")));
  for (int threads : {1, 2}) {
    const bool mmap = threads == 2;  // both ways of holding the weights
    const json b = run_json("bench --json --prompt-tokens 16 --gen-tokens 4 --threads " +
                            std::to_string(threads) + (mmap ? " --mmap" : "") + " --model " + dir.path());
    EXPECT_EQ(b["weights"], mmap ? "mapped" : "copied");
    for (const char* key : {"load_s", "prefill_tok_s", "decode_tok_s", "peak_rss_bytes", "threads",
                            "prompt_tokens", "gen_tokens"}) {
      ASSERT_TRUE(b.contains(key) && b[key].is_number()) << key << " in " << b.dump();
    }
    EXPECT_EQ(b["threads"], threads);
    EXPECT_EQ(b["prompt_tokens"], 16);
    EXPECT_EQ(b["gen_tokens"], 4);
    EXPECT_EQ(b["architecture"], "Phi3ForCausalLM");
    EXPECT_EQ(b["model_file_bytes"], file_bytes);
    EXPECT_GE(b["load_s"].get<double>(), 0.0);
    EXPECT_LT(b["load_s"].get<double>(), 30.0);
    EXPECT_GT(b["prefill_tok_s"].get<double>(), 0.0);
    EXPECT_GT(b["decode_tok_s"].get<double>(), 0.0);
    // The weights are prefaulted, so they are resident; a tiny model needs far less than a GiB more.
    EXPECT_GT(b["peak_rss_bytes"].get<int64_t>(), file_bytes);
    EXPECT_LT(b["peak_rss_bytes"].get<int64_t>(), file_bytes + (int64_t{1} << 30));
    // GPU memory: none on the CPU; on a GPU at least the uploaded weights.
    if (b["device"] == "cpu") EXPECT_EQ(b["device_memory_bytes"], 0);
    else EXPECT_GT(b["device_memory_bytes"].get<int64_t>(), file_bytes / 2);
    // The prefill kernel it names is the one this CPU picks (same binary, same environment).
    EXPECT_EQ(b["prefill_kernel"], kernels::prefill_kernel_name());
  }
  const auto bad = test::run_pensieve("bench --json --prompt-tokens 0 --model " + dir.path());
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("--prompt-tokens"), std::string::npos) << bad.err;
}

// generate prints what the README says it prints: its row in the commands
// table names every key of the output.
TEST(GenerateCommand, OutputKeysAreTheOnesTheReadmeNames) {
  const std::string model = test::data_path("../../models/stories260K");
  const json out = run_json("generate --threads 1 --max-tokens 4 --temperature 0 --model " + model +
                            " --prompt 'Once upon a time'");
  std::string row;
  std::istringstream readme(test::read_file(test::data_path("../../README.md")));
  for (std::string line; std::getline(readme, line);)
    if (line.rfind("| `pensieve generate", 0) == 0) row = line;
  ASSERT_FALSE(row.empty()) << "no generate row in the README's commands table";
  ASSERT_EQ(out.size(), 3u) << out.dump();
  for (const auto& [key, value] : out.items())
    EXPECT_NE(row.find("\"" + key + "\""), std::string::npos) << key << " is not in: " << row;
}

// The text report of a tiny float model: its parameter count is not
// "0.00B", and the prefill kernel named is the float one the weights take
// (the VNNI and AMX kernels are for quantized weights only).
TEST(BenchText, NamesTheParameterCountAndTheKernelOfFloatWeights) {
  test::TempDir dir;
  const auto synth = test::run_pensieve("synth-model --like llama-3.2-1b --format f32 --seed 3 --layers 1 "
                                        "--vocab 512 --hidden 64 --intermediate 128 --heads 2 --kv-heads 2 "
                                        "--head-dim 32 " + dir.path());
  ASSERT_EQ(synth.exit_code, 0) << synth.err;
  kernels::set_integer_kernels(false);
  const std::string float_kernel = kernels::prefill_kernel_name();
  kernels::set_integer_kernels(true);
  const auto text = test::run_pensieve("bench --prompt-tokens 16 --gen-tokens 2 --threads 1 --model " +
                                       dir.path());
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("(LlamaForCausalLM, f32, "), std::string::npos) << text.out;
  EXPECT_EQ(text.out.find("0.00B params"), std::string::npos) << text.out;
  EXPECT_TRUE(std::regex_search(text.out, std::regex(R"(, \d+\.\dK params\))"))) << text.out;
  EXPECT_NE(text.out.find("prefill kernel " + float_kernel + ")"), std::string::npos) << text.out;
  const json b = run_json("bench --json --prompt-tokens 16 --gen-tokens 2 --threads 1 --model " + dir.path());
  EXPECT_EQ(b["prefill_kernel"], float_kernel);
  EXPECT_NE(b["prefill_kernel"], "avx512-vnni");
  EXPECT_NE(b["prefill_kernel"], "amx-int8");
}

// Splitting the work over threads changes nothing in the numbers.
TEST(Threads, OneAndTwoThreadsGiveIdenticalLogits) {
  test::TempDir dir;
  const auto synth = test::run_pensieve("synth-model --like llama-3.2-1b --format mlx-4bit --seed 12 --layers 2 "
                                        "--vocab 512 --hidden 128 --intermediate 384 --heads 4 --kv-heads 2 "
                                        "--head-dim 32 " + dir.path());
  ASSERT_EQ(synth.exit_code, 0) << synth.err;
  std::string tokens;
  for (int i = 0; i < 37; ++i) tokens += (tokens.empty() ? "" : ",") + std::to_string((i * 97 + 3) % 512);
  const std::string args = " --positions all --model " + dir.path() + " --tokens " + tokens;
  const auto one = test::run_pensieve("logits --threads 1" + args);
  const auto two = test::run_pensieve("logits --threads 2" + args);
  ASSERT_EQ(one.exit_code, 0) << one.err;
  ASSERT_EQ(two.exit_code, 0) << two.err;
  EXPECT_GT(one.out.size(), 37u * 512u);
  EXPECT_TRUE(one.out == two.out) << "logits differ between 1 and 2 threads";
  for (const char* fixture : {"phi3-tiny", "qwen2-tiny"}) {
    const std::string fargs = " --positions all --model " + test::data_path(std::string("models/") + fixture) +
                              " --tokens " + tokens;
    const auto f1 = test::run_pensieve("logits --threads 1" + fargs);
    const auto f2 = test::run_pensieve("logits --threads 2" + fargs);
    ASSERT_EQ(f1.exit_code, 0) << f1.err;
    EXPECT_TRUE(f1.out == f2.out) << fixture << ": logits differ between 1 and 2 threads";
  }
}

}  // namespace
}  // namespace pensieve
