// CUDA entry points of ResT's EMSA core: the host code of
// common/cuda/emsa_cuda_host.h with the CUDA launch policy (kernels in
// common/cuda/emsa_cuda_kernel.cuh, op schema in pytorch/attention.cpp).
#include "cuda_launch.cuh"
#include "cuda/emsa_cuda_host.h"

namespace mmvitmix {

std::tuple<Tensor, Tensor, Tensor> emsa_forward_cuda(
    const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& weight,
    const Tensor& bias, double scale, double eps) {
  return cuda::emsa_forward_impl<cuda::CudaLaunch>(q, k, v, weight, bias,
                                                   scale, eps);
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> emsa_backward_cuda(
    const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,
    const Tensor& weight, const Tensor& bias, const Tensor& out,
    const Tensor& lse, const Tensor& dev2, double scale, double eps) {
  return cuda::emsa_backward_impl<cuda::CudaLaunch>(
      grad_out, q, k, v, weight, bias, out, lse, dev2, scale, eps);
}

}  // namespace mmvitmix
