#include "bench/load_generator.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <random>
#include <thread>

namespace tierserve::bench {
namespace {

using Clock = std::chrono::steady_clock;

// State shared by the dispatcher, the workers and the sampler.
struct Shared {
  std::mutex mu;
  std::condition_variable cv;  // a job, a finished request, or the end
  std::deque<size_t> jobs;     // prompt indexes waiting for a worker
  int32_t idle_workers = 0;
  int32_t in_flight = 0;  // queued or being sent
  bool stop = false;      // no more jobs: workers exit when the queue is empty
  std::vector<RequestRecord> records;
  int64_t completed = 0, failed = 0;
};

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

}  // namespace

LoadResult run_load(const std::vector<BenchPrompt>& prompts, const LoadOptions& o,
                    const std::function<std::unique_ptr<StreamingConnection>()>& make_connection,
                    const SendFn& send, const ProgressFn& progress) {
  Shared sh;
  const Clock::time_point t0 = Clock::now();
  std::vector<std::thread> workers;
  auto worker = [&] {
    std::unique_ptr<StreamingConnection> conn = make_connection();
    std::unique_lock<std::mutex> lock(sh.mu);
    for (;;) {
      ++sh.idle_workers;
      sh.cv.wait(lock, [&] { return !sh.jobs.empty() || sh.stop; });
      --sh.idle_workers;
      if (sh.jobs.empty()) return;
      const size_t job = sh.jobs.front();
      sh.jobs.pop_front();
      lock.unlock();
      const double start = seconds_since(t0);
      RequestRecord r = send(prompts[job], *conn);
      r.start_s = start;
      lock.lock();
      --sh.in_flight;
      ++(r.success ? sh.completed : sh.failed);
      sh.records.push_back(std::move(r));
      sh.cv.notify_all();
    }
  };

  // The limits at time t: full after the ramp-up, growing linearly before.
  auto ramp = [&](double t) { return o.ramp_up_s > 0 ? std::min(1.0, t / o.ramp_up_s) : 1.0; };
  // Without --max-concurrency, at most kMaxInFlight requests (threads, connections) at once.
  const int32_t max_concurrency = o.max_concurrency > 0 ? o.max_concurrency : kMaxInFlight;
  auto concurrency_at = [&](double t) {
    return std::max(1, static_cast<int32_t>(std::ceil(max_concurrency * ramp(t))));
  };

  // The sampler: a sample every interval, progress twice a second.
  LoadResult result;
  std::mutex sample_mu;
  bool sampling = true;
  std::condition_variable sample_cv;
  std::thread sampler([&] {
    size_t seen = 0;  // records already folded into a sample
    double last_sample = 0;
    auto take = [&](double t, bool record) {
      LoadSample s;
      s.t_s = t;
      s.concurrency_limit = concurrency_at(t);
      std::lock_guard<std::mutex> lock(sh.mu);
      s.in_flight = sh.in_flight;
      s.completed = sh.completed;
      s.failed = sh.failed;
      if (record) {
        int64_t n = 0, tokens = 0;
        double ttft = 0;
        for (; seen < sh.records.size(); ++seen) {
          const RequestRecord& r = sh.records[seen];
          if (!r.success) continue;
          ++n;
          tokens += r.output_tokens;
          ttft += r.ttft_s;
        }
        const double span = std::max(t - last_sample, 1e-9);
        s.request_throughput = static_cast<double>(n) / span;
        s.output_throughput = static_cast<double>(tokens) / span;
        s.mean_ttft_ms = n > 0 ? ttft / static_cast<double>(n) * 1e3 : 0;
        last_sample = t;
      }
      return s;
    };
    std::unique_lock<std::mutex> lock(sample_mu);
    double next_sample = o.sample_interval_s;
    while (sampling) {
      sample_cv.wait_for(lock, std::chrono::milliseconds(500));
      if (!sampling) break;
      const double t = seconds_since(t0);
      const bool record = o.sample_interval_s > 0 && t >= next_sample;
      LoadSample s = take(t, record);
      if (record) {
        result.samples.push_back(s);
        next_sample += o.sample_interval_s;
      }
      if (progress) progress(s, false);
    }
    // The last, partial interval is sampled when it is at least half an interval long.
    const double t = seconds_since(t0);
    const double last = result.samples.empty() ? 0 : result.samples.back().t_s;
    const bool record = o.sample_interval_s > 0 && t - last >= o.sample_interval_s / 2;
    LoadSample s = take(t, record);
    if (record) result.samples.push_back(s);
    if (progress) progress(s, true);
  });

  // The dispatcher.
  std::mt19937_64 rng(o.seed);
  double next_send = 0;  // seconds since t0
  for (int64_t i = 0;; ++i) {
    if (o.duration_s <= 0 && i >= o.num_prompts) break;
    if (std::isfinite(o.request_rate) && o.request_rate > 0) {
      // Poisson arrivals whose rate grows linearly from 0 to R over the ramp-up T, then stays
      // at R: the next arrival is where the expected count, the rate's integral
      // A(t) = R t^2 / 2T (t <= T), R T / 2 + R (t - T) (after), grows by an Exp(1) draw.
      const double r = o.request_rate, ramp_t = o.ramp_up_s;
      auto expected = [&](double t) {
        if (ramp_t <= 0) return r * t;
        return t <= ramp_t ? r * t * t / (2 * ramp_t) : r * ramp_t / 2 + r * (t - ramp_t);
      };
      auto when = [&](double a) {
        if (ramp_t <= 0) return a / r;
        return a <= r * ramp_t / 2 ? std::sqrt(2 * ramp_t * a / r)
                                   : ramp_t + (a - r * ramp_t / 2) / r;
      };
      next_send = when(expected(next_send) + std::exponential_distribution<double>(1.0)(rng));
      std::this_thread::sleep_until(t0 + std::chrono::duration_cast<Clock::duration>(
                                             std::chrono::duration<double>(next_send)));
    }
    std::unique_lock<std::mutex> lock(sh.mu);
    if (o.duration_s > 0) {
      // Wait for room under the concurrency limit, but not past the end of the run.
      const auto end = t0 + std::chrono::duration_cast<Clock::duration>(
                                std::chrono::duration<double>(o.duration_s));
      while (Clock::now() < end) {
        if (sh.in_flight < concurrency_at(seconds_since(t0))) break;
        sh.cv.wait_until(lock, std::min(end, Clock::now() + std::chrono::milliseconds(100)));
      }
      if (Clock::now() >= end) break;
    } else {
      for (;;) {
        if (sh.in_flight < concurrency_at(seconds_since(t0))) break;
        sh.cv.wait_for(lock, std::chrono::milliseconds(100));
      }
    }
    sh.jobs.push_back(static_cast<size_t>(i) % prompts.size());
    ++sh.in_flight;
    if (sh.idle_workers < static_cast<int32_t>(sh.jobs.size())) {
      workers.emplace_back(worker);
    }
    sh.cv.notify_all();
  }
  {
    std::unique_lock<std::mutex> lock(sh.mu);
    sh.cv.wait(lock, [&] { return sh.in_flight == 0; });
    sh.stop = true;
    sh.cv.notify_all();
  }
  for (std::thread& w : workers) w.join();
  result.duration_s = seconds_since(t0);
  {
    std::lock_guard<std::mutex> lock(sample_mu);
    sampling = false;
  }
  sample_cv.notify_all();
  sampler.join();
  result.records = std::move(sh.records);
  return result;
}

}  // namespace tierserve::bench
