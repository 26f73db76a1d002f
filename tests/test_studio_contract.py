"""The studio's published contract is what the server does: no route takes a parameter it does not
document (the old ``?action=`` leak), every status a route can answer is documented with the JSON
error schema, a 405 lists every method of its path, the request schema is the server's own (per
model: class range, fields, sizes), and an outside fuzzer (schemathesis: coverage, fuzzing and the
stateful phase, every check) finds nothing against a live server."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from nested_diffusion.studio.app import create_app
from nested_diffusion.studio.limits import Limits
from studio_support import LiveServer, client, digits


@pytest.fixture
def app():
    return create_app(digits(), start_worker=False, batching=False)


@pytest.fixture
def schema(app):
    return app.openapi()


def operations(schema):
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            yield path, method, operation


def create(api, **body):
    r = api.post("/v1/sessions", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def test_the_action_routes_take_no_action_parameter(app):
    """``POST …/pause?action=stop`` once stopped the branch; now the query is refused and nothing changes."""
    with client(app) as api:
        sid = create(api, class_labels=[1], budget=4)["session_id"]
        base = f"/v1/sessions/{sid}/branches/b0"
        for action in ("pause", "resume", "stop"):
            for query in ("stop", "bogus"):
                r = api.post(f"{base}/{action}?action={query}")
                assert r.status_code == 422 and r.json()["error"] == \
                    "unknown query parameter action (this route takes none)", (action, query)
        assert api.get(f"/v1/sessions/{sid}").json()["branches"][0]["state"] == "running"
        assert api.post(f"{base}/pause").json()["state"] == "paused"
        assert api.get(f"/v1/sessions/{sid}/events?after=0&afer=1").json()["error"] == \
            "unknown query parameter afer (this route takes after)"
        api.delete(f"/v1/sessions/{sid}")


def test_no_route_takes_a_parameter_it_does_not_document(app, schema):
    from nested_diffusion.studio.deps import declared
    from nested_diffusion.studio.routers import ROUTERS

    documented = {(op["operationId"]): {(p["in"], p["name"].lower()) for p in op.get("parameters", [])}
                  for _, _, op in operations(schema)}
    routes = [r for router in ROUTERS for r in router.routes if r.include_in_schema]
    assert {r.operation_id for r in routes} == set(documented)
    for route in routes:
        d = route.dependant
        taken = {(kind, name.lower() if kind == "header" else name)
                 for kind in ("path", "query", "header", "cookie") for name in declared(d, kind)}
        assert taken == documented[route.operation_id], route.operation_id
        assert not declared(d, "body"), route.operation_id  # bodies: the contract's models, parsed by a dependency
    outside_path = {(op, p) for op, params in documented.items() for p in params if p[0] != "path"}
    assert outside_path == {("getEvents", ("query", "after")), ("getEvents", ("header", "last-event-id"))}


def test_every_status_is_documented_with_the_error_schema(schema):
    for path, method, op in operations(schema):
        statuses = {int(s) for s in op["responses"]}
        assert {401, 403, 500} <= statuses, (method, path)
        if "{session_id}" in path:
            assert 404 in statuses, (method, path)
        if "requestBody" in op:
            assert {413, 415, 422} <= statuses, (method, path)
        for status, answer in op["responses"].items():
            if int(status) >= 400:
                assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
        if 429 in statuses:
            assert "Retry-After" in op["responses"]["429"]["headers"]
    assert schema["components"]["schemas"]["ErrorBody"]["required"] == ["error"]
    assert "HTTPValidationError" not in schema["components"]["schemas"]


def test_a_405_lists_every_method_of_the_path(app):
    with client(app) as api:
        sid = create(api, class_labels=[1], budget=4)["session_id"]
        for method, path, allowed in (("PUT", f"/v1/sessions/{sid}", "DELETE, GET, HEAD"),
                                      ("POST", f"/v1/sessions/{sid}", "DELETE, GET, HEAD"),
                                      ("GET", "/v1/sessions", "POST"),
                                      ("PATCH", f"/v1/sessions/{sid}/branches/b0", "DELETE"),
                                      ("OPTIONS", "/v1/health", "GET, HEAD")):
            r = api.request(method, path)
            assert r.status_code == 405 and r.headers["allow"] == allowed, (method, path, r.headers.get("allow"))
            assert r.json()["error"] == f"method {method} not allowed here; allowed: {allowed}"
        api.delete(f"/v1/sessions/{sid}")


def test_the_request_schema_is_the_models_and_the_servers_own(tmp_path, schema):
    """Class range, fields the model takes, the size multiple and the caps are in the document; a
    text model's document has prompts and no class labels."""
    create_schema = schema["components"]["schemas"]["CreateSession"]
    props = create_schema["properties"]
    assert set(props) == {"class_labels", "guidance_scale", "num_images", "budget", "outer_steps", "inner_steps",
                          "inner_sampler", "seed", "deadline", "height", "width", "compare_vanilla", "image",
                          "mask_image", "strength"}
    assert create_schema["additionalProperties"] is False
    assert props["class_labels"]["anyOf"][0] == {"type": "integer", "minimum": 0, "maximum": 9}
    assert props["height"]["anyOf"][0] == {"type": "integer", "multipleOf": 4, "minimum": 4, "maximum": 1536}
    assert props["num_images"]["maximum"] == 16 and props["budget"]["anyOf"][0]["maximum"] == 1000
    from nested_diffusion.samplers import SAMPLERS

    assert props["inner_sampler"]["anyOf"][0]["enum"] == list(SAMPLERS)
    assert props["image"]["anyOf"][0] == {"type": "string", "pattern": "^[0-9a-f]{64}$"}
    assert props["strength"]["anyOf"][0] == {"type": "number", "exclusiveMinimum": 0, "maximum": 1}
    edit = schema["components"]["schemas"]["EditPatch"]
    assert edit["minProperties"] == 1 and set(edit["properties"]) == {"mask_image", "strength"}
    assert all("default" not in p for p in edit["properties"].values())  # absent, never null
    upload = schema["paths"]["/v1/images"]["post"]
    assert sorted(upload["requestBody"]["content"]) == ["image/jpeg", "image/png", "image/webp"]
    assert {"413", "415", "422"} <= set(upload["responses"]) and "201" in upload["responses"]
    assert schema["components"]["schemas"]["ConditionPatch"]["minProperties"] == 1
    fork = schema["components"]["schemas"]["ForkRequest"]
    assert fork["properties"]["seeds"]["anyOf"][0]["minItems"] == 1 and "allOf" in fork

    pytest.importorskip("transformers")
    from test_pipelines_diffusers import build_sd

    from nested_diffusion import NestedPipeline

    text_app = create_app(NestedPipeline.from_pipe(build_sd(tmp_path)), model="tiny-sd", start_worker=False)
    with client(text_app) as api:
        text = api.get("/openapi.json").json()["components"]["schemas"]["CreateSession"]["properties"]
        assert {"prompt", "negative_prompt", "guidance_scale"} <= set(text) and "class_labels" not in text
        assert api.get("/v1/health").json()["condition"] == {"kind": "text", "pooled": False, "guidance": "cfg",
                                                              "true_cfg": False,
                                                              "fields": ["prompt", "negative_prompt", "guidance_scale"]}


@pytest.mark.parametrize("body", [
    {"num_images": 2, "class_labels": [3, 4]}, {"num_images": 3, "class_labels": [3]}, {"class_labels": 2.0},
    {"num_images": 2, "class_labels": [3, 4, 5]}, {"height": 1}, {"height": 32.0, "width": 8}, {"inner_steps": 5},
    {"inner_steps": 5, "budget": 10}, {"inner_steps": [2, 3], "outer_steps": 2}, {"inner_steps": [2, 3]},
    {"outer_steps": 3, "budget": 7}, {"inner_sampler": "ddpm"}, {"inner_sampler": "dpmpp-3m-sde", "budget": 20},
    {"seed": 2**63}, {"deadline": 0}, {"guidance_scale": 101}, {"class_labels": []}, {"budget": 1},
])
def test_schema_and_server_agree(app, schema, body):
    """A body the document accepts is created (201); one it rejects is a 422 — decided by a JSON
    Schema validator against the published document, not by the server's own models."""
    import jsonschema_rs

    document = {**schema["components"]["schemas"]["CreateSession"], "$defs": {}}
    valid = jsonschema_rs.validator_for(document).is_valid(body)
    with client(app) as api:
        r = api.post("/v1/sessions", json=body)
        assert r.status_code == (201 if valid else 422), (body, r.text)
        if r.status_code == 201:
            api.delete(f"/v1/sessions/{r.json()['session_id']}")


HEX = "ab" * 32


@pytest.mark.parametrize("body", [
    {"mask_image": HEX}, {"strength": 0.5}, {"image": HEX}, {"image": HEX, "strength": 0.5},
    {"image": HEX, "mask_image": HEX}, {"image": HEX, "mask_image": HEX, "strength": 0.5},
    {"image": HEX, "mask_image": HEX, "strength": 1}, {"image": HEX, "mask_image": HEX, "inner_sampler": "ddim"},
    {"image": HEX, "strength": 0}, {"image": HEX, "strength": 1.5}, {"image": "not-hex"}, {"image": None, "strength": None},
])
def test_edit_schema_and_server_agree(app, schema, body):
    """The edit rules of the document (mask and strength need an image; nested DDRM on this pixel model takes
    strength 1 and no inner sampler) are the server's: a valid edit naming an image never uploaded is a 409."""
    import jsonschema_rs

    valid = jsonschema_rs.validator_for({**schema["components"]["schemas"]["CreateSession"], "$defs": {}}).is_valid(body)
    with client(app) as api:
        r = api.post("/v1/sessions", json=body)
        wanted = (201 if body.get("image") is None else 409) if valid else 422
        assert r.status_code == wanted, (body, r.text)
        if r.status_code == 409:
            assert "no uploaded image" in r.json()["error"]
        if r.status_code == 201:
            api.delete(f"/v1/sessions/{r.json()['session_id']}")


def test_fork_schema_and_server_agree(app, schema):
    import jsonschema_rs

    validator = jsonschema_rs.validator_for(schema["components"]["schemas"]["ForkRequest"])
    with client(app) as api:
        sid = create(api, class_labels=[1], num_images=2, budget=100)["session_id"]
        app.state.studio.run_once()
        for body in ({"count": 2, "seeds": []}, {"count": 2, "seeds": [1, 2]}, {"count": 3, "seeds": [1, 2]},
                     {"seeds": [5, 6]}, {"image": 1, "count": 3, "seeds": [7]}, {"image": 1, "seeds": [7, 8]},
                     {"image": 0, "count": 17}, {"count": 17}, {"count": 1}):
            valid = validator.is_valid(body)
            r = api.post(f"/v1/sessions/{sid}/branches/b0/fork", json=body)
            assert r.status_code in ((201, 409) if valid else (422,)), (body, r.text)
        api.delete(f"/v1/sessions/{sid}")


def test_schemathesis_finds_nothing(tmp_path):
    """schemathesis (coverage, fuzzing and the stateful phase; every check) against a live server with
    its worker running and small caps, so that sessions finish, streams close and frames exist."""
    executable = shutil.which("schemathesis")
    if executable is None:
        pytest.fail("schemathesis is not installed (pip install -e '.[test]')")
    limits = Limits(max_sessions=200, max_images=2, max_nfe=8, max_outer_steps=4, max_branches=4, max_side=32,
                    max_prompt_chars=50, max_stream_seconds=0.5, idle_timeout=120)
    seed = os.environ.get("NESTED_DIFFUSION_FUZZ_SEED", "20250601")
    with LiveServer(create_app(digits(), limits=limits)) as live:
        report = tmp_path / "report"
        cmd = [executable, "run", f"{live.url}/openapi.json", "--checks", "all",
               "--phases", "coverage,fuzzing,stateful", "--max-examples", "15", "--workers", "1",
               "--request-timeout", "20", "--seed", seed, "--continue-on-failure", "--no-color",
               "--report", "ndjson", "--report-dir", str(report)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "SCHEMATHESIS_HOOKS": ""}
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env, cwd=tmp_path)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    assert "Stateful" in out and "Coverage" in out and "Fuzzing" in out
    summary = out[out.rfind("Test cases:"):]
    assert " passed" in summary and "failure" not in summary.split("\n")[1], summary
