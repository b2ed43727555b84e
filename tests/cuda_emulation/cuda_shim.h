// Just enough of CUDA's execution model, on host threads, to run actionlab's kernels unchanged.
//
// launch() runs the blocks of a grid one after another and the threads of each block
// concurrently (one std::thread per thread of a block), so __syncthreads() is a real barrier of the block, a warp
// shuffle is a real exchange among the 32 threads of a warp, and a `__shared__` array (a static
// local here) is shared by exactly one running block. Warps do not run in lock step: code that
// relies on implicit warp synchrony would race here, as it may on Volta and newer GPUs.
// Limits: 1D blocks whose size is a multiple of 32; full-mask shuffles only.
#pragma once

#include <barrier>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1)
      : x(x_), y(y_), z(z_) {}
};

namespace cuda_emulation {

struct Warp {
  std::barrier<> sync{32};
  double lanes[32];  // exact for the float and double values shuffled by the kernels
};

struct Block {
  std::barrier<> sync;
  std::unique_ptr<Warp[]> warps;
  explicit Block(unsigned int threads) : sync(threads), warps(new Warp[threads / 32]) {}
};

struct Thread {
  dim3 block_idx, thread_idx;
  Block* block = nullptr;
};

inline thread_local Thread self;
inline dim3 grid_dim, block_dim;

template <typename Kernel, typename... Args>
void launch(Kernel kernel, dim3 grid, dim3 block, Args... args) {
  if (block.x == 0 || block.x % 32 != 0 || block.y != 1 || block.z != 1) {
    throw std::invalid_argument("cuda_emulation: blocks must be 1D with a multiple of 32 threads");
  }
  grid_dim = grid;
  block_dim = block;
  // One host thread per thread of a block, reused for every block of the grid; the barrier at
  // the end of a block keeps blocks from overlapping (they share the `__shared__` statics).
  Block state(block.x);
  std::vector<std::thread> threads;
  threads.reserve(block.x);
  for (unsigned int t = 0; t < block.x; ++t) {
    threads.emplace_back([&, t] {
      for (unsigned int bz = 0; bz < grid.z; ++bz) {
        for (unsigned int by = 0; by < grid.y; ++by) {
          for (unsigned int bx = 0; bx < grid.x; ++bx) {
            self = Thread{dim3(bx, by, bz), dim3(t), &state};
            kernel(args...);
            state.sync.arrive_and_wait();
          }
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
}

}  // namespace cuda_emulation

#define blockIdx (::cuda_emulation::self.block_idx)
#define threadIdx (::cuda_emulation::self.thread_idx)
#define blockDim (::cuda_emulation::block_dim)
#define gridDim (::cuda_emulation::grid_dim)
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

inline void __syncthreads() { ::cuda_emulation::self.block->sync.arrive_and_wait(); }

template <typename T>
T __shfl_down_sync(unsigned int mask, T value, int delta) {
  if (mask != 0xffffffffu) throw std::invalid_argument("cuda_emulation: full-mask shuffles only");
  auto& self = ::cuda_emulation::self;
  auto& warp = self.block->warps[self.thread_idx.x / 32];
  const unsigned int lane = self.thread_idx.x % 32;
  warp.lanes[lane] = static_cast<double>(value);
  warp.sync.arrive_and_wait();  // every lane has published
  const T result = lane + delta < 32 ? static_cast<T>(warp.lanes[lane + delta]) : value;
  warp.sync.arrive_and_wait();  // every lane has read before the next shuffle overwrites
  return result;
}
