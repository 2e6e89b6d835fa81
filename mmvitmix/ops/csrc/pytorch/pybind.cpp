// Python module mmvitmix._ext. Loading it registers the operators
// torch.ops.mmvitmix.* (TORCH_LIBRARY_FRAGMENT in retention.cpp, emsa.cpp);
// the module itself only reports how it was built.
#include <torch/extension.h>

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "mmvitmix fused attention ops (retention, EMSA)";
  m.def("with_cuda", [] {
#ifdef MMVITMIX_WITH_CUDA
    return true;
#else
    return false;
#endif
  }, "True when the CUDA kernels were compiled in");
}
