// The rotary position shift RMT applies to queries and keys (its
// theta_shift), as an optional part of the retention op:
//   q' = scale · rot(q),  k' = rot(k),
//   rot(x)[2m] = x[2m]·cos[2m] − x[2m+1]·sin[2m],
//   rot(x)[2m+1] = x[2m+1]·cos[2m+1] + x[2m]·sin[2m+1],
// with sin/cos tables (S, L, Dk) shared by the batch and the heads. The CPU
// kernels apply it while gathering q and k; for the CUDA kernels the op
// rotates with the ATen functions below before the kernel and maps the
// gradients back through rotᵀ after it.
#pragma once
#include <ATen/ATen.h>

#include <cmath>
#include <optional>

#include "pytorch_cpp_helper.hpp"

namespace mmvitmix {

struct RotaryTables {
  Tensor sin, cos;  // undefined: no rotation
  double scale = 1.0;

  bool rotates() const { return sin.defined(); }
  bool is_identity() const { return !rotates() && scale == 1.0; }

  // the tables in dtype t with a unit last stride (other strides kept)
  RotaryTables to(at::ScalarType t) const {
    RotaryTables r;
    r.scale = scale;
    if (rotates()) {
      r.sin = unit_last_stride(sin.to(t));
      r.cos = unit_last_stride(cos.to(t));
    }
    return r;
  }
};

// checks the op's optional (sin, cos, scale) against q (B, heads, S, L, Dk)
inline RotaryTables make_rotary(const char* op, const Tensor& q,
                                const std::optional<Tensor>& sin,
                                const std::optional<Tensor>& cos,
                                double scale) {
  RotaryTables r;
  r.scale = scale;
  TORCH_CHECK(std::isfinite(scale), op, ": scale must be finite, got ", scale);
  const bool has_sin = sin.has_value() && sin->defined();
  const bool has_cos = cos.has_value() && cos->defined();
  TORCH_CHECK(has_sin == has_cos, op,
              ": give both rotary tables sin and cos, or neither");
  if (!has_sin) return r;
  const auto expect = q.sizes().slice(2, 3);
  for (const Tensor* t : {&*sin, &*cos}) {
    const char* name = t == &*sin ? "sin" : "cos";
    TORCH_CHECK(t->sizes() == expect, op, ": rotary table ", name,
                " must be (S, L, Dk) = ", expect, ", got ", t->sizes());
    check_floating(op, name, *t);
    check_same_device(op, name, *t, q);
  }
  TORCH_CHECK(q.size(4) % 2 == 0, op,
              ": the rotary shift pairs channels, Dk must be even, got ",
              q.size(4));
  r.sin = *sin;
  r.cos = *cos;
  return r;
}

// scale · rot(x) (transpose=false) or scale · rotᵀ(x) (transpose=true) for
// x (..., S, L, Dk), computed in float32 (float64 for float64) with ATen on
// any device; the result has x's dtype
inline Tensor rotary_apply(const Tensor& x, const RotaryTables& r,
                           bool transpose) {
  if (r.is_identity()) return x;
  const auto stats = stats_dtype(x.scalar_type());
  const Tensor xs = x.to(stats);
  if (!r.rotates()) return (xs * r.scale).to(x.scalar_type());
  const Tensor sn = r.sin.to(stats), cs = r.cos.to(stats);
  const int64_t n = x.size(-1);
  const Tensor x0 = xs.slice(-1, 0, n, 2), x1 = xs.slice(-1, 1, n, 2);
  const Tensor s0 = sn.slice(-1, 0, n, 2), s1 = sn.slice(-1, 1, n, 2);
  const Tensor c0 = cs.slice(-1, 0, n, 2), c1 = cs.slice(-1, 1, n, 2);
  Tensor even, odd;
  if (transpose) {
    even = x0 * c0 + x1 * s1;
    odd = x1 * c1 - x0 * s0;
  } else {
    even = x0 * c0 - x1 * s0;
    odd = x1 * c1 + x0 * s1;
  }
  Tensor out = at::stack({even, odd}, -1).flatten(-2);
  if (r.scale != 1.0) out = out * r.scale;
  return out.to(x.scalar_type());
}

}  // namespace mmvitmix
