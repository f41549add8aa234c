#include "format/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>

#include "core/error.h"
#include "support/test_support.h"

namespace pensieve {
namespace {

using test::TempDir;

std::string make_file(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  return out + header + data;
}

TEST(Safetensors, ReadsFixtureModel) {
  auto store = TensorStore::open_dir(test::data_path("models/phi3-tiny"));
  const auto& t = store.get("model.layers.0.self_attn.qkv_proj.weight");
  EXPECT_EQ(t.dtype, DType::BF16);
  EXPECT_EQ(t.shape, (std::vector<int64_t>{384, 128}));
  EXPECT_EQ(t.n_bytes, 384u * 128u * 2u);
}

TEST(Safetensors, RejectsBadHeaderLength) {
  TempDir dir;
  std::string bytes = make_file("{}", "");
  const uint64_t huge = 1ull << 40;
  std::memcpy(bytes.data(), &huge, 8);
  test::write_file(dir.file("model.safetensors"), bytes);
  try {
    TensorStore::open_dir(dir.path());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad safetensors header length"), std::string::npos);
  }
}

TEST(Safetensors, RejectsOffsetsPastEnd) {
  TempDir dir;
  test::write_file(dir.file("model.safetensors"),
                   make_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", "abcd"));
  try {
    TensorStore::open_dir(dir.path());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'w'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("past the end"), std::string::npos) << e.what();
  }
}

TEST(Safetensors, RejectsShapeSizeMismatchAndUnknownDtype) {
  TempDir dir;
  test::write_file(dir.file("model.safetensors"),
                   make_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})",
                             std::string(8, 'x')));
  EXPECT_THROW(TensorStore::open_dir(dir.path()), Error);
  test::write_file(dir.file("model.safetensors"),
                   make_file(R"({"w":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}})",
                             std::string(8, 'x')));
  EXPECT_THROW(TensorStore::open_dir(dir.path()), Error);
}

TEST(Safetensors, RejectsTruncatedAndNonJson) {
  TempDir dir;
  test::write_file(dir.file("model.safetensors"), "abc");
  EXPECT_THROW(TensorStore::open_dir(dir.path()), Error);
  test::write_file(dir.file("model.safetensors"), make_file("not json", ""));
  EXPECT_THROW(TensorStore::open_dir(dir.path()), Error);
}

TEST(Safetensors, ShardedIndex) {
  TempDir dir;
  test::write_file(dir.file("a.safetensors"),
                   make_file(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", "abcd"));
  test::write_file(dir.file("b.safetensors"),
                   make_file(R"({"y":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}})", "efgh"));
  test::write_file(dir.file("model.safetensors.index.json"),
                   R"({"weight_map":{"x":"a.safetensors","y":"b.safetensors"}})");
  auto store = TensorStore::open_dir(dir.path());
  EXPECT_EQ(store.get("x").dtype, DType::F32);
  EXPECT_EQ(std::memcmp(store.get("y").data, "efgh", 4), 0);
  EXPECT_THROW(store.get("z"), Error);
}

}  // namespace
}  // namespace pensieve
