#!/usr/bin/env python3
"""Exports Chatterbox's S3Gen vocoder (flow + HiFT) for vocoderd's C++ runner.

Writes the model directory described in docs/model-format.md: four traced
TorchScript modules (encoder, estimator, hift_source, hift_decode), the fixed
noise buffers, voices, golden reference cases and manifest.json. The model is
built from the official chatterbox-tts 0.1.7 classes, either randomly
initialised (tests, CI) or loaded from a released s3gen checkpoint. Two
variants: standard (Chatterbox's S3Gen, 10 steps with CFG) and turbo
(Chatterbox Turbo's meanflow decoder, 2 steps, an extra end-time input r, no CFG).

  tools/export_s3gen.py --random-init --seed 0 --size tiny --out /tmp/m
  tools/export_s3gen.py --checkpoint s3gen.safetensors --conds conds.pt --out models/s3gen
  tools/export_s3gen.py --variant turbo --checkpoint s3gen_meanflow.safetensors \
      --conds conds.pt --out models/s3gen-turbo

Exit codes: 0 ok; 1 a self-check failed; 2 bad arguments or unreadable/mismatched inputs.
"""

import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

try:
    import safetensors.torch
    import torch
    for _needed in ("chatterbox", "diffusers", "einops", "scipy"):  # imported later, lazily
        if importlib.util.find_spec(_needed) is None:
            raise ImportError(f"No module named {_needed!r}")
except ImportError as missing:
    _venv = os.path.join(ROOT, ".venv")
    if sys.prefix != _venv and os.path.exists(os.path.join(_venv, "bin", "python")) \
            and not os.environ.get("VOCODERD_EXPORT_REEXEC"):
        os.environ["VOCODERD_EXPORT_REEXEC"] = "1"
        _python = os.path.join(_venv, "bin", "python")
        os.execv(_python, [_python, os.path.abspath(__file__), *sys.argv[1:]])
    sys.exit(f"export_s3gen: {missing}. Run scripts/deps, then use {_venv}/bin/python.")

import argparse
import json
import shutil
import time
import warnings

from s3gen import artifacts, reference, wrappers
from s3gen import model as s3model

VOICE_SEED = 7  # synthetic voices, golden tokens and phases: fixed, so exports of equal weights agree
SYNTHETIC_VOICES = {"tiny": {"alice": 50, "bob": 37}, "full": {"alice": 250, "bob": 180}}
MAX_PROMPT_TOKENS = 250
GOLDEN_CASES = [  # voice: index into the export's voices
    {"name": "short_final", "voice": 0, "tokens_len": 20, "finalize": True,
     "context_tokens": 0, "noise_offset": 0},
    {"name": "mid_stream", "voice": 1, "tokens_len": 33, "finalize": False,
     "context_tokens": 0, "noise_offset": 0},
    {"name": "long_context", "voice": 0, "tokens_len": 50, "finalize": True,
     "context_tokens": 10, "noise_offset": 60},
    {"name": "stream_context", "voice": 1, "tokens_len": 41, "finalize": False,
     "context_tokens": 8, "noise_offset": 36},
]
SELF_CHECK_MAX_REL_L2 = 1e-4  # fp32; bf16 exports only report the error


class ExportError(Exception):
    """A problem with the user's inputs; main() prints it and exits with 2."""


def log(msg):
    """Progress line on stdout."""
    print(f"[export] {msg}", flush=True)


def parse_args(argv):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="See docs/model-format.md for the directory layout and the reference algorithm.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--random-init", action="store_true",
                     help="randomly initialise the official modules (seeded by --seed)")
    src.add_argument("--checkpoint", metavar="PATH",
                     help="released s3gen.safetensors or s3gen.pt (--variant turbo: "
                          "s3gen_meanflow.safetensors); flow.* and mel2wav.* are loaded "
                          "strictly, tokenizer.* and speaker_encoder.* ignored")
    p.add_argument("--variant", choices=list(s3model.VARIANTS), default="standard",
                   help="standard = S3Gen (10 cosine steps, CFG 0.7); turbo = Chatterbox "
                        "Turbo's meanflow decoder (2 linear steps, end-time input r, no CFG) "
                        "(default standard)")
    p.add_argument("--seed", type=int, default=0, help="torch seed of --random-init (default 0)")
    p.add_argument("--size", choices=sorted(s3model.SIZES), default="full",
                   help="full = the released architecture; tiny = same classes, small widths "
                        "(default full)")
    p.add_argument("--conds", metavar="PATH",
                   help="released conds.pt; its 'gen' reference becomes voices/default.pt")
    p.add_argument("--golden", action=argparse.BooleanOptionalAction, default=None,
                   help="write golden cases and self-check them (default: on for "
                        "--random-init, off for --checkpoint; --no-golden skips them, e.g. "
                        "for a full-size benchmark export on CPU, where they take minutes)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="trace device; the export runs only there. cuda also casts encoder "
                        "and estimator to bf16 (default cpu)")
    p.add_argument("--out", required=True, metavar="DIR", help="output model directory")
    p.add_argument("--force", action="store_true",
                   help="replace an existing export in --out")
    args = p.parse_args(argv)
    if args.seed != 0 and not args.random_init:
        p.error("--seed only applies to --random-init")
    return args


def check_out_dir(out, force):
    """Refuses to overwrite an export without --force, or a non-export directory at all."""
    if not os.path.exists(out):
        return
    if not os.path.isdir(out):
        raise ExportError(f"--out {out} exists and is not a directory")
    if os.path.exists(os.path.join(out, "manifest.json")):
        if not force:
            raise ExportError(f"--out {out} already holds an export (manifest.json); "
                              "pass --force to replace it")
    elif os.listdir(out):
        raise ExportError(f"--out {out} is a non-empty directory without manifest.json; "
                          "refusing to write into it")


def read_state_dict(path):
    """Loads a checkpoint file as name -> tensor, turning any read failure into ExportError."""
    if not os.path.isfile(path):
        raise ExportError(f"checkpoint {path} does not exist")
    try:
        if path.endswith(".safetensors"):
            state = safetensors.torch.load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any parse failure of a user file is a user error
        raise ExportError(f"cannot read checkpoint {path} ({type(e).__name__}: {e}); "
                          "is the file complete?") from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ExportError(f"checkpoint {path} is not a flat name -> tensor state dict")
    return state


def _listing(keys):
    """'N: first ten, ...' for error messages about key sets."""
    shown = ", ".join(keys[:10])
    return f"{len(keys)}: {shown}" + (", ..." if len(keys) > 10 else "")


def _parametrized_name(key):
    """Maps old-style weight-norm keys (weight_g/weight_v, torch.nn.utils.weight_norm)
    to parametrizations.weight.original0/1, as torch's own load hook does."""
    for old, new in ((".weight_g", ".parametrizations.weight.original0"),
                     (".weight_v", ".parametrizations.weight.original1")):
        if key.endswith(old):
            return key[:-len(old)] + new
    return key


MEANFLOW_KEY = "flow.decoder.estimator.time_embed_mixer.weight"  # only turbo checkpoints


def load_checkpoint(model, size, state, path, variant="standard"):
    """Loads flow.* and mel2wav.* of `state` strictly (into the weight-norm
    parametrized model); names missing, unexpected and mis-shaped keys in the
    error, and the other --variant when the meanflow key says it is that one."""
    ignored = [k for k in state if k.startswith(("tokenizer.", "speaker_encoder."))]
    state = {_parametrized_name(k): v for k, v in state.items() if k not in set(ignored)}
    want = model.state_dict()
    missing = sorted(set(want) - set(state))
    unexpected = sorted(set(state) - set(want))
    mis_shaped = sorted(f"{k} {tuple(state[k].shape)} != {tuple(want[k].shape)}"
                        for k in set(want) & set(state) if state[k].shape != want[k].shape)
    problems = []
    if missing:
        problems.append(f"missing keys {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_listing(unexpected)}")
    if mis_shaped:
        problems.append(f"shape mismatches {_listing(mis_shaped)} (wrong --size?)")
    if problems:
        hint = ""
        if MEANFLOW_KEY in state and MEANFLOW_KEY not in want:
            hint = (f"; it has {MEANFLOW_KEY}, so it is a Chatterbox Turbo (meanflow) "
                    "checkpoint: export it with --variant turbo")
        elif MEANFLOW_KEY in want and MEANFLOW_KEY not in state:
            hint = (f"; it lacks {MEANFLOW_KEY}, so it is not a Chatterbox Turbo (meanflow) "
                    "checkpoint: export it with --variant standard (turbo wants "
                    "s3gen_meanflow.safetensors)")
        raise ExportError(f"checkpoint {path} does not fit the --size {size} --variant "
                          f"{variant} S3Gen architecture: " + "; ".join(problems) + hint)
    model.load_state_dict(state, strict=True)
    log(f"loaded {len(state)} flow/mel2wav tensors from {path} (ignored {len(ignored)} "
        "tokenizer/speaker_encoder tensors)")


def count(*modules):
    """Parameter count of the given modules (the manifest's `parameters`)."""
    return sum(p.numel() for m in modules for p in m.parameters())


def synthetic_voices(size):
    """Two made-up voices with different prompt lengths: random ids, prompt_feat
    at log-mel scale (randn*2-6), randn x-vector."""
    g = torch.Generator().manual_seed(VOICE_SEED)
    voices = {}
    for name, p in SYNTHETIC_VOICES[size].items():
        voices[name] = {"prompt_token": torch.randint(0, 6561, (p,), generator=g),
                        "prompt_feat": torch.randn(2 * p, 80, generator=g) * 2 - 6,
                        "embedding": torch.randn(192, generator=g)}
    return voices


def voice_from_conds(path):
    """voices/default from a released conds.pt: its 'gen' dict, cut so that
    prompt_feat has exactly 2P frames (and P <= 250)."""
    try:
        conds = torch.load(path, map_location="cpu", weights_only=True)
        gen = conds["gen"]
        token = gen["prompt_token"].reshape(-1).long()
        feat = gen["prompt_feat"].reshape(-1, 80).float()
        embedding = gen["embedding"].reshape(-1).float()
    except Exception as e:
        raise ExportError(f"cannot read voice from conds {path} ({type(e).__name__}: {e})") from e
    if embedding.numel() != 192:
        raise ExportError(f"conds {path}: embedding has {embedding.numel()} values, want 192")
    p = min(token.numel(), feat.shape[0] // 2, MAX_PROMPT_TOKENS)
    if p == 0:
        raise ExportError(f"conds {path}: empty prompt")
    log(f"conds {path}: prompt {token.numel()} tokens / {feat.shape[0]} frames -> P={p}")
    return {"prompt_token": token[:p].clone(), "prompt_feat": feat[:2 * p].clone(),
            "embedding": embedding}


def trace_checked(name, module, trace_inputs, check_inputs, tol):
    """Traces `module`, then compares the trace with eager on inputs of another
    batch size and length (shapes must stay dynamic); raises if they differ."""
    with torch.no_grad(), warnings.catch_warnings():
        # Upstream code branches on shapes; the check below is what counts.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(module, trace_inputs, check_trace=False)
        want = module(*check_inputs)
        got = traced(*check_inputs)
    want = want if isinstance(want, tuple) else (want,)
    got = got if isinstance(got, tuple) else (got,)
    diff = max(float((a.float() - b.float()).abs().max()) for a, b in zip(want, got))
    shapes = [tuple(t.shape) for t in got]
    log(f"traced {name}: max |traced - eager| = {diff:.3g} at output shapes {shapes}")
    if any(a.shape != b.shape for a, b in zip(want, got)) or not diff <= tol:
        raise RuntimeError(f"traced {name} differs from eager (max abs diff {diff:.3g} > {tol})")
    return traced


def trace_all(model, dev, dtype):
    """Builds and traces the four wrappers; trace and check shapes differ on purpose."""
    g = torch.Generator().manual_seed(0)

    def rand(*shape, dt=dtype):
        return torch.randn(*shape, generator=g).to(dev, dt)

    def enc_inputs(lens):
        tokens = torch.randint(0, 6561, (len(lens), max(lens)), generator=g)
        for i, n in enumerate(lens):
            tokens[i, n:] = 0
        return tokens.to(dev), torch.tensor(lens, device=dev), rand(len(lens), 192)

    def est_inputs(lens):
        n, t = len(lens), max(lens)
        mask = torch.zeros(n, 1, t)
        for i, length in enumerate(lens):
            mask[i, :, :length] = 1
        inputs = (rand(n, 80, t), mask.to(dev, dtype), rand(n, 80, t),
                  torch.rand(n, generator=g).to(dev, dtype), rand(n, 80), rand(n, 80, t))
        if model.flow.decoder.estimator.meanflow:  # r per row, after the six
            inputs += (torch.rand(n, generator=g).to(dev, dtype),)
        return inputs

    def src_inputs(b, f):
        phase = (torch.rand(b, 9, 1, generator=g) * 2 - 1) * torch.pi
        phase[:, 0] = 0
        return rand(b, 80, f, dt=torch.float32) - 5, phase.to(dev), \
            rand(b, 9, 480 * f, dt=torch.float32)

    tol_flow = 1e-4 if dtype == torch.float32 else 5e-2
    mods = {}
    mods["encoder"] = trace_checked("encoder", wrappers.Encoder(model.flow),
                                    enc_inputs([37, 30]), enc_inputs([53, 41, 20]), tol_flow)
    mods["estimator"] = trace_checked("estimator",
                                      wrappers.estimator_for(model.flow.decoder.estimator),
                                      est_inputs([64, 64, 50, 50]),
                                      est_inputs([97, 60, 97, 60, 97, 80]), tol_flow)
    src = wrappers.HiftSource(model.mel2wav)
    mods["hift_source"] = trace_checked("hift_source", src, src_inputs(1, 12),
                                        src_inputs(2, 17), 1e-4)
    dec = wrappers.HiftDecode(model.mel2wav)
    with torch.no_grad():
        dec_trace = [src_inputs(1, 12)[0]]
        dec_trace.append(src(dec_trace[0], *src_inputs(1, 12)[1:]))
        dec_check = [src_inputs(2, 17)[0]]
        dec_check.append(src(dec_check[0], *src_inputs(2, 17)[1:]))
    mods["hift_decode"] = trace_checked("hift_decode", dec, tuple(dec_trace), tuple(dec_check), 1e-4)
    return mods


def make_golden(model, voices, buffers, staging, variant="standard"):
    """Writes golden/<case>.pt and golden/cases.json from the official eager
    modules; returns the cases with their inputs and outputs for the self-check."""
    names = sorted(voices)
    g = torch.Generator().manual_seed(VOICE_SEED + 1)
    cases = []
    for spec in GOLDEN_CASES:
        case = dict(spec, voice=names[spec["voice"] % len(names)],
                    n_timesteps=reference.VARIANTS[variant]["n_timesteps"])
        tokens = torch.randint(0, 6561, (case["tokens_len"],), generator=g)
        phase = (torch.rand(9, generator=g) * 2 - 1) * torch.pi
        phase[0] = 0
        t0 = time.time()
        mel, wav = reference.golden_case(model, voices[case["voice"]], tokens, case,
                                         buffers["flow_noise"], buffers["hift_noise"], phase,
                                         variant)
        artifacts.save_bag(os.path.join(staging, "golden", case["name"] + ".pt"),
                           {"tokens": tokens, "hift_phase": phase, "mel": mel, "wav": wav})
        log(f"golden {case['name']}: voice {case['voice']}, {case['tokens_len']} tokens, "
            f"finalize {case['finalize']}, context {case['context_tokens']}, "
            f"noise_offset {case['noise_offset']} -> mel {tuple(mel.shape)}, "
            f"wav {tuple(wav.shape)} (|wav| max {float(wav.abs().max()):.3f}) "
            f"in {time.time() - t0:.1f}s")
        cases.append(dict(case, tokens=tokens, hift_phase=phase, mel=mel, wav=wav))
    with open(os.path.join(staging, "golden", "cases.json"), "w") as f:
        json.dump({"cases": [{k: c[k] for k in ("name", "voice", "finalize", "context_tokens",
                                                "noise_offset", "n_timesteps", "tokens_len")}
                             for c in cases]}, f, indent=2)
        f.write("\n")
    return cases


def self_check(root, cases, dev, dtype, variant="standard"):
    """Reloads the written files and runs the runner algorithm on the traced
    modules, all cases in one batch; returns the worst relative L2 error."""
    mods = {n: torch.jit.load(os.path.join(root, n + ".pt"), map_location=dev)
            for n in ("encoder", "estimator", "hift_source", "hift_decode")}
    buffers = artifacts.load_bag(os.path.join(root, "buffers.pt"))
    jobs = [dict(c, voice=artifacts.load_bag(os.path.join(root, "voices", c["voice"] + ".pt")))
            for c in cases]
    worst = 0.0
    for case, (mel, wav) in zip(cases, reference.run_traced(mods, buffers, jobs, dev, dtype,
                                                            variant)):
        e_mel, e_wav = reference.rel_l2(mel, case["mel"]), reference.rel_l2(wav, case["wav"])
        log(f"self-check {case['name']}: traced batch of {len(cases)} vs golden: "
            f"rel L2 mel {e_mel:.2e}, wav {e_wav:.2e}")
        worst = max(worst, e_mel, e_wav)
    return worst


def export(args):
    """The whole export into a staging directory, renamed to --out at the end."""
    t_start = time.time()
    timings = {}
    check_out_dir(args.out, args.force)
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ExportError("--device cuda but torch sees no CUDA device")
    flow_dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32

    t0 = time.time()
    state = read_state_dict(args.checkpoint) if args.checkpoint else None
    model = s3model.build(args.size, args.seed, args.variant)
    flow_params, hift_params_wn = count(model.flow), count(model.mel2wav)
    if args.checkpoint:
        load_checkpoint(model, args.size, state, args.checkpoint, args.variant)
        del state
    folded = s3model.fold_weight_norms(model)
    model.eval().to(dev)
    model.flow.to(flow_dtype)
    flow = model.flow
    params = {"encoder": count(flow.input_embedding, flow.encoder, flow.encoder_proj,
                               flow.spk_embed_affine_layer),
              "estimator": count(flow.decoder.estimator), "hift": count(model.mel2wav)}
    timings["build"] = time.time() - t0
    log(f"{args.size} {args.variant} model: flow {flow_params:,} params, HiFT {hift_params_wn:,} "
        f"({params['hift']:,} after folding {folded} weight norms); "
        f"built in {timings['build']:.1f}s")

    out = os.path.abspath(args.out)
    staging = f"{out}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    try:
        t0 = time.time()
        mods = trace_all(model, dev, flow_dtype)
        for name, mod in mods.items():
            mod.save(os.path.join(staging, name + ".pt"))
        timings["trace"] = time.time() - t0

        buffers = artifacts.noise_buffers()
        artifacts.save_bag(os.path.join(staging, "buffers.pt"), buffers)
        voices = synthetic_voices(args.size) if args.random_init or \
            (args.golden and not args.conds) else {}
        if args.conds:
            voices["default"] = voice_from_conds(args.conds)
        for name, voice in voices.items():
            artifacts.save_bag(os.path.join(staging, "voices", name + ".pt"), voice)

        golden = args.random_init if args.golden is None else args.golden
        if golden:
            t0 = time.time()
            cases = make_golden(model, voices, buffers, staging, args.variant)
            timings["golden"] = time.time() - t0
            t0 = time.time()
            worst = self_check(staging, cases, dev, flow_dtype, args.variant)
            timings["self_check"] = time.time() - t0
            if flow_dtype == torch.float32 and not worst < SELF_CHECK_MAX_REL_L2:
                log(f"self-check FAILED: rel L2 {worst:.2e} >= {SELF_CHECK_MAX_REL_L2}")
                return 1

        sampler = reference.VARIANTS[args.variant]
        manifest = {
            "format": artifacts.FORMAT, "variant": args.variant, "size": args.size,
            "source": "random-init" if args.random_init else "checkpoint",
            "seed": args.seed if args.random_init else None,
            "checkpoint": None if args.random_init else {
                "path": os.path.abspath(args.checkpoint),
                "sha256": artifacts.sha256_file(args.checkpoint)},
            "device": dev.type,
            "dtypes": {"encoder": str(flow_dtype).removeprefix("torch."),
                       "estimator": str(flow_dtype).removeprefix("torch."), "hift": "float32"},
            "sample_rate": 24000, "samples_per_frame": reference.SAMPLES_PER_FRAME,
            "frames_per_token": reference.FRAMES_PER_TOKEN, "token_vocab": 6561,
            "mel_bins": 80, "spk_dim": 192, "harmonics": reference.HARMONICS,
            "n_timesteps": sampler["n_timesteps"], "cfg_rate": sampler["cfg_rate"],
            "t_schedule": sampler["t_schedule"],
            "estimator_inputs": sampler["estimator_inputs"],
            "lookahead_frames": reference.LOOKAHEAD_FRAMES,
            "max_positions": 5000, "max_row_tokens": 2500,
            "flow_noise_frames": artifacts.FLOW_NOISE_FRAMES,
            "hift_noise_samples": artifacts.HIFT_NOISE_SAMPLES,
            "architecture": s3model.architecture(args.size, args.variant),
            "parameters": params,
            "torch_version": torch.__version__.split("+")[0],
            "chatterbox_version": s3model.CHATTERBOX_VERSION,
            "voices": [f"voices/{n}.pt" for n in sorted(voices)],
            "golden": "golden/cases.json" if golden else None,
        }
        manifest = artifacts.write_manifest(staging, manifest)
        if os.path.exists(out):
            old = f"{out}.old-{os.getpid()}"
            os.rename(out, old)
            os.rename(staging, out)
            shutil.rmtree(old)
        else:
            os.rename(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    log(f"wrote {out}:")
    for rel in manifest["files"]:
        log(f"  {rel:28s} {os.path.getsize(os.path.join(out, rel)) / 1e6:9.2f} MB")
    log("parameters: " + ", ".join(f"{k} {v:,}" for k, v in params.items()))
    timings["total"] = time.time() - t_start
    log("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    return 0


def main(argv=None):
    """CLI entry point; returns the exit code."""
    args = parse_args(argv)
    try:
        return export(args)
    except ExportError as e:
        print(f"export_s3gen: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
