// Fuzzes LoadManifest with the input as DIR/manifest.json, in a directory
// holding the five model files (empty), as vocoderd reads it at start.
// Properties:
//   - LoadManifest never crashes, hangs or throws (nlohmann::json throws on
//     bad input and on type mismatches: each must become a status).
//   - An accepted manifest's constants are inside the runner's ranges, its
//     paths stay inside the model directory, and a voice checked against it
//     (ValidateVoice) and a job (PrepareJob) run without overflow or
//     out-of-range access (UBSan and ASan watch the arithmetic).
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "model/manifest.h"
#include "model/vocoder.h"
#include "tests/fuzz/fuzz_files.h"

namespace {

const std::string& ModelDir() {
  static const std::string dir = [] {
    std::string d = vocoder::fuzz::ScratchDir() + "/model";
    std::filesystem::create_directories(d);
    for (const char* f :
         {"encoder.pt", "estimator.pt", "hift_source.pt", "hift_decode.pt", "buffers.pt"}) {
      vocoder::fuzz::WriteScratch(std::string("model/") + f, nullptr, 0);
    }
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& dir = ModelDir();
  vocoder::fuzz::WriteScratch("model/manifest.json", data, size);
  auto m = vocoder::model::LoadManifest(dir, /*verify_hashes=*/true);
  if (!m.ok()) {
    if (m.status().message().empty()) std::abort();
    return 0;
  }
  if (m->harmonics > vocoder::model::kMaxHarmonics || m->mel_bins <= 0 ||
      m->frames_per_token <= 0 || m->token_vocab > vocoder::model::kMaxTokenVocab) {
    std::abort();
  }
  for (const auto& [rel, sha] : m->files) {
    if (std::filesystem::path(rel).is_absolute()) std::abort();
    for (const auto& part : std::filesystem::path(rel)) {
      if (part == "..") std::abort();
    }
  }
  // A voice at the largest prompt the model allows, then a job using it.
  vocoder::model::VoiceData v;
  const int p = vocoder::model::kMaxPromptTokens;
  v.prompt_tokens.assign(p, m->token_vocab - 1);
  v.prompt_feat.assign(static_cast<size_t>(p) * m->frames_per_token * m->mel_bins, 0.5f);
  v.embedding.assign(static_cast<size_t>(m->spk_dim), 0.1f);
  if (!vocoder::model::ValidateVoice(v, *m).ok()) std::abort();  // a valid voice for this model
  auto voice = std::make_shared<vocoder::model::Voice>();
  voice->data = std::move(v);
  vocoder::model::VocodeJob job;
  job.voice = voice;
  job.tokens.assign(25, 0);
  job.context_tokens = 3;
  job.finalize = (size & 1) != 0;
  job.mel_cache.assign(static_cast<size_t>(m->mel_bins) * 4, 0.0f);
  (void)vocoder::model::PrepareJob(job, *m);
  return 0;
}
