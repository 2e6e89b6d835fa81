// Building blocks of the CPU attention kernels: 16-lane vectors (GCC/Clang
// vector extensions), a vectorised exp, small register-blocked matrix
// products on padded buffers and strided row gathers. Every function is
// force-inlined into the per-task workers, which are compiled once per x86
// ISA level (AVX-512, AVX2+FMA, baseline) and picked at load time, so one
// binary runs on any x86-64 CPU at the speed its vector units allow.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#if !defined(__GNUC__) && !defined(__clang__)
#error "mmvitmix's CPU kernels need GCC or Clang (vector extensions)"
#endif

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && \
    defined(__linux__)
#define MMVITMIX_CPU_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MMVITMIX_CPU_CLONES
#endif

#define MMVITMIX_INLINE inline __attribute__((always_inline))

namespace mmvitmix {
namespace cpu {

// register block of the matrix products: 4 rows × 16 columns
constexpr int64_t kRowBlock = 4;
constexpr int64_t kColBlock = 16;

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// 16-lane vectors: one zmm per float vector on AVX-512, two ymm on AVX2,
// four xmm on the baseline ISA
template <typename T>
struct Vec16;
template <>
struct Vec16<float> {
  typedef float type __attribute__((vector_size(16 * sizeof(float))));
  typedef int32_t itype __attribute__((vector_size(16 * sizeof(int32_t))));
};
template <>
struct Vec16<double> {
  typedef double type __attribute__((vector_size(16 * sizeof(double))));
};
template <typename T>
using vec16 = typename Vec16<T>::type;

template <typename T>
MMVITMIX_INLINE vec16<T> vload(const T* p) {
  vec16<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
MMVITMIX_INLINE void vstore(T* p, const vec16<T>& v) {
  std::memcpy(p, &v, sizeof(v));
}

template <typename T>
MMVITMIX_INLINE vec16<T> vsplat(T s) {
  vec16<T> v = {};
  return v + s;
}

// horizontal reductions as trees of half-width vectors
template <typename T, int N>
struct VecN {
  typedef T type __attribute__((vector_size(N * sizeof(T))));
};

// a < b ? x : y, lane by lane. Computed on 8-lane halves: GCC lowers a
// comparison or select of 16-lane (64-byte) generic vectors lane by lane
// in scalar code when the target has no 64-byte registers (the AVX2 and
// baseline clones: vcmpltss / vmaxss / vextractps per lane, which made the
// AVX2 kernels slower than the PyTorch reference), while 8-lane selects map
// to vcmpps + vblendvps there; on AVX-512 the two halves cost two ymm ops.
template <typename T>
MMVITMIX_INLINE vec16<T> vsel_lt(const vec16<T>& a, const vec16<T>& b,
                                 const vec16<T>& x, const vec16<T>& y) {
  typedef typename VecN<T, 8>::type half;
  half a0, a1, b0, b1, x0, x1, y0, y1;
  constexpr size_t H = sizeof(half);
  const char* pa = reinterpret_cast<const char*>(&a);
  const char* pb = reinterpret_cast<const char*>(&b);
  const char* px = reinterpret_cast<const char*>(&x);
  const char* py = reinterpret_cast<const char*>(&y);
  std::memcpy(&a0, pa, H);
  std::memcpy(&a1, pa + H, H);
  std::memcpy(&b0, pb, H);
  std::memcpy(&b1, pb + H, H);
  std::memcpy(&x0, px, H);
  std::memcpy(&x1, px + H, H);
  std::memcpy(&y0, py, H);
  std::memcpy(&y1, py + H, H);
  const half r0 = a0 < b0 ? x0 : y0;
  const half r1 = a1 < b1 ? x1 : y1;
  vec16<T> r;
  std::memcpy(&r, &r0, H);
  std::memcpy(reinterpret_cast<char*>(&r) + H, &r1, H);
  return r;
}

template <typename T>
MMVITMIX_INLINE vec16<T> vabs(const vec16<T>& v) {
  const vec16<T> zero = {};
  return vsel_lt<T>(v, zero, -v, v);
}

template <typename T>
MMVITMIX_INLINE vec16<T> vmax(const vec16<T>& a, const vec16<T>& b) {
  return vsel_lt<T>(a, b, b, a);
}

template <typename T, int N>
MMVITMIX_INLINE T hsum_tree(const typename VecN<T, N>::type& v) {
  if constexpr (N == 1) {
    return v[0];
  } else {
    typename VecN<T, N / 2>::type lo, hi;
    std::memcpy(&lo, &v, sizeof(lo));
    std::memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof(lo),
                sizeof(hi));
    return hsum_tree<T, N / 2>(lo + hi);
  }
}

template <typename T, int N>
MMVITMIX_INLINE T hmax_tree(const typename VecN<T, N>::type& v) {
  if constexpr (N == 1) {
    return v[0];
  } else {
    typename VecN<T, N / 2>::type lo, hi;
    std::memcpy(&lo, &v, sizeof(lo));
    std::memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof(lo),
                sizeof(hi));
    return hmax_tree<T, N / 2>(lo < hi ? hi : lo);
  }
}

template <typename T>
MMVITMIX_INLINE T hsum(const vec16<T>& v) {
  return hsum_tree<T, kColBlock>(v);
}

template <typename T>
MMVITMIX_INLINE T hmax(const vec16<T>& v) {
  return hmax_tree<T, kColBlock>(v);
}

// exp of 16 floats without branches (Cephes expf polynomial, < 2 ulp) for
// x <= 88 (the kernels only take exponentials of x <= 0); exactly 0 below
// -87.3 (where expf underflows) and for -inf
MMVITMIX_INLINE vec16<float> vexp(const vec16<float>& x) {
  typedef Vec16<float>::itype ivec;
  const vec16<float> lo = vsplat(-87.3f);
  const vec16<float> xc = vsel_lt<float>(x, lo, lo, x);
  // t = 1.5·2^23 + 127 + round(xc / ln 2): adding the magic number rounds
  // to an integer, and t's low mantissa bits then hold n + 127, the biased
  // exponent of 2^n (n >= -126 after the clamp)
  const float magic = 12582912.0f + 127.0f;
  const vec16<float> t = xc * 1.44269504088896341f + magic;
  const vec16<float> n = t - magic;
  // r = xc − n·ln 2 in two steps (Cody-Waite), |r| <= ln 2 / 2
  vec16<float> r = xc - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  // e^r = 1 + r + r²·P(r), Horner throughout
  vec16<float> p = vsplat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  ivec bits;
  std::memcpy(&bits, &t, sizeof(bits));
  bits = bits << 23;  // (n + 127) << 23: the bits above are shifted out
  vec16<float> scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return vsel_lt<float>(x, lo, vsplat(0.0f), p * scale);
}

MMVITMIX_INLINE vec16<double> vexp(const vec16<double>& x) {
  vec16<double> y;
  for (int i = 0; i < kColBlock; ++i) y[i] = std::exp(x[i]);
  return y;
}

// exp of a scalar through the vector routine (same rounding as the rows)
template <typename T>
MMVITMIX_INLINE T exp_scalar(T x) {
  return x == -std::numeric_limits<T>::infinity() ? T(0)
                                                   : vexp(vsplat(x))[0];
}

// C[r, c] = Σ_d A[r, d] · Bt[d, c]   (r < R, c < C; R % 4 == 0, C % 16 == 0)
template <typename T>
MMVITMIX_INLINE void gemm_abt(const T* A, int64_t lda, const T* Bt,
                              int64_t ldb, T* C, int64_t ldc, int64_t R,
                              int64_t Cn, int64_t depth) {
  for (int64_t r0 = 0; r0 < R; r0 += kRowBlock) {
    const T* a = A + r0 * lda;
    for (int64_t c0 = 0; c0 < Cn; c0 += kColBlock) {
      vec16<T> c0v = {}, c1v = {}, c2v = {}, c3v = {};
      for (int64_t d = 0; d < depth; ++d) {
        const vec16<T> b = vload(Bt + d * ldb + c0);
        c0v += a[d] * b;
        c1v += a[lda + d] * b;
        c2v += a[2 * lda + d] * b;
        c3v += a[3 * lda + d] * b;
      }
      T* c = C + r0 * ldc + c0;
      vstore(c, c0v);
      vstore(c + ldc, c1v);
      vstore(c + 2 * ldc, c2v);
      vstore(c + 3 * ldc, c3v);
    }
  }
}

// C[r, c] += Σ_k A[r, k] · B[k, c]   (R % 4 == 0, Cn % 16 == 0, any K)
template <typename T>
MMVITMIX_INLINE void gemm_ab_acc(const T* A, int64_t lda, const T* B,
                                 int64_t ldb, T* C, int64_t ldc, int64_t R,
                                 int64_t Cn, int64_t K) {
  for (int64_t r0 = 0; r0 < R; r0 += kRowBlock) {
    const T* a = A + r0 * lda;
    for (int64_t c0 = 0; c0 < Cn; c0 += kColBlock) {
      T* c = C + r0 * ldc + c0;
      vec16<T> c0v = vload(c), c1v = vload(c + ldc), c2v = vload(c + 2 * ldc),
               c3v = vload(c + 3 * ldc);
      for (int64_t k = 0; k < K; ++k) {
        const vec16<T> b = vload(B + k * ldb + c0);
        c0v += a[k] * b;
        c1v += a[lda + k] * b;
        c2v += a[2 * lda + k] * b;
        c3v += a[3 * lda + k] * b;
      }
      vstore(c, c0v);
      vstore(c + ldc, c1v);
      vstore(c + 2 * ldc, c2v);
      vstore(c + 3 * ldc, c3v);
    }
  }
}

// C[r, c] += Σ_k A[k, r] · B[k, c]   (A read transposed; R % 4 == 0,
// Cn % 16 == 0, any K)
template <typename T>
MMVITMIX_INLINE void gemm_atb_acc(const T* A, int64_t lda, const T* B,
                                  int64_t ldb, T* C, int64_t ldc, int64_t R,
                                  int64_t Cn, int64_t K) {
  for (int64_t r0 = 0; r0 < R; r0 += kRowBlock) {
    for (int64_t c0 = 0; c0 < Cn; c0 += kColBlock) {
      T* c = C + r0 * ldc + c0;
      vec16<T> c0v = vload(c), c1v = vload(c + ldc), c2v = vload(c + 2 * ldc),
               c3v = vload(c + 3 * ldc);
      for (int64_t k = 0; k < K; ++k) {
        const vec16<T> b = vload(B + k * ldb + c0);
        const T* a = A + k * lda + r0;
        c0v += a[0] * b;
        c1v += a[1] * b;
        c2v += a[2] * b;
        c3v += a[3] * b;
      }
      vstore(c, c0v);
      vstore(c + ldc, c1v);
      vstore(c + 2 * ldc, c2v);
      vstore(c + 3 * ldc, c3v);
    }
  }
}

// Σ_c x[c] over n (n % 16 == 0)
template <typename T>
MMVITMIX_INLINE T sum16(const T* x, int64_t n) {
  vec16<T> acc = {};
  for (int64_t c0 = 0; c0 < n; c0 += kColBlock) acc += vload(x + c0);
  return hsum<T>(acc);
}

// Σ_c x[c] · y[c] over n (n % 16 == 0)
template <typename T>
MMVITMIX_INLINE T dot16(const T* x, const T* y, int64_t n) {
  vec16<T> acc = {};
  for (int64_t c0 = 0; c0 < n; c0 += kColBlock)
    acc += vload(x + c0) * vload(y + c0);
  return hsum<T>(acc);
}

// max_c x[c] over n (n % 16 == 0)
template <typename T>
MMVITMIX_INLINE T max16(const T* x, int64_t n) {
  vec16<T> acc = vsplat(-std::numeric_limits<T>::infinity());
  for (int64_t c0 = 0; c0 < n; c0 += kColBlock)
    acc = vmax<T>(acc, vload(x + c0));
  return hmax<T>(acc);
}

// x[c] = exp(x[c] − shift) over n (n % 16 == 0); returns Σ_c of the result
template <typename T>
MMVITMIX_INLINE T exp_shift_sum(T* x, T shift, int64_t n) {
  vec16<T> acc = {};
  for (int64_t c0 = 0; c0 < n; c0 += kColBlock) {
    const vec16<T> e = vexp(vload(x + c0) - shift);
    vstore(x + c0, e);
    acc += e;
  }
  return hsum<T>(acc);
}

// y[c] *= a (n % 16 == 0)
template <typename T>
MMVITMIX_INLINE void scale16(T* y, T a, int64_t n) {
  for (int64_t c0 = 0; c0 < n; c0 += kColBlock)
    vstore(y + c0, vload(y + c0) * a);
}

// y[c] += a · x[c] (n % 16 == 0)
template <typename T>
MMVITMIX_INLINE void axpy16(T* y, T a, const T* x, int64_t n) {
  for (int64_t c0 = 0; c0 < n; c0 += kColBlock)
    vstore(y + c0, vload(y + c0) + a * vload(x + c0));
}

// dst[0:n] = src[0:n] converted (src has unit stride)
template <typename scalar_t, typename T>
MMVITMIX_INLINE void load_row(T* dst, const scalar_t* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<T>(src[i]);
}

// rows ahead of the one being read that the strided loaders prefetch
constexpr int64_t kPrefetchRows = 8;

// ask for every cache line of n elements at p
template <typename scalar_t>
MMVITMIX_INLINE void prefetch_row(const scalar_t* p, int64_t n) {
  const char* c = reinterpret_cast<const char*>(p);
  for (int64_t b = 0; b < n * static_cast<int64_t>(sizeof(scalar_t)); b += 64)
    __builtin_prefetch(c + b);
}

// dst[d * ldd + j] = src[j * stride + d]: n rows of width `depth` written
// transposed (columns j of dst)
template <typename scalar_t, typename T>
MMVITMIX_INLINE void load_transposed(T* dst, int64_t ldd,
                                     const scalar_t* src, int64_t stride,
                                     int64_t n, int64_t depth) {
  for (int64_t j = 0; j < n; ++j) {
    const scalar_t* s = src + j * stride;
    // rows are often far apart (a column of an image): ask for the row
    // kPrefetchRows ahead, which the hardware prefetchers will not
    if (j + kPrefetchRows < n) prefetch_row(s + kPrefetchRows * stride, depth);
    for (int64_t d = 0; d < depth; ++d) dst[d * ldd + j] = static_cast<T>(s[d]);
  }
}

}  // namespace cpu
}  // namespace mmvitmix
