// The CUDA kernels of mmvitmix run on the host (see cuda_emulation.h), with
// the same parameter setup, tile choice and pre/post-processing as the
// launchers in mmvitmix/ops/csrc/pytorch/cuda/*.cu. Built on demand by
// tests/test_ops/test_cuda_emulation.py.
#include <torch/extension.h>

#define MMVITMIX_CUDA_EMULATION
#include "cuda/emsa_cuda_params.h"
#include "cuda/retention_cuda_params.h"
#include "pytorch_cpp_helper.hpp"

namespace emu = mmvitmix_emulation;
namespace mc = mmvitmix::cuda;
using mmvitmix::acc_type_t;
using mmvitmix::stats_dtype;
using mmvitmix::strides_of;
using mmvitmix::Tensor;

namespace {

template <typename scalar_t, typename acc_t, int D>
void retention_forward_launch(mc::RetentionCudaParams<scalar_t, acc_t> p,
                              int64_t num_seq) {
  using Tile = mc::RetentionForwardTile<acc_t, D>;
  p.num_tiles = mc::ceil_div(p.L, Tile::BQ);
  emu::launch(mc::retention_forward_kernel<scalar_t, acc_t, D, Tile::BQ,
                                           Tile::BK>,
              num_seq * p.num_tiles, mc::kThreads, 0, p);
}

template <typename scalar_t, typename acc_t, int D>
void retention_backward_launch(mc::RetentionCudaParams<scalar_t, acc_t> p,
                               int64_t num_seq) {
  using Tile = mc::RetentionBackwardTile<acc_t, D>;
  p.num_tiles = mc::ceil_div(p.L, Tile::BQ);
  emu::launch(mc::retention_backward_dq_kernel<scalar_t, acc_t, D, Tile::BQ,
                                               Tile::BK>,
              num_seq * p.num_tiles, mc::kThreads, 0, p);
  p.num_tiles = mc::ceil_div(p.L, Tile::BK);
  emu::launch(mc::retention_backward_dkv_kernel<scalar_t, acc_t, D, Tile::BQ,
                                                Tile::BK>,
              num_seq * p.num_tiles, mc::kThreads, 0, p);
}

std::tuple<Tensor, Tensor> retention_forward(const Tensor& q, const Tensor& k,
                                             const Tensor& v,
                                             const Tensor& log_decay,
                                             int64_t width) {
  const auto stats = stats_dtype(q.scalar_type());
  Tensor out = at::empty_like(v);
  Tensor lse = at::empty(q.sizes().slice(0, 4), q.options().dtype(stats));
  const Tensor decay = log_decay.to(stats).contiguous();
  const int bucket = mc::head_dim_bucket(std::max(q.size(4), v.size(4)));
  const int64_t num_seq = q.size(0) * q.size(1) * q.size(2);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "emu", [&] {
        using acc_t = acc_type_t<scalar_t>;
        auto p = mc::make_retention_params<scalar_t, acc_t>(q, k, v, decay, width);
        p.out = out.data_ptr<scalar_t>();
        p.lse = lse.data_ptr<acc_t>();
        strides_of<5>(out, p.os);
        MMVITMIX_DISPATCH_HEAD_DIM(bucket, retention_forward_launch, p, num_seq);
      });
  return {out, lse};
}

std::vector<Tensor> retention_backward(const Tensor& grad_out, const Tensor& q,
                                       const Tensor& k, const Tensor& v,
                                       const Tensor& out, const Tensor& lse,
                                       const Tensor& log_decay, int64_t width,
                                       bool decay_grad) {
  const auto stats = stats_dtype(q.scalar_type());
  Tensor dq = at::empty_like(q), dk = at::empty_like(k),
         dv = at::empty_like(v);
  Tensor ddecay = at::zeros({q.size(1)}, q.options().dtype(stats));
  const Tensor Dvec = (grad_out.to(stats) * out.to(stats)).sum(-1).contiguous();
  const Tensor decay = log_decay.to(stats).contiguous();
  const Tensor lse_c = lse.contiguous();
  const int bucket = mc::head_dim_bucket(std::max(q.size(4), v.size(4)));
  const int64_t num_seq = q.size(0) * q.size(1) * q.size(2);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "emu", [&] {
        using acc_t = acc_type_t<scalar_t>;
        auto p = mc::make_retention_params<scalar_t, acc_t>(q, k, v, decay, width);
        p.grad_out = grad_out.data_ptr<scalar_t>();
        p.dq = dq.data_ptr<scalar_t>();
        p.dk = dk.data_ptr<scalar_t>();
        p.dv = dv.data_ptr<scalar_t>();
        p.lse = lse_c.data_ptr<acc_t>();
        p.Dvec = Dvec.data_ptr<acc_t>();
        p.ddecay = ddecay.data_ptr<acc_t>();
        p.decay_grad = decay_grad;
        strides_of<5>(grad_out, p.gs);
        strides_of<5>(dq, p.dqs);
        strides_of<5>(dk, p.dks);
        strides_of<5>(dv, p.dvs);
        MMVITMIX_DISPATCH_HEAD_DIM(bucket, retention_backward_launch, p, num_seq);
      });
  return {dq, dk, dv, ddecay};
}

// max_bytes plays the device's shared memory limit (tile choice)
template <typename Kernel, typename Params>
void emsa_launch(Kernel kernel, Params p, mc::EmsaKernel kind, int64_t rows,
                 int64_t elem_bytes, int64_t max_bytes) {
  TORCH_CHECK(mc::emsa_choose_tiles(kind, p.H, p.D, p.Dv, elem_bytes,
                                    max_bytes, &p.BQ, &p.BK),
              "emsa emulation: no tile fits");
  const int64_t bytes =
      mc::emsa_smem_elems(kind, p.H, p.D, p.Dv, p.BQ, p.BK) * elem_bytes;
  p.num_tiles = mc::ceil_div(
      rows, kind == mc::EmsaKernel::kBackwardDkv ? p.BK : p.BQ);
  emu::launch(kernel, p.B * p.num_tiles, mc::kThreads, bytes, p);
}

Tensor emsa_sigma(const Tensor& dev2, int64_t N, int64_t M, double eps) {
  const double inv_nm = 1.0 / (static_cast<double>(N) * M);
  return (dev2.sum(-1) * inv_nm)
      .add(eps)
      .sqrt()
      .view({dev2.size(0), dev2.size(1), 1, 1});
}

std::vector<Tensor> emsa_forward(const Tensor& q, const Tensor& k,
                                 const Tensor& v, const Tensor& weight,
                                 const Tensor& bias_in, double scale,
                                 double eps, int64_t max_bytes) {
  const int64_t B = q.size(0), H = q.size(1), N = q.size(2), M = k.size(2),
                Dv = v.size(3);
  const auto stats = stats_dtype(q.scalar_type());
  Tensor lse = at::empty({B, H, N}, q.options().dtype(stats));
  Tensor dev2 = at::empty({B, H, N}, q.options().dtype(stats));
  const Tensor W = weight.to(stats).contiguous();
  const Tensor bias = bias_in.to(stats).contiguous();
  Tensor obuf = at::empty({B, H, N, Dv}, q.options().dtype(stats));
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "emu", [&] {
        using acc_t = acc_type_t<scalar_t>;
        auto p = mc::make_emsa_params<scalar_t, acc_t>(q, k, v, W, bias, scale);
        p.obuf = obuf.data_ptr<acc_t>();
        p.lse = lse.data_ptr<acc_t>();
        p.dev2 = dev2.data_ptr<acc_t>();
        emsa_launch(mc::emsa_forward_kernel<scalar_t, acc_t>, p,
                    mc::EmsaKernel::kForward, N, sizeof(acc_t), max_bytes);
      });
  Tensor out = at::empty({B, N, H, Dv}, q.options()).permute({0, 2, 1, 3});
  out.copy_(obuf / emsa_sigma(dev2, N, M, eps));
  return {out, lse, dev2};
}

std::vector<Tensor> emsa_backward(const Tensor& grad_out, const Tensor& q,
                                  const Tensor& k, const Tensor& v,
                                  const Tensor& weight, const Tensor& bias_in,
                                  const Tensor& out, const Tensor& lse,
                                  const Tensor& dev2, double scale,
                                  double eps, int64_t max_bytes) {
  const int64_t B = q.size(0), H = q.size(1), N = q.size(2), M = k.size(2),
                Dv = v.size(3);
  const auto stats = stats_dtype(q.scalar_type());
  Tensor dq = at::empty_like(q), dk = at::empty_like(k),
         dv = at::empty_like(v);
  Tensor dW = at::zeros({H, H}, q.options().dtype(stats));
  const Tensor W = weight.to(stats).contiguous();
  const Tensor bias = bias_in.to(stats).contiguous();
  const Tensor lse_c = lse.contiguous(), dev2_c = dev2.contiguous();
  const Tensor sigma = emsa_sigma(dev2_c, N, M, eps);
  const Tensor vbar = v.to(stats).mean(2).contiguous();
  const Tensor g = grad_out.to(stats), o = out.to(stats);
  const Tensor dO = (g / sigma).contiguous();
  const Tensor go = (g * o).sum(-1);
  const Tensor dsq =
      (go.sum(-1).view({B, H, 1, 1}) /
       (sigma * sigma * (-2.0 * static_cast<double>(N) * M)))
          .contiguous();
  const Tensor Dterm = go.contiguous();
  Tensor dv_acc = at::empty({B, H, M, Dv}, q.options().dtype(stats));
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "emu", [&] {
        using acc_t = acc_type_t<scalar_t>;
        auto p = mc::make_emsa_params<scalar_t, acc_t>(q, k, v, W, bias, scale);
        p.lse = lse_c.data_ptr<acc_t>();
        p.dev2 = dev2_c.data_ptr<acc_t>();
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
        emsa_launch(mc::emsa_backward_dq_kernel<scalar_t, acc_t>, p,
                    mc::EmsaKernel::kBackwardDq, N, sizeof(acc_t), max_bytes);
        emsa_launch(mc::emsa_backward_dkv_kernel<scalar_t, acc_t>, p,
                    mc::EmsaKernel::kBackwardDkv, M, sizeof(acc_t), max_bytes);
      });
  dv.copy_(dv_acc);
  return {dq, dk, dv, dW};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("retention_forward", &retention_forward);
  m.def("retention_backward", &retention_backward);
  m.def("emsa_forward", &emsa_forward);
  m.def("emsa_backward", &emsa_backward);
}
