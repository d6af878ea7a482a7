// Fuzzes the edge's request validation (server/request_validation.h) as a
// hostile client drives it: a StreamVocode message sequence or a unary
// Vocode request, from bytes.
//
// Input: byte 0 picks the RPC (even: StreamVocode, odd: Vocode). StreamVocode:
// then records of [2-byte little-endian length][serialized
// StreamVocodeRequest], each fed to one StreamValidator in order; a trailing
// partial record is a half-close. Vocode: the rest is a serialized
// VocodeRequest. Unparseable records are skipped (gRPC never delivers them).
//
// Checks what the edge promises: refusals are INVALID_ARGUMENT or NOT_FOUND
// with a message; accepted chunks carry only token ids below the vocabulary
// (6561/6562 stripped), sequence numbers without gaps, at most
// max_tokens_per_chunk tokens and max_tokens_per_utterance in all; nothing is
// accepted after an error, a second config or after the final chunk; a unary
// plan's response fits the message limit.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "server/request_validation.h"

namespace {

using vocoder::server::EdgeLimits;
using vocoder::server::StreamValidator;
using vocoder::server::VoiceEntry;

void Require(bool ok) {
  if (!ok) std::abort();
}

bool RefusalOk(const absl::Status& s) {
  return !s.ok() && !s.message().empty() &&
         (s.code() == absl::StatusCode::kInvalidArgument ||
          s.code() == absl::StatusCode::kNotFound);
}

const EdgeLimits& Limits() {
  static const EdgeLimits limits = [] {
    EdgeLimits l;
    l.max_tokens_per_chunk = 64;
    l.max_tokens_per_utterance = 256;
    l.max_message_bytes = 64 << 10;
    return l;
  }();
  return limits;
}

absl::StatusOr<VoiceEntry> FindVoice(const std::string& id) {
  static const auto voice = [] {
    auto v = std::make_shared<vocoder::model::Voice>();
    v->data.prompt_tokens.assign(10, 1);
    return v;
  }();
  if (id != "alice") return absl::NotFoundError("voice '" + id + "' is not registered");
  return VoiceEntry{"alice", "Alice", 0, {}, 10, voice};
}

void FuzzStream(const uint8_t* data, size_t size) {
  StreamValidator v(Limits(), FindVoice);
  bool failed = false;
  bool final_seen = false;
  uint64_t next_seq = 0;
  int64_t tokens = 0;
  size_t at = 0;
  while (at + 2 <= size && !failed) {
    const size_t len = data[at] | (static_cast<size_t>(data[at + 1]) << 8);
    at += 2;
    if (len > size - at) break;
    vocoder::v1::StreamVocodeRequest r;
    const bool parsed = r.ParseFromArray(data + at, static_cast<int>(len));
    at += len;
    if (!parsed) continue;
    const bool had_config = v.has_config();
    auto m = v.Next(r);
    if (!m.ok()) {
      Require(RefusalOk(m.status()));
      failed = true;
      break;
    }
    if (m->is_config) {
      Require(!had_config);
      Require(m->setup.encoding == vocoder::v1::PCM_S16LE ||
              m->setup.encoding == vocoder::v1::PCM_F32LE);
      Require(m->setup.n_timesteps >= 1 &&
              m->setup.n_timesteps <= static_cast<uint32_t>(Limits().max_timesteps));
      continue;
    }
    Require(had_config && !final_seen);
    Require(m->sequence_number == next_seq++);
    Require(static_cast<int>(r.chunk().tokens_size()) <= Limits().max_tokens_per_chunk);
    for (int64_t t : m->tokens) Require(t >= 0 && t < Limits().token_vocab);
    tokens += static_cast<int64_t>(m->tokens.size());
    Require(tokens <= Limits().max_tokens_per_utterance && tokens == v.tokens());
    final_seen = m->is_final;
    Require(v.input_done() == final_seen);
  }
  if (!failed && at < size) {  // a partial record: the client half-closed
    const absl::Status s = v.EndOfInput();
    Require(s.ok() == v.has_config());
    if (!s.ok()) Require(RefusalOk(s));
  }
}

void FuzzUnary(const uint8_t* data, size_t size) {
  vocoder::v1::VocodeRequest r;
  if (!r.ParseFromArray(data, static_cast<int>(size))) return;
  auto plan = vocoder::server::CheckUnary(Limits(), FindVoice, r);
  if (!plan.ok()) {
    Require(RefusalOk(plan.status()));
    return;
  }
  Require(r.tokens_size() <= Limits().max_tokens_per_utterance);
  for (int64_t t : plan->tokens) Require(t >= 0 && t < Limits().token_vocab);
  Require(plan->audio_bytes + 256 <= Limits().max_message_bytes);
  Require(plan->audio_bytes == static_cast<int64_t>(plan->tokens.size()) *
                                   Limits().samples_per_token() *
                                   (plan->setup.encoding == vocoder::v1::PCM_F32LE ? 4 : 2));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  if (data[0] % 2 == 0) {
    FuzzStream(data + 1, size - 1);
  } else {
    FuzzUnary(data + 1, size - 1);
  }
  return 0;
}
