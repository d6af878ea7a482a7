"""The reference algorithm of docs/model-format.md, twice: once with the
official modules in eager mode (golden files), once with the exported traced
modules, batched the way the C++ runner batches (the self-check).

Two variants share it: `standard` (S3Gen: 10 Euler steps on the cosine
schedule, classifier-free guidance by batch doubling) and `turbo` (Chatterbox
Turbo's meanflow decoder: 2 Euler steps on the linear schedule, an end-time
input `r` per row, no guidance)."""

import contextlib
import io

import torch
import torch.nn.functional as F

from s3gen.model import import_official

N_TIMESTEPS = 10  # the standard variant's defaults (VARIANTS["standard"])
CFG_RATE = 0.7
LOOKAHEAD_FRAMES = 6
FRAMES_PER_TOKEN = 2
SAMPLES_PER_FRAME = 480
HARMONICS = 9

ESTIMATOR_INPUTS = ["x", "mask", "mu", "t", "spks", "cond"]
# What the manifest records per variant (docs/model-format.md). `cfg_rate` 0
# means no guidance: one estimator row per job, not two.
VARIANTS = {
    "standard": {"n_timesteps": N_TIMESTEPS, "cfg_rate": CFG_RATE, "t_schedule": "cosine",
                 "estimator_inputs": ESTIMATOR_INPUTS},
    "turbo": {"n_timesteps": 2, "cfg_rate": 0.0, "t_schedule": "linear",
              "estimator_inputs": ESTIMATOR_INPUTS + ["r"]},
}


def t_span(n, dtype=torch.float32, device="cpu", schedule="cosine"):
    """t_0..t_n computed as upstream: linspace(0, 1, n+1), then for the cosine
    schedule t_k = 1 - cos(pi/2 * k/n); the linear schedule is the linspace."""
    t = torch.linspace(0, 1, n + 1, dtype=dtype, device=device)
    if schedule == "linear":
        return t
    assert schedule == "cosine", schedule
    return 1 - torch.cos(t * 0.5 * torch.pi)


def valid_frames(row_tokens, finalize):
    """Step 2: frames of a row the estimator sees (lookahead dropped unless final)."""
    t = FRAMES_PER_TOKEN * row_tokens
    return t if finalize else t - LOOKAHEAD_FRAMES


def flow_noise_for(flow_noise, prompt_frames, frames, noise_offset):
    """Step 4: z (80, frames), prompt frames by position, the rest by absolute frame."""
    j = torch.arange(frames)
    idx = torch.where(j < prompt_frames, j, prompt_frames + noise_offset + (j - prompt_frames))
    return flow_noise[:, idx % flow_noise.shape[1]]


def hift_noise_for(hift_noise, noise_offset, context_tokens, frames, cache_frames=0):
    """Step 7: SineGen's noise (9, 480*frames) taken from the position-indexed buffer."""
    start = SAMPLES_PER_FRAME * (noise_offset + FRAMES_PER_TOKEN * context_tokens - cache_frames)
    idx = (start + torch.arange(SAMPLES_PER_FRAME * frames)) % hift_noise.shape[1]
    return hift_noise[:, idx]


@contextlib.contextmanager
def injected_sinegen_draws(phase, noise):
    """Makes the official SineGen use `phase` (B,9,1) and `noise` (B,9,S) instead
    of its Uniform and randn_like draws (other randn_like calls are untouched)."""
    hifigan = import_official()["hifigan"]

    class FixedUniform:
        def __init__(self, low, high):
            pass

        def sample(self, sample_shape):
            assert tuple(sample_shape) == tuple(phase.shape), (sample_shape, phase.shape)
            return phase.clone()

    real_randn_like = torch.randn_like

    def randn_like(t, *args, **kwargs):
        if t.shape == noise.shape:
            return noise.clone().to(t.dtype)
        return real_randn_like(t, *args, **kwargs)

    saved_uniform = hifigan.Uniform
    hifigan.Uniform, torch.randn_like = FixedUniform, randn_like
    try:
        yield
    finally:
        hifigan.Uniform, torch.randn_like = saved_uniform, real_randn_like


@torch.inference_mode()
def golden_case(model, voice, tokens, case, flow_noise, hift_noise, hift_phase,
                variant="standard"):
    """One golden case with the official modules, batch 1, eager: encoder
    forward on the unpadded row; the flow decoder's own sampler -- standard:
    CausalConditionalCFM.solve_euler on the cosine span (CFG 0.7 inside);
    turbo: CausalConditionalCFM.forward(meanflow=True), which builds the
    linear span and runs basic_euler with r, the initial noise passed as
    `noised_mels` over every frame --; HiFTGenerator.inference with SineGen's
    draws injected. Returns mel (80,F) and wav (480F,) as float32 on the CPU."""
    flow, hift = model.flow, model.mel2wav
    dev = next(flow.parameters()).device
    dtype = next(flow.parameters()).dtype
    p = voice["prompt_token"].numel()
    row = torch.cat([voice["prompt_token"], tokens]).to(dev)[None]
    row_len = torch.tensor([row.shape[1]], device=dev)
    emb = flow.input_embedding(row)
    h, _ = flow.encoder(emb, row_len)
    mu = flow.encoder_proj(h).transpose(1, 2)
    spks = flow.spk_embed_affine_layer(F.normalize(voice["embedding"].to(dev, dtype)[None], dim=1))
    frames = valid_frames(row.shape[1], case["finalize"])
    mu = mu[:, :, :frames]
    cond = torch.zeros(1, 80, frames, device=dev, dtype=dtype)
    cond[0, :, :2 * p] = voice["prompt_feat"].T.to(dev, dtype)
    mask = torch.ones(1, 1, frames, device=dev, dtype=dtype)
    z = flow_noise_for(flow_noise, 2 * p, frames, case["noise_offset"])[None].to(dev, dtype)
    if variant == "turbo":
        # forward() draws randn_like(mu) and overwrites its last
        # noised_mels.size(2) frames: all of them here. basic_euler prints a
        # line and a tqdm bar on every call; keep them out of the export log.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            x, _ = flow.decoder(mu.contiguous(), mask, case["n_timesteps"], spks=spks, cond=cond,
                                noised_mels=z, meanflow=True)
    else:
        assert variant == "standard", variant
        x = flow.decoder.solve_euler(z, t_span(case["n_timesteps"], dtype, dev), mu, mask, spks,
                                     cond)
    mel = x[:, :, 2 * p + FRAMES_PER_TOKEN * case["context_tokens"]:frames].float()
    n_frames = mel.shape[2]
    noise = hift_noise_for(hift_noise, case["noise_offset"], case["context_tokens"], n_frames)
    with injected_sinegen_draws(hift_phase.view(1, HARMONICS, 1).to(dev), noise[None].to(dev)):
        wav, _ = hift.inference(speech_feat=mel)
    return mel[0].cpu(), wav[0].cpu()


@torch.inference_mode()
def run_traced(mods, buffers, jobs, device="cpu", dtype=torch.float32, variant="standard"):
    """The runner's algorithm on the traced modules, all `jobs` in one padded
    encoder call and one estimator call per step (standard: 2B rows, the
    unconditional copies second, combined with CFG_RATE; turbo: B rows with
    t = t_k and r = t_{k+1}, no guidance); HiFT per row.
    Each job is a dict: voice (bag), tokens, finalize, context_tokens,
    noise_offset, hift_phase; all jobs share n_timesteps = jobs[0]["n_timesteps"].
    Returns [(mel (80,F), wav (480F,))] as float32 on the CPU."""
    spec = VARIANTS[variant]
    b = len(jobs)
    rows = [torch.cat([j["voice"]["prompt_token"], j["tokens"]]) for j in jobs]
    lens = torch.tensor([r.numel() for r in rows])
    tokens = torch.zeros(b, int(lens.max()), dtype=torch.int64)
    for i, r in enumerate(rows):
        tokens[i, :r.numel()] = r
    emb = torch.stack([j["voice"]["embedding"] for j in jobs]).to(device, dtype)
    mu_all, spks = mods["encoder"](tokens.to(device), lens.to(device), emb)
    frames = [valid_frames(int(n), j["finalize"]) for n, j in zip(lens, jobs)]
    t_max = max(frames)
    x = torch.zeros(b, 80, t_max, device=device, dtype=dtype)
    mu = torch.zeros_like(x)
    cond = torch.zeros_like(x)
    mask = torch.zeros(b, 1, t_max, device=device, dtype=dtype)
    for i, (j, t) in enumerate(zip(jobs, frames)):
        p2 = 2 * j["voice"]["prompt_token"].numel()
        mu[i, :, :t] = mu_all[i, :, :t]
        cond[i, :, :p2] = j["voice"]["prompt_feat"].T.to(device, dtype)
        mask[i, :, :t] = 1
        x[i, :, :t] = flow_noise_for(buffers["flow_noise"], p2, t, j["noise_offset"]).to(device, dtype)
    ts = t_span(jobs[0]["n_timesteps"], torch.float32, schedule=spec["t_schedule"])
    zeros = torch.zeros_like(x)
    for k in range(len(ts) - 1):
        dt = (ts[k + 1] - ts[k]).to(dtype)
        if variant == "turbo":
            t_in = torch.full((b,), float(ts[k]), device=device, dtype=dtype)
            r_in = torch.full((b,), float(ts[k + 1]), device=device, dtype=dtype)
            x = x + dt * mods["estimator"](x, mask, mu, t_in, spks, cond, r_in)
            continue
        t_in = torch.full((2 * b,), float(ts[k]), device=device, dtype=dtype)
        v = mods["estimator"](torch.cat([x, x]), torch.cat([mask, mask]), torch.cat([mu, zeros]),
                              t_in, torch.cat([spks, torch.zeros_like(spks)]),
                              torch.cat([cond, zeros]))
        v_c, v_u = v[:b], v[b:]
        x = x + dt * ((1.0 + CFG_RATE) * v_c - CFG_RATE * v_u)
    out = []
    for i, (j, t) in enumerate(zip(jobs, frames)):
        start = 2 * j["voice"]["prompt_token"].numel() + FRAMES_PER_TOKEN * j["context_tokens"]
        mel = x[i:i + 1, :, start:t].float()
        noise = hift_noise_for(buffers["hift_noise"], j["noise_offset"], j["context_tokens"],
                               mel.shape[2])
        source = mods["hift_source"](mel, j["hift_phase"].view(1, HARMONICS, 1).to(device),
                                     noise[None].to(device))
        wav = mods["hift_decode"](mel, source)
        out.append((mel[0].cpu(), wav[0].cpu()))
    return out


def rel_l2(a, b):
    """Relative L2 error of a against reference b."""
    return float(torch.linalg.vector_norm(a.double() - b.double())
                 / torch.linalg.vector_norm(b.double()).clamp_min(1e-30))
