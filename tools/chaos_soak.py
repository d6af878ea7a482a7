#!/usr/bin/env python3
"""Chaos and soak benchmark for vocoderd (a benchmark, not a test).

Starts vocoderd on a model directory (the tiny export by default), drives it
for --duration-s with mixed hostile and ordinary clients on --workers
threads, then sends SIGTERM and checks:
  - every call accounted for exactly once: the client's outcomes by (rpc,
    code) against vocoder_requests_total by (rpc, code);
  - bounded memory: RSS sampled every 5 s (with its anonymous and file-backed
    parts and the thread count); the growth over the second half of the
    client phase must stay below --rss-growth-bound (the pass criterion), and
    RSS at 5 minutes against the end is reported beside it (--rss-margin);
  - where gdb can attach (--malloc-probe, on by default if gdb is on PATH):
    glibc's malloc_stats() (bytes the allocator holds from the system against
    bytes in use, per arena) at the midpoint and at the end, then
    malloc_trim(0) and RSS after it, which tells allocator retention from a
    leak;
  - vocoder_queue_depth and vocoder_inflight_streams back to 0 once the
    clients stopped;
  - exit code 0 after SIGTERM.
Client kinds: readers, non-readers (read only after a pause), slow readers,
random cancels, 1 ms deadlines, bad inputs, idle streams (config then
nothing), unary calls (in and over the message limit), voice registrations
and deletions. Prints a report and writes it as JSON (--out).
"""
import argparse
import collections
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc  # noqa: E402
from vocoder_client import load_stubs  # noqa: E402

pb, pb_grpc = load_stubs()

KINDS = {  # kind: weight
    "reader": 30, "non_reader": 8, "slow_reader": 8, "cancel": 10, "deadline_1ms": 8,
    "bad_input": 10, "idle": 2, "unary": 10, "unary_oversize": 3, "voice": 6,
}


def proc_status(pid):
    """VmRSS, RssAnon, RssFile (KiB) and Threads from /proc/PID/status."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "Threads"):
                out[key] = int(value.split()[0])
    return out


def rss_kb(pid):
    return proc_status(pid).get("VmRSS", -1)


def gdb_call(pid, exprs, timeout=120):
    """Calls libc functions in the process with gdb (only libc's symbols are
    loaded, so the pause is short). Returns gdb's output, or None."""
    cmd = ["gdb", "-batch", "-nx", "-p", str(pid), "-iex", "set auto-solib-add off",
           "-ex", "sharedlibrary libc.so"]
    for e in exprs:
        cmd += ["-ex", f"call {e}"]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None


def parse_malloc_stats(text):
    """glibc malloc_stats() output: per arena and total system/in-use bytes."""
    arenas, total = [], {}
    for m in re.finditer(r"Arena (\d+):\nsystem bytes\s+=\s+(\d+)\nin use bytes\s+=\s+(\d+)", text):
        arenas.append({"arena": int(m.group(1)), "system": int(m.group(2)),
                       "in_use": int(m.group(3))})
    m = re.search(r"Total \(incl. mmap\):\nsystem bytes\s+=\s+(\d+)\nin use bytes\s+=\s+(\d+)", text)
    if m:
        total = {"system": int(m.group(1)), "in_use": int(m.group(2))}
    m = re.search(r"max mmap regions\s+=\s+(\d+)\nmax mmap bytes\s+=\s+(\d+)", text)
    if m:
        total["max_mmap_bytes"] = int(m.group(2))
    return {"arenas": len(arenas), "per_arena": arenas, "total": total}


def scrape(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    requests, gauges = collections.Counter(), {}
    for line in text.splitlines():
        m = re.match(r'vocoder_requests_total\{(.*)\} ([0-9.e+]+)', line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            requests[(labels["rpc"], labels["code"])] += int(float(m.group(2)))
            continue
        m = re.match(r'(vocoder_\w+)(\{[^}]*\})? ([0-9.e+-]+)$', line)
        if m:
            gauges[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return requests, gauges


class Soak:
    def __init__(self, args, port):
        self.args = args
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = pb_grpc.VocoderStub(self.channel)
        self.lock = threading.Lock()
        self.outcomes = collections.Counter()   # (rpc, code) -> calls
        self.kinds = collections.Counter()
        self.audio_errors = []                  # OK streams with the wrong sample count
        self.stop = threading.Event()

    def record(self, rpc, code, kind):
        with self.lock:
            self.outcomes[(rpc, code)] += 1
            self.kinds[(kind, code)] += 1

    @staticmethod
    def chunks(tokens, chunk=25, config=True, enc=None):
        if config:
            yield pb.StreamVocodeRequest(config=pb.StreamConfig(
                voice_id="alice", encoding=enc or pb.PCM_S16LE))
        for seq, start in enumerate(range(0, len(tokens), chunk)):
            end = min(len(tokens), start + chunk)
            yield pb.StreamVocodeRequest(chunk=pb.TokenChunk(
                tokens=tokens[start:end], sequence_number=seq, is_final=end == len(tokens)))

    def stream(self, kind, rng):
        n = rng.randint(40, 250)
        tokens = [rng.randrange(6561) for _ in range(n)]
        timeout = None
        reqs = self.chunks(tokens)
        held = threading.Event()
        if kind == "cancel":
            # The final chunk is held back until the client has cancelled, so
            # the server cannot have finished the stream OK before the cancel
            # (otherwise a status already on its way races the cancel, and
            # the client's CANCELLED is the server's OK: no count can agree).
            def held_reqs():
                for r in self.chunks(tokens):
                    if r.HasField("chunk") and r.chunk.is_final:
                        held.wait(60)
                        return
                    yield r
            reqs = held_reqs()
        elif kind == "deadline_1ms":
            timeout = 0.001
        elif kind == "bad_input":
            bad = rng.choice(["token", "gap", "no_config", "twice", "voice"])
            if bad == "token":
                reqs = iter([next(self.chunks([1])), pb.StreamVocodeRequest(
                    chunk=pb.TokenChunk(tokens=[1, 7000], sequence_number=0, is_final=True))])
            elif bad == "gap":
                reqs = iter([next(self.chunks([1])), pb.StreamVocodeRequest(
                    chunk=pb.TokenChunk(tokens=[1, 2, 3, 4, 5], sequence_number=3))])
            elif bad == "no_config":
                reqs = self.chunks(tokens, config=False)
            elif bad == "twice":
                reqs = iter([next(self.chunks([1])), next(self.chunks([1]))])
            else:
                reqs = iter([pb.StreamVocodeRequest(config=pb.StreamConfig(
                    voice_id="nobody", encoding=pb.PCM_S16LE))])
        elif kind == "idle":
            def idle_reqs():
                yield next(self.chunks([1]))
                self.stop.wait(self.args.idle_timeout_s + 3)  # sends nothing more
            reqs = idle_reqs()
        call = self.stub.StreamVocode(reqs, timeout=timeout)
        samples, got = 0, 0
        timer = None
        if kind == "cancel":
            # Cancel after 0-3 audio responses, or after at most 2 s (well
            # inside the server's 5 s idle timeout: on a slow server the
            # audio may not come before it, and the stream would end as idle).
            want = rng.randint(0, 3)
            timer = threading.Timer(rng.uniform(0.05, 2.0), call.cancel)
            timer.start()
        try:
            if kind == "non_reader":
                time.sleep(rng.uniform(1, 4))
            for resp in call:
                if resp.HasField("audio"):
                    samples += resp.audio.num_samples
                    got += 1
                if kind == "slow_reader":
                    time.sleep(0.05)
                if kind == "cancel" and got >= want:
                    call.cancel()
                    break
            code = call.code()
        except grpc.RpcError as e:
            code = e.code()
        if timer is not None:
            timer.cancel()
        held.set()
        name = code.name if code is not None else "UNKNOWN"
        if name == "OK" and samples != n * 960:
            with self.lock:
                self.audio_errors.append((kind, n, samples))
        self.record("StreamVocode", name, kind)

    def unary(self, kind, rng):
        n = 1200 if kind == "unary_oversize" else rng.randint(20, 120)
        enc = pb.PCM_F32LE if kind == "unary_oversize" else pb.PCM_S16LE
        req = pb.VocodeRequest(config=pb.StreamConfig(voice_id="alice", encoding=enc),
                               tokens=[rng.randrange(6561) for _ in range(n)])
        try:
            resp = self.stub.Vocode(req, timeout=60)
            name = "OK"
            if len(resp.audio) != n * 960 * 2:
                with self.lock:
                    self.audio_errors.append((kind, n, len(resp.audio)))
        except grpc.RpcError as e:
            name = e.code().name
        self.record("Vocode", name, kind)

    def voice(self, rng):
        vid = f"soak-{rng.randrange(1 << 30)}"
        c = pb.VoiceConditioning(prompt_tokens=[rng.randrange(6561) for _ in range(10)],
                                 prompt_frames=20,
                                 prompt_mel=[rng.uniform(-6, 0) for _ in range(20 * 80)],
                                 embedding=[rng.uniform(-0.1, 0.1) for _ in range(192)])
        for rpc, fn in (("RegisterVoice", lambda: self.stub.RegisterVoice(
                            pb.RegisterVoiceRequest(voice_id=vid, display_name="soak",
                                                    conditioning=c), timeout=30)),
                        ("DeleteVoice", lambda: self.stub.DeleteVoice(
                            pb.DeleteVoiceRequest(voice_id=vid), timeout=30))):
            try:
                fn()
                name = "OK"
            except grpc.RpcError as e:
                name = e.code().name
            self.record(rpc, name, "voice")

    def worker(self, seed, until):
        rng = random.Random(seed)
        kinds, weights = zip(*KINDS.items())
        while time.monotonic() < until and not self.stop.is_set():
            kind = rng.choices(kinds, weights)[0]
            if kind in ("unary", "unary_oversize"):
                self.unary(kind, rng)
            elif kind == "voice":
                self.voice(rng)
            else:
                self.stream(kind, rng)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocoderd", required=True)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--duration-s", type=float, default=1200)
    ap.add_argument("--workers", type=int, default=12)
    ap.add_argument("--idle-timeout-s", type=float, default=5)
    ap.add_argument("--rss-at-s", type=float, default=300)
    ap.add_argument("--rss-margin", type=float, default=0.15,
                    help="reported: RSS at the end against RSS at --rss-at-s")
    ap.add_argument("--rss-growth-bound", type=float, default=0.10,
                    help="pass criterion: RSS at the end of the client phase may exceed RSS "
                         "at its midpoint by at most this share")
    ap.add_argument("--malloc-probe", choices=["auto", "on", "off"], default="auto",
                    help="malloc_stats() and malloc_trim(0) through gdb (auto: if gdb exists)")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="extra environment for vocoderd (e.g. MALLOC_ARENA_MAX=2)")
    ap.add_argument("--out", default="out/chaos_soak.json")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    import shutil
    probe = args.malloc_probe == "on" or (args.malloc_probe == "auto" and shutil.which("gdb"))
    env = dict(os.environ)
    for kv in args.env:
        k, _, v = kv.partition("=")
        env[k] = v
    stderr_path = os.path.splitext(os.path.abspath(args.out))[0] + ".vocoderd.log"
    os.makedirs(os.path.dirname(stderr_path), exist_ok=True)
    stderr_file = open(stderr_path, "w")
    proc = subprocess.Popen(
        [args.vocoderd, "--listen=127.0.0.1:0", "--metrics-listen=127.0.0.1:0",
         f"--model-dir={args.model_dir}", "--drain-grace-s=30", "--max-streams=64",
         f"--stream-idle-timeout-s={args.idle_timeout_s}"],
        stdout=subprocess.PIPE, stderr=stderr_file, text=True, env=env)
    line = proc.stdout.readline()
    m = re.search(r"serving on port (\d+), metrics on port (\d+)", line)
    if not m:
        proc.kill()
        sys.exit(f"vocoderd did not start: {line!r}")
    port, metrics_port = int(m.group(1)), int(m.group(2))
    t0 = time.monotonic()
    soak = Soak(args, port)
    until = t0 + args.duration_s
    threads = [threading.Thread(target=soak.worker, args=(args.seed * 1000 + i, until))
               for i in range(args.workers)]
    for t in threads:
        t.start()
    rss = {"start_kb": rss_kb(proc.pid)}
    samples = []    # (elapsed s, VmRSS KiB), as before
    detail = []     # (elapsed s, VmRSS, RssAnon, RssFile KiB, threads, calls so far)
    malloc = {}

    def malloc_stats(label):
        if not probe:
            return
        stderr_file.flush()
        before = os.path.getsize(stderr_path)
        out = gdb_call(proc.pid, ["(void)malloc_stats()"])
        time.sleep(0.5)
        with open(stderr_path) as f:
            f.seek(before)
            text = f.read()
        malloc[label] = dict(parse_malloc_stats(text), elapsed_s=round(time.monotonic() - t0),
                             rss_kb=rss_kb(proc.pid), gdb_ok=out is not None)

    mid_done = False
    while any(t.is_alive() for t in threads):
        time.sleep(5)
        elapsed = time.monotonic() - t0
        st = proc_status(proc.pid)
        with soak.lock:
            calls = sum(soak.outcomes.values())
        samples.append((round(elapsed), st.get("VmRSS", -1)))
        detail.append((round(elapsed), st.get("VmRSS", -1), st.get("RssAnon", -1),
                       st.get("RssFile", -1), st.get("Threads", -1), calls))
        if "at_5min_kb" not in rss and elapsed >= args.rss_at_s:
            rss["at_5min_kb"] = st.get("VmRSS", -1)
        if not mid_done and elapsed >= args.duration_s / 2:
            mid_done = True
            rss["mid_kb"] = st.get("VmRSS", -1)
            rss["mid_s"] = round(elapsed)
            malloc_stats("mid")
    for t in threads:
        t.join()
    rss["end_kb"] = rss_kb(proc.pid)
    rss["end_s"] = round(time.monotonic() - t0)
    # After the clients stopped: what the allocator holds, then what a trim
    # gives back (freed memory retained by malloc comes back; a leak does not).
    malloc_stats("end")
    if probe:
        gdb_call(proc.pid, ["(int)malloc_trim(0)"])
        time.sleep(1)
        rss["after_trim_kb"] = rss_kb(proc.pid)
        malloc_stats("after_trim")
    server_requests, gauges = scrape(metrics_port)
    proc.send_signal(signal.SIGTERM)
    try:
        exit_code = proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        exit_code = "killed after 120 s"

    rpcs = sorted({k for k in list(soak.outcomes) + list(server_requests)})
    accounting = []
    for key in rpcs:
        accounting.append({"rpc": key[0], "code": key[1], "client": soak.outcomes.get(key, 0),
                           "server": server_requests.get(key, 0)})
    # A 1 ms-deadline call can end at the client (its own deadline timer)
    # before the server ever saw the call: the server cannot count a call it
    # never received. Such calls are the only allowed difference: at most one
    # per 1 ms-deadline call that ended DEADLINE_EXCEEDED, and only in that
    # cell, reported as "unseen".
    unseen_allowed = soak.kinds.get(("deadline_1ms", "DEADLINE_EXCEEDED"), 0)
    unseen = 0
    mismatches = []
    for a in accounting:
        diff = a["client"] - a["server"]
        if (a["rpc"], a["code"]) == ("StreamVocode", "DEADLINE_EXCEEDED") and 0 < diff <= unseen_allowed:
            unseen = diff
            a["unseen_by_server"] = diff
        elif diff:
            mismatches.append(a)
    queue_depth = gauges.get("vocoder_queue_depth", -1)
    streams = gauges.get("vocoder_inflight_streams", -1)
    flat = ("at_5min_kb" in rss and rss["end_kb"] <= rss["at_5min_kb"] * (1 + args.rss_margin))
    growth = (rss["end_kb"] / rss["mid_kb"] - 1) if rss.get("mid_kb", 0) > 0 else None
    bounded = growth is not None and growth <= args.rss_growth_bound
    report = {
        "duration_s": round(time.monotonic() - t0, 1), "workers": args.workers,
        "calls": sum(soak.outcomes.values()),
        "kinds": {f"{k}:{c}": n for (k, c), n in sorted(soak.kinds.items())},
        "accounting": accounting, "mismatches": mismatches,
        "unseen_deadline_1ms_calls": unseen, "deadline_1ms_calls": unseen_allowed,
        "audio_errors": soak.audio_errors[:20], "audio_error_count": len(soak.audio_errors),
        "rss": rss, "rss_flat_within_margin": flat, "rss_margin": args.rss_margin,
        "rss_samples": samples,
        "rss_second_half_growth": None if growth is None else round(growth, 4),
        "rss_growth_bound": args.rss_growth_bound, "rss_bounded": bounded,
        "rss_detail_columns": ["elapsed_s", "vm_rss_kb", "rss_anon_kb", "rss_file_kb",
                               "threads", "calls"],
        "rss_detail": detail, "malloc": malloc, "vocoderd_env": args.env,
        "queue_depth_after": queue_depth, "inflight_streams_after": streams,
        "audio_seconds_total": gauges.get("vocoder_audio_seconds_total"),
        "audio_undelivered_seconds_total": gauges.get("vocoder_audio_undelivered_seconds_total"),
        "exit_code": exit_code,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"chaos soak: {report['calls']} calls in {report['duration_s']} s, {args.workers} workers")
    print(f"{'rpc':14} {'code':20} {'client':>7} {'server':>7}")
    for a in accounting:
        print(f"{a['rpc']:14} {a['code']:20} {a['client']:7} {a['server']:7}"
              + ("" if a["client"] == a["server"] else
                 f"  ({a['unseen_by_server']} 1 ms-deadline calls ended at the client before the "
                 "server saw them)" if "unseen_by_server" in a else "  <-- mismatch"))
    print(f"RSS: start {rss['start_kb'] / 1024:.1f} MiB, at {args.rss_at_s:.0f} s "
          f"{rss.get('at_5min_kb', -1) / 1024:.1f} MiB, end {rss['end_kb'] / 1024:.1f} MiB "
          f"(within {args.rss_margin:.0%}: {flat})")
    if growth is not None:
        print(f"RSS second half: {rss['mid_kb'] / 1024:.1f} MiB at {rss['mid_s']} s -> "
              f"{rss['end_kb'] / 1024:.1f} MiB at {rss['end_s']} s ({growth:+.1%}; "
              f"bound {args.rss_growth_bound:.0%}: {bounded})")
    for label, m in malloc.items():
        t = m.get("total", {})
        if t:
            print(f"malloc {label} ({m['elapsed_s']} s): {m['arenas']} arenas, "
                  f"{t['system'] / 2**20:.1f} MiB from the system, "
                  f"{t['in_use'] / 2**20:.1f} MiB in use; RSS {m['rss_kb'] / 1024:.1f} MiB")
    if "after_trim_kb" in rss:
        print(f"RSS after malloc_trim(0): {rss['after_trim_kb'] / 1024:.1f} MiB")
    print(f"after the clients stopped: queue depth {queue_depth}, in-flight streams {streams}")
    print(f"audio delivered {report['audio_seconds_total']} s, computed but undelivered "
          f"{report['audio_undelivered_seconds_total']} s; wrong sample counts: "
          f"{len(soak.audio_errors)}")
    print(f"exit code after SIGTERM: {exit_code}")
    ok = (not mismatches and bounded and queue_depth == 0 and streams == 0 and exit_code == 0
          and not soak.audio_errors)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
