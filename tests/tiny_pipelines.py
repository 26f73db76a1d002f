"""Tiny random-weight diffusers pipelines, built in the test process: nothing comes from the hub.

Every builder seeds torch before each network, so the same call builds the same weights. Tokenizers
are made locally: a real CLIP BPE tokenizer over a 62-token vocabulary (:func:`make_tokenizer`) and a
T5-style SentencePiece-unigram tokenizer from a ``tokenizers`` object (:func:`make_t5_tokenizer`).

Families (text-to-image, then their image-to-image / inpainting siblings for issue 20):

* VP, latent: :func:`build_sd` (ε or v), :func:`build_sdxl`, :func:`build_dit`; pixel: :func:`build_ddpm`.
* Rectified flow: :func:`build_sd3` (three text encoders, shift 3), :func:`build_flux` (dev with the
  guidance embedding, schnell without). Their geometry is the real models': a VAE with 16 latent
  channels and a scale factor of 8 (so Flux sizes are multiples of 16 pixels and SD3's of 16 with
  patch size 2), real ``shift_factor`` / ``scaling_factor`` and scheduler configs; only widths and
  depths are tiny. 32×32 pixels is a 16×4×4 latent.
* Siblings on the same components (diffusers' ``from_pipe``): :func:`sibling`; inpainting networks
  with extra input channels: :func:`build_sd_inpaint` (9), :func:`build_sdxl_inpaint` (9),
  :func:`build_sd3_inpaint` (33), :func:`build_flux_fill` (384).
* **Outside** pipelines, :func:`build_outside_flux` and :func:`build_outside_sd3`: diffusers' own
  test dummy components, config value for config value (a stand-in for "a tiny pipeline the
  project's tests did not build"); only their tokenizers, which diffusers downloads, are local.

Helpers: :func:`gen` (a seeded CPU generator), :class:`Calls` (a forward hook counting network calls,
the ground truth for NFEs), :func:`network` (the pipeline's denoising network).
"""

from __future__ import annotations

import inspect
import json
import os
import string
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from diffusers import (AutoencoderKL, DDIMScheduler, DDPMPipeline, DDPMScheduler, DiffusionPipeline, DiTPipeline,
                       DiTTransformer2DModel, FlowMatchEulerDiscreteScheduler, FluxFillPipeline, FluxImg2ImgPipeline,
                       FluxInpaintPipeline, FluxPipeline, FluxTransformer2DModel, SD3Transformer2DModel,
                       StableDiffusion3Img2ImgPipeline, StableDiffusion3InpaintPipeline, StableDiffusion3Pipeline,
                       StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline, StableDiffusionPipeline,
                       StableDiffusionXLImg2ImgPipeline, StableDiffusionXLInpaintPipeline, StableDiffusionXLPipeline,
                       UNet2DConditionModel, UNet2DModel)
from transformers import (CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer,
                          PreTrainedTokenizerFast, T5Config, T5EncoderModel)

__all__ = [
    "gen", "Calls", "network",
    "make_tokenizer", "clip_tokenizer", "clip_config", "make_t5_tokenizer", "t5_config", "tiny_t5",
    "tiny_vae", "flow_vae", "sd_scheduler", "sd3_scheduler", "flux_scheduler",
    "build_sd", "build_sdxl", "build_dit", "build_ddpm", "build_sd3", "build_flux",
    "sibling", "build_sd_inpaint", "build_sdxl_inpaint", "build_sd3_inpaint", "build_flux_fill",
    "build_outside_flux", "build_outside_sd3",
]


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Calls:
    """Forward hook on a network: one entry (batch size, input shape, kwargs) per call — the ground
    truth for NFEs. The input is the first positional argument, else ``sample`` / ``hidden_states``."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.batches: list[int] = []
        self.shapes: list[tuple[int, ...]] = []
        self.kwargs: list[dict] = []
        self.handle = module.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs, out):
        x = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
        self.batches.append(x.shape[0])
        self.shapes.append(tuple(x.shape))
        self.kwargs.append(kwargs)

    def __enter__(self) -> "Calls":
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


def network(pipe) -> torch.nn.Module:
    """The denoising network: ``transformer`` (DiT, SD3, Flux) or ``unet``."""
    transformer = getattr(pipe, "transformer", None)
    return transformer if transformer is not None else pipe.unet


# ---------------------------------------------------------------------------------------------
# tokenizers and text encoders
# ---------------------------------------------------------------------------------------------
def clip_tokenizer(folder, *, specials: dict[str, int] | None = None, model_max_length: int = 12,
                   pad_token: str | None = None) -> CLIPTokenizer:
    """A real CLIP BPE tokenizer over letters (+ end-of-word) and a few merges, written into ``folder``.

    ``specials`` maps the special tokens to their ids (default ``<|startoftext|>`` 0, ``<|endoftext|>``
    1); the letters follow them."""
    specials = dict(specials or {"<|startoftext|>": 0, "<|endoftext|>": 1})
    vocab = dict(sorted(specials.items(), key=lambda kv: kv[1]))
    if list(vocab.values()) != list(range(len(vocab))):
        raise ValueError(f"special token ids must be 0…{len(vocab) - 1}, got {specials}")
    for suffix in ("", "</w>"):
        for c in string.ascii_lowercase:
            vocab[c + suffix] = len(vocab)
    merges = ["c a", "ca t</w>", "d o", "do g</w>", "p h", "ph o"]
    for merge in merges:
        vocab.setdefault(merge.replace(" ", ""), len(vocab))
    folder = Path(folder)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    params = inspect.signature(CLIPTokenizer.__init__).parameters
    files = ({"vocab_file": str(folder / "vocab.json"), "merges_file": str(folder / "merges.txt")}
             if "vocab_file" in params else {"vocab": str(folder / "vocab.json"), "merges": str(folder / "merges.txt")})
    extra = {"pad_token": pad_token} if pad_token else {}
    return CLIPTokenizer(**files, model_max_length=model_max_length, **extra)


def make_tokenizer(folder) -> CLIPTokenizer:
    """A real CLIP BPE tokenizer over a 62-token vocabulary: letters (+ end-of-word) and a few merges."""
    tokenizer = clip_tokenizer(folder)
    vocab = tokenizer.get_vocab()
    ids = tokenizer("a cat", padding="max_length", max_length=12).input_ids
    assert ids[:4] == [0, vocab["a</w>"], vocab["cat</w>"], 1], ids  # the fixture itself works
    return tokenizer


def clip_config(vocab_size: int) -> CLIPTextConfig:
    return CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37,
                          num_attention_heads=4, num_hidden_layers=2, vocab_size=vocab_size,
                          max_position_embeddings=12, projection_dim=32)


#: Whole-word pieces of the T5-style vocabulary (with SentencePiece's word-start marker ▁).
T5_WORDS = ("a", "photo", "of", "cat", "dog", "painting", "blurry", "ugly", "red", "the", "in", "on")


def make_t5_tokenizer(model_max_length: int = 512) -> PreTrainedTokenizerFast:
    """A T5-style tokenizer: a SentencePiece-unigram model over ``▁word`` pieces, single characters
    and ``▁``-prefixed characters, built with ``tokenizers`` and wrapped by ``PreTrainedTokenizerFast``.

    As T5's: ``<pad>`` = 0, ``</s>`` = 1, ``<unk>`` = 2; a Metaspace pre-tokenizer and decoder; every
    sequence ends with ``</s>``; no start token; right padding. Any ASCII letters, digits and common
    punctuation round-trip through ``encode``/``decode``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    chars = string.ascii_letters + string.digits + ",.!?'-:;()"
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("▁" + w, -2.0) for w in T5_WORDS]
    pieces += [("▁", -6.0)] + [("▁" + c, -6.0) for c in chars] + [(c, -7.0) for c in chars]
    tok = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                        unk_token="<unk>", model_max_length=model_max_length, padding_side="right")
    ids = tokenizer("a cat").input_ids
    assert ids == [tokenizer.convert_tokens_to_ids("▁a"), tokenizer.convert_tokens_to_ids("▁cat"), 1], ids
    return tokenizer


def t5_config(vocab_size: int, d_model: int = 80) -> T5Config:
    """A tiny T5 v1.1 encoder (gated GELU, as the T5-XXL encoder of SD3 and Flux); no dropout."""
    return T5Config(vocab_size=vocab_size, d_model=d_model, d_ff=64, d_kv=8, num_heads=4, num_layers=2,
                    num_decoder_layers=2, relative_attention_num_buckets=8, relative_attention_max_distance=32,
                    feed_forward_proj="gated-gelu", dropout_rate=0.0, pad_token_id=0, eos_token_id=1,
                    decoder_start_token_id=0)


def tiny_t5(vocab_size: int, d_model: int = 80, seed: int = 4) -> T5EncoderModel:
    torch.manual_seed(seed)
    return T5EncoderModel(t5_config(vocab_size, d_model)).eval()


# ---------------------------------------------------------------------------------------------
# VAEs and schedulers
# ---------------------------------------------------------------------------------------------
def tiny_vae() -> AutoencoderKL:
    torch.manual_seed(1)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         layers_per_block=1, norm_num_groups=8, sample_size=16, scaling_factor=0.5).eval()


#: (shift_factor, scaling_factor) of the real SD3 and Flux.1 VAEs.
VAE_FACTORS = {"sd3": (0.0609, 1.5305), "flux": (0.1159, 0.3611)}


def flow_vae(family: str) -> AutoencoderKL:
    """An SD3 / Flux-shaped VAE: 16 latent channels, 4 levels (scale factor 8), no quant convs, the
    family's real ``shift_factor`` and ``scaling_factor``; 8 channels wide."""
    shift_factor, scaling_factor = VAE_FACTORS[family]
    torch.manual_seed(1)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(8, 8, 8, 8),
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         layers_per_block=1, norm_num_groups=4, sample_size=32, use_quant_conv=False,
                         use_post_quant_conv=False, shift_factor=shift_factor, scaling_factor=scaling_factor).eval()


def sd_scheduler(prediction_type: str = "epsilon") -> DDIMScheduler:
    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                         set_alpha_to_one=True, timestep_spacing="trailing", steps_offset=1,
                         prediction_type=prediction_type)


def sd3_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """Stable Diffusion 3 / 3.5's scheduler config: static shift 3."""
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)


def flux_scheduler(use_dynamic_shifting: bool = True) -> FlowMatchEulerDiscreteScheduler:
    """Flux.1's scheduler configs: dev shifts by image size (μ from base_shift 0.5 at 256 tokens to
    max_shift 1.15 at 4,096); schnell does not shift (``use_dynamic_shifting=False``, shift 1)."""
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0 if use_dynamic_shifting else 1.0,
                                           use_dynamic_shifting=use_dynamic_shifting, base_shift=0.5, max_shift=1.15,
                                           base_image_seq_len=256, max_image_seq_len=4096)


# ---------------------------------------------------------------------------------------------
# VP families
# ---------------------------------------------------------------------------------------------
def _sd_unet(in_channels: int = 4) -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(sample_size=8, in_channels=in_channels, out_channels=4, layers_per_block=1,
                                block_out_channels=(16, 32), norm_num_groups=8, cross_attention_dim=32,
                                attention_head_dim=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")).eval()


def build_sd(folder, prediction_type: str = "epsilon") -> StableDiffusionPipeline:
    tokenizer = make_tokenizer(folder)
    unet = _sd_unet()
    torch.manual_seed(2)
    text_encoder = CLIPTextModel(clip_config(len(tokenizer))).eval()
    pipe = StableDiffusionPipeline(vae=tiny_vae(), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=sd_scheduler(prediction_type), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _sdxl_unet(in_channels: int = 4) -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(sample_size=8, in_channels=in_channels, out_channels=4, layers_per_block=1,
                                block_out_channels=(16, 32), norm_num_groups=8, cross_attention_dim=64,
                                attention_head_dim=(2, 4), use_linear_projection=True,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                                addition_embed_type="text_time", addition_time_embed_dim=8,
                                transformer_layers_per_block=(1, 1),
                                projection_class_embeddings_input_dim=6 * 8 + 32).eval()


def build_sdxl(folder) -> StableDiffusionXLPipeline:
    tokenizer = make_tokenizer(folder)
    unet = _sdxl_unet()
    torch.manual_seed(2)
    text_encoder = CLIPTextModel(clip_config(len(tokenizer))).eval()
    torch.manual_seed(3)
    text_encoder_2 = CLIPTextModelWithProjection(clip_config(len(tokenizer))).eval()
    pipe = StableDiffusionXLPipeline(vae=tiny_vae(), text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                     tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet,
                                     scheduler=sd_scheduler("epsilon"), add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_dit(model_class: type = DiTTransformer2DModel) -> DiTPipeline:
    """``model_class``: ``DiTTransformer2DModel``, or the legacy ``Transformer2DModel`` the hub DiT configs name."""
    torch.manual_seed(0)
    transformer = model_class(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
                              num_layers=2, sample_size=8, patch_size=2, num_embeds_ada_norm=1000,
                              norm_type="ada_norm_zero", norm_elementwise_affine=False).eval()  # eval: no label dropout
    scheduler = DDIMScheduler(beta_schedule="linear", clip_sample=False, set_alpha_to_one=True,
                              timestep_spacing="trailing")
    pipe = DiTPipeline(transformer=transformer, vae=tiny_vae(), scheduler=scheduler,
                       id2label={0: "tench, Tinca tinca", 207: "golden retriever"})
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_ddpm(clip_sample: bool = False) -> DDPMPipeline:
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16),
                       down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2, layers_per_block=1,
                       norm_num_groups=4).eval()
    pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=100, clip_sample=clip_sample,
                                                           timestep_spacing="trailing"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---------------------------------------------------------------------------------------------
# flow families
# ---------------------------------------------------------------------------------------------
def build_sd3(folder, *, sd35: bool = False, in_channels: int = 16) -> StableDiffusion3Pipeline:
    """Stable Diffusion 3 (``sd35``: 3.5-medium's QK RMS-norm and a dual-attention first block).

    Text: two CLIP encoders with projection (hidden 32 each, pooled 32 + 32 = the transformer's
    ``pooled_projection_dim`` 64) and a T5 encoder of width 80 = ``joint_attention_dim`` (the CLIP
    hidden states, 64 wide together, are zero-padded to it, as in SD3). Transformer: patch 2, one
    joint block, 2 heads × 16; ``sample_size`` 4 latents = 32 pixels by default. ``in_channels``: 16,
    or 33 for an inpainting transformer (see :func:`build_sd3_inpaint`)."""
    tokenizer = make_tokenizer(folder)
    t5_tokenizer = make_t5_tokenizer()
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(sample_size=4, patch_size=2, in_channels=in_channels, out_channels=16,
                                        num_layers=1, attention_head_dim=16, num_attention_heads=2,
                                        joint_attention_dim=80, caption_projection_dim=32, pooled_projection_dim=64,
                                        pos_embed_max_size=16, qk_norm="rms_norm" if sd35 else None,
                                        dual_attention_layers=(0,) if sd35 else ()).eval()
    torch.manual_seed(2)
    text_encoder = CLIPTextModelWithProjection(clip_config(len(tokenizer))).eval()
    torch.manual_seed(3)
    text_encoder_2 = CLIPTextModelWithProjection(clip_config(len(tokenizer))).eval()
    pipe = StableDiffusion3Pipeline(transformer=transformer, scheduler=sd3_scheduler(), vae=flow_vae("sd3"),
                                    text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder_2,
                                    tokenizer_2=tokenizer, text_encoder_3=tiny_t5(len(t5_tokenizer)),
                                    tokenizer_3=t5_tokenizer)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _flux_transformer(guidance_embeds: bool, in_channels: int = 64, out_channels: int | None = None):
    torch.manual_seed(0)
    return FluxTransformer2DModel(patch_size=1, in_channels=in_channels, out_channels=out_channels, num_layers=1,
                                  num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
                                  joint_attention_dim=80, pooled_projection_dim=32, guidance_embeds=guidance_embeds,
                                  axes_dims_rope=(4, 6, 6)).eval()


def build_flux(folder, guidance_embeds: bool = True, *,
               use_dynamic_shifting: bool | None = None) -> FluxPipeline:
    """Flux.1 dev (``guidance_embeds=True``: the guidance-distilled embedding) or schnell (``False``).

    Text: a CLIP encoder (pooled 32 = ``pooled_projection_dim``) and a T5 encoder of width 80 =
    ``joint_attention_dim``. Transformer: 2×2-packed latents (16 channels × 4 = 64 inputs), one
    double and one single block, 2 heads × 16, RoPE axes (4, 6, 6). The scheduler is the variant's:
    dynamic shifting for dev, none for schnell, unless ``use_dynamic_shifting`` says otherwise."""
    tokenizer = make_tokenizer(folder)
    t5_tokenizer = make_t5_tokenizer()
    torch.manual_seed(2)
    text_encoder = CLIPTextModel(clip_config(len(tokenizer))).eval()
    dynamic = guidance_embeds if use_dynamic_shifting is None else use_dynamic_shifting
    pipe = FluxPipeline(scheduler=flux_scheduler(dynamic), vae=flow_vae("flux"), text_encoder=text_encoder,
                        tokenizer=tokenizer, text_encoder_2=tiny_t5(len(t5_tokenizer)), tokenizer_2=t5_tokenizer,
                        transformer=_flux_transformer(guidance_embeds))
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---------------------------------------------------------------------------------------------
# image-to-image and inpainting siblings (issue 20)
# ---------------------------------------------------------------------------------------------
SIBLINGS = {
    StableDiffusionPipeline: {"img2img": StableDiffusionImg2ImgPipeline, "inpaint": StableDiffusionInpaintPipeline},
    StableDiffusionXLPipeline: {"img2img": StableDiffusionXLImg2ImgPipeline,
                                "inpaint": StableDiffusionXLInpaintPipeline},
    StableDiffusion3Pipeline: {"img2img": StableDiffusion3Img2ImgPipeline,
                               "inpaint": StableDiffusion3InpaintPipeline},
    FluxPipeline: {"img2img": FluxImg2ImgPipeline, "inpaint": FluxInpaintPipeline},
}


def sibling(pipe: DiffusionPipeline, task: str) -> DiffusionPipeline:
    """The family's ``"img2img"`` or ``"inpaint"`` pipeline over ``pipe``'s very components (diffusers'
    ``from_pipe``: no copy, the same weights), e.g. ``sibling(build_sd(folder), "inpaint")`` for
    latent-blending inpainting with the 4-channel UNet."""
    family = SIBLINGS.get(type(pipe))
    if family is None or task not in family:
        raise ValueError(f"no {task!r} sibling for {type(pipe).__name__}; known: "
                         + ", ".join(f"{k.__name__}: {sorted(v)}" for k, v in SIBLINGS.items()))
    out = family[task].from_pipe(pipe)
    out.set_progress_bar_config(disable=True)
    return out


def build_sd_inpaint(folder, in_channels: int = 9) -> StableDiffusionInpaintPipeline:
    """SD inpainting: ``in_channels`` 9 (latents 4 + mask 1 + masked-image latents 4: a dedicated
    inpainting UNet, otherwise :func:`build_sd`'s) or 4 (:func:`build_sd`'s UNet, latent blending)."""
    pipe = sibling(build_sd(folder), "inpaint")
    if in_channels != 4:
        pipe = StableDiffusionInpaintPipeline(**{**pipe.components, "unet": _sd_unet(in_channels)})
        pipe.set_progress_bar_config(disable=True)
    return pipe


def build_sdxl_inpaint(folder, in_channels: int = 9) -> StableDiffusionXLInpaintPipeline:
    """SDXL inpainting with a 9-channel UNet (or 4: :func:`build_sdxl`'s UNet, latent blending)."""
    pipe = sibling(build_sdxl(folder), "inpaint")
    if in_channels != 4:
        pipe = StableDiffusionXLInpaintPipeline(**{**pipe.components, "unet": _sdxl_unet(in_channels)})
        pipe.set_progress_bar_config(disable=True)
    return pipe


def build_sd3_inpaint(folder, in_channels: int = 33) -> StableDiffusion3InpaintPipeline:
    """SD3 inpainting with a 33-channel transformer (latents 16 + mask 1 + masked-image latents 16)
    or 16 (:func:`build_sd3`'s transformer, latent blending)."""
    return sibling(build_sd3(folder, in_channels=in_channels), "inpaint")


def build_flux_fill(folder) -> FluxFillPipeline:
    """Flux.1 Fill (dev): the transformer takes packed latents (64), packed masked-image latents (64)
    and the packed 8×8 pixel mask (8·8·4 = 256) — 384 inputs, 64 outputs, as the real one; the other
    components are :func:`build_flux`'s (dev)."""
    components = {k: v for k, v in build_flux(folder, True).components.items()
                  if k not in ("image_encoder", "feature_extractor")}
    pipe = FluxFillPipeline(**{**components, "transformer": _flux_transformer(True, 384, 64)})
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---------------------------------------------------------------------------------------------
# OUTSIDE pipelines: diffusers' own test dummies, literally (not the project's design)
# ---------------------------------------------------------------------------------------------
def _outside_clip_config() -> CLIPTextConfig:
    """The CLIP text config of diffusers' SD3 / Flux pipeline tests, value for value."""
    return CLIPTextConfig(bos_token_id=0, eos_token_id=2, hidden_size=32, intermediate_size=37, layer_norm_eps=1e-05,
                          num_attention_heads=4, num_hidden_layers=5, pad_token_id=1, vocab_size=1000,
                          hidden_act="gelu", projection_dim=32)


def _outside_t5() -> T5EncoderModel:
    """The config values of hf-internal-testing/tiny-random-t5 (which diffusers' tests download):
    d_model 32, d_ff 37, d_kv 8, 4 heads, 5 layers, 8 relative-attention buckets, vocabulary 1103,
    ReLU feed-forward, dropout 0.1 (inactive: eval mode, as ``from_pretrained`` returns it)."""
    torch.manual_seed(0)
    config = T5Config(vocab_size=1103, d_model=32, d_ff=37, d_kv=8, num_heads=4, num_layers=5, num_decoder_layers=5,
                      relative_attention_num_buckets=8, dropout_rate=0.1, feed_forward_proj="relu",
                      layer_norm_epsilon=1e-6, initializer_factor=0.002, pad_token_id=0, eos_token_id=1,
                      decoder_start_token_id=0)
    return T5EncoderModel(config).eval()


def _outside_vae(latent_channels: int) -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4,), layers_per_block=1,
                         latent_channels=latent_channels, norm_num_groups=1, use_quant_conv=False,
                         use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035).eval()


def _outside_clip_tokenizer(folder) -> CLIPTokenizer:
    # diffusers downloads hf-internal-testing/tiny-random-clip; a local BPE with its special ids
    # (bos 0, pad 1, eos 2, as the config above says) and CLIP's 77-token length stands in.
    return clip_tokenizer(folder, specials={"<|startoftext|>": 0, "<|pad|>": 1, "<|endoftext|>": 2},
                          model_max_length=77, pad_token="<|pad|>")


def build_outside_flux(folder) -> FluxPipeline:
    """OUTSIDE: ``FluxPipeline`` from the dummy components of diffusers' ``tests/pipelines/flux/
    test_pipeline_flux.py`` (``get_dummy_components``), config value for config value — no guidance
    embedding, a 1-level VAE with 1 latent channel (scale factor 1, so sizes are multiples of 2),
    default scheduler (shift 1, no dynamic shifting). diffusers' own inputs for it: 8×8 pixels,
    guidance 5, ``max_sequence_length=48``, 2 steps. Not the project's tiny design: a stand-in for
    a tiny pipeline built by someone else."""
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=32, axes_dims_rope=[4, 4, 8])
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(_outside_clip_config()).eval()
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=_outside_vae(1), text_encoder=text_encoder,
                        tokenizer=_outside_clip_tokenizer(folder), text_encoder_2=_outside_t5(),
                        tokenizer_2=make_t5_tokenizer(), transformer=transformer.eval(), image_encoder=None,
                        feature_extractor=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_outside_sd3(folder) -> StableDiffusion3Pipeline:
    """OUTSIDE: ``StableDiffusion3Pipeline`` from the dummy components of diffusers' ``tests/pipelines/
    stable_diffusion_3/test_pipeline_stable_diffusion_3.py``, config value for config value — patch 1,
    4 latent channels, a 1-level VAE (scale factor 1), two identical CLIP encoders, a T5 narrower than
    the CLIP features (SD3's pad then crops them to 32), default scheduler (shift 1). diffusers' own
    inputs for it: 2 steps, guidance 5 (its default size is 32×32 pixels)."""
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(sample_size=32, patch_size=1, in_channels=4, num_layers=1,
                                        attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32,
                                        joint_attention_dim=32, pooled_projection_dim=64, out_channels=4)
    torch.manual_seed(0)
    text_encoder = CLIPTextModelWithProjection(_outside_clip_config()).eval()
    torch.manual_seed(0)
    text_encoder_2 = CLIPTextModelWithProjection(_outside_clip_config()).eval()
    tokenizer = _outside_clip_tokenizer(folder)
    pipe = StableDiffusion3Pipeline(transformer=transformer.eval(), scheduler=FlowMatchEulerDiscreteScheduler(),
                                    vae=_outside_vae(4), text_encoder=text_encoder, tokenizer=tokenizer,
                                    text_encoder_2=text_encoder_2, tokenizer_2=tokenizer, text_encoder_3=_outside_t5(),
                                    tokenizer_3=make_t5_tokenizer())
    pipe.set_progress_bar_config(disable=True)
    return pipe
