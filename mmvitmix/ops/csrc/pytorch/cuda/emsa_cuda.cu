// CUDA launchers of ResT's EMSA core (kernels in
// common/cuda/emsa_cuda_kernel.cuh, op in pytorch/emsa.cpp). The cheap
// per-(batch, head) reductions around the kernels (σ, mean v, the row terms
// of the backward) are ATen ops on (B, H, N)-sized tensors.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <climits>

#include "cuda/emsa_cuda_params.h"
#include "pytorch_cpp_helper.hpp"

namespace mmvitmix {
namespace {

// picks the tiles, raises the dynamic shared memory limit when needed and
// launches one block per (batch, tile)
template <typename Kernel, typename Params>
void launch(Kernel kernel, Params p, cuda::EmsaKernel kind, int64_t rows,
            int64_t elem_bytes, cudaStream_t stream) {
  const int64_t max_bytes =
      at::cuda::getCurrentDeviceProperties()->sharedMemPerBlockOptin;
  TORCH_CHECK(cuda::emsa_choose_tiles(kind, p.H, p.D, p.Dv, elem_bytes,
                                      max_bytes, &p.BQ, &p.BK),
              "emsa (CUDA): ", p.H, " heads of dims ", p.D, "/", p.Dv,
              " do not fit in shared memory (", max_bytes, " bytes)");
  const int64_t bytes =
      cuda::emsa_smem_elems(kind, p.H, p.D, p.Dv, p.BQ, p.BK) * elem_bytes;
  if (bytes > 48 * 1024) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(
        kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
        static_cast<int>(bytes)));
  }
  p.num_tiles = cuda::ceil_div(
      rows, kind == cuda::EmsaKernel::kBackwardDkv ? p.BK : p.BQ);
  const int64_t blocks = p.B * p.num_tiles;
  TORCH_CHECK(blocks <= INT_MAX, "emsa (CUDA): ", blocks,
              " blocks exceed the grid limit; split the batch");
  kernel<<<blocks, cuda::kThreads, bytes, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// σ = sqrt(Σ_i dev2_i / (N·M) + eps), shape (B, H, 1, 1)
Tensor emsa_sigma(const Tensor& dev2, int64_t N, int64_t M, double eps) {
  const double inv_nm = 1.0 / (static_cast<double>(N) * M);
  return (dev2.sum(-1) * inv_nm)
      .add(eps)
      .sqrt()
      .view({dev2.size(0), dev2.size(1), 1, 1});
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor> emsa_forward_cuda(
    const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
    const Tensor& weight, const Tensor& bias_in, double scale, double eps) {
  const at::cuda::OptionalCUDAGuard guard(q_in.device());
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
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "emsa_forward_cuda", [&] {
        using acc_t = acc_type_t<scalar_t>;
        auto p = cuda::make_emsa_params<scalar_t, acc_t>(q, k, v, W, bias, scale);
        p.obuf = obuf.data_ptr<acc_t>();
        p.lse = lse.data_ptr<acc_t>();
        p.dev2 = dev2.data_ptr<acc_t>();
        launch(cuda::emsa_forward_kernel<scalar_t, acc_t>, p,
               cuda::EmsaKernel::kForward, N, sizeof(acc_t), stream);
      });
  // out = Σ_j (P_ij − 1/M) v_j / σ
  out.copy_(obuf / emsa_sigma(dev2, N, M, eps));
  return {out, lse, dev2};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> emsa_backward_cuda(
    const Tensor& grad_out, const Tensor& q_in, const Tensor& k_in,
    const Tensor& v_in, const Tensor& weight, const Tensor& bias_in,
    const Tensor& out, const Tensor& lse_in, const Tensor& dev2_in,
    double scale, double eps) {
  const at::cuda::OptionalCUDAGuard guard(q_in.device());
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
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "emsa_backward_cuda", [&] {
        using acc_t = acc_type_t<scalar_t>;
        auto p = cuda::make_emsa_params<scalar_t, acc_t>(q, k, v, W, bias, scale);
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
        launch(cuda::emsa_backward_dq_kernel<scalar_t, acc_t>, p,
               cuda::EmsaKernel::kBackwardDq, N, sizeof(acc_t), stream);
        launch(cuda::emsa_backward_dkv_kernel<scalar_t, acc_t>, p,
               cuda::EmsaKernel::kBackwardDkv, M, sizeof(acc_t), stream);
      });
  dv.copy_(dv_acc);
  return {dq, dk, dv, dW.to(weight.scalar_type()), db};
}

}  // namespace mmvitmix
