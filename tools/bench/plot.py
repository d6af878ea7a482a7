#!/usr/bin/env python3
"""PNG plots of a vocoder-loadgen sweep (matplotlib, no display needed):

- latency.png: time to first audio and per-chunk latency, p50/p95/p99,
  against concurrency (log-log);
- throughput.png: audio seconds per second against concurrency, with the
  model's best batched throughput (vocoder-bench model JSON) as a line;
- batch_sizes.png: the server's batch-size distribution per level (from
  /metrics), as the share of batches in each size bucket.

    plot.py LOADGEN_JSON OUT_DIR [--model MODEL_JSON] [--title TEXT]
"""
import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def bucket_key(label):
    """Sort "1", "2", "3-4", ">32" by their lower bound."""
    s = label.lstrip(">")
    return float(s.split("-")[0]) + (0.5 if label.startswith(">") else 0)


def plot(doc, out_dir, model=None, title=""):
    levels = [l for l in doc["levels"] if l["mode"] == "closed"]
    if not levels:
        raise SystemExit("plot.py: no closed-loop level to plot")
    x = [l["concurrency"] for l in levels]
    os.makedirs(out_dir, exist_ok=True)
    written = []
    suffix = f" — {title}" if title else ""

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, name, color in (("ttfa_ms", "first audio", "tab:blue"),
                             ("chunk_latency_ms", "chunk", "tab:orange")):
        for q, style in (("p50", "-"), ("p95", "--"), ("p99", ":")):
            ax.plot(x, [l[key][q] for l in levels], style, color=color, marker="o",
                    markersize=3, label=f"{name} {q}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("concurrent streams")
    ax.set_ylabel("latency (ms)")
    ax.set_title("Latency against concurrency" + suffix)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    written.append(os.path.join(out_dir, "latency.png"))
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(x, [l["audio_s_per_s"] for l in levels], "-o", label="server (vocoder-loadgen)")
    ax.plot(x, x, ":", color="gray", label="real-time demand (1 s/s per stream)")
    if model is not None:
        best = max(model["rows"], key=lambda r: r["audio_s_per_s"])
        ax.axhline(best["audio_s_per_s"], color="tab:red", linestyle="--",
                   label=f"model best (batch {best['batch_size']}, chunk {best['chunk_tokens']})")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent streams")
    ax.set_ylabel("audio seconds per second")
    ax.set_title("Throughput against concurrency" + suffix)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    written.append(os.path.join(out_dir, "throughput.png"))
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    with_server = [l for l in levels if l.get("server") and l["server"]["batches"] > 0]
    if with_server:
        buckets = sorted({b for l in with_server for b in l["server"]["batch_sizes"]},
                         key=bucket_key)
        fig, ax = plt.subplots(figsize=(7, 4.5))
        width = 0.8 / len(with_server)
        for i, l in enumerate(with_server):
            total = l["server"]["batches"]
            shares = [l["server"]["batch_sizes"].get(b, 0) / total for b in buckets]
            ax.bar([j + i * width for j in range(len(buckets))], shares, width,
                   label=f"{l['concurrency']} streams")
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(buckets))])
        ax.set_xticklabels(buckets)
        ax.set_xlabel("batch size")
        ax.set_ylabel("share of batches")
        ax.set_title("Batch sizes per level (server /metrics)" + suffix)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        written.append(os.path.join(out_dir, "batch_sizes.png"))
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("loadgen")
    ap.add_argument("out_dir")
    ap.add_argument("--model", help="vocoder-bench model JSON (adds the model's best line)")
    ap.add_argument("--title", default="")
    a = ap.parse_args()
    with open(a.loadgen) as f:
        doc = json.load(f)
    model = None
    if a.model:
        with open(a.model) as f:
            model = json.load(f)
    for path in plot(doc, a.out_dir, model, a.title):
        print("wrote", path)


if __name__ == "__main__":
    main()
