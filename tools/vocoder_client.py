#!/usr/bin/env python3
"""Example Python client for vocoderd (copy it): streams speech tokens, gets
24 kHz audio back chunk by chunk, stitches it by start_sample, writes a WAV.

    .venv/bin/python tools/vocoder_client.py --target 127.0.0.1:50051 \\
        --tokens 150 --chunk 25 --wav out.wav

The gRPC stubs are generated from proto/vocoder/v1/vocoder.proto with
grpcio-tools at start (into a temp dir), so the client always matches the proto.
"""
import argparse
import os
import random
import sys
import tempfile
import time
import wave

import grpc
from grpc_tools import protoc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_stubs():
    """Generates vocoder_pb2 / vocoder_pb2_grpc from the proto and imports them."""
    out = tempfile.mkdtemp(prefix="vocoder-py-")
    proto_dir = os.path.join(ROOT, "proto")
    rc = protoc.main(["protoc", f"-I{proto_dir}",
                      f"-I{os.path.join(os.path.dirname(protoc.__file__), '_proto')}",
                      f"--python_out={out}", f"--grpc_python_out={out}",
                      os.path.join(proto_dir, "vocoder/v1/vocoder.proto")])
    if rc != 0:
        sys.exit(f"protoc failed with {rc}")
    sys.path.insert(0, out)
    from vocoder.v1 import vocoder_pb2, vocoder_pb2_grpc  # noqa: E402
    return vocoder_pb2, vocoder_pb2_grpc


def requests(pb, voice, tokens, chunk, rate, sent):
    """Config first, then token chunks; records when each chunk left."""
    yield pb.StreamVocodeRequest(config=pb.StreamConfig(
        voice_id=voice, encoding=pb.PCM_S16LE, request_id="python-example"))
    t0 = time.monotonic()
    for seq, start in enumerate(range(0, len(tokens), chunk)):
        end = min(len(tokens), start + chunk)
        if rate > 0:  # pace like a T3 front-end: token i exists at i / rate s
            time.sleep(max(0.0, t0 + end / rate - time.monotonic()))
        sent[seq] = time.monotonic()
        yield pb.StreamVocodeRequest(chunk=pb.TokenChunk(
            tokens=tokens[start:end], sequence_number=seq, is_final=end == len(tokens)))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", default="127.0.0.1:50051")
    p.add_argument("--voice", help="voice id (default: the first listed)")
    p.add_argument("--tokens", type=int, default=150, help="tokens to send (25 = 1 s)")
    p.add_argument("--chunk", type=int, default=25)
    p.add_argument("--rate", type=float, default=0, help="tokens/s pacing (0 = no pacing)")
    p.add_argument("--wav", default="vocoder-python.wav")
    args = p.parse_args()

    pb, pb_grpc = load_stubs()
    stub = pb_grpc.VocoderStub(grpc.insecure_channel(args.target))
    voice = args.voice or stub.ListVoices(pb.ListVoicesRequest()).voices[0].voice_id
    rng = random.Random(0)
    tokens = [rng.randrange(6561) for _ in range(args.tokens)]

    sent, pcm, first_audio = {}, bytearray(), None
    rate_hz = 24000
    for resp in stub.StreamVocode(requests(pb, voice, tokens, args.chunk, args.rate, sent)):
        if resp.HasField("started"):
            rate_hz = resp.started.sample_rate_hz
            continue
        audio = resp.audio
        if audio.start_sample * 2 != len(pcm):
            sys.exit(f"gap: chunk starts at {audio.start_sample}, have {len(pcm) // 2}")
        pcm += audio.audio
        if first_audio is None and audio.num_samples:
            first_audio = time.monotonic() - sent[0]
        print(f"chunk {audio.sequence_number}: {audio.num_samples} samples at {audio.start_sample}, "
              f"server queue {resp.timing.queue_us} us, compute {resp.timing.compute_us} us, "
              f"batch {resp.timing.batch_size}")
    with wave.open(args.wav, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate_hz)
        w.writeframes(bytes(pcm))
    seconds = len(pcm) / 2 / rate_hz
    print(f"voice {voice}: {len(tokens)} tokens -> {seconds:.2f} s of audio "
          f"({len(pcm) // 2} samples), first audio after {first_audio * 1000:.0f} ms, "
          f"wrote {args.wav}")


if __name__ == "__main__":
    main()
