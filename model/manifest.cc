#include "model/manifest.h"

#include <openssl/evp.h>

#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace vocoder::model {
namespace {

using nlohmann::json;

template <typename T>
void Read(const json& j, const char* key, T& out) {
  if (j.contains(key) && !j.at(key).is_null()) out = j.at(key).get<T>();
}

// What each variant's sampler and traced estimator are (docs/model-format.md).
struct VariantSpec {
  const char* name;
  int n_timesteps;         // default when the manifest has none
  double cfg_rate;         // default; turbo allows only 0
  const char* t_schedule;  // the only schedule the variant samples on
  bool guidance;           // cfg_rate > 0 allowed (CFG by batch doubling)
  int n_estimator_inputs;  // prefix of kEstimatorInputs
};
constexpr const char* kEstimatorInputs[] = {"x", "mask", "mu", "t", "spks", "cond", "r"};
constexpr VariantSpec kVariants[] = {
    {kVariantStandard, 10, 0.7, "cosine", true, 6},
    {kVariantTurbo, 2, 0.0, "linear", false, 7},
};

const VariantSpec* FindVariant(const std::string& name) {
  for (const VariantSpec& v : kVariants) {
    if (name == v.name) return &v;
  }
  return nullptr;
}

}  // namespace

absl::StatusOr<std::string> Sha256File(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr);
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<size_t>(in.gcount()));
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx.get(), digest, &len);
  std::string hex;
  for (unsigned int i = 0; i < len; ++i) absl::StrAppendFormat(&hex, "%02x", digest[i]);
  return hex;
}

absl::Status CheckVariantServed(const Manifest& m) {
  if (m.variant == kVariantStandard || m.variant == kVariantTurbo) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("model in ", m.dir, " is the '", m.variant,
                   "' variant, which this build of vocoderd does not serve (it serves standard "
                   "and turbo) and will not run as another variant: re-export the model with "
                   "tools/export_s3gen.py --variant standard|turbo"));
}

absl::StatusOr<Manifest> LoadManifest(const std::string& dir, bool verify_hashes,
                                      bool require_weights) {
  auto m = ReadManifest(dir, verify_hashes, require_weights);
  if (!m.ok()) return m.status();
  if (auto s = CheckVariantServed(*m); !s.ok()) return s;
  return m;
}

absl::StatusOr<Manifest> ReadManifest(const std::string& dir, bool verify_hashes,
                                      bool require_weights) {
  namespace fs = std::filesystem;
  const std::string path = dir + "/manifest.json";
  if (!fs::exists(path)) {
    return absl::NotFoundError(absl::StrCat(
        "no manifest.json in model directory '", dir,
        "'; export one with tools/export_s3gen.py --random-init --seed 0 --size tiny --out ", dir));
  }
  json j;
  try {
    std::ifstream in(path);
    j = json::parse(in);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not valid JSON: ", e.what()));
  }
  Manifest m;
  m.dir = dir;
  try {
    const std::string format = j.value("format", "");
    if (format != kManifestFormat) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": format '", format,
                                                     "' is not supported (want '", kManifestFormat,
                                                     "'); re-export with this version's tool"));
    }
    Read(j, "variant", m.variant);
    const VariantSpec* spec = FindVariant(m.variant);
    if (spec == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": variant '", m.variant,
          "' is not supported (known: standard, turbo); export with tools/export_s3gen.py "
          "--variant standard|turbo"));
    }
    m.n_timesteps = spec->n_timesteps;
    m.cfg_rate = spec->cfg_rate;
    m.t_schedule = spec->t_schedule;
    m.estimator_inputs.assign(kEstimatorInputs, kEstimatorInputs + spec->n_estimator_inputs);
    Read(j, "size", m.size);
    Read(j, "source", m.source);
    Read(j, "device", m.device);
    if (j.contains("dtypes")) {
      Read(j["dtypes"], "encoder", m.encoder_dtype);
      Read(j["dtypes"], "estimator", m.estimator_dtype);
      Read(j["dtypes"], "hift", m.hift_dtype);
    }
    Read(j, "sample_rate", m.sample_rate);
    Read(j, "samples_per_frame", m.samples_per_frame);
    Read(j, "frames_per_token", m.frames_per_token);
    Read(j, "token_vocab", m.token_vocab);
    Read(j, "mel_bins", m.mel_bins);
    Read(j, "spk_dim", m.spk_dim);
    Read(j, "harmonics", m.harmonics);
    Read(j, "n_timesteps", m.n_timesteps);
    Read(j, "cfg_rate", m.cfg_rate);
    Read(j, "t_schedule", m.t_schedule);
    Read(j, "estimator_inputs", m.estimator_inputs);
    Read(j, "lookahead_frames", m.lookahead_frames);
    Read(j, "max_positions", m.max_positions);
    Read(j, "max_row_tokens", m.max_row_tokens);
    Read(j, "flow_noise_frames", m.flow_noise_frames);
    Read(j, "hift_noise_samples", m.hift_noise_samples);
    Read(j, "torch_version", m.torch_version);
    Read(j, "voices", m.voices);
    Read(j, "golden", m.golden);
    Read(j, "files", m.files);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": malformed field: ", e.what()));
  }
  if (m.device != "cpu" && m.device != "cuda") {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": device must be 'cpu' or 'cuda'; was '", m.device, "'"));
  }
  const VariantSpec& spec = *FindVariant(m.variant);
  if (m.t_schedule != "cosine" && m.t_schedule != "linear") {
    return absl::InvalidArgumentError(absl::StrCat(path, ": t_schedule '", m.t_schedule,
                                                   "' is not supported (cosine or linear)"));
  }
  if (m.t_schedule != spec.t_schedule) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": t_schedule '", m.t_schedule, "' does not fit variant '", m.variant,
        "', which samples on the ", spec.t_schedule, " schedule; re-export the model"));
  }
  if (!spec.guidance && m.cfg_rate != 0.0) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": cfg_rate must be 0 for variant '", m.variant,
        "' (its decoder was distilled without classifier-free guidance); was ", m.cfg_rate));
  }
  const std::vector<std::string> want_inputs(kEstimatorInputs,
                                             kEstimatorInputs + spec.n_estimator_inputs);
  if (m.estimator_inputs != want_inputs) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": estimator_inputs [", absl::StrJoin(m.estimator_inputs, ", "),
                     "] do not match variant '", m.variant, "' (its estimator takes [",
                     absl::StrJoin(want_inputs, ", "), "]); re-export the model"));
  }
  // The ranges the runner's arithmetic and fixed-size state rely on (e.g.
  // VocodeJob::hift_phase holds kMaxHarmonics values; products of these stay
  // far from int overflow).
  struct Range {
    const char* name;
    int64_t value, lo, hi;
  };
  for (const Range& r : std::initializer_list<Range>{
           {"sample_rate", m.sample_rate, 1, 384000},
           {"samples_per_frame", m.samples_per_frame, 1, 8192},
           {"frames_per_token", m.frames_per_token, 1, 16},
           {"token_vocab", m.token_vocab, 1, kMaxTokenVocab},
           {"mel_bins", m.mel_bins, 1, 1024},
           {"spk_dim", m.spk_dim, 1, 4096},
           {"harmonics", m.harmonics, 1, kMaxHarmonics},
           {"n_timesteps", m.n_timesteps, 1, 100},
           {"lookahead_frames", m.lookahead_frames, 0, 64},
           {"max_positions", m.max_positions, 1, 1 << 20},
           {"max_row_tokens", m.max_row_tokens, 1, m.max_positions},
           {"flow_noise_frames", m.flow_noise_frames, 1, int64_t{1} << 28},
           {"hift_noise_samples", m.hift_noise_samples, 1, int64_t{1} << 32}}) {
    if (r.value < r.lo || r.value > r.hi) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": ", r.name, " must be in ", r.lo, "..", r.hi, "; was ", r.value));
    }
  }
  if (!(m.cfg_rate >= 0.0 && m.cfg_rate <= 10.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": cfg_rate must be in [0, 10]; was ", m.cfg_rate));
  }
  // Every path the manifest names stays inside the model directory.
  std::vector<std::string> paths = m.voices;
  if (!m.golden.empty()) paths.push_back(m.golden);
  for (const auto& [rel, sha] : m.files) paths.push_back(rel);
  for (const std::string& rel : paths) {
    const fs::path p(rel);
    bool escapes = rel.empty() || p.is_absolute();
    for (const auto& part : p) escapes = escapes || part == "..";
    if (escapes) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": path '", rel, "' must be relative and inside the model directory"));
    }
  }
  auto is_weights = [](const std::string& rel) {
    for (const char* w : kWeightFiles) {
      if (rel == w) return true;
    }
    return false;
  };
  for (const char* required : kWeightFiles) {
    if (!require_weights) break;
    if (m.files.count(required) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": 'files' does not list ", required, "; re-export the model"));
    }
  }
  // Every file present first, so a missing file is named as missing even
  // when another one is also corrupt.
  for (const auto& [rel, sha] : m.files) {
    if (!require_weights && is_weights(rel)) continue;
    const std::string file = m.Path(rel);
    if (!fs::is_regular_file(file)) {
      return absl::NotFoundError(
          absl::StrCat("model file ", file, " listed in the manifest is missing (or not a file)"));
    }
  }
  for (const auto& [rel, sha] : m.files) {
    if (!verify_hashes) break;
    if (!require_weights && is_weights(rel)) continue;
    const std::string file = m.Path(rel);
    auto actual = Sha256File(file);
    if (!actual.ok()) return actual.status();
    if (*actual != sha) {
      return absl::DataLossError(absl::StrCat("model file ", file, " has sha256 ", *actual,
                                              " but the manifest says ", sha,
                                              "; the file is corrupt or from another export"));
    }
  }
  return m;
}

}  // namespace vocoder::model
