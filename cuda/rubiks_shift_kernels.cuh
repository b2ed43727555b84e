// RubiksShift CUDA kernels and their host-side launch logic, written once for two launchers:
// the real one in rubiks_shift_cuda.cu (nvcc, <<<>>> on the current stream) and the CPU
// emulation in tests/cuda_emulation/, which runs these exact kernels on host threads (blocks in
// turn, the threads of a block concurrently, with real barriers for __syncthreads and the warp
// shuffles) so their index math, grid-stride loops and block reductions are tested on machines
// without a GPU.
//
// Needs, before inclusion: the CUDA built-ins (blockIdx, threadIdx, blockDim, gridDim, dim3,
// __shfl_down_sync, __syncthreads, __shared__, __global__, ...).
//
// A launcher is any type with
//   int64_t sms() const;                         // streaming multiprocessors to fill
//   bool wide_index(int64_t extent) const;       // 64-bit indexing for tensors of this extent?
//   void operator()(kernel, dim3 grid, dim3 block, args...) const;  // launch and check
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include <algorithm>
#include <cstdint>

#include "rubiks_shift.h"
#include "rubiks_shift_args.h"

namespace actionlab {
namespace rubiks {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

// Sizes in the index type of a launch: 32-bit where every index fits (integer division is the
// costliest part of the index math), 64-bit otherwise.
template <typename index_t>
struct Dims {
  index_t N, T, C, H, W, To, Ho, Wo, sT, sH, sW;
  explicit Dims(const Geometry& g)
      : N(g.N), T(g.T), C(g.C), H(g.H), W(g.W), To(g.To), Ho(g.Ho), Wo(g.Wo), sT(g.sT),
        sH(g.sH), sW(g.sW) {}
};

// 32-bit indices where every index (+ a grid of slack) fits: integer division is the costliest
// part of the index math.
inline bool needs_wide_index(int64_t extent) { return extent >= (int64_t{1} << 30); }

// Calls f(int32_t{}) or f(int64_t{}).
template <typename F>
void with_index_type(bool wide, F&& f) {
  if (wide) {
    f(int64_t{});
  } else {
    f(int32_t{});
  }
}

template <typename acc_t>
__device__ __forceinline__ void load_taps(const acc_t* __restrict__ shift, int64_t C, int64_t c,
                                          bool quantize, AxisTaps<acc_t>& tt,
                                          AxisTaps<acc_t>& th, AxisTaps<acc_t>& tw) {
  tt = make_taps<acc_t>(shift[c], quantize);
  th = make_taps<acc_t>(shift[C + c], quantize);
  tw = make_taps<acc_t>(shift[2 * C + c], quantize);
}

// The two native layouts of an (N, T, C, H, W) tensor (see rubiks_shift_args.h): the flat index
// of a result element in memory order, and the offset of an element as plane + pixel.
struct ChannelsFirst {  // contiguous: planes of H x W per (n, t, c)
  template <typename index_t>
  static __device__ __forceinline__ void unravel(index_t idx, index_t T, index_t C, index_t H,
                                                 index_t W, index_t& n, index_t& t, index_t& c,
                                                 index_t& h, index_t& w) {
    w = idx % W;
    idx /= W;
    h = idx % H;
    idx /= H;
    c = idx % C;
    idx /= C;
    t = idx % T;
    n = idx / T;
  }
  static __device__ __forceinline__ int64_t plane(int64_t nt, int64_t c, int64_t C, int64_t H,
                                                  int64_t W) {
    return (nt * C + c) * H * W;
  }
  static __device__ __forceinline__ int64_t pixel(int64_t h, int64_t w, int64_t W, int64_t C) {
    return h * W + w;
  }
};

struct ChannelsLast {  // stored N, T, H, W, C: channels innermost
  template <typename index_t>
  static __device__ __forceinline__ void unravel(index_t idx, index_t T, index_t C, index_t H,
                                                 index_t W, index_t& n, index_t& t, index_t& c,
                                                 index_t& h, index_t& w) {
    c = idx % C;
    idx /= C;
    w = idx % W;
    idx /= W;
    h = idx % H;
    idx /= H;
    t = idx % T;
    n = idx / T;
  }
  static __device__ __forceinline__ int64_t plane(int64_t nt, int64_t c, int64_t C, int64_t H,
                                                  int64_t W) {
    return nt * H * W * C + c;
  }
  static __device__ __forceinline__ int64_t pixel(int64_t h, int64_t w, int64_t W, int64_t C) {
    return (h * W + w) * C;
  }
};

// The fused inference activation applied to every value the forward reads: y = a[c] x + b[c]
// when `scale` is given, then max(y, 0) when `relu` (uniform over a launch, so no divergence).
template <typename acc_t>
struct PreActArgs {
  const acc_t* scale;  // (C,) or nullptr
  const acc_t* bias;
  bool relu;
};

template <typename acc_t>
__device__ __forceinline__ acc_t pre_act(acc_t v, const PreActArgs<acc_t>& pre, acc_t a, acc_t b) {
  if (pre.scale != nullptr) v = a * v + b;
  if (pre.relu) v = v > acc_t(0) ? v : acc_t(0);
  return v;
}

// One thread per output element (in memory order of the layout, so writes coalesce); 8 gathers
// for interpolated shifts, 1 for quantised ones.
template <typename Layout, typename scalar_t, typename acc_t, typename index_t>
__global__ void forward_kernel(const scalar_t* __restrict__ x, const acc_t* __restrict__ shift,
                               scalar_t* __restrict__ out, Dims<index_t> g, bool quantize,
                               index_t total, PreActArgs<acc_t> pre) {
  for (index_t idx = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<index_t>(blockDim.x) * gridDim.x) {
    index_t n, to, c, ho, wo;
    Layout::unravel(idx, g.To, g.C, g.Ho, g.Wo, n, to, c, ho, wo);
    AxisTaps<acc_t> tt, th, tw;
    load_taps(shift, g.C, c, quantize, tt, th, tw);
    const acc_t a = pre.scale != nullptr ? pre.scale[c] : acc_t(1);
    const acc_t b = pre.scale != nullptr ? pre.bias[c] : acc_t(0);
    acc_t acc = acc_t(0);
#pragma unroll
    for (int i = 0; i < 3; ++i) {
      const int64_t ti = to * g.sT + tt.base + i;
      if (tt.v[i] == acc_t(0) || ti < 0 || ti >= g.T) continue;
      const scalar_t* plane = x + Layout::plane(static_cast<int64_t>(n) * g.T + ti, c, g.C, g.H, g.W);
#pragma unroll
      for (int j = 0; j < 3; ++j) {
        const int64_t hi = ho * g.sH + th.base + j;
        if (th.v[j] == acc_t(0) || hi < 0 || hi >= g.H) continue;
        const acc_t wth = tt.v[i] * th.v[j];
#pragma unroll
        for (int k = 0; k < 3; ++k) {
          const int64_t wi = wo * g.sW + tw.base + k;
          if (tw.v[k] == acc_t(0) || wi < 0 || wi >= g.W) continue;
          acc += wth * tw.v[k] * pre_act(static_cast<acc_t>(plane[Layout::pixel(hi, wi, g.W, g.C)]), pre, a, b);
        }
      }
    }
    out[idx] = static_cast<scalar_t>(acc);
  }
}

// Output index along an axis that reads input position `in` through slot `k`, or -1.
template <typename index_t>
__device__ __forceinline__ index_t source_of(index_t in, int64_t base, int k, index_t stride,
                                             index_t out_len) {
  const int64_t num64 = static_cast<int64_t>(in) - base - k;
  if (num64 < 0 || num64 >= static_cast<int64_t>(stride) * out_len) return index_t(-1);
  const index_t num = static_cast<index_t>(num64);
  if (stride == 1) return num;
  return num % stride == 0 ? num / stride : index_t(-1);
}

// One thread per input element: the exact adjoint as a gather (no atomics).
template <typename Layout, typename scalar_t, typename acc_t, typename index_t>
__global__ void grad_input_kernel(const scalar_t* __restrict__ grad,
                                  const acc_t* __restrict__ shift, scalar_t* __restrict__ gx,
                                  Dims<index_t> g, bool quantize, index_t total,
                                  PreActArgs<acc_t> /*unused: the forward signature*/) {
  for (index_t idx = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<index_t>(blockDim.x) * gridDim.x) {
    index_t n, ti, c, hi, wi;
    Layout::unravel(idx, g.T, g.C, g.H, g.W, n, ti, c, hi, wi);
    AxisTaps<acc_t> tt, th, tw;
    load_taps(shift, g.C, c, quantize, tt, th, tw);
    acc_t acc = acc_t(0);
#pragma unroll
    for (int i = 0; i < 3; ++i) {
      if (tt.v[i] == acc_t(0)) continue;
      const index_t to = source_of(ti, tt.base, i, g.sT, g.To);
      if (to < 0) continue;
      const scalar_t* plane = grad + Layout::plane(static_cast<int64_t>(n) * g.To + to, c, g.C, g.Ho, g.Wo);
#pragma unroll
      for (int j = 0; j < 3; ++j) {
        if (th.v[j] == acc_t(0)) continue;
        const index_t ho = source_of(hi, th.base, j, g.sH, g.Ho);
        if (ho < 0) continue;
        const acc_t wth = tt.v[i] * th.v[j];
#pragma unroll
        for (int k = 0; k < 3; ++k) {
          if (tw.v[k] == acc_t(0)) continue;
          const index_t wo = source_of(wi, tw.base, k, g.sW, g.Wo);
          if (wo < 0) continue;
          acc += wth * tw.v[k] * static_cast<acc_t>(plane[Layout::pixel(ho, wo, g.Wo, g.C)]);
        }
      }
    }
    gx[idx] = static_cast<scalar_t>(acc);
  }
}

template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// (d out / d s_T, d s_H, d s_W) at output (n, to, ho, wo) of channel c: the derivative weights
// (d) on one axis, the value weights (v) on the other two.
template <typename Layout, typename scalar_t, typename acc_t, typename index_t>
__device__ __forceinline__ void shift_derivatives(const scalar_t* __restrict__ x,
                                                  const Dims<index_t>& g, index_t n, index_t to,
                                                  index_t ho, index_t wo, index_t c,
                                                  const AxisTaps<acc_t>& tt,
                                                  const AxisTaps<acc_t>& th,
                                                  const AxisTaps<acc_t>& tw, acc_t& dt, acc_t& dh,
                                                  acc_t& dw) {
  dt = dh = dw = acc_t(0);
#pragma unroll
  for (int i = 0; i < 3; ++i) {
    const int64_t ti = to * g.sT + tt.base + i;
    if ((tt.v[i] == acc_t(0) && tt.d[i] == acc_t(0)) || ti < 0 || ti >= g.T) continue;
    const scalar_t* xp = x + Layout::plane(static_cast<int64_t>(n) * g.T + ti, c, g.C, g.H, g.W);
#pragma unroll
    for (int j = 0; j < 3; ++j) {
      const int64_t hi = ho * g.sH + th.base + j;
      const acc_t c_t = tt.d[i] * th.v[j], c_h = tt.v[i] * th.d[j], c_w = tt.v[i] * th.v[j];
      if ((c_t == acc_t(0) && c_h == acc_t(0) && c_w == acc_t(0)) || hi < 0 || hi >= g.H)
        continue;
#pragma unroll
      for (int k = 0; k < 3; ++k) {
        const int64_t wi = wo * g.sW + tw.base + k;
        if ((tw.v[k] == acc_t(0) && tw.d[k] == acc_t(0)) || wi < 0 || wi >= g.W) continue;
        const acc_t xv = static_cast<acc_t>(xp[Layout::pixel(hi, wi, g.W, g.C)]);
        dt += c_t * tw.v[k] * xv;
        dh += c_h * tw.v[k] * xv;
        dw += c_w * tw.d[k] * xv;
      }
    }
  }
}

// Channels first. Grid (blocks_per_channel, channel groups). A block works on one channel at a
// time, so every thread of a block uses the same taps (uniform branches). Each thread accumulates
// (g_T, g_H, g_W) over a grid-stride range of that channel's N*To*Ho*Wo outputs; the block
// reduces with warp shuffles and shared memory and writes one partial per (axis, c, block).
template <typename scalar_t, typename acc_t, typename index_t>
__global__ void __launch_bounds__(kThreads)
    grad_shift_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ x,
                      const acc_t* __restrict__ shift, acc_t* __restrict__ partial,
                      Dims<index_t> g) {
  __shared__ acc_t smem[3][kWarps];
  const index_t plane = g.Ho * g.Wo;
  const index_t per_channel = g.N * g.To * plane;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (index_t c = blockIdx.y; c < g.C; c += gridDim.y) {
    AxisTaps<acc_t> tt, th, tw;
    // Straight-through: a quantised shift gets the interpolation derivative at its real value.
    load_taps(shift, g.C, c, /*quantize=*/false, tt, th, tw);
    acc_t sum_t = 0, sum_h = 0, sum_w = 0;
    for (index_t e = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x;
         e < per_channel; e += static_cast<index_t>(blockDim.x) * gridDim.x) {
      const index_t nt = e / plane, pos = e % plane;
      const index_t ho = pos / g.Wo, wo = pos % g.Wo;
      const index_t to = nt % g.To, n = nt / g.To;
      const acc_t go =
          static_cast<acc_t>(grad[(static_cast<int64_t>(nt) * g.C + c) * plane + pos]);
      acc_t dt, dh, dw;
      shift_derivatives<ChannelsFirst>(x, g, n, to, ho, wo, c, tt, th, tw, dt, dh, dw);
      sum_t += go * dt;
      sum_h += go * dh;
      sum_w += go * dw;
    }
    sum_t = warp_sum(sum_t);
    sum_h = warp_sum(sum_h);
    sum_w = warp_sum(sum_w);
    if (lane == 0) {
      smem[0][warp] = sum_t;
      smem[1][warp] = sum_h;
      smem[2][warp] = sum_w;
    }
    __syncthreads();
    if (warp == 0) {
#pragma unroll
      for (int a = 0; a < 3; ++a) {
        acc_t v = lane < kWarps ? smem[a][lane] : acc_t(0);
        v = warp_sum(v);
        if (lane == 0) partial[(static_cast<int64_t>(a) * g.C + c) * gridDim.x + blockIdx.x] = v;
      }
    }
    __syncthreads();  // smem is reused for the next channel
  }
}

// Channels last. Grid (blocks over output positions, tiles of 32 channels): lane l of every warp
// owns channel 32 * blockIdx.y + l, so a warp reads 32 consecutive channels of one position
// (coalesced), and warp w of the block takes positions w, w + kWarps, ... of its grid-stride
// range. The kWarps sums of a channel are reduced in shared memory into one partial per
// (axis, c, block).
template <typename scalar_t, typename acc_t, typename index_t>
__global__ void __launch_bounds__(kThreads)
    grad_shift_cl_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ x,
                         const acc_t* __restrict__ shift, acc_t* __restrict__ partial,
                         Dims<index_t> g) {
  __shared__ acc_t smem[3][kWarps][32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const index_t c = static_cast<index_t>(blockIdx.y) * 32 + lane;
  const bool active = c < g.C;
  acc_t sum_t = 0, sum_h = 0, sum_w = 0;
  if (active) {
    AxisTaps<acc_t> tt, th, tw;
    load_taps(shift, g.C, c, /*quantize=*/false, tt, th, tw);  // straight-through, as above
    const index_t positions = g.N * g.To * g.Ho * g.Wo;
    for (index_t e = static_cast<index_t>(blockIdx.x) * kWarps + warp; e < positions;
         e += static_cast<index_t>(gridDim.x) * kWarps) {
      index_t rest = e;
      const index_t wo = rest % g.Wo;
      rest /= g.Wo;
      const index_t ho = rest % g.Ho;
      rest /= g.Ho;
      const index_t to = rest % g.To, n = rest / g.To;
      const acc_t go = static_cast<acc_t>(grad[static_cast<int64_t>(e) * g.C + c]);
      acc_t dt, dh, dw;
      shift_derivatives<ChannelsLast>(x, g, n, to, ho, wo, c, tt, th, tw, dt, dh, dw);
      sum_t += go * dt;
      sum_h += go * dh;
      sum_w += go * dw;
    }
  }
  smem[0][warp][lane] = sum_t;
  smem[1][warp][lane] = sum_h;
  smem[2][warp][lane] = sum_w;
  __syncthreads();
  if (warp == 0 && active) {
#pragma unroll
    for (int a = 0; a < 3; ++a) {
      acc_t v = 0;
      for (int w = 0; w < kWarps; ++w) v += smem[a][w][lane];
      partial[(static_cast<int64_t>(a) * g.C + c) * gridDim.x + blockIdx.x] = v;
    }
  }
}

// ---- host side ------------------------------------------------------------------------------

// One block of kThreads per kThreads elements, at most 32 blocks per SM (grid-stride beyond).
inline int64_t pointwise_blocks(int64_t total, int64_t sms) {
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  return std::max<int64_t>(1, std::min<int64_t>(blocks, sms * 32));
}

inline at::Tensor shift_for_kernel(const at::Tensor& shift, at::ScalarType feature_type) {
  const auto acc = feature_type == at::kDouble ? at::kDouble : at::kFloat;
  return shift.detach().to(acc).contiguous();
}

// Forward (adjoint = false: src is x, the result has the output size) or input gradient
// (adjoint = true: src is grad_out, the result has the input size); both one thread per element
// of the result, which is allocated in the layout of src.
template <typename Launcher>
at::Tensor launch_pointwise(const Launcher& launch, const at::Tensor& src_,
                            const at::Tensor& shift, const Geometry& g,
                            at::IntArrayRef result_size, bool quantize, bool adjoint,
                            const PreAct& pre = PreAct{},
                            c10::optional<bool> layout = c10::nullopt) {
  const bool channels_last = layout.value_or(is_channels_last(src_));
  auto src = in_layout(src_, channels_last);
  auto result = empty_in_layout(result_size, src.options(), channels_last);
  const int64_t total = result.numel();
  if (total == 0) return result;
  auto s = shift_for_kernel(shift, src.scalar_type());
  const int64_t blocks = pointwise_blocks(total, launch.sms());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, src.scalar_type(), "rubiks_shift_cuda",
                                  [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const PreActArgs<acc_t> pre_args{pre.affine() ? pre.scale.template data_ptr<acc_t>() : nullptr,
                                     pre.affine() ? pre.bias.template data_ptr<acc_t>() : nullptr,
                                     pre.relu};
    with_index_type(launch.wide_index(std::max(total, src.numel())), [&](auto index_tag) {
      using index_t = decltype(index_tag);
      auto run = [&](auto kernel) {
        launch(kernel, dim3(blocks), dim3(kThreads), src.template data_ptr<scalar_t>(),
               s.template data_ptr<acc_t>(), result.template data_ptr<scalar_t>(),
               Dims<index_t>(g), quantize, static_cast<index_t>(total), pre_args);
      };
      if (channels_last) {
        adjoint ? run(grad_input_kernel<ChannelsLast, scalar_t, acc_t, index_t>)
                : run(forward_kernel<ChannelsLast, scalar_t, acc_t, index_t>);
      } else {
        adjoint ? run(grad_input_kernel<ChannelsFirst, scalar_t, acc_t, index_t>)
                : run(forward_kernel<ChannelsFirst, scalar_t, acc_t, index_t>);
      }
    });
  });
  return result;
}

template <typename Launcher>
at::Tensor forward_with(const Launcher& launch, const at::Tensor& x, const at::Tensor& shift,
                        at::IntArrayRef stride, bool quantize) {
  const Geometry g = forward_args(x, shift, stride);
  return launch_pointwise(launch, x, shift, g, output_size(g), quantize, false);
}

// Inference: the forward of act(x) (rubiks_shift_act).
template <typename Launcher>
at::Tensor forward_act_with(const Launcher& launch, const at::Tensor& x, const at::Tensor& shift,
                            at::IntArrayRef stride, bool quantize,
                            const c10::optional<at::Tensor>& scale,
                            const c10::optional<at::Tensor>& bias, bool relu) {
  const Geometry g = forward_args(x, shift, stride);
  const PreAct pre = make_pre_act(scale, bias, relu, g.C, x);
  return launch_pointwise(launch, x, shift, g, output_size(g), quantize, false, pre);
}

// In the layout `channels_last` (the forward input's; default: the upstream gradient's).
template <typename Launcher>
at::Tensor grad_input_with(const Launcher& launch, const at::Tensor& grad,
                           const at::Tensor& shift, at::IntArrayRef input_size,
                           at::IntArrayRef stride, bool quantize,
                           c10::optional<bool> channels_last = c10::nullopt) {
  const Geometry g = grad_input_args(grad, shift, input_size, stride);
  return launch_pointwise(launch, grad, shift, g, input_size, quantize, true, PreAct{}, channels_last);
}

// Straight-through when quantising: the gradient at the unrounded shifts, so no flag here. Runs
// in the layout of x (the upstream gradient is brought to it if it differs).
template <typename Launcher>
at::Tensor grad_shift_with(const Launcher& launch, const at::Tensor& grad_, const at::Tensor& x_,
                           const at::Tensor& shift, at::IntArrayRef stride) {
  const Geometry g = grad_shift_args(grad_, x_, shift, stride);
  const bool channels_last = is_channels_last(x_);
  auto grad = in_layout(grad_, channels_last);
  auto x = in_layout(x_, channels_last);
  const int64_t per_channel = g.N * g.To * g.Ho * g.Wo;
  if (per_channel == 0 || g.C == 0) return at::zeros_like(shift);
  auto s = shift_for_kernel(shift, x.scalar_type());
  // Enough blocks to fill the GPU about 4 times over, at least 1 per channel (channels first)
  // or per tile of 32 channels (channels last).
  const int64_t by = channels_last ? (g.C + 31) / 32 : std::min<int64_t>(g.C, 65535);
  TORCH_CHECK(by <= 65535, "rubiks_shift: too many channels (", g.C, ") for one launch");
  const int64_t per_block = channels_last ? kWarps : kThreads;
  const int64_t bx = std::max<int64_t>(
      1, std::min<int64_t>((per_channel + per_block - 1) / per_block, (4 * launch.sms() + by - 1) / by));
  auto partial = at::empty({3, g.C, bx}, s.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                  "rubiks_shift_grad_shift_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    with_index_type(launch.wide_index(std::max(grad.numel(), x.numel())), [&](auto index_tag) {
      using index_t = decltype(index_tag);
      const auto kernel = channels_last ? grad_shift_cl_kernel<scalar_t, acc_t, index_t>
                                        : grad_shift_kernel<scalar_t, acc_t, index_t>;
      launch(kernel, dim3(bx, by), dim3(kThreads), grad.template data_ptr<scalar_t>(),
             x.template data_ptr<scalar_t>(), s.template data_ptr<acc_t>(),
             partial.template data_ptr<acc_t>(), Dims<index_t>(g));
    });
  });
  return partial.sum(-1).to(shift.scalar_type());
}

}  // namespace rubiks
}  // namespace actionlab
