"""The four traced modules of docs/model-format.md, as thin wrappers that call
the official submodules (their parameters, their forward code) with the fixes
batching needs: the encoder padding fix, an explicit max length instead of
`lengths.max().item()`, and HiFT's random draws passed in as inputs."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from s3gen.model import import_official


class Encoder(nn.Module):
    """tokens (B,L) int64, lens (B,), embedding (B,192) -> mu (B,80,2L), spks (B,80).

    UpsampleConformerEncoder.forward, re-spelled with two changes: the rows are
    multiplied by the pad mask after `embed` (whose Linear bias + LayerNorm turn
    zero padding into a constant that the pre-lookahead conv would mix into the
    last 3 tokens of shorter rows), and masks are sized from tokens.size(1).
    add_optional_chunk_mask is skipped: with static_chunk_size 0 and no dynamic
    chunks it returns the mask unchanged (after a host-syncing .item()).
    """

    def __init__(self, flow):
        super().__init__()
        self.make_pad_mask = import_official()["flow"].make_pad_mask
        self.input_embedding = flow.input_embedding
        self.encoder = flow.encoder
        self.encoder_proj = flow.encoder_proj
        self.spk_embed_affine_layer = flow.spk_embed_affine_layer

    def forward(self, tokens, lens, embedding):
        enc = self.encoder
        masks = ~self.make_pad_mask(lens, tokens.size(1)).unsqueeze(1)  # (B,1,L)
        xs = self.input_embedding(tokens)
        keep = masks.transpose(1, 2).to(xs.dtype)  # (B,L,1)
        xs, pos_emb, masks = enc.embed(xs * keep, masks)
        xs = enc.pre_lookahead_layer(xs * keep)
        xs = enc.forward_layers(xs, masks, pos_emb, masks)
        xs, up_lens = enc.up_layer(xs.transpose(1, 2).contiguous(), lens)
        xs = xs.transpose(1, 2).contiguous()
        masks = ~self.make_pad_mask(up_lens, xs.size(1)).unsqueeze(1)
        xs, pos_emb, masks = enc.up_embed(xs, masks)
        xs = enc.forward_up_layers(xs, masks, pos_emb, masks)
        xs = enc.after_norm(xs)
        mu = self.encoder_proj(xs).transpose(1, 2).contiguous()
        spks = self.spk_embed_affine_layer(F.normalize(embedding, dim=1))
        return mu, spks


class Estimator(nn.Module):
    """x, mask, mu, t, spks, cond -> v: ConditionalDecoder.forward without the
    meanflow `r` input, so the trace has exactly the six documented inputs."""

    def __init__(self, estimator):
        super().__init__()
        self.estimator = estimator

    def forward(self, x, mask, mu, t, spks, cond):
        return self.estimator(x, mask, mu, t, spks, cond)


class TurboEstimator(nn.Module):
    """x, mask, mu, t, spks, cond, r -> v: the meanflow ConditionalDecoder
    (Chatterbox Turbo) with its end-time input `r` (N,) last, one value per row
    like `t`: upstream's basic_euler passes one (1,) t and r for the batch; per
    row they let rows at different steps share a call."""

    def __init__(self, estimator):
        super().__init__()
        assert estimator.meanflow, "TurboEstimator wraps a meanflow=True ConditionalDecoder"
        self.estimator = estimator

    def forward(self, x, mask, mu, t, spks, cond, r):
        return self.estimator(x, mask, mu, t, spks, cond, r=r)


def estimator_for(estimator):
    """The export wrapper matching an official ConditionalDecoder's variant."""
    return TurboEstimator(estimator) if estimator.meanflow else Estimator(estimator)


class HiftSource(nn.Module):
    """mel (B,80,F), phase (B,9,1), noise (B,9,480F) -> source (B,1,480F).

    HiFTGenerator.inference's source path (f0_predictor, nearest upsampling,
    SourceModuleHnNSF) with SineGen's two draws -- the uniform phase per
    harmonic and the standard-normal noise -- taken from the inputs. The math
    follows hifigan.py SineGen.forward operation for operation.
    """

    def __init__(self, hift):
        super().__init__()
        gen = hift.m_source.l_sin_gen
        self.f0_predictor = hift.f0_predictor
        self.f0_upsamp = hift.f0_upsamp
        self.l_linear = hift.m_source.l_linear
        self.sampling_rate = float(gen.sampling_rate)
        self.sine_amp = float(gen.sine_amp)
        self.noise_std = float(gen.noise_std)
        self.voiced_threshold = float(gen.voiced_threshold)
        self.register_buffer("harmonics", torch.arange(1, gen.harmonic_num + 2,
                                                       dtype=torch.float32).view(1, -1, 1))

    def forward(self, mel, phase, noise):
        f0 = self.f0_upsamp(self.f0_predictor(mel)[:, None])  # (B,1,S) Hz
        f_mat = f0 * self.harmonics / self.sampling_rate  # (B,H,S)
        theta = 2 * math.pi * (torch.cumsum(f_mat, dim=-1) % 1)
        sine = self.sine_amp * torch.sin(theta + phase)
        uv = (f0 > self.voiced_threshold).to(torch.float32)
        noise_amp = uv * self.noise_std + (1 - uv) * self.sine_amp / 3
        sine = sine * uv + noise_amp * noise
        return torch.tanh(self.l_linear(sine.transpose(1, 2))).transpose(1, 2)


class HiftDecode(nn.Module):
    """mel (B,80,F), source (B,1,480F) -> wav (B,480F) clamped to +-0.99.

    Runs the official HiFTGenerator.decode on a module that holds only the
    submodules decode touches (a trace keeps every submodule of its wrapper,
    and the f0 predictor belongs to hift_source.pt).
    """

    _ATTRS = ("conv_pre", "ups", "source_downs", "source_resblocks", "resblocks",
              "conv_post", "reflection_pad")

    def __init__(self, hift):
        super().__init__()
        for name in self._ATTRS:
            setattr(self, name, getattr(hift, name))
        self.stft_window = hift.stft_window
        self.istft_params = hift.istft_params
        self.num_upsamples = hift.num_upsamples
        self.num_kernels = hift.num_kernels
        self.lrelu_slope = hift.lrelu_slope
        self.audio_limit = hift.audio_limit
        cls = type(hift)
        self._decode, self._stft, self._istft = (
            cls.decode.__get__(self), cls._stft.__get__(self), cls._istft.__get__(self))

    def forward(self, mel, source):
        return self._decode(x=mel, s=source)
