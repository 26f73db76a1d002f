"""The studio's /v1 API in process (httpx TestClient, the worker driven step by step): protocol,
equivalence with the library, replay, scheduling, caps and security."""

from __future__ import annotations

import gc
import json
import time
import weakref

import numpy as np
import pytest
import torch

from nested_diffusion.studio import views
from nested_diffusion.studio.app import create_app
from nested_diffusion.studio.frames import read_png_text
from nested_diffusion.studio.limits import Limits
from nested_diffusion.studio.replay import replay
from nested_diffusion.studio.sse import coalesce
from studio_support import BASE, client, commit_unit, drain, fail_unit, gen, pixels, take_unit

pytest.importorskip("fastapi")


def create(api, **body):
    r = api.post("/v1/sessions", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def frames_of(snapshot, branch):
    return next(b for b in snapshot["branches"] if b["branch"] == branch)["frames"]


def read_events(api, sid, **kwargs):
    """Every event of a finished session's stream (it closes once every branch is terminal)."""
    with api.stream("GET", f"/v1/sessions/{sid}/events", **kwargs) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        text = "".join(r.iter_text())
    events = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith((":", "retry")))
        if "data" in fields:
            events.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
    return events


# -- the protocol ---------------------------------------------------------------------------------
def test_health_and_session_shapes(api, app):
    health = api.get("/v1/health").json()
    assert health["status"] == "ok" and health["model"] == "embedded:digits" and health["sessions"] == 0
    assert health["max_sessions"] == 8 and health["conditioning"] == "class" and health["num_classes"] == 10
    created = create(api, class_labels=[3])  # every other field: the project default
    assert created["branches"] == ["b0"] and created["checkpoints"] == [10, 20, 30, 50, 75, 100]
    assert created["events_url"] == f"/v1/sessions/{created['session_id']}/events"
    assert api.get("/v1/health").json()["sessions"] == 1
    snap = api.get(f"/v1/sessions/{created['session_id']}").json()
    b0 = snap["branches"][0]
    assert (b0["branch"], b0["state"], b0["step"], b0["nfe"], b0["frames"]) == ("b0", "running", 0, 0, [])
    assert snap["request"]["budget"] is None and snap["last_event_id"] == 1  # the initial status event
    assert api.get(f"/v1/sessions/{created['session_id']}/log").json()["nfe_cap"] == 100  # the project default


def test_frames_nfe_events_and_png_provenance(api, app):
    sid = create(api, class_labels=[3], num_images=2, budget=20, seed=5)["session_id"]
    assert drain(app) == 3
    snap = api.get(f"/v1/sessions/{sid}").json()
    frames = frames_of(snap, "b0")
    assert [f["nfe"] for f in frames] == [2, 10, 20] and [f["step"] for f in frames] == [1, 2, 3]
    assert snap["branches"][0]["state"] == "done" and all(len(f["images"]) == 2 for f in frames)
    r = api.get(frames[1]["images"][1])
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    text = read_png_text(r.content)
    assert (text["seed"], text["nfe"], text["step"], text["branch"], text["image"]) == ("5", "10", "2", "b0", "1")
    history = json.loads(text["condition_history"])
    assert history == [{"rev": 0, "applies_from_step": 1, "condition": {
        "class_labels": [3], "prompt": None, "negative_prompt": None, "guidance_scale": None}}]
    events = read_events(api, sid)
    assert [e[0] for e in events] == list(range(1, len(events) + 1))  # numbered across the session
    kinds = [(e[1], e[2].get("state"), e[2].get("nfe")) for e in events]
    assert kinds == [("status", "running", 0)] + [("frame", None, n) for n in (2, 10, 20)] + \
        [("status", "done", 20)]
    frame = events[1][2]
    assert set(frame) >= {"branch", "step", "num_steps", "nfe", "total_nfe", "timestep", "elapsed", "condition_rev",
                          "images"} and frame["num_steps"] == 3 and frame["total_nfe"] == 20
    gif = api.get(f"/v1/sessions/{sid}/branches/b0/animation/0.gif")
    assert gif.status_code == 200 and gif.content[:6] == b"GIF89a"


def test_events_resume_with_after_and_last_event_id(api, app):
    sid = create(api, class_labels=[1], budget=6)["session_id"]
    drain(app)
    everything = read_events(api, sid)
    assert [e[0] for e in read_events(api, sid, params={"after": 3})] == [e[0] for e in everything[3:]]
    resumed = read_events(api, sid, params={"after": 1}, headers={"Last-Event-ID": "5"})  # the header wins
    assert [e[0] for e in resumed] == [e[0] for e in everything[5:]]
    assert read_events(api, sid, params={"after": 999}) == []
    assert api.get(f"/v1/sessions/{sid}/events", headers={"Last-Event-ID": "x"}).status_code == 422


def test_coalesce_keeps_every_state_event_and_the_newest_frame_per_branch():
    from nested_diffusion.studio.state import Event

    events = [Event(1, "status", {"branch": "b0"})] + \
        [Event(i, "frame", {"branch": "b0" if i % 2 else "b1"}) for i in range(2, 40)] + [Event(40, "fork", {})]
    assert coalesce(events, 64) == events
    kept = coalesce(events, 8)
    assert [e.id for e in kept] == [1, 38, 39, 40]


# -- interventions ------------------------------------------------------------------------------
def test_session_equals_the_library_with_the_same_interventions(api, app, pipe):
    """The server adds no numerical difference: every frame of every branch equals
    NestedPipeline.anytime with the same seed and the same interventions at the same steps."""
    worker = app.state.studio
    layout = [3, 3, 3, 6, 7, 8]  # six steps (the 30-NFE plan has three frames since issue 19)
    sid = create(api, class_labels=[3, 5], num_images=2, inner_steps=layout, seed=7)["session_id"]
    base = f"/v1/sessions/{sid}/branches"
    assert worker.run_once()
    receipt = api.patch(f"{base}/b0/condition", json={"class_labels": [7, 7], "guidance_scale": 3.0})
    assert receipt.status_code == 202 and receipt.json() == {"rev": 1, "applies_from_step": 2}
    assert worker.run_once()
    fork = api.post(f"{base}/b0/fork", json={"count": 2, "seeds": [11, 12]})
    assert fork.status_code == 201 and fork.json()["branches"] == ["b1", "b2"] and fork.json()["at_step"] == 2
    assert api.post(f"{base}/b0/fork", json={"count": 3, "image": 1, "seeds": [13]}).json()["branches"] == ["b3"]
    assert api.patch(f"{base}/b1/condition", json={"guidance_scale": 1.0}).json() == {"rev": 2, "applies_from_step": 3}
    while worker.run_once():
        snap = api.get(f"/v1/sessions/{sid}").json()
        b2 = next(b for b in snap["branches"] if b["branch"] == "b2")
        if b2["step"] == 3 and b2["state"] == "running":
            assert api.post(f"{base}/b2/stop").json() == {"branch": "b2", "state": "stopped", "step": 3, "nfe": 9,
                                                          "reason": "user"}
    snap = api.get(f"/v1/sessions/{sid}").json()

    # the same session, written with the library alone
    root = pipe.anytime(class_labels=[3, 5], num_images=2, inner_steps=layout, generator=gen(7), output_type="pil")
    expected = {"b0": [root.step()]}
    root.set_condition(class_labels=[7, 7], guidance_scale=3.0)
    expected["b0"].append(root.step())
    b1, b2, b3 = root.fork(gen(11)), root.fork(gen(12)), root.fork(gen(13), indices=[1, 1, 1])
    b1.set_condition(guidance_scale=1.0)
    expected["b0"] += list(root)
    expected["b1"] = [b1.last_frame, *b1]
    expected["b2"] = [b2.last_frame, b2.step()]
    expected["b3"] = [b3.last_frame, *b3]
    states = {b["branch"]: b["state"] for b in snap["branches"]}
    assert states == {"b0": "done", "b1": "done", "b2": "stopped", "b3": "done"}
    for name, want in expected.items():
        got = frames_of(snap, name)
        assert [f["nfe"] for f in got] == [f.nfe for f in want], name
        assert [f.get("inherited", False) for f in got] == [name != "b0" and i == 0 for i in range(len(got))]
        for f, w in zip(got, want):
            assert len(f["images"]) == len(w.images)
            for url, image in zip(f["images"], w.images):
                assert np.array_equal(pixels(api.get(url).content), np.asarray(image)), (name, f["step"])
    assert [f["condition_rev"] for f in frames_of(snap, "b0")] == [0, 1, 1, 1, 1, 1]
    assert [f["condition_rev"] for f in frames_of(snap, "b1")] == [1, 2, 2, 2, 2]  # inherited, then from step 3
    assert not np.array_equal(np.asarray(expected["b1"][-1].images[0]), np.asarray(expected["b2"][-1].images[0]))

    # the log reproduces it: the Python call returns the same frames, latents bit-exact
    log = api.get(f"/v1/sessions/{sid}/log").json()
    replayed = replay(log, pipe)
    assert sorted(replayed) == ["b0", "b1", "b2", "b3"]
    for name, want in expected.items():
        assert [f.nfe for f in replayed[name]] == [f.nfe for f in want]
        for f, w in zip(replayed[name], want):
            assert torch.equal(f.latents, w.latents)
    # a PNG's condition history names the lineage: b1 = b0's edit, the fork, then its own edit
    last = frames_of(snap, "b1")[-1]
    history = json.loads(read_png_text(api.get(last["images"][0]).content)["condition_history"])
    assert [h.get("rev", "fork") for h in history] == [0, 1, "fork", 2]
    assert history[2]["fork"] == {"parent": "b0", "at_step": 2, "branch": "b1", "seed": 11, "image": None}


def test_vanilla_lane_and_replay_from_the_command_line(api, app, pipe, tmp_path):
    """compare_vanilla adds lane v0: vanilla DDIM (η = 1) x̂0 previews at the nested checkpoints,
    equal to NestedPipeline.vanilla; `generate --replay` writes every frame, pixel-identical."""
    from nested_diffusion.cli import main

    sid = create(api, class_labels=[2], budget=10, seed=3, compare_vanilla=True)["session_id"]
    drain(app)
    snap = api.get(f"/v1/sessions/{sid}").json()
    checkpoints = snap["checkpoints"]
    lane = frames_of(snap, "v0")
    assert [f["nfe"] for f in lane] == checkpoints == [1, 2, 3, 5, 8, 10]
    vanilla = pipe.vanilla(class_labels=[2], num_inference_steps=10, sampler="ddim", eta=1.0, generator=gen(3))
    want = [f for f in vanilla if f.nfe in checkpoints]
    for f, w in zip(lane, want):
        assert np.array_equal(pixels(api.get(f["images"][0]).content), np.asarray(w.images[0]))
    log_file = tmp_path / "log.json"
    log_file.write_text(json.dumps(api.get(f"/v1/sessions/{sid}/log").json()))
    out = tmp_path / "replayed"
    assert main(["generate", "--replay", str(log_file), "--out", str(out), "--device", "cpu"]) == 0
    for name in ("b0", "v0"):
        for f in frames_of(snap, name):
            png = out / name / f"step-{f['step']:02d}-nfe-{f['nfe']:03d}-0.png"
            served = api.get(f["images"][0]).content
            assert np.array_equal(pixels(png.read_bytes()), pixels(served))
            assert read_png_text(png.read_bytes())["condition_history"] == read_png_text(served)["condition_history"]
    assert json.loads((out / "replay.json").read_text())["branches"]["b0"] == checkpoints
    assert main(["generate", "--replay", str(tmp_path / "missing.json"), "--out", str(tmp_path / "x")]) == 2
    log = json.loads(log_file.read_text())
    for bad, message in (({**log, "format": "x"}, "not a studio log"), ({**log, "ops": [{"op": "fork"}]}, "malformed"),
                         ({**log, "checkpoints": [1, 2]}, "differ from this model's")):
        with pytest.raises(ValueError, match=message):
            replay(bad, pipe)


def test_receipt_for_an_edit_during_a_step_and_last_edit_wins(api, app):
    """An edit arriving while step k+1 is computed applies from step k+2; edits due at the same
    boundary merge in order, the last winning per field."""
    sid = create(api, class_labels=[0], budget=6)["session_id"]
    base = f"/v1/sessions/{sid}/branches/b0"
    unit = take_unit(app)  # step 1 is now in flight
    first = api.patch(f"{base}/condition", json={"class_labels": 4, "guidance_scale": 2.0}).json()
    second = api.patch(f"{base}/condition", json={"class_labels": 9}).json()
    assert first == {"rev": 1, "applies_from_step": 2} and second == {"rev": 2, "applies_from_step": 2}
    commit_unit(app, unit, unit.advance())
    assert api.get(f"/v1/sessions/{sid}").json()["branches"][0]["pending"][0]["rev"] == 1
    drain(app)
    b0 = api.get(f"/v1/sessions/{sid}").json()["branches"][0]
    assert b0["condition"] == {"class_labels": 9, "prompt": None, "negative_prompt": None, "guidance_scale": 2.0}
    assert [f["condition_rev"] for f in b0["frames"]] == [0, 2, 2, 2, 2] and b0["pending"] == []
    assert [e for e in read_events(api, sid) if e[1] == "condition"][0][2] == {"branch": "b0", "rev": 1,
                                                                                "applies_from_step": 2,
                                                                                "fields": ["class_labels",
                                                                                           "guidance_scale"]}


def test_stop_and_pause_during_a_step_spend_no_nfe_and_change_no_number(api, app, pipe):
    sid = create(api, class_labels=[6], budget=12, seed=2)["session_id"]
    base = f"/v1/sessions/{sid}/branches/b0"
    app.state.studio.run_once()
    unit = take_unit(app)  # step 2 in flight
    assert api.post(f"{base}/pause").json() == {"branch": "b0", "state": "paused", "step": 1, "nfe": 1}
    with pytest.raises(RuntimeError):  # StepCancelled before its first network call
        unit.advance()
    assert unit.work.nfe == 1
    fail_unit(app, unit, RuntimeError("cancelled"))  # the branch was paused: nothing changes
    assert api.post(f"{base}/pause").json()["state"] == "paused"  # idempotent
    assert not app.state.studio.run_once()  # nothing runs while paused
    assert api.post(f"{base}/resume").json()["state"] == "running"
    app.state.studio.run_once()
    unit = take_unit(app)
    stopped = api.post(f"{base}/stop").json()
    assert stopped == {"branch": "b0", "state": "stopped", "step": 2, "nfe": 2, "reason": "user"}
    assert not commit_unit(app, unit, unit.work.step())  # computed anyway: not kept, the answer stands
    snap = api.get(f"/v1/sessions/{sid}").json()["branches"][0]
    assert (snap["state"], snap["step"], snap["nfe"], [f["nfe"] for f in snap["frames"]]) == ("stopped", 2, 2, [1, 2])
    want = list(pipe.anytime(class_labels=[6], budget=12, generator=gen(2)))[:2]
    for f, w in zip(snap["frames"], want):
        assert np.array_equal(pixels(api.get(f["images"][0]).content), np.asarray(w.images[0]))
    assert api.post(f"{base}/resume").status_code == 409
    assert api.post(f"{base}/stop").json()["state"] == "stopped"
    log = api.get(f"/v1/sessions/{sid}/log").json()
    assert [(op["op"], op["at_step"]) for op in log["ops"]] == [("pause", 1), ("resume", 1), ("stop", 2)]


def test_deadline_stops_with_the_last_complete_frame(api, app, pipe):
    """A deadline that falls after two frames: the step in flight when it passes is discarded, the
    branch stops with its last complete frame (the library's), reason "deadline"."""
    deadline = 4.0
    sid = create(api, class_labels=[1], budget=10, seed=4, deadline=deadline)["session_id"]
    session = app.state.studio.registry.sessions[sid]
    assert app.state.studio.run_once() and app.state.studio.run_once()
    assert time.perf_counter() < session.deadline_at, "two frames took longer than the deadline"
    time.sleep(max(0.0, session.deadline_at - time.perf_counter()) + 0.05)
    drain(app)
    b0 = api.get(f"/v1/sessions/{sid}").json()["branches"][0]
    assert (b0["state"], b0["reason"], b0["nfe"], [f["nfe"] for f in b0["frames"]]) == ("stopped", "deadline", 2, [1, 2])
    want = list(pipe.anytime(class_labels=[1], budget=10, generator=gen(4)))[:2]
    for f, w in zip(b0["frames"], want):
        assert np.array_equal(pixels(api.get(f["images"][0]).content), np.asarray(w.images[0]))
    assert api.get(f"/v1/sessions/{sid}/log").json()["ops"] == [
        {**api.get(f"/v1/sessions/{sid}/log").json()["ops"][0], "op": "stop", "branch": "b0", "at_step": 2,
         "reason": "deadline"}]
    quick = create(api, class_labels=[1], budget=10, deadline=1e-9)["session_id"]  # before the first frame
    drain(app)
    b0 = api.get(f"/v1/sessions/{quick}").json()["branches"][0]
    assert (b0["state"], b0["reason"], b0["nfe"], b0["frames"]) == ("stopped", "deadline", 0, [])


def test_round_robin_serves_every_session_one_step_at_a_time(api, app):
    ids = [create(api, class_labels=[k], budget=6)["session_id"] for k in range(3)]
    for _ in range(6):
        app.state.studio.run_once()
    steps = [api.get(f"/v1/sessions/{i}").json()["branches"][0]["step"] for i in ids]
    assert steps == [2, 2, 2]


def test_prune_pick_and_fork_rules(api, app):
    sid = create(api, class_labels=[3], num_images=2, budget=6, compare_vanilla=True)["session_id"]
    base = f"/v1/sessions/{sid}/branches"
    app.state.studio.run_once()
    assert api.post(f"{base}/v0/fork", json={}).status_code == 409
    assert api.patch(f"{base}/v0/condition", json={"class_labels": 1}).status_code == 409
    assert api.post(f"{base}/b0/fork", json={"image": 2}).status_code == 409  # valid, but b0 holds 2 images
    made = api.post(f"{base}/b0/fork", json={"count": 2}).json()
    assert api.delete(f"{base}/{made['branches'][0]}").status_code == 204
    assert api.get(f"{base}/{made['branches'][0]}/frames/1/0.png").status_code == 404
    drain(app)
    snap = api.get(f"/v1/sessions/{sid}").json()
    assert [b["branch"] for b in snap["branches"]] == ["b0", "v0", "b2"]
    assert api.post(f"{base}/b0/fork", json={}).status_code == 409  # done: nothing left to continue
    assert api.patch(f"{base}/b0/condition", json={"class_labels": 1}).status_code == 409
    ops = api.get(f"/v1/sessions/{sid}/log").json()["ops"]
    assert ops[1] == {**ops[1], "op": "stop", "branch": "b1", "reason": "pruned"}


def test_delete_frees_the_session(api, app):
    sid = create(api, class_labels=[3], budget=4)["session_id"]
    drain(app)
    ref = weakref.ref(app.state.studio.registry.sessions[sid])
    assert api.delete(f"/v1/sessions/{sid}").status_code == 204
    gc.collect()
    assert ref() is None and api.get(f"/v1/sessions/{sid}").status_code == 404
    assert api.delete(f"/v1/sessions/{sid}").status_code == 404


def test_idle_sessions_expire(pipe):
    now = [0.0]
    app = create_app(pipe, start_worker=False, limits=Limits(idle_timeout=60))
    app.state.studio.registry.clock = lambda: now[0]
    with client(app) as api:
        sid = create(api, class_labels=[3], budget=4)["session_id"]
        now[0] = 59.0
        assert api.get(f"/v1/sessions/{sid}").status_code == 200  # a request keeps it alive
        now[0] = 118.0
        assert app.state.studio.registry.expire_idle() == []
        now[0] = 120.0
        assert app.state.studio.registry.expire_idle() == [sid]
        assert api.get(f"/v1/sessions/{sid}").status_code == 404


def test_kept_images_cap_drops_old_frames_but_never_the_latest(pipe):
    app = create_app(pipe, start_worker=False, limits=Limits(max_kept_images=4))
    with client(app) as api:
        sid = create(api, class_labels=[3], num_images=2, budget=6)["session_id"]
        drain(app)
        frames = frames_of(api.get(f"/v1/sessions/{sid}").json(), "b0")
        assert [bool(f["images"]) for f in frames] == [False, False, False, True, True]
        assert api.get(f"/v1/sessions/{sid}/branches/b0/frames/1/0.png").status_code == 410
        assert api.get(frames[-1]["images"][1]).status_code == 200


# -- errors, caps and security ------------------------------------------------------------------
@pytest.mark.parametrize("body,status,message", [
    ({"num_images": 0}, 422, "num_images"),
    ({"num_images": 17}, 422, "num_images: Input should be less than or equal to 16"),
    ({"budget": 5000}, 422, "budget: Input should be less than or equal to 1000"),
    ({"class_labels": [12]}, 422, r"class_labels must lie in [0, 9]"),
    ({"prompt": "a cat"}, 422, "prompt: unknown field (this model takes class_labels, guidance_scale"),
    ({"guidance_scale": -1}, 422, "guidance_scale"),
    ({"inner_sampler": "euler"}, 422, "inner_sampler"),
    ({"outer_steps": 200}, 422, "outer_steps: Input should be less than or equal to 100"),
    ({"budget": 3, "inner_steps": 5}, 422, "give budget (the planner spends it) or inner_steps (a fixed layout)"),
    ({"inner_steps": [5, 5], "outer_steps": 2}, 422, "inner_steps as a list gives one count per outer step"),
    ({"class_labels": [1, 2, 3], "num_images": 2}, 422, "class_labels must hold one label or num_images (2)"),
    ({"guidence_scale": 2}, 422, "guidence_scale: unknown field"),
    ({"seed": -1}, 422, "seed"),
    ({"num_images": "2"}, 422, "num_images: Input should be a valid integer"),
    ({"class_labels": [True]}, 422, "class_labels.0: Input should be a valid integer"),
    ({"deadline": 0}, 422, "deadline"),
    ({"height": 30}, 422, "height must be a multiple of 4 in [4, 1536] pixels, got 30"),
])
def test_bad_requests_are_json_4xx(api, body, status, message):
    r = api.post("/v1/sessions", json=body)
    assert r.status_code == status and message in r.json()["error"], r.text
    assert api.get("/v1/health").json()["sessions"] == 0  # nothing half-created


def test_errors_are_json_and_the_server_goes_on(pipe):
    app = create_app(pipe, start_worker=False)
    with client(app, raise_server_exceptions=False) as api:
        assert api.get("/v1/sessions/nope").json()["error"].startswith("unknown session")
        assert api.get("/v1/nothing-here").status_code == 404 and "error" in api.get("/v1/nothing-here").json()
        r = api.put("/v1/health")
        assert r.status_code == 405 and "error" in r.json()
        r = api.post("/v1/sessions", content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and "error" in r.json()
        sid = create(api, class_labels=[1], budget=4)["session_id"]
        assert api.post(f"/v1/sessions/{sid}/branches/b9/stop").status_code == 404
        assert api.post(f"/v1/sessions/{sid}/branches/b0/fork", json={"count": 2, "seeds": [1]}).status_code == 422
        assert api.patch(f"/v1/sessions/{sid}/branches/b0/condition", json={}).status_code == 422
        assert api.get(f"/v1/sessions/{sid}/branches/b0/frames/x/0.png").status_code == 422
        snapshot, views.snapshot = views.snapshot, lambda *a: 1 / 0
        try:
            r = api.get(f"/v1/sessions/{sid}")
        finally:
            views.snapshot = snapshot
        assert r.status_code == 500 and r.json() == {"error": "internal error (ZeroDivisionError); the server goes on"}
        assert "Traceback" not in r.text and api.get("/v1/health").status_code == 200
        assert api.get("/openapi.json").json()["paths"]["/v1/sessions"]["post"]
        assert api.get("/docs").status_code == 404  # no interactive page: its assets would come from a CDN


def test_too_many_sessions_is_429_with_retry_after(pipe):
    app = create_app(pipe, start_worker=False, limits=Limits(max_sessions=2, idle_timeout=300))
    with client(app) as api:
        create(api, class_labels=[1], budget=4)
        create(api, class_labels=[1], budget=4)
        r = api.post("/v1/sessions", json={"class_labels": [1], "budget": 4})
        assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 300 and "error" in r.json()


def test_security_headers_host_origin_body_and_cors(api):
    r = api.get("/")
    assert r.status_code == 200 and "data-testid=\"start\"" in r.text
    for response in (r, api.get("/v1/health"), api.get("/v1/sessions/x")):
        assert response.headers["content-security-policy"].startswith("default-src 'self'")
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "access-control-allow-origin" not in response.headers
    # DNS rebinding: a foreign Host name is refused; localhost names and the bound address are not
    for host, status in (("evil.example", 403), ("evil.example:7860", 403), ("localhost:7860", 200),
                         ("127.0.0.1", 200), ("[::1]:7860", 200)):
        r = api.get("/v1/health", headers={"Host": host})
        assert r.status_code == status, host
    assert "DNS-rebinding" in api.get("/", headers={"Host": "evil.example"}).json()["error"]
    # state-changing requests from another origin are refused; reading is harmless without CORS
    body = {"class_labels": [1], "budget": 4}
    for origin in ("http://evil.example", "null", "http://127.0.0.1:9999", "http://localhost:7860"):
        r = api.post("/v1/sessions", json=body, headers={"Origin": origin})
        assert r.status_code == 403 and "cross-origin" in r.json()["error"], origin
    assert api.post("/v1/sessions", json=body, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert api.post("/v1/sessions", json=body, headers={"Origin": BASE}).status_code == 201
    r = api.options("/v1/sessions", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in r.headers
    # bodies over 64 KiB: 413, announced or streamed
    big = json.dumps({"prompt": "x" * 70_000}).encode()
    assert api.post("/v1/sessions", content=big, headers={"Content-Type": "application/json"}).status_code == 413
    r = api.post("/v1/sessions", content=iter([big[:40_000], big[40_000:]]), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "at most 65536 bytes" in r.json()["error"]
    assert api.post("/v1/sessions", json={"prompt": "x" * 2000}).status_code == 422  # under 64 KiB: the prompt cap


def test_token_is_required_on_v1(pipe):
    token = "t" * 32
    app = create_app(pipe, start_worker=False, host="0.0.0.0", token=token)
    with client(app) as api:
        assert api.get("/").status_code == 200  # the page itself; it reads the token from #token=
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {token}"}):
            r = api.get("/v1/health", headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer" and "error" in r.json()
        ok = {"Authorization": f"Bearer {token}"}
        assert api.get("/v1/health", headers=ok).status_code == 200
        assert api.get("/v1/health", headers={**ok, "Host": "192.168.1.20:7860"}).status_code == 200  # LAN address
        assert api.get("/v1/health", headers={**ok, "Host": "rebound.example"}).status_code == 403
        assert "img-src 'self' blob:" in api.get("/").headers["content-security-policy"]


def test_serve_token_rules():
    from nested_diffusion.cli.serve import resolve_token

    assert resolve_token("127.0.0.1", None) is None and resolve_token("localhost", None) is None
    assert len(resolve_token("0.0.0.0", None)) >= 32
    assert resolve_token("0.0.0.0", "s" * 16) == "s" * 16
    with pytest.raises(ValueError, match="at least 16"):
        resolve_token("127.0.0.1", "short")


def test_a_text_model_session_equals_the_library(tmp_path):
    """A (tiny, random) Stable Diffusion pipeline: prompt controls, a prompt edit and a Vary fork of a
    two-prompt batch, frame for frame equal to the library."""
    pytest.importorskip("transformers")
    from test_pipelines_diffusers import build_sd

    from nested_diffusion import NestedPipeline

    nested = NestedPipeline.from_pipe(build_sd(tmp_path))
    app = create_app(nested, model="tiny-sd", start_worker=False)
    with client(app) as api:
        health = api.get("/v1/health").json()
        assert (health["conditioning"], health["num_classes"], health["model"]) == ("text", None, "tiny-sd")
        assert "class_labels: unknown field (this model takes prompt" in api.post("/v1/sessions", json={"class_labels": [1]}).json()["error"]
        bad = api.post("/v1/sessions", json={"prompt": ["a", "b", "c"], "num_images": 2})
        assert bad.status_code == 422 and "multiple of the number of prompts" in bad.json()["error"]
        sid = create(api, prompt=["a cat", "a dog"], num_images=2, budget=6, seed=1)["session_id"]
        base = f"/v1/sessions/{sid}/branches"
        app.state.studio.run_once()
        assert api.patch(f"{base}/b0/condition", json={"prompt": "a cat", "class_labels": 3}).status_code == 422
        assert api.patch(f"{base}/b0/condition", json={"negative_prompt": "a dog"}).json()["applies_from_step"] == 2
        app.state.studio.run_once()
        assert api.post(f"{base}/b0/fork", json={"count": 2, "image": 1, "seeds": [5]}).status_code == 201
        drain(app)
        snap = api.get(f"/v1/sessions/{sid}").json()
        assert snap["branches"][1]["condition"]["prompt"] == ["a dog", "a dog"]

    root = nested.anytime(prompt=["a cat", "a dog"], num_images=2, budget=6, generator=gen(1))
    want = {"b0": [root.step()]}
    root.set_condition(negative_prompt="a dog")
    want["b0"].append(root.step())
    child = root.fork(gen(5), indices=[1, 1])
    want["b0"] += list(root)
    want["b1"] = [child.last_frame, *child]
    for name, frames in want.items():
        got = frames_of(snap, name)
        assert [f["nfe"] for f in got] == [f.nfe for f in frames]
        for f, w in zip(got, frames):
            for i, image in enumerate(w.images):
                served = views.frame_png(app.state.studio, app.state.studio.registry.sessions[sid],
                                         app.state.studio.registry.sessions[sid].branches[name], f["step"], i)[0]
                assert np.array_equal(np.asarray(served), np.asarray(image))
