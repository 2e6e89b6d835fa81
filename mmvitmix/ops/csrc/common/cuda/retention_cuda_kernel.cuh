// CUDA kernels of retention attention (RMT). See retention_cuda_host.h for
// the op: out_i = Σ_j softmax_j(q_i·k_j + log γ_h · dist(i, j)) v_j over the
// L tokens of each sequence (b, h, s) of 5-D (B, heads, S, L, D) tensors.
//
// Forward: one block per (sequence, tile of BQ queries); keys in tiles of BK
// staged in shared memory (float / double), the bias computed from the token
// indices, online softmax (running max m and sum l per row), O += P·V in
// registers; writes O / l and the logsumexp m + log l.
// Backward (recomputes P = exp(S − lse)), with D_i = dO_i·O_i:
//   dQ kernel, per (sequence, query tile): dS = P ∘ (dO·Vᵀ − D), dQ += dS·K,
//     and d log γ_h += Σ dS ∘ dist (one atomicAdd per block);
//   dKV kernel, per (sequence, key tile): dV += Pᵀ·dO, dK += dSᵀ·Q.
// No atomics on the tensors, no L×L buffer. Head dims up to D (a template
// bucket of 16, 32, 64 or 128) with zero padding.
#pragma once

#include "attention_cuda_helper.cuh"

namespace mmvitmix {
namespace cuda {

template <typename scalar_t, typename acc_t>
struct RetentionCudaParams {
  const scalar_t* q;
  const scalar_t* k;
  const scalar_t* v;
  const scalar_t* grad_out;
  scalar_t* out;
  scalar_t* dq;
  scalar_t* dk;
  scalar_t* dv;
  acc_t* lse;          // (B, heads, S, L) contiguous
  const acc_t* Dvec;   // backward: Σ_e dO·O per row, like lse
  acc_t* ddecay;       // backward: (heads,), accumulated atomically
  const acc_t* log_decay;
  int64_t qs[5], ks[5], vs[5], gs[5], os[5], dqs[5], dks[5], dvs[5];
  int64_t heads, seqs, L, dim_k, dim_v, width;
  int64_t num_tiles;  // tiles per sequence (queries, or keys for dKV)
  bool decay_grad;
};

// tile sizes; every configuration's shared memory stays under 48 KiB
template <typename acc_t, int D>
struct RetentionForwardTile {
  static constexpr bool kSingle = sizeof(acc_t) == 4;
  static constexpr int BQ = D <= 32 ? (kSingle ? 64 : 32) : (kSingle ? 32 : 16);
  static constexpr int BK = D <= 64 ? 32 : (kSingle ? 16 : 8);
  static constexpr int kSmem =
      (BQ * (D + 1) + 2 * BK * (D + 1) + BQ * (BK + 1) + 3 * BQ) *
          sizeof(acc_t) +
      (2 * BQ + 2 * BK) * sizeof(int);
  static_assert(kSmem <= 48 * 1024, "retention forward tile too large");
  static_assert(BQ * D % kThreads == 0, "tile must split over the threads");
};

template <typename acc_t, int D>
struct RetentionBackwardTile {
  static constexpr bool kSingle = sizeof(acc_t) == 4;
  static constexpr int BQ = kSingle ? (D <= 32 ? 64 : D <= 64 ? 32 : 16)
                                    : (D <= 32 ? 16 : D <= 64 ? 16 : 8);
  static constexpr int BK = kSingle ? (D <= 64 ? 32 : 16)
                                    : (D <= 32 ? 32 : D <= 64 ? 16 : 8);
  // bound on both backward kernels (dKV holds two BQ×BK tiles, dQ one and
  // a reduction buffer)
  static constexpr int kSmem =
      (2 * BQ * (D + 1) + 2 * BK * (D + 1) + 2 * BQ * (BK + 1) + 2 * BQ +
       kThreads) *
          sizeof(acc_t) +
      (2 * BQ + 2 * BK) * sizeof(int);
  static_assert(kSmem <= 48 * 1024, "retention backward tile too large");
  static_assert(BQ * D % kThreads == 0 && BK * D % kThreads == 0,
                "tile must split over the threads");
};

template <typename scalar_t, typename acc_t>
MMVITMIX_DEVICE void sequence_of_block(const RetentionCudaParams<scalar_t, acc_t>& p,
                                       int64_t* seq, int64_t* tile,
                                       int64_t* b, int64_t* h, int64_t* s) {
  const int64_t blk = blockIdx.x;
  *seq = blk / p.num_tiles;
  *tile = blk % p.num_tiles;
  *h = *seq % p.heads;
  const int64_t bs = *seq / p.heads;
  *s = bs % p.seqs;
  *b = bs / p.seqs;
}

// offset of the first token of sequence (b, h, s) in a strided tensor
MMVITMIX_DEVICE int64_t seq_offset(const int64_t* st, int64_t b, int64_t h,
                                   int64_t s) {
  return b * st[0] + h * st[1] + s * st[2];
}

// grid coordinates of tokens row0 .. row0 + ROWS - 1 (1-D: y = 0)
template <int ROWS>
MMVITMIX_DEVICE void tile_coords(int* ys, int* xs, int64_t row0,
                                 int64_t width) {
  for (int r = threadIdx.x; r < ROWS; r += blockDim.x) {
    const int i = static_cast<int>(row0 + r);
    const int w = static_cast<int>(width);
    ys[r] = w > 0 ? i / w : 0;
    xs[r] = w > 0 ? i % w : i;
  }
}

template <typename acc_t>
MMVITMIX_DEVICE acc_t manhattan(int y0, int x0, int y1, int x1) {
  const int dy = y0 > y1 ? y0 - y1 : y1 - y0;
  const int dx = x0 > x1 ? x0 - x1 : x1 - x0;
  return static_cast<acc_t>(dy + dx);
}

// dst[r][d] = src row (row0 + r), zero outside [0, L) × [0, dim)
template <typename scalar_t, typename acc_t, int ROWS, int D>
MMVITMIX_DEVICE void load_tile(acc_t (*dst)[D + 1], const scalar_t* src,
                               const int64_t* st, int64_t row0, int64_t L,
                               int64_t dim) {
  for (int x = threadIdx.x; x < ROWS * D; x += blockDim.x) {
    const int r = x / D, d = x % D;
    const int64_t i = row0 + r;
    dst[r][d] = (i < L && d < dim)
                    ? static_cast<acc_t>(src[i * st[3] + d * st[4]])
                    : acc_t(0);
  }
}

template <typename scalar_t, typename acc_t, int D, int BQ, int BK>
MMVITMIX_GLOBAL void __launch_bounds__(kThreads)
    retention_forward_kernel(const RetentionCudaParams<scalar_t, acc_t> p) {
  __shared__ acc_t Qs[BQ][D + 1];
  __shared__ acc_t Ks[BK][D + 1];
  __shared__ acc_t Vs[BK][D + 1];
  __shared__ acc_t Ss[BQ][BK + 1];
  __shared__ acc_t m_s[BQ], l_s[BQ], alpha_s[BQ];
  __shared__ int qy[BQ], qx[BQ], ky[BK], kx[BK];
  constexpr int kPer = BQ * D / kThreads;
  const int tid = threadIdx.x;
  int64_t seq, tile, b, h, s;
  sequence_of_block(p, &seq, &tile, &b, &h, &s);
  const int64_t L = p.L, i0 = tile * BQ;
  const scalar_t* qb = p.q + seq_offset(p.qs, b, h, s);
  const scalar_t* kb = p.k + seq_offset(p.ks, b, h, s);
  const scalar_t* vb = p.v + seq_offset(p.vs, b, h, s);
  const acc_t slope = p.log_decay[h];

  load_tile<scalar_t, acc_t, BQ, D>(Qs, qb, p.qs, i0, L, p.dim_k);
  tile_coords<BQ>(qy, qx, i0, p.width);
  if (tid < BQ) {
    m_s[tid] = neg_inf<acc_t>();
    l_s[tid] = 0;
  }
  acc_t acc[kPer];
#pragma unroll
  for (int t = 0; t < kPer; ++t) acc[t] = 0;

  for (int64_t j0 = 0; j0 < L; j0 += BK) {
    __syncthreads();
    load_tile<scalar_t, acc_t, BK, D>(Ks, kb, p.ks, j0, L, p.dim_k);
    load_tile<scalar_t, acc_t, BK, D>(Vs, vb, p.vs, j0, L, p.dim_v);
    tile_coords<BK>(ky, kx, j0, p.width);
    __syncthreads();
    for (int x = tid; x < BQ * BK; x += kThreads) {
      const int r = x / BK, c = x % BK;
      acc_t dot = 0;
#pragma unroll
      for (int d = 0; d < D; ++d) dot += Qs[r][d] * Ks[c][d];
      Ss[r][c] = j0 + c < L
                     ? dot + slope * manhattan<acc_t>(qy[r], qx[r], ky[c], kx[c])
                     : neg_inf<acc_t>();
    }
    __syncthreads();
    if (tid < BQ) {
      acc_t mx = m_s[tid];
      for (int c = 0; c < BK; ++c) mx = Ss[tid][c] > mx ? Ss[tid][c] : mx;
      const acc_t alpha = to_acc_exp(m_s[tid] - mx);
      acc_t sum = 0;
      for (int c = 0; c < BK; ++c) {
        const acc_t e = to_acc_exp(Ss[tid][c] - mx);
        Ss[tid][c] = e;
        sum += e;
      }
      l_s[tid] = l_s[tid] * alpha + sum;
      m_s[tid] = mx;
      alpha_s[tid] = alpha;
    }
    __syncthreads();
#pragma unroll
    for (int t = 0; t < kPer; ++t) {
      const int x = tid + t * kThreads, r = x / D, e = x % D;
      acc_t a = acc[t] * alpha_s[r];
      for (int c = 0; c < BK; ++c) a += Ss[r][c] * Vs[c][e];
      acc[t] = a;
    }
  }
  scalar_t* ob = p.out + seq_offset(p.os, b, h, s);
#pragma unroll
  for (int t = 0; t < kPer; ++t) {
    const int x = tid + t * kThreads, r = x / D, e = x % D;
    const int64_t i = i0 + r;
    if (i < L && e < p.dim_v)
      ob[i * p.os[3] + e * p.os[4]] = static_cast<scalar_t>(acc[t] / l_s[r]);
  }
  if (tid < BQ && i0 + tid < L) {
    const int64_t row = ((b * p.heads + h) * p.seqs + s) * L + i0 + tid;
    p.lse[row] = m_s[tid] + acc_log(l_s[tid]);
  }
}

// P and dS of one (query, key) pair; returns dS, stores P in *prob
template <typename acc_t, int D>
MMVITMIX_DEVICE acc_t pair_grad(acc_t (*Qs)[D + 1], acc_t (*dOs)[D + 1],
                                acc_t (*Ks)[D + 1], acc_t (*Vs)[D + 1], int r,
                                int c,
                                acc_t bias, bool valid, acc_t lse, acc_t Dr,
                                acc_t* prob) {
  acc_t dot = 0, dp = 0;
#pragma unroll
  for (int d = 0; d < D; ++d) {
    dot += Qs[r][d] * Ks[c][d];
    dp += dOs[r][d] * Vs[c][d];
  }
  const acc_t pr = valid ? to_acc_exp(dot + bias - lse) : acc_t(0);
  *prob = pr;
  return pr * (dp - Dr);
}

// dQ (and d log γ): one block per (sequence, query tile)
template <typename scalar_t, typename acc_t, int D, int BQ, int BK>
MMVITMIX_GLOBAL void __launch_bounds__(kThreads)
    retention_backward_dq_kernel(const RetentionCudaParams<scalar_t, acc_t> p) {
  __shared__ acc_t Qs[BQ][D + 1];
  __shared__ acc_t dOs[BQ][D + 1];
  __shared__ acc_t Ks[BK][D + 1];
  __shared__ acc_t Vs[BK][D + 1];
  __shared__ acc_t Ss[BQ][BK + 1];
  __shared__ acc_t lse_s[BQ], D_s[BQ];
  __shared__ acc_t red_s[kThreads];
  __shared__ int qy[BQ], qx[BQ], ky[BK], kx[BK];
  constexpr int kPer = BQ * D / kThreads;
  const int tid = threadIdx.x;
  int64_t seq, tile, b, h, s;
  sequence_of_block(p, &seq, &tile, &b, &h, &s);
  const int64_t L = p.L, i0 = tile * BQ;
  const int64_t row0 = ((b * p.heads + h) * p.seqs + s) * L;
  const scalar_t* kb = p.k + seq_offset(p.ks, b, h, s);
  const scalar_t* vb = p.v + seq_offset(p.vs, b, h, s);
  const acc_t slope = p.log_decay[h];

  load_tile<scalar_t, acc_t, BQ, D>(Qs, p.q + seq_offset(p.qs, b, h, s), p.qs,
                                    i0, L, p.dim_k);
  load_tile<scalar_t, acc_t, BQ, D>(dOs, p.grad_out + seq_offset(p.gs, b, h, s),
                                    p.gs, i0, L, p.dim_v);
  tile_coords<BQ>(qy, qx, i0, p.width);
  if (tid < BQ) {
    const bool valid = i0 + tid < L;
    // rows past the end get P = exp(−inf) = 0
    lse_s[tid] = valid ? p.lse[row0 + i0 + tid] : static_cast<acc_t>(INFINITY);
    D_s[tid] = valid ? p.Dvec[row0 + i0 + tid] : acc_t(0);
  }
  acc_t acc[kPer];
#pragma unroll
  for (int t = 0; t < kPer; ++t) acc[t] = 0;
  acc_t decay_part = 0;

  for (int64_t j0 = 0; j0 < L; j0 += BK) {
    __syncthreads();
    load_tile<scalar_t, acc_t, BK, D>(Ks, kb, p.ks, j0, L, p.dim_k);
    load_tile<scalar_t, acc_t, BK, D>(Vs, vb, p.vs, j0, L, p.dim_v);
    tile_coords<BK>(ky, kx, j0, p.width);
    __syncthreads();
    for (int x = tid; x < BQ * BK; x += kThreads) {
      const int r = x / BK, c = x % BK;
      const acc_t dist = manhattan<acc_t>(qy[r], qx[r], ky[c], kx[c]);
      acc_t prob;
      const acc_t ds = pair_grad<acc_t, D>(Qs, dOs, Ks, Vs, r, c, slope * dist,
                                           j0 + c < L, lse_s[r], D_s[r], &prob);
      Ss[r][c] = ds;
      decay_part += ds * dist;
    }
    __syncthreads();
#pragma unroll
    for (int t = 0; t < kPer; ++t) {
      const int x = tid + t * kThreads, r = x / D, e = x % D;
      acc_t a = acc[t];
      for (int c = 0; c < BK; ++c) a += Ss[r][c] * Ks[c][e];
      acc[t] = a;
    }
  }
  scalar_t* dqb = p.dq + seq_offset(p.dqs, b, h, s);
#pragma unroll
  for (int t = 0; t < kPer; ++t) {
    const int x = tid + t * kThreads, r = x / D, e = x % D;
    const int64_t i = i0 + r;
    if (i < L && e < p.dim_k)
      dqb[i * p.dqs[3] + e * p.dqs[4]] = static_cast<scalar_t>(acc[t]);
  }
  if (p.decay_grad) {
    red_s[tid] = decay_part;
    __syncthreads();
    for (int width = kThreads / 2; width > 0; width /= 2) {
      if (tid < width) red_s[tid] += red_s[tid + width];
      __syncthreads();
    }
    if (tid == 0) atomicAdd(p.ddecay + h, red_s[0]);
  }
}

// dK and dV: one block per (sequence, key tile), looping over query tiles
template <typename scalar_t, typename acc_t, int D, int BQ, int BK>
MMVITMIX_GLOBAL void __launch_bounds__(kThreads)
    retention_backward_dkv_kernel(const RetentionCudaParams<scalar_t, acc_t> p) {
  __shared__ acc_t Ks[BK][D + 1];
  __shared__ acc_t Vs[BK][D + 1];
  __shared__ acc_t Qs[BQ][D + 1];
  __shared__ acc_t dOs[BQ][D + 1];
  __shared__ acc_t Ps[BQ][BK + 1];
  __shared__ acc_t dSs[BQ][BK + 1];
  __shared__ acc_t lse_s[BQ], D_s[BQ];
  __shared__ int qy[BQ], qx[BQ], ky[BK], kx[BK];
  constexpr int kPer = BK * D / kThreads;
  const int tid = threadIdx.x;
  int64_t seq, tile, b, h, s;
  sequence_of_block(p, &seq, &tile, &b, &h, &s);
  const int64_t L = p.L, j0 = tile * BK;
  const int64_t row0 = ((b * p.heads + h) * p.seqs + s) * L;
  const scalar_t* qb = p.q + seq_offset(p.qs, b, h, s);
  const scalar_t* gb = p.grad_out + seq_offset(p.gs, b, h, s);
  const acc_t slope = p.log_decay[h];

  load_tile<scalar_t, acc_t, BK, D>(Ks, p.k + seq_offset(p.ks, b, h, s), p.ks,
                                    j0, L, p.dim_k);
  load_tile<scalar_t, acc_t, BK, D>(Vs, p.v + seq_offset(p.vs, b, h, s), p.vs,
                                    j0, L, p.dim_v);
  tile_coords<BK>(ky, kx, j0, p.width);
  acc_t acc_k[kPer], acc_v[kPer];
#pragma unroll
  for (int t = 0; t < kPer; ++t) acc_k[t] = acc_v[t] = 0;

  for (int64_t i0 = 0; i0 < L; i0 += BQ) {
    __syncthreads();
    load_tile<scalar_t, acc_t, BQ, D>(Qs, qb, p.qs, i0, L, p.dim_k);
    load_tile<scalar_t, acc_t, BQ, D>(dOs, gb, p.gs, i0, L, p.dim_v);
    tile_coords<BQ>(qy, qx, i0, p.width);
    if (tid < BQ) {
      const bool valid = i0 + tid < L;
      lse_s[tid] =
          valid ? p.lse[row0 + i0 + tid] : static_cast<acc_t>(INFINITY);
      D_s[tid] = valid ? p.Dvec[row0 + i0 + tid] : acc_t(0);
    }
    __syncthreads();
    for (int x = tid; x < BQ * BK; x += kThreads) {
      const int r = x / BK, c = x % BK;
      const acc_t dist = manhattan<acc_t>(qy[r], qx[r], ky[c], kx[c]);
      acc_t prob;
      dSs[r][c] = pair_grad<acc_t, D>(Qs, dOs, Ks, Vs, r, c, slope * dist,
                                      j0 + c < L, lse_s[r], D_s[r], &prob);
      Ps[r][c] = prob;
    }
    __syncthreads();
#pragma unroll
    for (int t = 0; t < kPer; ++t) {
      const int x = tid + t * kThreads, c = x / D, e = x % D;
      acc_t ak = acc_k[t], av = acc_v[t];
      for (int r = 0; r < BQ; ++r) {
        ak += dSs[r][c] * Qs[r][e];
        av += Ps[r][c] * dOs[r][e];
      }
      acc_k[t] = ak;
      acc_v[t] = av;
    }
  }
  scalar_t* dkb = p.dk + seq_offset(p.dks, b, h, s);
  scalar_t* dvb = p.dv + seq_offset(p.dvs, b, h, s);
#pragma unroll
  for (int t = 0; t < kPer; ++t) {
    const int x = tid + t * kThreads, c = x / D, e = x % D;
    const int64_t j = j0 + c;
    if (j < L && e < p.dim_k)
      dkb[j * p.dks[3] + e * p.dks[4]] = static_cast<scalar_t>(acc_k[t]);
    if (j < L && e < p.dim_v)
      dvb[j * p.dvs[3] + e * p.dvs[4]] = static_cast<scalar_t>(acc_v[t]);
  }
}

}  // namespace cuda
}  // namespace mmvitmix
