// Rotary position embedding tables for every rope_scaling variant in
// config.json. Frequencies are computed in f32 exactly as transformers does
// (inv_freq in f32, angle = f32(pos) * inv_freq), so long positions round the
// same way as the reference.
#pragma once

#include <cstdint>
#include <vector>

#include "format/hf_config.h"

namespace pensieve {

class RopeTable {
 public:
  RopeTable(const ModelConfig& config, int64_t head_dim);

  int64_t rot_dim() const { return rot_dim_; }
  // Phi-3 longrope: sequences longer than original_max_position_embeddings
  // use the long factors (chosen per forward call from the sequence length,
  // as transformers does).
  bool use_long(int64_t seq_len) const;
  // 0 while cos/sin do not depend on seq_len; otherwise a value that differs
  // whenever the table does (see Model::kv_variant).
  int64_t variant(int64_t seq_len) const;
  // cos/sin[rot_dim/2] for one position.
  void cos_sin(int64_t pos, int64_t seq_len, float* cos, float* sin) const;

 private:
  std::vector<float> inv_freq_;       // default / short
  std::vector<float> inv_freq_long_;  // longrope only
  float attention_factor_ = 1.0f;
  int64_t rot_dim_ = 0;
  int64_t original_max_ = 0;
  bool longrope_ = false;
  // dynamic NTK
  bool dynamic_ = false;
  double theta_ = 10000.0, factor_ = 1.0;
  int64_t max_pos_ = 0;
};

}  // namespace pensieve
