// Helpers shared by the CUDA attention kernels.
//
// The kernels use only block-level CUDA features (threadIdx / blockIdx /
// blockDim, static and dynamic shared memory, __syncthreads, atomicAdd) and
// no warp-level intrinsics, so the same source also compiles as host C++
// when MMVITMIX_CUDA_EMULATION is defined: tests/test_ops/cuda_emulation
// then runs every thread of a block as a host thread with a barrier for
// __syncthreads, which checks the kernels' indexing, tiling and
// synchronisation on machines without a GPU.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdint>

#ifdef MMVITMIX_CUDA_EMULATION
#include "cuda_emulation.h"  // threadIdx, __syncthreads, ... on the host
#define MMVITMIX_EXTERN_SHARED(type, name) \
  type* name = ::mmvitmix_emulation::dynamic_shared<type>()
#define MMVITMIX_DEVICE inline
#define MMVITMIX_GLOBAL
#else
#define MMVITMIX_EXTERN_SHARED(type, name)                     \
  extern __shared__ __align__(16) unsigned char name##_raw[]; \
  type* name = reinterpret_cast<type*>(name##_raw)
#define MMVITMIX_DEVICE __device__ __forceinline__
#define MMVITMIX_GLOBAL __global__
#endif

namespace mmvitmix {
namespace cuda {

constexpr int kThreads = 128;

template <typename T>
MMVITMIX_DEVICE T to_acc_exp(T x);

template <>
MMVITMIX_DEVICE float to_acc_exp<float>(float x) {
  return expf(x);
}

template <>
MMVITMIX_DEVICE double to_acc_exp<double>(double x) {
  return exp(x);
}

template <typename T>
MMVITMIX_DEVICE T acc_log(T x) {
  return log(x);
}

template <typename T>
MMVITMIX_DEVICE T neg_inf() {
  return -static_cast<T>(INFINITY);
}

// bucket of a head dim: the smallest of 16, 32, 64, 128 that holds it
inline int head_dim_bucket(int64_t d) {
  return d <= 16 ? 16 : d <= 32 ? 32 : d <= 64 ? 64 : 128;
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace cuda
}  // namespace mmvitmix
