"""Step-level batching of the studio's network calls (:mod:`nested_diffusion.studio.batching`):
per-row guidance in the adapters, the packing rules, and batched sessions against the library —
exact where a call is alone, within the measured tolerance where calls share a batch, with every
intervention and with far fewer network calls."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nested_diffusion.studio.app import create_app
from nested_diffusion.studio.batching import Call, pack, signature, split
from studio_support import client, digits, drain

#: batched frames vs the library's (BENCHMARKS.md §7): latents within this, pixels within one level
LATENT_TOLERANCE = 5e-3


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def pipe():
    return digits()


def test_per_row_guidance_is_the_per_call_rule_row_by_row(pipe):
    a = pipe.adapter
    x, t = torch.randn(4, 1, 28, 28, generator=gen(0)), torch.tensor([999, 500, 20, 999])
    labels = torch.tensor([1, 2, 3, 4])
    with torch.inference_mode():
        same = a(x, t, class_labels=labels, guidance_scale=1.5)
        assert torch.equal(a(x, t, class_labels=labels, guidance_scale=torch.full((4,), 1.5)), same)  # one scale: exact
        w = torch.tensor([1.5, 1.0, 3.0, 0.0])
        mixed = a(x, t, class_labels=labels, guidance_scale=w)
        alone = torch.cat([a(x[i:i + 1], t[i:i + 1], class_labels=labels[i:i + 1], guidance_scale=float(w[i]))
                           for i in range(4)])
    assert (mixed - alone).abs().max() < 1e-4
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        a(x, t, class_labels=labels, guidance_scale=torch.ones(3))


def test_packing_rules(pipe):
    a = pipe.adapter
    x1, x2 = torch.randn(1, 1, 28, 28), torch.randn(2, 1, 28, 28)
    c1 = Call(x1, torch.tensor([999]), {"class_labels": torch.tensor([3]), "guidance_scale": 1.5}, 0)
    c2 = Call(x2, torch.tensor([500, 500]), {"class_labels": torch.tensor([4, 5]), "guidance_scale": 3.0}, 1)
    assert signature(a, c1) == signature(a, c2)  # per-row timesteps, labels and guidance scales share a call
    x, t, kwargs = pack([c1, c2])
    assert x.shape[0] == 3 and t.tolist() == [999, 500, 500] and kwargs["class_labels"].tolist() == [3, 4, 5]
    assert kwargs["guidance_scale"].tolist() == [1.5, 3.0, 3.0]
    assert pack([c1, Call(x1, torch.tensor([1]), {"class_labels": torch.tensor([3]), "guidance_scale": 1.5}, 2)]
                )[2]["guidance_scale"] == 1.5  # one scale stays a float: the adapter's own path
    assert [p.shape[0] for p in split(torch.zeros(3, 1), [c1, c2])] == [1, 2]
    bigger = Call(torch.randn(1, 1, 32, 32), torch.tensor([9]), c1.kwargs, 3)
    none = Call(x1, torch.tensor([9]), {"class_labels": None, "guidance_scale": 1.0}, 4)
    assert signature(a, bigger) != signature(a, c1) and signature(a, none) != signature(a, c1)

    class NoRows:
        per_row_guidance = False
    assert signature(NoRows(), c1) != signature(NoRows(), c2)  # different scales cannot share its calls


def frames(studio, sid, name="b0"):
    b = studio.registry.sessions[sid].branches[name]
    return [b.frames[k] for k in sorted(b.frames)]


def test_a_branch_alone_in_its_calls_is_bit_exact(pipe):
    app = create_app(pipe, start_worker=False)  # batching is the default
    with client(app) as api:
        sid = api.post("/v1/sessions", json={"class_labels": [3, 7], "num_images": 2, "budget": 20, "seed": 5}).json()
        drain(app)
        want = list(pipe.anytime(class_labels=[3, 7], num_images=2, budget=20, generator=gen(5)))
        got = frames(app.state.studio, sid["session_id"])
        assert [f.nfe for f in got] == [w.nfe for w in want]
        for f, w in zip(got, want):
            for a, b in zip(f.images, w.images):
                assert np.array_equal(np.asarray(a), np.asarray(b))


def test_concurrent_sessions_share_calls_and_match_the_library(pipe):
    """Three sessions (different classes, guidance scales and batch sizes, one paused and resumed, one
    forked, one edited mid-run) in one batched server: every step's calls are packed — 20 network
    calls for 3 × 20 NFEs and the fork — and every frame equals the library's within tolerance."""
    app = create_app(pipe, start_worker=False)
    studio = app.state.studio
    packed = []
    studio.workers[0].batcher.on_call = lambda rows, calls: packed.append(calls)
    requests = [{"class_labels": [1], "budget": 20, "seed": 1, "guidance_scale": 1.0},
                {"class_labels": [2, 3], "num_images": 2, "budget": 20, "seed": 2, "guidance_scale": 3.0},
                {"class_labels": [4], "budget": 20, "seed": 3}]
    with client(app) as api:
        sids = [api.post("/v1/sessions", json=r).json()["session_id"] for r in requests]
        assert studio.run_once()
        assert api.patch(f"/v1/sessions/{sids[2]}/branches/b0/condition", json={"class_labels": 9}).status_code == 202
        assert api.post(f"/v1/sessions/{sids[1]}/branches/b0/fork", json={"count": 1, "seeds": [11]}).status_code == 201
        assert api.post(f"/v1/sessions/{sids[0]}/branches/b0/pause").json()["state"] == "paused"
        assert studio.run_once()
        assert api.post(f"/v1/sessions/{sids[0]}/branches/b0/resume").json()["state"] == "running"
        drain(app)
        assert all(b["state"] == "done" for s in sids for b in api.get(f"/v1/sessions/{s}").json()["branches"])
    assert studio.workers[0].batcher.calls == len(packed) < 3 * 20
    assert max(packed) == 4  # three sessions and the fork in one call

    first = pipe.anytime(**{k: v for k, v in requests[0].items() if k != "seed"}, generator=gen(1))
    second = pipe.anytime(**{k: v for k, v in requests[1].items() if k != "seed"}, generator=gen(2))
    third = pipe.anytime(**{k: v for k, v in requests[2].items() if k != "seed"}, generator=gen(3))
    want = {(0, "b0"): list(first), (2, "b0"): [third.step()]}
    third.set_condition(class_labels=9)
    want[(2, "b0")] += list(third)
    second_frames = [second.step()]
    child = second.fork(gen(11))
    want[(1, "b0")] = second_frames + list(second)
    want[(1, "b1")] = [child.last_frame, *child]
    for (k, name), expected in want.items():
        got = frames(studio, sids[k], name)
        assert [f.nfe for f in got] == [w.nfe for w in expected], (k, name)
        for f, w in zip(got, expected):
            for a, b in zip(f.images, w.images):
                assert np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max() <= 1, (k, name, f.step)
        final = studio.registry.sessions[sids[k]].branches[name].session.last_frame.latents
        assert (final - expected[-1].latents).abs().max() < LATENT_TOLERANCE


def test_a_stop_in_a_tick_costs_no_further_call(pipe):
    """A branch paused while its step waits on a call is answered with StepCancelled at the next tick:
    the other branch's call goes on alone (one row), the paused one resumes with the same numbers."""
    app = create_app(pipe, start_worker=False)
    studio = app.state.studio
    rows = []
    batcher = studio.workers[0].batcher
    batcher.on_call = lambda n, calls: rows.append(calls)
    with client(app) as api:
        a = api.post("/v1/sessions", json={"class_labels": [1], "outer_steps": 1, "inner_steps": 6, "seed": 1}).json()
        api.post("/v1/sessions", json={"class_labels": [2], "outer_steps": 1, "inner_steps": 6, "seed": 2})
        worker = studio.workers[0]
        for unit in worker.admit(None):
            worker.launch(unit)
        assert worker.tick(30) and worker.tick(30)  # two packed calls
        assert api.post(f"/v1/sessions/{a['session_id']}/branches/b0/pause").json()["nfe"] == 0
        while worker.tick(30):
            pass
        assert rows == [2, 2, 1, 1, 1, 1]  # a's third call was never made
        assert api.post(f"/v1/sessions/{a['session_id']}/branches/b0/resume").status_code == 200
        drain(app)
        got = frames(studio, a["session_id"])[0]
    want = pipe.anytime(class_labels=[1], outer_steps=1, inner_steps=6, generator=gen(1)).step()
    assert np.array_equal(np.asarray(got.images[0]), np.asarray(want.images[0]))  # alone in its calls: exact
