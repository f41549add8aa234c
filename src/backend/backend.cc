#include "backend/backend.h"

#include "backend/cpu_backend.h"
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
