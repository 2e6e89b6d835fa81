// Retention attention (RMT's Manhattan self-attention core): schema,
// argument checks and per-device entry points. The kernels live in
// cpu/retention_cpu.cpp and cuda/retention_cuda.cu.
//
//   out[b,h,s,i] = Σ_j softmax_j(q_i·k_j + log_decay[h]·dist(i, j)) v_j
//
// over the L positions of sequence (b, h, s); dist(i, j) = |i − j| when
// width == 0 (1-D), else the Manhattan distance of i and j on a grid with
// rows of `width` tokens (2-D, L = H·width). Tensors are 5-D
// (B, heads, S, L, D) with any strides; the output takes v's layout.
//
// Optional: rotary tables sin/cos (S, L, Dk) and a logit scale; then q and k
// are the un-rotated projections and the op uses q' = scale·rot(q),
// k' = rot(k) (see retention_rotary.hpp); gradients are w.r.t. q and k.
#include <torch/library.h>

#include "pytorch_cpp_helper.hpp"
#include "retention_rotary.hpp"

namespace mmvitmix {

std::tuple<Tensor, Tensor> retention_forward_cpu(const Tensor& q,
                                                 const Tensor& k,
                                                 const Tensor& v,
                                                 const Tensor& log_decay,
                                                 int64_t width,
                                                 const RotaryTables& rotary);
std::tuple<Tensor, Tensor, Tensor, Tensor> retention_backward_cpu(
    const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,
    const Tensor& out, const Tensor& lse, const Tensor& log_decay,
    int64_t width, bool decay_grad, const RotaryTables& rotary);
#ifdef MMVITMIX_WITH_CUDA
std::tuple<Tensor, Tensor> retention_forward_cuda(const Tensor& q,
                                                  const Tensor& k,
                                                  const Tensor& v,
                                                  const Tensor& log_decay,
                                                  int64_t width);
std::tuple<Tensor, Tensor, Tensor, Tensor> retention_backward_cuda(
    const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,
    const Tensor& out, const Tensor& lse, const Tensor& log_decay,
    int64_t width, bool decay_grad);
#endif

namespace {

constexpr const char* kOp = "retention";

void check_inputs(const Tensor& q, const Tensor& k, const Tensor& v,
                  const Tensor& log_decay, int64_t width) {
  check_dim(kOp, "q", q, 5, "(B, heads, S, L, Dk)");
  check_dim(kOp, "k", k, 5, "(B, heads, S, L, Dk)");
  check_dim(kOp, "v", v, 5, "(B, heads, S, L, Dv)");
  check_floating(kOp, "q", q);
  TORCH_CHECK(k.scalar_type() == q.scalar_type() &&
                  v.scalar_type() == q.scalar_type(),
              "retention: q, k and v must share a dtype, got ",
              q.scalar_type(), ", ", k.scalar_type(), ", ", v.scalar_type());
  TORCH_CHECK(k.sizes() == q.sizes(), "retention: k shape ", k.sizes(),
              " must equal q shape ", q.sizes());
  for (int64_t d = 0; d < 4; ++d) {
    TORCH_CHECK(v.size(d) == q.size(d), "retention: v shape ", v.sizes(),
                " must match q shape ", q.sizes(), " in all but the last dim");
  }
  TORCH_CHECK(q.size(4) > 0 && v.size(4) > 0,
              "retention: head dims must be positive, got Dk=", q.size(4),
              " Dv=", v.size(4));
  check_dim(kOp, "log_decay", log_decay, 1, "(heads,)");
  check_floating(kOp, "log_decay", log_decay);
  TORCH_CHECK(log_decay.size(0) == q.size(1), "retention: log_decay has ",
              log_decay.size(0), " entries for ", q.size(1), " heads");
  check_same_device(kOp, "k", k, q);
  check_same_device(kOp, "v", v, q);
  check_same_device(kOp, "log_decay", log_decay, q);
  TORCH_CHECK(width >= 0, "retention: width must be 0 (1-D) or the grid "
              "width (2-D), got ", width);
  TORCH_CHECK(width == 0 || q.size(3) % width == 0, "retention: L=",
              q.size(3), " tokens do not fill rows of width ", width);
}

// k's share of the rotary step (rotation, no scale)
RotaryTables key_part(const RotaryTables& r) {
  RotaryTables k = r;
  k.scale = 1.0;
  return k;
}

void check_backward_inputs(const Tensor& grad_out, const Tensor& q,
                           const Tensor& k, const Tensor& v, const Tensor& out,
                           const Tensor& lse, const Tensor& log_decay,
                           int64_t width) {
  check_inputs(q, k, v, log_decay, width);
  TORCH_CHECK(grad_out.sizes() == v.sizes() && out.sizes() == v.sizes(),
              "retention: grad_out ", grad_out.sizes(), " and out ",
              out.sizes(), " must have v's shape ", v.sizes());
  TORCH_CHECK(grad_out.scalar_type() == q.scalar_type() &&
                  out.scalar_type() == q.scalar_type(),
              "retention: grad_out and out must have q's dtype ",
              q.scalar_type());
  TORCH_CHECK(lse.sizes() == q.sizes().slice(0, 4) &&
                  lse.scalar_type() == stats_dtype(q.scalar_type()),
              "retention: lse must be ", stats_dtype(q.scalar_type()),
              " of shape ", q.sizes().slice(0, 4), ", got ", lse.scalar_type(),
              " ", lse.sizes());
  check_same_device(kOp, "grad_out", grad_out, q);
  check_same_device(kOp, "out", out, q);
  check_same_device(kOp, "lse", lse, q);
}

// Per-device entry points, registered below for the CPU and CUDA dispatch
// keys (the dispatcher picks the device; no device branches here).

std::tuple<Tensor, Tensor> retention_forward_cpu_entry(
    const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& log_decay,
    int64_t width, const std::optional<Tensor>& sin,
    const std::optional<Tensor>& cos, double scale) {
  check_inputs(q, k, v, log_decay, width);
  return retention_forward_cpu(q, k, v, log_decay, width,
                               make_rotary(kOp, q, sin, cos, scale));
}

std::tuple<Tensor, Tensor, Tensor, Tensor> retention_backward_cpu_entry(
    const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,
    const Tensor& out, const Tensor& lse, const Tensor& log_decay,
    int64_t width, bool decay_grad, const std::optional<Tensor>& sin,
    const std::optional<Tensor>& cos, double scale) {
  check_backward_inputs(grad_out, q, k, v, out, lse, log_decay, width);
  return retention_backward_cpu(grad_out, q, k, v, out, lse, log_decay, width,
                                decay_grad,
                                make_rotary(kOp, q, sin, cos, scale));
}

#ifdef MMVITMIX_WITH_CUDA
std::tuple<Tensor, Tensor> retention_forward_cuda_entry(
    const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& log_decay,
    int64_t width, const std::optional<Tensor>& sin,
    const std::optional<Tensor>& cos, double scale) {
  check_inputs(q, k, v, log_decay, width);
  const RotaryTables rot = make_rotary(kOp, q, sin, cos, scale);
  // the CUDA kernels take q', k': rotate with ATen first
  return retention_forward_cuda(rotary_apply(q, rot, false),
                                rotary_apply(k, key_part(rot), false), v,
                                log_decay, width);
}

std::tuple<Tensor, Tensor, Tensor, Tensor> retention_backward_cuda_entry(
    const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,
    const Tensor& out, const Tensor& lse, const Tensor& log_decay,
    int64_t width, bool decay_grad, const std::optional<Tensor>& sin,
    const std::optional<Tensor>& cos, double scale) {
  check_backward_inputs(grad_out, q, k, v, out, lse, log_decay, width);
  const RotaryTables rot = make_rotary(kOp, q, sin, cos, scale);
  if (rot.is_identity()) {
    return retention_backward_cuda(grad_out, q, k, v, out, lse, log_decay,
                                   width, decay_grad);
  }
  // gradients w.r.t. q', k', then back through scale · rotᵀ
  const RotaryTables krot = key_part(rot);
  auto grads = retention_backward_cuda(
      grad_out, rotary_apply(q, rot, false), rotary_apply(k, krot, false), v,
      out, lse, log_decay, width, decay_grad);
  return {rotary_apply(std::get<0>(grads), rot, true),
          rotary_apply(std::get<1>(grads), krot, true), std::get<2>(grads),
          std::get<3>(grads)};
}
#endif

// scale · rot(x) or scale · rotᵀ(x) with ATen: the pre/post-processing of
// the CUDA route, exposed so that it can be tested on any device
Tensor retention_rotary(const Tensor& x, const Tensor& sin, const Tensor& cos,
                        double scale, bool transpose) {
  check_dim("retention_rotary", "x", x, 5, "(B, heads, S, L, Dk)");
  check_floating("retention_rotary", "x", x);
  return rotary_apply(
      x, make_rotary("retention_rotary", x, sin, cos, scale), transpose);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mmvitmix, m) {
  m.def(
      "retention_forward(Tensor q, Tensor k, Tensor v, Tensor log_decay, "
      "int width, Tensor? sin=None, Tensor? cos=None, float scale=1.0) -> "
      "(Tensor, Tensor)");
  m.def(
      "retention_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, "
      "Tensor out, Tensor lse, Tensor log_decay, int width, bool decay_grad, "
      "Tensor? sin=None, Tensor? cos=None, float scale=1.0) -> "
      "(Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "retention_rotary(Tensor x, Tensor sin, Tensor cos, float scale, "
      "bool transpose) -> Tensor");
}

TORCH_LIBRARY_IMPL(mmvitmix, CPU, m) {
  m.impl("retention_forward", &retention_forward_cpu_entry);
  m.impl("retention_backward", &retention_backward_cpu_entry);
}

TORCH_LIBRARY_IMPL(mmvitmix, CompositeImplicitAutograd, m) {
  m.impl("retention_rotary", &retention_rotary);
}

#ifdef MMVITMIX_WITH_CUDA
TORCH_LIBRARY_IMPL(mmvitmix, CUDA, m) {
  m.impl("retention_forward", &retention_forward_cuda_entry);
  m.impl("retention_backward", &retention_backward_cuda_entry);
}
#endif

}  // namespace mmvitmix
