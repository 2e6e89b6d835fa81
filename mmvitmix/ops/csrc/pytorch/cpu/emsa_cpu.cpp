// CPU kernels of ResT's EMSA core (see ../emsa.cpp for the op and the
// identity out = Σ_j (P_ij − 1/M) v_j / σ, σ² = Σ_ij (P_ij − 1/M)² / (NM) +
// eps, it relies on).
//
// Forward, per batch element and block of 16 query rows, keys in blocks of
// 64: the raw logits of every head T_g = scale·Q_g K_gᵀ, the mixed logits
// T'_h = Σ_g W[h, g] T_g + b_h, then per head and row an online softmax in
// *centred* form: with e_j = exp(T'_j − m) and the running max m, it keeps
// the mean μ of the e seen so far, M2 = Σ (e_j − μ)² and C = Σ (e_j − μ) v_j
// (a vector), merging each key block's centred sums with Chan's formulas and
// rescaling by α = exp(m_old − m_new) (μ, C by α, M2 by α²). At the end
// l = M·μ, Σ_j (P_ij − 1/M)² = M2 / l² and Σ_j (P_ij − 1/M) v_j = C / l:
// the map's variance and the centred output come without the cancellation
// of Σ P² − 1/M or P·V − mean v, which matters when maps are near uniform
// (variance ≪ eps, as at initialisation). A second, cheap pass divides by σ.
// Backward recomputes P from the saved logsumexp. With dO = dY/σ,
// dS_h = −Σ_i dY_i·out_i / (2σ²NM) (the gradient of Σ P²), D_i = dY_i·out_i
// and r_i = Σ_j (P_ij − 1/M)²:
//   dT'_h = P ∘ (dO·(v − v̄)ᵀ − D + 2 dS ((P − 1/M) − r)),
//   dV += (P − 1/M)ᵀ dO,  dW[h, g] = Σ dT'_h ∘ T_g,
//   dT_g = Σ_h W[h, g] dT'_h,  dQ_g = scale·dT_g K_g,  dK_g = scale·dT_gᵀ Q_g.
// The bias gradient is exactly zero: b_h shifts every logit of a softmax row
// alike (Σ_j dT'_h,ij = 0 for each row), so it is returned as zeros.
// Batches are processed in turn in the backward; query blocks run in
// parallel with per-thread dK / dV / dW accumulators summed afterwards.
#include <ATen/Parallel.h>

#include "cpu/attention_cpu_utils.h"
#include "pytorch_cpp_helper.hpp"

namespace mmvitmix {
namespace {

using cpu::round_up;
using cpu::vec16;
using cpu::vload;
using cpu::vstore;

constexpr int64_t kBlockQ = 16;
constexpr int64_t kBlockK = 64;

template <typename scalar_t, typename T>
struct EmsaParams {
  const scalar_t* q;
  const scalar_t* k;
  const scalar_t* v;
  const scalar_t* out;
  const scalar_t* grad_out;
  int64_t qs[4], ks[4], vs[4], os[4], gs[4];
  int64_t B, heads, N, M, D, Dv, Mp, Dp, Dvp, nkb;
  T scale;
  const T* W;     // (heads, heads)
  const T* bias;  // (heads,)
  // packed keys / values (float, padded): per (batch, head) blocks in the
  // forward, per head of the current batch in the backward
  const T* Kt;    // (., D, Mp)
  const T* Kr;    // (., Mp, Dp)
  const T* Vr;    // (., Mp, Dvp)
  const T* Vt;    // (., Dv, Mp), centred (v − mean_j v) in the backward
  const T* vblk;  // forward: (B, heads, nkb, Dvp) mean of v per key block
  const T* vrun;  // forward: (B, heads, nkb, Dvp) mean of v before the block
  T* obuf;        // forward: (B, heads, N, Dvp) Σ_j (P_ij − 1/M) v_j
  T* lse;         // (B, heads, N)
  T* dev2;        // (B, heads, N) Σ_j (P_ij − 1/M)²
};

template <typename scalar_t, typename T>
MMVITMIX_CPU_CLONES void emsa_forward_tasks(const EmsaParams<scalar_t, T>& p,
                                            int64_t begin, int64_t end) {
  const int64_t H = p.heads, N = p.N, M = p.M, D = p.D, Mp = p.Mp,
                Dvp = p.Dvp;
  const int64_t blk = kBlockQ * kBlockK;
  const int64_t nqb = (N + kBlockQ - 1) / kBlockQ;
  std::vector<T> Qb(H * kBlockQ * D, T(0)), Traw(H * blk), Tmix(H * blk);
  std::vector<T> acc(H * kBlockQ * Dvp), m(H * kBlockQ), mu(H * kBlockQ),
      m2(H * kBlockQ);
  const T ninf = -std::numeric_limits<T>::infinity();
  for (int64_t t = begin; t < end; ++t) {
    const int64_t b = t / nqb, i0 = (t % nqb) * kBlockQ;
    const int64_t bq = std::min(kBlockQ, N - i0);
    const int64_t bqp = round_up(bq, cpu::kRowBlock);
    for (int64_t g = 0; g < H; ++g) {
      const scalar_t* qg = p.q + b * p.qs[0] + g * p.qs[1];
      for (int64_t r = 0; r < bq; ++r)
        cpu::load_row(Qb.data() + (g * kBlockQ + r) * D,
                      qg + (i0 + r) * p.qs[2], D);
    }
    std::fill(m.begin(), m.end(), ninf);
    std::fill(mu.begin(), mu.end(), T(0));
    std::fill(m2.begin(), m2.end(), T(0));
    std::fill(acc.begin(), acc.end(), T(0));
    for (int64_t kb = 0, j0 = 0; j0 < M; ++kb, j0 += kBlockK) {
      const int64_t bk = std::min(kBlockK, M - j0);
      const int64_t bkp = round_up(bk, cpu::kColBlock);
      // weights of Chan's merge of j0 keys seen with this block's bk keys
      const T frac = static_cast<T>(bk) / static_cast<T>(j0 + bk);
      const T cross = static_cast<T>(j0) * frac;
      for (int64_t g = 0; g < H; ++g) {
        cpu::gemm_abt(Qb.data() + g * kBlockQ * D, D,
                      p.Kt + (b * H + g) * D * Mp + j0, Mp,
                      Traw.data() + g * blk, kBlockK, bqp, bkp, D);
      }
      for (int64_t h = 0; h < H; ++h) {
        T* tm = Tmix.data() + h * blk;
        const T* w = p.W + h * H;
        const T* vmb = p.vblk + ((b * H + h) * p.nkb + kb) * Dvp;
        const T* vma = p.vrun + ((b * H + h) * p.nkb + kb) * Dvp;
        for (int64_t r = 0; r < bqp; ++r) {
          T* srow = tm + r * kBlockK;
          if (r >= bq) {
            std::fill(srow, srow + bkp, T(0));
            continue;
          }
          std::fill(srow, srow + bkp, p.bias[h]);
          for (int64_t g = 0; g < H; ++g)
            cpu::axpy16(srow, w[g] * p.scale,
                        Traw.data() + g * blk + r * kBlockK, bkp);
          for (int64_t c = bk; c < bkp; ++c) srow[c] = ninf;
          const int64_t hr = h * kBlockQ + r;
          const T m_new = std::max(m[hr], cpu::max16(srow, bkp));
          const T alpha = cpu::exp_scalar(m[hr] - m_new);
          // this block's e, centred on its own mean
          const T mu_b = cpu::exp_shift_sum(srow, m_new, bkp) /
                         static_cast<T>(bk);
          for (int64_t c0 = 0; c0 < bkp; c0 += cpu::kColBlock)
            vstore(srow + c0, vload(srow + c0) - mu_b);
          for (int64_t c = bk; c < bkp; ++c) srow[c] = 0;
          const T m2_b = cpu::dot16(srow, srow, bkp);
          // merge with the (rescaled) running sums
          const T mu_a = mu[hr] * alpha;
          const T delta = mu_b - mu_a;
          mu[hr] = mu_a + delta * frac;
          m2[hr] = m2[hr] * alpha * alpha + m2_b + delta * delta * cross;
          m[hr] = m_new;
          const T cf = delta * cross;
          T* arow = acc.data() + hr * Dvp;
          for (int64_t e0 = 0; e0 < Dvp; e0 += cpu::kColBlock) {
            vstore(arow + e0, vload(arow + e0) * alpha +
                                  cf * (vload(vmb + e0) - vload(vma + e0)));
          }
        }
        // C += Σ_c (e_c − μ_b) v_c
        cpu::gemm_ab_acc(tm, kBlockK, p.Vr + ((b * H + h) * Mp + j0) * Dvp,
                         Dvp, acc.data() + h * kBlockQ * Dvp, Dvp, bqp, Dvp,
                         bk);
      }
    }
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t r = 0; r < bq; ++r) {
        const int64_t hr = h * kBlockQ + r;
        const int64_t row = (b * H + h) * N + i0 + r;
        const T l = mu[hr] * static_cast<T>(M);
        const T inv = T(1) / l;
        const T* arow = acc.data() + hr * Dvp;
        T* orow = p.obuf + row * Dvp;
        for (int64_t e = 0; e < Dvp; ++e) orow[e] = arow[e] * inv;
        p.lse[row] = m[hr] + std::log(l);
        p.dev2[row] = m2[hr] * inv * inv;
      }
    }
  }
}

template <typename scalar_t, typename T>
MMVITMIX_CPU_CLONES void emsa_backward_tasks(
    const EmsaParams<scalar_t, T>& p, int64_t b, int64_t begin, int64_t end,
    const T* sigma, const T* dsq, T* dK, T* dV, T* dW, scalar_t* dq,
    const int64_t* dqs) {
  const int64_t H = p.heads, N = p.N, M = p.M, D = p.D, Dv = p.Dv,
                Mp = p.Mp, Dp = p.Dp, Dvp = p.Dvp;
  const int64_t blk = kBlockQ * kBlockK;
  const T inv_m = T(1) / static_cast<T>(M);
  std::vector<T> Qs(H * kBlockQ * Dp, T(0)), dO(H * kBlockQ * Dvp, T(0));
  std::vector<T> Traw(H * blk), P(H * blk), dT(H * blk);
  std::vector<T> dQ(H * kBlockQ * Dp), Drow(H * kBlockQ), lse_r(H * kBlockQ),
      dev_r(H * kBlockQ);
  std::vector<T> yrow(Dv), orow(Dv);
  for (int64_t qb = begin; qb < end; ++qb) {
    const int64_t i0 = qb * kBlockQ;
    const int64_t bq = std::min(kBlockQ, N - i0);
    const int64_t bqp = round_up(bq, cpu::kRowBlock);
    for (int64_t h = 0; h < H; ++h) {
      const int64_t bh = b * H + h;
      const scalar_t* qh = p.q + b * p.qs[0] + h * p.qs[1];
      const scalar_t* gh = p.grad_out + b * p.gs[0] + h * p.gs[1];
      const scalar_t* oh = p.out + b * p.os[0] + h * p.os[1];
      const T inv_sig = T(1) / sigma[bh];
      for (int64_t r = 0; r < bq; ++r) {
        const int64_t i = i0 + r, hr = h * kBlockQ + r;
        T* qrow = Qs.data() + hr * Dp;
        const scalar_t* qsrc = qh + i * p.qs[2];
        for (int64_t d = 0; d < D; ++d)
          qrow[d] = static_cast<T>(qsrc[d]) * p.scale;
        cpu::load_row(yrow.data(), gh + i * p.gs[2], Dv);
        cpu::load_row(orow.data(), oh + i * p.os[2], Dv);
        T* dorow = dO.data() + hr * Dvp;
        T dot = 0;
        for (int64_t e = 0; e < Dv; ++e) {
          dorow[e] = yrow[e] * inv_sig;
          dot += yrow[e] * orow[e];
        }
        const int64_t row = bh * N + i;
        Drow[hr] = dot;
        lse_r[hr] = p.lse[row];
        dev_r[hr] = p.dev2[row];
      }
    }
    std::fill(dQ.begin(), dQ.end(), T(0));
    for (int64_t j0 = 0; j0 < M; j0 += kBlockK) {
      const int64_t bk = std::min(kBlockK, M - j0);
      const int64_t bkp = round_up(bk, cpu::kColBlock);
      const int64_t bk4 = round_up(bk, cpu::kRowBlock);
      for (int64_t g = 0; g < H; ++g) {
        cpu::gemm_abt(Qs.data() + g * kBlockQ * Dp, Dp, p.Kt + g * D * Mp + j0,
                      Mp, Traw.data() + g * blk, kBlockK, bqp, bkp, D);
      }
      for (int64_t h = 0; h < H; ++h) {
        const int64_t bh = b * H + h;
        T* ph = P.data() + h * blk;
        T* dth = dT.data() + h * blk;
        // dO·(v − v̄)ᵀ
        cpu::gemm_abt(dO.data() + h * kBlockQ * Dvp, Dvp,
                      p.Vt + h * Dv * Mp + j0, Mp, dth, kBlockK, bqp, bkp,
                      Dv);
        const T* w = p.W + h * H;
        const T two_ds = 2 * dsq[bh];
        for (int64_t r = 0; r < bqp; ++r) {
          T* prow = ph + r * kBlockK;
          T* drow = dth + r * kBlockK;
          if (r >= bq) {
            std::fill(prow, prow + bkp, T(0));
            std::fill(drow, drow + bkp, T(0));
            continue;
          }
          const int64_t hr = h * kBlockQ + r;
          std::fill(prow, prow + bkp, p.bias[h]);
          for (int64_t g = 0; g < H; ++g)
            cpu::axpy16(prow, w[g], Traw.data() + g * blk + r * kBlockK, bkp);
          for (int64_t c = bk; c < bkp; ++c)
            prow[c] = -std::numeric_limits<T>::infinity();
          cpu::exp_shift_sum(prow, lse_r[hr], bkp);
          const T Dr = Drow[hr], dev = dev_r[hr];
          for (int64_t c0 = 0; c0 < bkp; c0 += cpu::kColBlock) {
            const vec16<T> pc = vload(prow + c0);
            const vec16<T> centred = pc - inv_m;
            vstore(drow + c0,
                   pc * (vload(drow + c0) - Dr + two_ds * (centred - dev)));
            // dV uses P − 1/M: out depends on v through P − mean P
            vstore(prow + c0, centred);
          }
          for (int64_t c = bk; c < bkp; ++c) prow[c] = 0;
        }
        cpu::gemm_atb_acc(ph, kBlockK, dO.data() + h * kBlockQ * Dvp, Dvp,
                          dV + (h * Mp + j0) * Dvp, Dvp, bk4, Dvp, bq);
      }
      for (int64_t h = 0; h < H; ++h) {
        for (int64_t g = 0; g < H; ++g) {
          T s = 0;
          for (int64_t r = 0; r < bq; ++r)
            s += cpu::dot16(dT.data() + h * blk + r * kBlockK,
                            Traw.data() + g * blk + r * kBlockK, bkp);
          dW[h * H + g] += s;
        }
      }
      // dT_g = Σ_h W[h, g] dT'_h, written over the raw logits
      for (int64_t g = 0; g < H; ++g) {
        T* tg = Traw.data() + g * blk;
        for (int64_t r = 0; r < bqp; ++r) {
          T* trow = tg + r * kBlockK;
          std::fill(trow, trow + bkp, T(0));
          for (int64_t h = 0; h < H; ++h)
            cpu::axpy16(trow, p.W[h * H + g], dT.data() + h * blk + r * kBlockK,
                        bkp);
        }
        cpu::gemm_ab_acc(tg, kBlockK, p.Kr + (g * Mp + j0) * Dp, Dp,
                         dQ.data() + g * kBlockQ * Dp, Dp, bqp, Dp, bk);
        cpu::gemm_atb_acc(tg, kBlockK, Qs.data() + g * kBlockQ * Dp, Dp,
                          dK + (g * Mp + j0) * Dp, Dp, bk4, Dp, bq);
      }
    }
    for (int64_t g = 0; g < H; ++g) {
      scalar_t* dqg = dq + b * dqs[0] + g * dqs[1];
      for (int64_t r = 0; r < bq; ++r) {
        scalar_t* dst = dqg + (i0 + r) * dqs[2];
        const T* src = dQ.data() + (g * kBlockQ + r) * Dp;
        for (int64_t d = 0; d < D; ++d)
          dst[d * dqs[3]] = static_cast<scalar_t>(src[d] * p.scale);
      }
    }
  }
}

// mean_j v per (b, head) over its M keys
template <typename scalar_t, typename T>
void value_means(const EmsaParams<scalar_t, T>& p, T* vbar) {
  const int64_t H = p.heads, M = p.M, Dv = p.Dv, Dvp = p.Dvp;
  at::parallel_for(0, p.B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> sum(Dv);
    for (int64_t bh = begin; bh < end; ++bh) {
      const scalar_t* vb = p.v + (bh / H) * p.vs[0] + (bh % H) * p.vs[1];
      std::fill(sum.begin(), sum.end(), T(0));
      for (int64_t j = 0; j < M; ++j)
        for (int64_t e = 0; e < Dv; ++e)
          sum[e] += static_cast<T>(vb[j * p.vs[2] + e]);
      for (int64_t e = 0; e < Dvp; ++e)
        vbar[bh * Dvp + e] = e < Dv ? sum[e] / static_cast<T>(M) : T(0);
    }
  });
}

// float copies of k and v in the layouts the kernels read, per (b, head);
// Vt is centred with vbar when given
template <typename scalar_t, typename T>
void pack_kv(const EmsaParams<scalar_t, T>& p, int64_t b_begin, int64_t b_end,
             T* Kt, T* Kr, T* Vr, T* Vt, const T* vbar) {
  const int64_t H = p.heads, M = p.M, D = p.D, Dv = p.Dv, Mp = p.Mp,
                Dp = p.Dp, Dvp = p.Dvp;
  const int64_t nb = b_end - b_begin;
  at::parallel_for(0, nb * H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t x = begin; x < end; ++x) {
      const int64_t b = b_begin + x / H, h = x % H;
      const scalar_t* kb = p.k + b * p.ks[0] + h * p.ks[1];
      const scalar_t* vb = p.v + b * p.vs[0] + h * p.vs[1];
      if (Kt) cpu::load_transposed(Kt + x * D * Mp, Mp, kb, p.ks[2], M, D);
      if (Vt) {
        T* vt = Vt + x * Dv * Mp;
        cpu::load_transposed(vt, Mp, vb, p.vs[2], M, Dv);
        if (vbar) {
          const T* mean = vbar + (b * H + h) * Dvp;
          for (int64_t e = 0; e < Dv; ++e)
            for (int64_t j = 0; j < M; ++j) vt[e * Mp + j] -= mean[e];
        }
      }
      for (int64_t j = 0; j < M; ++j) {
        if (Kr) cpu::load_row(Kr + (x * Mp + j) * Dp, kb + j * p.ks[2], D);
        if (Vr) cpu::load_row(Vr + (x * Mp + j) * Dvp, vb + j * p.vs[2], Dv);
      }
    }
  });
}

// σ = sqrt(Σ_i dev2_i / (N·M) + eps) per (b, head)
template <typename T>
T sigma_of(const T* dev2, int64_t N, int64_t M, double eps) {
  double s = 0;
  for (int64_t i = 0; i < N; ++i) s += dev2[i];
  return static_cast<T>(
      std::sqrt(s / (static_cast<double>(N) * static_cast<double>(M)) + eps));
}

template <typename scalar_t, typename T>
void fill_params(EmsaParams<scalar_t, T>& p, const Tensor& q, const Tensor& k,
                 const Tensor& v, const Tensor& W, const Tensor& bias,
                 double scale) {
  p.q = q.data_ptr<scalar_t>();
  p.k = k.data_ptr<scalar_t>();
  p.v = v.data_ptr<scalar_t>();
  strides_of<4>(q, p.qs);
  strides_of<4>(k, p.ks);
  strides_of<4>(v, p.vs);
  p.B = q.size(0);
  p.heads = q.size(1);
  p.N = q.size(2);
  p.M = k.size(2);
  p.D = q.size(3);
  p.Dv = v.size(3);
  p.Mp = round_up(p.M, cpu::kColBlock);
  p.Dp = round_up(p.D, cpu::kColBlock);
  p.Dvp = round_up(p.Dv, cpu::kColBlock);
  p.nkb = (p.M + kBlockK - 1) / kBlockK;
  p.scale = static_cast<T>(scale);
  p.W = W.data_ptr<T>();
  p.bias = bias.data_ptr<T>();
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor> emsa_forward_cpu(
    const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
    const Tensor& weight, const Tensor& bias_in, double scale, double eps) {
  const Tensor q = unit_last_stride(q_in), k = unit_last_stride(k_in),
               v = unit_last_stride(v_in);
  const int64_t B = q.size(0), H = q.size(1), N = q.size(2), M = k.size(2),
                Dv = v.size(3);
  const auto stats = stats_dtype(q.scalar_type());
  // token-major memory (B, N, heads, Dv), the layout the backbone reshapes to
  Tensor out = at::empty({B, N, H, Dv}, q.options()).permute({0, 2, 1, 3});
  Tensor lse = at::empty({B, H, N}, q.options().dtype(stats));
  Tensor dev2 = at::empty({B, H, N}, q.options().dtype(stats));
  if (out.numel() == 0) return {out, lse, dev2};
  const Tensor W = weight.to(stats).contiguous();
  const Tensor bias = bias_in.to(stats).contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "emsa_forward_cpu", [&] {
        using T = acc_type_t<scalar_t>;
        EmsaParams<scalar_t, T> p{};
        fill_params(p, q, k, v, W, bias, scale);
        const int64_t Mp = p.Mp, Dvp = p.Dvp, nkb = p.nkb;
        std::vector<T> Kt(B * H * p.D * Mp, T(0)), Vr(B * H * Mp * Dvp, T(0)),
            obuf(B * H * N * Dvp), vblk(B * H * nkb * Dvp),
            vrun(B * H * nkb * Dvp);
        pack_kv<scalar_t, T>(p, 0, B, Kt.data(), nullptr, Vr.data(), nullptr,
                             nullptr);
        // mean of v per key block and over the keys before it
        at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
          std::vector<T> run(Dvp);
          for (int64_t bh = begin; bh < end; ++bh) {
            std::fill(run.begin(), run.end(), T(0));
            for (int64_t kb = 0; kb < nkb; ++kb) {
              const int64_t j0 = kb * kBlockK,
                            bk = std::min(kBlockK, M - j0);
              T* blk_mean = vblk.data() + (bh * nkb + kb) * Dvp;
              T* run_mean = vrun.data() + (bh * nkb + kb) * Dvp;
              std::fill(blk_mean, blk_mean + Dvp, T(0));
              for (int64_t j = j0; j < j0 + bk; ++j)
                for (int64_t e = 0; e < Dvp; ++e)
                  blk_mean[e] += Vr[(bh * Mp + j) * Dvp + e];
              for (int64_t e = 0; e < Dvp; ++e) {
                blk_mean[e] /= static_cast<T>(bk);
                run_mean[e] = run[e];
                run[e] += (blk_mean[e] - run[e]) * static_cast<T>(bk) /
                          static_cast<T>(j0 + bk);
              }
            }
          }
        });
        p.Kt = Kt.data();
        p.Vr = Vr.data();
        p.vblk = vblk.data();
        p.vrun = vrun.data();
        p.obuf = obuf.data();
        p.lse = lse.data_ptr<T>();
        p.dev2 = dev2.data_ptr<T>();
        const int64_t nqb = (N + kBlockQ - 1) / kBlockQ;
        at::parallel_for(0, B * nqb, 1, [&](int64_t begin, int64_t end) {
          emsa_forward_tasks<scalar_t, T>(p, begin, end);
        });
        // out = Σ_j (P_ij − 1/M) v_j / σ
        scalar_t* o = out.data_ptr<scalar_t>();
        const auto ost = out.strides();
        at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
          for (int64_t bh = begin; bh < end; ++bh) {
            const T inv_sig = T(1) / sigma_of(p.dev2 + bh * N, N, M, eps);
            for (int64_t i = 0; i < N; ++i) {
              const T* src = obuf.data() + (bh * N + i) * Dvp;
              scalar_t* dst =
                  o + (bh / H) * ost[0] + (bh % H) * ost[1] + i * ost[2];
              for (int64_t e = 0; e < Dv; ++e)
                dst[e * ost[3]] = static_cast<scalar_t>(src[e] * inv_sig);
            }
          }
        });
      });
  return {out, lse, dev2};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> emsa_backward_cpu(
    const Tensor& grad_out_in, const Tensor& q_in, const Tensor& k_in,
    const Tensor& v_in, const Tensor& weight, const Tensor& bias_in,
    const Tensor& out_in, const Tensor& lse_in, const Tensor& dev2_in,
    double scale, double eps) {
  const Tensor q = unit_last_stride(q_in), k = unit_last_stride(k_in),
               v = unit_last_stride(v_in), out = unit_last_stride(out_in),
               grad_out = unit_last_stride(grad_out_in);
  const Tensor lse = lse_in.contiguous(), dev2 = dev2_in.contiguous();
  const int64_t B = q.size(0), H = q.size(1), N = q.size(2), M = k.size(2),
                Dv = v.size(3);
  const auto stats = stats_dtype(q.scalar_type());
  Tensor dq = at::empty_like(q_in), dk = at::empty_like(k_in),
         dv = at::empty_like(v_in);
  Tensor dW = at::zeros({H, H}, q.options().dtype(stats));
  Tensor db = at::zeros({H}, bias_in.options());
  if (q.numel() == 0 || out.numel() == 0) {
    return {dq.zero_(), dk.zero_(), dv.zero_(), dW.to(weight.scalar_type()),
            db};
  }
  const Tensor W = weight.to(stats).contiguous();
  const Tensor bias = bias_in.to(stats).contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "emsa_backward_cpu", [&] {
        using T = acc_type_t<scalar_t>;
        EmsaParams<scalar_t, T> p{};
        fill_params(p, q, k, v, W, bias, scale);
        p.out = out.data_ptr<scalar_t>();
        p.grad_out = grad_out.data_ptr<scalar_t>();
        strides_of<4>(out, p.os);
        strides_of<4>(grad_out, p.gs);
        p.lse = lse.data_ptr<T>();
        p.dev2 = dev2.data_ptr<T>();
        const int64_t Mp = p.Mp, Dp = p.Dp, Dvp = p.Dvp, D = p.D;
        // per (b, head): σ, mean_j v and dS (the gradient of Σ P²)
        std::vector<T> sigma(B * H), vbar(B * H * Dvp), dsq(B * H);
        value_means<scalar_t, T>(p, vbar.data());
        at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
          std::vector<T> yrow(Dv), orow(Dv);
          for (int64_t bh = begin; bh < end; ++bh) {
            const int64_t b = bh / H, h = bh % H;
            const T sig = sigma_of(p.dev2 + bh * N, N, M, eps);
            sigma[bh] = sig;
            double yo = 0;
            for (int64_t i = 0; i < N; ++i) {
              cpu::load_row(yrow.data(),
                            p.grad_out + b * p.gs[0] + h * p.gs[1] +
                                i * p.gs[2],
                            Dv);
              cpu::load_row(orow.data(),
                            p.out + b * p.os[0] + h * p.os[1] + i * p.os[2],
                            Dv);
              for (int64_t e = 0; e < Dv; ++e) yo += yrow[e] * orow[e];
            }
            dsq[bh] = static_cast<T>(
                -yo / (2.0 * sig * sig * static_cast<double>(N) *
                       static_cast<double>(M)));
          }
        });
        const int nthreads = at::get_num_threads();
        std::vector<std::vector<T>> dK_t(nthreads), dV_t(nthreads),
            dW_t(nthreads, std::vector<T>(H * H, T(0)));
        std::vector<T> Kt(H * D * Mp, T(0)), Kr(H * Mp * Dp, T(0)),
            Vt(H * Dv * Mp, T(0));
        scalar_t* dqp = dq.data_ptr<scalar_t>();
        int64_t dqs[4];
        strides_of<4>(dq, dqs);
        const int64_t nqb = (N + kBlockQ - 1) / kBlockQ;
        for (int64_t b = 0; b < B; ++b) {
          pack_kv<scalar_t, T>(p, b, b + 1, Kt.data(), Kr.data(), nullptr,
                               Vt.data(), vbar.data());
          // the packed buffers hold batch b only (indexed by head)
          EmsaParams<scalar_t, T> pb = p;
          pb.Kt = Kt.data();
          pb.Kr = Kr.data();
          pb.Vt = Vt.data();
          for (int t = 0; t < nthreads; ++t) {
            dK_t[t].assign(H * Mp * Dp, T(0));
            dV_t[t].assign(H * Mp * Dvp, T(0));
          }
          at::parallel_for(0, nqb, 1, [&](int64_t begin, int64_t end) {
            const int tid = at::get_thread_num();
            emsa_backward_tasks<scalar_t, T>(
                pb, b, begin, end, sigma.data(), dsq.data(), dK_t[tid].data(),
                dV_t[tid].data(), dW_t[tid].data(), dqp, dqs);
          });
          // sum the per-thread accumulators
          scalar_t* dkp = dk.data_ptr<scalar_t>();
          scalar_t* dvp = dv.data_ptr<scalar_t>();
          const auto dks = dk.strides(), dvs = dv.strides();
          at::parallel_for(0, H * M, 16, [&](int64_t begin, int64_t end) {
            for (int64_t x = begin; x < end; ++x) {
              const int64_t h = x / M, j = x % M;
              scalar_t* dkr = dkp + b * dks[0] + h * dks[1] + j * dks[2];
              scalar_t* dvr = dvp + b * dvs[0] + h * dvs[1] + j * dvs[2];
              for (int64_t d = 0; d < D; ++d) {
                T s = 0;
                for (int t = 0; t < nthreads; ++t)
                  s += dK_t[t][(h * Mp + j) * Dp + d];
                dkr[d * dks[3]] = static_cast<scalar_t>(s);
              }
              for (int64_t e = 0; e < Dv; ++e) {
                T s = 0;
                for (int t = 0; t < nthreads; ++t)
                  s += dV_t[t][(h * Mp + j) * Dvp + e];
                dvr[e * dvs[3]] = static_cast<scalar_t>(s);
              }
            }
          });
        }
        T* dWp = dW.data_ptr<T>();
        for (int t = 0; t < nthreads; ++t)
          for (int64_t x = 0; x < H * H; ++x) dWp[x] += dW_t[t][x];
      });
  return {dq, dk, dv, dW.to(weight.scalar_type()), db};
}

}  // namespace mmvitmix
