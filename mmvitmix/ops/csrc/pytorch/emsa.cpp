// ResT's EMSA attention core: schema, argument checks, per-device entry
// points.
// Kernels: cpu/emsa_cpu.cpp, cuda/emsa_cuda.cu.
//
// Per batch element, logits of every head g: T_g = scale · q_g k_gᵀ (N×M);
// heads mixed by a 1×1 conv: T'_h = Σ_g W[h, g] T_g + b_h;
// P_h = softmax(T'_h) per row; InstanceNorm of each head's N×M map (no
// affine, biased variance) times V. Because every row of P_h sums to one,
// mean(P_h) = 1/M exactly and
//   out_h,i = Σ_j (P_h,ij − 1/M) v_h,j / σ_h,
//   σ_h² = Σ_ij (P_h,ij − 1/M)² / (N·M) + eps,
// so one flash-style pass that also accumulates the centred row sums
// suffices; no N×M map is stored. Forward returns (out, lse, dev2): out in
// token-major memory ((B, N, heads, Dv) permuted to (B, heads, N, Dv)), the
// per-row logsumexp and dev2_i = Σ_j (P_ij − 1/M)² (float32; float64 for
// float64 inputs). The gradient of the mixing bias is exactly zero (it
// shifts whole softmax rows) and is returned as zeros.
#include <torch/library.h>

#include "pytorch_cpp_helper.hpp"

namespace mmvitmix {

std::tuple<Tensor, Tensor, Tensor> emsa_forward_cpu(
    const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& weight,
    const Tensor& bias, double scale, double eps);
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> emsa_backward_cpu(
    const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,
    const Tensor& weight, const Tensor& bias, const Tensor& out,
    const Tensor& lse, const Tensor& dev2, double scale, double eps);
#ifdef MMVITMIX_WITH_CUDA
std::tuple<Tensor, Tensor, Tensor> emsa_forward_cuda(
    const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& weight,
    const Tensor& bias, double scale, double eps);
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> emsa_backward_cuda(
    const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,
    const Tensor& weight, const Tensor& bias, const Tensor& out,
    const Tensor& lse, const Tensor& dev2, double scale, double eps);
#endif

namespace {

constexpr const char* kOp = "emsa";

void check_inputs(const Tensor& q, const Tensor& k, const Tensor& v,
                  const Tensor& weight, const Tensor& bias, double eps) {
  check_dim(kOp, "q", q, 4, "(B, heads, N, D)");
  check_dim(kOp, "k", k, 4, "(B, heads, M, D)");
  check_dim(kOp, "v", v, 4, "(B, heads, M, Dv)");
  check_floating(kOp, "q", q);
  TORCH_CHECK(k.scalar_type() == q.scalar_type() &&
                  v.scalar_type() == q.scalar_type(),
              "emsa: q, k and v must share a dtype, got ", q.scalar_type(),
              ", ", k.scalar_type(), ", ", v.scalar_type());
  TORCH_CHECK(k.size(0) == q.size(0) && k.size(1) == q.size(1) &&
                  k.size(3) == q.size(3),
              "emsa: k shape ", k.sizes(), " does not match q shape ",
              q.sizes(), " (B, heads, *, D)");
  TORCH_CHECK(v.size(0) == k.size(0) && v.size(1) == k.size(1) &&
                  v.size(2) == k.size(2),
              "emsa: v shape ", v.sizes(), " does not match k shape ",
              k.sizes(), " (B, heads, M, *)");
  TORCH_CHECK(k.size(2) > 0, "emsa: needs at least one key (M > 0)");
  TORCH_CHECK(q.size(3) > 0 && v.size(3) > 0,
              "emsa: head dims must be positive, got D=", q.size(3),
              " Dv=", v.size(3));
  const int64_t heads = q.size(1);
  check_dim(kOp, "weight", weight, 2, "(heads, heads)");
  check_dim(kOp, "bias", bias, 1, "(heads,)");
  check_floating(kOp, "weight", weight);
  check_floating(kOp, "bias", bias);
  TORCH_CHECK(weight.size(0) == heads && weight.size(1) == heads,
              "emsa: weight must be (", heads, ", ", heads, "), got ",
              weight.sizes());
  TORCH_CHECK(bias.size(0) == heads, "emsa: bias must have ", heads,
              " entries, got ", bias.size(0));
  TORCH_CHECK(eps >= 0, "emsa: eps must be >= 0, got ", eps);
  check_same_device(kOp, "k", k, q);
  check_same_device(kOp, "v", v, q);
  check_same_device(kOp, "weight", weight, q);
  check_same_device(kOp, "bias", bias, q);
}

void check_backward_inputs(const Tensor& grad_out, const Tensor& q,
                           const Tensor& k, const Tensor& v,
                           const Tensor& weight, const Tensor& bias,
                           const Tensor& out, const Tensor& lse,
                           const Tensor& dev2, double eps) {
  check_inputs(q, k, v, weight, bias, eps);
  const std::vector<int64_t> out_shape{q.size(0), q.size(1), q.size(2),
                                       v.size(3)};
  TORCH_CHECK(grad_out.sizes() == out_shape && out.sizes() == out_shape,
              "emsa: grad_out ", grad_out.sizes(), " and out ", out.sizes(),
              " must be ", at::IntArrayRef(out_shape));
  TORCH_CHECK(grad_out.scalar_type() == q.scalar_type() &&
                  out.scalar_type() == q.scalar_type(),
              "emsa: grad_out and out must have q's dtype ", q.scalar_type());
  const auto stats = stats_dtype(q.scalar_type());
  TORCH_CHECK(lse.sizes() == q.sizes().slice(0, 3) &&
                  dev2.sizes() == q.sizes().slice(0, 3) &&
                  lse.scalar_type() == stats && dev2.scalar_type() == stats,
              "emsa: lse and dev2 must be ", stats, " of shape ",
              q.sizes().slice(0, 3));
  check_same_device(kOp, "grad_out", grad_out, q);
  check_same_device(kOp, "out", out, q);
  check_same_device(kOp, "lse", lse, q);
  check_same_device(kOp, "dev2", dev2, q);
}

// Per-device entry points, registered below for the CPU and CUDA dispatch
// keys (the dispatcher picks the device; no device branches here).
template <typename Fn>
std::tuple<Tensor, Tensor, Tensor> forward_entry(
    Fn kernel, const Tensor& q, const Tensor& k, const Tensor& v,
    const Tensor& weight, const Tensor& bias, double scale, double eps) {
  check_inputs(q, k, v, weight, bias, eps);
  return kernel(q, k, v, weight, bias, scale, eps);
}

template <typename Fn>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> backward_entry(
    Fn kernel, const Tensor& grad_out, const Tensor& q, const Tensor& k,
    const Tensor& v, const Tensor& weight, const Tensor& bias,
    const Tensor& out, const Tensor& lse, const Tensor& dev2, double scale,
    double eps) {
  check_backward_inputs(grad_out, q, k, v, weight, bias, out, lse, dev2, eps);
  return kernel(grad_out, q, k, v, weight, bias, out, lse, dev2, scale, eps);
}

std::tuple<Tensor, Tensor, Tensor> emsa_forward_cpu_entry(
    const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& weight,
    const Tensor& bias, double scale, double eps) {
  return forward_entry(emsa_forward_cpu, q, k, v, weight, bias, scale, eps);
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> emsa_backward_cpu_entry(
    const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,
    const Tensor& weight, const Tensor& bias, const Tensor& out,
    const Tensor& lse, const Tensor& dev2, double scale, double eps) {
  return backward_entry(emsa_backward_cpu, grad_out, q, k, v, weight, bias,
                        out, lse, dev2, scale, eps);
}

#ifdef MMVITMIX_WITH_CUDA
std::tuple<Tensor, Tensor, Tensor> emsa_forward_cuda_entry(
    const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& weight,
    const Tensor& bias, double scale, double eps) {
  return forward_entry(emsa_forward_cuda, q, k, v, weight, bias, scale, eps);
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> emsa_backward_cuda_entry(
    const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,
    const Tensor& weight, const Tensor& bias, const Tensor& out,
    const Tensor& lse, const Tensor& dev2, double scale, double eps) {
  return backward_entry(emsa_backward_cuda, grad_out, q, k, v, weight, bias,
                        out, lse, dev2, scale, eps);
}
#endif

}  // namespace

TORCH_LIBRARY_FRAGMENT(mmvitmix, m) {
  m.def(
      "emsa_forward(Tensor q, Tensor k, Tensor v, Tensor weight, "
      "Tensor bias, float scale, float eps) -> (Tensor, Tensor, Tensor)");
  m.def(
      "emsa_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, "
      "Tensor weight, Tensor bias, Tensor out, Tensor lse, Tensor dev2, "
      "float scale, float eps) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(mmvitmix, CPU, m) {
  m.impl("emsa_forward", &emsa_forward_cpu_entry);
  m.impl("emsa_backward", &emsa_backward_cpu_entry);
}

#ifdef MMVITMIX_WITH_CUDA
TORCH_LIBRARY_IMPL(mmvitmix, CUDA, m) {
  m.impl("emsa_forward", &emsa_forward_cuda_entry);
  m.impl("emsa_backward", &emsa_backward_cuda_entry);
}
#endif

}  // namespace mmvitmix
