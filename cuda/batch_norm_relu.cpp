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
// contiguous channels; every inner loop runs over those C channels and vectorises, and the work
// is split over pixels, with per-chunk partial sums reduced in float64 afterwards.
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
// sums (in the input dtype) short before they go to float64.
int64_t chunk_pixels(int64_t C) {
  return std::clamp<int64_t>(65536 / std::max<int64_t>(C, 1), 16, 256);
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

// y = x * scale[c] + shift[c], i.e. (x - mean) * invstd * w + b, in the input dtype.
template <typename scalar_t>
struct ChannelAffine {
  std::vector<scalar_t> scale, shift;

  ChannelAffine(const at::Tensor& mean, const at::Tensor& invstd, const at::Tensor& w,
                const at::Tensor& b) {
    const std::vector<double> m = rubiks::channel_vector<double>(mean, mean.size(0));
    const std::vector<double> s = rubiks::channel_vector<double>(invstd, mean.size(0));
    const std::vector<double> wv = rubiks::channel_vector<double>(w, mean.size(0));
    const std::vector<double> bv = rubiks::channel_vector<double>(b, mean.size(0));
    scale.resize(m.size());
    shift.resize(m.size());
    for (size_t c = 0; c < m.size(); ++c) {
      scale[c] = static_cast<scalar_t>(wv[c] * s[c]);
      shift[c] = static_cast<scalar_t>(bv[c] - m[c] * wv[c] * s[c]);
    }
  }
};

// The one place the pre-activation is computed (see the file comment: forward and backward
// must agree on its sign bit for bit).
template <typename scalar_t>
inline scalar_t pre_activation(scalar_t x, scalar_t scale, scalar_t shift) {
  return x * scale + shift;
}

// Per-chunk per-channel sums over the pixels of each chunk, computed in the input dtype by
// `body(row, sums)` for every pixel row of the chunk and kept per chunk as float64: a reduction
// whose result does not depend on the number of threads.
template <typename scalar_t, int kSums, typename Body, typename Finish>
std::vector<double> chunk_sums(const Rows& r, Body body, Finish finish) {
  const int64_t chunk = chunk_pixels(r.C);
  const int64_t chunks = (r.P + chunk - 1) / chunk;
  std::vector<double> out(static_cast<size_t>(chunks * kSums * r.C));
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> sums(static_cast<size_t>(kSums * r.C));
    for (int64_t k = begin; k < end; ++k) {
      const int64_t p0 = k * chunk, p1 = std::min(r.P, p0 + chunk);
      std::fill(sums.begin(), sums.end(), scalar_t(0));
      for (int64_t p = p0; p < p1; ++p) body(p, sums.data());
      finish(p0, p1, sums.data());
      double* o = out.data() + k * kSums * r.C;
      for (int64_t i = 0; i < kSums * r.C; ++i) o[i] = static_cast<double>(sums[i]);
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
  const int64_t C = r.C;
  const scalar_t* xp = x.data_ptr<scalar_t>();
  // Statistics: per chunk the sum and, from the chunk's own mean (its values are still in
  // cache), the centred sum of squares; combined exactly in float64 below.
  const std::vector<double> parts = chunk_sums<scalar_t, 3>(
      r,
      [&](int64_t p, scalar_t* s) {
        const scalar_t* row = xp + p * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) s[c] += row[c];
      },
      [&](int64_t p0, int64_t p1, scalar_t* s) {
        scalar_t* mean = s + C;
        scalar_t* m2 = s + 2 * C;
        const scalar_t n = static_cast<scalar_t>(p1 - p0);
        for (int64_t c = 0; c < C; ++c) mean[c] = s[c] / n, m2[c] = scalar_t(0);
        for (int64_t p = p0; p < p1; ++p) {
          const scalar_t* row = xp + p * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) {
            const scalar_t d = row[c] - mean[c];
            m2[c] += d * d;
          }
        }
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
    for (int64_t p = begin; p < end; ++p) {
      const scalar_t* row = xp + p * C;
      scalar_t* out = yp + p * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const scalar_t v = pre_activation(row[c], sc[c], sh[c]);
        out[c] = v > scalar_t(0) ? v : scalar_t(0);
      }
    }
  });
  return {y, mean_t, invstd_t};
}

template <typename scalar_t>
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_impl(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& mean_t,
    const at::Tensor& invstd_t, const at::Tensor& w, const at::Tensor& b) {
  const Rows r = rows_of(x, "x");
  const int64_t C = r.C;
  const scalar_t* xp = x.data_ptr<scalar_t>();
  const scalar_t* gp = grad_y.data_ptr<scalar_t>();
  const ChannelAffine<scalar_t> a(mean_t, invstd_t, w, b);
  const scalar_t* sc = a.scale.data();
  const scalar_t* sh = a.shift.data();
  const std::vector<scalar_t> mean = rubiks::channel_vector<scalar_t>(mean_t, C);
  const scalar_t* mp = mean.data();
  // g = grad_y * (y > 0); per channel sum g and sum g * (x - mean).
  const std::vector<double> parts = chunk_sums<scalar_t, 2>(
      r,
      [&](int64_t p, scalar_t* s) {
        const scalar_t* row = xp + p * C;
        const scalar_t* grow = gp + p * C;
        scalar_t* sg = s;
        scalar_t* sgx = s + C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          const scalar_t g = pre_activation(row[c], sc[c], sh[c]) > scalar_t(0) ? grow[c] : scalar_t(0);
          sg[c] += g;
          sgx[c] += g * (row[c] - mp[c]);
        }
      },
      [](int64_t, int64_t, scalar_t*) {});
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
  auto grad_x = empty_channels_last(x);
  scalar_t* op = grad_x.data_ptr<scalar_t>();
  const scalar_t *k1p = k1.data(), *k2p = k2.data(), *k3p = k3.data();
  at::parallel_for(0, r.P, rubiks::grain_for(C), [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const scalar_t* row = xp + p * C;
      const scalar_t* grow = gp + p * C;
      scalar_t* out = op + p * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const scalar_t g = pre_activation(row[c], sc[c], sh[c]) > scalar_t(0) ? grow[c] : scalar_t(0);
        out[c] = k1p[c] * g + k2p[c] * (row[c] - mp[c]) + k3p[c];
      }
    }
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
