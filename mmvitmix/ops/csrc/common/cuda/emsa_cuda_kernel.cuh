// CUDA kernels of ResT's EMSA core. See emsa_cuda_host.h for the op and the
// identity out_i = Σ_j (P_ij − 1/M) v_j / σ, σ² = Σ_ij (P_ij − 1/M)² / (NM)
// + eps.
//
// Head mixing mixes logits across heads, so a block owns one query tile of
// one batch element for *all* heads: for each key tile it accumulates the
// mixed logits T'_h = b_h + Σ_g W[h, g]·scale·Q_g K_gᵀ of every head in
// shared memory (one head's Q and K staged at a time), then runs per head
// and row an online softmax in centred form (as the CPU kernel): with
// e = exp(T' − m), the mean μ of e, M2 = Σ (e − μ)² and C = Σ (e − μ) v,
// merged per key tile with Chan's formulas and rescaled by α. The forward
// writes C / l = Σ_j (P_ij − 1/M) v_j (float), the logsumexp and
// dev2 = M2 / l² = Σ_j (P_ij − 1/M)² per row; the launcher divides by σ.
// Backward (recomputing P; dO = dY/σ, dS the gradient of Σ P², D = dY·out,
// all prepared by the launcher):
//   dQ kernel (per query tile): dT'_h = P ∘ (dO·(v − v̄)ᵀ − D
//     + 2 dS ((P − 1/M) − dev2)), dT_g = Σ_h W[h, g] dT'_h,
//     dQ_g += scale·dT_g·K_g;
//   dKV kernel (per key tile): dV_h += (P_h − 1/M)ᵀ dO_h,
//     dK_g += scale·dT_gᵀ Q_g, dW[h, g] += Σ dT'_h ∘ T_g (one atomicAdd per
//     block and entry).
// Head dims and head count are runtime values; tiles live in dynamic shared
// memory whose size the launcher checks against the device.
#pragma once

#include "attention_cuda_helper.cuh"

namespace mmvitmix {
namespace cuda {

template <typename scalar_t, typename acc_t>
struct EmsaCudaParams {
  const scalar_t* q;
  const scalar_t* k;
  const scalar_t* v;
  const acc_t* W;     // (H, H)
  const acc_t* bias;  // (H,)
  acc_t* obuf;        // forward: (B, H, N, Dv) Σ_j (P_ij − 1/M) v_j
  acc_t* lse;         // (B, H, N)
  acc_t* dev2;        // (B, H, N) Σ_j (P_ij − 1/M)²
  const acc_t* dO;    // backward: (B, H, N, Dv) = dY / σ
  const acc_t* Dterm; // backward: (B, H, N) = dY·out
  const acc_t* vbar;  // backward: (B, H, Dv) mean_j v
  const acc_t* dsq;   // backward: (B, H)
  scalar_t* dq;       // strided like q
  scalar_t* dk;       // strided like k
  acc_t* dv;          // (B, H, M, Dv) float
  acc_t* dW;          // (H, H), accumulated atomically
  int64_t qs[4], ks[4], vs[4], dqs[4], dks[4];
  int64_t B, H, N, M, D, Dv;
  int64_t BQ, BK, num_tiles;
  acc_t scale;
};

// shared memory (in acc_t elements) of each kernel for tiles BQ × BK
inline int64_t emsa_forward_smem(int64_t H, int64_t D, int64_t Dv, int64_t BQ,
                                 int64_t BK) {
  return H * H + H + H * BQ * (BK + 1) + BQ * (D + 1) + BK * (D + 1) +
         BK * (Dv + 1) + H * BQ * Dv + 5 * H * BQ + Dv + H * Dv;
}

inline int64_t emsa_dq_smem(int64_t H, int64_t D, int64_t Dv, int64_t BQ,
                            int64_t BK) {
  return H * H + H + H * BQ * (BK + 1) + BQ * (BK + 1) + BQ * (D + 1) +
         BK * (D + 1) + BK * (Dv + 1) + BQ * (Dv + 1) + H * BQ * D +
         3 * H * BQ + H;
}

inline int64_t emsa_dkv_smem(int64_t H, int64_t D, int64_t Dv, int64_t BQ,
                             int64_t BK) {
  return 2 * H * H + H + 2 * H * BQ * (BK + 1) + BQ * (BK + 1) +
         BQ * (D + 1) + BK * (D + 1) + BK * (Dv + 1) + BQ * (Dv + 1) +
         H * BK * D + H * BK * Dv + 3 * H * BQ + H;
}

// which kernel a tile choice is for
enum class EmsaKernel { kForward, kBackwardDq, kBackwardDkv };

inline int64_t emsa_smem_elems(EmsaKernel kind, int64_t H, int64_t D,
                               int64_t Dv, int64_t BQ, int64_t BK) {
  switch (kind) {
    case EmsaKernel::kForward:
      return emsa_forward_smem(H, D, Dv, BQ, BK);
    case EmsaKernel::kBackwardDq:
      return emsa_dq_smem(H, D, Dv, BQ, BK);
    default:
      return emsa_dkv_smem(H, D, Dv, BQ, BK);
  }
}

// the largest tiles (BQ queries × BK keys) whose shared memory fits in
// max_bytes; false when not even 1 × 1 fits
inline bool emsa_choose_tiles(EmsaKernel kind, int64_t H, int64_t D,
                              int64_t Dv, int64_t elem_bytes,
                              int64_t max_bytes, int64_t* BQ, int64_t* BK) {
  static const int64_t kCandidates[][2] = {
      {32, 32}, {16, 32}, {16, 16}, {8, 16}, {8, 8}, {4, 8},
      {4, 4},   {2, 4},   {2, 2},   {1, 2},  {1, 1}};
  for (const auto& c : kCandidates) {
    if (emsa_smem_elems(kind, H, D, Dv, c[0], c[1]) * elem_bytes <=
        max_bytes) {
      *BQ = c[0];
      *BK = c[1];
      return true;
    }
  }
  return false;
}

// a bump allocator over the dynamic shared memory
template <typename acc_t>
struct SmemCursor {
  acc_t* ptr;
  MMVITMIX_DEVICE acc_t* take(int64_t n) {
    acc_t* out = ptr;
    ptr += n;
    return out;
  }
};

// dst[r * ld + d] = src[(row0 + r) * st2 + d * st3] for r < rows, d < dim,
// zero for rows past `limit` and for d in [dim, ld - 1)
template <typename scalar_t, typename acc_t>
MMVITMIX_DEVICE void emsa_load(acc_t* dst, int64_t ld, const scalar_t* src,
                               int64_t st2, int64_t st3, int64_t row0,
                               int64_t rows, int64_t limit, int64_t dim) {
  for (int64_t x = threadIdx.x; x < rows * dim; x += blockDim.x) {
    const int64_t r = x / dim, d = x % dim;
    const int64_t i = row0 + r;
    dst[r * ld + d] =
        i < limit ? static_cast<acc_t>(src[i * st2 + d * st3]) : acc_t(0);
  }
}

// Tm[h][r][c] = b_h + Σ_g W[h, g]·scale·Q_g[r]·K_g[c] for the tile, one head
// g staged at a time in Qs / Ks; when TR is given the raw T_g are kept there
template <typename scalar_t, typename acc_t>
MMVITMIX_DEVICE void emsa_mixed_logits(
    const EmsaCudaParams<scalar_t, acc_t>& p, int64_t b, int64_t i0,
    int64_t j0, const acc_t* Ws, const acc_t* bs, acc_t* Tm, acc_t* TR,
    acc_t* Qs, acc_t* Ks) {
  const int64_t H = p.H, BQ = p.BQ, BK = p.BK, D = p.D;
  const int64_t ld_t = BK + 1, tile = BQ * ld_t;
  for (int64_t x = threadIdx.x; x < H * BQ * BK; x += blockDim.x) {
    const int64_t h = x / (BQ * BK), r = (x / BK) % BQ, c = x % BK;
    Tm[h * tile + r * ld_t + c] = bs[h];
  }
  for (int64_t g = 0; g < H; ++g) {
    __syncthreads();
    emsa_load(Qs, D + 1, p.q + b * p.qs[0] + g * p.qs[1], p.qs[2], p.qs[3],
              i0, BQ, p.N, D);
    emsa_load(Ks, D + 1, p.k + b * p.ks[0] + g * p.ks[1], p.ks[2], p.ks[3],
              j0, BK, p.M, D);
    __syncthreads();
    for (int64_t x = threadIdx.x; x < BQ * BK; x += blockDim.x) {
      const int64_t r = x / BK, c = x % BK;
      acc_t t = 0;
      for (int64_t d = 0; d < D; ++d) t += Qs[r * (D + 1) + d] * Ks[c * (D + 1) + d];
      t *= p.scale;
      if (TR != nullptr) TR[g * tile + r * ld_t + c] = t;
      for (int64_t h = 0; h < H; ++h) Tm[h * tile + r * ld_t + c] += Ws[h * H + g] * t;
    }
  }
  __syncthreads();
}

template <typename scalar_t, typename acc_t>
MMVITMIX_GLOBAL void __launch_bounds__(kThreads)
    emsa_forward_kernel(const EmsaCudaParams<scalar_t, acc_t> p) {
  MMVITMIX_EXTERN_SHARED(acc_t, smem);
  const int64_t H = p.H, BQ = p.BQ, BK = p.BK, D = p.D, Dv = p.Dv;
  const int64_t ld_t = BK + 1, tile = BQ * ld_t;
  SmemCursor<acc_t> cur{smem};
  acc_t* Ws = cur.take(H * H);
  acc_t* bs = cur.take(H);
  acc_t* Tm = cur.take(H * tile);
  acc_t* Qs = cur.take(BQ * (D + 1));
  acc_t* Ks = cur.take(BK * (D + 1));
  acc_t* Vs = cur.take(BK * (Dv + 1));
  acc_t* acc = cur.take(H * BQ * Dv);  // C = Σ (e − μ) v per (head, row)
  acc_t* m_s = cur.take(H * BQ);
  acc_t* mu_s = cur.take(H * BQ);
  acc_t* m2_s = cur.take(H * BQ);
  acc_t* alpha_s = cur.take(H * BQ);
  acc_t* coef_s = cur.take(H * BQ);
  acc_t* vb = cur.take(Dv);        // mean of v over this key tile
  acc_t* vrun = cur.take(H * Dv);  // mean of v over the keys before it
  const int64_t b = blockIdx.x / p.num_tiles;
  const int64_t i0 = (blockIdx.x % p.num_tiles) * BQ;
  for (int64_t x = threadIdx.x; x < H * H; x += blockDim.x) Ws[x] = p.W[x];
  for (int64_t x = threadIdx.x; x < H; x += blockDim.x) bs[x] = p.bias[x];
  for (int64_t x = threadIdx.x; x < H * BQ; x += blockDim.x) {
    m_s[x] = neg_inf<acc_t>();
    mu_s[x] = 0;
    m2_s[x] = 0;
  }
  for (int64_t x = threadIdx.x; x < H * BQ * Dv; x += blockDim.x) acc[x] = 0;
  for (int64_t x = threadIdx.x; x < H * Dv; x += blockDim.x) vrun[x] = 0;
  __syncthreads();

  for (int64_t j0 = 0; j0 < p.M; j0 += BK) {
    const int64_t bk = p.M - j0 < BK ? p.M - j0 : BK;
    // weights of Chan's merge of j0 keys seen with this tile's bk keys
    const acc_t frac = static_cast<acc_t>(bk) / static_cast<acc_t>(j0 + bk);
    const acc_t cross = static_cast<acc_t>(j0) * frac;
    emsa_mixed_logits(p, b, i0, j0, Ws, bs, Tm, static_cast<acc_t*>(nullptr),
                      Qs, Ks);
    // centred online softmax of every (head, row)
    for (int64_t x = threadIdx.x; x < H * BQ; x += blockDim.x) {
      acc_t* row = Tm + (x / BQ) * tile + (x % BQ) * ld_t;
      acc_t mx = m_s[x];
      for (int64_t c = 0; c < bk; ++c) mx = row[c] > mx ? row[c] : mx;
      const acc_t alpha = to_acc_exp(m_s[x] - mx);
      acc_t sum = 0;
      for (int64_t c = 0; c < bk; ++c) {
        const acc_t e = to_acc_exp(row[c] - mx);
        row[c] = e;
        sum += e;
      }
      const acc_t mu_b = sum / static_cast<acc_t>(bk);
      acc_t m2_b = 0;
      for (int64_t c = 0; c < BK; ++c) {
        const acc_t e = c < bk ? row[c] - mu_b : acc_t(0);
        row[c] = e;
        m2_b += e * e;
      }
      const acc_t mu_a = mu_s[x] * alpha;
      const acc_t delta = mu_b - mu_a;
      mu_s[x] = mu_a + delta * frac;
      m2_s[x] = m2_s[x] * alpha * alpha + m2_b + delta * delta * cross;
      m_s[x] = mx;
      alpha_s[x] = alpha;
      coef_s[x] = delta * cross;
    }
    for (int64_t h = 0; h < H; ++h) {
      __syncthreads();
      emsa_load(Vs, Dv + 1, p.v + b * p.vs[0] + h * p.vs[1], p.vs[2], p.vs[3],
                j0, BK, p.M, Dv);
      __syncthreads();
      for (int64_t e = threadIdx.x; e < Dv; e += blockDim.x) {
        acc_t s = 0;
        for (int64_t c = 0; c < bk; ++c) s += Vs[c * (Dv + 1) + e];
        vb[e] = s / static_cast<acc_t>(bk);
      }
      __syncthreads();
      // C = α·C + δ·cross·(mean v_tile − mean v_before) + Σ_c (e_c − μ_b) v_c
      for (int64_t x = threadIdx.x; x < BQ * Dv; x += blockDim.x) {
        const int64_t r = x / Dv, e = x % Dv, hr = h * BQ + r;
        const acc_t* prow = Tm + h * tile + r * ld_t;
        acc_t a = acc[h * BQ * Dv + x] * alpha_s[hr] +
                  coef_s[hr] * (vb[e] - vrun[h * Dv + e]);
        for (int64_t c = 0; c < BK; ++c) a += prow[c] * Vs[c * (Dv + 1) + e];
        acc[h * BQ * Dv + x] = a;
      }
      __syncthreads();
      for (int64_t e = threadIdx.x; e < Dv; e += blockDim.x)
        vrun[h * Dv + e] += (vb[e] - vrun[h * Dv + e]) * frac;
    }
    __syncthreads();
  }
  const acc_t num_keys = static_cast<acc_t>(p.M);
  for (int64_t x = threadIdx.x; x < H * BQ * Dv; x += blockDim.x) {
    const int64_t h = x / (BQ * Dv), r = (x / Dv) % BQ, e = x % Dv;
    const int64_t i = i0 + r;
    if (i < p.N)
      p.obuf[((b * H + h) * p.N + i) * Dv + e] =
          acc[x] / (mu_s[h * BQ + r] * num_keys);
  }
  for (int64_t x = threadIdx.x; x < H * BQ; x += blockDim.x) {
    const int64_t h = x / BQ, r = x % BQ, i = i0 + r;
    if (i < p.N) {
      const acc_t l = mu_s[x] * num_keys;
      p.lse[(b * H + h) * p.N + i] = m_s[x] + acc_log(l);
      p.dev2[(b * H + h) * p.N + i] = m2_s[x] / (l * l);
    }
  }
}

// loads of the backward row statistics of one query tile, all heads
template <typename scalar_t, typename acc_t>
MMVITMIX_DEVICE void emsa_row_stats(const EmsaCudaParams<scalar_t, acc_t>& p,
                                    int64_t b, int64_t i0, acc_t* lse_s,
                                    acc_t* Dt_s, acc_t* dev_s) {
  for (int64_t x = threadIdx.x; x < p.H * p.BQ; x += blockDim.x) {
    const int64_t h = x / p.BQ, i = i0 + x % p.BQ;
    const bool valid = i < p.N;
    const int64_t row = (b * p.H + h) * p.N + i;
    // rows past the end get P = exp(−inf) = 0
    lse_s[x] = valid ? p.lse[row] : static_cast<acc_t>(INFINITY);
    Dt_s[x] = valid ? p.Dterm[row] : acc_t(0);
    dev_s[x] = valid ? p.dev2[row] : acc_t(0);
  }
}

// for head h: dOs and centred Vs staged, then Tm[h] = dT'_h (and P_h − 1/M
// in Ps if given)
template <typename scalar_t, typename acc_t>
MMVITMIX_DEVICE void emsa_head_grad(const EmsaCudaParams<scalar_t, acc_t>& p,
                                    int64_t b, int64_t h, int64_t i0,
                                    int64_t j0, acc_t* Tm, acc_t* Ps,
                                    acc_t* dOs, acc_t* Vs, const acc_t* lse_s,
                                    const acc_t* Dt_s, const acc_t* dev_s,
                                    const acc_t* dsq_s) {
  const int64_t BQ = p.BQ, BK = p.BK, Dv = p.Dv, ld_t = BK + 1;
  const acc_t inv_m = acc_t(1) / static_cast<acc_t>(p.M);
  __syncthreads();
  for (int64_t x = threadIdx.x; x < BQ * Dv; x += blockDim.x) {
    const int64_t r = x / Dv, e = x % Dv, i = i0 + r;
    dOs[r * (Dv + 1) + e] =
        i < p.N ? p.dO[((b * p.H + h) * p.N + i) * Dv + e] : acc_t(0);
  }
  emsa_load(Vs, Dv + 1, p.v + b * p.vs[0] + h * p.vs[1], p.vs[2], p.vs[3], j0,
            BK, p.M, Dv);
  __syncthreads();
  for (int64_t x = threadIdx.x; x < BK * Dv; x += blockDim.x) {
    const int64_t c = x / Dv, e = x % Dv;
    if (j0 + c < p.M) Vs[c * (Dv + 1) + e] -= p.vbar[(b * p.H + h) * Dv + e];
  }
  __syncthreads();
  acc_t* th = Tm + h * BQ * ld_t;
  for (int64_t x = threadIdx.x; x < BQ * BK; x += blockDim.x) {
    const int64_t r = x / BK, c = x % BK, hr = h * BQ + r;
    acc_t dp = 0;
    for (int64_t e = 0; e < Dv; ++e) dp += dOs[r * (Dv + 1) + e] * Vs[c * (Dv + 1) + e];
    const acc_t pr = j0 + c < p.M ? to_acc_exp(th[r * ld_t + c] - lse_s[hr])
                                  : acc_t(0);
    // dV uses P − 1/M (out depends on v through P − mean P); rows past the
    // end have dO = 0
    if (Ps != nullptr) Ps[r * ld_t + c] = pr - inv_m;
    th[r * ld_t + c] =
        pr * (dp - Dt_s[hr] + 2 * dsq_s[h] * ((pr - inv_m) - dev_s[hr]));
  }
  __syncthreads();
}

// Tg[r][c] = Σ_h W[h, g]·dT'_h[r][c]
template <typename acc_t>
MMVITMIX_DEVICE void emsa_unmix(int64_t H, int64_t BQ, int64_t BK, int64_t g,
                                const acc_t* Ws, const acc_t* Tm, acc_t* Tg) {
  const int64_t ld_t = BK + 1, tile = BQ * ld_t;
  for (int64_t x = threadIdx.x; x < BQ * BK; x += blockDim.x) {
    const int64_t r = x / BK, c = x % BK;
    acc_t t = 0;
    for (int64_t h = 0; h < H; ++h) t += Ws[h * H + g] * Tm[h * tile + r * ld_t + c];
    Tg[r * ld_t + c] = t;
  }
}

template <typename scalar_t, typename acc_t>
MMVITMIX_GLOBAL void __launch_bounds__(kThreads)
    emsa_backward_dq_kernel(const EmsaCudaParams<scalar_t, acc_t> p) {
  MMVITMIX_EXTERN_SHARED(acc_t, smem);
  const int64_t H = p.H, BQ = p.BQ, BK = p.BK, D = p.D, Dv = p.Dv;
  const int64_t ld_t = BK + 1;
  SmemCursor<acc_t> cur{smem};
  acc_t* Ws = cur.take(H * H);
  acc_t* bs = cur.take(H);
  acc_t* Tm = cur.take(H * BQ * ld_t);
  acc_t* Tg = cur.take(BQ * ld_t);
  acc_t* Qs = cur.take(BQ * (D + 1));
  acc_t* Ks = cur.take(BK * (D + 1));
  acc_t* Vs = cur.take(BK * (Dv + 1));
  acc_t* dOs = cur.take(BQ * (Dv + 1));
  acc_t* dq = cur.take(H * BQ * D);
  acc_t* lse_s = cur.take(H * BQ);
  acc_t* Dt_s = cur.take(H * BQ);
  acc_t* dev_s = cur.take(H * BQ);
  acc_t* dsq_s = cur.take(H);
  const int64_t b = blockIdx.x / p.num_tiles;
  const int64_t i0 = (blockIdx.x % p.num_tiles) * BQ;
  for (int64_t x = threadIdx.x; x < H * H; x += blockDim.x) Ws[x] = p.W[x];
  for (int64_t x = threadIdx.x; x < H; x += blockDim.x) {
    bs[x] = p.bias[x];
    dsq_s[x] = p.dsq[b * H + x];
  }
  for (int64_t x = threadIdx.x; x < H * BQ * D; x += blockDim.x) dq[x] = 0;
  emsa_row_stats(p, b, i0, lse_s, Dt_s, dev_s);
  __syncthreads();

  for (int64_t j0 = 0; j0 < p.M; j0 += BK) {
    emsa_mixed_logits(p, b, i0, j0, Ws, bs, Tm, static_cast<acc_t*>(nullptr),
                      Qs, Ks);
    for (int64_t h = 0; h < H; ++h)
      emsa_head_grad(p, b, h, i0, j0, Tm, static_cast<acc_t*>(nullptr), dOs,
                     Vs, lse_s, Dt_s, dev_s, dsq_s);
    for (int64_t g = 0; g < H; ++g) {
      emsa_unmix(H, BQ, BK, g, Ws, Tm, Tg);
      emsa_load(Ks, D + 1, p.k + b * p.ks[0] + g * p.ks[1], p.ks[2], p.ks[3],
                j0, BK, p.M, D);
      __syncthreads();
      for (int64_t x = threadIdx.x; x < BQ * D; x += blockDim.x) {
        const int64_t r = x / D, d = x % D;
        acc_t a = 0;
        for (int64_t c = 0; c < BK; ++c) a += Tg[r * ld_t + c] * Ks[c * (D + 1) + d];
        dq[g * BQ * D + x] += a;
      }
      __syncthreads();
    }
  }
  for (int64_t x = threadIdx.x; x < H * BQ * D; x += blockDim.x) {
    const int64_t g = x / (BQ * D), r = (x / D) % BQ, d = x % D;
    const int64_t i = i0 + r;
    if (i < p.N)
      p.dq[b * p.dqs[0] + g * p.dqs[1] + i * p.dqs[2] + d * p.dqs[3]] =
          static_cast<scalar_t>(dq[x] * p.scale);
  }
}

template <typename scalar_t, typename acc_t>
MMVITMIX_GLOBAL void __launch_bounds__(kThreads)
    emsa_backward_dkv_kernel(const EmsaCudaParams<scalar_t, acc_t> p) {
  MMVITMIX_EXTERN_SHARED(acc_t, smem);
  const int64_t H = p.H, BQ = p.BQ, BK = p.BK, D = p.D, Dv = p.Dv;
  const int64_t ld_t = BK + 1, tile = BQ * ld_t;
  SmemCursor<acc_t> cur{smem};
  acc_t* Ws = cur.take(H * H);
  acc_t* dW_s = cur.take(H * H);
  acc_t* bs = cur.take(H);
  acc_t* Tm = cur.take(H * tile);
  acc_t* TR = cur.take(H * tile);
  acc_t* Ps = cur.take(tile);
  acc_t* Qs = cur.take(BQ * (D + 1));
  acc_t* Ks = cur.take(BK * (D + 1));
  acc_t* Vs = cur.take(BK * (Dv + 1));
  acc_t* dOs = cur.take(BQ * (Dv + 1));
  acc_t* dk = cur.take(H * BK * D);
  acc_t* dv = cur.take(H * BK * Dv);
  acc_t* lse_s = cur.take(H * BQ);
  acc_t* Dt_s = cur.take(H * BQ);
  acc_t* dev_s = cur.take(H * BQ);
  acc_t* dsq_s = cur.take(H);
  const int64_t b = blockIdx.x / p.num_tiles;
  const int64_t j0 = (blockIdx.x % p.num_tiles) * BK;
  for (int64_t x = threadIdx.x; x < H * H; x += blockDim.x) {
    Ws[x] = p.W[x];
    dW_s[x] = 0;
  }
  for (int64_t x = threadIdx.x; x < H; x += blockDim.x) {
    bs[x] = p.bias[x];
    dsq_s[x] = p.dsq[b * H + x];
  }
  for (int64_t x = threadIdx.x; x < H * BK * D; x += blockDim.x) dk[x] = 0;
  for (int64_t x = threadIdx.x; x < H * BK * Dv; x += blockDim.x) dv[x] = 0;

  for (int64_t i0 = 0; i0 < p.N; i0 += BQ) {
    __syncthreads();
    emsa_row_stats(p, b, i0, lse_s, Dt_s, dev_s);
    emsa_mixed_logits(p, b, i0, j0, Ws, bs, Tm, TR, Qs, Ks);
    for (int64_t h = 0; h < H; ++h) {
      emsa_head_grad(p, b, h, i0, j0, Tm, Ps, dOs, Vs, lse_s, Dt_s, dev_s,
                     dsq_s);
      // dV_h[c][e] += Σ_r (P_h[r][c] − 1/M)·dO_h[r][e]
      for (int64_t x = threadIdx.x; x < BK * Dv; x += blockDim.x) {
        const int64_t c = x / Dv, e = x % Dv;
        acc_t a = 0;
        for (int64_t r = 0; r < BQ; ++r) a += Ps[r * ld_t + c] * dOs[r * (Dv + 1) + e];
        dv[h * BK * Dv + x] += a;
      }
    }
    __syncthreads();
    // dW[h][g] += Σ dT'_h ∘ T_g over the tile
    for (int64_t x = threadIdx.x; x < H * H; x += blockDim.x) {
      const acc_t* th = Tm + (x / H) * tile;
      const acc_t* tg = TR + (x % H) * tile;
      acc_t a = 0;
      for (int64_t r = 0; r < BQ; ++r)
        for (int64_t c = 0; c < BK; ++c) a += th[r * ld_t + c] * tg[r * ld_t + c];
      dW_s[x] += a;
    }
    for (int64_t g = 0; g < H; ++g) {
      __syncthreads();
      emsa_unmix(H, BQ, BK, g, Ws, Tm, Ps);
      emsa_load(Qs, D + 1, p.q + b * p.qs[0] + g * p.qs[1], p.qs[2], p.qs[3],
                i0, BQ, p.N, D);
      __syncthreads();
      // dK_g[c][d] += Σ_r dT_g[r][c]·Q_g[r][d]   (scale applied at the end)
      for (int64_t x = threadIdx.x; x < BK * D; x += blockDim.x) {
        const int64_t c = x / D, d = x % D;
        acc_t a = 0;
        for (int64_t r = 0; r < BQ; ++r) a += Ps[r * ld_t + c] * Qs[r * (D + 1) + d];
        dk[g * BK * D + x] += a;
      }
    }
  }
  __syncthreads();
  for (int64_t x = threadIdx.x; x < H * BK * D; x += blockDim.x) {
    const int64_t g = x / (BK * D), c = (x / D) % BK, d = x % D;
    const int64_t j = j0 + c;
    if (j < p.M)
      p.dk[b * p.dks[0] + g * p.dks[1] + j * p.dks[2] + d * p.dks[3]] =
          static_cast<scalar_t>(dk[x] * p.scale);
  }
  for (int64_t x = threadIdx.x; x < H * BK * Dv; x += blockDim.x) {
    const int64_t h = x / (BK * Dv), c = (x / Dv) % BK, e = x % Dv;
    const int64_t j = j0 + c;
    if (j < p.M) p.dv[((b * H + h) * p.M + j) * Dv + e] = dv[x];
  }
  for (int64_t x = threadIdx.x; x < H * H; x += blockDim.x)
    atomicAdd(p.dW + x, dW_s[x]);
}

}  // namespace cuda
}  // namespace mmvitmix
