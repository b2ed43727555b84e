// RubiksShift CPU kernels: what the channels-first kernels (rubiks_shift.cpp) and the
// channels-last ones (rubiks_shift_channels_last.cpp) share.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "rubiks_shift.h"
#include "rubiks_shift_args.h"

namespace actionlab {
namespace rubiks {

template <typename acc_t>
struct ChannelTaps {
  AxisTaps<acc_t> t, h, w;
};

template <typename acc_t>
std::vector<ChannelTaps<acc_t>> channel_taps(const at::Tensor& shift, bool quantize) {
  const at::Tensor s =
      shift.detach().to(at::kCPU, c10::CppTypeToScalarType<acc_t>::value).contiguous();
  const acc_t* p = s.template data_ptr<acc_t>();
  const int64_t C = s.size(1);
  std::vector<ChannelTaps<acc_t>> taps(C);
  for (int64_t c = 0; c < C; ++c)
    taps[c] = {make_taps<acc_t>(p[c], quantize), make_taps<acc_t>(p[C + c], quantize),
               make_taps<acc_t>(p[2 * C + c], quantize)};
  return taps;
}

// Tasks per parallel_for chunk: about 16K elements of work each.
inline int64_t grain_for(int64_t plane) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(plane, 1));
}

// Per-channel scale and bias (fp32/fp64, contiguous) of the fused inference forward, or empty.
template <typename acc_t>
std::vector<acc_t> channel_vector(const c10::optional<at::Tensor>& t, int64_t C) {
  if (!t.has_value() || !t->defined()) return {};
  const at::Tensor v = t->detach().to(at::kCPU, c10::CppTypeToScalarType<acc_t>::value).contiguous();
  const acc_t* p = v.template data_ptr<acc_t>();
  return std::vector<acc_t>(p, p + C);
}

// Channels-last entry points; x, grad and the results are (N, T, C, H, W) views stored as
// N, T, H, W, C. `pre` is applied to every input value the forward reads (fused inference).
at::Tensor forward_channels_last_cpu(const at::Tensor& x, const at::Tensor& shift,
                                     const Geometry& g, bool quantize, const PreAct& pre);
at::Tensor grad_input_channels_last_cpu(const at::Tensor& grad, const at::Tensor& shift,
                                        const Geometry& g, bool quantize);
at::Tensor grad_shift_channels_last_cpu(const at::Tensor& grad, const at::Tensor& x,
                                        const at::Tensor& shift, const Geometry& g);

}  // namespace rubiks
}  // namespace actionlab
