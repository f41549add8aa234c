// A loaded model: weights (in their stored format, in the backend's memory),
// the KV pool and a batched forward pass. The engine and the inspection
// commands use only this; the backend (backend/backend.h) decides where it runs.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "format/hf_config.h"

namespace pensieve {

// One sequence's part of a forward batch.
struct ForwardSeq {
  std::span<const int32_t> tokens;  // new tokens, at positions n_past .. n_past+size-1
  const int32_t* block_table = nullptr;  // must cover n_past + tokens.size() positions
  int64_t n_past = 0;
  bool all_logits = false;  // logits for every new token, else only for the last
  // Length the whole sequence will have once this prompt is in (a chunked
  // prompt passes its full length): Phi-3's longrope picks short or long
  // factors from it, as transformers does for one forward over the prompt.
  // 0 = n_past + tokens.size().
  int64_t n_planned = 0;
};

struct ModelInfo {
  int64_t n_params = 0;
  int64_t weight_bytes = 0;
  // Weight bytes one decode step streams: everything but the embedding table
  // (one row of it is read), unless it doubles as the lm_head.
  int64_t decode_bytes_per_token = 0;
  std::string weight_format;  // e.g. "mlx-affine-4bit (group 64)"
};

class Model {
 public:
  virtual ~Model() = default;
  const ModelConfig& config() const { return config_; }
  virtual ModelInfo info() const = 0;

  // Reserves KV storage for n_blocks blocks (replacing any earlier storage).
  virtual void allocate_kv(int64_t n_blocks) = 0;
  virtual int64_t kv_bytes_per_block() const = 0;
  // How K and V are stored (LoadOptions::kv_type).
  virtual KvType kv_type() const { return KvType::f16; }
  virtual int64_t kv_blocks() const = 0;
  // Commits the KV storage's memory now (see Backend::commit_kv).
  virtual void commit_kv() = 0;
  // One KV block to or from kv_bytes_per_block() bytes of host memory (the
  // prefix cache's disk tier); false where the model's backend cannot.
  virtual bool read_kv_block(int32_t block, std::byte* out) { return backend_->read_kv_block(block, out); }
  virtual bool write_kv_block(int32_t block, const std::byte* in) { return backend_->write_kv_block(block, in); }
  // Memory the KV pool may take (the host's, or the GPU's).
  virtual MemoryInfo memory() const = 0;

  // Runs the batch; appends vocab-sized logit rows to `logits` for the
  // requested positions, sequence by sequence, in order.
  virtual void forward(std::span<const ForwardSeq> seqs, std::vector<float>* logits) = 0;

  // Which K/V a sequence of seq_len (its n_planned) gets: positions' keys are
  // the same for every length of one variant, different across variants
  // (Phi-3 longrope switches factors past original_max_position_embeddings;
  // dynamic NTK changes its base with the length past max positions). The
  // prefix cache only shares blocks within one variant.
  virtual int64_t kv_variant(int64_t seq_len) const { (void)seq_len; return 0; }

  const Backend& backend() const { return *backend_; }

 protected:
  Model(ModelConfig config, std::unique_ptr<Backend> backend)
      : config_(std::move(config)), backend_(std::move(backend)) {}
  ModelConfig config_;
  std::unique_ptr<Backend> backend_;
};

struct LoadOptions {
  int n_threads = 0;      // CPU compute threads; 0 = all cores
  bool prefault = false;  // read every weight page now instead of on first use
  // Attention window in tokens: -1 = what config.json says, 0 = none, N = each
  // query attends to its last N positions (itself included), as Mistral's
  // sliding_window does.
  int64_t sliding_window = -1;
  // "cpu", "cuda" or "auto" (the GPU when one is usable); see make_backend.
  // The commands pass --device, whose default is auto.
  std::string device = "cpu";
  // How the KV cache stores K and V (`--kv-type`): f16, or q8 (int8 with a
  // scale per group of dimensions; about half the memory and the bytes a
  // long-context step reads).
  KvType kv_type = KvType::f16;
};

// Reads config.json, picks the architecture from the registry and maps the weights.
std::unique_ptr<Model> load_model(const std::string& dir, const LoadOptions& options = {});

}  // namespace pensieve
