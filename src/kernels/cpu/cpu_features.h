// Run-time CPU feature detection and the kernel family in use. One binary
// runs on any x86-64: the fast paths are compiled per ISA and picked here.
#pragma once

#include <string>

namespace pensieve::kernels {

enum class Isa { scalar, avx2, avx512 };

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512vnni = false, avx512bf16 = false;
  bool amx_tile = false, amx_int8 = false, amx_bf16 = false;
};

const CpuFeatures& cpu_features();
Isa best_isa();
// The ISA kernels use now: best_isa(), or PENSIEVE_ISA=scalar|avx2|avx512 (never above best_isa()).
Isa active_isa();
// For tests: force an ISA (clamped to what the CPU has). Returns the ISA actually set.
Isa set_active_isa(Isa isa);
const char* isa_name(Isa isa);
std::string cpu_features_string();

}  // namespace pensieve::kernels
