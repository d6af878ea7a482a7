// Fuzzes the voice data path: a voice file's tensors (VoiceFromTensors, what
// ReadVoiceFile does after torch loads the file) and the conditioning check
// every voice passes before it reaches the device (ValidateVoice: voice files
// at start and RegisterVoice uploads), against models of any valid shape.
// Properties: no crash, overflow or out-of-range access; every accepted voice
// satisfies the invariants the runner relies on (checked here independently).
#include <fuzzer/FuzzedDataProvider.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "model/manifest.h"
#include "model/vocoder.h"

namespace {

using vocoder::model::HostTensor;

HostTensor MakeTensor(FuzzedDataProvider& in) {
  HostTensor t;
  const int dims = in.ConsumeIntegralInRange(0, 3);
  for (int i = 0; i < dims; ++i) t.shape.push_back(in.ConsumeIntegralInRange<int64_t>(-1, 300));
  const bool integral = in.ConsumeBool();
  // Usually as many values as the shape says; sometimes not.
  int64_t numel = 1;
  for (int64_t d : t.shape) numel *= d < 0 ? 0 : d;
  size_t n = static_cast<size_t>(numel);
  if (in.ConsumeIntegralInRange(0, 7) == 0) n = in.ConsumeIntegralInRange<size_t>(0, 64);
  n = std::min<size_t>(n, 1 << 15);  // a 250-token prompt at 2 x 64 bins fits
  if (integral) {
    t.i64.resize(n);
    for (auto& v : t.i64) v = in.ConsumeIntegralInRange<int64_t>(-2, 6600);
  } else {
    t.f32.resize(n);
    for (auto& v : t.f32) {
      switch (in.ConsumeIntegralInRange(0, 9)) {
        case 0:
          v = std::nanf("");
          break;
        case 1:
          v = in.ConsumeBool() ? INFINITY : -INFINITY;
          break;
        case 2:
          v = in.ConsumeFloatingPoint<float>();
          break;
        default:
          v = in.ConsumeFloatingPointInRange<float>(-12.0f, 4.0f);
      }
    }
  }
  return t;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  // A model within LoadManifest's ranges (small dims keep inputs small).
  vocoder::model::Manifest m;
  m.frames_per_token = in.ConsumeIntegralInRange(1, 4);
  m.mel_bins = in.ConsumeIntegralInRange(1, 96);
  m.spk_dim = in.ConsumeIntegralInRange(1, 256);
  m.token_vocab = in.ConsumeIntegralInRange(1, vocoder::model::kMaxTokenVocab);
  std::map<std::string, HostTensor> bag;
  for (const char* key : {"prompt_token", "prompt_feat", "embedding"}) {
    if (in.ConsumeIntegralInRange(0, 15) != 0) bag[key] = MakeTensor(in);
  }
  if (in.ConsumeBool()) bag["extra"] = MakeTensor(in);

  auto voice = vocoder::model::VoiceFromTensors(bag, "voices/fuzz.pt");
  if (!voice.ok()) {
    if (voice.status().message().empty()) std::abort();
    return 0;
  }
  if (!vocoder::model::ValidateVoice(*voice, m).ok()) return 0;
  // Accepted: the invariants the runner's tensor shapes rely on.
  const size_t p = voice->prompt_tokens.size();
  if (p > static_cast<size_t>(vocoder::model::kMaxPromptTokens)) std::abort();
  for (int64_t t : voice->prompt_tokens) {
    if (t < 0 || t >= m.token_vocab) std::abort();
  }
  if (voice->prompt_feat.size() != p * m.frames_per_token * m.mel_bins) std::abort();
  for (float x : voice->prompt_feat) {
    if (!std::isfinite(x) || std::fabs(x) > 30.0f) std::abort();
  }
  if (voice->embedding.size() != static_cast<size_t>(m.spk_dim)) std::abort();
  double norm = 0;
  for (float x : voice->embedding) {
    if (!std::isfinite(x)) std::abort();
    norm += double(x) * x;
  }
  if (!(norm > 0)) std::abort();
  return 0;
}
