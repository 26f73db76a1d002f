"""Editing in the studio's /v1 API (issue 20, part 4), in process with the worker driven step by step:
uploads checked before anything is decoded, inpainting and image-to-image sessions equal to the library
frame for frame (nested DDRM on the pixel model: the kept pixels exact in every frame; latent blending on
a tiny Stable Diffusion: the kept latents exact), a mask or a strength changed mid-run from the next outer
step with its receipt, forks / Vary / Stop / prompt edits on edits, and replay from the log."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from nested_diffusion.restoration import Inpainting
from nested_diffusion.studio.app import create_app
from nested_diffusion.studio.frames import read_png_text
from nested_diffusion.studio.limits import Limits
from nested_diffusion.studio.replay import replay
from studio_support import client, commit_unit, drain, gen, pixels, take_unit

pytest.importorskip("fastapi")


@pytest.fixture(scope="module")
def digit() -> Image.Image:
    from nested_diffusion.data import load_mnist5k

    images, _ = load_mnist5k("test")
    return Image.fromarray(images[0])


def png(image: Image.Image, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=save.pop("format", "PNG"), **save)
    return buffer.getvalue()


def mask_image(rows=slice(None), cols=slice(None), size=(28, 28)) -> Image.Image:
    """White (repaint) over ``rows × cols``, black elsewhere."""
    m = np.zeros(size, dtype=np.uint8)
    m[rows, cols] = 255
    return Image.fromarray(m)


def upload(api, image: Image.Image, **save) -> str:
    r = api.post("/v1/images", content=png(image, **save), headers={"Content-Type": "image/png"})
    assert r.status_code == 201, r.text
    return r.json()["image_id"]


def create(api, **body):
    r = api.post("/v1/sessions", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def branch(snap, name):
    return next(b for b in snap["branches"] if b["branch"] == name)


def served(api, frame):
    return [pixels(api.get(url).content) for url in frame["images"]]


def run_until(app, api, sid, name, step, limit=100):
    """Drive the (unbatched, round-robin) worker until branch ``name`` has ``step`` frames."""
    for _ in range(limit):
        if branch(api.get(f"/v1/sessions/{sid}").json(), name)["step"] >= step:
            return
        app.state.studio.run_once()
    raise AssertionError(f"{name} never reached step {step}")


def keep_of(mask: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(mask) < 128)[None]


# -- uploads ------------------------------------------------------------------------------------------
def test_uploads_are_checked_before_decoding_with_their_own_cap(pipe, digit, tmp_path):
    app = create_app(pipe, start_worker=False, limits=Limits(max_upload_bytes=200_000, max_uploads=2))
    with client(app) as api:
        first = api.post("/v1/images", content=png(digit), headers={"Content-Type": "image/png"})
        assert first.status_code == 201
        assert first.json() == {"image_id": first.json()["image_id"], "width": 28, "height": 28, "mode": "L"}
        # the id names the pixels, not the file: another encoding of the same picture has the same one
        assert upload(api, digit, compress_level=0) == first.json()["image_id"]
        again = api.post("/v1/images", content=png(digit.convert("RGB"), format="WEBP", lossless=True),
                         headers={"Content-Type": "image/webp"})
        assert again.status_code == 201 and again.json()["mode"] == "RGB"
        truncated = png(digit)[:120]
        huge_header = png(Image.new("L", (5000, 4000)))  # a few KB that would decode to 20 MP
        gif = png(digit, format="GIF")
        for body, media, status, message in (
                (png(digit), "text/plain", 415, "an upload must be image/png, image/jpeg, image/webp, got text/plain"),
                (b"root:x:0:0:root:/root:/bin/bash\n", "image/png", 415, "the upload is not a PNG, JPEG or WebP file"),
                (gif, "image/png", 415, "not a PNG, JPEG or WebP file"),
                (b"", "image/jpeg", 415, "not a PNG, JPEG or WebP file"),
                (truncated, "image/png", 422, "the upload is truncated or corrupt"),
                (huge_header, "image/png", 413, "5000×4000 = 20000000 pixels; at most 16777216"),
                (b"\x89PNG" + bytes(250_000), "image/png", 413, "request body too large: at most 200000 bytes")):
            r = api.post("/v1/images", content=body, headers={"Content-Type": media})
            assert (r.status_code, r.headers["content-type"]) == (status, "application/json"), (message, r.text)
            assert message in r.json()["error"], r.text
        streamed = api.post("/v1/images", content=iter([bytes(150_000), bytes(150_000)]),
                            headers={"Content-Type": "image/png"})
        assert streamed.status_code == 413  # not announced by Content-Length: counted as it arrives
        # every other route keeps the 64 KiB JSON cap
        big = json.dumps({"prompt": "x" * 70_000}).encode()
        r = api.post("/v1/sessions", content=big, headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and "at most 65536 bytes" in r.json()["error"]
        assert len(app.state.studio.uploads) == 2 and api.get("/v1/health").json()["status"] == "ok"
        # the store keeps the latest uploads only; a session naming a dropped one is a 409
        upload(api, mask_image(slice(0, 14)))
        r = api.post("/v1/sessions", json={"image": first.json()["image_id"], "class_labels": [1]})
        assert r.status_code == 409 and "no uploaded image" in r.json()["error"]
        assert api.get("/v1/health").json()["sessions"] == 0


def test_bad_edits_are_409_before_any_network_call(api, app, digit):
    image = upload(api, digit)
    calls = []
    handle = app.state.studio.pipes[0].adapter.unet.register_forward_hook(lambda *a: calls.append(1))
    try:
        for body, message in (
                ({"image": upload(api, Image.new("L", (2, 2)))}, "its height makes an edit of 0 pixels, outside [4, 1536]"),
                ({"image": upload(api, Image.new("L", (2000, 8)))}, "its width makes an edit of 2000 pixels"),
                ({"image": image, "mask_image": upload(api, mask_image(size=(20, 20)))},
                 "mask_image must have the input's size 28×28, got 20×20"),
                ({"image": image, "mask_image": upload(api, mask_image())}, "mask_image repaints every pixel"),
                ({"image": "0" * 64}, "image: no uploaded image")):
            r = api.post("/v1/sessions", json={**body, "class_labels": [3], "budget": 10})
            assert r.status_code == 409 and message in r.json()["error"], (message, r.text)
    finally:
        handle.remove()
    assert calls == [] and api.get("/v1/health").json()["sessions"] == 0
    # a size given resizes the input; a mask may have the input's size or the edit's
    big = upload(api, digit.resize((56, 56), Image.NEAREST))
    sid = create(api, image=big, mask_image=upload(api, mask_image(slice(0, 28), size=(56, 56))), class_labels=[3],
                 budget=10, height=28, width=28)["session_id"]
    snap = api.get(f"/v1/sessions/{sid}").json()
    assert snap["request"]["height"] == snap["request"]["width"] == 28 and snap["request"]["image"] != big
    shown = pixels(api.get(snap["edit"]["mask_image_url"]).content)
    assert shown.shape == (28, 28) and (shown[:14] == 255).all() and (shown[14:] == 0).all()
    assert pixels(api.get(snap["edit"]["image_url"]).content).shape == (28, 28)
    assert api.get(f"/v1/sessions/{sid}/images/{'0' * 64}.png").status_code == 404
    health = api.get("/v1/health").json()
    assert health["editing"]["inpainting"] == "nested DDRM" and health["editing"]["strength_with_mask"] is False
    assert health["limits"]["max_upload_bytes"] == 16 * 1024 * 1024


# -- inpainting on the pixel model: nested DDRM ---------------------------------------------------------
def test_inpainting_keeps_the_input_exactly_and_a_mask_edited_mid_run_applies_from_the_next_step(api, app, pipe,
                                                                                                 digit):
    """Every frame keeps the input exactly outside the mask — the first mask up to the step the receipt
    names, the new one from it; Vary, Stop and a class edit work on the edit; every frame equals the
    library's (restore + set_measurement at the same step) and the log replays them bit for bit."""
    top, left = mask_image(slice(0, 14)), mask_image(slice(None), slice(0, 14))
    image, first, second = upload(api, digit), upload(api, top), upload(api, left)
    sid = create(api, image=image, mask_image=first, class_labels=[7], num_images=2, budget=20, seed=3,
                 compare_vanilla=True)["session_id"]
    base = f"/v1/sessions/{sid}/branches"
    studio = app.state.studio
    assert studio.run_once()  # b0's step 1
    unit = take_unit(app)  # v0's first frame: the lane takes no edits
    assert api.patch(f"{base}/v0/edit", json={"mask_image": second}).status_code == 409
    commit_unit(app, unit, unit.advance())
    receipt = api.patch(f"{base}/b0/edit", json={"mask_image": second})
    assert receipt.status_code == 202 and receipt.json() == {"rev": 1, "applies_from_step": 2}
    assert api.patch(f"{base}/b0/edit", json={"strength": 0.5}).status_code == 409  # DDRM starts from noise
    run_until(app, api, sid, "b0", 3)
    fork = api.post(f"{base}/b0/fork", json={"count": 2, "image": 1, "seeds": [11]}).json()
    assert fork["branches"] == ["b1"] and fork["at_step"] == 3
    assert api.patch(f"{base}/b1/condition", json={"class_labels": 2}).json() == {"rev": 2, "applies_from_step": 4}
    run_until(app, api, sid, "b0", 4)
    assert api.post(f"{base}/b0/stop").json()["step"] == 4
    drain(app)
    snap = api.get(f"/v1/sessions/{sid}").json()
    source = np.asarray(digit)
    b0, b1 = branch(snap, "b0"), branch(snap, "b1")
    assert b0["edit"]["mask_image"] == second and snap["edit"]["mask_image"] == first  # now / at the start
    assert [f["condition_rev"] for f in b0["frames"]] == [0, 1, 1, 1]
    for name, frames in (("b0", b0["frames"]), ("b1", b1["frames"])):
        for f in frames:
            kept = (source >= 0) & (np.asarray(top if f["step"] == 1 else left) < 128)
            for shown in served(api, f):
                assert np.array_equal(shown[kept], source[kept]), (name, f["step"])  # exactly the input
                assert np.abs(shown[~kept].astype(int) - source[~kept]).mean() > 10  # repainted
    assert (b0["state"], b1["state"]) == ("stopped", "done")

    # the library, with the same interventions at the same steps
    g = lambda m: dict(image=digit, operator=Inpainting(keep_of(m)), sigma_y=0.0)  # noqa: E731
    root = pipe.restore(**g(top), class_labels=[7], num_images=2, budget=20, generator=gen(3))
    want = {"b0": [root.step()]}
    op = Inpainting(keep_of(left))
    root.core.set_measurement(op(torch.from_numpy(source / 255.0).float()[None, None] * 2 - 1), operator=op)
    want["b0"] += [root.step(), root.step()]
    child = root.fork(gen(11), indices=[1, 1])
    want["b0"].append(root.step())
    child.set_condition(class_labels=2)
    want["b1"] = [child.last_frame, *child]
    lane = pipe.restore(**g(top), class_labels=[7], num_images=2, method="ddrm", steps=20, generator=gen(3))
    want["v0"] = [f for f in lane if f.nfe in snap["checkpoints"]]
    for name, frames in want.items():
        got = branch(snap, name)["frames"]
        assert [f["nfe"] for f in got] == [f.nfe for f in frames], name
        for f, w in zip(got, frames):
            assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(served(api, f), w.images)), (name, f["step"])
    # the log carries both masks and the input inline, and replays every frame bit for bit
    log = api.get(f"/v1/sessions/{sid}/log").json()
    assert log["version"] == 2 and set(log["images"]) == {image, first, second}
    replayed = replay(log, pipe)
    for name, frames in want.items():
        assert [torch.equal(a.latents, b.latents) for a, b in zip(replayed[name], frames)] == [True] * len(frames)
    # a frame's provenance names the edit and the mask change
    history = json.loads(read_png_text(api.get(b0["frames"][-1]["images"][0]).content)["condition_history"])
    assert history[0]["condition"]["mask_image"] == first and history[1]["changes"] == {"mask_image": second}
    tampered = {**log, "images": {**log["images"], second: log["images"][first]}}
    with pytest.raises(ValueError, match="does not match its id"):
        replay(tampered, pipe)


# -- image-to-image: a strength changed mid-run --------------------------------------------------------
def test_image_to_image_and_a_strength_changed_mid_run(api, app, pipe, digit):
    """A new strength restarts the nested edit's outer process within the NFEs left, from the next outer
    step (the receipt's); the branch's later frames come at the replanned NFEs; library-equal; replayed."""
    image = upload(api, digit)
    sid = create(api, image=image, strength=0.6, class_labels=[2], budget=20, seed=1)["session_id"]
    base = f"/v1/sessions/{sid}/branches/b0"
    studio = app.state.studio
    studio.run_once()
    unit = take_unit(app)  # step 2 in flight: the change applies from step 3
    assert api.patch(f"{base}/edit", json={"strength": 0.3}).json() == {"rev": 1, "applies_from_step": 3}
    assert api.patch(f"{base}/edit", json={"mask_image": upload(api, mask_image(slice(0, 4)))}).status_code == 409
    commit_unit(app, unit, unit.advance())
    drain(app)
    b0 = branch(api.get(f"/v1/sessions/{sid}").json(), "b0")

    session = pipe.anytime(image=digit, strength=0.6, class_labels=[2], budget=20, generator=gen(1))
    want = [session.step(), session.step()]
    session.set_edit(strength=0.3)
    want += list(session)
    assert b0["checkpoints"] == session.checkpoints() != api.get(f"/v1/sessions/{sid}").json()["checkpoints"]
    assert [f["nfe"] for f in b0["frames"]] == [f.nfe for f in want] and b0["frames"][-1]["nfe"] == 20
    assert b0["edit"]["strength"] == 0.3 and b0["state"] == "done" and b0["num_steps"] == len(want)
    for f, w in zip(b0["frames"], want):
        assert np.array_equal(served(api, f)[0], np.asarray(w.images[0]))
    replayed = replay(api.get(f"/v1/sessions/{sid}/log").json(), pipe)["b0"]
    assert [torch.equal(a.latents, b.latents) for a, b in zip(replayed, want)] == [True] * len(want)
    # the edit route's conflicts and contract
    plain = create(api, class_labels=[1], budget=4)["session_id"]
    r = api.patch(f"/v1/sessions/{plain}/branches/b0/edit", json={"strength": 0.5})
    assert r.status_code == 409 and "is no edit" in r.json()["error"]
    assert api.patch(f"{base}/edit", json={"strength": 0.5}).status_code == 409  # done
    for body, message in (({}, "give at least one of mask_image, strength"), ({"strength": None}, "strength"),
                          ({"strength": 1.5}, "strength"), ({"mask_image": "x"}, "mask_image"),
                          ({"mask": "a" * 64}, "mask: unknown field")):
        r = api.patch(f"{base}/edit", json=body)
        assert r.status_code == 422 and message in r.json()["error"], (body, r.text)


# -- a latent model: blending on a tiny random Stable Diffusion ------------------------------------------
def test_a_latent_model_edit_keeps_the_input_latents_and_equals_the_library(tmp_path):
    """Inpainting with latent blending: every frame's latents keep the input's exactly outside the mask, a
    prompt edit and a new mask mid-run and a fork work on it, every served frame equals the library's
    decoding, and the log replays it. (Outside the mask the pixels are then the VAE's decoding of the input's
    own latents — the input within the VAE round trip for a real VAE; this random 16×16 one mixes every
    latent into every pixel, its round trip alone is 0.29 away, so the exact check is on the latents.)"""
    pytest.importorskip("transformers")
    from tiny_pipelines import build_sd

    from nested_diffusion import NestedPipeline

    nested = NestedPipeline.from_pipe(build_sd(tmp_path))
    (height, width), multiple = nested.adapter.size_rule()
    picture = Image.fromarray((np.random.default_rng(0).random((height, width, 3)) * 255).astype("uint8"))
    first = mask_image(slice(0, height // 2), size=(height, width))
    second = mask_image(slice(None), slice(0, width // 2), size=(height, width))
    app = create_app(nested, model="tiny-sd", start_worker=False, batching=False)
    with client(app) as api:
        assert api.get("/v1/health").json()["editing"]["inpainting"] == "latent blending"
        image, m1, m2 = upload(api, picture), upload(api, first), upload(api, second)
        sid = create(api, prompt="a cat", image=image, mask_image=m1, strength=0.9, budget=6, seed=2,
                     num_images=2)["session_id"]
        base = f"/v1/sessions/{sid}/branches"
        app.state.studio.run_once()
        assert api.patch(f"{base}/b0/condition", json={"prompt": "a dog"}).json()["applies_from_step"] == 2
        assert api.patch(f"{base}/b0/edit", json={"mask_image": m2}).json() == {"rev": 2, "applies_from_step": 2}
        app.state.studio.run_once()
        assert api.post(f"{base}/b0/fork", json={"count": 1, "seeds": [5]}).json()["branches"] == ["b1"]
        drain(app)
        snap = api.get(f"/v1/sessions/{sid}").json()
        studio_session = app.state.studio.registry.sessions[sid]
        shown = {name: [served(api, f) for f in branch(snap, name)["frames"]] for name in ("b0", "b1")}
        log = api.get(f"/v1/sessions/{sid}/log").json()

    root = nested.anytime(prompt="a cat", image=picture, mask_image=first, strength=0.9, budget=6, num_images=2,
                          generator=gen(2))
    want = {"b0": [root.step()]}
    root.set_condition(prompt="a dog")
    root.set_edit(mask_image=second)
    want["b0"].append(root.step())
    child = root.fork(gen(5))
    want["b0"] += list(root)
    want["b1"] = [child.last_frame, *child]
    known = root.edit.image
    for name, frames in want.items():
        assert [len(shown[name]), [f["nfe"] for f in branch(snap, name)["frames"]]] == \
            [len(frames), [f.nfe for f in frames]]
        for got, w in zip(shown[name], frames):
            assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(got, w.images)), name
        for k, w in enumerate(frames):  # the known latents, exactly: the first mask for step 1, then the second
            keep = 1 - nested.adapter.latent_mask(nested.adapter.preprocess_mask(
                first if w.step == 1 else second, height, width))
            assert torch.equal(w.latents * keep, known * keep), (name, k)
            assert (w.latents * (1 - keep) - known * (1 - keep)).abs().max() > 1e-2  # the rest is repainted
    assert studio_session.branches["b1"].edit["mask_image"] == m2
    replayed = replay(log, nested)
    for name, frames in want.items():
        assert [torch.equal(a.latents, b.latents) for a, b in zip(replayed[name], frames)] == [True] * len(frames)
