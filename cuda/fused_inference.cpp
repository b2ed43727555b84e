// Inference-only elementwise op of fused networks (actionlab.models.fuse), CPU:
//
//   affine_relu(x, scale, bias) -> max(scale[c] * x + bias[c], 0)
//
// i.e. an inference BatchNorm (folded to a per-channel scale and bias) and its ReLU in one pass
// over memory instead of two: a pre-activation network (RubiksNet) needs both the block output
// (its next identity shortcut) and this activation of it (its next branch input), so the BN
// cannot fold into a convolution. x is (N, C, ...) contiguous or channels last
// (torch.channels_last / channels_last_3d); the result has the layout of x. Other devices
// compose the same from PyTorch ops in src/actionlab/models/fuse.py.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "rubiks_shift_cpu.h"

namespace actionlab {
namespace fused {
namespace {

enum class Layout { kContiguous, kChannelsLast };

Layout layout_of(const at::Tensor& x) {
  if (x.is_contiguous()) return Layout::kContiguous;
  const auto fmt = x.dim() == 4 ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::ChannelsLast3d;
  TORCH_CHECK((x.dim() == 4 || x.dim() == 5) && x.is_contiguous(fmt),
              "affine_relu: x must be contiguous or channels last, got strides ", x.strides());
  return Layout::kChannelsLast;
}

template <typename scalar_t>
void run(const at::Tensor& x, at::Tensor& out, const at::Tensor& scale, const at::Tensor& bias,
         Layout layout) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t C = x.size(1);
  const int64_t inner = x.numel() / std::max<int64_t>(1, x.size(0) * C);  // pixels per channel
  const std::vector<acc_t> a = rubiks::channel_vector<acc_t>(scale, C);
  const std::vector<acc_t> b = rubiks::channel_vector<acc_t>(bias, C);
  const scalar_t* xp = x.data_ptr<scalar_t>();
  scalar_t* op = out.data_ptr<scalar_t>();
  // One row is a plane of one channel (contiguous) or the C channels of one pixel (channels
  // last); either way the inner loop is contiguous and vectorises.
  const bool planes = layout == Layout::kContiguous;
  const int64_t rows = planes ? x.size(0) * C : x.size(0) * inner;
  const int64_t len = planes ? inner : C;
  at::parallel_for(0, rows, rubiks::grain_for(len), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const scalar_t* xr = xp + row * len;
      scalar_t* o = op + row * len;
      if (planes) {
        const acc_t ac = a[row % C], bc = b[row % C];
#pragma omp simd
        for (int64_t i = 0; i < len; ++i) {
          const acc_t y = ac * static_cast<acc_t>(xr[i]) + bc;
          o[i] = static_cast<scalar_t>(y > acc_t(0) ? y : acc_t(0));
        }
      } else {
        const acc_t* ac = a.data();
        const acc_t* bc = b.data();
#pragma omp simd
        for (int64_t i = 0; i < len; ++i) {
          const acc_t y = ac[i] * static_cast<acc_t>(xr[i]) + bc[i];
          o[i] = static_cast<scalar_t>(y > acc_t(0) ? y : acc_t(0));
        }
      }
    }
  });
}

void check(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& bias) {
  TORCH_CHECK(x.dim() >= 2, "affine_relu: x must be (N, C, ...), got ", x.sizes());
  for (const at::Tensor* t : {&scale, &bias})
    TORCH_CHECK(t->dim() == 1 && t->size(0) == x.size(1), "affine_relu: scale and bias must be (C=",
                x.size(1), ",), got ", t->sizes());
}

at::Tensor affine_relu_cpu(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& bias) {
  check(x, scale, bias);
  const Layout layout = layout_of(x);
  auto out = at::empty_like(x);  // keeps the layout
  if (x.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "affine_relu", [&] {
    run<scalar_t>(x, out, scale, bias, layout);
  });
  return out;
}

}  // namespace
}  // namespace fused
}  // namespace actionlab

TORCH_LIBRARY_FRAGMENT(actionlab, m) {
  m.def("affine_relu(Tensor x, Tensor scale, Tensor bias) -> Tensor");
}

TORCH_LIBRARY_IMPL(actionlab, CPU, m) {
  m.impl("affine_relu", &actionlab::fused::affine_relu_cpu);
}
