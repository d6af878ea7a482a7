#include "tools/client/vocoder_client.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <thread>

namespace vocoder::client {
namespace {
using Clock = std::chrono::steady_clock;
double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
}  // namespace

std::vector<float> DecodeAudio(const std::string& bytes, v1::AudioEncoding encoding) {
  std::vector<float> out;
  if (encoding == v1::PCM_F32LE) {
    out.resize(bytes.size() / sizeof(float));
    std::memcpy(out.data(), bytes.data(), out.size() * sizeof(float));
    return out;
  }
  out.resize(bytes.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) {
    const auto lo = static_cast<uint8_t>(bytes[2 * i]);
    const auto hi = static_cast<uint8_t>(bytes[2 * i + 1]);
    out[i] = static_cast<float>(static_cast<int16_t>(lo | (hi << 8))) / 32767.0f;
  }
  return out;
}

std::vector<int64_t> DemoTokens(int n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> d(0, 6560);
  std::vector<int64_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = d(rng);
  return t;
}

bool WriteWav(const std::string& path, const std::vector<float>& samples, int rate) {
  std::ofstream f(path, std::ios::binary);
  if (!f) return false;
  auto u32 = [&](uint32_t v) { f.write(reinterpret_cast<const char*>(&v), 4); };
  auto u16 = [&](uint16_t v) { f.write(reinterpret_cast<const char*>(&v), 2); };
  const auto data = static_cast<uint32_t>(samples.size() * 2);
  f.write("RIFF", 4);
  u32(36 + data);
  f.write("WAVEfmt ", 8);
  u32(16);
  u16(1);
  u16(1);
  u32(static_cast<uint32_t>(rate));
  u32(static_cast<uint32_t>(rate * 2));
  u16(2);
  u16(16);
  f.write("data", 4);
  u32(data);
  for (float s : samples) {
    u16(static_cast<uint16_t>(
        static_cast<int16_t>(std::lrint(std::clamp(s, -1.0f, 1.0f) * 32767))));
  }
  return static_cast<bool>(f);
}

StreamResult VocoderClient::Stream(const std::vector<int64_t>& tokens, const StreamOptions& o) {
  StreamResult result;
  grpc::ClientContext ctx;
  if (o.deadline.count() > 0) ctx.set_deadline(std::chrono::system_clock::now() + o.deadline);
  auto stream = stub_->StreamVocode(&ctx);
  std::mutex mu;
  std::map<uint64_t, Clock::time_point> sent;  // sequence number -> send time
  Clock::time_point first_sent{};
  const auto t0 = Clock::now();
  std::atomic<bool> reading_done{false};
  // Cancels the call once options.stop is set; true from then on.
  auto stopped = [&] {
    if (o.stop == nullptr || !o.stop->load()) return false;
    if (!result.stopped) {
      result.stopped = true;
      ctx.TryCancel();
    }
    return true;
  };

  std::thread writer([&] {
    v1::StreamVocodeRequest config;
    config.mutable_config()->set_voice_id(o.voice_id);
    config.mutable_config()->set_encoding(o.encoding);
    config.mutable_config()->set_n_timesteps(o.n_timesteps);
    config.mutable_config()->set_request_id(o.request_id);
    config.mutable_config()->set_model_variant(o.model_variant);
    if (!stream->Write(config)) return;
    const size_t step = static_cast<size_t>(std::max(1, o.chunk_tokens));
    uint64_t seq = 0;
    for (size_t i = 0; i < tokens.size() || seq == 0; i += step, ++seq) {
      const size_t end = std::min(tokens.size(), i + step);
      if (o.tokens_per_second > 0) {
        // A T3 front-end produces token i at i / rate seconds.
        const auto due =
            t0 + std::chrono::duration_cast<Clock::duration>(
                     std::chrono::duration<double>(static_cast<double>(end) / o.tokens_per_second));
        while (Clock::now() < due && !stopped()) {
          std::this_thread::sleep_until(
              std::min(due, Clock::now() + std::chrono::milliseconds(50)));
        }
      }
      if (stopped()) return;
      v1::StreamVocodeRequest r;
      for (size_t k = i; k < end; ++k)
        r.mutable_chunk()->add_tokens(static_cast<uint32_t>(tokens[k]));
      r.mutable_chunk()->set_sequence_number(seq);
      r.mutable_chunk()->set_is_final(end >= tokens.size());
      {
        std::lock_guard lock(mu);
        sent[seq] = Clock::now();
        if (seq == 0) first_sent = sent[seq];
      }
      if (!stream->Write(r)) return;
      if (end >= tokens.size()) break;
    }
    stream->WritesDone();
    // A stop request must also reach a call whose input is all sent.
    while (o.stop != nullptr && !reading_done.load() && !stopped()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });

  v1::StreamVocodeResponse r;
  while (stream->Read(&r)) {
    const auto now = Clock::now();
    if (r.has_started()) {
      result.started = r.started();
      continue;
    }
    const v1::AudioChunk& a = r.audio();
    ChunkRecord c;
    c.sequence_number = a.sequence_number();
    c.start_sample = a.start_sample();
    c.num_samples = a.num_samples();
    c.timing = r.timing();
    c.received_at = now;
    c.sample_rate_hz = result.started.sample_rate_hz();
    {
      std::lock_guard lock(mu);
      if (auto it = sent.find(a.sequence_number()); it != sent.end()) {
        c.sent_at = it->second;
        c.latency_s = Seconds(now - it->second);
      }
      if (result.first_audio_s < 0 && a.num_samples() > 0) {
        result.first_audio_s = Seconds(now - first_sent);
        c.first_audio = true;
        c.first_audio_s = result.first_audio_s;
      }
    }
    if (o.on_chunk) o.on_chunk(c);
    if (a.start_sample() != result.audio.size()) result.gap_free = false;
    const auto samples = DecodeAudio(a.audio(), result.started.encoding());
    result.audio.insert(result.audio.end(), samples.begin(), samples.end());
    result.chunks.push_back(c);
    if (o.cancel_after_audio_chunks >= 0 &&
        static_cast<int>(result.chunks.size()) >= o.cancel_after_audio_chunks) {
      ctx.TryCancel();
    }
  }
  reading_done = true;
  writer.join();
  result.status = stream->Finish();
  result.total_s = Seconds(Clock::now() - t0);
  return result;
}

namespace {

bool IsIpv4(const std::string& host) {
  int parts = 0;
  size_t start = 0;
  while (start <= host.size()) {
    const size_t dot = std::min(host.find('.', start), host.size());
    const std::string part = host.substr(start, dot - start);
    if (part.empty() || part.size() > 3 ||
        !std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
        std::stoi(part) > 255) {
      return false;
    }
    ++parts;
    start = dot + 1;
  }
  return parts == 4;
}

}  // namespace

std::shared_ptr<grpc::Channel> CreateVocoderChannel(const std::string& targets,
                                                    const ChannelOptions& options,
                                                    std::string* error) {
  std::vector<std::string> list;
  for (size_t start = 0; start <= targets.size();) {
    const size_t comma = std::min(targets.find(',', start), targets.size());
    if (comma > start) list.push_back(targets.substr(start, comma - start));
    start = comma + 1;
  }
  if (list.empty()) {
    if (error != nullptr) *error = "no target given";
    return nullptr;
  }
  std::string uri = list.front();
  if (list.size() > 1) {
    // gRPC's ipv4:/ipv6: schemes take a comma-separated address list.
    std::string scheme;
    for (const auto& t : list) {
      const size_t colon = t.rfind(':');
      const std::string host = colon == std::string::npos ? "" : t.substr(0, colon);
      const std::string kind = IsIpv4(host) ? "ipv4"
                               : host.size() > 2 && host.front() == '[' && host.back() == ']'
                                   ? "ipv6"
                                   : "";
      if (kind.empty() || (!scheme.empty() && kind != scheme) || colon + 1 >= t.size()) {
        if (error != nullptr) {
          *error = "several targets must all be IPv4 or all [IPv6] addresses with ports; was '" +
                   t + "' (for host names use one dns:///name:port target)";
        }
        return nullptr;
      }
      scheme = kind;
    }
    uri = scheme + ":" + targets;
  }
  grpc::ChannelArguments args;
  if (options.local_subchannel_pool) args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  args.SetLoadBalancingPolicyName("round_robin");
  return grpc::CreateCustomChannel(uri, grpc::InsecureChannelCredentials(), args);
}

}  // namespace vocoder::client
