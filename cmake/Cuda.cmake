# The CUDA backend: with -DPENSIEVE_CUDA=ON and nvcc found, src/kernels/cuda
# and src/backend/cuda_backend.cu build into pensieve_cuda (Hopper, sm_90
# machine code plus PTX), linked with the static CUDA runtime so the binary
# starts, and serves on the CPU, where no NVIDIA driver is installed.
set(PENSIEVE_HAVE_CUDA OFF)
if(PENSIEVE_CUDA)
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 90)
    endif()
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    set(PENSIEVE_HAVE_CUDA ON)
    message(STATUS "pensieve: building the CUDA backend (${CMAKE_CUDA_COMPILER_VERSION}, sm_${CMAKE_CUDA_ARCHITECTURES})")
  else()
    message(WARNING "PENSIEVE_CUDA is on but no CUDA compiler (nvcc) was found: building without the CUDA backend")
  endif()
endif()
