"""NestedPipeline on UNet2D pipelines (tiny random weights, class-conditional and unconditional)."""

import json

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

from nested_diffusion import NestedPipeline, nested_sample


def tiny_unet(num_class_embeds=None):
    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       layers_per_block=1, norm_num_groups=4, num_class_embeds=num_class_embeds)


@pytest.fixture(scope="module")
def class_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-class-unet")
    DDPMPipeline(unet=tiny_unet(4), scheduler=DDPMScheduler(num_train_timesteps=100, clip_sample=False)) \
        .save_pretrained(folder)
    (folder / "nested_diffusion.json").write_text(json.dumps({"class_names": list("abc"), "default_guidance": 3.0}))
    return folder


class CallLog:
    def __init__(self, unet):
        self.batches = []
        self.handle = unet.register_forward_hook(lambda m, args, kwargs, out: self.batches.append(args[0].shape[0]),
                                                 with_kwargs=True)


def test_class_conditional_nested(class_folder):
    pipe = NestedPipeline.from_pretrained(class_folder)
    a = pipe.adapter
    assert a.num_classes == 3 and a.null_class == 3 and a.default_guidance == 3.0 and a.family == "unet2d"
    log = CallLog(a.unet)
    session = pipe.anytime(class_labels=[0, 2], outer_steps=4, inner_steps=3, generator=torch.Generator().manual_seed(0))
    frames = list(session)
    assert [f.nfe for f in frames] == [3, 6, 9, 12]
    assert log.batches == [4] * 12  # guidance: one doubled batch per NFE
    assert len(frames[-1].images) == 2 and frames[-1].images[0].size == (8, 8) and frames[-1].images[0].mode == "L"
    assert frames[-1].latents.shape == (2, 1, 8, 8)
    # guidance 1 runs a single batch
    log.batches.clear()
    pipe.anytime(class_labels=1, num_images=3, guidance_scale=1.0, outer_steps=2, inner_steps=2).run()
    assert log.batches == [3] * 4


def test_matches_core_with_the_scheduler_schedule(class_folder):
    """The adapter is only a model: the pipeline's frames equal the core sampler's on its callable
    (the pipeline's default inner sampler is the project default, DPM-Solver++(2M))."""
    pipe = NestedPipeline.from_pretrained(class_folder)
    a = pipe.adapter
    g = torch.Generator().manual_seed(5)
    frames = list(pipe.anytime(class_labels=[1], outer_steps=3, inner_steps=2, output_type="latent", generator=g))
    g = torch.Generator().manual_seed(5)
    noise = torch.randn(1, 1, 8, 8, generator=g)
    ac = DDPMScheduler.from_pretrained(class_folder / "scheduler").alphas_cumprod
    with torch.inference_mode():
        core = list(nested_sample(a, ac, noise, outer_steps=3, inner_steps=2, generator=g, inner_sampler="dpmpp-2m",
                                  model_kwargs={"class_labels": torch.tensor([1]), "guidance_scale": 3.0}))
    for f, c in zip(frames, core):
        torch.testing.assert_close(f.images, c.image)


@pytest.mark.parametrize("output_type", ["pil", "np", "pt", "latent"])
def test_output_types(class_folder, output_type):
    pipe = NestedPipeline.from_pretrained(class_folder)
    frame = pipe(class_labels=[0, 1], outer_steps=2, inner_steps=1, output_type=output_type)
    images = frame.images
    if output_type == "pil":
        assert len(images) == 2
    elif output_type == "np":
        assert isinstance(images, np.ndarray) and images.shape == (2, 8, 8, 1) and 0 <= images.min() <= images.max() <= 1
    elif output_type == "pt":
        assert images.shape == (2, 1, 8, 8) and images.dtype == torch.float32
    else:
        assert torch.equal(images, frame.latents)


def test_decode_every_and_vanilla(class_folder):
    pipe = NestedPipeline.from_pretrained(class_folder)
    frames = list(pipe.vanilla(class_labels=[2], num_inference_steps=7, decode_every=3))
    assert [f.nfe for f in frames] == list(range(1, 8))
    assert [f.images is not None for f in frames] == [False, False, True, False, False, True, True]


def test_condition_change_and_fork(class_folder):
    pipe = NestedPipeline.from_pretrained(class_folder)
    s = pipe.anytime(class_labels=[0], outer_steps=4, inner_steps=2, generator=torch.Generator().manual_seed(1),
                     output_type="latent")
    s.step()
    same, other = s.fork(), s.fork()
    other.set_condition(class_labels=[2], guidance_scale=5.0)
    assert other.core.model_kwargs["guidance_scale"] == 5.0 and s.core.model_kwargs["guidance_scale"] == 3.0
    a, b, c = list(s), list(same), list(other)
    assert all(torch.equal(x.latents, y.latents) for x, y in zip(a, b))
    assert not torch.allclose(a[0].latents, c[0].latents)
    with pytest.raises(TypeError, match="set_condition"):
        s.set_condition(colour="red")


def test_fork_one_image_into_variations(class_folder):
    """The paper's demo: pick image i of a batch and continue it as variations. fork(indices=)
    selects the per-image condition and the last frame; at step 0 it equals a session started
    from those noise rows, and set_condition then sizes itself to the child's batch."""
    pipe = NestedPipeline.from_pretrained(class_folder)
    g = torch.Generator().manual_seed(2)
    parent = pipe.anytime(class_labels=[0, 1, 2, 0], outer_steps=3, inner_steps=2, generator=g)
    noise = parent.core.x
    child = parent.fork(torch.Generator().manual_seed(9), indices=[2, 2, 2])
    assert child.condition["class_labels"] == [2, 2, 2] and parent.condition["class_labels"] == [0, 1, 2, 0]
    reference = pipe.anytime(class_labels=[2, 2, 2], outer_steps=3, inner_steps=2, latents=noise[[2, 2, 2]],
                             generator=torch.Generator().manual_seed(9))
    for a, b in zip(child, reference):
        assert torch.equal(a.latents, b.latents) and a.nfe == b.nfe
    assert not torch.equal(a.latents[0], a.latents[1])  # variations: each row draws its own noise
    first = parent.step()
    picked = parent.fork(indices=[3, 1])
    assert [im.tobytes() for im in picked.last_frame.images] == [first.images[3].tobytes(), first.images[1].tobytes()]
    assert torch.equal(picked.last_frame.latents, first.latents[[3, 1]]) and picked.last_frame.nfe == 2
    picked.set_condition(class_labels=[1, 1])
    assert picked.core.model_kwargs["class_labels"].tolist() == [1, 1] and len(picked.run().images) == 2
    with pytest.raises(ValueError, match="indices"):
        parent.fork(indices=[4])


def test_budget_and_deadline(class_folder):
    pipe = NestedPipeline.from_pretrained(class_folder)
    s = pipe.anytime(class_labels=[0], outer_steps=5, inner_steps=4)
    frame = s.run(max_nfe=10)
    assert frame.nfe == 8 and frame.images is not None and not s.done
    assert s.run().nfe == 20


def test_unconditional_ddpm(tmp_path):
    DDPMPipeline(unet=tiny_unet(), scheduler=DDPMScheduler(num_train_timesteps=50, prediction_type="v_prediction")) \
        .save_pretrained(tmp_path)
    pipe = NestedPipeline.from_pretrained(tmp_path)
    assert pipe.adapter.num_classes is None and pipe.adapter.prediction_type == "v_prediction"
    frames = list(pipe.anytime(num_images=2, outer_steps=5, inner_steps=5, output_type="pt",
                               generator=torch.Generator().manual_seed(0)))
    assert frames[-1].nfe == sum(min(5, t + 1) for t in [49, 39, 29, 19, 9]) and frames[-1].images.shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match="unconditional"):
        pipe.anytime(class_labels=[1])


@pytest.mark.parametrize("kwargs,match", [
    (dict(class_labels=[5]), r"class_labels must lie in \[0, 2\]"),
    (dict(class_labels=[0, 1], num_images=3), "class_labels"),
    (dict(prompt="a cat"), "not text-conditional"),
    (dict(guidance_scale=-1.0), "guidance_scale"),
    (dict(output_type="jpeg"), "output_type"),
    (dict(decode_every=0), "decode_every"),
    (dict(num_images=0), "num_images"),
])
def test_bad_arguments(class_folder, kwargs, match):
    pipe = NestedPipeline.from_pretrained(class_folder)
    with pytest.raises(ValueError, match=match):
        pipe.anytime(**kwargs)


def test_loading_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        NestedPipeline.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="model_index.json"):
        NestedPipeline.from_pretrained(tmp_path / "empty")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "model_index.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot load"):
        NestedPipeline.from_pretrained(corrupt)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        NestedPipeline.from_pretrained(tmp_path / "file")


def test_one_guidance_rule(class_folder):
    """out = out_u + w (out_c − out_u) in one doubled batch for every w != 1 (w = 0: the unconditional
    model, 0 < w < 1 interpolates); w = 1 is the conditional network alone in a single batch."""
    pipe = NestedPipeline.from_pretrained(class_folder)
    a = pipe.adapter
    x, t = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(3)), torch.tensor([40, 40])
    labels, null = torch.tensor([0, 2]), torch.tensor([3, 3])
    with torch.inference_mode():
        cond, uncond = a.unet(x, t, class_labels=labels).sample, a.unet(x, t, class_labels=null).sample
        log = CallLog(a.unet)
        for w in (0.0, 0.5, 1.0, 3.0):
            torch.testing.assert_close(a(x, t, class_labels=labels, guidance_scale=w), uncond + w * (cond - uncond),
                                       rtol=1e-5, atol=1e-5)
    assert log.batches == [4, 4, 2, 4]
    # no class labels: the null class alone, whatever the model's default guidance
    session = pipe.anytime(num_images=2, outer_steps=1, inner_steps=1)
    assert session.core.model_kwargs["guidance_scale"] == 1.0
    assert session.core.model_kwargs["class_labels"].tolist() == [3, 3]


def test_sizes_are_checked_against_the_unet_downsampling(class_folder):
    pipe = NestedPipeline.from_pretrained(class_folder)  # two down blocks: one halving
    assert pipe.adapter.size_multiple == 2
    frame = pipe(class_labels=[0], height=12, width=6, outer_steps=1, inner_steps=1, output_type="pt")
    assert frame.images.shape == (1, 1, 12, 6)
    for kwargs in (dict(height=7), dict(width=0), dict(height=True)):
        with pytest.raises(ValueError, match=f"{next(iter(kwargs))} must be a positive multiple of 2 pixels"):
            pipe.anytime(class_labels=[0], **kwargs)
    with pytest.raises(ValueError, match=r"latents must have shape \(1, 1, 8, 8\)"):
        pipe.anytime(class_labels=[0], latents=torch.zeros(1, 1, 8, 6))


def test_budget_plans_the_layout_and_repr(class_folder):
    pipe = NestedPipeline.from_pretrained(class_folder)
    session = pipe.anytime(class_labels=[1], budget=20)
    assert session.checkpoints() == [2, 10, 20]  # the planned frames: by 10 %, then runs of 8 NFEs or more
    assert repr(session) == "PipelineSession(unet2d, step 0/3, nfe 0/20, NestedSession, class_labels=[1])"
    session.step()
    assert "step 1/3, nfe 2/20" in repr(session)
    assert pipe.anytime(class_labels=[1], inner_steps=4, budget=20).checkpoints() == [4, 8, 12, 16, 20]
    with pytest.raises(ValueError, match="vanilla session takes num_inference_steps"):
        pipe.vanilla(class_labels=[1], budget=20)


def test_the_plan_given_explicitly_is_the_plan(class_folder):
    """``plan_layout(...).session_kwargs()`` (what ``evaluate`` passes for ``--nested plan``) replays the planned
    default exactly — the inner runs' grids included (``inner_spacing``: log-SNR first run, Karras restarts)."""
    from nested_diffusion.planner import plan_layout

    pipe = NestedPipeline.from_pretrained(class_folder)
    layout = plan_layout(20, pipe.adapter.schedule_for(8, 8))
    assert layout.inner_spacing is not None and len(set(layout.inner_spacing)) == 2
    run = lambda **kw: [f.images for f in pipe.anytime(class_labels=[1, 2], output_type="latent",  # noqa: E731
                                                       generator=torch.Generator().manual_seed(3), **kw)]
    planned, explicit = run(budget=20), run(**layout.session_kwargs())
    assert len(planned) == len(explicit) == 3
    for a, b in zip(planned, explicit):
        assert torch.equal(a, b)
    # another spacing is another layout: the grids are what the argument says
    trailing = run(**{**layout.session_kwargs(), "inner_spacing": "trailing"})
    assert not torch.equal(trailing[-1], planned[-1])
    with pytest.raises(ValueError, match="one entry per outer step"):
        pipe.anytime(class_labels=[1], **{**layout.session_kwargs(), "inner_spacing": ["karras"]})
