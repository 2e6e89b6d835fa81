// CUDA launchers of retention attention (kernels in
// common/cuda/retention_cuda_kernel.cuh, op in pytorch/retention.cpp).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <climits>

#include "cuda/retention_cuda_params.h"
#include "pytorch_cpp_helper.hpp"

namespace mmvitmix {
namespace {

int64_t num_blocks(int64_t num_seq, int64_t tiles) {
  const int64_t blocks = num_seq * tiles;
  TORCH_CHECK(blocks <= INT_MAX, "retention (CUDA): ", blocks,
              " blocks exceed the grid limit; split the batch");
  return blocks;
}

template <typename scalar_t, typename acc_t, int D>
void launch_forward(cuda::RetentionCudaParams<scalar_t, acc_t> p,
                    int64_t num_seq, cudaStream_t stream) {
  using Tile = cuda::RetentionForwardTile<acc_t, D>;
  p.num_tiles = cuda::ceil_div(p.L, Tile::BQ);
  cuda::retention_forward_kernel<scalar_t, acc_t, D, Tile::BQ, Tile::BK>
      <<<num_blocks(num_seq, p.num_tiles), cuda::kThreads, 0, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t, typename acc_t, int D>
void launch_backward(cuda::RetentionCudaParams<scalar_t, acc_t> p,
                     int64_t num_seq, cudaStream_t stream) {
  using Tile = cuda::RetentionBackwardTile<acc_t, D>;
  p.num_tiles = cuda::ceil_div(p.L, Tile::BQ);
  cuda::retention_backward_dq_kernel<scalar_t, acc_t, D, Tile::BQ, Tile::BK>
      <<<num_blocks(num_seq, p.num_tiles), cuda::kThreads, 0, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  p.num_tiles = cuda::ceil_div(p.L, Tile::BK);
  cuda::retention_backward_dkv_kernel<scalar_t, acc_t, D, Tile::BQ, Tile::BK>
      <<<num_blocks(num_seq, p.num_tiles), cuda::kThreads, 0, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void check_head_dims(const Tensor& q, const Tensor& v) {
  TORCH_CHECK(q.size(4) <= 128 && v.size(4) <= 128,
              "retention (CUDA): head dims up to 128 are supported, got Dk=",
              q.size(4), " Dv=", v.size(4));
  TORCH_CHECK(q.size(3) <= INT_MAX / 2, "retention (CUDA): L=", q.size(3),
              " tokens per sequence is too many");
}

}  // namespace

std::tuple<Tensor, Tensor> retention_forward_cuda(const Tensor& q_in,
                                                  const Tensor& k_in,
                                                  const Tensor& v_in,
                                                  const Tensor& log_decay,
                                                  int64_t width) {
  check_head_dims(q_in, v_in);
  const at::cuda::OptionalCUDAGuard guard(q_in.device());
  const Tensor q = unit_last_stride(q_in), k = unit_last_stride(k_in),
               v = unit_last_stride(v_in);
  const auto stats = stats_dtype(q.scalar_type());
  Tensor out = at::empty_like(v_in);
  Tensor lse = at::empty(q.sizes().slice(0, 4), q.options().dtype(stats));
  if (out.numel() == 0 || q.numel() == 0) return {out.zero_(), lse.zero_()};
  const Tensor decay = log_decay.to(stats).contiguous();
  const int bucket = cuda::head_dim_bucket(std::max(q.size(4), v.size(4)));
  const int64_t num_seq = q.size(0) * q.size(1) * q.size(2);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "retention_forward_cuda",
      [&] {
        using acc_t = acc_type_t<scalar_t>;
        auto p = cuda::make_retention_params<scalar_t, acc_t>(q, k, v, decay, width);
        p.out = out.data_ptr<scalar_t>();
        p.lse = lse.data_ptr<acc_t>();
        strides_of<5>(out, p.os);
        MMVITMIX_DISPATCH_HEAD_DIM(bucket, launch_forward, p, num_seq, stream);
      });
  return {out, lse};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> retention_backward_cuda(
    const Tensor& grad_out_in, const Tensor& q_in, const Tensor& k_in,
    const Tensor& v_in, const Tensor& out, const Tensor& lse_in,
    const Tensor& log_decay, int64_t width, bool decay_grad) {
  check_head_dims(q_in, v_in);
  const at::cuda::OptionalCUDAGuard guard(q_in.device());
  const Tensor q = unit_last_stride(q_in), k = unit_last_stride(k_in),
               v = unit_last_stride(v_in),
               grad_out = unit_last_stride(grad_out_in);
  const auto stats = stats_dtype(q.scalar_type());
  Tensor dq = at::empty_like(q_in), dk = at::empty_like(k_in),
         dv = at::empty_like(v_in);
  Tensor ddecay = at::zeros({q.size(1)}, q.options().dtype(stats));
  if (q.numel() == 0 || v.numel() == 0) {
    return {dq.zero_(), dk.zero_(), dv.zero_(),
            ddecay.to(log_decay.scalar_type())};
  }
  const Tensor lse = lse_in.contiguous();
  // D_i = Σ_e dO_i·O_i, laid out like lse
  const Tensor Dvec = (grad_out.to(stats) * out.to(stats)).sum(-1).contiguous();
  const Tensor decay = log_decay.to(stats).contiguous();
  const int bucket = cuda::head_dim_bucket(std::max(q.size(4), v.size(4)));
  const int64_t num_seq = q.size(0) * q.size(1) * q.size(2);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "retention_backward_cuda",
      [&] {
        using acc_t = acc_type_t<scalar_t>;
        auto p = cuda::make_retention_params<scalar_t, acc_t>(q, k, v, decay, width);
        p.grad_out = grad_out.data_ptr<scalar_t>();
        p.dq = dq.data_ptr<scalar_t>();
        p.dk = dk.data_ptr<scalar_t>();
        p.dv = dv.data_ptr<scalar_t>();
        p.lse = lse.data_ptr<acc_t>();
        p.Dvec = Dvec.data_ptr<acc_t>();
        p.ddecay = ddecay.data_ptr<acc_t>();
        p.decay_grad = decay_grad;
        strides_of<5>(grad_out, p.gs);
        strides_of<5>(dq, p.dqs);
        strides_of<5>(dk, p.dks);
        strides_of<5>(dv, p.dvs);
        MMVITMIX_DISPATCH_HEAD_DIM(bucket, launch_backward, p, num_seq, stream);
      });
  return {dq, dk, dv, ddecay.to(log_decay.scalar_type())};
}

}  // namespace mmvitmix
