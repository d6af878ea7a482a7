"""Builds S3Gen's flow + HiFT from the official chatterbox-tts 0.1.7 classes.

The chatterbox package root and `chatterbox.models.s3gen` pull in the speech
tokenizer, T3, perth and transformers, none of which vocoding needs. We stub the
parent packages as bare namespace modules (with `__path__` pointing at the
installed directories) and import only the submodules the vocoder uses.
"""

import functools
import importlib
import importlib.util
import os
import sys
import types
import warnings

import torch
from torch import nn
from torch.nn.utils import parametrize

CHATTERBOX_VERSION = "0.1.7"

# standard: S3Gen (chatterbox tts.py, s3gen.safetensors); turbo: Chatterbox
# Turbo's S3Gen(meanflow=True) (tts_turbo.py, s3gen_meanflow.safetensors), whose
# estimator adds time_embed_mixer (Linear 2*4C -> 4C, C = channels[0]) for `r`.
VARIANTS = ("standard", "turbo")

# Widths and depths per --size. "full" is S3Token2Wav.__init__ (s3gen.py) of
# chatterbox-tts 0.1.7; "tiny" keeps every interface size (vocab 6561, 80 mels,
# 192-dim x-vector, 9 harmonics, 480 samples per frame) and shrinks the rest.
SIZES = {
    "full": {
        "encoder": {"output_size": 512, "attention_heads": 8, "linear_units": 2048,
                    "num_blocks": 6, "num_up_blocks": 4},
        "estimator": {"channels": [256], "attention_head_dim": 64, "n_blocks": 4,
                      "num_mid_blocks": 12, "num_heads": 8},
        "hift": {"base_channels": 512, "f0_cond_channels": 512},
    },
    "tiny": {
        "encoder": {"output_size": 64, "attention_heads": 2, "linear_units": 128,
                    "num_blocks": 1, "num_up_blocks": 4},
        "estimator": {"channels": [32], "attention_head_dim": 16, "n_blocks": 1,
                      "num_mid_blocks": 1, "num_heads": 2},
        "hift": {"base_channels": 32, "f0_cond_channels": 32},
    },
}

# Fixed by the format (docs/model-format.md), identical for every size.
FIXED = {
    "vocab_size": 6561, "mel_bins": 80, "spk_dim": 192, "token_mel_ratio": 2,
    "pre_lookahead_len": 3, "sample_rate": 24000, "upsample_rates": [8, 5, 3],
    "upsample_kernel_sizes": [16, 11, 7], "istft_n_fft": 16, "istft_hop": 4,
    "nb_harmonics": 8,
}

_S3GEN_MODULES = ("configs", "flow", "flow_matching", "decoder", "f0_predictor",
                  "hifigan", "transformer.upsample_encoder")


@functools.cache
def import_official():
    """Imports the vocoder submodules of chatterbox.models.s3gen without the
    package __init__ files (see the module docstring); returns them by name."""
    # diffusers 0.29 deprecates LoRACompatibleLinear, which the estimator uses.
    warnings.filterwarnings("ignore", category=FutureWarning, module="diffusers")
    spec = importlib.util.find_spec("chatterbox")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("chatterbox-tts is not installed (scripts/deps installs it "
                          "with pip --no-deps from requirements-nodeps.txt)")
    root = list(spec.submodule_search_locations)[0]
    for name, sub in (("chatterbox", ""), ("chatterbox.models", "models"),
                      ("chatterbox.models.s3gen", os.path.join("models", "s3gen"))):
        if name not in sys.modules:
            stub = types.ModuleType(name)
            stub.__path__ = [os.path.join(root, sub)]
            sys.modules[name] = stub
    return {n: importlib.import_module("chatterbox.models.s3gen." + n) for n in _S3GEN_MODULES}


class S3GenVocoder(nn.Module):
    """The `flow` and `mel2wav` halves of S3Token2Wav, under the attribute names
    of the released checkpoints, so state-dict keys match them one to one."""

    def __init__(self, flow, mel2wav):
        super().__init__()
        self.flow = flow
        self.mel2wav = mel2wav


def build(size, seed, variant="standard"):
    """Constructs the official modules for `size` and `variant`; their
    constructors draw the random init from torch's global RNG, seeded here
    after the imports so that equal seeds give equal weights in any process.

    turbo: upstream initialises time_embed_mixer to [I | 0] (intmeanflow.py),
    which ignores `r` until trained; a random-init export would then not show
    whether `r` reaches the estimator, so its r half is drawn like the other
    Linear weights (kaiming normal). A checkpoint overwrites it."""
    assert variant in VARIANTS, variant
    m = import_official()
    torch.manual_seed(seed)
    enc, est, hift = SIZES[size]["encoder"], SIZES[size]["estimator"], SIZES[size]["hift"]
    width = enc["output_size"]
    ue = m["transformer.upsample_encoder"]
    encoder = ue.UpsampleConformerEncoder(
        output_size=width, attention_heads=enc["attention_heads"],
        linear_units=enc["linear_units"], num_blocks=enc["num_blocks"],
        dropout_rate=0.1, positional_dropout_rate=0.1, attention_dropout_rate=0.1,
        normalize_before=True, input_layer="linear", pos_enc_layer_type="rel_pos_espnet",
        selfattention_layer_type="rel_selfattn", input_size=width,
        use_cnn_module=False, macaron_style=False)
    if width != 512:
        # UpsampleConformerEncoder hard-codes 512 channels for these two layers;
        # replace them by the same classes at the encoder's width.
        encoder.pre_lookahead_layer = ue.PreLookaheadLayer(
            channels=width, pre_lookahead_len=FIXED["pre_lookahead_len"])
        encoder.up_layer = ue.Upsample1D(channels=width, out_channels=width, stride=2)
    assert len(encoder.up_encoders) == enc["num_up_blocks"]
    estimator = m["decoder"].ConditionalDecoder(
        in_channels=4 * FIXED["mel_bins"], out_channels=FIXED["mel_bins"], causal=True,
        channels=est["channels"], dropout=0.0, attention_head_dim=est["attention_head_dim"],
        n_blocks=est["n_blocks"], num_mid_blocks=est["num_mid_blocks"],
        num_heads=est["num_heads"], act_fn="gelu", meanflow=variant == "turbo")
    if variant == "turbo":
        mixer = estimator.time_embed_mixer.weight  # (D, 2D): [t half | r half]
        with torch.no_grad():
            nn.init.kaiming_normal_(mixer[:, mixer.shape[0]:], nonlinearity="relu")
    decoder = m["flow_matching"].CausalConditionalCFM(
        spk_emb_dim=FIXED["mel_bins"], cfm_params=m["configs"].CFM_PARAMS, estimator=estimator)
    flow = m["flow"].CausalMaskedDiffWithXvec(
        input_size=width, output_size=FIXED["mel_bins"], spk_embed_dim=FIXED["spk_dim"],
        vocab_size=FIXED["vocab_size"], token_mel_ratio=FIXED["token_mel_ratio"],
        pre_lookahead_len=FIXED["pre_lookahead_len"], encoder=encoder, decoder=decoder)
    f0_predictor = m["f0_predictor"].ConvRNNF0Predictor(cond_channels=hift["f0_cond_channels"])
    mel2wav = m["hifigan"].HiFTGenerator(
        base_channels=hift["base_channels"], nb_harmonics=FIXED["nb_harmonics"],
        sampling_rate=FIXED["sample_rate"], upsample_rates=FIXED["upsample_rates"],
        upsample_kernel_sizes=FIXED["upsample_kernel_sizes"],
        istft_params={"n_fft": FIXED["istft_n_fft"], "hop_len": FIXED["istft_hop"]},
        source_resblock_kernel_sizes=[7, 7, 11],
        source_resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]],
        f0_predictor=f0_predictor)
    return S3GenVocoder(flow, mel2wav)


def fold_weight_norms(model):
    """Bakes every weight-norm parametrization into a plain weight (HiFT's own
    remove_weight_norm() is broken upstream); returns how many were folded."""
    folded = 0
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            folded += 1
    return folded


def architecture(size, variant="standard"):
    """The manifest's `architecture` block: what the traced graphs were built with."""
    s = SIZES[size]
    return {
        "encoder": dict(s["encoder"], input_size=s["encoder"]["output_size"],
                        vocab_size=FIXED["vocab_size"],
                        pre_lookahead_len=FIXED["pre_lookahead_len"],
                        token_mel_ratio=FIXED["token_mel_ratio"]),
        "estimator": dict(s["estimator"], in_channels=4 * FIXED["mel_bins"],
                          out_channels=FIXED["mel_bins"], causal=True,
                          meanflow=variant == "turbo"),
        "hift": dict(s["hift"], upsample_rates=FIXED["upsample_rates"],
                     upsample_kernel_sizes=FIXED["upsample_kernel_sizes"],
                     istft_n_fft=FIXED["istft_n_fft"], istft_hop=FIXED["istft_hop"],
                     nb_harmonics=FIXED["nb_harmonics"]),
    }
