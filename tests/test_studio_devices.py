"""Several devices: one model copy and one worker per device, each session placed on the least-loaded
device and all its branches kept there — tested with two CPU "devices" (two copies of the embedded
model, two worker threads); and `serve --device cpu,cpu`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nested_diffusion import NestedPipeline
from nested_diffusion.studio.app import create_app
from studio_support import LiveServer, client, digits, wait_for


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def pipes():
    return [digits(), NestedPipeline.from_pretrained()]  # two copies: one per "device"


def test_sessions_go_to_the_least_loaded_device_and_their_branches_stay(pipes):
    app = create_app(pipes, start_worker=False, batching=False)
    studio = app.state.studio
    with client(app) as api:
        health = api.get("/v1/health").json()
        assert [d["device"] for d in health["devices"]] == ["cpu", "cpu"]
        big = api.post("/v1/sessions", json={"class_labels": [1], "num_images": 4, "budget": 20, "seed": 1}).json()
        small = [api.post("/v1/sessions", json={"class_labels": [k], "budget": 20, "seed": 10 + k}).json()
                 for k in (2, 3, 4)]
        placed = [studio.registry.sessions[s["session_id"]].device for s in (big, *small)]
        assert placed == [0, 1, 1, 1]  # 80 image-NFEs on device 0 outweigh 20, 40, then 60 on device 1
        assert api.get("/v1/health").json()["devices"][0]["load"] == 80
        assert studio.workers[1].run_once()  # device 1's worker takes device 1's sessions only
        assert studio.registry.sessions[big["session_id"]].branches["b0"].nfe == 0
        fork = api.post(f"/v1/sessions/{small[0]['session_id']}/branches/b0/fork", json={"count": 2, "seeds": [5, 6]})
        assert fork.status_code == 201
        while studio.run_once():
            pass
        snaps = {s["session_id"]: api.get(f"/v1/sessions/{s['session_id']}").json() for s in (big, *small)}
    assert all(b["state"] == "done" for snap in snaps.values() for b in snap["branches"])
    assert snaps[small[0]["session_id"]]["device"] == 1 and len(snaps[small[0]["session_id"]]["branches"]) == 3
    # each device's frames are the library's, bit for bit (unbatched)
    want = pipes[0].anytime(class_labels=[2], budget=20, generator=gen(12))
    first = [want.step()]
    children = [want.fork(gen(5)), want.fork(gen(6))]
    expected = {"b0": first + list(want), "b1": [children[0].last_frame, *children[0]],
                "b2": [children[1].last_frame, *children[1]]}
    session = studio.registry.sessions[small[0]["session_id"]]
    for name, frames in expected.items():
        got = [session.branches[name].frames[k] for k in sorted(session.branches[name].frames)]
        assert [f.nfe for f in got] == [f.nfe for f in frames]
        for f, w in zip(got, frames):
            assert np.array_equal(np.asarray(f.images[0]), np.asarray(w.images[0]))
        assert session.branches[name].session.pipeline is pipes[1]  # computed by device 1's copy


def test_two_workers_serve_live_sessions_at_once(pipes):
    """Both worker threads running, batched: sessions on both devices finish, each on its own."""
    with LiveServer(create_app(pipes)) as live:
        import httpx

        http = httpx.Client(base_url=live.url, timeout=30)
        made = [http.post("/v1/sessions", json={"class_labels": [k], "budget": 10, "seed": k}).json() for k in range(4)]
        studio = live.app.state.studio
        assert sorted(studio.registry.sessions[m["session_id"]].device for m in made) == [0, 0, 1, 1]
        for m in made:
            wait_for(lambda: http.get(m["snapshot_url"]).json()["terminal"], 120, what="the session")
        finals = [http.get(http.get(m["snapshot_url"]).json()["branches"][0]["frames"][-1]["images"][0]).content
                  for m in made]
        assert len(set(finals)) == 4
        assert studio.workers[0].batcher.calls > 0 and studio.workers[1].batcher.calls > 0


def test_serve_parses_a_device_list():
    from nested_diffusion.cli import main
    from nested_diffusion.cli.serve import devices

    assert [str(d) for d in devices("cpu,cpu")] == ["cpu", "cpu"]
    with pytest.raises(ValueError, match="separated by commas"):
        devices("cpu,")
    assert main(["serve", "--device", "cpu,nonsense", "--port", "0"]) == 2
