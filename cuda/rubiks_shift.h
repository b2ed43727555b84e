// RubiksShift (Fan et al., ECCV 2020): shared definitions of the CPU and CUDA kernels.
//
// Layout: x (N, T, C, H, W) contiguous, shift (3, C) with rows (T, H, W), stride (sT, sH, sW).
// out[n, t, c, h, w] = trilinear interpolation of x[n, :, c, :, :] at
// (t * sT + s_T[c], h * sH + s_H[c], w * sW + s_W[c]), every corner zero-padded on its own.
//
// Per channel and axis the op is described by three "slots" at offsets base + {0, 1, 2} with
// base = floor(s) - 1:
//   value weights v:      (0, 1 - r, r) interpolated, or one-hot at floor(s + 0.5) quantised;
//   derivative weights d: (0, -1, 1) inside a cell, or (-0.5, 0, 0.5) at an exactly integer
//                         shift (the central difference of the released 2D kernel, not the
//                         released 3D kernel's variant; docs/operators.md).
// The forward and the input gradient use v only; the shift gradient of axis a uses d on a and
// v on the others. With quantisation the forward and the input gradient use the rounded shifts
// while the shift gradient is the derivative of the interpolation at the unrounded shifts
// (a straight-through estimator, as the released kernel, which ignores `quantize` there).
#pragma once

#include <cmath>
#include <cstdint>

#include <c10/macros/Macros.h>

#ifdef __CUDACC__
#define RS_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define RS_HOST_DEVICE inline
#endif

namespace actionlab {
namespace rubiks {

template <typename acc_t>
struct AxisTaps {
  int64_t base;  // offset of slot 0, i.e. floor(s) - 1
  acc_t v[3];
  acc_t d[3];
};

template <typename acc_t>
RS_HOST_DEVICE AxisTaps<acc_t> make_taps(acc_t s, bool quantize) {
  AxisTaps<acc_t> t;
  const acc_t f = ::floor(s);
  const acc_t r = s - f;
  t.base = static_cast<int64_t>(f) - 1;
  for (int i = 0; i < 3; ++i) {
    t.v[i] = acc_t(0);
    t.d[i] = acc_t(0);
  }
  if (quantize) {
    // Same rounding as the reference (floor(s + 0.5)): q is floor(s) or floor(s) + 1.
    const int64_t q = static_cast<int64_t>(::floor(s + acc_t(0.5)));
    if (q == t.base + 1) {  // constant indices keep the taps in registers on GPUs
      t.v[1] = acc_t(1);
    } else {
      t.v[2] = acc_t(1);
    }
  } else {
    t.v[1] = acc_t(1) - r;
    t.v[2] = r;
  }
  if (r == acc_t(0)) {
    t.d[0] = acc_t(-0.5);
    t.d[2] = acc_t(0.5);
  } else {
    t.d[1] = acc_t(-1);
    t.d[2] = acc_t(1);
  }
  return t;
}

// Output length of an axis after the 1x1-conv-like subsampling.
RS_HOST_DEVICE int64_t out_size(int64_t length, int64_t stride) {
  return (length - 1) / stride + 1;
}

// Floor division for a possibly negative numerator and a positive denominator.
RS_HOST_DEVICE int64_t floor_div(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (q * b > a) ? q - 1 : q;
}

// Range [lo, hi) of output positions o with 0 <= o * stride + offset < in_len, o < out_len.
RS_HOST_DEVICE void valid_range(int64_t out_len, int64_t in_len, int64_t stride, int64_t offset,
                                int64_t* lo, int64_t* hi) {
  int64_t l = -floor_div(offset, stride);  // ceil(-offset / stride)
  int64_t h = floor_div(in_len - 1 - offset, stride) + 1;
  *lo = l < 0 ? 0 : l;
  *hi = h > out_len ? out_len : h;
  if (*hi < *lo) *hi = *lo;
}

}  // namespace rubiks
}  // namespace actionlab
