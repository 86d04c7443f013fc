// headcap's own parallel loops for its C++ kernels (gauss_raster, mesh_raster), instead of
// OpenMP worksharing. Why: on a shared machine (other jobs, Ray workers) a thread of an OpenMP
// `schedule(static)` loop that the OS deschedules holds everyone up, and the threads that
// finished spin at the barrier (libgomp's active wait, whose policy torch's runtime fixes at
// start-up), taking CPU from the very thread they wait for: with one competing busy process on
// a 2-core machine the 2-thread kernels ran 2-3x slower than 1 thread. Here
//   - work is handed out through an atomic counter (a worker that runs late simply takes less),
//   - the caller is worker 0 and the others are threads started for the call, joined with
//     std::thread::join (a futex wait: nobody spins), so the only waiting is passive,
//   - nothing depends on OMP_* / GOMP_* settings, and the user's environment is not touched.
// Starting a thread costs ~10-30 us, negligible against the kernels' per-call work.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace hc_par {

// Runs fn(worker) on workers 0 .. threads - 1 (worker 0 is the calling thread) and returns when
// all are done; the first exception thrown by any worker is rethrown here. If the OS refuses a
// thread, the call runs on the workers it got (fn must tolerate any worker count >= 1: use it
// with a shared work counter, as parallel_for does).
template <typename F>
int run_workers(int threads, F&& fn) {
  if (threads <= 1) {
    fn(0);
    return 1;
  }
  std::exception_ptr error;
  std::mutex error_lock;
  auto guarded = [&](int w) {
    try {
      fn(w);
    } catch (...) {
      std::lock_guard<std::mutex> hold(error_lock);
      if (!error) error = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(threads - 1);
  for (int w = 1; w < threads; ++w) {
    try {
      pool.emplace_back(guarded, w);
    } catch (const std::system_error&) {
      break;  // fewer workers; the shared counter hands their share to the others
    }
  }
  guarded(0);
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
  return int(pool.size()) + 1;
}

// Dynamic loop: items [0, n) in blocks of `grain`, fn(worker, begin, end) per block, blocks
// handed out in increasing order from one atomic counter. Which worker runs a block depends on
// timing, so results must not (write per item, or reduce per block in block order).
template <typename F>
void parallel_for(int64_t n, int threads, int64_t grain, F&& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int64_t blocks = (n + grain - 1) / grain;
  threads = int(std::max<int64_t>(1, std::min<int64_t>(threads, blocks)));
  if (threads == 1) {
    fn(0, int64_t(0), n);
    return;
  }
  std::atomic<int64_t> next{0};
  run_workers(threads, [&](int w) {
    for (;;) {
      const int64_t b = next.fetch_add(grain, std::memory_order_relaxed);
      if (b >= n) break;
      fn(w, b, std::min(n, b + grain));
    }
  });
}

}  // namespace hc_par
