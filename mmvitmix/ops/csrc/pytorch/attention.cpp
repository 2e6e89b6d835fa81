// The attention ops' schemas and their CUDA implementations. The ops have no
// CPU kernel: on the CPU torch's kernels are faster (docs/benchmarks.md);
// the tests register the same host code, emulated on the host, as the CPU
// implementation (tests/test_ops/cuda_emulation).
//
// retention_forward (RMT's Manhattan self-attention core; host code in
// common/cuda/retention_cuda_host.h):
//   out[b,h,s,i] = Σ_j softmax_j(q_i·k_j + log_decay[h]·dist(i, j)) v_j
// on 5-D (B, heads, S, L, D) tensors of any strides, q and k rotated and q
// scaled; returns (out, lse), the per-query logsumexp that the backward uses
// to recompute the map.
// emsa_forward (ResT's EMSA core with head mixing; host code in
// common/cuda/emsa_cuda_host.h): returns (out, lse, dev2).
#include <torch/library.h>

#include "pytorch_cpp_helper.hpp"

namespace mmvitmix {

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
std::tuple<Tensor, Tensor, Tensor> emsa_forward_cuda(
    const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& weight,
    const Tensor& bias, double scale, double eps);
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> emsa_backward_cuda(
    const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,
    const Tensor& weight, const Tensor& bias, const Tensor& out,
    const Tensor& lse, const Tensor& dev2, double scale, double eps);
#endif

TORCH_LIBRARY_FRAGMENT(mmvitmix, m) {
  m.def(
      "retention_forward(Tensor q, Tensor k, Tensor v, Tensor log_decay, "
      "int width) -> (Tensor, Tensor)");
  m.def(
      "retention_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, "
      "Tensor out, Tensor lse, Tensor log_decay, int width, bool decay_grad) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "emsa_forward(Tensor q, Tensor k, Tensor v, Tensor weight, "
      "Tensor bias, float scale, float eps) -> (Tensor, Tensor, Tensor)");
  m.def(
      "emsa_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, "
      "Tensor weight, Tensor bias, Tensor out, Tensor lse, Tensor dev2, "
      "float scale, float eps) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}

#ifdef MMVITMIX_WITH_CUDA
TORCH_LIBRARY_IMPL(mmvitmix, CUDA, m) {
  m.impl("retention_forward", &retention_forward_cuda);
  m.impl("retention_backward", &retention_backward_cuda);
  m.impl("emsa_forward", &emsa_forward_cuda);
  m.impl("emsa_backward", &emsa_backward_cuda);
}
#endif

}  // namespace mmvitmix
