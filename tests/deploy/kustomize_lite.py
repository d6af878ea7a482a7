#!/usr/bin/env python3
"""A small kustomize, enough for deploy/k8s/, for machines without kubectl.

    kustomize_lite.py DIR     print what `kubectl kustomize DIR` prints (as a set
                              of objects; the order and formatting may differ)

It implements the kustomize features deploy/k8s uses, with kustomize's
semantics, and refuses everything else, so that a manifest change that needs
more fails here instead of rendering something different:

  - resources (files, and directories holding a kustomization) and
    components (kind: Component; applied to the accumulated resources)
  - configMapGenerator: literals and files, behavior create | merge | replace,
    options.labels / annotations / disableNameSuffixHash; the content-hash
    name suffix, added once at the top level as kustomize does, and the
    references to generated ConfigMaps in pod specs updated to match
  - patches: JSON 6902 (add, remove, replace, test) with a kind/name target
  - namespace, labels (metadata only), images (newName, newTag, digest)

k8s_test.py checks that this and `kubectl kustomize` agree wherever kubectl
exists.
"""
import copy
import hashlib
import json
import os
import sys

import yaml

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_FIELDS = {"apiVersion", "kind", "resources", "components", "configMapGenerator",
                    "patches", "namespace", "labels", "images"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                  "PersistentVolume", "StorageClass", "PriorityClass", "APIService",
                  "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
                  "IngressClass", "RuntimeClass"}
CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")


class Unsupported(Exception):
    """The kustomization uses something this renderer does not implement."""


class Generated:
    """A generated ConfigMap's bookkeeping: its name before the hash suffix."""

    def __init__(self, hashed):
        self.hashed = hashed


def _load_yaml_docs(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def _kustomization_path(directory):
    for name in KUSTOMIZATION_FILES:
        path = os.path.join(directory, name)
        if os.path.exists(path):
            return path
    raise Unsupported(f"{directory}: no kustomization.yaml")


def _key(obj):
    meta = obj.get("metadata", {})
    return (obj.get("kind"), meta.get("namespace"), meta.get("name"))


# --- configMapGenerator ------------------------------------------------------

def _literal(entry, where):
    key, sep, value = entry.partition("=")
    if not sep or not key:
        raise Unsupported(f"{where}: literal {entry!r} is not KEY=VALUE")
    if value[:1] in ("'", '"'):
        raise Unsupported(f"{where}: quoted literal {entry!r} "
                          "(kustomize unquotes; not implemented)")
    return key, value


def _file_entry(entry, directory, where):
    key, sep, path = entry.partition("=")
    if not sep:
        key, path = os.path.basename(entry), entry
    full = os.path.normpath(os.path.join(directory, path))
    # kustomize's default load restrictor: files only from inside the root.
    if os.path.relpath(full, directory).startswith(".."):
        raise Unsupported(f"{where}: file {path} is outside {directory} (kustomize refuses it)")
    with open(full, "rb") as f:
        raw = f.read()
    try:
        return key, raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Unsupported(f"{where}: {path} is binary (binaryData not implemented)") from None


def _generate_configmaps(kust, directory, objects, meta):
    for gen in kust.get("configMapGenerator") or []:
        where = f"{directory}: configMapGenerator {gen.get('name')}"
        unknown = set(gen) - {"name", "literals", "files", "behavior", "options"}
        if unknown:
            raise Unsupported(f"{where}: {sorted(unknown)}")
        data = {}
        for entry in gen.get("literals") or []:
            k, v = _literal(entry, where)
            data[k] = v
        for entry in gen.get("files") or []:
            k, v = _file_entry(entry, directory, where)
            data[k] = v
        options = gen.get("options") or {}
        if set(options) - {"labels", "annotations", "disableNameSuffixHash"}:
            raise Unsupported(f"{where}: options {sorted(options)}")
        behavior = gen.get("behavior", "create")
        name = gen["name"]
        existing = [o for o in objects if o["kind"] == "ConfigMap"
                    and o["metadata"]["name"] == name]
        if behavior == "create":
            if existing:
                raise Unsupported(f"{where}: already exists (use behavior: merge)")
            cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}
            if data:
                cm["data"] = data
            for field in ("labels", "annotations"):
                if options.get(field):
                    cm["metadata"][field] = dict(options[field])
            objects.append(cm)
            meta[id(cm)] = Generated(hashed=not options.get("disableNameSuffixHash", False))
        elif behavior in ("merge", "replace"):
            if len(existing) != 1:
                raise Unsupported(f"{where}: behavior {behavior} needs exactly one {name}")
            cm = existing[0]
            if behavior == "replace":
                cm["data"] = data
            else:
                cm.setdefault("data", {}).update(data)
            for field in ("labels", "annotations"):
                if options.get(field):
                    cm["metadata"].setdefault(field, {}).update(options[field])
            if "disableNameSuffixHash" in options and id(cm) in meta:
                meta[id(cm)].hashed = not options["disableNameSuffixHash"]
        else:
            raise Unsupported(f"{where}: behavior {behavior}")


def kustomize_hash(cm):
    """kustomize's ConfigMap name suffix (api/hasher). Its encodeConfigMap
    looks the name up as one path element "metadata/name", finds nothing and
    hashes "": the suffix depends on the data only."""
    encoded = json.dumps({"kind": "ConfigMap", "name": "", "data": cm.get("data", "")},
                         sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # Go's json.Marshal escapes these; Python's does not.
    for ch, esc in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        encoded = encoded.replace(ch, esc)
    digest = hashlib.sha256(encoded.encode("utf-8")).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


# --- patches -----------------------------------------------------------------

def _pointer(path):
    if path == "":
        return []
    if not path.startswith("/"):
        raise Unsupported(f"JSON pointer {path!r} must start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _resolve(doc, parts, path):
    node = doc
    for p in parts:
        if isinstance(node, list):
            node = node[int(p)]
        elif isinstance(node, dict) and p in node:
            node = node[p]
        else:
            raise KeyError(f"path {path} does not exist")
    return node


def apply_json6902(doc, ops, where):
    """Applies RFC 6902 add/remove/replace/test operations in place."""
    for op in ops:
        kind, path = op.get("op"), op.get("path")
        parts = _pointer(path)
        if not parts:
            raise Unsupported(f"{where}: operation on the whole document")
        parent = _resolve(doc, parts[:-1], path)
        last = parts[-1]
        try:
            if kind == "test":
                if _resolve(doc, parts, path) != op["value"]:
                    raise ValueError(f"{where}: test failed at {path}: "
                                     f"{_resolve(doc, parts, path)!r} != {op['value']!r}")
            elif kind == "add":
                value = copy.deepcopy(op["value"])
                if isinstance(parent, list):
                    parent.insert(len(parent) if last == "-" else int(last), value)
                else:
                    parent[last] = value
            elif kind == "replace":
                _resolve(doc, parts, path)  # must exist
                parent[int(last) if isinstance(parent, list) else last] = \
                    copy.deepcopy(op["value"])
            elif kind == "remove":
                _resolve(doc, parts, path)
                del parent[int(last) if isinstance(parent, list) else last]
            else:
                raise Unsupported(f"{where}: JSON 6902 op {kind!r}")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"{where}: {kind} {path}: {e}") from None


def _apply_patches(kust, directory, objects):
    for patch in kust.get("patches") or []:
        where = f"{directory}: patch {patch.get('path', '(inline)')}"
        if set(patch) - {"path", "patch", "target"}:
            raise Unsupported(f"{where}: {sorted(patch)}")
        if "path" in patch:
            with open(os.path.join(directory, patch["path"]), encoding="utf-8") as f:
                body = yaml.safe_load(f)
        else:
            body = yaml.safe_load(patch["patch"])
        if not isinstance(body, list):
            raise Unsupported(f"{where}: strategic-merge patches are not implemented; "
                              "write a JSON 6902 patch (a list of operations)")
        target = patch.get("target") or {}
        if not target or set(target) - {"kind", "name"}:
            raise Unsupported(f"{where}: target must name kind and/or name only; was {target}")
        matched = [o for o in objects
                   if target.get("kind", o.get("kind")) == o.get("kind")
                   and target.get("name", o["metadata"].get("name")) == o["metadata"].get("name")]
        if not matched:
            raise ValueError(f"{where}: target {target} matches nothing")
        for obj in matched:
            apply_json6902(obj, body, where)


# --- transformers ------------------------------------------------------------

def _set_namespace(objects, namespace):
    for obj in objects:
        if obj["kind"] == "Namespace":
            # kustomize's namespace field specs include a Namespace's own name.
            obj["metadata"]["name"] = namespace
        elif obj["kind"] not in CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = namespace


def _add_labels(kust, directory, objects):
    for entry in kust.get("labels") or []:
        if set(entry) - {"pairs", "includeSelectors", "includeTemplates"} or \
                entry.get("includeSelectors") or entry.get("includeTemplates"):
            raise Unsupported(f"{directory}: labels supports pairs on metadata only")
        for obj in objects:
            obj["metadata"].setdefault("labels", {}).update(entry["pairs"])


def _split_image(image):
    """"repo/name:tag@digest" -> (name, tag, digest)."""
    rest, _, digest = image.partition("@")
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        return rest[:colon], rest[colon + 1:], digest
    return rest, "", digest


def _walk_containers(node, visit):
    if isinstance(node, dict):
        for key, value in node.items():
            if key in CONTAINER_LISTS and isinstance(value, list):
                for c in value:
                    if isinstance(c, dict):
                        visit(c)
            _walk_containers(value, visit)
    elif isinstance(node, list):
        for item in node:
            _walk_containers(item, visit)


def _set_images(kust, directory, objects):
    for spec in kust.get("images") or []:
        if set(spec) - {"name", "newName", "newTag", "digest"}:
            raise Unsupported(f"{directory}: images {sorted(spec)}")

        def visit(container, spec=spec):
            if "image" not in container:
                return
            name, tag, digest = _split_image(container["image"])
            if name != spec["name"]:
                return
            name = spec.get("newName", name)
            if "digest" in spec:
                container["image"] = f"{name}@{spec['digest']}"
                return
            if "newTag" in spec:
                tag, digest = str(spec["newTag"]), ""
            container["image"] = name + (f":{tag}" if tag else "") + \
                (f"@{digest}" if digest else "")

        for obj in objects:
            _walk_containers(obj, visit)


def _fix_configmap_refs(objects, renamed):
    """Points pod-spec references at the hashed ConfigMap names.
    renamed: {(namespace, old name): new name}."""
    def rename(namespace, ref):
        if isinstance(ref, dict) and (namespace, ref.get("name")) in renamed:
            ref["name"] = renamed[(namespace, ref["name"])]

    def walk(node, namespace):
        if isinstance(node, dict):
            if "volumes" in node and isinstance(node["volumes"], list):
                for v in node["volumes"]:
                    rename(namespace, v.get("configMap"))
                    for src in (v.get("projected") or {}).get("sources") or []:
                        rename(namespace, src.get("configMap"))
            for key in CONTAINER_LISTS:
                for c in node.get(key) or []:
                    for e in c.get("envFrom") or []:
                        rename(namespace, e.get("configMapRef"))
                    for e in c.get("env") or []:
                        rename(namespace, (e.get("valueFrom") or {}).get("configMapKeyRef"))
            for value in node.values():
                walk(value, namespace)
        elif isinstance(node, list):
            for item in node:
                walk(item, namespace)

    for obj in objects:
        walk(obj.get("spec"), obj["metadata"].get("namespace"))


# --- accumulation ------------------------------------------------------------

def _accumulate(directory, objects, meta, component=False):
    """kustomize's accumulateTarget: resources, components, generators, then
    transformers (patches, namespace, labels, images in kustomize's order),
    all applied to `objects` (a component's to its parent's)."""
    directory = os.path.abspath(directory)
    path = _kustomization_path(directory)
    kust = yaml.safe_load(open(path, encoding="utf-8")) or {}
    unknown = set(kust) - SUPPORTED_FIELDS
    if unknown:
        raise Unsupported(f"{path}: fields {sorted(unknown)} are not implemented")
    want_kind = "Component" if component else "Kustomization"
    if kust.get("kind", "Kustomization") != want_kind:
        raise Unsupported(f"{path}: kind {kust.get('kind')} where {want_kind} was expected")

    for entry in kust.get("resources") or []:
        full = os.path.normpath(os.path.join(directory, entry))
        if os.path.isdir(full):
            sub, sub_meta = [], {}
            _accumulate(full, sub, sub_meta)
            objects.extend(sub)
            meta.update(sub_meta)
        else:
            if os.path.relpath(full, directory).startswith(".."):
                raise Unsupported(f"{path}: resource file {entry} is outside the kustomization")
            objects.extend(_load_yaml_docs(full))
    for entry in kust.get("components") or []:
        _accumulate(os.path.join(directory, entry), objects, meta, component=True)

    _generate_configmaps(kust, directory, objects, meta)
    _apply_patches(kust, directory, objects)
    if kust.get("namespace"):
        _set_namespace(objects, kust["namespace"])
    _add_labels(kust, directory, objects)
    _set_images(kust, directory, objects)
    seen = set()
    for obj in objects:
        if _key(obj) in seen:
            raise ValueError(f"{path}: duplicate object {_key(obj)}")
        seen.add(_key(obj))


def render(directory):
    """The objects `kubectl kustomize directory` would print."""
    objects, meta = [], {}
    _accumulate(directory, objects, meta)
    # Hash suffixes and the references to them: once, at the top level.
    renamed = {}
    for obj in objects:
        info = meta.get(id(obj))
        if info is not None and info.hashed:
            old = obj["metadata"]["name"]
            obj["metadata"]["name"] = f"{old}-{kustomize_hash(obj)}"
            renamed[(obj["metadata"].get("namespace"), old)] = obj["metadata"]["name"]
    _fix_configmap_refs(objects, renamed)
    return objects


def main(argv):
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    yaml.safe_dump_all(render(argv[0]), sys.stdout, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
