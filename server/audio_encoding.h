// PCM encoding of vocoded audio for the wire, and the HiFT phase each stream
// draws once. Pure functions.
#ifndef VOCODER_SERVER_AUDIO_ENCODING_H_
#define VOCODER_SERVER_AUDIO_ENCODING_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "vocoder/v1/vocoder.pb.h"

namespace vocoder::server {

// 2 for PCM_S16LE, 4 for PCM_F32LE, 0 otherwise.
int BytesPerSample(v1::AudioEncoding encoding);

// Little-endian PCM; S16 clamps to [-1, 1] and rounds.
std::string EncodeAudio(const std::vector<float>& samples, v1::AudioEncoding encoding);

// The HiFT SineGen phase of one stream (harmonic 0 is 0), a deterministic
// function of the stream id so that a stream's chunks share it.
std::array<float, 9> PhaseFor(uint64_t stream_id);

}  // namespace vocoder::server

#endif  // VOCODER_SERVER_AUDIO_ENCODING_H_
