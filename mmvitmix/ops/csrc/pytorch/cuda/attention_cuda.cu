// The attention ops' CUDA kernels (schemas in pytorch/attention.cpp): the
// host code of common/cuda/{retention,emsa}_cuda_host.h run with the CUDA
// launch policy.
#include <torch/library.h>

#include "cuda/emsa_cuda_host.h"
#include "cuda/retention_cuda_host.h"
#include "cuda_launch.cuh"

namespace mmvitmix {

TORCH_LIBRARY_IMPL(mmvitmix, CUDA, m) {
  using cuda::CudaLaunch;
  m.impl("retention_forward", &cuda::retention_forward_impl<CudaLaunch>);
  m.impl("retention_backward", &cuda::retention_backward_impl<CudaLaunch>);
  m.impl("emsa_forward", &cuda::emsa_forward_impl<CudaLaunch>);
  m.impl("emsa_backward", &cuda::emsa_backward_impl<CudaLaunch>);
}

}  // namespace mmvitmix
