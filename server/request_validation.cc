#include "server/request_validation.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "model/vocoder.h"
#include "server/audio_encoding.h"

namespace vocoder::server {

using v1::AudioEncoding;

absl::StatusOr<StreamSetup> CheckConfig(const EdgeLimits& limits, const VoiceLookup& voices,
                                        const v1::StreamConfig& c) {
  StreamSetup s;
  if (c.encoding() != v1::PCM_S16LE && c.encoding() != v1::PCM_F32LE) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config.encoding must be PCM_S16LE or PCM_F32LE; was ",
        v1::AudioEncoding_IsValid(c.encoding()) ? AudioEncoding_Name(c.encoding())
                                                : absl::StrCat(static_cast<int>(c.encoding()))));
  }
  s.encoding = c.encoding();
  const bool turbo = limits.variant == model::kVariantTurbo;
  if (!c.model_variant().empty() && c.model_variant() != limits.variant) {
    if (c.model_variant() != model::kVariantStandard && c.model_variant() != model::kVariantTurbo) {
      return absl::InvalidArgumentError(
          absl::StrCat("config.model_variant must be \"\", \"standard\" or \"turbo\"; was \"",
                       c.model_variant(), "\""));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("config.model_variant is \"", c.model_variant(),
                     "\" but this server serves the \"", limits.variant, "\" model (",
                     turbo ? "Chatterbox Turbo's meanflow decoder" : "Chatterbox's standard S3Gen",
                     "); send the stream to a server of the ", c.model_variant(),
                     " model, or leave model_variant empty to accept this one"));
  }
  s.n_timesteps =
      c.n_timesteps() == 0 ? static_cast<uint32_t>(limits.default_timesteps) : c.n_timesteps();
  if (s.n_timesteps > static_cast<uint32_t>(limits.max_timesteps)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config.n_timesteps must be in 1..", limits.max_timesteps, " (0 = default ",
        limits.default_timesteps, ") for the ", limits.variant, " model; was ", c.n_timesteps(),
        turbo ? ": this server serves Chatterbox Turbo, whose meanflow decoder was distilled "
                "for 2 steps (10 is the standard model's count); send 0 for its default"
              : ""));
  }
  if (c.voice_id().empty()) return absl::InvalidArgumentError("config.voice_id is required");
  auto voice = voices(c.voice_id());
  if (!voice.ok()) return voice.status();
  s.voice = *voice;
  return s;
}

absl::StatusOr<std::vector<int64_t>> CleanTokens(
    const google::protobuf::RepeatedField<uint32_t>& in, int vocab) {
  std::vector<int64_t> out;
  out.reserve(static_cast<size_t>(in.size()));
  for (int i = 0; i < in.size(); ++i) {
    const int64_t t = in.Get(i);
    if (t == model::kSosToken || t == model::kEosToken) continue;
    if (t >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("token ", i, " of the chunk is ", t,
                                                     "; speech token ids must be in 0..", vocab - 1,
                                                     " (6561/6562 are dropped)"));
    }
    out.push_back(t);
  }
  return out;
}

absl::StatusOr<StreamValidator::Message> StreamValidator::Next(
    const v1::StreamVocodeRequest& request) {
  Message m;
  if (request.has_config()) {
    if (has_config_) return absl::InvalidArgumentError("config sent twice; send it only first");
    auto setup = CheckConfig(limits_, voices_, request.config());
    if (!setup.ok()) return setup.status();
    has_config_ = true;
    m.is_config = true;
    m.setup = *std::move(setup);
    return m;
  }
  if (!request.has_chunk()) {
    return absl::InvalidArgumentError("empty request: set config or chunk");
  }
  if (!has_config_) {
    return absl::InvalidArgumentError("the first message must carry the config");
  }
  const v1::TokenChunk& chunk = request.chunk();
  if (input_done_) {
    return absl::InvalidArgumentError("chunk after the final chunk (is_final was set)");
  }
  if (chunk.sequence_number() != next_seq_) {
    return absl::InvalidArgumentError(absl::StrCat("chunk sequence_number ",
                                                   chunk.sequence_number(), " but expected ",
                                                   next_seq_, " (no gaps, no repeats)"));
  }
  ++next_seq_;
  if (chunk.tokens_size() > limits_.max_tokens_per_chunk) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk has ", chunk.tokens_size(), " tokens; at most ",
                     limits_.max_tokens_per_chunk, " per chunk (--max-tokens-per-chunk)"));
  }
  auto tokens = CleanTokens(chunk.tokens(), limits_.token_vocab);
  if (!tokens.ok()) return tokens.status();
  if (tokens_ + static_cast<int64_t>(tokens->size()) > limits_.max_tokens_per_utterance) {
    return absl::InvalidArgumentError(
        absl::StrCat("utterance exceeds ", limits_.max_tokens_per_utterance,
                     " tokens (--max-tokens-per-utterance); split it into several streams"));
  }
  tokens_ += static_cast<int64_t>(tokens->size());
  m.tokens = *std::move(tokens);
  m.sequence_number = chunk.sequence_number();
  m.is_final = chunk.is_final();
  if (m.is_final) input_done_ = true;
  return m;
}

absl::Status StreamValidator::EndOfInput() {
  if (!has_config_) return absl::InvalidArgumentError("stream ended before a config");
  input_done_ = true;
  return absl::OkStatus();
}

absl::Status CheckRequestSize(size_t bytes, const EdgeLimits& limits) {
  if (static_cast<int64_t>(bytes) <= limits.max_message_bytes) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "request message is ", bytes, " bytes, over the server's --max-message-bytes limit of ",
      limits.max_message_bytes, "; send fewer tokens per message (at most ",
      limits.max_tokens_per_chunk, " per chunk)"));
}

int TransportReceiveLimit(int64_t max_message_bytes) {
  // Twice the limit: parsing costs at most that much memory per message.
  return static_cast<int>(
      std::min<int64_t>(std::numeric_limits<int>::max(), 2 * max_message_bytes));
}

absl::StatusOr<UnaryPlan> CheckUnary(const EdgeLimits& limits, const VoiceLookup& voices,
                                     const v1::VocodeRequest& request) {
  UnaryPlan p;
  auto setup = CheckConfig(limits, voices, request.config());
  if (!setup.ok()) return setup.status();
  p.setup = *std::move(setup);
  if (request.tokens_size() > limits.max_tokens_per_utterance) {
    return absl::InvalidArgumentError(
        absl::StrCat("request has ", request.tokens_size(), " tokens; at most ",
                     limits.max_tokens_per_utterance, " (--max-tokens-per-utterance)"));
  }
  auto tokens = CleanTokens(request.tokens(), limits.token_vocab);
  if (!tokens.ok()) return tokens.status();
  p.tokens = *std::move(tokens);
  const int64_t n = static_cast<int64_t>(p.tokens.size());
  // The response must fit the message limit; find out before computing it.
  // 256 bytes cover the format and timing fields around the audio.
  p.audio_bytes = n * limits.samples_per_token() * BytesPerSample(p.setup.encoding);
  if (p.audio_bytes + 256 > limits.max_message_bytes) {
    const int64_t per_token = limits.samples_per_token() * BytesPerSample(p.setup.encoding);
    return absl::InvalidArgumentError(absl::StrCat(
        "the response would carry ", p.audio_bytes, " bytes of audio (", n, " tokens in ",
        AudioEncoding_Name(p.setup.encoding), "), over the ", limits.max_message_bytes,
        "-byte message limit (--max-message-bytes): at most ",
        (limits.max_message_bytes - 256) / per_token,
        " tokens per Vocode call; use StreamVocode for longer utterances"));
  }
  const int64_t row = p.setup.voice.voice->prompt_tokens() + n + 3;
  if (row > limits.max_row_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "utterance of ", n, " tokens is too long to vocode in one piece with this ",
        "voice (prompt + tokens must stay under ", limits.max_row_tokens, "); use StreamVocode"));
  }
  return p;
}

}  // namespace vocoder::server
