// Host emulation of the block-level CUDA features the mmvitmix kernels use,
// so that common/cuda/*_kernel.cuh compile as C++ and run on the CPU: every
// thread of a block is a std::thread, __syncthreads is a std::barrier,
// __shared__ variables are function statics (blocks run one after another),
// dynamic shared memory is one buffer filled with NaN bytes before each
// block so that reads of never-written shared memory show up as NaN.
// Warp-level intrinsics are deliberately not provided: the kernels must not
// use them. This checks indexing, tiling and barriers, not GPU timing.
#pragma once

#include <barrier>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

namespace mmvitmix_emulation {

struct Dim3 {
  unsigned x = 0, y = 0, z = 0;
};

inline thread_local Dim3 thread_idx;
inline thread_local Dim3 block_idx;
inline Dim3 block_dim;
inline Dim3 grid_dim;
inline std::barrier<>* block_barrier = nullptr;
inline std::vector<unsigned char> dynamic_smem;
inline std::mutex atomic_mutex;

template <typename T>
T* dynamic_shared() {
  return reinterpret_cast<T*>(dynamic_smem.data());
}

template <typename T>
T atomic_add(T* address, T value) {
  std::lock_guard<std::mutex> lock(atomic_mutex);
  const T old = *address;
  *address = old + value;
  return old;
}

// kernel<<<blocks, threads, smem_bytes>>>(args...), block after block
template <typename Kernel, typename... Args>
void launch(Kernel kernel, int64_t blocks, int threads, int64_t smem_bytes,
            const Args&... args) {
  block_dim = Dim3{static_cast<unsigned>(threads), 1, 1};
  grid_dim = Dim3{static_cast<unsigned>(blocks), 1, 1};
  for (int64_t b = 0; b < blocks; ++b) {
    dynamic_smem.assign(static_cast<size_t>(smem_bytes) + 16, 0xFF);
    std::barrier<> barrier(threads);
    block_barrier = &barrier;
    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        thread_idx = Dim3{static_cast<unsigned>(t), 0, 0};
        block_idx = Dim3{static_cast<unsigned>(b), 0, 0};
        kernel(args...);
      });
    }
    for (auto& th : pool) th.join();
    block_barrier = nullptr;
  }
}

}  // namespace mmvitmix_emulation

#define threadIdx (::mmvitmix_emulation::thread_idx)
#define blockIdx (::mmvitmix_emulation::block_idx)
#define blockDim (::mmvitmix_emulation::block_dim)
#define gridDim (::mmvitmix_emulation::grid_dim)
#define __syncthreads() (::mmvitmix_emulation::block_barrier->arrive_and_wait())
#define __shared__ static
#define __launch_bounds__(...)
#define atomicAdd(address, value) \
  (::mmvitmix_emulation::atomic_add((address), (value)))
