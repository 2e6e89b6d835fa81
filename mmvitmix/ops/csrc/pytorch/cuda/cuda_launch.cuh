// The CUDA launch policy of the host code in common/cuda/*_cuda_host.h
// (the tests' emulation provides the same interface on the host).
#pragma once
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda/attention_cuda_helper.cuh"

namespace mmvitmix {
namespace cuda {

struct CudaLaunch {
  using Guard = at::cuda::OptionalCUDAGuard;

  static int64_t max_shared_bytes() {
    return at::cuda::getCurrentDeviceProperties()->sharedMemPerBlockOptin;
  }

  // kernel<<<blocks, kThreads, smem_bytes, current stream>>>(params)
  template <typename Params>
  static void launch(void (*kernel)(Params), int64_t blocks,
                     int64_t smem_bytes, const Params& params) {
    if (smem_bytes > 48 * 1024) {
      C10_CUDA_CHECK(cudaFuncSetAttribute(
          kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
          static_cast<int>(smem_bytes)));
    }
    kernel<<<static_cast<unsigned>(blocks), kThreads,
             static_cast<size_t>(smem_bytes),
             at::cuda::getCurrentCUDAStream()>>>(params);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

}  // namespace cuda
}  // namespace mmvitmix
