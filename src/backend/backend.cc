#include "backend/backend.h"

#include "backend/cpu_backend.h"
#include <fmt/format.h>

#include "core/error.h"

#ifdef PENSIEVE_HAVE_CUDA
#include "backend/cuda_backend.h"
#endif

namespace pensieve {

std::string cuda_unavailable_reason() {
#ifdef PENSIEVE_HAVE_CUDA
  return cuda_probe();
#else
  return "this build has no CUDA backend (configure with -DPENSIEVE_CUDA=ON where nvcc is installed)";
#endif
}

std::string device_fit_problem(const std::string& device_name, int64_t weight_bytes,
                               int64_t min_kv_bytes, int64_t workspace_bytes, int64_t available) {
  const int64_t need = weight_bytes + min_kv_bytes + workspace_bytes;
  if (available <= 0 || need <= available) return "";
  auto gib = [](int64_t b) { return fmt::format("{:.2f} GiB", static_cast<double>(b) / (1 << 30)); };
  return fmt::format(
      "the model does not fit {}: it needs {} (weights {}, KV cache for the shortest context {}, "
      "work space {}) and {} is free; use a smaller or more quantized model, free the GPU, or "
      "--device cpu",
      device_name, gib(need), gib(weight_bytes), gib(min_kv_bytes), gib(workspace_bytes),
      gib(available));
}

std::unique_ptr<Backend> make_backend(const std::string& device, int n_threads) {
  if (device != "auto" && device != "cpu" && device != "cuda")
    fail("device '{}' is not one of auto, cpu, cuda", device);
  if (device == "cpu") return std::make_unique<CpuBackend>(n_threads);
  const std::string why_not = cuda_unavailable_reason();
  if (!why_not.empty()) {
    if (device == "cuda") fail(ErrorKind::unsupported, "--device cuda: {}", why_not);
    return std::make_unique<CpuBackend>(n_threads);
  }
#ifdef PENSIEVE_HAVE_CUDA
  return make_cuda_backend();
#else
  return std::make_unique<CpuBackend>(n_threads);
#endif
}

}  // namespace pensieve
