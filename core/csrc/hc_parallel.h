// headcap's own parallel loops for its C++ kernels (gauss_raster, mesh_raster), instead of
// OpenMP worksharing. Why: on a shared machine (other jobs, Ray workers) a thread of an OpenMP
// `schedule(static)` loop that the OS deschedules holds everyone up, and the threads that
// finished spin at the barrier (libgomp's active wait, whose policy torch's runtime fixes at
// start-up), taking CPU from the very thread they wait for: with one competing busy process on
// a 2-core machine the 2-thread kernels ran 2-3x slower than 1 thread. Here
//   - work is handed out through an atomic counter (a worker that runs late simply takes less),
//   - the caller is worker 0 and the others are threads started for the call; the caller
//     waits (condition variable: nobody spins) only for helpers that got to work, never for
//     one the OS has not scheduled yet,
//   - nothing depends on OMP_* / GOMP_* settings, and the user's environment is not touched.
// Starting a thread costs ~10-30 us, small against the kernels' per-call work.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>

namespace hc_par {

// Runs fn(worker) on the calling thread (worker 0) and on up to threads - 1 helper threads
// started for the call; returns when fn has returned on every worker that started it. fn must
// take its work from a shared counter (as parallel_for does) and tolerate any number of
// workers >= 1: a helper that the OS has not yet scheduled when worker 0 finishes the work
// never runs fn (the call is closed then), so the caller waits only for helpers that are
// really working, and that wait sleeps (condition variable). Helpers are detached; the little
// state they share with the call is reference-counted, so a late helper only finds the call
// closed and exits. The first exception thrown by any worker is rethrown here.
template <typename F>
int run_workers(int threads, F&& fn) {
  if (threads <= 1) {
    fn(0);
    return 1;
  }
  struct Call {
    std::mutex lock;
    std::condition_variable finished;
    bool closed = false;
    int running = 0;
    int started = 1;
    std::exception_ptr error;
    std::function<void(int)> body;
  };
  auto call = std::make_shared<Call>();
  call->body = [&fn](int w) { fn(w); };
  auto helper = [call](int w) {
    {
      std::lock_guard<std::mutex> hold(call->lock);
      if (call->closed) return;  // worker 0 already did everything
      ++call->running;
      ++call->started;
    }
    std::exception_ptr error;
    try {
      call->body(w);
    } catch (...) {
      error = std::current_exception();
    }
    std::lock_guard<std::mutex> hold(call->lock);
    if (error && !call->error) call->error = error;
    if (--call->running == 0) call->finished.notify_all();
  };
  for (int w = 1; w < threads; ++w) {
    try {
      std::thread(helper, w).detach();
    } catch (const std::system_error&) {
      break;  // fewer workers; the shared counter hands their share to the others
    }
  }
  std::exception_ptr error;
  try {
    fn(0);
  } catch (...) {
    error = std::current_exception();
  }
  std::unique_lock<std::mutex> hold(call->lock);
  call->closed = true;
  call->finished.wait(hold, [&] { return call->running == 0; });
  if (!error) error = call->error;
  const int workers = call->started;
  hold.unlock();
  if (error) std::rethrow_exception(error);
  return workers;
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
