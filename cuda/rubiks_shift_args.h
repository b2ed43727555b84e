// RubiksShift: the arguments of one call checked, and the sizes derived from them, on the host
// (the CPU kernels, the CUDA launches and their CPU emulation in tests/cuda_emulation/ share these).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "rubiks_shift.h"

namespace actionlab {
namespace rubiks {

struct Geometry {
  int64_t N, T, C, H, W;  // input
  int64_t To, Ho, Wo;     // output
  int64_t sT, sH, sW;     // strides
};

inline Geometry make_geometry(at::IntArrayRef size, at::IntArrayRef stride) {
  TORCH_CHECK(size.size() == 5, "rubiks_shift: x must be (N, T, C, H, W), got ", size);
  TORCH_CHECK(stride.size() == 3, "rubiks_shift: stride must have 3 entries (T, H, W), got ",
              stride);
  for (auto s : stride) TORCH_CHECK(s >= 1, "rubiks_shift: strides must be >= 1, got ", stride);
  Geometry g{size[0], size[1], size[2], size[3], size[4], 0, 0, 0, stride[0], stride[1], stride[2]};
  TORCH_CHECK(g.T > 0 && g.H > 0 && g.W > 0 || g.N * g.C == 0,
              "rubiks_shift: T, H and W must be positive, got ", size);
  g.To = g.T > 0 ? out_size(g.T, g.sT) : 0;
  g.Ho = g.H > 0 ? out_size(g.H, g.sH) : 0;
  g.Wo = g.W > 0 ? out_size(g.W, g.sW) : 0;
  return g;
}

inline void check_shift(const at::Tensor& shift, int64_t C, const at::Tensor& like) {
  TORCH_CHECK(shift.dim() == 2 && shift.size(0) == 3 && shift.size(1) == C,
              "rubiks_shift: shift must be (3, C=", C, "), got ", shift.sizes());
  TORCH_CHECK(at::isFloatingType(shift.scalar_type()) && at::isFloatingType(like.scalar_type()),
              "rubiks_shift: x and shift must be floating point, got ", like.scalar_type(),
              " and ", shift.scalar_type());
  TORCH_CHECK(shift.device() == like.device(), "rubiks_shift: shift is on ", shift.device(),
              " but the features are on ", like.device(), "; move both to the same device");
}

// The output size of the call described by `g`.
inline std::vector<int64_t> output_size(const Geometry& g) { return {g.N, g.To, g.C, g.Ho, g.Wo}; }

inline Geometry forward_args(const at::Tensor& x, const at::Tensor& shift, at::IntArrayRef stride) {
  const Geometry g = make_geometry(x.sizes(), stride);
  check_shift(shift, g.C, x);
  return g;
}

inline Geometry grad_input_args(const at::Tensor& grad, const at::Tensor& shift,
                                at::IntArrayRef input_size, at::IntArrayRef stride) {
  const Geometry g = make_geometry(input_size, stride);
  check_shift(shift, g.C, grad);
  TORCH_CHECK(grad.sizes() == at::IntArrayRef(output_size(g)),
              "rubiks_shift_grad_input: grad_out has shape ", grad.sizes(),
              " but the output of an input of ", input_size, " is ",
              at::IntArrayRef(output_size(g)));
  return g;
}

inline Geometry grad_shift_args(const at::Tensor& grad, const at::Tensor& x,
                                const at::Tensor& shift, at::IntArrayRef stride) {
  const Geometry g = make_geometry(x.sizes(), stride);
  check_shift(shift, g.C, x);
  TORCH_CHECK(grad.sizes() == at::IntArrayRef(output_size(g)),
              "rubiks_shift_grad_shift: grad_out has shape ", grad.sizes(), ", expected ",
              at::IntArrayRef(output_size(g)));
  TORCH_CHECK(grad.scalar_type() == x.scalar_type(), "rubiks_shift_grad_shift: grad_out is ",
              grad.scalar_type(), " but x is ", x.scalar_type());
  return g;
}

// ---- memory layouts ----------------------------------------------------------------------------
// Two layouts of x (N, T, C, H, W) are native: contiguous (channels first, planes of H x W), and
// channels last, stored N, T, H, W, C: the 5-D view of a torch.channels_last (N*T, C, H, W)
// tensor, which is how the time-folded 2D backbones hold their features in that format. Results
// are allocated in the layout of the input, so a channels-last network stays channels last
// without copies. Any other strides are made contiguous first.

// Strictly channels last: for tensors where both layouts coincide (C == 1, or H == W == 1) the
// contiguous kernels run and produce the same memory.
inline bool is_channels_last(const at::Tensor& x) {
  return x.dim() == 5 && !x.is_contiguous() && x.permute({0, 1, 3, 4, 2}).is_contiguous();
}

// An empty (N, T, C, H, W) tensor in the given layout.
inline at::Tensor empty_in_layout(at::IntArrayRef size, const at::TensorOptions& options,
                                  bool channels_last) {
  if (!channels_last) return at::empty(size, options);
  return at::empty({size[0], size[1], size[3], size[4], size[2]}, options).permute({0, 1, 4, 2, 3});
}

// `t` in the given layout (no copy when it already is).
inline at::Tensor in_layout(const at::Tensor& t, bool channels_last) {
  if (!channels_last) return t.contiguous();
  return t.permute({0, 1, 3, 4, 2}).contiguous().permute({0, 1, 4, 2, 3});
}

// ---- fused inference ----------------------------------------------------------------------------
// What the forward applies to every value it reads, before interpolating: y = a[c] * x + b[c]
// (a folded inference BatchNorm; skipped when undefined), then max(y, 0) when `relu`. Out-of-range
// corners stay 0, as when the activation runs as its own op before the shift.
struct PreAct {
  at::Tensor scale, bias;  // (C,) or undefined
  bool relu = false;
  bool affine() const { return scale.defined(); }
  bool any() const { return relu || affine(); }
};

inline PreAct make_pre_act(const c10::optional<at::Tensor>& scale,
                           const c10::optional<at::Tensor>& bias, bool relu, int64_t C,
                           const at::Tensor& like) {
  PreAct pre;
  pre.relu = relu;
  const bool has_scale = scale.has_value() && scale->defined();
  const bool has_bias = bias.has_value() && bias->defined();
  TORCH_CHECK(has_scale == has_bias,
              "rubiks_shift_act: pass both scale and bias (a folded BatchNorm) or neither");
  if (has_scale) {
    for (const at::Tensor* t : {&*scale, &*bias}) {
      TORCH_CHECK(t->dim() == 1 && t->size(0) == C, "rubiks_shift_act: scale and bias must be (C=",
                  C, ",), got ", t->sizes());
      TORCH_CHECK(t->device() == like.device(), "rubiks_shift_act: scale/bias are on ",
                  t->device(), " but the features are on ", like.device());
    }
    const auto acc = like.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    pre.scale = scale->detach().to(acc).contiguous();
    pre.bias = bias->detach().to(acc).contiguous();
  }
  return pre;
}

}  // namespace rubiks
}  // namespace actionlab
