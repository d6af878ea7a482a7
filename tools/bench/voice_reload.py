#!/usr/bin/env python3
"""What the first stream after a voice eviction pays (issue 16).

Starts vocoderd over a fresh voice repository with a device cache that holds
three voices (--voice-cache-mb 1), registers four full-length voices (250 prompt
tokens, 10 s of reference audio: the largest a client may send), then streams
alternately so that each stream's voice was evicted by the three before it
(every stream reloads), and again with a cache large enough for all four
(no stream reloads). Reports time to first audio (client side) for both, and
the server's own vocoder_voice_reload_seconds. Prints a table, writes JSON.

    voice_reload.py VOCODERD MODEL_DIR [--streams N] [--json out.json]
Run it under /work/bin/cpu-exclusive (or on an otherwise idle machine).
"""
import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import grpc  # noqa: E402
from vocoder_client import load_stubs  # noqa: E402

pb, pb_grpc = load_stubs()


def conditioning(seed, tokens=250):
    c = pb.VoiceConditioning()
    c.prompt_tokens.extend((i * 11 + seed) % 6561 for i in range(tokens))
    c.prompt_frames = 2 * tokens
    c.prompt_mel.extend(-5.0 + 0.001 * ((i + seed) % 97) for i in range(2 * tokens * 80))
    c.embedding.extend(0.01 * ((i + seed) % 13) for i in range(192))
    return c


def first_audio(stub, vid, tokens=25):
    def reqs():
        yield pb.StreamVocodeRequest(config=pb.StreamConfig(voice_id=vid, encoding=pb.PCM_S16LE))
        yield pb.StreamVocodeRequest(chunk=pb.TokenChunk(
            tokens=[(i * 7) % 6561 for i in range(tokens)], sequence_number=0, is_final=True))
    t0 = time.perf_counter()
    first = None
    for resp in stub.StreamVocode(reqs(), timeout=120):
        if resp.HasField("audio") and resp.audio.num_samples > 0 and first is None:
            first = time.perf_counter() - t0
    return first


def scrape(mport):
    with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10) as r:
        text = r.read().decode()
    def value(name):
        m = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
        return float(m.group(1)) if m else 0.0
    return {"reloads": value("vocoder_voice_reloads_total"),
            "evictions": value("vocoder_voice_evictions_total"),
            "reload_seconds_sum": value("vocoder_voice_reload_seconds_sum"),
            "reload_seconds_count": value("vocoder_voice_reload_seconds_count")}


def run(vocoderd, model, cache_mb, streams):
    work = tempfile.mkdtemp(prefix="voice-reload-")
    out = open(os.path.join(work, "out"), "w+")
    proc = subprocess.Popen(
        [vocoderd, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
         "--model-dir", model, "--device", "cpu", "--voices-dir", os.path.join(work, "voices"),
         "--voice-cache-mb", str(cache_mb)], stdout=out, stderr=subprocess.DEVNULL)
    try:
        for _ in range(1200):
            out.seek(0)
            m = re.search(r"serving on port (\d+), metrics on port (\d+)", out.read())
            if m:
                break
            time.sleep(0.1)
        else:
            sys.exit("vocoderd did not start")
        port, mport = int(m.group(1)), int(m.group(2))
        stub = pb_grpc.VocoderStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        voices = [f"r{i}" for i in range(4)]
        for i, vid in enumerate(voices):
            stub.RegisterVoice(pb.RegisterVoiceRequest(voice_id=vid, conditioning=conditioning(i)),
                               timeout=60)
        for vid in voices:  # warm every shape once
            first_audio(stub, vid)
        before = scrape(mport)
        ttfa = [first_audio(stub, voices[k % 4]) for k in range(streams)]
        after = scrape(mport)
        delta = {k: after[k] - before[k] for k in after}
        return ttfa, delta
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("vocoderd")
    ap.add_argument("model")
    ap.add_argument("--streams", type=int, default=30)
    ap.add_argument("--json")
    a = ap.parse_args()
    # A 250-token voice is about 0.33 MB (host + device): 1 MB holds three of
    # four; 64 MB holds all.
    results = {}
    for name, cache_mb in (("evicted", 1), ("resident", 64)):
        ttfa, delta = run(a.vocoderd, a.model, cache_mb, a.streams)
        results[name] = {
            "voice_cache_mb": cache_mb, "streams": len(ttfa),
            "ttfa_ms_median": 1000 * statistics.median(ttfa),
            "ttfa_ms_mean": 1000 * statistics.mean(ttfa),
            "reloads": delta["reloads"], "evictions": delta["evictions"],
            "server_reload_ms_mean": (1000 * delta["reload_seconds_sum"] /
                                      delta["reload_seconds_count"])
            if delta["reload_seconds_count"] else None}
    e, r = results["evicted"], results["resident"]
    print("voice reload after eviction (tiny model, CPU; 250-token voices):")
    for name, v in results.items():
        print(f"  {name:9s} cache {v['voice_cache_mb']:3d} MB: {v['streams']} streams, "
              f"ttfa median {v['ttfa_ms_median']:.1f} ms, mean {v['ttfa_ms_mean']:.1f} ms, "
              f"reloads {v['reloads']:.0f}, evictions {v['evictions']:.0f}, "
              f"server reload mean {v['server_reload_ms_mean'] or 0:.2f} ms")
    print(f"  first stream after an eviction pays {e['ttfa_ms_median'] - r['ttfa_ms_median']:+.1f} ms "
          f"median time to first audio")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"tool": "voice_reload", "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
