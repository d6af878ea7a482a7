// The LibTorch implementation of Vocoder: four traced modules (encoder,
// estimator, HiFT source, HiFT decode) and the Euler loop in C++: for the
// standard model on the cosine schedule with CFG by batch doubling, for turbo
// (the meanflow decoder) on the linear schedule with the end time r per row
// and no guidance. The variant comes from the manifest.
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
#include "model/flow_rows.h"
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

// The running set's device state. Each row owns a slot: index i of x and
// index c S + i of each of the C blocks of the conditioning tensors
// (S = slots(), C = GuidanceCopies: 2 for the standard model, whose block 0
// is conditional and block 1 unconditional; 1 for turbo). Slots are compacted
// (index_select on the kept slots) whenever rows leave; should that copy
// fail, the stale slots stay until the next compaction and Step runs only the
// rows' slots.
class TorchFlowBatch final : public FlowRows {
 public:
  using FlowRows::FlowRows;
  int64_t slots() const { return x.defined() ? x.size(0) : 0; }
  int64_t slot_frames() const { return x.defined() ? x.size(2) : 0; }

  torch::Tensor x;  // (S, 80, Tpad) f32: the ODE state
  // Built once at Admit, in the flow dtype, C blocks of S rows: block 0
  // conditional; with CFG block 1 unconditional (mu, spks, cond zero there).
  torch::Tensor mask;  // (C S, 1, Tpad)
  torch::Tensor mu;    // (C S, 80, Tpad)
  torch::Tensor spks;  // (C S, 80)
  torch::Tensor cond;  // (C S, 80, Tpad)
};

TorchFlowBatch* Own(FlowBatch& batch, const Vocoder* runner) {
  auto* b = dynamic_cast<TorchFlowBatch*>(&batch);
  return b != nullptr && b->owner() == runner ? b : nullptr;
}

// Zero-pads the last dimension of `t` to `frames`.
torch::Tensor PadFrames(const torch::Tensor& t, int64_t frames) {
  const int64_t have = t.size(-1);
  if (have == frames) return t;
  return torch::constant_pad_nd(t, {0, frames - have}, 0);
}

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

  std::unique_ptr<FlowBatch> NewFlowBatch() override {
    return std::make_unique<TorchFlowBatch>(this);
  }

  absl::StatusOr<std::vector<RowId>> Admit(FlowBatch& base, absl::Span<VocodeJob* const> jobs,
                                           absl::Span<const int> n_timesteps) override {
    TorchFlowBatch* b = Own(base, this);
    if (b == nullptr) return ForeignBatchError();
    if (auto s = PrepareAdmit(jobs, n_timesteps, m_, *this); !s.ok()) return s;
    std::vector<RowId> ids;
    absl::Status s = Guarded("encoder", [&] { return AdmitLocked(*b, jobs, n_timesteps, ids); });
    if (!s.ok()) return s;
    return ids;
  }

  absl::Status Step(FlowBatch& base) override {
    TorchFlowBatch* b = Own(base, this);
    if (b == nullptr) return ForeignBatchError();
    return Guarded("estimator", [&] { return StepLocked(*b); });
  }

  absl::Status Retire(FlowBatch& base, absl::Span<const RowId> rows,
                      absl::Span<VocodeJob* const> jobs) override {
    TorchFlowBatch* b = Own(base, this);
    if (b == nullptr) return ForeignBatchError();
    if (auto s = CheckRetire(*b, rows, jobs.size()); !s.ok()) return s;
    if (rows.empty()) return absl::OkStatus();
    absl::Status s = Guarded("hift", [&] { return RetireLocked(*b, rows, jobs); });
    Remove(*b, rows);
    return s;
  }

  absl::Status Drop(FlowBatch& base, absl::Span<const RowId> rows) override {
    TorchFlowBatch* b = Own(base, this);
    if (b == nullptr) return ForeignBatchError();
    if (auto s = CheckDrop(*b, rows); !s.ok()) return s;
    Remove(*b, rows);
    return absl::OkStatus();
  }

 private:
  TorchVocoder(Manifest m, Device device)
      : m_(std::move(m)),
        device_(device),
        torch_device_(device.is_cuda() ? torch::Device(torch::kCUDA, device.index)
                                       : torch::Device(torch::kCPU)),
        flow_dtype_(DType(m_.estimator_dtype)),
        encoder_dtype_(DType(m_.encoder_dtype)),
        copies_(GuidanceCopies(m_)),
        guided_(copies_ == 2) {}

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
  // Slot indices `idx` of x as indices into the C blocks of the conditioning
  // tensors of a set of `slots` slots.
  torch::Tensor Blocks(const torch::Tensor& idx, int64_t slots) const {
    return guided_ ? torch::cat({idx, idx + slots}) : idx;
  }

  // Encodes the new rows and merges them into the set. Builds everything in
  // locals and assigns at the end, so an exception leaves the set unchanged.
  absl::Status AdmitLocked(TorchFlowBatch& b, absl::Span<VocodeJob* const> jobs,
                           absl::Span<const int> n_timesteps, std::vector<RowId>& ids) {
    TorchThreadGuard guard(TorchThreadGuard::kCompute);
    auto stream_guard = StreamGuard();
    const int64_t B = static_cast<int64_t>(jobs.size());
    const int64_t fpt = m_.frames_per_token;
    std::vector<FlowRow> rows;
    int64_t lmax = 0, tmax = 0;
    for (int64_t i = 0; i < B; ++i) {
      const VocodeJob& j = *jobs[i];
      rows.push_back(MakeFlowRow(j, n_timesteps[i], m_));
      lmax =
          std::max<int64_t>(lmax, j.voice->prompt_tokens() + static_cast<int64_t>(j.tokens.size()));
      tmax = std::max(tmax, rows.back().frames);
    }
    torch::Tensor tokens = Host({B, lmax}, torch::kInt64);
    torch::Tensor lens = Host({B}, torch::kInt64);
    auto tok = tokens.accessor<int64_t, 2>();
    for (int64_t i = 0; i < B; ++i) {
      const VocodeJob& j = *jobs[i];
      const auto& prompt = j.voice->data.prompt_tokens;
      const int64_t p = static_cast<int64_t>(prompt.size());
      const int64_t nt = static_cast<int64_t>(j.tokens.size());
      for (int64_t k = 0; k < p; ++k) tok[i][k] = prompt[k];
      for (int64_t k = 0; k < nt; ++k) tok[i][p + k] = j.tokens[k];
      lens[i] = p + nt;
    }
    std::vector<torch::Tensor> embs;
    for (auto* j : jobs) embs.push_back(j->voice->tensors->embedding);
    torch::Tensor emb = torch::stack(embs).to(encoder_dtype_);
    auto out = encoder_.forward({ToDevice(tokens), ToDevice(lens), emb}).toTuple();
    torch::Tensor mu = out->elements()[0].toTensor().to(torch::kFloat32);
    torch::Tensor spks = out->elements()[1].toTensor().to(torch::kFloat32);
    mu = mu.index({Slice(), Slice(), Slice(None, tmax)});

    // Mask, cond and initial noise, built on the host then copied once.
    torch::Tensor mask = Host({B, 1, tmax}, torch::kFloat32);
    torch::Tensor noise_index = Host({B, tmax}, torch::kInt64);
    auto ni = noise_index.accessor<int64_t, 2>();
    auto mk = mask.accessor<float, 3>();
    for (int64_t i = 0; i < B; ++i) {
      const int64_t prompt_frames = fpt * rows[i].prompt_tokens;
      for (int64_t f = 0; f < tmax; ++f) {
        mk[i][0][f] = f < rows[i].frames ? 1.0f : 0.0f;
        ni[i][f] = f < prompt_frames
                       ? f
                       : (prompt_frames + jobs[i]->noise_offset + (f - prompt_frames)) %
                             m_.flow_noise_frames;
      }
    }
    mask = ToDevice(mask);
    mu = mu * mask;
    torch::Tensor cond = torch::zeros({B, m_.mel_bins, tmax}, mu.options());
    for (int64_t i = 0; i < B; ++i) {
      const auto& pf = jobs[i]->voice->tensors->prompt_feat_t;
      cond.index_put_({i, Slice(), Slice(None, pf.size(1))}, pf);
    }
    // z[i, :, f] = flow_noise[:, index[i, f]]
    torch::Tensor idx = ToDevice(noise_index).reshape({-1});
    torch::Tensor x = flow_noise_.index_select(1, idx)
                          .reshape({m_.mel_bins, B, tmax})
                          .permute({1, 0, 2})
                          .contiguous();
    // The new rows' conditioning, built once: CFG-doubled for the standard
    // model, as is for turbo.
    const auto fd = flow_dtype_;
    torch::Tensor mask_c, mu_c, spks_c, cond_c;
    if (guided_) {
      mask_c = torch::cat({mask, mask}).to(fd);
      mu_c = torch::cat({mu, torch::zeros_like(mu)}).to(fd);
      spks_c = torch::cat({spks, torch::zeros_like(spks)}).to(fd);
      cond_c = torch::cat({cond, torch::zeros_like(cond)}).to(fd);
    } else {
      mask_c = mask.to(fd);
      mu_c = mu.to(fd);
      spks_c = spks.to(fd);
      cond_c = cond.to(fd);
    }

    const int64_t S = b.slots();
    if (S > 0) {
      // Merge: [old | new] for x and, block by block, [old cond | new cond
      // (| old uncond | new uncond)] for the conditioning, all padded to the
      // longer length.
      const int64_t frames = std::max(b.slot_frames(), tmax);
      auto merge = [&](const torch::Tensor& old_c, const torch::Tensor& new_c, bool pad) {
        std::vector<torch::Tensor> parts;
        for (int64_t c = 0; c < copies_; ++c) {
          torch::Tensor o = old_c.narrow(0, c * S, S), n = new_c.narrow(0, c * B, B);
          parts.push_back(pad ? PadFrames(o, frames) : o);
          parts.push_back(pad ? PadFrames(n, frames) : n);
        }
        return torch::cat(parts);
      };
      x = torch::cat({PadFrames(b.x, frames), PadFrames(x, frames)});
      mask_c = merge(b.mask, mask_c, true);
      mu_c = merge(b.mu, mu_c, true);
      cond_c = merge(b.cond, cond_c, true);
      spks_c = merge(b.spks, spks_c, false);
    }
    for (int64_t i = 0; i < B; ++i) rows[i].slot = S + i;
    // Nothing below throws: the set changes only now.
    b.x = std::move(x);
    b.mask = std::move(mask_c);
    b.mu = std::move(mu_c);
    b.spks = std::move(spks_c);
    b.cond = std::move(cond_c);
    ids = b.Append(std::move(rows));
    return absl::OkStatus();
  }

  // The variant's schedule of n steps, t_0..t_n, exactly as the official
  // sampler computes it, in fp32: standard 1 - cos(pi/2 linspace(0, 1, n+1)),
  // turbo linspace(0, 1, n+1) (cached per n; GPU thread only).
  const std::vector<float>& Schedule(int n) {
    auto it = schedules_.find(n);
    if (it != schedules_.end()) return it->second;
    torch::Tensor span = torch::linspace(0, 1, n + 1, torch::kFloat32);
    if (guided_) span = 1 - torch::cos(span * 0.5 * M_PI);
    std::vector<float> v(span.data_ptr<float>(), span.data_ptr<float>() + n + 1);
    return schedules_.emplace(n, std::move(v)).first->second;
  }

  // A row's time t, end time r (turbo's estimator input) and step dt at its
  // next step, as the official samplers compute them so that rows match the
  // Python sampler bit for bit. Standard (solve_euler): the recurrence
  // t += dt, dt = t_span[k+1] - t. Turbo (basic_euler): t = t_span[k],
  // r = t_span[k+1], dt = r - t.
  struct StepTimes {
    float t, r, dt;
  };
  StepTimes TimesAt(const FlowRow& row) {
    const std::vector<float>& span = Schedule(row.n_timesteps);
    const int k = row.steps;
    if (!guided_) return {span[k], span[k + 1], span[k + 1] - span[k]};
    float tk = span[0];
    float dk = span[1] - span[0];
    for (int s = 1; s <= k; ++s) {
      tk = tk + dk;
      dk = span[s + 1] - tk;
    }
    return {tk, span[k + 1], dk};
  }

  absl::Status StepLocked(TorchFlowBatch& b) {
    TorchThreadGuard guard(TorchThreadGuard::kCompute);
    auto stream_guard = StreamGuard();
    std::vector<FlowRow*> pending;
    for (FlowRow& r : b.list()) {
      if (!r.done()) pending.push_back(&r);
    }
    if (pending.empty()) return absl::OkStatus();
    const int64_t P = static_cast<int64_t>(pending.size());
    const int64_t S = b.slots();
    // Per-row t (repeated for each of the C blocks), r (turbo) and dt, in one
    // host tensor [t (C P) | r (P, turbo only) | dt (P)], one copy per step.
    const int64_t n_t = copies_ * P;
    const int64_t n_r = guided_ ? 0 : P;
    torch::Tensor times = Host({n_t + n_r + P}, torch::kFloat32);
    auto ta = times.accessor<float, 1>();
    bool all_slots = P == S;
    for (int64_t i = 0; i < P; ++i) {
      const FlowRow& r = *pending[i];
      all_slots = all_slots && r.slot == i;
      const StepTimes st = TimesAt(r);
      for (int64_t c = 0; c < copies_; ++c) ta[c * P + i] = st.t;
      if (!guided_) ta[n_t + i] = st.r;
      ta[n_t + n_r + i] = st.dt;
    }
    const auto fd = flow_dtype_;
    torch::Tensor times_d = ToDevice(times);
    torch::Tensor t_in = times_d.narrow(0, 0, n_t).to(fd);
    torch::Tensor dt = times_d.narrow(0, n_t + n_r, P).view({P, 1, 1});
    // Every row pending: the conditioning as built at Admit. Otherwise (some
    // rows are done, or slots are stale) the pending rows' slots.
    torch::Tensor idx;
    torch::Tensor xs = b.x, mask = b.mask, mu = b.mu, spks = b.spks, cond = b.cond;
    if (!all_slots) {
      torch::Tensor slots = Host({P}, torch::kInt64);
      for (int64_t i = 0; i < P; ++i) slots[i] = pending[i]->slot;
      idx = ToDevice(slots);
      torch::Tensor idx_c = Blocks(idx, S);
      xs = b.x.index_select(0, idx);
      mask = b.mask.index_select(0, idx_c);
      mu = b.mu.index_select(0, idx_c);
      spks = b.spks.index_select(0, idx_c);
      cond = b.cond.index_select(0, idx_c);
    }
    torch::Tensor dphi;
    if (guided_) {
      // CFG: the conditional and unconditional rows in one call.
      torch::Tensor x2 = torch::cat({xs, xs}).to(fd);
      torch::Tensor v =
          estimator_.forward({x2, mask, mu, t_in, spks, cond}).toTensor().to(torch::kFloat32);
      auto halves = v.chunk(2);
      const double rate = m_.cfg_rate;
      dphi = (1.0 + rate) * halves[0] - rate * halves[1];
    } else {
      // Turbo: one row per job, r after the six standard inputs.
      torch::Tensor r_in = times_d.narrow(0, n_t, P).to(fd);
      dphi = estimator_.forward({xs.to(fd), mask, mu, t_in, spks, cond, r_in})
                 .toTensor()
                 .to(torch::kFloat32);
    }
    torch::Tensor next = xs + dt * dphi;
    b.x = all_slots ? std::move(next) : b.x.index_copy(0, idx, next);
    for (FlowRow* r : pending) ++r->steps;
    return absl::OkStatus();
  }

  // HiFT for done rows; fills jobs[i] from rows[i]. Does not change the set.
  absl::Status RetireLocked(TorchFlowBatch& b, absl::Span<const RowId> ids,
                            absl::Span<VocodeJob* const> jobs) {
    TorchThreadGuard guard(TorchThreadGuard::kCompute);
    auto stream_guard = StreamGuard();
    const int64_t spf = m_.samples_per_frame;
    const int64_t bins = m_.mel_bins;
    const int64_t R = static_cast<int64_t>(ids.size());
    std::vector<const FlowRow*> rows;
    torch::Tensor slots = Host({R}, torch::kInt64);
    int64_t cache_frames = 0, cache_samples = 0;
    for (int64_t i = 0; i < R; ++i) {
      rows.push_back(&b.list()[static_cast<size_t>(b.Find(ids[i]))]);
      slots[i] = rows.back()->slot;
      cache_frames += static_cast<int64_t>(jobs[i]->mel_cache.size()) / bins;
      cache_samples += static_cast<int64_t>(jobs[i]->source_cache.size());
    }
    // The retiring rows' ODE state: one gather, one copy to the host for the
    // emitted mels.
    torch::Tensor xr = b.x.index_select(0, ToDevice(slots));
    torch::Tensor xr_host = xr.to(torch::kCPU);
    // Every row's mel and source caches, staged together, one copy each.
    torch::Tensor mel_caches, source_caches;
    if (cache_frames > 0) {
      torch::Tensor h = Host({cache_frames, bins}, torch::kFloat32);
      float* dst = h.data_ptr<float>();
      for (auto* j : jobs) dst = std::copy(j->mel_cache.begin(), j->mel_cache.end(), dst);
      mel_caches = ToDevice(h).t();  // (80, sum K)
    }
    if (cache_samples > 0) {
      torch::Tensor h = Host({cache_samples}, torch::kFloat32);
      float* dst = h.data_ptr<float>();
      for (auto* j : jobs) dst = std::copy(j->source_cache.begin(), j->source_cache.end(), dst);
      source_caches = ToDevice(h);
    }
    // HiFT is not causal: vocode rows of equal length together.
    std::map<int64_t, std::vector<int64_t>> by_len;
    std::vector<torch::Tensor> mels(static_cast<size_t>(R));
    std::vector<int64_t> source_at(static_cast<size_t>(R));
    int64_t cache_pos = 0, source_pos = 0;
    for (int64_t i = 0; i < R; ++i) {
      const FlowRow& r = *rows[i];
      VocodeJob& j = *jobs[i];
      torch::Tensor emitted_t =
          xr_host.index({i, Slice(), Slice(r.emit_begin, r.frames)}).t().contiguous();
      j.mel.assign(emitted_t.data_ptr<float>(), emitted_t.data_ptr<float>() + emitted_t.numel());
      torch::Tensor mel = xr.index({i, Slice(), Slice(r.emit_begin, r.frames)});
      const int64_t k = static_cast<int64_t>(j.mel_cache.size()) / bins;
      if (k > 0) mel = torch::cat({mel_caches.narrow(1, cache_pos, k), mel}, 1);
      cache_pos += k;
      source_at[i] = source_pos;
      source_pos += static_cast<int64_t>(j.source_cache.size());
      mels[i] = mel;
      by_len[mel.size(1)].push_back(i);
    }
    for (const auto& [frames, group] : by_len) {
      const int64_t G = static_cast<int64_t>(group.size());
      const int64_t samples = frames * spf;
      std::vector<torch::Tensor> group_mel;
      torch::Tensor phase = Host({G, m_.harmonics, 1}, torch::kFloat32);
      torch::Tensor noise_index = Host({G, samples}, torch::kInt64);
      auto ni = noise_index.accessor<int64_t, 2>();
      for (int64_t g = 0; g < G; ++g) {
        const VocodeJob& j = *jobs[group[g]];
        group_mel.push_back(mels[group[g]]);
        for (int h = 0; h < m_.harmonics; ++h) phase[g][h][0] = j.hift_phase[h];
        const int64_t k = static_cast<int64_t>(j.mel_cache.size()) / bins;
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
        const VocodeJob& j = *jobs[group[g]];
        const int64_t c = static_cast<int64_t>(j.source_cache.size());
        if (c == 0) continue;
        source.index_put_({g, 0, Slice(None, c)}, source_caches.narrow(0, source_at[group[g]], c));
      }
      torch::Tensor wav = hift_decode_.forward({mel, source}).toTensor();
      torch::Tensor wav_host = wav.to(torch::kCPU, torch::kFloat32).contiguous();
      torch::Tensor src_host = source.to(torch::kCPU, torch::kFloat32).contiguous();
      for (int64_t g = 0; g < G; ++g) {
        VocodeJob& j = *jobs[group[g]];
        const float* w = wav_host.data_ptr<float>() + g * samples;
        const float* s = src_host.data_ptr<float>() + g * samples;
        j.audio.assign(w, w + samples);
        j.source.assign(s, s + samples);
      }
    }
    return absl::OkStatus();
  }

  // Removes rows from the set, then compacts its tensors to the remaining
  // rows' slots (one index_select per tensor on one index tensor) and their
  // padded length. A failed compaction keeps the stale slots (Step runs only
  // the rows' slots) until the next one.
  void Remove(TorchFlowBatch& b, absl::Span<const RowId> ids) {
    b.Remove(ids);
    if (b.rows() == 0) {
      b.x.reset();
      b.mask.reset();
      b.mu.reset();
      b.spks.reset();
      b.cond.reset();
      return;
    }
    const int64_t S = b.slots();
    const int64_t frames = b.padded_frames();
    const int64_t R = b.rows();
    bool identity = R == S && frames == b.slot_frames();
    for (int64_t i = 0; identity && i < R; ++i) identity = b.list()[i].slot == i;
    if (identity) return;
    absl::Status s = Guarded("compacting the running set", [&] {
      TorchThreadGuard guard(TorchThreadGuard::kCompute);
      auto stream_guard = StreamGuard();
      torch::Tensor slots = Host({R}, torch::kInt64);
      for (int64_t i = 0; i < R; ++i) slots[i] = b.list()[i].slot;
      torch::Tensor idx = ToDevice(slots);
      torch::Tensor idx_c = Blocks(idx, S);
      torch::Tensor x = b.x.narrow(2, 0, frames).index_select(0, idx);
      torch::Tensor mask = b.mask.narrow(2, 0, frames).index_select(0, idx_c);
      torch::Tensor mu = b.mu.narrow(2, 0, frames).index_select(0, idx_c);
      torch::Tensor cond = b.cond.narrow(2, 0, frames).index_select(0, idx_c);
      torch::Tensor spks = b.spks.index_select(0, idx_c);
      b.x = std::move(x);
      b.mask = std::move(mask);
      b.mu = std::move(mu);
      b.cond = std::move(cond);
      b.spks = std::move(spks);
      for (int64_t i = 0; i < R; ++i) b.list()[i].slot = i;
      return absl::OkStatus();
    });
    (void)s;  // stale slots are correct, only slower; the next compaction retries
  }

  const Manifest m_;
  const Device device_;
  const torch::Device torch_device_;
  const torch::ScalarType flow_dtype_;
  const torch::ScalarType encoder_dtype_;
  const int64_t copies_;  // GuidanceCopies: estimator rows per job (2: CFG, 1: turbo)
  const bool guided_;     // copies_ == 2: CFG by batch doubling on the cosine schedule
  torch::jit::Module encoder_, estimator_, hift_source_, hift_decode_;
  torch::Tensor flow_noise_, hift_noise_;
  std::optional<c10::cuda::CUDAStream> stream_;
  std::map<int, std::vector<float>> schedules_;  // Schedule(n), GPU thread only
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
