// CPU emulation of the CUDA C subset the kernels in this folder use, so the same .cu sources run on a
// machine without a GPU (tests, `nano-doctor`). Compiled with g++ -std=c++20 -pthread, included before
// the kernel source (-include cuda_emu.h); yolo_nano/runtime/kernel_emu.py builds and loads it.
//
// Semantics: the blocks of a grid run one after another. A kernel declared with __syncthreads runs one
// std::thread per CUDA thread; those threads meet at a std::barrier for __syncthreads and again at the
// end of every block, so `__shared__` (a function-local static) is per block. A kernel declared without
// runs its threads one after another on the calling thread (any order is a valid CUDA schedule without
// block synchronisation), and __syncthreads in it is an error, not a silent race. Atomics are the GCC
// __atomic builtins. Launches are serialised (one grid at a time, like one stream). There are no warps:
// warp intrinsics are not provided, so a kernel using one does not compile here.
#pragma once

#include <barrier>
#include <atomic>
#include <memory>
#include <semaphore>
#include <functional>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static
#define __launch_bounds__(...)

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace cuda_emu {
inline thread_local dim3 thread_idx;
inline thread_local dim3 block_idx;
inline dim3 block_dim;
inline dim3 grid_dim;
inline std::barrier<>* block_barrier = nullptr;  // null while a kernel without __syncthreads runs
inline std::mutex launch_mutex;
inline thread_local std::string last_error;

struct SyncNotDeclared : std::logic_error {
    SyncNotDeclared() : std::logic_error("__syncthreads in a kernel launched as not synchronising") {}
};
}  // namespace cuda_emu

#define threadIdx (cuda_emu::thread_idx)
#define blockIdx (cuda_emu::block_idx)
#define blockDim (cuda_emu::block_dim)
#define gridDim (cuda_emu::grid_dim)

inline void __syncthreads() {
    if (cuda_emu::block_barrier == nullptr) throw cuda_emu::SyncNotDeclared();
    cuda_emu::block_barrier->arrive_and_wait();
}

inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
inline int atomicCAS(int* p, int expected, int desired) {
    __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return expected;
}

inline unsigned __float_as_uint(float f) {
    unsigned u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}
inline float __uint_as_float(unsigned u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}
inline float __expf(float x) { return ::expf(x); }
// exp, fmin, fminf, fmaxf, floorf: the C library's, as in CUDA device code.

namespace cuda_emu {

// The threads of synchronising kernels: kept alive between launches (creating up to 1024 threads per
// launch would dominate the emulation's time). run(n, job) runs job(0..n-1) on n of them and waits.
class WorkerPool {
  public:
    void run(unsigned n, const std::function<void(unsigned)>& job) {
        while (workers_.size() < n) {
            workers_.push_back(std::make_unique<std::binary_semaphore>(0));
            std::thread([this, i = unsigned(workers_.size() - 1), go = workers_.back().get()] { loop(i, go); }).detach();
        }
        job_ = &job;
        remaining_.store(n);
        for (unsigned i = 0; i < n; ++i) workers_[i]->release();  // wake exactly the n needed
        done_.acquire();
        job_ = nullptr;
    }

  private:
    void loop(unsigned i, std::binary_semaphore* go) {
        for (;;) {
            go->acquire();
            (*job_)(i);
            if (remaining_.fetch_sub(1) == 1) done_.release();
        }
    }
    std::vector<std::unique_ptr<std::binary_semaphore>> workers_;  // grown under launch_mutex
    const std::function<void(unsigned)>* job_ = nullptr;
    std::atomic<unsigned> remaining_{0};
    std::binary_semaphore done_{0};
};

inline WorkerPool& worker_pool() {
    static WorkerPool* pool = new WorkerPool();  // never destroyed: its detached threads outlive main
    return *pool;
}

// Run `body` for every thread of every block of the grid. Returns 0, or 1 with last_error set.
template <class Body>
int run_grid(dim3 grid, dim3 block, bool syncs, Body&& body) {
    std::lock_guard<std::mutex> guard(launch_mutex);
    const unsigned long long threads = 1ull * block.x * block.y * block.z;
    const unsigned long long blocks = 1ull * grid.x * grid.y * grid.z;
    if (threads == 0 || threads > 1024 || block.z > 64 || blocks == 0 || grid.y > 65535 || grid.z > 65535) {
        last_error = "invalid launch configuration (CUDA_ERROR_INVALID_VALUE): grid " +
                     std::to_string(grid.x) + "x" + std::to_string(grid.y) + "x" + std::to_string(grid.z) +
                     ", block " + std::to_string(block.x) + "x" + std::to_string(block.y) + "x" +
                     std::to_string(block.z);
        return 1;
    }
    grid_dim = grid;
    block_dim = block;
    auto set_block = [&](unsigned long long b) {
        block_idx = dim3(unsigned(b % grid.x), unsigned(b / grid.x % grid.y), unsigned(b / grid.x / grid.y));
    };
    auto set_thread = [&](unsigned long long t) {
        thread_idx = dim3(unsigned(t % block.x), unsigned(t / block.x % block.y), unsigned(t / block.x / block.y));
    };
    try {
        if (!syncs) {
            block_barrier = nullptr;
            for (unsigned long long b = 0; b < blocks; ++b) {
                set_block(b);
                for (unsigned long long t = 0; t < threads; ++t) {
                    set_thread(t);
                    body();
                }
            }
            return 0;
        }
        std::barrier<> barrier(static_cast<std::ptrdiff_t>(threads));
        block_barrier = &barrier;
        std::vector<std::exception_ptr> errors(threads);
        worker_pool().run(unsigned(threads), [&](unsigned t) {
            set_thread(t);
            for (unsigned long long b = 0; b < blocks; ++b) {
                set_block(b);
                try {
                    body();
                } catch (...) {
                    errors[t] = std::current_exception();
                }
                barrier.arrive_and_wait();  // the block ends: its shared memory may be reused
            }
        });
        block_barrier = nullptr;
        for (auto& e : errors)
            if (e) std::rethrow_exception(e);
    } catch (const std::exception& e) {
        block_barrier = nullptr;
        last_error = e.what();
        return 1;
    }
    return 0;
}

// cuLaunchKernel's convention: params[i] points at the value of the kernel's i-th argument.
template <class... A, std::size_t... I>
void call_kernel(void (*kernel)(A...), void** params, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(params[I])...);
}

template <class... A>
int launch(void (*kernel)(A...), dim3 grid, dim3 block, bool syncs, void** params) {
    return run_grid(grid, block, syncs, [&] { call_kernel(kernel, params, std::index_sequence_for<A...>{}); });
}

}  // namespace cuda_emu

// Each emulated translation unit exports its kernels with this: int emu_launch_<name>(...) returns 0 or
// 1 (then emu_last_error() says why).
#define CUDA_EMU_EXPORT(name, syncs)                                                                    \
    extern "C" int emu_launch_##name(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,   \
                                     unsigned bz, void** params) {                                     \
        return cuda_emu::launch(name, dim3(gx, gy, gz), dim3(bx, by, bz), syncs, params);               \
    }

#define CUDA_EMU_ERROR_EXPORT \
    extern "C" const char* emu_last_error() { return cuda_emu::last_error.c_str(); }
