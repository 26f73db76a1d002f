"""NestedPipeline on diffusers' latent families (Stable Diffusion ε / v, SDXL, DiT) and DDPM.

Every pipeline is built with tiny random weights by ``tests/tiny_pipelines.py`` (a CLIP tokenizer
from a vocabulary written into a temporary folder); nothing is downloaded. The strongest checks are
parity with diffusers' own pipelines: nested diffusion with one inner step is DDIM with η = outer η,
so it must equal the diffusers pipeline run with ``DDIMScheduler(timestep_spacing="trailing",
set_alpha_to_one=True)``.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from diffusers import (FlowMatchEulerDiscreteScheduler, StableDiffusionImg2ImgPipeline, StableDiffusionPipeline,
                       Transformer2DModel)
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image
from tiny_pipelines import Calls, build_ddpm, build_dit, build_sd, build_sdxl, gen, network
from tiny_pipelines import make_tokenizer  # noqa: F401  (re-exported: other test modules import it from here)

from nested_diffusion import NestedPipeline
from nested_diffusion.cli import main as cli_main
from nested_diffusion.schedules import flow_matching, spaced_timesteps

TOL = dict(atol=1e-4, rtol=1e-4)
PROMPT = "a photo of a cat"


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return build_sd(tmp_path_factory.mktemp("sd-tok"))


@pytest.fixture(scope="module")
def sd_v(tmp_path_factory):
    return build_sd(tmp_path_factory.mktemp("sdv-tok"), "v_prediction")


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory):
    return build_sdxl(tmp_path_factory.mktemp("sdxl-tok"))


@pytest.fixture(scope="module")
def dit():
    return build_dit()


@pytest.fixture(scope="module")
def ddpm():
    return build_ddpm()


# ---------------------------------------------------------------------------------------------
# families, schedules and noise
# ---------------------------------------------------------------------------------------------
def test_families_read_the_pipeline_configs(sd, sd_v, sdxl, dit, ddpm):
    expected = {"stable-diffusion": sd, "stable-diffusion-xl": sdxl, "dit": dit, "unet2d": ddpm}
    for family, pipe in expected.items():
        a = NestedPipeline.from_pipe(pipe).adapter
        assert a.family == family
        assert a.schedule.alphas_cumprod.dtype == torch.float64
        assert torch.equal(a.schedule.alphas_cumprod, pipe.scheduler.alphas_cumprod.double())
    a = NestedPipeline.from_pipe(sd).adapter
    assert a.prediction_type == "epsilon" and a.scaling_factor == 0.5 and a.vae_scale_factor == 2
    assert a.default_guidance == 7.5 and a.default_size == (16, 16)
    assert NestedPipeline.from_pipe(sd_v).adapter.prediction_type == "v_prediction"
    assert NestedPipeline.from_pipe(sdxl).adapter.default_guidance == 5.0
    d = NestedPipeline.from_pipe(dit).adapter
    assert (d.num_classes, d.null_class, d.learned_sigma, d.default_guidance) == (1000, 1000, True, 4.0)
    assert d.class_names[207] == "golden retriever" and d.class_names[0] == "tench" and d.class_names[5] == "5"
    # schedule from the config, not literals: a different beta schedule gives a different ᾱ
    assert not torch.allclose(NestedPipeline.from_pipe(dit).adapter.schedule.alphas_cumprod, a.schedule.alphas_cumprod)


def test_unsupported_pipelines_fail_clearly(sd):
    class OtherPipeline:  # a pipeline of no supported family (an SD UNet inside does not make it one)
        unet, scheduler, vae = sd.unet, sd.scheduler, sd.vae

    with pytest.raises(ValueError, match="unsupported pipeline OtherPipeline.*stable-diffusion, "
                                         "stable-diffusion-xl, dit"):
        NestedPipeline.from_pipe(OtherPipeline())
    # the img2img sibling's components make the text-to-image pipeline (issue 20: it edits through it)
    img2img = StableDiffusionImg2ImgPipeline(**sd.components)
    assert NestedPipeline.from_pipe(img2img).adapter.unet is sd.unet
    from diffusers import EDMEulerScheduler

    edm = StableDiffusionPipeline(**{**sd.components, "scheduler": EDMEulerScheduler()})
    with pytest.raises(ValueError, match="neither alphas_cumprod nor a flow-matching config"):
        NestedPipeline.from_pipe(edm)
    karras = StableDiffusionPipeline(**{**sd.components, "scheduler": FlowMatchEulerDiscreteScheduler(use_karras_sigmas=True)})
    with pytest.raises(ValueError, match="Karras"):
        NestedPipeline.from_pipe(karras)
    # a flow-matching scheduler is a schedule the core speaks now (its network predicts the velocity)
    flow = StableDiffusionPipeline(**{**sd.components, "scheduler": FlowMatchEulerDiscreteScheduler(shift=3.0)})
    adapter = NestedPipeline.from_pipe(flow).adapter
    assert adapter.prediction_type == "flow" and adapter.schedule == flow_matching(3.0)
    with pytest.raises(ValueError, match="unsupported pipeline"):
        NestedPipeline.from_pipe(object())


def test_initial_noise_is_drawn_like_diffusers(sd, sdxl, dit, ddpm):
    a = NestedPipeline.from_pipe(sd).adapter
    ours = a.initial_noise(3, gen(11))
    theirs = sd.prepare_latents(3, 4, 16, 16, torch.float32, torch.device("cpu"), gen(11))
    assert ours.shape == (3, 4, 8, 8) and torch.equal(ours, theirs)
    assert a.initial_noise(1, gen(11), height=32, width=24).shape == (1, 4, 16, 12)
    x = NestedPipeline.from_pipe(sdxl).adapter.initial_noise(2, gen(3))
    assert torch.equal(x, sdxl.prepare_latents(2, 4, 16, 16, torch.float32, torch.device("cpu"), gen(3)))
    x = NestedPipeline.from_pipe(dit).adapter.initial_noise(2, gen(4))
    assert torch.equal(x, randn_tensor((2, 4, 8, 8), generator=gen(4), device=torch.device("cpu")))
    x = NestedPipeline.from_pipe(ddpm).adapter.initial_noise(2, gen(5))
    assert torch.equal(x, randn_tensor((2, 3, 8, 8), generator=gen(5), device=torch.device("cpu")))


# ---------------------------------------------------------------------------------------------
# parity with diffusers' own pipelines
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("eta", [0.0, 0.6])
@pytest.mark.parametrize("which", ["sd", "sd_v"])
def test_nested_one_inner_step_equals_diffusers_sd(request, which, eta):
    pipe = request.getfixturevalue(which)
    nested = NestedPipeline.from_pipe(pipe)
    kwargs = dict(prompt=[PROMPT, "a dog"], negative_prompt=["blurry", "ugly"], guidance_scale=3.0)
    ref = pipe(**kwargs, num_images_per_prompt=2, num_inference_steps=4, eta=eta, generator=gen(7),
               output_type="latent").images
    frames = list(nested.anytime(**kwargs, num_images=4, outer_steps=4, inner_steps=1, outer_eta=eta,
                                 generator=gen(7), output_type="latent"))
    assert [f.nfe for f in frames] == [1, 2, 3, 4] and [f.timestep for f in frames] == [999, 749, 499, 249]
    assert ref.shape == frames[-1].images.shape == (4, 4, 8, 8)
    torch.testing.assert_close(frames[-1].images, ref, **TOL)
    assert ref.abs().max() > 0.1  # a real comparison, not of zeros
    # the vanilla baseline (DDIM with η on the same trailing grid) is the same sampler
    last = nested.vanilla(**kwargs, num_images=4, num_inference_steps=4, sampler="ddim", eta=eta,
                          generator=gen(7), output_type="latent").run()
    torch.testing.assert_close(last.images, ref, **TOL)


@pytest.mark.parametrize("outer_eta", [0.0, 1.0])
def test_nested_with_several_inner_steps_equals_diffusers_schedulers(sd, outer_eta):
    """nested(K, M) on the SD pipeline, reproduced with diffusers' own schedulers and the pipeline's UNet:
    each inner run a DPMSolverMultistepScheduler over the inner grid from the outer state, each outer step a
    DDIMScheduler step (trailing, η = outer η) whose x̂0 is the inner run's output (ε̂ rewritten from it)."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    K, M = 4, 3  # K divides 1000: diffusers' trailing DDIM then steps exactly between its own timesteps
    nested = NestedPipeline.from_pipe(sd)
    frames = list(nested.anytime(prompt=PROMPT, num_images=2, guidance_scale=1.0, outer_steps=K, inner_steps=M,
                                 inner_sampler="dpmpp-2m", inner_eta=0.0, outer_eta=outer_eta, generator=gen(5),
                                 output_type="latent"))
    g = gen(5)
    x = randn_tensor((2, 4, 8, 8), generator=g, dtype=torch.float32)
    embeddings, _ = sd.encode_prompt([PROMPT], torch.device("cpu"), 2, False)
    unet = lambda x, t: sd.unet(x, t, encoder_hidden_states=embeddings).sample  # noqa: E731
    outer = DDIMScheduler.from_config(sd.scheduler.config, timestep_spacing="trailing", set_alpha_to_one=True,
                                      clip_sample=False)
    outer.set_timesteps(K)
    a = outer.alphas_cumprod.double()
    assert [f.timestep for f in frames] == outer.timesteps.tolist()
    for k, tau in enumerate(outer.timesteps):
        inner = DPMSolverMultistepScheduler.from_config(sd.scheduler.config, solver_order=2,
                                                        algorithm_type="dpmsolver++", final_sigmas_type="zero")
        inner.set_timesteps(timesteps=spaced_timesteps(int(tau), M))
        y = x
        for t in inner.timesteps:
            y = inner.step(unet(y, t), t, y).prev_sample
        torch.testing.assert_close(frames[k].latents, y, **TOL)
        eps = (x - a[tau].sqrt() * y) / (1 - a[tau]).sqrt()  # the inner sample as the outer step's x̂0
        x = outer.step(eps.float(), tau, x, eta=outer_eta, generator=g).prev_sample if k + 1 < K else y
    assert [f.nfe for f in frames] == [3, 6, 9, 12]


def test_explicit_latents_match_diffusers_latents(sd):
    latents = torch.randn(2, 4, 8, 8, generator=gen(21))
    ref = sd(PROMPT, num_images_per_prompt=2, num_inference_steps=5, guidance_scale=2.0, latents=latents,
             output_type="latent").images
    out = NestedPipeline.from_pipe(sd)(prompt=PROMPT, latents=latents, outer_steps=5, inner_steps=1, outer_eta=0.0,
                                       guidance_scale=2.0, output_type="latent").images  # diffusers' DDIM: η = 0
    assert out.shape == (2, 4, 8, 8)
    torch.testing.assert_close(out, ref, **TOL)
    with pytest.raises(ValueError, match=r"latents must have shape \(2, 4, 8, 8\)"):
        NestedPipeline.from_pipe(sd).anytime(prompt=PROMPT, latents=torch.zeros(2, 4, 6, 6))


def test_nested_one_inner_step_equals_diffusers_sdxl(sdxl):
    ref = sdxl(PROMPT, negative_prompt="blurry", num_images_per_prompt=2, num_inference_steps=5, guidance_scale=4.0,
               eta=0.5, generator=gen(3), output_type="latent").images
    out = NestedPipeline.from_pipe(sdxl)(prompt=PROMPT, negative_prompt="blurry", num_images=2, outer_steps=5,
                                         inner_steps=1, outer_eta=0.5, guidance_scale=4.0, generator=gen(3),
                                         output_type="latent").images
    torch.testing.assert_close(out, ref, **TOL)
    assert ref.abs().max() > 0.1


@pytest.mark.parametrize("legacy", [False, True])
def test_nested_one_inner_step_equals_diffusers_dit(dit, legacy):
    # DiTPipeline's scheduler steps the doubled batch, so its DDIM noise differs for η > 0: compare η = 0
    if legacy:
        dit = build_dit(Transformer2DModel)
        assert type(dit.transformer).__name__ == "Transformer2DModel"
    ref = dit(class_labels=[207, 3], num_inference_steps=4, guidance_scale=4.0, generator=gen(9),
              output_type="pt").images
    frame = NestedPipeline.from_pipe(dit)(class_labels=[207, 3], outer_steps=4, inner_steps=1, outer_eta=0.0,
                                          guidance_scale=4.0, generator=gen(9), output_type="pt")
    assert frame.images.shape == ref.shape == (2, 3, 16, 16)
    torch.testing.assert_close(frame.images, ref, **TOL)
    assert ref.std() > 0.01


def test_vanilla_ddpm_equals_diffusers_ddpm(ddpm, monkeypatch):
    """Compared before DDPMPipeline clamps its output to [0, 1] (the raw last step), and after."""
    last = []
    step = ddpm.scheduler.step
    monkeypatch.setattr(ddpm.scheduler, "step", lambda *a, **k: (lambda out: (last.append(out.prev_sample), out)[1])(
        step(*a, **k)))
    ref = ddpm(batch_size=2, num_inference_steps=5, generator=gen(4), output_type="np").images
    raw = last[-1]
    assert (raw.abs() > 1).float().mean() > 0.3  # this random network's output saturates when clamped: compare raw
    session = NestedPipeline.from_pipe(ddpm).vanilla(num_images=2, num_inference_steps=5, sampler="ddpm",
                                                     generator=gen(4), output_type="latent")
    out = session.run().latents
    torch.testing.assert_close(out, raw, **TOL)
    np.testing.assert_allclose(session.decode(out, "np"), ref, atol=1e-4)
    assert ref.shape == (2, 8, 8, 3)


def test_clip_sample_follows_the_scheduler_config():
    """Pixel models with ``clip_sample=True`` (DDPMScheduler's default) clip x̂0 at every step, as diffusers does."""
    ddpm = build_ddpm(clip_sample=True)
    with torch.no_grad():
        for p in ddpm.unet.parameters():
            p.mul_(3.0)  # push x̂0 far outside [-1, 1] so that clipping matters
    ref = ddpm(batch_size=2, num_inference_steps=5, generator=gen(4), output_type="np").images
    nested = NestedPipeline.from_pipe(ddpm)
    assert nested.adapter.clip_sample == 1.0
    out = nested.vanilla(num_images=2, num_inference_steps=5, sampler="ddpm", generator=gen(4), output_type="np")
    np.testing.assert_allclose(out.run().images, ref, atol=1e-4)
    frames = list(nested.anytime(num_images=2, outer_steps=3, inner_steps=2, output_type="latent", generator=gen(1)))
    assert all(f.latents.abs().max() <= 1.0 + 1e-5 for f in frames)
    nested.adapter.clip_sample = None
    unclipped = list(nested.anytime(num_images=2, outer_steps=3, inner_steps=2, output_type="latent", generator=gen(1)))
    assert unclipped[0].latents.abs().max() > 1.5


def test_explicit_latents_on_a_pixel_model(ddpm):
    nested = NestedPipeline.from_pipe(ddpm)
    kwargs = dict(outer_steps=3, inner_steps=2, inner_eta=0.0, outer_eta=0.0, output_type="latent")  # deterministic
    drawn = nested(num_images=2, generator=gen(8), **kwargs).images
    given = nested(latents=randn_tensor((2, 3, 8, 8), generator=gen(8)), **kwargs).images
    assert torch.equal(drawn, given)
    with pytest.raises(ValueError, match="latents must hold 3 images"):
        nested.anytime(num_images=3, latents=torch.zeros(2, 3, 8, 8))


# ---------------------------------------------------------------------------------------------
# outputs, NFEs, determinism, decoding
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("output_type", ["pil", "np", "pt", "latent"])
@pytest.mark.parametrize("which", ["sd", "sdxl", "dit"])
def test_output_types(request, which, output_type):
    pipe = request.getfixturevalue(which)
    condition = dict(class_labels=[1, 2]) if which == "dit" else dict(prompt=[PROMPT, "a dog"])
    frame = NestedPipeline.from_pipe(pipe)(**condition, outer_steps=2, inner_steps=2, output_type=output_type,
                                           generator=gen(0))
    images = frame.images
    assert frame.latents.shape == (2, 4, 8, 8) and frame.latents.dtype == torch.float32 and frame.nfe == 4
    if output_type == "pil":
        assert len(images) == 2 and all(isinstance(im, Image.Image) for im in images)
        assert images[0].size == (16, 16) and images[0].mode == "RGB"
    elif output_type == "np":
        assert isinstance(images, np.ndarray) and images.shape == (2, 16, 16, 3) and images.dtype == np.float32
        assert 0 <= images.min() < images.max() <= 1
    elif output_type == "pt":
        assert images.shape == (2, 3, 16, 16) and images.dtype == torch.float32
        assert 0 <= images.min() < images.max() <= 1
    else:
        assert torch.equal(images, frame.latents)


def test_decode_matches_the_pipeline_vae(sd):
    nested = NestedPipeline.from_pipe(sd)
    latents = torch.randn(1, 4, 8, 8, generator=gen(2))
    with torch.no_grad():
        ref = sd.image_processor.postprocess(sd.vae.decode(latents / 0.5).sample, output_type="pt")
    torch.testing.assert_close(nested.anytime(prompt=PROMPT).decode(latents, "pt"), ref)


@pytest.mark.parametrize("which", ["sd", "sdxl", "dit"])
def test_nfe_counts_and_guidance_batches(request, which):
    pipe = request.getfixturevalue(which)
    nested = NestedPipeline.from_pipe(pipe)
    condition = dict(class_labels=[5]) if which == "dit" else dict(prompt=PROMPT)
    with Calls(network(pipe)) as calls:
        frames = list(nested.anytime(**condition, num_images=3, outer_steps=3, inner_steps=4, guidance_scale=3.0,
                                     output_type="latent"))
        assert [f.nfe for f in frames] == [4, 8, 12] and calls.batches == [6] * 12  # CFG: one doubled batch = 1 NFE
        if which == "sdxl":
            time_ids = calls.kwargs[0]["added_cond_kwargs"]["time_ids"]
            assert time_ids.tolist() == [[16, 16, 0, 0, 16, 16]] * 6
            assert calls.kwargs[0]["added_cond_kwargs"]["text_embeds"].shape == (6, 32)
        calls.batches.clear()
        nested.anytime(**condition, num_images=3, outer_steps=2, inner_steps=3, guidance_scale=1.0).run()
        assert calls.batches == [3] * 6  # no guidance: a single batch
        calls.batches.clear()
        frames = list(nested.vanilla(**condition, num_images=2, num_inference_steps=5, output_type="latent"))
        assert [f.nfe for f in frames] == [1, 2, 3, 4, 5] and calls.batches == [4] * 5


def test_nfe_count_is_min_of_inner_steps_and_timesteps(ddpm):
    nested = NestedPipeline.from_pipe(ddpm)
    with Calls(ddpm.unet) as calls:
        frames = list(nested.anytime(num_images=2, outer_steps=5, inner_steps=30, output_type="latent"))
    taus = spaced_timesteps(99, 5)
    assert taus == [99, 79, 59, 39, 19]
    expected = np.cumsum([min(30, t + 1) for t in taus]).tolist()
    assert [f.nfe for f in frames] == expected == [30, 60, 90, 120, 140] and len(calls.batches) == 140


@pytest.mark.parametrize("which", ["sd", "dit"])
def test_determinism_under_a_generator(request, which):
    nested = NestedPipeline.from_pipe(request.getfixturevalue(which))
    condition = dict(class_labels=[7, 8]) if which == "dit" else dict(prompt=[PROMPT, "a dog"])

    def run(seed):
        return [f.latents for f in nested.anytime(**condition, outer_steps=3, inner_steps=2, generator=gen(seed),
                                                  output_type="latent")]

    a, b, c = run(1), run(1), run(2)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert all((x - y).abs().max() > 1e-2 for x, y in zip(a, c))


def test_decode_every(sd, monkeypatch):
    nested = NestedPipeline.from_pipe(sd)
    decoded = []
    original = sd.vae.decode
    monkeypatch.setattr(sd.vae, "decode", lambda z, *a, **k: (decoded.append(z.shape[0]), original(z, *a, **k))[1])
    frames = list(nested.anytime(prompt=PROMPT, num_images=2, outer_steps=5, inner_steps=1, decode_every=2,
                                 output_type="np"))
    assert [f.images is not None for f in frames] == [False, True, False, True, True]
    assert decoded == [2, 2, 2]
    assert frames[1].images.shape == (2, 16, 16, 3)
    decoded.clear()
    frames = list(nested.vanilla(prompt=PROMPT, num_inference_steps=7, decode_every=3, output_type="pt"))
    assert [f.images is not None for f in frames] == [False, False, True, False, False, True, True]
    assert decoded == [1, 1, 1]
    # the frames decoded are those of a decode_every=1 run with the same seed, and a skipped one decodes on demand
    every = list(nested.vanilla(prompt=PROMPT, num_inference_steps=7, decode_every=1, output_type="pt",
                                generator=gen(3)))
    sparse = list(nested.vanilla(prompt=PROMPT, num_inference_steps=7, decode_every=3, output_type="pt",
                                 generator=gen(3)))
    for a, b in zip(every, sparse):
        torch.testing.assert_close(a.latents, b.latents, rtol=0, atol=0)
        if b.images is not None:
            torch.testing.assert_close(b.images, a.images, rtol=0, atol=0)
    session = nested.vanilla(prompt=PROMPT, num_inference_steps=7, decode_every=3, output_type="pt")
    torch.testing.assert_close(session.decode(sparse[0].latents), every[0].images, rtol=0, atol=0)
    assert every[0].images.abs().max() > 0


# ---------------------------------------------------------------------------------------------
# interventions: prompt change, fork
# ---------------------------------------------------------------------------------------------
def test_prompt_change_mid_session_changes_later_frames_only(sd):
    nested = NestedPipeline.from_pipe(sd)

    def session():
        return nested.anytime(prompt=PROMPT, outer_steps=4, inner_steps=2, guidance_scale=3.0, generator=gen(5),
                              output_type="latent")

    reference = [f.latents for f in session()]
    changed = session()
    early = [changed.step().latents, changed.step().latents]
    changed.set_condition(prompt="a dog")
    late = [f.latents for f in changed]
    assert all(torch.equal(x, y) for x, y in zip(early, reference[:2]))
    assert all((x - y).abs().max() > 1e-3 for x, y in zip(late, reference[2:]))
    # the new condition is exactly the pipeline's own encoding of the new prompt
    positive, negative = sd.encode_prompt(["a dog"], torch.device("cpu"), 1, True, None)
    torch.testing.assert_close(changed.core.model_kwargs["encoder_hidden_states"], positive)
    torch.testing.assert_close(changed.core.model_kwargs["negative_encoder_hidden_states"], negative)
    assert changed.condition["prompt"] == "a dog"
    # switching guidance off mid-session halves the batch of the following calls
    s = session()
    s.step()
    s.set_condition(guidance_scale=1.0)
    with Calls(sd.unet) as calls:
        s.step()
    assert calls.batches == [1, 1]


def test_fork_with_generators_gives_independent_branches(sd):
    nested = NestedPipeline.from_pipe(sd)

    def session():
        return nested.anytime(prompt=PROMPT, outer_steps=3, inner_steps=2, generator=gen(1), output_type="latent")

    reference = [f.latents for f in session()]
    parent = session()
    first = parent.step()
    one, two, one_again = parent.fork(gen(10)), parent.fork(gen(20)), parent.fork(gen(10))
    a, b, c = [[f.latents for f in s] for s in (one, two, one_again)]
    assert all(torch.equal(x, y) for x, y in zip(a, c))  # same generator seed: same branch
    assert all((x - y).abs().max() > 1e-2 for x, y in zip(a, b))  # different seeds: different branches
    assert [f.nfe for f in one_again] == [] and one.nfe == two.nfe == 6
    rest = [f.latents for f in parent]  # the parent is untouched by its children
    assert torch.equal(first.latents, reference[0]) and all(torch.equal(x, y) for x, y in zip(rest, reference[1:]))


# ---------------------------------------------------------------------------------------------
# loading, CLI, bad input
# ---------------------------------------------------------------------------------------------
def test_from_pretrained_local_folders(tmp_path, sd, ddpm):
    with pytest.raises(ValueError, match="does not exist"):
        NestedPipeline.from_pretrained(tmp_path / "missing")
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "model_index.json").write_bytes(b"\x00\xff{{ not json")
    with pytest.raises(ValueError, match="cannot load the pipeline from folder"):
        NestedPipeline.from_pretrained(garbage)
    broken = tmp_path / "broken-weights"
    ddpm.save_pretrained(broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"corrupt" * 10)
    with pytest.raises(ValueError, match="cannot load the pipeline from folder"):
        NestedPipeline.from_pretrained(broken)
    # a saved SD folder loads offline into the same adapter and samples identically
    folder = tmp_path / "sd"
    sd.save_pretrained(folder)
    loaded = NestedPipeline.from_pretrained(folder)
    assert loaded.adapter.family == "stable-diffusion"
    kwargs = dict(prompt=PROMPT, outer_steps=2, inner_steps=2, output_type="latent")
    torch.testing.assert_close(loaded(**kwargs, generator=gen(0)).images,
                               NestedPipeline.from_pipe(sd)(**kwargs, generator=gen(0)).images)


def test_cli_with_prompt_and_class(tmp_path, sd, dit, capsys):
    sd.save_pretrained(tmp_path / "sd")
    out = tmp_path / "out-sd"
    assert cli_main(["generate", "--model", str(tmp_path / "sd"), "--prompt", PROMPT, "--outer", "2", "--inner", "2",
                     "--out", str(out)]) == 0
    summary = json.loads((out / "run.json").read_text())
    assert summary["nfe"] == [2, 4] and summary["prompt"] == PROMPT and summary["guidance_scale"] == 7.5
    with Image.open(out / "frames" / "sample-00" / "nested-nfe-004.png") as im:
        assert im.size == (16, 16) and im.mode == "RGB"
    dit.save_pretrained(tmp_path / "dit")
    out = tmp_path / "out-dit"
    assert cli_main(["generate", "--model", str(tmp_path / "dit"), "--class", "207", "--outer", "2", "--inner", "1",
                     "--out", str(out)]) == 0
    summary = json.loads((out / "run.json").read_text())
    assert summary["nfe"] == [1, 2] and summary["class_labels"] == [207]
    capsys.readouterr()
    assert cli_main(["generate", "--model", str(tmp_path / "dit"), "--outer", "1", "--inner", "1",
                     "--out", str(tmp_path / "x")]) == 2
    assert "choose some with --class" in capsys.readouterr().err


@pytest.mark.parametrize("which,kwargs,match", [
    ("sd", dict(class_labels=[1]), "text-conditional"),
    ("sd", dict(prompt=PROMPT, height=15), "height must be a positive multiple of 2"),
    ("sd", dict(prompt=[PROMPT, "a dog"], num_images=3), "multiple of the number of prompts"),
    ("sd", dict(prompt=[PROMPT, "a dog"], negative_prompt=["x"]), "negative_prompt"),
    ("sd", dict(prompt=3), "prompt must be a string"),
    ("sd", dict(prompt=PROMPT, guidance_scale=float("nan")), "guidance_scale"),
    ("sdxl", dict(class_labels=[1]), "text-conditional"),
    ("dit", dict(prompt=PROMPT), "not text-conditional"),
    ("dit", dict(class_labels=[1000]), r"lie in \[0, 999\]"),
    ("dit", dict(class_labels=[1.5]), "integers"),
    ("dit", dict(class_labels=[1], width=18), "multiple of 4"),
    ("dit", dict(class_labels=[1], latents=[0.0]), "latents must be"),
])
def test_bad_arguments(request, which, kwargs, match):
    nested = NestedPipeline.from_pipe(request.getfixturevalue(which))
    with pytest.raises(ValueError, match=match):
        nested.anytime(**kwargs)


def test_unconditional_dit_uses_the_null_class(dit):
    nested = NestedPipeline.from_pipe(dit)
    session = nested.anytime(num_images=2, outer_steps=1, inner_steps=1)
    assert session.core.model_kwargs["class_labels"].tolist() == [1000, 1000]
    assert session.core.model_kwargs["guidance_scale"] == 1.0
    with Calls(dit.transformer) as calls:
        session.run()
    assert calls.batches == [2]
