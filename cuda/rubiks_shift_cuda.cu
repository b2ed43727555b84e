// RubiksShift CUDA kernels (forward, input gradient, shift gradient) for actionlab::rubiks_shift.
//
// The kernels and the launch logic are in rubiks_shift_kernels.cuh (shared with the CPU emulation
// that tests them without a GPU); this file adds the CUDA launcher, the device checks and the
// registration.
//
// Differences from the released kernel (StanfordVL/RubiksNet; docs/operators.md):
// launches on the current stream under a CUDAGuard of the input's device, 64-bit indexing,
// float/double/half/bfloat16 with float accumulation (double for double), no THC, and the
// shift gradient reduced per channel in registers, warp shuffles and shared memory into one
// partial per block, then summed in a fixed order (deterministic, no atomics at all); both
// layouts (contiguous and channels last, results in the layout of the input); the fused
// inference forward rubiks_shift_act.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include "rubiks_shift_kernels.cuh"

namespace actionlab {
namespace rubiks {
namespace {

// Launches on the current stream of the current device (set by the CUDAGuard of each entry).
struct CudaLauncher {
  // Streaming multiprocessors of the current device (only c10 headers: no cuBLAS needed).
  int64_t sms() const {
    int sms = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount,
                                          c10::cuda::current_device()));
    return sms;
  }
  bool wide_index(int64_t extent) const { return needs_wide_index(extent); }
  template <typename Kernel, typename... Args>
  void operator()(Kernel kernel, dim3 grid, dim3 block, Args... args) const {
    kernel<<<grid, block, 0, c10::cuda::getCurrentCUDAStream()>>>(args...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

void check_on_cuda(const at::Tensor& t, const at::Tensor& shift) {
  TORCH_CHECK(t.is_cuda() && shift.is_cuda() && t.device() == shift.device(),
              "rubiks_shift: features (", t.device(), ") and shift (", shift.device(),
              ") must be on the same CUDA device");
}

at::Tensor rubiks_shift_cuda(const at::Tensor& x, const at::Tensor& shift, at::IntArrayRef stride,
                             bool quantize) {
  check_on_cuda(x, shift);
  const c10::cuda::CUDAGuard guard(x.device());
  return forward_with(CudaLauncher{}, x, shift, stride, quantize);
}

at::Tensor rubiks_shift_act_cuda(const at::Tensor& x, const at::Tensor& shift,
                                 at::IntArrayRef stride, bool quantize,
                                 const c10::optional<at::Tensor>& scale,
                                 const c10::optional<at::Tensor>& bias, bool relu) {
  check_on_cuda(x, shift);
  const c10::cuda::CUDAGuard guard(x.device());
  return forward_act_with(CudaLauncher{}, x, shift, stride, quantize, scale, bias, relu);
}

at::Tensor rubiks_shift_grad_input_cuda(const at::Tensor& grad, const at::Tensor& shift,
                                        at::IntArrayRef input_size, at::IntArrayRef stride,
                                        bool quantize, c10::optional<bool> channels_last) {
  check_on_cuda(grad, shift);
  const c10::cuda::CUDAGuard guard(grad.device());
  return grad_input_with(CudaLauncher{}, grad, shift, input_size, stride, quantize, channels_last);
}

at::Tensor rubiks_shift_grad_shift_cuda(const at::Tensor& grad, const at::Tensor& x,
                                        const at::Tensor& shift, at::IntArrayRef stride,
                                        bool /*quantize: straight-through, unused*/) {
  check_on_cuda(x, shift);
  const c10::cuda::CUDAGuard guard(x.device());
  return grad_shift_with(CudaLauncher{}, grad, x, shift, stride);
}

}  // namespace
}  // namespace rubiks
}  // namespace actionlab

TORCH_LIBRARY_IMPL(actionlab, CUDA, m) {
  m.impl("rubiks_shift", &actionlab::rubiks::rubiks_shift_cuda);
  m.impl("rubiks_shift_grad_input", &actionlab::rubiks::rubiks_shift_grad_input_cuda);
  m.impl("rubiks_shift_grad_shift", &actionlab::rubiks::rubiks_shift_grad_shift_cuda);
  m.impl("rubiks_shift_act", &actionlab::rubiks::rubiks_shift_act_cuda);
}
