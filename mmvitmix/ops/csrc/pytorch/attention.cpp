// The attention ops' schemas; their CUDA kernels are registered in
// cuda/attention_cuda.cu. The ops have no CPU kernel: on the CPU torch's
// kernels are faster (docs/benchmarks.md); the tests register the same host
// code, emulated on the host, as the CPU implementation
// (tests/test_ops/cuda_emulation).
//
// retention_forward (RMT's Manhattan self-attention core, defined in
// common/cuda/retention_cuda_host.h), q and k rotated and q scaled: returns
// (out, lse), the per-query logsumexp that the backward uses to recompute
// the map.
// emsa_forward (ResT's EMSA core with head mixing; host code in
// common/cuda/emsa_cuda_host.h): returns (out, lse, dev2).
#include <torch/library.h>

namespace mmvitmix {

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

}  // namespace mmvitmix
