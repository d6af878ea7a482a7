#include "tools/bench/batcher_bench.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <latch>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "batcher/batcher.h"
#include "server/metrics.h"
#include "tools/bench/quantile.h"

namespace vocoder::bench {
namespace {

using batcher::Batcher;
using batcher::BatcherOptions;
using batcher::Job;
using batcher::SteadyClock;
using batcher::TimePoint;

// A one-shot event on std::mutex (TSan-visible, unlike Debian's absl::Mutex).
class Notification {
 public:
  // Notifies under the lock: the waiter may destroy this object as soon as
  // it sees done_.
  void Notify() {
    std::lock_guard lock(mu_);
    done_ = true;
    cv_.notify_all();
  }
  void WaitForNotification() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return done_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
};

double Us(batcher::Duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

// Records the real time each batch started, so enqueue->dispatch is exact.
class BenchJob final : public Job {
 public:
  BenchJob(uint64_t stream, batcher::Fingerprint voice, std::atomic<int64_t>* done,
           Notification* notify = nullptr)
      : Job(batcher::BatchKey{voice, 10}, stream, 60, batcher::kNever, nullptr),
        done_(done),
        notify_(notify) {}
  void Complete(absl::Status, const batcher::BatchInfo& info) override {
    dispatch_us = Us(info.queue_wait);
    batch_size = info.batch_size;
    if (sink != nullptr) *sink = dispatch_us;
    done_->fetch_add(1, std::memory_order_release);
    if (notify_ != nullptr) notify_->Notify();
  }
  double dispatch_us = 0;
  int batch_size = 0;
  double* sink = nullptr;

 private:
  std::atomic<int64_t>* done_;
  Notification* notify_;
};

class SleepRunner final : public batcher::BatchRunner {
 public:
  // Batch time = fixed + per_job * size (zero for the no-op runner).
  SleepRunner(double fixed_ms, double per_job_ms) : fixed_ms_(fixed_ms), per_job_ms_(per_job_ms) {}
  absl::Status Run(absl::Span<Job* const> jobs) override {
    const double ms = fixed_ms_ + per_job_ms_ * static_cast<double>(jobs.size());
    if (ms > 0) std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(ms));
    return absl::OkStatus();
  }

 private:
  double fixed_ms_;
  double per_job_ms_;
};

struct Lone {
  double p50_us = 0, p99_us = 0, mean_us = 0;
};

// One stream, one job at a time: what a lone user pays on top of the model.
Lone LoneStream(double compute_ms, int iterations, bool announce_stream) {
  batcher::SystemClock clock;
  SleepRunner runner(compute_ms, 0);
  auto b = Batcher::Create(BatcherOptions{}, {clock, runner, nullptr});
  if (announce_stream) (*b)->StreamOpened();
  std::atomic<int64_t> done{0};
  std::vector<double> lat;
  for (int i = 0; i < iterations; ++i) {
    Notification n;
    double sink = 0;
    auto job = std::make_unique<BenchJob>(1, batcher::Fingerprint{}, &done, &n);
    job->sink = &sink;
    std::unique_ptr<Job> base = std::move(job);
    if (!(*b)->Submit(&base).ok()) std::abort();
    n.WaitForNotification();
    lat.push_back(sink);
  }
  double sum = 0;
  for (double x : lat) sum += x;
  return {Quantile(lat, 0.5), Quantile(lat, 0.99), sum / static_cast<double>(lat.size())};
}

// Submit cost on an uncontended queue (no-op runner drains behind it).
double SubmitCostNs(int n) {
  batcher::SystemClock clock;
  SleepRunner runner(0, 0);
  BatcherOptions o;
  o.max_queue_jobs = n + 1;
  auto b = Batcher::Create(o, {clock, runner, nullptr});
  std::atomic<int64_t> done{0};
  std::vector<std::unique_ptr<Job>> jobs;
  jobs.reserve(n);
  for (int i = 0; i < n; ++i) {
    jobs.push_back(
        std::make_unique<BenchJob>(static_cast<uint64_t>(i), batcher::Fingerprint{}, &done));
  }
  const auto t0 = SteadyClock::now();
  for (auto& j : jobs) {
    if (!(*b)->Submit(&j).ok()) std::abort();
  }
  const auto t1 = SteadyClock::now();
  while (done.load() < n) std::this_thread::yield();
  return std::chrono::duration<double, std::nano>(t1 - t0).count() / n;
}

struct Throughput {
  int producers = 0;
  double jobs_per_s = 0;
  double mean_batch = 0;
};

// Open queue: `producers` threads, each a stream, submit `total` jobs as fast
// as admission allows.
Throughput QueueThroughput(int producers, int total, double fixed_ms, double per_job_ms,
                           int max_batch, batcher::BatcherObserver* observer = nullptr) {
  batcher::SystemClock clock;
  SleepRunner runner(fixed_ms, per_job_ms);
  BatcherOptions o;
  o.max_batch_size = max_batch;
  o.max_queue_jobs = total + 1;
  auto b = Batcher::Create(o, {clock, runner, observer});
  std::atomic<int64_t> done{0};
  const int per = total / producers;
  std::latch start(producers + 1);
  std::vector<std::thread> threads;
  for (int p = 0; p < producers; ++p) {
    threads.emplace_back([&, p] {
      start.arrive_and_wait();
      for (int i = 0; i < per; ++i) {
        std::unique_ptr<Job> j = std::make_unique<BenchJob>(static_cast<uint64_t>(p * per + i),
                                                            batcher::Fingerprint{}, &done);
        while (!(*b)->Submit(&j).ok()) std::this_thread::yield();
      }
    });
  }
  start.arrive_and_wait();
  const auto t0 = SteadyClock::now();
  for (auto& t : threads) t.join();
  while (done.load() < static_cast<int64_t>(per) * producers) std::this_thread::yield();
  const double s = std::chrono::duration<double>(SteadyClock::now() - t0).count();
  return {producers, static_cast<double>(per) * producers / s, (*b)->stats().mean_batch_size()};
}

struct Grouping {
  const char* mode;
  double jobs_per_s;
  double mean_batch;
  double mean_wait_ms;
};

// Closed loop: `streams` streams over `voices` voices, each submitting its
// next chunk when the previous completes; the runner costs what the design
// note's GPU table does, scaled down 10x (5 ms + 0.33 ms per job).
Grouping GroupingLoop(batcher::Grouping grouping, int streams, int voices, double seconds) {
  batcher::SystemClock clock;
  SleepRunner runner(5.0, 0.33);
  BatcherOptions o;
  o.grouping = grouping;
  auto b = Batcher::Create(o, {clock, runner, nullptr});
  std::atomic<int64_t> done{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  std::vector<double> waits(streams, 0);
  for (int s = 0; s < streams; ++s) {
    threads.emplace_back([&, s] {
      (*b)->StreamOpened();
      const std::string voice = absl::StrCat("voice-", s % voices);
      const auto fp = batcher::FingerprintBytes(voice.data(), voice.size());
      while (!stop.load()) {
        Notification n;
        double sink = 0;
        auto job = std::make_unique<BenchJob>(static_cast<uint64_t>(s), fp, &done, &n);
        job->sink = &sink;
        std::unique_ptr<Job> base = std::move(job);
        if (!(*b)->Submit(&base).ok()) std::abort();
        n.WaitForNotification();
        waits[s] += sink;
      }
      (*b)->StreamClosed();
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop.store(true);
  for (auto& t : threads) t.join();
  double wait_sum = 0;
  for (double w : waits) wait_sum += w;
  const auto st = (*b)->stats();
  return {grouping == batcher::Grouping::kMixed ? "mixed" : "voice",
          static_cast<double>(done.load()) / seconds, st.mean_batch_size(),
          wait_sum / 1000.0 / static_cast<double>(std::max<int64_t>(1, done.load()))};
}

}  // namespace

int RunBatcherBench(const BatcherBenchOptions& opt) {
  const int lone_n = opt.quick ? 200 : opt.lone_iterations;
  const int jobs = opt.quick ? 2000 : opt.jobs_per_level;
  std::printf("vocoder-bench batcher (%u hardware threads)\n", std::thread::hardware_concurrency());

  const double submit_ns = SubmitCostNs(jobs);
  std::printf("submit cost: %.0f ns/job (uncontended)\n", submit_ns);

  const Lone lone_noop = LoneStream(0, lone_n, true);
  const Lone lone_sleep = LoneStream(opt.compute_ms, lone_n / 4, true);
  const Lone lone_unknown = LoneStream(0, lone_n, false);
  std::printf("lone stream enqueue->dispatch (us)        p50      p99     mean\n");
  std::printf("  no-op runner                       %8.1f %8.1f %8.1f\n", lone_noop.p50_us,
              lone_noop.p99_us, lone_noop.mean_us);
  std::printf("  %.1f ms runner                      %8.1f %8.1f %8.1f\n", opt.compute_ms,
              lone_sleep.p50_us, lone_sleep.p99_us, lone_sleep.mean_us);
  std::printf("  no-op, stream count unknown (idle) %8.1f %8.1f %8.1f\n", lone_unknown.p50_us,
              lone_unknown.p99_us, lone_unknown.mean_us);

  std::vector<Throughput> noop, sleep;
  std::printf("queue throughput        producers   jobs/s   mean batch\n");
  for (int p : {1, 8, 64}) {
    noop.push_back(QueueThroughput(p, jobs, 0, 0, 32));
    std::printf("  no-op runner          %5d %12.0f %8.1f\n", p, noop.back().jobs_per_s,
                noop.back().mean_batch);
  }
  for (int p : {1, 8, 64}) {
    sleep.push_back(QueueThroughput(p, jobs / 10, opt.compute_ms, 0, 32));
    std::printf("  %.1f ms runner         %5d %12.0f %8.1f\n", opt.compute_ms, p,
                sleep.back().jobs_per_s, sleep.back().mean_batch);
  }

  // The cost of metrics on the GPU thread: what vocoderd's Prometheus
  // observer does per batch of 32 (one OnBatch, one OnDrain, 32 OnJobDone),
  // timed directly, as a share of the sleeping runner's batch time. (Queue
  // throughput with a no-op runner on 2 cores is too noisy to show 2 %.)
  prometheus::Registry registry;
  server::Metrics metrics(registry, server::MetricsInfo{});
  const int reps = opt.quick ? 2000 : 20000;
  batcher::BatchRecord record{batcher::Trigger::kNearFull,  32,  32, 32 * 300, 32 * 280,
                              std::chrono::milliseconds(2), true};
  const auto m0 = SteadyClock::now();
  for (int i = 0; i < reps; ++i) {
    metrics.OnDrain(1, 1);
    metrics.OnBatch(record);
    metrics.OnBusy(record.compute);
    for (int j = 0; j < 32; ++j) {
      metrics.OnJobDone(batcher::JobOutcome::kOk, std::chrono::microseconds(100 + j));
    }
  }
  const double metrics_us_per_batch =
      std::chrono::duration<double, std::micro>(SteadyClock::now() - m0).count() / reps;
  const double overhead_pct = 100.0 * metrics_us_per_batch / (opt.compute_ms * 1000.0);
  std::printf(
      "metrics cost per batch of 32 on the GPU thread: %.2f us = %.3f %% of a %.1f ms batch\n",
      metrics_us_per_batch, overhead_pct, opt.compute_ms);

  const double loop_s = opt.quick ? 0.5 : 3.0;
  std::vector<Grouping> grouping = {GroupingLoop(batcher::Grouping::kVoice, 32, 8, loop_s),
                                    GroupingLoop(batcher::Grouping::kMixed, 32, 8, loop_s)};
  std::printf("grouping, 32 closed-loop streams over 8 voices, 5 ms + 0.33 ms/job runner\n");
  for (const auto& g : grouping) {
    std::printf("  %-6s %8.0f jobs/s  mean batch %5.1f  mean queue wait %6.2f ms\n", g.mode,
                g.jobs_per_s, g.mean_batch, g.mean_wait_ms);
  }

  if (!opt.json_path.empty()) {
    std::ofstream f(opt.json_path);
    f << "{\n  \"benchmark\": \"batcher\",\n";
    f << absl::StrFormat("  \"submit_ns\": %.1f,\n", submit_ns);
    f << absl::StrFormat("  \"lone_stream_dispatch_p50_us\": %.2f,\n", lone_noop.p50_us);
    f << absl::StrFormat("  \"lone_stream_dispatch_p99_us\": %.2f,\n", lone_noop.p99_us);
    f << absl::StrFormat("  \"lone_stream_dispatch_sleep_runner_p50_us\": %.2f,\n",
                         lone_sleep.p50_us);
    f << absl::StrFormat("  \"lone_stream_dispatch_sleep_runner_p99_us\": %.2f,\n",
                         lone_sleep.p99_us);
    f << absl::StrFormat("  \"lone_stream_unknown_count_p50_us\": %.2f,\n", lone_unknown.p50_us);
    f << absl::StrFormat("  \"compute_ms\": %.2f,\n", opt.compute_ms);
    f << absl::StrFormat("  \"metrics_us_per_batch\": %.3f,\n", metrics_us_per_batch);
    f << absl::StrFormat("  \"metrics_overhead_pct\": %.4f,\n", overhead_pct);
    auto rows = [&](const char* name, const std::vector<Throughput>& v) {
      f << "  \"" << name << "\": [";
      for (size_t i = 0; i < v.size(); ++i) {
        f << absl::StrFormat("%s{\"producers\": %d, \"jobs_per_s\": %.1f, \"mean_batch\": %.2f}",
                             i ? ", " : "", v[i].producers, v[i].jobs_per_s, v[i].mean_batch);
      }
      f << "],\n";
    };
    rows("throughput_noop", noop);
    rows("throughput_sleep", sleep);
    f << "  \"grouping\": [";
    for (size_t i = 0; i < grouping.size(); ++i) {
      f << absl::StrFormat(
          "%s{\"mode\": \"%s\", \"jobs_per_s\": %.1f, \"mean_batch\": %.2f, \"mean_wait_ms\": "
          "%.3f}",
          i ? ", " : "", grouping[i].mode, grouping[i].jobs_per_s, grouping[i].mean_batch,
          grouping[i].mean_wait_ms);
    }
    f << "]\n}\n";
    std::printf("wrote %s\n", opt.json_path.c_str());
  }
  return 0;
}

}  // namespace vocoder::bench
