#!/usr/bin/env python3
"""Writes a weightless model directory for the simulated accelerator
(docs/simulator.md): a manifest with the full-size S3Gen's geometry and
synthetic voices, and no traced modules. vocoderd reads only the manifest and
the voices when --device is sim:...; LoadVocoder on cpu/cuda refuses it (the
manifest lists no weights).

    tools/make_sim_model.py --out models/sim --prompt-tokens 250 --voices 4
    tools/make_sim_model.py --out models/sim-turbo --variant turbo   # Chatterbox Turbo

Voices are random token ids, log-mel-like prompt_feat and a random x-vector,
as the export tool's synthetic voices; 250 prompt tokens = 10 s of reference,
the full export's longest voice and the load that matters on a GPU.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from s3gen import artifacts  # noqa: E402


def reference_sampler(variant):
    """The variant's sampler fields, as tools/export_s3gen.py writes them."""
    return {"standard": {"n_timesteps": 10, "cfg_rate": 0.7, "t_schedule": "cosine",
                         "estimator_inputs": ["x", "mask", "mu", "t", "spks", "cond"]},
            "turbo": {"n_timesteps": 2, "cfg_rate": 0.0, "t_schedule": "linear",
                      "estimator_inputs": ["x", "mask", "mu", "t", "spks", "cond", "r"]}}[variant]


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--prompt-tokens", type=int, default=250, help="per voice, at most 250")
    ap.add_argument("--voices", type=int, default=4, help="voices voice0..voiceN-1")
    ap.add_argument("--size", default="full", help="the manifest's size label")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--variant", choices=["standard", "turbo"], default="standard",
                    help="the model the manifest describes: standard (10 cosine steps, CFG) or "
                         "turbo (2 linear steps, no CFG); the simulator charges its rows and "
                         "steps accordingly")
    a = ap.parse_args(argv)
    if not 1 <= a.prompt_tokens <= 250:
        ap.error("--prompt-tokens must be in 1..250")
    g = torch.Generator().manual_seed(a.seed)
    names = []
    for i in range(a.voices):
        p = a.prompt_tokens
        name = f"voice{i}"
        artifacts.save_bag(os.path.join(a.out, "voices", name + ".pt"), {
            "prompt_token": torch.randint(0, 6561, (p,), generator=g),
            "prompt_feat": (torch.randn(2 * p, 80, generator=g) * 2 - 6).clamp(-11.5, 4.0),
            "embedding": torch.randn(192, generator=g)})
        names.append(name)
    manifest = {
        "format": artifacts.FORMAT, "size": a.size, "source": "sim-voices-only",
        "device": "cuda",
        "dtypes": {"encoder": "bfloat16", "estimator": "bfloat16", "hift": "float32"},
        "sample_rate": 24000, "samples_per_frame": 480, "frames_per_token": 2,
        "token_vocab": 6561, "mel_bins": 80, "spk_dim": 192, "harmonics": 9,
        "variant": a.variant, **reference_sampler(a.variant), "lookahead_frames": 6,
        "max_positions": 5000, "max_row_tokens": 2500,
        "flow_noise_frames": artifacts.FLOW_NOISE_FRAMES,
        "hift_noise_samples": artifacts.HIFT_NOISE_SAMPLES,
        "voices": [f"voices/{n}.pt" for n in names], "golden": None,
        "note": "weightless: for vocoderd --device sim:... only (docs/simulator.md)",
    }
    artifacts.write_manifest(a.out, manifest)
    print(f"wrote {a.out}: {a.variant} model, {a.voices} voices of {a.prompt_tokens} prompt "
          "tokens, no weights")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
