// CPU kernels of retention attention (see ../retention.cpp for the op).
//
// Forward: per sequence (b, s, h) and block of 32 queries, keys in blocks of
// 128: S = Q·Kᵀ + log γ_h · dist (the bias from the token indices, never
// stored), online softmax, O += P·V; O / l and logsumexp are written. Work is
// split over sequences × query chunks with at::parallel_for.
// Backward (per sequence, recomputing P from the saved logsumexp):
//   D_i = dO_i·O_i,  dS = P ∘ (dO·Vᵀ − D),  dQ = dS·K,  dK = dSᵀ·Q,
//   dV = Pᵀ·dO,  d log γ_h = Σ dS ∘ dist.
// Inputs may have any strides with a unit stride on the head dim; they are
// gathered into padded float (double for float64) tiles.
//
// Optional rotary position shift (RMT's theta_shift) and logit scale, fused
// into the gathers: with sin/cos tables (S, L, Dk) the kernels use
//   q' = scale · rot(q),  k' = rot(k),
//   rot(x)[2m] = x[2m]·cos[2m] − x[2m+1]·sin[2m],
//   rot(x)[2m+1] = x[2m+1]·cos[2m+1] + x[2m]·sin[2m+1],
// and the backward maps dq', dk' back through rotᵀ (rotᵀ(g)[2m] =
// g[2m]·cos[2m] + g[2m+1]·sin[2m+1], rotᵀ(g)[2m+1] = g[2m+1]·cos[2m+1] −
// g[2m]·sin[2m]), so the rotated q and k never exist in memory.
#include <ATen/Parallel.h>

#include <type_traits>

#include "cpu/attention_cpu_utils.h"
#include "pytorch_cpp_helper.hpp"
#include "retention_rotary.hpp"

namespace mmvitmix {
namespace {

using cpu::round_up;
using cpu::vec16;
using cpu::vload;
using cpu::vstore;

constexpr int64_t kBlockQ = 32;
constexpr int64_t kBlockK = 128;

template <typename scalar_t, typename T>
struct RetentionParams {
  const scalar_t* q;
  const scalar_t* k;
  const scalar_t* v;
  const scalar_t* out;  // forward output (read in backward)
  const scalar_t* grad_out;
  scalar_t* out_w;  // forward: out; backward: unused
  scalar_t* dq;
  scalar_t* dk;
  scalar_t* dv;
  T* lse;
  T* decay_partial;  // (num_seq,) Σ dS ∘ dist per sequence
  const T* log_decay;
  const T* sin;  // rotary tables (S, L, Dk), unit last stride; or nullptr
  const T* cos;
  int64_t sins[2], coss[2];  // strides of the tables' dims S and L
  T scale;                   // multiplies q (after the rotation)
  int64_t qs[4], ks[4], vs[4], os[4], gs[4];  // strides of dims 0..3
  int64_t dqs[5], dks[5], dvs[5], ows[5];  // written tensors: dims 0..4
  int64_t heads, seqs, L, dim_k, dim_v, width;
  int64_t chunks, rows_per_chunk;
  bool decay_grad;
};

// a row of q (scaled) or k into dst, rotated when the tables are given;
// `pos` is the token's position in its sequence s
template <typename scalar_t, typename T>
MMVITMIX_INLINE void load_qk_row(const RetentionParams<scalar_t, T>& p,
                                 T* dst, const scalar_t* src, int64_t s,
                                 int64_t pos, T scale) {
  const int64_t n = p.dim_k;
  if (p.sin == nullptr) {
    for (int64_t e = 0; e < n; ++e) dst[e] = static_cast<T>(src[e]) * scale;
    return;
  }
  const T* sn = p.sin + s * p.sins[0] + pos * p.sins[1];
  const T* cs = p.cos + s * p.coss[0] + pos * p.coss[1];
  int64_t e = 0;
  if constexpr (std::is_same_v<scalar_t, T>) {
    // 16 channels at a time: x·cos + swap_pairs(x)·(∓sin)
    const vec16<T> sign = {-1, 1, -1, 1, -1, 1, -1, 1,
                           -1, 1, -1, 1, -1, 1, -1, 1};
    for (; e + cpu::kColBlock <= n; e += cpu::kColBlock) {
      const vec16<T> x = vload(src + e);
      const vec16<T> xs = __builtin_shufflevector(
          x, x, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
      vstore(dst + e,
             (x * vload(cs + e) + xs * (vload(sn + e) * sign)) * scale);
    }
  }
  for (; e < n; e += 2) {
    const T a = static_cast<T>(src[e]), b = static_cast<T>(src[e + 1]);
    dst[e] = (a * cs[e] - b * sn[e]) * scale;
    dst[e + 1] = (b * cs[e + 1] + a * sn[e + 1]) * scale;
  }
}

// dst[e * stride] = scale · rotᵀ(g)[e] (plain g · scale without tables)
template <typename scalar_t, typename T>
MMVITMIX_INLINE void store_qk_grad(const RetentionParams<scalar_t, T>& p,
                                   scalar_t* dst, int64_t stride, const T* g,
                                   int64_t s, int64_t pos, T scale) {
  const int64_t n = p.dim_k;
  if (p.sin == nullptr) {
    for (int64_t e = 0; e < n; ++e)
      dst[e * stride] = static_cast<scalar_t>(g[e] * scale);
    return;
  }
  const T* sn = p.sin + s * p.sins[0] + pos * p.sins[1];
  const T* cs = p.cos + s * p.coss[0] + pos * p.coss[1];
  for (int64_t e = 0; e < n; e += 2) {
    const T a = g[e], b = g[e + 1];
    dst[e * stride] = static_cast<scalar_t>((a * cs[e] + b * sn[e + 1]) * scale);
    dst[(e + 1) * stride] =
        static_cast<scalar_t>((b * cs[e + 1] - a * sn[e]) * scale);
  }
}

// (y, x) of every token (1-D: y = 0, x = index); padded entries are 0
template <typename T>
void token_coords(int64_t L, int64_t Lp, int64_t width, std::vector<T>& ys,
                  std::vector<T>& xs) {
  ys.assign(Lp, T(0));
  xs.assign(Lp, T(0));
  for (int64_t j = 0; j < L; ++j) {
    ys[j] = width > 0 ? static_cast<T>(j / width) : T(0);
    xs[j] = width > 0 ? static_cast<T>(j % width) : static_cast<T>(j);
  }
}

// Manhattan distance of token (yi, xi) to the 16 keys at ky, kx
template <typename T>
MMVITMIX_INLINE vec16<T> distance16(T yi, T xi, const T* ky, const T* kx) {
  return cpu::vabs<T>(yi - vload(ky)) + cpu::vabs<T>(xi - vload(kx));
}

// a row of S: add the decay bias (1-D: |xi − x_j|, grid: Manhattan), set
// the padding columns >= bk to -inf; returns the row's max
template <typename T>
MMVITMIX_INLINE T add_bias_max(T* srow, int64_t bkp, int64_t bk, T slope,
                               bool grid, T yi, T xi, const T* ky,
                               const T* kx) {
  const T ninf = -std::numeric_limits<T>::infinity();
  vec16<T> mx = cpu::vsplat(ninf);
  const int64_t full = bk / cpu::kColBlock * cpu::kColBlock;
  if (grid) {
    for (int64_t c0 = 0; c0 < full; c0 += cpu::kColBlock) {
      const vec16<T> s =
          vload(srow + c0) + slope * distance16(yi, xi, ky + c0, kx + c0);
      vstore(srow + c0, s);
      mx = cpu::vmax<T>(mx, s);
    }
  } else {
    for (int64_t c0 = 0; c0 < full; c0 += cpu::kColBlock) {
      const vec16<T> s =
          vload(srow + c0) + slope * cpu::vabs<T>(xi - vload(kx + c0));
      vstore(srow + c0, s);
      mx = cpu::vmax<T>(mx, s);
    }
  }
  if (full < bkp) {  // the last, partial vector
    for (int64_t c = full; c < bkp; ++c) {
      const T dist = std::abs(yi - ky[c]) + std::abs(xi - kx[c]);
      srow[c] = c < bk ? srow[c] + slope * dist : ninf;
    }
    mx = cpu::vmax<T>(mx, vload(srow + full));
  }
  return cpu::hmax<T>(mx);
}

template <typename scalar_t, typename T>
MMVITMIX_CPU_CLONES void retention_forward_tasks(
    const RetentionParams<scalar_t, T>& p, int64_t begin, int64_t end) {
  const int64_t L = p.L, dk = p.dim_k, dv = p.dim_v;
  const int64_t Lp = round_up(L, cpu::kColBlock);
  const int64_t dvp = round_up(dv, cpu::kColBlock);
  std::vector<T> Kt(dk * Lp, T(0)), Vr(Lp * dvp, T(0));
  std::vector<T> Qb(kBlockQ * dk, T(0)), S(kBlockQ * kBlockK, T(0));
  std::vector<T> acc(kBlockQ * dvp, T(0)), m(kBlockQ), l(kBlockQ);
  std::vector<T> krow(dk);
  std::vector<T> ky, kx;
  token_coords(L, Lp, p.width, ky, kx);
  int64_t cached_seq = -1;
  for (int64_t t = begin; t < end; ++t) {
    const int64_t seq = t / p.chunks, chunk = t % p.chunks;
    const int64_t h = seq % p.heads, bs = seq / p.heads;
    const int64_t s = bs % p.seqs, b = bs / p.seqs;
    const scalar_t* qb = p.q + b * p.qs[0] + h * p.qs[1] + s * p.qs[2];
    const scalar_t* kb = p.k + b * p.ks[0] + h * p.ks[1] + s * p.ks[2];
    const scalar_t* vb = p.v + b * p.vs[0] + h * p.vs[1] + s * p.vs[2];
    scalar_t* ob = p.out_w + b * p.ows[0] + h * p.ows[1] + s * p.ows[2];
    T* lseb = p.lse + ((b * p.heads + h) * p.seqs + s) * L;
    if (seq != cached_seq) {
      // k' (transposed) and v rows; the rows of a column pass are far
      // apart, so ask for the ones kPrefetchRows ahead
      for (int64_t j = 0; j < L; ++j) {
        const int64_t ahead = j + cpu::kPrefetchRows;
        if (ahead < L) {
          cpu::prefetch_row(kb + ahead * p.ks[3], dk);
          cpu::prefetch_row(vb + ahead * p.vs[3], dv);
          if (p.sin != nullptr) {
            cpu::prefetch_row(p.sin + s * p.sins[0] + ahead * p.sins[1], dk);
            cpu::prefetch_row(p.cos + s * p.coss[0] + ahead * p.coss[1], dk);
          }
        }
        load_qk_row(p, krow.data(), kb + j * p.ks[3], s, j, T(1));
        for (int64_t d = 0; d < dk; ++d) Kt[d * Lp + j] = krow[d];
        cpu::load_row(Vr.data() + j * dvp, vb + j * p.vs[3], dv);
      }
      cached_seq = seq;
    }
    const T slope = p.log_decay[h];
    const int64_t row_end = std::min(L, (chunk + 1) * p.rows_per_chunk);
    for (int64_t i0 = chunk * p.rows_per_chunk; i0 < row_end; i0 += kBlockQ) {
      const int64_t bq = std::min(kBlockQ, row_end - i0);
      const int64_t bqp = round_up(bq, cpu::kRowBlock);
      for (int64_t r = 0; r < bq; ++r) {
        if (r + cpu::kPrefetchRows < bq) {
          const int64_t ahead = i0 + r + cpu::kPrefetchRows;
          cpu::prefetch_row(qb + ahead * p.qs[3], dk);
          if (p.sin != nullptr) {
            cpu::prefetch_row(p.sin + s * p.sins[0] + ahead * p.sins[1], dk);
            cpu::prefetch_row(p.cos + s * p.coss[0] + ahead * p.coss[1], dk);
          }
        }
        load_qk_row(p, Qb.data() + r * dk, qb + (i0 + r) * p.qs[3], s,
                    i0 + r, p.scale);
      }
      std::fill(m.begin(), m.end(), -std::numeric_limits<T>::infinity());
      std::fill(l.begin(), l.end(), T(0));
      std::fill(acc.begin(), acc.end(), T(0));
      for (int64_t j0 = 0; j0 < L; j0 += kBlockK) {
        const int64_t bk = std::min(kBlockK, L - j0);
        const int64_t bkp = round_up(bk, cpu::kColBlock);
        cpu::gemm_abt(Qb.data(), dk, Kt.data() + j0, Lp, S.data(), kBlockK,
                      bqp, bkp, dk);
        for (int64_t r = 0; r < bqp; ++r) {
          T* srow = S.data() + r * kBlockK;
          if (r >= bq) {  // padding rows: P = 0
            std::fill(srow, srow + bkp, T(0));
            continue;
          }
          const int64_t i = i0 + r;
          const T yi = p.width > 0 ? static_cast<T>(i / p.width) : T(0);
          const T xi = p.width > 0 ? static_cast<T>(i % p.width)
                                   : static_cast<T>(i);
          const T row_max =
              add_bias_max(srow, bkp, bk, slope, p.width > 0, yi, xi,
                           ky.data() + j0, kx.data() + j0);
          const T m_new = std::max(m[r], row_max);
          const T alpha = cpu::exp_scalar(m[r] - m_new);
          l[r] = l[r] * alpha + cpu::exp_shift_sum(srow, m_new, bkp);
          m[r] = m_new;
          cpu::scale16(acc.data() + r * dvp, alpha, dvp);
        }
        cpu::gemm_ab_acc(S.data(), kBlockK, Vr.data() + j0 * dvp, dvp,
                         acc.data(), dvp, bqp, dvp, bk);
      }
      for (int64_t r = 0; r < bq; ++r) {
        const T inv = T(1) / l[r];
        scalar_t* orow = ob + (i0 + r) * p.ows[3];
        const T* arow = acc.data() + r * dvp;
        int64_t e = 0;
        if constexpr (std::is_same_v<scalar_t, T>) {
          if (p.ows[4] == 1) {
            for (; e + cpu::kColBlock <= dv; e += cpu::kColBlock)
              vstore(orow + e, vload(arow + e) * inv);
          }
        }
        for (; e < dv; ++e)
          orow[e * p.ows[4]] = static_cast<scalar_t>(arow[e] * inv);
        lseb[i0 + r] = m[r] + std::log(l[r]);
      }
    }
  }
}

template <typename scalar_t, typename T>
MMVITMIX_CPU_CLONES void retention_backward_tasks(
    const RetentionParams<scalar_t, T>& p, int64_t begin, int64_t end) {
  const int64_t L = p.L, dk = p.dim_k, dv = p.dim_v;
  const int64_t Lp = round_up(L, cpu::kColBlock);
  const int64_t dkp = round_up(dk, cpu::kColBlock);
  const int64_t dvp = round_up(dv, cpu::kColBlock);
  std::vector<T> Kt(dk * Lp, T(0)), Kr(Lp * dkp, T(0)), Vt(dv * Lp, T(0));
  std::vector<T> dK(Lp * dkp), dV(Lp * dvp);
  std::vector<T> Qb(kBlockQ * dkp, T(0)), dOb(kBlockQ * dvp, T(0));
  std::vector<T> dQb(kBlockQ * dkp), P(kBlockQ * kBlockK),
      dS(kBlockQ * kBlockK);
  std::vector<T> Dr(kBlockQ), lse_r(kBlockQ), orow(dv);
  std::vector<T> ky, kx;
  token_coords(L, Lp, p.width, ky, kx);
  for (int64_t seq = begin; seq < end; ++seq) {
    const int64_t h = seq % p.heads, bs = seq / p.heads;
    const int64_t s = bs % p.seqs, b = bs / p.seqs;
    const scalar_t* qb = p.q + b * p.qs[0] + h * p.qs[1] + s * p.qs[2];
    const scalar_t* kb = p.k + b * p.ks[0] + h * p.ks[1] + s * p.ks[2];
    const scalar_t* vb = p.v + b * p.vs[0] + h * p.vs[1] + s * p.vs[2];
    const scalar_t* ob = p.out + b * p.os[0] + h * p.os[1] + s * p.os[2];
    const scalar_t* gb = p.grad_out + b * p.gs[0] + h * p.gs[1] + s * p.gs[2];
    scalar_t* dqb = p.dq + b * p.dqs[0] + h * p.dqs[1] + s * p.dqs[2];
    scalar_t* dkb = p.dk + b * p.dks[0] + h * p.dks[1] + s * p.dks[2];
    scalar_t* dvb = p.dv + b * p.dvs[0] + h * p.dvs[1] + s * p.dvs[2];
    const T* lseb = p.lse + ((b * p.heads + h) * p.seqs + s) * L;
    cpu::load_transposed(Vt.data(), Lp, vb, p.vs[3], L, dv);
    for (int64_t j = 0; j < L; ++j) {  // rows of k', and k' transposed
      T* kr = Kr.data() + j * dkp;
      load_qk_row(p, kr, kb + j * p.ks[3], s, j, T(1));
      for (int64_t d = 0; d < dk; ++d) Kt[d * Lp + j] = kr[d];
    }
    std::fill(dK.begin(), dK.end(), T(0));
    std::fill(dV.begin(), dV.end(), T(0));
    const T slope = p.log_decay[h];
    T decay_acc = 0;
    for (int64_t i0 = 0; i0 < L; i0 += kBlockQ) {
      const int64_t bq = std::min(kBlockQ, L - i0);
      const int64_t bqp = round_up(bq, cpu::kRowBlock);
      for (int64_t r = 0; r < bq; ++r) {
        const int64_t i = i0 + r;
        load_qk_row(p, Qb.data() + r * dkp, qb + i * p.qs[3], s, i, p.scale);
        cpu::load_row(dOb.data() + r * dvp, gb + i * p.gs[3], dv);
        cpu::load_row(orow.data(), ob + i * p.os[3], dv);
        T d = 0;
        for (int64_t e = 0; e < dv; ++e) d += dOb[r * dvp + e] * orow[e];
        Dr[r] = d;
        lse_r[r] = lseb[i];
      }
      std::fill(dQb.begin(), dQb.end(), T(0));
      for (int64_t j0 = 0; j0 < L; j0 += kBlockK) {
        const int64_t bk = std::min(kBlockK, L - j0);
        const int64_t bkp = round_up(bk, cpu::kColBlock);
        cpu::gemm_abt(Qb.data(), dkp, Kt.data() + j0, Lp, P.data(), kBlockK,
                      bqp, bkp, dk);
        cpu::gemm_abt(dOb.data(), dvp, Vt.data() + j0, Lp, dS.data(),
                      kBlockK, bqp, bkp, dv);
        for (int64_t r = 0; r < bqp; ++r) {
          T* prow = P.data() + r * kBlockK;
          T* drow = dS.data() + r * kBlockK;
          if (r >= bq) {
            std::fill(prow, prow + bkp, T(0));
            std::fill(drow, drow + bkp, T(0));
            continue;
          }
          const int64_t i = i0 + r;
          const T yi = p.width > 0 ? static_cast<T>(i / p.width) : T(0);
          const T xi = p.width > 0 ? static_cast<T>(i % p.width)
                                   : static_cast<T>(i);
          const T* kyb = ky.data() + j0;
          const T* kxb = kx.data() + j0;
          add_bias_max(prow, bkp, bk, slope, p.width > 0, yi, xi, kyb, kxb);
          cpu::exp_shift_sum(prow, lse_r[r], bkp);
          const T D_i = Dr[r];
          vec16<T> dsum = {};
          for (int64_t c0 = 0; c0 < bkp; c0 += cpu::kColBlock) {
            const vec16<T> ds =
                vload(prow + c0) * (vload(drow + c0) - D_i);
            vstore(drow + c0, ds);
            if (p.decay_grad)
              dsum += ds * distance16(yi, xi, kyb + c0, kxb + c0);
          }
          decay_acc += cpu::hsum<T>(dsum);
        }
        const int64_t bk4 = round_up(bk, cpu::kRowBlock);
        cpu::gemm_atb_acc(P.data(), kBlockK, dOb.data(), dvp,
                          dV.data() + j0 * dvp, dvp, bk4, dvp, bq);
        cpu::gemm_atb_acc(dS.data(), kBlockK, Qb.data(), dkp,
                          dK.data() + j0 * dkp, dkp, bk4, dkp, bq);
        cpu::gemm_ab_acc(dS.data(), kBlockK, Kr.data() + j0 * dkp, dkp,
                         dQb.data(), dkp, bqp, dkp, bk);
      }
      for (int64_t r = 0; r < bq; ++r)
        store_qk_grad(p, dqb + (i0 + r) * p.dqs[3], p.dqs[4],
                      dQb.data() + r * dkp, s, i0 + r, p.scale);
    }
    for (int64_t j = 0; j < L; ++j) {
      scalar_t* dkr = dkb + j * p.dks[3];
      scalar_t* dvr = dvb + j * p.dvs[3];
      store_qk_grad(p, dkr, p.dks[4], dK.data() + j * dkp, s, j, T(1));
      for (int64_t e = 0; e < dv; ++e)
        dvr[e * p.dvs[4]] = static_cast<scalar_t>(dV[j * dvp + e]);
    }
    if (p.decay_grad) p.decay_partial[seq] = decay_acc;
  }
}

// sequences × query chunks: one chunk per sequence when there are enough
// sequences to keep every thread busy, else chunks of whole query blocks
void plan_chunks(int64_t num_seq, int64_t L, int64_t* chunks,
                 int64_t* rows_per_chunk) {
  const int64_t want = 4 * static_cast<int64_t>(at::get_num_threads());
  int64_t c = num_seq >= want ? 1 : (want + num_seq - 1) / num_seq;
  c = std::max<int64_t>(1, std::min(c, (L + kBlockQ - 1) / kBlockQ));
  *rows_per_chunk = round_up((L + c - 1) / c, kBlockQ);
  *chunks = (L + *rows_per_chunk - 1) / *rows_per_chunk;
}

// the rotary tables in the accumulation dtype (unit last stride), the
// logit scale, into p
template <typename scalar_t, typename T>
void set_rotary(RetentionParams<scalar_t, T>& p, const RotaryTables& rot) {
  p.sin = p.cos = nullptr;
  p.scale = static_cast<T>(rot.scale);
  if (!rot.sin.defined()) return;
  p.sin = rot.sin.data_ptr<T>();
  p.cos = rot.cos.data_ptr<T>();
  p.sins[0] = rot.sin.stride(0);
  p.sins[1] = rot.sin.stride(1);
  p.coss[0] = rot.cos.stride(0);
  p.coss[1] = rot.cos.stride(1);
}

}  // namespace

std::tuple<Tensor, Tensor> retention_forward_cpu(const Tensor& q_in,
                                                 const Tensor& k_in,
                                                 const Tensor& v_in,
                                                 const Tensor& log_decay,
                                                 int64_t width,
                                                 const RotaryTables& rotary) {
  const Tensor q = unit_last_stride(q_in), k = unit_last_stride(k_in),
               v = unit_last_stride(v_in);
  Tensor out = at::empty_like(v_in);
  const auto stats = stats_dtype(q.scalar_type());
  Tensor lse = at::empty(q.sizes().slice(0, 4), q.options().dtype(stats));
  if (out.numel() == 0 || q.numel() == 0) return {out.zero_(), lse.zero_()};
  const Tensor decay = log_decay.to(stats).contiguous();
  const RotaryTables rot = rotary.to(stats);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "retention_forward_cpu",
      [&] {
        using T = acc_type_t<scalar_t>;
        RetentionParams<scalar_t, T> p{};
        set_rotary(p, rot);
        p.q = q.data_ptr<scalar_t>();
        p.k = k.data_ptr<scalar_t>();
        p.v = v.data_ptr<scalar_t>();
        p.out_w = out.data_ptr<scalar_t>();
        p.lse = lse.data_ptr<T>();
        p.log_decay = decay.data_ptr<T>();
        strides_of<4>(q, p.qs);
        strides_of<4>(k, p.ks);
        strides_of<4>(v, p.vs);
        strides_of<5>(out, p.ows);
        p.heads = q.size(1);
        p.seqs = q.size(2);
        p.L = q.size(3);
        p.dim_k = q.size(4);
        p.dim_v = v.size(4);
        p.width = width;
        const int64_t num_seq = q.size(0) * p.seqs * p.heads;
        plan_chunks(num_seq, p.L, &p.chunks, &p.rows_per_chunk);
        at::parallel_for(0, num_seq * p.chunks, 1,
                         [&](int64_t begin, int64_t end) {
                           retention_forward_tasks<scalar_t, T>(p, begin, end);
                         });
      });
  return {out, lse};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> retention_backward_cpu(
    const Tensor& grad_out_in, const Tensor& q_in, const Tensor& k_in,
    const Tensor& v_in, const Tensor& out_in, const Tensor& lse_in,
    const Tensor& log_decay, int64_t width, bool decay_grad,
    const RotaryTables& rotary) {
  const Tensor q = unit_last_stride(q_in), k = unit_last_stride(k_in),
               v = unit_last_stride(v_in), out = unit_last_stride(out_in),
               grad_out = unit_last_stride(grad_out_in);
  const Tensor lse = lse_in.contiguous();
  Tensor dq = at::empty_like(q_in), dk = at::empty_like(k_in),
         dv = at::empty_like(v_in);
  const auto stats = stats_dtype(q.scalar_type());
  const int64_t B = q.size(0), heads = q.size(1), S = q.size(2);
  Tensor decay_partial = at::zeros({B, S, heads}, q.options().dtype(stats));
  if (q.numel() == 0 || v.numel() == 0) {
    return {dq.zero_(), dk.zero_(), dv.zero_(),
            at::zeros({heads}, log_decay.options())};
  }
  const Tensor decay = log_decay.to(stats).contiguous();
  const RotaryTables rot = rotary.to(stats);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "retention_backward_cpu",
      [&] {
        using T = acc_type_t<scalar_t>;
        RetentionParams<scalar_t, T> p{};
        set_rotary(p, rot);
        p.q = q.data_ptr<scalar_t>();
        p.k = k.data_ptr<scalar_t>();
        p.v = v.data_ptr<scalar_t>();
        p.out = out.data_ptr<scalar_t>();
        p.grad_out = grad_out.data_ptr<scalar_t>();
        p.dq = dq.data_ptr<scalar_t>();
        p.dk = dk.data_ptr<scalar_t>();
        p.dv = dv.data_ptr<scalar_t>();
        p.lse = lse.data_ptr<T>();
        p.decay_partial = decay_partial.data_ptr<T>();
        p.log_decay = decay.data_ptr<T>();
        strides_of<4>(q, p.qs);
        strides_of<4>(k, p.ks);
        strides_of<4>(v, p.vs);
        strides_of<4>(out, p.os);
        strides_of<4>(grad_out, p.gs);
        strides_of<5>(dq, p.dqs);
        strides_of<5>(dk, p.dks);
        strides_of<5>(dv, p.dvs);
        p.heads = heads;
        p.seqs = S;
        p.L = q.size(3);
        p.dim_k = q.size(4);
        p.dim_v = v.size(4);
        p.width = width;
        p.decay_grad = decay_grad;
        at::parallel_for(0, B * S * heads, 1, [&](int64_t begin, int64_t end) {
          retention_backward_tasks<scalar_t, T>(p, begin, end);
        });
      });
  Tensor ddecay = decay_partial.sum({0, 1}).to(log_decay.scalar_type());
  return {dq, dk, dv, ddecay};
}

}  // namespace mmvitmix
