// The CUDA ops of mmvitmix run on the host: the launchers' own host code
// (mmvitmix/ops/csrc/common/cuda/*_cuda_host.h) with a launch policy that
// runs each block's threads as host threads (cuda_emulation.h) instead of
// the CUDA one (csrc/pytorch/cuda/cuda_launch.cuh). The tests register these
// functions as the CPU implementation of
// torch.ops.mmvitmix.{retention,emsa}_{forward,backward} for as long as they
// need them (tests/test_ops/cuda_emulation/__init__.py), so that the kernels
// and the Python glue around the ops (fake kernels, autograd, opcheck,
// torch.compile, FLOP counting, the backbones' fused path) are tested on a
// machine without a GPU.
#include <torch/extension.h>

#define MMVITMIX_CUDA_EMULATION
#include "cuda/emsa_cuda_host.h"
#include "cuda/retention_cuda_host.h"

namespace emu = mmvitmix_emulation;
namespace mc = mmvitmix::cuda;
using mmvitmix::Tensor;

namespace {

struct HostLaunch {
  struct Guard {
    explicit Guard(const at::Device&) {}
  };

  // plays the device's per-block shared memory limit (EMSA's tile choice);
  // small values force tiny tiles
  static inline int64_t max_bytes = 48 * 1024;

  static int64_t max_shared_bytes() { return max_bytes; }

  template <typename Params>
  static void launch(void (*kernel)(Params), int64_t blocks,
                     int64_t smem_bytes, const Params& params) {
    emu::launch(kernel, blocks, mc::kThreads, smem_bytes, params);
  }
};

int64_t set_max_shared_bytes(int64_t bytes) {
  const int64_t old = HostLaunch::max_bytes;
  HostLaunch::max_bytes = bytes;
  return old;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("retention_forward", &mc::retention_forward_impl<HostLaunch>);
  m.def("retention_backward", &mc::retention_backward_impl<HostLaunch>);
  m.def("emsa_forward", &mc::emsa_forward_impl<HostLaunch>);
  m.def("emsa_backward", &mc::emsa_backward_impl<HostLaunch>);
  m.def("set_max_shared_bytes", &set_max_shared_bytes,
        "set the emulated per-block shared memory limit; returns the old one");
}
