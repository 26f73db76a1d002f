"""The embedded rectified-flow digit model (``embedded:digits-flow``, issue 17): the shipped folder, the flow
path on its real weights (parity with diffusers' own FlowMatchEulerDiscreteScheduler loop, exact NFE labels,
seeds) and every command on it by name, at tiny sizes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from nested_diffusion import NestedPipeline
from nested_diffusion.cli import main
from nested_diffusion.models import EMBEDDED_MODELS, embedded_model_path, model_label, resolve_model
from nested_diffusion.schedules import FlowMatching

NAME = "embedded:digits-flow"
LABELS = [3, 8]
GUIDANCE = 1.5  # the model's default (its nested_diffusion.json)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def flow():
    return NestedPipeline.from_pretrained(NAME)


@pytest.fixture(scope="module")
def digit_png(tmp_path_factory):
    from nested_diffusion.data import load_mnist5k

    folder = tmp_path_factory.mktemp("flow-inputs")
    images, _ = load_mnist5k("test")
    Image.fromarray(images[0]).save(folder / "digit.png")
    return folder / "digit.png"


def test_the_shipped_folder_is_a_flow_matching_pipeline(flow):
    from diffusers import FlowMatchEulerDiscreteScheduler, UNet2DModel

    folder = embedded_model_path("digits-flow")
    assert resolve_model(NAME) == folder and folder.name == "digits-flow" and folder.parent == embedded_model_path().parent
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert any(p.suffix == ".safetensors" for p in files) and not any(p.suffix in (".bin", ".pt", ".pkl") for p in files)
    assert sum(p.stat().st_size for p in files) < 20e6
    meta = json.loads((folder / "nested_diffusion.json").read_text())
    assert meta["objective"] == "flow" and meta["prediction_type"] == "flow" and meta["null_class"] == 10
    assert isinstance(meta["train_steps"], int) and meta["train_steps"] > 0
    # loaded by the UNet2D family, the schedule and prediction read from the scheduler: the flow path
    assert isinstance(flow.pipe.scheduler, FlowMatchEulerDiscreteScheduler) and isinstance(flow.pipe.unet, UNet2DModel)
    a = flow.adapter
    assert a.family == "unet2d" and a.pixel_space and a.prediction_type == "flow"
    assert a.schedule == FlowMatching(1000, 1.0) and a.clip_sample is None
    assert (a.num_classes, a.null_class, a.sample_size, a.default_guidance) == (10, 10, (28, 28), GUIDANCE)


def test_embedded_names_resolve_in_one_place():
    assert resolve_model(None) == resolve_model("embedded:digits") == embedded_model_path() == embedded_model_path("digits")
    assert resolve_model("some/hub-id") == "some/hub-id" and model_label(None) == "embedded:digits"
    assert model_label(NAME) == NAME and set(EMBEDDED_MODELS) == {"digits", "digits-flow"}
    for bad in ("embedded:nope", "embedded:"):
        with pytest.raises(ValueError, match="the embedded models are embedded:digits, embedded:digits-flow"):
            NestedPipeline.from_pretrained(bad)


def diffusers_euler(flow, steps: int, seed: int) -> torch.Tensor:
    """diffusers' own loop: FlowMatchEulerDiscreteScheduler.set_timesteps / step on this UNet, with classifier-free
    guidance against the null class in one doubled batch (as the DDPM pipelines of diffusers guide)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    unet = flow.pipe.unet
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(flow.pipe.scheduler.config)
    scheduler.set_timesteps(steps)
    x = torch.randn((len(LABELS), 1, 28, 28), generator=gen(seed))
    labels = torch.tensor(LABELS)
    both = torch.cat([torch.full_like(labels, 10), labels])
    with torch.inference_mode():
        for t in scheduler.timesteps:
            v_u, v_c = unet(torch.cat([x, x]), t.expand(2 * len(LABELS)), class_labels=both).sample.chunk(2)
            x = scheduler.step(v_u + GUIDANCE * (v_c - v_u), t, x).prev_sample
    return x, scheduler.timesteps


@pytest.mark.parametrize("steps", [1, 4])
def test_vanilla_euler_and_nested_one_step_inner_runs_equal_diffusers_loop(flow, steps):
    ref, timesteps = diffusers_euler(flow, steps, seed=5)
    assert ref.abs().max() > 0.1  # a real comparison
    vanilla = flow.vanilla(class_labels=LABELS, num_inference_steps=steps, sampler="ddim", eta=0.0, generator=gen(5),
                           output_type="latent").run()
    torch.testing.assert_close(vanilla.latents, ref, rtol=1e-5, atol=1e-5)
    frames = list(flow.anytime(class_labels=LABELS, outer_steps=steps, inner_steps=1, outer_eta=0.0, generator=gen(5),
                               output_type="latent"))
    assert [f.nfe for f in frames] == list(range(1, steps + 1))
    assert torch.equal(torch.tensor([f.timestep for f in frames], dtype=torch.float32), timesteps)
    torch.testing.assert_close(frames[-1].latents, ref, rtol=1e-5, atol=1e-5)


def test_nfe_labels_equal_network_calls_and_seeds_repeat(flow):
    calls = []
    hook = flow.pipe.unet.register_forward_hook(lambda *_: calls.append(1))
    try:
        seen = []
        for frame in flow.anytime(class_labels=LABELS, budget=10, generator=gen(1), output_type="pt"):
            seen.append((frame.nfe, len(calls)))
        assert seen == [(n, n) for n, _ in seen] and seen[-1][0] == 10  # one doubled-batch call per NFE
        calls.clear()
        previews = [(f.nfe, len(calls)) for f in flow.vanilla(class_labels=LABELS, num_inference_steps=6,
                                                              sampler="ddim", eta=0.0, generator=gen(1))]
        assert previews == [(n, n) for n in range(1, 7)]
    finally:
        hook.remove()
    first = flow(class_labels=LABELS, budget=6, generator=gen(2), output_type="pt").images
    again = flow(class_labels=LABELS, budget=6, generator=gen(2), output_type="pt").images
    other = flow(class_labels=LABELS, budget=6, generator=gen(3), output_type="pt").images
    assert torch.equal(first, again) and (first - other).abs().max() > 0.1


def test_generate_restore_and_edit_by_name(tmp_path, digit_png, capsys):
    out = tmp_path / "g"
    assert main(["generate", "--model", NAME, "--class", "1,7", "--budget", "4", "--compare-vanilla", "--check",
                 "--out", str(out)]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["model"] == NAME and run["nfe"][-1] == 4 and run["guidance_scale"] == GUIDANCE
    assert run["outer_timesteps"][0] == 1000.0  # flow times σ·1000, from σ = 1
    assert sorted(p.name for p in (out / "frames" / "sample-00").glob("vanilla-*")) == \
        [f"vanilla-nfe-{n:03d}.png" for n in run["nfe"]]
    out = tmp_path / "r"
    assert main(["restore", "--model", NAME, "--task", "denoise", "--num-images", "1", "--budget", "3",
                 "--out", str(out)]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["model"] == NAME and run["nfe"][-1] == 3
    out = tmp_path / "e"
    assert main(["edit", "--model", NAME, "--input", str(digit_png), "--strength", "0.5", "--class", "2",
                 "--budget", "4", "--out", str(out)]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["model"] == NAME and run["nfe"][-1] == 4 and run["outer_timesteps"][0] <= 500.0
    capsys.readouterr()
    assert main(["generate", "--model", "embedded:digit", "--out", str(tmp_path / "bad")]) == 2
    assert "the embedded models are embedded:digits, embedded:digits-flow" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_evaluate_by_name(tmp_path):
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", NAME, "--num-samples", "4", "--batch-size", "4", "--budget", "4",
                 "--checkpoints", "2,4", "--vanilla", "ddim:0", "--envelope", "ddim:0", "--metric", "accuracy",
                 "--quiet", "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["config"]["model"] == NAME and data["config"]["guidance_scale"] == GUIDANCE
    kinds = {m["kind"]: m for m in data["config"]["methods"]}
    assert set(kinds) == {"nested", "vanilla", "envelope"} and kinds["nested"]["outer_timesteps"][0] == 1000.0
    assert sum(kinds["nested"]["inner_steps"]) == 4  # the planned default for 4 NFEs on the flow schedule
    by = {(r["method"], int(r["nfe"])): float(r["value"]) for r in data["rows"]}
    assert {m for m, _ in by} == {kinds["nested"]["name"], "vanilla-ddim-eta0-4", "envelope-ddim-eta0"}
    # the last Euler preview is the 4-step Euler sample, which the envelope computes separately
    assert by[("vanilla-ddim-eta0-4", 4)] == by[("envelope-ddim-eta0", 4)]


def test_the_studio_serves_it(flow):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from nested_diffusion.studio.app import create_app

    app = create_app(flow, model=NAME, start_worker=False, batching=False)
    with TestClient(app, base_url="http://127.0.0.1:7860") as api:
        health = api.get("/v1/health").json()
        assert health["model"] == NAME and health["conditioning"] == "class" and health["num_classes"] == 10
        r = api.post("/v1/sessions", json={"class_labels": [4], "budget": 3, "seed": 0})
        assert r.status_code == 201, r.text
        studio = app.state.studio
        for _ in range(100):
            if not studio.run_once():
                break
        snap = api.get(f"/v1/sessions/{r.json()['session_id']}").json()
        assert [f["nfe"] for f in snap["branches"][0]["frames"]] == r.json()["checkpoints"][:len(snap["branches"][0]["frames"])]
        assert snap["branches"][0]["state"] == "done"
