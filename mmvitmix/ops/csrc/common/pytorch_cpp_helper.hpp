// Shared helpers of the mmvitmix C++ ops (argument checks, accumulator types).
#pragma once
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <string>
#include <tuple>

namespace mmvitmix {

using at::Tensor;

// float for half / bfloat16 / float, double for double
template <typename scalar_t>
using acc_type_t = at::opmath_type<scalar_t>;

// dtype of the per-row statistics (logsumexp, Σ P²) saved for backward
inline at::ScalarType stats_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_floating(const char* op, const char* name, const Tensor& t) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble ||
                  t.scalar_type() == at::kHalf ||
                  t.scalar_type() == at::kBFloat16,
              op, ": ", name,
              " must be float32, float64, float16 or bfloat16, got ",
              t.scalar_type());
}

inline void check_dim(const char* op, const char* name, const Tensor& t,
                      int64_t dim, const char* layout) {
  TORCH_CHECK(t.dim() == dim, op, ": ", name, " must be ", dim, "-D ", layout,
              ", got shape ", t.sizes());
}

// every named tensor on ref's device: (op, ref, "k", k, "v", v, ...)
template <typename... Rest>
inline void check_same_device(const char* op, const Tensor& ref,
                              const char* name, const Tensor& t,
                              const Rest&... rest) {
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " is on ",
              t.device(), " but q is on ", ref.device());
  if constexpr (sizeof...(Rest) > 0) check_same_device(op, ref, rest...);
}

// the first N strides of t into dst (kernel parameter blocks)
template <int N>
inline void strides_of(const Tensor& t, int64_t* dst) {
  for (int i = 0; i < N; ++i) dst[i] = t.stride(i);
}

// a view whose last dim has unit stride (copies only when it has not)
inline Tensor unit_last_stride(const Tensor& t) {
  return t.size(-1) <= 1 || t.stride(-1) == 1 ? t : t.contiguous();
}

}  // namespace mmvitmix
