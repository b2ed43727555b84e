// Training-mode BatchNorm + ReLU of channels-last (N, C, H, W) tensors, CPU:
//
//   bn_relu_forward(x, w, b, running_mean?, running_var?, momentum, eps) -> (y, mean, invstd)
//     y = max((x - mean[c]) * invstd[c] * w[c] + b[c], 0) with the batch statistics (biased
//     variance), and the running statistics updated in place as F.batch_norm(training=True)
//     does: momentum * batch + (1 - momentum) * running, the variance unbiased.
//   bn_relu_backward(grad_y, x, mean, invstd, w, b) -> (grad_x, grad_w, grad_b)
//
// Why: PyTorch's channels-last CPU BatchNorm backward is several times slower than its NCHW one
// at RubiksNet's widths (C = 54 .. 432), and the ReLU after every BN is two more passes over
// memory (forward and threshold_backward). Here a channels-last tensor is P = N*H*W rows of C
// contiguous channels; every inner loop runs over the contiguous channels of a few pixels and
// vectorises, and the work is split over pixels, with per-chunk partial sums reduced in float64
// afterwards.
//
// Passes over memory: the forward reads x for the statistics and once more to write y; the
// backward reads grad_y and x for the two per-channel sums, and once more to write grad_x. The
// ReLU mask is recomputed from x instead of being stored or read back from y: forward and
// backward evaluate the same expression (`pre_activation`) with the same per-channel scale and
// shift (`ChannelAffine`, made from the saved mean/invstd), so the mask is bit-identical.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

#include "rubiks_shift_cpu.h"

namespace actionlab {
namespace bn_act {
namespace {

// Pixels per chunk of the reductions: at most 256 KB of values, so the second look at a chunk
// (the forward's centred sum of squares) comes from L2, not memory, and the per-chunk float64
// merge stays a few percent of the work; at most 256 pixels, which keeps the per-chunk partial
// sums (in the input dtype) short before they go to float64. A multiple of kRun.
constexpr int64_t kRun = 8;  // pixels per run: kRun * C values are a whole number of vectors

int64_t chunk_pixels(int64_t C) {
  return std::clamp<int64_t>(65536 / std::max<int64_t>(C, 1), 16, 256) / kRun * kRun;
}

struct Rows {
  int64_t P;  // pixels N*H*W
  int64_t C;  // channels, contiguous within a pixel
};

Rows rows_of(const at::Tensor& x, const char* what) {
  TORCH_CHECK(x.dim() == 4, "bn_relu: ", what, " must be 4-D (N, C, H, W), got ", x.sizes());
  TORCH_CHECK(x.device().is_cpu(), "bn_relu: ", what, " must be on the CPU, got ", x.device());
  TORCH_CHECK(x.is_contiguous(at::MemoryFormat::ChannelsLast), "bn_relu: ", what,
              " must be channels-last contiguous (x.contiguous(memory_format=torch.channels_last))"
              ", got strides ", x.strides());
  return {x.size(0) * x.size(2) * x.size(3), x.size(1)};
}

void check_channel_vector(const at::Tensor& t, const at::Tensor& x, const char* what) {
  TORCH_CHECK(t.dim() == 1 && t.size(0) == x.size(1), "bn_relu: ", what, " must be (C=",
              x.size(1), ",), got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == x.scalar_type() && t.device() == x.device(), "bn_relu: ", what,
              " must have the dtype and device of x (", x.scalar_type(), ", ", x.device(), "), got ",
              t.scalar_type(), ", ", t.device());
}

at::Tensor empty_channels_last(const at::Tensor& x) {
  return at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::ChannelsLast));
}

// The loops run over "runs" of kRun pixels, kRun * C contiguous values indexed by i with channel
// i % C, instead of one pixel (C values) at a time: at C = 54 a pixel is 6 vectors and a
// remainder, a run is 54 whole vectors, and the loop overhead is paid once per run. Per-channel
// operands are stored repeated kRun times (`repeat_runs`) so the inner loops index them by i.
template <typename T>
std::vector<T> repeat_runs(const std::vector<T>& v) {
  std::vector<T> out(v.size() * kRun);
  for (int64_t k = 0; k < kRun; ++k) std::copy(v.begin(), v.end(), out.begin() + k * v.size());
  return out;
}

// f(offset, len) for the values of pixels [p0, p1): whole runs, then the last pixels one by one
// (their values are the first C of a run, so the repeated operands index them the same way).
template <typename F>
inline void for_each_run(int64_t p0, int64_t p1, int64_t C, const F& f) {
  int64_t p = p0;
  for (; p + kRun <= p1; p += kRun) f(p * C, kRun * C);
  for (; p < p1; ++p) f(p * C, C);
}

// y = x * scale[c] + shift[c], i.e. (x - mean) * invstd * w + b, in the input dtype; every
// operand repeated per run.
template <typename scalar_t>
struct ChannelAffine {
  std::vector<scalar_t> scale, shift, mean;

  ChannelAffine(const at::Tensor& mean_t, const at::Tensor& invstd, const at::Tensor& w,
                const at::Tensor& b) {
    const int64_t C = mean_t.size(0);
    const std::vector<double> m = rubiks::channel_vector<double>(mean_t, C);
    const std::vector<double> s = rubiks::channel_vector<double>(invstd, C);
    const std::vector<double> wv = rubiks::channel_vector<double>(w, C);
    const std::vector<double> bv = rubiks::channel_vector<double>(b, C);
    std::vector<scalar_t> sc(C), sh(C);
    for (int64_t c = 0; c < C; ++c) {
      sc[c] = static_cast<scalar_t>(wv[c] * s[c]);
      sh[c] = static_cast<scalar_t>(bv[c] - m[c] * wv[c] * s[c]);
    }
    scale = repeat_runs(sc);
    shift = repeat_runs(sh);
    mean = repeat_runs(rubiks::channel_vector<scalar_t>(mean_t, C));
  }
};

// The one place the pre-activation is computed (see the file comment: forward and backward
// must agree on its sign bit for bit).
template <typename scalar_t>
inline scalar_t pre_activation(scalar_t x, scalar_t scale, scalar_t shift) {
  return x * scale + shift;
}

// Per-chunk reductions: `body(p0, p1, sums, scratch)` accumulates kSums per-run arrays (kRun * C
// each, in the input dtype) over the pixels [p0, p1) of one chunk; they are folded to C values
// and kept per chunk as float64, `kSums * C` per chunk, in chunk order: a reduction whose result
// does not depend on the number of threads. `scratch` is kRun * C values of the body's own.
template <typename scalar_t, int kSums, typename Body>
std::vector<double> chunk_sums(const Rows& r, const Body& body) {
  const int64_t chunk = chunk_pixels(r.C), L = kRun * r.C;
  const int64_t chunks = (r.P + chunk - 1) / chunk;
  std::vector<double> out(static_cast<size_t>(chunks * kSums * r.C));
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> buf(static_cast<size_t>((kSums + 1) * L));
    for (int64_t k = begin; k < end; ++k) {
      const int64_t p0 = k * chunk, p1 = std::min(r.P, p0 + chunk);
      std::fill(buf.begin(), buf.end(), scalar_t(0));
      body(p0, p1, buf.data(), buf.data() + kSums * L);
      double* o = out.data() + k * kSums * r.C;
      for (int j = 0; j < kSums; ++j) {
        double* oj = o + j * r.C;
        for (int64_t q = 0; q < kRun; ++q) {
          const scalar_t* bq = buf.data() + j * L + q * r.C;
#pragma omp simd
          for (int64_t c = 0; c < r.C; ++c) oj[c] += static_cast<double>(bq[c]);
        }
      }
    }
  });
  return out;
}

template <typename scalar_t>
std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_impl(
    const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
    const c10::optional<at::Tensor>& running_mean, const c10::optional<at::Tensor>& running_var,
    double momentum, double eps) {
  const Rows r = rows_of(x, "x");
  const int64_t C = r.C, L = kRun * C;
  const scalar_t* xp = x.data_ptr<scalar_t>();
  // Statistics: per chunk the sum and, from the chunk's own mean (its values are still in
  // cache), the centred sum of squares; combined exactly in float64 below. The chunk mean m is
  // kept as the second "sum" (in its first C values; folding adds the zeros of the others).
  const std::vector<double> parts = chunk_sums<scalar_t, 3>(
      r, [&](int64_t p0, int64_t p1, scalar_t* s, scalar_t* mean_run) {
        scalar_t* sum = s;
        scalar_t* mean = s + L;
        scalar_t* m2 = s + 2 * L;
        for_each_run(p0, p1, C, [&](int64_t off, int64_t len) {
          const scalar_t* v = xp + off;
#pragma omp simd
          for (int64_t i = 0; i < len; ++i) sum[i] += v[i];
        });
        const scalar_t n = static_cast<scalar_t>(p1 - p0);
        for (int64_t q = 0; q < kRun; ++q)
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) mean[c] += sum[q * C + c];
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) mean[c] /= n;
        for (int64_t q = 0; q < kRun; ++q) std::copy(mean, mean + C, mean_run + q * C);
        for_each_run(p0, p1, C, [&](int64_t off, int64_t len) {
          const scalar_t* v = xp + off;
#pragma omp simd
          for (int64_t i = 0; i < len; ++i) {
            const scalar_t d = v[i] - mean_run[i];
            m2[i] += d * d;
          }
        });
      });
  const int64_t chunk = chunk_pixels(C);
  const int64_t chunks = (r.P + chunk - 1) / chunk;
  std::vector<double> mean(C, 0.0), m2(C, 0.0);
  for (int64_t k = 0; k < chunks; ++k)
    for (int64_t c = 0; c < C; ++c) mean[c] += parts[k * 3 * C + c];
  for (int64_t c = 0; c < C; ++c) mean[c] /= static_cast<double>(r.P);
  for (int64_t k = 0; k < chunks; ++k) {
    const double n = static_cast<double>(std::min(r.P, (k + 1) * chunk) - k * chunk);
    const double* q = parts.data() + k * 3 * C;
    for (int64_t c = 0; c < C; ++c) {
      // sum (x - mean)^2 = sum (x - m)^2 + 2 (m - mean) sum (x - m) + n (m - mean)^2, exact
      // for the (rounded) chunk mean m the chunk's squares were centred on.
      const double dm = q[C + c] - mean[c];
      m2[c] += q[2 * C + c] + 2.0 * dm * (q[c] - n * q[C + c]) + n * dm * dm;
    }
  }
  auto mean_t = at::empty({C}, x.options());
  auto invstd_t = at::empty({C}, x.options());
  for (int64_t c = 0; c < C; ++c) {
    mean_t.data_ptr<scalar_t>()[c] = static_cast<scalar_t>(mean[c]);
    const double var = std::max(m2[c], 0.0) / static_cast<double>(r.P);
    invstd_t.data_ptr<scalar_t>()[c] = static_cast<scalar_t>(1.0 / std::sqrt(var + eps));
  }
  if (running_mean.has_value() && running_mean->defined()) {
    auto rm = running_mean->accessor<scalar_t, 1>();
    for (int64_t c = 0; c < C; ++c)
      rm[c] = static_cast<scalar_t>(momentum * mean[c] + (1.0 - momentum) * rm[c]);
  }
  if (running_var.has_value() && running_var->defined()) {
    auto rv = running_var->accessor<scalar_t, 1>();
    const double unbias = 1.0 / static_cast<double>(r.P - 1);
    for (int64_t c = 0; c < C; ++c)
      rv[c] = static_cast<scalar_t>(momentum * m2[c] * unbias + (1.0 - momentum) * rv[c]);
  }

  const ChannelAffine<scalar_t> a(mean_t, invstd_t, w, b);
  auto y = empty_channels_last(x);
  scalar_t* yp = y.data_ptr<scalar_t>();
  const scalar_t* sc = a.scale.data();
  const scalar_t* sh = a.shift.data();
  at::parallel_for(0, r.P, rubiks::grain_for(C), [&](int64_t begin, int64_t end) {
    for_each_run(begin, end, C, [&](int64_t off, int64_t len) {
      const scalar_t* v = xp + off;
      scalar_t* out = yp + off;
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) {
        const scalar_t z = pre_activation(v[i], sc[i], sh[i]);
        out[i] = z > scalar_t(0) ? z : scalar_t(0);
      }
    });
  });
  return {y, mean_t, invstd_t};
}

template <typename scalar_t>
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_impl(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& mean_t,
    const at::Tensor& invstd_t, const at::Tensor& w, const at::Tensor& b) {
  const Rows r = rows_of(x, "x");
  const int64_t C = r.C, L = kRun * C;
  const scalar_t* xp = x.data_ptr<scalar_t>();
  const scalar_t* gp = grad_y.data_ptr<scalar_t>();
  const ChannelAffine<scalar_t> a(mean_t, invstd_t, w, b);
  const scalar_t* sc = a.scale.data();
  const scalar_t* sh = a.shift.data();
  const scalar_t* mp = a.mean.data();
  // g = grad_y * (y > 0); per channel sum g and sum g * (x - mean).
  const std::vector<double> parts = chunk_sums<scalar_t, 2>(
      r, [&](int64_t p0, int64_t p1, scalar_t* s, scalar_t*) {
        scalar_t* sg = s;
        scalar_t* sgx = s + L;
        for_each_run(p0, p1, C, [&](int64_t off, int64_t len) {
          const scalar_t* v = xp + off;
          const scalar_t* gv = gp + off;
#pragma omp simd
          for (int64_t i = 0; i < len; ++i) {
            const scalar_t g = pre_activation(v[i], sc[i], sh[i]) > scalar_t(0) ? gv[i] : scalar_t(0);
            sg[i] += g;
            sgx[i] += g * (v[i] - mp[i]);
          }
        });
      });
  std::vector<double> sum_g(C, 0.0), sum_gx(C, 0.0);
  for (size_t k = 0; k < parts.size() / (2 * C); ++k)
    for (int64_t c = 0; c < C; ++c) {
      sum_g[c] += parts[k * 2 * C + c];
      sum_gx[c] += parts[k * 2 * C + C + c];
    }
  const std::vector<double> invstd = rubiks::channel_vector<double>(invstd_t, C);
  const std::vector<double> wv = rubiks::channel_vector<double>(w, C);
  auto grad_w = at::empty({C}, x.options());
  auto grad_b = at::empty({C}, x.options());
  // grad_x = w invstd (g - sum_g / P - (x - mean) invstd^2 sum_gx / P) = k1 g + k2 (x - mean) + k3
  std::vector<scalar_t> k1(C), k2(C), k3(C);
  const double inv_p = 1.0 / static_cast<double>(r.P);
  for (int64_t c = 0; c < C; ++c) {
    grad_w.data_ptr<scalar_t>()[c] = static_cast<scalar_t>(sum_gx[c] * invstd[c]);
    grad_b.data_ptr<scalar_t>()[c] = static_cast<scalar_t>(sum_g[c]);
    const double wi = wv[c] * invstd[c];
    k1[c] = static_cast<scalar_t>(wi);
    k2[c] = static_cast<scalar_t>(-wi * invstd[c] * invstd[c] * sum_gx[c] * inv_p);
    k3[c] = static_cast<scalar_t>(-wi * sum_g[c] * inv_p);
  }
  const std::vector<scalar_t> k1r = repeat_runs(k1), k2r = repeat_runs(k2), k3r = repeat_runs(k3);
  auto grad_x = empty_channels_last(x);
  scalar_t* op = grad_x.data_ptr<scalar_t>();
  const scalar_t *k1p = k1r.data(), *k2p = k2r.data(), *k3p = k3r.data();
  at::parallel_for(0, r.P, rubiks::grain_for(C), [&](int64_t begin, int64_t end) {
    for_each_run(begin, end, C, [&](int64_t off, int64_t len) {
      const scalar_t* v = xp + off;
      const scalar_t* gv = gp + off;
      scalar_t* out = op + off;
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) {
        const scalar_t g = pre_activation(v[i], sc[i], sh[i]) > scalar_t(0) ? gv[i] : scalar_t(0);
        out[i] = k1p[i] * g + k2p[i] * (v[i] - mp[i]) + k3p[i];
      }
    });
  });
  return {grad_x, grad_w, grad_b};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> bn_relu_forward_cpu(
    const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
    const c10::optional<at::Tensor>& running_mean, const c10::optional<at::Tensor>& running_var,
    double momentum, double eps) {
  const Rows r = rows_of(x, "x");
  TORCH_CHECK(r.P > 1, "bn_relu: expected more than 1 value per channel when training, got input "
              "of size ", x.sizes());
  check_channel_vector(weight, x, "weight");
  check_channel_vector(bias, x, "bias");
  for (const auto* t : {&running_mean, &running_var})
    if (t->has_value() && (*t)->defined()) {
      check_channel_vector(**t, x, "running_mean/running_var");
      TORCH_CHECK((*t)->is_contiguous(), "bn_relu: running statistics must be contiguous");
    }
  std::tuple<at::Tensor, at::Tensor, at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "bn_relu_forward", [&] {
    out = forward_impl<scalar_t>(x, weight, bias, running_mean, running_var, momentum, eps);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> bn_relu_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& mean,
    const at::Tensor& invstd, const at::Tensor& weight, const at::Tensor& bias) {
  rows_of(x, "x");
  TORCH_CHECK(grad_y.sizes() == x.sizes() && grad_y.scalar_type() == x.scalar_type(),
              "bn_relu: grad_y must have the shape and dtype of x, got ", grad_y.sizes(), " ",
              grad_y.scalar_type());
  check_channel_vector(mean, x, "mean");
  check_channel_vector(invstd, x, "invstd");
  check_channel_vector(weight, x, "weight");
  check_channel_vector(bias, x, "bias");
  // Upstream gradients in another layout (a broadcast of a spatial mean, say) are laid out
  // like x once; the kernels then read both with the same pixel-row indexing.
  const at::Tensor g = grad_y.contiguous(at::MemoryFormat::ChannelsLast);
  std::tuple<at::Tensor, at::Tensor, at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "bn_relu_backward", [&] {
    out = backward_impl<scalar_t>(g, x, mean, invstd, weight, bias);
  });
  return out;
}

}  // namespace
}  // namespace bn_act
}  // namespace actionlab

TORCH_LIBRARY_FRAGMENT(actionlab, m) {
  m.def("bn_relu_forward(Tensor x, Tensor weight, Tensor bias, Tensor(a!)? running_mean, "
        "Tensor(b!)? running_var, float momentum, float eps) -> (Tensor, Tensor, Tensor)");
  m.def("bn_relu_backward(Tensor grad_y, Tensor x, Tensor mean, Tensor invstd, Tensor weight, "
        "Tensor bias) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(actionlab, CPU, m) {
  m.impl("bn_relu_forward", &actionlab::bn_act::bn_relu_forward_cpu);
  m.impl("bn_relu_backward", &actionlab::bn_act::bn_relu_backward_cpu);
}
