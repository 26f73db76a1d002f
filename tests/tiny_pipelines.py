"""Tiny random-weight diffusers pipelines, built in the test process: nothing comes from the hub.

Every builder seeds torch before each network, so the same call builds the same weights; the CLIP
tokenizer is a real BPE tokenizer over a vocabulary written into a folder (:func:`make_tokenizer`).
Helpers: :func:`gen` (a seeded CPU generator), :class:`Calls` (a forward hook counting network calls,
the ground truth for NFEs), :func:`network` (the pipeline's denoising network).
"""

from __future__ import annotations

import inspect
import json
import os
import string

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from diffusers import (AutoencoderKL, DDIMScheduler, DDPMPipeline, DDPMScheduler, DiTPipeline,
                       DiTTransformer2DModel, StableDiffusionPipeline, StableDiffusionXLPipeline,
                       UNet2DConditionModel, UNet2DModel)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer


def make_tokenizer(folder) -> CLIPTokenizer:
    """A real CLIP BPE tokenizer over a 62-token vocabulary: letters (+ end-of-word) and a few merges."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for c in string.ascii_lowercase:
            vocab[c + suffix] = len(vocab)
    merges = ["c a", "ca t</w>", "d o", "do g</w>", "p h", "ph o"]
    for merge in merges:
        vocab.setdefault(merge.replace(" ", ""), len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    params = inspect.signature(CLIPTokenizer.__init__).parameters
    files = ({"vocab_file": str(folder / "vocab.json"), "merges_file": str(folder / "merges.txt")}
             if "vocab_file" in params else {"vocab": str(folder / "vocab.json"), "merges": str(folder / "merges.txt")})
    tokenizer = CLIPTokenizer(**files, model_max_length=12)
    ids = tokenizer("a cat", padding="max_length", max_length=12).input_ids
    assert ids[:4] == [0, vocab["a</w>"], vocab["cat</w>"], 1], ids  # the fixture itself works
    return tokenizer


def clip_config(vocab_size: int) -> CLIPTextConfig:
    return CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37,
                          num_attention_heads=4, num_hidden_layers=2, vocab_size=vocab_size,
                          max_position_embeddings=12, projection_dim=32)


def tiny_vae() -> AutoencoderKL:
    torch.manual_seed(1)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         layers_per_block=1, norm_num_groups=8, sample_size=16, scaling_factor=0.5).eval()


def sd_scheduler(prediction_type: str = "epsilon") -> DDIMScheduler:
    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                         set_alpha_to_one=True, timestep_spacing="trailing", steps_offset=1,
                         prediction_type=prediction_type)


def build_sd(folder, prediction_type: str = "epsilon") -> StableDiffusionPipeline:
    tokenizer = make_tokenizer(folder)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(16, 32), norm_num_groups=8, cross_attention_dim=32,
                                attention_head_dim=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")).eval()
    torch.manual_seed(2)
    text_encoder = CLIPTextModel(clip_config(len(tokenizer))).eval()
    pipe = StableDiffusionPipeline(vae=tiny_vae(), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=sd_scheduler(prediction_type), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_sdxl(folder) -> StableDiffusionXLPipeline:
    tokenizer = make_tokenizer(folder)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(16, 32), norm_num_groups=8, cross_attention_dim=64,
                                attention_head_dim=(2, 4), use_linear_projection=True,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                                addition_embed_type="text_time", addition_time_embed_dim=8,
                                transformer_layers_per_block=(1, 1),
                                projection_class_embeddings_input_dim=6 * 8 + 32).eval()
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


class Calls:
    """Forward hook on a network: one entry (batch size, kwargs) per call — the ground truth for NFEs."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.batches: list[int] = []
        self.kwargs: list[dict] = []
        self.handle = module.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs, out):
        x = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
        self.batches.append(x.shape[0])
        self.kwargs.append(kwargs)

    def __enter__(self) -> "Calls":
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def network(pipe):
    return pipe.transformer if isinstance(pipe, DiTPipeline) else pipe.unet
