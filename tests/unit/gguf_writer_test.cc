// The GGUF writer (format/gguf_writer.h) and `synth-model --format gguf-*`:
// the file is read back here with a reader written from the GGUF
// specification (header, typed key/values, tensor descriptions, 32-byte
// aligned data), independently of the writer's code.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <algorithm>
#include <map>
#include <tuple>
#include <variant>

#include "core/error.h"
#include "core/half.h"
#include "format/gguf_writer.h"
#include "models/synthetic.h"
#include "support/test_support.h"

namespace pensieve {
namespace {

struct ReadTensor {
  std::vector<uint64_t> ne;
  uint32_t type = 0;
  uint64_t offset = 0;
};
struct ReadFile {
  uint32_t version = 0;
  std::map<std::string, std::string> strings;
  std::map<std::string, uint64_t> numbers;  // u32 / i32 / bool
  std::map<std::string, float> floats;
  std::map<std::string, uint64_t> array_sizes;
  std::map<std::string, std::vector<std::string>> string_arrays;
  std::vector<std::pair<std::string, ReadTensor>> tensors;
  uint64_t data_start = 0;
  std::string bytes;
};

ReadFile read_gguf(const std::string& path) {
  ReadFile r;
  r.bytes = test::read_file(path);
  size_t o = 0;
  auto take = [&](void* out, size_t n) {
    if (o + n > r.bytes.size()) throw std::runtime_error("truncated");
    std::memcpy(out, r.bytes.data() + o, n);
    o += n;
  };
  auto u32 = [&] { uint32_t v; take(&v, 4); return v; };
  auto u64 = [&] { uint64_t v; take(&v, 8); return v; };
  auto str = [&] {
    const uint64_t n = u64();
    std::string s(n, '\0');
    take(s.data(), n);
    return s;
  };
  char magic[4];
  take(magic, 4);
  EXPECT_EQ(std::string(magic, 4), "GGUF");
  r.version = u32();
  const uint64_t n_tensors = u64(), n_kv = u64();
  for (uint64_t i = 0; i < n_kv; ++i) {
    const std::string key = str();
    const uint32_t type = u32();
    switch (type) {
      case 4: r.numbers[key] = u32(); break;
      case 5: r.numbers[key] = u32(); break;
      case 6: { float f; take(&f, 4); r.floats[key] = f; break; }
      case 7: { uint8_t b; take(&b, 1); r.numbers[key] = b; break; }
      case 8: r.strings[key] = str(); break;
      case 9: {
        const uint32_t at = u32();
        const uint64_t n = u64();
        r.array_sizes[key] = n;
        for (uint64_t k = 0; k < n; ++k) {
          if (at == 8) r.string_arrays[key].push_back(str());
          else if (at == 4 || at == 5 || at == 6) u32();
          else throw std::runtime_error("array type " + std::to_string(at));
        }
        break;
      }
      default: throw std::runtime_error("value type " + std::to_string(type));
    }
  }
  for (uint64_t i = 0; i < n_tensors; ++i) {
    std::string name = str();
    ReadTensor t;
    const uint32_t nd = u32();
    for (uint32_t d = 0; d < nd; ++d) t.ne.push_back(u64());
    t.type = u32();
    t.offset = u64();
    r.tensors.emplace_back(std::move(name), t);
  }
  r.data_start = (o + 31) / 32 * 32;
  return r;
}

TEST(GgufWriter, WritesKeyValuesTensorsAndAlignedData) {
  test::TempDir dir;
  GgufWriter w;
  w.set("general.architecture", std::string("llama"));
  w.set("llama.block_count", uint32_t{3});
  w.set("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  w.set("tokenizer.ggml.tokens", std::vector<std::string>{"<unk>", "a", "bc"});
  w.set("tokenizer.ggml.scores", std::vector<float>{0.f, -1.f, -2.f});
  // 5 f32 (20 bytes: the next tensor is padded to 32), then a 64x3 Q8_0 (3 rows of 2 blocks of 34 bytes).
  w.add("norm.weight", GgmlType::F32, {5}, [](uint8_t* buf, size_t n, size_t off) {
    for (size_t i = 0; i < n; ++i) buf[i] = static_cast<uint8_t>(off + i);
  });
  w.add("blk.0.w.weight", GgmlType::Q8_0, {64, 3}, [](uint8_t* buf, size_t n, size_t off) {
    for (size_t i = 0; i < n; ++i) buf[i] = static_cast<uint8_t>(200 - (off + i) % 100);
  });
  const std::string path = dir.file("t.gguf");
  const size_t written = w.write(path);
  const ReadFile r = read_gguf(path);
  EXPECT_EQ(r.bytes.size(), written);
  EXPECT_EQ(r.version, 3u);
  EXPECT_EQ(r.strings.at("general.architecture"), "llama");
  EXPECT_EQ(r.numbers.at("llama.block_count"), 3u);
  EXPECT_FLOAT_EQ(r.floats.at("llama.attention.layer_norm_rms_epsilon"), 1e-5f);
  EXPECT_EQ(r.string_arrays.at("tokenizer.ggml.tokens"), (std::vector<std::string>{"<unk>", "a", "bc"}));
  EXPECT_EQ(r.array_sizes.at("tokenizer.ggml.scores"), 3u);
  ASSERT_EQ(r.tensors.size(), 2u);
  EXPECT_EQ(r.tensors[0].first, "norm.weight");
  EXPECT_EQ(r.tensors[0].second.ne, std::vector<uint64_t>{5});
  EXPECT_EQ(r.tensors[0].second.offset, 0u);
  EXPECT_EQ(r.tensors[1].second.type, 8u);
  EXPECT_EQ(r.tensors[1].second.ne, (std::vector<uint64_t>{64, 3}));
  EXPECT_EQ(r.tensors[1].second.offset, 32u) << "aligned to 32";
  EXPECT_EQ(r.data_start % 32, 0u);
  // The bytes are where the offsets say, each tensor's fill in order.
  for (size_t i = 0; i < 20; ++i) EXPECT_EQ(static_cast<uint8_t>(r.bytes[r.data_start + i]), i);
  for (size_t i = 0; i < 3 * 68; ++i)
    EXPECT_EQ(static_cast<uint8_t>(r.bytes[r.data_start + 32 + i]), 200 - i % 100) << i;
  EXPECT_EQ(written, r.data_start + 32 + (3 * 68 + 31) / 32 * 32);
  // A row that is not whole blocks is refused.
  EXPECT_NE(test::error_of([&] { w.add("bad", GgmlType::Q4_0, {48, 2}, nullptr); }).find("not whole blocks"),
            std::string::npos);
}

// A small Phi-3 of the synthetic family as Q4_0: llama.cpp's tensor names
// and shapes, every matrix Q4_0 (18 bytes a 32-value block, d in [range/8
// ± 25 %]), norms and rope factors F32, a vocabulary of the model's size.
TEST(GgufWriter, SynthModelWritesAPhi3InLlamaCppsLayout) {
  test::TempDir dir;
  SynthOptions o;
  o.like = "phi-3-mini";
  o.format = "gguf-q4_0";
  o.n_layers = 2;
  o.vocab_size = 400;
  o.hidden_size = 64;
  o.intermediate_size = 128;
  o.n_heads = 4;
  o.n_kv_heads = 4;
  o.head_dim = 16;
  const size_t bytes = write_synthetic_model(dir.path(), o);
  const ReadFile r = read_gguf(dir.file("model-q4_0.gguf"));
  EXPECT_EQ(r.bytes.size(), bytes);
  EXPECT_EQ(r.strings.at("general.architecture"), "phi3");
  EXPECT_EQ(r.numbers.at("general.file_type"), 2u);
  EXPECT_EQ(r.numbers.at("phi3.block_count"), 2u);
  EXPECT_EQ(r.numbers.at("phi3.embedding_length"), 64u);
  EXPECT_EQ(r.numbers.at("phi3.rope.dimension_count"), 16u);
  EXPECT_EQ(r.array_sizes.at("tokenizer.ggml.tokens"), 400u);
  EXPECT_EQ(r.string_arrays.at("tokenizer.ggml.tokens")[3], "<0x00>");
  std::map<std::string, ReadTensor> by_name(r.tensors.begin(), r.tensors.end());
  EXPECT_EQ(by_name.size(), 2u + 2u + 2u * 6u + 1u) << "embeddings, rope factors, 6 per layer, norm, output";
  const ReadTensor& qkv = by_name.at("blk.1.attn_qkv.weight");
  EXPECT_EQ(qkv.type, 2u);
  EXPECT_EQ(qkv.ne, (std::vector<uint64_t>{64, 3 * 64}));
  EXPECT_EQ(by_name.at("blk.0.ffn_up.weight").ne, (std::vector<uint64_t>{64, 2 * 128}));
  EXPECT_EQ(by_name.at("blk.0.ffn_down.weight").ne, (std::vector<uint64_t>{128, 64}));
  EXPECT_EQ(by_name.at("output.weight").ne, (std::vector<uint64_t>{64, 400}));
  EXPECT_EQ(by_name.at("rope_factors_long.weight").type, 0u);
  EXPECT_EQ(by_name.at("blk.0.attn_norm.weight").type, 0u);
  // Q4_0 blocks: every d a positive half near range / 8 (the range of a 64-wide input).
  const float range = 0.04f * std::sqrt(3072.0f / 64.0f);
  const uint64_t base = r.data_start + qkv.offset;
  for (int b = 0; b < 3 * 64 * 2; ++b) {
    uint16_t h;
    std::memcpy(&h, r.bytes.data() + base + 18 * b, 2);
    const float d = f16_to_f32(h);
    EXPECT_GE(d, range / 8 * 0.74f) << b;
    EXPECT_LE(d, range / 8 * 1.26f) << b;
  }
  // Q8_0 (34 bytes a block of 32, int8 in [-127, 127]) and F16 (2 bytes a
  // value): the same tensors, each the size its type gives.
  for (const auto& [format, type, file_type, block_bytes] :
       {std::tuple<std::string, uint32_t, uint64_t, uint64_t>{"gguf-q8_0", 8, 7, 34}, {"gguf-f16", 1, 1, 64}}) {
    o.format = format;
    write_synthetic_model(dir.path(), o);
    const ReadFile f = read_gguf(dir.file("model-" + format.substr(5) + ".gguf"));
    EXPECT_EQ(f.numbers.at("general.file_type"), file_type) << format;
    std::map<std::string, ReadTensor> tensors(f.tensors.begin(), f.tensors.end());
    const ReadTensor& down = tensors.at("blk.0.ffn_down.weight");
    EXPECT_EQ(down.type, type) << format;
    // ffn_down is 64 rows x 4 blocks of 32 values; the next tensor
    // (blk.1.attn_norm.weight) starts at the first 32-byte boundary after it.
    const uint64_t bytes = 64 * 4 * block_bytes;
    const auto next = std::find_if(f.tensors.begin(), f.tensors.end(),
                                   [](const auto& t) { return t.first == "blk.1.attn_norm.weight"; });
    ASSERT_NE(next, f.tensors.end());
    EXPECT_EQ(next->second.offset, down.offset + (bytes + 31) / 32 * 32) << format;
    if (type == 8) {
      const uint64_t base = f.data_start + down.offset;
      for (uint64_t b = 0; b < 64 * 4; ++b)
        for (int j = 0; j < 32; ++j) EXPECT_NE(static_cast<uint8_t>(f.bytes[base + 34 * b + 2 + j]), 0x80u);
    }
  }
  // Another format name is refused with the list.
  o.format = "gguf-q5_k";
  EXPECT_NE(test::error_of([&] { write_synthetic_model(dir.path(), o); }).find("gguf-q4_0"), std::string::npos);
}

}  // namespace
}  // namespace pensieve
