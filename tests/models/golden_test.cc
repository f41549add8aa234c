// Every fixture model against transformers' logits and greedy tokens, on
// every kernel path (scalar reference and SIMD), plus stories260K's 200
// reference tokens and the properties the engine relies on (incremental
// decoding == full forward, batched == unbatched).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "engine/session.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/matmul.h"
#include "models/model.h"
#include "support/test_support.h"

namespace pensieve {
namespace {

using nlohmann::json;

const char* kModels[] = {"phi3-tiny",           "phi3-tiny-mlx-4bit",  "phi3-fullvocab-mlx-4bit",
                         "llama3-tiny",         "llama3-tiny-mlx-4bit", "qwen2-tiny",
                         "qwen2-tiny-mlx-4bit", "qwen3-tiny",           "qwen3-tiny-mlx-4bit"};

std::vector<int32_t> ids_of(const json& j) { return j.get<std::vector<int32_t>>(); }

// How close to transformers a model's logits must be, as a fraction of the
// logit range. MLX weights on a CPU with AVX-512 VNNI take the integer
// kernels, whose activations are int8 in one level by default: that moves
// the logits of these random tiny models by 0.3-0.9 % of their range (they
// amplify any change a few hundred times; llama.cpp's Q8 activations move
// the same models by 0.5-0.9 %), hence the 1 %. With two levels
// (PENSIEVE_INT8_LEVELS=2), f32 kernels and the GPU: 1e-4 measured.
bool one_int8_level(const Model& model) {
  return model.config().quant.quantized() && test::device() == "cpu" &&
         kernels::integer_kernels_enabled() && kernels::int8_activation_levels() == 1;
}
double logit_tolerance(const Model& model) { return one_int8_level(model) ? 1e-2 : 1e-3; }

// The first step of the reference's greedy continuation whose margin (best
// minus second logit) is within twice the logits' error, taken as
// `tolerance` times the range of the last prompt position's logits; the
// continuation's size if none is.
size_t tied_step(const json& ref, double tolerance) {
  const auto last = ref["last_logits"][std::to_string(ref["input_ids"].size() - 1)].get<std::vector<double>>();
  const auto [lo, hi] = std::minmax_element(last.begin(), last.end());
  const auto margins = ref["greedy_margins"].get<std::vector<double>>();
  for (size_t i = 0; i < margins.size(); ++i) {
    if (margins[i] < 2 * tolerance * (*hi - *lo)) return i;
  }
  return margins.size();
}

struct GoldenParam {
  std::string model;
  kernels::Isa isa;
  int int8_levels = 1;  // for MLX weights on the integer kernels (AVX-512 VNNI)
};

class Golden : public ::testing::TestWithParam<GoldenParam> {
 protected:
  void SetUp() override {
    if (static_cast<int>(GetParam().isa) > static_cast<int>(kernels::best_isa())) {
      GTEST_SKIP() << "CPU lacks " << kernels::isa_name(GetParam().isa);
    }
    kernels::set_active_isa(GetParam().isa);
    kernels::set_int8_activation_levels(GetParam().int8_levels);
  }
  void TearDown() override {
    kernels::set_active_isa(kernels::best_isa());
    kernels::set_int8_activation_levels(1);
  }
};

TEST_P(Golden, LogitsAndGreedyTokensMatchTransformers) {
  const std::string name = GetParam().model;
  const json ref = test::read_json(test::data_path("reference/" + name + ".json"));
  auto model = load_model(test::data_path("models/" + name), {.n_threads = 2, .device = test::device()});
  const int64_t vocab = model->config().vocab_size;
  const auto input = ids_of(ref["input_ids"]);
  const double tolerance = logit_tolerance(*model);

  Session session(*model, static_cast<int64_t>(input.size()) + 32);
  const std::vector<float> logits = session.append(input, true);
  ASSERT_EQ(logits.size(), input.size() * vocab);
  for (const auto& [pos, row] : ref["last_logits"].items()) {
    const auto expected = row.get<std::vector<double>>();
    ASSERT_EQ(static_cast<int64_t>(expected.size()), vocab);
    const double d = test::relative_max_diff(expected, logits.data() + std::stoi(pos) * vocab);
    EXPECT_LT(d, tolerance) << name << " position " << pos;
    std::printf("[ fidelity ] %s %s int8 levels %d position %s: %.2e of the logit range\n", name.c_str(),
                kernels::isa_name(GetParam().isa), GetParam().int8_levels, pos.c_str(), d);
  }

  Session gen_session(*model, static_cast<int64_t>(input.size()) + 32);
  SamplingParams greedy;
  greedy.temperature = 0;
  const auto result = generate(gen_session, input, 24, {}, greedy);
  auto expected = ids_of(ref["greedy_continuation"]);
  // A step whose best two logits are closer than the logits' error may pick
  // the other one, and the continuation is another one from there. With
  // one int8 level that happens: phi3-tiny-mlx-4bit's step 11 has a margin
  // of 0.016 (0.2 % of the range), its logits move by up to 0.9 %. The
  // other paths (1e-3) keep all 24 tokens.
  const size_t n = one_int8_level(*model) ? tied_step(ref, tolerance) : expected.size();
  expected.resize(std::min(expected.size(), n));
  ASSERT_GE(result.tokens.size(), expected.size());
  EXPECT_EQ(std::vector<int32_t>(result.tokens.begin(), result.tokens.begin() + expected.size()), expected)
      << name << " (the first " << expected.size() << " tokens; a near tie follows)";
}

std::vector<GoldenParam> all_params() {
  std::vector<GoldenParam> out;
  for (const std::string m : kModels) {
    out.push_back({m, kernels::Isa::scalar});
    out.push_back({m, kernels::Isa::avx2});
    out.push_back({m, kernels::Isa::avx512});
    if (m.ends_with("-mlx-4bit")) out.push_back({m, kernels::Isa::avx512, 2});
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Golden, ::testing::ValuesIn(all_params()),
                         [](const auto& info) {
                           std::string n = info.param.model + "_" + kernels::isa_name(info.param.isa);
                           if (info.param.int8_levels == 2) n += "_int8x2";
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

// Phi-3 past original_max_position_embeddings: the long rope factors apply.
TEST(GoldenLong, Phi3LongContextUsesLongFactors) {
  for (const char* name : {"phi3-tiny", "phi3-tiny-mlx-4bit"}) {
    for (int levels : {1, 2}) {
      kernels::set_int8_activation_levels(levels);
      const json ref = test::read_json(test::data_path(std::string("reference/") + name + ".json"));
      ASSERT_TRUE(ref.contains("long"));
      const auto input = ids_of(ref["long"]["input_ids"]);
      auto model = load_model(test::data_path(std::string("models/") + name), {.n_threads = 2, .device = test::device()});
      Session session(*model, static_cast<int64_t>(input.size()));
      const auto logits = session.append(input, false);
      const auto expected = ref["long"]["last_logits"].get<std::vector<double>>();
      const double d = test::relative_max_diff(expected, logits.data());
      EXPECT_LT(d, logit_tolerance(*model)) << name << " int8 levels " << levels;
      std::printf("[ fidelity ] %s long, int8 levels %d: %.2e of the logit range\n", name, levels, d);
    }
  }
  kernels::set_int8_activation_levels(1);
}

TEST(GoldenStories, GeneratesTheReference200TokensFromBos) {
  const std::string dir = std::string(PENSIEVE_TEST_DATA) + "/../../models/stories260K";
  const json ref = test::read_json(dir + "/greedy-reference.json");
  auto model = load_model(dir, {.n_threads = 2, .device = test::device()});
  Session session(*model, 512);
  SamplingParams greedy;
  greedy.temperature = 0;
  const auto result = generate(session, ids_of(ref["prompt_ids"]), 200,
                               std::vector<int32_t>(model->config().eos_token_ids.begin(),
                                                    model->config().eos_token_ids.end()),
                               greedy);
  EXPECT_EQ(result.tokens, ids_of(ref["greedy_ids"]));
}

// With a sliding window of W, a token sees only the W positions ending at its
// own, layer after layer: through L layers the last token depends on the last
// L*(W-1)+1 inputs and on nothing before. RoPE only encodes relative
// distances, so the last logits of a long sequence equal those of just those
// inputs run from position 0. This holds for a prompt chunk and for
// token-by-token decoding; it is how the bundled model is served (W = its 512
// trained positions).
TEST(GoldenStories, SlidingWindowSeesOnlyTheLastWindowOfTokens) {
  const std::string dir = std::string(PENSIEVE_TEST_DATA) + "/../../models/stories260K";
  constexpr int64_t kWindow = 50;
  auto windowed = load_model(dir, {.n_threads = 2, .sliding_window = kWindow, .device = test::device()});
  auto full = load_model(dir, {.n_threads = 2, .device = test::device()});
  EXPECT_EQ(windowed->config().sliding_window, kWindow);
  EXPECT_EQ(full->config().sliding_window, 0);
  const int64_t vocab = windowed->config().vocab_size;
  const int64_t reach = windowed->config().n_layers * (kWindow - 1) + 1;
  std::vector<int32_t> tokens;
  for (int i = 0; i < 333; ++i) tokens.push_back(3 + (i * 7919 + 13) % static_cast<int>(vocab - 3));
  const std::span<const int32_t> all(tokens);
  ASSERT_LT(reach, static_cast<int64_t>(tokens.size()));

  Session alone(*windowed, reach);
  const auto expected = alone.append(all.last(reach), false);
  const std::vector<double> ref(expected.begin(), expected.end());
  ASSERT_EQ(ref.size(), static_cast<size_t>(vocab));

  // 1e-3: the same inputs at other positions have other K values, whose
  // half-float rounding in the cache differs (3e-4 measured); the controls
  // below sit at 2e-2 and 3e-1.
  Session chunk(*windowed, 400);
  EXPECT_LT(test::relative_max_diff(ref, chunk.append(all, false).data()), 1e-3);
  Session inc(*windowed, 400);
  inc.append(all.first(250), false);
  std::vector<float> got_inc;
  for (size_t i = 250; i < tokens.size(); ++i) got_inc = inc.append(all.subspan(i, 1), false);
  EXPECT_LT(test::relative_max_diff(ref, got_inc.data()), 1e-3);

  // What the comparison can tell apart: only one window of inputs, or no window.
  Session shorter(*windowed, reach);
  EXPECT_GT(test::relative_max_diff(ref, shorter.append(all.last(kWindow), false).data()), 5e-3);
  Session unwindowed(*full, 400);
  EXPECT_GT(test::relative_max_diff(ref, unwindowed.append(all, false).data()), 5e-3);
}

// `generate --sliding-window N` overrides config.json (stories260K has no
// window): a small window changes what a long prompt continues with, 0 is
// the same as none, and a negative window is refused by name.
TEST(GoldenStories, GenerateTakesASlidingWindow) {
  const std::string dir = std::string(PENSIEVE_TEST_DATA) + "/../../models/stories260K";
  const std::string prompt =
      " --prompt 'Once upon a time there was a little girl named Lily. She loved to play in the "
      "park with her dog Max. One day they found a big red ball under a tree.' --max-tokens 16";
  const auto plain = test::run_pensieve("generate --model " + dir + prompt);
  const auto zero = test::run_pensieve("generate --sliding-window 0 --model " + dir + prompt);
  const auto small = test::run_pensieve("generate --sliding-window 4 --model " + dir + prompt);
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  ASSERT_EQ(zero.exit_code, 0) << zero.err;
  ASSERT_EQ(small.exit_code, 0) << small.err;
  EXPECT_EQ(json::parse(zero.out)["tokens"], json::parse(plain.out)["tokens"]);
  EXPECT_NE(json::parse(small.out)["tokens"], json::parse(plain.out)["tokens"]);
  const auto bad = test::run_pensieve("generate --sliding-window -3 --model " + dir + prompt);
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("--sliding-window"), std::string::npos) << bad.err;
}

// `generate --prompt TEXT` tokenizes with the model's tokenizer (BOS added as
// its post-processor says), generates exactly what the same ids give, and
// returns the decoded text of the generated tokens.
TEST(GoldenStories, GenerateTakesATextPrompt) {
  const std::string dir = std::string(PENSIEVE_TEST_DATA) + "/../../models/stories260K";
  const auto ids = test::run_pensieve("tokenize --special --model " + dir + " --text 'Once upon a time'");
  ASSERT_EQ(ids.exit_code, 0) << ids.err;
  std::string list;
  const json encoded = json::parse(ids.out);
  for (int id : encoded["ids"]) list += (list.empty() ? "" : ",") + std::to_string(id);
  EXPECT_EQ(list.substr(0, 2), "1,");  // BOS first
  const auto by_ids = test::run_pensieve("generate --model " + dir + " --tokens " + list + " --max-tokens 20");
  const auto by_text = test::run_pensieve("generate --model " + dir + " --prompt 'Once upon a time' --max-tokens 20");
  ASSERT_EQ(by_ids.exit_code, 0) << by_ids.err;
  ASSERT_EQ(by_text.exit_code, 0) << by_text.err;
  const json a = json::parse(by_ids.out), b = json::parse(by_text.out);
  EXPECT_EQ(a["tokens"], b["tokens"]);
  ASSERT_EQ(b["tokens"].size(), 20u);
  std::string generated;
  for (int id : b["tokens"]) generated += (generated.empty() ? "" : ",") + std::to_string(id);
  const auto decoded = test::run_pensieve("tokenize --model " + dir + " --decode " + generated);
  ASSERT_EQ(decoded.exit_code, 0) << decoded.err;
  EXPECT_EQ(json::parse(decoded.out)["text"], b["text"]);
  EXPECT_NE(b["text"].get<std::string>().find("there was"), std::string::npos) << b["text"];
  const auto both = test::run_pensieve("generate --model " + dir + " --prompt x --tokens 1");
  EXPECT_NE(both.exit_code, 0);
}

// Two of our own paths (gemv and gemm) agree within this on the CPU; the
// CUDA gemm's f16 operands widen it to 1e-3 (still far below the O(1) of a
// wrong K/V entry or block).
double path_tolerance(double cpu) { return test::device() == "cuda" ? 1e-3 : cpu; }

// Decoding token by token through the KV cache gives the full forward's logits.
TEST(Incremental, DecodeMatchesFullForward) {
  for (const int levels : {2, 1})
  for (const char* name : {"qwen3-tiny-mlx-4bit", "phi3-tiny", "llama3-tiny-mlx-4bit"}) {
    kernels::set_int8_activation_levels(levels);
    auto model = load_model(test::data_path(std::string("models/") + name), {.n_threads = 2, .device = test::device()});
    const int64_t vocab = model->config().vocab_size;
    std::vector<int32_t> tokens;
    for (int i = 0; i < 37; ++i) tokens.push_back((i * 7919 + 13) % static_cast<int>(vocab));
    Session full(*model, 64);
    const auto all = full.append(tokens, true);
    Session inc(*model, 64);
    // A prompt chunk, then one token at a time.
    auto first = inc.append(std::span<const int32_t>(tokens).first(5), true);
    std::vector<float> got(first.begin(), first.end());
    for (size_t i = 5; i < tokens.size(); ++i) {
      const auto row = inc.append(std::span<const int32_t>(&tokens[i], 1), false);
      got.insert(got.end(), row.begin(), row.end());
    }
    ASSERT_EQ(got.size(), all.size());
    for (size_t t = 0; t < tokens.size(); ++t) {
      std::vector<double> ref(all.begin() + t * vocab, all.begin() + (t + 1) * vocab);
      // The prompt chunk and the single tokens take the gemv kernels, the full
      // forward the gemm ones: the same integers, summed in another order.
      // These random tiny models amplify such rounding a few hundred times
      // (see model_formats_test.cc); a wrong KV entry moves logits by O(1).
      // On the GPU the gemm rounds its operands to f16 and the gemv does
      // not: 2-4e-4 measured on the H100.
      // With one int8 level a rounding difference upstream can move an
      // activation to the neighbouring int8 step (1/127 of its group's
      // max), so the two paths sit about as far apart as each sits from
      // the exact result (up to 3.8e-3 measured): the 1 % of the fixtures.
      EXPECT_LT(test::relative_max_diff(ref, got.data() + t * vocab),
                one_int8_level(*model) ? 1e-2 : path_tolerance(2e-4))
          << name << " token " << t << " int8 levels " << levels;
    }
  }
  kernels::set_int8_activation_levels(1);
}

// Several sequences of different lengths in one forward call give each one's own results.
TEST(Batched, BatchEqualsOneByOne) {
  auto model = load_model(test::data_path("models/qwen2-tiny-mlx-4bit"), {.n_threads = 2, .device = test::device()});
  const int64_t vocab = model->config().vocab_size;
  model->allocate_kv(64);
  std::vector<std::vector<int32_t>> prompts;
  for (int s = 0; s < 4; ++s) {
    std::vector<int32_t> p;
    for (int i = 0; i < 3 + 9 * s; ++i) p.push_back((s * 131 + i * 17) % static_cast<int>(vocab));
    prompts.push_back(p);
  }
  // Alone: each sequence in its own blocks.
  std::vector<std::vector<float>> alone;
  std::vector<std::vector<int32_t>> tables;
  int32_t next_block = 0;
  for (const auto& p : prompts) {
    std::vector<int32_t> table;
    for (size_t i = 0; i < (p.size() + 15) / 16; ++i) table.push_back(next_block++);
    tables.push_back(table);
    ForwardSeq fs{p, tables.back().data(), 0, false};
    std::vector<float> out;
    model->forward(std::span<const ForwardSeq>(&fs, 1), &out);
    alone.push_back(out);
  }
  // Together, in fresh blocks.
  std::vector<ForwardSeq> batch;
  std::vector<std::vector<int32_t>> tables2;
  for (const auto& p : prompts) {
    std::vector<int32_t> table;
    for (size_t i = 0; i < (p.size() + 15) / 16; ++i) table.push_back(next_block++);
    tables2.push_back(table);
  }
  for (size_t s = 0; s < prompts.size(); ++s) batch.push_back({prompts[s], tables2[s].data(), 0, false});
  std::vector<float> together;
  model->forward(batch, &together);
  ASSERT_EQ(together.size(), prompts.size() * vocab);
  for (size_t s = 0; s < prompts.size(); ++s) {
    std::vector<double> ref(alone[s].begin(), alone[s].end());
    EXPECT_LT(test::relative_max_diff(ref, together.data() + s * vocab), path_tolerance(1e-4)) << "sequence " << s;
  }
}

}  // namespace
}  // namespace pensieve
