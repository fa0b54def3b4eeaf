"""The HTTP infill API, version 1 (docs/serving.md), over the embedded model without Ray: the contract's
shapes, every 4xx with the app still serving after it, the bearer token, and the OpenAPI document."""

from __future__ import annotations

import json

import pytest

from dg_lsp.engine.request import InfillRequest, SamplerConfig

from .conftest import GOOD, HoldAtPoll, loaded_batcher

RESPONSE_KEYS = {"api_version", "middle", "middles", "tokens", "steps", "canvas_tokens", "timings", "model", "replica"}


def test_infill_answers_in_the_contract_shape(make_client):
    client, _ = make_client()
    r = client.post("/v1/infill", json=GOOD)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == RESPONSE_KEYS
    assert body["api_version"] == "1" and body["model"] == "dg-coder-tiny" and body["replica"] == "local"
    assert body["middles"] == [body["middle"]] and body["canvas_tokens"] == 16  # line mode's canvas
    assert body["steps"] >= 1
    assert set(body["timings"]) == {"queue_ms", "encode_ms", "denoise_ms", "total_ms"}
    (tokens,) = body["tokens"]
    assert "".join(t["text"] for t in tokens) == body["middle"]
    assert all(t["confidence"] is None or 0.0 <= t["confidence"] <= 1.0 for t in tokens)


def test_the_middle_is_the_engines(make_client, backend):
    """What the API returns is what the engine writes for the same request (argmax, so no randomness)."""
    client, _ = make_client()
    body = client.post("/v1/infill", json={**GOOD, "max_tokens": 12, "sampler": {"steps": 6}}).json()
    expected = backend.engine.complete(InfillRequest.at_cursor(GOOD["prefix"], GOOD["suffix"], 12),
                                       SamplerConfig(steps=6))
    assert body["middle"] == expected.text and body["canvas_tokens"] == 12


def test_every_token_carries_the_probability_the_engine_committed_it_with(make_client, backend):
    """The API's tokens are the engine's own (InfillResult.token_ids), with their commit confidences, and
    join up to the middle; without the engine's tokens the text is tokenized again, confidences null."""
    from dg_lsp.engine.request import InfillResult

    client, _ = make_client()
    body = client.post("/v1/infill", json={**GOOD, "max_tokens": 12, "sampler": {"steps": 6}}).json()
    expected = backend.engine.complete(InfillRequest.at_cursor(GOOD["prefix"], GOOD["suffix"], 12),
                                       SamplerConfig(steps=6))
    (tokens,) = body["tokens"]
    assert [t["confidence"] for t in tokens] == pytest.approx(list(expected.confidences[0]))
    assert len(tokens) == len(expected.token_ids[0]) and "".join(t["text"] for t in tokens) == body["middle"]
    assert all(0.0 < t["confidence"] <= 1.0 for t in tokens)
    text = "return a + b"
    bare = loaded_batcher(backend)._tokens(InfillResult(texts=(text,), steps=1, canvas_tokens=4), 0)
    assert "".join(t.text for t in bare) == text and {t.confidence for t in bare} == {None}


@pytest.mark.parametrize("extra, canvas", [({"mode": "block"}, 48), ({"max_tokens": 7}, 7)])
def test_the_canvas_comes_from_mode_or_max_tokens(make_client, extra, canvas):
    client, _ = make_client()
    assert client.post("/v1/infill", json={**GOOD, **extra}).json()["canvas_tokens"] == canvas


def test_segments_and_holes_fill_every_hole(make_client):
    client, _ = make_client()
    body = client.post("/v1/infill", json={
        "segments": ["def f(a, b):\n    return ", "\n\n\ndef g(x):\n    ", "\n"],
        "holes": [{"canvas": 6}, {"canvas": 6, "init": "return x"}]}).json()
    assert len(body["middles"]) == 2 == len(body["tokens"]) and body["canvas_tokens"] == 12


def test_a_seed_makes_sampling_repeatable(make_client):
    client, _ = make_client()
    ask = {**GOOD, "sampler": {"temperature": 1.0, "steps": 4}, "seed": 7}
    assert client.post("/v1/infill", json=ask).json()["middle"] == client.post("/v1/infill", json=ask).json()["middle"]


def _raw(content: bytes, content_type: str = "application/json") -> dict:
    return {"content": content, "headers": {"Content-Type": content_type}}


def _chunks():
    yield b'{"prefix": "'
    yield b"x" * 5000
    yield b'"}'


BAD = [  # (post kwargs, status, code, words the message must hold)
    (_raw(b'{"prefix": '), 400, "malformed_json", ["not valid JSON"]),
    (_raw(b""), 400, "malformed_json", ["empty"]),
    (_raw(b"prefix=x", "text/plain"), 400, "malformed_json", ["application/json"]),
    ({"json": [1, 2]}, 422, "invalid_request", ["body", "[1, 2]", "object"]),
    ({"json": {"prefix": 3}}, 422, "invalid_request", ["prefix", "got 3", "string"]),
    ({"json": {**GOOD, "sampler": {"steps": "8"}}}, 422, "invalid_request", ["sampler.steps", '"8"', "integer"]),
    ({"json": {**GOOD, "sampler": {"steps": 0}}}, 422, "invalid_request", ["steps=0", "1..1024"]),
    ({"json": {**GOOD, "sampler": {"temprature": 1}}}, 422, "invalid_request", ["sampler.temprature", "unknown"]),
    ({"json": {**GOOD, "max_token": 5}}, 422, "invalid_request", ["max_token", "unknown"]),
    ({"json": {**GOOD, "mode": "word"}}, 422, "invalid_request", ["mode", '"word"', "'line' or 'block'"]),
    ({"json": {**GOOD, "max_tokens": 5000}}, 422, "invalid_request", ["max_tokens", "5000", "4096"]),
    ({"json": {**GOOD, "max_canvases": 0}}, 422, "invalid_request", ["max_canvases", "0", "1"]),
    ({"json": {**GOOD, "seed": -1}}, 422, "invalid_request", ["seed", "-1"]),
    ({"json": {"segments": ["a", "b"], "holes": [{"canvas": 0}]}}, 422, "invalid_request", ["holes.0.canvas"]),
    ({"json": {**GOOD, "segments": ["a", "b"], "holes": [{"canvas": 4}]}}, 400, "bad_request", ["not both"]),
    ({"json": {"segments": ["a", "b"]}}, 400, "bad_request", ["segments and holes go together"]),
    ({"json": {"segments": ["a"], "holes": [{"canvas": 4}]}}, 400, "bad_request", ["1 text segments for 1 holes"]),
    ({"json": {"segments": ["a", "b"], "holes": [{"canvas": 4}], "max_tokens": 4}}, 400, "bad_request",
     ["max_tokens"]),
    ({"json": {}}, 400, "bad_request", ["no text"]),
    ({"json": {"prefix": "", "suffix": ""}}, 400, "bad_request", ["empty prefix and suffix"]),
    ({"json": {"prefix": "x = 1\n" * 200}}, 400, "bad_request", ["longer than the model's context"]),
    (_raw(json.dumps({"prefix": "x" * 5000}).encode()), 413, "body_too_large", ["4096 bytes"]),
    ({"content": _chunks(), "headers": {"Content-Type": "application/json"}}, 413, "body_too_large", ["4096"]),
]


@pytest.mark.parametrize("post, status, code, words", BAD, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_gets_a_clear_error_and_the_app_keeps_serving(make_client, post, status, code, words):
    client, _ = make_client(max_body_bytes=4096)
    r = client.post("/v1/infill", **post)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code
    for word in words:
        assert word in error["message"], error["message"]
    assert client.post("/v1/infill", json=GOOD).status_code == 200


def test_unknown_paths_and_methods_answer_in_the_error_shape(make_client):
    client, _ = make_client()
    assert client.get("/v2/infill").json()["error"]["code"] == "not_found"
    r = client.get("/v1/infill")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_an_engine_bug_costs_one_request_not_the_app(make_client):
    client, batcher = make_client(wrap=lambda engine: HoldAtPoll(engine, hold_at=0, fail_on="BOOM"))
    r = client.post("/v1/infill", json={"prefix": "BOOM = "})
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal"
    assert "engine bug for the test" in r.json()["error"]["message"]
    assert client.post("/v1/infill", json=GOOD).status_code == 200
    assert client.get("/v1/health").json()["stats"]["failed"] == 1


def test_a_replica_still_loading_answers_503_with_retry_after(backend):
    from fastapi.testclient import TestClient

    from dg_lsp.serving.api import make_app
    from dg_lsp.serving.batcher import Batcher, LocalService

    client = TestClient(make_app(LocalService(Batcher(backend))))  # never loaded
    health = client.get("/v1/health")
    assert health.status_code == 503 and health.json()["status"] == "loading" and "Retry-After" in health.headers
    r = client.post("/v1/infill", json=GOOD)
    assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable" and "Retry-After" in r.headers


def test_a_token_is_required_where_configured(make_client):
    client, _ = make_client(token="s3cret")
    for headers, what in [({}, "missing"), ({"Authorization": "Bearer nope"}, "wrong"),
                          ({"Authorization": "Basic s3cret"}, "missing")]:
        r = client.post("/v1/infill", json=GOOD, headers=headers)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
        assert r.json()["error"] == {"code": "unauthorized",
                                     "message": f"{what} token: send Authorization: Bearer <token>"}
    # checked before the body is read: a malformed body without the token is still a 401
    assert client.post("/v1/infill", **_raw(b"{")).status_code == 401
    assert client.get("/v1/model").status_code == 401
    ok = {"Authorization": "Bearer s3cret"}
    assert client.post("/v1/infill", json=GOOD, headers=ok).status_code == 200
    assert client.get("/v1/model", headers=ok).json()["context"] == 256
    assert client.get("/v1/health").status_code == 200  # probes need no token
    assert client.get("/openapi.json").status_code == 200


def test_health_and_model_describe_the_replica(make_client):
    client, _ = make_client()
    health = client.get("/v1/health").json()
    assert health["status"] == "ok" and health["model"] == "dg-coder-tiny" and health["replica"] == "local"
    model = client.get("/v1/model").json()
    assert model["family"] == "dg" and model["device"] == "cpu" and model["context"] == 256


def test_the_openapi_document_lists_the_api(make_client):
    client, _ = make_client()
    doc = client.get("/openapi.json").json()
    assert doc["info"]["version"] == "1"
    assert set(doc["paths"]) == {"/v1/infill", "/v1/health", "/v1/model"}
    assert "post" in doc["paths"]["/v1/infill"]
    schemas = doc["components"]["schemas"]
    assert set(schemas["InfillBody"]["properties"]) == {"prefix", "suffix", "segments", "holes", "mode", "max_tokens",
                                                        "max_canvases", "sampler", "seed"}
    assert {"steps", "temperature", "top_p", "commit", "confidence", "threshold", "block_length"} <= set(
        schemas["Sampler"]["properties"])
    assert {"422", "413", "401", "400", "503"} <= set(doc["paths"]["/v1/infill"]["post"]["responses"])
