#!/usr/bin/env python3
"""Reports of scripts/bench-sim (docs/benchmarks.md, "GPU scale, simulated").

    sim_report.py suite OUT_DIR --profile NAME     merge, ratios, tables, plots
    sim_report.py validate REAL.json SIM.json --out validate.json

suite reads OUT_DIR/{model.json, closed-N.json, saturation.json, open-R.json,
host_cpu.jsonl}; writes loadgen.json (the closed levels as one sweep, for
plot.py), summary.json, host_cpu.png and plot.py's PNGs, and prints Markdown
tables. Every figure is from the SIMULATED device and labelled so.

validate compares vocoderd on the real tiny model with vocoderd on
sim:cpu-tiny under the same load: throughput and mean chunk latency per level,
and whether they agree within --tolerance (15 %).
"""
import argparse
import glob
import json
import os
import subprocess
import sys

GOALS = {"efficiency": 0.9, "realtime_share": 0.8, "cores_per_100_streams": 0.5,
         "ttfa_p95_ms_at_128": 250}


def load(path):
    with open(path) as f:
        return json.load(f)


def host_cpu(out):
    rows = {}
    path = os.path.join(out, "host_cpu.jsonl")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                rows[r["label"]] = r
    return rows


def cpu_fields(r):
    if not r or r["audio_s"] <= 0:
        return {}
    per_audio_s = r["cpu_s"] / r["audio_s"]  # cores per real-time stream
    return {"cpu_s": round(r["cpu_s"], 3), "audio_s": round(r["audio_s"], 1),
            "cpu_s_per_audio_s": round(per_audio_s, 6),
            "cores_per_100_streams": round(100 * per_audio_s, 4),
            "cores": round(r["cpu_s"] / r["wall_s"], 4),
            "loadgen_cores": round(r["loadgen_cpu_s"] / r["wall_s"], 4)}


def model_figures(model):
    rows = model["rows"]
    best = max(rows, key=lambda r: r["audio_s_per_s"])
    paced = [r for r in rows if r["chunk_tokens"] == 25 and r["batch_size"] <= 32]
    ideal = max(paced, key=lambda r: r["audio_s_per_s"]) if paced else None
    b32 = next((r for r in paced if r["batch_size"] == 32), None)
    return {"best_audio_s_per_s": best["audio_s_per_s"], "best_at": {
        "batch_size": best["batch_size"], "chunk_tokens": best["chunk_tokens"]},
        "ideal_realtime_streams": ideal["audio_s_per_s"] if ideal else None,
        "batch32_chunk25_ms": b32["median_ms"] if b32 else None}


def level_row(l, cpu):
    srv = l.get("server") or {}
    trig = srv.get("triggers", {})
    return {
        "streams": l["concurrency"], "audio_s_per_s": round(l["audio_s_per_s"], 2),
        "ttfa_ms": {k: round(l["ttfa_ms"][k], 1) for k in ("p50", "p95", "p99")},
        "chunk_ms": {k: round(l["chunk_latency_ms"][k], 1) for k in ("p50", "p95", "mean")},
        "queue_ms_mean": round(l["server_queue_ms"]["mean"], 1),
        "compute_ms_mean": round(l["server_compute_ms"]["mean"], 1),
        "overhead_ms_mean": round(l["overhead_ms"]["mean"], 2),
        "server_stall_ms_mean": round(l["server_stall_ms"]["mean"], 1),
        "stalled": l["stalled_utterances"], "utterances": l["utterances"],
        "errors": l["errors"], "stable": l["stable"],
        "mean_batch": round(srv.get("mean_batch_size", 0), 2),
        "triggers": {k: v for k, v in sorted(trig.items(), key=lambda kv: -kv[1]) if v},
        "gpu_busy": round(srv.get("gpu_busy_share", 0), 3),
        **cpu_fields(cpu)}


def fmt_triggers(t):
    return ", ".join(f"{k} {v}" for k, v in list(t.items())[:3]) or "-"


def suite(out, profile):
    cpu = host_cpu(out)
    summary = {"simulated": True, "profile": profile}
    model_path = os.path.join(out, "model.json")
    if os.path.exists(model_path):
        summary["profile_figures"] = model_figures(load(model_path))
    closed = sorted((load(p) for p in glob.glob(os.path.join(out, "closed-*.json"))),
                    key=lambda d: d["levels"][0]["concurrency"])
    levels = []
    if closed:
        merged = dict(closed[0], levels=[d["levels"][0] for d in closed],
                      label=f"SIMULATED {profile}")
        with open(os.path.join(out, "loadgen.json"), "w") as f:
            json.dump(merged, f, indent=2)
        for d in closed:
            l = d["levels"][0]
            levels.append(level_row(l, cpu.get(f"closed {l['concurrency']}")))
    summary["closed"] = levels
    sat_path = os.path.join(out, "saturation.json")
    if os.path.exists(sat_path):
        l = load(sat_path)["levels"][0]
        summary["saturation"] = level_row(l, cpu.get(f"saturation {l['concurrency']}"))
    opens = sorted((load(p)["levels"][0] for p in glob.glob(os.path.join(out, "open-*.json"))),
                   key=lambda l: l["arrival_rate"])
    summary["open"] = [dict(level_row(l, cpu.get(f"open {l['arrival_rate']:g}")),
                            arrival_rate=l["arrival_rate"],
                            dropped=l["dropped_arrivals"]) for l in opens]
    # Headline ratios.
    h = {}
    pf = summary.get("profile_figures", {})
    if "saturation" in summary and pf:
        h["batching_efficiency"] = round(
            summary["saturation"]["audio_s_per_s"] / pf["best_audio_s_per_s"], 3)
    ok = [r["streams"] for r in levels if r["stalled"] == 0 and r["errors"] == 0]
    # The largest level such that it and every level below it are stall-free.
    rt = 0
    for r in levels:
        if r["stalled"] or r["errors"]:
            break
        rt = r["streams"]
    h["realtime_streams"] = rt
    h["stall_free_levels"] = ok
    if pf.get("ideal_realtime_streams"):
        h["ideal_realtime_streams"] = round(pf["ideal_realtime_streams"], 1)
        h["realtime_share"] = round(rt / pf["ideal_realtime_streams"], 3)
    cores = [r["cores_per_100_streams"] for r in levels
             if "cores_per_100_streams" in r and r["streams"] >= 64]
    if cores:
        h["cores_per_100_streams_max_at_64plus"] = max(cores)
    at128 = next((r for r in levels if r["streams"] == 128), None)
    if at128:
        h["ttfa_p95_ms_at_128"] = at128["ttfa_ms"]["p95"]
    summary["headline"] = h
    summary["goals"] = GOALS
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print_tables(summary)
    plots(out, levels, profile)


def print_tables(s):
    print(f"SIMULATED device, profile {s['profile']}")
    pf = s.get("profile_figures")
    if pf:
        print(f"profile: best {pf['best_audio_s_per_s']:.1f} audio s/s at {pf['best_at']}; "
              f"ideal real-time streams (25-token chunks, batch <= 32) "
              f"{pf['ideal_realtime_streams']:.1f}; batch 32 x 25-token chunk "
              f"{pf['batch32_chunk25_ms']:.1f} ms")
    print("\n| streams | audio s/s | TTFA p50 / p95 / p99 | chunk p50 / p95 | queue / compute / "
          "overhead (mean) | server stall mean | stalled | mean batch | triggers | "
          "GPU busy | vocoderd cores | cores per 100 streams | loadgen cores | stable |")
    print("|" + "---|" * 14)
    rows = list(s["closed"]) + ([dict(s["saturation"], streams=f"{s['saturation']['streams']} "
                                      "(fast)")] if "saturation" in s else [])
    for r in rows:
        print(f"| {r['streams']} | {r['audio_s_per_s']:.1f} | {r['ttfa_ms']['p50']:.0f} / "
              f"{r['ttfa_ms']['p95']:.0f} / {r['ttfa_ms']['p99']:.0f} | {r['chunk_ms']['p50']:.0f}"
              f" / {r['chunk_ms']['p95']:.0f} | {r['queue_ms_mean']:.0f} / "
              f"{r['compute_ms_mean']:.0f} / {r['overhead_ms_mean']:.1f} | "
              f"{r['server_stall_ms_mean']:.0f} | {r['stalled']}/{r['utterances']} | "
              f"{r['mean_batch']:.1f} | {fmt_triggers(r['triggers'])} | {r['gpu_busy']:.2f} | "
              f"{r.get('cores', float('nan')):.3f} | {r.get('cores_per_100_streams', float('nan')):.3f}"
              f" | {r.get('loadgen_cores', float('nan')):.2f} | {'yes' if r['stable'] else 'no'} |")
    if s["open"]:
        print("\n| arrivals/s | offered streams | audio s/s | TTFA p50 / p95 / p99 | chunk p95 | "
              "stalled | dropped | mean batch | vocoderd cores |")
        print("|" + "---|" * 9)
        for r in s["open"]:
            print(f"| {r['arrival_rate']:g} | {10 * r['arrival_rate']:.0f} | "
                  f"{r['audio_s_per_s']:.1f} | {r['ttfa_ms']['p50']:.0f} / {r['ttfa_ms']['p95']:.0f}"
                  f" / {r['ttfa_ms']['p99']:.0f} | {r['chunk_ms']['p95']:.0f} | "
                  f"{r['stalled']}/{r['utterances']} | {r['dropped']} | {r['mean_batch']:.1f} | "
                  f"{r.get('cores', float('nan')):.3f} |")
    print("\nheadline:", json.dumps(s["headline"]))


def plots(out, levels, profile):
    here = os.path.dirname(os.path.abspath(__file__))
    loadgen = os.path.join(out, "loadgen.json")
    if os.path.exists(loadgen):
        args = [sys.executable, os.path.join(here, "plot.py"), loadgen, out,
                "--title", f"SIMULATED {profile}"]
        if os.path.exists(os.path.join(out, "model.json")):
            args += ["--model", os.path.join(out, "model.json")]
        subprocess.run(args, check=True)
    pts = [(r["streams"], r["cores_per_100_streams"]) for r in levels
           if "cores_per_100_streams" in r]
    if not pts:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label="vocoderd")
    ax.axhline(GOALS["cores_per_100_streams"], color="tab:red", ls="--", label="goal 0.5")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent streams (paced)")
    ax.set_ylabel("host cores per 100 real-time streams")
    ax.set_title(f"vocoderd host CPU per stream — SIMULATED {profile}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "host_cpu.png"), dpi=100)
    print(f"wrote {os.path.join(out, 'host_cpu.png')}")


def validate(real_path, sim_path, out, tolerance):
    real = {l["concurrency"]: l for l in load(real_path)["levels"]}
    sim = {l["concurrency"]: l for l in load(sim_path)["levels"]}
    rows = []
    print("| streams | audio s/s real / sim (diff) | mean chunk ms real / sim (diff) | "
          "TTFA p50 real / sim | mean batch real / sim | within |")
    print("|---|---|---|---|---|---|")
    for c in sorted(set(real) & set(sim)):
        r, s = real[c], sim[c]
        d_tp = s["audio_s_per_s"] / r["audio_s_per_s"] - 1
        d_lat = s["chunk_latency_ms"]["mean"] / r["chunk_latency_ms"]["mean"] - 1
        within = abs(d_tp) <= tolerance and abs(d_lat) <= tolerance
        rb = (r.get("server") or {}).get("mean_batch_size", 0)
        sb = (s.get("server") or {}).get("mean_batch_size", 0)
        rows.append({"streams": c, "real_audio_s_per_s": r["audio_s_per_s"],
                     "sim_audio_s_per_s": s["audio_s_per_s"], "throughput_diff": round(d_tp, 4),
                     "real_chunk_mean_ms": r["chunk_latency_ms"]["mean"],
                     "sim_chunk_mean_ms": s["chunk_latency_ms"]["mean"],
                     "latency_diff": round(d_lat, 4), "real_mean_batch": rb, "sim_mean_batch": sb,
                     "within_tolerance": within})
        print(f"| {c} | {r['audio_s_per_s']:.2f} / {s['audio_s_per_s']:.2f} ({d_tp:+.1%}) | "
              f"{r['chunk_latency_ms']['mean']:.1f} / {s['chunk_latency_ms']['mean']:.1f} "
              f"({d_lat:+.1%}) | {r['ttfa_ms']['p50']:.0f} / {s['ttfa_ms']['p50']:.0f} | "
              f"{rb:.2f} / {sb:.2f} | {'yes' if within else 'NO'} |")
    with open(out, "w") as f:
        json.dump({"tolerance": tolerance, "levels": rows}, f, indent=2)
    print(f"wrote {out}")


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("suite")
    s.add_argument("out")
    s.add_argument("--profile", default="h200-estimate")
    v = sub.add_parser("validate")
    v.add_argument("real")
    v.add_argument("sim")
    v.add_argument("--out", required=True)
    v.add_argument("--tolerance", type=float, default=0.15)
    a = ap.parse_args(argv)
    if a.cmd == "suite":
        suite(a.out, a.profile)
    else:
        validate(a.real, a.sim, a.out, a.tolerance)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
