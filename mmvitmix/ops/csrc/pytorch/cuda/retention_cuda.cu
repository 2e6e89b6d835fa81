// CUDA entry points of retention attention: the host code of
// common/cuda/retention_cuda_host.h with the CUDA launch policy (kernels in
// common/cuda/retention_cuda_kernel.cuh, op schema in pytorch/attention.cpp).
#include "cuda/retention_cuda_host.h"
#include "cuda_launch.cuh"

namespace mmvitmix {

std::tuple<Tensor, Tensor> retention_forward_cuda(const Tensor& q,
                                                  const Tensor& k,
                                                  const Tensor& v,
                                                  const Tensor& log_decay,
                                                  int64_t width) {
  return cuda::retention_forward_impl<cuda::CudaLaunch>(q, k, v, log_decay,
                                                        width);
}

std::tuple<Tensor, Tensor, Tensor, Tensor> retention_backward_cuda(
    const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,
    const Tensor& out, const Tensor& lse, const Tensor& log_decay,
    int64_t width, bool decay_grad) {
  return cuda::retention_backward_impl<cuda::CudaLaunch>(
      grad_out, q, k, v, out, lse, log_decay, width, decay_grad);
}

}  // namespace mmvitmix
