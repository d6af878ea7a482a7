// The LibTorch implementation of Vocoder: four traced modules (encoder,
// estimator, HiFT source, HiFT decode) and the Euler/CFG loop in C++.
// The only translation unit with the model's torch code; see
// docs/model-format.md for the algorithm it implements.
#include <ATen/Parallel.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/core/InferenceMode.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>
#include <dlfcn.h>
#include <torch/script.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <optional>

#include "absl/strings/str_cat.h"
#include "model/device.h"
#include "model/runtime.h"
#include "model/sim_vocoder.h"
#include "model/vocoder.h"

namespace vocoder::model {

struct VoiceTensors {
  torch::Tensor prompt_tokens;  // (P,) int64, host
  torch::Tensor prompt_feat_t;  // (80, 2P) f32, device
  torch::Tensor embedding;      // (192,) f32, device
};

namespace {

using torch::indexing::None;
using torch::indexing::Slice;

// What every call into torch needs on its thread; all of it is thread-local.
// - The JIT's profiling executor off: the modules load on the main thread but
//   run on the batcher's GPU thread, where it would otherwise stay on and
//   re-specialize the graphs for every new batch shape.
// - Work off the GPU thread (loading, voices) single-threaded. torch's CPU
//   ops use OpenMP, which keeps a worker team per calling thread; once the
//   process holds more OpenMP threads than cores, libgomp stops spinning at
//   barriers and sleeps instead, and every parallel region pays futex
//   wake-ups. Measured on 2 cores: without both, the server's batches took
//   2.2x the time of the same job in vocoder-bench (one thread does all there).
// The thread count is set with libgomp's own per-thread setter:
// at::set_num_threads also stores a process-wide default and clears
// oneDNN's cache, neither of which a voice upload should do mid-batch.
class TorchThreadGuard {
 public:
  enum Role { kCompute, kSide };
  explicit TorchThreadGuard(Role role) : optimize_(torch::jit::getGraphExecutorOptimize()) {
    torch::jit::setGraphExecutorOptimize(false);
    static const int compute_threads = at::get_num_threads();  // the default, before any change
    using SetThreads = void (*)(int);
    static const auto set_threads =
        reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
    thread_local int threads = 0;  // what this guard last set on this thread
    const int want = role == kSide ? 1 : compute_threads;
    if (set_threads != nullptr && threads != want) {
      at::get_num_threads();  // torch's lazy per-thread init first, or it would undo ours
      set_threads(want);
      threads = want;
    }
  }
  ~TorchThreadGuard() { torch::jit::setGraphExecutorOptimize(optimize_); }
  TorchThreadGuard(const TorchThreadGuard&) = delete;
  TorchThreadGuard& operator=(const TorchThreadGuard&) = delete;

 private:
  c10::InferenceMode mode_;
  bool optimize_;
};

template <typename F>
absl::Status Guarded(const char* what, F&& f) {
  try {
    return f();
  } catch (const c10::OutOfMemoryError& e) {
    return absl::ResourceExhaustedError(
        absl::StrCat(what, ": device out of memory; lower --max-batch-size or --max-batch-tokens (",
                     e.what_without_backtrace(), ")"));
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  }
}

torch::ScalarType DType(const std::string& name) {
  if (name == "bfloat16") return torch::kBFloat16;
  if (name == "float16") return torch::kHalf;
  return torch::kFloat32;
}

class TorchFlowBatch final : public FlowBatch {
 public:
  int rows() const override { return static_cast<int>(P.size()); }
  std::vector<int> steps_taken() const override { return steps; }
  int n_timesteps() const override { return n; }

  int n = 10;
  std::vector<int64_t> P, T,
      emit_begin;          // per row: prompt tokens, valid frames, first emitted frame
  std::vector<int> steps;  // per row
  torch::Tensor x, mask, mu, spks, cond;  // (B, 80, Tmax) f32 etc., device
  torch::Tensor t_span;                   // (n+1,) f32, host
};

class TorchVocoder final : public Vocoder {
 public:
  static absl::StatusOr<std::unique_ptr<Vocoder>> Load(const std::string& dir,
                                                       const std::string& device_name,
                                                       const LoadOptions& options) {
    auto device = ParseDevice(device_name);
    if (!device.ok()) return device.status();
    if (auto s = CheckDevice(*device); !s.ok()) return s;
    // Before any TorchThreadGuard: the guard takes this as the compute count.
    if (options.intra_op_threads > 0) at::set_num_threads(options.intra_op_threads);
    auto manifest = LoadManifest(dir, options.verify_hashes);
    if (!manifest.ok()) return manifest.status();
    const std::string want = device->is_cuda() ? "cuda" : "cpu";
    if (manifest->device != want) {
      return absl::FailedPreconditionError(absl::StrCat(
          "model in ", dir, " was exported for ", manifest->device, " but --device is ",
          device->ToString(), "; traced modules bake their device: re-export with ",
          "tools/export_s3gen.py --device ", want, " (or run with --device ", manifest->device,
          manifest->device == "cuda" ? ":0" : "", ")"));
    }
    std::unique_ptr<TorchVocoder> v(new TorchVocoder(*manifest, *device));
    if (auto s = Guarded("loading model", [&] { return v->LoadModules(); }); !s.ok()) return s;
    return std::unique_ptr<Vocoder>(std::move(v));
  }

  const Manifest& manifest() const override { return m_; }
  std::string device() const override { return device_.ToString(); }

  absl::StatusOr<std::shared_ptr<const Voice>> PrepareVoice(VoiceData data) override {
    if (auto s = ValidateVoice(data, m_); !s.ok()) return s;
    auto voice = std::make_shared<Voice>();
    absl::Status s = Guarded("uploading voice", [&] {
      TorchThreadGuard guard(TorchThreadGuard::kSide);
      auto t = std::make_shared<VoiceTensors>();
      const int64_t p = static_cast<int64_t>(data.prompt_tokens.size());
      t->prompt_tokens = torch::from_blob(data.prompt_tokens.data(), {p}, torch::kInt64).clone();
      t->prompt_feat_t = torch::from_blob(data.prompt_feat.data(),
                                          {m_.frames_per_token * p, m_.mel_bins}, torch::kFloat32)
                             .t()
                             .contiguous()
                             .to(torch_device_);
      t->embedding = torch::from_blob(data.embedding.data(), {m_.spk_dim}, torch::kFloat32)
                         .clone()
                         .to(torch_device_);
      voice->tensors = std::move(t);
      voice->prepared_by = this;
      return absl::OkStatus();
    });
    if (!s.ok()) return s;
    voice->data = std::move(data);
    return std::shared_ptr<const Voice>(std::move(voice));
  }

  absl::Status Run(absl::Span<VocodeJob* const> jobs, int n_timesteps) override {
    auto batch = Encode(jobs, n_timesteps);
    if (!batch.ok()) return batch.status();
    while (!(*batch)->done()) {
      if (auto s = Step(**batch); !s.ok()) return s;
    }
    return Vocode(**batch, jobs);
  }

  absl::StatusOr<std::unique_ptr<FlowBatch>> Encode(absl::Span<VocodeJob* const> jobs,
                                                    int n_timesteps) override {
    if (auto s = PrepareBatch(jobs, n_timesteps, m_, *this); !s.ok()) return s;
    auto batch = std::make_unique<TorchFlowBatch>();
    absl::Status s = Guarded("encoder", [&] { return EncodeLocked(jobs, n_timesteps, *batch); });
    if (!s.ok()) return s;
    return std::unique_ptr<FlowBatch>(std::move(batch));
  }

  absl::Status Step(FlowBatch& base) override {
    auto& b = static_cast<TorchFlowBatch&>(base);
    return Guarded("estimator", [&] { return StepLocked(b); });
  }

  absl::Status Vocode(FlowBatch& base, absl::Span<VocodeJob* const> jobs) override {
    auto& b = static_cast<TorchFlowBatch&>(base);
    if (auto s = CheckVocodeBatch(b, jobs.size()); !s.ok()) return s;
    return Guarded("hift", [&] { return VocodeLocked(b, jobs); });
  }

 private:
  TorchVocoder(Manifest m, Device device)
      : m_(std::move(m)),
        device_(device),
        torch_device_(device.is_cuda() ? torch::Device(torch::kCUDA, device.index)
                                       : torch::Device(torch::kCPU)),
        flow_dtype_(DType(m_.estimator_dtype)),
        encoder_dtype_(DType(m_.encoder_dtype)) {}

  absl::Status LoadModules() {
    TorchThreadGuard guard(TorchThreadGuard::kSide);
    auto load = [&](const char* name) {
      auto mod = torch::jit::load(m_.Path(name), torch_device_);
      mod.eval();
      return mod;
    };
    encoder_ = load("encoder.pt");
    estimator_ = load("estimator.pt");
    hift_source_ = load("hift_source.pt");
    hift_decode_ = load("hift_decode.pt");
    auto buffers = torch::jit::load(m_.Path("buffers.pt"), torch_device_);
    for (const auto& b : buffers.named_buffers()) {
      if (b.name == "flow_noise") flow_noise_ = b.value.to(torch::kFloat32);
      if (b.name == "hift_noise") hift_noise_ = b.value.to(torch::kFloat32);
    }
    if (!flow_noise_.defined() || !hift_noise_.defined()) {
      return absl::InvalidArgumentError("buffers.pt lacks flow_noise or hift_noise");
    }
    if (flow_noise_.size(0) != m_.mel_bins || flow_noise_.size(1) != m_.flow_noise_frames ||
        hift_noise_.size(0) != m_.harmonics || hift_noise_.size(1) != m_.hift_noise_samples) {
      return absl::InvalidArgumentError("buffers.pt shapes disagree with the manifest");
    }
    if (device_.is_cuda()) stream_ = c10::cuda::getStreamFromPool(false, device_.index);
    return absl::OkStatus();
  }

  // Host staging tensor: pinned on CUDA so the copy to the device is async.
  torch::Tensor Host(at::IntArrayRef shape, torch::ScalarType dtype) const {
    return torch::zeros(shape,
                        torch::TensorOptions().dtype(dtype).pinned_memory(device_.is_cuda()));
  }
  torch::Tensor ToDevice(const torch::Tensor& t) const {
    return t.to(torch_device_, /*non_blocking=*/true);
  }
  std::optional<c10::cuda::CUDAStreamGuard> StreamGuard() const {
    if (!stream_) return std::nullopt;
    return std::make_optional<c10::cuda::CUDAStreamGuard>(*stream_);
  }

  absl::Status EncodeLocked(absl::Span<VocodeJob* const> jobs, int n, TorchFlowBatch& b) {
    TorchThreadGuard guard(TorchThreadGuard::kCompute);
    auto stream_guard = StreamGuard();
    const int64_t B = static_cast<int64_t>(jobs.size());
    const int64_t fpt = m_.frames_per_token;
    int64_t lmax = 0;
    for (auto* j : jobs) {
      lmax = std::max<int64_t>(lmax,
                               j->voice->prompt_tokens() + static_cast<int64_t>(j->tokens.size()));
    }
    torch::Tensor tokens = Host({B, lmax}, torch::kInt64);
    torch::Tensor lens = Host({B}, torch::kInt64);
    auto tok = tokens.accessor<int64_t, 2>();
    b.n = n;
    int64_t tmax = 0;
    for (int64_t i = 0; i < B; ++i) {
      const VocodeJob& j = *jobs[i];
      const auto& prompt = j.voice->data.prompt_tokens;
      const int64_t p = static_cast<int64_t>(prompt.size());
      const int64_t nt = static_cast<int64_t>(j.tokens.size());
      for (int64_t k = 0; k < p; ++k) tok[i][k] = prompt[k];
      for (int64_t k = 0; k < nt; ++k) tok[i][p + k] = j.tokens[k];
      lens[i] = p + nt;
      const int64_t t = fpt * (p + nt) - (j.finalize ? 0 : m_.lookahead_frames);
      b.P.push_back(p);
      b.T.push_back(t);
      b.emit_begin.push_back(fpt * (p + j.context_tokens));
      tmax = std::max(tmax, t);
    }
    std::vector<torch::Tensor> embs;
    for (auto* j : jobs) embs.push_back(j->voice->tensors->embedding);
    torch::Tensor emb = torch::stack(embs).to(encoder_dtype_);
    auto out = encoder_.forward({ToDevice(tokens), ToDevice(lens), emb}).toTuple();
    torch::Tensor mu = out->elements()[0].toTensor().to(torch::kFloat32);
    b.spks = out->elements()[1].toTensor().to(torch::kFloat32);
    mu = mu.index({Slice(), Slice(), Slice(None, tmax)});

    // Mask, cond and initial noise, built on the host then copied once.
    torch::Tensor mask = Host({B, 1, tmax}, torch::kFloat32);
    torch::Tensor noise_index = Host({B, tmax}, torch::kInt64);
    auto ni = noise_index.accessor<int64_t, 2>();
    auto mk = mask.accessor<float, 3>();
    for (int64_t i = 0; i < B; ++i) {
      const int64_t prompt_frames = fpt * b.P[i];
      for (int64_t f = 0; f < tmax; ++f) {
        mk[i][0][f] = f < b.T[i] ? 1.0f : 0.0f;
        ni[i][f] = f < prompt_frames
                       ? f
                       : (prompt_frames + jobs[i]->noise_offset + (f - prompt_frames)) %
                             m_.flow_noise_frames;
      }
    }
    b.mask = ToDevice(mask);
    b.mu = mu * b.mask;
    b.cond = torch::zeros({B, m_.mel_bins, tmax}, b.mu.options());
    for (int64_t i = 0; i < B; ++i) {
      const auto& pf = jobs[i]->voice->tensors->prompt_feat_t;
      b.cond.index_put_({i, Slice(), Slice(None, pf.size(1))}, pf);
    }
    // z[i, :, f] = flow_noise[:, index[i, f]]
    torch::Tensor idx = ToDevice(noise_index).reshape({-1});
    b.x = flow_noise_.index_select(1, idx)
              .reshape({m_.mel_bins, B, tmax})
              .permute({1, 0, 2})
              .contiguous();
    b.steps.assign(static_cast<size_t>(B), 0);
    // The schedule exactly as the official sampler computes it, in fp32.
    b.t_span = 1 - torch::cos(torch::linspace(0, 1, n + 1, torch::kFloat32) * 0.5 * M_PI);
    return absl::OkStatus();
  }

  absl::Status StepLocked(TorchFlowBatch& b) {
    TorchThreadGuard guard(TorchThreadGuard::kCompute);
    auto stream_guard = StreamGuard();
    const int64_t B = b.rows();
    // Per-row t and dt, following the official recurrence t += dt,
    // dt = t_span[k+1] - t, so rows match the Python sampler bit for bit.
    torch::Tensor t = Host({B}, torch::kFloat32);
    torch::Tensor dt = Host({B, 1, 1}, torch::kFloat32);
    auto span = b.t_span.accessor<float, 1>();
    bool any = false;
    for (int64_t i = 0; i < B; ++i) {
      const int k = b.steps[i];
      if (k >= b.n) continue;  // finished rows ride along with dt = 0
      any = true;
      float tk = span[0];
      float dk = span[1] - span[0];
      for (int s = 1; s <= k; ++s) {
        tk = tk + dk;
        dk = span[s + 1] - tk;
      }
      t[i] = tk;
      dt[i][0][0] = dk;
    }
    if (!any) return absl::OkStatus();
    const auto fd = flow_dtype_;
    torch::Tensor zeros_mu = torch::zeros_like(b.mu);
    torch::Tensor x2 = torch::cat({b.x, b.x}).to(fd);
    torch::Tensor mask2 = torch::cat({b.mask, b.mask}).to(fd);
    torch::Tensor mu2 = torch::cat({b.mu, zeros_mu}).to(fd);
    torch::Tensor t_dev = ToDevice(t);
    torch::Tensor t2 = torch::cat({t_dev, t_dev}).to(fd);
    torch::Tensor spks2 = torch::cat({b.spks, torch::zeros_like(b.spks)}).to(fd);
    torch::Tensor cond2 = torch::cat({b.cond, torch::zeros_like(b.cond)}).to(fd);
    torch::Tensor v =
        estimator_.forward({x2, mask2, mu2, t2, spks2, cond2}).toTensor().to(torch::kFloat32);
    auto halves = v.chunk(2);
    const double rate = m_.cfg_rate;
    torch::Tensor dphi = (1.0 + rate) * halves[0] - rate * halves[1];
    b.x = b.x + ToDevice(dt) * dphi;
    for (int64_t i = 0; i < B; ++i) {
      if (b.steps[i] < b.n) ++b.steps[i];
    }
    return absl::OkStatus();
  }

  absl::Status VocodeLocked(TorchFlowBatch& b, absl::Span<VocodeJob* const> jobs) {
    TorchThreadGuard guard(TorchThreadGuard::kCompute);
    auto stream_guard = StreamGuard();
    const int64_t spf = m_.samples_per_frame;
    // HiFT is not causal: vocode rows of equal length together.
    std::map<int64_t, std::vector<int64_t>> by_len;
    std::vector<torch::Tensor> mels(jobs.size());
    for (int64_t i = 0; i < b.rows(); ++i) {
      torch::Tensor mel = b.x.index({i, Slice(), Slice(b.emit_begin[i], b.T[i])});
      VocodeJob& j = *jobs[i];
      const int64_t k = static_cast<int64_t>(j.mel_cache.size()) / m_.mel_bins;
      torch::Tensor emitted_t = mel.t().contiguous().to(torch::kCPU);
      j.mel.assign(emitted_t.data_ptr<float>(), emitted_t.data_ptr<float>() + emitted_t.numel());
      if (k > 0) {
        torch::Tensor cache =
            torch::from_blob(j.mel_cache.data(), {k, m_.mel_bins}, torch::kFloat32)
                .t()
                .to(torch_device_);
        mel = torch::cat({cache, mel}, 1);
      }
      mels[i] = mel;
      by_len[mel.size(1)].push_back(i);
    }
    for (const auto& [frames, rows] : by_len) {
      const int64_t G = static_cast<int64_t>(rows.size());
      const int64_t samples = frames * spf;
      std::vector<torch::Tensor> group_mel;
      torch::Tensor phase = Host({G, m_.harmonics, 1}, torch::kFloat32);
      torch::Tensor noise_index = Host({G, samples}, torch::kInt64);
      auto ni = noise_index.accessor<int64_t, 2>();
      for (int64_t g = 0; g < G; ++g) {
        const VocodeJob& j = *jobs[rows[g]];
        group_mel.push_back(mels[rows[g]]);
        for (int h = 0; h < m_.harmonics; ++h) phase[g][h][0] = j.hift_phase[h];
        const int64_t k = static_cast<int64_t>(j.mel_cache.size()) / m_.mel_bins;
        const int64_t first_frame = j.noise_offset + m_.frames_per_token * j.context_tokens - k;
        int64_t start = (spf * first_frame) % m_.hift_noise_samples;
        if (start < 0) start += m_.hift_noise_samples;
        for (int64_t s = 0; s < samples; ++s) ni[g][s] = (start + s) % m_.hift_noise_samples;
      }
      torch::Tensor mel = torch::stack(group_mel);
      torch::Tensor noise = hift_noise_.index_select(1, ToDevice(noise_index).reshape({-1}))
                                .reshape({m_.harmonics, G, samples})
                                .permute({1, 0, 2})
                                .contiguous();
      torch::Tensor source = hift_source_.forward({mel, ToDevice(phase), noise}).toTensor();
      for (int64_t g = 0; g < G; ++g) {
        const VocodeJob& j = *jobs[rows[g]];
        if (j.source_cache.empty()) continue;
        const int64_t c = static_cast<int64_t>(j.source_cache.size());
        torch::Tensor cached =
            torch::from_blob(const_cast<float*>(j.source_cache.data()), {c}, torch::kFloat32)
                .to(torch_device_);
        source.index_put_({g, 0, Slice(None, c)}, cached);
      }
      torch::Tensor wav = hift_decode_.forward({mel, source}).toTensor();
      torch::Tensor wav_host = wav.to(torch::kCPU, torch::kFloat32).contiguous();
      torch::Tensor src_host = source.to(torch::kCPU, torch::kFloat32).contiguous();
      for (int64_t g = 0; g < G; ++g) {
        VocodeJob& j = *jobs[rows[g]];
        const float* w = wav_host.data_ptr<float>() + g * samples;
        const float* s = src_host.data_ptr<float>() + g * samples;
        j.audio.assign(w, w + samples);
        j.source.assign(s, s + samples);
      }
    }
    return absl::OkStatus();
  }

  const Manifest m_;
  const Device device_;
  const torch::Device torch_device_;
  const torch::ScalarType flow_dtype_;
  const torch::ScalarType encoder_dtype_;
  torch::jit::Module encoder_, estimator_, hift_source_, hift_decode_;
  torch::Tensor flow_noise_, hift_noise_;
  std::optional<c10::cuda::CUDAStream> stream_;
};

HostTensor ToHost(const torch::Tensor& value) {
  HostTensor h;
  torch::Tensor t = value.to(torch::kCPU).contiguous();
  h.shape.assign(t.sizes().begin(), t.sizes().end());
  if (t.is_floating_point()) {
    t = t.to(torch::kFloat32);
    h.f32.assign(t.data_ptr<float>(), t.data_ptr<float>() + t.numel());
  } else {
    t = t.to(torch::kInt64);
    h.i64.assign(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
  }
  return h;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Vocoder>> LoadVocoder(const std::string& model_dir,
                                                     const std::string& device,
                                                     const LoadOptions& options) {
  if (IsSimDevice(device)) return LoadSimVocoder(model_dir, device, options);
  return TorchVocoder::Load(model_dir, device, options);
}

absl::StatusOr<std::map<std::string, HostTensor>> ReadTensorBag(const std::string& path) {
  std::map<std::string, HostTensor> out;
  absl::Status s = Guarded("reading tensor bag", [&] {
    TorchThreadGuard guard(TorchThreadGuard::kSide);
    auto bag = torch::jit::load(path, torch::Device(torch::kCPU));
    for (const auto& b : bag.named_buffers()) out[b.name] = ToHost(b.value);
    return absl::OkStatus();
  });
  if (!s.ok()) return absl::Status(s.code(), absl::StrCat(path, ": ", s.message()));
  return out;
}

absl::StatusOr<VoiceData> ReadVoiceFile(const std::string& path) {
  auto bag = ReadTensorBag(path);
  if (!bag.ok()) return bag.status();
  return VoiceFromTensors(*bag, path);
}

}  // namespace vocoder::model
