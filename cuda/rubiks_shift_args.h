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

}  // namespace rubiks
}  // namespace actionlab
