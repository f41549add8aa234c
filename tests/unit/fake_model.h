// A Model without weights for engine tests. Its "K/V" for a position is a
// hash of every token up to it, computed from the previous position's value
// read back through the block table, and its logits come from that value: a
// sequence whose block table points at the wrong blocks (a bad prefix-cache
// hit, a block overwritten while shared) produces different tokens.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <vector>

#include "core/error.h"
#include "models/model.h"

namespace pensieve::test {

class FakeModel : public Model {
 public:
  static ModelConfig make_config(int64_t vocab) {
    ModelConfig c;
    c.vocab_size = vocab;
    c.architecture = "Fake";
    return c;
  }
  explicit FakeModel(int64_t vocab = 97)
      : Model(make_config(vocab), make_backend("cpu", 1)) {}

  ModelInfo info() const override { return {}; }
  void allocate_kv(int64_t n_blocks) override {
    kv_.assign(n_blocks * kKvBlockTokens, kEmpty);
  }
  int64_t kv_bytes_per_block() const override { return 1024; }
  void commit_kv() override {}  // a std::vector: written when allocated
  MemoryInfo memory() const override { return read_memory_info(); }
  int64_t kv_blocks() const override {
    return static_cast<int64_t>(kv_.size()) / kKvBlockTokens;
  }

  static uint64_t mix(uint64_t x) {
    x ^= x >> 31;
    x *= 0x9E3779B97F4A7C15ULL;
    x ^= x >> 29;
    x *= 0xBF58476D1CE4E5B9ULL;
    return x ^ (x >> 32);
  }

  void forward(std::span<const ForwardSeq> seqs, std::vector<float>* logits) override {
    for (const ForwardSeq& s : seqs) {
      const int64_t n = static_cast<int64_t>(s.tokens.size());
      if (n == 0) fail("empty forward sequence");
      uint64_t state = s.n_past == 0 ? 0x5eed : read(s.block_table, s.n_past - 1);
      for (int64_t i = 0; i < n; ++i) {
        const int64_t pos = s.n_past + i;
        state = mix(state ^ (static_cast<uint64_t>(s.tokens[i]) * 1000003ULL + pos));
        write(s.block_table, pos, state);
        if (s.all_logits || i == n - 1) append_logits(state, logits);
      }
      n_tokens_computed += n;
    }
    ++n_forwards;
    if (on_forward) on_forward(seqs);
  }

  int64_t n_tokens_computed = 0;
  int64_t n_forwards = 0;
  // Called on the engine thread after each forward (may block to hold the engine).
  std::function<void(std::span<const ForwardSeq>)> on_forward;

 private:
  static constexpr uint64_t kEmpty = 0;
  uint64_t read(const int32_t* table, int64_t pos) const {
    const uint64_t v = kv_.at(table[pos / kKvBlockTokens] * kKvBlockTokens +
                              pos % kKvBlockTokens);
    if (v == kEmpty) fail("fake model: position {} read before it was written", pos);
    return v;
  }
  void write(const int32_t* table, int64_t pos, uint64_t v) {
    kv_.at(table[pos / kKvBlockTokens] * kKvBlockTokens +
           pos % kKvBlockTokens) = v;
  }
  void append_logits(uint64_t state, std::vector<float>* logits) const {
    const int64_t vocab = config_.vocab_size;
    for (int64_t v = 0; v < vocab; ++v) {
      logits->push_back(static_cast<float>(mix(state + static_cast<uint64_t>(v)) % 1000) / 150.0f);
    }
  }
  std::vector<uint64_t> kv_;
};

}  // namespace pensieve::test
