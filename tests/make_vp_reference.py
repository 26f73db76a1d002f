"""Record today's VP frames as the reference of ``tests/test_vp_reference.py``.

Run once, on the commit *before* the schedule redesign (issue 16: "Any schedule"), with
``OMP_NUM_THREADS=1 python tests/make_vp_reference.py``; it writes ``tests/data/vp_reference.safetensors``
(every frame of the planned default, the paper's 10×10 layout, vanilla samplers and the restoration
sessions, on the exact Gaussian-mixture oracle and on the embedded digit model; the planned default as it was,
issue 12's, given as explicit layouts since issue 19 changed it). The test then checks
that the redesigned core reproduces them. Recorded at commit 46460cb with the UNet2D clip_sample fix of the next commit (ᾱ in the model's float64).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

OUT = Path(__file__).parent / "data" / "vp_reference.safetensors"


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


#: the planned default of issue 12 (BENCHMARKS.md §8: DPM-Solver++(2M) η 0.85 inner runs on trailing grids,
#: restarts at the σ table's levels), pinned as explicit layouts since plan_layout moved on (issue 19, §12)
ISSUE12_INNER = {20: [2, 2, 2, 4, 5, 5], 50: [5, 5, 5, 10, 13, 12], 100: [10, 10, 10, 20, 25, 25]}
ISSUE12_OUTER = {
    ("linear", 20): [999, 461, 225, 224, 217, 81], ("linear", 50): [999, 324, 122, 121, 116, 38],
    ("linear", 100): [999, 194, 122, 121, 116, 38], ("scaled_linear", 20): [999, 655, 302, 301, 288, 72],
    ("scaled_linear", 50): [999, 456, 133, 132, 125, 20], ("scaled_linear", 100): [999, 251, 133, 132, 125, 24],
    ("cosine", 20): [999, 778, 439, 438, 424, 166], ("cosine", 50): [999, 601, 246, 245, 235, 80],
    ("cosine", 100): [999, 382, 246, 245, 235, 80],
}


def issue12_layout(schedule: str, budget: int) -> dict:
    """nested_sample's keyword arguments of issue 12's planned default for ``budget`` on ``schedule``."""
    return dict(outer_timesteps=ISSUE12_OUTER[schedule, budget], inner_steps=ISSUE12_INNER[budget],
                inner_sampler="dpmpp-2m", inner_eta=0.85, outer_update="renoise")


def oracle_cases():
    """name -> callable(gmm) returning a session; every case on 4 samples of the 64-d oracle."""
    from nested_diffusion import ddrm_sample, nested_restore, nested_sample, vanilla_sample
    from nested_diffusion.restoration import Inpainting, SuperResolution
    from nested_diffusion.schedules import make_alphas_cumprod

    cases = {}
    for schedule in ("linear", "scaled_linear", "cosine"):
        ac = make_alphas_cumprod(schedule)
        for pred in ("epsilon", "v_prediction", "sample"):
            def planned(gmm, ac=ac, pred=pred, budget=100, schedule=schedule):
                noise = torch.randn(4, 64, generator=gen(0), dtype=torch.float64)
                return nested_sample(gmm.model(ac, pred), ac, noise, prediction_type=pred, generator=gen(1),
                                     **issue12_layout(schedule, budget))
            cases[f"oracle/{schedule}/{pred}/planned100"] = planned
        for budget in (20, 50):
            cases[f"oracle/{schedule}/epsilon/planned{budget}"] = \
                lambda gmm, ac=ac, b=budget, s=schedule: nested_sample(
                    gmm.model(ac), ac, torch.randn(4, 64, generator=gen(0), dtype=torch.float64), generator=gen(1),
                    **issue12_layout(s, b))
        cases[f"oracle/{schedule}/epsilon/paper10x10"] = lambda gmm, ac=ac: nested_sample(
            gmm.model(ac), ac, torch.randn(4, 64, generator=gen(0), dtype=torch.float64), generator=gen(1),
            outer_steps=10, inner_steps=10, inner_sampler="ddim")
        cases[f"oracle/{schedule}/epsilon/ddim-outer0"] = lambda gmm, ac=ac: nested_sample(
            gmm.model(ac), ac, torch.randn(4, 64, generator=gen(0), dtype=torch.float64), generator=gen(1),
            outer_steps=5, inner_steps=[4, 4, 8, 8, 16], inner_sampler="dpmpp-2m", inner_eta=0.5, outer_eta=0.0)
        for sampler, eta in (("ddim", 1.0), ("ddim", 0.0), ("ddpm", None), ("dpmpp-2m", 0.0), ("dpmpp-2m", 0.85),
                             ("dpmpp-2m-sde", None)):
            cases[f"oracle/{schedule}/epsilon/vanilla-{sampler}-{eta}"] = \
                lambda gmm, ac=ac, s=sampler, e=eta: vanilla_sample(
                    gmm.model(ac), ac, torch.randn(4, 64, generator=gen(0), dtype=torch.float64), steps=25,
                    sampler=s, eta=e, generator=gen(1))
        for op_name, make_op in (("inpaint", lambda: Inpainting(torch.rand(1, 8, 8, generator=gen(5)) < 0.5)),
                                 ("sr2", lambda: SuperResolution(2))):
            def restore(gmm, ac=ac, make_op=make_op, nested=True):
                op = make_op()
                truth = gmm.sample(4, gen(9))[0].reshape(4, 1, 8, 8)
                y = op.measure(truth, 0.05, gen(11))
                noise = torch.randn(4, 1, 8, 8, generator=gen(0), dtype=torch.float64)
                fn = nested_restore if nested else ddrm_sample
                kw = {} if nested else {"steps": 20}
                return fn(gmm.model(ac), ac, noise, operator=op, measurement=y, sigma_y=0.05, generator=gen(1), **kw)
            cases[f"oracle/{schedule}/epsilon/restore-{op_name}"] = restore
            cases[f"oracle/{schedule}/epsilon/ddrm-{op_name}"] = \
                lambda gmm, restore=restore: restore(gmm, nested=False)
    return cases


def digit_cases():
    """name -> callable(pipe) returning a PipelineSession on the embedded digit model (2 images)."""
    from nested_diffusion.restoration import Inpainting

    mask = torch.ones(1, 28, 28, dtype=torch.bool)
    mask[:, :14] = False
    cases = {
        "digits/planned100": lambda p: p.anytime(class_labels=[3, 7], generator=gen(2), output_type="latent",
                                                 **issue12_layout("linear", 100)),
        "digits/planned20": lambda p: p.anytime(class_labels=[3, 7], generator=gen(2), output_type="latent",
                                                **issue12_layout("linear", 20)),
        "digits/paper10x10": lambda p: p.anytime(class_labels=[3, 7], outer_steps=10, inner_steps=10,
                                                 inner_sampler="ddim", generator=gen(2), output_type="latent"),
        "digits/vanilla-ddim-1": lambda p: p.vanilla(class_labels=[3, 7], num_inference_steps=20, generator=gen(2),
                                                     output_type="latent"),
    }

    def restore(p, method):
        truth = torch.zeros(2, 1, 28, 28, dtype=torch.float64)
        truth[:, :, 8:20, 10:18] = 1.0
        kw = {} if method == "nested" else {"steps": 20}
        return p.restore(truth, Inpainting(mask), 0.05, method=method, class_labels=[3, 7], generator=gen(2),
                         output_type="latent", **kw)

    cases["digits/restore-nested"] = lambda p: restore(p, "nested")
    cases["digits/restore-ddrm"] = lambda p: restore(p, "ddrm")
    return cases


def kept(frames: list) -> list:
    """Every frame of a nested session; every 4th (and the last) of a per-NFE vanilla one."""
    return frames if len(frames) <= 10 else frames[::4] + ([frames[-1]] if (len(frames) - 1) % 4 else [])


def record() -> dict[str, torch.Tensor]:
    from nested_diffusion import NestedPipeline
    from nested_diffusion.testing import GaussianMixture

    out: dict[str, torch.Tensor] = {}
    gmm = GaussianMixture.from_digits()
    for name, make in oracle_cases().items():
        session = make(gmm)
        frames = kept(list(session))
        out[name] = torch.stack([f.image for f in frames]).contiguous()
        out[name + "#nfe"] = torch.tensor([f.nfe for f in frames])
    # float64, so that the reference does not depend on the thread count or the CPU's float32 kernels
    pipe = NestedPipeline.from_pretrained(dtype=torch.float64)
    for name, make in digit_cases().items():
        frames = kept(list(make(pipe)))
        out[name] = torch.stack([f.latents for f in frames]).contiguous()
        out[name + "#nfe"] = torch.tensor([f.nfe for f in frames])
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    OUT.parent.mkdir(exist_ok=True)
    tensors = record()
    save_file(tensors, str(OUT))
    print(f"wrote {len(tensors) // 2} cases to {OUT}")
