#!/usr/bin/env python3
"""Runs the container image's helper scripts (deploy/docker/) outside a container.

    image_scripts_test.py REPO_ROOT VOCODERD MODEL_DIR

- export-model, with a stand-in export tool: exports when the model is
  missing (random-init or checkpoint), keeps a matching model, refuses one
  exported for another device, fails with a clear message when the
  checkpoint never arrives, and keeps another pod's export when that pod
  renamed first; every flag it passes exists in tools/export_s3gen.py --help.
- grpc-health-check against a real vocoderd, in plaintext and with TLS (a
  self-signed certificate from openssl): liveness and readiness SERVING,
  unknown service, wrong TLS name and plaintext-against-TLS all fail.
- runtime-libs collect/check on the real binaries.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

FAILURES = []


def expect(cond, what):
    print(("ok: " if cond else "FAIL: ") + what)
    if not cond:
        FAILURES.append(what)


# A stand-in for tools/export_s3gen.py: records its arguments and writes a
# manifest with the device and source it was asked for.
FAKE_TOOL = r'''
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(" ".join(args) + "\n")
out = args[args.index("--out") + 1]
os.makedirs(out)
json.dump({"device": args[args.index("--device") + 1],
           "source": "random-init" if "--random-init" in args else "checkpoint"},
          open(os.path.join(out, "manifest.json"), "w"))
race = os.environ.get("FAKE_RACE")  # another pod finishes first
if race:
    os.makedirs(race)
    json.dump({"device": "cpu", "source": "random-init"},
              open(os.path.join(race, "manifest.json"), "w"))
'''


def export_model_cases(root):
    script = os.path.join(root, "deploy", "docker", "export-model")
    with tempfile.TemporaryDirectory() as tmp:
        tool = os.path.join(tmp, "fake_export.py")
        with open(tool, "w") as f:
            f.write(FAKE_TOOL)
        log = os.path.join(tmp, "calls")

        def run(model_dir, **env):
            open(log, "w").close()
            full = {k: v for k, v in os.environ.items()
                    if not k.startswith(("VOCODERD_", "EXPORT_"))}
            full.update(VOCODERD_MODEL_DIR=model_dir, EXPORT_TOOL=tool, FAKE_LOG=log,
                        EXPORT_PYTHON=sys.executable, HOSTNAME="pod-a", **env)
            r = subprocess.run([script], capture_output=True, text=True, env=full, timeout=60)
            return r.returncode, r.stderr, open(log).read()

        models = os.path.join(tmp, "models")
        rc, err, calls = run(f"{models}/s3gen", EXPORT_SOURCE="random-init", EXPORT_DEVICE="cpu",
                             EXPORT_SIZE="tiny")
        expect(rc == 0 and "--random-init --seed 0 --size tiny --no-golden" in calls
               and os.path.exists(f"{models}/s3gen/manifest.json"),
               f"export-model: random-init export into an empty volume (rc {rc}: {calls.strip()})")
        expect(not [n for n in os.listdir(models) if n.startswith(".export-")],
               "export-model: leaves no scratch directory behind")
        rc, err, calls = run(f"{models}/s3gen", EXPORT_SOURCE="random-init", EXPORT_DEVICE="cpu")
        expect(rc == 0 and calls == "" and "nothing to do" in err,
               "export-model: keeps a model that matches (no second export)")
        rc, err, calls = run(f"{models}/s3gen", EXPORT_SOURCE="random-init", EXPORT_DEVICE="cuda")
        expect(rc == 1 and calls == "" and "'cpu random-init' export" in err,
               f"export-model: refuses a CPU export on a CUDA pod: {err.strip()[-120:]}")

        ckpt = os.path.join(tmp, "ckpt")
        os.makedirs(ckpt)
        rc, err, calls = run(f"{models}/cuda", EXPORT_SOURCE="checkpoint", EXPORT_DEVICE="cuda",
                             EXPORT_CHECKPOINT_DIR=ckpt, EXPORT_WAIT_S="0")
        expect(rc == 1 and "fetch-checkpoint Job" in err and calls == "",
               "export-model: no checkpoint and no wait -> a message that names the fix")
        for name in ("s3gen.safetensors", "conds.pt"):
            open(os.path.join(ckpt, name), "w").close()
        rc, err, calls = run(f"{models}/cuda", EXPORT_SOURCE="checkpoint", EXPORT_DEVICE="cuda",
                             EXPORT_CHECKPOINT_DIR=ckpt)
        expect(rc == 0 and f"--checkpoint {ckpt}/s3gen.safetensors --conds {ckpt}/conds.pt" in calls
               and "--device cuda" in calls,
               f"export-model: exports the checkpoint with its conds ({calls.strip()})")

        rc, err, calls = run(f"{models}/raced", EXPORT_SOURCE="random-init", EXPORT_DEVICE="cpu",
                             FAKE_RACE=f"{models}/raced")
        expect(rc == 0 and "another pod exported" in err,
               "export-model: keeps the model of a pod that renamed first")
        rc, err, calls = run(f"{models}/x", EXPORT_SOURCE="download")
        expect(rc == 1 and "EXPORT_SOURCE must be" in err,
               "export-model: rejects a bad EXPORT_SOURCE")

    # The flags it passes must be the export tool's.
    with open(script, encoding="utf-8") as f:
        passed = set(re.findall(r"(--[a-z][a-z-]+)", f.read()))
    r = subprocess.run([sys.executable, os.path.join(root, "tools", "export_s3gen.py"), "--help"],
                       capture_output=True, text=True, timeout=300)
    missing = sorted(flag for flag in passed if flag not in r.stdout)
    expect(r.returncode == 0 and not missing,
           f"export-model: its {len(passed)} flags exist in export_s3gen.py --help "
           f"(missing: {missing})")


def start_vocoderd(vocoderd, model, work, *extra):
    out = open(os.path.join(work, "vocoderd.out"), "w+")
    err = open(os.path.join(work, "vocoderd.err"), "w+")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOCODERD_")}
    proc = subprocess.Popen([vocoderd, "--listen", "127.0.0.1:0", "--metrics-listen", "",
                             "--model-dir", model, *extra], stdout=out, stderr=err, env=env)
    for _ in range(600):
        out.seek(0)
        m = re.search(r"serving on port (\d+)", out.read())
        if m:
            return proc, int(m.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    err.seek(0)
    proc.kill()
    raise SystemExit(f"vocoderd did not start: {err.read()}")


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def health_check_cases(root, vocoderd, model):
    probe = os.path.join(root, "deploy", "docker", "grpc-health-check")
    openssl = shutil.which("openssl")
    if openssl is None:
        expect(False, "openssl is needed for the TLS case (Debian package openssl)")
        return
    with tempfile.TemporaryDirectory() as work:
        cert, key = os.path.join(work, "tls.crt"), os.path.join(work, "tls.key")
        subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "1", "-subj", "/CN=vocoderd",
                        "-addext", "subjectAltName=DNS:localhost,DNS:vocoderd"],
                       check=True, capture_output=True)

        def check(port, *args, env=None):
            full = {k: v for k, v in os.environ.items() if not k.startswith("VOCODERD_")}
            full.update(env or {})
            r = subprocess.run([sys.executable, probe, "--addr", f"127.0.0.1:{port}", *args],
                               capture_output=True, text=True, env=full, timeout=30)
            return r.returncode, (r.stdout + r.stderr).strip()

        proc, port = start_vocoderd(vocoderd, model, work)
        try:
            rc, out = check(port)
            expect(rc == 0 and "SERVING" in out, f"grpc-health-check plaintext liveness: {out}")
            rc, out = check(port, "--service", "vocoder.v1.Vocoder")
            expect(rc == 0, f"grpc-health-check plaintext readiness: {out}")
            rc, out = check(port, "--service", "vocoder.v1.Nope")
            expect(rc == 1 and "NOT_FOUND" in out,
                   f"grpc-health-check unknown service fails: {out}")
            # The default address follows VOCODERD_LISTEN, as in the pod.
            full = {k: v for k, v in os.environ.items() if not k.startswith("VOCODERD_")}
            full["VOCODERD_LISTEN"] = f"0.0.0.0:{port}"
            r = subprocess.run([sys.executable, probe], capture_output=True, text=True, env=full)
            expect(r.returncode == 0, "grpc-health-check finds the port through VOCODERD_LISTEN")
        finally:
            stop(proc)

        proc, port = start_vocoderd(vocoderd, model, work, "--tls-cert", cert, "--tls-key", key)
        tls_env = {"VOCODERD_TLS_CERT": cert}
        try:
            rc, out = check(port, "--service", "vocoder.v1.Vocoder", env=tls_env)
            expect(rc == 0, f"grpc-health-check TLS readiness (TLS from VOCODERD_TLS_CERT): {out}")
            rc, out = check(port, env=tls_env)
            expect(rc == 0, f"grpc-health-check TLS liveness: {out}")
            rc, out = check(port, "--server-name", "elsewhere", "--timeout", "2", env=tls_env)
            expect(rc == 1,
                   f"grpc-health-check TLS with a name not in the certificate fails: {out}")
            rc, out = check(port, "--no-tls", "--timeout", "2")
            expect(rc == 1, f"grpc-health-check plaintext against TLS fails: {out}")
        finally:
            stop(proc)


def runtime_libs_cases(root, vocoderd):
    script = os.path.join(root, "deploy", "docker", "runtime-libs")
    env = dict(os.environ, VOCODERD_VENV=os.path.join(root, ".venv"))
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run([script, "collect", tmp, vocoderd], capture_output=True, text=True,
                           env=env)
        libs = set(os.listdir(tmp))
        expect(r.returncode == 0 and any(n.startswith("libgrpc++.so") for n in libs)
               and not any(n.startswith("libtorch") for n in libs),
               f"runtime-libs collect: gRPC and friends, not the venv's torch "
               f"({len(libs)} libraries)")
    r = subprocess.run([script, "check", vocoderd], capture_output=True, text=True)
    expect(r.returncode == 0, f"runtime-libs check: {r.stdout.strip()}{r.stderr.strip()}")
    r = subprocess.run([script, "install"], capture_output=True, text=True)
    expect(r.returncode == 2, "runtime-libs: usage errors exit 2")


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    root, vocoderd, model = (os.path.abspath(a) for a in argv)
    export_model_cases(root)
    health_check_cases(root, vocoderd, model)
    runtime_libs_cases(root, vocoderd)
    print(f"image_scripts_test: {f'FAILED, {len(FAILURES)} checks' if FAILURES else 'passed'}")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
