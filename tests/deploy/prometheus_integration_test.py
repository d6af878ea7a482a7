#!/usr/bin/env python3
"""A real Prometheus (Debian's) scrapes a real vocoderd under load, with the
project's recording rules loaded; every PromQL expression of the Grafana
dashboard and every recording rule must parse and return data.

    prometheus_integration_test.py VOCODERD VOCODER_CLIENT REPO_ROOT MODEL_DIR
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

vocoderd, client, root, model = sys.argv[1:5]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


def main():
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        sys.exit("prometheus missing: run scripts/deps")
    work = tempfile.mkdtemp(prefix="vocoderd-prom-")
    procs = []
    try:
        out = open(os.path.join(work, "vocoderd.out"), "w+")
        procs.append(subprocess.Popen(
            [vocoderd, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
             "--model-dir", model], stdout=out, stderr=subprocess.DEVNULL))
        for _ in range(300):
            out.seek(0)
            m = re.search(r"serving on port (\d+), metrics on port (\d+)", out.read())
            if m:
                break
            time.sleep(0.1)
        else:
            sys.exit("vocoderd did not start")
        port, mport = m.group(1), m.group(2)
        rules = os.path.join(root, "deploy", "prometheus", "rules.yml")
        with open(os.path.join(work, "prometheus.yml"), "w") as f:
            f.write(f"""global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: ["{rules}"]
scrape_configs:
  - job_name: vocoderd
    static_configs: [{{targets: ["127.0.0.1:{mport}"]}}]
""")
        pport = free_port()
        procs.append(subprocess.Popen(
            [prometheus, f"--config.file={work}/prometheus.yml",
             f"--storage.tsdb.path={work}/data", f"--web.listen-address=127.0.0.1:{pport}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        api = f"http://127.0.0.1:{pport}/api/v1"
        for _ in range(100):
            try:
                get(f"{api}/status/buildinfo")
                break
            except OSError:
                time.sleep(0.2)
        # Load over several scrapes: streams, and one request that fails.
        for round_ in range(3):
            subprocess.run([client, "--target", f"127.0.0.1:{port}", "--tokens", "60",
                            "--streams", "6"], check=True, stdout=subprocess.DEVNULL)
            subprocess.run([client, "--target", f"127.0.0.1:{port}", "--voice", "nobody",
                            "--tokens", "10"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            time.sleep(2)
        time.sleep(3)

        dash = json.load(open(os.path.join(root, "deploy", "grafana",
                                           "vocoderd-dashboard.json")))
        exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
        for group in __import__("yaml").safe_load(open(rules))["groups"]:
            exprs += [r["expr"] for r in group["rules"] if "record" in r]
        failed = 0
        for expr in exprs:
            q = expr.replace("$__rate_interval", "1m").replace("$instance", ".*")
            r = get(f"{api}/query?" + urllib.parse.urlencode({"query": q}))
            ok = r["status"] == "success" and len(r["data"]["result"]) > 0
            print(("ok     " if ok else "NO DATA"), q[:110])
            failed += not ok
        print(f"{len(exprs) - failed}/{len(exprs)} expressions returned data")
        sys.exit(1 if failed else 0)
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


main()
