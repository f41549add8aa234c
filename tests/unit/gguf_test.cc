// GGUF: every block type's dequantization bit for bit against per-element
// formulas written from the format's description, the loader's repacking
// into affine groups exact against them in float64, and the reader's errors
// on damaged files (one line naming the file and the problem, never a crash).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "core/error.h"
#include "core/half.h"
#include "engine/session.h"
#include "format/gguf.h"
#include "format/gguf_writer.h"
#include "models/gguf_model.h"
#include "models/model.h"
#include "quant/weight_matrix.h"
#include "support/test_support.h"

namespace pensieve {
namespace {

const GgmlType kBlockTypes[] = {GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1,
                                GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K};

float half_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

// Random block bytes whose f16 fields are finite numbers of a weight's size.
std::vector<uint8_t> random_blocks(GgmlType t, int n_blocks, std::mt19937& rng) {
  std::vector<uint8_t> b(ggml_block_bytes(t) * static_cast<size_t>(n_blocks));
  std::uniform_int_distribution<int> byte(0, 255);
  for (auto& v : b) v = static_cast<uint8_t>(byte(rng));
  std::uniform_real_distribution<float> u(-0.05f, 0.05f);
  auto put = [&](size_t at, float v) {
    const uint16_t h = f32_to_f16(v);
    std::memcpy(&b[at], &h, 2);
  };
  for (int k = 0; k < n_blocks; ++k) {
    const size_t o = ggml_block_bytes(t) * static_cast<size_t>(k);
    switch (t) {
      case GgmlType::Q4_1:
      case GgmlType::Q5_1:
      case GgmlType::Q4_K:
      case GgmlType::Q5_K: put(o, u(rng)), put(o + 2, u(rng)); break;
      case GgmlType::Q6_K: put(o + 208, u(rng)); break;
      default: put(o, u(rng)); break;
    }
  }
  return b;
}

// Element i of one block, from the format's description, one element at a
// time; `exact` evaluates in float64 (the true value), else in the f32
// operations ggml's dequantization performs.
double element(GgmlType t, const uint8_t* p, int i, bool exact) {
  auto mul = [&](double a, double b) { return exact ? a * b : static_cast<double>(static_cast<float>(a) * static_cast<float>(b)); };
  auto add = [&](double a, double b) { return exact ? a + b : static_cast<double>(static_cast<float>(a) + static_cast<float>(b)); };
  switch (t) {
    case GgmlType::Q4_0:
    case GgmlType::Q4_1:
    case GgmlType::Q5_0:
    case GgmlType::Q5_1: {
      const bool has_min = t == GgmlType::Q4_1 || t == GgmlType::Q5_1;
      const bool five = t == GgmlType::Q5_0 || t == GgmlType::Q5_1;
      const double d = half_at(p), m = has_min ? half_at(p + 2) : 0;
      const uint8_t* qs = p + (has_min ? 4 : 2) + (five ? 4 : 0);
      // Elements 0-15 are the low nibbles of bytes 0-15, 16-31 the high ones.
      int q = i < 16 ? qs[i] & 15 : qs[i - 16] >> 4;
      if (five) {
        uint32_t qh;
        std::memcpy(&qh, p + (has_min ? 4 : 2), 4);
        q |= static_cast<int>((qh >> i) & 1) << 4;  // bit i of qh is element i's fifth bit
      }
      if (has_min) return add(mul(q, d), m);
      return mul(q - (five ? 16 : 8), d);
    }
    case GgmlType::Q8_0: return mul(static_cast<int8_t>(p[2 + i]), half_at(p));
    case GgmlType::Q4_K:
    case GgmlType::Q5_K: {
      const bool five = t == GgmlType::Q5_K;
      const double d = half_at(p), dmin = half_at(p + 2);
      const uint8_t* s = p + 4;
      const int sb = i / 32;  // sub-block of 32; sub-blocks 2c and 2c+1 share 32 bytes
      int sc, mn;
      if (sb < 4) {
        sc = s[sb] & 63;
        mn = s[sb + 4] & 63;
      } else {
        sc = (s[sb + 4] & 15) | ((s[sb - 4] >> 6) << 4);
        mn = (s[sb + 4] >> 4) | ((s[sb] >> 6) << 4);
      }
      const uint8_t* qs = p + (five ? 48 : 16);
      const int byte = 32 * (sb / 2) + i % 32;
      int q = sb % 2 == 0 ? qs[byte] & 15 : qs[byte] >> 4;
      if (five) q += ((p[16 + i % 32] >> sb) & 1) * 16;
      return add(mul(mul(d, sc), q), -mul(dmin, mn));
    }
    case GgmlType::Q6_K: {
      const uint8_t* ql = p;
      const uint8_t* qh = p + 128;
      const int8_t* sc = reinterpret_cast<const int8_t*>(p + 192);
      const double d = half_at(p + 208);
      const int h = i / 128, k = i % 128, l = k % 32, quarter = k / 32;
      const uint8_t lo = ql[64 * h + l + (quarter % 2) * 32];
      const int q = ((quarter < 2 ? lo & 15 : lo >> 4) | (((qh[32 * h + l] >> (2 * quarter)) & 3) << 4)) - 32;
      return mul(mul(d, sc[8 * h + l / 16 + 2 * quarter]), q);
    }
    default: return 0;
  }
}

TEST(GgmlTypes, DequantizationMatchesTheFormatBitForBit) {
  std::mt19937 rng(7);
  for (GgmlType t : kBlockTypes) {
    const int n_blocks = 5;
    const auto blocks = random_blocks(t, n_blocks, rng);
    const int64_t per = ggml_block_elements(t), n = per * n_blocks;
    std::vector<float> got(static_cast<size_t>(n));
    ggml_dequantize_row(t, blocks.data(), n, got.data());
    for (int64_t i = 0; i < n; ++i) {
      const float want = static_cast<float>(element(t, blocks.data() + (i / per) * ggml_block_bytes(t), static_cast<int>(i % per), false));
      ASSERT_EQ(got[i], want) << ggml_type_name(t) << " element " << i;
    }
  }
}

TEST(GgmlTypes, RepackingIntoAffineGroupsIsExact) {
  std::mt19937 rng(11);
  for (GgmlType t : kBlockTypes) {
    const int per = static_cast<int>(ggml_block_elements(t));
    const int group = t == GgmlType::Q6_K ? 16 : 32;
    for (int k = 0; k < 50; ++k) {
      const auto block = random_blocks(t, 1, rng);
      std::vector<uint8_t> q(per);
      std::vector<float> s(per / group), b(per / group);
      ggml_block_codes(t, block.data(), q.data(), s.data(), b.data());
      for (int i = 0; i < per; ++i) {
        const double exact = element(t, block.data(), i, true);
        const double repacked = static_cast<double>(s[i / group]) * q[i] + static_cast<double>(b[i / group]);
        ASSERT_EQ(repacked, exact) << ggml_type_name(t) << " element " << i;
        ASSERT_LT(q[i], t == GgmlType::Q4_0 || t == GgmlType::Q4_1 || t == GgmlType::Q4_K ? 16 : 256);
      }
    }
  }
}

// What the loader keeps of a K-quant block's scales (k4/k6 records) decodes
// to the same scale and bias, bit for bit, as the exact repacking.
TEST(GgmlTypes, KScaleRecordsDecodeToTheExactScales) {
  std::mt19937 rng(13);
  for (GgmlType t : {GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K}) {
    const bool k6 = t == GgmlType::Q6_K;
    const int group = k6 ? 16 : 32, n_groups = 256 / group;
    const auto blocks = random_blocks(t, 3, rng);
    std::vector<uint8_t> records;
    for (int k = 0; k < 3; ++k) {
      std::vector<uint8_t> rec(k6 ? kK6RecordBytes : kK4RecordBytes);
      gguf_k_record(t, blocks.data() + k * ggml_block_bytes(t), rec.data());
      records.insert(records.end(), rec.begin(), rec.end());
    }
    WeightMatrix w;
    w.format = k6 || t == GgmlType::Q5_K ? WeightFormat::affine8 : WeightFormat::affine4;
    w.rows = 1;
    w.cols = 3 * 256;
    w.group_size = group;
    w.scale_type = k6 ? ScaleType::k6 : ScaleType::k4;
    w.scales = records.data();
    std::vector<float> sc(3 * n_groups), bi(3 * n_groups);
    decode_k_scales(w, 0, sc.data(), bi.data());
    for (int k = 0; k < 3; ++k) {
      std::vector<uint8_t> q(256);
      std::vector<float> s(n_groups), b(n_groups);
      ggml_block_codes(t, blocks.data() + k * ggml_block_bytes(t), q.data(), s.data(), b.data());
      for (int g = 0; g < n_groups; ++g) {
        ASSERT_EQ(sc[k * n_groups + g], s[g]) << ggml_type_name(t) << " block " << k << " group " << g;
        ASSERT_EQ(bi[k * n_groups + g], b[g]) << ggml_type_name(t) << " block " << k << " group " << g;
        ASSERT_EQ(w.scale(0, k * n_groups + g), s[g]);
        ASSERT_EQ(w.bias(0, k * n_groups + g), b[g]);
      }
    }
  }
}

// A small valid file: metadata of each kind and two tensors.
std::vector<uint8_t> small_file(const test::TempDir& dir) {
  GgufWriter w;
  w.set("general.architecture", std::string("llama"));
  w.set("general.alignment", uint32_t{32});
  w.set("some.count", uint32_t{7});
  w.set("some.scale", 0.5f);
  w.set("some.tokens", std::vector<std::string>{"a", "bb", "ccc"});
  w.set("some.scores", std::vector<float>{1.f, 2.f, 3.f});
  w.add("a.weight", GgmlType::Q8_0, {64, 3}, [](uint8_t* buf, size_t n, size_t) { std::memset(buf, 1, n); });
  w.add("b.weight", GgmlType::F32, {5}, [](uint8_t* buf, size_t n, size_t) { std::memset(buf, 0, n); });
  const std::string path = dir.file("small.gguf");
  w.write(path);
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

std::string error_of(const std::vector<uint8_t>& bytes) {
  try {
    GgufFile f(bytes.data(), bytes.size(), "bad.gguf");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(GgufReader, ReadsMetadataAndTensors) {
  test::TempDir dir;
  const auto bytes = small_file(dir);
  GgufFile f(bytes.data(), bytes.size(), "small.gguf");
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.need_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_int("some.count"), 7);
  EXPECT_EQ(f.get_double("some.scale"), 0.5);
  const GgufValue* toks = f.get_array("tokenizer.none", true);
  EXPECT_EQ(toks, nullptr);
  toks = f.get_array("some.tokens", true);
  ASSERT_NE(toks, nullptr);
  ASSERT_EQ(toks->strs.size(), 3u);
  EXPECT_EQ(toks->strs[2], "ccc");
  EXPECT_EQ(f.get_array("some.scores", false)->number_at(1), 2.0);
  ASSERT_EQ(f.tensors().size(), 2u);
  const GgufTensor* a = f.tensor("a.weight");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->type, GgmlType::Q8_0);
  EXPECT_EQ(a->rows(), 3);
  EXPECT_EQ(a->cols(), 64);
  EXPECT_EQ(a->n_bytes, 3u * 2 * 34);
  EXPECT_EQ(a->data[0], 1);
  // Wrong types are named.
  EXPECT_THROW(f.get_string("some.count"), Error);
  EXPECT_THROW(f.get_int("some.scale"), Error);
  EXPECT_THROW(f.get_array("some.scores", true), Error);
}

TEST(GgufReader, DamagedFilesGetOneClearError) {
  test::TempDir dir;
  const auto good = small_file(dir);
  auto expect_error = [](std::vector<uint8_t> bytes, const std::string& what) {
    const std::string e = error_of(bytes);
    EXPECT_NE(e.find("bad.gguf"), std::string::npos) << e;
    EXPECT_NE(e.find(what), std::string::npos) << "expected '" << what << "' in: " << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  };
  auto bytes = good;
  std::memcpy(bytes.data(), "GGML", 4);
  expect_error(bytes, "not a GGUF file");
  bytes = good;
  bytes[4] = 1;
  expect_error(bytes, "version 1");
  bytes = good;
  bytes[4] = 9;
  expect_error(bytes, "version 9");
  // Every truncation is an error, never a read past the end (ASan checks),
  // up to the last tensor's last byte (the writer pads the file after it).
  size_t end = 0;
  {
    GgufFile f(good.data(), good.size(), "good.gguf");
    for (const GgufTensor& t : f.tensors()) end = std::max(end, static_cast<size_t>(t.data - good.data()) + t.n_bytes);
  }
  ASSERT_GT(end, 600u);
  for (size_t n = 0; n < end; ++n) {
    const std::string e = error_of(std::vector<uint8_t>(good.begin(), good.begin() + static_cast<long>(n)));
    EXPECT_FALSE(e.empty()) << "a file cut at " << n << " of " << good.size() << " bytes was accepted";
  }
  // The tensor table: find a.weight's type and offset fields by its name.
  const std::string name = "a.weight";
  const auto at = std::search(good.begin(), good.end(), name.begin(), name.end()) - good.begin();
  const size_t type_at = static_cast<size_t>(at) + name.size() + 4 + 2 * 8;  // n_dims, ne[0..1]
  bytes = good;
  bytes[type_at] = 16;  // IQ2_XXS
  expect_error(bytes, "IQ2_XXS");
  bytes = good;
  bytes[type_at + 4 + 5] = 0x10;  // offset 2^40: past the end
  expect_error(bytes, "past the end");
  bytes = good;
  bytes[type_at + 4] = 3;  // offset 3: not aligned
  expect_error(bytes, "alignment");
  bytes = good;
  bytes[static_cast<size_t>(at) + name.size()] = 9;  // nine dimensions
  expect_error(bytes, "dimensions");
}

// A model file missing a tensor, or whose vocabulary disagrees with its
// embedding, is refused naming the file and the problem.
TEST(GgufModel, MissingTensorsAndWrongVocabularyAreNamed) {
  test::TempDir dir;
  auto write = [&](bool drop_ffn, int n_tokens) {
    GgufWriter w;
    w.set("general.architecture", std::string("llama"));
    w.set("llama.block_count", uint32_t{1});
    w.set("llama.embedding_length", uint32_t{64});
    w.set("llama.feed_forward_length", uint32_t{128});
    w.set("llama.attention.head_count", uint32_t{2});
    std::vector<std::string> toks;
    for (int i = 0; i < n_tokens; ++i) toks.push_back("t" + std::to_string(i));
    w.set("tokenizer.ggml.tokens", toks);
    auto zero = [](uint8_t* buf, size_t n, size_t) { std::memset(buf, 0, n); };
    w.add("token_embd.weight", GgmlType::F16, {64, 40}, zero);
    w.add("output_norm.weight", GgmlType::F32, {64}, zero);
    w.add("blk.0.attn_norm.weight", GgmlType::F32, {64}, zero);
    w.add("blk.0.ffn_norm.weight", GgmlType::F32, {64}, zero);
    for (const char* n : {"attn_q", "attn_k", "attn_v", "attn_output"})
      w.add(std::string("blk.0.") + n + ".weight", GgmlType::Q8_0, {64, 64}, zero);
    w.add("blk.0.ffn_gate.weight", GgmlType::Q4_0, {64, 128}, zero);
    w.add("blk.0.ffn_up.weight", GgmlType::Q4_0, {64, 128}, zero);
    if (!drop_ffn) w.add("blk.0.ffn_down.weight", GgmlType::Q4_0, {128, 64}, zero);
    const std::string path = dir.file(std::string(drop_ffn ? "missing" : "ok") + std::to_string(n_tokens) + ".gguf");
    w.write(path);
    return path;
  };
  const std::string ok = write(false, 40);
  EXPECT_NO_THROW(load_model(ok, {.n_threads = 1}));
  auto message = [](const std::string& path) {
    try {
      load_model(path, {.n_threads = 1});
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  const std::string missing = write(true, 40);
  EXPECT_NE(message(missing).find("missing tensor 'blk.0.ffn_down.weight'"), std::string::npos) << message(missing);
  EXPECT_NE(message(missing).find(missing), std::string::npos);
  const std::string vocab = write(false, 41);
  EXPECT_NE(message(vocab).find("tokenizer.ggml.tokens has 41 entries"), std::string::npos) << message(vocab);
}

}  // namespace
}  // namespace pensieve

namespace pensieve {
namespace {

// stories260K's file re-written as NAME-0000K-of-00002.gguf (the metadata in
// the first part, the tensors shared out): it loads from its first part, or
// its folder, with the same logits; a later part, a missing part, and a
// folder of two models are refused by name.
TEST(GgufModel, SplitFilesLoadFromTheFirstPart) {
  const std::string original = test::data_path("gguf/stories260K-F16.gguf");
  const GgufFile src(original);
  test::TempDir dir;
  GgufWriter parts[2];
  for (const auto& [key, v] : src.metadata()) {
    GgufWriter::Value value;
    switch (v.type) {
      case GgufValueType::string: value = std::string(v.str); break;
      case GgufValueType::f32: value = static_cast<float>(v.as_double()); break;
      case GgufValueType::boolean: value = v.as_int() != 0; break;
      case GgufValueType::i8: case GgufValueType::i16: case GgufValueType::i32: value = static_cast<int32_t>(v.as_int()); break;
      case GgufValueType::array:
        if (v.elem == GgufValueType::string) {
          value = std::vector<std::string>(v.strs.begin(), v.strs.end());
        } else if (v.elem == GgufValueType::f32) {
          std::vector<float> f;
          for (uint64_t i = 0; i < v.count; ++i) f.push_back(static_cast<float>(v.number_at(i)));
          value = f;
        } else {
          std::vector<int32_t> n;
          for (uint64_t i = 0; i < v.count; ++i) n.push_back(static_cast<int32_t>(v.number_at(i)));
          value = n;
        }
        break;
      default: value = static_cast<uint32_t>(v.as_int()); break;
    }
    parts[0].set(key, value);
  }
  for (GgufWriter& p : parts) p.set("split.count", uint32_t{2});
  const auto& tensors = src.tensors();
  for (size_t i = 0; i < tensors.size(); ++i) {
    const GgufTensor* t = &tensors[i];
    parts[i < tensors.size() / 2 ? 0 : 1].add(t->name, t->type, t->ne, [t](uint8_t* buf, size_t n, size_t off) {
      std::memcpy(buf, t->data + off, n);
    });
  }
  parts[0].write(dir.file("story-00001-of-00002.gguf"));
  parts[1].write(dir.file("story-00002-of-00002.gguf"));

  EXPECT_EQ(find_gguf(dir.path()), dir.file("story-00001-of-00002.gguf"));
  EXPECT_EQ(gguf_split_files(dir.file("story-00001-of-00002.gguf")).size(), 2u);
  const std::vector<int32_t> tokens = {1, 403, 407, 261, 378};
  auto logits = [&](const std::string& path) {
    auto model = load_model(path, {.n_threads = 1});
    Session s(*model, 16);
    return s.append(tokens, true);
  };
  EXPECT_EQ(logits(dir.path()), logits(original));
  EXPECT_NE(test::error_of([&] { find_gguf(dir.file("story-00002-of-00002.gguf")); (void)gguf_split_files(dir.file("story-00002-of-00002.gguf")); })
                .find("part 2 of 2"),
            std::string::npos);
  std::filesystem::rename(dir.file("story-00002-of-00002.gguf"), dir.file("elsewhere.bin"));
  EXPECT_NE(test::error_of([&] { load_model(dir.path(), {.n_threads = 1}); }).find("part 2 of this split GGUF model"),
            std::string::npos);
  std::filesystem::copy_file(original, dir.file("other.gguf"));
  const std::string two = test::error_of([&] { find_gguf(dir.path()); });
  EXPECT_NE(two.find("holds 2 GGUF models"), std::string::npos) << two;
  EXPECT_NE(two.find("other.gguf"), std::string::npos) << two;
}

}  // namespace
}  // namespace pensieve
