#!/usr/bin/env python3
"""Three vocoderd replicas on this machine over one voice repository (tiny
model, CPU, one torch thread each), as three pods over a shared volume:

1. a voice registered on A streams on B and C at once (long before the sync
   interval: a replica revalidates against the repository on use);
2. deleted on B, it is NOT_FOUND on A and C;
3. one id registered concurrently on A and B: exactly one success, the other
   ALREADY_EXISTS, every replica serves the winner's content;
4. A killed with SIGKILL in the middle of registrations: B, C and a restarted
   A serve every voice whose registration succeeded, and no replica loads a
   torn file (no load failures, every published file is served);
5. vocoder-loadgen over all three (one comma-separated --target) spreads
   streams: every replica's /metrics shows its share.

    fleet_test.py VOCODERD VOCODER_LOADGEN MODEL_DIR ROOT
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

vocoderd, loadgen, model, root = sys.argv[1:5]
sys.path.insert(0, os.path.join(root, "tools"))
import grpc  # noqa: E402
from vocoder_client import load_stubs  # noqa: E402

pb, pb_grpc = load_stubs()
SYNC_MS = 2000
failures = []


def check(cond, what):
    print(("ok:   " if cond else "FAIL: ") + what, flush=True)
    if not cond:
        failures.append(what)


class Replica:
    def __init__(self, name, repo, work):
        self.name, self.repo, self.work = name, repo, work
        self.start()

    def start(self):
        self.out = open(os.path.join(self.work, f"{self.name}.out"), "w+")
        self.err = open(os.path.join(self.work, f"{self.name}.err"), "w+")
        self.proc = subprocess.Popen(
            [vocoderd, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
             "--model-dir", model, "--device", "cpu", "--voices-dir", self.repo,
             "--voices-sync-interval-ms", str(SYNC_MS), "--intra-op-threads", "1",
             "--drain-grace-s", "5"],
            stdout=self.out, stderr=self.err)

    def wait_ready(self):
        for _ in range(1200):
            self.out.seek(0)
            m = re.search(r"serving on port (\d+), metrics on port (\d+)", self.out.read())
            if m:
                self.port, self.mport = int(m.group(1)), int(m.group(2))
                self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
                self.stub = pb_grpc.VocoderStub(self.channel)
                return
            if self.proc.poll() is not None:
                self.err.seek(0)
                sys.exit(f"{self.name} exited: {self.err.read()}")
            time.sleep(0.1)
        sys.exit(f"{self.name} did not start")

    def metrics(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.mport}/metrics", timeout=10) as r:
            return r.read().decode()

    def counter(self, name, **labels):
        total = 0.0
        for line in self.metrics().splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def conditioning(seed):
    c = pb.VoiceConditioning()
    c.prompt_tokens.extend((i * 11 + seed) % 6561 for i in range(10))
    c.prompt_frames = 20
    c.prompt_mel.extend(-5.0 + 0.001 * ((i + seed) % 97) for i in range(20 * 80))
    c.embedding.extend(0.01 * ((i + seed) % 13) for i in range(192))
    return c


def register(r, vid, seed=0, timeout=20):
    req = pb.RegisterVoiceRequest(voice_id=vid, display_name=vid, conditioning=conditioning(seed))
    try:
        return r.stub.RegisterVoice(req, timeout=timeout), grpc.StatusCode.OK
    except grpc.RpcError as e:
        return None, e.code()


def get(r, vid):
    try:
        return r.stub.GetVoice(pb.GetVoiceRequest(voice_id=vid), timeout=10), grpc.StatusCode.OK
    except grpc.RpcError as e:
        return None, e.code()


def stream(r, vid, tokens=10):
    """One short utterance; returns (status code, samples)."""
    def reqs():
        yield pb.StreamVocodeRequest(config=pb.StreamConfig(voice_id=vid, encoding=pb.PCM_S16LE))
        yield pb.StreamVocodeRequest(chunk=pb.TokenChunk(
            tokens=[(i * 7) % 6561 for i in range(tokens)], sequence_number=0, is_final=True))
    samples = 0
    try:
        for resp in r.stub.StreamVocode(reqs(), timeout=60):
            if resp.HasField("audio"):
                samples += resp.audio.num_samples
        return grpc.StatusCode.OK, samples
    except grpc.RpcError as e:
        return e.code(), samples


def main():
    t0 = time.time()
    work = tempfile.mkdtemp(prefix="vocoderd-fleet-")
    repo = os.path.join(work, "voices")
    os.mkdir(repo)
    for f in ("alice.pt", "bob.pt"):
        shutil.copy(os.path.join(model, "voices", f), repo)
    replicas = [Replica(n, repo, work) for n in "ABC"]
    a, b, c = replicas
    try:
        for r in replicas:
            r.wait_ready()
        print(f"three replicas ready in {time.time() - t0:.1f} s", flush=True)

        # 1. Register on A, stream on B and C at once.
        _, code = register(a, "carol", seed=1)
        t_reg = time.time()
        check(code == grpc.StatusCode.OK, f"register carol on A ({code})")
        for r in (b, c):
            t_open = time.time() - t_reg
            code, samples = stream(r, "carol")
            check(code == grpc.StatusCode.OK and samples == 10 * 960,
                  f"carol streams on {r.name}, opened {t_open * 1000:.0f} ms after registration "
                  f"(sync interval {SYNC_MS} ms): {code}, {samples} samples")
        check(time.time() - t_reg < 60, "within bounds")

        # 2. Delete on B: NOT_FOUND on A and C (and streams fail there).
        try:
            b.stub.DeleteVoice(pb.DeleteVoiceRequest(voice_id="carol"), timeout=10)
            check(True, "delete carol on B")
        except grpc.RpcError as e:
            check(False, f"delete carol on B: {e.code()}")
        for r in (a, c):
            check(get(r, "carol")[1] == grpc.StatusCode.NOT_FOUND, f"carol NOT_FOUND on {r.name}")
            check(stream(r, "carol")[0] == grpc.StatusCode.NOT_FOUND,
                  f"a stream for carol is NOT_FOUND on {r.name}")

        # 3. The same id on A and B at once: exactly one winner, every time.
        for i in range(5):
            vid = f"dup{i}"
            results = {}
            barrier = threading.Barrier(2)

            def reg(r, seed):
                barrier.wait()
                results[r.name] = register(r, vid, seed=seed)

            ts = [threading.Thread(target=reg, args=(r, s)) for r, s in ((a, 10 + i), (b, 20 + i))]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            codes = sorted(str(results[n][1]) for n in "AB")
            check(codes == sorted([str(grpc.StatusCode.OK), str(grpc.StatusCode.ALREADY_EXISTS)]),
                  f"{vid}: one OK and one ALREADY_EXISTS ({codes})")
            winner = next(v for v, code in results.values() if code == grpc.StatusCode.OK)
            fps = {r.name: (get(r, vid)[0] or pb.Voice()).fingerprint for r in replicas}
            check(set(fps.values()) == {winner.fingerprint},
                  f"{vid}: every replica serves the winner's content")

        # 4. SIGKILL A in the middle of registrations.
        done, lock = [], threading.Lock()
        stop = threading.Event()

        def hammer(k):
            j = 0
            while not stop.is_set():
                vid = f"k{k}-{j}"
                j += 1
                _, code = register(a, vid, seed=k * 100 + j, timeout=5)
                if code == grpc.StatusCode.OK:
                    with lock:
                        done.append(vid)
                elif code == grpc.StatusCode.UNAVAILABLE:
                    return

        hammers = [threading.Thread(target=hammer, args=(k,)) for k in range(6)]
        for t in hammers:
            t.start()
        while True:
            with lock:
                if len(done) >= 10:
                    break
            time.sleep(0.01)
        a.proc.kill()  # SIGKILL, registrations in flight
        a.proc.wait()
        stop.set()
        for t in hammers:
            t.join()
        files = sorted(f for f in os.listdir(repo) if f.endswith(".voice"))
        temps = [f for f in os.listdir(repo) if f.startswith(".voice-tmp-")]
        print(f"A killed after {len(done)} acknowledged registrations; {len(files)} voice files, "
              f"{len(temps)} temporary files left", flush=True)
        a.start()
        a.wait_ready()
        published = [f[:-len(".voice")] for f in files]
        for r in replicas:
            missing = [v for v in done if get(r, v)[1] != grpc.StatusCode.OK]
            check(not missing, f"{r.name} serves all {len(done)} acknowledged voices "
                  f"(missing {missing[:5]})")
            unserved = [v for v in published if get(r, v)[1] != grpc.StatusCode.OK]
            check(not unserved, f"{r.name} serves every published file (torn: {unserved[:5]})")
            fails = r.counter("vocoder_voice_load_failures_total")
            check(fails == 0, f"{r.name}: no voice file failed to load ({fails})")
        code, samples = stream(b, done[-1])
        check(code == grpc.StatusCode.OK and samples == 9600,
              f"B streams {done[-1]}, registered on A before the kill ({code})")

        # 5. Load over the three replicas: each one's share in its /metrics.
        def served(r):
            return r.counter("vocoder_requests_total", rpc="StreamVocode", code="OK")
        before = [served(r) for r in replicas]
        p = subprocess.run([loadgen, "--target", ",".join(f"127.0.0.1:{r.port}" for r in replicas),
                            "--voices", "alice", "bob", "--utterance-tokens", "10",
                            "--chunk-tokens", "10", "--fast", "--concurrency", "3",
                            "--warmup-s", "0", "--utterances", "24"],
                           capture_output=True, text=True, timeout=180)
        print(p.stdout[-1500:], p.stderr[-1500:], sep="")
        check(p.returncode == 0, f"vocoder-loadgen over three targets exits 0 ({p.returncode})")
        shares = [served(r) - s for r, s in zip(replicas, before)]
        print("streams served per replica (vocoder_requests_total, StreamVocode OK): "
              + ", ".join(f"{r.name} {int(s)}" for r, s in zip(replicas, shares)), flush=True)
        check(all(s >= 3 for s in shares),
              f"every replica served a share of the load ({shares})")
        p = subprocess.run([loadgen, "--target", "localhost:1,localhost:2", "--concurrency", "1"],
                           capture_output=True, text=True, timeout=30)
        check(p.returncode != 0 and "dns:///" in p.stderr,
              f"several host names are refused with a pointer to dns:/// ({p.stderr.strip()!r})")
    finally:
        for r in replicas:
            r.stop()
    print(f"fleet test: {time.time() - t0:.1f} s", flush=True)
    if failures:
        sys.exit(f"{len(failures)} check(s) failed")
    shutil.rmtree(work, ignore_errors=True)
    print("fleet test passed")


if __name__ == "__main__":
    main()
