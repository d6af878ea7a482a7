#!/usr/bin/env python3
"""vocoder-loadgen against a real vocoderd (tiny model, CPU): a closed-loop
sweep of two levels, an open-loop level, and a level whose streams all fail
(unknown voice). Checks that what it reports is consistent with itself and
with the server's own /metrics, and that errors are counted by gRPC code.

    loadgen_e2e_test.py VOCODERD VOCODER_LOADGEN MODEL_DIR
"""
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time

vocoderd, loadgen, model = sys.argv[1:4]
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def run_loadgen(port, mport, work, name, *args):
    out_json = os.path.join(work, name + ".json")
    out_csv = os.path.join(work, name + ".csv")
    cmd = [loadgen, "--target", f"127.0.0.1:{port}",
           "--metrics-url", f"http://127.0.0.1:{mport}/metrics",
           "--utterance-tokens", "50", "--chunk-tokens", "25", "--warmup-s", "1",
           "--json", out_json, "--csv", out_csv, "--label", "e2e", *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    print(p.stdout, p.stderr, sep="")
    check(p.returncode == 0, f"{name}: exit code {p.returncode}")
    with open(out_json) as f:
        doc = json.load(f)
    with open(out_csv) as f:
        rows = list(csv.DictReader(f))
    return doc, rows


def main():
    work = tempfile.mkdtemp(prefix="vocoderd-loadgen-")
    out = open(os.path.join(work, "vocoderd.out"), "w+")
    server = subprocess.Popen(
        [vocoderd, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
         "--model-dir", model, "--device", "cpu"], stdout=out, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            out.seek(0)
            m = re.search(r"serving on port (\d+), metrics on port (\d+)", out.read())
            if m:
                break
            if server.poll() is not None:
                sys.exit("vocoderd exited")
            time.sleep(0.1)
        else:
            sys.exit("vocoderd did not start")
        port, mport = m.group(1), m.group(2)

        # Bad options: a clear message and a non-zero exit, before any load.
        p = subprocess.run([loadgen, "--target", f"127.0.0.1:{port}", "--concurrency", "0"],
                           capture_output=True, text=True)
        check(p.returncode != 0 and "concurrency must be positive" in p.stderr,
              f"--concurrency 0 rejected clearly (rc {p.returncode}, {p.stderr.strip()!r})")

        # Closed loop, paced faster than real time, two levels.
        doc, rows = run_loadgen(port, mport, work, "closed", "--concurrency", "1", "2",
                                "--tokens-per-second", "100", "--window-s", "2",
                                "--stable-windows", "2", "--max-windows", "3")
        levels = doc["levels"]
        check(doc["tool"] == "vocoder-loadgen" and doc["label"] == "e2e", "document header")
        check([l["concurrency"] for l in levels] == [1, 2], "one entry per level")
        check(len(rows) == 2 and rows[1]["concurrency"] == "2", "one CSV row per level")
        for l in levels:
            c = l["concurrency"]
            check(l["mode"] == "closed", f"c{c}: mode")
            check(l["errors"] == 0, f"c{c}: no errors ({l['errors_by_code']})")
            check(l["utterances"] > 0 and l["chunk_latency_ms"]["n"] > 0,
                  f"c{c}: measured utterances and chunks")
            check(0 < l["ttfa_ms"]["p50"] <= l["ttfa_ms"]["p95"] <= l["ttfa_ms"]["p99"],
                  f"c{c}: TTFA percentiles ordered")
            check(l["audio_s_per_s"] > 0 and l["rtf"]["p50"] > 0, f"c{c}: throughput and RTF")
            check(2 <= len(l["windows"]) <= 3, f"c{c}: windows searched")
            # The client's per-chunk ServerTiming and the server's /metrics
            # describe the same batches.
            srv = l["server"]
            check(srv is not None, f"c{c}: server figures from /metrics ({l.get('server_error')})")
            if srv:
                check(srv["batches"] > 0, f"c{c}: batches ran")
                check(abs(sum(srv["batch_sizes"].values()) - srv["batches"]) < 1e-6,
                      f"c{c}: batch-size histogram adds up to the batch count")
                check(abs(sum(srv["triggers"].values()) - srv["batches"]) < 1e-6,
                      f"c{c}: trigger counts add up to the batch count")
                check(1 <= srv["mean_batch_size"] <= c, f"c{c}: mean batch within 1..{c}")
            sizes = {int(k) for k in l["chunks_by_batch_size"]}
            check(sizes and max(sizes) <= c, f"c{c}: no chunk ran in a batch larger than {c}")
            check(l["server_compute_ms"]["p50"] > 0, f"c{c}: server compute time reported")

        # Open loop: Poisson arrivals, fixed duration.
        doc, rows = run_loadgen(port, mport, work, "open", "--arrival-rates", "2",
                                "--fast", "--duration-s", "4")
        l = doc["levels"][0]
        check(l["mode"] == "open" and l["arrival_rate"] == 2, "open loop level")
        check(l["utterances_started"] >= 2 and l["utterances"] > 0,
              f"open loop: utterances arrived and ended ({l['utterances_started']}, "
              f"{l['utterances']})")
        check(abs(l["measure_s"] - 4) < 1e-6, "open loop: fixed 4 s measurement")

        # Every stream fails: counted by code, not as throughput.
        doc, _ = run_loadgen(port, mport, work, "errors", "--voices", "nobody",
                             "--concurrency", "2", "--utterances", "4", "--fast")
        l = doc["levels"][0]
        check(l["errors_by_code"].get("NOT_FOUND", 0) >= 4,
              f"unknown voice counted as NOT_FOUND ({l['errors_by_code']})")
        check(l["utterances"] == 0 and l["audio_s_per_s"] == 0, "failed streams carry no audio")
        srv = l["server"] or {}
        check(srv.get("rejections", {}).get("voice_not_found", 0) >= 4,
              f"server counted the rejections ({srv.get('rejections')})")

        check(server.poll() is None, "vocoderd still serving after the load")
    finally:
        server.terminate()
        server.wait(timeout=60)
    if failures:
        sys.exit(f"{len(failures)} check(s) failed")
    print("loadgen e2e: all checks passed")


if __name__ == "__main__":
    main()
