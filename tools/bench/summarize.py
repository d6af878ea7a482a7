#!/usr/bin/env python3
"""The benchmark suite's verdict: combines the model sweep (vocoder-bench
model), the first-chunk model time and the server sweep (vocoder-loadgen) of
one run into the ratios docs/benchmarks.md tracks, prints them beside their
goals and writes them as JSON. The goals are reported, never asserted.

    summarize.py --model model.json --first-chunk model_first.json \
        --loadgen loadgen.json [--saturation saturation.json] [--batcher batcher.json] \
        --out summary.json

- batching efficiency: the server's audio seconds per second at the reference
  concurrency (64, or the highest level run below it) over the model's best
  batched throughput in the same run (any batch size, any chunk size). A
  ratio of capacities, so the server must be saturated: taken from the
  saturation run (streams sent as fast as possible) when there is one; paced
  streams only saturate a server that cannot keep up with them.
- single-stream overhead: the server's time to first audio at one stream (p50)
  minus the model's time for that first chunk alone (median, vocoder-bench).
  Two separate measurements: on a shared machine their difference also holds
  the machine's drift between them. The paired figure subtracts from each
  utterance's time to first audio the server's own compute time of that
  chunk (vocoder-loadgen's ttfa_overhead_ms, p50).
- real-time streams: the largest level with no error and no utterance that
  stalled because of the server (vocoder-loadgen's stalled_utterances).
"""
import argparse
import json
import sys

GOALS = {
    "single_stream_overhead_ms": ("<", 1.0),
    "single_stream_overhead_paired_ms": ("<", 1.0),
    "batching_efficiency": (">=", 0.9),
    "ttfa_p50_ms_1_stream": ("<", 100.0),
    "ttfa_p95_ms_64_streams": ("<", 250.0),
    "realtime_streams": (">=", 100),
}


def load(path):
    with open(path) as f:
        return json.load(f)


def level_at(levels, concurrency):
    """The closed-loop level run at `concurrency`, else the highest one below it."""
    closed = [l for l in levels if l["mode"] == "closed" and l["concurrency"] <= concurrency]
    return max(closed, key=lambda l: l["concurrency"]) if closed else None


def summarize(model, first, loadgen, batcher=None, reference=64, saturation=None):
    levels = loadgen["levels"]
    best = max(model["rows"], key=lambda r: r["audio_s_per_s"])
    out = {
        "model_best": {k: best[k] for k in ("batch_size", "chunk_tokens", "audio_s_per_s")},
        "model_first_chunk_ms": first["rows"][0]["median_ms"],
    }
    ref = level_at(levels, reference)
    if ref is not None:
        out["reference_concurrency"] = ref["concurrency"]
        out["ttfa_p95_ms_64_streams"] = ref["ttfa_ms"]["p95"]
    sat = level_at(saturation["levels"], reference) if saturation else ref
    if sat is not None:
        out["efficiency_from"] = "saturation run" if saturation else "paced sweep"
        out["efficiency_concurrency"] = sat["concurrency"]
        out["server_audio_s_per_s"] = sat["audio_s_per_s"]
        out["batching_efficiency"] = sat["audio_s_per_s"] / best["audio_s_per_s"]
        srv = sat.get("server") or {}
        out["server_mean_batch_size"] = srv.get("mean_batch_size")
        out["server_padding_waste"] = srv.get("padding_waste")
    one = level_at(levels, 1)
    if one is not None:
        out["ttfa_p50_ms_1_stream"] = one["ttfa_ms"]["p50"]
        out["single_stream_overhead_ms"] = one["ttfa_ms"]["p50"] - out["model_first_chunk_ms"]
        if "ttfa_overhead_ms" in one:
            out["single_stream_overhead_paired_ms"] = one["ttfa_overhead_ms"]["p50"]
        # Where it goes: queueing and the server's own compute of that chunk,
        # then everything outside the batch (transport, session, encoding).
        out["first_chunk_queue_ms_p50"] = one.get("first_chunk_queue_ms", {}).get("p50")
        out["first_chunk_compute_ms_p50"] = one.get("first_chunk_compute_ms", {}).get("p50")
        out["overhead_outside_batch_ms_p50"] = one["overhead_ms"]["p50"]
    clean = [l["concurrency"] for l in levels
             if l["mode"] == "closed" and l["errors"] == 0 and l["utterances"] > 0
             and l["stalled_utterances"] == 0]
    out["realtime_streams"] = max(clean) if clean else 0
    out["levels_run"] = [l["concurrency"] for l in levels if l["mode"] == "closed"]
    if batcher is not None:
        out["batcher"] = {k: batcher[k] for k in ("submit_ns", "lone_stream_dispatch_p50_us")
                          if k in batcher}
    verdicts = {}
    for key, (op, bound) in GOALS.items():
        v = out.get(key)
        if v is None:
            continue
        verdicts[key] = {"value": v, "goal": f"{op} {bound}",
                         "met": v < bound if op == "<" else v >= bound}
    out["goals"] = verdicts
    return out


def print_summary(s, file=sys.stdout):
    p = lambda *a: print(*a, file=file)
    b = s["model_best"]
    p(f"model best: {b['audio_s_per_s']:.2f} audio s/s (batch {b['batch_size']}, "
      f"chunk {b['chunk_tokens']}); first chunk alone {s['model_first_chunk_ms']:.2f} ms")
    if "server_audio_s_per_s" in s:
        p(f"server at {s['efficiency_concurrency']} streams ({s['efficiency_from']}): "
          f"{s['server_audio_s_per_s']:.2f} audio s/s, mean batch "
          f"{s.get('server_mean_batch_size') or 0:.1f}, padding "
          f"{100 * (s.get('server_padding_waste') or 0):.1f} %")
    if "single_stream_overhead_ms" in s:
        p(f"one stream: TTFA p50 {s['ttfa_p50_ms_1_stream']:.2f} ms = first chunk queue "
          f"{s['first_chunk_queue_ms_p50'] or 0:.2f} + server compute "
          f"{s['first_chunk_compute_ms_p50'] or 0:.2f} + outside the batch "
          f"{s['overhead_outside_batch_ms_p50']:.2f} ms (chunk p50)")
    p(f"{'figure':<28} {'value':>10}  {'goal':<10} met")
    for key, v in s["goals"].items():
        p(f"{key:<28} {v['value']:>10.3f}  {v['goal']:<10} {'yes' if v['met'] else 'NO'}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="vocoder-bench model JSON (batch sweep)")
    ap.add_argument("--first-chunk", required=True,
                    help="vocoder-bench model JSON, batch 1, the first chunk's shape")
    ap.add_argument("--loadgen", required=True, help="vocoder-loadgen JSON")
    ap.add_argument("--saturation",
                    help="vocoder-loadgen JSON of streams sent as fast as possible (efficiency)")
    ap.add_argument("--batcher", help="vocoder-bench batcher JSON")
    ap.add_argument("--reference-concurrency", type=int, default=64)
    ap.add_argument("--out", help="write the summary here")
    a = ap.parse_args()
    s = summarize(load(a.model), load(a.first_chunk), load(a.loadgen),
                  load(a.batcher) if a.batcher else None, a.reference_concurrency,
                  load(a.saturation) if a.saturation else None)
    print_summary(s)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(s, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
