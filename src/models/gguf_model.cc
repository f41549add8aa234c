#include "models/gguf_model.h"

#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/half.h"
#include "format/gguf_config.h"
#include "quant/weight_matrix.h"

namespace pensieve {
namespace fs = std::filesystem;
namespace {

// Anonymous memory for converted tensors, advised for transparent huge pages
// as the copied safetensors files are (core/mmap_file.h: decode streams such
// memory several times faster than page-cache pages).
class OwnedBytes {
 public:
  explicit OwnedBytes(size_t n) : size_(std::max<size_t>(n, 1)) {
    void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) fail(ErrorKind::resource, "out of memory converting a GGUF tensor ({} bytes)", n);
    if (size_ >= (2u << 20)) ::madvise(p, size_, MADV_HUGEPAGE);  // a hint; fine where THP is off
    data_ = static_cast<uint8_t*>(p);
  }
  ~OwnedBytes() { ::munmap(data_, size_); }
  OwnedBytes(const OwnedBytes&) = delete;
  OwnedBytes& operator=(const OwnedBytes&) = delete;
  uint8_t* data() { return data_; }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// How one ggml block type maps onto MLX affine groups (weights.h): w = s·q + b.
struct AffineForm {
  int bits = 0;   // 4 or 8
  int group = 0;  // 32, or 16 (Q6_K's sub-blocks)
};

AffineForm affine_form(GgmlType t) {
  switch (t) {
    case GgmlType::Q4_0:
    case GgmlType::Q4_1:
    case GgmlType::Q4_K: return {4, 32};
    case GgmlType::Q5_0:
    case GgmlType::Q5_1:
    case GgmlType::Q8_0:
    case GgmlType::Q5_K: return {8, 32};
    case GgmlType::Q6_K: return {8, 16};
    default: return {};
  }
}

}  // namespace

void gguf_k_record(GgmlType type, const uint8_t* b, uint8_t* o) {
  if (type == GgmlType::Q6_K) {
    std::memcpy(o, b + 208, 2);       // d
    std::memcpy(o + 2, b + 192, 16);  // int8 scales
    return;
  }
  std::memcpy(o, b, 4);  // d, dmin
  for (int j = 0; j < 8; ++j) {
    int s6, m6;
    ggml_k_scale_min(b + 4, j, &s6, &m6);
    o[4 + j] = static_cast<uint8_t>(s6);
    o[12 + j] = static_cast<uint8_t>(m6);
  }
}

namespace {

// f16 holds the scale and bias exactly: the legacy types' d and m are f16,
// and -8d, -16d, -128d only shift the exponent (unless they overflow).
bool fits_f16(float v) { return f16_to_f32(f32_to_f16(v)) == v; }

class Converter {
 public:
  Converter(std::vector<std::unique_ptr<GgufFile>> files, std::string source)
      : files_(std::move(files)), store_(std::make_shared<TensorStore>(TensorStore::in_memory(source))),
        source_(std::move(source)) {
    for (const auto& f : files_)
      for (const GgufTensor& t : f->tensors()) {
        if (!index_.emplace(t.name, &t).second)
          fail("{}: tensor '{}' is in two of the split files", f->path(), t.name);
      }
  }

  const GgufTensor* find(const std::string& name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : it->second;
  }
  const GgufTensor& need(const std::string& name) const {
    const GgufTensor* t = find(name);
    if (t == nullptr) fail(ErrorKind::not_found, "{}: missing tensor '{}'", source_, name);
    return *t;
  }
  void check_shape(const GgufTensor& t, std::vector<int64_t> ne) const {
    if (t.ne != ne) {
      auto str = [](const std::vector<int64_t>& v) {
        std::string s = "[";
        for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
        return s + "]";
      };
      fail("{}: tensor '{}' has shape {} (ggml order), but the metadata makes it {}", source_, t.name, str(t.ne),
           str(ne));
    }
  }

  // A 1-D tensor (norm weight, bias, rope factors) as f32 values.
  std::vector<float> vector(const GgufTensor& t, int64_t n) const {
    check_shape(t, {n});
    std::vector<float> out(static_cast<size_t>(n));
    ggml_dequantize_row(t.type, t.data, n, out.data());
    return out;
  }

  // The file's pages of a converted tensor leave this process's memory.
  void release(const GgufTensor& t) const {
    for (const auto& f : files_)
      if (f->contains(t.data, t.n_bytes)) f->release(t.data, t.n_bytes);
  }

  // A tensor of the store, its bytes kept alive by `owner`.
  void add_view(std::string name, DType dtype, std::vector<int64_t> shape, const void* data, size_t n_bytes,
                std::shared_ptr<const void> owner) {
    TensorView v;
    v.name = std::move(name);
    v.dtype = dtype;
    v.shape = std::move(shape);
    v.data = static_cast<const uint8_t*>(data);
    v.n_bytes = n_bytes;
    store_->add(std::move(v), std::move(owner));
  }
  void add_f32(std::string name, std::vector<float> values) {
    auto own = std::make_shared<std::vector<float>>(std::move(values));
    add_view(std::move(name), DType::F32, {static_cast<int64_t>(own->size())}, own->data(), own->size() * 4, own);
  }
  void add_vector(const std::string& hf_name, const GgufTensor& t, int64_t n) { add_f32(hf_name, vector(t, n)); }

  // A [rows][cols] matrix under the HF module name; row r of the result is
  // row src_row(r) of the file's. Quantized types become MLX affine groups
  // (the quantization recorded in `quant`); K-quants keep their scale
  // records, Q4_0/Q8_0/Q5_0 only their scales (bias_factor).
  template <class RowMap>
  void add_matrix(const std::string& module, const GgufTensor& t, int64_t rows, int64_t cols, RowMap src_row,
                  QuantConfig* quant) {
    check_shape(t, {cols, rows});
    const size_t in_row = ggml_row_bytes(t.type, cols), n_rows = static_cast<size_t>(rows);
    if (t.type == GgmlType::F32 || t.type == GgmlType::F16 || t.type == GgmlType::BF16) {
      auto buf = std::make_shared<OwnedBytes>(in_row * n_rows);
      for (int64_t r = 0; r < rows; ++r)
        std::memcpy(buf->data() + r * in_row, t.data + src_row(r) * in_row, in_row);
      add_view(module + ".weight",
               t.type == GgmlType::F32 ? DType::F32 : t.type == GgmlType::F16 ? DType::F16 : DType::BF16,
               {rows, cols}, buf->data(), in_row * n_rows, buf);
      release(t);
      return;
    }
    const AffineForm form = affine_form(t.type);
    const int64_t block = ggml_block_elements(t.type), n_blocks = cols / block;
    const int64_t groups = cols / form.group, groups_per_block = block / form.group;
    const bool k_quant = t.type == GgmlType::Q4_K || t.type == GgmlType::Q5_K || t.type == GgmlType::Q6_K;
    const size_t rec = t.type == GgmlType::Q6_K ? kK6RecordBytes : kK4RecordBytes;
    const size_t out_row = static_cast<size_t>(cols * form.bits / 8), rec_row = static_cast<size_t>(n_blocks) * rec;
    auto data = std::make_shared<OwnedBytes>(out_row * n_rows);
    auto recs = k_quant ? std::make_shared<OwnedBytes>(rec_row * n_rows) : nullptr;
    // Other types: every group's scale and bias (f32) first, to pick f16 where exact.
    std::vector<float> sc(k_quant ? 0 : static_cast<size_t>(rows * groups)), bi(sc.size());
    std::vector<float> s(static_cast<size_t>(groups_per_block)), b(s.size());
    std::vector<uint8_t> q(static_cast<size_t>(block));
    bool f16_ok = true;
    for (int64_t r = 0; r < rows; ++r) {
      const uint8_t* src = t.data + src_row(r) * in_row;
      uint8_t* dst = data->data() + r * out_row;
      for (int64_t k = 0; k < n_blocks; ++k) {
        const uint8_t* blk = src + k * ggml_block_bytes(t.type);
        ggml_block_codes(t.type, blk, q.data(), s.data(), b.data());
        if (k_quant) {
          gguf_k_record(t.type, blk, recs->data() + r * rec_row + static_cast<size_t>(k) * rec);
        } else {
          for (int64_t g = 0; g < groups_per_block; ++g) {
            sc[static_cast<size_t>(r * groups + k * groups_per_block + g)] = s[g];
            bi[static_cast<size_t>(r * groups + k * groups_per_block + g)] = b[g];
            f16_ok = f16_ok && fits_f16(s[g]) && fits_f16(b[g]);
          }
        }
        if (form.bits == 4) {
          for (int64_t j = 0; j < block; j += 2)
            dst[(k * block + j) / 2] = static_cast<uint8_t>(q[j] | (q[j + 1] << 4));
        } else {
          std::memcpy(dst + k * block, q.data(), static_cast<size_t>(block));
        }
      }
    }
    add_view(module + ".weight", DType::U32, {rows, cols * form.bits / 32}, data->data(), out_row * n_rows, data);
    if (k_quant) {
      // The blocks' own scales, as they are (the kernels decode them per group).
      add_view(module + (t.type == GgmlType::Q6_K ? ".k6_scales" : ".k4_scales"), DType::U8,
               {rows, static_cast<int64_t>(rec_row)}, recs->data(), rec_row * n_rows, recs);
    } else {
      // Q4_0, Q8_0, Q5_0: every bias is -8, -128 or -16 times its scale; only the factor is kept.
      const float factor = t.type == GgmlType::Q4_0 ? -8.f : t.type == GgmlType::Q8_0 ? -128.f
                           : t.type == GgmlType::Q5_0 ? -16.f : 0.f;
      const size_t es = f16_ok ? 2 : 4;
      for (const std::vector<float>* values : {&sc, &bi}) {
        const bool biases = values == &bi;
        if (biases && factor != 0.f) {
          add_f32(module + ".bias_factor", {factor});
          break;
        }
        auto buf = std::make_shared<OwnedBytes>(values->size() * es);
        for (size_t i = 0; i < values->size(); ++i) {
          if (f16_ok) {
            const uint16_t h = f32_to_f16((*values)[i]);
            std::memcpy(buf->data() + 2 * i, &h, 2);
          } else {
            std::memcpy(buf->data() + 4 * i, &(*values)[i], 4);
          }
        }
        add_view(module + (biases ? ".biases" : ".scales"), f16_ok ? DType::F16 : DType::F32, {rows, groups},
                 buf->data(), values->size() * es, buf);
      }
    }
    if (quant->bits == 0) {
      quant->bits = form.bits;
      quant->group_size = form.group;
    }
    quant->overrides.push_back({module, {form.bits, form.group}});
    release(t);
  }
  void add_matrix(const std::string& module, const GgufTensor& t, int64_t rows, int64_t cols, QuantConfig* quant) {
    add_matrix(module, t, rows, cols, [](int64_t r) { return r; }, quant);
  }

  std::shared_ptr<TensorStore> store() const { return store_; }

 private:
  std::vector<std::unique_ptr<GgufFile>> files_;
  std::map<std::string, const GgufTensor*> index_;
  std::shared_ptr<TensorStore> store_;
  std::string source_;
};

}  // namespace

GgufCheckpoint load_gguf_checkpoint(const std::string& path) {
  std::vector<std::unique_ptr<GgufFile>> files;
  for (const std::string& p : gguf_split_files(path)) files.push_back(std::make_unique<GgufFile>(p));
  if (files.size() > 1) {
    for (size_t i = 0; i < files.size(); ++i) {
      const auto count = files[i]->get_int("split.count");
      if (count && *count != static_cast<int64_t>(files.size()))
        fail("{}: says split.count {}, but the file name says {} parts", files[i]->path(), *count, files.size());
    }
  }
  const GgufFile& f = *files[0];
  ModelConfig c = gguf_model_config(f);
  const std::string arch = c.model_type;
  const int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  const int64_t qd = c.n_heads * hd, kvd = c.n_kv_heads * hd;
  if (c.vocab_size <= 0) fail("{}: the vocabulary size is unknown (no token_embd.weight)", f.path());
  if (const GgufValue* toks = f.get_array("tokenizer.ggml.tokens", true);
      toks != nullptr && static_cast<int64_t>(toks->count) > c.vocab_size)
    fail("{}: tokenizer.ggml.tokens has {} entries, more than the embedding's {} rows", f.path(), toks->count,
         c.vocab_size);

  // Rope factors stored as tensors.
  Converter conv(std::move(files), path);
  const int64_t half_rot = static_cast<int64_t>(std::lround(static_cast<double>(hd) * c.rope.partial_rotary_factor)) / 2;
  auto to_double = [](const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); };
  const GgufTensor* freqs = conv.find("rope_freqs.weight");
  const GgufTensor* fshort = conv.find("rope_factors_short.weight");
  const GgufTensor* flong = conv.find("rope_factors_long.weight");
  if (fshort != nullptr || flong != nullptr) {
    if (fshort == nullptr || flong == nullptr)
      fail("{}: has one of rope_factors_short/long.weight but not the other", path);
    const GgufFile& meta = f;
    c.rope.type = RopeScaling::longrope;
    c.rope.short_factor = to_double(conv.vector(*fshort, half_rot));
    c.rope.long_factor = to_double(conv.vector(*flong, half_rot));
    c.rope.original_max_position = meta.need_int(gguf_meta_key(arch, "rope.scaling.original_context_length"));
    c.rope.attention_factor = meta.get_double(gguf_meta_key(arch, "rope.scaling.attn_factor")).value_or(0.0);
  } else if (freqs != nullptr) {
    // Llama 3's scaling, as the converter computed it: frequency i divided by factor i.
    c.rope.type = RopeScaling::factors;
    c.rope.short_factor = to_double(conv.vector(*freqs, half_rot));
  }

  QuantConfig& quant = c.quant;
  conv.add_matrix("model.embed_tokens", conv.need("token_embd.weight"), c.vocab_size, H, &quant);
  if (const GgufTensor* out = conv.find("output.weight")) conv.add_matrix("lm_head", *out, c.vocab_size, H, &quant);
  conv.add_vector("model.norm.weight", conv.need("output_norm.weight"), H);
  const bool permuted = gguf_arch_info(arch)->permuted_qk;
  // The converter's permutation: HF row (t·half + i) of a head went to row 2i + t.
  auto unpermute = [hd](int64_t r) {
    const int64_t head = r / hd, in = r % hd, half = hd / 2;
    const int64_t t = in / half, i = in % half;
    return head * hd + 2 * i + t;
  };
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string g = "blk." + std::to_string(l) + ".";
    const std::string p = "model.layers." + std::to_string(l) + ".";
    conv.add_vector(p + "input_layernorm.weight", conv.need(g + "attn_norm.weight"), H);
    conv.add_vector(p + "post_attention_layernorm.weight", conv.need(g + "ffn_norm.weight"), H);
    if (const GgufTensor* qkv = conv.find(g + "attn_qkv.weight")) {
      conv.add_matrix(p + "self_attn.qkv_proj", *qkv, qd + 2 * kvd, H, &quant);
      if (const GgufTensor* b = conv.find(g + "attn_qkv.bias")) conv.add_vector(p + "self_attn.qkv_proj.bias", *b, qd + 2 * kvd);
    } else {
      const char* names[3] = {"attn_q", "attn_k", "attn_v"};
      const char* hf[3] = {"q_proj", "k_proj", "v_proj"};
      const int64_t rows[3] = {qd, kvd, kvd};
      for (int k = 0; k < 3; ++k) {
        const GgufTensor& w = conv.need(g + names[k] + ".weight");
        const std::string module = p + "self_attn." + hf[k];
        const bool perm = permuted && k < 2;
        if (perm) conv.add_matrix(module, w, rows[k], H, unpermute, &quant);
        else conv.add_matrix(module, w, rows[k], H, &quant);
        if (const GgufTensor* b = conv.find(g + names[k] + ".bias")) {
          std::vector<float> v = conv.vector(*b, rows[k]);
          if (perm) {
            std::vector<float> u(v.size());
            for (int64_t r = 0; r < rows[k]; ++r) u[static_cast<size_t>(r)] = v[static_cast<size_t>(unpermute(r))];
            v = std::move(u);
          }
          conv.add_f32(module + ".bias", std::move(v));
        }
      }
    }
    if (const GgufTensor* qn = conv.find(g + "attn_q_norm.weight")) {
      conv.add_vector(p + "self_attn.q_norm.weight", *qn, hd);
      conv.add_vector(p + "self_attn.k_norm.weight", conv.need(g + "attn_k_norm.weight"), hd);
    } else if (arch == "qwen3") {
      conv.need(g + "attn_q_norm.weight");
    }
    conv.add_matrix(p + "self_attn.o_proj", conv.need(g + "attn_output.weight"), H, qd, &quant);
    if (arch == "phi3") {
      conv.add_matrix(p + "mlp.gate_up_proj", conv.need(g + "ffn_up.weight"), 2 * I, H, &quant);
    } else {
      conv.add_matrix(p + "mlp.gate_proj", conv.need(g + "ffn_gate.weight"), I, H, &quant);
      conv.add_matrix(p + "mlp.up_proj", conv.need(g + "ffn_up.weight"), I, H, &quant);
    }
    conv.add_matrix(p + "mlp.down_proj", conv.need(g + "ffn_down.weight"), H, I, &quant);
  }
  return {std::move(c), conv.store()};
}

}  // namespace pensieve
