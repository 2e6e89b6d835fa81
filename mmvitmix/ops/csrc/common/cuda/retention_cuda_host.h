// Host code of the retention op around its CUDA kernels: argument checks,
// the kernels' parameter block, the tile choice and the launches. Templated
// on a launch policy `Launch` (pytorch/cuda/cuda_launch.cuh), so that the
// same code runs the kernels on a GPU (pytorch/cuda/attention_cuda.cu) and on
// the host in the tests (tests/test_ops/cuda_emulation). The op (schema:
// pytorch/attention.cpp), over the L positions of sequence (b, h, s) of 5-D
// (B, heads, S, L, D) tensors of any strides:
//
//   out[b,h,s,i] = Σ_j softmax_j(q_i·k_j + log_decay[h]·dist(i, j)) v_j
//
// dist(i, j) = |i − j| when width == 0 (1-D), else the Manhattan distance of
// i and j on a grid with rows of `width` tokens (2-D, L = H·width). The
// output takes v's layout. A Launch policy provides:
//   Launch::Guard(device)                 device guard (RAII)
//   Launch::launch(kernel, blocks, smem_bytes, params)
//   Launch::max_shared_bytes()            per-block shared memory limit
#pragma once
#include <climits>
#include <tuple>

#include "cuda/retention_cuda_kernel.cuh"
#include "pytorch_cpp_helper.hpp"

namespace mmvitmix {
namespace cuda {

inline void check_retention_inputs(const Tensor& q, const Tensor& k,
                                   const Tensor& v, const Tensor& log_decay,
                                   int64_t width) {
  constexpr const char* kOp = "retention";
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
  TORCH_CHECK(q.size(4) <= 128 && v.size(4) <= 128,
              "retention: head dims up to 128 are supported, got Dk=",
              q.size(4), " Dv=", v.size(4));
  TORCH_CHECK(q.size(3) <= INT_MAX / 2, "retention: L=", q.size(3),
              " tokens per sequence is too many");
  check_dim(kOp, "log_decay", log_decay, 1, "(heads,)");
  check_floating(kOp, "log_decay", log_decay);
  TORCH_CHECK(log_decay.size(0) == q.size(1), "retention: log_decay has ",
              log_decay.size(0), " entries for ", q.size(1), " heads");
  check_same_device(kOp, q, "k", k, "v", v, "log_decay", log_decay);
  TORCH_CHECK(width >= 0, "retention: width must be 0 (1-D) or the grid "
              "width (2-D), got ", width);
  TORCH_CHECK(width == 0 || q.size(3) % width == 0, "retention: L=",
              q.size(3), " tokens do not fill rows of width ", width);
}

inline void check_retention_backward_inputs(
    const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,
    const Tensor& out, const Tensor& lse, const Tensor& log_decay,
    int64_t width) {
  constexpr const char* kOp = "retention";
  check_retention_inputs(q, k, v, log_decay, width);
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
  check_same_device(kOp, q, "grad_out", grad_out, "out", out, "lse", lse);
}

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

inline int64_t retention_blocks(int64_t num_seq, int64_t tiles) {
  const int64_t blocks = num_seq * tiles;
  TORCH_CHECK(blocks <= INT_MAX, "retention: ", blocks,
              " blocks exceed the grid limit; split the batch");
  return blocks;
}

// the launches of one head-dim bucket D (forward; dQ then dKV backward)
template <typename Launch>
struct RetentionLaunch {
  template <typename scalar_t, typename acc_t, int D>
  static void forward(RetentionCudaParams<scalar_t, acc_t> p,
                      int64_t num_seq) {
    using Tile = RetentionForwardTile<acc_t, D>;
    p.num_tiles = ceil_div(p.L, Tile::BQ);
    Launch::launch(retention_forward_kernel<scalar_t, acc_t, D, Tile::BQ,
                                            Tile::BK>,
                   retention_blocks(num_seq, p.num_tiles), 0, p);
  }

  template <typename scalar_t, typename acc_t, int D>
  static void backward(RetentionCudaParams<scalar_t, acc_t> p,
                       int64_t num_seq) {
    using Tile = RetentionBackwardTile<acc_t, D>;
    p.num_tiles = ceil_div(p.L, Tile::BQ);
    Launch::launch(retention_backward_dq_kernel<scalar_t, acc_t, D, Tile::BQ,
                                                Tile::BK>,
                   retention_blocks(num_seq, p.num_tiles), 0, p);
    p.num_tiles = ceil_div(p.L, Tile::BK);
    Launch::launch(retention_backward_dkv_kernel<scalar_t, acc_t, D,
                                                 Tile::BQ, Tile::BK>,
                   retention_blocks(num_seq, p.num_tiles), 0, p);
  }
};

}  // namespace cuda
}  // namespace mmvitmix

// calls FN<scalar_t, acc_t, bucket>(args...) for the head-dim bucket
#define MMVITMIX_DISPATCH_HEAD_DIM(bucket, FN, ...)        \
  switch (bucket) {                                       \
    case 16: FN<scalar_t, acc_t, 16>(__VA_ARGS__); break; \
    case 32: FN<scalar_t, acc_t, 32>(__VA_ARGS__); break; \
    case 64: FN<scalar_t, acc_t, 64>(__VA_ARGS__); break; \
    default: FN<scalar_t, acc_t, 128>(__VA_ARGS__);       \
  }

namespace mmvitmix {
namespace cuda {

template <typename Launch>
std::tuple<Tensor, Tensor> retention_forward_impl(
    const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
    const Tensor& log_decay, int64_t width) {
  check_retention_inputs(q_in, k_in, v_in, log_decay, width);
  const typename Launch::Guard guard(q_in.device());
  const Tensor q = unit_last_stride(q_in), k = unit_last_stride(k_in),
               v = unit_last_stride(v_in);
  const auto stats = stats_dtype(q.scalar_type());
  Tensor out = at::empty_like(v_in);
  Tensor lse = at::empty(q.sizes().slice(0, 4), q.options().dtype(stats));
  if (out.numel() == 0 || q.numel() == 0) return {out.zero_(), lse.zero_()};
  const Tensor decay = log_decay.to(stats).contiguous();
  const int bucket = head_dim_bucket(std::max(q.size(4), v.size(4)));
  const int64_t num_seq = q.size(0) * q.size(1) * q.size(2);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "retention_forward", [&] {
        using acc_t = acc_type_t<scalar_t>;
        auto p = make_retention_params<scalar_t, acc_t>(q, k, v, decay, width);
        p.out = out.data_ptr<scalar_t>();
        p.lse = lse.data_ptr<acc_t>();
        strides_of<5>(out, p.os);
        MMVITMIX_DISPATCH_HEAD_DIM(
            bucket, RetentionLaunch<Launch>::template forward, p, num_seq);
      });
  return {out, lse};
}

template <typename Launch>
std::tuple<Tensor, Tensor, Tensor, Tensor> retention_backward_impl(
    const Tensor& grad_out_in, const Tensor& q_in, const Tensor& k_in,
    const Tensor& v_in, const Tensor& out, const Tensor& lse_in,
    const Tensor& log_decay, int64_t width, bool decay_grad) {
  check_retention_backward_inputs(grad_out_in, q_in, k_in, v_in, out, lse_in,
                                  log_decay, width);
  const typename Launch::Guard guard(q_in.device());
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
  const int bucket = head_dim_bucket(std::max(q.size(4), v.size(4)));
  const int64_t num_seq = q.size(0) * q.size(1) * q.size(2);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "retention_backward", [&] {
        using acc_t = acc_type_t<scalar_t>;
        auto p = make_retention_params<scalar_t, acc_t>(q, k, v, decay, width);
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
        MMVITMIX_DISPATCH_HEAD_DIM(
            bucket, RetentionLaunch<Launch>::template backward, p, num_seq);
      });
  return {dq, dk, dv, ddecay.to(log_decay.scalar_type())};
}

}  // namespace cuda
}  // namespace mmvitmix
