// Python module mmvitmix._ext. Loading it registers the operators
// torch.ops.mmvitmix.* (attention.cpp, cuda/attention_cuda.cu,
// cpu/dwconv_cpu.cpp); the module itself only reports how it was built.
#include <torch/extension.h>

// TORCH_CUDA_ARCH_LIST at build time, passed by setup.py as a bare token
// sequence such as 8.0_9.0+PTX (separators turned into '_')
#define MMVITMIX_STR_(x) #x
#define MMVITMIX_STR(x) MMVITMIX_STR_(x)

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "mmvitmix compiled ops (retention and EMSA on CUDA, depthwise-conv weight gradient on CPU)";
  m.def("with_cuda", [] {
#ifdef MMVITMIX_WITH_CUDA
    return true;
#else
    return false;
#endif
  }, "True when the CUDA kernels were compiled in");
  m.def("cuda_arch_list", [] {
#if defined(MMVITMIX_WITH_CUDA) && defined(MMVITMIX_CUDA_ARCHS)
    return std::string(MMVITMIX_STR(MMVITMIX_CUDA_ARCHS));
#else
    return std::string();
#endif
  }, "TORCH_CUDA_ARCH_LIST the CUDA kernels were compiled for, "
     "'_'-separated ('' without CUDA)");
}
