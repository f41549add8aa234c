// The CUDA backend (kernels/cuda on one stream). Built only with
// -DPENSIEVE_CUDA=ON; make_backend() picks it.
#pragma once

#include <memory>
#include <string>

#include "backend/backend.h"

namespace pensieve {

// "" when a CUDA device this build can run on is present, else why not.
std::string cuda_probe();
std::unique_ptr<Backend> make_cuda_backend();

}  // namespace pensieve
