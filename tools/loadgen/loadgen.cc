#include "tools/loadgen/loadgen.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "tools/loadgen/playback.h"

namespace vocoder::loadgen {
namespace {

using Clock = std::chrono::steady_clock;

Clock::duration Seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

const char* CodeName(grpc::StatusCode code) {
  static const char* const kNames[] = {"OK",
                                       "CANCELLED",
                                       "UNKNOWN",
                                       "INVALID_ARGUMENT",
                                       "DEADLINE_EXCEEDED",
                                       "NOT_FOUND",
                                       "ALREADY_EXISTS",
                                       "PERMISSION_DENIED",
                                       "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION",
                                       "ABORTED",
                                       "OUT_OF_RANGE",
                                       "UNIMPLEMENTED",
                                       "INTERNAL",
                                       "UNAVAILABLE",
                                       "DATA_LOSS",
                                       "UNAUTHENTICATED"};
  const auto i = static_cast<size_t>(code);
  return i < std::size(kNames) ? kNames[i] : "UNKNOWN";
}

// Everything the level's stream threads report; read by the controller.
class Sink {
 public:
  void Add(const ChunkEvent& e) {
    std::lock_guard lock(mu_);
    chunks_.push_back(e);
  }
  void Add(const UtteranceEvent& e) {
    std::lock_guard lock(mu_);
    utterances_.push_back(e);
  }
  size_t UtterancesSince(double t) {
    std::lock_guard lock(mu_);
    return static_cast<size_t>(std::count_if(utterances_.begin(), utterances_.end(),
                                             [t](const UtteranceEvent& u) { return u.t >= t; }));
  }
  WindowStats Window(double t0, double t1) {
    std::lock_guard lock(mu_);
    return loadgen::Window(chunks_, t0, t1);
  }
  LevelSummary Summarize(double t0, double t1, double threshold_s) {
    std::lock_guard lock(mu_);
    return loadgen::Summarize(chunks_, utterances_, t0, t1, threshold_s);
  }

 private:
  std::mutex mu_;
  std::vector<ChunkEvent> chunks_;
  std::vector<UtteranceEvent> utterances_;
};

// Sleeps until `until` or until `stop` is set, whichever comes first.
class Stopper {
 public:
  void Stop() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    flag_ = true;
    cv_.notify_all();
  }
  bool SleepUntil(Clock::time_point until) {
    std::unique_lock lock(mu_);
    cv_.wait_until(lock, until, [&] { return stop_; });
    return !stop_;
  }
  const std::atomic<bool>* flag() const { return &flag_; }
  bool stopped() const { return flag_.load(); }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::atomic<bool> flag_{false};
};

}  // namespace

absl::Status LoadOptions::Validate() const {
  auto bad = [](auto... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); };
  if (target.empty()) return bad("target must not be empty");
  if (!metrics_url.empty() && metrics_url.rfind("http://", 0) != 0) {
    return bad("metrics URL must start with http://; was ", metrics_url);
  }
  if (connections < 1) return bad("connections must be positive; was ", connections);
  if (utterance_tokens < 1) return bad("utterance tokens must be positive; was ", utterance_tokens);
  if (chunk_tokens < 1) return bad("chunk tokens must be positive; was ", chunk_tokens);
  if (tokens_per_second < 0) return bad("tokens per second must be >= 0; was ", tokens_per_second);
  if (concurrency.empty() && arrival_rates.empty()) return bad("no concurrency level to run");
  for (int c : concurrency) {
    if (c < 1) return bad("concurrency must be positive; was ", c);
  }
  for (double r : arrival_rates) {
    if (r <= 0) return bad("arrival rate must be positive; was ", r);
  }
  if (max_inflight < 1) return bad("max inflight must be positive; was ", max_inflight);
  if (warmup_s < 0) return bad("warm-up must be >= 0 s; was ", warmup_s);
  if (window_s <= 0) return bad("window must be > 0 s; was ", window_s);
  if (stable_windows < 1) return bad("stable windows must be positive; was ", stable_windows);
  if (max_windows < stable_windows) {
    return bad("max windows (", max_windows, ") must be >= stable windows (", stable_windows, ")");
  }
  if (stability_pct <= 0) return bad("stability percentage must be > 0; was ", stability_pct);
  if (duration_s < 0) return bad("duration must be >= 0 s; was ", duration_s);
  if (utterances < 0) return bad("utterances must be >= 0; was ", utterances);
  if (duration_s > 0 && utterances > 0)
    return bad("give a duration or an utterance count, not both");
  if (playback_buffer_ms < 0)
    return bad("playback buffer must be >= 0 ms; was ", playback_buffer_ms);
  if (stall_threshold_ms < 0)
    return bad("stall threshold must be >= 0 ms; was ", stall_threshold_ms);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<LoadGenerator>> LoadGenerator::Create(const LoadOptions& options) {
  if (auto s = options.Validate(); !s.ok()) return s;
  std::unique_ptr<LoadGenerator> g(new LoadGenerator(options));
  for (int i = 0; i < options.connections; ++i) {
    client::ChannelOptions channel;
    // Without a local pool, channels to one target share one connection.
    channel.local_subchannel_pool = true;
    std::string error;
    auto ch = client::CreateVocoderChannel(options.target, channel, &error);
    if (ch == nullptr) return absl::InvalidArgumentError(absl::StrCat("--target: ", error));
    g->clients_.push_back(std::make_unique<client::VocoderClient>(std::move(ch)));
  }
  g->voices_ = options.voices;
  if (g->voices_.empty()) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    ctx.set_wait_for_ready(true);
    v1::ListVoicesResponse list;
    const grpc::Status s = g->clients_[0]->stub().ListVoices(&ctx, {}, &list);
    if (!s.ok()) {
      return absl::UnavailableError(
          absl::StrCat("ListVoices on ", options.target, ": ", s.error_message()));
    }
    for (const auto& v : list.voices()) g->voices_.push_back(v.voice_id());
    if (g->voices_.empty()) return absl::FailedPreconditionError("the server has no voices");
  }
  return g;
}

LevelResult LoadGenerator::Run(const Level& level) {
  const LoadOptions& o = options_;
  LevelResult result;
  result.level = level;
  Sink sink;
  Stopper stopper;
  std::atomic<size_t> started{0};
  const auto t_start = Clock::now();
  auto since = [&](Clock::time_point t) {
    return std::chrono::duration<double>(t - t_start).count();
  };

  auto utterance = [&](uint64_t id) {
    ++started;
    client::StreamOptions so;
    so.voice_id = voices_[id % voices_.size()];
    so.encoding = o.pcm_f32 ? v1::PCM_F32LE : v1::PCM_S16LE;
    so.n_timesteps = o.n_timesteps;
    so.request_id = absl::StrCat("loadgen-", id);
    so.chunk_tokens = o.chunk_tokens;
    so.tokens_per_second = o.tokens_per_second;
    so.deadline = o.deadline;
    so.stop = stopper.flag();
    so.on_chunk = [&](const client::ChunkRecord& c) {
      ChunkEvent e;
      e.t = since(c.received_at);
      e.latency_s = c.latency_s;
      e.audio_s = c.sample_rate_hz > 0 ? static_cast<double>(c.num_samples) / c.sample_rate_hz : 0;
      e.ttfa_s = c.first_audio ? c.first_audio_s : -1;
      e.queue_us = c.timing.queue_us();
      e.compute_us = c.timing.compute_us();
      e.batch_size = c.timing.batch_size();
      sink.Add(e);
    };
    const auto tokens = client::DemoTokens(o.utterance_tokens, o.seed * 1000003 + id);
    client::StreamResult r = clients_[id % clients_.size()]->Stream(tokens, so);
    if (r.stopped) return;  // the level ended under it: not a result
    UtteranceEvent u;
    u.t = since(Clock::now());
    u.code = CodeName(r.status.error_code());
    u.total_s = r.total_s;
    const double rate = r.started.sample_rate_hz();
    if (rate > 0) {
      u.audio_s = static_cast<double>(r.audio.size()) / rate;
      const double buffer = o.playback_buffer_ms / 1e3;
      Playback player(rate, buffer);
      ServerStall server(rate, buffer);
      for (const auto& c : r.chunks) {
        // sent_at is unset only if the server named a chunk never sent.
        const auto sent = c.sent_at == client::ChunkRecord::Time{} ? c.received_at : c.sent_at;
        player.Arrive(since(c.received_at), c.num_samples);
        server.Arrive(since(sent), since(c.received_at), c.num_samples);
      }
      u.stall_s = player.stall_s();
      u.server_stall_s = server.stall_s();
    }
    sink.Add(u);
  };

  // Load.
  std::mutex threads_mu;
  std::vector<std::thread> threads;
  std::atomic<int> inflight{0};
  std::mt19937_64 rng(o.seed + static_cast<uint64_t>(level.concurrency) * 7919 +
                      static_cast<uint64_t>(level.arrival_rate * 1000));
  if (level.arrival_rate > 0) {
    threads.emplace_back([&, seed = rng()] {
      std::mt19937_64 arrivals(seed);
      std::exponential_distribution<double> gap(level.arrival_rate);
      auto next = Clock::now();
      for (;;) {
        next += Seconds(gap(arrivals));
        if (!stopper.SleepUntil(next)) return;
        if (inflight.load() >= o.max_inflight) {
          ++result.dropped_arrivals;
          continue;
        }
        ++inflight;
        std::lock_guard lock(threads_mu);
        threads.emplace_back([&, id = next_utterance_++] {
          utterance(id);
          --inflight;
        });
      }
    });
  } else {
    // Paced streams start spread over one chunk interval, so their chunks
    // arrive at uncorrelated moments, as independent clients' would; a
    // lock-step start would flatter batching.
    const double spread = o.tokens_per_second > 0 ? o.chunk_tokens / o.tokens_per_second : 0;
    std::uniform_real_distribution<double> offset(0, 1);
    for (int i = 0; i < level.concurrency; ++i) {
      const auto start = t_start + Seconds(spread * offset(rng));
      threads.emplace_back([&, start] {
        if (!stopper.SleepUntil(start)) return;
        while (!stopper.stopped()) {
          uint64_t id;
          {
            std::lock_guard lock(threads_mu);
            id = next_utterance_++;
          }
          utterance(id);
        }
      });
    }
  }

  // Measurement.
  auto at = [&](double s) { return t_start + Seconds(s); };
  std::vector<std::pair<double, std::vector<Sample>>> scrapes;  // time -> snapshot
  auto scrape = [&](double t) {
    if (o.metrics_url.empty()) return;
    auto body = HttpGet(o.metrics_url);
    auto samples = body.ok() ? ParseMetrics(*body) : body.status();
    if (samples.ok()) {
      scrapes.emplace_back(t, std::move(*samples));
    } else {
      result.server_error = std::string(samples.status().message());
    }
  };
  // Events are stamped when they happen and added a moment later: wait this
  // long after a window closes before reading it.
  constexpr double kSettle = 0.02;
  double m0 = o.warmup_s, m1 = m0;
  std::this_thread::sleep_until(at(m0));
  scrape(m0);
  if (o.duration_s > 0) {
    m1 = m0 + o.duration_s;
    std::this_thread::sleep_until(at(m1 + kSettle));
    scrape(m1);
    result.windows.push_back(sink.Window(m0, m1));
    result.stable = true;
  } else if (o.utterances > 0) {
    // Bounded, so a server that stops answering cannot hang the sweep.
    const auto give_up = at(m0 + o.max_windows * o.window_s);
    while (sink.UtterancesSince(m0) < static_cast<size_t>(o.utterances) && Clock::now() < give_up) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    m1 = since(Clock::now());
    scrape(m1);
    result.windows.push_back(sink.Window(m0, m1));
    result.stable = true;
  } else {
    for (int k = 1; k <= o.max_windows; ++k) {
      const double end = m0 + k * o.window_s;
      std::this_thread::sleep_until(at(end + kSettle));
      scrape(end);
      result.windows.push_back(sink.Window(end - o.window_s, end));
      result.stable = Stable(result.windows, o.stable_windows, o.stability_pct);
      if (result.stable) break;
    }
    // The summary covers the last K windows, converged or not.
    m1 = result.windows.back().t1;
    m0 = std::max(m0, m1 - o.stable_windows * o.window_s);
  }
  stopper.Stop();
  for (;;) {
    std::thread t;
    {
      std::lock_guard lock(threads_mu);
      if (threads.empty()) break;
      t = std::move(threads.back());
      threads.pop_back();
    }
    t.join();
  }
  result.started = started.load();
  result.summary = sink.Summarize(m0, m1, o.stall_threshold_ms / 1e3);

  auto snapshot = [&](double t) -> const std::vector<Sample>* {
    for (const auto& [when, s] : scrapes) {
      if (std::abs(when - t) < 1e-6) return &s;
    }
    return nullptr;
  };
  const auto* before = snapshot(m0);
  const auto* after = snapshot(m1);
  if (before != nullptr && after != nullptr) {
    result.server = Diff(*before, *after, m1 - m0);
  } else if (!o.metrics_url.empty() && result.server_error.empty()) {
    result.server_error = "no scrape at the measurement's edges";
  }
  return result;
}

}  // namespace vocoder::loadgen
