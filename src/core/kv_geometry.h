// The KV cache's block geometry, shared by the engine (which hands blocks
// out), the models (which size the pool) and every backend's kernels (which
// lay K and V out inside a block).
#pragma once

#include <cstdint>

namespace pensieve {

// Positions per KV block: the unit of paging, prefix caching and preemption.
inline constexpr int64_t kKvBlockTokens = 16;

// The smallest context served: plan_kv_pool shrinks a context to fit no
// further, and a GPU must hold the KV cache of at least this one.
inline constexpr int64_t kMinFittedContext = 256;

// Blocks that hold `positions` positions.
inline constexpr int64_t kv_blocks_for(int64_t positions) {
  return (positions + kKvBlockTokens - 1) / kKvBlockTokens;
}

}  // namespace pensieve
