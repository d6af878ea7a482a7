#!/usr/bin/env python3
"""tools/bench/summarize.py and plot.py on hand-made inputs whose answers are
known: the ratios, the real-time stream count, the goal verdicts, and that
the plots are written as PNG files.

    summarize_test.py REPO_ROOT
"""
import json
import os
import subprocess
import sys
import tempfile

root = sys.argv[1]
sys.path.insert(0, os.path.join(root, "tools", "bench"))
import plot  # noqa: E402
import summarize  # noqa: E402

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def level(c, audio, ttfa50, ttfa95, stalled=0, errors=0, utterances=10):
    return {"mode": "closed", "concurrency": c, "audio_s_per_s": audio, "errors": errors,
            "utterances": utterances, "stalled_utterances": stalled,
            "ttfa_ms": {"p50": ttfa50, "p95": ttfa95, "p99": ttfa95},
            "chunk_latency_ms": {"p50": ttfa50, "p95": ttfa95, "p99": ttfa95},
            "first_chunk_queue_ms": {"p50": 0.1}, "first_chunk_compute_ms": {"p50": 40.0},
            "overhead_ms": {"p50": 0.4}, "ttfa_overhead_ms": {"p50": 0.6},
            "server": {"batches": 10, "mean_batch_size": min(c, 32),
                       "batch_sizes": {"1": 4, "2": 6} if c < 8 else {"5-8": 3, ">32": 7}}}


model = {"rows": [{"batch_size": 1, "chunk_tokens": 25, "audio_s_per_s": 20.0},
                  {"batch_size": 32, "chunk_tokens": 25, "audio_s_per_s": 400.0},
                  {"batch_size": 64, "chunk_tokens": 50, "audio_s_per_s": 380.0}]}
first = {"rows": [{"batch_size": 1, "median_ms": 40.5}]}
loadgen = {"levels": [level(1, 1.0, 41.0, 45.0),
                      level(16, 16.0, 50.0, 70.0),
                      level(48, 48.0, 80.0, 150.0),
                      level(96, 90.0, 120.0, 300.0, stalled=3),
                      level(128, 360.0, 400.0, 900.0, stalled=50, errors=2)]}


def main():
    s = summarize.summarize(model, first, loadgen)
    check(s["model_best"]["batch_size"] == 32, "model best is the highest audio s/s row")
    # 64 was not run: the reference is the highest level below it (48).
    check(s["reference_concurrency"] == 48, f"reference level ({s.get('reference_concurrency')})")
    check(abs(s["batching_efficiency"] - 48.0 / 400.0) < 1e-12, "batching efficiency")
    # With a saturation run, efficiency comes from it (64 streams there).
    sat = {"levels": [level(64, 360.0, 500.0, 900.0)]}
    s2 = summarize.summarize(model, first, loadgen, saturation=sat)
    check(abs(s2["batching_efficiency"] - 0.9) < 1e-12 and s2["efficiency_concurrency"] == 64,
          "efficiency from the saturation run")
    check(s2["ttfa_p95_ms_64_streams"] == 150.0, "TTFA still from the paced sweep")
    check(abs(s["single_stream_overhead_ms"] - 0.5) < 1e-9, "single-stream overhead = 41 - 40.5")
    check(s["single_stream_overhead_paired_ms"] == 0.6, "paired overhead from the loadgen")
    check(s["realtime_streams"] == 48, f"real-time streams ({s['realtime_streams']})")
    g = s["goals"]
    check(g["single_stream_overhead_ms"]["met"] is True, "0.5 ms meets < 1 ms")
    check(g["batching_efficiency"]["met"] is False, "0.12 misses >= 0.9")
    check(g["ttfa_p95_ms_64_streams"]["value"] == 150.0 and g["ttfa_p95_ms_64_streams"]["met"],
          "TTFA p95 at the reference level")
    check(g["realtime_streams"]["met"] is False, "48 streams miss >= 100")

    work = tempfile.mkdtemp(prefix="vocoderd-summarize-")
    paths = {}
    for name, doc in (("model", model), ("first", first), ("loadgen", loadgen)):
        paths[name] = os.path.join(work, name + ".json")
        with open(paths[name], "w") as f:
            json.dump(doc, f)
    out = os.path.join(work, "summary.json")
    p = subprocess.run([sys.executable, os.path.join(root, "tools", "bench", "summarize.py"),
                        "--model", paths["model"], "--first-chunk", paths["first"],
                        "--loadgen", paths["loadgen"], "--out", out],
                       capture_output=True, text=True)
    print(p.stdout, p.stderr, sep="")
    check(p.returncode == 0 and "batching_efficiency" in p.stdout, "CLI prints the table")
    with open(out) as f:
        check(json.load(f)["realtime_streams"] == 48, "CLI writes the same summary")

    written = plot.plot(loadgen, work, model, "test")
    check(sorted(os.path.basename(w) for w in written) ==
          ["batch_sizes.png", "latency.png", "throughput.png"], f"three plots ({written})")
    for w in written:
        with open(w, "rb") as f:
            check(f.read(8) == b"\x89PNG\r\n\x1a\n", f"{w} is a PNG")
    if failures:
        sys.exit(f"{len(failures)} check(s) failed")
    print("summarize/plot: all checks passed")


if __name__ == "__main__":
    main()
