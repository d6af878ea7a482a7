#include "server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>

#include <fstream>
#include <future>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "server/request_validation.h"
#include "server/stream_session.h"

namespace vocoder::server {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

batcher::BatcherOptions BatcherOptionsFrom(const config::Config& c) {
  batcher::BatcherOptions o;
  o.max_batch_size = c.max_batch_size;
  o.max_batch_tokens = c.max_batch_tokens;
  o.early_fire_fraction = c.early_fire_fraction;
  o.idle_grace = std::chrono::microseconds(c.idle_grace_us);
  o.max_wait = std::chrono::microseconds(c.max_wait_us);
  o.max_padding_waste = c.max_padding_waste;
  o.join_amortization = c.join_amortization;
  o.max_queue_jobs = c.max_queue_jobs;
  o.grouping = c.grouping == "voice" ? batcher::Grouping::kVoice : batcher::Grouping::kMixed;
  o.scheduling = c.scheduling == "step" ? batcher::Scheduling::kStep : batcher::Scheduling::kBatch;
  return o;
}

absl::StatusOr<std::unique_ptr<VocoderServer>> VocoderServer::Start(
    const config::Config& config, std::unique_ptr<model::Vocoder> vocoder) {
  std::unique_ptr<VocoderServer> s(new VocoderServer());
  s->config_ = config;
  s->vocoder_ = std::move(vocoder);
  const model::Manifest& manifest = s->vocoder_->manifest();
  s->registry_ = std::make_shared<prometheus::Registry>();
  s->metrics_ = std::make_unique<Metrics>(
      *s->registry_, MetricsInfo{"0.1.0", "s3gen-" + manifest.size, config.max_batch_size,
                                 static_cast<double>(config.max_wait_us) / 1000.0,
                                 DeviceKind(s->vocoder_->device()), config.scheduling,
                                 manifest.variant, manifest.n_timesteps});
  s->runner_ = std::make_unique<ModelBatchRunner>(*s->vocoder_, s->metrics_.get());
  VoiceRegistryOptions voice_options;
  voice_options.dir = config.voices_dir.empty() ? config.model_dir + "/voices" : config.voices_dir;
  voice_options.max_voices = config.max_voices;
  voice_options.cache_bytes = config.voice_cache_mb << 20;
  voice_options.sync_interval = std::chrono::milliseconds(config.voices_sync_interval_ms);
  voice_options.metrics = s->registry_.get();
  s->voices_ = std::make_unique<VoiceRegistry>(*s->vocoder_, voice_options);
  // Ready means the repository as it is now is loaded; files that fail to
  // load are counted and logged, not fatal.
  if (auto st = s->voices_->Sync(); !st.ok()) return st;
  s->voices_->StartSync();
  auto b = batcher::Batcher::Create(BatcherOptionsFrom(config),
                                    {s->clock_, *s->runner_, s->metrics_.get(), s->runner_.get()});
  if (!b.ok()) return b.status();
  s->batcher_ = std::move(*b);
  s->executor_ = std::make_unique<Executor>(2);
  s->limits_ = EdgeLimits::From(manifest, s->config_);
  s->admission_ =
      std::make_unique<Admission>(s->state_, config.max_streams, config.max_streams_per_peer);
  s->service_ = std::make_unique<VocoderService>(
      ServiceDeps{*s->batcher_, *s->voices_, *s->executor_, s->state_, manifest, s->config_,
                  *s->admission_, s->calls_, s->clock_, s->limits_, s->metrics_.get()});
  if (s->limits_.stream_idle_timeout > batcher::Duration::zero()) {
    VocoderServer* raw = s.get();
    s->sweeper_ = std::thread([raw] {
      std::unique_lock lock(raw->sweeper_mu_);
      while (!raw->sweeper_cv_.wait_for(lock, std::chrono::seconds(1),
                                        [raw] { return raw->sweeper_stop_; })) {
        lock.unlock();
        raw->calls_.SweepIdle(raw->clock_.Now());
        lock.lock();
      }
    });
  }

  if (!config.metrics_listen.empty()) {
    VocoderServer* raw = s.get();
    auto http = MetricsHttpServer::Start(config.metrics_listen, s->registry_, [raw] {
      // Gauges read at scrape time, exact whatever happened since. Started
      // after the batcher and voices exist: the lambda reads them.
      raw->metrics_->OnQueueDepth(raw->batcher_->queue_depth());
      raw->metrics_->SetVoices(raw->voices_->size());
      raw->metrics_->SetStreams(raw->state_.streams.load());
    });
    if (!http.ok()) return http.status();
    s->metrics_http_ = std::move(*http);
  }
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
  if (!config.tls_cert.empty()) {
    auto cert = ReadFile(config.tls_cert);
    if (!cert.ok()) return cert.status();
    auto key = ReadFile(config.tls_key);
    if (!key.ok()) return key.status();
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({*key, *cert});
    creds = grpc::SslServerCredentials(ssl);
  }
  builder.AddListeningPort(config.listen, creds, &s->port_);
  builder.RegisterService(s->service_.get());
  builder.SetMaxReceiveMessageSize(TransportReceiveLimit(config.max_message_bytes));
  builder.SetMaxSendMessageSize(config.max_message_bytes);
  if (config.max_connection_age_s > 0) {
    // GOAWAY after this age (gRPC adds jitter) so clients pinned to one pod
    // by HTTP/2 reconnect and rebalance; in-flight streams are left alone.
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS, config.max_connection_age_s * 1000);
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                               static_cast<int>(config.drain_grace_s * 1000));
  }
  s->server_ = builder.BuildAndStart();
  if (s->server_ == nullptr || s->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", config.listen, " (address in use or not local?)"));
  }
  auto* health = s->server_->GetHealthCheckService();
  health->SetServingStatus("", true);  // liveness: serving until exit
  health->SetServingStatus(kReadinessService, false);
  if (auto st = s->Warmup(); !st.ok()) return st;
  s->state_.ready.store(true);
  s->metrics_->SetModelLoaded(true);
  s->metrics_->SetVoices(s->voices_->size());
  health->SetServingStatus(kReadinessService, true);
  return s;
}

// A short streamed utterance through the batcher (so on its thread: thread
// pools and kernel caches are per thread), so the first clients do not pay
// for lazy initialization of a first, middle and last chunk's shapes.
absl::Status VocoderServer::Warmup() {
  auto voices = voices_->List();
  std::shared_ptr<const model::Voice> voice;
  if (!voices.empty()) {
    if (auto e = voices_->Get(voices.front().id); e.ok()) voice = e->voice;
  }
  if (voice == nullptr) {
    model::VoiceData v;
    v.embedding.assign(static_cast<size_t>(vocoder_->manifest().spk_dim), 0.1f);
    auto prepared = vocoder_->PrepareVoice(v);
    if (!prepared.ok()) return prepared.status();
    voice = *prepared;
  }
  StreamSession session(EdgeLimits::From(vocoder_->manifest(), config_).Session(), voice, {});
  for (int chunk = 0; chunk < 3; ++chunk) {
    session.Append(std::vector<int64_t>(25, 100 + chunk));
    if (chunk == 2) session.EndInput();
    while (auto job = session.NextJob()) {
      std::promise<std::pair<absl::Status, model::VocodeJob>> done;
      auto result = done.get_future();
      std::unique_ptr<batcher::Job> j = std::make_unique<ModelJob>(
          std::move(*job), batcher::Fingerprint{}, vocoder_->manifest().n_timesteps,
          /*stream_id=*/0, batcher::kNever, nullptr,
          ModelJob::Done([&done](absl::Status s, const batcher::BatchInfo&, model::VocodeJob& r) {
            done.set_value({std::move(s), std::move(r)});
          }));
      if (auto s = batcher_->Submit(&j); !s.ok()) return s;
      auto [status, finished] = result.get();
      if (!status.ok()) {
        return absl::Status(status.code(),
                            absl::StrCat("model warm-up failed: ", status.message()));
      }
      session.Complete(finished);
    }
  }
  return absl::OkStatus();
}

void VocoderServer::Drain(std::chrono::milliseconds grace) {
  if (drained_) return;
  drained_ = true;
  state_.ready.store(false);
  metrics_->SetDraining(true);
  server_->GetHealthCheckService()->SetServingStatus(kReadinessService, false);
  const bool idle = admission_->DrainAndWait(std::chrono::steady_clock::now() + grace);
  if (!idle) {
    // Grace over or cut short: every open call gets a status now (its queued
    // jobs are dropped; a batch on the GPU still completes into it).
    calls_.AbortAll(absl::UnavailableError(
        "server is shutting down before this call finished; retry on another replica"));
  }
  {
    std::lock_guard lock(sweeper_mu_);
    sweeper_stop_ = true;
  }
  sweeper_cv_.notify_all();
  if (sweeper_.joinable()) sweeper_.join();
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  batcher_->Shutdown(batcher::Batcher::ShutdownMode::kFailQueued);
  executor_.reset();  // runs the last completions
  server_->Wait();
}

void VocoderServer::InterruptDrain() { admission_->Interrupt(); }

int VocoderServer::metrics_port() const {
  return metrics_http_ == nullptr ? 0 : metrics_http_->port();
}

VocoderServer::~VocoderServer() {
  metrics_http_.reset();  // its scrape hook reads members destroyed before it
  if (server_ != nullptr) Drain(std::chrono::milliseconds(0));
  {
    std::lock_guard lock(sweeper_mu_);
    sweeper_stop_ = true;
  }
  sweeper_cv_.notify_all();
  if (sweeper_.joinable()) sweeper_.join();
}

}  // namespace vocoder::server
