#!/usr/bin/env python3
"""Report of scripts/bench-step: --scheduling step against batch (issue #13).

    step_report.py OUT_DIR [--profile NAME]

Reads OUT_DIR/{sim,cpu}/{batch,step,step-eager}/{closed-N,saturation}.json (vocoder-loadgen)
with the /metrics scrapes taken before and after each run (NAME.before.prom,
NAME.after.prom) and OUT_DIR/cpu/model.json (vocoder-bench model). Writes
OUT_DIR/report.json, OUT_DIR/report.md (one table per regime) and
OUT_DIR/{sim,cpu}.png; prints the tables. Figures from the sim regime are from
the SIMULATED accelerator and labelled so everywhere they appear.
"""
import argparse
import glob
import json
import os
import re
import sys

LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)')
LABEL = re.compile(r'(\w+)="([^"]*)"')


def parse_prom(path):
    """{(name, frozenset(labels)): value} of a Prometheus text exposition."""
    out = {}
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            m = LINE.match(line)
            if not m or line.startswith("#"):
                continue
            labels = frozenset(LABEL.findall(m.group(2) or ""))
            try:
                out[(m.group(1), labels)] = float(m.group(3))
            except ValueError:
                pass
    return out


def deltas(before, after):
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


def by_label(d, name, label):
    """Sum of a counter's deltas grouped by one label, zeros left out."""
    out = {}
    for (n, labels), v in d.items():
        if n != name or v <= 0:
            continue
        key = dict(labels).get(label, "")
        out[key] = out.get(key, 0) + v
    return {k: int(round(v)) for k, v in sorted(out.items())}


def hist_mean(d, name):
    s = sum(v for (n, _), v in d.items() if n == name + "_sum")
    c = sum(v for (n, _), v in d.items() if n == name + "_count")
    return s / c if c > 0 else None


def find_names(d, pattern):
    return sorted({n for (n, _) in d if re.search(pattern, n)})


def metric_figures(d):
    """What the server says about a run: decisions by reason, running rows."""
    f = {"batches_by_trigger": by_label(d, "vocoder_batches_total", "trigger")}
    for name in find_names(d, r"^vocoder_step_.*decisions_total$"):
        f["step_decisions_by_reason"] = by_label(d, name, "reason")
    for name in find_names(d, r"running_rows(_count)?$"):
        base = name[:-len("_count")] if name.endswith("_count") else name
        m = hist_mean(d, base)
        if m is not None:
            f["mean_running_rows"] = round(m, 2)
    m = hist_mean(d, "vocoder_batch_size")
    if m is not None:
        f["mean_batch_size"] = round(m, 2)
    m = hist_mean(d, "vocoder_batch_voice_groups")
    if m is not None:
        f["mean_voice_groups"] = round(m, 2)
    busy = sum(v for (n, _), v in d.items() if n == "vocoder_gpu_busy_seconds_total")
    f["device_busy_s"] = round(busy, 3)
    return f


def run_figures(path):
    level = json.load(open(path))["levels"][-1]
    stem = path[:-len(".json")]
    d = deltas(parse_prom(stem + ".before.prom"), parse_prom(stem + ".after.prom"))
    r = {
        "streams": level["concurrency"],
        "audio_s_per_s": round(level["audio_s_per_s"], 2),
        "ttfa_p50_ms": round(level["ttfa_ms"]["p50"], 1),
        "ttfa_p95_ms": round(level["ttfa_ms"]["p95"], 1),
        "chunk_p95_ms": round(level["chunk_latency_ms"]["p95"], 1),
        "chunk_mean_ms": round(level["chunk_latency_ms"]["mean"], 1),
        "utterances": level["utterances"],
        "stalled": level["stalled_utterances"],
        "errors": level["errors"],
        "stable": level.get("stable", False),
    }
    r.update(metric_figures(d))
    return r


MODES = ("batch", "step", "step-eager")  # step-eager: --join-amortization 0


def regime(out, name):
    res = {}
    for mode in MODES:
        d = os.path.join(out, name, mode)
        if not os.path.isdir(d):
            continue
        closed = []
        for p in glob.glob(os.path.join(d, "closed-*.json")):
            closed.append(run_figures(p))
        closed.sort(key=lambda r: r["streams"])
        sat = os.path.join(d, "saturation.json")
        res[mode] = {"closed": closed,
                     "saturation": run_figures(sat) if os.path.exists(sat) else None}
    return res


def model_best(out):
    p = os.path.join(out, "cpu", "model.json")
    if not os.path.exists(p):
        return None
    rows = json.load(open(p))["rows"]
    return max(r["audio_s_per_s"] for r in rows)


def goals(rep):
    g = {}
    sim = rep.get("sim", {})
    if "batch" in sim and "step" in sim:
        b = {r["streams"]: r for r in sim["batch"]["closed"]}
        s = {r["streams"]: r for r in sim["step"]["closed"]}
        if 128 in b and 128 in s:
            g["sim_128_ttfa_p95_ratio_batch_over_step"] = round(
                b[128]["ttfa_p95_ms"] / s[128]["ttfa_p95_ms"], 3)
            g["sim_128_throughput_ratio_step_over_batch"] = round(
                s[128]["audio_s_per_s"] / b[128]["audio_s_per_s"], 3)
        if 1 in b and 1 in s:
            g["sim_1_chunk_mean_ratio_step_over_batch"] = round(
                s[1]["chunk_mean_ms"] / b[1]["chunk_mean_ms"], 4)
            g["sim_1_ttfa_p50_ratio_step_over_batch"] = round(
                s[1]["ttfa_p50_ms"] / b[1]["ttfa_p50_ms"], 4)
        for mode in MODES:
            if mode in sim and sim[mode]["saturation"]:
                g[f"sim_saturation_audio_s_per_s_{mode}"] = sim[mode]["saturation"]["audio_s_per_s"]
    cpu = rep.get("cpu", {})
    best = rep.get("cpu_model_best_audio_s_per_s")
    for mode in MODES:
        if mode in cpu and cpu[mode]["saturation"] and best:
            g[f"cpu_batching_efficiency_{mode}"] = round(
                cpu[mode]["saturation"]["audio_s_per_s"] / best, 3)
    if "batch" in cpu and "step" in cpu:
        b = {r["streams"]: r for r in cpu["batch"]["closed"]}
        s = {r["streams"]: r for r in cpu["step"]["closed"]}
        if 1 in b and 1 in s:
            g["cpu_1_chunk_mean_ratio_step_over_batch"] = round(
                s[1]["chunk_mean_ms"] / b[1]["chunk_mean_ms"], 4)
    return g


def fmt_reasons(r):
    d = r.get("step_decisions_by_reason") or r.get("batches_by_trigger") or {}
    return ", ".join(f"{k} {v}" for k, v in d.items()) or "-"


def table(title, res):
    lines = [f"### {title}", "",
             "| mode | streams | audio s/s | first audio p50 / p95 ms | chunk p95 ms | stalled | "
             "mean rows (step) / batch | decisions (step: reason; batch: trigger) |",
             "|---|---|---|---|---|---|---|---|"]
    for mode in MODES:
        if mode not in res:
            continue
        runs = list(res[mode]["closed"])
        if res[mode]["saturation"]:
            runs.append(dict(res[mode]["saturation"], streams=f"{res[mode]['saturation']['streams']} fast"))
        for r in runs:
            rows = r.get("mean_running_rows", r.get("mean_batch_size", "-"))
            lines.append(
                f"| {mode} | {r['streams']} | {r['audio_s_per_s']:.2f} | {r['ttfa_p50_ms']:.0f} / "
                f"{r['ttfa_p95_ms']:.0f} | {r['chunk_p95_ms']:.0f} | {r['stalled']}/{r['utterances']} | "
                f"{rows} | {fmt_reasons(r)} |")
    return "\n".join(lines) + "\n"


def plot(out, name, res, title):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for mode, style in (("batch", "o-"), ("step", "s-"), ("step-eager", "^--")):
        if mode not in res:
            continue
        c = res[mode]["closed"]
        x = [r["streams"] for r in c]
        axes[0].plot(x, [r["ttfa_p95_ms"] for r in c], style, label=f"{mode} p95")
        axes[0].plot(x, [r["ttfa_p50_ms"] for r in c], style, alpha=0.5, label=f"{mode} p50")
        axes[1].plot(x, [r["chunk_p95_ms"] for r in c], style, label=mode)
        axes[2].plot(x, [r["audio_s_per_s"] for r in c], style, label=mode)
    for ax, yl in zip(axes, ("first audio (ms)", "chunk latency p95 (ms)", "audio s/s")):
        ax.set_xlabel("paced streams")
        ax.set_ylabel(yl)
        ax.set_xscale("log", base=2)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    path = os.path.join(out, f"{name}.png")
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--profile", default="h200-estimate")
    a = ap.parse_args(argv)
    rep = {}
    titles = {"sim": f"SIMULATED accelerator, profile {a.profile} (not a GPU measurement)",
              "cpu": "real tiny export, this CPU (2 cores)"}
    md = []
    for name in ("sim", "cpu"):
        res = regime(a.out, name)
        if res:
            rep[name] = res
            md.append(table(titles[name], res))
            plot(a.out, name, res, f"--scheduling step vs batch — {titles[name]}")
    best = model_best(a.out)
    if best:
        rep["cpu_model_best_audio_s_per_s"] = best
    rep["goals"] = goals(rep)
    rep["simulated"] = "sim" in rep
    rep["profile"] = a.profile
    with open(os.path.join(a.out, "report.json"), "w") as f:
        json.dump(rep, f, indent=2)
    text = "\n".join(md) + "\ngoals: " + json.dumps(rep["goals"]) + "\n"
    with open(os.path.join(a.out, "report.md"), "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
