"""The HTTP gateway over the real services: activation, training and analysis run as OS
processes on a local object store and a SQLite document store; the gateway runs in-process.

One tiny training job is submitted through the gateway and followed over server-sent events
until it succeeds; its SAE is then analyzed the same way, and every endpoint is read back.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.integration.conftest import free_port
from tests.integration.test_job_services import TINY
from tests.service_stack import ANALYZE, COMPUTE, READ, SAE_ID, SUBMIT, TOKENS
from tests.service_stack import job_events as _events

# `stack` (the services as processes) and `trained` (a tiny SAE trained and analyzed through
# `client`) are shared fixtures: tests/service_stack.py.


def _settings(stack, **overrides: Any) -> GatewaySettings:
    services, tmp = stack
    values: dict[str, Any] = {
        "documents": str(tmp / "docs.sqlite"),
        "api_tokens": TOKENS,
        "max_text_chars": 200,
        "static_dir": str(tmp / "no-frontend"),
        "health_timeout_s": 1.0,
        "grpc_timeout_s": 30.0,
        **{f"{name}_address": f"127.0.0.1:{s.port}" for name, s in services.items()},
    }
    return GatewaySettings(**{**values, **overrides})


@pytest.fixture(scope="module")
def client(stack):
    with TestClient(create_app(_settings(stack, cors_origins=["http://ui.test"]))) as test_client:
        yield test_client


def test_catalog_reads(client, trained):
    assert "tiny" in [m["name"] for m in client.get("/api/v1/models").json()]
    saes = {s["id"]: s for s in client.get("/api/v1/saes").json()}
    assert saes[SAE_ID]["metrics"] and saes[SAE_ID]["d_sae"] == 256
    assert client.get("/api/v1/saes", params={"model": "nope"}).json() == []
    detail = client.get(f"/api/v1/saes/{SAE_ID}").json()
    assert detail["analyses"][0]["state"] == "succeeded" and detail["artifact"] == trained["result"]["sae"]

    page = client.get(
        f"/api/v1/saes/{SAE_ID}/features", params={"sort": "density", "order": "desc", "limit": 10}
    ).json()
    assert page["total"] == 256 and len(page["items"]) == 10
    densities = [f["density"] for f in page["items"]]
    assert densities == sorted(densities, reverse=True)
    following = client.get(
        f"/api/v1/saes/{SAE_ID}/features", params={"sort": "density", "order": "desc", "offset": 10, "limit": 10}
    ).json()
    assert not {f["index"] for f in page["items"]} & {f["index"] for f in following["items"]}
    by_index = client.get(f"/api/v1/saes/{SAE_ID}/features", params={"limit": 3}).json()["items"]
    assert [f["index"] for f in by_index] == [0, 1, 2]

    top = page["items"][0]["index"]
    feature = client.get(f"/api/v1/saes/{SAE_ID}/features/{top}").json()
    assert feature["top_examples"] and feature["quantile_samples"] and feature["histogram"]
    assert feature["logit_lens"] and feature["density"] == page["items"][0]["density"]
    token = feature["top_tokens"][0]["token"]
    matches = client.get(f"/api/v1/saes/{SAE_ID}/search", params={"token": token, "limit": 200}).json()
    assert top in [m["index"] for m in matches] and all(m["top_token"]["token"] == token for m in matches)


def test_compute_on_new_text(client, trained):
    text = "Sparse autoencoders find features."
    url = f"/api/v1/saes/{SAE_ID}/activations"
    tokens = client.post(url, json={"text": text, "top_k": 3}, headers=COMPUTE).json()["tokens"]
    assert tokens and all(len(t["features"]) == 3 for t in tokens)
    strongest = tokens[0]["features"][0]
    single = client.post(url, json={"text": text, "feature": strongest["index"]}, headers=COMPUTE).json()
    assert single["feature"] == strongest["index"] and len(single["tokens"]) == len(tokens)
    assert [f["index"] for t in single["tokens"] for f in t["features"]] == [strongest["index"]] * len(tokens)
    assert single["tokens"][0]["features"][0]["value"] == pytest.approx(strongest["value"], abs=1e-5)

    found = client.post(f"/api/v1/saes/{SAE_ID}/search", json={"text": text, "limit": 5}, headers=COMPUTE).json()
    assert found["tokens"] == [t["token"] for t in tokens] and 0 < len(found["features"]) <= 5
    sums = [f["sum"] for f in found["features"]]
    assert sums == sorted(sums, reverse=True)
    by_max = client.post(
        f"/api/v1/saes/{SAE_ID}/search", json={"text": text, "rank_by": "max"}, headers=COMPUTE
    ).json()["features"]
    assert by_max[0]["max"] == max(f["max"] for f in by_max)


def test_jobs_listing(client, trained):
    _problem(client.get("/api/v1/jobs"), 401)  # whose jobs? a token is needed even with public reads
    training = client.get("/api/v1/jobs", params={"kind": "training"}, headers=SUBMIT).json()
    assert [j["id"] for j in training] == [trained["id"]] and training[0]["state"] == "succeeded"
    assert {j["kind"] for j in client.get("/api/v1/jobs", headers=SUBMIT).json()} == {"training", "analysis"}
    assert client.get("/api/v1/jobs", headers=READ).json() == []  # another user's jobs are not listed
    assert client.get(f"/api/v1/jobs/{trained['id']}").json()["result"]["sae"] == trained["result"]["sae"]
    # a finished job's stream ends at once with its final state
    assert _events(client, trained["id"])[-1][1]["state"] == "succeeded"
    cancelled = client.post(f"/api/v1/jobs/{trained['id']}/cancel", headers=SUBMIT)
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "succeeded"  # already over
    _problem(client.post("/api/v1/jobs/training-nope/cancel", headers=SUBMIT), 404)


def _problem(response, status: int, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["title"] and body["type"]
    assert body.get("field") == field, body
    return body


def test_error_responses(client, trained):
    _problem(client.get("/api/v1/saes/ghost"), 404)
    _problem(client.get("/api/v1/saes/ghost/features"), 404)
    _problem(client.get(f"/api/v1/saes/{SAE_ID}/features/100000"), 404)
    _problem(client.get("/api/v1/saes/ghost/features/0"), 404)
    _problem(client.get("/api/v1/jobs/training-nope"), 404)
    _problem(client.get("/api/v1/jobs/training-nope/events"), 404)
    _problem(client.get("/api/v1/nowhere"), 404)
    _problem(client.get(f"/api/v1/saes/{SAE_ID}/features", params={"limit": 1001}), 422, "limit")
    _problem(client.get(f"/api/v1/saes/{SAE_ID}/features", params={"sort": "size"}), 422, "sort")
    _problem(client.get("/api/v1/jobs", params={"kind": "baking"}, headers=READ), 422, "kind")
    url = f"/api/v1/saes/{SAE_ID}/activations"
    _problem(client.post(url, json={"text": "x" * 201}, headers=COMPUTE), 422, "text")
    _problem(client.post(url, json={"text": ""}, headers=COMPUTE), 422, "text")
    _problem(client.post(url, json={"text": "hi", "feature": 256}, headers=COMPUTE), 422, "feature")
    _problem(client.post(f"/api/v1/saes/{SAE_ID}/search", json={"text": "x" * 201}, headers=COMPUTE), 422, "text")
    _problem(client.post("/api/v1/saes/ghost/activations", json={"text": "hi"}, headers=COMPUTE), 404)
    # field-naming errors that come from the services themselves
    config = {**{k: v for k, v in TINY.items() if k != "output"}, "train": {**TINY["train"], "lrr": 1}}
    bad = client.post("/api/v1/jobs/training", json={"config": config}, headers=SUBMIT)
    assert "lrr" in _problem(bad, 422, "config.train.lrr")["detail"]
    bad = client.post(
        "/api/v1/jobs/analysis", json={"sae_uri": "x", "config": {"analysis": {"top_nn": 1}}}, headers=SUBMIT
    )
    _problem(bad, 422, "config.analysis.top_nn")
    _problem(client.post("/api/v1/jobs/analysis", json={}, headers=SUBMIT), 422, "sae_uri")


def _steer(client, body: dict, headers=COMPUTE) -> list[tuple[str, dict]]:
    events, name = [], ""
    with client.stream("POST", "/api/v1/steer", json=body, headers=headers) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
    return events


def test_steer_streams_default_and_steered(client, trained):
    """POST /steer: `start`, then tokens of both runs (relative strength: units of the feature's
    max activation from its analysis), then `end`; a strength of 0 leaves the text as it was."""
    top = client.get(
        f"/api/v1/saes/{SAE_ID}/features", params={"sort": "max_activation", "order": "desc", "limit": 1}
    ).json()["items"][0]["index"]
    feature = {"sae_id": SAE_ID, "feature": top, "strength": 40.0, "relative": True}
    events = _steer(client, {"prompt": "The cat", "features": [feature], "max_new_tokens": 5})
    names = [name for name, _ in events]
    assert names[0] == "start" and names[-1] == "end" and names.count("token") == 10
    start = events[0][1]
    assert start["changes"][0]["feature"] == top and start["changes"][0]["value"] > 40.0  # made absolute
    tokens = [data for name, data in events if name == "token"]
    steered = [t["token_id"] for t in tokens if t["run"] == "steered"]
    default = [t["token_id"] for t in tokens if t["run"] == "default"]
    assert steered != default
    calm = _steer(client, {"prompt": "The cat", "features": [{**feature, "strength": 0.0}], "max_new_tokens": 5})
    calm_tokens = [data for name, data in calm if name == "token"]
    assert [t["token_id"] for t in calm_tokens if t["run"] == "steered"] == default


def test_steer_refuses_bad_input(client, trained):
    feature = {"sae_id": SAE_ID, "feature": 1, "strength": 2.0}
    url = "/api/v1/steer"
    assert client.post(url, json={"prompt": "x", "features": [feature]}).status_code == 401
    assert client.post(url, json={"prompt": "x", "features": [feature]}, headers=READ).status_code == 403
    cases = [
        ({"prompt": "", "features": [feature]}, 422, "prompt"),
        ({"prompt": "x" * 201, "features": [feature]}, 422, "prompt"),
        ({"prompt": "x", "features": []}, 422, "features"),
        ({"prompt": "x", "features": [feature] * 17}, 422, "features"),
        ({"prompt": "x", "features": [{**feature, "strength": 1e9}]}, 422, "features.0.strength"),
        ({"prompt": "x", "features": [{**feature, "feature": 256}]}, 422, "features.0.feature"),
        ({"prompt": "x", "features": [{**feature, "mode": "boost"}]}, 422, "features.0.mode"),
        ({"prompt": "x", "features": [{**feature, "sae_id": "ghost"}]}, 404, None),
        ({"prompt": "x", "features": [feature], "max_new_tokens": 129}, 422, "max_new_tokens"),
        ({"prompt": "x", "features": [feature], "top_p": 0}, 422, "top_p"),
        ({"prompt": "x", "features": [feature], "track": [10**9]}, 422, "track"),
        ({"prompt": "x", "features": [{**feature, "mode": "scale", "relative": True}]}, 422, "features.0"),
    ]
    for body, status, field in cases:
        _problem(client.post(url, json=body, headers=COMPUTE), status, field)


def test_auth_scopes(client, stack):
    url = f"/api/v1/saes/{SAE_ID}/activations"
    missing = _problem(client.post(url, json={"text": "hi"}), 401)
    assert missing["detail"] == "a bearer token is required"
    assert client.post(url, json={"text": "hi"}).headers["www-authenticate"].startswith("Bearer")
    _problem(client.post(url, json={"text": "hi"}, headers={"Authorization": "Bearer wrong"}), 401)
    wrong_scope = client.post(url, json={"text": "hi"}, headers=READ)
    _problem(wrong_scope, 403)
    assert 'error="insufficient_scope"' in wrong_scope.headers["www-authenticate"]
    _problem(client.post("/api/v1/jobs/training", json={"config": {}}, headers=COMPUTE), 403)
    _problem(client.post("/api/v1/jobs/analysis", json={"sae_uri": "x"}), 401)
    assert client.get("/api/v1/models").status_code == 200  # public reads by default

    with TestClient(create_app(_settings(stack, public_reads=False))) as private:
        _problem(private.get("/api/v1/models"), 401)
        _problem(private.get("/api/v1/jobs"), 401)
        _problem(private.get("/api/v1/models", headers=COMPUTE), 403)
        assert private.get("/api/v1/models", headers=READ).status_code == 200
        assert private.get("/api/v1/circuits", headers=SUBMIT).status_code == 200
        assert private.get("/healthz").status_code == 200  # probes stay open


def test_dead_service_and_probes(client, stack, trained):
    assert client.get("/healthz").json() == {"status": "ok", "checks": {}}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and set(ready.json()["checks"].values()) == {"ok"}
    dead = f"127.0.0.1:{free_port()}"
    with TestClient(create_app(_settings(stack, activation_address=dead))) as broken:
        body = _problem(broken.get("/readyz"), 503)
        assert body["failed"] == ["activation"] and dead in body["detail"]
        body = _problem(broken.post(f"/api/v1/saes/{SAE_ID}/activations", json={"text": "hi"}, headers=COMPUTE), 503)
        assert body["detail"].startswith("activation service")
        assert broken.get(f"/api/v1/saes/{SAE_ID}").status_code == 200  # reads need no service
    metrics = client.get("/metrics").text
    assert 'lm_saes_http_requests_total{method="GET",route="/api/v1/saes/{sae_id}",status="404"}' in metrics


def test_circuits_openapi_cors_and_frontend(client, stack, tmp_path):
    assert client.get("/api/v1/circuits").json()["items"] == []
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/api/v1/models",
        "/api/v1/saes",
        "/api/v1/saes/{sae_id}",
        "/api/v1/saes/{sae_id}/features",
        "/api/v1/saes/{sae_id}/features/{index}",
        "/api/v1/saes/{sae_id}/activations",
        "/api/v1/saes/{sae_id}/search",
        "/api/v1/jobs/training",
        "/api/v1/jobs/analysis",
        "/api/v1/jobs",
        "/api/v1/jobs/{job_id}",
        "/api/v1/jobs/{job_id}/events",
        "/api/v1/circuits",
        "/readyz",
    ):
        assert path in paths, path
    preflight = client.options(
        "/api/v1/models", headers={"Origin": "http://ui.test", "Access-Control-Request-Method": "GET"}
    )
    assert preflight.headers["access-control-allow-origin"] == "http://ui.test"
    assert (
        "access-control-allow-origin"
        not in client.get("/api/v1/models", headers={"Origin": "http://evil.test"}).headers
    )
    _problem(client.get("/"), 404)  # no built frontend: nothing served on /
    (tmp_path / "index.html").write_text("<h1>lm-saes</h1>")
    with TestClient(create_app(_settings(stack, static_dir=str(tmp_path)))) as with_ui:
        assert "lm-saes" in with_ui.get("/").text
        assert with_ui.get("/api/v1/circuits").status_code == 200  # the API still wins
        deep = with_ui.get("/saes/some-sae/features/3")  # a deep link loads the app
        assert deep.status_code == 200 and "lm-saes" in deep.text
        _problem(with_ui.get("/api/v1/no-such-route"), 404)  # unknown API paths stay problems


@pytest.fixture(scope="module")
def traced(client, stack) -> dict:
    """Tiny transcoders (trained in process into the stack's folder), one layer analyzed through
    the gateway for node hovers, and a trace submitted and followed to its end over SSE."""
    from lm_saes.config import RunConfig, load_config
    from lm_saes.runner import run_train_transcoders
    from tests.integration.conftest import REPO

    _, tmp = stack
    location = str(tmp / "gw-transcoders")
    cfg = load_config(
        REPO / "examples/configuration/transcoders-tiny.toml",
        RunConfig,
        {"output": location, "data.max_tokens": 5000, "train.checkpoint_every": 0},
    )
    run_train_transcoders(cfg, progress=False)
    analysis = client.post(
        "/api/v1/jobs/analysis", headers=SUBMIT, json={"sae_uri": f"{location}/layer-1/sae", "config": ANALYZE}
    )
    assert analysis.status_code == 201, analysis.text
    assert _events(client, analysis.json()["id"])[-1][1]["state"] == "succeeded"

    body = {"prompt": "The capital of France is", "transcoders": location, "node_threshold": 0.7, "request_id": "c1"}
    response = client.post("/api/v1/circuits", json=body, headers=SUBMIT)
    assert response.status_code == 201, response.text
    events = _events(client, response.json()["id"])
    assert events[-1][0] == "end" and events[-1][1]["state"] == "succeeded", events[-1]
    assert events[-1][1]["kind"] == "tracing"
    return events[-1][1]["result"]


def test_circuits_graph_export_and_hover_features(client, traced):
    graph_id = traced["graph_id"]
    listed = client.get("/api/v1/circuits").json()["items"]
    assert [g["id"] for g in listed] == [graph_id] and listed[0]["layers"] == [0, 1]
    graph = client.get(f"/api/v1/circuits/{graph_id}").json()
    assert graph["tokens"][0] == "<bos>" and graph["thresholds"]["node"] == 0.7
    assert 0 < graph["scores"]["replacement"] <= 1 and graph["logits"][0]["probability"] > 0
    ids = {node["id"] for node in graph["nodes"]}
    assert graph["links"] and all(link["source"] in ids and link["target"] in ids for link in graph["links"])
    # a feature node's hover reads that layer's analysis through the ordinary feature endpoint
    sae_id = graph["saes"]["1"]
    node = next(n for n in graph["nodes"] if n["kind"] == "feature" and n["layer"] == 1)
    feature = client.get(f"/api/v1/saes/{sae_id}/features/{node['feature']}")
    assert feature.status_code == 200 and feature.json()["top_examples"]
    exported = client.get(f"/api/v1/circuits/{graph_id}/export").json()
    assert exported["metadata"]["prompt"] == "The capital of France is"
    assert len(exported["nodes"]) == len(graph["nodes"]) and len(exported["links"]) == len(graph["links"])
    _problem(client.get("/api/v1/circuits/graph-nope"), 404)
    _problem(client.get("/api/v1/circuits/graph-nope/export"), 404)
    assert "/api/v1/circuits/{graph_id}/interventions" in client.get("/openapi.json").json()["paths"]


def test_circuit_interventions_and_errors(client, traced, stack):
    graph_id = traced["graph_id"]
    graph = client.get(f"/api/v1/circuits/{graph_id}").json()
    node = max((n for n in graph["nodes"] if n["kind"] == "feature"), key=lambda n: n["influence"])
    change = {"layer": node["layer"], "position": node["position"], "feature": node["feature"]}
    url = f"/api/v1/circuits/{graph_id}/interventions"
    result = client.post(
        url, json={"changes": [{**change, "value": 20.0, "mode": "clamp"}], "top_k": 5}, headers=COMPUTE
    )
    assert result.status_code == 200, result.text
    body = result.json()
    assert len(body["before"]) == len(body["after"]) == 5 and body["before"] != body["after"]
    assert body["before"][0]["token_id"] == graph["logits"][0]["token_id"]
    # the active-set option reaches the service: after a big layer-0 change, layer 1's TopK
    # reselects unless its active set is kept
    early = next(n for n in graph["nodes"] if n["kind"] == "feature" and n["layer"] == 0)
    big = {
        "changes": [
            {"layer": 0, "position": early["position"], "feature": early["feature"], "value": 50.0, "mode": "clamp"}
        ],
        "top_k": 5,
    }
    reselected = client.post(url, json=big, headers=COMPUTE).json()
    kept = client.post(url, json={**big, "freeze_active_set": True}, headers=COMPUTE).json()
    assert kept["before"] == reselected["before"] and kept["after"] != reselected["after"]

    _problem(client.post(url, json={"changes": [{**change, "value": 1.0}]}), 401)
    _problem(client.post(url, json={"changes": [{**change, "value": 1.0}]}, headers=READ), 403)
    _problem(client.post(url, json={"changes": []}, headers=COMPUTE), 422, field="changes")
    _problem(
        client.post(url, json={"changes": [{**change, "value": 1, "mode": "zap"}]}, headers=COMPUTE),
        422,
        field="changes.0.mode",
    )
    _problem(
        client.post(url, json={"changes": [{**change, "layer": 9, "value": 1}]}, headers=COMPUTE), 422, field="changes"
    )
    _problem(
        client.post(
            "/api/v1/circuits/graph-nope/interventions", json={"changes": [{**change, "value": 1}]}, headers=COMPUTE
        ),
        404,
    )
    trace = {"prompt": "hi", "transcoders": "/no/such/set"}  # outside the server's roots
    _problem(client.post("/api/v1/circuits", json=trace, headers=SUBMIT), 422, "transcoders")
    inside = {"prompt": "hi", "transcoders": str(stack[1] / "objects" / "no-such-set")}
    _problem(client.post("/api/v1/circuits", json=inside, headers=SUBMIT), 404)
    _problem(client.post("/api/v1/circuits", json=trace, headers=COMPUTE), 403)
    _problem(
        client.post("/api/v1/circuits", json={**trace, "node_threshold": 2}, headers=SUBMIT),
        422,
        field="node_threshold",
    )


def test_circuit_attention_is_explained_with_problem_details(client, traced):
    """POST /circuits/{id}/attention: a head's score split into the graph's nodes (QK); bad
    positions, heads and layers are 422 naming the field, before any model work."""
    graph_id = traced["graph_id"]
    graph = client.get(f"/api/v1/circuits/{graph_id}").json()
    last = len(graph["tokens"]) - 1
    url = f"/api/v1/circuits/{graph_id}/attention"
    body = {"layer": 1, "head": 1, "query_position": last, "key_position": 2, "top_k": 4}
    result = client.post(url, json=body, headers=COMPUTE)
    assert result.status_code == 200, result.text
    explained = result.json()
    assert len(explained["query_side"]) == len(explained["key_side"]) == 4 and len(explained["pairs"]) == 4
    assert all(int(c["node_id"].rsplit("_", 1)[1]) <= 2 for c in explained["key_side"])
    _problem(client.post(url, json=body), 401)
    _problem(client.post(url, json=body, headers=READ), 403)
    _problem(client.post(url, json={**body, "key_position": last + 1}, headers=COMPUTE), 422, field="key_position")
    _problem(client.post(url, json={**body, "query_position": 999}, headers=COMPUTE), 422, field="query_position")
    _problem(client.post(url, json={**body, "head": 99}, headers=COMPUTE), 422, field="head")
    _problem(client.post(url, json={**body, "layer": 7}, headers=COMPUTE), 422, field="layer")
    _problem(client.post(url, json={**body, "top_k": 500}, headers=COMPUTE), 422, field="top_k")
    _problem(client.post(url, json={**body, "extra": 1}, headers=COMPUTE), 422, field="extra")
    _problem(client.post("/api/v1/circuits/graph-nope/attention", json=body, headers=COMPUTE), 404)


def test_autointerp_submission(client, trained):
    url = "/api/v1/jobs/autointerp"
    _problem(client.post(url, json={"sae_id": SAE_ID}), 401)
    _problem(client.post(url, json={"sae_id": SAE_ID}, headers=READ), 403)
    _problem(client.post(url, json={}, headers=SUBMIT), 422, "sae_id")
    _problem(client.post(url, json={"sae_id": "x" * 500}, headers=SUBMIT), 422, "sae_id")
    _problem(client.post(url, json={"sae_id": SAE_ID, "extra": 1}, headers=SUBMIT), 422, "extra")
    _problem(client.post(url, json={"sae_id": "ghost"}, headers=SUBMIT), 404)
    hostile = {"llm": {"base_url": "http://169.254.169.254/v1", "model": "m"}}
    assert (
        "set by the service"
        in _problem(client.post(url, json={"sae_id": SAE_ID, "config": hostile}, headers=SUBMIT), 422, "config.llm")[
            "detail"
        ]
    )
    _problem(client.post(url, json={"sae_id": SAE_ID, "config": {"features": [-3]}}, headers=SUBMIT), 422)
    _problem(
        client.post(url, json={"sae_id": SAE_ID, "config": {"features": [256]}}, headers=SUBMIT), 422, "config.features"
    )
    _problem(client.post(url, json={"sae_id": SAE_ID, "config": {"chunk": 0}}, headers=SUBMIT), 422, "config.chunk")
    # this stack's analysis service has no LLM endpoint: explaining is refused, not queued to fail
    assert "LM_SAES_LLM_BASE_URL" in _problem(client.post(url, json={"sae_id": SAE_ID}, headers=SUBMIT), 409)["detail"]
    body = {
        "sae_id": SAE_ID,
        "config": {"explain": False, "scorers": ["embedding"], "max_features": 2},
        "request_id": "autointerp-embedding-only",
    }
    job = client.post(url, json=body, headers=SUBMIT)
    assert job.status_code == 201 and job.json()["kind"] == "analysis"
    assert client.post(url, json=body, headers=SUBMIT).json()["id"] == job.json()["id"]  # idempotent
