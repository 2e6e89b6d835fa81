// Host code of ResT's EMSA op around its CUDA kernels: argument checks, the
// kernels' parameter block, the tile choice, the launches and the cheap
// per-(batch, head) reductions around them (σ, mean v, the row terms of the
// backward; ATen ops on (B, H, N)-sized tensors). Templated on a launch
// policy `Launch` (see retention_cuda_host.h), so that the same code runs
// the kernels on a GPU (pytorch/cuda/attention_cuda.cu) and on the host in
// the tests (tests/test_ops/cuda_emulation).
//
// The op and the identities it uses: see emsa_cuda_kernel.cuh. Forward
// returns (out, lse, dev2): out in token-major memory ((B, N, heads, Dv)
// permuted to (B, heads, N, Dv)), the per-row logsumexp and
// dev2_i = Σ_j (P_ij − 1/M)² (float32; float64 for float64 inputs). The
// gradient of the mixing bias is exactly zero and is returned as zeros.
#pragma once
#include <climits>
#include <tuple>
#include <vector>

#include "cuda/emsa_cuda_kernel.cuh"
#include "pytorch_cpp_helper.hpp"

namespace mmvitmix {
namespace cuda {

inline void check_emsa_inputs(const Tensor& q, const Tensor& k,
                              const Tensor& v, const Tensor& weight,
                              const Tensor& bias, double eps) {
  constexpr const char* kOp = "emsa";
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
  check_same_device(kOp, q, "k", k, "v", v, "weight", weight, "bias", bias);
}

inline void check_emsa_backward_inputs(
    const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,
    const Tensor& weight, const Tensor& bias, const Tensor& out,
    const Tensor& lse, const Tensor& dev2, double eps) {
  constexpr const char* kOp = "emsa";
  check_emsa_inputs(q, k, v, weight, bias, eps);
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
  check_same_device(kOp, q, "grad_out", grad_out, "out", out, "lse", lse,
                    "dev2", dev2);
}

// pointers, strides and sizes of q (B, H, N, D), k (B, H, M, D), v and the
// head-mixing weights
template <typename scalar_t, typename acc_t>
EmsaCudaParams<scalar_t, acc_t> make_emsa_params(
    const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& W,
    const Tensor& bias, double scale) {
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

// picks the tiles for the device's shared memory and launches one block per
// (batch, tile)
template <typename Launch, typename Kernel, typename Params>
void emsa_launch(Kernel kernel, Params p, EmsaKernel kind, int64_t rows,
                 int64_t elem_bytes) {
  const int64_t max_bytes = Launch::max_shared_bytes();
  TORCH_CHECK(emsa_choose_tiles(kind, p.H, p.D, p.Dv, elem_bytes, max_bytes,
                                &p.BQ, &p.BK),
              "emsa: ", p.H, " heads of dims ", p.D, "/", p.Dv,
              " do not fit in shared memory (", max_bytes, " bytes)");
  const int64_t bytes =
      emsa_smem_elems(kind, p.H, p.D, p.Dv, p.BQ, p.BK) * elem_bytes;
  p.num_tiles =
      ceil_div(rows, kind == EmsaKernel::kBackwardDkv ? p.BK : p.BQ);
  const int64_t blocks = p.B * p.num_tiles;
  TORCH_CHECK(blocks <= INT_MAX, "emsa: ", blocks,
              " blocks exceed the grid limit; split the batch");
  Launch::launch(kernel, blocks, bytes, p);
}

// σ = sqrt(Σ_i dev2_i / (N·M) + eps), shape (B, H, 1, 1)
inline Tensor emsa_sigma(const Tensor& dev2, int64_t N, int64_t M,
                         double eps) {
  const double inv_nm = 1.0 / (static_cast<double>(N) * M);
  return (dev2.sum(-1) * inv_nm).add(eps).sqrt().view(
      {dev2.size(0), dev2.size(1), 1, 1});
}

template <typename Launch>
std::tuple<Tensor, Tensor, Tensor> emsa_forward_impl(
    const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
    const Tensor& weight, const Tensor& bias_in, double scale, double eps) {
  check_emsa_inputs(q_in, k_in, v_in, weight, bias_in, eps);
  const typename Launch::Guard guard(q_in.device());
  const Tensor q = unit_last_stride(q_in), k = unit_last_stride(k_in),
               v = unit_last_stride(v_in);
  const int64_t B = q.size(0), H = q.size(1), N = q.size(2), M = k.size(2),
                Dv = v.size(3);
  const auto stats = stats_dtype(q.scalar_type());
  Tensor lse = at::empty({B, H, N}, q.options().dtype(stats));
  Tensor dev2 = at::empty({B, H, N}, q.options().dtype(stats));
  // token-major memory (B, N, heads, Dv), the layout the backbone reshapes to
  Tensor out = at::empty({B, N, H, Dv}, q.options()).permute({0, 2, 1, 3});
  if (out.numel() == 0) return {out, lse, dev2};
  const Tensor W = weight.to(stats).contiguous();
  const Tensor bias = bias_in.to(stats).contiguous();
  Tensor obuf = at::empty({B, H, N, Dv}, q.options().dtype(stats));
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "emsa_forward", [&] {
        using acc_t = acc_type_t<scalar_t>;
        auto p = make_emsa_params<scalar_t, acc_t>(q, k, v, W, bias, scale);
        p.obuf = obuf.data_ptr<acc_t>();
        p.lse = lse.data_ptr<acc_t>();
        p.dev2 = dev2.data_ptr<acc_t>();
        emsa_launch<Launch>(emsa_forward_kernel<scalar_t, acc_t>, p,
                            EmsaKernel::kForward, N, sizeof(acc_t));
      });
  // out = Σ_j (P_ij − 1/M) v_j / σ
  out.copy_(obuf / emsa_sigma(dev2, N, M, eps));
  return {out, lse, dev2};
}

template <typename Launch>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> emsa_backward_impl(
    const Tensor& grad_out, const Tensor& q_in, const Tensor& k_in,
    const Tensor& v_in, const Tensor& weight, const Tensor& bias_in,
    const Tensor& out, const Tensor& lse_in, const Tensor& dev2_in,
    double scale, double eps) {
  check_emsa_backward_inputs(grad_out, q_in, k_in, v_in, weight, bias_in, out,
                             lse_in, dev2_in, eps);
  const typename Launch::Guard guard(q_in.device());
  const Tensor q = unit_last_stride(q_in), k = unit_last_stride(k_in),
               v = unit_last_stride(v_in);
  const int64_t B = q.size(0), H = q.size(1), N = q.size(2), M = k.size(2),
                Dv = v.size(3);
  const auto stats = stats_dtype(q.scalar_type());
  Tensor dq = at::empty_like(q_in), dk = at::empty_like(k_in),
         dv = at::empty_like(v_in);
  Tensor dW = at::zeros({H, H}, q.options().dtype(stats));
  Tensor db = at::zeros({H}, bias_in.options());
  if (q.numel() == 0 || B * H * N * Dv == 0) {
    return {dq.zero_(), dk.zero_(), dv.zero_(), dW.to(weight.scalar_type()),
            db};
  }
  const Tensor W = weight.to(stats).contiguous();
  const Tensor bias = bias_in.to(stats).contiguous();
  const Tensor lse = lse_in.contiguous(), dev2 = dev2_in.contiguous();
  const Tensor sigma = emsa_sigma(dev2, N, M, eps);
  const Tensor vbar = v.to(stats).mean(2).contiguous();
  const Tensor g = grad_out.to(stats), o = out.to(stats);
  // the gradient reaching Σ_j P_ij v_j, the gradient of Σ P² and the row
  // terms D = dY·out of the softmax backward
  const Tensor dO = (g / sigma).contiguous();
  const Tensor go = (g * o).sum(-1);
  const Tensor dsq =
      (go.sum(-1).view({B, H, 1, 1}) /
       (sigma * sigma * (-2.0 * static_cast<double>(N) * M)))
          .contiguous();
  const Tensor Dterm = go.contiguous();
  Tensor dv_acc = at::empty({B, H, M, Dv}, q.options().dtype(stats));
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "emsa_backward", [&] {
        using acc_t = acc_type_t<scalar_t>;
        auto p = make_emsa_params<scalar_t, acc_t>(q, k, v, W, bias, scale);
        p.lse = lse.data_ptr<acc_t>();
        p.dev2 = dev2.data_ptr<acc_t>();
        p.vbar = vbar.data_ptr<acc_t>();
        p.dO = dO.data_ptr<acc_t>();
        p.Dterm = Dterm.data_ptr<acc_t>();
        p.dsq = dsq.data_ptr<acc_t>();
        p.dq = dq.data_ptr<scalar_t>();
        p.dk = dk.data_ptr<scalar_t>();
        p.dv = dv_acc.data_ptr<acc_t>();
        p.dW = dW.data_ptr<acc_t>();
        strides_of<4>(dq, p.dqs);
        strides_of<4>(dk, p.dks);
        emsa_launch<Launch>(emsa_backward_dq_kernel<scalar_t, acc_t>, p,
                            EmsaKernel::kBackwardDq, N, sizeof(acc_t));
        emsa_launch<Launch>(emsa_backward_dkv_kernel<scalar_t, acc_t>, p,
                            EmsaKernel::kBackwardDkv, M, sizeof(acc_t));
      });
  dv.copy_(dv_acc);
  return {dq, dk, dv, dW.to(weight.scalar_type()), db};
}

}  // namespace cuda
}  // namespace mmvitmix
