#include "models/rope.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace pensieve {
namespace {

constexpr double kPi = 3.14159265358979323846;

std::vector<float> base_inv_freq(double theta, int64_t dim) {
  std::vector<float> f(dim / 2);
  for (int64_t i = 0; i < dim / 2; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(dim);
    f[i] = 1.0f / std::pow(static_cast<float>(theta), exponent);
  }
  return f;
}

}  // namespace

RopeTable::RopeTable(const ModelConfig& c, int64_t head_dim) {
  const RopeConfig& r = c.rope;
  rot_dim_ = static_cast<int64_t>(static_cast<double>(head_dim) * r.partial_rotary_factor + 1e-9);
  rot_dim_ -= rot_dim_ % 2;
  if (rot_dim_ <= 0) fail("{}/config.json: partial_rotary_factor leaves no rotary dims", c.dir);
  inv_freq_ = base_inv_freq(r.theta, rot_dim_);
  theta_ = r.theta;
  factor_ = r.factor;
  max_pos_ = c.max_position_embeddings;
  switch (r.type) {
    case RopeScaling::none:
      break;
    case RopeScaling::linear:
      for (float& f : inv_freq_) f = static_cast<float>(f / r.factor);
      break;
    case RopeScaling::dynamic:
      dynamic_ = true;
      break;
    case RopeScaling::llama3: {
      const double old_ctx = static_cast<double>(r.original_max_position);
      const double low_wavelen = old_ctx / r.low_freq_factor;
      const double high_wavelen = old_ctx / r.high_freq_factor;
      for (float& f : inv_freq_) {
        const double wavelen = 2 * kPi / f;
        if (wavelen > low_wavelen) {
          f = static_cast<float>(f / r.factor);
        } else if (wavelen >= high_wavelen) {
          const double smooth =
              (old_ctx / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
          f = static_cast<float>((1 - smooth) * f / r.factor + smooth * f);
        }
      }
      break;
    }
    case RopeScaling::longrope: {
      const int64_t n = rot_dim_ / 2;
      if (static_cast<int64_t>(r.short_factor.size()) != n ||
          static_cast<int64_t>(r.long_factor.size()) != n) {
        fail("{}/config.json: rope_scaling short_factor/long_factor need {} entries (head_dim/2)",
             c.dir, n);
      }
      longrope_ = true;
      original_max_ = r.original_max_position;
      inv_freq_long_.resize(n);
      for (int64_t i = 0; i < n; ++i) {
        const float exponent = static_cast<float>(2 * i) / static_cast<float>(rot_dim_);
        const float base_pow = std::pow(static_cast<float>(r.theta), exponent);
        inv_freq_[i] = 1.0f / (static_cast<float>(r.short_factor[i]) * base_pow);
        inv_freq_long_[i] = 1.0f / (static_cast<float>(r.long_factor[i]) * base_pow);
      }
      // Phi-3 derives the scale from max/original positions, not from `factor`.
      const double scale =
          static_cast<double>(c.max_position_embeddings) / static_cast<double>(original_max_);
      if (r.attention_factor > 0) {
        attention_factor_ = static_cast<float>(r.attention_factor);
      } else if (scale > 1.0) {
        attention_factor_ = static_cast<float>(
            std::sqrt(1 + std::log(scale) / std::log(static_cast<double>(original_max_))));
      }
      break;
    }
    case RopeScaling::factors: {
      const int64_t n = rot_dim_ / 2;
      if (static_cast<int64_t>(r.short_factor.size()) != n)
        fail("{}: {} rope frequency factors for {} frequencies", c.dir, r.short_factor.size(), n);
      for (int64_t i = 0; i < n; ++i) {
        const float exponent = static_cast<float>(2 * i) / static_cast<float>(rot_dim_);
        inv_freq_[i] = 1.0f / (static_cast<float>(r.short_factor[i]) * std::pow(static_cast<float>(r.theta), exponent));
      }
      break;
    }
    case RopeScaling::yarn: {
      const double dim = static_cast<double>(rot_dim_);
      const double orig = static_cast<double>(
          r.original_max_position > 0 ? r.original_max_position : c.max_position_embeddings);
      auto correction_dim = [&](double rotations) {
        return dim * std::log(orig / (rotations * 2 * kPi)) / (2 * std::log(r.theta));
      };
      double low = std::max(0.0, std::floor(correction_dim(r.beta_fast)));
      double high = std::min(dim - 1, std::ceil(correction_dim(r.beta_slow)));
      if (low == high) high += 0.001;
      for (int64_t i = 0; i < rot_dim_ / 2; ++i) {
        const float pos_freq = std::pow(static_cast<float>(r.theta), static_cast<float>(2 * i) / static_cast<float>(dim));
        const double extrapolation = 1.0 / pos_freq;
        const double interpolation = 1.0 / (r.factor * pos_freq);
        const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
        const double extrap_factor = 1.0 - ramp;
        inv_freq_[i] = static_cast<float>(interpolation * (1 - extrap_factor) +
                                          extrapolation * extrap_factor);
      }
      attention_factor_ = static_cast<float>(
          r.attention_factor > 0 ? r.attention_factor
                                 : (r.factor <= 1 ? 1.0 : 0.1 * std::log(r.factor) + 1.0));
      break;
    }
  }
}

bool RopeTable::use_long(int64_t seq_len) const { return longrope_ && seq_len > original_max_; }

int64_t RopeTable::variant(int64_t seq_len) const {
  if (dynamic_ && seq_len > max_pos_) return seq_len;  // the base changes with every length
  return use_long(seq_len) ? 1 : 0;
}

void RopeTable::cos_sin(int64_t pos, int64_t seq_len, float* cos, float* sin) const {
  const std::vector<float>& freqs = use_long(seq_len) ? inv_freq_long_ : inv_freq_;
  const int64_t n = rot_dim_ / 2;
  if (dynamic_ && seq_len > max_pos_) {
    // Dynamic NTK: grow the base with the sequence length.
    const double base = theta_ * std::pow(factor_ * seq_len / max_pos_ - (factor_ - 1),
                                          static_cast<double>(rot_dim_) / (rot_dim_ - 2));
    for (int64_t i = 0; i < n; ++i) {
      const float f = 1.0f / std::pow(static_cast<float>(base), static_cast<float>(2 * i) / rot_dim_);
      const float angle = static_cast<float>(pos) * f;
      cos[i] = static_cast<float>(std::cos(static_cast<double>(angle)));
      sin[i] = static_cast<float>(std::sin(static_cast<double>(angle)));
    }
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    const float angle = static_cast<float>(pos) * freqs[i];
    cos[i] = static_cast<float>(std::cos(static_cast<double>(angle))) * attention_factor_;
    sin[i] = static_cast<float>(std::sin(static_cast<double>(angle))) * attention_factor_;
  }
}

}  // namespace pensieve
