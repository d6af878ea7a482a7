#include <cmath>

#include "absl/strings/str_cat.h"
#include "model/vocoder.h"

namespace vocoder::model {

absl::Status ValidateVoice(const VoiceData& v, const Manifest& m) {
  const size_t p = v.prompt_tokens.size();
  if (p > static_cast<size_t>(kMaxPromptTokens)) {
    return absl::InvalidArgumentError(absl::StrCat("voice prompt has ", p, " tokens; at most ",
                                                   kMaxPromptTokens, " (10 s) are allowed"));
  }
  for (size_t i = 0; i < p; ++i) {
    if (v.prompt_tokens[i] < 0 || v.prompt_tokens[i] >= m.token_vocab) {
      return absl::InvalidArgumentError(absl::StrCat("voice prompt token ", i, " is ",
                                                     v.prompt_tokens[i], "; ids must be in 0..",
                                                     m.token_vocab - 1));
    }
  }
  const size_t want_feat = p * static_cast<size_t>(m.frames_per_token * m.mel_bins);
  if (v.prompt_feat.size() != want_feat) {
    return absl::InvalidArgumentError(absl::StrCat(
        "voice prompt_feat has ", v.prompt_feat.size(), " values; ", p, " prompt tokens need ",
        m.frames_per_token * p, " frames x ", m.mel_bins, " mel bins = ", want_feat));
  }
  for (float x : v.prompt_feat) {
    // Natural-log mel magnitudes: log(1e-5) = -11.5 at the floor.
    if (!std::isfinite(x) || x < -30.0f || x > 30.0f) {
      return absl::InvalidArgumentError(absl::StrCat(
          "voice prompt_feat holds ", x, "; log-mel values must be finite and within [-30, 30]"));
    }
  }
  if (v.embedding.size() != static_cast<size_t>(m.spk_dim)) {
    return absl::InvalidArgumentError(
        absl::StrCat("voice embedding has ", v.embedding.size(), " values; want ", m.spk_dim));
  }
  double norm = 0;
  for (float x : v.embedding) {
    if (!std::isfinite(x)) return absl::InvalidArgumentError("voice embedding is not finite");
    norm += double(x) * x;
  }
  if (norm == 0) return absl::InvalidArgumentError("voice embedding is all zeros");
  return absl::OkStatus();
}

absl::StatusOr<VoiceData> VoiceFromTensors(const std::map<std::string, HostTensor>& bag,
                                           const std::string& path) {
  auto get = [&](const char* key, bool integral) -> absl::StatusOr<const HostTensor*> {
    auto it = bag.find(key);
    if (it == bag.end()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": voice file lacks '", key, "'"));
    }
    const HostTensor& t = it->second;
    int64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0 || (d > 0 && numel > (int64_t{1} << 40) / d)) numel = -1;
      if (numel < 0) break;
      numel *= d;
    }
    const size_t held = integral ? t.i64.size() : t.f32.size();
    const size_t other = integral ? t.f32.size() : t.i64.size();
    if (numel < 0 || static_cast<size_t>(numel) != held || (other > 0 && held == 0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": voice tensor '", key, "' must be ", integral ? "integral" : "floating point",
          " with as many values as its shape says (", held, " held, ", numel, " by shape)"));
    }
    return &t;
  };
  auto tokens = get("prompt_token", true);
  if (!tokens.ok()) return tokens.status();
  auto feat = get("prompt_feat", false);
  if (!feat.ok()) return feat.status();
  auto embedding = get("embedding", false);
  if (!embedding.ok()) return embedding.status();
  VoiceData v;
  v.prompt_tokens = (*tokens)->i64;
  v.prompt_feat = (*feat)->f32;
  v.embedding = (*embedding)->f32;
  return v;
}

absl::Status PrepareJob(VocodeJob& job, const Manifest& m) {
  if (job.voice == nullptr) return absl::InvalidArgumentError("job has no voice");
  std::erase_if(job.tokens, [](int64_t t) { return t == kSosToken || t == kEosToken; });
  if (job.tokens.empty()) return absl::InvalidArgumentError("no speech tokens to vocode");
  for (size_t i = 0; i < job.tokens.size(); ++i) {
    if (job.tokens[i] < 0 || job.tokens[i] >= m.token_vocab) {
      return absl::InvalidArgumentError(absl::StrCat("token ", i, " is ", job.tokens[i],
                                                     "; speech token ids must be in 0..",
                                                     m.token_vocab - 1));
    }
  }
  const int64_t p = job.voice->prompt_tokens();
  const int64_t n = static_cast<int64_t>(job.tokens.size());
  if (p + n > m.max_row_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt (", p, ") + tokens (", n, ") = ", p + n, " exceeds the model's position table (",
        m.max_row_tokens, " tokens); send shorter chunks"));
  }
  if (job.context_tokens < 0 || job.context_tokens > n) {
    return absl::InvalidArgumentError(
        absl::StrCat("context_tokens ", job.context_tokens, " is outside 0..", n));
  }
  const int64_t frames = m.frames_per_token * n - (job.finalize ? 0 : m.lookahead_frames) -
                         m.frames_per_token * job.context_tokens;
  if (frames <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        n, " tokens with ", job.context_tokens, " of context",
        job.finalize ? "" : " and the 3-token lookahead held back", " leave no frame to emit"));
  }
  if (job.noise_offset < 0) return absl::InvalidArgumentError("noise_offset must be >= 0");
  if (job.hift_phase[0] != 0.0f) {
    return absl::InvalidArgumentError("hift_phase[0] (the fundamental) must be 0");
  }
  if (job.mel_cache.size() % static_cast<size_t>(m.mel_bins) != 0) {
    return absl::InvalidArgumentError("mel_cache size is not a multiple of the mel bins");
  }
  const int64_t k = static_cast<int64_t>(job.mel_cache.size()) / m.mel_bins;
  if (static_cast<int64_t>(job.source_cache.size()) > m.samples_per_frame * (k + frames)) {
    return absl::InvalidArgumentError("source_cache is longer than the audio it would overwrite");
  }
  return absl::OkStatus();
}

namespace {

absl::Status CheckJobs(absl::Span<VocodeJob* const> jobs, absl::Span<const int> n_timesteps,
                       const Manifest& m, const Vocoder& runner) {
  for (size_t i = 0; i < jobs.size(); ++i) {
    if (!n_timesteps.empty()) {
      const int n = n_timesteps[i];
      if (n <= 0 || n > 100) {
        return absl::InvalidArgumentError(
            absl::StrCat("job ", i, ": n_timesteps must be in 1..100; was ", n));
      }
    }
    if (auto s = PrepareJob(*jobs[i], m); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("job ", i, ": ", s.message()));
    }
    if (jobs[i]->voice->prepared_by != &runner) {
      return absl::InvalidArgumentError(
          absl::StrCat("job ", i, ": voice was not prepared by this runner"));
    }
  }
  return absl::OkStatus();
}

// Every id in the set, none twice.
absl::Status CheckRows(const FlowBatch& batch, absl::Span<const RowId> rows, const char* what) {
  for (size_t i = 0; i < rows.size(); ++i) {
    if (batch.n_timesteps(rows[i]) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": row ", rows[i], " is not in the running set"));
    }
    for (size_t k = 0; k < i; ++k) {
      if (rows[k] == rows[i]) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": row ", rows[i], " is listed twice"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Vocoder::Run(absl::Span<VocodeJob* const> jobs, int n_timesteps) {
  if (auto s = PrepareBatch(jobs, n_timesteps, manifest(), *this); !s.ok()) return s;
  auto batch = NewFlowBatch();
  const std::vector<int> n(jobs.size(), n_timesteps);
  auto rows = Admit(*batch, jobs, n);
  if (!rows.ok()) return rows.status();
  while (batch->pending_rows() > 0) {
    if (auto s = Step(*batch); !s.ok()) return s;
  }
  return Retire(*batch, *rows, jobs);
}

absl::Status PrepareBatch(absl::Span<VocodeJob* const> jobs, int n_timesteps, const Manifest& m,
                          const Vocoder& runner) {
  if (jobs.empty()) return absl::InvalidArgumentError("empty batch");
  if (n_timesteps <= 0 || n_timesteps > 100) {
    return absl::InvalidArgumentError(
        absl::StrCat("n_timesteps must be in 1..100; was ", n_timesteps));
  }
  return CheckJobs(jobs, {}, m, runner);
}

absl::Status PrepareAdmit(absl::Span<VocodeJob* const> jobs, absl::Span<const int> n_timesteps,
                          const Manifest& m, const Vocoder& runner) {
  if (jobs.empty()) return absl::InvalidArgumentError("empty batch");
  if (n_timesteps.size() != jobs.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Admit: ", n_timesteps.size(), " n_timesteps for ", jobs.size(), " jobs"));
  }
  return CheckJobs(jobs, n_timesteps, m, runner);
}

absl::Status CheckRetire(const FlowBatch& batch, absl::Span<const RowId> rows, size_t jobs) {
  if (auto s = CheckRows(batch, rows, "Retire"); !s.ok()) return s;
  if (jobs != rows.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Retire: ", jobs, " jobs for ", rows.size(), " rows"));
  }
  for (RowId r : rows) {
    if (!batch.done(r)) {
      return absl::FailedPreconditionError(
          absl::StrCat("Retire: row ", r, " has not finished its ODE (", batch.steps_taken(r),
                       " of ", batch.n_timesteps(r), " steps)"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckDrop(const FlowBatch& batch, absl::Span<const RowId> rows) {
  return CheckRows(batch, rows, "Drop");
}

}  // namespace vocoder::model
