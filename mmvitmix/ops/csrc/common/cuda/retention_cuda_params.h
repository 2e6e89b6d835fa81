// Host-side set-up of the retention kernels' parameter block, shared by the
// CUDA launchers (pytorch/cuda/retention_cuda.cu) and the host emulation
// of the kernels in tests/test_ops/cuda_emulation, so that the tests check
// the same set-up the launchers use.
#pragma once
#include "cuda/retention_cuda_kernel.cuh"
#include "pytorch_cpp_helper.hpp"

namespace mmvitmix {
namespace cuda {

// pointers, strides and sizes of q, k, v (B, heads, S, L, D) and the decay
template <typename scalar_t, typename acc_t>
RetentionCudaParams<scalar_t, acc_t> make_retention_params(
    const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& decay,
    int64_t width) {
  RetentionCudaParams<scalar_t, acc_t> p{};
  p.q = q.data_ptr<scalar_t>();
  p.k = k.data_ptr<scalar_t>();
  p.v = v.data_ptr<scalar_t>();
  p.log_decay = decay.data_ptr<acc_t>();
  strides_of<5>(q, p.qs);
  strides_of<5>(k, p.ks);
  strides_of<5>(v, p.vs);
  p.heads = q.size(1);
  p.seqs = q.size(2);
  p.L = q.size(3);
  p.dim_k = q.size(4);
  p.dim_v = v.size(4);
  p.width = width;
  return p;
}

}  // namespace cuda
}  // namespace mmvitmix

// calls FN<scalar_t, acc_t, bucket>(args...) for the head-dim bucket
#define MMVITMIX_DISPATCH_HEAD_DIM(bucket, FN, ...)                     \
  switch (bucket) {                                                   \
    case 16:                                                          \
      FN<scalar_t, acc_t, 16>(__VA_ARGS__);                           \
      break;                                                          \
    case 32:                                                          \
      FN<scalar_t, acc_t, 32>(__VA_ARGS__);                           \
      break;                                                          \
    case 64:                                                          \
      FN<scalar_t, acc_t, 64>(__VA_ARGS__);                           \
      break;                                                          \
    default:                                                          \
      FN<scalar_t, acc_t, 128>(__VA_ARGS__);                          \
  }
