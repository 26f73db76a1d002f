"""Editing (issue 20): image-to-image and inpainting through NestedPipeline, against diffusers' own img2img /
inpaint pipelines on tiny random pipelines (4- and 9-channel SD UNets, SDXL, SD3 16- and 33-channel
transformers, Flux), with exact NFE labels, the known region kept in every frame, and mid-run mask / strength
changes."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from PIL import Image

from nested_diffusion import NestedPipeline
from nested_diffusion.pipelines.editing import edit_timesteps

from tiny_pipelines import (Calls, build_flux, build_sd, build_sd3, build_sd3_inpaint, build_sd_inpaint, build_sdxl,
                            gen, network, sibling)

TOL = dict(atol=1e-4, rtol=1e-4)
PROMPT = "a photo of a cat"


def picture(size: int, seed: int = 0) -> Image.Image:
    return Image.fromarray((np.random.default_rng(seed).random((size, size, 3)) * 255).astype("uint8"))


def square_mask(size: int, lo: float = 0.25, hi: float = 0.75) -> Image.Image:
    m = np.zeros((size, size), dtype="uint8")
    m[int(size * lo):int(size * hi), int(size * lo):int(size * hi)] = 255  # white = repaint
    return Image.fromarray(m)


@pytest.fixture(scope="module")
def pipes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("edit-tok")
    sd, sdxl, sd3, flux = build_sd(folder), build_sdxl(folder), build_sd3(folder), build_flux(folder, True)
    return {
        "sd-img2img": (sibling(sd, "img2img"), 16), "sd-inpaint": (sibling(sd, "inpaint"), 16),
        "sd-inpaint-9ch": (build_sd_inpaint(folder), 16),
        "sdxl-img2img": (sibling(sdxl, "img2img"), 32), "sdxl-inpaint": (sibling(sdxl, "inpaint"), 32),
        "sd3-img2img": (sibling(sd3, "img2img"), 32), "sd3-inpaint": (sibling(sd3, "inpaint"), 32),
        "sd3-inpaint-33ch": (build_sd3_inpaint(folder), 32),
        "flux-img2img": (sibling(flux, "img2img"), 32), "flux-inpaint": (sibling(flux, "inpaint"), 32),
    }


def edit_kwargs(name: str, size: int, strength: float) -> dict:
    kw = dict(prompt=PROMPT, image=picture(size), strength=strength, num_inference_steps=4, guidance_scale=3.0,
              height=size, width=size)
    if "inpaint" in name:
        kw["mask_image"] = square_mask(size)
    return kw


def diffusers_edit(pipe, **kw) -> torch.Tensor:
    out = pipe(**kw, generator=gen(3), output_type="latent").images
    if type(pipe).__name__.startswith("Flux"):
        out = pipe._unpack_latents(out, kw["height"], kw["width"], pipe.vae_scale_factor)
    return out


@pytest.mark.parametrize("name", ["sd-img2img", "sd-inpaint", "sd-inpaint-9ch", "sdxl-img2img", "sdxl-inpaint",
                                  "sd3-img2img", "sd3-inpaint", "sd3-inpaint-33ch", "flux-img2img", "flux-inpaint"])
@pytest.mark.parametrize("strength", [0.6, 1.0])
def test_vanilla_edit_equals_the_diffusers_pipeline(pipes, name, strength):
    """The same initial noise from the same generator, the last kept steps of the grid (the family's own
    get_timesteps rule), the known region re-noised after every step (or the 9/33-channel network's inputs)."""
    pipe, size = pipes[name]
    kw = edit_kwargs(name, size, strength)
    ref = diffusers_edit(pipe, **kw)
    nested = NestedPipeline.from_pipe(pipe)
    with Calls(network(pipe)) as calls:
        frames = list(nested.vanilla(**kw, sampler="ddim", eta=0.0, generator=gen(3), output_type="latent"))
    kept = nested.adapter.kept_steps(4, strength)
    assert [f.nfe for f in frames] == list(range(1, kept + 1)) and len(calls.batches) == kept
    torch.testing.assert_close(frames[-1].latents, ref, **TOL)
    assert ref.abs().max() > 0.1


def test_stochastic_vanilla_edit_draws_in_diffusers_order(pipes):
    """DDIM η = 0.7: the step noise comes after the input's latent sample, the initial noise and the masked
    image's latent sample — the same stream as diffusers'."""
    pipe, size = pipes["sd-inpaint"]
    kw = edit_kwargs("sd-inpaint", size, 0.8)
    ref = pipe(**kw, eta=0.7, generator=gen(3), output_type="latent").images
    ours = NestedPipeline.from_pipe(pipe).vanilla(**kw, sampler="ddim", eta=0.7, generator=gen(3), output_type="latent")
    torch.testing.assert_close(ours.run().latents, ref, **TOL)


@pytest.mark.parametrize("name", ["sd-img2img", "sd-inpaint", "sd-inpaint-9ch", "flux-img2img", "flux-inpaint"])
def test_nested_one_inner_step_is_the_vanilla_edit(pipes, name):
    """nested(K, 1) with strength s runs the last K times of the N-step grid whose strength-s edit has K steps:
    exactly that vanilla edit (outer DDIM η = 0)."""
    pipe, size = pipes[name]
    nested = NestedPipeline.from_pipe(pipe)
    kw = edit_kwargs(name, size, 0.6)
    kw.pop("num_inference_steps")
    grid, n = edit_timesteps(nested.adapter, nested.adapter.schedule_for(size, size), 3, 0.6)
    frames = list(nested.anytime(**kw, outer_steps=3, inner_steps=1, outer_eta=0.0, generator=gen(3),
                                 output_type="latent"))
    vanilla = list(nested.vanilla(**kw, num_inference_steps=n, sampler="ddim", eta=0.0, generator=gen(3),
                                  output_type="latent"))
    assert [f.timestep for f in frames] == [f.timestep for f in vanilla] == grid and len(vanilla) == 3
    torch.testing.assert_close(frames[-1].latents, vanilla[-1].latents, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["sd-inpaint", "sd3-inpaint", "flux-inpaint"])
def test_nested_inpainting_keeps_the_known_region_in_every_frame(pipes, name):
    """Blending after every inner and outer step: every frame's known region is the input's latents exactly,
    while the masked region changes; the budget counts the NFEs actually run (the planned default below the
    strength's level)."""
    pipe, size = pipes[name]
    nested = NestedPipeline.from_pipe(pipe)
    kw = edit_kwargs(name, size, 0.9)
    kw.pop("num_inference_steps")
    with Calls(network(pipe)) as calls:
        session = nested.anytime(**kw, budget=20, generator=gen(1), output_type="latent")
        frames = list(session)
    assert [f.nfe for f in frames] == session.checkpoints() and frames[-1].nfe == len(calls.batches) == 20
    edit = session.edit
    keep = 1 - edit.mask
    for frame in frames:
        torch.testing.assert_close(frame.latents * keep, edit.image * keep, rtol=0, atol=0)
    assert (frames[0].latents - frames[-1].latents).abs().max() > 1e-3
    assert frames[0].timestep <= edit_timesteps(nested.adapter, nested.adapter.schedule_for(size, size), 20, 0.9)[0][0]


def test_a_mask_and_a_strength_changed_mid_run(pipes):
    pipe, size = pipes["sd-inpaint"]
    nested = NestedPipeline.from_pipe(pipe)
    kw = edit_kwargs("sd-inpaint", size, 1.0)
    kw.pop("num_inference_steps")
    common = dict(**kw, outer_steps=4, inner_steps=3, output_type="latent")
    plain = list(nested.anytime(**common, generator=gen(2)))
    session = nested.anytime(**common, generator=gen(2))
    first = [session.step(), session.step()]
    wide = square_mask(size, 0.0, 1.0)  # repaint everything from now on
    session.set_edit(mask_image=wide)
    later = list(session)
    for a, b in zip(first, plain):
        torch.testing.assert_close(a.latents, b.latents, rtol=0, atol=0)
    old_keep = 1 - nested.anytime(**common).edit.mask
    assert (later[-1].latents * old_keep - session.edit.image * old_keep).abs().max() > 1e-3  # no longer kept
    # a new strength restarts the outer process below its level, within the session's total NFEs
    session = nested.anytime(**{**common, "strength": 1.0}, generator=gen(2))
    session.step()
    session.set_edit(strength=0.3)
    rest = list(session)
    assert rest[-1].nfe == 12 and rest[0].timestep < 400
    with pytest.raises(ValueError, match="strength must lie in"):
        session.set_edit(strength=0.0)


def test_edits_fork_per_image(pipes):
    pipe, size = pipes["flux-inpaint"]
    nested = NestedPipeline.from_pipe(pipe)
    kw = edit_kwargs("flux-inpaint", size, 0.8)
    kw.pop("num_inference_steps")
    images = [picture(size, 1), picture(size, 2)]
    session = nested.anytime(**{**kw, "image": images}, num_images=2, budget=10, generator=gen(4), output_type="latent")
    session.step()
    child = session.fork(torch.Generator().manual_seed(5), indices=[1, 1])
    assert torch.equal(child.edit.image, session.edit.image[[1, 1]])
    final = child.run().latents
    keep = 1 - child.edit.mask
    torch.testing.assert_close(final * keep, child.edit.image * keep, rtol=0, atol=0)


def test_prompt_edits_and_forks_keep_an_edit_their_own(pipes):
    """A prompt edit keeps a 9-channel network's mask and masked-image latents (they are no condition); a fork's
    set_edit changes the fork only — its parent's Edit, mask inputs and frames stay (the studio computes every
    step on such a fork)."""
    pipe, size = pipes["sd-inpaint-9ch"]
    nested = NestedPipeline.from_pipe(pipe)
    kw = edit_kwargs("sd-inpaint-9ch", size, 1.0)
    kw.pop("num_inference_steps")
    common = dict(**kw, outer_steps=3, inner_steps=2, output_type="latent")
    plain = list(nested.anytime(**common, generator=gen(2)))
    session = nested.anytime(**common, generator=gen(2))
    session.step()
    inputs = {k: session.core.model_kwargs[k] for k in ("mask", "masked_image_latents")}
    child = session.fork()
    child.set_condition(prompt="a dog")
    assert all(torch.equal(child.core.model_kwargs[k], v) for k, v in inputs.items())
    with Calls(network(pipe)) as calls:
        child.step()
    assert [shape[1] for shape in calls.shapes] == [9, 9]  # the network still gets its 9 input channels
    child.set_edit(mask_image=square_mask(size, 0.0, 0.5))
    assert not torch.equal(child.edit.mask_pixels, session.edit.mask_pixels)
    assert all(torch.equal(session.core.model_kwargs[k], v) for k, v in inputs.items())
    assert torch.equal(session.edit.mask_pixels, nested.anytime(**common).edit.mask_pixels)
    rest = list(session)
    for a, b in zip([plain[0], *rest], plain):
        torch.testing.assert_close(a.latents, b.latents, rtol=0, atol=0)


@pytest.mark.parametrize("bad,match", [
    (dict(mask_image=square_mask(24)), "mask_image must have the image's size"),
    (dict(strength=0.0), "strength must lie in"),
    (dict(strength=1.5), "strength must lie in"),
    (dict(image="not an image"), "image must be"),
    (dict(image=picture(15)), "height must be a positive multiple of"),
    (dict(latents=torch.zeros(1, 4, 2, 2)), "an edit starts from image"),
])
def test_bad_edits_before_any_network_call(pipes, bad, match):
    pipe, size = pipes["sd-inpaint"]
    nested = NestedPipeline.from_pipe(pipe)
    kw = {**edit_kwargs("sd-inpaint", size, 0.8), **bad}
    kw.pop("num_inference_steps")
    if "image" in bad and not isinstance(bad["image"], Image.Image):
        kw.pop("height"), kw.pop("width")
    if bad.get("image") is not None and isinstance(bad["image"], Image.Image):
        kw.pop("height"), kw.pop("width"), kw.pop("mask_image")
    with Calls(network(pipe)) as calls:
        with pytest.raises((ValueError, TypeError), match=match):
            nested.anytime(**kw)
    assert calls.batches == []


def test_edit_arguments_need_an_image_and_networks_their_inputs(pipes, digits):
    pipe, size = pipes["sd-inpaint-9ch"]
    nested = NestedPipeline.from_pipe(pipe)
    with pytest.raises(ValueError, match="give image too"):
        nested.anytime(prompt=PROMPT, strength=0.5)
    with pytest.raises(ValueError, match="dedicated inpainting model"):
        nested.anytime(prompt=PROMPT, image=picture(size))
    with pytest.raises(ValueError, match="inpainting network"):
        nested.anytime(prompt=PROMPT, height=size, width=size).step()
    with pytest.raises(ValueError, match="nested DDRM"):
        digits.anytime(class_labels=[3], image=np.zeros((28, 28, 1), dtype=np.uint8), mask_image=square_mask(28))


def test_image_to_image_on_a_pixel_model(digits):
    """Pixel models gain image-to-image: the state is the image, so at strength s the first frame starts from
    the input noised to s; nothing is encoded, nothing drawn but the initial noise."""
    image = np.zeros((28, 28, 1), dtype=np.uint8)
    image[6:22, 12:16] = 255  # a "1"
    session = digits.anytime(class_labels=[7], image=image, strength=0.5, budget=20, generator=gen(0),
                             output_type="latent")
    frames = list(session)
    assert frames[-1].nfe == 20 and frames[0].timestep <= 499
    torch.testing.assert_close(session.edit.image, torch.from_numpy(image).float().permute(2, 0, 1)[None] / 127.5 - 1)
    vanilla = digits.vanilla(class_labels=[7], image=image, strength=0.5, num_inference_steps=20, generator=gen(0))
    assert len(list(vanilla)) == 10


@pytest.fixture(scope="module")
def digits():
    return NestedPipeline.from_pretrained()
