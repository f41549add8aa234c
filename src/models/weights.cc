#include "models/weights.h"

#include <cstring>

#include "core/error.h"
#include "core/half.h"

namespace pensieve {
namespace {

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

void expect_shape(const TensorStore& store, const TensorView& t, std::vector<int64_t> shape) {
  if (t.shape != shape) {
    fail("{}: tensor '{}' has shape {}, but {}/config.json makes it {} (the config and the "
         "weights disagree)",
         *t.file, t.name, shape_str(t.shape), store.dir(), shape_str(shape));
  }
}

ScaleType scale_type_of(const TensorView& t) {
  switch (t.dtype) {
    case DType::BF16: return ScaleType::bf16;
    case DType::F16: return ScaleType::f16;
    case DType::F32: return ScaleType::f32;
    default:
      fail("{}: tensor '{}' has dtype {}, expected BF16, F16 or F32", *t.file, t.name,
           dtype_name(t.dtype));
  }
}

}  // namespace

WeightMatrix load_linear(const TensorStore& store, const ModelConfig& config,
                         const std::string& module, int64_t rows, int64_t cols) {
  const TensorView& t = store.get(module + ".weight");
  WeightMatrix w;
  w.name = module + ".weight";
  w.rows = rows;
  w.cols = cols;
  w.data = t.data;
  const TensorView* scales = store.find(module + ".scales");
  // A GGUF K-quant's own super-block scales (quant/weight_matrix.h).
  const TensorView* k4 = store.find(module + ".k4_scales");
  const TensorView* k6 = store.find(module + ".k6_scales");
  if (scales == nullptr && k4 == nullptr && k6 == nullptr) {
    switch (t.dtype) {
      case DType::F32: w.format = WeightFormat::f32; break;
      case DType::F16: w.format = WeightFormat::f16; break;
      case DType::BF16: w.format = WeightFormat::bf16; break;
      default:
        fail("{}: tensor '{}' has dtype {} but no '{}.scales' (unquantized weights must be F32, "
             "F16 or BF16)",
             *t.file, t.name, dtype_name(t.dtype), module);
    }
    expect_shape(store, t, {rows, cols});
    return w;
  }
  auto [bits, group] = config.quant.for_module(module);
  if (bits == 0) {
    fail("{}: tensor '{}.scales' exists but config.json has no 'quantization' for it",
         config.dir, module);
  }
  if (t.dtype != DType::U32) {
    fail("{}: tensor '{}' has dtype {}, expected U32 (packed {}-bit)", *t.file, t.name,
         dtype_name(t.dtype), bits);
  }
  if (cols % group != 0) {
    fail("{}: tensor '{}': input width {} is not a multiple of group_size {}", *t.file, t.name,
         cols, group);
  }
  if (cols / group > 8192) {
    fail(ErrorKind::unsupported, "{}: tensor '{}': {} groups per row is more than supported (8192)",
         *t.file, t.name, cols / group);
  }
  w.format = bits == 4 ? WeightFormat::affine4 : WeightFormat::affine8;
  w.group_size = group;
  expect_shape(store, t, {rows, cols * bits / 32});
  if (k4 != nullptr || k6 != nullptr) {
    const TensorView& k = k4 != nullptr ? *k4 : *k6;
    w.scale_type = k4 != nullptr ? ScaleType::k4 : ScaleType::k6;
    const int per = k4 != nullptr ? kK4GroupsPerRecord : kK6GroupsPerRecord;
    if (k.dtype != DType::U8 || (cols / group) % per != 0)
      fail("{}: tensor '{}' must be U8 records of {} groups", *k.file, k.name, per);
    w.scales = k.data;
    w.biases = nullptr;
    expect_shape(store, k, {rows, w.scale_row_bytes()});
    return w;
  }
  expect_shape(store, *scales, {rows, cols / group});
  w.scale_type = scale_type_of(*scales);
  w.scales = scales->data;
  // A GGUF block type whose bias is a fixed multiple of its scale stores
  // only the multiple (models/gguf_model.cc).
  if (const TensorView* factor = store.find(module + ".bias_factor"); factor != nullptr && !store.has(module + ".biases")) {
    if (factor->dtype != DType::F32 || factor->n_bytes != 4)
      fail("{}: tensor '{}' must be one F32", *factor->file, factor->name);
    std::memcpy(&w.bias_factor, factor->data, 4);
    w.biases = nullptr;
    return w;
  }
  const TensorView& b = store.get(module + ".biases");
  expect_shape(store, b, {rows, cols / group});
  if (scale_type_of(b) != w.scale_type) {
    fail("{}: tensors '{}' and '{}' differ in dtype", *b.file, scales->name, b.name);
  }
  w.biases = b.data;
  return w;
}

std::vector<float> load_vector(const TensorStore& store, const std::string& name, int64_t n) {
  const TensorView& t = store.get(name);
  if (t.n_elements() != n || t.shape.size() != 1) {
    fail("{}: tensor '{}' has shape {}, but {}/config.json makes it [{}] (the config and the "
         "weights disagree)",
         *t.file, name, shape_str(t.shape), store.dir(), n);
  }
  std::vector<float> out(n);
  for (int64_t i = 0; i < n; ++i) {
    switch (t.dtype) {
      case DType::F32: std::memcpy(&out[i], t.data + 4 * i, 4); break;
      case DType::F16:
      case DType::BF16: {
        uint16_t h;
        std::memcpy(&h, t.data + 2 * i, 2);
        out[i] = t.dtype == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
        break;
      }
      default:
        fail("{}: tensor '{}' has dtype {}, expected F32, F16 or BF16", *t.file, name,
             dtype_name(t.dtype));
    }
  }
  return out;
}

std::vector<float> load_optional_bias(const TensorStore& store, const std::string& module,
                                      int64_t n) {
  if (!store.has(module + ".bias")) return {};
  return load_vector(store, module + ".bias", n);
}

}  // namespace pensieve
