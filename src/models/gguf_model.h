// GGUF models (llama.cpp's files, as Ollama and LM Studio keep them): the
// file's metadata becomes a ModelConfig and its tensors a TensorStore under
// the Hugging Face names the decoder reads, so one decoder serves both.
//
// Tensors are converted once at load into owned memory, exactly:
//  - F32/F16/BF16 are copied;
//  - Q4_0, Q4_1, Q4_K become 4-bit affine groups of 32 (MLX's layout),
//    Q8_0, Q5_0, Q5_1, Q5_K 8-bit groups of 32 and Q6_K 8-bit groups of 16:
//    every block's value is scale·q + bias with the block's own numbers,
//    never rounded again: f16 scales for the legacy types (Q4_0, Q8_0 and
//    Q5_0 without biases, each being -8, -128 or -16 times its scale), and
//    for the K-quants their super-block scales as they are (k4/k6 records,
//    quant/weight_matrix.h), decoded per group by the kernels;
//  - llama's q/k rows, which the converter interleaves for ggml's rope, are
//    put back in Hugging Face's order.
// The file itself is mapped only while loading. GGUF models run on the CPU
// for now (load_model refuses --device cuda for them: not validated yet).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "format/gguf.h"
#include "format/hf_config.h"
#include "format/safetensors.h"

namespace pensieve {

struct GgufCheckpoint {
  ModelConfig config;
  std::shared_ptr<TensorStore> store;
};

// Reads the model's metadata and converts its tensors. Errors name the file
// and the problem (unknown architecture, missing tensor, wrong shape).
GgufCheckpoint load_gguf_checkpoint(const std::string& path);

// A Q4_K/Q5_K (k4, 20 bytes) or Q6_K (k6, 18 bytes) block's scales as the
// record quant/weight_matrix.h describes: what the loader keeps of them.
void gguf_k_record(GgmlType type, const uint8_t* block, uint8_t* record);

}  // namespace pensieve
