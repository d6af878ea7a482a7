#include "server/audio_encoding.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

namespace vocoder::server {

int BytesPerSample(v1::AudioEncoding encoding) {
  switch (encoding) {
    case v1::PCM_S16LE:
      return 2;
    case v1::PCM_F32LE:
      return 4;
    default:
      return 0;
  }
}

std::string EncodeAudio(const std::vector<float>& samples, v1::AudioEncoding encoding) {
  std::string out;
  if (encoding == v1::PCM_F32LE) {
    out.resize(samples.size() * sizeof(float));
    if (!out.empty()) std::memcpy(out.data(), samples.data(), out.size());
    return out;
  }
  out.resize(samples.size() * 2);
  for (size_t i = 0; i < samples.size(); ++i) {
    const float x = std::clamp(samples[i], -1.0f, 1.0f);
    const auto v = static_cast<int16_t>(std::lrint(x * 32767.0f));
    out[2 * i] = static_cast<char>(v & 0xff);
    out[2 * i + 1] = static_cast<char>((v >> 8) & 0xff);
  }
  return out;
}

std::array<float, 9> PhaseFor(uint64_t stream_id) {
  std::mt19937_64 rng(stream_id * 0x9e3779b97f4a7c15ULL);
  std::uniform_real_distribution<float> u(-static_cast<float>(M_PI), static_cast<float>(M_PI));
  std::array<float, 9> p{};
  for (size_t h = 1; h < p.size(); ++h) p[h] = u(rng);
  return p;
}

}  // namespace vocoder::server
