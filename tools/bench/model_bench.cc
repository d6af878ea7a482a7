#include "tools/bench/model_bench.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <thread>

#include "absl/strings/str_format.h"
#include "model/device.h"
#include "model/runtime.h"
#include "model/sim_profile.h"
#include "model/vocoder.h"
#include "tools/bench/quantile.h"

namespace vocoder::bench {
namespace {

// A synthetic voice with a prompt of `p` tokens: random ids, log-mel-like
// values, a random x-vector. Cost depends on shapes, not on content.
model::VoiceData SyntheticVoice(int p, std::mt19937& rng) {
  std::uniform_int_distribution<int64_t> tok(0, 6560);
  std::normal_distribution<float> mel(-6.0f, 2.0f), emb(0.0f, 1.0f);
  model::VoiceData v;
  for (int i = 0; i < p; ++i) v.prompt_tokens.push_back(tok(rng));
  for (int i = 0; i < 2 * p * 80; ++i) v.prompt_feat.push_back(std::clamp(mel(rng), -11.5f, 4.0f));
  for (int i = 0; i < 192; ++i) v.embedding.push_back(emb(rng));
  return v;
}

int64_t MaxRssBytes() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<int64_t>(u.ru_maxrss) * 1024;
}

struct Row {
  int batch_size = 0;
  int chunk_tokens = 0;
  int row_tokens = 0;
  double median_ms = 0, p95_ms = 0, amortized_ms = 0, audio_s_per_s = 0;
  int64_t peak_bytes = 0;
  // Per stage: median ms and the shape the simulator's profile is keyed on.
  double encode_ms = 0, step_ms = 0, vocode_ms = 0, other_ms = 0;
  int padded_tokens = 0, padded_frames = 0, hift_frames = 0;
};

double Ms(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

}  // namespace

int RunModelBench(const ModelBenchOptions& o) {
  // The simulated accelerator has no torch device (no peak memory either).
  auto device = model::IsSimDevice(o.device) ? model::Device{} : model::ParseDevice(o.device);
  if (!device.ok()) {
    std::fprintf(stderr, "vocoder-bench model: %s\n", device.status().ToString().c_str());
    return 2;
  }
  auto loaded = model::LoadVocoder(o.model_dir, o.device);
  if (!loaded.ok()) {
    std::fprintf(stderr, "vocoder-bench model: %s\n", loaded.status().ToString().c_str());
    return 2;
  }
  model::Vocoder& vocoder = **loaded;
  const model::Manifest& m = vocoder.manifest();
  std::mt19937 rng(7);
  // The server's jobs use a registered voice; a load test compares best
  // against the same prompt length, hence --voice.
  absl::StatusOr<model::VoiceData> data = SyntheticVoice(o.prompt_tokens, rng);
  if (!o.voice_file.empty()) data = model::ReadVoiceFile(o.voice_file);
  if (!data.ok()) {
    std::fprintf(stderr, "vocoder-bench model: %s\n", data.status().ToString().c_str());
    return 2;
  }
  const int prompt_tokens = static_cast<int>(data->prompt_tokens.size());
  auto voice = vocoder.PrepareVoice(*std::move(data));
  if (!voice.ok()) {
    std::fprintf(stderr, "vocoder-bench model: %s\n", voice.status().ToString().c_str());
    return 2;
  }
  const model::RuntimeInfo rt = model::GetRuntimeInfo();
  const int n_steps = o.n_timesteps > 0 ? o.n_timesteps : m.n_timesteps;
  const int rows_per_job = model::GuidanceCopies(m);  // estimator rows per job and step
  std::printf(
      "vocoder-bench model: %s %s model (%s) on %s, torch %s, %d steps%s, prompt %d tokens, "
      "context %d tokens, lookahead held back\n",
      m.size.c_str(), m.variant.c_str(), m.estimator_dtype.c_str(), o.device.c_str(),
      rt.torch_version.c_str(), n_steps, rows_per_job == 2 ? " + CFG" : " (no CFG)", prompt_tokens,
      o.context_tokens);
  if (model::IsSimDevice(o.device)) {
    std::printf("vocoder-bench model: SIMULATED device %s: these times are the profile's\n",
                vocoder.device().c_str());
  }
  std::printf("%6s %6s %6s %10s %10s %12s %12s %10s %9s %9s %9s\n", "batch", "chunk", "row",
              "median_ms", "p95_ms", "amortized_ms", "audio_s/s", "peak_MB", "encode", "step",
              "hift");

  std::vector<Row> rows;
  std::uniform_int_distribution<int64_t> tok(0, 6560);
  for (int chunk : o.chunk_tokens) {
    for (int bs : o.batch_sizes) {
      std::vector<model::VocodeJob> jobs(static_cast<size_t>(bs));
      for (int i = 0; i < bs; ++i) {
        model::VocodeJob& j = jobs[static_cast<size_t>(i)];
        j.voice = *voice;
        // context + new tokens + the 3 lookahead tokens a streaming chunk holds back
        const int extra = o.distinct_lengths ? i : 0;
        for (int k = 0; k < o.context_tokens + chunk + extra + 3; ++k) j.tokens.push_back(tok(rng));
        j.context_tokens = o.context_tokens;
        j.finalize = false;
        j.noise_offset = 2 * (i * 1000);
      }
      if (o.cache_frames > 0) {
        for (auto& j : jobs) {
          j.mel_cache.assign(static_cast<size_t>(o.cache_frames * m.mel_bins), -6.0f);
          j.source_cache.assign(static_cast<size_t>(o.cache_frames * m.samples_per_frame), 0.0f);
        }
      }
      std::vector<model::VocodeJob*> ptrs;
      for (auto& j : jobs) ptrs.push_back(&j);
      model::ResetCudaPeakMemory(*device);
      std::vector<double> ms, encode_ms, step_ms, vocode_ms, other_ms;
      bool failed = false;
      for (int it = 0; it < o.warmup + o.iterations; ++it) {
        if (o.gap_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(o.gap_ms));
        // Run(), stage by stage (Admit, Steps, Retire), each timed.
        using SC = std::chrono::steady_clock;
        const auto t0 = SC::now();
        auto batch = vocoder.NewFlowBatch();
        const std::vector<int> n_timesteps(ptrs.size(), n_steps);
        auto row_ids = vocoder.Admit(*batch, absl::MakeConstSpan(ptrs), n_timesteps);
        absl::Status s = row_ids.status();
        const auto t1 = SC::now();
        double steps_total = 0;
        std::vector<double> steps;
        while (s.ok() && batch->pending_rows() > 0) {
          const auto a = SC::now();
          s = vocoder.Step(*batch);
          steps.push_back(Ms(SC::now() - a));
          steps_total += steps.back();
        }
        const auto t2 = SC::now();
        if (s.ok()) s = vocoder.Retire(*batch, *row_ids, absl::MakeConstSpan(ptrs));
        const auto t3 = SC::now();
        if (!s.ok()) {
          std::printf("%6d %6d  failed: %s\n", bs, chunk, s.ToString().c_str());
          failed = true;
          break;
        }
        if (it >= o.warmup) {
          ms.push_back(Ms(t3 - t0));
          encode_ms.push_back(Ms(t1 - t0));
          step_ms.insert(step_ms.end(), steps.begin(), steps.end());
          vocode_ms.push_back(Ms(t3 - t2));
          other_ms.push_back(Ms(t2 - t1) - steps_total);
        }
      }
      if (failed) break;  // larger batches will not fit either
      Row r;
      r.batch_size = bs;
      r.chunk_tokens = chunk;
      r.row_tokens = prompt_tokens + o.context_tokens + chunk + 3;
      r.encode_ms = Quantile(encode_ms, 0.5);
      r.step_ms = Quantile(step_ms, 0.5);
      r.vocode_ms = Quantile(vocode_ms, 0.5);
      r.other_ms = Quantile(other_ms, 0.5);
      r.padded_tokens = r.row_tokens + (o.distinct_lengths ? bs - 1 : 0);
      r.padded_frames = m.frames_per_token * r.padded_tokens - m.lookahead_frames;
      r.hift_frames = static_cast<int>(jobs[0].audio.size()) / m.samples_per_frame;
      r.median_ms = Quantile(ms, 0.5);
      r.p95_ms = Quantile(ms, 0.95);
      r.amortized_ms = r.median_ms / bs;
      // New audio only: the cache frames were emitted by the previous chunk.
      int64_t emitted = 0;
      for (const auto& j : jobs) emitted += j.emitted_frames();
      const double audio_s = double(emitted) * m.samples_per_frame / m.sample_rate;
      r.audio_s_per_s = audio_s / (r.median_ms / 1000.0);
      r.peak_bytes = device->is_cuda() ? model::CudaPeakMemory(*device) : MaxRssBytes();
      std::printf("%6d %6d %6d %10.2f %10.2f %12.3f %12.2f %10.1f %9.2f %9.2f %9.2f\n", bs, chunk,
                  r.row_tokens, r.median_ms, r.p95_ms, r.amortized_ms, r.audio_s_per_s,
                  double(r.peak_bytes) / (1 << 20), r.encode_ms, r.step_ms, r.vocode_ms);
      std::fflush(stdout);
      rows.push_back(r);
    }
  }
  if (!o.json_path.empty()) {
    std::ofstream f(o.json_path);
    f << "{\n  \"benchmark\": \"model\",\n";
    f << absl::StrFormat(
        "  \"model_size\": \"%s\", \"device\": \"%s\", \"dtype\": \"%s\", \"torch\": \"%s\",\n"
        "  \"variant\": \"%s\", \"estimator_rows_per_job\": %d,\n",
        m.size, o.device, m.estimator_dtype, rt.torch_version, m.variant, rows_per_job);
    f << absl::StrFormat(
        "  \"n_timesteps\": %d, \"prompt_tokens\": %d, \"context_tokens\": %d, \"gap_ms\": %d,\n"
        "  \"cache_frames\": %d, \"distinct_lengths\": %s, \"simulated\": %s,\n"
        "  \"peak_memory_kind\": \"%s\",\n  \"rows\": [\n",
        n_steps, prompt_tokens, o.context_tokens, o.gap_ms, o.cache_frames,
        o.distinct_lengths ? "true" : "false", model::IsSimDevice(o.device) ? "true" : "false",
        device->is_cuda() ? "cuda_allocator_peak" : "process_max_rss");
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      f << absl::StrFormat(
          "    {\"batch_size\": %d, \"chunk_tokens\": %d, \"row_tokens\": %d, \"median_ms\": %.3f, "
          "\"p95_ms\": %.3f, \"amortized_ms\": %.4f, \"audio_s_per_s\": %.3f, "
          "\"peak_memory_bytes\": %d, \"encode_ms\": %.3f, \"step_ms\": %.3f, "
          "\"vocode_ms\": %.3f, \"between_steps_ms\": %.3f, \"padded_tokens\": %d, "
          "\"padded_frames\": %d, \"hift_frames\": %d}%s\n",
          r.batch_size, r.chunk_tokens, r.row_tokens, r.median_ms, r.p95_ms, r.amortized_ms,
          r.audio_s_per_s, r.peak_bytes, r.encode_ms, r.step_ms, r.vocode_ms, r.other_ms,
          r.padded_tokens, r.padded_frames, r.hift_frames, i + 1 < rows.size() ? "," : "");
    }
    f << "  ]\n}\n";
    std::printf("wrote %s\n", o.json_path.c_str());
  }
  return 0;
}

}  // namespace vocoder::bench
