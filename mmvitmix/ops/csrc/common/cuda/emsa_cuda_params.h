// Host-side set-up of the EMSA kernels' parameter block, shared by the CUDA
// launchers (pytorch/cuda/emsa_cuda.cu) and the host emulation of the
// kernels in tests/test_ops/cuda_emulation.
#pragma once
#include "cuda/emsa_cuda_kernel.cuh"
#include "pytorch_cpp_helper.hpp"

namespace mmvitmix {
namespace cuda {

// pointers, strides and sizes of q (B, H, N, D), k (B, H, M, D), v and the
// head-mixing weights
template <typename scalar_t, typename acc_t>
EmsaCudaParams<scalar_t, acc_t> make_emsa_params(const Tensor& q,
                                                  const Tensor& k,
                                                  const Tensor& v,
                                                  const Tensor& W,
                                                  const Tensor& bias,
                                                  double scale) {
  EmsaCudaParams<scalar_t, acc_t> p{};
  p.q = q.data_ptr<scalar_t>();
  p.k = k.data_ptr<scalar_t>();
  p.v = v.data_ptr<scalar_t>();
  p.W = W.data_ptr<acc_t>();
  p.bias = bias.data_ptr<acc_t>();
  strides_of<4>(q, p.qs);
  strides_of<4>(k, p.ks);
  strides_of<4>(v, p.vs);
  p.B = q.size(0);
  p.H = q.size(1);
  p.N = q.size(2);
  p.M = k.size(2);
  p.D = q.size(3);
  p.Dv = v.size(3);
  p.scale = static_cast<acc_t>(scale);
  return p;
}

}  // namespace cuda
}  // namespace mmvitmix
