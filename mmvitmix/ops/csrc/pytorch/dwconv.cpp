// Weight gradient of a stride-1 depthwise convolution on channels-last
// tensors: schema, argument checks, CPU entry point (cpu/dwconv_cpu.cpp).
// Only the weight gradient is ours: the forward and the input gradient are
// torch's (oneDNN) convolutions, which are fast (see the kernel's header).
#include <torch/library.h>

#include "pytorch_cpp_helper.hpp"

namespace mmvitmix {

at::Tensor dwconv_weight_grad_cpu(const at::Tensor& grad,
                                  const at::Tensor& input, int64_t kh,
                                  int64_t kw, int64_t pad_h, int64_t pad_w);

namespace {

constexpr const char* kOp = "dwconv_weight_grad";

at::Tensor dwconv_weight_grad_cpu_entry(const Tensor& grad,
                                        const Tensor& input, int64_t kh,
                                        int64_t kw, int64_t pad_h,
                                        int64_t pad_w) {
  check_dim(kOp, "grad", grad, 4, "(N, H_out, W_out, C)");
  check_dim(kOp, "input", input, 4, "(N, H, W, C)");
  TORCH_CHECK(input.scalar_type() == at::kFloat ||
                  input.scalar_type() == at::kDouble,
              "dwconv_weight_grad: takes float32 or float64 tensors, got ",
              input.scalar_type());
  TORCH_CHECK(grad.scalar_type() == input.scalar_type(),
              "dwconv_weight_grad: grad and input must share a dtype, got ",
              grad.scalar_type(), " and ", input.scalar_type());
  TORCH_CHECK(kh > 0 && kw > 0 && pad_h >= 0 && pad_w >= 0,
              "dwconv_weight_grad: kernel sizes must be positive and "
              "paddings non-negative, got kernel (", kh, ", ", kw,
              ") padding (", pad_h, ", ", pad_w, ")");
  const int64_t out_h = input.size(1) + 2 * pad_h - kh + 1;
  const int64_t out_w = input.size(2) + 2 * pad_w - kw + 1;
  TORCH_CHECK(grad.size(0) == input.size(0) && grad.size(1) == out_h &&
                  grad.size(2) == out_w && grad.size(3) == input.size(3),
              "dwconv_weight_grad: grad ", grad.sizes(), " does not match ",
              "input ", input.sizes(), " with kernel (", kh, ", ", kw,
              ") and padding (", pad_h, ", ", pad_w, "): expected (",
              input.size(0), ", ", out_h, ", ", out_w, ", ", input.size(3),
              ")");
  check_same_device(kOp, "grad", grad, input);
  return dwconv_weight_grad_cpu(grad, input, kh, kw, pad_h, pad_w);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mmvitmix, m) {
  m.def(
      "dwconv_weight_grad(Tensor grad, Tensor input, int kh, int kw, "
      "int pad_h, int pad_w) -> Tensor");
}

TORCH_LIBRARY_IMPL(mmvitmix, CPU, m) {
  m.impl("dwconv_weight_grad", &dwconv_weight_grad_cpu_entry);
}

}  // namespace mmvitmix
