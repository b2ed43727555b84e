// RubiksShift CPU kernels for channels-last features: x (N, T, C, H, W) stored as N, T, H, W, C
// (the 5-D view of a torch.channels_last (N*T, C, H, W) tensor); results in the same layout.
//
// Every channel has its own shift, so in this layout neighbouring elements (channels) read from
// different places and a per-channel gather would not vectorise. The kernels turn the op into a
// stencil shared by all channels instead: per axis, one window of K offsets lo .. lo + K - 1
// (relative to o * stride) covers the two interpolation slots of every channel (K = 3 for
// shifts in [-1, 1)), and each channel weighs the window with its own weights, zero outside
// its slots. The positions read then no longer depend on the channel, and every inner loop runs
// over contiguous channels. Per output element that costs K_T * K_H + K_W multiply-adds for the
// forward and the input gradient (rows combined first, then the W taps) and K_T * K_H * K_W for
// the shift gradient (a correlation per window offset, weighted once at the end), against 8 in
// the channels-first kernels, but all vectorised.
//
// Channels whose slots do not fit a window of kMaxSlots offsets ("outliers": a few channels with
// shifts far from the others) are zero in the stencil and computed per element afterwards, so
// any shifts are exact; only their speed depends on how spread out they are.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <limits>
#include <map>
#include <utility>
#include <vector>

#include "rubiks_shift_cpu.h"

namespace actionlab {
namespace rubiks {
namespace {

constexpr int kMaxSlots = 4;  // window offsets per axis

struct Window {
  int64_t lo = 0;
  int K = 1;
};

// Offsets [first, last] one axis of a channel reads: slots with a value (or, for the shift
// gradient, a derivative) weight.
template <typename acc_t>
std::pair<int64_t, int64_t> needed_offsets(const AxisTaps<acc_t>& t, bool derivative) {
  int64_t first = std::numeric_limits<int64_t>::max(), last = std::numeric_limits<int64_t>::min();
  for (int k = 0; k < 3; ++k) {
    if (t.v[k] == acc_t(0) && !(derivative && t.d[k] != acc_t(0))) continue;
    first = std::min(first, t.base + k);
    last = std::max(last, t.base + k);
  }
  if (first > last) first = last = t.base + 1;  // all-zero taps cannot happen; keep it defined
  return {first, last};
}

// The window (at most kMaxSlots wide) that holds the most channels; the others are flagged.
Window choose_window(const std::vector<std::pair<int64_t, int64_t>>& need,
                     std::vector<char>& outlier) {
  int64_t lo = std::numeric_limits<int64_t>::max(), hi = std::numeric_limits<int64_t>::min();
  for (const auto& r : need) {
    lo = std::min(lo, r.first);
    hi = std::max(hi, r.second);
  }
  if (hi - lo + 1 > kMaxSlots) {  // rare: count channels per distinct range, try each start
    std::map<std::pair<int64_t, int64_t>, int64_t> counts;
    for (const auto& r : need) ++counts[r];
    int64_t best = -1, best_lo = lo;
    for (const auto& [cand, unused] : counts) {
      int64_t n = 0;
      for (const auto& [r, count] : counts)
        if (r.first >= cand.first && r.second < cand.first + kMaxSlots) n += count;
      if (n > best) best = n, best_lo = cand.first;
    }
    lo = std::numeric_limits<int64_t>::max(), hi = std::numeric_limits<int64_t>::min();
    for (size_t c = 0; c < need.size(); ++c) {
      if (need[c].first >= best_lo && need[c].second < best_lo + kMaxSlots) {
        lo = std::min(lo, need[c].first);
        hi = std::max(hi, need[c].second);
      } else {
        outlier[c] = 1;
      }
    }
  }
  return {lo, static_cast<int>(hi - lo + 1)};
}

// Window and per-channel weights [K][C] of the three axes.
template <typename acc_t>
struct Stencil {
  std::vector<ChannelTaps<acc_t>> taps;
  Window win[3];
  std::vector<acc_t> v[3], d[3];
  std::vector<int64_t> outliers;
};

template <typename acc_t>
Stencil<acc_t> make_stencil(const at::Tensor& shift, bool quantize, bool derivative) {
  Stencil<acc_t> s;
  s.taps = channel_taps<acc_t>(shift, quantize);
  const int64_t C = static_cast<int64_t>(s.taps.size());
  std::vector<char> outlier(C, 0);
  auto axis = [](const ChannelTaps<acc_t>& t, int a) -> const AxisTaps<acc_t>& {
    return a == 0 ? t.t : (a == 1 ? t.h : t.w);
  };
  for (int a = 0; a < 3; ++a) {
    std::vector<std::pair<int64_t, int64_t>> need(C);
    for (int64_t c = 0; c < C; ++c) need[c] = needed_offsets(axis(s.taps[c], a), derivative);
    s.win[a] = choose_window(need, outlier);
  }
  for (int a = 0; a < 3; ++a) {
    const Window w = s.win[a];
    s.v[a].assign(static_cast<size_t>(w.K) * C, acc_t(0));
    if (derivative) s.d[a].assign(static_cast<size_t>(w.K) * C, acc_t(0));
    for (int64_t c = 0; c < C; ++c) {
      if (outlier[c]) continue;
      const AxisTaps<acc_t>& t = axis(s.taps[c], a);
      for (int k = 0; k < 3; ++k) {
        const int64_t slot = t.base + k - w.lo;
        if (slot < 0 || slot >= w.K) continue;  // only zero weights fall outside
        s.v[a][slot * C + c] = t.v[k];
        if (derivative) s.d[a][slot * C + c] = t.d[k];
      }
    }
  }
  for (int64_t c = 0; c < C; ++c)
    if (outlier[c]) s.outliers.push_back(c);
  return s;
}

// Products of the T and H weights, [K_T][K_H][C].
template <typename acc_t>
std::vector<acc_t> row_weights(const Stencil<acc_t>& s, int64_t C) {
  const int KT = s.win[0].K, KH = s.win[1].K;
  std::vector<acc_t> w(static_cast<size_t>(KT) * KH * C);
  for (int i = 0; i < KT; ++i)
    for (int j = 0; j < KH; ++j)
      for (int64_t c = 0; c < C; ++c)
        w[(i * KH + j) * C + c] = s.v[0][i * C + c] * s.v[1][j * C + c];
  return w;
}

// Elementwise transform of every value read by the forward (identity, or fused inference).
template <typename acc_t, bool kAffine, bool kRelu>
struct Pre {
  const acc_t* a;
  const acc_t* b;
  inline acc_t operator()(acc_t x, int64_t c) const {
    if (kAffine) x = a[c] * x + b[c];
    if (kRelu) x = x > acc_t(0) ? x : acc_t(0);
    return x;
  }
};

// out[p * C + c] = sum over rows r of w[r][c] * pre(src[r][p * C + c]) for `len` pixels p, in
// passes of up to 3 rows (fewer passes over `out`); zeros when there are no rows.
template <typename scalar_t, typename acc_t, typename P>
void combine_rows(acc_t* __restrict__ out, const scalar_t* const* src, const acc_t* const* w,
                  int nr, int64_t len, int64_t C, const P& pre) {
  if (nr == 0) {
    std::fill(out, out + len * C, acc_t(0));
    return;
  }
  for (int r0 = 0; r0 < nr; r0 += 3) {
    const int m = std::min(3, nr - r0);
    const bool first = r0 == 0;
    const scalar_t* a = src[r0];
    const scalar_t* b = m > 1 ? src[r0 + 1] : a;
    const scalar_t* e = m > 2 ? src[r0 + 2] : a;
    const acc_t* wa = w[r0];
    const acc_t* wb = m > 1 ? w[r0 + 1] : wa;
    const acc_t* we = m > 2 ? w[r0 + 2] : wa;
    for (int64_t p = 0; p < len; ++p) {
      acc_t* __restrict__ o = out + p * C;
      const scalar_t* pa = a + p * C;
      const scalar_t* pb = b + p * C;
      const scalar_t* pe = e + p * C;
      if (m == 3) {
        if (first) {
#pragma omp simd
          for (int64_t c = 0; c < C; ++c)
            o[c] = wa[c] * pre(static_cast<acc_t>(pa[c]), c) +
                   wb[c] * pre(static_cast<acc_t>(pb[c]), c) +
                   we[c] * pre(static_cast<acc_t>(pe[c]), c);
        } else {
#pragma omp simd
          for (int64_t c = 0; c < C; ++c)
            o[c] += wa[c] * pre(static_cast<acc_t>(pa[c]), c) +
                    wb[c] * pre(static_cast<acc_t>(pb[c]), c) +
                    we[c] * pre(static_cast<acc_t>(pe[c]), c);
        }
      } else if (m == 2) {
        if (first) {
#pragma omp simd
          for (int64_t c = 0; c < C; ++c)
            o[c] = wa[c] * pre(static_cast<acc_t>(pa[c]), c) +
                   wb[c] * pre(static_cast<acc_t>(pb[c]), c);
        } else {
#pragma omp simd
          for (int64_t c = 0; c < C; ++c)
            o[c] += wa[c] * pre(static_cast<acc_t>(pa[c]), c) +
                    wb[c] * pre(static_cast<acc_t>(pb[c]), c);
        }
      } else if (first) {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) o[c] = wa[c] * pre(static_cast<acc_t>(pa[c]), c);
      } else {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) o[c] += wa[c] * pre(static_cast<acc_t>(pa[c]), c);
      }
    }
  }
}

// The rows one task reads, up to K_T * K_H: window offset (i, j) maps to frame t_of(i) and row
// h_of(j) of the tensor at `base` (frames x rows x `row_len` elements; -1: outside, skipped);
// each with its combined (T, H) weights. Returns how many.
template <typename scalar_t, typename acc_t, typename TOf, typename HOf>
int window_rows(const scalar_t* base, const acc_t* wth, int KT, int KH, int64_t C, int64_t rows,
                int64_t row_len, TOf t_of, HOf h_of, const scalar_t** src, const acc_t** w) {
  int nr = 0;
  for (int i = 0; i < KT; ++i) {
    const int64_t t = t_of(i);
    if (t < 0) continue;
    for (int j = 0; j < KH; ++j) {
      const int64_t h = h_of(j);
      if (h < 0) continue;
      src[nr] = base + (t * rows + h) * row_len;
      w[nr++] = wth + (i * KH + j) * C;
    }
  }
  return nr;
}

// Element (n, t, h, w, c) of a channels-last tensor.
inline int64_t cl_index(const Geometry& g, int64_t n, int64_t t, int64_t h, int64_t w, int64_t c,
                        int64_t T, int64_t H, int64_t W) {
  return (((n * T + t) * H + h) * W + w) * g.C + c;
}

// ---- outlier channels, one element at a time ---------------------------------------------------

template <typename scalar_t, typename acc_t, typename P>
acc_t forward_point(const scalar_t* x, const Geometry& g, const ChannelTaps<acc_t>& tp,
                    int64_t n, int64_t to, int64_t ho, int64_t wo, int64_t c, const P& pre) {
  acc_t acc = 0;
  for (int i = 0; i < 3; ++i) {
    const int64_t ti = to * g.sT + tp.t.base + i;
    if (tp.t.v[i] == acc_t(0) || ti < 0 || ti >= g.T) continue;
    for (int j = 0; j < 3; ++j) {
      const int64_t hi = ho * g.sH + tp.h.base + j;
      if (tp.h.v[j] == acc_t(0) || hi < 0 || hi >= g.H) continue;
      for (int k = 0; k < 3; ++k) {
        const int64_t wi = wo * g.sW + tp.w.base + k;
        if (tp.w.v[k] == acc_t(0) || wi < 0 || wi >= g.W) continue;
        const acc_t val = pre(static_cast<acc_t>(x[cl_index(g, n, ti, hi, wi, c, g.T, g.H, g.W)]), c);
        acc += tp.t.v[i] * tp.h.v[j] * tp.w.v[k] * val;
      }
    }
  }
  return acc;
}

// Output position along an axis that reads input position `in` through slot `k`, or -1.
inline int64_t source_of(int64_t in, int64_t base, int k, int64_t stride, int64_t out_len) {
  const int64_t num = in - base - k;
  if (num < 0 || num % stride != 0 || num / stride >= out_len) return -1;
  return num / stride;
}

template <typename scalar_t, typename acc_t>
acc_t grad_input_point(const scalar_t* grad, const Geometry& g, const ChannelTaps<acc_t>& tp,
                       int64_t n, int64_t ti, int64_t hi, int64_t wi, int64_t c) {
  acc_t acc = 0;
  for (int i = 0; i < 3; ++i) {
    const int64_t to = source_of(ti, tp.t.base, i, g.sT, g.To);
    if (tp.t.v[i] == acc_t(0) || to < 0) continue;
    for (int j = 0; j < 3; ++j) {
      const int64_t ho = source_of(hi, tp.h.base, j, g.sH, g.Ho);
      if (tp.h.v[j] == acc_t(0) || ho < 0) continue;
      for (int k = 0; k < 3; ++k) {
        const int64_t wo = source_of(wi, tp.w.base, k, g.sW, g.Wo);
        if (tp.w.v[k] == acc_t(0) || wo < 0) continue;
        acc += tp.t.v[i] * tp.h.v[j] * tp.w.v[k] *
               static_cast<acc_t>(grad[cl_index(g, n, to, ho, wo, c, g.To, g.Ho, g.Wo)]);
      }
    }
  }
  return acc;
}

// (d out / d s_T, d s_H, d s_W) at one output element, times the upstream gradient `go`.
template <typename scalar_t, typename acc_t>
void grad_shift_point(const scalar_t* x, const Geometry& g, const ChannelTaps<acc_t>& tp,
                      int64_t n, int64_t to, int64_t ho, int64_t wo, int64_t c, acc_t go,
                      double* sums) {
  acc_t dt = 0, dh = 0, dw = 0;
  for (int i = 0; i < 3; ++i) {
    const int64_t ti = to * g.sT + tp.t.base + i;
    if (ti < 0 || ti >= g.T) continue;
    for (int j = 0; j < 3; ++j) {
      const int64_t hi = ho * g.sH + tp.h.base + j;
      if (hi < 0 || hi >= g.H) continue;
      for (int k = 0; k < 3; ++k) {
        const int64_t wi = wo * g.sW + tp.w.base + k;
        if (wi < 0 || wi >= g.W) continue;
        const acc_t xv = static_cast<acc_t>(x[cl_index(g, n, ti, hi, wi, c, g.T, g.H, g.W)]);
        dt += tp.t.d[i] * tp.h.v[j] * tp.w.v[k] * xv;
        dh += tp.t.v[i] * tp.h.d[j] * tp.w.v[k] * xv;
        dw += tp.t.v[i] * tp.h.v[j] * tp.w.d[k] * xv;
      }
    }
  }
  sums[0] += static_cast<double>(go * dt);
  sums[1] += static_cast<double>(go * dh);
  sums[2] += static_cast<double>(go * dw);
}

// ---- forward --------------------------------------------------------------------------------

// Columns of zeros each side of a row buffer so that every read of the W taps is in the buffer.
struct Pad {
  int64_t left, right;
};

inline Pad column_pad(int64_t lo, int K, int64_t out_len, int64_t stride, int64_t in_len) {
  const int64_t first = lo, last = (out_len - 1) * stride + lo + K - 1;
  return {std::max<int64_t>(0, -first), std::max<int64_t>(0, last - (in_len - 1))};
}

// One task per output row (n, to, ho): the (up to K_T * K_H) input rows the window reads are
// combined, with the channels' T and H weights, into a zero-padded row buffer; the W taps then
// read it branch-free.
template <typename scalar_t, typename P>
void forward_impl(const at::Tensor& x, at::Tensor& out, const Stencil<at::opmath_type<scalar_t>>& s,
                  const Geometry& g, const P& pre) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t C = g.C;
  const Window wt = s.win[0], wh = s.win[1], ww = s.win[2];
  const std::vector<acc_t> wth = row_weights(s, C);
  const Pad pad = column_pad(ww.lo, ww.K, g.Wo, g.sW, g.W);
  const int64_t buf_len = (g.W + pad.left + pad.right) * C;
  const scalar_t* xp = x.data_ptr<scalar_t>();
  scalar_t* op = out.data_ptr<scalar_t>();
  const acc_t* vw = s.v[2].data();
  at::parallel_for(0, g.N * g.To * g.Ho, grain_for(g.W * C), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buf(buf_len, acc_t(0));
    const scalar_t* src[kMaxSlots * kMaxSlots];
    const acc_t* w[kMaxSlots * kMaxSlots];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t ho = task % g.Ho, nt = task / g.Ho, to = nt % g.To, n = nt / g.To;
      auto in_range = [](int64_t v, int64_t len) { return v >= 0 && v < len ? v : int64_t(-1); };
      const int nr = window_rows(
          xp + n * g.T * g.H * g.W * C, wth.data(), wt.K, wh.K, C, g.H, g.W * C,
          [&](int i) { return in_range(to * g.sT + wt.lo + i, g.T); },
          [&](int j) { return in_range(ho * g.sH + wh.lo + j, g.H); }, src, w);
      combine_rows(buf.data() + pad.left * C, src, w, nr, g.W, C, pre);
      scalar_t* dst = op + task * g.Wo * C;
      for (int64_t wo = 0; wo < g.Wo; ++wo) {
        const acc_t* b = buf.data() + (wo * g.sW + ww.lo + pad.left) * C;
        scalar_t* o = dst + wo * C;
        if (ww.K == 2) {
#pragma omp simd
          for (int64_t c = 0; c < C; ++c)
            o[c] = static_cast<scalar_t>(vw[c] * b[c] + vw[C + c] * b[C + c]);
        } else if (ww.K == 3) {
#pragma omp simd
          for (int64_t c = 0; c < C; ++c)
            o[c] = static_cast<scalar_t>(vw[c] * b[c] + vw[C + c] * b[C + c] +
                                         vw[2 * C + c] * b[2 * C + c]);
        } else {
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) {
            acc_t acc = 0;
            for (int k = 0; k < ww.K; ++k) acc += vw[k * C + c] * b[k * C + c];
            o[c] = static_cast<scalar_t>(acc);
          }
        }
      }
      for (const int64_t c : s.outliers)
        for (int64_t wo = 0; wo < g.Wo; ++wo)
          dst[wo * C + c] = static_cast<scalar_t>(forward_point(xp, g, s.taps[c], n, to, ho, wo, c, pre));
    }
  });
}

// ---- input gradient --------------------------------------------------------------------------

// One task per input row (n, ti, hi): the upstream rows that read it are combined with the T and
// H weights (the adjoint of the row combination), then the W taps are applied as a gather from a
// zero-padded buffer, only the taps whose output column exists at this stride.
template <typename scalar_t>
void grad_input_impl(const at::Tensor& grad, at::Tensor& gx,
                     const Stencil<at::opmath_type<scalar_t>>& s, const Geometry& g) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t C = g.C;
  const Window wt = s.win[0], wh = s.win[1], ww = s.win[2];
  const std::vector<acc_t> wth = row_weights(s, C);
  // Buffer columns are output columns wo in [lo_wo, hi_wo] for wi = wo * sW + lo + k.
  const int64_t lo_wo = floor_div(0 - ww.lo - (ww.K - 1), g.sW);
  const int64_t hi_wo = floor_div(g.W - 1 - ww.lo, g.sW);
  const int64_t left = std::max<int64_t>(0, -lo_wo);
  const int64_t buf_len = (left + std::max<int64_t>(hi_wo, g.Wo - 1) + 1) * C;
  const scalar_t* gp = grad.data_ptr<scalar_t>();
  scalar_t* xp = gx.data_ptr<scalar_t>();
  const acc_t* vw = s.v[2].data();
  const Pre<acc_t, false, false> identity{nullptr, nullptr};
  at::parallel_for(0, g.N * g.T * g.H, grain_for(g.W * C), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buf(buf_len, acc_t(0));
    const scalar_t* src[kMaxSlots * kMaxSlots];
    const acc_t* w[kMaxSlots * kMaxSlots];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t hi = task % g.H, nt = task / g.H, ti = nt % g.T, n = nt / g.T;
      // The upstream rows that read this input row (the adjoint of the forward's window).
      const int nr = window_rows(
          gp + n * g.To * g.Ho * g.Wo * C, wth.data(), wt.K, wh.K, C, g.Ho, g.Wo * C,
          [&](int i) { return source_of(ti, wt.lo, i, g.sT, g.To); },
          [&](int j) { return source_of(hi, wh.lo, j, g.sH, g.Ho); }, src, w);
      scalar_t* dst = xp + task * g.W * C;
      if (nr == 0) {
        std::fill(dst, dst + g.W * C, static_cast<scalar_t>(0));
      } else {
        combine_rows(buf.data() + left * C, src, w, nr, g.Wo, C, identity);
        for (int64_t wi = 0; wi < g.W; ++wi) {
          const acc_t* taps[kMaxSlots];
          const acc_t* cols[kMaxSlots];
          int nk = 0;
          for (int k = 0; k < ww.K; ++k) {
            const int64_t num = wi - ww.lo - k;
            if (g.sW != 1 && (num % g.sW) != 0) continue;
            taps[nk] = vw + k * C;
            cols[nk++] = buf.data() + (num / g.sW + left) * C;
          }
          scalar_t* o = dst + wi * C;
          if (nk == 0) {
            std::fill(o, o + C, static_cast<scalar_t>(0));
          } else if (nk == 1) {
            const acc_t *a = taps[0], *ca = cols[0];
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) o[c] = static_cast<scalar_t>(a[c] * ca[c]);
          } else if (nk == 2) {
            const acc_t *a = taps[0], *ca = cols[0], *b = taps[1], *cb = cols[1];
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) o[c] = static_cast<scalar_t>(a[c] * ca[c] + b[c] * cb[c]);
          } else {
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) {
              acc_t acc = 0;
              for (int k = 0; k < nk; ++k) acc += taps[k][c] * cols[k][c];
              o[c] = static_cast<scalar_t>(acc);
            }
          }
        }
      }
      for (const int64_t c : s.outliers)
        for (int64_t wi = 0; wi < g.W; ++wi)
          dst[wi * C + c] = static_cast<scalar_t>(grad_input_point(gp, g, s.taps[c], n, ti, hi, wi, c));
    }
  });
}

// ---- shift gradient --------------------------------------------------------------------------

// Output columns where W tap k reads inside the row.
struct ColumnRanges {
  int64_t lo[kMaxSlots], hi[kMaxSlots];
};

// q[k][c] += sum over output columns wo of g[wo, c] * x[wo * sW + lo + k, c] for the K taps of
// one (upstream row, input row) pair. Blocks of kBlock channels keep the K sums in registers
// over the columns where every tap is valid (one load of g per K multiply-adds); the few border
// columns where some tap reads outside the row are added tap by tap.
constexpr int64_t kBlock = 16;
// Output columns summed in acc_t before the shift gradient's partial sums go into double: a
// 112-wide row, or several narrow ones (the precision of one wide row's sum).
constexpr int64_t kFlushColumns = 112;

template <int K, typename scalar_t, typename acc_t>
void correlate_row(acc_t* __restrict__ q, const scalar_t* __restrict__ grow,
                   const scalar_t* __restrict__ xrow, const ColumnRanges& cols, const Geometry& g,
                   int64_t lo, int64_t C) {
  int64_t LO = cols.lo[0], HI = cols.hi[0];
  for (int k = 1; k < K; ++k) LO = std::max(LO, cols.lo[k]), HI = std::min(HI, cols.hi[k]);
  if (LO >= HI) LO = HI = cols.lo[0];
  const int64_t sW = g.sW;
  // Sums channels c0 .. c0 + kBlock - 1 and adds those from `keep` on.
  auto block = [&](int64_t c0, int64_t keep) {
    acc_t sum[K][kBlock] = {};
    for (int64_t wo = LO; wo < HI; ++wo) {
      const scalar_t* gr = grow + wo * C + c0;
      const scalar_t* xr = xrow + (wo * sW + lo) * C + c0;
#pragma omp simd
      for (int64_t cc = 0; cc < kBlock; ++cc) {
        const acc_t gv = static_cast<acc_t>(gr[cc]);
        for (int k = 0; k < K; ++k) sum[k][cc] += gv * static_cast<acc_t>(xr[k * C + cc]);
      }
    }
    for (int k = 0; k < K; ++k)
      for (int64_t cc = keep - c0; cc < kBlock; ++cc) q[k * C + c0 + cc] += sum[k][cc];
  };
  int64_t c0 = 0;
  for (; c0 + kBlock <= C; c0 += kBlock) block(c0, c0);
  // The last channels as one more full block that overlaps the one before (it stays inside the
  // pixel's channels): a short tail loop per column costs as much as a whole block (measured:
  // C = 54 took twice the time per element of C = 48).
  if (c0 < C && C >= kBlock) {
    block(C - kBlock, c0);
    c0 = C;
  }
  // The remaining channels over the common columns, then every channel over the border columns.
  for (int k = 0; k < K; ++k) {
    auto add = [&](int64_t from, int64_t to, int64_t c_begin) {
      acc_t* __restrict__ qk = q + k * C;
      for (int64_t wo = from; wo < to; ++wo) {
        const scalar_t* gr = grow + wo * C;
        const scalar_t* xr = xrow + (wo * sW + lo + k) * C;
#pragma omp simd
        for (int64_t c = c_begin; c < C; ++c)
          qk[c] += static_cast<acc_t>(gr[c]) * static_cast<acc_t>(xr[c]);
      }
    };
    if (c0 < C) add(LO, HI, c0);
    add(cols.lo[k], std::min(cols.hi[k], LO), 0);
    add(std::max(cols.lo[k], HI), cols.hi[k], 0);
  }
}

// The weights do not depend on the position, so the shift gradient is a weighted sum of one
// correlation per window offset (i, j, k): Q_ijk[c] = sum over outputs p of
// grad[p, c] * x[p + (i, j, k), c]. Chunks of output rows (a fixed split, whatever the thread
// count, so the result is deterministic) accumulate Q over rows of at least kFlushColumns columns in
// acc_t and per chunk in double.
template <typename scalar_t>
at::Tensor grad_shift_impl(const at::Tensor& grad, const at::Tensor& x,
                           const Stencil<at::opmath_type<scalar_t>>& s, const Geometry& g,
                           at::ScalarType out_type) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t C = g.C;
  const Window wt = s.win[0], wh = s.win[1], ww = s.win[2];
  const int64_t K3 = static_cast<int64_t>(wt.K) * wh.K * ww.K;
  const int64_t rows = g.N * g.To * g.Ho;
  const int64_t chunks = std::min<int64_t>(rows, 64);
  std::vector<double> Q(chunks * K3 * C, 0.0);
  std::vector<double> outlier_sums(chunks * 3 * C, 0.0);
  const scalar_t* gp = grad.data_ptr<scalar_t>();
  const scalar_t* xp = x.data_ptr<scalar_t>();
  ColumnRanges cols;
  for (int k = 0; k < kMaxSlots; ++k) {
    cols.lo[k] = cols.hi[k] = 0;
    if (k < ww.K) valid_range(g.Wo, g.W, g.sW, ww.lo + k, &cols.lo[k], &cols.hi[k]);
  }
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> q(K3 * C);
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      double* Qc = Q.data() + chunk * K3 * C;
      double* Oc = outlier_sums.data() + chunk * 3 * C;
      const int64_t first_row = chunk * rows / chunks, end_row = (chunk + 1) * rows / chunks;
      int64_t pending = 0;  // output columns summed in q since it was last added to Qc
      std::fill(q.begin(), q.end(), acc_t(0));
      for (int64_t row = first_row; row < end_row; ++row) {
        const int64_t ho = row % g.Ho, nt = row / g.Ho, to = nt % g.To, n = nt / g.To;
        const scalar_t* grow = gp + row * g.Wo * C;
        for (int i = 0; i < wt.K; ++i) {
          const int64_t ti = to * g.sT + wt.lo + i;
          if (ti < 0 || ti >= g.T) continue;
          for (int j = 0; j < wh.K; ++j) {
            const int64_t hi = ho * g.sH + wh.lo + j;
            if (hi < 0 || hi >= g.H) continue;
            const scalar_t* xrow = xp + cl_index(g, n, ti, hi, 0, 0, g.T, g.H, g.W);
            acc_t* qij = q.data() + (i * wh.K + j) * ww.K * C;
            switch (ww.K) {
              case 1: correlate_row<1>(qij, grow, xrow, cols, g, ww.lo, C); break;
              case 2: correlate_row<2>(qij, grow, xrow, cols, g, ww.lo, C); break;
              case 3: correlate_row<3>(qij, grow, xrow, cols, g, ww.lo, C); break;
              default: correlate_row<kMaxSlots>(qij, grow, xrow, cols, g, ww.lo, C); break;
            }
          }
        }
        // q goes into the double sums once it holds a row of kFlushColumns or more: narrow rows
        // (7 to 14 columns deep in the network) added per row cost more than their correlations.
        pending += g.Wo;
        if (pending >= kFlushColumns || row + 1 == end_row) {
          for (int64_t e = 0; e < K3 * C; ++e) Qc[e] += static_cast<double>(q[e]);
          std::fill(q.begin(), q.end(), acc_t(0));
          pending = 0;
        }
        for (const int64_t c : s.outliers)
          for (int64_t wo = 0; wo < g.Wo; ++wo)
            grad_shift_point(xp, g, s.taps[c], n, to, ho, wo, c,
                             static_cast<acc_t>(grow[wo * C + c]), Oc + 3 * c);
      }
    }
  });
  auto result = at::zeros({3, C}, x.options().dtype(at::kDouble));
  double* rp = result.data_ptr<double>();
  const auto &vt = s.v[0], &vh = s.v[1], &vw = s.v[2], &dt = s.d[0], &dh = s.d[1], &dw = s.d[2];
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const double* Qc = Q.data() + chunk * K3 * C;
    for (int i = 0; i < wt.K; ++i)
      for (int j = 0; j < wh.K; ++j)
        for (int k = 0; k < ww.K; ++k) {
          const double* qk = Qc + ((i * wh.K + j) * ww.K + k) * C;
          for (int64_t c = 0; c < C; ++c) {
            const double t = vt[i * C + c], h = vh[j * C + c], w = vw[k * C + c];
            rp[c] += static_cast<double>(dt[i * C + c]) * h * w * qk[c];
            rp[C + c] += t * static_cast<double>(dh[j * C + c]) * w * qk[c];
            rp[2 * C + c] += t * h * static_cast<double>(dw[k * C + c]) * qk[c];
          }
        }
    for (const int64_t c : s.outliers)
      for (int a = 0; a < 3; ++a) rp[a * C + c] += outlier_sums[(chunk * C + c) * 3 + a];
  }
  return result.to(out_type);
}

}  // namespace

at::Tensor forward_channels_last_cpu(const at::Tensor& x, const at::Tensor& shift,
                                     const Geometry& g, bool quantize, const PreAct& pre) {
  auto out = empty_in_layout(output_size(g), x.options(), true);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "rubiks_shift_cl", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto s = make_stencil<acc_t>(shift, quantize, false);
    const std::vector<acc_t> a = channel_vector<acc_t>(pre.scale, g.C);
    const std::vector<acc_t> b = channel_vector<acc_t>(pre.bias, g.C);
    if (pre.affine() && pre.relu) {
      forward_impl<scalar_t>(x, out, s, g, Pre<acc_t, true, true>{a.data(), b.data()});
    } else if (pre.affine()) {
      forward_impl<scalar_t>(x, out, s, g, Pre<acc_t, true, false>{a.data(), b.data()});
    } else if (pre.relu) {
      forward_impl<scalar_t>(x, out, s, g, Pre<acc_t, false, true>{nullptr, nullptr});
    } else {
      forward_impl<scalar_t>(x, out, s, g, Pre<acc_t, false, false>{nullptr, nullptr});
    }
  });
  return out;
}

at::Tensor grad_input_channels_last_cpu(const at::Tensor& grad, const at::Tensor& shift,
                                        const Geometry& g, bool quantize) {
  auto gx = empty_in_layout({g.N, g.T, g.C, g.H, g.W}, grad.options(), true);
  if (gx.numel() == 0) return gx;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "rubiks_shift_cl_gx", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    grad_input_impl<scalar_t>(grad, gx, make_stencil<acc_t>(shift, quantize, false), g);
  });
  return gx;
}

at::Tensor grad_shift_channels_last_cpu(const at::Tensor& grad, const at::Tensor& x,
                                        const at::Tensor& shift, const Geometry& g) {
  at::Tensor result;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "rubiks_shift_cl_gs", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    // Straight-through when quantising: the derivative at the unrounded shifts.
    const auto s = make_stencil<acc_t>(shift, /*quantize=*/false, /*derivative=*/true);
    result = grad_shift_impl<scalar_t>(grad, x, s, g, shift.scalar_type());
  });
  return result;
}

}  // namespace rubiks
}  // namespace actionlab
