// RubiksShift operator: schema (TORCH_LIBRARY) and CPU kernels.
//
// Ops (namespace `actionlab`):
//   rubiks_shift(x, shift, stride, quantize)                        -> out
//   rubiks_shift_grad_input(grad_out, shift, input_size, stride, q[, channels_last]) -> grad_x
//     (exact adjoint; in the given layout, by default the one of grad_out)
//   rubiks_shift_grad_shift(grad_out, x, shift, stride, q)          -> grad_shift (3, C), true gradient
//     (straight-through when q: the derivative at the unrounded shifts)
//   rubiks_shift_act(x, shift, stride, q, scale, bias, relu)        -> out of act(x), inference only
// Autograd, the fake (meta) kernels and the Python entry point live in
// src/actionlab/ops/rubiks_shift.py; the CUDA kernels in rubiks_shift_cuda.cu.
//
// Layouts: contiguous (N, T, C, H, W) runs the kernels below; channels last (N, T, H, W, C in
// memory, see rubiks_shift_args.h) runs rubiks_shift_channels_last.cpp; results keep the layout.
//
// CPU, channels first: parallel over N*T*C planes with ATen's OpenMP pool (at::parallel_for, so
// torch.set_num_threads applies), inner loops over W are branch-free and vectorisable:
// each tap is an axpy (forward, input gradient) or a dot product (shift gradient) over the valid
// range of output columns. Half and bfloat16 accumulate in float, double in double.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "rubiks_shift.h"
#include "rubiks_shift_args.h"
#include "rubiks_shift_cpu.h"

namespace actionlab {
namespace rubiks {
namespace {

// Valid output ranges of the three slots of one axis: slot k reads input o * stride + base + k.
struct SlotRanges {
  int64_t lo[3], hi[3];
};

template <typename acc_t>
SlotRanges slot_ranges(const AxisTaps<acc_t>& taps, int64_t out_len, int64_t in_len,
                       int64_t stride) {
  SlotRanges r;
  for (int k = 0; k < 3; ++k) valid_range(out_len, in_len, stride, taps.base + k, &r.lo[k], &r.hi[k]);
  return r;
}

// acc[o] += a * pre(src[o * stride]) for o in [lo, hi).
template <typename scalar_t, typename acc_t, typename P>
inline void axpy_gather(acc_t* __restrict__ acc, const scalar_t* __restrict__ src, int64_t lo,
                        int64_t hi, int64_t stride, acc_t a, const P& pre) {
  if (stride == 1) {
#pragma omp simd
    for (int64_t o = lo; o < hi; ++o) acc[o] += a * pre(static_cast<acc_t>(src[o]));
  } else {
    for (int64_t o = lo; o < hi; ++o) acc[o] += a * pre(static_cast<acc_t>(src[o * stride]));
  }
}

// dst[o * stride] += a * src[o] for o in [lo, hi) (the adjoint of the above).
template <typename scalar_t, typename acc_t>
inline void axpy_scatter(acc_t* __restrict__ dst, const scalar_t* __restrict__ src, int64_t lo,
                         int64_t hi, int64_t stride, acc_t a) {
  if (stride == 1) {
#pragma omp simd
    for (int64_t o = lo; o < hi; ++o) dst[o] += a * static_cast<acc_t>(src[o]);
  } else {
    for (int64_t o = lo; o < hi; ++o) dst[o * stride] += a * static_cast<acc_t>(src[o]);
  }
}

// sum of g[o] * src[o * stride] for o in [lo, hi).
template <typename scalar_t, typename acc_t>
inline acc_t dot_gather(const scalar_t* __restrict__ g, const scalar_t* __restrict__ src,
                        int64_t lo, int64_t hi, int64_t stride) {
  acc_t sum = 0;
  if (stride == 1) {
#pragma omp simd reduction(+ : sum)
    for (int64_t o = lo; o < hi; ++o) sum += static_cast<acc_t>(g[o]) * static_cast<acc_t>(src[o]);
  } else {
#pragma omp simd reduction(+ : sum)
    for (int64_t o = lo; o < hi; ++o)
      sum += static_cast<acc_t>(g[o]) * static_cast<acc_t>(src[o * stride]);
  }
  return sum;
}

inline bool in_range(int64_t i, int64_t n) { return i >= 0 && i < n; }

template <typename acc_t, typename scalar_t>
inline void store(scalar_t* __restrict__ dst, const acc_t* __restrict__ src, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<scalar_t>(src[i]);
}

// acc[o] += sum over rows r and column slots k of w[r][k] * rows[r][o + off[k]] (stride 1), for
// up to 2 rows and 2 slots in one pass over the columns where all slots are valid; the columns
// where only some are valid are finished tap by tap. One pass instead of four halves the
// accumulator traffic, which bounds the forward pass.
template <typename scalar_t, typename acc_t, typename P>
inline void gather_rows_s1(acc_t* __restrict__ acc, const scalar_t* const* rows, int nr,
                           const int64_t* off, const int64_t* lo, const int64_t* hi, int nk,
                           const acc_t (*w)[2], const P& pre) {
  int64_t LO = lo[0], HI = hi[0];
  for (int k = 1; k < nk; ++k) {
    LO = std::max(LO, lo[k]);
    HI = std::min(HI, hi[k]);
  }
  if (LO >= HI) LO = HI = 0;
  for (int r = 0; r < nr; ++r)
    for (int k = 0; k < nk; ++k) {
      const scalar_t* src = rows[r] + off[k];
      axpy_gather(acc, src, lo[k], std::min(hi[k], LO), 1, w[r][k], pre);
      axpy_gather(acc, src, std::max(lo[k], HI), hi[k], 1, w[r][k], pre);
    }
  if (nk == 2 && nr == 2) {
    const scalar_t *a = rows[0] + off[0], *b = rows[0] + off[1], *c = rows[1] + off[0],
                   *d = rows[1] + off[1];
    const acc_t wa = w[0][0], wb = w[0][1], wc = w[1][0], wd = w[1][1];
#pragma omp simd
    for (int64_t o = LO; o < HI; ++o)
      acc[o] += wa * pre(static_cast<acc_t>(a[o])) + wb * pre(static_cast<acc_t>(b[o])) +
                wc * pre(static_cast<acc_t>(c[o])) + wd * pre(static_cast<acc_t>(d[o]));
  } else if (nk == 2 || nr == 2) {  // two terms: two slots of one row or one slot of two rows
    const scalar_t* a = rows[0] + off[0];
    const scalar_t* b = nk == 2 ? rows[0] + off[1] : rows[1] + off[0];
    const acc_t wa = w[0][0], wb = nk == 2 ? w[0][1] : w[1][0];
#pragma omp simd
    for (int64_t o = LO; o < HI; ++o)
      acc[o] += wa * pre(static_cast<acc_t>(a[o])) + wb * pre(static_cast<acc_t>(b[o]));
  } else {
    axpy_gather(acc, rows[0] + off[0], LO, HI, 1, w[0][0], pre);
  }
}

// The values a forward reads, transformed by the fused inference activation of one channel.
template <typename acc_t, bool kAffine, bool kRelu>
struct PlanePre {
  acc_t a, b;
  inline acc_t operator()(acc_t x) const {
    if (kAffine) x = a * x + b;
    if (kRelu) x = x > acc_t(0) ? x : acc_t(0);
    return x;
  }
};

// Each task is one output plane (n, t, c): zero its accumulator, add the (up to 8) shifted
// reads with the valid row/column ranges computed once per plane.
template <typename scalar_t, bool kAffine, bool kRelu>
void forward_cpu_impl(const at::Tensor& x, const at::Tensor& shift, at::Tensor& out,
                      const Geometry& g, bool quantize, const PreAct& pre_act) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto taps = channel_taps<acc_t>(shift, quantize);
  const std::vector<acc_t> scale = channel_vector<acc_t>(pre_act.scale, g.C);
  const std::vector<acc_t> bias = channel_vector<acc_t>(pre_act.bias, g.C);
  const scalar_t* xp = x.data_ptr<scalar_t>();
  scalar_t* op = out.data_ptr<scalar_t>();
  const int64_t C = g.C, in_plane = g.H * g.W, out_plane = g.Ho * g.Wo;
  at::parallel_for(0, g.N * g.To * C, grain_for(out_plane), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(out_plane);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t c = task % C, nt = task / C, to = nt % g.To, n = nt / g.To;
      const auto& [tt, th, tw] = taps[c];
      const PlanePre<acc_t, kAffine, kRelu> pre{kAffine ? scale[c] : acc_t(1),
                                                kAffine ? bias[c] : acc_t(0)};
      const SlotRanges rh = slot_ranges(th, g.Ho, g.H, g.sH), rw = slot_ranges(tw, g.Wo, g.W, g.sW);
      // Active column slots (value weight != 0; at most 2 of the 3).
      int nk = 0;
      int64_t off[2], klo[2], khi[2];
      acc_t kw[2];
      for (int k = 0; k < 3; ++k) {
        if (tw.v[k] == acc_t(0) || nk == 2) continue;
        off[nk] = tw.base + k, klo[nk] = rw.lo[k], khi[nk] = rw.hi[k], kw[nk] = tw.v[k];
        ++nk;
      }
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int i = 0; i < 3 && nk > 0; ++i) {
        const int64_t ti = to * g.sT + tt.base + i;
        if (tt.v[i] == acc_t(0) || !in_range(ti, g.T)) continue;
        const scalar_t* plane = xp + ((n * g.T + ti) * C + c) * in_plane;
        for (int64_t ho = 0; ho < g.Ho; ++ho) {
          const scalar_t* rows[2];
          acc_t w[2][2];
          int nr = 0;
          for (int j = 0; j < 3 && nr < 2; ++j) {
            if (th.v[j] == acc_t(0) || ho < rh.lo[j] || ho >= rh.hi[j]) continue;
            rows[nr] = plane + (ho * g.sH + th.base + j) * g.W;
            for (int k = 0; k < nk; ++k) w[nr][k] = tt.v[i] * th.v[j] * kw[k];
            ++nr;
          }
          if (nr == 0) continue;
          acc_t* a = acc.data() + ho * g.Wo;
          if (g.sW == 1) {
            gather_rows_s1(a, rows, nr, off, klo, khi, nk, w, pre);
          } else {
            for (int r = 0; r < nr; ++r)
              for (int k = 0; k < nk; ++k)
                axpy_gather(a + klo[k], rows[r] + off[k] + klo[k] * g.sW, 0, khi[k] - klo[k],
                            g.sW, w[r][k], pre);
          }
        }
      }
      store(op + task * out_plane, acc.data(), out_plane);
    }
  });
}

// Each task is one input plane (n, t, c): the exact adjoint, gathering from the (up to 2)
// output frames that read it and scattering rows within the plane (no races across tasks).
template <typename scalar_t>
void grad_input_cpu_impl(const at::Tensor& grad, const at::Tensor& shift, at::Tensor& gx,
                         const Geometry& g, bool quantize) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto taps = channel_taps<acc_t>(shift, quantize);
  const scalar_t* gp = grad.data_ptr<scalar_t>();
  scalar_t* xp = gx.data_ptr<scalar_t>();
  const int64_t C = g.C, in_plane = g.H * g.W, out_plane = g.Ho * g.Wo;
  at::parallel_for(0, g.N * g.T * C, grain_for(in_plane), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(in_plane);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t c = task % C, nt = task / C, ti = nt % g.T, n = nt / g.T;
      const auto& [tt, th, tw] = taps[c];
      const SlotRanges rh = slot_ranges(th, g.Ho, g.H, g.sH), rw = slot_ranges(tw, g.Wo, g.W, g.sW);
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int i = 0; i < 3; ++i) {
        // Output frames `to` with to * sT + base + i == ti read this input frame.
        const int64_t num = ti - tt.base - i;
        if (tt.v[i] == acc_t(0) || num < 0 || num % g.sT != 0 || num / g.sT >= g.To) continue;
        const scalar_t* gplane = gp + ((n * g.To + num / g.sT) * C + c) * out_plane;
        for (int j = 0; j < 3; ++j) {
          if (th.v[j] == acc_t(0)) continue;
          const acc_t wth = tt.v[i] * th.v[j];
          for (int64_t ho = rh.lo[j]; ho < rh.hi[j]; ++ho) {
            acc_t* row = acc.data() + (ho * g.sH + th.base + j) * g.W;
            const scalar_t* src = gplane + ho * g.Wo;
            for (int k = 0; k < 3; ++k) {
              if (tw.v[k] == acc_t(0)) continue;
              axpy_scatter(row + tw.base + k, src, rw.lo[k], rw.hi[k], g.sW, wth * tw.v[k]);
            }
          }
        }
      }
      store(xp + task * in_plane, acc.data(), in_plane);
    }
  });
}

// Each task is one output plane (n, t, c) and yields its (g_T, g_H, g_W): for every input row
// the slots touch, dot products of the upstream gradient with the row at each column slot,
// weighted by the value (v) and derivative (d) weights of the three axes.
template <typename scalar_t>
at::Tensor grad_shift_cpu_impl(const at::Tensor& grad, const at::Tensor& x,
                               const at::Tensor& shift, const Geometry& g, bool quantize) {
  using acc_t = at::opmath_type<scalar_t>;
  // Straight-through: the shift gradient of a quantised shift is the interpolation derivative.
  (void)quantize;
  const auto taps = channel_taps<acc_t>(shift, /*quantize=*/false);
  const scalar_t* gp = grad.data_ptr<scalar_t>();
  const scalar_t* xp = x.data_ptr<scalar_t>();
  const int64_t C = g.C, in_plane = g.H * g.W, out_plane = g.Ho * g.Wo;
  const int64_t tasks = g.N * g.To * C;
  // One partial per output plane, summed in a fixed order afterwards: deterministic whatever
  // the thread count.
  std::vector<acc_t> partial(3 * tasks, acc_t(0));
  at::parallel_for(0, tasks, grain_for(out_plane), [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t c = task % C, nt = task / C, to = nt % g.To, n = nt / g.To;
      const auto& [tt, th, tw] = taps[c];
      const SlotRanges rh = slot_ranges(th, g.Ho, g.H, g.sH), rw = slot_ranges(tw, g.Wo, g.W, g.sW);
      const scalar_t* gplane = gp + task * out_plane;
      acc_t gt = 0, gh = 0, gw = 0;
      for (int i = 0; i < 3; ++i) {
        const int64_t ti = to * g.sT + tt.base + i;
        if ((tt.v[i] == acc_t(0) && tt.d[i] == acc_t(0)) || !in_range(ti, g.T)) continue;
        const scalar_t* plane = xp + ((n * g.T + ti) * C + c) * in_plane;
        for (int j = 0; j < 3; ++j) {
          const acc_t c_t = tt.d[i] * th.v[j];  // weight of these rows in d out / d s_T
          const acc_t c_h = tt.v[i] * th.d[j];  // ... in d out / d s_H
          const acc_t c_w = tt.v[i] * th.v[j];  // ... in d out / d s_W
          if (c_t == acc_t(0) && c_h == acc_t(0) && c_w == acc_t(0)) continue;
          acc_t val_v = 0, val_d = 0;
          for (int k = 0; k < 3; ++k) {
            if (tw.v[k] == acc_t(0) && tw.d[k] == acc_t(0)) continue;
            acc_t dot = 0;
            for (int64_t ho = rh.lo[j]; ho < rh.hi[j]; ++ho) {
              const scalar_t* row = plane + (ho * g.sH + th.base + j) * g.W + tw.base + k;
              dot += dot_gather<scalar_t, acc_t>(gplane + ho * g.Wo, row, rw.lo[k], rw.hi[k], g.sW);
            }
            val_v += tw.v[k] * dot;
            val_d += tw.d[k] * dot;
          }
          gt += c_t * val_v;
          gh += c_h * val_v;
          gw += c_w * val_d;
        }
      }
      partial[3 * task + 0] = gt;
      partial[3 * task + 1] = gh;
      partial[3 * task + 2] = gw;
    }
  });
  auto result = at::zeros({3, C}, x.options().dtype(at::kDouble));
  double* rp = result.data_ptr<double>();
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t c = task % C;
    for (int a = 0; a < 3; ++a) rp[a * C + c] += static_cast<double>(partial[3 * task + a]);
  }
  return result.to(shift.scalar_type());
}

// Channels-first forward with the pre-activation `pre` (none in training).
at::Tensor forward_contiguous_cpu(const at::Tensor& x_, const at::Tensor& shift, const Geometry& g,
                                  bool quantize, const PreAct& pre) {
  auto x = x_.contiguous();
  auto out = at::empty(output_size(g), x.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "rubiks_shift_cpu", [&] {
    if (pre.affine() && pre.relu) {
      forward_cpu_impl<scalar_t, true, true>(x, shift, out, g, quantize, pre);
    } else if (pre.affine()) {
      forward_cpu_impl<scalar_t, true, false>(x, shift, out, g, quantize, pre);
    } else if (pre.relu) {
      forward_cpu_impl<scalar_t, false, true>(x, shift, out, g, quantize, pre);
    } else {
      forward_cpu_impl<scalar_t, false, false>(x, shift, out, g, quantize, pre);
    }
  });
  return out;
}

at::Tensor forward_cpu(const at::Tensor& x, const at::Tensor& shift, const Geometry& g,
                       bool quantize, const PreAct& pre) {
  if (is_channels_last(x)) return forward_channels_last_cpu(x, shift, g, quantize, pre);
  return forward_contiguous_cpu(x, shift, g, quantize, pre);
}

at::Tensor rubiks_shift_cpu(const at::Tensor& x, const at::Tensor& shift, at::IntArrayRef stride,
                            bool quantize) {
  return forward_cpu(x, shift, forward_args(x, shift, stride), quantize, PreAct{});
}

at::Tensor rubiks_shift_act_cpu(const at::Tensor& x, const at::Tensor& shift,
                                at::IntArrayRef stride, bool quantize,
                                const c10::optional<at::Tensor>& scale,
                                const c10::optional<at::Tensor>& bias, bool relu) {
  const Geometry g = forward_args(x, shift, stride);
  return forward_cpu(x, shift, g, quantize, make_pre_act(scale, bias, relu, g.C, x));
}

// The input gradient runs in the layout of the forward input (`channels_last`, which autograd
// passes: an upstream gradient of 1 x 1 planes is both layouts at once) or, without it, of the
// upstream gradient; the shift gradient in the layout of the saved input. A gradient in the other
// layout is converted first.
at::Tensor rubiks_shift_grad_input_cpu(const at::Tensor& grad_, const at::Tensor& shift,
                                       at::IntArrayRef input_size, at::IntArrayRef stride,
                                       bool quantize, c10::optional<bool> channels_last) {
  const Geometry g = grad_input_args(grad_, shift, input_size, stride);
  if (channels_last.value_or(is_channels_last(grad_)))
    return grad_input_channels_last_cpu(in_layout(grad_, true), shift, g, quantize);
  auto grad = grad_.contiguous();
  auto gx = at::empty(input_size, grad.options());
  if (gx.numel() == 0) return gx;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, grad.scalar_type(), "rubiks_shift_grad_input_cpu",
      [&] { grad_input_cpu_impl<scalar_t>(grad, shift, gx, g, quantize); });
  return gx;
}

at::Tensor rubiks_shift_grad_shift_cpu(const at::Tensor& grad_, const at::Tensor& x_,
                                       const at::Tensor& shift, at::IntArrayRef stride,
                                       bool quantize) {
  const Geometry g = grad_shift_args(grad_, x_, shift, stride);
  if (grad_.numel() == 0) return at::zeros_like(shift);
  if (is_channels_last(x_)) return grad_shift_channels_last_cpu(in_layout(grad_, true), x_, shift, g);
  auto grad = grad_.contiguous();
  auto x = x_.contiguous();
  at::Tensor result;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "rubiks_shift_grad_shift_cpu",
      [&] { result = grad_shift_cpu_impl<scalar_t>(grad, x, shift, g, quantize); });
  return result;
}

}  // namespace
}  // namespace rubiks
}  // namespace actionlab

TORCH_LIBRARY(actionlab, m) {
  m.def("rubiks_shift(Tensor x, Tensor shift, int[3] stride, bool quantize) -> Tensor");
  m.def(
      "rubiks_shift_grad_input(Tensor grad_out, Tensor shift, SymInt[] input_size, int[3] stride, "
      "bool quantize, bool? channels_last=None) -> Tensor");
  m.def(
      "rubiks_shift_grad_shift(Tensor grad_out, Tensor x, Tensor shift, int[3] stride, "
      "bool quantize) -> Tensor");
  // Inference only (no autograd): the forward of act(x) with act = [scale * x + bias] + [ReLU]
  // applied to every value read, i.e. an inference BatchNorm and/or ReLU fused into the shift.
  m.def(
      "rubiks_shift_act(Tensor x, Tensor shift, int[3] stride, bool quantize, Tensor? scale, "
      "Tensor? bias, bool relu) -> Tensor");
}

TORCH_LIBRARY_IMPL(actionlab, CPU, m) {
  m.impl("rubiks_shift", &actionlab::rubiks::rubiks_shift_cpu);
  m.impl("rubiks_shift_grad_input", &actionlab::rubiks::rubiks_shift_grad_input_cpu);
  m.impl("rubiks_shift_grad_shift", &actionlab::rubiks::rubiks_shift_grad_shift_cpu);
  m.impl("rubiks_shift_act", &actionlab::rubiks::rubiks_shift_act_cpu);
}
