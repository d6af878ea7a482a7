"""File formats of an exported model directory (docs/model-format.md):
tensor bags, the fixed noise buffers, checkpoints in the released key layout,
and manifest hashing."""

import hashlib
import json
import os

import torch
from torch import nn

FORMAT = "vocoderd-s3gen/1"
NOISE_SEED = 1986  # fixed, independent of --seed: noise positions mean the same in every export
FLOW_NOISE_FRAMES = 15000
HIFT_NOISE_SAMPLES = 240000


class TensorBag(nn.Module):
    """Named tensors as registered buffers of a scripted module, so C++ reads
    them with torch::jit::load(path).named_buffers() and LibTorch alone."""

    def __init__(self, tensors):
        super().__init__()
        for name, tensor in tensors.items():
            self.register_buffer(name, tensor.detach().cpu().contiguous())

    def forward(self) -> int:
        return 0


def save_bag(path, tensors):
    """Writes `tensors` (name -> tensor) as a scripted TensorBag."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    torch.jit.script(TensorBag(tensors)).save(path)


def load_bag(path):
    """Reads a tensor bag back as a dict (the way the C++ runner does)."""
    return {k: v.clone() for k, v in torch.jit.load(path, map_location="cpu").named_buffers()}


def noise_buffers():
    """flow_noise (80, 15000) and hift_noise (9, 240000), standard normal from NOISE_SEED."""
    g = torch.Generator().manual_seed(NOISE_SEED)
    return {"flow_noise": torch.randn(80, FLOW_NOISE_FRAMES, generator=g),
            "hift_noise": torch.randn(9, HIFT_NOISE_SAMPLES, generator=g)}


def sha256_file(path):
    """Hex sha256 of a file, streamed (checkpoints are ~1 GB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def hash_tree(root):
    """sha256 of every file under root except manifest.json, keyed by '/'-joined relative path."""
    files = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            if rel != "manifest.json":
                files[rel] = sha256_file(path)
    return dict(sorted(files.items()))


def write_manifest(root, manifest):
    """Adds the `files` hashes and writes manifest.json last."""
    manifest = dict(manifest, files=hash_tree(root))
    with open(os.path.join(root, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    return manifest


def verify_manifest(root):
    """Returns the manifest after checking its format and every file hash
    (no missing, extra or changed files); raises ValueError otherwise."""
    with open(os.path.join(root, "manifest.json")) as f:
        manifest = json.load(f)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"format is {manifest.get('format')!r}, want {FORMAT!r}")
    actual = hash_tree(root)
    if actual != manifest["files"]:
        bad = sorted(set(actual.items()) ^ set(manifest["files"].items()))
        raise ValueError(f"files differ from the manifest: {[name for name, _ in bad]}")
    return manifest


def released_state_dict(model):
    """The state dict in the layout of the released s3gen checkpoints: keys
    prefixed flow./mel2wav., weight norms as parametrizations.weight.original0/1
    (what an unfolded model's state_dict() is on torch >= 2.1)."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
