// The RubiksShift CUDA kernels and launch logic (cuda/rubiks_shift_kernels.cuh), compiled for the
// host on top of cuda_shim.h, as a Python module for tests/test_rubiks_shift_cuda_emulated.py.
// Torch's headers first, so that the shim's CUDA keywords (plain macros) never reach them.
#include <torch/extension.h>

#include "cuda_shim.h"
#include "rubiks_shift_kernels.cuh"

namespace {

// `sms` emulated multiprocessors (small: grids then need grid-stride loops); `wide` forces the
// 64-bit index path that real tensors only take past 2^30 elements.
struct EmulatedLauncher {
  int64_t sm_count;
  bool wide;
  int64_t sms() const { return sm_count; }
  bool wide_index(int64_t extent) const {
    return wide || actionlab::rubiks::needs_wide_index(extent);
  }
  template <typename Kernel, typename... Args>
  void operator()(Kernel kernel, dim3 grid, dim3 block, Args... args) const {
    cuda_emulation::launch(kernel, grid, block, args...);
  }
};

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  namespace rs = actionlab::rubiks;
  m.def("forward", [](const at::Tensor& x, const at::Tensor& shift, std::vector<int64_t> stride,
                      bool quantize, int64_t sms, bool wide) {
    return rs::forward_with(EmulatedLauncher{sms, wide}, x, shift, stride, quantize);
  });
  m.def("forward_act", [](const at::Tensor& x, const at::Tensor& shift, std::vector<int64_t> stride,
                          bool quantize, c10::optional<at::Tensor> scale,
                          c10::optional<at::Tensor> bias, bool relu, int64_t sms, bool wide) {
    return rs::forward_act_with(EmulatedLauncher{sms, wide}, x, shift, stride, quantize, scale,
                                bias, relu);
  });
  m.def("grad_input", [](const at::Tensor& grad, const at::Tensor& shift,
                         std::vector<int64_t> input_size, std::vector<int64_t> stride,
                         bool quantize, int64_t sms, bool wide, c10::optional<bool> channels_last) {
    return rs::grad_input_with(EmulatedLauncher{sms, wide}, grad, shift, input_size, stride,
                               quantize, channels_last);
  });
  m.def("grad_shift", [](const at::Tensor& grad, const at::Tensor& x, const at::Tensor& shift,
                         std::vector<int64_t> stride, int64_t sms, bool wide) {
    return rs::grad_shift_with(EmulatedLauncher{sms, wide}, grad, x, shift, stride);
  });
}
