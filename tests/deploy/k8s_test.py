#!/usr/bin/env python3
"""Offline checks of the Kubernetes manifests in deploy/k8s.

    k8s_test.py REPO_ROOT [VOCODERD]

1. Renders every overlay (and the fetch-checkpoint Job) with kustomize_lite.py
   and, where kubectl exists, with `kubectl kustomize`; the two must agree.
2. Validates every object against the Kubernetes OpenAPI schemas shipped in
   PyPI's kubernetes-validate, strictly (unknown fields are errors), for every
   version from MIN_KUBERNETES on. The operator's custom resources
   (PodMonitor, PrometheusRule, cert-manager Certificate) have no schema
   there: a structural check of the fields used stands in.
3. Checks the manifests against the server: every VOCODERD_* variable is one
   vocoderd reads, and `vocoderd --print-config` accepts the pod's
   environment; probe ports and health service names are the server's;
   terminationGracePeriodSeconds covers preStop + drain grace + shutdown, and
   the drain grace covers the longest utterance; GPU, rollout, security,
   Services, PDB, NetworkPolicy, PodMonitor and HPA wiring; the HPA's metrics
   come from prometheus-adapter rules over series listed in docs/metrics.md,
   and promtool evaluates those rules on synthetic series; the generated
   dashboard and PrometheusRule match deploy/grafana and deploy/prometheus.
4. Self-check: deliberately broken copies of the rendered manifests (grace
   below the drain, an unknown variable, a wrong probe port, ...) must each
   be reported.

Without VOCODERD the server's variables and defaults come from config/*.{h,cc}.
"""
import copy
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile

import kubernetes_validate
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kustomize_lite  # noqa: E402

K8S = None  # <repo>/deploy/k8s, set by main()

# Rendered and checked; base and components are covered through these.
TARGETS = ["overlays/cpu-dev", "overlays/gpu", "overlays/gpu-tls", "jobs/fetch-checkpoint"]
# The oldest Kubernetes the manifests support: the native preStop sleep
# action is on by default from 1.30 (native gRPC probes from 1.27).
MIN_KUBERNETES = "1.30"
TOKENS_PER_SECOND = 25  # S3 speech tokens (README); a stream lasts tokens / 25 s
GRACE_MARGIN_S = 5      # slack for signal delivery and process exit
HEALTH_PROBE = "/opt/vocoderd/bin/grpc-health-check"


# --- the server's side ---------------------------------------------------------

class ServerFacts:
    """What vocoderd reads and does, from its binary or, failing that, its source."""

    def __init__(self, root, binary):
        self.root, self.binary = root, binary
        self._cache = {}  # each vocoderd start loads LibTorch: about a second
        source_vars = self._env_vars_from_source()
        if binary:
            help_text = subprocess.run([binary, "--help"], capture_output=True, text=True,
                                       check=True, env=self._clean_env({})).stdout
            self.env_vars = set(re.findall(r"\(Env:(VOCODERD_[A-Z0-9_]+)\)", help_text))
            if self.env_vars != source_vars:
                raise SystemExit(f"k8s_test: the variables in vocoderd --help and in "
                                 f"config/config.cc differ: {sorted(self.env_vars ^ source_vars)} "
                                 "(is the binary stale, or this test's parser?)")
        else:
            self.env_vars = source_vars
        self.readiness_service = self._readiness_service()
        self.liveness_service = ""  # gRPC's default health service: the server as a whole
        self.shutdown_s = self._shutdown_s()

    def _read(self, rel):
        with open(os.path.join(self.root, rel), encoding="utf-8") as f:
            return f.read()

    def _env_vars_from_source(self):
        flags = re.findall(r'add\("\w+", "([a-z0-9-]+)"', self._read("config/config.cc"))
        if len(flags) < 10:
            raise SystemExit("k8s_test: cannot find the flags in config/config.cc")
        return {"VOCODERD_CONFIG"} | {"VOCODERD_" + f.upper().replace("-", "_") for f in flags}

    def _readiness_service(self):
        m = re.search(r'kReadinessService\[\] = "([^"]+)"', self._read("server/server.h"))
        if not m:
            raise SystemExit("k8s_test: kReadinessService not found in server/server.h")
        return m.group(1)

    def _shutdown_s(self):
        # Drain ends with Shutdown(now + N s) for what the grace left over.
        m = re.search(r"Shutdown\(std::chrono::system_clock::now\(\) \+ "
                      r"std::chrono::seconds\((\d+)\)\)", self._read("server/server.cc"))
        return int(m.group(1)) if m else 2

    @staticmethod
    def _clean_env(extra):
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOCODERD_")}
        env.update(extra)
        return env

    def effective_config(self, env, args):
        """{flag: value} that vocoderd would run with, or raises ValueError with
        vocoderd's own message when it rejects the configuration."""
        key = (tuple(sorted(env.items())), tuple(args))
        if key not in self._cache:
            try:
                self._cache[key] = self._effective_config(env, args)
            except ValueError as e:
                self._cache[key] = e
        if isinstance(self._cache[key], ValueError):
            raise self._cache[key]
        return dict(self._cache[key])

    def _effective_config(self, env, args):
        if self.binary:
            r = subprocess.run([self.binary, *args, "--print-config"], capture_output=True,
                               text=True, env=self._clean_env(env))
            if r.returncode != 0:
                raise ValueError(r.stderr.strip() or f"exit code {r.returncode}")
            config = {}
            for line in r.stdout.splitlines():
                if "=" in line and not line.startswith("#"):
                    key, _, value = line.partition(" = ")
                    config[key] = json.loads(value)
            return config
        if args:
            raise ValueError("container args need the vocoderd binary to check")
        config = self._defaults_from_source()
        for flag in config:
            name = "VOCODERD_" + flag.upper().replace("-", "_")
            if name in env:
                config[flag] = type(config[flag])(env[name]) if config[flag] != "" else env[name]
        return config

    def _defaults_from_source(self):
        defaults = {}
        for ctype, name, init in re.findall(
                r"^\s*(std::string|int|int64_t|double)\s+(\w+)(?:\s*=\s*([^;]+))?;",
                self._read("config/config.h"), re.M):
            if ctype == "std::string":
                value = json.loads(init) if init else ""
            elif re.fullmatch(r"[\d.\s*<+()-]+", init):
                value = eval(init, {"__builtins__": {}})  # constant arithmetic only
                value = float(value) if ctype == "double" else int(value)
            else:
                continue
            defaults[name.replace("_", "-")] = value
        return defaults


def port_of(hostport):
    return int(hostport.rsplit(":", 1)[1])


# --- rendering ------------------------------------------------------------------

def normalize(node):
    """Whitespace inside strings collapsed: kubectl's YAML library folds the
    more-indented lines of `>-` scalars (PromQL in the PrometheusRule) with an
    extra newline, which PyYAML, following the YAML spec, does not."""
    if isinstance(node, dict):
        return {k: normalize(v) for k, v in node.items()}
    if isinstance(node, list):
        return [normalize(v) for v in node]
    if isinstance(node, str):
        return " ".join(node.split())
    return node


def render_all(problems, notes):
    """{target: [objects]}, from kustomize_lite, compared with kubectl's."""
    kubectl = shutil.which("kubectl")
    rendered = {}
    for target in TARGETS + ["base"]:
        path = os.path.join(K8S, target)
        try:
            objects = kustomize_lite.render(path)
        except (kustomize_lite.Unsupported, ValueError, OSError) as e:
            problems.append(f"{target}: kustomize_lite cannot render it: {e}")
            continue
        rendered[target] = objects
        if kubectl is None:
            continue
        r = subprocess.run([kubectl, "kustomize", path], capture_output=True, text=True)
        if r.returncode != 0:
            problems.append(f"{target}: kubectl kustomize failed: {r.stderr.strip()}")
            continue
        theirs = {kustomize_lite._key(o): normalize(o)
                  for o in yaml.safe_load_all(r.stdout) if o}
        mine = {kustomize_lite._key(o): normalize(o) for o in objects}
        if mine.keys() != theirs.keys():
            problems.append(f"{target}: kustomize_lite and kubectl render different objects: "
                            f"{sorted(map(str, mine.keys() ^ theirs.keys()))}")
        for key in sorted(mine.keys() & theirs.keys(), key=str):
            if mine[key] != theirs[key]:
                problems.append(f"{target}: kustomize_lite and kubectl differ on {key}")
    if kubectl is None:
        notes.append("kubectl not found: rendered with kustomize_lite only")
    else:
        notes.append(f"kubectl kustomize and kustomize_lite agree on {len(rendered)} targets")
    rendered.pop("base", None)  # only for the comparison: its image is a placeholder
    return rendered


# --- schema validation ------------------------------------------------------------

def versions_from(minimum):
    def key(v):
        return tuple(int(x) for x in v.split(".")[:2])
    seen = sorted({v for v in kubernetes_validate.utils.all_versions()}, key=key)
    return [v for v in seen if key(v) >= key(minimum)]


def require(obj, path, types, problems, where):
    """problems += one line unless obj[path...] exists and has one of types."""
    node = obj
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            problems.append(f"{where}: {path} is missing")
            return None
        node = node[part]
    if not isinstance(node, types):
        problems.append(f"{where}: {path} must be {types}; was {type(node).__name__}")
        return None
    return node


def check_podmonitor(obj, problems, where):
    require(obj, "spec.selector.matchLabels", dict, problems, where)
    for i, ep in enumerate(require(obj, "spec.podMetricsEndpoints", list, problems, where) or []):
        unknown = set(ep) - {"port", "path", "interval", "scrapeTimeout", "scheme",
                             "relabelings", "metricRelabelings", "honorLabels"}
        if unknown or not isinstance(ep.get("port"), str):
            problems.append(f"{where}: podMetricsEndpoints[{i}] needs a port name and no {unknown}")


def check_prometheusrule(obj, problems, where):
    for g in require(obj, "spec.groups", list, problems, where) or []:
        if not isinstance(g.get("name"), str) or not isinstance(g.get("rules"), list):
            problems.append(f"{where}: every group needs a name and rules")
            continue
        for r in g["rules"]:
            if ("record" in r) == ("alert" in r) or not isinstance(r.get("expr"), str):
                problems.append(f"{where}: rule {r} needs exactly one of record/alert, and expr")


def check_certificate(obj, problems, where):
    require(obj, "spec.secretName", str, problems, where)
    require(obj, "spec.dnsNames", list, problems, where)
    require(obj, "spec.issuerRef.name", str, problems, where)


CRD_CHECKS = {
    ("monitoring.coreos.com/v1", "PodMonitor"): check_podmonitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): check_prometheusrule,
    ("cert-manager.io/v1", "Certificate"): check_certificate,
}


def validate_schemas(rendered, extra_objects, problems, notes):
    versions = versions_from(MIN_KUBERNETES)
    counted = 0
    all_objects = [(t, o) for t, objs in rendered.items() for o in objs] + extra_objects
    for target, obj in all_objects:
        where = f"{target}: {obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        crd = CRD_CHECKS.get((obj.get("apiVersion"), obj.get("kind")))
        if crd:
            require(obj, "metadata.name", str, problems, where)
            crd(obj, problems, where)
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                problems.append(f"{where}: invalid for Kubernetes {version}: {path}: {e.message}")
                break
            except SchemaNotFoundError:
                problems.append(f"{where}: no schema for {obj.get('apiVersion')} "
                                f"{obj.get('kind')} in Kubernetes {version}")
                break
        counted += 1
    notes.append(f"{counted} objects valid against the schemas of Kubernetes "
                 f"{versions[0]}..{versions[-1]} (strict); custom resources checked structurally")


# --- consistency ------------------------------------------------------------------

def pod_spec(obj):
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return obj["spec"]["template"]["spec"]
    return None


def containers(spec):
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


def by_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def find(objects, kind, name):
    for o in objects:
        if o["kind"] == kind and o["metadata"]["name"] == name:
            return o
    return None


def container_env(container, objects, problems, where):
    """The container's environment as far as the manifests determine it."""
    env = {}
    for src in container.get("envFrom") or []:
        ref = src.get("configMapRef")
        if ref is None:
            continue
        cm = find(objects, "ConfigMap", ref["name"])
        if cm is None:
            problems.append(f"{where}: envFrom ConfigMap {ref['name']} is not in the render")
            continue
        prefix = src.get("prefix", "")
        env.update({prefix + k: v for k, v in (cm.get("data") or {}).items()})
    for e in container.get("env") or []:
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            ref = (e.get("valueFrom") or {}).get("configMapKeyRef")
            if ref:
                cm = find(objects, "ConfigMap", ref["name"]) or {}
                env[e["name"]] = (cm.get("data") or {}).get(ref["key"], "")
            else:
                env[e["name"]] = None  # from a Secret or the downward API
    return env


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def quantity_cpu(q):
    q = str(q)
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


def export_script_vars(root):
    with open(os.path.join(root, "deploy", "docker", "export-model"), encoding="utf-8") as f:
        return set(re.findall(r"\$\{?(EXPORT_[A-Z_]+)", f.read()))


def documented_metrics(root):
    with open(os.path.join(root, "docs", "metrics.md"), encoding="utf-8") as f:
        return dict(re.findall(r"^\| `(vocoder_\w+)` \| (\w+) \|", f.read(), re.M))


def base_metric(series, documented):
    """vocoder_x_bucket -> vocoder_x when vocoder_x is a documented histogram."""
    for suffix in ("_bucket", "_sum", "_count"):
        if series.endswith(suffix) and documented.get(series[:-len(suffix)]) == "histogram":
            return series[:-len(suffix)]
    return series


def load_adapter_rules(root):
    path = os.path.join(root, "deploy", "k8s", "components", "autoscaling",
                        "prometheus-adapter-values.yaml")
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)["rules"]["custom"]


def check_pod_security(spec, where, problems):
    """The parts of the "restricted" Pod Security Standard, plus a read-only
    root filesystem, that the namespace label enforces or we promise."""
    psc = spec.get("securityContext") or {}
    if psc.get("runAsNonRoot") is not True or psc.get("runAsUser") == 0:
        problems.append(f"{where}: pod securityContext must set runAsNonRoot (non-root user)")
    if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append(f"{where}: pod seccompProfile must be RuntimeDefault")
    if spec.get("automountServiceAccountToken") is not False:
        problems.append(f"{where}: automountServiceAccountToken must be false (no API access)")
    if spec.get("enableServiceLinks") is not False:
        problems.append(f"{where}: enableServiceLinks must be false: Services named vocoderd* "
                        "would inject VOCODERD_* variables")
    for c in containers(spec):
        csc = c.get("securityContext") or {}
        cw = f"{where}: container {c['name']}"
        if csc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{cw}: allowPrivilegeEscalation must be false")
        if csc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{cw}: readOnlyRootFilesystem must be true")
        if csc.get("privileged"):
            problems.append(f"{cw}: must not be privileged")
        if "ALL" not in ((csc.get("capabilities") or {}).get("drop") or []):
            problems.append(f"{cw}: capabilities must drop ALL")
        if csc.get("runAsUser") == 0 or csc.get("runAsNonRoot") is False:
            problems.append(f"{cw}: must not run as root")
        if not any(m["mountPath"] == "/tmp" for m in c.get("volumeMounts") or []):
            problems.append(f"{cw}: needs a writable /tmp (HOME) on a read-only root")
        res = c.get("resources") or {}
        if not {"cpu", "memory"} <= set(res.get("requests") or {}) or \
                "memory" not in (res.get("limits") or {}):
            problems.append(f"{cw}: needs cpu and memory requests and a memory limit")
        image = c.get("image", "")
        name, tag, digest = kustomize_lite._split_image(image)
        if not digest and (not tag or tag == "latest"):
            problems.append(f"{cw}: image {image!r} needs a tag other than latest (or a digest)")


def check_server_deployment(dep, objects, facts, problems):
    where = f"Deployment/{dep['metadata']['name']}"
    spec = pod_spec(dep)
    ctr = {c["name"]: c for c in spec.get("containers") or []}.get("vocoderd")
    init = {c["name"]: c for c in spec.get("initContainers") or []}.get("export-model")
    if ctr is None:
        problems.append(f"{where}: no container named vocoderd")
        return
    if ctr.get("command"):
        problems.append(f"{where}: the vocoderd container must use the image's entrypoint")
    env = container_env(ctr, objects, problems, where)
    unknown = sorted(k for k in env if k.startswith("VOCODERD_") and k not in facts.env_vars)
    if unknown:
        problems.append(f"{where}: vocoderd reads no variable {', '.join(unknown)} "
                        f"(known: vocoderd --help)")
    try:
        cfg = facts.effective_config({k: v for k, v in env.items()
                                      if k.startswith("VOCODERD_") and v is not None},
                                     ctr.get("args") or [])
    except ValueError as e:
        problems.append(f"{where}: vocoderd rejects the pod's configuration: {e}")
        return
    grpc_port, metrics_port = port_of(cfg["listen"]), port_of(cfg["metrics-listen"])
    ports = {p.get("name"): p["containerPort"] for p in ctr.get("ports") or []}
    if ports.get("grpc") != grpc_port:
        problems.append(f"{where}: container port 'grpc' is {ports.get('grpc')}; "
                        f"vocoderd listens on {grpc_port} (VOCODERD_LISTEN)")
    if ports.get("metrics") != metrics_port:
        problems.append(f"{where}: container port 'metrics' is {ports.get('metrics')}; "
                        f"vocoderd serves metrics on {metrics_port} (VOCODERD_METRICS_LISTEN)")

    # Probes: native gRPC on the server's port, or exec through the TLS-aware
    # health check; readiness and startup on the readiness service.
    tls = bool(cfg.get("tls-cert"))
    want = {"startupProbe": facts.readiness_service, "readinessProbe": facts.readiness_service,
            "livenessProbe": facts.liveness_service}
    for probe_name, service in want.items():
        probe = ctr.get(probe_name)
        if probe is None:
            problems.append(f"{where}: {probe_name} is missing")
            continue
        if tls:
            cmd = (probe.get("exec") or {}).get("command") or []
            if "grpc" in probe or not cmd or cmd[0] != HEALTH_PROBE:
                problems.append(f"{where}: with TLS on (VOCODERD_TLS_CERT) the {probe_name} must "
                                f"exec {HEALTH_PROBE}: the kubelet's gRPC probe has no TLS")
            elif "--service" not in cmd or cmd[cmd.index("--service") + 1] != service:
                problems.append(f"{where}: {probe_name} must check health service {service!r}")
        else:
            grpc = probe.get("grpc")
            if grpc is None:
                problems.append(f"{where}: {probe_name} must be a native gRPC probe")
                continue
            if grpc.get("port") != grpc_port:
                problems.append(f"{where}: {probe_name} probes port {grpc.get('port')}; "
                                f"vocoderd listens on {grpc_port}")
            if grpc.get("service", "") != service:
                problems.append(f"{where}: {probe_name} checks health service "
                                f"{grpc.get('service', '')!r}; the server answers {service!r} "
                                "for this (server/server.h)")
    if tls:
        mounts = {m["mountPath"]: m["name"] for m in ctr.get("volumeMounts") or []}
        secret_vols = {v["name"] for v in spec.get("volumes") or [] if "secret" in v}
        for key in ("tls-cert", "tls-key"):
            path = cfg[key]
            if not any(path.startswith(mp.rstrip("/") + "/") and name in secret_vols
                       for mp, name in mounts.items()):
                problems.append(f"{where}: --{key} {path} is not on a mounted Secret")

    # Drain: preStop, then SIGTERM; drain grace, then Shutdown(+N s).
    pre_stop = ((ctr.get("lifecycle") or {}).get("preStop") or {})
    if "sleep" in pre_stop:
        pre_stop_s = pre_stop["sleep"]["seconds"]
    else:
        cmd = (pre_stop.get("exec") or {}).get("command") or []
        pre_stop_s = float(cmd[1]) if len(cmd) == 2 and cmd[0].endswith("sleep") else None
    if pre_stop_s is None:
        problems.append(f"{where}: preStop must sleep while the endpoint removal propagates")
        pre_stop_s = 0
    drain = float(cfg["drain-grace-s"])
    tgps = spec.get("terminationGracePeriodSeconds", 30)
    need = pre_stop_s + drain + facts.shutdown_s + GRACE_MARGIN_S
    if tgps < need:
        problems.append(f"{where}: terminationGracePeriodSeconds {tgps} < preStop {pre_stop_s} s "
                        f"+ drain grace {drain:g} s + shutdown {facts.shutdown_s} s + margin "
                        f"{GRACE_MARGIN_S} s = {need:g} s: the kubelet would kill open streams")
    longest = cfg["max-tokens-per-utterance"] / TOKENS_PER_SECOND
    if drain < longest:
        problems.append(f"{where}: drain grace {drain:g} s is shorter than the longest utterance, "
                        f"{cfg['max-tokens-per-utterance']} tokens = {longest:g} s "
                        "(VOCODERD_MAX_TOKENS_PER_UTTERANCE)")
    if cfg["max-connection-age-s"] <= 0:
        problems.append(f"{where}: VOCODERD_MAX_CONNECTION_AGE_S must be > 0: clients of the "
                        "ClusterIP Service stay pinned to one pod otherwise")

    # Rollout and scale.
    rolling = (dep["spec"].get("strategy") or {}).get("rollingUpdate") or {}
    if rolling.get("maxSurge") != 0 or rolling.get("maxUnavailable") != 1:
        problems.append(f"{where}: rollout must be maxSurge 0 / maxUnavailable 1 (no spare GPU)")
    hpas = [h for h in by_kind(objects, "HorizontalPodAutoscaler")
            if h["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]]
    if hpas and "replicas" in dep["spec"]:
        problems.append(f"{where}: replicas is set although an HPA scales it "
                        "(kubectl apply would reset the HPA's count)")

    # The simulated accelerator (docs/simulator.md) is for benchmarks and tests:
    # no overlay may select it.
    if cfg["device"] == "sim" or cfg["device"].startswith("sim:"):
        problems.append(f"{where}: VOCODERD_DEVICE {cfg['device']} is the simulated accelerator; "
                        "deploy cpu or cuda:N")

    # GPU: device, resources, toleration, export device.
    gpu = cfg["device"].startswith("cuda")
    export_env = container_env(init, objects, problems, where) if init else {}
    for c in (ctr, init):
        if c is None:
            continue
        limits = (c.get("resources") or {}).get("limits") or {}
        requests = (c.get("resources") or {}).get("requests") or {}
        needs = gpu if c is ctr else export_env.get("EXPORT_DEVICE") == "cuda"
        has = str(limits.get("nvidia.com/gpu", "0"))
        if needs and has != "1":
            problems.append(f"{where}: container {c['name']} runs on CUDA but its "
                            f"nvidia.com/gpu limit is {has}; want 1")
        if not needs and has != "0":
            problems.append(f"{where}: container {c['name']} holds a GPU it does not use")
        if "nvidia.com/gpu" in requests and str(requests["nvidia.com/gpu"]) != has:
            problems.append(f"{where}: container {c['name']}: GPU request must equal the limit")
    tolerated = any(t.get("key") == "nvidia.com/gpu" for t in spec.get("tolerations") or [])
    if gpu and not tolerated:
        problems.append(f"{where}: GPU pods need a toleration for the nvidia.com/gpu taint")
    threads = next((e.get("value") for e in ctr.get("env") or []
                    if e["name"] == "OMP_NUM_THREADS"), None)
    cpu = quantity_cpu(((ctr.get("resources") or {}).get("requests") or {}).get("cpu", "0"))
    if threads is None or int(threads) != max(1, math.floor(cpu)):
        problems.append(f"{where}: OMP_NUM_THREADS {threads} should match the CPU request {cpu:g}")

    # The model volume: init container writes, server reads.
    if init is None:
        problems.append(f"{where}: no export-model init container")
        return
    if not (init.get("command") or [""])[0].endswith("/export-model"):
        problems.append(f"{where}: the init container must run export-model")
    unknown = sorted(set(k for k in export_env if k.startswith("EXPORT_"))
                     - export_script_vars(facts.root))
    if unknown:
        problems.append(f"{where}: export-model reads no {', '.join(unknown)}")
    if export_env.get("VOCODERD_MODEL_DIR") != env.get("VOCODERD_MODEL_DIR"):
        problems.append(f"{where}: export-model and vocoderd see different VOCODERD_MODEL_DIR")
    want_export = "cuda" if gpu else "cpu"
    if export_env.get("EXPORT_DEVICE") != want_export:
        problems.append(f"{where}: EXPORT_DEVICE is {export_env.get('EXPORT_DEVICE')} but the "
                        f"server runs on {cfg['device']}: traced modules bake their device")
    model_dir = cfg["model-dir"]

    def mount_of(c):
        best = None
        for m in c.get("volumeMounts") or []:
            if model_dir.startswith(m["mountPath"].rstrip("/") + "/"):
                if best is None or len(m["mountPath"]) > len(best["mountPath"]):
                    best = m
        return best
    m_init, m_srv = mount_of(init), mount_of(ctr)
    if m_init is None or m_srv is None or m_init["name"] != m_srv["name"]:
        problems.append(f"{where}: {model_dir} must lie below one volume mounted in both "
                        "export-model and vocoderd (the export renames into it)")
    else:
        if m_init.get("readOnly"):
            problems.append(f"{where}: export-model must mount the model volume writable")
        if m_srv.get("readOnly"):
            problems.append(f"{where}: vocoderd must mount the model volume writable: the "
                            "voice repository (<model-dir>/voices) lives there and "
                            "RegisterVoice writes to it")


def check_target(target, objects, facts, root):
    """Every consistency problem of one rendered target, as sentences."""
    problems = []
    namespaces = {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"}
    ns_objects = by_kind(objects, "Namespace")
    if len(namespaces) != 1 or None in namespaces:
        problems.append(f"every object needs the one namespace; found {namespaces}")
    for ns in ns_objects:
        if ns["metadata"]["labels"].get("pod-security.kubernetes.io/enforce") != "restricted":
            problems.append(f"Namespace/{ns['metadata']['name']} should enforce the restricted "
                            "Pod Security Standard")
    for obj in objects:
        spec = pod_spec(obj)
        if spec is not None:
            check_pod_security(spec, f"{obj['kind']}/{obj['metadata']['name']}", problems)
    for cm in by_kind(objects, "ConfigMap"):
        unknown = sorted(k for k in cm.get("data") or {}
                         if k.startswith("VOCODERD_") and k not in facts.env_vars)
        if unknown:
            problems.append(f"ConfigMap/{cm['metadata']['name']}: vocoderd reads no "
                            f"{', '.join(unknown)}")

    dep = find(objects, "Deployment", "vocoderd")
    if dep is None:
        return [f"{target}: {p}" for p in problems]
    check_server_deployment(dep, objects, facts, problems)
    spec = pod_spec(dep)
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    if not selects(dep["spec"]["selector"]["matchLabels"], pod_labels):
        problems.append("the Deployment's selector does not match its pods")
    ctr = next(c for c in spec["containers"] if c["name"] == "vocoderd")
    named = {p["name"]: p["containerPort"] for p in ctr.get("ports") or []}

    def resolve(port):
        return named.get(port) if isinstance(port, str) else port

    # Services: one ClusterIP, one headless, both onto the gRPC port.
    kinds = set()
    for svc in by_kind(objects, "Service"):
        s = svc["spec"]
        w = f"Service/{svc['metadata']['name']}"
        if not selects(s.get("selector"), pod_labels):
            problems.append(f"{w}: selector does not match the vocoderd pods")
        for p in s["ports"]:
            if resolve(p.get("targetPort", p["port"])) not in named.values():
                problems.append(f"{w}: targetPort {p.get('targetPort')} is no container port")
        if any(resolve(p.get("targetPort")) == named.get("grpc") for p in s["ports"]):
            headless = s.get("clusterIP") == "None"
            kinds.add("headless" if headless else "ClusterIP")
            if headless and s.get("publishNotReadyAddresses"):
                problems.append(f"{w}: a headless Service for clients must not publish "
                                "not-ready pods")
    if kinds != {"headless", "ClusterIP"}:
        problems.append(f"want a ClusterIP and a headless Service on the gRPC port; have {kinds}")

    pdbs = by_kind(objects, "PodDisruptionBudget")
    if not any(selects(p["spec"]["selector"]["matchLabels"], pod_labels) and
               p["spec"].get("maxUnavailable") == 1 for p in pdbs):
        problems.append("no PodDisruptionBudget with maxUnavailable 1 selects the vocoderd pods")

    nps = [n for n in by_kind(objects, "NetworkPolicy")
           if selects(n["spec"]["podSelector"].get("matchLabels"), pod_labels)]
    if not nps:
        problems.append("no NetworkPolicy selects the vocoderd pods")
    allowed = {resolve(p["port"]) for n in nps for rule in n["spec"].get("ingress") or []
               for p in rule.get("ports") or []}
    for name in ("grpc", "metrics"):
        if named.get(name) not in allowed:
            problems.append(f"the NetworkPolicy does not admit the {name} port {named.get(name)}")

    for pm in by_kind(objects, "PodMonitor"):
        if not selects(pm["spec"]["selector"]["matchLabels"], pod_labels):
            problems.append(f"PodMonitor/{pm['metadata']['name']}: selector misses the pods")
        for ep in pm["spec"]["podMetricsEndpoints"]:
            if ep["port"] != "metrics" or ep.get("path", "/metrics") != "/metrics":
                problems.append(f"PodMonitor/{pm['metadata']['name']}: must scrape port "
                                f"'metrics' at /metrics; has {ep['port']} {ep.get('path')}")

    documented = documented_metrics(root)
    rules = {r["name"]["as"]: r for r in load_adapter_rules(root)}
    env = container_env(ctr, objects, [], "")
    try:
        cfg = facts.effective_config({k: v for k, v in env.items()
                                      if k.startswith("VOCODERD_") and v is not None}, [])
    except ValueError:
        cfg = None  # reported by check_server_deployment
    for hpa in by_kind(objects, "HorizontalPodAutoscaler"):
        w = f"HorizontalPodAutoscaler/{hpa['metadata']['name']}"
        ref = hpa["spec"]["scaleTargetRef"]
        if (ref["kind"], ref["name"]) != ("Deployment", "vocoderd"):
            problems.append(f"{w}: scales {ref}, not the vocoderd Deployment")
        if hpa["spec"].get("minReplicas", 1) < 2:
            problems.append(f"{w}: minReplicas < 2 leaves no pod serving during a disruption")
        for m in hpa["spec"]["metrics"]:
            if m["type"] != "Pods":
                problems.append(f"{w}: metric type {m['type']}: want per-pod metrics")
                continue
            name = m["pods"]["metric"]["name"]
            rule = rules.get(name)
            if rule is None:
                problems.append(f"{w}: metric {name} comes from no prometheus-adapter rule "
                                "(prometheus-adapter-values.yaml)")
                continue
            series = set(re.findall(r"\b(vocoder_\w+)", rule["seriesQuery"] +
                                    rule["metricsQuery"]))
            for s in sorted(series):
                if base_metric(s, documented) not in documented:
                    problems.append(f"{w}: metric {name} reads {s}, which docs/metrics.md "
                                    "does not list")
            target = m["pods"]["target"]
            if name == "vocoder_inflight_streams" and cfg is not None and \
                    float(target["averageValue"]) >= cfg["max-streams"]:
                problems.append(f"{w}: the streams target {target['averageValue']} is not below "
                                f"the stream cap {cfg['max-streams']}: pods would reject first")

    dash = find(objects, "ConfigMap", "vocoderd-grafana-dashboard")
    if dash is not None:
        with open(os.path.join(root, "deploy", "grafana", "vocoderd-dashboard.json"),
                  encoding="utf-8") as f:
            if dash["data"].get("vocoderd-dashboard.json") != f.read():
                problems.append("the dashboard ConfigMap differs from "
                                "deploy/grafana/vocoderd-dashboard.json (run deploy/k8s/generate)")
    rule = find(objects, "PrometheusRule", "vocoderd")
    if rule is not None:
        with open(os.path.join(root, "deploy", "prometheus", "rules.yml"), encoding="utf-8") as f:
            if normalize(rule["spec"]["groups"]) != normalize(yaml.safe_load(f)["groups"]):
                problems.append("the PrometheusRule differs from deploy/prometheus/rules.yml "
                                "(run deploy/k8s/generate)")
    return [f"{target}: {p}" for p in problems]


def check_job_images(rendered, problems):
    """The fetch-checkpoint Job must use the gpu overlay's image and namespace."""
    gpu, job = rendered.get("overlays/gpu"), rendered.get("jobs/fetch-checkpoint")
    if not gpu or not job:
        return
    dep, j = find(gpu, "Deployment", "vocoderd"), by_kind(job, "Job")[0]
    if pod_spec(dep)["containers"][0]["image"] != pod_spec(j)["containers"][0]["image"]:
        problems.append("jobs/fetch-checkpoint: its image differs from overlays/gpu's")
    if dep["metadata"]["namespace"] != j["metadata"]["namespace"]:
        problems.append("jobs/fetch-checkpoint: its namespace differs from overlays/gpu's")
    claim = {v["persistentVolumeClaim"]["claimName"] for v in pod_spec(dep)["volumes"]
             if "persistentVolumeClaim" in v}
    if not claim & {v["persistentVolumeClaim"]["claimName"] for v in pod_spec(j)["volumes"]
                    if "persistentVolumeClaim" in v}:
        problems.append("jobs/fetch-checkpoint: it does not write to the gpu overlay's claim")


# --- prometheus-adapter queries under promtool ------------------------------------------

def adapter_promtool(root, problems, notes):
    """Evaluates each adapter rule's metricsQuery, with the adapter's template
    filled in as it does for a Pods metric, on two pods: one busy, one idle."""
    promtool = shutil.which("promtool")
    if promtool is None:
        problems.append("promtool not found (Debian package prometheus; scripts/deps)")
        return
    matchers = 'namespace="vocoderd",pod=~"vocoderd-busy|vocoderd-idle"'
    tests = []
    for rule in load_adapter_rules(root):
        series = re.match(r"(\w+)", rule["seriesQuery"]).group(1)
        query = (rule["metricsQuery"].replace("<<.Series>>", series)
                 .replace("<<.LabelMatchers>>", matchers).replace("<<.GroupBy>>", "pod"))
        want = {"vocoder_queue_wait_seconds_p95": (0.0975, 0.0),
                "vocoder_inflight_streams": (3.0, 0.0)}.get(rule["name"]["as"])
        if want is None:
            problems.append(f"adapter rule {rule['name']['as']}: no promtool case in k8s_test.py")
            continue
        tests.append({"expr": query, "eval_time": "10m", "exp_samples": [
            {"labels": '{pod="vocoderd-busy"}', "value": want[0]},
            {"labels": '{pod="vocoderd-idle"}', "value": want[1]}]})

    def s(name, pod, values, le=None):
        labels = f'namespace="vocoderd",pod="{pod}"' + (f',le="{le}"' if le else "")
        return {"series": f"{name}{{{labels}}}", "values": values}
    h = "vocoder_queue_wait_seconds_bucket"
    # Busy: 60 jobs a minute, all waiting 50..100 ms -> p95 = 0.05 + 0.05 * 0.95.
    # Idle: served before, nothing for the last ten minutes -> NaN -> 0.
    series = [s(h, "vocoderd-busy", "0+0x10", "0.05"), s(h, "vocoderd-busy", "0+60x10", "0.1"),
              s(h, "vocoderd-busy", "0+60x10", "+Inf"),
              s(h, "vocoderd-idle", "5+0x10", "0.05"), s(h, "vocoderd-idle", "7+0x10", "0.1"),
              s(h, "vocoderd-idle", "7+0x10", "+Inf"),
              s("vocoder_inflight_streams", "vocoderd-busy", "3x10"),
              s("vocoder_inflight_streams", "vocoderd-idle", "0x10")]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "adapter_test.yml")
        with open(path, "w") as f:
            yaml.safe_dump({"rule_files": [], "evaluation_interval": "1m", "tests": [
                {"interval": "1m", "input_series": series, "promql_expr_test": tests}]}, f)
        r = subprocess.run([promtool, "test", "rules", path], capture_output=True, text=True)
    if r.returncode != 0:
        problems.append(f"prometheus-adapter queries under promtool: {r.stdout}{r.stderr}")
    else:
        notes.append(f"promtool: {len(tests)} prometheus-adapter queries give the busy pod's "
                     "value and 0 for the idle pod")


# --- self-check ----------------------------------------------------------------------

def mutate(objects, kind, name, fn):
    out = copy.deepcopy(objects)
    fn(find(out, kind, name))
    return out


def self_check(rendered, facts, root, problems, notes):
    """Broken copies must be caught, each by the problem it breaks."""
    gpu, tls = rendered.get("overlays/gpu"), rendered.get("overlays/gpu-tls")
    if not gpu or not tls:
        problems.append("self-check: needs the gpu and gpu-tls renders")
        return
    def generated(objects, prefix):  # the hashed name of a generated ConfigMap
        return next(c["metadata"]["name"] for c in objects
                    if c["kind"] == "ConfigMap" and c["metadata"]["name"].startswith(prefix))
    cfg_name, tls_cfg = generated(gpu, "vocoderd-config-"), generated(tls, "vocoderd-config-")

    def srv(dep):
        return next(c for c in pod_spec(dep)["containers"] if c["name"] == "vocoderd")

    def set_tgps(d):
        pod_spec(d)["terminationGracePeriodSeconds"] = 60

    def cases():
        yield ("grace period below preStop + drain grace", "terminationGracePeriodSeconds",
               mutate(gpu, "Deployment", "vocoderd", set_tgps))
        yield ("an unknown VOCODERD_ variable", "VOCODERD_MAX_BATCH",
               mutate(gpu, "ConfigMap", cfg_name,
                      lambda c: c["data"].update(VOCODERD_MAX_BATCH="8")))
        if facts.binary:  # the source fallback does not validate values
            yield ("a value vocoderd rejects", "rejects the pod's configuration",
                   mutate(gpu, "ConfigMap", cfg_name,
                          lambda c: c["data"].update(VOCODERD_GROUPING="speaker")))
        yield ("drain grace shorter than the longest utterance", "longest utterance",
               mutate(gpu, "ConfigMap", cfg_name,
                      lambda c: c["data"].update(VOCODERD_MAX_TOKENS_PER_UTTERANCE="7500")))
        yield ("a readiness probe on the wrong port", "readinessProbe probes port 50052",
               mutate(gpu, "Deployment", "vocoderd",
                      lambda d: srv(d)["readinessProbe"]["grpc"].update(port=50052)))
        yield ("a listen port the probes do not follow", "probes port 50051",
               mutate(gpu, "ConfigMap", cfg_name,
                      lambda c: c["data"].update(VOCODERD_LISTEN="0.0.0.0:7000")))
        yield ("readiness on the liveness service", "checks health service ''",
               mutate(gpu, "Deployment", "vocoderd",
                      lambda d: srv(d)["readinessProbe"]["grpc"].update(service="")))
        yield ("no GPU toleration", "toleration",
               mutate(gpu, "Deployment", "vocoderd", lambda d: pod_spec(d).pop("tolerations")))
        yield ("a CPU export for a GPU server", "EXPORT_DEVICE",
               mutate(gpu, "ConfigMap", generated(gpu, "vocoderd-export-"),
                      lambda c: c["data"].update(EXPORT_DEVICE="cpu")))
        yield ("a surge rollout", "maxSurge 0",
               mutate(gpu, "Deployment", "vocoderd",
                      lambda d: d["spec"]["strategy"]["rollingUpdate"].update(maxSurge=1)))
        yield ("an HPA metric no adapter rule serves", "no prometheus-adapter rule",
               mutate(gpu, "HorizontalPodAutoscaler", "vocoderd",
                      lambda h: h["spec"]["metrics"][0]["pods"]["metric"].update(
                          name="vocoder_gpu_util")))
        yield ("a stale dashboard", "dashboard ConfigMap differs",
               mutate(gpu, "ConfigMap", "vocoderd-grafana-dashboard",
                      lambda c: c["data"].update({"vocoderd-dashboard.json": "{}"})))
        yield ("a writable root filesystem", "readOnlyRootFilesystem",
               mutate(gpu, "Deployment", "vocoderd",
                      lambda d: srv(d)["securityContext"].update(readOnlyRootFilesystem=False)))
        yield ("service links on", "enableServiceLinks",
               mutate(gpu, "Deployment", "vocoderd",
                      lambda d: pod_spec(d).update(enableServiceLinks=True)))

        def plain_probes(d):
            srv(d)["readinessProbe"] = {"grpc": {"port": 50051, "service": "vocoder.v1.Vocoder"}}
        yield ("TLS with the kubelet's plaintext gRPC probe", "TLS on",
               mutate(tls, "Deployment", "vocoderd", plain_probes))
        yield ("TLS files on no Secret", "not on a mounted Secret",
               mutate(tls, "ConfigMap", tls_cfg,
                      lambda c: c["data"].update(VOCODERD_TLS_CERT="/models/tls.crt")))

    caught = 0
    for what, expect, broken in cases():
        found = check_target("broken", broken, facts, root)
        if not any(expect in p for p in found):
            problems.append(f"self-check: {what} went unnoticed (wanted {expect!r}; got {found})")
        else:
            caught += 1
    # And the schema check: a typo in a field name.
    broken = mutate(gpu, "Deployment", "vocoderd",
                    lambda d: srv(d)["readinessProbe"]["grpc"].update(servce="x"))
    schema_problems = []
    validate_schemas({"broken": [find(broken, "Deployment", "vocoderd")]}, [], schema_problems, [])
    if not any("servce" in p for p in schema_problems):
        problems.append(f"self-check: a misspelt probe field passed the schema: {schema_problems}")
    else:
        caught += 1
    # And the renderer: a JSON patch whose test operation fails.
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(K8S, os.path.join(tmp, "k8s"))
        patch = os.path.join(tmp, "k8s", "overlays", "gpu", "deployment-gpu.yaml")
        with open(patch) as f:
            text = f.read()
        with open(patch, "w") as f:
            f.write(text.replace("value: export-model", "value: exporter", 1))
        try:
            kustomize_lite.render(os.path.join(tmp, "k8s", "overlays", "gpu"))
            problems.append("self-check: kustomize_lite applied a patch whose test failed")
        except ValueError:
            caught += 1
    notes.append(f"self-check: {caught} deliberately broken variants caught")


def main(argv):
    global K8S
    if len(argv) not in (1, 2):
        print(__doc__, file=sys.stderr)
        return 2
    root = os.path.abspath(argv[0])
    vocoderd = argv[1] if len(argv) > 1 else None
    K8S = os.path.join(root, "deploy", "k8s")
    problems, notes = [], []
    facts = ServerFacts(root, vocoderd)
    notes.append(f"server: {len(facts.env_vars)} VOCODERD_* variables (from "
                 f"{'vocoderd --help' if vocoderd else 'config/config.cc'}), readiness service "
                 f"{facts.readiness_service!r}, shutdown {facts.shutdown_s} s after the drain")
    r = subprocess.run([sys.executable, os.path.join(K8S, "generate"), "--check"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        problems.append(r.stderr.strip())
    rendered = render_all(problems, notes)
    extra = [("components/tls/certificate.example.yaml", o) for o in kustomize_lite._load_yaml_docs(
        os.path.join(K8S, "components", "tls", "certificate.example.yaml"))]
    validate_schemas(rendered, extra, problems, notes)
    for target, objects in rendered.items():
        found = check_target(target, objects, facts, root)
        problems.extend(found)
        if not found:
            notes.append(f"{target}: {len(objects)} objects consistent with the server")
    check_job_images(rendered, problems)
    adapter_promtool(root, problems, notes)
    self_check(rendered, facts, root, problems, notes)
    for n in notes:
        print(f"ok: {n}")
    for p in problems:
        print(f"FAIL: {p}")
    print(f"k8s_test: {f'FAILED, {len(problems)} problems' if problems else 'passed'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
