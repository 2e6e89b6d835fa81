// The op dwconv_weight_grad (schema, argument checks, CPU kernel): the
// weight gradient of a stride-1 depthwise convolution on channels-last
// (N, H, W, C) tensors,
//
// dW[c, i, j] = sum over n, oh, ow of dY[n, oh, ow, c] ·
//               X[n, oh + i - pad_h, ow + j - pad_w, c]
//
// Only the weight gradient is ours (mmvitmix/ops/dwconv.py): the forward and
// the input gradient are torch's (oneDNN) convolutions, which are fast, but
// oneDNN's depthwise backward-weights primitive is several times slower than
// the forward for 5x5 filters, and RMT's training step runs many of them
// (figures per CPU: docs/benchmarks.md, from
// tools/analysis_tools/benchmark_dwconv.py). Here the channels are the
// vector lanes: each (tap, block of channels) accumulates in registers along
// a row (kernel widths 3, 5, 7; a plain loop otherwise), and the rows are
// split over the threads, each with its own accumulator, summed at the end.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "pytorch_cpp_helper.hpp"

#if !defined(__GNUC__) && !defined(__clang__)
#error "mmvitmix's CPU kernel needs GCC or Clang (vector extensions)"
#endif

// compiled once per x86 ISA level (AVX-512, AVX2+FMA, baseline), picked at
// load time: one binary runs on any x86-64 CPU at its vector units' speed
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && \
    defined(__linux__)
#define MMVITMIX_CPU_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MMVITMIX_CPU_CLONES
#endif

#define MMVITMIX_INLINE inline __attribute__((always_inline))

namespace mmvitmix {

namespace {

// Generic loop (any kernel width; also the channels that do not fill a
// 32-byte block): a tap's accumulator row in memory, channels contiguous.
template <typename T>
MMVITMIX_CPU_CLONES void accumulate_rows_generic(
    const T* grad, const T* input, T* acc, int64_t row_begin, int64_t row_end,
    int64_t height, int64_t width, int64_t out_h, int64_t out_w,
    int64_t channels, int64_t c_begin, int64_t kh, int64_t kw, int64_t pad_h,
    int64_t pad_w) {
  for (int64_t row = row_begin; row < row_end; ++row) {
    const int64_t n = row / out_h;
    const int64_t oh = row % out_h;
    const T* g_row = grad + row * out_w * channels;
    for (int64_t i = 0; i < kh; ++i) {
      const int64_t ih = oh + i - pad_h;
      if (ih < 0 || ih >= height) continue;
      const T* x_row = input + (n * height + ih) * width * channels;
      for (int64_t j = 0; j < kw; ++j) {
        // output columns whose input column ow + j - pad_w is inside
        const int64_t ow0 = std::max<int64_t>(0, pad_w - j);
        const int64_t ow1 = std::min<int64_t>(out_w, width + pad_w - j);
        T* a = acc + (i * kw + j) * channels;
        const T* x_tap = x_row + (j - pad_w) * channels;
        for (int64_t ow = ow0; ow < ow1; ++ow) {
          const T* gp = g_row + ow * channels;
          const T* xp = x_tap + ow * channels;
          for (int64_t c = c_begin; c < channels; ++c) a[c] += gp[c] * xp[c];
        }
      }
    }
  }
}

// 32-byte vectors (8 floats, 4 doubles): one ymm register with AVX2, two
// xmm on the baseline ISA. (Wider GCC vector types are split badly on AVX2:
// GCC lowers a 64-byte vector's operations partly through general-purpose
// registers there.)
// (a struct typedef: GCC ignores vector_size on a dependent alias template)
template <typename T>
struct Vec32B {
  typedef T type __attribute__((vector_size(32)));
};
template <typename T>
using vec32b = typename Vec32B<T>::type;
static_assert(sizeof(vec32b<float>) == 32 && sizeof(vec32b<double>) == 32,
              "32-byte vectors");

template <typename T>
MMVITMIX_INLINE vec32b<T> load32b(const T* p) {
  vec32b<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
MMVITMIX_INLINE void store32b(T* p, const vec32b<T>& v) {
  std::memcpy(p, &v, sizeof(v));
}

// Kernel width KW (3, 5 or 7) known at compile time: for each kernel row
// and block of 32 bytes of channels, the KW accumulators are named registers (s0..s6)
// along the output row, each grad vector is loaded once for all KW taps, and
// the interior columns run without bounds checks; the two rows read (grad,
// input) stay in L1/L2 across the channel blocks.
#define MMVITMIX_DW_TAPS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6)

template <typename T, int KW>
MMVITMIX_CPU_CLONES void accumulate_rows_blocked(
    const T* grad, const T* input, T* acc, int64_t row_begin, int64_t row_end,
    int64_t height, int64_t width, int64_t out_h, int64_t out_w,
    int64_t channels, int64_t c_end, int64_t kh, int64_t pad_h,
    int64_t pad_w) {
  static_assert(KW >= 1 && KW <= 7, "kernel width 1..7");
  constexpr int64_t kLanes = 32 / sizeof(T);
  // output columns where every tap's input column is inside
  const int64_t lo = std::min<int64_t>(std::max<int64_t>(0, pad_w), out_w);
  const int64_t hi =
      std::max<int64_t>(lo, std::min<int64_t>(out_w, width + pad_w - (KW - 1)));
  // channel tiles of 64 floats (32 doubles): the tile's part of a grad row
  // and of the kernel's input rows stays in L2 for the whole row
  constexpr int64_t kTile = 8 * kLanes;
  for (int64_t t0 = 0; t0 < c_end; t0 += kTile) {
  const int64_t t1 = std::min(c_end, t0 + kTile);
  for (int64_t row = row_begin; row < row_end; ++row) {
    const int64_t n = row / out_h;
    const int64_t oh = row % out_h;
    const T* g_row = grad + row * out_w * channels;
    for (int64_t i = 0; i < kh; ++i) {
      const int64_t ih = oh + i - pad_h;
      if (ih < 0 || ih >= height) continue;
      const T* x_row = input + (n * height + ih) * width * channels;
      T* a_row = acc + i * KW * channels;
      for (int64_t c0 = t0; c0 < t1; c0 += kLanes) {
        const T* gc = g_row + c0;
        const T* xc = x_row + c0;
        T* ac = a_row + c0;
#define MMVITMIX_DW_DECL(j) \
  vec32b<T> s##j = {}; \
  if constexpr (KW > j) s##j = load32b(ac + j * channels);
        MMVITMIX_DW_TAPS(MMVITMIX_DW_DECL)
#undef MMVITMIX_DW_DECL
        // a column near the edges: taps outside the input are skipped
        auto edge_column = [&](int64_t ow) __attribute__((always_inline)) {
          const vec32b<T> g = load32b(gc + ow * channels);
#define MMVITMIX_DW_EDGE(j)                                      \
  if constexpr (KW > j) {                                        \
    const int64_t iw = ow + j - pad_w;                           \
    if (iw >= 0 && iw < width) s##j += g * load32b(xc + iw * channels); \
  }
          MMVITMIX_DW_TAPS(MMVITMIX_DW_EDGE)
#undef MMVITMIX_DW_EDGE
        };
        for (int64_t ow = 0; ow < lo; ++ow) edge_column(ow);
        for (int64_t ow = lo; ow < hi; ++ow) {
          const vec32b<T> g = load32b(gc + ow * channels);
          const T* xp = xc + (ow - pad_w) * channels;
#define MMVITMIX_DW_INNER(j) \
  if constexpr (KW > j) s##j += g * load32b(xp + j * channels);
          MMVITMIX_DW_TAPS(MMVITMIX_DW_INNER)
#undef MMVITMIX_DW_INNER
        }
        for (int64_t ow = hi; ow < out_w; ++ow) edge_column(ow);
#define MMVITMIX_DW_STORE(j) \
  if constexpr (KW > j) store32b(ac + j * channels, s##j);
        MMVITMIX_DW_TAPS(MMVITMIX_DW_STORE)
#undef MMVITMIX_DW_STORE
      }
    }
  }
  }
}
#undef MMVITMIX_DW_TAPS

template <typename T>
void accumulate_rows(const T* grad, const T* input, T* acc,
                     int64_t row_begin, int64_t row_end, int64_t height,
                     int64_t width, int64_t out_h, int64_t out_w,
                     int64_t channels, int64_t kh, int64_t kw, int64_t pad_h,
                     int64_t pad_w) {
  constexpr int64_t lanes = 32 / sizeof(T);
  const int64_t blocked =
      kw == 3 || kw == 5 || kw == 7 ? channels / lanes * lanes : 0;
  if (blocked > 0) {
    auto run = [&](auto kernel) {
      kernel(grad, input, acc, row_begin, row_end, height, width, out_h,
             out_w, channels, blocked, kh, pad_h, pad_w);
    };
    if (kw == 3)
      run(accumulate_rows_blocked<T, 3>);
    else if (kw == 5)
      run(accumulate_rows_blocked<T, 5>);
    else
      run(accumulate_rows_blocked<T, 7>);
  }
  if (blocked < channels)
    accumulate_rows_generic<T>(grad, input, acc, row_begin, row_end, height,
                               width, out_h, out_w, channels, blocked, kh, kw,
                               pad_h, pad_w);
}

template <typename T>
at::Tensor weight_grad(const at::Tensor& grad, const at::Tensor& input,
                       int64_t kh, int64_t kw, int64_t pad_h, int64_t pad_w) {
  const int64_t batch = input.size(0), height = input.size(1),
                width = input.size(2), channels = input.size(3);
  const int64_t out_h = grad.size(1), out_w = grad.size(2);
  const int64_t rows = batch * out_h;
  const int64_t taps = kh * kw;
  const int threads = std::max(1, at::get_num_threads());
  // one accumulator per thread (taps × channels each)
  std::vector<T> acc(static_cast<size_t>(threads) * taps * channels, T(0));
  const T* g = grad.data_ptr<T>();
  const T* x = input.data_ptr<T>();
  // rows per task: at least ~64k multiply-adds
  const int64_t grain = std::max<int64_t>(
      1, 65536 / std::max<int64_t>(1, out_w * channels * taps));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    const int tid = at::get_thread_num();
    accumulate_rows<T>(g, x, acc.data() + tid * taps * channels, begin, end,
                       height, width, out_h, out_w, channels, kh, kw, pad_h,
                       pad_w);
  });
  at::Tensor out = at::empty({channels, 1, kh, kw}, input.options());
  T* o = out.data_ptr<T>();
  for (int64_t c = 0; c < channels; ++c) {
    for (int64_t t = 0; t < taps; ++t) {
      T sum = 0;
      for (int th = 0; th < threads; ++th)
        sum += acc[(static_cast<size_t>(th) * taps + t) * channels + c];
      o[c * taps + t] = sum;
    }
  }
  return out;
}

at::Tensor dwconv_weight_grad_cpu(const Tensor& grad, const Tensor& input,
                                  int64_t kh, int64_t kw, int64_t pad_h,
                                  int64_t pad_w) {
  constexpr const char* kOp = "dwconv_weight_grad";
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
  check_same_device(kOp, input, "grad", grad);
  const Tensor g = grad.contiguous(), x = input.contiguous();
  if (x.scalar_type() == at::kDouble)
    return weight_grad<double>(g, x, kh, kw, pad_h, pad_w);
  return weight_grad<float>(g, x, kh, kw, pad_h, pad_w);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mmvitmix, m) {
  m.def(
      "dwconv_weight_grad(Tensor grad, Tensor input, int kh, int kw, "
      "int pad_h, int pad_w) -> Tensor");
}

TORCH_LIBRARY_IMPL(mmvitmix, CPU, m) {
  m.impl("dwconv_weight_grad", &dwconv_weight_grad_cpu);
}

}  // namespace mmvitmix
