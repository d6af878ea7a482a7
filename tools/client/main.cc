// vocoder-client: streams demo utterances to vocoderd and reports what a
// TTS front-end would see: time to first audio, per-chunk latency, real-time
// factor, and the batch sizes the server used.
//   vocoder-client --target 127.0.0.1:50051 --voice alice --tokens 150 --wav out.wav
//   vocoder-client --target ... --streams 8 --rate 25
#include <algorithm>
#include <cstdio>
#include <map>
#include <mutex>
#include <thread>

#include "CLI/CLI.hpp"
#include "tools/client/vocoder_client.h"

int main(int argc, char** argv) {
  CLI::App app{"vocoder-client: stream demo utterances to vocoderd"};
  std::string target = "127.0.0.1:50051", voice, wav, variant;
  int tokens = 150, chunk = 25, streams = 1;
  double rate = 0;
  app.add_option("--target", target,
                 "vocoderd address (several IP:PORT by commas, or dns:///name:port)")
      ->capture_default_str();
  app.add_option("--voice", voice, "Voice id (default: the first ListVoices entry)");
  app.add_option("--tokens", tokens, "Tokens per utterance (25 = 1 s)")->capture_default_str();
  app.add_option("--chunk", chunk, "Tokens per chunk")->capture_default_str();
  app.add_option("--rate", rate, "Tokens per second to send at (0 = as fast as possible)");
  app.add_option("--streams", streams, "Concurrent streams")->capture_default_str();
  app.add_option("--wav", wav, "Write the first stream's audio to this WAV file");
  app.add_option("--variant", variant,
                 "Model variant the tokens are for: standard or turbo (default: any; the "
                 "server refuses the other with INVALID_ARGUMENT)")
      ->check(CLI::IsMember({"", "standard", "turbo"}));
  CLI11_PARSE(app, argc, argv);

  std::string error;
  auto channel = vocoder::client::CreateVocoderChannel(target, {}, &error);
  if (channel == nullptr) {
    std::fprintf(stderr, "vocoder-client: --target: %s\n", error.c_str());
    return 2;
  }
  vocoder::client::VocoderClient client(channel);
  std::vector<std::string> voices;
  if (voice.empty()) {
    grpc::ClientContext ctx;
    vocoder::v1::ListVoicesResponse list;
    const auto s = client.stub().ListVoices(&ctx, {}, &list);
    if (!s.ok() || list.voices().empty()) {
      std::fprintf(stderr, "vocoder-client: no voice to use (%s)\n", s.error_message().c_str());
      return 1;
    }
    for (const auto& v : list.voices()) voices.push_back(v.voice_id());
  } else {
    voices.push_back(voice);
  }

  std::vector<vocoder::client::StreamResult> results(static_cast<size_t>(streams));
  std::vector<std::thread> threads;
  for (int i = 0; i < streams; ++i) {
    threads.emplace_back([&, i] {
      vocoder::client::StreamOptions o;
      o.voice_id = voices[static_cast<size_t>(i) % voices.size()];
      o.chunk_tokens = chunk;
      o.tokens_per_second = rate;
      o.request_id = "demo-" + std::to_string(i);
      o.model_variant = variant;
      results[static_cast<size_t>(i)] =
          client.Stream(vocoder::client::DemoTokens(tokens, static_cast<uint64_t>(i)), o);
    });
  }
  for (auto& t : threads) t.join();

  int failed = 0;
  std::vector<double> ttfa;
  std::map<uint32_t, int> batch_sizes;
  double audio_s = 0, wall = 0;
  for (const auto& r : results) {
    if (!r.status.ok()) {
      ++failed;
      std::fprintf(stderr, "stream failed: %d %s\n", r.status.error_code(),
                   r.status.error_message().c_str());
      continue;
    }
    ttfa.push_back(r.first_audio_s);
    for (const auto& c : r.chunks) ++batch_sizes[c.timing.batch_size()];
    audio_s += double(r.audio.size()) / std::max(1u, r.started.sample_rate_hz());
    wall = std::max(wall, r.total_s);
  }
  std::sort(ttfa.begin(), ttfa.end());
  if (!ttfa.empty()) {
    const auto& first = results.front();
    std::printf("streams: %d ok, %d failed; %d tokens each in chunks of %d%s\n", streams - failed,
                failed, tokens, chunk, rate > 0 ? " (paced)" : "");
    if (first.status.ok()) {
      std::printf("model: %s, %u Euler steps\n", first.started.model_variant().c_str(),
                  first.started.n_timesteps());
    }
    std::printf("time to first audio: p50 %.1f ms, max %.1f ms\n", ttfa[ttfa.size() / 2] * 1e3,
                ttfa.back() * 1e3);
    std::printf("real-time factor (wall / audio, all streams): %.3f  (audio %.2f s in %.2f s)\n",
                wall / std::max(audio_s, 1e-9), audio_s, wall);
    std::printf("gap-free: %s; batch sizes seen:", first.gap_free ? "yes" : "NO");
    for (auto [size, n] : batch_sizes) std::printf(" %u x%d", size, n);
    std::printf("\n");
    if (!wav.empty() && first.status.ok()) {
      vocoder::client::WriteWav(wav, first.audio, static_cast<int>(first.started.sample_rate_hz()));
      std::printf("wrote %s (%.2f s)\n", wav.c_str(),
                  double(first.audio.size()) / first.started.sample_rate_hz());
    }
  }
  return failed == 0 ? 0 : 1;
}
