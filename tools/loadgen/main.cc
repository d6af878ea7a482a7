// vocoder-loadgen: latency and throughput of a running vocoderd against
// concurrency. See docs/benchmarks.md for the method and the figures.
//   vocoder-loadgen --target 127.0.0.1:50051 --metrics-url http://127.0.0.1:9464/metrics
//       --concurrency 1 8 64 --json sweep.json --csv sweep.csv
//   vocoder-loadgen --arrival-rates 2 4 8 ...          (open loop, Poisson arrivals)
#include <cstdio>
#include <ctime>
#include <fstream>

#include "CLI/CLI.hpp"
#include "tools/loadgen/loadgen.h"
#include "tools/loadgen/report.h"

namespace {

std::string UtcNow() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

bool WriteFile(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
  return static_cast<bool>(f);
}

}  // namespace

int main(int argc, char** argv) {
  using vocoder::loadgen::LoadOptions;
  CLI::App app{"vocoder-loadgen: latency and throughput of vocoderd against concurrency"};
  LoadOptions o;
  std::string json_path, csv_path, label;
  bool fast = false;
  int64_t deadline_ms = 0;
  app.add_option("--target", o.target,
                 "vocoderd gRPC address; several IP:PORT separated by commas, or "
                 "dns:///name:port, spread streams round-robin over replicas")
      ->capture_default_str();
  app.add_option("--metrics-url", o.metrics_url,
                 "vocoderd's metrics, e.g. http://127.0.0.1:9464/metrics (batch sizes, triggers)");
  app.add_option("--voices", o.voices, "Voice ids; stream i uses voice i mod n (default: all)");
  app.add_option("--connections", o.connections, "HTTP/2 connections")->capture_default_str();
  app.add_option("--utterance-tokens", o.utterance_tokens, "Tokens per utterance (25 = 1 s)")
      ->capture_default_str();
  app.add_option("--chunk-tokens", o.chunk_tokens, "Tokens per chunk sent")->capture_default_str();
  app.add_option("--tokens-per-second", o.tokens_per_second,
                 "Pace of a T3 front-end (25 = real time; more = faster than real time)")
      ->capture_default_str();
  app.add_flag("--fast", fast, "Send tokens as fast as possible (no pacing)");
  app.add_option("--steps", o.n_timesteps, "Euler steps (0 = server default)");
  app.add_flag("--f32", o.pcm_f32, "Ask for PCM f32 (default PCM s16)");
  app.add_option("--deadline-ms", deadline_ms, "Per-utterance deadline (0 = none)");
  app.add_option("--seed", o.seed, "Token and arrival seed")->capture_default_str();
  app.add_option("--concurrency", o.concurrency, "Closed-loop stream counts to sweep")
      ->capture_default_str();
  app.add_option("--arrival-rates", o.arrival_rates,
                 "Open loop instead: Poisson utterance arrivals per second to sweep");
  app.add_option("--max-inflight", o.max_inflight, "Open loop: cap on open streams")
      ->capture_default_str();
  app.add_option("--warmup-s", o.warmup_s, "Warm-up per level, not measured")
      ->capture_default_str();
  app.add_option("--window-s", o.window_s, "Measurement window")->capture_default_str();
  app.add_option("--stable-windows", o.stable_windows, "Windows that must agree")
      ->capture_default_str();
  app.add_option("--max-windows", o.max_windows, "Give up on stability after this many")
      ->capture_default_str();
  app.add_option("--stability-pct", o.stability_pct, "Agreement tolerance, percent")
      ->capture_default_str();
  app.add_option("--duration-s", o.duration_s, "Instead: one fixed measurement of this length");
  app.add_option("--utterances", o.utterances, "Instead: measure until this many utterances end");
  app.add_option("--playback-buffer-ms", o.playback_buffer_ms,
                 "The simulated player starts this long after the first audio")
      ->capture_default_str();
  app.add_option("--stall-threshold-ms", o.stall_threshold_ms,
                 "Server-caused stall above which an utterance counts as stalled")
      ->capture_default_str();
  app.add_option("--json", json_path,
                 "Write the results as JSON here (rewritten after each level)");
  app.add_option("--csv", csv_path, "Write one CSV row per level here");
  app.add_option("--label", label, "Free-form tag stored in the JSON (machine, commit, ...)");
  CLI11_PARSE(app, argc, argv);
  if (fast) o.tokens_per_second = 0;
  o.deadline = std::chrono::milliseconds(deadline_ms);

  auto gen = vocoder::loadgen::LoadGenerator::Create(o);
  if (!gen.ok()) {
    std::fprintf(stderr, "vocoder-loadgen: %s\n", gen.status().ToString().c_str());
    return 2;
  }
  std::vector<vocoder::loadgen::Level> levels;
  if (!o.arrival_rates.empty()) {
    for (double r : o.arrival_rates) levels.push_back({0, r});
  } else {
    for (int c : o.concurrency) levels.push_back({c, 0});
  }

  nlohmann::json doc = {{"tool", "vocoder-loadgen"},
                        {"label", label},
                        {"started_at", UtcNow()},
                        {"options", vocoder::loadgen::OptionsJson(o, (*gen)->voices())},
                        {"levels", nlohmann::json::array()}};
  std::string csv = vocoder::loadgen::CsvHeader();
  std::printf("vocoder-loadgen: %s, %d-token utterances in %d-token chunks, ", o.target.c_str(),
              o.utterance_tokens, o.chunk_tokens);
  if (o.tokens_per_second > 0) {
    std::printf("paced at %g tokens/s", o.tokens_per_second);
  } else {
    std::printf("sent as fast as possible");
  }
  std::printf(", %zu voice(s)\n", (*gen)->voices().size());
  std::printf("%s", vocoder::loadgen::TableHeader().c_str());
  std::fflush(stdout);
  for (const auto& level : levels) {
    const auto r = (*gen)->Run(level);
    std::printf("%s", vocoder::loadgen::TableRow(r).c_str());
    std::fflush(stdout);
    if (!r.server_error.empty()) {
      std::fprintf(stderr, "vocoder-loadgen: metrics: %s\n", r.server_error.c_str());
    }
    doc["levels"].push_back(vocoder::loadgen::LevelJson(r));
    csv += vocoder::loadgen::CsvRow(r);
    doc["finished_at"] = UtcNow();
    if (!json_path.empty() && !WriteFile(json_path, doc.dump(2) + "\n")) {
      std::fprintf(stderr, "vocoder-loadgen: cannot write %s\n", json_path.c_str());
      return 1;
    }
    if (!csv_path.empty() && !WriteFile(csv_path, csv)) {
      std::fprintf(stderr, "vocoder-loadgen: cannot write %s\n", csv_path.c_str());
      return 1;
    }
  }
  std::printf(
      "columns: ms; stall = mean server-caused stall per utterance, stall%% = utterances stalled "
      "> %.0f ms; batch = chunk-weighted batch size seen by the client, srvB = mean batch size "
      "from /metrics\n",
      o.stall_threshold_ms);
  return 0;
}
