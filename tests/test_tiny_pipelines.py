"""The tiny pipelines of ``tests/tiny_pipelines.py`` are real diffusers pipelines: each runs its own
``__call__`` (2 steps, 32×32 pixels), deterministically under a generator, with the conventions of the
family it stands for (timestep input, guidance batches, Flux's guidance embedding and shifted σ grid)
read back from the calls its network receives; their tokenizers round-trip prompts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, FluxPipeline, StableDiffusion3Pipeline
from transformers import AutoTokenizer
from tiny_pipelines import (Calls, build_ddpm, build_dit, build_flux, build_flux_fill, build_outside_flux,
                            build_outside_sd3, build_sd, build_sd3, build_sd3_inpaint, build_sd_inpaint, build_sdxl,
                            build_sdxl_inpaint, gen, make_t5_tokenizer, make_tokenizer, network, sibling)

PROMPT = "a photo of a cat"
SMALL = dict(height=32, width=32)
T5 = dict(max_sequence_length=16)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("tok")


@pytest.fixture(scope="module")
def sd3(folder):
    return build_sd3(folder)


@pytest.fixture(scope="module")
def dev(folder):
    return build_flux(folder, guidance_embeds=True)


@pytest.fixture(scope="module")
def schnell(folder):
    return build_flux(folder, guidance_embeds=False)


def run(pipe, seed: int = 0, **kwargs):
    return pipe(num_inference_steps=2, generator=gen(seed), **kwargs).images


# ---------------------------------------------------------------------------------------------
# tokenizers
# ---------------------------------------------------------------------------------------------
def test_clip_tokenizer_round_trips_a_prompt(folder):
    tokenizer = make_tokenizer(folder)
    ids = tokenizer(PROMPT, padding="max_length", max_length=12).input_ids
    assert len(ids) == 12 and ids[0] == 0 and ids[-1] == 1  # start, …, end-of-text padding
    assert tokenizer.decode(ids, skip_special_tokens=True).strip() == PROMPT


@pytest.mark.parametrize("prompt", [PROMPT, "A red Dog, in the painting!", "photo 42: blurry (ugly)?"])
def test_t5_tokenizer_round_trips_prompts(prompt):
    tokenizer = make_t5_tokenizer()
    ids = tokenizer(prompt).input_ids
    assert ids[-1] == tokenizer.eos_token_id == 1 and 2 not in ids  # T5: </s> last, no start token, no <unk>
    assert tokenizer.decode(ids, skip_special_tokens=True) == prompt
    padded = tokenizer(prompt, padding="max_length", max_length=40, truncation=True).input_ids
    assert padded[:len(ids)] == ids and set(padded[len(ids):]) == {tokenizer.pad_token_id} == {0}
    if prompt == PROMPT:  # whole words are single pieces, as SentencePiece picks the likeliest split
        assert tokenizer.convert_ids_to_tokens(ids) == ["▁a", "▁photo", "▁of", "▁a", "▁cat", "</s>"]


def test_t5_tokenizer_truncates_unknowns_and_survives_saving(tmp_path):
    tokenizer = make_t5_tokenizer()
    assert tokenizer("café").input_ids == tokenizer("caf").input_ids[:-1] + [2, 1]  # é is <unk>
    assert tokenizer("a cat " * 20, max_length=8, truncation=True).input_ids[-1] == 1  # truncated, still ends </s>
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded(PROMPT).input_ids == tokenizer(PROMPT).input_ids
    assert (loaded.pad_token, loaded.eos_token, loaded.model_max_length) == ("<pad>", "</s>", 512)


# ---------------------------------------------------------------------------------------------
# every builder runs its pipeline's own __call__
# ---------------------------------------------------------------------------------------------
BUILDERS = {
    "sd": (lambda f: build_sd(f), dict(prompt=PROMPT), (4, 8, 8), 16),
    "sd-v": (lambda f: build_sd(f, "v_prediction"), dict(prompt=PROMPT), (4, 8, 8), 16),
    "sdxl": (lambda f: build_sdxl(f), dict(prompt=PROMPT), (4, 8, 8), 16),
    "dit": (lambda f: build_dit(), dict(class_labels=[207]), None, 16),  # DiTPipeline has no latent output
    "ddpm": (lambda f: build_ddpm(), dict(), None, 8),
    "sd3": (lambda f: build_sd3(f), dict(prompt=PROMPT, **SMALL, **T5), (16, 4, 4), 32),
    "sd3.5": (lambda f: build_sd3(f, sd35=True), dict(prompt=PROMPT, **SMALL, **T5), (16, 4, 4), 32),
    "flux-dev": (lambda f: build_flux(f, True), dict(prompt=PROMPT, **SMALL, **T5), (4, 64), 32),
    "flux-schnell": (lambda f: build_flux(f, False), dict(prompt=PROMPT, **SMALL, **T5), (4, 64), 32),
    "outside-flux": (build_outside_flux, dict(prompt=PROMPT, height=8, width=8, guidance_scale=5.0,
                                              max_sequence_length=48), (16, 4), 8),
    "outside-sd3": (build_outside_sd3, dict(prompt=PROMPT, guidance_scale=5.0), (4, 32, 32), 32),
}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_each_builder_runs_its_own_call_deterministically(folder, name):
    build, kwargs, latent_shape, size = BUILDERS[name]
    pipe = build(folder)
    assert all(not m.training for m in pipe.components.values() if isinstance(m, torch.nn.Module))  # eval mode
    with Calls(network(pipe)) as calls:
        images = run(pipe, 3, output_type="np", **kwargs)
    assert len(calls.batches) == 2  # 2 steps = 2 network calls (CFG runs as one doubled batch)
    assert images.shape == (1, size, size, 3) and images.dtype == np.float32
    assert 0 <= images.min() < images.max() <= 1
    np.testing.assert_array_equal(run(pipe, 3, output_type="np", **kwargs), images)  # same generator, same image
    assert np.abs(run(pipe, 4, output_type="np", **kwargs) - images).max() > 1e-3  # another seed, another one
    if latent_shape is not None:
        latents = run(pipe, 3, output_type="latent", **kwargs)
        assert latents.shape == (1, *latent_shape) and latents.abs().max() > 0.1
        torch.testing.assert_close(run(pipe, 3, output_type="latent", **kwargs), latents, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# the flow families' conventions, as their pipelines exercise them
# ---------------------------------------------------------------------------------------------
def test_sd3_geometry_and_configs(sd3):
    assert sd3.vae_scale_factor == 8 and sd3.vae.config.latent_channels == 16 and sd3.patch_size == 2
    assert (sd3.vae.config.shift_factor, sd3.vae.config.scaling_factor) == (0.0609, 1.5305)
    assert sd3.scheduler.config.shift == 3.0 and not sd3.scheduler.config.use_dynamic_shifting
    assert sd3.default_sample_size * sd3.vae_scale_factor == 32  # the default size is 32×32 pixels
    assert sd3.transformer.config.joint_attention_dim == sd3.text_encoder_3.config.d_model == 80
    assert sd3.transformer.config.pooled_projection_dim == 2 * sd3.text_encoder.config.projection_dim
    embeds, negative, pooled, negative_pooled = sd3.encode_prompt(PROMPT, None, None, do_classifier_free_guidance=True,
                                                                  max_sequence_length=16)
    assert embeds.shape == negative.shape == (1, 12 + 16, 80)  # CLIP (12 tokens, padded 64 → 80) then T5 (16)
    assert pooled.shape == negative_pooled.shape == (1, 64)
    assert torch.equal(embeds[0, :12, 64:], torch.zeros(12, 16))  # SD3 zero-pads the CLIP features


@pytest.mark.parametrize("guidance", [1.0, 5.0])
def test_sd3_with_and_without_cfg(sd3, guidance):
    with Calls(sd3.transformer) as calls:
        latents = run(sd3, 0, prompt=PROMPT, guidance_scale=guidance, output_type="latent", **T5)
    assert calls.batches == ([2, 2] if guidance > 1 else [1, 1])  # CFG: one doubled batch per step
    # diffusers' grid (SD3 passes no sigmas): linspace(1, σ_min, N), shifted by σ' = 3σ / (1 + 2σ), where
    # σ_min is already the shifted σ of the last training step — so the last σ is shifted twice
    def shift(s):
        return 3 * s / (1 + 2 * s)

    sigmas = [1.0, shift(shift(1 / 1000))]
    assert [float(k["timestep"][0]) for k in calls.kwargs] == pytest.approx([s * 1000 for s in sigmas])  # σ·1000
    assert calls.kwargs[0]["timestep"].dtype == torch.float32
    assert calls.kwargs[0]["pooled_projections"].shape == (calls.batches[0], 64)
    other = run(sd3, 0, prompt=PROMPT, guidance_scale=6.0 - guidance, output_type="latent", **T5)
    assert (other - latents).abs().max() > 1e-3  # guidance changes the result


def flux_mu(seq_len: int) -> float:
    """Flux's dynamic shift μ, linear in the image token count: 0.5 at 256 tokens, 1.15 at 4,096."""
    return 0.5 + (1.15 - 0.5) * (seq_len - 256) / (4096 - 256)


@pytest.mark.parametrize("variant", ["dev", "schnell"])
def test_flux_guidance_embedding_and_sigma_grid(request, variant):
    pipe = request.getfixturevalue(variant)
    assert pipe.vae_scale_factor * 2 == 16 and pipe.transformer.config.in_channels == 4 * 16  # 2×2 packing
    assert (pipe.vae.config.shift_factor, pipe.vae.config.scaling_factor) == (0.1159, 0.3611)
    with Calls(pipe.transformer) as calls:
        run(pipe, 0, prompt=PROMPT, height=32, width=48, guidance_scale=4.0, output_type="latent", **T5)
    kwargs = calls.kwargs[0]
    assert kwargs["hidden_states"].shape == (1, 2 * 3, 64)  # (32/16)·(48/16) packed tokens
    assert kwargs["encoder_hidden_states"].shape == (1, 16, 80) and kwargs["pooled_projections"].shape == (1, 32)
    assert kwargs["img_ids"].shape == (6, 3) and kwargs["txt_ids"].shape == (16, 3)
    if variant == "dev":
        assert pipe.transformer.config.guidance_embeds and kwargs["guidance"].tolist() == [4.0]
        mu = flux_mu(6)
        sigmas = [1.0, math.exp(mu) / (math.exp(mu) + (1 / 0.5 - 1))]  # exponential time shift of linspace(1, 1/2)
    else:
        assert not pipe.transformer.config.guidance_embeds and kwargs["guidance"] is None
        sigmas = [1.0, 0.5]  # schnell: no shift
    # Flux's transformer takes σ itself (the pipeline divides its σ·1000 timesteps by 1000)
    assert [float(k["timestep"][0]) for k in calls.kwargs] == pytest.approx(sigmas, abs=1e-6)
    assert pipe.scheduler.config.use_dynamic_shifting == (variant == "dev")


def test_flux_true_cfg_is_one_more_batch_per_step(dev):
    with Calls(dev.transformer) as calls:
        run(dev, 0, prompt=PROMPT, negative_prompt="blurry", true_cfg_scale=2.0, output_type="latent", **SMALL, **T5)
    assert calls.batches == [1, 1, 1, 1]  # diffusers runs true CFG as two separate calls per step


@pytest.mark.parametrize("which", ["sd3", "dev"])
def test_flow_pipelines_survive_saving_and_loading_offline(request, tmp_path, which):
    pipe = request.getfixturevalue(which)
    pipe.save_pretrained(tmp_path / which)
    loaded = DiffusionPipeline.from_pretrained(tmp_path / which)
    assert type(loaded) is (StableDiffusion3Pipeline if which == "sd3" else FluxPipeline)
    loaded.set_progress_bar_config(disable=True)
    kwargs = dict(prompt=PROMPT, output_type="latent", **SMALL, **T5)
    # equal weights; the memory-mapped loaded tensors take other CPU kernel paths (~5e-7 apart)
    torch.testing.assert_close(run(loaded, 5, **kwargs), run(pipe, 5, **kwargs), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# image-to-image and inpainting siblings
# ---------------------------------------------------------------------------------------------
def edit_inputs(size: int):
    image = torch.rand(1, 3, size, size, generator=gen(9)) * 2 - 1
    mask = torch.zeros(1, 1, size, size)
    mask[..., size // 4:3 * size // 4, size // 4:3 * size // 4] = 1.0  # white = repaint
    return image, mask


SIBLING_CASES = {  # name: (builder, task kwargs beyond prompt, pixel size, expected network input channels)
    "sd-img2img": (lambda f: sibling(build_sd(f), "img2img"), {}, 16, 4),
    "sd-inpaint-4": (lambda f: build_sd_inpaint(f, 4), {"mask": True}, 16, 4),
    "sd-inpaint-9": (lambda f: build_sd_inpaint(f, 9), {"mask": True}, 16, 9),
    "sdxl-img2img": (lambda f: sibling(build_sdxl(f), "img2img"), {}, 16, 4),
    "sdxl-inpaint-4": (lambda f: build_sdxl_inpaint(f, 4), {"mask": True}, 16, 4),
    "sdxl-inpaint-9": (lambda f: build_sdxl_inpaint(f, 9), {"mask": True}, 16, 9),
    "sd3-img2img": (lambda f: sibling(build_sd3(f), "img2img"), T5, 32, 16),
    "sd3-inpaint-16": (lambda f: build_sd3_inpaint(f, 16), {"mask": True, **T5}, 32, 16),
    "sd3-inpaint-33": (lambda f: build_sd3_inpaint(f, 33), {"mask": True, **T5}, 32, 33),
    "flux-img2img": (lambda f: sibling(build_flux(f, True), "img2img"), T5, 32, 64),
    "flux-inpaint": (lambda f: sibling(build_flux(f, True), "inpaint"), {"mask": True, **T5}, 32, 64),
    "flux-fill": (build_flux_fill, {"mask": True, "fill": True, **T5}, 32, 384),
}


@pytest.mark.parametrize("name", list(SIBLING_CASES))
def test_each_sibling_runs_its_own_call(folder, name):
    build, task, size, channels = SIBLING_CASES[name]
    pipe = build(folder)
    image, mask = edit_inputs(size)
    kwargs = dict(prompt=PROMPT, image=image, height=size, width=size, num_inference_steps=4,
                  **{k: v for k, v in task.items() if k not in ("mask", "fill")})
    if task.get("mask"):
        kwargs["mask_image"] = mask
    if not task.get("fill"):
        kwargs["strength"] = 0.5  # the last int(4 · 0.5) = 2 steps of the 4-step grid
    else:
        kwargs["num_inference_steps"] = 2  # Fill has no strength: the whole 2-step grid
    with Calls(network(pipe)) as calls:
        out = pipe(**kwargs, generator=gen(1), output_type="np").images
    assert len(calls.batches) == 2 and network(pipe).config.in_channels == channels
    assert calls.shapes[0][-1 if "flux" in name else 1] == channels  # the extra inputs reach the network
    assert out.shape == (1, size, size, 3) and 0 <= out.min() < out.max() <= 1
    np.testing.assert_array_equal(pipe(**kwargs, generator=gen(1), output_type="np").images, out)


def test_siblings_share_the_components(sd3, dev, folder):
    for pipe, task in ((sd3, "img2img"), (sd3, "inpaint"), (dev, "img2img"), (dev, "inpaint")):
        twin = sibling(pipe, task)
        assert network(twin) is network(pipe) and twin.vae is pipe.vae and twin.text_encoder is pipe.text_encoder
    nine, four = build_sd_inpaint(folder, 9), build_sd(folder)  # a new UNet, the other components as build_sd's
    assert (nine.unet.config.in_channels, four.unet.config.in_channels) == (9, 4)
    for a, b in ((nine.text_encoder, four.text_encoder), (nine.vae, four.vae)):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(ValueError, match="no 'inpaint' sibling for DiTPipeline"):
        sibling(build_dit(), "inpaint")


# ---------------------------------------------------------------------------------------------
# the outside pipelines are diffusers' test dummies, not the project's design
# ---------------------------------------------------------------------------------------------
def test_outside_pipelines_mirror_diffusers_test_configs(folder):
    flux, sd3 = build_outside_flux(folder), build_outside_sd3(folder)
    t = flux.transformer.config
    assert (t.patch_size, t.in_channels, t.num_layers, t.num_single_layers, t.attention_head_dim,
            t.num_attention_heads, t.joint_attention_dim, t.pooled_projection_dim, tuple(t.axes_dims_rope),
            t.guidance_embeds) == (1, 4, 1, 1, 16, 2, 32, 32, (4, 4, 8), False)
    s = sd3.transformer.config
    assert (s.sample_size, s.patch_size, s.in_channels, s.num_layers, s.attention_head_dim, s.num_attention_heads,
            s.caption_projection_dim, s.joint_attention_dim, s.pooled_projection_dim, s.out_channels) == (
        32, 1, 4, 1, 8, 4, 32, 32, 64, 4)
    for pipe, latent_channels in ((flux, 1), (sd3, 4)):
        v = pipe.vae.config
        assert (v.block_out_channels, v.latent_channels, v.shift_factor, v.scaling_factor) == (
            (4,), latent_channels, 0.0609, 1.5035)
        assert pipe.vae_scale_factor == 1 and pipe.scheduler.config.shift == 1.0
        assert not pipe.scheduler.config.use_dynamic_shifting
        c = pipe.text_encoder.config
        assert (c.vocab_size, c.num_hidden_layers, c.eos_token_id, c.pad_token_id) == (1000, 5, 2, 1)
        e = pipe.text_encoder_2.config if pipe is flux else sd3.text_encoder_3.config
        assert (e.d_model, e.d_ff, e.d_kv, e.num_heads, e.num_layers, e.vocab_size) == (32, 37, 8, 4, 5, 1103)
    assert torch.equal(sd3.text_encoder.text_projection.weight, sd3.text_encoder_2.text_projection.weight)
